//! The SDK's panic hook keeps a handler's panic quiet and hands every other panic to the hook
//! that was installed before it. Its own test binary: it installs a process-wide hook first.
#![allow(unsafe_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use skillgate_plugin::serde_json::{self, Value};
use skillgate_plugin::{export_plugin, Output, PluginContext};

/// Panics seen by the hook installed before the SDK's.
static SEEN_BY_PREVIOUS: AtomicUsize = AtomicUsize::new(0);

fn handler(ctx: PluginContext) -> Result<Output, String> {
    if ctx.input_str("mode") == Some("panic") {
        panic!("inside a call");
    }
    Ok(Output::new())
}

export_plugin!(handler);

fn call(context: &CStr) -> Value {
    // SAFETY: a valid NUL-terminated context.
    let ptr = unsafe { vtcode_plugin_execute(context.as_ptr()) };
    // SAFETY: a string the plugin returned, freed right after.
    let text = unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned();
    vtcode_plugin_free_string(ptr);
    serde_json::from_str(&text).unwrap()
}

#[test]
fn only_panics_inside_a_call_are_kept_from_the_previous_hook() {
    std::panic::set_hook(Box::new(|_| {
        SEEN_BY_PREVIOUS.fetch_add(1, Ordering::SeqCst);
    }));
    // The first call installs the SDK's hook on top of the one above.
    assert_eq!(call(c"{}")["success"], true);

    let result = call(cr#"{"input":{"mode":"panic"}}"#);
    assert_eq!(result["success"], false);
    assert_eq!(
        SEEN_BY_PREVIOUS.load(Ordering::SeqCst),
        0,
        "a call's panic stays quiet"
    );

    // A panic in the plugin's other code (here, a thread of its own) is not the SDK's; it
    // also shows the count above could move.
    assert!(std::thread::spawn(|| panic!("outside a call"))
        .join()
        .is_err());
    assert_eq!(SEEN_BY_PREVIOUS.load(Ordering::SeqCst), 1);
}
