//! The signature file `plugin.json.sig`: its format, and how a signature is made.
//!
//! Threats answered here: a signature moved to a different context or reinterpreted under
//! another algorithm or mode, and a signature file crafted to confuse the parser or a later
//! threshold count.
//!
//! - The signed message is [`DOMAIN_TAG`] followed by the exact manifest bytes: nothing about
//!   the algorithm or mode rests on an unsigned byte (unlike minisign's algorithm label).
//! - The signature file is the only unsigned input parsed before the signature is checked, so
//!   it is parsed strictly: size capped before parsing, unknown fields, a wrong `format`,
//!   duplicate key ids and signatures that are not exactly 64 bytes are all errors.
//!
//! Checking the signatures against a trust store is [`super::signature`]'s. Revocation
//! statements carry their signatures in this same format, over another domain tag.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signature;

use crate::base::json::JsonError;
use crate::trust::error::{SignatureError, SignatureFileError};
use crate::trust::formats::{DOMAIN_TAG, FORMAT, MAX_SIGNATURE_FILE_SIZE, MAX_SIGNATURES};
use crate::trust::key_id::KeyId;
use crate::trust::keys::SecretKey;

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

    use crate::trust::key_id::KeyId;

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

/// A parsed signature file: at most `MAX_SIGNATURES` entries, each key id at most once.
///
/// Parsing checks only the shape; [`verify_manifest`](super::signature::verify_manifest)
/// checks the signatures.
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
        let file: wire::File = serde_json::from_slice(bytes)
            .map_err(|e| SignatureFileError::Json(JsonError::new(e)))?;
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
    /// Fails, changing nothing, if the file already holds `MAX_SIGNATURES` other entries.
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MANIFEST: &[u8] = br#"{"name":"demo","version":"1.0.0"}"#;

    #[test]
    fn signed_message_is_tag_then_bytes() {
        let msg = signed_message(b"abc");
        assert_eq!(&msg[..DOMAIN_TAG.len()], DOMAIN_TAG);
        assert_eq!(&msg[DOMAIN_TAG.len()..], b"abc");
        assert_eq!(DOMAIN_TAG.last(), Some(&0));
    }

    #[test]
    fn add_or_replace_is_capped() {
        let key = SecretKey::generate();
        let (_, sig) = sign_manifest(MANIFEST, &key);
        let mut file = SignatureFile::new();
        for n in 0..MAX_SIGNATURES as u64 {
            file.add_or_replace(KeyId::from_bytes(n.to_le_bytes()), sig)
                .unwrap();
        }
        assert!(matches!(
            file.add_or_replace(key.id(), sig),
            Err(SignatureError::Malformed(
                SignatureFileError::TooManyEntries { .. }
            ))
        ));
        // Replacing an existing entry still works at the cap.
        file.add_or_replace(KeyId::from_bytes([0; 8]), sig).unwrap();
        assert_eq!(file.entries().len(), MAX_SIGNATURES);
    }
}
