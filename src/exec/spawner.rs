//! Worker processes are forked from one long-lived thread.
//!
//! A worker asks the kernel to kill it when its parent dies (`PR_SET_PDEATHSIG`), so no
//! worker outlives the host. But "parent" there means the *thread* that forked it: a host
//! that loads a plugin from a short-lived thread (a request handler, a thread pool) would
//! see the worker killed as soon as that thread ends. So every worker is spawned by this
//! module's thread, which lives as long as the process.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

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
