//! The trust store: the public keys a host trusts, and the revocations signed beside them.
//!
//! Threat answered here: a trust store that quietly trusts less (or more) than its
//! directory says. [`TrustStore::load_dir`] fails closed: every `*.pub` file must be a
//! regular file holding a valid key, two files holding the same key are an error, and every
//! `*.revoked` statement must take effect, so a typo or a planted symlink cannot silently
//! change the set of trusted keys.
//!
//! Revocations are ordered: statements by which a key revoked itself are applied first, so
//! a key that withdrew itself never helps revoke another; and a key added later never lifts
//! a revocation already in force.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::base::capped::Links;
use crate::trust::error::{KeyError, KeyOrigin, RevocationError, SignatureError};
use crate::trust::formats::{MAX_SIGNATURE_FILE_SIZE, REVOCATION_SUFFIX};
use crate::trust::key_id::KeyId;
use crate::trust::keys::{PublicKey, in_file, read_capped_nofollow, read_key_file};
use crate::trust::revocation::{Revocation, is_self_revocation, verify_revocation};

/// The set of public keys a host trusts, by derived id, and the signed revocations found
/// beside them.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, PublicKey>,
    /// Where each key came from, for [`KeyError::DuplicateKey`].
    origins: BTreeMap<KeyId, KeyOrigin>,
    revocations: BTreeMap<KeyId, Revocation>,
}

impl TrustStore {
    /// A store that trusts nothing; verification against it always fails.
    pub fn empty() -> Self {
        TrustStore::default()
    }

    /// A store holding `keys`; the same key given twice is an error.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, KeyError> {
        let mut store = TrustStore::empty();
        for (i, key) in keys.into_iter().enumerate() {
            store.insert(key, KeyOrigin::Position(i))?;
        }
        Ok(store)
    }

    /// Adds one key, keeping every key and revocation already in the store; the same key
    /// twice is an error. A revocation already in force stays in force: adding a key never
    /// makes a revoked key count again.
    pub fn add_key(&mut self, key: PublicKey) -> Result<(), KeyError> {
        self.insert(key, KeyOrigin::Added)
    }

    /// Loads every `*.pub` file directly in `dir` (not recursively), in file name order,
    /// then every revocation statement `*.revoked` (with its `*.revoked.sig`): see
    /// [`RevocationStatement`](super::revocation::RevocationStatement).
    ///
    /// Fails closed: a `*.pub` or `*.revoked` entry that is a symlink or not a regular file,
    /// or that does not hold a valid, non-weak key or an effective revocation, is an error
    /// naming the file, as is the same key in two files. Other files (a README, say) are
    /// ignored.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        let mut revocations = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            let is_key = name.as_bytes().ends_with(b".pub");
            let is_revocation = name.as_bytes().ends_with(REVOCATION_SUFFIX.as_bytes());
            if !is_key && !is_revocation {
                continue;
            }
            let path = entry.path();
            // `file_type` does not follow symlinks.
            let file_type = entry.file_type().map_err(|source| KeyError::Io {
                path: path.clone(),
                source,
            })?;
            if !file_type.is_file() {
                return Err(KeyError::NotRegularFile { path });
            }
            if is_key {
                paths.push(path);
            } else {
                revocations.push(path);
            }
        }
        paths.sort();
        revocations.sort();

        let mut store = TrustStore::empty();
        for path in paths {
            // Opened with O_NOFOLLOW and checked again through the descriptor, in case the
            // entry was replaced after it was listed.
            let text = read_key_file(&path, Links::Refuse)?;
            let key = PublicKey::parse_minisign(&text).map_err(|e| in_file(&path, e))?;
            store.insert(key, KeyOrigin::File(path))?;
        }
        let mut statements = Vec::with_capacity(revocations.len());
        for path in revocations {
            let mut sig_path = path.clone().into_os_string();
            sig_path.push(".sig");
            let sig_path = PathBuf::from(sig_path);
            let statement = read_key_file(&path, Links::Refuse)?;
            let signatures = match read_capped_nofollow(&sig_path, MAX_SIGNATURE_FILE_SIZE) {
                Ok(s) => s,
                Err(KeyError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Err(KeyError::Revocation {
                        path,
                        source: Box::new(RevocationError::Signatures(SignatureError::Missing)),
                    });
                }
                Err(e) => return Err(e),
            };
            statements.push((path, statement, signatures));
        }
        // Self-revocations first: a key that revoked itself does not help revoke others.
        statements.sort_by_key(|(_, st, sig)| !is_self_revocation(st, sig));
        let mut self_revoked = BTreeSet::new();
        for (path, statement, signatures) in statements {
            store
                .add_revocation_inner(&statement, &signatures, &self_revoked)
                .map_err(|source| KeyError::Revocation {
                    path,
                    source: Box::new(source),
                })?;
            self_revoked.extend(
                store
                    .revocations
                    .values()
                    .filter(|r| r.self_signed())
                    .map(|r| r.revokes()),
            );
        }
        Ok(store)
    }

    /// Adds a revocation statement and its signature file (as found in a trust store
    /// directory); an error if it does not take effect.
    pub fn add_revocation(
        &mut self,
        statement: &[u8],
        signatures: &[u8],
    ) -> Result<(), RevocationError> {
        let self_revoked = self
            .revocations
            .values()
            .filter(|r| r.self_signed())
            .map(|r| r.revokes())
            .collect();
        self.add_revocation_inner(statement, signatures, &self_revoked)
    }

    fn add_revocation_inner(
        &mut self,
        statement: &[u8],
        signatures: &[u8],
        self_revoked: &BTreeSet<KeyId>,
    ) -> Result<(), RevocationError> {
        let r = verify_revocation(statement, signatures, |id| self.get(id), self_revoked)?;
        self.revocations.insert(r.revokes(), r);
        Ok(())
    }

    /// The effective revocation of `id`, if the store holds one.
    pub fn revocation(&self, id: &KeyId) -> Option<&Revocation> {
        self.revocations.get(id)
    }

    fn insert(&mut self, key: PublicKey, origin: KeyOrigin) -> Result<(), KeyError> {
        let id = key.id();
        match self.origins.entry(id) {
            Entry::Occupied(first) => Err(KeyError::DuplicateKey {
                key_id: id,
                first: first.get().clone(),
                second: origin,
            }),
            Entry::Vacant(slot) => {
                slot.insert(origin);
                self.keys.insert(id, key);
                Ok(())
            }
        }
    }

    /// The trusted key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::trust::keys::SecretKey;

    #[test]
    fn trust_store_from_keys_refuses_duplicates() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let store = TrustStore::from_keys([a.clone(), b.clone()]).unwrap();
        assert_eq!(store.len(), 2);
        assert!(!store.is_empty());
        assert_eq!(store.get(&a.id()), Some(&a));
        let mut ids: Vec<KeyId> = vec![a.id(), b.id()];
        ids.sort();
        assert_eq!(store.ids().copied().collect::<Vec<_>>(), ids);
        assert!(matches!(
            TrustStore::from_keys([a.clone(), b, a.clone()]),
            Err(KeyError::DuplicateKey {
                key_id,
                first: KeyOrigin::Position(0),
                second: KeyOrigin::Position(2),
            }) if key_id == a.id()
        ));
        assert!(TrustStore::empty().is_empty());
    }

    #[test]
    fn trust_store_load_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        std::fs::write(dir.path().join("a.pub"), a.to_minisign_string()).unwrap();
        std::fs::write(dir.path().join("b.pub"), b.to_minisign_string()).unwrap();
        std::fs::write(dir.path().join("README.md"), "not a key").unwrap();
        std::fs::write(dir.path().join("old.pub.bak"), "not a key").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.pub"), "not read: not recursive").unwrap();
        let store = TrustStore::load_dir(dir.path()).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.get(&a.id()), Some(&a));
        assert!(store.get(&b.id()).is_some());
    }

    #[test]
    fn trust_store_load_dir_fails_closed() {
        let key = SecretKey::generate().public();
        let fresh = || {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("good.pub"), key.to_minisign_string()).unwrap();
            dir
        };

        let dir = fresh();
        std::fs::write(dir.path().join("copy.pub"), key.to_minisign_string()).unwrap();
        let err = TrustStore::load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::DuplicateKey {
                key_id,
                first: KeyOrigin::File(first),
                second: KeyOrigin::File(second),
            } if *key_id == key.id()
                && first.ends_with("copy.pub")
                && second.ends_with("good.pub")),
            "{err:?}"
        );

        let dir = fresh();
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, vector!("public-truncated-base64.pub")).unwrap();
        let err = TrustStore::load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::InFile { path, source }
                if *path == bad && matches!(**source, KeyError::Malformed { .. })),
            "{err:?}"
        );

        let dir = fresh();
        let link = dir.path().join("link.pub");
        std::os::unix::fs::symlink(dir.path().join("good.pub"), &link).unwrap();
        assert!(matches!(
            TrustStore::load_dir(dir.path()),
            Err(KeyError::NotRegularFile { path }) if path == link
        ));

        let dir = fresh();
        let sub = dir.path().join("dir.pub");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            TrustStore::load_dir(dir.path()),
            Err(KeyError::NotRegularFile { path }) if path == sub
        ));

        let dir = fresh();
        let empty = dir.path().join("empty.pub");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            TrustStore::load_dir(dir.path()).unwrap_err().innermost(),
            KeyError::Malformed { .. }
        ));

        let dir = fresh();
        let missing = dir.path().join("nope");
        assert!(matches!(
            TrustStore::load_dir(&missing),
            Err(KeyError::Io { path, .. }) if path == missing
        ));
    }
}
