//! Host policy: which roots are trusted, where the trust store is, how plugins run, and
//! the size and time limits every stage enforces.
//!
//! A policy file is written by the host's administrator, so it is trusted but not
//! assumed to be well formed: it is parsed strictly (`deny_unknown_fields`, size cap), so a
//! misspelled knob is an error instead of a silently ignored weakening. The wire type is
//! private; [`Policy::from_json`] validates every value and resolves relative paths against
//! the policy file's directory. A [`Policy`] built or changed in code (its fields are
//! public) is checked by the same [`Policy::validate`] when a [`crate::Gate`] is made from
//! it, so a limit out of range cannot reach a call either way.
//!
//! A knob that weakens a check is not a field of the normal sections: it lives in the
//! `"danger"` section ([`crate::danger`]). The fields that used to weaken a check from the
//! normal sections (`sandbox.require`, `expiry.warn_only`, `elf.allow_*`, `elf.min_relro`,
//! `elf.allowed_runpaths`) are refused by name with [`PolicyError::MovedToDanger`], and a
//! list that would widen a check (`elf.denied_imports` without a default entry,
//! `elf.allowed_needed` with an entry beyond the defaults) with
//! [`PolicyError::WideningOutsideDanger`], so an old policy file fails loudly instead of
//! silently meaning something else.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;

pub use crate::base::settings::{Isolation, LimitError, Limits};
use crate::danger::{Danger, DangerWire};
use crate::pipeline::inspect::{DEFAULT_ALLOWED_NEEDED, DEFAULT_DENIED_IMPORTS, ElfPolicy};
pub use crate::sandbox::{Requirement, SandboxPolicy};

mod trust_section;
pub use trust_section::TrustSectionError;

/// Largest policy file accepted.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SandboxWire {
    #[serde(default)]
    read: Vec<PathBuf>,
    #[serde(default)]
    read_write: Vec<PathBuf>,
    #[serde(default)]
    connect_tcp: Vec<u16>,
    /// Moved: `danger.sandbox_best_effort` (full enforcement is the only normal setting).
    #[serde(default)]
    require: Option<IgnoredAny>,
}

/// A validated host policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Directories beneath which plugins may live. Empty means nothing loads.
    pub trusted_roots: Vec<PathBuf>,
    /// The trust store: a directory of public key files.
    pub keys: PathBuf,
    /// How loaded plugins are isolated.
    pub isolation: Isolation,
    /// Size, count and time limits.
    pub limits: Limits,
    /// What plugins may be granted inside their sandbox.
    pub sandbox: SandboxPolicy,
    /// The worker executable for process isolation; found beside the host executable
    /// when unset (see [`crate::exec::worker::find_worker`]).
    pub worker: Option<PathBuf>,
    /// ELF hardening checks applied before any `dlopen` (the `elf` section).
    pub elf: ElfPolicy,
    /// Signer rules, revocation, rollback and expiry (`signers`, `revoked_keys`,
    /// `state_dir`, `min_versions`, `expiry`).
    pub trust: crate::trust::rules::TrustPolicy,
    /// Every knob that weakens a check (the `danger` section); none by default.
    pub danger: Danger,
}

impl Default for Policy {
    /// No trusted roots and no trust store: a host built from it refuses every plugin
    /// until both are set.
    fn default() -> Self {
        Policy {
            trusted_roots: Vec::new(),
            keys: PathBuf::new(),
            isolation: Isolation::Process,
            limits: Limits::default(),
            sandbox: SandboxPolicy::default(),
            worker: None,
            elf: ElfPolicy::default(),
            trust: crate::trust::rules::TrustPolicy::default(),
            danger: Danger::default(),
        }
    }
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy {path}: {source}")]
    Io {
        /// The policy file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The policy file is larger than [`MAX_POLICY_BYTES`].
    #[error("policy {path} is {size} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// The policy file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The JSON did not match the policy schema (unknown fields included).
    #[error("policy is not valid: {0}")]
    Syntax(serde_json::Error),
    /// A value of the trust fields (`signers`, `revoked_keys`, `min_versions`) is not a
    /// valid setting.
    #[error("policy is not valid: {0}")]
    TrustSection(#[source] TrustSectionError),
    /// A limit is zero or above its ceiling.
    #[error("policy limit {name} = {value} is out of range (1..={max})")]
    LimitOutOfRange {
        /// The limit's field name.
        name: &'static str,
        /// The value given.
        value: u64,
        /// The ceiling.
        max: u64,
    },
    /// No trust store directory was given.
    #[error("policy names no trust store (`keys`)")]
    NoTrustStore,
    /// A field that weakened a check from a normal section, now refused there.
    #[error(
        "policy field {field} is no longer accepted: its strict setting is the default, and the weakening it allowed is set as {danger} in the policy's \"danger\" section"
    )]
    MovedToDanger {
        /// The refused field (`elf.allow_ifunc`).
        field: &'static str,
        /// Where its weakening is set now (`danger.elf.allow_ifunc`).
        danger: &'static str,
    },
    /// A list of a normal section that would widen a check beyond its defaults.
    #[error(
        "policy {field} {change} {entry:?}, which weakens a check: list it in {danger} in the policy's \"danger\" section instead"
    )]
    WideningOutsideDanger {
        /// The list (`elf.denied_imports`).
        field: &'static str,
        /// What the list does to the default (`leaves out`, `adds`).
        change: &'static str,
        /// The entry.
        entry: String,
        /// Where the widening is set (`danger.elf.allow_imports`).
        danger: &'static str,
    },
}

impl From<LimitError> for PolicyError {
    fn from(e: LimitError) -> Self {
        PolicyError::LimitOutOfRange {
            name: e.name,
            value: e.value,
            max: e.max,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyWire {
    trusted_roots: Vec<PathBuf>,
    keys: PathBuf,
    isolation: Isolation,
    #[serde(default)]
    limits: LimitsWire,
    #[serde(default)]
    sandbox: SandboxWire,
    #[serde(default)]
    worker: Option<PathBuf>,
    #[serde(default)]
    elf: ElfWire,
    #[serde(default)]
    danger: DangerWire,
    #[serde(default)]
    signers: Option<Vec<trust_section::SignerRuleWire>>,
    #[serde(default)]
    revoked_keys: Vec<String>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    min_versions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    expiry: trust_section::ExpiryWire,
}

/// The `elf` section as written. The fields that weakened a check are still named here,
/// so that a file using one gets [`PolicyError::MovedToDanger`] instead of a bare "unknown
/// field".
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ElfWire {
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
    fn validate(self) -> Result<ElfPolicy, PolicyError> {
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
        check_elf(&elf)?;
        Ok(elf)
    }
}

/// The normal `elf` lists may only tighten: `denied_imports` keeps every default entry and
/// `allowed_needed` names only default entries. Anything wider is a danger knob.
fn check_elf(elf: &ElfPolicy) -> Result<(), PolicyError> {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsWire {
    manifest_bytes: Option<u64>,
    signature_bytes: Option<u64>,
    library_bytes: Option<u64>,
    file_bytes: Option<u64>,
    files: Option<usize>,
    depth: Option<usize>,
    output_bytes: Option<usize>,
    call_timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
    cpu_seconds: Option<u64>,
    threads: Option<u64>,
}

impl LimitsWire {
    fn validate(self) -> Result<Limits, PolicyError> {
        let d = Limits::default();
        let limits = Limits {
            manifest_bytes: self.manifest_bytes.unwrap_or(d.manifest_bytes),
            signature_bytes: self.signature_bytes.unwrap_or(d.signature_bytes),
            library_bytes: self.library_bytes.unwrap_or(d.library_bytes),
            file_bytes: self.file_bytes.unwrap_or(d.file_bytes),
            files: self.files.unwrap_or(d.files),
            depth: self.depth.unwrap_or(d.depth),
            output_bytes: self.output_bytes.unwrap_or(d.output_bytes),
            call_timeout_ms: self.call_timeout_ms.unwrap_or(d.call_timeout_ms),
            memory_bytes: self.memory_bytes.unwrap_or(d.memory_bytes),
            cpu_seconds: self.cpu_seconds.unwrap_or(d.cpu_seconds),
            threads: self.threads.unwrap_or(d.threads),
        };
        limits.validate()?;
        Ok(limits)
    }
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

impl Policy {
    /// Checks the values a policy built in code could get wrong, exactly as
    /// [`Policy::from_json`] checks a file's: the limits ([`Limits::validate`]) and the
    /// `elf` lists, which may only tighten (a widening belongs in [`Policy::danger`]); the
    /// trust section can only be built validated. [`crate::Gate`] (and so
    /// [`crate::PluginLoader`]) calls it, so an out-of-range limit never reaches a call.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.limits.validate()?;
        check_elf(&self.elf)
    }

    /// Reads and validates a policy file. Relative paths in it resolve against the
    /// directory that holds the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        use crate::base::capped::{CappedError, Links, read_capped};
        let path = path.as_ref();
        let io = |source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = read_capped(path, MAX_POLICY_BYTES, Links::Follow).map_err(|e| match e {
            CappedError::Open { source, .. } | CappedError::Read { source, .. } => io(source),
            CappedError::TooLarge { found, .. } => PolicyError::TooLarge {
                path: path.to_path_buf(),
                size: found,
                max: MAX_POLICY_BYTES,
            },
            // A FIFO or device as the policy: the typed error stays reachable as the source.
            not_regular @ CappedError::NotRegularFile { .. } => io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                not_regular,
            )),
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&base).map_err(io)?;
        Self::from_json(&bytes, &base)
    }

    /// Parses and validates policy JSON; relative paths resolve against `base_dir`.
    pub fn from_json(bytes: &[u8], base_dir: &Path) -> Result<Self, PolicyError> {
        let wire: PolicyWire = serde_json::from_slice(bytes).map_err(PolicyError::Syntax)?;
        if wire.keys.as_os_str().is_empty() {
            return Err(PolicyError::NoTrustStore);
        }
        if wire.sandbox.require.is_some() {
            return Err(PolicyError::MovedToDanger {
                field: "sandbox.require",
                danger: "danger.sandbox_best_effort",
            });
        }
        Ok(Policy {
            trusted_roots: wire
                .trusted_roots
                .into_iter()
                .map(|p| resolve(base_dir, p))
                .collect(),
            keys: resolve(base_dir, wire.keys),
            isolation: wire.isolation,
            limits: wire.limits.validate()?,
            sandbox: SandboxPolicy {
                read: wire
                    .sandbox
                    .read
                    .into_iter()
                    .map(|p| resolve(base_dir, p))
                    .collect(),
                read_write: wire
                    .sandbox
                    .read_write
                    .into_iter()
                    .map(|p| resolve(base_dir, p))
                    .collect(),
                connect_tcp: wire.sandbox.connect_tcp,
            },
            worker: wire.worker.map(|p| resolve(base_dir, p)),
            elf: wire.elf.validate()?,
            trust: trust_section::trust_policy(
                wire.signers,
                wire.revoked_keys,
                wire.state_dir.map(|p| resolve(base_dir, p)),
                wire.min_versions,
                wire.expiry,
            )?,
            danger: wire.danger.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_policy_directory() {
        let p = Policy::from_json(
            br#"{"trusted_roots":["../skills","/abs"],"keys":"../keys","isolation":"thread"}"#,
            Path::new("/etc/skillgate/policy"),
        )
        .unwrap();
        assert_eq!(
            p.trusted_roots[0],
            Path::new("/etc/skillgate/policy/../skills")
        );
        assert_eq!(p.trusted_roots[1], Path::new("/abs"));
        assert_eq!(p.keys, Path::new("/etc/skillgate/policy/../keys"));
        assert_eq!(p.limits, Limits::default());
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        for json in [
            r#"{"trusted_roots":[],"keys":"k","isolation":"thread","allow_unsigned":true}"#,
            r#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"output_byte":5}}"#,
        ] {
            let err = Policy::from_json(json.as_bytes(), Path::new("/")).unwrap_err();
            assert!(matches!(err, PolicyError::Syntax(_)), "{json}: {err:?}");
        }
    }

    #[test]
    fn required_fields_and_isolation_words() {
        let err =
            Policy::from_json(br#"{"trusted_roots":[],"keys":"k"}"#, Path::new("/")).unwrap_err();
        assert!(matches!(err, PolicyError::Syntax(_)));
        let err = Policy::from_json(
            br#"{"trusted_roots":[],"keys":"k","isolation":"none"}"#,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::Syntax(_)));
        let p = Policy::from_json(
            br#"{"trusted_roots":[],"keys":"k","isolation":"process"}"#,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(p.isolation, Isolation::Process);
        let err = Policy::from_json(
            br#"{"trusted_roots":[],"keys":"","isolation":"thread"}"#,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::NoTrustStore));
    }

    #[test]
    fn limits_must_be_positive_and_below_their_ceiling() {
        let err = Policy::from_json(
            br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"output_bytes":0}}"#,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            PolicyError::LimitOutOfRange {
                name: "output_bytes",
                ..
            }
        ));
        let err = Policy::from_json(
            br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"library_bytes":99999999999999}}"#,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            PolicyError::LimitOutOfRange {
                name: "library_bytes",
                ..
            }
        ));
        let p = Policy::from_json(
            br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"output_bytes":10}}"#,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(p.limits.output_bytes, 10);
        for threads in ["0", "4097"] {
            let json = format!(
                r#"{{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{{"threads":{threads}}}}}"#
            );
            let err = Policy::from_json(json.as_bytes(), Path::new("/")).unwrap_err();
            assert!(matches!(
                err,
                PolicyError::LimitOutOfRange {
                    name: "threads",
                    max: 4096,
                    ..
                }
            ));
        }
        let p = Policy::from_json(
            br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"threads":4096}}"#,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(p.limits.threads, 4096);
        assert_eq!(Limits::default().threads, 64);
    }

    #[test]
    fn the_shipped_default_policy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/default.json");
        let p = Policy::from_file(&path).unwrap();
        assert_eq!(p.isolation, Isolation::Process);
        assert_eq!(p.limits, Limits::default());
        assert_eq!(p.isolation, Policy::default().isolation);
        assert!(p.danger.is_strict(), "{:?}", p.danger.in_force());
        assert_eq!(p.elf, ElfPolicy::default());
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(
            raw.get("danger").is_none(),
            "the default policy has no danger section"
        );
        assert!(Policy::default().danger.is_strict());
    }

    const BASE: &str = r#""trusted_roots":[],"keys":"k","isolation":"thread""#;

    fn parse(sections: &str) -> Result<Policy, PolicyError> {
        Policy::from_json(format!("{{{BASE},{sections}}}").as_bytes(), Path::new("/"))
    }

    #[test]
    fn every_weakening_knob_is_refused_outside_danger_with_a_pointer() {
        for (json, moved, to) in [
            (
                r#""sandbox":{"require":"best_effort"}"#,
                "sandbox.require",
                "danger.sandbox_best_effort",
            ),
            // The strict word too: the field is gone, not just its weak value.
            (
                r#""sandbox":{"require":"full"}"#,
                "sandbox.require",
                "danger.sandbox_best_effort",
            ),
            (
                r#""expiry":{"warn_only":true}"#,
                "expiry.warn_only",
                "danger.expired_plugins_warn_only",
            ),
            (
                r#""elf":{"allow_executable_stack":true}"#,
                "elf.allow_executable_stack",
                "danger.elf.allow_executable_stack",
            ),
            (
                r#""elf":{"allow_writable_executable_segments":true}"#,
                "elf.allow_writable_executable_segments",
                "danger.elf.allow_writable_executable_segments",
            ),
            (
                r#""elf":{"min_relro":"partial"}"#,
                "elf.min_relro",
                "danger.elf.min_relro",
            ),
            (
                r#""elf":{"min_relro":"full"}"#,
                "elf.min_relro",
                "danger.elf.min_relro",
            ),
            (
                r#""elf":{"allow_text_relocations":false}"#,
                "elf.allow_text_relocations",
                "danger.elf.allow_text_relocations",
            ),
            (
                r#""elf":{"allow_rpath":true}"#,
                "elf.allow_rpath",
                "danger.elf.allow_rpath",
            ),
            (
                r#""elf":{"allowed_runpaths":["/opt/x"]}"#,
                "elf.allowed_runpaths",
                "danger.elf.allow_runpaths",
            ),
            (
                r#""elf":{"allow_audit":true}"#,
                "elf.allow_audit",
                "danger.elf.allow_audit",
            ),
            (
                r#""elf":{"allow_ifunc":true}"#,
                "elf.allow_ifunc",
                "danger.elf.allow_ifunc",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(
                matches!(err, PolicyError::MovedToDanger { field, danger } if field == moved && danger == to),
                "{json}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(moved) && msg.contains(to), "{msg}");
        }
    }

    #[test]
    fn a_normal_elf_list_that_widens_is_refused_with_a_pointer() {
        for (json, list, entry, to) in [
            (
                r#""elf":{"denied_imports":[]}"#,
                "elf.denied_imports",
                "execve",
                "danger.elf.allow_imports",
            ),
            (
                r#""elf":{"denied_imports":["execve","execv","execvp","execvpe","execl","execlp","execle","fexecve","popen","fork","vfork","posix_spawn","posix_spawnp","ptrace","dlopen","dlmopen"]}"#,
                "elf.denied_imports",
                "system",
                "danger.elf.allow_imports",
            ),
            (
                r#""elf":{"allowed_needed":["libc.so.6","libz.so.1"]}"#,
                "elf.allowed_needed",
                "libz.so.1",
                "danger.elf.allow_needed",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(
                matches!(&err, PolicyError::WideningOutsideDanger { field, entry: e, danger, .. }
                    if *field == list && e == entry && *danger == to),
                "{json}: {err:?}"
            );
            assert!(err.to_string().contains(to), "{err}");
        }
        // The same widenings made in code are refused by the validation a Gate runs.
        let mut p = Policy::default();
        p.elf.denied_imports.retain(|d| d != "ptrace");
        assert!(matches!(
            p.validate(),
            Err(PolicyError::WideningOutsideDanger { field: "elf.denied_imports", ref entry, .. }) if entry == "ptrace"
        ));
        let mut p = Policy::default();
        p.elf.allowed_needed.push("libz.so.1".into());
        assert!(matches!(
            p.validate(),
            Err(PolicyError::WideningOutsideDanger {
                field: "elf.allowed_needed",
                ..
            })
        ));
        // Through the danger knobs they are accepted.
        let mut p = Policy::default();
        p.danger
            .elf_mut()
            .allow_imports(["ptrace"])
            .allow_needed(["libz.so.1"]);
        p.validate().unwrap();
    }

    #[test]
    fn the_elf_section_defaults_strict_tightens_and_refuses_unknown_fields() {
        let p = parse(r#""elf":{}"#).unwrap();
        assert_eq!(p.elf, ElfPolicy::default());
        assert!(p.elf.denied_imports.iter().any(|d| d == "system"));
        assert!(matches!(
            parse(r#""elf":{"allow_execstack":true}"#),
            Err(PolicyError::Syntax(_))
        ));
        // Tightenings stay in the normal section.
        let p = parse(
            r#""elf":{"allowed_needed":[],"denied_imports":["execve","execv","execvp","execvpe","execl","execlp","execle","fexecve","system","popen","fork","vfork","posix_spawn","posix_spawnp","ptrace","dlopen","dlmopen","socket"],"max_constructors":0,"max_finalizers":1,"require_stack_protector":true}"#,
        )
        .unwrap();
        assert!(p.elf.allowed_needed.is_empty());
        assert!(p.elf.denied_imports.iter().any(|d| d == "socket"));
        assert_eq!(p.elf.max_constructors, Some(0));
        assert_eq!(p.elf.max_finalizers, Some(1));
        assert!(p.elf.require_stack_protector);
        assert!(p.danger.is_strict());
    }

    #[test]
    fn the_danger_section_is_read_into_policy_danger() {
        let p = parse(
            r#""danger":{"sandbox_best_effort":true,"elf":{"min_relro":"partial","allow_imports":["system"]}}"#,
        )
        .unwrap();
        assert!(p.danger.is_sandbox_best_effort());
        assert!(!p.danger.is_expired_plugins_warn_only());
        assert_eq!(
            p.danger.elf().relro_floor(),
            Some(crate::danger::RelroFloor::Partial)
        );
        assert_eq!(p.danger.elf().allowed_imports(), ["system"]);
        assert_eq!(p.elf, ElfPolicy::default());
        for bad in [
            r#""danger":{"sandbox":"best_effort"}"#,
            r#""danger":{"elf":{"min_relro":"full"}}"#,
            r#""danger":{"elf":{"allowed_runpaths":["/x"]}}"#,
        ] {
            assert!(matches!(parse(bad), Err(PolicyError::Syntax(_))), "{bad}");
        }
    }
}
