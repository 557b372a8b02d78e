//! Fuzz target: `skillgate::fuzzing::signature_file` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::signature_file(data);
});
