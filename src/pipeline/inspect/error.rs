//! Why inspection refused a library: [`InspectError`], one variant per finding, and
//! [`MalformedElf`] for a file that is not well-formed ELF at all.
//!
//! A refusal is shown to plugin authors (`skillgate inspect`, `verify`, `run`), so each
//! message says which check refused, what was found and how to fix the build; the three
//! parts are written once each ([`InspectError::check`], the problem, [`InspectError::fix`])
//! and the message is made of them.

use std::fmt;

use super::Relro;

/// What is wrong with a file that is not well-formed ELF (see [`InspectError::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedElf {
    /// goblin could not parse a part of it. `detail` is goblin's message: its error type is
    /// neither `Clone` nor comparable, which a refusal in an [`InspectReport`](super::InspectReport) must be, and
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
    /// The sealed library could not be mapped or read to be examined.
    #[error("cannot map or read the sealed library: {}", describe_io(*kind, *os_error))]
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
    pub(super) fn parse(part: &'static str, e: goblin::error::Error) -> InspectError {
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

/// Why a library was refused before loading. The message is `check: problem; fix`: the
/// check's stable name ([`InspectError::check`]), what was found, and how to fix the build
/// ([`InspectError::fix`]), each written in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InspectError {
    /// The bytes do not start with the ELF magic: not a shared library at all.
    NotElf,
    /// The bytes are ELF but goblin could not parse them, or the headers are inconsistent.
    Malformed(MalformedElf),
    /// A program header describes bytes beyond the end of the file.
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
    ProgramHeaderTable {
        /// The ELF header field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it must be.
        expected: &'static str,
    },
    /// Two program headers of a type the loader takes only one of.
    DuplicateProgramHeader {
        /// The type.
        kind: &'static str,
        /// The first one's index.
        first: usize,
        /// The second one's index.
        second: usize,
    },
    /// `PT_LOAD` segments not in ascending, non-overlapping address order.
    LoadSegmentsOverlap {
        /// The program header's index.
        index: usize,
        /// Its `p_vaddr`.
        vaddr: u64,
        /// Where the previous `PT_LOAD`'s memory ends.
        previous_end: u64,
    },
    /// A segment the loader reads at its address has file bytes elsewhere.
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
    DynamicNotTerminated {
        /// Entries inside `PT_DYNAMIC`.
        entries: u64,
    },
    /// A dynamic tag the loader keeps only one of (the last) appears twice.
    DuplicateDynamicTag {
        /// The tag.
        tag: &'static str,
    },
    /// A table the dynamic section points at is not in the file bytes a `PT_LOAD` maps.
    DynamicAddressNotMapped {
        /// The tag holding the address.
        tag: &'static str,
        /// The address.
        addr: u64,
        /// The size read there.
        size: u64,
    },
    /// `DT_PLTREL` is not `DT_RELA` on a machine whose loader reads only `Elf_Rela`.
    PltRelocationKind {
        /// The value found (or 0 when `DT_JMPREL` has no `DT_PLTREL`).
        found: u64,
    },
    /// 32-bit versus 64-bit mismatch with the host.
    WrongClass {
        /// The host's word size.
        expected: u8,
        /// The file's.
        actual: u8,
    },
    /// Byte order differs from the host's.
    WrongEndianness,
    /// Built for another machine.
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
    NotSharedObject(u16),
    /// Has `PT_INTERP`: a position-independent executable, not a library.
    Executable,
    /// `DF_1_PIE` is set: a position-independent executable, not a library.
    PieExecutable,
    /// `PT_GNU_STACK` is missing (the loader then assumes an executable stack).
    MissingGnuStack,
    /// `PT_GNU_STACK` asks for an executable stack.
    ExecutableStack,
    /// A `PT_LOAD` segment is writable and executable.
    WritableExecutableSegment {
        /// The program header's index.
        index: usize,
        /// Its `p_vaddr`.
        vaddr: u64,
    },
    /// RELRO weaker than the policy requires.
    WeakRelro {
        /// What the library has.
        found: Relro,
        /// What the policy requires.
        required: Relro,
    },
    /// Text relocations: code pages are written at load time.
    TextRelocations,
    /// `DT_RPATH` is present.
    Rpath(String),
    /// A `DT_RUNPATH` (or allowed `DT_RPATH`) entry is relative or not allowed.
    Runpath {
        /// The entry.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `DT_AUDIT` or `DT_DEPAUDIT` is present.
    Audit {
        /// `DT_AUDIT` or `DT_DEPAUDIT`.
        tag: &'static str,
        /// The library it names.
        value: String,
    },
    /// A `DT_NEEDED` entry outside the allowlist.
    NeededNotAllowed(String),
    /// Imports the policy denies.
    DeniedImports(Vec<String>),
    /// IFUNC definitions or `R_*_IRELATIVE` relocations.
    Ifunc {
        /// Defined `STT_GNU_IFUNC` dynamic symbols.
        symbols: Vec<String>,
        /// `R_*_IRELATIVE` relocations.
        irelative: usize,
    },
    /// More constructors than the policy allows.
    TooManyConstructors {
        /// Constructors found.
        count: u64,
        /// The policy's maximum.
        max: u64,
    },
    /// More finalizers than the policy allows.
    TooManyFinalizers {
        /// Finalizers found.
        count: u64,
        /// The policy's maximum.
        max: u64,
    },
    /// No stack protector, and the policy requires one.
    NoStackProtector,
    /// A required export is not defined.
    MissingExport(&'static str),
    /// A required export is not an ordinary function.
    ExportNotFunction {
        /// The export.
        name: &'static str,
        /// The symbol type found.
        kind: &'static str,
    },
    /// A required export is not global, or not of default visibility.
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
            InspectError::MissingGnuStack => "link with -Wl,-z,noexecstack",
            InspectError::ExecutableStack => {
                "link with -Wl,-z,noexecstack and fix the object that asks for it (assembly without .note.GNU-stack, nested-function trampolines)"
            }
            InspectError::WritableExecutableSegment { .. } => {
                "do not link with -N/--omagic or a linker script that merges code and data"
            }
            InspectError::WeakRelro { .. } => "link with -Wl,-z,relro -Wl,-z,now",
            InspectError::TextRelocations => {
                "compile every object with -fPIC and do not link with -Wl,-z,notext"
            }
            InspectError::Rpath(_) => {
                "remove -Wl,-rpath from the link (and never use -Wl,--disable-new-dtags)"
            }
            InspectError::Runpath { .. } => {
                "remove -Wl,-rpath from the link, or allow the absolute directory in the policy's danger.elf.allow_runpaths"
            }
            InspectError::Audit { .. } => "remove -Wl,--audit/--depaudit from the link",
            InspectError::NeededNotAllowed(_) => {
                "link that code statically, drop the dependency, or allow it in the policy's danger.elf.allow_needed"
            }
            InspectError::DeniedImports(_) => {
                "remove those calls (a plugin must not spawn processes, trace or load code), or take them off the deny list with danger.elf.allow_imports"
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
                "define the vtcode_plugin_* exports as extern \"C\" functions with default visibility (#[no_mangle] pub extern \"C\" in Rust, __attribute__((visibility(\"default\"))) in C)"
            }
        }
    }

    /// What was found, without the check's name or the fix: the middle of the message, for a
    /// tool that prints the three parts apart (`skill-sign sign` lists each failing check
    /// with its fix on a line of its own).
    pub fn problem(&self) -> impl fmt::Display + '_ {
        Problem(self)
    }

    fn write_problem(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::NotElf => {
                f.write_str("not an ELF file (no \\x7fELF magic), so not a shared library")
            }
            InspectError::Malformed(e) => write!(f, "library is not a well-formed ELF file: {e}"),
            InspectError::SegmentOutOfBounds {
                index,
                kind,
                offset,
                filesz,
                file_len,
            } => write!(
                f,
                "program header {index} ({kind}) covers file bytes {offset}..{offset}+{filesz}, beyond the file's {file_len} bytes"
            ),
            InspectError::ProgramHeaderTable {
                field,
                value,
                expected,
            } => write!(
                f,
                "{field} is {value:#x}, expected {expected}; the loader rejects or reads such a table differently"
            ),
            InspectError::DuplicateProgramHeader {
                kind,
                first,
                second,
            } => write!(
                f,
                "program headers {first} and {second} are both {kind}; the loader would use one and this inspector might read the other"
            ),
            InspectError::LoadSegmentsOverlap {
                index,
                vaddr,
                previous_end,
            } => write!(
                f,
                "PT_LOAD {index} at {vaddr:#x} starts before the previous PT_LOAD's memory ends at {previous_end:#x} (on the same 4 KiB page or earlier): the loader would map one over the other"
            ),
            InspectError::SegmentNotMapped {
                index,
                kind,
                offset,
                vaddr,
                reason,
            } => write!(
                f,
                "program header {index} ({kind}, offset {offset:#x}, address {vaddr:#x}) {reason}; the loader reads it at its address, so its file offset would show something else"
            ),
            InspectError::DynamicNotTerminated { entries } => write!(
                f,
                "the dynamic section has no DT_NULL among the {entries} entries PT_DYNAMIC spans; the loader reads on past it"
            ),
            InspectError::DuplicateDynamicTag { tag } => write!(
                f,
                "tag {tag} appears more than once; the loader keeps only the last"
            ),
            InspectError::DynamicAddressNotMapped { tag, addr, size } => write!(
                f,
                "{tag} names {size:#x} bytes at address {addr:#x}, which no PT_LOAD maps from the file; the loader would read other bytes than the file holds there"
            ),
            InspectError::PltRelocationKind { found } => write!(
                f,
                "DT_PLTREL is {found}, not DT_RELA (7); this machine's loader reads the PLT relocations as Elf_Rela regardless"
            ),
            InspectError::WrongClass { expected, actual } => write!(
                f,
                "library is {actual}-bit, this host is {expected}-bit"
            ),
            InspectError::WrongEndianness => {
                f.write_str("library byte order differs from the host's")
            }
            InspectError::WrongMachine {
                expected,
                expected_name,
                actual,
                actual_name,
            } => write!(
                f,
                "library is for machine {actual} ({actual_name}), this host is {expected} ({expected_name})"
            ),
            InspectError::NotSharedObject(kind) => write!(
                f,
                "library has ELF type {kind}, not a shared object (ET_DYN)"
            ),
            InspectError::Executable => f.write_str(
                "library has a PT_INTERP program header: it is an executable, not a shared library",
            ),
            InspectError::PieExecutable => f.write_str(
                "library has DF_1_PIE set: it is a PIE executable, not a shared library",
            ),
            InspectError::MissingGnuStack => f.write_str(
                "library has no PT_GNU_STACK program header, so the loader would make the stack executable",
            ),
            InspectError::ExecutableStack => {
                f.write_str("library asks for an executable stack (PT_GNU_STACK has PF_X)")
            }
            InspectError::WritableExecutableSegment { index, vaddr } => write!(
                f,
                "program header {index} (PT_LOAD at {vaddr:#x}) is writable and executable"
            ),
            InspectError::WeakRelro { found, required } => write!(
                f,
                "library has {found} RELRO, the policy requires {required}"
            ),
            InspectError::TextRelocations => {
                f.write_str("library has text relocations (DT_TEXTREL or DF_TEXTREL)")
            }
            InspectError::Rpath(rpath) => write!(f, "library has DT_RPATH {rpath:?}"),
            InspectError::Runpath { entry, reason } => write!(
                f,
                "library's search path entry {entry:?} is {reason}"
            ),
            InspectError::Audit { tag, value } => write!(
                f,
                "library names an auditing library ({tag} {value:?})"
            ),
            InspectError::NeededNotAllowed(name) => write!(
                f,
                "library depends on {name:?}, which the policy does not allow"
            ),
            InspectError::DeniedImports(names) => write!(
                f,
                "library imports {names:?}, which the policy denies"
            ),
            InspectError::Ifunc { symbols, irelative } => write!(
                f,
                "library has IFUNC resolvers (symbols {symbols:?}, {irelative} IRELATIVE relocations) that run inside dlopen"
            ),
            InspectError::TooManyConstructors { count, max } => write!(
                f,
                "library has {count} constructors, the policy allows {max}"
            ),
            InspectError::TooManyFinalizers { count, max } => write!(
                f,
                "library has {count} finalizers, the policy allows {max}"
            ),
            InspectError::NoStackProtector => f.write_str("library imports no __stack_chk_fail"),
            InspectError::MissingExport(name) => write!(f, "library does not export {name}"),
            InspectError::ExportNotFunction { name, kind } => write!(
                f,
                "export {name} has symbol type {kind}, expected a function (STT_FUNC)"
            ),
            InspectError::ExportNotGlobal {
                name,
                binding,
                visibility,
            } => write!(
                f,
                "export {name} has binding {binding} and visibility {visibility}, expected GLOBAL and DEFAULT"
            ),
        }
    }
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.check())?;
        self.write_problem(f)?;
        write!(f, "; {}", self.fix())
    }
}

/// [`InspectError::problem`]'s value.
struct Problem<'a>(&'a InspectError);

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_problem(f)
    }
}

/// No `source()`: the message of [`InspectError::Malformed`] already holds the
/// [`MalformedElf`] (crate::error's convention); the variant's field is the typed value.
impl std::error::Error for InspectError {}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The message is the check, the problem and the fix, each written once.
        assert_eq!(
            msg,
            format!(
                "relro: library has partial RELRO, the policy requires full; {}",
                e.fix()
            )
        );
        assert_eq!(msg.matches("-Wl,-z,now").count(), 1, "{msg}");
    }
}
