//! Mirror: copy releases, digest for digest, from one registry (or layout directory) to
//! another registry or to an OCI image-layout directory, so a site without network access
//! installs from its own copy with the same checks (`pull` treats `oci-layout:DIR:TAG`
//! exactly as a registry).
//!
//! Each release's manifest is fetched and checked as a pull checks it (digest, bound,
//! skillgate artifact, clean titles, declared sizes within the limits given); each blob
//! streams through a temporary file, hashed and cut off past its declared size, then goes
//! to the destination (a registry push holds one blob in memory at a time; a layout gets
//! the file renamed into `blobs/sha256/`). The manifest's bytes are copied unchanged, so
//! its digest, and with it what a TUF repository lists, is the same on both sides.
//! Nothing is verified against a trust store here: the hosts installing from the mirror do
//! that.

use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::base::settings::Limits;
use crate::error::{Error, FleetError};
use crate::fleet::artifact::{OCI_MANIFEST, WireManifest, hex, layers, manifest_bound};
use crate::fleet::oci::{Remote, on_own_runtime};
use crate::fleet::reference::{Reference, Selector, is_sha256_digest};
use crate::fleet::source::{IndexEntry, REF_NAME, Source, WireIndex, read_index};

/// One release copied by [`mirror`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mirrored {
    /// The tag or digest asked for.
    pub release: String,
    /// Its manifest digest (the same at the source and the destination).
    pub digest: String,
}

/// Where a mirror writes.
enum Dest {
    Remote(Remote),
    Layout(PathBuf),
}

/// Copies each of `releases` (tags or `sha256:` digests) from `src` to `dst`.
///
/// `src` is `oci://REGISTRY/REPO` or `oci-layout:DIR`; `dst` the same forms (a layout
/// directory is created if missing, with its `oci-layout` file and `index.json`; a tag is
/// recorded in `index.json` as `org.opencontainers.image.ref.name`). `limits` bound what is
/// read, as a pull's policy does.
pub fn mirror(
    src: &str,
    dst: &str,
    releases: &[String],
    limits: &Limits,
) -> Result<Vec<Mirrored>, Error> {
    let mut out = Vec::with_capacity(releases.len());
    for release in releases {
        let selector = if release.starts_with("sha256:") {
            format!("@{release}")
        } else {
            format!(":{release}")
        };
        let from = super::parse_reference(&format!("{src}{selector}"))?;
        let to = super::parse_reference(&format!("{dst}{selector}"))?;
        let digest = copy(&from, &to, limits)?;
        out.push(Mirrored {
            release: release.clone(),
            digest,
        });
    }
    Ok(out)
}

fn copy(from: &Reference, to: &Reference, limits: &Limits) -> Result<String, FleetError> {
    let source = Source::open(from)?;
    let dest = match to {
        Reference::Registry {
            registry,
            repository,
            ..
        } => Dest::Remote(Remote::new(registry, repository)?),
        Reference::Layout { dir, .. } => Dest::Layout(dir.clone()),
    };
    let selector = from.version().clone();
    let tag = match to.version() {
        Selector::Tag(t) => Some(t.clone()),
        Selector::Digest(_) => None,
    };
    let limits = limits.clone();
    on_own_runtime(move || async move {
        let bound = manifest_bound(&limits);
        let digest = source.resolve(&selector, bound).await?;
        let bytes = source.manifest(&digest, bound).await?;
        let planned = layers(&digest, &bytes, &limits)?;
        let manifest: WireManifest =
            serde_json::from_slice(&bytes).map_err(|e| FleetError::Manifest {
                digest: digest.clone(),
                reason: e.to_string(),
            })?;
        let config = &manifest.config;
        if !is_sha256_digest(&config.digest) {
            return Err(FleetError::Manifest {
                digest: digest.clone(),
                reason: "config digest is not sha256: and 64 lowercase hex digits".into(),
            });
        }
        if config.size > limits.manifest_bytes {
            return Err(FleetError::BlobTooLarge {
                file: "config".into(),
                size: config.size,
                limit: limits.manifest_bytes,
            });
        }
        let mut blobs = vec![("config".to_owned(), config.digest.clone(), config.size)];
        blobs.extend(planned.into_iter().map(|l| (l.title, l.digest, l.size)));
        for (label, blob, size) in &blobs {
            dest.copy_blob(&source, label, blob, *size).await?;
        }
        dest.put_manifest(&digest, &bytes, tag.as_deref()).await?;
        Ok(digest)
    })
}

/// Creates the layout's skeleton if missing: `oci-layout`, `index.json`, `blobs/sha256/`.
fn make_layout(dir: &Path) -> Result<(), FleetError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FleetError::Staging { path, source }
    };
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let marker = dir.join("oci-layout");
    if !marker.exists() {
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&marker))?;
    }
    let index = dir.join("index.json");
    if !index.exists() {
        write_index(dir, &[])?;
    }
    Ok(())
}

fn write_index(dir: &Path, manifests: &[IndexEntry]) -> Result<(), FleetError> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let path = dir.join("index.json");
    let io = |source| FleetError::Staging {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(&index).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = dir.join(".index.json.tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// `dir/blobs/sha256/<hex>`.
fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap_or(digest))
}

impl Dest {
    /// Streams one blob from `source` to the destination: into memory for a registry
    /// (one blob at a time, within its declared size), through a temporary file renamed
    /// into `blobs/sha256/` for a layout.
    async fn copy_blob(
        &self,
        source: &Source,
        label: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), FleetError> {
        match self {
            Dest::Remote(remote) => {
                let mut bytes = Vec::new();
                source.blob_to(label, digest, size, &mut bytes).await?;
                remote.push_blob(&bytes, digest).await
            }
            Dest::Layout(dir) => {
                make_layout(dir)?;
                let final_path = blob_path(dir, digest);
                let mut random = [0u8; 8];
                OsRng.fill_bytes(&mut random);
                let tmp = dir
                    .join("blobs/sha256")
                    .join(format!(".tmp-{}", hex(&random)));
                let io = |source| FleetError::Staging {
                    path: tmp.clone(),
                    source,
                };
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(io)?;
                let copied = source.blob_to(label, digest, size, &mut file).await;
                let done = copied.and_then(|()| {
                    file.sync_all().map_err(io)?;
                    std::fs::rename(&tmp, &final_path).map_err(io)
                });
                if done.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                done
            }
        }
    }

    async fn put_manifest(
        &self,
        digest: &str,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<(), FleetError> {
        match self {
            Dest::Remote(remote) => {
                let selector = match tag {
                    Some(t) => Selector::Tag(t.to_owned()),
                    None => Selector::Digest(digest.to_owned()),
                };
                remote.push_manifest(&selector, bytes).await
            }
            Dest::Layout(dir) => {
                let path = blob_path(dir, digest);
                std::fs::write(&path, bytes).map_err(|source| FleetError::Staging {
                    path: path.clone(),
                    source,
                })?;
                let index: WireIndex = read_index(dir).map_err(|source| FleetError::Staging {
                    path: dir.join("index.json"),
                    source,
                })?;
                let mut entries: Vec<IndexEntry> = index
                    .manifests
                    .into_iter()
                    .filter(|e| {
                        let named = e.annotations.as_ref().and_then(|a| a.get(REF_NAME));
                        match tag {
                            Some(t) => named.is_none_or(|n| n != t),
                            None => !(named.is_none() && e.digest == digest),
                        }
                    })
                    .collect();
                entries.push(IndexEntry {
                    media_type: OCI_MANIFEST.to_owned(),
                    digest: digest.to_owned(),
                    size: bytes.len() as u64,
                    annotations: tag.map(|t| {
                        std::collections::BTreeMap::from([(REF_NAME.to_owned(), t.to_owned())])
                    }),
                });
                write_index(dir, &entries)
            }
        }
    }
}

/// Copies a TUF metadata directory (its regular files, recursively; a symlink or special
/// file is refused) to `to`, created if missing. The checks are made at install, by the
/// freshness check of each host; this only carries the files across the air gap.
pub fn copy_metadata(from: &Path, to: &Path) -> Result<usize, Error> {
    fn walk(from: &Path, to: &Path, copied: &mut usize) -> Result<(), FleetError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FleetError::Staging { path, source }
        };
        std::fs::create_dir_all(to).map_err(io(to))?;
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io(&path))?;
            let target = to.join(entry.file_name());
            if kind.is_dir() {
                walk(&path, &target, copied)?;
            } else if kind.is_file() {
                std::fs::copy(&path, &target).map_err(io(&path))?;
                *copied = copied.saturating_add(1);
            } else {
                return Err(FleetError::Staging {
                    path,
                    source: std::io::Error::other("not a regular file or directory"),
                });
            }
        }
        Ok(())
    }
    let mut copied = 0;
    walk(from, to, &mut copied)?;
    Ok(copied)
}
