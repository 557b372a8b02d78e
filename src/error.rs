//! The error tree: one enum per pipeline stage, gathered in [`Error`].
//!
//! Each variant of [`Error`] names the stage that refused; the stage enum names what was
//! wrong and carries the values involved (paths, key ids, expected and actual hashes).
//! Tests match on variants, never on message text.

use crate::ffi::{AbiError, FaultError};
use crate::inspect::InspectError;
use crate::keys::KeyError;
use crate::load::LoadError;
use crate::locate::LocateError;
use crate::manifest::ManifestError;
use crate::policy::PolicyError;
use crate::sandbox::SandboxError;
use crate::signature::SignatureError;
use crate::trust::TrustError;
use crate::verify::IntegrityError;

/// Any failure on the way from a path to a plugin result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host policy is invalid or asks for what this build cannot do.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// The trust store or a key file could not be used.
    #[error("keys: {0}")]
    Key(#[from] KeyError),
    /// The plugin path or one of its files was refused before anything was verified.
    #[error("locate: {0}")]
    Locate(#[from] LocateError),
    /// The manifest's signatures did not establish trust.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signers, expiry or version of an authentic manifest break the trust policy
    /// (signer rules, revocation, expiry, minimum version, rollback).
    #[error("trust: {0}")]
    Trust(#[from] TrustError),
    /// The signed manifest is malformed or breaks a rule.
    #[error("manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// A file disagrees with the signed manifest.
    #[error("integrity: {0}")]
    Integrity(#[from] IntegrityError),
    /// The library failed ELF inspection; none of its code ran.
    #[error("inspect: {0}")]
    Inspect(#[from] InspectError),
    /// The plugin thread could not be restricted as the policy requires; the library was
    /// not opened.
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// The dynamic loader failed.
    #[error("load: {0}")]
    Load(#[from] LoadError),
    /// The loaded plugin disagrees with its manifest or the host's ABI.
    #[error("abi: {0}")]
    Abi(#[from] AbiError),
    /// The plugin misbehaved during a call.
    #[error("plugin fault: {0}")]
    Fault(#[from] FaultError),
    /// The call's input could not be serialized.
    #[error("input: {0}")]
    Input(serde_json::Error),
}

/// How a command line reports an [`Error`]: the exit codes of `skillgate` and `skill-sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A check refused the plugin (exit 1).
    Refused,
    /// Usage, configuration or I/O problem on the host's side (exit 2).
    Usage,
    /// The plugin faulted while running (exit 3).
    Fault,
}

impl ErrorClass {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Refused => 1,
            ErrorClass::Usage => 2,
            ErrorClass::Fault => 3,
        }
    }
}

impl Error {
    /// Classifies the error for exit codes.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Policy(_) | Error::Key(_) | Error::Input(_) => ErrorClass::Usage,
            Error::Locate(e) if e.is_io() => ErrorClass::Usage,
            Error::Fault(_) => ErrorClass::Fault,
            _ => ErrorClass::Refused,
        }
    }
}
