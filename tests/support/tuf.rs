//! TUF repositories as an operator keeps them, made with `tough`'s editor and ed25519 keys:
//! shared by tests/freshness.rs (the check itself) and tests/fleet.rs (a pull that asks it).

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use skillgate::Policy;
use skillgate::fleet::freshness::Freshness;
use tough::editor::RepositoryEditor;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::Target;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn in_days(days: i64) -> jiff::Timestamp {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap()
}

pub fn one() -> NonZeroU64 {
    NonZeroU64::new(1).unwrap()
}

pub fn nz(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap()
}

/// An ed25519 signing key as tough reads it: PKCS#8 (v2) DER in a file.
pub fn keygen(path: &Path) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    std::fs::write(path, doc.as_ref()).unwrap();
}

/// The versions and timestamp expiry of one publication.
#[derive(Clone, Copy)]
pub struct Publication {
    pub targets: u64,
    pub snapshot: u64,
    pub timestamp: u64,
    pub timestamp_expires_in_days: i64,
}

impl Publication {
    pub fn serial(n: u64) -> Self {
        Publication {
            targets: n,
            snapshot: n,
            timestamp: n,
            timestamp_expires_in_days: 1,
        }
    }
}

/// A TUF repository as an operator keeps it: an offline root key, an online key for
/// targets, snapshot and timestamp, `root.json`, and the metadata directory it publishes.
pub struct Repo {
    pub dir: tempfile::TempDir,
    /// The key files' extension: `der` (ed25519 PKCS#8) or `pem` (RSA, from openssl).
    pub ext: &'static str,
    /// The releases listed: target name -> the manifest file.
    pub releases: BTreeMap<String, PathBuf>,
}

/// A release's OCI manifest bytes: what `skill-sign push` uploads (its exact form does not
/// matter to TUF, only its bytes).
pub fn manifest(name: &str, version: &str, salt: &str) -> Vec<u8> {
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"annotations\":{{\"org.opencontainers.image.title\":\"{name}\",\"org.opencontainers.image.version\":\"{version}\",\"salt\":\"{salt}\"}}}}"
    )
    .into_bytes()
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

impl Repo {
    /// Ed25519 keys and a signed `root.json` (version 1, expires in a year).
    pub fn new() -> Repo {
        Repo::with_keys("der", keygen)
    }

    /// Keys made by `keygen` (files `keys/{root,online}.EXT`) and a signed `root.json`.
    pub fn with_keys(ext: &'static str, keygen: fn(&Path)) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::create_dir_all(dir.path().join("releases")).unwrap();
        keygen(&dir.path().join(format!("keys/root.{ext}")));
        keygen(&dir.path().join(format!("keys/online.{ext}")));
        let repo = Repo {
            dir,
            ext,
            releases: BTreeMap::new(),
        };
        repo.write_root();
        repo
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn key(&self, name: &str) -> Box<dyn KeySource> {
        Box::new(LocalKeySource {
            path: self.path(&format!("keys/{name}.{}", self.ext)),
        })
    }

    pub fn root_path(&self) -> PathBuf {
        self.path("root.json")
    }

    pub fn metadata(&self) -> PathBuf {
        self.path("metadata")
    }

    pub fn root_sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(
            std::fs::read(self.root_path()).unwrap(),
        ))
    }

    /// The root `skill-sign tuf init` writes: the root key for root, the online key for
    /// the other roles, expiring in a year.
    pub fn write_root(&self) {
        skillgate::fleet::publish::init_root(
            &self.path(&format!("keys/root.{}", self.ext)),
            &self.path(&format!("keys/online.{}", self.ext)),
            &self.root_path(),
            365,
        )
        .unwrap();
    }

    /// Adds a release (its manifest bytes) to the list the next publication signs; returns
    /// the manifest's digest and length.
    pub fn add_release(&mut self, name: &str, version: &str, bytes: &[u8]) -> (String, u64) {
        let file = self.path(&format!("releases/{name}-{version}.json"));
        std::fs::write(&file, bytes).unwrap();
        self.releases.insert(format!("{name}/{version}"), file);
        (digest_of(bytes), bytes.len() as u64)
    }

    /// Signs the current release list with the given versions and writes the metadata
    /// directory (as an operator's publishing step does).
    pub fn publish(&self, p: Publication) {
        runtime().block_on(async {
            let mut editor = RepositoryEditor::new(self.root_path()).await.unwrap();
            for (name, file) in &self.releases {
                let target = Target::from_path(file).await.unwrap();
                editor.add_target(name.as_str(), target).unwrap();
            }
            editor
                .targets_version(nz(p.targets))
                .unwrap()
                .targets_expires(in_days(30))
                .unwrap()
                .snapshot_version(nz(p.snapshot))
                .snapshot_expires(in_days(7))
                .timestamp_version(nz(p.timestamp))
                .timestamp_expires(in_days(p.timestamp_expires_in_days));
            let signed = editor.sign(&[self.key("online")]).await.unwrap();
            signed.write(self.metadata()).await.unwrap();
        });
    }

    /// A policy file in the repository's directory naming it by relative paths, with the
    /// metadata source `metadata` and the state directory `state` (created).
    pub fn policy(&self, metadata: &str, state: &str, pin: &str) -> PathBuf {
        std::fs::create_dir_all(self.path("trust")).unwrap();
        std::fs::create_dir_all(self.path(state)).unwrap();
        set_mode(&self.path(state), 0o700);
        let policy = serde_json::json!({
            "trusted_roots": ["plugins"],
            "keys": "trust",
            "isolation": "process",
            "freshness": {
                "root": "root.json",
                "root_sha256": pin,
                "metadata": metadata,
                "state": state,
            }
        });
        let path = self.path("policy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
        path
    }

    /// The check of a policy with the metadata directory and state directory `state`.
    pub fn freshness(&self, state: &str) -> Freshness {
        let policy =
            Policy::from_file(self.policy("metadata", state, &self.root_sha256())).unwrap();
        Freshness::from_policy(policy.freshness().unwrap()).unwrap()
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An RSA key as docs/fleet-tuf.md makes it (`openssl genpkey`), of `bits` bits.
pub fn openssl_rsa(path: &Path, bits: u32) {
    let status = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .arg("-out")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(status.success());
}
