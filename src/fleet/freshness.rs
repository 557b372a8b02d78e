//! TUF freshness: a release is installed only if the operator's TUF repository lists it,
//! now, at that version with that digest.
//!
//! # The threat
//!
//! A signature says who made a release, not whether it is still the release to install. A
//! registry that was compromised, or a mirror that stopped updating, can keep serving an
//! old release whose signature is still valid, or point a tag at it (the class of
//! Notation's CVE-2024-23332). The Update Framework answers exactly this: a short-lived
//! `timestamp` role names the current `snapshot`, which names the current `targets`, which
//! list every release with its hash and length; every role expires, and a client keeps the
//! versions it trusted last, so a replayed older state is refused.
//!
//! # The contract with the registry side
//!
//! A release of plugin `NAME` at version `VERSION` is the TUF target named
//! `NAME/VERSION` (the version as semver prints it), and the target's content is **the
//! bytes of the release's OCI image manifest** (what `skill-sign push` uploads and whose
//! `sha256:` digest it prints). So the target's SHA-256 is the manifest digest and its
//! length is the manifest's length; [`Freshness::check`] takes exactly those two values.
//! The manifest in turn names every blob by digest, so listing it pins the whole release.
//! `docs/fleet-tuf.md` is the operator's side: creating the repository, pinning its root,
//! publishing a release, refreshing the timestamp.
//!
//! # How it runs
//!
//! The TUF client is `tough` (the one Bottlerocket runs in production); nothing here parses
//! TUF metadata. Each [`Freshness::check`] loads the repository anew: the root pinned by
//! the policy, then any newer root it signs, then timestamp, snapshot and targets, with
//! `tough`'s expiration enforcement on and its datastore in `freshness.state` (which keeps
//! the versions trusted last, across runs: that is what refuses a rollback). Then the target
//! must exist with that SHA-256 and length.
//!
//! `tough` is async. The API here is synchronous: a check runs `tough` on a current-thread
//! `tokio` runtime of its own, on a thread of its own, and waits for it. So a host that is
//! itself inside a `tokio` runtime can call it without "cannot start a runtime from within a
//! runtime" panics; it blocks the calling thread, so an async host calls it from
//! `spawn_blocking`. The whole check has a deadline (`freshness.timeout_ms`, 60 s by
//! default), and every HTTP fetch one of its own. Checks on one [`Freshness`] are serialized, and checks of several
//! processes sharing a state directory too (a lock file in it): `tough` writes its datastore
//! without one.

use crate::base::version::Version;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::base::capped::{Links, read_capped};
pub use crate::base::freshness::{FreshnessError, TufRole};
use crate::base::settings::{FreshnessSettings, MetadataSource};

/// The longest one HTTP fetch of a metadata file may take (it is tried twice).
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest an HTTP connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a finished check waits for the runtime's blocking file reads to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Largest root metadata file read (`tough`'s own limit for a root it fetches).
const MAX_ROOT_BYTES: u64 = 1024 * 1024;

/// The lock file in the state directory that serializes checks across processes.
const LOCK_FILE: &str = ".skillgate-freshness.lock";

/// The TUF target name of a release: `<name>/<version>`.
pub fn target_name(name: &str, version: &Version) -> String {
    format!("{name}/{version}")
}

/// A TUF repository to check releases against, from a policy's `freshness` section: its
/// root metadata read and checked against the pin once, its other metadata read anew at
/// every [`Freshness::check`].
#[derive(Debug)]
pub struct Freshness {
    /// The pinned root metadata's bytes.
    root: Vec<u8>,
    /// The metadata base URL (`file://` for a directory), ending in `/`.
    metadata: url::Url,
    /// The metadata source as the policy names it, for messages.
    shown: String,
    /// `tough`'s datastore.
    state: std::path::PathBuf,
    /// The deadline of one check.
    deadline: Duration,
    /// Serializes this value's checks.
    lock: Mutex<()>,
}

impl Freshness {
    /// Reads the root metadata file the policy names and checks its SHA-256 against the
    /// pin before anything parses it: a different file is
    /// [`FreshnessError::RootPinMismatch`], an unreadable one
    /// [`FreshnessError::RootUnreadable`].
    pub fn from_policy(settings: &FreshnessSettings) -> Result<Freshness, FreshnessError> {
        use sha2::Digest as _;
        let root = read_capped(settings.root(), MAX_ROOT_BYTES, Links::Follow).map_err(|e| {
            FreshnessError::RootUnreadable {
                path: settings.root().to_path_buf(),
                source: e,
            }
        })?;
        let found: [u8; 32] = sha2::Sha256::digest(&root).into();
        if &found != settings.root_sha256() {
            return Err(FreshnessError::RootPinMismatch {
                path: settings.root().to_path_buf(),
                pinned: hex::encode(settings.root_sha256()),
                found: hex::encode(found),
            });
        }
        let shown = settings.metadata().to_string();
        let metadata = match settings.metadata() {
            MetadataSource::Dir(dir) => std::path::absolute(dir)
                .ok()
                .and_then(|dir| url::Url::from_directory_path(dir).ok()),
            MetadataSource::Url(url) => Some(with_trailing_slash(url)),
        }
        .ok_or_else(|| FreshnessError::Unreadable {
            metadata: shown.clone(),
            detail: "cannot be made a URL".to_owned(),
        })?;
        Ok(Freshness {
            root,
            metadata,
            shown,
            state: settings.state().to_path_buf(),
            deadline: settings.timeout(),
            lock: Mutex::new(()),
        })
    }

    /// Loads the repository now and requires its current targets to list the release
    /// `name`/`version` with SHA-256 `manifest_digest` (`"sha256:<64 hex>"`, the OCI
    /// manifest's digest) and length `manifest_len` (the manifest's length in bytes).
    ///
    /// Refusals: [`FreshnessError::Expired`] (a role expired),
    /// [`FreshnessError::RolledBack`] (older metadata than trusted before),
    /// [`FreshnessError::Invalid`] (a signature, hash or form),
    /// [`FreshnessError::NotListed`], [`FreshnessError::DigestMismatch`],
    /// [`FreshnessError::LengthMismatch`]; and the host-side errors
    /// ([`FreshnessError::is_host_problem`]). Each check is one `freshness` audit event.
    /// Blocks the calling thread for at most about the section's `timeout_ms` (60 s by
    /// default).
    pub fn check(
        &self,
        name: &str,
        version: &Version,
        manifest_digest: &str,
        manifest_len: u64,
    ) -> Result<(), FreshnessError> {
        let target = target_name(name, version);
        let result = self.check_target(name, &target, manifest_digest, manifest_len);
        let version = version.to_string();
        crate::audit::freshness(
            name,
            &version,
            manifest_digest,
            &self.shown,
            result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        );
        result
    }

    fn check_target(
        &self,
        name: &str,
        target: &str,
        manifest_digest: &str,
        manifest_len: u64,
    ) -> Result<(), FreshnessError> {
        if !crate::base::name::is_plugin_name(name) {
            return Err(FreshnessError::BadName {
                name: name.to_owned(),
            });
        }
        let offered = parse_digest(manifest_digest)?;
        self.check_state_dir()?;
        // A poisoned lock only means an earlier check panicked; the datastore is guarded by
        // tough's own checks, so the next check may go on.
        let _serial = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lock_path = self.state.join(LOCK_FILE);
        let _files =
            crate::trust::marks::lock_file(&lock_path).map_err(|source| FreshnessError::State {
                path: lock_path.clone(),
                source,
            })?;
        let listed = self.run_tough(target)?;
        let Some((listed_sha256, listed_len)) = listed else {
            return Err(FreshnessError::NotListed {
                target: target.to_owned(),
            });
        };
        if listed_sha256 != offered {
            return Err(FreshnessError::DigestMismatch {
                target: target.to_owned(),
                listed: hex::encode(listed_sha256),
                offered: hex::encode(offered),
            });
        }
        if listed_len != manifest_len {
            return Err(FreshnessError::LengthMismatch {
                target: target.to_owned(),
                listed: listed_len,
                offered: manifest_len,
            });
        }
        Ok(())
    }

    /// The state directory holds what refuses a rollback; `tough` takes a file there it
    /// cannot parse as "nothing trusted yet". So it must be writable by root and the host's
    /// user only, as must every directory above it.
    fn check_state_dir(&self) -> Result<(), FreshnessError> {
        use std::os::fd::AsFd as _;
        let state = |path: &Path, source| FreshnessError::State {
            path: path.to_path_buf(),
            source,
        };
        let dir = std::fs::File::open(&self.state).map_err(|e| state(&self.state, e))?;
        crate::base::perms::check_not_writable_by_others(dir.as_fd(), &self.state).map_err(|e| {
            match e {
                crate::base::perms::PermsError::WritableByOthers(w) => {
                    FreshnessError::StateWritableByOthers(w)
                }
                crate::base::perms::PermsError::Io { path, source } => state(&path, source),
            }
        })
    }

    /// Runs the TUF client on a thread and runtime of its own: the listed SHA-256 and
    /// length of `target`, or `None` when the current targets do not list it.
    fn run_tough(&self, target: &str) -> Result<Option<(Vec<u8>, u64)>, FreshnessError> {
        let job = Job {
            root: self.root.clone(),
            metadata: self.metadata.clone(),
            shown: self.shown.clone(),
            state: self.state.clone(),
            target: target.to_owned(),
            deadline: self.deadline,
        };
        let runtime_error = |detail: String| FreshnessError::Runtime { detail };
        let thread = std::thread::Builder::new()
            .name("skillgate-tuf".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| runtime_error(format!("cannot start its runtime: {e}")))?;
                let result = runtime.block_on(job.run());
                // A file read still blocked past the deadline (a FIFO as a metadata file)
                // must not hold this thread: dropping the runtime would wait for it.
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
                result
            })
            .map_err(|e| runtime_error(format!("cannot start its thread: {e}")))?;
        thread
            .join()
            .map_err(|_| runtime_error("its thread panicked".to_owned()))?
    }
}

/// What the TUF thread needs, owned.
struct Job {
    root: Vec<u8>,
    metadata: url::Url,
    shown: String,
    state: std::path::PathBuf,
    target: String,
    deadline: Duration,
}

impl Job {
    async fn run(self) -> Result<Option<(Vec<u8>, u64)>, FreshnessError> {
        let timed_out = || FreshnessError::TimedOut {
            metadata: self.shown.clone(),
            ms: u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX),
        };
        let loaded = tokio::time::timeout(
            self.deadline,
            self.load(Some(&self.state), tough::ExpirationEnforcement::Safe),
        )
        .await
        .map_err(|_| timed_out())?;
        let repository = match loaded {
            Ok(r) => r,
            Err(e) => {
                let mut refusal = map_error(&e, &self.shown);
                if let FreshnessError::Expired { role, expires, .. } = &mut refusal {
                    // Only to say *when* it expired: the same metadata loaded again,
                    // verified, with expiry not enforced and a throwaway datastore (the
                    // state directory is left as the refused load left it).
                    let again = tokio::time::timeout(
                        self.deadline,
                        self.load(None, tough::ExpirationEnforcement::Unsafe),
                    )
                    .await;
                    if let Ok(Ok(r)) = again {
                        *expires = Some(expiry_of(&r, *role));
                    }
                }
                return Err(refusal);
            }
        };
        let Ok(name) = tough::TargetName::new(self.target.as_str()) else {
            return Ok(None);
        };
        Ok(repository
            .targets()
            .signed
            .find_target(&name, false)
            .ok()
            .map(|t| (t.hashes.sha256.to_vec(), t.length)))
    }

    async fn load(
        &self,
        datastore: Option<&Path>,
        expiry: tough::ExpirationEnforcement,
    ) -> Result<tough::Repository, tough::error::Error> {
        let http = tough::HttpTransportBuilder::new()
            .timeout(FETCH_TIMEOUT.min(self.deadline))
            .connect_timeout(CONNECT_TIMEOUT.min(self.deadline))
            .tries(2);
        // Targets are never fetched (their content is the OCI manifest, fetched and
        // checked by digest from the registry), so the targets base is the metadata's.
        let loader =
            tough::RepositoryLoader::new(&self.root, self.metadata.clone(), self.metadata.clone())
                .transport(tough::DefaultTransport::new_with_http_settings(http))
                .expiration_enforcement(expiry);
        match datastore {
            Some(dir) => loader.datastore(dir).load().await,
            None => loader.load().await,
        }
    }
}

/// When `role`'s metadata in `repository` expires, RFC 3339.
fn expiry_of(repository: &tough::Repository, role: TufRole) -> String {
    use tough::schema::Role as _;
    match role {
        TufRole::Root => repository.root().signed.expires(),
        TufRole::Timestamp => repository.timestamp().signed.expires(),
        TufRole::Snapshot => repository.snapshot().signed.expires(),
        TufRole::Targets | TufRole::Delegated => repository.targets().signed.expires(),
    }
    .to_string()
}

/// `url` with a trailing `/`, so that `tough` joins file names beneath it.
fn with_trailing_slash(url: &url::Url) -> url::Url {
    let mut url = url.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// The 32 bytes of `"sha256:<64 lowercase hex>"`.
fn parse_digest(digest: &str) -> Result<[u8; 32], FreshnessError> {
    let bad = || FreshnessError::BadDigest {
        offered: digest.to_owned(),
    };
    let hex_part = digest.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
    Ok(out)
}

fn role_of(role: tough::schema::RoleType) -> TufRole {
    use tough::schema::RoleType;
    match role {
        RoleType::Root => TufRole::Root,
        RoleType::Timestamp => TufRole::Timestamp,
        RoleType::Snapshot => TufRole::Snapshot,
        RoleType::Targets => TufRole::Targets,
        RoleType::DelegatedTargets => TufRole::Delegated,
    }
}

/// The role a snapshot's meta entry (`targets.json`, `role.json`) is about.
fn role_of_meta(path: &str) -> TufRole {
    if path == "targets.json" {
        TufRole::Targets
    } else {
        TufRole::Delegated
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "now".to_owned())
}

/// `tough`'s refusal as a [`FreshnessError`]: each kind of refusal its own variant, the
/// rest by whether the metadata could not be read or did not verify.
fn map_error(e: &tough::error::Error, shown: &str) -> FreshnessError {
    use tough::error::Error as T;
    let invalid = || FreshnessError::Invalid {
        metadata: shown.to_owned(),
        detail: e.to_string(),
    };
    let unreadable = || FreshnessError::Unreadable {
        metadata: shown.to_owned(),
        detail: e.to_string(),
    };
    match e {
        T::ExpiredMetadata { role, .. } => FreshnessError::Expired {
            role: role_of(*role),
            expires: None,
            checked_at: now_rfc3339(),
        },
        T::OlderMetadata {
            role,
            current_version,
            new_version,
            ..
        } => FreshnessError::RolledBack {
            role: role_of(*role),
            trusted: *current_version,
            offered: *new_version,
        },
        T::OlderSnapshotInTimestamp {
            snapshot_new,
            snapshot_old,
            ..
        } => FreshnessError::RolledBack {
            role: TufRole::Snapshot,
            trusted: *snapshot_old,
            offered: *snapshot_new,
        },
        T::SnapshotRoleRollback {
            role,
            old_role_version,
            new_role_version,
            ..
        } => FreshnessError::RolledBack {
            role: role_of_meta(role),
            trusted: *old_role_version,
            offered: *new_role_version,
        },
        // The file offered is older than the one its signed parent names: a rollback of
        // that one file.
        T::VersionMismatch {
            role,
            fetched,
            expected,
            ..
        } if fetched < expected => FreshnessError::RolledBack {
            role: role_of(*role),
            trusted: *expected,
            offered: *fetched,
        },
        T::SystemTimeSteppedBackward {
            sys_time,
            latest_known_time,
        } => FreshnessError::ClockWentBack {
            now: sys_time.to_string(),
            last_known: latest_known_time.to_string(),
        },
        T::DatastoreCreate { path, source, .. }
        | T::DatastoreOpen { path, source, .. }
        | T::DatastoreRemove { path, source, .. } => FreshnessError::State {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        // A file that arrived but whose hash or size its signed parent contradicts is
        // refused as invalid; one that did not arrive is unreadable.
        T::Transport { source, .. } => {
            let inner = std::error::Error::source(source)
                .and_then(|s| s.downcast_ref::<tough::error::Error>());
            match inner {
                Some(T::HashMismatch { .. } | T::MaxSizeExceeded { .. }) => invalid(),
                _ => unreadable(),
            }
        }
        T::ParseUrl { .. } | T::JoinUrl { .. } | T::JoinUrlEncoded { .. } => unreadable(),
        _ => invalid(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_sha256_and_64_lowercase_hex_digits() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_digest(&good).ok(), Some([0xab; 32]));
        for bad in [
            "ab".repeat(32),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}zz", "ab".repeat(31)),
        ] {
            assert!(
                matches!(parse_digest(&bad), Err(FreshnessError::BadDigest { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_base_url_gets_a_trailing_slash() {
        let url = url::Url::parse("http://127.0.0.1:8080/tuf/metadata").ok();
        assert_eq!(
            url.map(|u| with_trailing_slash(&u).to_string()).as_deref(),
            Some("http://127.0.0.1:8080/tuf/metadata/")
        );
    }
}
