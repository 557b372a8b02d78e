//! The danger section (issue 12, item 4): every knob that weakens a check is set there and
//! nowhere else, and a load under any of them is audited with warnings (its `verified` and
//! `loaded` events) naming each knob in force. (That each knob refuses its old place by name is in `src/policy.rs`'s tests; that
//! each one actually lets its refused library through is in `tests/inspect.rs`,
//! `tests/sandbox.rs` and `tests/trust.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use skillgate::danger::Danger;
use skillgate::policy::Policy;
use skillgate::{Gate, PluginContext};
use support::Host;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event as the capturing subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    level: Level,
    fields: BTreeMap<String, String>,
}

/// A minimal `tracing` subscriber that keeps every event (spans are ignored).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().to_owned(), text);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
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
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    /// Runs `f` with this subscriber as the thread's default and returns what it saw.
    fn during<T>(f: impl FnOnce() -> T) -> (T, Vec<Seen>) {
        let capture = Capture::default();
        let out = tracing::subscriber::with_default(capture.clone(), f);
        let seen = capture.0.lock().unwrap().clone();
        (out, seen)
    }
}

/// The `event` field of each of `seen`.
fn events<'a>(seen: &[&'a Seen]) -> Vec<&'a str> {
    seen.iter().map(|e| e.fields["event"].as_str()).collect()
}

/// The warning audit events about danger knobs among `seen`: a load names them in its
/// `verified` event (before the plugin's code first runs) and in its `loaded` event.
fn danger_warnings(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|e| {
            e.target == "skillgate::audit"
                && e.level == Level::WARN
                && e.fields.contains_key("danger")
        })
        .collect()
}

/// A policy file for `host` with `danger` as its danger section, read as a host would.
fn policy_with_danger(host: &Host, danger: &str) -> Policy {
    let isolation = host.isolation.to_string();
    let json = format!(
        r#"{{"trusted_roots":[{root:?}],"keys":{keys:?},"isolation":"{isolation}","worker":{worker:?},"danger":{danger}}}"#,
        root = host.root.to_str().unwrap(),
        keys = host.keys_dir().to_str().unwrap(),
        worker = env!("CARGO_BIN_EXE_skillgate-worker"),
    );
    let path = host.tmp.path().join("policy.json");
    std::fs::write(&path, json).unwrap();
    Policy::from_file(&path).unwrap()
}

/// Every knob of the danger section, as written in a policy file, and the name the warning
/// must carry.
const KNOBS: [(&str, &str); 12] = [
    (
        r#"{"sandbox_best_effort":true}"#,
        "danger.sandbox_best_effort",
    ),
    (
        r#"{"expired_plugins_warn_only":true}"#,
        "danger.expired_plugins_warn_only",
    ),
    (
        r#"{"elf":{"allow_executable_stack":true}}"#,
        "danger.elf.allow_executable_stack",
    ),
    (
        r#"{"elf":{"allow_writable_executable_segments":true}}"#,
        "danger.elf.allow_writable_executable_segments",
    ),
    (
        r#"{"elf":{"allow_text_relocations":true}}"#,
        "danger.elf.allow_text_relocations",
    ),
    (r#"{"elf":{"allow_rpath":true}}"#, "danger.elf.allow_rpath"),
    (r#"{"elf":{"allow_audit":true}}"#, "danger.elf.allow_audit"),
    (r#"{"elf":{"allow_ifunc":true}}"#, "danger.elf.allow_ifunc"),
    (
        r#"{"elf":{"min_relro":"partial"}}"#,
        "danger.elf.min_relro=partial",
    ),
    (
        r#"{"elf":{"allow_imports":["execve"]}}"#,
        r#"danger.elf.allow_imports=["execve"]"#,
    ),
    (
        r#"{"elf":{"allow_runpaths":["/opt/x"]}}"#,
        r#"danger.elf.allow_runpaths=["/opt/x"]"#,
    ),
    (
        r#"{"elf":{"allow_needed":["libz.so.1"]}}"#,
        r#"danger.elf.allow_needed=["libz.so.1"]"#,
    ),
];

/// Loads `dir` under `policy` while capturing events, runs it once, and returns the
/// events.
fn load_capturing(policy: Policy, dir: &std::path::Path) -> Vec<Seen> {
    let gate = Gate::new(policy).unwrap();
    let (plugin, seen) = Capture::during(|| gate.verify_and_load(dir));
    let plugin = plugin.expect("a good plugin loads under any danger knob");
    assert!(plugin.execute(&PluginContext::default()).unwrap().success);
    seen
}

#[test]
fn a_load_under_each_danger_knob_is_a_warning_naming_it() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "watched");
        // Control: a strict policy's load is audited (the capture works) with no warning.
        let seen = load_capturing(policy_with_danger(&host, "{}"), &dir);
        assert!(
            seen.iter().any(|e| e.target == "skillgate::audit"
                && e.fields
                    .get("message")
                    .is_some_and(|m| m == "plugin loaded")),
            "the capture must see the load's audit event: {seen:?}"
        );
        assert!(danger_warnings(&seen).is_empty(), "{seen:?}");

        for (json, name) in KNOBS {
            let policy = policy_with_danger(&host, json);
            assert_eq!(policy.danger().in_force(), [name], "{json}");
            let seen = load_capturing(policy, &dir);
            let warnings = danger_warnings(&seen);
            assert_eq!(
                events(&warnings),
                ["verified", "loaded"],
                "{json}: {seen:?}"
            );
            for warning in warnings {
                assert_eq!(warning.fields["danger"], name, "{json}");
                assert_eq!(warning.fields["plugin"], "watched", "{json}");
            }
        }
    }
}

#[test]
fn every_knob_in_force_is_named_in_one_warning() {
    let host = Host::new();
    let dir = host.plugin("good", "allknobs");
    let all = KNOBS
        .iter()
        .map(|(json, _)| json.trim_start_matches('{').trim_end_matches('}'))
        .filter(|j| !j.starts_with(r#""elf""#))
        .collect::<Vec<_>>()
        .join(",");
    let elf = KNOBS
        .iter()
        .filter_map(|(json, _)| json.strip_prefix(r#"{"elf":{"#))
        .map(|j| j.trim_end_matches("}}"))
        .collect::<Vec<_>>()
        .join(",");
    let policy = policy_with_danger(&host, &format!(r#"{{{all},"elf":{{{elf}}}}}"#));
    assert_eq!(policy.danger().in_force().len(), KNOBS.len());
    let seen = load_capturing(policy, &dir);
    let warnings = danger_warnings(&seen);
    assert_eq!(
        events(&warnings),
        ["verified", "loaded"],
        "one each per load: {seen:?}"
    );
    for (_, name) in KNOBS {
        for warning in &warnings {
            assert!(
                warning.fields["danger"].contains(name),
                "{name} missing from {:?}",
                warning.fields
            );
        }
    }
}

#[test]
fn a_policy_built_in_code_warns_the_same_way() {
    let host = Host::process();
    let dir = host.plugin("good", "coded");
    let mut danger = Danger::default();
    danger.elf_mut().allow_ifunc().allow_imports(["ptrace"]);
    let policy = host.policy_with(|p| p.danger(danger));
    let seen = load_capturing(policy, &dir);
    let warnings = danger_warnings(&seen);
    assert_eq!(events(&warnings), ["verified", "loaded"], "{seen:?}");
    for warning in warnings {
        assert_eq!(
            warning.fields["danger"],
            r#"danger.elf.allow_ifunc, danger.elf.allow_imports=["ptrace"]"#
        );
    }
    // And a widening written into the normal section instead cannot be built, so it
    // never reaches a gate.
    let mut elf = host.policy().elf().clone();
    elf.denied_imports.retain(|d| d != "ptrace");
    let err = host.policy().to_builder().elf(elf).build().unwrap_err();
    assert!(
        matches!(
            &err,
            skillgate::policy::PolicyError::WideningOutsideDanger {
                field: "elf.denied_imports",
                danger: "danger.elf.allow_imports",
                entry,
                ..
            } if entry == "ptrace"
        ),
        "{err:?}"
    );
    host.assert_still_serves(&Gate::new(host.policy()).unwrap());
}
