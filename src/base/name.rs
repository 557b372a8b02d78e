//! Plugin names: the one alphabet a name is checked against wherever it is used.
//!
//! A plugin name becomes part of file names (the library's default `lib<name>.so`, a
//! rollback mark `<name>.version`) and of messages, so it is restricted to a small alphabet
//! that cannot carry a path separator, a NUL or a control character. The manifest checks a
//! signed name with it, the trust rules check the names and patterns a policy lists, and
//! the version marks check a name again before building a path from it.

/// Longest plugin name.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Whether `b` may appear in a name: `[A-Za-z0-9._+-]`.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+')
}

/// Whether `s` is a plugin name: 1 to [`MAX_NAME_LEN`] bytes of the alphabet, not starting
/// with `.` (so it names no hidden or temporary file).
pub(crate) fn is_plugin_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.starts_with('.') && s.bytes().all(is_name_byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_plain_and_not_hidden() {
        for good in ["a", "echo", "acme-db_2.0+x", &"n".repeat(MAX_NAME_LEN)] {
            assert!(is_plugin_name(good), "{good:?}");
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "..",
            "a b",
            "a\0",
            "é",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(!is_plugin_name(bad), "{bad:?}");
        }
    }
}
