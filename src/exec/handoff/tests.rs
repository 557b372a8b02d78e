//! The hand-off's protocol under contention, timeouts and shutdown. Each test drives the
//! slot with a stand-in plugin thread, so a broken ownership rule shows up as a wrong,
//! lost or doubled value (or a leak counted through `Arc::strong_count`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{CallError, Handoff};

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// A stand-in plugin thread that answers every call with `f(input)` until closed.
fn serve<I: Send + 'static, O: Send + 'static>(
    slot: &Arc<Handoff<I, O>>,
    f: impl Fn(I) -> O + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    let slot = Arc::clone(slot);
    std::thread::spawn(move || {
        let mut served = 0;
        while let Some(input) = slot.next() {
            served += 1;
            if !slot.reply(f(input)) {
                break;
            }
        }
        slot.gone();
        served
    })
}

#[test]
fn callers_on_many_threads_each_get_the_result_of_their_own_call() {
    let slot = Arc::new(Handoff::<(u64, u64), (u64, u64)>::new());
    let server = serve(&slot, |(caller, n)| (caller, n * 3 + 1));
    let callers: Vec<_> = (0..4u64)
        .map(|caller| {
            let slot = Arc::clone(&slot);
            std::thread::spawn(move || {
                for n in 0..2_000u64 {
                    assert_eq!(slot.call((caller, n), far()), Ok((caller, n * 3 + 1)));
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    slot.close();
    assert_eq!(server.join().unwrap(), 8_000);
    assert_eq!(slot.call((9, 9), far()), Err(CallError::Gone));
}

#[test]
fn a_call_that_times_out_poisons_the_slot_and_its_late_reply_is_freed() {
    let slot = Arc::new(Handoff::<u32, Arc<()>>::new());
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let reply = Arc::new(());
    let late = Arc::clone(&reply);
    let server = serve(&slot, move |_| {
        release_rx.recv().unwrap();
        Arc::clone(&late)
    });
    let e = slot
        .call(1, Instant::now() + Duration::from_millis(30))
        .unwrap_err();
    assert_eq!(e, CallError::Timeout);
    assert_eq!(slot.call(2, far()), Err(CallError::Poisoned));
    release_tx.send(()).unwrap();
    // The late reply lands in the slot, where nobody reads it; closing ends the thread.
    slot.close();
    assert_eq!(server.join().unwrap(), 1);
    assert_eq!(slot.call(3, far()), Err(CallError::Poisoned));
    // Dropping the slot frees the reply nobody took: the closure's and the slot's copies
    // are gone, only ours is left.
    drop(slot);
    assert_eq!(Arc::strong_count(&reply), 1);
}

#[test]
fn an_input_nobody_took_is_freed_with_the_slot() {
    let slot = Handoff::<Arc<()>, u32>::new();
    let input = Arc::new(());
    let e = slot
        .call(
            Arc::clone(&input),
            Instant::now() + Duration::from_millis(10),
        )
        .unwrap_err();
    assert_eq!(e, CallError::Timeout);
    assert_eq!(Arc::strong_count(&input), 2);
    drop(slot);
    assert_eq!(Arc::strong_count(&input), 1);
}

#[test]
fn a_caller_waiting_for_its_turn_times_out_without_poisoning() {
    let slot = Arc::new(Handoff::<u32, u32>::new());
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let server = serve(&slot, move |n| {
        if n == 1 {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        }
        n + 100
    });
    let first = {
        let slot = Arc::clone(&slot);
        std::thread::spawn(move || slot.call(1, far()))
    };
    started_rx.recv().unwrap();
    // The first call holds the turn: this one gets none before its deadline.
    let e = slot
        .call(2, Instant::now() + Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(e, CallError::TurnTimeout);
    release_tx.send(()).unwrap();
    assert_eq!(first.join().unwrap(), Ok(101));
    // Nothing was poisoned by the caller that never got its turn.
    assert_eq!(slot.call(3, far()), Ok(103));
    slot.close();
    assert_eq!(server.join().unwrap(), 2);
}

#[test]
fn a_caller_waiting_for_its_turn_hears_at_once_that_the_call_before_timed_out() {
    let slot = Arc::new(Handoff::<u32, u32>::new());
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let server = serve(&slot, move |n| {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        n
    });
    let first = {
        let slot = Arc::clone(&slot);
        std::thread::spawn(move || slot.call(1, Instant::now() + Duration::from_millis(50)))
    };
    started_rx.recv().unwrap();
    // Waits for the turn with a long deadline: the first call's timeout poisons the
    // slot, and this caller gets `Poisoned` (not its own timeout a minute later).
    assert_eq!(slot.call(2, far()), Err(CallError::Poisoned));
    assert_eq!(first.join().unwrap(), Err(CallError::Timeout));
    release_tx.send(()).unwrap();
    slot.close();
    assert_eq!(server.join().unwrap(), 1);
}

#[test]
fn a_caller_hears_at_once_that_the_plugin_thread_ended() {
    let slot = Arc::new(Handoff::<u32, u32>::new());
    let ender = {
        let slot = Arc::clone(&slot);
        std::thread::spawn(move || {
            // Takes the call and ends without replying (as a thread that panicked would).
            let taken = slot.next();
            slot.gone();
            taken
        })
    };
    assert_eq!(slot.call(7, far()), Err(CallError::Gone));
    assert_eq!(ender.join().unwrap(), Some(7));
    assert_eq!(slot.call(8, far()), Err(CallError::Gone));
}

#[test]
fn a_closed_slot_ends_a_sleeping_plugin_thread() {
    let slot = Arc::new(Handoff::<u32, u32>::new());
    let server = serve(&slot, |n| n);
    assert_eq!(slot.call(5, far()), Ok(5));
    // Long past the spin: the plugin thread sleeps on the word, and closing wakes it.
    std::thread::sleep(Duration::from_millis(20));
    slot.close();
    assert_eq!(server.join().unwrap(), 1);
}
