//! The host extension ABI (`skillgate_plugin_host_v1`, version 1): the table of host
//! functions a plugin may receive, and the bytes its requests travel as.
//!
//! A plugin that exports `void skillgate_plugin_host_v1(const struct skillgate_host_v1 *)`
//! is called once after `dlopen` and before any call (thread mode: on the plugin thread;
//! process mode: in the worker, on its serving thread) with a pointer to a table that lives
//! as long as the process. A plugin that does not export it is an ABI v1 plugin and is
//! treated exactly as one; a host without the extension (VT Code) never calls it.
//!
//! The table is versioned and size-prefixed so it can grow: a plugin reads `version`
//! (1 here) and must not touch a field that lies beyond `size` bytes. `call_tool` never
//! returns NULL: a refusal or failure is a JSON string `{"error":{"kind","message"}}`, a
//! success `{"ok":<value>}`; either is released with the table's `free_string`.
//!
//! Everything here is plugin-facing: a plugin that passes a name or arguments that are not
//! what the ABI says (not UTF-8, not JSON, too long) gets an error result built here, on its
//! own side, before anything reaches the host. The host then checks every request again
//! (`crate::exec::tools`), since in process mode a hostile worker can write any frame.

use std::ffi::{CString, c_char};

/// Exported symbol: `void skillgate_plugin_host_v1(const struct skillgate_host_v1 *host)`.
pub(crate) const SYMBOL_HOST_V1: &str = "skillgate_plugin_host_v1";
/// The table's `version` field.
pub const HOST_TABLE_VERSION: u32 = 1;
/// Longest tool name: the plugin name alphabet, `[A-Za-z0-9._+-]`, 1 to 64 bytes.
pub(crate) const MAX_TOOL_NAME: usize = crate::base::name::MAX_NAME_LEN;

/// `struct skillgate_host_v1`, as `include/skillgate_plugin.h` declares it.
#[repr(C)]
#[derive(Debug)]
pub struct HostTableV1 {
    /// [`HOST_TABLE_VERSION`].
    pub version: u32,
    /// `sizeof(struct skillgate_host_v1)` as the host built it.
    pub size: u32,
    /// `char *call_tool(const char *name, const char *json_args)`: never NULL.
    pub call_tool: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut c_char,
    /// `void progress(const char *json)`: fire and forget (may be dropped past a bound).
    pub progress: unsafe extern "C" fn(*const c_char),
    /// `void free_string(char *)`: releases what `call_tool` returned.
    pub free_string: unsafe extern "C" fn(*mut c_char),
}

/// The table's size, as its `size` field states it.
pub(crate) const HOST_TABLE_SIZE: u32 = {
    let size = std::mem::size_of::<HostTableV1>();
    assert!(size <= u32::MAX as usize);
    size as u32
};

/// The plugin's optional export.
pub(crate) type HostInitFn = unsafe extern "C" fn(*const HostTableV1);

/// Why a request was refused or failed, as the plugin reads it (`error.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolErrorKind {
    /// The name or arguments are not what the ABI says (plugin side).
    BadRequest,
    /// Neither the signed manifest and the policy both name the tool.
    Denied,
    /// The host registered no tools.
    NoHostTools,
    /// The host has no such tool.
    Unknown,
    /// The tool refused or failed.
    Failed,
    /// The per-call request count, or a size bound, was reached.
    Limit,
    /// The call's deadline passed.
    Timeout,
    /// A tool call from inside a tool (past one level), or re-entering the plugin.
    Recursion,
    /// No call of this plugin is in flight on this thread.
    NoCall,
}

impl ToolErrorKind {
    /// The word the plugin reads.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ToolErrorKind::BadRequest => "bad_request",
            ToolErrorKind::Denied => "denied",
            ToolErrorKind::NoHostTools => "no_host_tools",
            ToolErrorKind::Unknown => "unknown_tool",
            ToolErrorKind::Failed => "failed",
            ToolErrorKind::Limit => "limit",
            ToolErrorKind::Timeout => "timeout",
            ToolErrorKind::Recursion => "recursion",
            ToolErrorKind::NoCall => "no_call",
        }
    }
}

/// The JSON a plugin gets for a refused or failed request.
pub(crate) fn error_reply(kind: ToolErrorKind, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": { "kind": kind.as_str(), "message": message }
    }))
    .unwrap_or_else(|_| br#"{"error":{"kind":"failed","message":"unprintable error"}}"#.to_vec())
}

/// The JSON a plugin gets for a tool's result.
pub(crate) fn ok_reply(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "ok": value }))
        .unwrap_or_else(|_| error_reply(ToolErrorKind::Failed, "unprintable result"))
}

/// Whether `name` may name a tool.
pub(crate) fn is_tool_name(name: &str) -> bool {
    name.len() <= MAX_TOOL_NAME && crate::base::name::is_plugin_name(name)
}

/// A request's wire payload: `[u8 name length][name][arguments as JSON text]`. The plugin
/// side builds it (checking what the ABI promises); the host parses it again.
pub(crate) fn encode_request(name: &str, args: &[u8]) -> Option<Vec<u8>> {
    let len = u8::try_from(name.len()).ok()?;
    let mut out = Vec::with_capacity(1 + name.len() + args.len());
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(args);
    Some(out)
}

/// What is wrong with a request payload (a hostile worker wrote it: a protocol violation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The payload is empty, or shorter than its name.
    #[error("request of {0} bytes is shorter than its name")]
    Short(usize),
    /// The name is not 1 to 64 bytes of `[A-Za-z0-9._+-]`.
    #[error("tool name is not a plain name")]
    BadName,
    /// The arguments are not one JSON value.
    #[error("tool arguments: {0}")]
    Args(crate::base::json::JsonError),
}

/// Parses a request payload: the name (checked) and the arguments (one JSON value).
pub(crate) fn parse_request(payload: &[u8]) -> Result<(String, serde_json::Value), RequestError> {
    let (&len, rest) = payload
        .split_first()
        .ok_or(RequestError::Short(payload.len()))?;
    let name = rest
        .get(..usize::from(len))
        .ok_or(RequestError::Short(payload.len()))?;
    let args = rest.get(usize::from(len)..).unwrap_or_default();
    let name = std::str::from_utf8(name).map_err(|_| RequestError::BadName)?;
    if !is_tool_name(name) {
        return Err(RequestError::BadName);
    }
    let args = serde_json::from_slice(args)
        .map_err(|e| RequestError::Args(crate::base::json::JsonError::new(e)))?;
    Ok((name.to_owned(), args))
}

/// Reads a string the plugin passed, at most `limit` bytes; `None` for NULL, too long or
/// not UTF-8.
///
/// # Safety
///
/// `ptr` must be NULL or point to memory readable up to its first NUL or `limit + 1` bytes.
#[allow(unsafe_code)]
unsafe fn plugin_str(ptr: *const c_char, limit: usize) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` is non-null and, by the caller's contract, readable up to its NUL or
    // `limit + 1` bytes; strnlen reads no further.
    let len = unsafe { libc::strnlen(ptr, limit.saturating_add(1)) };
    if len > limit {
        return None;
    }
    // SAFETY: strnlen found `len` readable bytes at `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    String::from_utf8(bytes.to_vec()).ok()
}

/// The plugin side of `call_tool`: checks the name and arguments (at most `limit` bytes of
/// JSON) and builds the request payload, or the error result the plugin gets instead.
///
/// # Safety
///
/// `name` and `args` must each be NULL or a NUL-terminated string (the ABI's promise).
#[allow(unsafe_code)]
pub(crate) unsafe fn prepare_request(
    name: *const c_char,
    args: *const c_char,
    limit: usize,
) -> Result<Vec<u8>, Vec<u8>> {
    let bad = |m: &str| error_reply(ToolErrorKind::BadRequest, m);
    // SAFETY: the caller's contract.
    let name = unsafe { plugin_str(name, MAX_TOOL_NAME) }
        .filter(|n| is_tool_name(n))
        .ok_or_else(|| bad("the tool name is not 1-64 characters of A-Z a-z 0-9 . _ + -"))?;
    let args = if args.is_null() {
        "null".to_owned()
    } else {
        // SAFETY: the caller's contract.
        unsafe { plugin_str(args, limit) }.ok_or_else(|| {
            error_reply(
                ToolErrorKind::Limit,
                &format!("the arguments are not UTF-8 of at most {limit} bytes"),
            )
        })?
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(&args).is_err() {
        return Err(bad("the arguments are not one JSON value"));
    }
    encode_request(&name, args.as_bytes()).ok_or_else(|| bad("the tool name is too long"))
}

/// The plugin side of `progress`: the JSON text, at most `limit` bytes, or `None` (dropped:
/// NULL, too long, not JSON).
///
/// # Safety
///
/// `json` must be NULL or a NUL-terminated string.
#[allow(unsafe_code)]
pub(crate) unsafe fn prepare_progress(json: *const c_char, limit: usize) -> Option<Vec<u8>> {
    // SAFETY: the caller's contract.
    let text = unsafe { plugin_str(json, limit) }?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text).ok()?;
    Some(text.into_bytes())
}

/// Hands a reply to the plugin as a string it releases with `free_string`. A reply holding
/// a NUL (never from serde_json) becomes an error result, so the result is never NULL.
pub(crate) fn reply_to_plugin(reply: Vec<u8>) -> *mut c_char {
    let owned = CString::new(reply).unwrap_or_else(|_| {
        CString::new(error_reply(ToolErrorKind::Failed, "reply held a NUL byte"))
            .unwrap_or_default()
    });
    owned.into_raw()
}

/// The table's `free_string`: takes back a string [`reply_to_plugin`] handed out.
///
/// # Safety
///
/// `s` must be NULL or a pointer `call_tool` returned, released once.
#[allow(unsafe_code)]
pub(crate) unsafe extern "C" fn free_reply(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: by the ABI, `s` came from `CString::into_raw` in `reply_to_plugin` and is
        // released once.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// A C string's bytes, for tests.
#[cfg(test)]
#[allow(unsafe_code)]
pub(crate) fn take_reply(s: *mut c_char) -> Vec<u8> {
    // SAFETY: `s` came from `reply_to_plugin`.
    let bytes = unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes().to_vec();
    // SAFETY: as above, released once.
    unsafe { free_reply(s) };
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn requests_round_trip_and_hostile_payloads_are_refused() {
        let p = encode_request("workspace.read", br#"{"path":"a"}"#).unwrap();
        let (name, args) = parse_request(&p).unwrap();
        assert_eq!(name, "workspace.read");
        assert_eq!(args["path"], "a");
        assert!(matches!(parse_request(&[]), Err(RequestError::Short(0))));
        assert!(matches!(
            parse_request(&[9, b'a']),
            Err(RequestError::Short(2))
        ));
        assert!(matches!(
            parse_request(b"\x01/null"),
            Err(RequestError::BadName)
        ));
        assert!(matches!(
            parse_request(b"\x00null"),
            Err(RequestError::BadName)
        ));
        assert!(matches!(
            parse_request(b"\x01a{"),
            Err(RequestError::Args(_))
        ));
        assert!(matches!(
            parse_request(b"\x01a1 2"),
            Err(RequestError::Args(_))
        ));
    }

    #[test]
    #[allow(unsafe_code)]
    fn the_plugin_side_refuses_what_the_abi_forbids() {
        let name = c"workspace.read";
        let args = c"{\"path\":\"x\"}";
        // SAFETY: both are NUL-terminated strings.
        let ok = unsafe { prepare_request(name.as_ptr(), args.as_ptr(), 1024) }.unwrap();
        assert_eq!(parse_request(&ok).unwrap().0, "workspace.read");
        let kind = |r: Vec<u8>| -> String {
            let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
            v["error"]["kind"].as_str().unwrap().to_owned()
        };
        // SAFETY: as above; NULL is allowed.
        let e = unsafe { prepare_request(std::ptr::null(), args.as_ptr(), 1024) }.unwrap_err();
        assert_eq!(kind(e), "bad_request");
        // SAFETY: as above.
        let e = unsafe { prepare_request(name.as_ptr(), c"{".as_ptr(), 1024) }.unwrap_err();
        assert_eq!(kind(e), "bad_request");
        // SAFETY: as above.
        let e = unsafe { prepare_request(name.as_ptr(), args.as_ptr(), 3) }.unwrap_err();
        assert_eq!(kind(e), "limit");
        let s = reply_to_plugin(ok_reply(&serde_json::json!(1)));
        assert_eq!(take_reply(s), br#"{"ok":1}"#);
    }
}
