//! Structured fuzz target: an arbitrary manifest is serialised, signed with a test key,
//! verified and parsed back; it must round-trip exactly, and any single-byte change must be
//! refused (`skillgate::fuzzing::signed_roundtrip`).
#![no_main]

use arbitrary::Arbitrary;
use skillgate::fuzzing::{ManifestFields, signed_roundtrip};

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    description: String,
    version: (u64, u64, u64),
    author: Option<String>,
    files: Vec<(String, u64, u8)>,
    flip_at: usize,
    flip_with: u8,
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    signed_roundtrip(&ManifestFields {
        name: input.name,
        description: input.description,
        version: input.version,
        author: input.author,
        files: input.files,
        flip: (input.flip_at, input.flip_with),
    });
});
