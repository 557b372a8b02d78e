//! Plugin versions: semver 2.0, compared by precedence.
//!
//! A version orders releases for the rollback marks and the policy's minimum versions, so
//! one parser and one comparison serve every stage. The semver crate's types stay inside,
//! private, so the public API names no dependency's type (issue 12).

use std::cmp::Ordering;
use std::fmt;

/// A semantic version, as a manifest, a policy or a rollback mark states it.
///
/// Equality is exact (build metadata included); ordering releases uses
/// [`Version::cmp_precedence`], which ignores build metadata as semver says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(semver::Version);

impl Version {
    /// `major.minor.patch`, with no pre-release or build metadata.
    pub fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version(semver::Version::new(major, minor, patch))
    }

    /// Parses a semver version.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        parse_version(text).map(Version)
    }

    /// Orders two versions by semver precedence: build metadata does not count.
    pub fn cmp_precedence(&self, other: &Version) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }

    /// Wraps the version a manifest already parsed.
    pub(crate) fn from_semver(version: semver::Version) -> Version {
        Version(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A version is not semver. The semver crate's error is kept inside, private, so the
/// public enums name no dependency's type; its message is this error's `Display`.
#[derive(Debug)]
pub struct VersionError(semver::Error);

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for VersionError {}

/// Parses a semver version, keeping the parser's error typed.
pub(crate) fn parse_version(text: &str) -> Result<semver::Version, VersionError> {
    semver::Version::parse(text).map_err(VersionError)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn precedence_ignores_build_metadata_and_equality_does_not() {
        let a = Version::parse("1.2.0+build5").unwrap();
        let b = Version::new(1, 2, 0);
        assert_eq!(a.cmp_precedence(&b), Ordering::Equal);
        assert_ne!(a, b);
        assert_eq!(
            Version::parse("2.0.0-rc.1")
                .unwrap()
                .cmp_precedence(&Version::new(2, 0, 0)),
            Ordering::Less
        );
        assert_eq!(a.to_string(), "1.2.0+build5");
        let err = Version::parse("1.x").unwrap_err();
        assert!(err.to_string().contains("unexpected character"), "{err}");
    }
}
