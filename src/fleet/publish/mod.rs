//! The operator's side of freshness: create a TUF repository's root, and sign the list of
//! releases offered into its metadata directory (what `skill-sign tuf init` and
//! `skill-sign tuf publish` run; `docs/fleet-tuf.md` is the procedure).
//!
//! - [`init_root`] writes a root (spec 1.0.0, version 1, no consistent snapshots) whose
//!   `root` role is the root key and whose `targets`, `snapshot` and `timestamp` roles are
//!   the online key, each with threshold 1, signed by the root key.
//! - [`publish`] reads a releases directory laid out `DIR/NAME/VERSION` (each file the exact
//!   bytes of a release's OCI image manifest, as `skill-sign push --manifest-out` writes
//!   them), lists each as target `NAME/VERSION` (the contract of [`super::freshness`]), and
//!   signs `targets`, `snapshot` and `timestamp` with the online key, all three at one
//!   version higher than the metadata directory held before. A release absent from the
//!   directory is not listed: hosts refuse it from their next check on.
//!
//! Everything TUF is `tough`'s: its key sources read the keys (RSA PEM, ed25519 PKCS#8,
//! ECDSA P-256 PKCS#8), its schema types make the root, `SignedRole::new` signs it, its
//! `RepositoryEditor` signs the other roles and its `SignedRepository::write` writes them.
//! Two things are done here around it: the metadata is written into a directory of its own
//! inside the output directory and then renamed into place `targets.json`, then
//! `snapshot.json`, then `timestamp.json`, so a host reading the directory meanwhile never
//! sees a half-written file nor a timestamp naming a snapshot not yet there; and the roles'
//! previous versions are read back (with `tough`'s schema types) to refuse a publication
//! that would not be higher, which every host that trusted the earlier one would refuse as
//! a rollback.

mod error;
mod files;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{Hashes, KeyHolder, RoleKeys, RoleType, Root, Target};

pub use error::PublishError;
use files::{
    ROLE_FILES, move_into_place, parse_role, previous_targets, previous_version, read_releases,
    role_name,
};

/// Largest expiry, in days, of any role (100 years): a bound on the arithmetic, not advice.
pub const MAX_EXPIRY_DAYS: u32 = 36_500;

/// What [`init_root`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RootCreated {
    /// The root file.
    pub path: PathBuf,
    /// Its SHA-256, hex: the pin a policy's `freshness.root_sha256` names.
    pub sha256: String,
    /// The root key's TUF key id, hex.
    pub root_key_id: String,
    /// The online key's TUF key id, hex.
    pub online_key_id: String,
    /// When the root expires (RFC 3339).
    pub expires: String,
}

/// Writes a new TUF root to `out` (never overwriting: [`PublishError::Exists`]): spec
/// 1.0.0, version 1, no consistent snapshots, expiring in `expires_days`; the `root` role
/// is `root_key`, the `targets`, `snapshot` and `timestamp` roles are `online_key`, each
/// with threshold 1; signed by `root_key`. Key files are read by `tough`'s
/// `LocalKeySource`.
pub fn init_root(
    root_key: &Path,
    online_key: &Path,
    out: &Path,
    expires_days: u32,
) -> Result<RootCreated, PublishError> {
    let expires = expiry("root", expires_days)?;
    // Claim the name first: an existing file is refused before any key is read.
    let mut file = create_new(out)?;
    let made = on_runtime(|| async { signed_root(root_key, online_key, expires).await });
    let written = made.and_then(|(buffer, root_id, online_id)| {
        use std::io::Write as _;
        file.write_all(&buffer)
            .and_then(|()| file.sync_all())
            .map_err(|source| PublishError::Write {
                path: out.to_path_buf(),
                source,
            })?;
        Ok(RootCreated {
            path: out.to_path_buf(),
            sha256: super::artifact::hex(&sha2_256(&buffer)),
            root_key_id: root_id,
            online_key_id: online_id,
            expires: expires.to_string(),
        })
    });
    if written.is_err() {
        // The file this call created, still empty or partial: no root is better than a
        // broken one an operator might pin.
        let _ = std::fs::remove_file(out);
    }
    written
}

/// The signed root's bytes and the two key ids.
async fn signed_root(
    root_key: &Path,
    online_key: &Path,
    expires: jiff::Timestamp,
) -> Result<(Vec<u8>, String, String), PublishError> {
    let root_source = key_source(root_key);
    let root_tuf = public_key(root_key, root_source.as_ref()).await?;
    let online_tuf = public_key(online_key, key_source(online_key).as_ref()).await?;
    let key_id = |path: &Path, key: &tough::schema::key::Key| {
        key.key_id().map_err(|e| PublishError::Key {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    };
    let root_id = key_id(root_key, &root_tuf)?;
    let online_id = key_id(online_key, &online_tuf)?;
    let role = |id: &Decoded<Hex>| RoleKeys {
        keyids: vec![id.clone()],
        threshold: NonZeroU64::MIN,
        _extra: HashMap::new(),
    };
    let root = Root {
        spec_version: "1.0.0".to_owned(),
        consistent_snapshot: false,
        version: NonZeroU64::MIN,
        expires,
        keys: HashMap::from([(root_id.clone(), root_tuf), (online_id.clone(), online_tuf)]),
        roles: HashMap::from([
            (RoleType::Root, role(&root_id)),
            (RoleType::Targets, role(&online_id)),
            (RoleType::Snapshot, role(&online_id)),
            (RoleType::Timestamp, role(&online_id)),
        ]),
        _extra: HashMap::new(),
    };
    let signed = SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root),
        &[root_source],
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .map_err(|e| tuf("sign the root", &e))?;
    Ok((
        signed.buffer().clone(),
        hex::encode(&*root_id),
        hex::encode(&*online_id),
    ))
}

fn key_source(path: &Path) -> Box<dyn KeySource> {
    Box::new(LocalKeySource {
        path: path.to_path_buf(),
    })
}

/// The public half of a key file, as TUF lists it.
async fn public_key(
    path: &Path,
    source: &dyn KeySource,
) -> Result<tough::schema::key::Key, PublishError> {
    source
        .as_sign()
        .await
        .map(|sign| sign.tuf_key())
        .map_err(|e| PublishError::Key {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

/// How [`publish`] versions and dates the roles it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    version: Option<NonZeroU64>,
    targets_days: u32,
    snapshot_days: u32,
    timestamp_days: u32,
}

impl Default for PublishOptions {
    /// The version is the current Unix time in seconds; targets expire in 30 days, the
    /// snapshot in 7, the timestamp in 1.
    fn default() -> Self {
        PublishOptions {
            version: None,
            targets_days: 30,
            snapshot_days: 7,
            timestamp_days: 1,
        }
    }
}

impl PublishOptions {
    /// The defaults ([`PublishOptions::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Signs `targets`, `snapshot` and `timestamp` at `version` instead of the current Unix
    /// time in seconds.
    pub fn version(mut self, version: NonZeroU64) -> Self {
        self.version = Some(version);
        self
    }

    /// The days until `targets`, `snapshot` and `timestamp` expire (each 1 to
    /// [`MAX_EXPIRY_DAYS`]).
    pub fn expiries(mut self, targets_days: u32, snapshot_days: u32, timestamp_days: u32) -> Self {
        self.targets_days = targets_days;
        self.snapshot_days = snapshot_days;
        self.timestamp_days = timestamp_days;
        self
    }
}

/// One release [`publish`] listed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listed {
    /// The target name, `NAME/VERSION`.
    pub target: String,
    /// The manifest's digest, `sha256:…` (what `skill-sign push` printed).
    pub digest: String,
    /// The manifest's length in bytes.
    pub length: u64,
}

/// What [`publish`] signed and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The releases listed, by target name.
    pub listed: Vec<Listed>,
    /// Targets the previous `targets.json` in the output directory listed and this one does
    /// not: withdrawn from this publication on.
    pub withdrawn: Vec<String>,
    /// The version of `targets`, `snapshot` and `timestamp`.
    pub version: u64,
    /// When `targets` expires (RFC 3339).
    pub targets_expires: String,
    /// When `snapshot` expires (RFC 3339).
    pub snapshot_expires: String,
    /// When `timestamp` expires (RFC 3339).
    pub timestamp_expires: String,
}

/// Lists every release file of `releases` (`releases/NAME/VERSION`, each the bytes of the
/// release's OCI image manifest) as target `NAME/VERSION`, signs `targets`, `snapshot` and
/// `timestamp` under the root `root` with the online key `key`, and writes them to the
/// directory `metadata` (created if missing). Refusals, before anything is signed:
/// [`PublishError::BadEntry`] (an entry that is not `NAME/VERSION`),
/// [`PublishError::NotAManifest`], [`PublishError::Expiry`],
/// [`PublishError::VersionNotHigher`] (a version not above the one in `metadata`).
pub fn publish(
    root: &Path,
    key: &Path,
    releases: &Path,
    metadata: &Path,
    options: PublishOptions,
) -> Result<Published, PublishError> {
    let targets_expires = expiry("targets", options.targets_days)?;
    let snapshot_expires = expiry("snapshot", options.snapshot_days)?;
    let timestamp_expires = expiry("timestamp", options.timestamp_days)?;
    let offered = read_releases(releases)?;
    let previous = previous_targets(metadata)?;
    let version = match options.version {
        Some(v) => v,
        None => {
            let seconds = jiff::Timestamp::now().as_second();
            u64::try_from(seconds)
                .ok()
                .and_then(NonZeroU64::new)
                .ok_or(PublishError::Clock { seconds })?
        }
    };
    for (file, role) in ROLE_FILES {
        if let Some(current) = previous_version(metadata, file)?
            && current >= version.get()
        {
            return Err(PublishError::VersionNotHigher {
                metadata: metadata.to_path_buf(),
                role: role_name(role),
                current,
                offered: version.get(),
            });
        }
    }
    let listed: Vec<Listed> = offered
        .iter()
        .map(|(target, bytes)| Listed {
            target: target.clone(),
            digest: super::artifact::sha256_digest(bytes),
            length: bytes.len() as u64,
        })
        .collect();
    let withdrawn = previous
        .into_iter()
        .filter(|t| !offered.contains_key(t))
        .collect();
    let stage = metadata.join(format!(".skill-sign-publish-{}", std::process::id()));
    std::fs::create_dir_all(metadata).map_err(|source| PublishError::Write {
        path: metadata.to_path_buf(),
        source,
    })?;
    let written = on_runtime(|| async {
        let mut editor = RepositoryEditor::new(root)
            .await
            .map_err(|e| tuf("read the root", &e))?;
        check_role_key(root, key).await?;
        for (target, bytes) in &offered {
            editor
                .add_target(target.as_str(), target_of(bytes))
                .map_err(|e| tuf("add a target", &e))?;
        }
        editor
            .targets_version(version)
            .map_err(|e| tuf("set the targets' version", &e))?
            .targets_expires(targets_expires)
            .map_err(|e| tuf("set the targets' expiry", &e))?
            .snapshot_version(version)
            .snapshot_expires(snapshot_expires)
            .timestamp_version(version)
            .timestamp_expires(timestamp_expires);
        let signed = editor
            .sign(&[key_source(key)])
            .await
            .map_err(|e| tuf("sign with the online key", &e))?;
        signed
            .write(&stage)
            .await
            .map_err(|e| tuf("write the metadata", &e))
    })
    .and_then(|()| move_into_place(&stage, metadata));
    let _ = std::fs::remove_dir_all(&stage);
    written?;
    Ok(Published {
        listed,
        withdrawn,
        version: version.get(),
        targets_expires: targets_expires.to_string(),
        snapshot_expires: snapshot_expires.to_string(),
        timestamp_expires: timestamp_expires.to_string(),
    })
}

/// Refuses `key` unless `root` lists it for `targets`, `snapshot` and `timestamp` (else
/// `tough` fails later with a message about a role's missing keys).
async fn check_role_key(root: &Path, key: &Path) -> Result<(), PublishError> {
    let public = public_key(key, key_source(key).as_ref()).await?;
    let key_id = public.key_id().map_err(|e| PublishError::Key {
        path: key.to_path_buf(),
        detail: e.to_string(),
    })?;
    // RepositoryEditor::new read and parsed this file just before.
    let bytes = std::fs::read(root).map_err(|e| PublishError::Tuf {
        step: "read the root",
        detail: e.to_string(),
    })?;
    let parsed = parse_role::<Root>(&bytes).map_err(|detail| PublishError::Tuf {
        step: "read the root",
        detail,
    })?;
    for (_, role) in ROLE_FILES {
        let listed = parsed
            .roles
            .get(&role)
            .is_some_and(|keys| keys.keyids.contains(&key_id));
        if !listed {
            return Err(PublishError::NotRoleKey {
                path: key.to_path_buf(),
                key_id: hex::encode(&*key_id),
                role: role_name(role),
            });
        }
    }
    Ok(())
}

/// The TUF target of manifest bytes: their length and SHA-256, nothing custom.
fn target_of(bytes: &[u8]) -> Target {
    Target {
        length: bytes.len() as u64,
        hashes: Hashes {
            sha256: Decoded::from(sha2_256(bytes).to_vec()),
            _extra: HashMap::new(),
        },
        custom: HashMap::new(),
        _extra: HashMap::new(),
    }
}

fn sha2_256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// `days` from now, for role `role`.
fn expiry(role: &'static str, days: u32) -> Result<jiff::Timestamp, PublishError> {
    let out_of_range = PublishError::Expiry { role, days };
    if !(1..=MAX_EXPIRY_DAYS).contains(&days) {
        return Err(out_of_range);
    }
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(i64::from(days) * 24))
        .map_err(|_| out_of_range)
}

fn tuf(step: &'static str, e: &tough::error::Error) -> PublishError {
    PublishError::Tuf {
        step,
        detail: crate::error::chain(e).to_string(),
    }
}

fn create_new(path: &Path) -> Result<std::fs::File, PublishError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => PublishError::Exists {
                path: path.to_path_buf(),
            },
            _ => PublishError::Write {
                path: path.to_path_buf(),
                source,
            },
        })
}

/// Runs `tough` on a runtime and thread of their own ([`super::oci::on_own_runtime`]).
fn on_runtime<T, F, Fut>(make: F) -> Result<T, PublishError>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, PublishError>>,
{
    super::oci::on_own_runtime(|| async { Ok(make().await) })
        .map_err(|e| PublishError::Runtime {
            detail: e.to_string(),
        })
        .and_then(|inner| inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_bounded() {
        assert!(expiry("timestamp", 1).is_ok());
        assert!(expiry("root", MAX_EXPIRY_DAYS).is_ok());
        for days in [0, MAX_EXPIRY_DAYS + 1] {
            assert!(
                matches!(expiry("targets", days), Err(PublishError::Expiry { role: "targets", days: d }) if d == days)
            );
        }
    }
}
