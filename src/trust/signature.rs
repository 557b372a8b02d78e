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

use crate::trust::keys::{KeyId, SecretKey, TrustStore};

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
    Json(#[source] crate::base::json::JsonError),
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

    use crate::trust::keys::KeyId;

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
        let file: wire::File = serde_json::from_slice(bytes)
            .map_err(|e| SignatureFileError::Json(crate::base::json::JsonError::new(e)))?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MANIFEST: &[u8] = br#"{"name":"demo","version":"1.0.0"}"#;

    fn signed_by(keys: &[&SecretKey], manifest: &[u8]) -> Vec<u8> {
        let mut file = SignatureFile::new();
        for key in keys {
            let (id, sig) = sign_manifest(manifest, key);
            file.add_or_replace(id, sig).unwrap();
        }
        file.to_json_pretty().into_bytes()
    }

    fn trusting(keys: &[&SecretKey]) -> TrustStore {
        TrustStore::from_keys(keys.iter().map(|k| k.public())).unwrap()
    }

    /// A bad signature file and the check its error must pass.
    type Case = (Vec<u8>, fn(&SignatureFileError) -> bool);

    fn entry_json(key_id: &str, sig: &str) -> String {
        format!(r#"{{"key_id":"{key_id}","signature":"{sig}"}}"#)
    }

    fn file_json(entries: &[String]) -> Vec<u8> {
        format!(
            r#"{{"format":"skillgate-signatures-v1","signatures":[{}]}}"#,
            entries.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn signed_message_is_tag_then_bytes() {
        let msg = signed_message(b"abc");
        assert_eq!(&msg[..DOMAIN_TAG.len()], DOMAIN_TAG);
        assert_eq!(&msg[DOMAIN_TAG.len()..], b"abc");
        assert_eq!(DOMAIN_TAG.last(), Some(&0));
    }

    #[test]
    fn valid_signature_verifies() {
        let key = SecretKey::generate();
        let sig = signed_by(&[&key], MANIFEST);
        let ok = verify_manifest(MANIFEST.to_vec(), Some(&sig), &trusting(&[&key])).unwrap();
        assert_eq!(ok.bytes(), MANIFEST);
        assert_eq!(ok.signers(), &[key.id()]);
    }

    #[test]
    fn every_trusted_signer_is_listed_once() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let stranger = SecretKey::generate();
        let sig = signed_by(&[&a, &stranger, &b], MANIFEST);
        let ok = verify_manifest(MANIFEST.to_vec(), Some(&sig), &trusting(&[&a, &b])).unwrap();
        assert_eq!(ok.signers(), &[a.id(), b.id()]);
    }

    #[test]
    fn changed_manifest_is_invalid() {
        let key = SecretKey::generate();
        let sig = signed_by(&[&key], MANIFEST);
        for i in 0..MANIFEST.len() {
            let mut changed = MANIFEST.to_vec();
            changed[i] ^= 1;
            assert!(matches!(
                verify_manifest(changed, Some(&sig), &trusting(&[&key])),
                Err(SignatureError::Invalid { key_id }) if key_id == key.id()
            ));
        }
        let mut longer = MANIFEST.to_vec();
        longer.push(b'\n');
        assert!(matches!(
            verify_manifest(longer, Some(&sig), &trusting(&[&key])),
            Err(SignatureError::Invalid { .. })
        ));
    }

    #[test]
    fn signature_without_domain_tag_is_invalid() {
        let key = SecretKey::generate();
        let mut file = SignatureFile::new();
        file.add_or_replace(key.id(), key.sign(MANIFEST)).unwrap();
        let sig = file.to_json_pretty().into_bytes();
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), Some(&sig), &trusting(&[&key])),
            Err(SignatureError::Invalid { .. })
        ));
    }

    #[test]
    fn bad_trusted_signature_is_not_outvoted() {
        let good = SecretKey::generate();
        let bad = SecretKey::generate();
        let mut file = SignatureFile::new();
        let (id, sig) = sign_manifest(MANIFEST, &good);
        file.add_or_replace(id, sig).unwrap();
        let (_, other) = sign_manifest(b"another manifest", &bad);
        file.add_or_replace(bad.id(), other).unwrap();
        let sig = file.to_json_pretty().into_bytes();
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), Some(&sig), &trusting(&[&good, &bad])),
            Err(SignatureError::Invalid { key_id }) if key_id == bad.id()
        ));
    }

    #[test]
    fn signature_by_an_untrusted_key_only() {
        let trusted = SecretKey::generate();
        let stranger = SecretKey::generate();
        let sig = signed_by(&[&stranger], MANIFEST);
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), Some(&sig), &trusting(&[&trusted])),
            Err(SignatureError::NoTrustedSignature { key_ids }) if key_ids == [stranger.id()]
        ));
        let none = SignatureFile::new().to_json_pretty().into_bytes();
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), Some(&none), &trusting(&[&trusted])),
            Err(SignatureError::NoTrustedSignature { key_ids }) if key_ids.is_empty()
        ));
    }

    #[test]
    fn trusted_key_id_with_another_key_is_invalid() {
        // The entry names a trusted id but carries a stranger's signature.
        let trusted = SecretKey::generate();
        let stranger = SecretKey::generate();
        let (_, sig) = sign_manifest(MANIFEST, &stranger);
        let mut file = SignatureFile::new();
        file.add_or_replace(trusted.id(), sig).unwrap();
        let sig = file.to_json_pretty().into_bytes();
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), Some(&sig), &trusting(&[&trusted])),
            Err(SignatureError::Invalid { .. })
        ));
    }

    #[test]
    fn missing_signature_file() {
        let key = SecretKey::generate();
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), None, &trusting(&[&key])),
            Err(SignatureError::Missing)
        ));
    }

    #[test]
    fn empty_trust_store_fails_closed() {
        let key = SecretKey::generate();
        let sig = signed_by(&[&key], MANIFEST);
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), Some(&sig), &TrustStore::empty()),
            Err(SignatureError::EmptyTrustStore)
        ));
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), None, &TrustStore::empty()),
            Err(SignatureError::EmptyTrustStore)
        ));
    }

    #[test]
    fn malleated_signature_is_invalid() {
        // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let key = SecretKey::generate();
        let (id, sig) = sign_manifest(MANIFEST, &key);
        let mut bytes = sig.to_bytes();
        let mut carry = 0u16;
        for (s, l) in bytes[32..].iter_mut().zip(L) {
            let sum = u16::from(*s) + u16::from(l) + carry;
            *s = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        let malleated = Signature::from_bytes(&bytes);
        let mut file = SignatureFile::new();
        file.add_or_replace(id, malleated).unwrap();
        let json = file.to_json_pretty().into_bytes();
        assert!(matches!(
            verify_manifest(MANIFEST.to_vec(), Some(&json), &trusting(&[&key])),
            Err(SignatureError::Invalid { key_id }) if key_id == id
        ));
    }

    #[test]
    fn duplicate_key_ids_are_malformed() {
        let key = SecretKey::generate();
        let (id, sig) = sign_manifest(MANIFEST, &key);
        let entry = entry_json(&id.to_string(), &STANDARD.encode(sig.to_bytes()));
        let lower = entry_json(
            &id.to_string().to_lowercase(),
            &STANDARD.encode(sig.to_bytes()),
        );
        for json in [
            file_json(&[entry.clone(), entry.clone()]),
            file_json(&[entry, lower]),
        ] {
            assert!(matches!(
                verify_manifest(MANIFEST.to_vec(), Some(&json), &trusting(&[&key])),
                Err(SignatureError::Malformed(SignatureFileError::DuplicateKeyId { key_id }))
                    if key_id == id
            ));
        }
    }

    #[test]
    fn malformed_signature_files() {
        let key = SecretKey::generate();
        let (id, sig) = sign_manifest(MANIFEST, &key);
        let id = id.to_string();
        let b64 = STANDARD.encode(sig.to_bytes());
        let good = entry_json(&id, &b64);
        let cases: Vec<Case> = vec![
            (
                format!(
                    r#"{{"format":"skillgate-signatures-v1","signatures":[{good}],"extra":1}}"#
                )
                .into_bytes(),
                |e| matches!(e, SignatureFileError::Json(_)),
            ),
            (
                file_json(&[format!(
                    r#"{{"key_id":"{id}","signature":"{b64}","alg":"ED"}}"#
                )]),
                |e| matches!(e, SignatureFileError::Json(_)),
            ),
            (
                format!(
                    r#"{{"format":"skillgate-signatures-v1","format":"skillgate-signatures-v1","signatures":[{good}]}}"#
                )
                .into_bytes(),
                |e| matches!(e, SignatureFileError::Json(_)),
            ),
            (
                format!(r#"{{"format":"skillgate-signatures-v2","signatures":[{good}]}}"#)
                    .into_bytes(),
                |e| matches!(e, SignatureFileError::WrongFormat { .. }),
            ),
            (
                format!(r#"{{"signatures":[{good}]}}"#).into_bytes(),
                |e| matches!(e, SignatureFileError::Json(_)),
            ),
            (
                file_json(&[entry_json("93905FD6D14BAD7", &b64)]),
                |e| matches!(e, SignatureFileError::Json(_)),
            ),
            (
                file_json(&[entry_json(&id, b64.trim_end_matches('='))]),
                |e| matches!(e, SignatureFileError::BadBase64 { .. }),
            ),
            (
                file_json(&[entry_json(&id, &STANDARD.encode([0u8; 63]))]),
                |e| {
                    matches!(
                        e,
                        SignatureFileError::WrongSignatureLength { actual: 63, .. }
                    )
                },
            ),
            (
                file_json(&[entry_json(&id, &STANDARD.encode([0u8; 65]))]),
                |e| {
                    matches!(
                        e,
                        SignatureFileError::WrongSignatureLength { actual: 65, .. }
                    )
                },
            ),
            (
                file_json(std::slice::from_ref(&good))
                    .into_iter()
                    .chain(std::iter::repeat_n(b' ', MAX_SIGNATURE_FILE_SIZE))
                    .collect(),
                |e| matches!(e, SignatureFileError::TooLarge { .. }),
            ),
            (
                file_json(
                    &(0..=MAX_SIGNATURES as u64)
                        .map(|n| entry_json(&KeyId::from_bytes(n.to_le_bytes()).to_string(), &b64))
                        .collect::<Vec<_>>(),
                ),
                |e| matches!(e, SignatureFileError::TooManyEntries { count: 65, .. }),
            ),
            (b"".to_vec(), |e| matches!(e, SignatureFileError::Json(_))),
            (
                file_json(std::slice::from_ref(&good)).into_iter().chain(*b"{}").collect(),
                |e| matches!(e, SignatureFileError::Json(_)),
            ),
        ];
        for (i, (json, check)) in cases.iter().enumerate() {
            match SignatureFile::parse(json) {
                Err(SignatureError::Malformed(e)) => assert!(check(&e), "case {i}: {e:?}"),
                other => panic!("case {i}: {other:?}"),
            }
            assert!(matches!(
                verify_manifest(MANIFEST.to_vec(), Some(json), &trusting(&[&key])),
                Err(SignatureError::Malformed(_))
            ));
        }
        // The well-formed file the cases were cut from does verify.
        let json = file_json(&[good]);
        verify_manifest(MANIFEST.to_vec(), Some(&json), &trusting(&[&key])).unwrap();
    }

    #[test]
    fn signature_file_round_trip_and_replace() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let mut file = SignatureFile::new();
        assert!(file.is_empty());
        let (id_a, sig_a) = sign_manifest(b"old", &a);
        file.add_or_replace(id_a, sig_a).unwrap();
        let (id_b, sig_b) = sign_manifest(MANIFEST, &b);
        file.add_or_replace(id_b, sig_b).unwrap();
        let (_, sig_a2) = sign_manifest(MANIFEST, &a);
        file.add_or_replace(id_a, sig_a2).unwrap();
        assert_eq!(file.entries().len(), 2);
        assert_eq!(file.entries()[0].key_id(), id_a);
        assert_eq!(file.entries()[0].signature(), &sig_a2);

        let json = file.to_json_pretty();
        assert!(json.ends_with("}\n"));
        assert!(json.contains(&format!("\"key_id\": \"{id_a}\"")));
        let back = SignatureFile::parse(json.as_bytes()).unwrap();
        assert_eq!(back, file);
        let ok = verify_manifest(
            MANIFEST.to_vec(),
            Some(json.as_bytes()),
            &trusting(&[&a, &b]),
        )
        .unwrap();
        assert_eq!(ok.signers(), &[id_a, id_b]);
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
