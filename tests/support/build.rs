//! Builds test plugins for skillgate's integration tests.
//!
//! Include it with `#[path = "support/build.rs"] mod build;` from a test file, or
//! `pub mod build;` from `tests/support/mod.rs`.
//!
//! The C test plugins live in `tests/plugins/<name>.c` (one behaviour each, sharing
//! `tests/plugins/common.h`); the examples in `examples/echo-plugin/` (Rust) and
//! `examples/c-echo-plugin/` (C). Every build panics with the compiler's stderr on failure, so
//! a broken fixture fails the test that needed it with a readable message.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags every C plugin is built with: a position-independent shared object, warning-free,
/// with full RELRO (`-z now` + `-z relro`) and a non-executable stack, so a good plugin passes
/// the loader's ELF hardening checks.
pub const C_FLAGS: &[&str] = &[
    "-shared",
    "-fPIC",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,-z,now",
    "-Wl,-z,relro",
    "-Wl,-z,noexecstack",
];

/// Flags the C++ example (`examples/cpp-plugin`) is built with: its Makefile's `CXXFLAGS`
/// and `HARDENING` (a test checks the Makefile still says so).
pub const CXX_HARDENED_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-shared",
    "-fPIC",
    "-Wl,-z,relro,-z,now",
    "-Wl,-z,noexecstack",
];

/// A shared object with no hardening flag, as an author who never read the policy builds
/// one (`cc -shared -fPIC`, `g++ -shared -fPIC`): Debian's toolchain links it with
/// partial RELRO.
pub const PLAIN_FLAGS: &[&str] = &["-shared", "-fPIC"];

/// The skillgate crate root (`CARGO_MANIFEST_DIR`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The source of the C test plugin `name`: `<repo>/tests/plugins/<name>.c`.
pub fn test_plugin_src(name: &str) -> PathBuf {
    repo_root()
        .join("tests")
        .join("plugins")
        .join(format!("{name}.c"))
}

/// The Rust echo example's source: `<repo>/examples/echo-plugin/src/lib.rs`.
pub fn echo_plugin_src() -> PathBuf {
    repo_root()
        .join("examples")
        .join("echo-plugin")
        .join("src")
        .join("lib.rs")
}

/// The C echo example's source: `<repo>/examples/c-echo-plugin/echo.c`.
pub fn c_echo_plugin_src() -> PathBuf {
    repo_root()
        .join("examples")
        .join("c-echo-plugin")
        .join("echo.c")
}

/// Compiles the C plugin `src` into the shared library `out` with `cc` and [`C_FLAGS`], and
/// returns `out`.
///
/// Each define is passed as `-DNAME=VALUE` with VALUE verbatim, so string macros need their
/// quotes: `&[("PLUGIN_NAME", "\"echo\""), ("PLUGIN_VERSION", "\"1.0.0\""), ("HUGE_BYTES",
/// "1024")]`. `extra_args` go after the source file (e.g. `-lz`). Missing parent directories
/// of `out` are created. Panics, with cc's stderr, if the build fails.
pub fn build_c_plugin(
    src: &Path,
    out: &Path,
    defines: &[(&str, &str)],
    extra_args: &[&str],
) -> PathBuf {
    create_parent(out);
    let mut cmd = Command::new("cc");
    cmd.args(C_FLAGS);
    for (name, value) in defines {
        cmd.arg(format!("-D{name}={value}"));
    }
    cmd.arg("-o").arg(out).arg(src).args(extra_args);
    run(cmd, "cc", src);
    out.to_path_buf()
}

/// The C++ example's source: `<repo>/examples/cpp-plugin/stats.cpp`.
pub fn cpp_plugin_src() -> PathBuf {
    repo_root()
        .join("examples")
        .join("cpp-plugin")
        .join("stats.cpp")
}

/// Compiles `src` (C or C++) into the shared library `out` with `compiler` (`cc`, `g++`) and
/// exactly `flags`, and returns `out`. Panics, with the compiler's stderr, if the build fails.
pub fn build_with_flags(compiler: &str, flags: &[&str], src: &Path, out: &Path) -> PathBuf {
    create_parent(out);
    let mut cmd = Command::new(compiler);
    cmd.args(flags).arg("-o").arg(out).arg(src);
    run(cmd, compiler, src);
    out.to_path_buf()
}

/// Compiles the Rust plugin `src` (a single-file crate without dependencies) into the
/// `cdylib` `out` with `rustc --edition 2021 --crate-type cdylib -C opt-level=1`, and returns
/// `out`. Uses `$RUSTC` when set, else `rustc`. The crate name is derived from `out`'s file
/// name (without a `lib` prefix), so any source file name works. Panics, with rustc's stderr,
/// if the build fails.
pub fn build_rust_plugin(src: &Path, out: &Path) -> PathBuf {
    create_parent(out);
    let rustc = std::env::var_os("RUSTC")
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| OsString::from("rustc"));
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "--edition",
        "2021",
        "--crate-type",
        "cdylib",
        "-C",
        "opt-level=1",
    ])
    .arg("--crate-name")
    .arg(crate_name_for(out))
    .arg("-o")
    .arg(out)
    .arg(src);
    run(cmd, &rustc.to_string_lossy(), src);
    out.to_path_buf()
}

/// A valid crate name from a library path: `/x/libmy-plugin.so` → `my_plugin`.
fn crate_name_for(out: &Path) -> String {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_prefix("lib").unwrap_or(&stem);
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert_str(0, "plugin_");
    }
    name
}

fn create_parent(out: &Path) {
    let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return;
    };
    if let Err(e) = std::fs::create_dir_all(parent) {
        panic!("cannot create {}: {e}", parent.display());
    }
}

fn run(mut cmd: Command, tool: &str, src: &Path) {
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => panic!("cannot run {tool} to build {}: {e}", src.display()),
    };
    assert!(
        output.status.success(),
        "{tool} failed ({}) building {}\ncommand: {cmd:?}\n--- stderr ---\n{}",
        output.status,
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds the separate cargo project at `project` (relative to the repository root) with
/// `cargo build --locked --quiet` plus `args`, into `target/<target>`, and returns the
/// profile directory holding its outputs (`debug`, or `release` when `args` asks for it).
/// `--locked`: the project's committed `Cargo.lock` is used as it is, never rewritten. It
/// names crates the workspace's own build does not (`anyhow`, other versions of some
/// dependencies), so on a fresh machine cargo fetches them from the registry first; an
/// earlier `--offline` passed only where an earlier build had fetched them.
pub fn build_cargo_project(project: &str, args: &[&str], target: &str) -> PathBuf {
    let root = repo_root();
    let target = root.join("target").join(target);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--locked", "--quiet"])
        .args(args)
        .arg("--manifest-path")
        .arg(root.join(project).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build of {project} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile = if args.contains(&"--release") {
        "release"
    } else {
        "debug"
    };
    target.join(profile)
}
