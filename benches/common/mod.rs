//! Fixtures shared by the benches: synthetic signed plugins of a chosen size, built into a
//! temporary directory with the machine's `cc` (never committed), and host policies that
//! admit them.
//!
//! A synthetic plugin is a real ABI v1 plugin (the same exports and echo behaviour as
//! `tests/plugins/good.c`) plus a read-only blob of pseudo-random bytes pulled in with the
//! assembler's `.incbin`, so a 256 MiB library compiles in seconds. `vtcode_plugin_execute`
//! reads one byte of the blob, so the linker cannot drop it.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

pub mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use skillgate::policy::{Isolation, Limits};
use skillgate::sign::sign_plugin_dir_with;
use skillgate::{Gate, Policy, SecretKey, TrustStore};

pub const MIB: usize = 1024 * 1024;

/// The C source of a synthetic plugin; `BLOB_PATH` and `BLOB_LEN` are given with `-D`.
const SOURCE: &str = r#"
#include "common.h"
#include <stdio.h>

__asm__(".section .rodata.sgblob,\"a\",@progbits\n"
        ".balign 64\n"
        ".globl sg_blob\n"
        ".hidden sg_blob\n"
        ".type sg_blob, @object\n"
        "sg_blob:\n"
        ".incbin \"" BLOB_PATH "\"\n"
        ".size sg_blob, . - sg_blob\n"
        ".previous\n");
extern const unsigned char sg_blob[] __attribute__((visibility("hidden")));

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    if (context_json == NULL) {
        return NULL;
    }
    size_t at = (strlen(context_json) * 2654435761u) % (size_t)BLOB_LEN;
    char extra[32];
    snprintf(extra, sizeof extra, ",\"blob\":%u", (unsigned)sg_blob[at]);
    return sg_echo_result(context_json, extra);
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
"#;

/// Writes `len` pseudo-random bytes (xorshift64*, incompressible enough) to `path`.
pub fn write_random(path: &Path, len: usize) {
    let mut out = std::io::BufWriter::with_capacity(MIB, std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    let mut chunk = vec![0u8; MIB];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(MIB);
        out.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    out.flush().unwrap();
}

/// Compiles a synthetic plugin library with a `blob_len`-byte blob to `lib`, as plugin
/// `name`. The library is a little larger than `blob_len` (code, ELF headers).
pub fn build_library(work: &Path, lib: &Path, name: &str, blob_len: usize) {
    let blob = work.join(format!("blob-{blob_len}.bin"));
    if !blob.exists() {
        write_random(&blob, blob_len);
    }
    let src = work.join("synthetic.c");
    std::fs::write(&src, SOURCE).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins");
    let out = Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Werror",
            "-Wl,-z,now",
            "-Wl,-z,relro",
            "-Wl,-z,noexecstack",
        ])
        .arg(format!("-I{}", include.display()))
        .arg(format!("-DPLUGIN_NAME=\"{name}\""))
        .arg(format!("-DBLOB_PATH=\"{}\"", blob.display()))
        .arg(format!("-DBLOB_LEN={blob_len}"))
        .arg("-o")
        .arg(lib)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the unsigned manifest of plugin `name`.
pub fn write_manifest(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("plugin.json"),
        format!(
            r#"{{"name":"{name}","description":"bench","version":"1.0.0","author":"skillgate benches","abi_version":1}}"#
        ),
    )
    .unwrap();
}

/// A temporary tree with a signing key, a trusted root `root/` and plugins inside it.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub key: SecretKey,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("skillgate-bench")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(tmp.path().join("root")).unwrap();
        Fixture {
            tmp,
            key: SecretKey::generate(),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// Builds and signs the synthetic plugin `name` with a blob of `blob_len` bytes under
    /// `root/`; returns its directory.
    pub fn plugin(&self, name: &str, blob_len: usize) -> PathBuf {
        let dir = self.root().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        build_library(
            self.path(),
            &dir.join(format!("lib{name}.so")),
            name,
            blob_len,
        );
        write_manifest(&dir, name);
        // Signed under the bench policy's limits: the default cap (64 MiB) refuses to sign
        // the 256 MiB plugin.
        sign_plugin_dir_with(&dir, &self.key, self.policy(Isolation::Thread).limits()).unwrap();
        dir
    }

    pub fn trust(&self) -> TrustStore {
        TrustStore::from_keys([self.key.public()]).unwrap()
    }

    /// The default policy, trusting `root/`, with the library cap raised to 512 MiB (the
    /// default, 64 MiB, would refuse the 256 MiB plugin). A policy names its trust store
    /// (`keys/`, which [`Fixture::policy_file`] fills); [`Fixture::gate`] passes the store in.
    pub fn policy(&self, isolation: Isolation) -> Policy {
        Policy::builder()
            .trusted_roots([self.root()])
            .keys(self.path().join("keys"))
            .isolation(isolation)
            .limits(Limits::builder().library_bytes(512 * MIB as u64))
            .worker(env!("CARGO_BIN_EXE_skillgate-worker"))
            .build()
            .unwrap()
    }

    pub fn gate(&self, isolation: Isolation) -> Gate {
        Gate::with_trust_store(self.policy(isolation), self.trust()).unwrap()
    }

    /// Writes the public key to `keys/bench.pub` and a policy file `policy.json` that
    /// `skillgate verify` can use; returns the policy file's path.
    pub fn policy_file(&self, isolation: Isolation) -> PathBuf {
        let keys = self.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(
            keys.join("bench.pub"),
            self.key.public().to_minisign_string(),
        )
        .unwrap();
        let iso = if isolation == Isolation::Thread {
            "thread"
        } else {
            "process"
        };
        let policy = format!(
            r#"{{"trusted_roots":["root"],"keys":"keys","isolation":"{iso}","worker":{worker:?},"limits":{{"library_bytes":{lib}}}}}"#,
            worker = env!("CARGO_BIN_EXE_skillgate-worker"),
            lib = 512 * MIB,
        );
        let path = self.path().join("policy.json");
        std::fs::write(&path, policy).unwrap();
        path
    }
}

/// Whether this run is `cargo bench` (which passes `--bench`) rather than the smoke run
/// of `cargo test --benches`.
pub fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// Median of `n` timings of `f` (after one untimed warm-up run).
pub fn median_of(n: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[n / 2]
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, in bytes.
pub fn status_kb(pid: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kb_field(&text, field)
}

/// A `kB` field of `/proc/<pid>/smaps_rollup` (`Pss`, `Rss`, ...), in bytes; 0 if
/// unreadable.
pub fn rollup_kb(pid: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    kb_field(&text, field)
}

/// A `kB` field of `/proc/meminfo`, in bytes.
pub fn meminfo_kb(field: &str) -> u64 {
    kb_field(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        field,
    )
}

fn kb_field(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
