//! The policy's tests: a file and a builder refuse the same values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
use super::*;

#[test]
fn relative_paths_resolve_against_the_policy_directory() {
    let p = Policy::from_json(
        br#"{"trusted_roots":["../skills","/abs"],"keys":"../keys","isolation":"thread"}"#,
        Path::new("/etc/skillgate/policy"),
    )
    .unwrap();
    assert_eq!(
        p.trusted_roots[0],
        Path::new("/etc/skillgate/policy/../skills")
    );
    assert_eq!(p.trusted_roots[1], Path::new("/abs"));
    assert_eq!(p.keys, Path::new("/etc/skillgate/policy/../keys"));
    assert_eq!(p.limits, Limits::default());
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    for json in [
        r#"{"trusted_roots":[],"keys":"k","isolation":"thread","allow_unsigned":true}"#,
        r#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"output_byte":5}}"#,
    ] {
        let err = Policy::from_json(json.as_bytes(), Path::new("/")).unwrap_err();
        assert!(matches!(err, PolicyError::Syntax(_)), "{json}: {err:?}");
    }
}

#[test]
fn required_fields_and_isolation_words() {
    let err = Policy::from_json(br#"{"trusted_roots":[],"keys":"k"}"#, Path::new("/")).unwrap_err();
    assert!(matches!(err, PolicyError::Syntax(_)));
    let err = Policy::from_json(
        br#"{"trusted_roots":[],"keys":"k","isolation":"none"}"#,
        Path::new("/"),
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Syntax(_)));
    let p = Policy::from_json(
        br#"{"trusted_roots":[],"keys":"k","isolation":"process"}"#,
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(p.isolation, Isolation::Process);
    let err = Policy::from_json(
        br#"{"trusted_roots":[],"keys":"","isolation":"thread"}"#,
        Path::new("/"),
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::NoTrustStore));
}

#[test]
fn limits_must_be_positive_and_below_their_ceiling() {
    let err = Policy::from_json(
        br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"output_bytes":0}}"#,
        Path::new("/"),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PolicyError::LimitOutOfRange {
            name: "output_bytes",
            ..
        }
    ));
    let err = Policy::from_json(
        br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"library_bytes":99999999999999}}"#,
        Path::new("/"),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PolicyError::LimitOutOfRange {
            name: "library_bytes",
            ..
        }
    ));
    let p = Policy::from_json(
        br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"output_bytes":10}}"#,
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(p.limits.output_bytes, 10);
    for threads in ["0", "4097"] {
        let json = format!(
            r#"{{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{{"threads":{threads}}}}}"#
        );
        let err = Policy::from_json(json.as_bytes(), Path::new("/")).unwrap_err();
        assert!(matches!(
            err,
            PolicyError::LimitOutOfRange {
                name: "threads",
                max: 4096,
                ..
            }
        ));
    }
    let p = Policy::from_json(
        br#"{"trusted_roots":[],"keys":"k","isolation":"thread","limits":{"threads":4096}}"#,
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(p.limits.threads, 4096);
    assert_eq!(Limits::default().threads, 64);
}

#[test]
fn the_shipped_default_policy_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/default.json");
    let p = Policy::from_file(&path).unwrap();
    assert_eq!(p.isolation, Isolation::Process);
    assert_eq!(p.limits, Limits::default());
    assert_eq!(p.isolation, Policy::default().isolation);
    assert!(p.danger.is_strict(), "{:?}", p.danger.in_force());
    assert_eq!(p.elf, ElfPolicy::default());
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        raw.get("danger").is_none(),
        "the default policy has no danger section"
    );
    assert!(Policy::default().danger.is_strict());
    // The shipped policy lets plugins read the workspace a host names; code's default none.
    assert_eq!(p.sandbox.workspace, WorkspaceAccess::Read);
    assert_eq!(Policy::default().sandbox.workspace, WorkspaceAccess::None);
}

#[test]
fn sandbox_workspace_is_none_read_or_read_write() {
    assert_eq!(
        parse("\"sandbox\":{}").unwrap().sandbox.workspace,
        WorkspaceAccess::None
    );
    for (value, access) in [
        ("none", WorkspaceAccess::None),
        ("read", WorkspaceAccess::Read),
        ("read_write", WorkspaceAccess::ReadWrite),
    ] {
        let p = parse(&format!(r#""sandbox":{{"workspace":"{value}"}}"#)).unwrap();
        assert_eq!(p.sandbox.workspace, access);
    }
    for bad in [r#""write""#, "true", "null", r#""/srv/work""#] {
        let err = parse(&format!(r#""sandbox":{{"workspace":{bad}}}"#)).unwrap_err();
        assert!(matches!(err, PolicyError::Syntax(_)), "{bad}: {err:?}");
    }
}

const BASE: &str = r#""trusted_roots":[],"keys":"k","isolation":"thread""#;

fn parse(sections: &str) -> Result<Policy, PolicyError> {
    Policy::from_json(format!("{{{BASE},{sections}}}").as_bytes(), Path::new("/"))
}

#[test]
fn every_weakening_knob_is_refused_outside_danger_with_a_pointer() {
    for (json, moved, to) in [
        (
            r#""sandbox":{"require":"best_effort"}"#,
            "sandbox.require",
            "danger.sandbox_best_effort",
        ),
        // The strict word too: the field is gone, not just its weak value.
        (
            r#""sandbox":{"require":"full"}"#,
            "sandbox.require",
            "danger.sandbox_best_effort",
        ),
        (
            r#""expiry":{"warn_only":true}"#,
            "expiry.warn_only",
            "danger.expired_plugins_warn_only",
        ),
        (
            r#""elf":{"allow_executable_stack":true}"#,
            "elf.allow_executable_stack",
            "danger.elf.allow_executable_stack",
        ),
        (
            r#""elf":{"allow_writable_executable_segments":true}"#,
            "elf.allow_writable_executable_segments",
            "danger.elf.allow_writable_executable_segments",
        ),
        (
            r#""elf":{"min_relro":"partial"}"#,
            "elf.min_relro",
            "danger.elf.min_relro",
        ),
        (
            r#""elf":{"min_relro":"full"}"#,
            "elf.min_relro",
            "danger.elf.min_relro",
        ),
        (
            r#""elf":{"allow_text_relocations":false}"#,
            "elf.allow_text_relocations",
            "danger.elf.allow_text_relocations",
        ),
        (
            r#""elf":{"allow_rpath":true}"#,
            "elf.allow_rpath",
            "danger.elf.allow_rpath",
        ),
        (
            r#""elf":{"allowed_runpaths":["/opt/x"]}"#,
            "elf.allowed_runpaths",
            "danger.elf.allow_runpaths",
        ),
        (
            r#""elf":{"allow_audit":true}"#,
            "elf.allow_audit",
            "danger.elf.allow_audit",
        ),
        (
            r#""elf":{"allow_ifunc":true}"#,
            "elf.allow_ifunc",
            "danger.elf.allow_ifunc",
        ),
    ] {
        let err = parse(json).unwrap_err();
        assert!(
            matches!(err, PolicyError::MovedToDanger { field, danger } if field == moved && danger == to),
            "{json}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(moved) && msg.contains(to), "{msg}");
    }
}

#[test]
fn a_normal_elf_list_that_widens_is_refused_with_a_pointer() {
    for (json, list, entry, to) in [
        (
            r#""elf":{"denied_imports":[]}"#,
            "elf.denied_imports",
            "execve",
            "danger.elf.allow_imports",
        ),
        (
            r#""elf":{"denied_imports":["execve","execv","execvp","execvpe","execl","execlp","execle","fexecve","popen","fork","vfork","posix_spawn","posix_spawnp","ptrace","dlopen","dlmopen"]}"#,
            "elf.denied_imports",
            "system",
            "danger.elf.allow_imports",
        ),
        (
            r#""elf":{"allowed_needed":["libc.so.6","libz.so.1"]}"#,
            "elf.allowed_needed",
            "libz.so.1",
            "danger.elf.allow_needed",
        ),
    ] {
        let err = parse(json).unwrap_err();
        assert!(
            matches!(&err, PolicyError::WideningOutsideDanger { field, entry: e, danger, .. }
                if *field == list && e == entry && *danger == to),
            "{json}: {err:?}"
        );
        assert!(err.to_string().contains(to), "{err}");
    }
    // The same widenings made in code are refused by the validation a Gate runs.
    let mut p = Policy::default();
    p.elf.denied_imports.retain(|d| d != "ptrace");
    assert!(matches!(
        p.validate(),
        Err(PolicyError::WideningOutsideDanger { field: "elf.denied_imports", ref entry, .. }) if entry == "ptrace"
    ));
    let mut p = Policy::default();
    p.elf.allowed_needed.push("libz.so.1".into());
    assert!(matches!(
        p.validate(),
        Err(PolicyError::WideningOutsideDanger {
            field: "elf.allowed_needed",
            ..
        })
    ));
    // Through the danger knobs they are accepted.
    let mut p = Policy::default();
    p.danger
        .elf_mut()
        .allow_imports(["ptrace"])
        .allow_needed(["libz.so.1"]);
    p.validate().unwrap();
}

/// `Policy::builder()` with a trust store, the minimum a file must hold too.
fn builder() -> PolicyBuilder {
    Policy::builder().keys("/k")
}

/// Each limit's setter and ceiling, written out here so a changed ceiling fails a test.
type Set = fn(LimitsBuilder, u64) -> LimitsBuilder;
const LIMITS: [(&str, Set, u64); 13] = [
    ("manifest_bytes", |l, v| l.manifest_bytes(v), 16 << 20),
    ("signature_bytes", |l, v| l.signature_bytes(v), 16 << 20),
    ("library_bytes", |l, v| l.library_bytes(v), 4 << 30),
    ("file_bytes", |l, v| l.file_bytes(v), 4 << 30),
    ("files", |l, v| l.files(v as usize), 100_000),
    ("depth", |l, v| l.depth(v as usize), 32),
    ("output_bytes", |l, v| l.output_bytes(v as usize), 1 << 30),
    (
        "call_timeout_ms",
        |l, v| l.call_timeout_ms(v),
        24 * 3600 * 1000,
    ),
    ("memory_bytes", |l, v| l.memory_bytes(v), 1 << 40),
    ("cpu_seconds", |l, v| l.cpu_seconds(v), 24 * 3600),
    ("threads", |l, v| l.threads(v), 4096),
    ("log_bytes", |l, v| l.log_bytes(v as usize), 64 << 20),
    (
        "thread_mode_libraries",
        |l, v| l.thread_mode_libraries(v as usize),
        65_536,
    ),
];

#[test]
fn the_builder_refuses_a_zero_or_over_ceiling_limit_as_a_file_does() {
    for (name, set, max) in LIMITS {
        for bad in [0, max + 1] {
            let built = builder()
                .limits(set(Limits::builder(), bad))
                .build()
                .unwrap_err();
            assert!(
                matches!(built, PolicyError::LimitOutOfRange { name: n, value, max: m }
                    if n == name && value == bad && m == max),
                "{name}={bad}: {built:?}"
            );
            let alone = set(Limits::builder(), bad).build().unwrap_err();
            assert_eq!((alone.name, alone.value, alone.max), (name, bad, max));
            let read = parse(&format!(r#""limits":{{"{name}":{bad}}}"#)).unwrap_err();
            assert_eq!(format!("{read:?}"), format!("{built:?}"), "{name}={bad}");
        }
        // The control: the ceiling itself is accepted both ways, and read back.
        let built = builder()
            .limits(set(Limits::builder(), max))
            .build()
            .unwrap();
        let read = parse(&format!(r#""limits":{{"{name}":{max}}}"#)).unwrap();
        assert_eq!(built.limits(), read.limits(), "{name}");
        assert_ne!(built.limits(), &Limits::default(), "{name}");
        // Raising one limit of a built policy keeps the others.
        let raised = built
            .to_builder()
            .limits(built.limits().to_builder().depth(3))
            .build()
            .unwrap();
        assert_eq!(raised.limits().depth(), 3);
        if name != "depth" {
            assert_eq!(
                raised
                    .limits()
                    .to_builder()
                    .depth(built.limits().depth())
                    .build(),
                Ok(built.limits().clone()),
                "{name}"
            );
        }
    }
}

#[test]
fn the_builder_refuses_no_trust_store_and_a_widening_as_a_file_does() {
    assert!(matches!(
        Policy::builder().build(),
        Err(PolicyError::NoTrustStore)
    ));
    assert!(matches!(
        Policy::from_json(
            br#"{"trusted_roots":[],"keys":"","isolation":"thread"}"#,
            Path::new("/")
        ),
        Err(PolicyError::NoTrustStore)
    ));
    // A default policy, the strict one, builds once it names a store.
    assert_eq!(
        Policy::default()
            .to_builder()
            .keys("/k")
            .isolation(Isolation::Thread)
            .build()
            .unwrap(),
        parse_bare()
    );
    let mut fewer = ElfPolicy::default();
    fewer.denied_imports.retain(|d| d != "ptrace");
    let mut more = ElfPolicy::default();
    more.allowed_needed.push("libz.so.1".into());
    for (elf, json, field, entry) in [
        (
            fewer,
            r#""elf":{"denied_imports":["execve","execv","execvp","execvpe","execl","execlp","execle","fexecve","system","popen","fork","vfork","posix_spawn","posix_spawnp","dlopen","dlmopen"]}"#,
            "elf.denied_imports",
            "ptrace",
        ),
        (
            more,
            r#""elf":{"allowed_needed":["libc.so.6","libz.so.1"]}"#,
            "elf.allowed_needed",
            "libz.so.1",
        ),
    ] {
        let built = builder().elf(elf.clone()).build().unwrap_err();
        assert!(
            matches!(&built, PolicyError::WideningOutsideDanger { field: f, entry: e, .. }
                if *f == field && e == entry),
            "{built:?}"
        );
        let read = parse(json).unwrap_err();
        assert_eq!(format!("{read:?}"), format!("{built:?}"));
        // The control: the same widening set as a danger knob instead builds (the
        // normal list stays at its default; the knob is what the inspection applies).
        let mut danger = Danger::default();
        danger
            .elf_mut()
            .allow_imports(["ptrace"])
            .allow_needed(["libz.so.1"]);
        assert_ne!(elf, ElfPolicy::default());
        let p = builder().danger(danger).build().unwrap();
        assert_eq!(p.danger().in_force().len(), 2);
    }
}

/// The base policy with no further section.
fn parse_bare() -> Policy {
    Policy::from_json(format!("{{{BASE}}}").as_bytes(), Path::new("/")).unwrap()
}

#[test]
fn a_built_policy_equals_the_one_read_from_the_same_settings() {
    let read = Policy::from_json(
        br#"{
            "trusted_roots": ["/srv/skills", "/opt/skills"],
            "keys": "/etc/skillgate/keys",
            "isolation": "thread",
            "worker": "/usr/libexec/skillgate-worker",
            "limits": {"call_timeout_ms": 500, "files": 12, "threads": 8},
            "sandbox": {"read": ["/data"], "read_write": ["/scratch"], "connect_tcp": [443],
                        "workspace": "read_write"},
            "elf": {"allowed_needed": ["libc.so.6"], "max_constructors": 2,
                    "require_stack_protector": true},
            "danger": {"sandbox_best_effort": true, "elf": {"allow_ifunc": true}}
        }"#,
        Path::new("/ignored"),
    )
    .unwrap();
    let mut sandbox = SandboxPolicy::default();
    sandbox.read.push("/data".into());
    sandbox.read_write.push("/scratch".into());
    sandbox.connect_tcp.push(443);
    sandbox.workspace = WorkspaceAccess::ReadWrite;
    let elf = ElfPolicy {
        allowed_needed: vec!["libc.so.6".into()],
        max_constructors: Some(2),
        require_stack_protector: true,
        ..ElfPolicy::default()
    };
    let mut danger = Danger::default();
    danger.sandbox_best_effort().elf_mut().allow_ifunc();
    let built = Policy::builder()
        .trusted_roots(["/srv/skills", "/opt/skills"])
        .keys("/etc/skillgate/keys")
        .isolation(Isolation::Thread)
        .worker("/usr/libexec/skillgate-worker")
        .limits(Limits::builder().call_timeout_ms(500).files(12).threads(8))
        .sandbox(sandbox)
        .elf(elf)
        .danger(danger)
        .build()
        .unwrap();
    assert_eq!(built, read);
    assert_ne!(built, Policy::default());
    // The accessors read what was set; a builder from a policy rebuilds it unchanged.
    assert_eq!(built.trusted_roots().len(), 2);
    assert_eq!(built.keys(), Path::new("/etc/skillgate/keys"));
    assert_eq!(built.isolation(), Isolation::Thread);
    assert_eq!(
        built.worker(),
        Some(Path::new("/usr/libexec/skillgate-worker"))
    );
    assert_eq!(built.limits().files(), 12);
    assert_eq!(built.sandbox().connect_tcp, [443]);
    assert_eq!(built.elf().max_constructors, Some(2));
    assert!(built.danger().is_sandbox_best_effort());
    assert_eq!(built.trust(), read.trust());
    assert_eq!(built.to_builder().build().unwrap(), built);
}

#[test]
fn a_syntax_error_carries_the_crate_json_error() {
    let err = parse(r#""limits":{"files":"many"}"#).unwrap_err();
    let PolicyError::Syntax(json) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(json.kind(), crate::base::json::JsonErrorKind::Data);
    assert!(json.line() >= 1, "{json}");
    assert_eq!(err.to_string(), format!("policy is not valid: {json}"));
    // The message holds the JSON error, so it is not also the source (crate::error's
    // convention): a printer walking the chain shows it once.
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn the_elf_section_defaults_strict_tightens_and_refuses_unknown_fields() {
    let p = parse(r#""elf":{}"#).unwrap();
    assert_eq!(p.elf, ElfPolicy::default());
    assert!(p.elf.denied_imports.iter().any(|d| d == "system"));
    assert!(matches!(
        parse(r#""elf":{"allow_execstack":true}"#),
        Err(PolicyError::Syntax(_))
    ));
    // Tightenings stay in the normal section.
    let p = parse(
        r#""elf":{"allowed_needed":[],"denied_imports":["execve","execv","execvp","execvpe","execl","execlp","execle","fexecve","system","popen","fork","vfork","posix_spawn","posix_spawnp","ptrace","dlopen","dlmopen","socket"],"max_constructors":0,"max_finalizers":1,"require_stack_protector":true}"#,
    )
    .unwrap();
    assert!(p.elf.allowed_needed.is_empty());
    assert!(p.elf.denied_imports.iter().any(|d| d == "socket"));
    assert_eq!(p.elf.max_constructors, Some(0));
    assert_eq!(p.elf.max_finalizers, Some(1));
    assert!(p.elf.require_stack_protector);
    assert!(p.danger.is_strict());
}

#[test]
fn the_danger_section_is_read_into_policy_danger() {
    let p = parse(
        r#""danger":{"sandbox_best_effort":true,"elf":{"min_relro":"partial","allow_imports":["system"]}}"#,
    )
    .unwrap();
    assert!(p.danger.is_sandbox_best_effort());
    assert!(!p.danger.is_expired_plugins_warn_only());
    assert_eq!(
        p.danger.elf().relro_floor(),
        Some(crate::danger::RelroFloor::Partial)
    );
    assert_eq!(p.danger.elf().allowed_imports(), ["system"]);
    assert_eq!(p.elf, ElfPolicy::default());
    for bad in [
        r#""danger":{"sandbox":"best_effort"}"#,
        r#""danger":{"elf":{"min_relro":"full"}}"#,
        r#""danger":{"elf":{"allowed_runpaths":["/x"]}}"#,
    ] {
        assert!(matches!(parse(bad), Err(PolicyError::Syntax(_))), "{bad}");
    }
}

#[test]
fn host_tools_are_tool_names_in_a_file_and_in_code() {
    let base = r#""trusted_roots":[],"keys":"k","isolation":"thread""#;
    let p = Policy::from_json(
        format!(r#"{{{base},"host_tools":{{"allow":["workspace.read"]}},"limits":{{"tool_requests":8,"progress_messages":2}}}}"#)
            .as_bytes(),
        Path::new("/"),
    )
    .unwrap();
    assert!(p.host_tools().contains("workspace.read"));
    assert_eq!(
        (p.limits().tool_requests(), p.limits().progress_messages()),
        (8, 2)
    );
    assert!(
        Policy::from_json(format!("{{{base}}}").as_bytes(), Path::new("/"))
            .unwrap()
            .host_tools()
            .is_empty()
    );
    for bad in [r#"{"allow":["a/b"]}"#, r#"{"allow":[""]}"#] {
        let e = Policy::from_json(
            format!(r#"{{{base},"host_tools":{bad}}}"#).as_bytes(),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(matches!(e, PolicyError::BadToolName(_)), "{bad}: {e:?}");
    }
    let e = Policy::from_json(
        format!(r#"{{{base},"host_tools":{{"deny":[]}}}}"#).as_bytes(),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(matches!(e, PolicyError::Syntax(_)), "{e:?}");
    let e = Policy::from_json(
        format!(r#"{{{base},"limits":{{"tool_requests":0}}}}"#).as_bytes(),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PolicyError::LimitOutOfRange {
                name: "tool_requests",
                ..
            }
        ),
        "{e:?}"
    );
    let e = Policy::builder()
        .keys("/k")
        .host_tools(["../x"])
        .build()
        .unwrap_err();
    assert!(
        matches!(e, PolicyError::BadToolName(ref t) if t == "../x"),
        "{e:?}"
    );
}
