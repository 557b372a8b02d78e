//! Verification throughput next to one pass of SHA-256 over the same bytes, and discovering
//! and verifying 1,000 small signed plugins next to reading and hashing their files.
//!
//! `cargo bench --bench verify`. Groups:
//! - `verify/{1,16,256}MiB`: `sha2 in memory` (the limit: one pass over bytes already in
//!   memory), `read + sha2` (the same from the page cache, what `sha256sum` does),
//!   `Gate::verify` (locate, signature, manifest, every file's size and SHA-256 while copying
//!   the library into a sealed memfd) and `Gate::verify_and_inspect` (plus the ELF checks,
//!   what `skillgate verify` runs).
//! - `discover_1000`: list the trusted root, keep directories holding a `plugin.json`, and
//!   run `Gate::verify` (resp. `verify_and_inspect`) on each, one after the other, or
//!   `Gate::verify_many` on the list (verify and inspect on every core: what
//!   `PluginLoader::discover_plugins` runs before it loads), vs the same listing plus
//!   reading and hashing every file of every plugin on one thread (the single-threaded
//!   floor) and on every core (the same work split as `verify_many` splits it).
//!
//! `discover_plugins` itself is not timed here: it also loads each plugin (a thread or a
//! worker process each, 1,000 per iteration, and thread-mode plugins are never unloaded).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fixture, MIB, full_run};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use skillgate::Isolation;

/// Reads `path` in 256 KiB reads, hashing as it goes.
fn read_and_hash(path: &Path) -> [u8; 32] {
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut hasher = Sha256::new();
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().into()
}

fn throughput(c: &mut Criterion) {
    let fx = Fixture::new();
    let gate = fx.gate(Isolation::Thread);
    let sizes: &[usize] = if full_run() { &[1, 16, 256] } else { &[1] };
    for &size in sizes {
        let name = format!("v{size}");
        let dir = fx.plugin(&name, size * MIB);
        let lib = dir.join(format!("lib{name}.so"));
        let bytes = std::fs::read(&lib).unwrap();
        let mut group = c.benchmark_group(format!("verify/{size}MiB"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        if size >= 16 {
            group.sample_size(10);
            group.warm_up_time(Duration::from_secs(1));
        } else {
            group.sample_size(30);
        }
        group.bench_function("sha2 in memory (baseline)", |b| {
            b.iter(|| Sha256::digest(std::hint::black_box(&bytes)))
        });
        group.bench_function("read + sha2 (baseline)", |b| b.iter(|| read_and_hash(&lib)));
        group.bench_function("Gate::verify", |b| {
            b.iter_batched(
                || (),
                |()| gate.verify(&dir).unwrap(),
                BatchSize::PerIteration,
            )
        });
        group.bench_function("Gate::verify_and_inspect", |b| {
            b.iter_batched(
                || (),
                |()| gate.verify_and_inspect(&dir).unwrap(),
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

/// Plugin directories directly beneath `root` holding a `plugin.json` (what
/// `PluginLoader::discover_plugins` considers), sorted.
fn discover(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.join("plugin.json").is_file())
        .collect();
    found.sort();
    found
}

/// Runs `f` on each item with `available_parallelism` threads taking the next item from a
/// shared counter (the scheme `Gate::verify_many` uses).
fn on_every_core<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    f(item);
                }
            });
        }
    });
}

fn discover_1000(c: &mut Criterion) {
    let count = if full_run() { 1000 } else { 20 };
    let fx = Fixture::new();
    // One small library (a 4 KiB blob; about 20 KiB in all), copied into `count` plugin
    // directories, each with its own name and signed manifest.
    let template = fx.path().join("libtemplate.so");
    common::build_library(fx.path(), &template, "template", 4096);
    for i in 0..count {
        let name = format!("p{i:04}");
        let dir = fx.root().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&template, dir.join(format!("lib{name}.so"))).unwrap();
        common::write_manifest(&dir, &name);
        skillgate::sign::sign_plugin_dir(&dir, &fx.key).unwrap();
    }
    let gate = fx.gate(Isolation::Thread);
    let root = fx.root();
    let mut group = c.benchmark_group(format!("discover_{count}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("list + read + sha2 every file (baseline)", |b| {
        b.iter(|| {
            for dir in discover(&root) {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    read_and_hash(&entry.unwrap().path());
                }
            }
        })
    });
    group.bench_function("list + read + sha2 every file, all cores (baseline)", |b| {
        b.iter(|| {
            let dirs = discover(&root);
            on_every_core(&dirs, |dir| {
                for entry in std::fs::read_dir(dir).unwrap() {
                    read_and_hash(&entry.unwrap().path());
                }
            })
        })
    });
    group.bench_function("list + Gate::verify_many", |b| {
        b.iter(|| {
            for (_, r) in gate.verify_many(&discover(&root)) {
                r.unwrap();
            }
        })
    });
    group.bench_function("list + Gate::verify", |b| {
        b.iter(|| {
            for dir in discover(&root) {
                gate.verify(&dir).unwrap();
            }
        })
    });
    group.bench_function("list + Gate::verify_and_inspect", |b| {
        b.iter(|| {
            for dir in discover(&root) {
                gate.verify_and_inspect(&dir).unwrap();
            }
        })
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
    targets = throughput, discover_1000
}
criterion_main!(benches);
