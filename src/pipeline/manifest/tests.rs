//! Unit tests of the manifest parse: shapes, names, versions, expiry, library choice.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;

const LIB_SHA: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn manifest(extra: &str) -> String {
    format!(
        r#"{{"name":"echo","description":"d","version":"1.2.3","abi_version":1{extra},
           "files":[{{"path":"libecho.so","sha256":"{LIB_SHA}","size":5}}]}}"#
    )
}

#[test]
fn a_valid_manifest_parses_with_defaults() {
    let m = fuzz_parse(manifest("").as_bytes()).unwrap();
    assert_eq!(m.name(), "echo");
    assert_eq!(m.library(), "libecho.so");
    assert_eq!(m.version(), &Version::new(1, 2, 3));
    assert_eq!(m.library_entry().unwrap().size, 5);
    assert_eq!(hex_digest(&m.files()[0].sha256), LIB_SHA);
    assert!(!m.metadata().thread_safe);
}

#[test]
fn expires_must_be_rfc3339_utc() {
    let m = fuzz_parse(manifest(r#","expires":"2030-01-02T03:04:05Z""#).as_bytes()).unwrap();
    assert_eq!(m.expires().unwrap().unix_timestamp(), 1_893_553_445);
    assert_eq!(fuzz_parse(manifest("").as_bytes()).unwrap().expires(), None);
    for (bad, expected) in [
        ("2030-01-02T03:04:05+01:00", "NotUtc"),
        ("2030-01-02 03:04:05Z", "Separator"),
        ("2030-01-02", "Separator"),
        ("tomorrow", "Separator"),
        ("2030-13-02T03:04:05Z", "Syntax"),
    ] {
        let e = fuzz_parse(manifest(&format!(r#","expires":"{bad}""#)).as_bytes()).unwrap_err();
        let ManifestError::BadExpiry { problem, .. } = &e else {
            panic!("{bad}: {e:?}");
        };
        let found = match problem {
            ExpiryProblem::NotUtc => "NotUtc",
            ExpiryProblem::Separator => "Separator",
            ExpiryProblem::Syntax(_) => "Syntax",
            ExpiryProblem::TooLong => "TooLong",
        };
        assert_eq!(found, expected, "{bad}: {e}");
    }
    // The time parser's own words reach the message.
    let e = fuzz_parse(manifest(r#","expires":"2030-13-02T03:04:05Z""#).as_bytes()).unwrap_err();
    assert!(e.to_string().contains("month"), "{e}");
    let e = fuzz_parse(manifest(r#","expires":1893553445"#).as_bytes()).unwrap_err();
    assert!(matches!(e, ManifestError::Syntax(_)), "{e:?}");
}

/// A manifest for plugin `echo` whose signed `files` are `paths`, with `extra` fields.
fn listing(paths: &[&str], extra: &str) -> String {
    let files: Vec<String> = paths
        .iter()
        .map(|p| format!(r#"{{"path":"{p}","sha256":"{LIB_SHA}","size":5}}"#))
        .collect();
    format!(
        r#"{{"name":"echo","description":"d","version":"1.2.3","abi_version":1{extra},"files":[{}]}}"#,
        files.join(",")
    )
}

#[test]
fn the_library_is_the_named_one_else_lib_name_so_else_name_so_and_always_signed() {
    let lib = |paths: &[&str], extra: &str| fuzz_parse(listing(paths, extra).as_bytes());
    // VT Code's order: lib<name>.so first, then <name>.so.
    assert_eq!(lib(&["libecho.so"], "").unwrap().library(), "libecho.so");
    assert_eq!(lib(&["echo.so"], "").unwrap().library(), "echo.so");
    assert_eq!(
        lib(&["echo.so", "libecho.so"], "").unwrap().library(),
        "libecho.so"
    );
    assert_eq!(
        lib(&["echo.so"], "").unwrap().library_entry().unwrap().path,
        "echo.so"
    );
    // A named library wins over both defaults, and must itself be signed.
    let named = r#","library":"custom.so""#;
    assert_eq!(
        lib(&["custom.so", "libecho.so"], named).unwrap().library(),
        "custom.so"
    );
    assert!(matches!(
        lib(&["libecho.so", "echo.so"], named).unwrap_err(),
        ManifestError::LibraryNotListed(ref l) if l == "custom.so"
    ));
    // Neither default is a signed file: the refusal names both. (An unsigned file of
    // either name on disk is then refused by the integrity check as unlisted.)
    let e = lib(&["libother.so", "README.md"], "").unwrap_err();
    assert!(
        matches!(
            &e,
            ManifestError::NoLibraryListed { first, second }
                if first == "libecho.so" && second == "echo.so"
        ),
        "{e:?}"
    );
    let shown = e.to_string();
    assert!(
        shown.contains("\"libecho.so\"") && shown.contains("\"echo.so\""),
        "{shown}"
    );
}

#[test]
fn library_filename_follows_the_os() {
    let expected = if cfg!(target_os = "macos") {
        ("libmy-plugin.dylib", "my-plugin.dylib")
    } else if cfg!(target_os = "windows") {
        ("my-plugin.dll", "libmy-plugin.dll")
    } else {
        ("libmy-plugin.so", "my-plugin.so")
    };
    assert_eq!(library_filename("my-plugin"), expected.0);
    assert_eq!(alternative_library_filename("my-plugin"), expected.1);
}

#[test]
fn workspace_is_read_or_read_write_and_nothing_else() {
    assert_eq!(
        fuzz_parse(manifest("").as_bytes()).unwrap().workspace(),
        WorkspaceAccess::None
    );
    for (value, access) in [
        ("read", WorkspaceAccess::Read),
        ("read_write", WorkspaceAccess::ReadWrite),
    ] {
        let m = fuzz_parse(manifest(&format!(r#","workspace":"{value}""#)).as_bytes()).unwrap();
        assert_eq!(m.workspace(), access);
    }
    // "none" is spelled by leaving the field out; anything else is refused by the parse,
    // and serde's message names what is accepted.
    for bad in [
        r#""none""#,
        r#""write""#,
        r#""READ""#,
        "true",
        "null",
        r#"["read"]"#,
    ] {
        let e = fuzz_parse(manifest(&format!(r#","workspace":{bad}"#)).as_bytes()).unwrap_err();
        assert!(matches!(e, ManifestError::Syntax(_)), "{bad}: {e:?}");
    }
    let e = fuzz_parse(manifest(r#","workspace":"write""#).as_bytes()).unwrap_err();
    assert!(e.to_string().contains("read_write"), "{e}");
}

#[test]
fn unknown_and_duplicate_fields_are_refused() {
    let e = fuzz_parse(manifest(r#","sandbox":"off""#).as_bytes()).unwrap_err();
    assert!(matches!(e, ManifestError::Syntax(_)), "{e:?}");
    let e = fuzz_parse(manifest(r#","name":"evil""#).as_bytes()).unwrap_err();
    assert!(matches!(e, ManifestError::Syntax(_)), "{e:?}");
}

#[test]
fn bad_names_are_refused() {
    for name in ["", "a/b", "..", ".hidden", "a\u{0}b", "é", &"x".repeat(65)] {
        let json = manifest("").replace(
            r#""name":"echo""#,
            &format!("\"name\":{}", serde_json::json!(name)),
        );
        let e = fuzz_parse(json.as_bytes()).unwrap_err();
        assert!(
            matches!(e, ManifestError::BadName { field: "name", .. }),
            "{name:?}: {e:?}"
        );
    }
    for lib in ["../libx.so", "/lib/libc.so.6", "a/b.so"] {
        let e = fuzz_parse(manifest(&format!(r#","library":"{lib}""#)).as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                ManifestError::BadName {
                    field: "library",
                    ..
                }
            ),
            "{lib}: {e:?}"
        );
    }
}

#[test]
fn bad_versions_paths_and_lists_are_refused() {
    let e = fuzz_parse(manifest("").replace("1.2.3", "1.2").as_bytes()).unwrap_err();
    assert!(matches!(e, ManifestError::BadVersion { .. }));
    // semver's own words reach the message, once: as the source, which the printed
    // chain (and `Error`'s message) carries.
    let mut printed = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        printed.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    assert!(printed.contains("unexpected end of input"), "{printed}");
    assert_eq!(
        printed.matches("unexpected end of input").count(),
        1,
        "{printed}"
    );
    let e = fuzz_parse(
        manifest("")
            .replace(r#""abi_version":1"#, r#""abi_version":2"#)
            .as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        ManifestError::AbiVersion {
            manifest: 2,
            host: 1
        }
    ));
    let e = fuzz_parse(manifest(r#","library":"libother.so""#).as_bytes()).unwrap_err();
    assert!(matches!(e, ManifestError::LibraryNotListed(ref l) if l == "libother.so"));
    for p in ["../x", "a//b", "./a", "/abs", "a/../b", ""] {
        let json = manifest("").replace(
            r#"}]}"#,
            &format!(
                r#"}},{{"path":{},"sha256":"{LIB_SHA}","size":1}}]}}"#,
                serde_json::json!(p)
            ),
        );
        let e = fuzz_parse(json.as_bytes()).unwrap_err();
        assert!(matches!(e, ManifestError::BadPath(_)), "{p:?}: {e:?}");
    }
    let dup = manifest("").replace(
        r#"}]}"#,
        &format!(r#"}},{{"path":"libecho.so","sha256":"{LIB_SHA}","size":1}}]}}"#),
    );
    assert!(matches!(
        fuzz_parse(dup.as_bytes()).unwrap_err(),
        ManifestError::DuplicateFile(_)
    ));
    let reserved = manifest("").replace(
        r#"}]}"#,
        &format!(r#"}},{{"path":"plugin.json.sig","sha256":"{LIB_SHA}","size":1}}]}}"#),
    );
    assert!(matches!(
        fuzz_parse(reserved.as_bytes()).unwrap_err(),
        ManifestError::ReservedFile(_)
    ));
    let upper = manifest("").replace(LIB_SHA, &LIB_SHA.to_uppercase());
    assert!(matches!(
        fuzz_parse(upper.as_bytes()).unwrap_err(),
        ManifestError::BadDigest { .. }
    ));
    let no_files = r#"{"name":"echo","description":"d","version":"1.2.3","abi_version":1}"#;
    assert!(matches!(
        fuzz_parse(no_files.as_bytes()).unwrap_err(),
        ManifestError::NoFileList
    ));
}

#[test]
fn tools_are_plain_names_listed_once() {
    assert!(
        fuzz_parse(manifest("").as_bytes())
            .unwrap()
            .tools()
            .is_empty()
    );
    let m = fuzz_parse(manifest(r#","tools":["workspace.write","workspace.read"]"#).as_bytes())
        .unwrap();
    assert_eq!(m.tools(), ["workspace.read", "workspace.write"]);
    let e = fuzz_parse(manifest(r#","tools":["a","a"]"#).as_bytes()).unwrap_err();
    assert!(
        matches!(e, ManifestError::DuplicateTool(ref t) if t == "a"),
        "{e:?}"
    );
    for bad in [r#""a/b""#, r#""""#, r#"".x""#, r#""a b""#] {
        let e = fuzz_parse(manifest(&format!(r#","tools":[{bad}]"#)).as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                ManifestError::BadName {
                    field: "tools entry",
                    ..
                }
            ),
            "{bad}: {e:?}"
        );
    }
    let many: Vec<String> = (0..=MAX_TOOLS).map(|i| format!("\"t{i}\"")).collect();
    let e =
        fuzz_parse(manifest(&format!(r#","tools":[{}]"#, many.join(","))).as_bytes()).unwrap_err();
    assert!(
        matches!(e, ManifestError::TooLong { field: "tools" }),
        "{e:?}"
    );
    for bad in ["null", r#""workspace.read""#, "[1]"] {
        let e = fuzz_parse(manifest(&format!(r#","tools":{bad}"#)).as_bytes()).unwrap_err();
        assert!(matches!(e, ManifestError::Syntax(_)), "{bad}: {e:?}");
    }
}
