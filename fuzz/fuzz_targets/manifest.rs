//! Fuzz target: `skillgate::fuzzing::manifest` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::manifest(data);
});
