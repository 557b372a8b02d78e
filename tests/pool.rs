//! The warm pool of workers (process isolation): on by default and started lazily (a Gate
//! that only verifies starts no worker; the first process-mode load starts the pool), loads
//! take a worker started ahead of them, enforcement is a cold start's, a worker never serves
//! two plugins, a pooled worker that died is replaced, an empty pool is a cold start,
//! dropping the Gate leaves no worker and no descriptor behind, a loaded plugin holds
//! nothing of a pooled worker, a `compat::PluginLoader` keeps one pool across its
//! loads, and a pooled worker waits in its own cgroup bound to one task until the hand-over
//! gives it the plan's bound (root hosts). Process mode only: thread isolation has no workers (a thread-mode Gate has no
//! pool, checked below). CI runs this suite again as uid 65534.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillgate::compat::PluginLoader;
use skillgate::policy::DEFAULT_POOL_SIZE;
use skillgate::policy::{PolicyError, SandboxPolicy, WorkspaceAccess};
use skillgate::{Error, Gate, LoadOptions, Policy, TrustStore};
use support::{Host, ctx, is_our_child, manifest_template};

/// Serializes the tests of this file: they count this process's children, descriptors
/// and threads, which a parallel test's Gate would change.
static SERIAL: Mutex<()> = Mutex::new(());

/// A bound that proves "did not hang", not a speed.
const PATIENCE: Duration = Duration::from_secs(20);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pooled_policy(host: &Host, size: usize) -> Policy {
    host.process_policy()
        .to_builder()
        .pool_size(size)
        .build()
        .unwrap()
}

/// A Gate over `policy` whose pool was started by a first process-mode load (of a plugin
/// of its own, dropped again) and has filled to `size`; returns the Gate and the pooled
/// pids. That first load is a cold start: the pool starts only once it has its worker.
fn started_gate(host: &Host, policy: Policy) -> (Gate, Vec<u32>) {
    let size = policy.pool_size();
    let gate = host.gate_with(policy);
    let dir = host.root.join("starter");
    if !dir.exists() {
        host.plugin("good", "starter");
    }
    assert!(gate.pooled_worker_pids().is_empty(), "not started yet");
    let first = gate.verify_and_load(&dir).unwrap();
    run_good_any(&first);
    drop(first);
    let pooled = wait_for_pool(&gate, size, &[]);
    (gate, pooled)
}

fn run_good_any(plugin: &skillgate::LoadedPlugin) {
    assert!(plugin.execute(&ctx(json!({ "n": 1 }))).unwrap().success);
}

/// Waits until `gate`'s pool holds `n` workers, none of them in `not`.
fn wait_for_pool(gate: &Gate, n: usize, not: &[u32]) -> Vec<u32> {
    wait_for_pids(|| gate.pooled_worker_pids(), n, not)
}

/// Waits until `pids()` names `n` workers, none of them in `not`.
fn wait_for_pids(pids: impl Fn() -> Vec<u32>, n: usize, not: &[u32]) -> Vec<u32> {
    let until = Instant::now() + PATIENCE;
    loop {
        let pids = pids();
        if pids.len() == n && !pids.iter().any(|p| not.contains(p)) {
            return pids;
        }
        assert!(Instant::now() < until, "the pool never filled: {pids:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `pid` is no longer a running process (a zombie, or gone).
fn wait_dead(pid: u32) {
    let until = Instant::now() + PATIENCE;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim().chars().next()))
            .flatten();
        if matches!(state, None | Some('Z' | 'X')) {
            return;
        }
        assert!(Instant::now() < until, "{pid} did not die");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// This process's children, running or not yet reaped.
fn our_children() -> Vec<u32> {
    let mut children: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_our_child(*pid))
        .collect();
    children.sort_unstable();
    children
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

/// The link targets of `pid`'s descriptors, by number.
fn fds_of(pid: u32) -> Vec<(u32, PathBuf)> {
    let mut fds: Vec<(u32, PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list the descriptors of {pid}: {e}"))
        .map(|e| {
            let e = e.unwrap();
            let n: u32 = e.file_name().to_str().unwrap().parse().unwrap();
            (n, std::fs::read_link(e.path()).unwrap())
        })
        .collect();
    fds.sort();
    fds
}

fn run_good(plugin: &skillgate::LoadedPlugin) {
    let result = plugin.execute(&ctx(json!({ "n": 1 }))).unwrap();
    assert!(result.success);
    assert_eq!(result.output["marker"], "v1");
}

#[test]
fn loads_come_from_the_pool_and_a_worker_never_serves_two_plugins() {
    let _s = serial();
    let host = Host::process();
    let first = host.plugin("good", "first");
    let second = host.plugin("good", "second");
    let (gate, pooled) = started_gate(&host, pooled_policy(&host, 2));
    let a = gate.verify_and_load(&first).unwrap();
    let a_pid = a.worker_pid().unwrap();
    assert!(pooled.contains(&a_pid), "{a_pid} not in {pooled:?}");
    assert!(
        !gate.pooled_worker_pids().contains(&a_pid),
        "taken, so no longer pooled"
    );
    run_good(&a);
    let b = gate.verify_and_load(&second).unwrap();
    let b_pid = b.worker_pid().unwrap();
    assert!(pooled.contains(&b_pid), "{b_pid} not in {pooled:?}");
    assert_ne!(a_pid, b_pid);
    run_good(&b);
    // Refilled with new workers: neither taken one comes back, even after its plugin ends.
    drop(a);
    assert!(!is_our_child(a_pid), "a taken worker ends with its plugin");
    let refilled = wait_for_pool(&gate, 2, &[a_pid, b_pid]);
    let c = gate.verify_and_load(&first).unwrap();
    let c_pid = c.worker_pid().unwrap();
    assert!(refilled.contains(&c_pid));
    assert!(![a_pid, b_pid].contains(&c_pid));
    run_good(&c);
    run_good(&b);
    host.assert_still_serves(&gate);
}

/// The workspace is a grant descriptor: with it, the hand-over carries grants too.
fn workspace_policy(host: &Host, size: usize) -> Policy {
    let mut sandbox = SandboxPolicy::default();
    sandbox.workspace = WorkspaceAccess::Read;
    pooled_policy(host, size)
        .to_builder()
        .sandbox(sandbox)
        .build()
        .unwrap()
}

fn install_reading(host: &Host) -> PathBuf {
    let lib = host.build("good", "reader", &[]);
    let mut manifest: Value = serde_json::from_str(&manifest_template("reader")).unwrap();
    manifest["workspace"] = json!("read");
    host.install_with_manifest("reader", &lib, &serde_json::to_string(&manifest).unwrap())
}

#[test]
fn a_pooled_load_enforces_exactly_what_a_cold_start_does() {
    let _s = serial();
    let host = Host::process();
    let dir = install_reading(&host);
    let ws = host.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let options = LoadOptions::new().workspace(&ws);
    let cold_gate = host.gate_with(workspace_policy(&host, 0));
    let cold = cold_gate.verify_and_load_with(&dir, &options).unwrap();
    let (warm_gate, pooled) = started_gate(&host, workspace_policy(&host, 1));
    let warm = warm_gate.verify_and_load_with(&dir, &options).unwrap();
    assert_eq!(warm.worker_pid().map(|p| pooled.contains(&p)), Some(true));
    assert!(
        warm.enforcement().workspace.is_some(),
        "the grant reached the worker"
    );
    assert_eq!(warm.enforcement(), cold.enforcement());
    // The same descriptors, at the same numbers (the grant's included), and no more.
    let (cold_fds, warm_fds) = (
        fds_of(cold.worker_pid().unwrap()),
        fds_of(warm.worker_pid().unwrap()),
    );
    let numbers = |fds: &[(u32, PathBuf)]| fds.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(numbers(&warm_fds), numbers(&cold_fds));
    assert_eq!(
        numbers(&warm_fds),
        vec![0, 1, 2, 3, 4, 5, 6],
        "{warm_fds:?}"
    );
    assert!(
        warm_fds[5]
            .1
            .to_str()
            .unwrap()
            .starts_with("/memfd:skillgate-ring"),
        "the call region at 5: {warm_fds:?}"
    );
    assert_eq!(
        warm_fds[6].1,
        ws.canonicalize().unwrap(),
        "the workspace at the first grant"
    );
    run_good(&warm);
    run_good(&cold);
    host.assert_still_serves(&warm_gate);
}

/// The refill threads running now (their names are set by themselves as they start: the
/// control below looks only once its pool has filled).
fn refill_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| *n == "skillgate-pool")
        .count()
}

#[test]
fn pool_size_zero_is_a_cold_start_with_no_thread() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "cold");
    // Every earlier Gate of this file was dropped, its refill thread joined.
    assert_eq!(refill_threads(), 0);
    let gate = host.gate_with(pooled_policy(&host, 0));
    let plugin = gate.verify_and_load(&dir).unwrap();
    assert!(is_our_child(plugin.worker_pid().unwrap()));
    assert!(gate.pooled_worker_pids().is_empty());
    run_good(&plugin);
    assert_eq!(refill_threads(), 0, "no refill thread for size 0");
    // Control: a pooled Gate has one, once a load started its pool.
    let (pooled, _) = started_gate(&host, pooled_policy(&host, 1));
    assert_eq!(refill_threads(), 1);
    drop(pooled);
    assert_eq!(refill_threads(), 0, "joined on drop");
    // And thread isolation has no pool at all.
    let thread_gate = Host::new().gate();
    assert!(thread_gate.pooled_worker_pids().is_empty());
    assert_eq!(refill_threads(), 0);
    host.assert_still_serves(&gate);
}

#[test]
fn pool_size_is_bounded_with_a_typed_error() {
    let _s = serial();
    let host = Host::process();
    let max = skillgate::policy::MAX_POOL_SIZE;
    let err = host
        .process_policy()
        .to_builder()
        .pool_size(max + 1)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::PoolTooLarge { size, max: m } if size == max + 1 && m == max),
        "{err:?}"
    );
    assert_eq!(pooled_policy(&host, max).pool_size(), max);
    assert_eq!(
        host.process_policy().pool_size(),
        skillgate::policy::DEFAULT_POOL_SIZE
    );
    // From a file: the same bound, and an unknown field of the section is refused.
    let file = |pool: &str| {
        format!(r#"{{"trusted_roots":["r"],"keys":"k","isolation":"process","pool":{pool}}}"#)
    };
    let base = Path::new("/");
    assert_eq!(
        Policy::from_json(file(r#"{"size":0}"#).as_bytes(), base)
            .unwrap()
            .pool_size(),
        0
    );
    let err = Policy::from_json(file(&format!(r#"{{"size":{}}}"#, max + 1)).as_bytes(), base)
        .unwrap_err();
    assert!(matches!(err, PolicyError::PoolTooLarge { .. }), "{err:?}");
    let err = Policy::from_json(file(r#"{"sise":1}"#).as_bytes(), base).unwrap_err();
    assert!(matches!(err, PolicyError::Syntax(_)), "{err:?}");
}

#[test]
fn a_killed_pooled_worker_is_replaced_and_the_load_uses_another_or_starts_cold() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "survivor");
    let (gate, pooled) = started_gate(&host, pooled_policy(&host, 2));
    kill(pooled[0]);
    wait_dead(pooled[0]);
    let plugin = gate.verify_and_load(&dir).unwrap();
    let pid = plugin.worker_pid().unwrap();
    assert_eq!(pid, pooled[1], "the load takes the live one");
    run_good(&plugin);
    // The dead one was reaped and replaced.
    let refilled = wait_for_pool(&gate, 2, &pooled);
    assert!(!is_our_child(pooled[0]), "reaped");
    // Every pooled worker dead: a cold start, still a worker process.
    for p in &refilled {
        kill(*p);
        wait_dead(*p);
    }
    let cold = gate.verify_and_load(&dir).unwrap();
    let cold_pid = cold.worker_pid().unwrap();
    assert!(!refilled.contains(&cold_pid));
    assert_eq!(cold.isolation(), skillgate::policy::Isolation::Process);
    run_good(&cold);
    wait_for_pool(&gate, 2, &refilled);
    for p in &refilled {
        assert!(!is_our_child(*p), "reaped");
    }
    host.assert_still_serves(&gate);
}

/// A worker program that starts but exits at once when pooled (here a script that runs the
/// real worker for a cold start and exits 3 when started as a pooled worker, as an old or
/// misplaced worker build would) is not replaced as fast as it dies: the refill thread
/// pauses, longer each time. Before, it forked and executed a replacement each time it
/// found one gone, hundreds a second for as long as the Gate lived. Loads still work, each
/// a cold start, and dropping the Gate ends the thread. Control: the count file does see
/// the pooled starts (at least one).
#[test]
fn pooled_workers_that_exit_at_once_are_replaced_after_growing_pauses_and_loads_start_cold() {
    let _s = serial();
    let host = Host::process();
    let count = host.tmp.path().join("pooled-starts");
    let script = host.tmp.path().join("dying-worker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = {arg} ] && [ \"$2\" = pooled ]; then echo started >> {count}; exit 3; fi\nexec {real} \"$@\"\n",
            arg = skillgate::worker::WORKER_ARG,
            count = count.display(),
            real = env!("CARGO_BIN_EXE_skillgate-worker"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let policy = host
        .process_policy()
        .to_builder()
        .worker(&script)
        .pool_size(2)
        .build()
        .unwrap();
    let gate = host.gate_with(policy);
    let dir = host.plugin("good", "dying");
    let first = gate.verify_and_load(&dir).unwrap();
    run_good(&first);
    drop(first);
    // The first load started the pool; its workers die as they start.
    std::thread::sleep(Duration::from_millis(1500));
    let started = std::fs::read_to_string(&count)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(started >= 1, "control: the pool started no worker");
    assert!(
        started <= 15,
        "{started} pooled workers were started in 1.5 s, each dying at once"
    );
    let cold = gate.verify_and_load(&dir).unwrap();
    assert!(is_our_child(cold.worker_pid().unwrap()));
    run_good(&cold);
    drop(cold);
    host.assert_still_serves(&gate);
    drop(gate);
    assert_eq!(refill_threads(), 0, "the refill thread ended with the Gate");
}

#[test]
fn dropping_the_gate_ends_and_reaps_every_pooled_worker() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "dropped");
    // Warm up what lives as long as the process (the spawner thread) before counting.
    drop(
        host.gate_with(pooled_policy(&host, 0))
            .verify_and_load(&dir)
            .unwrap(),
    );
    let fds_before = fd_count();
    let (gate, pooled) = started_gate(&host, pooled_policy(&host, 3));
    for p in &pooled {
        assert!(is_our_child(*p));
    }
    assert!(
        fd_count() > fds_before,
        "control: pooled workers hold descriptors here"
    );
    let plugin = gate.verify_and_load(&dir).unwrap();
    drop(gate);
    // The loaded plugin outlives its Gate and still runs; the waiting ones are gone.
    run_good(&plugin);
    let taken = plugin.worker_pid().unwrap();
    for p in pooled.iter().filter(|p| **p != taken) {
        assert!(!is_our_child(*p), "pooled worker {p} left behind");
    }
    drop(plugin);
    assert!(!is_our_child(taken));
    assert_eq!(fd_count(), fds_before, "no descriptor leaked");
    assert!(
        !thread_names().iter().any(|n| n == "skillgate-pool"),
        "the refill thread was joined"
    );
}

#[test]
fn a_loaded_plugin_holds_nothing_of_a_pooled_worker() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "neighbour");
    let (gate, pooled) = started_gate(&host, pooled_policy(&host, 2));
    let plugin = gate.verify_and_load(&dir).unwrap();
    let loaded = plugin.worker_pid().unwrap();
    assert!(pooled.contains(&loaded), "{loaded} was pooled");
    // The refill: one worker spawned after the load, one waiting since before it.
    let waiting = wait_for_pool(&gate, 2, &[loaded]);
    let loaded_fds = fds_of(loaded);
    for p in &waiting {
        let theirs = fds_of(*p);
        // Control: the probe sees the waiting worker's channel, a socket at 4.
        let channel = &theirs.iter().find(|(n, _)| *n == 4).unwrap().1;
        assert!(
            channel.to_str().unwrap().starts_with("socket:"),
            "{theirs:?}"
        );
        assert!(
            !loaded_fds.iter().any(|(_, t)| t == channel),
            "the loaded worker holds pooled worker {p}'s channel: {loaded_fds:?}"
        );
        // And the waiting worker holds nothing plugin-specific: /dev/null on 0 to 3 (no
        // log pipe, no library), its channel at 4, no grant.
        assert_eq!(
            theirs.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        for (n, target) in theirs.iter().filter(|(n, _)| *n < 4) {
            assert_eq!(target, Path::new("/dev/null"), "fd {n} of {p}: {theirs:?}");
        }
    }
    // The loaded worker: stdio, library, its own channel, its own call region, nothing else.
    assert_eq!(
        loaded_fds.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5],
        "{loaded_fds:?}"
    );
    for (_, region) in loaded_fds.iter().filter(|(n, _)| *n == 5) {
        assert!(
            region
                .to_str()
                .unwrap()
                .starts_with("/memfd:skillgate-ring"),
            "{loaded_fds:?}"
        );
    }
    run_good(&plugin);
    host.assert_still_serves(&gate);
}

#[test]
fn a_refused_load_on_a_pooled_worker_ends_it_and_the_host_still_serves() {
    let _s = serial();
    let host = Host::process();
    // The ABI check refuses after the load: the worker taken must end, not return.
    let lib = host.build("good", "mismatch", &[]);
    let mut manifest: Value = serde_json::from_str(&manifest_template("mismatch")).unwrap();
    manifest["version"] = json!("2.0.0");
    let dir =
        host.install_with_manifest("mismatch", &lib, &serde_json::to_string(&manifest).unwrap());
    let (gate, pooled) = started_gate(&host, pooled_policy(&host, 1));
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Abi(skillgate::error::AbiError::MetadataMismatch { .. })
        ),
        "{err:?}"
    );
    assert!(
        !is_our_child(pooled[0]),
        "the refused worker was ended and reaped"
    );
    wait_for_pool(&gate, 1, &pooled);
    host.assert_still_serves(&gate);
}

#[test]
fn the_pool_is_on_by_default_and_starts_with_the_first_process_load_not_with_the_gate() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "lazy");
    // On by default, in code and in a file that does not name it.
    const { assert!(DEFAULT_POOL_SIZE > 0) };
    let policy = host.process_policy();
    assert_eq!(policy.pool_size(), DEFAULT_POOL_SIZE);
    let file = r#"{"trusted_roots":["r"],"keys":"k","isolation":"process"}"#;
    assert_eq!(
        Policy::from_json(file.as_bytes(), Path::new("/"))
            .unwrap()
            .pool_size(),
        DEFAULT_POOL_SIZE
    );
    let children = our_children();
    let gate = host.gate_with(policy);
    // A Gate that verifies and inspects starts no pool: no thread, no worker.
    gate.verify(&dir).unwrap();
    let inspected = gate.verify_and_inspect(&dir).unwrap();
    assert!(!gate.pool_started(), "the pool started before any load");
    assert!(gate.pooled_worker_pids().is_empty());
    assert_eq!(refill_threads(), 0);
    assert_eq!(our_children(), children, "a worker started before any load");
    // The first process-mode load is a cold start, then starts the pool, which fills.
    let first = gate.load(inspected).unwrap();
    let first_pid = first.worker_pid().unwrap();
    assert!(gate.pool_started());
    let pooled = wait_for_pool(&gate, DEFAULT_POOL_SIZE, &[]);
    assert!(!pooled.contains(&first_pid));
    // The next load takes a pooled worker.
    let second = gate.verify_and_load(&dir).unwrap();
    let second_pid = second.worker_pid().unwrap();
    assert!(
        pooled.contains(&second_pid),
        "{second_pid} not in {pooled:?}"
    );
    run_good(&first);
    run_good(&second);
    // A load refused before any worker is started starts no pool either.
    let idle = host.gate_with(host.process_policy());
    assert!(idle.verify_and_load(host.root.join("missing")).is_err());
    assert!(!idle.pool_started());
    host.assert_still_serves(&gate);
}

/// Whether `pid` was started as a pooled worker (its second argument says so).
fn started_pooled(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(args[1], b"--skillgate-worker-v1", "a worker: {args:?}");
    args[2] == b"pooled"
}

#[test]
fn an_empty_pool_is_a_cold_start_in_a_worker_never_thread_mode() {
    let _s = serial();
    let host = Host::process();
    let dir = host.plugin("good", "emptied");
    let (gate, pooled) = started_gate(&host, pooled_policy(&host, 1));
    // Control: the probe tells a pooled worker from a cold one.
    let taken = gate.verify_and_load(&dir).unwrap();
    assert_eq!(taken.worker_pid(), Some(pooled[0]));
    assert!(started_pooled(pooled[0]));
    // Empty the pool: kill the replacement once it waits. The refill thread's periodic
    // check may replace it again before the load looks (then the load is warm): try again.
    let mut cold = None;
    let mut seen = pooled.clone();
    for _ in 0..5 {
        let waiting = wait_for_pool(&gate, 1, &seen);
        kill(waiting[0]);
        wait_dead(waiting[0]);
        seen.extend(waiting);
        let plugin = gate.verify_and_load(&dir).unwrap();
        let pid = plugin
            .worker_pid()
            .expect("a worker process, never thread mode");
        assert_eq!(plugin.isolation(), skillgate::policy::Isolation::Process);
        assert!(is_our_child(pid));
        if !started_pooled(pid) {
            cold = Some(plugin);
            break;
        }
        seen.push(pid);
    }
    let cold = cold.expect("the load never found the pool empty");
    assert!(!seen.contains(&cold.worker_pid().unwrap()));
    run_good(&cold);
    run_good(&taken);
    host.assert_still_serves(&gate);
}

#[test]
fn a_compat_loader_keeps_one_pool_across_its_loads() {
    let _s = serial();
    let host = Host::process();
    let a = host.plugin("good", "compat-a");
    let b = host.plugin("good", "compat-b");
    let trust = TrustStore::load_dir(&host.keys_dir()).unwrap();
    let loader = PluginLoader::with_trust(pooled_policy(&host, 2), trust);
    assert!(loader.pooled_worker_pids().is_empty(), "not before a load");
    let first = loader.load_plugin(&a).unwrap();
    // The Gate of that call is gone; the loader's pool is not, and it fills.
    let pooled = wait_for_pids(|| loader.pooled_worker_pids(), 2, &[]);
    let second = loader.load_plugin(&b).unwrap();
    let left = loader.pooled_worker_pids();
    let taken: Vec<u32> = pooled
        .iter()
        .copied()
        .filter(|p| !left.contains(p))
        .collect();
    assert_eq!(
        taken.len(),
        1,
        "one pooled worker taken: {pooled:?} -> {left:?}"
    );
    assert!(is_our_child(taken[0]), "it serves the second plugin");
    for plugin in [&first, &second] {
        let result = plugin.execute(&ctx(json!({ "n": 1 }))).unwrap();
        assert!(result.success);
    }
    // The worker taken ends with its plugin and never comes back to the pool.
    drop(second);
    assert!(!is_our_child(taken[0]));
    let refilled = wait_for_pids(|| loader.pooled_worker_pids(), 2, &taken);
    // Dropping the loader (its last clone) ends the pool's workers; loaded plugins stay.
    let clone = loader.clone();
    drop(loader);
    assert_eq!(
        clone.pooled_worker_pids(),
        refilled,
        "a clone shares the pool"
    );
    drop(clone);
    for p in &refilled {
        assert!(!is_our_child(*p), "pooled worker {p} outlived its loader");
    }
    assert!(first.execute(&ctx(json!({ "n": 2 }))).unwrap().success);
}

fn net_ns(pid: impl std::fmt::Display) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
}

/// A pooled worker enters its network namespace while it waits (the costliest step of a
/// load, taken off it); a plan granting TCP needs the host's network, so it is started
/// cold, never handed to a pooled worker.
#[test]
fn pooled_workers_enter_their_network_namespace_ahead_and_a_tcp_plan_starts_cold() {
    let _s = serial();
    let host = Host::process();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lib = host.build("good", "dialer", &[]);
    let mut manifest: Value = serde_json::from_str(&manifest_template("dialer")).unwrap();
    manifest["capabilities"] = json!({"read": [], "read_write": [], "connect_tcp": [port]});
    let tcp =
        host.install_with_manifest("dialer", &lib, &serde_json::to_string(&manifest).unwrap());
    let plain = host.plugin("good", "plain");
    let mut sandbox = SandboxPolicy::default();
    sandbox.connect_tcp.push(port);
    let policy = pooled_policy(&host, 2)
        .to_builder()
        .sandbox(sandbox)
        .build()
        .unwrap();
    let (gate, pooled) = started_gate(&host, policy);
    // Does this kernel give workers a network namespace at all? A cold start says.
    let cold_gate = host.gate_with(pooled_policy(&host, 0));
    let cold_plain = cold_gate.verify_and_load(&plain).unwrap();
    let kernel_allows = cold_plain
        .enforcement()
        .namespaces
        .iter()
        .any(|n| n == "net");
    let ours = net_ns("self");
    for p in &pooled {
        assert_eq!(
            net_ns(p) != ours,
            kernel_allows,
            "waiting worker {p} is not in its own network namespace"
        );
    }
    // The TCP plan: a cold worker in the host's network namespace, not a pooled one.
    let dialer = gate.verify_and_load(&tcp).unwrap();
    let pid = dialer.worker_pid().unwrap();
    assert!(
        !pooled.contains(&pid),
        "a pooled worker was handed a TCP plan"
    );
    assert!(!started_pooled(pid));
    assert_eq!(net_ns(pid), ours);
    assert!(!dialer.enforcement().namespaces.iter().any(|n| n == "net"));
    assert_eq!(dialer.enforcement().connect_tcp, vec![port]);
    run_good(&dialer);
    // Control: a plan without TCP takes a pooled worker, reported and confirmed as a cold
    // start's (the host compares the namespace with its own).
    let warm = gate.verify_and_load(&plain).unwrap();
    let warm_pid = warm.worker_pid().unwrap();
    assert!(pooled.contains(&warm_pid));
    assert_eq!(
        warm.enforcement().namespaces,
        cold_plain.enforcement().namespaces
    );
    assert_eq!(net_ns(warm_pid) != ours, kernel_allows);
    run_good(&warm);
    run_good(&cold_plain);
    host.assert_still_serves(&gate);
}

/// The `pids` cgroup directory `pid` sits in, if it is not the host's own (a root host
/// gives each worker one; elsewhere there is none).
fn own_pids_cgroup(pid: u32) -> Option<PathBuf> {
    let of = |p: String| {
        std::fs::read_to_string(format!("/proc/{p}/cgroup"))
            .unwrap()
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "pids")
                    .then(|| path.trim_start_matches('/').to_owned())
            })
    };
    let (worker, host) = (of(pid.to_string())?, of("self".to_owned())?);
    (worker != host).then(|| Path::new("/sys/fs/cgroup/pids").join(worker))
}

/// `threads` for the liar's thread actions: the plan's task bound, set on a worker that
/// waited in its cgroup with `pids.max` 1.
const POOLED_THREADS: u64 = 32;

#[test]
fn a_pooled_worker_waits_in_its_cgroup_bound_to_one_task_and_gets_the_plans_bound() {
    let _s = serial();
    let host = Host::process();
    let policy = pooled_policy(&host, 1)
        .to_builder()
        .limits(
            skillgate::policy::Limits::builder()
                .threads(POOLED_THREADS)
                .call_timeout_ms(20_000),
        )
        .build()
        .unwrap();
    let (gate, pooled) = started_gate(&host, policy);
    let waiting = pooled[0];
    let cgroup = own_pids_cgroup(waiting);
    let root = rustix::process::getuid().is_root();
    eprintln!("root: {root}, waiting worker's cgroup: {cgroup:?}");
    if root {
        let dir = cgroup
            .clone()
            .expect("a root host gives a pooled worker its cgroup");
        let max = std::fs::read_to_string(dir.join("pids.max")).unwrap();
        assert_eq!(max.trim(), "1", "a waiting worker holds one task");
    }
    let lib = host.build("liar", "pooled-bomb", &[]);
    let dir = host.install("pooled-bomb", &lib);
    let plugin = gate.verify_and_load(&dir).unwrap();
    assert_eq!(
        plugin.worker_pid(),
        Some(waiting),
        "the load took the pooled worker"
    );
    let tasks = plugin.enforcement().tasks;
    if root {
        assert_eq!(
            tasks,
            skillgate::TaskBound::Cgroup {
                max: POOLED_THREADS
            }
        );
        let dir = cgroup.unwrap();
        let max = std::fs::read_to_string(dir.join("pids.max")).unwrap();
        assert_eq!(max.trim(), POOLED_THREADS.to_string(), "the plan's bound");
    }
    let act = |action: &str| {
        plugin
            .execute(&ctx(json!({ "action": action })))
            .unwrap()
            .output
    };
    // Control: the plan's bound lets 8 threads start (with `pids.max` still 1, none would).
    let expected = if tasks == skillgate::TaskBound::NoThreads {
        0
    } else {
        8
    };
    assert_eq!(act("threads")["threads"], expected);
    // The bomb stops at the plan's bound, not later.
    let out = act("thread_bomb");
    let n = out["threads"].as_u64().unwrap();
    if tasks == skillgate::TaskBound::NoThreads {
        assert_eq!(n, 0, "{out:?}");
    } else {
        assert!((24..POOLED_THREADS).contains(&n), "{out:?}");
        assert_eq!(out["errno"], libc::EAGAIN, "{out:?}");
    }
    assert_eq!(
        act("threads")["threads"],
        expected,
        "the worker still serves"
    );
    host.assert_still_serves(&gate);
}
