//! The stages a plugin passes, in the order the pipeline runs them, so a refusal can name
//! where it happened from the pipeline itself rather than from the text of its message.
//!
//! The verification stage is several steps in one function (`verify::verify_dir`); it
//! records which step it is in as it goes, so an error it returns is placed exactly: a
//! symlink met while listing the files after the signature verified is a refusal of the
//! `digests` step, though its error is a `LocateError`.

use serde::Serialize;

/// One stage of the pipeline, in running order ([`Stage::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// The directory lies beneath a trusted root, reached without following a symlink.
    Locate,
    /// `plugin.json` and its signature file are read, a trusted key's signature verifies
    /// over the exact bytes, and the authentic bytes parse as a manifest.
    Manifest,
    /// The signers satisfy the trust policy: signer rules, revocation, expiry, minimum
    /// version, rollback.
    Trust,
    /// Every file is listed in the manifest with its signed size and SHA-256, and nothing
    /// else is there; the library's bytes are sealed.
    Digests,
    /// The plugin's rollback mark is raised (with a `state_dir` only).
    VersionMark,
    /// The library passes the ELF policy.
    Inspect,
    /// The grants are opened and checked, and the worker or thread restricts itself
    /// (Landlock, seccomp, `no_new_privs`) as the policy requires, confirmed by the host.
    Sandbox,
    /// The worker or thread starts, `dlopen`s the sealed bytes, and the plugin's version
    /// and metadata match the signed manifest.
    Load,
    /// One call of the plugin.
    Call,
}

impl Stage {
    /// Every stage, in running order.
    pub const ALL: [Stage; 9] = [
        Stage::Locate,
        Stage::Manifest,
        Stage::Trust,
        Stage::Digests,
        Stage::VersionMark,
        Stage::Inspect,
        Stage::Sandbox,
        Stage::Load,
        Stage::Call,
    ];

    /// Its stable name (`"locate"`, `"version_mark"`, …), as it is serialized.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Locate => "locate",
            Stage::Manifest => "manifest",
            Stage::Trust => "trust",
            Stage::Digests => "digests",
            Stage::VersionMark => "version_mark",
            Stage::Inspect => "inspect",
            Stage::Sandbox => "sandbox",
            Stage::Load => "load",
            Stage::Call => "call",
        }
    }

    /// What passing it means, in one sentence.
    pub fn passed(self) -> &'static str {
        match self {
            Stage::Locate => {
                "the directory lies beneath a trusted root, reached without following a symlink"
            }
            Stage::Manifest => {
                "a trusted key's signature verifies over plugin.json's exact bytes, which parse as a manifest"
            }
            Stage::Trust => {
                "the signers satisfy the trust policy (signer rules, revocation, expiry, minimum version, rollback)"
            }
            Stage::Digests => {
                "every file is listed with its signed size and SHA-256, and nothing else is there"
            }
            Stage::VersionMark => "the rollback mark is kept (a policy with a state_dir only)",
            Stage::Inspect => "the library passes the ELF policy",
            Stage::Sandbox => "the grants were checked; the sandbox did not refuse",
            Stage::Load => {
                "the sealed library was loaded; its version and metadata match the signed manifest"
            }
            Stage::Call => "the plugin returned a well-formed result",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
