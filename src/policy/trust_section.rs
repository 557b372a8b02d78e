//! The policy file's trust fields (`signers`, `revoked_keys`, `state_dir`, `min_versions`,
//! `expiry`): their JSON shape, and the one checking function that turns them into a
//! [`TrustPolicy`].
//!
//! The wire types are crate-private and `deny_unknown_fields`; every value is checked here,
//! and a refusal names the value ([`TrustSectionError`], or
//! [`PolicyError::LimitOutOfRange`] for a threshold or margin out of range), so a
//! misspelled key id or a duplicated rule is an error instead of a rule that never matches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::base::json::JsonError;
use crate::base::version::{Version, VersionError};
use crate::policy::PolicyError;
use crate::trust::key_id::KeyId;
use crate::trust::rules::{ExpiryPolicy, Pattern, SignerRule, TrustPolicy};

/// A signer rule as written in the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignerRuleWire {
    plugins: String,
    keys: Vec<String>,
    threshold: u32,
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

/// A value of the policy's trust fields that is well-formed JSON but not a valid setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustSectionError {
    /// A rule's `plugins` is neither a plugin name nor a name prefix followed by one `*`.
    #[error("signers: pattern {pattern:?} must be a plugin name, optionally ending in one '*'")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
    },
    /// Two rules have the same pattern, so neither would decide alone.
    #[error("signers: two rules for pattern {pattern:?}")]
    DuplicatePattern {
        /// The pattern.
        pattern: String,
    },
    /// A key id is not 16 hexadecimal digits.
    #[error("{field}: {value:?} is not a key id (16 hex digits)")]
    BadKeyId {
        /// Where it was (`signers.keys`, `revoked_keys`).
        field: &'static str,
        /// The value as written.
        value: String,
    },
    /// A rule lists the same key twice, which would count it twice towards the threshold.
    #[error("signers: rule {pattern} lists key {key_id} twice")]
    DuplicateKey {
        /// The rule's pattern.
        pattern: String,
        /// The repeated key.
        key_id: KeyId,
    },
    /// A `min_versions` entry is not for a plugin name.
    #[error("min_versions: {name:?} is not a plugin name")]
    BadPluginName {
        /// The name as written.
        name: String,
    },
    /// A `min_versions` value is not semver.
    #[error("min_versions.{plugin}: {value:?}")]
    BadVersion {
        /// The plugin.
        plugin: String,
        /// The version as written.
        value: String,
        /// What the semver parser said.
        source: VersionError,
    },
}

impl From<TrustSectionError> for PolicyError {
    fn from(e: TrustSectionError) -> Self {
        PolicyError::TrustSection(e)
    }
}

fn parse_key_id(field: &'static str, s: &str) -> Result<KeyId, TrustSectionError> {
    s.parse().map_err(|_| TrustSectionError::BadKeyId {
        field,
        value: s.to_owned(),
    })
}

fn signer_rule(w: SignerRuleWire, earlier: &[SignerRule]) -> Result<SignerRule, PolicyError> {
    let pattern = Pattern::parse(&w.plugins).ok_or_else(|| TrustSectionError::BadPattern {
        pattern: w.plugins.clone(),
    })?;
    if earlier.iter().any(|r| *r.pattern() == pattern) {
        return Err(TrustSectionError::DuplicatePattern {
            pattern: pattern.to_string(),
        }
        .into());
    }
    let mut keys = BTreeSet::new();
    for k in &w.keys {
        let key_id = parse_key_id("signers.keys", k)?;
        if !keys.insert(key_id) {
            return Err(TrustSectionError::DuplicateKey {
                pattern: pattern.to_string(),
                key_id,
            }
            .into());
        }
    }
    let key_count = keys.len() as u64;
    let threshold = usize::try_from(w.threshold).unwrap_or(usize::MAX);
    SignerRule::new(pattern, keys, threshold).ok_or(PolicyError::LimitOutOfRange {
        name: "signers.threshold",
        value: u64::from(w.threshold),
        max: key_count,
    })
}

/// Checks the trust fields of a policy file (paths already resolved) and builds the
/// [`TrustPolicy`] they describe.
pub(crate) fn trust_policy(
    signers: Option<Vec<SignerRuleWire>>,
    revoked_keys: Vec<String>,
    state_dir: Option<PathBuf>,
    min_versions: BTreeMap<String, String>,
    expiry: ExpiryWire,
) -> Result<TrustPolicy, PolicyError> {
    let rules = match signers {
        None => None,
        Some(wires) => {
            let mut rules: Vec<SignerRule> = Vec::with_capacity(wires.len());
            for w in wires {
                let rule = signer_rule(w, &rules)?;
                rules.push(rule);
            }
            Some(rules)
        }
    };
    let revoked = revoked_keys
        .iter()
        .map(|k| parse_key_id("revoked_keys", k))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let mut mins = BTreeMap::new();
    for (name, value) in min_versions {
        if Pattern::parse(&name) != Some(Pattern::Exact(name.clone())) {
            return Err(TrustSectionError::BadPluginName { name }.into());
        }
        let v = Version::parse(&value).map_err(|source| TrustSectionError::BadVersion {
            plugin: name.clone(),
            value,
            source,
        })?;
        mins.insert(name, v);
    }
    if expiry.warn_only.is_some() {
        return Err(PolicyError::MovedToDanger {
            field: "expiry.warn_only",
            danger: "danger.expired_plugins_warn_only",
        });
    }
    if expiry.skew_seconds > ExpiryPolicy::MAX_SKEW_SECONDS {
        return Err(PolicyError::LimitOutOfRange {
            name: "expiry.skew_seconds",
            value: expiry.skew_seconds,
            max: ExpiryPolicy::MAX_SKEW_SECONDS,
        });
    }
    Ok(TrustPolicy::new(
        rules,
        revoked,
        state_dir,
        mins,
        ExpiryPolicy {
            skew_seconds: expiry.skew_seconds,
        },
    ))
}

impl TrustPolicy {
    /// Parses just the trust fields (`signers`, `revoked_keys`, `state_dir`,
    /// `min_versions`, `expiry`) as they appear in a policy file; a relative `state_dir`
    /// resolves against `base_dir`.
    pub fn from_json(bytes: &[u8], base_dir: &Path) -> Result<Self, PolicyError> {
        let w: TrustWire =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Syntax(JsonError::new(e)))?;
        let state_dir = w
            .state_dir
            .map(|p| if p.is_absolute() { p } else { base_dir.join(p) });
        trust_policy(
            w.signers,
            w.revoked_keys,
            state_dir,
            w.min_versions,
            w.expiry,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::trust::keys::SecretKey;

    fn policy(json: &str) -> Result<TrustPolicy, PolicyError> {
        TrustPolicy::from_json(json.as_bytes(), Path::new("/etc/skillgate"))
    }

    /// A trust section and the check its exact error must pass.
    type Case = (String, Box<dyn Fn(&PolicyError) -> bool>);

    #[test]
    fn invalid_trust_policies() {
        use TrustSectionError as T;
        let a = SecretKey::generate().id();
        let cases: Vec<Case> = vec![
            (
                format!(r#"{{"signers":[{{"plugins":"x","keys":["{a}"],"threshold":0}}]}}"#),
                Box::new(|e| {
                    matches!(
                        e,
                        PolicyError::LimitOutOfRange {
                            name: "signers.threshold",
                            value: 0,
                            max: 1
                        }
                    )
                }),
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"x","keys":["{a}"],"threshold":2}}]}}"#),
                Box::new(|e| {
                    matches!(
                        e,
                        PolicyError::LimitOutOfRange {
                            name: "signers.threshold",
                            value: 2,
                            max: 1
                        }
                    )
                }),
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"x","keys":["{a}","{a}"],"threshold":1}}]}}"#),
                Box::new(move |e| {
                    matches!(e, PolicyError::TrustSection(T::DuplicateKey { pattern, key_id })
                        if pattern == "x" && *key_id == a)
                }),
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"a*b","keys":["{a}"],"threshold":1}}]}}"#),
                Box::new(
                    |e| matches!(e, PolicyError::TrustSection(T::BadPattern { pattern }) if pattern == "a*b"),
                ),
            ),
            (
                format!(r#"{{"signers":[{{"plugins":"","keys":["{a}"],"threshold":1}}]}}"#),
                Box::new(
                    |e| matches!(e, PolicyError::TrustSection(T::BadPattern { pattern }) if pattern.is_empty()),
                ),
            ),
            (
                format!(
                    r#"{{"signers":[{{"plugins":"x*","keys":["{a}"],"threshold":1}},{{"plugins":"x*","keys":["{a}"],"threshold":1}}]}}"#
                ),
                Box::new(
                    |e| matches!(e, PolicyError::TrustSection(T::DuplicatePattern { pattern }) if pattern == "x*"),
                ),
            ),
            (
                r#"{"signers":[{"plugins":"x","keys":["nothex"],"threshold":1}]}"#.to_owned(),
                Box::new(|e| {
                    matches!(e, PolicyError::TrustSection(T::BadKeyId { field: "signers.keys", value })
                        if value == "nothex")
                }),
            ),
            (
                r#"{"revoked_keys":["12"]}"#.to_owned(),
                Box::new(|e| {
                    matches!(e, PolicyError::TrustSection(T::BadKeyId { field: "revoked_keys", value })
                        if value == "12")
                }),
            ),
            (
                r#"{"min_versions":{"x":"1.0"}}"#.to_owned(),
                Box::new(|e| {
                    matches!(e, PolicyError::TrustSection(T::BadVersion { plugin, value, .. })
                        if plugin == "x" && value == "1.0")
                }),
            ),
            (
                r#"{"min_versions":{"../x":"1.0.0"}}"#.to_owned(),
                Box::new(
                    |e| matches!(e, PolicyError::TrustSection(T::BadPluginName { name }) if name == "../x"),
                ),
            ),
            (
                r#"{"expiry":{"skew_seconds":99999999}}"#.to_owned(),
                Box::new(|e| {
                    matches!(
                        e,
                        PolicyError::LimitOutOfRange {
                            name: "expiry.skew_seconds",
                            value: 99999999,
                            ..
                        }
                    )
                }),
            ),
            // An unknown field is still a JSON schema error.
            (
                r#"{"expiry":{"skew":1}}"#.to_owned(),
                Box::new(|e| matches!(e, PolicyError::Syntax(_))),
            ),
        ];
        for (json, check) in &cases {
            let err = policy(json).unwrap_err();
            assert!(check(&err), "{json}: {err:?}");
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
    fn a_valid_trust_section_builds_its_rules() {
        let a = SecretKey::generate().id();
        let b = SecretKey::generate().id();
        let p = policy(&format!(
            r#"{{"signers":[{{"plugins":"acme-*","keys":["{a}","{b}"],"threshold":2}}],
                "revoked_keys":["{b}"],"min_versions":{{"acme-db":"1.4.0"}}}}"#
        ))
        .unwrap();
        let rule = p.rule_for("acme-db").unwrap();
        assert_eq!(rule.threshold(), 2);
        assert_eq!(rule.keys().len(), 2);
        assert!(p.revoked_keys().contains(&b));
        assert_eq!(p.min_versions()["acme-db"], Version::new(1, 4, 0));
    }
}
