//! Per-worker task bound: a `pids` cgroup made for one worker, where the host may make one
//! (normally a root host). A thread bomb in the worker then stops at `pids.max`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A `pids` cgroup made for one worker, removed when the worker has been reaped.
pub(super) struct Cgroup {
    dir: PathBuf,
}

/// Where this process sits in a cgroup hierarchy that has the `pids` controller: the v1
/// `pids` hierarchy, or the unified (v2) one when it offers `pids`.
fn pids_cgroup_bases() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut bases = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            bases.push(Path::new("/sys/fs/cgroup/pids").join(rel));
        } else if controllers.is_empty() {
            let base = Path::new("/sys/fs/cgroup").join(rel);
            let offers =
                std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
            if offers.split_whitespace().any(|c| c == "pids") {
                bases.push(base);
            }
        }
    }
    bases
}

/// Removes the empty cgroups of hosts that are gone (a host killed outright cannot remove
/// its workers' cgroups; the next host does). Only empty cgroups can be removed at all.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(host) = name
            .to_str()
            .and_then(|n| n.strip_prefix("skillgate-worker-"))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(host).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

impl Cgroup {
    /// Makes a cgroup with `pids.max` = `max`, where this host may (normally as root).
    pub(super) fn create(max: u64) -> Option<Cgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "skillgate-worker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        for base in pids_cgroup_bases() {
            remove_stale(&base);
            let dir = base.join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let cgroup = Cgroup { dir };
            if std::fs::write(cgroup.dir.join("pids.max"), max.to_string()).is_ok() {
                return Some(cgroup);
            }
            cgroup.remove();
        }
        None
    }

    /// Sets `pids.max` to `max` (a pooled worker's cgroup, made with 1 while it waited, is
    /// given its plugin's bound at the hand-over: a write, where joining is a migration).
    pub(super) fn set_max(&self, max: u64) -> io::Result<()> {
        std::fs::write(self.dir.join("pids.max"), max.to_string())
    }

    /// Moves `pid` (a worker that has not loaded anything yet) into the cgroup.
    pub(super) fn adopt(&self, pid: u32) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Whether `pid` is in the cgroup.
    pub(super) fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == pid.to_string())
    }

    /// Removes the (empty) cgroup. A reaped worker's tasks are all gone, but the kernel may
    /// take a moment to drop them from the cgroup: a few bounded retries.
    pub(super) fn remove(self) {
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        tracing::warn!(cgroup = %self.dir.display(), "cannot remove a worker's cgroup");
    }
}
