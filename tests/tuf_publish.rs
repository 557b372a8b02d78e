//! The operator's TUF procedure of docs/fleet-tuf.md, run as written with the real
//! binaries: keys from `openssl genpkey`, `skill-sign tuf init`, `skill-sign push
//! --manifest-out`, `skill-sign tuf publish`, then hosts that pull with `skillgate pull`
//! under a policy pinning the root, and run the release, in both isolation modes; a release
//! taken out of the releases directory and published again is refused (`NotListed`) while
//! the one still listed installs. Then the refusals of `tuf init` and `tuf publish`, each
//! with its control.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::ffi::OsStr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::Digest as _;
use skillgate::error::FreshnessError;
use skillgate::fleet::publish::{PublishError, PublishOptions, init_root, publish};
use skillgate::fleet::{ARTIFACT_TYPE, OCI_MANIFEST};
use skillgate::{Error, Gate, Policy};
use support::registry::Registry;
use support::tuf::{keygen, openssl_rsa, set_mode};
use support::{Host, release};

/// An RSA key as docs/fleet-tuf.md makes it, at 2048 bits instead of the documented 3072:
/// a 3072-bit key takes seconds to generate on a busy machine and tough reads both alike
/// (RSA PEM), so the size changes nothing this file tests.
fn openssl_key(path: &Path) {
    openssl_rsa(path, 2048);
}

fn run(bin: &str, args: &[&OsStr]) -> Output {
    std::process::Command::new(bin).args(args).output().unwrap()
}

fn skill_sign(args: &[&OsStr]) -> Output {
    run(env!("CARGO_BIN_EXE_skill-sign"), args)
}

fn skillgate(args: &[&OsStr]) -> Output {
    run(env!("CARGO_BIN_EXE_skillgate"), args)
}

fn os(s: &str) -> &OsStr {
    s.as_ref()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The operator's directory as docs/fleet-tuf.md lays it out: `tuf/keys`, `tuf/root.json`,
/// `tuf/releases/NAME/VERSION`, `tuf/metadata`.
struct Operator {
    dir: tempfile::TempDir,
}

impl Operator {
    /// Keys made by `keygen` as `tuf/keys/{root,online}.EXT`; no root yet.
    fn new(ext: &str, keygen: fn(&Path)) -> (Operator, PathBuf, PathBuf) {
        let op = Operator {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(op.path("tuf/keys")).unwrap();
        std::fs::create_dir_all(op.path("tuf/releases")).unwrap();
        let (root, online) = (
            op.path(&format!("tuf/keys/root.{ext}")),
            op.path(&format!("tuf/keys/online.{ext}")),
        );
        keygen(&root);
        keygen(&online);
        (op, root, online)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("tuf/root.json")
    }

    fn releases(&self) -> PathBuf {
        self.path("tuf/releases")
    }

    fn metadata(&self) -> PathBuf {
        self.path("tuf/metadata")
    }

    /// `skill-sign tuf publish` with the documented arguments and `extra`.
    fn publish_cli(&self, extra: &[&str]) -> Output {
        let (root, key, releases, metadata) = (
            self.root(),
            self.path("tuf/keys/online.pem"),
            self.releases(),
            self.metadata(),
        );
        let mut args: Vec<&OsStr> = vec![
            os("tuf"),
            os("publish"),
            os("--root"),
            root.as_os_str(),
            os("--key"),
            key.as_os_str(),
            os("--releases"),
            releases.as_os_str(),
            os("--metadata"),
            metadata.as_os_str(),
        ];
        args.extend(extra.iter().map(|a| os(a)));
        skill_sign(&args)
    }

    /// A host's policy file in `dir`: trusting `roots`, the trust store `keys`, `isolation`,
    /// and a `freshness` section pinning this operator's root by its SHA-256, reading the
    /// metadata directory, with a state directory of its own.
    fn policy(&self, dir: &Path, roots: &[&Path], keys: &Path, isolation: &str) -> PathBuf {
        let state = dir.join("tuf-state");
        std::fs::create_dir_all(&state).unwrap();
        set_mode(&state, 0o700);
        let policy = serde_json::json!({
            "trusted_roots": roots,
            "keys": keys,
            "isolation": isolation,
            "worker": env!("CARGO_BIN_EXE_skillgate-worker"),
            "freshness": {
                "root": self.root(),
                "root_sha256": sha256_hex(&std::fs::read(self.root()).unwrap()),
                "metadata": self.metadata(),
                "state": state,
            }
        });
        let path = dir.join("policy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
        path
    }
}

/// `skill-sign tuf init` as documented.
fn tuf_init(root_key: &Path, online_key: &Path, out: &Path) -> Output {
    skill_sign(&[
        os("tuf"),
        os("init"),
        os("--root-key"),
        root_key.as_os_str(),
        os("--online-key"),
        online_key.as_os_str(),
        os("--out"),
        out.as_os_str(),
    ])
}

/// `skillgate pull REFERENCE --root ROOT --policy POLICY`.
fn pull(reference: &str, root: &Path, policy: &Path) -> Output {
    skillgate(&[
        os("pull"),
        os(reference),
        os("--root"),
        root.as_os_str(),
        os("--policy"),
        policy.as_os_str(),
    ])
}

/// `skillgate run DIR --policy POLICY`: the plugin's `marker` output.
fn run_marker(dir: &Path, policy: &Path) -> String {
    let out = skillgate(&[
        os("run"),
        dir.as_os_str(),
        os("--policy"),
        policy.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: skillgate::PluginResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result.success, "{result:?}");
    result.output["marker"].as_str().unwrap().to_owned()
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn the_documented_procedure_publishes_then_withdraws_a_release_in_both_modes() {
    let registry = Registry::start();
    let author = Host::new();
    let public_key = author.keys_dir().join("test.pub");
    let name = "tufcli";

    // 1. Keys (openssl, as documented) and the root.
    let (op, root_key, online_key) = Operator::new("pem", openssl_key);
    let out = tuf_init(&root_key, &online_key, &op.root());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pin = sha256_hex(&std::fs::read(op.root()).unwrap());
    assert!(
        text(&out.stdout).contains(&format!("sha256 {pin}")),
        "the pin is printed: {}",
        text(&out.stdout)
    );

    // 3. Push two releases, keeping each manifest in the releases directory.
    let reference = |version: &str| format!("oci://{}/plugins/{name}:{version}", registry.host());
    let mut digests = Vec::new();
    for version in ["1.0.0", "1.1.0"] {
        let dir = release(&author, name, version, 0);
        let manifest_out = op.releases().join(name).join(version);
        let push = || {
            skill_sign(&[
                os("push"),
                dir.as_os_str(),
                os(&reference(version)),
                os("--public-key"),
                public_key.as_os_str(),
                os("--manifest-out"),
                manifest_out.as_os_str(),
            ])
        };
        let out = push();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let digest = text(&out.stdout).trim().to_owned();
        let kept = std::fs::read(&manifest_out).unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&kept)), digest);
        // --manifest-out never overwrites: the push is refused, the file kept.
        let again = push();
        assert_eq!(again.status.code(), Some(2), "{again:?}");
        assert!(text(&again.stderr).contains("already exists"), "{again:?}");
        assert_eq!(std::fs::read(&manifest_out).unwrap(), kept);
        digests.push(digest);
    }

    // Publish both: the version is the current Unix time.
    let out = op.publish_cli(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for (version, digest) in ["1.0.0", "1.1.0"].iter().zip(&digests) {
        assert!(
            stdout.contains(&format!("listed {name}/{version} {digest} ")),
            "{stdout}"
        );
    }
    let first: u64 = stdout
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("signed version N: {stdout}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(first <= now && first + 3600 > now, "{first} vs {now}");

    // Hosts in each mode pull 1.1.0 and run it.
    let hosts: Vec<(&str, PathBuf)> = ["thread", "process"]
        .into_iter()
        .map(|mode| {
            let dir = op.path(&format!("host-{mode}"));
            for root in ["a", "b"] {
                std::fs::create_dir_all(dir.join(root)).unwrap();
            }
            (mode, dir)
        })
        .collect();
    let policies: Vec<PathBuf> = hosts
        .iter()
        .map(|(mode, dir)| {
            op.policy(
                dir,
                &[&dir.join("a"), &dir.join("b")],
                &author.keys_dir(),
                mode,
            )
        })
        .collect();
    for ((mode, dir), policy) in hosts.iter().zip(&policies) {
        let out = pull(&reference("1.1.0"), &dir.join("a"), policy);
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with(&digests[1]), "{mode}");
        assert_eq!(run_marker(&dir.join("a").join(name), policy), "1.1.0");
    }

    // Withdraw 1.1.0: out of the releases directory, published again.
    std::fs::remove_file(op.releases().join(name).join("1.1.0")).unwrap();
    let out = op.publish_cli(&["--version", &(first + 1).to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("withdrawn {name}/1.1.0")),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&format!("listed {name}/1.1.0")),
        "{stdout}"
    );

    for ((mode, dir), policy) in hosts.iter().zip(&policies) {
        let fresh_root = dir.join("b");
        // The command line: refused (exit 1), naming the refusal.
        let out = pull(&reference("1.1.0"), &fresh_root, policy);
        assert_eq!(out.status.code(), Some(1), "{mode}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "release {name}/1.1.0 is not listed in the current TUF targets"
            )),
            "{mode}: {stderr}"
        );
        assert!(is_empty_dir(&fresh_root), "{mode}: nothing installed");
        // The library: the exact variant.
        let gate = Gate::new(Policy::from_file(policy).unwrap()).unwrap();
        let e = skillgate::fleet::pull(&gate, &reference("1.1.0"), &fresh_root).unwrap_err();
        assert!(
            matches!(&e, Error::Freshness(FreshnessError::NotListed { target })
                if *target == format!("{name}/1.1.0")),
            "{mode}: {e:?}"
        );
        assert!(is_empty_dir(&fresh_root), "{mode}: nothing installed");

        // Control: 1.0.0, still listed, installs and runs on the same host.
        let out = pull(&reference("1.0.0"), &fresh_root, policy);
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with(&digests[0]), "{mode}");
        assert_eq!(run_marker(&fresh_root.join(name), policy), "1.0.0");
    }
}

/// A manifest as `skill-sign push` writes one (its media and artifact types), with `salt`
/// in the config descriptor so that each is different.
fn manifest(salt: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": ARTIFACT_TYPE,
            "digest": format!("sha256:{}", sha256_hex(salt.as_bytes())),
            "size": salt.len(),
        },
        "layers": [],
    }))
    .unwrap()
}

/// An operator with ed25519 keys (fast) and a root made by `init_root`.
fn ed25519_operator() -> Operator {
    let (op, root_key, online_key) = Operator::new("der", keygen);
    init_root(&root_key, &online_key, &op.root(), 365).unwrap();
    op
}

fn options(version: u64) -> PublishOptions {
    PublishOptions::new().version(NonZeroU64::new(version).unwrap())
}

fn publish_with(op: &Operator, key: &str, version: u64) -> Result<Vec<String>, PublishError> {
    publish(
        &op.root(),
        &op.path(&format!("tuf/keys/{key}.der")),
        &op.releases(),
        &op.metadata(),
        options(version),
    )
    .map(|p| p.listed.into_iter().map(|l| l.target).collect())
}

#[test]
fn tuf_init_refuses_an_existing_out_file() {
    let (op, root_key, online_key) = Operator::new("der", keygen);
    std::fs::write(op.root(), b"an operator's earlier root").unwrap();
    let e = init_root(&root_key, &online_key, &op.root(), 365).unwrap_err();
    assert!(
        matches!(&e, PublishError::Exists { path } if *path == op.root()),
        "{e:?}"
    );
    let out = tuf_init(&root_key, &online_key, &op.root());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("already exists"), "{out:?}");
    assert_eq!(
        std::fs::read(op.root()).unwrap(),
        b"an operator's earlier root"
    );

    // Control: a new file is written, and it is a root tough's editor accepts.
    let fresh = op.path("tuf/root-2.json");
    let made = init_root(&root_key, &online_key, &fresh, 365).unwrap();
    assert_eq!(made.sha256, sha256_hex(&std::fs::read(&fresh).unwrap()));
    std::fs::create_dir_all(op.releases().join("echo")).unwrap();
    std::fs::write(op.releases().join("echo/1.0.0"), manifest("a")).unwrap();
    let listed = publish(
        &fresh,
        &online_key,
        &op.releases(),
        &op.metadata(),
        options(1),
    )
    .unwrap();
    assert_eq!(listed.listed.len(), 1);
}

#[test]
fn tuf_publish_refuses_a_releases_entry_that_is_not_name_version() {
    let op = ed25519_operator();
    let releases = op.releases();
    let good = releases.join("echo/1.0.0");
    std::fs::create_dir_all(releases.join("echo")).unwrap();
    std::fs::write(&good, manifest("good")).unwrap();
    // Control: the good entry alone publishes.
    assert_eq!(publish_with(&op, "online", 1).unwrap(), ["echo/1.0.0"]);

    // Each bad entry, added beside the good one, is refused naming it; nothing is signed.
    type Lay = fn(&Path) -> PathBuf;
    let cases: [(&str, Lay); 7] = [
        ("a file at the top", |r| {
            std::fs::write(r.join("echo-1.0.0.json"), manifest("x")).unwrap();
            r.join("echo-1.0.0.json")
        }),
        ("a hidden name", |r| {
            std::fs::create_dir_all(r.join(".echo")).unwrap();
            std::fs::write(r.join(".echo/1.0.0"), manifest("x")).unwrap();
            r.join(".echo/1.0.0")
        }),
        ("a name with a space", |r| {
            std::fs::create_dir_all(r.join("e cho")).unwrap();
            std::fs::write(r.join("e cho/1.0.0"), manifest("x")).unwrap();
            r.join("e cho/1.0.0")
        }),
        ("not semver", |r| {
            std::fs::write(r.join("echo/latest"), manifest("x")).unwrap();
            r.join("echo/latest")
        }),
        ("a leading zero", |r| {
            std::fs::write(r.join("echo/01.0.0"), manifest("x")).unwrap();
            r.join("echo/01.0.0")
        }),
        ("a directory as VERSION", |r| {
            std::fs::create_dir_all(r.join("echo/2.0.0")).unwrap();
            r.join("echo/2.0.0")
        }),
        ("a symbolic link as VERSION", |r| {
            std::os::unix::fs::symlink(r.join("echo/1.0.0"), r.join("echo/3.0.0")).unwrap();
            r.join("echo/3.0.0")
        }),
    ];
    let before = std::fs::read(op.metadata().join("timestamp.json")).unwrap();
    for (what, lay) in cases {
        let bad = lay(&releases);
        let e = publish_with(&op, "online", 2).unwrap_err();
        assert!(
            matches!(&e, PublishError::BadEntry { path, .. } if *path == bad),
            "{what}: {e:?}"
        );
        assert_eq!(
            std::fs::read(op.metadata().join("timestamp.json")).unwrap(),
            before,
            "{what}: nothing written"
        );
        if bad.is_dir() {
            std::fs::remove_dir_all(&bad).unwrap();
        } else {
            std::fs::remove_file(&bad).unwrap();
        }
        let parent = bad.parent().unwrap();
        if parent != releases.join("echo") && parent != releases {
            std::fs::remove_dir(parent).unwrap();
        }
    }

    // A NAME/VERSION file that is not a plugin's OCI manifest (the signed plugin.json,
    // say) is refused too.
    std::fs::write(
        releases.join("echo/1.1.0"),
        support::manifest_template("echo"),
    )
    .unwrap();
    let e = publish_with(&op, "online", 2).unwrap_err();
    assert!(
        matches!(&e, PublishError::NotAManifest { target, .. } if target == "echo/1.1.0"),
        "{e:?}"
    );
    std::fs::remove_file(releases.join("echo/1.1.0")).unwrap();

    // The command line says which entry, exit 2.
    std::fs::write(releases.join("stray"), b"").unwrap();
    let out = skill_sign(&[
        os("tuf"),
        os("publish"),
        os("--root"),
        op.root().as_os_str(),
        os("--key"),
        op.path("tuf/keys/online.der").as_os_str(),
        os("--releases"),
        releases.as_os_str(),
        os("--metadata"),
        op.metadata().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!(
            "releases entry {}",
            releases.join("stray").display()
        )),
        "{out:?}"
    );
    std::fs::remove_file(releases.join("stray")).unwrap();
    // And after the refusals the directory publishes again.
    assert_eq!(publish_with(&op, "online", 2).unwrap(), ["echo/1.0.0"]);
}

#[test]
fn tuf_publish_refuses_a_version_not_above_the_metadatas() {
    let op = ed25519_operator();
    std::fs::create_dir_all(op.releases().join("echo")).unwrap();
    std::fs::write(op.releases().join("echo/1.0.0"), manifest("a")).unwrap();
    publish_with(&op, "online", 5).unwrap();
    let before = std::fs::read(op.metadata().join("targets.json")).unwrap();
    for offered in [5, 4] {
        let e = publish_with(&op, "online", offered).unwrap_err();
        assert!(
            matches!(&e, PublishError::VersionNotHigher { role: "targets", current: 5, offered: o, .. } if *o == offered),
            "{offered}: {e:?}"
        );
        assert_eq!(
            std::fs::read(op.metadata().join("targets.json")).unwrap(),
            before
        );
    }
    // Control: a higher version publishes, and a host's check accepts it.
    publish_with(&op, "online", 6).unwrap();
    let host = op.path("host");
    std::fs::create_dir_all(&host).unwrap();
    let policy = op.policy(&host, &[], &host, "thread");
    let policy = Policy::from_file(policy).unwrap();
    let check =
        skillgate::fleet::freshness::Freshness::from_policy(policy.freshness().unwrap()).unwrap();
    let bytes = manifest("a");
    check
        .check(
            "echo",
            &skillgate::manifest::Version::new(1, 0, 0),
            &format!("sha256:{}", sha256_hex(&bytes)),
            bytes.len() as u64,
        )
        .unwrap();
}

#[test]
fn tuf_publish_refuses_a_key_the_root_does_not_name_for_its_roles() {
    let op = ed25519_operator();
    std::fs::create_dir_all(op.releases().join("echo")).unwrap();
    std::fs::write(op.releases().join("echo/1.0.0"), manifest("a")).unwrap();
    let e = publish_with(&op, "root", 1).unwrap_err();
    assert!(
        matches!(&e, PublishError::NotRoleKey { path, role: "targets", .. }
            if *path == op.path("tuf/keys/root.der")),
        "{e:?}"
    );
    assert!(
        is_empty_dir(&op.metadata()),
        "nothing written, no staging left"
    );
    // Control: the online key signs.
    assert_eq!(publish_with(&op, "online", 1).unwrap(), ["echo/1.0.0"]);
    let mut files: Vec<String> = std::fs::read_dir(op.metadata())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "1.root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ],
        "the metadata, and no staging directory left"
    );
}
