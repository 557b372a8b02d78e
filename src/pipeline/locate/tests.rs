//! The locate stage attacked: escapes, symlinks (at the end, in the middle, swapped in
//! after the open), FIFOs, oversize and changing files, bad names and unbounded trees, in
//! both resolvers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use rustix::fs::FileType;
use std::fs;
use std::os::unix::fs::symlink;
use std::sync::mpsc;
use std::time::Duration;

pub(in crate::pipeline) const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

/// A temporary tree:
/// `trusted/plugin/{lib.so, plugin.json, sub/data.txt, sub/deeper/x}`, `outside/`.
pub(in crate::pipeline) struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    pub(in crate::pipeline) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let plugin = tmp.path().join("trusted/plugin");
        fs::create_dir_all(plugin.join("sub/deeper")).unwrap();
        fs::write(plugin.join("lib.so"), b"\x7fELF library bytes").unwrap();
        fs::write(plugin.join("plugin.json"), b"{\"name\":\"demo\"}").unwrap();
        fs::write(plugin.join("sub/data.txt"), b"data").unwrap();
        fs::write(plugin.join("sub/deeper/x"), b"x").unwrap();
        fs::create_dir_all(tmp.path().join("outside/evil")).unwrap();
        fs::write(tmp.path().join("outside/evil/lib.so"), b"evil").unwrap();
        Self { tmp }
    }

    pub(in crate::pipeline) fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn roots(&self) -> Vec<TrustedRoot> {
        vec![TrustedRoot::open(&self.p("trusted")).unwrap()]
    }

    pub(in crate::pipeline) fn plugin(&self, r: Resolver) -> PluginDir {
        locate_with(&self.roots(), &self.p("trusted/plugin"), r).unwrap()
    }
}

#[test]
fn plugin_dir_beneath_root_is_found() {
    let fx = Fixture::new();
    for r in RESOLVERS {
        let dir = fx.plugin(r);
        let canonical = fs::canonicalize(fx.p("trusted/plugin")).unwrap();
        assert_eq!(dir.path(), canonical, "{r:?}");
    }
}

#[test]
fn relative_path_and_dot_components_are_accepted() {
    let fx = Fixture::new();
    let roots = fx.roots();
    for r in RESOLVERS {
        let spelled = fx.p("trusted/./plugin/");
        assert!(locate_with(&roots, &spelled, r).is_ok(), "{r:?}");
    }
}

#[test]
fn dotdot_out_of_root_escapes() {
    let fx = Fixture::new();
    let roots = fx.roots();
    for r in RESOLVERS {
        let err = locate_with(&roots, &fx.p("trusted/../outside/evil"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::EscapesRoot { .. }),
            "{r:?}: {err:?}"
        );
        // Even a `..` that would stay beneath the root is refused.
        let err = locate_with(&roots, &fx.p("trusted/plugin/../plugin"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::EscapesRoot { .. }),
            "{r:?}: {err:?}"
        );
    }
}

#[test]
fn path_under_no_root_is_outside() {
    let fx = Fixture::new();
    let roots = fx.roots();
    for r in RESOLVERS {
        let err = locate_with(&roots, &fx.p("outside/evil"), r).unwrap_err();
        match err {
            LocateError::OutsideTrustedRoots { roots: listed, .. } => {
                assert_eq!(listed, vec![roots[0].path.to_path_buf()]);
            }
            other => panic!("{r:?}: {other:?}"),
        }
    }
}

#[test]
fn a_root_itself_is_a_plugin_dir() {
    // VT Code trusts a skill's own directory and loads it: the root is the plugin.
    let fx = Fixture::new();
    let roots = fx.roots();
    for r in RESOLVERS {
        let dir = locate_with(&roots, &fx.p("trusted"), r).unwrap();
        assert_eq!(dir.path(), fs::canonicalize(fx.p("trusted")).unwrap());
        // Spelled as the root is, with no trailing separator (messages name it so).
        assert_eq!(
            dir.path().as_os_str(),
            fs::canonicalize(fx.p("trusted")).unwrap().as_os_str()
        );
        // Spelled with a trailing slash or a `.`, too.
        assert!(locate_with(&roots, &fx.p("trusted/"), r).is_ok(), "{r:?}");
        assert!(locate_with(&roots, &fx.p("trusted/."), r).is_ok(), "{r:?}");
    }
    // A plugin directory trusted as its own root reads exactly as it does beneath a parent.
    let own = vec![TrustedRoot::open(&fx.p("trusted/plugin")).unwrap()];
    for r in RESOLVERS {
        let as_root = locate_with(&own, &fx.p("trusted/plugin"), r).unwrap();
        let beneath = fx.plugin(r);
        assert_eq!(as_root.path(), beneath.path());
        assert_eq!(
            as_root.list_files(100, 8).unwrap(),
            beneath.list_files(100, 8).unwrap()
        );
        assert_eq!(
            as_root.read_small("plugin.json", 1 << 10).unwrap(),
            Some(b"{\"name\":\"demo\"}".to_vec())
        );
    }
}

#[test]
fn a_root_as_plugin_dir_keeps_every_check() {
    let fx = Fixture::new();
    let plugin = fx.p("trusted/plugin");
    symlink(fx.p("outside/evil/lib.so"), plugin.join("evil.so")).unwrap();
    symlink(fx.p("outside/evil"), plugin.join("escape")).unwrap();
    symlink(&plugin, fx.p("outside/alias")).unwrap();
    let own = vec![TrustedRoot::open(&plugin).unwrap()];
    for r in RESOLVERS {
        let dir = locate_with(&own, &plugin, r).unwrap();
        // A symlinked file, a symlinked subdirectory, a `..` or absolute name: refused as
        // beneath any root.
        let err = dir.open_file("evil.so", 1 << 20).unwrap_err();
        assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
        let err = dir.open_file("escape/lib.so", 1 << 20).unwrap_err();
        assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
        let err = dir.list_files(100, 8).unwrap_err();
        assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
        for name in ["../outside/evil/lib.so", "/etc/passwd"] {
            let err = dir.open_file(name, 1 << 20).unwrap_err();
            assert!(
                matches!(err, LocateError::InvalidName { .. }),
                "{r:?} {name}: {err:?}"
            );
        }
        // Leaving the root-plugin by `..`, or reaching it through a symlink outside it.
        let err = locate_with(&own, &plugin.join("../../outside/evil"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::EscapesRoot { .. }),
            "{r:?}: {err:?}"
        );
        let err = locate_with(&own, &plugin.join(".."), r).unwrap_err();
        assert!(
            matches!(err, LocateError::EscapesRoot { .. }),
            "{r:?}: {err:?}"
        );
        let err = locate_with(&own, &fx.p("outside/alias"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::OutsideTrustedRoots { .. }),
            "{r:?}: {err:?}"
        );
        // Its parent is not trusted by it.
        let err = locate_with(&own, &fx.p("trusted"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::OutsideTrustedRoots { .. }),
            "{r:?}: {err:?}"
        );
        // Control: a plain file in it opens.
        assert!(dir.open_file("lib.so", 1 << 20).is_ok(), "{r:?}");
    }
}

#[test]
fn a_symlink_named_as_root_plugin_is_not_followed() {
    // A symlink outside the roots pointing at a root: its last component is never
    // resolved, so naming it does not reach the root-plugin.
    let fx = Fixture::new();
    symlink(fx.p("trusted"), fx.p("outside/root_alias")).unwrap();
    let roots = fx.roots();
    for r in RESOLVERS {
        let err = locate_with(&roots, &fx.p("outside/root_alias"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::OutsideTrustedRoots { .. }),
            "{r:?}: {err:?}"
        );
    }
}

#[test]
fn missing_and_non_directory_plugin_paths() {
    let fx = Fixture::new();
    let roots = fx.roots();
    for r in RESOLVERS {
        let err = locate_with(&roots, &fx.p("trusted/nope"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::NotFound { .. }),
            "{r:?}: {err:?}"
        );
        let err = locate_with(&roots, &fx.p("trusted/plugin/lib.so"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::NotADirectory { .. }),
            "{r:?}: {err:?}"
        );
        let err = locate_with(&roots, &fx.p("trusted/plugin/lib.so/x"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::NotADirectory { .. }),
            "{r:?}: {err:?}"
        );
    }
}

#[test]
fn symlinked_plugin_dir_is_refused() {
    let fx = Fixture::new();
    symlink(fx.p("outside/evil"), fx.p("trusted/to_outside")).unwrap();
    symlink("plugin", fx.p("trusted/to_inside")).unwrap();
    fs::create_dir(fx.p("trusted/nest")).unwrap();
    symlink("../plugin", fx.p("trusted/nest/up")).unwrap();
    let roots = fx.roots();
    for r in RESOLVERS {
        for spelled in ["trusted/to_outside", "trusted/to_inside", "trusted/nest/up"] {
            let err = locate_with(&roots, &fx.p(spelled), r).unwrap_err();
            assert!(
                matches!(err, LocateError::Symlink { .. }),
                "{r:?} {spelled}: {err:?}"
            );
        }
        // A symlink on the way to the plugin directory, too.
        let err = locate_with(&roots, &fx.p("trusted/to_inside/sub"), r).unwrap_err();
        assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
    }
}

#[test]
fn symlink_from_outside_into_root_is_not_followed_at_the_end() {
    // A symlink outside the roots whose target is a plugin dir: the last component is
    // never resolved, so this is outside the roots.
    let fx = Fixture::new();
    symlink(fx.p("trusted/plugin"), fx.p("outside/alias")).unwrap();
    let roots = fx.roots();
    for r in RESOLVERS {
        let err = locate_with(&roots, &fx.p("outside/alias"), r).unwrap_err();
        assert!(
            matches!(err, LocateError::OutsideTrustedRoots { .. }),
            "{r:?}: {err:?}"
        );
    }
}

#[test]
fn symlinked_prefix_outside_roots_still_works() {
    let fx = Fixture::new();
    symlink(fx.p("trusted"), fx.p("outside/via")).unwrap();
    let roots = fx.roots();
    for r in RESOLVERS {
        let dir = locate_with(&roots, &fx.p("outside/via/plugin"), r).unwrap();
        assert_eq!(
            dir.path(),
            fs::canonicalize(fx.p("trusted/plugin")).unwrap()
        );
    }
}

#[test]
fn root_configured_through_a_symlink_matches_both_spellings() {
    let fx = Fixture::new();
    symlink(fx.p("trusted"), fx.p("root_link")).unwrap();
    let roots = vec![TrustedRoot::open(&fx.p("root_link")).unwrap()];
    assert_eq!(roots[0].path, fs::canonicalize(fx.p("trusted")).unwrap());
    for r in RESOLVERS {
        assert!(locate_with(&roots, &fx.p("root_link/plugin"), r).is_ok());
        assert!(locate_with(&roots, &fx.p("trusted/plugin"), r).is_ok());
    }
}

#[test]
fn symlinked_file_is_refused() {
    let fx = Fixture::new();
    symlink(fx.p("outside/evil/lib.so"), fx.p("trusted/plugin/evil.so")).unwrap();
    symlink("lib.so", fx.p("trusted/plugin/alias.so")).unwrap();
    symlink("sub", fx.p("trusted/plugin/subalias")).unwrap();
    for r in RESOLVERS {
        let dir = fx.plugin(r);
        for rel in ["evil.so", "alias.so", "subalias/data.txt"] {
            let err = dir.open_file(rel, 1 << 20).unwrap_err();
            assert!(
                matches!(err, LocateError::Symlink { .. }),
                "{r:?} {rel}: {err:?}"
            );
        }
        let err = dir.read_small("alias.so", 1 << 20).unwrap_err();
        assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
        let err = dir.list_files(100, 8).unwrap_err();
        assert!(matches!(err, LocateError::Symlink { .. }), "{r:?}: {err:?}");
    }
}

#[test]
fn symlink_deep_in_tree_fails_listing() {
    let fx = Fixture::new();
    symlink("/etc/passwd", fx.p("trusted/plugin/sub/deeper/pw")).unwrap();
    for r in RESOLVERS {
        match fx.plugin(r).list_files(100, 8).unwrap_err() {
            LocateError::Symlink { path } => assert!(path.ends_with("sub/deeper/pw")),
            other => panic!("{r:?}: {other:?}"),
        }
    }
}

#[test]
fn fifo_is_refused_without_hanging() {
    let fx = Fixture::new();
    rustix::fs::mknodat(
        CWD,
        fx.p("trusted/plugin/pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for r in RESOLVERS {
        let dir = fx.plugin(r);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let open = dir.open_file("pipe", 1 << 20).map(|_| ());
            let small = dir.read_small("pipe", 1 << 20).map(|_| ());
            let list = dir.list_files(100, 8).map(|_| ());
            let _ = tx.send((open, small, list));
        });
        let (open, small, list) = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{r:?}: opening a FIFO blocked"));
        for result in [open, small, list] {
            assert!(
                matches!(
                    result,
                    Err(LocateError::NotRegularFile {
                        kind: FileKind::Fifo,
                        ..
                    })
                ),
                "{r:?}: {result:?}"
            );
        }
    }
}

#[test]
fn directory_is_not_a_regular_file() {
    let fx = Fixture::new();
    for r in RESOLVERS {
        let err = fx.plugin(r).open_file("sub", 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                LocateError::NotRegularFile {
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{r:?}: {err:?}"
        );
    }
}

#[test]
fn oversize_is_refused_before_reading() {
    let fx = Fixture::new();
    for r in RESOLVERS {
        let dir = fx.plugin(r);
        let err = dir.open_file("lib.so", 4).unwrap_err();
        assert!(
            matches!(
                err,
                LocateError::TooLarge {
                    size: 18,
                    cap: 4,
                    ..
                }
            ),
            "{r:?}: {err:?}"
        );
        let err = dir.read_small("plugin.json", 3).unwrap_err();
        assert!(
            matches!(err, LocateError::TooLarge { .. }),
            "{r:?}: {err:?}"
        );
        // A smaller cap at reading time than at opening is honoured too.
        let file = dir.open_file("lib.so", 100).unwrap();
        let err = file.read_all(4, |_| Ok(())).unwrap_err();
        assert!(
            matches!(err, LocateError::TooLarge { .. }),
            "{r:?}: {err:?}"
        );
    }
}

#[test]
fn invalid_names_are_refused() {
    let fx = Fixture::new();
    let dir = fx.plugin(Resolver::Openat2);
    let long = "a".repeat(MAX_COMPONENT_LEN + 1);
    for bad in [
        "",
        "/etc/passwd",
        "../outside",
        "sub/../lib.so",
        "./lib.so",
        "sub//data.txt",
        "sub/",
        "a\0b",
        long.as_str(),
    ] {
        let err = dir.open_file(bad, 1 << 20).unwrap_err();
        assert!(
            matches!(err, LocateError::InvalidName { .. }),
            "{bad:?}: {err:?}"
        );
    }
    let err = dir.read_small("sub/data.txt", 1 << 20).unwrap_err();
    assert!(matches!(err, LocateError::InvalidName { .. }), "{err:?}");
}

#[test]
fn dotdot_in_resolver_is_exdev_in_both_modes() {
    let fx = Fixture::new();
    let dir = fx.plugin(Resolver::Openat2);
    for r in RESOLVERS {
        let err =
            open_beneath(r, dir.fd.as_fd(), Path::new("../plugin"), OFlags::RDONLY).unwrap_err();
        assert_eq!(err, Errno::XDEV, "{r:?}");
        let err = open_beneath(r, dir.fd.as_fd(), Path::new("/etc"), OFlags::RDONLY).unwrap_err();
        assert_eq!(err, Errno::XDEV, "{r:?}");
    }
}

#[test]
fn read_small_reads_or_reports_absence() {
    let fx = Fixture::new();
    for r in RESOLVERS {
        let dir = fx.plugin(r);
        let bytes = dir.read_small("plugin.json", 1024).unwrap();
        assert_eq!(bytes.as_deref(), Some(&b"{\"name\":\"demo\"}"[..]), "{r:?}");
        assert!(
            dir.read_small("plugin.sig", 1024).unwrap().is_none(),
            "{r:?}"
        );
    }
}

#[test]
fn nested_files_are_listed_sorted() {
    let fx = Fixture::new();
    fs::write(fx.p("trusted/plugin/a.txt"), b"a").unwrap();
    fs::create_dir(fx.p("trusted/plugin/empty")).unwrap();
    for r in RESOLVERS {
        let files = fx.plugin(r).list_files(100, 8).unwrap();
        assert_eq!(
            files,
            [
                "a.txt",
                "lib.so",
                "plugin.json",
                "sub/data.txt",
                "sub/deeper/x"
            ],
            "{r:?}"
        );
    }
}

#[test]
fn listing_is_bounded() {
    let fx = Fixture::new();
    for r in RESOLVERS {
        let dir = fx.plugin(r);
        // 4 files: lib.so, plugin.json, sub/data.txt, sub/deeper/x; 2 directories.
        assert!(dir.list_files(4, 8).is_ok(), "{r:?}");
        let err = dir.list_files(3, 8).unwrap_err();
        assert!(
            matches!(err, LocateError::TooManyEntries { max: 3, .. }),
            "{r:?}: {err:?}"
        );
        // More directories than files is refused too.
        for i in 0..5 {
            fs::create_dir(fx.p(&format!("trusted/plugin/empty{r:?}{i}"))).unwrap();
        }
        let err = dir.list_files(4, 8).unwrap_err();
        assert!(
            matches!(err, LocateError::TooManyEntries { max: 4, .. }),
            "{r:?}: {err:?}"
        );
        for i in 0..5 {
            fs::remove_dir(fx.p(&format!("trusted/plugin/empty{r:?}{i}"))).unwrap();
        }
        assert!(dir.list_files(100, 3).is_ok(), "{r:?}");
        let err = dir.list_files(100, 2).unwrap_err();
        assert!(
            matches!(err, LocateError::TooDeep { max: 2, .. }),
            "{r:?}: {err:?}"
        );
    }
}

#[test]
fn swapping_the_directory_after_locate_changes_nothing() {
    let fx = Fixture::new();
    for r in RESOLVERS {
        let dir = fx.plugin(r);
        let moved = fx.p(&format!("moved-{r:?}"));
        fs::rename(fx.p("trusted/plugin"), &moved).unwrap();
        symlink(fx.p("outside/evil"), fx.p("trusted/plugin")).unwrap();
        let bytes = dir.read_small("lib.so", 1024).unwrap().unwrap();
        assert_eq!(bytes, b"\x7fELF library bytes", "{r:?}");
        fs::remove_file(fx.p("trusted/plugin")).unwrap();
        fs::rename(&moved, fx.p("trusted/plugin")).unwrap();
    }
}

/// The listing trusts a recorded `d_type` and asks `lstat` only where none was recorded.
#[test]
fn an_entry_without_a_recorded_type_is_lstat_ed() {
    let symlink_mode = FileType::Symlink.as_raw_mode();
    let fifo_mode = FileType::Fifo.as_raw_mode();
    let kind = entry_kind(FileType::Unknown, || Ok(symlink_mode)).unwrap();
    assert_eq!(kind, FileKind::Symlink);
    let kind = entry_kind(FileType::Unknown, || Ok(fifo_mode)).unwrap();
    assert_eq!(kind, FileKind::Fifo);
    let err = entry_kind(FileType::Unknown, || {
        Err(LocateError::NotFound {
            path: PathBuf::from("gone"),
        })
    })
    .unwrap_err();
    assert!(matches!(err, LocateError::NotFound { .. }), "{err:?}");
    let mut asked = false;
    let kind = entry_kind(FileType::Symlink, || {
        asked = true;
        Ok(FileType::RegularFile.as_raw_mode())
    })
    .unwrap();
    assert_eq!(kind, FileKind::Symlink);
    assert!(!asked, "a recorded type needs no lstat");
}
