//! Running a loaded plugin: on its own thread in this process ([`thread`], which hands each
//! call over through [`handoff`]) or in a worker
//! process (`host` starts and drives it, `child` is the worker's own side, `init` the
//! protocol between them; `set` gives one plugin several workers) started by the spawner from the program `worker` finds (this
//! executable itself, re-executed, when it called `worker::run_if_worker`); `log` drains a
//! worker's stdout and stderr into the plugin's log). `tools` answers a plugin's host tool
//! requests and progress messages in both modes (`child_tools` is the worker's table,
//! `builtin_tools` the `workspace.*` tools).
//!
//! These modules return [`ExecError`], never the crate's top-level error: what a load or a
//! call can fail with here is the sandbox's, the loader's, the ABI check's or a fault, and
//! [`crate::error`] flattens each into the same top-level variant.

pub(crate) mod builtin_tools;
pub(crate) mod cancel;
mod cgroup;
mod channel;
pub(crate) mod child;
mod child_tools;
mod confirm;
mod cpu_hint;
mod handoff;
pub(crate) mod host;
mod init;
mod log;
pub(crate) mod options;
pub(crate) mod pool;
pub(crate) mod probe;
pub(crate) mod resident;
pub(crate) mod restart;
pub(crate) mod ring;
pub(crate) mod set;
mod spawner;
pub(crate) mod thread;
pub(crate) mod tools;
pub(crate) mod worker;

use crate::base::ffi::{AbiError, FaultError, InputError};
use crate::pipeline::load::LoadError;
use crate::sandbox::SandboxError;

/// Why a plugin could not be started or run by an executor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The sandbox could not be applied.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The library could not be loaded (or the worker refused it).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The loaded plugin disagrees with its manifest or the host's ABI.
    #[error(transparent)]
    Abi(#[from] AbiError),
    /// The plugin or its worker misbehaved.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// A message to the worker could not be written.
    #[error(transparent)]
    Input(#[from] InputError),
}
