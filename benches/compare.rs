//! Whole commands side by side, and memory.
//!
//! `cargo bench --bench compare` (hyperfine-style, by hand: each command run N times after
//! one warm-up, median wall time, peak RSS from `wait4`):
//! 1. on the synthetic 256 MiB plugin: `sha256sum` of the library (one pass, the floor for
//!    any tool that hashes it), `minisign -Vm` of the library (signed with `minisign -S` by a
//!    key made with `minisign -G -W`), and `skillgate verify` of the plugin directory;
//! 2. in this process, around `Gate::verify` / `verify_and_load` of the 256 MiB plugin: the
//!    peak RSS added (`VmHWM` after `/proc/self/clear_refs` = 5, minus `VmRSS` before) and
//!    the shared memory added (`Shmem` in `/proc/meminfo`: the sealed memfd);
//! 3. memory per loaded plugin (1 MiB synthetic plugin, 16 loaded at once, one call each):
//!    host `VmRSS` and `Shmem` deltas per plugin, each worker's `VmRSS`, `VmHWM` and `Pss`;
//!    the baseline is `dlopen` of 16 copies of the file.
//!
//! Skipped, with a note, when `minisign` is not installed (`scripts/setup.sh` installs it).
#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, MIB, full_run, meminfo_kb, mib, ms, reset_peak, rollup_kb, status_kb};
use skillgate::{Isolation, PluginContext};

/// Runs `cmd` to completion; returns its wall time and peak RSS (bytes).
fn run_measured(cmd: &mut Command) -> (Duration, u64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals above; the `Child` is
    // never waited on afterwards (it is forgotten), so the pid is reaped exactly once.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    std::mem::forget(child);
    (elapsed, usage.ru_maxrss as u64 * 1024)
}

/// Median wall time and largest peak RSS of `n` runs (after one warm-up run).
fn median_run(n: usize, mut make: impl FnMut() -> Command) -> (Duration, u64) {
    run_measured(&mut make());
    let mut runs: Vec<(Duration, u64)> = (0..n).map(|_| run_measured(&mut make())).collect();
    let peak = runs.iter().map(|r| r.1).max().unwrap_or(0);
    runs.sort();
    (runs[n / 2].0, peak)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn commands(fx: &Fixture, dir: &Path, lib: &Path, size: usize, runs: usize) {
    let policy = fx.policy_file(Isolation::Thread);
    let bytes = std::fs::metadata(lib).unwrap().len();
    println!(
        "whole commands on the {size} MiB plugin ({:.1} MiB library), median of {runs} runs, page cache warm",
        mib(bytes)
    );
    let mut rows: Vec<(String, Duration, u64)> = Vec::new();
    let (t, rss) = median_run(runs, || {
        let mut c = Command::new("sha256sum");
        c.arg(lib);
        c
    });
    rows.push(("sha256sum (baseline: one pass)".into(), t, rss));
    let sha = t;
    let mut minisign = None;
    if have("minisign") {
        let pk = fx.path().join("minisign.pub");
        let sk = fx.path().join("minisign.key");
        let sig = fx.path().join("lib.minisig");
        if !pk.exists() {
            let out = Command::new("minisign")
                .args(["-G", "-W", "-f", "-p"])
                .arg(&pk)
                .arg("-s")
                .arg(&sk)
                .output()
                .unwrap();
            assert!(out.status.success(), "minisign -G: {out:?}");
        }
        let out = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&sk)
            .arg("-m")
            .arg(lib)
            .arg("-x")
            .arg(&sig)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "minisign -S: {out:?}");
        let (t, rss) = median_run(runs, || {
            let mut c = Command::new("minisign");
            c.arg("-V")
                .arg("-q")
                .arg("-p")
                .arg(&pk)
                .arg("-m")
                .arg(lib)
                .arg("-x")
                .arg(&sig);
            c
        });
        rows.push(("minisign -V (baseline)".into(), t, rss));
        minisign = Some(t);
    } else {
        println!("  minisign is not installed (scripts/setup.sh installs it): its row is skipped");
    }
    let (t, rss) = median_run(runs, || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skillgate"));
        c.arg("verify").arg("--policy").arg(&policy).arg(dir);
        c
    });
    rows.push(("skillgate verify".into(), t, rss));
    for (label, t, rss) in &rows {
        print!(
            "  {label:<34} {:>9.1} ms  {:>7.0} MiB/s  peak RSS {:>7.1} MiB  time / sha256sum {:>5.2}x",
            ms(*t),
            mib(bytes) / t.as_secs_f64(),
            mib(*rss),
            t.as_secs_f64() / sha.as_secs_f64()
        );
        if let Some(m) = minisign {
            print!(
                "  minisign / this {:>5.2}x",
                m.as_secs_f64() / t.as_secs_f64()
            );
        }
        println!();
    }
}

fn me() -> &'static str {
    "self"
}

/// Peak RSS added and Shmem added by `f`, and what `f` returned.
fn around<T>(f: impl FnOnce() -> T) -> (T, u64, i64) {
    let peak_reset = reset_peak();
    let rss0 = status_kb(me(), "VmRSS");
    let shmem0 = meminfo_kb("Shmem") as i64;
    let out = f();
    let hwm = if peak_reset {
        status_kb(me(), "VmHWM")
    } else {
        status_kb(me(), "VmRSS")
    };
    let shmem = meminfo_kb("Shmem") as i64 - shmem0;
    (out, hwm.saturating_sub(rss0), shmem)
}

fn memory_large(fx: &Fixture, dir: &Path, lib: &Path, size: usize) {
    println!("host memory around one {size} MiB plugin (VmHWM reset before each step)");
    if !reset_peak() {
        println!("  /proc/self/clear_refs is not writable: peak figures fall back to VmRSS");
    }
    let thread = fx.gate(Isolation::Thread);
    let ((), peak, _) = around(|| drop(std::fs::read(lib).unwrap()));
    println!(
        "  std::fs::read of the library (baseline)   peak RSS added {:>7.1} MiB",
        mib(peak)
    );
    let (verified, peak, shmem) = around(|| thread.verify(dir).unwrap());
    println!(
        "  Gate::verify                              peak RSS added {:>7.1} MiB  Shmem added {:>7.1} MiB (the sealed memfd)",
        mib(peak),
        shmem as f64 / MIB as f64
    );
    drop(verified);
    let ctx = PluginContext::default();
    for (label, isolation) in [
        ("thread", Isolation::Thread),
        ("process", Isolation::Process),
    ] {
        let gate = fx.gate(isolation);
        let (plugin, peak, shmem) = around(|| {
            let p = gate.verify_and_load(dir).unwrap();
            p.execute(&ctx).unwrap();
            p
        });
        print!(
            "  verify_and_load {label:<8} + 1 call        peak RSS added {:>7.1} MiB  Shmem added {:>7.1} MiB",
            mib(peak),
            shmem as f64 / MIB as f64
        );
        if let Some(pid) = plugin.worker_pid() {
            let pid = pid.to_string();
            print!(
                "  worker VmHWM {:.1} MiB, Pss {:.1} MiB",
                mib(status_kb(&pid, "VmHWM")),
                mib(rollup_kb(&pid, "Pss"))
            );
        }
        println!();
        drop(plugin);
    }
}

fn memory_per_plugin(fx: &Fixture, dir: &Path, lib: &Path, count: usize) {
    println!("memory per loaded plugin (1 MiB synthetic plugin, {count} loaded, one call each)");
    let ctx = PluginContext::default();
    // Baseline: dlopen of `count` distinct copies (the same path would be loaded once).
    let copies: Vec<PathBuf> = (0..count)
        .map(|i| {
            let p = fx.path().join(format!("copy{i}.so"));
            std::fs::copy(lib, &p).unwrap();
            p
        })
        .collect();
    let rss0 = status_kb(me(), "VmRSS");
    let libs: Vec<libloading::Library> = copies
        .iter()
        // SAFETY: the bench's own synthetic plugin.
        .map(|p| unsafe { libloading::Library::new(p) }.unwrap())
        .collect();
    let delta = status_kb(me(), "VmRSS").saturating_sub(rss0);
    println!(
        "  bare dlopen (baseline)   host VmRSS +{:>7.0} KiB per plugin",
        delta as f64 / 1024.0 / count as f64
    );
    drop(libs);
    for (label, isolation) in [
        ("thread", Isolation::Thread),
        ("process", Isolation::Process),
    ] {
        let gate = fx.gate(isolation);
        let rss0 = status_kb(me(), "VmRSS");
        let shmem0 = meminfo_kb("Shmem") as i64;
        let plugins: Vec<_> = (0..count)
            .map(|_| {
                let p = gate.verify_and_load(dir).unwrap();
                p.execute(&ctx).unwrap();
                p
            })
            .collect();
        let host = status_kb(me(), "VmRSS").saturating_sub(rss0);
        let shmem = meminfo_kb("Shmem") as i64 - shmem0;
        print!(
            "  {label:<8} mode            host VmRSS +{:>7.0} KiB per plugin, Shmem +{:>7.0} KiB per plugin",
            host as f64 / 1024.0 / count as f64,
            shmem as f64 / 1024.0 / count as f64
        );
        let pids: Vec<String> = plugins
            .iter()
            .filter_map(|p| p.worker_pid())
            .map(|p| p.to_string())
            .collect();
        if !pids.is_empty() {
            let avg = |f: &dyn Fn(&str) -> u64| {
                pids.iter().map(|p| f(p)).sum::<u64>() as f64 / 1024.0 / pids.len() as f64
            };
            print!(
                "; each worker VmRSS {:>6.0} KiB, VmHWM {:>6.0} KiB, Pss {:>6.0} KiB",
                avg(&|p| status_kb(p, "VmRSS")),
                avg(&|p| status_kb(p, "VmHWM")),
                avg(&|p| rollup_kb(p, "Pss"))
            );
        }
        println!();
        drop(plugins);
    }
}

fn main() {
    let full = full_run();
    let (size, runs, count) = if full { (256, 7, 16) } else { (1, 1, 2) };
    let fx = Fixture::new();
    let name = format!("c{size}");
    let dir = fx.plugin(&name, size * MIB);
    let lib = dir.join(format!("lib{name}.so"));
    commands(&fx, &dir, &lib, size, runs);
    memory_large(&fx, &dir, &lib, size);
    let small = fx.plugin("m1", MIB);
    memory_per_plugin(&fx, &small, &small.join("libm1.so"), count);
}
