//! The call region: in process isolation each call's request and reply travel through a
//! shared-memory region between the host and its worker, instead of two socket frames. The
//! socket stays for the handshake, for control, and for payloads too large for the region.
//!
//! # Why hand-written
//!
//! The shared-memory IPC crates that are kept up (iceoryx2, and the ring buffers under it)
//! assume a cooperative peer: both sides trust the other's indices, lengths and state words,
//! and a peer that scribbles over the shared state breaks the other side's invariants
//! (out-of-bounds reads, endless waits). Here the worker runs plugin code, so its side is
//! hostile. What is needed is small — one request slot, one reply slot, two futex words — and
//! every read the host makes of it has to be checked, so it is written here, in one place,
//! with its threat analysis.
//!
//! # Layout ([`LAYOUT_VERSION`] 2)
//!
//! One memfd of [`REGION_BYTES`]: a header page, then the request area ([`AREA_BYTES`],
//! written by the host) and the reply area (as large, written by the worker). Each area holds
//! a 1 MiB payload plus 64 KiB of JSON slack (a 1 MiB string in a context or a result is
//! 1 MiB plus its escapes and the object around it); a memfd's pages cost memory only once
//! touched, so the unused part of an area is free, and a larger payload goes on the socket.
//! Header words (little-endian, naturally aligned; the C test plugins use these numbers):
//!
//! | offset | size | written by | field |
//! |---|---|---|---|
//! | 0 | 8 | host | magic `SGRING01` |
//! | 8 | 4 | host | layout version |
//! | 12 | 4 | host | the worker's pid (informational) |
//! | 128 | 8 | host | call sequence number |
//! | 136 | 8 | host | request length |
//! | 144 | 4 | host | request on the socket (1) or in the area (0) |
//! | 148 | 4 | host | `call_turn` (futex word, bumped per call) |
//! | 152 | 4 | worker | `worker_sleeping` |
//! | 160 | 4 | host | `host_cpu`: the CPU the host polls on, `u32::MAX` while it sleeps |
//! | 256 | 8 | worker | reply sequence number |
//! | 264 | 8 | worker | reply length |
//! | 272 | 4 | worker | reply tag: 1 output, 2 fault JSON, 3 reply on the socket |
//! | 276 | 4 | worker | `reply_turn` (futex word, bumped per reply) |
//! | 280 | 4 | host | `host_sleeping` |
//! | 284 | 4 | worker | `attention` (bumped after a socket frame during a call) |
//! | 288 | 4 | worker | `worker_cpu`: the same for the worker |
//!
//! The host's and the worker's words sit on separate cache lines (128 bytes apart, so the
//! adjacent-line prefetcher does not pair them either).
//!
//! # Waiting
//!
//! Each side spins a bounded time ([`SPIN`]) and then sleeps. How it spins follows where the
//! other side was last seen polling (the `*_cpu` words; [`super::cpu_hint`]): on another
//! CPU, it polls without a system call (for the rest of [`SPIN`]); on
//! the same CPU, it sleeps at once (the other side cannot run until it does); otherwise it
//! yields the CPU between rounds, as a busy 2-vCPU machine needs the other side to run. It
//! sleeps in `FUTEX_WAIT` on the other
//! side's turn word (non-private: two processes). The sleeper sets its `*_sleeping` word,
//! re-reads the turn word and only then waits on the value it read, so a bump in between
//! makes the wait return at once; the waker bumps the turn word and calls `FUTEX_WAKE` only
//! when the other side said it sleeps (both with sequentially consistent atomics). The
//! worker waits for a call with no timeout (an idle worker uses no CPU); the host waits in
//! slices of [`SLICE`] until the call's deadline and looks at the socket between slices (a
//! dead worker, a frame out of turn). A worker that lies about its `worker_sleeping` word
//! only loses its own wake-ups; one that lies about `host_sleeping` or never bumps
//! `reply_turn` only delays the host until the end of a slice or the call's deadline; one
//! that lies about `worker_cpu` only changes how the host spins (polling without yielding
//! for at most [`SPIN`], or a sleep its own reply ends); one that bumps `attention` with
//! nothing on the socket, or wakes the host for nothing, keeps it no busier than a few looks
//! at the socket per slice and one wake-up per [`SPURIOUS_PAUSE`]: after two nudges in a
//! row that found the socket quiet the host stops heeding the count until a slice runs out,
//! and after a wake-up that brought nothing it pauses before it sleeps on the word again
//! (before, a plugin bumping the count in a loop kept a host CPU polling until the call's
//! deadline).
//!
//! # Threat analysis
//!
//! Once `dlopen` starts, plugin code in the worker can read and write every byte of the
//! region at any time, from any thread: it is mapped in the worker, and its descriptor stays
//! open at [`super::init::WORKER_RING`] (the hostile test plugins map it from there). Hiding
//! the descriptor would not help — the mapping is in the worker's address space anyway — and
//! nothing the host trusts depends on it: the region carries only this call's request (which
//! the plugin is given anyway) and its reply (which the plugin chooses anyway). So:
//!
//! - The host never reads a worker-written word twice: the reply's sequence number, tag and
//!   length are each loaded once into locals, then checked ([`check_reply`]): the sequence
//!   must be the call's (else `WrongSequence`: a stale or forged reply is never returned),
//!   the tag known (else `RegionTag`), the length at most the area and the output cap (else
//!   `RegionLength`). Only then are that many bytes copied out into an owned buffer, and the
//!   copy is parsed ([`parse_reply`]); no slice of the shared map is ever handed out, and the
//!   map is only ever accessed through atomics and raw-pointer copies (a concurrent write by
//!   the worker can tear the bytes copied, which the parser then refuses like any other bad
//!   output, but cannot make the host read outside the area).
//! - The region is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before the worker
//!   gets it, so the worker cannot truncate it under the host's mapping (no `SIGBUS` in the
//!   host), and the worker checks the size and seals before it maps it.
//! - Every wait of the host ends by the call's deadline (`FUTEX_WAIT` with a timeout).
//! - The socket stays watched: between slices of a wait, and once more after each reply
//!   (whatever the worker wrote on it during the call is there by then), a hung-up socket is
//!   a dead worker (reported as such) and any frame the host did not ask for is a violation
//!   (`ProcessExecutor::socket_frame_during_call`). The worker checks after each reply that
//!   its channel's descriptor is still its socket, so a plugin that closes or replaces it
//!   ends its own worker, as a failed read did when calls came on the socket.
//! - Any inconsistency is a protocol violation: the worker is killed and the handle poisoned,
//!   as for a bad frame ([`super::host`]).
//! - What the host writes, the worker reads once too and bounds by the request area (the host
//!   is trusted by the worker, but the plugin could have written the host's words: a bad
//!   length ends the worker). A plugin can make its own worker misbehave; it cannot make the
//!   host misbehave.
//!
//! `decode_reply` is the same checking and parsing as a plain function of bytes, shared
//! with the `ring_reply` fuzz target and the corpus replay.

mod worker;

#[cfg(test)]
mod tests;

pub(super) use worker::{Nudger, Request, WorkerRing};

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::base::ffi::{FaultError, PluginResult, decode_result};
use crate::base::protocol::ProtocolViolation;

use super::cpu_hint;
use super::init::CallFault;

/// Version of the layout above; `Init` carries it and the worker refuses any other.
pub(crate) const LAYOUT_VERSION: u32 = 2;
/// The header page.
pub(crate) const HEADER_BYTES: usize = 4096;
/// Each of the request and reply areas: a 1 MiB payload and 64 KiB of JSON slack.
pub(crate) const AREA_BYTES: usize = (1 << 20) + (64 << 10);
/// Where the request area starts.
const REQUEST_AREA: usize = HEADER_BYTES;
/// Where the reply area starts.
const REPLY_AREA: usize = HEADER_BYTES + AREA_BYTES;
/// The region's size: the header and the two areas.
pub(crate) const REGION_BYTES: usize = HEADER_BYTES + 2 * AREA_BYTES;
/// The memfd's name (`/proc/<pid>/fd/*` shows `/memfd:skillgate-ring`).
pub(crate) const REGION_NAME: &str = "skillgate-ring";

/// `SGRING01`, little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"SGRING01");
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 8;
const WORKER_PID_AT: usize = 12;
const CALL_SEQ_AT: usize = 128;
const REQUEST_LEN_AT: usize = 136;
const REQUEST_ON_SOCKET_AT: usize = 144;
const CALL_TURN_AT: usize = 148;
const WORKER_SLEEPING_AT: usize = 152;
const REPLY_SEQ_AT: usize = 256;
const REPLY_LEN_AT: usize = 264;
const REPLY_TAG_AT: usize = 272;
const REPLY_TURN_AT: usize = 276;
const HOST_SLEEPING_AT: usize = 280;
/// Bumped by the worker after it wrote a frame on the socket during a call (a host tool
/// request, a progress message), with a wake of the host if it sleeps: the host then looks
/// at the socket at once instead of at the end of its wait slice.
const ATTENTION_AT: usize = 284;
/// The CPU the host polls on while it waits for a reply (`cpu_hint::NO_CPU` while it
/// sleeps), for the worker's spin.
const HOST_CPU_AT: usize = 160;
/// The CPU the worker polls on while it waits for a call, for the host's spin.
const WORKER_CPU_AT: usize = 288;

/// Reply tags.
pub(crate) const TAG_OUTPUT: u32 = 1;
pub(crate) const TAG_FAULT: u32 = 2;
pub(crate) const TAG_ON_SOCKET: u32 = 3;
/// Largest fault reply (a [`CallFault`] is a few dozen bytes of JSON).
pub(crate) const FAULT_CAP: usize = 1024;
/// Bytes of the reply's fields as `decode_reply` takes them: sequence (u64), length (u64)
/// and tag (u32), little-endian.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) const REPLY_FIELDS: usize = 20;

/// How long a side spins for the other's turn before it sleeps (as the thread executor's).
pub(crate) const SPIN: Duration = Duration::from_micros(20);
/// How long the host sleeps at most before it looks at the socket again during a call.
pub(crate) const SLICE: Duration = Duration::from_millis(5);
/// How long the host pauses, without listening to the region, after a wake-up on the
/// reply turn that brought neither a reply nor a nudge it heeds. An honest worker wakes
/// the host only after it bumped one of the two, so only a misbehaving worker (or a
/// signal) pays it, as a reply seen up to this much later.
pub(crate) const SPURIOUS_PAUSE: Duration = Duration::from_millis(1);

// The header words are naturally aligned and inside the header page.
const _: () = assert!(
    CALL_SEQ_AT.is_multiple_of(8)
        && REQUEST_LEN_AT.is_multiple_of(8)
        && REPLY_SEQ_AT.is_multiple_of(8)
        && REPLY_LEN_AT.is_multiple_of(8)
        && REQUEST_ON_SOCKET_AT.is_multiple_of(4)
        && CALL_TURN_AT.is_multiple_of(4)
        && WORKER_SLEEPING_AT.is_multiple_of(4)
        && REPLY_TAG_AT.is_multiple_of(4)
        && REPLY_TURN_AT.is_multiple_of(4)
        && HOST_SLEEPING_AT.is_multiple_of(4)
        && ATTENTION_AT.is_multiple_of(4)
        && HOST_CPU_AT.is_multiple_of(4)
        && WORKER_CPU_AT.is_multiple_of(4)
        && WORKER_CPU_AT + 4 <= HEADER_BYTES
        && REGION_BYTES.is_multiple_of(4096)
);

/// The region mapped `MAP_SHARED`, read and write. Only ever accessed through atomics (the
/// header words) and raw-pointer copies (the areas): no reference to its bytes exists.
struct Mapping {
    base: NonNull<u8>,
}

// SAFETY: the mapping is plain shared memory that lives until `Drop`; every access is an
// atomic or a raw copy, which any thread may do.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps [`REGION_BYTES`] of `fd` (which must be at least that long and sealed against
    /// shrinking, so no access can fault).
    #[allow(unsafe_code)]
    fn map(fd: BorrowedFd<'_>) -> io::Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        // SAFETY: a new mapping at an address the kernel chooses; nothing else refers to it.
        let base = unsafe {
            mmap(
                std::ptr::null_mut(),
                REGION_BYTES,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let base = NonNull::new(base.cast::<u8>()).ok_or(io::ErrorKind::InvalidData)?;
        Ok(Mapping { base })
    }

    /// The 64-bit header word at `at` (a constant above: aligned, inside the header).
    #[allow(unsafe_code)]
    fn u64_at(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= HEADER_BYTES);
        // SAFETY: `at` is one of the aligned header offsets, inside the mapping (page
        // aligned), which lives as long as `self`; shared memory is only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(at).cast::<u64>()) }
    }

    /// The 32-bit header word at `at` (as [`Self::u64_at`]).
    #[allow(unsafe_code)]
    fn u32_at(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at.is_multiple_of(4) && at + 4 <= HEADER_BYTES);
        // SAFETY: as in `u64_at`.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(at).cast::<u32>()) }
    }

    /// Copies `bytes` into the area at `area`; false (nothing copied) if they do not fit.
    #[allow(unsafe_code)]
    fn write_area(&self, area: usize, bytes: &[u8]) -> bool {
        if bytes.len() > AREA_BYTES || !(area == REQUEST_AREA || area == REPLY_AREA) {
            return false;
        }
        // SAFETY: the destination is inside the mapping (the area starts at a constant and
        // `bytes` fits it); the source is a separate Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(area),
                bytes.len(),
            );
        }
        true
    }

    /// Replaces the contents of `out` with a copy of `len` bytes of the area at `area`,
    /// leaving room for `spare` bytes more; false (`out` left empty) if `len` is over the
    /// area. The caller keeps `out` from call to call, so a large payload is copied into
    /// memory that is already allocated and faulted in rather than a fresh allocation.
    #[allow(unsafe_code)]
    fn read_area_into(&self, area: usize, len: usize, spare: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        if len > AREA_BYTES || !(area == REQUEST_AREA || area == REPLY_AREA) {
            return false;
        }
        let Some(room) = len.checked_add(spare) else {
            return false;
        };
        out.reserve(room);
        // SAFETY: the source is inside the mapping (checked above) and the destination has
        // capacity for `len` bytes (reserved above, `out` being empty), all of which the
        // copy initialises before `set_len`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(area), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        true
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of that length; no reference into it outlives
        // `self` (every accessor borrows `self`).
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), REGION_BYTES) };
    }
}

/// Sleeps on `word` while it holds `value`, up to `timeout` (`None`: no bound). Returns
/// when woken, when the word no longer holds the value, at the timeout or on a signal; the
/// caller re-checks what it waits for.
fn futex_wait(word: &AtomicU32, value: u32, timeout: Option<Duration>) {
    use rustix::thread::futex;
    let timespec = timeout.map(|t| futex::Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    // Non-private: the other side is another process.
    let _ = futex::wait(word, futex::Flags::empty(), value, timespec.as_ref());
}

fn futex_wake(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
}

/// Polls `ready` for up to [`SPIN`], publishing this side's CPU in `mine` and spinning as
/// `theirs` says ([`cpu_hint::next`]); whether it became true. Returns false early when
/// both sides are on one CPU: the caller then sleeps (and publishes that it does).
fn spin_until(ready: impl Fn() -> bool, mine: &AtomicU32, theirs: &AtomicU32) -> bool {
    let cpu = cpu_hint::publish(mine);
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return ready();
        }
        match cpu_hint::next(cpu, theirs.load(Ordering::Relaxed)) {
            cpu_hint::Next::Poll => {}
            // On a busy machine the other side may be waiting for this very CPU.
            cpu_hint::Next::Yield => std::thread::yield_now(),
            cpu_hint::Next::Sleep => return ready(),
        }
    }
}

/// The host's side of a worker's region: it made the memfd and maps it.
pub(super) struct HostRing {
    map: Mapping,
    fd: OwnedFd,
    /// Where each reply is copied out to before it is parsed, kept from call to call (at
    /// most [`AREA_BYTES`], once a reply that large came).
    reply: Vec<u8>,
}

/// Where a call's request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Posted {
    /// In the request area: the worker has it.
    InRegion,
    /// Too large for the area: the caller sends it on the socket now, as a `Call` frame.
    OnSocket,
}

/// A reply the host read from the region and checked.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The call's own outcome (a result, or a fault of the call that leaves the worker
    /// serving).
    Done(Result<PluginResult, FaultError>),
    /// The reply follows on the socket (it did not fit the area).
    OnSocket,
}

impl HostRing {
    /// Makes a region: a sealed memfd of [`REGION_BYTES`], mapped, with its magic and
    /// layout version written.
    pub(super) fn create() -> io::Result<HostRing> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd =
            rustix::fs::memfd_create(REGION_NAME, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let size = u64::try_from(REGION_BYTES).map_err(|_| io::ErrorKind::InvalidInput)?;
        rustix::fs::ftruncate(&fd, size)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let map = Mapping::map(fd.as_fd())?;
        map.u64_at(MAGIC_AT).store(MAGIC, Ordering::Relaxed);
        map.u32_at(VERSION_AT)
            .store(LAYOUT_VERSION, Ordering::Relaxed);
        cpu_hint::asleep(map.u32_at(HOST_CPU_AT));
        cpu_hint::asleep(map.u32_at(WORKER_CPU_AT));
        Ok(HostRing {
            map,
            fd,
            reply: Vec::new(),
        })
    }

    /// The memfd, to hand to the worker.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Records the worker's pid in the header (informational: a probe can tell its own
    /// worker's region from another one).
    pub(super) fn set_worker_pid(&self, pid: u32) {
        self.map.u32_at(WORKER_PID_AT).store(pid, Ordering::Relaxed);
    }

    /// The reply turn now: read before a call is posted, it is what [`Self::wait_reply`]
    /// waits to see change.
    pub(super) fn reply_turn(&self) -> u32 {
        self.map.u32_at(REPLY_TURN_AT).load(Ordering::Acquire)
    }

    /// Posts call `seq` with `input`: into the request area when it fits, else announced as
    /// coming on the socket (which the caller then sends). Wakes the worker if it sleeps.
    pub(super) fn post_call(&self, seq: u64, input: &[u8]) -> Posted {
        let posted = if self.map.write_area(REQUEST_AREA, input) {
            let len = u64::try_from(input.len()).unwrap_or(u64::MAX);
            self.map
                .u64_at(REQUEST_LEN_AT)
                .store(len, Ordering::Relaxed);
            self.map
                .u32_at(REQUEST_ON_SOCKET_AT)
                .store(0, Ordering::Relaxed);
            Posted::InRegion
        } else {
            self.map.u64_at(REQUEST_LEN_AT).store(0, Ordering::Relaxed);
            self.map
                .u32_at(REQUEST_ON_SOCKET_AT)
                .store(1, Ordering::Relaxed);
            Posted::OnSocket
        };
        self.map.u64_at(CALL_SEQ_AT).store(seq, Ordering::Release);
        self.map.u32_at(CALL_TURN_AT).fetch_add(1, Ordering::SeqCst);
        if self.map.u32_at(WORKER_SLEEPING_AT).load(Ordering::SeqCst) != 0 {
            futex_wake(self.map.u32_at(CALL_TURN_AT));
        }
        posted
    }

    /// Waits until the reply turn is no longer `since`, at most until `until`; whether it
    /// changed. Spins for [`SPIN`] first, then sleeps on the futex word. With
    /// `attention_since`, it also returns (false) as soon as the attention count is no
    /// longer that: the worker wrote on the socket. Without it the count is not looked at,
    /// which is how the host stops heeding a worker whose nudges find nothing on the
    /// socket ([`super::host`]): bumping the count in a loop would otherwise keep the host
    /// polling without ever sleeping, a CPU of the host's for as long as the call's
    /// deadline.
    pub(super) fn wait_reply(
        &self,
        since: u32,
        attention_since: Option<u32>,
        until: Instant,
    ) -> bool {
        let turn = self.map.u32_at(REPLY_TURN_AT);
        let attention = self.map.u32_at(ATTENTION_AT);
        let changed = || turn.load(Ordering::Acquire) != since;
        let nudged = || attention_since.is_some_and(|a| attention.load(Ordering::Acquire) != a);
        let (mine, theirs) = (self.map.u32_at(HOST_CPU_AT), self.map.u32_at(WORKER_CPU_AT));
        if spin_until(|| changed() || nudged(), mine, theirs) {
            return changed();
        }
        cpu_hint::asleep(mine);
        let sleeping = self.map.u32_at(HOST_SLEEPING_AT);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return changed();
            }
            sleeping.store(1, Ordering::SeqCst);
            if turn.load(Ordering::SeqCst) != since || nudged() {
                sleeping.store(0, Ordering::Relaxed);
                return changed();
            }
            futex_wait(turn, since, Some(left));
            sleeping.store(0, Ordering::Relaxed);
            if changed() || nudged() {
                return changed();
            }
            // Woken with nothing to see: the worker (or a signal) did that, and a worker
            // doing it in a loop would keep this thread busy. Pause before sleeping on the
            // word again, so such wake-ups cost the host at most one per pause.
            std::thread::sleep(SPURIOUS_PAUSE.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// The worker's attention count (see [`ATTENTION_AT`]): read before a wait, it lets
    /// [`HostRing::wait_reply`] return early when the worker wrote on the socket.
    pub(super) fn attention(&self) -> u32 {
        self.map.u32_at(ATTENTION_AT).load(Ordering::Acquire)
    }

    /// Reads the reply to call `seq`: each field once, checked ([`check_reply`]), the bytes
    /// copied out, then parsed from the copy ([`parse_reply`]). `output_cap` is the call's
    /// output limit.
    pub(super) fn read_reply(
        &mut self,
        seq: u64,
        output_cap: usize,
    ) -> Result<Reply, ProtocolViolation> {
        let fields = ReplyFields {
            seq: self.map.u64_at(REPLY_SEQ_AT).load(Ordering::Acquire),
            len: self.map.u64_at(REPLY_LEN_AT).load(Ordering::Acquire),
            tag: self.map.u32_at(REPLY_TAG_AT).load(Ordering::Acquire),
        };
        let (tag, len) = check_reply(fields, seq, output_cap)?;
        if tag == TAG_ON_SOCKET {
            return Ok(Reply::OnSocket);
        }
        if !self.map.read_area_into(REPLY_AREA, len, 0, &mut self.reply) {
            return Err(ProtocolViolation::RegionLength {
                len: fields.len,
                cap: AREA_BYTES,
            });
        }
        parse_reply(tag, &self.reply).map(Reply::Done)
    }
}

/// A reply's fields as the host read them, each once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyFields {
    pub(crate) seq: u64,
    pub(crate) len: u64,
    pub(crate) tag: u32,
}

#[cfg(any(test, feature = "fuzzing"))]
impl ReplyFields {
    /// The fields from their [`REPLY_FIELDS`]-byte image (missing bytes read as zero).
    pub(crate) fn from_bytes(header: &[u8]) -> ReplyFields {
        let mut image = [0u8; REPLY_FIELDS];
        for (to, from) in image.iter_mut().zip(header) {
            *to = *from;
        }
        let field = |at: usize| image.get(at..).unwrap_or_default();
        let s = field(0).first_chunk::<8>().copied().unwrap_or_default();
        let l = field(8).first_chunk::<8>().copied().unwrap_or_default();
        let t = field(16).first_chunk::<4>().copied().unwrap_or_default();
        ReplyFields {
            seq: u64::from_le_bytes(s),
            len: u64::from_le_bytes(l),
            tag: u32::from_le_bytes(t),
        }
    }

    /// The [`REPLY_FIELDS`]-byte image of the fields (for tests).
    #[cfg(test)]
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(REPLY_FIELDS);
        v.extend_from_slice(&self.seq.to_le_bytes());
        v.extend_from_slice(&self.len.to_le_bytes());
        v.extend_from_slice(&self.tag.to_le_bytes());
        v
    }
}

/// Checks a reply's fields: the sequence is `expected_seq`'s, the tag known, the length at
/// most what that tag may carry (the area, and `output_cap` for an output, [`FAULT_CAP`] for
/// a fault). Returns the tag and the length as a `usize` to copy.
pub(crate) fn check_reply(
    fields: ReplyFields,
    expected_seq: u64,
    output_cap: usize,
) -> Result<(u32, usize), ProtocolViolation> {
    if fields.seq != expected_seq {
        return Err(ProtocolViolation::WrongSequence {
            expected: expected_seq,
            got: fields.seq,
        });
    }
    let cap = match fields.tag {
        TAG_OUTPUT => output_cap.min(AREA_BYTES),
        TAG_FAULT => FAULT_CAP,
        TAG_ON_SOCKET => 0,
        other => return Err(ProtocolViolation::RegionTag(other)),
    };
    match usize::try_from(fields.len) {
        Ok(len) if len <= cap => Ok((fields.tag, len)),
        _ => Err(ProtocolViolation::RegionLength {
            len: fields.len,
            cap,
        }),
    }
}

/// Parses a reply's copied-out bytes for its (checked) tag: an output is decoded as the
/// plugin's result; a fault must be a [`CallFault`].
pub(crate) fn parse_reply(
    tag: u32,
    bytes: &[u8],
) -> Result<Result<PluginResult, FaultError>, ProtocolViolation> {
    match tag {
        TAG_OUTPUT => Ok(decode_result(bytes)),
        TAG_FAULT => CallFault::decode(bytes),
        other => Err(ProtocolViolation::RegionTag(other)),
    }
}

/// What the host makes of a reply in the region, as a plain function of bytes: `header` is
/// the [`REPLY_FIELDS`]-byte image of the reply's fields and `area` the reply area. The
/// fuzz target and the corpus replay call it; [`HostRing::read_reply`] runs the same checks
/// and parse on fields it loaded once.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode_reply(
    header: &[u8],
    area: &[u8],
    expected_seq: u64,
    output_cap: usize,
) -> Result<Reply, ProtocolViolation> {
    let fields = ReplyFields::from_bytes(header);
    let (tag, len) = check_reply(fields, expected_seq, output_cap)?;
    if tag == TAG_ON_SOCKET {
        return Ok(Reply::OnSocket);
    }
    // The fuzzer's area may be shorter than the real one: what it lacks reads as zeros.
    let mut bytes = area.get(..len.min(area.len())).unwrap_or_default().to_vec();
    bytes.resize(len, 0);
    parse_reply(tag, &bytes).map(Reply::Done)
}
