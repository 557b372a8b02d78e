//! Restrictions for the plugin's thread, applied before `dlopen`.
//!
//! Constructors and IFUNC resolvers run inside `dlopen`, on the calling thread, so the
//! restrictions must already be in force when the library is opened (invariant 3). Two
//! layers, both bound to the calling thread and inherited by threads it creates:
//!
//! - **Landlock** handles every filesystem right of the pinned ABI, TCP bind and connect,
//!   and the abstract-unix-socket and signal scopes. The only rules are what the policy
//!   grants of what the manifest requests, plus read access for the dynamic loader to the
//!   directories of `DT_NEEDED` libraries not yet loaded in the calling process (and
//!   `/etc/ld.so.cache`), found at apply time from that process's own `/proc/self/maps`.
//!   The sealed memfd needs no rule: it lives on no visible filesystem.
//! - **seccomp** (see [`crate::sandbox::seccomp`]) is a default-deny allowlist that answers `EPERM`.
//!
//! **Grants by descriptor.** Each granted path is opened once, on the host, when the plan is
//! made: without following any symlink, checked to be the directory or file the policy's
//! canonical path named (device and inode) and not writable by others ([`crate::base::perms`]).
//! Landlock's rules are made from those descriptors, in the plugin thread or (handed over
//! at fixed numbers) in the worker, never from the path again: a symlink swapped in later,
//! by another user or by the plugin itself, changes nothing. A plugin cannot create
//! symlinks, but it may rename one into place inside a read-write grant; so no grant (of
//! the policy or of the manifest) is resolved through a symlink lying beneath a read-write
//! grant: such a path is not granted at all.
//!
//! **The workspace** a host names at load is one more grant, made as `workspace` explains.
//!
//! **No executable memory after `dlopen`.** The loader must map the library executable; the
//! plugin must not map anything it wrote. `load_sandboxed` opens the library on a
//! short-lived loader thread under its own restrictions (the plugin's grants, plus a
//! stacked Landlock layer that refuses every write, plus a filter that refuses new
//! threads), while the plugin thread restricts itself with a filter that maps nothing
//! executable. Constructors therefore cannot write code during the load, cannot leave a
//! thread behind that escapes the plugin thread's filter, and nothing after the load can
//! map code. What remains: a constructor may map executable a non-writable file it can
//! read that was written earlier (by a previous call of the plugin into a read-write
//! grant), and `vtcode_plugin_version` and `vtcode_plugin_metadata`, called on the loader
//! thread, may do the same.
//!
//! What this does not do, in thread mode: stop the plugin from writing host memory,
//! crashing or hanging the process. A thread is not a security boundary.
//!
//! This file holds the plan and how it is applied; `grants` opens and checks the granted
//! paths, `workspace` the host's workspace, `ruleset` builds the Landlock layers,
//! [`seccomp`] the filters.

mod grants;
mod ruleset;
pub(crate) mod seccomp;
mod workspace;

pub use grants::{GrantError, OsError};
use grants::{GrantId, beneath_any, open_grant, resolve_trusted};
pub(crate) use ruleset::kernel_landlock_abi;
pub use ruleset::{LandlockError, LandlockStep};
pub use workspace::WorkspaceGrant;
pub(crate) use workspace::WorkspaceOffer;
use workspace::open_workspace;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use landlock::ABI;
use serde::{Deserialize, Serialize};

use crate::base::settings::{Isolation, WorkspaceAccess};
use crate::danger::Danger;
use crate::pipeline::manifest::Capabilities;

/// The Landlock ABI this build was tested against; rights newer than it are not handled.
pub(crate) const LANDLOCK_ABI: ABI = ABI::V7;
/// [`LANDLOCK_ABI`] as a number.
pub(crate) const LANDLOCK_ABI_NUMBER: u8 = 7;

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
    pub tasks: TaskBound,
    /// The host's workspace, when one was named, requested and allowed.
    #[serde(default)]
    pub workspace: Option<WorkspaceGrant>,
}

/// What bounds the number of tasks a plugin can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum TaskBound {
    /// Nothing: thread isolation cannot bound the plugin's threads (they are the host's).
    #[default]
    Unbounded,
    /// A `pids` cgroup the host made for this worker alone, with `pids.max` = `max`.
    Cgroup {
        /// Most tasks, the worker's main thread included.
        max: u64,
    },
    /// `RLIMIT_NPROC` = `max` inside the worker's own user namespace, where the kernel
    /// counts only the worker's tasks (Linux 5.14 and later; never for root, whose tasks
    /// the kernel does not count).
    UserNamespaceRlimit {
        /// Most tasks, the worker's main thread included.
        max: u64,
    },
    /// The seccomp filter refuses every `clone`: the worker is one task.
    NoThreads,
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
    Landlock(LandlockError),
    /// A loader directory could not be opened for a rule.
    #[error("cannot open loader path {}", path.display())]
    GrantPath {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A granted path was refused when the host opened it.
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The manifest asks for more of the workspace than the policy's `sandbox.workspace`
    /// allows.
    #[error(
        "the manifest asks for workspace access {requested}; the policy's sandbox.workspace allows {allowed}"
    )]
    WorkspaceNotAllowed {
        /// The manifest's `"workspace"`.
        requested: WorkspaceAccess,
        /// The policy's `sandbox.workspace`.
        allowed: WorkspaceAccess,
    },
    /// The plan holds grants but not the descriptors that carry them (a worker that was
    /// not handed them, or handed the wrong number).
    #[error("the plan holds {expected} grants but {given} grant descriptors")]
    GrantDescriptors {
        /// Grants in the plan.
        expected: usize,
        /// Descriptors present.
        given: usize,
    },
    /// A descriptor handed to the worker is not the object the host opened.
    #[error("grant descriptor {index} ({}) is not the object the host opened", path.display())]
    GrantDescriptorMismatch {
        /// Its position.
        index: usize,
        /// The grant's path.
        path: PathBuf,
    },
    /// `/proc/self/maps` could not be read, so the loader's needs are unknown (no longer
    /// returned: the loaded objects come from the dynamic loader's own list).
    #[error("cannot read /proc/self/maps to find the libraries already loaded: {0}")]
    LoaderPlan(std::io::Error),
    /// The loader thread could not be started, or died.
    #[error("loader thread: {0}")]
    LoaderThread(LoaderThreadError),
    /// `no_new_privs` could not be set.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    /// The worker process could not restrict itself, as it reported.
    ///
    /// `detail` is the worker's own account of its [`SandboxError`] (every source
    /// included, rendered in the worker): it crossed a process boundary as text, and it is
    /// the worker's word, so nothing but text is claimed for it.
    #[error("worker: {detail}")]
    Worker {
        /// What the worker reported.
        detail: String,
    },
    /// The seccomp program could not be encoded.
    #[error("cannot build the seccomp filter: {0}")]
    SeccompProgram(seccomp::BuildError),
    /// The seccomp filter could not be installed.
    #[error("cannot install the seccomp filter: {0}")]
    Seccomp(std::io::Error),
}

// `From` without `source()`: the message already holds the inner error (crate::error docs).
impl From<seccomp::BuildError> for SandboxError {
    fn from(e: seccomp::BuildError) -> Self {
        SandboxError::SeccompProgram(e)
    }
}

/// Why the loader thread could not do its part.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderThreadError {
    /// It could not be started.
    #[error("cannot start it: {0}")]
    Spawn(std::io::Error),
    /// It panicked.
    #[error("it panicked")]
    Panicked,
    /// The plugin thread could not restrict itself, so the loader thread loads nothing.
    #[error("the plugin thread could not restrict itself")]
    PluginThreadUnrestricted,
}

/// Everything the plugin thread needs to restrict itself, computed on the host's thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxPlan {
    require: Requirement,
    read: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
    connect_tcp: Vec<u16>,
    /// `DT_NEEDED` names; which of them the loader must still map is found at apply time.
    needed: Vec<String>,
    /// What each grant is, `read` then `read_write`, in the order of `fds`.
    grants: Vec<GrantId>,
    /// A grant refused when the plan was made: applying the plan fails with it.
    refused: Option<GrantError>,
    /// The workspace granted; its descriptor is the last of `fds`.
    #[serde(default)]
    workspace: Option<WorkspaceGrant>,
    /// Whether the plugin may start threads (see [`SandboxPlan::forbid_threads`]).
    #[serde(default = "threads_allowed")]
    threads: bool,
    /// The grants' descriptors (never serialized: a worker gets them passed as descriptors).
    #[serde(skip)]
    fds: Vec<Arc<OwnedFd>>,
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

fn canonical_all(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter_map(|p| p.canonicalize().ok()).collect()
}

/// File names of the shared objects the dynamic loader has loaded into the calling process,
/// from its own list (`dl_iterate_phdr`): no system call, where reading `/proc/self/maps`
/// cost a load about 0.1 ms (issue 14). These are the objects a `DT_NEEDED` entry of the
/// plugin resolves to without a search; anything else is searched for, and its directory
/// granted to the loader thread.
#[allow(unsafe_code)]
fn loaded_objects() -> BTreeSet<String> {
    use std::os::unix::ffi::OsStrExt;
    /// Adds one object's file name to the set `data` points to.
    unsafe extern "C" fn add(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader calls this with a valid `info` for the duration of the call,
        // and `data` is the `&mut BTreeSet<String>` passed below, borrowed by nothing else
        // while `dl_iterate_phdr` runs.
        let (info, names) = unsafe { (&*info, &mut *data.cast::<BTreeSet<String>>()) };
        if !info.dlpi_name.is_null() {
            // SAFETY: `dlpi_name` is a NUL-terminated string owned by the loader, alive
            // for the duration of the callback.
            let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) };
            let path = Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()));
            if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
                names.insert(file.to_owned());
            }
        }
        0
    }
    let mut names = BTreeSet::new();
    // SAFETY: `add` matches the callback's signature and only reads what the loader hands
    // it; `names` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(add), std::ptr::from_mut(&mut names).cast()) };
    names
}

/// How a thread is restricted: the plugin thread, or the loader thread of [`load_sandboxed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The thread that serves calls, while another thread loads: nothing executable.
    Plugin,
    /// The loader thread: no writes, no threads.
    Loader,
}

impl SandboxPlan {
    /// Intersects the policy's grants with the manifest's requests and opens each granted
    /// path, the workspace included (module docs). A manifest asking for more of the
    /// workspace than the policy allows is refused here; a grant refused while opening is
    /// kept in the plan and reported when it is applied, before anything is loaded. Full
    /// enforcement is required unless `danger` gives it up ([`Danger::sandbox_best_effort`]).
    pub(crate) fn new(
        policy: &SandboxPolicy,
        danger: &Danger,
        requested: &Capabilities,
        workspace: WorkspaceOffer<'_>,
        needed: &[String],
    ) -> Result<Self, SandboxError> {
        if workspace.requested > policy.workspace {
            return Err(SandboxError::WorkspaceNotAllowed {
                requested: workspace.requested,
                allowed: policy.workspace,
            });
        }
        // Where a plugin could plant a symlink; no grant is resolved through one there.
        let mut writable = canonical_all(&policy.read_write);
        let mut refused = None;
        // The workspace first: a read-write one is where this plugin could plant symlinks.
        let workspace = match workspace.dir {
            Some(dir) if workspace.requested != WorkspaceAccess::None => {
                let write = workspace.requested == WorkspaceAccess::ReadWrite;
                match open_workspace(dir, &writable, workspace.protected, write) {
                    Ok((path, fd, id)) => {
                        if write {
                            writable.push(path.clone());
                        }
                        let grant = WorkspaceGrant {
                            path,
                            access: workspace.requested,
                        };
                        Some((grant, fd, id))
                    }
                    Err(e) => {
                        refused = Some(e);
                        None
                    }
                }
            }
            // Not requested, or no workspace named: nothing of it is granted.
            _ => None,
        };
        let resolve_all = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths
                .iter()
                .filter_map(|p| resolve_trusted(p, &writable))
                .collect()
        };
        let policy_rw = resolve_all(&policy.read_write);
        let mut policy_read = resolve_all(&policy.read);
        policy_read.extend(policy_rw.iter().cloned());
        let keep = |wanted: &[String], allowed: &[PathBuf]| -> Vec<PathBuf> {
            let mut out: Vec<PathBuf> = wanted
                .iter()
                .filter_map(|w| resolve_trusted(Path::new(w), &writable))
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

        let mut fds = Vec::new();
        let mut grants = Vec::new();
        for path in read.iter().chain(&read_write) {
            if refused.is_some() {
                break;
            }
            match open_grant(path) {
                Ok((fd, id)) => {
                    fds.push(Arc::new(fd));
                    grants.push(id);
                }
                Err(e) => refused = Some(e),
            }
        }
        let workspace = workspace.map(|(grant, fd, id)| {
            fds.push(Arc::new(fd));
            grants.push(id);
            grant
        });
        if refused.is_some() {
            fds.clear();
            grants.clear();
        }
        Ok(SandboxPlan {
            require: if danger.is_sandbox_best_effort() {
                Requirement::BestEffort
            } else {
                Requirement::Full
            },
            read,
            read_write,
            connect_tcp,
            needed: needed.to_vec(),
            grants,
            refused,
            workspace,
            threads: true,
            fds,
        })
    }

    /// The paths of the grants, in the order of their descriptors: `read`, `read_write`,
    /// then the workspace.
    fn grant_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.read
            .iter()
            .chain(&self.read_write)
            .chain(self.workspace.as_ref().map(|w| &w.path))
    }

    /// The workspace granted, if any.
    pub(crate) fn workspace(&self) -> Option<&WorkspaceGrant> {
        self.workspace.as_ref()
    }

    /// Refuses thread creation in the seccomp filter: the fallback bound on tasks where
    /// no cgroup or per-namespace rlimit can bound them.
    pub(crate) fn forbid_threads(&mut self) {
        self.threads = false;
    }

    /// Descriptors the plan holds open for its grants, in order, to be handed to a
    /// worker process (which gives them back to [`SandboxPlan::adopt_grant_fds`]).
    pub(crate) fn grant_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(|fd| fd.as_fd()).collect()
    }

    /// In a worker: takes back the descriptors [`SandboxPlan::grant_fds`] listed on the
    /// host, in the same order, checking each is the object the host opened.
    pub(crate) fn adopt_grant_fds(&mut self, fds: Vec<OwnedFd>) -> Result<(), SandboxError> {
        if fds.len() != self.grants.len() {
            return Err(SandboxError::GrantDescriptors {
                expected: self.grants.len(),
                given: fds.len(),
            });
        }
        let paths = self.grant_paths();
        for (index, ((fd, want), path)) in fds.iter().zip(&self.grants).zip(paths).enumerate() {
            if GrantId::of(fd.as_fd()).ok().as_ref() != Some(want) {
                return Err(SandboxError::GrantDescriptorMismatch {
                    index,
                    path: path.clone(),
                });
            }
        }
        self.fds = fds.into_iter().map(Arc::new).collect();
        Ok(())
    }

    /// The grant refused when the plan was made, if any: for the host to report it, typed,
    /// before it starts a worker (which could only report it as text).
    pub(crate) fn check_grants(&self) -> Result<(), GrantError> {
        self.refused.clone().map_or(Ok(()), Err)
    }

    /// The TCP ports granted.
    pub(crate) fn connect_tcp(&self) -> &[u16] {
        &self.connect_tcp
    }

    /// Fails with what made the plan unusable: a refused grant, or grant descriptors missing.
    fn usable(&self) -> Result<(), SandboxError> {
        if let Some(refused) = &self.refused {
            return Err(refused.clone().into());
        }
        let expected = self.grant_paths().count();
        if self.fds.len() != self.grants.len() || self.grants.len() != expected {
            return Err(SandboxError::GrantDescriptors {
                expected,
                given: self.fds.len(),
            });
        }
        Ok(())
    }

    /// Directories the loader must read for `DT_NEEDED` libraries the calling process has
    /// not loaded yet.
    fn loader_read(&self) -> Result<Vec<PathBuf>, SandboxError> {
        let loaded = loaded_objects();
        let mut loader_read = BTreeSet::new();
        for lib in self.needed.iter().filter(|n| !loaded.contains(n.as_str())) {
            if let Some(dir) = LIBRARY_DIRS
                .iter()
                .map(Path::new)
                .find(|d| d.join(lib).is_file())
            {
                loader_read.insert(dir.to_path_buf());
                loader_read.insert(PathBuf::from(LD_SO_CACHE));
            }
        }
        Ok(loader_read.into_iter().collect())
    }

    fn restrict(
        &self,
        isolation: Isolation,
        role: Role,
        loader_read: &[PathBuf],
    ) -> Result<Enforcement, SandboxError> {
        let (landlock, landlock_abi, fs_rules, net_rules) = self.apply_landlock(loader_read)?;
        if role == Role::Loader {
            self.forbid_writes()?;
        }
        crate::stamp!("sandbox: landlock (a thread)");
        let no_new_privs = seccomp::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
        let program = seccomp::build(seccomp::FilterOptions {
            tcp: !self.connect_tcp.is_empty(),
            tgid: std::process::id(),
            threads: self.threads && role != Role::Loader,
            exec_mappings: role != Role::Plugin,
        })?;
        crate::stamp!("sandbox: seccomp built (a thread)");
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
            loader_read: loader_read.to_vec(),
            namespaces: Vec::new(),
            tasks: TaskBound::Unbounded,
            workspace: self.workspace.clone(),
        };
        Ok(enforcement)
    }
}

/// Restricts the calling thread (the one that will serve the plugin's calls) so that it can
/// never map anything executable, and runs `load` (which calls `dlopen`) on a short-lived
/// loader thread that restricts itself first: the same grants, no writes at all, no new
/// threads, executable mappings of non-writable files allowed (module docs). `load` is
/// given what is enforced on the calling thread, fixed before any plugin code runs (a
/// worker reports it to the host from there). Returns what `load` returned and that
/// enforcement.
///
/// The loader thread is started before the calling thread restricts itself, so it inherits
/// none of the calling thread's filter. Both threads restrict themselves at the same time
/// (each restriction binds only the thread that makes it); the loader then waits until the
/// calling thread's is in force and loads nothing if it failed.
pub(crate) fn load_sandboxed<T: Send, E: From<SandboxError> + Send>(
    plan: &SandboxPlan,
    isolation: Isolation,
    load: impl FnOnce(&Enforcement) -> Result<T, E> + Send,
) -> Result<(T, Enforcement), E> {
    plan.usable()?;
    let loader_read = plan.loader_read()?;
    crate::stamp!("sandbox: loader_read (loaded objects)");
    let loader_read = loader_read.as_slice();
    std::thread::scope(|scope| {
        let (go, wait) = std::sync::mpsc::channel::<Option<Enforcement>>();
        let loader = std::thread::Builder::new()
            .name("skillgate-loader".to_owned())
            .spawn_scoped(scope, move || -> Result<T, E> {
                plan.restrict(isolation, Role::Loader, loader_read)?;
                crate::stamp!("sandbox: loader thread restricted");
                let Ok(Some(enforcement)) = wait.recv() else {
                    return Err(SandboxError::LoaderThread(
                        LoaderThreadError::PluginThreadUnrestricted,
                    )
                    .into());
                };
                load(&enforcement)
            })
            .map_err(|e| SandboxError::LoaderThread(LoaderThreadError::Spawn(e)))?;
        crate::stamp!("sandbox: loader thread spawned");
        let restricted = plan.restrict(isolation, Role::Plugin, loader_read);
        crate::stamp!("sandbox: plugin thread restricted");
        // A closed channel is the same answer as `None`.
        let _ = go.send(restricted.as_ref().ok().cloned());
        let loaded = loader
            .join()
            .map_err(|_| SandboxError::LoaderThread(LoaderThreadError::Panicked));
        let enforcement = restricted?;
        Ok((loaded??, enforcement))
    })
}

/// How much of the sandbox must be in force for a plugin to load: [`Requirement::Full`]
/// unless the policy's danger section sets
/// [`crate::danger::Danger::sandbox_best_effort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Requirement {
    /// Landlock fully enforced at the ABI this build handles, and seccomp installed;
    /// otherwise the load fails.
    #[default]
    Full,
    /// Whatever Landlock the kernel offers (reported), seccomp still required.
    BestEffort,
}

/// The sandbox section: what plugins may be granted, and how strictly it is enforced.
/// A plugin gets what its manifest requests *and* this section allows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SandboxPolicy {
    /// Paths plugins may be granted read access to (files or directories, recursively).
    pub read: Vec<PathBuf>,
    /// Paths plugins may be granted read and write access to.
    pub read_write: Vec<PathBuf>,
    /// TCP ports plugins may be granted to connect to.
    pub connect_tcp: Vec<u16>,
    /// How much of the workspace a host names at load (its directory tree) plugins may be
    /// granted, if their manifest requests it; a manifest requesting more is refused.
    pub workspace: WorkspaceAccess,
}

#[cfg(test)]
pub(in crate::sandbox) mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// A plan granting reads of `dirs` (policy and manifest both), as the sandbox's unit
    /// tests build one.
    pub(in crate::sandbox) fn plan_reading(dirs: &[&Path]) -> SandboxPlan {
        let mut policy = SandboxPolicy::default();
        let mut caps = Capabilities::default();
        for d in dirs {
            policy.read.push(d.to_path_buf());
            caps.read.push(d.to_str().unwrap().to_owned());
        }
        SandboxPlan::new(
            &policy,
            &Danger::default(),
            &caps,
            WorkspaceOffer::default(),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn a_plan_sent_without_its_descriptors_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_reading(&[dir.path()]);
        assert_eq!(plan.grant_fds().len(), 1);
        plan.usable().unwrap();
        // What a worker receives: the plan as JSON, which carries no descriptors.
        let sent: SandboxPlan =
            serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert!(matches!(
            sent.usable(),
            Err(SandboxError::GrantDescriptors {
                expected: 1,
                given: 0
            })
        ));
    }

    #[test]
    fn adopted_descriptors_must_be_the_objects_the_host_opened() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let plan = plan_reading(&[a.path()]);
        let json = serde_json::to_string(&plan).unwrap();
        let received = || serde_json::from_str::<SandboxPlan>(&json).unwrap();
        let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().unwrap();

        let mut sent = received();
        let err = sent.adopt_grant_fds(Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            SandboxError::GrantDescriptors {
                expected: 1,
                given: 0
            }
        ));

        let other = grants::open_no_symlinks(&b.path().canonicalize().unwrap()).unwrap();
        let mut sent = received();
        let err = sent.adopt_grant_fds(vec![other]).unwrap_err();
        assert!(matches!(
            err,
            SandboxError::GrantDescriptorMismatch { index: 0, .. }
        ));
        assert!(sent.usable().is_err());

        let mut sent = received();
        sent.adopt_grant_fds(vec![dup(plan.grant_fds()[0])])
            .unwrap();
        sent.usable().unwrap();
    }
}
