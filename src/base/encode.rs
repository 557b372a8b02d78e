//! JSON text for a call's context, written without serde_json's byte-by-byte escaping
//! (the context's own shape is written by `base::ffi::encode_context_into`).
//!
//! serde_json escapes a string by looking every byte up in a table and branching on the
//! answer. For a context carrying 1 MiB of text that loop was half of the host's time in a
//! process-mode call (`perf record` of `examples/call_profile.rs` with
//! `PROFILE_INPUT=1048576`: `format_escaped_str_contents` at 48% of all samples), and it
//! kept the 1 MiB input row of `benches/roundtrip.rs` under its 1 GB/s target. Here a
//! string is scanned eight bytes at a time for the only bytes JSON requires escaped (`"`,
//! `\` and those below 0x20), and the runs between them are copied whole.
//!
//! The output is byte for byte what serde_json writes for the same context (the tests
//! compare the two over every byte value, every escape and nested values), so a plugin
//! cannot tell which wrote it. Everything but strings (numbers, the literals) is written by
//! serde_json itself. Written by hand because serde_json has no hook into its scan (its
//! `Formatter` is handed the runs the scan found), and the crates with a vectorised writer
//! (sonic-rs, simd-json) are whole JSON libraries to bring in for one loop.

use serde_json::Value;

/// Writes a JSON object of `entries`, in their order, as serde_json writes a map.
pub(crate) fn write_object<'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own text for a number (its float and integer writers, and its
        // `arbitrary_precision` form if some dependency turns that on).
        Value::Number(n) => {
            // Writing to a `Vec` cannot fail, and a `Number` always serializes.
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map.iter()),
    }
}

/// Eight copies of `b`.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// Whether any of the eight bytes of `word` must be escaped in a JSON string: below 0x20,
/// `"` or `\`. Exact for "any" (the classic zero-byte test: a borrow can only spread past
/// a byte that already matched).
fn needs_escape(word: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(splat(0x01)) & !v & splat(0x80) != 0;
    let below_space = word.wrapping_sub(splat(0x20)) & !word & splat(0x80) != 0;
    below_space || has_zero(word ^ splat(b'"')) || has_zero(word ^ splat(b'\\'))
}

/// The escape serde_json writes for `byte`, if it writes one: the two-character forms
/// where JSON has them, `\u00XX` (lowercase hex) for the other control bytes.
fn escape(byte: u8) -> Option<Escape> {
    Some(match byte {
        b'"' => Escape::Short(b'"'),
        b'\\' => Escape::Short(b'\\'),
        0x08 => Escape::Short(b'b'),
        0x09 => Escape::Short(b't'),
        0x0A => Escape::Short(b'n'),
        0x0C => Escape::Short(b'f'),
        0x0D => Escape::Short(b'r'),
        0x00..=0x1F => Escape::Unicode(byte),
        _ => return None,
    })
}

enum Escape {
    Short(u8),
    Unicode(u8),
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_escape(out: &mut Vec<u8>, escape: Escape) {
    match escape {
        Escape::Short(c) => out.extend_from_slice(&[b'\\', c]),
        Escape::Unicode(b) => {
            let hex = |nibble: u8| HEX.get(usize::from(nibble & 0x0F)).copied().unwrap_or(b'0');
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(b >> 4), hex(b)]);
        }
    }
}

/// Writes `s` as a JSON string: quoted, with the bytes JSON requires escaped.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len().saturating_add(2));
    out.push(b'"');
    // `bytes[run..at]` is clean and not yet copied.
    let mut run = 0;
    let mut at = 0;
    while at < bytes.len() {
        let next = at.saturating_add(8);
        if let Some(word) = bytes.get(at..next)
            && let Ok(word) = <[u8; 8]>::try_from(word)
            && !needs_escape(u64::from_ne_bytes(word))
        {
            at = next;
            continue;
        }
        // A word holding a byte to escape, or the last few bytes: one at a time.
        let end = next.min(bytes.len());
        while at < end {
            if let Some(escape) = bytes.get(at).copied().and_then(escape) {
                out.extend_from_slice(bytes.get(run..at).unwrap_or_default());
                write_escape(out, escape);
                run = at.saturating_add(1);
            }
            at = at.saturating_add(1);
        }
    }
    out.extend_from_slice(bytes.get(run..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn same_as_serde_json(value: &Value) {
        let want = serde_json::to_vec(value).unwrap();
        let mut got = Vec::new();
        write_value(&mut got, value);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }

    #[test]
    fn every_character_below_0x80_and_others_are_written_as_serde_json_writes_them() {
        let all: String = (0_u32..0x80)
            .chain([0x7F, 0x80, 0xE9, 0x2028, 0x2029, 0xFFFD, 0x1F600])
            .filter_map(char::from_u32)
            .collect();
        same_as_serde_json(&Value::String(all.clone()));
        // Each character alone, and at each position of an eight-byte word.
        for c in all.chars() {
            for pad in 0..9 {
                let s = format!("{}{c}{}", "a".repeat(pad), "b".repeat(8 - pad.min(8)));
                same_as_serde_json(&Value::String(s));
            }
        }
    }

    #[test]
    fn long_runs_with_sparse_escapes_match() {
        let mut s = "x".repeat(100_003);
        for at in [0, 7, 8, 9, 4096, 99_999, 100_002] {
            s.replace_range(at..at + 1, "\"");
        }
        same_as_serde_json(&Value::String(s.clone()));
        s.push('\n');
        s.insert(50_000, '\\');
        same_as_serde_json(&Value::String(s));
        same_as_serde_json(&Value::String(String::new()));
    }

    #[test]
    fn nested_values_and_keys_match() {
        same_as_serde_json(&json!({
            "a\"b": [null, true, false, 0, -1, 1.5, 1e300, u64::MAX, i64::MIN, "t\tab", -0.0],
            "nested": {"deeper": [[], {}, [{"x": "\u{0}\u{1f}"}]]},
            "": "",
            "second\n": 2.25
        }));
    }

    #[test]
    fn the_word_test_finds_each_byte_to_escape_in_each_position() {
        for byte in 0_u8..=255 {
            for pos in 0..8 {
                let mut word = [b'a'; 8];
                word[pos] = byte;
                let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                assert_eq!(
                    needs_escape(u64::from_ne_bytes(word)),
                    expected,
                    "byte {byte:#04x} at {pos}"
                );
            }
        }
        // Random words of bytes near each class's edges, against the byte-by-byte answer.
        let edges = [
            0x00, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x7F, 0x80, 0xA2, 0xDC, 0xFF,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let word: [u8; 8] =
                std::array::from_fn(|i| edges[((state >> (i * 8)) as usize) % edges.len()]);
            let expected = word.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(
                needs_escape(u64::from_ne_bytes(word)),
                expected,
                "{word:02x?}"
            );
        }
        // Bytes just above each class, everywhere at once: nothing to escape.
        assert!(!needs_escape(u64::from_ne_bytes([
            0x20, 0x21, 0x23, 0x5B, 0x5D, 0x7F, 0x80, 0xFF
        ])));
    }
}
