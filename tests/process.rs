//! Process isolation under fire: plugins that crash, abort, panic across the FFI boundary,
//! hang, exhaust memory, fork, exhaust descriptors, return a huge string or look for the
//! host's symbols. Each fault must end (or be contained in) the worker, never the host:
//! every test asserts the exact fault, how long it took, that a dead worker is reaped (its
//! pid is no longer a child of ours), that the handle is then `Poisoned`, and that the same
//! host still verifies, loads and runs a good plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use rustix::fs::SealFlags;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skillgate::TaskBound;
use skillgate::error::Error;
use skillgate::error::LoadError;
use skillgate::error::{AbiError, FaultError};
use skillgate::error::{ProtocolViolation, Tag};
use skillgate::policy::{Limits, LimitsBuilder, Policy};
use skillgate::{Gate, Isolation, LoadedPlugin, PluginResult};
use support::{Host, ctx, is_our_child};

/// Generous bound for a fault that should be noticed at once (a crash, a refused call):
/// the tests run in parallel on a shared machine.
const PROMPT: Duration = Duration::from_secs(10);

/// The call timeout of the tests where a crash is expected: well above [`PROMPT`]'s needs
/// for a crash, and short enough that a worker which fails to die (e.g. one spinning in a
/// fault handler) shows up as a `Timeout` within seconds rather than after the default 30 s.
const CRASH_TIMEOUT_MS: u64 = 5_000;

/// [`Host::process_gate`] with [`CRASH_TIMEOUT_MS`].
fn crash_gate(host: &Host) -> Gate {
    let policy = host
        .process_policy()
        .to_builder()
        .limits(Limits::builder().call_timeout_ms(CRASH_TIMEOUT_MS))
        .build()
        .unwrap();
    host.gate_with(policy)
}

/// Builds `faulty.c` as plugin `name`, installs and signs it.
fn faulty(host: &Host, name: &str) -> PathBuf {
    host.plugin("faulty", name)
}

/// Loads `dir` through `gate` in process mode and returns the plugin and its worker pid.
fn load(gate: &Gate, dir: &Path) -> (LoadedPlugin, u32) {
    let plugin = gate.verify_and_load(dir).unwrap();
    assert_eq!(plugin.isolation(), Isolation::Process);
    let pid = plugin
        .worker_pid()
        .expect("a process-mode plugin has a worker");
    assert!(
        is_our_child(pid),
        "worker {pid} must be our child while it runs"
    );
    (plugin, pid)
}

/// Runs `action` once and times it (printed with `--nocapture`).
fn act(plugin: &LoadedPlugin, action: &str) -> (Result<PluginResult, Error>, Duration) {
    let started = Instant::now();
    let result = plugin.execute(&ctx(serde_json::json!({ "action": action })));
    let took = started.elapsed();
    let shown = match &result {
        Ok(r) => format!(
            "Ok({})",
            serde_json::Value::from(
                r.output
                    .clone()
                    .into_iter()
                    .collect::<serde_json::Map<_, _>>()
            )
        ),
        Err(e) => format!("Err({e:?})"),
    };
    eprintln!(
        "{action}: {} after {took:?}",
        shown.chars().take(200).collect::<String>()
    );
    (result, took)
}

/// The fault a failed call returned.
fn fault(result: Result<PluginResult, Error>) -> FaultError {
    match result {
        Err(Error::Fault(f)) => f,
        other => panic!("expected Error::Fault, got {other:?}"),
    }
}

/// After a fault that ended the worker: it is gone (reaped, not a child of ours any more),
/// the handle has no worker and refuses every later call with `Poisoned`, promptly.
fn assert_worker_ended(plugin: &LoadedPlugin, pid: u32) {
    assert!(
        !is_our_child(pid),
        "worker {pid} must be dead and reaped after the fault"
    );
    assert_eq!(plugin.worker_pid(), None);
    for _ in 0..2 {
        let (result, took) = act(plugin, "ok");
        assert!(
            matches!(fault(result), FaultError::Poisoned),
            "every later call is Poisoned"
        );
        assert!(
            took < Duration::from_millis(500),
            "Poisoned is immediate: {took:?}"
        );
    }
    assert!(!is_our_child(pid), "no call restarts the worker");
}

/// After a fault the worker survives: same pid, still our child, and it still serves.
fn assert_worker_survives(plugin: &LoadedPlugin, pid: u32) {
    assert_eq!(plugin.worker_pid(), Some(pid));
    assert!(is_our_child(pid));
    let (result, _) = act(plugin, "ok");
    let out = result.expect("the worker still serves calls");
    assert_eq!(out.output["action"], "ok");
    assert_eq!(out.output["echo"]["input"]["action"], "ok");
    assert_eq!(plugin.worker_pid(), Some(pid));
}

/// `(process group, session)` of `pid`, from `/proc/<pid>/stat`.
fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) state ppid pgrp session …": split after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<u32> = rest
        .split_whitespace()
        .skip(2)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    (fields[0], fields[1])
}

/// Each worker, cold or from the pool, leads a process group of its own, so a terminal's
/// job-control signals sent to the host's group (Ctrl-C) never reach plugin code; it stays
/// in the host's session (see `detach` in src/exec/child.rs for why).
#[test]
fn every_worker_leads_a_process_group_of_its_own_in_the_hosts_session() {
    let host = Host::process();
    let gate = host.gate();
    let (host_group, host_session) = group_and_session(std::process::id());
    let dir = host.plugin("good", "grouped");
    // The first load starts cold; the next ones take workers the pool started.
    let plugins: Vec<_> = (0..3)
        .map(|_| gate.verify_and_load(&dir).unwrap())
        .collect();
    for plugin in &plugins {
        let pid = plugin.worker_pid().unwrap();
        let (group, session) = group_and_session(pid);
        assert_eq!(group, pid, "worker {pid} leads its own group");
        assert_ne!(group, host_group);
        assert_eq!(session, host_session, "worker {pid}");
        plugin
            .execute(&support::ctx(serde_json::json!({})))
            .unwrap();
    }
    host.assert_still_serves(&gate);
}

#[test]
fn the_faulty_plugin_behaves_when_asked_to() {
    let host = Host::new();
    let gate = host.process_gate();
    let (plugin, pid) = load(&gate, &faulty(&host, "polite"));
    for _ in 0..3 {
        assert_worker_survives(&plugin, pid);
    }
}

/// A fault of `faulty.c` that must end the worker: the plugin's name, the action, the limits
/// it runs under, the exact fault, and how soon it must be noticed.
struct Ending {
    plugin: &'static str,
    action: &'static str,
    limits: fn(LimitsBuilder) -> LimitsBuilder,
    expected: fn(&FaultError) -> bool,
    took: fn(Duration) -> bool,
    when: &'static str,
}

/// Process mode only, like this whole file: in thread mode these faults would end the test
/// process itself (a thread is not a boundary; tests/pipeline.rs covers what thread mode
/// does with a timeout).
#[test]
fn faults_that_end_the_worker_end_only_the_worker() {
    let rows = [
        Ending {
            plugin: "segfault",
            action: "segfault",
            limits: |l| l.call_timeout_ms(CRASH_TIMEOUT_MS),
            expected: |f| {
                matches!(
                    f,
                    FaultError::Crashed {
                        signal: Some(libc::SIGSEGV),
                        code: None
                    }
                )
            },
            took: |t| t < PROMPT,
            when: "at once",
        },
        Ending {
            plugin: "abort",
            action: "abort",
            limits: |l| l.call_timeout_ms(CRASH_TIMEOUT_MS),
            expected: |f| {
                matches!(
                    f,
                    FaultError::Crashed {
                        signal: Some(libc::SIGABRT),
                        code: None
                    }
                )
            },
            took: |t| t < PROMPT,
            when: "at once",
        },
        Ending {
            plugin: "spinner",
            action: "loop",
            limits: |l| l.call_timeout_ms(500),
            expected: |f| matches!(f, FaultError::Timeout { timeout_ms: 500 }),
            took: |t| t >= Duration::from_millis(500) && t < Duration::from_secs(5),
            when: "the deadline is 500 ms",
        },
        // The worker sets RLIMIT_CPU soft = hard = 1 s. Observed: SIGKILL, not SIGXCPU — the
        // kernel checks the hard limit first and, when both are reached at once, sends
        // SIGKILL. The timing (1 s of CPU, about 1-2 s of wall time here, far below the 20 s
        // deadline) tells it apart from the host's own timeout kill, reported as `Timeout`.
        Ending {
            plugin: "cpu-hog",
            action: "loop",
            limits: |l| l.cpu_seconds(1).call_timeout_ms(20_000),
            expected: |f| {
                matches!(
                    f,
                    FaultError::Crashed {
                        signal: Some(libc::SIGKILL),
                        code: None
                    }
                )
            },
            took: |t| t < PROMPT,
            when: "1 s of CPU, far from the 20 s timeout",
        },
        Ending {
            plugin: "careless",
            action: "memory_touch",
            limits: |l| {
                l.memory_bytes(256 * 1024 * 1024)
                    .call_timeout_ms(CRASH_TIMEOUT_MS)
            },
            expected: |f| {
                matches!(
                    f,
                    FaultError::Crashed {
                        signal: Some(libc::SIGSEGV),
                        code: None
                    }
                )
            },
            took: |t| t < PROMPT,
            when: "at once",
        },
    ];
    for row in rows {
        let host = Host::new();
        let policy = host.process_policy();
        let limits = (row.limits)(policy.limits().to_builder());
        let policy = policy.to_builder().limits(limits).build().unwrap();
        let gate = host.gate_with(policy);
        let (plugin, pid) = load(&gate, &faulty(&host, row.plugin));
        let (result, took) = act(&plugin, row.action);
        let f = fault(result);
        assert!((row.expected)(&f), "{}: {f:?}", row.action);
        assert!(f.ends_worker(), "{}: {f:?}", row.action);
        assert!(
            (row.took)(took),
            "{}: {}; took {took:?}",
            row.action,
            row.when
        );
        assert_worker_ended(&plugin, pid);
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_rust_panic_across_the_ffi_boundary_aborts_the_worker_only() {
    let host = Host::new();
    let lib = support::build::build_rust_plugin(
        &support::build::repo_root().join("tests/plugins/rust_panic.rs"),
        &host.build_dir.join("rust-panic/librust-panic.so"),
    );
    let dir = host.install("rust-panic", &lib);
    let gate = crash_gate(&host);
    let (plugin, pid) = load(&gate, &dir);
    assert_eq!(plugin.metadata().name, "rust-panic");
    let started = Instant::now();
    let f = fault(plugin.execute(&ctx(serde_json::json!({"x": 1}))));
    let took = started.elapsed();
    // The panic cannot unwind out of `extern "C"`: Rust aborts the process (SIGABRT).
    assert!(
        matches!(
            f,
            FaultError::Crashed {
                signal: Some(libc::SIGABRT),
                code: None
            }
        ),
        "{f:?}"
    );
    assert!(took < PROMPT, "{took:?}");
    assert_worker_ended(&plugin, pid);
    host.assert_still_serves(&gate);
}

#[test]
fn a_memory_bomb_hits_the_address_space_limit() {
    let host = Host::new();
    let policy = host
        .process_policy()
        .to_builder()
        .limits(Limits::builder().memory_bytes(256 * 1024 * 1024))
        .build()
        .unwrap();
    let gate = host.gate_with(policy);
    let (plugin, pid) = load(&gate, &faulty(&host, "bomber"));
    let (result, took) = act(&plugin, "memory_bomb");
    let f = fault(result);
    // Observed: RLIMIT_AS makes malloc return NULL after a few 64 MiB chunks (the kernel
    // refuses the mmap, so nothing is OOM-killed), and the plugin then returns NULL, which
    // the worker reports as a NullResult. That fault does not end the worker: it keeps
    // running inside its 256 MiB (the chunks stay leaked) and serves the next call.
    assert!(matches!(f, FaultError::NullResult { .. }), "{f:?}");
    assert!(!f.ends_worker());
    assert!(took < PROMPT, "{took:?}");
    assert_worker_survives(&plugin, pid);
    // A second bomb finds the limit at once (the chunks of the first one are still held).
    let (result, took) = act(&plugin, "memory_bomb");
    assert!(matches!(fault(result), FaultError::NullResult { .. }));
    assert!(took < PROMPT, "{took:?}");
    assert_worker_survives(&plugin, pid);
    host.assert_still_serves(&gate);
}

#[test]
fn a_fork_bomb_forks_nothing() {
    let host = Host::new();
    let gate = host.process_gate();
    let (plugin, pid) = load(&gate, &faulty(&host, "forker"));
    let (result, took) = act(&plugin, "fork_bomb");
    let out = result.expect("the call itself succeeds");
    assert_eq!(out.output["forks"], 0, "{:?}", out.output);
    // seccomp refuses clone without CLONE_THREAD with EPERM.
    assert_eq!(out.output["errno"], libc::EPERM, "{:?}", out.output);
    assert!(took < PROMPT, "{took:?}");
    assert_worker_survives(&plugin, pid);
    host.assert_still_serves(&gate);
}

#[test]
fn descriptor_exhaustion_stops_at_the_worker_limit() {
    let host = Host::new();
    let gate = host.process_gate();
    let (plugin, pid) = load(&gate, &faulty(&host, "fd-eater"));
    let (result, took) = act(&plugin, "fd_exhaust");
    let out = result.expect("the call itself succeeds");
    let o = &out.output;
    // dup is not on the seccomp allowlist: refused at once with EPERM.
    assert_eq!(o["dup"], 0, "{o:?}");
    assert_eq!(o["dup_errno"], libc::EPERM, "{o:?}");
    // fcntl(F_DUPFD) is allowed and runs into RLIMIT_NOFILE = 64 (five descriptors are
    // already open: /dev/null on 0-2, the sealed library at 3 and the channel at 4).
    let n = o["fcntl"].as_i64().unwrap();
    assert!((1..=64).contains(&n), "{o:?}");
    assert_eq!(o["fcntl_errno"], libc::EMFILE, "{o:?}");
    assert!(took < PROMPT, "{took:?}");
    assert_worker_survives(&plugin, pid);
    host.assert_still_serves(&gate);
}

#[test]
fn a_256_mib_result_is_refused_by_the_output_limit() {
    let host = Host::new();
    let gate = host.process_gate();
    assert_eq!(gate.policy().limits().output_bytes(), 1024 * 1024);
    let (plugin, pid) = load(&gate, &faulty(&host, "flooder"));
    let (result, took) = act(&plugin, "huge");
    let f = fault(result);
    assert!(
        matches!(
            f,
            FaultError::OutputTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{f:?}"
    );
    assert!(took < PROMPT, "{took:?}");
    // The worker read at most the limit and said so; it is still healthy.
    assert_worker_survives(&plugin, pid);
    host.assert_still_serves(&gate);
}

#[test]
fn the_plugin_finds_none_of_the_hosts_symbols() {
    let host = Host::new();
    let gate = host.process_gate();
    let (plugin, pid) = load(&gate, &faulty(&host, "prober"));
    let (result, took) = act(&plugin, "host_symbol");
    let out = result.expect("the call itself succeeds");
    assert_eq!(
        out.output["found"],
        serde_json::json!([]),
        "{:?}",
        out.output
    );
    assert_eq!(
        out.output["control"], true,
        "dlsym itself works: {:?}",
        out.output
    );
    assert!(took < PROMPT, "{took:?}");
    assert_worker_survives(&plugin, pid);
    host.assert_still_serves(&gate);
}

#[test]
fn dropping_a_plugin_kills_and_reaps_its_worker() {
    let host = Host::new();
    let gate = host.process_gate();
    let dir = faulty(&host, "dropped");
    // An idle worker.
    let (plugin, pid) = load(&gate, &dir);
    assert_worker_survives(&plugin, pid);
    let started = Instant::now();
    drop(plugin);
    assert!(started.elapsed() < PROMPT);
    assert!(!is_our_child(pid), "worker {pid} must be reaped by drop");

    // The last handle is dropped on another thread, right after a call there timed out
    // (our `drop` below only releases one reference): nothing is left behind either.
    let policy = host
        .process_policy()
        .to_builder()
        .limits(Limits::builder().call_timeout_ms(300))
        .build()
        .unwrap();
    let gate = host.gate_with(policy);
    let (plugin, pid) = load(&gate, &dir);
    let plugin = Arc::new(plugin);
    let caller = {
        let plugin = Arc::clone(&plugin);
        std::thread::spawn(move || act(&plugin, "loop").0)
    };
    drop(plugin);
    assert!(matches!(
        fault(caller.join().unwrap()),
        FaultError::Timeout { .. }
    ));
    assert!(!is_our_child(pid), "worker {pid} must be reaped");
    host.assert_still_serves(&gate);
}

#[test]
fn calls_from_16_threads_never_overlap_in_the_worker() {
    let host = Host::new();
    let gate = host.process_gate();
    let dir = host.plugin("counter", "counter");
    let (plugin, pid) = load(&gate, &dir);
    let plugin = Arc::new(plugin);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let plugin = Arc::clone(&plugin);
            std::thread::spawn(move || {
                let mut max = 0;
                for _ in 0..8 {
                    let out = plugin.execute(&ctx(serde_json::json!({}))).unwrap();
                    max = max.max(out.output["max_active"].as_u64().unwrap());
                }
                max
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 1, "two calls ran in the worker at once");
    }
    let out = plugin.execute(&ctx(serde_json::json!({}))).unwrap();
    assert_eq!(out.output["calls"], 16 * 8 + 1);
    assert_eq!(out.output["max_active"], 1);
    assert_eq!(
        plugin.worker_pid(),
        Some(pid),
        "one worker served every call"
    );
}

/// One gate, two plugins: a crash in one plugin's worker does not disturb the other's.
#[test]
fn a_crash_in_one_worker_leaves_other_workers_alone() {
    let host = Host::new();
    let gate = crash_gate(&host);
    let (bystander, bystander_pid) = load(&gate, &faulty(&host, "bystander"));
    let (victim, victim_pid) = load(&gate, &faulty(&host, "victim"));
    assert_ne!(bystander_pid, victim_pid);
    let f = fault(act(&victim, "segfault").0);
    assert!(matches!(f, FaultError::Crashed { .. }), "{f:?}");
    assert_worker_ended(&victim, victim_pid);
    assert_worker_survives(&bystander, bystander_pid);
}

// ---------------------------------------------------------------------------------------
// The command line.

fn skillgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skillgate"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn policy_file(host: &Host, name: &str, json: &str) -> PathBuf {
    let path = host.tmp.path().join(name);
    std::fs::write(&path, json).unwrap();
    // It parses into what the test means.
    let p = Policy::from_file(&path).unwrap();
    assert_eq!(p.trusted_roots(), std::slice::from_ref(&host.root));
    path
}

#[test]
fn the_cli_exits_3_for_a_segfault_in_process_mode() {
    let host = Host::new();
    let dir = faulty(&host, "cli-crash");
    let worker = env!("CARGO_BIN_EXE_skillgate-worker");
    let with_worker = policy_file(
        &host,
        "process.json",
        &format!(
            r#"{{"trusted_roots":["root"],"keys":"keys","isolation":"process","worker":{},"limits":{{"call_timeout_ms":{CRASH_TIMEOUT_MS}}}}}"#,
            serde_json::to_string(worker).unwrap()
        ),
    );
    // Without "worker": the CLI re-executes itself as the worker (it calls the hook first in
    // main).
    let beside = policy_file(
        &host,
        "process-beside.json",
        &format!(
            r#"{{"trusted_roots":["root"],"keys":"keys","isolation":"process","limits":{{"call_timeout_ms":{CRASH_TIMEOUT_MS}}}}}"#
        ),
    );
    for policy in [&with_worker, &beside] {
        let ok = skillgate(&[
            "run",
            s(&dir),
            "--policy",
            s(policy),
            "--input",
            r#"{"action":"ok"}"#,
        ]);
        assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

        let started = Instant::now();
        let out = skillgate(&[
            "run",
            s(&dir),
            "--policy",
            s(policy),
            "--input",
            r#"{"action":"segfault"}"#,
        ]);
        assert!(started.elapsed() < PROMPT);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("skillgate: ") && err.contains("SIGSEGV"),
            "the reason is on stderr: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn the_cli_exits_3_for_a_null_result_in_thread_mode() {
    let host = Host::new();
    let dir = host.plugin("result_null", "cli-null");
    let policy = policy_file(
        &host,
        "thread.json",
        r#"{"trusted_roots":["root"],"keys":"keys","isolation":"thread"}"#,
    );
    let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("skillgate: ") && err.contains("returned NULL"),
        "{err}"
    );
}

/// Process ids whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        if after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(ppid)
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn no_worker_outlives_a_killed_host() {
    let host = Host::new();
    let dir = faulty(&host, "orphan");
    let policy = policy_file(
        &host,
        "orphan.json",
        r#"{"trusted_roots":["root"],"keys":"keys","isolation":"process","limits":{"call_timeout_ms":60000}}"#,
    );
    // The host (a `skillgate run` process) loads the plugin, whose call then spins.
    let mut cli = Command::new(env!("CARGO_BIN_EXE_skillgate"))
        .args([
            "run",
            s(&dir),
            "--policy",
            s(&policy),
            "--input",
            r#"{"action":"loop"}"#,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = cli.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let worker = loop {
        if let Some(w) = children_of(host_pid).first().copied() {
            break w;
        }
        assert!(Instant::now() < deadline, "the host never started a worker");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Kill the host outright: no destructor runs, only the worker's parent-death signal.
    cli.kill().unwrap();
    cli.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{worker}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap_or_default();
        // A zombie reparented to init counts as gone once init reaps it; a running worker does not.
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker {worker} outlived its host"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_outlives_the_thread_that_loaded_it() {
    // PR_SET_PDEATHSIG fires when the *thread* that forked the worker exits, not the
    // process; a host that loads plugins from a short-lived thread must not lose them.
    let host = Host::process();
    let dir = host.plugin("good", "adopted");
    let gate = Arc::new(host.gate());
    let g = Arc::clone(&gate);
    let plugin = std::thread::spawn(move || g.verify_and_load(&dir).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = plugin.execute(&ctx(serde_json::json!({}))).unwrap();
    assert_eq!(out.output["marker"], "v1");
}

// ---------------------------------------------------------------------------------------
// Lying workers: plugins (tests/plugins/liar.c) that write frames on the worker's channel,
// close or replace its descriptors, print, flood or start threads. Most are process-mode
// only: in thread mode there is no channel to attack (fd 4 is whatever the test runner has
// there), so writing to it would corrupt the runner, not test the host.

/// The call timeout of the lying-worker tests: every hostile case must end within
/// [`PROMPT`], far above it.
const LIAR_TIMEOUT_MS: u64 = 1_000;

/// Builds liar.c as plugin `name` with `defines`, installs and signs it.
fn liar(host: &Host, name: &str, defines: &[(&str, &str)]) -> PathBuf {
    let lib = host.build("liar", name, defines);
    host.install(name, &lib)
}

fn liar_gate(host: &Host) -> Gate {
    let policy = host
        .process_policy()
        .to_builder()
        .limits(Limits::builder().call_timeout_ms(LIAR_TIMEOUT_MS))
        .build()
        .unwrap();
    host.gate_with(policy)
}

/// Our children that hold plugin `name`'s sealed library at fd 3 (its workers): the memfd
/// is named after the plugin, and `/proc/<pid>/fd/3` shows `/memfd:<name> (deleted)`.
fn workers_of(name: &str) -> Vec<u32> {
    let wanted = format!("/memfd:{name} ");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_our_child(*pid))
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/fd/3"))
                .is_ok_and(|l| l.to_string_lossy().starts_with(&wanted))
        })
        .collect()
}

/// Loads a liar whose constructor attacks the load; returns the error and how long it took.
/// The worker is gone (killed and reaped) when the load returns.
fn refused_load(host: &Host, name: &str, defines: &[(&str, &str)]) -> (Error, Duration) {
    let gate = liar_gate(host);
    let dir = liar(host, name, defines);
    let started = Instant::now();
    let err = gate
        .verify_and_load(&dir)
        .expect_err("the load must be refused");
    let took = started.elapsed();
    eprintln!("{name}: {err:?} after {took:?}");
    assert!(took < PROMPT, "{name}: refused after {took:?}");
    assert_eq!(
        workers_of(name),
        Vec::<u32>::new(),
        "{name}: a worker is left"
    );
    host.assert_still_serves(&gate);
    (err, took)
}

#[test]
fn a_plugin_that_prints_works_in_both_modes() {
    for host in Host::each_mode() {
        let gate = host.gate();
        let dir = liar(&host, "chatty", &[]);
        let plugin = gate.verify_and_load(&dir).unwrap();
        for _ in 0..3 {
            let out = plugin
                .execute(&ctx(serde_json::json!({"action": "chatter"})))
                .expect("printing is harmless");
            assert_eq!(out.output["chatter"], true);
        }
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_plugin_that_floods_stdout_and_stderr_works() {
    // Process mode only: in thread mode the 64 MiB would go to the test runner's output.
    let host = Host::new();
    let gate = liar_gate(&host);
    let (plugin, pid) = load(&gate, &liar(&host, "flood-stderr", &[]));
    let (result, took) = act(&plugin, "stderr_flood");
    assert_eq!(result.unwrap().output["flooded"], true);
    assert!(took < PROMPT, "{took:?}");
    assert_liar_survives(&plugin, pid);
}

/// [`assert_worker_survives`] for liar.c, which echoes without an "action" key.
fn assert_liar_survives(plugin: &LoadedPlugin, pid: u32) {
    let (result, _) = act(plugin, "chatter");
    assert_eq!(result.unwrap().output["chatter"], true);
    assert_eq!(plugin.worker_pid(), Some(pid));
    assert!(is_our_child(pid));
}

/// A liar whose constructor attacks the load (liar.c's `CTOR`), and the refusal it meets.
struct CtorAttack {
    /// The plugin's name; names the case in every assertion.
    name: &'static str,
    defines: &'static [(&'static str, &'static str)],
    expect: fn(&Error) -> bool,
    /// Whether the refusal is the call timeout, so it cannot come sooner than that.
    times_out: bool,
}

#[test]
fn constructors_that_attack_the_load_are_refused_with_the_exact_variant() {
    let cases = [
        // A forged enforcement report.
        CtorAttack {
            name: "forge-report",
            defines: &[("CTOR", "1")],
            expect: |err| {
                matches!(
                    err,
                    Error::Fault(FaultError::Protocol(ProtocolViolation::Unexpected {
                        tag: Tag::Restricted,
                        ..
                    }))
                )
            },
            times_out: false,
        },
        // Forged readiness, then serving calls itself: the host still checks the metadata.
        CtorAttack {
            name: "forge-loaded",
            defines: &[("CTOR", "2"), ("VERSION", "99")],
            expect: |err| {
                matches!(
                    err,
                    Error::Abi(AbiError::VersionMismatch {
                        plugin: 99,
                        manifest: 1,
                        host: 1
                    })
                )
            },
            times_out: false,
        },
        // A load failure after the report is a protocol violation.
        CtorAttack {
            name: "late-failure",
            defines: &[("CTOR", "3")],
            expect: |err| {
                matches!(
                    err,
                    Error::Fault(FaultError::Protocol(ProtocolViolation::Unexpected {
                        tag: Tag::LoadFailed,
                        ..
                    }))
                )
            },
            times_out: false,
        },
        // Half a frame, then silence.
        CtorAttack {
            name: "half-frame",
            defines: &[("CTOR", "4")],
            expect: |err| {
                matches!(
                    err,
                    Error::Fault(FaultError::Timeout {
                        timeout_ms: LIAR_TIMEOUT_MS
                    })
                )
            },
            times_out: true,
        },
        // A frame flood is refused at the first frame out of turn.
        CtorAttack {
            name: "flood",
            defines: &[("CTOR", "5")],
            expect: |err| {
                matches!(
                    err,
                    Error::Fault(FaultError::Protocol(ProtocolViolation::Unexpected {
                        tag: Tag::Output,
                        ..
                    }))
                )
            },
            times_out: false,
        },
        // An oversize frame is refused before allocation.
        CtorAttack {
            name: "oversize",
            defines: &[("CTOR", "6")],
            expect: |err| {
                matches!(
                    err,
                    Error::Fault(FaultError::Protocol(ProtocolViolation::TooLarge {
                        len: 0xffff_fff0,
                        ..
                    }))
                )
            },
            times_out: false,
        },
        // A constructor that never returns.
        CtorAttack {
            name: "ctor-hang",
            defines: &[("CTOR", "7")],
            expect: |err| {
                matches!(
                    err,
                    Error::Fault(FaultError::Timeout {
                        timeout_ms: LIAR_TIMEOUT_MS
                    })
                )
            },
            times_out: true,
        },
    ];
    let host = Host::new();
    for case in &cases {
        // `refused_load` names the case in its own assertions.
        let (err, took) = refused_load(&host, case.name, case.defines);
        assert!((case.expect)(&err), "{}: {err:?}", case.name);
        if case.times_out {
            assert!(
                took >= Duration::from_millis(LIAR_TIMEOUT_MS),
                "{}: {took:?}",
                case.name
            );
        }
    }
}

#[test]
fn a_forged_relay_with_the_right_values_is_data_not_testimony() {
    // The limit of what the host can know: a constructor that forges the relay with the
    // values the host expects and serves calls itself is accepted. What protects the host
    // is what was fixed before dlopen and confirmed from outside, which the forgery cannot
    // change: the worker is still restricted and bounded.
    let host = Host::new();
    let gate = liar_gate(&host);
    let (plugin, pid) = load(&gate, &liar(&host, "forge-right", &[("CTOR", "2")]));
    // Control for `workers_of`, which the refused loads rely on.
    assert_eq!(workers_of("forge-right"), vec![pid]);
    let e = plugin.enforcement();
    assert!(e.seccomp && e.no_new_privs, "{e:?}");
    let (result, _) = act(&plugin, "ok");
    assert_eq!(result.unwrap().output["forged"], true);
    assert!(is_our_child(pid));
    drop(plugin);
    assert!(!is_our_child(pid));
}

/// The environment variable that makes the test below run its thread-mode half.
const CTOR_HANG_CHILD: &str = "SKILLGATE_TEST_CTOR_HANG_CHILD";

#[test]
#[allow(unsafe_code)]
fn a_constructor_that_never_returns_times_out_in_thread_mode_in_a_child_process() {
    // In thread mode the hung constructor holds the dynamic loader's lock for the rest of
    // the process: no other dlopen (nor exit, which takes the lock in _dl_fini) gets past
    // it. So the thread-mode load runs in a child process that runs only this test, reports
    // and leaves with _exit.
    if std::env::var_os(CTOR_HANG_CHILD).is_some() {
        let host = Host::new();
        // The parent removes the host's directory: after the load this process does nothing
        // that might need the loader lock (a first-time dlsym inside std, e.g. while
        // removing a directory, would wait for it forever).
        println!("CTOR_HANG_DIR {}", host.tmp.path().display());
        let policy = host
            .policy()
            .to_builder()
            .limits(Limits::builder().call_timeout_ms(LIAR_TIMEOUT_MS))
            .build()
            .unwrap();
        let gate = host.gate_with(policy);
        let dir = liar(&host, "ctor-hang-thread", &[("CTOR", "7")]);
        let second = liar(&host, "ctor-hang-second", &[]);
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        // A second load, on a thread that has waited on nothing yet, made once the hung
        // constructor holds the loader's lock: its dlopen cannot proceed, but its wait must
        // still end by its deadline. A wait that first registers a thread-local destructor
        // takes that lock and never returns (the executor's start once did, when it waited
        // on an mpsc channel). The thread is started before the lock is taken: a new thread
        // registers destructors of its own as it starts, which would hang it there.
        // The second thread is never joined: the child leaves with _exit, and a thread's
        // exit may itself need the loader's lock.
        let gate = std::sync::Arc::new(gate);
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let answer = std::sync::Arc::new((std::sync::Mutex::new(None), std::sync::Condvar::new()));
        std::thread::spawn({
            let (gate, go, answer) = (gate.clone(), go.clone(), answer.clone());
            move || {
                go.wait();
                let started = Instant::now();
                let result = gate.verify_and_load(&second);
                let took = started.elapsed();
                let timed_out = matches!(
                    result,
                    Err(Error::Fault(FaultError::Timeout {
                        timeout_ms: LIAR_TIMEOUT_MS
                    }))
                );
                *answer.0.lock().unwrap() = Some((timed_out, took));
                answer.1.notify_one();
                // Keep the result (and its thread) alive: dropping a loaded plugin would
                // wait for its thread.
                std::mem::forget(result);
            }
        });
        let started = Instant::now();
        let result = gate.verify_and_load(&dir);
        let took = started.elapsed();
        let timed_out = matches!(
            result,
            Err(Error::Fault(FaultError::Timeout {
                timeout_ms: LIAR_TIMEOUT_MS
            }))
        );
        go.wait();
        let (second_timed_out, second_took) = {
            let wait_until = Instant::now() + Duration::from_secs(30);
            let mut got = answer.0.lock().unwrap();
            while got.is_none() && Instant::now() < wait_until {
                got = answer
                    .1
                    .wait_timeout(got, Duration::from_millis(100))
                    .unwrap()
                    .0;
            }
            got.unwrap_or((false, Duration::from_secs(30)))
        };
        let line = format!(
            "\nCTOR_HANG timed_out={timed_out} took_ms={} second_timed_out={second_timed_out} second_took_ms={}\n",
            took.as_millis(),
            second_took.as_millis()
        );
        // SAFETY: write(2) of a live buffer to this process's stdout.
        let _ = unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
        // SAFETY: ends this child process at once, without running exit handlers (which
        // would wait for the loader lock the hung constructor holds).
        unsafe { libc::_exit(0) };
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_constructor_that_never_returns_times_out_in_thread_mode_in_a_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CTOR_HANG_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the thread-mode child hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = reader.join().unwrap();
    if let Some(dir) = out.lines().find_map(|l| l.split_once("CTOR_HANG_DIR ")) {
        let _ = std::fs::remove_dir_all(dir.1.trim());
    }
    let line = out
        .lines()
        .find_map(|l| l.split_once("CTOR_HANG ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no report from the child: {out}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert_eq!(field("timed_out"), "true", "{line}");
    assert_eq!(field("second_timed_out"), "true", "{line}");
    for name in ["took_ms", "second_took_ms"] {
        let took: u64 = field(name).parse().unwrap();
        assert!(
            (LIAR_TIMEOUT_MS..10_000).contains(&took),
            "{name}: the load returned after {took} ms"
        );
    }
}

#[test]
fn an_extra_reply_frame_is_never_returned_for_the_next_call() {
    let host = Host::new();
    let gate = liar_gate(&host);
    let (plugin, pid) = load(&gate, &liar(&host, "extra-reply", &[]));
    // Control: a call that writes no frame is answered.
    let (result, _) = act(&plugin, "ok");
    assert!(result.unwrap().success);
    // Call 2's reply comes through the call region; the frame the plugin wrote on the
    // socket during the call is found there when the reply is read: a violation, never an
    // output (nor one left for the next call).
    let (result, took) = act(&plugin, "extra_reply");
    let f = fault(result);
    assert!(
        matches!(
            f,
            FaultError::Protocol(ProtocolViolation::Unexpected {
                tag: Tag::Output,
                ..
            })
        ),
        "{f:?}"
    );
    assert!(took < PROMPT, "{took:?}");
    assert_worker_ended(&plugin, pid);
    host.assert_still_serves(&gate);
}

/// A plugin that attacks the channel: the exact fault, within the bound, worker gone.
/// Process mode only: in thread mode there is no channel.
#[test]
fn a_plugin_that_attacks_its_channel_is_ended() {
    type Expect = fn(&FaultError) -> bool;
    let rows: [(&str, Expect); 4] = [
        ("close_channel", |f| {
            matches!(f, FaultError::Protocol(ProtocolViolation::ChannelClosed))
        }),
        ("close_all", |f| {
            matches!(f, FaultError::Protocol(ProtocolViolation::ChannelClosed))
        }),
        // The worker's reply goes to its stdout pipe (the plugin's log, never the channel),
        // its next read fails and it exits on its own;
        // the host saw the channel close and reports how the worker ended.
        ("dup2_null", |f| {
            matches!(
                f,
                FaultError::Crashed {
                    signal: None,
                    code: Some(_)
                }
            )
        }),
        ("write_every_fd", |f| {
            matches!(
                f,
                FaultError::Protocol(ProtocolViolation::TooLarge {
                    len: 0xffff_fff0,
                    ..
                })
            )
        }),
    ];
    for (action, expected) in rows {
        let host = Host::new();
        let gate = liar_gate(&host);
        let (plugin, pid) = load(&gate, &liar(&host, action, &[]));
        let (result, took) = act(&plugin, action);
        let f = fault(result);
        assert!(expected(&f), "{action}: {f:?}");
        assert!(took < PROMPT, "{action}: {took:?}");
        assert_worker_ended(&plugin, pid);
        host.assert_still_serves(&gate);
    }
}

/// A plugin that closes its channel and lives on holds its call no longer than the call's
/// own deadline: the host waits for the worker to exit on its own (a dying worker closes
/// its channel just before it becomes reapable, and is reported as `Crashed`: the
/// `dup2_null` row above) only for what is left of the deadline, at least 50 ms, and then
/// ends it as `ChannelClosed`. Before, it waited two seconds whatever the deadline, so a
/// call given 300 ms returned after more than 2 s. Control: the same plugin under the
/// policy's 1 s deadline also ends with `ChannelClosed`, so the short deadline changes when,
/// not what.
#[test]
fn a_plugin_that_closes_its_channel_and_lives_on_is_ended_by_the_calls_deadline() {
    let host = Host::new();
    let gate = liar_gate(&host);
    let dir = liar(&host, "close_channel", &[]);
    for timeout in [
        Duration::from_millis(300),
        Duration::from_millis(LIAR_TIMEOUT_MS),
    ] {
        let (plugin, pid) = load(&gate, &dir);
        let started = Instant::now();
        let result = plugin.execute_with(
            &ctx(serde_json::json!({ "action": "close_channel" })),
            &skillgate::CallOptions::new().timeout(timeout),
        );
        let took = started.elapsed();
        let f = fault(result);
        assert!(
            matches!(f, FaultError::Protocol(ProtocolViolation::ChannelClosed)),
            "{f:?}"
        );
        assert!(
            took < timeout + Duration::from_millis(1_000),
            "a call given {timeout:?} took {took:?}"
        );
        assert_worker_ended(&plugin, pid);
    }
    host.assert_still_serves(&gate);
}

/// Processes of this test's user that hold tasks while a test runs; killed (by pid) and
/// reaped when dropped.
struct Sleepers(Vec<std::process::Child>);

impl Sleepers {
    fn start(n: usize) -> Sleepers {
        Sleepers(
            (0..n)
                .map(|_| Command::new("sleep").arg("300").spawn().unwrap())
                .collect(),
        )
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_thread_bomb_is_bounded_per_worker_while_the_user_holds_many_tasks() {
    // Process mode only: thread mode cannot bound a plugin's threads (they are the host's).
    // 120 other tasks of this user: a per-user RLIMIT_NPROC of the old kind would leave the
    // worker no thread at all, and the control below would fail.
    let _sleepers = Sleepers::start(120);
    let host = Host::new();
    let policy = host
        .process_policy()
        .to_builder()
        .limits(Limits::builder().threads(32).call_timeout_ms(20_000))
        .build()
        .unwrap();
    let gate = host.gate_with(policy);
    let (plugin, pid) = load(&gate, &liar(&host, "thread-bomb", &[]));
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let tasks = plugin.enforcement().tasks;
    eprintln!("root: {root}, tasks: {tasks:?}");
    if root {
        assert_eq!(tasks, TaskBound::Cgroup { max: 32 });
    } else {
        assert!(
            matches!(
                tasks,
                TaskBound::UserNamespaceRlimit { max: 32 } | TaskBound::NoThreads
            ),
            "{tasks:?}"
        );
    }
    // Control: 8 threads start and finish.
    let (result, _) = act(&plugin, "threads");
    let out = result.unwrap();
    let expected_threads = if tasks == TaskBound::NoThreads { 0 } else { 8 };
    assert_eq!(out.output["threads"], expected_threads, "{:?}", out.output);
    // The bomb: at most 31 threads beside the worker's own, and (bounded, not forbidden)
    // nearly that many.
    let (result, took) = act(&plugin, "thread_bomb");
    let out = result.unwrap();
    let n = out.output["threads"].as_u64().unwrap();
    if tasks == TaskBound::NoThreads {
        assert_eq!(n, 0, "{:?}", out.output);
    } else {
        assert!((24..=31).contains(&n), "{:?}", out.output);
        assert_eq!(out.output["errno"], libc::EAGAIN, "{:?}", out.output);
    }
    assert!(took < PROMPT, "{took:?}");
    // The threads were joined: the worker can do it again.
    let (result, _) = act(&plugin, "threads");
    assert_eq!(result.unwrap().output["threads"], expected_threads);
    assert_liar_survives(&plugin, pid);
    host.assert_still_serves(&gate);
}

/// A stand-in worker (a Python script given as the policy's `worker`) that restricts
/// nothing and sends `report` as its enforcement report, then waits.
fn lying_worker(host: &Host, report: &serde_json::Value) -> Gate {
    scripted_worker(host, Tag::Restricted, report)
}

/// A stand-in worker (a Python script given as the policy's `worker`) that restricts
/// nothing and sends one frame, `tag` with `payload`, then waits.
fn scripted_worker(host: &Host, tag: Tag, payload: &serde_json::Value) -> Gate {
    let script = host.tmp.path().join("lying-worker.py");
    std::fs::write(
        &script,
        format!(
            r#"#!/usr/bin/python3
import os, socket, struct, sys, time
# A pooled worker is first handed its descriptors: one byte carrying them (SCM_RIGHTS).
if sys.argv[2:3] == ["pooled"]:
    s = socket.socket(fileno=4); s.recvmsg(1, 4096); s.detach()
header = os.read(4, 13)
length = struct.unpack("<I", header[:4])[0]
left = length - 9
while left > 0:
    left -= len(os.read(4, left))
payload = {payload:?}.encode()
os.write(4, struct.pack("<IBQ", len(payload) + 9, {tag}, 0) + payload)
time.sleep(60)
"#,
            payload = payload.to_string(),
            tag = tag as u8,
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = host
        .process_policy()
        .to_builder()
        .worker(script)
        .limits(Limits::builder().call_timeout_ms(LIAR_TIMEOUT_MS))
        .build()
        .unwrap();
    host.gate_with(policy)
}

#[test]
fn a_worker_report_the_host_cannot_confirm_is_refused() {
    let host = Host::new();
    let dir = host.plugin("good", "reported");
    let honest_claims = serde_json::json!({
        "isolation": "process", "landlock_abi": 7, "landlock": "fully_enforced",
        "seccomp": true, "seccomp_instructions": 100, "no_new_privs": true,
        "fs_rules": 0, "net_rules": 0, "read": [], "read_write": [], "connect_tcp": [],
        "loader_read": [], "namespaces": [], "tasks": {"by": "no_threads"}
    });
    // Claims a seccomp filter it never installed.
    let err = lying_worker(&host, &honest_claims)
        .verify_and_load(&dir)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fault(FaultError::Protocol(ProtocolViolation::Unconfirmed {
                what: "seccomp",
                ..
            }))
        ),
        "{err:?}"
    );
    // Claims namespaces it never entered (and, truthfully, no seccomp).
    let mut claims = honest_claims.clone();
    claims["seccomp"] = false.into();
    claims["no_new_privs"] = false.into();
    claims["namespaces"] = serde_json::json!(["user", "net"]);
    let started = Instant::now();
    let err = lying_worker(&host, &claims)
        .verify_and_load(&dir)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fault(FaultError::Protocol(ProtocolViolation::Unconfirmed {
                what: "namespaces",
                ..
            }))
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < PROMPT);
    // Control: the real worker's report is confirmed.
    host.assert_still_serves(&host.process_gate());
}

#[test]
fn a_worker_that_stops_reading_does_not_block_a_call_past_its_deadline() {
    let host = Host::new();
    let gate = liar_gate(&host);
    let (plugin, pid) = load(&gate, &liar(&host, "deaf", &[("CTOR", "8")]));
    // 4 MiB of input: far more than the socket buffers (a few hundred KiB), so the write
    // itself must time out. Not more: encoding the input is part of the timed call, and in
    // a debug build on a loaded machine 16 MiB took most of PROMPT before the first byte.
    let big = ctx(serde_json::json!({ "big": "x".repeat(4 * 1024 * 1024) }));
    let started = Instant::now();
    let result = plugin.execute(&big);
    let took = started.elapsed();
    let f = fault(result);
    assert!(
        matches!(
            f,
            FaultError::Timeout {
                timeout_ms: LIAR_TIMEOUT_MS
            }
        ),
        "{f:?}"
    );
    assert!(took < PROMPT, "{took:?}");
    assert_worker_ended(&plugin, pid);
    host.assert_still_serves(&gate);
}

/// A worker's own report of a setup failure reaches the host as `LoadError::Worker`
/// carrying the worker's text (escaped when printed).
#[test]
fn a_workers_setup_failure_carries_its_report() {
    // Process mode only: there is no worker in thread mode.
    let host = Host::new();
    let dir = host.plugin("good", "setup-failure");
    let words = "setrlimit: out of \u{1b}[2J luck";
    let gate = scripted_worker(
        &host,
        Tag::LoadFailed,
        &serde_json::json!({ "kind": "setup", "detail": words }),
    );
    let err = gate.verify_and_load(&dir).unwrap_err();
    match &err {
        Error::Load(LoadError::Worker { detail }) => assert_eq!(detail, words),
        other => panic!("expected Load(Worker), got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.ends_with(r"setrlimit: out of \u{1b}[2J luck"),
        "{text}"
    );
    host.assert_still_serves(&host.process_gate());
}

/// A worker executable that cannot be started is `LoadError::WorkerStart`, naming it and
/// keeping the system's error.
#[test]
fn a_worker_that_cannot_start_keeps_the_io_error() {
    // Process mode only: there is no worker in thread mode.
    let host = Host::new();
    let dir = host.plugin("good", "no-start");
    let script = host.tmp.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let policy = host
        .process_policy()
        .to_builder()
        .worker(script.clone())
        .build()
        .unwrap();
    let err = host.gate_with(policy).verify_and_load(&dir).unwrap_err();
    match &err {
        Error::Load(LoadError::WorkerStart { path, source }) => {
            assert_eq!(path, &script);
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        }
        other => panic!("expected Load(WorkerStart), got {other:?}"),
    }
    assert!(err.to_string().contains("not-executable"), "{err}");
    host.assert_still_serves(&host.process_gate());
}

/// Loads liar.c built to call a function no library defines: `dlopen` (`RTLD_NOW`) fails
/// after the worker's report, and the worker exits at once.
fn dlopen_failure(name: &str) -> Error {
    let host = Host::new();
    let gate = liar_gate(&host);
    let dir = liar(&host, name, &[("UNDEFINED", "1")]);
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_eq!(workers_of(name), Vec::<u32>::new());
    host.assert_still_serves(&gate);
    err
}

#[test]
fn a_dlopen_failure_crosses_the_channel_as_a_load_error() {
    // The worker sends the failure and exits before the host has looked at it through
    // /proc: the failure it sent is reported, not its exit.
    let err = dlopen_failure("undefined");
    assert!(
        matches!(err, Error::Load(LoadError::Dlopen { .. })),
        "{err:?}"
    );
}

#[test]
fn a_dlopen_failure_keeps_the_loaders_words_across_the_channel() {
    let err = dlopen_failure("undefined-text");
    match &err {
        Error::Load(LoadError::Dlopen { detail: text }) => assert!(
            text.contains("skillgate_no_such_function"),
            "dlerror's text is lost: {text:?}"
        ),
        other => panic!("expected Load(Dlopen), got {other:?}"),
    }
}

/// The worker re-checks the library descriptor it is handed before `dlopen`, against the
/// signed manifest's digest and size that the host puts in `Init`: a descriptor without all
/// four seals, with other bytes, or of another size is refused with its own reason, which
/// the host surfaces typed. Control: the sealed verified bytes load.
///
/// Process mode only: in thread mode there is no worker and no descriptor is handed over;
/// the library is the `SealedFile` the verify stage made, passed in memory.
/// A memfd holding `bytes` with `seals` added, as a host (or a stand-in for one) would
/// hand a worker its library.
fn sealed_memfd(name: &str, bytes: &[u8], seals: SealFlags) -> OwnedFd {
    use rustix::fs::MemfdFlags;
    use std::io::Write as _;
    let fd = rustix::fs::memfd_create(name, MemfdFlags::ALLOW_SEALING).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes).unwrap();
    let fd = OwnedFd::from(f);
    rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    fd
}

#[test]
fn the_worker_refuses_a_library_that_is_not_the_sealed_signed_bytes() {
    use sha2::Digest as _;
    use skillgate::error::ExecError;
    use skillgate::error::LibraryRefusal;
    use std::os::fd::AsFd as _;

    let host = Host::process();
    let gate = host.process_gate();
    let dir = host.plugin("good", "handed");
    let bytes = std::fs::read(dir.join("libhanded.so")).unwrap();
    let hex = |b: &[u8]| {
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let with_seals = |b: &[u8], seals: SealFlags| sealed_memfd("handed", b, seals);
    let sealed = |b: &[u8]| {
        let all = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
        sealed_memfd("handed", b, all)
    };
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0xff;
    let mut longer = bytes.clone();
    longer.push(0);
    let all = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
    type Check = fn(&Result<skillgate::Enforcement, Error>, &str, &str) -> bool;
    let rows: [(&str, OwnedFd, Check); 6] = [
        (
            "control: the sealed verified bytes",
            sealed(&bytes),
            |r, _, _| matches!(r, Ok(e) if e.isolation == Isolation::Process),
        ),
        (
            "control: sealed by hand with all four seals",
            with_seals(&bytes, all),
            |r, _, _| matches!(r, Ok(e) if e.isolation == Isolation::Process),
        ),
        (
            "no seals",
            with_seals(&bytes, SealFlags::empty()),
            |r, _, _| {
                matches!(
                    r,
                    Err(Error::Load(LoadError::Refused(LibraryRefusal::Unsealed {
                        present: 0,
                        ..
                    })))
                )
            },
        ),
        (
            "every seal but F_SEAL_SEAL (seals could still be added or not)",
            with_seals(
                &bytes,
                SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK,
            ),
            |r, _, _| {
                matches!(
                    r,
                    Err(Error::Load(LoadError::Refused(
                        LibraryRefusal::Unsealed { .. }
                    )))
                )
            },
        ),
        (
            "other bytes of the same size",
            sealed(&flipped),
            |r, signed, other| {
                matches!(
                    r,
                    Err(Error::Load(LoadError::Refused(LibraryRefusal::Digest { expected, actual })))
                        if expected == signed && actual == other
                )
            },
        ),
        ("one byte more", sealed(&longer), |r, _, _| {
            matches!(
                r,
                Err(Error::Load(LoadError::Refused(LibraryRefusal::Size { expected, actual })))
                    if *actual == expected + 1
            )
        }),
    ];
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_skillgate-worker"));
    let (signed, other) = (hex(&bytes), hex(&flipped));
    for (case, fd, check) in rows {
        let inspected = gate.verify_and_inspect(&dir).unwrap();
        let result = skillgate::fuzzing::start_worker_on(
            inspected,
            gate.policy().limits(),
            &worker,
            fd.as_fd(),
        )
        .map_err(|e: ExecError| Error::from(e));
        assert!(check(&result, &signed, &other), "{case}: {result:?}");
    }
    host.assert_still_serves(&gate);
}

/// Runs the real worker with `library` at fd 3 and `channel` at fd 4 and no grants, as a
/// host would place them, and returns its exit code (it exits at once: nothing sends it
/// `Init`, the other end of any socket given is already closed).
#[allow(unsafe_code)]
fn run_worker_with(library: std::os::fd::OwnedFd, channel: std::os::fd::OwnedFd) -> Option<i32> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_skillgate-worker"));
    command
        .args([skillgate::worker::WORKER_ARG, "0"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (lib, chan) = (library.as_raw_fd(), channel.as_raw_fd());
    let hook = move || -> std::io::Result<()> {
        // SAFETY: fcntl and dup2 on descriptor numbers this process holds; both are
        // async-signal-safe and touch no memory. Sources move above 4 first, so placing one
        // cannot overwrite the other.
        unsafe {
            let (l, c) = (
                libc::fcntl(lib, libc::F_DUPFD, 10),
                libc::fcntl(chan, libc::F_DUPFD, 10),
            );
            if l < 0 || c < 0 || libc::dup2(l, 3) < 0 || libc::dup2(c, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls (see above).
    unsafe { command.pre_exec(hook) };
    let mut child = command.spawn().unwrap();
    drop((library, channel));
    let deadline = Instant::now() + PROMPT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "the worker did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The worker checks the descriptor layout before it reads anything: fd 3 must be a regular
/// (memory) file and fd 4 a socket, else it exits at once with its layout code (15) and
/// reads nothing from what sits there. Control: the right kinds pass the check and the
/// worker then stops where it finds no `Init` on a closed channel (12). Process mode only:
/// thread mode has no worker and no descriptor layout.
#[test]
fn the_worker_refuses_a_descriptor_layout_that_is_not_the_hosts() {
    use std::os::fd::OwnedFd;
    let memfd = || -> OwnedFd {
        let all = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
        sealed_memfd("layout", b"\x7fELF", all)
    };
    let socket = || -> OwnedFd {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(ours);
        theirs.into()
    };
    let pipe = || -> OwnedFd {
        let (read, write) = std::io::pipe().unwrap();
        drop(write);
        read.into()
    };
    let rows: [(&str, OwnedFd, OwnedFd, i32); 3] = [
        ("control: memfd and socket", memfd(), socket(), 12),
        ("a pipe as the channel", memfd(), pipe(), 15),
        ("a pipe as the library", pipe(), socket(), 15),
    ];
    for (case, library, channel, code) in rows {
        assert_eq!(run_worker_with(library, channel), Some(code), "{case}");
    }
}
