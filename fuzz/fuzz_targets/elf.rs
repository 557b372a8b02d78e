//! Fuzz target: `skillgate::fuzzing::elf` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::elf(data);
});
