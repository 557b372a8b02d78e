//! The ABI boundary: what the generated exports call.
//!
//! Three promises are kept here, whatever the handler does:
//!
//! - **No unwinding across `extern "C"`.** All Rust code of a call (parsing, the handler,
//!   its error's `Display`, encoding) runs under `catch_unwind`; a panic becomes an error
//!   result. The panic's payload is leaked rather than dropped, because a payload whose `Drop`
//!   panics would otherwise unwind out of the boundary. While a handler runs, a panic hook
//!   installed once records the message and location quietly (no text on the host's stderr);
//!   panics elsewhere go to the hook that was there before.
//! - **One owner per string.** Strings are boxed byte slices recorded in [`LIVE`] by address
//!   with their length. `free_string` frees only an address found there, removing it first,
//!   so NULL, foreign pointers and double frees are ignored, and the allocation is rebuilt
//!   with the length it was made with (a host that wrote a NUL into the string cannot make it
//!   free the wrong size).
//! - **Always a document.** `execute` returns NULL only if allocation is impossible; any
//!   failure, including a bad context, is a `{"success": false, …}` result.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr};
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once, PoisonError};

use serde_json::{Map, Value};

use crate::{Metadata, Output, PluginContext};

/// Strings handed to the host and not yet freed: address → allocation length (NUL included).
/// A `BTreeMap` rather than a `HashMap` so the first call needs no random seed.
static LIVE: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

/// Installs [`quiet_hook`] once.
static HOOK: Once = Once::new();

thread_local! {
    /// Set while a handler runs on this thread: its panics are recorded, not printed.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    /// The last recorded panic on this thread: message and location.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Used when even an error document cannot be encoded (it cannot, but no path may panic).
const ENCODING_FAILED: &str = r#"{"success":false,"output":{},"error":"the plugin's result could not be encoded","files":[]}"#;

/// `vtcode_plugin_metadata`: the metadata JSON, owned by this crate; NULL only if it could
/// not be built.
pub fn metadata(metadata: &Metadata) -> *const c_char {
    catch_unwind(|| hand_out(metadata.to_json())).unwrap_or(std::ptr::null())
}

/// `vtcode_plugin_execute`: parses the context, runs `handler` and returns the result JSON,
/// owned by this crate.
///
/// # Safety
///
/// `context` is NULL or points to a NUL-terminated string that stays valid and unchanged until
/// this returns.
#[allow(unsafe_code)]
pub unsafe fn execute<F, O, E>(context: *const c_char, handler: F) -> *const c_char
where
    F: FnOnce(PluginContext) -> Result<O, E>,
    O: Into<Output>,
    E: Display,
{
    let bytes = if context.is_null() {
        None
    } else {
        // SAFETY: non-NULL, and the caller promises a NUL-terminated string that outlives
        // this call; the borrow ends before we return.
        Some(unsafe { CStr::from_ptr(context) }.to_bytes())
    };
    let document = catch_unwind(AssertUnwindSafe(|| respond(bytes, handler)))
        .unwrap_or_else(|payload| failure(&panic_text(payload)));
    hand_out(document)
}

/// `vtcode_plugin_free_string`: frees a string this crate handed out; ignores anything else.
#[allow(unsafe_code)]
pub fn free_string(string: *const c_char) {
    if string.is_null() {
        return;
    }
    let Some(len) = live().remove(&(string as usize)) else {
        return;
    };
    let slice = std::ptr::slice_from_raw_parts_mut(string.cast_mut().cast::<u8>(), len);
    // SAFETY: the address was in LIVE, so it is a `Box<[u8]>` of `len` bytes leaked by
    // `hand_out` and not yet freed; removing it from LIVE above (under the lock) makes this
    // the one call that rebuilds and drops it.
    drop(unsafe { Box::from_raw(slice) });
}

fn live() -> std::sync::MutexGuard<'static, BTreeMap<usize, usize>> {
    // The map is consistent after any panic (each insert or remove is one operation).
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gives `text` to the host as a NUL-terminated string recorded in [`LIVE`].
fn hand_out(text: String) -> *const c_char {
    let mut bytes = text.into_bytes();
    if bytes.contains(&0) {
        // JSON from serde_json escapes NUL; a NUL here would cut the document short.
        bytes = ENCODING_FAILED.as_bytes().to_vec();
    }
    bytes.push(0);
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed).cast::<u8>();
    live().insert(ptr as usize, len);
    ptr.cast_const().cast::<c_char>()
}

/// Everything of one call that may panic.
fn respond<F, O, E>(context: Option<&[u8]>, handler: F) -> String
where
    F: FnOnce(PluginContext) -> Result<O, E>,
    O: Into<Output>,
    E: Display,
{
    HOOK.call_once(install_quiet_hook);
    let ctx = match context.map(PluginContext::from_json) {
        None => return failure(&crate::ContextError::Null.to_string()),
        Some(Err(e)) => return failure(&e.to_string()),
        Some(Ok(ctx)) => ctx,
    };
    let _ = LAST_PANIC.try_with(|p| p.borrow_mut().take());
    let _in_call = InCall::enter();
    match handler(ctx) {
        Ok(output) => success(output.into()),
        Err(e) => failure(&e.to_string()),
    }
}

/// Marks this thread as running a handler until dropped (also when unwinding).
struct InCall;

impl InCall {
    fn enter() -> Self {
        let _ = IN_CALL.try_with(|c| c.set(true));
        InCall
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        let _ = IN_CALL.try_with(|c| c.set(false));
    }
}

fn install_quiet_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_CALL.try_with(Cell::get).unwrap_or(false) {
            let message = payload_str(info.payload()).unwrap_or("a non-string panic payload");
            let text = match info.location() {
                Some(at) => format!("{message} ({}:{}:{})", at.file(), at.line(), at.column()),
                None => message.to_owned(),
            };
            let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(text));
        } else {
            previous(info);
        }
    }));
}

/// The error text for a caught panic; the payload is leaked (see the module docs).
fn panic_text(payload: Box<dyn Any + Send>) -> String {
    let recorded = LAST_PANIC
        .try_with(|p| p.borrow_mut().take())
        .ok()
        .flatten();
    let text = recorded.unwrap_or_else(|| {
        payload_str(payload.as_ref())
            .unwrap_or("a non-string panic payload")
            .to_owned()
    });
    std::mem::forget(payload);
    format!("plugin panicked: {text}")
}

fn payload_str(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

fn success(output: Output) -> String {
    let files = output.files.into_iter().map(Value::String).collect();
    document(true, output.data, Value::Null, files)
}

fn failure(error: &str) -> String {
    document(
        false,
        Map::new(),
        Value::String(error.to_owned()),
        Vec::new(),
    )
}

fn document(success: bool, output: Map<String, Value>, error: Value, files: Vec<Value>) -> String {
    let mut doc = Map::new();
    doc.insert("success".into(), Value::Bool(success));
    doc.insert("output".into(), Value::Object(output));
    doc.insert("error".into(), error);
    doc.insert("files".into(), Value::Array(files));
    serde_json::to_string(&Value::Object(doc)).unwrap_or_else(|_| ENCODING_FAILED.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn take(ptr: *const c_char) -> String {
        assert!(!ptr.is_null());
        // SAFETY: `ptr` came from `hand_out` and is freed only below.
        let text = unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned();
        free_string(ptr);
        text
    }

    #[test]
    fn strings_are_freed_once_and_only_if_ours() {
        let a = hand_out("x".to_owned());
        assert!(live().contains_key(&(a as usize)));
        free_string(a);
        assert!(!live().contains_key(&(a as usize)));
        // A second free and a foreign pointer are ignored.
        free_string(a);
        let foreign = c"not ours";
        free_string(foreign.as_ptr());
        free_string(std::ptr::null());
    }

    #[test]
    fn a_nul_in_a_document_becomes_an_error_document() {
        assert_eq!(take(hand_out("a\0b".to_owned())), ENCODING_FAILED);
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_panicking_error_display_is_caught() {
        struct Bad;
        impl Display for Bad {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("display exploded")
            }
        }
        // SAFETY: a valid NUL-terminated context.
        let out = unsafe { execute(c"{}".as_ptr(), |_| Err::<Output, _>(Bad)) };
        let doc: Value = serde_json::from_str(&take(out)).unwrap();
        assert_eq!(doc["success"], false);
        // The error's Display runs inside the call, so its location is recorded too.
        let error = doc["error"].as_str().unwrap();
        assert!(
            error.starts_with("plugin panicked: display exploded (sdk/src/boundary.rs:")
                || error.starts_with("plugin panicked: display exploded (src/boundary.rs:"),
            "{error}"
        );
    }
}
