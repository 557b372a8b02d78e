//! `Gate::verify_many` (verification of a list on every core) and the discovery that uses
//! it: the same results as the sequential path, entry by entry and in order, and version
//! marks that no parallel raise can lose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};

use skillgate::compat::PluginLoader;
use skillgate::error::{Error, IntegrityError, LocateError, SignatureError, TrustError};
use skillgate::inspect::{InspectError, Inspected};
use skillgate::policy::TrustPolicy;
use skillgate::state::{Version, read_version_mark};
use skillgate::{Gate, TrustStore};
use support::{Host, manifest_template};

/// What an entry must come out as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Good,
    Tampered,
    Unsigned,
    ExecStack,
    Outside,
}

/// Whether the outcome (`None` for accepted, or the refusal) is the one wanted.
fn check(want: Want, got: Option<&Error>) -> bool {
    match (want, got) {
        (Want::Good, None) => true,
        (Want::Tampered, Some(e)) => matches!(
            e,
            Error::Integrity(IntegrityError::HashMismatch { file, .. }) if file.ends_with(".so")
        ),
        (Want::Unsigned, Some(e)) => matches!(e, Error::Signature(SignatureError::Missing)),
        (Want::ExecStack, Some(e)) => matches!(e, Error::Inspect(InspectError::ExecutableStack)),
        (Want::Outside, Some(e)) => {
            matches!(e, Error::Locate(LocateError::OutsideTrustedRoots { .. }))
        }
        _ => false,
    }
}

/// Flips one byte of `path` past its ELF header.
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[4000] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// A root of good, tampered, unsigned and ELF-refused plugins, plus one outside every
/// trusted root; returns the paths (in a deliberately unsorted order) and what each must be.
fn mixed_root(host: &Host) -> Vec<(PathBuf, Want)> {
    let good = host.build("good", "shared", &[]);
    let execstack = host.build_with("good", "stacky", &[], &["-Wl,-z,execstack"]);
    let mut out = Vec::new();
    for i in 0..6 {
        let name = format!("good{i}");
        out.push((host.install(&name, &good), Want::Good));
    }
    let dir = host.install("tampered", &good);
    flip_byte(&dir.join("libtampered.so"));
    out.insert(2, (dir, Want::Tampered));
    let dir = host.install("unsigned", &good);
    std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
    out.insert(0, (dir, Want::Unsigned));
    out.push((host.install("stacky", &execstack), Want::ExecStack));
    let outside = host.install_in(host.tmp.path(), "outsider", &good);
    out.insert(4, (outside, Want::Outside));
    out
}

/// A comparable summary of one result: the plugin's name, version and inspection report,
/// or the error's text.
fn summary(result: &Result<Inspected, Error>) -> String {
    match result {
        Ok(i) => format!(
            "ok {} {} {:?}",
            i.bundle().manifest().name(),
            i.bundle().manifest().version(),
            i.report()
        ),
        Err(e) => format!("err {e:?}"),
    }
}

#[test]
fn verify_many_gives_the_sequential_results_entry_by_entry_in_order() {
    let host = Host::new();
    let gate = host.gate();
    let cases = mixed_root(&host);
    let paths: Vec<PathBuf> = cases.iter().map(|(p, _)| p.clone()).collect();
    let many = gate.verify_many(&paths);
    assert_eq!(many.len(), cases.len());
    for ((path, want), (got_path, got)) in cases.iter().zip(&many) {
        assert_eq!(path, got_path, "order");
        assert!(
            check(*want, got.as_ref().err()),
            "{path:?}: want {want:?}, got {got:?}"
        );
        let sequential = gate.verify_and_inspect(path);
        assert!(
            check(*want, sequential.as_ref().err()),
            "{path:?}: sequential"
        );
        assert_eq!(summary(got), summary(&sequential), "{path:?}");
    }
    host.assert_still_serves(&gate);
}

#[test]
fn verify_many_of_an_empty_list_is_empty_and_a_duplicate_is_verified_twice() {
    let host = Host::new();
    let gate = host.gate();
    let none: [PathBuf; 0] = [];
    assert!(gate.verify_many(&none).is_empty());
    let good = host.plugin("good", "twice");
    let dir = host.install("unsigned", &host.build("good", "unsigned", &[]));
    std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
    let paths = [&good, &dir, &good, &good, &dir];
    let many = gate.verify_many(&paths);
    assert_eq!(many.len(), paths.len());
    for (given, (got_path, got)) in paths.iter().zip(&many) {
        assert_eq!(*given, got_path);
        let want = if *given == &good {
            Want::Good
        } else {
            Want::Unsigned
        };
        assert!(check(want, got.as_ref().err()), "{given:?}: {got:?}");
    }
    // Each Ok is its own sealed copy, loadable on its own.
    let mut oks = many.into_iter().filter_map(|(_, r)| r.ok());
    let first = gate.load(oks.next().unwrap()).unwrap();
    let second = gate.load(oks.next().unwrap()).unwrap();
    assert!(first.execute(&Default::default()).unwrap().success);
    assert!(second.execute(&Default::default()).unwrap().success);
    host.assert_still_serves(&gate);
}

/// A gate whose policy keeps version marks in `<host>/state`.
fn state_gate(host: &Host) -> (Gate, PathBuf) {
    let state = host.tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let trust = TrustPolicy::from_json(br#"{"state_dir":"state"}"#, host.tmp.path()).unwrap();
    let policy = host.policy_with(|p| p.trust(trust));
    let gate =
        Gate::with_trust_store(policy, TrustStore::load_dir(&host.keys_dir()).unwrap()).unwrap();
    (gate, state)
}

fn install_release(host: &Host, lib: &Path, dir_name: &str, name: &str, version: &str) -> PathBuf {
    let manifest = manifest_template(name).replace("\"1.0.0\"", &format!("\"{version}\""));
    let dir = host.root.join(dir_name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(lib, dir.join(format!("lib{name}.so"))).unwrap();
    std::fs::write(dir.join("plugin.json"), manifest).unwrap();
    skillgate::sign::sign_plugin_dir(&dir, &host.key).unwrap();
    dir
}

/// Many plugins verified at once each get their mark; many releases of one plugin verified
/// at once leave the mark at the highest (the state lock serializes raises: without it, a
/// thread that read an old mark could write its lower version over a higher one). The
/// newest release is always accepted; an older one is accepted or refused as a rollback
/// below the newest, depending on which got there first.
#[test]
fn parallel_verification_never_loses_a_version_mark_raise() {
    let host = Host::new();
    let (gate, state) = state_gate(&host);
    let lib = host.build("good", "shared", &[]);
    let distinct: Vec<PathBuf> = (0..16)
        .map(|i| {
            install_release(
                &host,
                &lib,
                &format!("d{i}"),
                &format!("d{i}"),
                &format!("{}.0.0", i + 1),
            )
        })
        .collect();
    for (i, (_, r)) in gate.verify_many(&distinct).iter().enumerate() {
        assert!(r.is_ok(), "d{i}: {r:?}");
        assert_eq!(
            read_version_mark(&state, &format!("d{i}")).unwrap(),
            Some(Version::new(i as u64 + 1, 0, 0))
        );
    }
    let releases: Vec<PathBuf> = (1..=12u64)
        .map(|v| {
            install_release(
                &host,
                &lib,
                &format!("r{v}"),
                "versioned",
                &format!("{v}.0.0"),
            )
        })
        .collect();
    for round in 0..4 {
        // Newest first in odd rounds, so it often lands before the older ones.
        let mut order = releases.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for (path, r) in gate.verify_many(&order) {
            let newest = path == releases[11];
            match r {
                Ok(_) => {}
                Err(Error::Trust(TrustError::Rollback {
                    plugin,
                    version,
                    highest,
                })) if !newest => {
                    assert_eq!(plugin, "versioned");
                    let (v, h) = (
                        Version::parse(&version).unwrap(),
                        Version::parse(&highest).unwrap(),
                    );
                    assert!(v.cmp_precedence(&h).is_lt(), "{version} < {highest}");
                }
                other => panic!("{path:?} (round {round}): {other:?}"),
            }
        }
        assert_eq!(
            read_version_mark(&state, "versioned").unwrap(),
            Some(Version::new(12, 0, 0)),
            "round {round}"
        );
    }
    // Once the mark is at 12, every older release is refused and the newest still passes.
    for (path, r) in gate.verify_many(&releases) {
        if path == releases[11] {
            assert!(r.is_ok(), "{r:?}");
        } else {
            assert!(
                matches!(r, Err(Error::Trust(TrustError::Rollback { ref highest, .. })) if highest == "12.0.0"),
                "{path:?}: {r:?}"
            );
        }
    }
    host.assert_still_serves(&gate);
}

/// Discovery verifies in parallel and loads serially: the plugins in sorted order, each
/// refusal with its exact variant, in both isolation modes.
#[test]
fn discover_verifies_in_parallel_with_the_sequential_results() {
    for host in Host::each_mode() {
        let names = ["b-good", "a-good", "c-good"];
        for name in names {
            host.plugin("good", name);
        }
        let lib = host.build("good", "tampered", &[]);
        let dir = host.install("tampered", &lib);
        flip_byte(&dir.join("libtampered.so"));
        let lib = host.build("good", "unsigned", &[]);
        let dir = host.install("unsigned", &lib);
        std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
        let lib = host.build_with("good", "stacky", &[], &["-Wl,-z,execstack"]);
        host.install("stacky", &lib);
        let loader = PluginLoader::with_trust(
            host.policy(),
            TrustStore::load_dir(&host.keys_dir()).unwrap(),
        );
        let found = loader.discover().unwrap();
        let loaded: Vec<String> = found
            .plugins
            .iter()
            .map(|p| p.metadata().name.clone())
            .collect();
        assert_eq!(loaded, ["a-good", "b-good", "c-good"]);
        let refused: Vec<(String, bool)> = found
            .refused
            .iter()
            .map(|(p, e)| {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                let want = match name.as_str() {
                    "stacky" => Want::ExecStack,
                    "tampered" => Want::Tampered,
                    "unsigned" => Want::Unsigned,
                    _ => Want::Good,
                };
                let ok = check(want, Some(e));
                (name, ok)
            })
            .collect();
        assert_eq!(
            refused,
            [
                ("stacky".to_owned(), true),
                ("tampered".to_owned(), true),
                ("unsigned".to_owned(), true)
            ],
            "{:?}",
            found.refused
        );
        for p in &found.plugins {
            assert!(p.execute(&Default::default()).unwrap().success);
        }
        host.assert_still_serves(&host.gate());
    }
}
