//! ELF inspection of the verified library bytes, before any `dlopen`.
//!
//! `dlopen` runs code: constructors, IFUNC resolvers, and whatever the dynamic loader is
//! told to do by the file's headers. So the library is examined as data first, from the
//! sealed bytes that passed verification, and refused unless it is a shared object for
//! this host that defines the plugin ABI's exports as ordinary global functions and is
//! built the way the [`ElfPolicy`] asks (non-executable stack, full RELRO, no text
//! relocations, no search paths, known dependencies, …). A plugin refused here has had none
//! of its code run.
//!
//! Every check reads what the dynamic loader reads: the ELF header, the program headers and
//! the dynamic section they point at. Section headers are never consulted: the loader
//! ignores them, so they can say anything. To make that a property rather than a habit,
//! the section-header fields of the ELF header are zeroed in a private copy before goblin
//! parses it.
//!
//! "What the loader reads" is glibc's `ld.so`, not a file reader. They part in more places
//! than one would like, and a plugin author can build a file that shows a reader one thing
//! and the loader another (a `PT_DYNAMIC` whose `p_offset` points at a doctored copy claiming
//! BIND_NOW passed as full RELRO while `ld.so` loaded the real, lazy section). So:
//!
//! - The dynamic array is read here, by hand and with checked arithmetic, where `ld.so` reads
//!   it: at the address of the `PT_DYNAMIC` it uses (the last with a non-zero `p_filesz`),
//!   through the `PT_LOAD` that maps that address, entry by entry up to `DT_NULL` — not at
//!   `p_offset` for `p_filesz` bytes as goblin does. For a single-valued tag the last one
//!   counts, as in glibc's `elf_get_dynamic_info`. Strings come from `DT_STRTAB` translated
//!   the same way.
//! - Every place the two views could still differ is refused, each by a named check:
//!   `program_headers` (an `e_phentsize` or `PN_XNUM` the loader reads differently; two of a
//!   program header glibc takes the last of and goblin the first; `PT_LOAD`s out of order or
//!   sharing a page, which glibc maps one over the other), `segment_mapping` (a
//!   `PT_DYNAMIC`, `PT_GNU_RELRO`, note or `PT_PHDR` whose file offset is not the one its
//!   `PT_LOAD` maps to its address, or that reaches past `p_filesz`, where memory is zeros),
//!   and `dynamic` (no `DT_NULL` inside `PT_DYNAMIC`, a repeated single-valued tag, a table
//!   outside a `PT_LOAD`'s file bytes — goblin translates through `p_memsz` and would read the
//!   file bytes after a segment where the loader sees zeros —, or PLT relocations goblin would
//!   read in another format than the loader). Once those hold, goblin's symbol and relocation
//!   tables (exports, imports, IFUNCs, IRELATIVE) are the bytes the loader reads, so they are
//!   still parsed by goblin.
//! - The report describes what `ld.so` would use even when a check refuses the file, so a
//!   refusal can be explained ("partial RELRO, and a forged offset claiming full").
//!
//! The import deny list is evidence, not a sandbox: a plugin can reach any function through
//! `dlsym`, a raw `syscall` instruction or a hand-written stub. It catches the honest
//! mistake and makes the dishonest one deliberate; the sandbox is what stops it.
//!
//! The files: [`error`](InspectError) (the refusals), `report` ([`InspectReport`]),
//! `headers` (ELF and program headers), `dynamic` (the dynamic section), `checks` (the
//! examination, check by check), `hardening` and `symbols` (the checks of how the library
//! is built and what it links to).

mod checks;
mod dynamic;
mod error;
mod hardening;
mod headers;
mod report;
mod symbols;

use goblin::elf::{Elf, header};

use crate::base::sealed::VerifiedBytes;
use crate::danger::{ElfDanger, RelroFloor};
use crate::pipeline::verify::{Bundle, Verified};

use checks::examine_parsed;
use dynamic::loader_view_problem;
use headers::{check_program_headers, erase_section_header_fields, without_section_headers};

pub use error::{InspectError, MalformedElf};
pub use report::{CheckResult, Constructors, Finalizers, GnuStack, InspectReport, Status};

/// How much RELRO a library has, weakest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Relro {
    /// No `PT_GNU_RELRO`: relocated data (GOT included) stays writable.
    None,
    /// `PT_GNU_RELRO` without BIND_NOW: the PLT part of the GOT stays writable.
    Partial,
    /// `PT_GNU_RELRO` and BIND_NOW: every relocation is applied at load, then made
    /// read-only.
    Full,
}

impl std::fmt::Display for Relro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Relro::None => "none",
            Relro::Partial => "partial",
            Relro::Full => "full",
        })
    }
}

/// The ELF hardening policy (the policy file's `elf` section): the knobs that keep or
/// tighten a check. Every check is strict by default, and a default Rust `cdylib` and a C
/// plugin built with `-fPIC -Wl,-z,now -Wl,-z,relro -Wl,-z,noexecstack` pass it; what would
/// weaken a check (an executable stack, IFUNC, RELRO below full, a search path, a removed
/// import denial, a library beyond the system runtimes, …) is a knob of
/// [`crate::danger::ElfDanger`] instead, passed beside this policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ElfPolicy {
    /// The `DT_NEEDED` names accepted (exact match; this list replaces the default and may
    /// only narrow it). Default: [`DEFAULT_ALLOWED_NEEDED`], the system runtimes of C, C++
    /// and Rust — libc, libm, libpthread, libdl, librt, libgcc_s, libstdc++ and the dynamic
    /// loader. An entry beyond the defaults is ignored by the
    /// inspection and refused by [`crate::policy::PolicyBuilder::build`]: it belongs in
    /// [`crate::danger::ElfDanger::allow_needed`].
    pub allowed_needed: Vec<String>,
    /// Undefined dynamic symbols refused (this list replaces the default and may only
    /// extend it). Default: the exec family, `system`, `popen`, `fork`, `vfork`,
    /// `posix_spawn(p)`, `ptrace`, `dlopen`, `dlmopen`. Evidence, not a sandbox. A default
    /// entry left out is still denied by the inspection and refused by
    /// [`crate::policy::PolicyBuilder::build`]: taking one off is
    /// [`crate::danger::ElfDanger::allow_imports`].
    pub denied_imports: Vec<String>,
    /// Most constructors accepted (`DT_INIT` plus `DT_INIT_ARRAY` and `DT_PREINIT_ARRAY`
    /// entries). Default `null`: counted and reported, never refused.
    pub max_constructors: Option<u64>,
    /// Most finalizers accepted (`DT_FINI` plus `DT_FINI_ARRAY` entries). Default `null`:
    /// counted and reported, never refused. Handlers registered at run time with `atexit`
    /// cannot be counted from the file.
    pub max_finalizers: Option<u64>,
    /// Require a stack protector (an import of `__stack_chk_fail`). Default `false`: a
    /// Rust `cdylib` has none, so it is reported, not required.
    pub require_stack_protector: bool,
}

/// The rules one examination applies: the [`ElfPolicy`] with the [`ElfDanger`] knobs
/// folded in. The normal lists cannot widen here whatever a caller put in them: the
/// defaults are always denied unless the danger knob takes one off, and a needed library
/// beyond the defaults is accepted only through the danger knob.
struct Rules<'a> {
    allow_executable_stack: bool,
    allow_writable_executable_segments: bool,
    min_relro: Relro,
    allow_text_relocations: bool,
    allow_rpath: bool,
    allowed_runpaths: &'a [String],
    allow_audit: bool,
    allowed_needed: Vec<&'a str>,
    denied_imports: Vec<&'a str>,
    allow_ifunc: bool,
    max_constructors: Option<u64>,
    max_finalizers: Option<u64>,
    require_stack_protector: bool,
}

impl<'a> Rules<'a> {
    fn new(policy: &'a ElfPolicy, danger: &'a ElfDanger) -> Self {
        let allowed_needed = policy
            .allowed_needed
            .iter()
            .map(String::as_str)
            .filter(|n| DEFAULT_ALLOWED_NEEDED.contains(n))
            .chain(danger.allowed_needed().iter().map(String::as_str))
            .collect();
        let denied_imports = DEFAULT_DENIED_IMPORTS
            .iter()
            .copied()
            .chain(policy.denied_imports.iter().map(String::as_str))
            .filter(|d| !danger.allowed_imports().iter().any(|a| a == d))
            .collect();
        Rules {
            allow_executable_stack: danger.executable_stack_allowed(),
            allow_writable_executable_segments: danger.writable_executable_segments_allowed(),
            min_relro: match danger.relro_floor() {
                None => Relro::Full,
                Some(RelroFloor::Partial) => Relro::Partial,
                Some(RelroFloor::None) => Relro::None,
            },
            allow_text_relocations: danger.text_relocations_allowed(),
            allow_rpath: danger.rpath_allowed(),
            allowed_runpaths: danger.allowed_runpaths(),
            allow_audit: danger.audit_allowed(),
            allowed_needed,
            denied_imports,
            allow_ifunc: danger.ifunc_allowed(),
            max_constructors: policy.max_constructors,
            max_finalizers: policy.max_finalizers,
            require_stack_protector: policy.require_stack_protector,
        }
    }
}

/// The default `allowed_needed`: the system runtimes a plugin written in C, C++ or Rust
/// links from the system, and nothing else.
///
/// - glibc: `libc`, and the parts older toolchains still link separately (`libm`,
///   `libpthread`, `libdl`, `librt`; since glibc 2.34 the last three are empty stubs).
/// - `libgcc_s`: the unwinder, linked by every Rust `cdylib` and by C++ (exceptions).
/// - `libstdc++`: the C++ standard library, which `g++` links to every C++ plugin (VT Code's
///   plugin guide shows its C example in C++). It imports none of
///   [`DEFAULT_DENIED_IMPORTS`] and needs only `libm`, `libc`, `libgcc_s` and the loader
///   (checked on Debian 12's `libstdc++.so.6.0.30`), so allowing it lets no denied function in
///   through a dependency; like every library here it loads inside the plugin's sandbox.
/// - The dynamic loader: named in `DT_NEEDED` by a library that uses thread-local storage
///   (`__tls_get_addr` is defined there), e.g. a C++ `thread_local`.
///
/// Anything else (libz, libssl, …) is code no signature covers: the policy's
/// `danger.elf.allow_needed`.
pub const DEFAULT_ALLOWED_NEEDED: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

/// The default `denied_imports`.
pub const DEFAULT_DENIED_IMPORTS: &[&str] = &[
    "execve",
    "execv",
    "execvp",
    "execvpe",
    "execl",
    "execlp",
    "execle",
    "fexecve",
    "system",
    "popen",
    "fork",
    "vfork",
    "posix_spawn",
    "posix_spawnp",
    "ptrace",
    "dlopen",
    "dlmopen",
];

fn default_allowed_needed() -> Vec<String> {
    DEFAULT_ALLOWED_NEEDED
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn default_denied_imports() -> Vec<String> {
    DEFAULT_DENIED_IMPORTS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Default for ElfPolicy {
    fn default() -> Self {
        ElfPolicy {
            allowed_needed: default_allowed_needed(),
            denied_imports: default_denied_imports(),
            max_constructors: None,
            max_finalizers: None,
            require_stack_protector: false,
        }
    }
}

/// A verified bundle whose library passed inspection. Only [`inspect`] builds it.
#[derive(Debug)]
pub struct Inspected {
    bundle: Bundle,
    report: InspectReport,
}

impl Inspected {
    /// The verified bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }
    /// What inspection found.
    pub fn report(&self) -> &InspectReport {
        &self.report
    }
    /// Only [`crate::pipeline::load::Loadable::unpack`] takes an inspected bundle apart.
    pub(in crate::pipeline) fn into_parts(self) -> (Bundle, InspectReport) {
        (self.bundle, self.report)
    }
}

/// Inspects the verified library under `policy`, weakened only by `danger`.
pub fn inspect(
    verified: Verified<Bundle>,
    policy: &ElfPolicy,
    danger: &ElfDanger,
) -> Result<Inspected, InspectError> {
    let bundle = verified.into_inner();
    let unreadable = |e: std::io::Error| {
        InspectError::Malformed(MalformedElf::Map {
            kind: e.kind(),
            os_error: e.raw_os_error(),
        })
    };
    let rules = Rules::new(policy, danger);
    let report = match bundle.library() {
        // Inspection erases three header fields in place: it gets its own copy.
        VerifiedBytes::Held(bytes) => examine_in_place(&mut bytes.clone(), &rules)?,
        // A library above `HELD_MAX` (or an empty one, which `map_private` refuses as
        // before): a copy-on-write mapping, so only the page holding the header is copied.
        VerifiedBytes::Sealed(library) => {
            let mut map = library.map_private().map_err(unreadable)?;
            examine_in_place(&mut map, &rules)?
        }
    };
    if let Some(refusal) = report.refusal() {
        return Err(refusal.clone());
    }
    Ok(Inspected { bundle, report })
}

/// Inspects ELF bytes under the default (strict) [`ElfPolicy`] and no danger knob: see
/// [`inspect_bytes_with`].
pub fn inspect_bytes(bytes: &[u8]) -> Result<InspectReport, InspectError> {
    inspect_bytes_with(bytes, &ElfPolicy::default(), &ElfDanger::default())
}

/// Inspects ELF bytes under `policy`, weakened only by `danger`: the report of a library
/// that passes every check, or the first refusal. Never panics on malformed input.
pub fn inspect_bytes_with(
    bytes: &[u8],
    policy: &ElfPolicy,
    danger: &ElfDanger,
) -> Result<InspectReport, InspectError> {
    let report = examine(bytes, policy, danger)?;
    match report.refusal() {
        Some(refusal) => Err(refusal.clone()),
        None => Ok(report),
    }
}

/// Runs every check on ELF bytes and reports each outcome, pass or fail (what
/// `skillgate inspect` prints). An error only when the bytes cannot be examined at all:
/// not ELF, malformed, or a program header reaching past the end of the file.
///
/// Never panics on malformed input: goblin runs under `catch_unwind` as a second line of
/// defence, and every lookup here is checked.
pub fn examine(
    bytes: &[u8],
    policy: &ElfPolicy,
    danger: &ElfDanger,
) -> Result<InspectReport, InspectError> {
    if bytes.get(..4) != Some(header::ELFMAG.as_slice()) {
        return Err(InspectError::NotElf);
    }
    let copy = without_section_headers(bytes)?;
    examine_erased(&copy, &Rules::new(policy, danger))
}

/// [`examine`] on a private, writable view of the library (a copy of a small library's
/// held bytes, or a copy-on-write mapping of a large one's memfd, see
/// [`crate::base::sealed::VerifiedBytes`]): the
/// section-header fields are erased in place, so a large library is never copied whole,
/// only the page holding its ELF header.
fn examine_in_place(elf: &mut [u8], policy: &Rules<'_>) -> Result<InspectReport, InspectError> {
    if elf.get(..4) != Some(header::ELFMAG.as_slice()) {
        return Err(InspectError::NotElf);
    }
    let is_64 = check_program_headers(elf)?;
    erase_section_header_fields(elf, is_64)?;
    examine_erased(elf, policy)
}

/// Parses bytes whose ELF header names no section headers, and runs every check.
fn examine_erased(bytes: &[u8], policy: &Rules<'_>) -> Result<InspectReport, InspectError> {
    let parsed = std::panic::catch_unwind(|| -> Result<InspectReport, InspectError> {
        let elf = Elf::parse(bytes).map_err(|e| {
            // goblin reads the tables a forged header points it at, and can fail there:
            // then the forgery, not goblin's complaint, is the refusal.
            loader_view_problem(bytes).unwrap_or(MalformedElf::parse("", e))
        })?;
        examine_parsed(&elf, bytes, policy)
    });
    match parsed {
        Ok(result) => result,
        Err(_) => Err(InspectError::Malformed(MalformedElf::ParserPanicked)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use goblin::elf::program_header;

    fn strict() -> ElfPolicy {
        ElfPolicy::default()
    }

    #[test]
    fn non_elf_and_truncated_input_is_refused_not_a_panic() {
        assert!(matches!(inspect_bytes(b""), Err(InspectError::NotElf)));
        assert!(matches!(
            inspect_bytes(b"not an elf file at all"),
            Err(InspectError::NotElf)
        ));
        let own = std::fs::read("/proc/self/exe").unwrap();
        for cut in [4, 16, 63, 64, 65, 200, 4096] {
            let _ =
                inspect_bytes_with(&own[..cut.min(own.len())], &strict(), &ElfDanger::default());
        }
    }

    /// A malformed header is refused with what is wrong as data, and the parser's or the
    /// check's words reach the message.
    #[test]
    fn a_malformed_header_says_what_is_wrong() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        // EI_CLASS 7 names no class: goblin refuses it, in its own words.
        let mut bad_class = own[..64].to_vec();
        bad_class[header::EI_CLASS] = 7;
        let err = inspect_bytes(&bad_class).unwrap_err();
        let InspectError::Malformed(MalformedElf::Parse { part: "", detail }) = &err else {
            panic!("expected Malformed(Parse), got {err:?}");
        };
        assert!(!detail.is_empty());
        assert!(err.to_string().contains(detail.as_str()), "{err}");
        assert_eq!(err.check(), "elf_header");
        // A PT_LOAD with more file bytes than memory bytes: the values are carried.
        let mut big_file = own.clone();
        let phoff =
            usize::try_from(u64::from_le_bytes(own[0x20..0x28].try_into().unwrap())).unwrap();
        let phentsize = usize::from(u16::from_le_bytes(own[0x36..0x38].try_into().unwrap()));
        let phnum = usize::from(u16::from_le_bytes(own[0x38..0x3a].try_into().unwrap()));
        let load = (0..phnum)
            .map(|i| phoff + i * phentsize)
            .find(|at| {
                u32::from_le_bytes(own[*at..*at + 4].try_into().unwrap()) == program_header::PT_LOAD
            })
            .unwrap();
        // p_filesz (offset 0x20) = 1, p_memsz (0x28) = 0.
        big_file[load + 0x20..load + 0x28].copy_from_slice(&1u64.to_le_bytes());
        big_file[load + 0x28..load + 0x30].copy_from_slice(&0u64.to_le_bytes());
        let err = inspect_bytes(&big_file).unwrap_err();
        assert!(
            matches!(
                err,
                InspectError::Malformed(MalformedElf::FileSizeAboveMemSize {
                    filesz: 1,
                    memsz: 0,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_executable_is_not_a_plugin() {
        // The test binary is a PIE executable: ET_DYN with PT_INTERP.
        let own = std::fs::read("/proc/self/exe").unwrap();
        assert!(matches!(inspect_bytes(&own), Err(InspectError::Executable)));
    }

    #[test]
    fn a_library_without_the_abi_is_refused_for_the_first_missing_export() {
        let libm = std::fs::read("/lib/x86_64-linux-gnu/libm.so.6").unwrap();
        assert!(matches!(
            inspect_bytes(&libm),
            Err(InspectError::MissingExport("vtcode_plugin_version"))
        ));
    }

    /// The heap copy small libraries are examined in and the copy-on-write mapping large
    /// ones are examined in give the same verdict, and neither changes the sealed file.
    #[test]
    fn the_heap_copy_and_the_private_map_examine_alike() {
        use crate::base::sealed::SealedBuilder;
        use std::io::Write;
        let policy = strict();
        let none = ElfDanger::default();
        let rules = Rules::new(&policy, &none);
        let own = std::fs::read("/proc/self/exe").unwrap();
        let libm = std::fs::read("/lib/x86_64-linux-gnu/libm.so.6").unwrap();
        for bytes in [own, libm, b"not elf".to_vec()] {
            let mut builder = SealedBuilder::new("inspect-test").unwrap();
            builder.write_all(&bytes).unwrap();
            let sealed = builder.seal().unwrap();
            let mut copy = sealed.read_copy(u64::MAX).unwrap();
            let mut map = sealed.map_private().unwrap();
            let from_copy = examine_in_place(&mut copy, &rules);
            let from_map = examine_in_place(&mut map, &rules);
            assert_eq!(format!("{from_copy:?}"), format!("{from_map:?}"));
            assert!(
                sealed.map().unwrap()[..] == bytes[..],
                "the sealed file changed"
            );
        }
    }

    #[test]
    fn the_rules_default_strict_and_only_danger_widens_them() {
        let none = ElfDanger::default();
        let default = strict();
        let r = Rules::new(&default, &none);
        assert_eq!(r.min_relro, Relro::Full);
        assert!(r.denied_imports.contains(&"system"));
        assert!(!r.allow_executable_stack && !r.allow_ifunc && r.allowed_runpaths.is_empty());
        // A normal list edited in code cannot widen: the defaults stay denied and a
        // library beyond the C runtime stays refused.
        let mut wide = strict();
        wide.denied_imports.clear();
        wide.allowed_needed.push("libz.so.1".into());
        let r = Rules::new(&wide, &none);
        assert!(r.denied_imports.contains(&"system"));
        assert!(!r.allowed_needed.contains(&"libz.so.1"));
        // Narrowing and extending them works.
        let mut narrow = strict();
        narrow.allowed_needed.clear();
        narrow.denied_imports.push("socket".into());
        let r = Rules::new(&narrow, &none);
        assert!(r.allowed_needed.is_empty());
        assert!(r.denied_imports.contains(&"socket"));
        // The danger knobs do widen.
        let mut danger = ElfDanger::default();
        danger
            .allow_imports(["system"])
            .allow_needed(["libz.so.1"])
            .allow_relro_below_full(RelroFloor::Partial);
        let r = Rules::new(&default, &danger);
        assert!(!r.denied_imports.contains(&"system"));
        assert!(r.denied_imports.contains(&"execve"));
        assert!(r.allowed_needed.contains(&"libz.so.1"));
        assert_eq!(r.min_relro, Relro::Partial);
    }
}
