//! The plugin-thread sandbox (Landlock + seccomp + `no_new_privs`), attacked by a hostile
//! plugin (`tests/plugins/hostile.c`) one escape at a time.
//!
//! Every test loads its plugin in thread mode, so the sandbox lands on the plugin's own thread
//! and never on the test runner. Each test asserts (a) the plugin's own report: the attempt
//! failed with the expected errno (`EACCES` from Landlock, `EPERM` from seccomp), (b) a
//! host-side check where one exists (the file is not there, the host's umask, cwd, rlimits,
//! signal dispositions and stack are unchanged, the victim process and the sockets saw
//! nothing), and (c) that the same host still verifies, loads and runs a good plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillgate::LandlockStatus;
use skillgate::danger::Danger;
use skillgate::error::Error;
use skillgate::error::Exposure;
use skillgate::error::LocateError;
use skillgate::error::{GrantError, SandboxError};
use skillgate::policy::{Isolation, SandboxPolicy};
use skillgate::{Gate, LoadedPlugin, Policy};
use support::{Host, ctx, manifest_template};

const EACCES: i64 = libc::EACCES as i64;
const EPERM: i64 = libc::EPERM as i64;

// ---- loading the hostile plugin ---------------------------------------------------------

/// Builds the hostile plugin (with `-pthread`) for this host.
fn build_hostile(host: &Host) -> PathBuf {
    host.build_with("hostile", "hostile", &[], &["-pthread"])
}

/// The hostile plugin, loaded in thread mode under the host's default policy (no grants) and
/// a manifest that requests nothing.
fn hostile(host: &Host) -> (Gate, LoadedPlugin) {
    let lib = build_hostile(host);
    let dir = host.install("hostile", &lib);
    let gate = host.gate_with(hostile_policy(host.policy()));
    let plugin = gate
        .verify_and_load(&dir)
        .expect("the hostile plugin is signed and well formed: it must load (sandboxed)");
    (gate, plugin)
}

/// The hostile plugin loaded under `policy` with a manifest requesting `capabilities`.
fn hostile_with(host: &Host, policy: Policy, capabilities: Value) -> (Gate, LoadedPlugin) {
    let lib = build_hostile(host);
    let manifest = manifest_requesting(&manifest_template("hostile"), capabilities);
    let dir = host.install_with_manifest("hostile", &lib, &manifest);
    let gate = host.gate_with(hostile_policy(policy));
    let plugin = gate
        .verify_and_load(&dir)
        .expect("the hostile plugin with a capabilities request must load");
    (gate, plugin)
}

/// `policy` with every import denial taken off (a danger knob). The hostile plugin imports
/// `execve`, `posix_spawn` and `ptrace` on purpose, so the default policy refuses it at
/// inspection (tests/inspect.rs checks that); these tests exercise the sandbox behind the
/// inspector.
fn hostile_policy(policy: Policy) -> Policy {
    let mut danger = policy.danger().clone();
    danger
        .elf_mut()
        .allow_imports(skillgate::inspect::DEFAULT_DENIED_IMPORTS.iter().copied());
    policy.to_builder().danger(danger).build().unwrap()
}

/// `template` with a top-level `"capabilities"` object: `read`, `read_write` and
/// `connect_tcp` default to empty lists, `requested` overrides them.
fn manifest_requesting(template: &str, requested: Value) -> String {
    let mut caps = json!({"read": [], "read_write": [], "connect_tcp": []});
    for (k, v) in requested.as_object().expect("capabilities are an object") {
        caps[k] = v.clone();
    }
    let mut manifest: Value = serde_json::from_str(template).unwrap();
    manifest["capabilities"] = caps;
    serde_json::to_string(&manifest).unwrap()
}

/// The canonical form of a path (Landlock rules and grants name real paths).
fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap()
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_owned()
}

/// A directory `name` in the host's temporary directory holding `secret` (content known).
fn secret_dir(host: &Host, name: &str) -> (PathBuf, PathBuf) {
    let dir = host.tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "the host's secret\n").unwrap();
    (real(&dir), real(&file))
}

// ---- the plugin's report ----------------------------------------------------------------

/// What the hostile plugin reported for one attempt.
#[derive(Debug)]
struct Attempt {
    /// The mode the plugin ran in, so a failure names it.
    isolation: Isolation,
    action: String,
    /// The escape worked.
    ok: bool,
    errno: i64,
    stage: String,
    value: Option<i64>,
}

fn attempt(plugin: &LoadedPlugin, input: Value) -> Attempt {
    let result = plugin.execute(&ctx(input.clone())).unwrap_or_else(|e| {
        panic!(
            "{:?}: the call {input} must return normally, got {e:?}",
            plugin.isolation()
        )
    });
    assert!(
        result.success,
        "{:?}: the hostile plugin refused its input {input}: {:?}",
        plugin.isolation(),
        result.error
    );
    let out = &result.output;
    let field = |k: &str| {
        out.get(k)
            .unwrap_or_else(|| panic!("the report for {input} lacks {k:?}: {out:?}"))
    };
    Attempt {
        isolation: plugin.isolation(),
        action: field("action").as_str().unwrap().to_owned(),
        ok: field("ok").as_bool().unwrap(),
        errno: field("errno").as_i64().unwrap(),
        stage: field("stage").as_str().unwrap().to_owned(),
        value: out.get("value").and_then(Value::as_i64),
    }
}

fn errno_name(e: i64) -> String {
    let text = std::io::Error::from_raw_os_error(i32::try_from(e).unwrap_or(0));
    format!("errno {e} ({text})")
}

/// The attempt failed at `stage` with `errno`.
#[track_caller]
fn assert_denied(a: &Attempt, stage: &str, errno: i64, what: &str) {
    assert!(
        !a.ok,
        "{:?}: {what}: the sandbox let it through (the plugin reports success at {:?}): {a:?}",
        a.isolation, a.stage
    );
    assert_eq!(
        (a.stage.as_str(), a.errno),
        (stage, errno),
        "{:?}: {what}: expected a refusal at {stage:?} with {}, the plugin saw {} at {:?}: {a:?}",
        a.isolation,
        errno_name(errno),
        errno_name(a.errno),
        a.stage
    );
}

/// The attempt succeeded.
#[track_caller]
fn assert_allowed(a: &Attempt, what: &str) {
    assert!(
        a.ok,
        "{:?}: {what}: expected success, the plugin saw {} at {:?}: {a:?}",
        a.isolation,
        errno_name(a.errno),
        a.stage
    );
}

// ---- host-side observations -------------------------------------------------------------

/// A field of `/proc/self/status` (e.g. `Umask`, `SigCgt`), trimmed.
fn self_status(field: &str) -> String {
    proc_status("self", field)
}

fn proc_status(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field} line"))
        .trim()
        .to_owned()
}

/// The host's umask, as `/proc/self/status` reports it (reading it never changes it).
fn host_umask() -> u32 {
    u32::from_str_radix(&self_status("Umask"), 8).unwrap()
}

/// Whether the host has a handler installed for signal `sig` (bit `sig - 1` of `SigCgt`).
fn host_catches(sig: i32) -> bool {
    let mask = u64::from_str_radix(&self_status("SigCgt"), 16).unwrap();
    mask & (1u64 << (sig - 1)) != 0
}

/// The host's RLIMIT_NOFILE (soft, hard).
#[allow(unsafe_code)]
fn host_nofile() -> (u64, u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` to the valid, exclusively borrowed `rl`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (rl.rlim_cur, rl.rlim_max)
}

/// The permissions (`rw-p`) of the host's main-thread stack mapping.
fn host_stack_perms() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.trim_end().ends_with("[stack]"))
        .expect("/proc/self/maps has a [stack] mapping");
    line.split_whitespace().nth(1).unwrap().to_owned()
}

#[track_caller]
fn assert_host_stack_not_executable(when: &str) {
    let perms = host_stack_perms();
    assert!(
        !perms.contains('x'),
        "{when}: the host's stack is mapped {perms}: executable"
    );
}

/// A `sleep 30` child the plugin may try to signal or trace; killed when dropped.
struct Victim(Child);

impl Victim {
    fn spawn() -> Victim {
        let child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep 30");
        Victim(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The state letter from `/proc/<pid>/stat` (`S` sleeping, `T` stopped, `t` traced).
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = stat.rsplit_once(") ").expect("stat has a comm field").1;
        after.chars().next().unwrap()
    }

    fn tracer(&self) -> String {
        proc_status(&self.pid().to_string(), "TracerPid")
    }

    fn still_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Sends SIGSTOP and waits until the kernel reports it stopped.
    #[allow(unsafe_code)]
    fn stop(&self) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: kill has no memory effects; `pid` is our own child, not yet reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.state() != 'T' {
            assert!(Instant::now() < deadline, "the victim never stopped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback TCP listener; `connections()` says whether anything connected.
struct Listener(TcpListener);

impl Listener {
    fn open() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(l)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Whether a connection is waiting (polls for up to 200 ms; a loopback connect has
    /// completed its handshake before `connect` returns, so this is ample).
    fn was_connected(&self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            match self.0.accept() {
                Ok(_) => return true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---- the sandbox is on --------------------------------------------------------------------

#[test]
fn the_plugin_thread_reports_full_enforcement() {
    for host in Host::each_mode() {
        let (gate, plugin) = hostile(&host);
        let e = plugin.enforcement();
        assert!(
            matches!(e.landlock, LandlockStatus::FullyEnforced),
            "Landlock must be fully enforced on this kernel: {e:?}"
        );
        assert!(
            e.landlock_abi >= 6,
            "this kernel offers Landlock ABI >= 6: {e:?}"
        );
        assert!(e.seccomp, "the seccomp filter must be on: {e:?}");
        assert!(e.no_new_privs, "no_new_privs must be set: {e:?}");
        let a = attempt(&plugin, json!({"action": "noop"}));
        assert_allowed(&a, "a harmless call in the sandbox");
        assert_eq!(a.action, "noop");
        host.assert_still_serves(&gate);
    }
}

// ---- files (Landlock) ----------------------------------------------------------------------

#[test]
fn reading_a_file_outside_the_grants_is_denied() {
    for host in Host::each_mode() {
        let (_, secret) = secret_dir(&host, "private");
        let (gate, plugin) = hostile(&host);
        let a = attempt(
            &plugin,
            json!({"action": "read_file", "path": path_str(&secret)}),
        );
        assert_denied(
            &a,
            "open",
            EACCES,
            "reading a temporary file the host wrote",
        );

        let hostname = Path::new("/etc/hostname");
        if hostname.exists() {
            let a = attempt(
                &plugin,
                json!({"action": "read_file", "path": "/etc/hostname"}),
            );
            assert_denied(&a, "open", EACCES, "reading /etc/hostname");
        } else {
            eprintln!("/etc/hostname does not exist here; that half of the test is skipped");
        }
        host.assert_still_serves(&gate);
    }
}

#[test]
fn creating_a_file_is_denied_and_nothing_appears() {
    for host in Host::each_mode() {
        let dir = real(host.tmp.path());
        let target = dir.join("pwned");
        let (gate, plugin) = hostile(&host);
        let a = attempt(
            &plugin,
            json!({"action": "write_file", "path": path_str(&target)}),
        );
        assert_denied(
            &a,
            "open",
            EACCES,
            "creating a file in a directory the host owns",
        );
        assert!(
            !target.exists(),
            "{} exists: the plugin created it",
            target.display()
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn overwriting_an_existing_file_is_denied_and_it_is_unchanged() {
    for host in Host::each_mode() {
        let (_, secret) = secret_dir(&host, "private");
        let (gate, plugin) = hostile(&host);
        let a = attempt(
            &plugin,
            json!({"action": "write_file", "path": path_str(&secret)}),
        );
        assert_denied(&a, "open", EACCES, "truncating and writing a host file");
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "the host's secret\n",
            "the host's file was modified"
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_thread_the_plugin_spawns_inherits_the_restrictions() {
    for host in Host::each_mode() {
        let (_, secret) = secret_dir(&host, "private");
        let (gate, plugin) = hostile(&host);
        let a = attempt(
            &plugin,
            json!({"action": "thread_read", "path": path_str(&secret)}),
        );
        // Stage "open" also proves the thread was created (threads are allowed, clone with
        // CLONE_THREAD) and then ran into Landlock.
        assert_denied(
            &a,
            "open",
            EACCES,
            "reading a secret from a thread the plugin created",
        );
        host.assert_still_serves(&gate);
    }
}

// ---- processes (seccomp) --------------------------------------------------------------------

/// One refusal by seccomp: the action, where the plugin saw the refusal, and what it tried.
struct Refusal {
    input: Value,
    stage: &'static str,
    what: &'static str,
}

#[test]
fn processes_and_executable_memory_are_denied() {
    let rows = || {
        [
            Refusal {
                input: json!({"action": "fork"}),
                stage: "fork",
                what: "fork from the plugin thread",
            },
            // Were it allowed in thread mode, execve would replace the whole test process
            // with /bin/false, which exits 1, so the test binary fails even though no
            // assertion ran.
            Refusal {
                input: json!({"action": "execve"}),
                stage: "execve",
                what: "execve(\"/bin/false\") on the plugin thread",
            },
            // glibc tries clone3 (the filter answers ENOSYS), then clone(CLONE_VM|CLONE_VFORK),
            // which lacks CLONE_THREAD: EPERM, returned by posix_spawn as its result.
            Refusal {
                input: json!({"action": "posix_spawn"}),
                stage: "posix_spawn",
                what: "posix_spawn(\"/bin/true\")",
            },
            Refusal {
                input: json!({"action": "mprotect_exec"}),
                stage: "mprotect",
                what: "mprotect(PROT_READ|PROT_EXEC) of an anonymous page",
            },
            Refusal {
                input: json!({"action": "mmap_exec_anon"}),
                stage: "mmap",
                what: "mmap(PROT_READ|PROT_WRITE|PROT_EXEC, MAP_ANONYMOUS)",
            },
        ]
    };
    for host in Host::each_mode() {
        let (gate, plugin) = hostile(&host);
        for row in rows() {
            let a = attempt(&plugin, row.input);
            assert_denied(&a, row.stage, EPERM, row.what);
        }
        host.assert_still_serves(&gate);
    }
}

#[test]
fn ptrace_of_the_host_its_parent_or_another_process_is_denied() {
    for host in Host::each_mode() {
        let (gate, plugin) = hostile(&host);

        // The host itself (the kernel refuses a thread-group self-attach anyway, also EPERM).
        let me = std::process::id();
        let a = attempt(&plugin, json!({"action": "ptrace_parent", "pid": me}));
        assert_denied(
            &a,
            "ptrace_attach",
            EPERM,
            "ptrace(PTRACE_ATTACH) of the host process",
        );

        // The host's parent (cargo or a shell). Tests may run as root, where only seccomp
        // stands between the plugin and the attach.
        let parent = std::os::unix::process::parent_id();
        let a = attempt(&plugin, json!({"action": "ptrace_parent", "pid": parent}));
        assert_denied(
            &a,
            "ptrace_attach",
            EPERM,
            "ptrace(PTRACE_ATTACH) of the host's parent",
        );
        assert_eq!(
            proc_status(&parent.to_string(), "TracerPid"),
            "0",
            "the host's parent is being traced"
        );

        // A child of the host (the one Yama's ptrace_scope=1 would let the host trace).
        let mut victim = Victim::spawn();
        let a = attempt(
            &plugin,
            json!({"action": "ptrace_parent", "pid": victim.pid()}),
        );
        assert_denied(
            &a,
            "ptrace_attach",
            EPERM,
            "ptrace(PTRACE_ATTACH) of the host's child",
        );
        assert!(victim.still_running(), "the victim died");
        assert_eq!(victim.tracer(), "0", "the victim is being traced");
        assert!(
            !matches!(victim.state(), 't' | 'T'),
            "the victim was stopped: state {}",
            victim.state()
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn signalling_another_process_is_denied() {
    for host in Host::each_mode() {
        let mut victim = Victim::spawn();
        // Stop it first: a SIGCONT that got through would show as the victim running again.
        victim.stop();
        let (gate, plugin) = hostile(&host);
        let a = attempt(&plugin, json!({"action": "kill", "pid": victim.pid()}));
        assert_denied(&a, "kill", EPERM, "kill(victim, SIGCONT)");
        std::thread::sleep(Duration::from_millis(100));
        assert!(victim.still_running(), "the victim died");
        assert_eq!(
            victim.state(),
            'T',
            "the victim was continued: the plugin's SIGCONT arrived"
        );
        host.assert_still_serves(&gate);
    }
}

// ---- process-wide state (seccomp) ------------------------------------------------------------

/// A process-wide setting the plugin tries to change: how the host reads it, the attempt,
/// and the raw return the plugin must see (when it says one).
struct HostState {
    observe: Box<dyn Fn() -> String>,
    input: Value,
    stage: &'static str,
    what: &'static str,
    value: Option<i64>,
}

#[test]
fn process_wide_state_is_denied_and_the_host_keeps_its_own() {
    assert!(
        !host_catches(libc::SIGUSR2),
        "precondition: the test runner does not catch SIGUSR2"
    );
    for host in Host::each_mode() {
        let elsewhere = real(host.tmp.path());
        assert_ne!(std::env::current_dir().unwrap(), elsewhere);
        let mask = if host_umask() == 0o077 { 0o027 } else { 0o077 };
        let rows = [
            HostState {
                observe: Box::new(|| format!("SIGUSR2 handler: {}", host_catches(libc::SIGUSR2))),
                input: json!({"action": "sigaction"}),
                stage: "sigaction",
                what: "sigaction(SIGUSR2) (process-wide)",
                value: None,
            },
            HostState {
                observe: Box::new(|| format!("cwd {:?}", std::env::current_dir().unwrap())),
                input: json!({"action": "chdir", "path": path_str(&elsewhere)}),
                stage: "chdir",
                what: "chdir (the cwd is process-wide)",
                value: None,
            },
            // umask's raw return must be -1.
            HostState {
                observe: Box::new(|| format!("umask {:o}", host_umask())),
                input: json!({"action": "umask", "mask": mask}),
                stage: "umask",
                what: "umask (process-wide)",
                value: Some(-1),
            },
            // Reading the limit (prlimit64 without a new value) is allowed, so the refusal
            // comes at the setting.
            HostState {
                observe: Box::new(|| format!("RLIMIT_NOFILE {:?}", host_nofile())),
                input: json!({"action": "setrlimit"}),
                stage: "setrlimit",
                what: "lowering RLIMIT_NOFILE (process-wide)",
                value: None,
            },
        ];
        let (gate, plugin) = hostile(&host);
        for row in rows {
            let before = (row.observe)();
            let a = attempt(&plugin, row.input);
            assert_denied(&a, row.stage, EPERM, row.what);
            if let Some(v) = row.value {
                assert_eq!(a.value, Some(v), "{}: the raw return: {a:?}", row.what);
            }
            assert_eq!(
                (row.observe)(),
                before,
                "{}: the host's state changed",
                row.what
            );
        }
        host.assert_still_serves(&gate);
    }
}

// ---- executable memory (seccomp) -------------------------------------------------------------

#[test]
fn a_library_requiring_an_executable_stack_fails_to_load() {
    for host in Host::each_mode() {
        // C_FLAGS carry -z noexecstack; the later -z execstack wins (GNU_STACK RWE).
        let lib = host.build_with("good", "execstack", &[], &["-Wl,-z,execstack"]);
        let dir = host.install("execstack", &lib);
        // The default ELF policy refuses this library at inspection, before dlopen
        // (tests/inspect.rs checks that); allow the executable stack here so the load reaches
        // the sandbox, which must still deny making the stack executable.
        let mut danger = Danger::default();
        danger.elf_mut().allow_executable_stack();
        let policy = host.policy_with(|p| p.danger(danger));
        let gate = host.gate_with(policy);
        assert_host_stack_not_executable("before loading");
        let err = gate
            .verify_and_load(&dir)
            .expect_err("glibc must fail to make the stack executable (mprotect PROT_EXEC)");
        assert!(
            matches!(err, Error::Load(_)),
            "expected Error::Load (dlopen could not enable an executable stack), got {err:?}"
        );
        assert_host_stack_not_executable("after the refused load");
        host.assert_still_serves(&gate);
        assert_host_stack_not_executable("after serving a good plugin");
    }
}

// ---- code that runs inside dlopen --------------------------------------------------------------

#[test]
fn constructors_and_ifunc_resolvers_run_sandboxed() {
    for host in Host::each_mode() {
        let markers = real(host.tmp.path()).join("escape");
        std::fs::create_dir_all(&markers).unwrap();
        let marker = markers.join("marker");
        let define = format!("\"{}\"", path_str(&marker));
        let lib = host.build("ctor_escape", "ctorescape", &[("MARKER_PATH", &define)]);
        let dir = host.install("ctorescape", &lib);
        // The IFUNC is refused at inspection by default (tests/inspect.rs); allow it so the
        // resolver reaches the sandbox this test is about.
        let mut danger = Danger::default();
        danger.elf_mut().allow_ifunc();
        let policy = host.policy_with(|p| p.danger(danger));
        let gate = host.gate_with(policy);
        let plugin = gate
            .verify_and_load(&dir)
            .expect("a plugin whose constructor fails to escape still loads");
        let out = plugin.execute(&ctx(json!({}))).unwrap();
        assert!(out.success, "{out:?}");
        assert_eq!(out.output["probe"], 42, "the IFUNC must resolve: {out:?}");
        for (who, file) in [("ctor", "marker-ctor"), ("ifunc", "marker-ifunc")] {
            assert_eq!(
                out.output[&format!("{who}_ran")],
                true,
                "the {who} never ran: {out:?}"
            );
            assert_eq!(
                out.output[&format!("{who}_errno")],
                EACCES,
                "the {who} must have been refused by Landlock: {out:?}"
            );
            assert!(
                !markers.join(file).exists(),
                "the {who} created {}",
                markers.join(file).display()
            );
        }
        host.assert_still_serves(&gate);
    }
}

// ---- foreign-architecture syscalls ---------------------------------------------------------------

/// Whether `int $0x80` works on this kernel (IA-32 emulation on), tried in a throwaway
/// process: where it is off the instruction faults, which must never happen in the host.
#[cfg(target_arch = "x86_64")]
fn ia32_syscalls_work(host: &Host) -> bool {
    let src = host.build_dir.join("int80probe.c");
    let exe = host.build_dir.join("int80probe");
    std::fs::write(
        &src,
        "int main(void) { int r; __asm__ volatile(\"int $0x80\" : \"=a\"(r) : \"a\"(20) \
         : \"r8\", \"r9\", \"r10\", \"r11\", \"memory\", \"cc\"); return r > 0 ? 0 : 1; }\n",
    )
    .unwrap();
    let built = Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(built.success(), "cc failed to build the int 0x80 probe");
    Command::new(&exe).status().unwrap().success()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn int_0x80_is_refused_with_eperm_not_a_kill() {
    for host in Host::each_mode() {
        if !ia32_syscalls_work(&host) {
            eprintln!("IA-32 emulation is off on this kernel: int 0x80 faults anywhere; skipped");
            return;
        }
        let (gate, plugin) = hostile(&host);
        let a = attempt(&plugin, json!({"action": "int80"}));
        // A foreign-architecture syscall: SECCOMP_RET_KILL_PROCESS would have ended this test
        // process; the filter must answer ERRNO(EPERM), i.e. eax = -1.
        assert_eq!(
            a.value,
            Some(-1),
            "int 0x80 getpid must return -EPERM (-1) raw: {a:?}"
        );
        assert_denied(&a, "int80", EPERM, "i386 getpid through int 0x80");
        host.assert_still_serves(&gate);
    }
}

// ---- network (seccomp without a grant, Landlock with one) -----------------------------------------

#[test]
fn a_tcp_connect_without_a_grant_is_denied() {
    for host in Host::each_mode() {
        let listener = Listener::open();
        let (gate, plugin) = hostile(&host);
        let a = attempt(
            &plugin,
            json!({"action": "tcp_connect", "port": listener.port()}),
        );
        // No network granted: the filter refuses socket() itself.
        assert_denied(
            &a,
            "socket",
            EPERM,
            "a TCP connection to a loopback port the host opened",
        );
        assert!(
            !listener.was_connected(),
            "the host's listener got a connection"
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_udp_send_is_denied() {
    for host in Host::each_mode() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let (gate, plugin) = hostile(&host);
        let a = attempt(&plugin, json!({"action": "udp_send", "port": port}));
        assert_denied(
            &a,
            "socket",
            EPERM,
            "a UDP datagram to a loopback port the host bound",
        );
        let mut buf = [0u8; 16];
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => panic!("the host's UDP socket received {n} bytes from {from}"),
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "recv_from: {e}"
            ),
        }
        host.assert_still_serves(&gate);
    }
}

// ---- grants: what the policy allows of what the manifest requests ---------------------------------

#[test]
fn a_path_granted_and_requested_is_readable() {
    for host in Host::each_mode() {
        let (dir, secret) = secret_dir(&host, "granted");
        let mut sandbox = SandboxPolicy::default();
        sandbox.read.push(dir.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let (gate, plugin) = hostile_with(&host, policy, json!({"read": [path_str(&dir)]}));
        let a = attempt(
            &plugin,
            json!({"action": "read_file", "path": path_str(&secret)}),
        );
        assert_allowed(&a, "reading a file under a granted and requested directory");
        // Granted from the plugin thread, inherited by its threads.
        let a = attempt(
            &plugin,
            json!({"action": "thread_read", "path": path_str(&secret)}),
        );
        assert_allowed(&a, "reading it from a thread the plugin created");
        // Read is not write.
        let a = attempt(
            &plugin,
            json!({"action": "write_file", "path": path_str(&dir.join("new"))}),
        );
        assert_denied(
            &a,
            "open",
            EACCES,
            "creating a file under a read-only grant",
        );
        assert!(
            !dir.join("new").exists(),
            "the plugin created a file under a read grant"
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_path_requested_but_not_granted_stays_denied() {
    for host in Host::each_mode() {
        let (granted, _) = secret_dir(&host, "granted");
        let (ungranted, secret) = secret_dir(&host, "ungranted");
        let mut sandbox = SandboxPolicy::default();
        sandbox.read.push(granted.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let (gate, plugin) = hostile_with(
            &host,
            policy,
            json!({"read": [path_str(&granted), path_str(&ungranted)]}),
        );
        let a = attempt(
            &plugin,
            json!({"action": "read_file", "path": path_str(&secret)}),
        );
        assert_denied(
            &a,
            "open",
            EACCES,
            "reading a path the manifest requests but the policy does not grant",
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_path_granted_but_not_requested_stays_denied() {
    for host in Host::each_mode() {
        let (requested, _) = secret_dir(&host, "requested");
        let (unrequested, secret) = secret_dir(&host, "unrequested");
        let mut sandbox = SandboxPolicy::default();
        sandbox.read.push(requested.clone());
        sandbox.read.push(unrequested.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let (gate, plugin) = hostile_with(&host, policy, json!({"read": [path_str(&requested)]}));
        let a = attempt(
            &plugin,
            json!({"action": "read_file", "path": path_str(&secret)}),
        );
        assert_denied(
            &a,
            "open",
            EACCES,
            "reading a path the policy grants but the manifest never requested",
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_read_write_grant_allows_creating_files_there_only() {
    for host in Host::each_mode() {
        let (dir, _) = secret_dir(&host, "scratch");
        let mut sandbox = SandboxPolicy::default();
        sandbox.read_write.push(dir.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let (gate, plugin) = hostile_with(&host, policy, json!({"read_write": [path_str(&dir)]}));
        let inside = dir.join("out");
        let a = attempt(
            &plugin,
            json!({"action": "write_file", "path": path_str(&inside)}),
        );
        assert_allowed(&a, "creating a file under a read-write grant");
        assert_eq!(std::fs::read_to_string(&inside).unwrap(), "pwned");
        let outside = real(host.tmp.path()).join("out");
        let a = attempt(
            &plugin,
            json!({"action": "write_file", "path": path_str(&outside)}),
        );
        assert_denied(
            &a,
            "open",
            EACCES,
            "creating a file next to the granted directory",
        );
        assert!(!outside.exists(), "the plugin wrote outside its grant");
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_granted_tcp_port_connects_and_others_stay_denied() {
    for host in Host::each_mode() {
        let granted = Listener::open();
        let other = Listener::open();
        let mut sandbox = SandboxPolicy::default();
        sandbox.connect_tcp.push(granted.port());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let (gate, plugin) = hostile_with(&host, policy, json!({"connect_tcp": [granted.port()]}));

        let a = attempt(
            &plugin,
            json!({"action": "tcp_connect", "port": granted.port()}),
        );
        assert_allowed(&a, "connecting to the granted TCP port");
        assert!(
            granted.was_connected(),
            "the granted listener saw no connection"
        );

        let a = attempt(
            &plugin,
            json!({"action": "tcp_connect", "port": other.port()}),
        );
        // TCP is granted, so socket() works; Landlock refuses the connect to another port.
        assert_denied(
            &a,
            "connect",
            EACCES,
            "connecting to a TCP port that was not granted",
        );
        assert!(
            !other.was_connected(),
            "the other listener got a connection"
        );

        // Landlock governs TCP only; UDP must still be refused by the filter.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let a = attempt(
            &plugin,
            json!({"action": "udp_send", "port": udp.local_addr().unwrap().port()}),
        );
        assert_denied(&a, "socket", EPERM, "a UDP socket when only TCP is granted");
        let mut buf = [0u8; 16];
        assert!(
            udp.recv_from(&mut buf).is_err(),
            "the host's UDP socket received a datagram"
        );
        host.assert_still_serves(&gate);
    }
}

// ---- TCP means TCP: other protocols and implicit connects -----------------------------------

#[test]
fn mptcp_and_fast_open_cannot_reach_an_ungranted_port() {
    // This kernel has MPTCP on (net.mptcp.enabled), and Landlock's TCP rules govern neither
    // MPTCP sockets nor a connect made by a Fast Open send, so without the filter's rules
    // each of these reaches the other port.
    let mptcp_on = std::fs::read_to_string("/proc/sys/net/mptcp/enabled")
        .map(|v| v.trim() == "1")
        .unwrap_or(false);
    eprintln!("MPTCP enabled on this kernel: {mptcp_on}");
    for host in Host::each_mode() {
        let granted = Listener::open();
        let other = Listener::open();
        let mut sandbox = SandboxPolicy::default();
        sandbox.connect_tcp.push(granted.port());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let (gate, plugin) = hostile_with(&host, policy, json!({"connect_tcp": [granted.port()]}));
        for (action, stage, what) in [
            ("mptcp_connect", "socket", "an MPTCP socket (IPPROTO_MPTCP)"),
            (
                "fastopen_sendto",
                "sendto",
                "sendto(MSG_FASTOPEN) on a TCP socket",
            ),
            (
                "fastopen_connect",
                "setsockopt",
                "TCP_FASTOPEN_CONNECT, then connect",
            ),
            (
                "mptcp_fastopen",
                "socket",
                "an MPTCP socket with MSG_FASTOPEN",
            ),
        ] {
            let a = attempt(&plugin, json!({"action": action, "port": other.port()}));
            assert_denied(&a, stage, EPERM, what);
            assert!(
                !other.was_connected(),
                "{what}: the ungranted listener got a connection"
            );
        }
        // The control: plain TCP to the granted port still connects.
        let a = attempt(
            &plugin,
            json!({"action": "tcp_connect", "port": granted.port()}),
        );
        assert_allowed(&a, "a plain TCP connect to the granted port");
        assert!(granted.was_connected(), "the granted listener saw nothing");
        host.assert_still_serves(&gate);
    }
}

// ---- no executable memory after the load ------------------------------------------------------

#[test]
fn code_written_to_a_granted_file_cannot_be_mapped_executable() {
    // Process mode passes once the worker loads through sandbox::load_sandboxed (and is
    // handed its grant descriptors); until then its loads with grants fail closed.
    for host in Host::each_mode() {
        let (dir, _) = secret_dir(&host, "scratch");
        let mut sandbox = SandboxPolicy::default();
        sandbox.read_write.push(dir.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let (gate, plugin) = hostile_with(&host, policy, json!({"read_write": [path_str(&dir)]}));
        let code = dir.join("code.bin");
        let a = attempt(
            &plugin,
            json!({"action": "exec_written_file", "path": path_str(&code)}),
        );
        assert_denied(
            &a,
            "mmap",
            EPERM,
            "mapping code the plugin wrote PROT_READ|PROT_EXEC",
        );
        // The control: the file is there, holds the code, and the plugin may read it; only
        // mapping it executable was refused.
        assert_eq!(
            std::fs::read(&code).unwrap(),
            [0xb8, 0x2a, 0, 0, 0, 0xc3],
            "the plugin wrote the code"
        );
        let a = attempt(
            &plugin,
            json!({"action": "read_file", "path": path_str(&code)}),
        );
        assert_allowed(&a, "reading the written code back");
        host.assert_still_serves(&gate);
    }
}

// ---- grants by descriptor ----------------------------------------------------------------------

/// Swaps `dir` for a symlink to `outside` and back until `stop` is set; restores `dir`.
fn swap_in_a_loop(
    dir: PathBuf,
    outside: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Result<usize, String>> {
    std::thread::spawn(move || {
        let parked = dir.with_extension("real");
        let mut swaps = 0;
        // Stops at the first failure (the test may be tearing its directory down after a
        // failed assertion) and reports it.
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let swapped = std::fs::rename(&dir, &parked)
                .and_then(|()| std::os::unix::fs::symlink(&outside, &dir))
                .and_then(|()| {
                    std::thread::sleep(Duration::from_micros(200));
                    std::fs::remove_file(&dir)
                })
                .and_then(|()| std::fs::rename(&parked, &dir));
            if let Err(e) = swapped {
                return Err(format!("swap {swaps}: {e}"));
            }
            std::thread::sleep(Duration::from_micros(200));
            swaps += 1;
        }
        Ok(swaps)
    })
}

#[test]
fn a_grant_swapped_for_a_symlink_during_loads_never_grants_the_outside() {
    for host in Host::each_mode() {
        let (base, _) = secret_dir(&host, "base");
        let sub = base.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("secret"), "granted\n").unwrap();
        let (outside, outside_secret) = secret_dir(&host, "outside");
        let mut sandbox = SandboxPolicy::default();
        sandbox.read.push(base.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let lib = build_hostile(&host);
        let manifest = manifest_requesting(
            &manifest_template("hostile"),
            json!({"read": [path_str(&sub)]}),
        );
        let dir = host.install_with_manifest("hostile", &lib, &manifest);
        let gate = host.gate_with(hostile_policy(policy));

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = swap_in_a_loop(sub.clone(), outside.clone(), stop.clone());
        let (mut loaded, mut refused) = (0, 0);
        for _ in 0..40 {
            match gate.verify_and_load(&dir) {
                Ok(plugin) => {
                    loaded += 1;
                    let a = attempt(
                        &plugin,
                        json!({"action": "read_file", "path": path_str(&outside_secret)}),
                    );
                    assert_denied(&a, "open", EACCES, "reading the outside directory");
                }
                // The host refuses a grant it found swapped while planning, before any
                // worker starts: the same typed error in both modes.
                Err(Error::Sandbox(SandboxError::Grant(
                    GrantError::Open { .. } | GrantError::Changed { .. },
                ))) => refused += 1,
                Err(e) => panic!("a load during the swaps failed otherwise: {e:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap().expect("the swapper kept swapping");
        eprintln!(
            "{:?}: {loaded} loads, {refused} refused, {swaps} swaps",
            host.isolation
        );
        assert!(swaps > 0, "the swapper never ran");
        assert!(loaded > 0, "no load succeeded: the test proved nothing");
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_symlink_the_plugin_renames_over_its_grant_is_not_followed_by_the_next_load() {
    for host in Host::each_mode() {
        let (base, _) = secret_dir(&host, "project");
        let sub = base.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("secret"), "granted\n").unwrap();
        let (outside, outside_secret) = secret_dir(&host, "outside");
        // A symlink already in the read-write grant (the plugin cannot create one, but it
        // may rename one).
        let link = base.join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let mut sandbox = SandboxPolicy::default();
        sandbox.read_write.push(base.clone());
        sandbox.read.push(sub.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let caps = json!({"read_write": [path_str(&base)], "read": [path_str(&sub)]});
        let (gate, plugin) = hostile_with(&host, policy.clone(), caps);
        let through = sub.join("secret");
        let a = attempt(
            &plugin,
            json!({"action": "read_file", "path": path_str(&through)}),
        );
        assert_allowed(&a, "reading the granted subdirectory (control)");
        // The plugin swaps the symlink in: sub -> sub.moved, link -> sub.
        for (from, to) in [(&sub, base.join("sub.moved")), (&link, sub.clone())] {
            let a = attempt(
                &plugin,
                json!({"action": "rename", "path": path_str(from), "to": path_str(&to)}),
            );
            assert_allowed(&a, "renaming inside the read-write grant");
        }
        assert!(std::fs::symlink_metadata(&sub).unwrap().is_symlink());
        drop(plugin);

        // The next load: the policy's and the manifest's `sub` now resolve outside.
        let dir = host.root.join("hostile");
        let plugin = gate
            .verify_and_load(&dir)
            .expect("the next load still loads, without the swapped grant");
        assert!(
            !plugin.enforcement().read.contains(&outside),
            "the outside directory was granted: {:?}",
            plugin.enforcement()
        );
        for path in [&through, &outside_secret] {
            let a = attempt(
                &plugin,
                json!({"action": "read_file", "path": path_str(path)}),
            );
            assert_denied(
                &a,
                "open",
                EACCES,
                "reading outside through the swapped symlink",
            );
        }
        host.assert_still_serves(&gate);
    }
}

// ---- nothing others can write to is trusted ----------------------------------------------------

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_trusted_root_others_can_write_to_is_refused() {
    for host in Host::each_mode() {
        for (target, mode, exposure) in [
            (host.root.clone(), 0o777, Exposure::WorldWritable),
            (host.root.clone(), 0o775, Exposure::GroupWritable),
            (
                host.tmp.path().to_path_buf(),
                0o757,
                Exposure::WorldWritable,
            ),
        ] {
            set_mode(&target, mode);
            let err = Gate::new(host.policy()).expect_err("a root others can write to");
            set_mode(&target, if target == host.root { 0o755 } else { 0o700 });
            match err {
                Error::Locate(LocateError::WritableByOthers(w)) => {
                    assert_eq!(w.path, real(&target), "{w}");
                    assert_eq!((w.mode, w.exposure), (mode, exposure), "{w}");
                    assert_eq!(w.uid, rustix::process::geteuid().as_raw(), "{w}");
                }
                other => panic!("expected WritableByOthers for mode {mode:o}, got {other:?}"),
            }
        }
        // The control: the same root with safe modes is accepted, and serves.
        let gate = host.gate();
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_grant_others_can_write_to_is_refused_at_load() {
    for host in Host::each_mode() {
        let (dir, secret) = secret_dir(&host, "shared");
        let mut sandbox = SandboxPolicy::default();
        sandbox.read.push(dir.clone());
        let policy = host.policy_with(|p| p.sandbox(sandbox));
        let lib = build_hostile(&host);
        let manifest = manifest_requesting(
            &manifest_template("hostile"),
            json!({"read": [path_str(&dir)]}),
        );
        let plugin_dir = host.install_with_manifest("hostile", &lib, &manifest);
        let gate = host.gate_with(hostile_policy(policy));
        set_mode(&dir, 0o777);
        let err = gate
            .verify_and_load(&plugin_dir)
            .expect_err("a world-writable grant must be refused");
        // The host finds it while planning, before any worker starts: typed in both modes.
        match &err {
            Error::Sandbox(SandboxError::Grant(GrantError::WritableByOthers(w))) => {
                assert_eq!(w.path, dir, "{w}");
                assert_eq!((w.mode, w.exposure), (0o777, Exposure::WorldWritable));
            }
            _ => panic!("expected the grant refused as writable by others, got {err:?}"),
        }
        // The control: with a safe mode the same plugin loads and reads its grant.
        set_mode(&dir, 0o755);
        let plugin = gate
            .verify_and_load(&plugin_dir)
            .expect("a safe grant loads");
        let a = attempt(
            &plugin,
            json!({"action": "read_file", "path": path_str(&secret)}),
        );
        assert_allowed(&a, "reading the grant once it is safe");
        host.assert_still_serves(&gate);
    }
}

// ---- the loader plan comes from the loading process ---------------------------------------------

#[allow(unsafe_code)]
fn load_libm_into_this_process() {
    // SAFETY: dlopen of the C math library, a system library with no side effects on load;
    // the handle is kept for the life of the test process.
    let handle = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW) };
    assert!(
        !handle.is_null(),
        "dlopen(libm.so.6) failed in the test process"
    );
}

#[test]
fn a_plugin_needing_a_library_the_host_has_loaded_still_loads_in_a_worker() {
    load_libm_into_this_process();
    for host in Host::each_mode() {
        let lib = host.build_with("good", "needslibm", &[], &["-Wl,--no-as-needed", "-lm"]);
        let dir = host.install("needslibm", &lib);
        let gate = host.gate();
        let plugin = gate
            .verify_and_load(&dir)
            .expect("a plugin needing libm must load: the worker has not loaded libm");
        if host.isolation == Isolation::Process {
            // The worker had to map libm itself, so its loader was granted libm's directory.
            assert!(
                !plugin.enforcement().loader_read.is_empty(),
                "{:?}",
                plugin.enforcement()
            );
        }
        let out = plugin.execute(&ctx(json!({}))).unwrap();
        assert!(out.success, "{out:?}");
        host.assert_still_serves(&gate);
    }
}

// ---- syscall classes sandboxes must handle --------------------------------------------------------

#[test]
fn the_known_escape_classes_are_each_refused() {
    // (action, stage of the refusal, errno): EPERM is the seccomp filter, EACCES Landlock.
    let table: &[(&str, &str, i64)] = &[
        ("io_uring_setup", "io_uring_setup", EPERM),
        ("x32_getpid", "x32_getpid", EPERM),
        ("tiocsti", "ioctl", EPERM),
        ("tty_open", "open", EACCES),
        ("memfd_exec", "memfd_create", EPERM),
        ("open_by_handle_at", "open_by_handle_at", EPERM),
        ("process_vm_readv", "process_vm_readv", EPERM),
        ("process_vm_writev", "process_vm_writev", EPERM),
        ("pidfd_open", "pidfd_open", EPERM),
        ("pidfd_getfd", "pidfd_getfd", EPERM),
        ("unix_connect", "socket", EPERM),
        ("unix_abstract", "socket", EPERM),
        ("netlink", "socket", EPERM),
        ("packet", "socket", EPERM),
        ("raw_socket", "socket", EPERM),
        ("personality", "personality", EPERM),
        ("prctl_dumpable", "prctl", EPERM),
        ("prctl_seccomp", "prctl", EPERM),
        ("prctl_nnp_off", "prctl", EPERM),
        ("prctl_set_mm", "prctl", EPERM),
        ("seccomp_listener", "seccomp", EPERM),
        ("userfaultfd", "userfaultfd", EPERM),
        ("perf_event_open", "perf_event_open", EPERM),
        ("bpf", "bpf", EPERM),
        ("keyctl", "keyctl", EPERM),
        ("add_key", "add_key", EPERM),
        ("unshare", "unshare", EPERM),
        ("setns", "setns", EPERM),
        ("mount", "mount", EPERM),
        ("pivot_root", "pivot_root", EPERM),
        ("open_tree", "open_tree", EPERM),
        ("fsopen", "fsopen", EPERM),
        ("proc_self_mem", "open", EACCES),
        // The sealed library reopened for writing: the seals refuse the write (EPERM from
        // the kernel's seal check, at the write, not the open).
        ("memfd_reopen", "write", EPERM),
    ];
    for host in Host::each_mode() {
        let (gate, plugin) = hostile(&host);
        let mut wrong = Vec::new();
        for (action, stage, errno) in table {
            let a = attempt(&plugin, json!({"action": action}));
            if a.ok || a.stage != *stage || a.errno != *errno {
                wrong.push(format!(
                    "{action}: expected {stage}/{}, got {a:?}",
                    errno_name(*errno)
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{:?}: not refused as expected:\n{}",
            host.isolation,
            wrong.join("\n")
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_memory_bomb_is_bounded_in_a_worker() {
    // Process mode only: a thread-mode plugin shares the host's address space and no limit
    // bounds it (README, threat model); a bomb there would take the test host's memory.
    let host = Host::process();
    let (gate, plugin) = hostile(&host);
    let a = attempt(&plugin, json!({"action": "malloc_bomb"}));
    assert_denied(&a, "malloc", libc::ENOMEM as i64, "allocating 64 GiB");
    let mib = a.value.unwrap();
    assert!(
        mib * 1024 * 1024 <= i64::try_from(host.policy().limits().memory_bytes()).unwrap(),
        "the worker got {mib} MiB, more than its limit"
    );
    host.assert_still_serves(&gate);
}
