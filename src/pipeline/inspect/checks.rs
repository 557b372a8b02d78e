//! The examination proper: every check, in the order it runs and is reported.
//!
//! [`examine_parsed`] reads as the list of checks; each is a function that records its
//! outcome (pass, fail or info) and returns what the report says about it. The order
//! matters: the first failing check is the refusal. First what the file *is* (a shared
//! object for this host, with loader-consistent headers, not an executable, exporting the
//! ABI), then how it is built ([`super::hardening`]) and what it links to
//! ([`super::symbols`]).

use goblin::elf::{Elf, header, program_header};

use super::Rules;
use super::dynamic::{DynamicFacts, check_dynamic, dynamic_facts, loader_dynamic};
use super::error::InspectError;
use super::hardening;
use super::headers::{
    Layout, Loads, check_program_header_layout, check_segment_mapping, phdr_table,
};
use super::report::{Checks, InspectReport};
use super::symbols;

#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = header::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = header::EM_AARCH64;
const HOST_CLASS: u8 = if cfg!(target_pointer_width = "64") {
    64
} else {
    32
};

/// Runs every check on a parsed file whose section headers were erased. An error only when
/// the dynamic section cannot be read at all; every other refusal is a failed check in the
/// report.
pub(super) fn examine_parsed(
    elf: &Elf<'_>,
    bytes: &[u8],
    rules: &Rules<'_>,
) -> Result<InspectReport, InspectError> {
    let mut checks = Checks::default();
    let (class, machine_name) = identity(&mut checks, elf);
    let facts = loader_view(&mut checks, elf, bytes)?;
    not_executable(&mut checks, elf, &facts);
    let (exports_free_string, exports_host_v1) = symbols::exports(&mut checks, elf);

    let phdrs = &elf.program_headers;
    let gnu_stack = hardening::gnu_stack(&mut checks, phdrs, rules);
    let wx_segments = hardening::wx_segments(&mut checks, phdrs, rules);
    let relro = hardening::relro(&mut checks, phdrs, &facts, rules);
    hardening::textrel(&mut checks, &facts, rules);
    hardening::rpath(&mut checks, &facts, rules);
    hardening::runpath(&mut checks, &facts, rules);
    hardening::audit(&mut checks, &facts, rules);
    hardening::needed(&mut checks, &facts, rules);

    let imports = symbols::imports(&mut checks, elf, rules);
    let ifunc = symbols::ifunc(&mut checks, elf, rules);
    let pointer = if elf.is_64 { 8 } else { 4 };
    let constructors = hardening::constructors(&mut checks, pointer, &facts, rules);
    let finalizers = hardening::finalizers(&mut checks, pointer, &facts, &imports.all, rules);
    let stack_protector = symbols::stack_protector(&mut checks, &imports.all, rules);

    Ok(InspectReport {
        machine: elf.header.e_machine,
        machine_name,
        class,
        exports_free_string,
        exports_host_v1,
        needed: facts.needed,
        relro,
        bind_now: facts.bind_now,
        gnu_stack,
        nx: gnu_stack == super::GnuStack::NonExecutable,
        wx_segments,
        textrel: facts.textrel,
        rpath: facts.rpath,
        runpath: facts.runpath,
        audit: facts.audit.into_iter().map(|(_, v)| v).collect(),
        imports: imports.all,
        denied_imports: imports.denied,
        ifuncs: ifunc.symbols,
        irelative_relocations: ifunc.irelative,
        constructors,
        finalizers,
        filters: facts.filters,
        stack_protector,
        checks: checks.into_results(),
    })
}

/// `class`, `endianness`, `machine`, `elf_type`: is it a shared library for this host at
/// all? Returns the class (32 or 64) and the machine's name.
fn identity(checks: &mut Checks, elf: &Elf<'_>) -> (u8, &'static str) {
    let hdr = &elf.header;
    let machine_name = header::machine_to_str(hdr.e_machine);
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
    (class, machine_name)
}

/// `segment_bounds`, `program_headers`, `segment_mapping`, `dynamic`: do the loader and a
/// file reader see the same file? Returns the dynamic section as the loader reads it; a
/// dynamic section that cannot be read at all is refused for why it cannot be.
fn loader_view(
    checks: &mut Checks,
    elf: &Elf<'_>,
    bytes: &[u8],
) -> Result<DynamicFacts, InspectError> {
    let hdr = &elf.header;
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
        Err(e) => return Err(dynamic_outcome.err().unwrap_or(e)),
    };
    // Checked before goblin parsed the file; recorded so the table lists it.
    checks.pass(
        "segment_bounds",
        format!(
            "{} program headers inside the file's {} bytes",
            phdrs.len(),
            bytes.len()
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
    Ok(facts)
}

/// `not_executable`: neither `PT_INTERP` nor `DF_1_PIE`.
fn not_executable(checks: &mut Checks, elf: &Elf<'_>, facts: &DynamicFacts) {
    let has_interp = elf
        .program_headers
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
}
