//! Where a release is read from: a registry ([`Remote`]) or an OCI image-layout directory
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), with the same three operations and
//! the same checks, so an air-gapped site installs from a mirrored layout exactly as a
//! connected one installs from its registry.
//!
//! A layout is read with plain files: its size is known before a byte is read (`fstat`),
//! blobs are opened without following symlinks, and `index.json` is bounded.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::FleetError;
use crate::fleet::oci::{HashingSink, Remote, check_manifest};
use crate::fleet::reference::{Reference, Selector, is_sha256_digest};

/// The largest `index.json` read from a layout.
pub(crate) const MAX_INDEX_BYTES: u64 = 4 * 1024 * 1024;
/// The annotation naming a tag in a layout's `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(crate) enum Source {
    Remote(Remote),
    Layout(PathBuf),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireIndex {
    #[serde(default)]
    pub(crate) manifests: Vec<IndexEntry>,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexEntry {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Source {
    pub(crate) fn open(reference: &Reference) -> Result<Self, FleetError> {
        Ok(match reference {
            Reference::Registry {
                registry,
                repository,
                ..
            } => Source::Remote(Remote::new(registry, repository)?),
            Reference::Layout { dir, .. } => Source::Layout(dir.clone()),
        })
    }

    fn name(&self) -> String {
        match self {
            Source::Remote(r) => r.registry().to_owned(),
            Source::Layout(dir) => dir.display().to_string(),
        }
    }

    fn failed(&self, step: &'static str, e: impl std::fmt::Display) -> FleetError {
        FleetError::Registry {
            registry: self.name(),
            step,
            detail: e.to_string(),
        }
    }

    /// The manifest digest `version` names (`bound`: see [`Remote::resolve`]).
    pub(crate) async fn resolve(
        &self,
        version: &Selector,
        bound: u64,
    ) -> Result<String, FleetError> {
        match (self, version) {
            (Source::Remote(r), v) => r.resolve(v, bound).await,
            (Source::Layout(_), Selector::Digest(d)) => Ok(d.clone()),
            (Source::Layout(dir), Selector::Tag(tag)) => {
                let index = read_index(dir).map_err(|e| self.failed("read index.json", e))?;
                index
                    .manifests
                    .iter()
                    .rev()
                    .find(|m| {
                        m.annotations
                            .as_ref()
                            .and_then(|a| a.get(REF_NAME))
                            .is_some_and(|n| n == tag)
                    })
                    .map(|m| m.digest.clone())
                    .filter(|d| is_sha256_digest(d))
                    .ok_or_else(|| {
                        self.failed("resolve tag", format!("no manifest tagged {tag:?}"))
                    })
            }
        }
    }

    /// The manifest's bytes, checked against `digest` and `bound`.
    pub(crate) async fn manifest(&self, digest: &str, bound: u64) -> Result<Vec<u8>, FleetError> {
        match self {
            Source::Remote(r) => r.manifest(digest, bound).await,
            Source::Layout(dir) => {
                let mut file =
                    open_blob(dir, digest).map_err(|e| self.failed("open manifest", e))?;
                let size = file
                    .metadata()
                    .map_err(|e| self.failed("open manifest", e))?
                    .len();
                if size > bound {
                    return Err(FleetError::ManifestTooLarge {
                        digest: digest.to_owned(),
                        size,
                        limit: bound,
                    });
                }
                let mut bytes = Vec::new();
                file.by_ref()
                    .take(bound.saturating_add(1))
                    .read_to_end(&mut bytes)
                    .map_err(|e| self.failed("read manifest", e))?;
                check_manifest(digest, &bytes, bound)?;
                Ok(bytes)
            }
        }
    }

    /// Streams a blob into `out` (see [`Remote::blob_to`]).
    pub(crate) async fn blob_to(
        &self,
        file: &str,
        digest: &str,
        size: u64,
        out: &mut impl std::io::Write,
    ) -> Result<(), FleetError> {
        match self {
            Source::Remote(r) => r.blob_to(file, digest, size, out).await,
            Source::Layout(dir) => {
                let blob = open_blob(dir, digest).map_err(|e| self.failed("open blob", e))?;
                let mut sink = HashingSink::new(file, digest, size);
                let mut reader = blob.take(size.saturating_add(1));
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| self.failed("read blob", e))?;
                    let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                        break;
                    };
                    sink.write(chunk, out)?;
                }
                sink.finish()
            }
        }
    }
}

/// `dir/blobs/sha256/<hex>`, opened read-only without following a symlink.
pub(crate) fn open_blob(dir: &Path, digest: &str) -> std::io::Result<std::fs::File> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|_| is_sha256_digest(digest))
        .ok_or_else(|| std::io::Error::other(format!("not a sha256 digest: {digest:?}")))?;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("blobs/sha256").join(hex))
}

/// A layout's `index.json`, bounded.
pub(crate) fn read_index(dir: &Path) -> std::io::Result<WireIndex> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("index.json"))?;
    let mut bytes = Vec::new();
    file.take(MAX_INDEX_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(std::io::Error::other("index.json is larger than 4 MiB"));
    }
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}
