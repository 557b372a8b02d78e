//! Plugins that live as long as the host: [`LivePlugin`] replaces its release while it
//! serves (hot reload, process isolation), and [`watch::Watcher`] does so when a trusted
//! root changes.
//!
//! A reload is the normal path, in full: [`Gate::verify_and_inspect_staged`] (every check,
//! the version mark raised, so an older release is refused as a rollback) and
//! [`Gate::load_staged_with`] (new workers sandboxed, confirmed and checked against the
//! signed manifest). Only a plugin that is ready to serve is swapped in. Each call clones
//! the `Arc` of the release serving when it starts and runs on it to the end, so no call
//! fails because of a swap and none is answered by two releases; the old release's
//! workers end when the last call holding it returns (each call is bounded by its
//! deadline). A refusal leaves the old release serving and comes back with its stage.
//!
//! Thread isolation cannot do this: a thread-mode library is never unloaded (see
//! the README's unload policy), so reloading would only stack copies of it in the host.
//! `reload` says so with `LoadError::ThreadIsolation` before it reads anything.

pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::audit;
use crate::base::ffi::{PluginContext, PluginResult};
use crate::base::version::Version;
use crate::error::Error;
use crate::exec::options::CallOptions;
use crate::gate::{Gate, LoadOptions, LoadedPlugin, StageError};
use crate::pipeline::load::LoadError;
use crate::pipeline::stage::Stage;
use crate::policy::Isolation;

/// A loaded plugin whose release can be replaced while it serves.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use skillgate::{Gate, LivePlugin, LoadOptions, PluginContext, Policy};
/// let gate = Gate::new(Policy::from_file("policy/default.json")?)?;
/// let live = LivePlugin::load(&gate, "skills/echo", LoadOptions::new())?;
/// live.execute(&PluginContext::default())?;
/// // A newer signed release was installed at skills/echo:
/// match live.reload(&gate) {
///     Ok(r) => println!("{} replaced {}", r.version, r.from_version),
///     Err(refused) => eprintln!("still serving the old release; {} refused: {refused}", refused.stage),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LivePlugin {
    current: RwLock<Arc<LoadedPlugin>>,
    /// Where reloads read the release from, and what they give it.
    source: Mutex<PathBuf>,
    options: LoadOptions,
    /// One reload at a time: two that raced could swap in the older of two releases.
    reloading: Mutex<()>,
}

/// What a successful reload replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The plugin's name.
    pub plugin: String,
    /// The version that served before.
    pub from_version: Version,
    /// The version serving now.
    pub version: Version,
}

impl LivePlugin {
    /// Verifies and loads the plugin at `path` ([`Gate::verify_and_load_with`]); reloads
    /// read the same path and get the same `options`.
    pub fn load(
        gate: &Gate,
        path: impl AsRef<Path>,
        options: LoadOptions,
    ) -> Result<Self, StageError> {
        let inspected = gate.verify_and_inspect_staged(path.as_ref())?;
        let plugin = gate.load_staged_with(inspected, &options)?;
        Ok(Self::new(plugin, path.as_ref(), options))
    }

    /// Wraps a plugin already loaded from `path` with `options` (reloads read that path
    /// and get those options).
    pub fn new(plugin: LoadedPlugin, path: impl Into<PathBuf>, options: LoadOptions) -> Self {
        LivePlugin {
            current: RwLock::new(Arc::new(plugin)),
            source: Mutex::new(path.into()),
            options,
            reloading: Mutex::new(()),
        }
    }

    /// The release serving now. A call made through it runs on that release even if a
    /// reload swaps another in meanwhile; holding it keeps that release's workers alive.
    pub fn current(&self) -> Arc<LoadedPlugin> {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// Runs one call on the release serving now ([`LoadedPlugin::execute`]).
    pub fn execute(&self, ctx: &PluginContext) -> Result<PluginResult, Error> {
        self.current().execute(ctx)
    }

    /// Runs one call on the release serving now, with options
    /// ([`LoadedPlugin::execute_with`]).
    pub fn execute_with(
        &self,
        ctx: &PluginContext,
        options: &CallOptions,
    ) -> Result<PluginResult, Error> {
        self.current().execute_with(ctx, options)
    }

    /// Restarts the release serving now after a fault ([`LoadedPlugin::restart`]).
    pub fn restart(&self) -> Result<(), Error> {
        self.current().restart()
    }

    /// The directory reloads read.
    pub fn source(&self) -> PathBuf {
        self.source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the release serving with the one now at [`LivePlugin::source`], verified
    /// and loaded in full by `gate`; see the module documentation. On a refusal the old
    /// release keeps serving and the error names the stage that refused. A release of
    /// another plugin (another signed name) is refused (`LoadError::OtherPlugin`, stage
    /// `Load`) before it is loaded. Thread isolation: `LoadError::ThreadIsolation`.
    pub fn reload(&self, gate: &Gate) -> Result<Reloaded, StageError> {
        let source = self.source();
        self.reload_from(gate, source)
    }

    /// [`LivePlugin::reload`] from another directory, which later reloads then read.
    pub fn reload_from(&self, gate: &Gate, path: impl AsRef<Path>) -> Result<Reloaded, StageError> {
        let reloaded = self.reload_inner(gate, path.as_ref(), false)?;
        Ok(reloaded.unwrap_or_else(|| {
            // Not reached: only the watcher skips an unchanged release.
            let current = self.current();
            Reloaded {
                plugin: current.manifest().name().to_owned(),
                from_version: current.manifest().version().clone(),
                version: current.manifest().version().clone(),
            }
        }))
    }

    /// The reload itself. With `skip_unchanged`, a release whose signed manifest is the
    /// one serving (verified in full all the same) is not loaded again: `Ok(None)`.
    fn reload_inner(
        &self,
        gate: &Gate,
        source: &Path,
        skip_unchanged: bool,
    ) -> Result<Option<Reloaded>, StageError> {
        let _one = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.current();
        let serving_version = old.manifest().version().to_string();
        let refused = |stage: Stage, error: Error| {
            let subject = audit::Subject {
                plugin: old.manifest().name(),
                version: Some(&serving_version),
                path: Some(source),
                sha256: None,
            };
            audit::reload_refused(&subject, stage.name(), error.kind(), &error);
            StageError { stage, error }
        };
        if old.isolation() == Isolation::Thread || gate.policy().isolation == Isolation::Thread {
            let error = LoadError::ThreadIsolation {
                operation: "reload",
                plugin: old.manifest().name().to_owned(),
            };
            return Err(refused(Stage::Load, error.into()));
        }
        let inspected = gate
            .verify_and_inspect_staged(source)
            .map_err(|e| refused(e.stage, e.error))?;
        let found = inspected.bundle().manifest();
        if found.name() != old.manifest().name() {
            let error = LoadError::OtherPlugin {
                loaded: old.manifest().name().to_owned(),
                found: found.name().to_owned(),
            };
            return Err(refused(Stage::Load, error.into()));
        }
        if skip_unchanged && found == old.manifest() {
            return Ok(None);
        }
        let new = gate
            .load_staged_with(inspected, &self.options)
            .map_err(|e| refused(e.stage, e.error))?;
        let reloaded = Reloaded {
            plugin: new.manifest().name().to_owned(),
            from_version: old.manifest().version().clone(),
            version: new.manifest().version().clone(),
        };
        let (version, sha256) = (new.manifest().version().to_string(), new.library_sha256());
        audit::reloaded(
            &audit::Subject {
                plugin: new.manifest().name(),
                version: Some(&version),
                path: Some(source),
                sha256: Some(&sha256),
            },
            &audit::Runs {
                isolation: &new.isolation().to_string(),
                worker_pid: new.worker_pid(),
            },
            new.signers(),
            &old.manifest().version().to_string(),
        );
        let replaced = {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *current, Arc::new(new))
        };
        *self
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = source.to_path_buf();
        // The old release ends here, or when the last call on it returns.
        drop(replaced);
        drop(old);
        Ok(Some(reloaded))
    }
}
