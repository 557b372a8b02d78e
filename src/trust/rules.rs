//! The trust stage: who may sign which plugin, which keys are revoked, which versions were
//! already seen, and when a signed manifest stops being good.
//!
//! minisign and signify sign bytes, not versions: a validly signed old release with a known
//! hole verifies forever, one stolen key signs anything, and a key cannot be withdrawn. This
//! stage runs inside [`crate::pipeline::verify::verify_dir`], right after the manifest's signatures
//! verified and it was parsed, and answers each of those threats offline:
//!
//! - **Signer rules** (`signers`): each rule names plugins by pattern, a set of key ids and a
//!   threshold. The most specific rule wins: an exact name beats every glob, and among globs
//!   (`prefix*`, `*`) the longest literal prefix wins; two rules with the same pattern are a
//!   policy error, so exactly one rule decides. A plugin no rule covers is refused. The
//!   threshold counts distinct key ids (one key is one id, derived from the key), each once;
//!   0 or more than the rule's keys is a policy error. Without a `signers` section, one
//!   signature by any trusted, unrevoked key suffices.
//! - **Revocation**: `revoked_keys` in the policy, and signed revocation statements in the
//!   trust store ([`RevocationStatement`]). A revoked key never counts, whatever else says.
//! - **Rollback**: with `state_dir`, the highest version that passed verification is kept
//!   per plugin name ([`record_version`]); an older version is refused with both versions
//!   named, and `min_versions` sets a floor. The mark is raised when a plugin passes the
//!   verify stage, not after it loads: a newer release that was validly signed exists, so
//!   going back is refused even if that release then failed a later check. Lowering a mark
//!   is an administrative act: [`reset_version_mark`].
//! - **Expiry**: a signed `expires` in the manifest; expired plugins are refused unless the
//!   policy allows a clock-skew margin or demotes expiry to a warning (`expiry`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::danger::Danger;
use crate::pipeline::manifest::Manifest;
use crate::policy::PolicyError;
use crate::trust::keys::{KeyId, PublicKey, SecretKey, TrustStore};
use crate::trust::signature::{SignatureError, SignatureFile};

/// Prefix of every signed revocation statement; the statement bytes follow it.
pub const REVOCATION_DOMAIN_TAG: &[u8] = b"skillgate/ed25519/key-revocation/v1\0";
/// Value of the `format` field of a revocation statement.
pub const REVOCATION_FORMAT: &str = "skillgate-revocation-v1";
/// File name suffix of revocation statements in the trust store; the signatures are in a
/// file of the same name plus `.sig`.
pub const REVOCATION_SUFFIX: &str = ".revoked";
/// Distinct other keys needed to revoke a key that did not revoke itself.
pub const REVOCATION_THRESHOLD: usize = 2;
/// Largest revocation statement or version mark read.
const MAX_STATEMENT_BYTES: usize = 4096;
/// Value of the `format` field of a version mark.
const MARK_FORMAT: &str = "skillgate-version-mark-v1";
/// Suffix of a version mark file in the state directory.
const MARK_SUFFIX: &str = ".version";
/// The lock file serializing updates of the state directory.
const LOCK_FILE: &str = ".lock";
/// Largest clock-skew margin a policy may allow.
const MAX_SKEW_SECONDS: u64 = 7 * 24 * 3600;

// ---------------------------------------------------------------------------------------
// Errors

/// Why the trust stage refused a plugin. Every variant names the plugin, the key ids
/// involved and the rule or value that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// No signer rule's pattern covers this plugin name.
    #[error(
        "plugin {plugin:?}: no signer rule covers this name (signed by {})",
        Ids(signers)
    )]
    NoRule {
        /// The plugin name.
        plugin: String,
        /// The trusted keys whose signatures verified.
        signers: Vec<KeyId>,
    },
    /// Fewer distinct unrevoked keys of the rule signed than its threshold.
    #[error(
        "plugin {plugin:?}: rule {rule:?} needs {threshold} distinct signer(s) of its keys, counted {} ({}); signatures by trusted keys outside the rule: {}",
        counted.len(), Ids(counted), Ids(outside_rule)
    )]
    BelowThreshold {
        /// The plugin name.
        plugin: String,
        /// The rule's pattern (`*` when the policy has no `signers` section).
        rule: String,
        /// The rule's threshold.
        threshold: usize,
        /// The distinct keys that counted.
        counted: Vec<KeyId>,
        /// Trusted keys that signed but are not in the rule.
        outside_rule: Vec<KeyId>,
    },
    /// The threshold is not met once revoked keys are discounted.
    #[error(
        "plugin {plugin:?}: signed by revoked key(s) {}; rule {rule:?} needs {threshold}, counted {} ({})",
        Ids(revoked), counted.len(), Ids(counted)
    )]
    Revoked {
        /// The plugin name.
        plugin: String,
        /// The revoked keys that signed.
        revoked: Vec<KeyId>,
        /// The rule's pattern (`*` when the policy has no `signers` section).
        rule: String,
        /// The rule's threshold.
        threshold: usize,
        /// The distinct unrevoked keys of the rule that counted.
        counted: Vec<KeyId>,
    },
    /// The signed manifest expired.
    #[error(
        "plugin {plugin:?} {version}: expired at {expires} (now {now}, clock-skew margin {skew_seconds} s)"
    )]
    Expired {
        /// The plugin name.
        plugin: String,
        /// Its version.
        version: String,
        /// The signed expiry.
        expires: String,
        /// The host's clock.
        now: String,
        /// The margin the policy allows.
        skew_seconds: u64,
    },
    /// The version is below the policy's minimum for this plugin.
    #[error("plugin {plugin:?}: version {version} is below the policy's minimum {minimum}")]
    BelowMinimum {
        /// The plugin name.
        plugin: String,
        /// The version offered.
        version: String,
        /// The policy's `min_versions` entry.
        minimum: String,
    },
    /// A newer version of this plugin was verified before: rollback refused.
    #[error(
        "plugin {plugin:?}: version {version} is older than {highest}, already verified on this host (rollback refused; see trust::reset_version_mark)"
    )]
    Rollback {
        /// The plugin name.
        plugin: String,
        /// The version offered.
        version: String,
        /// The highest version recorded in the state directory.
        highest: String,
    },
    /// The state directory could not be read or written.
    #[error("state {}: {source}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A version mark in the state directory is unreadable: refused rather than ignored.
    #[error("state {}: corrupt version mark: {problem}", path.display())]
    StateCorrupt {
        /// The mark file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        problem: MarkProblem,
    },
}

/// What is wrong with a version mark in the state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkProblem {
    /// The name asked for is not a plugin name, so it names no mark.
    #[error("{0:?} is not a plugin name")]
    BadName(String),
    /// The mark is not a regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// The mark is larger than a mark can be.
    #[error("larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// Not JSON of a mark's shape.
    #[error("{0}")]
    Json(#[source] crate::base::json::JsonError),
    /// The mark's format or plugin name is not this mark's.
    #[error("format {format:?} for plugin {name:?}")]
    Mismatch {
        /// The format found.
        format: String,
        /// The plugin name found.
        name: String,
    },
    /// The recorded version is not semver.
    #[error("{0}")]
    Version(#[source] crate::pipeline::manifest::VersionError),
}

/// What is wrong with a revocation statement in the trust store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// Larger than the cap.
    #[error("statement is larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// Not JSON of the statement's shape (unknown or duplicate fields included).
    #[error("{0}")]
    Json(#[source] crate::base::json::JsonError),
    /// The `format` field is not [`REVOCATION_FORMAT`].
    #[error("format is {found:?}, expected {REVOCATION_FORMAT:?}")]
    WrongFormat {
        /// The value found.
        found: String,
    },
    /// `public_key` is not 32 bytes of padded base64, or not a usable Ed25519 key.
    #[error("public_key is not a valid Ed25519 key")]
    BadPublicKey,
    /// `revokes` is not the id derived from `public_key`.
    #[error("revokes {claimed}, but public_key has key id {derived}")]
    KeyIdMismatch {
        /// The id the statement names.
        claimed: KeyId,
        /// The id of the key it carries.
        derived: KeyId,
    },
    /// The `.sig` file beside the statement is missing or malformed.
    #[error("signatures: {0}")]
    Signatures(SignatureError),
    /// A signature by the revoked key or a trusted key does not verify.
    #[error("signature by {key_id} does not verify over the statement")]
    Invalid {
        /// The key the signature claims.
        key_id: KeyId,
    },
    /// Neither the revoked key itself nor enough other trusted keys signed.
    #[error(
        "revocation of {revokes} is signed by {} other trusted key(s) ({}) and not by the key itself; {needed} are needed",
        signers.len(), Ids(signers)
    )]
    NotEnoughSigners {
        /// The key the statement revokes.
        revokes: KeyId,
        /// The other trusted keys whose signatures verified.
        signers: Vec<KeyId>,
        /// [`REVOCATION_THRESHOLD`].
        needed: usize,
    },
}

struct Ids<'a>(&'a [KeyId]);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Policy

/// A signer rule as written in the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignerRuleWire {
    pub plugins: String,
    pub keys: Vec<String>,
    pub threshold: u32,
}

/// Expiry handling as written in the policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpiryWire {
    #[serde(default)]
    skew_seconds: u64,
    /// Moved: `danger.expired_plugins_warn_only` (refused here, by name).
    #[serde(default)]
    warn_only: Option<serde::de::IgnoredAny>,
}

/// The trust fields alone, for [`TrustPolicy::from_json`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustWire {
    #[serde(default)]
    signers: Option<Vec<SignerRuleWire>>,
    #[serde(default)]
    revoked_keys: Vec<String>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    min_versions: BTreeMap<String, String>,
    #[serde(default)]
    expiry: ExpiryWire,
}

/// Which plugin names a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this name.
    Exact(String),
    /// Every name starting with this prefix (`prefix*`; `*` is the empty prefix).
    Prefix(String),
}

impl Pattern {
    fn parse(s: &str) -> Option<Pattern> {
        let (literal, glob) = match s.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        let ok = literal.len() <= crate::pipeline::manifest::MAX_NAME_LEN
            && literal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
        match (ok, glob) {
            (false, _) => None,
            (true, true) => Some(Pattern::Prefix(literal.to_owned())),
            (true, false) if literal.is_empty() => None,
            (true, false) => Some(Pattern::Exact(literal.to_owned())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// Higher wins: exact names above every glob, then longer literal prefixes.
    fn specificity(&self) -> (bool, usize) {
        match self {
            Pattern::Exact(n) => (true, n.len()),
            Pattern::Prefix(p) => (false, p.len()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A validated signer rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerRule {
    pattern: Pattern,
    keys: BTreeSet<KeyId>,
    threshold: usize,
}

impl SignerRule {
    /// The plugin names it covers.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }
    /// The keys whose signatures count.
    pub fn keys(&self) -> &BTreeSet<KeyId> {
        &self.keys
    }
    /// How many distinct keys of [`SignerRule::keys`] must have signed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }
}

/// How expiry is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiryPolicy {
    /// Seconds past `expires` still accepted, for hosts whose clock may lag. Accepting
    /// expired plugins outright is a danger knob:
    /// [`crate::danger::Danger::expired_plugins_warn_only`].
    pub skew_seconds: u64,
}

/// The trust part of a policy: who may sign what, what is revoked, what was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustPolicy {
    rules: Option<Vec<SignerRule>>,
    revoked: BTreeSet<KeyId>,
    state_dir: Option<PathBuf>,
    min_versions: BTreeMap<String, semver::Version>,
    expiry: ExpiryPolicy,
}

fn invalid(msg: String) -> PolicyError {
    PolicyError::Syntax(crate::base::json::JsonError::new(
        <serde_json::Error as serde::de::Error>::custom(msg),
    ))
}

fn parse_key_id(field: &str, s: &str) -> Result<KeyId, PolicyError> {
    s.parse()
        .map_err(|_| invalid(format!("{field}: {s:?} is not a key id (16 hex digits)")))
}

impl TrustPolicy {
    /// Validates the trust fields of a policy file (paths already resolved).
    pub(crate) fn from_wire(
        signers: Option<Vec<SignerRuleWire>>,
        revoked_keys: Vec<String>,
        state_dir: Option<PathBuf>,
        min_versions: BTreeMap<String, String>,
        expiry: ExpiryWire,
    ) -> Result<Self, PolicyError> {
        let rules = match signers {
            None => None,
            Some(wires) => {
                let mut rules: Vec<SignerRule> = Vec::with_capacity(wires.len());
                for w in wires {
                    let pattern = Pattern::parse(&w.plugins).ok_or_else(|| {
                        invalid(format!(
                            "signers: pattern {:?} must be a plugin name, optionally ending in one '*'",
                            w.plugins
                        ))
                    })?;
                    if rules.iter().any(|r| r.pattern == pattern) {
                        return Err(invalid(format!(
                            "signers: two rules for pattern {pattern:?}"
                        )));
                    }
                    let mut keys = BTreeSet::new();
                    for k in &w.keys {
                        let id = parse_key_id("signers.keys", k)?;
                        if !keys.insert(id) {
                            return Err(invalid(format!(
                                "signers: rule {pattern} lists key {id} twice"
                            )));
                        }
                    }
                    let threshold = usize::try_from(w.threshold).unwrap_or(usize::MAX);
                    if threshold == 0 || threshold > keys.len() {
                        return Err(PolicyError::LimitOutOfRange {
                            name: "signers.threshold",
                            value: u64::from(w.threshold),
                            max: keys.len() as u64,
                        });
                    }
                    rules.push(SignerRule {
                        pattern,
                        keys,
                        threshold,
                    });
                }
                Some(rules)
            }
        };
        let revoked = revoked_keys
            .iter()
            .map(|k| parse_key_id("revoked_keys", k))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let mut mins = BTreeMap::new();
        for (name, v) in min_versions {
            if Pattern::parse(&name) != Some(Pattern::Exact(name.clone())) {
                return Err(invalid(format!(
                    "min_versions: {name:?} is not a plugin name"
                )));
            }
            let v = semver::Version::parse(&v)
                .map_err(|e| invalid(format!("min_versions.{name}: {v:?}: {e}")))?;
            mins.insert(name, v);
        }
        if expiry.warn_only.is_some() {
            return Err(PolicyError::MovedToDanger {
                field: "expiry.warn_only",
                danger: "danger.expired_plugins_warn_only",
            });
        }
        if expiry.skew_seconds > MAX_SKEW_SECONDS {
            return Err(PolicyError::LimitOutOfRange {
                name: "expiry.skew_seconds",
                value: expiry.skew_seconds,
                max: MAX_SKEW_SECONDS,
            });
        }
        Ok(TrustPolicy {
            rules,
            revoked,
            state_dir,
            min_versions: mins,
            expiry: ExpiryPolicy {
                skew_seconds: expiry.skew_seconds,
            },
        })
    }

    /// Parses just the trust fields (`signers`, `revoked_keys`, `state_dir`,
    /// `min_versions`, `expiry`) as they appear in a policy file; a relative `state_dir`
    /// resolves against `base_dir`.
    pub fn from_json(bytes: &[u8], base_dir: &Path) -> Result<Self, PolicyError> {
        let w: TrustWire = serde_json::from_slice(bytes)
            .map_err(|e| PolicyError::Syntax(crate::base::json::JsonError::new(e)))?;
        let state_dir = w
            .state_dir
            .map(|p| if p.is_absolute() { p } else { base_dir.join(p) });
        Self::from_wire(
            w.signers,
            w.revoked_keys,
            state_dir,
            w.min_versions,
            w.expiry,
        )
    }

    /// The signer rules, if the policy has a `signers` section.
    pub fn rules(&self) -> Option<&[SignerRule]> {
        self.rules.as_deref()
    }
    /// Keys the policy revokes.
    pub fn revoked_keys(&self) -> &BTreeSet<KeyId> {
        &self.revoked
    }
    /// Where version marks are kept.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }
    /// Minimum versions by plugin name.
    pub fn min_versions(&self) -> &BTreeMap<String, semver::Version> {
        &self.min_versions
    }
    /// How expiry is enforced.
    pub fn expiry(&self) -> ExpiryPolicy {
        self.expiry
    }

    /// The rule that decides for `name`: the most specific matching one.
    pub fn rule_for(&self, name: &str) -> Option<&SignerRule> {
        self.rules
            .as_ref()?
            .iter()
            .filter(|r| r.pattern.matches(name))
            .max_by_key(|r| r.pattern.specificity())
    }

    fn is_revoked(&self, store: &TrustStore, id: &KeyId) -> bool {
        self.revoked.contains(id) || store.revocation(id).is_some()
    }

    /// Signer rules, revocation, expiry, minimum version and the rollback mark, for a
    /// manifest whose signatures by `signers` verified. Does not raise the mark. An expired
    /// plugin passes only under [`Danger::expired_plugins_warn_only`].
    pub(crate) fn check(
        &self,
        store: &TrustStore,
        manifest: &Manifest,
        signers: &[KeyId],
        danger: &Danger,
    ) -> Result<(), TrustError> {
        self.check_signers(store, manifest.name(), signers)?;
        self.check_expiry(manifest, time::OffsetDateTime::now_utc(), danger)?;
        let name = manifest.name();
        let version = manifest.version();
        if let Some(min) = self.min_versions.get(name)
            && version.cmp_precedence(min).is_lt()
        {
            return Err(TrustError::BelowMinimum {
                plugin: name.to_owned(),
                version: version.to_string(),
                minimum: min.to_string(),
            });
        }
        if let Some(dir) = &self.state_dir
            && let Some(highest) = read_version_mark(dir, name)?
        {
            refuse_rollback(name, version, &highest)?;
        }
        Ok(())
    }

    fn check_signers(
        &self,
        store: &TrustStore,
        name: &str,
        signers: &[KeyId],
    ) -> Result<(), TrustError> {
        let distinct: BTreeSet<KeyId> = signers.iter().copied().collect();
        let (revoked, valid): (Vec<KeyId>, Vec<KeyId>) = distinct
            .iter()
            .copied()
            .partition(|id| self.is_revoked(store, id));
        let (pattern, threshold, counted, outside) = match &self.rules {
            None => ("*".to_owned(), 1, valid, Vec::new()),
            Some(_) => {
                let rule = self.rule_for(name).ok_or_else(|| TrustError::NoRule {
                    plugin: name.to_owned(),
                    signers: distinct.iter().copied().collect(),
                })?;
                let (counted, outside): (Vec<KeyId>, Vec<KeyId>) =
                    valid.into_iter().partition(|id| rule.keys.contains(id));
                (rule.pattern.to_string(), rule.threshold, counted, outside)
            }
        };
        if counted.len() >= threshold {
            return Ok(());
        }
        if !revoked.is_empty() {
            return Err(TrustError::Revoked {
                plugin: name.to_owned(),
                revoked,
                rule: pattern,
                threshold,
                counted,
            });
        }
        Err(TrustError::BelowThreshold {
            plugin: name.to_owned(),
            rule: pattern,
            threshold,
            counted,
            outside_rule: outside,
        })
    }

    fn check_expiry(
        &self,
        manifest: &Manifest,
        now: time::OffsetDateTime,
        danger: &Danger,
    ) -> Result<(), TrustError> {
        let Some(expires) = manifest.expires() else {
            return Ok(());
        };
        let skew = i64::try_from(self.expiry.skew_seconds).unwrap_or(i64::MAX);
        let limit = expires.checked_add(time::Duration::seconds(skew));
        if limit.is_some_and(|l| now <= l) || limit.is_none() {
            return Ok(());
        }
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        let err = TrustError::Expired {
            plugin: manifest.name().to_owned(),
            version: manifest.version().to_string(),
            expires: fmt(expires),
            now: fmt(now),
            skew_seconds: self.expiry.skew_seconds,
        };
        if danger.is_expired_plugins_warn_only() {
            tracing::warn!(target: "skillgate::audit", error = %crate::base::escape::Escaped(&err), "expired plugin accepted (danger.expired_plugins_warn_only)");
            return Ok(());
        }
        Err(err)
    }

    /// Raises the plugin's version mark after it passed verification (no-op without
    /// `state_dir`). Refuses, under the state lock, a version older than the mark.
    pub(crate) fn record(&self, manifest: &Manifest) -> Result<(), TrustError> {
        match &self.state_dir {
            Some(dir) => record_version(dir, manifest.name(), manifest.version()),
            None => Ok(()),
        }
    }
}

fn refuse_rollback(
    name: &str,
    version: &semver::Version,
    highest: &semver::Version,
) -> Result<(), TrustError> {
    if version.cmp_precedence(highest).is_lt() {
        return Err(TrustError::Rollback {
            plugin: name.to_owned(),
            version: version.to_string(),
            highest: highest.to_string(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Version marks

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkWire {
    format: String,
    name: String,
    version: String,
}

fn state_io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn mark_path(dir: &Path, name: &str) -> Result<PathBuf, TrustError> {
    // Plugin names are validated already; checked again because this builds a path.
    if Pattern::parse(name) != Some(Pattern::Exact(name.to_owned())) || name.starts_with('.') {
        return Err(TrustError::StateCorrupt {
            path: dir.to_path_buf(),
            problem: MarkProblem::BadName(name.to_owned()),
        });
    }
    Ok(dir.join(format!("{name}{MARK_SUFFIX}")))
}

/// The highest version of `name` recorded in `state_dir`, if any.
///
/// Only `<name>.version` is read; temporary files left by an interrupted update (they start
/// with `.`) are ignored, so a crash never loses the previous mark.
pub fn read_version_mark(
    state_dir: &Path,
    name: &str,
) -> Result<Option<semver::Version>, TrustError> {
    use crate::base::capped::{CappedError, FileKind, Links, read_capped};
    let path = mark_path(state_dir, name)?;
    let corrupt = |problem| TrustError::StateCorrupt {
        path: path.clone(),
        problem,
    };
    let cap = MAX_STATEMENT_BYTES as u64;
    let bytes = match read_capped(&path, cap, Links::Refuse) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(CappedError::Open { source, .. } | CappedError::Read { source, .. }) => {
            return Err(state_io(&path)(source));
        }
        // O_NOFOLLOW's ELOOP, reported as the I/O error it has always been here.
        Err(CappedError::NotRegularFile {
            found: FileKind::Symlink,
            ..
        }) => {
            return Err(state_io(&path)(std::io::Error::from_raw_os_error(
                libc::ELOOP,
            )));
        }
        Err(CappedError::NotRegularFile { .. }) => {
            return Err(corrupt(MarkProblem::NotRegularFile));
        }
        Err(CappedError::TooLarge { .. }) => {
            return Err(corrupt(MarkProblem::TooLarge {
                max: MAX_STATEMENT_BYTES,
            }));
        }
    };
    let wire: MarkWire = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(MarkProblem::Json(crate::base::json::JsonError::new(e))))?;
    if wire.format != MARK_FORMAT || wire.name != name {
        return Err(corrupt(MarkProblem::Mismatch {
            format: wire.format,
            name: wire.name,
        }));
    }
    let v = crate::pipeline::manifest::parse_version(&wire.version)
        .map_err(|e| corrupt(MarkProblem::Version(e)))?;
    Ok(Some(v))
}

/// Holds the state directory's lock file (`flock`, exclusive) until dropped.
struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    fn acquire(dir: &Path) -> Result<StateLock, TrustError> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(state_io(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| state_io(&path)(e.into()))?;
        Ok(StateLock { _file: file })
    }
}

/// Writes `contents` to `dir/name` so that a crash leaves either the old or the new file:
/// a temporary file beside it (named with a leading `.`), fsync, rename, fsync the
/// directory.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<(), TrustError> {
    let target = dir.join(name);
    let mut n = 0u32;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 64 => n += 1,
            Err(e) => return Err(state_io(&tmp)(e)),
        }
    };
    let result = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(state_io(&target)(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(state_io(dir))
}

/// Removes temporary files an interrupted update of `name`'s mark left behind.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}{MARK_SUFFIX}.tmp.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|f| f.starts_with(&prefix))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Records `version` as seen for `name` if it is higher than the mark; refuses it if it is
/// lower. Serialized by a lock file in `state_dir`; the write is atomic and durable.
pub fn record_version(
    state_dir: &Path,
    name: &str,
    version: &semver::Version,
) -> Result<(), TrustError> {
    let _lock = StateLock::acquire(state_dir)?;
    remove_stale_temporaries(state_dir, name);
    if let Some(highest) = read_version_mark(state_dir, name)? {
        refuse_rollback(name, version, &highest)?;
        if version.cmp_precedence(&highest).is_eq() {
            return Ok(());
        }
    }
    let mark = serde_json::json!({
        "format": MARK_FORMAT,
        "name": name,
        "version": version.to_string(),
    });
    let mut bytes = format!("{mark:#}").into_bytes();
    bytes.push(b'\n');
    write_atomically(state_dir, &format!("{name}{MARK_SUFFIX}"), &bytes)?;
    tracing::info!(target: "skillgate::audit", plugin = name, version = %version, "version mark raised");
    Ok(())
}

/// Removes the version mark of `name`, so an older version may load again. This is the
/// administrative act that lowers a mark; it returns the mark that was removed.
pub fn reset_version_mark(
    state_dir: &Path,
    name: &str,
) -> Result<Option<semver::Version>, TrustError> {
    let _lock = StateLock::acquire(state_dir)?;
    let path = mark_path(state_dir, name)?;
    // A corrupt mark can be reset too: that is what an administrator would do about it.
    let old = read_version_mark(state_dir, name).unwrap_or(None);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_io(&path)(e)),
    }
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(state_io(state_dir))?;
    tracing::warn!(target: "skillgate::audit", plugin = %crate::base::escape::Escaped(name), old = ?old.as_ref().map(ToString::to_string), "version mark reset by administrator");
    Ok(old)
}

// ---------------------------------------------------------------------------------------
// Revocation statements

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationWire {
    format: String,
    revokes: KeyId,
    public_key: String,
    #[serde(default)]
    reason: Option<String>,
}

/// A revocation that took effect: which key, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    revokes: KeyId,
    reason: Option<String>,
    self_signed: bool,
    signers: Vec<KeyId>,
}

impl Revocation {
    /// The revoked key.
    pub fn revokes(&self) -> KeyId {
        self.revokes
    }
    /// The free-text reason in the statement.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// Whether the revoked key signed its own revocation.
    pub fn self_signed(&self) -> bool {
        self.self_signed
    }
    /// Every key whose signature over the statement verified.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
}

/// A revocation statement: `{"format": "skillgate-revocation-v1", "revokes": KEY_ID,
/// "public_key": BASE64, "reason": TEXT}`, stored in the trust store as `NAME.revoked`, with
/// its signatures in `NAME.revoked.sig` (the `plugin.json.sig` format, each signature over
/// [`REVOCATION_DOMAIN_TAG`] ‖ the statement bytes).
///
/// It takes effect if the revoked key itself signed it (self-revocation: a key holder who
/// lost control of the key can withdraw it), or if at least [`REVOCATION_THRESHOLD`]
/// distinct other trusted keys, none revoked by the policy or by their own statement, did.
pub struct RevocationStatement;

impl RevocationStatement {
    /// The statement bytes revoking `key`.
    pub fn create(key: &PublicKey, reason: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "format": REVOCATION_FORMAT,
            "revokes": key.id().to_string(),
            "public_key": STANDARD.encode(key.verifying_key().as_bytes()),
        });
        if let (Some(r), Some(obj)) = (reason, v.as_object_mut()) {
            obj.insert("reason".to_owned(), serde_json::Value::from(r));
        }
        let mut bytes = format!("{v:#}").into_bytes();
        bytes.push(b'\n');
        bytes
    }

    /// The key a well-formed statement revokes.
    pub fn revokes(statement: &[u8]) -> Result<KeyId, RevocationError> {
        Ok(parse_statement(statement)?.1.id())
    }

    /// Adds `signer`'s signature over `statement` to the signature file `existing` (or a new
    /// one), after checking that `statement` is well formed.
    pub fn sign(
        statement: &[u8],
        existing: Option<&[u8]>,
        signer: &SecretKey,
    ) -> Result<String, RevocationError> {
        parse_statement(statement)?;
        let mut file = match existing {
            Some(b) => SignatureFile::parse(b).map_err(RevocationError::Signatures)?,
            None => SignatureFile::new(),
        };
        let sig = signer.sign(&revocation_message(statement));
        file.add_or_replace(signer.id(), sig)
            .map_err(RevocationError::Signatures)?;
        Ok(file.to_json_pretty())
    }
}

fn revocation_message(statement: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(REVOCATION_DOMAIN_TAG.len().saturating_add(statement.len()));
    m.extend_from_slice(REVOCATION_DOMAIN_TAG);
    m.extend_from_slice(statement);
    m
}

fn parse_statement(bytes: &[u8]) -> Result<(RevocationWire, PublicKey), RevocationError> {
    if bytes.len() > MAX_STATEMENT_BYTES {
        return Err(RevocationError::TooLarge {
            max: MAX_STATEMENT_BYTES,
        });
    }
    let wire: RevocationWire = serde_json::from_slice(bytes)
        .map_err(|e| RevocationError::Json(crate::base::json::JsonError::new(e)))?;
    if wire.format != REVOCATION_FORMAT {
        return Err(RevocationError::WrongFormat { found: wire.format });
    }
    let raw = STANDARD
        .decode(wire.public_key.as_bytes())
        .map_err(|_| RevocationError::BadPublicKey)?;
    let raw = <[u8; 32]>::try_from(raw).map_err(|_| RevocationError::BadPublicKey)?;
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| RevocationError::BadPublicKey)?;
    let key = PublicKey::from_verifying_key(vk).map_err(|_| RevocationError::BadPublicKey)?;
    if key.id() != wire.revokes {
        return Err(RevocationError::KeyIdMismatch {
            claimed: wire.revokes,
            derived: key.id(),
        });
    }
    Ok((wire, key))
}

/// Checks a revocation statement and its signature file against `store`.
///
/// `self_revoked` are the keys already revoked by their own statements or the policy:
/// their signatures do not count towards revoking another key. Signatures by keys the store
/// does not hold are ignored; one by a trusted key (or the revoked key) that does not
/// verify refuses the statement.
pub fn verify_revocation(
    statement: &[u8],
    signatures: &[u8],
    store: &TrustStore,
    self_revoked: &BTreeSet<KeyId>,
) -> Result<Revocation, RevocationError> {
    let (wire, revoked_key) = parse_statement(statement)?;
    let file = SignatureFile::parse(signatures).map_err(RevocationError::Signatures)?;
    let message = revocation_message(statement);
    let mut self_signed = false;
    let mut others = Vec::new();
    let mut signers = Vec::new();
    for entry in file.entries() {
        let key = if entry.key_id() == wire.revokes {
            Some(&revoked_key)
        } else {
            store.get(&entry.key_id())
        };
        let Some(key) = key else { continue };
        key.verify_strict(&message, entry.signature())
            .map_err(|_| RevocationError::Invalid {
                key_id: entry.key_id(),
            })?;
        signers.push(entry.key_id());
        if entry.key_id() == wire.revokes {
            self_signed = true;
        } else if !self_revoked.contains(&entry.key_id()) {
            others.push(entry.key_id());
        }
    }
    if !self_signed && others.len() < REVOCATION_THRESHOLD {
        return Err(RevocationError::NotEnoughSigners {
            revokes: wire.revokes,
            signers: others,
            needed: REVOCATION_THRESHOLD,
        });
    }
    Ok(Revocation {
        revokes: wire.revokes,
        reason: wire.reason,
        self_signed,
        signers,
    })
}

/// Whether a revocation statement is signed by the key it revokes (checked without a
/// trust store); used to order self-revocations before revocations by others.
pub(crate) fn is_self_revocation(statement: &[u8], signatures: &[u8]) -> bool {
    verify_revocation(
        statement,
        signatures,
        &TrustStore::empty(),
        &BTreeSet::new(),
    )
    .is_ok_and(|r| r.self_signed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Result<TrustPolicy, PolicyError> {
        TrustPolicy::from_json(json.as_bytes(), Path::new("/etc/skillgate"))
    }

    #[test]
    fn most_specific_rule_wins() {
        let a = SecretKey::generate().id();
        let b = SecretKey::generate().id();
        let c = SecretKey::generate().id();
        let p = policy(&format!(
            r#"{{"signers":[
                {{"plugins":"*","keys":["{a}"],"threshold":1}},
                {{"plugins":"acme-*","keys":["{b}"],"threshold":1}},
                {{"plugins":"acme-db*","keys":["{c}"],"threshold":1}},
                {{"plugins":"acme-dbx","keys":["{a}"],"threshold":1}}]}}"#
        ))
        .unwrap();
        let pick = |n: &str| p.rule_for(n).unwrap().pattern().to_string();
        assert_eq!(pick("other"), "*");
        assert_eq!(pick("acme-web"), "acme-*");
        assert_eq!(pick("acme-dbtool"), "acme-db*");
        assert_eq!(pick("acme-dbx"), "acme-dbx");
        let none = policy(&format!(
            r#"{{"signers":[{{"plugins":"acme","keys":["{a}"],"threshold":1}}]}}"#
        ))
        .unwrap();
        assert!(none.rule_for("acme2").is_none());
        assert!(none.rule_for("acme").is_some());
    }

    #[test]
    fn invalid_trust_policies() {
        let a = SecretKey::generate().id();
        for (json, limit) in [
            (
                format!(r#"{{"signers":[{{"plugins":"x","keys":["{a}"],"threshold":0}}]}}"#),
                true,
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"x","keys":["{a}"],"threshold":2}}]}}"#),
                true,
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"x","keys":["{a}","{a}"],"threshold":1}}]}}"#),
                false,
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"a*b","keys":["{a}"],"threshold":1}}]}}"#),
                false,
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"","keys":["{a}"],"threshold":1}}]}}"#),
                false,
            ),
            (
                format!(
                    r#"{{"signers":[{{"plugins":"x*","keys":["{a}"],"threshold":1}},{{"plugins":"x*","keys":["{a}"],"threshold":1}}]}}"#
                ),
                false,
            ),
            (
                r#"{"signers":[{"plugins":"x","keys":["nothex"],"threshold":1}]}"#.to_owned(),
                false,
            ),
            (r#"{"revoked_keys":["12"]}"#.to_owned(), false),
            (r#"{"min_versions":{"x":"1.0"}}"#.to_owned(), false),
            (r#"{"min_versions":{"../x":"1.0.0"}}"#.to_owned(), false),
            (r#"{"expiry":{"skew_seconds":99999999}}"#.to_owned(), true),
            (r#"{"expiry":{"skew":1}}"#.to_owned(), false),
        ] {
            let err = policy(&json).unwrap_err();
            if limit {
                assert!(
                    matches!(err, PolicyError::LimitOutOfRange { .. }),
                    "{json}: {err:?}"
                );
            } else {
                assert!(matches!(err, PolicyError::Syntax(_)), "{json}: {err:?}");
            }
        }
        let err = policy(r#"{"expiry":{"warn_only":true}}"#).unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::MovedToDanger {
                    field: "expiry.warn_only",
                    danger: "danger.expired_plugins_warn_only"
                }
            ),
            "{err:?}"
        );
        let p = policy(r#"{"state_dir":"state","expiry":{"skew_seconds":60}}"#).unwrap();
        assert_eq!(p.state_dir(), Some(Path::new("/etc/skillgate/state")));
        assert_eq!(p.expiry().skew_seconds, 60);
        assert!(p.rules().is_none());
    }

    #[test]
    fn version_marks_are_atomic_and_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert_eq!(read_version_mark(dir.path(), "p").unwrap(), None);
        record_version(dir.path(), "p", &v("1.2.0")).unwrap();
        record_version(dir.path(), "p", &v("1.2.0")).unwrap();
        assert!(matches!(
            record_version(dir.path(), "p", &v("1.1.9")),
            Err(TrustError::Rollback { version, highest, .. }) if version == "1.1.9" && highest == "1.2.0"
        ));
        // Build metadata does not order versions.
        record_version(dir.path(), "p", &v("1.2.0+build5")).unwrap();
        record_version(dir.path(), "p", &v("2.0.0-rc.1")).unwrap();
        assert_eq!(
            read_version_mark(dir.path(), "p").unwrap(),
            Some(v("2.0.0-rc.1"))
        );
        // A stray temporary file from an interrupted update is ignored, then cleaned up.
        let stray = dir.path().join(".p.version.tmp.999.0");
        std::fs::write(&stray, b"{\"format\":").unwrap();
        assert_eq!(
            read_version_mark(dir.path(), "p").unwrap(),
            Some(v("2.0.0-rc.1"))
        );
        record_version(dir.path(), "p", &v("2.0.0")).unwrap();
        assert!(!stray.exists());
        assert_eq!(
            reset_version_mark(dir.path(), "p").unwrap(),
            Some(v("2.0.0"))
        );
        record_version(dir.path(), "p", &v("1.0.0")).unwrap();
        std::fs::write(dir.path().join("p.version"), b"garbage").unwrap();
        assert!(matches!(
            read_version_mark(dir.path(), "p"),
            Err(TrustError::StateCorrupt {
                problem: MarkProblem::Json(ref e),
                ..
            }) if e.kind() == crate::base::json::JsonErrorKind::Syntax
        ));
        assert!(matches!(
            read_version_mark(dir.path(), "../p"),
            Err(TrustError::StateCorrupt {
                problem: MarkProblem::BadName(ref n),
                ..
            }) if n == "../p"
        ));
        // A well-formed mark whose version is not semver: semver's error, typed.
        let mark = format!(r#"{{"format":"{MARK_FORMAT}","name":"p","version":"1.x"}}"#);
        std::fs::write(dir.path().join("p.version"), mark).unwrap();
        let err = read_version_mark(dir.path(), "p").unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::StateCorrupt {
                    problem: MarkProblem::Version(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("unexpected character"), "{err}");
    }

    /// The mark is read through the capped reader: a symlink, a FIFO and an oversize file are
    /// refused as they always were (an I/O error, corrupt, corrupt), and none of them hangs.
    #[test]
    fn a_version_mark_that_is_no_small_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = semver::Version::parse("1.0.0").unwrap();
        record_version(dir.path(), "real", &v).unwrap();
        let real = dir.path().join("real.version");
        let mark = dir.path().join("p.version");
        std::os::unix::fs::symlink(&real, &mark).unwrap();
        match read_version_mark(dir.path(), "p") {
            Err(TrustError::State { source, .. }) => {
                assert_eq!(
                    source.raw_os_error(),
                    Some(libc::ELOOP),
                    "symlink: {source}"
                );
            }
            other => panic!("symlink: {other:?}"),
        }
        std::fs::remove_file(&mark).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &mark,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(
            matches!(
                read_version_mark(dir.path(), "p"),
                Err(TrustError::StateCorrupt { .. })
            ),
            "fifo"
        );
        std::fs::remove_file(&mark).unwrap();
        std::fs::write(&mark, vec![b' '; MAX_STATEMENT_BYTES + 1]).unwrap();
        assert!(
            matches!(
                read_version_mark(dir.path(), "p"),
                Err(TrustError::StateCorrupt { .. })
            ),
            "oversize"
        );
        // The control: the file the symlink pointed at reads.
        assert_eq!(read_version_mark(dir.path(), "real").unwrap(), Some(v));
    }

    #[test]
    fn revocation_statements() {
        let victim = SecretKey::generate();
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let store = TrustStore::from_keys([victim.public(), a.public(), b.public()]).unwrap();
        let none = BTreeSet::new();
        let stmt = RevocationStatement::create(&victim.public(), Some("laptop stolen"));
        let own = RevocationStatement::sign(&stmt, None, &victim).unwrap();
        let r = verify_revocation(&stmt, own.as_bytes(), &store, &none).unwrap();
        assert!(r.self_signed());
        assert_eq!(r.revokes(), victim.id());
        assert_eq!(r.reason(), Some("laptop stolen"));
        assert!(is_self_revocation(&stmt, own.as_bytes()));
        // Self-revocation verifies without the key in the store: the statement carries it.
        verify_revocation(&stmt, own.as_bytes(), &TrustStore::empty(), &none).unwrap();

        let by_a = RevocationStatement::sign(&stmt, None, &a).unwrap();
        assert!(matches!(
            verify_revocation(&stmt, by_a.as_bytes(), &store, &none),
            Err(RevocationError::NotEnoughSigners { signers, needed: 2, .. }) if signers == [a.id()]
        ));
        let by_ab = RevocationStatement::sign(&stmt, Some(by_a.as_bytes()), &b).unwrap();
        let r = verify_revocation(&stmt, by_ab.as_bytes(), &store, &none).unwrap();
        assert!(!r.self_signed());
        // A key revoked itself does not help revoke another.
        let b_gone: BTreeSet<KeyId> = [b.id()].into();
        assert!(matches!(
            verify_revocation(&stmt, by_ab.as_bytes(), &store, &b_gone),
            Err(RevocationError::NotEnoughSigners { .. })
        ));
        // The signatures are domain-separated: a manifest signature over the same bytes
        // does not count.
        let mut file = SignatureFile::new();
        let (id, sig) = crate::trust::signature::sign_manifest(&stmt, &victim);
        file.add_or_replace(id, sig).unwrap();
        assert!(matches!(
            verify_revocation(&stmt, file.to_json_pretty().as_bytes(), &store, &none),
            Err(RevocationError::Invalid { key_id }) if key_id == victim.id()
        ));
        // A changed statement no longer verifies.
        let other = RevocationStatement::create(&victim.public(), Some("other reason"));
        assert!(matches!(
            verify_revocation(&other, own.as_bytes(), &store, &none),
            Err(RevocationError::Invalid { .. })
        ));
    }
}
