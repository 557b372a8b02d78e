//! Load latency next to a bare `dlopen`, and the worker's cold start.
//!
//! `cargo bench --bench load`. For the synthetic 1 MiB and 16 MiB plugins:
//! - `libloading::Library::new (baseline)`: `dlopen` of the file by path (and `dlclose`),
//!   what a plain loader does — no check at all;
//! - `verify_and_load thread` / `verify_and_load process`: every stage (locate, signature,
//!   hashes into a sealed memfd, ELF checks, sandbox, `dlopen` inside it, ABI and metadata
//!   handshake);
//! - `load only thread` / `load only process (worker cold start)`: `Gate::load` of an
//!   already verified and inspected plugin — the sandboxed thread, or spawning
//!   `skillgate-worker`, which restricts itself, maps the memfd and answers the handshake.
//!
//! Teardown (thread exit, worker kill and reap) is outside the timed part.
//!
//! A thread-mode plugin is never unloaded (see `src/load.rs`: no `dlclose`, the memfd stays
//! open), so every thread-mode load leaves a library mapped in this process, and thousands
//! of them make later `dlopen`s and spawns slower. The skillgate loads therefore run a fixed,
//! small number of iterations (no warm-up; 10 samples of 1..=10 iterations), process mode
//! first.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Fixture, MIB, full_run};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use skillgate::Isolation;

fn bare_dlopen(lib: &Path) -> libloading::Library {
    // SAFETY: the bench's own synthetic plugin, whose constructors are the C runtime's.
    unsafe { libloading::Library::new(lib) }.unwrap()
}

fn load(c: &mut Criterion) {
    let fx = Fixture::new();
    let sizes: &[usize] = if full_run() { &[1, 16] } else { &[1] };
    let thread = fx.gate(Isolation::Thread);
    let process = fx.gate(Isolation::Process);
    for &size in sizes {
        let name = format!("l{size}");
        let dir = fx.plugin(&name, size * MIB);
        let lib = dir.join(format!("lib{name}.so"));
        let mut group = c.benchmark_group(format!("load/{size}MiB"));
        group.sample_size(30);
        group.bench_function("libloading::Library::new (baseline)", |b| {
            b.iter_batched(|| (), |()| bare_dlopen(&lib), BatchSize::PerIteration)
        });
        // The fewest iterations criterion runs: 10 samples of 1..=10.
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(1));
        group.measurement_time(Duration::from_millis(1));
        for (label, gate) in [("process", &process), ("thread", &thread)] {
            group.bench_function(format!("verify_and_load {label}"), |b| {
                b.iter_batched(
                    || (),
                    |()| gate.verify_and_load(&dir).unwrap(),
                    BatchSize::PerIteration,
                )
            });
        }
        for (label, gate) in [
            ("load only process (worker cold start)", &process),
            ("load only thread", &thread),
        ] {
            group.bench_function(label, |b| {
                b.iter_batched(
                    || gate.verify_and_inspect(&dir).unwrap(),
                    |inspected| gate.load(inspected).unwrap(),
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = load
}
criterion_main!(benches);
