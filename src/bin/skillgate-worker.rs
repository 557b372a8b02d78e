//! `skillgate-worker`: the process a host runs one plugin in (process isolation), for hosts
//! that prefer a separate worker file to re-executing themselves (see the `Gate`
//! documentation, "Finding the worker").
//!
//! Started by the host with `--skillgate-worker-v1 <grants>` as its arguments, `/dev/null`
//! on fd 0, pipes to the host's log reader on fds 1 and 2 (the plugin's log), the sealed
//! library at fd 3, its socket to the host at fd 4, the shared call region at fd 5 and the
//! sandbox's grant descriptors from fd 6; not meant to be run by hand. It is the same hook a host calls first in its own
//! `main`: the worker's code is the library's, and the worker trusts none of what its
//! starter gives it.

fn main() -> std::process::ExitCode {
    // Runs the worker and exits when started as one; returns otherwise.
    skillgate::worker::run_if_worker();
    eprintln!(
        "skillgate-worker: a host starts this program as a plugin's worker process; it is \
         not run by hand"
    );
    std::process::ExitCode::from(2)
}
