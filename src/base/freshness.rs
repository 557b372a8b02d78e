//! Why a release was found not fresh: the error of the TUF freshness check
//! (`skillgate::fleet::freshness`), one variant per refusal.
//!
//! The check itself sits in layer 6 (it runs the `tough` client); its error sits here, at
//! the bottom, because [`crate::error::Error`] (layer 5) gathers every refusal a host can
//! match and may not import upwards. It carries plain values (role names, versions, hex
//! digests, text), none of `tough`'s types, so a host matches it without depending on
//! `tough`.
//!
//! `tough`'s own errors write their inner error into their message *and* return it as
//! `source()`; so the variants that carry one take its text as a `detail` field, once, and
//! report no `source()` (the crate's rule, see [`crate::error`]).

use std::path::PathBuf;

use crate::base::capped::CappedError;
use crate::base::perms::WritableByOthers;

/// A TUF role, as the freshness errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TufRole {
    /// `root.json`: the keys of every role.
    Root,
    /// `timestamp.json`: the short-lived role that names the current snapshot.
    Timestamp,
    /// `snapshot.json`: the versions of the targets metadata.
    Snapshot,
    /// `targets.json`: the releases and their digests.
    Targets,
    /// A delegated targets role.
    Delegated,
}

impl std::fmt::Display for TufRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TufRole::Root => "root",
            TufRole::Timestamp => "timestamp",
            TufRole::Snapshot => "snapshot",
            TufRole::Targets => "targets",
            TufRole::Delegated => "delegated targets",
        })
    }
}

/// Why the freshness check refused a release (or could not run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FreshnessError {
    /// The root metadata file does not have the SHA-256 the policy pins
    /// (`freshness.root_sha256`): it was replaced or edited.
    #[error("TUF root metadata {path} has sha256 {found}, the policy pins {pinned}")]
    RootPinMismatch {
        /// The root metadata file.
        path: PathBuf,
        /// The pinned SHA-256 (hex).
        pinned: String,
        /// The file's SHA-256 (hex).
        found: String,
    },
    /// The root metadata file could not be read.
    #[error("cannot read TUF root metadata {path}")]
    RootUnreadable {
        /// The root metadata file.
        path: PathBuf,
        /// Why.
        source: CappedError,
    },
    /// A metadata file could not be fetched from the repository (missing, unreachable, or
    /// the connection failed).
    #[error("cannot read TUF metadata from {metadata}: {detail}")]
    Unreadable {
        /// The metadata source (directory or URL).
        metadata: String,
        /// What the TUF client reported.
        detail: String,
    },
    /// A role's metadata has expired: the repository stopped being refreshed, or a stale
    /// copy is being replayed (a freeze attack).
    #[error(
        "TUF {role} metadata has expired{} (checked at {checked_at})",
        expires.as_ref().map(|e| format!(" at {e}")).unwrap_or_default()
    )]
    Expired {
        /// The role whose metadata expired.
        role: TufRole,
        /// When it expired (RFC 3339), when it could be read.
        expires: Option<String>,
        /// The time of the check (RFC 3339, this host's clock).
        checked_at: String,
    },
    /// A role's metadata is older than the version this host trusted before (kept in
    /// `freshness.state`): a rollback to an older repository state.
    #[error(
        "TUF {role} metadata rolled back: version {offered} offered, version {trusted} already trusted"
    )]
    RolledBack {
        /// The role rolled back.
        role: TufRole,
        /// The version trusted before (or that the signed parent role names).
        trusted: u64,
        /// The version offered now.
        offered: u64,
    },
    /// The metadata did not verify: a signature, a threshold, a hash or length a parent
    /// role lists, a size limit, or the metadata's form.
    #[error("TUF metadata from {metadata} failed verification: {detail}")]
    Invalid {
        /// The metadata source (directory or URL).
        metadata: String,
        /// What the TUF client reported.
        detail: String,
    },
    /// This host's clock is earlier than at a previous check: expiry cannot be judged.
    #[error("system clock stepped back: now {now}, a previous check ran at {last_known}")]
    ClockWentBack {
        /// This host's time now (RFC 3339).
        now: String,
        /// The latest time a check ran (RFC 3339).
        last_known: String,
    },
    /// The current targets do not list the release.
    #[error("release {target} is not listed in the current TUF targets")]
    NotListed {
        /// The target name, `<plugin>/<version>`.
        target: String,
    },
    /// The targets list the release with another digest: this is not the manifest that
    /// was published under that version.
    #[error("release {target} is listed with sha256 {listed}, the manifest offered has {offered}")]
    DigestMismatch {
        /// The target name, `<plugin>/<version>`.
        target: String,
        /// The SHA-256 the targets list (hex).
        listed: String,
        /// The SHA-256 of the manifest offered (hex).
        offered: String,
    },
    /// The targets list the release with another length.
    #[error("release {target} is listed with length {listed}, the manifest offered has {offered}")]
    LengthMismatch {
        /// The target name, `<plugin>/<version>`.
        target: String,
        /// The length the targets list, in bytes.
        listed: u64,
        /// The length of the manifest offered, in bytes.
        offered: u64,
    },
    /// The digest to check is not `sha256:` followed by 64 lowercase hex digits.
    #[error("manifest digest {offered:?} is not sha256:<64 lowercase hex digits>")]
    BadDigest {
        /// The digest given.
        offered: String,
    },
    /// The plugin name cannot name a target (it is not a plugin name).
    #[error("{name:?} is not a plugin name, so it names no TUF target")]
    BadName {
        /// The name given.
        name: String,
    },
    /// The state directory could not be used (locked, read or written).
    #[error("cannot use the TUF state directory {path}")]
    State {
        /// The state directory (or the file in it).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Someone other than root and the host's user can write to the state directory (or a
    /// directory above it): they could erase the versions trusted last, and so the
    /// rollback protection.
    #[error("TUF state directory: {0}")]
    StateWritableByOthers(WritableByOthers),
    /// The check did not finish within its deadline.
    #[error("TUF metadata from {metadata} was not read within {ms} ms")]
    TimedOut {
        /// The metadata source (directory or URL).
        metadata: String,
        /// The deadline, in milliseconds (`freshness.timeout_ms`).
        ms: u64,
    },
    /// The check's own thread or runtime could not be started or failed.
    #[error("the freshness check could not run: {detail}")]
    Runtime {
        /// What failed.
        detail: String,
    },
}

impl FreshnessError {
    /// Whether the error is on the host's side (a file, directory, thread or connection it
    /// could not use) rather than a refusal of the release or of the metadata.
    pub fn is_host_problem(&self) -> bool {
        matches!(
            self,
            FreshnessError::RootUnreadable { .. }
                | FreshnessError::Unreadable { .. }
                | FreshnessError::State { .. }
                | FreshnessError::StateWritableByOthers(_)
                | FreshnessError::TimedOut { .. }
                | FreshnessError::Runtime { .. }
                | FreshnessError::ClockWentBack { .. }
        )
    }
}
