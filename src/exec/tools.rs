//! Host tools: what a plugin asks its host to do through `skillgate_plugin_host_v1`, and
//! the host's side of every request, in both isolation modes.
//!
//! A request comes from plugin code, so every byte of it is hostile (in process mode a
//! worker can write any frame on its channel). [`answer`] is the one place a request is
//! handled: it takes the frame as read (process mode: from the socket; thread mode: from
//! the plugin thread's hand-over), checks its sequence against the call in flight, its size,
//! its parse, then the per-call count, then the two lists that must both name the tool —
//! the plugin's signed manifest (`"tools"`) and the policy (`host_tools.allow`) — and only
//! then calls the [`HostTools`] the embedding application registered, with the call's
//! deadline. What the plugin gets back is always a result (`{"ok":…}` or
//! `{"error":{"kind","message"}}`), never a crash; what ends a worker is only a frame no
//! honest worker sends (wrong sequence, malformed payload, over the cap), a protocol
//! violation.
//!
//! Bounds, per call: `limits.tool_requests` requests (past it each gets an error result of
//! kind `limit`, counted, and one `limit` audit event ends the call: a plugin looping on a
//! tool is a bug, and the call's deadline still bounds the time), `limits.tool_request_bytes`
//! per request and `limits.tool_reply_bytes` per reply, the call's deadline for all of it
//! (a tool is given what remains), and `limits.progress_messages` progress messages of at
//! most `limits.progress_bytes` (the rest dropped and counted, never fatal).
//!
//! **Recursion.** A tool runs on the thread that made the call (process mode: the
//! caller's, reading the socket; thread mode: the caller's too, woken by the plugin
//! thread). Each such thread records which plugins' tools it is running. A tool that calls
//! back into the same plugin's `execute` is refused at once with
//! [`FaultError::Reentered`] (it would wait for its own call), and a tool request from a
//! plugin that was itself called from inside a tool is refused (kind `recursion`): tools
//! nest one level, no more.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::base::ffi::FaultError;
use crate::base::host_abi::{ToolErrorKind, error_reply, ok_reply, parse_request};
use crate::base::protocol::{Frame, PayloadError, ProtocolViolation, Tag};
use crate::base::settings::{Isolation, Limits};

pub(crate) use crate::base::host_abi::is_tool_name;

/// The tools an embedding application offers its plugins, registered with
/// `Gate::with_host_tools`. Called only for a tool both the plugin's signed manifest and
/// the policy name, on the host's side (never inside a sandbox), one request at a time per
/// plugin call.
pub trait HostTools: Send + Sync {
    /// Runs tool `name` for `plugin` with `args` (any JSON value the plugin sent), and
    /// returns its result. It should give up by `deadline` (the call's): the plugin's call
    /// fails at its deadline whatever the tool does.
    fn call_tool(
        &self,
        plugin: &ToolCaller,
        name: &str,
        args: &serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value, ToolError>;
}

/// Who is asking: the plugin as its signed manifest names it, and what the host gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolCaller {
    /// The manifest's name.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// How it runs.
    pub isolation: Isolation,
    /// The workspace the host named when it loaded the plugin (canonical), if any: what
    /// the built-in `workspace.*` tools work beneath.
    pub workspace: Option<PathBuf>,
}

/// Why a tool did not produce a result. The plugin gets it as `{"error":{"kind","message"}}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The host has no tool of that name (kind `unknown_tool`).
    #[error("the host has no tool {0:?}")]
    Unknown(String),
    /// The arguments are not what the tool takes (kind `bad_request`).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool refused (a path outside the workspace, no workspace named; kind `failed`).
    #[error("refused: {0}")]
    Refused(String),
    /// The tool's result or input is over a bound (kind `limit`).
    #[error("{what} is over the {limit}-byte limit")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// The deadline passed (kind `timeout`).
    #[error("the call's deadline passed")]
    Timeout,
    /// The tool failed (kind `failed`).
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    fn kind(&self) -> ToolErrorKind {
        match self {
            ToolError::Unknown(_) => ToolErrorKind::Unknown,
            ToolError::InvalidArguments(_) => ToolErrorKind::BadRequest,
            ToolError::TooLarge { .. } => ToolErrorKind::Limit,
            ToolError::Timeout => ToolErrorKind::Timeout,
            ToolError::Refused(_) | ToolError::Failed(_) => ToolErrorKind::Failed,
        }
    }
}

/// A progress callback (`CallOptions::on_progress`).
pub(crate) type ProgressFn = Arc<dyn Fn(&serde_json::Value) + Send + Sync>;

/// Everything a loaded plugin's requests are judged by; one per loaded plugin.
pub(crate) struct ToolEnv {
    /// Unique per loaded plugin in this process (the recursion guard's key).
    pub(crate) plugin_id: u64,
    pub(crate) caller: ToolCaller,
    host: Option<Arc<dyn HostTools>>,
    /// The signed manifest's `"tools"`.
    manifest: BTreeSet<String>,
    /// The policy's `host_tools.allow`.
    policy: BTreeSet<String>,
    pub(crate) limits: ToolLimits,
}

impl std::fmt::Debug for ToolEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolEnv")
            .field("plugin", &self.caller.name)
            .field("host_tools", &self.host.is_some())
            .finish_non_exhaustive()
    }
}

/// The per-call bounds ([`Limits`]' tool and progress fields).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ToolLimits {
    pub(crate) requests: u64,
    pub(crate) request_bytes: usize,
    pub(crate) reply_bytes: usize,
    pub(crate) progress_messages: u64,
    pub(crate) progress_bytes: usize,
}

impl ToolLimits {
    pub(crate) fn from_limits(l: &Limits) -> Self {
        ToolLimits {
            requests: l.tool_requests,
            request_bytes: l.tool_request_bytes,
            reply_bytes: l.tool_reply_bytes,
            progress_messages: l.progress_messages,
            progress_bytes: l.progress_bytes,
        }
    }

    /// Largest request payload: the name's length byte, the name, the arguments.
    pub(crate) fn request_payload(&self) -> usize {
        self.request_bytes
            .saturating_add(1 + crate::base::host_abi::MAX_TOOL_NAME)
    }
}

static NEXT_PLUGIN_ID: AtomicU64 = AtomicU64::new(1);

impl ToolEnv {
    /// The environment of one loaded plugin.
    pub(crate) fn new(
        caller: ToolCaller,
        host: Option<Arc<dyn HostTools>>,
        manifest: &[String],
        policy: &BTreeSet<String>,
        limits: &Limits,
    ) -> Self {
        ToolEnv {
            plugin_id: NEXT_PLUGIN_ID.fetch_add(1, Ordering::Relaxed),
            caller,
            host,
            manifest: manifest.iter().cloned().collect(),
            policy: policy.clone(),
            limits: ToolLimits::from_limits(limits),
        }
    }

    /// No tools at all (until a loaded plugin's own is set): every request is denied.
    pub(crate) fn none() -> Self {
        Self::new(
            ToolCaller {
                name: "fuzz".into(),
                version: "1.0.0".into(),
                isolation: Isolation::Process,
                workspace: None,
            },
            None,
            &[],
            &BTreeSet::new(),
            &Limits::default(),
        )
    }
}

/// What the caller of one plugin call brings besides its input.
#[derive(Clone, Default)]
pub(crate) struct CallExtras {
    /// Receives the plugin's progress messages, in order, on the calling thread.
    pub(crate) on_progress: Option<ProgressFn>,
    /// The plugins whose tools the calling thread is running (outermost first).
    pub(crate) chain: Vec<u64>,
}

impl std::fmt::Debug for CallExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallExtras")
            .field("on_progress", &self.on_progress.is_some())
            .field("chain", &self.chain)
            .finish()
    }
}

/// One call in flight: what its requests are checked against and counted in.
pub(crate) struct CallState {
    /// The call's sequence number: every request must carry it.
    pub(crate) seq: u64,
    pub(crate) deadline: Instant,
    extras: CallExtras,
    requests: u64,
    over_limit: u64,
    progress: u64,
    progress_dropped: u64,
}

impl CallState {
    pub(crate) fn new(seq: u64, deadline: Instant, extras: CallExtras) -> Self {
        CallState {
            seq,
            deadline,
            extras,
            requests: 0,
            over_limit: 0,
            progress: 0,
            progress_dropped: 0,
        }
    }

    /// Ends the call: one `limit` audit event if requests were refused past the count or
    /// progress messages dropped.
    pub(crate) fn finish(&self, env: &ToolEnv) {
        if self.over_limit > 0 || self.progress_dropped > 0 {
            tracing::warn!(
                target: "skillgate::audit",
                event = "limit",
                plugin = env.caller.name.as_str(),
                version = env.caller.version.as_str(),
                isolation = %env.caller.isolation,
                tool_requests_refused = self.over_limit,
                progress_dropped = self.progress_dropped,
                "host tool requests or progress messages over the call's bounds"
            );
        }
    }

    /// Progress messages dropped in this call (over the count or the size).
    #[cfg(test)]
    pub(crate) fn progress_dropped(&self) -> u64 {
        self.progress_dropped
    }
}

thread_local! {
    /// The plugins whose tools this thread is running now, outermost first.
    static RUNNING_TOOLS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What a call of plugin `plugin_id` made on this thread carries as its chain; `Err` when
/// this thread is running one of that plugin's own tools (the call would wait for itself).
pub(crate) fn enter_call(plugin_id: u64) -> Result<Vec<u64>, FaultError> {
    RUNNING_TOOLS.with(|r| {
        let chain = r.borrow().clone();
        if chain.contains(&plugin_id) {
            Err(FaultError::Reentered)
        } else {
            Ok(chain)
        }
    })
}

/// Runs `f` with `chain` + `plugin_id` recorded as this thread's running tools.
fn running_tool<T>(chain: &[u64], plugin_id: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(Vec<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let saved = std::mem::take(&mut self.0);
            RUNNING_TOOLS.with(|r| *r.borrow_mut() = saved);
        }
    }
    let mut now = chain.to_vec();
    now.push(plugin_id);
    let _restore = Restore(RUNNING_TOOLS.with(|r| std::mem::replace(&mut *r.borrow_mut(), now)));
    f()
}

/// The host's answer to one frame that arrived during a call and is not its reply: a tool
/// request (answered with a `ToolReply` frame), a progress message (no answer), or a
/// violation that ends the worker.
pub(crate) fn answer(
    frame: &Frame,
    call: &mut CallState,
    env: &ToolEnv,
) -> Result<Option<(Tag, Vec<u8>)>, ProtocolViolation> {
    if !matches!(frame.tag, Tag::ToolRequest | Tag::Progress) {
        return Err(ProtocolViolation::Unexpected {
            tag: frame.tag,
            waiting: "waiting for a call's reply",
        });
    }
    if frame.seq != call.seq {
        return Err(ProtocolViolation::WrongSequence {
            expected: call.seq,
            got: frame.seq,
        });
    }
    let len = frame.payload.len();
    if frame.tag == Tag::Progress {
        if len > env.limits.progress_bytes {
            call.progress_dropped = call.progress_dropped.saturating_add(1);
            return Ok(None);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&frame.payload).map_err(|e| ProtocolViolation::Malformed {
                tag: Tag::Progress,
                reason: PayloadError::json(e),
            })?;
        progress(&value, call, env);
        return Ok(None);
    }
    let cap = env.limits.request_payload();
    if len > cap {
        return Err(ProtocolViolation::TooLarge {
            len: u64::try_from(len).unwrap_or(u64::MAX),
            cap,
        });
    }
    let (name, args) = parse_request(&frame.payload).map_err(|e| ProtocolViolation::Malformed {
        tag: Tag::ToolRequest,
        reason: PayloadError::Request(e),
    })?;
    Ok(Some((Tag::ToolReply, dispatch(&name, &args, call, env))))
}

/// What a tool request found on the socket after its call's reply is: the violation
/// [`answer`] would name for it (another call's sequence number, over the cap, malformed),
/// or, for a well-formed request of this call, `Unexpected` (its plugin no longer waits
/// for an answer). Nothing is dispatched.
pub(crate) fn late_request(frame: &Frame, call: &CallState, env: &ToolEnv) -> ProtocolViolation {
    if frame.seq != call.seq {
        return ProtocolViolation::WrongSequence {
            expected: call.seq,
            got: frame.seq,
        };
    }
    let cap = env.limits.request_payload();
    if frame.payload.len() > cap {
        return ProtocolViolation::TooLarge {
            len: u64::try_from(frame.payload.len()).unwrap_or(u64::MAX),
            cap,
        };
    }
    match parse_request(&frame.payload) {
        Err(e) => ProtocolViolation::Malformed {
            tag: Tag::ToolRequest,
            reason: PayloadError::Request(e),
        },
        Ok(_) => ProtocolViolation::Unexpected {
            tag: Tag::ToolRequest,
            waiting: "nothing but progress after a call's reply",
        },
    }
}

fn progress(value: &serde_json::Value, call: &mut CallState, env: &ToolEnv) {
    if call.progress >= env.limits.progress_messages {
        call.progress_dropped = call.progress_dropped.saturating_add(1);
        return;
    }
    call.progress = call.progress.saturating_add(1);
    if let Some(f) = &call.extras.on_progress {
        f(value);
    }
}

/// Decides one parsed request and runs the tool if it may: the reply the plugin gets.
fn dispatch(name: &str, args: &serde_json::Value, call: &mut CallState, env: &ToolEnv) -> Vec<u8> {
    call.requests = call.requests.saturating_add(1);
    if call.requests > env.limits.requests {
        call.over_limit = call.over_limit.saturating_add(1);
        return error_reply(
            ToolErrorKind::Limit,
            &format!(
                "more than {} host tool requests in one call",
                env.limits.requests
            ),
        );
    }
    let version = env.caller.version.as_str();
    let isolation = env.caller.isolation.to_string();
    let subject = crate::audit::Subject {
        plugin: &env.caller.name,
        version: Some(version),
        path: None,
        sha256: None,
    };
    let runs = crate::audit::Runs {
        isolation: &isolation,
        worker_pid: None,
    };
    let denied = |kind: ToolErrorKind, why: &str| {
        crate::audit::tool(&subject, &runs, name, Some(&why));
        error_reply(kind, why)
    };
    if !env.manifest.contains(name) {
        return denied(
            ToolErrorKind::Denied,
            &format!("tool {name:?} is not named in the plugin's signed manifest (\"tools\")"),
        );
    }
    if !env.policy.contains(name) {
        return denied(
            ToolErrorKind::Denied,
            &format!("tool {name:?} is not allowed by the host's policy (host_tools.allow)"),
        );
    }
    if !call.extras.chain.is_empty() {
        return denied(
            ToolErrorKind::Recursion,
            "a plugin called from inside a host tool may not call host tools (one level only)",
        );
    }
    let Some(host) = &env.host else {
        return denied(
            ToolErrorKind::NoHostTools,
            "the host registered no tools (Gate::with_host_tools)",
        );
    };
    if Instant::now() >= call.deadline {
        return denied(ToolErrorKind::Timeout, "the call's deadline passed");
    }
    crate::audit::tool(&subject, &runs, name, None);
    let outcome = running_tool(&call.extras.chain, env.plugin_id, || {
        host.call_tool(&env.caller, name, args, call.deadline)
    });
    let reply = match outcome {
        Ok(value) => ok_reply(&value),
        Err(e) => error_reply(e.kind(), &e.to_string()),
    };
    if reply.len() > env.limits.reply_bytes {
        return error_reply(
            ToolErrorKind::Limit,
            &format!(
                "the tool's reply of {} bytes is over the {}-byte limit",
                reply.len(),
                env.limits.reply_bytes
            ),
        );
    }
    reply
}

/// What the host makes of one tool-request or progress payload a worker sent (the
/// `ipc_frame` fuzz target adds it to the frame decoder's): the strict parse only.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_request(frame: &Frame) {
    let env = ToolEnv::none();
    let mut call = CallState::new(frame.seq, Instant::now(), CallExtras::default());
    let _ = answer(frame, &mut call, &env);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::base::host_abi::encode_request;
    use std::sync::Mutex;

    struct Echo;
    impl HostTools for Echo {
        fn call_tool(
            &self,
            _: &ToolCaller,
            name: &str,
            args: &serde_json::Value,
            _: Instant,
        ) -> Result<serde_json::Value, ToolError> {
            match name {
                "echo" => Ok(args.clone()),
                _ => Err(ToolError::Unknown(name.to_owned())),
            }
        }
    }

    fn env(manifest: &[&str], policy: &[&str], limits: Limits) -> ToolEnv {
        ToolEnv::new(
            ToolCaller {
                name: "p".into(),
                version: "1.0.0".into(),
                isolation: Isolation::Process,
                workspace: None,
            },
            Some(Arc::new(Echo)),
            &manifest.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            &policy.iter().map(|s| (*s).to_owned()).collect(),
            &limits,
        )
    }

    fn request(seq: u64, name: &str, args: &str) -> Frame {
        Frame {
            tag: Tag::ToolRequest,
            seq,
            payload: encode_request(name, args.as_bytes()).unwrap(),
        }
    }

    fn reply(answer: Option<(Tag, Vec<u8>)>) -> serde_json::Value {
        let (tag, bytes) = answer.unwrap();
        assert_eq!(tag, Tag::ToolReply);
        serde_json::from_slice(&bytes).unwrap()
    }

    fn call(seq: u64) -> CallState {
        CallState::new(
            seq,
            Instant::now() + std::time::Duration::from_secs(60),
            CallExtras::default(),
        )
    }

    #[test]
    fn a_tool_needs_both_the_manifest_and_the_policy() {
        let both = env(&["echo"], &["echo"], Limits::default());
        let mut c = call(3);
        let ok = reply(answer(&request(3, "echo", "[1]"), &mut c, &both).unwrap());
        assert_eq!(ok["ok"], serde_json::json!([1]));
        for e in [
            env(&[], &["echo"], Limits::default()),
            env(&["echo"], &[], Limits::default()),
        ] {
            let r = reply(answer(&request(3, "echo", "1"), &mut call(3), &e).unwrap());
            assert_eq!(r["error"]["kind"], "denied", "{r}");
        }
        let r = reply(
            answer(
                &request(3, "other", "1"),
                &mut call(3),
                &env(&["other"], &["other"], Limits::default()),
            )
            .unwrap(),
        );
        assert_eq!(r["error"]["kind"], "unknown_tool");
    }

    #[test]
    fn hostile_frames_are_violations() {
        let e = env(&["echo"], &["echo"], Limits::default());
        assert!(matches!(
            answer(&request(4, "echo", "1"), &mut call(3), &e),
            Err(ProtocolViolation::WrongSequence {
                expected: 3,
                got: 4
            })
        ));
        let bad = Frame {
            tag: Tag::ToolRequest,
            seq: 3,
            payload: b"\x04echo{".to_vec(),
        };
        assert!(matches!(
            answer(&bad, &mut call(3), &e),
            Err(ProtocolViolation::Malformed {
                tag: Tag::ToolRequest,
                ..
            })
        ));
        let huge = request(3, "echo", &format!("\"{}\"", "x".repeat(70_000)));
        assert!(matches!(
            answer(&huge, &mut call(3), &e),
            Err(ProtocolViolation::TooLarge { .. })
        ));
        let output = Frame {
            tag: Tag::Loaded,
            seq: 3,
            payload: Vec::new(),
        };
        assert!(matches!(
            answer(&output, &mut call(3), &e),
            Err(ProtocolViolation::Unexpected { .. })
        ));
    }

    #[test]
    fn requests_past_the_count_get_limit_results_and_progress_is_dropped_and_counted() {
        let limits = Limits::builder()
            .tool_requests(2)
            .progress_messages(3)
            .build()
            .unwrap();
        let e = env(&["echo"], &["echo"], limits);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let mut c = CallState::new(
            1,
            Instant::now() + std::time::Duration::from_secs(60),
            CallExtras {
                on_progress: Some(Arc::new(move |v: &serde_json::Value| {
                    sink.lock().unwrap().push(v.clone());
                })),
                chain: Vec::new(),
            },
        );
        let kinds: Vec<serde_json::Value> = (0..4)
            .map(|_| reply(answer(&request(1, "echo", "1"), &mut c, &e).unwrap()))
            .collect();
        assert!(kinds[1].get("ok").is_some());
        assert_eq!(kinds[2]["error"]["kind"], "limit");
        assert_eq!(kinds[3]["error"]["kind"], "limit");
        for i in 0..10 {
            let p = Frame {
                tag: Tag::Progress,
                seq: 1,
                payload: format!("{{\"step\":{i}}}").into_bytes(),
            };
            assert!(answer(&p, &mut c, &e).unwrap().is_none());
        }
        let got: Vec<i64> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["step"].as_i64().unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(c.progress_dropped(), 7);
        let malformed = Frame {
            tag: Tag::Progress,
            seq: 1,
            payload: b"{".to_vec(),
        };
        assert!(matches!(
            answer(&malformed, &mut c, &e),
            Err(ProtocolViolation::Malformed {
                tag: Tag::Progress,
                ..
            })
        ));
    }

    #[test]
    fn a_reply_over_the_bound_becomes_a_limit_result() {
        let limits = Limits::builder().tool_reply_bytes(64).build().unwrap();
        let e = env(&["echo"], &["echo"], limits);
        let small = reply(answer(&request(1, "echo", "\"hi\""), &mut call(1), &e).unwrap());
        assert_eq!(small["ok"], "hi");
        let big = format!("\"{}\"", "x".repeat(100));
        let r = reply(answer(&request(1, "echo", &big), &mut call(1), &e).unwrap());
        assert_eq!(r["error"]["kind"], "limit", "{r}");
    }

    #[test]
    fn a_plugin_called_from_a_tool_may_not_call_tools_nor_reenter() {
        let e = env(&["echo"], &["echo"], Limits::default());
        let mut nested = CallState::new(
            1,
            Instant::now() + std::time::Duration::from_secs(60),
            CallExtras {
                on_progress: None,
                chain: vec![999],
            },
        );
        let r = reply(answer(&request(1, "echo", "1"), &mut nested, &e).unwrap());
        assert_eq!(r["error"]["kind"], "recursion");
        let inside = running_tool(&[], 42, || (enter_call(42), enter_call(43)));
        assert!(matches!(inside.0, Err(FaultError::Reentered)));
        assert_eq!(inside.1.unwrap(), [42]);
        assert!(enter_call(42).unwrap().is_empty());
    }
}
