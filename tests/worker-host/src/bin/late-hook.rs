//! A host that calls the hook after it started a thread: the same thread would start in a
//! re-executed worker before the hook, outside its sandbox, so the hook does not make this
//! executable a worker.

fn main() -> std::process::ExitCode {
    let (_keep, parked) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || parked.recv());
    skillgate::worker::run_if_worker();
    worker_host::run()
}
