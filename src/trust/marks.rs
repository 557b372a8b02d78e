//! Version marks: the highest version of each plugin this host verified, kept on disk so
//! an older, validly signed release (with a known hole) is refused.
//!
//! With the policy's `state_dir`, the mark of a plugin is `<name>.version`. It is raised
//! when a plugin passes the verify stage (a validly signed newer release exists, so going
//! back is refused even if that release then failed a later check), and lowered only by an
//! administrator ([`reset_version_mark`]).
//!
//! Threat answered here besides rollback: a crash or a concurrent host corrupting the mark.
//! Updates hold an `flock` on the state directory's lock file, write a dot-prefixed
//! temporary file, fsync it, rename it over the mark and fsync the directory, so a crash
//! leaves the old mark intact; a corrupt mark refuses the plugin rather than resetting; a
//! mark that is a symlink, a FIFO or oversize is refused without following or waiting on it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::base::json::JsonError;
use crate::base::name::is_plugin_name;
use crate::base::version::Version;
use crate::trust::error::{MarkProblem, TrustError};

/// Value of the `format` field of a version mark.
const MARK_FORMAT: &str = "skillgate-version-mark-v1";
/// Suffix of a version mark file in the state directory.
const MARK_SUFFIX: &str = ".version";
/// The lock file serializing updates of the state directory.
const LOCK_FILE: &str = ".lock";
/// Largest version mark read.
const MAX_MARK_BYTES: usize = 4096;

/// Refuses `version` of `name` if it is older than `highest`, the mark.
pub(crate) fn refuse_rollback(
    name: &str,
    version: &Version,
    highest: &Version,
) -> Result<(), TrustError> {
    if version.cmp_precedence(highest).is_lt() {
        return Err(TrustError::Rollback {
            plugin: name.to_owned(),
            version: version.to_string(),
            highest: highest.to_string(),
        });
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkWire {
    format: String,
    name: String,
    version: String,
}

fn state_io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn mark_path(dir: &Path, name: &str) -> Result<PathBuf, TrustError> {
    // Plugin names are validated already; checked again because this builds a path.
    if !is_plugin_name(name) {
        return Err(TrustError::StateCorrupt {
            path: dir.to_path_buf(),
            problem: MarkProblem::BadName(name.to_owned()),
        });
    }
    Ok(dir.join(format!("{name}{MARK_SUFFIX}")))
}

/// The highest version of `name` recorded in `state_dir`, if any.
///
/// Only `<name>.version` is read; temporary files left by an interrupted update (they start
/// with `.`) are ignored, so a crash never loses the previous mark.
pub fn read_version_mark(state_dir: &Path, name: &str) -> Result<Option<Version>, TrustError> {
    use crate::base::capped::{CappedError, FileKind, Links, read_capped};
    let path = mark_path(state_dir, name)?;
    let corrupt = |problem| TrustError::StateCorrupt {
        path: path.clone(),
        problem,
    };
    let cap = MAX_MARK_BYTES as u64;
    let bytes = match read_capped(&path, cap, Links::Refuse) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(CappedError::Open { source, .. } | CappedError::Read { source, .. }) => {
            return Err(state_io(&path)(source));
        }
        // O_NOFOLLOW's ELOOP, reported as the I/O error it has always been here.
        Err(CappedError::NotRegularFile {
            found: FileKind::Symlink,
            ..
        }) => {
            return Err(state_io(&path)(std::io::Error::from_raw_os_error(
                libc::ELOOP,
            )));
        }
        Err(CappedError::NotRegularFile { .. }) => {
            return Err(corrupt(MarkProblem::NotRegularFile));
        }
        Err(CappedError::TooLarge { .. }) => {
            return Err(corrupt(MarkProblem::TooLarge {
                max: MAX_MARK_BYTES,
            }));
        }
    };
    let wire: MarkWire = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(MarkProblem::Json(JsonError::new(e))))?;
    if wire.format != MARK_FORMAT || wire.name != name {
        return Err(corrupt(MarkProblem::Mismatch {
            format: wire.format,
            name: wire.name,
        }));
    }
    let v = Version::parse(&wire.version).map_err(|e| corrupt(MarkProblem::Version(e)))?;
    Ok(Some(v))
}

/// Holds the state directory's lock file (`flock`, exclusive) until dropped.
struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    fn acquire(dir: &Path) -> Result<StateLock, TrustError> {
        let path = dir.join(LOCK_FILE);
        let file = lock_file(&path).map_err(state_io(&path))?;
        Ok(StateLock { _file: file })
    }
}

/// Opens the lock file `path` (created with mode 0600 if missing, never through a symlink)
/// and takes an exclusive `flock` on it, held until the file is dropped. The TUF freshness
/// check locks its state directory with it too.
pub(crate) fn lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}

/// Writes `contents` to `dir/name` so that a crash leaves either the old or the new file:
/// a temporary file beside it (named with a leading `.`), fsync, rename, fsync the
/// directory.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<(), TrustError> {
    let target = dir.join(name);
    let mut n = 0u32;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 64 => n += 1,
            Err(e) => return Err(state_io(&tmp)(e)),
        }
    };
    let result = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(state_io(&target)(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(state_io(dir))
}

/// Removes temporary files an interrupted update of `name`'s mark left behind.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}{MARK_SUFFIX}.tmp.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|f| f.starts_with(&prefix))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Records `version` as seen for `name` if it is higher than the mark; refuses it if it is
/// lower. A raise is serialized by a lock file in `state_dir`, and its write is atomic and
/// durable; a version equal to the mark needs neither.
///
/// Crate-private: raising a mark refuses every older release for good, so only the verify
/// stage, for a release whose signatures verified, may do it.
pub(crate) fn record_version(
    state_dir: &Path,
    name: &str,
    version: &Version,
) -> Result<(), TrustError> {
    // Verifying a release whose mark it already is (every verification after the first)
    // raises nothing: answered from the mark as it stands, without the lock (which would
    // serialize every verification of every plugin on this host), the listing of the state
    // directory or a write. A mark is only ever replaced by rename, so this read sees a
    // whole one; a raise racing it is ordered after it, as if it had waited for the lock.
    if let Some(highest) = read_version_mark(state_dir, name)?
        && version.cmp_precedence(&highest).is_eq()
    {
        return Ok(());
    }
    let _lock = StateLock::acquire(state_dir)?;
    remove_stale_temporaries(state_dir, name);
    if let Some(highest) = read_version_mark(state_dir, name)? {
        refuse_rollback(name, version, &highest)?;
        if version.cmp_precedence(&highest).is_eq() {
            return Ok(());
        }
    }
    let mark = serde_json::json!({
        "format": MARK_FORMAT,
        "name": name,
        "version": version.to_string(),
    });
    let mut bytes = format!("{mark:#}").into_bytes();
    bytes.push(b'\n');
    write_atomically(state_dir, &format!("{name}{MARK_SUFFIX}"), &bytes)?;
    Ok(())
}

/// Removes the version mark of `name`, so an older version may load again. This is the
/// administrative act that lowers a mark; it returns the mark that was removed.
pub fn reset_version_mark(state_dir: &Path, name: &str) -> Result<Option<Version>, TrustError> {
    let _lock = StateLock::acquire(state_dir)?;
    let path = mark_path(state_dir, name)?;
    // A corrupt mark can be reset too: that is what an administrator would do about it.
    let old = read_version_mark(state_dir, name).unwrap_or(None);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_io(&path)(e)),
    }
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(state_io(state_dir))?;
    let shown = old.as_ref().map(ToString::to_string);
    crate::audit::mark_reset(name, shown.as_deref(), state_dir);
    Ok(old)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn version_marks_are_atomic_and_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let v = |s: &str| Version::parse(s).unwrap();
        assert_eq!(read_version_mark(dir.path(), "p").unwrap(), None);
        record_version(dir.path(), "p", &v("1.2.0")).unwrap();
        record_version(dir.path(), "p", &v("1.2.0")).unwrap();
        assert!(matches!(
            record_version(dir.path(), "p", &v("1.1.9")),
            Err(TrustError::Rollback { version, highest, .. }) if version == "1.1.9" && highest == "1.2.0"
        ));
        // Build metadata does not order versions.
        record_version(dir.path(), "p", &v("1.2.0+build5")).unwrap();
        record_version(dir.path(), "p", &v("2.0.0-rc.1")).unwrap();
        assert_eq!(
            read_version_mark(dir.path(), "p").unwrap(),
            Some(v("2.0.0-rc.1"))
        );
        // A stray temporary file from an interrupted update is ignored, then cleaned up.
        let stray = dir.path().join(".p.version.tmp.999.0");
        std::fs::write(&stray, b"{\"format\":").unwrap();
        assert_eq!(
            read_version_mark(dir.path(), "p").unwrap(),
            Some(v("2.0.0-rc.1"))
        );
        record_version(dir.path(), "p", &v("2.0.0")).unwrap();
        assert!(!stray.exists());
        assert_eq!(
            reset_version_mark(dir.path(), "p").unwrap(),
            Some(v("2.0.0"))
        );
        record_version(dir.path(), "p", &v("1.0.0")).unwrap();
        std::fs::write(dir.path().join("p.version"), b"garbage").unwrap();
        assert!(matches!(
            read_version_mark(dir.path(), "p"),
            Err(TrustError::StateCorrupt {
                problem: MarkProblem::Json(ref e),
                ..
            }) if e.kind() == crate::base::json::JsonErrorKind::Syntax
        ));
        assert!(matches!(
            read_version_mark(dir.path(), "../p"),
            Err(TrustError::StateCorrupt {
                problem: MarkProblem::BadName(ref n),
                ..
            }) if n == "../p"
        ));
        // A well-formed mark whose version is not semver: semver's error, typed.
        let mark = format!(r#"{{"format":"{MARK_FORMAT}","name":"p","version":"1.x"}}"#);
        std::fs::write(dir.path().join("p.version"), mark).unwrap();
        let err = read_version_mark(dir.path(), "p").unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::StateCorrupt {
                    problem: MarkProblem::Version(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("unexpected character"), "{err}");
    }

    /// Re-recording the version a mark already holds takes no lock (verifying many plugins
    /// in parallel does not queue on the state directory), while a raise still waits for it.
    #[test]
    fn an_unchanged_mark_is_recorded_without_the_lock_and_a_raise_waits_for_it() {
        use std::sync::mpsc;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_path_buf();
        let v1 = Version::new(1, 0, 0);
        record_version(&state, "p", &v1).unwrap();
        // Another host (or thread) holds the state lock.
        let held = StateLock::acquire(&state).unwrap();
        let (done, finished) = mpsc::channel();
        let dir_for_thread = state.clone();
        let same = std::thread::spawn(move || {
            let r = record_version(&dir_for_thread, "p", &Version::new(1, 0, 0));
            let _ = done.send(());
            r
        });
        // Generous: without the fast path this waits for the lock, i.e. forever here.
        let answered = finished.recv_timeout(Duration::from_secs(30)).is_ok();
        // The control: a raise waits for the lock, so the mark is unchanged while held.
        let dir_for_raise = state.clone();
        let raise =
            std::thread::spawn(move || record_version(&dir_for_raise, "p", &Version::new(2, 0, 0)));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(read_version_mark(&state, "p").unwrap(), Some(v1));
        drop(held);
        assert!(answered, "recording the unchanged mark waited for the lock");
        same.join().unwrap().unwrap();
        raise.join().unwrap().unwrap();
        assert_eq!(
            read_version_mark(&state, "p").unwrap(),
            Some(Version::new(2, 0, 0))
        );
        // Rollback is still refused, with or without the lock.
        assert!(matches!(
            record_version(&state, "p", &Version::new(1, 0, 0)),
            Err(TrustError::Rollback { .. })
        ));
    }

    /// The mark is read through the capped reader: a symlink, a FIFO and an oversize file are
    /// refused as they always were (an I/O error, corrupt, corrupt), and none of them hangs.
    #[test]
    fn a_version_mark_that_is_no_small_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = Version::new(1, 0, 0);
        record_version(dir.path(), "real", &v).unwrap();
        let real = dir.path().join("real.version");
        let mark = dir.path().join("p.version");
        std::os::unix::fs::symlink(&real, &mark).unwrap();
        match read_version_mark(dir.path(), "p") {
            Err(TrustError::State { source, .. }) => {
                assert_eq!(
                    source.raw_os_error(),
                    Some(libc::ELOOP),
                    "symlink: {source}"
                );
            }
            other => panic!("symlink: {other:?}"),
        }
        std::fs::remove_file(&mark).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &mark,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(
            matches!(
                read_version_mark(dir.path(), "p"),
                Err(TrustError::StateCorrupt { .. })
            ),
            "fifo"
        );
        std::fs::remove_file(&mark).unwrap();
        std::fs::write(&mark, vec![b' '; MAX_MARK_BYTES + 1]).unwrap();
        assert!(
            matches!(
                read_version_mark(dir.path(), "p"),
                Err(TrustError::StateCorrupt { .. })
            ),
            "oversize"
        );
        // The control: the file the symlink pointed at reads.
        assert_eq!(read_version_mark(dir.path(), "real").unwrap(), Some(v));
    }
}
