//! Fuzz target: `skillgate::fuzzing::context_encode` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::context_encode(data);
});
