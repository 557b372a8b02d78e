//! The registry's bookkeeping, on registries of the tests' own (the process's one is shared
//! with every other test in the binary).
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use std::sync::atomic::Ordering;

fn fresh() -> &'static Shared {
    Box::leak(Box::new(Mutex::new(Registry::new())))
}

extern "C" fn version() -> u32 {
    7
}
extern "C" fn metadata() -> *const std::ffi::c_char {
    std::ptr::null()
}
extern "C" fn execute(_: *const std::ffi::c_char) -> *const std::ffi::c_char {
    std::ptr::null()
}

fn symbols() -> PluginSymbols {
    PluginSymbols {
        version,
        metadata,
        execute,
        free_string: None,
        host_init: None,
    }
}

fn load(registry: &'static Shared, digest: u8, limit: usize) -> Reservation {
    match claim_in(registry, &[digest; 32], 100, limit).unwrap() {
        Claim::Load(r) => r,
        Claim::Reuse(_) => panic!("bytes {digest} are new"),
    }
}

#[test]
fn the_same_bytes_are_loaded_once_and_reused_after() {
    let registry = fresh();
    load(registry, 1, 10).register(symbols());
    let Claim::Reuse(reused) = claim_in(registry, &[1; 32], 100, 10).unwrap() else {
        panic!("resident bytes are reused");
    };
    assert_eq!(reused.symbols.call_version(), 7);
    assert_eq!(
        resident_in(registry),
        Resident {
            libraries: 1,
            bytes: 100,
            reuses: 1
        }
    );
}

#[test]
fn new_bytes_past_the_limit_are_refused_and_resident_ones_still_reused() {
    let registry = fresh();
    load(registry, 1, 2).register(symbols());
    // A load under way holds its place: the limit counts it.
    let pending = load(registry, 2, 2);
    let e = claim_in(registry, &[3; 32], 100, 2).unwrap_err();
    assert!(matches!(
        e,
        LoadError::ThreadLibraryLimit {
            resident: 2,
            limit: 2
        }
    ));
    assert!(matches!(
        claim_in(registry, &[1; 32], 100, 2).unwrap(),
        Claim::Reuse(_)
    ));
    // A load that failed before registering gives its place back, and left nothing to
    // reuse.
    drop(pending);
    let again = load(registry, 2, 2);
    again.register(symbols());
    assert_eq!(resident_in(registry).libraries, 2);
    assert!(matches!(
        claim_in(registry, &[3; 32], 100, 2),
        Err(LoadError::ThreadLibraryLimit {
            resident: 2,
            limit: 2
        })
    ));
}

#[test]
fn two_racing_loads_of_the_same_bytes_are_both_counted() {
    let registry = fresh();
    let first = load(registry, 4, 10);
    let second = load(registry, 4, 10);
    first.register(symbols());
    second.register(symbols());
    let counted = resident_in(registry);
    assert_eq!((counted.libraries, counted.bytes), (2, 200));
}

// ---- the turn of a library -------------------------------------------------------------

fn soon(ms: u64) -> Instant {
    Instant::now() + std::time::Duration::from_millis(ms)
}

#[test]
fn a_held_turn_keeps_a_second_entry_out_until_it_is_given_back() {
    let turn = Arc::new(LibraryTurn::new());
    let first = turn.hold(soon(1000), &|| false).unwrap();
    assert_eq!(
        turn.hold(soon(20), &|| false).unwrap_err(),
        TurnWait::TimedOut
    );
    // A waiter is let in as soon as the holder gives the turn back, from another thread
    // (the plugin thread gives back what a caller took).
    let waiter = {
        let turn = Arc::clone(&turn);
        std::thread::spawn(move || turn.hold(soon(5000), &|| false).map(|h| h.id()))
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let given_back = std::thread::spawn(move || drop(first));
    given_back.join().unwrap();
    let second = waiter.join().unwrap().unwrap();
    assert_ne!(second, 0, "the second hold has its own number");
    // Control: a free turn is taken at once, and a deadline already past does not matter
    // then.
    assert!(turn.hold(Instant::now(), &|| false).is_ok());
}

#[test]
fn a_waiter_whose_call_is_cancelled_leaves_at_once_and_the_turn_stays_free_for_others() {
    let turn = Arc::new(LibraryTurn::new());
    let held = turn.hold(soon(1000), &|| false).unwrap();
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiter = {
        let (turn, cancelled) = (Arc::clone(&turn), Arc::clone(&cancelled));
        std::thread::spawn(move || {
            turn.hold(soon(60_000), &|| cancelled.load(Ordering::SeqCst))
                .map(|h| h.id())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    cancelled.store(true, Ordering::SeqCst);
    turn.interrupt();
    // Cancelled, not timed out: the interrupt, not the minute-long deadline, ended it.
    assert_eq!(waiter.join().unwrap().unwrap_err(), TurnWait::Cancelled);
    drop(held);
    assert!(turn.hold(Instant::now(), &|| false).is_ok());
}

#[test]
fn a_copy_whose_turn_an_abandoned_call_keeps_is_not_reused_and_is_replaced() {
    let registry = fresh();
    let first = load(registry, 5, 10);
    let first_turn = Arc::clone(first.turn());
    first.register(symbols());
    let Claim::Reuse(reused) = claim_in(registry, &[5; 32], 100, 10).unwrap() else {
        panic!("resident bytes are reused");
    };
    assert!(Arc::ptr_eq(&reused.turn, &first_turn));
    // A call holds the turn and is abandoned inside the library.
    let stuck = first_turn.hold(soon(1000), &|| false).unwrap();
    first_turn.abandon(stuck.id());
    assert!(first_turn.abandoned());
    // The next load makes a fresh copy, which becomes the one reused.
    let Claim::Load(fresh_copy) = claim_in(registry, &[5; 32], 100, 10).unwrap() else {
        panic!("a stuck copy must not be reused");
    };
    let fresh_turn = Arc::clone(fresh_copy.turn());
    fresh_copy.register(symbols());
    let Claim::Reuse(now) = claim_in(registry, &[5; 32], 100, 10).unwrap() else {
        panic!("the fresh copy is reused");
    };
    assert!(Arc::ptr_eq(&now.turn, &fresh_turn));
    assert_eq!(
        resident_in(registry).libraries,
        2,
        "both copies stay counted"
    );
    // The abandoned call returns: the old copy's turn is free and no longer stuck.
    drop(stuck);
    assert!(!first_turn.abandoned());
}

#[test]
fn marking_a_hold_that_was_given_back_abandoned_marks_nothing() {
    let turn = Arc::new(LibraryTurn::new());
    let old = turn.hold(soon(1000), &|| false).unwrap();
    let old_id = old.id();
    drop(old);
    // Another call now holds the turn; the late mark names the old hold.
    let current = turn.hold(soon(1000), &|| false).unwrap();
    turn.abandon(old_id);
    assert!(!turn.abandoned());
    // Control: the current hold's own number does mark it.
    turn.abandon(current.id());
    assert!(turn.abandoned());
}
