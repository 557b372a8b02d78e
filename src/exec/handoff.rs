//! A single-slot hand-off between the callers of one plugin and the plugin's own thread.
//!
//! One atomic word says who owns the slot ([`Handoff::call`] on the callers' side,
//! [`Handoff::next`] / [`Handoff::reply`] on the plugin thread's); the call's input and its
//! result move through two cells that only the owner named by that word touches. A call
//! back to back with the previous one costs two atomic compare-and-swaps per side and no
//! system call when the other side answers within [`YIELD_EVERY`] rounds of polling (else
//! a `sched_yield` per round of them, since the other side is then most likely waiting for
//! a CPU). A side that has polled for [`SPIN`] (50 µs) without seeing its turn sets its
//! "asleep" bit in the word and sleeps on it with a private futex; whoever changes the word
//! next sees the bit and wakes it. So an idle plugin thread costs no CPU once its [`SPIN`]
//! after the last call is over, and a call to a sleeping thread costs one `futex` wake.
//!
//! Why hand-written: the earlier `Mutex` + two `Condvar`s paid a `futex` wake on every
//! `notify` (the standard library's condition variable does not track sleepers) plus the
//! mutex's own: under `strace -f -c`, 4.1 `futex` calls a call against 0.5 here, and p50
//! 14–16 µs a call against 5–7 µs here, in the same interleaved runs of a no-op plugin on
//! this 2-vCPU machine at load 18 (the target, 2 µs, needs both threads on a CPU); a channel
//! crate (crossbeam, flume) allocates per message or wakes through its own lock, and none
//! offers "wait for the turn until a deadline, then the call until the same deadline, and
//! poison on timeout" as one state machine.
//!
//! The rules kept from the executor this replaces: one call at a time (the turn is the
//! `Idle → Claimed` transition), every wait bounded by the caller's deadline (for the turn
//! as for the reply), and a caller that times out on its call poisons the slot: the plugin
//! thread may still be running it, so nobody may take the slot again.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a waiting side polls before it sleeps. Waking a sleeping thread costs a futex
/// call and, on an idle (virtual) CPU, tens of microseconds before it runs; a reply, or the
/// next call of a caller calling back to back, that comes sooner is picked up without that.
/// It also bounds what an idle plugin costs: at most this much CPU after each call.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// Rounds of polling between two `sched_yield`s. Polling runs this many rounds (well under
/// a microsecond) with no system call, then yields the CPU once per round of this many: on a
/// busy machine the other side is often waiting for this very CPU, and measured on this
/// 2-vCPU machine at load 18 a yield every 16 rounds gave p50 5.2 µs a call against 17.5 µs
/// for 5 µs of pure polling first (and 9–10 µs for 2 µs of it).
const YIELD_EVERY: u32 = 16;

// The phase, in the low bits of the word.
/// No call in flight: the next caller may claim the slot.
const IDLE: u32 = 0;
/// A caller holds the turn and is writing its input.
const CLAIMED: u32 = 1;
/// A call's input waits for the plugin thread.
const REQUEST: u32 = 2;
/// The plugin thread took the input and runs the call.
const RUNNING: u32 = 3;
/// The call's result waits for its caller.
const REPLY: u32 = 4;
/// The handle was dropped: the plugin thread stops.
const CLOSED: u32 = 5;
/// The plugin thread ended.
const GONE: u32 = 6;
const PHASE: u32 = 0xff;
/// A caller (waiting for the turn or for its reply) sleeps on the word.
const CALLER_ASLEEP: u32 = 1 << 8;
/// The plugin thread sleeps on the word.
const PLUGIN_ASLEEP: u32 = 1 << 9;
const ASLEEP: u32 = CALLER_ASLEEP | PLUGIN_ASLEEP;
/// `futex` wake count for "all of them" (the kernel's `INT_MAX`).
const WAKE_ALL: u32 = i32::MAX as u32;
/// A call timed out: the slot is never used again.
const POISONED: u32 = 1 << 10;

/// Why a call got no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The deadline passed while the caller waited for its turn; nothing was sent, so
    /// nothing is poisoned.
    TurnTimeout,
    /// The deadline passed while the plugin thread held the call; the slot is poisoned.
    Timeout,
    /// An earlier call timed out.
    Poisoned,
    /// The plugin thread ended, or the slot was closed.
    Gone,
}

/// The slot. Share it (`Arc`) between the handle, whose callers use [`Handoff::call`], and
/// the one plugin thread, which alone may use [`Handoff::next`], [`Handoff::reply`] and
/// [`Handoff::gone`].
pub(crate) struct Handoff<I, O> {
    /// Phase and flags; also the futex word both sides sleep on.
    state: AtomicU32,
    /// Written by the caller that claimed the slot (phase `CLAIMED`), taken by the plugin
    /// thread when it moves `REQUEST → RUNNING`.
    input: UnsafeCell<Option<I>>,
    /// Written by the plugin thread in phase `RUNNING`, taken by the caller in `REPLY`.
    output: UnsafeCell<Option<O>>,
}

// SAFETY: the cells are only touched by the side the state word names as their owner, and
// ownership changes hands by compare-and-swap with Release (the side handing over) and
// Acquire (the side taking over), so accesses to a cell never overlap and each sees the
// other's writes. The values cross threads, hence `Send` on both types.
#[allow(unsafe_code)]
unsafe impl<I: Send, O: Send> Sync for Handoff<I, O> {}

impl<I, O> std::fmt::Debug for Handoff<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Bounded polling of one wait.
struct Poll {
    start: Instant,
    rounds: u32,
    over: bool,
}

impl Poll {
    fn new() -> Self {
        Poll {
            start: Instant::now(),
            rounds: 0,
            over: false,
        }
    }

    /// Pauses once; false once the spin is over (the waiter should sleep). The clock is
    /// read only every [`YIELD_EVERY`] rounds.
    fn pause(&mut self) -> bool {
        if self.over {
            return false;
        }
        self.rounds = self.rounds.wrapping_add(1);
        if !self.rounds.is_multiple_of(YIELD_EVERY) {
            std::hint::spin_loop();
            return true;
        }
        if self.start.elapsed() >= SPIN {
            self.over = true;
            return false;
        }
        std::thread::yield_now();
        true
    }
}

impl<I, O> Default for Handoff<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I, O> Handoff<I, O> {
    /// An idle slot.
    pub(crate) fn new() -> Self {
        Handoff {
            state: AtomicU32::new(IDLE),
            input: UnsafeCell::new(None),
            output: UnsafeCell::new(None),
        }
    }

    /// Moves the word from `seen` to `phase` (keeping the poison flag, clearing the sleep
    /// bits), waking every sleeper if there was one. False if the word was not `seen`.
    fn advance(&self, seen: u32, phase: u32) -> bool {
        let next = phase | (seen & POISONED);
        if self
            .state
            .compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if seen & ASLEEP != 0 {
            self.wake();
        }
        true
    }

    fn wake(&self) {
        // At most a few sleepers (the plugin thread, the caller in flight, callers waiting
        // for the turn): each re-reads the word and goes back to sleep if it is not its turn.
        // The kernel reads the count as an `int`: `u32::MAX` would be -1 and wake only one.
        let _ = rustix::thread::futex::wake(
            &self.state,
            rustix::thread::futex::Flags::PRIVATE,
            WAKE_ALL,
        );
    }

    /// One step of waiting for the word to leave `seen`: polls while the spin lasts, then
    /// sets `asleep` and sleeps on the word until it changes or `deadline` passes. Returns
    /// false once `deadline` has passed (checked once the spin is over).
    fn wait(&self, poll: &mut Poll, seen: u32, asleep: u32, deadline: Option<Instant>) -> bool {
        // While polling the deadline is not read: it is overshot by at most SPIN.
        if poll.pause() {
            return true;
        }
        let remaining = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                Some(left)
            }
            None => None,
        };
        let expected = seen | asleep;
        if seen & asleep == 0
            && self
                .state
                .compare_exchange(seen, expected, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            // The word changed: look again before sleeping.
            return true;
        }
        let timeout = remaining.map(|left| rustix::thread::futex::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        });
        // EAGAIN (the word changed), EINTR and ETIMEDOUT all mean: look again.
        let _ = rustix::thread::futex::wait(
            &self.state,
            rustix::thread::futex::Flags::PRIVATE,
            expected,
            timeout.as_ref(),
        );
        true
    }

    /// Caller side: waits for the turn, hands `input` to the plugin thread and waits for
    /// its result, all before `deadline`. Any number of threads may call this at once;
    /// they take turns.
    pub(crate) fn call(&self, input: I, deadline: Instant) -> Result<O, CallError> {
        // The turn: IDLE → CLAIMED.
        let mut poll = Poll::new();
        loop {
            let seen = self.state.load(Ordering::Acquire);
            if seen & POISONED != 0 {
                return Err(CallError::Poisoned);
            }
            match seen & PHASE {
                IDLE => {
                    if self.advance(seen, CLAIMED) {
                        break;
                    }
                }
                CLOSED | GONE => return Err(CallError::Gone),
                _ => {
                    if !self.wait(&mut poll, seen, CALLER_ASLEEP, Some(deadline)) {
                        return Err(CallError::TurnTimeout);
                    }
                }
            }
        }
        self.put_input(input);
        // Publish: CLAIMED → REQUEST. Only the plugin thread's end (GONE) or a sleep bit
        // can change the word meanwhile.
        loop {
            let seen = self.state.load(Ordering::Acquire);
            match seen & PHASE {
                CLAIMED => {
                    if self.advance(seen, REQUEST) {
                        break;
                    }
                }
                _ => return Err(CallError::Gone),
            }
        }
        // The reply.
        let mut poll = Poll::new();
        loop {
            let seen = self.state.load(Ordering::Acquire);
            match seen & PHASE {
                REPLY => {
                    let output = self.take_output();
                    // Hands the slot to the next caller. Only a sleep bit (retry) or the
                    // plugin thread's end (leave it) changes the word meanwhile.
                    loop {
                        let now = self.state.load(Ordering::Acquire);
                        if now & PHASE != REPLY || self.advance(now, IDLE) {
                            break;
                        }
                    }
                    return output.ok_or(CallError::Gone);
                }
                REQUEST | RUNNING => {
                    if !self.wait(&mut poll, seen, CALLER_ASLEEP, Some(deadline)) {
                        // The plugin thread holds (or may yet take) the call: the slot
                        // stays busy for good, and everyone waiting hears so now.
                        self.state.fetch_or(POISONED, Ordering::AcqRel);
                        self.wake();
                        return Err(CallError::Timeout);
                    }
                }
                _ => return Err(CallError::Gone),
            }
        }
    }

    #[allow(unsafe_code)]
    fn put_input(&self, input: I) {
        // SAFETY: this caller moved the word to CLAIMED, so it alone owns the cells until
        // it publishes REQUEST (the plugin thread takes the input only after that, with
        // Acquire; other callers wait for IDLE).
        unsafe { *self.input.get() = Some(input) };
    }

    #[allow(unsafe_code)]
    fn take_output(&self) -> Option<O> {
        // SAFETY: the word is REPLY, read with Acquire after the plugin thread's Release:
        // the plugin thread no longer touches the cells, and only this caller (the one whose
        // call is in flight, holding the turn) reads them until it moves the word to IDLE.
        unsafe { (*self.output.get()).take() }
    }

    /// Plugin side: waits (without a deadline: an idle plugin sleeps) for the next call's
    /// input; `None` once the slot is closed.
    pub(crate) fn next(&self) -> Option<I> {
        let mut poll = Poll::new();
        loop {
            let seen = self.state.load(Ordering::Acquire);
            match seen & PHASE {
                REQUEST => {
                    if self.advance(seen, RUNNING) {
                        return self.take_input();
                    }
                }
                CLOSED | GONE => return None,
                _ => {
                    self.wait(&mut poll, seen, PLUGIN_ASLEEP, None);
                }
            }
        }
    }

    #[allow(unsafe_code)]
    fn take_input(&self) -> Option<I> {
        // SAFETY: the plugin thread just moved the word REQUEST → RUNNING (Acquire, after
        // the caller's Release); in RUNNING it alone owns the cells.
        unsafe { (*self.input.get()).take() }
    }

    #[allow(unsafe_code)]
    fn put_output(&self, output: O) {
        // SAFETY: the word is RUNNING, set by this (the plugin) thread, which owns the cells
        // until it publishes REPLY. A caller that timed out meanwhile left them alone.
        unsafe { *self.output.get() = Some(output) };
    }

    /// Plugin side: hands the result of the call taken by [`Handoff::next`] to its caller.
    /// False if the slot was closed meanwhile (the plugin thread should stop).
    pub(crate) fn reply(&self, output: O) -> bool {
        self.put_output(output);
        loop {
            let seen = self.state.load(Ordering::Acquire);
            match seen & PHASE {
                RUNNING => {
                    if self.advance(seen, REPLY) {
                        return true;
                    }
                }
                _ => return false,
            }
        }
    }

    /// Handle side: no more calls; the plugin thread's [`Handoff::next`] returns `None`.
    /// Call it only when no call is in flight (the handle is being dropped); a call
    /// abandoned on timeout is fine.
    pub(crate) fn close(&self) {
        loop {
            let seen = self.state.load(Ordering::Acquire);
            if seen & PHASE == GONE || self.advance(seen, CLOSED) {
                return;
            }
        }
    }

    /// Plugin side: the plugin thread ends; callers waiting hear it at once.
    pub(crate) fn gone(&self) {
        loop {
            let seen = self.state.load(Ordering::Acquire);
            if self.advance(seen, GONE) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
