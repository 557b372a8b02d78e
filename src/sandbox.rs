//! Restrictions for the plugin's thread, applied before `dlopen`.
//!
//! Constructors and IFUNC resolvers run inside `dlopen`, on the calling thread, so the
//! restrictions must already be in force when the library is opened (invariant 3). Two
//! layers, both bound to the calling thread and inherited by threads it creates:
//!
//! - **Landlock** handles every filesystem right of the pinned ABI, TCP bind and connect,
//!   and the abstract-unix-socket and signal scopes. The only rules are what the policy
//!   grants of what the manifest requests, plus read access for the dynamic loader to the
//!   directories of `DT_NEEDED` libraries not yet loaded in the process (and
//!   `/etc/ld.so.cache`). The sealed memfd needs no rule: it lives on no visible
//!   filesystem.
//! - **seccomp** (see [`crate::seccomp`]) is a default-deny allowlist that answers `EPERM`.
//!
//! What this does not do, in thread mode: stop the plugin from writing host memory,
//! crashing or hanging the process. A thread is not a security boundary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

use crate::manifest::Capabilities;
use crate::policy::{Isolation, Requirement, SandboxPolicy};
use crate::seccomp;

/// The Landlock ABI this build was tested against; rights newer than it are not handled.
pub const LANDLOCK_ABI: ABI = ABI::V7;
/// [`LANDLOCK_ABI`] as a number.
pub const LANDLOCK_ABI_NUMBER: u8 = 7;

/// How completely Landlock was enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockStatus {
    /// Every right of the pinned ABI is handled.
    FullyEnforced,
    /// The kernel handles only some of them.
    PartiallyEnforced,
    /// Landlock is unavailable; nothing is enforced.
    NotEnforced,
}

/// What was actually enforced on a plugin's thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Enforcement {
    /// How the plugin is isolated.
    pub isolation: Isolation,
    /// The Landlock ABI the kernel offers (0 when Landlock is unavailable), capped at the
    /// ABI this build handles.
    pub landlock_abi: u8,
    /// Landlock's status.
    pub landlock: LandlockStatus,
    /// Whether the seccomp filter is installed.
    pub seccomp: bool,
    /// Instructions in the seccomp program.
    pub seccomp_instructions: usize,
    /// Whether `no_new_privs` is set on the thread.
    pub no_new_privs: bool,
    /// Landlock filesystem rules added.
    pub fs_rules: usize,
    /// Landlock network rules added.
    pub net_rules: usize,
    /// Paths the plugin may read (granted and requested).
    pub read: Vec<PathBuf>,
    /// Paths the plugin may read and write (granted and requested).
    pub read_write: Vec<PathBuf>,
    /// TCP ports the plugin may connect to (granted and requested).
    pub connect_tcp: Vec<u16>,
    /// Directories the dynamic loader may read to map `DT_NEEDED` libraries.
    pub loader_read: Vec<PathBuf>,
    /// Namespaces the worker process entered (process mode; empty in thread mode).
    pub namespaces: Vec<String>,
    /// What bounds the number of tasks (threads) the plugin can run, and at what count.
    #[serde(default)]
    pub tasks: crate::worker::TaskBound,
}

/// The sandbox could not be applied as the policy requires.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Landlock is not fully enforced and the policy requires it.
    #[error(
        "Landlock is {status:?} on this kernel (ABI {kernel_abi}); the policy requires it fully enforced at ABI {required}"
    )]
    LandlockNotEnforced {
        /// What was achieved.
        status: LandlockStatus,
        /// The kernel's ABI (0 when unavailable).
        kernel_abi: u8,
        /// The ABI this build handles.
        required: u8,
    },
    /// The Landlock ruleset could not be built or applied.
    #[error("Landlock: {0}")]
    Landlock(String),
    /// A granted path could not be opened for a rule.
    #[error("cannot open granted path {path}: {detail}")]
    GrantPath {
        /// The path.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// `no_new_privs` could not be set.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    /// The worker process could not restrict itself (its report).
    #[error("worker: {0}")]
    Worker(String),
    /// The seccomp filter could not be installed.
    #[error("cannot install the seccomp filter: {0}")]
    Seccomp(std::io::Error),
}

/// Everything the plugin thread needs to restrict itself, computed on the host's thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxPlan {
    require: Requirement,
    read: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
    connect_tcp: Vec<u16>,
    loader_read: Vec<PathBuf>,
    /// Whether the plugin may start threads (see [`SandboxPlan::forbid_threads`]).
    #[serde(default = "threads_allowed")]
    threads: bool,
}

fn threads_allowed() -> bool {
    true
}

/// Directories searched for `DT_NEEDED` libraries, as the loader's default path does.
const LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
const LD_SO_CACHE: &str = "/etc/ld.so.cache";

fn beneath_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

fn canonical_all(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter_map(|p| p.canonicalize().ok()).collect()
}

/// File names of the shared objects already mapped into this process.
fn loaded_objects() -> BTreeSet<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| Path::new(p).file_name()?.to_str().map(str::to_owned))
        .collect()
}

impl SandboxPlan {
    /// Intersects the policy's grants with the manifest's requests and finds what the
    /// loader will need to read.
    pub(crate) fn new(policy: &SandboxPolicy, requested: &Capabilities, needed: &[String]) -> Self {
        let policy_rw = canonical_all(&policy.read_write);
        let mut policy_read = canonical_all(&policy.read);
        policy_read.extend(policy_rw.iter().cloned());
        let keep = |wanted: &[String], allowed: &[PathBuf]| -> Vec<PathBuf> {
            let mut out: Vec<PathBuf> = wanted
                .iter()
                .filter_map(|w| Path::new(w).canonicalize().ok())
                .filter(|p| beneath_any(p, allowed))
                .collect();
            out.sort();
            out.dedup();
            out
        };
        let read = keep(&requested.read, &policy_read);
        let read_write = keep(&requested.read_write, &policy_rw);
        let mut connect_tcp: Vec<u16> = requested
            .connect_tcp
            .iter()
            .copied()
            .filter(|p| policy.connect_tcp.contains(p))
            .collect();
        connect_tcp.sort_unstable();
        connect_tcp.dedup();

        let loaded = loaded_objects();
        let mut loader_read = BTreeSet::new();
        for lib in needed.iter().filter(|n| !loaded.contains(n.as_str())) {
            if let Some(dir) = LIBRARY_DIRS
                .iter()
                .map(Path::new)
                .find(|d| d.join(lib).is_file())
            {
                loader_read.insert(dir.to_path_buf());
                loader_read.insert(PathBuf::from(LD_SO_CACHE));
            }
        }
        SandboxPlan {
            require: policy.require,
            read,
            read_write,
            connect_tcp,
            loader_read: loader_read.into_iter().collect(),
            threads: true,
        }
    }

    /// Refuses thread creation in the seccomp filter: the fallback bound on tasks where
    /// no cgroup or per-namespace rlimit can bound them.
    #[allow(
        dead_code,
        reason = "interface for the worker; wired in the same change series"
    )]
    pub(crate) fn forbid_threads(&mut self) {
        self.threads = false;
    }

    /// Descriptors the plan holds open for its grants, in order, to be handed to a
    /// worker process (which gives them back to [`SandboxPlan::adopt_grant_fds`]).
    #[allow(
        dead_code,
        reason = "interface for the worker; wired in the same change series"
    )]
    pub(crate) fn grant_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        Vec::new()
    }

    /// In a worker: takes back the descriptors [`SandboxPlan::grant_fds`] listed on the
    /// host, in the same order, checking each is the object the host opened.
    #[allow(
        dead_code,
        reason = "interface for the worker; wired in the same change series"
    )]
    pub(crate) fn adopt_grant_fds(
        &mut self,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<(), SandboxError> {
        if fds.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Worker(format!(
                "{} grant descriptors given, the plan holds none",
                fds.len()
            )))
        }
    }

    /// The TCP ports granted.
    pub(crate) fn connect_tcp(&self) -> &[u16] {
        &self.connect_tcp
    }

    /// Restricts the calling thread. Call it on the plugin's thread, before `dlopen`.
    pub(crate) fn apply(&self, isolation: Isolation) -> Result<Enforcement, SandboxError> {
        let (landlock, landlock_abi, fs_rules, net_rules) = self.apply_landlock()?;
        let no_new_privs = seccomp::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
        let program = seccomp::build(seccomp::FilterOptions {
            tcp: !self.connect_tcp.is_empty(),
            tgid: std::process::id(),
            threads: self.threads,
        });
        seccomp::install(&program).map_err(SandboxError::Seccomp)?;
        let enforcement = Enforcement {
            isolation,
            landlock_abi,
            landlock,
            seccomp: true,
            seccomp_instructions: program.len(),
            no_new_privs,
            fs_rules,
            net_rules,
            read: self.read.clone(),
            read_write: self.read_write.clone(),
            connect_tcp: self.connect_tcp.clone(),
            loader_read: self.loader_read.clone(),
            namespaces: Vec::new(),
            tasks: crate::worker::TaskBound::Unbounded,
        };
        Ok(enforcement)
    }

    fn apply_landlock(&self) -> Result<(LandlockStatus, u8, usize, usize), SandboxError> {
        let ll = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
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
        let grants = self
            .loader_read
            .iter()
            .chain(&self.read)
            .map(|p| (p, read))
            .chain(self.read_write.iter().map(|p| (p, read_write)));
        for (path, access) in grants {
            let fd = PathFd::new(path).map_err(|e| SandboxError::GrantPath {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            // A rule on a file may only carry rights that apply to files.
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access)).map_err(ll)?;
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
pub fn kernel_landlock_abi() -> u8 {
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
