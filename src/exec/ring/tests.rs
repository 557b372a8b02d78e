//! The call region's own tests: the layout the C test plugins rely on, the host's checks of
//! a reply (as the fuzz target runs them), a round trip between a host and a worker side in
//! one process, and the worker's refusal of a region that is not the host's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::*;
use crate::base::ffi::FaultError;

const OUTPUT: &[u8] = br#"{"success":true,"output":{},"error":null,"files":[]}"#;

fn fields(seq: u64, len: u64, tag: u32) -> Vec<u8> {
    ReplyFields { seq, len, tag }.to_bytes()
}

/// tests/plugins/ring.c hard-codes these numbers (and the module docs' table names them).
#[test]
fn the_layout_is_the_documented_one() {
    assert_eq!(super::super::init::WORKER_RING, 5);
    assert_eq!(
        (HEADER_BYTES, AREA_BYTES, REGION_BYTES),
        (4096, 1_114_112, 2_232_320)
    );
    assert_eq!(
        [
            CALL_SEQ_AT,
            REQUEST_LEN_AT,
            REQUEST_ON_SOCKET_AT,
            CALL_TURN_AT,
            WORKER_SLEEPING_AT
        ],
        [128, 136, 144, 148, 152]
    );
    assert_eq!(
        [
            REPLY_SEQ_AT,
            REPLY_LEN_AT,
            REPLY_TAG_AT,
            REPLY_TURN_AT,
            HOST_SLEEPING_AT
        ],
        [256, 264, 272, 276, 280]
    );
    assert_eq!([HOST_CPU_AT, WORKER_CPU_AT, ATTENTION_AT], [160, 288, 284]);
    assert_eq!((TAG_OUTPUT, TAG_FAULT, TAG_ON_SOCKET), (1, 2, 3));
    assert_eq!((REQUEST_AREA, REPLY_AREA), (4096, 4096 + 1_114_112));
}

#[test]
fn a_reply_is_checked_before_its_bytes_are_read() {
    let ok = decode_reply(
        &fields(7, OUTPUT.len() as u64, TAG_OUTPUT),
        OUTPUT,
        7,
        1 << 20,
    );
    assert!(matches!(ok, Ok(Reply::Done(Ok(r))) if r.success));
    // Another call's reply, even a well-formed one, is never returned.
    assert!(matches!(
        decode_reply(
            &fields(6, OUTPUT.len() as u64, TAG_OUTPUT),
            OUTPUT,
            7,
            1 << 20
        ),
        Err(ProtocolViolation::WrongSequence {
            expected: 7,
            got: 6
        })
    ));
    // A length over the output cap names both, and no byte is read.
    assert!(matches!(
        decode_reply(&fields(7, 1 << 40, TAG_OUTPUT), OUTPUT, 7, 1 << 20),
        Err(ProtocolViolation::RegionLength { len, cap: 1_048_576 }) if len == 1 << 40
    ));
    assert!(matches!(
        decode_reply(&fields(7, 11, TAG_OUTPUT), OUTPUT, 7, 10),
        Err(ProtocolViolation::RegionLength { len: 11, cap: 10 })
    ));
    // The area bounds it even when the output limit is larger.
    let over = AREA_BYTES as u64 + 1;
    assert!(matches!(
        decode_reply(&fields(7, over, TAG_OUTPUT), OUTPUT, 7, usize::MAX),
        Err(ProtocolViolation::RegionLength { len, cap: AREA_BYTES }) if len == over
    ));
    assert!(matches!(
        decode_reply(&fields(7, 2, 9), OUTPUT, 7, 1 << 20),
        Err(ProtocolViolation::RegionTag(9))
    ));
    assert!(matches!(
        decode_reply(&fields(7, 0, TAG_ON_SOCKET), b"", 7, 1 << 20),
        Ok(Reply::OnSocket)
    ));
    assert!(matches!(
        decode_reply(&fields(7, 1, TAG_ON_SOCKET), b"x", 7, 1 << 20),
        Err(ProtocolViolation::RegionLength { len: 1, cap: 0 })
    ));
    let fault = br#"{"kind":"null_result"}"#;
    assert!(matches!(
        decode_reply(&fields(7, fault.len() as u64, TAG_FAULT), fault, 7, 1 << 20),
        Ok(Reply::Done(Err(FaultError::NullResult { .. })))
    ));
    assert!(matches!(
        decode_reply(&fields(7, 2, TAG_FAULT), b"{}", 7, 1 << 20),
        Err(ProtocolViolation::Malformed { .. })
    ));
    assert!(matches!(
        decode_reply(&fields(7, FAULT_CAP as u64 + 1, TAG_FAULT), b"", 7, 1 << 20),
        Err(ProtocolViolation::RegionLength { cap: FAULT_CAP, .. })
    ));
    // Bytes that do not parse are a fault of the call (as a bad result frame is).
    assert!(matches!(
        decode_reply(&fields(7, 3, TAG_OUTPUT), b"{x}", 7, 1 << 20),
        Ok(Reply::Done(Err(FaultError::NotJson { .. })))
    ));
    // A short image or area never panics.
    assert!(decode_reply(&[1], &[], 1, 10).is_err());
    assert!(matches!(
        decode_reply(&fields(7, 5, TAG_OUTPUT), b"", 7, 10),
        Ok(Reply::Done(Err(_)))
    ));
}

fn worker_side(host: &HostRing) -> WorkerRing {
    let fd = host.fd().try_clone_to_owned().unwrap();
    WorkerRing::open(fd, LAYOUT_VERSION).unwrap()
}

/// A call and its reply through the region, the worker side on a thread; then a request too
/// large for the area is announced as coming on the socket, and a reply too large is not
/// published.
#[test]
fn a_call_round_trips_through_the_region() {
    let mut host = HostRing::create().unwrap();
    let mut worker = worker_side(&host);
    let served = std::thread::spawn(move || {
        for _ in 0..3 {
            let call = worker.wait_call();
            let Request::InRegion(len) = call.request else {
                panic!("request not in the region")
            };
            // The buffer is reused: a longer request before leaves nothing behind.
            let mut input = b"stale bytes of a longer request".to_vec();
            assert!(worker.request_into(len, &mut input));
            assert_eq!(input, b"hello");
            assert!(worker.stage(OUTPUT));
            worker.publish(call.seq, TAG_OUTPUT, OUTPUT.len());
        }
        let call = worker.wait_call();
        assert!(matches!(call.request, Request::OnSocket));
        let mut input = Vec::new();
        assert!(!worker.request_into(AREA_BYTES as u64 + 1, &mut input));
        assert!(input.is_empty());
        assert!(!worker.stage(&vec![b' '; AREA_BYTES + 1]));
        worker.publish(call.seq, TAG_ON_SOCKET, 0);
    });
    for seq in 1..=3 {
        let since = host.reply_turn();
        assert_eq!(host.post_call(seq, b"hello"), Posted::InRegion);
        // Some calls find the worker asleep (the futex path), some spinning.
        if seq == 2 {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(host.wait_reply(
            since,
            Some(host.attention()),
            Instant::now() + Duration::from_secs(10)
        ));
        assert!(matches!(
            host.read_reply(seq, 1 << 20),
            Ok(Reply::Done(Ok(r))) if r.success
        ));
    }
    let since = host.reply_turn();
    assert_eq!(
        host.post_call(4, &vec![b' '; AREA_BYTES + 1]),
        Posted::OnSocket
    );
    assert!(host.wait_reply(
        since,
        Some(host.attention()),
        Instant::now() + Duration::from_secs(10)
    ));
    assert!(matches!(host.read_reply(4, 1 << 20), Ok(Reply::OnSocket)));
    served.join().unwrap();
    // Nothing more comes: the wait ends at its bound, not later.
    let since = host.reply_turn();
    assert!(!host.wait_reply(
        since,
        Some(host.attention()),
        Instant::now() + Duration::from_millis(10)
    ));
}

/// A nudge (a frame written on the socket during a call) ends the host's wait, asleep or
/// spinning, without a reply and long before the wait's bound (a minute: a wait that ran
/// to it would fail the check below, which is no speed claim). Control: without a nudge
/// the same wait runs to its bound (above).
#[test]
fn a_nudge_ends_the_hosts_wait_without_a_reply() {
    let host = HostRing::create().unwrap();
    let worker = worker_side(&host);
    for pause in [Duration::ZERO, Duration::from_millis(50)] {
        let since = host.reply_turn();
        let attention = host.attention();
        let nudger = worker.nudger();
        let nudging = std::thread::spawn(move || {
            std::thread::sleep(pause);
            nudger.nudge();
        });
        let started = Instant::now();
        assert!(!host.wait_reply(since, Some(attention), started + Duration::from_secs(60)));
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_ne!(host.attention(), attention);
        assert_eq!(host.reply_turn(), since);
        nudging.join().unwrap();
    }
}

/// A wait told not to heed the attention count (after nudges that found nothing on the
/// socket) runs to its bound however often the worker bumps it, asleep rather than polling:
/// the probe is the same nudge that ends a heeding wait at once (above, the control).
#[test]
fn a_wait_that_does_not_heed_attention_sleeps_through_nudges() {
    let host = HostRing::create().unwrap();
    let worker = worker_side(&host);
    let since = host.reply_turn();
    let attention = host.attention();
    let nudger = worker.nudger();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = std::sync::Arc::clone(&stop);
    let nudging = std::thread::spawn(move || {
        let mut nudges = 0u64;
        while !stopping.load(Ordering::Relaxed) {
            nudger.nudge();
            nudges += 1;
            std::thread::sleep(Duration::from_micros(100));
        }
        nudges
    });
    let bound = Duration::from_millis(200);
    let started = Instant::now();
    assert!(!host.wait_reply(since, None, started + bound));
    assert!(started.elapsed() >= bound);
    stop.store(true, Ordering::Relaxed);
    let nudges = nudging.join().unwrap();
    assert!(nudges > 0);
    assert_ne!(host.attention(), attention, "the nudges reached the region");
    // Control: heeding the count, the wait ends at the first bump it sees.
    let again = host.attention();
    worker.nudger().nudge();
    let heeding = Instant::now();
    assert!(!host.wait_reply(since, Some(again), heeding + Duration::from_secs(60)));
    assert!(heeding.elapsed() < Duration::from_secs(30));
}

/// The worker maps only the host's region: a memfd of another size, or one without the
/// seals that keep it from shrinking under the host's mapping, or of another layout version
/// is refused. Control: the host's own region is accepted.
#[test]
fn the_worker_refuses_a_region_that_is_not_the_hosts() {
    use rustix::fs::{MemfdFlags, SealFlags};
    let host = HostRing::create().unwrap();
    assert!(WorkerRing::open(host.fd().try_clone_to_owned().unwrap(), LAYOUT_VERSION).is_ok());
    let refused = |fd, version| WorkerRing::open(fd, version).err().unwrap();
    assert!(
        refused(host.fd().try_clone_to_owned().unwrap(), LAYOUT_VERSION + 1)
            .contains("layout version")
    );
    let memfd = |size: usize, seals: SealFlags| {
        let fd =
            rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, size as u64).unwrap();
        if !seals.is_empty() {
            rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
        }
        fd
    };
    let all = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    assert!(refused(memfd(REGION_BYTES, SealFlags::empty()), LAYOUT_VERSION).contains("seals"));
    assert!(refused(memfd(REGION_BYTES, SealFlags::GROW), LAYOUT_VERSION).contains("seals"));
    assert!(refused(memfd(4096, all), LAYOUT_VERSION).contains("bytes"));
    // The right size and seals, but not a header the host wrote.
    assert!(refused(memfd(REGION_BYTES, all), LAYOUT_VERSION).contains("magic"));
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(refused(a.as_fd().try_clone_to_owned().unwrap(), LAYOUT_VERSION).contains("regular"));
}

/// The fuzz target's function on pseudo-random mutations of valid replies (a fixed seed,
/// so the same inputs every run): it never panics, and it accepts a reply only for the
/// call's sequence number with a known tag and a length within the cap.
#[test]
fn mutated_replies_never_panic_and_are_accepted_only_when_consistent() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let fault = br#"{"kind":"output_too_large","limit":10}"#;
    for round in 0..20_000u32 {
        let (tag, body): (u32, &[u8]) = if round % 2 == 0 {
            (TAG_OUTPUT, OUTPUT)
        } else {
            (TAG_FAULT, fault)
        };
        let mut header = fields(3, body.len() as u64, tag);
        let mut area = body.to_vec();
        for _ in 0..(next() % 4) {
            let r = next();
            if r % 2 == 0 && !header.is_empty() {
                let i = (r >> 8) as usize % header.len();
                header[i] = (r >> 16) as u8;
            } else if !area.is_empty() {
                let i = (r >> 8) as usize % area.len();
                area[i] = (r >> 16) as u8;
            }
        }
        if next() % 16 == 0 {
            header.truncate((next() % 21) as usize);
        }
        let cap = (next() % 128) as usize;
        let got = ReplyFields::from_bytes(&header);
        match decode_reply(&header, &area, 3, cap) {
            Ok(Reply::Done(_)) => {
                assert_eq!(got.seq, 3);
                assert!(matches!(got.tag, TAG_OUTPUT | TAG_FAULT));
                let limit = if got.tag == TAG_OUTPUT {
                    cap
                } else {
                    FAULT_CAP
                };
                assert!(got.len <= limit as u64);
            }
            Ok(Reply::OnSocket) => assert_eq!((got.seq, got.tag, got.len), (3, TAG_ON_SOCKET, 0)),
            Err(_) => {}
        }
    }
}
