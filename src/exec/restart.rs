//! A plugin's worker processes, restartable from what the load already verified.
//!
//! A fault ends a plugin's workers and poisons the handle; nothing restarts by itself (a
//! plugin that crashes on some input would otherwise be fed it again and again). The host
//! may restart it explicitly: [`Workers::restart`] starts fresh workers exactly as the load
//! did — the same sealed memfd of the verified library, the same signed manifest, the
//! same sandbox plan (whose grant descriptors were opened at load) — and swaps them in.
//! Nothing is read from disk and nothing unsigned is parsed again: the worker re-checks
//! the memfd's seals, size and SHA-256 against the signed manifest as it does at load.
//!
//! Calls clone the current set's `Arc` and run on it, so a call in flight when the swap
//! happens finishes on the workers it started on (bounded by its deadline), and those end
//! when the last call holding them returns.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::base::ffi::{FaultError, PluginResult};
use crate::base::settings::Limits;
use crate::pipeline::load::Loadable;
use crate::pipeline::manifest::Manifest;
use crate::sandbox::{Enforcement, SandboxPlan};

use super::ExecError;
use super::host::ProcessExecutor;
use super::options::CallOptions;
use super::pool::Pool;
use super::set::WorkerSet;
use super::tools::{CallExtras, ToolEnv};

/// What starting a plugin's workers needs, kept for restarts.
#[derive(Debug)]
pub(crate) struct WorkerSpec {
    /// The sealed copy of the verified library.
    pub(crate) library: Loadable,
    pub(crate) limits: Limits,
    pub(crate) plan: SandboxPlan,
    /// The worker program.
    pub(crate) worker: PathBuf,
    /// How many workers (at least one).
    pub(crate) count: usize,
    /// What the plugin's host tool requests are judged by, given to every worker started.
    pub(crate) tools: Arc<ToolEnv>,
}

/// The workers of one loaded plugin and what starting them again needs.
#[derive(Debug)]
pub(crate) struct Workers {
    set: RwLock<Arc<WorkerSet>>,
    spec: WorkerSpec,
}

impl Workers {
    /// Starts `spec.count` (at least one) workers, each started and checked as a lone one
    /// is; the first one's report is returned. A worker that fails to start drops (ends)
    /// the ones already started.
    pub(crate) fn start(
        spec: WorkerSpec,
        manifest: &Manifest,
        pool: Option<&Pool>,
    ) -> Result<(Self, Enforcement), ExecError> {
        let (set, report) = start_set(&spec, manifest, pool)?;
        let workers = Workers {
            set: RwLock::new(Arc::new(set)),
            spec,
        };
        Ok((workers, report))
    }

    /// The set serving now.
    fn current(&self) -> Arc<WorkerSet> {
        // The lock guards one `Arc` swap; nothing panics while holding it.
        let set = self
            .set
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&set)
    }

    /// Runs one call on the workers serving now; with its outcome, the pid of the worker
    /// it went to (see [`WorkerSet::call_with`]).
    pub(crate) fn call_with(
        &self,
        input: &[u8],
        options: &CallOptions,
        extras: CallExtras,
    ) -> (Result<PluginResult, FaultError>, Option<u32>) {
        self.current().call_with(input, options, extras)
    }

    /// Starts fresh workers from the sealed copy (no pool: a restart takes no worker meant
    /// for a load) and swaps them in; calls in flight finish on the old ones.
    pub(crate) fn restart(&self, manifest: &Manifest) -> Result<Enforcement, ExecError> {
        let (set, report) = start_set(&self.spec, manifest, None)?;
        let old = {
            let mut current = self
                .set
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *current, Arc::new(set))
        };
        // Ended here unless a call still holds it (then when that call returns).
        drop(old);
        Ok(report)
    }

    /// Whether a fault ended the workers serving now.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.current().is_poisoned()
    }

    /// The first worker's process id, while it runs.
    pub(crate) fn worker_pid(&self) -> Option<u32> {
        self.current().worker_pid()
    }

    /// Every running worker's process id, in the order they were started.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.current().worker_pids()
    }
}

fn start_set(
    spec: &WorkerSpec,
    manifest: &Manifest,
    pool: Option<&Pool>,
) -> Result<(WorkerSet, Enforcement), ExecError> {
    let mut executors = Vec::new();
    let mut first_report = None;
    for _ in 0..spec.count.max(1) {
        let (mut e, report) = ProcessExecutor::start(
            spec.library.sealed(),
            manifest,
            &spec.limits,
            spec.plan.clone(),
            &spec.worker,
            pool,
        )?;
        e.set_tools(Arc::clone(&spec.tools));
        executors.push(e);
        first_report.get_or_insert(report);
    }
    let report = first_report.ok_or(FaultError::Poisoned)?;
    Ok((WorkerSet::new(executors), report))
}
