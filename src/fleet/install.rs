//! Pull: from a reference to a verified plugin directory in a trusted root, or nothing.
//!
//! 1. **Resolve** a tag to a manifest digest (the digest is what is fetched, checked and
//!    recorded from then on: a tag moved mid-pull changes nothing).
//! 2. **Manifest**: its bytes must hash to that digest and stay within
//!    [`crate::fleet::manifest_bound`]; it must be a skillgate artifact whose layers are
//!    clean relative file names, given once, within the policy's file count, each declared
//!    size within the policy's limit for that file — all before any blob is fetched.
//! 3. **Stage**: each blob streams into a file of a staging directory *beside* the root
//!    (`<parent>/.<root name>.skillgate-staging/<random>/plugin/`, the random level mode
//!    0700, on the root's filesystem so the final rename is atomic), hashed as it comes and
//!    cut off past its declared size; a library never sits in memory whole. The staging
//!    directory is removed on every way out (a guard's `Drop`).
//! 4. **Freshness** (when the policy has a `freshness` section): the policy's TUF
//!    repository, loaded now with every expiry and version rule of TUF, must list the
//!    target `<name>/<version>` with exactly this manifest's SHA-256 and length
//!    ([`crate::fleet::freshness`]). The name and version asked about are read from the
//!    staged `plugin.json`; they only choose which target to look up, since the digest
//!    TUF vouches for covers every staged byte, and step 5 checks that the signed manifest
//!    names that same release. This runs *before* verification so that a release TUF does
//!    not list never raises the rollback mark.
//! 5. **Verify** the staged directory with exactly the code `skillgate verify` runs
//!    (`Gate::verify_and_inspect_beneath`): signature, manifest, trust rules, every
//!    file's size and SHA-256, no file the signed manifest does not list, the ELF checks,
//!    and the rollback mark (raised here, as a local verification raises it; an install
//!    that then fails leaves it raised, as a verified local copy would).
//! 6. **Install**: rename into `ROOT/<signed name>`. When that directory exists the two are
//!    swapped with one `renameat2(RENAME_EXCHANGE)` and the old release, now in staging, is
//!    removed: a loader resolving `ROOT/<name>` at any instant opens either the old
//!    directory or the new one, whole — never a mix, never nothing. (A loader that opened
//!    the old directory just before keeps reading the old release's files through its
//!    descriptor; they are removed beneath it, and a file it has not opened yet is then
//!    missing: that load fails as `MissingFile`/`NotFound` and a retry gets the new one.)
//!
//! A refusal at any step leaves the root as it was.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::base::freshness::FreshnessError;
use crate::base::settings::FreshnessSettings;
use crate::base::settings::Limits;
use crate::base::version::Version;
use crate::error::{Error, FleetError};
use crate::fleet::artifact::{Layer, hex, layers, manifest_bound};
use crate::fleet::freshness::{Freshness, target_name};
use crate::fleet::reference::{Reference, Selector};
use crate::fleet::source::Source;
use crate::gate::Gate;
use crate::trust::signature::MANIFEST_FILE_NAME;

/// What [`crate::fleet::pull`] installed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pulled {
    /// The installed plugin directory, `ROOT/<name>`.
    pub path: PathBuf,
    /// The manifest digest installed (`sha256:…`); for a tag, the digest it resolved to.
    pub digest: String,
    /// The signed manifest's name.
    pub name: String,
    /// The signed manifest's version.
    pub version: String,
}

/// The staging directory of one pull, removed on drop.
struct Staging {
    /// `<parent>/.<root>.skillgate-staging/<random>`.
    dir: PathBuf,
}

impl Staging {
    fn new(root: &Path) -> Result<Self, FleetError> {
        let staging_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FleetError::Staging { path, source }
        };
        let base = staging_base(root).map_err(staging_err(root))?;
        match std::fs::DirBuilder::new().mode(0o700).create(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(staging_err(&base)(e)),
        }
        let mut random = [0u8; 16];
        OsRng.fill_bytes(&mut random);
        let dir = base.join(hex(&random));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(staging_err(&dir))?;
        Ok(Staging { dir })
    }

    fn plugin(&self) -> PathBuf {
        self.dir.join("plugin")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                dir = %crate::base::escape::Escaped(self.dir.display()),
                error = %e,
                "cannot remove a pull's staging directory"
            );
        }
    }
}

/// The whole pull (see the module documentation).
pub(crate) fn pull(gate: &Gate, reference: &str, root: &Path) -> Result<Pulled, Error> {
    let parsed = super::parse_reference(reference)?;
    let limits = gate.policy().limits.clone();
    let staging = Staging::new(root)?;
    let plugin_dir = staging.plugin();
    let Fetched {
        digest,
        manifest_len,
    } = fetch(&parsed, &limits, &plugin_dir)?;
    let vouched = match gate.policy().freshness() {
        Some(settings) => Some(check_freshness(
            settings,
            &plugin_dir,
            &digest,
            manifest_len,
        )?),
        None => None,
    };

    let inspected = gate
        .verify_and_inspect_beneath(&staging.dir, &plugin_dir)
        .map_err(|e| FleetError::Verify {
            stage: e.stage,
            error: Box::new(e.error),
        })?;
    let manifest = inspected.bundle().manifest();
    let (name, version) = (manifest.name().to_owned(), manifest.version().to_string());
    if let Some(asked) = vouched
        && asked
            .as_ref()
            .is_none_or(|(n, v)| *n != name || v != manifest.version())
    {
        // The signed manifest names another release than the one TUF was asked about (or
        // none was asked about, the staged file naming none): whatever the two readers of
        // plugin.json disagree on, only a release TUF listed is installed.
        return Err(FreshnessError::NotListed {
            target: target_name(&name, manifest.version()),
        }
        .into());
    }
    drop(inspected);

    let dest = root.join(&name);
    install(&plugin_dir, &dest)?;
    let pulled = Pulled {
        path: dest,
        digest,
        name,
        version,
    };
    crate::audit::pulled(
        &crate::audit::Subject {
            plugin: &pulled.name,
            version: Some(&pulled.version),
            path: Some(&pulled.path),
            sha256: None,
        },
        reference,
        &pulled.digest,
    );
    Ok(pulled)
}

/// Step 4: asks the policy's TUF repository whether the staged release, named by its
/// `plugin.json`, is listed now with this manifest digest and length. Returns the name and
/// version it asked about, or `None` when the staged `plugin.json` names no release
/// (verification then refuses it, and step 5 refuses anything else).
fn check_freshness(
    settings: &FreshnessSettings,
    plugin_dir: &Path,
    digest: &str,
    manifest_len: u64,
) -> Result<Option<(String, Version)>, Error> {
    let Some((name, version)) = staged_release(plugin_dir)? else {
        return Ok(None);
    };
    Freshness::from_policy(settings)?.check(&name, &version, digest, manifest_len)?;
    Ok(Some((name, version)))
}

/// The `name` and `version` of the staged, not yet verified, `plugin.json` (its size was
/// bounded by the policy's `manifest_bytes` when it was staged), or `None` when it does not
/// have them.
fn staged_release(plugin_dir: &Path) -> Result<Option<(String, Version)>, Error> {
    #[derive(serde::Deserialize)]
    struct Release {
        name: String,
        version: String,
    }
    let path = plugin_dir.join(MANIFEST_FILE_NAME);
    let bytes = std::fs::read(&path).map_err(|source| FleetError::Staging {
        path: path.clone(),
        source,
    })?;
    Ok(serde_json::from_slice::<Release>(&bytes)
        .ok()
        .and_then(|r| Some((r.name, Version::parse(&r.version).ok()?))))
}

/// What steps 1 to 3 fetched.
struct Fetched {
    /// The manifest digest (`sha256:…`).
    digest: String,
    /// The manifest's length in bytes.
    manifest_len: u64,
}

/// Steps 1 to 3: resolve, fetch and check the manifest, stream every blob into `dir`
/// (created here).
fn fetch(reference: &Reference, limits: &Limits, dir: &Path) -> Result<Fetched, FleetError> {
    let source = Source::open(reference)?;
    let bound = manifest_bound(limits);
    let version = reference.version().clone();
    let dir = dir.to_path_buf();
    let limits = limits.clone();
    super::oci::on_own_runtime(move || async move {
        let digest = match &version {
            Selector::Digest(d) => d.clone(),
            Selector::Tag(_) => source.resolve(&version, bound).await?,
        };
        let bytes = source.manifest(&digest, bound).await?;
        let planned = layers(&digest, &bytes, &limits)?;
        make_dir(&dir)?;
        for layer in &planned {
            stage_layer(&source, &dir, layer).await?;
        }
        Ok(Fetched {
            digest,
            manifest_len: bytes.len() as u64,
        })
    })
}

fn make_dir(dir: &Path) -> Result<(), FleetError> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dir)
        .map_err(|source| FleetError::Staging {
            path: dir.to_path_buf(),
            source,
        })
}

/// Streams one layer into `dir/<title>`, creating its parent directories.
async fn stage_layer(source: &Source, dir: &Path, layer: &Layer) -> Result<(), FleetError> {
    let path = dir.join(&layer.title);
    if let Some(parent) = path.parent().filter(|p| *p != dir) {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(parent)
            .map_err(|source| FleetError::Staging {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    let staging = |source| FleetError::Staging {
        path: path.clone(),
        source,
    };
    // Titles were checked (no '..', not absolute), and the staging tree is this pull's own
    // 0700 directory: nothing else creates entries in it, so no symlink can be met.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(staging)?;
    source
        .blob_to(&layer.title, &layer.digest, layer.size, &mut file)
        .await?;
    file.sync_all().map_err(staging)?;
    Ok(())
}

/// Step 6: the verified directory becomes `dest`, atomically.
fn install(staged: &Path, dest: &Path) -> Result<(), FleetError> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let failed = |source: std::io::Error| FleetError::Install {
        path: dest.to_path_buf(),
        source,
    };
    // The staged files reach the disk before the name does.
    File::open(staged)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    match renameat_with(CWD, staged, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            renameat_with(CWD, staged, CWD, dest, RenameFlags::EXCHANGE)
                .map_err(|e| failed(e.into()))?;
            // `staged` now holds the old release; the staging guard removes it.
        }
        Err(e) => return Err(failed(e.into())),
    }
    if let Some(parent) = dest.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
    }
    Ok(())
}

/// Where the pulls into `root` stage: `<parent>/.<root name>.skillgate-staging` (each
/// pull in a random directory beneath it, removed when the pull ends; the base itself is
/// kept, empty, for the next pull).
pub fn staging_base(root: &Path) -> std::io::Result<PathBuf> {
    let root = std::fs::canonicalize(root)?;
    let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
        return Err(std::io::Error::other("the root has no parent directory"));
    };
    let mut base = std::ffi::OsString::from(".");
    base.push(name);
    base.push(".skillgate-staging");
    Ok(parent.join(base))
}
