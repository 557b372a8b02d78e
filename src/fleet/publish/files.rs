//! The files [`super::publish`] reads and writes: the releases directory
//! (`NAME/VERSION` entries, checked), the roles' previous versions in the metadata
//! directory (read with `tough`'s schema types), and the renames that put the new metadata
//! in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tough::schema::{Role, RoleType, Signed};

use crate::base::capped::{CappedError, Links, read_capped};
use crate::base::version::Version;
use crate::fleet::artifact::{ARTIFACT_TYPE, OCI_MANIFEST, WireManifest};

use super::error::PublishError;

/// The roles [`super::publish`] writes, in the order they are renamed into place: each one
/// only after the files it names.
pub(super) const ROLE_FILES: [(&str, RoleType); 3] = [
    ("targets.json", RoleType::Targets),
    ("snapshot.json", RoleType::Snapshot),
    ("timestamp.json", RoleType::Timestamp),
];

/// Largest manifest file read from a releases directory: the bound a host puts on a
/// manifest under the default limits ([`crate::fleet::manifest_bound`]).
fn max_manifest_bytes() -> u64 {
    crate::fleet::manifest_bound(&crate::Limits::default())
}

/// Renames what `tough` wrote in `stage` into `metadata`: any root file first, then
/// targets, snapshot, timestamp (each after what it names).
pub(super) fn move_into_place(stage: &Path, metadata: &Path) -> Result<(), PublishError> {
    let entries = std::fs::read_dir(stage).map_err(|source| PublishError::Write {
        path: stage.to_path_buf(),
        source,
    })?;
    let mut names: Vec<std::ffi::OsString> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    // Roles last, in ROLE_FILES order; other files (the root's `N.root.json`) before them.
    let rank = |name: &std::ffi::OsString| {
        ROLE_FILES
            .iter()
            .position(|(file, _)| name.as_os_str() == *file)
            .map_or(0, |at| at.saturating_add(1))
    };
    names.sort_by_key(rank);
    for name in names {
        let to = metadata.join(&name);
        std::fs::rename(stage.join(&name), &to)
            .map_err(|source| PublishError::Write { path: to, source })?;
    }
    Ok(())
}

pub(super) fn role_name(role: RoleType) -> &'static str {
    match role {
        RoleType::Root => "root",
        RoleType::Targets => "targets",
        RoleType::Snapshot => "snapshot",
        RoleType::Timestamp => "timestamp",
        RoleType::DelegatedTargets => "delegated targets",
    }
}

/// The version of role file `file` in `metadata`, if there is one; read with `tough`'s
/// schema (its signatures are not checked: only the number matters, to stay above it).
pub(super) fn previous_version(metadata: &Path, file: &str) -> Result<Option<u64>, PublishError> {
    let path = metadata.join(file);
    let Some(bytes) = read_previous(&path)? else {
        return Ok(None);
    };
    let parsed = match file {
        "targets.json" => parse_role::<tough::schema::Targets>(&bytes).map(|r| r.version()),
        "snapshot.json" => parse_role::<tough::schema::Snapshot>(&bytes).map(|r| r.version()),
        _ => parse_role::<tough::schema::Timestamp>(&bytes).map(|r| r.version()),
    };
    parsed
        .map(|v| Some(v.get()))
        .map_err(|detail| PublishError::Previous { path, detail })
}

/// The target names the previous `targets.json` in `metadata` lists (none if absent).
pub(super) fn previous_targets(metadata: &Path) -> Result<Vec<String>, PublishError> {
    let path = metadata.join("targets.json");
    let Some(bytes) = read_previous(&path)? else {
        return Ok(Vec::new());
    };
    let targets = parse_role::<tough::schema::Targets>(&bytes)
        .map_err(|detail| PublishError::Previous { path, detail })?;
    let mut names: Vec<String> = targets
        .targets
        .keys()
        .map(|name| name.raw().to_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn read_previous(path: &Path) -> Result<Option<Vec<u8>>, PublishError> {
    // tough's own bound on a metadata file it fetches.
    const MAX_METADATA: u64 = 10 * 1024 * 1024;
    match read_capped(path, MAX_METADATA, Links::Follow) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(CappedError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(PublishError::Previous {
            path: path.to_path_buf(),
            detail: crate::error::chain(&e).to_string(),
        }),
    }
}

pub(super) fn parse_role<T: Role + serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice::<Signed<T>>(bytes)
        .map(|s| s.signed)
        .map_err(|e| e.to_string())
}

/// Every release file under `dir`, checked: target name → manifest bytes.
pub(super) fn read_releases(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, PublishError> {
    let mut out = BTreeMap::new();
    for (name_path, name) in entries(dir)? {
        let name_kind = kind(&name_path)?;
        if !name_kind.is_dir() {
            return Err(bad(
                &name_path,
                "not a directory NAME (releases are NAME/VERSION files)",
            ));
        }
        for (path, version) in entries(&name_path)? {
            let target = target_name(&name, &version).map_err(|reason| bad(&path, reason))?;
            if !kind(&path)?.is_file() {
                return Err(bad(
                    &path,
                    "not a regular file (the release's OCI manifest)",
                ));
            }
            let bytes = read_manifest(&target, &path)?;
            out.insert(target, bytes);
        }
    }
    Ok(out)
}

fn bad(path: &Path, reason: &'static str) -> PublishError {
    PublishError::BadEntry {
        path: path.to_path_buf(),
        reason,
    }
}

/// The entries of `dir` with their names as UTF-8 (else [`PublishError::BadEntry`]).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, String)>, PublishError> {
    let io = |source| PublishError::Releases {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(bad(&path, "name is not UTF-8"));
        };
        out.push((path.clone(), name.to_owned()));
    }
    Ok(out)
}

/// The entry's own type (a symbolic link is not followed: it is neither file nor directory).
fn kind(path: &Path) -> Result<std::fs::FileType, PublishError> {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type())
        .map_err(|source| PublishError::Releases {
            path: path.to_path_buf(),
            source,
        })
}

/// The target name of release file `name/version`: `name` a plugin name, `version` a semver
/// version written as semver prints it (so the name is the one a host asks for).
fn target_name(name: &str, version: &str) -> Result<String, &'static str> {
    if !crate::base::name::is_plugin_name(name) {
        return Err(
            "NAME is not a plugin name (1 to 64 of [A-Za-z0-9._+-], not starting with '.')",
        );
    }
    let parsed = Version::parse(version).map_err(|_| "VERSION is not a semver version")?;
    if parsed.to_string() != version {
        return Err("VERSION is not written as semver prints it (the name a host asks for)");
    }
    Ok(crate::fleet::freshness::target_name(name, &parsed))
}

/// The manifest file's bytes, bounded, checked to be a skillgate plugin's OCI manifest.
fn read_manifest(target: &str, path: &Path) -> Result<Vec<u8>, PublishError> {
    let refused = |reason: String| PublishError::NotAManifest {
        target: target.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    let bytes = read_capped(path, max_manifest_bytes(), Links::Refuse)
        .map_err(|e| refused(crate::error::chain(&e).to_string()))?;
    let manifest: WireManifest =
        serde_json::from_slice(&bytes).map_err(|e| refused(e.to_string()))?;
    if manifest.media_type != OCI_MANIFEST
        || manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
    {
        return Err(refused(format!(
            "media type {:?} and artifact type {:?}, not {OCI_MANIFEST:?} and {ARTIFACT_TYPE:?}",
            manifest.media_type, manifest.artifact_type
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_a_plugin_name_and_a_printed_semver() {
        for (name, version) in [
            ("echo", "1.2.0"),
            ("db", "2.0.0-rc.1"),
            ("a_b+c", "0.0.1+b.7"),
        ] {
            assert_eq!(
                target_name(name, version).as_deref(),
                Ok(format!("{name}/{version}").as_str())
            );
        }
        for (name, version) in [
            (".hidden", "1.0.0"),
            ("..", "1.0.0"),
            ("a b", "1.0.0"),
            ("a\u{1b}", "1.0.0"),
            ("echo", "1.0"),
            ("echo", "01.0.0"),
            ("echo", "v1.0.0"),
            ("echo", "1.0.0\n"),
            ("echo", ".."),
            ("echo", ""),
        ] {
            assert!(target_name(name, version).is_err(), "{name:?} {version:?}");
        }
    }
}
