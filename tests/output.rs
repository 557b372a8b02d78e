//! Plugins that print (issue 13, item 3): in process isolation a worker's stdout and stderr
//! are the plugin's log — `tracing` events with target `skillgate::plugin`, one per line,
//! bounded per call by `limits.log_bytes` — and never reach the control channel; a worker
//! that leaves the log pipe open in another process cannot hold the host. In thread mode
//! the plugin shares the host's descriptors: nothing is captured (the command line's part,
//! a clean stdout, is in tests/cli.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skillgate::Isolation;
use skillgate::error::{Error, FaultError};
use skillgate::policy::Limits;
use support::{Host, ctx};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Generous bound for "did not hang": the tests share a loaded machine.
const PROMPT: Duration = Duration::from_secs(10);
const TARGET: &str = "skillgate::plugin";

/// Held by the flood test and the pooled test: the flood test's count of lines per call
/// depends on the log reader reading the call's stderr line before the flood fills
/// `log_bytes`, and the pooled test's extra workers (a pool refilling beside it) made that
/// read late once on a loaded CI machine.
static APART: Mutex<()> = Mutex::new(());

fn apart() -> std::sync::MutexGuard<'static, ()> {
    APART
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One event as the capturing subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Keeps every event with target `skillgate::plugin`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target() == TARGET
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with a capturing subscriber as this thread's default (the plugin's log reader
/// adopts the loading thread's) and returns what it saw.
fn during<T>(f: impl FnOnce() -> T) -> (T, Vec<Seen>) {
    let capture = Capture::default();
    let out = tracing::subscriber::with_default(capture.clone(), f);
    let seen = capture.0.lock().unwrap().clone();
    (out, seen)
}

/// The log lines among `seen`, as (stream, text).
fn lines(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.level == Level::INFO)
        .map(|s| (s.get("stream").to_owned(), s.get("message").to_owned()))
        .collect()
}

fn has(lines: &[(String, String)], stream: &str, text: &str) -> bool {
    lines.iter().any(|(s, t)| s == stream && t == text)
}

#[test]
fn a_process_mode_plugins_output_is_its_log_and_never_its_result() {
    for host in Host::each_mode() {
        let gate = host.gate();
        let dir = host.plugin("chatty", "chatty");
        let (results, seen) = during(|| {
            let plugin = gate.verify_and_load(&dir).unwrap();
            let results: Vec<_> = (0..2)
                .map(|_| plugin.execute(&ctx(serde_json::json!({}))).unwrap())
                .collect();
            // Dropping the plugin ends its worker; what it wrote last is drained first.
            drop(plugin);
            results
        });
        for r in &results {
            assert!(r.success, "{r:?}");
            assert_eq!(r.output["chatty"], true);
        }
        let got = lines(&seen);
        match host.isolation {
            Isolation::Process => {
                // Constructor output (printf without fflush: the worker line-buffers stdout)
                // and each call's, on the stream it was written to.
                for (stream, text) in [
                    ("stdout", "chatty: constructor on stdout"),
                    ("stderr", "chatty: constructor on stderr"),
                    ("stdout", "chatty: execute on stdout"),
                    ("stderr", "chatty: execute on stderr"),
                    (
                        "stdout",
                        r#"{"success":false,"note":"printed, not returned"}"#,
                    ),
                ] {
                    assert!(has(&got, stream, text), "{stream} {text:?} in {got:?}");
                }
                let calls = got
                    .iter()
                    .filter(|(_, t)| t == "chatty: execute on stderr")
                    .count();
                assert_eq!(calls, 2, "one line per call: {got:?}");
                assert!(seen.iter().all(|s| s.get("plugin") == "chatty"));
                assert!(
                    seen.iter().all(|s| s.level == Level::INFO),
                    "nothing dropped: {seen:?}"
                );
            }
            // A thread-mode plugin writes to the host's own descriptors: nothing to capture.
            _ => assert_eq!(got, Vec::<(String, String)>::new()),
        }
        host.assert_still_serves(&gate);
    }
}

#[test]
fn control_characters_a_plugin_prints_reach_the_log_escaped() {
    // Process mode only: in thread mode nothing is captured.
    let host = Host::process();
    let gate = host.gate();
    let dir = host.plugin("chatty", "escapes");
    let (_, seen) = during(|| {
        let plugin = gate.verify_and_load(&dir).unwrap();
        assert!(plugin.execute(&ctx(serde_json::json!({}))).unwrap().success);
        drop(plugin);
    });
    let got = lines(&seen);
    assert!(
        has(&got, "stderr", r"chatty: \u{1b}[2J cleared\u{d}"),
        "{got:?}"
    );
    for (_, text) in &got {
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    host.assert_still_serves(&gate);
}

#[test]
fn a_10_mib_flood_is_read_bounded_by_log_bytes_and_the_host_still_serves() {
    let _apart = apart();
    // Process mode only: in thread mode the 10 MiB would go to the test runner's stdout.
    let host = Host::process();
    let limit = 64 * 1024;
    let policy = host.policy_with(|p| p.limits(Limits::builder().log_bytes(limit)));
    let gate = host.gate_with(policy);
    let dir = host.plugin("chatty", "flood");
    let flood = 10 * 1024 * 1024;
    let (took, seen) = during(|| {
        let plugin = gate.verify_and_load(&dir).unwrap();
        let started = Instant::now();
        let r = plugin
            .execute(&ctx(serde_json::json!({ "flood": flood })))
            .unwrap();
        let took = started.elapsed();
        assert!(r.success);
        assert_eq!(r.output["flooded"], flood);
        // The next call closes the flood's window (its warning comes then) and still works.
        let r = plugin.execute(&ctx(serde_json::json!({}))).unwrap();
        assert_eq!(r.output["flooded"], 0);
        drop(plugin);
        took
    });
    assert!(took < PROMPT, "the flood call took {took:?}");
    let flooded: usize = lines(&seen)
        .iter()
        .filter(|(_, t)| t.starts_with("fff"))
        .map(|(_, t)| t.len() + 1)
        .sum();
    assert!(flooded > 0, "the flood's first lines are logged");
    assert!(flooded <= limit, "{flooded} bytes of the flood surfaced");
    let dropped: Vec<&Seen> = seen.iter().filter(|s| s.level == Level::WARN).collect();
    assert_eq!(dropped.len(), 1, "one warning: {dropped:?}");
    let count: usize = dropped[0].get("dropped").parse().unwrap();
    assert!(
        count >= flood - limit && count <= flood + 4096,
        "dropped {count}"
    );
    assert_eq!(dropped[0].get("limit"), limit.to_string());
    assert_eq!(dropped[0].get("plugin"), "flood");
    // The second call's own lines are surfaced again: the limit is per call.
    let got = lines(&seen);
    let calls = got
        .iter()
        .filter(|(s, t)| s == "stderr" && t == "chatty: execute on stderr")
        .count();
    assert_eq!(calls, 2, "{got:?}");
    host.assert_still_serves(&gate);
}

#[test]
fn a_worker_whose_log_pipe_outlives_it_cannot_hold_the_host() {
    // Process mode only: there is no worker in thread mode. A stand-in worker leaves a
    // process behind that holds its stdout and stderr (and not the channel), then exits:
    // the host must report the exit and return, not wait for the pipe's end of file.
    let host = Host::new();
    let dir = host.plugin("good", "leaver");
    let script = host.tmp.path().join("leaving-worker.sh");
    let pidfile = host.tmp.path().join("left.pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n/bin/sleep 60 3>&- 4>&- &\necho $! > {}\nexit 0\n",
            pidfile.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = host
        .process_policy()
        .to_builder()
        .worker(script)
        .limits(Limits::builder().call_timeout_ms(1_000))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = host.gate_with(policy).verify_and_load(&dir).unwrap_err();
    let took = started.elapsed();
    let left: Option<i32> = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse().ok());
    if let Some(pid) = left {
        // The process the stand-in left behind.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    assert!(left.is_some(), "the stand-in left a process behind");
    assert!(
        matches!(
            err,
            Error::Fault(FaultError::Crashed {
                signal: None,
                code: Some(0)
            })
        ),
        "{err:?}"
    );
    assert!(took < PROMPT, "the load returned after {took:?}");
    host.assert_still_serves(&host.process_gate());
}

/// The per-call limit is a policy setting like the others.
#[test]
fn log_bytes_is_read_from_the_policy_file() {
    let host = Host::new();
    let file = host.tmp.path().join("policy.json");
    std::fs::write(
        &file,
        r#"{"trusted_roots":["root"],"keys":"keys","isolation":"process","limits":{"log_bytes":1000}}"#,
    )
    .unwrap();
    let policy = skillgate::Policy::from_file(&file).unwrap();
    assert_eq!(policy.limits().log_bytes(), 1000);
    assert_eq!(Limits::default().log_bytes(), 64 * 1024);
}

/// A pooled load starts the log's reader only after `Init` is sent, while the worker loads:
/// what the plugin's constructor prints before the reader runs waits in the pipes and still
/// reaches the log, on its stream.
#[test]
fn a_pooled_workers_constructor_output_reaches_the_log() {
    let _apart = apart();
    let host = Host::process();
    let gate = host.gate();
    // The first process-mode load starts the pool; the next one is taken from it.
    let starter = host.plugin("good", "starter");
    drop(gate.verify_and_load(&starter).unwrap());
    let until = Instant::now() + PROMPT;
    let pooled = loop {
        let pids = gate.pooled_worker_pids();
        if !pids.is_empty() {
            break pids;
        }
        assert!(Instant::now() < until, "the pool never filled");
        std::thread::sleep(Duration::from_millis(10));
    };
    let dir = host.plugin("chatty", "chatty");
    let (pid, seen) = during(|| {
        let plugin = gate.verify_and_load(&dir).unwrap();
        let pid = plugin.worker_pid().unwrap();
        assert!(plugin.execute(&ctx(serde_json::json!({}))).unwrap().success);
        drop(plugin);
        pid
    });
    assert!(pooled.contains(&pid), "{pid} was not pooled: {pooled:?}");
    let got = lines(&seen);
    for (stream, text) in [
        ("stdout", "chatty: constructor on stdout"),
        ("stderr", "chatty: constructor on stderr"),
        ("stderr", "chatty: execute on stderr"),
    ] {
        assert!(has(&got, stream, text), "{stream} {text:?} in {got:?}");
    }
    host.assert_still_serves(&gate);
}
