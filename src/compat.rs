//! VT Code's `native_plugin` module, on top of the verifying pipeline.
//!
//! `use skillgate::compat as native_plugin;` (or `use skillgate::compat::*`) stands in for
//! VT Code's module: the same names, the same JSON shapes, the same loader calls. What
//! differs is that there is no unverified path: every `load_plugin` runs
//! [`Gate::verify_and_load`](crate::Gate::verify_and_load) (location, signature, manifest,
//! trust policy, integrity, ELF inspection, sandboxed load), and a loader that has no
//! policy refuses everything.
//!
//! The threat answered here is a host that *meant* to verify but got no trust: VT Code's
//! code calls only `PluginLoader::new()`, so `new()` finds the administrator's policy file
//! itself ([`crate::policy::find_policy_file`]: `SKILLGATE_POLICY`, then the user's, then
//! the system's) and loads its trust store and trusted roots; with none found, or one that
//! cannot be used, every load fails with the error that says so, never with a default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::base::ffi::{
    PLUGIN_ABI_VERSION, PluginContext, PluginMetadata, PluginMetadataFFI, PluginResult,
    PluginResultFFI,
};
/// The file name a plugin's library has on this OS (`lib<name>.so` here; `lib<name>.dylib`
/// on macOS, `<name>.dll` on Windows).
pub use crate::pipeline::manifest::library_filename;

use crate::base::escape::Escaped;
use crate::error::Error;
use crate::exec::pool::SharedPool;
use crate::gate::{Gate, LoadedPlugin};
use crate::policy::{Policy, PolicyEnv, PolicyError, find_policy_file};
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

/// What [`PluginLoader::discover`] found: the plugins that loaded, and each plugin
/// directory that was refused with the error that refused it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Discovery {
    /// Verified, loaded plugins, in directory order.
    pub plugins: Vec<Box<dyn NativePluginTrait>>,
    /// Plugin directories that were refused, with why.
    pub refused: Vec<(PathBuf, Error)>,
}

/// Discovers and loads plugins from trusted directories, verifying each one.
///
/// Each load builds a fresh [`Gate`] from the loader's policy (the trusted directories are
/// opened and checked again, a policy file that was unusable is read again), but the warm
/// pool of workers (`pool.size`) is the loader's: every Gate it builds takes the same pool
/// while the policy's pool size and worker program are unchanged, so a pooled worker waits
/// between loads instead of being started and ended with each call. A clone shares it.
#[derive(Debug, Clone)]
pub struct PluginLoader {
    trusted_dirs: Vec<PathBuf>,
    setup: Setup,
    pool: Arc<SharedPool>,
}

/// Where a loader's policy and trust store stand.
#[derive(Debug, Clone)]
enum Setup {
    /// Given by the host ([`PluginLoader::with_trust`]) or read from the policy file found.
    /// The policy's trusted roots have moved to the loader's trusted directories.
    Ready {
        policy: Box<Policy>,
        trust: TrustStore,
    },
    /// The search found no policy file.
    NotFound { searched: Vec<PathBuf> },
    /// The policy file found, or its trust store, could not be used. It is read again at
    /// each load, so the load fails with that file's own typed error.
    Unusable { path: PathBuf },
}

impl Default for PluginLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginLoader {
    /// A loader configured by the host's policy file, found as
    /// [`find_policy_file`] describes from this process's environment
    /// (`SKILLGATE_POLICY`, then `$XDG_CONFIG_HOME/skillgate/policy.json` or
    /// `~/.config/skillgate/policy.json`, then `/etc/skillgate/policy.json`). The policy's
    /// `keys` become the trust store and its `trusted_roots` the first trusted directories.
    ///
    /// It never fails itself (VT Code's signature): if no file is found, every load and
    /// discovery fails with [`PolicyError::NotFound`] naming each path looked at; if the
    /// file found cannot be read or is invalid, or its keys cannot be loaded, with that
    /// error.
    pub fn new() -> Self {
        Self::from_env(&PolicyEnv::from_process())
    }

    /// [`PluginLoader::new`] with the environment given instead of read from the process.
    pub fn from_env(env: &PolicyEnv) -> Self {
        match find_policy_file(env) {
            Ok(path) => match read_policy(&path) {
                Ok((policy, trust)) => Self::with_trust(policy, trust),
                Err(error) => {
                    tracing::warn!(
                        policy = %Escaped(path.display()),
                        error = %error,
                        "policy file unusable; every plugin will be refused"
                    );
                    Self::unconfigured(Setup::Unusable { path })
                }
            },
            // The search could not tell whether a candidate exists (a permission error on
            // its directory): that path is the policy meant, and each load reports it.
            Err(PolicyError::Io { path, source }) => {
                tracing::warn!(
                    policy = %Escaped(path.display()),
                    error = %Escaped(&source),
                    "policy search failed; every plugin will be refused"
                );
                Self::unconfigured(Setup::Unusable { path })
            }
            Err(PolicyError::NotFound { searched }) => {
                Self::unconfigured(Setup::NotFound { searched })
            }
            // The search returns no other error; were it to, nothing was found either.
            Err(_) => Self::unconfigured(Setup::NotFound {
                searched: env.candidates(),
            }),
        }
    }

    fn unconfigured(setup: Setup) -> Self {
        PluginLoader {
            trusted_dirs: Vec::new(),
            setup,
            pool: Arc::default(),
        }
    }

    /// A loader with the given policy (its trusted roots included) and trust store, for a
    /// host that configures itself in code.
    pub fn with_trust(mut policy: Policy, trust: TrustStore) -> Self {
        let roots = std::mem::take(&mut policy.trusted_roots);
        let mut loader = Self::unconfigured(Setup::Ready {
            policy: Box::new(policy),
            trust,
        });
        for root in roots {
            loader.add_trusted_dir(root);
        }
        loader
    }

    /// Adds a public key to the trust store. Every key and revocation already there
    /// (those read from `keys/*.revoked` included) stays. A loader without a usable policy
    /// has no trust store to add to: the error is the one its loads fail with.
    pub fn add_trusted_key(&mut self, key: PublicKey) -> Result<&mut Self, Error> {
        match &mut self.setup {
            Setup::Ready { trust, .. } => trust.add_key(key)?,
            _ => {
                return Err(self
                    .configured()
                    .err()
                    .unwrap_or_else(|| PolicyError::NoTrustStore.into()));
            }
        }
        Ok(self)
    }

    /// Adds a trusted plugin directory (canonicalized when it exists). A trusted directory
    /// may itself be loaded as a plugin (VT Code trusts a skill's own directory).
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

    /// Verifies and loads the plugin at `plugin_path` (a directory beneath a trusted
    /// directory, or a trusted directory itself).
    pub fn load_plugin(&self, plugin_path: &Path) -> Result<Box<dyn NativePluginTrait>, Error> {
        let plugin = self.gate_for(plugin_path)?.verify_and_load(plugin_path)?;
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
        let plugin = self
            .gate_for(plugin_path)?
            .verify_and_load_with(plugin_path, &options)?;
        Ok(Box::new(NativePlugin::from(plugin)))
    }

    /// Loads every plugin directory (a subdirectory with a `plugin.json`) found directly in
    /// the trusted directories. As in VT Code, a plugin that fails is skipped, with a
    /// `tracing` warning naming the stage that refused it; missing trusted directories are
    /// skipped. [`PluginLoader::discover`] returns the refusals too.
    ///
    /// Verification runs on every core ([`Gate::verify_many`]); loading then runs one
    /// plugin at a time, in sorted order. Until its turn to load, each verified plugin holds
    /// its sealed library copy (see [`Gate::verify_many`] on memory).
    pub fn discover_plugins(&self) -> Result<Vec<Box<dyn NativePluginTrait>>, Error> {
        Ok(self.discover()?.plugins)
    }

    /// [`PluginLoader::discover_plugins`], returning each refused plugin directory with its
    /// error next to the plugins that loaded. Fails as a whole only when the loader itself
    /// cannot work (no usable policy, a trusted root that cannot be opened).
    pub fn discover(&self) -> Result<Discovery, Error> {
        let gate = self.gate()?;
        let mut found = Discovery {
            plugins: Vec::new(),
            refused: Vec::new(),
        };
        let mut candidates: Vec<PathBuf> = Vec::new();
        for dir in &self.trusted_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut here: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| p.join(MANIFEST_FILE_NAME).is_file())
                .collect();
            here.sort();
            candidates.extend(here);
        }
        // Verification (reading and hashing every file) runs on every core; loading starts
        // a worker or thread per plugin and stays serial, in the order found.
        for (path, verified) in gate.verify_many(&candidates) {
            match verified.and_then(|inspected| gate.load(inspected)) {
                Ok(p) => found.plugins.push(Box::new(NativePlugin::from(p))),
                Err(e) => {
                    tracing::warn!(
                        path = %Escaped(path.display()),
                        error = %e,
                        "plugin refused"
                    );
                    found.refused.push((path, e));
                }
            }
        }
        Ok(found)
    }

    /// The policy and trust store, or the error every load fails with.
    fn configured(&self) -> Result<(Policy, TrustStore), Error> {
        match &self.setup {
            Setup::Ready { policy, trust } => Ok((Policy::clone(policy), trust.clone())),
            Setup::NotFound { searched } => Err(PolicyError::NotFound {
                searched: searched.clone(),
            }
            .into()),
            Setup::Unusable { path } => read_policy(path),
        }
    }

    /// A gate over the trusted directories that exist (VT Code skips missing ones).
    /// [`PluginLoader::gate`] for a load of `plugin_path`: a loader that cannot work
    /// refuses the plugin at `setup`, and that refusal is audited like any other.
    fn gate_for(&self, plugin_path: &Path) -> Result<Gate, Error> {
        self.gate().inspect_err(|e| {
            let named = crate::audit::dir_name(plugin_path);
            let subject = crate::audit::Subject {
                plugin: &named,
                version: None,
                path: Some(plugin_path),
                sha256: None,
            };
            crate::audit::refused(&subject, "setup", e.kind(), e);
        })
    }

    fn gate(&self) -> Result<Gate, Error> {
        let (mut policy, trust) = self.configured()?;
        // Empty for a ready loader (its roots moved to `trusted_dirs`); a policy file read
        // again here (see `Setup::Unusable`) brings its own.
        let own = std::mem::take(&mut policy.trusted_roots);
        policy.trusted_roots = self
            .trusted_dirs
            .iter()
            .chain(&own)
            .filter(|d| d.is_dir())
            .cloned()
            .collect();
        Gate::with_shared_pool(policy, trust, &self.pool)
    }

    /// The process ids of the warm workers waiting in this loader's pool now (empty
    /// before its first process-mode load, or with `pool.size` 0). For tests of the pool.
    #[doc(hidden)]
    pub fn pooled_worker_pids(&self) -> Vec<u32> {
        self.pool.pids()
    }

    /// The library file name for a plugin name on this platform (`lib<name>.so`).
    pub fn library_filename(&self, name: &str) -> String {
        library_filename(name)
    }
}

/// The policy file at `path` and the trust store its `keys` name.
fn read_policy(path: &Path) -> Result<(Policy, TrustStore), Error> {
    let policy = Policy::from_file(path)?;
    let trust = TrustStore::load_dir(policy.keys())?;
    Ok((policy, trust))
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
                // The names loading tries, looked for on disk (loading takes only a signed one).
                let names = match &wire.library {
                    Some(named) => vec![named.clone()],
                    None => vec![
                        library_filename(&wire.name),
                        crate::pipeline::manifest::alternative_library_filename(&wire.name),
                    ],
                };
                if !names.iter().any(|n| plugin_dir.join(n).is_file()) {
                    problems.push(format!(
                        "No dynamic library found (expected {})",
                        Escaped(names.join(" or "))
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
