//! Replays every committed fuzz input — the seeds in `fuzz/seeds/<target>/` and every crash
//! ever found, kept in `fuzz/regressions/<target>/` — through the same entry points the
//! cargo-fuzz targets call (`skillgate::fuzzing`), on stable, in plain `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use skillgate::fuzzing;

/// Every fuzz target and the entry point it calls; the structured target is replayed by
/// decoding its bytes the way `arbitrary` would not, so it gets a fixed set of cases below.
type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 11] = [
    ("manifest", fuzzing::manifest),
    ("signature_file", fuzzing::signature_file),
    ("public_key", fuzzing::public_key),
    ("secret_key", fuzzing::secret_key),
    ("policy", fuzzing::policy),
    ("ffi_result", fuzzing::ffi_result),
    ("ipc_frame", fuzzing::ipc_frame),
    ("ring_reply", fuzzing::ring_reply),
    ("elf", fuzzing::elf),
    ("oci_reference", fuzzing::oci_reference),
    ("context_encode", fuzzing::context_encode),
];

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != ".keep"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_input_replays_without_panic() {
    let mut replayed = 0;
    for (target, entry) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "target {target} has no seed corpus");
        for path in seeds.iter().chain(&inputs("regressions", target)) {
            let bytes = std::fs::read(path).unwrap();
            entry(&bytes);
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
}

#[test]
fn seeds_are_valid_inputs_where_they_should_be() {
    let read = |t: &str, f: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/seeds")
                .join(t)
                .join(f),
        )
        .unwrap()
    };
    for seed in ["seed-signed-manifest.json", "seed-workspace.json"] {
        assert!(
            skillgate::fuzzing::is_valid_manifest(&read("manifest", seed)),
            "{seed}"
        );
    }
    assert!(
        skillgate::sign::SignatureFile::parse(&read("signature_file", "seed-one-signature.json"))
            .is_ok()
    );
    assert!(skillgate::PublicKey::parse_minisign(&read("public_key", "seed-minisign.pub")).is_ok());
    assert!(skillgate::fuzzing::is_valid_frame(
        &read("ipc_frame", "seed-output"),
        1 << 20
    ));
    assert!(skillgate::fuzzing::is_valid_frame(
        &read("ipc_frame", "seed-loaded"),
        1 << 20
    ));
    for seed in ["seed-output", "seed-fault-null", "seed-fault-too-large"] {
        assert!(
            skillgate::fuzzing::is_valid_ring_reply(&read("ring_reply", seed)),
            "{seed}"
        );
    }
    for seed in [
        "seed-wrong-seq",
        "seed-huge-len",
        "seed-bad-tag",
        "seed-on-socket",
    ] {
        assert!(
            !skillgate::fuzzing::is_valid_ring_reply(&read("ring_reply", seed)),
            "{seed}"
        );
    }
    assert!(skillgate::fuzzing::is_valid_result(&read(
        "ffi_result",
        "seed-result.json"
    )));
    assert!(skillgate::inspect::inspect_bytes(&read("elf", "seed-c-plugin.so")).is_ok());
    for seed in [
        "seed-default.json",
        "seed-thread-sandbox.json",
        "seed-danger.json",
        "seed-workspace.json",
    ] {
        let parsed = skillgate::Policy::from_json(&read("policy", seed), Path::new("/"));
        assert!(parsed.is_ok(), "{seed}: {parsed:?}");
    }
}

#[test]
fn the_structured_target_round_trips_and_refuses_every_flip() {
    let base = fuzzing::ManifestFields {
        name: "echo".into(),
        description: "d\u{e9}scription with \"quotes\"".into(),
        version: (1, 2, 3),
        author: Some("a".into()),
        files: vec![("README.md".into(), 10, 0xab), ("bad/../path".into(), 1, 1)],
        flip: (0, 0),
    };
    fuzzing::signed_roundtrip(&base);
    for at in [0, 1, 17, 100, 10_000] {
        for delta in [1u8, 0x80, 0xff] {
            fuzzing::signed_roundtrip(&fuzzing::ManifestFields {
                flip: (at, delta),
                ..base.clone()
            });
        }
    }
    // Names the manifest parser refuses still sign and verify; only parsing fails.
    fuzzing::signed_roundtrip(&fuzzing::ManifestFields {
        name: "../x\u{0}".into(),
        ..base
    });
}

#[test]
fn reference_seeds_parse_or_not_as_named() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/oci_reference");
    for (seed, valid) in [
        ("seed-tag", true),
        ("seed-digest-v6", true),
        ("seed-layout-tag", true),
        ("seed-dotdot", false),
    ] {
        let text = std::fs::read_to_string(dir.join(seed)).unwrap();
        assert_eq!(
            skillgate::fleet::reference::parse(&text).is_ok(),
            valid,
            "{seed}"
        );
    }
}
