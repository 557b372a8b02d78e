//! `skillgate doctor` and the library's [`skillgate::policy::doctor::diagnose`]: what this
//! kernel and setup give a policy, and a non-zero exit naming what it cannot meet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use skillgate::error::LoadError;
use skillgate::policy::doctor::diagnose;
use skillgate::{Isolation, LandlockStatus, Policy};
use support::Host;

fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skillgate"))
        .arg("doctor")
        .args(args)
        .output()
        .unwrap()
}

fn write_policy(dir: &Path, name: &str, isolation: &str, worker: &Path) -> std::path::PathBuf {
    let path = dir.join(name);
    let policy = serde_json::json!({
        "trusted_roots": [], "keys": "keys", "isolation": isolation, "worker": worker,
    });
    std::fs::write(&path, policy.to_string()).unwrap();
    path
}

/// On this machine (Landlock ABI 7, seccomp, the worker built beside the test) the
/// default policy's full sandbox can be met: exit 0, and the report says what it found.
#[test]
fn doctor_reports_what_this_machine_gives_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let worker = Path::new(env!("CARGO_BIN_EXE_skillgate-worker"));
    for isolation in ["process", "thread"] {
        let policy = write_policy(tmp.path(), &format!("{isolation}.json"), isolation, worker);
        let out = doctor(&["--policy", policy.to_str().unwrap(), "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["format"], "skillgate-doctor-v1");
        assert_eq!(doc["requirement"], "full");
        assert_eq!(doc["isolation"], isolation);
        assert!(
            doc["landlock"]["kernel_abi"].as_u64().unwrap() >= 1,
            "{doc:#}"
        );
        assert_eq!(doc["landlock"]["handled_abi"], 7);
        assert_eq!(doc["sandbox"]["ok"], true, "{doc:#}");
        assert_eq!(doc["sandbox"]["seccomp"], true);
        assert_eq!(doc["sandbox"]["landlock"], "fully_enforced");
        assert_eq!(doc["worker"]["path"], worker.to_str().unwrap());
        assert!(doc["namespaces"]["user"]["ok"].is_boolean());
        assert!(doc["namespaces"]["net"]["ok"].is_boolean());
        // The warm pool: on by default in process mode, none in thread mode.
        let pool = if isolation == "process" {
            skillgate::policy::DEFAULT_POOL_SIZE
        } else {
            0
        };
        assert_eq!(doc["pool"]["size"], pool, "{doc:#}");
        assert_eq!(doc["can_load"], true);
        assert_eq!(doc["unmet"], serde_json::json!([]));
    }
    // The text form, for people: the same verdict.
    let policy = tmp.path().join("process.json");
    let out = doctor(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("landlock abi       7"), "{text}");
    assert!(text.contains("seccomp            yes"), "{text}");
    assert!(text.contains(worker.to_str().unwrap()), "{text}");
}

/// A policy this setup cannot meet: process isolation with a worker that does not exist.
/// Exit 1, naming it; the same policy with the real worker is met (the control).
#[test]
fn a_policy_this_setup_cannot_meet_exits_1_naming_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir/skillgate-worker");
    let policy = write_policy(tmp.path(), "missing.json", "process", &missing);
    let out = doctor(&["--policy", policy.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["can_load"], false);
    assert_eq!(doc["worker"]["ok"], false);
    let unmet = doc["unmet"].as_array().unwrap();
    assert_eq!(unmet.len(), 1, "{doc:#}");
    assert!(
        unmet[0]
            .as_str()
            .unwrap()
            .contains(missing.to_str().unwrap()),
        "{doc:#}"
    );
    let out = doctor(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("UNMET"), "{text}");
    assert!(text.contains(missing.to_str().unwrap()), "{text}");
    // Thread isolation needs no worker: the same missing path is no obstacle.
    let policy = write_policy(tmp.path(), "thread.json", "thread", &missing);
    let out = doctor(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    // Control: the real worker meets it.
    let worker = Path::new(env!("CARGO_BIN_EXE_skillgate-worker"));
    let policy = write_policy(tmp.path(), "found.json", "process", worker);
    let out = doctor(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    // An unreadable policy is a usage error, not a verdict.
    let out = doctor(&["--policy", tmp.path().join("none.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// The library's answer is the sandbox's own: the trial enforces what a load would (and
/// what a loaded plugin reports), and the worker is the one a `Gate` would start.
#[test]
fn diagnose_uses_the_sandbox_and_worker_a_load_would() {
    let host = Host::process();
    let policy = host.policy();
    let d = diagnose(&policy);
    assert!(d.can_load(), "{:?}", d.unmet());
    let trial = d.sandbox.as_ref().unwrap();
    assert_eq!(trial.landlock, LandlockStatus::FullyEnforced);
    assert!(trial.seccomp && trial.no_new_privs);
    assert_eq!(d.landlock_abi_handled, 7);
    assert!(d.landlock_abi >= 7);
    let gate = host.gate();
    let plugin = gate.verify_and_load(host.plugin("good", "probe")).unwrap();
    let loaded = plugin.enforcement();
    assert_eq!(loaded.landlock, trial.landlock);
    assert_eq!(loaded.landlock_abi, trial.landlock_abi);
    assert_eq!(loaded.seccomp, trial.seccomp);
    // A worker exists where the policy says; the diagnosis found that one.
    assert_eq!(
        d.worker.as_ref().unwrap().path(),
        Path::new(env!("CARGO_BIN_EXE_skillgate-worker"))
    );
    // The namespaces a worker entered are the ones a child could enter.
    assert_eq!(
        loaded.namespaces.iter().any(|n| n == "user"),
        d.user_namespace.is_ok()
    );
    // The thread that asked was not restricted by the trial (it ran on a thread of its
    // own): no seccomp filter here, and files Landlock would deny are still readable.
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t0"), "{status}");
    assert!(std::fs::read(host.keys_dir().join("test.pub")).is_ok());

    // A missing worker is the typed error a Gate would return.
    let bad = Policy::builder()
        .keys(host.keys_dir())
        .isolation(Isolation::Process)
        .worker(host.tmp.path().join("missing-worker"))
        .build()
        .unwrap();
    let d = diagnose(&bad);
    // A configured worker that is not a file: used or nothing is.
    assert!(
        matches!(&d.worker, Err(LoadError::WorkerMissing { path }) if path.ends_with("missing-worker")),
        "{:?}",
        d.worker
    );
    assert!(!d.can_load());
    host.assert_still_serves(&gate);
}
