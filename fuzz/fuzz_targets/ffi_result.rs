//! Fuzz target: `skillgate::fuzzing::ffi_result` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::ffi_result(data);
});
