//! The libraries thread isolation has loaded into this process, by the SHA-256 of their
//! bytes: loaded once, reused by every later thread-mode load of the same bytes.
//!
//! A library loaded in thread mode is never unloaded, and its sealed memfd stays open
//! for the life of the process (see [`crate::pipeline::load`] for why). A host that loads
//! the same plugin again and again would keep one more copy and one more descriptor each
//! time, and die of `EMFILE`. So the first load of some bytes registers them here, and a
//! later load whose signed manifest gives the same library digest gets the same library
//! (its new sealed copy is closed unused). The key is that digest — the verified bytes —
//! never a name or a path: two plugins share a library only if their libraries are the
//! same bytes, which [`crate::pipeline::verify`] checked against a signed manifest entry.
//!
//! What sharing means is what a plain `dlopen` of the same file twice means: the
//! library's constructors ran once, at its first load, and its statics (globals, caches,
//! anything it set up) are shared by every handle that uses it. Each handle still has its
//! own plugin thread, restricted before anything of the library runs on it, its own
//! metadata check and its own calls; only the code and its data are shared.
//!
//! **One call at a time per library, not per handle.** ABI v1 plugins are not assumed
//! reentrant ([`super::thread`]), and two handles on one library are two plugin threads
//! in one copy of its statics: a plugin that parses its input into a static buffer would
//! see the other handle's call overwrite it halfway through its own. So every entry into a
//! library (its load checks and host table hand-over, each call) holds the library's
//! [`LibraryTurn`], shared by all its handles. A caller takes the turn before it hands its
//! call over, bounded by the call's deadline: one whose deadline passes while another
//! handle's call runs gets `Timeout` and poisons nothing, since its call never reached the
//! plugin. The turn travels with the call ([`LibraryHold`]) and back with its reply, and is
//! given back by whoever ends up owning it once the plugin is out of the library: the
//! caller once the reply is in its hands (so an uncontended turn never leaves the caller's
//! CPU), or the plugin thread when it drops the reply of an abandoned call.
//!
//! A call abandoned inside the library (its caller timed out or was cancelled), or a load
//! that timed out there (a constructor, the metadata check), keeps the turn until it
//! returns, if ever, and every handle on that copy then times out. The copy
//! is then *stuck* ([`LibraryTurn::abandoned`]): the next load of the same bytes loads a
//! fresh copy instead of reusing it, and that copy becomes the one later loads reuse, so a
//! plugin reloaded after a hang is usable again. Each copy counts against the limit below.
//!
//! What cannot be freed is counted ([`resident`], reported by `Gate::stats`), and the
//! policy's `limits.thread_mode_libraries` caps how many distinct libraries may become
//! resident: [`claim`] refuses new bytes past it, and always allows bytes already here.
//! The registry is process-wide because the loader's state is: every `Gate` in the
//! process counts against the same libraries.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::pipeline::load::{LoadError, PluginSymbols};

/// A resident library: its entry points and the turn every entry into it takes.
#[derive(Debug, Clone)]
pub(crate) struct Library {
    pub(crate) symbols: PluginSymbols,
    pub(crate) turn: Arc<LibraryTurn>,
}

/// The loaded libraries and the counts reported about them.
#[derive(Debug)]
struct Registry {
    /// Each distinct library's entry points, by the SHA-256 of its bytes.
    by_digest: BTreeMap<[u8; 32], Library>,
    /// Libraries loaded (never unloaded), counting copies two racing loads both made.
    libraries: usize,
    /// Their bytes (each holds its sealed memfd, shared memory, for good).
    bytes: u64,
    /// Loads under way of bytes not resident yet, counted against the limit.
    reserved: usize,
    /// Loads that reused a resident library.
    reuses: u64,
}

impl Registry {
    const fn new() -> Self {
        Registry {
            by_digest: BTreeMap::new(),
            libraries: 0,
            bytes: 0,
            reserved: 0,
            reuses: 0,
        }
    }
}

type Shared = Mutex<Registry>;

/// The process's registry.
static REGISTRY: Shared = Mutex::new(Registry::new());

fn lock(registry: &'static Shared) -> MutexGuard<'static, Registry> {
    // Every writer leaves the counts consistent before anything that could panic.
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a thread-mode load does with its library.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The same bytes are loaded already: use this library (and its turn).
    Reuse(Library),
    /// New bytes: load them, then [`Reservation::register`] them.
    Load(Reservation),
}

/// A place under the limit held for a library being loaded; released if the load fails
/// before the library is registered.
#[derive(Debug)]
pub(crate) struct Reservation {
    registry: &'static Shared,
    digest: [u8; 32],
    size: u64,
    held: bool,
    /// The turn of the copy this load makes.
    turn: Arc<LibraryTurn>,
}

impl Reservation {
    /// The turn of the copy this load makes, to hold while it loads and checks it.
    pub(crate) fn turn(&self) -> &Arc<LibraryTurn> {
        &self.turn
    }

    /// Records the loaded library: later loads of the same bytes reuse it. Call it as soon
    /// as `dlopen` succeeded, whatever checks follow, since the library stays loaded.
    pub(crate) fn register(mut self, symbols: PluginSymbols) {
        let mut r = lock(self.registry);
        r.reserved = r.reserved.saturating_sub(1);
        r.libraries = r.libraries.saturating_add(1);
        r.bytes = r.bytes.saturating_add(self.size);
        let library = Library {
            symbols,
            turn: Arc::clone(&self.turn),
        };
        // A load that raced ours with the same bytes may have registered first; its copy
        // stays the one reused, and both are counted (both stay loaded). A stuck copy is
        // replaced by this one.
        match r.by_digest.entry(self.digest) {
            Entry::Vacant(v) => {
                v.insert(library);
            }
            Entry::Occupied(mut o) if o.get().turn.abandoned() => {
                o.insert(library);
            }
            Entry::Occupied(_) => {}
        }
        self.held = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            let mut r = lock(self.registry);
            r.reserved = r.reserved.saturating_sub(1);
        }
    }
}

/// Decides a thread-mode load of the library whose signed digest is `digest` and size
/// `size`: reuse it if resident, else hold a place for it if fewer than `limit` libraries
/// are resident or being loaded, else [`LoadError::ThreadLibraryLimit`].
pub(crate) fn claim(digest: &[u8; 32], size: u64, limit: usize) -> Result<Claim, LoadError> {
    claim_in(&REGISTRY, digest, size, limit)
}

fn claim_in(
    registry: &'static Shared,
    digest: &[u8; 32],
    size: u64,
    limit: usize,
) -> Result<Claim, LoadError> {
    let mut r = lock(registry);
    // A stuck copy (a call abandoned in it still holds its turn) is not reused.
    if let Some(library) = r.by_digest.get(digest).filter(|l| !l.turn.abandoned()) {
        let library = library.clone();
        r.reuses = r.reuses.saturating_add(1);
        return Ok(Claim::Reuse(library));
    }
    let resident = r.libraries.saturating_add(r.reserved);
    if resident >= limit {
        return Err(LoadError::ThreadLibraryLimit { resident, limit });
    }
    r.reserved = r.reserved.saturating_add(1);
    Ok(Claim::Load(Reservation {
        registry,
        digest: *digest,
        size,
        held: true,
        turn: Arc::new(LibraryTurn::new()),
    }))
}

/// What thread isolation keeps loaded in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resident {
    /// Libraries loaded for good.
    pub(crate) libraries: usize,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// Loads that reused one of them.
    pub(crate) reuses: u64,
}

/// The counts now.
pub(crate) fn resident() -> Resident {
    resident_in(&REGISTRY)
}

fn resident_in(registry: &'static Shared) -> Resident {
    let r = lock(registry);
    Resident {
        libraries: r.libraries,
        bytes: r.bytes,
        reuses: r.reuses,
    }
}

// ---------------------------------------------------------------------------------------
// The turn of one library.

/// One entry into a library at a time, across all the handles that share it.
///
/// Not a `Mutex<()>`: the turn is taken by a caller and may be given back by the plugin
/// thread (it travels with the call), a waiter must stop at its deadline or when its call
/// is cancelled, and a turn kept by an abandoned call must be visible to the next load.
/// Waiting is on a condition variable, notified only when someone actually waits
/// (`waiters`), so a call on a library nobody else uses pays two uncontended lock/unlock
/// pairs and no system call.
#[derive(Debug)]
pub(crate) struct LibraryTurn {
    state: Mutex<TurnState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct TurnState {
    /// The hold that has the turn, by its number.
    holder: Option<u64>,
    /// The number of the next hold.
    next: u64,
    /// Threads waiting for the turn (a release wakes one only if there is one).
    waiters: u32,
    /// The holder's call was abandoned inside the library and has not returned.
    abandoned: bool,
}

/// Why no turn was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnWait {
    /// The deadline passed while another entry into the library held it.
    TimedOut,
    /// The caller's `cancelled` said so.
    Cancelled,
}

/// The turn of a library, held; given back when dropped, on whichever thread owns it then.
#[derive(Debug)]
pub(crate) struct LibraryHold {
    turn: Arc<LibraryTurn>,
    id: u64,
}

impl LibraryTurn {
    pub(crate) fn new() -> Self {
        LibraryTurn {
            state: Mutex::new(TurnState::default()),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TurnState> {
        // Nothing that could panic runs under this lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the turn, waiting no later than `deadline`; `cancelled` is looked at before
    /// each wait and after each wake-up ([`Self::interrupt`] wakes every waiter for it).
    pub(crate) fn hold(
        self: &Arc<Self>,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<LibraryHold, TurnWait> {
        let mut state = self.lock();
        loop {
            if cancelled() {
                return Err(TurnWait::Cancelled);
            }
            if state.holder.is_none() {
                let id = state.next;
                state.next = state.next.wrapping_add(1);
                state.holder = Some(id);
                state.abandoned = false;
                return Ok(LibraryHold {
                    turn: Arc::clone(self),
                    id,
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(TurnWait::TimedOut);
            }
            state.waiters = state.waiters.saturating_add(1);
            state = match self.freed.wait_timeout(state, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.waiters = state.waiters.saturating_sub(1);
        }
    }

    /// Wakes every waiter to look at its `cancelled` (a cancellation token's hook). Taking
    /// the lock first means a waiter between its look and its wait cannot miss it.
    pub(crate) fn interrupt(&self) {
        let state = self.lock();
        if state.waiters > 0 {
            self.freed.notify_all();
        }
    }

    /// Records that the call holding turn `id` was abandoned inside the library (nothing
    /// if that hold was given back already).
    pub(crate) fn abandon(&self, id: u64) {
        let mut state = self.lock();
        if state.holder == Some(id) {
            state.abandoned = true;
        }
    }

    /// Whether an abandoned call still holds the turn: this copy of the library is stuck.
    pub(crate) fn abandoned(&self) -> bool {
        self.lock().abandoned
    }

    fn release(&self, id: u64) {
        let mut state = self.lock();
        if state.holder == Some(id) {
            state.holder = None;
            state.abandoned = false;
            // All of them: a waiter woken alone might be one whose deadline just passed
            // or whose call was cancelled, and would leave with the wake-up.
            if state.waiters > 0 {
                self.freed.notify_all();
            }
        }
    }
}

impl LibraryHold {
    /// This hold's number, for [`LibraryTurn::abandon`] once the hold itself was handed on.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for LibraryHold {
    fn drop(&mut self) {
        self.turn.release(self.id);
    }
}

#[cfg(test)]
mod tests;
