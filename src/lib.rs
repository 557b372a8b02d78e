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
//! - [`locate`]: the path must lie beneath a trusted root; files are opened by descriptor
//!   beneath it, never through a symlink, regular files only, sizes capped before reading.
//! - [`signature`] and [`keys`]: an Ed25519 signature (strict verification, weak keys
//!   refused) over a domain tag and the exact manifest bytes, checked before the manifest
//!   is parsed.
//! - [`manifest`]: the signed manifest, parsed strictly; [`verify`] then checks the SHA-256
//!   and size of every file in the directory against it.
//! - [`inspect`]: the verified library bytes are inspected as ELF before any `dlopen`.
//! - [`load`] and [`executor`]: the verified bytes are copied once into a sealed memfd,
//!   which is what the dynamic loader maps, on the plugin's own thread, which then runs
//!   every call one at a time.
//!
//! [`Gate`] is the hardened host's entry point; [`compat`] keeps VT Code's names.
#![deny(unsafe_code)]

pub mod base;
pub mod compat;
pub mod danger;
pub mod error;
pub mod exec;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod pipeline;
pub mod policy;
pub mod sandbox;
pub mod sign;
pub mod trust;

// The paths of the flat layout, kept while the API is narrowed.
pub use base::{capped, escape, ffi, json, perms, protocol, sealed};
pub use exec::{thread as executor, worker};
pub use pipeline::{inspect, load, locate, manifest, verify};
pub use sandbox::seccomp;
pub use trust::{keys, signature};

pub use compat::{NativePlugin, NativePluginTrait, PluginLoader, validate_plugin_structure};
pub use error::Error;
pub use ffi::{
    PLUGIN_ABI_VERSION, PluginContext, PluginMetadata, PluginMetadataFFI, PluginResult,
    PluginResultFFI,
};
pub use gate::{Gate, LoadedPlugin};
pub use keys::{KeyId, PublicKey, SecretKey};
pub use policy::{Isolation, Policy};
pub use trust::store::TrustStore;
pub use verify::{Bundle, Verified};
