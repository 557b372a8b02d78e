//! The two command lines, driven as a user would: exit codes, stdout, one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Host, manifest_template};

fn skillgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skillgate"))
        .args(args)
        .output()
        .unwrap()
}

fn skill_sign(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skill-sign"))
        .args(args)
        .env_remove("SKILLGATE_PASSWORD")
        .output()
        .unwrap()
}

fn keygen(secret: &Path, public: &Path) -> Output {
    skill_sign(&[
        "keygen",
        "--unencrypted",
        "--secret-key",
        s(secret),
        "--public-key",
        s(public),
    ])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A host laid out on disk with a policy file: root/, keys/, policy.json.
fn host_with_policy() -> (Host, std::path::PathBuf) {
    let host = Host::new();
    let policy = host.tmp.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"trusted_roots":["root"],"keys":"keys","isolation":"thread"}"#,
    )
    .unwrap();
    (host, policy)
}

#[test]
fn keygen_sign_verify_and_run_through_the_command_lines() {
    let (host, policy) = host_with_policy();
    let keys = host.tmp.path().join("cli-keys");
    std::fs::create_dir(&keys).unwrap();
    let (sk, pk) = (host.tmp.path().join("a.key"), keys.join("a.pub"));
    let out = keygen(&sk, &pk);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed_id = String::from_utf8(out.stdout).unwrap();
    let out = skill_sign(&["key-id", s(&pk)]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), printed_id);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let lib = host.build("good", "cli", &[]);
    let dir = host.root.join("cli");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&lib, dir.join("libcli.so")).unwrap();
    std::fs::write(dir.join("plugin.json"), manifest_template("cli")).unwrap();
    let out = skill_sign(&["sign", s(&dir), "--secret-key", s(&sk)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = skill_sign(&["verify", s(&dir), "--public-key", s(&pk)]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = skillgate(&[
        "verify",
        s(&dir),
        "--policy",
        s(&policy),
        "--keys",
        s(&keys),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = skillgate(&[
        "run",
        s(&dir),
        "--policy",
        s(&policy),
        "--keys",
        s(&keys),
        "--input",
        r#"{"q":42}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result: skillgate::PluginResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result.output["echo"]["input"]["q"], 42);

    // Without --keys the policy's own trust store (host.key only) is used: refused.
    let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("signature:"), "{}", stderr(&out));
}

#[test]
fn a_second_key_adds_a_signature_and_either_key_verifies() {
    let host = Host::new();
    let dir = host.plugin("good", "twice");
    let other = host.tmp.path().join("b.key");
    let other_pub = host.tmp.path().join("b.pub");
    let out = keygen(&other, &other_pub);
    assert!(out.status.success());
    let before = std::fs::read(dir.join("plugin.json")).unwrap();
    let out = skill_sign(&["sign", s(&dir), "--secret-key", s(&other)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dir.join("plugin.json")).unwrap(),
        before,
        "the manifest must not change"
    );
    let sigs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("plugin.json.sig")).unwrap()).unwrap();
    assert_eq!(sigs["signatures"].as_array().unwrap().len(), 2);
    let first_pub = host.keys_dir().join("test.pub");
    for pk in [&first_pub, &other_pub] {
        let out = skill_sign(&["verify", s(&dir), "--public-key", s(pk)]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn exit_codes_separate_refusal_usage_and_fault() {
    let (host, policy) = host_with_policy();
    let good = host.plugin("good", "fine");
    let faulty = host.plugin("result_null", "faulty");
    let tampered = host.plugin("good", "tampered");
    std::fs::write(tampered.join("extra.txt"), "x").unwrap();

    let out = skillgate(&["run", s(&good), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = skillgate(&["run", s(&tampered), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("skillgate: refused: ")
            && err.contains("integrity:")
            && err.contains("extra.txt"),
        "{err}"
    );

    let out = skillgate(&["run", s(&faulty), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("returned NULL"), "{}", stderr(&out));

    let out = skillgate(&[
        "run",
        s(&good),
        "--policy",
        s(&host.tmp.path().join("missing.json")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = skillgate(&["run", s(&good), "--policy", s(&policy), "--input", "[1,2"]);
    assert_eq!(out.status.code(), Some(2));
    let out = skillgate(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn keygen_without_a_password_source_refuses_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let (sk, pk) = (tmp.path().join("k"), tmp.path().join("k.pub"));
    let out = skill_sign(&["keygen", "--secret-key", s(&sk), "--public-key", s(&pk)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!sk.exists() && !pk.exists());
    let out = keygen(&sk, &pk);
    assert!(out.status.success());
    let before = std::fs::read(&sk).unwrap();
    let out = keygen(&sk, &pk);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&sk).unwrap(), before);
}

#[test]
fn the_vt_code_loader_verifies_and_discovers() {
    let host = Host::new();
    host.plugin("good", "one");
    host.plugin("good", "two");
    let bad = host.plugin("good", "three");
    std::fs::write(bad.join("stowaway"), "x").unwrap();

    // A loader without keys refuses everything.
    let mut bare = skillgate::PluginLoader::new();
    bare.add_trusted_dir(host.root.clone());
    assert!(bare.discover_plugins().unwrap().is_empty());
    let err = bare.load_plugin(&host.root.join("one")).unwrap_err();
    assert!(matches!(
        err,
        skillgate::Error::Signature(skillgate::signature::SignatureError::EmptyTrustStore)
    ));

    let mut loader = skillgate::PluginLoader::new();
    loader
        .add_trusted_dir(host.root.clone())
        .add_trusted_key(host.key.public())
        .unwrap();
    assert_eq!(loader.trusted_dirs(), &[host.root.canonicalize().unwrap()]);
    assert_eq!(loader.library_filename("one"), "libone.so");
    let found = loader.discover_plugins().unwrap();
    let names: Vec<&str> = found.iter().map(|p| p.metadata().name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    let out = found[0]
        .execute(&skillgate::PluginContext::default())
        .unwrap();
    assert!(out.success);
    assert!(
        skillgate::validate_plugin_structure(&host.root.join("one"))
            .unwrap()
            .is_empty()
    );
    let problems = skillgate::validate_plugin_structure(host.tmp.path()).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("plugin.json")),
        "{problems:?}"
    );
}

#[test]
fn a_rollback_is_refused_until_the_administrator_resets_the_mark() {
    let host = Host::new();
    let state = host.tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let policy = host.tmp.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"trusted_roots":["root"],"keys":"keys","isolation":"thread","state_dir":"state"}"#,
    )
    .unwrap();
    let install = |version: &str| {
        let quoted = format!("\"{version}\"");
        let lib = host.build("good", "versioned", &[("PLUGIN_VERSION", &quoted)]);
        let dir = host.root.join("versioned");
        let _ = std::fs::remove_dir_all(&dir);
        let manifest = manifest_template("versioned").replace("\"1.0.0\"", &quoted);
        host.install_with_manifest("versioned", &lib, &manifest)
    };
    let dir = install("2.0.0");
    let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = install("1.0.0");
    let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("trust:") && err.contains("2.0.0") && err.contains("1.0.0"),
        "{err}"
    );

    let out = skillgate(&["reset-version", "versioned", "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("was 2.0.0"));
    let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
