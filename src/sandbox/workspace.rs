//! The workspace: the directory a host names when it loads a plugin, granted as one more
//! grant.
//!
//! A plugin gets it if its signed manifest asks (`"workspace": "read"` or `"read_write"`) and
//! the policy's `sandbox.workspace` allows that much. A manifest asking for more is refused
//! ([`super::SandboxError::WorkspaceNotAllowed`]) whether or not this load names a
//! workspace, so the mismatch shows on every host, not only on the one that names one. A
//! plugin that asks for none is granted nothing of a workspace named, and one that asks is
//! granted nothing when none is named.
//!
//! The directory is the host's choice, not the plugin's, but it is still a path that others
//! (or an earlier plugin) may have shaped: it is canonicalized and opened like every grant
//! (no symlink beneath a read-write grant on the way, by descriptor, not writable by
//! others) when the plugin loads, and must be a directory whose canonical path is UTF-8
//! (the plugin is told it as `workspace_root`, a JSON string). A workspace the plugin may
//! write must not hold or lie inside what decides which code the host runs (trusted roots,
//! the trust store, rollback marks, the worker and host executables): a plugin writing
//! there could add a trusted key or replace the worker. A read-write workspace counts as a
//! read-write grant for the symlink rule of the other grants.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::settings::WorkspaceAccess;

use super::grants::{GrantError, GrantId, OsError, open_grant, resolve_trusted};

/// The workspace directory a plugin was granted, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkspaceGrant {
    /// Its canonical path: the `workspace_root` of every call's context.
    pub path: PathBuf,
    /// [`WorkspaceAccess::Read`] or [`WorkspaceAccess::ReadWrite`].
    pub access: WorkspaceAccess,
}

/// What a load brings for the workspace: the directory the host named (if any), how much
/// of it the manifest requests, and what a read-write workspace must not overlap.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WorkspaceOffer<'a> {
    /// The directory the host named for this load.
    pub(crate) dir: Option<&'a Path>,
    /// The manifest's `"workspace"`.
    pub(crate) requested: WorkspaceAccess,
    /// What decides which code the host runs (trusted roots, trust store, rollback marks,
    /// worker): a workspace the plugin may write must not overlap it.
    pub(crate) protected: &'a [PathBuf],
}

/// Opens the workspace a host named at load (module docs): its
/// canonical path, reached through no symlink beneath `writable` (canonical read-write
/// grants), UTF-8, a directory, checked and opened as every grant is. A workspace the
/// plugin may write must not overlap any of `protected`.
pub(super) fn open_workspace(
    dir: &Path,
    writable: &[PathBuf],
    protected: &[PathBuf],
    write: bool,
) -> Result<(PathBuf, OwnedFd, GrantId), GrantError> {
    let canonical = std::fs::canonicalize(dir).map_err(|e| GrantError::Open {
        path: dir.to_path_buf(),
        source: OsError::from_io(&e),
    })?;
    let Some(trusted) = resolve_trusted(dir, writable) else {
        return Err(GrantError::ThroughWritableSymlink {
            path: dir.to_path_buf(),
        });
    };
    if trusted != canonical {
        return Err(GrantError::Changed { path: canonical });
    }
    if canonical.to_str().is_none() {
        return Err(GrantError::NotUtf8 { path: canonical });
    }
    // Checked on the descriptor again below; this gives a file its own refusal first.
    if !std::fs::metadata(&canonical).is_ok_and(|m| m.is_dir()) {
        return Err(GrantError::NotADirectory { path: canonical });
    }
    if write
        && let Some(p) = protected
            .iter()
            .filter_map(|p| p.canonicalize().ok())
            .find(|p| p.starts_with(&canonical) || canonical.starts_with(p))
    {
        return Err(GrantError::Protected {
            path: canonical,
            protected: p,
        });
    }
    let (fd, id) = open_grant(&canonical)?;
    if !id.dir {
        return Err(GrantError::NotADirectory { path: canonical });
    }
    Ok((canonical, fd, id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::os::fd::BorrowedFd;

    use super::*;
    use crate::danger::Danger;
    use crate::pipeline::manifest::Capabilities;
    use crate::sandbox::{SandboxError, SandboxPlan, SandboxPolicy, grants};

    /// A plan granting reads of `dir` and the workspace `ws` for `requested` under a policy
    /// allowing `allowed`.
    fn plan_with_workspace(
        dir: &Path,
        ws: &Path,
        requested: WorkspaceAccess,
        allowed: WorkspaceAccess,
    ) -> Result<SandboxPlan, SandboxError> {
        let mut policy = SandboxPolicy::default();
        policy.read.push(dir.to_path_buf());
        policy.workspace = allowed;
        let caps = Capabilities {
            read: vec![dir.to_str().unwrap().to_owned()],
            ..Capabilities::default()
        };
        let offer = WorkspaceOffer {
            dir: Some(ws),
            requested,
            protected: &[],
        };
        SandboxPlan::new(&policy, &Danger::default(), &caps, offer, &[])
    }

    #[test]
    fn the_workspace_is_granted_only_as_far_as_requested_and_allowed() {
        use WorkspaceAccess::{None, Read, ReadWrite};
        let dir = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let canonical = ws.path().canonicalize().unwrap();
        for (requested, allowed, granted) in [
            (None, None, false),
            (None, ReadWrite, false),
            (Read, Read, true),
            (Read, ReadWrite, true),
            (ReadWrite, ReadWrite, true),
        ] {
            let plan = plan_with_workspace(dir.path(), ws.path(), requested, allowed).unwrap();
            plan.usable().unwrap();
            let expected = granted.then(|| WorkspaceGrant {
                path: canonical.clone(),
                access: requested,
            });
            assert_eq!(
                plan.workspace(),
                expected.as_ref(),
                "{requested} under {allowed}"
            );
            assert_eq!(plan.grant_fds().len(), 1 + usize::from(granted));
        }
        for (requested, allowed) in [(Read, None), (ReadWrite, None), (ReadWrite, Read)] {
            let err = plan_with_workspace(dir.path(), ws.path(), requested, allowed).unwrap_err();
            assert!(
                matches!(err, SandboxError::WorkspaceNotAllowed { requested: r, allowed: a }
                    if r == requested && a == allowed),
                "{err:?}"
            );
        }
    }

    /// A symlink in a read-write workspace (the plugin could have renamed it there) resolves
    /// none of the other grants, as one in a policy read-write grant does.
    #[test]
    fn a_symlink_in_a_read_write_workspace_resolves_no_grant() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (ws, data) = (base.join("ws"), base.join("data"));
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let planted = ws.join("link");
        std::os::unix::fs::symlink(&data, &planted).unwrap();
        let plan = |requested| {
            let mut policy = SandboxPolicy::default();
            policy.read.push(data.clone());
            policy.workspace = WorkspaceAccess::ReadWrite;
            let caps = Capabilities {
                read: vec![planted.to_str().unwrap().to_owned()],
                ..Capabilities::default()
            };
            let offer = WorkspaceOffer {
                dir: Some(&ws),
                requested,
                protected: &[],
            };
            SandboxPlan::new(&policy, &Danger::default(), &caps, offer, &[]).unwrap()
        };
        // The control: with a read workspace the manifest's path resolves to the grant.
        assert_eq!(plan(WorkspaceAccess::Read).read, vec![data.clone()]);
        let rw = plan(WorkspaceAccess::ReadWrite);
        assert!(rw.read.is_empty(), "{:?}", rw.read);
        assert_eq!(rw.grant_fds().len(), 1);
    }

    #[test]
    fn a_worker_checks_the_workspace_descriptor_like_every_grant() {
        let dir = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let plan = plan_with_workspace(
            dir.path(),
            ws.path(),
            WorkspaceAccess::Read,
            WorkspaceAccess::Read,
        )
        .unwrap();
        let json = serde_json::to_string(&plan).unwrap();
        let received = || serde_json::from_str::<SandboxPlan>(&json).unwrap();
        let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().unwrap();
        let fds = plan.grant_fds();
        assert!(matches!(
            received().usable(),
            Err(SandboxError::GrantDescriptors {
                expected: 2,
                given: 0
            })
        ));
        // The read grant's descriptor alone: one short.
        let err = received().adopt_grant_fds(vec![dup(fds[0])]).unwrap_err();
        assert!(matches!(
            err,
            SandboxError::GrantDescriptors {
                expected: 2,
                given: 1
            }
        ));
        // Another directory where the workspace should be: refused, naming the workspace.
        let wrong = grants::open_no_symlinks(&other.path().canonicalize().unwrap()).unwrap();
        let err = received()
            .adopt_grant_fds(vec![dup(fds[0]), wrong])
            .unwrap_err();
        assert!(
            matches!(&err, SandboxError::GrantDescriptorMismatch { index: 1, path }
                if *path == ws.path().canonicalize().unwrap()),
            "{err:?}"
        );
        let mut sent = received();
        sent.adopt_grant_fds(vec![dup(fds[0]), dup(fds[1])])
            .unwrap();
        sent.usable().unwrap();
        assert_eq!(sent.workspace(), plan.workspace());
    }
}
