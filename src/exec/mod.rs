//! Running a loaded plugin: on its own thread in this process ([`thread`]) or in a worker
//! process ([`worker`]) started by the spawner.

mod spawner;
pub mod thread;
pub mod worker;
