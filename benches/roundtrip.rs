//! Per-call round trip and load latency, thread and process isolation, next to the
//! baseline a plain loader gives: a direct in-process FFI call under a mutex (what VT Code
//! does). Prints percentiles and ratios from one run; run with `cargo bench --bench roundtrip`.
//!
//! The plugin is `tests/plugins/good.c` (a small JSON echo), built with the machine's `cc`,
//! signed with a throwaway key. Every variant calls the same exported function with the same
//! input, so the ratios isolate what skillgate adds: the channel or socket hop, the JSON
//! decoding and the bounded copy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use skillgate::policy::Isolation;
use skillgate::sign::sign_plugin_dir;
use skillgate::{Gate, PluginContext, Policy, SecretKey, TrustStore};

const CALLS: usize = 20_000;
const LOADS: usize = 50;

fn build_plugin(dir: &Path) -> PathBuf {
    let plugin = dir.join("root/bench");
    std::fs::create_dir_all(&plugin).unwrap();
    let lib = plugin.join("libbench.so");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/good.c");
    let status = std::process::Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wl,-z,now",
            "-Wl,-z,relro",
            "-Wl,-z,noexecstack",
        ])
        .arg("-DPLUGIN_NAME=\"bench\"")
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        plugin.join("plugin.json"),
        r#"{"name":"bench","description":"bench","version":"1.0.0","abi_version":1}"#,
    )
    .unwrap();
    plugin
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

/// p50 and p99 of `n` timed calls of `f`, after `n / 10` untimed warm-up calls.
fn measure(n: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..n / 10 {
        f();
    }
    measure_spaced(n, Duration::ZERO, f)
}

/// p50 and p99 of `n` timed calls of `f`, sleeping `gap` (untimed) before each call.
fn measure_spaced(n: usize, gap: Duration, mut f: impl FnMut()) -> Stats {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    Stats {
        p50: samples[n / 2],
        p99: samples[n * 99 / 100],
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

type ExecuteFn = unsafe extern "C" fn(*const c_char) -> *const c_char;
type FreeFn = unsafe extern "C" fn(*const c_char);

#[allow(unsafe_code)]
fn direct_baseline(lib: &Path, input: &CStr) -> Stats {
    // SAFETY: the bench's own plugin, built just above from tests/plugins/good.c.
    let library = unsafe { libloading::Library::new(lib) }.unwrap();
    // SAFETY: the ABI's signatures for these exports.
    let execute: ExecuteFn =
        unsafe { *library.get::<ExecuteFn>(b"vtcode_plugin_execute").unwrap() };
    // SAFETY: as above.
    let free: FreeFn = unsafe { *library.get::<FreeFn>(b"vtcode_plugin_free_string").unwrap() };
    let lock = Mutex::new(());
    let stats = measure(CALLS, || {
        let _guard = lock.lock().unwrap();
        // SAFETY: a NUL-terminated input that outlives the call.
        let out = unsafe { execute(input.as_ptr()) };
        // SAFETY: the plugin returns a NUL-terminated string it allocated.
        let text = unsafe { CStr::from_ptr(out) }.to_bytes().to_vec();
        let _: serde_json::Value = serde_json::from_slice(&text).unwrap();
        // SAFETY: returned once to the plugin that allocated it.
        unsafe { free(out) };
    });
    std::mem::forget(library);
    stats
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (calls, loads) = if quick { (200, 3) } else { (CALLS, LOADS) };
    let tmp = tempfile::tempdir().unwrap();
    let plugin = build_plugin(tmp.path());
    let key = SecretKey::generate();
    sign_plugin_dir(&plugin, &key).unwrap();
    let trust = TrustStore::from_keys([key.public()]).unwrap();
    let gate_for = |isolation| {
        // The trust store is passed in; the policy still names a directory, as a file must.
        let policy = Policy::builder()
            .trusted_roots([tmp.path().join("root")])
            .keys(tmp.path().join("keys"))
            .isolation(isolation)
            .worker(env!("CARGO_BIN_EXE_skillgate-worker"))
            .build()
            .unwrap();
        Gate::with_trust_store(policy, trust.clone()).unwrap()
    };
    let ctx = PluginContext::default();
    let input = CString::new(serde_json::to_vec(&ctx).unwrap()).unwrap();

    let direct = direct_baseline(&plugin.join("libbench.so"), &input);
    let mut spaced_rows = Vec::new();
    let mut rows = vec![(
        "direct FFI call under a mutex (baseline)",
        direct.p50,
        direct.p99,
    )];
    for (label, isolation) in [
        ("thread mode", Isolation::Thread),
        ("process mode", Isolation::Process),
    ] {
        let gate = gate_for(isolation);
        let loaded = gate.verify_and_load(&plugin).unwrap();
        let s = measure(calls, || {
            loaded.execute(&ctx).unwrap();
        });
        rows.push((label, s.p50, s.p99));
        // Calls 500 us apart: the plugin's thread or worker has gone to sleep before each
        // call, so every call pays for waking it (the back-to-back loop above mostly does
        // not, since both sides poll briefly before sleeping).
        let spaced = measure_spaced(calls / 10, Duration::from_micros(500), || {
            loaded.execute(&ctx).unwrap();
        });
        spaced_rows.push((label, spaced.p50, spaced.p99));
    }
    println!("no-op call round trip, {calls} calls each");
    for (label, p50, p99) in &rows {
        println!(
            "  {label:<42} p50 {:>8.2} us  p99 {:>8.2} us  p50 ratio {:>6.1}x",
            us(*p50),
            us(*p99),
            us(*p50) / us(direct.p50)
        );
    }

    println!("the same, calls 500 us apart, {} calls each", calls / 10);
    for (label, p50, p99) in &spaced_rows {
        println!(
            "  {label:<42} p50 {:>8.2} us  p99 {:>8.2} us  p50 ratio {:>6.1}x",
            us(*p50),
            us(*p99),
            us(*p50) / us(direct.p50)
        );
    }

    println!("load (verify, inspect, sandbox, dlopen, first handshake), {loads} loads each");
    let mut load_p50 = Vec::new();
    for (label, isolation) in [
        ("thread mode", Isolation::Thread),
        ("process mode (worker cold start)", Isolation::Process),
    ] {
        let gate = gate_for(isolation);
        let s = measure(loads, || {
            drop(gate.verify_and_load(&plugin).unwrap());
        });
        println!(
            "  {label:<42} p50 {:>8.2} us  p99 {:>8.2} us",
            us(s.p50),
            us(s.p99)
        );
        load_p50.push(s.p50);
    }
    if let [thread, process] = load_p50[..] {
        println!(
            "  process / thread load ratio: {:.2}x",
            us(process) / us(thread)
        );
    }
}
