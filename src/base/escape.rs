//! Terminal-safe text: what a plugin or the filesystem chose never reaches a terminal or a
//! log as control bytes.
//!
//! Error messages carry plugin names and versions, field names from serde's parse errors
//! ("unknown field `…`"), details a worker process sent, and file and symlink names found in
//! a plugin directory. Printed raw, `ESC [ 2 J` clears an administrator's screen, a newline
//! forges a second log line, and a bidi override reorders what the reader sees. Every such
//! character is written as Rust's `\u{…}` escape instead (lowercase hex, no leading zeros:
//! ESC is `\u{1b}`, a newline `\u{a}`):
//!
//! - C0 controls U+0000–U+001F (newline, carriage return and tab included: one message, one
//!   line), DEL U+007F and C1 controls U+0080–U+009F (U+009B is a one-byte CSI to some
//!   terminals);
//! - the bidi controls U+061C, U+200E, U+200F, U+202A–U+202E and U+2066–U+2069, and the line
//!   and paragraph separators U+2028 and U+2029.
//!
//! Everything else, backslashes included, passes unchanged. So escaping is idempotent:
//! text escaped by the library and again by a command line reads the same, and the form is
//! for people, not for parsing back (a name that really holds the six characters `\u{1b}`
//! prints like one holding ESC — neither reaches the terminal as a control).
//!
//! [`crate::Error`]'s `Display` goes through [`EscapeWriter`], so every host that prints an
//! error, command line or library, gets safe text. [`Escaped`] does the same for any other
//! `Display` value (a `tracing` field: `error = %Escaped(&e)`, `path = %Escaped(p.display())`),
//! and [`to_json_pretty`] for JSON that goes to a terminal.

use std::fmt::{self, Write as _};

/// Whether `c` is written escaped (see the module documentation for the set).
pub fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// A [`fmt::Write`] that escapes what it is given (see the module documentation) before
/// passing it on.
pub struct EscapeWriter<W>(pub W);

impl<W: fmt::Write> fmt::Write for EscapeWriter<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            let (clean, tail) = rest.split_at(at);
            self.0.write_str(clean)?;
            write!(self.0, "{}", c.escape_unicode())?;
            rest = tail.get(c.len_utf8()..).unwrap_or_default();
        }
        self.0.write_str(rest)
    }
}

/// Displays the inner value with control characters escaped.
///
/// ```
/// use skillgate::escape::Escaped;
/// assert_eq!(Escaped("a\u{1b}[2J\nb").to_string(), r"a\u{1b}[2J\u{a}b");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapeWriter(f), "{}", self.0)
    }
}

/// `text` with control characters escaped.
pub fn escape(text: &str) -> String {
    Escaped(text).to_string()
}

/// Pretty JSON for a terminal: serde_json already writes C0 controls as `\uXXXX`; this also
/// writes DEL, the C1 controls and the bidi controls that way, so the text is the same JSON
/// value and holds none of [`needs_escape`]'s characters raw.
pub fn to_json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        TerminalJson(serde_json::ser::PrettyFormatter::new()),
    );
    value.serialize(&mut ser)?;
    String::from_utf8(out).map_err(<serde_json::Error as serde::ser::Error>::custom)
}

/// [`to_json_pretty`] on one line.
pub fn to_json_line<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        TerminalJson(serde_json::ser::CompactFormatter),
    );
    value.serialize(&mut ser)?;
    String::from_utf8(out).map_err(<serde_json::Error as serde::ser::Error>::custom)
}

/// A serde_json formatter that writes [`needs_escape`]'s characters as `\uXXXX` inside
/// strings and delegates everything else.
struct TerminalJson<F>(F);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name<W: ?Sized + std::io::Write>(&mut self, w: &mut W $(, $arg: $ty)*) -> std::io::Result<()> {
            self.0.$name(w $(, $arg)*)
        })*
    };
}

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for TerminalJson<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            let (clean, tail) = rest.split_at(at);
            w.write_all(clean.as_bytes())?;
            // Every escaped character is in the Basic Multilingual Plane: one \uXXXX each.
            write!(w, "\\u{:04x}", u32::from(c))?;
            rest = tail.get(c.len_utf8()..).unwrap_or_default();
        }
        w.write_all(rest.as_bytes())
    }

    delegate! {
        write_null();
        write_bool(value: bool);
        write_i8(value: i8);
        write_i16(value: i16);
        write_i32(value: i32);
        write_i64(value: i64);
        write_i128(value: i128);
        write_u8(value: u8);
        write_u16(value: u16);
        write_u32(value: u32);
        write_u64(value: u64);
        write_u128(value: u128);
        write_f32(value: f32);
        write_f64(value: f64);
        write_number_str(value: &str);
        begin_string();
        end_string();
        write_char_escape(char_escape: serde_json::ser::CharEscape);
        write_byte_array(value: &[u8]);
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        end_object_key();
        begin_object_value();
        end_object_value();
        write_raw_fragment(fragment: &str);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_passes() {
        assert_eq!(escape("plain ascii ~ \\ é ✓"), "plain ascii ~ \\ é ✓");
        assert_eq!(escape("\u{1b}[31m"), "\\u{1b}[31m");
        assert_eq!(escape("a\nb\r\t\0"), "a\\u{a}b\\u{d}\\u{9}\\u{0}");
        assert_eq!(
            escape("\u{7f}\u{80}\u{9b}\u{9f}\u{a0}"),
            "\\u{7f}\\u{80}\\u{9b}\\u{9f}\u{a0}"
        );
        assert_eq!(
            escape("\u{202e}\u{2066}\u{2069}\u{200f}\u{2028}"),
            "\\u{202e}\\u{2066}\\u{2069}\\u{200f}\\u{2028}"
        );
        // Idempotent: escaping twice changes nothing more.
        let once = escape("x\u{1b}\u{9b}\n");
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn every_char_that_needs_it_is_escaped() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let out = escape(&c.to_string());
            assert!(!out.chars().any(needs_escape), "{c:?}");
            assert_eq!(out == c.to_string(), !needs_escape(c), "{c:?}");
        }
    }

    #[test]
    fn terminal_json_is_the_same_value_without_raw_controls() {
        let value = serde_json::json!({"k\u{1b}\u{9b}": ["\u{202e}x\u{7f}", "\n", 1, null]});
        for text in [
            to_json_pretty(&value).unwrap(),
            to_json_line(&value).unwrap(),
        ] {
            assert!(
                !text.chars().any(|c| needs_escape(c) && c != '\n'),
                "{text}"
            );
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, value);
        }
        assert!(!to_json_line(&value).unwrap().contains('\n'));
    }
}
