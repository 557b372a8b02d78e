//! Issue 16: installing a 16 MiB plugin from an OCI registry with `skillgate::fleet::pull`,
//! next to downloading the same bytes plainly from the same registry.
//!
//! `cargo bench --bench pull` starts Debian's `docker-registry` on a loopback port with a
//! temporary storage directory (`benches/common/registry.rs`; `scripts/setup.sh` installs
//! it), builds and signs the synthetic plugin of `benches/common` with a 16 MiB library,
//! pushes it once with `skillgate::fleet::push`, then in one run measures (median of N
//! after one warm-up each):
//! - **baseline**: a plain download of what a pull fetches: the manifest by digest, then
//!   each layer blob by digest, each with one HTTP/1.1 `GET` on a fresh `std::net::TcpStream`
//!   (`Connection: close`), the bytes read in 256 KiB pieces and discarded (no hashing, no
//!   files);
//! - **pull**: `skillgate::fleet::pull` by the same digest into a fresh root each iteration
//!   (the whole path: its own async runtime, manifest checks, blobs streamed into a staging
//!   directory with SHA-256 while they come and `fsync` of each file, the full verification
//!   of `skillgate verify`, the rename into the root);
//!
//! and prints the ratio pull / baseline. `cargo test --benches` runs it once with a 1 MiB
//! plugin as a smoke test (it still needs the registry).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::registry::{Registry, get};
use common::{Fixture, MIB, full_run, median_of, ms};
use skillgate::policy::Isolation;

/// The `Accept` header of a manifest request (what a pull asks for).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

fn main() {
    let full = full_run();
    let (size, runs) = if full { (16 * MIB, 11) } else { (MIB, 1) };
    let fixture = Fixture::new();
    let name = "pullbench";
    // The library is the blob plus a few KiB of code and ELF headers: about `size`.
    let dir = fixture.plugin(name, size - 64 * 1024);

    let registry = Registry::start();
    let port = registry.port();
    let reference = format!("oci://{}/bench/{name}:1.0.0", registry.host());
    let pushed = skillgate::fleet::push(&dir, &fixture.trust(), &reference).unwrap();
    let by_digest = format!("oci://{}/bench/{name}@{}", registry.host(), pushed.digest);

    // The manifest, read once to learn the layer digests the baseline fetches.
    let manifest_path = format!("/v2/bench/{name}/manifests/{}", pushed.digest);
    let mut manifest = Vec::new();
    let (status, _) = get(port, &manifest_path, MANIFEST_ACCEPT, &mut manifest).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&manifest));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layers: Vec<(String, u64)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_owned(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let total: u64 = layers.iter().map(|(_, size)| size).sum();

    let baseline = median_of(runs, || {
        let (status, _) = get(port, &manifest_path, MANIFEST_ACCEPT, &mut std::io::sink()).unwrap();
        assert_eq!(status, 200);
        for (digest, size) in &layers {
            let path = format!("/v2/bench/{name}/blobs/{digest}");
            let (status, got) = get(port, &path, "*/*", &mut std::io::sink()).unwrap();
            assert_eq!((status, got), (200, *size), "{path}");
        }
    });

    let gate = fixture.gate(Isolation::Thread);
    let pulls = fixture.path().join("pulls");
    let mut round = 0u32;
    let pull = median_of(runs, || {
        round += 1;
        let root = pulls.join(round.to_string());
        std::fs::create_dir_all(&root).unwrap();
        let pulled = skillgate::fleet::pull(&gate, &by_digest, &root).unwrap();
        assert_eq!(pulled.digest, pushed.digest);
        // The roots stay until the end: removing them here would be timed.
    });
    std::fs::remove_dir_all(&pulls).unwrap();

    println!(
        "pull of a {:.1} MiB plugin ({} layers, {} bytes) from docker-registry on loopback, median of {runs}:",
        total as f64 / MIB as f64,
        layers.len(),
        total
    );
    println!(
        "  baseline (manifest + {} blobs by digest, plain HTTP/1.1 GET, bytes discarded): {:.2} ms ({:.0} MiB/s)",
        layers.len(),
        ms(baseline),
        total as f64 / MIB as f64 / baseline.as_secs_f64()
    );
    println!(
        "  skillgate::fleet::pull (stream + digest + fsync + verify + rename), fresh root: {:.2} ms ({:.0} MiB/s)",
        ms(pull),
        total as f64 / MIB as f64 / pull.as_secs_f64()
    );
    println!(
        "  ratio pull / baseline: {:.2}x",
        pull.as_secs_f64() / baseline.as_secs_f64()
    );
}
