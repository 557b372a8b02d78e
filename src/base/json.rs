//! [`JsonError`]: why a JSON document (a manifest, a signature file, a revocation
//! statement, a call's input) could not be read or written.
//!
//! serde_json's error type is kept inside, private, so the public error enums name no
//! dependency's type (issue 12): the data it carries (line, column, category, message)
//! stays reachable through this type's own accessors, and its text through `Display`.

/// What kind of JSON failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonErrorKind {
    /// The text is not JSON.
    Syntax,
    /// The JSON does not have the expected shape (a wrong type, an unknown or duplicate
    /// field, a failed check while reading a value).
    Data,
    /// The text ended in the middle of a value.
    Eof,
    /// Reading or writing the bytes failed.
    Io,
}

/// A JSON document could not be parsed or produced. `Display` is serde_json's message
/// (with line and column when known), the I/O error's text included for an `Io` failure,
/// so it returns no `source()` (crate::error's convention).
#[derive(Debug)]
pub struct JsonError(serde_json::Error);

impl JsonError {
    /// Wraps serde_json's error; crate-private so the dependency stays out of the API.
    pub(crate) fn new(e: serde_json::Error) -> Self {
        JsonError(e)
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> JsonErrorKind {
        match self.0.classify() {
            serde_json::error::Category::Io => JsonErrorKind::Io,
            serde_json::error::Category::Syntax => JsonErrorKind::Syntax,
            serde_json::error::Category::Data => JsonErrorKind::Data,
            serde_json::error::Category::Eof => JsonErrorKind::Eof,
        }
    }

    /// The 1-based line where it went wrong (0 when not about a position, e.g. on output).
    pub fn line(&self) -> usize {
        self.0.line()
    }

    /// The 1-based column where it went wrong (0 when not about a position).
    pub fn column(&self) -> usize {
        self.0.column()
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for JsonError {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_position_kind_and_text_are_kept() {
        let e = serde_json::from_str::<serde_json::Value>("{\n  \"a\": tru }").unwrap_err();
        let text = e.to_string();
        let e = JsonError::new(e);
        assert_eq!(
            (e.kind(), e.line(), e.column()),
            (JsonErrorKind::Syntax, 2, 11)
        );
        assert_eq!(e.to_string(), text);
        let e = serde_json::from_str::<u8>("\"x\"")
            .map_err(JsonError::new)
            .unwrap_err();
        assert_eq!(e.kind(), JsonErrorKind::Data);
        let e = serde_json::from_str::<u8>("")
            .map_err(JsonError::new)
            .unwrap_err();
        assert_eq!(e.kind(), JsonErrorKind::Eof);
    }
}
