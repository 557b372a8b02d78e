//! A call's cancellation token: `cancel()` from any thread fails the call it was given to.
//!
//! The token only flips a flag and runs the hooks a call in flight registered
//! ([`CancelToken::on_cancel`]); what cancelling does is the executor's: in process mode
//! the hook kills the worker running that call (through a pidfd, so never a reused pid),
//! in thread mode it wakes the caller, which abandons the call as a timeout does. A hook
//! runs under the token's lock and is removed under it too, so once a call removed its
//! hook no later `cancel()` can reach the worker the call held: it may already serve
//! another call.
//!
//! Hand-written: a flag and a list of closures; a crate would add more than it saves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

type HookFn = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    next_id: AtomicU64,
    hooks: Mutex<Vec<(u64, HookFn)>>,
}

impl Inner {
    fn hooks(&self) -> MutexGuard<'_, Vec<(u64, HookFn)>> {
        // A hook that panicked left the list as it was: nothing half-done to recover.
        self.hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Cancels the calls it is given to ([`crate::CallOptions::cancel`]). Cloning shares the
/// token: `cancel()` on any clone, from any thread, cancels every call that holds one.
/// Once cancelled it stays cancelled; a call started with a cancelled token fails at once
/// with `FaultError::Cancelled` without reaching the plugin.
///
/// ```
/// let token = skillgate::CancelToken::new();
/// let for_the_ui = token.clone();
/// for_the_ui.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every call holding this token, now and later. Returns once each call in
    /// flight was told (in process mode: its worker was sent `SIGKILL`); the calls
    /// themselves return `Cancelled` as soon as they see it.
    pub fn cancel(&self) {
        let hooks = self.inner.hooks();
        self.inner.cancelled.store(true, Ordering::Release);
        for (_, hook) in hooks.iter() {
            hook();
        }
    }

    /// Whether [`CancelToken::cancel`] was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Registers `hook` to run (under the token's lock) when the token is cancelled, or at
    /// once if it already is. The hook is removed when the returned guard drops.
    pub(crate) fn on_cancel(&self, hook: impl Fn() + Send + Sync + 'static) -> Hook<'_> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut hooks = self.inner.hooks();
        if self.inner.cancelled.load(Ordering::Acquire) {
            hook();
        }
        hooks.push((id, Box::new(hook)));
        Hook { token: self, id }
    }
}

/// A registered hook; dropping it removes the hook, after which `cancel()` cannot run it.
pub(crate) struct Hook<'a> {
    token: &'a CancelToken,
    id: u64,
}

impl Drop for Hook<'_> {
    fn drop(&mut self) {
        self.token.inner.hooks().retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_runs_once_on_cancel_and_never_after_it_was_removed() {
        let token = CancelToken::new();
        let runs = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&runs);
        let hook = token.on_cancel(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        drop(hook);
        token.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        let r = Arc::clone(&runs);
        let _hook = token.on_cancel(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        // Already cancelled: the hook runs when registered.
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(token.clone().is_cancelled());
    }
}
