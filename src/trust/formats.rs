//! The names, domain tags, format labels and size caps of the trust material's files.
//!
//! One place for every constant a file format of `trust/` fixes, so the errors that name
//! them ([`super::error`]) and the code that reads and writes the files share one value,
//! and a reader comparing with the README's *Formats* section finds them together. Each
//! domain tag ends in a NUL byte, so no tag is a prefix of another's message.

/// Name of the manifest in a plugin directory.
pub const MANIFEST_FILE_NAME: &str = "plugin.json";
/// Name of the signature file beside the manifest.
pub const SIGNATURE_FILE_NAME: &str = "plugin.json.sig";
/// Prefix of every signed manifest message; the manifest bytes follow it.
pub const DOMAIN_TAG: &[u8] = b"skillgate/ed25519/plugin-manifest/v1\0";
/// Value of the `format` field of a signature file.
pub const FORMAT: &str = "skillgate-signatures-v1";
/// Largest signature file accepted.
pub(crate) const MAX_SIGNATURE_FILE_SIZE: usize = 64 * 1024;
/// Most signatures one file may carry.
pub(crate) const MAX_SIGNATURES: usize = 64;

/// Largest key file accepted; real ones are under 400 bytes.
pub const MAX_KEY_FILE_SIZE: usize = 4 * 1024;

/// Prefix of every signed revocation statement; the statement bytes follow it.
pub const REVOCATION_DOMAIN_TAG: &[u8] = b"skillgate/ed25519/key-revocation/v1\0";
/// Value of the `format` field of a revocation statement.
pub const REVOCATION_FORMAT: &str = "skillgate-revocation-v1";
/// File name suffix of revocation statements in the trust store; the signatures are in a
/// file of the same name plus `.sig`.
pub const REVOCATION_SUFFIX: &str = ".revoked";
/// Distinct other keys needed to revoke a key that did not revoke itself.
pub const REVOCATION_THRESHOLD: usize = 2;
/// Largest revocation statement read.
pub(crate) const MAX_STATEMENT_BYTES: usize = 4096;
