//! The workspace as a run-time grant: a host names the directory it works on when it loads a
//! plugin; a plugin whose signed manifest requests `"workspace"` gets exactly that tree (as
//! far as the policy's `sandbox.workspace` allows), and every call's `workspace_root` is it.
//!
//! The probe is the hostile plugin (`tests/plugins/hostile.c`), which opens the path its input
//! names and reports the errno; `good.c` echoes its context, so it shows `workspace_root`.
//! Every test runs in both isolation modes (`Host::each_mode`) unless it says why not, checks
//! the plugin's own report and the host's view of the files, and ends with the host still
//! serving a good plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use skillgate::error::{Error, Exposure, GrantError, SandboxError};
use skillgate::manifest::WorkspaceAccess;
use skillgate::policy::SandboxPolicy;
use skillgate::{Gate, LoadOptions, LoadedPlugin, PluginLoader, Policy, TrustStore};
use support::{Host, ctx, manifest_template};

const EACCES: i64 = libc::EACCES as i64;

// ---- fixtures ---------------------------------------------------------------------------------

/// `manifest_template(name)` with `"workspace": request` (left out when `None`).
fn manifest_asking(name: &str, request: Option<&str>) -> String {
    let mut manifest: Value = serde_json::from_str(&manifest_template(name)).unwrap();
    if let Some(r) = request {
        manifest["workspace"] = json!(r);
    }
    serde_json::to_string(&manifest).unwrap()
}

/// The host's policy allowing `allowed` of a workspace, with the hostile plugin's imports
/// allowed (a danger knob: it imports `execve` and the like on purpose; the inspector's
/// refusal of them is tested in tests/inspect.rs).
fn policy_allowing(host: &Host, allowed: WorkspaceAccess) -> Policy {
    let mut sandbox = SandboxPolicy::default();
    sandbox.workspace = allowed;
    let mut danger = host.policy().danger().clone();
    danger
        .elf_mut()
        .allow_imports(skillgate::inspect::DEFAULT_DENIED_IMPORTS.iter().copied());
    host.policy_with(|p| p.sandbox(sandbox).danger(danger))
}

/// Installs the hostile plugin as `hostile` asking for `request` of the workspace.
fn install_hostile(host: &Host, request: Option<&str>) -> PathBuf {
    let lib = host.build_with("hostile", "hostile", &[], &["-pthread"]);
    host.install_with_manifest("hostile", &lib, &manifest_asking("hostile", request))
}

/// A workspace `name` in the host's temporary directory: `notes.txt` and `src/main.c` in it.
fn workspace(host: &Host, name: &str) -> PathBuf {
    let dir = host.tmp.path().join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("notes.txt"), "the workspace's notes\n").unwrap();
    std::fs::write(dir.join("src/main.c"), "int main(void) { return 0; }\n").unwrap();
    dir.canonicalize().unwrap()
}

/// A directory `name` beside the workspace, holding `secret`; returns the file.
fn outside(host: &Host, name: &str) -> PathBuf {
    let dir = host.tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "the host's secret\n").unwrap();
    file.canonicalize().unwrap()
}

fn s(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_owned()
}

fn in_workspace(dir: &Path) -> LoadOptions {
    LoadOptions::new().workspace(dir)
}

// ---- the plugin's report ----------------------------------------------------------------------

/// The hostile plugin's account of one attempt: whether it worked, and the errno if not.
#[derive(Debug)]
struct Attempt {
    ok: bool,
    errno: i64,
    stage: String,
}

fn attempt(plugin: &LoadedPlugin, action: &str, path: &Path) -> Attempt {
    let input = json!({"action": action, "path": s(path)});
    let result = plugin
        .execute(&ctx(input.clone()))
        .unwrap_or_else(|e| panic!("the call {input} must return normally, got {e:?}"));
    assert!(result.success, "{input}: {:?}", result.error);
    let out = &result.output;
    Attempt {
        ok: out["ok"].as_bool().unwrap(),
        errno: out["errno"].as_i64().unwrap(),
        stage: out["stage"].as_str().unwrap().to_owned(),
    }
}

#[track_caller]
fn assert_allowed(a: &Attempt, what: &str) {
    assert!(
        a.ok,
        "{what}: expected success, got errno {} at {:?}",
        a.errno, a.stage
    );
}

/// Denied by Landlock when the file is opened.
#[track_caller]
fn assert_denied(a: &Attempt, what: &str) {
    assert!(!a.ok, "{what}: the sandbox let it through: {a:?}");
    assert_eq!(
        (a.stage.as_str(), a.errno),
        ("open", EACCES),
        "{what}: expected EACCES at open: {a:?}"
    );
}

/// The error a load must fail with, or a panic naming what loaded instead.
fn load_err(gate: &Gate, dir: &Path, options: &LoadOptions) -> Error {
    match gate.verify_and_load_with(dir, options) {
        Ok(_) => panic!("{} loaded; it must be refused", dir.display()),
        Err(e) => e,
    }
}

// ---- read ---------------------------------------------------------------------------------------

#[test]
fn a_read_workspace_is_readable_and_nothing_else_is() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        let secret = outside(&host, "private");
        let dir = install_hostile(&host, Some("read"));
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::Read));
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        let grant = plugin.enforcement().workspace.clone().unwrap();
        assert_eq!(
            (grant.path, grant.access),
            (ws.clone(), WorkspaceAccess::Read)
        );

        // The control: the granted tree is readable, to its depth, from the plugin's threads.
        let notes = ws.join("notes.txt");
        assert_allowed(&attempt(&plugin, "read_file", &notes), "reading notes.txt");
        let nested = ws.join("src/main.c");
        assert_allowed(
            &attempt(&plugin, "read_file", &nested),
            "reading src/main.c",
        );
        assert_allowed(
            &attempt(&plugin, "thread_read", &notes),
            "reading notes.txt from a thread the plugin started",
        );
        // Outside it, nothing: a sibling directory, the parent, the plugin's own host.
        assert_denied(&attempt(&plugin, "read_file", &secret), "reading beside it");
        let parent_file = ws.parent().unwrap().join("keys/test.pub");
        assert_denied(
            &attempt(&plugin, "read_file", &parent_file),
            "reading the host's trust store beside it",
        );
        // Read is not write: no new file, no truncation of an existing one.
        let created = ws.join("new.txt");
        assert_denied(&attempt(&plugin, "write_file", &created), "creating a file");
        assert!(
            !created.exists(),
            "the plugin created a file under a read grant"
        );
        assert_denied(
            &attempt(&plugin, "write_file", &notes),
            "overwriting notes.txt",
        );
        assert_eq!(
            std::fs::read_to_string(&notes).unwrap(),
            "the workspace's notes\n"
        );
        host.assert_still_serves(&gate);
    }
}

// ---- read_write -----------------------------------------------------------------------------

#[test]
fn a_read_write_workspace_is_writable_and_nothing_else_is() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        let secret = outside(&host, "private");
        let dir = install_hostile(&host, Some("read_write"));
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::ReadWrite));
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        assert_eq!(
            plugin.enforcement().workspace.as_ref().unwrap().access,
            WorkspaceAccess::ReadWrite
        );
        // The control: writing inside works, new files and existing ones, at depth.
        let created = ws.join("src/out.txt");
        assert_allowed(&attempt(&plugin, "write_file", &created), "creating a file");
        assert_eq!(std::fs::read_to_string(&created).unwrap(), "pwned");
        let notes = ws.join("notes.txt");
        assert_allowed(
            &attempt(&plugin, "write_file", &notes),
            "rewriting notes.txt",
        );
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "pwned");
        // Outside it, neither write nor read.
        let beside = ws.parent().unwrap().join("out.txt");
        assert_denied(
            &attempt(&plugin, "write_file", &beside),
            "creating beside it",
        );
        assert!(!beside.exists(), "the plugin wrote outside its workspace");
        assert_denied(
            &attempt(&plugin, "write_file", &secret),
            "overwriting beside it",
        );
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "the host's secret\n"
        );
        assert_denied(&attempt(&plugin, "read_file", &secret), "reading beside it");
        host.assert_still_serves(&gate);
    }
}

// ---- what the policy allows -----------------------------------------------------------------

#[test]
fn a_manifest_asking_more_than_the_policy_allows_is_refused() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        for (request, allowed, requested) in [
            (
                "read_write",
                WorkspaceAccess::Read,
                WorkspaceAccess::ReadWrite,
            ),
            (
                "read_write",
                WorkspaceAccess::None,
                WorkspaceAccess::ReadWrite,
            ),
            ("read", WorkspaceAccess::None, WorkspaceAccess::Read),
        ] {
            let dir = install_hostile(&host, Some(request));
            let gate = host.gate_with(policy_allowing(&host, allowed));
            // With the workspace named and without: the mismatch is the manifest's and the
            // policy's, whatever this load brings.
            for options in [in_workspace(&ws), LoadOptions::new()] {
                let err = load_err(&gate, &dir, &options);
                assert!(
                    matches!(
                        err,
                        Error::Sandbox(SandboxError::WorkspaceNotAllowed { requested: r, allowed: a })
                            if r == requested && a == allowed
                    ),
                    "{request} under {allowed}: {err:?}"
                );
                let text = err.to_string();
                assert!(
                    text.contains(&requested.to_string()) && text.contains(&allowed.to_string()),
                    "{text}"
                );
            }
            host.assert_still_serves(&gate);
        }
        // The control: the same request under a policy allowing it loads.
        let dir = install_hostile(&host, Some("read_write"));
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::ReadWrite));
        gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        // A policy allowing more than asked grants only what was asked.
        let dir = install_hostile(&host, Some("read"));
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        let created = ws.join("new.txt");
        assert_denied(
            &attempt(&plugin, "write_file", &created),
            "writing a workspace the manifest asked to read",
        );
        assert!(!created.exists());
    }
}

#[test]
fn no_grant_without_both_a_request_and_a_named_workspace() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        let notes = ws.join("notes.txt");
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::ReadWrite));

        // A workspace named for a plugin that asked none: nothing of it is granted.
        let dir = install_hostile(&host, None);
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        assert_eq!(plugin.enforcement().workspace, None);
        assert_denied(
            &attempt(&plugin, "read_file", &notes),
            "reading a workspace the manifest never asked for",
        );
        drop(plugin);

        // A plugin that asks, loaded by a host that names none: nothing is granted.
        let dir = install_hostile(&host, Some("read"));
        let plugin = gate.verify_and_load(&dir).unwrap();
        assert_eq!(plugin.enforcement().workspace, None);
        assert_denied(
            &attempt(&plugin, "read_file", &notes),
            "reading a workspace the host never named",
        );
        // The control: the same plugin, the workspace named, reads it.
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        assert_allowed(
            &attempt(&plugin, "read_file", &notes),
            "reading it once named",
        );
        host.assert_still_serves(&gate);
    }
}

// ---- workspace_root -------------------------------------------------------------------------

#[test]
fn workspace_root_is_the_granted_directory() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        // Named through a symlink and a `..`: the grant and workspace_root are canonical.
        let link = host.tmp.path().join("project-link");
        std::os::unix::fs::symlink(&ws, &link).unwrap();
        let named = link.join("src/..");
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::Read));
        let lib = host.build("good", "reader", &[]);
        let dir =
            host.install_with_manifest("reader", &lib, &manifest_asking("reader", Some("read")));
        let plugin = gate
            .verify_and_load_with(&dir, &in_workspace(&named))
            .unwrap();
        assert_eq!(plugin.enforcement().workspace.as_ref().unwrap().path, ws);

        let echoed_root = |plugin: &LoadedPlugin, given: Option<&str>| -> Value {
            let mut c = ctx(json!({}));
            c.workspace_root = given.map(str::to_owned);
            let result = plugin.execute(&c).unwrap();
            result.output["echo"]["workspace_root"].clone()
        };
        // Whatever the caller passes, the plugin is told the directory it was granted.
        for given in [Some("/somewhere/else"), None, Some(s(&ws).as_str())] {
            assert_eq!(echoed_root(&plugin, given), json!(s(&ws)), "{given:?}");
        }
        // A plugin without a grant is told what the caller passed.
        let plain = host.build("good", "plain", &[]);
        let dir = host.install("plain", &plain);
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        assert_eq!(
            echoed_root(&plugin, Some("/somewhere/else")),
            json!("/somewhere/else")
        );
        assert_eq!(echoed_root(&plugin, None), Value::Null);
        host.assert_still_serves(&gate);
    }
}

// ---- the workspace is held by descriptor ------------------------------------------------------

#[test]
fn a_workspace_swapped_for_a_symlink_after_load_grants_nothing_new() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        let secret = outside(&host, "private");
        let dir = install_hostile(&host, Some("read"));
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::Read));
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        assert_allowed(
            &attempt(&plugin, "read_file", &ws.join("notes.txt")),
            "reading the workspace before the swap",
        );
        // The path now names the secret's directory; the grant is the directory opened.
        std::fs::rename(&ws, ws.with_file_name("project-moved")).unwrap();
        std::os::unix::fs::symlink(secret.parent().unwrap(), &ws).unwrap();
        assert_denied(
            &attempt(&plugin, "read_file", &ws.join("secret")),
            "reading through the workspace's path once it is a symlink elsewhere",
        );
        // The moved directory is still the one granted.
        assert_allowed(
            &attempt(
                &plugin,
                "read_file",
                &ws.with_file_name("project-moved/notes.txt"),
            ),
            "reading the granted directory where it moved",
        );
        host.assert_still_serves(&gate);
    }
}

// ---- refusals of the workspace itself -----------------------------------------------------------

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_workspace_others_can_write_to_is_refused_at_load() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        let dir = install_hostile(&host, Some("read"));
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::Read));
        set_mode(&ws, 0o777);
        let err = load_err(&gate, &dir, &in_workspace(&ws));
        match &err {
            Error::Sandbox(SandboxError::Grant(GrantError::WritableByOthers(w))) => {
                assert_eq!(w.path, ws, "{w}");
                assert_eq!((w.mode, w.exposure), (0o777, Exposure::WorldWritable));
            }
            _ => panic!("expected WritableByOthers, got {err:?}"),
        }
        // The control: with a safe mode it loads and is read.
        set_mode(&ws, 0o755);
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        assert_allowed(
            &attempt(&plugin, "read_file", &ws.join("notes.txt")),
            "reading it",
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_missing_or_non_directory_workspace_is_refused() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        let dir = install_hostile(&host, Some("read"));
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::Read));
        let missing = ws.join("missing");
        let err = load_err(&gate, &dir, &in_workspace(&missing));
        assert!(
            matches!(
                &err,
                Error::Sandbox(SandboxError::Grant(GrantError::Open { path, source }))
                    if *path == missing && source.raw_os_error() == libc::ENOENT
            ),
            "{err:?}"
        );
        let file = ws.join("notes.txt");
        let err = load_err(&gate, &dir, &in_workspace(&file));
        assert!(
            matches!(
                &err,
                Error::Sandbox(SandboxError::Grant(GrantError::NotADirectory { path })) if *path == file
            ),
            "{err:?}"
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_writable_workspace_overlapping_what_decides_the_code_is_refused() {
    for host in Host::each_mode() {
        let dir = install_hostile(&host, Some("read_write"));
        let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::ReadWrite));
        let tmp = host.tmp.path().canonicalize().unwrap();
        // Holding the trust store and the trusted root: a plugin could add a key.
        let err = load_err(&gate, &dir, &in_workspace(&tmp));
        assert!(
            matches!(
                &err,
                Error::Sandbox(SandboxError::Grant(GrantError::Protected { path, .. })) if *path == tmp
            ),
            "{err:?}"
        );
        // Inside the trusted root: a plugin could rewrite other plugins.
        let inside_root = host.root.canonicalize().unwrap();
        let err = load_err(&gate, &dir, &in_workspace(&inside_root));
        assert!(
            matches!(
                &err,
                Error::Sandbox(SandboxError::Grant(GrantError::Protected { protected, .. }))
                    if *protected == inside_root
            ),
            "{err:?}"
        );
        // Reading it is harmless: the same directory as a read workspace loads.
        let reader = install_hostile(&host, Some("read"));
        gate.verify_and_load_with(&reader, &in_workspace(&tmp))
            .unwrap();
        // The control: a workspace beside them loads read-write.
        let ws = workspace(&host, "project");
        gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_workspace_reached_through_a_symlink_in_a_read_write_grant_is_refused() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        // A policy read-write grant where some plugin could have renamed a symlink into place.
        let scratch = host.tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let planted = scratch.join("link");
        std::os::unix::fs::symlink(&ws, &planted).unwrap();
        let mut policy = policy_allowing(&host, WorkspaceAccess::Read);
        let mut sandbox = policy.sandbox().clone();
        sandbox.read_write.push(scratch.canonicalize().unwrap());
        policy = policy.to_builder().sandbox(sandbox).build().unwrap();
        let dir = install_hostile(&host, Some("read"));
        let gate = host.gate_with(policy);
        let err = load_err(&gate, &dir, &in_workspace(&planted));
        assert!(
            matches!(
                &err,
                Error::Sandbox(SandboxError::Grant(GrantError::ThroughWritableSymlink { path }))
                    if *path == planted
            ),
            "{err:?}"
        );
        // The control: the same directory named directly loads.
        let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
        assert_allowed(
            &attempt(&plugin, "read_file", &ws.join("notes.txt")),
            "reading it",
        );
        host.assert_still_serves(&gate);
    }
}

// ---- the other ways a host names it -------------------------------------------------------------

#[test]
fn plugin_loader_loads_in_a_workspace() {
    for host in Host::each_mode() {
        let ws = workspace(&host, "project");
        let lib = host.build("good", "reader", &[]);
        let dir =
            host.install_with_manifest("reader", &lib, &manifest_asking("reader", Some("read")));
        let trust = TrustStore::load_dir(&host.keys_dir()).unwrap();
        let loader = PluginLoader::with_trust(policy_allowing(&host, WorkspaceAccess::Read), trust);
        let plugin = loader.load_plugin_in_workspace(&dir, &ws).unwrap();
        let result = plugin.execute(&ctx(json!({}))).unwrap();
        assert_eq!(result.output["echo"]["workspace_root"], json!(s(&ws)));
        // Without it, the caller's workspace_root stays.
        let plugin = loader.load_plugin(&dir).unwrap();
        let result = plugin.execute(&ctx(json!({}))).unwrap();
        assert_eq!(result.output["echo"]["workspace_root"], Value::Null);
    }
}

/// `skillgate run --workspace DIR`. Process mode only, the default of a policy file: the flag
/// is turned into the same load options whatever the isolation, which the tests above cover
/// in both modes.
#[test]
fn skillgate_run_grants_the_workspace_it_is_given() {
    let host = Host::process();
    let ws = workspace(&host, "project");
    let dir = install_hostile(&host, Some("read"));
    let policy_file = host.tmp.path().join("policy.json");
    let policy = json!({
        "trusted_roots": [host.root],
        "keys": host.keys_dir(),
        "isolation": "process",
        "worker": env!("CARGO_BIN_EXE_skillgate-worker"),
        "sandbox": {"workspace": "read"},
        "danger": {"elf": {"allow_imports": skillgate::inspect::DEFAULT_DENIED_IMPORTS}},
    });
    std::fs::write(&policy_file, policy.to_string()).unwrap();
    let notes = ws.join("notes.txt");
    let input = json!({"action": "read_file", "path": s(&notes)}).to_string();
    let run = |workspace: Option<&Path>| -> Value {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillgate"));
        cmd.arg("run")
            .arg(&dir)
            .arg("--policy")
            .arg(&policy_file)
            .args(["--input", &input]);
        if let Some(w) = workspace {
            cmd.arg("--workspace").arg(w);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let granted = run(Some(&ws));
    assert_eq!(granted["output"]["ok"], json!(true), "{granted}");
    let denied = run(None);
    assert_eq!(
        (&denied["output"]["ok"], &denied["output"]["errno"]),
        (&json!(false), &json!(EACCES)),
        "{denied}"
    );
}

/// The enforcement report is the worker's word; the workspace it names must be the one the
/// host's plan grants. Process mode only: thread mode has no worker to report.
#[test]
fn a_worker_reporting_a_workspace_the_host_did_not_grant_is_refused() {
    let host = Host::process();
    let ws = workspace(&host, "project");
    // A stand-in worker: reads the host's first frame, sends `report` and waits.
    let lying_worker = |report: &Value| -> Gate {
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
left = struct.unpack("<I", header[:4])[0] - 9
while left > 0:
    left -= len(os.read(4, left))
payload = {payload:?}.encode()
os.write(4, struct.pack("<IBQ", len(payload) + 9, {tag}, 0) + payload)
time.sleep(60)
"#,
                payload = report.to_string(),
                tag = skillgate::error::Tag::Restricted as u8,
            ),
        )
        .unwrap();
        set_mode(&script, 0o755);
        let policy = policy_allowing(&host, WorkspaceAccess::ReadWrite)
            .to_builder()
            .worker(&script)
            .build()
            .unwrap();
        host.gate_with(policy)
    };
    let claims = |workspace: Value| {
        json!({
            "isolation": "process", "landlock_abi": 7, "landlock": "fully_enforced",
            "seccomp": true, "seccomp_instructions": 100, "no_new_privs": true,
            "fs_rules": 0, "net_rules": 0, "read": [], "read_write": [], "connect_tcp": [],
            "loader_read": [], "namespaces": [], "tasks": {"by": "no_threads"},
            "workspace": workspace
        })
    };
    let root_rw = json!({"path": "/", "access": "read_write"});
    let ws_read = json!({"path": ws, "access": "read"});
    for (request, named, claim) in [
        // Claims a grant the host never made.
        (None, true, root_rw.clone()),
        (Some("read"), false, ws_read.clone()),
        // Claims more, or another directory, than the grant made.
        (
            Some("read"),
            true,
            json!({"path": ws, "access": "read_write"}),
        ),
        (Some("read"), true, json!({"path": "/", "access": "read"})),
        // Claims none where one was made.
        (Some("read"), true, Value::Null),
    ] {
        let dir = host.install_with_manifest(
            "reported",
            &host.build("good", "reported", &[]),
            &manifest_asking("reported", request),
        );
        let options = if named {
            in_workspace(&ws)
        } else {
            LoadOptions::new()
        };
        let err = load_err(&lying_worker(&claims(claim.clone())), &dir, &options);
        assert!(
            matches!(
                err,
                Error::Fault(skillgate::error::FaultError::Protocol(
                    skillgate::error::ProtocolViolation::Unconfirmed {
                        what: "workspace",
                        ..
                    }
                ))
            ),
            "{request:?}, named {named}, claim {claim}: {err:?}"
        );
    }
    // The control: the real worker's report of the same grant is confirmed.
    let dir = install_hostile(&host, Some("read"));
    let gate = host.gate_with(policy_allowing(&host, WorkspaceAccess::Read));
    let plugin = gate.verify_and_load_with(&dir, &in_workspace(&ws)).unwrap();
    assert_eq!(plugin.enforcement().workspace.as_ref().unwrap().path, ws);
    host.assert_still_serves(&gate);
}
