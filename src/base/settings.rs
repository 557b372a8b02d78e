//! Settings several stages read: how a plugin is isolated, how much of the host's workspace
//! it may reach, the size, count and time limits with the ceilings no policy can raise
//! them past, and where the TUF repository that says which releases are current lives.
//!
//! They sit at the bottom so that the stages can take them without importing the policy,
//! which is built above the stages and composes their settings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How a loaded plugin is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Isolation {
    /// A dedicated thread in the host process runs the plugin. It defends against buggy
    /// plugins, not malicious ones: a thread is not a security boundary. The plugin shares
    /// the host's descriptors: what it prints goes to the host's own stdout and stderr,
    /// uncaptured.
    Thread,
    /// A worker process per plugin (the default): crashes, hangs and escapes end the
    /// worker, never the host. What the plugin prints is captured as its log (`tracing`
    /// events with target `skillgate::plugin`, bounded by [`Limits::log_bytes`]).
    Process,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Thread => "thread",
            Isolation::Process => "process",
        })
    }
}

/// How much of the host's workspace a plugin may reach: what a manifest's `"workspace"`
/// requests and a policy's `sandbox.workspace` allows. Ordered: `None < Read < ReadWrite`,
/// so "asks for more than allowed" is a comparison.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkspaceAccess {
    /// Nothing of the workspace (the default).
    #[default]
    None,
    /// Read files and list directories beneath the workspace.
    Read,
    /// Read, and also write, create, rename, remove and truncate beneath it.
    ReadWrite,
}

impl std::fmt::Display for WorkspaceAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkspaceAccess::None => "none",
            WorkspaceAccess::Read => "read",
            WorkspaceAccess::ReadWrite => "read_write",
        })
    }
}

/// Size, count and time limits. The defaults are strict; raise them in the policy file's
/// `limits` section or with [`Limits::builder`]. Every way of making one checks each limit
/// against 1..=its ceiling, so a value out of range cannot exist.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest `plugin.json` read, in bytes.
    pub(crate) manifest_bytes: u64,
    /// Largest `plugin.json.sig` read, in bytes.
    pub(crate) signature_bytes: u64,
    /// Largest plugin library, in bytes.
    pub(crate) library_bytes: u64,
    /// Largest other file in a plugin directory, in bytes.
    pub(crate) file_bytes: u64,
    /// Most files a plugin directory may hold (manifest and signatures included).
    pub(crate) files: usize,
    /// Deepest subdirectory nesting in a plugin directory.
    pub(crate) depth: usize,
    /// Largest string a plugin may return from `vtcode_plugin_metadata` or
    /// `vtcode_plugin_execute`, in bytes, without the terminating NUL.
    pub(crate) output_bytes: usize,
    /// Longest a caller waits for one plugin call, in milliseconds.
    pub(crate) call_timeout_ms: u64,
    /// Address-space limit of a worker process, in bytes (process isolation).
    pub(crate) memory_bytes: u64,
    /// CPU-time limit of a worker process, in seconds (process isolation).
    pub(crate) cpu_seconds: u64,
    /// Most tasks (its main thread included) one worker process may run (process
    /// isolation; thread mode cannot bound the plugin's threads).
    pub(crate) threads: u64,
    /// Most bytes of a worker's stdout and stderr surfaced as the plugin's log per call
    /// (the load counts as one call); past it the output is read and dropped (process
    /// isolation; in thread mode the plugin writes to the host's own descriptors).
    pub(crate) log_bytes: usize,
    /// Most host tool requests one call may make (`skillgate_plugin_host_v1`); past it each
    /// request gets an error result (`"kind":"limit"`).
    pub(crate) tool_requests: u64,
    /// Largest host tool request (its arguments' JSON), in bytes.
    pub(crate) tool_request_bytes: usize,
    /// Largest host tool reply handed to the plugin, in bytes; a larger result becomes an
    /// error result.
    pub(crate) tool_reply_bytes: usize,
    /// Most progress messages one call passes to the host's callback; the rest are
    /// dropped and counted.
    pub(crate) progress_messages: u64,
    /// Largest progress message, in bytes; a larger one is dropped and counted.
    pub(crate) progress_bytes: usize,
    /// Most distinct plugin libraries thread isolation keeps loaded in this process (a
    /// library is never unloaded; loading bytes already loaded reuses them and counts once).
    pub(crate) thread_mode_libraries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            manifest_bytes: 64 * 1024,
            signature_bytes: 64 * 1024,
            library_bytes: 64 * 1024 * 1024,
            file_bytes: 16 * 1024 * 1024,
            files: 256,
            depth: 4,
            output_bytes: 1024 * 1024,
            call_timeout_ms: 30_000,
            memory_bytes: 1024 * 1024 * 1024,
            cpu_seconds: 60,
            threads: 64,
            log_bytes: 64 * 1024,
            tool_requests: 64,
            tool_request_bytes: 64 * 1024,
            tool_reply_bytes: 1024 * 1024,
            progress_messages: 1024,
            progress_bytes: 4096,
            thread_mode_libraries: 256,
        }
    }
}

/// Hard ceilings no policy can raise a limit past: they keep a typo from disabling a cap.
const CEILING_BYTES: u64 = 4 * 1024 * 1024 * 1024;
const CEILING_FILES: usize = 100_000;
const CEILING_DEPTH: usize = 32;
const CEILING_OUTPUT: usize = 1024 * 1024 * 1024;
const CEILING_THREADS: u64 = 4096;
const CEILING_LOG: usize = 64 * 1024 * 1024;
const CEILING_TOOL_REQUESTS: u64 = 100_000;
const CEILING_TOOL_BYTES: usize = 64 * 1024 * 1024;
const CEILING_PROGRESS_MESSAGES: u64 = 1_000_000;
const CEILING_PROGRESS_BYTES: usize = 1024 * 1024;
const CEILING_THREAD_LIBRARIES: usize = 65_536;

/// Ceilings of the limits with a fixed maximum of their own.
const CEILING_MANIFEST: u64 = 16 * 1024 * 1024;
const CEILING_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
const CEILING_MEMORY: u64 = 1 << 40;
const CEILING_CPU_SECONDS: u64 = 24 * 3600;

/// A count as a `u64` for range checks; every ceiling is far below `u64::MAX`.
fn wide(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Limits {
    /// A builder starting from the strict defaults; [`LimitsBuilder::build`] checks every
    /// value as a policy file's are checked.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder(Limits::default())
    }

    /// A builder starting from these limits, to raise or lower some of them.
    pub fn to_builder(&self) -> LimitsBuilder {
        LimitsBuilder(self.clone())
    }

    /// Largest `plugin.json` read, in bytes.
    pub fn manifest_bytes(&self) -> u64 {
        self.manifest_bytes
    }

    /// Largest `plugin.json.sig` read, in bytes.
    pub fn signature_bytes(&self) -> u64 {
        self.signature_bytes
    }

    /// Largest plugin library, in bytes.
    pub fn library_bytes(&self) -> u64 {
        self.library_bytes
    }

    /// Largest other file in a plugin directory, in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Most files a plugin directory may hold (manifest and signatures included).
    pub fn files(&self) -> usize {
        self.files
    }

    /// Deepest subdirectory nesting in a plugin directory.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Largest string a plugin may return, in bytes, without the terminating NUL.
    pub fn output_bytes(&self) -> usize {
        self.output_bytes
    }

    /// Longest a caller waits for one plugin call, in milliseconds.
    pub fn call_timeout_ms(&self) -> u64 {
        self.call_timeout_ms
    }

    /// Address-space limit of a worker process, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// CPU-time limit of a worker process, in seconds.
    pub fn cpu_seconds(&self) -> u64 {
        self.cpu_seconds
    }

    /// Most tasks one worker process may run, its main thread included.
    pub fn threads(&self) -> u64 {
        self.threads
    }

    /// Most bytes of a worker's stdout and stderr logged per call (the load counts as one).
    pub fn log_bytes(&self) -> usize {
        self.log_bytes
    }

    /// Most host tool requests per call.
    pub fn tool_requests(&self) -> u64 {
        self.tool_requests
    }
    /// Largest host tool request, in bytes.
    pub fn tool_request_bytes(&self) -> usize {
        self.tool_request_bytes
    }
    /// Largest host tool reply, in bytes.
    pub fn tool_reply_bytes(&self) -> usize {
        self.tool_reply_bytes
    }
    /// Most progress messages per call passed to the callback.
    pub fn progress_messages(&self) -> u64 {
        self.progress_messages
    }
    /// Largest progress message, in bytes.
    pub fn progress_bytes(&self) -> usize {
        self.progress_bytes
    }
    /// Most distinct plugin libraries thread isolation keeps loaded in this process: a
    /// thread-mode load of bytes not loaded yet is refused past it (bytes already loaded
    /// are reused and always allowed). See [`crate::GateStats`].
    pub fn thread_mode_libraries(&self) -> usize {
        self.thread_mode_libraries
    }

    /// Every limit with its ceiling: the one table [`Limits::validate`] checks.
    fn bounds(&self) -> [(&'static str, u64, u64); 18] {
        [
            ("manifest_bytes", self.manifest_bytes, CEILING_MANIFEST),
            ("signature_bytes", self.signature_bytes, CEILING_MANIFEST),
            ("library_bytes", self.library_bytes, CEILING_BYTES),
            ("file_bytes", self.file_bytes, CEILING_BYTES),
            ("files", wide(self.files), wide(CEILING_FILES)),
            ("depth", wide(self.depth), wide(CEILING_DEPTH)),
            (
                "output_bytes",
                wide(self.output_bytes),
                wide(CEILING_OUTPUT),
            ),
            ("call_timeout_ms", self.call_timeout_ms, CEILING_TIMEOUT_MS),
            ("memory_bytes", self.memory_bytes, CEILING_MEMORY),
            ("cpu_seconds", self.cpu_seconds, CEILING_CPU_SECONDS),
            ("threads", self.threads, CEILING_THREADS),
            ("log_bytes", wide(self.log_bytes), wide(CEILING_LOG)),
            ("tool_requests", self.tool_requests, CEILING_TOOL_REQUESTS),
            (
                "tool_request_bytes",
                wide(self.tool_request_bytes),
                wide(CEILING_TOOL_BYTES),
            ),
            (
                "tool_reply_bytes",
                wide(self.tool_reply_bytes),
                wide(CEILING_TOOL_BYTES),
            ),
            (
                "progress_messages",
                self.progress_messages,
                CEILING_PROGRESS_MESSAGES,
            ),
            (
                "progress_bytes",
                wide(self.progress_bytes),
                wide(CEILING_PROGRESS_BYTES),
            ),
            (
                "thread_mode_libraries",
                wide(self.thread_mode_libraries),
                wide(CEILING_THREAD_LIBRARIES),
            ),
        ]
    }

    /// Checks every limit is at least 1 and at most its hard ceiling. A limit of 0 is never
    /// "unlimited", and a huge one (`call_timeout_ms = u64::MAX`) never means "no
    /// deadline": both are a [`LimitError`]. Policy files and [`LimitsBuilder::build`] go
    /// through this same check; inside the crate, where the fields can be written, the
    /// [`crate::Gate`] runs it once more.
    pub(crate) fn validate(&self) -> Result<(), LimitError> {
        for (name, value, max) in self.bounds() {
            if value == 0 || value > max {
                return Err(LimitError { name, value, max });
            }
        }
        Ok(())
    }
}

/// Limits being set in code: [`Limits::builder`] or [`Limits::to_builder`], one setter per
/// limit, then [`LimitsBuilder::build`]. It holds values not checked yet, so it is not a
/// [`Limits`] and no stage takes it. [`crate::policy::PolicyBuilder::limits`] takes one
/// too, and then its own `build` reports a value out of range as
/// [`crate::policy::PolicyError::LimitOutOfRange`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct LimitsBuilder(Limits);

impl LimitsBuilder {
    /// Sets [`Limits::manifest_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn manifest_bytes(mut self, value: u64) -> Self {
        self.0.manifest_bytes = value;
        self
    }

    /// Sets [`Limits::signature_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn signature_bytes(mut self, value: u64) -> Self {
        self.0.signature_bytes = value;
        self
    }

    /// Sets [`Limits::library_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn library_bytes(mut self, value: u64) -> Self {
        self.0.library_bytes = value;
        self
    }

    /// Sets [`Limits::file_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn file_bytes(mut self, value: u64) -> Self {
        self.0.file_bytes = value;
        self
    }

    /// Sets [`Limits::files`]; checked by [`LimitsBuilder::build`].
    pub fn files(mut self, value: usize) -> Self {
        self.0.files = value;
        self
    }

    /// Sets [`Limits::depth`]; checked by [`LimitsBuilder::build`].
    pub fn depth(mut self, value: usize) -> Self {
        self.0.depth = value;
        self
    }

    /// Sets [`Limits::output_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn output_bytes(mut self, value: usize) -> Self {
        self.0.output_bytes = value;
        self
    }

    /// Sets [`Limits::call_timeout_ms`]; checked by [`LimitsBuilder::build`].
    pub fn call_timeout_ms(mut self, value: u64) -> Self {
        self.0.call_timeout_ms = value;
        self
    }

    /// Sets [`Limits::memory_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn memory_bytes(mut self, value: u64) -> Self {
        self.0.memory_bytes = value;
        self
    }

    /// Sets [`Limits::cpu_seconds`]; checked by [`LimitsBuilder::build`].
    pub fn cpu_seconds(mut self, value: u64) -> Self {
        self.0.cpu_seconds = value;
        self
    }

    /// Sets [`Limits::threads`]; checked by [`LimitsBuilder::build`].
    pub fn threads(mut self, value: u64) -> Self {
        self.0.threads = value;
        self
    }

    /// Sets [`Limits::log_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn log_bytes(mut self, value: usize) -> Self {
        self.0.log_bytes = value;
        self
    }

    /// Sets [`Limits::tool_requests`]; checked by [`LimitsBuilder::build`].
    pub fn tool_requests(mut self, value: u64) -> Self {
        self.0.tool_requests = value;
        self
    }
    /// Sets [`Limits::tool_request_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn tool_request_bytes(mut self, value: usize) -> Self {
        self.0.tool_request_bytes = value;
        self
    }
    /// Sets [`Limits::tool_reply_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn tool_reply_bytes(mut self, value: usize) -> Self {
        self.0.tool_reply_bytes = value;
        self
    }
    /// Sets [`Limits::progress_messages`]; checked by [`LimitsBuilder::build`].
    pub fn progress_messages(mut self, value: u64) -> Self {
        self.0.progress_messages = value;
        self
    }
    /// Sets [`Limits::progress_bytes`]; checked by [`LimitsBuilder::build`].
    pub fn progress_bytes(mut self, value: usize) -> Self {
        self.0.progress_bytes = value;
        self
    }
    /// Sets [`Limits::thread_mode_libraries`]; checked by [`LimitsBuilder::build`].
    pub fn thread_mode_libraries(mut self, value: usize) -> Self {
        self.0.thread_mode_libraries = value;
        self
    }

    /// Checks every limit (see [`LimitError`]) and returns them.
    pub fn build(self) -> Result<Limits, LimitError> {
        self.0.validate()?;
        Ok(self.0)
    }

    /// The values set so far, unchecked: for a builder that checks them itself.
    pub(crate) fn unchecked(self) -> Limits {
        self.0
    }
}

impl From<Limits> for LimitsBuilder {
    fn from(limits: Limits) -> Self {
        LimitsBuilder(limits)
    }
}

/// A limit of zero or above its ceiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit {name} = {value} is out of range (1..={max})")]
#[non_exhaustive]
pub struct LimitError {
    /// The limit's field name.
    pub name: &'static str,
    /// The value given.
    pub value: u64,
    /// The ceiling.
    pub max: u64,
}

/// Where a TUF repository's metadata is read from (the `freshness.metadata` setting).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataSource {
    /// A local directory holding `root.json`, `timestamp.json`, … (read as `file://`).
    Dir(PathBuf),
    /// An `https://` URL, or an `http://` URL on a loopback address.
    Url(url::Url),
}

impl std::fmt::Display for MetadataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataSource::Dir(dir) => write!(f, "{}", dir.display()),
            MetadataSource::Url(url) => f.write_str(url.as_str()),
        }
    }
}

/// The `freshness` section: a TUF repository whose current, unexpired targets must list a
/// release before it is installed (`skillgate::fleet::freshness`). Every way of making one
/// ([`FreshnessSettings::new`], a policy file's section) checks it the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FreshnessSettings {
    /// The trusted root metadata file (`root.json`), whose bytes must hash to
    /// `root_sha256`.
    pub(crate) root: PathBuf,
    /// The SHA-256 the root metadata file must have.
    pub(crate) root_sha256: [u8; 32],
    /// Where the repository's metadata is read from.
    pub(crate) metadata: MetadataSource,
    /// The directory where the TUF client keeps the metadata it trusted last (the versions
    /// that refuse a rollback), across runs.
    pub(crate) state: PathBuf,
    /// The longest one check may take, metadata fetches included.
    pub(crate) timeout_ms: u64,
}

/// The `freshness.timeout_ms` of a section that sets none.
pub const DEFAULT_FRESHNESS_TIMEOUT_MS: u64 = 60_000;

/// The largest `freshness.timeout_ms`.
pub const MAX_FRESHNESS_TIMEOUT_MS: u64 = 600_000;

/// A `freshness` setting that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("freshness.{field} = {value:?}: {problem}")]
#[non_exhaustive]
pub struct FreshnessSettingError {
    /// The setting (`root_sha256`, `metadata`, …).
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl FreshnessSettings {
    /// Checks and builds the settings: `root_sha256` is 64 hex digits, `metadata` is a
    /// directory path, an `https://` URL or an `http://` URL on a loopback address (plain
    /// HTTP to another host would show every check to the network, so it is refused), and
    /// no path is empty. Paths are taken as given (a policy file resolves its relative
    /// paths against its own directory first).
    pub fn new(
        root: impl Into<PathBuf>,
        root_sha256: &str,
        metadata: &str,
        state: impl Into<PathBuf>,
    ) -> Result<Self, FreshnessSettingError> {
        Self::resolved(root.into(), root_sha256, metadata, state.into(), None)
    }

    /// The same settings with another deadline for one check, in milliseconds
    /// (1..=[`MAX_FRESHNESS_TIMEOUT_MS`]; [`DEFAULT_FRESHNESS_TIMEOUT_MS`] unless set).
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Result<Self, FreshnessSettingError> {
        if !(1..=MAX_FRESHNESS_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(FreshnessSettingError {
                field: "timeout_ms",
                value: timeout_ms.to_string(),
                problem: "is out of range (1..=600000)",
            });
        }
        self.timeout_ms = timeout_ms;
        Ok(self)
    }

    /// [`FreshnessSettings::new`] with relative paths (`root`, `state`, a `metadata`
    /// directory) resolved against `base` when given.
    pub(crate) fn resolved(
        root: PathBuf,
        root_sha256: &str,
        metadata: &str,
        state: PathBuf,
        base: Option<&Path>,
    ) -> Result<Self, FreshnessSettingError> {
        let bad = |field, value: &str, problem| FreshnessSettingError {
            field,
            value: value.to_owned(),
            problem,
        };
        let resolve = |p: PathBuf| match base {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        };
        let mut pin = [0u8; 32];
        hex::decode_to_slice(root_sha256, &mut pin)
            .map_err(|_| bad("root_sha256", root_sha256, "is not 64 hex digits"))?;
        for (field, path) in [("root", &root), ("state", &state)] {
            if path.as_os_str().is_empty() {
                return Err(bad(field, "", "is empty"));
            }
        }
        let metadata = if metadata.contains("://") {
            let url =
                url::Url::parse(metadata).map_err(|_| bad("metadata", metadata, "is not a URL"))?;
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            match url.scheme() {
                "https" if url.host().is_some() => {}
                "http" if loopback => {}
                "http" => {
                    return Err(bad(
                        "metadata",
                        metadata,
                        "plain http is accepted on a loopback address only (use https)",
                    ));
                }
                _ => {
                    return Err(bad(
                        "metadata",
                        metadata,
                        "is neither a directory nor an http(s) URL",
                    ));
                }
            }
            MetadataSource::Url(url)
        } else if metadata.is_empty() {
            return Err(bad("metadata", metadata, "is empty"));
        } else {
            MetadataSource::Dir(resolve(PathBuf::from(metadata)))
        };
        Ok(FreshnessSettings {
            root: resolve(root),
            root_sha256: pin,
            metadata,
            state: resolve(state),
            timeout_ms: DEFAULT_FRESHNESS_TIMEOUT_MS,
        })
    }

    /// The trusted root metadata file.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SHA-256 the root metadata file must have.
    pub fn root_sha256(&self) -> &[u8; 32] {
        &self.root_sha256
    }

    /// Where the repository's metadata is read from.
    pub fn metadata(&self) -> &MetadataSource {
        &self.metadata
    }

    /// The TUF client's state directory (it must exist).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The longest one check may take, metadata fetches included.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_builder_starts_strict_and_checks_what_it_is_given() {
        assert_eq!(Limits::builder().build(), Ok(Limits::default()));
        let raised = Limits::builder().files(1000).depth(8).build().unwrap();
        assert_eq!((raised.files(), raised.depth()), (1000, 8));
        assert_eq!(raised.to_builder().build(), Ok(raised.clone()));
        assert_eq!(
            raised.to_builder().depth(0).build(),
            Err(LimitError {
                name: "depth",
                value: 0,
                max: 32
            })
        );
        assert_eq!(
            Limits::builder().call_timeout_ms(u64::MAX).build(),
            Err(LimitError {
                name: "call_timeout_ms",
                value: u64::MAX,
                max: CEILING_TIMEOUT_MS
            })
        );
        // Unchecked values reach a policy builder only through `unchecked`, which its own
        // `build` checks.
        assert_eq!(Limits::builder().threads(0).unchecked().threads(), 0);
    }
}
