//! What the library defines and links to, from its dynamic symbol table and relocations:
//! the ABI's exports, its imports (the deny list, the stack protector, exit handlers) and
//! IFUNC resolvers. goblin reads these tables; by the time these checks run, the
//! `dynamic` check has made sure they are the bytes the loader reads.

use goblin::elf::{Elf, header, reloc, sym};

use super::Rules;
use super::error::InspectError;
use super::report::Checks;
use crate::base::ffi::{REQUIRED_EXPORTS, SYMBOL_FREE_STRING};
use crate::base::host_abi::SYMBOL_HOST_V1;

/// Imports through which a library registers exit handlers at run time.
pub(super) const ATEXIT_IMPORTS: [&str; 4] = [
    "atexit",
    "on_exit",
    "__cxa_atexit",
    "__cxa_thread_atexit_impl",
];

/// `exports`: the ABI's functions, defined as ordinary global functions. Returns whether
/// the optional `vtcode_plugin_free_string` and `skillgate_plugin_host_v1` are exported too.
/// The host extension's export is optional, but the loader calls it when it is defined, so
/// a definition that is not an ordinary global function is refused like a required one.
pub(super) fn exports(checks: &mut Checks, elf: &Elf<'_>) -> (bool, bool) {
    let host = match check_export(elf, SYMBOL_HOST_V1) {
        Ok(()) => Ok(true),
        Err(InspectError::MissingExport(_)) => Ok(false),
        Err(e) => Err(e),
    };
    let outcome = REQUIRED_EXPORTS
        .into_iter()
        .try_for_each(|name| check_export(elf, name))
        .and(host.as_ref().map(|_| ()).map_err(|e| e.clone()));
    let free_string = check_export(elf, SYMBOL_FREE_STRING).is_ok();
    let host_v1 = host.unwrap_or(false);
    let detail = match (free_string, host_v1) {
        (true, true) => {
            "the ABI's functions, with vtcode_plugin_free_string and skillgate_plugin_host_v1"
        }
        (true, false) => "the ABI's functions, with vtcode_plugin_free_string",
        (false, true) => "the ABI's functions, with skillgate_plugin_host_v1",
        (false, false) => "the ABI's functions, without vtcode_plugin_free_string",
    };
    checks.record("exports", detail, outcome);
    (free_string, host_v1)
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

/// The library's imports: undefined, non-local dynamic symbols, sorted, without duplicates.
pub(super) struct Imports {
    pub(super) all: Vec<String>,
    /// Those the rules deny.
    pub(super) denied: Vec<String>,
}

/// `imports`: none the rules deny. Evidence, not a sandbox (see the module docs above).
pub(super) fn imports(checks: &mut Checks, elf: &Elf<'_>, rules: &Rules<'_>) -> Imports {
    let mut all: Vec<String> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_shndx == 0 && s.st_bind() != sym::STB_LOCAL)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    all.sort();
    all.dedup();
    let denied: Vec<String> = all
        .iter()
        .filter(|i| rules.denied_imports.contains(&i.as_str()))
        .cloned()
        .collect();
    checks.record(
        "imports",
        format!("{} imports, none denied", all.len()),
        if denied.is_empty() {
            Ok(())
        } else {
            Err(InspectError::DeniedImports(denied.clone()))
        },
    );
    Imports { all, denied }
}

/// IFUNC resolvers: code the loader runs inside `dlopen` to pick an implementation.
pub(super) struct Ifunc {
    /// Defined `STT_GNU_IFUNC` dynamic symbols.
    pub(super) symbols: Vec<String>,
    /// `R_*_IRELATIVE` dynamic relocations.
    pub(super) irelative: usize,
}

/// `ifunc`: no `STT_GNU_IFUNC` definitions and no `R_*_IRELATIVE` relocations.
pub(super) fn ifunc(checks: &mut Checks, elf: &Elf<'_>, rules: &Rules<'_>) -> Ifunc {
    let symbols: Vec<String> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_shndx != 0 && s.st_type() == sym::STT_GNU_IFUNC)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .map(str::to_owned)
        .collect();
    let irelative = match irelative_type(elf.header.e_machine) {
        Some(kind) => elf
            .dynrelas
            .iter()
            .chain(elf.dynrels.iter())
            .chain(elf.pltrelocs.iter())
            .filter(|r| r.r_type == kind)
            .count(),
        None => 0,
    };
    let found = !symbols.is_empty() || irelative > 0;
    checks.record(
        "ifunc",
        if found {
            format!(
                "IFUNC symbols {symbols:?}, {irelative} IRELATIVE relocations, allowed by the policy"
            )
        } else {
            "no IFUNC resolvers".to_owned()
        },
        if found && !rules.allow_ifunc {
            Err(InspectError::Ifunc {
                symbols: symbols.clone(),
                irelative,
            })
        } else {
            Ok(())
        },
    );
    Ifunc { symbols, irelative }
}

fn irelative_type(machine: u16) -> Option<u32> {
    match machine {
        header::EM_X86_64 => Some(reloc::R_X86_64_IRELATIVE),
        header::EM_AARCH64 => Some(reloc::R_AARCH64_IRELATIVE),
        header::EM_386 => Some(reloc::R_386_IRELATIVE),
        _ => None,
    }
}

/// `stack_protector`: an import of `__stack_chk_fail` (or `__stack_chk_guard`); reported,
/// and refused only if the policy requires it.
pub(super) fn stack_protector(checks: &mut Checks, imports: &[String], rules: &Rules<'_>) -> bool {
    let found = imports
        .iter()
        .any(|i| i == "__stack_chk_fail" || i == "__stack_chk_guard");
    let detail = if found {
        "__stack_chk_fail imported"
    } else {
        "no __stack_chk_fail import (a Rust cdylib has none)"
    };
    if !rules.require_stack_protector {
        checks.info("stack_protector", detail);
    } else if found {
        checks.pass("stack_protector", detail);
    } else {
        checks.fail(InspectError::NoStackProtector);
    }
    found
}
