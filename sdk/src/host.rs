//! The host extension (`skillgate_plugin_host_v1`, table version 1): tools the plugin asks
//! its host to run, and progress messages during a call.
//!
//! skillgate calls the export [`export_plugin!`](crate::export_plugin) writes once after
//! loading the plugin, before any call, with a table that lives as long as the process;
//! this module keeps it. A host without the extension (VT Code) never calls the export, and
//! [`host`] is then `None`: a plugin written with this crate should work without it, or fail
//! its call with a clear error.
//!
//! A tool runs only if the plugin's signed `plugin.json` names it in `"tools"` and the
//! host's policy allows it; anything else comes back as a [`ToolError`] (kind `denied`), never
//! a crash. Use the table during a call, from the thread that runs the handler (skillgate's
//! thread mode answers no other thread; kind `no_call`).

use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicPtr, Ordering};

use serde_json::Value;

/// `struct skillgate_host_v1` (see `include/skillgate_plugin.h`).
#[repr(C)]
#[doc(hidden)]
pub struct HostTableV1 {
    version: u32,
    size: u32,
    call_tool: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut c_char,
    progress: unsafe extern "C" fn(*const c_char),
    free_string: unsafe extern "C" fn(*mut c_char),
}

/// The table version this crate reads.
pub const HOST_TABLE_VERSION: u32 = 1;

static TABLE: AtomicPtr<HostTableV1> = AtomicPtr::new(std::ptr::null_mut());

/// What the generated `skillgate_plugin_host_v1` calls: keeps `table` if it is version 1
/// and at least as large as this crate's declaration.
///
/// # Safety
///
/// `table` is NULL or points to a host table that lives as long as the process (the
/// extension ABI's promise).
#[doc(hidden)]
#[allow(unsafe_code)]
pub unsafe fn set_table(table: *const HostTableV1) {
    if table.is_null() {
        return;
    }
    // SAFETY: the extension ABI: a non-NULL pointer to a table that lives as long as the
    // process; only its first two fields are read before its size is known.
    let (version, size) = unsafe { ((*table).version, (*table).size) };
    let needed = std::mem::size_of::<HostTableV1>();
    if version == HOST_TABLE_VERSION && usize::try_from(size).is_ok_and(|s| s >= needed) {
        TABLE.store(table.cast_mut(), Ordering::Release);
    }
}

/// The host's table, if the host handed one (skillgate does; VT Code does not).
pub fn host() -> Option<Host> {
    let table = TABLE.load(Ordering::Acquire);
    (!table.is_null()).then_some(Host { table })
}

/// The host's functions: [`Host::call_tool`] and [`Host::progress`].
#[derive(Debug, Clone, Copy)]
pub struct Host {
    table: *const HostTableV1,
}

/// A tool request the host refused, or a tool that failed: `{"error": {"kind", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// `denied`, `no_host_tools`, `unknown_tool`, `bad_request`, `failed`, `limit`,
    /// `timeout`, `recursion`, `no_call` (see the README's "Host tools").
    pub kind: String,
    /// The host's explanation.
    pub message: String,
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host tool {}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ToolError {}

fn tool_error(kind: &str, message: &str) -> ToolError {
    ToolError {
        kind: kind.to_owned(),
        message: message.to_owned(),
    }
}

impl Host {
    /// Asks the host to run tool `name` with `args`; its result, or why not.
    #[allow(unsafe_code)]
    pub fn call_tool(&self, name: &str, args: &Value) -> Result<Value, ToolError> {
        let name = CString::new(name).map_err(|_| tool_error("bad_request", "NUL in the name"))?;
        let args = CString::new(args.to_string())
            .map_err(|_| tool_error("bad_request", "NUL in the arguments"))?;
        // SAFETY: `table` was checked in `set_table` and lives as long as the process.
        let table = unsafe { &*self.table };
        // SAFETY: both strings are NUL-terminated and outlive the call; the host never
        // returns NULL but it is checked anyway.
        let reply = unsafe { (table.call_tool)(name.as_ptr(), args.as_ptr()) };
        if reply.is_null() {
            return Err(tool_error("failed", "the host returned NULL"));
        }
        // SAFETY: a NUL-terminated string the host allocated; copied before it is released.
        let text = unsafe { CStr::from_ptr(reply) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: released once, with the table's own function.
        unsafe { (table.free_string)(reply) };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| tool_error("failed", &format!("the host's reply is not JSON: {e}")))?;
        if let Some(ok) = value.get("ok") {
            return Ok(ok.clone());
        }
        let error = value.get("error");
        let field = |k: &str| {
            error
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Err(ToolError {
            kind: field("kind"),
            message: field("message"),
        })
    }

    /// Sends one progress message to the host (its callback receives it during the call).
    /// Fire and forget: past the host's bound messages are dropped.
    #[allow(unsafe_code)]
    pub fn progress(&self, message: &Value) {
        let Ok(text) = CString::new(message.to_string()) else {
            return;
        };
        // SAFETY: as in `call_tool`.
        let table = unsafe { &*self.table };
        // SAFETY: a NUL-terminated string that outlives the call.
        unsafe { (table.progress)(text.as_ptr()) };
    }
}
