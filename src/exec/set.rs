//! Several workers for one plugin (policy `workers`): calls run in parallel, each worker
//! still runs one call at a time.
//!
//! ABI v1 plugins are not reentrant, whatever their `thread_safe` claim says, so the unit
//! of parallelism is the worker process, never a second call into one: a call takes a
//! free worker, or waits for the first to free up, no longer than its own deadline (as a
//! caller queued on a single worker does). Every worker is started exactly as a single one
//! is — the same sealed memfd, its own sandbox, report confirmation and metadata check — so
//! none is trusted on the strength of another's checks.
//!
//! **A fault that ends one worker (crash, timeout, protocol violation) ends them all and
//! poisons the handle.** The same code and the same input reach every worker: a plugin
//! that could crash, hang or subvert one is not trusted with the others. A worker in the
//! middle of another call is killed at once (through a pidfd opened when it started, so
//! the signal cannot reach a reused pid); that call fails with `Poisoned`, as does every
//! later one.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::base::ffi::{FaultError, PluginResult};

use super::cancel::CancelToken;
use super::host::ProcessExecutor;
use super::options::CallOptions;

/// How often a call waiting for a free worker looks at its cancellation token.
const CANCEL_POLL: Duration = Duration::from_millis(10);

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
use super::tools::CallExtras;

/// One worker of the set and the pidfd that can kill it while a call holds it.
struct Slot {
    executor: ProcessExecutor,
    /// Opened before the worker served any call, so before anything could reap it: the
    /// descriptor names that process for good. `None` if the kernel refused one; the
    /// worker is then ended once its call in flight returns.
    pidfd: Option<OwnedFd>,
}

/// The workers of one plugin and which of them are free.
pub(crate) struct WorkerSet {
    slots: Vec<Slot>,
    /// Indexes of the workers no call holds.
    free: Mutex<Vec<usize>>,
    freed: Condvar,
    /// Callers waiting on `freed`, changed only under `free`: a released worker is
    /// announced only when someone waits (a notify is a `futex` call even with no waiter).
    waiting: AtomicUsize,
    timeout: Duration,
    poisoned: AtomicBool,
}

impl std::fmt::Debug for WorkerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSet")
            .field("workers", &self.slots.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WorkerSet {
    /// A set of started workers; the first is the one [`WorkerSet::worker_pid`] names.
    /// Each must not have served a call yet (its pidfd is opened here).
    pub(crate) fn new(executors: Vec<ProcessExecutor>) -> Self {
        let timeout = executors
            .first()
            .map_or(Duration::ZERO, ProcessExecutor::timeout);
        let slots: Vec<Slot> = executors
            .into_iter()
            .map(|executor| {
                let pidfd = executor
                    .worker_pid()
                    .and_then(|pid| i32::try_from(pid).ok())
                    .and_then(rustix::process::Pid::from_raw)
                    .and_then(|pid| {
                        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
                    });
                Slot { executor, pidfd }
            })
            .collect();
        // Handed out from the end: the first worker serves when calls come one at a time.
        let free = (0..slots.len()).rev().collect();
        WorkerSet {
            slots,
            free: Mutex::new(free),
            freed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            timeout,
            poisoned: AtomicBool::new(false),
        }
    }

    /// Runs one call on a free worker, under `options`' deadline (capped by the policy's
    /// timeout) and cancellation token.
    ///
    /// Cancelling: a token cancelled before the call holds a worker fails it with
    /// `Cancelled { running: false }` and touches no worker. Once the call holds its
    /// worker, a hook on the token kills **that worker** through a duplicate of its pidfd;
    /// the hook is removed before the worker is released, so a late `cancel()` can never
    /// reach a worker that serves another call. A call whose hook fired reports
    /// `Cancelled { running: true }` whatever the worker answered (the kill may have come
    /// just after the reply), and the set is poisoned as after any fault that ends a
    /// worker. Without a pidfd (the kernel refused one) the worker cannot be killed
    /// safely: the call is then failed and the set poisoned when it returns, within its
    /// deadline. `extras` carry the call's progress callback and tool nesting. Returns with
    /// the outcome the process id of the worker the call went to (`None` when it reached
    /// none), for the audit event of a fault.
    pub(crate) fn call_with(
        &self,
        input: &[u8],
        options: &CallOptions,
        extras: CallExtras,
    ) -> (Result<PluginResult, FaultError>, Option<u32>) {
        let start = Instant::now();
        let timeout = options.effective_timeout(self.timeout, start);
        let deadline = start + timeout;
        let token = options.cancel_token();
        if token.is_some_and(CancelToken::is_cancelled) {
            return (Err(FaultError::Cancelled { running: false }), None);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return (Err(FaultError::Poisoned), None);
        }
        let held = match self.take_free(deadline, timeout, token) {
            Ok(held) => held,
            Err(fault) => return (Err(fault), None),
        };
        let Some(slot) = self.slots.get(held.index) else {
            return (Err(FaultError::Poisoned), None);
        };
        if self.poisoned.load(Ordering::Acquire) {
            return (Err(FaultError::Poisoned), None);
        }
        // Only a call given a token pays for the hook (a flag, a pidfd duplicate).
        let fired = token.map(|_| Arc::new(AtomicBool::new(false)));
        let hook = token.zip(fired.clone()).map(|(t, fired)| {
            let pidfd = slot.pidfd.as_ref().and_then(|p| p.try_clone().ok());
            t.on_cancel(move || {
                fired.store(true, Ordering::Release);
                if let Some(pidfd) = &pidfd {
                    let _ =
                        rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
                }
            })
        });
        // Read before the call: a fault that ends the worker forgets its pid.
        let pid = slot.executor.worker_pid();
        let outcome = slot.executor.call_until(input, deadline, extras);
        // Removed before the worker is released (`held` drops below): no later cancel()
        // reaches this worker.
        drop(hook);
        let outcome = if fired.is_some_and(|f| f.load(Ordering::Acquire)) {
            slot.executor.end();
            Err(FaultError::Cancelled { running: true })
        } else {
            match outcome {
                // The executor names the policy's timeout; this call ran under its own.
                Err(FaultError::Timeout { .. }) if timeout < self.timeout => {
                    Err(FaultError::Timeout {
                        timeout_ms: duration_ms(timeout),
                    })
                }
                other => other,
            }
        };
        if outcome.is_err() && slot.executor.is_poisoned() {
            // This worker ended. The first fault ends the others and is reported; a call
            // whose worker was killed for another's fault reports the poisoning.
            if self.poisoned.swap(true, Ordering::AcqRel) {
                return (Err(FaultError::Poisoned), pid);
            }
            drop(held);
            self.end_all();
        }
        (outcome, pid)
    }

    /// Kills every worker at once, then ends and reaps each (waiting for a call in flight
    /// on it to see its worker gone).
    fn end_all(&self) {
        for slot in &self.slots {
            if let Some(pidfd) = &slot.pidfd {
                let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
            }
        }
        for slot in &self.slots {
            slot.executor.end();
        }
        // Callers waiting for a worker learn of the poisoning now, not at their deadline.
        self.freed.notify_all();
    }

    /// Waits for a free worker until `deadline`. A caller that gets none in time gets
    /// `Timeout` (its call reached no worker, so nothing is poisoned by it).
    /// A cancelled `token` ends the wait with `Cancelled { running: false }` (it is looked
    /// at every [`CANCEL_POLL`] while waiting).
    fn take_free(
        &self,
        deadline: Instant,
        timeout: Duration,
        token: Option<&CancelToken>,
    ) -> Result<Held<'_>, FaultError> {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if self.poisoned.load(Ordering::Acquire) {
                return Err(FaultError::Poisoned);
            }
            if let Some(index) = free.pop() {
                return Ok(Held { set: self, index });
            }
            if token.is_some_and(CancelToken::is_cancelled) {
                return Err(FaultError::Cancelled { running: false });
            }
            let mut remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(FaultError::Timeout {
                    timeout_ms: duration_ms(timeout),
                });
            }
            if token.is_some() {
                remaining = remaining.min(CANCEL_POLL);
            }
            self.waiting.fetch_add(1, Ordering::Relaxed);
            free = match self.freed.wait_timeout(free, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether a fault ended these workers.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The first worker's process id, while it runs.
    pub(crate) fn worker_pid(&self) -> Option<u32> {
        self.slots.first().and_then(|s| s.executor.worker_pid())
    }

    /// Every running worker's process id, in the order they were started.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter_map(|s| s.executor.worker_pid())
            .collect()
    }
}

/// A worker held by one call; releasing it wakes one waiting caller.
struct Held<'a> {
    set: &'a WorkerSet,
    index: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut free = self
            .set
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        free.push(self.index);
        if self.set.waiting.load(Ordering::Relaxed) > 0 {
            self.set.freed.notify_one();
        }
    }
}
