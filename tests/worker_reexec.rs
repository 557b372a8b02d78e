//! Process isolation with no worker file and no `worker` in the policy: a host that depends
//! on skillgate by path (`tests/worker-host`, its own cargo project) calls
//! `skillgate::worker::run_if_worker()` first in `main`, and the Gate re-executes that host
//! binary as the worker. Each host binary is copied alone into a fresh directory, so nothing
//! named `skillgate-worker` lies beside it or in its parent.
//!
//! Process mode only throughout: the worker, and how it is found, is what is tested; thread
//! mode starts no worker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use support::Host;

/// `target/dep-hosts/debug`, where the worker-host project's binaries are built (once per
/// test run; the shared target dir keeps skillgate's dependencies between runs), `--locked`
/// to its committed lock file (see `support::build::build_cargo_project`).
///
/// `SKILLGATE_WORKER_HOST_BINS` names a directory of binaries already built instead: for
/// running this test binary as a user who cannot run cargo (uid 65534).
fn host_bins() -> &'static Path {
    static BINS: OnceLock<PathBuf> = OnceLock::new();
    BINS.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SKILLGATE_WORKER_HOST_BINS") {
            return PathBuf::from(dir);
        }
        support::build::build_cargo_project("tests/worker-host", &["--bins"], "dep-hosts")
    })
}

/// A host laid out for the worker-host binaries: the `hostile` plugin signed under the
/// trusted root, a probe file the host can read and the plugin is not granted, and `bin`
/// holding `name` (copied there alone). Everything is readable by other users, so the same
/// layout serves a host run as uid 65534.
struct Setup {
    host: Host,
    policy: PathBuf,
    plugin: PathBuf,
    probe: PathBuf,
    bin: PathBuf,
}

fn setup(name: &str) -> Setup {
    let host = Host::process();
    let lib = host.build_with("hostile", "hostile", &[], &["-pthread"]);
    let plugin = host.install("hostile", &lib);
    // Process isolation, no `worker`; the hostile plugin's imports allowed (it is built to
    // attempt escapes; its sandbox is what is under test).
    let policy = host.tmp.path().join("policy.json");
    let denied = skillgate::inspect::DEFAULT_DENIED_IMPORTS;
    let json = serde_json::json!({
        "trusted_roots": ["root"],
        "keys": "keys",
        "isolation": "process",
        "danger": {"elf": {"allow_imports": denied}},
    });
    std::fs::write(&policy, json.to_string()).unwrap();
    let probe = host.tmp.path().join("probe.txt");
    std::fs::write(&probe, "the host's own file\n").unwrap();
    let dir = host.tmp.path().join("host-bin");
    std::fs::create_dir(&dir).unwrap();
    let bin = dir.join(name);
    std::fs::copy(host_bins().join(name), &bin).unwrap();
    open_to_all(host.tmp.path());
    Setup {
        host,
        policy,
        plugin,
        probe,
        bin,
    }
}

/// Directories `a+rx`, files `a+r` (executables keep `x`): a test's own files only.
fn open_to_all(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_symlink() {
        return;
    }
    let mode = meta.permissions().mode();
    let add = if meta.is_dir() { 0o555 } else { 0o444 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | add)).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            open_to_all(&entry.unwrap().path());
        }
    }
}

impl Setup {
    /// Copies the host binary `name` alone into a directory of its own, beside the same
    /// root, keys and probe.
    fn add_bin(&self, name: &str) -> PathBuf {
        let dir = self.host.tmp.path().join(format!("host-bin-{name}"));
        std::fs::create_dir(&dir).unwrap();
        let bin = dir.join(name);
        std::fs::copy(host_bins().join(name), &bin).unwrap();
        open_to_all(&dir);
        bin
    }

    fn command(&self, extra: &[&str]) -> Command {
        self.command_with(&self.bin, extra)
    }

    fn command_with(&self, bin: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg(&self.policy)
            .arg(&self.plugin)
            .arg(&self.probe)
            .args(extra);
        c
    }
}

/// Runs a host and parses the one JSON line it prints.
fn report(command: &mut Command) -> (Output, Value) {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the host printed no JSON ({e}); status {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, value)
}

/// What every host that served as its own worker must show: the call ran in a worker
/// process that is this very host binary, a child of the host, sandboxed as usual.
fn assert_served_by_itself(bin: &Path, out: &Output, r: &Value) {
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["stage"], "called", "{r:#}");
    assert_eq!(r["worker"], "this executable, re-executed", "{r:#}");
    assert_eq!(r["isolation"], "process", "{r:#}");
    // The call worked, in process mode.
    assert_eq!(r["noop"]["success"], true, "{r:#}");
    assert_eq!(r["noop"]["output"]["ok"], true, "{r:#}");
    // The worker is the host binary itself, and the host's child.
    let pid = r["worker_pid"].as_u64().unwrap();
    assert!(pid > 0, "{r:#}");
    assert!(
        r["children"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_u64() == Some(pid)),
        "{r:#}"
    );
    assert_eq!(r["worker_exe"], r["host_exe"], "{r:#}");
    let exe = r["worker_exe"].as_str().unwrap();
    assert!(
        exe.starts_with(bin.to_str().unwrap()),
        "the worker runs {exe}, not {}",
        bin.display()
    );
    // No worker file lies beside the host or in its parent.
    let dir = bin.parent().unwrap();
    for d in [dir, dir.parent().unwrap()] {
        assert!(!d.join("skillgate-worker").exists(), "{}", d.display());
    }
    // Sandboxed as usual: full Landlock and seccomp, confirmed from outside by the host
    // (and by this test's own look at /proc), and the plugin is denied the probe file the
    // host itself reads.
    let enforcement = &r["enforcement"];
    assert_eq!(enforcement["isolation"], "process", "{r:#}");
    assert_eq!(enforcement["landlock"], "fully_enforced", "{r:#}");
    assert_eq!(enforcement["seccomp"], true, "{r:#}");
    assert_eq!(enforcement["no_new_privs"], true, "{r:#}");
    assert_eq!(r["worker_seccomp"], "2", "{r:#}");
    assert_eq!(r["worker_no_new_privs"], "1", "{r:#}");
    assert_eq!(r["host_reads_probe"], true, "{r:#}");
    assert_eq!(r["read_probe"]["output"]["ok"], false, "{r:#}");
    assert_eq!(r["read_probe"]["output"]["errno"], libc::EACCES, "{r:#}");
}

#[test]
fn a_host_that_calls_the_hook_is_its_own_worker() {
    let setup = setup("worker-host");
    let (out, r) = report(&mut setup.command(&[]));
    assert_served_by_itself(&setup.bin, &out, &r);
}

/// `/proc/self/exe` names the file the host was started from, not the path: a host whose
/// binary was deleted (an upgrade replaced it) still starts workers of its own version.
#[test]
fn a_deleted_host_binary_still_serves_as_its_worker() {
    let setup = setup("worker-host");
    let (out, r) = report(&mut setup.command(&["--delete-self"]));
    assert!(!setup.bin.exists());
    assert_served_by_itself(&setup.bin, &out, &r);
    assert!(
        r["worker_exe"].as_str().unwrap().ends_with(" (deleted)"),
        "{r:#}"
    );
}

/// The same host as an ordinary user: uid 65534, no cgroup, its own user namespace for the
/// worker. Run only where this test runs as root (it must switch users); as an ordinary
/// user the test above already is this one.
#[test]
fn an_ordinary_user_host_is_its_own_worker() {
    // SAFETY: geteuid has no preconditions and touches no memory.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("not root: a_host_that_calls_the_hook_is_its_own_worker runs as uid {euid}");
        return;
    }
    let setup = setup("worker-host");
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(&setup.bin)
        .arg(&setup.policy)
        .arg(&setup.plugin)
        .arg(&setup.probe)
        .env("HOME", "/tmp");
    let (out, r) = report(&mut command);
    assert_served_by_itself(&setup.bin, &out, &r);
    let uid = r["worker_uid"].as_str().unwrap();
    assert!(uid.split_whitespace().all(|u| u == "65534"), "{r:#}");
    assert_ne!(r["enforcement"]["tasks"]["by"], "cgroup", "{r:#}");
}

/// A host whose `main` does not call the hook is never re-executed (its `main` would run as
/// a "worker"): the Gate refuses with `WorkerNotFound`, saying what it tried and the fix,
/// and no process was started.
#[test]
fn a_host_without_the_hook_gets_worker_not_found_with_the_fix() {
    let setup = setup("no-hook");
    let (out, r) = report(&mut setup.command(&[]));
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["stage"], "gate", "{r:#}");
    assert_eq!(r["error_kind"], "WorkerNotFound/NotCalled", "{r:#}");
    assert_eq!(r["children"], serde_json::json!([]), "{r:#}");
    let message = r["message"].as_str().unwrap();
    for needle in [
        "did not call `skillgate::worker::run_if_worker()`",
        "call `skillgate::worker::run_if_worker()` first thing in `main`",
        "set `worker` in the policy",
        &setup
            .bin
            .with_file_name("skillgate-worker")
            .display()
            .to_string(),
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    // Control: the same host with the hook, beside the same files, serves.
    let with_hook = setup.add_bin("worker-host");
    let (out, r) = report(&mut setup.command_with(&with_hook, &[]));
    assert_served_by_itself(&with_hook, &out, &r);
}

/// A hook called after a thread started does not make the executable a worker: the thread
/// would start in the worker too, before the hook, outside the sandbox.
#[test]
fn a_hook_called_after_a_thread_started_is_refused() {
    let setup = setup("late-hook");
    let (out, r) = report(&mut setup.command(&[]));
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(
        r["error_kind"], "WorkerNotFound/Threaded { threads: Some(2) }",
        "{r:#}"
    );
    assert_eq!(r["children"], serde_json::json!([]), "{r:#}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("with 2 threads running (it must run before any thread starts)"),
        "{r:#}"
    );
}

/// A worker that finds a second thread in itself (started before the hook) refuses to
/// restrict itself and load: Landlock and seccomp would not bind that thread. The host gets
/// the worker's typed setup failure and starts no call.
#[test]
fn a_worker_with_a_thread_from_before_the_hook_refuses_to_load() {
    let setup = setup("thread-in-worker");
    let (out, r) = report(&mut setup.command(&[]));
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["stage"], "load", "{r:#}");
    assert_eq!(r["error_kind"], "Worker", "{r:#}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("2 threads were running before the worker restricted itself"),
        "{message}"
    );
}

/// The `skillgate` CLI calls the hook too: copied alone into a directory with no
/// `skillgate-worker`, it runs a plugin in process mode from a policy with no `worker`.
#[test]
fn the_cli_alone_runs_a_plugin_in_process_mode() {
    let host = Host::process();
    let dir = host.plugin("good", "good");
    let bin_dir = host.tmp.path().join("cli");
    std::fs::create_dir(&bin_dir).unwrap();
    let cli = bin_dir.join("skillgate");
    std::fs::copy(env!("CARGO_BIN_EXE_skillgate"), &cli).unwrap();
    let policy = host.tmp.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"trusted_roots":["root"],"keys":"keys","isolation":"process"}"#,
    )
    .unwrap();
    let out = Command::new(&cli)
        .args(["run", dir.to_str().unwrap(), "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["success"], true);
    assert_eq!(result["output"]["marker"], "v1");
    assert!(!bin_dir.join("skillgate-worker").exists());
    assert!(!host.tmp.path().join("skillgate-worker").exists());
}

/// A setuid executable (`AT_SECURE`) never serves as a worker: whoever starts it with the
/// worker argument would have it load code of their choosing with its owner's privileges.
/// As a host it does not re-execute itself (`WorkerNotFound` naming why); started as a
/// worker it exits at once with its own code (16). Control: the same binary without the
/// setuid bit gets past that check (and stops where it finds no descriptors). Needs root
/// (to make a setuid-to-65534 copy it then runs as root) and a filesystem without `nosuid`.
#[test]
fn a_privileged_executable_never_serves_as_a_worker() {
    // SAFETY: geteuid has no preconditions and touches no memory.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("not root: cannot make a setuid copy; skipped");
        return;
    }
    let setup = setup("worker-host");
    let plain = setup.add_bin("worker-host");
    std::os::unix::fs::chown(&setup.bin, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&setup.bin, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let (out, r) = report(&mut setup.command(&[]));
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["error_kind"], "WorkerNotFound/Privileged", "{r:#}");
    assert_eq!(r["children"], serde_json::json!([]), "{r:#}");

    let as_worker = |bin: &Path| {
        Command::new(bin)
            .args([skillgate::worker::WORKER_ARG, "0"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(as_worker(&setup.bin), Some(16));
    let control = as_worker(&plain);
    assert!(control.is_some() && control != Some(16), "{control:?}");
}
