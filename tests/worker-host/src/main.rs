//! A host as the README tells one to write it: the hook first in `main`, then its own work.

fn main() -> std::process::ExitCode {
    skillgate::worker::run_if_worker();
    worker_host::run()
}
