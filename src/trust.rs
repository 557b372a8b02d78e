//! (in progress: issue 6) Signer rules, revocation, rollback and expiry.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::policy::PolicyError;

/// A signer rule as written in the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read once issue 6 lands
pub(crate) struct SignerRuleWire {
    pub plugins: String,
    pub keys: Vec<String>,
    pub threshold: u32,
}

/// Expiry handling as written in the policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpiryWire {}

/// The trust part of a policy: who may sign what, what is revoked, what was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustPolicy {}

impl TrustPolicy {
    /// Validates the trust fields of a policy file (paths already resolved).
    pub(crate) fn from_wire(
        _signers: Option<Vec<SignerRuleWire>>,
        _revoked_keys: Vec<String>,
        _state_dir: Option<PathBuf>,
        _min_versions: BTreeMap<String, String>,
        _expiry: ExpiryWire,
    ) -> Result<Self, PolicyError> {
        Ok(TrustPolicy {})
    }
}
