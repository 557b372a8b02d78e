//! Grants by descriptor: each granted path is opened once, on the host, without following
//! any symlink, and checked to be the object the policy's canonical path named and not
//! writable by others. A symlink lying beneath a read-write grant (which the plugin could
//! have renamed into place) resolves nothing. What a grant is ([`GrantId`]) travels in the
//! plan, so a worker can check the descriptors it is handed against it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};

use crate::base::perms::{PermsError, WritableByOthers};

/// A granted path the host refused to hand to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GrantError {
    /// It could not be opened (or examined once open) without following a symlink.
    #[error("granted path {}: cannot open it without following symlinks", path.display())]
    Open {
        /// The canonical path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: OsError,
    },
    /// A directory above it could not be examined for who may write to it.
    #[error("granted path {}: cannot examine {}", path.display(), ancestor.display())]
    Ancestor {
        /// The canonical path.
        path: PathBuf,
        /// The directory that could not be examined.
        ancestor: PathBuf,
        /// The system's error.
        #[source]
        source: OsError,
    },
    /// It is neither a directory nor a regular file.
    #[error("granted path {}: not a directory or regular file", path.display())]
    Kind {
        /// The canonical path.
        path: PathBuf,
    },
    /// What was opened is not what the policy's path named a moment before.
    #[error("granted path {}: replaced while it was opened", path.display())]
    Changed {
        /// The canonical path.
        path: PathBuf,
    },
    /// Others can write to it or to a directory above it.
    #[error("granted path: {0}")]
    WritableByOthers(WritableByOthers),
    /// The workspace the host named is not a directory.
    #[error("workspace {}: not a directory", path.display())]
    NotADirectory {
        /// The canonical path.
        path: PathBuf,
    },
    /// The workspace's canonical path is not UTF-8, so the plugin could not be told it in
    /// its context (a JSON string).
    #[error("workspace {}: its canonical path is not UTF-8", path.display())]
    NotUtf8 {
        /// The canonical path.
        path: PathBuf,
    },
    /// The workspace is reached through a symlink lying beneath a read-write grant, which a
    /// plugin could have put there.
    #[error(
        "workspace {}: reached through a symlink beneath a read-write grant, where a plugin could have placed it",
        path.display()
    )]
    ThroughWritableSymlink {
        /// The path as the host named it.
        path: PathBuf,
    },
    /// A read-write workspace holds, or lies inside, what decides which code the host runs
    /// (a trusted root, the trust store, the rollback marks, the worker executable).
    #[error(
        "workspace {}: a plugin may write there, and it overlaps {}, which decides what code this host runs",
        path.display(),
        protected.display()
    )]
    Protected {
        /// The canonical workspace.
        path: PathBuf,
        /// The protected path it holds or lies inside.
        protected: PathBuf,
    },
}

/// A system call's error number, as this crate's own value: a grant refused while planning
/// travels inside the plan (cloned, compared, serialized), which `std::io::Error` cannot,
/// and no dependency's type appears in the public errors. `Display` is the system's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OsError(i32);

impl OsError {
    /// From an I/O error (`EIO` if it carries no error number, which the system calls used
    /// here never produce).
    pub(super) fn from_io(e: &std::io::Error) -> Self {
        OsError(e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The error number (`errno`).
    pub fn raw_os_error(self) -> i32 {
        self.0
    }

    /// Its kind, as `std::io` classifies the number.
    pub fn kind(self) -> std::io::ErrorKind {
        std::io::Error::from_raw_os_error(self.0).kind()
    }
}

impl From<rustix::io::Errno> for OsError {
    fn from(e: rustix::io::Errno) -> Self {
        OsError(e.raw_os_error())
    }
}

impl std::fmt::Display for OsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

impl std::error::Error for OsError {}

/// Which object a grant is: checked again when a worker adopts its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantId {
    dev: u64,
    ino: u64,
    /// A directory (else a regular file): rules on a file carry only file rights.
    pub(super) dir: bool,
}

impl GrantId {
    pub(super) fn of(fd: BorrowedFd<'_>) -> rustix::io::Result<Self> {
        let st = rustix::fs::fstat(fd)?;
        Ok(GrantId {
            dev: st.st_dev,
            ino: st.st_ino,
            dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        })
    }
}

/// Whether `path` lies beneath one of `roots`.
pub(super) fn beneath_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// Most symlinks followed while resolving one path (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` as `canonicalize` does, but gives `None` when a symlink met on the way
/// lies in a directory beneath `writable`: a plugin with a read-write grant there could
/// have planted it (by renaming one into place) to point a later load's grant elsewhere.
pub(super) fn resolve_trusted(path: &Path, writable: &[PathBuf]) -> Option<PathBuf> {
    use std::path::Component;
    enum Step {
        Root,
        Up,
        Name(std::ffi::OsString),
    }
    let steps = |p: &Path| -> Vec<Step> {
        p.components()
            .filter_map(|c| match c {
                Component::RootDir => Some(Step::Root),
                Component::ParentDir => Some(Step::Up),
                Component::Normal(n) => Some(Step::Name(n.to_os_string())),
                Component::CurDir | Component::Prefix(_) => None,
            })
            .rev()
            .collect()
    };
    let absolute = std::path::absolute(path).ok()?;
    let mut todo = steps(&absolute);
    let mut current = PathBuf::from("/");
    let mut links = 0usize;
    while let Some(step) = todo.pop() {
        match step {
            Step::Root => current = PathBuf::from("/"),
            Step::Up => {
                current.pop();
            }
            Step::Name(name) => {
                let next = current.join(&name);
                if !std::fs::symlink_metadata(&next).ok()?.is_symlink() {
                    current = next;
                    continue;
                }
                links += 1;
                if links > MAX_SYMLINKS || beneath_any(&current, writable) {
                    return None;
                }
                todo.extend(steps(&std::fs::read_link(&next).ok()?));
            }
        }
    }
    Some(current)
}

/// Opens `path` (absolute and canonical) as `O_PATH` without following any symlink: with
/// `openat2(RESOLVE_NO_SYMLINKS)`, or where that is missing, one `O_NOFOLLOW` component at
/// a time from `/`.
pub(super) fn open_no_symlinks(path: &Path) -> rustix::io::Result<OwnedFd> {
    let is_link = |fd: &OwnedFd| -> rustix::io::Result<bool> {
        Ok(rustix::fs::fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK)
    };
    // Without O_NOFOLLOW, so that a trailing symlink is ELOOP rather than opened itself.
    match rustix::fs::openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => {}
        other => return other,
    }
    let flags = OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut at = rustix::fs::open("/", flags | OFlags::DIRECTORY, Mode::empty())?;
    for component in path.components() {
        match component {
            std::path::Component::RootDir => {}
            std::path::Component::Normal(name) => {
                match rustix::fs::fstat(&at)?.st_mode & libc::S_IFMT {
                    libc::S_IFDIR => {}
                    libc::S_IFLNK => return Err(rustix::io::Errno::LOOP),
                    _ => return Err(rustix::io::Errno::NOTDIR),
                }
                at = rustix::fs::openat(&at, name, flags, Mode::empty())?;
            }
            _ => return Err(rustix::io::Errno::INVAL),
        }
    }
    if is_link(&at)? {
        return Err(rustix::io::Errno::LOOP);
    }
    Ok(at)
}

/// Opens one granted path and checks it (module docs).
pub(super) fn open_grant(path: &Path) -> Result<(OwnedFd, GrantId), GrantError> {
    let open_error = |source: OsError| GrantError::Open {
        path: path.to_path_buf(),
        source,
    };
    let named = std::fs::metadata(path).map_err(|e| open_error(OsError::from_io(&e)))?;
    let fd = open_no_symlinks(path).map_err(|e| open_error(e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| open_error(e.into()))?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFDIR && kind != libc::S_IFREG {
        return Err(GrantError::Kind {
            path: path.to_path_buf(),
        });
    }
    use std::os::unix::fs::MetadataExt;
    if named.dev() != st.st_dev || named.ino() != st.st_ino {
        return Err(GrantError::Changed {
            path: path.to_path_buf(),
        });
    }
    crate::base::perms::check_not_writable_by_others(fd.as_fd(), path).map_err(|e| match e {
        PermsError::WritableByOthers(w) => GrantError::WritableByOthers(w),
        PermsError::Io {
            path: ancestor,
            source,
        } => GrantError::Ancestor {
            path: path.to_path_buf(),
            ancestor,
            source: OsError::from_io(&source),
        },
    })?;
    let id = GrantId {
        dev: st.st_dev,
        ino: st.st_ino,
        dir: kind == libc::S_IFDIR,
    };
    Ok((fd, id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn a_symlink_inside_a_read_write_grant_resolves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let rw = base.join("rw");
        let outside = base.join("outside");
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, rw.join("link")).unwrap();
        std::os::unix::fs::symlink(&rw, base.join("to_rw")).unwrap();
        let writable = [rw.clone()];
        assert_eq!(resolve_trusted(&rw.join("link"), &writable), None);
        assert_eq!(resolve_trusted(&rw.join("link/x/.."), &writable), None);
        // A symlink outside the writable directories is followed, as canonicalize does.
        assert_eq!(
            resolve_trusted(&base.join("to_rw"), &writable),
            Some(rw.clone())
        );
        assert_eq!(
            resolve_trusted(&rw.join("link"), &[]),
            Some(outside.clone())
        );
        assert_eq!(
            resolve_trusted(&base.join("rw/../outside"), &writable),
            Some(outside)
        );
    }

    #[test]
    fn a_granted_symlink_is_never_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        assert_eq!(
            open_no_symlinks(&base.join("link")).unwrap_err(),
            rustix::io::Errno::LOOP
        );
        assert_eq!(
            open_no_symlinks(&base.join("link/x")).unwrap_err(),
            rustix::io::Errno::LOOP
        );
        assert!(matches!(
            open_grant(&base.join("link")),
            Err(GrantError::Open { source, .. }) if source.raw_os_error() == libc::ELOOP
        ));
        open_grant(&base.join("real")).unwrap();
    }
}
