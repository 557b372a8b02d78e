//! The plugin's own thread: it loads the library and then runs every call, one at a time.
//!
//! ABI v1 plugins are not assumed reentrant, whatever their metadata says
//! (`thread_safe` is recorded, never trusted): all calls are sent over a channel to the one
//! thread that owns the plugin, so no two calls overlap and every call runs on the thread
//! whose restrictions ([`crate::sandbox`]) were applied before `dlopen`.
//!
//! A thread is not a security boundary: this mode defends against buggy plugins, not
//! hostile ones (see the README's threat model). A call that outlives the policy's timeout
//! is abandoned: the caller gets [`FaultError::Timeout`], the handle refuses further calls,
//! and the stuck thread is left to finish or hang on its own, since killing a thread would
//! leave whatever locks it holds held forever.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::Error;
use crate::ffi::{
    AbiError, FaultError, PLUGIN_ABI_VERSION, PluginMetadata, PluginResult, decode_metadata,
    decode_result,
};
use crate::load::{LoadError, PluginSymbols, dlopen_sealed};
use crate::manifest::Manifest;
use crate::policy::Isolation;
use crate::policy::Limits;
use crate::sandbox::{Enforcement, SandboxPlan};
use crate::sealed::SealedFile;

struct Call {
    input: CString,
    reply: mpsc::SyncSender<Result<PluginResult, FaultError>>,
}

/// Handle to a plugin thread. Calls from any number of host threads are queued and run
/// one at a time.
#[derive(Debug)]
pub(crate) struct ThreadExecutor {
    calls: mpsc::Sender<Call>,
    timeout: Duration,
    poisoned: AtomicBool,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}

impl ThreadExecutor {
    /// Starts the plugin thread, which loads the library and checks it against the signed
    /// manifest before accepting calls.
    pub(crate) fn start(
        library: SealedFile,
        manifest: &Manifest,
        limits: &Limits,
        plan: SandboxPlan,
    ) -> Result<(Self, Enforcement), Error> {
        let (calls, incoming) = mpsc::channel::<Call>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Enforcement, Error>>(1);
        let expected = manifest.metadata().clone();
        let output_limit = limits.output_bytes;
        std::thread::Builder::new()
            .name(format!("plugin:{}", manifest.name()))
            .spawn(move || {
                run_plugin_thread(library, expected, output_limit, plan, ready_tx, incoming)
            })
            .map_err(LoadError::Thread)?;
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        match ready_rx.recv_timeout(timeout) {
            Ok(Ok(enforcement)) => {
                let executor = ThreadExecutor {
                    calls,
                    timeout,
                    poisoned: AtomicBool::new(false),
                };
                Ok((executor, enforcement))
            }
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(FaultError::Timeout {
                timeout_ms: limits.call_timeout_ms,
            }
            .into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(FaultError::ThreadGone.into()),
        }
    }

    /// Runs one call on the plugin thread and waits for its result.
    pub(crate) fn call(&self, input: CString) -> Result<PluginResult, FaultError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(FaultError::Poisoned);
        }
        let (reply, result) = mpsc::sync_channel(1);
        self.calls
            .send(Call { input, reply })
            .map_err(|_| FaultError::ThreadGone)?;
        match result.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.poisoned.store(true, Ordering::Release);
                Err(FaultError::Timeout {
                    timeout_ms: self.timeout.as_millis().try_into().unwrap_or(u64::MAX),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(FaultError::ThreadGone),
        }
    }
}

/// Body of the plugin thread.
fn run_plugin_thread(
    library: SealedFile,
    expected: PluginMetadata,
    output_limit: usize,
    plan: SandboxPlan,
    ready: mpsc::SyncSender<Result<Enforcement, Error>>,
    incoming: mpsc::Receiver<Call>,
) {
    // Restrict this thread before the library is opened, so its constructors and IFUNC
    // resolvers already run restricted. On failure the library is never opened.
    let restricted = plan.apply(Isolation::Thread).map_err(Error::from);
    let loaded = restricted.and_then(|enforcement| {
        Ok((
            open_and_check(library, &expected, output_limit)?,
            enforcement,
        ))
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
    // Ends when the last handle is dropped and the channel closes.
    for call in incoming {
        let result = symbols
            .call_execute(&call.input, output_limit)
            .and_then(|bytes| decode_result(&bytes));
        // The caller may have timed out and gone; nothing to do then.
        let _ = call.reply.send(result);
    }
}

pub(crate) fn open_and_check(
    library: SealedFile,
    expected: &PluginMetadata,
    output_limit: usize,
) -> Result<PluginSymbols, Error> {
    let symbols = dlopen_sealed(library)?;
    let plugin_abi = symbols.call_version();
    if plugin_abi != expected.abi_version || plugin_abi != PLUGIN_ABI_VERSION {
        return Err(AbiError::VersionMismatch {
            manifest: expected.abi_version,
            plugin: plugin_abi,
            host: PLUGIN_ABI_VERSION,
        }
        .into());
    }
    let reported = symbols
        .call_metadata(output_limit)
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
            }
            .into());
        }
    }
    if reported.abi_version != expected.abi_version {
        return Err(AbiError::MetadataMismatch {
            field: "abi_version",
            manifest: expected.abi_version.to_string(),
            plugin: reported.abi_version.to_string(),
        }
        .into());
    }
    Ok(symbols)
}
