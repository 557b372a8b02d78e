//! Reading one small file completely, with a size cap: key files, revocation statements,
//! version marks, the policy file, a password file, the file `skillgate inspect` is given.
//!
//! The threat: a file named by configuration or found in a directory others can write to
//! is a FIFO that never answers (the open or the read hangs the host), a device or a file
//! that never ends (memory runs out), or a file that grows between the size check and the
//! read. So the file is opened `O_NONBLOCK | O_CLOEXEC` (and `O_NOFOLLOW` where a symlink
//! must not be followed), must be a regular file per `fstat` of the open descriptor, is
//! refused if `fstat` already reports more than the cap, and is read through a window of
//! one byte past the cap, so growth after the check is still seen and never buffered.
//!
//! Files inside a plugin directory are not read here: `crate::pipeline::locate` reads those beneath
//! a held descriptor and checks them against the signed sizes.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

/// The kind of a filesystem object, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Unknown,
}

impl FileKind {
    pub(crate) fn from_mode(mode: u32) -> Self {
        match FileType::from_raw_mode(mode) {
            FileType::RegularFile => Self::Regular,
            FileType::Directory => Self::Directory,
            FileType::Symlink => Self::Symlink,
            FileType::Fifo => Self::Fifo,
            FileType::Socket => Self::Socket,
            FileType::CharacterDevice => Self::CharDevice,
            FileType::BlockDevice => Self::BlockDevice,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Regular => "regular file",
            Self::Directory => "directory",
            Self::Symlink => "symbolic link",
            Self::Fifo => "FIFO",
            Self::Socket => "socket",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
            Self::Unknown => "file of unknown type",
        })
    }
}

/// Whether the last component of the path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow it (a file the user named on the command line or in the policy).
    Follow,
    /// Refuse it as [`CappedError::NotRegularFile`] (a file found in a directory listing).
    Refuse,
}

/// Why a capped read failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CappedError {
    /// The file could not be opened.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something other than a regular file is at the path (a refused symlink included).
    #[error("{}: expected a regular file, found a {found}", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        found: FileKind,
    },
    /// The file holds more than the cap.
    #[error("{}: {found} bytes, more than the {cap}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        cap: u64,
        /// The size `fstat` reported, or, if the file grew while read, the bytes read
        /// (then exactly one more than the cap, since no more is ever read).
        found: u64,
    },
    /// Reading (or `fstat` of the open file) failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl CappedError {
    /// Whether nothing exists at the path (so a caller may treat the file as optional).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::NotRegularFile { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Read { path, .. } => path,
        }
    }
}

/// Reads the regular file at `path` completely, refusing it if it holds more than `cap`
/// bytes. See the module documentation for what is checked.
pub fn read_capped(path: &Path, cap: u64, links: Links) -> Result<Vec<u8>, CappedError> {
    let mut bytes = Vec::new();
    read_capped_into(path, cap, links, &mut bytes)?;
    Ok(bytes)
}

/// [`read_capped`] into the caller's buffer, which is cleared first, so a secret can be read
/// into a buffer that wipes itself. Room for the whole file is reserved before the first
/// read, so the buffer is not reallocated (and no partial copy left behind) unless the
/// file grows while read.
pub fn read_capped_into(
    path: &Path,
    cap: u64,
    links: Links,
    buf: &mut Vec<u8>,
) -> Result<(), CappedError> {
    buf.clear();
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(file) => file,
        // O_NOFOLLOW on a symlink as the last component.
        Err(e) if links == Links::Refuse && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(CappedError::NotRegularFile {
                path: path.to_path_buf(),
                found: FileKind::Symlink,
            });
        }
        Err(source) => {
            return Err(CappedError::Open {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let read_err = |source| CappedError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    let found = FileKind::from_mode(meta.mode());
    if found != FileKind::Regular {
        return Err(CappedError::NotRegularFile {
            path: path.to_path_buf(),
            found,
        });
    }
    let too_large = |found| CappedError::TooLarge {
        path: path.to_path_buf(),
        cap,
        found,
    };
    if meta.len() > cap {
        return Err(too_large(meta.len()));
    }
    // meta.len() <= cap here; one more byte than that shows growth without a reallocation.
    buf.reserve_exact(usize::try_from(meta.len().saturating_add(1)).unwrap_or(0));
    let window = cap.saturating_add(1);
    (&file).take(window).read_to_end(buf).map_err(read_err)?;
    let read = u64::try_from(buf.len()).unwrap_or(u64::MAX);
    if read > cap {
        buf.clear();
        return Err(too_large(read));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn reads_a_file_up_to_the_cap_exactly() {
        let dir = tmp();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        for links in [Links::Follow, Links::Refuse] {
            assert_eq!(read_capped(&path, 10, links).unwrap(), b"0123456789");
            assert_eq!(read_capped(&path, 1000, links).unwrap(), b"0123456789");
        }
    }

    #[test]
    fn one_byte_past_the_cap_is_refused_with_path_cap_and_size() {
        let dir = tmp();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        match read_capped(&path, 9, Links::Follow) {
            Err(CappedError::TooLarge {
                path: p,
                cap: 9,
                found: 10,
            }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let dir = tmp();
        let path = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let started = Instant::now();
        for links in [Links::Follow, Links::Refuse] {
            let err = read_capped(&path, 100, links).unwrap_err();
            assert!(
                matches!(
                    err,
                    CappedError::NotRegularFile {
                        found: FileKind::Fifo,
                        ..
                    }
                ),
                "{links:?}: {err:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_directory_and_a_device_are_not_regular_files() {
        let dir = tmp();
        let err = read_capped(dir.path(), 100, Links::Follow).unwrap_err();
        assert!(
            matches!(
                err,
                CappedError::NotRegularFile {
                    found: FileKind::Directory,
                    ..
                }
            ),
            "{err:?}"
        );
        // /dev/zero never ends: the type check refuses it before a byte is read.
        let err = read_capped(Path::new("/dev/zero"), 100, Links::Follow).unwrap_err();
        assert!(
            matches!(
                err,
                CappedError::NotRegularFile {
                    found: FileKind::CharDevice,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlink_is_followed_or_refused_as_asked() {
        let dir = tmp();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::fs::write(&target, b"x").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_capped(&link, 10, Links::Follow).unwrap(), b"x");
        match read_capped(&link, 10, Links::Refuse) {
            Err(CappedError::NotRegularFile {
                path,
                found: FileKind::Symlink,
            }) => assert_eq!(path, link),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_file_is_reported_as_not_found() {
        let dir = tmp();
        let path = dir.path().join("absent");
        let err = read_capped(&path, 10, Links::Refuse).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(err.path(), path);
        let other = read_capped(dir.path(), 10, Links::Refuse).unwrap_err();
        assert!(!other.is_not_found(), "{other:?}");
    }

    /// `/proc` files report size 0 to `fstat` but have content: the read window, not the
    /// `fstat` size, is what bounds the read, so a file larger than it claimed is still
    /// refused (the same path a file growing after the check takes).
    #[test]
    fn a_file_larger_than_fstat_said_is_cut_at_the_cap() {
        let path = Path::new("/proc/self/status");
        let whole = read_capped(path, 1 << 20, Links::Follow).unwrap();
        assert!(whole.len() > 16, "{}", whole.len());
        match read_capped(path, 16, Links::Follow) {
            Err(CappedError::TooLarge {
                cap: 16, found: 17, ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn into_clears_the_buffer_and_keeps_it_empty_on_refusal() {
        let dir = tmp();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let mut buf = b"old".to_vec();
        read_capped_into(&path, 3, Links::Follow, &mut buf).unwrap();
        assert_eq!(buf, b"abc");
        let proc_status = Path::new("/proc/self/status");
        read_capped_into(proc_status, 4, Links::Follow, &mut buf).unwrap_err();
        assert!(buf.is_empty());
    }
}
