//! The dynamic section, read where and how `ld.so` reads it.
//!
//! At the address of the `PT_DYNAMIC` glibc uses (the last with a non-zero `p_filesz`),
//! through the `PT_LOAD` that maps it, entry by entry up to `DT_NULL`; for a single-valued
//! tag the last occurrence counts, as in glibc's `elf_get_dynamic_info`. Then every table
//! the array names must lie in a `PT_LOAD`'s file bytes, so that goblin (which translates
//! through `p_memsz` and takes the first match) reads the bytes the loader reads.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{Elf, ProgramHeader, dynamic, header, program_header};

use super::error::{InspectError, MalformedElf};
use super::headers::{
    Layout, Loads, check_program_header_layout, check_segment_mapping, phdr_table,
};

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

/// How far past `PT_DYNAMIC` the dynamic array is followed for the report.
const MAX_ENTRIES_PAST_DYNAMIC: u64 = 256;

/// The first loader-view refusal, from the ELF header and program headers alone (for when
/// goblin cannot parse the file at all). Symbol tables are not sized here.
pub(super) fn loader_view_problem(bytes: &[u8]) -> Option<InspectError> {
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

/// The dynamic array as the loader reads it: from the address of the `PT_DYNAMIC` it uses
/// (the last with a non-zero `p_filesz`), through the `PT_LOAD` that maps it, entry by entry
/// up to `DT_NULL` — not from `p_offset`, and not stopping at `p_filesz`, which glibc ignores.
/// `problem` is set when that array is not exactly what `PT_DYNAMIC` describes.
#[derive(Default)]
pub(super) struct LoaderDynamic {
    pub(super) entries: Vec<(u64, u64)>,
    pub(super) problem: Option<InspectError>,
}

pub(super) fn loader_dynamic(
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
pub(super) fn check_dynamic(
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
pub(super) struct DynamicFacts {
    pub(super) needed: Vec<String>,
    pub(super) filters: Vec<String>,
    pub(super) rpath: Vec<String>,
    pub(super) runpath: Vec<String>,
    pub(super) audit: Vec<(&'static str, String)>,
    pub(super) bind_now: bool,
    pub(super) textrel: bool,
    pub(super) pie: bool,
    pub(super) init: bool,
    pub(super) init_arraysz: u64,
    pub(super) preinit_arraysz: u64,
    pub(super) fini: bool,
    pub(super) fini_arraysz: u64,
    pub(super) pltgot: Option<u64>,
}

pub(super) fn dynamic_facts(
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
