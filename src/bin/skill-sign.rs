//! `skill-sign`: the plugin author's tool. Make keys, sign plugin directories, verify them.
//!
//! Key files use minisign's layout, so minisign keys work here and the other way round.
//! Exit codes: 0 success; 1 verification refused; 2 usage or I/O error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skillgate::policy::Limits;
use skillgate::sign::{sign_plugin_dir, verify_plugin_dir};
use skillgate::{PublicKey, SecretKey, TrustStore};

#[derive(Parser)]
#[command(
    name = "skill-sign",
    version,
    about = "Make keys and sign native skill plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a key pair.
    Keygen {
        /// Where to write the secret key (created with mode 0600; never overwritten).
        #[arg(long)]
        secret_key: PathBuf,
        /// Where to write the public key (never overwritten).
        #[arg(long)]
        public_key: PathBuf,
        /// Write the secret key without a password. Required for now: encrypted keys are
        /// not supported yet.
        #[arg(long)]
        unencrypted: bool,
    },
    /// Fill in the manifest's file list and add a signature.
    Sign {
        /// Plugin directory.
        dir: PathBuf,
        /// Secret key file.
        #[arg(long)]
        secret_key: PathBuf,
    },
    /// Verify a plugin directory against one public key, as a host would.
    Verify {
        /// Plugin directory.
        dir: PathBuf,
        /// Public key file.
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Print the key id of a public key file.
    KeyId {
        /// Public key file.
        public_key: PathBuf,
    },
}

fn error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("skill-sign: error: {msg}");
    ExitCode::from(2)
}

fn write_new(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Keygen {
            secret_key,
            public_key,
            unencrypted,
        } => {
            if !unencrypted {
                return error("encrypted secret keys are not supported yet; pass --unencrypted");
            }
            let key = SecretKey::generate();
            if let Err(e) = write_new(&secret_key, &key.to_minisign_string_unencrypted(), 0o600) {
                return error(format!("{}: {e}", secret_key.display()));
            }
            if let Err(e) = write_new(&public_key, &key.public().to_minisign_string(), 0o644) {
                return error(format!("{}: {e}", public_key.display()));
            }
            println!("{}", key.id());
            ExitCode::SUCCESS
        }
        Command::Sign { dir, secret_key } => {
            let key = match SecretKey::read_file(&secret_key) {
                Ok(k) => k,
                Err(e) => return error(e),
            };
            match sign_plugin_dir(&dir, &key) {
                Ok(outcome) => {
                    if outcome.dropped_signatures > 0 {
                        eprintln!(
                            "skill-sign: the file list changed, so {} earlier signature(s) no longer applied and were removed",
                            outcome.dropped_signatures
                        );
                    }
                    println!(
                        "signed {} with key {} ({} files, {} signature(s))",
                        dir.display(),
                        outcome.key_id,
                        outcome.files,
                        outcome.signatures
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => error(format!("{}: {e}", dir.display())),
            }
        }
        Command::Verify { dir, public_key } => {
            let trust =
                match PublicKey::read_file(&public_key).and_then(|k| TrustStore::from_keys([k])) {
                    Ok(t) => t,
                    Err(e) => return error(e),
                };
            match verify_plugin_dir(&dir, &trust, &Limits::default()) {
                Ok(v) => {
                    println!(
                        "verified {} {}",
                        v.manifest().name(),
                        v.manifest().version()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let class = e.class();
                    eprintln!("skill-sign: refused: {}: {e}", dir.display());
                    ExitCode::from(class.exit_code())
                }
            }
        }
        Command::KeyId { public_key } => match PublicKey::read_file(&public_key) {
            Ok(k) => {
                println!("{}", k.id());
                ExitCode::SUCCESS
            }
            Err(e) => error(e),
        },
    }
}
