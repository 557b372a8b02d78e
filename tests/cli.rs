//! The two command lines, driven as a user would: exit codes, stdout, one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::os::unix::fs::symlink;
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

    // A loader without keys refuses everything. (`PluginLoader::new()` reads the policy
    // file the environment names; tests/compat.rs covers it. Here the policy is given.)
    let mut bare =
        skillgate::PluginLoader::with_trust(host.policy(), skillgate::TrustStore::empty());
    bare.add_trusted_dir(host.root.clone());
    assert!(bare.discover_plugins().unwrap().is_empty());
    let err = bare.load_plugin(&host.root.join("one")).unwrap_err();
    assert!(matches!(
        err,
        skillgate::Error::Signature(skillgate::error::SignatureError::EmptyTrustStore)
    ));

    let mut loader =
        skillgate::PluginLoader::with_trust(host.policy(), skillgate::TrustStore::empty());
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

// ---------------------------------------------------------------------------------------
// Nothing a plugin or a plugin directory chose reaches the terminal raw (issue 11, item 6).

/// The policy file of `host_with_policy`, with another isolation mode.
fn policy_for(host: &Host, isolation: &str) -> std::path::PathBuf {
    let policy = host.tmp.path().join(format!("policy-{isolation}.json"));
    std::fs::write(
        &policy,
        format!(r#"{{"trusted_roots":["root"],"keys":"keys","isolation":"{isolation}"}}"#),
    )
    .unwrap();
    policy
}

/// A control character other than the newline that ends each printed line.
fn raw_control(c: char) -> bool {
    c != '\n' && skillgate::escape::needs_escape(c)
}

/// stderr is one line, holds no ESC, C1 control or bidi control, and shows the escape.
fn assert_one_escaped_line(out: &Output) {
    let err = &out.stderr;
    assert!(!err.contains(&0x1b), "raw ESC on stderr: {:?}", stderr(out));
    let text = stderr(out);
    assert!(
        !text.chars().any(raw_control),
        "raw control on stderr: {text:?}"
    );
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    assert!(text.ends_with('\n'));
    // `\u{1b}` is the escape; a newline shows as `\u{a}` (or `\n` where the message already
    // quoted the text with Rust's `{:?}`).
    assert!(text.contains(r"\u{1b}[2J"), "escaped form missing: {text}");
}

#[test]
fn a_symlink_name_with_escapes_reaches_the_terminal_escaped() {
    // Locating is the same in both modes; `verify` never loads, so one mode suffices.
    let (host, policy) = host_with_policy();
    let dir = host.plugin("good", "linkname");
    symlink("/etc/hostname", dir.join("\u{1b}[2J\nskillgate: forged")).unwrap();
    let out = skillgate(&["verify", s(&dir), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_one_escaped_line(&out);
    assert!(stderr(&out).starts_with("skillgate: refused: "));
    assert!(stderr(&out).contains("locate:"));
    // Control: the same plugin without the link verifies.
    std::fs::remove_file(dir.join("\u{1b}[2J\nskillgate: forged")).unwrap();
    let out = skillgate(&["verify", s(&dir), "--policy", s(&policy)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn metadata_and_result_text_reach_the_terminal_escaped() {
    let (host, _) = host_with_policy();
    for isolation in ["thread", "process"] {
        let policy = policy_for(&host, isolation);
        // A metadata name holding ESC [ 2 J and a newline (JSON escapes inside C source).
        let name = format!("meta-{isolation}");
        let out_lib = host.build_dir.join(&name).join(format!("lib{name}.so"));
        let lib = support::build::build_c_plugin(
            &support::build::test_plugin_src("good"),
            &out_lib,
            &[(
                "PLUGIN_NAME",
                &format!(r#""{name}\\u001b[2J\\nskillgate: forged""#),
            )],
            &[],
        );
        let dir = host.install(&name, &lib);
        let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("abi:"), "{}", stderr(&out));
        assert_one_escaped_line(&out);

        // A result whose `success` value holds the same (serde quotes it in its message).
        let dir = host.plugin("result_escapes", &format!("result-{isolation}"));
        let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).starts_with("skillgate: plugin fault: "));
        assert_one_escaped_line(&out);

        // Control: a good plugin runs, and --verbose prints two clean lines.
        let dir = host.plugin("good", &format!("fine-{isolation}"));
        let out = skillgate(&["run", s(&dir), "--policy", s(&policy), "--verbose"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 2, "{}", stderr(&out));
        assert!(!out.stderr.contains(&0x1b) && !out.stdout.contains(&0x1b));
    }
}

#[test]
fn result_json_on_stdout_escapes_c1_and_bidi_controls() {
    // serde_json writes C0 controls as \uXXXX but C1 and bidi controls raw; the CLI's
    // formatter escapes them too, and the JSON still means the same.
    let (host, policy) = host_with_policy();
    let dir = host.plugin("good", "echoer");
    let input = r#"{"text":"a\u009b31m\u202eb\u001bc"}"#;
    let out = skillgate(&["run", s(&dir), "--policy", s(&policy), "--input", input]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(!text.chars().any(raw_control), "{text:?}");
    assert!(text.contains(r"\u009b31m\u202eb\u001bc"), "{text}");
    let result: skillgate::PluginResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result.output["echo"]["input"]["text"],
        "a\u{9b}31m\u{202e}b\u{1b}c"
    );
}

// ---------------------------------------------------------------------------------------
// Thread mode and exit (issue 11, item 9).

#[test]
fn run_leaves_without_running_plugin_finalizers() {
    let (host, _) = host_with_policy();
    for isolation in ["thread", "process"] {
        let policy = policy_for(&host, isolation);
        let marker = host.tmp.path().join(format!("fini-{isolation}"));
        let quoted = format!("\"{}\"", marker.display());
        let name = format!("finis-{isolation}");
        let lib = host.build("fini_marker", &name, &[("MARKER_PATH", &quoted)]);
        let dir = host.install(&name, &lib);
        let out = skillgate(&[
            "run",
            s(&dir),
            "--policy",
            s(&policy),
            "--input",
            r#"{"q":1}"#,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let result: skillgate::PluginResult = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result.output["echo"]["input"]["q"], 1);
        // Thread mode: `run` leaves with _exit, so neither the destructor nor the atexit
        // handler ran (they would have run here, unsandboxed). Process mode: the host kills
        // the worker (SIGKILL) when it drops the plugin, so they never run there either —
        // and had they run, they would have run inside the worker's sandbox, which grants
        // nothing in this directory.
        for suffix in ["dtor", "atexit"] {
            let m = host.tmp.path().join(format!("fini-{isolation}.{suffix}"));
            assert!(!m.exists(), "{isolation}: a plugin finalizer ran: {m:?}");
        }
        // A refused run leaves the same way: this build's metadata names another plugin,
        // so the load is refused after dlopen ran (the library stays mapped, finalizers
        // and all).
        let other = host
            .build_dir
            .join(format!("other-{isolation}"))
            .join("libx.so");
        let lib = support::build::build_c_plugin(
            &support::build::test_plugin_src("fini_marker"),
            &other,
            &[
                ("PLUGIN_NAME", "\"someone-else\""),
                ("MARKER_PATH", &quoted),
            ],
            &[],
        );
        let dir = host.install(&format!("{name}-refused"), &lib);
        let out = skillgate(&["run", s(&dir), "--policy", s(&policy)]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("abi:"), "{}", stderr(&out));
        for suffix in ["dtor", "atexit"] {
            let m = host.tmp.path().join(format!("fini-{isolation}.{suffix}"));
            assert!(
                !m.exists(),
                "{isolation}: a refused plugin's finalizer ran: {m:?}"
            );
        }
    }

    // Control: the same library, loaded by a plain program that returns from main, runs
    // both finalizers, so the markers above would have appeared had they run.
    let marker = host.tmp.path().join("fini-control");
    let quoted = format!("\"{}\"", marker.display());
    let lib = host.build("fini_marker", "finis-control", &[("MARKER_PATH", &quoted)]);
    let driver_src = host.tmp.path().join("driver.c");
    std::fs::write(
        &driver_src,
        "#include <dlfcn.h>\nint main(int argc, char **argv) {\n  (void)argc;\n  return dlopen(argv[1], RTLD_NOW) ? 0 : 1;\n}\n",
    )
    .unwrap();
    let driver = host.tmp.path().join("driver");
    let built = Command::new("cc")
        .arg("-o")
        .arg(&driver)
        .arg(&driver_src)
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let ran = Command::new(&driver).arg(&lib).output().unwrap();
    assert!(ran.status.success());
    for suffix in ["dtor", "atexit"] {
        let m = host.tmp.path().join(format!("fini-control.{suffix}"));
        assert!(m.exists(), "control: {m:?} missing, the probe is dead");
    }
}

/// Issue 13, item 3: a plugin that prints. `run`'s stdout is the result alone in both modes
/// (in thread mode the plugin's prints land on stderr, in process mode in its log);
/// `--verbose` prints a process-mode plugin's log on stderr, escaped.
#[test]
fn run_keeps_stdout_for_the_result_and_verbose_prints_the_plugin_log() {
    let (host, _) = host_with_policy();
    for isolation in ["thread", "process"] {
        let policy = policy_for(&host, isolation);
        let name = format!("chatty-{isolation}");
        let dir = host.plugin("chatty", &name);
        for verbose in [false, true] {
            let mut args = vec![
                "run",
                s(&dir),
                "--policy",
                s(&policy),
                "--input",
                r#"{"q":1}"#,
            ];
            if verbose {
                args.push("--verbose");
            }
            let out = skillgate(&args);
            let err = stderr(&out);
            let case = format!("{isolation}, verbose {verbose}");
            assert_eq!(out.status.code(), Some(0), "{case}: {err}");
            let result: skillgate::PluginResult = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| {
                    panic!(
                        "{case}: stdout is not the result ({e}): {:?}",
                        String::from_utf8_lossy(&out.stdout)
                    )
                });
            assert!(result.success, "{case}");
            assert_eq!(result.output["chatty"], true, "{case}");
            let prefix = format!("skillgate: plugin {name}");
            match (isolation, verbose) {
                // The plugin wrote to this process's fd 1, which pointed at stderr.
                ("thread", _) => {
                    assert!(err.contains("chatty: execute on stdout\n"), "{case}: {err}");
                    assert!(err.contains("printed, not returned"), "{case}: {err}");
                }
                ("process", true) => {
                    for line in [
                        format!("{prefix} stdout: chatty: constructor on stdout\n"),
                        format!("{prefix} stderr: chatty: constructor on stderr\n"),
                        format!("{prefix} stdout: chatty: execute on stdout\n"),
                        format!("{prefix} stderr: chatty: execute on stderr\n"),
                        format!("{prefix} stderr: chatty: \\u{{1b}}[2J cleared\\u{{d}}\n"),
                    ] {
                        assert!(err.contains(&line), "{case}: {line:?} in {err}");
                    }
                    assert!(!err.contains('\x1b'), "{case}: raw ESC on stderr: {err:?}");
                }
                // Without --verbose the log goes to no subscriber: nothing is printed.
                _ => assert!(!err.contains("chatty:"), "{case}: {err}"),
            }
        }
    }
}

#[test]
fn the_structure_lint_escapes_what_the_unsigned_manifest_says() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_template("lint").replace(
        "\"thread_safe\":false",
        "\"thread_safe\":false,\"\\u001b[2J\\nforged\":1",
    );
    std::fs::write(tmp.path().join("plugin.json"), manifest).unwrap();
    let problems = skillgate::validate_plugin_structure(tmp.path()).unwrap();
    let invalid = problems
        .iter()
        .find(|p| p.starts_with("Invalid plugin.json"))
        .expect("the unknown field is reported");
    assert!(
        !invalid.chars().any(skillgate::escape::needs_escape),
        "{invalid:?}"
    );
    assert!(invalid.contains(r"\u{1b}[2J\u{a}forged"), "{invalid}");
    // Control: a well-formed unsigned manifest gets no "Invalid" problem.
    std::fs::write(tmp.path().join("plugin.json"), manifest_template("lint")).unwrap();
    let problems = skillgate::validate_plugin_structure(tmp.path()).unwrap();
    assert!(
        !problems.iter().any(|p| p.starts_with("Invalid")),
        "{problems:?}"
    );
}

/// Collects every event's fields as text.
#[derive(Default)]
struct Collect(std::sync::Mutex<Vec<String>>);

struct FieldText<'a>(&'a mut String);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for &'static Collect {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = String::new();
        event.record(&mut FieldText(&mut text));
        self.0.lock().unwrap().push(text);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_refused_plugin_directory_name_is_logged_escaped() {
    // VT Code's discovery logs each refused directory; the directory's name is the
    // filesystem's choice (no key needed to make one in a shared plugins directory).
    let host = Host::new();
    let evil = host.root.join("\u{1b}[2J\nskillgate: forged");
    std::fs::create_dir(&evil).unwrap();
    std::fs::write(evil.join("plugin.json"), manifest_template("evil")).unwrap();
    host.plugin("good", "fine");
    let mut loader =
        skillgate::PluginLoader::with_trust(host.policy(), skillgate::TrustStore::empty());
    loader
        .add_trusted_dir(host.root.clone())
        .add_trusted_key(host.key.public())
        .unwrap();
    let collect: &'static Collect = Box::leak(Box::default());
    let found = tracing::subscriber::with_default(collect, || loader.discover_plugins()).unwrap();
    // Control: the good plugin loads, and the refusal was logged (the probe is live).
    assert_eq!(found.len(), 1);
    let events = collect.0.lock().unwrap();
    let refused: Vec<&String> = events
        .iter()
        .filter(|e| e.contains("plugin refused"))
        .collect();
    // Discovery's warning and the `refused` audit event.
    assert_eq!(refused.len(), 2, "{events:?}");
    assert_eq!(
        refused
            .iter()
            .filter(|e| e.contains(r#"event="refused""#))
            .count(),
        1,
        "{events:?}"
    );
    for line in refused {
        assert!(
            !line.chars().any(skillgate::escape::needs_escape),
            "{line:?}"
        );
        assert!(line.contains(r"\u{1b}[2J\u{a}skillgate: forged"), "{line}");
    }
}

#[test]
fn inspect_prints_an_unsigned_library_name_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugin");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.json"),
        r#"{"name":"x","library":"\u001b[2J\nlibx.so"}"#,
    )
    .unwrap();
    // The file it names does not exist: exit 2, naming it, escaped.
    let out = skillgate(&["inspect", s(&dir)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_one_escaped_line(&out);
    // It does exist but is no ELF: refused, and the table's path line is escaped too.
    std::fs::write(dir.join("\u{1b}[2J\nlibx.so"), "not elf").unwrap();
    let out = skillgate(&["inspect", s(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !out.stdout.contains(&0x1b),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(r"\u{1b}[2J\u{a}libx.so"));
    let out = skillgate(&["inspect", s(&dir), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["path"]
            .as_str()
            .unwrap()
            .ends_with("\u{1b}[2J\nlibx.so")
    );
}

/// Runs a command line, failing the test if it has not exited after a generous 10 s (the
/// commands below finish in well under a second unless an open or a read blocks).
fn output_or_hang(program: &str, args: &[&str]) -> Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(program)
        .args(args)
        .env_remove("SKILLGATE_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{program} {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs a command line without a deadline: the controls below derive a key from a password
/// (scrypt), which takes its time on a loaded machine.
fn output_of(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("SKILLGATE_PASSWORD")
        .output()
        .unwrap()
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// The policy file, the password file and the file `inspect` is given are all read through
/// the one capped reader: a FIFO in their place (which nobody ever writes to) is refused
/// as not a regular file instead of hanging the command; a regular file in the same place
/// is read (the control).
#[test]
fn a_fifo_named_on_the_command_line_is_refused_without_hanging() {
    let sg = env!("CARGO_BIN_EXE_skillgate");
    let ss = env!("CARGO_BIN_EXE_skill-sign");
    let (host, policy) = host_with_policy();
    let fifo = host.tmp.path().join("fifo");
    mkfifo(&fifo);
    let dir = host.plugin("good", "fifocli");

    // The policy.
    let out = output_or_hang(sg, &["verify", s(&dir), "--policy", s(&fifo)]);
    assert_eq!(out.status.code(), Some(2), "policy: {}", stderr(&out));
    assert!(stderr(&out).contains("FIFO"), "policy: {}", stderr(&out));
    let out = output_or_hang(sg, &["verify", s(&dir), "--policy", s(&policy)]);
    assert!(out.status.success(), "policy control: {}", stderr(&out));

    // The file `inspect` reads.
    let out = output_or_hang(sg, &["inspect", s(&fifo)]);
    assert_eq!(out.status.code(), Some(2), "inspect: {}", stderr(&out));
    assert!(stderr(&out).contains("FIFO"), "inspect: {}", stderr(&out));
    let lib = host.build("good", "fifoinspect", &[]);
    let out = output_or_hang(sg, &["inspect", s(&lib)]);
    assert_ne!(
        out.status.code(),
        Some(2),
        "inspect control: {}",
        stderr(&out)
    );

    // The password file.
    let password = host.tmp.path().join("password");
    std::fs::write(&password, "correct horse\n").unwrap();
    let (sk, pk) = (
        host.tmp.path().join("enc.key"),
        host.tmp.path().join("enc.pub"),
    );
    let keygen = [
        "keygen",
        "--secret-key",
        s(&sk),
        "--public-key",
        s(&pk),
        "--password-file",
    ];
    let out = output_or_hang(ss, &[&keygen[..], &[s(&fifo)]].concat());
    assert_eq!(out.status.code(), Some(2), "keygen: {}", stderr(&out));
    assert!(stderr(&out).contains("FIFO"), "keygen: {}", stderr(&out));
    assert!(!sk.exists(), "keygen wrote a key without a password");
    let out = output_of(ss, &[&keygen[..], &[s(&password)]].concat());
    assert!(out.status.success(), "keygen control: {}", stderr(&out));
    let sign = ["sign", s(&dir), "--secret-key", s(&sk), "--password-file"];
    let out = output_or_hang(ss, &[&sign[..], &[s(&fifo)]].concat());
    assert_eq!(out.status.code(), Some(2), "sign: {}", stderr(&out));
    assert!(stderr(&out).contains("FIFO"), "sign: {}", stderr(&out));
    let out = output_of(ss, &[&sign[..], &[s(&password)]].concat());
    assert!(out.status.success(), "sign control: {}", stderr(&out));
}
