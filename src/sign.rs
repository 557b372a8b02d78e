//! The author's side: fill in a plugin's file list and sign its manifest.
//!
//! Signing is where the `files` list is made, so it refuses what the loader would refuse
//! (symlinks, special files, bad names, a tree too deep or too large for the limits)
//! instead of producing a manifest no host accepts. It does so by walking and hashing the
//! directory with the very code verification uses: `PluginDir::list_files` through
//! `crate::pipeline::verify`'s listing, and the pipeline's `digest` with the same
//! per-file caps, so signing and verifying cannot disagree about a tree.
//! A second signature by another key keeps the first when the manifest bytes are
//! unchanged; if signing has to rewrite the manifest, signatures over the old bytes can no
//! longer verify, so they are dropped and the outcome says how many.
//!
//! An author should learn that a host will refuse the library when signing it, not from a
//! user whose host refused it. [`sign_plugin_dir_checked`] (what `skill-sign sign` runs)
//! first runs the ELF checks a host with a given [`Policy`] runs at its inspect stage, on
//! the library that host would pick (the signed manifest's own choice, made by the same
//! parser) and on the very bytes being hashed, and refuses with every failing check and its
//! fix ([`SignError::Refused`]) before writing anything. [`sign_plugin_dir`] and
//! [`sign_plugin_dir_with`] keep signing without that check: a host's policy may differ
//! from the one the author has (`skill-sign sign --no-check`).

use std::path::{Path, PathBuf};

use crate::base::settings::Limits;
use crate::danger::ElfDanger;
use crate::pipeline::digest::digest_file;
use crate::pipeline::inspect::{ElfPolicy, InspectError, examine};
use crate::pipeline::locate::{LocateError, PluginDir, TrustedRoot, locate};
use crate::pipeline::manifest::{self, FileEntryWire, ManifestError, check_path, hex_digest};
use crate::pipeline::verify::{Bundle, Verified, VerifyError, content_files, file_cap, verify_dir};
use crate::policy::Policy;
pub use crate::trust::formats::{MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME};
use crate::trust::keys::{KeyId, SecretKey};
use crate::trust::store::TrustStore;

// The signature file itself, for an author who co-signs a manifest or checks one
// signature file against a trust store without the rest of the pipeline.
pub use crate::trust::formats::{DOMAIN_TAG, FORMAT as SIGNATURE_FORMAT};
pub use crate::trust::signature::{AuthenticManifest, verify_manifest};
pub use crate::trust::signature_file::{
    SignatureEntry, SignatureFile, sign_manifest, signed_message,
};

/// What [`sign_plugin_dir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignOutcome {
    /// The signing key's id.
    pub key_id: KeyId,
    /// Whether `plugin.json` was rewritten (its `files` list changed).
    pub manifest_rewritten: bool,
    /// Signatures by other keys that were dropped because the manifest changed.
    pub dropped_signatures: usize,
    /// Signatures in the file now.
    pub signatures: usize,
    /// Files listed in the manifest.
    pub files: usize,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The plugin directory, or a file in it, is refused exactly as verification would
    /// refuse it (a symlink or special file, too deep, too many entries, too large).
    #[error(transparent)]
    Locate(#[from] LocateError),
    /// The manifest template is invalid.
    #[error("{MANIFEST_FILE_NAME}: {0}")]
    Manifest(ManifestError),
    /// The existing signature file is malformed.
    #[error("existing {SIGNATURE_FILE_NAME}: {0}")]
    Signature(crate::trust::signature::SignatureError),
    /// The library fails ELF checks a host with the policy signed for runs before loading
    /// it, so that host would refuse the plugin ([`sign_plugin_dir_checked`]). Nothing was
    /// written. Each failure names its check ([`InspectError::check`]) and the build's fix
    /// ([`InspectError::fix`]).
    #[error(
        "{library}: refused by the ELF checks a host runs before loading it: {}",
        list(failures)
    )]
    Refused {
        /// The library's file name (in the plugin directory).
        library: String,
        /// Every failing check, in the order the host runs them; never empty. A file that
        /// cannot be examined at all (not ELF, malformed) is one failure.
        failures: Vec<InspectError>,
    },
    /// The library's bytes changed between the hash that went into the manifest and the
    /// read the ELF checks examined; nothing was written.
    #[error("{}: changed while it was being signed", path.display())]
    LibraryChanged {
        /// The library.
        path: PathBuf,
    },
}

/// The failures of [`SignError::Refused`], each `check: problem; fix`, on one line.
fn list(failures: &[InspectError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

// `From` without `source()`: the message already holds the inner error (crate::error docs).
impl From<ManifestError> for SignError {
    fn from(e: ManifestError) -> Self {
        SignError::Manifest(e)
    }
}

impl From<crate::trust::signature::SignatureError> for SignError {
    fn from(e: crate::trust::signature::SignatureError) -> Self {
        SignError::Signature(e)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
    move |source| SignError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses to write `len` bytes to `path` if verification would refuse to read that many.
fn within_cap(path: &Path, len: usize, cap: u64) -> Result<(), SignError> {
    let size = u64::try_from(len).unwrap_or(u64::MAX);
    if size > cap {
        return Err(LocateError::TooLarge {
            path: path.to_path_buf(),
            size,
            cap,
        }
        .into());
    }
    Ok(())
}

/// Fills in the manifest's `files` list and adds a signature by `key`, refusing what a host
/// with the default [`Limits`] would refuse.
pub fn sign_plugin_dir(dir: &Path, key: &SecretKey) -> Result<SignOutcome, SignError> {
    sign_plugin_dir_with(dir, key, &Limits::default())
}

/// [`sign_plugin_dir`] under the limits of the policy the plugin is meant for.
pub fn sign_plugin_dir_with(
    dir: &Path,
    key: &SecretKey,
    limits: &Limits,
) -> Result<SignOutcome, SignError> {
    sign_dir(dir, key, limits, None)
}

/// Signs as [`sign_plugin_dir_with`] does under `policy`'s limits, but first runs the ELF
/// checks a host with `policy` runs before loading (its `elf` section and `danger.elf`
/// knobs) on the library that host would load, and refuses with
/// [`SignError::Refused`], listing every failing check, if that host would refuse it.
/// Nothing is written unless the checks pass. `Policy::default()` is the strict default
/// policy (`policy/default.json` has the same ELF rules).
pub fn sign_plugin_dir_checked(
    dir: &Path,
    key: &SecretKey,
    policy: &Policy,
) -> Result<SignOutcome, SignError> {
    sign_dir(
        dir,
        key,
        policy.limits(),
        Some((policy.elf(), policy.danger().elf())),
    )
}

fn sign_dir(
    dir: &Path,
    key: &SecretKey,
    limits: &Limits,
    elf_check: Option<(&ElfPolicy, &ElfDanger)>,
) -> Result<SignOutcome, SignError> {
    let manifest_path = dir.join(MANIFEST_FILE_NAME);
    let signature_path = dir.join(SIGNATURE_FILE_NAME);
    let plugin = PluginDir::open_unrooted(dir)?;
    let old_bytes = plugin
        .read_small(MANIFEST_FILE_NAME, limits.manifest_bytes)?
        .ok_or(ManifestError::Missing)?;
    let mut wire = manifest::parse_wire(&old_bytes)?;
    manifest::check_common(&wire)?;
    let rels = content_files(&plugin, limits)?;
    // The same choice the host makes (the named library, else lib<name>.so, then <name>.so),
    // so the library gets the library's size cap here too.
    let library = manifest::choose_library(wire.library.as_deref(), &wire.name, |f| {
        rels.iter().any(|r| r == f)
    })?;

    let mut files = Vec::new();
    for rel in rels {
        check_path(&rel)?;
        let cap = file_cap(limits, rel == library);
        let digest = digest_file(plugin.open_file(&rel, cap)?, cap, None)?;
        files.push(FileEntryWire {
            path: rel,
            sha256: hex_digest(&digest.sha256),
            size: digest.len,
        });
    }
    let file_count = files.len();
    wire.files = Some(files);
    // Refuse now what every host would refuse later (library missing, reserved names...).
    let parsed = manifest::Manifest::from_wire(wire.clone(), limits.files)?;
    if let Some((policy, danger)) = elf_check {
        check_library(&plugin, &parsed, limits, policy, danger)?;
    }

    let mut new_bytes = serde_json::to_vec_pretty(&wire)
        .map_err(|e| ManifestError::Syntax(crate::base::json::JsonError::new(e)))?;
    new_bytes.push(b'\n');
    let rewritten = new_bytes != old_bytes;
    let existing = match plugin.read_small(SIGNATURE_FILE_NAME, limits.signature_bytes)? {
        Some(bytes) => Some(SignatureFile::parse(&bytes)?),
        None => None,
    };
    let (key_id, signature) = sign_manifest(&new_bytes, key);
    let (mut sigs, dropped) = match existing {
        Some(old) if !rewritten => (old, 0),
        Some(old) => {
            let others = old
                .entries()
                .iter()
                .filter(|e| e.key_id() != key_id)
                .count();
            (SignatureFile::new(), others)
        }
        None => (SignatureFile::new(), 0),
    };
    sigs.add_or_replace(key_id, signature)?;
    let sig_bytes = sigs.to_json_pretty();
    // The files list made the manifest longer, and a signature was added: both must still
    // fit under the caps verification reads them with.
    within_cap(&manifest_path, new_bytes.len(), limits.manifest_bytes)?;
    within_cap(&signature_path, sig_bytes.len(), limits.signature_bytes)?;
    if rewritten {
        std::fs::write(&manifest_path, &new_bytes).map_err(io(&manifest_path))?;
    }
    std::fs::write(&signature_path, sig_bytes).map_err(io(&signature_path))?;
    Ok(SignOutcome {
        key_id,
        manifest_rewritten: rewritten,
        dropped_signatures: dropped,
        signatures: sigs.entries().len(),
        files: file_count,
    })
}

/// Runs the inspect stage's checks on the library `manifest` names (the one a host loads),
/// read again through `plugin` and compared with the digest about to be signed, so the
/// bytes examined are the bytes signed.
fn check_library(
    plugin: &PluginDir,
    manifest: &manifest::Manifest,
    limits: &Limits,
    policy: &ElfPolicy,
    danger: &ElfDanger,
) -> Result<(), SignError> {
    let name = manifest.library();
    let cap = file_cap(limits, true);
    let mut bytes = Vec::new();
    let digest = digest_file(plugin.open_file(name, cap)?, cap, Some(&mut bytes))?;
    let signed = manifest.library_entry();
    if signed.is_none_or(|e| e.sha256 != digest.sha256 || e.size != digest.len) {
        return Err(SignError::LibraryChanged {
            path: plugin.path().join(name),
        });
    }
    let failures = match examine(&bytes, policy, danger) {
        Ok(report) => report
            .checks
            .into_iter()
            .filter_map(|c| c.refusal)
            .collect(),
        Err(whole_file) => vec![whole_file],
    };
    if failures.is_empty() {
        Ok(())
    } else {
        Err(SignError::Refused {
            library: name.to_owned(),
            failures,
        })
    }
}

/// Verifies a plugin directory the way a host would (signature, manifest, expiry, every
/// file), trusting exactly the keys in `trust`, any one of which suffices, and keeping no
/// version marks. The directory's parent serves as trusted root. The error is the verify
/// stage's own ([`crate::Error`] has a `From` that gives each step its usual variant).
pub fn verify_plugin_dir(
    dir: &Path,
    trust: &TrustStore,
    limits: &Limits,
) -> Result<Verified<Bundle>, VerifyError> {
    let absolute = std::path::absolute(dir).map_err(|source| LocateError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let root = TrustedRoot::open(parent)?;
    let located = locate(std::slice::from_ref(&root), &absolute)?;
    verify_dir(
        &located,
        trust,
        limits,
        &crate::trust::rules::TrustPolicy::default(),
        &crate::danger::Danger::default(),
    )
}
