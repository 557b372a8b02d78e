//! The signature file `plugin.json.sig`, and the check that turns manifest bytes into an
//! [`AuthenticManifest`].
//!
//! Threats answered here: a manifest changed after signing, a signature moved to a different
//! context or reinterpreted under another algorithm or mode, a malleated signature, and a
//! signature file crafted to confuse the parser or a later threshold count.
//!
//! - The signed message is [`DOMAIN_TAG`] followed by the exact manifest bytes: nothing about
//!   the algorithm or mode rests on an unsigned byte (unlike minisign's algorithm label).
//! - Signatures are checked with `verify_strict` only (canonical `S`, no small-order `R` or
//!   key), so one signature has one encoding.
//! - The signature file is the only unsigned input parsed before the signature is checked, so
//!   it is parsed strictly: size capped before parsing, unknown fields, a wrong `format`,
//!   duplicate key ids and signatures that are not exactly 64 bytes are all errors.
//! - A signature that claims a trusted key and does not verify refuses the whole manifest: it
//!   means tampering, and is not outvoted by another, valid signature.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signature;

use crate::keys::{KeyId, SecretKey, TrustStore};

/// Name of the manifest in a plugin directory.
pub const MANIFEST_FILE_NAME: &str = "plugin.json";
/// Name of the signature file beside the manifest.
pub const SIGNATURE_FILE_NAME: &str = "plugin.json.sig";
/// Prefix of every signed message; the manifest bytes follow it.
pub const DOMAIN_TAG: &[u8] = b"skillgate/ed25519/plugin-manifest/v1\0";
/// Value of the `format` field of a signature file.
pub const FORMAT: &str = "skillgate-signatures-v1";
/// Largest signature file accepted.
pub const MAX_SIGNATURE_FILE_SIZE: usize = 64 * 1024;
/// Most signatures one file may carry.
pub const MAX_SIGNATURES: usize = 64;

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
    Malformed(#[from] SignatureFileError),
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
        "no signature by a trusted key; the file is signed by {}",
        DisplayIds(key_ids)
    )]
    NoTrustedSignature {
        /// The key ids the file names.
        key_ids: Vec<KeyId>,
    },
}

/// What is wrong with a signature file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureFileError {
    /// The file is larger than [`MAX_SIGNATURE_FILE_SIZE`].
    #[error("{size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not JSON of the expected shape (including unknown or duplicate fields).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The `format` field is not [`FORMAT`].
    #[error("format is {found:?}, expected {FORMAT:?}")]
    WrongFormat {
        /// The value found.
        found: String,
    },
    /// More than [`MAX_SIGNATURES`] entries.
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

struct DisplayIds<'a>(&'a [KeyId]);

impl fmt::Display for DisplayIds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no key");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// The message a signature covers: [`DOMAIN_TAG`] ‖ the exact manifest bytes.
pub fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN_TAG.len().saturating_add(manifest.len()));
    msg.extend_from_slice(DOMAIN_TAG);
    msg.extend_from_slice(manifest);
    msg
}

/// Signs `manifest` (through [`signed_message`]) with `key`.
pub fn sign_manifest(manifest: &[u8], key: &SecretKey) -> (KeyId, Signature) {
    (key.id(), key.sign(&signed_message(manifest)))
}

mod wire {
    //! The JSON shape of the signature file; checked in [`super::SignatureFile::parse`].

    use crate::keys::KeyId;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct File {
        pub(super) format: String,
        pub(super) signatures: Vec<Entry>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Entry {
        pub(super) key_id: KeyId,
        pub(super) signature: String,
    }
}

/// One signature in a [`SignatureFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry {
    key_id: KeyId,
    signature: Signature,
}

impl SignatureEntry {
    /// The key the entry claims to be signed by (unsigned: a claim until verified).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
}

/// A parsed signature file: at most [`MAX_SIGNATURES`] entries, each key id at most once.
///
/// Parsing checks only the shape; [`verify_manifest`] checks the signatures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureFile {
    entries: Vec<SignatureEntry>,
}

impl SignatureFile {
    /// A file with no signatures.
    pub fn new() -> Self {
        SignatureFile::default()
    }

    /// Parses and checks a signature file.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        Ok(Self::parse_inner(bytes)?)
    }

    fn parse_inner(bytes: &[u8]) -> Result<Self, SignatureFileError> {
        if bytes.len() > MAX_SIGNATURE_FILE_SIZE {
            return Err(SignatureFileError::TooLarge {
                size: bytes.len(),
                max: MAX_SIGNATURE_FILE_SIZE,
            });
        }
        let file: wire::File = serde_json::from_slice(bytes)?;
        if file.format != FORMAT {
            return Err(SignatureFileError::WrongFormat { found: file.format });
        }
        if file.signatures.len() > MAX_SIGNATURES {
            return Err(SignatureFileError::TooManyEntries {
                count: file.signatures.len(),
                max: MAX_SIGNATURES,
            });
        }
        let mut entries: Vec<SignatureEntry> = Vec::with_capacity(file.signatures.len());
        for entry in file.signatures {
            let key_id = entry.key_id;
            if entries.iter().any(|e| e.key_id == key_id) {
                return Err(SignatureFileError::DuplicateKeyId { key_id });
            }
            let raw = STANDARD
                .decode(entry.signature.as_bytes())
                .map_err(|_| SignatureFileError::BadBase64 { key_id })?;
            let actual = raw.len();
            let raw = <[u8; Signature::BYTE_SIZE]>::try_from(raw)
                .map_err(|_| SignatureFileError::WrongSignatureLength { key_id, actual })?;
            entries.push(SignatureEntry {
                key_id,
                signature: Signature::from_bytes(&raw),
            });
        }
        Ok(SignatureFile { entries })
    }

    /// The file as pretty JSON, ending in a newline.
    pub fn to_json_pretty(&self) -> String {
        let signatures: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "key_id": e.key_id.to_string(),
                    "signature": STANDARD.encode(e.signature.to_bytes()),
                })
            })
            .collect();
        let file = serde_json::json!({
            "format": FORMAT,
            "signatures": signatures,
        });
        format!("{file:#}\n")
    }

    /// The signatures, in file order.
    pub fn entries(&self) -> &[SignatureEntry] {
        &self.entries
    }

    /// Adds a signature, replacing any entry with the same key id.
    ///
    /// Fails, changing nothing, if the file already holds [`MAX_SIGNATURES`] other entries.
    pub fn add_or_replace(
        &mut self,
        key_id: KeyId,
        signature: Signature,
    ) -> Result<(), SignatureError> {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.key_id == key_id) {
            entry.signature = signature;
            return Ok(());
        }
        if self.entries.len() >= MAX_SIGNATURES {
            return Err(SignatureFileError::TooManyEntries {
                count: self.entries.len().saturating_add(1),
                max: MAX_SIGNATURES,
            }
            .into());
        }
        self.entries.push(SignatureEntry { key_id, signature });
        Ok(())
    }

    /// Whether the file holds no signature.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Proof that the manifest bytes carry at least one valid signature by a trusted key.
///
/// Only [`verify_manifest`] builds one.
pub struct AuthenticManifest {
    bytes: Vec<u8>,
    signers: Vec<KeyId>,
}

impl fmt::Debug for AuthenticManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticManifest")
            .field("len", &self.bytes.len())
            .field("signers", &self.signers)
            .finish()
    }
}

impl AuthenticManifest {
    /// The exact manifest bytes that were verified.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The trusted keys whose signatures verified, each once, in signature file order.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
}

/// Checks the signatures over `manifest` against `trust`.
///
/// Fails closed: no signature file, an empty trust store, a malformed signature file, any
/// invalid signature by a trusted key, or no valid signature by a trusted key are all errors.
/// Signatures by keys the store does not hold are ignored.
pub fn verify_manifest(
    manifest: Vec<u8>,
    signature_file: Option<&[u8]>,
    trust: &TrustStore,
) -> Result<AuthenticManifest, SignatureError> {
    if trust.is_empty() {
        return Err(SignatureError::EmptyTrustStore);
    }
    let file = SignatureFile::parse(signature_file.ok_or(SignatureError::Missing)?)?;
    let message = signed_message(&manifest);
    let mut signers = Vec::new();
    for entry in file.entries() {
        let Some(key) = trust.get(&entry.key_id) else {
            continue;
        };
        key.verify_strict(&message, &entry.signature)
            .map_err(|_| SignatureError::Invalid {
                key_id: entry.key_id,
            })?;
        // The parser refused duplicate ids, so each signer is pushed once.
        signers.push(entry.key_id);
    }
    if signers.is_empty() {
        return Err(SignatureError::NoTrustedSignature {
            key_ids: file.entries().iter().map(|e| e.key_id).collect(),
        });
    }
    Ok(AuthenticManifest {
        bytes: manifest,
        signers,
    })
}
