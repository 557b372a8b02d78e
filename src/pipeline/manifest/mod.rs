//! The plugin manifest, `plugin.json`: VT Code's metadata plus the list of every file in
//! the plugin directory with its SHA-256 and size.
//!
//! The loader parses a manifest only from [`AuthenticManifest`], i.e. after its signature
//! verified over the exact bytes (invariant 1: nothing but the signature-file parser sees
//! unsigned bytes). Parsing is strict: unknown and duplicate fields are refused, names are
//! restricted to a small alphabet so no name can carry a path, a NUL or a control
//! character, and versions must be semver. The wire type is crate-private; [`Manifest`] is
//! built from it by one checking function.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::base::ffi::{PLUGIN_ABI_VERSION, PluginMetadata};
use crate::base::settings::WorkspaceAccess;
pub(crate) use crate::base::version::VersionError;
use crate::base::version::{Version, parse_version};
use crate::trust::signature::{AuthenticManifest, MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME};

pub(crate) use crate::base::name::MAX_NAME_LEN;
/// Longest file path component (a file or directory name).
pub(crate) const MAX_COMPONENT_LEN: usize = 255;
/// Longest relative file path.
pub(crate) const MAX_PATH_LEN: usize = 1024;
/// Longest free-text field (description, when_to_use, ...).
pub(crate) const MAX_TEXT_LEN: usize = 4096;
/// Most entries in `allowed_tools`.
pub(crate) const MAX_TOOLS: usize = 256;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The plugin directory has no `plugin.json`.
    #[error("no {MANIFEST_FILE_NAME} in the plugin directory")]
    Missing,
    /// The JSON does not match the manifest schema (unknown or duplicate fields included).
    #[error("{MANIFEST_FILE_NAME} is not valid: {0}")]
    Syntax(crate::base::json::JsonError),
    /// A name is empty, too long, or holds a character outside `[A-Za-z0-9._+-]`.
    #[error(
        "{field} {value:?} is not a valid name (1-{max} characters of A-Z a-z 0-9 . _ + -, not starting with '.')"
    )]
    BadName {
        /// The field.
        field: &'static str,
        /// The offending value (escaped when printed).
        value: String,
        /// The length limit.
        max: usize,
    },
    /// A file path is absolute, has an empty, `.` or `..` component, or a bad name.
    #[error("file path {0:?} is not a plain relative path")]
    BadPath(String),
    /// The version is not semver.
    #[error("version {value:?} is not semver")]
    BadVersion {
        /// The version string.
        value: String,
        /// What the semver parser said.
        source: VersionError,
    },
    /// A text field is longer than `MAX_TEXT_LEN`, or a list longer than its limit.
    #[error("{field} is too long")]
    TooLong {
        /// The field.
        field: &'static str,
    },
    /// The manifest declares an ABI version this host does not speak.
    #[error("manifest declares ABI version {manifest}, this host speaks {host}")]
    AbiVersion {
        /// Declared in the manifest.
        manifest: u32,
        /// [`PLUGIN_ABI_VERSION`].
        host: u32,
    },
    /// `files` is missing (the manifest was never signed with `skill-sign sign`).
    #[error("manifest has no `files` list; sign it with `skill-sign sign`")]
    NoFileList,
    /// A path appears twice in `files`.
    #[error("file {0:?} is listed twice")]
    DuplicateFile(String),
    /// `files` lists the manifest or its signature file, which cannot hash themselves.
    #[error("file {0:?} cannot be listed in the manifest")]
    ReservedFile(String),
    /// The library named by the manifest is not in `files`.
    #[error("library {0:?} is not listed in `files`")]
    LibraryNotListed(String),
    /// The manifest names no `library`, and `files` lists neither name VT Code looks for.
    /// Only a signed file can be the library: an unlisted one on disk is never chosen.
    #[error(
        "manifest names no `library`, and `files` lists neither {first:?} nor {second:?}; name the library in `library` or sign a file with one of these names"
    )]
    NoLibraryListed {
        /// The first name tried (`lib<name>.so` here).
        first: String,
        /// The second name tried (`<name>.so` here).
        second: String,
    },
    /// More files than the policy allows.
    #[error("manifest lists {count} files, the policy allows {max}")]
    TooManyFiles {
        /// Files listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A requested path is not absolute, holds `..` or NUL, or is too long.
    #[error("capability path {0:?} must be absolute, without `..` or NUL")]
    BadCapabilityPath(String),
    /// `expires` is not an RFC 3339 timestamp in UTC (`Z` or `+00:00`).
    #[error("expires {value:?} is not an RFC 3339 UTC timestamp: {problem}")]
    BadExpiry {
        /// The value found (its first 64 characters).
        value: String,
        /// What was wrong.
        problem: ExpiryProblem,
    },
    /// A tool is named twice in `tools`.
    #[error("tool {0:?} is listed twice in `tools`")]
    DuplicateTool(String),
    /// A `sha256` value is not 64 lowercase hex digits.
    #[error("sha256 of {path:?} is not 64 lowercase hex digits")]
    BadDigest {
        /// The file.
        path: String,
    },
}

/// The manifest as it appears on disk. Shared with `skill-sign`, which fills in `files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestWire {
    pub name: String,
    pub description: String,
    pub version: String,
    #[serde(default)]
    pub author: Option<String>,
    pub abi_version: u32,
    #[serde(default)]
    pub when_to_use: Option<String>,
    #[serde(default)]
    pub when_not_to_use: Option<String>,
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    #[serde(default)]
    pub thread_safe: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileEntryWire>>,
    /// RFC 3339 UTC timestamp after which hosts refuse the plugin (signed, like every field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// How much of the host's workspace the plugin asks for (signed, like every field).
    /// Absent means none; `null` is refused like any other value but the two requests.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_workspace"
    )]
    pub workspace: Option<WorkspaceRequest>,
    /// The host tools the plugin may ask for (`skillgate_plugin_host_v1`), by name; a host
    /// answers a request only for a tool named here and allowed by its policy. Absent: none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_tools"
    )]
    pub tools: Option<Vec<String>>,
}

/// What a manifest may write as `"workspace"`: `"none"` is spelled by leaving it out, so
/// the strict parse refuses it with every other value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WorkspaceRequest {
    Read,
    ReadWrite,
}

/// A `"workspace"` that is present must be one of the requests (`null` included).
fn present_workspace<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<WorkspaceRequest>, D::Error> {
    WorkspaceRequest::deserialize(d).map(Some)
}

/// A `"tools"` that is present must be a list (`null` is refused).
fn present_tools<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Vec::<String>::deserialize(d).map(Some)
}

impl From<Option<WorkspaceRequest>> for WorkspaceAccess {
    fn from(request: Option<WorkspaceRequest>) -> Self {
        match request {
            None => WorkspaceAccess::None,
            Some(WorkspaceRequest::Read) => WorkspaceAccess::Read,
            Some(WorkspaceRequest::ReadWrite) => WorkspaceAccess::ReadWrite,
        }
    }
}

/// What a plugin asks to be granted inside its sandbox. A host grants what its policy
/// allows of this, never more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Absolute paths to read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Absolute paths to read and write.
    #[serde(default)]
    pub read_write: Vec<String>,
    /// TCP ports to connect to.
    #[serde(default)]
    pub connect_tcp: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileEntryWire {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// One file of the plugin directory as the signed manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// SHA-256 of the contents.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

/// A signed, parsed and validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    metadata: PluginMetadata,
    version: Version,
    library: String,
    capabilities: Capabilities,
    workspace: WorkspaceAccess,
    files: Vec<FileEntry>,
    expires: Option<time::OffsetDateTime>,
    tools: Vec<String>,
}

impl Manifest {
    /// Parses the manifest out of bytes whose signature has been verified.
    pub fn parse(authentic: &AuthenticManifest, max_files: usize) -> Result<Self, ManifestError> {
        let wire = parse_wire(authentic.bytes())?;
        Self::from_wire(wire, max_files)
    }

    pub(crate) fn from_wire(wire: ManifestWire, max_files: usize) -> Result<Self, ManifestError> {
        let version = Version::from_semver(check_common(&wire)?);
        let expires = wire.expires.as_deref().map(parse_expiry).transpose()?;
        if wire.abi_version != PLUGIN_ABI_VERSION {
            return Err(ManifestError::AbiVersion {
                manifest: wire.abi_version,
                host: PLUGIN_ABI_VERSION,
            });
        }
        if let Some(named) = &wire.library {
            check_name("library", named, MAX_COMPONENT_LEN)?;
        }
        let wire_files = wire.files.ok_or(ManifestError::NoFileList)?;
        if wire_files.len() > max_files {
            return Err(ManifestError::TooManyFiles {
                count: wire_files.len(),
                max: max_files,
            });
        }
        let mut seen = BTreeSet::new();
        let mut files = Vec::with_capacity(wire_files.len());
        for f in wire_files {
            check_path(&f.path)?;
            if f.path == MANIFEST_FILE_NAME || f.path == SIGNATURE_FILE_NAME {
                return Err(ManifestError::ReservedFile(f.path));
            }
            if !seen.insert(f.path.clone()) {
                return Err(ManifestError::DuplicateFile(f.path));
            }
            let sha256 = parse_digest(&f.sha256).ok_or_else(|| ManifestError::BadDigest {
                path: f.path.clone(),
            })?;
            files.push(FileEntry {
                path: f.path,
                sha256,
                size: f.size,
            });
        }
        let library = choose_library(wire.library.as_deref(), &wire.name, |f| seen.contains(f))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut tools = wire.tools.unwrap_or_default();
        tools.sort();
        let metadata = PluginMetadata {
            name: wire.name,
            description: wire.description,
            version: wire.version,
            author: wire.author,
            abi_version: wire.abi_version,
            when_to_use: wire.when_to_use,
            when_not_to_use: wire.when_not_to_use,
            allowed_tools: wire.allowed_tools,
            thread_safe: wire.thread_safe,
        };
        Ok(Manifest {
            metadata,
            version,
            library,
            capabilities: wire.capabilities.unwrap_or_default(),
            workspace: wire.workspace.into(),
            files,
            expires,
            tools,
        })
    }

    /// VT Code's metadata fields.
    pub fn metadata(&self) -> &PluginMetadata {
        &self.metadata
    }
    /// The plugin name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
    /// The plugin version.
    pub fn version(&self) -> &Version {
        &self.version
    }
    /// The library's file name.
    pub fn library(&self) -> &str {
        &self.library
    }
    /// The sandbox capabilities the plugin requests.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }
    /// How much of the host's workspace the plugin asks for ([`WorkspaceAccess::None`]
    /// when the manifest has no `"workspace"`).
    pub fn workspace(&self) -> WorkspaceAccess {
        self.workspace
    }
    /// Every file of the plugin directory but the manifest and its signatures, by path.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }
    /// When the signed manifest says the plugin expires, if it does.
    pub fn expires(&self) -> Option<time::OffsetDateTime> {
        self.expires
    }
    /// The host tools the signed manifest names (`"tools"`), sorted; empty when it names
    /// none. A request for any other tool is refused whatever the policy allows.
    pub fn tools(&self) -> &[String] {
        &self.tools
    }
    /// The entry of the library.
    pub fn library_entry(&self) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == self.library)
    }
}

/// The file name a plugin's library has on this OS, as VT Code names it: `lib<name>.so`
/// on Linux (and other Unix), `lib<name>.dylib` on macOS, `<name>.dll` on Windows.
pub fn library_filename(name: &str) -> String {
    if cfg!(target_os = "macos") {
        format!("lib{name}.dylib")
    } else if cfg!(target_os = "windows") {
        format!("{name}.dll")
    } else {
        format!("lib{name}.so")
    }
}

/// The second name VT Code tries when [`library_filename`] is absent: the same with the
/// `lib` prefix dropped (`<name>.so`), or added where the OS has none (`lib<name>.dll`).
pub(crate) fn alternative_library_filename(name: &str) -> String {
    if cfg!(target_os = "macos") {
        format!("{name}.dylib")
    } else if cfg!(target_os = "windows") {
        format!("lib{name}.dll")
    } else {
        format!("{name}.so")
    }
}

/// Which file is the library: the manifest's `library` if it names one (it must be
/// listed), else [`library_filename`], then [`alternative_library_filename`], whichever
/// `listed` holds first. `listed` answers for the signed `files` list, so a file lying on
/// disk unsigned is never the library.
pub(crate) fn choose_library(
    named: Option<&str>,
    name: &str,
    listed: impl Fn(&str) -> bool,
) -> Result<String, ManifestError> {
    if let Some(named) = named {
        return if listed(named) {
            Ok(named.to_owned())
        } else {
            Err(ManifestError::LibraryNotListed(named.to_owned()))
        };
    }
    let first = library_filename(name);
    let second = alternative_library_filename(name);
    if listed(&first) {
        Ok(first)
    } else if listed(&second) {
        Ok(second)
    } else {
        Err(ManifestError::NoLibraryListed { first, second })
    }
}

/// What is wrong with an `expires` value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpiryProblem {
    /// Longer than 64 characters.
    #[error("longer than 64 characters")]
    TooLong,
    /// Date and time are not separated by `T` (RFC 3339 allows others; one is enough).
    #[error("date and time must be separated by 'T'")]
    Separator,
    /// Not an RFC 3339 timestamp.
    #[error("{0}")]
    Syntax(TimestampError),
    /// The offset is not zero.
    #[error("the offset must be Z (UTC)")]
    NotUtc,
}

/// A timestamp is not RFC 3339. The time crate's error is kept inside, private (see
/// [`VersionError`]); its message is this error's `Display`.
#[derive(Debug)]
pub struct TimestampError(time::error::Parse);

impl std::fmt::Display for TimestampError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TimestampError {}

pub(crate) fn parse_wire(bytes: &[u8]) -> Result<ManifestWire, ManifestError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ManifestError::Syntax(crate::base::json::JsonError::new(e)))
}

/// Checks what an author's template and a signed manifest share: names, version, text.
pub(crate) fn check_common(wire: &ManifestWire) -> Result<semver::Version, ManifestError> {
    check_name("name", &wire.name, MAX_NAME_LEN)?;
    let version = parse_version(&wire.version).map_err(|source| ManifestError::BadVersion {
        value: wire.version.clone(),
        source,
    })?;
    for (field, text) in [
        ("description", Some(&wire.description)),
        ("author", wire.author.as_ref()),
        ("when_to_use", wire.when_to_use.as_ref()),
        ("when_not_to_use", wire.when_not_to_use.as_ref()),
    ] {
        if text.is_some_and(|t| t.len() > MAX_TEXT_LEN) {
            return Err(ManifestError::TooLong { field });
        }
    }
    if let Some(tools) = &wire.allowed_tools {
        if tools.len() > MAX_TOOLS {
            return Err(ManifestError::TooLong {
                field: "allowed_tools",
            });
        }
        for t in tools {
            check_name("allowed_tools entry", t, MAX_NAME_LEN)?;
        }
    }
    if let Some(tools) = &wire.tools {
        if tools.len() > MAX_TOOLS {
            return Err(ManifestError::TooLong { field: "tools" });
        }
        let mut seen = BTreeSet::new();
        for t in tools {
            check_name("tools entry", t, MAX_NAME_LEN)?;
            if !seen.insert(t.as_str()) {
                return Err(ManifestError::DuplicateTool(t.clone()));
            }
        }
    }
    if let Some(lib) = &wire.library {
        check_name("library", lib, MAX_COMPONENT_LEN)?;
    }
    if let Some(expires) = &wire.expires {
        parse_expiry(expires)?;
    }
    if let Some(caps) = &wire.capabilities {
        if caps.read.len() + caps.read_write.len() > MAX_TOOLS || caps.connect_tcp.len() > MAX_TOOLS
        {
            return Err(ManifestError::TooLong {
                field: "capabilities",
            });
        }
        for p in caps.read.iter().chain(&caps.read_write) {
            let ok = p.starts_with('/')
                && p.len() <= MAX_PATH_LEN
                && !p.contains('\0')
                && !p.split('/').any(|c| c == "..");
            if !ok {
                return Err(ManifestError::BadCapabilityPath(p.clone()));
            }
        }
    }
    Ok(version)
}

/// Parses `expires`: RFC 3339, offset zero, at most 64 characters.
pub(crate) fn parse_expiry(value: &str) -> Result<time::OffsetDateTime, ManifestError> {
    let bad = |problem| ManifestError::BadExpiry {
        value: value.chars().take(64).collect(),
        problem,
    };
    if value.len() > 64 {
        return Err(bad(ExpiryProblem::TooLong));
    }
    // RFC 3339 also allows a space or a lowercase `t`; one spelling is enough.
    if value.as_bytes().get(10) != Some(&b'T') {
        return Err(bad(ExpiryProblem::Separator));
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| bad(ExpiryProblem::Syntax(TimestampError(e))))?;
    if !t.offset().is_utc() {
        return Err(bad(ExpiryProblem::NotUtc));
    }
    Ok(t)
}

fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), ManifestError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadName {
            field,
            value: value.to_owned(),
            max,
        })
    }
}

/// Checks a relative file path: `/`-separated names, none empty, `.` or `..`.
pub(crate) fn check_path(path: &str) -> Result<(), ManifestError> {
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(ManifestError::BadPath(path.to_owned()));
    }
    for component in path.split('/') {
        if check_name("file", component, MAX_COMPONENT_LEN).is_err() {
            return Err(ManifestError::BadPath(path.to_owned()));
        }
    }
    Ok(())
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        if let [hi, lo] = pair {
            *o = (nibble(*hi)? << 4) | nibble(*lo)?;
        }
    }
    Some(out)
}

/// Lowercase hex of a digest, as manifests and messages spell it.
pub(crate) fn hex_digest(d: &[u8; 32]) -> String {
    use std::fmt::Write;
    d.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
/// Entry point shared by the fuzz targets and the corpus replay: parse and validate a
/// manifest as if its signature had verified.
pub(crate) fn fuzz_parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    Manifest::from_wire(parse_wire(bytes)?, 256)
}

#[cfg(test)]
mod tests;
