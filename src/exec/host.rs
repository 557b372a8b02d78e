//! Worker-process isolation: each plugin runs in its own process, which restricts itself
//! before `dlopen` and then serves calls one at a time over a socket.
//!
//! A thread is not a security boundary; a process nearly is. But once `dlopen` starts, every
//! byte the worker sends is plugin code's to choose: a constructor can write frames on the
//! channel, close or `dup2` over descriptors, or never return. So:
//!
//! - **Descriptors.** The worker starts with an empty environment, working directory `/`,
//!   fd 0 on `/dev/null`, fds 1 and 2 on pipes only the host reads (a plugin that prints
//!   writes to its log, never to the channel: see [`super::log`]), the sealed memfd at fd 3,
//!   the channel at fd 4, the call region at fd 5 ([`super::ring`]) and the plan's grant
//!   descriptors from fd 6 on, and nothing else: the host places them in the child before
//!   `exec` and the worker closes every higher descriptor in its first lines.
//! - **Calls.** A call's request and reply travel through the shared call region
//!   ([`super::ring`], hostile ground: every field the worker writes is read once, checked
//!   and copied out before it is parsed); the socket carries the handshake and payloads too
//!   large for the region, and any frame the host did not ask for during a call is a
//!   violation ([`ProcessExecutor::socket_frame_during_call`]).
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
//! the worker by itself.** A host that wants the plugin back calls `LoadedPlugin::restart`
//! (new workers from the same sealed copy, see `super::restart`) or loads it again, which
//! re-verifies it.
//!
//! One concept, one file: starting a worker (cold, or a pooled one handed its descriptors),
//! the handshake, the calls and ending it all act on the same private `Worker` state and
//! the same fault rules, which splitting would have to expose to a sibling module.

use std::io::{self, BufReader};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::base::ffi::{FaultError, PluginMetadata, PluginResult, decode_result};
use crate::base::protocol::{
    COUNTED_HEADER, FRAME_OVERHEAD, Frame, FrameError, PROTOCOL_VERSION, PayloadError,
    ProtocolViolation, Tag, read_frame,
};
use crate::base::sealed::SealedFile;
use crate::base::settings::Limits;
use crate::pipeline::load::LoadError;
use crate::pipeline::manifest::Manifest;
use crate::sandbox::{Enforcement, SandboxPlan};

use super::ExecError;
use super::cgroup::Cgroup;
use super::channel::{Channel, timed_out};
use super::confirm::confirm;
use super::init::{
    CHANNEL_BUFFER, CONTROL_CAP, CallFault, HANDOVER_MAX_FDS, Init, LOADED_HEADER, LoadFailure,
    Phase, parse_loaded,
};
use super::log::{PluginLog, PreparedLog};
use super::pool::{Pool, Pooled};
use super::ring::{FAULT_CAP, HostRing, Posted, Reply};
use super::spawner::{REAP_BOUND, place_fds, reap_within};
use super::tools::{self, CallExtras, CallState, ToolEnv};
use std::sync::Arc;

/// How long a worker whose channel closed may take to exit on its own before it is
/// treated as having closed its channel deliberately (a process closes its descriptors
/// while exiting, just before it becomes reapable): at most this, and no longer than what
/// is left of the call's (or the load's) deadline, but at least [`EXIT_GRACE_FLOOR`].
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// The shortest such wait, for a channel that closed at or after the deadline: an exiting
/// worker is reapable within microseconds of closing it, so its status is still reported.
const EXIT_GRACE_FLOOR: Duration = Duration::from_millis(50);
/// How long the host still listens, after a report it could not confirm, for the load
/// failure an exiting worker sent before it began to exit.
const EXITING_WORKER_GRACE: Duration = Duration::from_millis(500);

/// The first message a worker reads, cold or pooled: the plan, the grant count, the limits
/// and the signed library's digest and size, which the worker re-checks before `dlopen`.
fn init_message(
    plan: SandboxPlan,
    grants: usize,
    limits: &Limits,
    library_sha256: [u8; 32],
    library_size: u64,
) -> Init {
    Init {
        version: PROTOCOL_VERSION,
        host_pid: std::process::id(),
        plan,
        grants,
        output_bytes: limits.output_bytes,
        memory_bytes: limits.memory_bytes,
        cpu_seconds: limits.cpu_seconds,
        file_bytes: limits.file_bytes,
        threads: limits.threads,
        cgroup: false,
        library_sha256,
        library_size,
        tool_request_bytes: limits.tool_request_bytes,
        tool_reply_bytes: limits.tool_reply_bytes,
        progress_bytes: limits.progress_bytes,
        ring: super::ring::LAYOUT_VERSION,
    }
}

// ---------------------------------------------------------------------------------------
// The host's side.

struct Worker {
    child: Child,
    channel: BufReader<Channel>,
    /// The shared call region (the worker has it at fd 5).
    ring: HostRing,
    cgroup: Option<Cgroup>,
    /// The reader of its stdout and stderr; ended after the worker is. Boxed: it is not on
    /// the call path, and the executor stays small.
    log: Option<Box<PluginLog>>,
    /// Sequence number of the last call sent.
    seq: u64,
    /// Whether any frame came from it yet: a pooled worker whose channel closed before its
    /// first frame ran no plugin code, and the load may take another.
    heard: bool,
}
/// Handle to a plugin's worker process. Calls are serialized: one at a time holds the turn.
pub(crate) struct ProcessExecutor {
    /// Whether a call holds the turn; callers wait for it on `turn_free`, up to their
    /// own deadline.
    busy: Mutex<bool>,
    turn_free: Condvar,
    /// Callers waiting on `turn_free`, changed only under `busy`: the turn is handed on
    /// with a wake-up only when someone waits (a condition variable's notify is a
    /// `futex` call even with no waiter, and calls are mostly uncontended).
    turn_waiting: AtomicUsize,
    /// The worker; only the caller holding the turn locks it (or `Drop`).
    worker: Mutex<Option<Worker>>,
    timeout: Duration,
    /// Largest reply frame on the socket, as a frame's length field counts it (the
    /// output limit, the tag and the sequence number).
    output_cap: usize,
    /// The output limit, for a reply in the call region.
    output_bytes: usize,
    poisoned: AtomicBool,
    /// What the plugin's host tool requests are judged by (`tools::answer`).
    tools: Arc<ToolEnv>,
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
        // After the reap: what the worker wrote last is drained, within a bound.
        drop(self.log.take());
        status
    }

    /// The channel closed: the worker died (report how), or it closed its channel and
    /// lives on (a violation; it is ended). Waits for its exit no longer than
    /// [`EXIT_GRACE`] and what is left until `deadline` (at least [`EXIT_GRACE_FLOOR`]): a
    /// plugin that closes its channel and lives on does not hold the call two seconds past
    /// a shorter deadline.
    fn closed(mut self, deadline: Instant) -> FaultError {
        let grace = EXIT_GRACE
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(EXIT_GRACE_FLOOR);
        if let Some(status) = reap_within(&mut self.child, grace) {
            let fault = crashed(Some(status));
            let _ = self.end();
            return fault;
        }
        let _ = self.end();
        FaultError::Protocol(ProtocolViolation::ChannelClosed)
    }

    fn read(&mut self, deadline: Instant, cap: usize) -> Result<Frame, FrameError> {
        self.channel.get_mut().deadline = deadline;
        let frame = read_frame(&mut self.channel, cap);
        self.heard |= frame.is_ok();
        frame
    }

    /// The socket's state, without waiting: bytes already buffered or readable, hung up
    /// (the worker died or closed it), or quiet.
    fn socket(&self) -> Socket {
        use rustix::event::{PollFd, PollFlags, poll};
        if !self.channel.buffer().is_empty() {
            return Socket::Readable;
        }
        let mut fds = [PollFd::new(self.channel.get_ref().stream(), PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => Socket::Quiet,
            Ok(_) => {
                let revents = fds.first().map_or(PollFlags::HUP, PollFd::revents);
                if revents.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                    Socket::Hung
                } else {
                    Socket::Readable
                }
            }
            Err(rustix::io::Errno::INTR) => Socket::Quiet,
            Err(_) => Socket::Hung,
        }
    }

    fn send(&mut self, deadline: Instant, tag: Tag, seq: u64, payload: &[u8]) -> io::Result<()> {
        let channel = self.channel.get_mut();
        channel.deadline = deadline;
        channel.send(tag, seq, payload)
    }
}

/// What the host finds on a worker's socket between two slices of waiting for a reply.
enum Socket {
    Quiet,
    Readable,
    Hung,
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
    Refused(ExecError),
    /// The worker must be ended for this reason.
    Ended(Ending),
}

/// A pooled load's plugin log, its pipes already handed over, its reader not started yet
/// ([`ProcessExecutor::start_pooled`]); `worker_path` names the worker in the error if the
/// reader cannot start.
struct PendingLog<'a> {
    log: PreparedLog,
    worker_path: &'a Path,
}

/// How a load on a pooled worker went.
enum Warm {
    /// The load's outcome, as a cold start's would be.
    Started(Box<Result<(ProcessExecutor, Enforcement), ExecError>>),
    /// The worker was gone (or its cgroup could not be given the plan's bound) before it
    /// heard of the plugin: take another, or start cold.
    DiedWaiting,
}

/// Sends a pooled worker its descriptors: one byte carrying them all (`SCM_RIGHTS`). The
/// channel of a waiting worker is empty, so the byte never waits for room.
fn hand_over(channel: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space =
        [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(HANDOVER_MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > HANDOVER_MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let sent = rustix::net::sendmsg(
        channel,
        &[io::IoSlice::new(&[0])],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    if sent == 1 {
        Ok(())
    } else {
        Err(io::ErrorKind::WriteZero.into())
    }
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
        pool: Option<&Pool>,
    ) -> Result<(Self, Enforcement), ExecError> {
        Self::start_on(library.as_fd(), manifest, limits, plan, worker_path, pool)
    }

    /// [`ProcessExecutor::start`] with any descriptor as the library: the worker, not this
    /// function, decides whether it is the sealed, signed library (the hostile tests hand
    /// it others).
    fn start_on(
        library: BorrowedFd<'_>,
        manifest: &Manifest,
        limits: &Limits,
        plan: SandboxPlan,
        worker_path: &Path,
        pool: Option<&Pool>,
    ) -> Result<(Self, Enforcement), ExecError> {
        let entry = manifest.library_entry().ok_or(LoadError::NoLibraryEntry)?;
        let (library_sha256, library_size) = (entry.sha256, entry.size);
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let deadline = Instant::now() + timeout;
        // Warm first: each worker taken is handed this plugin or ended, never returned. A
        // pooled worker is in its own network namespace already: a plan granting TCP
        // starts cold.
        let fits = plan.grant_fds().len().saturating_add(4) <= HANDOVER_MAX_FDS
            && plan.connect_tcp().is_empty();
        while let Some(pooled) = pool.filter(|_| fits).and_then(Pool::take) {
            crate::stamp!("host: pool take");
            let warm = Self::start_pooled(
                pooled,
                library,
                manifest,
                limits,
                plan.clone(),
                worker_path,
                deadline,
            );
            match warm {
                Warm::Started(result) => return *result,
                Warm::DiedWaiting => continue,
            }
        }
        let spawn_err = |source: io::Error| {
            ExecError::from(LoadError::WorkerStart {
                path: worker_path.to_path_buf(),
                source,
            })
        };
        let (host_end, worker_end) = UnixStream::pair().map_err(spawn_err)?;
        let ring = HostRing::create().map_err(spawn_err)?;
        let mut given: Vec<OwnedFd> = Vec::new();
        given.push(library.try_clone_to_owned().map_err(spawn_err)?);
        given.push(OwnedFd::from(worker_end));
        given.push(ring.fd().try_clone_to_owned().map_err(spawn_err)?);
        let grants = plan.grant_fds();
        let grant_count = grants.len();
        for fd in grants {
            given.push(fd.try_clone_to_owned().map_err(spawn_err)?);
        }
        // The log reader first, so output from the worker's first instruction on is drained;
        // the write ends go into the command only, and are closed in the host once it ran.
        let (log, pipes) =
            PluginLog::start(manifest.name(), limits.log_bytes).map_err(spawn_err)?;
        let mut command = Command::new(worker_path);
        command
            .arg(super::worker::WORKER_ARG)
            .arg(grant_count.to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(pipes.stdout))
            .stderr(Stdio::from(pipes.stderr));
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
        ring.set_worker_pid(child.id());
        let worker = Worker {
            child,
            channel: BufReader::with_capacity(CHANNEL_BUFFER, Channel::new(host_end)),
            ring,
            cgroup,
            log: Some(Box::new(log)),
            seq: 0,
            heard: false,
        };
        let init = init_message(plan, grant_count, limits, library_sha256, library_size);
        Self::finish(worker, init, manifest, limits, deadline, false, None).map_err(|refused| {
            let (e, w) = *refused;
            match e {
                Refusal::Ended(Ending::Closed) => w.closed(deadline).into(),
                other => Self::refused(other, w),
            }
        })
    }

    /// Ends `worker` for a refusal other than a closed channel; the error to return.
    fn refused(refusal: Refusal, worker: Worker) -> ExecError {
        let _ = worker.end();
        match refusal {
            Refusal::Refused(e) => e,
            Refusal::Ended(Ending::Fault(f)) => f.into(),
            Refusal::Ended(Ending::Closed) => {
                FaultError::Protocol(ProtocolViolation::ChannelClosed).into()
            }
        }
    }

    /// Puts the started worker in its cgroup (before it is told anything, so before any
    /// plugin code can run; `joined`: a pooled worker is in it already), sends `Init`,
    /// starts `log`'s reader if it is not running yet (a pooled load's: see
    /// [`Self::start_pooled`]) and waits for the loaded plugin. On a refusal the worker is
    /// given back, still running, with why.
    fn finish(
        mut worker: Worker,
        mut init: Init,
        manifest: &Manifest,
        limits: &Limits,
        deadline: Instant,
        joined: bool,
        log: Option<PendingLog<'_>>,
    ) -> Result<(Self, Enforcement), Box<(Refusal, Worker)>> {
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let pid = worker.child.id();
        if !joined
            && let Some(c) = &worker.cgroup
            && c.adopt(pid).is_err()
            && let Some(c) = worker.cgroup.take()
        {
            c.remove();
        }
        init.cgroup = worker.cgroup.is_some();
        crate::stamp!("host: cgroup joined");
        match Self::handshake(
            &mut worker,
            &init,
            manifest.metadata(),
            deadline,
            timeout,
            log,
        ) {
            Ok(enforcement) => {
                let executor = ProcessExecutor {
                    busy: Mutex::new(false),
                    turn_free: Condvar::new(),
                    turn_waiting: AtomicUsize::new(0),
                    worker: Mutex::new(Some(worker)),
                    timeout,
                    output_cap: limits.output_bytes.saturating_add(COUNTED_HEADER),
                    output_bytes: limits.output_bytes,
                    poisoned: AtomicBool::new(false),
                    tools: Arc::new(ToolEnv::none()),
                };
                Ok((executor, enforcement))
            }
            Err(refusal) => Err(Box::new((refusal, worker))),
        }
    }

    /// Hands a pooled worker its descriptors (one `SCM_RIGHTS` message: the log pipes'
    /// write ends, the library, the grants) and then `Init`, as [`Self::finish`] does for a
    /// cold one. A worker whose channel closed before its first frame ran no plugin code:
    /// it is reaped and the load takes another ([`Warm::DiedWaiting`]). The call region
    /// made for it while it waited is used; its cgroup (joined while it waited) gets the
    /// plan's `pids.max` before the hand-over, so before it can run anything of the
    /// plugin's. `Init` follows the hand-over at once, and the log's reader is started
    /// after `Init` (in [`Self::handshake`]), while the worker wakes up and loads: started
    /// between the two, it kept a pooled load's critical path about 65 µs longer (measured
    /// with `benches/load_steps.rs`). Whatever the worker writes before the reader runs
    /// waits in the pipes.
    fn start_pooled(
        mut pooled: Pooled,
        library: BorrowedFd<'_>,
        manifest: &Manifest,
        limits: &Limits,
        plan: SandboxPlan,
        worker_path: &Path,
        deadline: Instant,
    ) -> Warm {
        let failed = |source: io::Error| {
            Warm::Started(Box::new(Err(ExecError::from(LoadError::WorkerStart {
                path: worker_path.to_path_buf(),
                source,
            }))))
        };
        let Some(entry) = manifest.library_entry() else {
            pooled.end();
            return Warm::Started(Box::new(Err(LoadError::NoLibraryEntry.into())));
        };
        // The pipes now, their reader once the worker has them (below).
        let (prepared_log, pipes) = match PluginLog::prepare(manifest.name(), limits.log_bytes) {
            Ok(l) => l,
            Err(e) => {
                pooled.end();
                return failed(e);
            }
        };
        crate::stamp!("host: log pipes");
        let ring = match pooled.ring.take().map_or_else(HostRing::create, Ok) {
            Ok(r) => r,
            Err(e) => {
                pooled.end();
                return failed(e);
            }
        };
        crate::stamp!("host: ring memfd");
        if let Some(c) = &pooled.cgroup
            && c.set_max(limits.threads).is_err()
        {
            pooled.end();
            return Warm::DiedWaiting;
        }
        crate::stamp!("host: cgroup bound set");
        let grants = plan.grant_fds();
        let grant_count = grants.len();
        let mut fds: Vec<BorrowedFd<'_>> = vec![
            pipes.stdout.as_fd(),
            pipes.stderr.as_fd(),
            library,
            ring.fd(),
        ];
        fds.extend(grants.iter().map(|g| g.as_fd()));
        let sent = hand_over(&pooled.channel, &fds);
        drop(fds);
        drop(pipes);
        crate::stamp!("host: hand-over sent");
        let Pooled {
            child,
            channel,
            cgroup,
            ring: _,
        } = pooled;
        ring.set_worker_pid(child.id());
        let joined = cgroup.is_some();
        let worker = Worker {
            child,
            channel: BufReader::with_capacity(CHANNEL_BUFFER, Channel::new(channel)),
            ring,
            cgroup,
            log: None,
            seq: 0,
            heard: false,
        };
        if let Err(e) = sent {
            let died =
                e.kind() == io::ErrorKind::BrokenPipe || e.kind() == io::ErrorKind::ConnectionReset;
            let _ = worker.end();
            return if died { Warm::DiedWaiting } else { failed(e) };
        }
        let init = init_message(plan, grant_count, limits, entry.sha256, entry.size);
        let log = PendingLog {
            log: prepared_log,
            worker_path,
        };
        let refused =
            match Self::finish(worker, init, manifest, limits, deadline, joined, Some(log)) {
                Ok(started) => return Warm::Started(Box::new(Ok(started))),
                Err(refused) => *refused,
            };
        match refused {
            (Refusal::Ended(Ending::Closed), w) if !w.heard => {
                let _ = w.closed(deadline);
                Warm::DiedWaiting
            }
            (Refusal::Ended(Ending::Closed), w) => {
                Warm::Started(Box::new(Err(w.closed(deadline).into())))
            }
            (other, w) => Warm::Started(Box::new(Err(Self::refused(other, w)))),
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
        log: Option<PendingLog<'_>>,
    ) -> Result<Enforcement, Refusal> {
        let fail = Refusal::Ended;
        let init_bytes = serde_json::to_vec(init)
            .map_err(|e| Refusal::Refused(crate::base::ffi::InputError::json(e).into()))?;
        if let Err(e) = worker.send(deadline, Tag::Init, 0, &init_bytes) {
            return Err(fail(if timed_out(&e) {
                Ending::Fault(FaultError::Timeout {
                    timeout_ms: duration_ms(timeout),
                })
            } else {
                Ending::Closed
            }));
        }
        crate::stamp!("host: init sent");
        if let Some(PendingLog { log, worker_path }) = log {
            let log = log.start().map_err(|source| {
                Refusal::Refused(
                    LoadError::WorkerStart {
                        path: worker_path.to_path_buf(),
                        source,
                    }
                    .into(),
                )
            })?;
            worker.log = Some(Box::new(log));
            crate::stamp!("host: log reader started");
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
                    crate::stamp!("host: report read");
                    let mut report: Enforcement =
                        serde_json::from_slice(&frame.payload).map_err(|e| {
                            fail(violation(ProtocolViolation::Malformed {
                                tag: Tag::Restricted,
                                reason: PayloadError::json(e),
                            }))
                        })?;
                    match confirm(worker.child.id(), worker.cgroup.as_ref(), init, &mut report) {
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
                    crate::stamp!("host: report confirmed (/proc)");
                    phase = Phase::Loading;
                }
                (Tag::LoadFailed, _) => {
                    let failure: LoadFailure =
                        serde_json::from_slice(&frame.payload).map_err(|e| {
                            fail(violation(ProtocolViolation::Malformed {
                                tag: Tag::LoadFailed,
                                reason: PayloadError::json(e),
                            }))
                        })?;
                    return Err(match failure.into_error(phase) {
                        Ok(e) => Refusal::Refused(e),
                        Err(v) => fail(violation(v)),
                    });
                }
                (Tag::Loaded, Phase::Loading) => {
                    crate::stamp!("host: loaded read");
                    let (version, metadata) = parse_loaded(&frame.payload, init.output_bytes)
                        .map_err(|v| fail(violation(v)))?;
                    crate::exec::thread::check_abi(expected, version, metadata)
                        .map_err(|e| Refusal::Refused(e.into()))?;
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

    /// Runs one call in the worker, ending by `deadline` (set by the
    /// [`super::set::WorkerSet`] caller before it waited for a free worker).
    pub(crate) fn call_until(
        &self,
        input: &[u8],
        deadline: Instant,
        extras: CallExtras,
    ) -> Result<PluginResult, FaultError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(FaultError::Poisoned);
        }
        let _turn = self.take_turn(deadline)?;
        // A call whose deadline passed before it got its turn (a zero timeout, a deadline
        // already past, a wait for the turn that ended just at it) never reaches the worker:
        // posted, it would time out at once and end a worker that did nothing wrong.
        if Instant::now() >= deadline {
            return Err(FaultError::Timeout {
                timeout_ms: duration_ms(self.timeout),
            });
        }
        let mut guard = self.lock_worker();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(FaultError::Poisoned);
        }
        let Some(worker) = guard.as_mut() else {
            return Err(FaultError::Poisoned);
        };
        match self.exchange(worker, input, deadline, extras) {
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
                    Ending::Closed => Err(worker.closed(deadline)),
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
            self.turn_waiting.fetch_add(1, Ordering::Relaxed);
            busy = match self.turn_free.wait_timeout(busy, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            self.turn_waiting.fetch_sub(1, Ordering::Relaxed);
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
        extras: CallExtras,
    ) -> Result<Result<PluginResult, FaultError>, Ending> {
        let timeout = || FaultError::Timeout {
            timeout_ms: duration_ms(self.timeout),
        };
        worker.seq = worker.seq.saturating_add(1);
        let seq = worker.seq;
        if let Some(log) = &worker.log {
            log.new_window();
        }
        // Read before the call is posted: the reply is there once the turn moves from it.
        let since = worker.ring.reply_turn();
        if worker.ring.post_call(seq, input) == Posted::OnSocket
            && let Err(e) = worker.send(deadline, Tag::Call, seq, input)
        {
            return Err(if timed_out(&e) {
                Ending::Fault(timeout())
            } else {
                Ending::Closed
            });
        }
        // Until the reply, a frame on the socket is a host tool request or a progress
        // message: `tools::answer` answers it or names the violation. The worker draws the
        // host's attention to it through the region, so it is read at once.
        let mut call = CallState::new(seq, deadline, extras);
        // Whether to look at the socket before waiting again: after a nudge, and at the end
        // of each slice (a dead worker is seen there).
        let mut look = false;
        // Whether the last wait ended early, on a nudge.
        let mut nudged = false;
        // Nudges in a row that found the socket quiet. An honest worker bumps the count
        // after each frame it writes, so one such nudge can happen (its frame was read in
        // the drain before its bump was seen), two in a row do not: from the second on, the
        // waits of this slice no longer heed the count (`HostRing::wait_reply`), and a
        // plugin bumping it in a loop gets at most three looks at the socket per slice
        // (the two nudges that count, and the slice's end), not a host that polls without
        // sleeping.
        let mut in_vain = 0u32;
        loop {
            // Read before the socket is drained: a nudge that comes during the drain then
            // ends the wait below at once.
            let attention = worker.ring.attention();
            let mut first = true;
            while look {
                match worker.socket() {
                    Socket::Quiet => {
                        if nudged && first {
                            in_vain = in_vain.saturating_add(1);
                        }
                        look = false;
                    }
                    Socket::Hung => return Err(Ending::Closed),
                    // A reply announced as following on the socket may have raced the wait.
                    Socket::Readable if worker.ring.reply_turn() != since => look = false,
                    Socket::Readable => {
                        in_vain = 0;
                        self.socket_frame_during_call(worker, deadline, &mut call, false)?;
                        if Instant::now() >= deadline {
                            return Err(Ending::Fault(timeout()));
                        }
                    }
                }
                first = false;
            }
            let slice_end = deadline.min(Instant::now() + super::ring::SLICE);
            let heed = (in_vain < 2).then_some(attention);
            if worker.ring.wait_reply(since, heed, slice_end) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Ending::Fault(timeout()));
            }
            nudged = now < slice_end;
            if !nudged {
                // A whole slice went by: heed the count again.
                in_vain = 0;
            }
            look = true;
        }
        let result = match worker.ring.read_reply(seq, self.output_bytes) {
            Ok(Reply::Done(result)) => result,
            Ok(Reply::OnSocket) => self.reply_on_socket(worker, seq, deadline, &mut call)?,
            Err(v) => return Err(violation(v)),
        };
        // What the worker wrote on the socket during the call is there by now (it wrote it
        // before it published the reply): the progress it sent last is delivered; a tool
        // request now (its plugin gave up waiting for the answer) or any other frame is a
        // violation.
        loop {
            match worker.socket() {
                Socket::Quiet => break,
                Socket::Hung => return Err(Ending::Closed),
                Socket::Readable => {
                    self.socket_frame_during_call(worker, deadline, &mut call, true)?;
                }
            }
        }
        call.finish(&self.tools);
        Ok(result)
    }

    /// The read cap of a frame during a call: a reply's, or a tool request's if larger.
    fn call_frame_cap(&self) -> usize {
        self.output_cap.max(
            self.tools
                .limits
                .request_payload()
                .saturating_add(FRAME_OVERHEAD),
        )
    }

    /// A frame on the socket during a call that did not announce its reply there: a host
    /// tool request or a progress message, answered by [`tools::answer`] (which names the
    /// violation in anything else). Once the reply is in (`replied`), only progress may
    /// still be read: a request of the call is then a violation.
    fn socket_frame_during_call(
        &self,
        worker: &mut Worker,
        deadline: Instant,
        call: &mut CallState,
        replied: bool,
    ) -> Result<(), Ending> {
        let frame = worker
            .read(deadline, self.call_frame_cap())
            .map_err(|e| read_failure(e, self.timeout))?;
        if replied && frame.tag == Tag::ToolRequest {
            return Err(violation(tools::late_request(&frame, call, &self.tools)));
        }
        match tools::answer(&frame, call, &self.tools) {
            Ok(None) => Ok(()),
            Ok(Some((tag, reply))) => worker.send(deadline, tag, call.seq, &reply).map_err(|e| {
                if timed_out(&e) {
                    Ending::Fault(FaultError::Timeout {
                        timeout_ms: duration_ms(self.timeout),
                    })
                } else {
                    Ending::Closed
                }
            }),
            Err(v) => Err(violation(v)),
        }
    }

    /// A reply the region announced as following on the socket (it did not fit): one
    /// `Output` or `Fault` frame with the call's sequence number, after whatever progress
    /// the call sent before it (delivered as during the call).
    fn reply_on_socket(
        &self,
        worker: &mut Worker,
        seq: u64,
        deadline: Instant,
        call: &mut CallState,
    ) -> Result<Result<PluginResult, FaultError>, Ending> {
        let frame = loop {
            let frame = worker
                .read(deadline, self.call_frame_cap())
                .map_err(|e| read_failure(e, self.timeout))?;
            match frame.tag {
                Tag::Output | Tag::Fault => break frame,
                Tag::Progress => match tools::answer(&frame, call, &self.tools) {
                    Ok(_) => {}
                    Err(v) => return Err(violation(v)),
                },
                tag => {
                    return Err(violation(ProtocolViolation::Unexpected {
                        tag,
                        waiting: "waiting for a call's reply",
                    }));
                }
            }
        };
        // The read allowed a request's cap; a reply keeps its own, as in the call region:
        // an output at most the output limit, a fault at most `FAULT_CAP`. Both in the
        // length field's terms (tag and sequence number counted), as the read's cap is.
        let payload_cap = match frame.tag {
            Tag::Output => self.output_bytes,
            _ => FAULT_CAP,
        };
        if frame.payload.len() > payload_cap {
            return Err(violation(ProtocolViolation::TooLarge {
                len: u64::try_from(frame.payload.len().saturating_add(COUNTED_HEADER))
                    .unwrap_or(u64::MAX),
                cap: payload_cap.saturating_add(COUNTED_HEADER),
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
        CallFault::decode(&frame.payload).map_err(violation)
    }

    /// Sets what the plugin's host tool requests are judged by (before any call).
    pub(crate) fn set_tools(&mut self, tools: Arc<ToolEnv>) {
        self.tools = tools;
    }

    /// The worker's process id, while it runs.
    pub(crate) fn worker_pid(&self) -> Option<u32> {
        self.lock_worker().as_ref().map(|w| w.child.id())
    }

    /// Whether a fault ended the worker (every later call fails with `Poisoned`).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Poisons the handle and ends its worker, once any call in flight on it returned.
    pub(crate) fn end(&self) {
        self.poisoned.store(true, Ordering::Release);
        let worker = self.lock_worker().take();
        if let Some(w) = worker {
            let _ = w.end();
        }
    }

    /// The call timeout of every call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
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
        if self.0.turn_waiting.load(Ordering::Relaxed) > 0 {
            self.0.turn_free.notify_one();
        }
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

/// Starts a worker for `inspected` with `library` on its library descriptor instead of the
/// sealed copy of the verified bytes, and the digest and size of the verified manifest in
/// `Init`, as the real path does; the worker must refuse a descriptor that is not that
/// sealed copy. For the hostile tests only (the `fuzzing` feature, which only tests and the
/// fuzz crate turn on); the worker it starts serves no calls.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn start_worker_on(
    inspected: crate::pipeline::inspect::Inspected,
    limits: &Limits,
    worker: &Path,
    library: BorrowedFd<'_>,
) -> Result<Enforcement, ExecError> {
    let crate::pipeline::load::Unpacked {
        manifest, report, ..
    } = crate::pipeline::load::Loadable::unpack(inspected)?;
    let plan = SandboxPlan::new(
        &crate::sandbox::SandboxPolicy::default(),
        &crate::danger::Danger::default(),
        manifest.capabilities(),
        crate::sandbox::WorkspaceOffer::default(),
        &report.needed,
    )?;
    ProcessExecutor::start_on(library, &manifest, limits, plan, worker, None).map(|(_, e)| e)
}

/// What the host makes of one frame from a worker, as in [`ProcessExecutor`]: the frame
/// decoder, then the strict parse of its payload. Shared by the `ipc_frame` fuzz target and
/// the corpus replay; a hostile worker controls every byte of it.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub(crate) fn fuzz_host_frame(bytes: &[u8]) {
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
        Tag::ToolRequest | Tag::Progress => super::tools::fuzz_request(&frame),
        Tag::Init | Tag::Call | Tag::ToolReply => {}
    }
}
