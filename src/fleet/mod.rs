//! Plugins for a fleet: publish a signed plugin directory to an OCI registry, and install
//! one from a registry (or a mirrored OCI image-layout directory) into a trusted root.
//!
//! - [`freshness`] asks a TUF repository whether a release is current; [`pull`] asks it
//!   before installing when the policy has a `freshness` section; [`publish`] is the
//!   operator's side (what `skill-sign tuf init` and `skill-sign tuf publish` run);
//! - [`push`] (what `skill-sign push` runs) refuses a directory that is not a signed plugin
//!   that verifies, then packs it as an OCI artifact (see [`artifact`]'s media types) and
//!   returns the manifest digest;
//! - [`pull`] (what `skillgate pull` runs) resolves a tag to a digest, fetches the
//!   manifest and each file into a staging directory beside the root with every size
//!   bounded and every digest checked while streaming, verifies the staged directory by the
//!   code `skillgate verify` runs, and only then renames it into the root (see
//!   [`install`]'s steps; a refusal leaves the root untouched).
//!
//! The registry protocol is `oci-client`'s (see [`oci`]), except the manifest HEAD and GET,
//! made with `reqwest` (the client `oci-client` uses) so that a manifest is bounded while it
//! is read; nothing here writes HTTP by hand.
//! The API is synchronous: each call runs the client on a runtime of its own on a thread of
//! its own, so it can be called from a host's async code as well as from plain threads.
//!
//! What each step answers: a registry (or anyone between it and the host) that serves
//! other bytes than were pushed is caught by the digests (manifest and blobs) before the
//! signature is even looked at; one that serves a huge manifest or blob is cut off at the
//! policy's limits; one that serves a different signed release than the tag named before
//! is caught by the rollback mark (and by the TUF freshness check where the policy has
//! one); a pull that breaks off leaves nothing in the root. The signature check itself is
//! the local one: a registry is never trusted for authenticity.

pub mod artifact;
pub mod freshness;
pub mod install;
pub mod mirror;
pub mod oci;
pub mod publish;
pub mod reference;
mod source;

use std::path::{Path, PathBuf};

use crate::error::{Error, FleetError, ReferenceError};
use crate::trust::signature::{MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME};
use crate::trust::store::TrustStore;

pub use artifact::{ARTIFACT_TYPE, FILE_MEDIA_TYPE, OCI_MANIFEST, TITLE, manifest_bound};
pub use install::{Pulled, staging_base};
pub use mirror::{Mirrored, copy_metadata, mirror};
pub use reference::{MAX_REFERENCE_LEN, Reference, Selector};

/// Installs the release `reference` names (`oci://REGISTRY/REPO:TAG`,
/// `oci://REGISTRY/REPO@sha256:…`, or `oci-layout:DIR:TAG` / `oci-layout:DIR@sha256:…`)
/// into `root` as `root/<signed name>`, after the verification `gate` runs on a local
/// directory (its trust store, policy, limits and rollback marks). `root` must exist; it
/// need not be one of the policy's trusted roots, though a host loads from those.
///
/// ```no_run
/// # fn main() -> Result<(), skillgate::Error> {
/// use skillgate::{Gate, Policy};
/// let gate = Gate::new(Policy::from_file("policy/default.json")?)?;
/// let pulled = skillgate::fleet::pull(&gate, "oci://registry.example/plugins/echo:1.2.0", "skills".as_ref())?;
/// println!("{} {}", pulled.path.display(), pulled.digest);
/// # Ok(()) }
/// ```
pub fn pull(gate: &crate::Gate, reference: &str, root: &Path) -> Result<Pulled, Error> {
    install::pull(gate, reference, root)
}

/// Parses `reference`, naming it in the error.
pub(crate) fn parse_reference(reference: &str) -> Result<Reference, FleetError> {
    reference
        .parse()
        .map_err(|source: ReferenceError| FleetError::Reference {
            reference: reference.to_owned(),
            source,
        })
}

/// What [`push`] published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pushed {
    /// The manifest digest (`sha256:…`): what a host pins.
    pub digest: String,
    /// The signed manifest's name.
    pub name: String,
    /// The signed manifest's version.
    pub version: String,
    /// The OCI image manifest's exact bytes, as pushed (they hash to `digest`): the content
    /// of the release's TUF target (`skill-sign push --manifest-out`, see
    /// [`publish::publish`]).
    pub manifest: Vec<u8>,
}

/// Publishes the signed plugin directory `dir` to `reference` (`oci://REGISTRY/REPO:TAG`):
/// first verifies it against `trust` (any one key suffices; refused as
/// [`FleetError::Unsigned`] otherwise), then pushes the config, one blob per file
/// (`plugin.json`, `plugin.json.sig` and every file the signed manifest lists) and the
/// manifest. Each file is read into memory once to be sent (an author's tool; plugins are
/// bounded by the default limits).
pub fn push(dir: &Path, trust: &TrustStore, reference: &str) -> Result<Pushed, Error> {
    let parsed = parse_reference(reference)?;
    let Reference::Registry {
        registry,
        repository,
        version: tag @ Selector::Tag(_),
    } = &parsed
    else {
        return Err(FleetError::Reference {
            reference: reference.to_owned(),
            source: ReferenceError::TagOrDigest,
        }
        .into());
    };
    let verified =
        crate::sign::verify_plugin_dir(dir, trust, &crate::Limits::default()).map_err(|e| {
            FleetError::Unsigned {
                dir: dir.to_path_buf(),
                error: Box::new(e.into()),
            }
        })?;
    let manifest = verified.manifest();
    let (name, version) = (manifest.name().to_owned(), manifest.version().to_string());
    let mut titles = vec![
        MANIFEST_FILE_NAME.to_owned(),
        SIGNATURE_FILE_NAME.to_owned(),
    ];
    titles.extend(manifest.files().iter().map(|f| f.path.clone()));
    let read = |title: String| {
        let path: PathBuf = dir.join(&title);
        std::fs::read(&path)
            .map(|bytes| (title, bytes))
            .map_err(|source| FleetError::Staging { path, source })
    };
    let files = titles
        .into_iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let packed = artifact::pack(&name, &version, files).map_err(|e| FleetError::Manifest {
        digest: String::new(),
        reason: format!("cannot serialize: {e}"),
    })?;
    let digest = artifact::sha256_digest(&packed.manifest);
    let remote = oci::Remote::new(registry, repository)?;
    let tag = tag.clone();
    oci::on_own_runtime(|| async {
        remote
            .push_blob(&packed.config.bytes, &packed.config.descriptor.digest)
            .await?;
        for layer in &packed.layers {
            remote
                .push_blob(&layer.bytes, &layer.descriptor.digest)
                .await?;
        }
        remote.push_manifest(&tag, &packed.manifest).await
    })?;
    crate::audit::pushed(
        &crate::audit::Subject {
            plugin: &name,
            version: Some(&version),
            path: Some(dir),
            sha256: None,
        },
        reference,
        &digest,
    );
    Ok(Pushed {
        digest,
        name,
        version,
        manifest: packed.manifest,
    })
}
