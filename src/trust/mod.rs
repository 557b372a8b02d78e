//! Trust material: keys, the trust store, signature files and their verification, the
//! signer rules, revocation and the version marks that refuse rollbacks.
//!
//! Imports point down this list and never up; nothing here imports a pipeline stage or the
//! policy:
//!
//! - [`formats`]: the file names, domain tags, format labels and size caps;
//! - [`key_id`]: [`KeyId`](key_id::KeyId), by which everything else names a key;
//! - [`error`]: the errors of every step below, which nest across steps;
//! - [`keys`]: public and secret keys; [`minisign`]: their key files;
//! - [`signature_file`]: the `plugin.json.sig` format and signing;
//! - [`revocation`]: revocation statements; [`store`]: the trust store that applies them;
//! - [`signature`]: a manifest's signatures checked against the store;
//! - [`marks`]: the version marks on disk; [`rules`]: the trust policy that judges a release.

/// A key-format test vector from `tests/vectors/keys/`, as a byte slice (for the unit tests
/// of the modules below; defined before them so their tests can use it).
#[cfg(test)]
macro_rules! vector {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/keys/",
            $name
        ))
        .as_slice()
    };
}

pub(crate) mod error;
pub(crate) mod formats;
pub(crate) mod key_id;
pub(crate) mod keys;
pub(crate) mod marks;
pub(crate) mod minisign;
pub(crate) mod revocation;
pub(crate) mod rules;
pub(crate) mod signature;
pub(crate) mod signature_file;
pub(crate) mod store;

// The paths of the flat layout, kept while the API is narrowed.
