//! Fuzz target: `skillgate::fuzzing::ring_reply` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::ring_reply(data);
});
