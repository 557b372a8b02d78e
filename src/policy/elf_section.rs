//! The policy file's `elf` section: its wire shape (which still names the fields that moved
//! to `danger`, so a file using one gets a clear error) and the rule that the normal `elf`
//! lists may only tighten the defaults.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::PolicyError;
use crate::pipeline::inspect::{DEFAULT_ALLOWED_NEEDED, DEFAULT_DENIED_IMPORTS, ElfPolicy};

/// The `elf` section as written. The fields that weakened a check are still named here,
/// so that a file using one gets [`PolicyError::MovedToDanger`] instead of a bare "unknown
/// field".
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ElfWire {
    #[serde(default)]
    allowed_needed: Option<Vec<String>>,
    #[serde(default)]
    denied_imports: Option<Vec<String>>,
    #[serde(default)]
    max_constructors: Option<u64>,
    #[serde(default)]
    max_finalizers: Option<u64>,
    #[serde(default)]
    require_stack_protector: bool,
    #[serde(default)]
    allow_executable_stack: Option<IgnoredAny>,
    #[serde(default)]
    allow_writable_executable_segments: Option<IgnoredAny>,
    #[serde(default)]
    min_relro: Option<IgnoredAny>,
    #[serde(default)]
    allow_text_relocations: Option<IgnoredAny>,
    #[serde(default)]
    allow_rpath: Option<IgnoredAny>,
    #[serde(default)]
    allowed_runpaths: Option<IgnoredAny>,
    #[serde(default)]
    allow_audit: Option<IgnoredAny>,
    #[serde(default)]
    allow_ifunc: Option<IgnoredAny>,
}

impl ElfWire {
    /// Refuses the fields that moved to `danger`; the lists are checked with the rest of
    /// the policy ([`Policy::check`]).
    pub(super) fn into_elf(self) -> Result<ElfPolicy, PolicyError> {
        let moved = [
            (
                self.allow_executable_stack.is_some(),
                "elf.allow_executable_stack",
                "danger.elf.allow_executable_stack",
            ),
            (
                self.allow_writable_executable_segments.is_some(),
                "elf.allow_writable_executable_segments",
                "danger.elf.allow_writable_executable_segments",
            ),
            (
                self.min_relro.is_some(),
                "elf.min_relro",
                "danger.elf.min_relro",
            ),
            (
                self.allow_text_relocations.is_some(),
                "elf.allow_text_relocations",
                "danger.elf.allow_text_relocations",
            ),
            (
                self.allow_rpath.is_some(),
                "elf.allow_rpath",
                "danger.elf.allow_rpath",
            ),
            (
                self.allowed_runpaths.is_some(),
                "elf.allowed_runpaths",
                "danger.elf.allow_runpaths",
            ),
            (
                self.allow_audit.is_some(),
                "elf.allow_audit",
                "danger.elf.allow_audit",
            ),
            (
                self.allow_ifunc.is_some(),
                "elf.allow_ifunc",
                "danger.elf.allow_ifunc",
            ),
        ];
        if let Some((_, field, danger)) = moved.into_iter().find(|(set, _, _)| *set) {
            return Err(PolicyError::MovedToDanger { field, danger });
        }
        let mut elf = ElfPolicy::default();
        if let Some(needed) = self.allowed_needed {
            elf.allowed_needed = needed;
        }
        if let Some(denied) = self.denied_imports {
            elf.denied_imports = denied;
        }
        elf.max_constructors = self.max_constructors;
        elf.max_finalizers = self.max_finalizers;
        elf.require_stack_protector = self.require_stack_protector;
        Ok(elf)
    }
}

/// The normal `elf` lists may only tighten: `denied_imports` keeps every default entry and
/// `allowed_needed` names only default entries. Anything wider is a danger knob.
pub(super) fn check_elf(elf: &ElfPolicy) -> Result<(), PolicyError> {
    if let Some(missing) = DEFAULT_DENIED_IMPORTS
        .iter()
        .find(|d| !elf.denied_imports.iter().any(|i| i == *d))
    {
        return Err(PolicyError::WideningOutsideDanger {
            field: "elf.denied_imports",
            change: "leaves out",
            entry: (*missing).to_owned(),
            danger: "danger.elf.allow_imports",
        });
    }
    if let Some(extra) = elf
        .allowed_needed
        .iter()
        .find(|n| !DEFAULT_ALLOWED_NEEDED.contains(&n.as_str()))
    {
        return Err(PolicyError::WideningOutsideDanger {
            field: "elf.allowed_needed",
            change: "adds",
            entry: extra.clone(),
            danger: "danger.elf.allow_needed",
        });
    }
    Ok(())
}
