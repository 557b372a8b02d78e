//! Stands in for code before the hook that starts a thread only in the worker (a constructor
//! or runtime whose behaviour depends on the empty environment or its arguments): the host
//! itself passes the hook's check, the worker has a second, unrestricted thread and must
//! refuse to load anything.

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some(skillgate::worker::WORKER_ARG) {
        std::thread::spawn(|| {
            loop {
                std::thread::park();
            }
        });
    }
    skillgate::worker::run_if_worker();
    worker_host::run()
}
