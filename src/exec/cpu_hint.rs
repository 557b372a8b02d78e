//! Where the other side of a hand-off runs: the hint both waiters (the thread executor's
//! [`super::handoff`] and the process executor's [`super::ring`]) use to choose between
//! polling, giving their CPU away, and sleeping.
//!
//! Each side publishes the CPU it polls on in a word of its own while it waits, and
//! [`NO_CPU`] while it sleeps. The other side then knows, without a system call:
//!
//! - **apart** (both known, different): the side being waited for is most likely running
//!   on its own CPU, about to answer, so polling without `sched_yield` for up to
//!   [`SPIN_APART`] costs nothing it needs and saves a system call per round;
//! - **together** (both known, equal): the side being waited for cannot run until this one
//!   leaves the CPU, and polling with `sched_yield` keeps the two pinned to one CPU (the
//!   scheduler counts both as cache-hot and does not move either to an idle CPU), so the
//!   waiter sleeps on its futex at once: the wake-up that ends that sleep lets the
//!   scheduler place it on an idle CPU, after which the two are apart;
//! - **unknown**: as before, poll with a yield between rounds.
//!
//! A word written by a worker is plugin-controlled: a lie only changes how the host waits
//! (at most [`SPIN_APART`] of polling, or sleeping at once, which the worker's own reply
//! ends), never how long: every wait of the host still ends by its deadline.
//!
//! The CPU is read with `sched_getcpu`, which glibc answers from the thread's `rseq` area
//! or the vDSO: no system call, so no seccomp filter is involved.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long a waiter polls without yielding while the other side is on another CPU.
pub(crate) const SPIN_APART: Duration = Duration::from_micros(10);

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
/// not answered after `spun` of waiting (below the waiter's own spin bound).
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
pub(crate) fn next(mine: u32, theirs: u32, spun: Duration) -> Next {
    if mine == NO_CPU || theirs == NO_CPU {
        Next::Yield
    } else if mine == theirs {
        Next::Sleep
    } else if spun < SPIN_APART {
        Next::Poll
    } else {
        Next::Yield
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
        let short = Duration::from_micros(1);
        let long = SPIN_APART + Duration::from_micros(1);
        assert_eq!(next(0, 1, short), Next::Poll);
        assert_eq!(next(0, 1, long), Next::Yield);
        assert_eq!(next(1, 1, short), Next::Sleep);
        assert_eq!(next(NO_CPU, 1, short), Next::Yield);
        assert_eq!(next(0, NO_CPU, short), Next::Yield);
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
