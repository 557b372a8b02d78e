//! Fuzz target: `skillgate::fuzzing::policy` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::policy(data);
});
