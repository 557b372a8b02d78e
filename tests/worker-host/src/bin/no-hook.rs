//! The same host without the hook: it cannot serve as its own worker, and the Gate must not
//! re-execute it (its `main` would run as a "worker").

fn main() -> std::process::ExitCode {
    worker_host::run()
}
