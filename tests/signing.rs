//! Signing and verifying walk and hash a plugin directory with the same code, so they agree
//! at every limit: what `skill-sign sign` accepts, `skill-sign verify` and a `Gate` accept;
//! one step past a limit, signing refuses with the error variant verification gives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};

use skillgate::error::LocateError;
use skillgate::error::ManifestError;
use skillgate::error::VerifyError;
use skillgate::inspect::{InspectError, Relro};
use skillgate::policy::Limits;
use skillgate::sign::{
    SignError, SignOutcome, sign_plugin_dir, sign_plugin_dir_checked, sign_plugin_dir_with,
    verify_plugin_dir,
};
use skillgate::{Bundle, Error, Gate, PluginContext, Policy, TrustStore, Verified};
use support::{Host, manifest_template};

fn trust(host: &Host) -> TrustStore {
    TrustStore::from_keys([host.key.public()]).unwrap()
}

fn gate(host: &Host, limits: &Limits) -> Gate {
    Gate::new(host.policy_with(|p| p.limits(limits.clone()))).unwrap()
}

/// `<parent>/<name>/` holding `lib<name>.so` (a copy of `lib`) and an unsigned manifest.
fn unsigned_plugin(parent: &Path, name: &str, lib: &Path) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(lib, dir.join(format!("lib{name}.so"))).unwrap();
    std::fs::write(dir.join("plugin.json"), manifest_template(name)).unwrap();
    dir
}

/// `d1/d2/…/data.txt`, a file at `depth` (a top-level entry is at depth 1).
fn rel_at_depth(depth: usize) -> String {
    let mut parts: Vec<String> = (1..depth).map(|d| format!("d{d}")).collect();
    parts.push("data.txt".to_owned());
    parts.join("/")
}

fn put(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Limits with the given depth and the defaults otherwise.
fn with_depth(depth: usize) -> Limits {
    Limits::builder().depth(depth).build().unwrap()
}

#[test]
fn every_depth_up_to_the_limit_signs_and_verifies_and_one_past_is_refused_by_both() {
    let host = Host::new();
    let lib = host.build("good", "deep", &[]);
    let trust = trust(&host);
    for limits in [Limits::default(), with_depth(2)] {
        let max = limits.depth();
        let gate = gate(&host, &limits);
        for depth in 1..=max {
            let case = format!("limit {max}, file at depth {depth}");
            let parent = host.root.join(format!("limit{max}-at{depth}"));
            let dir = unsigned_plugin(&parent, "deep", &lib);
            put(&dir, &rel_at_depth(depth), b"data");
            let signed = sign_plugin_dir_with(&dir, &host.key, &limits);
            assert!(signed.is_ok(), "{case}: signing refused: {signed:?}");
            let verified = verify_plugin_dir(&dir, &trust, &limits);
            assert!(verified.is_ok(), "{case}: verify refused: {verified:?}");
            let by_gate = gate.verify(&dir);
            assert!(by_gate.is_ok(), "{case}: the gate refused: {by_gate:?}");
            if depth == max {
                let loaded = gate.verify_and_load(&dir).unwrap();
                let result = loaded.execute(&PluginContext::default()).unwrap();
                assert!(result.success, "{case}: the plugin did not run");
            }
        }

        let case = format!("limit {max}, file at depth {}", max + 1);
        let deep = rel_at_depth(max + 1);
        let parent = host.root.join(format!("limit{max}-past"));
        let dir = unsigned_plugin(&parent, "deep", &lib);
        put(&dir, &deep, b"data");
        let signed = sign_plugin_dir_with(&dir, &host.key, &limits);
        let Err(SignError::Locate(LocateError::TooDeep {
            path: sign_path,
            max: sign_max,
        })) = signed
        else {
            panic!("{case}: signing gave {signed:?}");
        };
        assert!(
            !dir.join("plugin.json.sig").exists(),
            "{case}: signing wrote a signature"
        );

        // Sign the tree without the deep file, then put it back: verification refuses it
        // with the same variant, naming the same entry.
        std::fs::remove_dir_all(dir.join("d1")).unwrap();
        sign_plugin_dir_with(&dir, &host.key, &limits).unwrap();
        put(&dir, &deep, b"data");
        let verified = verify_plugin_dir(&dir, &trust, &limits);
        let Err(VerifyError::Locate(LocateError::TooDeep {
            path: verify_path,
            max: verify_max,
        })) = verified
        else {
            panic!("{case}: verify gave {verified:?}");
        };
        for (side, path, got) in [
            ("signing", sign_path, sign_max),
            ("verify", verify_path, verify_max),
        ] {
            assert!(path.ends_with(&deep), "{case}: {side} named {path:?}");
            assert_eq!(got, max, "{case}: {side}");
        }
        let by_gate = gate.verify(&dir);
        assert!(
            matches!(by_gate, Err(Error::Locate(LocateError::TooDeep { .. }))),
            "{case}: the gate gave {by_gate:?}"
        );
        host.assert_still_serves(&gate);
    }
}

/// Signing and verification both refuse a tree one step past a limit, as the same
/// [`LocateError`] variant.
fn assert_same_refusal(
    case: &str,
    signed: Result<SignOutcome, SignError>,
    verified: Result<Verified<Bundle>, VerifyError>,
    expect: fn(&LocateError) -> bool,
) {
    match &signed {
        Err(SignError::Locate(e)) if expect(e) => {}
        other => panic!("{case}: signing gave {other:?}"),
    }
    match &verified {
        Err(VerifyError::Locate(e)) if expect(e) => {}
        other => panic!("{case}: verify gave {other:?}"),
    }
}

#[test]
fn signing_refuses_what_verify_refuses_at_the_size_and_count_limits() {
    let host = Host::new();
    let lib = host.build("good", "sized", &[]);
    let lib_len = std::fs::metadata(&lib).unwrap().len();
    let trust = trust(&host);
    let roomy = Limits::default();

    struct Case {
        name: &'static str,
        /// Extra files (name, length) beside the library in a tree the limits just admit.
        fits: &'static [(&'static str, usize)],
        /// The same one step past the limit.
        past: &'static [(&'static str, usize)],
        /// The limits both sides are held to.
        limits: fn(lib_len: u64) -> Limits,
        /// The refusal signing gives one step past, and the one verification gives.
        sign_refusal: fn(&SignError) -> bool,
        verify_refusal: fn(&VerifyError) -> bool,
    }
    let cases = [
        Case {
            name: "a data file one byte over file_bytes",
            fits: &[("data.bin", 1024)],
            past: &[("data.bin", 1025)],
            limits: |_| Limits::builder().file_bytes(1024).build().unwrap(),
            sign_refusal: |e| {
                matches!(
                    e,
                    SignError::Locate(LocateError::TooLarge {
                        size: 1025,
                        cap: 1024,
                        ..
                    })
                )
            },
            verify_refusal: |e| {
                matches!(
                    e,
                    VerifyError::Locate(LocateError::TooLarge {
                        size: 1025,
                        cap: 1024,
                        ..
                    })
                )
            },
        },
        Case {
            name: "the library one byte over library_bytes",
            fits: &[],
            past: &[],
            limits: |lib_len| {
                Limits::builder()
                    .library_bytes(lib_len - 1)
                    .build()
                    .unwrap()
            },
            sign_refusal: |e| matches!(e, SignError::Locate(LocateError::TooLarge { .. })),
            verify_refusal: |e| matches!(e, VerifyError::Locate(LocateError::TooLarge { .. })),
        },
        Case {
            name: "one file more than limits.files",
            fits: &[("a", 1), ("b", 1)],
            past: &[("a", 1), ("b", 1), ("c", 1)],
            limits: |_| Limits::builder().files(3).build().unwrap(),
            // Verification parses the signed manifest before it lists the directory, so a
            // manifest listing one file too many is what it refuses; signing refuses to write
            // that manifest.
            sign_refusal: |e| {
                matches!(
                    e,
                    SignError::Manifest(ManifestError::TooManyFiles { count: 4, max: 3 })
                )
            },
            verify_refusal: |e| {
                matches!(
                    e,
                    VerifyError::Manifest(ManifestError::TooManyFiles { count: 4, max: 3 })
                )
            },
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let name = case.name;
        let limits = (case.limits)(lib_len);
        let parent = host.root.join(format!("case{i}"));

        // The control: the same tree one step smaller is accepted by both.
        let dir = unsigned_plugin(&parent.join("fits"), "sized", &lib);
        for (rel, len) in case.fits {
            put(&dir, rel, &vec![b'x'; *len]);
        }
        let fits = limits
            .to_builder()
            .library_bytes(limits.library_bytes().max(lib_len))
            .build()
            .unwrap();
        let signed = sign_plugin_dir_with(&dir, &host.key, &fits);
        assert!(
            signed.is_ok(),
            "{name}: control signing refused: {signed:?}"
        );
        let verified = verify_plugin_dir(&dir, &trust, &fits);
        assert!(
            verified.is_ok(),
            "{name}: control verify refused: {verified:?}"
        );

        // One step past: signing refuses; the same tree signed under roomy limits is
        // refused by verify under the case's limits, with the same variant.
        let dir = unsigned_plugin(&parent.join("past"), "sized", &lib);
        for (rel, len) in case.past {
            put(&dir, rel, &vec![b'x'; *len]);
        }
        let signed = sign_plugin_dir_with(&dir, &host.key, &limits);
        sign_plugin_dir_with(&dir, &host.key, &roomy).unwrap();
        let verified = verify_plugin_dir(&dir, &trust, &limits);
        match &signed {
            Err(e) if (case.sign_refusal)(e) => {}
            other => panic!("{name}: signing gave {other:?}"),
        }
        match &verified {
            Err(e) if (case.verify_refusal)(e) => {}
            other => panic!("{name}: verify gave {other:?}"),
        }
    }
}

#[test]
fn signing_refuses_a_manifest_over_manifest_bytes_as_verify_does() {
    let host = Host::new();
    let lib = host.build("good", "bigmanifest", &[]);
    let trust = trust(&host);
    for (case, room) in [
        ("the template", -1_i64),
        ("the manifest with its files list", 0),
    ] {
        let dir = unsigned_plugin(&host.root.join(format!("room{room}")), "bigmanifest", &lib);
        let template_len = std::fs::metadata(dir.join("plugin.json")).unwrap().len();
        // One byte below the template, or exactly the template: signing adds the files
        // list, so the manifest it would write is over the cap either way.
        let limits = Limits::builder()
            .manifest_bytes(template_len.checked_add_signed(room).unwrap())
            .build()
            .unwrap();
        let signed = sign_plugin_dir_with(&dir, &host.key, &limits);
        assert!(
            !dir.join("plugin.json.sig").exists(),
            "{case}: signing wrote a signature"
        );

        // Signed under the defaults, the manifest is refused under the case's cap.
        sign_plugin_dir_with(&dir, &host.key, &Limits::default()).unwrap();
        let verified = verify_plugin_dir(&dir, &trust, &limits);
        assert_same_refusal(case, signed, verified, |e| {
            matches!(e, LocateError::TooLarge { .. })
        });
        // The control: at its signed size, it is read.
        let limits = limits
            .to_builder()
            .manifest_bytes(std::fs::metadata(dir.join("plugin.json")).unwrap().len())
            .build()
            .unwrap();
        let verified = verify_plugin_dir(&dir, &trust, &limits);
        assert!(verified.is_ok(), "{case}: control: {verified:?}");
    }
}

/// A symlink in the tree: signing used to follow `read_dir`'s file type, verification its
/// descriptor walk; both now refuse it as the same variant.
#[test]
fn signing_refuses_a_symlink_in_the_tree_as_verify_does() {
    let host = Host::new();
    let lib = host.build("good", "linked", &[]);
    let trust = trust(&host);
    let limits = Limits::default();
    let dir = unsigned_plugin(&host.root, "linked", &lib);
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("sub/link")).unwrap();
    let signed = sign_plugin_dir_with(&dir, &host.key, &limits);
    std::fs::remove_file(dir.join("sub/link")).unwrap();
    sign_plugin_dir_with(&dir, &host.key, &limits).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("sub/link")).unwrap();
    let verified = verify_plugin_dir(&dir, &trust, &limits);
    assert_same_refusal("symlink", signed, verified, |e| {
        matches!(e, LocateError::Symlink { .. })
    });
}

// ---- the ELF checks at signing time -----------------------------------------------------------

/// The bytes of every file in `dir`, by name, to show that a refusal changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Checked signing refuses a library the default policy's host would refuse, listing every
/// failing check in the host's order, and writes nothing: neither a first signature nor, over
/// an earlier release, a changed manifest or signature file. The unchecked API still signs
/// it (its behaviour is kept), and the host then refuses it with the first of those findings.
#[test]
fn checked_signing_lists_every_failing_check_and_writes_nothing() {
    let host = Host::new();
    let policy = Policy::default();
    let bad = host.build_with("good", "lax", &[], &["-Wl,-z,execstack", "-Wl,-z,lazy"]);
    let expected = vec![
        InspectError::ExecutableStack,
        InspectError::WeakRelro {
            found: Relro::Partial,
            required: Relro::Full,
        },
    ];

    // A first signing.
    let dir = unsigned_plugin(&host.root.join("first"), "lax", &bad);
    let before = snapshot(&dir);
    let signed = sign_plugin_dir_checked(&dir, &host.key, &policy);
    match &signed {
        Err(SignError::Refused { library, failures }) => {
            assert_eq!(library, "liblax.so");
            assert_eq!(*failures, expected);
        }
        other => panic!("checked signing gave {other:?}"),
    }
    assert_eq!(snapshot(&dir), before, "a refusal wrote something");
    let text = signed.unwrap_err().to_string();
    assert!(
        text.contains("-Wl,-z,noexecstack") && text.contains("-Wl,-z,now"),
        "{text}"
    );

    // A new build over a signed release: the release's files stay as they were.
    let good = host.build("good", "lax", &[]);
    let dir = unsigned_plugin(&host.root.join("release"), "lax", &good);
    sign_plugin_dir_checked(&dir, &host.key, &policy).unwrap();
    std::fs::copy(&bad, dir.join("liblax.so")).unwrap();
    let before = snapshot(&dir);
    let signed = sign_plugin_dir_checked(&dir, &host.key, &policy);
    assert!(
        matches!(&signed, Err(SignError::Refused { failures, .. }) if *failures == expected),
        "{signed:?}"
    );
    assert_eq!(snapshot(&dir), before, "a refusal changed the release");

    // The unchecked API signs it, and the host refuses it with the first finding.
    sign_plugin_dir(&dir, &host.key).unwrap();
    let gate = host.gate();
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Inspect(e) if *e == expected[0]),
        "{err:?}"
    );
    host.assert_still_serves(&gate);
}

/// Signing checks the library the host will load, found the way the host finds it: the
/// manifest's `library` when it names one, not the default `lib<name>.so` beside it.
#[test]
fn checked_signing_examines_the_library_the_host_would_load() {
    let host = Host::new();
    let policy = Policy::default();
    let good = host.build("good", "named", &[]);
    let bad = host.build_with("good", "named", &[], &["-Wl,-z,execstack"]);
    let manifest = manifest_template("named").replace(
        r#""abi_version":1"#,
        r#""abi_version":1,"library":"libimpl.so""#,
    );
    let layout = |case: &str, default_lib: &Path, named_lib: &Path| {
        let dir = host.root.join(case);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(default_lib, dir.join("libnamed.so")).unwrap();
        std::fs::copy(named_lib, dir.join("libimpl.so")).unwrap();
        std::fs::write(dir.join("plugin.json"), &manifest).unwrap();
        dir
    };

    let dir = layout("bad-named", &good, &bad);
    let signed = sign_plugin_dir_checked(&dir, &host.key, &policy);
    assert!(
        matches!(&signed, Err(SignError::Refused { library, failures })
            if library == "libimpl.so" && *failures == [InspectError::ExecutableStack]),
        "{signed:?}"
    );
    assert!(!dir.join("plugin.json.sig").exists());

    // Control: the refused build lying beside a good named library is only a data file.
    let dir = layout("good-named", &bad, &good);
    sign_plugin_dir_checked(&dir, &host.key, &policy).unwrap();
    let gate = host.gate();
    let plugin = gate.verify_and_load(&dir).unwrap();
    assert!(plugin.execute(&PluginContext::default()).unwrap().success);
    host.assert_still_serves(&gate);
}

/// A library that is not ELF at all is one failure, the host's own refusal of it.
#[test]
fn checked_signing_refuses_a_library_that_is_not_elf() {
    let host = Host::new();
    let dir = host.root.join("text");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("libtext.so"), "not a library\n").unwrap();
    std::fs::write(dir.join("plugin.json"), manifest_template("text")).unwrap();
    let signed = sign_plugin_dir_checked(&dir, &host.key, &Policy::default());
    assert!(
        matches!(&signed, Err(SignError::Refused { failures, .. })
            if *failures == [InspectError::NotElf]),
        "{signed:?}"
    );
    assert!(!dir.join("plugin.json.sig").exists());
}

/// The policy's limits hold for checked signing as for [`sign_plugin_dir_with`].
#[test]
fn checked_signing_keeps_the_policys_limits() {
    let host = Host::new();
    let lib = host.build("good", "limited", &[]);
    let dir = unsigned_plugin(&host.root, "limited", &lib);
    put(&dir, "data.bin", &[b'x'; 1025]);
    let policy = host.policy_with(|p| p.limits(Limits::builder().file_bytes(1024)));
    let signed = sign_plugin_dir_checked(&dir, &host.key, &policy);
    assert!(
        matches!(
            signed,
            Err(SignError::Locate(LocateError::TooLarge {
                size: 1025,
                cap: 1024,
                ..
            }))
        ),
        "{signed:?}"
    );
    // Control: the default limits admit it, and the library passes.
    sign_plugin_dir_checked(&dir, &host.key, &Policy::default()).unwrap();
}
