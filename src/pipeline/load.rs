//! Loading: the sealed, verified library handed to the dynamic loader.
//!
//! The loader is given `/proc/self/fd/N` of the sealed memfd, never the path on disk, so
//! the file it maps is the one whose bytes were hashed (invariant 2). `RTLD_NOW` resolves
//! every symbol at load time, `RTLD_LOCAL` keeps the plugin's symbols out of the global
//! namespace. This runs on the plugin's own thread: constructors and IFUNC resolvers run
//! inside `dlopen`, in the calling thread, and that thread is where restrictions apply.
//!
//! **Unload policy: a plugin library is never unloaded.** A Rust plugin may have started
//! threads or registered thread-local destructors that would run into unmapped code after
//! `dlclose`. The memfd that names the library stays open for the life of the process
//! too: glibc recognises an already-loaded object by the name it was opened under, so if
//! the descriptor number were freed and reused for another plugin's memfd,
//! `dlopen("/proc/self/fd/N")` would hand back the first plugin.

use std::ffi::c_char;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::PathBuf;

use crate::base::ffi::{SYMBOL_EXECUTE, SYMBOL_FREE_STRING, SYMBOL_METADATA, SYMBOL_VERSION};
use crate::base::sealed::SealedFile;
use crate::pipeline::inspect::{InspectReport, Inspected};
use crate::pipeline::manifest::{Manifest, hex_digest};
use crate::trust::key_id::KeyId;

/// The one value [`dlopen_sealed`] accepts: sealed library bytes that passed inspection.
///
/// It has two constructors and no other way in, so inside the crate as at its boundary no
/// code path hands the dynamic loader bytes that were not inspected: [`Loadable::unpack`]
/// takes an [`Inspected`] (which only the inspection stage builds), and
/// [`Loadable::recheck`] is the worker's side of the same value: a descriptor it received,
/// accepted only if all four seals are on it and its size and SHA-256 are those of the
/// inspected library, which the host sent from the signed manifest.
#[derive(Debug)]
pub(crate) struct Loadable(SealedFile);

/// An [`Inspected`] taken apart for loading: the library as a [`Loadable`] and the rest.
pub(crate) struct Unpacked {
    pub(crate) path: PathBuf,
    pub(crate) manifest: Manifest,
    pub(crate) signers: Vec<KeyId>,
    pub(crate) report: InspectReport,
    pub(crate) library: Loadable,
}

/// Why a worker would not load the descriptor it was given ([`Loadable::recheck`]).
#[derive(Debug)]
pub(crate) enum Recheck {
    /// The descriptor is not the signed, sealed library.
    Refused(LibraryRefusal),
    /// The descriptor could not be examined.
    Io(&'static str, std::io::Error),
}

impl Loadable {
    /// Takes an inspected bundle apart, its library becoming the value `dlopen` accepts:
    /// a small library's held bytes are sealed into their memfd here
    /// ([`crate::base::sealed::VerifiedBytes`]), a larger one's memfd is taken as it is.
    pub(crate) fn unpack(inspected: Inspected) -> Result<Unpacked, LoadError> {
        let (bundle, report) = inspected.into_parts();
        let (path, manifest, signers, library) = bundle.into_parts();
        let library = library
            .into_sealed(manifest.name())
            .map_err(LoadError::Seal)?;
        Ok(Unpacked {
            path,
            manifest,
            signers,
            report,
            library: Loadable(library),
        })
    }

    /// Accepts a library descriptor a worker was handed only if it is sealed against every
    /// change (else its bytes could change after this check) and holds exactly `size`
    /// bytes whose SHA-256 is `sha256`.
    pub(crate) fn recheck(memfd: OwnedFd, size: u64, sha256: &[u8; 32]) -> Result<Self, Recheck> {
        use sha2::{Digest, Sha256};
        let present = rustix::fs::fcntl_get_seals(&memfd)
            .map_err(|e| Recheck::Io("cannot read the library's seals", e.into()))?;
        let required = crate::base::sealed::required_seals();
        if !present.contains(required) {
            return Err(Recheck::Refused(LibraryRefusal::Unsealed {
                present: present.bits(),
                required: required.bits(),
            }));
        }
        let library = SealedFile::from_inherited(memfd)
            .map_err(|e| Recheck::Io("cannot use the library descriptor", e))?;
        if library.len() != size {
            return Err(Recheck::Refused(LibraryRefusal::Size {
                expected: size,
                actual: library.len(),
            }));
        }
        let map = library
            .map()
            .map_err(|e| Recheck::Io("cannot map the library", e))?;
        let actual: [u8; 32] = Sha256::digest(map.as_ref()).into();
        drop(map);
        if actual != *sha256 {
            return Err(Recheck::Refused(LibraryRefusal::Digest {
                expected: hex_digest(sha256),
                actual: hex_digest(&actual),
            }));
        }
        Ok(Loadable(library))
    }

    /// The sealed file, to hand its descriptor to a worker (which re-checks it).
    pub(crate) fn sealed(&self) -> &SealedFile {
        &self.0
    }
}

pub(crate) type VersionFn = unsafe extern "C" fn() -> u32;
pub(crate) type MetadataFn = unsafe extern "C" fn() -> *const c_char;
pub(crate) type ExecuteFn = unsafe extern "C" fn(*const c_char) -> *const c_char;
pub(crate) type FreeStringFn = unsafe extern "C" fn(*const c_char);

/// Why the dynamic loader refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// `dlopen` failed.
    ///
    /// `detail` is the loader's own message (`dlerror`, which names the object and what it
    /// lacked). It is text because that is all the loader gives: glibc reports a failure
    /// as a string, and libloading's error only wraps that string under "dlopen failed".
    /// Nothing typed is flattened here, and the same text crosses a worker's channel
    /// unchanged. The path opened is `/proc/self/fd/N` of the sealed memfd, meaningless to
    /// a reader, so it is not a field (the loader's text starts with it anyway).
    #[error("dlopen failed: {detail}")]
    Dlopen {
        /// The dynamic loader's message.
        detail: String,
    },
    /// A required symbol could not be resolved after loading.
    #[error("symbol {name} not found after loading: {detail}")]
    Symbol {
        /// The symbol.
        name: &'static str,
        /// What the loader said.
        detail: String,
    },
    /// The worker process could not set itself up before loading, as it reported.
    ///
    /// `detail` is the worker's own account (its error and every source, rendered in the
    /// worker): it crossed a process boundary as text, and it is the worker's word, so
    /// nothing but text is claimed for it.
    #[error("worker: {detail}")]
    Worker {
        /// What the worker reported.
        detail: String,
    },
    /// The worker process could not be started.
    #[error("cannot start the worker {}", path.display())]
    WorkerStart {
        /// The worker executable.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker could not send its enforcement report to the host, so it loads nothing.
    #[error("cannot send the enforcement report: {0}")]
    Report(std::io::Error),
    /// Process isolation has no worker: this executable cannot serve as its own (it did not
    /// call `skillgate::worker::run_if_worker` at the top of `main`, or could not), no policy
    /// `worker` is set, and no `skillgate-worker` lies beside the executable.
    #[error(
        "no worker for process isolation: {this_executable}, and no `skillgate-worker` at {}; \
         call `skillgate::worker::run_if_worker()` first thing in `main`, or set `worker` in \
         the policy",
        paths(searched)
    )]
    WorkerNotFound {
        /// Why this executable cannot be re-executed as the worker.
        this_executable: SelfWorker,
        /// The `skillgate-worker` paths looked at.
        searched: Vec<PathBuf>,
    },
    /// The policy's `worker` is not a file (an explicit worker is used or nothing is).
    #[error("the policy's worker {} is not a file", path.display())]
    WorkerMissing {
        /// The configured path.
        path: PathBuf,
    },
    /// The plugin thread could not be started.
    #[error("cannot start the plugin thread: {0}")]
    Thread(std::io::Error),
    /// The verified bytes of a small library, held since verification, could not be
    /// sealed into the memfd the loader is given (no memory, or no descriptor left).
    #[error("cannot seal the verified library into a memfd: {0}")]
    Seal(std::io::Error),
    /// The worker refused the library it was handed, before `dlopen`: what sat on its
    /// library descriptor was not the sealed copy of the verified bytes.
    #[error("the worker refused the library: {0}")]
    Refused(LibraryRefusal),
    /// The verified manifest names no entry for its library, so there is no digest for the
    /// worker to check the library against.
    #[error("the manifest has no entry for its library")]
    NoLibraryEntry,
    /// Reloading or restarting a plugin needs process isolation: a thread-mode library is
    /// never unloaded (see this module's unload policy) and its thread cannot be ended.
    #[error(
        "cannot {operation} plugin {plugin:?} under thread isolation: its library is never unloaded and its thread cannot be ended; use process isolation"
    )]
    ThreadIsolation {
        /// What was asked: `"reload"` or `"restart"`.
        operation: &'static str,
        /// The plugin's name.
        plugin: String,
    },
    /// A reload found another plugin (another manifest name) where the loaded one was.
    #[error(
        "reload of plugin {loaded:?} found plugin {found:?} instead; the loaded one keeps serving"
    )]
    OtherPlugin {
        /// The name of the plugin serving.
        loaded: String,
        /// The name in the new release's signed manifest.
        found: String,
    },
    /// Thread isolation already keeps `limit` distinct libraries loaded in this process (a
    /// library is never unloaded), so a new one is refused (policy
    /// `limits.thread_mode_libraries`). Loading bytes already loaded is never refused.
    #[error(
        "thread isolation keeps {resident} distinct libraries loaded in this process, the \
         limit is {limit} (limits.thread_mode_libraries): a library never unloads, so this \
         new one is refused"
    )]
    ThreadLibraryLimit {
        /// Distinct libraries loaded (and reserved by loads under way) when refused.
        resident: usize,
        /// The policy's `limits.thread_mode_libraries`.
        limit: usize,
    },
}

fn paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "no path (the executable's own path is unknown)".to_owned();
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(" or ")
}

/// Whether this executable can be re-executed as its own worker: what
/// `skillgate::worker::run_if_worker` found when (and if) this process called it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelfWorker {
    /// The hook ran first in `main`: the Gate re-executes this executable as the worker.
    #[error("this executable serves as its own worker")]
    Ready,
    /// The hook was never called in this process.
    #[error("this executable did not call `skillgate::worker::run_if_worker()`")]
    NotCalled,
    /// The hook was called with other threads running (or their number unreadable): the
    /// same code would run before the hook in a re-executed worker, and a thread it started
    /// there would be outside the worker's sandbox (Landlock and seccomp bind the threads
    /// that restrict themselves).
    #[error(
        "this executable called `skillgate::worker::run_if_worker()` with {} threads running \
         (it must run before any thread starts)",
        threads.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
    )]
    Threaded {
        /// The threads counted, if `/proc/self/status` could be read.
        threads: Option<u64>,
    },
    /// The process was started with elevated privileges (setuid, setgid or file
    /// capabilities; `AT_SECURE`): whoever starts it as a worker could have it load code of
    /// their choosing with privileges they do not hold, so it never serves as one.
    #[error("this executable runs with elevated privileges (setuid, setgid or capabilities)")]
    Privileged,
}

/// Why a worker refused the library descriptor it was given. The worker checks these itself
/// before `dlopen` rather than take the word of whoever started it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "refused", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum LibraryRefusal {
    /// The memfd lacks one of `F_SEAL_WRITE`, `F_SEAL_GROW`, `F_SEAL_SHRINK`, `F_SEAL_SEAL`:
    /// its bytes could still change after they were checked.
    #[error("its memfd is not sealed (seals {present:#x}, required {required:#x})")]
    Unsealed {
        /// The seals present (`F_GET_SEALS`).
        present: u32,
        /// The seals required.
        required: u32,
    },
    /// Its size is not the signed one.
    #[error("it is {actual} bytes, the signed manifest says {expected}")]
    Size {
        /// The signed size.
        expected: u64,
        /// The memfd's size.
        actual: u64,
    },
    /// Its SHA-256 is not the signed digest.
    #[error("its sha256 is {actual}, the signed manifest says {expected}")]
    Digest {
        /// The signed digest (hex).
        expected: String,
        /// The memfd's digest (hex).
        actual: String,
    },
}

/// The plugin's entry points. The library they point into is never unloaded, so the
/// pointers stay valid for the life of the process.
#[derive(Clone, Copy)]
pub(crate) struct PluginSymbols {
    pub version: VersionFn,
    pub metadata: MetadataFn,
    pub execute: ExecuteFn,
    pub free_string: Option<FreeStringFn>,
    /// The optional `skillgate_plugin_host_v1` (the host extension ABI).
    pub host_init: Option<crate::base::host_abi::HostInitFn>,
}

impl std::fmt::Debug for PluginSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSymbols")
            .field("free_string", &self.free_string.is_some())
            .field("host_init", &self.host_init.is_some())
            .finish_non_exhaustive()
    }
}

/// Maps the sealed library and resolves the ABI. Runs the library's constructors.
///
/// On success the library and its memfd are kept for the life of the process (see the
/// module documentation); on failure the memfd is closed.
#[allow(unsafe_code)]
pub(crate) fn dlopen_sealed(library: Loadable) -> Result<PluginSymbols, LoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    let Loadable(library) = library;
    let path = library.proc_path();
    // SAFETY: loading runs the library's initialisers. The bytes passed signature, hash
    // and ELF inspection; running them on this, the plugin's own thread, is the purpose
    // of the call.
    let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
        LoadError::Dlopen {
            detail: dlerror_text(&e),
        }
    })?;
    let symbols = resolve(&lib)?;
    // Never dlclose (module docs): forget the handle, keep the descriptor open.
    std::mem::forget(lib);
    let _kept_open_forever = library.into_owned_fd().into_raw_fd();
    Ok(symbols)
}

/// The loader's words for a failed `dlopen` or `dlsym`: the messages of `e`'s sources (dlerror's
/// text), or `e`'s own message when it has none. libloading's top-level message ("dlopen
/// failed") is left out, since [`LoadError::Dlopen`] says it already.
pub(crate) fn dlerror_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = e.source();
    while let Some(source) = next {
        parts.push(source.to_string());
        next = source.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

#[allow(unsafe_code)]
fn resolve(lib: &libloading::os::unix::Library) -> Result<PluginSymbols, LoadError> {
    let err = |name| {
        move |e: libloading::Error| LoadError::Symbol {
            name,
            detail: dlerror_text(&e),
        }
    };
    // SAFETY: the types are the plugin ABI's signatures for these names; inspection
    // checked each is a defined global function.
    let version =
        unsafe { lib.get::<VersionFn>(SYMBOL_VERSION.as_bytes()) }.map_err(err(SYMBOL_VERSION))?;
    // SAFETY: as above.
    let metadata = unsafe { lib.get::<MetadataFn>(SYMBOL_METADATA.as_bytes()) }
        .map_err(err(SYMBOL_METADATA))?;
    // SAFETY: as above.
    let execute =
        unsafe { lib.get::<ExecuteFn>(SYMBOL_EXECUTE.as_bytes()) }.map_err(err(SYMBOL_EXECUTE))?;
    // SAFETY: as above; this export is optional.
    let free_string = unsafe { lib.get::<FreeStringFn>(SYMBOL_FREE_STRING.as_bytes()) }.ok();
    // SAFETY: as above; optional, and inspection refused the library if a symbol of this
    // name is defined but not an ordinary global function.
    let host_init = unsafe {
        lib.get::<crate::base::host_abi::HostInitFn>(
            crate::base::host_abi::SYMBOL_HOST_V1.as_bytes(),
        )
    }
    .ok();
    Ok(PluginSymbols {
        version: *version,
        metadata: *metadata,
        execute: *execute,
        free_string: free_string.map(|s| *s),
        host_init: host_init.map(|s| *s),
    })
}

impl PluginSymbols {
    /// Calls `vtcode_plugin_version()`.
    #[allow(unsafe_code)]
    pub(crate) fn call_version(&self) -> u32 {
        // SAFETY: a plugin ABI function taking no arguments; the library is never unloaded.
        unsafe { (self.version)() }
    }

    /// Hands the plugin the host table through `skillgate_plugin_host_v1`, if it exports
    /// it; returns whether it does. Once per load, after `dlopen`, before any call.
    #[allow(unsafe_code)]
    pub(crate) fn call_host_init(
        &self,
        table: &'static crate::base::host_abi::HostTableV1,
    ) -> bool {
        let Some(init) = self.host_init else {
            return false;
        };
        // SAFETY: the extension ABI's signature; the table is a static that outlives the
        // library, which is never unloaded.
        unsafe { init(table) };
        true
    }

    /// Calls `vtcode_plugin_metadata()` and copies its string out, at most `limit` bytes.
    pub(crate) fn call_metadata(
        &self,
        limit: usize,
    ) -> Result<Vec<u8>, crate::base::ffi::FaultError> {
        self.take_string(self.call_metadata_raw(), limit, SYMBOL_METADATA)
    }

    #[allow(unsafe_code)]
    fn call_metadata_raw(&self) -> *const c_char {
        // SAFETY: a plugin ABI function taking no arguments; the library is never unloaded.
        unsafe { (self.metadata)() }
    }

    /// Calls `vtcode_plugin_execute(input)` and copies its string out, at most `limit` bytes.
    pub(crate) fn call_execute(
        &self,
        input: &std::ffi::CStr,
        limit: usize,
    ) -> Result<Vec<u8>, crate::base::ffi::FaultError> {
        self.take_string(self.call_execute_raw(input), limit, SYMBOL_EXECUTE)
    }

    /// Calls `vtcode_plugin_execute(input)` and hands `take` the returned string's bytes
    /// (bounded by `limit` as [`Self::call_execute`] bounds them) while they are still the
    /// plugin's, before they go back to `vtcode_plugin_free_string`: a worker copies them
    /// once, straight into the call region, instead of into a buffer of its own first. The
    /// borrow cannot outlive `take`.
    #[allow(unsafe_code)]
    pub(crate) fn call_execute_with<R>(
        &self,
        input: &std::ffi::CStr,
        limit: usize,
        take: impl for<'a> FnOnce(Result<&'a [u8], crate::base::ffi::FaultError>) -> R,
    ) -> R {
        let ptr = self.call_execute_raw(input);
        // SAFETY: the plugin ABI promises a NUL-terminated string or NULL; borrow_bounded
        // reads at most limit + 1 bytes of it, and the borrow ends with `take`, before the
        // string is handed back below.
        let taken = take(unsafe { crate::base::ffi::borrow_bounded(ptr, limit, SYMBOL_EXECUTE) });
        if let (Some(free), false) = (self.free_string, ptr.is_null()) {
            // SAFETY: `ptr` came from this plugin and is released once, after `take`.
            unsafe { free(ptr) };
        }
        taken
    }

    #[allow(unsafe_code)]
    fn call_execute_raw(&self, input: &std::ffi::CStr) -> *const c_char {
        // SAFETY: the ABI takes a NUL-terminated string that lives for the call; `input`
        // outlives it.
        unsafe { (self.execute)(input.as_ptr()) }
    }

    /// Copies a returned string (bounded), then hands it back to the plugin's
    /// `vtcode_plugin_free_string` if it exports one, whether or not the copy succeeded.
    #[allow(unsafe_code)]
    fn take_string(
        &self,
        ptr: *const c_char,
        limit: usize,
        function: &'static str,
    ) -> Result<Vec<u8>, crate::base::ffi::FaultError> {
        // SAFETY: the plugin ABI promises a NUL-terminated string or NULL; copy_bounded
        // reads at most limit + 1 bytes of it.
        let copied = unsafe { crate::base::ffi::copy_bounded(ptr, limit, function) };
        if let (Some(free), false) = (self.free_string, ptr.is_null()) {
            // SAFETY: `ptr` came from this plugin and is released once, after the copy.
            unsafe { free(ptr) };
        }
        copied
    }
}
