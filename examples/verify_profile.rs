//! A driver for profiling verification of many small plugins (callgrind, strace, perf):
//! the same fixture as `benches/verify.rs`'s `discover_1000` group, without criterion.
//!
//! ```sh
//! cargo build --release --example verify_profile
//! target/release/examples/verify_profile setup /tmp/vp 200     # build and sign 200 plugins
//! valgrind --tool=callgrind target/release/examples/verify_profile run /tmp/vp inspect
//! strace -c -f target/release/examples/verify_profile run /tmp/vp many
//! ```
//!
//! Modes of `run DIR MODE [REPEAT]`: `floor` (read and hash every file, one thread),
//! `verify` (`Gate::verify` one after the other), `inspect` (`Gate::verify_and_inspect` one
//! after the other), `many` (`Gate::verify_many`), `none` (only build the Gate and list the
//! root: subtract it from the others). Prints the time taken and the plugin count (for
//! `many`, also the part spent dropping the results on the calling thread).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};
use skillgate::policy::Isolation;
use skillgate::{Gate, Policy, SecretKey, TrustStore};

const SOURCE: &str = r#"
#include "common.h"
__asm__(".section .rodata.sgblob,\"a\",@progbits\n.balign 64\n.globl sg_blob\n.hidden sg_blob\n"
        "sg_blob:\n.incbin \"" BLOB_PATH "\"\n.previous\n");
extern const unsigned char sg_blob[] __attribute__((visibility("hidden")));
EXPORT uint32_t vtcode_plugin_version(void) { return 1; }
EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }
EXPORT const char *vtcode_plugin_execute(const char *c) {
    if (c == NULL) { return NULL; }
    char extra[32];
    snprintf(extra, sizeof extra, ",\"blob\":%u", (unsigned)sg_blob[strlen(c) % 4096]);
    return sg_echo_result(c, extra);
}
EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
"#;

fn setup(work: &Path, count: usize) {
    std::fs::create_dir_all(work.join("root")).unwrap();
    let blob = work.join("blob.bin");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&blob, bytes).unwrap();
    let src = work.join("synthetic.c");
    std::fs::write(&src, format!("#include <stdio.h>\n{SOURCE}")).unwrap();
    let template = work.join("libtemplate.so");
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wl,-z,now", "-Wl,-z,relro"])
        .args(["-Wl,-z,noexecstack", "-DPLUGIN_NAME=\"template\""])
        .arg(format!("-I{}", include.display()))
        .arg(format!("-DBLOB_PATH=\"{}\"", blob.display()))
        .arg("-o")
        .arg(&template)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = SecretKey::generate();
    std::fs::write(work.join("key.pub"), key.public().to_minisign_string()).unwrap();
    for i in 0..count {
        let name = format!("p{i:04}");
        let dir = work.join("root").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&template, dir.join(format!("lib{name}.so"))).unwrap();
        std::fs::write(
            dir.join("plugin.json"),
            format!(
                r#"{{"name":"{name}","description":"bench","version":"1.0.0","author":"skillgate benches","abi_version":1}}"#
            ),
        )
        .unwrap();
        skillgate::sign::sign_plugin_dir(&dir, &key).unwrap();
    }
}

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

fn run(work: &Path, mode: &str, repeat: usize) {
    let key = skillgate::PublicKey::read_file(&work.join("key.pub")).unwrap();
    let policy = Policy::builder()
        .trusted_roots([work.join("root")])
        .keys(work.join("keys"))
        .isolation(Isolation::Thread)
        .build()
        .unwrap();
    let gate = Gate::with_trust_store(policy, TrustStore::from_keys([key]).unwrap()).unwrap();
    let start = Instant::now();
    let mut n = 0;
    // `many`: the time spent dropping the results (closing each sealed memfd) after
    // `verify_many` returned, on the calling thread.
    let mut dropped = std::time::Duration::ZERO;
    for _ in 0..repeat {
        let dirs = discover(&work.join("root"));
        n = dirs.len();
        match mode {
            "none" => {}
            "floor" => {
                for dir in &dirs {
                    for entry in std::fs::read_dir(dir).unwrap() {
                        read_and_hash(&entry.unwrap().path());
                    }
                }
            }
            "verify" => dirs.iter().for_each(|d| drop(gate.verify(d).unwrap())),
            "inspect" => dirs
                .iter()
                .for_each(|d| drop(gate.verify_and_inspect(d).unwrap())),
            "many" => {
                let results = gate.verify_many(&dirs);
                let verified = Instant::now();
                results.into_iter().for_each(|(_, r)| drop(r.unwrap()));
                dropped += verified.elapsed();
            }
            other => panic!("unknown mode {other}"),
        }
    }
    let t = start.elapsed();
    println!(
        "{mode}: {n} plugins x {repeat}: {t:?} ({:.1} us/plugin)",
        t.as_secs_f64() * 1e6 / (n * repeat).max(1) as f64
    );
    if mode == "many" {
        println!("  of which dropping the results afterwards: {dropped:?}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("setup") => setup(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("run") => run(
            Path::new(&args[2]),
            &args[3],
            args.get(4).map_or(1, |r| r.parse().unwrap()),
        ),
        _ => eprintln!("usage: verify_profile setup DIR COUNT | run DIR MODE [REPEAT]"),
    }
}
