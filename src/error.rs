//! The error tree: one enum per pipeline stage, gathered in [`Error`].
//!
//! Each variant of [`Error`] names the stage that refused; the stage enum names what was
//! wrong and carries the values involved (paths, key ids, expected and actual hashes).
//! Tests match on variants, never on message text.

use crate::keys::KeyError;
use crate::locate::LocateError;
use crate::signature::SignatureError;

/// Any failure on the way from a path to a plugin result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The trust store or a key file could not be used.
    #[error("keys: {0}")]
    Key(#[from] KeyError),
    /// The plugin path or one of its files was refused before anything was verified.
    #[error("locate: {0}")]
    Locate(#[from] LocateError),
    /// The manifest's signatures did not establish trust.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
}
