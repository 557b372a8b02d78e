//! Where the other side of a hand-off runs: the hint both waiters (the thread executor's
//! [`super::handoff`] and the process executor's [`super::ring`]) use to choose between
//! polling, giving their CPU away, and sleeping.
//!
//! Each side publishes the CPU it polls on in a word of its own while it waits, and
//! [`NO_CPU`] while it sleeps. The thread executor's waiter reads its own CPU again
//! between rounds of polling: one the scheduler moved must not go on naming the CPU it
//! left, or a peer woken onto its new CPU is polled for as if it ran elsewhere (the cause
//! of thread-mode calls of 6 µs instead of 2 in one run out of three). The call region's
//! waiters do not: measured interleaved, it made no difference to a no-op call and made a
//! 1 MiB input call slower (p50 1.35–1.50 ms against 0.76–0.95 ms), not understood. The other side then knows, without a system call:
//!
//! - **apart** (both known, different): the side being waited for is most likely running
//!   on its own CPU, about to answer, so the waiter polls without `sched_yield` (for the
//!   rest of its bounded spin): giving this CPU away cannot help a side that runs, or
//!   waits to run, on another one, and on a quiet machine the yields were what a call cost
//!   (thread mode, 20,000 no-op calls: p50 5.3–6.5 µs with a yield after the first 10 µs of
//!   polling, 2.1–2.5 µs without; `examples/call_profile.rs`);
//! - **together** (both known, equal): the side being waited for cannot run until this one
//!   leaves the CPU, and polling with `sched_yield` keeps the two pinned to one CPU (the
//!   scheduler counts both as cache-hot and does not move either to an idle CPU), so the
//!   waiter sleeps on its futex at once: the wake-up that ends that sleep lets the
//!   scheduler place it on an idle CPU, after which the two are apart;
//! - **unknown**: as before, poll with a yield between rounds.
//!
//! A word written by a worker is plugin-controlled: a lie only changes how the host waits
//! (polling for its bounded spin, or sleeping at once, which the worker's own reply ends),
//! never how long: every wait of the host still ends by its deadline.
//!
//! The CPU is read with `sched_getcpu`, which glibc answers from the thread's `rseq` area
//! or the vDSO: no system call, so no seccomp filter is involved.

use std::sync::atomic::{AtomicU32, Ordering};

/// "Not known": the side sleeps, has not waited yet, or the C library cannot say.
pub(crate) const NO_CPU: u32 = u32::MAX;

/// The CPU the calling thread runs on now, or [`NO_CPU`].
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: no arguments, no memory handed over.
    #[allow(unsafe_code)]
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(NO_CPU)
}

/// What a waiter on CPU `mine` should do while the other side, last seen on `theirs`, has
/// not answered yet (and the waiter's own spin bound has not passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Poll again without a system call.
    Poll,
    /// Give the CPU away once (`sched_yield`), then poll again.
    Yield,
    /// Stop spinning and sleep on the futex.
    Sleep,
}

/// The choice described in the module doc.
pub(crate) fn next(mine: u32, theirs: u32) -> Next {
    if mine == NO_CPU || theirs == NO_CPU {
        Next::Yield
    } else if mine == theirs {
        Next::Sleep
    } else {
        Next::Poll
    }
}

/// Publishes the calling thread's CPU in `word` and returns it.
pub(crate) fn publish(word: &AtomicU32) -> u32 {
    let cpu = current_cpu();
    word.store(cpu, Ordering::Relaxed);
    cpu
}

/// Publishes "asleep" in `word`.
pub(crate) fn asleep(word: &AtomicU32) {
    word.store(NO_CPU, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_follows_the_two_cpus() {
        assert_eq!(next(0, 1), Next::Poll);
        assert_eq!(next(1, 1), Next::Sleep);
        assert_eq!(next(NO_CPU, 1), Next::Yield);
        assert_eq!(next(0, NO_CPU), Next::Yield);
        assert_eq!(next(NO_CPU, NO_CPU), Next::Yield);
    }

    #[test]
    fn the_current_cpu_is_known_here() {
        let word = AtomicU32::new(NO_CPU);
        let cpu = publish(&word);
        assert_ne!(cpu, NO_CPU);
        assert_eq!(word.load(Ordering::Relaxed), cpu);
        asleep(&word);
        assert_eq!(word.load(Ordering::Relaxed), NO_CPU);
    }
}
