//! Host tools (`skillgate_plugin_host_v1`): a plugin asks its host for a named operation
//! instead of doing it itself, and reports progress during a call.
//!
//! The probe is `tests/plugins/tools.c`, which keeps the table it is handed and per call
//! does what its input's `op` says (read a workspace file through `workspace.read`, call any
//! tool, flood requests or progress, or — in a worker — write raw frames on its channel as
//! a hostile plugin would). Every test runs in both isolation modes unless it writes raw
//! frames (process mode only: in thread mode there is no channel), asserts the exact result
//! kind or error variant, and ends with the host still serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde_json::{Value, json};
use skillgate::error::{Error, FaultError, ProtocolViolation, Tag};
use skillgate::tools::{HostTools, ToolCaller, ToolError, WorkspaceTools};
use skillgate::{CallOptions, Gate, LoadOptions, LoadedPlugin, Policy};
use support::{Host, ctx, manifest_template};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const NOTES: &str = "the workspace's notes\n";

// ---- fixtures ---------------------------------------------------------------------------------

/// `manifest_template(name)` with `"tools": tools`.
fn manifest_with_tools(name: &str, tools: &[&str]) -> String {
    let mut m: Value = serde_json::from_str(&manifest_template(name)).unwrap();
    m["tools"] = json!(tools);
    serde_json::to_string(&m).unwrap()
}

/// Installs `tools.c` as `name` whose signed manifest names `tools`.
fn install_tools(host: &Host, name: &str, tools: &[&str], defines: &[(&str, &str)]) -> PathBuf {
    let lib = host.build("tools", name, defines);
    host.install_with_manifest(name, &lib, &manifest_with_tools(name, tools))
}

/// The host's policy allowing `allowed` host tools (and `limits` edited).
fn policy(
    host: &Host,
    allowed: &[&str],
    limits: impl FnOnce(skillgate::policy::LimitsBuilder) -> skillgate::policy::LimitsBuilder,
) -> Policy {
    let l = limits(host.policy().limits().to_builder());
    host.policy_with(|p| p.host_tools(allowed.iter().copied()).limits(l))
}

/// A gate with the built-in workspace tools registered.
fn gate(host: &Host, policy: Policy) -> Gate {
    host.gate_with(policy)
        .with_host_tools(Arc::new(WorkspaceTools::new()))
}

/// A workspace directory holding `notes.txt`.
fn workspace(host: &Host) -> PathBuf {
    let dir = host.tmp.path().join("ws");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), NOTES).unwrap();
    dir
}

fn load(gate: &Gate, dir: &Path, ws: &Path) -> LoadedPlugin {
    gate.verify_and_load_with(dir, &LoadOptions::new().workspace(ws))
        .unwrap()
}

fn call(plugin: &LoadedPlugin, input: Value) -> Value {
    let r = plugin.execute(&ctx(input)).unwrap();
    assert!(r.success, "{r:?}");
    Value::Object(r.output.into_iter().collect())
}

/// The kind of the error result the plugin got.
fn kind(output: &Value) -> &str {
    output["reply"]["error"]["kind"]
        .as_str()
        .unwrap_or("<not an error>")
}

// ---- audit capture ----------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Audit(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

impl Subscriber for Audit {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target() == "skillgate::audit"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with an audit-capturing subscriber on this thread (tools are answered on the
/// calling thread in both modes) and returns the `event` events it saw.
fn audited<T>(f: impl FnOnce() -> T) -> (T, Vec<BTreeMap<String, String>>) {
    let audit = Audit::default();
    let out = tracing::subscriber::with_default(audit.clone(), f);
    let seen = audit.0.lock().unwrap().clone();
    (out, seen)
}

fn event<'a>(
    seen: &'a [BTreeMap<String, String>],
    name: &str,
) -> Vec<&'a BTreeMap<String, String>> {
    seen.iter()
        .filter(|e| e.get("event").map(String::as_str) == Some(name))
        .collect()
}

// ---- allowed and denied -----------------------------------------------------------------------

#[test]
fn a_plugin_reads_a_workspace_file_through_workspace_read() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "reader", &["workspace.read"], &[]);
        let gate = gate(&host, policy(&host, &["workspace.read"], |l| l));
        let ws = workspace(&host);
        let plugin = load(&gate, &dir, &ws);
        assert!(plugin.uses_host_tools());
        assert!(plugin.inspection().exports_host_v1);
        // The plugin asked for no workspace grant: its sandbox cannot read the file, the
        // host's tool can.
        assert_eq!(plugin.enforcement().workspace, None);
        let (out, seen) = audited(|| call(&plugin, json!({"op": "read", "path": "notes.txt"})));
        assert_eq!(out["reply"]["ok"]["content"], NOTES, "{:?}", host.isolation);
        let tool = event(&seen, "tool");
        assert_eq!(tool.len(), 1, "{seen:?}");
        assert_eq!(tool[0]["decision"], "allowed");
        assert_eq!(tool[0]["tool"], "workspace.read");
        // A path out of the workspace is the tool's refusal, a result, not a crash.
        let out = call(
            &plugin,
            json!({"op": "read", "path": "../ws/../../etc/passwd"}),
        );
        assert_eq!(kind(&out), "failed", "{out}");
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_tool_the_manifest_does_not_name_is_denied_and_the_host_still_works() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "unnamed", &[], &[]);
        let gate = gate(&host, policy(&host, &["workspace.read"], |l| l));
        let plugin = load(&gate, &dir, &workspace(&host));
        let (out, seen) = audited(|| call(&plugin, json!({"op": "read", "path": "notes.txt"})));
        assert_eq!(kind(&out), "denied", "{out}");
        let tool = event(&seen, "tool");
        assert_eq!(tool.len(), 1, "{seen:?}");
        assert_eq!(
            (tool[0]["decision"].as_str(), tool[0]["tool"].as_str()),
            ("denied", "workspace.read")
        );
        // The same handle goes on serving.
        assert_eq!(
            kind(&call(
                &plugin,
                json!({"op": "tool", "tool": "workspace.write"})
            )),
            "denied"
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_tool_the_policy_does_not_allow_is_denied() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "unallowed", &["workspace.read"], &[]);
        let gate = gate(&host, policy(&host, &["workspace.write"], |l| l));
        let plugin = load(&gate, &dir, &workspace(&host));
        let out = call(&plugin, json!({"op": "read", "path": "notes.txt"}));
        assert_eq!(kind(&out), "denied", "{out}");
        assert!(
            out["reply"]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("host_tools.allow")
        );
        // Control: the same plugin under a policy that allows it reads the file.
        let allowing = gate_allowing_read(&host);
        let plugin = load(&allowing, &dir, &workspace(&host));
        let out = call(&plugin, json!({"op": "read", "path": "notes.txt"}));
        assert_eq!(out["reply"]["ok"]["content"], NOTES);
        host.assert_still_serves(&gate);
    }
}

fn gate_allowing_read(host: &Host) -> Gate {
    gate(host, policy(host, &["workspace.read"], |l| l))
}

#[test]
fn a_plugin_without_the_export_behaves_as_an_abi_v1_plugin() {
    for host in Host::each_mode() {
        let dir = install_tools(
            &host,
            "plain",
            &["workspace.read"],
            &[("NO_HOST_EXPORT", "1")],
        );
        let gate = gate_allowing_read(&host);
        let plugin = load(&gate, &dir, &workspace(&host));
        assert!(!plugin.uses_host_tools());
        assert!(!plugin.inspection().exports_host_v1);
        let out = call(&plugin, json!({"op": "read", "path": "notes.txt"}));
        assert_eq!(out["table"], false);
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_host_that_registered_no_tools_answers_with_error_results() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "toolless", &["workspace.read"], &[]);
        let gate = host.gate_with(policy(&host, &["workspace.read"], |l| l));
        let plugin = load(&gate, &dir, &workspace(&host));
        let out = call(&plugin, json!({"op": "read", "path": "notes.txt"}));
        assert_eq!(kind(&out), "no_host_tools", "{out}");
        host.assert_still_serves(&gate);
    }
}

#[test]
fn the_table_outside_a_call_and_bad_arguments_give_error_results() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "early", &["workspace.read"], &[]);
        let gate = gate_allowing_read(&host);
        let plugin = load(&gate, &dir, &workspace(&host));
        assert_eq!(kind(&call(&plugin, json!({"op": "early"}))), "no_call");
        assert_eq!(
            kind(&call(&plugin, json!({"op": "bad_args"}))),
            "bad_request"
        );
        let out = call(&plugin, json!({"op": "read", "path": "notes.txt"}));
        assert_eq!(out["reply"]["ok"]["content"], NOTES);
    }
}

// ---- bounds ------------------------------------------------------------------------------------

#[test]
fn ten_thousand_requests_in_one_call_get_limit_results_past_the_bound() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "greedy", &["workspace.read"], &[]);
        let gate = gate_allowing_read(&host);
        let plugin = load(&gate, &dir, &workspace(&host));
        let (out, seen) = audited(|| {
            call(
                &plugin,
                json!({"op": "many", "n": 10_000, "tool": "workspace.read", "path": "notes.txt"}),
            )
        });
        assert_eq!(
            out["counts"],
            json!({"ok": 64, "limit": 9936, "other": 0}),
            "{:?}",
            host.isolation
        );
        let limit = event(&seen, "limit");
        assert_eq!(limit.len(), 1, "{seen:?}");
        assert_eq!(limit[0]["tool_requests_refused"], "9936");
        // The count is per call: the next call gets its 64 again.
        let out = call(
            &plugin,
            json!({"op": "many", "n": 3, "tool": "workspace.read", "path": "notes.txt"}),
        );
        assert_eq!(out["counts"]["ok"], 3);
        host.assert_still_serves(&gate);
    }
}

#[test]
fn progress_reaches_the_callback_in_order() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "reporter", &[], &[]);
        let gate = gate_allowing_read(&host);
        let plugin = load(&gate, &dir, &workspace(&host));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let options = CallOptions::new().on_progress(move |v| sink.lock().unwrap().push(v.clone()));
        let r = plugin
            .execute_with(&ctx(json!({"op": "progress", "n": 20})), &options)
            .unwrap();
        assert!(r.success);
        let steps: Vec<i64> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["step"].as_i64().unwrap())
            .collect();
        assert_eq!(steps, (0..20).collect::<Vec<_>>(), "{:?}", host.isolation);
        // Without a callback the messages go nowhere and the call is the same.
        assert!(
            plugin
                .execute(&ctx(json!({"op": "progress", "n": 5})))
                .unwrap()
                .success
        );
    }
}

#[test]
fn a_progress_flood_is_dropped_and_counted_never_fatal() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "flood", &[], &[]);
        let gate = gate(&host, policy(&host, &[], |l| l.progress_messages(100)));
        let plugin = load(&gate, &dir, &workspace(&host));
        let count = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&count);
        let options = CallOptions::new()
            .on_progress(move |v| sink.lock().unwrap().push(v["step"].as_i64().unwrap()));
        let (r, seen) =
            audited(|| plugin.execute_with(&ctx(json!({"op": "progress", "n": 10_000})), &options));
        assert!(r.unwrap().success);
        assert_eq!(
            *count.lock().unwrap(),
            (0..100).collect::<Vec<_>>(),
            "{:?}",
            host.isolation
        );
        let limit = event(&seen, "limit");
        assert_eq!(limit.len(), 1, "{seen:?}");
        assert_eq!(limit[0]["progress_dropped"], "9900");
        host.assert_still_serves(&gate);
    }
}

// ---- recursion ---------------------------------------------------------------------------------

/// `host.reenter` calls the plugin it serves (refused: it would wait for itself);
/// `host.other` calls another plugin, whose own tool request is refused (one level only).
#[derive(Default)]
struct Reentrant {
    same: OnceLock<Arc<LoadedPlugin>>,
    other: OnceLock<Arc<LoadedPlugin>>,
    seen: Mutex<Vec<String>>,
}

impl HostTools for Reentrant {
    fn call_tool(
        &self,
        _: &ToolCaller,
        name: &str,
        _: &Value,
        _: Instant,
    ) -> Result<Value, ToolError> {
        let target = match name {
            "host.reenter" => self.same.get(),
            "host.other" => self.other.get(),
            _ => return Err(ToolError::Unknown(name.to_owned())),
        };
        let plugin = target.ok_or_else(|| ToolError::Failed("not set".into()))?;
        match plugin.execute(&ctx(json!({"op": "tool", "tool": "host.reenter"}))) {
            Ok(r) => {
                let out = Value::Object(r.output.into_iter().collect());
                self.seen.lock().unwrap().push(format!("ok {}", kind(&out)));
                Ok(out)
            }
            Err(e) => {
                let reentered = matches!(e, Error::Fault(FaultError::Reentered));
                self.seen
                    .lock()
                    .unwrap()
                    .push(format!("err reentered={reentered}"));
                Err(ToolError::Failed(e.to_string()))
            }
        }
    }
}

#[test]
fn a_tool_that_calls_back_into_its_plugin_is_refused_not_deadlocked() {
    for host in Host::each_mode() {
        let tools = ["host.reenter", "host.other"];
        let a = install_tools(&host, "outer", &tools, &[]);
        let b = install_tools(&host, "inner", &tools, &[]);
        let reentrant = Arc::new(Reentrant::default());
        let gate = host
            .gate_with(policy(&host, &tools, |l| l))
            .with_host_tools(Arc::clone(&reentrant) as Arc<dyn HostTools>);
        let outer = Arc::new(gate.verify_and_load(&a).unwrap());
        let inner = Arc::new(gate.verify_and_load(&b).unwrap());
        let _ = reentrant.same.set(Arc::clone(&outer));
        let _ = reentrant.other.set(Arc::clone(&inner));
        // Into itself: refused with its own variant, and the outer call completes.
        let out = call(&outer, json!({"op": "tool", "tool": "host.reenter"}));
        assert_eq!(kind(&out), "failed", "{out}");
        assert_eq!(
            reentrant.seen.lock().unwrap().pop().unwrap(),
            "err reentered=true"
        );
        // Into another plugin: it runs, but its own tool request is refused.
        let out = call(&outer, json!({"op": "tool", "tool": "host.other"}));
        assert!(out["reply"].get("ok").is_some(), "{out}");
        assert_eq!(
            reentrant.seen.lock().unwrap().pop().unwrap(),
            "ok recursion"
        );
        // Both handles still serve (nothing was poisoned).
        assert_eq!(call(&outer, json!({"op": "early"}))["table"], true);
        assert_eq!(call(&inner, json!({"op": "early"}))["table"], true);
        host.assert_still_serves(&gate);
    }
}

// ---- a hostile worker --------------------------------------------------------------------------

/// Loads `tools.c` in a worker and makes its first call with `op`.
fn hostile_call(
    host: &Host,
    name: &str,
    op: &str,
) -> (Gate, LoadedPlugin, Result<skillgate::PluginResult, Error>) {
    let dir = install_tools(host, name, &["workspace.read"], &[]);
    let gate = gate_allowing_read(host);
    let plugin = load(&gate, &dir, &workspace(host));
    let r = plugin.execute(&ctx(json!({"op": op})));
    (gate, plugin, r)
}

fn assert_poisoned_and_host_serves(host: &Host, gate: &Gate, plugin: &LoadedPlugin) {
    assert!(matches!(
        plugin.execute(&ctx(json!({"op": "early"}))),
        Err(Error::Fault(FaultError::Poisoned))
    ));
    assert!(plugin.worker_pids().is_empty());
    host.assert_still_serves(gate);
    // Control: the same plugin, loaded again, makes an honest request over the same channel.
    let again = load(
        gate,
        &host.root.join(plugin.metadata().name.as_str()),
        &workspace(host),
    );
    assert_eq!(
        call(&again, json!({"op": "read", "path": "notes.txt"}))["reply"]["ok"]["content"],
        NOTES
    );
}

#[test]
fn a_forged_request_for_another_call_is_a_violation() {
    let host = Host::process();
    let (gate, plugin, r) = hostile_call(&host, "forger", "forge_seq");
    assert!(
        matches!(
            r,
            Err(Error::Fault(FaultError::Protocol(
                ProtocolViolation::WrongSequence {
                    expected: 1,
                    got: 999_999
                }
            )))
        ),
        "{r:?}"
    );
    assert_poisoned_and_host_serves(&host, &gate, &plugin);
}

#[test]
fn a_request_announcing_four_gib_is_refused_before_allocation() {
    let host = Host::process();
    let (gate, plugin, r) = hostile_call(&host, "huge", "huge_len");
    assert!(
        matches!(
            r,
            Err(Error::Fault(FaultError::Protocol(
                ProtocolViolation::TooLarge {
                    len: 0xFFFF_FFF0,
                    ..
                }
            )))
        ),
        "{r:?}"
    );
    assert_poisoned_and_host_serves(&host, &gate, &plugin);
}

#[test]
fn a_malformed_request_is_a_violation() {
    let host = Host::process();
    let (gate, plugin, r) = hostile_call(&host, "malformed", "malformed");
    assert!(
        matches!(
            r,
            Err(Error::Fault(FaultError::Protocol(
                ProtocolViolation::Malformed {
                    tag: Tag::ToolRequest,
                    ..
                }
            )))
        ),
        "{r:?}"
    );
    assert_poisoned_and_host_serves(&host, &gate, &plugin);
}

#[test]
fn a_reply_forged_on_the_socket_is_a_violation_of_its_own_call() {
    let host = Host::process();
    let (gate, plugin, r) = hostile_call(&host, "late", "after_reply");
    // Replies come through the call region: an `Output` frame on the socket during a call
    // (here with the call's own sequence number, before a request) is never taken as the
    // call's result, and ends the worker in that same call.
    assert!(
        matches!(
            r,
            Err(Error::Fault(FaultError::Protocol(
                ProtocolViolation::Unexpected {
                    tag: Tag::Output,
                    ..
                }
            )))
        ),
        "{r:?}"
    );
    assert_poisoned_and_host_serves(&host, &gate, &plugin);
}

// ---- the command line --------------------------------------------------------------------------

#[test]
fn skillgate_run_prints_progress_lines_on_stderr() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "cli", &[], &[]);
        let policy_file = host.tmp.path().join("policy.json");
        let isolation = format!("{}", host.isolation).to_lowercase();
        std::fs::write(
            &policy_file,
            serde_json::to_string(&json!({
                "trusted_roots": [host.root],
                "keys": host.keys_dir(),
                "isolation": isolation,
                "worker": env!("CARGO_BIN_EXE_skillgate-worker"),
            }))
            .unwrap(),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skillgate"))
            .args(["run", "--policy"])
            .arg(&policy_file)
            .arg(&dir)
            .args(["--input", r#"{"op":"progress","n":3}"#])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("progress: "))
            .collect();
        assert_eq!(
            lines,
            [
                r#"progress: {"step":0}"#,
                r#"progress: {"step":1}"#,
                r#"progress: {"step":2}"#
            ],
            "{stderr}"
        );
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(stdout["output"]["sent"], true);
    }
}

// ---- inspection --------------------------------------------------------------------------------

#[test]
fn an_extension_export_that_is_not_a_function_is_refused_before_dlopen() {
    for host in Host::each_mode() {
        let dir = install_tools(&host, "dataext", &[], &[("HOST_EXPORT_DATA", "1")]);
        let gate = gate_allowing_read(&host);
        let e = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Inspect(skillgate::error::InspectError::ExportNotFunction {
                    name: "skillgate_plugin_host_v1",
                    ..
                })
            ),
            "{e:?}"
        );
        // Control: the same source with the function loads (and is recorded).
        let ok = install_tools(&host, "funcext", &[], &[]);
        assert!(
            gate.verify_and_load(&ok)
                .unwrap()
                .inspection()
                .exports_host_v1
        );
        host.assert_still_serves(&gate);
    }
}
