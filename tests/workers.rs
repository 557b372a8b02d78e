//! Several workers per plugin (policy `workers`): calls go to a free worker and run at the
//! same time on different worker processes, each worker still runs one call at a time, a
//! fault that ends one worker ends them all and poisons the handle, and the values a policy
//! may not hold are refused by exact variant.
//!
//! Process mode only, except the refusals: thread isolation has one plugin thread and no
//! worker processes, so "two workers" is meaningless there (and refused, tested below).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillgate::error::{Error, FaultError};
use skillgate::policy::{
    Isolation, MAX_WORKERS, Policy, PolicyError, SandboxPolicy, WorkspaceAccess,
};
use skillgate::{Gate, LoadOptions, LoadedPlugin, PluginResult};
use support::{Host, ctx, is_our_child, manifest_template};

/// Bound for "did not hang" only (a poll for a file the plugin writes at once).
const DID_NOT_HANG: Duration = Duration::from_secs(10);

/// The process policy with `workers` workers and the workspace writable.
fn policy(host: &Host, workers: u32) -> Policy {
    let mut sandbox = SandboxPolicy::default();
    sandbox.workspace = WorkspaceAccess::ReadWrite;
    host.process_policy()
        .to_builder()
        .sandbox(sandbox)
        .workers(workers)
        .build()
        .unwrap()
}

/// Builds `rendezvous.c` (waiting at most `wait_ms` for its peer) as plugin `name`,
/// asking for a read-write workspace.
fn install_rendezvous(host: &Host, name: &str, wait_ms: u32) -> PathBuf {
    let wait = wait_ms.to_string();
    let lib = host.build("rendezvous", name, &[("WAIT_MS", wait.as_str())]);
    let mut manifest: Value = serde_json::from_str(&manifest_template(name)).unwrap();
    manifest["workspace"] = json!("read_write");
    host.install_with_manifest(name, &lib, &serde_json::to_string(&manifest).unwrap())
}

/// A fresh workspace directory `name`.
fn workspace(host: &Host, name: &str) -> PathBuf {
    let dir = host.tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

fn load(gate: &Gate, dir: &Path, ws: &Path) -> LoadedPlugin {
    let plugin = gate
        .verify_and_load_with(dir, &LoadOptions::new().workspace(ws))
        .unwrap();
    assert_eq!(plugin.isolation(), Isolation::Process);
    plugin
}

/// One rendezvous call: announce `token`, wait for `peer`.
fn meet(plugin: &LoadedPlugin, ws: &Path, token: &str, peer: &str) -> Result<PluginResult, Error> {
    plugin.execute(&ctx(json!({
        "dir": ws.to_str().unwrap(),
        "token": token,
        "peer": peer,
    })))
}

/// (pid, met) of a successful rendezvous call.
fn met(result: &PluginResult) -> (u32, bool) {
    assert!(result.success, "{:?}", result.error);
    (
        u32::try_from(result.output["pid"].as_u64().unwrap()).unwrap(),
        result.output["met"].as_bool().unwrap(),
    )
}

/// Two calls from two threads at once.
fn both(plugin: &LoadedPlugin, ws: &Path) -> (PluginResult, PluginResult) {
    std::thread::scope(|s| {
        let a = s.spawn(|| meet(plugin, ws, "a", "b"));
        let b = s.spawn(|| meet(plugin, ws, "b", "a"));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    })
}

#[test]
fn two_workers_run_two_calls_at_once_on_different_pids() {
    let host = Host::process();
    let gate = host.gate_with(policy(&host, 2));
    let dir = install_rendezvous(&host, "rendezvous", 10_000);
    let ws = workspace(&host, "ws");
    let plugin = load(&gate, &dir, &ws);

    let pids = plugin.worker_pids();
    assert_eq!(pids.len(), 2, "two workers: {pids:?}");
    assert_ne!(pids[0], pids[1]);
    assert_eq!(
        plugin.worker_pid(),
        Some(pids[0]),
        "worker_pid is the first"
    );
    assert!(pids.iter().all(|p| is_our_child(*p)));

    let (a, b) = both(&plugin, &ws);
    let ((pid_a, met_a), (pid_b, met_b)) = (met(&a), met(&b));
    // Each saw the other's file while in flight: the calls overlapped.
    assert!(
        met_a && met_b,
        "the calls did not overlap: a {met_a}, b {met_b}"
    );
    assert_ne!(pid_a, pid_b, "two calls at once ran on one worker");
    assert!(
        pids.contains(&pid_a) && pids.contains(&pid_b),
        "{pids:?} vs {pid_a}, {pid_b}"
    );
    host.assert_still_serves(&gate);
}

/// The control: with one worker (the default) the same calls cannot overlap, so the first
/// to run waits out its bound alone and only the second meets it; both run on one pid.
#[test]
fn one_worker_runs_calls_one_at_a_time() {
    let host = Host::process();
    let gate = host.gate_with(policy(&host, 1));
    assert_eq!(gate.policy().workers(), 1);
    let dir = install_rendezvous(&host, "rendezvous", 300);
    let ws = workspace(&host, "ws");
    let plugin = load(&gate, &dir, &ws);
    assert_eq!(plugin.worker_pids().len(), 1);

    let (a, b) = both(&plugin, &ws);
    let ((pid_a, met_a), (pid_b, met_b)) = (met(&a), met(&b));
    assert!(!(met_a && met_b), "calls on one worker overlapped");
    assert!(met_a || met_b, "the second call must see the first's file");
    assert_eq!(pid_a, pid_b);
    assert_eq!(Some(pid_a), plugin.worker_pid());
    host.assert_still_serves(&gate);
}

/// A crash in one worker ends the other too, even in the middle of a call there (that call
/// fails with `Poisoned`, not with its own result, which it would only give after 20 s),
/// and every later call fails with `Poisoned`.
#[test]
fn a_crash_in_one_worker_poisons_every_worker() {
    let host = Host::process();
    let gate = host.gate_with(policy(&host, 2));
    let dir = install_rendezvous(&host, "rendezvous", 20_000);
    let ws = workspace(&host, "ws");
    let plugin = load(&gate, &dir, &ws);
    let pids = plugin.worker_pids();
    assert_eq!(pids.len(), 2);

    std::thread::scope(|s| {
        let waiting = s.spawn(|| meet(&plugin, &ws, "a", "nobody"));
        // The first call is in its worker once its file exists.
        let started = Instant::now();
        while !ws.join("in-a").exists() {
            assert!(
                started.elapsed() < DID_NOT_HANG,
                "the first call never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let crash = meet(&plugin, &ws, "crash", "none").unwrap_err();
        assert!(
            matches!(
                crash,
                Error::Fault(FaultError::Crashed {
                    signal: Some(libc::SIGABRT),
                    ..
                })
            ),
            "{crash:?}"
        );
        let other = waiting.join().unwrap().unwrap_err();
        assert!(
            matches!(other, Error::Fault(FaultError::Poisoned)),
            "the call in flight on the other worker: {other:?}"
        );
    });
    for pid in &pids {
        assert!(!is_our_child(*pid), "worker {pid} was not ended and reaped");
    }
    assert!(plugin.worker_pids().is_empty());
    assert_eq!(plugin.worker_pid(), None);
    for _ in 0..3 {
        let err = meet(&plugin, &ws, "b", "a").unwrap_err();
        assert!(matches!(err, Error::Fault(FaultError::Poisoned)), "{err:?}");
    }
    host.assert_still_serves(&gate);
}

/// Dropping the handle ends and reaps every worker.
#[test]
fn drop_ends_every_worker() {
    let host = Host::process();
    let gate = host.gate_with(
        host.process_policy()
            .to_builder()
            .workers(3)
            .build()
            .unwrap(),
    );
    let dir = host.plugin("good", "good");
    let plugin = gate.verify_and_load(&dir).unwrap();
    let pids = plugin.worker_pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| is_our_child(*p)));
    for _ in 0..4 {
        assert!(plugin.execute(&ctx(json!({}))).unwrap().success);
    }
    drop(plugin);
    for pid in &pids {
        assert!(!is_our_child(*pid), "worker {pid} outlived its handle");
    }
    host.assert_still_serves(&gate);
}

fn policy_json(host: &Host, isolation: &str, workers: u64) -> Result<Policy, PolicyError> {
    let json = json!({
        "trusted_roots": [host.root],
        "keys": host.keys_dir(),
        "isolation": isolation,
        "workers": workers,
    });
    Policy::from_json(json.to_string().as_bytes(), host.tmp.path())
}

#[test]
fn workers_out_of_range_are_refused() {
    let host = Host::process();
    for value in [0, u64::from(MAX_WORKERS) + 1, u64::MAX] {
        let err = policy_json(&host, "process", value).unwrap_err();
        assert!(
            matches!(err, PolicyError::WorkersOutOfRange { value: v, max: MAX_WORKERS } if v == value),
            "{value}: {err:?}"
        );
        if let Ok(workers) = u32::try_from(value) {
            let err = host
                .process_policy()
                .to_builder()
                .workers(workers)
                .build()
                .unwrap_err();
            assert!(
                matches!(err, PolicyError::WorkersOutOfRange { value: v, max: MAX_WORKERS } if v == value),
                "{value}: {err:?}"
            );
        }
    }
    // The controls: both ends of the range are accepted.
    for workers in [1, MAX_WORKERS] {
        assert_eq!(
            policy_json(&host, "process", workers.into())
                .unwrap()
                .workers(),
            workers
        );
    }
    assert_eq!(policy_json(&host, "process", 1).unwrap().workers(), 1);
    host.assert_still_serves(&host.process_gate());
}

#[test]
fn thread_mode_refuses_more_than_one_worker() {
    let host = Host::new();
    let err = policy_json(&host, "thread", 2).unwrap_err();
    assert!(
        matches!(err, PolicyError::WorkersNeedProcessIsolation { workers: 2 }),
        "{err:?}"
    );
    let err = host.policy().to_builder().workers(2).build().unwrap_err();
    assert!(
        matches!(err, PolicyError::WorkersNeedProcessIsolation { workers: 2 }),
        "{err:?}"
    );
    // The control: one worker is thread mode's own, and is accepted.
    let one = policy_json(&host, "thread", 1).unwrap();
    assert_eq!((one.isolation(), one.workers()), (Isolation::Thread, 1));
    host.assert_still_serves(&host.gate());
}
