//! Finding the host's policy file when the host names none (VT Code's `PluginLoader::new()`).
//!
//! The threat: a loader that finds no policy and carries on with some default — an empty
//! one that refuses everything silently, or a lax one — or that skips a broken policy for
//! the next one it finds. So the search is fixed and short, the first file that exists is
//! the policy (one that then cannot be read or parsed is an error, never a reason to try
//! the next), and finding none is an error naming every place looked at.
//!
//! The environment is passed in ([`PolicyEnv`]), so the search is a plain function a test
//! can drive without touching the process environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::PolicyError;

/// The environment variable naming the policy file.
pub const POLICY_ENV_VAR: &str = "SKILLGATE_POLICY";
/// The system-wide policy file, searched last.
pub const SYSTEM_POLICY_FILE: &str = "/etc/skillgate/policy.json";

/// What the policy search reads from the environment: [`PolicyEnv::from_process`] takes it
/// from this process; tests build it by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEnv {
    /// `SKILLGATE_POLICY`.
    pub skillgate_policy: Option<OsString>,
    /// `XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<OsString>,
    /// `HOME`.
    pub home: Option<OsString>,
    /// The system-wide file ([`SYSTEM_POLICY_FILE`] outside tests).
    pub system_file: PathBuf,
}

impl PolicyEnv {
    /// The values of this process's environment.
    pub fn from_process() -> Self {
        PolicyEnv {
            skillgate_policy: std::env::var_os(POLICY_ENV_VAR),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
            system_file: PathBuf::from(SYSTEM_POLICY_FILE),
        }
    }

    /// The files the search considers, in order:
    ///
    /// 1. `$SKILLGATE_POLICY`, when set and not empty — and then only it: a host told which
    ///    policy to use never falls back to another one;
    /// 2. `$XDG_CONFIG_HOME/skillgate/policy.json`, or `$HOME/.config/skillgate/policy.json`
    ///    when `XDG_CONFIG_HOME` is unset, empty or relative (the XDG rule);
    /// 3. the system file.
    ///
    /// A relative `HOME` is skipped, as XDG skips a relative `XDG_CONFIG_HOME`: it would
    /// name a file relative to wherever the host happens to run.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let set = |v: &Option<OsString>| v.clone().filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(named) = set(&self.skillgate_policy) {
            return vec![named];
        }
        let mut found = Vec::new();
        let config = set(&self.xdg_config_home)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                set(&self.home)
                    .filter(|p| p.is_absolute())
                    .map(|h| h.join(".config"))
            });
        if let Some(config) = config {
            found.push(config.join("skillgate").join("policy.json"));
        }
        found.push(self.system_file.clone());
        found
    }
}

/// The policy file to use: the first of [`PolicyEnv::candidates`] that exists (as any kind
/// of file, a dangling symlink included: reading it is then the error). None existing is
/// [`PolicyError::NotFound`] naming each path looked at; a path whose existence cannot be
/// told (a permission error on its directory) is [`PolicyError::Io`], never skipped.
pub fn find_policy_file(env: &PolicyEnv) -> Result<PathBuf, PolicyError> {
    let searched = env.candidates();
    for path in &searched {
        if exists(path)? {
            return Ok(path.clone());
        }
    }
    Err(PolicyError::NotFound { searched })
}

fn exists(path: &Path) -> Result<bool, PolicyError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        // Absent, or a component on the way is not a directory: nothing there.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::NotADirectory =>
        {
            Ok(false)
        }
        Err(source) => Err(PolicyError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Tree {
        tmp: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            Tree {
                tmp: tempfile::tempdir().unwrap(),
            }
        }
        fn p(&self, rel: &str) -> PathBuf {
            self.tmp.path().join(rel)
        }
        fn file(&self, rel: &str) -> PathBuf {
            let p = self.p(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "{}").unwrap();
            p
        }
        fn env(&self, policy: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> PolicyEnv {
            let abs = |v: &str| {
                if v.is_empty() || !v.starts_with('/') {
                    OsString::from(v)
                } else {
                    self.p(v.trim_start_matches('/')).into_os_string()
                }
            };
            PolicyEnv {
                skillgate_policy: policy.map(abs),
                xdg_config_home: xdg.map(abs),
                home: home.map(abs),
                system_file: self.p("etc/skillgate/policy.json"),
            }
        }
    }

    #[test]
    fn the_env_order_is_skillgate_policy_then_xdg_then_home_then_system() {
        let t = Tree::new();
        let named = t.file("named.json");
        let xdg = t.file("xdg/skillgate/policy.json");
        let home = t.file("home/.config/skillgate/policy.json");
        let system = t.file("etc/skillgate/policy.json");
        let all = t.env(Some("/named.json"), Some("/xdg"), Some("/home"));
        assert_eq!(find_policy_file(&all).unwrap(), named);
        let no_named = t.env(None, Some("/xdg"), Some("/home"));
        assert_eq!(find_policy_file(&no_named).unwrap(), xdg);
        // An empty SKILLGATE_POLICY is unset.
        let empty_named = t.env(Some(""), Some("/xdg"), Some("/home"));
        assert_eq!(find_policy_file(&empty_named).unwrap(), xdg);
        // XDG unset, empty or relative: $HOME/.config.
        for xdg_value in [None, Some(""), Some("relative/dir")] {
            let env = t.env(None, xdg_value, Some("/home"));
            assert_eq!(find_policy_file(&env).unwrap(), home, "{xdg_value:?}");
        }
        // XDG set: $HOME/.config is not searched at all.
        let xdg_without_file = t.env(None, Some("/xdg-empty"), Some("/home"));
        assert_eq!(find_policy_file(&xdg_without_file).unwrap(), system);
        assert_eq!(
            xdg_without_file.candidates(),
            [t.p("xdg-empty/skillgate/policy.json"), system.clone()]
        );
        let nothing_personal = t.env(None, None, None);
        assert_eq!(find_policy_file(&nothing_personal).unwrap(), system);
        // The first that exists wins, even if a later one exists too; a broken file still
        // "exists" (reading it is the caller's error, never a fall-through).
        std::fs::remove_file(&xdg).unwrap();
        std::os::unix::fs::symlink(t.p("nowhere"), &xdg).unwrap();
        assert_eq!(find_policy_file(&no_named).unwrap(), xdg);
    }

    #[test]
    fn a_named_policy_that_is_missing_is_not_found_never_a_fall_through() {
        let t = Tree::new();
        t.file("xdg/skillgate/policy.json");
        t.file("etc/skillgate/policy.json");
        let env = t.env(Some("/missing.json"), Some("/xdg"), Some("/home"));
        let err = find_policy_file(&env).unwrap_err();
        assert!(
            matches!(&err, PolicyError::NotFound { searched } if searched == &[t.p("missing.json")]),
            "{err:?}"
        );
    }

    #[test]
    fn none_found_names_every_path_looked_at() {
        let t = Tree::new();
        let env = t.env(None, Some("/xdg"), Some("/home"));
        let err = find_policy_file(&env).unwrap_err();
        let expected = vec![
            t.p("xdg/skillgate/policy.json"),
            t.p("etc/skillgate/policy.json"),
        ];
        assert!(
            matches!(&err, PolicyError::NotFound { searched } if searched == &expected),
            "{err:?}"
        );
        let shown = err.to_string();
        for p in &expected {
            assert!(shown.contains(&p.display().to_string()), "{shown}");
        }
        // Without XDG, the home candidate is the one named.
        let env = t.env(None, None, Some("/home"));
        let err = find_policy_file(&env).unwrap_err();
        assert!(
            matches!(&err, PolicyError::NotFound { searched }
                if searched == &[t.p("home/.config/skillgate/policy.json"), t.p("etc/skillgate/policy.json")]),
            "{err:?}"
        );
        // Control: the same search finds a file once one exists.
        let system = t.file("etc/skillgate/policy.json");
        assert_eq!(find_policy_file(&env).unwrap(), system);
    }

    #[test]
    fn a_path_that_cannot_be_checked_is_an_error_not_a_skip() {
        // A regular file where a directory should be is "not there"; anything else the
        // kernel refuses (here a name too long) is an error naming the path.
        let t = Tree::new();
        t.file("home");
        t.file("etc/skillgate/policy.json");
        let env = t.env(None, None, Some("/home"));
        assert!(find_policy_file(&env).is_ok());
        let long = format!("/{}", "x".repeat(300));
        let env = t.env(None, Some(&long), None);
        let err = find_policy_file(&env).unwrap_err();
        assert!(matches!(err, PolicyError::Io { .. }), "{err:?}");
    }
}
