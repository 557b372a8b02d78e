//! Timing stamps along the load path, for a per-step breakdown of a load (issue 14): compiled
//! only with `RUSTFLAGS="--cfg skillgate_stamps"` (a separate build: see
//! `benches/load_steps.rs`); in every other build [`stamp!`](crate::stamp) expands to
//! nothing and this module is empty.
//!
//! A stamp is a label and the `CLOCK_MONOTONIC` time in nanoseconds, which is the same clock
//! in the host and in its workers, so the worker's stamps (written to its stderr, the
//! plugin's log, once it has loaded) line up with the host's. Hand-written: a few lines
//! over `clock_gettime`, where a tracing span layer would time the subscriber as well.

/// Records `label` at the current time (only with `--cfg skillgate_stamps`).
#[macro_export]
#[doc(hidden)]
macro_rules! stamp {
    ($label:expr) => {
        #[cfg(skillgate_stamps)]
        $crate::base::stamps::stamp($label);
    };
}

#[cfg(skillgate_stamps)]
mod imp {
    use std::sync::Mutex;

    static STAMPS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

    /// `CLOCK_MONOTONIC` in nanoseconds.
    #[allow(unsafe_code)]
    pub fn now_ns() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec for the call's duration.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
    }

    /// Records `label` now.
    pub fn stamp(label: &'static str) {
        let at = now_ns();
        if let Ok(mut s) = STAMPS.lock() {
            s.push((label, at));
        }
    }

    /// Takes every stamp recorded so far, oldest first.
    pub fn take() -> Vec<(&'static str, u64)> {
        STAMPS
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

#[cfg(skillgate_stamps)]
pub use imp::{now_ns, stamp, take};
