//! The trust policy: who may sign which plugin, which keys are revoked, which versions are
//! too old, and when a signed release stops being good.
//!
//! minisign and signify sign bytes, not versions: a validly signed old release with a known
//! hole verifies forever, one stolen key signs anything, and a key cannot be withdrawn. These
//! rules run inside the verify stage, right after the manifest's signatures verified and it
//! was parsed, on the release it states (its name, version and expiry), and answer each of
//! those threats offline:
//!
//! - **Signer rules** (`signers`): each rule names plugins by pattern, a set of key ids and a
//!   threshold. The most specific rule wins: an exact name beats every glob, and among globs
//!   (`prefix*`, `*`) the longest literal prefix wins; two rules with the same pattern are a
//!   policy error, so exactly one rule decides. A plugin no rule covers is refused. The
//!   threshold counts distinct key ids (one key is one id, derived from the key), each once;
//!   0 or more than the rule's keys is a policy error. Without a `signers` section, one
//!   signature by any trusted, unrevoked key suffices.
//! - **Revocation**: `revoked_keys` in the policy, and signed revocation statements in the
//!   trust store ([`super::revocation`]). A revoked key never counts, whatever else says.
//! - **Rollback**: with `state_dir`, the highest version that passed verification is kept
//!   per plugin name ([`super::marks`]); an older version is refused with both versions
//!   named, and `min_versions` sets a floor.
//! - **Expiry**: a signed `expires` in the manifest; expired plugins are refused unless the
//!   policy allows a clock-skew margin (`expiry`) or the danger knob
//!   [`Danger::expired_plugins_warn_only`] demotes expiry to a warning.
//!
//! The policy file's JSON for these fields is read by `policy::trust_section`, which builds
//! a [`TrustPolicy`] only from values it checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::base::name::{MAX_NAME_LEN, is_name_byte};
use crate::base::version::Version;
use crate::danger::Danger;
pub(crate) use crate::trust::error::TrustError;
use crate::trust::key_id::KeyId;
use crate::trust::marks::{read_version_mark, record_version, refuse_rollback};
use crate::trust::store::TrustStore;

/// What the trust rules judge of a plugin: the release its signed manifest states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Release<'a> {
    /// The plugin name.
    pub(crate) name: &'a str,
    /// Its version.
    pub(crate) version: Version,
    /// When the signed manifest says it expires, if it does.
    pub(crate) expires: Option<time::OffsetDateTime>,
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
    /// A plugin name, or a name prefix followed by `*`; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Pattern> {
        let (literal, glob) = match s.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        let ok = literal.len() <= MAX_NAME_LEN && literal.bytes().all(is_name_byte);
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
    /// A rule; `None` unless `threshold` is 1..=the number of keys. Built from a policy
    /// file by [`crate::policy`], which reports the values it refused.
    pub(crate) fn new(pattern: Pattern, keys: BTreeSet<KeyId>, threshold: usize) -> Option<Self> {
        (threshold >= 1 && threshold <= keys.len()).then_some(SignerRule {
            pattern,
            keys,
            threshold,
        })
    }

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

impl ExpiryPolicy {
    /// Largest clock-skew margin a policy may allow.
    pub const MAX_SKEW_SECONDS: u64 = 7 * 24 * 3600;
}

/// The trust part of a policy: who may sign what, what is revoked, what was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustPolicy {
    rules: Option<Vec<SignerRule>>,
    revoked: BTreeSet<KeyId>,
    state_dir: Option<PathBuf>,
    min_versions: BTreeMap<String, Version>,
    expiry: ExpiryPolicy,
}

impl TrustPolicy {
    /// A trust policy from values already checked (see [`SignerRule::new`]): built by
    /// [`crate::policy`] from a policy file.
    pub(crate) fn new(
        rules: Option<Vec<SignerRule>>,
        revoked: BTreeSet<KeyId>,
        state_dir: Option<PathBuf>,
        min_versions: BTreeMap<String, Version>,
        expiry: ExpiryPolicy,
    ) -> Self {
        TrustPolicy {
            rules,
            revoked,
            state_dir,
            min_versions,
            expiry,
        }
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
    pub fn min_versions(&self) -> &BTreeMap<String, Version> {
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
    /// release whose signatures by `signers` verified. Does not raise the mark. An expired
    /// plugin passes only under [`Danger::expired_plugins_warn_only`].
    pub(crate) fn check_release(
        &self,
        store: &TrustStore,
        release: &Release<'_>,
        signers: &[KeyId],
        danger: &Danger,
    ) -> Result<(), TrustError> {
        self.check_signers(store, release.name, signers)?;
        self.check_expiry(release, time::OffsetDateTime::now_utc(), danger)?;
        let name = release.name;
        let version = &release.version;
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
        release: &Release<'_>,
        now: time::OffsetDateTime,
        danger: &Danger,
    ) -> Result<(), TrustError> {
        let Some(expires) = release.expires else {
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
            plugin: release.name.to_owned(),
            version: release.version.to_string(),
            expires: fmt(expires),
            now: fmt(now),
            skew_seconds: self.expiry.skew_seconds,
        };
        if danger.is_expired_plugins_warn_only() {
            let version = release.version.to_string();
            let subject = crate::audit::Subject {
                plugin: release.name,
                version: Some(&version),
                path: None,
                sha256: None,
            };
            crate::audit::waived(&subject, "trust", &err, "danger.expired_plugins_warn_only");
            return Ok(());
        }
        Err(err)
    }

    /// Raises the release's version mark after it passed verification (no-op without
    /// `state_dir`). Refuses, under the state lock, a version older than the mark.
    pub(crate) fn record_release(&self, release: &Release<'_>) -> Result<(), TrustError> {
        match &self.state_dir {
            Some(dir) => record_version(dir, release.name, &release.version),
            None => Ok(()),
        }
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::trust::keys::SecretKey;

    fn rule(pattern: &str, key: KeyId) -> SignerRule {
        SignerRule::new(Pattern::parse(pattern).unwrap(), [key].into(), 1).unwrap()
    }

    fn with_rules(rules: Vec<SignerRule>) -> TrustPolicy {
        TrustPolicy::new(
            Some(rules),
            BTreeSet::new(),
            None,
            BTreeMap::new(),
            ExpiryPolicy::default(),
        )
    }

    #[test]
    fn most_specific_rule_wins() {
        let a = SecretKey::generate().id();
        let b = SecretKey::generate().id();
        let c = SecretKey::generate().id();
        let p = with_rules(vec![
            rule("*", a),
            rule("acme-*", b),
            rule("acme-db*", c),
            rule("acme-dbx", a),
        ]);
        let pick = |n: &str| p.rule_for(n).unwrap().pattern().to_string();
        assert_eq!(pick("other"), "*");
        assert_eq!(pick("acme-web"), "acme-*");
        assert_eq!(pick("acme-dbtool"), "acme-db*");
        assert_eq!(pick("acme-dbx"), "acme-dbx");
        let none = with_rules(vec![rule("acme", a)]);
        assert!(none.rule_for("acme2").is_none());
        assert!(none.rule_for("acme").is_some());
    }

    #[test]
    fn patterns_are_names_or_one_trailing_glob() {
        assert_eq!(Pattern::parse("*"), Some(Pattern::Prefix(String::new())));
        assert_eq!(Pattern::parse("ab*"), Some(Pattern::Prefix("ab".into())));
        assert_eq!(Pattern::parse("ab"), Some(Pattern::Exact("ab".into())));
        for bad in ["", "a*b", "**", "a/b", "a b"] {
            assert_eq!(Pattern::parse(bad), None, "{bad:?}");
        }
        let a = SecretKey::generate().id();
        let exact = Pattern::parse("x").unwrap();
        assert!(SignerRule::new(exact.clone(), [a].into(), 0).is_none());
        assert!(SignerRule::new(exact.clone(), [a].into(), 2).is_none());
        assert!(SignerRule::new(exact, [a].into(), 1).is_some());
    }
}
