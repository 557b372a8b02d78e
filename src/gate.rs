//! The hardened host's entry point: [`Gate::verify_and_load`] runs every stage in order.

use std::path::{Path, PathBuf};

use crate::base::ffi::{FaultError, PluginContext, PluginMetadata, PluginResult, encode_context};
use crate::base::protocol::ProtocolViolation;
use crate::error::Error;
use crate::exec::host::{ProcessExecutor, find_worker};
use crate::exec::thread::ThreadExecutor;
use crate::pipeline::inspect::{InspectReport, Inspected, inspect};
use crate::pipeline::load::{Loadable, Unpacked};
use crate::pipeline::locate::{TrustedRoot, locate};
use crate::pipeline::manifest::Manifest;
use crate::pipeline::stage::Stage;
use crate::pipeline::verify::{Bundle, Verified, verify_dir_at};
use crate::policy::{Isolation, Policy, PolicyError};
use crate::sandbox::{Enforcement, SandboxError, SandboxPlan};
use crate::trust::keys::KeyId;
use crate::trust::store::TrustStore;

/// A configured host: trusted roots opened, trust store loaded, policy validated.
///
/// ```no_run
/// # fn main() -> Result<(), skillgate::Error> {
/// use skillgate::{Gate, Policy, PluginContext};
/// let gate = Gate::new(Policy::from_file("policy/default.json")?)?;
/// let plugin = gate.verify_and_load("skills/echo")?;
/// let result = plugin.execute(&PluginContext::default())?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    roots: Vec<TrustedRoot>,
    trust: TrustStore,
    worker: Option<PathBuf>,
}

impl Gate {
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
        policy.validate()?;
        let worker = match policy.isolation {
            Isolation::Process => Some(find_worker(policy.worker.as_deref())?),
            Isolation::Thread => None,
        };
        let roots = policy
            .trusted_roots
            .iter()
            .map(|r| TrustedRoot::open(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Gate {
            policy,
            roots,
            trust,
            worker,
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

    /// Loads a plugin that passed verification and inspection. The library is read from
    /// the sealed copy made during verification, never from disk again.
    pub fn load(&self, inspected: Inspected) -> Result<LoadedPlugin, Error> {
        self.load_staged(inspected).map_err(StageError::into_error)
    }

    /// [`Gate::verify`], naming the [`Stage`] that refused: `Locate`, `Manifest`,
    /// `Trust`, `Digests` or `VersionMark`, as the pipeline ran them (not from the error's
    /// type: a symlink met while the files are listed is a `Digests` refusal).
    pub fn verify_staged(&self, path: impl AsRef<Path>) -> Result<Verified<Bundle>, StageError> {
        let dir = locate(&self.roots, path.as_ref()).map_err(|e| StageError {
            stage: Stage::Locate,
            error: e.into(),
        })?;
        let mut at = Stage::Manifest;
        verify_dir_at(
            &dir,
            &self.trust,
            &self.policy.limits,
            &self.policy.trust,
            &self.policy.danger,
            &mut at,
        )
        .map_err(|e| StageError {
            stage: at,
            error: e.into(),
        })
    }

    /// [`Gate::verify_and_inspect`], naming the [`Stage`] that refused (as
    /// [`Gate::verify_staged`], or `Inspect`).
    pub fn verify_and_inspect_staged(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<Inspected, StageError> {
        let verified = self.verify_staged(path)?;
        inspect(verified, &self.policy.elf, self.policy.danger.elf()).map_err(|e| StageError {
            stage: Stage::Inspect,
            error: e.into(),
        })
    }

    /// [`Gate::load`], naming the [`Stage`] that refused: `Sandbox` for an
    /// [`Error::Sandbox`] (a grant refused, a restriction that could not be applied) and
    /// for a worker's report of its restrictions that the host could not confirm
    /// (`Fault(Protocol(Unconfirmed))`); `Load` for everything else on the way to a ready
    /// plugin (starting the worker or thread, `dlopen`, the ABI and metadata checks, a
    /// fault while loading).
    pub fn load_staged(&self, inspected: Inspected) -> Result<LoadedPlugin, StageError> {
        LoadedPlugin::start(inspected, &self.policy, self.worker.as_deref()).map_err(|error| {
            let stage = match &error {
                Error::Sandbox(_)
                | Error::Fault(FaultError::Protocol(ProtocolViolation::Unconfirmed { .. })) => {
                    Stage::Sandbox
                }
                _ => Stage::Load,
            };
            StageError { stage, error }
        })
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

/// A verified, inspected plugin loaded on its own thread.
#[derive(Debug)]
pub struct LoadedPlugin {
    path: PathBuf,
    manifest: Manifest,
    signers: Vec<KeyId>,
    report: InspectReport,
    enforcement: Enforcement,
    executor: Executor,
}

#[derive(Debug)]
enum Executor {
    Thread(ThreadExecutor),
    Process(ProcessExecutor),
}

impl LoadedPlugin {
    fn start(inspected: Inspected, policy: &Policy, worker: Option<&Path>) -> Result<Self, Error> {
        let Unpacked {
            path,
            manifest,
            signers,
            report,
            library,
        } = Loadable::unpack(inspected);
        // Every weakening that let this plugin through (or will shape its sandbox) is
        // named where loads are audited, before its code first runs in `dlopen`.
        let danger = policy.danger.in_force();
        if !danger.is_empty() {
            tracing::warn!(
                target: "skillgate::audit",
                plugin = manifest.name(),
                version = %manifest.version(),
                path = %crate::base::escape::Escaped(path.display()),
                danger = %crate::base::escape::Escaped(danger.join(", ")),
                "plugin loaded under a policy that weakens checks"
            );
        }
        let plan = SandboxPlan::new(
            &policy.sandbox,
            &policy.danger,
            manifest.capabilities(),
            &report.needed,
        );
        // A grant refused while planning is the host's finding: report it typed, before a
        // worker (which could only send it back as text) is started.
        plan.check_grants().map_err(SandboxError::from)?;
        let (executor, enforcement) = match worker {
            Some(worker) => {
                let (e, report) = ProcessExecutor::start(
                    library.sealed(),
                    &manifest,
                    &policy.limits,
                    plan,
                    worker,
                )?;
                (Executor::Process(e), report)
            }
            None => {
                let (e, report) = ThreadExecutor::start(library, &manifest, &policy.limits, plan)?;
                (Executor::Thread(e), report)
            }
        };
        tracing::info!(
            target: "skillgate::audit",
            plugin = manifest.name(),
            version = %manifest.version(),
            path = %crate::base::escape::Escaped(path.display()),
            signers = ?signers,
            isolation = %enforcement.isolation,
            landlock_abi = enforcement.landlock_abi,
            landlock = ?enforcement.landlock,
            seccomp = enforcement.seccomp,
            no_new_privs = enforcement.no_new_privs,
            fs_rules = enforcement.fs_rules,
            net_rules = enforcement.net_rules,
            namespaces = ?enforcement.namespaces,
            tasks = ?enforcement.tasks,
            "plugin loaded"
        );
        Ok(LoadedPlugin {
            path,
            manifest,
            signers,
            report,
            enforcement,
            executor,
        })
    }

    /// Runs the plugin once. Calls from many threads are queued and run one at a time.
    pub fn execute(&self, ctx: &PluginContext) -> Result<PluginResult, Error> {
        let input = encode_context(ctx).map_err(Error::Input)?;
        let outcome = match &self.executor {
            Executor::Thread(t) => t.call(input),
            Executor::Process(p) => p.call(input.as_bytes()),
        };
        outcome.map_err(|e: FaultError| {
            tracing::warn!(
                plugin = self.manifest.name(),
                error = %crate::error::chain(&e),
                "plugin fault"
            );
            Error::Fault(e)
        })
    }

    /// The signed metadata (the plugin's own report was checked against it at load).
    pub fn metadata(&self) -> &PluginMetadata {
        self.manifest.metadata()
    }
    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The trusted keys whose signatures verified.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
    /// The plugin directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// What ELF inspection found.
    pub fn inspection(&self) -> &InspectReport {
        &self.report
    }
    /// How the plugin is isolated.
    pub fn isolation(&self) -> Isolation {
        self.enforcement.isolation
    }
    /// The worker's process id (process isolation, while the worker runs).
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.executor {
            Executor::Process(p) => p.worker_pid(),
            Executor::Thread(_) => None,
        }
    }
    /// What the sandbox enforces on the plugin's thread or worker.
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }
}
