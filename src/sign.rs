//! The author's side: fill in a plugin's file list and sign its manifest.
//!
//! Signing is where the `files` list is made, so it refuses what the loader would refuse
//! (symlinks, special files, bad names) instead of producing a manifest no host accepts.
//! A second signature by another key keeps the first when the manifest bytes are
//! unchanged; if signing has to rewrite the manifest, signatures over the old bytes can no
//! longer verify, so they are dropped and the outcome says how many.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::keys::{KeyId, SecretKey, TrustStore};
use crate::locate::{TrustedRoot, locate};
use crate::manifest::{self, FileEntryWire, ManifestError, check_path, hex_digest};
use crate::policy::Limits;
use crate::signature::{MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME, SignatureFile, sign_manifest};
use crate::verify::{Bundle, Verified, verify_dir};

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
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A symlink, FIFO, socket or device in the plugin directory.
    #[error("{0}: only regular files and directories may be part of a plugin")]
    NotRegularFile(PathBuf),
    /// The manifest template is invalid.
    #[error("{MANIFEST_FILE_NAME}: {0}")]
    Manifest(#[from] ManifestError),
    /// The existing signature file is malformed.
    #[error("existing {SIGNATURE_FILE_NAME}: {0}")]
    Signature(#[from] crate::signature::SignatureError),
    /// The directory is deeper or holds more files than the default limits allow.
    #[error("plugin directory exceeds the default limits ({0})")]
    TooBig(&'static str),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
    move |source| SignError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lists every file beneath `dir` (relative, `/`-joined, sorted), refusing anything that is
/// not a regular file or directory.
fn walk(dir: &Path, limits: &Limits) -> Result<Vec<String>, SignError> {
    fn go(
        base: &Path,
        rel: &str,
        depth: usize,
        limits: &Limits,
        out: &mut Vec<String>,
    ) -> Result<(), SignError> {
        let here = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        for entry in std::fs::read_dir(&here).map_err(io(&here))? {
            let entry = entry.map_err(io(&here))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|_| {
                SignError::Manifest(ManifestError::BadPath(path.display().to_string()))
            })?;
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_dir() {
                if depth >= limits.depth {
                    return Err(SignError::TooBig("depth"));
                }
                go(base, &child, depth + 1, limits, out)?;
            } else if kind.is_file() {
                if out.len() >= limits.files {
                    return Err(SignError::TooBig("files"));
                }
                out.push(child);
            } else {
                return Err(SignError::NotRegularFile(path));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(dir, "", 0, limits, &mut out)?;
    out.sort();
    Ok(out)
}

fn hash_file(path: &Path) -> Result<(String, u64), SignError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        total = total.saturating_add(n as u64);
    }
    Ok((hex_digest(&hasher.finalize().into()), total))
}

/// Fills in the manifest's `files` list and adds a signature by `key`.
pub fn sign_plugin_dir(dir: &Path, key: &SecretKey) -> Result<SignOutcome, SignError> {
    let limits = Limits::default();
    let manifest_path = dir.join(MANIFEST_FILE_NAME);
    let signature_path = dir.join(SIGNATURE_FILE_NAME);
    let old_bytes = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
    let mut wire = manifest::parse_wire(&old_bytes)?;
    manifest::check_common(&wire)?;

    let mut files = Vec::new();
    for rel in walk(dir, &limits)? {
        if rel == MANIFEST_FILE_NAME || rel == SIGNATURE_FILE_NAME {
            continue;
        }
        check_path(&rel)?;
        let (sha256, size) = hash_file(&dir.join(&rel))?;
        files.push(FileEntryWire {
            path: rel,
            sha256,
            size,
        });
    }
    let file_count = files.len();
    wire.files = Some(files);
    // Refuse now what every host would refuse later (library missing, reserved names...).
    manifest::Manifest::from_wire(wire.clone(), limits.files)?;

    let mut new_bytes = serde_json::to_vec_pretty(&wire)
        .map_err(|e| ManifestError::Syntax(crate::json::JsonError::new(e)))?;
    new_bytes.push(b'\n');
    let rewritten = new_bytes != old_bytes;
    let existing = match std::fs::read(&signature_path) {
        Ok(bytes) => Some(SignatureFile::parse(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&signature_path)(e)),
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
    if rewritten {
        std::fs::write(&manifest_path, &new_bytes).map_err(io(&manifest_path))?;
    }
    std::fs::write(&signature_path, sigs.to_json_pretty()).map_err(io(&signature_path))?;
    Ok(SignOutcome {
        key_id,
        manifest_rewritten: rewritten,
        dropped_signatures: dropped,
        signatures: sigs.entries().len(),
        files: file_count,
    })
}

/// Verifies a plugin directory the way a host would (signature, manifest, expiry, every
/// file), trusting exactly the keys in `trust`, any one of which suffices, and keeping no
/// version marks. The directory's parent serves as trusted root.
pub fn verify_plugin_dir(
    dir: &Path,
    trust: &TrustStore,
    limits: &Limits,
) -> Result<Verified<Bundle>, Error> {
    let absolute = std::path::absolute(dir).map_err(|source| crate::locate::LocateError::Io {
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
        &crate::trust::TrustPolicy::default(),
        &crate::danger::Danger::default(),
    )
}
