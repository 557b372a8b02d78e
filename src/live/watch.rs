//! An opt-in watcher over the trusted roots that reloads the [`LivePlugin`]s whose
//! directories changed (the `notify` crate, inotify on Linux).
//!
//! Installing a release: write it to a new directory, then rename it into place (rename the
//! old one away first, or exchange the two). Whatever the installer does, the watcher only
//! ever calls [`LivePlugin`]'s reload, which verifies in full: a half-written or
//! half-renamed directory fails verification (`reload_refused`, the old release keeps
//! serving), and the events of the writes that complete it trigger another attempt, which
//! succeeds. Events are debounced per plugin (a reload starts once its directory was quiet
//! for the debounce interval). A release whose signed manifest is the one serving is
//! verified and then left alone (opening files for verification is itself an event
//! source; open and close events are ignored anyway).
//!
//! The watcher's thread ends when the [`Watcher`] drops: the inotify watch is removed
//! first, then the thread is told to stop, and the drop waits for it at most
//! [`STOP_BOUND`] (a reload in progress is bounded by the policy's call timeout; a thread
//! still busy after the bound is left to finish on its own, and a warning says so).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::gate::Gate;

use super::LivePlugin;

/// How long dropping a [`Watcher`] waits for its thread.
pub const STOP_BOUND: Duration = Duration::from_secs(30);

/// The debounce interval [`Watcher::start`] uses unless told otherwise.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(250);

/// Why a watcher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// inotify could not be set up or could not watch a root (the per-user limit of
    /// watches or instances, a root that went away).
    #[error("cannot watch {path}")]
    Notify {
        /// The root, or the empty path when inotify itself could not start.
        path: PathBuf,
        /// What `notify` said.
        source: notify::Error,
    },
    /// The watcher's thread could not be started.
    #[error("cannot start the watcher thread")]
    Thread {
        /// What the OS said.
        source: std::io::Error,
    },
}

enum Msg {
    Changed(PathBuf),
    Stop,
}

/// Reloads [`LivePlugin`]s when their directories under the trusted roots change. Opt-in:
/// nothing watches unless a host starts one. Dropping it stops it.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use skillgate::live::watch::{DEFAULT_DEBOUNCE, Watcher};
/// use skillgate::{Gate, LivePlugin, LoadOptions, Policy};
/// let gate = Arc::new(Gate::new(Policy::from_file("policy/default.json")?)?);
/// let echo = Arc::new(LivePlugin::load(&gate, "skills/echo", LoadOptions::new())?);
/// let watcher = Watcher::start(Arc::clone(&gate), vec![Arc::clone(&echo)], DEFAULT_DEBOUNCE)?;
/// // ... serve with `echo`; every reload or refusal is an audit event ...
/// drop(watcher);
/// # Ok(()) }
/// ```
pub struct Watcher {
    /// Dropped first: no more events.
    notify: Option<notify::RecommendedWatcher>,
    tx: mpsc::Sender<Msg>,
    done: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

/// A watched plugin: where its directory is (canonical parent, file name).
struct Watched {
    live: Arc<LivePlugin>,
    dir: PathBuf,
}

impl Watcher {
    /// Watches every trusted root of `gate`'s policy (recursively) and reloads, through
    /// `gate`, each of `plugins` whose directory changed, once it was quiet for
    /// `debounce`.
    pub fn start(
        gate: Arc<Gate>,
        plugins: Vec<Arc<LivePlugin>>,
        debounce: Duration,
    ) -> Result<Watcher, WatchError> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut notify =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    return;
                };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                for path in event.paths {
                    let _ = events.send(Msg::Changed(path));
                }
            })
            .map_err(|source| WatchError::Notify {
                path: PathBuf::new(),
                source,
            })?;
        let mut roots = Vec::new();
        for root in &gate.policy().trusted_roots {
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            notify
                .watch(&root, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Notify {
                    path: root.clone(),
                    source,
                })?;
            roots.push(root);
        }
        let watched: Vec<Watched> = plugins
            .into_iter()
            .map(|live| {
                let dir = canonical_dir(&live.source());
                Watched { live, dir }
            })
            .collect();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("skillgate-watch".into())
            .spawn(move || {
                run(&gate, &watched, &rx, debounce);
                let _ = done_tx.send(());
            })
            .map_err(|source| WatchError::Thread { source })?;
        Ok(Watcher {
            notify: Some(notify),
            tx,
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.notify.take());
        let _ = self.tx.send(Msg::Stop);
        match self.done.recv_timeout(STOP_BOUND) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    bound_s = STOP_BOUND.as_secs(),
                    "the plugin watcher thread did not stop in time; it is left to finish"
                );
            }
        }
    }
}

/// `dir` with its parent canonicalized (the directory itself may be mid-rename).
fn canonical_dir(dir: &Path) -> PathBuf {
    match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| dir.to_path_buf()),
        _ => dir.to_path_buf(),
    }
}

/// The watcher thread: collects changed plugins, reloads each once it was quiet.
fn run(gate: &Gate, watched: &[Watched], rx: &mpsc::Receiver<Msg>, debounce: Duration) {
    // Index of a changed plugin → when its directory last changed.
    let mut pending: BTreeMap<usize, Instant> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let next = pending.values().map(|t| *t + debounce).min();
        let msg = match next {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(now)),
        };
        match msg {
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Changed(path)) => {
                for (i, w) in watched.iter().enumerate() {
                    // An event inside the directory, on the directory itself (renamed in
                    // or out), or on a root above it (the whole tree moved).
                    if path.starts_with(&w.dir) || w.dir.starts_with(&path) {
                        pending.insert(i, Instant::now());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let quiet: Vec<usize> = pending
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= debounce)
            .map(|(i, _)| *i)
            .collect();
        for i in quiet {
            pending.remove(&i);
            if let Some(w) = watched.get(i) {
                // The outcome is an audit event (`reloaded` / `reload_refused`); a
                // refusal keeps the old release serving until the next change.
                let source = w.live.source();
                let _ = w.live.reload_inner(gate, &source, true);
            }
        }
    }
}
