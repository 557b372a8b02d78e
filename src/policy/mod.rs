//! Host policy: which roots are trusted, where the trust store is, how plugins run, and
//! the size and time limits every stage enforces.
//!
//! A policy file is written by the host's administrator, so it is trusted but not
//! assumed to be well formed: it is parsed strictly (`deny_unknown_fields`, size cap), so a
//! misspelled knob is an error instead of a silently ignored weakening. The wire type is
//! private; [`Policy::from_json`] validates every value and resolves relative paths against
//! the policy file's directory. A policy set in code is made by [`Policy::builder`], whose
//! [`PolicyBuilder::build`] runs the same checks (one function serves both), and its fields
//! are read through accessors: a limit out of range, or any policy a file could not hold,
//! cannot be built at all. [`Policy::default`] is the strict policy that trusts nothing.
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

use crate::base::json::JsonError;
pub use crate::base::settings::{
    DEFAULT_FRESHNESS_TIMEOUT_MS, FreshnessSettingError, FreshnessSettings, Isolation, LimitError,
    Limits, LimitsBuilder, MAX_FRESHNESS_TIMEOUT_MS, MetadataSource, WorkspaceAccess,
};
use crate::danger::{Danger, DangerWire};
use crate::pipeline::inspect::ElfPolicy;
pub use crate::sandbox::{Requirement, SandboxPolicy};

pub mod doctor;
mod elf_section;
mod find;
mod trust_section;
pub use crate::trust::rules::{ExpiryPolicy, Pattern, SignerRule, TrustPolicy};
pub use find::{POLICY_ENV_VAR, PolicyEnv, SYSTEM_POLICY_FILE, find_policy_file};
pub use trust_section::TrustSectionError;

/// The largest `pool.size` accepted.
pub const MAX_POOL_SIZE: usize = crate::exec::pool::MAX_POOL_SIZE;
/// The `pool.size` of a policy that sets none.
pub const DEFAULT_POOL_SIZE: usize = crate::exec::pool::DEFAULT_POOL_SIZE;

/// Largest policy file accepted.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Most worker processes a policy may give each plugin ([`Policy::workers`]).
pub const MAX_WORKERS: u32 = 16;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SandboxWire {
    #[serde(default)]
    read: Vec<PathBuf>,
    #[serde(default)]
    read_write: Vec<PathBuf>,
    #[serde(default)]
    connect_tcp: Vec<u16>,
    /// How much of the workspace a host names at load plugins may be granted.
    #[serde(default)]
    workspace: WorkspaceAccess,
    /// Moved: `danger.sandbox_best_effort` (full enforcement is the only normal setting).
    #[serde(default)]
    require: Option<IgnoredAny>,
}

/// A validated host policy: read from a file ([`Policy::from_file`]) or set in code
/// ([`Policy::builder`]); either way every value has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Directories beneath which plugins may live. Empty means nothing loads.
    pub(crate) trusted_roots: Vec<PathBuf>,
    /// The trust store: a directory of public key files.
    pub(crate) keys: PathBuf,
    /// How loaded plugins are isolated.
    pub(crate) isolation: Isolation,
    /// Size, count and time limits.
    pub(crate) limits: Limits,
    /// What plugins may be granted inside their sandbox.
    pub(crate) sandbox: SandboxPolicy,
    /// The worker executable for process isolation; when unset, the host executable itself
    /// if it called `skillgate::worker::run_if_worker`, else `skillgate-worker` beside it
    /// (see the `Gate` documentation, "Finding the worker").
    pub(crate) worker: Option<PathBuf>,
    /// Worker processes per loaded plugin (process isolation), 1..=[`MAX_WORKERS`].
    pub(crate) workers: u32,
    /// ELF hardening checks applied before any `dlopen` (the `elf` section).
    pub(crate) elf: ElfPolicy,
    /// Signer rules, revocation, rollback and expiry (`signers`, `revoked_keys`,
    /// `state_dir`, `min_versions`, `expiry`).
    pub(crate) trust: crate::trust::rules::TrustPolicy,
    /// Every knob that weakens a check (the `danger` section); none by default.
    pub(crate) danger: Danger,
    /// How many warm workers the Gate keeps ready (process isolation; 0: none).
    pub(crate) pool_size: usize,
    /// The host tools a plugin may call, if its signed manifest names them too.
    pub(crate) host_tools: std::collections::BTreeSet<String>,
    /// The TUF repository a release must be listed in before it is installed (the
    /// `freshness` section), if any.
    pub(crate) freshness: Option<FreshnessSettings>,
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
            workers: 1,
            elf: ElfPolicy::default(),
            trust: crate::trust::rules::TrustPolicy::default(),
            danger: Danger::default(),
            pool_size: DEFAULT_POOL_SIZE,
            host_tools: std::collections::BTreeSet::new(),
            freshness: None,
        }
    }
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A `host_tools.allow` entry is not 1-64 characters of `[A-Za-z0-9._+-]`.
    #[error(
        "policy host_tools.allow entry {0:?} is not a tool name (1-64 characters of A-Z a-z 0-9 . _ + -)"
    )]
    BadToolName(String),
    /// `pool.size` is above [`MAX_POOL_SIZE`].
    #[error("policy pool.size = {size} is out of range (0..={max})")]
    PoolTooLarge {
        /// The size given.
        size: usize,
        /// The ceiling.
        max: usize,
    },
    /// The policy file could not be read.
    #[error("cannot read policy {path}")]
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
    Syntax(JsonError),
    /// A value of the trust fields (`signers`, `revoked_keys`, `min_versions`) is not a
    /// valid setting.
    #[error("policy is not valid: {0}")]
    TrustSection(TrustSectionError),
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
    /// No policy file was named and none was found where the search looks
    /// ([`find_policy_file`]).
    #[error("no policy file found (looked at: {})", show_paths(searched))]
    NotFound {
        /// Every path looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// No trust store directory was given.
    #[error("policy names no trust store (`keys`)")]
    NoTrustStore,
    /// `workers` is zero or above [`MAX_WORKERS`].
    #[error("policy workers = {value} is out of range (1..={max})")]
    WorkersOutOfRange {
        /// The value given.
        value: u64,
        /// The most allowed.
        max: u32,
    },
    /// `workers` above 1 under thread isolation: a thread executor cannot be multiplied
    /// safely, since ABI v1 plugins are not reentrant and share one process.
    #[error(
        "policy workers = {workers} needs process isolation (thread isolation runs one plugin thread)"
    )]
    WorkersNeedProcessIsolation {
        /// The value given.
        workers: u32,
    },
    /// A setting of the `freshness` section is not valid.
    #[error("policy is not valid: {0}")]
    Freshness(FreshnessSettingError),
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

fn show_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
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
    /// Wider than the field so that any number is refused by value, not as a type error.
    #[serde(default = "one_worker")]
    workers: u64,
    #[serde(default)]
    elf: elf_section::ElfWire,
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
    /// The warm worker pool (`{"size": n}`; default [`DEFAULT_POOL_SIZE`]).
    #[serde(default)]
    pool: PoolWire,
    /// The host tools plugins may call (`{"allow": [NAME…]}`).
    #[serde(default)]
    host_tools: HostToolsWire,
    /// The TUF repository releases are checked against (`{"root", "root_sha256",
    /// "metadata", "state"}`).
    #[serde(default)]
    freshness: Option<FreshnessWire>,
}

/// The `freshness` section, every field but `timeout_ms` required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreshnessWire {
    root: PathBuf,
    root_sha256: String,
    metadata: String,
    state: PathBuf,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The `host_tools` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostToolsWire {
    #[serde(default)]
    allow: Vec<String>,
}

/// `workers` is in 1..=[`MAX_WORKERS`], and above 1 only under process isolation.
fn check_workers(value: u64, isolation: Isolation) -> Result<u32, PolicyError> {
    let workers = u32::try_from(value)
        .ok()
        .filter(|w| (1..=MAX_WORKERS).contains(w))
        .ok_or(PolicyError::WorkersOutOfRange {
            value,
            max: MAX_WORKERS,
        })?;
    if workers > 1 && isolation != Isolation::Process {
        return Err(PolicyError::WorkersNeedProcessIsolation { workers });
    }
    Ok(workers)
}

/// The `pool` section.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PoolWire {
    size: Option<usize>,
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
    log_bytes: Option<usize>,
    tool_requests: Option<u64>,
    tool_request_bytes: Option<usize>,
    tool_reply_bytes: Option<usize>,
    progress_messages: Option<u64>,
    progress_bytes: Option<usize>,
    thread_mode_libraries: Option<usize>,
}

impl LimitsWire {
    /// The file's limits over the defaults, not checked yet ([`Policy::check`] does).
    fn into_limits(self) -> Limits {
        let d = Limits::default();
        Limits {
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
            log_bytes: self.log_bytes.unwrap_or(d.log_bytes),
            tool_requests: self.tool_requests.unwrap_or(d.tool_requests),
            tool_request_bytes: self.tool_request_bytes.unwrap_or(d.tool_request_bytes),
            tool_reply_bytes: self.tool_reply_bytes.unwrap_or(d.tool_reply_bytes),
            progress_messages: self.progress_messages.unwrap_or(d.progress_messages),
            progress_bytes: self.progress_bytes.unwrap_or(d.progress_bytes),
            thread_mode_libraries: self
                .thread_mode_libraries
                .unwrap_or(d.thread_mode_libraries),
        }
    }
}

fn one_worker() -> u64 {
    1
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

impl Policy {
    /// A builder starting from [`Policy::default`]; [`PolicyBuilder::build`] refuses what
    /// [`Policy::from_json`] would refuse.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::default(),
            limits: Limits::default().into(),
        }
    }

    /// A builder starting from this policy's settings, to change some of them.
    pub fn to_builder(&self) -> PolicyBuilder {
        PolicyBuilder {
            policy: self.clone(),
            limits: self.limits.to_builder(),
        }
    }

    /// Directories beneath which plugins may live. Empty means nothing loads.
    pub fn trusted_roots(&self) -> &[PathBuf] {
        &self.trusted_roots
    }

    /// The trust store: a directory of public key files ([`crate::Gate::new`] loads it).
    pub fn keys(&self) -> &Path {
        &self.keys
    }

    /// How loaded plugins are isolated.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Size, count and time limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What plugins may be granted inside their sandbox.
    pub fn sandbox(&self) -> &SandboxPolicy {
        &self.sandbox
    }

    /// The worker executable for process isolation, if set; when unset, the host
    /// executable itself (if it called [`crate::worker::run_if_worker`]) or a
    /// `skillgate-worker` beside it.
    pub fn worker(&self) -> Option<&Path> {
        self.worker.as_deref()
    }

    /// How many worker processes each loaded plugin gets (process isolation; 1 by
    /// default). Calls go to a free worker; each worker runs one call at a time.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// ELF hardening checks applied before any `dlopen` (the `elf` section).
    pub fn elf(&self) -> &ElfPolicy {
        &self.elf
    }

    /// Signer rules, revocation, rollback and expiry.
    pub fn trust(&self) -> &crate::trust::rules::TrustPolicy {
        &self.trust
    }

    /// Every knob in force that weakens a check (the `danger` section).
    pub fn danger(&self) -> &Danger {
        &self.danger
    }

    /// How many workers the Gate keeps started ahead of loads (`pool.size`, default
    /// [`DEFAULT_POOL_SIZE`]; process isolation only; 0: every load starts its worker
    /// cold). The pool starts with the Gate's first process-mode load, not when the Gate
    /// is built.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// The host tools a plugin may call (`host_tools.allow`): a request is answered only
    /// for a tool named here *and* in the plugin's signed manifest (`"tools"`).
    pub fn host_tools(&self) -> &std::collections::BTreeSet<String> {
        &self.host_tools
    }

    /// The TUF repository a pulled release must be listed in, at that version and digest,
    /// before it is installed (the `freshness` section); `None` when the policy has none.
    /// `skillgate::fleet::freshness::Freshness::from_policy` turns it into the check.
    pub fn freshness(&self) -> Option<&FreshnessSettings> {
        self.freshness.as_ref()
    }

    /// The checks of a policy's values, whoever made it: a trust store is named, every
    /// limit is in 1..=its ceiling, and the `elf` lists only tighten (a widening belongs in
    /// the `danger` section). [`Policy::from_json`] and [`PolicyBuilder::build`] run it, so
    /// a policy read and one built refuse the same values; the trust section can only be
    /// made validated.
    fn check(&self) -> Result<(), PolicyError> {
        if self.keys.as_os_str().is_empty() {
            return Err(PolicyError::NoTrustStore);
        }
        self.validate()
    }

    /// The value checks of [`Policy::check`] without the trust store, which
    /// [`crate::Gate::with_trust_store`] does not need. Outside the crate every policy has
    /// passed them; the gate runs them again because code inside the crate can still write
    /// the fields.
    pub(crate) fn validate(&self) -> Result<(), PolicyError> {
        self.limits.validate()?;
        check_workers(self.workers.into(), self.isolation)?;
        if self.pool_size > MAX_POOL_SIZE {
            return Err(PolicyError::PoolTooLarge {
                size: self.pool_size,
                max: MAX_POOL_SIZE,
            });
        }
        if let Some(bad) = self
            .host_tools
            .iter()
            .find(|t| !crate::exec::tools::is_tool_name(t))
        {
            return Err(PolicyError::BadToolName(bad.clone()));
        }
        elf_section::check_elf(&self.elf)
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
        let wire: PolicyWire =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Syntax(JsonError::new(e)))?;
        if wire.keys.as_os_str().is_empty() {
            return Err(PolicyError::NoTrustStore);
        }
        if wire.sandbox.require.is_some() {
            return Err(PolicyError::MovedToDanger {
                field: "sandbox.require",
                danger: "danger.sandbox_best_effort",
            });
        }
        let policy = Policy {
            trusted_roots: wire
                .trusted_roots
                .into_iter()
                .map(|p| resolve(base_dir, p))
                .collect(),
            keys: resolve(base_dir, wire.keys),
            isolation: wire.isolation,
            limits: wire.limits.into_limits(),
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
                workspace: wire.sandbox.workspace,
            },
            worker: wire.worker.map(|p| resolve(base_dir, p)),
            workers: check_workers(wire.workers, wire.isolation)?,
            elf: wire.elf.into_elf()?,
            trust: trust_section::trust_policy(
                wire.signers,
                wire.revoked_keys,
                wire.state_dir.map(|p| resolve(base_dir, p)),
                wire.min_versions,
                wire.expiry,
            )?,
            danger: wire.danger.into(),
            pool_size: wire.pool.size.unwrap_or(DEFAULT_POOL_SIZE),
            host_tools: wire.host_tools.allow.into_iter().collect(),
            freshness: wire
                .freshness
                .map(|f| {
                    let settings = FreshnessSettings::resolved(
                        f.root,
                        &f.root_sha256,
                        &f.metadata,
                        f.state,
                        Some(base_dir),
                    )?;
                    match f.timeout_ms {
                        Some(ms) => settings.with_timeout_ms(ms),
                        None => Ok(settings),
                    }
                })
                .transpose()
                .map_err(PolicyError::Freshness)?,
        };
        policy.check()?;
        Ok(policy)
    }
}

/// A policy being set in code: [`Policy::builder`] or [`Policy::to_builder`], one setter
/// per field, then [`PolicyBuilder::build`], which runs the checks a policy file gets.
/// Paths are taken as given (a file's relative paths resolve against its directory; here
/// the caller's working directory applies).
///
/// ```
/// use skillgate::{Policy, policy::{Isolation, Limits}};
/// let policy = Policy::builder()
///     .trusted_roots(["/srv/skills"])
///     .keys("/etc/skillgate/keys")
///     .isolation(Isolation::Process)
///     .limits(Limits::builder().call_timeout_ms(5_000))
///     .build()?;
/// assert_eq!(policy.limits().call_timeout_ms(), 5_000);
/// assert!(Policy::builder().keys("/k").limits(Limits::builder().files(0)).build().is_err());
/// # Ok::<(), skillgate::policy::PolicyError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PolicyBuilder {
    /// Every field but the limits, which wait unchecked in `limits`.
    policy: Policy,
    limits: LimitsBuilder,
}

impl PolicyBuilder {
    /// Sets [`Policy::trusted_roots`].
    pub fn trusted_roots<P: Into<PathBuf>>(mut self, roots: impl IntoIterator<Item = P>) -> Self {
        self.policy.trusted_roots = roots.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`Policy::keys`], the trust store directory; required, as in a policy file.
    pub fn keys(mut self, dir: impl Into<PathBuf>) -> Self {
        self.policy.keys = dir.into();
        self
    }

    /// Sets [`Policy::isolation`].
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.policy.isolation = isolation;
        self
    }

    /// Sets [`Policy::limits`]: a [`Limits`], or a [`LimitsBuilder`] whose values
    /// [`PolicyBuilder::build`] checks (and refuses as [`PolicyError::LimitOutOfRange`]).
    pub fn limits(mut self, limits: impl Into<LimitsBuilder>) -> Self {
        self.limits = limits.into();
        self
    }

    /// Sets [`Policy::sandbox`].
    pub fn sandbox(mut self, sandbox: SandboxPolicy) -> Self {
        self.policy.sandbox = sandbox;
        self
    }

    /// Sets [`Policy::worker`], the worker executable for process isolation.
    pub fn worker(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy.worker = Some(path.into());
        self
    }

    /// Sets [`Policy::workers`]; [`PolicyBuilder::build`] refuses 0, more than
    /// [`MAX_WORKERS`], and more than 1 under thread isolation.
    pub fn workers(mut self, workers: u32) -> Self {
        self.policy.workers = workers;
        self
    }

    /// Sets [`Policy::elf`]; its lists may only tighten the defaults.
    pub fn elf(mut self, elf: ElfPolicy) -> Self {
        self.policy.elf = elf;
        self
    }

    /// Sets [`Policy::trust`].
    pub fn trust(mut self, trust: crate::trust::rules::TrustPolicy) -> Self {
        self.policy.trust = trust;
        self
    }

    /// Sets [`Policy::pool_size`]; [`PolicyBuilder::build`] refuses more than
    /// [`MAX_POOL_SIZE`] ([`PolicyError::PoolTooLarge`]).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.policy.pool_size = size;
        self
    }

    /// Sets [`Policy::host_tools`], the tools plugins may call (if their manifests name
    /// them too); [`PolicyBuilder::build`] refuses a name outside the tool alphabet.
    pub fn host_tools<S: Into<String>>(mut self, tools: impl IntoIterator<Item = S>) -> Self {
        self.policy.host_tools = tools.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`Policy::freshness`], the TUF repository releases are checked against
    /// ([`FreshnessSettings::new`] checks its values).
    pub fn freshness(mut self, freshness: FreshnessSettings) -> Self {
        self.policy.freshness = Some(freshness);
        self
    }

    /// Sets [`Policy::danger`], the knobs that weaken a check.
    pub fn danger(mut self, danger: Danger) -> Self {
        self.policy.danger = danger;
        self
    }

    /// Checks the policy as [`Policy::from_json`] checks a file's and returns it: no trust
    /// store is [`PolicyError::NoTrustStore`], a limit out of range
    /// [`PolicyError::LimitOutOfRange`], `workers` out of range or above 1 in thread mode
    /// [`PolicyError::WorkersOutOfRange`] or [`PolicyError::WorkersNeedProcessIsolation`], a
    /// widening `elf` list
    /// [`PolicyError::WideningOutsideDanger`].
    pub fn build(self) -> Result<Policy, PolicyError> {
        let policy = Policy {
            limits: self.limits.unchecked(),
            ..self.policy
        };
        policy.check()?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests;
