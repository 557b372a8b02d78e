//! What this kernel and setup give a policy (`skillgate doctor`): whether a plugin could
//! load here at all, found out before any plugin is at stake.
//!
//! Nothing is re-implemented: the Landlock ABI comes from the sandbox's own query, the
//! sandbox trial is the sandbox's own `load_sandboxed` with the policy's
//! requirement and an empty plan, run on a throwaway thread (the restrictions are the
//! thread's and end with it), the worker is looked for as [`crate::Gate`] looks for it, and
//! the namespaces are asked of the kernel by a child, as a worker would ask.

use crate::base::settings::Isolation;
use crate::exec::probe::{Namespace, child_can_enter};
use crate::exec::worker::WorkerProgram;
use crate::pipeline::load::LoadError;
use crate::pipeline::manifest::Capabilities;
use crate::sandbox::{
    Enforcement, LANDLOCK_ABI_NUMBER, Requirement, SandboxError, SandboxPlan, SandboxPolicy,
    WorkspaceOffer, kernel_landlock_abi, load_sandboxed,
};

use super::Policy;

/// What [`diagnose`] found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Diagnosis {
    /// How much of the sandbox the policy requires.
    pub requirement: Requirement,
    /// The isolation the policy asks for.
    pub isolation: Isolation,
    /// The kernel's Landlock ABI (0 when Landlock is unavailable or disabled).
    pub landlock_abi: u8,
    /// The Landlock ABI this build handles (full enforcement means this one).
    pub landlock_abi_handled: u8,
    /// The sandbox applied to a throwaway thread as the policy requires: what was enforced,
    /// or why it could not be.
    pub sandbox: Result<Enforcement, SandboxError>,
    /// Whether a child can enter a new user namespace (a worker uses one where it can).
    pub user_namespace: Result<(), std::io::Error>,
    /// Whether a child can enter a new network namespace (after a user namespace).
    pub net_namespace: Result<(), std::io::Error>,
    /// The worker executable, found as a [`crate::Gate`] finds it (process isolation
    /// needs it; looked for in thread mode too, for a later switch).
    pub worker: Result<WorkerProgram, LoadError>,
    /// Workers a process-mode Gate keeps waiting (`pool.size`), started with its first
    /// process-mode load; 0 when the pool is off or under thread isolation.
    pub pool_size: usize,
}

impl Diagnosis {
    /// What the policy needs that this setup does not give; empty when a plugin the
    /// policy accepts can load here.
    pub fn unmet(&self) -> Vec<String> {
        let mut unmet = Vec::new();
        match &self.sandbox {
            Ok(e) if !e.seccomp => unmet.push("the seccomp filter is not installed".to_owned()),
            Ok(_) => {}
            Err(e) => unmet.push(format!(
                "the sandbox the policy requires ({}): {}",
                match self.requirement {
                    Requirement::Full => "Landlock fully enforced and seccomp",
                    _ => "seccomp, Landlock as far as the kernel goes",
                },
                crate::error::chain(e)
            )),
        }
        if self.isolation == Isolation::Process
            && let Err(e) = &self.worker
        {
            unmet.push(format!(
                "process isolation needs the worker: {}",
                crate::error::chain(e)
            ));
        }
        unmet
    }

    /// Whether a plugin the policy accepts can load here.
    pub fn can_load(&self) -> bool {
        self.unmet().is_empty()
    }
}

/// Finds out what this kernel and setup give `policy` (module docs). Applies a sandbox to
/// a thread it starts and forks two short-lived children; changes nothing else.
pub fn diagnose(policy: &Policy) -> Diagnosis {
    let requirement = if policy.danger.is_sandbox_best_effort() {
        Requirement::BestEffort
    } else {
        Requirement::Full
    };
    let sandbox = SandboxPlan::new(
        &SandboxPolicy::default(),
        &policy.danger,
        &Capabilities::default(),
        WorkspaceOffer::default(),
        &[],
    )
    .and_then(|plan| {
        std::thread::Builder::new()
            .name("skillgate-doctor".to_owned())
            .spawn(move || {
                load_sandboxed(&plan, Isolation::Thread, |_| Ok::<(), SandboxError>(()))
                    .map(|((), enforcement)| enforcement)
            })
            .map_err(|e| SandboxError::LoaderThread(crate::sandbox::LoaderThreadError::Spawn(e)))
            .and_then(|trial| {
                trial.join().unwrap_or(Err(SandboxError::LoaderThread(
                    crate::sandbox::LoaderThreadError::Panicked,
                )))
            })
    });
    Diagnosis {
        requirement,
        isolation: policy.isolation,
        landlock_abi: kernel_landlock_abi(),
        landlock_abi_handled: LANDLOCK_ABI_NUMBER,
        sandbox,
        user_namespace: child_can_enter(Namespace::User),
        net_namespace: child_can_enter(Namespace::Net),
        worker: crate::exec::worker::find(policy.worker.as_deref()),
        pool_size: match policy.isolation {
            Isolation::Process => policy.pool_size,
            Isolation::Thread => 0,
        },
    }
}
