//! The ELF header and the program headers, read as the loader reads them.
//!
//! Before goblin parses anything, every program header must lie inside the file and the
//! section-header fields are erased (the loader never reads section headers, so they may
//! say anything). Then the places where the loader and a file reader could see different
//! segments are refused: a second program header of a type glibc takes the last of,
//! `PT_LOAD`s out of order or sharing a page, and segments (`PT_DYNAMIC`, `PT_GNU_RELRO`,
//! notes, `PT_PHDR`) whose file offset is not where their `PT_LOAD` maps their address.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::{Elf, ProgramHeader, header, program_header};

use super::error::{InspectError, MalformedElf};

/// A copy of `bytes` whose ELF header names no section headers (`e_shoff`, `e_shnum` and
/// `e_shstrndx` zeroed), after checking that every program header lies inside the file.
pub(super) fn without_section_headers(bytes: &[u8]) -> Result<Vec<u8>, InspectError> {
    let is_64 = check_program_headers(bytes)?;
    let mut copy = bytes.to_vec();
    erase_section_header_fields(&mut copy, is_64)?;
    Ok(copy)
}

/// Zeroes `e_shoff`, `e_shnum` and `e_shstrndx` in place.
pub(super) fn erase_section_header_fields(elf: &mut [u8], is_64: bool) -> Result<(), InspectError> {
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
pub(super) fn check_program_headers(bytes: &[u8]) -> Result<bool, InspectError> {
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

/// The smallest page the loader maps with on the supported hosts.
pub(super) const PAGE: u64 = 4096;

/// Word size and byte order, for the few structures read by hand.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) is_64: bool,
    pub(super) little: bool,
}

impl Layout {
    pub(super) fn word(self) -> u64 {
        if self.is_64 { 8 } else { 4 }
    }
    pub(super) fn read_u32(self, bytes: &[u8], at: usize) -> Option<u32> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    }
    /// An `Elf_Addr`/`Elf_Xword`-sized value (32-bit files: a `u32`, widened).
    pub(super) fn read_word(self, bytes: &[u8], at: usize) -> Option<u64> {
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
pub(super) struct Loads<'p>(pub(super) Vec<&'p ProgramHeader>);

impl<'p> Loads<'p> {
    pub(super) fn of(phdrs: &'p [ProgramHeader]) -> Self {
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
    pub(super) fn file_range(&self, vaddr: u64, size: u64) -> Option<std::ops::Range<usize>> {
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
pub(super) fn phdr_table(hdr: &header::Header) -> (u64, u64) {
    (
        hdr.e_phoff,
        u64::from(hdr.e_phnum).saturating_mul(u64::from(hdr.e_phentsize)),
    )
}

/// Refuses program header tables the loader and a file reader could read differently:
/// duplicates of the single-instance types, and `PT_LOAD`s out of ascending order or sharing
/// memory (glibc sizes the reservation from the first and last `PT_LOAD` and maps each over
/// it in table order, so a later one overwrites an earlier one's pages).
pub(super) fn check_program_header_layout(phdrs: &[ProgramHeader]) -> Result<(), InspectError> {
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
pub(super) fn check_segment_mapping(
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
