//! The exports `export_plugin!` writes, called as a host calls them: through their C
//! signatures, with the strings they return read as C strings and released with
//! `vtcode_plugin_free_string`.
#![allow(unsafe_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::ffi::{c_char, CStr, CString};

use skillgate_plugin::serde_json::{self, json, Value};
use skillgate_plugin::{export_plugin, Output, PluginContext};

/// The test plugin: `input.mode` picks a behaviour.
fn handler(ctx: PluginContext) -> Result<Output, Box<dyn std::error::Error>> {
    match ctx.input_str("mode") {
        Some("panic") => panic!("asked to panic"),
        Some("panic_string") => std::panic::panic_any(format!("owned {}", 42)),
        Some("panic_other") => std::panic::panic_any(7_u32),
        Some("fail") => Err("asked to fail".into()),
        Some("json_error") => Ok(serde_json::from_str::<Value>("{").map(|_| Output::new())?),
        Some("files") => Ok(Output::new()
            .with("made", 2)
            .file("/w/a.txt")
            .file("/w/b.txt")),
        _ => Ok(Output::new()
            .with("input", Value::Object(ctx.input))
            .with("workspace_root", ctx.workspace_root)
            .with("config", Value::Object(ctx.config))),
    }
}

export_plugin!(
    handler: handler,
    when_to_use: "In the SDK's tests",
    allowed_tools: &["bash", "file_read"],
);

/// Takes a string the plugin returned: reads it, then releases it as a host must.
fn take(ptr: *const c_char) -> Value {
    assert!(!ptr.is_null(), "the SDK never returns NULL here");
    // SAFETY: a NUL-terminated string the plugin returned and has not been freed.
    let text = unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned();
    vtcode_plugin_free_string(ptr);
    serde_json::from_str(&text).unwrap()
}

fn call_bytes(context: &[u8]) -> Value {
    let c = CString::new(context).unwrap();
    // SAFETY: a valid NUL-terminated context that outlives the call.
    take(unsafe { vtcode_plugin_execute(c.as_ptr()) })
}

fn call(context: Value) -> Value {
    call_bytes(context.to_string().as_bytes())
}

fn assert_failed_with(result: &Value, error: &str) {
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(result["error"], error, "{result}");
    assert_eq!(result["output"], json!({}));
    assert_eq!(result["files"], json!([]));
}

#[test]
fn the_version_is_abi_1() {
    assert_eq!(vtcode_plugin_version(), 1);
}

#[test]
fn metadata_comes_from_cargo_toml_and_the_settings() {
    let meta = take(vtcode_plugin_metadata());
    assert_eq!(
        meta,
        json!({
            "name": "skillgate-plugin",
            "description": env!("CARGO_PKG_DESCRIPTION"),
            "version": env!("CARGO_PKG_VERSION"),
            "author": null,
            "abi_version": 1,
            "when_to_use": "In the SDK's tests",
            "when_not_to_use": null,
            "allowed_tools": ["bash", "file_read"],
            "thread_safe": false
        })
    );
}

#[test]
fn a_context_round_trips_through_the_handler() {
    let context = json!({
        "input": {"text": "a \u{0} b", "n": [1, 2.5, null]},
        "workspace_root": "/work/space",
        "config": {"deep": {"x": true}}
    });
    let result = call(context.clone());
    assert_eq!(
        result,
        json!({"success": true, "output": context, "error": null, "files": []})
    );
    // Missing and null fields are empty, as in VT Code.
    let result = call(json!({}));
    assert_eq!(
        result["output"],
        json!({"input": {}, "workspace_root": null, "config": {}})
    );
}

#[test]
fn files_are_reported() {
    let result = call(json!({"input": {"mode": "files"}}));
    assert_eq!(
        result,
        json!({
            "success": true, "output": {"made": 2}, "error": null,
            "files": ["/w/a.txt", "/w/b.txt"]
        })
    );
}

#[test]
fn a_handler_error_is_a_failed_result() {
    assert_failed_with(&call(json!({"input": {"mode": "fail"}})), "asked to fail");
    let result = call(json!({"input": {"mode": "json_error"}}));
    assert_eq!(result["success"], false);
    assert!(result["error"]
        .as_str()
        .unwrap()
        .starts_with("EOF while parsing"));
}

#[test]
fn a_panic_is_a_failed_result_and_the_plugin_serves_on() {
    let result = call(json!({"input": {"mode": "panic"}}));
    assert_eq!(result["success"], false);
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("plugin panicked: asked to panic (")
            && error.contains("tests/exports.rs:"),
        "{error}"
    );
    let result = call(json!({"input": {"mode": "panic_string"}}));
    assert!(result["error"]
        .as_str()
        .unwrap()
        .starts_with("plugin panicked: owned 42 ("));
    let result = call(json!({"input": {"mode": "panic_other"}}));
    assert!(result["error"]
        .as_str()
        .unwrap()
        .starts_with("plugin panicked: a non-string panic payload ("));
    // The next call is served normally.
    assert_eq!(call(json!({"input": {"k": 1}}))["success"], true);
}

#[test]
fn bad_contexts_are_failed_results() {
    assert_failed_with(
        &call_bytes(b"\xff\xfe{}"),
        "context is not valid UTF-8 (at byte 0)",
    );
    let result = call_bytes(b"{\"input\": ");
    assert_eq!(result["success"], false);
    assert!(result["error"]
        .as_str()
        .unwrap()
        .starts_with("context is not valid JSON: EOF while parsing"));
    assert_failed_with(&call_bytes(b"[]"), "context is not a JSON object");
    assert_failed_with(
        &call(json!({"input": "text"})),
        "context field `input` is not an object",
    );
    // SAFETY: NULL is allowed by the ABI.
    let result = take(unsafe { vtcode_plugin_execute(std::ptr::null()) });
    assert_failed_with(&result, "the host passed no context (NULL)");
}

#[test]
fn freeing_null_foreign_and_freed_pointers_is_harmless() {
    vtcode_plugin_free_string(std::ptr::null());
    let foreign = c"a string the plugin never returned";
    vtcode_plugin_free_string(foreign.as_ptr());
    let ptr = vtcode_plugin_metadata();
    vtcode_plugin_free_string(ptr);
    // A second free of the same pointer is ignored, not a double free.
    vtcode_plugin_free_string(ptr);
    // Still serving.
    assert_eq!(take(vtcode_plugin_metadata())["abi_version"], 1);
}

#[test]
fn a_host_that_writes_into_a_string_cannot_change_what_is_freed() {
    let ptr = vtcode_plugin_metadata();
    // SAFETY: the string is ours until freed; cutting it short with a NUL changes its
    // strlen, which must not change the size the SDK frees.
    unsafe { *ptr.cast_mut() = 0 };
    vtcode_plugin_free_string(ptr);
    assert_eq!(take(vtcode_plugin_metadata())["abi_version"], 1);
}
