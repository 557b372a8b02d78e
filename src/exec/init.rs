//! The worker protocol's vocabulary, shared by the host side ([`super::host`]) and the
//! worker's own side ([`super::child`]): the descriptor layout, the `Init` message, the
//! worker's load failures and call faults, and the `Loaded` frame.
//!
//! Everything here that the host receives is a hostile worker's to choose: each payload is
//! parsed strictly, and a load failure is accepted only in the phase where the worker could
//! have sent it honestly ([`LoadFailure::into_error`]).

use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::base::ffi::{FaultError, SYMBOL_EXECUTE};
use crate::base::protocol::{PayloadError, ProtocolViolation, Tag};
use crate::pipeline::load::{LibraryRefusal, LoadError};
use crate::sandbox::{SandboxError, SandboxPlan};

use super::ExecError;

/// The worker's descriptor for the sealed library.
pub(super) const WORKER_MEMFD: RawFd = 3;
/// The worker's descriptor for its channel to the host.
pub(super) const WORKER_CHANNEL: RawFd = 4;
/// The worker's descriptor for the shared call region ([`super::ring`]); it stays open there
/// for the worker's life.
pub(crate) const WORKER_RING: RawFd = 5;
/// The worker's first grant descriptor; the others follow it in the plan's order.
pub(super) const WORKER_FIRST_GRANT: RawFd = 6;
// The spawner places the descriptors, and the worker takes them, as one contiguous run
// from WORKER_MEMFD: library, channel, call region, then the grants.
const _: () = assert!(
    WORKER_CHANNEL == WORKER_MEMFD + 1
        && WORKER_RING == WORKER_CHANNEL + 1
        && WORKER_FIRST_GRANT == WORKER_RING + 1
);
/// Most descriptors one hand-over carries: the two log pipes, the library, the call region
/// and the grants.
/// A plan with more grants is started cold (the worker's `RLIMIT_NOFILE` is 64 anyway).
pub(super) const HANDOVER_MAX_FDS: usize = 48;
/// Largest control frame (init, reports, errors).
pub(super) const CONTROL_CAP: usize = 1024 * 1024;
/// Read buffer of each end of the channel: a small frame arrives with one `read`, header
/// and payload together. Frame caps are checked as before; the buffer bounds nothing.
pub(super) const CHANNEL_BUFFER: usize = 64 * 1024;

/// The first frame the host sends: everything the worker needs to restrict and load.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Init {
    pub(super) version: u32,
    pub(super) host_pid: u32,
    pub(super) plan: SandboxPlan,
    pub(super) grants: usize,
    pub(super) output_bytes: usize,
    pub(super) memory_bytes: u64,
    pub(super) cpu_seconds: u64,
    pub(super) file_bytes: u64,
    pub(super) threads: u64,
    /// Whether the host put the worker in a `pids` cgroup of its own (`pids.max` = threads).
    pub(super) cgroup: bool,
    /// The library's SHA-256 and size as the signed manifest gives them: the worker checks
    /// the memfd it was handed against them before `dlopen`.
    pub(super) library_sha256: [u8; 32],
    pub(super) library_size: u64,
    /// What the worker's host table bounds before a request or progress message leaves
    /// it, and the largest tool reply it reads (the host checks all of it again).
    pub(super) tool_request_bytes: usize,
    pub(super) tool_reply_bytes: usize,
    pub(super) progress_bytes: usize,
    /// The layout version of the call region at [`WORKER_RING`] ([`super::ring`]).
    pub(super) ring: u32,
}

/// Why the worker could not load the plugin, as it reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum LoadFailure {
    /// Before `dlopen`: the worker could not set itself up.
    Setup { detail: String },
    /// Before `dlopen`: the sandbox could not be applied.
    Sandbox { detail: String },
    /// Before `dlopen`: the library descriptor is not the sealed, signed bytes.
    Library { refusal: LibraryRefusal },
    /// Before `dlopen`: the worker was not handed the plan's count of grant descriptors.
    GrantDescriptors { expected: usize, given: usize },
    /// Before `dlopen`: a grant descriptor is not the object (or kind) the plan names.
    GrantDescriptorMismatch { index: usize, path: PathBuf },
    /// Before `dlopen`: the call region at [`WORKER_RING`] is missing, or not the sealed
    /// region of the layout `Init` names.
    Region { detail: String },
    /// From `dlopen` (after the report; plugin code may have run, so only ever a refusal).
    Dlopen { detail: String },
    /// A required symbol is missing (after the report, as `Dlopen`).
    Symbol { name: String, detail: String },
}

/// A fault of one call, as the worker reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum CallFault {
    NullResult,
    OutputTooLarge { limit: usize },
}

impl CallFault {
    /// What a call's fault reply means: the call's own fault (the worker serves on), or a
    /// violation if the payload is not a fault.
    pub(super) fn decode(
        payload: &[u8],
    ) -> Result<Result<crate::base::ffi::PluginResult, FaultError>, ProtocolViolation> {
        match serde_json::from_slice::<CallFault>(payload) {
            Ok(CallFault::NullResult) => Ok(Err(FaultError::NullResult {
                function: SYMBOL_EXECUTE,
            })),
            Ok(CallFault::OutputTooLarge { limit }) => Ok(Err(FaultError::OutputTooLarge {
                function: SYMBOL_EXECUTE,
                limit,
            })),
            Err(e) => Err(ProtocolViolation::Malformed {
                tag: Tag::Fault,
                reason: PayloadError::json(e),
            }),
        }
    }
}

/// The `Loaded` frame: `[u32 LE version][u8 metadata status][metadata bytes]`.
pub(super) const LOADED_HEADER: usize = 5;
pub(super) const METADATA_BYTES: u8 = 0;
pub(super) const METADATA_NULL: u8 = 1;
pub(super) const METADATA_TOO_LARGE: u8 = 2;

pub(super) fn static_symbol(name: &str) -> &'static str {
    use crate::base::ffi::{SYMBOL_FREE_STRING, SYMBOL_METADATA, SYMBOL_VERSION};
    [
        SYMBOL_VERSION,
        SYMBOL_METADATA,
        SYMBOL_EXECUTE,
        SYMBOL_FREE_STRING,
    ]
    .into_iter()
    .find(|s| *s == name)
    .unwrap_or("unknown")
}

/// Where a load stands, for deciding which frames may come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Before the worker's report: only its own code has run.
    Restricting,
    /// After the report: the worker is in or past `dlopen`.
    Loading,
}

impl LoadFailure {
    /// The error a load failure means, if it may come at `phase`.
    pub(super) fn into_error(self, phase: Phase) -> Result<ExecError, ProtocolViolation> {
        let waiting = match phase {
            Phase::Restricting => "waiting for the enforcement report",
            Phase::Loading => "waiting for the loaded plugin",
        };
        let unexpected = ProtocolViolation::Unexpected {
            tag: Tag::LoadFailed,
            waiting,
        };
        match (self, phase) {
            (LoadFailure::Setup { detail }, Phase::Restricting) => {
                Ok(LoadError::Worker { detail }.into())
            }
            (LoadFailure::Region { detail }, Phase::Restricting) => Ok(LoadError::Worker {
                detail: format!("call region at fd {WORKER_RING}: {detail}"),
            }
            .into()),
            (LoadFailure::Sandbox { detail }, Phase::Restricting) => {
                Ok(SandboxError::Worker { detail }.into())
            }
            (LoadFailure::Library { refusal }, Phase::Restricting) => {
                Ok(LoadError::Refused(refusal).into())
            }
            (LoadFailure::GrantDescriptors { expected, given }, Phase::Restricting) => {
                Ok(SandboxError::GrantDescriptors { expected, given }.into())
            }
            (LoadFailure::GrantDescriptorMismatch { index, path }, Phase::Restricting) => {
                Ok(SandboxError::GrantDescriptorMismatch { index, path }.into())
            }
            (LoadFailure::Dlopen { detail }, Phase::Loading) => {
                Ok(LoadError::Dlopen { detail }.into())
            }
            (LoadFailure::Symbol { name, detail }, Phase::Loading) => Ok(LoadError::Symbol {
                name: static_symbol(&name),
                detail,
            }
            .into()),
            _ => Err(unexpected),
        }
    }

    pub(super) fn from_error(e: &ExecError) -> LoadFailure {
        match e {
            ExecError::Load(LoadError::Refused(refusal)) => LoadFailure::Library {
                refusal: refusal.clone(),
            },
            ExecError::Sandbox(SandboxError::GrantDescriptors { expected, given }) => {
                LoadFailure::GrantDescriptors {
                    expected: *expected,
                    given: *given,
                }
            }
            ExecError::Sandbox(SandboxError::GrantDescriptorMismatch { index, path }) => {
                LoadFailure::GrantDescriptorMismatch {
                    index: *index,
                    path: path.clone(),
                }
            }
            ExecError::Sandbox(s) => LoadFailure::Sandbox {
                detail: error_chain(s),
            },
            ExecError::Load(LoadError::Dlopen { detail }) => LoadFailure::Dlopen {
                detail: detail.clone(),
            },
            ExecError::Load(LoadError::Symbol { name, detail }) => LoadFailure::Symbol {
                name: (*name).to_owned(),
                detail: detail.clone(),
            },
            other => LoadFailure::Setup {
                detail: error_chain(other),
            },
        }
    }
}

/// An error and every `source` under it, joined: what crosses the channel is the whole
/// story (a `dlerror` text included), not the top line. No link repeats another: an error's
/// message never holds its own `source()`'s text (crate::error's convention).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// Parses a `Loaded` frame: what the plugin's version and metadata functions returned.
pub(super) fn parse_loaded(
    payload: &[u8],
    output_bytes: usize,
) -> Result<(u32, Result<Vec<u8>, FaultError>), ProtocolViolation> {
    use crate::base::ffi::SYMBOL_METADATA;
    let malformed = |reason: PayloadError| ProtocolViolation::Malformed {
        tag: Tag::Loaded,
        reason,
    };
    let (version, rest) = payload
        .split_first_chunk::<4>()
        .ok_or_else(|| malformed(PayloadError::NoVersion))?;
    let (status, bytes) = rest
        .split_first()
        .ok_or_else(|| malformed(PayloadError::NoMetadataStatus))?;
    let version = u32::from_le_bytes(*version);
    let metadata = match *status {
        METADATA_BYTES if bytes.len() <= output_bytes => Ok(bytes.to_vec()),
        METADATA_BYTES => {
            return Err(malformed(PayloadError::MetadataTooLarge {
                len: bytes.len(),
                limit: output_bytes,
            }));
        }
        METADATA_NULL if bytes.is_empty() => Err(FaultError::NullResult {
            function: SYMBOL_METADATA,
        }),
        METADATA_TOO_LARGE if bytes.is_empty() => Err(FaultError::OutputTooLarge {
            function: SYMBOL_METADATA,
            limit: output_bytes,
        }),
        status => {
            return Err(malformed(PayloadError::BadMetadataStatus {
                status,
                len: bytes.len(),
            }));
        }
    };
    Ok((version, metadata))
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn loaded(version: u32, status: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = version.to_le_bytes().to_vec();
        v.push(status);
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn loaded_relays_parse_strictly() {
        let (v, m) = parse_loaded(&loaded(99, METADATA_BYTES, b"{}"), 10).unwrap();
        assert_eq!((v, m.unwrap()), (99, b"{}".to_vec()));
        assert!(matches!(
            parse_loaded(&loaded(1, METADATA_NULL, b""), 10).unwrap().1,
            Err(FaultError::NullResult { .. })
        ));
        assert!(matches!(
            parse_loaded(&loaded(1, METADATA_TOO_LARGE, b""), 10)
                .unwrap()
                .1,
            Err(FaultError::OutputTooLarge { limit: 10, .. })
        ));
        let too_large = |len| PayloadError::MetadataTooLarge { len, limit: 10 };
        let bad_status = |status, len| PayloadError::BadMetadataStatus { status, len };
        for (bad, reason) in [
            (loaded(1, METADATA_BYTES, &[b'x'; 11]), too_large(11)),
            (loaded(1, METADATA_NULL, b"x"), bad_status(METADATA_NULL, 1)),
            (
                loaded(1, METADATA_TOO_LARGE, b"x"),
                bad_status(METADATA_TOO_LARGE, 1),
            ),
            (loaded(1, 3, b""), bad_status(3, 0)),
            (vec![1, 0, 0, 0], PayloadError::NoMetadataStatus),
            (vec![1, 0], PayloadError::NoVersion),
            (vec![], PayloadError::NoVersion),
        ] {
            let got = parse_loaded(&bad, 10);
            assert!(
                matches!(
                    &got,
                    Err(ProtocolViolation::Malformed {
                        tag: Tag::Loaded,
                        reason: got,
                    }) if got.to_string() == reason.to_string()
                ),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn load_failures_are_accepted_only_in_their_phase() {
        let setup = || LoadFailure::Setup { detail: "x".into() };
        let dlopen = || LoadFailure::Dlopen { detail: "x".into() };
        let sandbox = || LoadFailure::Sandbox { detail: "x".into() };
        // The worker's text is carried as it came.
        assert!(matches!(
            setup().into_error(Phase::Restricting),
            Ok(ExecError::Load(LoadError::Worker { detail })) if detail == "x"
        ));
        assert!(matches!(
            sandbox().into_error(Phase::Restricting),
            Ok(ExecError::Sandbox(SandboxError::Worker { detail })) if detail == "x"
        ));
        assert!(matches!(
            setup().into_error(Phase::Loading),
            Err(ProtocolViolation::Unexpected {
                tag: Tag::LoadFailed,
                ..
            })
        ));
        assert!(matches!(
            dlopen().into_error(Phase::Loading),
            Ok(ExecError::Load(LoadError::Dlopen { detail })) if detail == "x"
        ));
        // The loader's text crosses the channel unchanged, as the same variant.
        let words = "/proc/self/fd/3: undefined symbol: f";
        let sent = LoadFailure::from_error(&ExecError::Load(LoadError::Dlopen {
            detail: words.to_owned(),
        }));
        assert!(matches!(
            sent.into_error(Phase::Loading),
            Ok(ExecError::Load(LoadError::Dlopen { detail })) if detail == words
        ));
        assert!(matches!(
            dlopen().into_error(Phase::Restricting),
            Err(ProtocolViolation::Unexpected { .. })
        ));
    }

    /// The worker's typed refusals (of the library, of the plan's descriptors) cross the
    /// channel as the same variants, and only before the report: after it, plugin code may
    /// have written the frame.
    #[test]
    fn typed_refusals_cross_the_channel_before_the_report_only() {
        use crate::base::protocol::Tag;
        let refusal = LibraryRefusal::Digest {
            expected: "a".into(),
            actual: "b".into(),
        };
        let sent = [
            ExecError::Load(LoadError::Refused(refusal.clone())),
            ExecError::Sandbox(SandboxError::GrantDescriptors {
                expected: 2,
                given: 1,
            }),
            ExecError::Sandbox(SandboxError::GrantDescriptorMismatch {
                index: 1,
                path: "/g".into(),
            }),
        ];
        for e in &sent {
            let wire = serde_json::to_vec(&LoadFailure::from_error(e)).unwrap();
            let back = |phase| {
                serde_json::from_slice::<LoadFailure>(&wire)
                    .unwrap()
                    .into_error(phase)
            };
            assert!(matches!(
                back(Phase::Loading),
                Err(ProtocolViolation::Unexpected {
                    tag: Tag::LoadFailed,
                    ..
                })
            ));
            let got = back(Phase::Restricting).unwrap();
            let same = match (e, &got) {
                (
                    ExecError::Load(LoadError::Refused(a)),
                    ExecError::Load(LoadError::Refused(b)),
                ) => a == b,
                (
                    ExecError::Sandbox(SandboxError::GrantDescriptors { expected, given }),
                    ExecError::Sandbox(SandboxError::GrantDescriptors {
                        expected: e2,
                        given: g2,
                    }),
                ) => expected == e2 && given == g2,
                (
                    ExecError::Sandbox(SandboxError::GrantDescriptorMismatch { index, path }),
                    ExecError::Sandbox(SandboxError::GrantDescriptorMismatch {
                        index: i2,
                        path: p2,
                    }),
                ) => index == i2 && path == p2,
                _ => false,
            };
            assert!(same, "{e:?} came back as {got:?}");
        }
    }
}
