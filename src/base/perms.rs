//! Who else can change a path the host trusts.
//!
//! The threat: a trusted root or a granted path that another local user can write to, or
//! that sits in a directory another user can write to, can be swapped between the
//! administrator's decision and the host's use of it (a plugin directory replaced, a grant
//! pointed elsewhere). So the object and every directory above it, up to `/`, is judged as
//! sshd's `StrictModes` judges a home directory:
//!
//! - it must be owned by root or by the host's effective user, and
//! - it must not be group- or world-writable,
//!
//! with one exception for ancestors only: a directory owned by root with the sticky bit set
//! (`/tmp`, mode 1777) may be writable by others, because the sticky bit keeps them from
//! renaming or removing entries they do not own, and the entry below it must itself pass
//! the owner check. The object itself never gets the exception.
//!
//! The walk follows `..` from the opened descriptor, so it judges the directories the
//! descriptor really lies in, not what a path names a moment later.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

/// Why an object is writable by someone other than root and the host's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Exposure {
    /// Another user owns it.
    OwnedByOther,
    /// Its group may write to it.
    GroupWritable,
    /// Everyone may write to it.
    WorldWritable,
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exposure::OwnedByOther => "owned by another user",
            Exposure::GroupWritable => "group-writable",
            Exposure::WorldWritable => "world-writable",
        })
    }
}

/// A path others can write to, or whose ancestor others can write to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error(
    "{}: {exposure} (mode {mode:04o}, owner uid {uid}){}",
    path.display(),
    match checked { Some(c) => format!(", so others can replace {}", c.display()), None => String::new() }
)]
pub struct WritableByOthers {
    /// The object judged unsafe: the checked path itself or one of its ancestors.
    pub path: PathBuf,
    /// Its permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// What is wrong with it.
    pub exposure: Exposure,
    /// The path that was being checked, when `path` is one of its ancestors.
    pub checked: Option<PathBuf>,
}

/// The walk could not be completed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PermsError {
    /// Others can write to the path or an ancestor.
    #[error(transparent)]
    WritableByOthers(#[from] WritableByOthers),
    /// An ancestor could not be opened or examined.
    #[error("{}", path.display())]
    Io {
        /// The object being examined.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Longest walk up from an object (a path cannot be deeper than `PATH_MAX / 2`).
const MAX_DEPTH: usize = 2048;

/// Judges the object `fd` (opened from `path`) and every directory above it up to `/`.
pub(crate) fn check_not_writable_by_others(
    fd: BorrowedFd<'_>,
    path: &Path,
) -> Result<(), PermsError> {
    let euid = rustix::process::geteuid().as_raw();
    let io = |at: &Path, e: rustix::io::Errno| PermsError::Io {
        path: at.to_path_buf(),
        source: e.into(),
    };
    let mut named = path.to_path_buf();
    let mut held: Option<OwnedFd> = None;
    for depth in 0..MAX_DEPTH {
        let current = held.as_ref().map_or(fd, |f| f.as_fd());
        let st = rustix::fs::fstat(current).map_err(|e| io(&named, e))?;
        let mode = st.st_mode & 0o7777;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let exposure = if st.st_uid != 0 && st.st_uid != euid {
            Some(Exposure::OwnedByOther)
        } else if depth > 0 && is_dir && st.st_uid == 0 && mode & 0o1000 != 0 {
            None
        } else if mode & 0o002 != 0 {
            Some(Exposure::WorldWritable)
        } else if mode & 0o020 != 0 {
            Some(Exposure::GroupWritable)
        } else {
            None
        };
        if let Some(exposure) = exposure {
            return Err(WritableByOthers {
                checked: (depth > 0).then(|| path.to_path_buf()),
                path: named,
                mode,
                uid: st.st_uid,
                exposure,
            }
            .into());
        }
        let parent = rustix::fs::openat(
            current,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(&named, e))?;
        let up = rustix::fs::fstat(&parent).map_err(|e| io(&named, e))?;
        if is_dir && up.st_dev == st.st_dev && up.st_ino == st.st_ino {
            return Ok(()); // `..` of `/` is `/`
        }
        named = named
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        held = Some(parent);
    }
    Err(PermsError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other("too many directories above it"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn check(path: &Path) -> Result<(), PermsError> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        check_not_writable_by_others(fd.as_fd(), path)
    }

    #[test]
    fn a_private_directory_under_sticky_tmp_passes() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        check(&inner).unwrap();
        check(Path::new("/")).unwrap();
    }

    #[test]
    fn world_or_group_writable_objects_and_ancestors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let inner = open.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        for (mode, exposure) in [
            (0o777, Exposure::WorldWritable),
            (0o775, Exposure::GroupWritable),
            (0o1777, Exposure::WorldWritable),
        ] {
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
            match check(&open) {
                Err(PermsError::WritableByOthers(w)) => {
                    assert_eq!(
                        (w.path.as_path(), w.exposure, w.checked),
                        (open.as_path(), exposure, None)
                    );
                    assert_eq!(w.mode, mode);
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
            // A sticky ancestor is accepted only when root owns it (as /tmp).
            let sticky_and_root = mode & 0o1000 != 0 && rustix::process::geteuid().is_root();
            match check(&inner) {
                Ok(()) if sticky_and_root => {}
                Err(PermsError::WritableByOthers(w)) if !sticky_and_root => {
                    assert_eq!(w.path, open);
                    assert_eq!(w.checked, Some(inner.clone()));
                }
                other => panic!("mode {mode:o} above: {other:?}"),
            }
        }
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        check(&inner).unwrap();
    }
}
