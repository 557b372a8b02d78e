//! The trust stage (issue 6): signer rules and thresholds, revocation, rotation, rollback,
//! expiry, encrypted keys and minisign interop. Each refusal asserts the exact error variant
//! and then that the same host still serves a good plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use skillgate::danger::Danger;
use skillgate::error::Error;
use skillgate::error::{RevocationError, SignatureError, SignatureFileError, TrustError};
use skillgate::keys::KeyError;
use skillgate::keys::{KdfParams, RevocationStatement};
use skillgate::policy::TrustPolicy;
use skillgate::policy::{LimitError, Limits, LimitsBuilder, Policy, PolicyError};
use skillgate::sign::sign_plugin_dir;
use skillgate::sign::{SignatureFile, verify_manifest};
use skillgate::state::{Version, read_version_mark, reset_version_mark};
use skillgate::{Gate, KeyId, PublicKey, SecretKey, TrustStore};
use support::{Host, manifest_template};

// ---------------------------------------------------------------------------------------
// Fixtures

/// Adds `key` to the host's trust store directory.
fn trust_key(host: &Host, key: &SecretKey, file: &str) {
    std::fs::write(
        host.keys_dir().join(file),
        key.public().to_minisign_string(),
    )
    .unwrap();
}

/// The host's policy with the trust section given as JSON (paths relative to the host).
fn policy_with(host: &Host, trust_json: &str) -> Policy {
    host.policy_with(|p| {
        p.trust(TrustPolicy::from_json(trust_json.as_bytes(), host.tmp.path()).unwrap())
    })
}

fn gate_with(host: &Host, trust_json: &str) -> Gate {
    Gate::new(policy_with(host, trust_json)).unwrap()
}

fn manifest_version(name: &str, version: &str) -> String {
    manifest_template(name).replace("\"1.0.0\"", &format!("\"{version}\""))
}

/// Installs plugin `name` (the `good` test plugin) at `version`, signed by the host key.
fn install_version(host: &Host, name: &str, version: &str) -> PathBuf {
    let quoted = format!("\"{version}\"");
    let lib = host.build("good", name, &[("PLUGIN_VERSION", quoted.as_str())]);
    host.install_with_manifest(name, &lib, &manifest_version(name, version))
}

/// Replaces the plugin's signatures with ones by `keys` (in order).
fn resign(dir: &Path, keys: &[&SecretKey]) {
    std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
    for k in keys {
        sign_plugin_dir(dir, k).unwrap();
    }
}

fn rule(pattern: &str, keys: &[KeyId], threshold: u32) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        r#"{{"plugins":"{pattern}","keys":[{}],"threshold":{threshold}}}"#,
        keys.join(",")
    )
}

/// A policy whose only rule `*` needs `threshold` of `keys`; `healthy` (the good plugin
/// every test ends with) is covered by its own rule for the host key.
fn threshold_policy(host: &Host, keys: &[KeyId], threshold: u32, extra: &str) -> String {
    format!(
        r#"{{"signers":[{},{}]{extra}}}"#,
        rule("*", keys, threshold),
        rule("healthy", &[host.key.id()], 1)
    )
}

fn assert_trust_err(err: Error, check: impl FnOnce(&TrustError) -> bool) {
    match &err {
        Error::Trust(t) if check(t) => {}
        other => panic!("unexpected error: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Thresholds and rules

#[test]
fn one_signature_under_a_threshold_of_two_is_refused() {
    let host = Host::new();
    let b = SecretKey::generate();
    trust_key(&host, &b, "b.pub");
    let dir = host.plugin("good", "needs-two");
    let gate = gate_with(
        &host,
        &threshold_policy(&host, &[host.key.id(), b.id()], 2, ""),
    );
    let err = gate.verify_and_load(&dir).unwrap_err();
    let a = host.key.id();
    assert_trust_err(err, |e| {
        matches!(e, TrustError::BelowThreshold { threshold: 2, counted, rule, .. }
            if counted == &[a] && rule == "*")
    });
    host.assert_still_serves(&gate);
}

#[test]
fn the_same_key_twice_does_not_meet_a_threshold_of_two() {
    let host = Host::new();
    let b = SecretKey::generate();
    trust_key(&host, &b, "b.pub");
    let a = host.key.id();
    let gate = gate_with(&host, &threshold_policy(&host, &[a, b.id()], 2, ""));
    let dir = host.plugin("good", "twice");
    let sig_path = dir.join("plugin.json.sig");
    let file = SignatureFile::parse(&std::fs::read(&sig_path).unwrap()).unwrap();
    let entry = &file.entries()[0];
    let sig_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(entry.signature().to_bytes())
    };
    let write = |ids: &[String]| {
        let entries: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"key_id":"{id}","signature":"{sig_b64}"}}"#))
            .collect();
        std::fs::write(
            &sig_path,
            format!(
                r#"{{"format":"skillgate-signatures-v1","signatures":[{}]}}"#,
                entries.join(",")
            ),
        )
        .unwrap();
    };

    // 1. The same key id twice: the signature file itself is malformed.
    write(&[a.to_string(), a.to_string()]);
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Signature(SignatureError::Malformed(SignatureFileError::DuplicateKeyId { key_id })) if key_id == a),
        "{err:?}"
    );
    // 2. The same signature under a second, untrusted id: ignored, so one signer counts.
    write(&[a.to_string(), "0123456789ABCDEF".to_owned()]);
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::BelowThreshold { counted, .. } if counted == &[a]),
    );
    // 3. The same signature claimed for the other trusted key: it does not verify under it.
    write(&[a.to_string(), b.id().to_string()]);
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Signature(SignatureError::Invalid { key_id }) if key_id == b.id()),
        "{err:?}"
    );
    // 4. A second trusted key file holding the same key is refused when the store loads.
    std::fs::write(
        host.keys_dir().join("copy.pub"),
        host.key.public().to_minisign_string(),
    )
    .unwrap();
    let err = Gate::new(host.policy()).unwrap_err();
    assert!(
        matches!(err, Error::Key(KeyError::DuplicateKey { key_id, .. }) if key_id == a),
        "{err:?}"
    );
    std::fs::remove_file(host.keys_dir().join("copy.pub")).unwrap();
    host.assert_still_serves(&gate);
}

#[test]
fn two_distinct_keys_meet_a_threshold_of_two() {
    let host = Host::new();
    let b = SecretKey::generate();
    trust_key(&host, &b, "b.pub");
    let gate = gate_with(
        &host,
        &threshold_policy(&host, &[host.key.id(), b.id()], 2, ""),
    );
    let dir = host.plugin("good", "two-keys");
    sign_plugin_dir(&dir, &b).unwrap();
    let plugin = gate.verify_and_load(&dir).unwrap();
    let mut want = vec![host.key.id(), b.id()];
    let mut got = plugin.signers().to_vec();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn a_plugin_no_rule_covers_is_refused_and_the_most_specific_rule_decides() {
    let host = Host::new();
    let b = SecretKey::generate();
    trust_key(&host, &b, "b.pub");
    let a = host.key.id();
    let json = format!(
        r#"{{"signers":[{},{},{}]}}"#,
        rule("acme-*", &[a], 1),
        rule("acme-db", &[b.id()], 1),
        rule("healthy", &[a], 1)
    );
    let gate = gate_with(&host, &json);
    let dir = host.plugin("good", "stray");
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::NoRule { plugin, signers } if plugin == "stray" && signers == &[a]),
    );
    // acme-web falls under acme-*; acme-db's exact rule wants b, not the host key.
    gate.verify_and_load(host.plugin("good", "acme-web"))
        .unwrap();
    let dir = host.plugin("good", "acme-db");
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(err, |e| {
        matches!(e, TrustError::BelowThreshold { rule, outside_rule, .. }
            if rule == "acme-db" && outside_rule == &[a])
    });
    resign(&dir, &[&b]);
    gate.verify_and_load(&dir).unwrap();
    host.assert_still_serves(&gate);
}

#[test]
fn a_zero_threshold_is_a_policy_error() {
    let host = Host::new();
    let json = threshold_policy(&host, &[host.key.id()], 0, "");
    let err = TrustPolicy::from_json(json.as_bytes(), host.tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::LimitOutOfRange {
                name: "signers.threshold",
                value: 0,
                ..
            }
        ),
        "{err:?}"
    );
    // The same through a whole policy file.
    let file = host.tmp.path().join("policy.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"trusted_roots":["root"],"keys":"keys","isolation":"thread",{}"#,
            &json[1..]
        ),
    )
    .unwrap();
    assert!(matches!(
        Policy::from_file(&file),
        Err(PolicyError::LimitOutOfRange { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Revocation and rotation

#[test]
fn a_key_revoked_by_the_policy_never_counts() {
    let host = Host::new();
    let b = SecretKey::generate();
    trust_key(&host, &b, "b.pub");
    let dir = host.plugin("good", "by-b");
    resign(&dir, &[&b]);
    let gate = gate_with(&host, &format!(r#"{{"revoked_keys":["{}"]}}"#, b.id()));
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::Revoked { revoked, counted, .. } if revoked == &[b.id()] && counted.is_empty()),
    );
    // Also under a rule that lists it, with another signature beside it.
    let gate = gate_with(
        &host,
        &threshold_policy(
            &host,
            &[host.key.id(), b.id()],
            2,
            &format!(r#","revoked_keys":["{}"]"#, b.id()),
        ),
    );
    sign_plugin_dir(&dir, &host.key).unwrap();
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(err, |e| {
        matches!(e, TrustError::Revoked { revoked, counted, threshold: 2, .. }
            if revoked == &[b.id()] && counted == &[host.key.id()])
    });
    host.assert_still_serves(&gate);
}

fn write_revocation(keys: &Path, name: &str, revoked: &SecretKey, signers: &[&SecretKey]) {
    let statement = RevocationStatement::create(&revoked.public(), Some("test"));
    let mut sigs: Option<String> = None;
    for s in signers {
        sigs = Some(
            RevocationStatement::sign(&statement, sigs.as_deref().map(str::as_bytes), s).unwrap(),
        );
    }
    std::fs::write(keys.join(format!("{name}.revoked")), &statement).unwrap();
    std::fs::write(keys.join(format!("{name}.revoked.sig")), sigs.unwrap()).unwrap();
}

#[test]
fn a_key_revoked_by_a_signed_statement_never_counts() {
    let host = Host::new();
    let b = SecretKey::generate();
    let c = SecretKey::generate();
    let d = SecretKey::generate();
    for (k, f) in [(&b, "b.pub"), (&c, "c.pub"), (&d, "d.pub")] {
        trust_key(&host, k, f);
    }
    let dir = host.plugin("good", "by-b");
    resign(&dir, &[&b]);
    host.gate().verify_and_load(&dir).unwrap();

    // Self-revocation.
    write_revocation(&host.keys_dir(), "b", &b, &[&b]);
    let gate = host.gate();
    assert!(
        gate.trust_store()
            .revocation(&b.id())
            .unwrap()
            .self_signed()
    );
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::Revoked { revoked, .. } if revoked == &[b.id()]),
    );
    host.assert_still_serves(&gate);

    // Revocation of c by one other key is not enough, and the store refuses to load.
    write_revocation(&host.keys_dir(), "c", &c, &[&d]);
    let err = Gate::new(host.policy()).unwrap_err();
    assert!(
        matches!(&err, Error::Key(KeyError::Revocation { source, .. })
            if matches!(**source, RevocationError::NotEnoughSigners { needed: 2, .. })),
        "{err:?}"
    );
    // A self-revoked key (b) does not help revoke another.
    write_revocation(&host.keys_dir(), "c", &c, &[&d, &b]);
    assert!(matches!(
        Gate::new(host.policy()),
        Err(Error::Key(KeyError::Revocation { .. }))
    ));
    // Two other unrevoked keys do.
    write_revocation(&host.keys_dir(), "c", &c, &[&d, &host.key]);
    let gate = host.gate();
    let dir = host.plugin("good", "by-c");
    resign(&dir, &[&c]);
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::Revoked { revoked, .. } if revoked == &[c.id()]),
    );
    host.assert_still_serves(&gate);

    // A statement whose signature file is missing is refused, not ignored.
    std::fs::remove_file(host.keys_dir().join("c.revoked.sig")).unwrap();
    assert!(matches!(
        Gate::new(host.policy()),
        Err(Error::Key(KeyError::Revocation { .. }))
    ));
}

/// Rotation with no window and no unsigned trust in plugins: (1) the administrator adds
/// the new key to the trust store and to the rules next to the old one; (2) the author
/// signs every plugin with both keys; (3) the old key revokes itself (or the administrator
/// lists it in `revoked_keys`); (4) later releases are signed by the new key only.
#[test]
fn a_signer_key_rotates_without_a_window() {
    let host = Host::new();
    let old = &host.key;
    let new = SecretKey::generate();
    let name = "rotating";
    let dir = install_version(&host, name, "1.0.0");
    let before = format!(r#"{{"signers":[{}]}}"#, rule("*", &[old.id()], 1));
    gate_with(&host, &before).verify_and_load(&dir).unwrap();

    // (1) The new key joins the store and the rule: plugins signed by the old key still load.
    trust_key(&host, &new, "new.pub");
    let during = format!(r#"{{"signers":[{}]}}"#, rule("*", &[old.id(), new.id()], 1));
    gate_with(&host, &during).verify_and_load(&dir).unwrap();
    // (2) Plugins are signed by both.
    sign_plugin_dir(&dir, &new).unwrap();
    let p = gate_with(&host, &during).verify_and_load(&dir).unwrap();
    assert_eq!(p.signers().len(), 2);
    drop(p);
    // A plugin still signed by the old key alone, for the check below.
    let laggard = install_version(&host, "laggard", "1.0.0");
    // (3) The old key revokes itself: plugins signed by both still load, old-only ones not.
    write_revocation(&host.keys_dir(), "old", old, &[old]);
    let gate = gate_with(&host, &during);
    gate.verify_and_load(&dir).unwrap();
    let err = gate.verify_and_load(&laggard).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::Revoked { revoked, .. } if revoked == &[old.id()]),
    );
    // (4) A release signed by the new key alone loads.
    install_version(&host, name, "1.1.0");
    resign(&dir, &[&new]);
    gate.verify_and_load(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Rollback

fn state_policy(host: &Host) -> String {
    let state = host.tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    r#"{"state_dir":"state"}"#.to_owned()
}

#[test]
fn a_rollback_after_a_newer_version_ran_is_refused() {
    let host = Host::new();
    let gate = gate_with(&host, &state_policy(&host));
    let dir = install_version(&host, "versioned", "2.0.0");
    let plugin = gate.verify_and_load(&dir).unwrap();
    assert!(plugin.execute(&Default::default()).unwrap().success);
    drop(plugin);
    install_version(&host, "versioned", "1.9.0");
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(err, |e| {
        matches!(e, TrustError::Rollback { plugin, version, highest }
            if plugin == "versioned" && version == "1.9.0" && highest == "2.0.0")
    });
    // The same version again, and a newer one, load.
    install_version(&host, "versioned", "2.0.0");
    gate.verify_and_load(&dir).unwrap();
    install_version(&host, "versioned", "2.1.0");
    gate.verify_and_load(&dir).unwrap();
    host.assert_still_serves(&gate);
}

#[test]
fn a_rollback_across_a_restart_is_refused_until_an_administrator_resets_the_mark() {
    let host = Host::new();
    let json = state_policy(&host);
    let dir = install_version(&host, "persisted", "3.0.0");
    {
        let gate = gate_with(&host, &json);
        gate.verify_and_load(&dir).unwrap();
    }
    install_version(&host, "persisted", "2.0.0");
    let gate = gate_with(&host, &json); // a new host process, the same state directory
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::Rollback { version, highest, .. } if version == "2.0.0" && highest == "3.0.0"),
    );
    host.assert_still_serves(&gate);
    let state = host.tmp.path().join("state");
    assert_eq!(
        reset_version_mark(&state, "persisted").unwrap(),
        Some(Version::new(3, 0, 0))
    );
    gate.verify_and_load(&dir).unwrap();
    assert_eq!(
        read_version_mark(&state, "persisted").unwrap(),
        Some(Version::new(2, 0, 0))
    );
}

#[test]
fn a_crash_mid_update_leaves_the_state_readable() {
    let host = Host::new();
    let json = state_policy(&host);
    let state = host.tmp.path().join("state");
    let dir = install_version(&host, "crashy", "2.0.0");
    gate_with(&host, &json).verify_and_load(&dir).unwrap();
    // A crash between writing the temporary file and renaming it leaves a partial temporary
    // file beside the intact mark; an empty one, too, for a crash right after creating it.
    std::fs::write(
        state.join(".crashy.version.tmp.4242.0"),
        br#"{"format":"skillgate-version-mark-v1","name":"crashy","vers"#,
    )
    .unwrap();
    std::fs::write(state.join(".crashy.version.tmp.4243.0"), b"").unwrap();
    let gate = gate_with(&host, &json);
    install_version(&host, "crashy", "1.0.0");
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::Rollback { highest, .. } if highest == "2.0.0"),
    );
    install_version(&host, "crashy", "2.5.0");
    gate.verify_and_load(&dir).unwrap();
    assert_eq!(
        read_version_mark(&state, "crashy").unwrap(),
        Some(Version::new(2, 5, 0))
    );
    // The stray temporary files were cleaned up under the lock.
    let left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A mark that is corrupt (it cannot be, short of tampering) refuses rather than resets.
    std::fs::write(state.join("crashy.version"), b"{\"format\":").unwrap();
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(err, |e| matches!(e, TrustError::StateCorrupt { .. }));
    host.assert_still_serves(&gate);
}

#[test]
fn a_version_below_the_policy_minimum_is_refused() {
    let host = Host::new();
    let gate = gate_with(&host, r#"{"min_versions":{"old-one":"1.5.0"}}"#);
    let dir = install_version(&host, "old-one", "1.4.9");
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(
        err,
        |e| matches!(e, TrustError::BelowMinimum { version, minimum, .. } if version == "1.4.9" && minimum == "1.5.0"),
    );
    install_version(&host, "old-one", "1.5.0");
    gate.verify_and_load(&dir).unwrap();
    host.assert_still_serves(&gate);
}

// ---------------------------------------------------------------------------------------
// Expiry

fn install_expiring(host: &Host, name: &str, expires: &str) -> PathBuf {
    let lib = host.build("good", name, &[]);
    let json = manifest_template(name).replace(
        "\"thread_safe\":false",
        &format!("\"thread_safe\":false,\"expires\":\"{expires}\""),
    );
    host.install_with_manifest(name, &lib, &json)
}

#[test]
fn an_expired_manifest_is_refused() {
    let host = Host::new();
    let dir = install_expiring(&host, "expired", "2001-02-03T04:05:06Z");
    let gate = host.gate();
    let err = gate.verify_and_load(&dir).unwrap_err();
    assert_trust_err(err, |e| {
        matches!(e, TrustError::Expired { plugin, expires, skew_seconds: 0, .. }
            if plugin == "expired" && expires == "2001-02-03T04:05:06Z")
    });
    host.assert_still_serves(&gate);
    // Demoted to a warning for an air-gapped host: a danger knob, refused in its old place.
    assert!(matches!(
        TrustPolicy::from_json(br#"{"expiry":{"warn_only":true}}"#, host.tmp.path()),
        Err(skillgate::policy::PolicyError::MovedToDanger {
            field: "expiry.warn_only",
            danger: "danger.expired_plugins_warn_only"
        })
    ));
    let mut danger = Danger::default();
    danger.expired_plugins_warn_only();
    let policy = host.policy_with(|p| p.danger(danger));
    let lenient = Gate::new(policy).unwrap();
    lenient.verify_and_load(&dir).unwrap();
    // Within the clock-skew margin.
    let now = time::OffsetDateTime::now_utc() - time::Duration::seconds(60);
    let recent = now
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let dir = install_expiring(&host, "just-expired", &recent);
    assert!(matches!(
        host.gate().verify_and_load(&dir),
        Err(Error::Trust(TrustError::Expired { .. }))
    ));
    gate_with(&host, r#"{"expiry":{"skew_seconds":600}}"#)
        .verify_and_load(&dir)
        .unwrap();
    // Not yet expired.
    let dir = install_expiring(&host, "fresh", "2999-01-01T00:00:00Z");
    host.gate().verify_and_load(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Encrypted keys and the command line

fn skill_sign(args: &[&str], env_password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skill-sign"));
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("SKILLGATE_PASSWORD");
    if let Some(p) = env_password {
        cmd.env("SKILLGATE_PASSWORD", p);
    }
    cmd.output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs minisign with `stdin`; `None` (skip) only when `SKILLGATE_SKIP_MINISIGN` is set.
fn minisign(args: &[&str], dir: &Path, stdin: &[u8]) -> Option<Output> {
    use std::io::Write;
    let child = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("SKILLGATE_SKIP_MINISIGN").is_some() => {
            eprintln!("skipping minisign interop: {e}");
            return None;
        }
        Err(e) => panic!("minisign not runnable ({e}); set SKILLGATE_SKIP_MINISIGN=1 to skip"),
    };
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn a_wrong_password_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let path = dir.path().join("k.key");
    std::fs::write(
        &path,
        key.to_minisign_string_encrypted(b"right", KdfParams::INTERACTIVE)
            .unwrap(),
    )
    .unwrap();
    let pw = |p: &'static str| move || Ok(zeroize::Zeroizing::new(p.as_bytes().to_vec()));
    let err = SecretKey::read_file_with(&path, pw("wrong")).unwrap_err();
    assert!(
        matches!(err.innermost(), KeyError::WrongPassword),
        "{err:?}"
    );
    assert_eq!(
        SecretKey::read_file_with(&path, pw("right")).unwrap().id(),
        key.id()
    );
    let err = SecretKey::read_file(&path).unwrap_err();
    assert!(
        matches!(err.innermost(), KeyError::PasswordRequired),
        "{err:?}"
    );

    // The command line: exit 2 and a message naming the cause.
    let host = Host::new();
    let plugin = host.plugin("good", "pw-plugin");
    let out = skill_sign(
        &["sign", s(&plugin), "--secret-key", s(&path)],
        Some("wrong"),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong password"),
        "{out:?}"
    );
    let out = skill_sign(
        &["sign", s(&plugin), "--secret-key", s(&path)],
        Some("right"),
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn keygen_encrypts_by_default_and_interoperates_with_minisign() {
    let host = Host::new();
    let tmp = host.tmp.path();
    std::fs::write(tmp.join("pw.txt"), "s3cret\n").unwrap();
    let out = skill_sign(
        &[
            "keygen",
            "--secret-key",
            s(&tmp.join("enc.key")),
            "--public-key",
            s(&tmp.join("enc.pub")),
            "--password-file",
            s(&tmp.join("pw.txt")),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read(tmp.join("enc.key")).unwrap();
    assert!(SecretKey::is_encrypted_minisign(&text).unwrap());
    // Without any password source and no terminal: refused, exit 2.
    let out = skill_sign(
        &[
            "keygen",
            "--secret-key",
            s(&tmp.join("x.key")),
            "--public-key",
            s(&tmp.join("x.pub")),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!tmp.join("x.key").exists());

    // skill-sign signs with it (password from the environment), and a host trusts it.
    let dir = host.plugin("good", "enc-signed");
    std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
    let out = skill_sign(
        &["sign", s(&dir), "--secret-key", s(&tmp.join("enc.key"))],
        Some("s3cret"),
    );
    assert!(out.status.success(), "{out:?}");
    std::fs::copy(tmp.join("enc.pub"), host.keys_dir().join("enc.pub")).unwrap();
    host.gate().verify_and_load(&dir).unwrap();

    // minisign signs files with our encrypted key, given the password on stdin.
    std::fs::write(tmp.join("file.txt"), b"data\n").unwrap();
    let Some(out) = minisign(&["-S", "-s", "enc.key", "-m", "file.txt"], tmp, b"s3cret\n") else {
        return;
    };
    assert!(out.status.success(), "{out:?}");
    let out = minisign(&["-V", "-p", "enc.pub", "-m", "file.txt"], tmp, b"").unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn minisign_keys_sign_plugins_and_skill_sign_keys_sign_files() {
    let host = Host::new();
    let tmp = host.tmp.path();
    // minisign -G -W (unencrypted) → skill-sign sign → host loads.
    let Some(out) = minisign(&["-G", "-W", "-p", "mw.pub", "-s", "mw.key"], tmp, b"") else {
        return;
    };
    assert!(out.status.success(), "{out:?}");
    let dir = host.plugin("good", "by-minisign-key");
    resign_cli(&dir, &tmp.join("mw.key"), None);
    std::fs::copy(tmp.join("mw.pub"), host.keys_dir().join("mw.pub")).unwrap();
    let p = host.gate().verify_and_load(&dir).unwrap();
    assert_eq!(
        p.signers(),
        &[PublicKey::read_file(&tmp.join("mw.pub")).unwrap().id()]
    );
    drop(p);

    // minisign -G (encrypted; the password read from a non-tty stdin, twice) → skill-sign.
    let out = minisign(
        &["-G", "-p", "me.pub", "-s", "me.key"],
        tmp,
        b"minisign pw\nminisign pw\n",
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = host.plugin("good", "by-encrypted-minisign-key");
    resign_cli(&dir, &tmp.join("me.key"), Some("minisign pw"));
    std::fs::copy(tmp.join("me.pub"), host.keys_dir().join("me.pub")).unwrap();
    host.gate().verify_and_load(&dir).unwrap();

    // skill-sign keygen --unencrypted → minisign -S / -V.
    let out = skill_sign(
        &[
            "keygen",
            "--unencrypted",
            "--secret-key",
            s(&tmp.join("ss.key")),
            "--public-key",
            s(&tmp.join("ss.pub")),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    std::fs::write(tmp.join("f.txt"), b"hello\n").unwrap();
    let out = minisign(&["-S", "-W", "-s", "ss.key", "-m", "f.txt"], tmp, b"").unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = minisign(&["-V", "-p", "ss.pub", "-m", "f.txt"], tmp, b"").unwrap();
    assert!(out.status.success(), "{out:?}");
    host.assert_still_serves(&host.gate());
}

fn resign_cli(dir: &Path, key: &Path, password: Option<&str>) {
    std::fs::remove_file(dir.join("plugin.json.sig")).unwrap();
    let out = skill_sign(&["sign", s(dir), "--secret-key", s(key)], password);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn skill_sign_revoke_writes_a_statement_the_store_honours() {
    let host = Host::new();
    let tmp = host.tmp.path();
    let b = SecretKey::generate();
    std::fs::write(tmp.join("b.key"), b.to_minisign_string_unencrypted()).unwrap();
    std::fs::write(tmp.join("b.pub"), b.public().to_minisign_string()).unwrap();
    trust_key(&host, &b, "b.pub");
    let out = skill_sign(
        &[
            "revoke",
            "--public-key",
            s(&tmp.join("b.pub")),
            "--secret-key",
            s(&tmp.join("b.key")),
            "--out",
            s(&host.keys_dir().join("b.revoked")),
            "--reason",
            "rotated out",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let gate = host.gate();
    let r = gate.trust_store().revocation(&b.id()).unwrap();
    assert_eq!(r.reason(), Some("rotated out"));
    let dir = host.plugin("good", "by-revoked");
    resign(&dir, &[&b]);
    assert!(matches!(
        gate.verify_and_load(&dir),
        Err(Error::Trust(TrustError::Revoked { .. }))
    ));
    host.assert_still_serves(&gate);
}

// ---------------------------------------------------------------------------------------
// Edge-case vectors, kept as files under tests/vectors/trust/

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/trust")
        .join(name)
}

fn vector_store() -> TrustStore {
    TrustStore::from_keys([PublicKey::read_file(&vector("signer.pub")).unwrap()]).unwrap()
}

fn vector_manifest() -> Vec<u8> {
    std::fs::read(vector("plugin.json")).unwrap()
}

#[test]
fn vector_the_good_signature_verifies() {
    // The control: the files the bad vectors were cut from are good.
    let sig = std::fs::read(vector("good.sig")).unwrap();
    verify_manifest(vector_manifest(), Some(&sig), &vector_store()).unwrap();
}

#[test]
fn vectors_of_bad_signatures_are_rejected() {
    let store = vector_store();
    let signer = store.ids().next().copied().unwrap();
    for name in [
        "sig-s-plus-l.sig",
        "sig-minisign-prehashed.sig",
        "sig-minisign-legacy.sig",
        "sig-key-id-mismatch.sig",
    ] {
        let sig = std::fs::read(vector(name)).unwrap();
        let err = verify_manifest(vector_manifest(), Some(&sig), &store).unwrap_err();
        assert!(
            matches!(err, SignatureError::Invalid { key_id } if key_id == signer),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn vectors_of_weak_public_keys_are_rejected_by_the_host() {
    for name in ["public-small-order.pub", "public-identity.pub"] {
        let err = PublicKey::read_file(&vector(name)).unwrap_err();
        assert!(
            matches!(err.innermost(), KeyError::WeakKey { .. }),
            "{name}: {err:?}"
        );
        let host = Host::new();
        std::fs::copy(vector(name), host.keys_dir().join("weak.pub")).unwrap();
        let err = Gate::new(host.policy()).unwrap_err();
        assert!(
            matches!(&err, Error::Key(e) if matches!(e.innermost(), KeyError::WeakKey { .. })),
            "{name}: {err:?}"
        );
        std::fs::remove_file(host.keys_dir().join("weak.pub")).unwrap();
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn vector_a_revocation_whose_key_id_does_not_match_its_key_is_rejected() {
    let statement = std::fs::read(vector("revocation-key-id-mismatch.revoked")).unwrap();
    let sigs = std::fs::read(vector("revocation-key-id-mismatch.revoked.sig")).unwrap();
    let mut store = vector_store();
    let err = store.add_revocation(&statement, &sigs).unwrap_err();
    assert!(
        matches!(err, RevocationError::KeyIdMismatch { .. }),
        "{err:?}"
    );
    // And in a trust store directory, the host refuses to start.
    let host = Host::new();
    std::fs::copy(
        vector("revocation-key-id-mismatch.revoked"),
        host.keys_dir().join("x.revoked"),
    )
    .unwrap();
    std::fs::copy(
        vector("revocation-key-id-mismatch.revoked.sig"),
        host.keys_dir().join("x.revoked.sig"),
    )
    .unwrap();
    assert!(matches!(
        Gate::new(host.policy()),
        Err(Error::Key(KeyError::Revocation { .. }))
    ));
    std::fs::remove_file(host.keys_dir().join("x.revoked")).unwrap();
    host.assert_still_serves(&host.gate());
}

/// Regenerates `tests/vectors/trust/` (needs minisign):
/// `SKILLGATE_WRITE_VECTORS=1 cargo test --test trust write_vectors -- --ignored`.
#[test]
#[ignore = "writes the vector files; run by hand"]
fn write_vectors() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    if std::env::var_os("SKILLGATE_WRITE_VECTORS").is_none() {
        return;
    }
    let out = vector("");
    std::fs::create_dir_all(&out).unwrap();
    let key = SecretKey::generate();
    let other = SecretKey::generate();
    std::fs::write(out.join("signer.key"), key.to_minisign_string_unencrypted()).unwrap();
    std::fs::write(out.join("signer.pub"), key.public().to_minisign_string()).unwrap();
    let manifest = manifest_template("vector").into_bytes();
    std::fs::write(out.join("plugin.json"), &manifest).unwrap();
    let file_with = |sig: [u8; 64]| {
        format!(
            "{{\"format\":\"skillgate-signatures-v1\",\"signatures\":[{{\"key_id\":\"{}\",\"signature\":\"{}\"}}]}}\n",
            key.id(),
            STANDARD.encode(sig)
        )
    };
    let (_, good) = skillgate::sign::sign_manifest(&manifest, &key);
    std::fs::write(out.join("good.sig"), file_with(good.to_bytes())).unwrap();
    // S + L: the same signature with a non-canonical scalar.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut bytes = good.to_bytes();
    let mut carry = 0u16;
    for (s, l) in bytes[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    std::fs::write(out.join("sig-s-plus-l.sig"), file_with(bytes)).unwrap();
    // The key's id with another key's valid signature.
    let (_, theirs) = skillgate::sign::sign_manifest(&manifest, &other);
    std::fs::write(
        out.join("sig-key-id-mismatch.sig"),
        file_with(theirs.to_bytes()),
    )
    .unwrap();
    // minisign's own signatures of plugin.json, moved into a skillgate signature file.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("k.key"),
        key.to_minisign_string_unencrypted(),
    )
    .unwrap();
    std::fs::write(tmp.path().join("plugin.json"), &manifest).unwrap();
    for (flag, name) in [
        (None, "sig-minisign-prehashed.sig"),
        (Some("-l"), "sig-minisign-legacy.sig"),
    ] {
        let mut args = vec!["-S", "-W", "-s", "k.key", "-m", "plugin.json"];
        args.extend(flag);
        let o = minisign(&args, tmp.path(), b"").unwrap();
        assert!(o.status.success(), "{o:?}");
        let text = std::fs::read_to_string(tmp.path().join("plugin.json.minisig")).unwrap();
        let raw = STANDARD.decode(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(raw.len(), 74);
        let sig: [u8; 64] = raw[10..].try_into().unwrap();
        std::fs::write(out.join(name), file_with(sig)).unwrap();
    }
    // Weak keys.
    let weak = |point: [u8; 32]| {
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&[7; 8]);
        raw.extend_from_slice(&point);
        format!(
            "untrusted comment: weak key vector\n{}\n",
            STANDARD.encode(raw)
        )
    };
    let mut identity = [0u8; 32];
    identity[0] = 1;
    std::fs::write(out.join("public-identity.pub"), weak(identity)).unwrap();
    // A point of order 8.
    let order8: [u8; 32] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ];
    std::fs::write(out.join("public-small-order.pub"), weak(order8)).unwrap();
    // A revocation naming one key id and carrying another key (self-signed by that key).
    let stmt =
        String::from_utf8(RevocationStatement::create(&other.public(), Some("vector"))).unwrap();
    let stmt = stmt.replace(&other.id().to_string(), &key.id().to_string());
    std::fs::write(out.join("revocation-key-id-mismatch.revoked"), &stmt).unwrap();
    let mut file = SignatureFile::new();
    let mut msg = skillgate::keys::REVOCATION_DOMAIN_TAG.to_vec();
    msg.extend_from_slice(stmt.as_bytes());
    file.add_or_replace(other.id(), other.sign(&msg)).unwrap();
    std::fs::write(
        out.join("revocation-key-id-mismatch.revoked.sig"),
        file.to_json_pretty(),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Smaller holes (issue 11, item 11).

#[test]
fn adding_a_key_to_the_vt_code_loader_keeps_every_revocation() {
    let host = Host::new();
    let b = SecretKey::generate();
    trust_key(&host, &b, "b.pub");
    let dir = host.plugin("good", "by-b");
    resign(&dir, &[&b]);
    // Control: before the revocation, b's plugin loads through the loader.
    let loader = skillgate::PluginLoader::with_trust(
        host.policy(),
        TrustStore::load_dir(&host.keys_dir()).unwrap(),
    );
    loader.load_plugin(&dir).unwrap();

    // b revokes itself; the loader built from the store refuses b's plugin.
    write_revocation(&host.keys_dir(), "b", &b, &[&b]);
    let mut loader = skillgate::PluginLoader::with_trust(
        host.policy(),
        TrustStore::load_dir(&host.keys_dir()).unwrap(),
    );
    let revoked =
        |e: &TrustError| matches!(e, TrustError::Revoked { revoked, .. } if revoked == &[b.id()]);
    assert_trust_err(loader.load_plugin(&dir).unwrap_err(), revoked);
    // Adding an unrelated key must not bring b back.
    loader
        .add_trusted_key(SecretKey::generate().public())
        .unwrap();
    assert_trust_err(loader.load_plugin(&dir).unwrap_err(), revoked);
    // Adding a key twice is refused, and the revocation still holds.
    let err = loader.add_trusted_key(host.key.public()).unwrap_err();
    assert!(
        matches!(err, Error::Key(KeyError::DuplicateKey { key_id, .. }) if key_id == host.key.id()),
        "{err:?}"
    );
    assert_trust_err(loader.load_plugin(&dir).unwrap_err(), revoked);
    // The store API underneath keeps it too.
    let mut store = TrustStore::load_dir(&host.keys_dir()).unwrap();
    store.add_key(SecretKey::generate().public()).unwrap();
    assert!(store.revocation(&b.id()).unwrap().self_signed());
    // And the loader still serves a good plugin.
    let healthy = host.plugin("good", "healthy");
    let plugin = loader.load_plugin(&healthy).unwrap();
    assert!(
        plugin
            .execute(&skillgate::PluginContext::default())
            .unwrap()
            .success
    );
    host.assert_still_serves(&host.gate());
}

#[test]
fn a_policy_built_in_code_is_validated_like_a_policy_file() {
    let host = Host::new();
    let dir = host.plugin("good", "limited");
    let store = || TrustStore::load_dir(&host.keys_dir()).unwrap();
    type Edit = fn(LimitsBuilder) -> LimitsBuilder;
    let day_ms = 24 * 3600 * 1000;
    let cases: [(&str, Edit, u64, u64); 4] = [
        (
            "call_timeout_ms",
            |l| l.call_timeout_ms(u64::MAX),
            u64::MAX,
            day_ms,
        ),
        ("call_timeout_ms", |l| l.call_timeout_ms(0), 0, day_ms),
        ("output_bytes", |l| l.output_bytes(0), 0, 1 << 30),
        ("files", |l| l.files(usize::MAX), u64::MAX, 100_000),
    ];
    for (field, edit, value, max) in cases {
        // A policy holding the value cannot be built, so no gate or loader can get one:
        // the builder refuses it with the variant a policy file gets ...
        let err = host
            .policy()
            .to_builder()
            .limits(edit(Limits::builder()))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, PolicyError::LimitOutOfRange { name, value: v, max: m }
                if name == field && v == value && m == max),
            "{field}: {err:?}"
        );
        // ... and so does building the limits on their own.
        let err: LimitError = edit(Limits::builder()).build().unwrap_err();
        assert_eq!(
            (err.name, err.value, err.max),
            (field, value, max),
            "{field}"
        );
        // The same value in a policy file is refused with the same variant.
        let json = format!(
            r#"{{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{{"{field}":{value}}}}}"#
        );
        let err = Policy::from_json(json.as_bytes(), Path::new("/")).unwrap_err();
        assert!(
            matches!(err, PolicyError::LimitOutOfRange { name, value: v, max: m }
                if name == field && v == value && m == max),
            "{err:?}"
        );
        host.assert_still_serves(&host.gate());
    }
    // Control: a limit at its ceiling is accepted, and the host serves.
    let policy = host.policy_with(|p| p.limits(Limits::builder().call_timeout_ms(day_ms)));
    assert_eq!(policy.limits().call_timeout_ms(), day_ms);
    let gate = Gate::with_trust_store(policy, store()).unwrap();
    assert!(
        gate.verify_and_load(&dir)
            .unwrap()
            .execute(&skillgate::PluginContext::default())
            .unwrap()
            .success
    );
    host.assert_still_serves(&gate);
}
