//! The library's layering, checked on its source: imports point down the layers and no
//! module imports one that (directly or not) imports it back.
//!
//! The layers, bottom to top, as README's "Layout" section describes them:
//!
//! 0. `base` (formats and primitives), `danger` (the weakening knobs, plain data) and
//!    `audit` (one function per audit event, fields taken as text);
//! 1. `trust` (keys, the trust store, signature files, revocation, version marks);
//! 2. `pipeline` (the stages: locate, verify, inspect, load);
//! 3. `sandbox` (the plan, Landlock, seccomp);
//! 4. `exec` (the thread executor and the worker, both sides);
//! 5. `policy` and `error` (each composes what the stages own);
//! 6. `gate`, `compat`, `sign`, `fuzzing`, `live`, `fleet` (what hosts and authors call).
//!
//! An import is any `crate::a::b` path outside comments and outside a file's unit tests,
//! and any `super::x` path. The check is textual on purpose: it needs no compiler
//! internals, and a path in code is exactly what a reader follows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of a top-level module, or `None` for a name this test does not know (which
/// fails the test: a new top-level module must be placed in a layer here).
fn layer(top: &str) -> Option<u8> {
    Some(match top {
        "base" | "danger" | "audit" => 0,
        "trust" => 1,
        "pipeline" => 2,
        "sandbox" => 3,
        "exec" => 4,
        "policy" | "error" => 5,
        "gate" | "compat" | "sign" | "fuzzing" | "live" | "fleet" => 6,
        _ => return None,
    })
}

/// Every library module (`a::b` for `src/a/b.rs` and `src/a/b/mod.rs`) and its file;
/// `lib.rs` and the binaries are not modules of a layer.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue;
                }
                walk(&path, &format!("{prefix}{name}::"), out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let module = match stem {
                    "lib" if prefix.is_empty() => continue,
                    "mod" => prefix.trim_end_matches("::").to_owned(),
                    _ => format!("{prefix}{stem}"),
                };
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut out,
    );
    out
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests`.
fn code(path: &Path) -> String {
    strip(&std::fs::read_to_string(path).unwrap())
}

/// `text` without comment lines and without its `#[cfg(test)] mod tests`.
fn strip(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths following `prefix` in `code`, as `a::b::c` strings.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        out.push(rest[..end].trim_end_matches(':'));
    }
    out
}

/// The longest known module that `path` (`a::b::Item`) names, if any.
fn resolve(known: &BTreeMap<String, PathBuf>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|m| known.contains_key(m))
}

/// The import graph among library modules.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let known = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &known {
        let code = code(path);
        let entry = edges.entry(module.clone()).or_default();
        for p in paths_after(&code, "crate::") {
            if let Some(to) = resolve(&known, p) {
                // A module naming its own children (`crate::sandbox::seccomp` inside
                // `sandbox`) is its own business, not a layer crossing.
                if to != *module && !to.starts_with(&format!("{module}::")) {
                    entry.insert(to);
                }
            }
        }
        let parent = module.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
        for p in paths_after(&code, "super::") {
            let full = if parent.is_empty() {
                p.to_owned()
            } else {
                format!("{parent}::{p}")
            };
            if let Some(to) = resolve(&known, &full).filter(|to| to != module) {
                entry.insert(to);
            }
        }
    }
    edges
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// Every import in `edges` that points up a layer, as `from (layer a) imports to (layer b)`.
fn upward(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in edges {
        let Some(from_layer) = layer(top(from)) else {
            panic!("module {from} is in no layer; place it in tests/layers.rs and README");
        };
        for to in tos {
            let to_layer = layer(top(to)).unwrap();
            if to_layer > from_layer {
                out.push(format!(
                    "{from} (layer {from_layer}) imports {to} (layer {to_layer})"
                ));
            }
        }
    }
    out
}

#[test]
fn every_import_points_down_or_within_its_layer() {
    let found = upward(&graph());
    assert!(
        found.is_empty(),
        "imports pointing up:\n{}",
        found.join("\n")
    );
}

/// Every circle the depth-first search meets, as `a -> b -> a`.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    // Colours: grey (false) while on the stack, black (true) when done.
    fn visit<'a>(
        m: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<&'a str, bool>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        colour.insert(m, false);
        stack.push(m);
        for to in edges.get(m).into_iter().flatten() {
            match colour.get(to.as_str()) {
                Some(false) => {
                    let at = stack.iter().position(|s| s == to).unwrap();
                    cycles.push(format!("{} -> {to}", stack[at..].join(" -> ")));
                }
                Some(true) => {}
                None => visit(to, edges, colour, stack, cycles),
            }
        }
        stack.pop();
        colour.insert(m, true);
    }
    let mut colour = BTreeMap::new();
    let mut out = Vec::new();
    for m in edges.keys() {
        if !colour.contains_key(m.as_str()) {
            visit(m, edges, &mut colour, &mut Vec::new(), &mut out);
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let found = cycles(&graph());
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

/// The check can fail: a graph with a circle and an upward import is caught by the same
/// functions the real checks use.
#[test]
fn the_checker_sees_a_circle_and_an_upward_import() {
    let code = strip(
        "use crate::gate::Gate;\nfn f() { super::keys::KeyId::new(); }\n  // crate::exec\n\
         #[cfg(test)]\nmod tests {\n    use crate::sign;\n}\n",
    );
    assert_eq!(paths_after(&code, "crate::"), vec!["gate::Gate"]);
    assert_eq!(paths_after(&code, "super::"), vec!["keys::KeyId::new"]);
    assert!(paths_after("my_crate::x", "crate::").is_empty());
    let known: BTreeMap<String, PathBuf> = ["gate", "trust::keys"]
        .iter()
        .map(|m| (m.to_string(), PathBuf::new()))
        .collect();
    assert_eq!(resolve(&known, "gate::Gate").as_deref(), Some("gate"));
    assert_eq!(
        resolve(&known, "trust::keys::KeyId::new").as_deref(),
        Some("trust::keys")
    );
    let imports = |pairs: &[(&str, &str)]| -> BTreeMap<String, BTreeSet<String>> {
        pairs.iter().fold(BTreeMap::new(), |mut g, (from, to)| {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            g
        })
    };
    assert_eq!(
        upward(&imports(&[
            ("trust::keys", "gate"),
            ("gate", "trust::keys")
        ])),
        vec!["trust::keys (layer 1) imports gate (layer 6)".to_owned()]
    );
    assert!(upward(&imports(&[("policy", "error"), ("error", "policy")])).is_empty());
    let edges: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
            .iter()
            .fold(BTreeMap::new(), |mut g, (from, to)| {
                g.entry(from.to_string())
                    .or_default()
                    .insert(to.to_string());
                g
            });
    assert_eq!(cycles(&edges), vec!["a -> b -> c -> a".to_owned()]);
}

/// No library file over about 700 lines unless its module documentation says it is one
/// concept (the words "one concept" in its first comment block), and why.
#[test]
fn long_files_say_why_they_are_one_concept() {
    let mut long = Vec::new();
    for (module, path) in modules() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = text.lines().count();
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join(" ");
        if lines > 760 && !doc.to_lowercase().contains("one concept") {
            long.push(format!("{module}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "long files without a reason:\n{}",
        long.join("\n")
    );
}
