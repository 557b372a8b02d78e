//! The audit trail (issue 15, item 6): every decision is one `tracing` event with target
//! `skillgate::audit`, a field `event` naming it and the README table's field names; and
//! `skillgate run --audit-log FILE` appends them as JSON lines.
//!
//! Library level: a capturing subscriber keeps every audit event of a good load and call
//! (verified, loaded, unloaded), of refusals at each stage (with the stage, the error's
//! kind and the plugin named as far as it is known), of faults (in both isolation modes),
//! of a log flood (limit), of a waived expiry and a reset mark. Command-line level: two
//! runs append to the same file, each line a JSON object, the file mode 0600; a log that
//! cannot be written stops the run before the plugin runs, and says so once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use sha2::Digest;
use skillgate::danger::Danger;
use skillgate::error::{Error, FaultError};
use skillgate::policy::{Isolation, Limits, Policy, TrustPolicy};
use skillgate::{Gate, PluginContext};
use support::{Host, ctx, is_our_child, manifest_template};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const TARGET: &str = "skillgate::audit";

/// One audit event as the capturing subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    fields: BTreeMap<String, String>,
    /// For an event with a `worker_pid`: whether that process was still a child of ours
    /// (not yet reaped) when the event fired.
    worker_alive: Option<bool>,
}

impl Seen {
    fn event(&self) -> &str {
        self.get("event")
    }
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }
    fn has(&self, k: &str) -> bool {
        self.fields.contains_key(k)
    }
}

/// Keeps every event with target `skillgate::audit`.
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
        let worker_alive = fields
            .get("worker_pid")
            .map(|p| is_our_child(p.parse().unwrap()));
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            fields,
            worker_alive,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with a capturing subscriber as this thread's default and returns the audit
/// events it saw.
fn during<T>(f: impl FnOnce() -> T) -> (T, Vec<Seen>) {
    let capture = Capture::default();
    let out = tracing::subscriber::with_default(capture.clone(), f);
    let seen = capture.0.lock().unwrap().clone();
    (out, seen)
}

fn events(seen: &[Seen]) -> Vec<&str> {
    seen.iter().map(Seen::event).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of the plugin's library file, hex.
fn library_sha256(dir: &Path, name: &str) -> String {
    let bytes = std::fs::read(dir.join(format!("lib{name}.so"))).unwrap();
    hex(&sha2::Sha256::digest(&bytes))
}

fn mode_name(host: &Host) -> &'static str {
    match host.isolation {
        Isolation::Process => "process",
        _ => "thread",
    }
}

/// No text field of any event holds a character a terminal or a log reader would act on.
fn assert_escaped(seen: &[Seen]) {
    for e in seen {
        for (k, v) in &e.fields {
            assert!(!v.chars().any(skillgate::escape::needs_escape), "{k}={v:?}");
        }
    }
}

/// Flips one byte in the middle of the plugin's library.
fn tamper(dir: &Path, name: &str) {
    let lib = dir.join(format!("lib{name}.so"));
    let mut bytes = std::fs::read(&lib).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&lib, bytes).unwrap();
}

#[test]
fn a_good_load_and_call_is_verified_loaded_and_unloaded_in_both_modes() {
    for host in Host::each_mode() {
        let gate = host.gate();
        let dir = host.plugin("good", "audited");
        let sha = library_sha256(&dir, "audited");
        let key = host.key.public().id().to_string();
        let ((pid, enforcement), seen) = during(|| {
            let plugin = gate.verify_and_load(&dir).unwrap();
            let r = plugin.execute(&PluginContext::default()).unwrap();
            assert!(r.success);
            let pid = plugin.worker_pid();
            let enforcement = serde_json::to_value(plugin.enforcement()).unwrap();
            drop(plugin);
            (pid, enforcement)
        });
        let mode = mode_name(&host);
        assert_eq!(events(&seen), ["verified", "loaded", "unloaded"], "{mode}");
        assert_escaped(&seen);
        for e in &seen {
            assert_eq!(e.level, Level::INFO, "{e:?}");
            assert_eq!(e.get("plugin"), "audited");
            assert_eq!(e.get("version"), "1.0.0");
            assert_eq!(e.get("sha256"), sha, "{e:?}");
            assert!(e.get("path").ends_with("/root/audited"), "{e:?}");
            assert!(!e.has("danger") && !e.has("stage") && !e.has("error"));
        }
        let (verified, loaded, unloaded) = (&seen[0], &seen[1], &seen[2]);
        assert_eq!(verified.get("signers"), key);
        assert_eq!(loaded.get("signers"), key);
        assert_eq!(loaded.get("isolation"), mode);
        assert_eq!(unloaded.get("isolation"), mode);
        let logged: serde_json::Value = serde_json::from_str(loaded.get("enforcement")).unwrap();
        assert_eq!(
            logged, enforcement,
            "the enforcement as the handle reports it"
        );
        match host.isolation {
            Isolation::Process => {
                let pid = pid.expect("a worker").to_string();
                assert_eq!(loaded.get("worker_pid"), pid);
                assert_eq!(unloaded.get("worker_pid"), pid);
                assert_eq!(
                    loaded.worker_alive,
                    Some(true),
                    "the probe sees a live worker"
                );
                assert_eq!(
                    unloaded.worker_alive,
                    Some(false),
                    "unloaded fires once the worker is reaped"
                );
            }
            _ => {
                assert!(!loaded.has("worker_pid") && !unloaded.has("worker_pid"));
            }
        }
    }
}

#[test]
fn refusals_name_their_stage_kind_and_plugin_in_both_modes() {
    for host in Host::each_mode() {
        let gate = host.gate();
        // Integrity: the manifest was read, so the plugin is named by it.
        let dir = host.plugin("good", "flipped");
        std::fs::rename(&dir, host.root.join("renamed")).unwrap();
        let dir = host.root.join("renamed");
        tamper(&dir, "flipped");
        // Signature: plugin.json changed after signing, so it was never parsed.
        let unsigned = host.plugin("good", "resigned");
        let manifest = manifest_template("resigned").replace("test plugin", "changed plugin");
        std::fs::write(unsigned.join("plugin.json"), manifest).unwrap();
        // Inspect: an executable stack (signed without the signer's checks).
        let lib = host.build_with("good", "execstack", &[], &["-Wl,-z,execstack"]);
        let execstack = host.install("execstack", &lib);
        // Load: metadata that disagrees with the signed manifest.
        let wrong = host.plugin("wrong_name", "wrong");
        // Locate: outside every trusted root.
        let outside = host.tmp.path().join("elsewhere");

        let cases: [(&Path, &str, &str, &str, Option<&str>); 5] = [
            (&dir, "digests", "integrity", "flipped", Some("1.0.0")),
            (&unsigned, "manifest", "signature", "resigned", None),
            (&execstack, "inspect", "inspect", "execstack", Some("1.0.0")),
            (&wrong, "load", "abi", "wrong", Some("1.0.0")),
            (&outside, "locate", "locate", "elsewhere", None),
        ];
        for (path, stage, kind, plugin, version) in cases {
            let (result, seen) = during(|| gate.verify_and_load(path));
            let err = result.unwrap_err();
            assert_eq!(err.kind(), kind, "{err:?}");
            let refused: Vec<&Seen> = seen.iter().filter(|e| e.event() == "refused").collect();
            assert_eq!(refused.len(), 1, "{stage}: {seen:?}");
            let e = refused[0];
            assert_eq!(e.level, Level::WARN);
            assert_eq!(e.get("stage"), stage);
            assert_eq!(e.get("kind"), kind);
            assert_eq!(e.get("plugin"), plugin, "{e:?}");
            assert_eq!(e.fields.get("version").map(String::as_str), version);
            assert_eq!(e.get("path"), path.display().to_string());
            assert_eq!(e.get("error"), err.to_string());
            // Only a refusal after the digests matched knows the library's hash.
            assert_eq!(
                e.has("sha256"),
                matches!(stage, "inspect" | "load"),
                "{e:?}"
            );
            // Nothing is "verified" that was refused before loading.
            let verified = seen.iter().any(|e| e.event() == "verified");
            assert_eq!(verified, stage == "load", "{stage}: {seen:?}");
            assert!(!seen.iter().any(|e| e.event() == "loaded"));
            assert_escaped(&seen);
        }
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_refused_directory_name_is_escaped_in_the_event() {
    let host = Host::new();
    let gate = host.gate();
    let hostile = host
        .tmp
        .path()
        .join("x\u{1b}[2J\nskillgate: forged\u{202e}");
    let (result, seen) = during(|| gate.verify(&hostile));
    assert!(matches!(result, Err(Error::Locate(_))), "{result:?}");
    assert_eq!(events(&seen), ["refused"]);
    assert_eq!(
        seen[0].get("plugin"),
        r"x\u{1b}[2J\u{a}skillgate: forged\u{202e}"
    );
    assert_escaped(&seen);
    host.assert_still_serves(&gate);
}

#[test]
fn verify_alone_is_verified_and_verify_many_reports_to_the_callers_subscriber() {
    let host = Host::new();
    let gate = host.gate();
    let good = host.plugin("good", "one");
    let bad = host.plugin("good", "two");
    tamper(&bad, "two");
    let (result, seen) = during(|| gate.verify(&good));
    result.unwrap();
    assert_eq!(events(&seen), ["verified"]);
    assert_eq!(seen[0].get("plugin"), "one");
    // Several paths run on worker threads (on a machine with more than one core); their
    // events still reach the subscriber of the thread that called.
    let paths = [good.clone(), bad.clone(), good.clone(), bad.clone()];
    let (results, seen) = during(|| gate.verify_many(&paths));
    assert_eq!(results.len(), 4);
    let mut got: Vec<(&str, &str)> = seen.iter().map(|e| (e.event(), e.get("plugin"))).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("refused", "two"),
            ("refused", "two"),
            ("verified", "one"),
            ("verified", "one")
        ]
    );
    host.assert_still_serves(&gate);
}

#[test]
fn a_fault_is_an_event_in_both_modes_and_so_is_each_call_on_the_poisoned_handle() {
    for host in Host::each_mode() {
        // Process mode: a segfault ends the worker. Thread mode cannot survive a crash (it
        // is the host's own process): its fault is a NULL result, which poisons nothing.
        let (gate, dir, name, input) = match host.isolation {
            Isolation::Process => {
                let policy =
                    host.policy_with(|p| p.limits(Limits::builder().call_timeout_ms(5_000)));
                let dir = host.plugin("faulty", "crasher");
                (
                    host.gate_with(policy),
                    dir,
                    "crasher",
                    serde_json::json!({"action": "segfault"}),
                )
            }
            _ => (
                host.gate(),
                host.plugin("result_null", "nuller"),
                "nuller",
                serde_json::json!({}),
            ),
        };
        let sha = library_sha256(&dir, name);
        let plugin = gate.verify_and_load(&dir).unwrap();
        let pid = plugin.worker_pid();
        let (outcomes, seen) = during(|| {
            let first = plugin.execute(&ctx(input.clone())).unwrap_err();
            let second = plugin.execute(&ctx(input.clone())).unwrap_err();
            (first, second)
        });
        let (first, second) = outcomes;
        assert_eq!(events(&seen), ["fault", "fault"], "{seen:?}");
        assert_escaped(&seen);
        for (e, err) in seen.iter().zip([&first, &second]) {
            assert_eq!(e.level, Level::WARN);
            assert_eq!(e.get("plugin"), name);
            assert_eq!(e.get("version"), "1.0.0");
            assert_eq!(e.get("sha256"), sha);
            assert_eq!(e.get("isolation"), mode_name(&host));
            assert_eq!(e.get("kind"), "plugin fault");
            assert_eq!(e.get("error"), err.to_string());
        }
        match host.isolation {
            Isolation::Process => {
                assert!(
                    matches!(first, Error::Fault(FaultError::Crashed { .. })),
                    "{first:?}"
                );
                assert!(matches!(second, Error::Fault(FaultError::Poisoned)));
                // The crashed call names its worker; the poisoned one reached none.
                assert_eq!(seen[0].get("worker_pid"), pid.unwrap().to_string());
                assert!(!seen[1].has("worker_pid"));
            }
            _ => {
                assert!(matches!(first, Error::Fault(FaultError::NullResult { .. })));
                assert!(matches!(
                    second,
                    Error::Fault(FaultError::NullResult { .. })
                ));
                assert!(!seen.iter().any(|e| e.has("worker_pid")));
            }
        }
        // A good call on a good plugin is no fault (the events above are the faults').
        let (_, seen) = during(|| host.assert_still_serves(&gate));
        assert!(!seen.iter().any(|e| e.event() == "fault"), "{seen:?}");
    }
}

#[test]
fn output_past_log_bytes_is_a_limit_event() {
    // Process mode only: a thread-mode plugin's output is not captured.
    let host = Host::process();
    let limit = 4096;
    let gate = host.gate_with(host.policy_with(|p| p.limits(Limits::builder().log_bytes(limit))));
    let dir = host.plugin("chatty", "flooder");
    let flood = 64 * 1024;
    let ((), seen) = during(|| {
        let plugin = gate.verify_and_load(&dir).unwrap();
        // Control: a call within the limit is no event.
        plugin.execute(&ctx(serde_json::json!({}))).unwrap();
        plugin
            .execute(&ctx(serde_json::json!({ "flood": flood })))
            .unwrap();
        // The next call closes the flood's window.
        plugin.execute(&ctx(serde_json::json!({}))).unwrap();
    });
    let limits: Vec<&Seen> = seen.iter().filter(|e| e.event() == "limit").collect();
    assert_eq!(limits.len(), 1, "{seen:?}");
    let e = limits[0];
    assert_eq!(e.level, Level::WARN);
    assert_eq!(e.get("plugin"), "flooder");
    assert_eq!(e.get("limit"), "limits.log_bytes");
    assert_eq!(e.get("max"), limit.to_string());
    let excess: usize = e.get("excess").parse().unwrap();
    assert!(excess >= flood - limit, "{excess}");
    assert!(e.get("error").contains("dropped"), "{e:?}");
    host.assert_still_serves(&gate);
}

#[test]
fn an_expiry_waived_by_danger_and_a_reset_mark_are_events() {
    let host = Host::new();
    let lib = host.build("good", "stale", &[]);
    let json = manifest_template("stale").replace(
        "\"thread_safe\":false",
        "\"thread_safe\":false,\"expires\":\"2001-02-03T04:05:06Z\"",
    );
    let dir = host.install_with_manifest("stale", &lib, &json);
    std::fs::create_dir(host.tmp.path().join("state")).unwrap();
    let trust = || TrustPolicy::from_json(br#"{"state_dir":"state"}"#, host.tmp.path()).unwrap();
    // Control: the strict policy refuses it at the trust stage.
    let strict = Gate::new(host.policy_with(|p| p.trust(trust()))).unwrap();
    let (result, seen) = during(|| strict.verify(&dir));
    assert_eq!(result.unwrap_err().kind(), "trust");
    assert_eq!(events(&seen), ["refused"]);
    assert_eq!(seen[0].get("stage"), "trust");
    assert_eq!(seen[0].get("plugin"), "stale");
    let mut danger = Danger::default();
    danger.expired_plugins_warn_only();
    let lenient: Policy = host.policy_with(|p| p.trust(trust()).danger(danger));
    let lenient = Gate::new(lenient).unwrap();
    let (result, seen) = during(|| lenient.verify(&dir));
    result.unwrap();
    assert_eq!(events(&seen), ["waived", "verified"], "{seen:?}");
    for e in &seen {
        assert_eq!(e.level, Level::WARN);
        assert_eq!(e.get("plugin"), "stale");
        assert_eq!(e.get("version"), "1.0.0");
        assert_eq!(e.get("danger"), "danger.expired_plugins_warn_only");
    }
    assert_eq!(seen[0].get("kind"), "trust");
    assert!(seen[0].get("error").contains("2001-02-03T04:05:06Z"));
    // The mark raised by that verification, reset by an administrator.
    let state = host.tmp.path().join("state");
    let (old, seen) = during(|| skillgate::state::reset_version_mark(&state, "stale"));
    assert_eq!(old.unwrap().unwrap().to_string(), "1.0.0");
    assert_eq!(events(&seen), ["mark_reset"]);
    assert_eq!(seen[0].level, Level::WARN);
    assert_eq!(seen[0].get("plugin"), "stale");
    assert_eq!(seen[0].get("version"), "1.0.0");
    assert_eq!(seen[0].get("path"), state.display().to_string());
}

#[test]
fn a_compat_loader_without_a_policy_refuses_at_setup() {
    let host = Host::new();
    let dir = host.plugin("good", "orphan");
    let none = host.tmp.path().join("nothing-here");
    let env = skillgate::policy::PolicyEnv {
        skillgate_policy: None,
        xdg_config_home: Some(none.join("xdg").into_os_string()),
        home: Some(none.join("home").into_os_string()),
        system_file: none.join("etc/skillgate/policy.json"),
    };
    let loader = skillgate::PluginLoader::from_env(&env);
    let (result, seen) = during(|| loader.load_plugin(&dir).map(|_| ()));
    let err = result.unwrap_err();
    assert_eq!(events(&seen), ["refused"]);
    assert_eq!(seen[0].get("stage"), "setup");
    assert_eq!(seen[0].get("kind"), err.kind());
    assert_eq!(seen[0].get("plugin"), "orphan");
}

// ---------------------------------------------------------------------------------------
// The command line

fn skillgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skillgate"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A policy file for `host` (process isolation: the command line is its own worker).
fn policy_file(host: &Host) -> PathBuf {
    let path = host.tmp.path().join("policy.json");
    let json = format!(
        r#"{{"trusted_roots":[{:?}],"keys":{:?},"isolation":"process"}}"#,
        s(&host.root),
        s(&host.keys_dir())
    );
    std::fs::write(&path, json).unwrap();
    path
}

/// Each line of the audit log, parsed.
fn json_lines(log: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    text.lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => m,
            other => panic!("not a JSON object: {l:?} ({other:?})"),
        })
        .collect()
}

#[test]
fn run_appends_json_lines_to_the_audit_log_across_runs() {
    let host = Host::new();
    let good = host.plugin("good", "cli-good");
    let bad = host.plugin("good", "cli-bad");
    tamper(&bad, "cli-bad");
    let policy = policy_file(&host);
    let log = host.tmp.path().join("audit.jsonl");
    let first = skillgate(&[
        "run",
        s(&good),
        "--policy",
        s(&policy),
        "--audit-log",
        s(&log),
    ]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The result is stdout's alone, and stderr is as without the log.
    let result: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(result["success"], true);
    assert!(
        first.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let after_first = json_lines(&log);
    let second = skillgate(&[
        "run",
        s(&bad),
        "--policy",
        s(&policy),
        "--audit-log",
        s(&log),
    ]);
    assert_eq!(second.status.code(), Some(1));
    let lines = json_lines(&log);
    assert_eq!(
        lines[..after_first.len()],
        after_first[..],
        "appended, not rewritten"
    );
    let names: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["verified", "loaded", "unloaded", "refused"]);
    let sha = library_sha256(&good, "cli-good");
    for line in &lines {
        assert!(
            line["timestamp"].as_str().unwrap().ends_with('Z'),
            "{line:?}"
        );
        assert!(
            time::OffsetDateTime::parse(
                line["timestamp"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok(),
            "{line:?}"
        );
        assert!(line["path"].is_string());
    }
    let (verified, loaded, unloaded, refused) = (&lines[0], &lines[1], &lines[2], &lines[3]);
    for l in [verified, loaded, unloaded] {
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["plugin"], "cli-good");
        assert_eq!(l["version"], "1.0.0");
        assert_eq!(l["sha256"], sha.as_str());
    }
    assert_eq!(loaded["isolation"], "process");
    let pid = loaded["worker_pid"].as_u64().expect("a number");
    assert_eq!(unloaded["worker_pid"].as_u64(), Some(pid));
    let enforcement: serde_json::Value =
        serde_json::from_str(loaded["enforcement"].as_str().unwrap()).unwrap();
    assert_eq!(enforcement["isolation"], "process");
    assert_eq!(refused["level"], "WARN");
    assert_eq!(refused["plugin"], "cli-bad");
    assert_eq!(refused["stage"], "digests");
    assert_eq!(refused["kind"], "integrity");
    assert!(refused["error"].as_str().unwrap().contains("sha256"));
    // verify appends too.
    let third = skillgate(&[
        "verify",
        s(&good),
        "--policy",
        s(&policy),
        "--audit-log",
        s(&log),
    ]);
    assert_eq!(third.status.code(), Some(0));
    let lines = json_lines(&log);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["event"], "verified");
    // An existing log keeps its mode and its lines.
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
    skillgate(&[
        "verify",
        s(&bad),
        "--policy",
        s(&policy),
        "--audit-log",
        s(&log),
    ]);
    assert_eq!(json_lines(&log).len(), 6);
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn an_audit_log_that_cannot_be_written_stops_the_run_before_the_plugin() {
    let host = Host::new();
    let dir = host.plugin("good", "unlogged");
    let policy = policy_file(&host);
    // A file-size limit above the library's size and the worker's call region (each a
    // memfd the host sizes, which counts: 2.1 MiB for the region) and below the log's:
    // every append to the log fails (EFBIG, SIGXFSZ ignored), nothing else does.
    let library = std::fs::metadata(dir.join("libunlogged.so")).unwrap().len();
    let limit = library + 4 * 1024 * 1024;
    let log = host.tmp.path().join("full.jsonl");
    std::fs::write(&log, vec![b'\n'; usize::try_from(limit).unwrap()]).unwrap();
    let run = |log: &Path, fsize: u64| {
        Command::new("/bin/sh")
            .args([
                "-c",
                r#"trap '' XFSZ; exec prlimit --fsize="$1":unlimited "$0" run "$2" --policy "$3" --audit-log "$4""#,
                env!("CARGO_BIN_EXE_skillgate"),
            ])
            .args([&fsize.to_string(), s(&dir), s(&policy), s(log)])
            .output()
            .unwrap()
    };
    let out = run(&log, limit);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot write the audit log"), "{err}");
    assert_eq!(
        err.lines().count(),
        1,
        "reported once, nothing else failed: {err}"
    );
    assert!(out.stdout.is_empty(), "the plugin was not run");
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        limit,
        "nothing was written"
    );
    // Control: the same limit with a log that has room runs and logs.
    let roomy = host.tmp.path().join("roomy.jsonl");
    let out = run(&roomy, limit);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&roomy).len(), 3);
}

#[test]
fn an_audit_log_that_is_not_a_regular_file_is_refused_without_hanging() {
    let host = Host::new();
    let dir = host.plugin("good", "fifo-logged");
    let policy = policy_file(&host);
    let fifo = host.tmp.path().join("audit.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out = skillgate(&[
        "run",
        s(&dir),
        "--policy",
        s(&policy),
        "--audit-log",
        s(&fifo),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("audit log"), "{err}");
    assert!(out.stdout.is_empty());
}
