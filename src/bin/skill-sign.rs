//! `skill-sign`: the plugin author's tool. Make keys, sign plugin directories, verify them.
//!
//! Key files use minisign's layout, so minisign keys work here and the other way round,
//! encrypted ones included. A password comes from `--password-file FILE` (first line), else
//! the environment variable `SKILLGATE_PASSWORD` (for CI), else a prompt on the terminal.
//! `sign` first runs the ELF checks a host runs before loading the library (under the
//! default policy, or `--policy FILE`'s `elf` and `danger.elf` sections and limits) and
//! refuses to sign a library that host would refuse, listing each failing check with the
//! build flags that fix it; `--no-check` signs anyway, for a host whose policy differs.
//! `push` publishes a signed directory to an OCI registry and prints the manifest digest
//! (`--manifest-out` also keeps the manifest's bytes); `tuf init` and `tuf publish` keep the
//! operator's TUF repository (`skillgate::fleet::publish`, docs/fleet-tuf.md).
//! Exit codes: 0 success; 1 refused (verification, or signing a library the policy would
//! refuse); 2 usage or I/O error (a wrong password included).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skillgate::error::chain;
use skillgate::escape::Escaped;
use skillgate::inspect::InspectError;
use skillgate::keys::KdfParams;
use skillgate::keys::RevocationStatement;
use skillgate::keys::{KeyError, PasswordError};
use skillgate::policy::{Limits, Policy};
use skillgate::sign::{
    SignError, SignOutcome, sign_plugin_dir_checked, sign_plugin_dir_with, verify_plugin_dir,
};
use skillgate::{PublicKey, SecretKey, TrustStore};
use zeroize::Zeroizing;

/// The environment variable a password may come from (CI).
const PASSWORD_ENV: &str = "SKILLGATE_PASSWORD";
/// Largest password file read.
const MAX_PASSWORD_FILE: u64 = 4096;

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
        /// Write the secret key without a password (as `minisign -G -W`). By default it is
        /// encrypted with scrypt as `minisign -G` does.
        #[arg(long, conflicts_with = "password_file")]
        unencrypted: bool,
        /// Read the new key's password from the first line of this file.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Fill in the manifest's file list and add a signature, after checking that a host
    /// would load the library (its ELF checks, under the default policy or --policy).
    Sign {
        /// Plugin directory.
        dir: PathBuf,
        /// Secret key file (encrypted or not).
        #[arg(long)]
        secret_key: PathBuf,
        /// Read the key's password from the first line of this file.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Check the library against this host policy (its `elf` section, `danger.elf`
        /// knobs and limits) instead of the default policy.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Sign without the ELF checks (for a host whose policy differs from the one given).
        #[arg(long)]
        no_check: bool,
    },
    /// Write, or add a signature to, a revocation statement for a trust store (`NAME.revoked`
    /// and `NAME.revoked.sig`). A key may revoke itself; otherwise two other trusted keys
    /// must sign the same statement.
    Revoke {
        /// The public key to revoke.
        #[arg(long)]
        public_key: PathBuf,
        /// The signing key: the revoked key itself, or another trusted key.
        #[arg(long)]
        secret_key: PathBuf,
        /// The statement file to write (or co-sign, if it exists); should end in `.revoked`.
        #[arg(long)]
        out: PathBuf,
        /// Free text recorded in the statement (only when it is created).
        #[arg(long)]
        reason: Option<String>,
        /// Read the signing key's password from the first line of this file.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Verify a plugin directory against one public key, as a host would.
    Verify {
        /// Plugin directory.
        dir: PathBuf,
        /// Public key file.
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Publish a signed plugin directory to an OCI registry as an artifact (one blob per
    /// file; see the README's "Distributing plugins to many machines"), after verifying it
    /// against the public key. Prints the manifest digest (`sha256:…`) on stdout.
    Push {
        /// Plugin directory (signed).
        dir: PathBuf,
        /// Where to: `oci://REGISTRY/REPO:TAG` (plain HTTP only for a loopback registry).
        reference: String,
        /// Public key file the directory must verify against.
        #[arg(long)]
        public_key: PathBuf,
        /// Also write the exact manifest bytes pushed to this file (never overwritten;
        /// missing parent directories are created): the release file `skill-sign tuf
        /// publish` lists, at `RELEASES/NAME/VERSION`.
        #[arg(long)]
        manifest_out: Option<PathBuf>,
    },
    /// The operator's TUF repository (docs/fleet-tuf.md): create its root, publish the
    /// releases offered.
    Tuf {
        #[command(subcommand)]
        command: TufCommand,
    },
    /// Print the key id of a public key file.
    KeyId {
        /// Public key file.
        public_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum TufCommand {
    /// Write a new TUF root: the root key for the `root` role, the online key for
    /// `targets`, `snapshot` and `timestamp` (threshold 1 each), signed by the root key.
    /// Prints its SHA-256 (the pin for the policy's `freshness.root_sha256`).
    Init {
        /// The root key (kept offline): RSA PEM, ed25519 PKCS#8 or ECDSA P-256 PKCS#8.
        #[arg(long)]
        root_key: PathBuf,
        /// The online key (signs targets, snapshot, timestamp); same formats.
        #[arg(long)]
        online_key: PathBuf,
        /// Where to write the root (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Days until the root expires.
        #[arg(long, default_value_t = 365)]
        expires_days: u32,
    },
    /// List every release file `RELEASES/NAME/VERSION` (a release's OCI manifest bytes,
    /// from `skill-sign push --manifest-out`) as TUF target `NAME/VERSION`, sign targets,
    /// snapshot and timestamp with the online key, and write them to the metadata
    /// directory. A release not in RELEASES is withdrawn. Run it again (same RELEASES) to
    /// refresh the timestamp.
    Publish {
        /// The repository's root (`skill-sign tuf init --out`).
        #[arg(long)]
        root: PathBuf,
        /// The online key.
        #[arg(long)]
        key: PathBuf,
        /// The releases offered: one file per release at `RELEASES/NAME/VERSION`.
        #[arg(long)]
        releases: PathBuf,
        /// The metadata directory to write (what hosts' `freshness.metadata` reads).
        #[arg(long)]
        metadata: PathBuf,
        /// The version of targets, snapshot and timestamp; default: the current Unix time
        /// in seconds. Must be higher than the metadata directory's.
        #[arg(long)]
        version: Option<std::num::NonZeroU64>,
        /// Days until targets expires.
        #[arg(long, default_value_t = 30)]
        targets_days: u32,
        /// Days until snapshot expires.
        #[arg(long, default_value_t = 7)]
        snapshot_days: u32,
        /// Days until timestamp expires.
        #[arg(long, default_value_t = 1)]
        timestamp_days: u32,
    },
}

/// Prints an error on stderr with control characters escaped (it may hold a file name or
/// a manifest's text) and returns exit code 2.
fn error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("skill-sign: error: {}", Escaped(msg));
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

fn unavailable(problem: PasswordError) -> KeyError {
    KeyError::PasswordUnavailable(problem)
}

/// The password from `--password-file`, `SKILLGATE_PASSWORD` or the terminal, in that order.
/// With `confirm`, a prompted password is asked twice.
fn password(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut pw = if let Some(path) = file {
        let mut text = Zeroizing::new(Vec::new());
        skillgate::capped::read_capped_into(
            path,
            MAX_PASSWORD_FILE,
            skillgate::capped::Links::Follow,
            &mut text,
        )
        .map_err(|e| unavailable(PasswordError::File(e)))?;
        let end = text.iter().position(|b| *b == b'\n').unwrap_or(text.len());
        Zeroizing::new(text.get(..end).unwrap_or_default().to_vec())
    } else if let Some(env) = std::env::var_os(PASSWORD_ENV) {
        use std::os::unix::ffi::OsStrExt;
        Zeroizing::new(env.as_bytes().to_vec())
    } else {
        let first = Zeroizing::new(
            rpassword::prompt_password("Password: ")
                .map_err(|e| unavailable(PasswordError::NoSource(e)))?,
        );
        if confirm {
            let second = Zeroizing::new(
                rpassword::prompt_password("Password (again): ")
                    .map_err(|e| unavailable(PasswordError::Prompt(e)))?,
            );
            if *first != *second {
                return Err(unavailable(PasswordError::Mismatch));
            }
        }
        Zeroizing::new(first.as_bytes().to_vec())
    };
    if pw.last() == Some(&b'\r') {
        pw.pop();
    }
    if confirm && pw.is_empty() {
        return Err(unavailable(PasswordError::Empty));
    }
    Ok(pw)
}

fn read_secret_key(path: &Path, password_file: Option<&Path>) -> Result<SecretKey, KeyError> {
    SecretKey::read_file_with(path, || password(password_file, false))
}

fn revoke(
    public_key: &Path,
    secret_key: &Path,
    out: &Path,
    reason: Option<&str>,
    password_file: Option<&Path>,
) -> Result<String, String> {
    let revoked = PublicKey::read_file(public_key).map_err(|e| chain(&e).to_string())?;
    let signer = read_secret_key(secret_key, password_file).map_err(|e| chain(&e).to_string())?;
    let mut sig_path = out.as_os_str().to_owned();
    sig_path.push(".sig");
    let sig_path = PathBuf::from(sig_path);
    let (statement, existing, created) = match std::fs::read(out) {
        Ok(bytes) => {
            let sigs =
                std::fs::read(&sig_path).map_err(|e| format!("{}: {e}", sig_path.display()))?;
            (bytes, Some(sigs), false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (RevocationStatement::create(&revoked, reason), None, true)
        }
        Err(e) => return Err(format!("{}: {e}", out.display())),
    };
    let names =
        RevocationStatement::revokes(&statement).map_err(|e| format!("{}: {e}", out.display()))?;
    if names != revoked.id() {
        return Err(format!(
            "{} revokes {names}, not {}",
            out.display(),
            revoked.id()
        ));
    }
    let sigs = RevocationStatement::sign(&statement, existing.as_deref(), &signer)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    if created {
        write_new(out, &String::from_utf8_lossy(&statement), 0o644)
            .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    std::fs::write(&sig_path, sigs).map_err(|e| format!("{}: {e}", sig_path.display()))?;
    Ok(format!(
        "{} revocation of {} signed by {}",
        if created { "wrote" } else { "co-signed" },
        revoked.id(),
        signer.id()
    ))
}

/// Exit code for a library the policy would refuse (as for a refused verification).
const REFUSED: u8 = 1;

/// `skill-sign sign`: the policy first (a bad one is a usage error before any password is
/// asked for), then the key, then checked signing.
fn sign(
    dir: &Path,
    secret_key: &Path,
    password_file: Option<&Path>,
    policy_file: Option<&Path>,
    no_check: bool,
) -> ExitCode {
    let policy = match policy_file.map(Policy::from_file).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return error(format!("policy: {}", chain(&e))),
    };
    let key = match read_secret_key(secret_key, password_file) {
        Ok(k) => k,
        Err(e) => return error(chain(&e)),
    };
    let signed = if no_check {
        eprintln!(
            "skill-sign: --no-check: the library's ELF checks were skipped; a host whose policy refuses it will refuse the plugin when it loads it"
        );
        sign_plugin_dir_with(dir, &key, policy.limits())
    } else {
        sign_plugin_dir_checked(dir, &key, &policy)
    };
    match signed {
        Ok(outcome) => {
            print_signed(dir, &outcome);
            ExitCode::SUCCESS
        }
        Err(SignError::Refused { library, failures }) => {
            let which = match policy_file {
                Some(file) => format!("the policy {}", file.display()),
                None => "the default policy".to_owned(),
            };
            print_refusal(dir, &library, &failures, &which);
            ExitCode::from(REFUSED)
        }
        Err(e) => error(format!("{}: {}", dir.display(), chain(&e))),
    }
}

fn print_signed(dir: &Path, outcome: &SignOutcome) {
    if outcome.dropped_signatures > 0 {
        eprintln!(
            "skill-sign: the file list changed, so {} earlier signature(s) no longer applied and were removed",
            outcome.dropped_signatures
        );
    }
    println!(
        "signed {} with key {} ({} files, {} signature(s))",
        Escaped(dir.display()),
        outcome.key_id,
        outcome.files,
        outcome.signatures
    );
}

/// Every failing check on its own line, its fix on the next; names in the library and the
/// paths are escaped (the author's, or the filesystem's, choice).
fn print_refusal(dir: &Path, library: &str, failures: &[InspectError], which: &str) {
    let mut text = format!(
        "skill-sign: refused: {}: a host with {} would refuse {}, failing {} ELF check(s); nothing was signed or written\n",
        Escaped(dir.display()),
        Escaped(which),
        Escaped(library),
        failures.len()
    );
    for failure in failures {
        text.push_str(&format!(
            "  {}: {}\n    fix: {}\n",
            failure.check(),
            Escaped(failure.problem()),
            failure.fix()
        ));
    }
    text.push_str(
        "skill-sign: rebuild with the fixes above (`skillgate inspect DIR` runs the same checks), or sign with --no-check for a host whose policy accepts this library\n",
    );
    eprint!("{text}");
}

/// `skill-sign push`: with `--manifest-out`, the file is claimed before the push (an
/// existing one is refused first) and removed again if the push fails.
fn push(dir: &Path, reference: &str, public_key: &Path, manifest_out: Option<&Path>) -> ExitCode {
    let trust = match PublicKey::read_file(public_key).and_then(|k| TrustStore::from_keys([k])) {
        Ok(t) => t,
        Err(e) => return error(chain(&e)),
    };
    let mut out = match manifest_out.map(claim).transpose() {
        Ok(out) => out,
        Err(e) => return error(e),
    };
    let pushed = match skillgate::fleet::push(dir, &trust, reference) {
        Ok(pushed) => pushed,
        Err(e) => {
            if let Some(path) = manifest_out {
                let _ = std::fs::remove_file(path);
            }
            let class = e.class();
            eprintln!("skill-sign: push refused: {}: {e}", Escaped(dir.display()));
            return ExitCode::from(class.exit_code());
        }
    };
    if let (Some(file), Some(path)) = (out.as_mut(), manifest_out)
        && let Err(e) = file
            .write_all(&pushed.manifest)
            .and_then(|()| file.sync_all())
    {
        return error(format!("{}: {e}", path.display()));
    }
    println!("{}", pushed.digest);
    ExitCode::SUCCESS
}

/// Creates `path` (and its missing parents), refusing an existing file.
fn claim(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{}: already exists; it is not overwritten", path.display())
            }
            _ => format!("{}: {e}", path.display()),
        })
}

/// `skill-sign tuf`: every failure exits 2 (the operator's input or I/O).
fn tuf(command: TufCommand) -> ExitCode {
    use skillgate::fleet::publish;
    match command {
        TufCommand::Init {
            root_key,
            online_key,
            out,
            expires_days,
        } => match publish::init_root(&root_key, &online_key, &out, expires_days) {
            Ok(root) => {
                println!(
                    "wrote {} (version 1, expires {}; root key {}, online key {})",
                    Escaped(root.path.display()),
                    root.expires,
                    root.root_key_id,
                    root.online_key_id
                );
                println!("sha256 {}", root.sha256);
                ExitCode::SUCCESS
            }
            Err(e) => error(format!("tuf init: {}", chain(&e))),
        },
        TufCommand::Publish {
            root,
            key,
            releases,
            metadata,
            version,
            targets_days,
            snapshot_days,
            timestamp_days,
        } => {
            let mut options = publish::PublishOptions::new().expiries(
                targets_days,
                snapshot_days,
                timestamp_days,
            );
            if let Some(version) = version {
                options = options.version(version);
            }
            match publish::publish(&root, &key, &releases, &metadata, options) {
                Ok(p) => {
                    println!(
                        "signed version {} into {}: targets expire {}, snapshot {}, timestamp {}",
                        p.version,
                        Escaped(metadata.display()),
                        p.targets_expires,
                        p.snapshot_expires,
                        p.timestamp_expires
                    );
                    for listed in &p.listed {
                        println!(
                            "listed {} {} {}",
                            listed.target, listed.digest, listed.length
                        );
                    }
                    for target in &p.withdrawn {
                        println!("withdrawn {}", Escaped(target));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => error(format!("tuf publish: {}", chain(&e))),
            }
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Keygen {
            secret_key,
            public_key,
            unencrypted,
            password_file,
        } => {
            let key = SecretKey::generate();
            let text = if unencrypted {
                key.to_minisign_string_unencrypted()
            } else {
                match password(password_file.as_deref(), true)
                    .and_then(|pw| key.to_minisign_string_encrypted(&pw, KdfParams::MINISIGN))
                {
                    Ok(t) => t,
                    Err(e) => return error(chain(&e)),
                }
            };
            if let Err(e) = write_new(&secret_key, &text, 0o600) {
                return error(format!("{}: {e}", secret_key.display()));
            }
            if let Err(e) = write_new(&public_key, &key.public().to_minisign_string(), 0o644) {
                return error(format!("{}: {e}", public_key.display()));
            }
            println!("{}", key.id());
            ExitCode::SUCCESS
        }
        Command::Revoke {
            public_key,
            secret_key,
            out,
            reason,
            password_file,
        } => match revoke(
            &public_key,
            &secret_key,
            &out,
            reason.as_deref(),
            password_file.as_deref(),
        ) {
            Ok(msg) => {
                println!("{}", Escaped(msg));
                ExitCode::SUCCESS
            }
            Err(e) => error(e),
        },
        Command::Sign {
            dir,
            secret_key,
            password_file,
            policy,
            no_check,
        } => sign(
            &dir,
            &secret_key,
            password_file.as_deref(),
            policy.as_deref(),
            no_check,
        ),
        Command::Verify { dir, public_key } => {
            let trust =
                match PublicKey::read_file(&public_key).and_then(|k| TrustStore::from_keys([k])) {
                    Ok(t) => t,
                    Err(e) => return error(chain(&e)),
                };
            match verify_plugin_dir(&dir, &trust, &Limits::default()) {
                Ok(v) => {
                    println!(
                        "verified {} {}",
                        Escaped(v.manifest().name()),
                        Escaped(v.manifest().version())
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let e = skillgate::Error::from(e);
                    let class = e.class();
                    eprintln!("skill-sign: refused: {}: {e}", Escaped(dir.display()));
                    ExitCode::from(class.exit_code())
                }
            }
        }
        Command::Push {
            dir,
            reference,
            public_key,
            manifest_out,
        } => push(&dir, &reference, &public_key, manifest_out.as_deref()),
        Command::Tuf { command } => tuf(command),
        Command::KeyId { public_key } => match PublicKey::read_file(&public_key) {
            Ok(k) => {
                println!("{}", k.id());
                ExitCode::SUCCESS
            }
            Err(e) => error(chain(&e)),
        },
    }
}
