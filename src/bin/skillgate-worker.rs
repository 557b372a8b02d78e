//! `skillgate-worker`: the process a host runs one plugin in (process isolation).
//!
//! Started by the host with `/dev/null` on fds 0-2, the sealed library at fd 3, its socket
//! to the host at fd 4 and the sandbox's grant descriptors from fd 5 (their count is the one
//! argument); not meant to be run by hand. See `skillgate::worker`.

fn main() -> std::process::ExitCode {
    skillgate::worker::worker_main()
}
