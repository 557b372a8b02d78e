//! TUF freshness end to end: real TUF repositories made here with `tough`'s editor and
//! ed25519 keys, read from a directory and from a loopback HTTP server this file starts,
//! and checked through `skillgate::fleet::freshness` and `skillgate freshness`.
//!
//! Every refusal is asserted by its variant, and each is followed by a check that passes
//! (the repository and the check still work). No plugin is loaded here, so isolation modes
//! do not apply.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use skillgate::error::{Error, FreshnessError, PolicyError, TufRole};
use skillgate::fleet::freshness::{Freshness, target_name};
use skillgate::policy::FreshnessSettings;
use skillgate::{Isolation, Policy};
use support::tuf::{Publication, Repo, digest_of, manifest, runtime, set_mode};

fn v(s: &str) -> skillgate::manifest::Version {
    skillgate::manifest::Version::parse(s).unwrap()
}

/// A repository listing `echo` 1.0.0, published once; its digest and length.
fn listed_echo() -> (Repo, String, u64) {
    let mut repo = Repo::new();
    let (digest, len) = repo.add_release("echo", "1.0.0", &manifest("echo", "1.0.0", "a"));
    repo.publish(Publication::serial(1));
    (repo, digest, len)
}

#[test]
fn a_listed_release_is_fresh() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
    // Checked again with the state kept: still fresh.
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
    assert_eq!(target_name("echo", &v("1.0.0")), "echo/1.0.0");
}

#[test]
fn a_release_not_listed_is_refused() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    for (name, version) in [("echo", "1.0.1"), ("other", "1.0.0")] {
        let e = f.check(name, &v(version), &digest, len).unwrap_err();
        assert!(
            matches!(&e, FreshnessError::NotListed { target } if *target == format!("{name}/{version}")),
            "{e:?}"
        );
    }
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}

#[test]
fn a_listed_release_with_another_digest_or_length_is_refused() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    let other = manifest("echo", "1.0.0", "b");
    let e = f
        .check("echo", &v("1.0.0"), &digest_of(&other), other.len() as u64)
        .unwrap_err();
    assert!(
        matches!(&e, FreshnessError::DigestMismatch { target, listed, offered }
            if target == "echo/1.0.0" && format!("sha256:{listed}") == digest && format!("sha256:{offered}") == digest_of(&other)),
        "{e:?}"
    );
    let e = f.check("echo", &v("1.0.0"), &digest, len + 1).unwrap_err();
    assert!(
        matches!(&e, FreshnessError::LengthMismatch { listed, offered, .. } if *listed == len && *offered == len + 1),
        "{e:?}"
    );
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}

#[test]
fn a_digest_that_is_not_sha256_hex_or_a_bad_name_is_refused_before_any_metadata_is_read() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    let upper = digest.to_uppercase().replace("SHA256", "sha256");
    for bad in [
        digest.trim_start_matches("sha256:"),
        upper.as_str(),
        "sha256:00",
    ] {
        let e = f.check("echo", &v("1.0.0"), bad, len).unwrap_err();
        assert!(
            matches!(e, FreshnessError::BadDigest { .. }),
            "{bad}: {e:?}"
        );
    }
    let e = f.check("../echo", &v("1.0.0"), &digest, len).unwrap_err();
    assert!(matches!(e, FreshnessError::BadName { .. }), "{e:?}");
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}

#[test]
fn an_expired_timestamp_is_refused() {
    let mut repo = Repo::new();
    let (digest, len) = repo.add_release("echo", "1.0.0", &manifest("echo", "1.0.0", "a"));
    repo.publish(Publication {
        timestamp_expires_in_days: -1,
        ..Publication::serial(1)
    });
    let f = repo.freshness("state");
    let e = f.check("echo", &v("1.0.0"), &digest, len).unwrap_err();
    assert!(
        matches!(
            &e,
            FreshnessError::Expired {
                role: TufRole::Timestamp,
                expires: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(Error::Freshness(e).kind(), "freshness");
    // The operator refreshes the timestamp (a new version, a new expiry): fresh again.
    repo.publish(Publication::serial(2));
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}

#[test]
fn a_repository_rolled_back_after_a_newer_state_was_trusted_is_refused() {
    let mut repo = Repo::new();
    let (d1, l1) = repo.add_release("echo", "1.0.0", &manifest("echo", "1.0.0", "a"));
    repo.publish(Publication::serial(1));
    let old = repo.path("metadata-v1");
    copy_dir(&repo.metadata(), &old);
    let f = repo.freshness("state");
    f.check("echo", &v("1.0.0"), &d1, l1).unwrap();
    let (d2, l2) = repo.add_release("echo", "1.1.0", &manifest("echo", "1.1.0", "a"));
    repo.publish(Publication::serial(2));
    f.check("echo", &v("1.1.0"), &d2, l2).unwrap();

    // The mirror serves the older, still unexpired, still validly signed state.
    let newer = repo.path("metadata-v2");
    std::fs::rename(repo.metadata(), &newer).unwrap();
    copy_dir(&old, &repo.metadata());
    let e = f.check("echo", &v("1.0.0"), &d1, l1).unwrap_err();
    assert!(
        matches!(
            e,
            FreshnessError::RolledBack {
                role: TufRole::Timestamp,
                trusted: 2,
                offered: 1
            }
        ),
        "{e:?}"
    );
    // Control: a host that never saw version 2 (a fresh state directory) accepts the old
    // state, so it is the kept state that refused it.
    repo.freshness("state-fresh")
        .check("echo", &v("1.0.0"), &d1, l1)
        .unwrap();
    // The mirror catches up: fresh again.
    std::fs::remove_dir_all(repo.metadata()).unwrap();
    std::fs::rename(&newer, repo.metadata()).unwrap();
    f.check("echo", &v("1.1.0"), &d2, l2).unwrap();
}

#[test]
fn a_snapshot_rolled_back_under_a_new_timestamp_is_refused() {
    let mut repo = Repo::new();
    let (d1, l1) = repo.add_release("echo", "1.0.0", &manifest("echo", "1.0.0", "a"));
    repo.publish(Publication::serial(1));
    let f = repo.freshness("state");
    f.check("echo", &v("1.0.0"), &d1, l1).unwrap();
    let (d2, l2) = repo.add_release("echo", "1.1.0", &manifest("echo", "1.1.0", "a"));
    repo.publish(Publication::serial(2));
    f.check("echo", &v("1.1.0"), &d2, l2).unwrap();

    // A timestamp signed anew (version 3) that names the old snapshot (version 1).
    repo.releases.remove("echo/1.1.0");
    repo.publish(Publication {
        targets: 1,
        snapshot: 1,
        timestamp: 3,
        timestamp_expires_in_days: 1,
    });
    let e = f.check("echo", &v("1.0.0"), &d1, l1).unwrap_err();
    assert!(
        matches!(
            e,
            FreshnessError::RolledBack {
                role: TufRole::Snapshot,
                trusted: 2,
                offered: 1
            }
        ),
        "{e:?}"
    );
    repo.add_release("echo", "1.1.0", &manifest("echo", "1.1.0", "a"));
    repo.publish(Publication::serial(4));
    f.check("echo", &v("1.1.0"), &d2, l2).unwrap();
}

#[test]
fn metadata_altered_on_the_mirror_is_refused() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    let targets = repo.metadata().join("targets.json");
    let good = std::fs::read(&targets).unwrap();
    // The same document with one more release listed: its hash no longer matches the one
    // the signed snapshot names.
    let text = String::from_utf8(good.clone()).unwrap();
    let altered = text.replacen("\"echo/1.0.0\"", "\"echo/9.9.9\"", 1);
    assert_ne!(altered, text);
    std::fs::write(&targets, altered).unwrap();
    let e = f.check("echo", &v("1.0.0"), &digest, len).unwrap_err();
    assert!(matches!(e, FreshnessError::Invalid { .. }), "{e:?}");
    std::fs::write(&targets, good).unwrap();
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}

#[test]
fn a_root_that_is_not_the_pinned_one_is_refused() {
    let (repo, digest, len) = listed_echo();
    let pin = repo.root_sha256();
    let wrong = "00".repeat(32);
    let policy = Policy::from_file(repo.policy("metadata", "state", &wrong)).unwrap();
    let e = Freshness::from_policy(policy.freshness().unwrap()).unwrap_err();
    assert!(
        matches!(&e, FreshnessError::RootPinMismatch { pinned, found, .. } if *pinned == wrong && *found == pin),
        "{e:?}"
    );
    // The root file replaced (here: the same JSON, one byte more) under the right pin.
    let root = std::fs::read(repo.root_path()).unwrap();
    let mut edited = root.clone();
    edited.push(b' ');
    std::fs::write(repo.root_path(), &edited).unwrap();
    let policy = Policy::from_file(repo.policy("metadata", "state", &pin)).unwrap();
    let e = Freshness::from_policy(policy.freshness().unwrap()).unwrap_err();
    assert!(matches!(e, FreshnessError::RootPinMismatch { .. }), "{e:?}");
    std::fs::write(repo.root_path(), &root).unwrap();
    repo.freshness("state")
        .check("echo", &v("1.0.0"), &digest, len)
        .unwrap();
}

#[test]
fn a_missing_state_directory_or_metadata_is_an_error_on_the_host_side() {
    let (repo, digest, len) = listed_echo();
    let policy = Policy::from_file(repo.policy("metadata", "state", &repo.root_sha256())).unwrap();
    let f = Freshness::from_policy(policy.freshness().unwrap()).unwrap();
    std::fs::remove_dir(repo.path("state")).unwrap();
    let e = f.check("echo", &v("1.0.0"), &digest, len).unwrap_err();
    assert!(matches!(e, FreshnessError::State { .. }), "{e:?}");
    assert!(e.is_host_problem());
    let policy =
        Policy::from_file(repo.policy("no-such-dir", "state", &repo.root_sha256())).unwrap();
    let e = Freshness::from_policy(policy.freshness().unwrap())
        .unwrap()
        .check("echo", &v("1.0.0"), &digest, len)
        .unwrap_err();
    assert!(matches!(e, FreshnessError::Unreadable { .. }), "{e:?}");
    repo.freshness("state")
        .check("echo", &v("1.0.0"), &digest, len)
        .unwrap();
}

#[test]
fn a_host_inside_a_tokio_runtime_can_check() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    runtime()
        .block_on(async { f.check("echo", &v("1.0.0"), &digest, len) })
        .unwrap();
}

/// A tiny HTTP/1.1 file server on a loopback port serving `dir`, stopped when dropped.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(dir: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &dir);
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metadata", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, dir: &Path) {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request.split(' ').nth(1).unwrap_or("/");
    let file = path
        .strip_prefix("/metadata/")
        .filter(|f| !f.contains('/') && !f.contains(".."))
        .map(|f| dir.join(f));
    let mut stream = stream;
    let mut body = Vec::new();
    let status = match file.map(std::fs::File::open) {
        Some(Ok(mut f)) => {
            f.read_to_end(&mut body).unwrap();
            "200 OK"
        }
        _ => "404 Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

#[test]
fn metadata_from_a_loopback_url_is_checked_the_same() {
    let (mut repo, digest, len) = listed_echo();
    let server = Server::start(repo.metadata());
    let policy =
        Policy::from_file(repo.policy(&server.url(), "state", &repo.root_sha256())).unwrap();
    let f = Freshness::from_policy(policy.freshness().unwrap()).unwrap();
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
    let e = f.check("echo", &v("2.0.0"), &digest, len).unwrap_err();
    assert!(matches!(e, FreshnessError::NotListed { .. }), "{e:?}");
    // An expired timestamp served over HTTP.
    repo.publish(Publication {
        timestamp_expires_in_days: -1,
        ..Publication::serial(2)
    });
    let e = f.check("echo", &v("1.0.0"), &digest, len).unwrap_err();
    assert!(
        matches!(
            e,
            FreshnessError::Expired {
                role: TufRole::Timestamp,
                ..
            }
        ),
        "{e:?}"
    );
    let (d2, l2) = repo.add_release("echo", "1.1.0", &manifest("echo", "1.1.0", "a"));
    repo.publish(Publication::serial(3));
    f.check("echo", &v("1.1.0"), &d2, l2).unwrap();
    drop(server);
    // The server is gone: the metadata cannot be read (and that is not a pass).
    let e = f.check("echo", &v("1.1.0"), &d2, l2).unwrap_err();
    assert!(matches!(e, FreshnessError::Unreadable { .. }), "{e:?}");
}

#[test]
fn the_freshness_section_is_parsed_strictly() {
    let base = Path::new("/etc/skillgate");
    let policy = |freshness: serde_json::Value| {
        let json = serde_json::json!({
            "trusted_roots": ["/srv/skills"],
            "keys": "/etc/skillgate/keys",
            "isolation": "process",
            "freshness": freshness,
        });
        Policy::from_json(&serde_json::to_vec(&json).unwrap(), base)
    };
    let pin = "ab".repeat(32);
    let good = policy(serde_json::json!({
        "root": "tuf/root.json", "root_sha256": pin, "metadata": "tuf/metadata", "state": "/var/lib/skillgate/tuf"
    }))
    .unwrap();
    let f = good.freshness().unwrap();
    assert_eq!(f.root(), Path::new("/etc/skillgate/tuf/root.json"));
    assert_eq!(f.state(), Path::new("/var/lib/skillgate/tuf"));
    assert_eq!(f.metadata().to_string(), "/etc/skillgate/tuf/metadata");
    assert_eq!(f.root_sha256(), &[0xab; 32]);
    for url in [
        "http://127.0.0.1:8080/tuf",
        "http://[::1]/tuf",
        "http://localhost/tuf",
        "https://tuf.example.com/metadata",
    ] {
        let p = policy(serde_json::json!({
            "root": "r.json", "root_sha256": pin, "metadata": url, "state": "s"
        }))
        .unwrap();
        assert_eq!(
            p.freshness().unwrap().metadata().to_string(),
            url::Url::parse(url).unwrap().to_string()
        );
    }
    // An unknown key, a missing one, a bad pin, plain http off the host, another scheme.
    let e = policy(serde_json::json!({
        "root": "r.json", "root_sha256": pin, "metadata": "m", "state": "s", "expires": false
    }))
    .unwrap_err();
    assert!(matches!(e, PolicyError::Syntax(_)), "{e:?}");
    let e = policy(serde_json::json!({"root": "r.json", "root_sha256": pin, "metadata": "m"}))
        .unwrap_err();
    assert!(matches!(e, PolicyError::Syntax(_)), "{e:?}");
    let p = policy(serde_json::json!({
        "root": "r.json", "root_sha256": pin, "metadata": "m", "state": "s", "timeout_ms": 1500
    }))
    .unwrap();
    assert_eq!(
        p.freshness().unwrap().timeout(),
        std::time::Duration::from_millis(1500)
    );
    assert_eq!(f.timeout(), std::time::Duration::from_secs(60));
    for ms in [0, 600_001] {
        let e = policy(serde_json::json!({
            "root": "r.json", "root_sha256": pin, "metadata": "m", "state": "s", "timeout_ms": ms
        }))
        .unwrap_err();
        assert!(
            matches!(&e, PolicyError::Freshness(s) if s.field == "timeout_ms"),
            "{ms}: {e:?}"
        );
    }
    for (field, value) in [
        ("root_sha256", "ab".repeat(31)),
        ("root_sha256", "zz".repeat(32)),
        ("metadata", "http://tuf.example.com/metadata".to_owned()),
        ("metadata", "ftp://127.0.0.1/metadata".to_owned()),
        ("metadata", String::new()),
    ] {
        let mut section = serde_json::json!({
            "root": "r.json", "root_sha256": pin, "metadata": "m", "state": "s"
        });
        section[field] = serde_json::Value::String(value.clone());
        let e = policy(section).unwrap_err();
        assert!(
            matches!(&e, PolicyError::Freshness(s) if s.field == field),
            "{field} = {value:?}: {e:?}"
        );
    }
    // No section: no freshness check.
    let none = Policy::builder()
        .keys("/k")
        .isolation(Isolation::Process)
        .build()
        .unwrap();
    assert!(none.freshness().is_none());
    // The builder takes the same settings, checked the same way.
    let built = Policy::builder()
        .keys("/k")
        .freshness(FreshnessSettings::new("/r.json", &pin, "/m", "/s").unwrap())
        .build()
        .unwrap();
    assert!(built.freshness().is_some());
    assert!(FreshnessSettings::new("/r.json", &pin, "http://10.0.0.1/m", "/s").is_err());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// An RSA key as docs/fleet-tuf.md makes it.
fn openssl_keygen(path: &Path) {
    support::tuf::openssl_rsa(path, 3072);
}

/// `sha256sum FILE`'s hex digest, as the operator reads it.
fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `skillgate freshness --policy P NAME VERSION DIGEST LEN --audit-log A`: exit code,
/// stdout, stderr.
fn cli_check(
    policy: &Path,
    audit: &Path,
    name: &str,
    version: &str,
    digest: &str,
    len: u64,
) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skillgate"))
        .args(["freshness", "--policy"])
        .arg(policy)
        .arg("--audit-log")
        .arg(audit)
        .args([name, version, digest, &len.to_string()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// docs/fleet-tuf.md, step by step: RSA keys from openssl, a root signed with the root key
/// for root and the online key for the other roles, the root pinned by `sha256sum` in the
/// policy, a release published as target `NAME/VERSION` with the manifest bytes, the
/// timestamp refreshed, a second release published, the first withdrawn; each checked
/// with `skillgate freshness` as an operator would, its audit events in the log.
#[test]
fn the_documented_publishing_steps_work_end_to_end() {
    // 1. Keys and root (step 1).
    let mut repo = Repo::with_keys("pem", openssl_keygen);
    // 2. The pin (step 2): the policy names root.json, the metadata directory and a state
    // directory, relative to the policy file.
    let policy = repo.policy("metadata", "state", &sha256sum(&repo.root_path()));
    let audit = repo.path("audit.jsonl");
    // 3. Publish echo 1.0.0 (step 3): the manifest bytes as the target.
    let m1 = manifest("echo", "1.0.0", "a");
    let (d1, l1) = repo.add_release("echo", "1.0.0", &m1);
    assert_eq!(
        d1,
        format!(
            "sha256:{}",
            sha256sum(&repo.path("releases/echo-1.0.0.json"))
        )
    );
    repo.publish(Publication::serial(1));
    let (code, out, err) = cli_check(&policy, &audit, "echo", "1.0.0", &d1, l1);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("fresh: echo/1.0.0 is listed with sha256:"),
        "{out}"
    );
    // Another manifest under that version is refused (exit 1), and so is an unlisted one.
    let other = manifest("echo", "1.0.0", "evil");
    let (code, _, err) = cli_check(
        &policy,
        &audit,
        "echo",
        "1.0.0",
        &digest_of(&other),
        other.len() as u64,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused") && err.contains("echo/1.0.0 is listed with sha256"),
        "{err}"
    );
    // 4. The timestamp refreshed (step 4): same release list, a new timestamp version.
    repo.publish(Publication {
        targets: 1,
        snapshot: 1,
        timestamp: 2,
        timestamp_expires_in_days: 1,
    });
    assert_eq!(cli_check(&policy, &audit, "echo", "1.0.0", &d1, l1).0, 0);
    // A second release, then the first withdrawn.
    let (d2, l2) = repo.add_release("echo", "1.1.0", &manifest("echo", "1.1.0", "a"));
    repo.publish(Publication {
        targets: 2,
        snapshot: 2,
        timestamp: 3,
        timestamp_expires_in_days: 1,
    });
    assert_eq!(cli_check(&policy, &audit, "echo", "1.1.0", &d2, l2).0, 0);
    repo.releases.remove("echo/1.0.0");
    repo.publish(Publication {
        targets: 3,
        snapshot: 3,
        timestamp: 4,
        timestamp_expires_in_days: 1,
    });
    let (code, _, err) = cli_check(&policy, &audit, "echo", "1.0.0", &d1, l1);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not listed"), "{err}");
    assert_eq!(cli_check(&policy, &audit, "echo", "1.1.0", &d2, l2).0, 0);
    // Every check is one audit event.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "freshness")
        .collect();
    let decisions: Vec<&str> = events
        .iter()
        .map(|e| e["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        ["fresh", "stale", "fresh", "fresh", "stale", "fresh"]
    );
    assert_eq!(events[1]["plugin"], "echo");
    assert_eq!(events[1]["version"], "1.0.0");
    assert!(
        events[1]["error"]
            .as_str()
            .unwrap()
            .contains("is listed with sha256")
    );
}

#[test]
fn an_oversized_timestamp_is_cut_at_the_clients_limit() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    let timestamp = repo.metadata().join("timestamp.json");
    let good = std::fs::read(&timestamp).unwrap();
    // Past tough's 1 MiB limit for a timestamp: read no further, refused.
    std::fs::write(&timestamp, vec![b' '; 2 * 1024 * 1024]).unwrap();
    let e = f.check("echo", &v("1.0.0"), &digest, len).unwrap_err();
    assert!(
        matches!(&e, FreshnessError::Invalid { detail, .. } if detail.contains("Maximum size")),
        "{e:?}"
    );
    std::fs::write(&timestamp, good).unwrap();
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}

#[test]
fn checks_at_once_sharing_a_state_directory_all_pass() {
    let (repo, digest, len) = listed_echo();
    // Two values over one state directory (as two processes would have), each used by
    // several threads.
    let a = Arc::new(repo.freshness("state"));
    let b = Arc::new(repo.freshness("state"));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let f = if i % 2 == 0 { a.clone() } else { b.clone() };
            let digest = digest.clone();
            std::thread::spawn(move || f.check("echo", &v("1.0.0"), &digest, len))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    let (repo, digest, len) = listed_echo();
    let f = repo.freshness("state");
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
    // Anyone could now delete the trusted timestamp and snapshot and so allow a rollback.
    for mode in [0o777, 0o770] {
        set_mode(&repo.path("state"), mode);
        let e = f.check("echo", &v("1.0.0"), &digest, len).unwrap_err();
        assert!(
            matches!(&e, FreshnessError::StateWritableByOthers(w) if w.path == repo.path("state")),
            "{mode:o}: {e:?}"
        );
    }
    set_mode(&repo.path("state"), 0o700);
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}

#[test]
fn a_metadata_read_that_never_ends_is_cut_at_the_deadline() {
    let (repo, digest, len) = listed_echo();
    let policy = Policy::from_file(repo.policy("metadata", "state", &repo.root_sha256())).unwrap();
    let settings = policy
        .freshness()
        .unwrap()
        .clone()
        .with_timeout_ms(1000)
        .unwrap();
    let f = Freshness::from_policy(&settings).unwrap();
    // A FIFO where timestamp.json should be: opening it blocks until a writer comes.
    let timestamp = repo.metadata().join("timestamp.json");
    let good = std::fs::read(&timestamp).unwrap();
    std::fs::remove_file(&timestamp).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&timestamp)
            .status()
            .unwrap()
            .success()
    );
    let e = f.check("echo", &v("1.0.0"), &digest, len).unwrap_err();
    assert!(
        matches!(e, FreshnessError::TimedOut { ms: 1000, .. }),
        "{e:?}"
    );
    // Let the reader left blocked go (a writer opens and closes the FIFO), then restore.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&timestamp);
    }
    std::fs::remove_file(&timestamp).unwrap();
    std::fs::write(&timestamp, good).unwrap();
    f.check("echo", &v("1.0.0"), &digest, len).unwrap();
}
