//! A warm pool of worker processes: started ahead of any load, so a load skips the exec,
//! the dynamic loader and the worker's setup that does not depend on the plugin.
//!
//! A pooled worker is started with only its channel (at the usual number, with a `/dev/null`
//! placeholder where the library goes), `/dev/null` on 0, 1 and 2, closes every other descriptor, leaves the host's session, arms
//! its parent-death signal, enters its user namespace and then waits on its channel holding
//! no plugin-specific right: no library, no grant, no log pipe. Everything that depends on
//! the plugin stays in the per-plugin step, exactly as in a cold start: the network namespace
//! (the plan may grant TCP), every rlimit and the task bound (the `pids` cgroup is made and
//! joined at hand-over), Landlock, seccomp, the re-check of the library and the grants, and
//! `dlopen`. Loading takes one worker and hands it, in one `SCM_RIGHTS` message on its
//! channel, the log pipes, the sealed memfd, the call region and the grant descriptors, then
//! `Init`; the
//! worker puts them at the cold worker's numbers and from there is a cold worker: the same
//! layout check, the same count check against `Init`, the same re-check of the library's
//! seals, size and digest and of the grants ([`super::child`]).
//!
//! Threats this answers:
//!
//! - **A plugin reaching a pooled worker.** A pooled worker is trusted code until its
//!   hand-over (it has loaded nothing), so no loaded plugin may reach it: the host's end of
//!   every pooled channel is close-on-exec and never placed in another worker, each worker
//!   closes every descriptor it was not given, and workers are spawned one at a time from
//!   the spawner thread, so no worker holds another's channel.
//! - **One worker serving two plugins.** A taken worker is never returned: it ends with its
//!   plugin's handle, or at once if the hand-over failed.
//! - **A worker that died while waiting** (killed, out of memory) is found before it is
//!   handed anything (it is reapable, or its channel is readable or hung up, which a waiting
//!   worker never makes it) and ended; the refill thread replaces it. One that dies between
//!   that check and its first frame has run no plugin code, so the load takes another, or
//!   starts one cold. An empty pool is a cold start, never thread mode.
//! - **Leaks.** Dropping the pool stops the refill thread (joined within a bound) and kills
//!   and reaps every worker still waiting; no descriptor of theirs stays in the host.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::spawner::{REAP_BOUND, place_fds, reap_within};

/// The largest pool a policy may ask for.
pub(crate) const MAX_POOL_SIZE: usize = 16;
/// The pool size when the policy does not set one: off, until the pool starts lazily (a
/// Gate built only to verify, or one per `compat` call, would start workers it never uses)
/// and the warm path meets its target (BENCHMARKS.md).
pub(crate) const DEFAULT_POOL_SIZE: usize = 0;

/// How often the refill thread looks for workers that died while waiting, when nothing
/// wakes it sooner.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long dropping the pool waits for the refill thread (it may be in one spawn).
const JOIN_BOUND: Duration = Duration::from_secs(5);
/// The longest pause after failed spawns (a missing worker file), so the thread never spins.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A worker started ahead of its plugin, waiting on its channel.
pub(super) struct Pooled {
    pub(super) child: Child,
    pub(super) channel: UnixStream,
}

impl Pooled {
    fn spawn(program: &Path) -> io::Result<Pooled> {
        let (host_end, worker_end) = UnixStream::pair()?;
        let mut command = Command::new(program);
        command
            .arg(super::worker::WORKER_ARG)
            .arg(super::worker::POOLED_ARG)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // A placeholder where the library goes, so the channel has its usual number; the
        // worker puts the library over it at the hand-over.
        let placeholder = OwnedFd::from(std::fs::File::open("/dev/null")?);
        let held = place_fds(&mut command, vec![placeholder, OwnedFd::from(worker_end)])?;
        let child = super::spawner::spawn(command);
        drop(held);
        Ok(Pooled {
            child: child?,
            channel: host_end,
        })
    }

    /// Whether it still waits as a pooled worker does: running, and its channel neither
    /// readable nor hung up (it writes nothing before its hand-over).
    fn waiting(&mut self) -> bool {
        use rustix::event::{PollFd, PollFlags, poll};
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        let mut fds = [PollFd::new(&self.channel, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(poll(&mut fds, Some(&zero)), Ok(0))
    }

    /// Kills and reaps it within a bound.
    pub(super) fn end(mut self) {
        let _ = self.child.kill();
        if reap_within(&mut self.child, REAP_BOUND).is_none() {
            tracing::warn!(
                pid = self.child.id(),
                "a pooled worker was not reapable in time"
            );
        }
    }
}

struct Shared {
    size: usize,
    program: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    idle: VecDeque<Pooled>,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends the workers that no longer wait; returns the state's guard.
fn prune(mut state: MutexGuard<'_, State>) -> MutexGuard<'_, State> {
    let mut kept = VecDeque::with_capacity(state.idle.len());
    while let Some(mut w) = state.idle.pop_front() {
        if w.waiting() {
            kept.push_back(w);
        } else {
            w.end();
        }
    }
    state.idle = kept;
    state
}

/// The pool a `Gate` owns (process isolation, `pool.size` > 0).
pub(crate) struct Pool {
    shared: Arc<Shared>,
    refill: Option<JoinHandle<()>>,
    /// Disconnected when the refill thread has ended (in a mutex: the Gate is `Sync`).
    finished: Mutex<mpsc::Receiver<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.shared.size)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts the refill thread for `size` workers of `program`; `None` for size 0 (no
    /// thread, every load is a cold start).
    pub(crate) fn start(size: usize, program: &Path) -> io::Result<Option<Pool>> {
        if size == 0 {
            return Ok(None);
        }
        let shared = Arc::new(Shared {
            size: size.min(MAX_POOL_SIZE),
            program: program.to_path_buf(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let (finished_tx, finished) = mpsc::sync_channel::<()>(0);
        let for_thread = Arc::clone(&shared);
        let refill = std::thread::Builder::new()
            .name("skillgate-pool".into())
            .spawn(move || {
                let _finished = finished_tx;
                refill(&for_thread);
            })?;
        Ok(Some(Pool {
            shared,
            refill: Some(refill),
            finished: Mutex::new(finished),
        }))
    }

    /// A worker that still waits, if any (and the refill thread is told to replace it).
    pub(super) fn take(&self) -> Option<Pooled> {
        let mut state = self.shared.lock();
        let taken = loop {
            match state.idle.pop_front() {
                Some(mut w) => {
                    if w.waiting() {
                        break Some(w);
                    }
                    w.end();
                }
                None => break None,
            }
        };
        drop(state);
        self.shared.wake.notify_all();
        taken
    }

    /// The process ids of the workers waiting now.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.shared
            .lock()
            .idle
            .iter()
            .map(|w| w.child.id())
            .collect()
    }
}

fn refill(shared: &Shared) {
    let mut backoff = Duration::from_millis(100);
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        state = prune(state);
        if state.idle.len() >= shared.size {
            state = match shared.wake.wait_timeout(state, CHECK_EVERY) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            continue;
        }
        // Spawned without the lock: a load meanwhile takes what is there or starts cold.
        drop(state);
        let spawned = Pooled::spawn(&shared.program);
        state = shared.lock();
        match spawned {
            Ok(w) if state.stop => {
                drop(state);
                w.end();
                return;
            }
            Ok(w) => {
                state.idle.push_back(w);
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(
                    program = %crate::base::escape::Escaped(shared.program.display()),
                    error = %e,
                    "cannot start a pooled worker; loads start their workers cold"
                );
                state = match shared.wake.wait_timeout(state, backoff) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        let finished = self
            .finished
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match finished.recv_timeout(JOIN_BOUND) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.refill.take() {
                    let _ = t.join();
                }
            }
            // Still in a spawn past the bound: it ends what it spawned once it sees `stop`.
            _ => tracing::warn!("the worker pool's refill thread did not end in time"),
        }
        let idle = std::mem::take(&mut self.shared.lock().idle);
        for w in idle {
            w.end();
        }
    }
}
