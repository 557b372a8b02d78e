//! Keys: a public key the trust store can rely on, a secret key that never leaks, and the
//! errors of reading and using them.
//!
//! Threats answered here: a key file that lies about which key it holds, and a public key
//! that would let anyone forge signatures.
//!
//! - A key's identity is [`KeyId::derive`]d from the public key itself. The key number that
//!   minisign writes into a file is unsigned and chosen by whoever wrote the file, so it is
//!   kept only as a hint ([`PublicKey::file_key_id`]) and never used to decide trust.
//! - Public keys for which [`VerifyingKey::is_weak`] holds (small-order points, for which a
//!   single signature verifies many messages) are refused when they are made, and
//!   signatures are only ever checked with `verify_strict`.
//!
//! Reading and writing minisign's key files is [`super::minisign`]'s; the set of trusted keys
//! is [`super::store`]'s. Every key file is capped in size before it is parsed
//! (`read_key_file`).

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::base::capped::{CappedError, Links};
pub use crate::trust::error::{KeyError, KeyOrigin, PasswordError};
pub use crate::trust::formats::MAX_KEY_FILE_SIZE;
pub use crate::trust::key_id::{KeyId, MalformedKeyId};

/// A usable Ed25519 public key: not weak, identified by its derived [`KeyId`].
///
/// Two values are equal when they hold the same key, whatever their files said.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
    file_key_id: Option<KeyId>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("id", &self.id)
            .field("file_key_id", &self.file_key_id)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Wraps a verifying key, refusing weak (small-order) keys.
    pub fn from_verifying_key(key: VerifyingKey) -> Result<Self, KeyError> {
        let id = KeyId::derive(&key);
        if key.is_weak() {
            return Err(KeyError::WeakKey { key_id: id });
        }
        Ok(PublicKey {
            key,
            id,
            file_key_id: None,
        })
    }

    /// The same key, remembering the key number its minisign file stated.
    pub(super) fn with_file_key_id(mut self, file_key_id: KeyId) -> Self {
        self.file_key_id = Some(file_key_id);
        self
    }

    /// The key's identity, derived from the key.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key id written in the file this key was read from, if any. Unsigned: a hint only.
    pub fn file_key_id(&self) -> Option<KeyId> {
        self.file_key_id
    }

    /// The Ed25519 key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Checks `sig` over `msg` with `verify_strict` (canonical `S`, no small-order `R`).
    pub fn verify_strict(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.key
            .verify_strict(msg, sig)
            .map_err(|_| KeyError::BadSignature { key_id: self.id })
    }
}

/// An Ed25519 signing key. The key material is zeroized when dropped and never printed.
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.public.id)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        SecretKey::from_signing_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    pub(super) fn from_signing_key(key: SigningKey) -> Self {
        let verifying = key.verifying_key();
        // A clamped Ed25519 scalar is a non-zero multiple of 8 below the group order times 8,
        // so the public point always has order L: it is never weak. Not checked again here.
        let public = PublicKey {
            id: KeyId::derive(&verifying),
            key: verifying,
            file_key_id: None,
        };
        SecretKey { key, public }
    }

    /// The same key, remembering the key number its minisign file stated.
    pub(super) fn with_file_key_id(mut self, file_key_id: KeyId) -> Self {
        self.public.file_key_id = Some(file_key_id);
        self
    }

    /// `seed ‖ public key`, as minisign stores a secret key.
    pub(super) fn keypair_bytes(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.key.to_keypair_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// The derived id of the public half.
    pub fn id(&self) -> KeyId {
        self.public.id
    }

    /// Signs `msg` (pure Ed25519, no prehash).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        self.key.sign(msg)
    }
}

/// Wraps an error about a file's contents with the file's name.
pub(crate) fn in_file(path: &Path, e: KeyError) -> KeyError {
    KeyError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Reads a key file of at most [`MAX_KEY_FILE_SIZE`] bytes ([`crate::base::capped`]); with
/// [`Links::Refuse`], a symlink is refused.
pub(crate) fn read_key_file(path: &Path, links: Links) -> Result<Vec<u8>, KeyError> {
    read_capped(path, links, MAX_KEY_FILE_SIZE)
}

/// Reads a regular file of at most `max` bytes, never through a symlink, as a [`KeyError`]
/// (a revocation statement's signature file, say).
pub(crate) fn read_capped_nofollow(path: &Path, max: usize) -> Result<Vec<u8>, KeyError> {
    read_capped(path, Links::Refuse, max)
}

fn read_capped(path: &Path, links: Links, max: usize) -> Result<Vec<u8>, KeyError> {
    let cap = u64::try_from(max).unwrap_or(u64::MAX);
    crate::base::capped::read_capped(path, cap, links).map_err(|e| match e {
        CappedError::Open { path, source } | CappedError::Read { path, source } => {
            KeyError::Io { path, source }
        }
        CappedError::NotRegularFile { path, .. } => KeyError::NotRegularFile { path },
        CappedError::TooLarge { path, .. } => in_file(&path, KeyError::TooLarge { max }),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn key_id_is_derived_from_the_key() {
        let key = SecretKey::generate();
        let vk = *key.public().verifying_key();
        let mut h = Sha256::new();
        h.update(b"skillgate key id v1\0");
        h.update(vk.as_bytes());
        let digest = h.finalize();
        assert_eq!(KeyId::derive(&vk).as_bytes()[..], digest[..8]);
        assert_eq!(key.id(), KeyId::derive(&vk));
    }

    #[test]
    fn secret_key_debug_hides_the_key() {
        let key = SecretKey::generate();
        let debug = format!("{key:?}");
        let seed = key.key.to_bytes();
        assert!(debug.contains(&key.id().to_string()));
        for hex in [
            format!("{:?}", seed),
            format!(
                "{:02x}{:02x}{:02x}{:02x}",
                seed[0], seed[1], seed[2], seed[3]
            ),
            format!(
                "{:02X}{:02X}{:02X}{:02X}",
                seed[0], seed[1], seed[2], seed[3]
            ),
        ] {
            assert!(!debug.contains(&hex), "{debug}");
        }
        assert!(!debug.contains("SigningKey"));
    }
}
