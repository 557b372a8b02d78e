//! A loaded plugin: [`LoadedPlugin`] starts its executor (the plugin's thread, or its
//! workers) from a verified, inspected plugin, runs calls on it, and ends it when dropped.

use std::path::{Path, PathBuf};

use crate::base::ffi::{
    FaultError, PluginContext, PluginMetadata, PluginResult, encode_context, encode_context_into,
};

thread_local! {
    /// Each host thread's buffer for the JSON of its process-mode calls' contexts, kept
    /// from call to call (up to [`ENCODED_KEPT`]): a 1 MiB context is then encoded into
    /// pages already mapped instead of a fresh, doubling allocation per call (measured:
    /// page faults and reallocation were a fifth of the host's time for a 1 MiB input).
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest encode buffer a host thread keeps between calls.
const ENCODED_KEPT: usize = 4 << 20;
use crate::error::Error;
use crate::exec::options::CallOptions;
use crate::exec::pool::LazyPool;
use crate::exec::restart::{WorkerSpec, Workers};
use crate::exec::thread::ThreadExecutor;
use crate::exec::tools::{CallExtras, HostTools, ToolCaller, ToolEnv, enter_call};
use crate::exec::worker::WorkerProgram;
use crate::pipeline::inspect::{InspectReport, Inspected};
use crate::pipeline::load::{LoadError, Loadable, Unpacked};
use crate::pipeline::manifest::Manifest;
use crate::policy::{Isolation, Policy};
use crate::sandbox::{Enforcement, SandboxError, SandboxPlan, WorkspaceOffer};
use crate::trust::keys::KeyId;
use std::sync::Arc;

use crate::audit;
use crate::base::escape::to_json_line;

/// A verified, inspected plugin loaded on its own thread.
#[derive(Debug)]
pub struct LoadedPlugin {
    path: PathBuf,
    manifest: Manifest,
    signers: Vec<KeyId>,
    report: InspectReport,
    enforcement: Enforcement,
    /// The granted workspace's canonical path, set as every call's `workspace_root`: the
    /// host's own record, not the worker's report.
    workspace_root: Option<String>,
    executor: Executor,
    /// What the plugin's host tool requests are judged by (its id keys the recursion guard).
    tools: Arc<ToolEnv>,
    /// Fires the `unloaded` audit event when dropped: declared last, so it drops after the
    /// executor (whose workers are then ended and reaped).
    audit: audit::OnUnload,
}

#[derive(Debug)]
enum Executor {
    Thread(ThreadExecutor),
    /// `policy.workers` worker processes (one by default), restartable from the sealed
    /// copy of the library. Boxed: what a restart needs is large and off the call path.
    Process(Box<Workers>),
}

/// Audits a thread-mode load refused by `limits.thread_mode_libraries`.
fn audit_limit(e: &crate::exec::ExecError, manifest: &Manifest, path: &Path) {
    if let crate::exec::ExecError::Load(limit @ LoadError::ThreadLibraryLimit { .. }) = e {
        tracing::warn!(
            target: "skillgate::audit",
            event = "limit",
            plugin = manifest.name(),
            version = %manifest.version(),
            path = %crate::base::escape::Escaped(path.display()),
            sha256 = %manifest
                .library_entry()
                .map_or_else(String::new, |f| crate::pipeline::manifest::hex_digest(&f.sha256)),
            isolation = "thread",
            kind = "load",
            error = %crate::base::escape::Escaped(limit),
            "thread-mode library limit reached"
        );
    }
}

/// Tells a Gate's pool that a process-mode load is done ([`LazyPool::loaded`]) when it is
/// dropped: at the end of the load, on every path out of it.
struct RefillAfter<'a>(&'a LazyPool);

impl Drop for RefillAfter<'_> {
    fn drop(&mut self) {
        self.0.loaded();
    }
}

impl LoadedPlugin {
    pub(super) fn start(
        inspected: Inspected,
        policy: &Policy,
        worker: Option<&WorkerProgram>,
        pool: Option<&LazyPool>,
        workspace: WorkspaceOffer<'_>,
        host_tools: Option<Arc<dyn HostTools>>,
    ) -> Result<Self, Error> {
        let Unpacked {
            path,
            manifest,
            signers,
            report,
            library,
        } = Loadable::unpack(inspected)?;
        let plan = SandboxPlan::new(
            &policy.sandbox,
            &policy.danger,
            manifest.capabilities(),
            workspace,
            &report.needed,
        )?;
        // A grant refused while planning is the host's finding: report it typed, before a
        // worker (which could only send it back as text) is started.
        plan.check_grants().map_err(SandboxError::from)?;
        crate::stamp!("load: plan");
        let workspace_root = plan
            .workspace()
            .and_then(|w| w.path.to_str().map(str::to_owned));
        // The tools work beneath the workspace the host named, whether or not the plugin's
        // sandbox was granted it: a tool acts with the host's authority, as the host chose.
        let tool_workspace = match plan.workspace() {
            Some(w) => Some(w.path.clone()),
            None => workspace.dir.and_then(|d| std::fs::canonicalize(d).ok()),
        };
        let tools = Arc::new(ToolEnv::new(
            ToolCaller {
                name: manifest.name().to_owned(),
                version: manifest.version().to_string(),
                isolation: policy.isolation,
                workspace: tool_workspace,
            },
            host_tools,
            manifest.tools(),
            &policy.host_tools,
            &policy.limits,
        ));
        let mut refill_after = None;
        let (executor, enforcement) = match worker {
            Some(worker) => {
                let spec = WorkerSpec {
                    library,
                    limits: policy.limits.clone(),
                    plan,
                    worker: worker.path().to_path_buf(),
                    count: usize::try_from(policy.workers).unwrap_or(1),
                    tools: Arc::clone(&tools),
                };
                // The first process-mode load starts the pool once its own workers were
                // started (cold); later ones wake its refill once they are done: the
                // refill never competes with a load. "Done" is when this function returns,
                // its audit event included, whatever the outcome (the refill's fork beside
                // the audit was measured at up to 0.6 ms of a busy machine's load).
                crate::stamp!("load: tools env");
                refill_after = pool.map(RefillAfter);
                let started = Workers::start(spec, &manifest, pool.and_then(LazyPool::started));
                crate::stamp!("load: workers started");
                let (workers, report) = started?;
                (Executor::Process(Box::new(workers)), report)
            }
            None => {
                let (e, report) = ThreadExecutor::start(
                    library,
                    &manifest,
                    &policy.limits,
                    plan,
                    Arc::clone(&tools),
                )
                .inspect_err(|e| audit_limit(e, &manifest, &path))?;
                (Executor::Thread(e), report)
            }
        };
        // Every weakening that let this plugin through (or shapes its sandbox) is named
        // here, as it was in its `verified` event before its code first ran in `dlopen`.
        let unload = audit::OnUnload {
            subject: super::audit_subject(&manifest, &path),
            isolation: enforcement.isolation.to_string(),
            worker_pid: match &executor {
                Executor::Process(p) => p.worker_pid(),
                Executor::Thread(_) => None,
            },
        };
        let danger = policy.danger.in_force().join(", ");
        let resident = crate::exec::resident::resident();
        audit::loaded(
            &unload.subject.subject(),
            &audit::Runs {
                isolation: &unload.isolation,
                worker_pid: unload.worker_pid,
            },
            &signers,
            &to_json_line(&enforcement).unwrap_or_default(),
            (!danger.is_empty()).then_some(danger.as_str()),
            (resident.libraries, resident.bytes),
        );
        crate::stamp!("load: audited");
        drop(refill_after);
        Ok(LoadedPlugin {
            path,
            manifest,
            signers,
            report,
            enforcement,
            workspace_root,
            executor,
            tools,
            audit: unload,
        })
    }

    /// Runs the plugin once. Each worker (process isolation: `policy.workers` of them, one
    /// by default; thread isolation: the plugin's one thread) runs one call at a time:
    /// calls from many threads go to a free worker, or wait for one up to the call timeout.
    /// For a plugin granted a workspace, the context's `workspace_root` is the granted
    /// directory whatever the caller passed; otherwise it is passed as given.
    pub fn execute(&self, ctx: &PluginContext) -> Result<PluginResult, Error> {
        self.execute_with(ctx, &CallOptions::default())
    }

    /// [`LoadedPlugin::execute`] with [`CallOptions`]: a deadline of this call's own, a
    /// cancellation token, and a progress callback that receives the plugin's progress
    /// messages while the call runs. A call made by a host tool
    /// back into the plugin whose request it serves is refused at once
    /// (`Fault(Reentered)`), before it reaches the plugin.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skillgate::Error> {
    /// use std::time::Duration;
    /// use skillgate::{CallOptions, CancelToken, Gate, PluginContext, Policy};
    /// let gate = Gate::new(Policy::from_file("policy/default.json")?)?;
    /// let plugin = gate.verify_and_load("skills/echo")?;
    /// let token = CancelToken::new();
    /// // token.clone() goes to whoever may cancel (a UI thread, a shutdown path).
    /// let options = CallOptions::new().timeout(Duration::from_secs(2)).cancel(&token);
    /// let result = plugin.execute_with(&PluginContext::default(), &options)?;
    /// # Ok(()) }
    /// ```
    pub fn execute_with(
        &self,
        ctx: &PluginContext,
        options: &CallOptions,
    ) -> Result<PluginResult, Error> {
        let chain = enter_call(self.tools.plugin_id).map_err(Error::Fault)?;
        let extras = CallExtras {
            on_progress: options.on_progress.clone(),
            chain,
        };
        let granted;
        let ctx = match &self.workspace_root {
            Some(root) if ctx.workspace_root.as_ref() != Some(root) => {
                granted = PluginContext {
                    workspace_root: Some(root.clone()),
                    ..ctx.clone()
                };
                &granted
            }
            _ => ctx,
        };
        let (outcome, worker_pid) = match &self.executor {
            Executor::Thread(t) => {
                let input = encode_context(ctx).map_err(Error::Input)?;
                (t.call_with(input, options, extras), None)
            }
            Executor::Process(p) => {
                // Taken out for the call: a host tool run on this thread during it may call
                // another plugin, which then encodes into a buffer of its own.
                let mut buffer = ENCODED.take();
                encode_context_into(ctx, &mut buffer);
                let called = p.call_with(&buffer, options, extras);
                if buffer.capacity() <= ENCODED_KEPT {
                    ENCODED.set(buffer);
                }
                called
            }
        };
        outcome.map_err(|e: FaultError| {
            let cancelled = matches!(e, FaultError::Cancelled { .. });
            let e = Error::Fault(e);
            let runs = audit::Runs {
                isolation: &self.audit.isolation,
                worker_pid,
            };
            let subject = self.audit.subject.subject();
            if cancelled {
                audit::cancelled(&subject, &runs, e.kind(), &e);
            } else {
                audit::fault(&subject, &runs, e.kind(), &e);
            }
            e
        })
    }

    /// Starts the plugin's workers again after a fault poisoned the handle (process
    /// isolation), from the sealed copy of the library this handle already holds: no file
    /// is read, nothing unsigned is parsed, and each new worker is sandboxed, confirmed and
    /// checked against the signed manifest exactly as at load. Calls in flight on the old
    /// workers (if they still served) finish there; new calls go to the new ones. Nothing
    /// restarts by itself: a plugin that faulted stays poisoned until the host calls this.
    ///
    /// Thread isolation: `Error::Load(LoadError::ThreadIsolation)` (a plugin thread cannot
    /// be ended, nor its library unloaded).
    pub fn restart(&self) -> Result<(), Error> {
        let workers = match &self.executor {
            Executor::Process(w) => w,
            Executor::Thread(_) => {
                return Err(LoadError::ThreadIsolation {
                    operation: "restart",
                    plugin: self.manifest.name().to_owned(),
                }
                .into());
            }
        };
        let was_poisoned = workers.is_poisoned();
        workers.restart(&self.manifest)?;
        audit::restarted(
            &self.audit.subject.subject(),
            &audit::Runs {
                isolation: &self.audit.isolation,
                worker_pid: self.worker_pid(),
            },
            was_poisoned,
        );
        Ok(())
    }

    /// Whether a fault (or a cancelled call) ended this plugin's workers or abandoned its
    /// thread: every call fails with `Fault(Poisoned)` until [`LoadedPlugin::restart`]
    /// (process isolation).
    pub fn is_poisoned(&self) -> bool {
        match &self.executor {
            Executor::Process(w) => w.is_poisoned(),
            Executor::Thread(t) => t.is_poisoned(),
        }
    }

    /// The signed SHA-256 of the library, hex.
    pub(crate) fn library_sha256(&self) -> String {
        self.manifest
            .library_entry()
            .map(|e| crate::pipeline::manifest::hex_digest(&e.sha256))
            .unwrap_or_default()
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
    /// Whether the plugin exports `skillgate_plugin_host_v1` (it was handed the host table
    /// at load).
    pub fn uses_host_tools(&self) -> bool {
        self.report.exports_host_v1
    }
    /// What ELF inspection found.
    pub fn inspection(&self) -> &InspectReport {
        &self.report
    }
    /// How the plugin is isolated.
    pub fn isolation(&self) -> Isolation {
        self.enforcement.isolation
    }
    /// The (first) worker's process id (process isolation, while the worker runs).
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.executor {
            Executor::Process(p) => p.worker_pid(),
            Executor::Thread(_) => None,
        }
    }
    /// Every running worker's process id, in the order they were started (process
    /// isolation; empty in thread mode and once a fault ended the workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        match &self.executor {
            Executor::Process(p) => p.worker_pids(),
            Executor::Thread(_) => Vec::new(),
        }
    }
    /// What the sandbox enforces on the plugin's thread or worker.
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }
}
