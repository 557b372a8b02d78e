//! Every knob that weakens a check, in one place.
//!
//! The strict defaults are what the threat model needs: full Landlock, expired plugins
//! refused, and an ELF inspection that refuses executable stacks, writable code, lazy
//! binding, search paths, audit libraries, IFUNC resolvers, unknown dependencies and
//! process-spawning imports. A host that must give one of those up (an old kernel, an
//! air-gapped clock, a vendor library it cannot rebuild) says so here and nowhere else: in
//! the policy file's `"danger"` section, or in code through [`Danger`]'s methods, each
//! named for what it gives up. The normal `sandbox`, `expiry` and `elf` sections can only
//! keep or tighten a check, and a policy that tries to weaken one there is refused with an
//! error that points here. Every load under a knob of this module is logged as a warning
//! audit event naming each knob in force ([`Danger::in_force`]), so a weakening is visible
//! where the loads are audited, not only where the policy was written.
//!
//! This module is plain data: the stages read it, it reads none of them.

use serde::Deserialize;

/// The least RELRO the ELF inspection accepts when it is allowed below full (the only
/// level the strict default accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RelroFloor {
    /// Accept `PT_GNU_RELRO` without BIND_NOW: the PLT part of the GOT stays writable.
    Partial,
    /// Accept no RELRO at all: every relocated pointer stays writable.
    None,
}

/// The weakenings of the ELF inspection (the `danger.elf` section). The default weakens
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfDanger {
    executable_stack: bool,
    writable_executable_segments: bool,
    text_relocations: bool,
    rpath: bool,
    audit: bool,
    ifunc: bool,
    relro_floor: Option<RelroFloor>,
    imports: Vec<String>,
    runpaths: Vec<String>,
    needed: Vec<String>,
}

impl ElfDanger {
    /// Accepts a missing or executable `PT_GNU_STACK`: glibc before 2.41 then makes the
    /// whole process's stack executable (the sandbox still refuses `mprotect(PROT_EXEC)`).
    pub fn allow_executable_stack(&mut self) -> &mut Self {
        self.executable_stack = true;
        self
    }
    /// Accepts a `PT_LOAD` segment that is both writable and executable.
    pub fn allow_writable_executable_segments(&mut self) -> &mut Self {
        self.writable_executable_segments = true;
        self
    }
    /// Accepts text relocations (`DT_TEXTREL`, `DF_TEXTREL`): the loader writes into code.
    pub fn allow_text_relocations(&mut self) -> &mut Self {
        self.text_relocations = true;
        self
    }
    /// Accepts `DT_RPATH` (its entries must still pass the runpath rule, see
    /// [`ElfDanger::allow_runpaths`]).
    pub fn allow_rpath(&mut self) -> &mut Self {
        self.rpath = true;
        self
    }
    /// Accepts `DT_AUDIT`/`DT_DEPAUDIT`: an auditing library that sees every binding.
    pub fn allow_audit(&mut self) -> &mut Self {
        self.audit = true;
        self
    }
    /// Accepts IFUNC definitions and `R_*_IRELATIVE` relocations: plugin code that runs
    /// inside `dlopen`.
    pub fn allow_ifunc(&mut self) -> &mut Self {
        self.ifunc = true;
        self
    }
    /// Accepts RELRO down to `floor` instead of full.
    pub fn allow_relro_below_full(&mut self, floor: RelroFloor) -> &mut Self {
        self.relro_floor = Some(floor);
        self
    }
    /// Takes `names` off the list of denied imports (`elf.denied_imports`).
    pub fn allow_imports<I, S>(&mut self, names: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        add_all(&mut self.imports, names);
        self
    }
    /// Accepts `DT_RUNPATH` (and, with [`ElfDanger::allow_rpath`], `DT_RPATH`) entries
    /// naming these absolute directories, compared as strings. Relative entries stay
    /// refused.
    pub fn allow_runpaths<I, S>(&mut self, dirs: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        add_all(&mut self.runpaths, dirs);
        self
    }
    /// Accepts `DT_NEEDED` (and `DT_FILTER`, `DT_AUXILIARY`) names beyond the C runtime
    /// the normal `elf.allowed_needed` may list. A danger, because a needed library is code
    /// no signature and no inspection covers: its constructors run inside `dlopen`, and its
    /// exports can reach what `elf.denied_imports` keeps the plugin from importing itself
    /// (a spawn helper, a loader wrapper).
    pub fn allow_needed<I, S>(&mut self, names: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        add_all(&mut self.needed, names);
        self
    }

    /// Whether an executable stack is accepted.
    pub fn executable_stack_allowed(&self) -> bool {
        self.executable_stack
    }
    /// Whether writable and executable segments are accepted.
    pub fn writable_executable_segments_allowed(&self) -> bool {
        self.writable_executable_segments
    }
    /// Whether text relocations are accepted.
    pub fn text_relocations_allowed(&self) -> bool {
        self.text_relocations
    }
    /// Whether `DT_RPATH` is accepted.
    pub fn rpath_allowed(&self) -> bool {
        self.rpath
    }
    /// Whether `DT_AUDIT`/`DT_DEPAUDIT` are accepted.
    pub fn audit_allowed(&self) -> bool {
        self.audit
    }
    /// Whether IFUNC resolvers are accepted.
    pub fn ifunc_allowed(&self) -> bool {
        self.ifunc
    }
    /// The RELRO floor below full, if one is accepted.
    pub fn relro_floor(&self) -> Option<RelroFloor> {
        self.relro_floor
    }
    /// Imports taken off the deny list.
    pub fn allowed_imports(&self) -> &[String] {
        &self.imports
    }
    /// Absolute directories a search path entry may name.
    pub fn allowed_runpaths(&self) -> &[String] {
        &self.runpaths
    }
    /// Needed libraries accepted beyond the C runtime.
    pub fn allowed_needed(&self) -> &[String] {
        &self.needed
    }
}

fn add_all<I, S>(list: &mut Vec<String>, names: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    for name in names {
        let name = name.into();
        if !list.contains(&name) {
            list.push(name);
        }
    }
}

/// Every weakening a policy holds (the policy file's `"danger"` section). The default,
/// and [`crate::Policy::default`], weakens nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Danger {
    sandbox_best_effort: bool,
    expired_plugins_warn_only: bool,
    elf: ElfDanger,
}

impl Danger {
    /// Loads plugins with whatever Landlock the kernel offers (reported in
    /// [`crate::sandbox::Enforcement`]) instead of refusing them when it is not fully
    /// enforced; seccomp stays required.
    pub fn sandbox_best_effort(&mut self) -> &mut Self {
        self.sandbox_best_effort = true;
        self
    }
    /// Accepts expired plugins with a warning instead of refusing them (a host without a
    /// trustworthy clock). A revoked or rolled-back plugin is still refused.
    pub fn expired_plugins_warn_only(&mut self) -> &mut Self {
        self.expired_plugins_warn_only = true;
        self
    }
    /// The weakenings of the ELF inspection, to change.
    pub fn elf_mut(&mut self) -> &mut ElfDanger {
        &mut self.elf
    }

    /// Whether Landlock may be less than fully enforced.
    pub fn is_sandbox_best_effort(&self) -> bool {
        self.sandbox_best_effort
    }
    /// Whether expired plugins are accepted with a warning.
    pub fn is_expired_plugins_warn_only(&self) -> bool {
        self.expired_plugins_warn_only
    }
    /// The weakenings of the ELF inspection.
    pub fn elf(&self) -> &ElfDanger {
        &self.elf
    }

    /// Whether no knob is in force: every check at its strict default.
    pub fn is_strict(&self) -> bool {
        *self == Danger::default()
    }

    /// Each knob in force, named as in the policy file (`danger.elf.allow_ifunc`), with
    /// its value where it is more than a switch. Empty when [`Danger::is_strict`].
    pub fn in_force(&self) -> Vec<String> {
        let e = &self.elf;
        let switches = [
            (self.sandbox_best_effort, "danger.sandbox_best_effort"),
            (
                self.expired_plugins_warn_only,
                "danger.expired_plugins_warn_only",
            ),
            (e.executable_stack, "danger.elf.allow_executable_stack"),
            (
                e.writable_executable_segments,
                "danger.elf.allow_writable_executable_segments",
            ),
            (e.text_relocations, "danger.elf.allow_text_relocations"),
            (e.rpath, "danger.elf.allow_rpath"),
            (e.audit, "danger.elf.allow_audit"),
            (e.ifunc, "danger.elf.allow_ifunc"),
        ];
        let mut out: Vec<String> = switches
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| (*name).to_owned())
            .collect();
        if let Some(floor) = e.relro_floor {
            let word = match floor {
                RelroFloor::Partial => "partial",
                RelroFloor::None => "none",
            };
            out.push(format!("danger.elf.min_relro={word}"));
        }
        for (list, name) in [
            (&e.imports, "danger.elf.allow_imports"),
            (&e.runpaths, "danger.elf.allow_runpaths"),
            (&e.needed, "danger.elf.allow_needed"),
        ] {
            if !list.is_empty() {
                out.push(format!("{name}={list:?}"));
            }
        }
        out
    }
}

/// The `"danger"` section as written in the policy file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct DangerWire {
    #[serde(default)]
    sandbox_best_effort: bool,
    #[serde(default)]
    expired_plugins_warn_only: bool,
    #[serde(default)]
    elf: ElfDangerWire,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ElfDangerWire {
    #[serde(default)]
    allow_executable_stack: bool,
    #[serde(default)]
    allow_writable_executable_segments: bool,
    #[serde(default)]
    allow_text_relocations: bool,
    #[serde(default)]
    allow_rpath: bool,
    #[serde(default)]
    allow_audit: bool,
    #[serde(default)]
    allow_ifunc: bool,
    /// `"partial"` or `"none"`; `"full"` is the default and not a weakening, so it is not
    /// a word of this section.
    #[serde(default)]
    min_relro: Option<RelroFloor>,
    #[serde(default)]
    allow_imports: Vec<String>,
    #[serde(default)]
    allow_runpaths: Vec<String>,
    #[serde(default)]
    allow_needed: Vec<String>,
}

impl From<DangerWire> for Danger {
    fn from(w: DangerWire) -> Self {
        let e = w.elf;
        let mut elf = ElfDanger {
            executable_stack: e.allow_executable_stack,
            writable_executable_segments: e.allow_writable_executable_segments,
            text_relocations: e.allow_text_relocations,
            rpath: e.allow_rpath,
            audit: e.allow_audit,
            ifunc: e.allow_ifunc,
            relro_floor: e.min_relro,
            ..ElfDanger::default()
        };
        elf.allow_imports(e.allow_imports)
            .allow_runpaths(e.allow_runpaths)
            .allow_needed(e.allow_needed);
        Danger {
            sandbox_best_effort: w.sandbox_best_effort,
            expired_plugins_warn_only: w.expired_plugins_warn_only,
            elf,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(json: &str) -> Result<Danger, serde_json::Error> {
        serde_json::from_str::<DangerWire>(json).map(Danger::from)
    }

    #[test]
    fn the_default_weakens_nothing() {
        assert!(Danger::default().is_strict());
        assert!(Danger::default().in_force().is_empty());
        assert_eq!(parse("{}").unwrap(), Danger::default());
        assert_eq!(parse(r#"{"elf":{}}"#).unwrap(), Danger::default());
    }

    #[test]
    fn unknown_knobs_and_full_relro_are_not_words_of_the_section() {
        for json in [
            r#"{"allow_everything":true}"#,
            r#"{"elf":{"allow_execstack":true}}"#,
            r#"{"elf":{"min_relro":"full"}}"#,
            r#"{"elf":{"denied_imports":[]}}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }

    #[test]
    fn every_knob_is_named_in_force() {
        let d = parse(
            r#"{"sandbox_best_effort":true,"expired_plugins_warn_only":true,"elf":{
                "allow_executable_stack":true,"allow_writable_executable_segments":true,
                "allow_text_relocations":true,"allow_rpath":true,"allow_audit":true,
                "allow_ifunc":true,"min_relro":"none","allow_imports":["execve","execve"],
                "allow_runpaths":["/opt/x"],"allow_needed":["libz.so.1"]}}"#,
        )
        .unwrap();
        let mut code = Danger::default();
        code.sandbox_best_effort().expired_plugins_warn_only();
        code.elf_mut()
            .allow_executable_stack()
            .allow_writable_executable_segments()
            .allow_text_relocations()
            .allow_rpath()
            .allow_audit()
            .allow_ifunc()
            .allow_relro_below_full(RelroFloor::None)
            .allow_imports(["execve"])
            .allow_runpaths(["/opt/x"])
            .allow_needed(["libz.so.1"]);
        assert_eq!(d, code, "the file and the methods build the same value");
        assert_eq!(
            d.in_force(),
            [
                "danger.sandbox_best_effort",
                "danger.expired_plugins_warn_only",
                "danger.elf.allow_executable_stack",
                "danger.elf.allow_writable_executable_segments",
                "danger.elf.allow_text_relocations",
                "danger.elf.allow_rpath",
                "danger.elf.allow_audit",
                "danger.elf.allow_ifunc",
                "danger.elf.min_relro=none",
                r#"danger.elf.allow_imports=["execve"]"#,
                r#"danger.elf.allow_runpaths=["/opt/x"]"#,
                r#"danger.elf.allow_needed=["libz.so.1"]"#,
            ]
        );
    }
}
