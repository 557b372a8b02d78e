//! How the library is built: the checks the policy's `elf` section keeps or tightens and
//! only its `danger.elf` section weakens (executable stack, writable and executable
//! segments, RELRO, text relocations, search paths, auditors, dependencies) and the
//! constructors and finalizers it would run. Each reads the program headers or the dynamic
//! section as the loader does ([`super::dynamic`]), records its outcome and returns what
//! the report says.

use goblin::elf::{ProgramHeader, program_header};

use super::dynamic::DynamicFacts;
use super::error::InspectError;
use super::headers::PAGE;
use super::report::{Checks, Constructors, Finalizers, GnuStack};
use super::symbols::ATEXIT_IMPORTS;
use super::{Relro, Rules};

/// `gnu_stack`: glibc takes the last `PT_GNU_STACK` (duplicates are refused before this);
/// without one the loader makes the stack executable.
pub(super) fn gnu_stack(
    checks: &mut Checks,
    phdrs: &[ProgramHeader],
    rules: &Rules<'_>,
) -> GnuStack {
    let gnu_stack = match phdrs
        .iter()
        .rev()
        .find(|ph| ph.p_type == program_header::PT_GNU_STACK)
    {
        None => GnuStack::Missing,
        Some(ph) if ph.p_flags & program_header::PF_X != 0 => GnuStack::Executable,
        Some(_) => GnuStack::NonExecutable,
    };
    let detail = match gnu_stack {
        GnuStack::NonExecutable => "PT_GNU_STACK present, not executable",
        GnuStack::Missing => "no PT_GNU_STACK (executable stack), allowed by the policy",
        GnuStack::Executable => "executable PT_GNU_STACK, allowed by the policy",
    };
    checks.record(
        "gnu_stack",
        detail,
        match gnu_stack {
            GnuStack::NonExecutable => Ok(()),
            _ if rules.allow_executable_stack => Ok(()),
            GnuStack::Missing => Err(InspectError::MissingGnuStack),
            GnuStack::Executable => Err(InspectError::ExecutableStack),
        },
    );
    gnu_stack
}

/// `wx_segments`: the indexes of `PT_LOAD`s both writable and executable.
pub(super) fn wx_segments(
    checks: &mut Checks,
    phdrs: &[ProgramHeader],
    rules: &Rules<'_>,
) -> Vec<usize> {
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
            Some((index, vaddr)) if !rules.allow_writable_executable_segments => {
                Err(InspectError::WritableExecutableSegment { index, vaddr })
            }
            _ => Ok(()),
        },
    );
    wx_segments
}

/// `relro`: what ld.so's `_dl_protect_relro` makes read-only is the last `PT_GNU_RELRO`,
/// its start and end both rounded DOWN to a page. A `PT_GNU_RELRO` inside one page
/// protects nothing, and a GOT outside the protected pages stays writable under BIND_NOW:
/// neither is full RELRO, whatever the header's presence suggests.
pub(super) fn relro(
    checks: &mut Checks,
    phdrs: &[ProgramHeader],
    facts: &DynamicFacts,
    rules: &Rules<'_>,
) -> Relro {
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
        if relro >= rules.min_relro {
            Ok(())
        } else {
            Err(InspectError::WeakRelro {
                found: relro,
                required: rules.min_relro,
            })
        },
    );
    relro
}

/// `textrel`: `DT_TEXTREL` or `DF_TEXTREL`, code pages written at load time.
pub(super) fn textrel(checks: &mut Checks, facts: &DynamicFacts, rules: &Rules<'_>) {
    checks.record(
        "textrel",
        if facts.textrel {
            "text relocations, allowed by the policy"
        } else {
            "no text relocations"
        },
        if facts.textrel && !rules.allow_text_relocations {
            Err(InspectError::TextRelocations)
        } else {
            Ok(())
        },
    );
}

/// `rpath`: any `DT_RPATH` (searched before `LD_LIBRARY_PATH`).
pub(super) fn rpath(checks: &mut Checks, facts: &DynamicFacts, rules: &Rules<'_>) {
    checks.record(
        "rpath",
        if facts.rpath.is_empty() {
            "no DT_RPATH".to_owned()
        } else {
            format!("DT_RPATH {:?}, allowed by the policy", facts.rpath)
        },
        match facts.rpath.first() {
            Some(first) if !rules.allow_rpath => Err(InspectError::Rpath(first.clone())),
            _ => Ok(()),
        },
    );
}

/// `runpath`: every entry of `DT_RUNPATH` (and of an allowed `DT_RPATH`) must be absolute
/// and listed in the danger knob.
pub(super) fn runpath(checks: &mut Checks, facts: &DynamicFacts, rules: &Rules<'_>) {
    let searched = facts
        .runpath
        .iter()
        .chain(facts.rpath.iter().filter(|_| rules.allow_rpath));
    let mut outcome = Ok(());
    'paths: for list in searched {
        for entry in list.split(':') {
            let reason = if !entry.starts_with('/') {
                Some("relative (resolved against the working directory or $ORIGIN)")
            } else if !rules.allowed_runpaths.iter().any(|a| a == entry) {
                Some("not listed in the policy's danger.elf.allow_runpaths")
            } else {
                None
            };
            if let Some(reason) = reason {
                outcome = Err(InspectError::Runpath {
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
        outcome,
    );
}

/// `audit`: `DT_AUDIT` or `DT_DEPAUDIT`, a library the loader runs with hooks into every
/// symbol binding.
pub(super) fn audit(checks: &mut Checks, facts: &DynamicFacts, rules: &Rules<'_>) {
    checks.record(
        "audit",
        if facts.audit.is_empty() {
            "no DT_AUDIT or DT_DEPAUDIT".to_owned()
        } else {
            format!("{:?}, allowed by the policy", facts.audit)
        },
        match facts.audit.first() {
            Some((tag, value)) if !rules.allow_audit => Err(InspectError::Audit {
                tag,
                value: value.clone(),
            }),
            _ => Ok(()),
        },
    );
}

/// `needed`: every `DT_NEEDED`, `DT_FILTER` and `DT_AUXILIARY` name must be allowed.
pub(super) fn needed(checks: &mut Checks, facts: &DynamicFacts, rules: &Rules<'_>) {
    let unlisted = facts
        .needed
        .iter()
        .chain(&facts.filters)
        .find(|n| !rules.allowed_needed.contains(&n.as_str()));
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
}

/// `constructors`: counted and reported; refused only above the policy's maximum.
pub(super) fn constructors(
    checks: &mut Checks,
    pointer: u64,
    facts: &DynamicFacts,
    rules: &Rules<'_>,
) -> Constructors {
    let init_array = facts.init_arraysz / pointer;
    let preinit_array = facts.preinit_arraysz / pointer;
    let total = u64::from(facts.init)
        .saturating_add(init_array)
        .saturating_add(preinit_array);
    let detail = format!(
        "{total} (DT_INIT {}, DT_INIT_ARRAY {init_array}, DT_PREINIT_ARRAY {preinit_array}); they run inside dlopen, sandboxed",
        u8::from(facts.init)
    );
    match rules.max_constructors {
        None => checks.info("constructors", detail),
        Some(max) if total <= max => checks.pass("constructors", detail),
        Some(max) => checks.fail(InspectError::TooManyConstructors { count: total, max }),
    }
    Constructors {
        init: facts.init,
        init_array,
        preinit_array,
        total,
    }
}

/// `finalizers`: `DT_FINI` and `DT_FINI_ARRAY` entries, counted and reported (refused only
/// above the policy's maximum), and the imports that register more at run time.
pub(super) fn finalizers(
    checks: &mut Checks,
    pointer: u64,
    facts: &DynamicFacts,
    imports: &[String],
    rules: &Rules<'_>,
) -> Finalizers {
    let fini_array = facts.fini_arraysz / pointer;
    let total = u64::from(facts.fini).saturating_add(fini_array);
    let atexit_imports: Vec<String> = imports
        .iter()
        .filter(|i| ATEXIT_IMPORTS.contains(&i.as_str()))
        .cloned()
        .collect();
    let detail = format!(
        "{total} (DT_FINI {}, DT_FINI_ARRAY {fini_array}); they run at exit in the process that loaded the library{}",
        u8::from(facts.fini),
        if atexit_imports.is_empty() {
            String::new()
        } else {
            format!(
                ", and {atexit_imports:?} imported: handlers registered at run time, not countable here"
            )
        }
    );
    match rules.max_finalizers {
        None => checks.info("finalizers", detail),
        Some(max) if total <= max => checks.pass("finalizers", detail),
        Some(max) => checks.fail(InspectError::TooManyFinalizers { count: total, max }),
    }
    Finalizers {
        fini: facts.fini,
        fini_array,
        total,
        atexit_imports,
    }
}
