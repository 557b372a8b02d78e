//! `skillgate-worker`: the process a host runs one plugin in (process isolation).
//!
//! Started by the host with the sealed library as standard input and its IPC socket as
//! standard output; not meant to be run by hand.

fn main() -> std::process::ExitCode {
    skillgate::worker::worker_main()
}
