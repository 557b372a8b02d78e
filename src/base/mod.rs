//! The bottom layer: formats and primitives that know nothing of the pipeline.
//!
//! Nothing here imports a stage, the policy or the gate. [`ffi`] is the plugin ABI (the C
//! structs and the JSON the plugin exchanges), [`protocol`] the worker channel's frames,
//! [`json`] the typed JSON error, [`capped`] the one size-capped file reader, [`perms`] the
//! ownership and mode checks, [`sealed`] the sealed memfd that holds verified bytes, [`settings`] the isolation
//! and limits several stages read, [`name`] and [`version`] the plugin name alphabet and
//! semver versions several stages check, and
//! [`escape`] the escaping every printed error and report goes through, and [`freshness`]
//! the error of the TUF freshness check (here so that the error tree can hold it).

pub mod capped;
pub(crate) mod encode;
pub mod escape;
pub(crate) mod ffi;
pub(crate) mod freshness;
pub(crate) mod host_abi;
pub(crate) mod json;
pub(crate) mod name;
pub(crate) mod perms;
pub(crate) mod protocol;
pub(crate) mod sealed;
pub(crate) mod settings;
#[cfg(skillgate_stamps)]
#[doc(hidden)]
pub mod stamps;
#[cfg(not(skillgate_stamps))]
mod stamps;
pub(crate) mod version;
