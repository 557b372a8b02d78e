//! Calls per second of a CPU-bound plugin with one worker and with two, driven by two
//! caller threads (policy `workers`). Each worker runs one call at a time (ABI v1), so one
//! worker serializes the two callers and two workers can use two cores. Prints the rates
//! and the ratio from one run; run with `cargo bench --bench workers` on a quiet machine
//! (`SPIN_SECONDS=N` sets each measurement's length, default 3).
//!
//! The plugin is `tests/plugins/spin.c` (about a millisecond of integer mixing per call),
//! built with the machine's `cc`, signed with a throwaway key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use skillgate::policy::Isolation;
use skillgate::sign::sign_plugin_dir;
use skillgate::{Gate, LoadedPlugin, PluginContext, Policy, SecretKey, TrustStore};

fn build_plugin(dir: &Path) -> PathBuf {
    let plugin = dir.join("root/spin");
    std::fs::create_dir_all(&plugin).unwrap();
    let lib = plugin.join("libspin.so");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/spin.c");
    let status = std::process::Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wl,-z,now",
            "-Wl,-z,relro",
            "-Wl,-z,noexecstack",
        ])
        .arg("-DPLUGIN_NAME=\"spin\"")
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        plugin.join("plugin.json"),
        r#"{"name":"spin","description":"spin","version":"1.0.0","abi_version":1}"#,
    )
    .unwrap();
    plugin
}

/// Calls per second of `callers` threads calling `plugin` back to back for `length`.
fn rate(plugin: &LoadedPlugin, callers: usize, length: Duration) -> f64 {
    let ctx = PluginContext::default();
    let stop = AtomicBool::new(false);
    let calls = AtomicU64::new(0);
    // Warm-up: every worker has run at least one call.
    for _ in 0..4 {
        plugin.execute(&ctx).unwrap();
    }
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    assert!(plugin.execute(&ctx).unwrap().success);
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(length);
        stop.store(true, Ordering::Relaxed);
    });
    calls.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let length = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(
            std::env::var("SPIN_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3),
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let plugin = build_plugin(tmp.path());
    let key = SecretKey::generate();
    sign_plugin_dir(&plugin, &key).unwrap();
    let trust = TrustStore::from_keys([key.public()]).unwrap();
    let gate_for = |workers| {
        let policy = Policy::builder()
            .trusted_roots([tmp.path().join("root")])
            .keys(tmp.path().join("keys"))
            .isolation(Isolation::Process)
            .worker(env!("CARGO_BIN_EXE_skillgate-worker"))
            .workers(workers)
            .build()
            .unwrap();
        Gate::with_trust_store(policy, trust.clone()).unwrap()
    };

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "CPU-bound calls (tests/plugins/spin.c), {:.1} s each, {cores} cores",
        length.as_secs_f64()
    );
    let one = gate_for(1).verify_and_load(&plugin).unwrap();
    let single = rate(&one, 1, length);
    let serialized = rate(&one, 2, length);
    drop(one);
    let two = gate_for(2).verify_and_load(&plugin).unwrap();
    let parallel = rate(&two, 2, length);
    drop(two);
    for (label, r) in [
        ("1 worker, 1 caller thread", single),
        ("1 worker, 2 caller threads (baseline)", serialized),
        ("2 workers, 2 caller threads", parallel),
    ] {
        println!(
            "  {label:<40} {r:>9.1} calls/s  ratio {:>5.2}x",
            r / serialized
        );
    }
}
