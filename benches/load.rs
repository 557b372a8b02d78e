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
//! For a 20 KiB plugin in process mode, `load/20KiB-pool`: `verify_and_load` and the load
//! step alone with the warm pool (`pool.size` 2, started by one untimed load first, as the
//! pool starts with a Gate's first process-mode load: each iteration's setup, untimed, waits until
//! the pool is full, so the timed part takes a pooled worker while the refill thread starts
//! its replacement beside it), and the same with `pool.size` 0 (a cold start) beside them.
//! The 1 and 16 MiB process rows above run with `pool.size` 0: they are the cold start.
//! Where the warm load's time goes, step by step: `benches/load_steps.rs` (a build with the
//! load path's timing stamps).
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
use std::time::{Duration, Instant};

use common::{Fixture, MIB, full_run};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use skillgate::{Gate, Isolation};

fn bare_dlopen(lib: &Path) -> libloading::Library {
    // SAFETY: the bench's own synthetic plugin, whose constructors are the C runtime's.
    unsafe { libloading::Library::new(lib) }.unwrap()
}

fn load(c: &mut Criterion) {
    let fx = Fixture::new();
    let sizes: &[usize] = if full_run() { &[1, 16] } else { &[1] };
    let thread = fx.gate(Isolation::Thread);
    let process = cold_gate(&fx);
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
    pooled(c, &fx);
}

/// A process-mode Gate with no pool: every load is a worker cold start.
fn cold_gate(fx: &Fixture) -> Gate {
    gate_with_pool(fx, 0)
}

fn gate_with_pool(fx: &Fixture, size: usize) -> Gate {
    let policy = fx
        .policy(Isolation::Process)
        .to_builder()
        .pool_size(size)
        .build()
        .unwrap();
    Gate::with_trust_store(policy, fx.trust()).unwrap()
}

/// Waits (untimed) until `gate`'s pool holds `size` workers.
fn pool_full(gate: &Gate, size: usize) {
    let until = Instant::now() + Duration::from_secs(30);
    while gate.pooled_worker_pids().len() < size {
        assert!(Instant::now() < until, "the pool never filled");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn pooled(c: &mut Criterion, fx: &Fixture) {
    const POOL: usize = 2;
    let dir = fx.plugin("p20k", 16 * 1024);
    let warm = gate_with_pool(fx, POOL);
    // The pool starts with the Gate's first process-mode load (a cold start), untimed.
    drop(warm.verify_and_load(&dir).unwrap());
    let cold = cold_gate(fx);
    let mut group = c.benchmark_group("load/20KiB-pool");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_millis(1));
    group.bench_function("verify_and_load process, pool", |b| {
        b.iter_batched(
            || pool_full(&warm, POOL),
            |()| warm.verify_and_load(&dir).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("verify_and_load process, cold (pool.size 0)", |b| {
        b.iter_batched(
            || (),
            |()| cold.verify_and_load(&dir).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("load only process, pool", |b| {
        b.iter_batched(
            || {
                pool_full(&warm, POOL);
                warm.verify_and_inspect(&dir).unwrap()
            },
            |inspected| warm.load(inspected).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("load only process, cold (pool.size 0)", |b| {
        b.iter_batched(
            || cold.verify_and_inspect(&dir).unwrap(),
            |inspected| cold.load(inspected).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
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
