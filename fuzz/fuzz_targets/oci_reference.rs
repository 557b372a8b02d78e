//! Fuzz target: `skillgate::fuzzing::oci_reference` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::oci_reference(data);
});
