//! A warm pool of worker processes: started ahead of any load, so a load skips the exec,
//! the dynamic loader and the worker's setup that does not depend on the plugin.
//!
//! A pooled worker is started with only its channel (at the usual number, with a `/dev/null`
//! placeholder where the library goes), `/dev/null` on 0, 1 and 2, closes every other descriptor, leaves the host's session, arms
//! its parent-death signal, enters its user namespace and its network namespace (the
//! largest single step of a load, about half a millisecond; a plan that grants TCP needs the
//! host's network, so it is never handed to a pooled worker but started cold, and the
//! worker refuses one), rehearses two steps of a load that hold nothing of any plugin's
//! (starting and joining a thread, hashing a few bytes: `rehearse` in [`super::child`]) and
//! then waits on its channel holding no plugin-specific right: no
//! library, no grant, no log pipe. The host makes two things for it while it waits, both
//! plugin-independent: its call region, and on a root host its own `pids` cgroup, joined
//! with `pids.max` 1 (joining is a migration the kernel serialises against every fork on
//! the machine: milliseconds of a load on a busy one, measured with
//! `benches/load_steps.rs`). Everything that depends on the plugin stays in the per-plugin
//! step, exactly as in a cold start: every rlimit and the task bound (the hand-over first
//! sets the cgroup's `pids.max` to the plan's), Landlock, seccomp, the re-check of the
//! library and the grants, and `dlopen`. Loading takes one worker and hands it, in one `SCM_RIGHTS` message on its
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
//!   worker never makes it) and ended, outside the pool's lock; the refill thread replaces
//!   it after a pause, which doubles (to 5 s) while workers keep dying, so a worker program
//!   that exits as it starts costs a fork every few seconds, not dozens a second. One that
//!   dies between that check and its first frame has run no plugin code, so the load takes
//!   another, or starts one cold. An empty pool is a cold start, never thread mode.
//! - **Leaks.** Dropping the pool stops the refill thread (joined within a bound) and kills
//!   and reaps every worker still waiting; no descriptor of theirs stays in the host.
//! - **Processes nobody uses.** The pool starts lazily ([`LazyPool`]): with the first
//!   process-mode load of its Gate, after that load's own worker started, never when the
//!   Gate is built. A Gate that only verifies (`skillgate verify`, a host that inspects)
//!   starts no worker and no thread.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cgroup::Cgroup;
use super::ring::HostRing;
use super::spawner::{REAP_BOUND, place_fds, reap_within};

/// The largest pool a policy may ask for.
pub(crate) const MAX_POOL_SIZE: usize = 16;
/// The pool size when the policy does not set one: small, since each waiting worker is a
/// process (a few MiB) and loads come one at a time; two absorb a burst of two loads while
/// the refill thread starts their replacements. The pool starts only with the first
/// process-mode load ([`LazyPool`]), so a Gate that never loads pays nothing for it.
pub(crate) const DEFAULT_POOL_SIZE: usize = 2;

/// How often the refill thread looks for workers that died while waiting, when nothing
/// wakes it sooner.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long dropping the pool waits for the refill thread (it may be in one spawn).
const JOIN_BOUND: Duration = Duration::from_secs(5);
/// The first pause after a failed spawn, or after waiting workers were found gone.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause after failed spawns (a missing worker file) or workers that die as they
/// start, so the thread never spins.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A worker started ahead of its plugin, waiting on its channel, with what the host made
/// for it ahead: both are plugin-independent, and both cost a load time it does not wait
/// for here.
pub(super) struct Pooled {
    pub(super) child: Child,
    pub(super) channel: UnixStream,
    /// Its own `pids` cgroup, made and joined while it waited, where the host may make one
    /// (a root host; `None` elsewhere, and the load does not try again: a cold start on
    /// such a host finds none either). `pids.max` is 1 until the hand-over sets the plan's
    /// bound: joining a cgroup is a migration the kernel serialises against every fork on
    /// the machine (milliseconds on a busy one), setting `pids.max` is a write.
    pub(super) cgroup: Option<Cgroup>,
    /// Its call region, made while it waited (`None` if that failed: the load makes one).
    pub(super) ring: Option<HostRing>,
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
        let child = child?;
        // Joined while the worker still runs trusted code only (it waits for its
        // hand-over); one task, so `pids.max` 1 holds it until then.
        let cgroup = Cgroup::create(1).and_then(|c| match c.adopt(child.id()) {
            Ok(()) => Some(c),
            Err(_) => {
                c.remove();
                None
            }
        });
        Ok(Pooled {
            child,
            channel: host_end,
            cgroup,
            ring: HostRing::create().ok(),
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

    /// Kills and reaps it within a bound, then removes its cgroup.
    pub(super) fn end(mut self) {
        let _ = self.child.kill();
        if reap_within(&mut self.child, REAP_BOUND).is_none() {
            tracing::warn!(
                pid = self.child.id(),
                "a pooled worker was not reapable in time"
            );
        }
        if let Some(c) = self.cgroup.take() {
            c.remove();
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

/// Takes out the workers that no longer wait, for the caller to end once it has let go of
/// the lock: ending one waits for its reaping (up to [`REAP_BOUND`] for a process the
/// kernel cannot reap at once), which a load's [`Pool::take`] must not wait behind.
fn prune(state: &mut State) -> Vec<Pooled> {
    let mut kept = VecDeque::with_capacity(state.idle.len());
    let mut gone = Vec::new();
    while let Some(mut w) = state.idle.pop_front() {
        if w.waiting() {
            kept.push_back(w);
        } else {
            gone.push(w);
        }
    }
    state.idle = kept;
    gone
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

    /// A worker that still waits, if any. The refill thread is not woken here: the load
    /// that took it wakes it once it is done ([`LazyPool::loaded`]), so the replacement's
    /// fork and exec never compete with that load for the CPU or the host's memory map.
    pub(super) fn take(&self) -> Option<Pooled> {
        let mut state = self.shared.lock();
        let mut gone = Vec::new();
        let taken = loop {
            match state.idle.pop_front() {
                Some(mut w) => {
                    if w.waiting() {
                        break Some(w);
                    }
                    gone.push(w);
                }
                None => break None,
            }
        };
        drop(state);
        for w in gone {
            w.end();
        }
        taken
    }

    /// Wakes the refill thread (to replace what loads took, and workers found dead).
    fn wake(&self) {
        self.shared.wake.notify_all();
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

/// The refill thread. It backs off (from [`FIRST_BACKOFF`], doubling up to
/// [`MAX_BACKOFF`]) when a spawn fails and when waiting workers are found gone: a worker
/// program that starts but exits at once (a worker built for another protocol, a
/// set-user-ID file, a platform without `close_range`) would otherwise be replaced as fast
/// as it dies, a fork and an exec after another for as long as the Gate lives. The pause
/// returns to its first length once the pool is full of workers that still wait.
fn refill(shared: &Shared) {
    let mut backoff = FIRST_BACKOFF;
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let gone = prune(&mut state);
        if !gone.is_empty() {
            drop(state);
            let count = gone.len();
            for w in gone {
                w.end();
            }
            tracing::warn!(
                program = %crate::base::escape::Escaped(shared.program.display()),
                count,
                pause_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                "pooled workers were gone while they waited; the pool pauses before it starts more"
            );
            match pause(shared, shared.lock(), &mut backoff) {
                Some(s) => state = s,
                None => return,
            }
            continue;
        }
        if state.idle.len() >= shared.size {
            backoff = FIRST_BACKOFF;
            state = wait(shared, state, CHECK_EVERY);
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
            Ok(w) => state.idle.push_back(w),
            Err(e) => {
                tracing::warn!(
                    program = %crate::base::escape::Escaped(shared.program.display()),
                    error = %e,
                    "cannot start a pooled worker; loads start their workers cold"
                );
                match pause(shared, state, &mut backoff) {
                    Some(s) => state = s,
                    None => return,
                }
            }
        }
    }
}

/// Waits on the refill thread's condition for at most `for_at_most`.
fn wait<'a>(
    shared: &'a Shared,
    state: MutexGuard<'a, State>,
    for_at_most: Duration,
) -> MutexGuard<'a, State> {
    match shared.wake.wait_timeout(state, for_at_most) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}

/// The refill thread's pause of `backoff`, which then doubles (to [`MAX_BACKOFF`]); `None`
/// when the pool is stopping. `stop` is looked at first: `Drop` may have set it (and
/// notified, before this wait) while the thread spawned or ended workers without the lock.
fn pause<'a>(
    shared: &'a Shared,
    state: MutexGuard<'a, State>,
    backoff: &mut Duration,
) -> Option<MutexGuard<'a, State>> {
    if state.stop {
        return None;
    }
    let state = wait(shared, state, *backoff);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    Some(state)
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

/// A Gate's pool, started by the first process-mode load rather than when the Gate is
/// built: a Gate that only verifies, or one that is built and dropped without loading,
/// starts no worker and no thread.
pub(crate) struct LazyPool {
    size: usize,
    program: PathBuf,
    /// Unset until the first load; then the pool, or `None` (size 0, or its thread could
    /// not be started: every load is then a cold start, never thread mode).
    pool: OnceLock<Option<Pool>>,
}

impl std::fmt::Debug for LazyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyPool")
            .field("size", &self.size)
            .field("started", &self.pool.get().is_some())
            .finish_non_exhaustive()
    }
}

impl LazyPool {
    /// A pool of `size` workers of `program`, not started yet.
    pub(crate) fn new(size: usize, program: &Path) -> LazyPool {
        LazyPool {
            size,
            program: program.to_path_buf(),
            pool: OnceLock::new(),
        }
    }

    /// The pool, if a load already started it (this never starts it).
    pub(crate) fn started(&self) -> Option<&Pool> {
        self.pool.get().and_then(Option::as_ref)
    }

    /// Whether a load started it (even if its thread could not be started).
    pub(crate) fn is_started(&self) -> bool {
        self.pool.get().is_some()
    }

    /// After a process-mode load (whatever its outcome): starts the pool if this was the
    /// first, else wakes its refill thread to replace what the load took. Either way the
    /// refill runs after the load, off the caller's path. A refill thread that cannot be
    /// started leaves the pool off for this Gate, with a warning: loads start their
    /// workers cold.
    pub(crate) fn loaded(&self) {
        if let Some(pool) = self.started() {
            pool.wake();
            return;
        }
        let _ = self
            .pool
            .get_or_init(|| match Pool::start(self.size, &self.program) {
                Ok(pool) => pool,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot start the worker pool's thread; loads start their workers cold"
                    );
                    None
                }
            });
    }
}

/// One pool shared by every Gate built from it ([`crate::compat::PluginLoader`] builds a
/// Gate per call): a Gate built while the pool's size and worker program are unchanged
/// takes the same pool, so its workers outlive each Gate; a Gate with another size or
/// program replaces it (the old one ends when its last Gate does).
#[derive(Default)]
pub(crate) struct SharedPool {
    slot: Mutex<Option<Arc<LazyPool>>>,
}

impl std::fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPool")
            .field("pool", &*self.lock())
            .finish()
    }
}

impl SharedPool {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<LazyPool>>> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pool of `size` workers of `program`: the one held if it is that, else a new
    /// one (not started) in its place.
    pub(crate) fn get(&self, size: usize, program: &Path) -> Arc<LazyPool> {
        let mut slot = self.lock();
        if let Some(held) = slot.as_ref()
            && held.size == size
            && held.program == program
        {
            return Arc::clone(held);
        }
        let pool = Arc::new(LazyPool::new(size, program));
        let replaced = slot.replace(Arc::clone(&pool));
        drop(slot);
        // Outside the lock: the last owner of a started pool joins its thread.
        drop(replaced);
        pool
    }

    /// The process ids of the workers waiting in the pool held now.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let held = self.lock().clone();
        held.as_deref()
            .and_then(LazyPool::started)
            .map(Pool::pids)
            .unwrap_or_default()
    }
}
