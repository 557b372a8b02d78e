//! Worker-process isolation: each plugin runs in its own process, which restricts itself
//! before `dlopen` and then serves calls one at a time over a socket.
//!
//! A thread is not a security boundary; a process nearly is. But once `dlopen` starts, every
//! byte the worker sends is plugin code's to choose: a constructor can write frames on the
//! channel, close or `dup2` over descriptors, or never return. So:
//!
//! - **Descriptors.** The worker starts with an empty environment, working directory `/`,
//!   fds 0, 1 and 2 on `/dev/null` (a plugin that prints reaches nothing; capturing its
//!   output for a log is issue 13), the sealed memfd at fd 3, the channel at fd 4 and the
//!   plan's grant descriptors from fd 5 on, and nothing else: the host places them in the
//!   child before `exec` and the worker closes every higher descriptor in its first lines.
//! - **Reports.** The worker restricts itself (namespaces, rlimits, Landlock, seccomp) and
//!   sends its enforcement report *before* `dlopen`; the host then confirms it from outside
//!   (`/proc/<pid>/status`: `Seccomp`, `NoNewPrivs`, `Seccomp_filters`; `/proc/<pid>/ns/*`
//!   against the host's own; `/proc/<pid>/limits`). After `dlopen` the worker only relays
//!   what `vtcode_plugin_version` and `vtcode_plugin_metadata` returned, and the host checks
//!   them: a frame after `dlopen` is data, never testimony. A second report, a load failure
//!   after the plugin loaded, or any frame out of turn is a protocol violation.
//! - **Sequence.** Every call carries a sequence number and its reply must carry the same:
//!   a stale, duplicate or forged reply poisons the handle, it is never returned.
//! - **Time.** Every read, write and wait of the host ends by the call's deadline (or a fixed
//!   short one when a worker is being ended): a worker is ended by `SIGKILL`, then reaped
//!   within a bound. Callers queued behind a hung call wait no longer than their own deadline.
//! - **Tasks.** A thread bomb is bounded per worker: by a `pids` cgroup of its own where the
//!   host can make one (a root host), else by `RLIMIT_NPROC` inside the worker's own user
//!   namespace (counted per namespace and user since Linux 5.14, but never for root), else
//!   the seccomp filter refuses every thread. The report says which.
//!
//! The host side (`ProcessExecutor`) never trusts the worker: frames are capped
//! ([`crate::base::protocol`]), payloads parsed strictly, and the exit status of a dead worker is
//! reaped and reported. **After a fault that ends the worker (crash, timeout, protocol
//! violation) the handle fails every later call with `Fault(Poisoned)`; it does not restart
//! the worker.** A host that wants the plugin back loads it again, which re-verifies it.

use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::base::ffi::{FaultError, PluginMetadata, PluginResult, SYMBOL_EXECUTE, decode_result};
use crate::base::protocol::{
    FRAME_OVERHEAD, Frame, FrameError, PROTOCOL_VERSION, ProtocolViolation, Tag, encode_frame,
    read_frame, write_frame,
};
use crate::base::sealed::SealedFile;
use crate::base::settings::{Isolation, Limits};
use crate::error::Error;
use crate::pipeline::load::LoadError;
use crate::pipeline::manifest::Manifest;
use crate::sandbox::{Enforcement, SandboxError, SandboxPlan};

/// The worker executable's file name.
pub const WORKER_NAME: &str = "skillgate-worker";
/// The worker's descriptor for the sealed library.
pub const WORKER_MEMFD: RawFd = 3;
/// The worker's descriptor for its channel to the host.
pub const WORKER_CHANNEL: RawFd = 4;
/// The worker's first grant descriptor; the others follow it in the plan's order.
pub const WORKER_FIRST_GRANT: RawFd = 5;
/// Largest control frame (init, reports, errors).
const CONTROL_CAP: usize = 1024 * 1024;
/// Read buffer of each end of the channel: a small frame arrives with one `read`, header
/// and payload together. Frame caps are checked as before; the buffer bounds nothing.
const CHANNEL_BUFFER: usize = 64 * 1024;
/// How far past its deadline a read may wait before the socket's timeout is lowered (one
/// `setsockopt`). The timeout set for a call's full duration is reused by the next call
/// instead of being set again before every call.
const DEADLINE_SLACK: Duration = Duration::from_millis(1);
/// How long a worker that was sent `SIGKILL` may take to be reaped. Death after `SIGKILL` is
/// prompt unless the kernel is stuck; past this bound the host stops waiting (the zombie is
/// reaped when the `Child` is dropped by nobody: it stays until the host exits).
const REAP_BOUND: Duration = Duration::from_secs(5);
/// How long a worker whose channel closed may take to exit on its own before it is
/// treated as having closed its channel deliberately (a process closes its descriptors
/// while exiting, just before it becomes reapable).
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// seccomp filters the worker installs on itself (on top of any the host inherited).
const WORKER_SECCOMP_FILTERS: u64 = 1;
/// How long the host still listens, after a report it could not confirm, for the load
/// failure an exiting worker sent before it began to exit.
const EXITING_WORKER_GRACE: Duration = Duration::from_millis(500);

/// What bounds the number of tasks a plugin can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum TaskBound {
    /// Nothing: thread isolation cannot bound the plugin's threads (they are the host's).
    #[default]
    Unbounded,
    /// A `pids` cgroup the host made for this worker alone, with `pids.max` = `max`.
    Cgroup {
        /// Most tasks, the worker's main thread included.
        max: u64,
    },
    /// `RLIMIT_NPROC` = `max` inside the worker's own user namespace, where the kernel
    /// counts only the worker's tasks (Linux 5.14 and later; never for root, whose tasks
    /// the kernel does not count).
    UserNamespaceRlimit {
        /// Most tasks, the worker's main thread included.
        max: u64,
    },
    /// The seccomp filter refuses every `clone`: the worker is one task.
    NoThreads,
}

/// The first frame the host sends: everything the worker needs to restrict and load.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    version: u32,
    host_pid: u32,
    plan: SandboxPlan,
    grants: usize,
    output_bytes: usize,
    memory_bytes: u64,
    cpu_seconds: u64,
    file_bytes: u64,
    threads: u64,
    /// Whether the host put the worker in a `pids` cgroup of its own (`pids.max` = threads).
    cgroup: bool,
}

/// Why the worker could not load the plugin, as it reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum LoadFailure {
    /// Before `dlopen`: the worker could not set itself up.
    Setup { detail: String },
    /// Before `dlopen`: the sandbox could not be applied.
    Sandbox { detail: String },
    /// From `dlopen` (after the report; plugin code may have run, so only ever a refusal).
    Dlopen { detail: String },
    /// A required symbol is missing (after the report, as `Dlopen`).
    Symbol { name: String, detail: String },
}

/// A fault of one call, as the worker reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CallFault {
    NullResult,
    OutputTooLarge { limit: usize },
}

/// The `Loaded` frame: `[u32 LE version][u8 metadata status][metadata bytes]`.
const LOADED_HEADER: usize = 5;
const METADATA_BYTES: u8 = 0;
const METADATA_NULL: u8 = 1;
const METADATA_TOO_LARGE: u8 = 2;

fn static_symbol(name: &str) -> &'static str {
    use crate::base::ffi::{SYMBOL_FREE_STRING, SYMBOL_METADATA, SYMBOL_VERSION};
    [
        SYMBOL_VERSION,
        SYMBOL_METADATA,
        SYMBOL_EXECUTE,
        SYMBOL_FREE_STRING,
    ]
    .into_iter()
    .find(|s| *s == name)
    .unwrap_or("unknown")
}

/// Where a load stands, for deciding which frames may come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the worker's report: only its own code has run.
    Restricting,
    /// After the report: the worker is in or past `dlopen`.
    Loading,
}

impl LoadFailure {
    /// The error a load failure means, if it may come at `phase`.
    fn into_error(self, phase: Phase) -> Result<Error, ProtocolViolation> {
        let waiting = match phase {
            Phase::Restricting => "waiting for the enforcement report",
            Phase::Loading => "waiting for the loaded plugin",
        };
        let unexpected = ProtocolViolation::Unexpected {
            tag: Tag::LoadFailed,
            waiting,
        };
        match (self, phase) {
            (LoadFailure::Setup { detail }, Phase::Restricting) => {
                Ok(LoadError::Worker { detail }.into())
            }
            (LoadFailure::Sandbox { detail }, Phase::Restricting) => {
                Ok(SandboxError::Worker { detail }.into())
            }
            (LoadFailure::Dlopen { detail }, Phase::Loading) => {
                Ok(LoadError::Dlopen { detail }.into())
            }
            (LoadFailure::Symbol { name, detail }, Phase::Loading) => Ok(LoadError::Symbol {
                name: static_symbol(&name),
                detail,
            }
            .into()),
            _ => Err(unexpected),
        }
    }

    fn from_error(e: &Error) -> LoadFailure {
        match e {
            Error::Sandbox(s) => LoadFailure::Sandbox {
                detail: error_chain(s),
            },
            Error::Load(LoadError::Dlopen { detail }) => LoadFailure::Dlopen {
                detail: detail.clone(),
            },
            Error::Load(LoadError::Symbol { name, detail }) => LoadFailure::Symbol {
                name: (*name).to_owned(),
                detail: detail.clone(),
            },
            other => LoadFailure::Setup {
                detail: error_chain(other),
            },
        }
    }
}

/// An error and every `source` under it, joined: what crosses the channel is the whole
/// story (a `dlerror` text included), not the top line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = s.source();
    }
    text
}

/// Finds the worker executable: the policy's `worker` if set; otherwise `skillgate-worker`
/// beside the running executable, or in its parent directory (where cargo puts binaries
/// when the executable is a test in `target/*/deps/`).
pub fn find_worker(configured: Option<&Path>) -> Result<PathBuf, LoadError> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(LoadError::WorkerNotFound(vec![p.to_path_buf()]))
        };
    }
    let mut searched = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join(WORKER_NAME);
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate);
            dir = d.parent();
        }
    }
    Err(LoadError::WorkerNotFound(searched))
}

// ---------------------------------------------------------------------------------------
// Per-worker task bound: a pids cgroup.

/// A `pids` cgroup made for one worker, removed when the worker has been reaped.
struct Cgroup {
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
    fn create(max: u64) -> Option<Cgroup> {
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

    /// Moves `pid` (a worker that has not loaded anything yet) into the cgroup.
    fn adopt(&self, pid: u32) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Whether `pid` is in the cgroup.
    fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == pid.to_string())
    }

    /// Removes the (empty) cgroup. A reaped worker's tasks are all gone, but the kernel may
    /// take a moment to drop them from the cgroup: a few bounded retries.
    fn remove(self) {
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

// ---------------------------------------------------------------------------------------
// The host's side.

struct Worker {
    child: Child,
    channel: BufReader<Channel>,
    cgroup: Option<Cgroup>,
    /// Sequence number of the last call sent.
    seq: u64,
}

/// The host's end of the socket. Every `read` and `write` ends by the current deadline:
/// the socket's timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`) are lowered whenever they would let
/// a syscall wait more than [`DEADLINE_SLACK`] past the deadline, and one that times out
/// early is retried with the time that is left.
struct Channel {
    stream: UnixStream,
    deadline: Instant,
    /// The receive timeout currently set on the socket (`None`: none set yet).
    armed_read: Option<Duration>,
    /// The send timeout currently set on the socket (`None`: none set yet).
    armed_write: Option<Duration>,
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Channel {
    fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            deadline: Instant::now(),
            armed_read: None,
            armed_write: None,
        }
    }

    /// The time left, or `TimedOut`; re-arms the socket's timeout if it would overrun.
    fn remaining(&mut self, write: bool) -> io::Result<Duration> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let armed = if write {
            self.armed_write
        } else {
            self.armed_read
        };
        if armed.is_none_or(|armed| armed > remaining.saturating_add(DEADLINE_SLACK)) {
            self.set_timeout(write, remaining)?;
        }
        Ok(remaining)
    }

    /// Sets the socket's send or receive timeout and remembers it.
    fn set_timeout(&mut self, write: bool, timeout: Duration) -> io::Result<()> {
        if write {
            self.stream.set_write_timeout(Some(timeout))?;
            self.armed_write = Some(timeout);
        } else {
            self.stream.set_read_timeout(Some(timeout))?;
            self.armed_read = Some(timeout);
        }
        Ok(())
    }

    /// After a syscall timed out: lowers the timeout to what is left (it timed out early
    /// when an earlier, shorter timeout was still set), or reports the deadline passed.
    fn rearm(&mut self, write: bool) -> io::Result<()> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.set_timeout(write, remaining)
    }

    /// Writes a whole frame before the deadline.
    fn send(&mut self, tag: Tag, seq: u64, payload: &[u8]) -> io::Result<()> {
        let frame = encode_frame(tag, seq, payload)?;
        let mut sent = 0;
        while sent < frame.len() {
            self.remaining(true)?;
            match self.stream.write(frame.get(sent..).unwrap_or_default()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => self.rearm(true)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.remaining(false)?;
            match self.stream.read(buf) {
                Err(e) if timed_out(&e) => self.rearm(false)?,
                other => return other,
            }
        }
    }
}

/// Handle to a plugin's worker process. Calls are serialized: one at a time holds the turn.
pub(crate) struct ProcessExecutor {
    /// Whether a call holds the turn; callers wait for it on `turn_free`, up to their
    /// own deadline.
    busy: Mutex<bool>,
    turn_free: Condvar,
    /// The worker; only the caller holding the turn locks it (or `Drop`).
    worker: Mutex<Option<Worker>>,
    timeout: Duration,
    output_cap: usize,
    poisoned: AtomicBool,
}

impl std::fmt::Debug for ProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessExecutor")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn crashed(status: Option<ExitStatus>) -> FaultError {
    FaultError::Crashed {
        signal: status.and_then(|s| s.signal()),
        code: status.and_then(|s| s.code()),
    }
}

/// Waits up to `bound` for the child to be reapable, then reaps it.
fn reap_within(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + bound;
    let mut pause = Duration::from_micros(100);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => return None,
        }
    }
}

impl Worker {
    /// Ends the worker: `SIGKILL`, then a bounded reap, then its cgroup goes. Returns how
    /// it ended (an exit that came before the kill is reported as such).
    fn end(mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        let status = reap_within(&mut self.child, REAP_BOUND);
        if status.is_none() {
            tracing::warn!(
                pid = self.child.id(),
                "a killed worker was not reapable in time"
            );
        }
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
        status
    }

    /// The channel closed: the worker died (report how), or it closed its channel and
    /// lives on (a violation; it is ended).
    fn closed(mut self) -> FaultError {
        if let Some(status) = reap_within(&mut self.child, EXIT_GRACE) {
            let fault = crashed(Some(status));
            let _ = self.end();
            return fault;
        }
        let _ = self.end();
        FaultError::Protocol(ProtocolViolation::ChannelClosed)
    }

    fn read(&mut self, deadline: Instant, cap: usize) -> Result<Frame, FrameError> {
        self.channel.get_mut().deadline = deadline;
        read_frame(&mut self.channel, cap)
    }

    fn send(&mut self, deadline: Instant, tag: Tag, seq: u64, payload: &[u8]) -> io::Result<()> {
        let channel = self.channel.get_mut();
        channel.deadline = deadline;
        channel.send(tag, seq, payload)
    }
}

/// What ended an exchange with the worker: a fault of the call, or a reason to end it.
enum Ending {
    /// The worker is gone or must go; the fault to report.
    Fault(FaultError),
    /// The channel closed.
    Closed,
}

/// Why a load did not complete.
enum Refusal {
    /// The worker reported a failure before `dlopen` (or `dlopen`'s own), or the host's
    /// checks refused what it relayed: the worker is ended and this is the error.
    Refused(Error),
    /// The worker must be ended for this reason.
    Ended(Ending),
}

/// Maps a failed read to how it ends the worker.
fn read_failure(e: FrameError, timeout: Duration) -> Ending {
    match e {
        FrameError::Io(e) if timed_out(&e) => Ending::Fault(FaultError::Timeout {
            timeout_ms: duration_ms(timeout),
        }),
        FrameError::Closed | FrameError::Io(_) | FrameError::Trailing(_) => Ending::Closed,
        other => match ProtocolViolation::from_frame(other) {
            Ok(v) => Ending::Fault(FaultError::Protocol(v)),
            Err(_) => Ending::Closed,
        },
    }
}

fn violation(v: ProtocolViolation) -> Ending {
    Ending::Fault(FaultError::Protocol(v))
}

impl ProcessExecutor {
    /// Starts the worker and waits until it has restricted itself and loaded the plugin.
    pub(crate) fn start(
        library: &SealedFile,
        manifest: &Manifest,
        limits: &Limits,
        plan: SandboxPlan,
        worker_path: &Path,
    ) -> Result<(Self, Enforcement), Error> {
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let deadline = Instant::now() + timeout;
        let spawn_err = |source: io::Error| {
            Error::from(LoadError::WorkerStart {
                path: worker_path.to_path_buf(),
                source,
            })
        };
        let (host_end, worker_end) = UnixStream::pair().map_err(spawn_err)?;
        let mut given: Vec<OwnedFd> = Vec::new();
        given.push(library.as_fd().try_clone_to_owned().map_err(spawn_err)?);
        given.push(OwnedFd::from(worker_end));
        let grants = plan.grant_fds();
        let grant_count = grants.len();
        for fd in grants {
            given.push(fd.try_clone_to_owned().map_err(spawn_err)?);
        }
        let mut command = Command::new(worker_path);
        command
            .arg(grant_count.to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let given = place_fds(&mut command, given).map_err(spawn_err)?;
        let cgroup = Cgroup::create(limits.threads);
        // Spawned from the long-lived spawner thread: see crate::exec::spawner.
        let child = crate::exec::spawner::spawn(command).map_err(spawn_err);
        drop(given);
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                if let Some(c) = cgroup {
                    c.remove();
                }
                return Err(e);
            }
        };
        let mut worker = Worker {
            child,
            channel: BufReader::with_capacity(CHANNEL_BUFFER, Channel::new(host_end)),
            cgroup,
            seq: 0,
        };
        // Into its cgroup before it is told anything, so before any plugin code can run.
        let pid = worker.child.id();
        if let Some(c) = &worker.cgroup
            && c.adopt(pid).is_err()
            && let Some(c) = worker.cgroup.take()
        {
            c.remove();
        }
        let init = Init {
            version: PROTOCOL_VERSION,
            host_pid: std::process::id(),
            plan,
            grants: grant_count,
            output_bytes: limits.output_bytes,
            memory_bytes: limits.memory_bytes,
            cpu_seconds: limits.cpu_seconds,
            file_bytes: limits.file_bytes,
            threads: limits.threads,
            cgroup: worker.cgroup.is_some(),
        };
        match Self::handshake(&mut worker, &init, manifest.metadata(), deadline, timeout) {
            Ok(enforcement) => {
                let executor = ProcessExecutor {
                    busy: Mutex::new(false),
                    turn_free: Condvar::new(),
                    worker: Mutex::new(Some(worker)),
                    timeout,
                    output_cap: limits.output_bytes.saturating_add(FRAME_OVERHEAD),
                    poisoned: AtomicBool::new(false),
                };
                Ok((executor, enforcement))
            }
            Err(Refusal::Refused(e)) => {
                let _ = worker.end();
                Err(e)
            }
            Err(Refusal::Ended(Ending::Fault(f))) => {
                let _ = worker.end();
                Err(f.into())
            }
            Err(Refusal::Ended(Ending::Closed)) => Err(worker.closed().into()),
        }
    }

    /// Init, the report, the loaded plugin. An error carries what to report and whether the
    /// channel closed (how the worker ended is then found out by the caller).
    fn handshake(
        worker: &mut Worker,
        init: &Init,
        expected: &PluginMetadata,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Enforcement, Refusal> {
        let fail = Refusal::Ended;
        let init_bytes = serde_json::to_vec(init)
            .map_err(|e| Refusal::Refused(Error::Input(crate::base::ffi::InputError::json(e))))?;
        if let Err(e) = worker.send(deadline, Tag::Init, 0, &init_bytes) {
            return Err(fail(if timed_out(&e) {
                Ending::Fault(FaultError::Timeout {
                    timeout_ms: duration_ms(timeout),
                })
            } else {
                Ending::Closed
            }));
        }
        let mut phase = Phase::Restricting;
        let mut enforcement = None;
        let mut unconfirmed = None;
        // After a report the host could not confirm, how long it still listens for the
        // load failure an exiting worker already sent (see below).
        let mut read_until = deadline;
        loop {
            let frame = match worker.read(
                read_until,
                CONTROL_CAP.max(
                    init.output_bytes
                        .saturating_add(FRAME_OVERHEAD + LOADED_HEADER),
                ),
            ) {
                Ok(frame) => frame,
                Err(_) if unconfirmed.is_some() => {
                    let v = unconfirmed
                        .take()
                        .unwrap_or(ProtocolViolation::ChannelClosed);
                    return Err(fail(violation(v)));
                }
                Err(e) => return Err(fail(read_failure(e, timeout))),
            };
            let waiting = match phase {
                Phase::Restricting => "waiting for the enforcement report",
                Phase::Loading => "waiting for the loaded plugin",
            };
            if frame.seq != 0 {
                return Err(fail(violation(ProtocolViolation::WrongSequence {
                    expected: 0,
                    got: frame.seq,
                })));
            }
            match (frame.tag, phase) {
                (Tag::Restricted, Phase::Restricting) => {
                    let mut report: Enforcement =
                        serde_json::from_slice(&frame.payload).map_err(|e| {
                            fail(violation(ProtocolViolation::Malformed {
                                tag: Tag::Restricted,
                                detail: e.to_string(),
                            }))
                        })?;
                    match confirm(worker, init, &mut report) {
                        Ok(()) => enforcement = Some(report),
                        // A worker that is exiting (a failed dlopen exits at once, and its
                        // namespaces go before it can be reaped) cannot be looked at: the
                        // load failure it sent first says why. Listen briefly for it; any
                        // other frame, or none, and the unconfirmed report refuses the load.
                        // Either way this worker never serves.
                        Err(v) => {
                            unconfirmed = Some(v);
                            read_until = deadline.min(Instant::now() + EXITING_WORKER_GRACE);
                        }
                    }
                    phase = Phase::Loading;
                }
                (Tag::LoadFailed, _) => {
                    let failure: LoadFailure =
                        serde_json::from_slice(&frame.payload).map_err(|e| {
                            fail(violation(ProtocolViolation::Malformed {
                                tag: Tag::LoadFailed,
                                detail: e.to_string(),
                            }))
                        })?;
                    return Err(match failure.into_error(phase) {
                        Ok(e) => Refusal::Refused(e),
                        Err(v) => fail(violation(v)),
                    });
                }
                (Tag::Loaded, Phase::Loading) => {
                    let (version, metadata) = parse_loaded(&frame.payload, init.output_bytes)
                        .map_err(|v| fail(violation(v)))?;
                    crate::exec::thread::check_abi(expected, version, metadata)
                        .map_err(Refusal::Refused)?;
                    return match (enforcement, unconfirmed) {
                        (Some(e), _) => Ok(e),
                        (None, Some(v)) => Err(fail(violation(v))),
                        (None, None) => Err(fail(Ending::Closed)),
                    };
                }
                (tag, _) => {
                    return Err(fail(violation(ProtocolViolation::Unexpected {
                        tag,
                        waiting,
                    })));
                }
            }
        }
    }

    /// Runs one call in the worker.
    pub(crate) fn call(&self, input: &[u8]) -> Result<PluginResult, FaultError> {
        let deadline = Instant::now() + self.timeout;
        if self.poisoned.load(Ordering::Acquire) {
            return Err(FaultError::Poisoned);
        }
        let _turn = self.take_turn(deadline)?;
        let mut guard = self.lock_worker();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(FaultError::Poisoned);
        }
        let Some(worker) = guard.as_mut() else {
            return Err(FaultError::Poisoned);
        };
        match self.exchange(worker, input, deadline) {
            Ok(result) => result,
            Err(ending) => {
                self.poisoned.store(true, Ordering::Release);
                let Some(worker) = guard.take() else {
                    return Err(FaultError::Poisoned);
                };
                drop(guard);
                match ending {
                    Ending::Fault(f) => {
                        let _ = worker.end();
                        Err(f)
                    }
                    Ending::Closed => Err(worker.closed()),
                }
            }
        }
    }

    fn lock_worker(&self) -> MutexGuard<'_, Option<Worker>> {
        self.worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the turn until `deadline`. A caller that does not get it in time gets
    /// `Timeout` (its call never reached the worker, so the handle is not poisoned by it).
    fn take_turn(&self, deadline: Instant) -> Result<Turn<'_>, FaultError> {
        let mut busy = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *busy {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(FaultError::Timeout {
                    timeout_ms: duration_ms(self.timeout),
                });
            }
            busy = match self.turn_free.wait_timeout(busy, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        *busy = true;
        Ok(Turn(self))
    }

    /// One call: `Ok` with the call's own result (which may be a fault that leaves the
    /// worker serving), or `Err` with why the worker must end.
    fn exchange(
        &self,
        worker: &mut Worker,
        input: &[u8],
        deadline: Instant,
    ) -> Result<Result<PluginResult, FaultError>, Ending> {
        let timeout = || FaultError::Timeout {
            timeout_ms: duration_ms(self.timeout),
        };
        worker.seq = worker.seq.saturating_add(1);
        let seq = worker.seq;
        if let Err(e) = worker.send(deadline, Tag::Call, seq, input) {
            return Err(if timed_out(&e) {
                Ending::Fault(timeout())
            } else {
                Ending::Closed
            });
        }
        let frame = worker
            .read(deadline, self.output_cap)
            .map_err(|e| read_failure(e, self.timeout))?;
        if !matches!(frame.tag, Tag::Output | Tag::Fault) {
            return Err(violation(ProtocolViolation::Unexpected {
                tag: frame.tag,
                waiting: "waiting for a call's reply",
            }));
        }
        if frame.seq != seq {
            return Err(violation(ProtocolViolation::WrongSequence {
                expected: seq,
                got: frame.seq,
            }));
        }
        if frame.tag == Tag::Output {
            return Ok(decode_result(&frame.payload));
        }
        match serde_json::from_slice::<CallFault>(&frame.payload) {
            Ok(CallFault::NullResult) => Ok(Err(FaultError::NullResult {
                function: SYMBOL_EXECUTE,
            })),
            Ok(CallFault::OutputTooLarge { limit }) => Ok(Err(FaultError::OutputTooLarge {
                function: SYMBOL_EXECUTE,
                limit,
            })),
            Err(e) => Err(violation(ProtocolViolation::Malformed {
                tag: Tag::Fault,
                detail: e.to_string(),
            })),
        }
    }

    /// The worker's process id, while it runs.
    pub(crate) fn worker_pid(&self) -> Option<u32> {
        self.lock_worker().as_ref().map(|w| w.child.id())
    }
}

/// Holding the turn; releasing it wakes the next caller.
struct Turn<'a>(&'a ProcessExecutor);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut busy = self
            .0
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *busy = false;
        self.0.turn_free.notify_one();
    }
}

impl Drop for ProcessExecutor {
    fn drop(&mut self) {
        let worker = match self.worker.get_mut() {
            Ok(w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(w) = worker {
            let _ = w.end();
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Gives the worker `fds` at [`WORKER_MEMFD`], [`WORKER_CHANNEL`] and the grant numbers
/// after them. Returns the host's copies, which must stay open until the spawn returns.
///
/// The host is multi-threaded, so between `fork` and `exec` only async-signal-safe calls
/// are made (`fcntl`, `dup2`, `close_range`) and nothing is allocated.
#[allow(unsafe_code)]
fn place_fds(command: &mut Command, fds: Vec<OwnedFd>) -> io::Result<Vec<OwnedFd>> {
    use std::os::unix::process::CommandExt;
    // Copies at 3 or above: std puts /dev/null on 0-2 before the hook runs, which would
    // replace a source that happened to sit there (a host with its stdio closed).
    let mut held = Vec::with_capacity(fds.len());
    for fd in &fds {
        held.push(rustix::io::fcntl_dupfd_cloexec(fd, 3)?);
    }
    drop(fds);
    let sources: Vec<RawFd> = held.iter().map(AsRawFd::as_raw_fd).collect();
    let mut targets = Vec::with_capacity(sources.len());
    for i in 0..sources.len() {
        let i = RawFd::try_from(i).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        targets.push(
            WORKER_MEMFD
                .checked_add(i)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?,
        );
    }
    let end = targets.last().map_or(WORKER_MEMFD, |t| t.saturating_add(1));
    let mut temps: Vec<RawFd> = vec![-1; sources.len()];
    let hook = move || -> io::Result<()> {
        // Every source first moves above the targets (close-on-exec), so that placing one
        // target cannot overwrite a source not yet placed; `dup2` onto a different number
        // then clears close-on-exec on the target.
        for (src, tmp) in sources.iter().zip(temps.iter_mut()) {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor this process holds; no memory
            // is passed.
            let t = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, end) };
            if t < 0 {
                return Err(io::Error::last_os_error());
            }
            *tmp = t;
        }
        for (tmp, target) in temps.iter().zip(&targets) {
            // SAFETY: dup2 between two descriptor numbers; whatever the host had at
            // `target` (close-on-exec, like everything std opens) is replaced in the child.
            if unsafe { libc::dup2(*tmp, *target) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: close_range with integer arguments, flag CLOSE_RANGE_CLOEXEC: anything
        // above the targets that a library of the host opened without close-on-exec is
        // closed by exec. Failure (an old kernel) is harmless: the worker closes them too.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                end,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls on integers captured
    // before the fork and allocates nothing (see above).
    unsafe { command.pre_exec(hook) };
    Ok(held)
}

/// Reads one `Name:\tvalue` field of a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Confirms from outside what the worker reported about itself before `dlopen`.
fn confirm(
    worker: &Worker,
    init: &Init,
    report: &mut Enforcement,
) -> Result<(), ProtocolViolation> {
    let pid = worker.child.id();
    let unconfirmed =
        |what: &'static str, reported: String, observed: String| ProtocolViolation::Unconfirmed {
            what,
            reported,
            observed,
        };
    if report.isolation != Isolation::Process {
        return Err(unconfirmed(
            "isolation",
            report.isolation.to_string(),
            Isolation::Process.to_string(),
        ));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let seccomp = status_field(&status, "Seccomp");
    if report.seccomp != (seccomp == Some("2")) {
        return Err(unconfirmed(
            "seccomp",
            report.seccomp.to_string(),
            format!("Seccomp: {}", seccomp.unwrap_or("unreadable")),
        ));
    }
    let nnp = status_field(&status, "NoNewPrivs");
    if report.no_new_privs != (nnp == Some("1")) {
        return Err(unconfirmed(
            "no_new_privs",
            report.no_new_privs.to_string(),
            format!("NoNewPrivs: {}", nnp.unwrap_or("unreadable")),
        ));
    }
    let filters = |s: &str| status_field(s, "Seccomp_filters").and_then(|v| v.parse::<u64>().ok());
    if report.seccomp
        && let Some(inherited) = filters(&own)
    {
        let expected = inherited.saturating_add(WORKER_SECCOMP_FILTERS);
        if filters(&status) != Some(expected) {
            return Err(unconfirmed(
                "seccomp_filters",
                expected.to_string(),
                format!("{:?}", filters(&status)),
            ));
        }
    }
    for name in &report.namespaces {
        if name != "user" && name != "net" {
            return Err(unconfirmed("namespaces", name.clone(), "unknown".into()));
        }
    }
    for ns in ["user", "net"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"));
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"));
        let (Ok(theirs), Ok(ours)) = (theirs, ours) else {
            return Err(unconfirmed(
                "namespaces",
                format!("{:?}", report.namespaces),
                format!("/proc/{pid}/ns/{ns} unreadable"),
            ));
        };
        let entered = report.namespaces.iter().any(|n| n == ns);
        if entered != (theirs != ours) {
            return Err(unconfirmed(
                "namespaces",
                format!("{ns} entered: {entered}"),
                format!("{} vs the host's {}", theirs.display(), ours.display()),
            ));
        }
    }
    let tasks = report.tasks;
    let confirmed = match tasks {
        TaskBound::Cgroup { max } => {
            max == init.threads && worker.cgroup.as_ref().is_some_and(|c| c.holds(pid))
        }
        TaskBound::UserNamespaceRlimit { max } => {
            !init.cgroup
                && max == init.threads
                && report.namespaces.iter().any(|n| n == "user")
                && max_processes(pid) == Some(max)
        }
        TaskBound::NoThreads => !init.cgroup,
        TaskBound::Unbounded => false,
    };
    if !confirmed {
        return Err(unconfirmed(
            "tasks",
            format!("{tasks:?}"),
            format!(
                "cgroup: {}, Max processes: {:?}",
                init.cgroup,
                max_processes(pid)
            ),
        ));
    }
    Ok(())
}

/// The soft `Max processes` limit in `/proc/<pid>/limits`.
fn max_processes(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max processes"))?;
    line.strip_prefix("Max processes")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Parses a `Loaded` frame: what the plugin's version and metadata functions returned.
fn parse_loaded(
    payload: &[u8],
    output_bytes: usize,
) -> Result<(u32, Result<Vec<u8>, FaultError>), ProtocolViolation> {
    use crate::base::ffi::SYMBOL_METADATA;
    let malformed = |detail: &str| ProtocolViolation::Malformed {
        tag: Tag::Loaded,
        detail: detail.to_owned(),
    };
    let (version, rest) = payload
        .split_first_chunk::<4>()
        .ok_or_else(|| malformed("no version"))?;
    let (status, bytes) = rest
        .split_first()
        .ok_or_else(|| malformed("no metadata status"))?;
    let version = u32::from_le_bytes(*version);
    let metadata = match *status {
        METADATA_BYTES if bytes.len() <= output_bytes => Ok(bytes.to_vec()),
        METADATA_BYTES => return Err(malformed("metadata over the output limit")),
        METADATA_NULL if bytes.is_empty() => Err(FaultError::NullResult {
            function: SYMBOL_METADATA,
        }),
        METADATA_TOO_LARGE if bytes.is_empty() => Err(FaultError::OutputTooLarge {
            function: SYMBOL_METADATA,
            limit: output_bytes,
        }),
        _ => return Err(malformed("bad metadata status")),
    };
    Ok((version, metadata))
}

/// What the host makes of one frame from a worker, as in [`ProcessExecutor`]: the frame
/// decoder, then the strict parse of its payload. Shared by the `ipc_frame` fuzz target and
/// the corpus replay; a hostile worker controls every byte of it.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_host_frame(bytes: &[u8]) {
    let Ok(frame) = crate::base::protocol::decode_frame(bytes, CONTROL_CAP) else {
        return;
    };
    match frame.tag {
        Tag::Restricted => {
            let _ = serde_json::from_slice::<Enforcement>(&frame.payload);
        }
        Tag::LoadFailed => {
            if let Ok(failure) = serde_json::from_slice::<LoadFailure>(&frame.payload) {
                let _ = failure.into_error(Phase::Loading).map(|e| e.to_string());
            }
        }
        Tag::Fault => {
            let _ = serde_json::from_slice::<CallFault>(&frame.payload);
        }
        Tag::Output => {
            let _ = decode_result(&frame.payload);
        }
        Tag::Loaded => {
            if let Ok((version, metadata)) = parse_loaded(&frame.payload, CONTROL_CAP) {
                let expected = PluginMetadata {
                    name: "fuzz".into(),
                    description: String::new(),
                    version: "1.0.0".into(),
                    author: None,
                    abi_version: 1,
                    when_to_use: None,
                    when_not_to_use: None,
                    allowed_tools: None,
                    thread_safe: false,
                };
                let _ = crate::exec::thread::check_abi(&expected, version, metadata);
            }
        }
        Tag::Init | Tag::Call => {}
    }
}

// ---------------------------------------------------------------------------------------
// The worker's side.

/// Entry point of `skillgate-worker`. Not for hosts to call.
#[doc(hidden)]
pub fn worker_main() -> ExitCode {
    match run_worker() {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

/// Takes the descriptors the host placed (memfd, channel, `grants` grant descriptors) and
/// closes every other one above 2 before anything can reuse a number.
#[allow(unsafe_code)]
fn take_fds(grants: usize) -> Result<(OwnedFd, OwnedFd, Vec<OwnedFd>), u8> {
    use std::os::fd::FromRawFd;
    let count = RawFd::try_from(grants).map_err(|_| 10u8)?;
    let end = WORKER_FIRST_GRANT.checked_add(count).ok_or(10u8)?;
    let end = u32::try_from(end).map_err(|_| 10u8)?;
    // SAFETY: close_range with integer arguments: every descriptor from `end` up is
    // closed. No Rust object owns any of them (the worker has opened nothing yet).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, end, u32::MAX, 0u32) };
    if rc != 0 {
        return Err(10);
    }
    let mut taken = Vec::new();
    for fd in WORKER_MEMFD..WORKER_FIRST_GRANT.saturating_add(count) {
        if rustix::io::fcntl_getfd(
            // SAFETY: a borrow for the duration of the check; `fd` is an integer the kernel
            // answers EBADF for if it is not open.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )
        .is_err()
        {
            return Err(10);
        }
        // SAFETY: the host placed this descriptor here for the worker (see `place_fds`),
        // it is open (checked above), and it is taken exactly once.
        taken.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut taken = taken.into_iter();
    let (Some(memfd), Some(channel)) = (taken.next(), taken.next()) else {
        return Err(10);
    };
    Ok((memfd, channel, taken.collect()))
}

/// Puts the default action back for SIGSEGV and SIGBUS. Rust's runtime installs handlers for
/// them (stack-overflow detection) that, for any other fault, restore the default with
/// `rt_sigaction` and return to fault again; the sandbox denies `rt_sigaction`, so the
/// worker would spin forever on a plugin's segfault instead of dying with SIGSEGV.
#[allow(unsafe_code)]
fn default_fault_signals() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: installing SIG_DFL for a signal is async-signal-safe and touches no
        // Rust state; the worker is still single-threaded here.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

fn set_limit(r: rustix::process::Resource, v: u64) -> io::Result<()> {
    rustix::process::setrlimit(
        r,
        rustix::process::Rlimit {
            current: Some(v),
            maximum: Some(v),
        },
    )
    .map_err(io::Error::from)
}

fn set_limits(init: &Init) -> io::Result<()> {
    use rustix::process::Resource;
    set_limit(Resource::As, init.memory_bytes)?;
    set_limit(Resource::Cpu, init.cpu_seconds)?;
    set_limit(Resource::Nofile, 64)?;
    set_limit(Resource::Fsize, init.file_bytes)?;
    set_limit(Resource::Core, 0)?;
    Ok(())
}

/// New user and network namespaces where the kernel allows them (a network namespace has
/// only a down loopback, so it is skipped when the plugin is granted TCP).
fn try_namespaces(network: bool) -> Vec<String> {
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    let mut got = Vec::new();
    let mut try_one = |flag: UnshareFlags, name: &str| {
        #[allow(unsafe_code)]
        // SAFETY: the worker is single-threaded here and holds no state that depends on
        // its namespaces (no open sockets; files are reached by descriptor).
        let ok = unsafe { unshare_unsafe(flag) }.is_ok();
        if ok {
            got.push(name.to_owned());
        }
    };
    try_one(UnshareFlags::NEWUSER, "user");
    if !network {
        try_one(UnshareFlags::NEWNET, "net");
    }
    got
}

/// Bounds the worker's tasks (see the module docs). `root`: the worker's real uid was 0
/// before it entered a user namespace, so `RLIMIT_NPROC` would not be checked.
fn bound_tasks(
    init: &Init,
    plan: &mut SandboxPlan,
    namespaces: &[String],
    root: bool,
) -> io::Result<TaskBound> {
    if init.cgroup {
        return Ok(TaskBound::Cgroup { max: init.threads });
    }
    if !root && namespaces.iter().any(|n| n == "user") {
        // Set after entering the namespace: its count starts at this one task, and the
        // parent's limit recorded when the namespace was made stays the host's.
        set_limit(rustix::process::Resource::Nproc, init.threads)?;
        return Ok(TaskBound::UserNamespaceRlimit { max: init.threads });
    }
    plan.forbid_threads();
    Ok(TaskBound::NoThreads)
}

fn run_worker() -> Result<(), u8> {
    let grants: usize = std::env::args_os()
        .nth(1)
        .and_then(|a| a.to_str()?.parse().ok())
        .ok_or(10u8)?;
    let (memfd, channel, grant_fds) = take_fds(grants)?;
    let mut channel = BufReader::with_capacity(CHANNEL_BUFFER, std::fs::File::from(channel));
    let _ = rustix::process::setsid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|_| 11u8)?;
    let frame = read_frame(&mut channel, CONTROL_CAP).map_err(|_| 12u8)?;
    let init: Init = match (frame.tag, serde_json::from_slice::<Init>(&frame.payload)) {
        (Tag::Init, Ok(init)) if init.version == PROTOCOL_VERSION && init.grants == grants => init,
        _ => return Err(13),
    };
    // The host may have died before the death signal was armed.
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get().unsigned_abs())
        != Some(init.host_pid)
    {
        return Err(14);
    }
    let fail = |channel: &mut BufReader<std::fs::File>, failure: LoadFailure| -> u8 {
        let _ = serde_json::to_vec(&failure)
            .map(|b| write_frame(channel.get_mut(), Tag::LoadFailed, 0, &b));
        20
    };
    let setup = |detail: String| LoadFailure::Setup { detail };
    default_fault_signals();
    let root = rustix::process::getuid().is_root();
    let namespaces = try_namespaces(!init.plan.connect_tcp().is_empty());
    let mut plan = init.plan.clone();
    let tasks = match bound_tasks(&init, &mut plan, &namespaces, root) {
        Ok(t) => t,
        Err(e) => return Err(fail(&mut channel, setup(format!("RLIMIT_NPROC: {e}")))),
    };
    if let Err(e) = set_limits(&init) {
        return Err(fail(&mut channel, setup(format!("setrlimit: {e}"))));
    }
    let library = match SealedFile::from_inherited(memfd) {
        Ok(l) => l,
        Err(e) => return Err(fail(&mut channel, setup(error_chain(&e)))),
    };
    if let Err(e) = plan.adopt_grant_fds(grant_fds) {
        return Err(fail(&mut channel, LoadFailure::from_error(&e.into())));
    }
    // The library is opened on a short-lived loader thread (no writes, no threads) while
    // this thread, which then serves the calls, can never map anything executable
    // (`sandbox::load_sandboxed`). The report is sent from the loader thread once both are
    // restricted and before `dlopen`: it is fixed before any plugin code runs, and the host
    // confirms it from outside.
    let report_failed = std::sync::atomic::AtomicBool::new(false);
    let loaded = crate::sandbox::load_sandboxed(&plan, Isolation::Process, |enforcement| {
        let mut enforcement = enforcement.clone();
        enforcement.namespaces = namespaces;
        enforcement.tasks = tasks;
        let sent = serde_json::to_vec(&enforcement)
            .map_err(io::Error::other)
            .and_then(|report| write_frame(channel.get_mut(), Tag::Restricted, 0, &report));
        if let Err(e) = sent {
            report_failed.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(LoadError::Report(e).into());
        }
        crate::pipeline::load::dlopen_sealed(library).map_err(Error::from)
    });
    let symbols = match loaded {
        Ok((symbols, _)) => symbols,
        Err(_) if report_failed.load(std::sync::atomic::Ordering::Relaxed) => return Err(22),
        Err(e) => return Err(fail(&mut channel, LoadFailure::from_error(&e))),
    };
    // From here on the plugin could have written anything on the channel: the worker
    // relays what the plugin returns and the host checks it.
    let mut loaded = symbols.call_version().to_le_bytes().to_vec();
    match symbols.call_metadata(init.output_bytes) {
        Ok(bytes) => {
            loaded.push(METADATA_BYTES);
            loaded.extend_from_slice(&bytes);
        }
        Err(FaultError::OutputTooLarge { .. }) => loaded.push(METADATA_TOO_LARGE),
        Err(_) => loaded.push(METADATA_NULL),
    }
    write_frame(channel.get_mut(), Tag::Loaded, 0, &loaded).map_err(|_| 22u8)?;
    serve(&mut channel, &symbols, init.output_bytes)
}

/// Serves calls until the host closes the channel.
fn serve(
    channel: &mut BufReader<std::fs::File>,
    symbols: &crate::pipeline::load::PluginSymbols,
    output_bytes: usize,
) -> Result<(), u8> {
    let input_cap = CONTROL_CAP.saturating_mul(64);
    loop {
        let frame = match read_frame(channel, input_cap) {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(_) => return Err(23),
        };
        if frame.tag != Tag::Call {
            return Err(24);
        }
        let mut input = frame.payload;
        input.push(0);
        let Ok(input) = std::ffi::CString::from_vec_with_nul(input) else {
            return Err(25);
        };
        let seq = frame.seq;
        let sent = match symbols.call_execute(&input, output_bytes) {
            Ok(bytes) => write_frame(channel.get_mut(), Tag::Output, seq, &bytes),
            Err(FaultError::OutputTooLarge { limit, .. }) => {
                serde_json::to_vec(&CallFault::OutputTooLarge { limit })
                    .map_err(io::Error::other)
                    .and_then(|b| write_frame(channel.get_mut(), Tag::Fault, seq, &b))
            }
            Err(_) => serde_json::to_vec(&CallFault::NullResult)
                .map_err(io::Error::other)
                .and_then(|b| write_frame(channel.get_mut(), Tag::Fault, seq, &b)),
        };
        if sent.is_err() {
            return Err(26);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn loaded(version: u32, status: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = version.to_le_bytes().to_vec();
        v.push(status);
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn loaded_relays_parse_strictly() {
        let (v, m) = parse_loaded(&loaded(99, METADATA_BYTES, b"{}"), 10).unwrap();
        assert_eq!((v, m.unwrap()), (99, b"{}".to_vec()));
        assert!(matches!(
            parse_loaded(&loaded(1, METADATA_NULL, b""), 10).unwrap().1,
            Err(FaultError::NullResult { .. })
        ));
        assert!(matches!(
            parse_loaded(&loaded(1, METADATA_TOO_LARGE, b""), 10)
                .unwrap()
                .1,
            Err(FaultError::OutputTooLarge { limit: 10, .. })
        ));
        for bad in [
            loaded(1, METADATA_BYTES, &[b'x'; 11]),
            loaded(1, METADATA_NULL, b"x"),
            loaded(1, METADATA_TOO_LARGE, b"x"),
            loaded(1, 3, b""),
            vec![1, 0, 0, 0],
            vec![1, 0],
            vec![],
        ] {
            assert!(
                matches!(
                    parse_loaded(&bad, 10),
                    Err(ProtocolViolation::Malformed {
                        tag: Tag::Loaded,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn load_failures_are_accepted_only_in_their_phase() {
        let setup = || LoadFailure::Setup { detail: "x".into() };
        let dlopen = || LoadFailure::Dlopen { detail: "x".into() };
        let sandbox = || LoadFailure::Sandbox { detail: "x".into() };
        // The worker's text is carried as it came.
        assert!(matches!(
            setup().into_error(Phase::Restricting),
            Ok(Error::Load(LoadError::Worker { detail })) if detail == "x"
        ));
        assert!(matches!(
            sandbox().into_error(Phase::Restricting),
            Ok(Error::Sandbox(SandboxError::Worker { detail })) if detail == "x"
        ));
        assert!(matches!(
            setup().into_error(Phase::Loading),
            Err(ProtocolViolation::Unexpected {
                tag: Tag::LoadFailed,
                ..
            })
        ));
        assert!(matches!(
            dlopen().into_error(Phase::Loading),
            Ok(Error::Load(LoadError::Dlopen { detail })) if detail == "x"
        ));
        // The loader's text crosses the channel unchanged, as the same variant.
        let words = "/proc/self/fd/3: undefined symbol: f";
        let sent = LoadFailure::from_error(&Error::Load(LoadError::Dlopen {
            detail: words.to_owned(),
        }));
        assert!(matches!(
            sent.into_error(Phase::Loading),
            Ok(Error::Load(LoadError::Dlopen { detail })) if detail == words
        ));
        assert!(matches!(
            dlopen().into_error(Phase::Restricting),
            Err(ProtocolViolation::Unexpected { .. })
        ));
    }

    #[test]
    fn status_fields_are_read_by_name() {
        let status = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\nNoNewPrivs:\t1\n";
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "Seccomp_filters"), Some("3"));
        assert_eq!(status_field(status, "NoNewPrivs"), Some("1"));
        assert_eq!(status_field(status, "Missing"), None);
    }
}
