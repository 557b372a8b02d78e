//! Revocation statements: a signed withdrawal of a key, kept in the trust store.
//!
//! A key that leaked must stop counting everywhere, offline, without trusting whoever
//! holds the directory: a statement (`NAME.revoked`, see [`RevocationStatement`]) names the
//! key and carries it, and takes effect only if the revoked key itself signed it (a holder
//! who lost control of the key can withdraw it) or [`REVOCATION_THRESHOLD`] distinct other
//! trusted keys did. Its signatures use the `plugin.json.sig` format over their own domain
//! tag ([`REVOCATION_DOMAIN_TAG`]), so a manifest signature never counts as a revocation.
//! The trust store ([`super::store`]) applies the statements it finds; a malformed, unsigned
//! or under-signed one stops the host from starting.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::base::json::JsonError;
pub(crate) use crate::trust::error::RevocationError;
use crate::trust::formats::MAX_STATEMENT_BYTES;
pub use crate::trust::formats::{
    REVOCATION_DOMAIN_TAG, REVOCATION_FORMAT, REVOCATION_SUFFIX, REVOCATION_THRESHOLD,
};
use crate::trust::key_id::KeyId;
use crate::trust::keys::{PublicKey, SecretKey};
use crate::trust::signature_file::SignatureFile;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationWire {
    format: String,
    revokes: KeyId,
    public_key: String,
    #[serde(default)]
    reason: Option<String>,
}

/// A revocation that took effect: which key, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    revokes: KeyId,
    reason: Option<String>,
    self_signed: bool,
    signers: Vec<KeyId>,
}

impl Revocation {
    /// The revoked key.
    pub fn revokes(&self) -> KeyId {
        self.revokes
    }
    /// The free-text reason in the statement.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// Whether the revoked key signed its own revocation.
    pub fn self_signed(&self) -> bool {
        self.self_signed
    }
    /// Every key whose signature over the statement verified.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
}

/// A revocation statement: `{"format": "skillgate-revocation-v1", "revokes": KEY_ID,
/// "public_key": BASE64, "reason": TEXT}`, stored in the trust store as `NAME.revoked`, with
/// its signatures in `NAME.revoked.sig` (the `plugin.json.sig` format, each signature over
/// [`REVOCATION_DOMAIN_TAG`] ‖ the statement bytes).
///
/// It takes effect if the revoked key itself signed it (self-revocation: a key holder who
/// lost control of the key can withdraw it), or if at least [`REVOCATION_THRESHOLD`]
/// distinct other trusted keys, none revoked by the policy or by their own statement, did.
pub struct RevocationStatement;

impl RevocationStatement {
    /// The statement bytes revoking `key`.
    pub fn create(key: &PublicKey, reason: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "format": REVOCATION_FORMAT,
            "revokes": key.id().to_string(),
            "public_key": STANDARD.encode(key.verifying_key().as_bytes()),
        });
        if let (Some(r), Some(obj)) = (reason, v.as_object_mut()) {
            obj.insert("reason".to_owned(), serde_json::Value::from(r));
        }
        let mut bytes = format!("{v:#}").into_bytes();
        bytes.push(b'\n');
        bytes
    }

    /// The key a well-formed statement revokes.
    pub fn revokes(statement: &[u8]) -> Result<KeyId, RevocationError> {
        Ok(parse_statement(statement)?.1.id())
    }

    /// Adds `signer`'s signature over `statement` to the signature file `existing` (or a new
    /// one), after checking that `statement` is well formed.
    pub fn sign(
        statement: &[u8],
        existing: Option<&[u8]>,
        signer: &SecretKey,
    ) -> Result<String, RevocationError> {
        parse_statement(statement)?;
        let mut file = match existing {
            Some(b) => SignatureFile::parse(b).map_err(RevocationError::Signatures)?,
            None => SignatureFile::new(),
        };
        let sig = signer.sign(&revocation_message(statement));
        file.add_or_replace(signer.id(), sig)
            .map_err(RevocationError::Signatures)?;
        Ok(file.to_json_pretty())
    }
}

fn revocation_message(statement: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(REVOCATION_DOMAIN_TAG.len().saturating_add(statement.len()));
    m.extend_from_slice(REVOCATION_DOMAIN_TAG);
    m.extend_from_slice(statement);
    m
}

fn parse_statement(bytes: &[u8]) -> Result<(RevocationWire, PublicKey), RevocationError> {
    if bytes.len() > MAX_STATEMENT_BYTES {
        return Err(RevocationError::TooLarge {
            max: MAX_STATEMENT_BYTES,
        });
    }
    let wire: RevocationWire =
        serde_json::from_slice(bytes).map_err(|e| RevocationError::Json(JsonError::new(e)))?;
    if wire.format != REVOCATION_FORMAT {
        return Err(RevocationError::WrongFormat { found: wire.format });
    }
    let raw = STANDARD
        .decode(wire.public_key.as_bytes())
        .map_err(|_| RevocationError::BadPublicKey)?;
    let raw = <[u8; 32]>::try_from(raw).map_err(|_| RevocationError::BadPublicKey)?;
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| RevocationError::BadPublicKey)?;
    let key = PublicKey::from_verifying_key(vk).map_err(|_| RevocationError::BadPublicKey)?;
    if key.id() != wire.revokes {
        return Err(RevocationError::KeyIdMismatch {
            claimed: wire.revokes,
            derived: key.id(),
        });
    }
    Ok((wire, key))
}

/// Checks a revocation statement and its signature file against the trusted keys, which
/// `trusted` looks up by id (a trust store's [`get`](super::store::TrustStore::get)).
///
/// `self_revoked` are the keys already revoked by their own statements or the policy:
/// their signatures do not count towards revoking another key. Signatures by keys
/// `trusted` does not know are ignored; one by a trusted key (or the revoked key) that does
/// not verify refuses the statement.
pub(crate) fn verify_revocation<'k>(
    statement: &[u8],
    signatures: &[u8],
    trusted: impl Fn(&KeyId) -> Option<&'k PublicKey>,
    self_revoked: &BTreeSet<KeyId>,
) -> Result<Revocation, RevocationError> {
    let (wire, revoked_key) = parse_statement(statement)?;
    let file = SignatureFile::parse(signatures).map_err(RevocationError::Signatures)?;
    let message = revocation_message(statement);
    let mut self_signed = false;
    let mut others = Vec::new();
    let mut signers = Vec::new();
    for entry in file.entries() {
        let key = if entry.key_id() == wire.revokes {
            Some(&revoked_key)
        } else {
            trusted(&entry.key_id())
        };
        let Some(key) = key else { continue };
        key.verify_strict(&message, entry.signature())
            .map_err(|_| RevocationError::Invalid {
                key_id: entry.key_id(),
            })?;
        signers.push(entry.key_id());
        if entry.key_id() == wire.revokes {
            self_signed = true;
        } else if !self_revoked.contains(&entry.key_id()) {
            others.push(entry.key_id());
        }
    }
    if !self_signed && others.len() < REVOCATION_THRESHOLD {
        return Err(RevocationError::NotEnoughSigners {
            revokes: wire.revokes,
            signers: others,
            needed: REVOCATION_THRESHOLD,
        });
    }
    Ok(Revocation {
        revokes: wire.revokes,
        reason: wire.reason,
        self_signed,
        signers,
    })
}

/// Whether a revocation statement is signed by the key it revokes (checked without a
/// trust store); used to order self-revocations before revocations by others.
pub(crate) fn is_self_revocation(statement: &[u8], signatures: &[u8]) -> bool {
    verify_revocation(statement, signatures, |_| None, &BTreeSet::new())
        .is_ok_and(|r| r.self_signed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn revocation_statements() {
        let victim = SecretKey::generate();
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        // The trusted keys, as a trust store would look them up.
        let store: BTreeMap<KeyId, PublicKey> = [victim.public(), a.public(), b.public()]
            .into_iter()
            .map(|k| (k.id(), k))
            .collect();
        let none = BTreeSet::new();
        let stmt = RevocationStatement::create(&victim.public(), Some("laptop stolen"));
        let own = RevocationStatement::sign(&stmt, None, &victim).unwrap();
        let r =
            verify_revocation(&stmt, own.as_bytes(), |id: &KeyId| store.get(id), &none).unwrap();
        assert!(r.self_signed());
        assert_eq!(r.revokes(), victim.id());
        assert_eq!(r.reason(), Some("laptop stolen"));
        assert!(is_self_revocation(&stmt, own.as_bytes()));
        // Self-revocation verifies without the key in the store: the statement carries it.
        verify_revocation(&stmt, own.as_bytes(), |_| None, &none).unwrap();

        let by_a = RevocationStatement::sign(&stmt, None, &a).unwrap();
        assert!(matches!(
            verify_revocation(&stmt, by_a.as_bytes(), |id: &KeyId| store.get(id), &none),
            Err(RevocationError::NotEnoughSigners { signers, needed: 2, .. }) if signers == [a.id()]
        ));
        let by_ab = RevocationStatement::sign(&stmt, Some(by_a.as_bytes()), &b).unwrap();
        let r =
            verify_revocation(&stmt, by_ab.as_bytes(), |id: &KeyId| store.get(id), &none).unwrap();
        assert!(!r.self_signed());
        // A key revoked itself does not help revoke another.
        let b_gone: BTreeSet<KeyId> = [b.id()].into();
        assert!(matches!(
            verify_revocation(&stmt, by_ab.as_bytes(), |id: &KeyId| store.get(id), &b_gone),
            Err(RevocationError::NotEnoughSigners { .. })
        ));
        // The signatures are domain-separated: a manifest signature over the same bytes
        // does not count.
        let mut file = SignatureFile::new();
        let (id, sig) = crate::trust::signature_file::sign_manifest(&stmt, &victim);
        file.add_or_replace(id, sig).unwrap();
        assert!(matches!(
            verify_revocation(&stmt, file.to_json_pretty().as_bytes(), |id: &KeyId| store.get(id), &none),
            Err(RevocationError::Invalid { key_id }) if key_id == victim.id()
        ));
        // A changed statement no longer verifies.
        let other = RevocationStatement::create(&victim.public(), Some("other reason"));
        assert!(matches!(
            verify_revocation(&other, own.as_bytes(), |id: &KeyId| store.get(id), &none),
            Err(RevocationError::Invalid { .. })
        ));
    }
}
