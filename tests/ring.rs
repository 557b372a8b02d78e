//! The shared call region under fire (src/exec/ring): a plugin in a worker can map the region
//! its worker shares with the host (fd 5) and write anything there at any time. The host
//! must read each reply field once, check it and copy before parsing: a scribbled region,
//! a flipped sequence number, a huge length or a thread that keeps writing after the reply
//! ends the worker with the exact protocol fault, never a panic, a hang, an over-read or a
//! result from another call; a reply that follows on the socket is held to the same caps
//! as one in the region. Every negative test has the plugin's benign mode as control,
//! checks the worker is gone and the handle poisoned, and that the same plugin loads again.
//! Thread mode has no region: the same probes find none and the host is fine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use skillgate::error::{Error, FaultError, ProtocolViolation};
use skillgate::policy::Limits;
use skillgate::{Gate, Isolation, LoadedPlugin, PluginResult, TaskBound};
use support::{Host, ctx, is_our_child};

/// The region's size (the layout in src/exec/ring's docs; its unit tests pin it).
const REGION_BYTES: u64 = 4096 + 2 * 1_114_112;
/// The default output limit, which bounds a reply's length in the region.
const OUTPUT_LIMIT: usize = 1024 * 1024;

fn gate(
    host: &Host,
    edit: impl FnOnce(skillgate::policy::LimitsBuilder) -> skillgate::policy::LimitsBuilder,
) -> Gate {
    let limits = edit(Limits::builder().call_timeout_ms(10_000));
    host.gate_with(host.policy().to_builder().limits(limits).build().unwrap())
}

fn ring_plugin(host: &Host, name: &str) -> PathBuf {
    host.plugin("ring", name)
}

fn call(plugin: &LoadedPlugin, input: serde_json::Value) -> Result<PluginResult, Error> {
    plugin.execute(&ctx(input))
}

fn fault(result: Result<PluginResult, Error>) -> FaultError {
    match result {
        Err(Error::Fault(f)) => f,
        other => panic!("expected Error::Fault, got {other:?}"),
    }
}

/// The benign mode answers with the echo of its own input.
fn assert_echo(result: Result<PluginResult, Error>, i: u64) {
    let r = result.unwrap();
    assert_eq!(r.output["marker"], "ring", "{r:?}");
    assert_eq!(r.output["echo"]["input"]["i"], i, "{r:?}");
}

/// After a fault that ended the worker: reaped, the handle refuses every call with
/// `Poisoned`, and a fresh load of the same plugin serves.
fn assert_ended_and_reloadable(gate: &Gate, plugin: &LoadedPlugin, pid: u32, dir: &PathBuf) {
    assert!(!is_our_child(pid), "worker {pid} must be dead and reaped");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || !is_our_child(pid),
        "worker {pid} is gone"
    );
    assert_eq!(plugin.worker_pid(), None);
    for _ in 0..2 {
        assert!(matches!(
            fault(call(plugin, json!({"action": "echo", "i": 0}))),
            FaultError::Poisoned
        ));
    }
    let again = gate.verify_and_load(dir).unwrap();
    assert_echo(call(&again, json!({"action": "echo", "i": 9})), 9);
}

fn load(gate: &Gate, dir: &PathBuf) -> (LoadedPlugin, u32) {
    let plugin = gate.verify_and_load(dir).unwrap();
    let pid = plugin.worker_pid().expect("process mode has a worker");
    (plugin, pid)
}

/// One hostile action after a benign call (the control, the same plugin): the exact fault,
/// the worker ended, the handle poisoned, the plugin loadable again.
fn hostile(action: &str, expected: impl Fn(&FaultError) -> bool) {
    hostile_input(action, json!({ "action": action }), expected);
}

/// [`hostile`] with the hostile call's whole input.
fn hostile_input(name: &str, input: serde_json::Value, expected: impl Fn(&FaultError) -> bool) {
    let host = Host::process();
    let gate = gate(&host, |l| l);
    let dir = ring_plugin(&host, &format!("ring-{}", name.replace('_', "-")));
    let (plugin, pid) = load(&gate, &dir);
    assert_echo(call(&plugin, json!({"action": "echo", "i": 1})), 1);
    let f = fault(call(&plugin, input));
    assert!(expected(&f), "{name}: {f:?}");
    assert_ended_and_reloadable(&gate, &plugin, pid, &dir);
    host.assert_still_serves(&gate);
}

/// The control of a forged reply on the socket: with a payload of exactly `size` bytes
/// (`kind` "output" or "fault") the host takes it as the call's reply, and `check` gets
/// what the call returned. The plugin then sleeps inside its call; the handle's drop ends
/// the worker.
fn socket_reply_taken(kind: &str, size: usize, check: impl Fn(Result<PluginResult, Error>)) {
    let host = Host::process();
    let gate = gate(&host, |l| l);
    let dir = ring_plugin(&host, &format!("ring-socket-{kind}-control"));
    let (plugin, pid) = load(&gate, &dir);
    assert_echo(call(&plugin, json!({"action": "echo", "i": 1})), 1);
    check(call(
        &plugin,
        json!({"action": "socket_reply", "kind": kind, "size": size}),
    ));
    drop(plugin);
    assert!(
        !is_our_child(pid),
        "worker {pid} must be ended with its handle"
    );
    host.assert_still_serves(&gate);
}

/// A frame's length field counts the tag and the sequence number besides the payload.
const COUNTED_HEADER: usize = 9;
/// The largest fault a worker may send (`src/exec/ring`'s `FAULT_CAP`).
const FAULT_CAP: usize = 1024;

/// A forged reply of `kind` on the socket: `cap` bytes are taken (`check` gets the call's
/// result), one byte more ends the worker, naming the frame's length and the cap.
fn socket_reply_held_to(kind: &str, cap: usize, check: impl Fn(Result<PluginResult, Error>)) {
    socket_reply_taken(kind, cap, check);
    hostile_input(
        &format!("socket_{kind}_over"),
        json!({"action": "socket_reply", "kind": kind, "size": cap + 1}),
        |f| {
            matches!(
                f,
                FaultError::Protocol(ProtocolViolation::TooLarge { len, cap: c })
                    if *len == (cap + 1 + COUNTED_HEADER) as u64 && *c == cap + COUNTED_HEADER
            )
        },
    );
}

#[test]
fn a_reply_on_the_socket_is_held_to_the_output_limit_to_the_byte() {
    socket_reply_held_to("output", OUTPUT_LIMIT, |r| {
        let r = r.unwrap();
        assert_eq!(r.output["forged"], "socket", "{r:?}");
    });
}

#[test]
fn a_fault_on_the_socket_is_held_to_the_fault_cap_as_in_the_region() {
    socket_reply_held_to("fault", FAULT_CAP, |r| {
        assert!(
            matches!(fault(r), FaultError::NullResult { .. }),
            "a fault of {FAULT_CAP} bytes is the call's"
        );
    });
}

#[test]
fn a_plugin_that_scribbles_over_the_region_is_ended_with_the_exact_fault() {
    // The scribble is a fixed pattern written over every byte, the reply turn last: the
    // host reads a reply header of pattern bytes, whose sequence number is not call 2's.
    hostile("scribble", |f| {
        matches!(
            f,
            FaultError::Protocol(ProtocolViolation::WrongSequence { expected: 2, got })
                if *got != 2
        )
    });
}

#[test]
fn a_reply_with_a_flipped_sequence_number_is_never_returned() {
    hostile("flip_seq", |f| {
        matches!(
            f,
            FaultError::Protocol(ProtocolViolation::WrongSequence {
                expected: 2,
                got: 3
            })
        )
    });
}

#[test]
fn a_huge_reply_length_is_refused_naming_length_and_cap() {
    hostile("huge_len", |f| {
        matches!(
            f,
            FaultError::Protocol(ProtocolViolation::RegionLength { len, cap })
                if *len == 1 << 40 && *cap == OUTPUT_LIMIT
        )
    });
}

#[test]
fn an_unknown_reply_tag_is_refused() {
    hostile("bad_tag", |f| {
        matches!(f, FaultError::Protocol(ProtocolViolation::RegionTag(77)))
    });
}

/// A thread that keeps writing stale reply headers (an older sequence number, a length of
/// 2^40, tag 77) and bumping the reply turn after its call returned, for many calls: each
/// call ends with its own correct result or a protocol fault, never another call's result,
/// a hang or a panic.
#[test]
fn a_thread_that_keeps_writing_after_the_reply_never_gets_another_calls_result() {
    let host = Host::process();
    let gate = gate(&host, |l| l.threads(8));
    let dir = ring_plugin(&host, "ring-hammer");
    let (mut faults, mut results, mut hammers) = (0, 0, 0);
    for round in 0..4u64 {
        let (plugin, pid) = load(&gate, &dir);
        let tasks = plugin.enforcement().tasks;
        match call(&plugin, json!({"action": "hammer"})) {
            Ok(r) => {
                let started = r.output["hammer"] == 1;
                assert!(started || tasks == TaskBound::NoThreads, "{tasks:?}: {r:?}");
                hammers += u32::from(started);
            }
            Err(Error::Fault(FaultError::Protocol(_))) => {
                hammers += 1;
                faults += 1;
                assert_ended_and_reloadable(&gate, &plugin, pid, &dir);
                continue;
            }
            Err(e) => panic!("round {round}: {e:?}"),
        }
        for i in 0..50u64 {
            match call(&plugin, json!({"action": "echo", "i": i})) {
                Ok(r) => {
                    assert_echo(Ok(r), i);
                    results += 1;
                }
                Err(Error::Fault(FaultError::Protocol(
                    ProtocolViolation::WrongSequence { .. }
                    | ProtocolViolation::RegionLength { .. }
                    | ProtocolViolation::RegionTag(_),
                ))) => {
                    faults += 1;
                    assert_ended_and_reloadable(&gate, &plugin, pid, &dir);
                    break;
                }
                Err(e) => panic!("round {round}, call {i}: {e:?}"),
            }
        }
    }
    eprintln!("hammer threads {hammers}, results {results}, faults {faults}");
    if hammers > 0 {
        assert!(faults > 0, "the hammer was seen at least once");
    }
    host.assert_still_serves(&gate);
}

/// The worker's `worker_cpu` word is only a hint for how the host spins: a worker that
/// claims the host's own CPU (the host sleeps at once) still has its replies read, one
/// that claims another CPU (the host polls without yielding) and never replies still
/// ends at the call's deadline.
#[test]
fn a_worker_that_lies_about_its_cpu_changes_how_the_host_waits_not_how_long() {
    let host = Host::process();
    let gate = gate(&host, |l| l.call_timeout_ms(500));
    let dir = ring_plugin(&host, "ring-cpu-lie");
    let (plugin, pid) = load(&gate, &dir);
    for i in 0..50u64 {
        assert_echo(
            call(
                &plugin,
                json!({"action": "cpu_lie", "claim": "together", "i": i}),
            ),
            i,
        );
    }
    let f = fault(call(
        &plugin,
        json!({"action": "cpu_lie", "claim": "apart"}),
    ));
    assert!(matches!(f, FaultError::Timeout { .. }), "{f:?}");
    assert_ended_and_reloadable(&gate, &plugin, pid, &dir);
    host.assert_still_serves(&gate);
}

/// CPU time (utime + stime) of the calling thread, in clock ticks.
fn thread_ticks() -> u64 {
    ticks_in("/proc/thread-self/stat")
}

/// A plugin that bumps the region's attention count in a loop for 300 ms, waking the host
/// each time, and writes nothing on the socket, does not keep the host's calling thread
/// busy: after two nudges in a row found the socket quiet, the host's waits stop heeding
/// the count for the rest of their slice, and a wake-up that brings nothing is followed by
/// a pause (`HostRing::wait_reply`). Before that the host polled without sleeping for as
/// long as the storm lasted (a CPU: about 30 ticks in 300 ms). Bumping the count is no
/// violation: the call returns the plugin's result and the worker serves on. Control: the
/// same measure sees this thread when it is busy for 100 ms. (Thread mode has no region:
/// `in_thread_mode_the_probes_find_no_region_and_the_host_is_fine` runs the action there.)
#[test]
fn a_plugin_storming_the_attention_count_does_not_keep_the_host_busy() {
    let host = Host::process();
    let gate = gate(&host, |l| l);
    let (plugin, pid) = load(&gate, &ring_plugin(&host, "ring-storm"));
    let before = thread_ticks();
    let spin = Instant::now();
    while spin.elapsed() < Duration::from_millis(100) {
        std::hint::spin_loop();
    }
    let busy = thread_ticks() - before;
    assert!(busy >= 3, "control: 100 ms of spinning is {busy} ticks");
    let before = thread_ticks();
    let r = call(&plugin, json!({"action": "nudge_storm"})).unwrap();
    let used = thread_ticks() - before;
    assert_eq!(r.output["region"], true, "{r:?}");
    let bumps = r.output["bumps"].as_u64().unwrap();
    assert!(bumps > 1_000, "the storm bumped the count {bumps} times");
    assert!(
        used < 8,
        "the calling thread used {used} ticks during a 300 ms storm of {bumps} nudges"
    );
    assert_echo(call(&plugin, json!({"action": "echo", "i": 6})), 6);
    assert_eq!(plugin.worker_pid(), Some(pid));
    host.assert_still_serves(&gate);
}

/// Control for every test above: the region is reachable by plugin code at fd 5, mapped
/// and live (its header names this call and its request), in process mode.
#[test]
fn the_region_is_reachable_from_plugin_code_at_its_fixed_descriptor() {
    let host = Host::process();
    let gate = gate(&host, |l| l);
    let (plugin, _) = load(&gate, &ring_plugin(&host, "ring-probe"));
    let input = json!({"action": "probe"});
    let request_len = serde_json::to_vec(&ctx(input.clone())).unwrap().len();
    let r = call(&plugin, input).unwrap();
    assert_eq!(r.output["region"], true, "{r:?}");
    assert_eq!(r.output["size"], REGION_BYTES);
    assert_eq!(r.output["call_seq"], 1);
    assert_eq!(r.output["request_len"], request_len as u64);
    assert_eq!(r.output["on_socket"], 0);
    assert_echo(call(&plugin, json!({"action": "echo", "i": 2})), 2);
}

fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `size` bytes of input and of output round-trip intact; `on_socket` says which path the
/// request took (the region, or the socket for a payload larger than the region's area).
fn round_trip(plugin: &LoadedPlugin, size: usize, on_socket: bool) {
    let data: String = (0..size)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect();
    let input = json!({"action": "big", "size": size, "data": data});
    let request_len = serde_json::to_vec(&ctx(input.clone())).unwrap().len();
    let r = call(plugin, input).unwrap();
    assert_eq!(r.output["len"], size as u64);
    assert_eq!(r.output["fnv"], fnv1a(data.as_bytes()));
    assert_eq!(r.output["on_socket"], u64::from(on_socket));
    let expected_len = if on_socket { 0 } else { request_len as u64 };
    assert_eq!(r.output["request_len"], expected_len);
    let out = r.output["data"].as_str().unwrap();
    assert_eq!(out.len(), size);
    assert!(
        out.bytes()
            .enumerate()
            .all(|(i, b)| b == b'a' + (i % 26) as u8),
        "the output came back intact"
    );
}

#[test]
fn a_megabyte_each_way_round_trips_through_the_region_and_larger_through_the_socket() {
    let host = Host::process();
    let gate = gate(&host, |l| l.output_bytes(8 << 20));
    let (plugin, pid) = load(&gate, &ring_plugin(&host, "ring-big"));
    round_trip(&plugin, 1 << 20, false);
    round_trip(&plugin, 3 << 20, true);
    round_trip(&plugin, 10, false);
    assert_eq!(plugin.worker_pid(), Some(pid));
}

/// Thread mode has no worker and no region: the probes find none (fd 5 is whatever this
/// test process holds there, never a region naming this process as its worker) and say so,
/// and the hostile actions have nothing to attack.
#[test]
fn in_thread_mode_the_probes_find_no_region_and_the_host_is_fine() {
    let host = Host::new();
    let gate = gate(&host, |l| l);
    let plugin = gate
        .verify_and_load(ring_plugin(&host, "ring-thread"))
        .unwrap();
    assert_eq!(plugin.isolation(), Isolation::Thread);
    for action in [
        "probe",
        "scribble",
        "flip_seq",
        "huge_len",
        "bad_tag",
        "nudge_storm",
        "socket_reply",
    ] {
        let r = call(&plugin, json!({"action": action})).unwrap();
        assert_eq!(r.output["region"], false, "{action}: {r:?}");
    }
    assert_echo(call(&plugin, json!({"action": "echo", "i": 3})), 3);
    host.assert_still_serves(&gate);
}

/// utime + stime of `pid`, in clock ticks (every thread of the process).
fn cpu_ticks(pid: u32) -> u64 {
    ticks_in(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a `stat` file of `/proc`, in clock ticks.
fn ticks_in(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A loaded worker that gets no calls sleeps: its CPU time does not grow over 300 ms
/// (spinning, it would grow by ~30 ticks). Control: a call that burns 300 ms of CPU shows
/// up as that many ticks, so the measure sees a busy worker.
#[test]
fn an_idle_worker_uses_no_cpu() {
    let host = Host::process();
    let gate = gate(&host, |l| l);
    let (plugin, pid) = load(&gate, &ring_plugin(&host, "ring-idle"));
    let before = cpu_ticks(pid);
    call(&plugin, json!({"action": "burn"})).unwrap();
    let burnt = cpu_ticks(pid) - before;
    assert!(burnt >= 20, "control: 300 ms of CPU is {burnt} ticks");
    assert_echo(call(&plugin, json!({"action": "echo", "i": 4})), 4);
    let idle_from = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    let idle = cpu_ticks(pid) - idle_from;
    assert!(idle < 5, "an idle worker used {idle} ticks in 300 ms");
    assert_echo(call(&plugin, json!({"action": "echo", "i": 5})), 5);
}
