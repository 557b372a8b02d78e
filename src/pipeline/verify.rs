//! Verification: from an opened plugin directory to a [`Verified<Bundle>`].
//!
//! The order is the point. The manifest's raw bytes are checked against the signature
//! file first; only authentic bytes are parsed; then every file in the directory must be
//! listed, and every listed file must be present with the signed size and SHA-256. The
//! library is read exactly once, through a descriptor opened beneath the plugin
//! directory, and its bytes are hashed while they are copied out of the file: into the
//! heap for a small library (sealed into a memfd when it is loaded), straight into a sealed
//! memfd for a larger one ([`VerifiedBytes`]). Either way the bytes that were verified are
//! the bytes that will be mapped, whatever happens to the file on disk afterwards.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::base::sealed::{HELD_MAX, SealedBuilder, VerifiedBytes};
use crate::base::settings::Limits;
use crate::danger::Danger;
use crate::pipeline::digest::{FileDigest, digest_file};
use crate::pipeline::locate::{LocateError, PluginDir};
use crate::pipeline::manifest::{Manifest, ManifestError, hex_digest};
use crate::pipeline::stage::Stage;
use crate::trust::error::TrustError;
use crate::trust::keys::KeyId;
use crate::trust::rules::TrustPolicy;
use crate::trust::signature::{
    MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME, SignatureError, verify_manifest,
};
use crate::trust::store::TrustStore;

/// A value that passed verification. Only this module can build one, so a function that
/// takes `Verified<T>` cannot be handed unverified data.
#[derive(Debug)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// The verified value.
    pub fn get(&self) -> &T {
        &self.0
    }
    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A verified plugin: its signed manifest, who signed it, and its library's verified bytes.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    manifest: Manifest,
    signers: Vec<KeyId>,
    library: VerifiedBytes,
}

impl Bundle {
    /// The plugin directory, as located beneath its trusted root.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The trusted keys whose signatures verified, each once.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
    /// The library's verified bytes, held or sealed.
    pub(crate) fn library(&self) -> &VerifiedBytes {
        &self.library
    }
    /// Taken apart only inside the pipeline, so the library leaves it only as a
    /// [`crate::pipeline::load::Loadable`].
    pub(in crate::pipeline) fn into_parts(self) -> (PathBuf, Manifest, Vec<KeyId>, VerifiedBytes) {
        (self.path, self.manifest, self.signers, self.library)
    }
}

/// A file in the plugin directory disagrees with the signed manifest. The messages name
/// the file, not `dir`: whoever prints a refusal names the plugin already (`skillgate`'s
/// "refused: DIR: …"), and the line would say the directory twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// A file is present that the manifest does not list.
    #[error("file {file:?} is not listed in the signed manifest")]
    UnlistedFile {
        /// The plugin directory.
        dir: PathBuf,
        /// The unlisted file.
        file: String,
    },
    /// A listed file is absent.
    #[error("listed file {file:?} is missing")]
    MissingFile {
        /// The plugin directory.
        dir: PathBuf,
        /// The missing file.
        file: String,
    },
    /// A file's size differs from the signed size.
    #[error("{file:?} is {actual} bytes, the signed manifest says {expected}")]
    SizeMismatch {
        /// The plugin directory.
        dir: PathBuf,
        /// The file.
        file: String,
        /// From the manifest.
        expected: u64,
        /// On disk.
        actual: u64,
    },
    /// A file's SHA-256 differs from the signed digest.
    #[error("sha256 of {file:?} is {actual}, the signed manifest says {expected}")]
    HashMismatch {
        /// The plugin directory.
        dir: PathBuf,
        /// The file.
        file: String,
        /// From the manifest, lowercase hex.
        expected: String,
        /// Computed, lowercase hex.
        actual: String,
    },
    /// The sealed copy of the library could not be made.
    #[error("cannot seal a copy of the library: {0}")]
    Seal(std::io::Error),
}

/// Why `verify_dir` refused a plugin directory: the step that refused, with its error.
///
/// Each variant is the top-level [`crate::Error`] variant of the same name (the `From`
/// there flattens it). Like the stage errors it holds, its `Display` is raw (print it
/// through [`crate::base::escape::Escaped`]) and it reports no `source()`, so a printer
/// walking the chain cannot reach the inner text around that escaping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The directory or one of its files was refused before its bytes were compared.
    #[error("locate: {0}")]
    Locate(LocateError),
    /// The manifest's signatures did not establish trust.
    #[error("signature: {0}")]
    Signature(SignatureError),
    /// The signed manifest is missing, malformed or breaks a rule.
    #[error("manifest: {0}")]
    Manifest(ManifestError),
    /// The signers, expiry or version break the trust policy, or the version mark could
    /// not be kept.
    #[error("trust: {0}")]
    Trust(TrustError),
    /// A file disagrees with the signed manifest.
    #[error("integrity: {0}")]
    Integrity(IntegrityError),
}

/// `From` for each step's error, without making it a `source()` (see [`VerifyError`]).
macro_rules! from_step {
    ($($variant:ident($ty:ty),)*) => {
        $(impl From<$ty> for VerifyError {
            fn from(e: $ty) -> Self {
                VerifyError::$variant(e)
            }
        })*
    };
}

from_step! {
    Locate(LocateError),
    Signature(SignatureError),
    Manifest(ManifestError),
    Trust(TrustError),
    Integrity(IntegrityError),
}

/// Every file beneath the plugin directory except its manifest and signature file, sorted.
///
/// The one walk both [`crate::sign`] (which writes the `files` list from it) and
/// [`verify_dir`] (which compares the list with it) use, through the same descriptor-based
/// [`PluginDir::list_files`], so an author cannot sign a tree a host then refuses to walk
/// (too deep, too many entries, a symlink or special file, a name that is not UTF-8).
pub(crate) fn content_files(dir: &PluginDir, limits: &Limits) -> Result<Vec<String>, LocateError> {
    // Two more entries than the manifest may list: the manifest and its signature file.
    let present = dir.list_files(limits.files.saturating_add(2), limits.depth)?;
    Ok(present
        .into_iter()
        .filter(|f| f != MANIFEST_FILE_NAME && f != SIGNATURE_FILE_NAME)
        .collect())
}

/// The most bytes a listed file may hold: the library's cap or every other file's.
pub(crate) fn file_cap(limits: &Limits, is_library: bool) -> u64 {
    if is_library {
        limits.library_bytes
    } else {
        limits.file_bytes
    }
}

/// Verifies the plugin directory against the trust store and the trust policy: signature,
/// manifest, signer rules, revocation, expiry, minimum version and rollback, files. The
/// plugin's version mark is raised (see [`crate::trust::rules`]) only once every file verified.
/// `danger` is the policy's weakenings (only `expired_plugins_warn_only` acts here).
pub(crate) fn verify_dir(
    dir: &PluginDir,
    trust: &TrustStore,
    limits: &Limits,
    policy: &TrustPolicy,
    danger: &Danger,
) -> Result<Verified<Bundle>, VerifyError> {
    verify_dir_at(dir, trust, limits, policy, danger, &mut Progress::new())
}

/// How far verification got: the step it is in and, once the authentic manifest parsed,
/// whose release it is (so a refusal after that can name the plugin as its manifest does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The step verification is in; after an error, the step that refused.
    pub(crate) stage: Stage,
    /// The signed manifest's name and version, once it parsed.
    pub(crate) release: Option<(String, String)>,
}

impl Progress {
    /// Before the first step: locating the directory.
    pub(crate) fn new() -> Self {
        Progress {
            stage: Stage::Locate,
            release: None,
        }
    }
}

/// [`verify_dir`], keeping in `at` how far it got: after an error, the step that refused
/// (whatever the error's type: a symlink met while listing files is `Digests`) and, past
/// the manifest, whose release it was.
pub(crate) fn verify_dir_at(
    dir: &PluginDir,
    trust: &TrustStore,
    limits: &Limits,
    policy: &TrustPolicy,
    danger: &Danger,
    at: &mut Progress,
) -> Result<Verified<Bundle>, VerifyError> {
    at.stage = Stage::Manifest;
    let manifest_bytes = dir
        .read_small(MANIFEST_FILE_NAME, limits.manifest_bytes)?
        .ok_or(ManifestError::Missing)?;
    let signature_bytes = dir.read_small(SIGNATURE_FILE_NAME, limits.signature_bytes)?;
    let authentic = verify_manifest(manifest_bytes, signature_bytes.as_deref(), trust)?;
    let manifest = Manifest::parse(&authentic, limits.files)?;
    at.release = Some((manifest.name().to_owned(), manifest.version().to_string()));
    at.stage = Stage::Trust;
    policy.check(trust, &manifest, authentic.signers(), danger)?;
    at.stage = Stage::Digests;

    let dir_path = dir.path().to_path_buf();
    let present = content_files(dir, limits)?;
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    let listed: BTreeSet<&str> = manifest.files().iter().map(|f| f.path.as_str()).collect();
    if let Some(extra) = present.difference(&listed).next() {
        return Err(IntegrityError::UnlistedFile {
            dir: dir_path,
            file: (*extra).to_owned(),
        }
        .into());
    }
    if let Some(missing) = listed.difference(&present).next() {
        return Err(IntegrityError::MissingFile {
            dir: dir_path,
            file: (*missing).to_owned(),
        }
        .into());
    }

    let mut library = None;
    for entry in manifest.files() {
        let is_library = entry.path == manifest.library();
        let cap = file_cap(limits, is_library);
        let file = dir.open_file(&entry.path, cap)?;
        if file.size() != entry.size {
            return Err(IntegrityError::SizeMismatch {
                dir: dir_path,
                file: entry.path.clone(),
                expected: entry.size,
                actual: file.size(),
            }
            .into());
        }
        let FileDigest {
            sha256: digest,
            len: read,
        } = if is_library && (1..=HELD_MAX).contains(&entry.size) {
            // `entry.size` is at most `HELD_MAX` here, and `digest_file` reads at most one
            // byte past it (then refuses the file as grown): the buffer is sized once.
            let room = usize::try_from(entry.size.saturating_add(1)).unwrap_or(0);
            let mut held = Vec::with_capacity(room);
            let out = digest_file(file, entry.size, Some(&mut held))?;
            library = Some(VerifiedBytes::Held(held));
            out
        } else if is_library {
            let mut builder = SealedBuilder::new(manifest.name()).map_err(IntegrityError::Seal)?;
            let out = digest_file(file, entry.size, Some(&mut builder))?;
            library = Some(VerifiedBytes::Sealed(
                builder.seal().map_err(IntegrityError::Seal)?,
            ));
            out
        } else {
            digest_file(file, entry.size, None)?
        };
        if read != entry.size {
            return Err(IntegrityError::SizeMismatch {
                dir: dir_path,
                file: entry.path.clone(),
                expected: entry.size,
                actual: read,
            }
            .into());
        }
        if digest != entry.sha256 {
            return Err(IntegrityError::HashMismatch {
                dir: dir_path,
                file: entry.path.clone(),
                expected: hex_digest(&entry.sha256),
                actual: hex_digest(&digest),
            }
            .into());
        }
    }
    // The manifest parser guarantees the library is listed, and every listed file was read.
    let library =
        library.ok_or_else(|| ManifestError::LibraryNotListed(manifest.library().to_owned()))?;
    at.stage = Stage::VersionMark;
    policy.record(&manifest)?;
    tracing::debug!(
        plugin = manifest.name(),
        dir = %crate::base::escape::Escaped(dir_path.display()),
        "verified"
    );
    Ok(Verified(Bundle {
        path: dir_path,
        manifest,
        signers: authentic.signers().to_vec(),
        library,
    }))
}
