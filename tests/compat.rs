//! `skillgate::compat` as VT Code's host code uses it (issue 13, item 1): what VT Code
//! tolerates is tolerated (unknown fields in metadata and results, a trusted directory
//! loaded as the plugin, `<name>.so`), and every check still holds around it (the output
//! limit, metadata compared with the signed manifest, integrity of a root-plugin, only
//! signed libraries). `PluginLoader::new()`'s policy search is driven through
//! `PluginLoader::from_env`, so no test touches the process environment. Each refusal asserts
//! its exact variant and that the host still serves a good plugin, in both isolation modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::json;
use skillgate::compat::{NativePluginTrait, PluginLoader};
use skillgate::error::{AbiError, Error, FaultError, IntegrityError, KeyError, PolicyError};
use skillgate::policy::{Limits, PolicyEnv};
use skillgate::sign::sign_plugin_dir;
use skillgate::{Isolation, PluginContext, TrustStore};
use support::{Host, ctx, manifest_template};

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.last_mut().unwrap();
    *last ^= 1;
    std::fs::write(path, bytes).unwrap();
}

/// Builds `good.c` as plugin `name` with `defines` (PLUGIN_NAME included by the caller).
fn build_good(host: &Host, tag: &str, lib: &str, defines: &[(&str, &str)]) -> PathBuf {
    let out = host
        .build_dir
        .join(format!("{tag}-{}", host.isolation))
        .join(lib);
    support::build::build_c_plugin(&support::build::test_plugin_src("good"), &out, defines, &[])
}

/// `good.c`'s result with `metrics` (and `padding` bytes in it) after `output`:
/// `{"success":true,"output":{"echo":…,"marker":"v1"},"metrics":{"ms":"3…"},"error":null,"files":[]}`.
fn metrics_marker(padding: usize) -> String {
    format!(
        r#""v1\"}},\"metrics\":{{\"ms\":\"3{}""#,
        "a".repeat(padding)
    )
}

#[test]
fn a_result_with_unknown_fields_runs_and_the_output_limit_still_holds() {
    for host in Host::each_mode() {
        let marker = metrics_marker(4096);
        let lib = build_good(
            &host,
            "metrics",
            "libmetrics.so",
            &[("PLUGIN_NAME", "\"metrics\""), ("MARKER", &marker)],
        );
        let dir = host.install("metrics", &lib);
        // Tolerated: the unknown `metrics` is dropped, the rest of the result is kept.
        let plugin = host.gate().verify_and_load(&dir).unwrap();
        let result = plugin.execute(&ctx(json!({"q": 1}))).unwrap();
        assert!(result.success, "{:?}", host.isolation);
        assert_eq!(result.output["marker"], "v1");
        assert_eq!(result.output["echo"]["input"]["q"], 1);
        assert!(!result.output.contains_key("metrics"));
        assert!(!serde_json::to_string(&result).unwrap().contains("metrics"));
        // The same result over the output limit is refused before it is parsed.
        let small = host.policy_with(|p| p.limits(Limits::builder().output_bytes(1024)));
        let gate = host.gate_with(small);
        let plugin = gate.verify_and_load(&dir).unwrap();
        let err = plugin.execute(&PluginContext::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Fault(FaultError::OutputTooLarge { limit: 1024, .. })
            ),
            "{:?}: {err:?}",
            host.isolation
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_result_field_named_with_escapes_is_ignored_and_never_printed() {
    for host in Host::each_mode() {
        let lib = host.build(
            "result_escapes",
            "unknownfield",
            &[("AS_UNKNOWN_FIELD", "1")],
        );
        let dir = host.install("unknownfield", &lib);
        let gate = host.gate();
        let result = gate
            .verify_and_load(&dir)
            .unwrap()
            .execute(&PluginContext::default())
            .unwrap();
        assert!(result.success && result.output.is_empty() && result.files.is_empty());
        let shown = serde_json::to_string(&result).unwrap();
        assert!(
            !shown.contains("forged") && !shown.contains('\u{1b}'),
            "{shown}"
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn reported_metadata_may_add_fields_but_known_fields_are_still_compared() {
    // `version` is the last text field before `author` in good.c's metadata; these values
    // close it and add fields VT Code's struct does not have.
    let extra = r#"\",\"capabilities\":{\"read\":[\"/\"]},\"files\":[],\"plugin_extra\":\"x"#;
    for host in Host::each_mode() {
        let gate = host.gate();
        let fresh = |tag: &str, name: &str, version: &str, abi: &str| {
            let lib = build_good(
                &host,
                tag,
                "libmeta.so",
                &[
                    ("PLUGIN_NAME", name),
                    ("PLUGIN_VERSION", version),
                    ("METADATA_ABI_VERSION", abi),
                ],
            );
            let dir = host.root.join("meta");
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            host.install("meta", &lib)
        };
        // Unknown fields in what the plugin reports: loads, and the signed metadata stands.
        let dir = fresh("extra", "\"meta\"", &format!("\"1.0.0{extra}\""), "1");
        let plugin = gate.verify_and_load(&dir).unwrap();
        assert_eq!(plugin.metadata().version, "1.0.0");
        assert!(plugin.execute(&PluginContext::default()).unwrap().success);
        drop(plugin);
        // Known fields that differ are refused, unknown fields or not.
        let dir = fresh("version", "\"meta\"", &format!("\"9.9.9{extra}\""), "1");
        let err = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Abi(AbiError::MetadataMismatch { field: "version", plugin, .. }) if plugin == "9.9.9"),
            "{:?}: {err:?}",
            host.isolation
        );
        let dir = fresh("name", "\"other\"", &format!("\"1.0.0{extra}\""), "1");
        let err = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Abi(AbiError::MetadataMismatch { field: "name", plugin, .. }) if plugin == "other"),
            "{:?}: {err:?}",
            host.isolation
        );
        let dir = fresh("abi", "\"meta\"", &format!("\"1.0.0{extra}\""), "7");
        let err = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Abi(AbiError::MetadataMismatch { field: "abi_version", plugin, .. }) if plugin == "7"),
            "{:?}: {err:?}",
            host.isolation
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn a_trusted_root_loads_as_the_plugin_and_a_tampered_one_is_refused() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "rooted");
        let own_root = host.policy_with(|p| p.trusted_roots([&dir]));
        let gate = host.gate_with(own_root.clone());
        let plugin = gate.verify_and_load(&dir).unwrap();
        assert_eq!(plugin.path(), dir.canonicalize().unwrap());
        assert_eq!(
            plugin.execute(&PluginContext::default()).unwrap().output["marker"],
            "v1"
        );
        drop(plugin);
        // Through VT Code's calls: the skill's own directory trusted, then loaded.
        let mut loader = PluginLoader::with_trust(
            host.policy_with(|p| p.trusted_roots(Vec::<PathBuf>::new())),
            TrustStore::load_dir(&host.keys_dir()).unwrap(),
        );
        loader.add_trusted_dir(dir.clone());
        let plugin: Box<dyn NativePluginTrait> = loader.load_plugin(&dir).unwrap();
        assert_eq!(plugin.metadata().name, "rooted");
        drop(plugin);
        // Every check still applies to a root-plugin: a stowaway, a flipped library byte.
        std::fs::write(dir.join("stowaway"), "x").unwrap();
        let err = loader.load_plugin(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Integrity(IntegrityError::UnlistedFile { file, .. }) if file == "stowaway"),
            "{:?}: {err:?}",
            host.isolation
        );
        std::fs::remove_file(dir.join("stowaway")).unwrap();
        flip_last_byte(&dir.join("librooted.so"));
        let err = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Integrity(IntegrityError::HashMismatch { file, .. }) if file == "librooted.so"),
            "{:?}: {err:?}",
            host.isolation
        );
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn a_library_named_name_so_loads_only_when_signed() {
    for host in Host::each_mode() {
        let lib = host.build("good", "bare", &[]);
        let dir = host.root.join("bare");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&lib, dir.join("bare.so")).unwrap();
        std::fs::write(dir.join("plugin.json"), manifest_template("bare")).unwrap();
        sign_plugin_dir(&dir, &host.key).unwrap();
        let gate = host.gate();
        let plugin = gate.verify_and_load(&dir).unwrap();
        assert_eq!(plugin.manifest().library(), "bare.so");
        assert!(plugin.execute(&PluginContext::default()).unwrap().success);
        drop(plugin);
        // A `lib<name>.so` dropped in later is first in VT Code's order, but unsigned: it is
        // never the library, and its presence is refused.
        std::fs::copy(&lib, dir.join("libbare.so")).unwrap();
        let err = gate.verify_and_load(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Integrity(IntegrityError::UnlistedFile { file, .. }) if file == "libbare.so"),
            "{:?}: {err:?}",
            host.isolation
        );
        host.assert_still_serves(&gate);
    }
}

#[test]
fn signing_a_directory_with_neither_library_name_is_refused_naming_both() {
    let host = Host::new();
    let dir = host.root.join("nolib");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.json"), manifest_template("nolib")).unwrap();
    std::fs::write(dir.join("libnolib.so.1"), "not the name").unwrap();
    let err = sign_plugin_dir(&dir, &host.key).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("\"libnolib.so\"") && shown.contains("\"nolib.so\""),
        "{shown}"
    );
}

#[test]
fn discover_returns_the_refusals_next_to_the_plugins() {
    for host in Host::each_mode() {
        host.plugin("good", "fine");
        let bad = host.plugin("good", "tampered");
        flip_last_byte(&bad.join("libtampered.so"));
        let loader = PluginLoader::with_trust(
            host.policy(),
            TrustStore::load_dir(&host.keys_dir()).unwrap(),
        );
        let found = loader.discover().unwrap();
        let names: Vec<&str> = found
            .plugins
            .iter()
            .map(|p| p.metadata().name.as_str())
            .collect();
        assert_eq!(names, ["fine"], "{:?}", host.isolation);
        assert_eq!(found.refused.len(), 1, "{:?}", found.refused);
        let (path, err) = &found.refused[0];
        assert_eq!(path, &host.root.canonicalize().unwrap().join("tampered"));
        assert!(
            matches!(err, Error::Integrity(IntegrityError::HashMismatch { file, .. }) if file == "libtampered.so"),
            "{err:?}"
        );
        // discover_plugins skips the same one.
        assert_eq!(loader.discover_plugins().unwrap().len(), 1);
        host.assert_still_serves(&host.gate());
    }
}

/// A policy file for `host` in `isolation`, at `path`.
fn write_policy(host: &Host, path: &Path, isolation: Isolation) {
    let policy = json!({
        "trusted_roots": [host.root],
        "keys": host.keys_dir(),
        "isolation": isolation.to_string(),
        "worker": env!("CARGO_BIN_EXE_skillgate-worker"),
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
}

/// An environment whose every candidate lies beneath `base`.
fn env_in(base: &Path, named: Option<&Path>) -> PolicyEnv {
    PolicyEnv {
        skillgate_policy: named.map(|p| p.as_os_str().to_owned()),
        xdg_config_home: Some(base.join("xdg").into_os_string()),
        home: Some(OsString::from(base.join("home"))),
        system_file: base.join("etc/skillgate/policy.json"),
    }
}

#[test]
fn a_loader_without_a_policy_refuses_everything_naming_where_it_looked() {
    let host = Host::new();
    let dir = host.plugin("good", "unreached");
    let env = env_in(host.tmp.path(), None);
    let mut loader = PluginLoader::from_env(&env);
    loader.add_trusted_dir(host.root.clone());
    let expected = vec![
        host.tmp.path().join("xdg/skillgate/policy.json"),
        host.tmp.path().join("etc/skillgate/policy.json"),
    ];
    let not_found = |e: &Error| matches!(e, Error::Policy(PolicyError::NotFound { searched }) if *searched == expected);
    let err = loader.load_plugin(&dir).unwrap_err();
    assert!(not_found(&err), "{err:?}");
    let err = loader.discover_plugins().unwrap_err();
    assert!(not_found(&err), "{err:?}");
    let err = loader.discover().unwrap_err();
    assert!(not_found(&err), "{err:?}");
    // Adding a key does not turn the policy-less loader into one with a default policy.
    let err = loader.add_trusted_key(host.key.public()).unwrap_err();
    assert!(not_found(&err), "{err:?}");
    assert!(not_found(&loader.load_plugin(&dir).unwrap_err()));
    // Control: with a policy file where the search looks, the same calls load the plugin.
    write_policy(&host, &expected[1], Isolation::Thread);
    let loader = PluginLoader::from_env(&env);
    assert_eq!(loader.trusted_dirs(), [host.root.canonicalize().unwrap()]);
    assert_eq!(
        loader.load_plugin(&dir).unwrap().metadata().name,
        "unreached"
    );
}

#[test]
fn a_loader_uses_the_policy_skillgate_policy_names_in_both_modes() {
    for host in Host::each_mode() {
        let dir = host.plugin("good", "named");
        let file = host.tmp.path().join("named-policy.json");
        write_policy(&host, &file, host.isolation);
        let loader = PluginLoader::from_env(&env_in(host.tmp.path(), Some(&file)));
        let plugin = loader.load_plugin(&dir).unwrap();
        assert_eq!(plugin.metadata().name, "named");
        assert!(plugin.execute(&PluginContext::default()).unwrap().success);
        let found = loader.discover_plugins().unwrap();
        assert_eq!(found.len(), 1, "{:?}", host.isolation);
        host.assert_still_serves(&host.gate());
    }
}

#[test]
fn a_broken_policy_is_an_error_never_a_fall_through() {
    let host = Host::new();
    let dir = host.plugin("good", "guarded");
    // A valid policy where the search would look next...
    write_policy(
        &host,
        &host.tmp.path().join("xdg/skillgate/policy.json"),
        Isolation::Thread,
    );
    // ...is never reached past a named file that is invalid, missing or whose keys fail.
    let invalid = host.tmp.path().join("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"trusted_roots":[],"keys":"k","isolation":"thread","sandbox_off":true}"#,
    )
    .unwrap();
    let loader = PluginLoader::from_env(&env_in(host.tmp.path(), Some(&invalid)));
    for _ in 0..2 {
        let err = loader.load_plugin(&dir).unwrap_err();
        assert!(
            matches!(err, Error::Policy(PolicyError::Syntax(_))),
            "{err:?}"
        );
    }
    let err = loader.discover().unwrap_err();
    assert!(
        matches!(err, Error::Policy(PolicyError::Syntax(_))),
        "{err:?}"
    );

    let missing = host.tmp.path().join("missing.json");
    let loader = PluginLoader::from_env(&env_in(host.tmp.path(), Some(&missing)));
    let err = loader.load_plugin(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Policy(PolicyError::NotFound { searched }) if *searched == [missing.clone()]),
        "{err:?}"
    );

    let no_keys = host.tmp.path().join("no-keys.json");
    std::fs::write(
        &no_keys,
        r#"{"trusted_roots":[],"keys":"no-such-keys","isolation":"thread"}"#,
    )
    .unwrap();
    let loader = PluginLoader::from_env(&env_in(host.tmp.path(), Some(&no_keys)));
    let err = loader.load_plugin(&dir).unwrap_err();
    assert!(matches!(err, Error::Key(KeyError::Io { .. })), "{err:?}");

    // Control: without SKILLGATE_POLICY the valid XDG policy is found and serves.
    let loader = PluginLoader::from_env(&env_in(host.tmp.path(), None));
    assert_eq!(loader.load_plugin(&dir).unwrap().metadata().name, "guarded");
    host.assert_still_serves(&host.gate());
}

#[test]
fn the_compat_module_replaces_vt_codes_module() {
    // Every name VT Code's module exports, from `skillgate::compat` (and the crate root).
    use skillgate::compat::{
        NativePlugin, PLUGIN_ABI_VERSION, PluginContext as Ctx, PluginMetadata, PluginMetadataFFI,
        PluginResult, PluginResultFFI, library_filename, validate_plugin_structure,
    };
    fn named<T>() -> &'static str {
        std::any::type_name::<T>()
    }
    assert_eq!(PLUGIN_ABI_VERSION, skillgate::PLUGIN_ABI_VERSION);
    assert_eq!(library_filename("x"), "libx.so");
    assert_eq!(named::<Ctx>(), named::<skillgate::PluginContext>());
    assert_eq!(named::<PluginResult>(), named::<skillgate::PluginResult>());
    assert_eq!(
        named::<PluginMetadata>(),
        named::<skillgate::PluginMetadata>()
    );
    assert_eq!(
        named::<PluginMetadataFFI>(),
        named::<skillgate::PluginMetadataFFI>()
    );
    assert_eq!(
        named::<PluginResultFFI>(),
        named::<skillgate::PluginResultFFI>()
    );
    assert_eq!(named::<NativePlugin>(), named::<skillgate::NativePlugin>());
    let problems = validate_plugin_structure(Path::new("/nonexistent")).unwrap();
    assert!(!problems.is_empty());
    // VT Code's discovery parses a signed plugin.json with PluginMetadata.
    let host = Host::new();
    let dir = host.plugin("good", "parsed");
    let text = std::fs::read_to_string(dir.join("plugin.json")).unwrap();
    assert!(text.contains("\"files\""));
    let meta: PluginMetadata = serde_json::from_str(&text).unwrap();
    assert_eq!((meta.name.as_str(), meta.abi_version), ("parsed", 1));
    // The library lint accepts either of VT Code's names.
    let bare = host.tmp.path().join("lint");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::write(bare.join("plugin.json"), manifest_template("lint")).unwrap();
    let lib_missing = |d: &Path| {
        validate_plugin_structure(d)
            .unwrap()
            .iter()
            .any(|p| p.starts_with("No dynamic library"))
    };
    assert!(lib_missing(&bare));
    std::fs::write(bare.join("lint.so"), "x").unwrap();
    assert!(!lib_missing(&bare));
}
