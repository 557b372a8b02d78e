//! rust_panic: a Rust cdylib plugin whose `vtcode_plugin_execute` panics.
//!
//! The panic happens inside a plain `extern "C" fn`. A panic cannot unwind out of such a
//! function: current Rust aborts the process instead ("panic in a function that cannot
//! unwind"), through `abort()`, i.e. SIGABRT. This is the "panic crossing the FFI boundary"
//! case: in process isolation the worker dies and the host must survive.
//!
//! Metadata name "rust-panic", version "1.0.0" (install it as `rust-panic`, library
//! `librust-panic.so`). Built by `tests/support/build.rs::build_rust_plugin` (single file,
//! no dependencies, edition 2021).
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, CStr, CString};

const METADATA: &str = concat!(
    r#"{"name":"rust-panic","description":"skillgate test plugin","version":"1.0.0","#,
    r#""author":"skillgate tests","abi_version":1,"when_to_use":null,"#,
    r#""when_not_to_use":null,"allowed_tools":[],"thread_safe":false}"#
);

fn to_c(s: &str) -> *const c_char {
    match CString::new(s) {
        Ok(c) => c.into_raw(),
        Err(_) => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn vtcode_plugin_version() -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn vtcode_plugin_metadata() -> *const c_char {
    to_c(METADATA)
}

#[no_mangle]
pub extern "C" fn vtcode_plugin_execute(context_json: *const c_char) -> *const c_char {
    let len = if context_json.is_null() {
        0
    } else {
        // SAFETY: the host passes a NUL-terminated string that outlives the call.
        unsafe { CStr::from_ptr(context_json) }.to_bytes().len()
    };
    // Not reached in a way that returns: the panic cannot unwind out of `extern "C"`.
    panic!("rust_panic plugin: deliberate panic across the FFI boundary ({len} input bytes)");
}

#[no_mangle]
pub unsafe extern "C" fn vtcode_plugin_free_string(s: *const c_char) {
    if !s.is_null() {
        // SAFETY: every string this plugin returns comes from `CString::into_raw`.
        drop(unsafe { CString::from_raw(s.cast_mut()) });
    }
}
