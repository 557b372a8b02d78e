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
//! What cannot be freed is counted ([`resident`], reported by `Gate::stats`), and the
//! policy's `limits.thread_mode_libraries` caps how many distinct libraries may become
//! resident: [`claim`] refuses new bytes past it, and always allows bytes already here.
//! The registry is process-wide because the loader's state is: every `Gate` in the
//! process counts against the same libraries.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::pipeline::load::{LoadError, PluginSymbols};

/// The loaded libraries and the counts reported about them.
#[derive(Debug)]
struct Registry {
    /// Each distinct library's entry points, by the SHA-256 of its bytes.
    by_digest: BTreeMap<[u8; 32], PluginSymbols>,
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
    /// The same bytes are loaded already: use these entry points.
    Reuse(PluginSymbols),
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
}

impl Reservation {
    /// Records the loaded library: later loads of the same bytes reuse it. Call it as soon
    /// as `dlopen` succeeded, whatever checks follow, since the library stays loaded.
    pub(crate) fn register(mut self, symbols: PluginSymbols) {
        let mut r = lock(self.registry);
        r.reserved = r.reserved.saturating_sub(1);
        r.libraries = r.libraries.saturating_add(1);
        r.bytes = r.bytes.saturating_add(self.size);
        // A load that raced ours with the same bytes may have registered first; its copy
        // stays the one reused, and both are counted (both stay loaded).
        r.by_digest.entry(self.digest).or_insert(symbols);
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
    if let Some(symbols) = r.by_digest.get(digest).copied() {
        r.reuses = r.reuses.saturating_add(1);
        return Ok(Claim::Reuse(symbols));
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

#[cfg(test)]
mod tests;
