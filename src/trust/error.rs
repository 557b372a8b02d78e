//! The trust layer's errors: one enum per step, each carrying the values involved.
//!
//! They live together, below the code that raises them, because they nest across steps: a
//! trust store that will not load reports a revocation statement's error
//! ([`KeyError::Revocation`]), which reports its signature file's
//! ([`RevocationError::Signatures`]). Each step's module re-exports its own enum, so
//! `keys::KeyError`, `signature::SignatureError` and `trust::TrustError` are where a reader
//! looks for them.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::base::capped::CappedError;
use crate::base::json::JsonError;
use crate::base::version::VersionError;
use crate::trust::formats::{FORMAT, REVOCATION_FORMAT, SIGNATURE_FILE_NAME};
use crate::trust::key_id::{KeyId, KeyIds};

/// Where a key in a [`TrustStore`](super::store::TrustStore) came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Read from this file.
    File(PathBuf),
    /// Given in memory, at this position of the list passed to
    /// [`TrustStore::from_keys`](super::store::TrustStore::from_keys).
    Position(usize),
    /// Added later with [`TrustStore::add_key`](super::store::TrustStore::add_key).
    Added,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::File(path) => write!(f, "{}", path.display()),
            KeyOrigin::Position(i) => write!(f, "key #{i}"),
            KeyOrigin::Added => f.write_str("a key added to the store"),
        }
    }
}

/// Errors reading or using keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file or the trust store directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A key file could not be used; `source` says why.
    #[error("key file {}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with its contents.
        source: Box<KeyError>,
    },
    /// A key file in the trust store is a symlink, a directory, a FIFO or anything else that is
    /// not a regular file.
    #[error("{} is a symlink or not a regular file", path.display())]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
    },
    /// The input is larger than [`MAX_KEY_FILE_SIZE`](super::formats::MAX_KEY_FILE_SIZE).
    #[error("key file is larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// The text is not laid out as a minisign key file.
    #[error("malformed key file: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// The decoded key has the wrong length.
    #[error("malformed {what}: expected {expected} bytes, found {actual}")]
    WrongLength {
        /// Which kind of key.
        what: &'static str,
        /// The length minisign uses.
        expected: usize,
        /// The decoded length.
        actual: usize,
    },
    /// The key is not labelled Ed25519 (`Ed`), or its checksum is not labelled BLAKE2b (`B2`),
    /// or its key derivation is neither `Sc` nor none.
    #[error("unsupported algorithm label {found:02x?} for {what}")]
    UnsupportedAlgorithm {
        /// Which label.
        what: &'static str,
        /// The label found.
        found: [u8; 2],
    },
    /// The secret key is scrypt-encrypted and no password was given.
    #[error("secret key is encrypted and no password was given")]
    PasswordRequired,
    /// The password could not be obtained (prompt, file or environment).
    #[error("cannot get the password: {0}")]
    PasswordUnavailable(PasswordError),
    /// The encrypted secret key's checksum does not match after decryption: the password
    /// is wrong (or the file was altered).
    #[error("wrong password for this secret key (its checksum does not match)")]
    WrongPassword,
    /// The scrypt parameters of an encrypted key are out of the range this tool accepts.
    #[error("scrypt parameters opslimit={opslimit} memlimit={memlimit} are not accepted: {why}")]
    KdfParams {
        /// From the key file.
        opslimit: u64,
        /// From the key file.
        memlimit: u64,
        /// Which bound they break.
        why: &'static str,
    },
    /// The secret key's BLAKE2b-256 checksum does not match its contents.
    #[error("secret key checksum mismatch")]
    ChecksumMismatch,
    /// The public half stored in the secret key is not the one derived from its seed.
    #[error("secret key is inconsistent: its public half does not match its seed")]
    InconsistentSecretKey,
    /// The bytes are not a valid Ed25519 point.
    #[error("invalid Ed25519 public key (file key id {file_key_id})")]
    InvalidPublicKey {
        /// The key id written in the file.
        file_key_id: KeyId,
    },
    /// The public key is a small-order point, for which signatures prove nothing.
    #[error("weak Ed25519 public key {key_id} refused")]
    WeakKey {
        /// The derived id of the refused key.
        key_id: KeyId,
    },
    /// A signature did not verify under `verify_strict`.
    #[error("signature does not verify under key {key_id}")]
    BadSignature {
        /// The key that was used.
        key_id: KeyId,
    },
    /// Two entries of the trust store hold the same key.
    #[error("key {key_id} appears twice in the trust store: {first} and {second}")]
    DuplicateKey {
        /// The key's derived id.
        key_id: KeyId,
        /// Where it was first seen.
        first: KeyOrigin,
        /// Where it was seen again.
        second: KeyOrigin,
    },
    /// A revocation statement in the trust store is malformed or not signed well enough.
    #[error("revocation statement {}", path.display())]
    Revocation {
        /// The statement file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<RevocationError>,
    },
}

impl KeyError {
    /// The error without the [`KeyError::InFile`] wrappers that name the file.
    pub fn innermost(&self) -> &KeyError {
        let mut e = self;
        while let KeyError::InFile { source, .. } = e {
            e = source;
        }
        e
    }
}

/// Errors verifying signatures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The plugin has no signature file.
    #[error("no {SIGNATURE_FILE_NAME} beside the manifest")]
    Missing,
    /// The host trusts no key, so nothing can verify.
    #[error("the trust store is empty")]
    EmptyTrustStore,
    /// The signature file could not be parsed.
    #[error("{SIGNATURE_FILE_NAME} is malformed: {0}")]
    Malformed(SignatureFileError),
    /// A signature by a trusted key does not verify over this manifest.
    #[error(
        "signature by trusted key {key_id} does not verify: the manifest or signature was altered"
    )]
    Invalid {
        /// The trusted key the signature claims.
        key_id: KeyId,
    },
    /// No signature in the file is by a trusted key.
    #[error(
        "no signature by a trusted key; the file's signatures name the keys: {}",
        KeyIds(key_ids)
    )]
    NoTrustedSignature {
        /// The key ids the file names.
        key_ids: Vec<KeyId>,
    },
}

// `From` without `source()`: the message already holds the inner error (crate::error docs).
impl From<SignatureFileError> for SignatureError {
    fn from(e: SignatureFileError) -> Self {
        SignatureError::Malformed(e)
    }
}

/// What is wrong with a signature file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureFileError {
    /// The file is larger than `MAX_SIGNATURE_FILE_SIZE`.
    #[error("{size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not JSON of the expected shape (including unknown or duplicate fields).
    #[error("{0}")]
    Json(JsonError),
    /// The `format` field is not [`FORMAT`].
    #[error("format is {found:?}, expected {FORMAT:?}")]
    WrongFormat {
        /// The value found.
        found: String,
    },
    /// More than `MAX_SIGNATURES` entries.
    #[error("{count} signatures, more than the {max} allowed")]
    TooManyEntries {
        /// Entries found.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// Two entries name the same key.
    #[error("key id {key_id} appears more than once")]
    DuplicateKeyId {
        /// The repeated id.
        key_id: KeyId,
    },
    /// A signature is not standard padded base64.
    #[error("signature by {key_id} is not valid padded base64")]
    BadBase64 {
        /// The entry's key id.
        key_id: KeyId,
    },
    /// A signature does not decode to 64 bytes.
    #[error("signature by {key_id} is {actual} bytes, expected 64")]
    WrongSignatureLength {
        /// The entry's key id.
        key_id: KeyId,
        /// The decoded length.
        actual: usize,
    },
}

/// Why the trust stage refused a plugin. Every variant names the plugin, the key ids
/// involved and the rule or value that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// No signer rule's pattern covers this plugin name.
    #[error(
        "plugin {plugin:?}: no signer rule covers this name (signed by {})",
        KeyIds(signers)
    )]
    NoRule {
        /// The plugin name.
        plugin: String,
        /// The trusted keys whose signatures verified.
        signers: Vec<KeyId>,
    },
    /// Fewer distinct unrevoked keys of the rule signed than its threshold.
    #[error(
        "plugin {plugin:?}: rule {rule:?} needs {threshold} distinct signer(s) of its keys, counted {} ({}); signatures by trusted keys outside the rule: {}",
        counted.len(), KeyIds(counted), KeyIds(outside_rule)
    )]
    BelowThreshold {
        /// The plugin name.
        plugin: String,
        /// The rule's pattern (`*` when the policy has no `signers` section).
        rule: String,
        /// The rule's threshold.
        threshold: usize,
        /// The distinct keys that counted.
        counted: Vec<KeyId>,
        /// Trusted keys that signed but are not in the rule.
        outside_rule: Vec<KeyId>,
    },
    /// The threshold is not met once revoked keys are discounted.
    #[error(
        "plugin {plugin:?}: signed by revoked key(s) {}; rule {rule:?} needs {threshold}, counted {} ({})",
        KeyIds(revoked), counted.len(), KeyIds(counted)
    )]
    Revoked {
        /// The plugin name.
        plugin: String,
        /// The revoked keys that signed.
        revoked: Vec<KeyId>,
        /// The rule's pattern (`*` when the policy has no `signers` section).
        rule: String,
        /// The rule's threshold.
        threshold: usize,
        /// The distinct unrevoked keys of the rule that counted.
        counted: Vec<KeyId>,
    },
    /// The signed manifest expired.
    #[error(
        "plugin {plugin:?} {version}: expired at {expires} (now {now}, clock-skew margin {skew_seconds} s)"
    )]
    Expired {
        /// The plugin name.
        plugin: String,
        /// Its version.
        version: String,
        /// The signed expiry.
        expires: String,
        /// The host's clock.
        now: String,
        /// The margin the policy allows.
        skew_seconds: u64,
    },
    /// The version is below the policy's minimum for this plugin.
    #[error("plugin {plugin:?}: version {version} is below the policy's minimum {minimum}")]
    BelowMinimum {
        /// The plugin name.
        plugin: String,
        /// The version offered.
        version: String,
        /// The policy's `min_versions` entry.
        minimum: String,
    },
    /// A newer version of this plugin was verified before: rollback refused.
    #[error(
        "plugin {plugin:?}: version {version} is older than {highest}, already verified on this host (rollback refused; see trust::reset_version_mark)"
    )]
    Rollback {
        /// The plugin name.
        plugin: String,
        /// The version offered.
        version: String,
        /// The highest version recorded in the state directory.
        highest: String,
    },
    /// The state directory could not be read or written.
    #[error("state {}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A version mark in the state directory is unreadable: refused rather than ignored.
    #[error("state {}: corrupt version mark: {problem}", path.display())]
    StateCorrupt {
        /// The mark file.
        path: PathBuf,
        /// What is wrong.
        problem: MarkProblem,
    },
}

/// What is wrong with a version mark in the state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkProblem {
    /// The name asked for is not a plugin name, so it names no mark.
    #[error("{0:?} is not a plugin name")]
    BadName(String),
    /// The mark is not a regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// The mark is larger than a mark can be.
    #[error("larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// Not JSON of a mark's shape.
    #[error("{0}")]
    Json(JsonError),
    /// The mark's format or plugin name is not this mark's.
    #[error("format {format:?} for plugin {name:?}")]
    Mismatch {
        /// The format found.
        format: String,
        /// The plugin name found.
        name: String,
    },
    /// The recorded version is not semver.
    #[error("{0}")]
    Version(VersionError),
}

/// What is wrong with a revocation statement in the trust store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// Larger than the cap.
    #[error("statement is larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// Not JSON of the statement's shape (unknown or duplicate fields included).
    #[error("{0}")]
    Json(JsonError),
    /// The `format` field is not [`REVOCATION_FORMAT`].
    #[error("format is {found:?}, expected {REVOCATION_FORMAT:?}")]
    WrongFormat {
        /// The value found.
        found: String,
    },
    /// `public_key` is not 32 bytes of padded base64, or not a usable Ed25519 key.
    #[error("public_key is not a valid Ed25519 key")]
    BadPublicKey,
    /// `revokes` is not the id derived from `public_key`.
    #[error("revokes {claimed}, but public_key has key id {derived}")]
    KeyIdMismatch {
        /// The id the statement names.
        claimed: KeyId,
        /// The id of the key it carries.
        derived: KeyId,
    },
    /// The `.sig` file beside the statement is missing or malformed.
    #[error("signatures: {0}")]
    Signatures(SignatureError),
    /// A signature by the revoked key or a trusted key does not verify.
    #[error("signature by {key_id} does not verify over the statement")]
    Invalid {
        /// The key the signature claims.
        key_id: KeyId,
    },
    /// Neither the revoked key itself nor enough other trusted keys signed.
    #[error(
        "revocation of {revokes} is signed by {} other trusted key(s) ({}) and not by the key itself; {needed} are needed",
        signers.len(), KeyIds(signers)
    )]
    NotEnoughSigners {
        /// The key the statement revokes.
        revokes: KeyId,
        /// The other trusted keys whose signatures verified.
        signers: Vec<KeyId>,
        /// [`REVOCATION_THRESHOLD`](super::formats::REVOCATION_THRESHOLD).
        needed: usize,
    },
}

/// Why a password could not be obtained for an encrypted secret key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password file could not be read (missing, not a regular file, too large).
    #[error("{0}")]
    File(CappedError),
    /// No password file (`--password-file`) and no password in the environment
    /// (`SKILLGATE_PASSWORD`) were given, and no terminal could be asked.
    #[error("no --password-file, no SKILLGATE_PASSWORD and no terminal to ask on: {0}")]
    NoSource(io::Error),
    /// Reading the password from the terminal failed.
    #[error("reading the terminal: {0}")]
    Prompt(io::Error),
    /// A new password was typed twice, differently.
    #[error("the two passwords differ")]
    Mismatch,
    /// A new password is empty.
    #[error("empty password; use --unencrypted for a key without one")]
    Empty,
}
