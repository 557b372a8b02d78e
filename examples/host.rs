//! A small host: verify, load and call one signed plugin, then watch a refusal arrive as a
//! typed error.
//!
//! ```sh
//! scripts/demo.sh                            # once: builds the tools, signs skills/echo
//! cargo run --example host -- skills/echo
//! ```
//!
//! Arguments: `PLUGIN_DIR [KEYS_DIR [POLICY_FILE]]`. The defaults fit what `scripts/demo.sh`
//! leaves behind: the shipped `policy/default.json` (its one trusted root is `skills/`) and
//! `target/demo/keys`, which holds the public half of the throwaway key the demo signed
//! `skills/echo` with. The repository ships no trusted key and no signed plugin, so on a
//! fresh checkout the demo is the one command to run first. The policy runs the plugin in a
//! worker process: this example itself, re-executed, because `main` calls
//! `skillgate::worker::run_if_worker()` first (no worker file, no `worker` in the policy).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use skillgate::error::LocateError;
use skillgate::escape::{Escaped, to_json_pretty};
use skillgate::{Error, Gate, PluginContext, Policy, TrustStore};

fn main() -> ExitCode {
    // First in main, before anything else and before any thread: started as a worker, this
    // process runs the plugin's worker here and never returns.
    skillgate::worker::run_if_worker();
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let Some(plugin_dir) = args.next() else {
        eprintln!("usage: host PLUGIN_DIR [KEYS_DIR [POLICY_FILE]]");
        return ExitCode::from(2);
    };
    let keys = args.next().unwrap_or_else(|| "target/demo/keys".into());
    let policy = args.next().unwrap_or_else(|| "policy/default.json".into());
    match run(&plugin_dir, &keys, &policy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `skillgate::Error`'s Display is escaped: what a plugin directory chose (names,
            // file names) prints as one line with no control character in it.
            eprintln!("host: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    plugin_dir: &Path,
    keys: &Path,
    policy_file: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    // The host's rules: trusted roots, size and time limits, isolation, sandbox grants.
    // Relative paths in the file are resolved against the file's own directory.
    // (Stage errors are wrapped in `skillgate::Error` for its escaped Display.)
    let policy = Policy::from_file(policy_file).map_err(Error::from)?;
    // Whose signatures count: every `*.pub` key (and `*.revoked` statement) in `keys`.
    let trust = TrustStore::load_dir(keys).map_err(Error::from)?;
    // Opens the trusted roots and finds the worker executable; nothing is loaded yet.
    let gate = Gate::with_trust_store(policy, trust)?;

    // Every stage in order: locate beneath a trusted root, check the signature, hash every
    // file against the signed manifest, inspect the ELF, then load the verified bytes in a
    // restricted worker. Any refusal is an `Error` whose variant names the stage.
    let plugin = gate.verify_and_load(plugin_dir)?;
    let meta = plugin.metadata();
    println!(
        "loaded {} {} (signed by {} key(s))",
        Escaped(&meta.name),
        Escaped(&meta.version),
        plugin.signers().len()
    );
    // What the sandbox really enforced (Landlock, seccomp, grants, task bound), as JSON.
    // Paths in it may come from the plugin's manifest, so it is printed escaped too.
    println!("enforcement: {}", to_json_pretty(plugin.enforcement())?);

    // One call. The plugin's answer is untrusted data: print it escaped.
    let mut ctx = PluginContext::default();
    ctx.input
        .insert("message".into(), "hello from examples/host.rs".into());
    let result = plugin.execute(&ctx)?;
    println!("result: {}", to_json_pretty(&result)?);

    // A refusal, matched by variant rather than by message text: the policy file's own
    // directory lies beneath no trusted root, so the first stage refuses it and no byte in
    // it is read as a plugin.
    let elsewhere = std::path::absolute(policy_file.parent().unwrap_or(Path::new(".")))?;
    match gate.verify_and_load(&elsewhere) {
        Err(Error::Locate(LocateError::OutsideTrustedRoots { path, roots })) => println!(
            "refused as expected: {} lies beneath none of the {} trusted root(s)",
            Escaped(path.display()),
            roots.len()
        ),
        Err(other) => return Err(format!("refused at an unexpected stage: {other}").into()),
        Ok(_) => return Err("a directory outside every trusted root was loaded".into()),
    }
    // Dropping `plugin` kills and reaps its worker; the library is never unloaded in-process.
    Ok(())
}
