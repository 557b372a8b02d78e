//! The VT Code plugin ABI (version 1) and the crossing of plugin strings into the host.
//!
//! Everything a plugin returns is hostile input: a NULL pointer, bytes that are not UTF-8,
//! text that is not JSON, or a string so long it exhausts the host. Strings are read with a
//! bound ([`Limits::output_bytes`](crate::base::settings::Limits)), copied, released through the
//! plugin's own `vtcode_plugin_free_string` when it exports one (VT Code's semantics), and
//! only then decoded by [`decode_result`] / [`decode_metadata`], which are plain functions on
//! bytes so they can be fuzzed and tested without a plugin.

use std::collections::HashMap;
use std::ffi::c_char;

use serde::{Deserialize, Serialize};

/// The plugin ABI version this host speaks. A plugin's manifest and its
/// `vtcode_plugin_version()` must both report it.
pub const PLUGIN_ABI_VERSION: u32 = 1;

/// Exported symbol: `uint32_t vtcode_plugin_version(void)`.
pub(crate) const SYMBOL_VERSION: &str = "vtcode_plugin_version";
/// Exported symbol: `const char *vtcode_plugin_metadata(void)`.
pub(crate) const SYMBOL_METADATA: &str = "vtcode_plugin_metadata";
/// Exported symbol: `const char *vtcode_plugin_execute(const char *)`.
pub(crate) const SYMBOL_EXECUTE: &str = "vtcode_plugin_execute";
/// Optional exported symbol: `void vtcode_plugin_free_string(const char *)`.
pub(crate) const SYMBOL_FREE_STRING: &str = "vtcode_plugin_free_string";
/// The exports every plugin must define.
pub(crate) const REQUIRED_EXPORTS: [&str; 3] = [SYMBOL_VERSION, SYMBOL_METADATA, SYMBOL_EXECUTE];

/// Input to one plugin call (VT Code's JSON shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginContext {
    /// Input data for the plugin.
    pub input: HashMap<String, serde_json::Value>,
    /// Workspace root path.
    pub workspace_root: Option<String>,
    /// Plugin configuration.
    pub config: HashMap<String, serde_json::Value>,
}

/// Output of one plugin call (VT Code's JSON shape).
///
/// Unknown fields (a plugin's `metrics`, say) are ignored, as VT Code ignores them: they are
/// dropped here and never reach the host. What bounds a hostile result is the output limit
/// (`limits.output_bytes`), applied to the bytes before they are parsed, not the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginResult {
    /// Whether the plugin succeeded.
    pub success: bool,
    /// Output data.
    pub output: HashMap<String, serde_json::Value>,
    /// Error message if it failed.
    pub error: Option<String>,
    /// Files the plugin created.
    pub files: Vec<String>,
}

/// Plugin metadata (VT Code's JSON shape), as the signed manifest and the plugin's
/// `vtcode_plugin_metadata()` both state it.
///
/// It reads as VT Code's does: `name`, `description`, `version` and `abi_version` are
/// required, the rest default, and unknown fields are ignored. So a host that parses a
/// signed `plugin.json` with it (VT Code's discovery does) sees its metadata and skips
/// `files`, `library`, `capabilities`, `expires` and the rest. This is a reading of
/// metadata, not a check: the signed manifest is parsed strictly, after its signature
/// verified, by the pipeline's own wire type, and what a loaded plugin reports through this
/// type is compared with that manifest field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMetadata {
    /// Plugin name (identifier).
    pub name: String,
    /// Human-readable description.
    pub description: String,
    /// Plugin version (semver).
    pub version: String,
    /// Plugin author.
    pub author: Option<String>,
    /// Plugin ABI version.
    pub abi_version: u32,
    /// When to use this plugin.
    pub when_to_use: Option<String>,
    /// When not to use this plugin.
    pub when_not_to_use: Option<String>,
    /// Tools the plugin may use.
    pub allowed_tools: Option<Vec<String>>,
    /// What the plugin says about its thread safety. Recorded, never trusted: calls to
    /// one plugin are always serialized.
    #[serde(default)]
    pub thread_safe: bool,
}

/// C-compatible plugin metadata (VT Code's FFI type).
#[repr(C)]
#[derive(Debug, Clone)]
pub struct PluginMetadataFFI {
    /// Pointer to the JSON metadata string.
    pub json_ptr: *const c_char,
}

/// C-compatible plugin result (VT Code's FFI type).
#[repr(C)]
#[derive(Debug)]
pub struct PluginResultFFI {
    /// Pointer to the JSON result string.
    pub json_ptr: *const c_char,
}

/// A plugin call went wrong on the plugin's side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// The plugin returned a NULL string.
    #[error("{function} returned NULL")]
    NullResult {
        /// The exported function.
        function: &'static str,
    },
    /// The plugin returned a string longer than the output limit.
    #[error("{function} returned more than {limit} bytes")]
    OutputTooLarge {
        /// The exported function.
        function: &'static str,
        /// The policy's output limit.
        limit: usize,
    },
    /// The plugin returned bytes that are not UTF-8.
    #[error("{function} returned invalid UTF-8 at byte {valid_up_to}")]
    NotUtf8 {
        /// The exported function.
        function: &'static str,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The plugin returned text that is not the expected JSON.
    #[error("{function} returned malformed JSON: {detail}")]
    NotJson {
        /// The exported function.
        function: &'static str,
        /// What the JSON parser said.
        detail: crate::base::json::JsonError,
    },
    /// The call did not finish within its timeout: the policy's, or a shorter one the call
    /// was given (`CallOptions`). The plugin's thread may still be running it; the plugin
    /// handle refuses further calls.
    #[error("call did not finish within {timeout_ms} ms; the plugin is now unusable")]
    Timeout {
        /// The timeout that ran out.
        timeout_ms: u64,
    },
    /// The worker process died: killed by a signal, or exited.
    #[error("worker process died ({})", describe_exit(*signal, *code))]
    Crashed {
        /// The signal that killed it.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
    },
    /// The worker broke the protocol (a hostile or corrupted worker).
    #[error("worker broke the protocol: {0}")]
    Protocol(crate::base::protocol::ProtocolViolation),
    /// An earlier fault left the plugin unusable.
    #[error("plugin is unusable after an earlier fault")]
    Poisoned,
    /// The plugin's thread ended unexpectedly.
    #[error("plugin thread ended unexpectedly")]
    ThreadGone,
    /// The call's cancellation token was cancelled (`CallOptions::cancel`). Before the call
    /// reached the plugin, nothing else happened; while it ran, its worker was killed (or,
    /// in thread mode, the call abandoned) and the handle is poisoned, as after any fault.
    #[error("call cancelled{}", if *.running { " while running; the plugin is now unusable" } else { " before it started" })]
    Cancelled {
        /// Whether the call was running (its worker killed, the handle poisoned) rather
        /// than cancelled before it reached the plugin.
        running: bool,
    },
    /// A host tool called back into the plugin whose request it is serving: the call
    /// would wait for itself. Refused before it reaches the plugin; nothing is poisoned.
    #[error("a host tool called back into the plugin it serves (tools nest one level only)")]
    Reentered,
}

impl FaultError {
    /// Whether this fault ends the worker process (or abandons the plugin thread), so the
    /// handle can serve no further calls.
    pub fn ends_worker(&self) -> bool {
        matches!(
            self,
            FaultError::Crashed { .. }
                | FaultError::Protocol(_)
                | FaultError::Timeout { .. }
                | FaultError::Cancelled { running: true }
        )
    }
}

fn describe_exit(signal: Option<i32>, code: Option<i32>) -> String {
    match (signal, code) {
        (Some(s), _) => {
            let name = match s {
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGABRT => "SIGABRT",
                libc::SIGKILL => "SIGKILL",
                libc::SIGBUS => "SIGBUS",
                libc::SIGILL => "SIGILL",
                libc::SIGFPE => "SIGFPE",
                libc::SIGSYS => "SIGSYS",
                libc::SIGXCPU => "SIGXCPU",
                libc::SIGXFSZ => "SIGXFSZ",
                libc::SIGTERM => "SIGTERM",
                _ => "signal",
            };
            format!("killed by {name} ({s})")
        }
        (None, Some(c)) => format!("exited with status {c}"),
        (None, None) => "unknown status".to_owned(),
    }
}

/// The plugin disagrees with its signed manifest or with this host's ABI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AbiError {
    /// `vtcode_plugin_version()` did not return the manifest's ABI version.
    #[error(
        "plugin reports ABI version {plugin}, its manifest says {manifest}, this host speaks {host}"
    )]
    VersionMismatch {
        /// From the signed manifest.
        manifest: u32,
        /// From `vtcode_plugin_version()`.
        plugin: u32,
        /// [`PLUGIN_ABI_VERSION`].
        host: u32,
    },
    /// A field of the plugin's metadata differs from the signed manifest.
    #[error("plugin metadata says {field} = {plugin:?}, the signed manifest says {manifest:?}")]
    MetadataMismatch {
        /// The field.
        field: &'static str,
        /// From the signed manifest.
        manifest: String,
        /// From `vtcode_plugin_metadata()`.
        plugin: String,
    },
    /// The plugin's metadata could not be read.
    #[error("plugin metadata unreadable: {0}")]
    Metadata(FaultError),
}

/// Copies a plugin-returned C string into host memory, reading at most `limit + 1` bytes.
///
/// # Safety
///
/// `ptr` must be NULL or point to memory readable up to its first NUL byte or `limit + 1`
/// bytes, whichever comes first. This is the plugin ABI's promise; the host cannot check it.
#[allow(unsafe_code)]
pub(crate) unsafe fn copy_bounded(
    ptr: *const c_char,
    limit: usize,
    function: &'static str,
) -> Result<Vec<u8>, FaultError> {
    // SAFETY: the caller's contract is `borrow_bounded`'s; the borrow ends with the copy.
    unsafe { borrow_bounded(ptr, limit, function) }.map(<[u8]>::to_vec)
}

/// The bytes of a plugin-returned C string before its NUL, found reading at most
/// `limit + 1` bytes, without copying them.
///
/// # Safety
///
/// As [`copy_bounded`]; and the memory must stay valid and unfreed for `'a` (the caller
/// keeps the borrow short: until it hands the string back to the plugin).
#[allow(unsafe_code)]
pub(crate) unsafe fn borrow_bounded<'a>(
    ptr: *const c_char,
    limit: usize,
    function: &'static str,
) -> Result<&'a [u8], FaultError> {
    if ptr.is_null() {
        return Err(FaultError::NullResult { function });
    }
    let probe = limit.saturating_add(1);
    // SAFETY: `ptr` is non-null and, by the caller's contract, readable up to its NUL or
    // `probe` bytes; strnlen reads no further than that.
    let len = unsafe { libc::strnlen(ptr, probe) };
    if len > limit {
        return Err(FaultError::OutputTooLarge { function, limit });
    }
    // SAFETY: strnlen found `len` readable bytes before the NUL at `ptr`, valid for `'a`
    // by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

fn utf8<'a>(bytes: &'a [u8], function: &'static str) -> Result<&'a str, FaultError> {
    std::str::from_utf8(bytes).map_err(|e| FaultError::NotUtf8 {
        function,
        valid_up_to: e.valid_up_to(),
    })
}

/// Decodes what `vtcode_plugin_execute` returned (bytes before the NUL).
pub(crate) fn decode_result(bytes: &[u8]) -> Result<PluginResult, FaultError> {
    let text = utf8(bytes, SYMBOL_EXECUTE)?;
    serde_json::from_str(text).map_err(|e| FaultError::NotJson {
        function: SYMBOL_EXECUTE,
        detail: crate::base::json::JsonError::new(e),
    })
}

/// Decodes what `vtcode_plugin_metadata` returned (bytes before the NUL).
pub(crate) fn decode_metadata(bytes: &[u8]) -> Result<PluginMetadata, FaultError> {
    let text = utf8(bytes, SYMBOL_METADATA)?;
    serde_json::from_str(text).map_err(|e| FaultError::NotJson {
        function: SYMBOL_METADATA,
        detail: crate::base::json::JsonError::new(e),
    })
}

/// A call's input could not be handed to the plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The context could not be written as JSON.
    #[error("cannot write the context as JSON: {0}")]
    Json(crate::base::json::JsonError),
    /// The JSON text holds a NUL byte, so it cannot be passed as a C string. serde_json
    /// escapes NUL inside strings, so this means a serializer bug, not a caller's value.
    #[error("the context's JSON holds a NUL byte at offset {offset}")]
    Nul {
        /// Where the NUL byte is.
        offset: usize,
    },
}

impl InputError {
    /// Wraps a serialization failure (crate-private, so serde_json stays out of the API).
    pub(crate) fn json(e: serde_json::Error) -> Self {
        InputError::Json(crate::base::json::JsonError::new(e))
    }
}

/// Encodes `ctx` as JSON into `out` (cleared first), with no NUL byte added: for the
/// process executor, which copies the bytes into the call region or a frame. `out` keeps
/// its allocation from call to call, so a large context is not encoded into fresh pages
/// (and grown by doubling) each time. NUL inside strings is escaped as `\u0000`, so the
/// bytes hold no NUL (the worker checks that again before it hands them over). The text
/// is serde_json's, written faster ([`super::encode`]).
pub(crate) fn encode_context_into(ctx: &PluginContext, out: &mut Vec<u8>) {
    use super::encode::{write_object, write_str};
    out.clear();
    // Field order and names: those of the derived `Serialize`.
    out.extend_from_slice(b"{\"input\":");
    write_object(out, ctx.input.iter());
    out.extend_from_slice(b",\"workspace_root\":");
    match &ctx.workspace_root {
        Some(root) => write_str(out, root),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"config\":");
    write_object(out, ctx.config.iter());
    out.push(b'}');
}

/// Encodes a context for the plugin as a NUL-terminated string (thread mode).
pub(crate) fn encode_context(ctx: &PluginContext) -> Result<std::ffi::CString, InputError> {
    let mut json = Vec::new();
    encode_context_into(ctx, &mut json);
    // NUL inside strings is escaped as \u0000, so the JSON text holds no NUL byte.
    std::ffi::CString::new(json).map_err(|e| InputError::Nul {
        offset: e.nul_position(),
    })
}

/// Reads a C string the host itself produced; used only in tests of this module.
#[cfg(test)]
#[allow(unsafe_code)]
fn read_own(c: &std::ffi::CStr, limit: usize) -> Result<Vec<u8>, FaultError> {
    // SAFETY: `c` is a valid NUL-terminated string owned by the test.
    unsafe { copy_bounded(c.as_ptr(), limit, SYMBOL_EXECUTE) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bounded_copy_refuses_null_and_oversize() {
        // SAFETY: a NULL pointer is explicitly allowed by the contract.
        #[allow(unsafe_code)]
        let null = unsafe { copy_bounded(std::ptr::null(), 10, SYMBOL_EXECUTE) };
        assert!(matches!(null, Err(FaultError::NullResult { .. })));
        let s = std::ffi::CString::new("0123456789").unwrap();
        assert_eq!(read_own(&s, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_own(&s, 9),
            Err(FaultError::OutputTooLarge { limit: 9, .. })
        ));
    }

    #[test]
    fn results_decode_strictly() {
        let ok =
            decode_result(br#"{"success":true,"output":{"a":1},"error":null,"files":[]}"#).unwrap();
        assert!(ok.success);
        assert!(matches!(
            decode_result(b"\xff{}"),
            Err(FaultError::NotUtf8 { valid_up_to: 0, .. })
        ));
        assert!(matches!(
            decode_result(b"not json"),
            Err(FaultError::NotJson { .. })
        ));
        // A missing or mistyped field is still refused.
        assert!(matches!(
            decode_result(br#"{"success":true,"output":{},"error":null}"#),
            Err(FaultError::NotJson { .. })
        ));
        assert!(matches!(
            decode_result(br#"{"success":"yes","output":{},"error":null,"files":[]}"#),
            Err(FaultError::NotJson { .. })
        ));
    }

    #[test]
    fn results_ignore_unknown_fields_as_vt_code_does() {
        let with_metrics = decode_result(
            br#"{"success":true,"output":{"a":1},"error":null,"files":["f"],"metrics":{"ms":3},"x":[1,{"y":null}]}"#,
        )
        .unwrap();
        let plain =
            decode_result(br#"{"success":true,"output":{"a":1},"error":null,"files":["f"]}"#)
                .unwrap();
        assert_eq!(with_metrics, plain);
        // The unknown field is dropped: writing the result back never carries it.
        let again = serde_json::to_string(&with_metrics).unwrap();
        assert!(!again.contains("metrics"), "{again}");
    }

    #[test]
    fn metadata_reads_as_vt_code_reads_it() {
        // A signed manifest, as VT Code's discovery parses `plugin.json`: every field the
        // pipeline's strict wire type knows beyond VT Code's nine is skipped.
        let signed = br#"{"name":"echo","description":"d","version":"1.2.3","abi_version":1,
            "library":"libecho.so","capabilities":{"read":["/etc"]},
            "expires":"2030-01-01T00:00:00Z",
            "files":[{"path":"libecho.so","sha256":"00","size":5}]}"#;
        let m = decode_metadata(signed).unwrap();
        assert_eq!(
            m,
            PluginMetadata {
                name: "echo".into(),
                description: "d".into(),
                version: "1.2.3".into(),
                author: None,
                abi_version: 1,
                when_to_use: None,
                when_not_to_use: None,
                allowed_tools: None,
                thread_safe: false,
            }
        );
        // VT Code's required fields stay required.
        for missing in ["name", "description", "version", "abi_version"] {
            let mut v: serde_json::Value = serde_json::from_slice(signed).unwrap();
            v.as_object_mut().unwrap().remove(missing);
            let bytes = serde_json::to_vec(&v).unwrap();
            assert!(
                matches!(decode_metadata(&bytes), Err(FaultError::NotJson { .. })),
                "{missing}"
            );
        }
        let e =
            decode_metadata(br#"{"name":"e","description":"d","version":"1","abi_version":"1"}"#);
        assert!(matches!(e, Err(FaultError::NotJson { .. })));
    }

    #[test]
    fn contexts_encode_without_interior_nul() {
        let mut ctx = PluginContext::default();
        ctx.input
            .insert("k".into(), serde_json::Value::String("a\0b".into()));
        let c = encode_context(&ctx).unwrap();
        let back: PluginContext = serde_json::from_slice(c.to_bytes()).unwrap();
        assert_eq!(back, ctx);
    }

    /// The context's text is serde_json's, byte for byte, every field and none set.
    #[test]
    fn contexts_encode_as_serde_json_encodes_them() {
        let mut ctx = PluginContext::default();
        let check = |ctx: &PluginContext| {
            let mut ours = Vec::new();
            encode_context_into(ctx, &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(ctx).unwrap()
            );
        };
        check(&ctx);
        ctx.input
            .insert("a\"b".into(), serde_json::json!([1, "x\ny", {"k": null}]));
        ctx.input.insert("second".into(), serde_json::json!(-0.5));
        ctx.workspace_root = Some("/w/\"ws\"\\".into());
        ctx.config
            .insert("mode".into(), serde_json::json!("fast\u{1}"));
        check(&ctx);
    }
}
