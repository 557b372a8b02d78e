//! Shared fixtures for the integration tests: a host laid out in a temporary directory
//! (trusted root, trust store, policy), plugins built from `tests/plugins`, signed with a
//! throwaway key.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod build;
pub mod registry;
pub mod tuf;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use skillgate::policy::{Isolation, Policy, PolicyBuilder};
use skillgate::sign::sign_plugin_dir;
use skillgate::{Gate, PluginContext, SecretKey, TrustStore};

/// A host in a temporary directory: `root/` is trusted, `keys/` trusts `key`.
pub struct Host {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub key: SecretKey,
    pub build_dir: PathBuf,
    /// The isolation `policy()` asks for: thread unless made with `Host::process()`.
    pub isolation: Isolation,
}

impl Host {
    /// A host whose policy runs plugins in worker processes.
    pub fn process() -> Host {
        let mut host = Host::new();
        host.isolation = Isolation::Process;
        host
    }

    /// Both isolation modes, for tests that must hold in each.
    pub fn each_mode() -> [Host; 2] {
        [Host::new(), Host::process()]
    }

    pub fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let keys = tmp.path().join("keys");
        let build_dir = tmp.path().join("build");
        for d in [&root, &keys, &build_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let key = SecretKey::generate();
        std::fs::write(keys.join("test.pub"), key.public().to_minisign_string()).unwrap();
        Host {
            tmp,
            root,
            key,
            build_dir,
            isolation: Isolation::Thread,
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.tmp.path().join("keys")
    }

    pub fn policy(&self) -> Policy {
        Policy::builder()
            .trusted_roots([&self.root])
            .keys(self.keys_dir())
            .isolation(self.isolation)
            .worker(env!("CARGO_BIN_EXE_skillgate-worker"))
            .build()
            .unwrap()
    }

    /// [`Host::policy`] changed by `edit` (through the validating builder).
    pub fn policy_with(&self, edit: impl FnOnce(PolicyBuilder) -> PolicyBuilder) -> Policy {
        edit(self.policy().to_builder()).build().unwrap()
    }

    pub fn gate(&self) -> Gate {
        Gate::new(self.policy()).unwrap()
    }

    pub fn gate_with(&self, policy: Policy) -> Gate {
        Gate::with_trust_store(policy, TrustStore::load_dir(&self.keys_dir()).unwrap()).unwrap()
    }

    /// Builds `tests/plugins/<src>.c` as plugin `name` (with extra defines) into the
    /// build directory and returns the library path.
    pub fn build(&self, src: &str, name: &str, defines: &[(&str, &str)]) -> PathBuf {
        self.build_with(src, name, defines, &[])
    }

    /// [`Host::build`] with extra compiler arguments after the source file (e.g. `-pthread`,
    /// `-Wl,-z,execstack`; a later `-z` option overrides the one in `C_FLAGS`).
    pub fn build_with(
        &self,
        src: &str,
        name: &str,
        defines: &[(&str, &str)],
        extra_args: &[&str],
    ) -> PathBuf {
        let quoted = format!("\"{name}\"");
        let mut all: Vec<(&str, &str)> = vec![("PLUGIN_NAME", quoted.as_str())];
        all.extend_from_slice(defines);
        static BUILDS: AtomicUsize = AtomicUsize::new(0);
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let out = self
            .build_dir
            .join(format!("{n}-{src}"))
            .join(format!("lib{name}.so"));
        build::build_c_plugin(&build::test_plugin_src(src), &out, &all, extra_args)
    }

    /// Makes `root/<name>/` with the library copied in and a signed manifest.
    pub fn install(&self, name: &str, library: &Path) -> PathBuf {
        self.install_in(&self.root, name, library)
    }

    pub fn install_in(&self, parent: &Path, name: &str, library: &Path) -> PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(library, dir.join(format!("lib{name}.so"))).unwrap();
        std::fs::write(dir.join("plugin.json"), manifest_template(name)).unwrap();
        sign_plugin_dir(&dir, &self.key).unwrap();
        dir
    }

    /// Makes `root/<name>/` with the library copied in and `manifest_json` (e.g.
    /// [`manifest_template`] with fields added) as its manifest, then signs it.
    pub fn install_with_manifest(
        &self,
        name: &str,
        library: &Path,
        manifest_json: &str,
    ) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(library, dir.join(format!("lib{name}.so"))).unwrap();
        std::fs::write(dir.join("plugin.json"), manifest_json).unwrap();
        sign_plugin_dir(&dir, &self.key).unwrap();
        dir
    }

    /// Builds the Rust example plugin (`examples/echo-plugin`), installs it as `root/echo`
    /// with the example's own manifest, and signs it.
    pub fn install_rust_echo(&self) -> PathBuf {
        let lib = build::build_rust_plugin(
            &build::echo_plugin_src(),
            &self.build_dir.join("rust/libecho.so"),
        );
        let dir = self.root.join("echo");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&lib, dir.join("libecho.so")).unwrap();
        std::fs::copy(
            build::repo_root().join("examples/echo-plugin/plugin.json"),
            dir.join("plugin.json"),
        )
        .unwrap();
        sign_plugin_dir(&dir, &self.key).unwrap();
        dir
    }

    /// Builds, installs and signs a plugin from `tests/plugins/<src>.c` in one go.
    pub fn plugin(&self, src: &str, name: &str) -> PathBuf {
        let lib = self.build(src, name, &[]);
        self.install(name, &lib)
    }

    /// The host still verifies, loads and runs a good plugin: every negative test ends here.
    pub fn assert_still_serves(&self, gate: &Gate) {
        let name = "healthy";
        let dir = self.root.join(name);
        if !dir.exists() {
            self.plugin("good", name);
        }
        let plugin = gate
            .verify_and_load(&dir)
            .expect("the host must still load a good plugin");
        let result = plugin
            .execute(&PluginContext::default())
            .expect("and run it");
        assert!(result.success);
        assert_eq!(result.output["marker"], "v1");
    }
}

pub fn manifest_template(name: &str) -> String {
    format!(
        r#"{{"name":"{name}","description":"skillgate test plugin","version":"1.0.0","author":"skillgate tests","abi_version":1,"when_to_use":null,"when_not_to_use":null,"allowed_tools":[],"thread_safe":false}}"#
    )
}

pub fn ctx(input: serde_json::Value) -> PluginContext {
    let mut c = PluginContext::default();
    if let serde_json::Value::Object(m) = input {
        c.input = m.into_iter().collect();
    }
    c
}

impl Host {
    /// [`Host::policy`] with process isolation and the worker cargo built for these tests.
    pub fn process_policy(&self) -> Policy {
        self.policy_with(|p| {
            p.isolation(Isolation::Process)
                .worker(env!("CARGO_BIN_EXE_skillgate-worker"))
        })
    }

    /// A gate over [`Host::process_policy`].
    pub fn process_gate(&self) -> Gate {
        self.gate_with(self.process_policy())
    }
}

/// Whether `pid` is (still) a child of this process: `/proc/<pid>/stat` exists and its
/// parent-pid field is ours. A reaped worker fails this even if its pid was reused.
pub fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the
    // last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let ppid = rest.split_whitespace().nth(1);
    ppid == Some(std::process::id().to_string().as_str())
}

/// Builds `good.c` as plugin `name` at `version` and lays it out, signed, in an author's
/// directory outside every root; `data` adds a file `data/blob.bin` of that many bytes.
pub fn release(host: &Host, name: &str, version: &str, data: usize) -> PathBuf {
    let quoted = format!("\"{version}\"");
    let marker = format!("\"{version}\"");
    let lib = host.build(
        "good",
        name,
        &[
            ("PLUGIN_VERSION", quoted.as_str()),
            ("MARKER", marker.as_str()),
        ],
    );
    let dir = host.tmp.path().join("author").join(version).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&lib, dir.join(format!("lib{name}.so"))).unwrap();
    let manifest = manifest_template(name).replace("\"1.0.0\"", &format!("\"{version}\""));
    std::fs::write(dir.join("plugin.json"), manifest).unwrap();
    if data > 0 {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let bytes: Vec<u8> = (0..data).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("data/blob.bin"), bytes).unwrap();
    }
    skillgate::sign::sign_plugin_dir(&dir, &host.key).unwrap();
    dir
}
