//! Worker processes are forked from one long-lived thread.
//!
//! A worker asks the kernel to kill it when its parent dies (`PR_SET_PDEATHSIG`), so no
//! worker outlives the host. But "parent" there means the *thread* that forked it: a host
//! that loads a plugin from a short-lived thread (a request handler, a thread pool) would
//! see the worker killed as soon as that thread ends. So every worker is spawned by this
//! module's thread, which lives as long as the process.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::init::WORKER_MEMFD;

/// How long a worker that was sent `SIGKILL` may take to be reaped. Death after `SIGKILL` is
/// prompt unless the kernel is stuck; past this bound the host stops waiting (the zombie is
/// reaped when the `Child` is dropped by nobody: it stays until the host exits).
pub(super) const REAP_BOUND: Duration = Duration::from_secs(5);
/// Waits up to `bound` for the child to be reapable, then reaps it.
pub(super) fn reap_within(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
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

struct Request {
    command: Command,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

static SPAWNER: OnceLock<io::Result<Mutex<mpsc::Sender<Request>>>> = OnceLock::new();

fn start() -> io::Result<Mutex<mpsc::Sender<Request>>> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("skillgate-spawner".into())
        .spawn(move || {
            // The sender lives in a static, so this loop only ends with the process.
            for mut request in rx {
                let _ = request.reply.send(request.command.spawn());
            }
        })?;
    Ok(Mutex::new(tx))
}

/// Spawns `command` from the spawner thread.
pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    let spawner = SPAWNER
        .get_or_init(start)
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
    let (reply, result) = mpsc::sync_channel(1);
    let gone = || io::Error::other("the worker spawner thread is gone");
    spawner
        .lock()
        .map_err(|_| gone())?
        .send(Request { command, reply })
        .map_err(|_| gone())?;
    result.recv().map_err(|_| gone())?
}

/// Gives the worker `fds` at [`WORKER_MEMFD`], [`super::init::WORKER_CHANNEL`] and the grant numbers
/// after them. Returns the host's copies, which must stay open until the spawn returns.
///
/// The host is multi-threaded, so between `fork` and `exec` only async-signal-safe calls
/// are made (`fcntl`, `dup2`, `close_range`) and nothing is allocated.
#[allow(unsafe_code)]
pub(super) fn place_fds(command: &mut Command, fds: Vec<OwnedFd>) -> io::Result<Vec<OwnedFd>> {
    use std::os::unix::process::CommandExt;
    // Copies at 3 or above: std puts the child's stdio on 0-2 before the hook runs, which would
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
