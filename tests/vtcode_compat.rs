//! VT Code's host code, unchanged but for its import, against signed plugins: the
//! `tests/vtcode-host` crate (its own cargo project, depending on skillgate by path) is built
//! and run on a skills directory prepared here. Its loader finds its trust only through the
//! policy file `SKILLGATE_POLICY` names, set for the child process alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use skillgate::Isolation;
use support::Host;

/// The host binary, built once per test run into `target/dep-hosts` (shared with the other
/// separate projects tests build, so skillgate's dependencies compile once), `--locked`
/// to its committed `Cargo.lock` (see `support::build::build_cargo_project`).
fn vtcode_host() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        support::build::build_cargo_project("tests/vtcode-host", &[], "dep-hosts")
            .join("vtcode-host")
    })
}

/// Runs the host on `skills` with exactly `policy` (or no policy file anywhere it looks,
/// save the system one) and returns its report.
fn run_host(host: &Host, skills: &Path, policy: Option<&Path>) -> Value {
    let home = host.tmp.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(vtcode_host());
    cmd.arg(skills)
        .env_clear()
        .env("HOME", &home)
        .current_dir(host.tmp.path());
    if let Some(policy) = policy {
        cmd.env("SKILLGATE_POLICY", policy);
    }
    let out = cmd.output().expect("the host runs");
    assert!(
        out.status.success(),
        "vtcode-host failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(path, bytes).unwrap();
}

/// The skills directory: a signed plugin, a signed one whose library is `<name>.so`, a
/// tampered one, and an unsigned plugin laid out as VT Code's guide lays one out.
fn skills(host: &Host) -> PathBuf {
    host.plugin("good", "signed");
    let lib = host.build("good", "bare", &[]);
    let bare = host.root.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(&lib, bare.join("bare.so")).unwrap();
    std::fs::write(bare.join("plugin.json"), support::manifest_template("bare")).unwrap();
    skillgate::sign::sign_plugin_dir(&bare, &host.key).unwrap();
    let tampered = host.plugin("good", "tampered");
    flip_last_byte(&tampered.join("libtampered.so"));
    let unsigned = host.root.join("unsigned");
    std::fs::create_dir_all(&unsigned).unwrap();
    std::fs::copy(
        host.build("good", "unsigned", &[]),
        unsigned.join("libunsigned.so"),
    )
    .unwrap();
    std::fs::write(
        unsigned.join("plugin.json"),
        r#"{"name":"unsigned","description":"A VT Code plugin","version":"1.0.0","author":"someone","abi_version":1}"#,
    )
    .unwrap();
    host.root.clone()
}

fn write_policy(host: &Host, isolation: Isolation) -> PathBuf {
    let path = host.tmp.path().join(format!("policy-{isolation}.json"));
    let policy = json!({
        "trusted_roots": [],
        "keys": host.keys_dir(),
        "isolation": isolation.to_string(),
        "worker": env!("CARGO_BIN_EXE_skillgate-worker"),
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    path
}

fn skill<'a>(report: &'a Value, dir: &str) -> &'a Value {
    report["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dir"] == dir)
        .unwrap_or_else(|| panic!("{dir} not discovered: {report:#}"))
}

#[test]
fn vt_codes_host_code_loads_signed_plugins_and_refuses_the_rest() {
    for isolation in [Isolation::Process, Isolation::Thread] {
        let host = Host::new();
        let skills = skills(&host);
        let policy = write_policy(&host, isolation);
        let report = run_host(&host, &skills, Some(&policy));
        let case = format!("{isolation}: {report:#}");

        // Discovery parsed every plugin.json, signed ones (with `files`) included.
        let discovered: Vec<&str> = report["skills"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["discovered_as"].as_str().unwrap())
            .collect();
        assert_eq!(
            discovered,
            ["bare", "signed", "tampered", "unsigned"],
            "{case}"
        );

        // The signed plugins: loaded from their own (trusted) directory, and run.
        for (dir, name) in [("signed", "signed"), ("bare", "bare")] {
            let s = skill(&report, dir);
            assert_eq!(s["loaded"], true, "{case}");
            assert_eq!(s["name"], name, "{case}");
            assert_eq!(
                s["path"],
                json!(skills.canonicalize().unwrap().join(dir)),
                "{case}"
            );
            assert_eq!(s["output"]["marker"], "v1", "{case}");
            assert_eq!(s["output"]["echo"]["input"]["who"], "vtcode", "{case}");
        }
        // The tampered one: refused by the integrity check, through anyhow.
        let s = skill(&report, "tampered");
        assert_eq!(s["loaded"], false, "{case}");
        let error = s["error"].as_str().unwrap();
        assert!(
            error.starts_with("integrity: ") && error.contains("libtampered.so"),
            "{case}"
        );
        // The unsigned VT Code plugin: refused for want of a signature.
        let s = skill(&report, "unsigned");
        assert_eq!(s["loaded"], false, "{case}");
        assert!(
            s["error"].as_str().unwrap().starts_with("signature: "),
            "{case}"
        );
        // The catalog's discover_plugins skips both refusals.
        assert_eq!(
            report["catalog"]["discovered"],
            json!(["bare", "signed"]),
            "{case}"
        );
        // The compat names it used.
        assert_eq!(report["abi"], 1);
        assert_eq!(report["library_filename"], "libx.so");
        assert_eq!(report["lint"]["signed"], json!([]), "{case}");
        assert_eq!(report["lint"]["bare"], json!([]), "{case}");
        assert!(
            !report["lint"]["unsigned"].as_array().unwrap().is_empty(),
            "{case}"
        );
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn vt_codes_host_code_without_a_policy_loads_nothing_and_says_where_it_looked() {
    let system = Path::new(skillgate::policy::SYSTEM_POLICY_FILE);
    if system.exists() {
        // This machine has a system policy, which the search would rightly find.
        eprintln!("skipped: {} exists", system.display());
        return;
    }
    let host = Host::new();
    let skills = skills(&host);
    let report = run_host(&host, &skills, None);
    let home_candidate = host
        .tmp
        .path()
        .join("empty-home/.config/skillgate/policy.json");
    let expected = format!(
        "no policy file found (looked at: {}, {})",
        home_candidate.display(),
        system.display()
    );
    for s in report["skills"].as_array().unwrap() {
        assert_eq!(s["loaded"], false, "{report:#}");
        assert!(
            s["error"].as_str().unwrap().contains(&expected),
            "{report:#}"
        );
    }
    assert!(
        report["catalog"]["error"]
            .as_str()
            .unwrap()
            .contains(&expected),
        "{report:#}"
    );
    // Control: the same skills, with the policy named, load.
    let policy = write_policy(&host, Isolation::Process);
    let report = run_host(&host, &skills, Some(&policy));
    assert_eq!(skill(&report, "signed")["loaded"], true, "{report:#}");
}
