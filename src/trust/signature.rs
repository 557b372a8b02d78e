//! The check that turns manifest bytes into an [`AuthenticManifest`]: its signatures,
//! verified against the trust store.
//!
//! Threats answered here: a manifest changed after signing and a malleated signature.
//!
//! - Signatures are checked with `verify_strict` only (canonical `S`, no small-order `R` or
//!   key), so one signature has one encoding.
//! - A signature that claims a trusted key and does not verify refuses the whole manifest: it
//!   means tampering, and is not outvoted by another, valid signature.
//!
//! The file format (and making a signature) is [`super::signature_file`]'s; it is
//! re-exported here, so a caller that signs or verifies finds it all under one path.

use std::fmt;

use crate::trust::key_id::KeyId;
use crate::trust::store::TrustStore;

pub(crate) use crate::trust::error::SignatureError;
pub(crate) use crate::trust::formats::{MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME};
pub(crate) use crate::trust::signature_file::{SignatureFile, signed_message};

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
        let Some(key) = trust.get(&entry.key_id()) else {
            continue;
        };
        key.verify_strict(&message, entry.signature())
            .map_err(|_| SignatureError::Invalid {
                key_id: entry.key_id(),
            })?;
        // The parser refused duplicate ids, so each signer is pushed once.
        signers.push(entry.key_id());
    }
    if signers.is_empty() {
        return Err(SignatureError::NoTrustedSignature {
            key_ids: file.entries().iter().map(|e| e.key_id()).collect(),
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
    use crate::trust::error::SignatureFileError;
    use crate::trust::formats::{MAX_SIGNATURE_FILE_SIZE, MAX_SIGNATURES};
    use crate::trust::keys::SecretKey;
    use crate::trust::signature_file::sign_manifest;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use ed25519_dalek::Signature;

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
}
