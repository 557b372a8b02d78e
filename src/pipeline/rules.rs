//! The trust rules applied to a parsed manifest.
//!
//! `trust/` knows no manifest: its rules judge a [`Release`] (a name, a version, an
//! expiry). This is where the verify stage hands them the release its signed, parsed
//! manifest states, so the trust layer stays below the pipeline.

use crate::danger::Danger;
use crate::pipeline::manifest::Manifest;
use crate::trust::key_id::KeyId;
use crate::trust::rules::{Release, TrustError, TrustPolicy};
use crate::trust::store::TrustStore;

fn release(manifest: &Manifest) -> Release<'_> {
    Release {
        name: manifest.name(),
        version: manifest.version().clone(),
        expires: manifest.expires(),
    }
}

impl TrustPolicy {
    /// Signer rules, revocation, expiry, minimum version and the rollback mark, for a
    /// manifest whose signatures by `signers` verified (see
    /// [`TrustPolicy::check_release`]). Does not raise the mark.
    pub(crate) fn check(
        &self,
        store: &TrustStore,
        manifest: &Manifest,
        signers: &[KeyId],
        danger: &Danger,
    ) -> Result<(), TrustError> {
        self.check_release(store, &release(manifest), signers, danger)
    }

    /// Raises the plugin's version mark after every file verified (see
    /// [`TrustPolicy::record_release`]).
    pub(crate) fn record(&self, manifest: &Manifest) -> Result<(), TrustError> {
        self.record_release(&release(manifest))
    }
}
