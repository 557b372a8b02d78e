//! The error tree: one enum per pipeline stage, gathered in [`Error`].
//!
//! Each variant of [`Error`] names the stage that refused; the stage enum names what was
//! wrong and carries the values involved (paths, key ids, expected and actual hashes).
//! Tests match on variants, never on message text.
//!
//! Messages carry text a plugin or the filesystem chose (names, serde's "unknown field"
//! text, a worker's details, file names), so [`Error`]'s `Display` writes its message
//! through [`crate::base::escape::EscapeWriter`]: control characters come out as `\u{…}`, and one
//! error is one line, for every host that prints it. The stage enums' own `Display` is raw;
//! print them through [`crate::base::escape::Escaped`] (or [`chain`], which adds their
//! sources). For the same reason [`Error`] reports no `source()`: its message already holds
//! the stage error's, and printers that walk a source chain (anyhow's `{:#}`, `tracing`'s
//! error recording) would reach that raw text. The typed stage error is the variant's field.
//!
//! # No message repeats itself
//!
//! One convention holds for every error in the crate: **an inner error's text appears once,
//! either in its parent's message or as its parent's `source()`, never both.**
//!
//! - A variant that writes the inner error into its message (`"…: {0}"`, `"…: {detail}"`)
//!   returns no `source()`: no `#[source]`/`#[from]` on that field; a `From` it needs is
//!   written out by hand.
//! - A variant whose inner error is its `source()` (a field named `source`, which thiserror
//!   always makes the source) leaves it out of its message.
//! - `#[error(transparent)]` passes both on unchanged.
//!
//! [`Error`]'s `Display` then writes the stage error's message followed by every
//! `source()` beneath it (`": "` between), each once: the whole story, one line, escaped,
//! whichever way an error was built. A printer that walks a chain itself (anyhow's `{:#}`)
//! gets the same text from a stage error without a segment twice; `tests/verdicts.rs`
//! checks both on a table of refusals, through the command line too.

mod fleet;

// Every stage error and the types its variants carry, so a host can match any refusal
// from this one module.
pub use crate::base::capped::{CappedError, FileKind};
pub use crate::base::ffi::{AbiError, FaultError, InputError};
pub use crate::base::freshness::{FreshnessError, TufRole};
pub use crate::base::host_abi::RequestError;
pub use crate::base::json::{JsonError, JsonErrorKind};
pub use crate::base::perms::{Exposure, PermsError, WritableByOthers};
pub use crate::base::protocol::{FrameError, PayloadError, ProtocolViolation, Tag};
pub use crate::base::settings::{FreshnessSettingError, LimitError};
pub use crate::base::version::VersionError;
pub use crate::exec::ExecError;
pub use crate::pipeline::inspect::{InspectError, MalformedElf};
pub use crate::pipeline::load::{LibraryRefusal, LoadError, SelfWorker};
pub use crate::pipeline::locate::LocateError;
pub use crate::pipeline::manifest::{ExpiryProblem, ManifestError, TimestampError};
pub use crate::pipeline::verify::{IntegrityError, VerifyError};
pub use crate::policy::{PolicyError, TrustSectionError};
pub use crate::sandbox::seccomp::BuildError;
pub use crate::sandbox::{
    GrantError, LandlockError, LandlockStep, LoaderThreadError, OsError, SandboxError,
};
pub use crate::trust::error::{
    KeyError, KeyOrigin, MarkProblem, PasswordError, RevocationError, SignatureError,
    SignatureFileError, TrustError,
};
pub use fleet::{FleetError, ReferenceError};

/// Any failure on the way from a path to a plugin result. Its `Display` is escaped (see the
/// module documentation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host policy is invalid or asks for what this build cannot do.
    Policy(PolicyError),
    /// The trust store or a key file could not be used.
    Key(KeyError),
    /// The plugin path or one of its files was refused before anything was verified.
    Locate(LocateError),
    /// The manifest's signatures did not establish trust.
    Signature(SignatureError),
    /// The signers, expiry or version of an authentic manifest break the trust policy
    /// (signer rules, revocation, expiry, minimum version, rollback).
    Trust(TrustError),
    /// The signed manifest is malformed or breaks a rule.
    Manifest(ManifestError),
    /// A file disagrees with the signed manifest.
    Integrity(IntegrityError),
    /// The library failed ELF inspection; none of its code ran.
    Inspect(InspectError),
    /// The plugin thread could not be restricted as the policy requires; the library was
    /// not opened.
    Sandbox(SandboxError),
    /// The dynamic loader failed.
    Load(LoadError),
    /// The loaded plugin disagrees with its manifest or the host's ABI.
    Abi(AbiError),
    /// The plugin misbehaved during a call.
    Fault(FaultError),
    /// The call's input could not be serialized.
    Input(InputError),
    /// The policy's TUF repository does not list the release as current (or could not be
    /// read): `skillgate::fleet::freshness`.
    Freshness(FreshnessError),
    /// A pull from (or push to) an OCI registry refused or failed (`crate::fleet`).
    Fleet(FleetError),
}

/// `From` for each stage error, without making it a `source()` (see the module docs).
macro_rules! from_stage {
    ($($variant:ident($ty:ty),)*) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$variant(e)
            }
        })*
    };
}

from_stage! {
    Policy(PolicyError),
    Key(KeyError),
    Locate(LocateError),
    Signature(SignatureError),
    Trust(TrustError),
    Manifest(ManifestError),
    Integrity(IntegrityError),
    Inspect(InspectError),
    Sandbox(SandboxError),
    Load(LoadError),
    Abi(AbiError),
    Fault(FaultError),
    Input(InputError),
    Freshness(FreshnessError),
    Fleet(FleetError),
}

/// The verify stage's error is the variant of the step that refused, as it was before the
/// stage had an error of its own: hosts match `Error::Locate`, `Error::Integrity`, ….
impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Locate(e) => Error::Locate(e),
            VerifyError::Signature(e) => Error::Signature(e),
            VerifyError::Manifest(e) => Error::Manifest(e),
            VerifyError::Trust(e) => Error::Trust(e),
            VerifyError::Integrity(e) => Error::Integrity(e),
        }
    }
}

/// An executor's error is the stage error it carries, as the same top-level variant it
/// was before the executors had their own enum.
impl From<ExecError> for Error {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Sandbox(e) => Error::Sandbox(e),
            ExecError::Load(e) => Error::Load(e),
            ExecError::Abi(e) => Error::Abi(e),
            ExecError::Fault(e) => Error::Fault(e),
            ExecError::Input(e) => Error::Input(e),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind(), self.detail())
    }
}

/// An error and every `source()` beneath it, `": "` between, each once, escaped: how the
/// crate prints a stage error whose inner error is its `source()` (module docs).
pub fn chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl std::fmt::Display + 'a {
    Chain(e)
}

struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut out = crate::base::escape::EscapeWriter(f);
        write!(out, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(out, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
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
    /// The word that starts the message: the stage or part that failed (`"integrity"`,
    /// `"inspect"`, `"plugin fault"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Policy(_) => "policy",
            Error::Key(_) => "keys",
            Error::Locate(_) => "locate",
            Error::Signature(_) => "signature",
            Error::Trust(_) => "trust",
            Error::Manifest(_) => "manifest",
            Error::Integrity(_) => "integrity",
            Error::Inspect(_) => "inspect",
            Error::Sandbox(_) => "sandbox",
            Error::Load(_) => "load",
            Error::Abi(_) => "abi",
            Error::Fault(_) => "plugin fault",
            Error::Input(_) => "input",
            Error::Freshness(_) => "freshness",
            Error::Fleet(_) => "fleet",
        }
    }

    /// The stage error as the part of the message after [`Error::kind`]: its message and
    /// every `source()` beneath it, escaped (for a printer that names the kind itself, as
    /// `skillgate`'s "plugin fault: DIR: …" does).
    pub fn detail(&self) -> String {
        chain(self.stage_error()).to_string()
    }

    /// The stage error inside, as a `std::error::Error`.
    fn stage_error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Error::Policy(e) => e,
            Error::Key(e) => e,
            Error::Locate(e) => e,
            Error::Signature(e) => e,
            Error::Trust(e) => e,
            Error::Manifest(e) => e,
            Error::Integrity(e) => e,
            Error::Inspect(e) => e,
            Error::Sandbox(e) => e,
            Error::Load(e) => e,
            Error::Abi(e) => e,
            Error::Fault(e) => e,
            Error::Input(e) => e,
            Error::Freshness(e) => e,
            Error::Fleet(e) => e,
        }
    }

    /// What to do about it, where the answer does not depend on the host's intent: the
    /// linker flags for an ELF refusal, re-signing for a file that changed, and so on.
    /// `None` where only the host's administrator can judge (a trust rule, a revocation).
    pub fn fix(&self) -> Option<&'static str> {
        Some(match self {
            Error::Inspect(e) => e.fix(),
            Error::Signature(SignatureError::Missing) => {
                "sign the plugin directory: skill-sign sign DIR --secret-key KEY"
            }
            Error::Signature(SignatureError::EmptyTrustStore) => {
                "put the signer's public key in the trust store (the policy's `keys` directory)"
            }
            Error::Signature(SignatureError::NoTrustedSignature { .. }) => {
                "sign with a key the host trusts, or add the signer's public key to the trust store"
            }
            Error::Signature(SignatureError::Invalid { .. }) => {
                "plugin.json or its signature changed after signing: re-sign it (skill-sign sign DIR)"
            }
            Error::Integrity(IntegrityError::Seal(_)) => return None,
            Error::Integrity(_) => {
                "restore the signed files, or re-sign the directory after changing them (skill-sign sign DIR)"
            }
            Error::Sandbox(SandboxError::LandlockNotEnforced { .. }) => {
                "run on a kernel with Landlock enabled at the ABI this build handles (`skillgate doctor` shows what this one gives)"
            }
            Error::Load(LoadError::WorkerNotFound { .. }) => {
                "call skillgate::worker::run_if_worker() first thing in the host's main, or set `worker` in the policy to a skillgate-worker executable"
            }
            Error::Load(LoadError::WorkerMissing { .. }) => {
                "point `worker` in the policy at an existing skillgate-worker executable, or remove it to use the host itself"
            }
            Error::Abi(AbiError::MetadataMismatch { .. }) => {
                "make the library's vtcode_plugin_metadata agree with the signed plugin.json, then re-sign"
            }
            Error::Abi(AbiError::VersionMismatch { .. }) => {
                "build the plugin for ABI version 1 and say so in plugin.json's abi_version"
            }
            _ => return None,
        })
    }

    /// Classifies the error for exit codes.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Policy(_) | Error::Key(_) | Error::Input(_) => ErrorClass::Usage,
            Error::Locate(e) if e.is_io() => ErrorClass::Usage,
            Error::Freshness(e) if e.is_host_problem() => ErrorClass::Usage,
            Error::Fault(_) => ErrorClass::Fault,
            Error::Fleet(FleetError::Verify { error, .. }) => error.class(),
            Error::Fleet(e) if e.is_usage() => ErrorClass::Usage,
            _ => ErrorClass::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Details a worker process sends (after `dlopen`, plugin code writes them) and the
    /// loader's own text reach the message as they came; the printed form escapes them.
    #[test]
    fn worker_sent_details_are_printed_escaped() {
        let hostile = "\u{1b}[2J\nskillgate: forged line\u{9b}31m\u{202e}";
        let errors = [
            Error::Load(LoadError::Worker {
                detail: hostile.to_owned(),
            }),
            Error::Load(LoadError::Dlopen {
                detail: hostile.to_owned(),
            }),
            Error::Sandbox(SandboxError::Worker {
                detail: hostile.to_owned(),
            }),
            Error::Fault(FaultError::Protocol(
                crate::base::protocol::ProtocolViolation::Unconfirmed {
                    what: "namespaces",
                    reported: hostile.to_owned(),
                    observed: hostile.to_owned(),
                },
            )),
        ];
        for err in errors {
            // No source chain leads around the escaping.
            assert!(std::error::Error::source(&err).is_none());
            let text = err.to_string();
            assert!(
                !text.chars().any(crate::base::escape::needs_escape),
                "{text:?}"
            );
            assert!(
                text.ends_with(r"\u{1b}[2J\u{a}skillgate: forged line\u{9b}31m\u{202e}"),
                "{text}"
            );
        }
    }

    /// The verify stage's own error reaches hosts as the top-level variant of the step that
    /// refused, as before the stage had one, with the step's error unchanged inside.
    #[test]
    fn a_verify_error_becomes_the_variant_of_the_step_that_refused() {
        let path = std::path::PathBuf::from("/plugins/x");
        type Expect = fn(&Error) -> bool;
        let cases: [(VerifyError, Expect); 5] = [
            (
                VerifyError::Locate(LocateError::NotFound { path: path.clone() }),
                |e| matches!(e, Error::Locate(LocateError::NotFound { path }) if path.ends_with("x")),
            ),
            (VerifyError::Signature(SignatureError::Missing), |e| {
                matches!(e, Error::Signature(SignatureError::Missing))
            }),
            (VerifyError::Manifest(ManifestError::Missing), |e| {
                matches!(e, Error::Manifest(ManifestError::Missing))
            }),
            (
                VerifyError::Trust(TrustError::NoRule {
                    plugin: "x".into(),
                    signers: Vec::new(),
                }),
                |e| matches!(e, Error::Trust(TrustError::NoRule { plugin, .. }) if plugin == "x"),
            ),
            (
                VerifyError::Integrity(IntegrityError::MissingFile {
                    dir: path.clone(),
                    file: "libx.so".into(),
                }),
                |e| matches!(e, Error::Integrity(IntegrityError::MissingFile { file, .. }) if file == "libx.so"),
            ),
        ];
        for (verify, expect) in cases {
            let shown = verify.to_string();
            let err = Error::from(verify);
            assert!(expect(&err), "{shown} became {err:?}");
            // The same words, the stage first, either way it is printed.
            assert_eq!(err.to_string(), shown);
        }
    }

    /// A malformed payload's parser text holds what the worker sent (here a field name it
    /// chose); the printed form escapes it.
    #[test]
    fn a_malformed_payload_is_printed_escaped() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Report {
            #[allow(dead_code)]
            seccomp: bool,
        }
        let hostile = "\u{1b}[2J\nforged\u{202e}";
        let wire = format!(
            "{{{}: true}}",
            serde_json::to_string(hostile).unwrap_or_default()
        );
        let Err(e) = serde_json::from_str::<Report>(&wire) else {
            panic!("an unknown field was accepted");
        };
        let err = Error::Fault(FaultError::Protocol(
            crate::base::protocol::ProtocolViolation::Malformed {
                tag: crate::base::protocol::Tag::Restricted,
                reason: crate::base::protocol::PayloadError::json(e),
            },
        ));
        let text = err.to_string();
        assert!(
            !text.chars().any(crate::base::escape::needs_escape),
            "{text:?}"
        );
        assert!(text.contains(r"\u{1b}[2J\u{a}forged\u{202e}"), "{text}");
    }

    /// A call input that cannot be written as JSON is an [`InputError`] carrying the JSON
    /// failure's kind and text, and [`Error`]'s message includes that text.
    #[test]
    fn an_input_error_carries_the_json_failure() {
        struct Refuses;
        impl serde::Serialize for Refuses {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom(
                    "this value refuses to be written",
                ))
            }
        }
        let Err(e) = serde_json::to_vec(&Refuses) else {
            panic!("a value that refuses was written as JSON");
        };
        let err = Error::Input(InputError::json(e));
        match &err {
            Error::Input(InputError::Json(e)) => {
                assert_eq!(e.kind(), crate::base::json::JsonErrorKind::Data);
                assert!(e.to_string().contains("refuses to be written"), "{e}");
            }
            other => panic!("expected Input(Json), got {other:?}"),
        }
        assert!(err.to_string().contains("refuses to be written"), "{err}");
        assert_eq!(err.class(), ErrorClass::Usage);
    }
}
