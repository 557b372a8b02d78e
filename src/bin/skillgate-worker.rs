//! `skillgate-worker`: the process a host runs one plugin in (process isolation).
//!
//! Started by the host with `/dev/null` on fd 0, pipes to the host's log reader on fds 1
//! and 2 (the plugin's log), the sealed library at fd 3, its socket
//! to the host at fd 4 and the sandbox's grant descriptors from fd 5 (their count is the one
//! argument); not meant to be run by hand. See the `Gate` documentation.
//!
//! The worker's code is the library's, reached through one symbol rather than a public Rust
//! path: a host using the library has no function to call that opens a library descriptor
//! without a `Verified` value behind it.

// Linked for the one symbol below; nothing else of the library is used here.
extern crate skillgate;

// SAFETY: the declaration matches the definition in `skillgate::exec::child` exactly (no
// arguments, a `u8` back, C ABI), which is what makes calling it safe.
#[allow(unsafe_code)]
unsafe extern "C" {
    /// The worker's main, defined in the library (`exec::child`). Returns the exit code.
    safe fn skillgate_worker_main() -> u8;
}

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(skillgate_worker_main())
}
