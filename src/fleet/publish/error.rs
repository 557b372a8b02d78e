//! The errors of [`super::init_root`] and [`super::publish`]. They are not variants of
//! [`crate::Error`] (layer 5 cannot name layer 6): the operator's tool prints them itself.

use std::path::PathBuf;

use super::MAX_EXPIRY_DAYS;

/// Why creating a root or publishing refused or failed, naming the file, key or entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The output file exists; it is never overwritten.
    #[error("{}: already exists; it is not overwritten", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A key file could not be read, or is not a key `tough` signs with (RSA PEM, ed25519
    /// PKCS#8, ECDSA P-256 PKCS#8).
    #[error("key {}: {detail}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// `tough`'s message.
        detail: String,
    },
    /// An expiry is outside 1 to [`MAX_EXPIRY_DAYS`] days.
    #[error("{role} expiry of {days} days: must be 1 to {MAX_EXPIRY_DAYS}")]
    Expiry {
        /// The role (`root`, `targets`, `snapshot`, `timestamp`).
        role: &'static str,
        /// The days given.
        days: u32,
    },
    /// The releases directory (or a directory in it) could not be read.
    #[error("releases directory {}", path.display())]
    Releases {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An entry of the releases directory is not `NAME/VERSION` (a plugin name, then a
    /// version as semver prints it, a regular file).
    #[error("releases entry {}: {reason}", path.display())]
    BadEntry {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A release file is not a skillgate plugin's OCI manifest (unreadable, too large, or
    /// another document).
    #[error("release {target} ({}): not a plugin's OCI manifest: {reason}", path.display())]
    NotAManifest {
        /// The target it would be.
        target: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A role's metadata already in the output directory could not be read, so the version
    /// to publish cannot be checked against it.
    #[error("previous metadata {}: {detail}", path.display())]
    Previous {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The version to publish is not higher than a role's version already in the output
    /// directory: every host that trusted that one would refuse this as a rollback.
    #[error("version {offered} is not higher than {role} version {current} in {}", metadata.display())]
    VersionNotHigher {
        /// The output directory.
        metadata: PathBuf,
        /// The role.
        role: &'static str,
        /// Its version there.
        current: u64,
        /// The version asked for.
        offered: u64,
    },
    /// The key given to publish with is not one the root lists for a role it signs.
    #[error("key {} (key id {key_id}) is not a {role} key of the root", path.display())]
    NotRoleKey {
        /// The key file.
        path: PathBuf,
        /// Its TUF key id, hex.
        key_id: String,
        /// The role (`targets`, `snapshot`, `timestamp`).
        role: &'static str,
    },
    /// No version was given and the clock reads the Unix epoch or earlier, so the current
    /// Unix time cannot be the version.
    #[error("the clock reads {seconds} s since the Unix epoch: give the version explicitly")]
    Clock {
        /// The clock's reading.
        seconds: i64,
    },
    /// `tough` refused a step (reading the root, adding a target, signing, writing).
    #[error("{step}: {detail}")]
    Tuf {
        /// The step.
        step: &'static str,
        /// `tough`'s message.
        detail: String,
    },
    /// A file or directory could not be written or renamed.
    #[error("write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The thread that runs `tough` could not start or ended without an answer.
    #[error("TUF thread: {detail}")]
    Runtime {
        /// What failed.
        detail: String,
    },
}
