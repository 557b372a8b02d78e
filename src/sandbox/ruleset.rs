//! Landlock for the plugin's threads: the ruleset made from the plan (every right of the
//! pinned ABI handled; rules only for the grants' descriptors and the loader's directories),
//! the loader thread's second layer that refuses every write, and Landlock's errors kept
//! typed without naming the landlock crate's types in the public API.

use std::os::fd::AsFd;
use std::path::PathBuf;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::base::settings::WorkspaceAccess;

use super::{
    LANDLOCK_ABI, LANDLOCK_ABI_NUMBER, LandlockStatus, Requirement, SandboxError, SandboxPlan,
};

/// Which Landlock step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LandlockStep {
    /// Declaring the handled access rights.
    HandleAccess,
    /// Declaring the scopes.
    Scope,
    /// Creating the ruleset (`landlock_create_ruleset`).
    CreateRuleset,
    /// Adding a rule (`landlock_add_rule`).
    AddRule,
    /// Enforcing the ruleset (`no_new_privs`, `landlock_restrict_self`).
    RestrictSelf,
    /// A step this build does not name.
    Other,
}

/// A Landlock ruleset could not be built or enforced.
///
/// The landlock crate's error is kept inside, private, so the public enums name no
/// dependency's type; what it says stays reachable: the step ([`LandlockError::step`]),
/// the system error ([`LandlockError::os_error`]), and its whole
/// text through `Display`.
#[derive(Debug)]
pub struct LandlockError(landlock::RulesetError);

impl LandlockError {
    /// Which step failed.
    pub fn step(&self) -> LandlockStep {
        match &self.0 {
            landlock::RulesetError::HandleAccesses(_) => LandlockStep::HandleAccess,
            landlock::RulesetError::Scope(_) => LandlockStep::Scope,
            landlock::RulesetError::CreateRuleset(_) => LandlockStep::CreateRuleset,
            landlock::RulesetError::AddRules(_) => LandlockStep::AddRule,
            landlock::RulesetError::RestrictSelf(_)
            | landlock::RulesetError::RestrictSelfFlags(_) => LandlockStep::RestrictSelf,
            _ => LandlockStep::Other,
        }
    }

    /// The system call's error, when a system call failed.
    pub fn os_error(&self) -> Option<&std::io::Error> {
        let mut next = std::error::Error::source(&self.0);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            next = e.source();
        }
        None
    }
}

/// Wraps landlock's error (a function, not a `From`, whose impl would name the dependency's
/// type in the public API).
pub(super) fn landlock_error(e: landlock::RulesetError) -> SandboxError {
    SandboxError::Landlock(LandlockError(e))
}

impl std::fmt::Display for LandlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // landlock's message already holds its system error's text.
        self.0.fmt(f)
    }
}

/// No `source()`: landlock's message already holds its system error's text, which
/// [`LandlockError::os_error`] returns typed (crate::error's convention).
impl std::error::Error for LandlockError {}

impl SandboxPlan {
    /// A second Landlock layer on the loader thread: every write right handled, none granted.
    pub(super) fn forbid_writes(&self) -> Result<(), SandboxError> {
        let ll = landlock_error;
        let level = match self.require {
            Requirement::Full => CompatLevel::HardRequirement,
            Requirement::BestEffort => CompatLevel::BestEffort,
        };
        Ruleset::default()
            .set_compatibility(level)
            .handle_access(AccessFs::from_write(LANDLOCK_ABI))
            .map_err(ll)?
            .create()
            .map_err(ll)?
            .restrict_self()
            .map_err(ll)?;
        Ok(())
    }

    pub(super) fn apply_landlock(
        &self,
        loader_read: &[PathBuf],
    ) -> Result<(LandlockStatus, u8, usize, usize), SandboxError> {
        let ll = landlock_error;
        let abi = LANDLOCK_ABI;
        let level = match self.require {
            Requirement::Full => CompatLevel::HardRequirement,
            Requirement::BestEffort => CompatLevel::BestEffort,
        };
        let kernel_abi = kernel_landlock_abi();
        if self.require == Requirement::Full && kernel_abi < LANDLOCK_ABI_NUMBER {
            return Err(SandboxError::LandlockNotEnforced {
                status: if kernel_abi == 0 {
                    LandlockStatus::NotEnforced
                } else {
                    LandlockStatus::PartiallyEnforced
                },
                kernel_abi,
                required: LANDLOCK_ABI_NUMBER,
            });
        }
        let mut fs_rules = 0usize;
        let mut ruleset = Ruleset::default()
            .set_compatibility(level)
            .handle_access(AccessFs::from_all(abi))
            .map_err(ll)?
            .handle_access(AccessNet::from_all(abi))
            .map_err(ll)?
            .scope(Scope::from_all(abi))
            .map_err(ll)?
            .create()
            .map_err(ll)?;
        let read = AccessFs::from_read(abi);
        let read_write = AccessFs::from_all(abi);
        // The loader's directories are system paths, owned by root: opened by path.
        for path in loader_read {
            // As landlock's `PathFd` opens it (`O_PATH`, close-on-exec), keeping the typed
            // `io::Error` for the refusal.
            use std::os::unix::fs::OpenOptionsExt as _;
            let fd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(path)
                .map_err(|source| SandboxError::GrantPath {
                    path: path.clone(),
                    source,
                })?;
            let access = if path.is_dir() {
                read
            } else {
                read & AccessFs::from_file(abi)
            };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access)).map_err(ll)?;
            fs_rules += 1;
        }
        // The grants: from the descriptors the host opened, never from their paths.
        // The workspace never carries Execute (which governs `execve` only, refused by
        // seccomp anyway): reading is ReadFile and ReadDir, writing every other right.
        let workspace = self.workspace.as_ref().map(|w| {
            let access = match w.access {
                WorkspaceAccess::ReadWrite => read_write,
                _ => read,
            };
            access & !AccessFs::Execute
        });
        let accesses = std::iter::repeat_n(read, self.read.len())
            .chain(std::iter::repeat_n(read_write, self.read_write.len()))
            .chain(workspace);
        for ((fd, id), access) in self.fds.iter().zip(&self.grants).zip(accesses) {
            // A rule on a file may only carry rights that apply to files.
            let access = if id.dir {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd.as_fd(), access))
                .map_err(ll)?;
            fs_rules += 1;
        }
        let mut net_rules = 0usize;
        for port in &self.connect_tcp {
            ruleset = ruleset
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(ll)?;
            net_rules += 1;
        }
        let status = ruleset.restrict_self().map_err(ll)?;
        let landlock = match status.ruleset {
            RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
            RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
            RulesetStatus::NotEnforced => LandlockStatus::NotEnforced,
        };
        if self.require == Requirement::Full && landlock != LandlockStatus::FullyEnforced {
            return Err(SandboxError::LandlockNotEnforced {
                status: landlock,
                kernel_abi,
                required: LANDLOCK_ABI_NUMBER,
            });
        }
        Ok((
            landlock,
            kernel_abi.min(LANDLOCK_ABI_NUMBER),
            fs_rules,
            net_rules,
        ))
    }
}

/// The kernel's Landlock ABI version (0 when unavailable).
#[allow(unsafe_code)]
pub(crate) fn kernel_landlock_abi() -> u8 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes a NULL attribute pointer and size 0 and touches no
    // memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u8::try_from(v.max(0)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::sandbox::tests::plan_reading;

    /// A Landlock failure stays typed: its step, no invented system error, and landlock's
    /// own text in the sandbox error's message (which the top-level error's carries).
    #[test]
    fn a_landlock_failure_is_typed_and_keeps_its_text() {
        // Reading and writing rights are disjoint: their intersection is empty, which
        // landlock refuses on every kernel before any system call.
        let empty = AccessFs::from_read(LANDLOCK_ABI) & AccessFs::from_write(LANDLOCK_ABI);
        let failed = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(empty)
            .map(|_| ())
            .map_err(landlock_error);
        let Err(SandboxError::Landlock(e)) = failed else {
            panic!("expected Landlock, got {failed:?}");
        };
        assert_eq!(e.step(), LandlockStep::HandleAccess);
        assert!(e.os_error().is_none());
        assert!(std::error::Error::source(&e).is_none());
        let text = SandboxError::Landlock(e).to_string();
        assert!(text.contains("empty access-right"), "{text}");
    }

    /// A loader path that cannot be opened is refused with the system's typed error.
    #[test]
    fn an_unopenable_loader_path_keeps_the_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let plan = plan_reading(&[]);
        let err = plan
            .apply_landlock(std::slice::from_ref(&missing))
            .unwrap_err();
        match &err {
            SandboxError::GrantPath { path, source } => {
                assert_eq!(path, &missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected GrantPath, got {other:?}"),
        }
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
