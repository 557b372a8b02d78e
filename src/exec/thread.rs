//! The plugin's own thread: it loads the library and then runs every call, one at a time.
//!
//! ABI v1 plugins are not assumed reentrant, whatever their metadata says
//! (`thread_safe` is recorded, never trusted): every call is handed to the one thread that
//! owns the plugin through a single slot ([`super::handoff`]: one atomic word, no lock, a
//! bounded spin then a futex), so no two calls overlap and every call runs on the thread
//! whose restrictions ([`crate::sandbox`]) were applied before `dlopen`. Handles that share
//! one library (the same bytes loaded twice, [`super::resident`]) also take the library's
//! turn for each call, so no two calls overlap inside one copy of a library either. The
//! plugin's host tool requests and progress messages travel back through the same slot to
//! the caller's thread, which answers them outside the sandbox while the plugin thread
//! waits.
//!
//! A thread is not a security boundary: this mode defends against buggy plugins, not
//! hostile ones (see the README's threat model). A call that outlives the policy's timeout
//! is abandoned: the caller gets [`FaultError::Timeout`], the handle refuses further calls,
//! and the stuck thread is left to finish or hang on its own, since killing a thread would
//! leave whatever locks it holds held forever. A caller waiting for its turn behind such a
//! call gets its own `Timeout` at its own deadline (nothing poisoned by it: its call never
//! reached the plugin), or `Poisoned` as soon as the call before it is abandoned.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
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
use super::cancel::CancelToken;
use super::handoff::{AskError, CallError, Handoff};
use super::options::CallOptions;
use super::resident::{self, Claim, LibraryHold, LibraryTurn, Reservation, TurnWait};
use super::tools::{CallExtras, CallState, ToolEnv, answer};
use crate::base::host_abi::{
    HOST_TABLE_SIZE, HOST_TABLE_VERSION, HostTableV1, ToolErrorKind, error_reply, free_reply,
    prepare_progress, prepare_request, reply_to_plugin,
};
use crate::base::protocol::{Frame, Tag};
use std::cell::RefCell;
use std::ffi::c_char;

/// The one call in flight between the callers and the plugin thread: the call's input
/// (with its deadline, sequence number and the library's turn), the plugin's host tool
/// requests and progress messages as a worker's frame would carry them and the caller's
/// answers (empty for progress), and the bytes the plugin returned (or the call's fault)
/// with the library's turn again.
///
/// The caller parses those bytes itself: the result's many small allocations are then made
/// and freed on one thread. Parsed on the plugin thread and freed on the caller's, every
/// call sent them through the allocator's slow paths (one thread's cache always empty, the
/// other's always full).
///
/// The turn travels to the plugin thread and back, and is given back by whoever owns it
/// last: the caller that took it once the reply is in its hands (so an uncontended turn's
/// state never leaves the caller's CPU), or the plugin thread when the reply is dropped
/// because its call was abandoned.
type Slot = Handoff<
    (CString, Instant, u64, LibraryHold),
    Frame,
    Vec<u8>,
    (Result<Vec<u8>, FaultError>, LibraryHold),
>;

/// Marks the slot gone when the plugin thread ends, however it ends, so a waiting caller
/// hears about it at once instead of at its timeout.
struct ExitGuard(Arc<Slot>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.gone();
    }
}

/// Handle to a plugin thread. Calls from any number of host threads are queued and run
/// one at a time.
#[derive(Debug)]
pub(crate) struct ThreadExecutor {
    /// One call at a time holds its turn; a call abandoned there poisons it for good.
    slot: Arc<Slot>,
    /// The turn of the library, shared with every other handle on the same copy.
    library: Arc<LibraryTurn>,
    timeout: Duration,
    /// What the plugin's host tool requests are judged by.
    tools: Arc<ToolEnv>,
    /// Sequence number of the last call.
    seq: AtomicU64,
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
        tools: Arc<ToolEnv>,
    ) -> Result<(Self, Enforcement), ExecError> {
        // New bytes count against the limit before anything is started; bytes loaded
        // already are reused, and this load's sealed copy is closed unused.
        let entry = manifest.library_entry().ok_or(LoadError::NoLibraryEntry)?;
        let (library, turn) =
            match resident::claim(&entry.sha256, entry.size, limits.thread_mode_libraries)? {
                Claim::Reuse(resident) => {
                    drop(library);
                    let turn = Arc::clone(&resident.turn);
                    (Library::Resident(resident.symbols), turn)
                }
                Claim::Load(reservation) => {
                    let turn = Arc::clone(reservation.turn());
                    (Library::New(library, reservation), turn)
                }
            };
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let load_deadline = Instant::now() + timeout;
        let load_timeout = || -> ExecError {
            FaultError::Timeout {
                timeout_ms: limits.call_timeout_ms,
            }
            .into()
        };
        // The load's entries into the library (a reused one's checks, the host table) take
        // its turn as calls do, by the load's deadline; the plugin thread gives it back.
        let hold = match turn.hold(load_deadline, &|| false) {
            Ok(hold) => hold,
            Err(TurnWait::TimedOut | TurnWait::Cancelled) => return Err(load_timeout()),
        };
        let hold_id = hold.id();
        let slot = Arc::new(Slot::new());
        let ready = Arc::new(Ready {
            state: Mutex::new(ReadyState::Waiting),
            changed: Condvar::new(),
        });
        let ready_tx = ReadySender(Arc::clone(&ready));
        let expected = manifest.metadata().clone();
        let output_limit = limits.output_bytes;
        let caps = PluginCaps {
            request_bytes: limits.tool_request_bytes,
            progress_bytes: limits.progress_bytes,
        };
        let thread_slot = Arc::clone(&slot);
        std::thread::Builder::new()
            .name(format!("plugin:{}", manifest.name()))
            .spawn(move || {
                let guard = ExitGuard(thread_slot);
                run_plugin_thread(
                    library,
                    hold,
                    expected,
                    output_limit,
                    plan,
                    ready_tx,
                    &guard.0,
                    caps,
                )
            })
            .map_err(LoadError::Thread)?;
        let executor = ThreadExecutor {
            slot,
            library: turn,
            timeout,
            tools,
            seq: AtomicU64::new(0),
        };
        match ready.wait(load_deadline) {
            ReadyState::Sent(Ok(enforcement)) => Ok((executor, enforcement)),
            ReadyState::Sent(Err(e)) => Err(e),
            ReadyState::Waiting => {
                // Still in the library (a constructor, the metadata call): the copy is
                // stuck for as long as that lasts, and the next load must not reuse it.
                executor.library.abandon(hold_id);
                Err(load_timeout())
            }
            ReadyState::Gone => Err(FaultError::ThreadGone.into()),
        }
    }

    /// Runs one call on the plugin thread and waits for its result, no longer than
    /// `options`' timeout (capped by the policy's), counted from now: waiting for the turn
    /// counts, and a caller whose deadline passes before its turn comes gets `Timeout`
    /// without having touched the plugin (nothing is poisoned by it).
    /// A cancelled token fails the call with `Cancelled`: at once, untouched, if it was
    /// cancelled before the call had its turn (or while it waited for it); while the call
    /// runs, the caller is woken and the call abandoned as a timeout is (the handle refuses
    /// further calls; the thread finishes or hangs on its own). Meanwhile this thread
    /// answers the plugin's host tool requests and progress messages.
    pub(crate) fn call_with(
        &self,
        input: CString,
        options: &CallOptions,
        extras: CallExtras,
    ) -> Result<PluginResult, FaultError> {
        let token = options.cancel_token();
        if token.is_some_and(CancelToken::is_cancelled) {
            return Err(FaultError::Cancelled { running: false });
        }
        if self.slot.is_poisoned() {
            return Err(FaultError::Poisoned);
        }
        let start = Instant::now();
        let timeout = options.effective_timeout(self.timeout, start);
        let deadline = start + timeout;
        // Wakes this caller wherever it waits (the library's turn, its own, its result) to
        // look at the token.
        let _hook = token.map(|t| {
            let slot = Arc::clone(&self.slot);
            let library = Arc::clone(&self.library);
            t.on_cancel(move || {
                slot.interrupt();
                library.interrupt();
            })
        });
        let cancelled = || token.is_some_and(CancelToken::is_cancelled);
        let timed_out = || FaultError::Timeout {
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        };
        // Another handle's call in the same library: waiting it out reaches nothing, so
        // running out of time or being cancelled here poisons nothing.
        let hold = match self.library.hold(deadline, &cancelled) {
            Ok(hold) => hold,
            Err(TurnWait::TimedOut) => return Err(timed_out()),
            Err(TurnWait::Cancelled) => return Err(FaultError::Cancelled { running: false }),
        };
        let hold_id = hold.id();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let mut call = CallState::new(seq, deadline, extras);
        let tools = &self.tools;
        // Answered here, on the caller's thread, outside the plugin's sandbox; the plugin
        // thread waits for the answer.
        let mut respond = |frame: Frame| match answer(&frame, &mut call, tools) {
            Ok(Some((_, bytes))) => bytes,
            Ok(None) => Vec::new(),
            // The plugin side built the request; a violation here is its bug.
            Err(v) => error_reply(ToolErrorKind::BadRequest, &v.to_string()),
        };
        let outcome = self.slot.call(
            (input, deadline, seq, hold),
            deadline,
            &cancelled,
            &mut respond,
        );
        if matches!(
            outcome,
            Err(CallError::Timeout | CallError::Cancelled { running: true })
        ) {
            // Abandoned: if the plugin thread took the call, the library's turn is with
            // it until the call returns, and the next load of these bytes must not wait
            // for that (nothing happens if the turn was given back already).
            self.library.abandon(hold_id);
        }
        match outcome {
            Ok((output, hold)) => {
                drop(hold);
                call.finish(&self.tools);
                output.and_then(|bytes| decode_result(&bytes))
            }
            Err(CallError::Timeout | CallError::TurnTimeout) => Err(timed_out()),
            Err(CallError::Cancelled { running }) => Err(FaultError::Cancelled { running }),
            Err(CallError::Poisoned) => Err(FaultError::Poisoned),
            Err(CallError::Gone) => Err(FaultError::ThreadGone),
        }
    }
}

impl ThreadExecutor {
    /// Whether a call was abandoned (timeout, cancellation): every later call fails.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.slot.is_poisoned()
    }
}

impl Drop for ThreadExecutor {
    fn drop(&mut self) {
        self.slot.close();
    }
}

/// The plugin thread's one answer to [`ThreadExecutor::start`]: its enforcement, or why it
/// could not load.
///
/// Not an `mpsc` channel, on purpose: a receiver that has to block first initializes a
/// thread-local with a destructor, and registering that destructor
/// (`__cxa_thread_atexit_impl`) takes the dynamic loader's lock — the lock a plugin
/// constructor that never returns holds for the rest of the process. `start` would then wait
/// past its deadline without end (seen: a load that sometimes never returned on a loaded
/// machine, when the loader thread reached `dlopen` before the caller first blocked). A mutex
/// and a condition variable wait on a futex and touch no thread-local state, so the wait ends
/// by its deadline whatever the loader thread holds.
struct Ready {
    state: Mutex<ReadyState>,
    changed: Condvar,
}

/// What the plugin thread has said so far.
enum ReadyState {
    /// Nothing yet.
    Waiting,
    /// Its answer.
    Sent(Result<Enforcement, ExecError>),
    /// It ended without answering.
    Gone,
}

impl Ready {
    /// Waits for the answer until `deadline`; `Waiting` if none came in time.
    fn wait(&self, deadline: Instant) -> ReadyState {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match std::mem::replace(&mut *state, ReadyState::Waiting) {
                ReadyState::Waiting => {}
                done => return done,
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return ReadyState::Waiting;
            }
            state = match self.changed.wait_timeout(state, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The plugin thread's end of [`Ready`]; dropped unsent, it reports the thread gone.
struct ReadySender(Arc<Ready>);

impl ReadySender {
    /// Gives the answer; whether the caller can still take it (it has not timed out).
    fn send(&self, answer: Result<Enforcement, ExecError>) -> bool {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = ReadyState::Sent(answer);
        self.0.changed.notify_one();
        // The caller holds one reference while it waits; this sender the other.
        Arc::strong_count(&self.0) > 1
    }
}

impl Drop for ReadySender {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, ReadyState::Waiting) {
            *state = ReadyState::Gone;
            self.0.changed.notify_one();
        }
    }
}

/// Body of the plugin thread. `hold` is the library's turn, given back once the load's
/// own entries into the library are done.
#[allow(clippy::too_many_arguments)]
fn run_plugin_thread(
    library: Library,
    hold: LibraryHold,
    expected: PluginMetadata,
    output_limit: usize,
    plan: SandboxPlan,
    ready: ReadySender,
    slot: &Arc<Slot>,
    caps: PluginCaps,
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
            drop(hold);
            ready.send(Err(e));
            return;
        }
    };
    PLUGIN_SIDE.with(|p| {
        *p.borrow_mut() = Some(PluginSide {
            slot: Arc::clone(slot),
            call: None,
            caps,
        });
    });
    symbols.call_host_init(&THREAD_TABLE);
    drop(hold);
    if !ready.send(Ok(enforcement)) {
        return;
    }
    // Ends when the handle is dropped, or once a call was abandoned (its caller timed out
    // or was cancelled: the handle is poisoned, and the late reply is dropped).
    while let Some((input, deadline, seq, hold)) = slot.next() {
        set_current_call(Some((seq, deadline)));
        let output = symbols.call_execute(&input, output_limit);
        set_current_call(None);
        // The turn goes back with the reply (see `Slot`); a reply dropped because its call
        // was abandoned gives it back here.
        if !slot.reply((output, hold)) {
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

// ---------------------------------------------------------------------------------------
// The host table in thread mode: the plugin thread hands each request to the caller.

/// What the plugin side bounds before a request leaves it.
#[derive(Debug, Clone, Copy)]
struct PluginCaps {
    request_bytes: usize,
    progress_bytes: usize,
}

/// The plugin thread's own record: its slot and the call it is running.
struct PluginSide {
    slot: Arc<Slot>,
    /// The call in flight: its sequence number and deadline.
    call: Option<(u64, Instant)>,
    caps: PluginCaps,
}

thread_local! {
    /// Set on a plugin thread only; any other thread calling the table gets `no_call`.
    static PLUGIN_SIDE: RefCell<Option<PluginSide>> = const { RefCell::new(None) };
}

fn set_current_call(call: Option<(u64, Instant)>) {
    PLUGIN_SIDE.with(|p| {
        if let Some(side) = p.borrow_mut().as_mut() {
            side.call = call;
        }
    });
}

/// The table handed to thread-mode plugins: the same for every plugin, which finds its
/// call through the plugin thread's own record.
static THREAD_TABLE: HostTableV1 = HostTableV1 {
    version: HOST_TABLE_VERSION,
    size: HOST_TABLE_SIZE,
    call_tool: thread_call_tool,
    progress: thread_progress,
    free_string: free_reply,
};

/// Hands `frame` to the caller waiting for this call and waits for the answer, until the
/// call's deadline. `None` when there is no call on this thread, or it ended.
fn hand_to_caller(
    make: impl FnOnce(PluginCaps) -> Option<Vec<u8>>,
    tag: Tag,
) -> Result<Vec<u8>, Vec<u8>> {
    let no_call = || {
        error_reply(
            ToolErrorKind::NoCall,
            "no call of this plugin is running on this thread (call the host table from the              thread that runs vtcode_plugin_execute)",
        )
    };
    let (slot, seq, deadline, caps) = PLUGIN_SIDE
        .with(|p| {
            p.borrow()
                .as_ref()
                .and_then(|s| s.call.map(|(seq, d)| (Arc::clone(&s.slot), seq, d, s.caps)))
        })
        .ok_or_else(no_call)?;
    let payload = make(caps).ok_or_else(Vec::new)?;
    match slot.ask(Frame { tag, seq, payload }, deadline) {
        Ok(bytes) => Ok(bytes),
        Err(AskError::NoCall) => Err(no_call()),
        Err(AskError::Timeout) => Err(error_reply(
            ToolErrorKind::Timeout,
            "the call's deadline passed",
        )),
    }
}

/// `call_tool` of the thread-mode table.
#[allow(unsafe_code)]
unsafe extern "C" fn thread_call_tool(name: *const c_char, args: *const c_char) -> *mut c_char {
    let mut refused = None;
    let outcome = hand_to_caller(
        |caps| {
            // SAFETY: the extension ABI passes NUL-terminated strings (or NULL).
            match unsafe { prepare_request(name, args, caps.request_bytes) } {
                Ok(p) => Some(p),
                Err(e) => {
                    refused = Some(e);
                    None
                }
            }
        },
        Tag::ToolRequest,
    );
    reply_to_plugin(match (refused, outcome) {
        (Some(e), _) => e,
        (None, Ok(bytes) | Err(bytes)) => bytes,
    })
}

/// `progress` of the thread-mode table.
#[allow(unsafe_code)]
unsafe extern "C" fn thread_progress(json: *const c_char) {
    let _ = hand_to_caller(
        // SAFETY: the extension ABI passes a NUL-terminated string (or NULL).
        |caps| unsafe { prepare_progress(json, caps.progress_bytes) },
        Tag::Progress,
    );
}
