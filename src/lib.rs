//! skillgate: a verifying loader for native skill plugins.
//!
//! A plugin is a directory holding a signed `plugin.json` manifest, its signature file
//! and a `lib<name>.so` that exports the VT Code plugin ABI. skillgate moves it through a
//! pipeline in which every stage produces a value only that stage can build, so there is
//! no way to reach `dlopen` without passing every check:
//!
//! ```text
//! path ─locate─▶ PluginDir ─verify─▶ Verified<Bundle> ─inspect─▶ Inspected ─load─▶ LoadedPlugin ─execute─▶ PluginResult
//! ```
//!
//! - locate: the path must lie beneath a trusted root; files are opened by descriptor
//!   beneath it, never through a symlink, regular files only, sizes capped before reading.
//! - verify: an Ed25519 signature (strict verification, weak keys refused) over a domain
//!   tag and the exact manifest bytes, checked before the manifest is parsed; then the
//!   signer rules, and the SHA-256 and size of every file in the directory.
//! - [`inspect`]: the verified library bytes are inspected as ELF before any `dlopen`.
//! - load and execute: the verified bytes are copied once into a sealed memfd, which is what
//!   the dynamic loader maps, in a worker process (or on the plugin's own thread) that has
//!   restricted itself with Landlock and seccomp first, and which runs every call one at a
//!   time.
//!
//! # What is public
//!
//! A host needs [`Gate`] (built from a [`Policy`], read from a file or made with
//! [`PolicyBuilder`]), the [`LoadedPlugin`] it returns with its [`Enforcement`], the
//! [`inspect`] report, and the [`error`] tree, in which every refusal has its own variant;
//! a host that offers its plugins tools registers them from [`tools`] and passes
//! [`CallOptions`] (a progress callback, a deadline of its own, a [`CancelToken`]) to
//! [`LoadedPlugin::execute_with`].
//! An author needs [`keys`] and [`sign`]. [`compat`] keeps VT Code's names; [`danger`] holds
//! every knob that weakens a check. Everything else is private to the crate.
//!
//! # Layout
//!
//! The source is layered; imports point down only, and `tests/layers.rs` checks that on
//! every test run:
//!
//! | layer | folder | what it holds |
//! |---|---|---|
//! | 0 | `base/`, `danger.rs`, `audit.rs` | formats and primitives: the plugin ABI, worker frames, JSON errors, the capped reader, sealed memfds, escaping, settings; the weakening knobs; the audit events |
//! | 1 | `trust/` | keys, minisign's key files, the trust store, signature files, revocation, version marks, signer rules |
//! | 2 | `pipeline/` | the stages: locate, digest, manifest, verify, inspect, load |
//! | 3 | `sandbox/` | the plan, grants, Landlock rulesets, the seccomp program |
//! | 4 | `exec/` | the thread executor; the worker's host side, child side and protocol |
//! | 5 | `policy/`, `error.rs` | the policy and the error tree, each composing what the stages own |
//! | 6 | `gate.rs`, `call.rs`, `compat.rs`, `sign.rs` | what hosts and authors call |
#![deny(unsafe_code)]
// The public API is what lib.rs re-exports: an item `pub` in a private module is a
// mistake (unreachable_pub), and so is a public signature naming a type a host cannot
// name (unnameable_types). CI's clippy run turns both into errors.
#![warn(unnameable_types, unreachable_pub)]

mod audit;
mod base;
pub mod compat;
pub mod danger;
pub mod error;
mod exec;
pub mod fleet;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod gate;
pub mod live;
mod pipeline;
pub mod policy;
mod sandbox;
pub mod sign;
mod trust;

pub use base::{capped, escape};
pub use pipeline::inspect;

/// Keys, the trust store and key revocation: what an author signs with and what a host
/// trusts.
pub mod keys {
    pub use crate::trust::keys::{KeyError, KeyId, KeyOrigin, MalformedKeyId, PasswordError};
    pub use crate::trust::keys::{MAX_KEY_FILE_SIZE, PublicKey, SecretKey};
    pub use crate::trust::minisign::KdfParams;
    pub use crate::trust::revocation::{
        REVOCATION_DOMAIN_TAG, REVOCATION_FORMAT, REVOCATION_SUFFIX, REVOCATION_THRESHOLD,
        Revocation, RevocationStatement,
    };
    pub use crate::trust::store::TrustStore;
}

/// Process isolation's worker: the hook that lets a host's own executable be its worker
/// ([`worker::run_if_worker`], called first in `main`) and the choice of the program a
/// worker runs (see [Finding the worker](Gate#finding-the-worker)).
pub mod worker {
    pub use crate::exec::worker::{
        WORKER_ARG, WorkerProgram, find, run_if_worker, this_executable,
    };
    pub use crate::pipeline::load::SelfWorker;
}

/// Host tools: what a plugin may ask its host to do through the optional export
/// `skillgate_plugin_host_v1` (the host extension ABI, version [`tools::HOST_TABLE_VERSION`];
/// see the README's "Host tools" and `include/skillgate_plugin.h`). A host registers a
/// [`tools::HostTools`] with [`Gate::with_host_tools`]; a request is answered only for a tool
/// the plugin's signed manifest (`"tools"`) and the policy (`host_tools.allow`) both name.
pub mod tools {
    pub use crate::base::host_abi::{HOST_TABLE_VERSION, HostTableV1, RequestError};
    pub use crate::exec::builtin_tools::WorkspaceTools;
    pub use crate::exec::tools::{HostTools, ToolCaller, ToolError};
}

/// The signed manifest as a loaded plugin's [`LoadedPlugin::manifest`] returns it: its
/// name, version, files and the capabilities it requests.
pub mod manifest {
    pub use crate::base::settings::WorkspaceAccess;
    pub use crate::base::version::Version;
    pub use crate::pipeline::manifest::{Capabilities, FileEntry, Manifest};
}

/// The version marks that refuse rollbacks, for the administrator who must read or reset
/// one (`skillgate reset-version`).
pub mod state {
    pub use crate::base::version::Version;
    pub use crate::trust::marks::{read_version_mark, reset_version_mark};
}

pub use base::ffi::{
    PLUGIN_ABI_VERSION, PluginContext, PluginMetadata, PluginMetadataFFI, PluginResult,
    PluginResultFFI,
};
pub use compat::{NativePlugin, NativePluginTrait, PluginLoader, validate_plugin_structure};
pub use error::Error;
pub use exec::cancel::CancelToken;
pub use exec::options::CallOptions;
pub use gate::{Gate, GateStats, LoadOptions, LoadedPlugin, StageError};
pub use keys::{KeyId, PublicKey, SecretKey, TrustStore};
pub use live::{LivePlugin, Reloaded};
pub use pipeline::inspect::{InspectReport, Inspected};
pub use pipeline::stage::Stage;
pub use pipeline::verify::{Bundle, Verified};
pub use policy::{Isolation, Limits, Policy, PolicyBuilder};
pub use sandbox::{Enforcement, LandlockStatus, TaskBound, WorkspaceGrant};
