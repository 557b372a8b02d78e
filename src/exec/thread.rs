//! The plugin's own thread: it loads the library and then runs every call, one at a time.
//!
//! ABI v1 plugins are not assumed reentrant, whatever their metadata says
//! (`thread_safe` is recorded, never trusted): all calls are handed, one at a time, through
//! one slot ([`super::handoff`]: poll briefly, then sleep on a futex) to the one thread that
//! owns the plugin, so no two calls overlap and every call runs on the thread whose
//! restrictions ([`crate::sandbox`]) were applied before `dlopen`.
//!
//! A thread is not a security boundary: this mode defends against buggy plugins, not
//! hostile ones (see the README's threat model). A call that outlives the policy's timeout
//! is abandoned: the caller gets [`FaultError::Timeout`], the handle refuses further calls,
//! and the stuck thread is left to finish or hang on its own, since killing a thread would
//! leave whatever locks it holds held forever.

use std::ffi::CString;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::base::ffi::{
    AbiError, FaultError, PLUGIN_ABI_VERSION, PluginMetadata, PluginResult, decode_metadata,
    decode_result,
};

use crate::base::settings::Isolation;
use crate::base::settings::Limits;
use crate::pipeline::load::{LoadError, Loadable, PluginSymbols, dlopen_sealed};
use crate::pipeline::manifest::Manifest;
use crate::sandbox::{Enforcement, SandboxPlan};

use super::ExecError;
use super::handoff::{CallError, Handoff};
use super::resident::{self, Claim, Reservation};

/// The plugin thread's call slot: the input CString in, the decoded result out.
type Slot = Handoff<CString, Result<PluginResult, FaultError>>;

/// Marks the slot gone when the plugin thread ends, however it ends, so a waiting caller
/// hears about it at once instead of at its timeout.
struct ExitGuard(Arc<Slot>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.gone();
    }
}

/// Handle to a plugin thread. Calls from any number of host threads take turns (the
/// slot's [`Handoff::call`]) and run one at a time.
#[derive(Debug)]
pub(crate) struct ThreadExecutor {
    slot: Arc<Slot>,
    timeout: Duration,
}

impl ThreadExecutor {
    /// Starts the plugin thread, which loads the library (or takes the same bytes already
    /// loaded, see [`super::resident`]) and checks it against the signed manifest before
    /// accepting calls. New bytes past `limits.thread_mode_libraries` are refused
    /// ([`LoadError::ThreadLibraryLimit`]).
    pub(crate) fn start(
        library: Loadable,
        manifest: &Manifest,
        limits: &Limits,
        plan: SandboxPlan,
    ) -> Result<(Self, Enforcement), ExecError> {
        // New bytes count against the limit before anything is started; bytes loaded
        // already are reused, and this load's sealed copy is closed unused.
        let entry = manifest.library_entry().ok_or(LoadError::NoLibraryEntry)?;
        let library =
            match resident::claim(&entry.sha256, entry.size, limits.thread_mode_libraries)? {
                Claim::Reuse(symbols) => {
                    drop(library);
                    Library::Resident(symbols)
                }
                Claim::Load(reservation) => Library::New(library, reservation),
            };
        let slot = Arc::new(Slot::new());
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Enforcement, ExecError>>(1);
        let expected = manifest.metadata().clone();
        let output_limit = limits.output_bytes;
        let thread_slot = Arc::clone(&slot);
        std::thread::Builder::new()
            .name(format!("plugin:{}", manifest.name()))
            .spawn(move || {
                let guard = ExitGuard(thread_slot);
                run_plugin_thread(library, expected, output_limit, plan, ready_tx, &guard.0)
            })
            .map_err(LoadError::Thread)?;
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let executor = ThreadExecutor { slot, timeout };
        match ready_rx.recv_timeout(timeout) {
            Ok(Ok(enforcement)) => Ok((executor, enforcement)),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(FaultError::Timeout {
                timeout_ms: limits.call_timeout_ms,
            }
            .into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(FaultError::ThreadGone.into()),
        }
    }

    /// Runs one call on the plugin thread and waits for its result: for the turn and the
    /// call together no longer than the call timeout. A caller that gets no turn in time
    /// gets `Timeout` and poisons nothing (its call never reached the plugin); a call that
    /// reached it and outlives the deadline poisons the handle.
    pub(crate) fn call(&self, input: CString) -> Result<PluginResult, FaultError> {
        let deadline = Instant::now() + self.timeout;
        let timeout = || FaultError::Timeout {
            timeout_ms: self.timeout.as_millis().try_into().unwrap_or(u64::MAX),
        };
        match self.slot.call(input, deadline) {
            Ok(result) => result,
            Err(CallError::Timeout | CallError::TurnTimeout) => Err(timeout()),
            Err(CallError::Poisoned) => Err(FaultError::Poisoned),
            Err(CallError::Gone) => Err(FaultError::ThreadGone),
        }
    }
}

impl Drop for ThreadExecutor {
    fn drop(&mut self) {
        self.slot.close();
    }
}

/// Body of the plugin thread.
fn run_plugin_thread(
    library: Library,
    expected: PluginMetadata,
    output_limit: usize,
    plan: SandboxPlan,
    ready: mpsc::SyncSender<Result<Enforcement, ExecError>>,
    slot: &Slot,
) {
    // Restrict this thread, and open the library on a restricted loader thread, so its
    // constructors and IFUNC resolvers already run restricted and nothing after the load
    // maps code. On failure the library is never opened.
    let loaded = crate::sandbox::load_sandboxed(&plan, Isolation::Thread, |_| {
        open_and_check(library, &expected, output_limit)
    });
    let (symbols, enforcement) = match loaded {
        Ok(ok) => ok,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(enforcement)).is_err() {
        return;
    }
    drop(ready);
    // Ends when the handle is dropped. A caller that timed out is gone; its late reply
    // stays in the slot, where nobody reads it (the handle is poisoned).
    while let Some(input) = slot.next() {
        let result = symbols
            .call_execute(&input, output_limit)
            .and_then(|bytes| decode_result(&bytes));
        if !slot.reply(result) {
            return;
        }
    }
}

/// The library a plugin thread runs: new bytes to load, or bytes this process loaded
/// already ([`super::resident`]).
#[derive(Debug)]
enum Library {
    /// Loaded here; registered as soon as `dlopen` succeeds.
    New(Loadable, Reservation),
    /// The same verified bytes, loaded by an earlier handle: its constructors do not run
    /// again, and its statics are shared with that handle's.
    Resident(PluginSymbols),
}

/// Opens (or takes the resident) library and checks the plugin against its manifest.
fn open_and_check(
    library: Library,
    expected: &PluginMetadata,
    output_limit: usize,
) -> Result<PluginSymbols, ExecError> {
    let symbols = match library {
        Library::New(loadable, reservation) => {
            let symbols = dlopen_sealed(loadable)?;
            // Loaded for good from here on, whatever the checks below say.
            reservation.register(symbols);
            symbols
        }
        Library::Resident(symbols) => symbols,
    };
    check_abi(
        expected,
        symbols.call_version(),
        symbols.call_metadata(output_limit),
    )?;
    Ok(symbols)
}

/// Checks what a loaded plugin says about itself against its signed manifest and this
/// host's ABI. The host runs it on what the plugin returned: in thread mode directly, in
/// process mode on the values the worker relays (plugin-controlled data, checked here).
pub(crate) fn check_abi(
    expected: &PluginMetadata,
    plugin_abi: u32,
    metadata: Result<Vec<u8>, FaultError>,
) -> Result<(), AbiError> {
    if plugin_abi != expected.abi_version || plugin_abi != PLUGIN_ABI_VERSION {
        return Err(AbiError::VersionMismatch {
            manifest: expected.abi_version,
            plugin: plugin_abi,
            host: PLUGIN_ABI_VERSION,
        });
    }
    let reported = metadata
        .and_then(|b| decode_metadata(&b))
        .map_err(AbiError::Metadata)?;
    for (field, manifest, plugin) in [
        ("name", &expected.name, &reported.name),
        ("version", &expected.version, &reported.version),
    ] {
        if manifest != plugin {
            return Err(AbiError::MetadataMismatch {
                field,
                manifest: manifest.clone(),
                plugin: plugin.clone(),
            });
        }
    }
    if reported.abi_version != expected.abi_version {
        return Err(AbiError::MetadataMismatch {
            field: "abi_version",
            manifest: expected.abi_version.to_string(),
            plugin: reported.abi_version.to_string(),
        });
    }
    Ok(())
}
