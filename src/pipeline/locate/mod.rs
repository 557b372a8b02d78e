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

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Longest relative file name accepted (Linux `PATH_MAX`).
const MAX_REL_LEN: usize = 4096;
/// Longest single path component accepted (Linux `NAME_MAX`).
const MAX_COMPONENT_LEN: usize = 255;
/// Size of the read buffer of [`PluginFile::read_all`].
const CHUNK: usize = 64 * 1024;
/// How often `openat2` is retried when the kernel reports a concurrent rename (`EAGAIN`).
const OPENAT2_RETRIES: usize = 8;

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
    /// The path names a trusted root itself, not a plugin directory beneath it.
    #[error("{}: is a trusted root itself, not a plugin directory beneath one", path.display())]
    RootItself {
        /// The root path.
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

pub use crate::base::capped::FileKind;

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
    fn detect() -> Self {
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
fn open_beneath(
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
fn resolve_error(errno: Errno, path: PathBuf) -> LocateError {
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

fn io_error(path: &Path, source: impl Into<std::io::Error>) -> LocateError {
    LocateError::Io {
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// A directory the administrator trusts to hold plugins, held open.
#[derive(Debug)]
pub struct TrustedRoot {
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
    pub fn open(path: &Path) -> Result<Self, LocateError> {
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

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A plugin directory, opened beneath a trusted root. Every file is opened through it.
#[derive(Debug)]
pub struct PluginDir {
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
/// is refused as [`LocateError::EscapesRoot`].
pub fn locate(roots: &[TrustedRoot], path: &Path) -> Result<PluginDir, LocateError> {
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
    let path = root.path.join(rest);
    if rest.as_os_str().is_empty() {
        return Err(LocateError::RootItself { path });
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
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
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads a small top-level file completely (the manifest, the signature file).
    /// `Ok(None)` if it does not exist.
    pub fn read_small(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>, LocateError> {
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
    pub fn list_files(
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
    pub fn open_file(&self, rel: &str, cap: u64) -> Result<PluginFile, LocateError> {
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
        Ok(PluginFile {
            fd,
            rel: rel.to_owned(),
            path,
            size,
        })
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
                name: here
                    .join(raw.to_string_lossy().as_ref())
                    .display()
                    .to_string(),
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
            let stat = rustix::fs::statat(at, raw, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| resolve_error(e, path.clone()))?;
            match FileKind::from_mode(stat.st_mode) {
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

/// A regular file opened beneath a plugin directory, not yet read.
#[derive(Debug)]
pub struct PluginFile {
    fd: OwnedFd,
    rel: String,
    /// For messages: the plugin directory's path joined with `rel`.
    path: PathBuf,
    /// The size `fstat` reported when the file was opened.
    size: u64,
}

impl PluginFile {
    /// The size `fstat` reported when the file was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The name relative to the plugin directory, as given to [`PluginDir::open_file`].
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The plugin directory's path joined with [`PluginFile::rel`], for messages.
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
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rustix::fs::FileType;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::sync::mpsc;
    use std::time::Duration;

    const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

    /// A temporary tree:
    /// `trusted/plugin/{lib.so, plugin.json, sub/data.txt, sub/deeper/x}`, `outside/`.
    struct Fixture {
        tmp: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let plugin = tmp.path().join("trusted/plugin");
            fs::create_dir_all(plugin.join("sub/deeper")).unwrap();
            fs::write(plugin.join("lib.so"), b"\x7fELF library bytes").unwrap();
            fs::write(plugin.join("plugin.json"), b"{\"name\":\"demo\"}").unwrap();
            fs::write(plugin.join("sub/data.txt"), b"data").unwrap();
            fs::write(plugin.join("sub/deeper/x"), b"x").unwrap();
            fs::create_dir_all(tmp.path().join("outside/evil")).unwrap();
            fs::write(tmp.path().join("outside/evil/lib.so"), b"evil").unwrap();
            Self { tmp }
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.tmp.path().join(rel)
        }

        fn roots(&self) -> Vec<TrustedRoot> {
            vec![TrustedRoot::open(&self.p("trusted")).unwrap()]
        }

        fn plugin(&self, r: Resolver) -> PluginDir {
            locate_with(&self.roots(), &self.p("trusted/plugin"), r).unwrap()
        }
    }

    #[test]
    fn plugin_dir_beneath_root_is_found() {
        let fx = Fixture::new();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            let canonical = fs::canonicalize(fx.p("trusted/plugin")).unwrap();
            assert_eq!(dir.path(), canonical, "{r:?}");
        }
    }

    #[test]
    fn relative_path_and_dot_components_are_accepted() {
        let fx = Fixture::new();
        let roots = fx.roots();
        for r in RESOLVERS {
            let spelled = fx.p("trusted/./plugin/");
            assert!(locate_with(&roots, &spelled, r).is_ok(), "{r:?}");
        }
    }

    #[test]
    fn dotdot_out_of_root_escapes() {
        let fx = Fixture::new();
        let roots = fx.roots();
        for r in RESOLVERS {
            let err = locate_with(&roots, &fx.p("trusted/../outside/evil"), r).unwrap_err();
            assert!(
                matches!(err, LocateError::EscapesRoot { .. }),
                "{r:?}: {err:?}"
            );
            // Even a `..` that would stay beneath the root is refused.
            let err = locate_with(&roots, &fx.p("trusted/plugin/../plugin"), r).unwrap_err();
            assert!(
                matches!(err, LocateError::EscapesRoot { .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn path_under_no_root_is_outside() {
        let fx = Fixture::new();
        let roots = fx.roots();
        for r in RESOLVERS {
            let err = locate_with(&roots, &fx.p("outside/evil"), r).unwrap_err();
            match err {
                LocateError::OutsideTrustedRoots { roots: listed, .. } => {
                    assert_eq!(listed, vec![roots[0].path().to_path_buf()]);
                }
                other => panic!("{r:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn root_itself_is_not_a_plugin_dir() {
        let fx = Fixture::new();
        let roots = fx.roots();
        for r in RESOLVERS {
            let err = locate_with(&roots, &fx.p("trusted"), r).unwrap_err();
            assert!(
                matches!(err, LocateError::RootItself { .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_and_non_directory_plugin_paths() {
        let fx = Fixture::new();
        let roots = fx.roots();
        for r in RESOLVERS {
            let err = locate_with(&roots, &fx.p("trusted/nope"), r).unwrap_err();
            assert!(
                matches!(err, LocateError::NotFound { .. }),
                "{r:?}: {err:?}"
            );
            let err = locate_with(&roots, &fx.p("trusted/plugin/lib.so"), r).unwrap_err();
            assert!(
                matches!(err, LocateError::NotADirectory { .. }),
                "{r:?}: {err:?}"
            );
            let err = locate_with(&roots, &fx.p("trusted/plugin/lib.so/x"), r).unwrap_err();
            assert!(
                matches!(err, LocateError::NotADirectory { .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn symlinked_plugin_dir_is_refused() {
        let fx = Fixture::new();
        symlink(fx.p("outside/evil"), fx.p("trusted/to_outside")).unwrap();
        symlink("plugin", fx.p("trusted/to_inside")).unwrap();
        fs::create_dir(fx.p("trusted/nest")).unwrap();
        symlink("../plugin", fx.p("trusted/nest/up")).unwrap();
        let roots = fx.roots();
        for r in RESOLVERS {
            for spelled in ["trusted/to_outside", "trusted/to_inside", "trusted/nest/up"] {
                let err = locate_with(&roots, &fx.p(spelled), r).unwrap_err();
                assert!(
                    matches!(err, LocateError::Symlink { .. }),
                    "{r:?} {spelled}: {err:?}"
                );
            }
            // A symlink on the way to the plugin directory, too.
            let err = locate_with(&roots, &fx.p("trusted/to_inside/sub"), r).unwrap_err();
            assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
        }
    }

    #[test]
    fn symlink_from_outside_into_root_is_not_followed_at_the_end() {
        // A symlink outside the roots whose target is a plugin dir: the last component is
        // never resolved, so this is outside the roots.
        let fx = Fixture::new();
        symlink(fx.p("trusted/plugin"), fx.p("outside/alias")).unwrap();
        let roots = fx.roots();
        for r in RESOLVERS {
            let err = locate_with(&roots, &fx.p("outside/alias"), r).unwrap_err();
            assert!(
                matches!(err, LocateError::OutsideTrustedRoots { .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn symlinked_prefix_outside_roots_still_works() {
        let fx = Fixture::new();
        symlink(fx.p("trusted"), fx.p("outside/via")).unwrap();
        let roots = fx.roots();
        for r in RESOLVERS {
            let dir = locate_with(&roots, &fx.p("outside/via/plugin"), r).unwrap();
            assert_eq!(
                dir.path(),
                fs::canonicalize(fx.p("trusted/plugin")).unwrap()
            );
        }
    }

    #[test]
    fn root_configured_through_a_symlink_matches_both_spellings() {
        let fx = Fixture::new();
        symlink(fx.p("trusted"), fx.p("root_link")).unwrap();
        let roots = vec![TrustedRoot::open(&fx.p("root_link")).unwrap()];
        assert_eq!(roots[0].path(), fs::canonicalize(fx.p("trusted")).unwrap());
        for r in RESOLVERS {
            assert!(locate_with(&roots, &fx.p("root_link/plugin"), r).is_ok());
            assert!(locate_with(&roots, &fx.p("trusted/plugin"), r).is_ok());
        }
    }

    #[test]
    fn symlinked_file_is_refused() {
        let fx = Fixture::new();
        symlink(fx.p("outside/evil/lib.so"), fx.p("trusted/plugin/evil.so")).unwrap();
        symlink("lib.so", fx.p("trusted/plugin/alias.so")).unwrap();
        symlink("sub", fx.p("trusted/plugin/subalias")).unwrap();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            for rel in ["evil.so", "alias.so", "subalias/data.txt"] {
                let err = dir.open_file(rel, 1 << 20).unwrap_err();
                assert!(
                    matches!(err, LocateError::Symlink { .. }),
                    "{r:?} {rel}: {err:?}"
                );
            }
            let err = dir.read_small("alias.so", 1 << 20).unwrap_err();
            assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
            let err = dir.list_files(100, 8).unwrap_err();
            assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
        }
    }

    #[test]
    fn symlink_deep_in_tree_fails_listing() {
        let fx = Fixture::new();
        symlink("/etc/passwd", fx.p("trusted/plugin/sub/deeper/pw")).unwrap();
        for r in RESOLVERS {
            match fx.plugin(r).list_files(100, 8).unwrap_err() {
                LocateError::Symlink { path } => assert!(path.ends_with("sub/deeper/pw")),
                other => panic!("{r:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn fifo_is_refused_without_hanging() {
        let fx = Fixture::new();
        rustix::fs::mknodat(
            CWD,
            fx.p("trusted/plugin/pipe"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let open = dir.open_file("pipe", 1 << 20).map(|_| ());
                let small = dir.read_small("pipe", 1 << 20).map(|_| ());
                let list = dir.list_files(100, 8).map(|_| ());
                let _ = tx.send((open, small, list));
            });
            let (open, small, list) = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{r:?}: opening a FIFO blocked"));
            for result in [open, small, list] {
                assert!(
                    matches!(
                        result,
                        Err(LocateError::NotRegularFile {
                            kind: FileKind::Fifo,
                            ..
                        })
                    ),
                    "{r:?}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn directory_is_not_a_regular_file() {
        let fx = Fixture::new();
        for r in RESOLVERS {
            let err = fx.plugin(r).open_file("sub", 1 << 20).unwrap_err();
            assert!(
                matches!(
                    err,
                    LocateError::NotRegularFile {
                        kind: FileKind::Directory,
                        ..
                    }
                ),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn oversize_is_refused_before_reading() {
        let fx = Fixture::new();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            let err = dir.open_file("lib.so", 4).unwrap_err();
            assert!(
                matches!(
                    err,
                    LocateError::TooLarge {
                        size: 18,
                        cap: 4,
                        ..
                    }
                ),
                "{r:?}: {err:?}"
            );
            let err = dir.read_small("plugin.json", 3).unwrap_err();
            assert!(
                matches!(err, LocateError::TooLarge { .. }),
                "{r:?}: {err:?}"
            );
            // A smaller cap at reading time than at opening is honoured too.
            let file = dir.open_file("lib.so", 100).unwrap();
            let err = file.read_all(4, |_| Ok(())).unwrap_err();
            assert!(
                matches!(err, LocateError::TooLarge { .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn invalid_names_are_refused() {
        let fx = Fixture::new();
        let dir = fx.plugin(Resolver::Openat2);
        let long = "a".repeat(MAX_COMPONENT_LEN + 1);
        for bad in [
            "",
            "/etc/passwd",
            "../outside",
            "sub/../lib.so",
            "./lib.so",
            "sub//data.txt",
            "sub/",
            "a\0b",
            long.as_str(),
        ] {
            let err = dir.open_file(bad, 1 << 20).unwrap_err();
            assert!(
                matches!(err, LocateError::InvalidName { .. }),
                "{bad:?}: {err:?}"
            );
        }
        let err = dir.read_small("sub/data.txt", 1 << 20).unwrap_err();
        assert!(matches!(err, LocateError::InvalidName { .. }), "{err:?}");
    }

    #[test]
    fn dotdot_in_resolver_is_exdev_in_both_modes() {
        let fx = Fixture::new();
        let dir = fx.plugin(Resolver::Openat2);
        for r in RESOLVERS {
            let err = open_beneath(r, dir.fd.as_fd(), Path::new("../plugin"), OFlags::RDONLY)
                .unwrap_err();
            assert_eq!(err, Errno::XDEV, "{r:?}");
            let err =
                open_beneath(r, dir.fd.as_fd(), Path::new("/etc"), OFlags::RDONLY).unwrap_err();
            assert_eq!(err, Errno::XDEV, "{r:?}");
        }
    }

    #[test]
    fn read_small_reads_or_reports_absence() {
        let fx = Fixture::new();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            let bytes = dir.read_small("plugin.json", 1024).unwrap();
            assert_eq!(bytes.as_deref(), Some(&b"{\"name\":\"demo\"}"[..]), "{r:?}");
            assert!(
                dir.read_small("plugin.sig", 1024).unwrap().is_none(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn nested_files_are_listed_sorted() {
        let fx = Fixture::new();
        fs::write(fx.p("trusted/plugin/a.txt"), b"a").unwrap();
        fs::create_dir(fx.p("trusted/plugin/empty")).unwrap();
        for r in RESOLVERS {
            let files = fx.plugin(r).list_files(100, 8).unwrap();
            assert_eq!(
                files,
                [
                    "a.txt",
                    "lib.so",
                    "plugin.json",
                    "sub/data.txt",
                    "sub/deeper/x"
                ],
                "{r:?}"
            );
        }
    }

    #[test]
    fn listing_is_bounded() {
        let fx = Fixture::new();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            // 4 files: lib.so, plugin.json, sub/data.txt, sub/deeper/x; 2 directories.
            assert!(dir.list_files(4, 8).is_ok(), "{r:?}");
            let err = dir.list_files(3, 8).unwrap_err();
            assert!(
                matches!(err, LocateError::TooManyEntries { max: 3, .. }),
                "{r:?}: {err:?}"
            );
            // More directories than files is refused too.
            for i in 0..5 {
                fs::create_dir(fx.p(&format!("trusted/plugin/empty{r:?}{i}"))).unwrap();
            }
            let err = dir.list_files(4, 8).unwrap_err();
            assert!(
                matches!(err, LocateError::TooManyEntries { max: 4, .. }),
                "{r:?}: {err:?}"
            );
            for i in 0..5 {
                fs::remove_dir(fx.p(&format!("trusted/plugin/empty{r:?}{i}"))).unwrap();
            }
            assert!(dir.list_files(100, 3).is_ok(), "{r:?}");
            let err = dir.list_files(100, 2).unwrap_err();
            assert!(
                matches!(err, LocateError::TooDeep { max: 2, .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn swapping_the_directory_after_locate_changes_nothing() {
        let fx = Fixture::new();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            let moved = fx.p(&format!("moved-{r:?}"));
            fs::rename(fx.p("trusted/plugin"), &moved).unwrap();
            symlink(fx.p("outside/evil"), fx.p("trusted/plugin")).unwrap();
            let bytes = dir.read_small("lib.so", 1024).unwrap().unwrap();
            assert_eq!(bytes, b"\x7fELF library bytes", "{r:?}");
            fs::remove_file(fx.p("trusted/plugin")).unwrap();
            fs::rename(&moved, fx.p("trusted/plugin")).unwrap();
        }
    }
}
