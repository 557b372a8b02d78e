//! What one call may ask for beyond the policy: [`CallOptions`].
//!
//! Its own module so that each option (the deadline, cancellation, the progress callback)
//! is one field and one builder method, and the executors read them from one place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cancel::CancelToken;
use super::tools::ProgressFn;

/// Options for one call ([`crate::LoadedPlugin::execute_with`]):
/// `CallOptions::new().timeout(d).cancel(&token).on_progress(|v| eprintln!("{v}"))`.
///
/// **A call's own deadline is capped by the policy's call timeout** (`limits.call_timeout_ms`):
/// the policy is the administrator's bound on how long plugin code may hold a worker, and a
/// caller can shorten it, never lengthen it. The shorter of the two applies, from the
/// moment the call is made (waiting for a free worker counts), and a call that runs out of
/// it fails with `FaultError::Timeout` naming that duration.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    cancel: Option<CancelToken>,
    pub(crate) on_progress: Option<ProgressFn>,
}

impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("cancel", &self.cancel)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl CallOptions {
    /// No options: the policy's call timeout, no cancellation (the same as `execute`).
    pub fn new() -> Self {
        Self::default()
    }

    /// This call must end within `timeout` of its start (capped by the policy's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// This call must end by `deadline` (capped by the policy's timeout from its start).
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// `token.cancel()` (on any clone, from any thread) fails this call with
    /// `FaultError::Cancelled`: before the call starts without touching the plugin; while
    /// it runs in process mode by killing the worker running it (the handle is then
    /// poisoned, as after any fault; see [`crate::LoadedPlugin::restart`]); in thread mode
    /// by abandoning the call as a timeout does.
    pub fn cancel(mut self, token: &CancelToken) -> Self {
        self.cancel = Some(token.clone());
        self
    }

    /// Receives each progress message the plugin sends during the call
    /// (`skillgate_plugin_host_v1`'s `progress`), in order, on the calling thread, while the
    /// call runs. At most `limits.progress_messages` per call of at most
    /// `limits.progress_bytes` each reach it; the rest are dropped and counted (one `limit`
    /// audit event), never fatal. The callback should return quickly: the plugin's call
    /// waits for it, within the call's deadline.
    pub fn on_progress(mut self, f: impl Fn(&serde_json::Value) + Send + Sync + 'static) -> Self {
        self.on_progress = Some(Arc::new(f));
        self
    }

    /// The cancellation token given, if any.
    pub fn cancel_token(&self) -> Option<&CancelToken> {
        self.cancel.as_ref()
    }

    /// The timeout this call runs under, given the policy's `limit`, counted from `start`:
    /// the shortest of `limit`, the call's timeout and the time left to its deadline.
    pub(crate) fn effective_timeout(&self, limit: Duration, start: Instant) -> Duration {
        let mut t = limit;
        if let Some(own) = self.timeout {
            t = t.min(own);
        }
        if let Some(deadline) = self.deadline {
            t = t.min(deadline.saturating_duration_since(start));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_bound_wins_and_the_policy_caps_it() {
        let start = Instant::now();
        let limit = Duration::from_secs(10);
        let o = CallOptions::new();
        assert_eq!(o.effective_timeout(limit, start), limit);
        let o = CallOptions::new().timeout(Duration::from_secs(60));
        assert_eq!(o.effective_timeout(limit, start), limit);
        let o = CallOptions::new().timeout(Duration::from_millis(100));
        assert_eq!(
            o.effective_timeout(limit, start),
            Duration::from_millis(100)
        );
        let o = CallOptions::new()
            .timeout(Duration::from_secs(2))
            .deadline(start + Duration::from_secs(1));
        assert_eq!(o.effective_timeout(limit, start), Duration::from_secs(1));
    }
}
