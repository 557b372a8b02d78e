//! Whether a child of this process can enter the namespaces a worker tries to enter
//! (`skillgate doctor`). A worker enters new user and network namespaces where the kernel
//! allows and goes on without them where it does not; this asks the kernel the same
//! question from a child with this process's credentials, which is what a worker has.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

/// A namespace a worker tries to enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Namespace {
    /// A new user namespace (`CLONE_NEWUSER`).
    User,
    /// A new network namespace (`CLONE_NEWNET`), entered after the user namespace.
    Net,
}

/// Forks a child that calls `unshare` for `ns` (for `Net`, after entering a user
/// namespace, as a worker does, falling back to none) and exits at once, never executing
/// anything. `Ok(())` if the kernel let it; the system's error if not.
pub(crate) fn child_can_enter(ns: Namespace) -> io::Result<()> {
    // The program is never executed: the child leaves from `pre_exec`.
    let program = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let mut command = Command::new(program);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let flag = match ns {
        Namespace::User => libc::CLONE_NEWUSER,
        Namespace::Net => libc::CLONE_NEWNET,
    };
    set_probe(&mut command, flag);
    let status = command.spawn()?.wait()?;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(errno), _) => Err(io::Error::from_raw_os_error(errno)),
        (None, Some(signal)) => Err(io::Error::other(format!(
            "the probe child was killed by signal {signal}"
        ))),
        (None, None) => Err(io::Error::other("the probe child ended without a status")),
    }
}

#[allow(unsafe_code)]
fn set_probe(command: &mut Command, flag: libc::c_int) {
    // Runs in the forked child before exec, where only async-signal-safe calls are
    // allowed: `unshare`, reading errno and `_exit` are, and nothing here allocates.
    let closure = move || -> io::Result<()> {
        if flag == libc::CLONE_NEWNET {
            // As a worker does: a user namespace first where it may, which is what lets an
            // unprivileged process own a network namespace. Its failure is not the answer.
            // SAFETY: `unshare` takes a flag word and touches no memory of ours.
            let _ = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
        }
        // SAFETY: as above.
        let entered = unsafe { libc::unshare(flag) } == 0;
        let code = if entered {
            0
        } else {
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
                .clamp(1, 255)
        };
        // SAFETY: `_exit` ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(code) }
    };
    // SAFETY: the closure only makes async-signal-safe calls (above) and never returns.
    unsafe {
        command.pre_exec(closure);
    }
}
