//! Every refusal explained to a machine (issue 13, item 7): `verify --json` and `run --json`
//! print one object with each stage's verdict as the pipeline ran it, and no error line
//! repeats itself, on the command line or through an error's `source()` chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use skillgate::error::{AbiError, FaultError, InspectError, IntegrityError, SignatureError};
use skillgate::{Error, Isolation, Stage};
use support::Host;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The host's policy as a file, for the command line: its root, keys, isolation and worker.
fn policy_file(host: &Host) -> PathBuf {
    let isolation = match host.isolation {
        Isolation::Process => "process",
        _ => "thread",
    };
    let path = host.tmp.path().join(format!("policy-{isolation}.json"));
    let policy = serde_json::json!({
        "trusted_roots": [host.root],
        "keys": host.keys_dir(),
        "isolation": isolation,
        "worker": env!("CARGO_BIN_EXE_skillgate-worker"),
    });
    std::fs::write(&path, policy.to_string()).unwrap();
    path
}

fn skillgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skillgate"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `skillgate <command> DIR --policy P --json [extra]` and parses stdout as one
/// JSON object (the whole of stdout: nothing else may be printed there).
fn verdicts(command: &str, host: &Host, dir: &Path, extra: &[&str]) -> (Output, Value) {
    let policy = policy_file(host);
    let mut args = vec![command, s(dir), "--policy", s(&policy), "--json"];
    args.extend_from_slice(extra);
    let out = skillgate(&args);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    assert_eq!(doc["format"], "skillgate-verdict-v1");
    assert_eq!(doc["command"], command);
    assert_eq!(doc["exit_code"], out.status.code().unwrap());
    assert_eq!(doc["ok"], out.status.success());
    (out, doc)
}

/// The stage names in order, each with its `ok`.
fn oks(doc: &Value) -> Vec<(String, Value)> {
    doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| (st["stage"].as_str().unwrap().to_owned(), st["ok"].clone()))
        .collect()
}

fn stage<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name}: {doc}"))
}

/// Every stage a command plans, `setup` first, in the pipeline's order.
fn planned(command: &str) -> Vec<String> {
    let last = if command == "run" {
        Stage::Call
    } else {
        Stage::Inspect
    };
    let mut names = vec!["setup".to_owned()];
    names.extend(
        Stage::ALL
            .iter()
            .filter(|st| **st <= last)
            .map(|st| st.name().to_owned()),
    );
    names
}

/// Stages before `refused` passed, `refused` did not, every later one was not run.
fn assert_refused_at(doc: &Value, command: &str, refused: &str) {
    let names = planned(command);
    let at = names.iter().position(|n| n == refused).unwrap();
    let expected: Vec<(String, Value)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ok = match i.cmp(&at) {
                std::cmp::Ordering::Less => Value::Bool(true),
                std::cmp::Ordering::Equal => Value::Bool(false),
                std::cmp::Ordering::Greater => Value::Null,
            };
            (n.clone(), ok)
        })
        .collect();
    assert_eq!(oks(doc), expected, "{doc:#}");
    assert_eq!(doc["refusal"]["stage"], refused, "{doc:#}");
    for later in &names[at + 1..] {
        assert!(
            stage(doc, later)["detail"]
                .as_str()
                .unwrap()
                .starts_with("not run")
        );
    }
}

#[test]
fn a_good_plugin_passes_every_stage_and_run_reports_enforcement_and_result() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "fine");
        let (out, doc) = verdicts("verify", &host, &dir, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let all_ok: Vec<(String, Value)> = planned("verify")
            .into_iter()
            .map(|n| (n, Value::Bool(true)))
            .collect();
        assert_eq!(oks(&doc), all_ok, "{doc:#}");
        assert_eq!(doc["plugin"]["name"], "fine");
        assert_eq!(doc["refusal"], Value::Null);
        assert_eq!(doc["enforcement"], Value::Null, "verify loads nothing");
        let checks = stage(&doc, "inspect")["checks"].as_array().unwrap();
        assert!(
            checks
                .iter()
                .any(|c| c["check"] == "relro" && c["status"] == "pass")
        );

        let (out, doc) = verdicts("run", &host, &dir, &["--input", r#"{"q":42}"#]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let all_ok: Vec<(String, Value)> = planned("run")
            .into_iter()
            .map(|n| (n, Value::Bool(true)))
            .collect();
        assert_eq!(oks(&doc), all_ok, "{doc:#}");
        for st in doc["stages"].as_array().unwrap() {
            assert_eq!(st["fix"], Value::Null);
        }
        let isolation = match host.isolation {
            Isolation::Process => "process",
            _ => "thread",
        };
        assert_eq!(doc["enforcement"]["isolation"], isolation);
        assert_eq!(doc["enforcement"]["landlock"], "fully_enforced");
        assert_eq!(doc["enforcement"]["seccomp"], true);
        let result: skillgate::PluginResult =
            serde_json::from_value(doc["result"].clone()).unwrap();
        assert!(result.success);
        assert_eq!(result.output["echo"]["input"]["q"], 42);
    }
}

#[test]
fn a_tampered_library_is_refused_at_digests_and_nothing_after_runs() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "tampered");
        let lib = dir.join("libtampered.so");
        let mut bytes = std::fs::read(&lib).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&lib, bytes).unwrap();
        let (out, doc) = verdicts("run", &host, &dir, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_refused_at(&doc, "run", "digests");
        assert_eq!(doc["refusal"]["kind"], "integrity");
        assert!(
            stage(&doc, "digests")["detail"]
                .as_str()
                .unwrap()
                .contains("sha256 of \"libtampered.so\"")
        );
        assert!(
            stage(&doc, "digests")["fix"]
                .as_str()
                .unwrap()
                .contains("re-sign")
        );
        assert_eq!(doc["enforcement"], Value::Null);
        assert_eq!(doc["result"], Value::Null);
        // The same refusal through the library names the same stage and variant.
        let err = host.gate().verify_staged(&dir).unwrap_err();
        assert_eq!(err.stage, Stage::Digests);
        assert!(matches!(
            err.error,
            Error::Integrity(IntegrityError::HashMismatch { .. })
        ));
        host.assert_still_serves(&host.gate());
    }
}

/// The stage comes from where the pipeline was, not from the error's type: a symlink in
/// the directory is a `LocateError`, met while the files are listed after the signature
/// and the trust rules passed, so `digests` refused it. A symlink given as the plugin path
/// itself is refused by `locate`.
#[test]
fn the_refusing_stage_is_where_the_pipeline_was_not_the_errors_type() {
    let host = Host::new();
    let dir = host.plugin("good", "linked");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("stray")).unwrap();
    let (out, doc) = verdicts("verify", &host, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_refused_at(&doc, "verify", "digests");
    assert_eq!(doc["refusal"]["kind"], "locate");
    let err = host.gate().verify_staged(&dir).unwrap_err();
    assert_eq!(err.stage, Stage::Digests);
    assert!(matches!(err.error, Error::Locate(_)));

    let link = host.root.join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let (out, doc) = verdicts("verify", &host, &link, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_refused_at(&doc, "verify", "locate");
    assert_eq!(doc["refusal"]["kind"], "locate");
    host.assert_still_serves(&host.gate());
}

#[test]
fn an_unsigned_plugin_is_refused_at_the_manifest_with_the_fix() {
    let host = Host::new();
    let dir = host.plugin("good", "unsigned");
    std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
    let (out, doc) = verdicts("verify", &host, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_refused_at(&doc, "verify", "manifest");
    assert_eq!(doc["refusal"]["kind"], "signature");
    assert_eq!(
        doc["plugin"],
        Value::Null,
        "nothing unsigned is reported as the plugin"
    );
    let fix = stage(&doc, "manifest")["fix"].as_str().unwrap();
    assert!(fix.contains("skill-sign sign"), "{fix}");
    let err = host.gate().verify_staged(&dir).unwrap_err();
    assert_eq!(err.stage, Stage::Manifest);
    assert!(matches!(
        err.error,
        Error::Signature(SignatureError::Missing)
    ));
    host.assert_still_serves(&host.gate());
}

#[test]
fn an_elf_refusal_is_refused_at_inspect_with_the_checks_fix() {
    let host = Host::new();
    // Lazy binding: partial RELRO, which the default ELF policy refuses.
    let lib = host.build_with("good", "lazy", &[], &["-Wl,-z,lazy"]);
    let dir = host.install("lazy", &lib);
    let (out, doc) = verdicts("run", &host, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_refused_at(&doc, "run", "inspect");
    assert_eq!(doc["refusal"]["kind"], "inspect");
    let err = host.gate().verify_and_inspect_staged(&dir).unwrap_err();
    assert_eq!(err.stage, Stage::Inspect);
    let Error::Inspect(inspect @ InspectError::WeakRelro { .. }) = &err.error else {
        panic!("expected Inspect(WeakRelro), got {:?}", err.error);
    };
    let entry = stage(&doc, "inspect");
    assert_eq!(entry["fix"], inspect.fix());
    assert_eq!(doc["refusal"]["fix"], inspect.fix());
    assert!(inspect.fix().contains("-z,now"), "{}", inspect.fix());
    assert_eq!(entry["checks"][0]["check"], "relro");
    assert_eq!(entry["checks"][0]["status"], "fail");
    host.assert_still_serves(&host.gate());
}

#[test]
fn load_and_call_refusals_name_their_stage_in_both_modes() {
    for host in Host::each_mode() {
        // The metadata names another plugin: refused after dlopen, at load.
        let dir = host.plugin("wrong_name", "misnamed");
        let (out, doc) = verdicts("run", &host, &dir, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_refused_at(&doc, "run", "load");
        assert_eq!(doc["refusal"]["kind"], "abi");
        let inspected = host.gate().verify_and_inspect(&dir).unwrap();
        let err = host.gate().load_staged(inspected).unwrap_err();
        assert_eq!(err.stage, Stage::Load);
        assert!(matches!(
            err.error,
            Error::Abi(AbiError::MetadataMismatch { field: "name", .. })
        ));

        // The call returns text that is not JSON: a fault, at call, exit 3.
        let dir = host.plugin("result_not_json", "notjson");
        let (out, doc) = verdicts("run", &host, &dir, &[]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_refused_at(&doc, "run", "call");
        assert_eq!(doc["refusal"]["class"], "fault");
        assert_eq!(doc["result"], Value::Null);
        assert_eq!(doc["enforcement"]["seccomp"], true, "it was loaded");
        host.assert_still_serves(&host.gate());
    }
}

/// A grant others can write to is the sandbox's refusal: `sandbox` refused, nothing loaded.
/// Control: the same plugin and grant, made private, loads and reports the rule.
#[test]
fn a_sandbox_refusal_is_refused_at_sandbox_before_anything_loads() {
    use std::os::unix::fs::PermissionsExt;
    for host in Host::each_mode() {
        let shared = host.tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let shared = shared.canonicalize().unwrap();
        let lib = host.build("good", "granted", &[]);
        let manifest = support::manifest_template("granted").replace(
            r#""thread_safe":false}"#,
            &format!(
                r#""thread_safe":false,"capabilities":{{"read":[{}]}}}}"#,
                serde_json::to_string(&shared).unwrap()
            ),
        );
        let dir = host.install_with_manifest("granted", &lib, &manifest);
        let policy = policy_file(&host);
        let mut with_grant: Value =
            serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
        with_grant["sandbox"] = serde_json::json!({ "read": [shared] });
        std::fs::write(&policy, with_grant.to_string()).unwrap();
        let out = skillgate(&["run", s(&dir), "--policy", s(&policy), "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_refused_at(&doc, "run", "sandbox");
        assert_eq!(doc["refusal"]["kind"], "sandbox");
        assert_eq!(doc["enforcement"], Value::Null);
        let gate = host.gate_with(host.policy_with(|b| {
            b.sandbox({
                let mut sandbox = skillgate::policy::SandboxPolicy::default();
                sandbox.read.push(shared.clone());
                sandbox
            })
        }));
        let err = gate
            .load_staged(gate.verify_and_inspect(&dir).unwrap())
            .unwrap_err();
        assert_eq!(err.stage, Stage::Sandbox);
        assert!(matches!(
            err.error,
            Error::Sandbox(skillgate::error::SandboxError::Grant(
                skillgate::error::GrantError::WritableByOthers(_)
            ))
        ));
        // Control: private, the grant is given and the plugin runs.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = skillgate(&["run", s(&dir), "--policy", s(&policy), "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["enforcement"]["read"], serde_json::json!([shared]));
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_setup_failure_is_still_one_object() {
    let host = Host::new();
    let dir = host.plugin("good", "setup");
    let missing = host.tmp.path().join("missing.json");
    let out = skillgate(&["verify", s(&dir), "--policy", s(&missing), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_refused_at(&doc, "verify", "setup");
    assert_eq!(doc["refusal"]["class"], "usage");
    let policy = policy_file(&host);
    let out = skillgate(&[
        "run",
        s(&dir),
        "--policy",
        s(&policy),
        "--json",
        "--input",
        "[1,",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_refused_at(&doc, "run", "setup");
}

// ---------------------------------------------------------------------------------------
// No error line repeats itself.

/// Fails if `text` has a line twice, or a `": "`-separated segment twice within a line.
fn assert_no_repeats(text: &str, what: &str) {
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for line in &lines {
        assert!(seen.insert(*line), "{what}: line repeated: {text}");
        let mut segments = std::collections::BTreeSet::new();
        for segment in line.split(": ") {
            assert!(
                segments.insert(segment.trim()),
                "{what}: segment {segment:?} repeated in {line:?}"
            );
        }
    }
}

/// An error as a printer that walks the source chain shows it (anyhow's `{:#}`).
fn with_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// The stage error inside an [`Error`], as a `std::error::Error`.
fn stage_error(e: &Error) -> &(dyn std::error::Error + 'static) {
    match e {
        Error::Policy(e) => e,
        Error::Key(e) => e,
        Error::Locate(e) => e,
        Error::Signature(e) => e,
        Error::Trust(e) => e,
        Error::Manifest(e) => e,
        Error::Integrity(e) => e,
        Error::Inspect(e) => e,
        Error::Sandbox(e) => e,
        Error::Load(e) => e,
        Error::Abi(e) => e,
        Error::Fault(e) => e,
        Error::Input(e) => e,
        other => panic!("a variant this test does not know: {other:?}"),
    }
}

/// A plugin whose `vtcode_plugin_metadata` returns `metadata` (a C string literal).
fn metadata_plugin(host: &Host, name: &str, metadata: &str) -> PathBuf {
    let src = host.tmp.path().join(format!("{name}.c"));
    std::fs::write(
        &src,
        format!(
            "#include \"common.h\"\n\
             EXPORT uint32_t vtcode_plugin_version(void) {{ return 1; }}\n\
             EXPORT const char *vtcode_plugin_metadata(void) {{ return sg_strdup({metadata}); }}\n\
             EXPORT const char *vtcode_plugin_execute(const char *c) {{ (void)c; return sg_strdup(\"{{}}\"); }}\n\
             EXPORT void vtcode_plugin_free_string(const char *s) {{ free((void *)s); }}\n"
        ),
    )
    .unwrap();
    let include = format!(
        "-I{}",
        support::build::repo_root().join("tests/plugins").display()
    );
    let lib = support::build::build_c_plugin(
        &src,
        &host.build_dir.join(name).join(format!("lib{name}.so")),
        &[("PLUGIN_NAME", &format!("\"{name}\""))],
        &[&include],
    );
    host.install(name, &lib)
}

#[test]
fn no_error_line_repeats_itself() {
    type Expect = fn(&Error) -> bool;
    for host in Host::each_mode() {
        let mode = format!("{:?}", host.isolation);
        let tampered = host.plugin("good", "tampered");
        std::fs::write(tampered.join("libtampered.so"), b"not the signed bytes").unwrap();
        let unsigned = host.plugin("good", "unsigned");
        std::fs::remove_file(unsigned.join("plugin.json.sig")).unwrap();
        let lazy = host.build_with("good", "lazy", &[], &["-Wl,-z,lazy"]);
        let lazy = host.install("lazy", &lazy);
        let table: Vec<(PathBuf, Option<i32>, Expect)> = vec![
            (host.plugin("result_not_json", "notjson"), Some(3), |e| {
                matches!(e, Error::Fault(FaultError::NotJson { .. }))
            }),
            (host.plugin("result_null", "null"), Some(3), |e| {
                matches!(e, Error::Fault(FaultError::NullResult { .. }))
            }),
            (host.plugin("wrong_name", "misnamed"), Some(1), |e| {
                matches!(e, Error::Abi(AbiError::MetadataMismatch { .. }))
            }),
            (
                metadata_plugin(&host, "metajson", "\"not json\""),
                Some(1),
                |e| {
                    matches!(
                        e,
                        Error::Abi(AbiError::Metadata(FaultError::NotJson { .. }))
                    )
                },
            ),
            (tampered, Some(1), |e| {
                matches!(e, Error::Integrity(IntegrityError::SizeMismatch { .. }))
            }),
            (unsigned, Some(1), |e| {
                matches!(e, Error::Signature(SignatureError::Missing))
            }),
            (lazy, Some(1), |e| {
                matches!(e, Error::Inspect(InspectError::WeakRelro { .. }))
            }),
        ];
        let policy = policy_file(&host);
        let gate = host.gate();
        for (dir, code, expect) in table {
            let what = format!("{mode} {}", dir.display());
            // Through the command line: one line, nothing said twice.
            let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
            assert_eq!(out.status.code(), code, "{what}: {}", stderr(&out));
            assert_eq!(stderr(&out).lines().count(), 1, "{what}: {}", stderr(&out));
            assert_no_repeats(&stderr(&out), &what);
            // Through the library: the exact variant, then its message and the stage
            // error's source chain as a chain-walking printer shows it.
            let err = match gate.verify_and_load(&dir) {
                Ok(plugin) => plugin
                    .execute(&skillgate::PluginContext::default())
                    .unwrap_err(),
                Err(e) => e,
            };
            assert!(expect(&err), "{what}: {err:?}");
            assert!(std::error::Error::source(&err).is_none());
            assert_no_repeats(&err.to_string(), &what);
            assert_no_repeats(&with_chain(stage_error(&err)), &what);
            // The printed message holds the whole chain.
            assert_eq!(
                err.to_string(),
                format!("{}: {}", err.kind(), err.detail()),
                "{what}"
            );
        }
        // A policy that is not JSON, through the command line and the library.
        let bad = host.tmp.path().join("bad-policy.json");
        std::fs::write(&bad, "{\"keys\": tru}").unwrap();
        let out = skillgate(&["verify", s(&host.root), "--policy", s(&bad)]);
        assert_eq!(out.status.code(), Some(2));
        assert_no_repeats(&stderr(&out), "bad policy");
        let err = skillgate::Policy::from_file(&bad).unwrap_err();
        assert_no_repeats(&with_chain(&err), "bad policy");
        host.assert_still_serves(&gate);
    }
}

/// The printed chain still holds what a `source()` carries: an I/O error's text reaches
/// the message once, from the source, though the stage error's own message leaves it out.
#[test]
fn an_io_source_reaches_the_message_once() {
    let host = Host::process();
    let policy = host.policy_with(|b| b.worker(host.tmp.path().join("not-executable")));
    std::fs::write(host.tmp.path().join("not-executable"), b"#!/bin/false\n").unwrap();
    let gate = host.gate_with(policy);
    let dir = host.plugin("good", "noexec");
    let err = gate.verify_and_load(&dir).unwrap_err();
    let Error::Load(skillgate::error::LoadError::WorkerStart { source, .. }) = &err else {
        panic!("expected Load(WorkerStart), got {err:?}");
    };
    let io_text = source.to_string();
    let text = err.to_string();
    assert_eq!(text.matches(&io_text).count(), 1, "{text}");
    assert_no_repeats(&text, "worker start");
    host.assert_still_serves(&host.gate());
}
