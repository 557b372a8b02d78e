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

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{Elf, ProgramHeader, dynamic, header, program_header, reloc, sym};

use crate::base::ffi::{REQUIRED_EXPORTS, SYMBOL_FREE_STRING};
use crate::danger::{ElfDanger, RelroFloor};
use crate::pipeline::verify::{Bundle, Verified};

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
/// import denial, a library beyond the C runtime, …) is a knob of
/// [`crate::danger::ElfDanger`] instead, passed beside this policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ElfPolicy {
    /// The `DT_NEEDED` names accepted (exact match; this list replaces the default and may
    /// only narrow it). Default: the C runtime — libc, libm, libpthread, libdl, librt,
    /// libgcc_s and the dynamic loader. An entry beyond the defaults is ignored by the
    /// inspection and refused by [`crate::Policy::validate`]: it belongs in
    /// [`crate::danger::ElfDanger::allow_needed`].
    pub allowed_needed: Vec<String>,
    /// Undefined dynamic symbols refused (this list replaces the default and may only
    /// extend it). Default: the exec family, `system`, `popen`, `fork`, `vfork`,
    /// `posix_spawn(p)`, `ptrace`, `dlopen`, `dlmopen`. Evidence, not a sandbox. A default
    /// entry left out is still denied by the inspection and refused by
    /// [`crate::Policy::validate`]: taking one off is
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

/// The default `allowed_needed`.
pub const DEFAULT_ALLOWED_NEEDED: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

/// Imports through which a library registers exit handlers at run time.
const ATEXIT_IMPORTS: [&str; 4] = [
    "atexit",
    "on_exit",
    "__cxa_atexit",
    "__cxa_thread_atexit_impl",
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

/// The state of `PT_GNU_STACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GnuStack {
    /// No `PT_GNU_STACK`: the loader assumes an executable stack (x86-64, aarch64).
    Missing,
    /// Present, without `PF_X`.
    NonExecutable,
    /// Present, with `PF_X`.
    Executable,
}

/// Constructors the loader runs inside `dlopen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Constructors {
    /// Whether `DT_INIT` names a function.
    pub init: bool,
    /// `DT_INIT_ARRAY` entries (`DT_INIT_ARRAYSZ` / pointer size).
    pub init_array: u64,
    /// `DT_PREINIT_ARRAY` entries (glibc ignores them in shared objects; counted anyway).
    pub preinit_array: u64,
    /// The sum.
    pub total: u64,
}

/// Finalizers: code of the library that runs when the process that loaded it exits (or
/// when it is unloaded), after every call has returned.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Finalizers {
    /// Whether `DT_FINI` names a function.
    pub fini: bool,
    /// `DT_FINI_ARRAY` entries (`DT_FINI_ARRAYSZ` / pointer size).
    pub fini_array: u64,
    /// The sum.
    pub total: u64,
    /// Imports that register exit handlers at run time (`atexit`, `__cxa_atexit`, `on_exit`,
    /// `__cxa_thread_atexit_impl`): how many, if any, is not visible in the file.
    pub atexit_imports: Vec<String>,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// The policy's requirement holds.
    Pass,
    /// The policy refuses the library.
    Fail,
    /// Reported only: the policy sets no requirement.
    Info,
}

/// One line of an inspection: which check, how it came out, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CheckResult {
    /// The check's stable name (`relro`, `gnu_stack`, …).
    pub check: &'static str,
    /// Its outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix the build, when the check failed.
    pub fix: Option<&'static str>,
    /// The refusal, when the check failed.
    #[serde(skip)]
    pub refusal: Option<InspectError>,
}

/// What inspection found about a library. Built by [`examine`] (every check, pass or fail)
/// and [`inspect_bytes`] (only for a library that passed them all).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct InspectReport {
    /// `e_machine` of the file.
    pub machine: u16,
    /// Its name.
    pub machine_name: &'static str,
    /// 32 or 64.
    pub class: u8,
    /// Whether the optional `vtcode_plugin_free_string` is exported.
    pub exports_free_string: bool,
    /// The `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// RELRO level.
    pub relro: Relro,
    /// Whether BIND_NOW is set (`DT_BIND_NOW`, `DF_BIND_NOW` or `DF_1_NOW`).
    pub bind_now: bool,
    /// The state of `PT_GNU_STACK`.
    pub gnu_stack: GnuStack,
    /// checksec's "NX": `PT_GNU_STACK` present and not executable.
    pub nx: bool,
    /// Indexes of `PT_LOAD` program headers that are both writable and executable.
    pub wx_segments: Vec<usize>,
    /// Whether text relocations are announced (`DT_TEXTREL` or `DF_TEXTREL`).
    pub textrel: bool,
    /// `DT_RPATH` strings.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` strings.
    pub runpath: Vec<String>,
    /// `DT_AUDIT` and `DT_DEPAUDIT` strings.
    pub audit: Vec<String>,
    /// Undefined, non-local dynamic symbols, sorted, without duplicates.
    pub imports: Vec<String>,
    /// Those of `imports` the policy denies.
    pub denied_imports: Vec<String>,
    /// Defined `STT_GNU_IFUNC` dynamic symbols.
    pub ifuncs: Vec<String>,
    /// `R_*_IRELATIVE` dynamic relocations (IFUNCs resolved without a dynamic symbol).
    pub irelative_relocations: usize,
    /// Constructors run by `dlopen`.
    pub constructors: Constructors,
    /// Finalizers run at exit.
    pub finalizers: Finalizers,
    /// `DT_FILTER` and `DT_AUXILIARY` names: libraries the loader also loads, like
    /// `DT_NEEDED` ones, and held to the same `allowed_needed` list.
    pub filters: Vec<String>,
    /// Whether `__stack_chk_fail` (or `__stack_chk_guard`) is imported.
    pub stack_protector: bool,
    /// Every check, in order.
    #[serde(skip)]
    pub checks: Vec<CheckResult>,
}

impl InspectReport {
    /// The first refusal, if any check failed.
    pub fn refusal(&self) -> Option<&InspectError> {
        self.checks.iter().find_map(|c| c.refusal.as_ref())
    }
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.refusal().is_none()
    }
}

/// What is wrong with a file that is not well-formed ELF (see [`InspectError::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedElf {
    /// goblin could not parse a part of it. `detail` is goblin's message: its error type is
    /// neither `Clone` nor comparable, which a refusal in an [`InspectReport`] must be, and
    /// it carries little but that text.
    #[error("{part}{detail}")]
    Parse {
        /// The part being parsed: empty for the whole file, else a prefix such as
        /// `"program headers: "`.
        part: &'static str,
        /// goblin's message.
        detail: String,
    },
    /// The parser panicked on it.
    #[error("parser panicked")]
    ParserPanicked,
    /// The sealed library could not be mapped to be read.
    #[error("cannot map the sealed library: {}", describe_io(*kind, *os_error))]
    Map {
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
        /// The system's error number, if the system reported one.
        os_error: Option<i32>,
    },
    /// A header field's offset overflowed.
    #[error("header offset overflow")]
    HeaderOffsetOverflow,
    /// The ELF header is shorter than its fields.
    #[error("ELF header is truncated")]
    TruncatedHeader,
    /// `EI_CLASS` is neither 32- nor 64-bit.
    #[error("unknown ELF class")]
    UnknownClass,
    /// `EI_DATA` is neither little- nor big-endian.
    #[error("unknown ELF byte order")]
    UnknownByteOrder,
    /// `e_phoff` does not fit in this machine's address space.
    #[error("e_phoff does not fit in memory")]
    PhoffTooLarge,
    /// A `PT_LOAD` holds more file bytes than memory.
    #[error(
        "program header {index} (PT_LOAD) has p_filesz {filesz:#x} larger than p_memsz {memsz:#x}"
    )]
    FileSizeAboveMemSize {
        /// The program header's index.
        index: usize,
        /// Its `p_filesz`.
        filesz: u64,
        /// Its `p_memsz`.
        memsz: u64,
    },
    /// A dynamic entry's string lies outside the dynamic string table.
    #[error("{tag} string at {offset:#x} is outside the dynamic string table")]
    StringOutsideTable {
        /// The dynamic tag.
        tag: &'static str,
        /// The offset it gives.
        offset: u64,
    },
}

impl MalformedElf {
    /// goblin's error, as text (see [`MalformedElf::Parse`]).
    fn parse(part: &'static str, e: goblin::error::Error) -> InspectError {
        InspectError::Malformed(MalformedElf::Parse {
            part,
            detail: e.to_string(),
        })
    }
}

fn describe_io(kind: std::io::ErrorKind, os_error: Option<i32>) -> String {
    match os_error {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => kind.to_string(),
    }
}

/// Why a library was refused before loading. The message names the check and how to fix
/// the build; [`InspectError::check`] and [`InspectError::fix`] give each alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The bytes do not start with the ELF magic: not a shared library at all.
    #[error("elf_header: not an ELF file (no \\x7fELF magic), so not a shared library")]
    NotElf,
    /// The bytes are ELF but goblin could not parse them, or the headers are inconsistent.
    #[error("elf_header: library is not a well-formed ELF file: {0}")]
    Malformed(#[source] MalformedElf),
    /// A program header describes bytes beyond the end of the file.
    #[error(
        "segment_bounds: program header {index} ({kind}) covers file bytes {offset}..{offset}+{filesz}, beyond the file's {file_len} bytes (truncated or malformed; rebuild it)"
    )]
    SegmentOutOfBounds {
        /// The program header's index.
        index: usize,
        /// Its type.
        kind: &'static str,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The program header table is not one the loader reads the way it is laid out here:
    /// `e_phentsize` is not the size of a program header, or `e_phnum` is `PN_XNUM`.
    #[error(
        "program_headers: {field} is {value:#x}, expected {expected}; the loader rejects or reads such a table differently (rebuild it)"
    )]
    ProgramHeaderTable {
        /// The ELF header field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it must be.
        expected: &'static str,
    },
    /// Two program headers of a type the loader takes only one of.
    #[error(
        "program_headers: program headers {first} and {second} are both {kind}; the loader would use one and this inspector might read the other (rebuild it)"
    )]
    DuplicateProgramHeader {
        /// The type.
        kind: &'static str,
        /// The first one's index.
        first: usize,
        /// The second one's index.
        second: usize,
    },
    /// `PT_LOAD` segments not in ascending, non-overlapping address order.
    #[error(
        "program_headers: PT_LOAD {index} at {vaddr:#x} starts before the previous PT_LOAD's memory ends at {previous_end:#x} (on the same 4 KiB page or earlier): the loader would map one over the other (rebuild it)"
    )]
    LoadSegmentsOverlap {
        /// The program header's index.
        index: usize,
        /// Its `p_vaddr`.
        vaddr: u64,
        /// Where the previous `PT_LOAD`'s memory ends.
        previous_end: u64,
    },
    /// A segment the loader reads at its address has file bytes elsewhere.
    #[error(
        "segment_mapping: program header {index} ({kind}, offset {offset:#x}, address {vaddr:#x}) {reason}; the loader reads it at its address, so its file offset would show something else (rebuild it)"
    )]
    SegmentNotMapped {
        /// The program header's index.
        index: usize,
        /// Its type.
        kind: &'static str,
        /// `p_offset`.
        offset: u64,
        /// `p_vaddr`.
        vaddr: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The dynamic array does not end (`DT_NULL`) inside its `PT_DYNAMIC`.
    #[error(
        "dynamic: the dynamic section has no DT_NULL among the {entries} entries PT_DYNAMIC spans; the loader reads on past it (rebuild it)"
    )]
    DynamicNotTerminated {
        /// Entries inside `PT_DYNAMIC`.
        entries: u64,
    },
    /// A dynamic tag the loader keeps only one of (the last) appears twice.
    #[error(
        "dynamic: tag {tag} appears more than once; the loader keeps only the last (rebuild it)"
    )]
    DuplicateDynamicTag {
        /// The tag.
        tag: &'static str,
    },
    /// A table the dynamic section points at is not in the file bytes a `PT_LOAD` maps.
    #[error(
        "dynamic: {tag} names {size:#x} bytes at address {addr:#x}, which no PT_LOAD maps from the file; the loader would read other bytes than the file holds there (rebuild it)"
    )]
    DynamicAddressNotMapped {
        /// The tag holding the address.
        tag: &'static str,
        /// The address.
        addr: u64,
        /// The size read there.
        size: u64,
    },
    /// `DT_PLTREL` is not `DT_RELA` on a machine whose loader reads only `Elf_Rela`.
    #[error(
        "dynamic: DT_PLTREL is {found}, not DT_RELA (7); this machine's loader reads the PLT relocations as Elf_Rela regardless (rebuild it)"
    )]
    PltRelocationKind {
        /// The value found (or 0 when `DT_JMPREL` has no `DT_PLTREL`).
        found: u64,
    },
    /// 32-bit versus 64-bit mismatch with the host.
    #[error("class: library is {actual}-bit, this host is {expected}-bit; build for this host")]
    WrongClass {
        /// The host's word size.
        expected: u8,
        /// The file's.
        actual: u8,
    },
    /// Byte order differs from the host's.
    #[error("endianness: library byte order differs from the host's; build for this host")]
    WrongEndianness,
    /// Built for another machine.
    #[error(
        "machine: library is for machine {actual} ({actual_name}), this host is {expected} ({expected_name}); build for this host's target"
    )]
    WrongMachine {
        /// The host's `e_machine`.
        expected: u16,
        /// Its name.
        expected_name: &'static str,
        /// The file's `e_machine`.
        actual: u16,
        /// Its name.
        actual_name: &'static str,
    },
    /// Not `ET_DYN`.
    #[error("elf_type: library has ELF type {0}, not a shared object (ET_DYN); link with -shared")]
    NotSharedObject(u16),
    /// Has `PT_INTERP`: a position-independent executable, not a library.
    #[error(
        "not_executable: library has a PT_INTERP program header: it is an executable, not a shared library; link with -shared"
    )]
    Executable,
    /// `DF_1_PIE` is set: a position-independent executable, not a library.
    #[error(
        "not_executable: library has DF_1_PIE set: it is a PIE executable, not a shared library; link with -shared, not -pie"
    )]
    PieExecutable,
    /// `PT_GNU_STACK` is missing (the loader then assumes an executable stack).
    #[error(
        "gnu_stack: library has no PT_GNU_STACK program header, so the loader would make the stack executable; link with -Wl,-z,noexecstack"
    )]
    MissingGnuStack,
    /// `PT_GNU_STACK` asks for an executable stack.
    #[error(
        "gnu_stack: library asks for an executable stack (PT_GNU_STACK has PF_X); link with -Wl,-z,noexecstack and fix the object that asks for it (assembly without .note.GNU-stack, nested-function trampolines)"
    )]
    ExecutableStack,
    /// A `PT_LOAD` segment is writable and executable.
    #[error(
        "wx_segments: program header {index} (PT_LOAD at {vaddr:#x}) is writable and executable; do not link with -N/--omagic or a linker script that merges code and data"
    )]
    WritableExecutableSegment {
        /// The program header's index.
        index: usize,
        /// Its `p_vaddr`.
        vaddr: u64,
    },
    /// RELRO weaker than the policy requires.
    #[error(
        "relro: library has {found} RELRO, the policy requires {required}; link with -Wl,-z,relro -Wl,-z,now"
    )]
    WeakRelro {
        /// What the library has.
        found: Relro,
        /// What the policy requires.
        required: Relro,
    },
    /// Text relocations: code pages are written at load time.
    #[error(
        "textrel: library has text relocations (DT_TEXTREL or DF_TEXTREL); compile every object with -fPIC and do not link with -Wl,-z,notext"
    )]
    TextRelocations,
    /// `DT_RPATH` is present.
    #[error(
        "rpath: library has DT_RPATH {0:?}; remove -Wl,-rpath (or -Wl,--disable-new-dtags) from the link"
    )]
    Rpath(String),
    /// A `DT_RUNPATH` (or allowed `DT_RPATH`) entry is relative or not allowed.
    #[error(
        "runpath: library's search path entry {entry:?} is {reason}; remove -Wl,-rpath from the link, or allow the absolute directory in the policy's danger.elf.allow_runpaths"
    )]
    Runpath {
        /// The entry.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `DT_AUDIT` or `DT_DEPAUDIT` is present.
    #[error(
        "audit: library names an auditing library ({tag} {value:?}); remove -Wl,--audit/--depaudit from the link"
    )]
    Audit {
        /// `DT_AUDIT` or `DT_DEPAUDIT`.
        tag: &'static str,
        /// The library it names.
        value: String,
    },
    /// A `DT_NEEDED` entry outside the allowlist.
    #[error(
        "needed: library depends on {0:?}, which the policy does not allow; link that code statically, drop the dependency, or allow it in the policy's danger.elf.allow_needed"
    )]
    NeededNotAllowed(String),
    /// Imports the policy denies.
    #[error(
        "imports: library imports {0:?}, which the policy denies; remove those calls (a plugin must not spawn processes, trace or load code), or take them off the deny list with danger.elf.allow_imports"
    )]
    DeniedImports(Vec<String>),
    /// IFUNC definitions or `R_*_IRELATIVE` relocations.
    #[error(
        "ifunc: library has IFUNC resolvers (symbols {symbols:?}, {irelative} IRELATIVE relocations) that run inside dlopen; remove __attribute__((ifunc))/target_clones, or set danger.elf.allow_ifunc"
    )]
    Ifunc {
        /// Defined `STT_GNU_IFUNC` dynamic symbols.
        symbols: Vec<String>,
        /// `R_*_IRELATIVE` relocations.
        irelative: usize,
    },
    /// More constructors than the policy allows.
    #[error(
        "constructors: library has {count} constructors, the policy allows {max}; remove __attribute__((constructor)) and static initializers"
    )]
    TooManyConstructors {
        /// Constructors found.
        count: u64,
        /// The policy's maximum.
        max: u64,
    },
    /// More finalizers than the policy allows.
    #[error(
        "finalizers: library has {count} finalizers, the policy allows {max}; remove __attribute__((destructor)) and static destructors"
    )]
    TooManyFinalizers {
        /// Finalizers found.
        count: u64,
        /// The policy's maximum.
        max: u64,
    },
    /// No stack protector, and the policy requires one.
    #[error(
        "stack_protector: library imports no __stack_chk_fail; compile with -fstack-protector-strong"
    )]
    NoStackProtector,
    /// A required export is not defined.
    #[error(
        "exports: library does not export {0}; define it as an extern \"C\" function with default visibility"
    )]
    MissingExport(&'static str),
    /// A required export is not an ordinary function.
    #[error(
        "exports: export {name} has symbol type {kind}, expected a function (STT_FUNC); define it as an extern \"C\" function"
    )]
    ExportNotFunction {
        /// The export.
        name: &'static str,
        /// The symbol type found.
        kind: &'static str,
    },
    /// A required export is not global, or not of default visibility.
    #[error(
        "exports: export {name} has binding {binding} and visibility {visibility}, expected GLOBAL and DEFAULT; export it with __attribute__((visibility(\"default\"))) or #[no_mangle] pub extern \"C\""
    )]
    ExportNotGlobal {
        /// The export.
        name: &'static str,
        /// Its binding.
        binding: &'static str,
        /// Its visibility.
        visibility: &'static str,
    },
}

impl InspectError {
    /// The stable name of the check that refused.
    pub fn check(&self) -> &'static str {
        match self {
            InspectError::NotElf | InspectError::Malformed(_) => "elf_header",
            InspectError::SegmentOutOfBounds { .. } => "segment_bounds",
            InspectError::ProgramHeaderTable { .. }
            | InspectError::DuplicateProgramHeader { .. }
            | InspectError::LoadSegmentsOverlap { .. } => "program_headers",
            InspectError::SegmentNotMapped { .. } => "segment_mapping",
            InspectError::DynamicNotTerminated { .. }
            | InspectError::DuplicateDynamicTag { .. }
            | InspectError::DynamicAddressNotMapped { .. }
            | InspectError::PltRelocationKind { .. } => "dynamic",
            InspectError::WrongClass { .. } => "class",
            InspectError::WrongEndianness => "endianness",
            InspectError::WrongMachine { .. } => "machine",
            InspectError::NotSharedObject(_) => "elf_type",
            InspectError::Executable | InspectError::PieExecutable => "not_executable",
            InspectError::MissingGnuStack | InspectError::ExecutableStack => "gnu_stack",
            InspectError::WritableExecutableSegment { .. } => "wx_segments",
            InspectError::WeakRelro { .. } => "relro",
            InspectError::TextRelocations => "textrel",
            InspectError::Rpath(_) => "rpath",
            InspectError::Runpath { .. } => "runpath",
            InspectError::Audit { .. } => "audit",
            InspectError::NeededNotAllowed(_) => "needed",
            InspectError::DeniedImports(_) => "imports",
            InspectError::Ifunc { .. } => "ifunc",
            InspectError::TooManyConstructors { .. } => "constructors",
            InspectError::TooManyFinalizers { .. } => "finalizers",
            InspectError::NoStackProtector => "stack_protector",
            InspectError::MissingExport(_)
            | InspectError::ExportNotFunction { .. }
            | InspectError::ExportNotGlobal { .. } => "exports",
        }
    }

    /// How to fix the build (or the policy).
    pub fn fix(&self) -> &'static str {
        match self {
            InspectError::NotElf => "give the path of an ELF shared library (lib<name>.so)",
            InspectError::Malformed(_) | InspectError::SegmentOutOfBounds { .. } => {
                "rebuild the library; the file is damaged or truncated"
            }
            InspectError::ProgramHeaderTable { .. }
            | InspectError::DuplicateProgramHeader { .. }
            | InspectError::LoadSegmentsOverlap { .. }
            | InspectError::SegmentNotMapped { .. }
            | InspectError::DynamicNotTerminated { .. }
            | InspectError::DuplicateDynamicTag { .. }
            | InspectError::DynamicAddressNotMapped { .. }
            | InspectError::PltRelocationKind { .. } => {
                "rebuild the library with a standard linker; its headers were edited or forged"
            }
            InspectError::WrongClass { .. }
            | InspectError::WrongEndianness
            | InspectError::WrongMachine { .. } => "build for this host's target",
            InspectError::NotSharedObject(_) | InspectError::Executable => "link with -shared",
            InspectError::PieExecutable => "link with -shared, not -pie",
            InspectError::MissingGnuStack | InspectError::ExecutableStack => {
                "link with -Wl,-z,noexecstack"
            }
            InspectError::WritableExecutableSegment { .. } => {
                "do not link with -N/--omagic or a linker script that merges code and data"
            }
            InspectError::WeakRelro { .. } => "link with -Wl,-z,relro -Wl,-z,now",
            InspectError::TextRelocations => {
                "compile every object with -fPIC; do not link with -Wl,-z,notext"
            }
            InspectError::Rpath(_) => {
                "remove -Wl,-rpath from the link (and never use --disable-new-dtags)"
            }
            InspectError::Runpath { .. } => {
                "remove -Wl,-rpath from the link, or allow the absolute directory in danger.elf.allow_runpaths"
            }
            InspectError::Audit { .. } => "remove -Wl,--audit/--depaudit from the link",
            InspectError::NeededNotAllowed(_) => {
                "link the dependency statically or drop it, or list it in danger.elf.allow_needed"
            }
            InspectError::DeniedImports(_) => {
                "remove the calls that spawn processes, trace or load code"
            }
            InspectError::Ifunc { .. } => {
                "remove __attribute__((ifunc))/target_clones, or set danger.elf.allow_ifunc"
            }
            InspectError::TooManyConstructors { .. } => {
                "remove __attribute__((constructor)) and static initializers, or raise elf.max_constructors"
            }
            InspectError::TooManyFinalizers { .. } => {
                "remove __attribute__((destructor)) and static destructors, or raise elf.max_finalizers"
            }
            InspectError::NoStackProtector => "compile with -fstack-protector-strong",
            InspectError::MissingExport(_)
            | InspectError::ExportNotFunction { .. }
            | InspectError::ExportNotGlobal { .. } => {
                "define the vtcode_plugin_* exports as extern \"C\" functions with default visibility"
            }
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
    pub(crate) fn into_parts(self) -> (Bundle, InspectReport) {
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
    let mut map = bundle.library().map_private().map_err(|e| {
        InspectError::Malformed(MalformedElf::Map {
            kind: e.kind(),
            os_error: e.raw_os_error(),
        })
    })?;
    let report = examine_in_place(&mut map, &Rules::new(policy, danger))?;
    drop(map);
    if let Some(refusal) = report.refusal() {
        return Err(refusal.clone());
    }
    Ok(Inspected { bundle, report })
}

#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = header::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = header::EM_AARCH64;
const HOST_CLASS: u8 = if cfg!(target_pointer_width = "64") {
    64
} else {
    32
};

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

/// [`examine`] on a private, writable view of the library (a copy-on-write mapping of the
/// sealed memfd): the section-header fields are erased in place, so only the page holding
/// the ELF header is ever copied, never the whole library.
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

/// A copy of `bytes` whose ELF header names no section headers (`e_shoff`, `e_shnum` and
/// `e_shstrndx` zeroed), after checking that every program header lies inside the file.
fn without_section_headers(bytes: &[u8]) -> Result<Vec<u8>, InspectError> {
    let is_64 = check_program_headers(bytes)?;
    let mut copy = bytes.to_vec();
    erase_section_header_fields(&mut copy, is_64)?;
    Ok(copy)
}

/// Zeroes `e_shoff`, `e_shnum` and `e_shstrndx` in place.
fn erase_section_header_fields(elf: &mut [u8], is_64: bool) -> Result<(), InspectError> {
    // (offset, width) of e_shoff, e_shnum and e_shstrndx.
    let fields: [(usize, usize); 3] = if is_64 {
        [(0x28, 8), (0x3c, 2), (0x3e, 2)]
    } else {
        [(0x20, 4), (0x30, 2), (0x32, 2)]
    };
    for (at, width) in fields {
        let end = at
            .checked_add(width)
            .ok_or(InspectError::Malformed(MalformedElf::HeaderOffsetOverflow))?;
        let field = elf
            .get_mut(at..end)
            .ok_or(InspectError::Malformed(MalformedElf::TruncatedHeader))?;
        field.fill(0);
    }
    Ok(())
}

/// Checks the ELF header and that every program header lies inside the file; returns
/// whether the file is 64-bit.
fn check_program_headers(bytes: &[u8]) -> Result<bool, InspectError> {
    let parsed = std::panic::catch_unwind(|| -> Result<bool, InspectError> {
        let hdr = Elf::parse_header(bytes).map_err(|e| MalformedElf::parse("", e))?;
        let is_64 = match hdr.e_ident.get(header::EI_CLASS).copied() {
            Some(header::ELFCLASS64) => true,
            Some(header::ELFCLASS32) => false,
            _ => return Err(InspectError::Malformed(MalformedElf::UnknownClass)),
        };
        let endian = match hdr.e_ident.get(header::EI_DATA).copied() {
            Some(header::ELFDATA2LSB) => Endian::Little,
            Some(header::ELFDATA2MSB) => Endian::Big,
            _ => return Err(InspectError::Malformed(MalformedElf::UnknownByteOrder)),
        };
        let container = if is_64 {
            Container::Big
        } else {
            Container::Little
        };
        let ctx = Ctx::new(container, endian);
        let phentsize = if is_64 {
            program_header::program_header64::SIZEOF_PHDR
        } else {
            program_header::program_header32::SIZEOF_PHDR
        };
        if usize::from(hdr.e_phentsize) != phentsize {
            return Err(InspectError::ProgramHeaderTable {
                field: "e_phentsize",
                value: u64::from(hdr.e_phentsize),
                expected: if is_64 {
                    "56 (sizeof Elf64_Phdr)"
                } else {
                    "32 (sizeof Elf32_Phdr)"
                },
            });
        }
        if hdr.e_phnum == PN_XNUM {
            // The real count would live in section header 0, which the loader never reads:
            // glibc takes 0xffff program headers at face value.
            return Err(InspectError::ProgramHeaderTable {
                field: "e_phnum",
                value: u64::from(hdr.e_phnum),
                expected: "below 0xffff (PN_XNUM, extended numbering, is not supported)",
            });
        }
        let phoff = usize::try_from(hdr.e_phoff)
            .map_err(|_| InspectError::Malformed(MalformedElf::PhoffTooLarge))?;
        let phdrs = ProgramHeader::parse(bytes, phoff, usize::from(hdr.e_phnum), ctx)
            .map_err(|e| MalformedElf::parse("program headers: ", e))?;
        check_segment_bounds(&phdrs, bytes.len())?;
        Ok(is_64)
    });
    match parsed {
        Ok(result) => result,
        Err(_) => Err(InspectError::Malformed(MalformedElf::ParserPanicked)),
    }
}

/// `e_phnum` escape value for extended numbering (the count lives in section header 0).
const PN_XNUM: u16 = 0xffff;

fn check_segment_bounds(phdrs: &[ProgramHeader], len: usize) -> Result<(), InspectError> {
    let file_len = u64::try_from(len).unwrap_or(u64::MAX);
    for (index, ph) in phdrs.iter().enumerate() {
        let end = ph.p_offset.checked_add(ph.p_filesz);
        if end.is_none_or(|end| end > file_len) {
            return Err(InspectError::SegmentOutOfBounds {
                index,
                kind: program_header::pt_to_str(ph.p_type),
                offset: ph.p_offset,
                filesz: ph.p_filesz,
                file_len,
            });
        }
        if ph.p_type == program_header::PT_LOAD && ph.p_filesz > ph.p_memsz {
            return Err(InspectError::Malformed(
                MalformedElf::FileSizeAboveMemSize {
                    index,
                    filesz: ph.p_filesz,
                    memsz: ph.p_memsz,
                },
            ));
        }
    }
    Ok(())
}

/// Collects check outcomes in order.
struct Checks(Vec<CheckResult>);

impl Checks {
    fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.0.push(CheckResult {
            check,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
            refusal: None,
        });
    }
    fn info(&mut self, check: &'static str, detail: impl Into<String>) {
        self.0.push(CheckResult {
            check,
            status: Status::Info,
            detail: detail.into(),
            fix: None,
            refusal: None,
        });
    }
    fn fail(&mut self, refusal: InspectError) {
        self.0.push(CheckResult {
            check: refusal.check(),
            status: Status::Fail,
            detail: refusal.to_string(),
            fix: Some(refusal.fix()),
            refusal: Some(refusal),
        });
    }
    /// Records `outcome`: a pass with `detail`, or the refusal.
    fn record(
        &mut self,
        check: &'static str,
        detail: impl Into<String>,
        outcome: Result<(), InspectError>,
    ) {
        match outcome {
            Ok(()) => self.pass(check, detail),
            Err(e) => self.fail(e),
        }
    }
}

/// `DT_AUXILIARY` and `DT_FILTER`: names of libraries the loader loads as filtees.
const DT_AUXILIARY: u64 = 0x7fff_fffd;
const DT_FILTER: u64 = 0x7fff_ffff;

/// Tags glibc iterates over rather than keeping the last of: they may repeat.
const REPEATABLE_TAGS: [u64; 4] = [
    dynamic::DT_NULL,
    dynamic::DT_NEEDED,
    DT_AUXILIARY,
    DT_FILTER,
];

/// Program header types the loader (or this inspector) takes only one of. glibc's
/// `_dl_map_object_from_fd` overwrites as it walks the table, so for `PT_DYNAMIC` (those with
/// a non-zero `p_filesz`), `PT_GNU_STACK`, `PT_GNU_RELRO`, `PT_TLS` and `PT_PHDR` the LAST one
/// wins, while goblin and most tools take the first; `PT_INTERP` is the kernel's business
/// (first wins there) and refused anyway; `PT_GNU_PROPERTY` is read per header.
const SINGLE_PROGRAM_HEADERS: [u32; 7] = [
    program_header::PT_DYNAMIC,
    program_header::PT_GNU_STACK,
    program_header::PT_GNU_RELRO,
    program_header::PT_INTERP,
    program_header::PT_TLS,
    program_header::PT_PHDR,
    program_header::PT_GNU_PROPERTY,
];

/// Segments whose bytes the loader reads at their address (through the `PT_LOAD` that maps
/// them) and a file-offset reader reads at `p_offset`: the two must be the same bytes.
/// `PT_NOTE` is read both ways by glibc itself (the ABI tag by offset in `open_verify`, GNU
/// property notes at the address). `PT_INTERP` is not in the list: its contents are never read
/// here (its presence alone refuses the file).
/// `PT_PHDR` is where glibc finds the program headers in memory for its second pass (notes,
/// properties) and `dl_iterate_phdr`: it must also be the table at `e_phoff`.
const MAPPED_SEGMENTS: [u32; 5] = [
    program_header::PT_DYNAMIC,
    program_header::PT_GNU_RELRO,
    program_header::PT_NOTE,
    program_header::PT_GNU_PROPERTY,
    program_header::PT_PHDR,
];

/// How far past `PT_DYNAMIC` the dynamic array is followed for the report.
const MAX_ENTRIES_PAST_DYNAMIC: u64 = 256;

/// The smallest page the loader maps with on the supported hosts.
const PAGE: u64 = 4096;

/// Word size and byte order, for the few structures read by hand.
#[derive(Clone, Copy)]
struct Layout {
    is_64: bool,
    little: bool,
}

impl Layout {
    fn word(self) -> u64 {
        if self.is_64 { 8 } else { 4 }
    }
    fn read_u32(self, bytes: &[u8], at: usize) -> Option<u32> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    }
    /// An `Elf_Addr`/`Elf_Xword`-sized value (32-bit files: a `u32`, widened).
    fn read_word(self, bytes: &[u8], at: usize) -> Option<u64> {
        if !self.is_64 {
            return self.read_u32(bytes, at).map(u64::from);
        }
        let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if self.little {
            u64::from_le_bytes(raw)
        } else {
            u64::from_be_bytes(raw)
        })
    }
}

/// The `PT_LOAD` segments: what the loader maps, and from which file bytes.
struct Loads<'p>(Vec<&'p ProgramHeader>);

impl<'p> Loads<'p> {
    fn of(phdrs: &'p [ProgramHeader]) -> Self {
        Loads(
            phdrs
                .iter()
                .filter(|ph| ph.p_type == program_header::PT_LOAD)
                .collect(),
        )
    }

    /// The file offsets of the `size` bytes at `vaddr`, when one `PT_LOAD` maps all of them
    /// from the file. Bytes past a segment's `p_filesz` are zeros in memory, not the file
    /// bytes that follow, so they do not count.
    fn file_range(&self, vaddr: u64, size: u64) -> Option<std::ops::Range<usize>> {
        let end = vaddr.checked_add(size)?;
        self.0.iter().find_map(|ph| {
            let file_end = ph.p_vaddr.checked_add(ph.p_filesz)?;
            if vaddr < ph.p_vaddr || end > file_end {
                return None;
            }
            let start = ph.p_offset.checked_add(vaddr - ph.p_vaddr)?;
            let stop = start.checked_add(size)?;
            Some(usize::try_from(start).ok()?..usize::try_from(stop).ok()?)
        })
    }
}

/// `e_phoff` and the size of the program header table.
fn phdr_table(hdr: &header::Header) -> (u64, u64) {
    (
        hdr.e_phoff,
        u64::from(hdr.e_phnum).saturating_mul(u64::from(hdr.e_phentsize)),
    )
}

/// The first loader-view refusal, from the ELF header and program headers alone (for when
/// goblin cannot parse the file at all). Symbol tables are not sized here.
fn loader_view_problem(bytes: &[u8]) -> Option<InspectError> {
    let hdr = Elf::parse_header(bytes).ok()?;
    let layout = Layout {
        is_64: hdr.e_ident.get(header::EI_CLASS).copied() == Some(header::ELFCLASS64),
        little: hdr.e_ident.get(header::EI_DATA).copied() == Some(header::ELFDATA2LSB),
    };
    let ctx = Ctx::new(
        if layout.is_64 {
            Container::Big
        } else {
            Container::Little
        },
        if layout.little {
            Endian::Little
        } else {
            Endian::Big
        },
    );
    let phoff = usize::try_from(hdr.e_phoff).ok()?;
    let phdrs = ProgramHeader::parse(bytes, phoff, usize::from(hdr.e_phnum), ctx).ok()?;
    let loads = Loads::of(&phdrs);
    let loader = loader_dynamic(bytes, &phdrs, &loads, layout);
    check_program_header_layout(&phdrs)
        .and_then(|()| check_segment_mapping(&phdrs, &loads, phdr_table(&hdr)))
        .and_then(|()| match loader.problem {
            Some(problem) => Err(problem),
            None => check_dynamic(hdr.e_machine, 0, bytes, &loader.entries, &loads, layout),
        })
        .err()
}

/// Refuses program header tables the loader and a file reader could read differently:
/// duplicates of the single-instance types, and `PT_LOAD`s out of ascending order or sharing
/// memory (glibc sizes the reservation from the first and last `PT_LOAD` and maps each over
/// it in table order, so a later one overwrites an earlier one's pages).
fn check_program_header_layout(phdrs: &[ProgramHeader]) -> Result<(), InspectError> {
    for kind in SINGLE_PROGRAM_HEADERS {
        let mut same = phdrs
            .iter()
            .enumerate()
            .filter(|(_, ph)| ph.p_type == kind)
            .map(|(i, _)| i);
        if let (Some(first), Some(second)) = (same.next(), same.next()) {
            return Err(InspectError::DuplicateProgramHeader {
                kind: program_header::pt_to_str(kind),
                first,
                second,
            });
        }
    }
    let mut previous_end: Option<u64> = None;
    for (index, ph) in phdrs
        .iter()
        .enumerate()
        .filter(|(_, ph)| ph.p_type == program_header::PT_LOAD)
    {
        // The loader maps from the start of the page holding p_vaddr.
        let map_start = ph.p_vaddr & !(PAGE - 1);
        if let Some(end) = previous_end
            && map_start < end
        {
            return Err(InspectError::LoadSegmentsOverlap {
                index,
                vaddr: ph.p_vaddr,
                previous_end: end,
            });
        }
        let end = ph
            .p_vaddr
            .checked_add(ph.p_memsz)
            .ok_or(InspectError::LoadSegmentsOverlap {
                index,
                vaddr: ph.p_vaddr,
                previous_end: u64::MAX,
            })?;
        previous_end = Some(end);
    }
    Ok(())
}

/// Refuses a segment of [`MAPPED_SEGMENTS`] whose file offset is not the one its covering
/// `PT_LOAD` maps to its address, or whose bytes are not all file bytes of that `PT_LOAD`.
fn check_segment_mapping(
    phdrs: &[ProgramHeader],
    loads: &Loads<'_>,
    table: (u64, u64),
) -> Result<(), InspectError> {
    for (index, ph) in phdrs.iter().enumerate() {
        if !MAPPED_SEGMENTS.contains(&ph.p_type) {
            continue;
        }
        let refuse = |reason| InspectError::SegmentNotMapped {
            index,
            kind: program_header::pt_to_str(ph.p_type),
            offset: ph.p_offset,
            vaddr: ph.p_vaddr,
            reason,
        };
        let mem_end = ph.p_vaddr.checked_add(ph.p_memsz.max(ph.p_filesz));
        let covering = loads.0.iter().find(|load| {
            load.p_vaddr <= ph.p_vaddr
                && mem_end
                    .zip(load.p_vaddr.checked_add(load.p_memsz))
                    .is_some_and(|(end, load_end)| end <= load_end)
        });
        let Some(load) = covering else {
            return Err(refuse("lies in no PT_LOAD"));
        };
        if ph.p_type == program_header::PT_PHDR && (ph.p_offset, ph.p_filesz) != table {
            return Err(refuse(
                "does not describe the program header table at e_phoff the loader read",
            ));
        }
        if ph.p_offset.checked_sub(load.p_offset) != Some(ph.p_vaddr - load.p_vaddr) {
            return Err(refuse(
                "has a file offset other than the one its PT_LOAD maps to its address",
            ));
        }
        let file_end = ph.p_vaddr.checked_add(ph.p_filesz);
        let load_file_end = load.p_vaddr.checked_add(load.p_filesz);
        if file_end.zip(load_file_end).is_none_or(|(e, l)| e > l) {
            return Err(refuse(
                "runs past its PT_LOAD's file bytes into memory the loader fills with zeros",
            ));
        }
    }
    Ok(())
}

/// The dynamic array as the loader reads it: from the address of the `PT_DYNAMIC` it uses
/// (the last with a non-zero `p_filesz`), through the `PT_LOAD` that maps it, entry by entry
/// up to `DT_NULL` — not from `p_offset`, and not stopping at `p_filesz`, which glibc ignores.
/// `problem` is set when that array is not exactly what `PT_DYNAMIC` describes.
#[derive(Default)]
struct LoaderDynamic {
    entries: Vec<(u64, u64)>,
    problem: Option<InspectError>,
}

fn loader_dynamic(
    bytes: &[u8],
    phdrs: &[ProgramHeader],
    loads: &Loads<'_>,
    layout: Layout,
) -> LoaderDynamic {
    let mut out = LoaderDynamic::default();
    let Some((index, ph)) = phdrs
        .iter()
        .enumerate()
        .rev()
        .find(|(_, ph)| ph.p_type == program_header::PT_DYNAMIC && ph.p_filesz != 0)
    else {
        return out;
    };
    let entry = layout.word().saturating_mul(2);
    let declared = ph.p_filesz / entry;
    // Where the loader reads: from the address to the end of its PT_LOAD's file bytes;
    // past those, memory is zero, which reads as DT_NULL.
    let Some(load) = loads.0.iter().find(|l| {
        l.p_vaddr <= ph.p_vaddr
            && l.p_vaddr
                .checked_add(l.p_filesz)
                .is_some_and(|end| ph.p_vaddr < end)
    }) else {
        out.problem = Some(InspectError::SegmentNotMapped {
            index,
            kind: "PT_DYNAMIC",
            offset: ph.p_offset,
            vaddr: ph.p_vaddr,
            reason: "lies in no PT_LOAD's file bytes",
        });
        return out;
    };
    let start = load
        .p_offset
        .checked_add(ph.p_vaddr - load.p_vaddr)
        .and_then(|s| usize::try_from(s).ok());
    let end = load
        .p_offset
        .checked_add(load.p_filesz)
        .and_then(|e| usize::try_from(e).ok());
    let Some(region) = start.zip(end).and_then(|(s, e)| bytes.get(s..e)) else {
        return out;
    };
    let step = usize::try_from(entry).unwrap_or(usize::MAX);
    // Reading on past PT_DYNAMIC only serves the report (the file is refused then): a bound
    // keeps a forged header from making this walk a whole segment.
    let limit = declared.saturating_add(MAX_ENTRIES_PAST_DYNAMIC);
    let mut at = 0usize;
    let mut terminated_at = None;
    while let (true, Some(tag), Some(value)) = (
        (out.entries.len() as u64) < limit,
        layout.read_word(region, at),
        at.checked_add(step / 2)
            .and_then(|v| layout.read_word(region, v)),
    ) {
        if tag == dynamic::DT_NULL {
            terminated_at = Some(out.entries.len() as u64);
            break;
        }
        out.entries.push((tag, value));
        at = match at.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    // Running off the file bytes means zeros (a DT_NULL) or whatever is mapped next; either
    // way PT_DYNAMIC did not describe the array.
    if terminated_at.is_none_or(|n| n >= declared) {
        out.problem = Some(InspectError::DynamicNotTerminated { entries: declared });
    }
    out
}

/// Checks what the dynamic array points at: no single-valued tag twice, every table it
/// names in the file bytes of a `PT_LOAD` (so that goblin, which translates addresses
/// through `p_memsz` and takes the first match, reads what the loader reads), and PLT
/// relocations of the kind this machine's loader reads.
fn check_dynamic(
    machine: u16,
    symbols: u64,
    bytes: &[u8],
    entries: &[(u64, u64)],
    loads: &Loads<'_>,
    layout: Layout,
) -> Result<(), InspectError> {
    let mut seen = std::collections::HashSet::new();
    for (tag, _) in entries {
        if !REPEATABLE_TAGS.contains(tag) && !seen.insert(*tag) {
            return Err(InspectError::DuplicateDynamicTag {
                tag: dynamic::tag_to_str(*tag),
            });
        }
    }
    let value = |wanted: u64| {
        entries
            .iter()
            .rev()
            .find(|(tag, _)| *tag == wanted)
            .map(|(_, v)| *v)
    };
    let mapped = |tag: u64, addr: u64, size: u64| -> Result<(), InspectError> {
        match loads.file_range(addr, size) {
            Some(_) => Ok(()),
            None => Err(InspectError::DynamicAddressNotMapped {
                tag: dynamic::tag_to_str(tag),
                addr,
                size,
            }),
        }
    };
    let word = layout.word();
    let sym_size = if layout.is_64 { 24 } else { 16 };
    let sized = [
        (dynamic::DT_STRTAB, dynamic::DT_STRSZ),
        (dynamic::DT_RELA, dynamic::DT_RELASZ),
        (dynamic::DT_REL, dynamic::DT_RELSZ),
        (dynamic::DT_JMPREL, dynamic::DT_PLTRELSZ),
        (dynamic::DT_INIT_ARRAY, dynamic::DT_INIT_ARRAYSZ),
        (dynamic::DT_FINI_ARRAY, dynamic::DT_FINI_ARRAYSZ),
        (dynamic::DT_PREINIT_ARRAY, dynamic::DT_PREINIT_ARRAYSZ),
    ];
    for (addr_tag, size_tag) in sized {
        if let Some(addr) = value(addr_tag) {
            mapped(addr_tag, addr, value(size_tag).unwrap_or(0))?;
        }
    }
    if let Some(addr) = value(dynamic::DT_SYMTAB) {
        mapped(dynamic::DT_SYMTAB, addr, symbols.saturating_mul(sym_size))?;
    }
    if let Some(addr) = value(dynamic::DT_VERSYM) {
        mapped(dynamic::DT_VERSYM, addr, symbols.saturating_mul(2))?;
    }
    for code in [dynamic::DT_INIT, dynamic::DT_FINI] {
        if let Some(addr) = value(code).filter(|a| *a != 0) {
            mapped(code, addr, 1)?;
        }
    }
    if let Some(addr) = value(dynamic::DT_HASH) {
        mapped(dynamic::DT_HASH, addr, 8)?;
        let header = loads.file_range(addr, 8).unwrap_or(0..0);
        let nbucket = layout.read_u32(bytes, header.start).unwrap_or(0);
        let nchain = layout
            .read_u32(bytes, header.start.saturating_add(4))
            .unwrap_or(0);
        let words = 2 + u64::from(nbucket) + u64::from(nchain);
        mapped(dynamic::DT_HASH, addr, words * 4)?;
    }
    if let Some(addr) = value(dynamic::DT_GNU_HASH) {
        mapped(dynamic::DT_GNU_HASH, addr, 16)?;
        let header = loads.file_range(addr, 16).unwrap_or(0..0);
        let read = |i: usize| {
            u64::from(
                layout
                    .read_u32(bytes, header.start.saturating_add(4 * i))
                    .unwrap_or(0),
            )
        };
        let (nbuckets, symoffset, bloom) = (read(0), read(1), read(2));
        let size = 16 + bloom * word + nbuckets * 4 + symbols.saturating_sub(symoffset) * 4;
        mapped(dynamic::DT_GNU_HASH, addr, size)?;
    }
    // x86-64 and aarch64 loaders read DT_JMPREL as Elf_Rela whatever DT_PLTREL says (and
    // skip it without DT_PLTREL); goblin believes DT_PLTREL.
    if value(dynamic::DT_JMPREL).is_some() && rela_only(machine) {
        let found = value(dynamic::DT_PLTREL).unwrap_or(0);
        if found != dynamic::DT_RELA {
            return Err(InspectError::PltRelocationKind { found });
        }
    }
    Ok(())
}

fn rela_only(machine: u16) -> bool {
    matches!(machine, header::EM_X86_64 | header::EM_AARCH64)
}

/// What the dynamic section says, read tag by tag as the loader does: lists in order, and
/// for a single-valued tag its last occurrence.
#[derive(Default)]
struct DynamicFacts {
    needed: Vec<String>,
    filters: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    audit: Vec<(&'static str, String)>,
    bind_now: bool,
    textrel: bool,
    pie: bool,
    init: bool,
    init_arraysz: u64,
    preinit_arraysz: u64,
    fini: bool,
    fini_arraysz: u64,
    pltgot: Option<u64>,
}

fn dynamic_facts(
    bytes: &[u8],
    entries: &[(u64, u64)],
    loads: &Loads<'_>,
) -> Result<DynamicFacts, InspectError> {
    let mut facts = DynamicFacts::default();
    if entries.is_empty() {
        return Ok(facts);
    }
    let last = |wanted: u64| {
        entries
            .iter()
            .rev()
            .find(|(tag, _)| *tag == wanted)
            .map(|(_, v)| *v)
    };
    let strtab = last(dynamic::DT_STRTAB)
        .and_then(|addr| loads.file_range(addr, last(dynamic::DT_STRSZ).unwrap_or(0)))
        .and_then(|range| bytes.get(range))
        .unwrap_or_default();
    let string = |tag: &'static str, value: u64| -> Result<String, InspectError> {
        usize::try_from(value)
            .ok()
            .and_then(|at| strtab.get(at..))
            .and_then(|rest| rest.split(|b| *b == 0).next().filter(|_| rest.contains(&0)))
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .map(str::to_owned)
            .ok_or(InspectError::Malformed(MalformedElf::StringOutsideTable {
                tag,
                offset: value,
            }))
    };
    for (tag, value) in entries {
        match *tag {
            dynamic::DT_NEEDED => facts.needed.push(string("DT_NEEDED", *value)?),
            DT_FILTER => facts.filters.push(string("DT_FILTER", *value)?),
            DT_AUXILIARY => facts.filters.push(string("DT_AUXILIARY", *value)?),
            dynamic::DT_RPATH => facts.rpath.push(string("DT_RPATH", *value)?),
            dynamic::DT_RUNPATH => facts.runpath.push(string("DT_RUNPATH", *value)?),
            dynamic::DT_AUDIT => facts.audit.push(("DT_AUDIT", string("DT_AUDIT", *value)?)),
            dynamic::DT_DEPAUDIT => facts
                .audit
                .push(("DT_DEPAUDIT", string("DT_DEPAUDIT", *value)?)),
            dynamic::DT_BIND_NOW => facts.bind_now = true,
            dynamic::DT_TEXTREL => facts.textrel = true,
            _ => {}
        }
    }
    // glibc's elf_get_dynamic_info: the last DT_FLAGS and DT_FLAGS_1 are the ones it uses.
    if let Some(flags) = last(dynamic::DT_FLAGS) {
        facts.bind_now |= flags & dynamic::DF_BIND_NOW != 0;
        facts.textrel |= flags & dynamic::DF_TEXTREL != 0;
    }
    if let Some(flags_1) = last(dynamic::DT_FLAGS_1) {
        facts.bind_now |= flags_1 & dynamic::DF_1_NOW != 0;
        facts.pie = flags_1 & dynamic::DF_1_PIE != 0;
    }
    facts.init = last(dynamic::DT_INIT).is_some_and(|v| v != 0);
    facts.init_arraysz = last(dynamic::DT_INIT_ARRAYSZ).unwrap_or(0);
    facts.preinit_arraysz = last(dynamic::DT_PREINIT_ARRAYSZ).unwrap_or(0);
    facts.fini = last(dynamic::DT_FINI).is_some_and(|v| v != 0);
    facts.fini_arraysz = last(dynamic::DT_FINI_ARRAYSZ).unwrap_or(0);
    facts.pltgot = last(dynamic::DT_PLTGOT);
    Ok(facts)
}

fn irelative_type(machine: u16) -> Option<u32> {
    match machine {
        header::EM_X86_64 => Some(reloc::R_X86_64_IRELATIVE),
        header::EM_AARCH64 => Some(reloc::R_AARCH64_IRELATIVE),
        header::EM_386 => Some(reloc::R_386_IRELATIVE),
        _ => None,
    }
}

fn examine_parsed(
    elf: &Elf<'_>,
    bytes: &[u8],
    policy: &Rules<'_>,
) -> Result<InspectReport, InspectError> {
    let len = bytes.len();
    let mut checks = Checks(Vec::new());
    let hdr = &elf.header;
    let machine_name = header::machine_to_str(hdr.e_machine);

    // Is it a shared library for this host at all?
    let class: u8 = if elf.is_64 { 64 } else { 32 };
    checks.record(
        "class",
        format!("{class}-bit"),
        if class == HOST_CLASS {
            Ok(())
        } else {
            Err(InspectError::WrongClass {
                expected: HOST_CLASS,
                actual: class,
            })
        },
    );
    let host_little = cfg!(target_endian = "little");
    checks.record(
        "endianness",
        if elf.little_endian {
            "little-endian"
        } else {
            "big-endian"
        },
        if elf.little_endian == host_little {
            Ok(())
        } else {
            Err(InspectError::WrongEndianness)
        },
    );
    checks.record(
        "machine",
        machine_name,
        if hdr.e_machine == HOST_MACHINE {
            Ok(())
        } else {
            Err(InspectError::WrongMachine {
                expected: HOST_MACHINE,
                expected_name: header::machine_to_str(HOST_MACHINE),
                actual: hdr.e_machine,
                actual_name: machine_name,
            })
        },
    );
    checks.record(
        "elf_type",
        header::et_to_str(hdr.e_type),
        if hdr.e_type == header::ET_DYN {
            Ok(())
        } else {
            Err(InspectError::NotSharedObject(hdr.e_type))
        },
    );
    let phdrs = &elf.program_headers;
    let layout = Layout {
        is_64: elf.is_64,
        little: elf.little_endian,
    };
    let loads = Loads::of(phdrs);
    let loader = loader_dynamic(bytes, phdrs, &loads, layout);
    let dynamic_outcome = match loader.problem {
        Some(problem) => Err(problem),
        None => check_dynamic(
            hdr.e_machine,
            u64::try_from(elf.dynsyms.len()).unwrap_or(u64::MAX),
            bytes,
            &loader.entries,
            &loads,
            layout,
        ),
    };
    let facts = match dynamic_facts(bytes, &loader.entries, &loads) {
        Ok(facts) => facts,
        // A dynamic section that cannot be read is refused for why it cannot be.
        Err(e) => return Err(dynamic_outcome.err().unwrap_or(e)),
    };
    // Checked before goblin parsed the file; recorded so the table lists it.
    checks.pass(
        "segment_bounds",
        format!(
            "{} program headers inside the file's {len} bytes",
            phdrs.len()
        ),
    );
    checks.record(
        "program_headers",
        format!(
            "{} program headers, one of each the loader takes one of, PT_LOADs in ascending order",
            phdrs.len()
        ),
        check_program_header_layout(phdrs),
    );
    checks.record(
        "segment_mapping",
        "PT_DYNAMIC, PT_GNU_RELRO and notes sit where their PT_LOAD maps them",
        check_segment_mapping(phdrs, &loads, phdr_table(hdr)),
    );
    checks.record(
        "dynamic",
        format!(
            "{} entries read at the address the loader reads, each table inside a PT_LOAD's file bytes",
            loader.entries.len()
        ),
        dynamic_outcome,
    );
    let has_interp = phdrs
        .iter()
        .any(|ph| ph.p_type == program_header::PT_INTERP);
    checks.record(
        "not_executable",
        "no PT_INTERP, no DF_1_PIE",
        if has_interp {
            Err(InspectError::Executable)
        } else if facts.pie {
            Err(InspectError::PieExecutable)
        } else {
            Ok(())
        },
    );
    let mut exports_outcome = Ok(());
    for name in REQUIRED_EXPORTS {
        if let Err(e) = check_export(elf, name) {
            exports_outcome = Err(e);
            break;
        }
    }
    let exports_free_string = check_export(elf, SYMBOL_FREE_STRING).is_ok();
    checks.record(
        "exports",
        if exports_free_string {
            "the ABI's functions, with vtcode_plugin_free_string"
        } else {
            "the ABI's functions, without vtcode_plugin_free_string"
        },
        exports_outcome,
    );

    // How it is built.
    // glibc takes the last PT_GNU_STACK (duplicates are refused above).
    let gnu_stack = match phdrs
        .iter()
        .rev()
        .find(|ph| ph.p_type == program_header::PT_GNU_STACK)
    {
        None => GnuStack::Missing,
        Some(ph) if ph.p_flags & program_header::PF_X != 0 => GnuStack::Executable,
        Some(_) => GnuStack::NonExecutable,
    };
    let stack_detail = match gnu_stack {
        GnuStack::NonExecutable => "PT_GNU_STACK present, not executable",
        GnuStack::Missing => "no PT_GNU_STACK (executable stack), allowed by the policy",
        GnuStack::Executable => "executable PT_GNU_STACK, allowed by the policy",
    };
    checks.record(
        "gnu_stack",
        stack_detail,
        match gnu_stack {
            GnuStack::NonExecutable => Ok(()),
            _ if policy.allow_executable_stack => Ok(()),
            GnuStack::Missing => Err(InspectError::MissingGnuStack),
            GnuStack::Executable => Err(InspectError::ExecutableStack),
        },
    );

    let wx_segments: Vec<usize> = phdrs
        .iter()
        .enumerate()
        .filter(|(_, ph)| {
            ph.p_type == program_header::PT_LOAD
                && ph.p_flags & program_header::PF_W != 0
                && ph.p_flags & program_header::PF_X != 0
        })
        .map(|(i, _)| i)
        .collect();
    let first_wx = wx_segments
        .first()
        .and_then(|&i| phdrs.get(i).map(|ph| (i, ph.p_vaddr)));
    checks.record(
        "wx_segments",
        if wx_segments.is_empty() {
            "no PT_LOAD is both writable and executable".to_owned()
        } else {
            format!("writable and executable PT_LOADs {wx_segments:?}, allowed by the policy")
        },
        match first_wx {
            Some((index, vaddr)) if !policy.allow_writable_executable_segments => {
                Err(InspectError::WritableExecutableSegment { index, vaddr })
            }
            _ => Ok(()),
        },
    );

    // What ld.so's _dl_protect_relro makes read-only: the last PT_GNU_RELRO, its start and
    // end both rounded DOWN to a page. A PT_GNU_RELRO inside one page protects nothing, and a
    // GOT outside the protected pages stays writable under BIND_NOW: neither is full RELRO,
    // whatever the header's presence suggests.
    let protected = phdrs
        .iter()
        .rev()
        .find(|ph| ph.p_type == program_header::PT_GNU_RELRO)
        .map(|ph| {
            let start = ph.p_vaddr & !(PAGE - 1);
            let end = ph.p_vaddr.saturating_add(ph.p_memsz) & !(PAGE - 1);
            start..end
        });
    let has_relro = protected.as_ref().is_some_and(|r| !r.is_empty());
    let got_protected = facts
        .pltgot
        .is_none_or(|got| protected.as_ref().is_some_and(|r| r.contains(&got)));
    let relro = match (has_relro, facts.bind_now && got_protected) {
        (false, _) => Relro::None,
        (true, false) => Relro::Partial,
        (true, true) => Relro::Full,
    };
    checks.record(
        "relro",
        format!(
            "{relro} RELRO (PT_GNU_RELRO {}, BIND_NOW {}{})",
            match &protected {
                None => "absent",
                Some(r) if r.is_empty() => "present but shorter than a page: protects nothing",
                Some(_) => "present",
            },
            if facts.bind_now { "set" } else { "unset" },
            if got_protected {
                ""
            } else {
                ", GOT outside the protected pages"
            }
        ),
        if relro >= policy.min_relro {
            Ok(())
        } else {
            Err(InspectError::WeakRelro {
                found: relro,
                required: policy.min_relro,
            })
        },
    );

    checks.record(
        "textrel",
        if facts.textrel {
            "text relocations, allowed by the policy"
        } else {
            "no text relocations"
        },
        if facts.textrel && !policy.allow_text_relocations {
            Err(InspectError::TextRelocations)
        } else {
            Ok(())
        },
    );

    let rpath_outcome = match facts.rpath.first() {
        Some(first) if !policy.allow_rpath => Err(InspectError::Rpath(first.clone())),
        _ => Ok(()),
    };
    checks.record(
        "rpath",
        if facts.rpath.is_empty() {
            "no DT_RPATH".to_owned()
        } else {
            format!("DT_RPATH {:?}, allowed by the policy", facts.rpath)
        },
        rpath_outcome,
    );

    let searched = facts
        .runpath
        .iter()
        .chain(facts.rpath.iter().filter(|_| policy.allow_rpath));
    let mut runpath_outcome = Ok(());
    'paths: for list in searched {
        for entry in list.split(':') {
            let reason = if !entry.starts_with('/') {
                Some("relative (resolved against the working directory or $ORIGIN)")
            } else if !policy.allowed_runpaths.iter().any(|a| a == entry) {
                Some("not listed in the policy's danger.elf.allow_runpaths")
            } else {
                None
            };
            if let Some(reason) = reason {
                runpath_outcome = Err(InspectError::Runpath {
                    entry: entry.to_owned(),
                    reason,
                });
                break 'paths;
            }
        }
    }
    checks.record(
        "runpath",
        if facts.runpath.is_empty() {
            "no DT_RUNPATH".to_owned()
        } else {
            format!("DT_RUNPATH {:?}", facts.runpath)
        },
        runpath_outcome,
    );

    checks.record(
        "audit",
        if facts.audit.is_empty() {
            "no DT_AUDIT or DT_DEPAUDIT".to_owned()
        } else {
            format!("{:?}, allowed by the policy", facts.audit)
        },
        match facts.audit.first() {
            Some((tag, value)) if !policy.allow_audit => Err(InspectError::Audit {
                tag,
                value: value.clone(),
            }),
            _ => Ok(()),
        },
    );

    let unlisted = facts
        .needed
        .iter()
        .chain(&facts.filters)
        .find(|n| !policy.allowed_needed.contains(&n.as_str()));
    checks.record(
        "needed",
        if facts.filters.is_empty() {
            format!("DT_NEEDED {:?}", facts.needed)
        } else {
            format!(
                "DT_NEEDED {:?}, DT_FILTER/DT_AUXILIARY {:?}",
                facts.needed, facts.filters
            )
        },
        match unlisted {
            Some(name) => Err(InspectError::NeededNotAllowed(name.clone())),
            None => Ok(()),
        },
    );

    let mut imports: Vec<String> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_shndx == 0 && s.st_bind() != sym::STB_LOCAL)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    imports.sort();
    imports.dedup();
    let denied_imports: Vec<String> = imports
        .iter()
        .filter(|i| policy.denied_imports.contains(&i.as_str()))
        .cloned()
        .collect();
    checks.record(
        "imports",
        format!("{} imports, none denied", imports.len()),
        if denied_imports.is_empty() {
            Ok(())
        } else {
            Err(InspectError::DeniedImports(denied_imports.clone()))
        },
    );

    let ifuncs: Vec<String> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_shndx != 0 && s.st_type() == sym::STT_GNU_IFUNC)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .map(str::to_owned)
        .collect();
    let irelative_relocations = match irelative_type(hdr.e_machine) {
        Some(kind) => elf
            .dynrelas
            .iter()
            .chain(elf.dynrels.iter())
            .chain(elf.pltrelocs.iter())
            .filter(|r| r.r_type == kind)
            .count(),
        None => 0,
    };
    let has_ifunc = !ifuncs.is_empty() || irelative_relocations > 0;
    checks.record(
        "ifunc",
        if has_ifunc {
            format!(
                "IFUNC symbols {ifuncs:?}, {irelative_relocations} IRELATIVE relocations, allowed by the policy"
            )
        } else {
            "no IFUNC resolvers".to_owned()
        },
        if has_ifunc && !policy.allow_ifunc {
            Err(InspectError::Ifunc {
                symbols: ifuncs.clone(),
                irelative: irelative_relocations,
            })
        } else {
            Ok(())
        },
    );

    let pointer = if elf.is_64 { 8 } else { 4 };
    let init_array = facts.init_arraysz / pointer;
    let preinit_array = facts.preinit_arraysz / pointer;
    let total = u64::from(facts.init)
        .saturating_add(init_array)
        .saturating_add(preinit_array);
    let constructors = Constructors {
        init: facts.init,
        init_array,
        preinit_array,
        total,
    };
    let ctor_detail = format!(
        "{total} (DT_INIT {}, DT_INIT_ARRAY {init_array}, DT_PREINIT_ARRAY {preinit_array}); they run inside dlopen, sandboxed",
        u8::from(facts.init)
    );
    match policy.max_constructors {
        None => checks.info("constructors", ctor_detail),
        Some(max) if total <= max => checks.pass("constructors", ctor_detail),
        Some(max) => checks.fail(InspectError::TooManyConstructors { count: total, max }),
    }

    let fini_array = facts.fini_arraysz / pointer;
    let fini_total = u64::from(facts.fini).saturating_add(fini_array);
    let atexit_imports: Vec<String> = imports
        .iter()
        .filter(|i| ATEXIT_IMPORTS.contains(&i.as_str()))
        .cloned()
        .collect();
    let finalizers = Finalizers {
        fini: facts.fini,
        fini_array,
        total: fini_total,
        atexit_imports,
    };
    let fini_detail = format!(
        "{fini_total} (DT_FINI {}, DT_FINI_ARRAY {fini_array}); they run at exit in the process that loaded the library{}",
        u8::from(facts.fini),
        if finalizers.atexit_imports.is_empty() {
            String::new()
        } else {
            format!(
                ", and {:?} imported: handlers registered at run time, not countable here",
                finalizers.atexit_imports
            )
        }
    );
    match policy.max_finalizers {
        None => checks.info("finalizers", fini_detail),
        Some(max) if fini_total <= max => checks.pass("finalizers", fini_detail),
        Some(max) => checks.fail(InspectError::TooManyFinalizers {
            count: fini_total,
            max,
        }),
    }

    let stack_protector = imports
        .iter()
        .any(|i| i == "__stack_chk_fail" || i == "__stack_chk_guard");
    let sp_detail = if stack_protector {
        "__stack_chk_fail imported"
    } else {
        "no __stack_chk_fail import (a Rust cdylib has none)"
    };
    if !policy.require_stack_protector {
        checks.info("stack_protector", sp_detail);
    } else if stack_protector {
        checks.pass("stack_protector", sp_detail);
    } else {
        checks.fail(InspectError::NoStackProtector);
    }

    Ok(InspectReport {
        machine: hdr.e_machine,
        machine_name,
        class,
        exports_free_string,
        needed: facts.needed,
        relro,
        bind_now: facts.bind_now,
        gnu_stack,
        nx: gnu_stack == GnuStack::NonExecutable,
        wx_segments,
        textrel: facts.textrel,
        rpath: facts.rpath,
        runpath: facts.runpath,
        audit: facts.audit.into_iter().map(|(_, v)| v).collect(),
        imports,
        denied_imports,
        ifuncs,
        irelative_relocations,
        constructors,
        finalizers,
        filters: facts.filters,
        stack_protector,
        checks: checks.0,
    })
}

fn check_export(elf: &Elf<'_>, name: &'static str) -> Result<(), InspectError> {
    let symbol = elf
        .dynsyms
        .iter()
        .find(|s| s.st_shndx != 0 && elf.dynstrtab.get_at(s.st_name) == Some(name))
        .ok_or(InspectError::MissingExport(name))?;
    let kind = symbol.st_type();
    if kind != sym::STT_FUNC {
        return Err(InspectError::ExportNotFunction {
            name,
            kind: sym::type_to_str(kind),
        });
    }
    let binding = symbol.st_bind();
    let visibility = symbol.st_visibility();
    if binding != sym::STB_GLOBAL || visibility != sym::STV_DEFAULT {
        return Err(InspectError::ExportNotGlobal {
            name,
            binding: sym::bind_to_str(binding),
            visibility: sym::visibility_to_str(visibility),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

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

    #[test]
    fn every_refusal_names_its_check_and_a_fix() {
        let e = InspectError::WeakRelro {
            found: Relro::Partial,
            required: Relro::Full,
        };
        let msg = e.to_string();
        assert!(msg.starts_with("relro: "), "{msg}");
        assert!(msg.contains("-Wl,-z,now"), "{msg}");
        assert!(e.fix().contains("-Wl,-z,now"));
    }
}
