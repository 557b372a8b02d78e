//! Worker-process isolation: each plugin runs in its own process, which restricts itself
//! before `dlopen` and then serves calls one at a time over a socket.
//!
//! A thread is not a security boundary; a process nearly is. The worker (`skillgate-worker`)
//! is started with an empty environment, the sealed memfd as its standard input and one
//! end of a socketpair as its standard output — nothing else. Before opening the library
//! it closes every other descriptor, starts a new session, asks to be killed with its
//! parent, sets resource limits, tries new user and network namespaces, and applies the
//! same Landlock and seccomp restrictions as thread mode (process-wide here, since it is
//! single-threaded until the plugin starts threads). A crash, hang, memory bomb or escape
//! attempt ends the worker, never the host.
//!
//! The host side ([`ProcessExecutor`]) never trusts the worker: frames are capped
//! ([`crate::protocol`]), payloads parsed strictly, every call has a wall-clock deadline
//! after which the worker is killed, and the exit status of a dead worker is reaped and
//! reported. **After a fault that ends the worker (crash, timeout, protocol violation) the
//! handle fails every later call with `Fault(Poisoned)`; it does not restart the worker.**
//! A host that wants the plugin back loads it again, which re-verifies it.

use std::io::{self, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ffi::{
    AbiError, FaultError, PluginMetadata, PluginResult, SYMBOL_EXECUTE, SYMBOL_METADATA,
    decode_result,
};
use crate::load::LoadError;
use crate::manifest::Manifest;
use crate::policy::{Isolation, Limits};
use crate::protocol::{FRAME_OVERHEAD, FrameError, PROTOCOL_VERSION, Tag, read_frame, write_frame};
use crate::sandbox::{Enforcement, SandboxError, SandboxPlan};
use crate::sealed::SealedFile;

/// The worker executable's file name.
pub const WORKER_NAME: &str = "skillgate-worker";
/// Largest control frame (init, ready, errors).
const CONTROL_CAP: usize = 1024 * 1024;
/// Read buffer of each end of the channel: a small frame arrives with one `read`, header
/// and payload together. Frame caps are checked as before; the buffer bounds nothing.
const CHANNEL_BUFFER: usize = 64 * 1024;
/// How far past its deadline a read may wait before the socket's receive timeout is
/// lowered (one `setsockopt`). The timeout set for a call's full duration is reused by the
/// next call instead of being set again before every call.
const DEADLINE_SLACK: Duration = Duration::from_millis(1);

/// The first frame the host sends: everything the worker needs to restrict and load.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    version: u32,
    host_pid: u32,
    plan: SandboxPlan,
    expected: PluginMetadata,
    output_bytes: usize,
    memory_bytes: u64,
    cpu_seconds: u64,
    file_bytes: u64,
}

/// Why the worker could not load the plugin, as it reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum LoadFailure {
    Setup {
        detail: String,
    },
    Sandbox {
        detail: String,
    },
    Dlopen {
        detail: String,
    },
    AbiVersion {
        manifest: u32,
        plugin: u32,
        host: u32,
    },
    MetadataMismatch {
        field: String,
        manifest: String,
        plugin: String,
    },
    Metadata {
        detail: String,
    },
}

/// A fault of one call, as the worker reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CallFault {
    NullResult,
    OutputTooLarge { limit: usize },
}

fn static_field(name: &str) -> &'static str {
    match name {
        "name" => "name",
        "version" => "version",
        "abi_version" => "abi_version",
        _ => "unknown",
    }
}

impl LoadFailure {
    fn into_error(self) -> Error {
        match self {
            LoadFailure::Setup { detail } => LoadError::Worker(detail).into(),
            LoadFailure::Sandbox { detail } => SandboxError::Worker(detail).into(),
            LoadFailure::Dlopen { detail } => LoadError::Dlopen(detail).into(),
            LoadFailure::AbiVersion {
                manifest,
                plugin,
                host,
            } => AbiError::VersionMismatch {
                manifest,
                plugin,
                host,
            }
            .into(),
            LoadFailure::MetadataMismatch {
                field,
                manifest,
                plugin,
            } => AbiError::MetadataMismatch {
                field: static_field(&field),
                manifest,
                plugin,
            }
            .into(),
            LoadFailure::Metadata { detail } => AbiError::Metadata(FaultError::NotJson {
                function: SYMBOL_METADATA,
                detail,
            })
            .into(),
        }
    }

    fn from_error(e: &Error) -> LoadFailure {
        match e {
            Error::Sandbox(s) => LoadFailure::Sandbox {
                detail: s.to_string(),
            },
            Error::Load(LoadError::Dlopen(d)) => LoadFailure::Dlopen { detail: d.clone() },
            Error::Abi(AbiError::VersionMismatch {
                manifest,
                plugin,
                host,
            }) => LoadFailure::AbiVersion {
                manifest: *manifest,
                plugin: *plugin,
                host: *host,
            },
            Error::Abi(AbiError::MetadataMismatch {
                field,
                manifest,
                plugin,
            }) => LoadFailure::MetadataMismatch {
                field: (*field).to_owned(),
                manifest: manifest.clone(),
                plugin: plugin.clone(),
            },
            Error::Abi(AbiError::Metadata(f)) => LoadFailure::Metadata {
                detail: f.to_string(),
            },
            other => LoadFailure::Setup {
                detail: other.to_string(),
            },
        }
    }
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

struct Worker {
    child: Child,
    channel: BufReader<Channel>,
}

/// The host's end of the socket. Every `read` ends by the current call's deadline: the
/// socket's receive timeout (`SO_RCVTIMEO`) is lowered whenever it would let a read wait
/// more than [`DEADLINE_SLACK`] past the deadline, and a read that times out early is
/// retried with the time that is left.
struct Channel {
    stream: UnixStream,
    deadline: Instant,
    /// The receive timeout currently set on the socket (`None`: none set yet).
    armed: Option<Duration>,
}

impl Channel {
    fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            deadline: Instant::now(),
            armed: None,
        }
    }

    fn arm(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.armed = Some(timeout);
        Ok(())
    }
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if self
                .armed
                .is_none_or(|armed| armed > remaining.saturating_add(DEADLINE_SLACK))
            {
                self.arm(remaining)?;
            }
            match self.stream.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // Timed out: past the deadline (seen above), or early because an
                    // earlier, shorter timeout is still set.
                    let remaining = self.deadline.saturating_duration_since(Instant::now());
                    if !remaining.is_zero() {
                        self.arm(remaining)?;
                    }
                }
                other => return other,
            }
        }
    }
}

/// Handle to a plugin's worker process. Calls are serialized by a mutex around it.
pub(crate) struct ProcessExecutor {
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

fn reap(worker: &mut Worker, kill: bool) -> FaultError {
    if kill {
        let _ = worker.child.kill();
    }
    match worker.child.wait() {
        Ok(status) => FaultError::Crashed {
            signal: status.signal(),
            code: status.code(),
        },
        Err(_) => FaultError::Crashed {
            signal: None,
            code: None,
        },
    }
}

/// Reads one frame before `deadline`, or reports why not.
fn read_before(
    channel: &mut BufReader<Channel>,
    deadline: Instant,
    cap: usize,
) -> Result<(Tag, Vec<u8>), Option<FrameError>> {
    if deadline.saturating_duration_since(Instant::now()).is_zero() {
        return Err(None);
    }
    channel.get_mut().deadline = deadline;
    match read_frame(channel, cap) {
        Ok(f) => Ok(f),
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(None)
        }
        Err(e) => Err(Some(e)),
    }
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
        let spawn_err = |e: io::Error| {
            Error::from(LoadError::Worker(format!(
                "cannot start {}: {e}",
                worker_path.display()
            )))
        };
        let (host_end, worker_end) = UnixStream::pair().map_err(spawn_err)?;
        // A worker that stops reading must not block a caller past its timeout: writing a
        // call's input is bounded by the same per-call timeout as waiting for its result.
        host_end
            .set_write_timeout(Some(Duration::from_millis(limits.call_timeout_ms)))
            .map_err(spawn_err)?;
        let memfd: OwnedFd = library.as_fd().try_clone_to_owned().map_err(spawn_err)?;
        let mut command = Command::new(worker_path);
        command
            .env_clear()
            .stdin(Stdio::from(memfd))
            .stdout(Stdio::from(OwnedFd::from(worker_end)))
            .stderr(Stdio::null());
        // Spawned from the long-lived spawner thread: see crate::spawner.
        let child = crate::spawner::spawn(command).map_err(spawn_err)?;
        let mut worker = Worker {
            child,
            channel: BufReader::with_capacity(CHANNEL_BUFFER, Channel::new(host_end)),
        };
        let init = Init {
            version: PROTOCOL_VERSION,
            host_pid: std::process::id(),
            plan,
            expected: manifest.metadata().clone(),
            output_bytes: limits.output_bytes,
            memory_bytes: limits.memory_bytes,
            cpu_seconds: limits.cpu_seconds,
            file_bytes: limits.file_bytes,
        };
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let ready = Self::handshake(&mut worker, &init, timeout);
        match ready {
            Ok(enforcement) => {
                let executor = ProcessExecutor {
                    worker: Mutex::new(Some(worker)),
                    timeout,
                    output_cap: limits.output_bytes.saturating_add(FRAME_OVERHEAD),
                    poisoned: AtomicBool::new(false),
                };
                Ok((executor, enforcement))
            }
            Err(e) => {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                Err(e)
            }
        }
    }

    fn handshake(
        worker: &mut Worker,
        init: &Init,
        timeout: Duration,
    ) -> Result<Enforcement, Error> {
        let deadline = Instant::now() + timeout;
        let init = serde_json::to_vec(init).map_err(Error::Input)?;
        if write_frame(&mut worker.channel.get_mut().stream, Tag::Init, &init).is_err() {
            return Err(reap(worker, true).into());
        }
        match read_before(&mut worker.channel, deadline, CONTROL_CAP) {
            Ok((Tag::Ready, payload)) => serde_json::from_slice::<Enforcement>(&payload)
                .map_err(|e| FaultError::Protocol(format!("bad ready frame: {e}")).into()),
            Ok((Tag::LoadFailed, payload)) => {
                let failure: LoadFailure = serde_json::from_slice(&payload).map_err(|e| {
                    Error::from(FaultError::Protocol(format!("bad load-failure frame: {e}")))
                })?;
                let _ = worker.child.wait();
                Err(failure.into_error())
            }
            Ok((tag, _)) => {
                Err(FaultError::Protocol(format!("unexpected {tag:?} frame during load")).into())
            }
            Err(None) => {
                let _ = reap(worker, true);
                Err(FaultError::Timeout {
                    timeout_ms: duration_ms(timeout),
                }
                .into())
            }
            Err(Some(FrameError::Closed)) | Err(Some(FrameError::Io(_))) => {
                Err(reap(worker, false).into())
            }
            Err(Some(e)) => Err(FaultError::Protocol(e.to_string()).into()),
        }
    }

    /// Runs one call in the worker.
    pub(crate) fn call(&self, input: &[u8]) -> Result<PluginResult, FaultError> {
        let mut guard = self.worker.lock().map_err(|_| FaultError::Poisoned)?;
        if self.poisoned.load(Ordering::Acquire) {
            return Err(FaultError::Poisoned);
        }
        let Some(worker) = guard.as_mut() else {
            return Err(FaultError::Poisoned);
        };
        let outcome = self.exchange(worker, input);
        if let Err(fault) = &outcome
            && fault.ends_worker()
        {
            self.poisoned.store(true, Ordering::Release);
            if let Some(mut w) = guard.take() {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
        outcome
    }

    fn exchange(&self, worker: &mut Worker, input: &[u8]) -> Result<PluginResult, FaultError> {
        let deadline = Instant::now() + self.timeout;
        if let Err(e) = write_frame(&mut worker.channel.get_mut().stream, Tag::Call, input) {
            let ended = reap(worker, true);
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FaultError::Timeout {
                    timeout_ms: duration_ms(self.timeout),
                },
                _ => ended,
            });
        }
        match read_before(&mut worker.channel, deadline, self.output_cap) {
            Ok((Tag::Output, bytes)) => decode_result(&bytes),
            Ok((Tag::Fault, payload)) => match serde_json::from_slice::<CallFault>(&payload) {
                Ok(CallFault::NullResult) => Err(FaultError::NullResult {
                    function: SYMBOL_EXECUTE,
                }),
                Ok(CallFault::OutputTooLarge { limit }) => Err(FaultError::OutputTooLarge {
                    function: SYMBOL_EXECUTE,
                    limit,
                }),
                Err(e) => Err(FaultError::Protocol(format!("bad fault frame: {e}"))),
            },
            Ok((tag, _)) => Err(FaultError::Protocol(format!(
                "unexpected {tag:?} frame for a call"
            ))),
            Err(None) => {
                let _ = reap(worker, true);
                Err(FaultError::Timeout {
                    timeout_ms: duration_ms(self.timeout),
                })
            }
            Err(Some(FrameError::Closed)) | Err(Some(FrameError::Io(_))) => {
                Err(reap(worker, false))
            }
            Err(Some(FrameError::TooLarge { .. })) => Err(FaultError::OutputTooLarge {
                function: SYMBOL_EXECUTE,
                limit: self.output_cap - FRAME_OVERHEAD,
            }),
            Err(Some(e)) => Err(FaultError::Protocol(e.to_string())),
        }
    }

    /// The worker's process id, while it runs.
    pub(crate) fn worker_pid(&self) -> Option<u32> {
        self.worker.lock().ok()?.as_ref().map(|w| w.child.id())
    }
}

impl Drop for ProcessExecutor {
    fn drop(&mut self) {
        let worker = match self.worker.get_mut() {
            Ok(w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(mut w) = worker {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the host makes of one frame from a worker, as in [`ProcessExecutor`]: the frame
/// decoder, then the strict parse of its payload. Shared by the `ipc_frame` fuzz target and
/// the corpus replay; a hostile worker controls every byte of it.
#[doc(hidden)]
pub fn fuzz_host_frame(bytes: &[u8]) {
    let Ok((tag, payload)) = crate::protocol::decode_frame(bytes, CONTROL_CAP) else {
        return;
    };
    match tag {
        Tag::Ready => {
            let _ = serde_json::from_slice::<Enforcement>(&payload);
        }
        Tag::LoadFailed => {
            if let Ok(failure) = serde_json::from_slice::<LoadFailure>(&payload) {
                let _ = failure.into_error().to_string();
            }
        }
        Tag::Fault => {
            let _ = serde_json::from_slice::<CallFault>(&payload);
        }
        Tag::Output => {
            let _ = decode_result(&payload);
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

#[allow(unsafe_code)]
fn take_standard_fds() -> (OwnedFd, OwnedFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: the host started this process with the sealed memfd as fd 0 and the socket
    // as fd 1; nothing else in this process owns them (std's stdin/stdout handles are never
    // used by the worker).
    unsafe { (OwnedFd::from_raw_fd(0), OwnedFd::from_raw_fd(1)) }
}

#[allow(unsafe_code)]
fn close_other_fds() -> io::Result<()> {
    // SAFETY: close_range with integer arguments; fds 0 and 1 are kept, everything else the
    // worker may have inherited is closed. No Rust object owns those descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 2u32, u32::MAX, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

fn set_limits(init: &Init) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let set = |r, v: u64| {
        setrlimit(
            r,
            Rlimit {
                current: Some(v),
                maximum: Some(v),
            },
        )
    };
    set(Resource::As, init.memory_bytes)?;
    set(Resource::Cpu, init.cpu_seconds)?;
    set(Resource::Nofile, 64)?;
    set(Resource::Fsize, init.file_bytes)?;
    set(Resource::Core, 0)?;
    set(Resource::Nproc, 64)?;
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

fn run_worker() -> Result<(), u8> {
    let (memfd, channel) = take_standard_fds();
    close_other_fds().map_err(|_| 10u8)?;
    let mut channel = BufReader::with_capacity(CHANNEL_BUFFER, std::fs::File::from(channel));
    let _ = rustix::process::setsid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|_| 11u8)?;
    let (tag, payload) = read_frame(&mut channel, CONTROL_CAP).map_err(|_| 12u8)?;
    let init: Init = match (tag, serde_json::from_slice::<Init>(&payload)) {
        (Tag::Init, Ok(init)) if init.version == PROTOCOL_VERSION => init,
        _ => return Err(13),
    };
    // The host may have died before the death signal was armed.
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(init.host_pid) {
        return Err(14);
    }
    let fail = |channel: &mut BufReader<std::fs::File>, failure: LoadFailure| -> u8 {
        let _ = serde_json::to_vec(&failure)
            .map(|b| write_frame(channel.get_mut(), Tag::LoadFailed, &b));
        20
    };
    if let Err(e) = set_limits(&init) {
        return Err(fail(
            &mut channel,
            LoadFailure::Setup {
                detail: format!("setrlimit: {e}"),
            },
        ));
    }
    default_fault_signals();
    let namespaces = try_namespaces(!init.plan.connect_tcp().is_empty());
    let library = match SealedFile::from_inherited(memfd) {
        Ok(l) => l,
        Err(e) => {
            return Err(fail(
                &mut channel,
                LoadFailure::Setup {
                    detail: e.to_string(),
                },
            ));
        }
    };
    let loaded = init
        .plan
        .apply(Isolation::Process)
        .map_err(Error::from)
        .and_then(|enforcement| {
            Ok((
                crate::executor::open_and_check(library, &init.expected, init.output_bytes)?,
                enforcement,
            ))
        });
    let (symbols, mut enforcement) = match loaded {
        Ok(ok) => ok,
        Err(e) => return Err(fail(&mut channel, LoadFailure::from_error(&e))),
    };
    enforcement.namespaces = namespaces;
    let ready = serde_json::to_vec(&enforcement).map_err(|_| 21u8)?;
    write_frame(channel.get_mut(), Tag::Ready, &ready).map_err(|_| 22u8)?;
    let input_cap = CONTROL_CAP.saturating_mul(64);
    loop {
        let (tag, mut input) = match read_frame(&mut channel, input_cap) {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(_) => return Err(23),
        };
        if tag != Tag::Call {
            return Err(24);
        }
        input.push(0);
        let Ok(input) = std::ffi::CString::from_vec_with_nul(input) else {
            return Err(25);
        };
        let sent = match symbols.call_execute(&input, init.output_bytes) {
            Ok(bytes) => write_frame(channel.get_mut(), Tag::Output, &bytes),
            Err(FaultError::OutputTooLarge { limit, .. }) => {
                serde_json::to_vec(&CallFault::OutputTooLarge { limit })
                    .map_err(io::Error::other)
                    .and_then(|b| write_frame(channel.get_mut(), Tag::Fault, &b))
            }
            Err(_) => serde_json::to_vec(&CallFault::NullResult)
                .map_err(io::Error::other)
                .and_then(|b| write_frame(channel.get_mut(), Tag::Fault, &b)),
        };
        if sent.is_err() {
            return Err(26);
        }
    }
}
