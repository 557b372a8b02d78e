//! Fuzz target: `skillgate::fuzzing::ipc_frame` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skillgate::fuzzing::ipc_frame(data);
});
