//! The warm pool of workers (process isolation): loads take a worker started ahead of
//! them, enforcement is a cold start's, a worker never serves two plugins, a pooled worker
//! that died is replaced, dropping the Gate leaves no worker and no descriptor behind, and a
//! loaded plugin holds nothing of a pooled worker. Process mode only: thread isolation has
//! no workers (a thread-mode Gate has no pool, checked below).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillgate::policy::{PolicyError, SandboxPolicy, WorkspaceAccess};
use skillgate::{Error, Gate, LoadOptions, Policy};
use support::{Host, ctx, is_our_child, manifest_template};

/// Serializes the tests of this file: they count this process's children, descriptors
/// and threads, which a parallel test's Gate would change.
static SERIAL: Mutex<()> = Mutex::new(());

/// A bound that proves "did not hang", not a speed.
const PATIENCE: Duration = Duration::from_secs(20);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pooled_policy(host: &Host, size: usize) -> Policy {
    host.process_policy()
        .to_builder()
        .pool_size(size)
        .build()
        .unwrap()
}

/// Waits until `gate`'s pool holds `n` workers, none of them in `not`.
fn wait_for_pool(gate: &Gate, n: usize, not: &[u32]) -> Vec<u32> {
    let until = Instant::now() + PATIENCE;
    loop {
        let pids = gate.pooled_worker_pids();
        if pids.len() == n && !pids.iter().any(|p| not.contains(p)) {
            return pids;
        }
        assert!(Instant::now() < until, "the pool never filled: {pids:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `pid` is no longer a running process (a zombie, or gone).
fn wait_dead(pid: u32) {
    let until = Instant::now() + PATIENCE;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim().chars().next()))
            .flatten();
        if matches!(state, None | Some('Z' | 'X')) {
            return;
        }
        assert!(Instant::now() < until, "{pid} did not die");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

/// The link targets of `pid`'s descriptors, by number.
fn fds_of(pid: u32) -> Vec<(u32, PathBuf)> {
    let mut fds: Vec<(u32, PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list the descriptors of {pid}: {e}"))
        .map(|e| {
            let e = e.unwrap();
            let n: u32 = e.file_name().to_str().unwrap().parse().unwrap();
            (n, std::fs::read_link(e.path()).unwrap())
        })
        .collect();
    fds.sort();
    fds
}

fn run_good(plugin: &skillgate::LoadedPlugin) {
    let result = plugin.execute(&ctx(json!({ "n": 1 }))).unwrap();
    assert!(result.success);
    assert_eq!(result.output["marker"], "v1");
}

#[test]
fn loads_come_from_the_pool_and_a_worker_never_serves_two_plugins() {
    let _s = serial();
    let host = Host::process();
    let first = host.plugin("good", "first");
    let second = host.plugin("good", "second");
    let gate = host.gate_with(pooled_policy(&host, 2));
    let pooled = wait_for_pool(&gate, 2, &[]);
    let a = gate.verify_and_load(&first).unwrap();
    let a_pid = a.worker_pid().unwrap();
    assert!(pooled.contains(&a_pid), "{a_pid} not in {pooled:?}");
    assert!(
        !gate.pooled_worker_pids().contains(&a_pid),
        "taken, so no longer pooled"
    );
    run_good(&a);
    let b = gate.verify_and_load(&second).unwrap();
    let b_pid = b.worker_pid().unwrap();
    assert!(pooled.contains(&b_pid), "{b_pid} not in {pooled:?}");
    assert_ne!(a_pid, b_pid);
    run_good(&b);
    // Refilled with new workers: neither taken one comes back, even after its plugin ends.
    drop(a);
    assert!(!is_our_child(a_pid), "a taken worker ends with its plugin");
    let refilled = wait_for_pool(&gate, 2, &[a_pid, b_pid]);
    let c = gate.verify_and_load(&first).unwrap();
    let c_pid = c.worker_pid().unwrap();
    assert!(refilled.contains(&c_pid));
    assert!(![a_pid, b_pid].contains(&c_pid));
    run_good(&c);
    run_good(&b);
    host.assert_still_serves(&gate);
}

/// The workspace is a grant descriptor: with it, the hand-over carries grants too.
fn workspace_policy(host: &Host, size: usize) -> Policy {
    let mut sandbox = SandboxPolicy::default();
    sandbox.workspace = WorkspaceAccess::Read;
    pooled_policy(host, size)
        .to_builder()
        .sandbox(sandbox)
        .build()
        .unwrap()
}

fn install_reading(host: &Host) -> PathBuf {
    let lib = host.build("good", "reader", &[]);
    let mut manifest: Value = serde_json::from_str(&manifest_template("reader")).unwrap();
    manifest["workspace"] = json!("read");
    host.install_with_manifest("reader", &lib, &serde_json::to_string(&manifest).unwrap())
}

#[test]
fn a_pooled_load_enforces_exactly_what_a_cold_start_does() {
    let _s = serial();
    let host = Host::process();
    let dir = install_reading(&host);
    let ws = host.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let options = LoadOptions::new().workspace(&ws);
    let cold_gate = host.gate_with(workspace_policy(&host, 0));
    let cold = cold_gate.verify_and_load_with(&dir, &options).unwrap();
    let warm_gate = host.gate_with(workspace_policy(&host, 1));
    let pooled = wait_for_pool(&warm_gate, 1, &[]);
    let warm = warm_gate.verify_and_load_with(&dir, &options).unwrap();
    assert_eq!(warm.worker_pid().map(|p| pooled.contains(&p)), Some(true));
    assert!(
        warm.enforcement().workspace.is_some(),
        "the grant reached the worker"
    );
    assert_eq!(warm.enforcement(), cold.enforcement());
    // The same descriptors, at the same numbers (the grant's included), and no more.
    let (cold_fds, warm_fds) = (
        fds_of(cold.worker_pid().unwrap()),
        fds_of(warm.worker_pid().unwrap()),
    );
    let numbers = |fds: &[(u32, PathBuf)]| fds.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(numbers(&warm_fds), numbers(&cold_fds));
    assert_eq!(
        numbers(&warm_fds),
        vec![0, 1, 2, 3, 4, 5, 6],
        "{warm_fds:?}"
    );
    assert!(
        warm_fds[5]
            .1
            .to_str()
            .unwrap()
            .starts_with("/memfd:skillgate-ring"),
        "the call region at 5: {warm_fds:?}"
    );
    assert_eq!(
        warm_fds[6].1,
        ws.canonicalize().unwrap(),
        "the workspace at the first grant"
    );
    run_good(&warm);
    run_good(&cold);
    host.assert_still_serves(&warm_gate);
}

/// The refill threads running now (their names are set by themselves as they start: the
/// control below looks only once its pool has filled).
fn refill_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| *n == "skillgate-pool")
        .count()
}

#[test]
fn pool_size_zero_is_a_cold_start_with_no_thread() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "cold");
    // Every earlier Gate of this file was dropped, its refill thread joined.
    assert_eq!(refill_threads(), 0);
    let gate = host.gate_with(pooled_policy(&host, 0));
    let plugin = gate.verify_and_load(&dir).unwrap();
    assert!(is_our_child(plugin.worker_pid().unwrap()));
    assert!(gate.pooled_worker_pids().is_empty());
    run_good(&plugin);
    assert_eq!(refill_threads(), 0, "no refill thread for size 0");
    // Control: a pooled Gate has one.
    let pooled = host.gate_with(pooled_policy(&host, 1));
    wait_for_pool(&pooled, 1, &[]);
    assert_eq!(refill_threads(), 1);
    drop(pooled);
    assert_eq!(refill_threads(), 0, "joined on drop");
    // And thread isolation has no pool at all.
    let thread_gate = Host::new().gate();
    assert!(thread_gate.pooled_worker_pids().is_empty());
    assert_eq!(refill_threads(), 0);
    host.assert_still_serves(&gate);
}

#[test]
fn pool_size_is_bounded_with_a_typed_error() {
    let _s = serial();
    let host = Host::process();
    let max = skillgate::policy::MAX_POOL_SIZE;
    let err = host
        .process_policy()
        .to_builder()
        .pool_size(max + 1)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::PoolTooLarge { size, max: m } if size == max + 1 && m == max),
        "{err:?}"
    );
    assert_eq!(pooled_policy(&host, max).pool_size(), max);
    assert_eq!(
        host.process_policy().pool_size(),
        skillgate::policy::DEFAULT_POOL_SIZE
    );
    // From a file: the same bound, and an unknown field of the section is refused.
    let file = |pool: &str| {
        format!(r#"{{"trusted_roots":["r"],"keys":"k","isolation":"process","pool":{pool}}}"#)
    };
    let base = Path::new("/");
    assert_eq!(
        Policy::from_json(file(r#"{"size":0}"#).as_bytes(), base)
            .unwrap()
            .pool_size(),
        0
    );
    let err = Policy::from_json(file(&format!(r#"{{"size":{}}}"#, max + 1)).as_bytes(), base)
        .unwrap_err();
    assert!(matches!(err, PolicyError::PoolTooLarge { .. }), "{err:?}");
    let err = Policy::from_json(file(r#"{"sise":1}"#).as_bytes(), base).unwrap_err();
    assert!(matches!(err, PolicyError::Syntax(_)), "{err:?}");
}

#[test]
fn a_killed_pooled_worker_is_replaced_and_the_load_uses_another_or_starts_cold() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "survivor");
    let gate = host.gate_with(pooled_policy(&host, 2));
    let pooled = wait_for_pool(&gate, 2, &[]);
    kill(pooled[0]);
    wait_dead(pooled[0]);
    let plugin = gate.verify_and_load(&dir).unwrap();
    let pid = plugin.worker_pid().unwrap();
    assert_eq!(pid, pooled[1], "the load takes the live one");
    run_good(&plugin);
    // The dead one was reaped and replaced.
    let refilled = wait_for_pool(&gate, 2, &pooled);
    assert!(!is_our_child(pooled[0]), "reaped");
    // Every pooled worker dead: a cold start, still a worker process.
    for p in &refilled {
        kill(*p);
        wait_dead(*p);
    }
    let cold = gate.verify_and_load(&dir).unwrap();
    let cold_pid = cold.worker_pid().unwrap();
    assert!(!refilled.contains(&cold_pid));
    assert_eq!(cold.isolation(), skillgate::policy::Isolation::Process);
    run_good(&cold);
    wait_for_pool(&gate, 2, &refilled);
    for p in &refilled {
        assert!(!is_our_child(*p), "reaped");
    }
    host.assert_still_serves(&gate);
}

#[test]
fn dropping_the_gate_ends_and_reaps_every_pooled_worker() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "dropped");
    // Warm up what lives as long as the process (the spawner thread) before counting.
    drop(
        host.gate_with(pooled_policy(&host, 0))
            .verify_and_load(&dir)
            .unwrap(),
    );
    let fds_before = fd_count();
    let gate = host.gate_with(pooled_policy(&host, 3));
    let pooled = wait_for_pool(&gate, 3, &[]);
    for p in &pooled {
        assert!(is_our_child(*p));
    }
    assert!(
        fd_count() > fds_before,
        "control: pooled workers hold descriptors here"
    );
    let plugin = gate.verify_and_load(&dir).unwrap();
    drop(gate);
    // The loaded plugin outlives its Gate and still runs; the waiting ones are gone.
    run_good(&plugin);
    let taken = plugin.worker_pid().unwrap();
    for p in pooled.iter().filter(|p| **p != taken) {
        assert!(!is_our_child(*p), "pooled worker {p} left behind");
    }
    drop(plugin);
    assert!(!is_our_child(taken));
    assert_eq!(fd_count(), fds_before, "no descriptor leaked");
    assert!(
        !thread_names().iter().any(|n| n == "skillgate-pool"),
        "the refill thread was joined"
    );
}

#[test]
fn a_loaded_plugin_holds_nothing_of_a_pooled_worker() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "neighbour");
    let gate = host.gate_with(pooled_policy(&host, 2));
    let pooled = wait_for_pool(&gate, 2, &[]);
    let plugin = gate.verify_and_load(&dir).unwrap();
    let loaded = plugin.worker_pid().unwrap();
    assert!(pooled.contains(&loaded), "{loaded} was pooled");
    // The refill: one worker spawned after the load, one waiting since before it.
    let waiting = wait_for_pool(&gate, 2, &[loaded]);
    let loaded_fds = fds_of(loaded);
    for p in &waiting {
        let theirs = fds_of(*p);
        // Control: the probe sees the waiting worker's channel, a socket at 4.
        let channel = &theirs.iter().find(|(n, _)| *n == 4).unwrap().1;
        assert!(
            channel.to_str().unwrap().starts_with("socket:"),
            "{theirs:?}"
        );
        assert!(
            !loaded_fds.iter().any(|(_, t)| t == channel),
            "the loaded worker holds pooled worker {p}'s channel: {loaded_fds:?}"
        );
        // And the waiting worker holds nothing but its placeholder and channel.
        assert_eq!(
            theirs.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
    }
    // The loaded worker: stdio, library, its own channel, its own call region, nothing else.
    assert_eq!(
        loaded_fds.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5],
        "{loaded_fds:?}"
    );
    for (_, region) in loaded_fds.iter().filter(|(n, _)| *n == 5) {
        assert!(
            region
                .to_str()
                .unwrap()
                .starts_with("/memfd:skillgate-ring"),
            "{loaded_fds:?}"
        );
    }
    run_good(&plugin);
    host.assert_still_serves(&gate);
}

#[test]
fn a_refused_load_on_a_pooled_worker_ends_it_and_the_host_still_serves() {
    let _s = serial();
    let host = Host::process();
    // The ABI check refuses after the load: the worker taken must end, not return.
    let lib = host.build("good", "mismatch", &[]);
    let mut manifest: Value = serde_json::from_str(&manifest_template("mismatch")).unwrap();
    manifest["version"] = json!("2.0.0");
    let dir =
        host.install_with_manifest("mismatch", &lib, &serde_json::to_string(&manifest).unwrap());
    let gate = host.gate_with(pooled_policy(&host, 1));
    let pooled = wait_for_pool(&gate, 1, &[]);
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Abi(skillgate::error::AbiError::MetadataMismatch { .. })
        ),
        "{err:?}"
    );
    assert!(
        !is_our_child(pooled[0]),
        "the refused worker was ended and reaped"
    );
    wait_for_pool(&gate, 1, &pooled);
    host.assert_still_serves(&gate);
}
