//! The hand-off's protocol under contention, timeouts, cancellation and shutdown. Each test
//! drives the slot with a stand-in plugin thread, so a broken ownership rule shows up as a
//! wrong, lost or doubled value, or as a value never freed (counted through
//! `Arc::strong_count` once every thread is done and the slot dropped).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::{AskError, CallError, Handoff};

/// A deadline no test reaches: a wait that is not woken hangs the test visibly.
fn far() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

fn never() -> bool {
    false
}

/// Calls with no questions expected.
fn call<I, Q, A, O>(
    slot: &Handoff<I, Q, A, O>,
    input: I,
    deadline: Instant,
) -> Result<O, CallError> {
    slot.call(input, deadline, &never, &mut |_| {
        panic!("no question expected")
    })
}

/// A stand-in plugin thread: answers every call with `f(input)` until closed or abandoned,
/// then marks the slot gone. Returns how many calls it served.
fn serve<I: Send + 'static, Q: Send + 'static, A: Send + 'static, O: Send + 'static>(
    slot: &Arc<Handoff<I, Q, A, O>>,
    f: impl Fn(&Handoff<I, Q, A, O>, I) -> O + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    let slot = Arc::clone(slot);
    std::thread::spawn(move || {
        let mut served = 0;
        while let Some(input) = slot.next() {
            served += 1;
            if !slot.reply(f(&slot, input)) {
                break;
            }
        }
        slot.gone();
        served
    })
}

/// A stand-in plugin thread whose first call says it started, then is stuck until the
/// test releases it; every call answers `f(input)`.
fn stuck_first<I: Send + 'static, O: Send + 'static>(
    slot: &Arc<Handoff<I, (), (), O>>,
    f: impl Fn(I) -> O + Send + 'static,
) -> (
    std::thread::JoinHandle<usize>,
    mpsc::Receiver<()>,
    mpsc::Sender<()>,
) {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let first = AtomicBool::new(true);
    let server = serve(slot, move |_, input| {
        if first.swap(false, Ordering::SeqCst) {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        }
        f(input)
    });
    (server, started_rx, release_tx)
}

#[test]
fn callers_on_many_threads_each_get_the_result_of_their_own_call() {
    let slot = Arc::new(Handoff::<(u64, u64), (), (), (u64, u64)>::new());
    let server = serve(&slot, |_, (caller, n)| (caller, n * 3 + 1));
    let callers: Vec<_> = (0..4u64)
        .map(|caller| {
            let slot = Arc::clone(&slot);
            std::thread::spawn(move || {
                for n in 0..2_000u64 {
                    assert_eq!(call(&slot, (caller, n), far()), Ok((caller, n * 3 + 1)));
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    slot.close();
    assert_eq!(server.join().unwrap(), 8_000);
    assert_eq!(call(&slot, (9, 9), far()), Err(CallError::Gone));
}

#[test]
fn each_call_gets_the_answers_to_its_own_questions_many_per_call() {
    // Input: (caller, n); the plugin asks (caller, n, i) for i in 0..n % 7 and replies
    // with the sum of the answers; the caller answers (c, n, i) with c * 1000 + n + i.
    let slot = Arc::new(Handoff::<(u64, u64), (u64, u64, u64), u64, (u64, u64)>::new());
    let server = serve(&slot, |slot, (caller, n)| {
        let mut sum = 0;
        for i in 0..n % 7 {
            sum += slot.ask((caller, n, i), far()).unwrap();
        }
        (caller, sum)
    });
    let callers: Vec<_> = (0..3u64)
        .map(|caller| {
            let slot = Arc::clone(&slot);
            std::thread::spawn(move || {
                for n in 0..700u64 {
                    let mut asked = 0;
                    let got = slot.call((caller, n), far(), &never, &mut |(c, m, i)| {
                        assert_eq!((c, m), (caller, n), "a question of another call");
                        asked += 1;
                        c * 1000 + m + i
                    });
                    let want: u64 = (0..n % 7).map(|i| caller * 1000 + n + i).sum();
                    assert_eq!(got, Ok((caller, want)));
                    assert_eq!(asked, n % 7);
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    slot.close();
    assert_eq!(server.join().unwrap(), 2_100);
}

#[test]
fn a_question_outside_a_call_gets_no_call() {
    let slot = Handoff::<(), u32, u32, ()>::new();
    assert_eq!(slot.ask(1, far()), Err(AskError::NoCall));
}

#[test]
fn a_call_that_times_out_poisons_the_slot_and_its_late_reply_is_freed() {
    let slot = Arc::new(Handoff::<u32, (), (), Arc<()>>::new());
    let reply = Arc::new(());
    let late = Arc::clone(&reply);
    let (server, _started, release_tx) = stuck_first(&slot, move |_| Arc::clone(&late));
    let e = call(&slot, 1, Instant::now() + Duration::from_millis(30)).unwrap_err();
    assert_eq!(e, CallError::Timeout);
    assert!(slot.is_poisoned());
    assert_eq!(call(&slot, 2, far()), Err(CallError::Poisoned));
    release_tx.send(()).unwrap();
    // The late reply finds the call abandoned: the plugin thread drops it and ends.
    assert_eq!(server.join().unwrap(), 1);
    assert_eq!(call(&slot, 3, far()), Err(CallError::Poisoned));
    drop(slot);
    // Only ours is left: the closure's copy went with the thread, the reply was dropped.
    assert_eq!(Arc::strong_count(&reply), 1);
}

#[test]
fn an_input_nobody_took_is_taken_back_by_its_caller() {
    let slot = Handoff::<Arc<()>, (), (), u32>::new();
    let input = Arc::new(());
    let e = call(
        &slot,
        Arc::clone(&input),
        Instant::now() + Duration::from_millis(10),
    )
    .unwrap_err();
    assert_eq!(e, CallError::Timeout);
    assert_eq!(Arc::strong_count(&input), 1);
    // Abandoned: a plugin thread that comes now finds no call.
    assert!(slot.next().is_none());
}

#[test]
fn a_caller_waiting_for_its_turn_times_out_at_its_deadline_without_poisoning() {
    let slot = Arc::new(Handoff::<u32, (), (), u32>::new());
    let (server, started_rx, release_tx) = stuck_first(&slot, |n| n + 100);
    let first = {
        let slot = Arc::clone(&slot);
        std::thread::spawn(move || call(&slot, 1, far()))
    };
    started_rx.recv().unwrap();
    // The first call holds the turn (its plugin is stuck): this one gets none.
    let e = call(&slot, 2, Instant::now() + Duration::from_millis(20)).unwrap_err();
    assert_eq!(e, CallError::TurnTimeout);
    assert!(!slot.is_poisoned());
    release_tx.send(()).unwrap();
    assert_eq!(first.join().unwrap(), Ok(101));
    // Control: nothing was poisoned by the caller that never got its turn.
    assert_eq!(call(&slot, 3, far()), Ok(103));
    slot.close();
    assert_eq!(server.join().unwrap(), 2);
}

#[test]
fn callers_waiting_for_their_turn_hear_at_once_that_the_call_before_was_abandoned() {
    let slot = Arc::new(Handoff::<u32, (), (), u32>::new());
    let (server, started_rx, release_tx) = stuck_first(&slot, |n| n);
    let first = {
        let slot = Arc::clone(&slot);
        std::thread::spawn(move || call(&slot, 1, Instant::now() + Duration::from_millis(200)))
    };
    started_rx.recv().unwrap();
    // Three callers wait for the turn with deadlines no test reaches: the first call's
    // timeout poisons the slot and each of them is told `Poisoned` then.
    let waiting: Vec<_> = (0..3)
        .map(|i| {
            let slot = Arc::clone(&slot);
            std::thread::spawn(move || call(&slot, 10 + i, far()))
        })
        .collect();
    for w in waiting {
        assert_eq!(w.join().unwrap(), Err(CallError::Poisoned));
    }
    assert_eq!(first.join().unwrap(), Err(CallError::Timeout));
    release_tx.send(()).unwrap();
    assert_eq!(server.join().unwrap(), 1);
}

#[test]
fn an_interrupt_wakes_a_cancelled_caller_in_its_call_and_one_waiting_for_its_turn() {
    let slot = Arc::new(Handoff::<u32, (), (), Arc<()>>::new());
    let reply = Arc::new(());
    let late = Arc::clone(&reply);
    let (server, started_rx, release_tx) = stuck_first(&slot, move |_| Arc::clone(&late));
    let running_cancelled = Arc::new(AtomicBool::new(false));
    let waiting_cancelled = Arc::new(AtomicBool::new(false));
    let running = {
        let (slot, c) = (Arc::clone(&slot), Arc::clone(&running_cancelled));
        std::thread::spawn(move || {
            slot.call(1, far(), &|| c.load(Ordering::SeqCst), &mut |()| ())
                .map(drop)
        })
    };
    started_rx.recv().unwrap();
    let waiting = {
        let (slot, c) = (Arc::clone(&slot), Arc::clone(&waiting_cancelled));
        std::thread::spawn(move || {
            slot.call(2, far(), &|| c.load(Ordering::SeqCst), &mut |()| ())
                .map(drop)
        })
    };
    // Let the second caller reach its sleep on the turn (not needed for correctness: an
    // interrupt that comes first is seen before it sleeps).
    std::thread::sleep(Duration::from_millis(50));
    waiting_cancelled.store(true, Ordering::SeqCst);
    slot.interrupt();
    assert_eq!(
        waiting.join().unwrap(),
        Err(CallError::Cancelled { running: false })
    );
    // Control: the call in flight was not disturbed by another caller's cancellation.
    assert!(!slot.is_poisoned());
    std::thread::sleep(Duration::from_millis(50));
    running_cancelled.store(true, Ordering::SeqCst);
    slot.interrupt();
    assert_eq!(
        running.join().unwrap(),
        Err(CallError::Cancelled { running: true })
    );
    assert!(slot.is_poisoned());
    release_tx.send(()).unwrap();
    assert_eq!(server.join().unwrap(), 1);
    drop(slot);
    assert_eq!(Arc::strong_count(&reply), 1);
}

#[test]
fn a_caller_hears_at_once_that_the_plugin_thread_ended() {
    let slot = Arc::new(Handoff::<u32, (), (), u32>::new());
    let ender = {
        let slot = Arc::clone(&slot);
        std::thread::spawn(move || {
            // Takes the call and ends without replying (as a thread that panicked would).
            let taken = slot.next();
            slot.gone();
            taken
        })
    };
    assert_eq!(call(&slot, 7, far()), Err(CallError::Gone));
    assert_eq!(ender.join().unwrap(), Some(7));
    assert_eq!(call(&slot, 8, far()), Err(CallError::Gone));
}

#[test]
fn a_closed_slot_ends_a_sleeping_plugin_thread() {
    let slot = Arc::new(Handoff::<u32, (), (), u32>::new());
    let server = serve(&slot, |_, n| n);
    assert_eq!(call(&slot, 5, far()), Ok(5));
    // Long past the spin: the plugin thread sleeps on the word, and closing wakes it.
    std::thread::sleep(Duration::from_millis(20));
    slot.close();
    assert_eq!(server.join().unwrap(), 1);
}

/// Spins for about `us` microseconds (a stand-in plugin's work, or a delay before a race).
fn busy(us: u64) {
    let until = Instant::now() + Duration::from_micros(us);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[test]
fn timeouts_racing_replies_and_questions_lose_no_value_and_free_every_one() {
    // Every value is an `Arc` of one of four counters: once all is done, each is held by
    // this test alone, or something was leaked (or, dropped twice, the count is wrong).
    let (inputs, questions, answers, outputs) =
        (Arc::new(()), Arc::new(()), Arc::new(()), Arc::new(()));
    // Answered, timed out in the plugin's hands, poisoned, never sent.
    let mut outcomes = [0u32; 4];
    for round in 0..300u64 {
        let slot = Arc::new(Handoff::<(Arc<()>, u64), Arc<()>, Arc<()>, (Arc<()>, u64)>::new());
        let (q, o) = (Arc::clone(&questions), Arc::clone(&outputs));
        let server = serve(&slot, move |slot, (input, n)| {
            drop(input);
            // Work, then a question or two, then more work: the deadline lands anywhere.
            busy(n % 40);
            for _ in 0..n % 3 {
                let _ = slot.ask(
                    Arc::clone(&q),
                    Instant::now() + Duration::from_micros(n % 50),
                );
            }
            busy(n % 17);
            (Arc::clone(&o), n)
        });
        for n in 0..8u64 {
            let seed = round * 8 + n;
            // Every fifth call cannot time out, so some calls are answered however
            // loaded the machine is; the others' deadlines land anywhere in the call.
            let deadline = if seed % 5 == 0 {
                far()
            } else {
                Instant::now() + Duration::from_micros(seed % 60)
            };
            let a = Arc::clone(&answers);
            let got = slot.call(
                (Arc::clone(&inputs), seed),
                deadline,
                &never,
                &mut |question| {
                    drop(question);
                    Arc::clone(&a)
                },
            );
            match got {
                Ok((_, m)) => {
                    assert_eq!(m, seed, "another call's reply");
                    outcomes[0] += 1;
                }
                Err(CallError::Timeout) => {
                    outcomes[1] += 1;
                    break;
                }
                // A deadline of a few microseconds can pass before the turn is taken: the
                // call is then never sent, and nothing is poisoned by it.
                Err(CallError::TurnTimeout) => {
                    assert!(!slot.is_poisoned(), "a call never sent poisoned the slot");
                    outcomes[3] += 1;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        if !slot.is_poisoned() {
            slot.close();
        } else {
            outcomes[2] += 1;
        }
        server.join().unwrap();
        drop(slot);
    }
    for (what, count) in [
        ("input", &inputs),
        ("question", &questions),
        ("answer", &answers),
        ("output", &outputs),
    ] {
        assert_eq!(Arc::strong_count(count), 1, "a {what} was leaked");
    }
    // Both outcomes happened, or the race was not run.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[test]
fn a_close_racing_a_call_ends_both_sides_and_frees_every_value() {
    let (inputs, outputs) = (Arc::new(()), Arc::new(()));
    let mut answered = [0u32; 2];
    for round in 0..300u64 {
        let slot = Arc::new(Handoff::<Arc<()>, (), (), Arc<()>>::new());
        let o = Arc::clone(&outputs);
        let server = serve(&slot, move |_, input| {
            drop(input);
            busy(round % 20);
            Arc::clone(&o)
        });
        // Closes after the caller got 0 to 3 results, then a little later still: the close
        // lands before, during or after a call.
        let served = Arc::new(AtomicU64::new(0));
        let closer = {
            let (slot, served) = (Arc::clone(&slot), Arc::clone(&served));
            std::thread::spawn(move || {
                while served.load(Ordering::SeqCst) < round % 4 {
                    std::thread::yield_now();
                }
                busy(round % 30);
                slot.close();
            })
        };
        let caller = {
            let (slot, i, served) = (Arc::clone(&slot), Arc::clone(&inputs), Arc::clone(&served));
            std::thread::spawn(move || {
                loop {
                    match call(&slot, Arc::clone(&i), far()) {
                        Ok(out) => {
                            drop(out);
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(CallError::Gone) => return served.load(Ordering::SeqCst),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        };
        let served = caller.join().unwrap();
        answered[usize::from(served > 0)] += 1;
        closer.join().unwrap();
        server.join().unwrap();
        drop(slot);
    }
    assert_eq!(Arc::strong_count(&inputs), 1, "an input was leaked");
    assert_eq!(Arc::strong_count(&outputs), 1, "an output was leaked");
    assert!(answered[1] > 0, "{answered:?}");
}

#[test]
fn cancellations_racing_calls_and_turns_leave_the_slot_consistent() {
    // Four callers, a shared flag that cancels all of them at a random moment: each
    // outcome is a correct result, `Cancelled` (running or not) or `Poisoned`, and once a
    // running call was cancelled no later call succeeds.
    for round in 0..100u64 {
        let slot = Arc::new(Handoff::<u64, (), (), u64>::new());
        let server = serve(&slot, |_, n| {
            busy(n % 5);
            n * 2
        });
        let cancel = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let callers: Vec<_> = (0..4u64)
            .map(|c| {
                let (slot, cancel, ok) = (Arc::clone(&slot), Arc::clone(&cancel), Arc::clone(&ok));
                std::thread::spawn(move || {
                    for n in 0..200u64 {
                        let v = c * 1_000 + n;
                        match slot.call(v, far(), &|| cancel.load(Ordering::SeqCst), &mut |()| ()) {
                            Ok(r) => {
                                assert_eq!(r, v * 2);
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(CallError::Cancelled { .. } | CallError::Poisoned) => return,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                })
            })
            .collect();
        busy(round * 7 % 300);
        cancel.store(true, Ordering::SeqCst);
        slot.interrupt();
        for c in callers {
            c.join().unwrap();
        }
        if slot.is_poisoned() {
            assert_eq!(call(&slot, 1, far()), Err(CallError::Poisoned));
        } else {
            // Control: no running call was cancelled, so the slot still serves.
            assert_eq!(call(&slot, 1, far()), Ok(2));
            slot.close();
        }
        server.join().unwrap();
    }
}
