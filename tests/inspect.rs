//! ELF hardening checks before any `dlopen` (issue 5): one passing and one failing library per
//! check, built here with cc and rustc (or patched from a built one, in a copy); the same
//! verdicts with the section headers erased; refusals in the pipeline before any constructor
//! runs; `skillgate inspect`, `verify` and `run` exit codes; agreement with Debian's checksec
//! on the machine's own libraries; and a fuzz-style run that must never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use skillgate::danger::{Danger, ElfDanger, RelroFloor};
use skillgate::error::Error;
use skillgate::inspect::{
    ElfPolicy, GnuStack, InspectError, InspectReport, Relro, Status, examine, inspect_bytes,
    inspect_bytes_with,
};
use support::{Host, build};

const SKILLGATE: &str = env!("CARGO_BIN_EXE_skillgate");

// ---- helpers ------------------------------------------------------------------------------

/// What one inspection applies: the normal `elf` section and its danger knobs.
#[derive(Clone, Default)]
struct Pol {
    elf: ElfPolicy,
    danger: ElfDanger,
}

fn strict() -> Pol {
    Pol::default()
}

fn verdict_with(path: &Path, policy: &Pol) -> Result<InspectReport, InspectError> {
    inspect_bytes_with(&std::fs::read(path).unwrap(), &policy.elf, &policy.danger)
}

/// The refusal of `path` under `policy`; panics if it passes.
fn refusal_with(path: &Path, policy: &Pol) -> InspectError {
    match verdict_with(path, policy) {
        Ok(r) => panic!("{} passed, expected a refusal: {r:#?}", path.display()),
        Err(e) => e,
    }
}

fn refusal(path: &Path) -> InspectError {
    refusal_with(path, &strict())
}

/// Asserts that `path` passes `policy`, printing the refusal otherwise.
fn passes_with(path: &Path, policy: &Pol) -> InspectReport {
    match verdict_with(path, policy) {
        Ok(r) => r,
        Err(e) => panic!("{} was refused: {e}", path.display()),
    }
}

fn passes(path: &Path) -> InspectReport {
    passes_with(path, &strict())
}

/// The good C plugin built with C_FLAGS plus `extra` (later `-z` options win).
fn good_with(host: &Host, name: &str, extra: &[&str]) -> PathBuf {
    host.build_with("good", name, &[], extra)
}

fn rust_echo(host: &Host) -> PathBuf {
    build::build_rust_plugin(
        &build::echo_plugin_src(),
        &host.build_dir.join("rust/libecho.so"),
    )
}

/// A copy of `lib` named `name` in the build directory, changed by `patch`.
fn patched(host: &Host, lib: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(lib).unwrap();
    patch(&mut bytes);
    let out = host.build_dir.join(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

fn put_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// File offset of the first program header of type `p_type` (ELF64, little-endian).
fn phdr_offset(bytes: &[u8], p_type: u32, want_flags: Option<u32>) -> usize {
    let elf = goblin::elf::Elf::parse(bytes).unwrap();
    let index = elf
        .program_headers
        .iter()
        .position(|ph| ph.p_type == p_type && want_flags.is_none_or(|f| ph.p_flags == f))
        .expect("program header present");
    elf.header.e_phoff as usize + index * usize::from(elf.header.e_phentsize)
}

/// ELF64 header fields e_shoff (0x28), e_shnum (0x3c), e_shstrndx (0x3e).
fn erase_section_headers(bytes: &mut [u8]) {
    put_u64(bytes, 0x28, 0);
    put_u16(bytes, 0x3c, 0);
    put_u16(bytes, 0x3e, 0);
}

/// Points the section header table past the end of the file: a lie goblin's own section
/// parser would reject, which must not change the verdict.
fn corrupt_section_headers(bytes: &mut [u8]) {
    let past = bytes.len() as u64 + 4096;
    put_u64(bytes, 0x28, past);
    put_u16(bytes, 0x3c, 77);
}

fn cc(args: &[&str]) {
    let out = Command::new("cc").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the two libraries that must pass ------------------------------------------------------

#[test]
fn a_hardened_c_plugin_and_a_default_rust_cdylib_pass_the_default_policy() {
    let host = Host::new();
    for lib in [good_with(&host, "hardened", &[]), rust_echo(&host)] {
        let r = passes(&lib);
        assert_eq!(r.relro, Relro::Full, "{}", lib.display());
        assert!(r.bind_now);
        assert_eq!(r.gnu_stack, GnuStack::NonExecutable);
        assert!(r.nx);
        assert!(r.wx_segments.is_empty());
        assert!(!r.textrel);
        assert!(r.rpath.is_empty() && r.runpath.is_empty() && r.audit.is_empty());
        assert!(r.denied_imports.is_empty());
        assert!(r.ifuncs.is_empty());
        assert_eq!(r.irelative_relocations, 0);
        assert!(r.exports_free_string);
        assert!(r.needed.iter().any(|n| n == "libc.so.6"));
        // Constructors and the canary are reported, never required by default.
        assert!(r.constructors.total >= 1, "{:?}", r.constructors);
        for check in ["constructors", "stack_protector"] {
            let c = r.checks.iter().find(|c| c.check == check).unwrap();
            assert_eq!(c.status, Status::Info);
        }
        assert!(r.checks.iter().all(|c| c.status != Status::Fail));
    }
}

#[test]
fn the_rust_cdylib_imports_what_std_needs_and_nothing_denied() {
    let host = Host::new();
    let r = passes(&rust_echo(&host));
    // Rust's std imports these; none is on the deny list.
    for name in ["dl_iterate_phdr", "syscall", "open64"] {
        assert!(
            r.imports.iter().any(|i| i == name),
            "{name}: {:?}",
            r.imports
        );
    }
    assert!(!r.stack_protector, "a Rust cdylib has no stack canary");
}

// ---- one failing library per check ----------------------------------------------------------

/// What a passing report must show.
type Shows = fn(&InspectReport) -> bool;
/// A danger knob set on a policy, and what the report then shows of what it let through.
type Knob = (fn(&mut Pol), Shows);
/// A library built without the flaw, and what its passing report shows.
type Control = (fn(&Host) -> PathBuf, Shows);

/// A library one check refuses under the strict default policy.
struct Refused {
    /// Names the row in every assertion.
    name: &'static str,
    /// Builds (or patches) the refused library.
    build: fn(&Host) -> PathBuf,
    /// The exact refusal.
    refusal: fn(&InspectError) -> bool,
    /// A change to the *normal* policy section that must not let it through (a `Policy`
    /// edited in code is never validated: the normal lists cannot widen).
    still_refused: Option<fn(&mut Pol)>,
    /// The danger knob that lets it through, and what the report then shows of it.
    knob: Option<Knob>,
    /// A control built without the flaw, and what its (passing) report shows.
    control: Option<Control>,
}

/// The good plugin with its first program header of `p_type` (and flags `want`, if given)
/// changed by `patch`.
fn patched_phdr(
    host: &Host,
    name: &str,
    p_type: u32,
    want: Option<u32>,
    patch: fn(&mut [u8], usize),
) -> PathBuf {
    let good = good_with(host, name, &[]);
    patched(host, &good, &format!("lib{name}-patched.so"), |b| {
        let at = phdr_offset(b, p_type, want);
        patch(b, at)
    })
}

/// `tests/plugins/elf/textrel_obj.c` compiled with or without `-fPIC`, linked into the good
/// plugin.
fn with_textrel_object(host: &Host, pic: bool) -> PathBuf {
    let src = build::repo_root().join("tests/plugins/elf/textrel_obj.c");
    let src = src.to_str().unwrap();
    let (name, flags): (&str, &[&str]) = if pic {
        ("notextrel", &["-fPIC"])
    } else {
        ("textrel", &["-fno-pic", "-mcmodel=large"])
    };
    let obj = host.build_dir.join(format!("{name}.o"));
    let mut args = vec!["-c", "-O2"];
    args.extend(flags);
    args.extend(["-o", obj.to_str().unwrap(), src]);
    cc(&args);
    good_with(host, name, &[obj.to_str().unwrap()])
}

/// `tests/plugins/elf/executable.c` linked as a PIE, with or without a `PT_INTERP`.
fn pie(host: &Host, with_interp: bool) -> PathBuf {
    let src = build::repo_root().join("tests/plugins/elf/executable.c");
    let out = host.build_dir.join(if with_interp {
        "pie-with-interp"
    } else {
        "pie-without-interp"
    });
    let mut args: Vec<&str> = build::C_FLAGS
        .iter()
        .copied()
        .filter(|f| *f != "-shared")
        .collect();
    args.push("-pie");
    if !with_interp {
        args.push("-Wl,--no-dynamic-linker");
    }
    args.extend(["-o", out.to_str().unwrap(), src.to_str().unwrap()]);
    cc(&args);
    out
}

#[test]
fn each_check_refuses_its_library_with_the_exact_variant_and_only_danger_lets_it_through() {
    use goblin::elf::program_header::{PF_R, PF_W, PF_X, PT_GNU_STACK, PT_LOAD, PT_NULL};
    let host = Host::new();
    let rows = [
        Refused {
            name: "executable stack",
            build: |h| good_with(h, "execstack", &["-Wl,-z,execstack"]),
            refusal: |e| *e == InspectError::ExecutableStack,
            still_refused: None,
            knob: Some((
                |p| {
                    p.danger.allow_executable_stack();
                },
                |r| r.gnu_stack == GnuStack::Executable,
            )),
            control: Some((
                |h| good_with(h, "noexecstack", &[]),
                |r| r.gnu_stack == GnuStack::NonExecutable,
            )),
        },
        Refused {
            name: "no PT_GNU_STACK",
            build: |h| {
                patched_phdr(h, "stackless", PT_GNU_STACK, None, |b, at| {
                    put_u32(b, at, PT_NULL)
                })
            },
            refusal: |e| *e == InspectError::MissingGnuStack,
            still_refused: None,
            knob: Some((
                |p| {
                    p.danger.allow_executable_stack();
                },
                |r| r.gnu_stack == GnuStack::Missing,
            )),
            control: Some((|h| good_with(h, "stackless", &[]), |r| r.nx)),
        },
        Refused {
            name: "writable and executable PT_LOAD",
            build: |h| {
                patched_phdr(h, "wx", PT_LOAD, Some(PF_R | PF_X), |b, at| {
                    put_u32(b, at + 4, PF_R | PF_W | PF_X)
                })
            },
            refusal: |e| matches!(e, InspectError::WritableExecutableSegment { .. }),
            still_refused: None,
            knob: Some((
                |p| {
                    p.danger.allow_writable_executable_segments();
                },
                |r| r.wx_segments.len() == 1,
            )),
            control: None,
        },
        Refused {
            name: "lazy binding (partial RELRO)",
            build: |h| good_with(h, "lazy", &["-Wl,-z,lazy"]),
            refusal: |e| {
                *e == InspectError::WeakRelro {
                    found: Relro::Partial,
                    required: Relro::Full,
                }
            },
            still_refused: None,
            knob: Some((
                |p| {
                    p.danger.allow_relro_below_full(RelroFloor::Partial);
                },
                |r| !r.bind_now,
            )),
            control: None,
        },
        Refused {
            name: "no RELRO",
            build: |h| good_with(h, "norelro", &["-Wl,-z,norelro"]),
            refusal: |e| {
                *e == InspectError::WeakRelro {
                    found: Relro::None,
                    required: Relro::Full,
                }
            },
            still_refused: None,
            knob: Some((
                |p| {
                    p.danger.allow_relro_below_full(RelroFloor::None);
                },
                |r| r.relro == Relro::None,
            )),
            control: None,
        },
        Refused {
            name: "text relocations",
            build: |h| with_textrel_object(h, false),
            refusal: |e| *e == InspectError::TextRelocations,
            still_refused: None,
            knob: Some((
                |p| {
                    p.danger.allow_text_relocations();
                },
                |r| r.textrel,
            )),
            control: Some((|h| with_textrel_object(h, true), |r| !r.textrel)),
        },
        Refused {
            name: "IFUNC resolvers",
            build: |h| h.build("elf/ifunc", "ifunc", &[]),
            // The static IFUNC gives an IRELATIVE relocation too.
            refusal: |e| {
                matches!(e, InspectError::Ifunc { symbols, irelative }
                    if *symbols == ["sg_exported_probe"] && *irelative >= 1)
            },
            still_refused: None,
            knob: Some((
                |p| {
                    p.danger.allow_ifunc();
                },
                |r| r.ifuncs == ["sg_exported_probe"],
            )),
            control: None,
        },
        Refused {
            name: "a needed library beyond the C runtime",
            build: |h| good_with(h, "zlib", &["-Wl,--no-as-needed", "-lz"]),
            refusal: |e| *e == InspectError::NeededNotAllowed("libz.so.1".into()),
            still_refused: Some(|p| p.elf.allowed_needed.push("libz.so.1".into())),
            knob: Some((
                |p| {
                    p.danger.allow_needed(["libz.so.1"]);
                },
                |r| r.needed.iter().any(|n| n == "libz.so.1"),
            )),
            control: None,
        },
        Refused {
            name: "an import of system",
            build: |h| h.build("elf/imports_system", "shell", &[]),
            refusal: |e| *e == InspectError::DeniedImports(vec!["system".into()]),
            still_refused: Some(|p| p.elf.denied_imports.clear()),
            knob: Some((
                |p| {
                    p.danger.allow_imports(["system"]);
                },
                |r| r.imports.iter().any(|i| i == "system"),
            )),
            control: None,
        },
        Refused {
            name: "a missing export",
            build: |h| h.build("ctor_marker", "noexec", &[]),
            refusal: |e| *e == InspectError::MissingExport("vtcode_plugin_execute"),
            still_refused: None,
            knob: None,
            control: None,
        },
        Refused {
            name: "an export that is data",
            build: |h| h.build("export_data", "dataexport", &[]),
            refusal: |e| {
                *e == InspectError::ExportNotFunction {
                    name: "vtcode_plugin_execute",
                    kind: "OBJECT",
                }
            },
            still_refused: None,
            knob: None,
            control: None,
        },
        Refused {
            name: "another machine",
            // e_machine is at offset 18.
            build: |h| {
                let good = good_with(h, "machine", &[]);
                patched(h, &good, "libaarch64.so", |b| {
                    put_u16(b, 18, goblin::elf::header::EM_AARCH64)
                })
            },
            refusal: |e| {
                matches!(e, InspectError::WrongMachine { actual, .. }
                    if *actual == goblin::elf::header::EM_AARCH64)
            },
            still_refused: None,
            knob: None,
            control: None,
        },
        Refused {
            name: "DT_AUDIT",
            build: |h| good_with(h, "audit", &["-Wl,--audit,libaudit.so.1"]),
            refusal: |e| {
                matches!(
                    e,
                    InspectError::Audit {
                        tag: "DT_AUDIT",
                        ..
                    }
                )
            },
            still_refused: None,
            knob: None,
            control: None,
        },
        Refused {
            name: "DT_DEPAUDIT",
            build: |h| good_with(h, "depaudit", &["-Wl,--depaudit,libdepaudit.so.1"]),
            refusal: |e| {
                matches!(
                    e,
                    InspectError::Audit {
                        tag: "DT_DEPAUDIT",
                        ..
                    }
                )
            },
            still_refused: None,
            knob: None,
            control: None,
        },
        Refused {
            name: "a PIE executable with PT_INTERP",
            build: |h| pie(h, true),
            refusal: |e| *e == InspectError::Executable,
            still_refused: None,
            knob: None,
            control: None,
        },
        Refused {
            name: "a PIE executable without PT_INTERP (DF_1_PIE)",
            build: |h| pie(h, false),
            refusal: |e| *e == InspectError::PieExecutable,
            still_refused: None,
            knob: None,
            control: None,
        },
    ];
    for row in &rows {
        let name = row.name;
        let lib = (row.build)(&host);
        let refused = refusal(&lib);
        assert!((row.refusal)(&refused), "{name}: refused as {refused:?}");
        if let Some(edit) = row.still_refused {
            let mut p = strict();
            edit(&mut p);
            let refused = refusal_with(&lib, &p);
            assert!(
                (row.refusal)(&refused),
                "{name}: the normal section widened: {refused:?}"
            );
        }
        if let Some((knob, shows)) = row.knob {
            let mut p = strict();
            knob(&mut p);
            let report = passes_with(&lib, &p);
            assert!(shows(&report), "{name}: let through, reported {report:#?}");
        }
        if let Some((build, shows)) = row.control {
            let report = passes(&build(&host));
            assert!(shows(&report), "{name}: the control reported {report:#?}");
        }
    }
}

#[test]
fn an_rpath_is_refused() {
    let host = Host::new();
    let lib = good_with(
        &host,
        "rpath",
        &["-Wl,-rpath,/opt/x", "-Wl,--disable-new-dtags"],
    );
    assert_eq!(refusal(&lib), InspectError::Rpath("/opt/x".into()));
    // Allowing DT_RPATH still subjects its entries to the search-path rule.
    let mut p = strict();
    p.danger.allow_rpath();
    assert!(matches!(
        refusal_with(&lib, &p),
        InspectError::Runpath { ref entry, .. } if entry == "/opt/x"
    ));
    p.danger.allow_runpaths(["/opt/x"]);
    assert_eq!(passes_with(&lib, &p).rpath, vec!["/opt/x".to_owned()]);
}

#[test]
fn a_runpath_is_refused_unless_absolute_and_allowed() {
    let host = Host::new();
    let relative = good_with(
        &host,
        "relrunpath",
        &["-Wl,-rpath,lib", "-Wl,--enable-new-dtags"],
    );
    let origin = good_with(
        &host,
        "originrunpath",
        &["-Wl,-rpath,$ORIGIN/lib", "-Wl,--enable-new-dtags"],
    );
    let absolute = good_with(
        &host,
        "absrunpath",
        &["-Wl,-rpath,/opt/x", "-Wl,--enable-new-dtags"],
    );
    let mut p = strict();
    // Even listed, a relative entry is refused.
    p.danger.allow_runpaths(["lib", "$ORIGIN/lib", "/opt/x"]);
    for (lib, entry) in [(&relative, "lib"), (&origin, "$ORIGIN/lib")] {
        assert!(matches!(
            refusal_with(lib, &p),
            InspectError::Runpath { entry: ref e, .. } if e == entry
        ));
    }
    assert!(matches!(
        refusal(&absolute),
        InspectError::Runpath { ref entry, .. } if entry == "/opt/x"
    ));
    assert_eq!(
        passes_with(&absolute, &p).runpath,
        vec!["/opt/x".to_owned()]
    );
}

#[test]
fn a_truncated_library_is_refused_at_every_cut() {
    let host = Host::new();
    let good = good_with(&host, "truncated", &[]);
    let bytes = std::fs::read(&good).unwrap();
    assert!(matches!(
        inspect_bytes(&bytes[..bytes.len() / 2]),
        Err(InspectError::SegmentOutOfBounds { .. })
    ));
    // Everything the loader maps ends here; past it lie only section headers and unmapped
    // sections (.symtab, .comment), which the loader never reads, so a copy cut there is
    // the same library to it and passes.
    let mapped_end = goblin::elf::Elf::parse(&bytes)
        .unwrap()
        .program_headers
        .iter()
        .map(|ph| (ph.p_offset + ph.p_filesz) as usize)
        .max()
        .unwrap();
    assert!(mapped_end < bytes.len());
    for cut in (0..mapped_end).step_by(97).chain([mapped_end - 1]) {
        assert!(
            inspect_bytes(&bytes[..cut]).is_err(),
            "a copy cut at {cut} (segments end at {mapped_end}) passed"
        );
    }
    passes(&patched(&host, &good, "libtail-cut.so", |b| {
        b.truncate(mapped_end)
    }));
}

#[test]
fn a_file_that_is_not_elf_is_refused() {
    assert_eq!(
        inspect_bytes(b"#!/bin/sh\necho hi\n").unwrap_err(),
        InspectError::NotElf
    );
    // A linker script named like a library (as /usr/lib/x86_64-linux-gnu/libc.so is).
    assert_eq!(
        inspect_bytes(b"/* GNU ld script */\nGROUP ( libc.so.6 )\n").unwrap_err(),
        InspectError::NotElf
    );
}

#[test]
fn constructors_are_counted_and_limited_only_on_request() {
    let host = Host::new();
    let good = good_with(&host, "ctorcount", &[]);
    let marker = host.tmp.path().join("never");
    let quoted = format!("\"{}\"", marker.display());
    let ctor = host.build("elf/ctor_plugin", "ctorcount2", &[("MARKER_PATH", &quoted)]);
    let base = passes(&good).constructors.total;
    assert_eq!(passes(&ctor).constructors.total, base + 1);
    let mut p = strict();
    p.elf.max_constructors = Some(base);
    passes_with(&good, &p);
    assert_eq!(
        refusal_with(&ctor, &p),
        InspectError::TooManyConstructors {
            count: base + 1,
            max: base
        }
    );
}

#[test]
fn a_stack_protector_is_reported_and_required_only_on_request() {
    let host = Host::new();
    let plain = good_with(&host, "nocanary", &["-fno-stack-protector"]);
    let canary = good_with(&host, "canary", &["-fstack-protector-all"]);
    assert!(!passes(&plain).stack_protector);
    assert!(passes(&canary).stack_protector);
    let mut p = strict();
    p.elf.require_stack_protector = true;
    assert_eq!(refusal_with(&plain, &p), InspectError::NoStackProtector);
    passes_with(&canary, &p);
}

#[test]
fn the_policy_section_of_a_host_policy_file_is_strict() {
    let base = r#"{"trusted_roots":[],"keys":"k","isolation":"thread""#;
    let p = skillgate::Policy::from_json(format!("{base}}}").as_bytes(), Path::new("/")).unwrap();
    assert_eq!(p.elf(), &ElfPolicy::default());
    assert!(p.danger().is_strict());
    let p = skillgate::Policy::from_json(
        format!(r#"{base},"danger":{{"elf":{{"allow_ifunc":true,"min_relro":"partial"}}}}}}"#)
            .as_bytes(),
        Path::new("/"),
    )
    .unwrap();
    assert!(p.danger().elf().ifunc_allowed());
    assert_eq!(p.danger().elf().relro_floor(), Some(RelroFloor::Partial));
    assert!(
        !p.danger().elf().executable_stack_allowed(),
        "unspecified knobs stay strict"
    );
    assert_eq!(p.elf(), &ElfPolicy::default());
    for bad in [
        r#""elf":{"allow_everything":true}"#,
        r#""elf":{"min_relro":"some"}"#,
        r#""elf":{"allow_ifunc":true}"#,
        r#""danger":{"elf":{"min_relro":"some"}}"#,
    ] {
        assert!(
            skillgate::Policy::from_json(format!("{base},{bad}}}").as_bytes(), Path::new("/"))
                .is_err(),
            "{bad}"
        );
    }
}

#[test]
fn every_refusal_names_its_check_and_how_to_fix_the_build() {
    let host = Host::new();
    let cases = [
        good_with(&host, "m1", &["-Wl,-z,execstack"]),
        good_with(&host, "m2", &["-Wl,-z,lazy"]),
        good_with(
            &host,
            "m3",
            &["-Wl,-rpath,/opt/x", "-Wl,--disable-new-dtags"],
        ),
        host.build("elf/imports_system", "m4", &[]),
        host.build("export_data", "m5", &[]),
    ];
    for lib in &cases {
        let e = refusal(lib);
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}: ", e.check())), "{msg}");
        assert!(!e.fix().is_empty());
    }
    let lazy = refusal(&cases[1]);
    assert!(lazy.to_string().contains("-Wl,-z,now"), "{lazy}");
    assert!(refusal(&cases[0]).fix().contains("-Wl,-z,noexecstack"));
}

// ---- section headers are never consulted -----------------------------------------------------

#[test]
fn erased_or_lying_section_headers_change_no_verdict() {
    let host = Host::new();
    let src = build::repo_root().join("tests/plugins/elf/textrel_obj.c");
    let nopic = host.build_dir.join("sh_textrel.o");
    cc(&[
        "-c",
        "-O2",
        "-fno-pic",
        "-mcmodel=large",
        "-o",
        nopic.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let libs = [
        good_with(&host, "sh-good", &[]),
        good_with(&host, "sh-execstack", &["-Wl,-z,execstack"]),
        good_with(&host, "sh-lazy", &["-Wl,-z,lazy"]),
        good_with(
            &host,
            "sh-rpath",
            &["-Wl,-rpath,/opt/x", "-Wl,--disable-new-dtags"],
        ),
        good_with(
            &host,
            "sh-runpath",
            &["-Wl,-rpath,lib", "-Wl,--enable-new-dtags"],
        ),
        good_with(&host, "sh-zlib", &["-Wl,--no-as-needed", "-lz"]),
        good_with(&host, "sh-textrel", &[nopic.to_str().unwrap()]),
        host.build("elf/ifunc", "sh-ifunc", &[]),
        host.build("elf/imports_system", "sh-system", &[]),
        host.build("export_data", "sh-data", &[]),
        host.build("ctor_marker", "sh-missing", &[]),
        rust_echo(&host),
    ];
    let mut policies = vec![strict()];
    let mut lenient = strict();
    lenient
        .danger
        .allow_ifunc()
        .allow_text_relocations()
        .allow_imports(skillgate::inspect::DEFAULT_DENIED_IMPORTS.iter().copied());
    policies.push(lenient);
    for lib in &libs {
        let bytes = std::fs::read(lib).unwrap();
        let mut erased = bytes.clone();
        erase_section_headers(&mut erased);
        let mut lying = bytes.clone();
        corrupt_section_headers(&mut lying);
        assert!(
            goblin::elf::Elf::parse(&lying).is_err(),
            "the lying copy must fool a parser that reads section headers"
        );
        for p in &policies {
            let expected = inspect_bytes_with(&bytes, &p.elf, &p.danger);
            assert_eq!(
                inspect_bytes_with(&erased, &p.elf, &p.danger),
                expected,
                "{}",
                lib.display()
            );
            assert_eq!(
                inspect_bytes_with(&lying, &p.elf, &p.danger),
                expected,
                "{}",
                lib.display()
            );
        }
    }
}

// ---- in the pipeline -------------------------------------------------------------------------

#[test]
fn a_refused_library_never_runs_its_constructor() {
    for host in Host::each_mode() {
        for (flag, expected) in [
            (
                "-Wl,-z,lazy",
                InspectError::WeakRelro {
                    found: Relro::Partial,
                    required: Relro::Full,
                },
            ),
            ("-Wl,-z,execstack", InspectError::ExecutableStack),
        ] {
            let marker = host.tmp.path().join(format!("ctor-ran-{}", flag.len()));
            let quoted = format!("\"{}\"", marker.display());
            let lib = host.build_with(
                "elf/ctor_plugin",
                "weakctor",
                &[("MARKER_PATH", &quoted)],
                &[flag],
            );
            let dir = host.install("weakctor", &lib);
            let err = host.gate().verify_and_load(&dir).unwrap_err();
            match err {
                Error::Inspect(ref e) => assert_eq!(e, &expected, "{flag}"),
                other => panic!("{flag}: expected Error::Inspect, got {other:?}"),
            }
            assert!(!marker.exists(), "{flag}: the constructor ran");
            // Control: loading the same library at all runs the constructor.
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import ctypes, sys; ctypes.CDLL(sys.argv[1])",
                    lib.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(marker.exists(), "{flag}: the control load made no marker");
            std::fs::remove_dir_all(&dir).unwrap();
            host.assert_still_serves(&host.gate());
        }
    }
}

#[test]
fn the_default_policy_refuses_an_executable_stack_before_the_sandbox_sees_it() {
    for host in Host::each_mode() {
        let lib = good_with(&host, "execstack", &["-Wl,-z,execstack"]);
        let dir = host.install("execstack", &lib);
        let err = host.gate().verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(err, Error::Inspect(InspectError::ExecutableStack)),
            "{err:?}"
        );
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn the_policy_file_elf_section_reaches_the_gate() {
    let host = Host::new();
    let lib = host.build("elf/imports_system", "shellok", &[]);
    let dir = host.install("shellok", &lib);
    assert!(matches!(
        host.gate().verify_and_load(&dir).unwrap_err(),
        Error::Inspect(InspectError::DeniedImports(_))
    ));
    let mut danger = Danger::default();
    danger.elf_mut().allow_imports(["system"]);
    let policy = host.policy_with(|p| p.danger(danger));
    let plugin = host.gate_with(policy).verify_and_load(&dir).unwrap();
    assert!(plugin.inspection().imports.iter().any(|i| i == "system"));
}

// ---- the command lines -------------------------------------------------------------------------

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SKILLGATE).args(args).output().unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn inspect_json(path: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["inspect", "--json", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run(&args);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc)
}

fn write_policy(host: &Host, elf: &str) -> PathBuf {
    write_policy_sections(host, &format!(r#""elf":{elf}"#))
}

/// A policy file with these sections (`"elf":{…},"danger":{…}`) besides the host's own.
fn write_policy_sections(host: &Host, sections: &str) -> PathBuf {
    let path = host.tmp.path().join("policy.json");
    let json = format!(
        r#"{{"trusted_roots":[{root:?}],"keys":{keys:?},"isolation":"thread",{sections}}}"#,
        root = host.root.to_str().unwrap(),
        keys = host.keys_dir().to_str().unwrap(),
    );
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn inspect_exits_0_on_a_passing_library_and_1_on_a_refused_one() {
    let host = Host::new();
    let good = good_with(&host, "cligood", &[]);
    let lazy = good_with(&host, "clilazy", &["-Wl,-z,lazy"]);

    let (code, table, _) = run(&["inspect", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("passes the ELF policy"), "{table}");
    let (code, table, _) = run(&["inspect", lazy.to_str().unwrap()]);
    assert_eq!(code, 1, "{table}");
    assert!(
        table.contains("relro") && table.contains("-Wl,-z,now"),
        "{table}"
    );

    let (code, doc) = inspect_json(&good, &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["format"], "skillgate-inspect-v1");
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["refusal"], Value::Null);
    assert_eq!(doc["elf"]["relro"], "full");
    assert_eq!(doc["elf"]["nx"], true);
    assert_eq!(doc["elf"]["gnu_stack"], "non_executable");
    let checks = doc["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .all(|c| c["status"] == "pass" || c["status"] == "info")
    );
    for name in [
        "class",
        "machine",
        "elf_type",
        "gnu_stack",
        "relro",
        "textrel",
        "rpath",
        "runpath",
        "audit",
        "needed",
        "imports",
        "ifunc",
        "exports",
    ] {
        assert!(checks.iter().any(|c| c["check"] == name), "{name}");
    }

    let (code, doc) = inspect_json(&lazy, &[]);
    assert_eq!(code, 1);
    assert_eq!(doc["passed"], false);
    assert_eq!(doc["refusal"]["check"], "relro");
    assert_eq!(doc["refusal"]["fix"], "link with -Wl,-z,relro -Wl,-z,now");
    assert_eq!(doc["elf"]["relro"], "partial");

    // --policy: the host policy's danger section applies.
    let policy = write_policy_sections(&host, r#""danger":{"elf":{"min_relro":"partial"}}"#);
    let (code, doc) = inspect_json(&lazy, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{doc}");
    // The weakening in its old place is a policy error (2) that points to the danger
    // section, not a silent strict default.
    let moved = write_policy(&host, r#"{"min_relro":"partial"}"#);
    let (code, _, stderr) = run(&[
        "inspect",
        lazy.to_str().unwrap(),
        "--policy",
        moved.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("danger.elf.min_relro"), "{stderr}");
}

#[test]
fn inspect_reads_a_plugin_directory_without_a_signature() {
    let host = Host::new();
    let lib = good_with(&host, "dirplugin", &[]);
    let dir = host.tmp.path().join("authoring/dirplugin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&lib, dir.join("libdirplugin.so")).unwrap();
    std::fs::write(
        dir.join("plugin.json"),
        support::manifest_template("dirplugin"),
    )
    .unwrap();
    let (code, doc) = inspect_json(&dir, &[]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        doc["path"]
            .as_str()
            .unwrap()
            .ends_with("dirplugin/libdirplugin.so")
    );
    // A manifest naming a library outside the directory is a usage error.
    std::fs::write(
        dir.join("plugin.json"),
        r#"{"name":"x","library":"../libdirplugin.so"}"#,
    )
    .unwrap();
    assert_eq!(run(&["inspect", dir.to_str().unwrap()]).0, 2);
}

#[test]
fn inspect_exit_codes_for_not_elf_missing_files_and_bad_policies() {
    let host = Host::new();
    let text = host.tmp.path().join("libnotelf.so");
    std::fs::write(&text, "GROUP ( libc.so.6 )\n").unwrap();
    // Not ELF is a refusal (1), with a JSON report like any other.
    let (code, doc) = inspect_json(&text, &[]);
    assert_eq!(code, 1);
    assert_eq!(doc["refusal"]["check"], "elf_header");
    assert_eq!(doc["elf"], Value::Null);
    let missing = host.tmp.path().join("nothing-here.so");
    assert_eq!(run(&["inspect", missing.to_str().unwrap()]).0, 2);
    let bad_policy = write_policy(&host, r#"{"allow_anything":true}"#);
    assert_eq!(
        run(&[
            "inspect",
            text.to_str().unwrap(),
            "--policy",
            bad_policy.to_str().unwrap()
        ])
        .0,
        2
    );
    assert_eq!(run(&["inspect"]).0, 2, "usage error");
}

#[test]
fn verify_and_run_exit_1_on_an_inspection_refusal() {
    let host = Host::new();
    let lib = good_with(&host, "clirefused", &["-Wl,-z,execstack"]);
    let dir = host.install("clirefused", &lib);
    let policy = write_policy(&host, "{}");
    for cmd in ["verify", "run"] {
        let (code, _, stderr) = run(&[
            cmd,
            dir.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{cmd}: {stderr}");
        assert!(
            stderr.contains("inspect: gnu_stack:") && stderr.contains("noexecstack"),
            "{cmd}: {stderr}"
        );
    }
    let relaxed =
        write_policy_sections(&host, r#""danger":{"elf":{"allow_executable_stack":true}}"#);
    let (code, _, stderr) = run(&[
        "verify",
        dir.to_str().unwrap(),
        "--policy",
        relaxed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
}

// ---- agreement with checksec -----------------------------------------------------------------

/// checksec's verdicts on one file, or `None` when it reports nothing (not an ELF file).
fn checksec(path: &str) -> Option<Value> {
    let out = Command::new("checksec")
        .args(["--format=json", &format!("--file={path}")])
        .output()
        .expect("checksec is installed (scripts/setup.sh installs Debian's checksec)");
    let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
    doc.get(path).cloned()
}

/// On every distinct shared library under /lib/x86_64-linux-gnu (symlinks resolved, each file
/// once), `skillgate inspect --json` agrees with Debian's checksec on RELRO, NX, RPATH and
/// RUNPATH. No sampling: about 45 s for the ~440 files on this 2-CPU machine, nearly all of it
/// checksec's own readelf runs (skillgate takes about 4 s for all of them).
///
/// Where the two could disagree, and why checksec would be the one mistaken (none of these
/// occurs on this machine's libraries; the assertion is exact):
/// - RELRO: checksec greps `readelf -d` for the word BIND_NOW, so a library whose only
///   BIND_NOW is `DF_1_NOW` in `DT_FLAGS_1` (which glibc honours) would be "partial" there and
///   "full" here.
/// - RELRO again: checksec counts a `GNU_RELRO` line; here it counts only if `ld.so` would make
///   at least one page read-only with it, and full RELRO needs the GOT (`DT_PLTGOT`) inside.
/// - NX: checksec greps the `GNU_STACK` line for "RWE", so a stack segment flagged `R E`
///   (executable, not writable) would count as NX there; here any `PF_X` is executable.
/// - Files skillgate does not read at all: libraries larger than the default 64 MiB
///   `library_bytes` limit (libLLVM here) exit 2 and are skipped; linker scripts named `*.so`
///   (libc.so, libm.so) are "not ELF" to both tools.
#[test]
fn inspect_agrees_with_checksec_on_this_machines_libraries() {
    let dir = Path::new("/lib/x86_64-linux-gnu");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".so"))
        .filter_map(|e| std::fs::canonicalize(e.path()).ok())
        .filter(|p| p.is_file())
        .filter_map(|p| p.to_str().map(str::to_owned))
        .collect();
    files.sort();
    files.dedup();
    assert!(files.len() > 20, "too few libraries found: {}", files.len());

    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_mul(2)
        .clamp(4, 16);
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(i) else { break };
                        out.push((file.clone(), compare_with_checksec(file)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let compared = results.iter().filter(|(_, r)| r.is_ok()).count();
    let disagreements: Vec<String> = results
        .iter()
        .filter_map(|(f, r)| r.as_ref().err().map(|e| format!("{f}: {e}")))
        .collect();
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(compared > 20, "only {compared} files compared");
}

fn compare_with_checksec(file: &str) -> Result<(), String> {
    let out = Command::new(SKILLGATE)
        .args(["inspect", "--json", file])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.code() == Some(2) {
        // Not read (over the size limit); say so only if it is not that.
        let stderr = String::from_utf8_lossy(&out.stderr);
        return if stderr.contains("-byte limit") {
            Ok(())
        } else {
            Err(format!("skillgate could not read it: {stderr}"))
        };
    }
    let ours: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let theirs = checksec(file);
    let elf = &ours["elf"];
    match (elf.is_null(), theirs) {
        (true, None) => Ok(()),
        (true, Some(t)) => Err(format!("not ELF to skillgate, checksec says {t}")),
        (false, None) => Err("checksec reports nothing, skillgate parsed it".into()),
        (false, Some(t)) => {
            let yes = |b: bool| if b { "yes" } else { "no" };
            let relro = match elf["relro"].as_str() {
                Some("none") => "no",
                Some(other) => other,
                None => "?",
            };
            let nonempty = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
            let pairs = [
                ("relro", relro.to_owned()),
                ("nx", yes(elf["nx"] == true).to_owned()),
                ("rpath", yes(nonempty(&elf["rpath"])).to_owned()),
                ("runpath", yes(nonempty(&elf["runpath"])).to_owned()),
            ];
            let wrong: Vec<String> = pairs
                .iter()
                .filter(|(k, v)| t[*k] != v.as_str())
                .map(|(k, v)| format!("{k}: skillgate {v}, checksec {}", t[*k]))
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        }
    }
}

// ---- never a panic -------------------------------------------------------------------------

/// xorshift64*: a small deterministic PRNG, so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn random_and_mutated_elf_bytes_never_panic_the_inspector() {
    let host = Host::new();
    let seeds = [
        std::fs::read(good_with(&host, "fuzzseed", &[])).unwrap(),
        std::fs::read(host.build("elf/ifunc", "fuzzifunc", &[])).unwrap(),
    ];
    let mut lenient = strict();
    lenient
        .danger
        .allow_ifunc()
        .allow_rpath()
        .allow_imports(skillgate::inspect::DEFAULT_DENIED_IMPORTS.iter().copied());
    lenient.elf.max_constructors = Some(1);
    let policies = [strict(), lenient];
    let mut rng = Rng(0x5eed_1e55_0000_0005);
    let interesting: [u64; 8] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0xffff_ffff, u64::MAX];
    let mut refused = 0usize;
    for i in 0..2_000 {
        let mut bytes = seeds[i % seeds.len()].clone();
        let edits = 1 + rng.below(8);
        for _ in 0..edits {
            // Mostly the headers (first 4 KiB: ELF header, program headers, dynamic
            // strings and symbols), sometimes anywhere.
            let span = if rng.below(4) == 0 {
                bytes.len()
            } else {
                bytes.len().min(4096)
            };
            let at = rng.below(span);
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                2 => {
                    let v = interesting[rng.below(interesting.len())].to_le_bytes();
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v[..end - at]);
                }
                _ => bytes.truncate(at.max(1)),
            }
        }
        for p in &policies {
            let examined = examine(&bytes, &p.elf, &p.danger);
            let verdict = inspect_bytes_with(&bytes, &p.elf, &p.danger);
            // The two entry points agree on what they share.
            if let Err(e) = &examined {
                assert_eq!(verdict.as_ref().err(), Some(e));
            }
            refused += usize::from(verdict.is_err());
        }
    }
    // Random bytes behind a valid-looking ELF identification.
    for _ in 0..300 {
        let len = 64 + rng.below(4096);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        bytes[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        assert!(inspect_bytes(&bytes).is_err());
    }
    assert!(refused > 0);
}

// ---- the inspector reads what the loader reads (issue 11, item 8) ----------------------------
//
// Each fixture is a real plugin built here and doctored in a copy, named for what it attacks:
// an ELF header or program header table, or dynamic array, that a reader going by file
// offsets (goblin, readelf, the inspector before this) and glibc's ld.so would read
// differently. Each is refused with the exact variant and check name; the untouched library
// passes (the control).

use goblin::elf::dynamic::{
    DF_1_NOW, DF_BIND_NOW, DT_BIND_NOW, DT_FLAGS, DT_FLAGS_1, DT_NULL, DT_PLTREL, DT_REL, DT_RELA,
    DT_STRTAB,
};
use goblin::elf::program_header::{
    PT_DYNAMIC, PT_GNU_EH_FRAME, PT_GNU_RELRO, PT_GNU_STACK, PT_INTERP, PT_LOAD, PT_NOTE,
};

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Table offsets of every program header of type `p_type`, in table order (ELF64 LE).
fn phdr_offsets(bytes: &[u8], p_type: u32) -> Vec<usize> {
    let elf = goblin::elf::Elf::parse(bytes).unwrap();
    elf.program_headers
        .iter()
        .enumerate()
        .filter(|(_, ph)| ph.p_type == p_type)
        .map(|(i, _)| elf.header.e_phoff as usize + i * 56)
        .collect()
}

/// p_offset, p_vaddr, p_filesz, p_memsz of the program header at table offset `at`.
fn phdr_fields(bytes: &[u8], at: usize) -> (u64, u64, u64, u64) {
    (
        get_u64(bytes, at + 8),
        get_u64(bytes, at + 16),
        get_u64(bytes, at + 32),
        get_u64(bytes, at + 40),
    )
}

/// File offset of the (only) dynamic array, and its entries up to and including DT_NULL.
fn dynamic_entries(bytes: &[u8]) -> (usize, Vec<(u64, u64)>) {
    let at = phdr_offsets(bytes, PT_DYNAMIC)[0];
    let (offset, ..) = phdr_fields(bytes, at);
    let offset = offset as usize;
    let mut entries = Vec::new();
    for i in 0.. {
        let e = offset + i * 16;
        let (tag, val) = (get_u64(bytes, e), get_u64(bytes, e + 8));
        entries.push((tag, val));
        if tag == DT_NULL {
            break;
        }
    }
    (offset, entries)
}

/// The file offset of the first dynamic entry with `tag`.
fn dynamic_slot(bytes: &[u8], tag: u64) -> usize {
    let (offset, entries) = dynamic_entries(bytes);
    offset
        + 16 * entries
            .iter()
            .position(|(t, _)| *t == tag)
            .expect("tag present")
}

/// The report of every check on a library, whether it passes or not.
fn examined(path: &Path) -> InspectReport {
    examine(
        &std::fs::read(path).unwrap(),
        &ElfPolicy::default(),
        &ElfDanger::default(),
    )
    .unwrap()
}

fn check_of<'r>(report: &'r InspectReport, name: &str) -> &'r skillgate::inspect::CheckResult {
    report.checks.iter().find(|c| c.check == name).unwrap()
}

/// Which of `symbols` the dynamic loader binds for `lib` while loading it (before any call):
/// all of the PLT's under BIND_NOW, none under lazy binding. Preloads it into `true` (ctypes
/// would not do: it always passes RTLD_NOW) and reads `LD_DEBUG=bindings`.
fn bound_at_load(lib: &Path, symbols: &[&str]) -> Vec<String> {
    let out = Command::new("true")
        .env("LD_PRELOAD", lib)
        .env("LD_DEBUG", "bindings")
        .env_remove("LD_BIND_NOW")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        lib.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let ours = format!("binding file {} ", lib.display());
    symbols
        .iter()
        .filter(|s| {
            let quoted = format!("`{s}'");
            log.lines()
                .any(|l| l.contains(&ours) && l.contains(&quoted))
        })
        .map(|s| (*s).to_owned())
        .collect()
}

/// PLT-only imports of good.c, called from `execute` only: bound at load only by BIND_NOW.
const PLT_SYMBOLS: &[&str] = &["malloc", "free", "strlen"];

/// The key fixture: a lazily bound library whose PT_DYNAMIC p_offset points at an appended,
/// doctored copy of its dynamic array claiming BIND_NOW (DT_FLAGS, DT_FLAGS_1 and DT_BIND_NOW).
fn doctored_dynamic_copy(lazy: &[u8]) -> Vec<u8> {
    let mut b = lazy.to_vec();
    let (_, entries) = dynamic_entries(&b);
    let mut copy: Vec<(u64, u64)> = entries
        .iter()
        .copied()
        .filter(|(t, _)| *t != DT_NULL && *t != DT_FLAGS && *t != DT_FLAGS_1)
        .collect();
    copy.extend([
        (DT_FLAGS, DF_BIND_NOW),
        (DT_FLAGS_1, DF_1_NOW),
        (DT_BIND_NOW, 0),
        (DT_NULL, 0),
    ]);
    while !b.len().is_multiple_of(8) {
        b.push(0);
    }
    let at = b.len() as u64;
    for (t, v) in &copy {
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    let ph = phdr_offsets(&b, PT_DYNAMIC)[0];
    let size = (copy.len() * 16) as u64;
    put_u64(&mut b, ph + 8, at);
    put_u64(&mut b, ph + 32, size);
    put_u64(&mut b, ph + 40, size);
    b
}

#[test]
fn a_doctored_copy_of_the_dynamic_section_is_refused_and_the_loader_reads_the_real_one() {
    let host = Host::new();
    let now = good_with(&host, "dynnow", &[]);
    let lazy = good_with(&host, "dynlazy", &["-Wl,-z,lazy"]);
    let doctored = patched(&host, &lazy, "libdyn-doctored-copy.so", |b| {
        *b = doctored_dynamic_copy(b)
    });

    // The copy fools a reader that goes by p_offset (as the inspector did): full RELRO.
    let bytes = std::fs::read(&doctored).unwrap();
    let offset_view = goblin::elf::Elf::parse(&bytes).unwrap();
    let info = &offset_view.dynamic.as_ref().unwrap().info;
    assert!(info.flags & DF_BIND_NOW != 0 && info.flags_1 & DF_1_NOW != 0);

    // Refused by the new rule, first, with the lazy truth in the report.
    let e = refusal(&doctored);
    assert!(
        matches!(
            e,
            InspectError::SegmentNotMapped { kind: "PT_DYNAMIC", reason, .. }
                if reason.contains("file offset")
        ),
        "{e:?}"
    );
    assert_eq!(e.check(), "segment_mapping");
    let report = examined(&doctored);
    assert_eq!(report.relro, Relro::Partial);
    assert!(!report.bind_now);
    assert_eq!(check_of(&report, "relro").status, Status::Fail);

    // Controls: the untouched lazy library is refused for its RELRO, the BIND_NOW build passes.
    assert_eq!(
        refusal(&lazy),
        InspectError::WeakRelro {
            found: Relro::Partial,
            required: Relro::Full
        }
    );
    assert_eq!(passes(&now).relro, Relro::Full);

    // And ld.so indeed loads the doctored library lazily, as it does the lazy one: no PLT
    // symbol is bound while loading, where the BIND_NOW build has them all bound.
    assert_eq!(bound_at_load(&now, PLT_SYMBOLS), PLT_SYMBOLS.to_vec());
    assert!(bound_at_load(&lazy, PLT_SYMBOLS).is_empty());
    assert!(bound_at_load(&doctored, PLT_SYMBOLS).is_empty());
}

#[test]
fn the_gate_refuses_the_doctored_copy_before_any_of_its_code_runs() {
    for host in Host::each_mode() {
        let marker = host.tmp.path().join("doctored-ctor-ran");
        let quoted = format!("\"{}\"", marker.display());
        let lazy = host.build_with(
            "elf/ctor_plugin",
            "doctored",
            &[("MARKER_PATH", &quoted)],
            &["-Wl,-z,lazy"],
        );
        let lib = patched(&host, &lazy, "libdoctored-ctor.so", |b| {
            *b = doctored_dynamic_copy(b)
        });
        let dir = host.install("doctored", &lib);
        let err = host.gate().verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Inspect(InspectError::SegmentNotMapped {
                    kind: "PT_DYNAMIC",
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(!marker.exists(), "the constructor ran");
        host.assert_still_serves(&host.gate());
        // Control: ld.so loads the doctored file and runs its constructor.
        bound_at_load(&lib, &[]);
        assert!(marker.exists(), "the control load made no marker");
    }
}

#[test]
fn duplicate_dynamic_tags_are_refused_and_the_last_one_is_what_the_loader_uses() {
    let host = Host::new();
    let now = good_with(&host, "dupflags", &[]);
    // The array has spare DT_NULL slots after its end: the first two become a second
    // DT_FLAGS and DT_FLAGS_1 without BIND_NOW, and the array still ends in DT_NULL.
    let lib = patched(&host, &now, "libdyn-duplicate-flags.so", |b| {
        let (offset, entries) = dynamic_entries(b);
        let end = offset + 16 * (entries.len() - 1);
        assert_eq!(get_u64(b, end + 32), DT_NULL, "a third spare slot");
        put_u64(b, end, DT_FLAGS);
        put_u64(b, end + 8, 0);
        put_u64(b, end + 16, DT_FLAGS_1);
        put_u64(b, end + 24, 0);
    });
    let e = refusal(&lib);
    assert_eq!(e, InspectError::DuplicateDynamicTag { tag: "DT_FLAGS" });
    assert_eq!(e.check(), "dynamic");
    // glibc keeps the last DT_FLAGS and DT_FLAGS_1: lazy binding, partial RELRO; so does the
    // report (the inspector used to OR them together and say "full").
    let report = examined(&lib);
    assert!(!report.bind_now);
    assert_eq!(report.relro, Relro::Partial);
    assert!(bound_at_load(&lib, PLT_SYMBOLS).is_empty());
    passes(&now);
}

#[test]
fn a_dynamic_array_that_runs_past_its_program_header_is_refused() {
    let host = Host::new();
    let zlib = good_with(&host, "dynshort", &["-Wl,--no-as-needed", "-lz"]);
    // PT_DYNAMIC claims one entry; ld.so reads on to DT_NULL regardless.
    let lib = patched(&host, &zlib, "libdyn-unterminated.so", |b| {
        let ph = phdr_offsets(b, PT_DYNAMIC)[0];
        put_u64(b, ph + 32, 16);
        put_u64(b, ph + 40, 16);
    });
    let bytes = std::fs::read(&lib).unwrap();
    let offset_view = goblin::elf::Elf::parse(&bytes).unwrap();
    assert_eq!(offset_view.dynamic.as_ref().unwrap().dyns.len(), 1);
    let e = refusal(&lib);
    assert_eq!(e, InspectError::DynamicNotTerminated { entries: 1 });
    assert_eq!(e.check(), "dynamic");
    // What the loader reads is reported: every DT_NEEDED, not only the first entry.
    let report = examined(&lib);
    for name in ["libz.so.1", "libc.so.6"] {
        assert!(
            report.needed.iter().any(|n| n == name),
            "{:?}",
            report.needed
        );
    }
    let mut p = strict();
    p.danger.allow_needed(["libz.so.1"]);
    passes_with(&zlib, &p);
}

#[test]
fn duplicate_program_headers_the_loader_takes_one_of_are_refused() {
    let host = Host::new();
    let good = good_with(&host, "dupphdr", &[]);
    for (kind, name) in [
        (PT_DYNAMIC, "PT_DYNAMIC"),
        (PT_GNU_STACK, "PT_GNU_STACK"),
        (PT_GNU_RELRO, "PT_GNU_RELRO"),
    ] {
        // The PT_GNU_EH_FRAME header (index 6, read by no loader check) becomes a copy.
        let lib = patched(&host, &good, &format!("libphdr-duplicate-{name}.so"), |b| {
            let from = phdr_offsets(b, kind)[0];
            let to = phdr_offsets(b, PT_GNU_EH_FRAME)[0];
            let copy = b[from..from + 56].to_vec();
            b[to..to + 56].copy_from_slice(&copy);
        });
        let e = refusal(&lib);
        assert!(
            matches!(e, InspectError::DuplicateProgramHeader { kind: k, first, second } if k == name && first < second),
            "{name}: {e:?}"
        );
        assert_eq!(e.check(), "program_headers");
    }
    // Two PT_INTERP (the PT_NOTE and PT_GNU_EH_FRAME headers retyped): refused as a
    // duplicate before the executable check.
    let lib = patched(&host, &good, "libphdr-duplicate-PT_INTERP.so", |b| {
        for kind in [PT_NOTE, PT_GNU_EH_FRAME] {
            let at = phdr_offsets(b, kind)[0];
            put_u32(b, at, PT_INTERP);
        }
    });
    assert!(matches!(
        refusal(&lib),
        InspectError::DuplicateProgramHeader {
            kind: "PT_INTERP",
            ..
        }
    ));
    // The loader takes the LAST PT_GNU_STACK: a second one with PF_X makes the stack
    // executable, and the report says so.
    let lib = patched(&host, &good, "libphdr-second-stack-executable.so", |b| {
        let from = phdr_offsets(b, PT_GNU_STACK)[0];
        let to = phdr_offsets(b, PT_GNU_EH_FRAME)[0];
        let copy = b[from..from + 56].to_vec();
        b[to..to + 56].copy_from_slice(&copy);
        put_u32(b, from + 4, 7);
    });
    assert!(matches!(
        refusal(&lib),
        InspectError::DuplicateProgramHeader {
            kind: "PT_GNU_STACK",
            ..
        }
    ));
    assert_eq!(examined(&lib).gnu_stack, GnuStack::Executable);
    passes(&good);
}

#[test]
fn load_segments_out_of_order_or_overlapping_are_refused() {
    let host = Host::new();
    let good = good_with(&host, "loadorder", &[]);
    let swapped = patched(&host, &good, "libload-out-of-order.so", |b| {
        let loads = phdr_offsets(b, PT_LOAD);
        let (a, c) = (loads[1], loads[2]);
        let first = b[a..a + 56].to_vec();
        let second = b[c..c + 56].to_vec();
        b[a..a + 56].copy_from_slice(&second);
        b[c..c + 56].copy_from_slice(&first);
    });
    let bytes = std::fs::read(&good).unwrap();
    let loads = phdr_offsets(&bytes, PT_LOAD);
    let (_, text_vaddr, _, _) = phdr_fields(&bytes, loads[1]);
    let e = refusal(&swapped);
    assert!(
        matches!(e, InspectError::LoadSegmentsOverlap { index: 2, vaddr, .. } if vaddr == text_vaddr),
        "{e:?}"
    );
    assert_eq!(e.check(), "program_headers");
    // A PT_LOAD moved onto the page of the one before it: the loader would map over it.
    let overlapping = patched(&host, &good, "libload-overlap.so", |b| {
        let loads = phdr_offsets(b, PT_LOAD);
        let (_, vaddr, _, _) = phdr_fields(b, loads[1]);
        put_u64(b, loads[2] + 16, vaddr + 0x100);
    });
    assert!(matches!(
        refusal(&overlapping),
        InspectError::LoadSegmentsOverlap { index: 2, .. }
    ));
    passes(&good);
}

#[test]
fn a_dynamic_section_in_zero_filled_memory_is_refused() {
    let host = Host::new();
    let good = good_with(&host, "dynbss", &[]);
    // The writable PT_LOAD's file bytes end where PT_DYNAMIC starts: in memory the dynamic
    // section is then zeros (one DT_NULL), while its file offset still shows the real tags.
    let lib = patched(&host, &good, "libdyn-in-bss.so", |b| {
        let (_, dyn_vaddr, _, _) = phdr_fields(b, phdr_offsets(b, PT_DYNAMIC)[0]);
        let rw = *phdr_offsets(b, PT_LOAD).last().unwrap();
        let (_, vaddr, _, _) = phdr_fields(b, rw);
        put_u64(b, rw + 32, dyn_vaddr - vaddr);
    });
    let e = refusal(&lib);
    assert!(
        matches!(
            e,
            InspectError::SegmentNotMapped { kind: "PT_DYNAMIC", reason, .. } if reason.contains("zeros")
        ),
        "{e:?}"
    );
    assert_eq!(e.check(), "segment_mapping");
    // The loader reads no tags there, and neither does the report.
    assert!(examined(&lib).needed.is_empty());
    passes(&good);
}

#[test]
fn tables_the_dynamic_section_names_outside_the_file_bytes_are_refused() {
    let host = Host::new();
    let good = good_with(&host, "dyntables", &[]);
    for (tag, name) in [(DT_STRTAB, "DT_STRTAB"), (DT_RELA, "DT_RELA")] {
        // Point the table at the last PT_LOAD's zero-filled tail (its .bss): goblin
        // translates through p_memsz and reads the file bytes after the segment; the
        // loader reads zeros.
        let lib = patched(&host, &good, &format!("libdyn-{name}-in-bss.so"), |b| {
            let rw = *phdr_offsets(b, PT_LOAD).last().unwrap();
            let (_, vaddr, filesz, memsz) = phdr_fields(b, rw);
            assert!(memsz > filesz, "the writable PT_LOAD has a .bss");
            let slot = dynamic_slot(b, tag);
            put_u64(b, slot + 8, vaddr + filesz);
        });
        let e = refusal(&lib);
        assert!(
            matches!(e, InspectError::DynamicAddressNotMapped { tag: t, .. } if t == name),
            "{name}: {e:?}"
        );
        assert_eq!(e.check(), "dynamic");
    }
    passes(&good);
}

#[test]
fn plt_relocations_not_in_the_loaders_format_are_refused() {
    let host = Host::new();
    let good = good_with(&host, "pltrel", &[]);
    // x86-64's ld.so reads DT_JMPREL as Elf64_Rela whatever DT_PLTREL says; goblin believes
    // DT_PLTREL and would read 16-byte Elf64_Rel records, misaligned from the second on.
    let lib = patched(&host, &good, "libdyn-pltrel-rel.so", |b| {
        let slot = dynamic_slot(b, DT_PLTREL);
        put_u64(b, slot + 8, DT_REL);
    });
    let e = refusal(&lib);
    assert_eq!(e, InspectError::PltRelocationKind { found: DT_REL });
    assert_eq!(e.check(), "dynamic");
    passes(&good);
}

#[test]
fn program_header_tables_the_loader_reads_differently_are_refused() {
    let host = Host::new();
    let good = good_with(&host, "phtable", &[]);
    // e_phentsize at 0x36, e_phnum at 0x38.
    let wide = patched(&host, &good, "libphentsize-64.so", |b| put_u16(b, 0x36, 64));
    let e = refusal(&wide);
    assert!(
        matches!(
            e,
            InspectError::ProgramHeaderTable {
                field: "e_phentsize",
                value: 64,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.check(), "program_headers");
    let xnum = patched(&host, &good, "libphnum-pn-xnum.so", |b| {
        put_u16(b, 0x38, 0xffff)
    });
    let e = refusal(&xnum);
    assert!(
        matches!(
            e,
            InspectError::ProgramHeaderTable {
                field: "e_phnum",
                value: 0xffff,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.check(), "program_headers");
    passes(&good);
}

#[test]
fn notes_and_relro_must_sit_where_their_load_maps_them() {
    let host = Host::new();
    let good = good_with(&host, "notes", &[]);
    // glibc reads the ABI-tag note at its file offset and GNU property notes at their
    // address: a PT_NOTE whose two disagree means two different things to the loader itself.
    let note = patched(&host, &good, "libnote-offset-elsewhere.so", |b| {
        let at = phdr_offsets(b, PT_NOTE)[0];
        let offset = get_u64(b, at + 8);
        put_u64(b, at + 8, offset + 0x40);
    });
    let e = refusal(&note);
    assert!(
        matches!(
            e,
            InspectError::SegmentNotMapped {
                kind: "PT_NOTE",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.check(), "segment_mapping");
    // A PT_GNU_RELRO over no PT_LOAD protects nothing the file describes.
    let relro = patched(&host, &good, "librelro-unmapped.so", |b| {
        let at = phdr_offsets(b, PT_GNU_RELRO)[0];
        put_u64(b, at + 16, 0x4000_0000);
    });
    let e = refusal(&relro);
    assert!(
        matches!(
            e,
            InspectError::SegmentNotMapped { kind: "PT_GNU_RELRO", reason, .. } if reason.contains("no PT_LOAD")
        ),
        "{e:?}"
    );
    passes(&good);
}

#[test]
fn a_relro_segment_that_protects_nothing_is_no_relro() {
    let host = Host::new();
    let good = good_with(&host, "relrosmall", &[]);
    // ld.so rounds both ends of PT_GNU_RELRO down to a page: 8 bytes protect nothing, though
    // the header is there for checksec and the inspector of old to see.
    let tiny = patched(&host, &good, "librelro-shorter-than-a-page.so", |b| {
        let at = phdr_offsets(b, PT_GNU_RELRO)[0];
        put_u64(b, at + 32, 8);
        put_u64(b, at + 40, 8);
    });
    assert_eq!(
        phdr_offsets(&std::fs::read(&tiny).unwrap(), PT_GNU_RELRO).len(),
        1
    );
    assert_eq!(
        refusal(&tiny),
        InspectError::WeakRelro {
            found: Relro::None,
            required: Relro::Full
        }
    );
    // The detail says why (shown when the policy lets the check pass).
    let mut any = strict();
    any.danger.allow_relro_below_full(RelroFloor::None);
    let detail = |lib: &Path| {
        let r = examine(&std::fs::read(lib).unwrap(), &any.elf, &any.danger).unwrap();
        check_of(&r, "relro").detail.clone()
    };
    assert!(
        detail(&tiny).contains("protects nothing"),
        "{}",
        detail(&tiny)
    );
    // One that protects a page, but not the one holding the GOT: BIND_NOW or not, the GOT
    // stays writable, so partial (it is also refused for lying outside its PT_LOAD).
    let elsewhere = patched(&host, &good, "librelro-not-over-the-got.so", |b| {
        let at = phdr_offsets(b, PT_GNU_RELRO)[0];
        put_u64(b, at + 16, 0x2000);
        put_u64(b, at + 40, 0x1000);
    });
    let report = examined(&elsewhere);
    assert_eq!(report.relro, Relro::Partial);
    assert!(report.bind_now);
    assert!(
        detail(&elsewhere).contains("GOT outside"),
        "{}",
        detail(&elsewhere)
    );
    assert!(matches!(
        refusal(&elsewhere),
        InspectError::SegmentNotMapped {
            kind: "PT_GNU_RELRO",
            ..
        }
    ));
    assert_eq!(passes(&good).relro, Relro::Full);
}

#[test]
fn a_pt_phdr_that_is_not_the_table_the_loader_read_is_refused() {
    use goblin::elf::program_header::PT_PHDR;
    let host = Host::new();
    let good = good_with(&host, "phdr", &[]);
    // glibc walks the PT_PHDR copy in memory for notes and dl_iterate_phdr: the PT_GNU_EH_FRAME
    // header retyped to PT_PHDR describes other bytes than the table at e_phoff.
    let elsewhere = patched(&host, &good, "libphdr-elsewhere.so", |b| {
        let at = phdr_offsets(b, PT_GNU_EH_FRAME)[0];
        put_u32(b, at, PT_PHDR);
    });
    let e = refusal(&elsewhere);
    assert!(
        matches!(e, InspectError::SegmentNotMapped { kind: "PT_PHDR", reason, .. } if reason.contains("e_phoff")),
        "{e:?}"
    );
    assert_eq!(e.check(), "segment_mapping");
    // Control: a PT_PHDR that does describe the table (at e_phoff, mapped at the same
    // address by the first PT_LOAD) passes.
    let honest = patched(&host, &good, "libphdr-honest.so", |b| {
        let at = phdr_offsets(b, PT_GNU_EH_FRAME)[0];
        let phoff = get_u64(b, 0x20);
        let size = 56 * u64::from(u16::from_le_bytes([b[0x38], b[0x39]]));
        put_u32(b, at, PT_PHDR);
        put_u64(b, at + 8, phoff);
        put_u64(b, at + 16, phoff);
        put_u64(b, at + 24, phoff);
        put_u64(b, at + 32, size);
        put_u64(b, at + 40, size);
    });
    passes(&honest);
}

#[test]
fn filter_libraries_are_held_to_the_needed_list() {
    let host = Host::new();
    for (flag, name) in [
        ("-Wl,--auxiliary,libz.so.1", "auxiliary"),
        ("-Wl,--filter,libz.so.1", "filter"),
    ] {
        let lib = good_with(&host, name, &[flag]);
        assert_eq!(
            refusal(&lib),
            InspectError::NeededNotAllowed("libz.so.1".into()),
            "{flag}"
        );
        let mut p = strict();
        p.danger.allow_needed(["libz.so.1"]);
        assert_eq!(passes_with(&lib, &p).filters, vec!["libz.so.1".to_owned()]);
    }
    assert!(
        passes(&good_with(&host, "nofilter", &[]))
            .filters
            .is_empty()
    );
}

// ---- finalizers (issue 11, item 9) -------------------------------------------------------------

#[test]
fn finalizers_are_counted_reported_and_limited_only_on_request() {
    let host = Host::new();
    let good = good_with(&host, "fini", &[]);
    let dtor = host.build("elf/dtor_plugin", "dtor", &[]);
    let base = passes(&good).finalizers.clone();
    let with = passes(&dtor).finalizers.clone();
    assert!(base.fini, "crt's DT_FINI");
    assert_eq!(with.total, base.total + 1, "{with:?}");
    assert_eq!(with.fini_array, base.fini_array + 1);
    // atexit handlers are registered at run time: only the import is visible.
    assert!(base.atexit_imports.is_empty(), "{base:?}");
    assert!(
        with.atexit_imports
            .iter()
            .any(|i| i == "__cxa_atexit" || i == "atexit"),
        "{with:?}"
    );
    let r = passes(&dtor);
    let c = check_of(&r, "finalizers");
    assert_eq!(c.status, Status::Info);
    assert!(c.detail.contains("__cxa_atexit") || c.detail.contains("atexit"));

    let mut p = strict();
    p.elf.max_finalizers = Some(base.total);
    passes_with(&good, &p);
    let e = refusal_with(&dtor, &p);
    assert_eq!(
        e,
        InspectError::TooManyFinalizers {
            count: base.total + 1,
            max: base.total
        }
    );
    assert_eq!(e.check(), "finalizers");

    // The table and the JSON carry them, under the same format name.
    let (code, table, _) = run(&["inspect", dtor.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("finalizers") && l.contains("info")),
        "{table}"
    );
    let (code, doc) = inspect_json(&dtor, &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["format"], "skillgate-inspect-v1");
    assert_eq!(doc["elf"]["finalizers"]["total"], with.total);
    assert_eq!(doc["elf"]["finalizers"]["fini"], true);
    assert!(doc["elf"]["finalizers"]["atexit_imports"].is_array());
    assert!(doc["elf"]["filters"].is_array());
    let policy = write_policy(&host, &format!(r#"{{"max_finalizers":{}}}"#, base.total));
    let (code, doc) = inspect_json(&dtor, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(doc["refusal"]["check"], "finalizers");
}

// ---- fuzz seeds for the loader-view refusals ----------------------------------------------------

/// Every committed seed `fuzz/seeds/elf/loader-<check>--<attack>.so` is refused by `<check>`:
/// they are the fixtures above, kept for the fuzzer to start from.
#[test]
fn the_loader_view_fuzz_seeds_are_refused_by_their_checks() {
    let dir = build::repo_root().join("fuzz/seeds/elf");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(rest) = name.strip_prefix("loader-") else {
            continue;
        };
        let check = rest.split("--").next().unwrap();
        let e = inspect_bytes(&std::fs::read(&path).unwrap()).unwrap_err();
        assert_eq!(e.check(), check, "{name}: {e}");
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} loader seeds");
}

/// Writes those seeds (run with `--ignored` after changing a fixture): each doctored library
/// cut where its last segment ends, since nothing after is read.
#[test]
#[ignore = "writes fuzz/seeds/elf; run by hand"]
fn write_loader_view_fuzz_seeds() {
    let host = Host::new();
    let good = std::fs::read(good_with(&host, "seed", &[])).unwrap();
    let lazy = std::fs::read(good_with(&host, "seedlazy", &["-Wl,-z,lazy"])).unwrap();
    let cut = |mut b: Vec<u8>| {
        let end = goblin::elf::Elf::parse(&b)
            .map(|e| {
                e.program_headers
                    .iter()
                    .map(|ph| (ph.p_offset + ph.p_filesz) as usize)
                    .max()
                    .unwrap()
            })
            .unwrap_or(b.len());
        b.truncate(end.max(64));
        b
    };
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    seeds.push((
        "segment_mapping--dynamic-doctored-copy",
        doctored_dynamic_copy(&lazy),
    ));
    let mut b = good.clone();
    let ph = phdr_offsets(&b, PT_DYNAMIC)[0];
    put_u64(&mut b, ph + 32, 16);
    put_u64(&mut b, ph + 40, 16);
    seeds.push(("dynamic--unterminated", b));
    let mut b = good.clone();
    let (offset, entries) = dynamic_entries(&b);
    let end = offset + 16 * (entries.len() - 1);
    put_u64(&mut b, end, DT_FLAGS);
    put_u64(&mut b, end + 8, 0);
    seeds.push(("dynamic--duplicate-flags", b));
    let mut b = good.clone();
    let slot = dynamic_slot(&b, DT_PLTREL);
    put_u64(&mut b, slot + 8, DT_REL);
    seeds.push(("dynamic--pltrel-rel", b));
    let mut b = good.clone();
    let from = phdr_offsets(&b, PT_DYNAMIC)[0];
    let to = phdr_offsets(&b, PT_GNU_EH_FRAME)[0];
    let copy = b[from..from + 56].to_vec();
    b[to..to + 56].copy_from_slice(&copy);
    seeds.push(("program_headers--duplicate-dynamic", b));
    let mut b = good.clone();
    let loads = phdr_offsets(&b, PT_LOAD);
    let (_, vaddr, _, _) = phdr_fields(&b, loads[1]);
    put_u64(&mut b, loads[2] + 16, vaddr + 0x100);
    seeds.push(("program_headers--load-overlap", b));
    let mut b = good.clone();
    put_u16(&mut b, 0x38, 0xffff);
    seeds.push(("program_headers--pn-xnum", b));
    let mut b = good.clone();
    let (_, dyn_vaddr, _, _) = phdr_fields(&b, phdr_offsets(&b, PT_DYNAMIC)[0]);
    let rw = *phdr_offsets(&b, PT_LOAD).last().unwrap();
    let (_, vaddr, _, _) = phdr_fields(&b, rw);
    put_u64(&mut b, rw + 32, dyn_vaddr - vaddr);
    seeds.push(("segment_mapping--dynamic-in-bss", b));
    let dir = build::repo_root().join("fuzz/seeds/elf");
    for (name, bytes) in seeds {
        let bytes = cut(bytes);
        let e = inspect_bytes(&bytes).unwrap_err();
        assert_eq!(Some(e.check()), name.split("--").next(), "{name}: {e}");
        std::fs::write(dir.join(format!("loader-{name}.so")), bytes).unwrap();
    }
}
