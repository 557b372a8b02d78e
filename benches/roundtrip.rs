//! Per-call round trip and load latency, thread and process isolation, next to the
//! baseline a plain loader gives: a direct in-process FFI call under a mutex (what VT Code
//! does), and the two IPC floors between two processes of this same bench (a unix-socket
//! ping-pong, and a futex ping-pong over a shared mapping, the peer being this bench binary
//! re-executed: no fork of a process that may already run threads). Prints percentiles and
//! ratios from one run; run with `cargo bench --bench roundtrip`. Two futex ping-pongs: one
//! where both sides always sleep (every ping and pong a futex wake-up), and one where both
//! wait as the call region does (spin up to 20 us, then sleep, woken only if asleep), the
//! floor for the region's protocol; and how often the first one's reply came from the vCPU
//! that posted (both processes on one vCPU make every wake a context switch). A diagnostic
//! row repeats the spin-then-futex ping-pong with the peer in a session of its own, as a
//! worker is (`setsid`): with autogroup scheduling each session is a scheduling group.
//!
//! The plugin is `tests/plugins/good.c` (a small JSON echo), built with the machine's `cc`,
//! signed with a throwaway key. Every variant calls the same exported function with the same
//! input, so the ratios isolate what skillgate adds: the call region or socket hop, the JSON
//! decoding and the bounded copy. The 1 MiB rows use `tests/plugins/ring.c` (`sink` only
//! takes the input's length, `fill` returns `size` bytes made with `memset`), so what they
//! time is the host's JSON work and the transport, beside a direct in-process call of the
//! same plugin with the same context doing the same JSON work; the idle row reads the worker's CPU time
//! from `/proc/<pid>/stat`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::ffi::{CStr, CString, c_char};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use skillgate::policy::Isolation;
use skillgate::sign::sign_plugin_dir;
use skillgate::{Gate, PluginContext, Policy, SecretKey, TrustStore};

const CALLS: usize = 20_000;
const LOADS: usize = 50;

fn build_plugin(dir: &Path) -> PathBuf {
    build_named(dir, "bench", "good")
}

/// Builds `tests/plugins/<source>.c` as plugin `name` under `dir/root`.
fn build_named(dir: &Path, name: &str, source: &str) -> PathBuf {
    let plugin = dir.join("root").join(name);
    std::fs::create_dir_all(&plugin).unwrap();
    let lib = plugin.join(format!("lib{name}.so"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/plugins/{source}.c"));
    let status = std::process::Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wl,-z,now",
            "-Wl,-z,relro",
            "-Wl,-z,noexecstack",
        ])
        .arg(format!("-DPLUGIN_NAME=\"{name}\""))
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        plugin.join("plugin.json"),
        format!(r#"{{"name":"{name}","description":"bench","version":"1.0.0","abi_version":1}}"#),
    )
    .unwrap();
    plugin
}

/// The environment variable that makes this binary a ping-pong peer (`socket` or `futex`)
/// serving the descriptor named by [`PEER_FD`].
const PEER: &str = "SKILLGATE_BENCH_PEER";
const PEER_FD: &str = "SKILLGATE_BENCH_PEER_FD";

/// The peer's main: echoes on the socket, or answers each ping on the shared mapping.
#[allow(unsafe_code)]
fn peer(kind: &str) {
    let fd: i32 = std::env::var(PEER_FD).unwrap().parse().unwrap();
    // SAFETY: the parent left this descriptor open (without close-on-exec) for the peer.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    match kind {
        "socket" => {
            // [u32 LE request bytes][u32 LE reply bytes][request]: reads it, sends the reply.
            let mut s = UnixStream::from(fd);
            let mut buf = vec![0u8; 4 << 20];
            loop {
                let mut head = [0u8; 8];
                if s.read_exact(&mut head).is_err() {
                    return;
                }
                let n = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
                let reply = u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
                s.read_exact(&mut buf[..n]).unwrap();
                s.write_all(&buf[..reply]).unwrap();
            }
        }
        "spin" | "spin-session" => {
            // As the call region's worker waits: spin (yielding) for SPIN, then announce
            // the sleep and sleep; the other side wakes it only when it announced it.
            // `spin-session`: first leaves the bench's session, as a worker does
            // (`setsid`), which under autogroup scheduling puts it in a scheduling group of
            // its own (a diagnostic row, not a baseline).
            if kind == "spin-session" {
                let _ = rustix::process::setsid();
            }
            let shared = Shared::map(fd);
            let (ping, pong) = (shared.word(0), shared.word(64));
            let (peer_sleeping, host_sleeping) = (shared.word(128), shared.word(192));
            let mut seen = 0;
            loop {
                wait_turn(ping, seen, peer_sleeping);
                seen = ping.load(Ordering::Acquire);
                pong.fetch_add(1, Ordering::SeqCst);
                if host_sleeping.load(Ordering::SeqCst) != 0 {
                    futex_wake(pong);
                }
            }
        }
        _ => {
            // `futex`, or `placement`: the same, saying which vCPU answered (a separate
            // peer, so the timed baseline does no extra work).
            let placement = kind == "placement";
            let shared = Shared::map(fd);
            let (ping, pong, cpu) = (shared.word(0), shared.word(64), shared.word(256));
            let mut seen = 0;
            loop {
                while ping.load(Ordering::Acquire) == seen {
                    futex_wait(ping, seen);
                }
                seen = ping.load(Ordering::Acquire);
                if placement {
                    cpu.store(current_cpu(), Ordering::Relaxed);
                }
                pong.fetch_add(1, Ordering::Release);
                futex_wake(pong);
            }
        }
    }
}

/// The vCPU this thread runs on now.
#[allow(unsafe_code)]
fn current_cpu() -> u32 {
    // SAFETY: no arguments, no memory; -1 on failure, which reads as u32::MAX.
    unsafe { libc::sched_getcpu() as u32 }
}

/// The call region's wait (src/exec/ring): polls `turn` for up to 20 us, yielding between
/// rounds, then sets `sleeping`, re-checks and sleeps on the futex until `turn` moves.
fn wait_turn(turn: &AtomicU32, seen: u32, sleeping: &AtomicU32) {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if turn.load(Ordering::Acquire) != seen {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= Duration::from_micros(20) {
            break;
        }
        std::thread::yield_now();
    }
    while turn.load(Ordering::Acquire) == seen {
        sleeping.store(1, Ordering::SeqCst);
        if turn.load(Ordering::SeqCst) != seen {
            break;
        }
        futex_wait(turn, seen);
    }
    sleeping.store(0, Ordering::Relaxed);
}

fn futex_wait(word: &AtomicU32, value: u32) {
    use rustix::thread::futex;
    let _ = futex::wait(word, futex::Flags::empty(), value, None);
}

fn futex_wake(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::empty(), 1);
}

/// A page shared by the two processes of the futex ping-pong.
struct Shared(memmap2::MmapMut);

impl Shared {
    #[allow(unsafe_code)]
    fn map(fd: OwnedFd) -> Shared {
        let file = std::fs::File::from(fd);
        // SAFETY: a memfd only these two processes hold, accessed only through atomics.
        Shared(unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap())
    }

    #[allow(unsafe_code)]
    fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at.is_multiple_of(4) && at + 4 <= self.0.len());
        // SAFETY: aligned, inside the mapping, which lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.0.as_ptr().add(at).cast::<u32>().cast_mut()) }
    }
}

/// Starts this binary as a `kind` peer serving `theirs`.
fn start_peer(kind: &str, theirs: &OwnedFd) -> std::process::Child {
    rustix::io::fcntl_setfd(theirs, rustix::io::FdFlags::empty()).unwrap();
    std::process::Command::new(std::env::current_exe().unwrap())
        .env(PEER, kind)
        .env(PEER_FD, theirs.as_raw_fd().to_string())
        .spawn()
        .unwrap()
}

/// The unix-socket floor: one request of `request` bytes, one reply of `reply` bytes.
struct SocketPeer {
    stream: UnixStream,
    child: std::process::Child,
    buf: Vec<u8>,
}

impl SocketPeer {
    fn start() -> SocketPeer {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let theirs = OwnedFd::from(theirs);
        let child = start_peer("socket", &theirs);
        drop(theirs);
        SocketPeer {
            stream: ours,
            child,
            buf: vec![7u8; 4 << 20],
        }
    }

    fn round_trip(&mut self, request: usize, reply: usize) {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&(request as u32).to_le_bytes());
        head[4..].copy_from_slice(&(reply as u32).to_le_bytes());
        self.stream.write_all(&head).unwrap();
        self.stream.write_all(&self.buf[..request]).unwrap();
        self.stream.read_exact(&mut self.buf[..reply]).unwrap();
    }
}

impl Drop for SocketPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The futex floor: a ping, a wake, a pong, a wake; both sides sleep in `FUTEX_WAIT`.
struct FutexPeer {
    shared: Shared,
    child: std::process::Child,
}

impl FutexPeer {
    /// `kind`: `futex` (both sides always sleep, every ping and pong is a wake) or `spin`
    /// (both sides wait as the call region does: spin, then sleep, woken only if asleep).
    fn start(kind: &str) -> FutexPeer {
        let fd = rustix::fs::memfd_create("bench-futex", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let shared = Shared::map(fd.try_clone().unwrap());
        let child = start_peer(kind, &fd);
        FutexPeer { shared, child }
    }

    fn round_trip(&self) {
        let (ping, pong) = (self.shared.word(0), self.shared.word(64));
        let before = pong.load(Ordering::Acquire);
        ping.fetch_add(1, Ordering::Release);
        futex_wake(ping);
        while pong.load(Ordering::Acquire) == before {
            futex_wait(pong, before);
        }
    }

    /// The `spin` kind's round trip (the region's protocol on both sides).
    fn spin_round_trip(&self) {
        let (ping, pong) = (self.shared.word(0), self.shared.word(64));
        let (peer_sleeping, host_sleeping) = (self.shared.word(128), self.shared.word(192));
        let before = pong.load(Ordering::Acquire);
        ping.fetch_add(1, Ordering::SeqCst);
        if peer_sleeping.load(Ordering::SeqCst) != 0 {
            futex_wake(ping);
        }
        wait_turn(pong, before, host_sleeping);
    }

    /// (`placement` kind) Of `n` untimed `futex` round trips, how many were answered on the vCPU this side
    /// posted from (the two processes then take turns on one vCPU, each wake a context
    /// switch, and the other vCPU idles).
    fn same_cpu(&self, n: usize) -> usize {
        let cpu = self.shared.word(256);
        (0..n)
            .filter(|_| {
                let mine = current_cpu();
                self.round_trip();
                cpu.load(Ordering::Relaxed) == mine
            })
            .count()
    }
}

impl Drop for FutexPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Nanoseconds `pid`'s main thread has run, and waited on a run queue for a CPU, so far.
fn schedstat(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (f.next().unwrap(), f.next().unwrap())
}

/// [`schedstat`] of the calling thread.
fn host_schedstat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (f.next().unwrap(), f.next().unwrap())
}

/// Voluntary and involuntary context switches of `pid`'s main thread so far.
fn context_switches(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
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

/// The plugin at `lib` called in-process with `ctx`, doing the host's JSON work: the
/// context encoded as JSON, the returned string copied out (bounded, as the host copies it)
/// and parsed as a `PluginResult`.
#[allow(unsafe_code)]
fn direct_call(lib: &Path, ctx: &PluginContext, n: usize) -> Stats {
    // SAFETY: the bench's own plugin, built above from tests/plugins/ring.c; its `sink` and
    // `fill` actions touch nothing but their input and output.
    let library = unsafe { libloading::Library::new(lib) }.unwrap();
    // SAFETY: the ABI's signatures for these exports.
    let execute: ExecuteFn =
        unsafe { *library.get::<ExecuteFn>(b"vtcode_plugin_execute").unwrap() };
    // SAFETY: as above.
    let free: FreeFn = unsafe { *library.get::<FreeFn>(b"vtcode_plugin_free_string").unwrap() };
    let stats = measure(n, || {
        let input = CString::new(serde_json::to_vec(ctx).unwrap()).unwrap();
        // SAFETY: a NUL-terminated input that outlives the call.
        let out = unsafe { execute(input.as_ptr()) };
        // SAFETY: the plugin returns a NUL-terminated string it allocated.
        let text = unsafe { CStr::from_ptr(out) }.to_bytes().to_vec();
        // SAFETY: returned once to the plugin that allocated it.
        unsafe { free(out) };
        let _: skillgate::PluginResult = serde_json::from_slice(&text).unwrap();
    });
    std::mem::forget(library);
    stats
}

fn main() {
    if let Ok(kind) = std::env::var(PEER) {
        peer(&kind);
        return;
    }
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
    let mut socket = SocketPeer::start();
    let socket_pp = measure(calls, || socket.round_trip(0, 1));
    let futex = FutexPeer::start("futex");
    let futex_pp = measure(calls, || futex.round_trip());
    let futex_spaced = measure_spaced(calls / 10, Duration::from_micros(500), || {
        futex.round_trip()
    });
    let placement_n = calls / 10;
    let same_cpu = FutexPeer::start("placement").same_cpu(placement_n);
    let spin = FutexPeer::start("spin");
    let spin_pp = measure(calls, || spin.spin_round_trip());
    let spin_spaced = measure_spaced(calls / 10, Duration::from_micros(500), || {
        spin.spin_round_trip()
    });
    drop(spin);
    let spin_session = FutexPeer::start("spin-session");
    let session_pp = measure(calls, || spin_session.spin_round_trip());
    drop(spin_session);
    let mut spaced_rows = vec![
        (
            "futex ping-pong, two processes (baseline)",
            futex_spaced.p50,
            futex_spaced.p99,
        ),
        (
            "spin 20 us then futex, two processes",
            spin_spaced.p50,
            spin_spaced.p99,
        ),
    ];
    let mut rows = vec![
        (
            "direct FFI call under a mutex (baseline)",
            direct.p50,
            direct.p99,
        ),
        (
            "unix-socket ping-pong, two processes",
            socket_pp.p50,
            socket_pp.p99,
        ),
        ("futex ping-pong, two processes", futex_pp.p50, futex_pp.p99),
        (
            "spin 20 us then futex, two processes",
            spin_pp.p50,
            spin_pp.p99,
        ),
        (
            "the same, peer in its own session",
            session_pp.p50,
            session_pp.p99,
        ),
    ];
    let mut switch_note = String::new();
    for (label, isolation) in [
        ("thread mode", Isolation::Thread),
        ("process mode", Isolation::Process),
    ] {
        let gate = gate_for(isolation);
        let loaded = gate.verify_and_load(&plugin).unwrap();
        let worker = loaded.worker_pid();
        let switches_before = worker.map(context_switches);
        let s = measure(calls, || {
            loaded.execute(&ctx).unwrap();
        });
        rows.push((label, s.p50, s.p99));
        if let (Some(pid), Some(before)) = (worker, switches_before) {
            // How often the worker went off its CPU per call (asleep on the futex, or
            // preempted), over the warm-up and the timed calls: each such call paid a
            // wake-up or a wait for a CPU.
            let (voluntary, involuntary) = context_switches(pid);
            let per_call = |now: u64, then: u64| (now - then) as f64 / (calls + calls / 10) as f64;
            switch_note = format!(
                "  process-mode worker, back to back: {:.2} voluntary and {:.2} involuntary context switches per call",
                per_call(voluntary, before.0),
                per_call(involuntary, before.1)
            );
        }
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
    println!("{switch_note}");

    println!(
        "  futex ping-pong placement: {same_cpu} of {placement_n} untimed round trips answered on the posting vCPU"
    );

    println!(
        "the same, calls 500 us apart, {} calls each (ratio: to the futex ping-pong's wake-up, target <= 1.2x in process mode)",
        calls / 10
    );
    for (label, p50, p99) in &spaced_rows {
        println!(
            "  {label:<42} p50 {:>8.2} us  p99 {:>8.2} us  p50 ratio {:>6.2}x",
            us(*p50),
            us(*p99),
            us(*p50) / us(futex_spaced.p50)
        );
    }
    drop(futex);

    // 1 MiB each way: through the call region (process mode), against a unix socket moving
    // the same bytes between two processes.
    let transfers = if quick { 3 } else { 50 };
    let big = build_named(tmp.path(), "big", "ring");
    sign_plugin_dir(&big, &key).unwrap();
    let big_gate = {
        let policy = Policy::builder()
            .trusted_roots([tmp.path().join("root")])
            .keys(tmp.path().join("keys"))
            .isolation(Isolation::Process)
            .worker(env!("CARGO_BIN_EXE_skillgate-worker"))
            .limits(skillgate::policy::Limits::builder().output_bytes(2 << 20))
            .build()
            .unwrap();
        Gate::with_trust_store(policy, trust.clone()).unwrap()
    };
    let loaded = big_gate.verify_and_load(&big).unwrap();
    let mib = 1 << 20;
    let big_ctx = |action: &str, size: usize, data: usize| {
        let mut c = PluginContext::default();
        c.input.insert("action".into(), action.into());
        c.input.insert("size".into(), size.into());
        c.input.insert("data".into(), "x".repeat(data).into());
        c
    };
    let (in_ctx, out_ctx) = (big_ctx("sink", 0, mib), big_ctx("fill", mib, 0));
    let big_pid = loaded.worker_pid().unwrap();
    // The worker's CPU time and run-queue wait per call (warm-up included), and the calling
    // thread's run-queue wait: what of a call's time is work, and what is waiting for a CPU.
    let worker_per_call = |f: &mut dyn FnMut() -> Stats| {
        let (run, wait) = schedstat(big_pid);
        let host_wait = host_schedstat().1;
        let stats = f();
        let (run2, wait2) = schedstat(big_pid);
        let host_waited = host_schedstat().1 - host_wait;
        let n = (transfers + transfers / 10) as f64;
        (
            stats,
            (run2 - run) as f64 / n / 1e3,
            (wait2 - wait) as f64 / n / 1e3,
            host_waited as f64 / n / 1e3,
        )
    };
    let (ring_in, in_run, in_wait, in_host) = worker_per_call(&mut || {
        measure(transfers, || {
            loaded.execute(&in_ctx).unwrap();
        })
    });
    let (ring_out, out_run, out_wait, out_host) = worker_per_call(&mut || {
        measure(transfers, || {
            loaded.execute(&out_ctx).unwrap();
        })
    });
    let sock_in = measure(transfers, || socket.round_trip(mib, 1));
    let sock_out = measure(transfers, || socket.round_trip(0, mib));
    drop(socket);
    let big_lib = big.join("libbig.so");
    let (direct_in, direct_out) = (
        direct_call(&big_lib, &in_ctx, transfers),
        direct_call(&big_lib, &out_ctx, transfers),
    );
    println!(
        "1 MiB each way, {transfers} calls each (p50; target >= 1 GB/s each way; the direct call does the same JSON work in-process)"
    );
    for (label, s, floor, direct) in [
        (
            "1 MiB input, process mode (call region)",
            &ring_in,
            &sock_in,
            &direct_in,
        ),
        (
            "1 MiB output, process mode (call region)",
            &ring_out,
            &sock_out,
            &direct_out,
        ),
    ] {
        println!(
            "  {label:<42} p50 {:>8.2} us {:>5.2} GB/s | direct FFI call, same JSON: {:>8.2} us {:>5.2} GB/s | unix socket, bytes only: {:>8.2} us {:>5.2} GB/s",
            us(s.p50),
            gbps(mib, s.p50),
            us(direct.p50),
            gbps(mib, direct.p50),
            us(floor.p50),
            gbps(mib, floor.p50)
        );
    }
    println!(
        "  per call (mean): 1 MiB input: worker ran {in_run:.1} us, waited for a CPU {in_wait:.1} us, calling thread waited {in_host:.1} us; 1 MiB output: worker ran {out_run:.1} us, waited {out_wait:.1} us, calling thread waited {out_host:.1} us"
    );

    // A loaded plugin that gets no calls: the worker's CPU time over an idle period.
    let pid = loaded.worker_pid().unwrap();
    let idle_for = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    let before = cpu_ticks(pid);
    std::thread::sleep(idle_for);
    let ticks = cpu_ticks(pid) - before;
    println!(
        "idle worker CPU over {:.1} s: {ticks} ticks ({} ms; target 0)",
        idle_for.as_secs_f64(),
        ticks * 10
    );
    drop(loaded);

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
