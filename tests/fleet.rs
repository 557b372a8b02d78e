//! Publishing to and installing from a real OCI registry (`docker-registry`, started per
//! test on a loopback port; see `support/registry.rs`): push then pull then run in both
//! isolation modes, a blob altered in the registry's storage, a tag moved back to an older
//! signed release, a pull cut off midway, twenty hosts pulling at once, and manifests and
//! blobs over the policy's size limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use skillgate::error::{FleetError, FreshnessError, TrustError};
use skillgate::fleet;
use skillgate::policy::{FreshnessSettings, Isolation, Limits, Policy, TrustPolicy};
use skillgate::{Error, Gate, PluginContext, Stage, TrustStore};
use support::registry::{FLOOD_DIGEST, Flood, ManifestFlood, Proxy, Registry};
use support::tuf::{Publication, Repo, set_mode};
use support::{Host, release};

fn trust(host: &Host) -> TrustStore {
    TrustStore::load_dir(&host.keys_dir()).unwrap()
}

fn push(host: &Host, dir: &Path, reference: &str) -> String {
    fleet::push(dir, &trust(host), reference).unwrap().digest
}

fn sha256(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Every file beneath `dir`, relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// The pull's staging directory holds nothing (it may exist, empty).
fn assert_staging_clean(root: &Path) {
    let base = fleet::staging_base(root).unwrap();
    if base.exists() {
        let left: Vec<_> = std::fs::read_dir(&base).unwrap().collect();
        assert!(left.is_empty(), "staging not cleaned: {left:?}");
    }
}

fn state_policy(host: &Host, isolation: Isolation) -> Policy {
    let state = host.tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    host.policy_with(|p| {
        p.isolation(isolation)
            .trust(TrustPolicy::from_json(br#"{"state_dir":"state"}"#, host.tmp.path()).unwrap())
    })
}

#[test]
fn push_then_pull_then_run_in_both_modes() {
    let registry = Registry::start();
    for host in Host::each_mode() {
        let mode = host.isolation;
        let name = "fleetecho";
        let dir = release(&host, name, "1.0.0", 0);
        let reference = format!("oci://{}/plugins/{name}:1.0.0", registry.host());
        let digest = push(&host, &dir, &reference);
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );

        let gate = host.gate_with(state_policy(&host, mode));
        let pulled = fleet::pull(&gate, &reference, &host.root).unwrap();
        assert_eq!(
            pulled.digest, digest,
            "{mode:?}: the tag's digest is recorded"
        );
        assert_eq!(pulled.path, host.root.join(name));
        assert_eq!(
            (pulled.name.as_str(), pulled.version.as_str()),
            (name, "1.0.0")
        );
        assert_eq!(tree(&pulled.path), tree(&dir), "{mode:?}: the files pushed");
        assert_staging_clean(&host.root);

        let plugin = gate.verify_and_load(&pulled.path).unwrap();
        let result = plugin.execute(&PluginContext::default()).unwrap();
        assert!(result.success, "{mode:?}: {result:?}");
        assert_eq!(result.output["marker"], "1.0.0");
        drop(plugin);

        // The same release by digest replaces the installed one in place.
        let by_digest = format!("oci://{}/plugins/{name}@{digest}", registry.host());
        let again = fleet::pull(&gate, &by_digest, &host.root).unwrap();
        assert_eq!(again.digest, digest);
        assert_eq!(tree(&again.path), tree(&dir));
        assert_staging_clean(&host.root);
        host.assert_still_serves(&gate);
    }
}

#[test]
fn unsigned_directory_is_not_pushed() {
    let registry = Registry::start();
    let host = Host::new();
    let dir = release(&host, "unsigned", "1.0.0", 0);
    std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
    let reference = format!("oci://{}/plugins/unsigned:1.0.0", registry.host());
    let e = fleet::push(&dir, &trust(&host), &reference).unwrap_err();
    assert!(
        matches!(&e, Error::Fleet(FleetError::Unsigned { error, .. }) if matches!(**error, Error::Signature(_))),
        "{e:?}"
    );
    // Control: signed, it is pushed.
    let dir = release(&host, "signed", "1.0.0", 0);
    let reference = format!("oci://{}/plugins/signed:1.0.0", registry.host());
    fleet::push(&dir, &trust(&host), &reference).unwrap();
}

#[test]
fn cli_push_and_pull() {
    let registry = Registry::start();
    let host = Host::new();
    let dir = release(&host, "clipull", "1.0.0", 0);
    let reference = format!("oci://{}/plugins/clipull:1.0.0", registry.host());
    let pubkey = host.keys_dir().join("test.pub");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skill-sign"))
        .args(["push".as_ref(), dir.as_os_str(), reference.as_ref()])
        .arg("--public-key")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let policy_with_keys = |file: &str, keys: &Path| {
        let policy = host.tmp.path().join(file);
        let json = format!(
            r#"{{"trusted_roots":["{}"],"keys":"{}","isolation":"thread"}}"#,
            host.root.display(),
            keys.display()
        );
        std::fs::write(&policy, json).unwrap();
        policy
    };
    let pull = |reference: &str, policy: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_skillgate"))
            .args([
                "pull".as_ref(),
                reference.as_ref(),
                "--root".as_ref(),
                host.root.as_os_str(),
            ])
            .arg("--policy")
            .arg(policy)
            .output()
            .unwrap()
    };
    let policy = policy_with_keys("policy.json", &host.keys_dir());

    // A verification refusal exits 1 and installs nothing: a host that trusts another key.
    let other_keys = host.tmp.path().join("other-keys");
    std::fs::create_dir_all(&other_keys).unwrap();
    let other = skillgate::SecretKey::generate()
        .public()
        .to_minisign_string();
    std::fs::write(other_keys.join("other.pub"), other).unwrap();
    let out = pull(&reference, &policy_with_keys("other.json", &other_keys));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(tree(&host.root), BTreeMap::new());

    // A manifest the registry does not have: the registry's failure, exit 2.
    let missing = format!(
        "oci://{}/plugins/clipull@{}",
        registry.host(),
        sha256(b"nothing")
    );
    let out = pull(&missing, &policy);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = pull(&reference, &policy);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        format!("{digest} {}", host.root.join("clipull").display())
    );
}

#[test]
fn blob_altered_in_registry_storage_is_refused() {
    let registry = Registry::start();
    let host = Host::new();
    let name = "altered";
    let dir = release(&host, name, "1.0.0", 0);
    let reference = format!("oci://{}/plugins/{name}:1.0.0", registry.host());
    push(&host, &dir, &reference);
    let library = std::fs::read(dir.join(format!("lib{name}.so"))).unwrap();
    let blob = registry.blob_file(&sha256(&library));
    let mut bytes = std::fs::read(&blob).unwrap();
    assert_eq!(
        bytes, library,
        "the registry stores the library as one blob"
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // same length, other bytes
    std::fs::write(&blob, &bytes).unwrap();

    let gate = host.gate();
    let before = tree(&host.root);
    let e = fleet::pull(&gate, &reference, &host.root).unwrap_err();
    assert!(
        matches!(&e, Error::Fleet(FleetError::BlobDigest { file, expected, actual })
            if *file == format!("lib{name}.so") && *expected == sha256(&library) && *actual == sha256(&bytes)),
        "{e:?}"
    );
    assert_eq!(tree(&host.root), before, "root untouched");
    assert_staging_clean(&host.root);

    // A good release pulls afterwards, and the host still serves.
    let good = release(&host, "unaltered", "1.0.0", 0);
    let good_ref = format!("oci://{}/plugins/unaltered:1.0.0", registry.host());
    push(&host, &good, &good_ref);
    fleet::pull(&gate, &good_ref, &host.root).unwrap();
    host.assert_still_serves(&gate);
}

#[test]
fn tag_moved_back_to_an_older_release_is_refused_by_the_rollback_mark() {
    let registry = Registry::start();
    let host = Host::new();
    let name = "moved";
    let stable = format!("oci://{}/plugins/{name}:stable", registry.host());
    let v1 = release(&host, name, "1.0.0", 0);
    let v2 = release(&host, name, "2.0.0", 0);
    let gate = host.gate_with(state_policy(&host, Isolation::Thread));

    push(&host, &v1, &stable);
    assert_eq!(
        fleet::pull(&gate, &stable, &host.root).unwrap().version,
        "1.0.0"
    );
    let d2 = push(&host, &v2, &stable);
    let pulled = fleet::pull(&gate, &stable, &host.root).unwrap();
    assert_eq!(
        (pulled.version.as_str(), pulled.digest.as_str()),
        ("2.0.0", d2.as_str())
    );
    let installed = tree(&host.root);

    // The registry (or whoever controls the tag) moves it back to the older signed release.
    push(&host, &v1, &stable);
    let e = fleet::pull(&gate, &stable, &host.root).unwrap_err();
    assert!(
        matches!(&e, Error::Fleet(FleetError::Verify { stage: Stage::Trust, error })
            if matches!(**error, Error::Trust(TrustError::Rollback { .. }))),
        "{e:?}"
    );
    assert_eq!(tree(&host.root), installed, "2.0.0 stays installed");
    assert_staging_clean(&host.root);
    host.assert_still_serves(&gate);
}

#[test]
fn pull_cut_off_midway_leaves_nothing_and_a_retry_succeeds() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.port());
    let host = Host::new();
    let name = "cutoff";
    let dir = release(&host, name, "1.0.0", 1 << 20);
    push(
        &host,
        &dir,
        &format!("oci://{}/plugins/{name}:1.0.0", registry.host()),
    );
    let through_proxy = format!("oci://{}/plugins/{name}:1.0.0", proxy.host());
    let gate = host.gate();

    // A full pull through the proxy elsewhere, to know how many bytes one takes.
    let elsewhere = host.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let start = proxy.bytes_down();
    fleet::pull(&gate, &through_proxy, &elsewhere).unwrap();
    let full = proxy.bytes_down() - start;
    assert!(full > 1 << 20, "{full}");

    proxy.cut_after(Some(full / 2));
    let before = tree(&host.root);
    let e = fleet::pull(&gate, &through_proxy, &host.root).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Fleet(FleetError::Registry {
                step: "fetch blob",
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(tree(&host.root), before, "no partial plugin in the root");
    assert_staging_clean(&host.root);

    proxy.cut_after(None);
    let pulled = fleet::pull(&gate, &through_proxy, &host.root).unwrap();
    assert_eq!(tree(&pulled.path), tree(&dir));
    gate.verify(&pulled.path).unwrap();
    host.assert_still_serves(&gate);
}

#[test]
fn twenty_hosts_pull_the_same_release_at_once() {
    let registry = Registry::start();
    let host = Host::new();
    let name = "fleet20";
    let dir = release(&host, name, "1.0.0", 64 * 1024);
    let reference = format!("oci://{}/plugins/{name}:1.0.0", registry.host());
    let digest = push(&host, &dir, &reference);
    let hosts = host.tmp.path().join("hosts");
    let roots: Vec<PathBuf> = (0..20).map(|i| hosts.join(format!("h{i}"))).collect();
    for r in &roots {
        std::fs::create_dir_all(r).unwrap();
    }
    // Each "host" has its own gate over its own root and its own rollback marks.
    let gates: Vec<Gate> = roots
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let state = host.tmp.path().join(format!("state{i}"));
            std::fs::create_dir_all(&state).unwrap();
            let trust = format!(r#"{{"state_dir":"state{i}"}}"#);
            host.gate_with(host.policy_with(|p| {
                p.trusted_roots([r])
                    .trust(TrustPolicy::from_json(trust.as_bytes(), host.tmp.path()).unwrap())
            }))
        })
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = gates
            .iter()
            .zip(&roots)
            .map(|(g, r)| s.spawn(|| fleet::pull(g, &reference, r)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want = tree(&dir);
    for ((result, gate), root) in results.into_iter().zip(&gates).zip(&roots) {
        let pulled = result.unwrap();
        assert_eq!(pulled.digest, digest);
        assert_eq!(tree(&pulled.path), want, "{}", root.display());
        gate.verify(&pulled.path).unwrap();
        assert_staging_clean(root);
    }
}

/// Pushes `name` (with `data` bytes of data) and pulls it through a counting proxy under
/// `limits`: returns the refusal and the bytes that came down for it, after checking that
/// nothing reached the root; then pulls it again under the default limits (the control).
fn refused_under(limits: Limits, name: &str, data: usize) -> (Error, u64, String) {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.port());
    let host = Host::new();
    let dir = release(&host, name, "1.0.0", data);
    let pushed_to = format!("oci://{}/plugins/{name}:1.0.0", registry.host());
    let digest = push(&host, &dir, &pushed_to);
    let reference = format!("oci://{}/plugins/{name}:1.0.0", proxy.host());
    let gate = host.gate_with(host.policy_with(|p| p.limits(limits)));
    let start = proxy.bytes_down();
    let e = fleet::pull(&gate, &reference, &host.root).unwrap_err();
    let read = proxy.bytes_down() - start;
    assert_eq!(tree(&host.root), BTreeMap::new());
    assert_staging_clean(&host.root);

    // Control: under the default limits the same release pulls.
    let gate = host.gate();
    fleet::pull(&gate, &reference, &host.root).unwrap();
    host.assert_still_serves(&gate);
    (e, read, digest)
}

#[test]
fn blob_over_the_size_limit_is_refused_before_it_is_fetched() {
    let limit = 1 << 20;
    let limits = Limits::builder()
        .file_bytes(limit)
        .library_bytes(limit)
        .build()
        .unwrap();
    let (e, read, _) = refused_under(limits, "bigdata", 4 << 20);
    assert!(
        matches!(&e, Error::Fleet(FleetError::BlobTooLarge { file, size, limit: l })
            if file == "data/blob.bin" && *size == 4 << 20 && *l == limit),
        "{e:?}"
    );
    assert!(
        read < 64 * 1024,
        "{read} bytes came down: the blob was fetched"
    );
}

#[test]
fn manifest_over_the_size_limit_is_refused() {
    // 4 x 128 bytes: less than this manifest (four layers).
    let limits = Limits::builder().manifest_bytes(128).build().unwrap();
    let (e, read, digest) = refused_under(limits, "bigmanifest", 16);
    assert!(
        matches!(&e, Error::Fleet(FleetError::ManifestTooLarge { digest: d, limit: 512, .. }) if *d == digest),
        "{e:?}"
    );
    // The registry declares the manifest's length, so nothing past its headers is read.
    assert!(
        read < 16 * 1024,
        "{read} bytes came down: blobs were fetched"
    );
}

#[test]
fn a_manifest_past_the_bound_is_refused_before_it_is_read_whole() {
    let host = Host::new();
    let gate = host.gate();
    let bound = fleet::manifest_bound(&Limits::default());
    // A hostile registry offers 256 MiB of manifest; what it managed to write before the
    // client hung up stays below what the kernel buffers on loopback (a few MiB).
    let flood = 256 << 20;
    for how in [Flood::Declared, Flood::Undeclared, Flood::NoDigestHeader] {
        let server = ManifestFlood::start(flood, how);
        let reference = format!("oci://{}/plugins/huge:1.0.0", server.host());
        let e = fleet::pull(&gate, &reference, &host.root).unwrap_err();
        let named = if how == Flood::NoDigestHeader {
            "plugins/huge:1.0.0"
        } else {
            FLOOD_DIGEST
        };
        assert!(
            matches!(&e, Error::Fleet(FleetError::ManifestTooLarge { digest, size, limit })
                if digest == named && *limit == bound && *size > bound),
            "{how:?}: {e:?}"
        );
        let sent = server.settled_bytes_sent();
        assert!(
            sent < 32 << 20,
            "{how:?}: {sent} bytes of manifest were read before the refusal"
        );
        assert_eq!(tree(&host.root), BTreeMap::new());
        assert_staging_clean(&host.root);
    }

    // Control: a manifest under the bound is read whole (the count sees all of it) and is
    // then refused for what it is: bytes that do not hash to the digest the HEAD named.
    let server = ManifestFlood::start(bound / 2, Flood::Declared);
    let reference = format!("oci://{}/plugins/huge:1.0.0", server.host());
    let e = fleet::pull(&gate, &reference, &host.root).unwrap_err();
    assert!(
        matches!(&e, Error::Fleet(FleetError::ManifestDigest { expected, .. }) if expected == FLOOD_DIGEST),
        "{e:?}"
    );
    assert_eq!(server.settled_bytes_sent(), bound / 2);
    assert_eq!(tree(&host.root), BTreeMap::new());
    host.assert_still_serves(&gate);
}

#[test]
fn mirror_to_a_second_registry_and_to_a_layout_then_pull_from_each() {
    let first = Registry::start();
    let second = Registry::start();
    let host = Host::new();
    let name = "mirrored";
    let dir = release(&host, name, "1.0.0", 4096);
    let digest = push(
        &host,
        &dir,
        &format!("oci://{}/plugins/{name}:1.0.0", first.host()),
    );
    let src = format!("oci://{}/plugins/{name}", first.host());
    let limits = Limits::default();

    // Registry to registry, by tag: the same manifest digest on the other side.
    let dst = format!("oci://{}/mirror/{name}", second.host());
    let done = fleet::mirror(&src, &dst, &["1.0.0".to_owned()], &limits).unwrap();
    assert_eq!(done[0].digest, digest);
    // Registry to a layout directory, by digest and by tag.
    let layout = host.tmp.path().join("layout");
    let to_layout = format!("oci-layout:{}", layout.display());
    fleet::mirror(
        &src,
        &to_layout,
        &["1.0.0".to_owned(), digest.clone()],
        &limits,
    )
    .unwrap();
    assert!(layout.join("oci-layout").is_file() && layout.join("index.json").is_file());
    // TUF metadata rides along as files.
    let tuf = host.tmp.path().join("tuf");
    std::fs::create_dir_all(tuf.join("targets")).unwrap();
    std::fs::write(tuf.join("timestamp.json"), b"{}").unwrap();
    std::fs::write(tuf.join("targets/x"), b"y").unwrap();
    let copied = fleet::copy_metadata(&tuf, &host.tmp.path().join("tuf-out")).unwrap();
    assert_eq!(copied, 2);

    let want = tree(&dir);
    for (i, reference) in [
        format!("{dst}:1.0.0"),
        format!("{to_layout}:1.0.0"),
        format!("{to_layout}@{digest}"),
    ]
    .iter()
    .enumerate()
    {
        let root = host.tmp.path().join(format!("site{i}"));
        std::fs::create_dir_all(&root).unwrap();
        let gate = host.gate_with(host.policy_with(|p| p.trusted_roots([&root])));
        let pulled = fleet::pull(&gate, reference, &root).unwrap();
        assert_eq!(pulled.digest, digest, "{reference}");
        assert_eq!(tree(&pulled.path), want, "{reference}");
        gate.verify_and_load(&pulled.path).unwrap();
        assert_staging_clean(&root);
    }

    // A layout is checked as a registry is: a blob altered in it is refused.
    let library = std::fs::read(dir.join(format!("lib{name}.so"))).unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(sha256(&library).strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let root = host.tmp.path().join("site-altered");
    std::fs::create_dir_all(&root).unwrap();
    let e = fleet::pull(&host.gate(), &format!("{to_layout}:1.0.0"), &root).unwrap_err();
    assert!(
        matches!(&e, Error::Fleet(FleetError::BlobDigest { file, .. }) if *file == format!("lib{name}.so")),
        "{e:?}"
    );
    assert_eq!(tree(&root), BTreeMap::new());
    assert_staging_clean(&root);
}

#[test]
fn pull_works_from_inside_a_hosts_async_runtime() {
    let registry = Registry::start();
    let host = Host::new();
    let dir = release(&host, "fromasync", "1.0.0", 0);
    let reference = format!("oci://{}/plugins/fromasync:1.0.0", registry.host());
    push(&host, &dir, &reference);
    let gate = host.gate();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A blocking call inside async code: it must not panic by nesting runtimes.
    let pulled = runtime.block_on(async { fleet::pull(&gate, &reference, &host.root) });
    assert_eq!(tree(&pulled.unwrap().path), tree(&dir));
}

/// Pushes `files` (title → bytes) as a skillgate artifact tagged `tag`, the way a hostile
/// registry (or anyone who can write to it) could: no verification first.
fn push_raw(registry: &Registry, repo: &str, tag: &str, files: &[(String, Vec<u8>)]) {
    use oci_client::client::{ClientConfig, ClientProtocol};
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let reference =
        oci_client::Reference::with_tag(registry.host(), repo.to_owned(), tag.to_owned());
    let descriptor = |media: &str, bytes: &[u8], title: Option<&str>| {
        let mut d = serde_json::json!({
            "mediaType": media, "digest": sha256(bytes), "size": bytes.len(),
        });
        if let Some(t) = title {
            d["annotations"] = serde_json::json!({ fleet::TITLE: t });
        }
        d
    };
    let config = br#"{"name":"x","version":"1.0.0"}"#.to_vec();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": fleet::OCI_MANIFEST,
        "artifactType": fleet::ARTIFACT_TYPE,
        "config": descriptor(fleet::ARTIFACT_TYPE, &config, None),
        "layers": files.iter().map(|(t, b)| descriptor(fleet::FILE_MEDIA_TYPE, b, Some(t))).collect::<Vec<_>>(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for bytes in std::iter::once(&config).chain(files.iter().map(|(_, b)| b)) {
            client
                .push_blob(&reference, bytes.clone(), &sha256(bytes))
                .await
                .unwrap();
        }
        client
            .push_manifest_raw(
                &reference,
                serde_json::to_vec(&manifest).unwrap(),
                fleet::OCI_MANIFEST.parse().unwrap(),
            )
            .await
            .unwrap();
    });
}

#[test]
fn a_file_the_signed_manifest_does_not_list_is_refused_by_verification() {
    let registry = Registry::start();
    let host = Host::new();
    let name = "extrafile";
    let dir = release(&host, name, "1.0.0", 0);
    let mut files: Vec<(String, Vec<u8>)> = tree(&dir).into_iter().collect();
    // Control: the signed files alone, pushed raw, pull.
    push_raw(&registry, "plugins/extrafile", "good", &files);
    let gate = host.gate();
    let good = format!("oci://{}/plugins/extrafile:good", registry.host());
    fleet::pull(&gate, &good, &host.root).unwrap();
    std::fs::remove_dir_all(host.root.join(name)).unwrap();

    // The registry adds a file no signature covers.
    files.push(("preload.so".to_owned(), b"\x7fELF not really".to_vec()));
    push_raw(&registry, "plugins/extrafile", "extra", &files);
    let extra = format!("oci://{}/plugins/extrafile:extra", registry.host());
    let e = fleet::pull(&gate, &extra, &host.root).unwrap_err();
    assert!(
        matches!(&e, Error::Fleet(FleetError::Verify { stage: Stage::Digests, error })
            if matches!(&**error, Error::Integrity(skillgate::error::IntegrityError::UnlistedFile { file, .. }) if file == "preload.so")),
        "{e:?}"
    );
    assert_eq!(tree(&host.root), BTreeMap::new());
    assert_staging_clean(&host.root);

    // A title that climbs out of the staging directory is refused before any blob is read.
    push_raw(
        &registry,
        "plugins/extrafile",
        "climb",
        &[
            ("plugin.json".to_owned(), b"{}".to_vec()),
            ("../../escape".to_owned(), b"x".to_vec()),
        ],
    );
    let climb = format!("oci://{}/plugins/extrafile:climb", registry.host());
    let e = fleet::pull(&gate, &climb, &host.root).unwrap_err();
    assert!(
        matches!(&e, Error::Fleet(FleetError::Layer { title, .. }) if title == "../../escape"),
        "{e:?}"
    );
    assert!(!host.tmp.path().join("escape").exists());
    assert_staging_clean(&host.root);
    host.assert_still_serves(&gate);
}

/// `state_policy` with a `freshness` section naming `repo` (its metadata directory, its
/// root pinned, a state directory of its own per host).
fn fresh_policy(host: &Host, repo: &Repo, isolation: Isolation) -> Policy {
    let state = host.tmp.path().join("state");
    let tuf_state = host.tmp.path().join("tuf-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&tuf_state).unwrap();
    set_mode(&tuf_state, 0o700);
    let metadata = repo.metadata();
    let settings = FreshnessSettings::new(
        repo.root_path(),
        &repo.root_sha256(),
        metadata.to_str().unwrap(),
        tuf_state,
    )
    .unwrap();
    host.policy_with(|p| {
        p.isolation(isolation)
            .trust(TrustPolicy::from_json(br#"{"state_dir":"state"}"#, host.tmp.path()).unwrap())
            .freshness(settings)
    })
}

/// The OCI manifest bytes of a pushed release, as the registry stores them (what an
/// operator lists in the TUF repository).
fn manifest_bytes(registry: &Registry, digest: &str) -> Vec<u8> {
    let bytes = std::fs::read(registry.blob_file(digest)).unwrap();
    assert_eq!(sha256(&bytes), digest);
    bytes
}

#[test]
fn a_pull_installs_only_what_tuf_lists_now_and_a_stale_release_raises_no_mark() {
    let registry = Registry::start();
    for host in Host::each_mode() {
        let mode = host.isolation;
        let name = format!("fresh{}", if mode == Isolation::Thread { "t" } else { "p" });
        let stable = format!("oci://{}/plugins/{name}:stable", registry.host());
        let (v1, v2, v3) = (
            release(&host, &name, "1.0.0", 0),
            release(&host, &name, "2.0.0", 0),
            release(&host, &name, "3.0.0", 0),
        );
        let d1 = push(
            &host,
            &v1,
            &format!("oci://{}/plugins/{name}:1", registry.host()),
        );
        let d2 = push(
            &host,
            &v2,
            &format!("oci://{}/plugins/{name}:2", registry.host()),
        );
        push(
            &host,
            &v3,
            &format!("oci://{}/plugins/{name}:3", registry.host()),
        );

        // The operator lists 1.0.0, then replaces it by 2.0.0; 3.0.0 is signed and pushed
        // but never listed (withdrawn before release, say).
        let mut repo = Repo::new();
        repo.add_release(&name, "1.0.0", &manifest_bytes(&registry, &d1));
        repo.publish(Publication::serial(1));
        let gate = host.gate_with(fresh_policy(&host, &repo, mode));
        push(&host, &v1, &stable);
        assert_eq!(fleet::pull(&gate, &stable, &host.root).unwrap().digest, d1);

        repo.releases.clear();
        repo.add_release(&name, "2.0.0", &manifest_bytes(&registry, &d2));
        repo.publish(Publication::serial(2));
        push(&host, &v2, &stable);
        assert_eq!(fleet::pull(&gate, &stable, &host.root).unwrap().digest, d2);
        let installed = tree(&host.root);

        // The tag moved to the signed, unlisted 3.0.0: refused by freshness before
        // verification, so its version never reaches the rollback mark...
        push(&host, &v3, &stable);
        let e = fleet::pull(&gate, &stable, &host.root).unwrap_err();
        assert!(
            matches!(&e, Error::Freshness(FreshnessError::NotListed { target })
                if *target == format!("{name}/3.0.0")),
            "{mode:?}: {e:?}"
        );
        assert_eq!(tree(&host.root), installed, "{mode:?}: 2.0.0 stays");
        assert_staging_clean(&host.root);
        // ... so the listed 2.0.0 still installs (a mark raised to 3.0.0 would refuse it).
        let by_digest = format!("oci://{}/plugins/{name}@{d2}", registry.host());
        assert_eq!(
            fleet::pull(&gate, &by_digest, &host.root).unwrap().digest,
            d2
        );

        // The tag moved back to the older signed 1.0.0, no longer listed: refused by
        // freshness (and the rollback mark would refuse it too).
        push(&host, &v1, &stable);
        let e = fleet::pull(&gate, &stable, &host.root).unwrap_err();
        assert!(
            matches!(&e, Error::Freshness(FreshnessError::NotListed { target })
                if *target == format!("{name}/1.0.0")),
            "{mode:?}: {e:?}"
        );
        assert_eq!(tree(&host.root), installed, "{mode:?}: 2.0.0 stays");

        // The installed release runs.
        let plugin = gate.verify_and_load(host.root.join(&name)).unwrap();
        let result = plugin.execute(&PluginContext::default()).unwrap();
        assert_eq!(result.output["marker"], "2.0.0", "{mode:?}");
        drop(plugin);
        host.assert_still_serves(&gate);
    }
}

/// Without a `freshness` section the same unlisted release installs: the refusal above is
/// the freshness check's, not another stage's.
#[test]
fn without_a_freshness_section_an_unlisted_release_installs() {
    let registry = Registry::start();
    let host = Host::new();
    let name = "unlisted";
    let v3 = release(&host, name, "3.0.0", 0);
    let reference = format!("oci://{}/plugins/{name}:3", registry.host());
    let d3 = push(&host, &v3, &reference);
    let gate = host.gate_with(state_policy(&host, Isolation::Process));
    assert_eq!(
        fleet::pull(&gate, &reference, &host.root).unwrap().digest,
        d3
    );
    host.assert_still_serves(&gate);
}
