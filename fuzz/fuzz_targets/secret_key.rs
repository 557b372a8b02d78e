//! Fuzz target: `skillgate::fuzzing::secret_key` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::secret_key(data);
});
