//! `examples/host.rs`, built by cargo as a reader's `cargo run --example host -- DIR …`
//! builds it, runs against the Rust echo example signed into a host laid out like the
//! repository's (a policy file, its trusted root, a key directory), so the example cannot
//! rot: a changed API breaks its build here, a changed behaviour its output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::Host;

/// The example's executable, built once with `cargo build --example host` (a no-op after a
/// plain `cargo test`, which builds every example) and found in cargo's own report of what
/// it built, whatever the profile or target directory.
fn example_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--example",
                "host",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build --example host failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "host")
            .and_then(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the example's executable")
    })
}

/// The example with `args`, from the repository root as a reader runs it.
fn run_example(args: &[&Path]) -> Output {
    Command::new(example_exe())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the example runs")
}

/// A host on disk: `root/echo` holds the echo example signed by the host's key, and
/// `policy.json` trusts `root/` and runs plugins in the worker these tests were built with
/// (so a `--release` test run does not pick a stale debug worker).
fn host_with_echo() -> (Host, PathBuf, PathBuf) {
    let host = Host::new();
    let dir = host.install_rust_echo();
    let policy = host.tmp.path().join("policy.json");
    let json = serde_json::json!({
        "trusted_roots": ["root"],
        "keys": "keys",
        "isolation": "process",
        "worker": env!("CARGO_BIN_EXE_skillgate-worker"),
    });
    std::fs::write(&policy, json.to_string()).unwrap();
    (host, dir, policy)
}

#[test]
fn the_example_host_loads_calls_and_matches_a_refusal() {
    let (host, dir, policy) = host_with_echo();
    let out = run_example(&[&dir, &host.keys_dir(), &policy]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("loaded echo 0.1.0 (signed by 1 key(s))"),
        "{stdout}"
    );
    // The enforcement report, as JSON: a worker process, seccomp installed.
    assert!(stdout.contains(r#""isolation": "process""#), "{stdout}");
    assert!(stdout.contains(r#""seccomp": true"#), "{stdout}");
    // One call's result, echoing the example's input.
    assert!(stdout.contains(r#""success": true"#), "{stdout}");
    assert!(stdout.contains("hello from examples/host.rs"), "{stdout}");
    // The refusal arm it matched by variant (the policy's directory, outside `root/`).
    let expected = format!(
        "refused as expected: {} lies beneath none of the 1 trusted root(s)",
        host.tmp.path().display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

#[test]
fn the_example_host_reports_a_tampered_plugin_and_fails() {
    let (host, dir, policy) = host_with_echo();
    let lib = dir.join("libecho.so");
    let mut bytes = std::fs::read(&lib).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&lib, bytes).unwrap();
    let out = run_example(&[&dir, &host.keys_dir(), &policy]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing was loaded, so nothing is printed"
    );
    assert!(
        stderr.starts_with("host: integrity: ") && stderr.contains("libecho.so"),
        "{stderr}"
    );
}

#[test]
fn the_example_host_without_arguments_prints_its_usage() {
    let out = run_example(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: host PLUGIN_DIR"));
}
