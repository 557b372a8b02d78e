//! The verify-and-load pipeline, attacked one stage at a time. Each refusal asserts the
//! exact error variant and then that the same host still serves a good plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skillgate::error::Error;
use skillgate::error::IntegrityError;
use skillgate::error::LoadError;
use skillgate::error::LocateError;
use skillgate::error::ManifestError;
use skillgate::error::SignatureError;
use skillgate::error::{AbiError, FaultError};
use skillgate::inspect::InspectError;
use skillgate::policy::Limits;
use skillgate::{Isolation, PluginContext, SecretKey};
use support::{Host, ctx};

fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = [0u8];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
}

#[test]
fn a_signed_c_plugin_loads_and_runs() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "greeter");
        let plugin = host.gate().verify_and_load(&dir).unwrap();
        assert_eq!(plugin.metadata().name, "greeter");
        assert_eq!(plugin.signers(), &[host.key.id()]);
        let out = plugin
            .execute(&ctx(serde_json::json!({"msg": "hi"})))
            .unwrap();
        assert!(out.success);
        assert_eq!(out.output["echo"]["input"]["msg"], "hi");
        assert_eq!(out.output["marker"], "v1");
    }
}

#[test]
fn the_rust_example_plugin_loads_and_runs() {
    for host in Host::each_mode() {
        let dir = host.install_rust_echo();
        let plugin = host.gate().verify_and_load(&dir).unwrap();
        for n in 1..=3 {
            let out = plugin.execute(&ctx(serde_json::json!({"n": n}))).unwrap();
            assert_eq!(out.output["calls"], n);
            assert_eq!(out.output["echo"]["input"]["n"], n);
        }
    }
}

/// A signed plugin tampered with, misplaced or lying about itself, and the refusal it must
/// meet before anything of it runs.
struct Tampered {
    /// The plugin's name, unique per host; names the case in every assertion.
    name: &'static str,
    /// Sets the plugin up on `host` and returns the path to load and the refusal expected.
    setup: fn(&Host, &str) -> (PathBuf, Expect),
}

type Expect = Box<dyn Fn(&Error) -> bool>;

/// Names the case in the output if a shared helper (`assert_still_serves`) panics within it.
struct Case<'a>(&'a str, Isolation);

impl Drop for Case<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failed in case {:?} ({:?} isolation)", self.0, self.1);
        }
    }
}

#[test]
fn tampered_and_misplaced_plugins_are_refused_with_the_exact_variant() {
    let cases = [
        Tampered {
            name: "flipped",
            setup: |host, name| {
                let dir = host.plugin("good", name);
                flip_byte(&dir.join("libflipped.so"), 4000);
                let expect: Expect = Box::new(
                    |err| matches!(err, Error::Integrity(IntegrityError::HashMismatch { file, .. }) if file == "libflipped.so"),
                );
                (dir, expect)
            },
        },
        // A manifest edited after signing is refused by its signature.
        Tampered {
            name: "edited",
            setup: |host, name| {
                let dir = host.plugin("good", name);
                let text = std::fs::read_to_string(dir.join("plugin.json")).unwrap();
                std::fs::write(
                    dir.join("plugin.json"),
                    text.replace("\"1.0.0\"", "\"1.0.1\""),
                )
                .unwrap();
                let expect: Expect =
                    Box::new(|err| matches!(err, Error::Signature(SignatureError::Invalid { .. })));
                (dir, expect)
            },
        },
        Tampered {
            name: "unsigned",
            setup: |host, name| {
                let dir = host.plugin("good", name);
                std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
                let expect: Expect =
                    Box::new(|err| matches!(err, Error::Signature(SignatureError::Missing)));
                (dir, expect)
            },
        },
        // A signature by an untrusted key is refused, naming that key.
        Tampered {
            name: "stranger",
            setup: |host, name| {
                let dir = host.plugin("good", name);
                std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
                let stranger = SecretKey::generate();
                skillgate::sign::sign_plugin_dir(&dir, &stranger).unwrap();
                let id = stranger.id();
                let expect: Expect = Box::new(
                    move |err| matches!(err, Error::Signature(SignatureError::NoTrustedSignature { key_ids }) if key_ids == &[id]),
                );
                (dir, expect)
            },
        },
        Tampered {
            name: "extra",
            setup: |host, name| {
                let dir = host.plugin("good", name);
                std::fs::write(dir.join("payload.sh"), "#!/bin/sh\n").unwrap();
                let expect: Expect = Box::new(
                    |err| matches!(err, Error::Integrity(IntegrityError::UnlistedFile { file, .. }) if file == "payload.sh"),
                );
                (dir, expect)
            },
        },
        Tampered {
            name: "outsider",
            setup: |host, name| {
                let lib = host.build("good", name, &[]);
                let dir = host.install_in(host.tmp.path(), name, &lib);
                let expect: Expect = Box::new(|err| {
                    matches!(err, Error::Locate(LocateError::OutsideTrustedRoots { .. }))
                });
                (dir, expect)
            },
        },
        // A `..` escape out of the trusted root.
        Tampered {
            name: "escaped",
            setup: |host, name| {
                let lib = host.build("good", name, &[]);
                host.install_in(host.tmp.path(), name, &lib);
                let expect: Expect =
                    Box::new(|err| matches!(err, Error::Locate(LocateError::EscapesRoot { .. })));
                (host.root.join("../escaped"), expect)
            },
        },
        // A symlinked plugin directory.
        Tampered {
            name: "linked",
            setup: |host, name| {
                let lib = host.build("good", name, &[]);
                let real = host.install_in(host.tmp.path(), name, &lib);
                symlink(&real, host.root.join(name)).unwrap();
                let expect: Expect =
                    Box::new(|err| matches!(err, Error::Locate(LocateError::Symlink { .. })));
                (host.root.join(name), expect)
            },
        },
        // A symlinked library.
        Tampered {
            name: "liblink",
            setup: |host, name| {
                let dir = host.plugin("good", name);
                // The link points at an identical copy, so only the refusal to follow links
                // stops it.
                let outside = host.tmp.path().join("libliblink.so");
                std::fs::rename(dir.join("libliblink.so"), &outside).unwrap();
                symlink(&outside, dir.join("libliblink.so")).unwrap();
                let expect: Expect =
                    Box::new(|err| matches!(err, Error::Locate(LocateError::Symlink { .. })));
                (dir, expect)
            },
        },
        // An ABI version mismatch.
        Tampered {
            name: "abi2",
            setup: |host, name| {
                let expect: Expect = Box::new(|err| {
                    matches!(
                        err,
                        Error::Abi(AbiError::VersionMismatch {
                            manifest: 1,
                            plugin: 2,
                            host: 1
                        })
                    )
                });
                (host.plugin("abi2", name), expect)
            },
        },
        // Metadata naming another plugin.
        Tampered {
            name: "honest",
            setup: |host, name| {
                let expect: Expect = Box::new(|err| {
                    matches!(
                        err,
                        Error::Abi(AbiError::MetadataMismatch {
                            field: "name",
                            manifest,
                            plugin,
                        }) if manifest == "honest" && plugin == "someone-else"
                    )
                });
                (host.plugin("wrong_name", name), expect)
            },
        },
    ];
    for host in Host::each_mode() {
        for case in &cases {
            let _case = Case(case.name, host.isolation);
            let (path, expect) = (case.setup)(&host, case.name);
            let err = host.gate().verify_and_load(&path).err();
            assert!(
                err.as_ref().is_some_and(&expect),
                "{} ({:?}): {err:?}",
                case.name,
                host.isolation
            );
            host.assert_still_serves(&host.gate());
        }
    }
}

#[test]
fn libraries_swapped_between_two_signed_plugins_are_refused() {
    for host in Host::each_mode() {
        // Names of one length give libraries of one size, so only the hash can tell them apart.
        let alpha = host.plugin("good", "alpha");
        let bravo = host.plugin("good", "bravo");
        let a = std::fs::read(alpha.join("libalpha.so")).unwrap();
        let b = std::fs::read(bravo.join("libbravo.so")).unwrap();
        assert_eq!(a.len(), b.len(), "precondition: equal sizes");
        std::fs::write(alpha.join("libalpha.so"), &b).unwrap();
        std::fs::write(bravo.join("libbravo.so"), &a).unwrap();
        for dir in [&alpha, &bravo] {
            let err = host.gate().verify_and_load(dir).unwrap_err();
            assert!(
                matches!(err, Error::Integrity(IntegrityError::HashMismatch { .. })),
                "{err:?}"
            );
        }
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn a_fifo_as_the_library_is_refused_without_hanging() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "fifo");
        let lib = dir.join("libfifo.so");
        std::fs::remove_file(&lib).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&lib)
            .status()
            .unwrap();
        assert!(status.success());
        let gate = Arc::new(host.gate());
        let (tx, rx) = std::sync::mpsc::channel();
        let g = Arc::clone(&gate);
        std::thread::spawn(move || {
            let _ = tx.send(g.verify_and_load(&dir).map(|_| ()));
        });
        let err = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("verification hung on a FIFO")
            .unwrap_err();
        assert!(
            matches!(err, Error::Locate(LocateError::NotRegularFile { .. })),
            "{err:?}"
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_missing_export_is_refused_before_its_constructor_runs() {
    for host in Host::each_mode() {
        let marker = host.tmp.path().join("constructor-ran");
        let quoted = format!("\"{}\"", marker.display());
        let lib = host.build("ctor_marker", "ctor", &[("MARKER_PATH", &quoted)]);
        let dir = host.install("ctor", &lib);
        let err = host.gate().verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Inspect(InspectError::MissingExport("vtcode_plugin_execute"))
            ),
            "{err:?}"
        );
        assert!(!marker.exists(), "the refused plugin's constructor ran");
        host.assert_still_serves(&host.gate());
        // Control: the constructor does create the marker when the library is loaded, so the
        // assertion above can fail. Loaded in a child process to keep this one clean.
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import ctypes; ctypes.CDLL({:?})",
                    lib.display().to_string()
                ),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(
            marker.exists(),
            "control: loading the library runs the constructor"
        );
    }
}

fn fault_of(host: &Host, src: &str, name: &str) -> FaultError {
    let dir = host.plugin(src, name);
    let plugin = host.gate().verify_and_load(&dir).unwrap();
    match plugin.execute(&PluginContext::default()).unwrap_err() {
        Error::Fault(f) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn bad_results_are_faults_not_panics() {
    type Expect = fn(&FaultError) -> bool;
    // (plugin source, plugin name, the exact fault)
    let rows: [(&str, &str, Expect); 4] = [
        ("result_null", "rnull", |f| {
            matches!(f, FaultError::NullResult { .. })
        }),
        ("result_not_utf8", "rutf8", |f| {
            matches!(f, FaultError::NotUtf8 { .. })
        }),
        ("result_not_json", "rjson", |f| {
            matches!(f, FaultError::NotJson { .. })
        }),
        // 8 MiB against the default 1 MiB output limit.
        ("result_huge", "rhuge", |f| {
            matches!(
                f,
                FaultError::OutputTooLarge {
                    limit: 1_048_576,
                    ..
                }
            )
        }),
    ];
    for host in Host::each_mode() {
        for (src, name, expect) in rows {
            let _case = Case(src, host.isolation);
            let fault = fault_of(&host, src, name);
            assert!(expect(&fault), "{src} ({:?}): {fault:?}", host.isolation);
        }
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn a_huge_result_within_a_raised_limit_is_accepted() {
    for host in Host::each_mode() {
        let dir = host.plugin("result_huge", "big");
        let policy = host
            .policy()
            .to_builder()
            .limits(Limits::builder().output_bytes(16 * 1024 * 1024))
            .build()
            .unwrap();
        let plugin = host.gate_with(policy).verify_and_load(&dir).unwrap();
        let out = plugin.execute(&PluginContext::default()).unwrap();
        assert_eq!(out.output["blob"].as_str().unwrap().len(), 8 * 1024 * 1024);
    }
}

#[test]
fn the_library_swapped_on_disk_after_verification_changes_nothing() {
    // A small library is held on the heap until load, a large one sealed as it is hashed:
    // both are checked. 2 MiB of padding takes the second path.
    let rows: [(&str, &[(&str, &str)]); 2] =
        [("toctou", &[]), ("toctoubig", &[("PAD_BYTES", "2097152")])];
    for host in Host::each_mode() {
        for (name, pad) in rows {
            let build = |marker: &'static str| {
                let mut defines = vec![("MARKER", marker)];
                defines.extend_from_slice(pad);
                host.build("good", name, &defines)
            };
            let v1 = build("\"v1\"");
            let v2 = build("\"v2\"");
            let size = std::fs::metadata(&v1).unwrap().len();
            assert_eq!(
                size > 1024 * 1024,
                !pad.is_empty(),
                "library of {size} bytes"
            );
            let dir = host.install(name, &v1);
            let gate = host.gate();
            let inspected = gate.verify_and_inspect(&dir).unwrap();
            // Between verification and load, the attacker swaps the file (rename is atomic).
            let lib = dir.join(format!("lib{name}.so"));
            std::fs::copy(&v2, dir.join("staged")).unwrap();
            std::fs::rename(dir.join("staged"), &lib).unwrap();
            let plugin = gate.load(inspected).unwrap();
            let out = plugin.execute(&PluginContext::default()).unwrap();
            assert_eq!(
                out.output["marker"], "v1",
                "{name}: the loaded code must be the verified code"
            );
            // Control: the file on disk really is the other build now.
            let err = gate.verify_and_load(&dir).unwrap_err();
            assert!(
                matches!(err, Error::Integrity(IntegrityError::HashMismatch { .. })),
                "{err:?}"
            );
        }
    }
}

#[test]
fn sixteen_threads_never_overlap_inside_one_plugin() {
    for host in Host::each_mode() {
        let dir = host.plugin("counter", "counter");
        let plugin = Arc::new(host.gate().verify_and_load(&dir).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let p = Arc::clone(&plugin);
                std::thread::spawn(move || {
                    for _ in 0..8 {
                        let out = p.execute(&PluginContext::default()).unwrap();
                        assert!(out.success);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let out = plugin.execute(&PluginContext::default()).unwrap();
        assert_eq!(out.output["calls"], 16 * 8 + 1);
        assert_eq!(
            out.output["max_active"], 1,
            "two calls ran inside the plugin at once"
        );
    }
}

#[test]
fn a_dropped_plugin_never_aliases_the_next_one() {
    // glibc finds loaded objects by name; the memfd's /proc/self/fd/N name must not be
    // reused by the next plugin, or dlopen would hand back the first library.
    for host in Host::each_mode() {
        let first = host.build("good", "first", &[("MARKER", "\"first\"")]);
        let second = host.build("good", "second", &[("MARKER", "\"second\"")]);
        let first = host.install("first", &first);
        let second = host.install("second", &second);
        let gate = host.gate();
        let p = gate.verify_and_load(&first).unwrap();
        assert_eq!(
            p.execute(&PluginContext::default()).unwrap().output["marker"],
            "first"
        );
        drop(p);
        let p = gate.verify_and_load(&second).unwrap();
        assert_eq!(p.metadata().name, "second");
        assert_eq!(
            p.execute(&PluginContext::default()).unwrap().output["marker"],
            "second"
        );
    }
}

#[test]
fn an_empty_trust_store_refuses_everything() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "lonely");
        let gate = skillgate::Gate::with_trust_store(host.policy(), skillgate::TrustStore::empty())
            .unwrap();
        let err = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(err, Error::Signature(SignatureError::EmptyTrustStore)),
            "{err:?}"
        );
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn a_call_that_hangs_times_out_and_poisons_only_its_plugin() {
    for host in Host::each_mode() {
        let dir = host.plugin("counter", "slow");
        let policy = host
            .policy()
            .to_builder()
            .limits(Limits::builder().call_timeout_ms(200))
            .build()
            .unwrap();
        let lib = host.build("counter", "sleepy", &[("SLEEP_MS", "5000")]);
        let sleepy = host.install("sleepy", &lib);
        let gate = host.gate_with(policy);
        let plugin = gate.verify_and_load(&sleepy).unwrap();
        let start = Instant::now();
        let err = plugin.execute(&PluginContext::default()).unwrap_err();
        assert!(
            matches!(err, Error::Fault(FaultError::Timeout { timeout_ms: 200 })),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(4));
        let err = plugin.execute(&PluginContext::default()).unwrap_err();
        assert!(matches!(err, Error::Fault(FaultError::Poisoned)), "{err:?}");
        // Other plugins on the same host are unaffected.
        let other = gate.verify_and_load(&dir).unwrap();
        assert!(other.execute(&PluginContext::default()).unwrap().success);
        host.assert_still_serves(&gate);
    }
}

// ---------------------------------------------------------------------------------------
// Plugin- and filesystem-chosen text in errors (issue 11, item 6). Every printed error is
// `Error`'s Display, which escapes control characters as `\u{…}`; each test feeds one source
// of hostile text, asserts the exact variant, that the raw text did reach the error value
// (so the probe is live), and that the printed form holds no control character at all.

/// ESC [ 2 J (clear screen), a newline and a forged log line, as JSON inside C source.
const HOSTILE_JSON_TEXT: &str = r"\\u001b[2J\\nskillgate: forged";
/// What the plugin's JSON decodes to.
const HOSTILE_TEXT: &str = "\u{1b}[2J\nskillgate: forged";

/// The printed error: one line, no raw control character, the escape sequence visible.
fn assert_printed_safely(case: &str, err: &Error) {
    let text = err.to_string();
    assert!(
        !text.chars().any(skillgate::escape::needs_escape),
        "{case}: raw control character in {text:?}"
    );
    assert!(
        !text.contains('\n') && !text.contains('\x1b'),
        "{case}: {text:?}"
    );
    assert!(
        text.contains(r"\u{1b}[2J"),
        "{case}: escaped form missing: {text}"
    );
}

/// A plugin refused for text it chose, and how: the exact variant, holding that text raw.
struct Hostile {
    /// Names the row in every assertion.
    name: &'static str,
    /// Sets the plugin up and returns its directory.
    setup: fn(&Host) -> PathBuf,
    /// The exact refusal, with the hostile text reaching its value.
    refusal: fn(&Error) -> bool,
    /// Escaped text the printed error must also show.
    shows: Option<&'static str>,
}

/// Builds `good.c` with the given metadata name and version (C string literals) and
/// installs it, signed, as `metaesc`, replacing an earlier one.
fn install_good_claiming(host: &Host, tag: &str, name: &str, version: &str) -> PathBuf {
    let out = host
        .build_dir
        .join(format!("{tag}-{}", host.isolation))
        .join("libmetaesc.so");
    let lib = support::build::build_c_plugin(
        &support::build::test_plugin_src("good"),
        &out,
        &[("PLUGIN_NAME", name), ("PLUGIN_VERSION", version)],
        &[],
    );
    let dir = host.root.join("metaesc");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    host.install("metaesc", &lib)
}

#[test]
fn text_a_plugin_chose_is_refused_with_its_variant_and_printed_escaped() {
    let rows = [
        // Needs no key: anyone who can write into a signed plugin's directory chooses the name.
        Hostile {
            name: "symlink name",
            setup: |host| {
                let dir = host.plugin("good", "linkname");
                symlink("/etc/hostname", dir.join(HOSTILE_TEXT)).unwrap();
                dir
            },
            refusal: |err| {
                matches!(err, Error::Locate(LocateError::Symlink { path })
                    if path.to_string_lossy().contains(HOSTILE_TEXT))
            },
            shows: None,
        },
        // Signed as is: `skill-sign` itself refuses to sign a manifest with unknown fields,
        // so the field is added to the signed manifest and the bytes signed directly.
        Hostile {
            name: "manifest field",
            setup: |host| {
                let dir = host.plugin("good", "fieldname");
                let manifest = std::fs::read_to_string(dir.join("plugin.json")).unwrap();
                let end = manifest.rfind('}').unwrap();
                let manifest = format!("{},\"{HOSTILE_JSON_TEXT}\\u009b0m\":1}}", &manifest[..end])
                    .replace(r"\\", r"\");
                std::fs::write(dir.join("plugin.json"), &manifest).unwrap();
                let (key_id, signature) =
                    skillgate::sign::sign_manifest(manifest.as_bytes(), &host.key);
                let mut sigs = skillgate::sign::SignatureFile::new();
                sigs.add_or_replace(key_id, signature).unwrap();
                std::fs::write(dir.join("plugin.json.sig"), sigs.to_json_pretty()).unwrap();
                dir
            },
            refusal: |err| {
                matches!(err, Error::Manifest(ManifestError::Syntax(e))
                    if e.to_string().contains(HOSTILE_TEXT))
            },
            shows: Some(r"\u{9b}0m"),
        },
        // The metadata the plugin reports, in its name and then in its version.
        Hostile {
            name: "metadata name",
            setup: |host| {
                install_good_claiming(
                    host,
                    "name",
                    &format!("\"metaesc{HOSTILE_JSON_TEXT}\""),
                    "\"1.0.0\"",
                )
            },
            refusal: |err| {
                matches!(err, Error::Abi(AbiError::MetadataMismatch { field: "name", plugin, .. })
                    if *plugin == format!("metaesc{HOSTILE_TEXT}"))
            },
            shows: None,
        },
        Hostile {
            name: "metadata version",
            setup: |host| {
                install_good_claiming(
                    host,
                    "version",
                    "\"metaesc\"",
                    &format!("\"1.0.0{HOSTILE_JSON_TEXT}\""),
                )
            },
            refusal: |err| {
                matches!(err, Error::Abi(AbiError::MetadataMismatch { field: "version", plugin, .. })
                    if *plugin == format!("1.0.0{HOSTILE_TEXT}"))
            },
            shows: None,
        },
    ];
    for host in Host::each_mode() {
        for row in &rows {
            let _case = Case(row.name, host.isolation);
            let dir = (row.setup)(&host);
            let err = host.gate().verify_and_load(&dir).unwrap_err();
            assert!((row.refusal)(&err), "{}: refused as {err:?}", row.name);
            assert_printed_safely(row.name, &err);
            if let Some(shown) = row.shows {
                assert!(err.to_string().contains(shown), "{}: {err}", row.name);
            }
            host.assert_still_serves(&host.gate());
        }
    }
}

#[test]
fn a_result_value_holding_escapes_is_a_fault_printed_escaped() {
    // Results ignore unknown fields (as VT Code's do), so the hostile text rides in a value
    // serde quotes in its message: a string where `success` must be a boolean. (That a field
    // *named* with it is ignored and never printed: tests/compat.rs.)
    for host in Host::each_mode() {
        let fault = fault_of(&host, "result_escapes", "resultesc");
        match &fault {
            FaultError::NotJson { detail, .. } => {
                assert!(
                    detail
                        .to_string()
                        .contains(r"\u{1b}[2J\nskillgate: forged line\u{9b}31m"),
                    "{detail:?}"
                );
            }
            other => panic!("expected NotJson, got {other:?}"),
        }
        let err = Error::Fault(fault);
        assert_printed_safely("result field", &err);
        assert!(err.to_string().contains(r"\u{9b}31m"), "{err}");
        host.assert_still_serves(&host.gate());
    }
}

// ---------------------------------------------------------------------------------------
// The loader's own words (issue 11, item 10): a failed dlopen keeps dlerror's text.

#[test]
fn a_failed_dlopen_keeps_the_loaders_text() {
    for host in Host::each_mode() {
        // Inspection passes (an undefined symbol is no ELF policy matter); RTLD_NOW does not.
        let dir = host.plugin("missing_symbol", "unresolved");
        let err = host.gate().verify_and_load(&dir).unwrap_err();
        match &err {
            Error::Load(LoadError::Dlopen { detail }) => {
                assert!(
                    detail.contains("undefined symbol")
                        && detail.contains("skillgate_test_no_such_symbol"),
                    "dlerror's text lost: {detail:?}"
                );
            }
            other => panic!("expected Load(Dlopen), got {other:?}"),
        }
        assert!(
            err.to_string().contains("skillgate_test_no_such_symbol"),
            "{err}"
        );
        host.assert_still_serves(&host.gate());
    }
}
