//! `echo`: an example skill plugin for skillgate, implementing VT Code's native plugin ABI v1.
//!
//! Exports:
//! - `vtcode_plugin_version() -> u32` (always 1)
//! - `vtcode_plugin_metadata() -> *const c_char` (heap-allocated JSON)
//! - `vtcode_plugin_execute(context_json) -> *const c_char` (heap-allocated JSON)
//! - `vtcode_plugin_free_string(ptr)` (frees strings returned by the two functions above)
//!
//! The result of `execute` is
//! `{"success":true,"output":{"echo":<context>,"calls":N},"error":null,"files":[]}` where
//! `<context>` is the received context JSON, verbatim, after checking that it is one valid JSON
//! value, and `N` counts the calls made so far (this one included). The plugin has no
//! dependencies, so the JSON check is a small hand-written validator.
//!
//! Builds with either
//! `rustc --edition 2021 --crate-type cdylib -C opt-level=2 -o libecho.so src/lib.rs` or
//! `cargo build --release --manifest-path examples/echo-plugin/Cargo.toml`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_char, CStr, CString};
use std::panic::catch_unwind;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The plugin ABI version this library implements.
const ABI_VERSION: u32 = 1;

/// The metadata document: exactly the nine keys of VT Code's plugin metadata.
const METADATA: &str = concat!(
    r#"{"name":"echo","#,
    r#""description":"Echoes its input back","#,
    r#""version":"0.1.0","#,
    r#""author":"skillgate examples","#,
    r#""abi_version":1,"#,
    r#""when_to_use":"To see a signed plugin run","#,
    r#""when_not_to_use":null,"#,
    r#""allowed_tools":[],"#,
    r#""thread_safe":false}"#
);

/// Deepest JSON nesting the validator accepts (bounds its recursion).
const MAX_DEPTH: usize = 128;

/// Number of `execute` calls made so far.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Hands a Rust string to the host as a NUL-terminated heap string (NULL if it holds a NUL).
fn into_c_string(s: String) -> *const c_char {
    match CString::new(s) {
        Ok(c) => c.into_raw().cast_const(),
        Err(_) => ptr::null(),
    }
}

/// A result document for a failure; `error` must need no JSON escaping.
fn failure(error: &str) -> String {
    format!(r#"{{"success":false,"output":{{}},"error":"{error}","files":[]}}"#)
}

/// Builds the result document for one call, given the raw context bytes.
fn respond(context: &[u8]) -> String {
    let calls = CALLS.fetch_add(1, Ordering::SeqCst).saturating_add(1);
    let Ok(text) = std::str::from_utf8(context) else {
        return failure("context is not valid UTF-8");
    };
    if !is_valid_json(text.as_bytes()) {
        return failure("context is not valid JSON");
    }
    let text = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    format!(
        r#"{{"success":true,"output":{{"echo":{text},"calls":{calls}}},"error":null,"files":[]}}"#
    )
}

/// ABI version of this plugin.
#[no_mangle]
pub extern "C" fn vtcode_plugin_version() -> u32 {
    ABI_VERSION
}

/// Plugin metadata as a heap-allocated JSON string; free with `vtcode_plugin_free_string`.
#[no_mangle]
pub extern "C" fn vtcode_plugin_metadata() -> *const c_char {
    catch_unwind(|| into_c_string(METADATA.to_owned())).unwrap_or(ptr::null())
}

/// Runs the plugin. Returns a heap-allocated JSON result (free it with
/// `vtcode_plugin_free_string`), or NULL if `context_json` is NULL or the plugin panicked.
///
/// # Safety
///
/// `context_json` must be NULL or point to a NUL-terminated string that stays valid and
/// unmodified for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn vtcode_plugin_execute(context_json: *const c_char) -> *const c_char {
    if context_json.is_null() {
        return ptr::null();
    }
    // SAFETY: non-null, and the caller guarantees a NUL-terminated string that outlives the
    // call; the borrow does not escape this function.
    let context = unsafe { CStr::from_ptr(context_json) };
    catch_unwind(|| into_c_string(respond(context.to_bytes()))).unwrap_or(ptr::null())
}

/// Frees a string returned by `vtcode_plugin_metadata` or `vtcode_plugin_execute`.
/// NULL is ignored.
///
/// # Safety
///
/// `ptr` must be NULL or a pointer returned by one of those two functions of this library that
/// has not been freed yet.
#[no_mangle]
pub unsafe extern "C" fn vtcode_plugin_free_string(ptr: *const c_char) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the caller guarantees `ptr` came from `CString::into_raw` in `into_c_string`
    // and is freed exactly once; retaking ownership and dropping it releases the allocation.
    drop(unsafe { CString::from_raw(ptr.cast_mut()) });
}

// ---------------------------------------------------------------------------------------------
// A minimal JSON validator (RFC 8259 grammar; no allocation, bounded recursion).
// ---------------------------------------------------------------------------------------------

/// True when `bytes` holds exactly one JSON value, optionally surrounded by whitespace.
fn is_valid_json(bytes: &[u8]) -> bool {
    let mut p = Parser { bytes, pos: 0 };
    p.skip_ws();
    if p.value(0).is_none() {
        return false;
    }
    p.skip_ws();
    p.pos == bytes.len()
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.eat(b'{')?;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.skip_ws();
            self.string()?;
            self.skip_ws();
            self.eat(b':')?;
            self.skip_ws();
            self.value(depth + 1)?;
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.eat(b'[')?;
        self.skip_ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.skip_ws();
            self.value(depth + 1)?;
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            if !self.next()?.is_ascii_hexdigit() {
                                return None;
                            }
                        }
                    }
                    _ => return None,
                },
                // Control characters must be escaped; the input is already known to be UTF-8.
                0x00..=0x1f => return None,
                _ => {}
            }
        }
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek()? == b'0' {
            self.pos += 1;
        } else {
            self.digits()?;
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_json;

    #[test]
    fn validator_accepts_json() {
        for ok in [
            r#"{"input":{"a":[1,-2.5e3,true,false,null,"x\n\u00e9"]},"workspace_root":null,"config":{}}"#,
            " 0 ",
            r#""é""#,
            "[]",
        ] {
            assert!(is_valid_json(ok.as_bytes()), "{ok}");
        }
    }

    #[test]
    fn validator_rejects_non_json() {
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        for bad in [
            "",
            "{",
            "{}}",
            "{} {}",
            "01",
            "1.",
            "[1,]",
            r#"{"a" 1}"#,
            "\"\u{1}\"",
            r#""\x""#,
            "nul",
            deep.as_str(),
        ] {
            assert!(!is_valid_json(bad.as_bytes()), "{bad}");
        }
    }
}
