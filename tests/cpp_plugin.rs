//! The C++ plugin of VT Code's plugin guide (`examples/cpp-plugin`), end to end, and what an
//! author who builds without the hardening flags learns, and when.
//!
//! Built with the flags its Makefile gives, it signs with `skill-sign sign`'s ELF check on
//! and runs under the DEFAULT policy in both isolation modes: `libstdc++.so.6` is in the
//! default `DT_NEEDED` list, the sandbox lets the loader map it, and libstdc++'s strings,
//! maps and exception unwinding work inside Landlock and seccomp. Built plainly
//! (`g++ -shared -fPIC`, `cc -shared -fPIC`) it has partial RELRO: `skill-sign sign` refuses
//! it, naming the check and the flags, and writes nothing; `--no-check` signs it, and the
//! host then refuses it at inspect with the same finding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use skillgate::Error;
use skillgate::inspect::{InspectError, Relro};
use skillgate::policy::Isolation;
use support::build::{self, CXX_HARDENED_FLAGS, PLAIN_FLAGS};
use support::{Host, ctx};

const NAME: &str = "cpp-stats";
const LIBRARY: &str = "libcpp-stats.so";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `skill-sign ARGS`, with no password in the environment.
fn skill_sign(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skill-sign"))
        .args(args)
        .env_remove("SKILLGATE_PASSWORD")
        .output()
        .unwrap()
}

/// The host's signing key as an unencrypted key file, for `skill-sign`.
fn key_file(host: &Host) -> PathBuf {
    let path = host.tmp.path().join("author.key");
    if !path.exists() {
        std::fs::write(&path, host.key.to_minisign_string_unencrypted()).unwrap();
    }
    path
}

/// The C++ example built with `flags` into the host's build directory.
fn build_cpp(host: &Host, flags: &[&str], tag: &str) -> PathBuf {
    build::build_with_flags(
        "g++",
        flags,
        &build::cpp_plugin_src(),
        &host.build_dir.join(tag).join(LIBRARY),
    )
}

/// `root/<dir_name>/`: `library` as `file_name`, and `manifest`, unsigned.
fn unsigned(
    host: &Host,
    dir_name: &str,
    library: &Path,
    file_name: &str,
    manifest: &Path,
) -> PathBuf {
    let dir = host.root.join(dir_name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(library, dir.join(file_name)).unwrap();
    std::fs::copy(manifest, dir.join("plugin.json")).unwrap();
    dir
}

fn cpp_manifest() -> PathBuf {
    build::repo_root().join("examples/cpp-plugin/plugin.json")
}

/// The Makefile the README points authors at builds with exactly the flags the tests use,
/// so the documented command cannot drift from the tested one.
#[test]
fn the_makefile_gives_the_tested_flags() {
    let makefile =
        std::fs::read_to_string(build::repo_root().join("examples/cpp-plugin/Makefile")).unwrap();
    let line = |var: &str| {
        makefile
            .lines()
            .find_map(|l| l.strip_prefix(var))
            .unwrap_or_else(|| panic!("the Makefile sets no {var}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut documented = line("CXXFLAGS ?= ");
    documented.extend(line("HARDENING = "));
    assert_eq!(documented, CXX_HARDENED_FLAGS);
}

#[test]
fn built_with_the_flags_it_signs_with_the_check_on_and_runs_under_the_default_policy_in_both_modes()
{
    for host in Host::each_mode() {
        let mode = host.isolation;
        let lib = build_cpp(&host, CXX_HARDENED_FLAGS, "hardened");
        let dir = unsigned(&host, NAME, &lib, LIBRARY, &cpp_manifest());
        let out = skill_sign(&["sign", s(&dir), "--secret-key", s(&key_file(&host))]);
        assert!(out.status.success(), "{mode:?}: {}", stderr(&out));
        assert!(dir.join("plugin.json.sig").is_file());

        // The host's policy is the strict default (`Policy::builder()` starts from it).
        let gate = host.gate();
        let plugin = gate
            .verify_and_load(&dir)
            .unwrap_or_else(|e| panic!("{mode:?}: the C++ example must load: {e}"));
        let needed = &plugin.inspection().needed;
        assert!(
            needed.iter().any(|n| n == "libstdc++.so.6"),
            "{mode:?}: the example links libstdc++ ({needed:?})"
        );
        if mode == Isolation::Process {
            // A fresh worker has never mapped libstdc++, so its loader was granted the
            // directory that holds it. (In thread mode the test process may already hold
            // libstdc++ from another test's plugin, never unloaded, and then needs no grant.)
            let read = &plugin.enforcement().loader_read;
            assert!(
                read.iter().any(|d| d.join("libstdc++.so.6").is_file()),
                "{read:?}"
            );
        }

        let result = plugin
            .execute(&ctx(
                json!({"list": [1, 2, {"flag": true}], "text": "x", "none": null}),
            ))
            .unwrap();
        assert!(result.success, "{mode:?}: {result:?}");
        assert_eq!(
            serde_json::Value::Object(result.output.clone().into_iter().collect()),
            json!({
                "kinds": {"object": 2, "array": 1, "number": 2, "bool": 1, "string": 1, "null": 1},
                "depth": 4,
                "lang": "c++",
            }),
            "{mode:?}"
        );

        // A C++ exception thrown and caught inside the plugin (the unwinder walks libstdc++'s
        // and libgcc_s's tables in the sandbox) becomes an error result ...
        let mut deep = json!(0);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        let result = plugin.execute(&ctx(json!({ "deep": deep }))).unwrap();
        assert!(!result.success, "{mode:?}: {result:?}");
        assert_eq!(result.error.as_deref(), Some("input nests deeper than 32"));
        // ... and the plugin serves the next call.
        let result = plugin.execute(&ctx(json!({"n": 1}))).unwrap();
        assert!(result.success, "{mode:?}: {result:?}");
        assert_eq!(result.output["depth"], 2);
        host.assert_still_serves(&gate);
    }
}

/// What `skill-sign sign` must print and leave behind when it refuses: exit code 1, the
/// check and the flags on stderr, and not one file of the directory changed.
fn assert_refused_at_signing(out: &Output, dir: &Path, manifest_before: &[u8]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("relro: library has partial RELRO"), "{err}");
    assert!(
        err.contains("fix: link with -Wl,-z,relro -Wl,-z,now"),
        "the flags to add: {err}"
    );
    assert!(err.contains("--no-check"), "{err}");
    assert!(
        !dir.join("plugin.json.sig").exists(),
        "no signature may be written"
    );
    assert_eq!(
        std::fs::read(dir.join("plugin.json")).unwrap(),
        manifest_before,
        "the manifest must not be rewritten"
    );
}

#[test]
fn built_plainly_signing_refuses_with_the_flags_and_no_check_signs_for_the_host_to_refuse() {
    let host = Host::new();
    let lib = build_cpp(&host, PLAIN_FLAGS, "plain");
    let dir = unsigned(&host, NAME, &lib, LIBRARY, &cpp_manifest());
    let before = std::fs::read(dir.join("plugin.json")).unwrap();
    let key = key_file(&host);

    let out = skill_sign(&["sign", s(&dir), "--secret-key", s(&key)]);
    assert_refused_at_signing(&out, &dir, &before);
    // The same refusal under a policy file with the default ELF rules.
    let policy = build::repo_root().join("policy/default.json");
    let out = skill_sign(&[
        "sign",
        s(&dir),
        "--secret-key",
        s(&key),
        "--policy",
        s(&policy),
    ]);
    assert_refused_at_signing(&out, &dir, &before);

    // --no-check signs it anyway, and says so.
    let out = skill_sign(&["sign", s(&dir), "--secret-key", s(&key), "--no-check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-check"), "{}", stderr(&out));
    assert!(dir.join("plugin.json.sig").is_file());

    // The host then refuses it where signing said it would, with the same finding.
    for mode in [Isolation::Thread, Isolation::Process] {
        let gate = host.gate_with(host.policy_with(|p| p.isolation(mode)));
        let err = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Inspect(InspectError::WeakRelro {
                    found: Relro::Partial,
                    required: Relro::Full,
                })
            ),
            "{mode:?}: {err:?}"
        );
        host.assert_still_serves(&gate);
    }
}

/// A policy file whose `danger.elf` accepts partial RELRO: the check follows the policy it is
/// given, so the plain build signs under it, and a host with that policy loads it.
#[test]
fn the_check_follows_the_policy_file_it_is_given() {
    let host = Host::new();
    let lib = build_cpp(&host, PLAIN_FLAGS, "plain");
    let dir = unsigned(&host, NAME, &lib, LIBRARY, &cpp_manifest());
    let policy = host.tmp.path().join("partial.json");
    std::fs::write(
        &policy,
        r#"{"trusted_roots":["root"],"keys":"keys","isolation":"process","danger":{"elf":{"min_relro":"partial"}}}"#,
    )
    .unwrap();
    let key = key_file(&host);
    // A policy file that cannot be read is a usage error, and nothing is signed.
    let missing = host.tmp.path().join("missing.json");
    let out = skill_sign(&[
        "sign",
        s(&dir),
        "--secret-key",
        s(&key),
        "--policy",
        s(&missing),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.join("plugin.json.sig").exists());
    let out = skill_sign(&[
        "sign",
        s(&dir),
        "--secret-key",
        s(&key),
        "--policy",
        s(&policy),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let host_policy = skillgate::Policy::from_file(&policy)
        .unwrap()
        .to_builder()
        .worker(env!("CARGO_BIN_EXE_skillgate-worker"))
        .build()
        .unwrap();
    let gate = host.gate_with(host_policy);
    let plugin = gate.verify_and_load(&dir).unwrap();
    assert_eq!(plugin.inspection().relro, Relro::Partial);
    assert!(plugin.execute(&ctx(json!({}))).unwrap().success);
    host.assert_still_serves(&gate);
}

/// The C example built without the flags: the same refusal, the same fix, nothing written.
#[test]
fn a_plain_c_plugin_is_refused_at_signing_with_the_fix() {
    let host = Host::new();
    let lib = build::build_with_flags(
        "cc",
        PLAIN_FLAGS,
        &build::c_echo_plugin_src(),
        &host.build_dir.join("plain-c").join("libc-echo.so"),
    );
    let manifest = build::repo_root().join("examples/c-echo-plugin/plugin.json");
    let dir = unsigned(&host, "c-echo", &lib, "libc-echo.so", &manifest);
    let before = std::fs::read(dir.join("plugin.json")).unwrap();
    let out = skill_sign(&["sign", s(&dir), "--secret-key", s(&key_file(&host))]);
    assert_refused_at_signing(&out, &dir, &before);

    // Control: the same source with the flags the C example documents signs.
    let hardened = build::build_c_plugin(
        &build::c_echo_plugin_src(),
        &host.build_dir.join("hardened-c").join("libc-echo.so"),
        &[],
        &[],
    );
    std::fs::copy(hardened, dir.join("libc-echo.so")).unwrap();
    let out = skill_sign(&["sign", s(&dir), "--secret-key", s(&key_file(&host))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gate = host.gate();
    assert!(
        gate.verify_and_load(&dir)
            .unwrap()
            .execute(&ctx(json!({})))
            .unwrap()
            .success
    );
    host.assert_still_serves(&gate);
}
