//! A driver for profiling thread-mode calls (strace, perf's software counters): the no-op call of
//! `benches/roundtrip.rs` (`tests/plugins/good.c`, a JSON echo), without the bench's other
//! rows, so a profile holds nothing but the load and the calls.
//!
//! ```sh
//! cargo build --release --example call_profile
//! target/release/examples/call_profile 20000
//! strace -f -c target/release/examples/call_profile 20000
//! perf stat -e context-switches,cpu-migrations,task-clock target/release/examples/call_profile 5000
//! ```
//!
//! Not under valgrind: it implements neither Landlock nor seccomp, and the plugin thread
//! is restricted with both before `dlopen` (`best-effort` as a second argument loads with
//! `Danger::sandbox_best_effort`, which forgives a missing Landlock, not a failed seccomp).
//! Prints the calls made, the wall time they took and the p50 and p99 of one call.
//!
//! `PROFILE_ISOLATION=process` profiles process mode instead (the worker binary next to
//! this example's, as `cargo build --release --bins --examples` leaves it), and
//! `PROFILE_INPUT=N` sends N bytes of input to `tests/plugins/ring.c`'s `sink` action (no
//! work per byte but `strlen`) instead of the no-op echo: the 1 MiB input row of the bench.
//! `PROFILE_GAP_US=N` sleeps N µs before each call (the bench's "calls 500 µs apart").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::time::Instant;

use skillgate::policy::Isolation;
use skillgate::sign::sign_plugin_dir;
use skillgate::{Gate, PluginContext, Policy, SecretKey, TrustStore};

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("CALLS is a number"));
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("root").join("profile");
    std::fs::create_dir_all(&plugin).unwrap();
    let input: Option<usize> = std::env::var("PROFILE_INPUT")
        .ok()
        .map(|n| n.parse().expect("PROFILE_INPUT is a number"));
    let process = std::env::var("PROFILE_ISOLATION").as_deref() == Ok("process");
    let source = if input.is_some() { "ring" } else { "good" };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/plugins/{source}.c"));
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wl,-z,now", "-Wl,-z,relro"])
        .args(["-Wl,-z,noexecstack", "-DPLUGIN_NAME=\"profile\"", "-o"])
        .arg(plugin.join("libprofile.so"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "cc failed");
    std::fs::write(
        plugin.join("plugin.json"),
        r#"{"name":"profile","description":"profile","version":"1.0.0","abi_version":1}"#,
    )
    .unwrap();
    let key = SecretKey::generate();
    sign_plugin_dir(&plugin, &key).unwrap();
    let mut danger = skillgate::danger::Danger::default();
    if std::env::args().nth(2).as_deref() == Some("best-effort") {
        danger.sandbox_best_effort();
    }
    let policy = Policy::builder()
        .trusted_roots([tmp.path().join("root")])
        .keys(tmp.path().join("keys"))
        .isolation(if process {
            Isolation::Process
        } else {
            Isolation::Thread
        })
        .worker(
            std::env::current_exe()
                .unwrap()
                .parent()
                .and_then(Path::parent)
                .unwrap()
                .join("skillgate-worker"),
        )
        .limits(skillgate::policy::Limits::builder().output_bytes(2 << 20))
        .danger(danger)
        .build()
        .unwrap();
    let gate =
        Gate::with_trust_store(policy, TrustStore::from_keys([key.public()]).unwrap()).unwrap();
    let loaded = gate.verify_and_load(&plugin).unwrap();
    let mut ctx = PluginContext::default();
    if let Some(n) = input {
        ctx.input.insert("action".into(), "sink".into());
        ctx.input.insert("data".into(), "x".repeat(n).into());
    }
    let gap = std::env::var("PROFILE_GAP_US")
        .ok()
        .map(|n| std::time::Duration::from_micros(n.parse().expect("PROFILE_GAP_US is a number")));
    let start = Instant::now();
    let mut each: Vec<f64> = (0..calls)
        .map(|_| {
            if let Some(gap) = gap {
                std::thread::sleep(gap);
            }
            let t = Instant::now();
            loaded.execute(&ctx).unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let took = start.elapsed();
    each.sort_by(f64::total_cmp);
    let at = |q: usize| each.get(calls * q / 100).copied().unwrap_or(0.0);
    println!(
        "{calls} {} calls in {:.1} ms: p50 {:.2} us, p99 {:.2} us",
        if process {
            "process-mode"
        } else {
            "thread-mode"
        },
        took.as_secs_f64() * 1e3,
        at(50),
        at(99)
    );
}
