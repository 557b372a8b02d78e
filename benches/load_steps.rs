//! The load path step by step: where a warm-pool `Gate::load` of a 20 KiB plugin spends
//! its time (issue 14 item 3). Not a criterion bench: it needs the timing stamps, which are
//! compiled only with `--cfg skillgate_stamps` (src/base/stamps.rs), so it is built apart
//! from everything else:
//!
//! ```sh
//! RUSTFLAGS="--cfg skillgate_stamps" CARGO_TARGET_DIR=target/stamps \
//!     cargo bench --bench load_steps -- [LOADS]
//! ```
//!
//! Each of `LOADS` loads (default 40) waits, untimed, until the pool (`pool.size` 2) is full
//! and the plugin is verified and inspected, then times `Gate::load`. The host's stamps are
//! taken from the library; the worker's arrive as lines on its stderr (the plugin's log,
//! captured here through `tracing`), on the same `CLOCK_MONOTONIC`. For each step it prints
//! the median time from the start of `Gate::load` and the median of its own share (the time
//! since the step before it in that load). A plain build prints how to run it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[cfg(skillgate_stamps)]
mod common;

#[cfg(not(skillgate_stamps))]
fn main() {
    eprintln!(
        "load_steps needs the timing stamps: \
         RUSTFLAGS=\"--cfg skillgate_stamps\" CARGO_TARGET_DIR=target/stamps cargo bench --bench load_steps"
    );
}

#[cfg(skillgate_stamps)]
fn main() {
    steps::run();
}

#[cfg(skillgate_stamps)]
mod steps {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::common::Fixture;
    use skillgate::load_stamps::{now_ns, take};
    use skillgate::{Gate, Isolation};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The worker's stamps logged so far (`stamp NS LABEL` lines), emptied.
        fn worker_stamps(&self) -> Vec<(String, u64)> {
            let bytes = std::mem::take(&mut *self.0.lock().unwrap());
            let text = String::from_utf8_lossy(&bytes);
            text.lines()
                .filter_map(|l| {
                    let rest = &l[l.find("stamp ")? + 6..];
                    let (ns, label) = rest.split_once(' ')?;
                    let label = label.split(" plugin=").next()?.trim_end();
                    Some((label.to_owned(), ns.parse().ok()?))
                })
                .collect()
        }
    }

    fn median(v: &mut [u64]) -> u64 {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    fn pool_full(gate: &Gate, size: usize) {
        let until = Instant::now() + Duration::from_secs(30);
        while gate.pooled_worker_pids().len() < size {
            assert!(Instant::now() < until, "the pool never filled");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn run() {
        let loads: usize = std::env::args()
            .skip(1)
            .find_map(|a| a.parse().ok())
            .unwrap_or(40);
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        let fx = Fixture::new();
        let dir = fx.plugin("p20k", 16 * 1024);
        let policy = fx
            .policy(Isolation::Process)
            .to_builder()
            .pool_size(2)
            .build()
            .unwrap();
        let gate = Gate::with_trust_store(policy, fx.trust()).unwrap();
        drop(gate.verify_and_load(&dir).unwrap());
        let mut from_start: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut share: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut totals = Vec::new();
        for _ in 0..loads {
            pool_full(&gate, 2);
            let inspected = gate.verify_and_inspect(&dir).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let _ = take();
            let _ = captured.worker_stamps();
            let t0 = now_ns();
            let plugin = gate.load(inspected).unwrap();
            let t1 = now_ns();
            // The worker's log line reaches the reader thread shortly after.
            std::thread::sleep(Duration::from_millis(20));
            drop(plugin);
            let mut all: Vec<(String, u64)> = take()
                .into_iter()
                .map(|(l, at)| (l.to_owned(), at))
                .chain(captured.worker_stamps())
                .filter(|(_, at)| *at >= t0 && *at <= t1)
                .collect();
            all.sort_by_key(|(_, at)| *at);
            let mut before = t0;
            for (label, at) in all {
                from_start.entry(label.clone()).or_default().push(at - t0);
                share.entry(label).or_default().push(at - before);
                before = at;
            }
            totals.push(t1 - t0);
        }
        let mut rows: Vec<(u64, String, u64, usize)> = from_start
            .into_iter()
            .map(|(label, mut v)| {
                let n = v.len();
                let m = median(&mut v);
                let s = median(share.get_mut(&label).unwrap());
                (m, label, s, n)
            })
            .collect();
        rows.sort();
        println!(
            "Gate::load, 20 KiB plugin, warm pool: {loads} loads, median {:.1} µs",
            median(&mut totals) as f64 / 1e3
        );
        println!("{:>10} {:>10}  step (seen in n loads)", "at µs", "share µs");
        for (at, label, s, n) in rows {
            println!(
                "{:>10.1} {:>10.1}  {label} ({n})",
                at as f64 / 1e3,
                s as f64 / 1e3
            );
        }
    }
}
