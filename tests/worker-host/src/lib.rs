//! The host every binary of this crate runs after its own first lines: process isolation
//! with NO `worker` in the policy, one plugin loaded and called, and what the kernel shows
//! about the worker printed as one JSON line for tests/worker_reexec.rs.
//!
//! Arguments: `<policy file> <plugin dir> <probe file> [--delete-self]`. The policy asks
//! for process isolation and names no `worker`. The probe is a file this host can read and
//! the plugin (the `hostile` test plugin) is not granted: the plugin's `read_file` of it
//! must be denied in the worker's sandbox.

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::{Value, json};
use skillgate::error::LoadError;
use skillgate::policy::Isolation;
use skillgate::{Error, Gate, PluginContext, Policy};

/// The error's variant, with the worker-specific ones spelled out for the test to match.
fn kind(e: &Error) -> String {
    match e {
        Error::Load(LoadError::WorkerNotFound {
            this_executable, ..
        }) => format!("WorkerNotFound/{this_executable:?}"),
        Error::Load(LoadError::Worker { .. }) => "Worker".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The child processes of this process, from `/proc/self/task/*/children`.
fn children() -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids
}

fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

fn link(path: String) -> Value {
    std::fs::read_link(path).map_or(Value::Null, |p| json!(p.display().to_string()))
}

fn refused(stage: &str, e: &Error) -> ExitCode {
    println!(
        "{}",
        json!({
            "stage": stage,
            "error_kind": kind(e),
            "message": e.to_string(),
            "this_executable": skillgate::worker::this_executable().to_string(),
            "children": children(),
        })
    );
    ExitCode::from(1)
}

fn call(plugin: &skillgate::LoadedPlugin, input: Value) -> Value {
    let mut ctx = PluginContext::default();
    if let Value::Object(m) = input {
        ctx.input = m.into_iter().collect::<HashMap<_, _>>();
    }
    match plugin.execute(&ctx) {
        Ok(r) => json!({"success": r.success, "output": r.output, "error": r.error}),
        Err(e) => json!({"fault": e.to_string()}),
    }
}

/// The host's work; returns its exit code.
pub fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [policy, dir, probe, rest @ ..] = args.as_slice() else {
        eprintln!("usage: <policy file> <plugin dir> <probe file> [--delete-self]");
        return ExitCode::from(2);
    };
    if rest.iter().any(|a| a == "--delete-self") {
        // The worker is re-executed from /proc/self/exe: the file at this path may go.
        if let Ok(exe) = std::env::current_exe() {
            let _ = std::fs::remove_file(exe);
        }
    }
    let policy = match Policy::from_file(policy) {
        Ok(p) if p.isolation() == Isolation::Process && p.worker().is_none() => p,
        Ok(_) => {
            eprintln!("the policy must ask for process isolation and name no worker");
            return ExitCode::from(2);
        }
        Err(e) => return refused("policy", &Error::from(e)),
    };
    let gate = match Gate::new(policy) {
        Ok(g) => g,
        Err(e) => return refused("gate", &e),
    };
    let worker = gate.worker().map(ToString::to_string);
    let plugin = match gate.verify_and_load(dir) {
        Ok(p) => p,
        Err(e) => return refused("load", &e),
    };
    let pid = plugin.worker_pid().unwrap_or(0);
    let noop = call(&plugin, json!({"action": "noop"}));
    let read = call(&plugin, json!({"action": "read_file", "path": probe}));
    println!(
        "{}",
        json!({
            "stage": "called",
            "worker": worker,
            "isolation": plugin.isolation().to_string(),
            "enforcement": plugin.enforcement(),
            "worker_pid": pid,
            "children": children(),
            "host_exe": link("/proc/self/exe".to_owned()),
            "worker_exe": link(format!("/proc/{pid}/exe")),
            "worker_ppid": status_field(pid, "PPid"),
            "worker_seccomp": status_field(pid, "Seccomp"),
            "worker_no_new_privs": status_field(pid, "NoNewPrivs"),
            "worker_uid": status_field(pid, "Uid"),
            "noop": noop,
            "read_probe": read,
            "host_reads_probe": std::fs::read(probe).is_ok(),
        })
    );
    ExitCode::SUCCESS
}
