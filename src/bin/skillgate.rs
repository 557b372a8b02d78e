//! `skillgate`: the host's command line. Verify and run signed plugins; inspect a library's
//! ELF hardening (`inspect`, for plugin authors: it reads unsigned files).
//!
//! Exit codes: 0 success; 1 refused (verification, policy, inspection, ABI; for `inspect`,
//! the library fails the ELF policy or is not an ELF shared library); 2 usage,
//! configuration or I/O error; 3 the plugin faulted.
//!
//! Everything printed passes through [`skillgate::escape`]: messages and names with their
//! control characters escaped, JSON with C1 and bidi controls written as `\uXXXX` too, so
//! nothing a plugin or a plugin directory chose reaches the terminal as a control sequence.
//!
//! `run` leaves with `_exit` after flushing its output: a thread-mode plugin's library is
//! never unloaded, and a normal exit would run its `atexit` handlers and destructors on this
//! thread, outside the sandbox.
//!
//! `run`'s stdout carries the result and nothing else: before anything is loaded, fd 1 is
//! copied aside and pointed at stderr, and the result is written to the copy. So a
//! thread-mode plugin that prints (it shares this process's descriptors) lands on stderr,
//! and the result stays parseable. This keeps an honest plugin's `printf` out of the
//! result; a hostile thread-mode plugin can still write to any descriptor of the process.
//! A process-mode plugin's output is its log (`--verbose` prints it on stderr).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skillgate::error::{ErrorClass, chain};
use skillgate::escape::{Escaped, escape, to_json_line, to_json_pretty};
use skillgate::{Error, Gate, LoadOptions, PluginContext, Policy, Stage, StageError, TrustStore};

#[derive(Parser)]
#[command(
    name = "skillgate",
    version,
    about = "Verify, load and run signed native skill plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct HostArgs {
    /// Plugin directory.
    dir: PathBuf,
    /// Host policy file (JSON).
    #[arg(long)]
    policy: PathBuf,
    /// Trust store directory; overrides the policy's `keys`.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Append the audit events (one JSON object per line: timestamp, level and the event's
    /// fields) to FILE, created with mode 0600 if it does not exist, never truncated.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every check short of loading: location, signature, manifest, files, ELF.
    Verify {
        #[command(flatten)]
        host: HostArgs,
        /// Print one JSON object on stdout: each stage's verdict (format
        /// "skillgate-verdict-v1", see the README).
        #[arg(long)]
        json: bool,
    },
    /// Verify, load and execute the plugin once; print its result JSON on stdout.
    Run {
        #[command(flatten)]
        host: HostArgs,
        /// The `input` object passed to the plugin (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Print what was verified and loaded, and the plugin's log (its stdout and stderr,
        /// in process isolation), on stderr.
        #[arg(long)]
        verbose: bool,
        /// The directory the plugin works on: granted to a plugin whose signed manifest
        /// requests `"workspace"` (as far as the policy's `sandbox.workspace` allows), and
        /// then its `workspace_root`. Without it the plugin is granted no workspace and
        /// `workspace_root` is the current directory.
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Print one JSON object on stdout instead of the result alone: each stage's
        /// verdict, the enforcement and the result (format "skillgate-verdict-v1").
        #[arg(long)]
        json: bool,
    },
    /// Check a library (or a plugin directory's library) against the ELF hardening policy,
    /// without loading it and without verifying any signature.
    Inspect {
        /// A shared library, or a plugin directory (its unsigned plugin.json names the
        /// library: `library`, else lib<name>.so).
        path: PathBuf,
        /// Print the stable JSON report (format "skillgate-inspect-v1") instead of a table.
        #[arg(long)]
        json: bool,
        /// Host policy file whose `elf` section (and library size limit) applies; without
        /// it, the default ELF policy.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Report what this kernel and setup give: Landlock's ABI, the sandbox applied as the
    /// policy requires, user and network namespaces, the worker. Exits 0 when a plugin the
    /// policy accepts can load here, 1 when it cannot (naming what is missing).
    Doctor {
        /// Host policy file; without it, the default policy (process isolation, full
        /// sandbox).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print one JSON object (format "skillgate-doctor-v1") instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Install a plugin release from an OCI registry (or an OCI layout directory) into
    /// ROOT/<name>, after the checks of `verify` on a staged copy; prints the manifest
    /// digest and the installed path on stdout. A refusal leaves ROOT untouched.
    Pull {
        /// `oci://REGISTRY/REPO:TAG`, `oci://REGISTRY/REPO@sha256:…`, `oci-layout:DIR:TAG`
        /// or `oci-layout:DIR@sha256:…`.
        reference: String,
        /// The directory to install into (usually one of the policy's trusted roots).
        #[arg(long)]
        root: PathBuf,
        /// Host policy file (JSON): trust store, limits, rollback marks.
        #[arg(long)]
        policy: PathBuf,
        /// Trust store directory; overrides the policy's `keys`.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Append the audit events to FILE (as `run --audit-log`).
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
    },
    /// Copy releases, digest for digest, from one registry (or layout directory) to another
    /// registry or an OCI layout directory, for sites without network access; optionally
    /// the TUF metadata directory too. Prints each release's manifest digest.
    Mirror {
        /// Source repository: `oci://REGISTRY/REPO` or `oci-layout:DIR`.
        src: String,
        /// Destination: `oci://REGISTRY/REPO` or `oci-layout:DIR` (created if missing).
        dst: String,
        /// Tags or `sha256:` manifest digests to copy.
        #[arg(required = true)]
        releases: Vec<String>,
        /// Host policy whose limits bound what is read (default: the default limits).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// A TUF metadata directory to copy along (plain file copy; hosts check it).
        #[arg(long, requires = "tuf_out")]
        tuf_metadata: Option<PathBuf>,
        /// Where to copy the TUF metadata.
        #[arg(long, requires = "tuf_metadata")]
        tuf_out: Option<PathBuf>,
    },
    /// Lower a plugin's rollback mark (an administrative act): forget the highest version
    /// seen for NAME in the policy's `state_dir`, so an older signed version may load again.
    ResetVersion {
        /// Plugin name.
        name: String,
        /// Host policy file (its `state_dir` holds the marks).
        #[arg(long)]
        policy: PathBuf,
        /// Append the audit event of the reset to FILE (as `run --audit-log`).
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
    },
    /// Ask the policy's TUF repository (its `freshness` section) whether release NAME
    /// VERSION is current with manifest DIGEST and length LEN. Exits 0 when it is listed,
    /// 1 when it is refused (expired, rolled back, not listed, other digest or length), 2
    /// when the check could not run.
    Freshness {
        /// Plugin name.
        name: String,
        /// Release version (semver).
        version: String,
        /// The OCI manifest digest, `sha256:<64 hex>`.
        digest: String,
        /// The OCI manifest's length in bytes.
        len: u64,
        /// Host policy file (its `freshness` section names the repository).
        #[arg(long)]
        policy: PathBuf,
        /// Append the audit event of the check to FILE (as `run --audit-log`).
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
    },
}

/// `skillgate freshness`: one TUF freshness check, its verdict on stdout or stderr.
fn freshness(name: &str, version: &str, digest: &str, len: u64, policy: &Path) -> ExitCode {
    use skillgate::fleet::freshness::Freshness;
    let policy = match Policy::from_file(policy) {
        Ok(p) => p,
        Err(e) => return usage(&chain(&e).to_string()),
    };
    let Some(settings) = policy.freshness() else {
        return usage("the policy has no freshness section: there is no TUF repository to ask");
    };
    let version = match skillgate::manifest::Version::parse(version) {
        Ok(v) => v,
        Err(e) => return usage(&format!("VERSION {version:?} is not semver: {e}")),
    };
    let checked = Freshness::from_policy(settings)
        .and_then(|f| f.check(name, &version, digest, len))
        .map_err(Error::Freshness);
    match checked {
        Ok(()) => {
            println!(
                "fresh: {}/{version} is listed with {}",
                Escaped(name),
                Escaped(digest)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let word = match e.class() {
                ErrorClass::Usage => "error",
                _ => "refused",
            };
            eprintln!("skillgate: {word}: {}/{version}: {e}", Escaped(name));
            ExitCode::from(e.class().exit_code())
        }
    }
}

fn reset_version(name: &str, policy: &std::path::Path) -> ExitCode {
    let policy = match Policy::from_file(policy) {
        Ok(p) => p,
        Err(e) => return usage(&chain(&e).to_string()),
    };
    let Some(state_dir) = policy.trust().state_dir() else {
        return usage("the policy has no state_dir: there are no rollback marks to reset");
    };
    let name_shown = Escaped(name);
    match skillgate::state::reset_version_mark(state_dir, name) {
        Ok(Some(old)) => {
            println!(
                "reset the rollback mark of {name_shown} (was {})",
                Escaped(old)
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("{name_shown} had no rollback mark");
            ExitCode::SUCCESS
        }
        Err(e) => usage(&chain(&e).to_string()),
    }
}

fn gate(host: &HostArgs) -> Result<Gate, Error> {
    let policy = Policy::from_file(&host.policy)?;
    match &host.keys {
        Some(dir) => {
            let policy = policy.to_builder().keys(dir).build()?;
            let trust = TrustStore::load_dir(dir)?;
            Gate::with_trust_store(policy, trust)
        }
        None => Gate::new(policy),
    }
}

/// Prints `e` as one line on stderr and returns its exit code.
fn report(dir: &std::path::Path, e: &Error) -> u8 {
    let class = e.class();
    let word = match class {
        ErrorClass::Refused => "refused",
        ErrorClass::Usage => "error",
        ErrorClass::Fault => "plugin fault",
    };
    // `Error`'s Display is escaped already; the directory is escaped here. A fault's own
    // kind is the word already ("plugin fault"), so its detail follows the directory alone.
    let dir = Escaped(dir.display());
    match e {
        Error::Fault(_) => eprintln!("skillgate: {word}: {dir}: {}", e.detail()),
        _ => eprintln!("skillgate: {word}: {dir}: {e}"),
    }
    class.exit_code()
}

/// `skillgate verify`: every stage short of loading. Returns the exit code.
fn verify(host: &HostArgs, json: bool, audit: Option<&logging::AuditLog>) -> u8 {
    let mut trail = Trail::new("verify", &host.dir, json);
    // The built-in host tools; the policy's `host_tools.allow` and the plugin's signed
    // manifest decide which of them it may call.
    let gate = match gate(host) {
        Ok(g) => g.with_host_tools(std::sync::Arc::new(skillgate::tools::WorkspaceTools::new())),
        Err(e) => return trail.refused_setup(&host.dir, &e),
    };
    trail.setup_passed(host, &gate);
    let inspected = match gate.verify_and_inspect_staged(&host.dir) {
        Ok(i) => i,
        Err(e) => return trail.refused(&host.dir, &e),
    };
    trail.verified(&gate, &inspected);
    if let Some(Err(msg)) = audit.map(logging::AuditLog::check) {
        return trail.usage(&msg);
    }
    if !json {
        let bundle = inspected.bundle();
        let m = bundle.manifest();
        let signers: Vec<String> = bundle.signers().iter().map(ToString::to_string).collect();
        println!(
            "verified {} {} ({} files; signed by {})",
            Escaped(m.name()),
            Escaped(m.version()),
            m.files().len(),
            Escaped(signers.join(", "))
        );
    }
    trail.finish(0)
}

/// `skillgate pull`: fetch, verify, install. Returns the exit code.
fn pull(host: &HostArgs, reference: &str, root: &Path) -> u8 {
    let result = gate(host).and_then(|g| skillgate::fleet::pull(&g, reference, root));
    match result {
        Ok(pulled) => {
            println!("{} {}", pulled.digest, Escaped(pulled.path.display()));
            0
        }
        Err(e) => report(Path::new(reference), &e),
    }
}

/// `skillgate mirror`: copy releases (and TUF metadata). Returns the exit code.
fn mirror(
    src: &str,
    dst: &str,
    releases: &[String],
    policy: Option<&Path>,
    tuf: Option<(&Path, &Path)>,
) -> u8 {
    let limits = match policy.map(Policy::from_file).transpose() {
        Ok(p) => p.map(|p| p.limits().clone()).unwrap_or_default(),
        Err(e) => return report(Path::new(src), &Error::from(e)),
    };
    match skillgate::fleet::mirror(src, dst, releases, &limits) {
        Ok(done) => {
            for m in done {
                println!("{} {}", m.digest, Escaped(&m.release));
            }
        }
        Err(e) => return report(Path::new(src), &e),
    }
    if let Some((from, to)) = tuf
        && let Err(e) = skillgate::fleet::copy_metadata(from, to)
    {
        return report(from, &e);
    }
    0
}

/// Prints a usage or host-side error (escaped) and returns exit code 2.
fn usage_code(msg: &str) -> u8 {
    eprintln!("skillgate: error: {}", Escaped(msg));
    ErrorClass::Usage.exit_code()
}

fn usage(msg: &str) -> ExitCode {
    ExitCode::from(usage_code(msg))
}

fn main() -> ExitCode {
    // First, before anything else: a worker this CLI started runs here and never returns.
    skillgate::worker::run_if_worker();
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { path, json, policy } => inspect_cmd::run(&path, json, policy.as_deref()),
        Command::ResetVersion {
            name,
            policy,
            audit_log,
        } => {
            let audit = match logging::install(false, audit_log.as_deref()) {
                Ok(audit) => audit,
                Err(msg) => return usage(&msg),
            };
            let code = reset_version(&name, &policy);
            logging::settle(audit.as_ref(), code)
        }
        Command::Pull {
            reference,
            root,
            policy,
            keys,
            audit_log,
        } => {
            let audit = match logging::install(false, audit_log.as_deref()) {
                Ok(audit) => audit,
                Err(msg) => return usage(&msg),
            };
            let host = HostArgs {
                dir: root.clone(),
                policy,
                keys,
                audit_log: None,
            };
            let code = pull(&host, &reference, &root);
            logging::settle(audit.as_ref(), ExitCode::from(code))
        }
        Command::Mirror {
            src,
            dst,
            releases,
            policy,
            tuf_metadata,
            tuf_out,
        } => ExitCode::from(mirror(
            &src,
            &dst,
            &releases,
            policy.as_deref(),
            tuf_metadata.as_deref().zip(tuf_out.as_deref()),
        )),
        Command::Doctor { policy, json } => doctor_cmd::run(policy.as_deref(), json),
        Command::Freshness {
            name,
            version,
            digest,
            len,
            policy,
            audit_log,
        } => {
            let audit = match logging::install(false, audit_log.as_deref()) {
                Ok(audit) => audit,
                Err(msg) => return usage(&msg),
            };
            let code = freshness(&name, &version, &digest, len, &policy);
            logging::settle(audit.as_ref(), code)
        }
        Command::Verify { host, json } => {
            let audit = match logging::install(false, host.audit_log.as_deref()) {
                Ok(audit) => audit,
                Err(msg) => return usage(&msg),
            };
            let code = verify(&host, json, audit.as_ref());
            logging::settle(audit.as_ref(), ExitCode::from(code))
        }
        Command::Run {
            host,
            input,
            verbose,
            workspace,
            json,
        } => {
            let audit = match logging::install(verbose, host.audit_log.as_deref()) {
                Ok(audit) => audit,
                Err(msg) => exit_now(usage_code(&msg)),
            };
            let code = run(
                &host,
                &input,
                verbose,
                json,
                workspace.as_deref(),
                audit.as_ref(),
            );
            // Every event is out by now: the plugin was dropped (its `unloaded` event
            // written) inside `run`.
            match audit.as_ref().map(logging::AuditLog::check) {
                Some(Err(msg)) => exit_now(usage_code(&msg)),
                _ => exit_now(code),
            }
        }
    }
}

/// `skillgate run`: verify, load, execute once. Returns the exit code; every value that
/// holds the plugin is dropped before it returns (a worker is killed and reaped then).
fn run(
    host: &HostArgs,
    input: &str,
    verbose: bool,
    json: bool,
    workspace: Option<&Path>,
    audit: Option<&logging::AuditLog>,
) -> u8 {
    let mut trail = Trail::new("run", &host.dir, json);
    let input = match serde_json::from_str(input) {
        Ok(v) => v,
        Err(e) => return trail.usage(&format!("--input is not a JSON object: {e}")),
    };
    let mut result_out = match plugin_log::stdout_for_the_result() {
        Ok(out) => out,
        Err(e) => return trail.usage(&format!("cannot set stdout aside for the result: {e}")),
    };
    // The verdicts, like the result, go to the real stdout set aside.
    match result_out.try_clone() {
        Ok(out) => trail.out = Some(out),
        Err(e) => return trail.usage(&format!("cannot set stdout aside for the result: {e}")),
    }
    // The directory named (or the current one); a granted workspace's canonical path
    // replaces it in the host.
    let workspace_root = workspace
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .map(|p| p.display().to_string());
    let ctx = PluginContext {
        input,
        workspace_root,
        config: Default::default(),
    };
    let mut options = LoadOptions::new();
    if let Some(dir) = workspace {
        options = options.workspace(dir);
    }
    // The built-in host tools; the policy's `host_tools.allow` and the plugin's signed
    // manifest decide which of them it may call.
    let gate = match gate(host) {
        Ok(g) => g.with_host_tools(std::sync::Arc::new(skillgate::tools::WorkspaceTools::new())),
        Err(e) => return trail.refused_setup(&host.dir, &e),
    };
    trail.setup_passed(host, &gate);
    let inspected = match gate.verify_and_inspect_staged(&host.dir) {
        Ok(i) => i,
        Err(e) => return trail.refused(&host.dir, &e),
    };
    trail.verified(&gate, &inspected);
    // An audit log that cannot be written stops the run before the plugin's code runs
    // (and again before its call): what was decided must be on record.
    if let Some(Err(msg)) = audit.map(logging::AuditLog::check) {
        return trail.usage(&msg);
    }
    let plugin = match gate.load_staged_with(inspected, &options) {
        Ok(p) => p,
        Err(e) => return trail.refused(&host.dir, &e),
    };
    trail.loaded(&plugin);
    if let Some(Err(msg)) = audit.map(logging::AuditLog::check) {
        return trail.usage(&msg);
    }
    if verbose {
        let signers: Vec<String> = plugin.signers().iter().map(ToString::to_string).collect();
        let needed = format!("{:?}", plugin.inspection().needed);
        eprintln!(
            "skillgate: loaded {} {} from {} (signed by {}; needs {})",
            Escaped(plugin.manifest().name()),
            Escaped(plugin.manifest().version()),
            Escaped(plugin.path().display()),
            Escaped(signers.join(", ")),
            Escaped(needed),
        );
        match to_json_line(plugin.enforcement()) {
            Ok(json) => eprintln!("skillgate: enforcement {json}"),
            Err(e) => return trail.usage(&format!("cannot print the enforcement report: {e}")),
        }
    }
    // Progress lines as they come (JSON, whose strings serde_json escapes: no control
    // character reaches the terminal).
    let options = skillgate::CallOptions::new().on_progress(|v| eprintln!("progress: {v}"));
    match plugin.execute_with(&ctx, &options) {
        Ok(result) => {
            if json {
                trail.called(&result);
                return trail.finish(0);
            }
            match to_json_pretty(&result)
                .map_err(std::io::Error::other)
                .and_then(|text| {
                    writeln!(result_out, "{text}")?;
                    result_out.flush()
                }) {
                Ok(()) => 0,
                Err(e) => usage_code(&format!("cannot print the result: {e}")),
            }
        }
        Err(e) => trail.refused_at(&host.dir, Stage::Call, &e),
    }
}

/// What `verify --json` and `run --json` print: each stage's verdict as the pipeline ran,
/// collected as the command goes (and, without `--json`, only the exit codes and the
/// one-line refusal on stderr it always printed).
///
/// The object (format "skillgate-verdict-v1"): `command`, `path`, `ok`, `exit_code`,
/// `plugin` (name, version, signers; once the manifest verified), `stages`, `refusal`
/// (the refusing stage, the error's kind and class, its message and fix), `enforcement`
/// (once loaded) and, for `run`, `result`. Each stage is `{stage, ok, detail, fix}`: `ok`
/// is `true` for a stage that passed, `false` for the one that refused, and `null` for a
/// stage not run because an earlier one refused (its `detail` says so); `fix` is `null`
/// unless the refusal has one. The stages are `setup` (the policy, trust store, trusted
/// roots, worker and command line) and then [`Stage::ALL`] in order, through `inspect` for
/// `verify` and `call` for `run`; `inspect` also lists its `checks`.
struct Trail {
    json: bool,
    /// Where the object goes: stdout, or (for `run`) the real stdout set aside while fd 1
    /// points at stderr.
    out: Option<std::fs::File>,
    doc: serde_json::Map<String, serde_json::Value>,
    stages: Vec<serde_json::Value>,
    /// The stages this command runs, `setup` first.
    planned: Vec<&'static str>,
}

impl Trail {
    fn new(command: &'static str, dir: &std::path::Path, json: bool) -> Trail {
        use serde_json::Value;
        let last = if command == "run" {
            Stage::Call
        } else {
            Stage::Inspect
        };
        let mut planned = vec!["setup"];
        planned.extend(Stage::ALL.iter().filter(|s| **s <= last).map(|s| s.name()));
        let mut doc = serde_json::Map::new();
        doc.insert("format".into(), "skillgate-verdict-v1".into());
        doc.insert("command".into(), command.into());
        doc.insert("path".into(), dir.display().to_string().into());
        for key in ["plugin", "refusal", "enforcement"] {
            doc.insert(key.into(), Value::Null);
        }
        if command == "run" {
            doc.insert("result".into(), Value::Null);
        }
        Trail {
            json,
            out: None,
            doc,
            stages: Vec::new(),
            planned,
        }
    }

    fn push(&mut self, stage: &str, ok: bool, detail: String, fix: Option<&str>) {
        self.stages.push(serde_json::json!({
            "stage": stage, "ok": ok, "detail": detail, "fix": fix,
        }));
    }

    /// Marks every planned stage before `stage` that has no verdict yet as passed.
    fn passed_until(&mut self, stage: &str) {
        let done = self.stages.len();
        let upto = self
            .planned
            .iter()
            .position(|s| *s == stage)
            .unwrap_or(done);
        for name in self.planned.clone().into_iter().take(upto).skip(done) {
            let detail = Stage::ALL
                .iter()
                .find(|s| s.name() == name)
                .map_or("passed", |s| s.passed());
            self.push(name, true, detail.to_owned(), None);
        }
    }

    fn setup_passed(&mut self, host: &HostArgs, gate: &Gate) {
        let detail = format!(
            "policy {}: trust store loaded, trusted roots opened, {} isolation",
            host.policy.display(),
            match gate.policy().isolation() {
                skillgate::Isolation::Process => "process (worker found)",
                _ => "thread",
            }
        );
        self.push("setup", true, detail, None);
    }

    /// Everything short of loading passed.
    fn verified(&mut self, gate: &Gate, inspected: &skillgate::Inspected) {
        let bundle = inspected.bundle();
        let m = bundle.manifest();
        let signers: Vec<String> = bundle.signers().iter().map(ToString::to_string).collect();
        self.doc.insert(
            "plugin".into(),
            serde_json::json!({"name": m.name(), "version": m.version().to_string(), "signers": signers}),
        );
        self.push(
            "locate",
            true,
            format!("{}: {}", bundle.path().display(), Stage::Locate.passed()),
            None,
        );
        self.push(
            "manifest",
            true,
            format!(
                "{} {} signed by {}: {}",
                m.name(),
                m.version(),
                signers.join(", "),
                Stage::Manifest.passed()
            ),
            None,
        );
        self.passed_until("digests");
        self.push(
            "digests",
            true,
            format!("{} files: {}", m.files().len(), Stage::Digests.passed()),
            None,
        );
        let mark = match gate.policy().trust().state_dir() {
            Some(dir) => format!(
                "the rollback mark of {} is at least {} in {}",
                m.name(),
                m.version(),
                dir.display()
            ),
            None => "the policy has no state_dir: no rollback mark is kept".to_owned(),
        };
        self.push("version_mark", true, mark, None);
        let checks: Vec<serde_json::Value> = inspected
            .report()
            .checks
            .iter()
            .map(|c| {
                serde_json::json!({"check": c.check, "status": c.status, "detail": c.detail, "fix": c.fix})
            })
            .collect();
        self.push("inspect", true, Stage::Inspect.passed().to_owned(), None);
        if let Some(serde_json::Value::Object(entry)) = self.stages.last_mut() {
            entry.insert("checks".into(), checks.into());
        }
    }

    fn loaded(&mut self, plugin: &skillgate::LoadedPlugin) {
        let e = plugin.enforcement();
        let sandbox = format!(
            "{} isolation: Landlock {} at ABI {}, seccomp {} ({} instructions), no_new_privs {}, {} filesystem and {} network rules, namespaces [{}], tasks {}",
            e.isolation,
            to_json_line(&e.landlock).unwrap_or_default(),
            e.landlock_abi,
            e.seccomp,
            e.seccomp_instructions,
            e.no_new_privs,
            e.fs_rules,
            e.net_rules,
            e.namespaces.join(", "),
            to_json_line(&e.tasks).unwrap_or_default(),
        );
        self.push("sandbox", true, sandbox, None);
        let load = match plugin.worker_pid() {
            Some(pid) => format!("worker {pid}: {}", Stage::Load.passed()),
            None => Stage::Load.passed().to_owned(),
        };
        self.push("load", true, load, None);
        self.doc.insert(
            "enforcement".into(),
            serde_json::to_value(e).unwrap_or_default(),
        );
    }

    fn called(&mut self, result: &skillgate::PluginResult) {
        self.push(
            "call",
            true,
            format!("{}; success: {}", Stage::Call.passed(), result.success),
            None,
        );
        self.doc.insert(
            "result".into(),
            serde_json::to_value(result).unwrap_or_default(),
        );
    }

    /// A refusal at `stage`: printed on stderr as always, recorded, and the report ends.
    fn refused_at(&mut self, dir: &std::path::Path, stage: Stage, e: &Error) -> u8 {
        let code = report(dir, e);
        self.refusal(stage.name(), e, code)
    }

    fn refused(&mut self, dir: &std::path::Path, e: &StageError) -> u8 {
        self.refused_at(dir, e.stage, &e.error)
    }

    fn refused_setup(&mut self, dir: &std::path::Path, e: &Error) -> u8 {
        let code = report(dir, e);
        self.refusal("setup", e, code)
    }

    fn refusal(&mut self, stage: &str, e: &Error, code: u8) -> u8 {
        self.passed_until(stage);
        let class = match e.class() {
            ErrorClass::Refused => "refused",
            ErrorClass::Usage => "usage",
            _ => "fault",
        };
        self.push(stage, false, e.to_string(), e.fix());
        if let (Some(serde_json::Value::Object(entry)), Error::Inspect(i)) =
            (self.stages.last_mut(), e)
        {
            entry.insert(
                "checks".into(),
                serde_json::json!([{"check": i.check(), "status": "fail", "detail": e.detail(), "fix": i.fix()}]),
            );
        }
        self.doc.insert(
            "refusal".into(),
            serde_json::json!({"stage": stage, "kind": e.kind(), "class": class, "message": e.to_string(), "fix": e.fix()}),
        );
        self.finish(code)
    }

    /// A usage or host-side problem that is no plugin's refusal (exit 2): `--input` that
    /// is not JSON (at `setup`), or output that cannot be written (at the next stage).
    fn usage(&mut self, msg: &str) -> u8 {
        let code = usage_code(msg);
        let stage = self
            .planned
            .get(self.stages.len())
            .or(self.planned.last())
            .copied()
            .unwrap_or("setup");
        if self.stages.len() < self.planned.len() {
            self.push(stage, false, escape(msg), None);
        }
        self.doc.insert(
            "refusal".into(),
            serde_json::json!({"stage": stage, "kind": "usage", "class": "usage", "message": escape(msg), "fix": null}),
        );
        self.finish(code)
    }

    /// Prints the object (with `--json`) and returns `code`.
    fn finish(&mut self, code: u8) -> u8 {
        if !self.json {
            return code;
        }
        let done = self.stages.len();
        for name in self.planned.iter().skip(done) {
            self.stages.push(serde_json::json!({
                "stage": name, "ok": null, "detail": "not run: an earlier stage refused", "fix": null,
            }));
        }
        self.doc.insert("ok".into(), (code == 0).into());
        self.doc.insert("exit_code".into(), code.into());
        self.doc
            .insert("stages".into(), std::mem::take(&mut self.stages).into());
        let printed = to_json_pretty(&self.doc)
            .map_err(std::io::Error::other)
            .and_then(|text| match &mut self.out {
                Some(out) => {
                    out.write_all(text.as_bytes())?;
                    out.write_all(b"\n")?;
                    out.flush()
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())?;
                    out.write_all(b"\n")?;
                    out.flush()
                }
            });
        match printed {
            Ok(()) => code,
            Err(e) => usage_code(&format!("cannot print the verdicts: {e}")),
        }
    }
}

/// Leaves the process at once with `code`, after flushing stdout and stderr.
///
/// Not `std::process::exit`: a thread-mode plugin's library stays loaded (it is never
/// unloaded), so glibc's `exit` would run the plugin's `atexit` handlers and `.fini_array`
/// destructors here, on the host's own thread, outside every sandbox. `_exit` runs none of
/// them. A process-mode plugin was dropped before this (its worker killed and reaped), and
/// the host registers no finalizer of its own that matters.
#[allow(unsafe_code)]
fn exit_now(code: u8) -> ! {
    let _ = std::io::stdout().lock().flush();
    let _ = std::io::stderr().lock().flush();
    // SAFETY: `_exit` ends the process without running atexit handlers or destructors; it
    // takes a plain integer and touches no Rust state. Output was flushed above.
    unsafe { libc::_exit(i32::from(code)) }
}

/// Where the library's `tracing` events go: the plugin's log to stderr (`run --verbose`),
/// the audit events to the `--audit-log` file as JSON lines.
mod logging {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::sync::{Arc, Mutex};

    use skillgate::escape::Escaped;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::plugin_log;

    /// The `tracing` target of the audit events.
    const AUDIT_TARGET: &str = "skillgate::audit";

    /// The audit log file and the first error writing to it.
    #[derive(Clone)]
    pub(super) struct AuditLog {
        path: PathBuf,
        file: Arc<File>,
        failed: Arc<Mutex<Failure>>,
    }

    /// Whether a write failed, and whether that was reported yet.
    #[derive(Default)]
    struct Failure {
        error: Option<io::Error>,
        reported: bool,
    }

    impl AuditLog {
        /// Opens `path` for appending: created with mode 0600 if new (an existing file
        /// keeps its mode and content), `O_APPEND` so each event is written at the end
        /// however many hosts share the file, and refused unless it is a regular file
        /// (opened without blocking, so a FIFO cannot hang the host).
        fn open(path: &Path) -> Result<AuditLog, String> {
            let cannot = |e: io::Error| {
                format!("cannot open the audit log {}: {e}", Escaped(path.display()))
            };
            let file = File::options()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .map_err(cannot)?;
            if !file.metadata().map_err(cannot)?.is_file() {
                return Err(format!(
                    "the audit log {} is not a regular file",
                    Escaped(path.display())
                ));
            }
            Ok(AuditLog {
                path: path.to_path_buf(),
                file: Arc::new(file),
                failed: Arc::default(),
            })
        }

        /// `Err` with a message, the first time it is asked after an event could not be
        /// written (so the failure is reported once, by whoever asks first).
        pub(super) fn check(&self) -> Result<(), String> {
            let mut failed = self.failure();
            match &failed.error {
                Some(e) if !failed.reported => {
                    let msg = format!(
                        "cannot write the audit log {}: {e}",
                        Escaped(self.path.display())
                    );
                    failed.reported = true;
                    Err(msg)
                }
                _ => Ok(()),
            }
        }

        fn failure(&self) -> std::sync::MutexGuard<'_, Failure> {
            self.failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        fn note(&self, e: &io::Error) {
            self.failure()
                .error
                .get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        }
    }

    /// One event's line: tracing-subscriber formats the whole line first and hands it to
    /// one `write_all`, so each line is one `write` to the `O_APPEND` file.
    pub(super) struct AuditWriter<'a>(&'a AuditLog);

    impl io::Write for AuditWriter<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let written = (&*self.0.file).write(buf);
            match &written {
                Ok(0) if !buf.is_empty() => self.0.note(&io::ErrorKind::WriteZero.into()),
                Err(e) if e.kind() != io::ErrorKind::Interrupted => self.0.note(e),
                _ => {}
            }
            written
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for AuditLog {
        type Writer = AuditWriter<'a>;
        fn make_writer(&'a self) -> AuditWriter<'a> {
            AuditWriter(self)
        }
    }

    /// Sends the plugin's log to stderr (`verbose`) and the audit events to `audit_log`,
    /// as this process's global `tracing` subscriber; with neither, sets nothing.
    pub(super) fn install(
        verbose: bool,
        audit_log: Option<&Path>,
    ) -> Result<Option<AuditLog>, String> {
        let audit = audit_log.map(AuditLog::open).transpose()?;
        if !verbose && audit.is_none() {
            return Ok(None);
        }
        let printer = verbose.then(|| {
            plugin_log::Printer.with_filter(filter_fn(|m| m.target() == plugin_log::TARGET))
        });
        let json = audit.clone().map(|log| {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .log_internal_errors(false)
                .with_writer(log)
                .with_filter(filter_fn(|m| m.target() == AUDIT_TARGET))
        });
        let subscriber = tracing_subscriber::registry().with(printer).with(json);
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|e| format!("cannot set up logging: {e}"))?;
        Ok(audit)
    }

    /// `code`, or a usage error (printed) if the audit log could not be written.
    pub(super) fn settle(audit: Option<&AuditLog>, code: ExitCode) -> ExitCode {
        match audit.map(AuditLog::check) {
            Some(Err(msg)) => super::usage(&msg),
            _ => code,
        }
    }
}

/// `run`'s output: the result alone on stdout, the plugin's log on stderr.
mod plugin_log {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::io::Write as _;
    use std::os::fd::AsFd;

    use skillgate::escape::Escaped;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::Context;

    /// The `tracing` target of a plugin's log lines.
    pub(super) const TARGET: &str = "skillgate::plugin";

    /// Copies fd 1 aside (close-on-exec, above 2) and points fd 1 at stderr; returns the
    /// copy, where the result goes. See the crate docs for why.
    pub(super) fn stdout_for_the_result() -> std::io::Result<std::fs::File> {
        std::io::stdout().lock().flush()?;
        let saved = rustix::io::fcntl_dupfd_cloexec(std::io::stdout().as_fd(), 3)?;
        rustix::stdio::dup2_stdout(std::io::stderr().as_fd())?;
        Ok(std::fs::File::from(saved))
    }

    /// Prints the plugin's log events (those of [`TARGET`]; the caller filters) on stderr,
    /// one line each, every field escaped.
    pub(super) struct Printer;

    struct Fields(BTreeMap<&'static str, String>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name(), value.to_owned());
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Printer {
        /// `skillgate: plugin NAME stdout: TEXT`, or for the "dropped" warning
        /// `skillgate: plugin NAME: MESSAGE (dropped=N limit=L)`.
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            let mut f = fields.0;
            let plugin = f.remove("plugin").unwrap_or_default();
            let message = f.remove("message").unwrap_or_default();
            let mut line = format!("skillgate: plugin {}", Escaped(plugin));
            if let Some(stream) = f.remove("stream") {
                let _ = write!(line, " {}", Escaped(stream));
            }
            let _ = write!(line, ": {}", Escaped(message));
            if f.get("truncated").is_some_and(|t| t == "true") {
                line.push_str(" [truncated]");
            }
            f.remove("truncated");
            if !f.is_empty() {
                let rest: Vec<String> = f
                    .iter()
                    .map(|(k, v)| format!("{k}={}", Escaped(v)))
                    .collect();
                let _ = write!(line, " ({})", rest.join(" "));
            }
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// `skillgate doctor`: what this kernel and setup give a policy, from the library's own
/// probes ([`skillgate::policy::doctor`]).
mod doctor_cmd {
    use std::io::Write;
    use std::path::Path;
    use std::process::ExitCode;

    use serde_json::{Value, json};
    use skillgate::Policy;
    use skillgate::error::{ErrorClass, chain};
    use skillgate::escape::{Escaped, to_json_pretty};
    use skillgate::policy::doctor::{Diagnosis, diagnose};

    /// Exit code when the policy's requirement cannot be met here.
    const UNMET: u8 = 1;

    fn probe<E: std::error::Error + 'static>(r: &Result<impl Sized, E>, yes: &str) -> Value {
        match r {
            Ok(_) => json!({"ok": true, "detail": yes}),
            Err(e) => json!({"ok": false, "detail": chain(e).to_string()}),
        }
    }

    fn report(d: &Diagnosis, policy: Option<&Path>) -> Value {
        let unmet = d.unmet();
        json!({
            "format": "skillgate-doctor-v1",
            "policy": policy.map_or("default".to_owned(), |p| p.display().to_string()),
            "requirement": d.requirement,
            "isolation": d.isolation.to_string(),
            "landlock": {"kernel_abi": d.landlock_abi, "handled_abi": d.landlock_abi_handled},
            "sandbox": match &d.sandbox {
                Ok(e) => json!({"ok": true, "seccomp": e.seccomp, "landlock": e.landlock, "enforcement": e}),
                Err(e) => json!({"ok": false, "detail": chain(e).to_string()}),
            },
            "namespaces": {
                "user": probe(&d.user_namespace, "a child can enter a new user namespace"),
                "net": probe(&d.net_namespace, "a child can enter a new network namespace"),
            },
            "worker": match &d.worker {
                Ok(p) => json!({"ok": true, "path": p.path().display().to_string(), "program": p.to_string()}),
                Err(e) => json!({"ok": false, "path": null, "detail": chain(e).to_string()}),
            },
            "pool": {"size": d.pool_size},
            "can_load": unmet.is_empty(),
            "unmet": unmet,
        })
    }

    fn text(d: &Diagnosis) -> String {
        let yes_no = |ok: bool| if ok { "yes" } else { "NO" };
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18} {}\n", Escaped(v)));
        line("requirement", format!("{:?}", d.requirement).to_lowercase());
        line("isolation", d.isolation.to_string());
        line(
            "landlock abi",
            format!(
                "{} (this build handles {})",
                d.landlock_abi, d.landlock_abi_handled
            ),
        );
        match &d.sandbox {
            Ok(e) => {
                line(
                    "landlock",
                    skillgate::escape::to_json_line(&e.landlock)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned(),
                );
                line("seccomp", yes_no(e.seccomp).to_owned());
                line("no_new_privs", yes_no(e.no_new_privs).to_owned());
            }
            Err(e) => line("sandbox", format!("NO: {}", chain(e))),
        }
        for (name, r) in [
            ("user namespace", &d.user_namespace),
            ("net namespace", &d.net_namespace),
        ] {
            match r {
                Ok(()) => line(name, "yes".to_owned()),
                Err(e) => line(name, format!("no ({e}); workers run without it")),
            }
        }
        match &d.worker {
            Ok(p) => line("worker", p.to_string()),
            Err(e) => line("worker", format!("NOT FOUND: {}", chain(e))),
        }
        line(
            "worker pool",
            match d.pool_size {
                0 => "off (every load starts its worker cold)".to_owned(),
                n => format!("{n} workers, started with the first process-mode load"),
            },
        );
        let unmet = d.unmet();
        if unmet.is_empty() {
            line(
                "verdict",
                "plugins this policy accepts can load here".to_owned(),
            );
        } else {
            for u in unmet {
                line("UNMET", u);
            }
        }
        out
    }

    pub(super) fn run(policy: Option<&Path>, as_json: bool) -> ExitCode {
        let loaded = match policy {
            Some(file) => Policy::from_file(file),
            None => Ok(Policy::default()),
        };
        let policy_value = match loaded {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skillgate: error: {}", skillgate::Error::from(e));
                return ExitCode::from(ErrorClass::Usage.exit_code());
            }
        };
        let d = diagnose(&policy_value);
        let printed = if as_json {
            to_json_pretty(&report(&d, policy)).map(|t| t + "\n")
        } else {
            Ok(text(&d))
        };
        let mut out = std::io::stdout().lock();
        let written = printed
            .map_err(std::io::Error::other)
            .and_then(|t| out.write_all(t.as_bytes()).and_then(|()| out.flush()));
        if let Err(e) = written {
            eprintln!("skillgate: error: cannot print the report: {}", Escaped(e));
            return ExitCode::from(ErrorClass::Usage.exit_code());
        }
        if d.can_load() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(UNMET)
        }
    }
}

/// `skillgate inspect`: the ELF checks of the pipeline, on files an author has not signed yet.
mod inspect_cmd {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use serde_json::{Value, json};
    use skillgate::Policy;
    use skillgate::danger::ElfDanger;
    use skillgate::error::ErrorClass;
    use skillgate::escape::{Escaped, to_json_pretty};
    use skillgate::inspect::{CheckResult, ElfPolicy, InspectError, Status, examine};
    use skillgate::policy::Limits;

    /// Exit code when the library fails the policy (or is not an ELF shared library).
    const REFUSED: u8 = 1;

    fn usage(msg: &str) -> ExitCode {
        eprintln!("skillgate: error: {}", Escaped(msg));
        ExitCode::from(ErrorClass::Usage.exit_code())
    }

    /// Reads a regular file of at most `max` bytes, without hanging on a FIFO.
    fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, String> {
        skillgate::capped::read_capped(path, max, skillgate::capped::Links::Follow)
            .map_err(|e| skillgate::error::chain(&e).to_string())
    }

    /// The library a plugin directory's (unsigned) plugin.json names.
    fn library_of(dir: &Path, limits: &Limits) -> Result<PathBuf, String> {
        let manifest = dir.join("plugin.json");
        let bytes = read_capped(&manifest, limits.manifest_bytes())?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not JSON: {e}", manifest.display()))?;
        let name = match (value.get("library"), value.get("name")) {
            (Some(Value::String(library)), _) => library.clone(),
            (None | Some(Value::Null), Some(Value::String(name))) => {
                // As the host chooses: lib<name>.so, else <name>.so (the same without "lib").
                let first = skillgate::compat::library_filename(name);
                let second = first.strip_prefix("lib").unwrap_or(&first).to_owned();
                if !dir.join(&first).exists() && dir.join(&second).exists() {
                    second
                } else {
                    first
                }
            }
            _ => {
                return Err(format!(
                    "{} names no library (neither a \"library\" nor a \"name\" string)",
                    manifest.display()
                ));
            }
        };
        let bare = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.contains('\0');
        if !bare {
            return Err(format!(
                "{} names the library {name:?}, which is not a bare file name",
                manifest.display()
            ));
        }
        Ok(dir.join(name))
    }

    fn check_json(c: &CheckResult) -> Value {
        json!({"check": c.check, "status": c.status, "detail": c.detail, "fix": c.fix})
    }

    fn refusal_json(e: &InspectError) -> Value {
        json!({"check": e.check(), "message": e.to_string(), "fix": e.fix()})
    }

    fn status_word(s: Status) -> &'static str {
        match s {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Info => "info",
            _ => "?",
        }
    }

    pub(super) fn run(path: &Path, as_json: bool, policy: Option<&Path>) -> ExitCode {
        let (elf, danger, limits) = match policy {
            Some(file) => match Policy::from_file(file) {
                Ok(p) => (
                    p.elf().clone(),
                    p.danger().elf().clone(),
                    p.limits().clone(),
                ),
                Err(e) => return usage(&skillgate::Error::from(e).to_string()),
            },
            None => (
                ElfPolicy::default(),
                ElfDanger::default(),
                Limits::default(),
            ),
        };
        let library = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => match library_of(path, &limits) {
                Ok(l) => l,
                Err(e) => return usage(&e),
            },
            Ok(_) => path.to_path_buf(),
            Err(e) => return usage(&format!("cannot stat {}: {e}", path.display())),
        };
        let bytes = match read_capped(&library, limits.library_bytes()) {
            Ok(b) => b,
            Err(e) => return usage(&e),
        };
        let outcome = examine(&bytes, &elf, &danger);
        let (checks, refusal, report) = match &outcome {
            Ok(report) => (
                report.checks.iter().map(check_json).collect(),
                report.refusal(),
                Some(report),
            ),
            Err(e) => (
                vec![
                    json!({"check": e.check(), "status": Status::Fail, "detail": e.to_string(), "fix": e.fix()}),
                ],
                Some(e),
                None,
            ),
        };
        let passed = refusal.is_none();
        let text = if as_json {
            let doc = json!({
                "format": "skillgate-inspect-v1",
                "path": library.display().to_string(),
                "passed": passed,
                "refusal": refusal.map(refusal_json),
                "checks": checks,
                "elf": report,
            });
            match to_json_pretty(&doc) {
                Ok(text) => text + "\n",
                Err(e) => return usage(&format!("cannot print the report: {e}")),
            }
        } else {
            // Every field is escaped: names in the library (DT_NEEDED, imports, RUNPATH)
            // and the path are the author's or the filesystem's choice.
            let shown = Escaped(library.display());
            let mut text = match refusal {
                None => format!("{shown}: passes the ELF policy\n"),
                Some(e) => format!("{shown}: refused by check {}\n", e.check()),
            };
            text.push_str(&format!("{:<16} {:<6} DETAIL\n", "CHECK", "STATUS"));
            let rows: Vec<(&str, &str, String)> = match &outcome {
                Ok(report) => report
                    .checks
                    .iter()
                    .map(|c| (c.check, status_word(c.status), c.detail.clone()))
                    .collect(),
                Err(e) => vec![(e.check(), "FAIL", e.to_string())],
            };
            for (check, status, detail) in rows {
                text.push_str(&format!("{check:<16} {status:<6} {}\n", Escaped(detail)));
            }
            text
        };
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            return usage(&format!("cannot print the report: {e}"));
        }
        if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(REFUSED)
        }
    }
}
