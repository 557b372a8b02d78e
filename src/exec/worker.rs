//! Which program a worker process runs, and the hook that lets a host's own executable be
//! that program.
//!
//! A host that depends on skillgate as a library has no `skillgate-worker` file: cargo never
//! puts a dependency's binaries beside the host's. So the host can serve as its own worker:
//! it calls [`run_if_worker`] first thing in `main`, and the Gate starts workers by
//! re-executing this same executable (`/proc/self/exe`, the file the running process was
//! started from, whatever has since been renamed over or deleted at its path) with
//! [`WORKER_ARG`] as its first argument. In that process the hook runs the worker and never
//! returns to the host's `main`.
//!
//! Threats this answers:
//!
//! - **A binary that is not a worker run as one.** Re-executing an executable whose `main`
//!   does not start with the hook would run the host's whole `main` in a "worker". The Gate
//!   re-executes this executable only when the hook ran in this process and recorded that it
//!   may ([`SelfWorker::Ready`]).
//! - **Threads outside the sandbox.** Landlock and seccomp bind the thread that restricts
//!   itself (and the threads it starts later), never threads already running. Code that runs
//!   before the hook (constructors, a runtime built before it) runs in the worker too; a
//!   thread it started there would be unrestricted beside plugin code in one address space.
//!   The hook records [`SelfWorker::Threaded`] in a host that already has threads (so the
//!   Gate does not use it), and the worker refuses to restrict itself unless it is the only
//!   thread.
//! - **Privileged executables.** A worker loads whatever library matches the digest its
//!   starter sends; started from a setuid, setgid or file-capability executable, that would
//!   be code of the starter's choosing with privileges the starter does not hold. Such a
//!   process (`AT_SECURE`) never runs as a worker and never re-executes itself as one.
//!
//! The worker's checks are the same whichever program runs it: it trusts neither its
//! arguments nor its descriptors (see [`super::child`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::pipeline::load::{LoadError, SelfWorker};

/// The first argument a host gives every worker it starts (this executable re-executed, a
/// `skillgate-worker` file or the policy's `worker`); the second is the number of grant
/// descriptors. A process started without it is not a worker. Versioned: a host and a
/// worker of different protocol versions refuse each other in their first message anyway.
pub const WORKER_ARG: &str = "--skillgate-worker-v1";

/// The second argument of a pooled worker (in place of the grant count): it is started
/// before its plugin is known and is handed its descriptors over its channel (see
/// [`super::pool`]).
pub(crate) const POOLED_ARG: &str = "pooled";

/// The worker executable's file name, looked for beside the host's executable.
pub(crate) const WORKER_NAME: &str = "skillgate-worker";

/// Exit code of a process started as a worker with elevated privileges.
const EXIT_PRIVILEGED: i32 = 16;
/// Exit code of a process started as a worker with an unreadable grant count.
const EXIT_ARGUMENTS: i32 = 10;

/// What the hook found in this process; unset until it runs.
static THIS_EXECUTABLE: OnceLock<SelfWorker> = OnceLock::new();

/// The program a worker runs: what [`find`] chose.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerProgram {
    /// The policy's `worker`.
    Configured(PathBuf),
    /// This executable, re-executed through `/proc/self/exe`: it called [`run_if_worker`]
    /// at the top of `main`.
    ThisExecutable,
    /// A `skillgate-worker` file beside this executable (or in its parent directory).
    Beside(PathBuf),
}

impl WorkerProgram {
    /// The path the worker is started from.
    pub fn path(&self) -> &Path {
        match self {
            WorkerProgram::Configured(p) | WorkerProgram::Beside(p) => p,
            WorkerProgram::ThisExecutable => Path::new("/proc/self/exe"),
        }
    }
}

impl std::fmt::Display for WorkerProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerProgram::Configured(p) => write!(f, "{} (the policy's worker)", p.display()),
            WorkerProgram::ThisExecutable => f.write_str("this executable, re-executed"),
            WorkerProgram::Beside(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Call this first in `main`, before anything else runs and before any thread starts.
///
/// If this process was started as a skillgate worker (its first argument is
/// [`WORKER_ARG`]), this runs the worker and exits the process with its code: it never
/// returns. Otherwise it records whether this executable can serve as its own worker and
/// returns at once; process isolation then needs no `skillgate-worker` file and no
/// `worker` in the policy. Calling it again later changes nothing.
///
/// ```no_run
/// fn main() {
///     skillgate::worker::run_if_worker();
///     // ... the host's own main: parse arguments, start threads, build a Gate ...
/// }
/// ```
///
/// With an async runtime, call it in a plain `main` before the runtime is built (a
/// `#[tokio::main]` body runs after the runtime's threads started). The worker starts with
/// an empty environment: an executable that needs one to start (`LD_LIBRARY_PATH`) cannot
/// serve as its own worker; set the policy's `worker` instead.
// The example is about `main` itself: where in it the call goes.
#[allow(clippy::needless_doctest_main)]
pub fn run_if_worker() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(WORKER_ARG.as_ref()) {
        let _ = THIS_EXECUTABLE.get_or_init(assess);
        return;
    }
    if elevated() {
        std::process::exit(EXIT_PRIVILEGED);
    }
    let second = args.next();
    if second.as_deref() == Some(POOLED_ARG.as_ref()) {
        std::process::exit(i32::from(super::child::pooled_main()));
    }
    let grants = second.and_then(|a| a.to_str()?.parse::<usize>().ok());
    let code = match grants {
        Some(grants) => i32::from(super::child::worker_main(grants)),
        None => EXIT_ARGUMENTS,
    };
    std::process::exit(code);
}

/// Whether this executable can serve as its own worker, as the hook found it.
pub fn this_executable() -> SelfWorker {
    THIS_EXECUTABLE
        .get()
        .copied()
        .unwrap_or(SelfWorker::NotCalled)
}

/// What a host that is not a worker records about itself.
fn assess() -> SelfWorker {
    if elevated() {
        return SelfWorker::Privileged;
    }
    match super::child::thread_count() {
        Some(1) => SelfWorker::Ready,
        threads => SelfWorker::Threaded { threads },
    }
}

/// Whether the kernel started this process with elevated privileges (`AT_SECURE`: setuid,
/// setgid, file capabilities, or an LSM's say).
#[allow(unsafe_code)]
fn elevated() -> bool {
    // SAFETY: getauxval reads the auxiliary vector the kernel gave the process; it takes an
    // integer, returns an integer (0 when the entry is absent) and touches no Rust memory.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) };
    secure != 0
}

/// Finds the program a worker runs: the policy's `worker` if set (it must be a file);
/// otherwise this executable if it called [`run_if_worker`] first in `main`; otherwise
/// `skillgate-worker` beside this executable, or in its parent directory (where cargo puts
/// binaries when the executable is a test in `target/*/deps/`).
pub fn find(configured: Option<&Path>) -> Result<WorkerProgram, LoadError> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(WorkerProgram::Configured(p.to_path_buf()))
        } else {
            Err(LoadError::WorkerMissing {
                path: p.to_path_buf(),
            })
        };
    }
    let this_executable = this_executable();
    if this_executable == SelfWorker::Ready {
        return Ok(WorkerProgram::ThisExecutable);
    }
    let mut searched = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join(WORKER_NAME);
            if candidate.is_file() {
                return Ok(WorkerProgram::Beside(candidate));
            }
            searched.push(candidate);
            dir = d.parent();
        }
    }
    Err(LoadError::WorkerNotFound {
        this_executable,
        searched,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_test_binary_is_not_its_own_worker() {
        // The test harness never calls the hook: the Gate must not re-execute it.
        assert_eq!(this_executable(), SelfWorker::NotCalled);
        assert!(!matches!(find(None), Ok(WorkerProgram::ThisExecutable)));
    }

    #[test]
    fn a_configured_worker_that_is_not_a_file_is_missing() {
        let err = find(Some(Path::new("/nonexistent/skillgate-worker"))).unwrap_err();
        assert!(matches!(err, LoadError::WorkerMissing { .. }), "{err}");
    }

    #[test]
    fn the_threads_are_counted() {
        let count = super::super::child::thread_count;
        assert!(count().is_some_and(|n| n >= 1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(count().is_some_and(|n| n >= 2));
        drop(tx);
        let _ = t.join();
    }
}
