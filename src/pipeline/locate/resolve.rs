//! Resolving a name beneath a held directory without following a symlink or leaving it.
//!
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the kernel
//! has it, else a walk that opens one component at a time with `O_NOFOLLOW` and checks each
//! with `fstat`. `..` and absolute names are refused before the kernel sees them, in both
//! modes, so the two resolvers give the same answers (the tests run every attack in both).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{FileKind, LocateError};

/// How often `openat2` is retried when the kernel reports a concurrent rename (`EAGAIN`).
const OPENAT2_RETRIES: usize = 8;

/// How paths beneath a held directory are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`,
    /// falling back to [`Resolver::Walk`] where the kernel lacks `openat2` (`ENOSYS`).
    Openat2,
    /// One `openat(O_NOFOLLOW)` per component.
    Walk,
}

impl Resolver {
    /// `Openat2` if this kernel has `openat2`, else `Walk`; probed once per process.
    pub(super) fn detect() -> Self {
        static DETECTED: std::sync::OnceLock<Resolver> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let probe = rustix::fs::openat2(
                CWD,
                ".",
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                resolve_flags(),
            );
            match probe {
                Err(Errno::NOSYS) => Self::Walk,
                _ => Self::Openat2,
            }
        })
    }
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Opens `rel` beneath `dir` without following any symlink and without leaving `dir`.
///
/// Only plain name components are accepted, in both modes: `..` and absolute paths give
/// `EXDEV` (as `openat2` does for an escape), so the two resolvers agree.
pub(super) fn open_beneath(
    resolver: Resolver,
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let mut names = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Errno::XDEV);
            }
            Component::CurDir => return Err(Errno::INVAL),
        }
    }
    if names.is_empty() {
        return Err(Errno::INVAL);
    }
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match open_once(resolver, dir, rel, &names, flags) {
        // `O_DIRECTORY | O_NOFOLLOW` on a trailing symlink reports ENOTDIR; say what it is.
        Err(Errno::NOTDIR) if flags.contains(OFlags::DIRECTORY) => {
            let link_flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let last = open_once(resolver, dir, rel, &names, link_flags)?;
            if FileKind::from_mode(rustix::fs::fstat(&last)?.st_mode) == FileKind::Symlink {
                Err(Errno::LOOP)
            } else {
                Err(Errno::NOTDIR)
            }
        }
        other => other,
    }
}

fn open_once(
    resolver: Resolver,
    dir: BorrowedFd<'_>,
    rel: &Path,
    names: &[&std::ffi::OsStr],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    if resolver == Resolver::Openat2 {
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve_flags()) {
                Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
                Err(Errno::NOSYS) => break,
                other => return other,
            }
        }
    }
    walk_beneath(dir, names, flags)
}

/// The fallback resolver: each directory on the way is opened `O_PATH | O_NOFOLLOW` and
/// checked with `fstat`; the last component is opened with `flags` (which hold `O_NOFOLLOW`).
fn walk_beneath(
    dir: BorrowedFd<'_>,
    names: &[&std::ffi::OsStr],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let Some((last, parents)) = names.split_last() else {
        return Err(Errno::INVAL);
    };
    let mut held: Option<OwnedFd> = None;
    for name in parents {
        let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
        let next = rustix::fs::openat(
            at,
            *name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        match FileKind::from_mode(rustix::fs::fstat(&next)?.st_mode) {
            FileKind::Directory => held = Some(next),
            FileKind::Symlink => return Err(Errno::LOOP),
            _ => return Err(Errno::NOTDIR),
        }
    }
    let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
    rustix::fs::openat(at, *last, flags, Mode::empty())
}

/// Turns an errno from resolving `path` into the matching typed error.
pub(super) fn resolve_error(errno: Errno, path: PathBuf) -> LocateError {
    match errno {
        Errno::LOOP => LocateError::Symlink { path },
        Errno::XDEV => LocateError::EscapesRoot { path },
        Errno::NOENT => LocateError::NotFound { path },
        Errno::NOTDIR => LocateError::NotADirectory { path },
        other => LocateError::Io {
            path,
            source: other.into(),
        },
    }
}
