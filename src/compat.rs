//! VT Code's `native_plugin` names and JSON shapes, on top of the verifying pipeline.
//!
//! Code written against VT Code's `PluginLoader` keeps compiling with small changes, but
//! there is no unverified path any more: a loader holds a trust store and a policy, every
//! `load_plugin` runs [`Gate::verify_and_load`](crate::Gate::verify_and_load), and a
//! loader with no trusted keys refuses everything.

/// The file name a plugin's library has on this OS (`lib<name>.so` here).
pub use crate::pipeline::manifest::library_filename;
use std::path::{Path, PathBuf};

use crate::base::escape::Escaped;
use crate::base::ffi::{PluginContext, PluginMetadata, PluginResult};
use crate::error::Error;
use crate::gate::{Gate, LoadedPlugin};
use crate::policy::Policy;
use crate::trust::keys::PublicKey;
use crate::trust::signature::{MANIFEST_FILE_NAME, SIGNATURE_FILE_NAME};
use crate::trust::store::TrustStore;

/// Type-erased plugin operations (VT Code's trait; errors are typed).
pub trait NativePluginTrait: Send + Sync + std::fmt::Debug {
    /// The signed metadata.
    fn metadata(&self) -> &PluginMetadata;
    /// The plugin directory.
    fn path(&self) -> &Path;
    /// Runs the plugin once; calls are serialized.
    fn execute(&self, ctx: &PluginContext) -> Result<PluginResult, Error>;
}

/// A verified, loaded plugin (VT Code's name for it).
#[derive(Debug)]
pub struct NativePlugin {
    inner: LoadedPlugin,
}

impl NativePlugin {
    /// Runs the plugin once; calls are serialized.
    pub fn execute(&self, ctx: &PluginContext) -> Result<PluginResult, Error> {
        self.inner.execute(ctx)
    }
    /// The verified handle underneath, with signers and inspection results.
    pub fn loaded(&self) -> &LoadedPlugin {
        &self.inner
    }
}

impl From<LoadedPlugin> for NativePlugin {
    fn from(inner: LoadedPlugin) -> Self {
        NativePlugin { inner }
    }
}

impl NativePluginTrait for NativePlugin {
    fn metadata(&self) -> &PluginMetadata {
        self.inner.metadata()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn execute(&self, ctx: &PluginContext) -> Result<PluginResult, Error> {
        self.inner.execute(ctx)
    }
}

/// Discovers and loads plugins from trusted directories, verifying each one.
#[derive(Debug, Clone)]
pub struct PluginLoader {
    trusted_dirs: Vec<PathBuf>,
    policy: Policy,
    trust: TrustStore,
}

impl Default for PluginLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginLoader {
    /// A loader with no trusted directories and no trusted keys: it refuses every plugin
    /// until both are added.
    pub fn new() -> Self {
        Self::with_trust(Policy::default(), TrustStore::empty())
    }

    /// A loader with the given policy (its trusted roots included) and trust store.
    pub fn with_trust(policy: Policy, trust: TrustStore) -> Self {
        let mut loader = PluginLoader {
            trusted_dirs: Vec::new(),
            policy,
            trust,
        };
        for root in std::mem::take(&mut loader.policy.trusted_roots) {
            loader.add_trusted_dir(root);
        }
        loader
    }

    /// Adds a public key to the trust store. Every key and revocation already there
    /// (those read from `keys/*.revoked` included) stays.
    pub fn add_trusted_key(&mut self, key: PublicKey) -> Result<&mut Self, Error> {
        self.trust.add_key(key)?;
        Ok(self)
    }

    /// Adds a trusted plugin directory (canonicalized when it exists).
    pub fn add_trusted_dir(&mut self, path: PathBuf) -> &mut Self {
        let path = path
            .canonicalize()
            .unwrap_or_else(|_| std::path::absolute(&path).unwrap_or(path));
        if !self.trusted_dirs.contains(&path) {
            self.trusted_dirs.push(path);
        }
        self
    }

    /// The trusted plugin directories.
    pub fn trusted_dirs(&self) -> &[PathBuf] {
        &self.trusted_dirs
    }

    /// Verifies and loads the plugin at `plugin_path`.
    pub fn load_plugin(&self, plugin_path: &Path) -> Result<Box<dyn NativePluginTrait>, Error> {
        let plugin = self.gate()?.verify_and_load(plugin_path)?;
        Ok(Box::new(NativePlugin::from(plugin)))
    }

    /// [`PluginLoader::load_plugin`] for a host working on `workspace`: a plugin whose
    /// signed manifest requests `"workspace"` is granted that directory (as far as the
    /// policy's `sandbox.workspace` allows), and each call's `workspace_root` is it. See
    /// [`crate::LoadOptions::workspace`].
    pub fn load_plugin_in_workspace(
        &self,
        plugin_path: &Path,
        workspace: &Path,
    ) -> Result<Box<dyn NativePluginTrait>, Error> {
        let options = crate::gate::LoadOptions::new().workspace(workspace);
        let plugin = self.gate()?.verify_and_load_with(plugin_path, &options)?;
        Ok(Box::new(NativePlugin::from(plugin)))
    }

    /// Loads every plugin directory (a subdirectory with a `plugin.json`) found directly in
    /// the trusted directories. As in VT Code, a plugin that fails is logged (with the
    /// stage that refused it) and skipped; missing trusted directories are skipped.
    pub fn discover_plugins(&self) -> Result<Vec<Box<dyn NativePluginTrait>>, Error> {
        let gate = self.gate()?;
        let mut plugins: Vec<Box<dyn NativePluginTrait>> = Vec::new();
        for dir in &self.trusted_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut candidates: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| p.join(MANIFEST_FILE_NAME).is_file())
                .collect();
            candidates.sort();
            for path in candidates {
                match gate.verify_and_load(&path) {
                    Ok(p) => plugins.push(Box::new(NativePlugin::from(p))),
                    Err(e) => tracing::warn!(
                        path = %Escaped(path.display()),
                        error = %e,
                        "plugin refused"
                    ),
                }
            }
        }
        Ok(plugins)
    }

    /// A gate over the trusted directories that exist (VT Code skips missing ones).
    fn gate(&self) -> Result<Gate, Error> {
        let mut policy = self.policy.clone();
        policy.trusted_roots = self
            .trusted_dirs
            .iter()
            .filter(|d| d.is_dir())
            .cloned()
            .collect();
        Gate::with_trust_store(policy, self.trust.clone())
    }

    /// The library file name for a plugin name on this platform (`lib<name>.so`).
    pub fn library_filename(&self, name: &str) -> String {
        crate::pipeline::manifest::library_filename(name)
    }
}

/// Checks a plugin directory's shape and returns the problems found (empty when none).
/// This is an author's lint, not a security check: loading verifies everything again.
/// The manifest is unsigned here, so text taken from it is escaped in the problems.
pub fn validate_plugin_structure(plugin_dir: &Path) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let manifest = plugin_dir.join(MANIFEST_FILE_NAME);
    match std::fs::read(&manifest) {
        Err(_) => problems.push(format!("Missing {MANIFEST_FILE_NAME}")),
        Ok(bytes) => match crate::pipeline::manifest::parse_wire(&bytes) {
            Err(e) => problems.push(format!("Invalid {MANIFEST_FILE_NAME}: {}", Escaped(e))),
            Ok(wire) => {
                if let Err(e) = crate::pipeline::manifest::check_common(&wire) {
                    problems.push(format!("Invalid {MANIFEST_FILE_NAME}: {}", Escaped(e)));
                }
                let library = wire
                    .library
                    .clone()
                    .unwrap_or_else(|| crate::pipeline::manifest::library_filename(&wire.name));
                if !plugin_dir.join(&library).is_file() {
                    problems.push(format!(
                        "No dynamic library found (expected {})",
                        Escaped(&library)
                    ));
                }
                if wire.files.is_none() {
                    problems.push(format!(
                        "{MANIFEST_FILE_NAME} has no files list (run skill-sign sign)"
                    ));
                }
            }
        },
    }
    if !plugin_dir.join(SIGNATURE_FILE_NAME).is_file() {
        problems.push(format!(
            "Missing {SIGNATURE_FILE_NAME} (run skill-sign sign)"
        ));
    }
    Ok(problems)
}
