//! The inspection report: what was found about a library, and each check's outcome in
//! order. `skillgate inspect` prints it; `--json` writes it in the stable
//! `skillgate-inspect-v1` format, so fields here are only ever added.

use super::Relro;
use super::error::InspectError;

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

/// What inspection found about a library. Built by [`super::examine`] (every check, pass or
/// fail) and [`super::inspect_bytes`] (only for a library that passed them all).
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
    /// Whether the optional `skillgate_plugin_host_v1` (the host extension ABI) is exported.
    pub exports_host_v1: bool,
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

/// Collects check outcomes in order.
#[derive(Default)]
pub(super) struct Checks(Vec<CheckResult>);

impl Checks {
    pub(super) fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.0.push(CheckResult {
            check,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
            refusal: None,
        });
    }
    pub(super) fn info(&mut self, check: &'static str, detail: impl Into<String>) {
        self.0.push(CheckResult {
            check,
            status: Status::Info,
            detail: detail.into(),
            fix: None,
            refusal: None,
        });
    }
    pub(super) fn fail(&mut self, refusal: InspectError) {
        self.0.push(CheckResult {
            check: refusal.check(),
            status: Status::Fail,
            detail: refusal.to_string(),
            fix: Some(refusal.fix()),
            refusal: Some(refusal),
        });
    }
    /// The outcomes, in the order they were recorded.
    pub(super) fn into_results(self) -> Vec<CheckResult> {
        self.0
    }
    /// Records `outcome`: a pass with `detail`, or the refusal.
    pub(super) fn record(
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
