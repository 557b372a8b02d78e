//! The single-slot hand-off between the callers of one thread-mode plugin and the plugin's
//! own thread: a call's input, the plugin's host tool questions and their answers, and the
//! call's result, with no lock and no system call when both sides are running.
//!
//! **The state word.** One `AtomicU32` holds the phase of the call in flight (its low
//! bits), one "asleep" bit per side, and an interrupt count (its high bits). Each value
//! moves through an [`UnsafeCell`] that only one side may touch at a time, and which side
//! that is follows from the phase:
//!
//! | phase | published by | the next step | cell the phase hands over |
//! |---|---|---|---|
//! | `IDLE` | the caller (or at start) | the turn holder posts | — (input: turn holder's) |
//! | `POSTED` | the caller | plugin: `RUNNING`; caller: `ABANDONED` | input |
//! | `RUNNING` | the plugin | plugin: `ASKED`, `REPLIED`; caller: `ABANDONED` | — |
//! | `ASKED` | the plugin | caller: `ANSWERING`, `ABANDONED`; plugin: `RUNNING` (gave up) | question |
//! | `ANSWERING` | the caller | caller: `ANSWERED` | — (the caller runs the tool) |
//! | `ANSWERED` | the caller | plugin: `RUNNING`; caller: `ABANDONED` | answer |
//! | `REPLIED` | the plugin | caller: `IDLE` | output |
//! | `ABANDONED` | the caller (timeout, cancel) | handle dropped: `CLOSED` | — |
//! | `CLOSED` | the handle's drop | — | — |
//! | `GONE` | the plugin thread's end | — | — |
//!
//! Every step is a compare-and-swap from the exact word last read (acquire/release), and
//! **whoever moves the word out of a phase owns the cell that phase handed over**: so a
//! caller that gives up on a call still posted takes its input back, a plugin thread that
//! gives up on a question takes the question back, and nothing is read by both sides or
//! dropped twice. A value left in a cell (the plugin thread ended with the call posted) is
//! dropped with the hand-off.
//!
//! **Waiting.** A waiting side polls the word [`YIELD_EVERY`] times with no system call (a
//! reply from a plugin thread running on another CPU is normally there by then), then
//! gives its CPU away once (`sched_yield`: on a busy machine the other side is most likely
//! waiting for this very CPU), and so on for [`SPIN`]; then it sets its "asleep" bit and
//! sleeps on the word with a private futex. Where the other side was last seen polling
//! changes that ([`super::cpu_hint`]): on another CPU, the waiter polls without yielding
//! (for the rest of [`SPIN`]); on this very CPU, it sleeps at once (yielding would keep both on
//! one CPU, as the scheduler does not move a task it counts as cache-hot; the wake-up that
//! ends the sleep places the sleeper on an idle CPU if there is one). Whoever moves the word to a phase the sleeper waits for clears the
//! bit and wakes it: one `futex` wake, paid only when the other side actually slept. So a
//! plugin idle for longer than [`SPIN`] costs no CPU, and a call costs no system call when
//! both threads are on a CPU. The caller's sleep is bounded by its deadline.
//!
//! The yield from the first rounds on is measured, not guessed: on this 2-vCPU machine
//! under load (load average 9–14, other builds running), `examples/call_profile.rs`'s
//! p50 for one no-op call was 7.5–7.7 µs with it (p99 14–22 µs), against 18–21 µs for
//! 5 µs of pure polling first, 52 µs for 20 µs of it, and 10–18 µs (p99 30–53 µs) for the
//! `Mutex` + `Condvar` slot this replaced, in the same interleaved runs: when both threads
//! share a CPU, polling without yielding only delays the side being waited for.
//!
//! **Turns and cancellation.** Callers take turns through a second word (held bit and an
//! interrupt count; waiters counted beside it), each waiting no longer than its own
//! deadline: a call stuck in the plugin never holds another caller past its deadline, and
//! that caller's call reached nothing, so it poisons nothing. A caller that times out or is
//! cancelled while its call runs abandons the call (`ABANDONED`: the plugin thread may
//! still be running it, so the slot is never used again) and poisons the hand-off; the
//! callers waiting for their turn are woken at once and told. [`Handoff::interrupt`] (a
//! cancellation token's hook) adds one to both words' interrupt counts and wakes their
//! sleepers: a futex wait whose word changed returns at once, so a wake-up that races a
//! caller going to sleep is never lost; the caller then looks at its token.
//!
//! Why hand-written: a `Mutex` + `Condvar` slot (this executor before) pays a futex wake on
//! every `notify` and the mutex's own (measured: p50 6.9–20 µs a call against 1.2 µs for a
//! direct FFI call, see BENCHMARKS.md), and channel crates (crossbeam, flume) allocate per
//! message or wake through a lock of their own, and none offers "wait for the turn until a
//! deadline, then for the call until the same deadline; poison on timeout; answer the
//! other side's questions meanwhile" as one state machine.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::cpu_hint::{self, NO_CPU};

/// How long a waiting side polls in all before it sleeps on the futex. Also what an idle
/// plugin thread costs after each call: at most this much CPU.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// Polls between two `sched_yield`s (and two looks at the clock): well under a
/// microsecond of polling.
const YIELD_EVERY: u32 = 32;

// Phases (the low four bits of the state word).
const IDLE: u32 = 0;
const POSTED: u32 = 1;
const RUNNING: u32 = 2;
const ASKED: u32 = 3;
const ANSWERING: u32 = 4;
const ANSWERED: u32 = 5;
const REPLIED: u32 = 6;
const ABANDONED: u32 = 7;
const CLOSED: u32 = 8;
const GONE: u32 = 9;
const PHASE: u32 = 0xf;
/// The caller holding the turn sleeps on the word.
const CALLER_ASLEEP: u32 = 1 << 4;
/// The plugin thread sleeps on the word.
const PLUGIN_ASLEEP: u32 = 1 << 5;
/// One interrupt ([`Handoff::interrupt`]); the count above it wraps.
const INTERRUPT: u32 = 1 << 8;
const COUNT: u32 = !(INTERRUPT - 1);

/// In the turn word: a caller holds the turn. The bits above count interrupts.
const HELD: u32 = 1;
const TURN_INTERRUPT: u32 = 2;

fn phase(word: u32) -> u32 {
    word & PHASE
}

/// Why a call got no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The deadline passed while the call was in the plugin's hands: the call was abandoned
    /// and the hand-off poisoned.
    Timeout,
    /// The deadline passed before the call was sent (while waiting for the turn, or before
    /// it came): nothing was sent, nothing poisoned.
    TurnTimeout,
    /// The caller's `cancelled` said so: while waiting for the turn (`running: false`,
    /// nothing sent) or while the call ran (abandoned and poisoned, as on a timeout).
    Cancelled {
        /// Whether the call had reached the plugin thread's slot.
        running: bool,
    },
    /// An earlier call was abandoned: no call may use the slot again.
    Poisoned,
    /// The plugin thread ended (or the hand-off was closed).
    Gone,
}

/// Why a question got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AskError {
    /// No call is running: its caller abandoned it, or the hand-off was closed.
    NoCall,
    /// The deadline passed before the caller took the question (it was taken back).
    Timeout,
}

/// A value handed over through the slot. Ownership follows the state word (see the module
/// doc): only the side that owns the cell in the current phase may call these.
struct Cell<T>(UnsafeCell<Option<T>>);

impl<T> Cell<T> {
    const fn new() -> Self {
        Cell(UnsafeCell::new(None))
    }

    /// Stores `value` (dropping what was left there, which the protocol never leaves).
    ///
    /// # Safety
    /// The calling side owns this cell in the phase it last read, and no other reference
    /// to its contents exists.
    #[allow(unsafe_code)]
    unsafe fn put(&self, value: T) {
        // SAFETY: exclusive access, by this function's contract.
        unsafe { *self.0.get() = Some(value) }
    }

    /// Takes the value out.
    ///
    /// # Safety
    /// As for [`Cell::put`].
    #[allow(unsafe_code)]
    unsafe fn take(&self) -> Option<T> {
        // SAFETY: exclusive access, by this function's contract.
        unsafe { (*self.0.get()).take() }
    }
}

/// The hand-off: callers' input `I`, the plugin thread's questions `Q` and their answers
/// `A`, and the call's output `O`.
pub(crate) struct Handoff<I, Q, A, O> {
    state: AtomicU32,
    turn: AtomicU32,
    /// Callers sleeping (or about to) on `turn`.
    turn_waiters: AtomicU32,
    poisoned: AtomicBool,
    /// The CPU each side (callers, plugin thread) is polling on, or `NO_CPU` while it
    /// sleeps or before it first waited: how to wait ([`super::cpu_hint`]).
    cpus: [AtomicU32; 2],
    input: Cell<I>,
    question: Cell<Q>,
    answer: Cell<A>,
    output: Cell<O>,
}

// SAFETY: the cells are only touched by the side the state word names (module doc), with
// acquire/release on every hand-over, so moving `Send` values between threads through
// them is sound; everything else is atomics.
#[allow(unsafe_code)]
unsafe impl<I: Send, Q: Send, A: Send, O: Send> Sync for Handoff<I, Q, A, O> {}

impl<I, Q, A, O> std::fmt::Debug for Handoff<I, Q, A, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("phase", &phase(self.state.load(Ordering::Relaxed)))
            .field("poisoned", &self.poisoned.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a wait ended with.
enum Woke {
    /// The phase is no longer one the waiter waits in: the word as read.
    Ready(u32),
    /// The waiter's `stop` said so.
    Stopped,
    /// Its deadline passed.
    TimedOut,
}

/// The turn, released when dropped: the turn word and its waiter count.
struct Turn<'a>(&'a AtomicU32, &'a AtomicU32);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Turn(turn, waiters) = *self;
        // Changes the word, so a waiter about to sleep on the held value does not.
        turn.fetch_and(!HELD, Ordering::SeqCst);
        if waiters.load(Ordering::SeqCst) > 0 {
            // All of them: one that was woken may leave (its deadline passed) instead of
            // taking the turn, and after a poisoning every one must hear of it.
            futex_wake_all(turn);
        }
    }
}

impl<I, Q, A, O> Handoff<I, Q, A, O> {
    /// An idle hand-off.
    pub(crate) const fn new() -> Self {
        Handoff {
            state: AtomicU32::new(IDLE),
            cpus: [AtomicU32::new(NO_CPU), AtomicU32::new(NO_CPU)],
            turn: AtomicU32::new(0),
            turn_waiters: AtomicU32::new(0),
            poisoned: AtomicBool::new(false),
            input: Cell::new(),
            question: Cell::new(),
            answer: Cell::new(),
            output: Cell::new(),
        }
    }

    /// Whether a call was abandoned: every later call fails with `Poisoned`.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Moves the word from exactly `from` to phase `to`, keeping the interrupt count. The
    /// side making the step (`me`: its asleep bit) is awake, so its own bit goes, if a
    /// wake-up it did not need left it set; the other side's is kept when that side still
    /// waits after this step (`wakes` false), else cleared and that side woken. Whether
    /// the step was made (the word had changed if not).
    fn step(&self, from: u32, to: u32, me: u32, wakes: bool) -> bool {
        let asleep = from & (CALLER_ASLEEP | PLUGIN_ASLEEP) & !me;
        let kept = if wakes { 0 } else { asleep };
        let word = (from & COUNT) | to | kept;
        if self
            .state
            .compare_exchange(from, word, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if wakes && asleep != 0 {
            futex_wake_all(&self.state);
        }
        true
    }

    /// Waits while the phase is one `waits_in` accepts: polls, then sleeps with `bit` set,
    /// until `deadline` (`None`: no bound) or until `stop` says so. The bit may still be
    /// set on the way out (a timeout, a changed word): the waiter's next step clears it.
    /// Kept out of line so that a profile (examples/call_profile.rs) tells the polling
    /// apart from the rest of a call.
    #[inline(never)]
    fn wait(
        &self,
        bit: u32,
        waits_in: impl Fn(u32) -> bool,
        deadline: Option<Instant>,
        stop: &dyn Fn() -> bool,
    ) -> Woke {
        let (mine, theirs) = if bit == CALLER_ASLEEP {
            (&self.cpus[0], &self.cpus[1])
        } else {
            (&self.cpus[1], &self.cpus[0])
        };
        let mut cpu = cpu_hint::publish(mine);
        let mut polls: u32 = 0;
        let mut started: Option<Instant> = None;
        loop {
            let word = self.state.load(Ordering::Acquire);
            if !waits_in(phase(word)) {
                return Woke::Ready(word);
            }
            if stop() {
                return Woke::Stopped;
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(YIELD_EVERY) {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Woke::TimedOut;
            }
            let spun = now.saturating_duration_since(*started.get_or_insert(now));
            if spun < SPIN {
                // This side may have been moved since it last said where it runs.
                let here = cpu_hint::current_cpu();
                if here != cpu {
                    cpu = here;
                    mine.store(cpu, Ordering::Relaxed);
                }
                match cpu_hint::next(cpu, theirs.load(Ordering::Relaxed)) {
                    cpu_hint::Next::Poll => continue,
                    cpu_hint::Next::Yield => {
                        std::thread::yield_now();
                        continue;
                    }
                    cpu_hint::Next::Sleep => {}
                }
            }
            if word & bit == 0
                && self
                    .state
                    .compare_exchange(word, word | bit, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            cpu_hint::asleep(mine);
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            futex_wait(&self.state, word | bit, timeout);
            cpu = cpu_hint::publish(mine);
        }
    }

    // -----------------------------------------------------------------------------------
    // The callers' side.

    /// Runs one call: waits for the turn and then for the result, both until `deadline`,
    /// answering the plugin thread's questions with `answer` meanwhile. `cancelled` is
    /// looked at while waiting (and after each [`Handoff::interrupt`]).
    pub(crate) fn call(
        &self,
        input: I,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
        answer: &mut dyn FnMut(Q) -> A,
    ) -> Result<O, CallError> {
        if self.is_poisoned() {
            return Err(CallError::Poisoned);
        }
        let _turn = self.take_turn(deadline, cancelled)?;
        // Again: the call before ours may have been abandoned while we waited.
        if self.is_poisoned() {
            return Err(CallError::Poisoned);
        }
        if cancelled() {
            return Err(CallError::Cancelled { running: false });
        }
        // A deadline that passed before the turn came (a zero timeout, one already past)
        // sends nothing: posted, the call would be abandoned at once and poison the
        // hand-off for a plugin that did nothing wrong.
        if Instant::now() >= deadline {
            return Err(CallError::TurnTimeout);
        }
        self.post(input)?;
        loop {
            let woke = self.wait(
                CALLER_ASLEEP,
                |p| matches!(p, POSTED | RUNNING | ANSWERED),
                Some(deadline),
                cancelled,
            );
            let word = match woke {
                Woke::Ready(word) if phase(word) == ASKED && cancelled() => {
                    match self.abandon()? {
                        true => return Err(CallError::Cancelled { running: true }),
                        false => continue,
                    }
                }
                Woke::Ready(word) => word,
                Woke::Stopped => match self.abandon()? {
                    true => return Err(CallError::Cancelled { running: true }),
                    false => continue,
                },
                Woke::TimedOut => match self.abandon()? {
                    true => return Err(CallError::Timeout),
                    false => continue,
                },
            };
            match phase(word) {
                REPLIED => return self.take_reply(),
                ASKED => {
                    if !self.step(word, ANSWERING, CALLER_ASLEEP, false) {
                        continue;
                    }
                    // SAFETY: the step out of `ASKED` was ours: the question is ours.
                    #[allow(unsafe_code)]
                    let question = unsafe { self.question.take() };
                    let reply = question.map(&mut *answer);
                    self.give_answer(reply);
                }
                GONE | CLOSED => return Err(CallError::Gone),
                // `IDLE`, `ANSWERING`, `ABANDONED` are never seen by the turn holder.
                _ => return Err(CallError::Poisoned),
            }
        }
    }

    /// Takes the output of a `REPLIED` word and makes the slot `IDLE`.
    fn take_reply(&self) -> Result<O, CallError> {
        // SAFETY: `REPLIED` hands the output to the caller, and only the caller moves the
        // word out of it (to `IDLE`, below).
        #[allow(unsafe_code)]
        let output = unsafe { self.output.take() };
        loop {
            let word = self.state.load(Ordering::Acquire);
            // The plugin thread may be asleep waiting for the next call: its bit is kept.
            // (Its end, `GONE`, is the one other step out of `REPLIED`.)
            if phase(word) != REPLIED || self.step(word, IDLE, CALLER_ASLEEP, false) {
                break;
            }
        }
        output.ok_or(CallError::Gone)
    }

    /// In `ANSWERING`: hands `reply` to the waiting plugin thread (`None`: a question cell
    /// found empty, which the protocol never leaves; the plugin thread gets no answer).
    fn give_answer(&self, reply: Option<A>) {
        if let Some(reply) = reply {
            // SAFETY: in `ANSWERING` the answer cell is the caller's: the plugin thread
            // waits, and only the caller leaves this phase.
            #[allow(unsafe_code)]
            unsafe {
                self.answer.put(reply);
            }
        }
        loop {
            let word = self.state.load(Ordering::Acquire);
            if phase(word) != ANSWERING {
                // Only the plugin thread's end leaves `ANSWERING` but us: the answer is
                // still ours.
                // SAFETY: as just said.
                #[allow(unsafe_code)]
                drop(unsafe { self.answer.take() });
                return;
            }
            if self.step(word, ANSWERED, CALLER_ASLEEP, true) {
                return;
            }
        }
    }

    /// Puts `input` in the slot and posts it.
    fn post(&self, input: I) -> Result<(), CallError> {
        // SAFETY: in `IDLE` the input cell is the turn holder's, and we hold the turn.
        #[allow(unsafe_code)]
        let posted = unsafe { self.hand_over(&self.input, input, IDLE, POSTED, CALLER_ASLEEP) };
        match posted {
            Ok(()) => Ok(()),
            Err(GONE | CLOSED) => Err(CallError::Gone),
            Err(_) => Err(CallError::Poisoned),
        }
    }

    /// Puts `value` in `cell` and steps the word from phase `from` to `to`, waking the
    /// other side (`me` makes the step). `Err(phase)` when the word is not (or no longer)
    /// in `from`: the value is then dropped, never handed over. Only the other side's end,
    /// a close or an abandonment moves the word out of `from` meanwhile; a changed count or
    /// bit is stepped over.
    ///
    /// # Safety
    /// `cell` is the calling side's to fill in phase `from` (module doc).
    #[allow(unsafe_code)]
    unsafe fn hand_over<T>(
        &self,
        cell: &Cell<T>,
        value: T,
        from: u32,
        to: u32,
        me: u32,
    ) -> Result<(), u32> {
        let mut word = self.state.load(Ordering::Acquire);
        if phase(word) != from {
            return Err(phase(word));
        }
        // SAFETY: ours in `from`, by this function's contract.
        unsafe { cell.put(value) };
        while !self.step(word, to, me, true) {
            word = self.state.load(Ordering::Acquire);
            if phase(word) != from {
                // SAFETY: never handed over: still ours.
                drop(unsafe { cell.take() });
                return Err(phase(word));
            }
        }
        Ok(())
    }

    /// Abandons the call in flight and poisons the hand-off. `Ok(false)`: the plugin
    /// thread moved first (a reply came in, or it took a question back): look again.
    fn abandon(&self) -> Result<bool, CallError> {
        let word = self.state.load(Ordering::Acquire);
        let from = phase(word);
        match from {
            POSTED | RUNNING | ASKED | ANSWERED => {}
            GONE | CLOSED => return Err(CallError::Gone),
            _ => return Ok(false),
        }
        if !self.step(word, ABANDONED, CALLER_ASLEEP, true) {
            return Ok(false);
        }
        self.poisoned.store(true, Ordering::Release);
        // The step out of `POSTED` / `ASKED` / `ANSWERED` was ours: so is what each handed
        // over, and the plugin thread never touches a cell once the call is abandoned.
        match from {
            // SAFETY: as just said.
            #[allow(unsafe_code)]
            POSTED => drop(unsafe { self.input.take() }),
            // SAFETY: as just said.
            #[allow(unsafe_code)]
            ASKED => drop(unsafe { self.question.take() }),
            // SAFETY: as just said.
            #[allow(unsafe_code)]
            ANSWERED => drop(unsafe { self.answer.take() }),
            _ => {}
        }
        Ok(true)
    }

    /// Waits for the turn until `deadline`, or until `cancelled` or a poisoning.
    fn take_turn(
        &self,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Turn<'_>, CallError> {
        let word = self.turn.load(Ordering::Relaxed);
        if word & HELD == 0
            && self
                .turn
                .compare_exchange(word, word | HELD, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(Turn(&self.turn, &self.turn_waiters));
        }
        // Counted before the turn word is read again, so a release that misses this
        // waiter's count happened before that read, which then sees the turn free.
        self.turn_waiters.fetch_add(1, Ordering::SeqCst);
        let outcome = loop {
            let word = self.turn.load(Ordering::SeqCst);
            if word & HELD == 0 {
                if self
                    .turn
                    .compare_exchange(word, word | HELD, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    break Ok(Turn(&self.turn, &self.turn_waiters));
                }
                continue;
            }
            if self.is_poisoned() {
                break Err(CallError::Poisoned);
            }
            if cancelled() {
                break Err(CallError::Cancelled { running: false });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(CallError::TurnTimeout);
            }
            futex_wait(&self.turn, word, Some(left));
        };
        self.turn_waiters.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    /// Wakes every caller waiting here (for its turn or its result) so that it looks at its
    /// `cancelled` again: a cancellation token's hook.
    pub(crate) fn interrupt(&self) {
        // Both words change, so a caller about to sleep on either does not sleep.
        let word = self.state.fetch_add(INTERRUPT, Ordering::AcqRel);
        if word & CALLER_ASLEEP != 0 {
            futex_wake_all(&self.state);
        }
        self.turn.fetch_add(TURN_INTERRUPT, Ordering::SeqCst);
        if self.turn_waiters.load(Ordering::SeqCst) > 0 {
            futex_wake_all(&self.turn);
        }
    }

    /// The handle is dropped: the plugin thread's [`Handoff::next`] returns `None`.
    pub(crate) fn close(&self) {
        loop {
            let word = self.state.load(Ordering::Acquire);
            if phase(word) == GONE || self.step(word, CLOSED, 0, true) {
                return;
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // The plugin thread's side.

    /// The plugin thread's [`Handoff::wait`]: nothing but the word and `until` ends it.
    fn plugin_wait(&self, waits_in: impl Fn(u32) -> bool, until: Option<Instant>) -> Woke {
        self.wait(PLUGIN_ASLEEP, waits_in, until, &|| false)
    }

    /// Waits (without bound: an idle plugin sleeps) for the next call's input; `None` once
    /// the hand-off is closed or its last call was abandoned.
    pub(crate) fn next(&self) -> Option<I> {
        loop {
            let Woke::Ready(word) = self.plugin_wait(|p| matches!(p, IDLE | REPLIED), None) else {
                return None;
            };
            if phase(word) != POSTED {
                return None;
            }
            if self.step(word, RUNNING, PLUGIN_ASLEEP, false) {
                // SAFETY: the step out of `POSTED` was ours: the input is ours.
                #[allow(unsafe_code)]
                return unsafe { self.input.take() };
            }
        }
    }

    /// During a call: hands `question` to the caller and waits for its answer. Gives up
    /// at `deadline` if the caller has not taken the question by then; once it has, waits
    /// for the answer whatever the time (the caller is running the host's tool, which was
    /// given the same deadline).
    pub(crate) fn ask(&self, question: Q, deadline: Instant) -> Result<A, AskError> {
        // SAFETY: in `RUNNING` the question cell is the plugin thread's.
        #[allow(unsafe_code)]
        let asked =
            unsafe { self.hand_over(&self.question, question, RUNNING, ASKED, PLUGIN_ASLEEP) };
        if asked.is_err() {
            return Err(AskError::NoCall);
        }
        let mut until = Some(deadline);
        loop {
            match self.plugin_wait(|p| matches!(p, ASKED | ANSWERING), until) {
                Woke::Ready(word) if phase(word) == ANSWERED => {
                    if self.step(word, RUNNING, PLUGIN_ASLEEP, false) {
                        // SAFETY: the step out of `ANSWERED` was ours: the answer is ours.
                        #[allow(unsafe_code)]
                        let answer = unsafe { self.answer.take() };
                        return answer.ok_or(AskError::NoCall);
                    }
                }
                // Abandoned (the caller took the question back) or closed.
                Woke::Ready(_) | Woke::Stopped => return Err(AskError::NoCall),
                Woke::TimedOut => {
                    let word = self.state.load(Ordering::Acquire);
                    match phase(word) {
                        ASKED if self.step(word, RUNNING, PLUGIN_ASLEEP, false) => {
                            // SAFETY: the step out of `ASKED` was ours.
                            #[allow(unsafe_code)]
                            drop(unsafe { self.question.take() });
                            return Err(AskError::Timeout);
                        }
                        // The caller runs the tool: its answer comes.
                        ANSWERING => until = None,
                        _ => {}
                    }
                }
            }
        }
    }

    /// Hands the call's output to its caller; `false` (the output dropped) when the call
    /// was abandoned or the hand-off closed: the plugin thread should end.
    pub(crate) fn reply(&self, output: O) -> bool {
        // SAFETY: in `RUNNING` the output cell is the plugin thread's.
        #[allow(unsafe_code)]
        let replied =
            unsafe { self.hand_over(&self.output, output, RUNNING, REPLIED, PLUGIN_ASLEEP) };
        replied.is_ok()
    }

    /// The plugin thread ends: a waiting caller hears it at once. The cells are left as
    /// they are (dropped with the hand-off): the step out of a phase that handed one over
    /// is this one, which takes nothing.
    pub(crate) fn gone(&self) {
        loop {
            let word = self.state.load(Ordering::Acquire);
            if self.step(word, GONE, PLUGIN_ASLEEP, true) {
                return;
            }
        }
    }
}

impl<I, Q, A, O> Default for Handoff<I, Q, A, O> {
    fn default() -> Self {
        Self::new()
    }
}

/// Sleeps on `word` while it holds `value`, up to `timeout` (`None`: no bound). Returns
/// when woken, when the word no longer holds the value, at the timeout or on a signal; the
/// caller looks again at what it waits for.
fn futex_wait(word: &AtomicU32, value: u32, timeout: Option<Duration>) {
    use rustix::thread::futex;
    let timespec = timeout.map(|t| futex::Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    // Private: both sides are threads of this process.
    let _ = futex::wait(word, futex::Flags::PRIVATE, value, timespec.as_ref());
}

fn futex_wake_all(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::PRIVATE, u32::MAX);
}

#[cfg(test)]
mod tests;
