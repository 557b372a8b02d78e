//! The artifact format: how a signed plugin directory is laid out as an OCI image manifest,
//! and the checks a pulled manifest passes before any blob is fetched.
//!
//! - the manifest: `mediaType` [`OCI_MANIFEST`], `artifactType` [`ARTIFACT_TYPE`];
//! - its config: a blob of media type [`ARTIFACT_TYPE`] holding `{"name", "version"}`
//!   (unsigned: a label for people browsing a registry; the pull never trusts it);
//! - one layer per file of the plugin directory (`plugin.json`, `plugin.json.sig` and
//!   every file the signed manifest lists), media type [`FILE_MEDIA_TYPE`], its relative
//!   path in the annotation [`TITLE`].
//!
//! The wire types are this crate's own (`deny_unknown_fields`), not `oci_client`'s: the
//! push must know the exact bytes it sends (their SHA-256 is the digest it prints), and the
//! pull must refuse what it does not understand rather than ignore it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::base::settings::Limits;
use crate::error::FleetError;
use crate::fleet::reference::is_sha256_digest;
use crate::trust::signature::{MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME};

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The artifact type of a skillgate plugin, and the media type of its config blob.
pub const ARTIFACT_TYPE: &str = "application/vnd.skillgate.plugin.v1+json";
/// The media type of each file's layer.
pub const FILE_MEDIA_TYPE: &str = "application/vnd.skillgate.plugin.file.v1";
/// The annotation holding a layer's relative file name.
pub const TITLE: &str = "org.opencontainers.image.title";

/// The largest OCI manifest read: four times `limits.manifest_bytes` (it lists the same
/// files as the signed `plugin.json`, with a descriptor each).
pub fn manifest_bound(limits: &Limits) -> u64 {
    limits.manifest_bytes.saturating_mul(4)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WireManifest {
    pub(crate) schema_version: u32,
    pub(crate) media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) artifact_type: Option<String>,
    pub(crate) config: WireDescriptor,
    pub(crate) layers: Vec<WireDescriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WireDescriptor {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) annotations: Option<BTreeMap<String, String>>,
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A blob to push: its bytes and descriptor.
pub(crate) struct Blob {
    pub(crate) bytes: Vec<u8>,
    pub(crate) descriptor: WireDescriptor,
}

impl Blob {
    fn new(bytes: Vec<u8>, media_type: &str, title: Option<&str>) -> Self {
        let descriptor = WireDescriptor {
            media_type: media_type.to_owned(),
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
            annotations: title.map(|t| BTreeMap::from([(TITLE.to_owned(), t.to_owned())])),
        };
        Blob { bytes, descriptor }
    }
}

/// What a push sends: the config, one blob per file, and the manifest's exact bytes.
pub(crate) struct Packed {
    pub(crate) config: Blob,
    pub(crate) layers: Vec<Blob>,
    pub(crate) manifest: Vec<u8>,
}

/// Packs `files` (relative path, bytes) with the config `{name, version}`.
pub(crate) fn pack(
    name: &str,
    version: &str,
    files: Vec<(String, Vec<u8>)>,
) -> Result<Packed, serde_json::Error> {
    let config = serde_json::to_vec(&serde_json::json!({ "name": name, "version": version }))?;
    let config = Blob::new(config, ARTIFACT_TYPE, None);
    let layers: Vec<Blob> = files
        .into_iter()
        .map(|(title, bytes)| Blob::new(bytes, FILE_MEDIA_TYPE, Some(&title)))
        .collect();
    let manifest = WireManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.to_owned(),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: config.descriptor.clone(),
        layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations: None,
    };
    Ok(Packed {
        config,
        manifest: serde_json::to_vec(&manifest)?,
        layers,
    })
}

/// One file of a pulled release, as its manifest declares it (checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    /// The relative path (checked: no absolute path, no `.`/`..`/empty component).
    pub(crate) title: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    /// The most bytes this file may hold under the policy.
    pub(crate) cap: u64,
}

/// Parses a pulled manifest (its bytes already matched its digest) and checks everything
/// that can be checked before a blob is fetched: media types, one layer per file, each
/// title a clean relative path given once, the count within `limits.files` (+2 for the
/// manifest and signature), each declared size within its limit.
pub(crate) fn layers(
    digest: &str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Vec<Layer>, FleetError> {
    let bad = |reason: String| FleetError::Manifest {
        digest: digest.to_owned(),
        reason,
    };
    let m: WireManifest =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not an OCI manifest: {e}")))?;
    if m.schema_version != 2 || m.media_type != OCI_MANIFEST {
        return Err(bad(format!(
            "schemaVersion {} mediaType {:?}, expected 2 and {OCI_MANIFEST}",
            m.schema_version, m.media_type
        )));
    }
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) || m.config.media_type != ARTIFACT_TYPE {
        return Err(bad(format!(
            "not a skillgate plugin (artifactType {:?}, config {:?}; expected {ARTIFACT_TYPE})",
            m.artifact_type, m.config.media_type
        )));
    }
    let limit = limits.files.saturating_add(2);
    if m.layers.len() > limit {
        return Err(FleetError::TooManyLayers {
            count: m.layers.len(),
            limit,
        });
    }
    let any_cap = limits.library_bytes.max(limits.file_bytes);
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(m.layers.len());
    for layer in m.layers {
        let title = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(TITLE))
            .cloned()
            .unwrap_or_default();
        let refuse = |reason| FleetError::Layer {
            title: title.clone(),
            reason,
        };
        if layer.media_type != FILE_MEDIA_TYPE {
            return Err(refuse(
                "media type is not application/vnd.skillgate.plugin.file.v1",
            ));
        }
        check_title(&title).map_err(refuse)?;
        if !is_sha256_digest(&layer.digest) {
            return Err(refuse("digest is not sha256: and 64 lowercase hex digits"));
        }
        if !seen.insert(title.clone()) {
            return Err(refuse("given twice"));
        }
        // Which file is the library is known only once plugin.json verified; until then
        // every other file may be as large as the larger of the two limits, and the
        // verification applies the exact one.
        let cap = match title.as_str() {
            MANIFEST_FILE_NAME => limits.manifest_bytes,
            SIGNATURE_FILE_NAME => limits.signature_bytes,
            _ => any_cap,
        };
        if layer.size > cap {
            return Err(FleetError::BlobTooLarge {
                file: title,
                size: layer.size,
                limit: cap,
            });
        }
        out.push(Layer {
            title,
            digest: layer.digest,
            size: layer.size,
            cap,
        });
    }
    if !seen.contains(MANIFEST_FILE_NAME) {
        return Err(bad(format!("no layer titled {MANIFEST_FILE_NAME}")));
    }
    Ok(out)
}

/// A layer title must be a relative path of clean components.
fn check_title(title: &str) -> Result<(), &'static str> {
    if title.is_empty() {
        return Err("no org.opencontainers.image.title annotation");
    }
    if title.starts_with('/') {
        return Err("absolute path");
    }
    if title.len() > 4096 || title.contains('\0') || title.contains('\\') {
        return Err("longer than 4096 bytes, or holds NUL or '\\'");
    }
    for c in title.split('/') {
        match c {
            "" => return Err("empty path component"),
            "." | ".." => return Err("'.' or '..' component"),
            c if c.len() > 255 => return Err("component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    fn manifest_with(titles: &[&str], size: u64) -> Vec<u8> {
        let files = titles
            .iter()
            .map(|t| ((*t).to_owned(), vec![0u8; 4]))
            .collect();
        let mut m: serde_json::Value =
            serde_json::from_slice(&pack("p", "1.0.0", files).unwrap().manifest).unwrap();
        for l in m["layers"].as_array_mut().unwrap() {
            l["size"] = size.into();
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn titles_checked_before_any_fetch() {
        let l = Limits::default();
        let ok = layers("d", &manifest_with(&["plugin.json", "lib/x.so"], 4), &l).unwrap();
        assert_eq!(ok.len(), 2);
        for (titles, reason) in [
            (&["plugin.json", "../x"][..], "'.' or '..' component"),
            (&["plugin.json", "/etc/x"][..], "absolute path"),
            (&["plugin.json", "a//b"][..], "empty path component"),
            (&["plugin.json", "a", "a"][..], "given twice"),
        ] {
            let e = layers("d", &manifest_with(titles, 4), &l).unwrap_err();
            assert!(
                matches!(e, FleetError::Layer { reason: r, .. } if r == reason),
                "{titles:?}: {e:?}"
            );
        }
        let e = layers("d", &manifest_with(&["x.so"], 4), &l).unwrap_err();
        assert!(matches!(e, FleetError::Manifest { .. }), "{e:?}");
    }

    #[test]
    fn declared_sizes_bounded() {
        let l = Limits::default();
        let big = l.library_bytes.max(l.file_bytes) + 1;
        let e = layers("d", &manifest_with(&["plugin.json", "x.so"], big), &l).unwrap_err();
        // plugin.json is checked first, against its own (smaller) limit.
        assert!(
            matches!(e, FleetError::BlobTooLarge { ref file, limit, .. } if file == "plugin.json" && limit == l.manifest_bytes),
            "{e:?}"
        );
    }

    #[test]
    fn foreign_artifacts_refused() {
        let mut m: serde_json::Value =
            serde_json::from_slice(&manifest_with(&["plugin.json"], 4)).unwrap();
        m["artifactType"] = "application/vnd.other".into();
        let e = layers("d", &serde_json::to_vec(&m).unwrap(), &Limits::default()).unwrap_err();
        assert!(matches!(e, FleetError::Manifest { .. }), "{e:?}");
        m["artifactType"] = ARTIFACT_TYPE.into();
        m["extra"] = 1.into();
        let e = layers("d", &serde_json::to_vec(&m).unwrap(), &Limits::default()).unwrap_err();
        assert!(matches!(e, FleetError::Manifest { .. }), "{e:?}");
    }
}
