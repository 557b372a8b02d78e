//! The worker process's own side: what a worker runs (`skillgate-worker`, or a host
//! re-executed as its own worker through [`super::worker::run_if_worker`]). It takes the
//! descriptors the host placed, checks them and the library it was handed, restricts itself,
//! reports, loads and then serves calls until the host closes the channel.
//!
//! The worker re-checks what it is given before `dlopen` and does not take the host's (or
//! whoever started it) word for it: the memfd must carry every seal and hash to the digest
//! in `Init` (the signed manifest's entry for the library), the grant descriptors must be
//! the objects, kinds and count the plan names, and the descriptor layout must be the one
//! [`super::init`] fixes. A refusal is sent to the host as a typed load failure.
//!
//! The shared call region ([`super::ring`]) is checked (size, seals, header) and mapped once
//! `Init` names its layout, before the worker restricts itself, so the seccomp filter needs
//! nothing for it; calls then come through it, and the socket carries only what does not fit.

use std::io::{self, BufReader};
use std::os::fd::{OwnedFd, RawFd};

use crate::base::ffi::FaultError;
use crate::base::protocol::{FrameError, PROTOCOL_VERSION, Tag, read_frame, write_frame};
use crate::base::settings::Isolation;
use crate::sandbox::{SandboxPlan, TaskBound};

use crate::pipeline::load::{LoadError, Loadable, Recheck};

use super::ExecError;
use super::init::{
    CHANNEL_BUFFER, CONTROL_CAP, CallFault, HANDOVER_MAX_FDS, Init, LoadFailure, METADATA_BYTES,
    METADATA_NULL, METADATA_TOO_LARGE, WORKER_CHANNEL, WORKER_FIRST_GRANT, WORKER_MEMFD,
    WORKER_RING, error_chain,
};
use super::ring::{Request, TAG_FAULT, TAG_ON_SOCKET, TAG_OUTPUT, WorkerRing};

/// The worker's main: what [`super::worker::run_if_worker`] runs in a process started with
/// the worker argument, in `skillgate-worker` or in a host re-executed as its own worker.
/// `grants` is the count the starter gave; nothing the starter says is trusted (it re-checks
/// the library, the plan and the descriptors it finds before `dlopen`). Returns the process
/// exit code.
pub(super) fn worker_main(grants: usize) -> u8 {
    match run_worker(grants) {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// The `Threads` field of `/proc/self/status`.
pub(super) fn thread_count() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// A worker restricts itself only as the process's one thread: Landlock and seccomp bind
/// the thread that restricts itself, never one already running (see `exec::worker`). The
/// error is the worker's account for the host.
fn single_threaded() -> Result<(), String> {
    match thread_count() {
        Some(1) => Ok(()),
        Some(n) => Err(format!(
            "{n} threads were running before the worker restricted itself (code before \
             `run_if_worker` started them); Landlock and seccomp would not bind them"
        )),
        None => Err("cannot count the worker's threads (/proc/self/status)".to_owned()),
    }
}

/// The descriptors a worker takes: the library, the channel, the call region (checked once
/// `Init` names its layout; missing, it is refused then) and the grants.
struct Taken {
    memfd: OwnedFd,
    ring: Option<OwnedFd>,
    grants: Vec<OwnedFd>,
}

/// Takes the descriptors the host placed (memfd, channel, call region, `grants` grant
/// descriptors) and closes every other one above 2 before anything can reuse a number.
#[allow(unsafe_code)]
fn take_fds(grants: usize) -> Result<(OwnedFd, Taken), u8> {
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
    let mut ring = None;
    for fd in WORKER_MEMFD..WORKER_FIRST_GRANT.saturating_add(count) {
        if rustix::io::fcntl_getfd(
            // SAFETY: a borrow for the duration of the check; `fd` is an integer the kernel
            // answers EBADF for if it is not open.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )
        .is_err()
        {
            if fd == WORKER_RING {
                continue;
            }
            return Err(10);
        }
        if fd == WORKER_RING {
            // SAFETY: as below.
            ring = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            continue;
        }
        // SAFETY: the host placed this descriptor here for the worker (see `place_fds`),
        // it is open (checked above), and it is taken exactly once.
        taken.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut taken = taken.into_iter();
    let (Some(memfd), Some(channel)) = (taken.next(), taken.next()) else {
        return Err(10);
    };
    // The layout, by kind: the library is a regular (memory) file and the channel a
    // socket. Nothing is reported for a wrong layout: without the channel there is no one
    // to report to, and the exit code says it.
    let kind = |fd: &OwnedFd| rustix::fs::fstat(fd).map(|st| st.st_mode & libc::S_IFMT);
    if kind(&memfd) != Ok(libc::S_IFREG) || kind(&channel) != Ok(libc::S_IFSOCK) {
        return Err(15);
    }
    Ok((
        channel,
        Taken {
            memfd,
            ring,
            grants: taken.collect(),
        },
    ))
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

/// Makes the C library's `stdout` line-buffered. On a pipe glibc buffers it in blocks, and a
/// worker is killed, never exits, so a C plugin's `printf("…\n")` without `fflush` would
/// never reach its log; line by line, it does (stderr is unbuffered already). Called before
/// anything is written to the stream, as `setvbuf` requires.
#[allow(unsafe_code)]
fn line_buffered_stdout() {
    unsafe extern "C" {
        /// glibc's `stdout` stream (the `libc` crate does not declare it for Linux).
        static mut stdout: *mut libc::FILE;
    }
    // SAFETY: reads the pointer value of glibc's `stdout` (initialised before `main`); the
    // worker is single-threaded here, so nothing writes it concurrently.
    let stream = unsafe { stdout };
    if stream.is_null() {
        return;
    }
    // SAFETY: `stream` is glibc's own open stream; a null buffer asks glibc to allocate
    // one, and nothing has been written to the stream yet.
    unsafe { libc::setvbuf(stream, std::ptr::null_mut(), libc::_IOLBF, 0) };
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

/// Enters a new user namespace where the kernel allows it (nothing plugin-specific: a pooled
/// worker does it before it is handed a plugin). Returns the namespaces entered so far.
fn enter_user_namespace() -> Vec<String> {
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    #[allow(unsafe_code)]
    // SAFETY: the worker is single-threaded here and holds no state that depends on its
    // namespaces (no open sockets but its channel; files are reached by descriptor).
    let ok = unsafe { unshare_unsafe(UnshareFlags::NEWUSER) }.is_ok();
    if ok {
        vec!["user".to_owned()]
    } else {
        Vec::new()
    }
}

/// A new network namespace where the kernel allows it: it has only a down loopback, so it is
/// skipped when the plugin is granted TCP (the plan decides, so this is per-plugin).
fn enter_net_namespace(network: bool, got: &mut Vec<String>) {
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    if network {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: as in `enter_user_namespace`; the channel is a connected socket pair, which a
    // new network namespace leaves working.
    let ok = unsafe { unshare_unsafe(UnshareFlags::NEWNET) }.is_ok();
    if ok {
        got.push("net".to_owned());
    }
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

/// Re-checks the library descriptor against what the host's `Init` says the signed
/// manifest holds (see [`Loadable::recheck`]).
fn check_library(memfd: OwnedFd, init: &Init) -> Result<Loadable, LoadFailure> {
    Loadable::recheck(memfd, init.library_size, &init.library_sha256).map_err(|e| match e {
        Recheck::Refused(refusal) => LoadFailure::Library { refusal },
        Recheck::Io(what, e) => LoadFailure::Setup {
            detail: format!("{what}: {}", error_chain(&e)),
        },
    })
}

/// What a worker does before it knows its plugin: nothing here depends on the plan or the
/// library, so a pooled worker runs it while it waits (see [`super::pool`]).
struct Early {
    /// Why the worker may not restrict itself (a second thread), reported after `Init`.
    threaded: Result<(), String>,
    /// Whether the real uid was 0 before the user namespace (`RLIMIT_NPROC` is not checked
    /// for root).
    root: bool,
    namespaces: Vec<String>,
}

/// `pooled`: the network namespace too (entering one costs about half a millisecond, the
/// largest step of a load); the host hands a pooled worker only plans that grant no TCP
/// (a plan that does is started cold), and the worker refuses one that does.
fn early_setup(pooled: bool) -> Early {
    let threaded = single_threaded();
    default_fault_signals();
    line_buffered_stdout();
    let root = rustix::process::getuid().is_root();
    let mut namespaces = enter_user_namespace();
    if pooled {
        enter_net_namespace(false, &mut namespaces);
        rehearse();
    }
    Early {
        threaded,
        root,
        namespaces,
    }
}

/// What a pooled worker does while it waits, so that the load does less: steps of the
/// load that hold nothing of any plugin's, run once ahead. Measured with
/// `benches/load_steps.rs`: starting the loader thread took about 75 µs of a pooled load
/// (its stack mapped fresh), the library's re-check about 65 µs (its code paged in at
/// first use).
///
/// - A thread of the loader thread's stack size, started and joined: glibc keeps the
///   stack of a joined thread for the next thread of that size, so the loader thread
///   maps none. It is joined here, so the worker is again its one thread long before it
///   restricts itself (the count [`single_threaded`] took before this still holds).
/// - SHA-256 over a few bytes: the re-check's hash, its code paged in.
fn rehearse() {
    if let Ok(thread) = std::thread::Builder::new()
        .name("skillgate-loader".to_owned())
        .spawn(|| ())
    {
        let _ = thread.join();
    }
    let _ = <sha2::Sha256 as sha2::Digest>::digest([0_u8; 64]);
}

/// Leaves the starter's process group (a terminal's job-control signals, `SIGINT` from
/// Ctrl-C among them, go to the host's group and not to this one) and asks to die with the
/// host.
///
/// A group of its own, not a session of its own: with autogroup scheduling
/// (`kernel.sched_autogroup_enabled`, on in most distributions) every session is a
/// scheduling group, and a worker in a session of its own was measured waking 2.5× slower
/// than one in the host's (`benches/roundtrip.rs`, calls 500 µs apart, busy machine: 68 µs
/// against 27 µs; BENCHMARKS.md). What a new session would add over this — no controlling
/// terminal — is already denied otherwise: the worker holds no terminal descriptor (0 is
/// `/dev/null`, 1 and 2 are the host's pipes), Landlock lets it open no `/dev/tty`, and its
/// seccomp filter denies `ioctl` and `kill`.
fn detach() -> Result<(), u8> {
    let _ = rustix::process::setpgid(None, None);
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|_| 11u8)
}

use super::child_tools::{Channel, WorkerCaps};

/// Reads `Init`, which must be this protocol's, and checks the host is still the parent.
fn read_init(channel: &mut Channel) -> Result<Init, u8> {
    let frame = read_frame(channel, CONTROL_CAP).map_err(|_| 12u8)?;
    let init: Init = match (frame.tag, serde_json::from_slice::<Init>(&frame.payload)) {
        (Tag::Init, Ok(init)) if init.version == PROTOCOL_VERSION => init,
        _ => return Err(13),
    };
    // The host may have died before the death signal was armed.
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get().unsigned_abs())
        != Some(init.host_pid)
    {
        return Err(14);
    }
    Ok(init)
}

fn run_worker(grants: usize) -> Result<(), u8> {
    let (channel, taken) = take_fds(grants)?;
    let mut channel = BufReader::with_capacity(CHANNEL_BUFFER, std::fs::File::from(channel));
    detach()?;
    let init = read_init(&mut channel)?;
    if init.grants != grants {
        return Err(13);
    }
    let early = early_setup(false);
    load_and_serve(channel, init, early, taken)
}

/// The pooled worker's main: started with only its channel (and a placeholder where the
/// library goes), it does
/// [`early_setup`] and waits; the host then hands it the log pipes, the library and the
/// grants over the channel (`SCM_RIGHTS`), and `Init`. From there it is the cold worker:
/// every check of the descriptors and the library is the same. Returns the exit code.
pub(super) fn pooled_main() -> u8 {
    match run_pooled() {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// Takes what a pooled worker is started with: a placeholder at [`WORKER_MEMFD`] (the
/// library's number, until the hand-over) and its channel at [`WORKER_CHANNEL`], and closes
/// every descriptor above them.
#[allow(unsafe_code)]
fn take_pooled_fds() -> Result<(OwnedFd, OwnedFd), u8> {
    use std::os::fd::FromRawFd;
    let end = u32::try_from(WORKER_RING).map_err(|_| 10u8)?;
    // SAFETY: close_range with integer arguments: every descriptor from the call region's
    // number up is closed. No Rust object owns any of them (the worker has opened nothing).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, end, u32::MAX, 0u32) };
    if rc != 0 {
        return Err(10);
    }
    for fd in [WORKER_MEMFD, WORKER_CHANNEL] {
        // SAFETY: a borrow for the duration of the check; the kernel answers EBADF if closed.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_err() {
            return Err(10);
        }
    }
    // SAFETY: the host placed both here (see `place_fds`), they are open (checked above),
    // and each is taken exactly once.
    let (placeholder, channel) = unsafe {
        (
            OwnedFd::from_raw_fd(WORKER_MEMFD),
            OwnedFd::from_raw_fd(WORKER_CHANNEL),
        )
    };
    match rustix::fs::fstat(&channel).map(|st| st.st_mode & libc::S_IFMT) {
        Ok(libc::S_IFSOCK) => Ok((placeholder, channel)),
        _ => Err(15),
    }
}

/// Puts the handed-over descriptors where a cold worker finds them: the log pipes on 1 and
/// 2, the library at [`WORKER_MEMFD`] (over the placeholder), the call region at
/// [`WORKER_RING`] and the grants from [`WORKER_FIRST_GRANT`] on, in order; every one of
/// them is then given up, to be taken and checked by [`take_fds`] exactly as a cold
/// worker's are. Returns the grant count.
fn arrange(received: Vec<OwnedFd>, mut placeholder: OwnedFd) -> Result<usize, u8> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let mut received = received.into_iter();
    let (Some(stdout), Some(stderr), Some(memfd)) =
        (received.next(), received.next(), received.next())
    else {
        return Err(15);
    };
    // The plugin's log from here on (until now 1 and 2 were /dev/null).
    rustix::stdio::dup2_stdout(&stdout).map_err(|_| 15u8)?;
    rustix::stdio::dup2_stderr(&stderr).map_err(|_| 15u8)?;
    rustix::io::dup2(&memfd, &mut placeholder).map_err(|_| 15u8)?;
    drop((stdout, stderr, memfd));
    let _ = placeholder.into_raw_fd();
    // The numbers from the call region's up are free but for the region and the grants
    // themselves, which sit above the ones just closed: each copy takes the lowest free
    // number, in order (the region first, at WORKER_RING, then the grants).
    let mut count: usize = 0;
    for fd in received {
        let moved = rustix::io::fcntl_dupfd_cloexec(&fd, WORKER_RING).map_err(|_| 15u8)?;
        drop(fd);
        let expected = RawFd::try_from(count)
            .ok()
            .and_then(|c| WORKER_RING.checked_add(c))
            .ok_or(15u8)?;
        if moved.as_raw_fd() != expected {
            return Err(15);
        }
        let _ = moved.into_raw_fd();
        count = count.saturating_add(1);
    }
    // The first one moved was the call region.
    count.checked_sub(1).ok_or(15)
}

/// Receives the hand-over: one byte carrying the descriptors, close-on-exec. A truncated
/// control message (more descriptors than [`HANDOVER_MAX_FDS`]) is refused, as is a byte
/// that carries none.
fn receive_handover(channel: &OwnedFd) -> Result<Vec<OwnedFd>, u8> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut space =
        [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(HANDOVER_MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        channel,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|_| 17u8)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes != 1 || got.flags.contains(ReturnFlags::CTRUNC) || fds.is_empty() {
        return Err(17);
    }
    Ok(fds)
}

fn run_pooled() -> Result<(), u8> {
    use std::os::fd::IntoRawFd;
    let (placeholder, channel) = take_pooled_fds()?;
    detach()?;
    let early = early_setup(true);
    let received = receive_handover(&channel)?;
    crate::stamp!("worker: hand-over received");
    let grants = arrange(received, placeholder)?;
    // The channel stays at its number; `take_fds` takes it back with the rest.
    let _ = channel.into_raw_fd();
    let (channel, taken) = take_fds(grants)?;
    let mut channel = BufReader::with_capacity(CHANNEL_BUFFER, std::fs::File::from(channel));
    crate::stamp!("worker: descriptors arranged");
    let init = read_init(&mut channel)?;
    if init.grants != grants {
        return Err(13);
    }
    crate::stamp!("worker: init read");
    load_and_serve(channel, init, early, taken)
}

fn load_and_serve(mut channel: Channel, init: Init, early: Early, taken: Taken) -> Result<(), u8> {
    let Taken {
        memfd,
        ring,
        grants: grant_fds,
    } = taken;
    let fail = |channel: &mut Channel, failure: LoadFailure| -> u8 {
        let _ = serde_json::to_vec(&failure)
            .map(|b| write_frame(channel.get_mut(), Tag::LoadFailed, 0, &b));
        20
    };
    let setup = |detail: String| LoadFailure::Setup { detail };
    if let Err(detail) = early.threaded {
        return Err(fail(&mut channel, setup(detail)));
    }
    // Mapped before the sandbox: the filter needs nothing for it.
    let region = match ring {
        Some(fd) => WorkerRing::open(fd, init.ring),
        None => Err(format!("no descriptor at {WORKER_RING}")),
    };
    let mut ring = match region {
        Ok(r) => r,
        Err(detail) => return Err(fail(&mut channel, LoadFailure::Region { detail })),
    };
    crate::stamp!("worker: ring mapped");
    let Early {
        root,
        mut namespaces,
        ..
    } = early;
    let network = !init.plan.connect_tcp().is_empty();
    if namespaces.iter().any(|n| n == "net") {
        // Entered ahead (a pooled worker): its loopback-only namespace would silently
        // break the plan's TCP grant, so such a plan is refused here (the host starts it
        // cold instead).
        if network {
            return Err(fail(
                &mut channel,
                setup("a pooled worker is in its own network namespace already; a plan granting TCP needs a cold start".to_owned()),
            ));
        }
    } else {
        enter_net_namespace(network, &mut namespaces);
    }
    let mut plan = init.plan.clone();
    let tasks = match bound_tasks(&init, &mut plan, &namespaces, root) {
        Ok(t) => t,
        Err(e) => return Err(fail(&mut channel, setup(format!("RLIMIT_NPROC: {e}")))),
    };
    if let Err(e) = set_limits(&init) {
        return Err(fail(&mut channel, setup(format!("setrlimit: {e}"))));
    }
    crate::stamp!("worker: rlimits");
    let library = match check_library(memfd, &init) {
        Ok(l) => l,
        Err(failure) => return Err(fail(&mut channel, failure)),
    };
    crate::stamp!("worker: library re-checked");
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
        crate::stamp!("worker: report sent");
        let opened = crate::pipeline::load::dlopen_sealed(library).map_err(ExecError::from);
        crate::stamp!("worker: dlopen");
        opened
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
    crate::stamp!("worker: version + metadata");
    write_frame(channel.get_mut(), Tag::Loaded, 0, &loaded).map_err(|_| 22u8)?;
    #[cfg(skillgate_stamps)]
    for (label, at) in crate::base::stamps::take() {
        eprintln!("stamp {at} {label}");
    }
    let caps = WorkerCaps {
        request_bytes: init.tool_request_bytes,
        reply_bytes: init.tool_reply_bytes,
        progress_bytes: init.progress_bytes,
    };
    serve(channel, &mut ring, &symbols, init.output_bytes, caps)
}

/// Where a call's reply is before it is published.
enum Staged {
    /// Copied into the reply area, this many bytes.
    InRegion(usize),
    /// In the worker's memory (a fault's JSON, or an output too large for the area).
    Large(Vec<u8>),
}

/// Serves calls, each through the call region (or its socket fallback), until the host ends
/// the worker (it kills it; an idle worker sleeps on the call turn). The socket is shared
/// with the host table ([`super::child_tools`]): during a call the plugin's tool requests
/// and progress go out on it and their answers come back on it; between calls only this
/// loop uses it.
fn serve(
    channel: Channel,
    ring: &mut WorkerRing,
    symbols: &crate::pipeline::load::PluginSymbols,
    output_bytes: usize,
    caps: WorkerCaps,
) -> Result<(), u8> {
    use super::child_tools::{begin_call, end_call, with_channel};
    let input_cap = CONTROL_CAP.saturating_mul(64);
    let identity = |st: rustix::fs::Stat| (st.st_dev, st.st_ino);
    let socket = rustix::fs::fstat(channel.get_ref())
        .map(identity)
        .map_err(|_| 28u8)?;
    super::child_tools::install(channel, caps, ring.nudger());
    symbols.call_host_init(&super::child_tools::WORKER_TABLE);
    // The request is copied into this buffer, kept from call to call.
    let mut input: Vec<u8> = Vec::new();
    loop {
        let call = ring.wait_call();
        let seq = call.seq;
        match call.request {
            Request::InRegion(len) => {
                if !ring.request_into(len, &mut input) {
                    return Err(27);
                }
            }
            Request::OnSocket => {
                let frame = match with_channel(|c| read_frame(c, input_cap)) {
                    Some(Ok(f)) => f,
                    Some(Err(FrameError::Closed)) => return Ok(()),
                    Some(Err(_)) | None => return Err(23),
                };
                if frame.tag != Tag::Call || frame.seq != seq {
                    return Err(24);
                }
                input = frame.payload;
            }
        }
        input.push(0);
        let Ok(c_input) = std::ffi::CStr::from_bytes_with_nul(&input) else {
            return Err(25);
        };
        let fault = |fault: CallFault| serde_json::to_vec(&fault).map_err(|_| 26u8);
        begin_call(seq);
        // The plugin's string is copied once, straight into the reply area; one too large
        // for it is copied out to go on the socket. Published once the plugin has its
        // string back and the call has ended (as when the copy was the worker's own).
        let outcome = symbols.call_execute_with(c_input, output_bytes, |out| match out {
            Ok(bytes) if ring.stage(bytes) => Ok(Staged::InRegion(bytes.len())),
            Ok(bytes) => Ok(Staged::Large(bytes.to_vec())),
            Err(e) => Err(e),
        });
        end_call();
        let (tag, staged) = match outcome {
            Ok(staged) => (TAG_OUTPUT, staged),
            Err(FaultError::OutputTooLarge { limit, .. }) => (
                TAG_FAULT,
                Staged::Large(fault(CallFault::OutputTooLarge { limit })?),
            ),
            Err(_) => (TAG_FAULT, Staged::Large(fault(CallFault::NullResult)?)),
        };
        let bytes = match staged {
            Staged::InRegion(len) => {
                ring.publish(seq, tag, len);
                None
            }
            Staged::Large(bytes) if ring.stage(&bytes) => {
                ring.publish(seq, tag, bytes.len());
                None
            }
            Staged::Large(bytes) => Some(bytes),
        };
        if let Some(bytes) = bytes {
            // Too large for the area: announced first, then on the socket.
            ring.publish(seq, TAG_ON_SOCKET, 0);
            let frame_tag = if tag == TAG_OUTPUT {
                Tag::Output
            } else {
                Tag::Fault
            };
            match with_channel(|c| write_frame(c.get_mut(), frame_tag, seq, &bytes)) {
                Some(Ok(())) => {}
                _ => return Err(26),
            }
        }
        // After the reply, off the host's path: a plugin that closed or replaced the
        // channel's descriptor ends its worker, as a failed read did when calls came on it.
        if with_channel(|c| rustix::fs::fstat(c.get_ref()).map(identity)) != Some(Ok(socket)) {
            return Err(28);
        }
    }
}
