//! The plugin SDK end to end: `examples/sdk-plugin` (the `wordcount` plugin, written with
//! `skillgate-plugin` and no line of its own `unsafe`) built as its author builds it — plain
//! `cargo build --release` — signed, then verified, loaded and run under the DEFAULT policy
//! (its ELF checks included) in both isolation modes; and the SDK's host extension
//! (`skillgate_plugin::host()`): the example reads a workspace file through the host's
//! `workspace.read` tool and reports progress.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::json;
use skillgate::sign::sign_plugin_dir;
use skillgate::{Gate, PluginResult};
use support::{Host, ctx};

/// The example's library, built once per test run into `target/sdk-plugin` (kept between
/// runs, so only the first build compiles serde_json), `--locked` to the committed lock file
/// (see `support::build::build_cargo_project`).
fn sdk_plugin_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        support::build::build_cargo_project("examples/sdk-plugin", &["--release"], "sdk-plugin")
            .join("libwordcount.so")
    })
}

/// `root/wordcount`: the built library and the example's own `plugin.json`, signed.
fn install_wordcount(host: &Host) -> PathBuf {
    let dir = host.root.join("wordcount");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(sdk_plugin_library(), dir.join("libwordcount.so")).unwrap();
    std::fs::copy(
        support::build::repo_root().join("examples/sdk-plugin/plugin.json"),
        dir.join("plugin.json"),
    )
    .unwrap();
    sign_plugin_dir(&dir, &host.key).unwrap();
    dir
}

fn loaded(host: &Host) -> (Gate, skillgate::LoadedPlugin) {
    let dir = install_wordcount(host);
    let gate = host.gate();
    let plugin = gate
        .verify_and_load(&dir)
        .unwrap_or_else(|e| panic!("{:?}: the SDK example must load: {e}", host.isolation));
    (gate, plugin)
}

fn counted(words: u64, lines: u64, chars: u64) -> PluginResult {
    PluginResult {
        success: true,
        output: [
            ("words".to_owned(), json!(words)),
            ("lines".to_owned(), json!(lines)),
            ("chars".to_owned(), json!(chars)),
        ]
        .into_iter()
        .collect(),
        error: None,
        files: Vec::new(),
    }
}

#[test]
fn the_sdk_example_passes_the_default_policy_and_counts_in_both_modes() {
    for host in Host::each_mode() {
        let (gate, plugin) = loaded(&host);
        assert_eq!(plugin.metadata().name, "wordcount");
        let result = plugin
            .execute(&ctx(json!({"text": "two words\nand a third line ✓"})))
            .unwrap();
        assert_eq!(result, counted(7, 2, 28), "{:?}", host.isolation);
        // The handler's own error is a failed result, not a fault.
        let result = plugin.execute(&ctx(json!({"text": 5}))).unwrap();
        assert!(!result.success);
        assert_eq!(
            result.error.as_deref(),
            Some("input.text must be a string"),
            "{:?}",
            host.isolation
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_handler_panic_is_a_failed_result_and_the_plugin_serves_the_next_call() {
    for host in Host::each_mode() {
        let (gate, plugin) = loaded(&host);
        // Without the SDK's catch at the boundary this call would abort the process: the
        // worker (a Crashed fault, as tests/process.rs shows for a bare Rust plugin) or, in
        // thread mode, this test binary.
        let result = plugin
            .execute(&ctx(json!({"panic": true, "text": "x"})))
            .unwrap();
        assert!(!result.success, "{:?}", host.isolation);
        assert!(result.output.is_empty() && result.files.is_empty());
        let error = result.error.unwrap();
        assert!(
            error.starts_with(
                "plugin panicked: input.panic asked for a panic (a test hook) (src/lib.rs:"
            ),
            "{:?}: {error}",
            host.isolation
        );
        // Control: the same handle serves the next call, the worker (if any) unharmed.
        let result = plugin.execute(&ctx(json!({"text": "a b c"}))).unwrap();
        assert_eq!(result, counted(3, 1, 5), "{:?}", host.isolation);
        host.assert_still_serves(&gate);
    }
}

#[test]
fn the_sdk_example_reads_through_the_host_and_reports_progress() {
    use skillgate::tools::WorkspaceTools;
    use skillgate::{CallOptions, LoadOptions};
    use std::sync::{Arc, Mutex};
    for host in Host::each_mode() {
        let dir = install_wordcount(&host);
        let ws = host.tmp.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("notes.txt"), "the workspace's notes\n").unwrap();
        let allowing = host.policy_with(|p| p.host_tools(["workspace.read"]));
        let gate = host
            .gate_with(allowing)
            .with_host_tools(Arc::new(WorkspaceTools::new()));
        let plugin = gate
            .verify_and_load_with(&dir, &LoadOptions::new().workspace(&ws))
            .unwrap();
        assert!(plugin.uses_host_tools());
        let stages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stages);
        let options =
            CallOptions::new().on_progress(move |v| sink.lock().unwrap().push(v["stage"].clone()));
        let r = plugin
            .execute_with(&ctx(json!({"path": "notes.txt"})), &options)
            .unwrap();
        assert!(r.success, "{r:?}");
        assert_eq!(r.output["words"], 3);
        assert_eq!(
            *stages.lock().unwrap(),
            [json!("reading"), json!("counting")]
        );
        // Under a policy that does not allow the tool, the SDK surfaces the denial.
        let denying = host.gate().with_host_tools(Arc::new(WorkspaceTools::new()));
        let plugin = denying
            .verify_and_load_with(&dir, &LoadOptions::new().workspace(&ws))
            .unwrap();
        let r = plugin.execute(&ctx(json!({"path": "notes.txt"}))).unwrap();
        assert!(!r.success);
        let error = r.error.unwrap();
        assert!(
            error.contains("host tool denied"),
            "{:?}: {error}",
            host.isolation
        );
    }
}
