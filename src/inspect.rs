//! ELF inspection of the verified library bytes, before any `dlopen`.
//!
//! `dlopen` runs code: constructors, IFUNC resolvers, and whatever the dynamic loader is
//! told to do by the file's headers. So the library is examined as data first, from the
//! sealed bytes that passed verification, and refused unless it is a shared object for
//! this host that defines the plugin ABI's exports as ordinary global functions. A plugin
//! refused here has had none of its code run.

use goblin::elf::{Elf, header, program_header, sym};

use crate::error::Error;
use crate::ffi::{REQUIRED_EXPORTS, SYMBOL_FREE_STRING};
use crate::verify::{Bundle, Verified};

/// The ELF hardening policy (the policy file's `elf` section). Every knob has a strict
/// default that a default Rust `cdylib` passes.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ElfPolicy {}

/// What inspection found about a library that passed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct InspectReport {
    /// `e_machine` of the file.
    pub machine: u16,
    /// Whether the optional `vtcode_plugin_free_string` is exported.
    pub exports_free_string: bool,
    /// The `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
}

/// Why a library was refused before loading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The bytes are not an ELF file, or goblin could not parse them.
    #[error("library is not a well-formed ELF file: {0}")]
    Malformed(String),
    /// 32-bit versus 64-bit mismatch with the host.
    #[error("library is {actual}-bit, this host is {expected}-bit")]
    WrongClass {
        /// The host's word size.
        expected: u8,
        /// The file's.
        actual: u8,
    },
    /// Byte order differs from the host's.
    #[error("library byte order differs from the host's")]
    WrongEndianness,
    /// Built for another machine.
    #[error(
        "library is for machine {actual} ({actual_name}), this host is {expected} ({expected_name})"
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
    #[error("library has ELF type {0}, not a shared object (ET_DYN)")]
    NotSharedObject(u16),
    /// Has `PT_INTERP`: a position-independent executable, not a library.
    #[error("library has a PT_INTERP program header: it is an executable, not a shared library")]
    Executable,
    /// A required export is not defined.
    #[error("library does not export {0}")]
    MissingExport(&'static str),
    /// A required export is not an ordinary function.
    #[error("export {name} has symbol type {kind}, expected a function (STT_FUNC)")]
    ExportNotFunction {
        /// The export.
        name: &'static str,
        /// The symbol type found.
        kind: &'static str,
    },
    /// A required export is not global, or not of default visibility.
    #[error(
        "export {name} has binding {binding} and visibility {visibility}, expected GLOBAL and DEFAULT"
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

/// Inspects the verified library.
pub fn inspect(verified: Verified<Bundle>) -> Result<Inspected, Error> {
    let bundle = verified.into_inner();
    let map = bundle
        .library()
        .map()
        .map_err(|e| InspectError::Malformed(format!("cannot map the sealed library: {e}")))?;
    let report = inspect_bytes(&map)?;
    drop(map);
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

/// Inspects ELF bytes. Never panics on malformed input: goblin is run under
/// `catch_unwind` as a second line of defence, and every lookup is checked.
pub fn inspect_bytes(bytes: &[u8]) -> Result<InspectReport, InspectError> {
    let parsed = std::panic::catch_unwind(|| Elf::parse(bytes).map_err(|e| e.to_string()));
    let elf = match parsed {
        Ok(Ok(elf)) => elf,
        Ok(Err(e)) => return Err(InspectError::Malformed(e)),
        Err(_) => return Err(InspectError::Malformed("parser panicked".into())),
    };
    let class = if elf.is_64 { 64 } else { 32 };
    if class != HOST_CLASS {
        return Err(InspectError::WrongClass {
            expected: HOST_CLASS,
            actual: class,
        });
    }
    if elf.little_endian != cfg!(target_endian = "little") {
        return Err(InspectError::WrongEndianness);
    }
    if elf.header.e_machine != HOST_MACHINE {
        return Err(InspectError::WrongMachine {
            expected: HOST_MACHINE,
            expected_name: header::machine_to_str(HOST_MACHINE),
            actual: elf.header.e_machine,
            actual_name: header::machine_to_str(elf.header.e_machine),
        });
    }
    if elf.header.e_type != header::ET_DYN {
        return Err(InspectError::NotSharedObject(elf.header.e_type));
    }
    if elf
        .program_headers
        .iter()
        .any(|ph| ph.p_type == program_header::PT_INTERP)
    {
        return Err(InspectError::Executable);
    }
    for name in REQUIRED_EXPORTS {
        check_export(&elf, name)?;
    }
    let exports_free_string = check_export(&elf, SYMBOL_FREE_STRING).is_ok();
    Ok(InspectReport {
        machine: elf.header.e_machine,
        exports_free_string,
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
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

    #[test]
    fn non_elf_and_truncated_input_is_malformed_not_a_panic() {
        assert!(matches!(
            inspect_bytes(b""),
            Err(InspectError::Malformed(_))
        ));
        assert!(matches!(
            inspect_bytes(b"not an elf file at all"),
            Err(InspectError::Malformed(_))
        ));
        let own = std::fs::read("/proc/self/exe").unwrap();
        for cut in [4, 16, 63, 64, 65, 200, 4096] {
            let _ = inspect_bytes(&own[..cut.min(own.len())]);
        }
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
}
