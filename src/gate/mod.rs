//! The hardened host's entry point: [`Gate::verify_and_load`] runs every stage in order;
//! [`LoadedPlugin`] (in `plugin`) is what a load returns.

mod plugin;

pub use plugin::LoadedPlugin;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{self, OwnedSubject};
use crate::base::ffi::FaultError;
use crate::base::protocol::ProtocolViolation;
use crate::error::Error;
use crate::exec::pool::{LazyPool, Pool, SharedPool};
use crate::exec::tools::HostTools;
use crate::exec::worker::{WorkerProgram, find};
use crate::pipeline::inspect::{Inspected, inspect};
use crate::pipeline::locate::{TrustedRoot, locate};
use crate::pipeline::manifest::{Manifest, hex_digest};
use crate::pipeline::stage::Stage;
use crate::pipeline::verify::{Bundle, Progress, Verified, verify_dir_at};
use crate::policy::{Isolation, Policy, PolicyError};
use crate::sandbox::WorkspaceOffer;
use crate::trust::store::TrustStore;

/// A configured host: trusted roots opened, trust store loaded, policy validated.
///
/// ```no_run
/// # fn main() -> Result<(), skillgate::Error> {
/// use skillgate::{Gate, Policy, PluginContext};
/// skillgate::worker::run_if_worker(); // first in main: see "Finding the worker"
/// let gate = Gate::new(Policy::from_file("policy/default.json")?)?;
/// let plugin = gate.verify_and_load("skills/echo")?;
/// let result = plugin.execute(&PluginContext::default())?;
/// # Ok(()) }
/// ```
///
/// # Finding the worker
///
/// Under process isolation (the default) every plugin runs in a worker process. Which
/// program it runs is chosen when the Gate is built ([`Gate::worker`] says which):
///
/// 1. the policy's `worker`, when set (it must be a file; `LoadError::WorkerMissing`
///    otherwise);
/// 2. else **this executable**, re-executed through `/proc/self/exe` with
///    [`crate::worker::WORKER_ARG`], when it called [`crate::worker::run_if_worker`] first
///    in `main` (the `skillgate` CLI does);
/// 3. else `skillgate-worker` beside this executable or in its parent directory;
/// 4. else `LoadError::WorkerNotFound`, which says why this executable cannot serve
///    ([`crate::worker::SelfWorker`]), where it looked, and the fix.
///
/// Why re-execution: a worker that is the host binary itself needs no install step and no
/// path — a cargo dependency never puts a `skillgate-worker` beside the host — and it is
/// always the host's own version (`/proc/self/exe` is the file the host was started from,
/// even after an upgrade replaced or deleted it at its path). The hook must run before
/// anything else in `main` and before any thread starts: in the worker, everything before
/// it runs too, and a thread started there would sit outside the sandbox beside the plugin
/// (the hook refuses to make a threaded host its own worker, and the worker refuses to load
/// with a second thread). The worker starts with an empty environment, so an executable
/// that needs one to start cannot serve; nor does a setuid, setgid or capability-raising
/// executable. The cost is the host's startup per worker: exec, the dynamic loader and
/// the runtime's start-up before `main` for each plugin loaded (workers live as long as
/// their handle, so it is paid per load, not per call). An executable that never calls the
/// hook is never re-executed: its `main` would run as a "worker".
pub struct Gate {
    policy: Policy,
    /// The tools this host offers its plugins (`Gate::with_host_tools`).
    host_tools: Option<Arc<dyn HostTools>>,
    roots: Vec<TrustedRoot>,
    trust: TrustStore,
    worker: Option<WorkerProgram>,
    /// Workers started ahead of loads (process isolation, `pool.size` > 0), from the first
    /// process-mode load on. Declared last: dropped after everything else, it ends and
    /// reaps every worker still waiting.
    pool: Option<Arc<LazyPool>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.policy)
            .field("roots", &self.roots)
            .field("trust", &self.trust)
            .field("worker", &self.worker)
            .field("host_tools", &self.host_tools.is_some())
            .field("pool", &self.pool)
            .finish()
    }
}

impl Gate {
    /// Registers the tools this host offers its plugins (see [`crate::tools`]): a plugin
    /// loaded afterwards that exports `skillgate_plugin_host_v1` may ask for any tool its
    /// signed manifest (`"tools"`) and the policy (`host_tools.allow`) both name. Without
    /// it, every request gets an error result (`no_host_tools`).
    pub fn with_host_tools(mut self, tools: Arc<dyn HostTools>) -> Self {
        self.host_tools = Some(tools);
        self
    }

    /// Builds a host from a policy, loading the trust store from `policy.keys`.
    pub fn new(policy: Policy) -> Result<Self, Error> {
        if policy.keys.as_os_str().is_empty() {
            return Err(PolicyError::NoTrustStore.into());
        }
        let trust = TrustStore::load_dir(&policy.keys)?;
        Self::with_trust_store(policy, trust)
    }

    /// Builds a host from a policy and an already loaded trust store (`policy.keys` is
    /// not read). An empty trust store refuses every plugin.
    pub fn with_trust_store(policy: Policy, trust: TrustStore) -> Result<Self, Error> {
        Self::build(policy, trust, None)
    }

    /// [`Gate::with_trust_store`] taking its pool from `shared` (see [`SharedPool`]): the
    /// Gates a `compat` loader builds per call share one pool.
    pub(crate) fn with_shared_pool(
        policy: Policy,
        trust: TrustStore,
        shared: &SharedPool,
    ) -> Result<Self, Error> {
        Self::build(policy, trust, Some(shared))
    }

    fn build(
        policy: Policy,
        trust: TrustStore,
        shared: Option<&SharedPool>,
    ) -> Result<Self, Error> {
        policy.validate()?;
        let worker = match policy.isolation {
            Isolation::Process => Some(find(policy.worker.as_deref())?),
            Isolation::Thread => None,
        };
        let roots = policy
            .trusted_roots
            .iter()
            .map(|r| TrustedRoot::open(r))
            .collect::<Result<Vec<_>, _>>()?;
        // Not started here: the first process-mode load starts it (see `LazyPool`).
        let pool = worker
            .as_ref()
            .filter(|_| policy.pool_size > 0)
            .map(|w| match shared {
                Some(s) => s.get(policy.pool_size, w.path()),
                None => Arc::new(LazyPool::new(policy.pool_size, w.path())),
            });
        Ok(Gate {
            policy,
            host_tools: None,
            roots,
            trust,
            worker,
            pool,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The trust store in force.
    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }

    /// What this process keeps that cannot be freed, and the limit on it. Thread isolation
    /// never unloads a library (see `limits.thread_mode_libraries` in the README): each
    /// distinct library it loaded stays mapped, with its sealed memfd open, for the life of
    /// the process; loading the same bytes again reuses it. The counts are the process's
    /// (every `Gate` in it shares the loader); the limit is this Gate's policy's.
    pub fn stats(&self) -> GateStats {
        let resident = crate::exec::resident::resident();
        GateStats {
            thread_libraries_resident: resident.libraries,
            thread_library_bytes: resident.bytes,
            thread_library_reuses: resident.reuses,
            thread_library_limit: self.policy.limits.thread_mode_libraries(),
        }
    }

    /// Locates and verifies a plugin directory: every check short of inspection and loading.
    pub fn verify(&self, path: impl AsRef<Path>) -> Result<Verified<Bundle>, Error> {
        self.verify_staged(path).map_err(StageError::into_error)
    }

    /// Verifies and inspects a plugin: every check short of loading it.
    pub fn verify_and_inspect(&self, path: impl AsRef<Path>) -> Result<Inspected, Error> {
        self.verify_and_inspect_staged(path)
            .map_err(StageError::into_error)
    }

    /// Runs every stage and returns a plugin ready for calls, or the error of the stage
    /// that refused it.
    pub fn verify_and_load(&self, path: impl AsRef<Path>) -> Result<LoadedPlugin, Error> {
        self.load(self.verify_and_inspect(path)?)
    }

    /// [`Gate::verify_and_load`] with what this host gives this load: the workspace.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skillgate::Error> {
    /// use skillgate::{Gate, LoadOptions, Policy};
    /// let gate = Gate::new(Policy::from_file("policy/default.json")?)?;
    /// let plugin =
    ///     gate.verify_and_load_with("skills/notes", &LoadOptions::new().workspace("/srv/project"))?;
    /// # Ok(()) }
    /// ```
    pub fn verify_and_load_with(
        &self,
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<LoadedPlugin, Error> {
        self.load_with(self.verify_and_inspect(path)?, options)
    }

    /// Loads a plugin that passed verification and inspection. The library is read from
    /// the sealed copy made during verification, never from disk again.
    pub fn load(&self, inspected: Inspected) -> Result<LoadedPlugin, Error> {
        self.load_with(inspected, &LoadOptions::default())
    }

    /// [`Gate::load`] with what this host gives this load (see [`LoadOptions`]).
    pub fn load_with(
        &self,
        inspected: Inspected,
        options: &LoadOptions,
    ) -> Result<LoadedPlugin, Error> {
        self.load_staged_with(inspected, options)
            .map_err(StageError::into_error)
    }

    /// [`Gate::verify_and_inspect`] for each of `paths`, on every core: results in the
    /// order given, each its own `Ok` or `Err` (one refusal never stops the others), every
    /// path verified by the same code as `verify_and_inspect`. A path given twice is
    /// verified twice.
    ///
    /// Workers: `std::thread::available_parallelism()`, at most one per path; with one (or
    /// one path) everything runs on the calling thread. Each worker takes the next path
    /// from a shared counter, so a slow plugin does not hold up the paths behind it.
    ///
    /// Memory: while a plugin is verified its files are read in bounded buffers, as in
    /// `verify_and_inspect`; what stays afterwards is what each `Ok` holds — the manifest
    /// and the verified copy of the library (up to 1 MiB on the heap, sealed into a memfd
    /// only if it is loaded; a larger one in a sealed memfd already: its full size in
    /// shared memory and one file descriptor) — until the caller drops or loads it. A
    /// caller verifying many large plugins it will not load at once should pass them in
    /// batches.
    ///
    /// Version marks (`trust.state_dir`): each raise is serialized by the state
    /// directory's lock file, so parallel verification never loses one; the mark ends at
    /// the highest release that verified. When the list holds two releases of the same
    /// plugin, which is verified first is not fixed: the older one is accepted if it got
    /// there first and refused as a rollback otherwise (as two hosts sharing a state
    /// directory would see it).
    ///
    /// A panic inside verification (a bug, never an input) is resumed on the calling
    /// thread after the other workers finish.
    pub fn verify_many<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Vec<(PathBuf, Result<Inspected, Error>)> {
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(paths.len());
        let one = |p: &P| self.verify_and_inspect(p);
        // Each path's audit event goes where the caller's would: its `tracing` dispatcher.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let results: Vec<Result<Inspected, Error>> = if workers <= 1 {
            paths.iter().map(one).collect()
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let work = || {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(i) else {
                        return done;
                    };
                    done.push((i, one(path)));
                }
            };
            let mut slots: Vec<Option<Result<Inspected, Error>>> =
                std::iter::repeat_with(|| None).take(paths.len()).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| scope.spawn(|| tracing::dispatcher::with_default(&dispatch, work)))
                    .collect();
                let mut panicked = None;
                for handle in handles {
                    match handle.join() {
                        Ok(done) => {
                            for (i, result) in done {
                                if let Some(slot) = slots.get_mut(i) {
                                    *slot = Some(result);
                                }
                            }
                        }
                        Err(payload) => panicked = Some(payload),
                    }
                }
                if let Some(payload) = panicked {
                    std::panic::resume_unwind(payload);
                }
            });
            // Every index below `paths.len()` was taken by exactly one worker, and every
            // worker returned (a panic was resumed above), so no slot is empty.
            slots
                .into_iter()
                .zip(paths)
                .map(|(slot, path)| slot.unwrap_or_else(|| one(path)))
                .collect()
        };
        paths
            .iter()
            .map(|p| p.as_ref().to_path_buf())
            .zip(results)
            .collect()
    }

    /// [`Gate::verify`], naming the [`Stage`] that refused: `Locate`, `Manifest`,
    /// `Trust`, `Digests` or `VersionMark`, as the pipeline ran them (not from the error's
    /// type: a symlink met while the files are listed is a `Digests` refusal).
    pub fn verify_staged(&self, path: impl AsRef<Path>) -> Result<Verified<Bundle>, StageError> {
        let mut at = Progress::new();
        let verified = self.verify_at(path.as_ref(), &mut at);
        self.audit_verification(path.as_ref(), &at, None, verified.as_deref());
        verified
    }

    /// Locates and verifies, keeping in `at` how far it got; no audit event.
    fn verify_at(&self, path: &Path, at: &mut Progress) -> Result<Verified<Bundle>, StageError> {
        self.verify_among(&self.roots, path, at)
    }

    /// [`Gate::verify_at`] with `roots` as the trusted roots.
    fn verify_among(
        &self,
        roots: &[TrustedRoot],
        path: &Path,
        at: &mut Progress,
    ) -> Result<Verified<Bundle>, StageError> {
        let dir = locate(roots, path).map_err(|e| StageError {
            stage: Stage::Locate,
            error: e.into(),
        })?;
        verify_dir_at(
            &dir,
            &self.trust,
            &self.policy.limits,
            &self.policy.trust,
            &self.policy.danger,
            at,
        )
        .map_err(|e| StageError {
            stage: at.stage,
            error: e.into(),
        })
    }

    /// The audit event of a verification of `path`: `verified`, or `refused` naming the
    /// plugin as far as `at` knows it (`sha256`: the library's, when it verified).
    fn audit_verification(
        &self,
        path: &Path,
        at: &Progress,
        sha256: Option<&str>,
        outcome: Result<&Bundle, &StageError>,
    ) {
        match outcome {
            Ok(bundle) => {
                let m = bundle.manifest();
                let (version, sha256) = (m.version().to_string(), library_sha256(m));
                let subject = audit::Subject {
                    plugin: m.name(),
                    version: Some(&version),
                    path: Some(bundle.path()),
                    sha256: sha256.as_deref(),
                };
                let danger = self.policy.danger.in_force().join(", ");
                let danger = (!danger.is_empty()).then_some(danger.as_str());
                audit::verified(&subject, bundle.signers(), danger);
            }
            Err(e) => {
                let named = audit::dir_name(path);
                let subject = audit::Subject {
                    plugin: at.release.as_ref().map_or(&*named, |(n, _)| n),
                    version: at.release.as_ref().map(|(_, v)| v.as_str()),
                    path: Some(path),
                    sha256,
                };
                audit::refused(&subject, e.stage.name(), e.error.kind(), &e.error);
            }
        }
    }

    /// [`Gate::verify_and_inspect`], naming the [`Stage`] that refused (as
    /// [`Gate::verify_staged`], or `Inspect`).
    pub fn verify_and_inspect_staged(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<Inspected, StageError> {
        self.verify_and_inspect_among(&self.roots, path.as_ref())
    }

    /// [`Gate::verify_and_inspect_staged`] for a plugin directory beneath `root`, a
    /// directory the policy does not list: `crate::fleet` verifies a release it staged
    /// this way, by the same code and with the same trust store, rules, limits and
    /// rollback marks as a local directory, `root` standing in for the trusted roots
    /// (it is opened and checked as one: no symlinks, not writable by others).
    pub(crate) fn verify_and_inspect_beneath(
        &self,
        root: &Path,
        path: &Path,
    ) -> Result<Inspected, StageError> {
        let staged = TrustedRoot::open(root).map_err(|e| StageError {
            stage: Stage::Locate,
            error: e.into(),
        })?;
        self.verify_and_inspect_among(std::slice::from_ref(&staged), path)
    }

    fn verify_and_inspect_among(
        &self,
        roots: &[TrustedRoot],
        path: &Path,
    ) -> Result<Inspected, StageError> {
        let mut at = Progress::new();
        let mut sha256 = None;
        let inspected = self
            .verify_among(roots, path, &mut at)
            .and_then(|verified| {
                sha256 = library_sha256(verified.manifest());
                inspect(verified, &self.policy.elf, self.policy.danger.elf()).map_err(|e| {
                    StageError {
                        stage: Stage::Inspect,
                        error: e.into(),
                    }
                })
            });
        let outcome = inspected.as_ref().map(Inspected::bundle);
        self.audit_verification(path, &at, sha256.as_deref(), outcome);
        inspected
    }

    /// [`Gate::load`], naming the [`Stage`] that refused: `Sandbox` for an
    /// [`Error::Sandbox`] (a grant refused, a restriction that could not be applied) and
    /// for a worker's report of its restrictions that the host could not confirm
    /// (`Fault(Protocol(Unconfirmed))`); `Load` for everything else on the way to a ready
    /// plugin (starting the worker or thread, `dlopen`, the ABI and metadata checks, a
    /// fault while loading).
    pub fn load_staged(&self, inspected: Inspected) -> Result<LoadedPlugin, StageError> {
        self.load_staged_with(inspected, &LoadOptions::default())
    }

    /// [`Gate::load_with`], naming the [`Stage`] that refused (as [`Gate::load_staged`]).
    pub fn load_staged_with(
        &self,
        inspected: Inspected,
        options: &LoadOptions,
    ) -> Result<LoadedPlugin, StageError> {
        crate::stamp!("load: begin");
        // What a plugin allowed to write its workspace must not reach: what decides which
        // code this host runs.
        let mut protected = self.policy.trusted_roots.clone();
        protected.push(self.policy.keys.clone());
        protected.extend(self.policy.trust.state_dir().map(Path::to_path_buf));
        // A re-executed host is its own worker: `current_exe` below covers it.
        protected.extend(
            self.worker
                .as_ref()
                .filter(|w| !matches!(w, WorkerProgram::ThisExecutable))
                .map(|w| w.path().to_path_buf()),
        );
        protected.extend(this_executable().cloned());
        let workspace = WorkspaceOffer {
            dir: options.workspace.as_deref(),
            requested: inspected.bundle().manifest().workspace(),
            protected: &protected,
        };
        let bundle = inspected.bundle();
        let record = audit_subject(bundle.manifest(), bundle.path());
        crate::stamp!("load: protected paths");
        LoadedPlugin::start(
            inspected,
            &self.policy,
            self.worker.as_ref(),
            self.pool.as_deref(),
            workspace,
            self.host_tools.clone(),
        )
        .map_err(|error| {
            let stage = match &error {
                Error::Sandbox(_)
                | Error::Fault(FaultError::Protocol(ProtocolViolation::Unconfirmed { .. })) => {
                    Stage::Sandbox
                }
                _ => Stage::Load,
            };
            audit::refused(&record.subject(), stage.name(), error.kind(), &error);
            StageError { stage, error }
        })
    }

    /// The process ids of the warm workers waiting now (empty under thread isolation,
    /// `pool.size` 0, or before the first process-mode load started the pool). For tests
    /// of the pool; a pid here is never the worker of a plugin.
    #[doc(hidden)]
    pub fn pooled_worker_pids(&self) -> Vec<u32> {
        self.pool
            .as_deref()
            .and_then(LazyPool::started)
            .map(Pool::pids)
            .unwrap_or_default()
    }

    /// Whether a process-mode load started this Gate's pool (never for thread isolation or
    /// `pool.size` 0). For tests of the pool's lazy start.
    #[doc(hidden)]
    pub fn pool_started(&self) -> bool {
        self.pool.as_deref().is_some_and(LazyPool::is_started)
    }

    /// The program this host's workers run (process isolation), chosen when the Gate was
    /// built: see [Finding the worker](Gate#finding-the-worker).
    pub fn worker(&self) -> Option<&WorkerProgram> {
        self.worker.as_ref()
    }
}

/// What a host gives one load beyond the policy: `LoadOptions::new().workspace(dir)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    workspace: Option<PathBuf>,
}

impl LoadOptions {
    /// No workspace: the same as [`Gate::verify_and_load`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the directory the host is working on. A plugin whose signed manifest
    /// requests `"workspace": "read"` or `"read_write"` (and whose policy's
    /// `sandbox.workspace` allows that much) is granted that directory tree, canonicalized
    /// and opened when the plugin loads, and every call's `workspace_root` is set to it.
    /// A plugin that requests no workspace is granted nothing of it.
    pub fn workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workspace = Some(dir.into());
        self
    }

    /// The workspace named, if any.
    pub fn workspace_dir(&self) -> Option<&Path> {
        self.workspace.as_deref()
    }
}

/// A refusal and the [`Stage`] of the pipeline that made it (from the `*_staged` methods
/// of [`Gate`]). Its `Display` is the error's.
#[derive(Debug)]
#[non_exhaustive]
pub struct StageError {
    /// Where the pipeline refused.
    pub stage: Stage,
    /// Why.
    pub error: Error,
}

impl StageError {
    /// The error alone.
    pub fn into_error(self) -> Error {
        self.error
    }
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// No `source()`, as [`Error`] has none (see [`crate::error`]).
impl std::error::Error for StageError {}

/// What a host process keeps for good, from [`Gate::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStats {
    /// Distinct plugin libraries thread isolation has loaded in this process (never
    /// unloaded; each also keeps one descriptor, its sealed memfd, open).
    pub thread_libraries_resident: usize,
    /// Their size in bytes (shared memory: the memfds' contents).
    pub thread_library_bytes: u64,
    /// Thread-mode loads that reused a resident library instead of loading a new copy.
    pub thread_library_reuses: u64,
    /// The policy's `limits.thread_mode_libraries`: past it, new bytes are refused.
    pub thread_library_limit: usize,
}

/// The library's SHA-256 as the signed manifest lists it (and verification matched), hex.
/// This process's executable, looked up once (a `readlink` of `/proc/self/exe` per load
/// was a measurable part of a warm-pool load; the path of a running executable does not
/// change).
fn this_executable() -> Option<&'static PathBuf> {
    static EXE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().ok()).as_ref()
}

fn library_sha256(manifest: &Manifest) -> Option<String> {
    manifest.library_entry().map(|e| hex_digest(&e.sha256))
}

/// A verified plugin (its signed manifest, its directory) as its audit events name it.
pub(super) fn audit_subject(manifest: &Manifest, path: &Path) -> OwnedSubject {
    OwnedSubject {
        plugin: manifest.name().to_owned(),
        version: Some(manifest.version().to_string()),
        path: Some(path.to_path_buf()),
        sha256: library_sha256(manifest),
    }
}
