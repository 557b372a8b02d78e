//! Plugin references: where a release lives, parsed strictly before anything is fetched.
//!
//! Two forms:
//!
//! - `oci://REGISTRY/REPO:TAG` or `oci://REGISTRY/REPO@sha256:HEX` — a registry
//!   (`host`, `host:port`, `[v6]:port`), a repository path (lowercase components of
//!   `[a-z0-9]` joined by single `.`, `_`, `__` or `-`, separated by `/`), and exactly one
//!   of a tag or a digest;
//! - `oci-layout:DIR:TAG` or `oci-layout:DIR@sha256:HEX` — an OCI image-layout directory
//!   (`oci-layout`, `index.json`, `blobs/sha256/…`) as `skillgate mirror` writes one; the
//!   tag is what follows the last `:` after the last `/` of the rest, so `DIR` may hold `:`
//!   in earlier components but its last component may not.
//!
//! Hand-written rather than `oci_spec::distribution::Reference::from_str`: that parser
//! fills in Docker Hub defaults (`docker.io`, `library/`, `:latest`) that a host pinning a
//! release must not get by accident, and it knows nothing of layout directories. The rules
//! are the distribution spec's grammar, narrowed (one digest algorithm, no default
//! registry, no default tag). Fuzzed by the `oci_reference` target.

use std::fmt;
use std::path::PathBuf;

use crate::error::ReferenceError;

/// The longest reference accepted, in bytes.
pub const MAX_REFERENCE_LEN: usize = 1024;
/// The longest repository path accepted, in bytes (the distribution spec's bound).
const MAX_REPOSITORY_LEN: usize = 255;
/// The longest tag, in bytes (the distribution spec's bound).
const MAX_TAG_LEN: usize = 128;

/// Which release of a repository: a tag (resolved to a digest before anything else is
/// read) or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A tag, which the registry may move.
    Tag(String),
    /// `sha256:` and 64 lowercase hex digits: the manifest's digest.
    Digest(String),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Tag(t) => write!(f, ":{t}"),
            Selector::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// A parsed plugin reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A release in a registry.
    Registry {
        /// `host` or `host:port` (`[v6]:port` for an IPv6 literal).
        registry: String,
        /// The repository path.
        repository: String,
        /// The tag or digest.
        version: Selector,
    },
    /// A release in an OCI image-layout directory.
    Layout {
        /// The directory.
        dir: PathBuf,
        /// The tag (the `org.opencontainers.image.ref.name` annotation in `index.json`)
        /// or digest.
        version: Selector,
    },
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Registry {
                registry,
                repository,
                version,
            } => write!(f, "oci://{registry}/{repository}{version}"),
            Reference::Layout { dir, version } => {
                write!(f, "oci-layout:{}{version}", dir.display())
            }
        }
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl Reference {
    /// The tag or digest.
    pub fn version(&self) -> &Selector {
        match self {
            Reference::Registry { version, .. } | Reference::Layout { version, .. } => version,
        }
    }

    /// The same release named by `digest` instead of its tag.
    pub fn with_digest(&self, digest: &str) -> Reference {
        let version = Selector::Digest(digest.to_owned());
        match self {
            Reference::Registry {
                registry,
                repository,
                ..
            } => Reference::Registry {
                registry: registry.clone(),
                repository: repository.clone(),
                version,
            },
            Reference::Layout { dir, .. } => Reference::Layout {
                dir: dir.clone(),
                version,
            },
        }
    }

    /// Whether the registry is this machine's loopback (`127.0.0.1`, `localhost`, `[::1]`,
    /// with any port): the only registries spoken to in plain HTTP.
    pub fn is_loopback(&self) -> bool {
        match self {
            Reference::Registry { registry, .. } => is_loopback_host(registry),
            Reference::Layout { .. } => false,
        }
    }
}

/// Whether `registry` (`host[:port]`) is a loopback name.
pub(crate) fn is_loopback_host(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().map(|h| format!("[{h}]")),
        None => registry.split(':').next().map(str::to_owned),
    };
    matches!(host.as_deref(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// Parses a plugin reference (see the module documentation).
pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
    if s.len() > MAX_REFERENCE_LEN {
        return Err(ReferenceError::TooLong {
            len: s.len(),
            max: MAX_REFERENCE_LEN,
        });
    }
    if let Some(rest) = s.strip_prefix("oci://") {
        parse_registry_ref(rest)
    } else if let Some(rest) = s.strip_prefix("oci-layout:") {
        parse_layout_ref(rest)
    } else {
        Err(ReferenceError::Scheme)
    }
}

fn parse_registry_ref(rest: &str) -> Result<Reference, ReferenceError> {
    let (registry, path) = rest
        .split_once('/')
        .ok_or_else(|| ReferenceError::Repository {
            repository: String::new(),
            reason: "missing (oci://REGISTRY/REPO…)",
        })?;
    check_registry(registry)?;
    let (repository, version) = split_version(path)?;
    check_repository(repository)?;
    Ok(Reference::Registry {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        version,
    })
}

fn parse_layout_ref(rest: &str) -> Result<Reference, ReferenceError> {
    let (dir, version) = split_version(rest)?;
    if dir.is_empty() {
        return Err(ReferenceError::LayoutDir {
            dir: dir.to_owned(),
            reason: "empty",
        });
    }
    if dir.contains('\0') {
        return Err(ReferenceError::LayoutDir {
            dir: dir.to_owned(),
            reason: "holds a NUL byte",
        });
    }
    Ok(Reference::Layout {
        dir: PathBuf::from(dir),
        version,
    })
}

/// Splits `NAME:TAG` or `NAME@sha256:HEX`; a tag is what follows the last `:` after the
/// last `/`.
fn split_version(s: &str) -> Result<(&str, Selector), ReferenceError> {
    if let Some((name, digest)) = s.split_once('@') {
        check_digest(digest)?;
        let last = name.rsplit('/').next().unwrap_or(name);
        if last.contains(':') {
            return Err(ReferenceError::TagOrDigest);
        }
        return Ok((name, Selector::Digest(digest.to_owned())));
    }
    let slash = s.rfind('/').map_or(0, |i| i.saturating_add(1));
    let last = s.get(slash..).unwrap_or("");
    let Some(colon) = last.rfind(':') else {
        return Err(ReferenceError::TagOrDigest);
    };
    let at = slash.saturating_add(colon);
    let (name, tag) = (s.get(..at).unwrap_or(""), s.get(at.saturating_add(1)..));
    let tag = tag.unwrap_or("");
    check_tag(tag)?;
    Ok((name, Selector::Tag(tag.to_owned())))
}

fn check_digest(d: &str) -> Result<(), ReferenceError> {
    let ok = d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Digest {
            digest: d.to_owned(),
        })
    }
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(d: &str) -> bool {
    check_digest(d).is_ok()
}

fn check_tag(t: &str) -> Result<(), ReferenceError> {
    let mut bytes = t.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && t.len() <= MAX_TAG_LEN {
        Ok(())
    } else {
        Err(ReferenceError::Tag { tag: t.to_owned() })
    }
}

fn check_registry(r: &str) -> Result<(), ReferenceError> {
    let refuse = |reason| {
        Err(ReferenceError::Registry {
            registry: r.to_owned(),
            reason,
        })
    };
    let (host, port) = if let Some(v6) = r.strip_prefix('[') {
        let Some((inner, after)) = v6.split_once(']') else {
            return refuse("unclosed '['");
        };
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return refuse("not an IPv6 literal");
        }
        match after {
            "" => (inner, None),
            p => match p.strip_prefix(':') {
                Some(port) => (inner, Some(port)),
                None => return refuse("junk after ']'"),
            },
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if host.is_empty() {
        return refuse("empty host");
    }
    if !r.starts_with('[') {
        for label in host.split('.') {
            let b = label.as_bytes();
            let edges_ok = b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric);
            if !edges_ok || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
                return refuse("host labels are [A-Za-z0-9-], not starting or ending with '-'");
            }
            if b.len() > 63 {
                return refuse("host label longer than 63 bytes");
            }
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return refuse("port must be 1 to 65535");
        }
    }
    Ok(())
}

fn check_repository(repo: &str) -> Result<(), ReferenceError> {
    let refuse = |reason| {
        Err(ReferenceError::Repository {
            repository: repo.to_owned(),
            reason,
        })
    };
    if repo.is_empty() {
        return refuse("empty");
    }
    if repo.len() > MAX_REPOSITORY_LEN {
        return refuse("longer than 255 bytes");
    }
    for component in repo.split('/') {
        if !component_ok(component) {
            return refuse(
                "components are lowercase [a-z0-9] runs joined by '.', '_', '__' or '-'s",
            );
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0usize;
    while let Some(x) = b.get(i) {
        if alnum(x) {
            i = i.saturating_add(1);
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        while b.get(i).is_some_and(|y| !alnum(y)) {
            i = i.saturating_add(1);
        }
        let sep = c.get(start..i).unwrap_or("");
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|y| y == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn forms_that_parse() {
        let r = parse("oci://127.0.0.1:5000/plugins/echo:1.0.0").unwrap();
        assert_eq!(
            r,
            Reference::Registry {
                registry: "127.0.0.1:5000".into(),
                repository: "plugins/echo".into(),
                version: Selector::Tag("1.0.0".into()),
            }
        );
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/plugins/echo:1.0.0");
        let r = parse(&format!("oci://[::1]:5000/a/b-c__d.e@{D}")).unwrap();
        assert!(matches!(r.version(), Selector::Digest(d) if d == D));
        assert!(r.is_loopback());
        assert!(!parse("oci://ghcr.io/acme/echo:v1").unwrap().is_loopback());
        assert!(
            !parse("oci://localhost.evil.com/a:v1")
                .unwrap()
                .is_loopback()
        );
        let r = parse("oci-layout:/srv/mirror:2.0").unwrap();
        assert_eq!(
            r,
            Reference::Layout {
                dir: "/srv/mirror".into(),
                version: Selector::Tag("2.0".into())
            }
        );
        let r = parse(&format!("oci-layout:rel/dir@{D}")).unwrap();
        assert!(matches!(r, Reference::Layout { ref dir, .. } if dir == &PathBuf::from("rel/dir")));
    }

    #[test]
    fn forms_refused() {
        use ReferenceError as R;
        type Case = (&'static str, fn(&R) -> bool);
        let cases: &[Case] = &[
            ("https://x/a:1", |e| matches!(e, R::Scheme)),
            ("oci://x/a", |e| matches!(e, R::TagOrDigest)),
            ("oci://x:5000", |e| matches!(e, R::Repository { .. })),
            ("oci://x/A:1", |e| matches!(e, R::Repository { .. })),
            ("oci://x/a//b:1", |e| matches!(e, R::Repository { .. })),
            ("oci://x/../a:1", |e| matches!(e, R::Repository { .. })),
            ("oci://x/a:-1", |e| matches!(e, R::Tag { .. })),
            ("oci://x/a:", |e| matches!(e, R::Tag { .. })),
            ("oci://x/a@sha256:AB", |e| matches!(e, R::Digest { .. })),
            ("oci://x/a@md5:00", |e| matches!(e, R::Digest { .. })),
            ("oci://x:0/a:1", |e| matches!(e, R::Registry { .. })),
            ("oci://x:99999/a:1", |e| matches!(e, R::Registry { .. })),
            ("oci://-x/a:1", |e| matches!(e, R::Registry { .. })),
            ("oci://[::1/a:1", |e| matches!(e, R::Registry { .. })),
            ("oci:///a:1", |e| matches!(e, R::Registry { .. })),
            ("oci-layout::1", |e| matches!(e, R::LayoutDir { .. })),
            ("oci-layout:dir", |e| matches!(e, R::TagOrDigest)),
        ];
        for (input, want) in cases {
            let e = parse(input).unwrap_err();
            assert!(want(&e), "{input}: {e:?}");
        }
        let long = format!("oci://x/{}:1", "a".repeat(MAX_REFERENCE_LEN));
        assert!(matches!(parse(&long), Err(R::TooLong { .. })));
        let e = parse(&format!("oci://x/a:tag@{D}")).unwrap_err();
        assert!(matches!(e, R::TagOrDigest), "{e:?}");
    }
}
