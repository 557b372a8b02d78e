//! `wordcount`: an example skill plugin written with the `skillgate-plugin` SDK.
//!
//! Input `{"text": "..."}`; output `{"words": N, "lines": N, "chars": N}`, counted as
//! `str::split_whitespace`, `str::lines` and `str::chars` count them. A call without a string
//! `text` fails with `input.text must be a string`.
//!
//! Input `{"path": "notes.txt"}` instead counts a file of the host's workspace, read through
//! the host's `workspace.read` tool (skillgate's host extension: the signed `plugin.json`
//! names the tool in `"tools"`, and the host's policy must allow it); the plugin itself is
//! granted no file. It reports its progress to the host while it works.
//!
//! Test hook: `{"panic": true}` in the input makes the handler panic on purpose, so the tests
//! can show the SDK turns a panic into a failed result and the plugin serves the next call.
//!
//! No `unsafe` here and no `#[no_mangle]`: `export_plugin!` writes the four ABI exports,
//! the metadata comes from this crate's `Cargo.toml`.
#![forbid(unsafe_code)]

use skillgate_plugin::{export_plugin, host, serde_json::json, Output, PluginContext};

fn count(ctx: PluginContext) -> Result<Output, String> {
    if ctx.input.get("panic").and_then(|v| v.as_bool()) == Some(true) {
        panic!("input.panic asked for a panic (a test hook)");
    }
    let from_host;
    let text = match ctx.input.get("path").and_then(|v| v.as_str()) {
        Some(path) => {
            let host = host().ok_or("this host offers no tools (input.path needs one)")?;
            host.progress(&json!({"stage": "reading", "path": path}));
            let file = host
                .call_tool("workspace.read", &json!({ "path": path }))
                .map_err(|e| e.to_string())?;
            from_host = file["content"].as_str().unwrap_or_default().to_owned();
            host.progress(&json!({"stage": "counting"}));
            from_host.as_str()
        }
        None => ctx.required_str("text")?,
    };
    Ok(Output::new()
        .with("words", text.split_whitespace().count())
        .with("lines", text.lines().count())
        .with("chars", text.chars().count()))
}

export_plugin!(
    handler: count,
    when_to_use: "To count the words, lines and characters of a text",
    allowed_tools: &[],
);
