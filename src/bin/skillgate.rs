//! `skillgate`: the host's command line. Verify and run signed plugins.
//!
//! Exit codes: 0 success; 1 refused (verification, policy, inspection, ABI); 2 usage,
//! configuration or I/O error; 3 the plugin faulted.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skillgate::error::ErrorClass;
use skillgate::{Error, Gate, PluginContext, Policy, TrustStore};

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
}

#[derive(Subcommand)]
enum Command {
    /// Run every check short of loading: location, signature, manifest, files, ELF.
    Verify {
        #[command(flatten)]
        host: HostArgs,
    },
    /// Verify, load and execute the plugin once; print its result JSON on stdout.
    Run {
        #[command(flatten)]
        host: HostArgs,
        /// The `input` object passed to the plugin (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Print what was verified and loaded on stderr.
        #[arg(long)]
        verbose: bool,
    },
}

fn gate(host: &HostArgs) -> Result<Gate, Error> {
    let mut policy = Policy::from_file(&host.policy)?;
    match &host.keys {
        Some(dir) => {
            policy.keys = dir.clone();
            let trust = TrustStore::load_dir(dir)?;
            Gate::with_trust_store(policy, trust)
        }
        None => Gate::new(policy),
    }
}

fn fail(dir: &std::path::Path, e: &Error) -> ExitCode {
    let class = e.class();
    let word = match class {
        ErrorClass::Refused => "refused",
        ErrorClass::Usage => "error",
        ErrorClass::Fault => "plugin fault",
    };
    eprintln!("skillgate: {word}: {}: {e}", dir.display());
    ExitCode::from(class.exit_code())
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("skillgate: error: {msg}");
    ExitCode::from(ErrorClass::Usage.exit_code())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify { host } => {
            let result = gate(&host).and_then(|g| g.verify_and_inspect(&host.dir));
            match result {
                Ok(inspected) => {
                    let bundle = inspected.bundle();
                    let m = bundle.manifest();
                    let signers: Vec<String> =
                        bundle.signers().iter().map(ToString::to_string).collect();
                    println!(
                        "verified {} {} ({} files; signed by {})",
                        m.name(),
                        m.version(),
                        m.files().len(),
                        signers.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&host.dir, &e),
            }
        }
        Command::Run {
            host,
            input,
            verbose,
        } => {
            let input = match serde_json::from_str(&input) {
                Ok(v) => v,
                Err(e) => return usage(&format!("--input is not a JSON object: {e}")),
            };
            let workspace_root = std::env::current_dir()
                .ok()
                .map(|p| p.display().to_string());
            let ctx = PluginContext {
                input,
                workspace_root,
                config: Default::default(),
            };
            let plugin = match gate(&host).and_then(|g| g.verify_and_load(&host.dir)) {
                Ok(p) => p,
                Err(e) => return fail(&host.dir, &e),
            };
            if verbose {
                let signers: Vec<String> =
                    plugin.signers().iter().map(ToString::to_string).collect();
                eprintln!(
                    "skillgate: loaded {} {} from {} (signed by {}; needs {:?})",
                    plugin.manifest().name(),
                    plugin.manifest().version(),
                    plugin.path().display(),
                    signers.join(", "),
                    plugin.inspection().needed,
                );
                match serde_json::to_string(plugin.enforcement()) {
                    Ok(json) => eprintln!("skillgate: enforcement {json}"),
                    Err(e) => return usage(&format!("cannot print the enforcement report: {e}")),
                }
            }
            match plugin.execute(&ctx) {
                Ok(result) => match serde_json::to_string_pretty(&result) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => usage(&format!("cannot print the result: {e}")),
                },
                Err(e) => fail(&host.dir, &e),
            }
        }
    }
}
