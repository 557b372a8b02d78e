//! What a caller gives one plugin call beyond its input: [`CallOptions`], taken by
//! [`crate::LoadedPlugin::execute_with`].

use std::sync::Arc;

use crate::exec::tools::ProgressFn;

/// Options of one call: `CallOptions::new().on_progress(|v| eprintln!("{v}"))`.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    pub(crate) on_progress: Option<ProgressFn>,
}

impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("on_progress", &self.on_progress.is_some())
            .finish_non_exhaustive()
    }
}

impl CallOptions {
    /// No options: the same as [`crate::LoadedPlugin::execute`].
    pub fn new() -> Self {
        Self::default()
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
}
