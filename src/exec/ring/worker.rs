//! The worker's side of the call region (see the parent module): it checks the descriptor the
//! host placed, maps it before it restricts itself, and then waits for calls on it.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use crate::exec::cpu_hint;

use super::{
    ATTENTION_AT, CALL_SEQ_AT, CALL_TURN_AT, HOST_CPU_AT, HOST_SLEEPING_AT, LAYOUT_VERSION, MAGIC,
    MAGIC_AT, Mapping, REGION_BYTES, REPLY_AREA, REPLY_LEN_AT, REPLY_SEQ_AT, REPLY_TAG_AT,
    REPLY_TURN_AT, REQUEST_AREA, REQUEST_LEN_AT, REQUEST_ON_SOCKET_AT, TAG_ON_SOCKET, VERSION_AT,
    WORKER_CPU_AT, WORKER_SLEEPING_AT, futex_wait, futex_wake, spin_until,
};

/// The worker's mapping of the region, and the call turn it has seen.
pub(in crate::exec) struct WorkerRing {
    map: std::sync::Arc<Mapping>,
    seen: u32,
}

/// A call as the worker found it in the header.
pub(in crate::exec) struct Call {
    /// The call's sequence number, for its reply.
    pub(in crate::exec) seq: u64,
    /// Where its input is.
    pub(in crate::exec) request: Request,
}

/// Where a call's input is.
pub(in crate::exec) enum Request {
    /// In the request area, this many bytes (as the header says: bound it before use).
    InRegion(u64),
    /// In a `Call` frame on the socket.
    OnSocket,
}

impl WorkerRing {
    /// Checks the descriptor the host placed (a regular file of exactly [`REGION_BYTES`],
    /// sealed against shrinking and growing, whose header names layout `version`) and maps
    /// it. The descriptor stays open at its number for the worker's life (see the parent
    /// module: hiding it would protect nothing). The error is the worker's account.
    pub(in crate::exec) fn open(fd: OwnedFd, version: u32) -> Result<WorkerRing, String> {
        use rustix::fs::SealFlags;
        if version != LAYOUT_VERSION {
            return Err(format!(
                "layout version {version}, this worker knows {LAYOUT_VERSION}"
            ));
        }
        let stat = rustix::fs::fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG
            || usize::try_from(size).ok() != Some(REGION_BYTES)
        {
            return Err(format!(
                "not a regular file of {REGION_BYTES} bytes (mode {:o}, {size} bytes)",
                stat.st_mode
            ));
        }
        let needed = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|e| format!("seals: {e}"))?;
        if !seals.contains(needed) {
            return Err(format!("missing seals: has {seals:?}, needs {needed:?}"));
        }
        let map = Mapping::map(std::os::fd::AsFd::as_fd(&fd)).map_err(|e| format!("mmap: {e}"))?;
        let magic = map.u64_at(MAGIC_AT).load(Ordering::Relaxed);
        let written = map.u32_at(VERSION_AT).load(Ordering::Relaxed);
        if magic != MAGIC || written != version {
            return Err(format!(
                "header: magic {magic:#x}, layout version {written}"
            ));
        }
        let _ = fd.into_raw_fd();
        // The host's turn word starts at zero and moves only when it posts a call, which it
        // does only after this worker's `Loaded` frame.
        Ok(WorkerRing {
            map: std::sync::Arc::new(map),
            seen: 0,
        })
    }

    /// Waits for the next call, with no timeout (the host ends an idle worker by killing
    /// it): spins for [`super::SPIN`], then sleeps on the call turn.
    pub(in crate::exec) fn wait_call(&mut self) -> Call {
        let turn = self.map.u32_at(CALL_TURN_AT);
        let seen = self.seen;
        let ready = || turn.load(Ordering::Acquire) != seen;
        let (mine, theirs) = (self.map.u32_at(WORKER_CPU_AT), self.map.u32_at(HOST_CPU_AT));
        if !spin_until(ready, mine, theirs) {
            cpu_hint::asleep(mine);
            let sleeping = self.map.u32_at(WORKER_SLEEPING_AT);
            loop {
                sleeping.store(1, Ordering::SeqCst);
                if turn.load(Ordering::SeqCst) != seen {
                    break;
                }
                futex_wait(turn, seen, None);
                if ready() {
                    break;
                }
            }
            sleeping.store(0, Ordering::Relaxed);
            cpu_hint::publish(mine);
        }
        self.seen = turn.load(Ordering::Acquire);
        let seq = self.map.u64_at(CALL_SEQ_AT).load(Ordering::Acquire);
        let on_socket = self
            .map
            .u32_at(REQUEST_ON_SOCKET_AT)
            .load(Ordering::Acquire);
        let len = self.map.u64_at(REQUEST_LEN_AT).load(Ordering::Acquire);
        let request = if on_socket != 0 {
            Request::OnSocket
        } else {
            Request::InRegion(len)
        };
        Call { seq, request }
    }

    /// Copies a request of `len` bytes out of the request area into `into` (which the
    /// caller keeps from call to call), with room for the NUL after it; false if `len` is
    /// over the area.
    pub(in crate::exec) fn request_into(&self, len: u64, into: &mut Vec<u8>) -> bool {
        let Ok(len) = usize::try_from(len) else {
            into.clear();
            return false;
        };
        self.map.read_area_into(REQUEST_AREA, len, 1, into)
    }

    /// Copies a reply's bytes into the reply area, to be published by [`Self::publish`];
    /// false, with nothing copied, when they do not fit. Split from the publication so the
    /// worker can copy the plugin's string straight from the plugin's memory and publish
    /// only once the plugin has been handed it back.
    pub(in crate::exec) fn stage(&self, bytes: &[u8]) -> bool {
        self.map.write_area(REPLY_AREA, bytes)
    }

    /// Publishes the reply to call `seq` whose `len` bytes [`Self::stage`] put in the reply
    /// area: the length, the tag and last the sequence number, then bumps the reply turn
    /// (waking the host if it sleeps). A [`TAG_ON_SOCKET`] reply carries no bytes (the
    /// frame follows on the socket; `len` is ignored).
    pub(in crate::exec) fn publish(&self, seq: u64, tag: u32, len: usize) {
        let len = if tag == TAG_ON_SOCKET { 0 } else { len };
        self.map
            .u64_at(REPLY_LEN_AT)
            .store(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.map.u32_at(REPLY_TAG_AT).store(tag, Ordering::Relaxed);
        self.map.u64_at(REPLY_SEQ_AT).store(seq, Ordering::Release);
        self.map
            .u32_at(REPLY_TURN_AT)
            .fetch_add(1, Ordering::SeqCst);
        if self.map.u32_at(HOST_SLEEPING_AT).load(Ordering::SeqCst) != 0 {
            futex_wake(self.map.u32_at(REPLY_TURN_AT));
        }
    }
}

/// The worker's way to draw the host's attention to the socket during a call (see
/// `ATTENTION_AT`); shares the mapping with its [`WorkerRing`].
pub(in crate::exec) struct Nudger(std::sync::Arc<Mapping>);

impl WorkerRing {
    /// A [`Nudger`] over this region.
    pub(in crate::exec) fn nudger(&self) -> Nudger {
        Nudger(std::sync::Arc::clone(&self.map))
    }
}

impl Nudger {
    /// Bumps the attention count and wakes the host if it sleeps on the reply turn.
    pub(in crate::exec) fn nudge(&self) {
        self.0.u32_at(ATTENTION_AT).fetch_add(1, Ordering::SeqCst);
        if self.0.u32_at(HOST_SLEEPING_AT).load(Ordering::SeqCst) != 0 {
            futex_wake(self.0.u32_at(REPLY_TURN_AT));
        }
    }
}
