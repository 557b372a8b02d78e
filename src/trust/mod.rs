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

pub mod error;
pub mod formats;
pub mod key_id;
pub mod keys;
pub mod marks;
pub mod minisign;
pub mod revocation;
pub mod rules;
pub mod signature;
pub mod signature_file;
pub mod store;

// The paths of the flat layout, kept while the API is narrowed.
pub use crate::base::version::Version;
pub use error::{MarkProblem, PasswordError, RevocationError, TrustError};
pub use marks::{read_version_mark, reset_version_mark};
pub use minisign::KdfParams;
pub use revocation::{
    REVOCATION_DOMAIN_TAG, REVOCATION_FORMAT, REVOCATION_SUFFIX, REVOCATION_THRESHOLD, Revocation,
    RevocationStatement, verify_revocation,
};
pub use rules::{ExpiryPolicy, Pattern, SignerRule, TrustPolicy};
