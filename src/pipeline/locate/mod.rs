//! Locating a plugin directory beneath a trusted root, and reading its files by descriptor.
//!
//! The threat: whoever can write somewhere on the path to a plugin tries to make the loader
//! read bytes from elsewhere, or read different bytes than it checked. The attacks answered
//! here are `..` escapes, a symlinked plugin directory or file, a path swapped between check
//! and use, a FIFO or device that blocks or never ends, and a file that grows while read.
//!
//! So a plugin path must lie lexically beneath a [`TrustedRoot`], whose directory is held
//! open; from then on nothing goes through a path again. The plugin directory and every file
//! in it are opened relative to a held descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, or, on kernels without `openat2`, by a
//! walk that opens one component at a time with `O_NOFOLLOW`. A `..` component is refused
//! before the kernel sees it, in both modes, so both resolvers give the same answers. Files
//! are opened with `O_NONBLOCK` (a FIFO cannot hang the open), must be regular files per
//! `fstat` of the open descriptor, and are size-capped before the first byte is read. A
//! [`PluginFile`] is read exactly once, and refused if more or fewer bytes arrive than
//! `fstat` promised.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

mod resolve;

pub(crate) use resolve::Resolver;
use resolve::{open_beneath, resolve_error};

/// Longest relative file name accepted (Linux `PATH_MAX`).
const MAX_REL_LEN: usize = 4096;
/// Longest single path component accepted (Linux `NAME_MAX`).
const MAX_COMPONENT_LEN: usize = 255;
/// Size of the read buffer of [`PluginFile::read_all`].
const CHUNK: usize = 64 * 1024;

/// Errors locating plugin files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// The path lies beneath none of the trusted roots.
    #[error("{}: not beneath any trusted root (roots: {})", path.display(), show_roots(roots))]
    OutsideTrustedRoots {
        /// The path as requested, made absolute.
        path: PathBuf,
        /// The canonical paths of the trusted roots.
        roots: Vec<PathBuf>,
    },
    /// A symbolic link was met while resolving the path.
    #[error("{}: a symbolic link was met while resolving it", path.display())]
    Symlink {
        /// The path being resolved.
        path: PathBuf,
    },
    /// A trusted root that others can write to, or that lies beneath a directory they can.
    #[error("trusted root {0}")]
    WritableByOthers(crate::base::perms::WritableByOthers),
    /// The path tries to leave its trusted root or plugin directory (`..`, absolute).
    #[error("{}: escapes the directory it must stay beneath", path.display())]
    EscapesRoot {
        /// The path being resolved.
        path: PathBuf,
    },
    /// Nothing exists at the path.
    #[error("{}: not found", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A directory was expected (the plugin directory or a component on the way to it).
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path being resolved.
        path: PathBuf,
    },
    /// A regular file was expected.
    #[error("{}: expected a regular file, found a {kind}", path.display())]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
        /// What was found instead.
        kind: FileKind,
    },
    /// The file is larger than the cap allowed for it.
    #[error("{}: {size} bytes, more than the cap of {cap}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size as reported by `fstat`, or the bytes read so far.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The file changed while it was read: another byte count arrived than `fstat` reported.
    #[error("{}: changed while read (fstat said {expected} bytes, read {actual})", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// The size `fstat` reported when the file was opened.
        expected: u64,
        /// The bytes actually read (reading stops one byte past `expected`).
        actual: u64,
    },
    /// A file name was refused before anything was opened.
    #[error("invalid file name {name:?}: {reason}")]
    InvalidName {
        /// The name as given (lossily decoded if it was not UTF-8).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The plugin directory holds more files, or more subdirectories, than allowed.
    #[error("{}: more than {max} files or directories", path.display())]
    TooManyEntries {
        /// The plugin directory.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// An entry lies deeper beneath the plugin directory than allowed.
    #[error("{}: more than {max} levels beneath the plugin directory", path.display())]
    TooDeep {
        /// The entry.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// Writing the bytes read to the caller's sink failed.
    #[error("{}: writing the copy of the file failed", path.display())]
    Sink {
        /// The file being copied.
        path: PathBuf,
        /// The sink's error.
        source: std::io::Error,
    },
    /// Any other I/O error.
    #[error("{}: I/O error", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl LocateError {
    /// Whether this is a host-side I/O failure (reading the disk, writing the copy) rather
    /// than a refusal of the plugin.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Sink { .. })
    }
}

fn show_roots(roots: &[PathBuf]) -> String {
    let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    shown.join(", ")
}

pub(crate) use crate::base::capped::FileKind;

fn io_error(path: &Path, source: impl Into<std::io::Error>) -> LocateError {
    LocateError::Io {
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// A directory the administrator trusts to hold plugins, held open.
#[derive(Debug)]
pub(crate) struct TrustedRoot {
    /// Canonical path (no symlinks, no `..`), recorded when the root was opened.
    path: PathBuf,
    /// The path as configured, made absolute lexically (symlinks and `..` kept).
    configured: PathBuf,
    /// `O_PATH | O_DIRECTORY` descriptor of the canonical path.
    fd: OwnedFd,
}

impl TrustedRoot {
    /// Opens a trusted root. The administrator's path may contain symlinks: it is
    /// canonicalized once, here, and the canonical path is then opened without following
    /// any symlink, so the descriptor is the directory the canonical path names. A root
    /// that others can write to, or that lies beneath such a directory, is refused
    /// ([`crate::base::perms`]).
    pub(crate) fn open(path: &Path) -> Result<Self, LocateError> {
        let configured = std::path::absolute(path).map_err(|e| io_error(path, e))?;
        let canonical = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LocateError::NotFound {
                path: configured.clone(),
            },
            _ => io_error(&configured, e),
        })?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let opened = match rustix::fs::openat2(
            CWD,
            &canonical,
            flags,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::NOSYS) => {
                rustix::fs::openat(CWD, &canonical, flags | OFlags::NOFOLLOW, Mode::empty())
            }
            other => other,
        };
        let fd = opened.map_err(|e| resolve_error(e, canonical.clone()))?;
        // Whoever can write above the root can swap plugin directories under it.
        crate::base::perms::check_not_writable_by_others(fd.as_fd(), &canonical).map_err(|e| {
            match e {
                crate::base::perms::PermsError::WritableByOthers(w) => {
                    LocateError::WritableByOthers(w)
                }
                crate::base::perms::PermsError::Io { path, source } => {
                    LocateError::Io { path, source }
                }
            }
        })?;
        Ok(Self {
            path: canonical,
            configured,
            fd,
        })
    }
}

/// A plugin directory, opened beneath a trusted root. Every file is opened through it.
#[derive(Debug)]
pub(crate) struct PluginDir {
    /// The directory, opened `O_RDONLY | O_DIRECTORY`.
    fd: OwnedFd,
    /// For messages: the root's canonical path joined with the path beneath it.
    path: PathBuf,
    resolver: Resolver,
}

/// Opens the plugin directory at `path`, which must lie beneath one of `roots`.
///
/// `path` is made absolute lexically (never resolved) and matched component-wise against
/// each root's canonical and configured path; the rest is opened beneath that root's
/// descriptor, refusing symlinks and `..`. Only if no root matches lexically is the parent
/// of `path` canonicalized (the last component is kept as written, so the plugin directory
/// itself can never be a symlink) and matched again, so a path spelled through a symlinked
/// prefix outside the roots still works. `root/../elsewhere` matches `root` lexically and so
/// is refused as [`LocateError::EscapesRoot`]. A path naming a root itself opens that root
/// as the plugin directory.
pub(crate) fn locate(roots: &[TrustedRoot], path: &Path) -> Result<PluginDir, LocateError> {
    locate_with(roots, path, Resolver::detect())
}

pub(crate) fn locate_with(
    roots: &[TrustedRoot],
    path: &Path,
    resolver: Resolver,
) -> Result<PluginDir, LocateError> {
    if path.as_os_str().is_empty() {
        return Err(LocateError::InvalidName {
            name: String::new(),
            reason: "empty path",
        });
    }
    let absolute = std::path::absolute(path).map_err(|e| io_error(path, e))?;
    if let Some(found) = open_under_roots(roots, &absolute, resolver) {
        return found;
    }
    let respelled = match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .ok()
            .map(|parent| parent.join(name)),
        _ => None,
    };
    if let Some(found) = respelled.and_then(|p| open_under_roots(roots, &p, resolver)) {
        return found;
    }
    Err(LocateError::OutsideTrustedRoots {
        path: absolute,
        roots: roots.iter().map(|r| r.path.clone()).collect(),
    })
}

/// `None` if no root is a lexical prefix of `absolute`; else the result of opening beneath
/// the first root that is.
fn open_under_roots(
    roots: &[TrustedRoot],
    absolute: &Path,
    resolver: Resolver,
) -> Option<Result<PluginDir, LocateError>> {
    roots.iter().find_map(|root| {
        [&root.path, &root.configured]
            .into_iter()
            .find_map(|base| absolute.strip_prefix(base).ok())
            .map(|rest| open_plugin_dir(root, rest, resolver))
    })
}

fn open_plugin_dir(
    root: &TrustedRoot,
    rest: &Path,
    resolver: Resolver,
) -> Result<PluginDir, LocateError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    if rest.as_os_str().is_empty() {
        let path = root.path.clone();
        // The root itself is the plugin directory (VT Code trusts a skill's own directory
        // and loads it). It is reopened through the root's held descriptor, never by path:
        // the directory the root check saw is the one read, and every file in it is still
        // opened beneath it with the same rules as for any plugin directory.
        return match rustix::fs::openat(
            root.fd.as_fd(),
            ".",
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(PluginDir { fd, path, resolver }),
            Err(e) => Err(resolve_error(e, path)),
        };
    }
    let path = root.path.join(rest);
    match open_beneath(resolver, root.fd.as_fd(), rest, flags) {
        Ok(fd) => Ok(PluginDir { fd, path, resolver }),
        Err(e) => Err(resolve_error(e, path)),
    }
}

/// Checks a '/'-separated name relative to the plugin directory before anything is opened.
fn validate_rel(rel: &str) -> Result<(), LocateError> {
    let refuse = |reason| LocateError::InvalidName {
        name: rel.to_owned(),
        reason,
    };
    if rel.is_empty() {
        return Err(refuse("empty"));
    }
    if rel.len() > MAX_REL_LEN {
        return Err(refuse("too long"));
    }
    if rel.contains('\0') {
        return Err(refuse("contains NUL"));
    }
    if rel.starts_with('/') {
        return Err(refuse("absolute"));
    }
    for component in rel.split('/') {
        match component {
            "" => return Err(refuse("empty component")),
            "." | ".." => return Err(refuse("'.' or '..' component")),
            c if c.len() > MAX_COMPONENT_LEN => return Err(refuse("component too long")),
            _ => {}
        }
    }
    Ok(())
}

impl PluginDir {
    /// Opens the author's plugin directory at `path` for signing, with no trusted root: the
    /// author names their own directory. Only the last component must not be a symlink (as
    /// [`locate`] requires of a plugin directory); every file is then listed and read through
    /// this descriptor exactly as verification does, so signing refuses what loading would.
    pub(crate) fn open_unrooted(path: &Path) -> Result<Self, LocateError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())
            .map_err(|e| resolve_error(e, path.to_path_buf()))?;
        Ok(PluginDir {
            fd,
            path: path.to_path_buf(),
            resolver: Resolver::detect(),
        })
    }

    /// The plugin directory's path, for messages (the root's canonical path joined with the
    /// path beneath it). Never reopened.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads a small top-level file completely (the manifest, the signature file).
    /// `Ok(None)` if it does not exist.
    pub(crate) fn read_small(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>, LocateError> {
        if name.contains('/') {
            return Err(LocateError::InvalidName {
                name: name.to_owned(),
                reason: "must name a top-level file",
            });
        }
        let file = match self.open_file(name, cap) {
            Ok(file) => file,
            Err(LocateError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::with_capacity(usize::try_from(file.size).unwrap_or(0));
        file.read_all(cap, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(Some(bytes))
    }

    /// Every regular file beneath the directory, recursively, as sorted '/'-joined relative
    /// paths. A symlink, FIFO, socket or device anywhere is an error naming it (fail closed);
    /// directories are descended, not listed.
    ///
    /// At most `max_entries` files are listed, and at most `max_entries` directories are
    /// descended (a plugin needs no more directories than files), so the work is bounded.
    /// Top-level entries are at depth 1; an entry deeper than `max_depth` is an error.
    pub(crate) fn list_files(
        &self,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<Vec<String>, LocateError> {
        let dir = Dir::read_from(&self.fd).map_err(|e| io_error(&self.path, e))?;
        let mut walk = Listing {
            top: self,
            max_entries,
            max_depth,
            dirs: 0,
            files: Vec::new(),
        };
        walk.list(dir, "", 1)?;
        let mut files = walk.files;
        files.sort();
        Ok(files)
    }

    /// Opens one file beneath the directory (`rel` may contain '/'): regular files only,
    /// its size checked against `cap` with `fstat` before anything is read.
    pub(crate) fn open_file(&self, rel: &str, cap: u64) -> Result<PluginFile, LocateError> {
        validate_rel(rel)?;
        let path = self.path.join(rel);
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = open_beneath(self.resolver, self.fd.as_fd(), Path::new(rel), flags)
            .map_err(|e| resolve_error(e, path.clone()))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(&path, e))?;
        let kind = FileKind::from_mode(stat.st_mode);
        if kind != FileKind::Regular {
            return Err(LocateError::NotRegularFile { path, kind });
        }
        let size = u64::try_from(stat.st_size).map_err(|_| {
            io_error(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "negative file size"),
            )
        })?;
        if size > cap {
            return Err(LocateError::TooLarge { path, size, cap });
        }
        Ok(PluginFile { fd, path, size })
    }
}

/// State of one [`PluginDir::list_files`] call.
struct Listing<'a> {
    top: &'a PluginDir,
    max_entries: usize,
    max_depth: usize,
    dirs: usize,
    files: Vec<String>,
}

impl Listing<'_> {
    fn too_many(&self) -> LocateError {
        LocateError::TooManyEntries {
            path: self.top.path.clone(),
            max: self.max_entries,
        }
    }

    fn list(&mut self, mut dir: Dir, prefix: &str, depth: usize) -> Result<(), LocateError> {
        let here = self.top.path.join(prefix);
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| io_error(&here, e))?;
            let raw = entry.file_name();
            if raw.to_bytes() == b"." || raw.to_bytes() == b".." {
                continue;
            }
            let name = raw.to_str().map_err(|_| LocateError::InvalidName {
                name: here.join(&*raw.to_string_lossy()).display().to_string(),
                reason: "not UTF-8",
            })?;
            let rel = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let path = self.top.path.join(&rel);
            if depth > self.max_depth {
                return Err(LocateError::TooDeep {
                    path,
                    max: self.max_depth,
                });
            }
            let at = dir.fd().map_err(|e| io_error(&here, e))?;
            // The entry's type as the directory records it (`d_type`, what `lstat` would
            // say), saving a `statat` per file; only a filesystem that does not record it
            // (`DT_UNKNOWN`) is asked with `statat`. Either way each file is opened later
            // with `O_NOFOLLOW` and `fstat`ed, and refused unless it is a regular file.
            let kind = entry_kind(entry.file_type(), || {
                rustix::fs::statat(at, raw, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|stat| stat.st_mode)
                    .map_err(|e| resolve_error(e, path.clone()))
            })?;
            match kind {
                FileKind::Regular => {
                    if self.files.len() >= self.max_entries {
                        return Err(self.too_many());
                    }
                    self.files.push(rel);
                }
                FileKind::Directory => {
                    self.dirs = self.dirs.saturating_add(1);
                    if self.dirs > self.max_entries {
                        return Err(self.too_many());
                    }
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
                    let fd = open_beneath(self.top.resolver, at, Path::new(name), flags)
                        .map_err(|e| resolve_error(e, path.clone()))?;
                    let sub = Dir::new(fd).map_err(|e| io_error(&path, e))?;
                    let deeper = depth.checked_add(1).ok_or(LocateError::TooDeep {
                        path: path.clone(),
                        max: self.max_depth,
                    })?;
                    self.list(sub, &rel, deeper)?;
                }
                FileKind::Symlink => return Err(LocateError::Symlink { path }),
                kind => return Err(LocateError::NotRegularFile { path, kind }),
            }
        }
        Ok(())
    }
}

/// What a directory entry is: its recorded `d_type`, or, where the filesystem recorded
/// none (`DT_UNKNOWN`), the mode `lstat` gives.
fn entry_kind(
    recorded: FileType,
    lstat: impl FnOnce() -> Result<u32, LocateError>,
) -> Result<FileKind, LocateError> {
    Ok(match recorded {
        FileType::Unknown => FileKind::from_mode(lstat()?),
        recorded => FileKind::from_mode(recorded.as_raw_mode()),
    })
}

/// A regular file opened beneath a plugin directory, not yet read.
#[derive(Debug)]
pub(crate) struct PluginFile {
    fd: OwnedFd,
    /// For messages: the plugin directory's path joined with the file's relative name.
    path: PathBuf,
    /// The size `fstat` reported when the file was opened.
    size: u64,
}

impl PluginFile {
    /// The size `fstat` reported when the file was opened.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The plugin directory's path joined with the file's relative name, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file to its end, handing each chunk to `each`. At most one byte past the
    /// `fstat` size is ever requested, so growth is seen without reading what was appended.
    pub(crate) fn read_all(
        self,
        cap: u64,
        mut each: impl FnMut(&[u8]) -> Result<(), LocateError>,
    ) -> Result<u64, LocateError> {
        // No bigger than the file (plus the byte that detects growth) needs.
        let len = usize::try_from(self.size.saturating_add(1))
            .unwrap_or(CHUNK)
            .min(CHUNK);
        self.read_chunks(cap, vec![0_u8; len], |buf, got| {
            each(buf.get(..got).unwrap_or_default())?;
            Ok(buf)
        })
    }

    /// Reads the file to its end into owned buffers: `each` gets a buffer and how many bytes
    /// at its start were read, and returns the (non-empty) buffer to read the next chunk
    /// into. At most one byte past the `fstat` size is ever requested, so growth is seen
    /// without reading what was appended.
    pub(crate) fn read_chunks(
        self,
        cap: u64,
        mut buf: Vec<u8>,
        mut each: impl FnMut(Vec<u8>, usize) -> Result<Vec<u8>, LocateError>,
    ) -> Result<u64, LocateError> {
        if self.size > cap {
            return Err(LocateError::TooLarge {
                path: self.path.clone(),
                size: self.size,
                cap,
            });
        }
        let overflow = || {
            io_error(
                &self.path,
                std::io::Error::other("byte count overflowed while reading"),
            )
        };
        let mut total: u64 = 0;
        loop {
            // total <= size here, so this is at least 1.
            let left = self
                .size
                .checked_sub(total)
                .and_then(|left| left.checked_add(1))
                .ok_or_else(overflow)?;
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            if want == 0 {
                return Err(overflow());
            }
            let window = buf.get_mut(..want).ok_or_else(overflow)?;
            let got = match rustix::io::read(&self.fd, &mut *window) {
                Ok(got) => got,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(io_error(&self.path, e)),
            };
            if got == 0 {
                break;
            }
            let got_u64 = u64::try_from(got).map_err(|_| overflow())?;
            total = total.checked_add(got_u64).ok_or_else(overflow)?;
            if total > cap {
                return Err(LocateError::TooLarge {
                    path: self.path.clone(),
                    size: total,
                    cap,
                });
            }
            if total > self.size {
                break;
            }
            buf = each(buf, got)?;
        }
        if total != self.size {
            return Err(LocateError::Changed {
                path: self.path.clone(),
                expected: self.size,
                actual: total,
            });
        }
        Ok(total)
    }
}

#[cfg(test)]
pub(in crate::pipeline) mod tests;
