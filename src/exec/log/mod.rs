//! The plugin's log: what a worker process writes to its stdout and stderr.
//!
//! VT Code's plugins print, and a plugin that prints must neither break its worker nor reach
//! the host's control channel. So a worker's fds 1 and 2 are the write ends of two pipes
//! whose read ends only the host holds (never the channel at fd 4), and one reader thread per
//! worker drains them for as long as the worker lives. Each line becomes a `tracing` event
//! with target [`TARGET`] (`skillgate::plugin`), fields `plugin` and `stream`
//! (`"stdout"`/`"stderr"`), the line as the message.
//!
//! Every byte is the plugin's choice, so:
//!
//! - **Text is escaped** ([`crate::base::escape`]): a line cannot forge a second log line or
//!   reach a terminal as a control sequence. Invalid UTF-8 is shown replaced.
//! - **Lines are cut** at [`LINE_CAP`] bytes (the event says `truncated = true`); the rest
//!   of the line is read and dropped.
//! - **Volume is bounded per call**: at most `limits.log_bytes` bytes (newlines included) of
//!   what the worker writes from the moment one call is sent until the next is are surfaced
//!   (the load, with its constructors, is the first such window). Past that the output is
//!   read and dropped, and when the window closes (the reader reaches the next call's
//!   start, or the worker ends) one warning says how many bytes were dropped. The boundary
//!   is exact: when a call is sent the host notes how many bytes each pipe holds unread
//!   (`FIONREAD`) and the reader never reads across that offset, however late it runs.
//! - **Draining never waits on the call path.** The reader is a thread of its own rather
//!   than a `poll` in the call's read of the channel: the channel code keeps its deadlines
//!   unchanged, and output is drained between calls too (a plugin's own threads may print
//!   then), so a plugin never blocks on a full pipe because the host is not in a call.
//! - **Ending never waits on the plugin.** When the worker is ended (killed and reaped) the
//!   reader is told to stop: it drains what is left until end of file or for at most
//!   [`DRAIN_GRACE`], and the host waits at most [`JOIN_BOUND`] for it, then leaves it
//!   (detached; it still stops at its own grace). A process that kept a copy of the pipe
//!   (the worker's seccomp filter forbids `fork`, but nothing here relies on it) cannot hang
//!   the host.
//!
//! The events are sent to the `tracing` dispatcher that was current where the plugin was
//! loaded (the reader thread adopts it), so a subscriber set for the loading thread sees
//! its plugin's log; with none there, to the global default.
//!
//! stdout and stderr are separate pipes: lines of one stream keep their order; the
//! interleaving of the two is as the reader happened to see it.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};

use crate::base::escape::escape;

/// The `tracing` target of a plugin's log lines and of the "dropped" warning.
pub(crate) const TARGET: &str = "skillgate::plugin";
/// Longest line surfaced, in bytes; the rest of a longer line is dropped.
pub(crate) const LINE_CAP: usize = 4096;
/// How long a reader told to stop still drains output that is left.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How long ending a worker waits for its reader before leaving it to stop on its own.
const JOIN_BOUND: Duration = Duration::from_secs(2);
/// Bytes read per `read`.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per stream when a window closes, to attribute what the last call wrote to it
/// (bounded, so a stream written without pause cannot keep the window open).
const DRAIN_READS: usize = 16;

/// Which of the worker's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The write ends of the log pipes, for the worker's fds 1 and 2.
pub(crate) struct LogPipes {
    pub(crate) stdout: io::PipeWriter,
    pub(crate) stderr: io::PipeWriter,
}

/// Most window boundaries waiting for the reader; past it the newest replaces the last
/// (two short windows become one). Calls are serialized, so this is only reached if the
/// reader is starved for many calls in a row.
const MAX_BOUNDARIES: usize = 64;

/// What the host and the reader share.
struct Shared {
    /// The read ends, stdout then stderr. Only the reader reads them; the host asks them how
    /// many bytes are unread (`FIONREAD`) when a call starts.
    pipes: [io::PipeReader; 2],
    /// Bytes read so far per stream, and where the next windows begin.
    offsets: Mutex<Offsets>,
    /// The wake-up: an eventfd, which never raises `SIGPIPE` in the host, whoever closed
    /// what.
    eventfd: OwnedFd,
    /// Whether the wake-up means "stop".
    stop: AtomicBool,
}

#[derive(Default)]
struct Offsets {
    /// Bytes read from each stream so far.
    read: [u64; 2],
    /// Per stream, the offset at which each pending window begins, oldest first. A read
    /// never crosses the first one, so every byte is counted in the window it was written
    /// in: a call's window starts after what the worker had written when the call was sent.
    boundaries: VecDeque<[u64; 2]>,
    /// Per stream, where the window the reader is in began (the last boundary it passed).
    window_start: [u64; 2],
}

impl Shared {
    fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.offsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ring(&self) {
        // A full counter (never, in practice) already means "wake up": ignore errors.
        let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
    }
}

/// The host's handle on one worker's log reader. Dropping it stops the reader (see the
/// module docs): drop it after the worker is gone.
pub(crate) struct PluginLog {
    /// The plugin's name, for the warning about a reader left behind.
    plugin: String,
    shared: Arc<Shared>,
    /// Disconnected when the reader thread has finished.
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PluginLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLog").finish_non_exhaustive()
    }
}

impl PluginLog {
    /// Makes the pipes and starts the reader for plugin `plugin`, surfacing at most `limit`
    /// bytes per call window. The caller gives the returned write ends to the worker and
    /// keeps no copy of them.
    pub(crate) fn start(plugin: &str, limit: usize) -> io::Result<(PluginLog, LogPipes)> {
        let (prepared, pipes) = Self::prepare(plugin, limit)?;
        Ok((prepared.start()?, pipes))
    }

    /// [`PluginLog::start`] in two steps: the pipes now (and the loading thread's
    /// subscriber), the reader thread with [`PreparedLog::start`]. A pooled load hands the
    /// worker its pipes first and starts the reader while the worker wakes up; whatever
    /// the worker writes before that waits in the pipes.
    pub(crate) fn prepare(plugin: &str, limit: usize) -> io::Result<(PreparedLog, LogPipes)> {
        let (stdout_r, stdout_w) = io::pipe()?;
        let (stderr_r, stderr_w) = io::pipe()?;
        for r in [&stdout_r, &stderr_r] {
            rustix::io::ioctl_fionbio(r, true)?;
        }
        let eventfd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let shared = Arc::new(Shared {
            pipes: [stdout_r, stderr_r],
            offsets: Mutex::new(Offsets::default()),
            eventfd,
            stop: AtomicBool::new(false),
        });
        let reader = Reader {
            lines: Lines::new(plugin.to_owned(), limit),
            open: [true, true],
            shared: Arc::clone(&shared),
        };
        // The loading thread's subscriber, if it has one; otherwise the reader looks up the
        // global default at each event, like any thread (one set later is seen too).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let dispatch = (!dispatch.is::<tracing::subscriber::NoSubscriber>()).then_some(dispatch);
        let pipes = LogPipes {
            stdout: stdout_w,
            stderr: stderr_w,
        };
        let prepared = PreparedLog {
            plugin: plugin.to_owned(),
            shared,
            reader,
            dispatch,
        };
        Ok((prepared, pipes))
    }
}

/// A plugin log whose pipes are made and whose reader is not started yet
/// ([`PluginLog::prepare`]). Dropped unstarted, its read ends close.
pub(crate) struct PreparedLog {
    plugin: String,
    shared: Arc<Shared>,
    reader: Reader,
    dispatch: Option<tracing::Dispatch>,
}

impl PreparedLog {
    /// Starts the reader thread.
    pub(crate) fn start(self) -> io::Result<PluginLog> {
        let PreparedLog {
            plugin,
            shared,
            mut reader,
            dispatch,
        } = self;
        let (finished, done) = mpsc::sync_channel::<()>(0);
        let thread = std::thread::Builder::new()
            .name("skillgate-log".into())
            .spawn(move || {
                // Dropped when the thread ends, however it ends: that is the "done" signal.
                let _finished = finished;
                match dispatch {
                    Some(dispatch) => tracing::dispatcher::with_default(&dispatch, || reader.run()),
                    None => reader.run(),
                }
            })?;
        Ok(PluginLog {
            plugin,
            shared,
            done,
            thread: Some(thread),
        })
    }
}

impl PluginLog {
    /// A call is about to be sent: the window open so far ends after what the worker has
    /// written by now (its "dropped" warning, if any, comes when the reader gets there) and
    /// the call's window begins.
    ///
    /// When the worker wrote nothing since the reader's window began (nothing read into it,
    /// nothing unread, no window pending), that window is empty: it simply becomes the
    /// call's, with no boundary and no wake-up of the reader. A call that prints nothing
    /// then costs the reader nothing; a wake-up per call put a third thread on the call
    /// path, which on a 2-vCPU host preempted the caller or the worker.
    pub(crate) fn new_window(&self) {
        {
            let mut offsets = self.shared.offsets();
            let mut at = offsets.read;
            // One `poll` tells which pipes hold anything; only those are asked how much.
            let [out, err] = &self.shared.pipes;
            let mut fds = [
                PollFd::new(out, PollFlags::IN),
                PollFd::new(err, PollFlags::IN),
            ];
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let polled = rustix::event::poll(&mut fds, Some(&zero)).is_ok();
            for ((pipe, fd), at) in self.shared.pipes.iter().zip(&fds).zip(at.iter_mut()) {
                if !polled || fd.revents().contains(PollFlags::IN) {
                    *at = at.saturating_add(rustix::io::ioctl_fionread(pipe).unwrap_or(0));
                }
            }
            if offsets.boundaries.is_empty() && at == offsets.window_start {
                return;
            }
            if offsets.boundaries.len() >= MAX_BOUNDARIES {
                offsets.boundaries.pop_back();
            }
            offsets.boundaries.push_back(at);
        }
        self.shared.ring();
    }
}

impl Drop for PluginLog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ring();
        let Some(thread) = self.thread.take() else {
            return;
        };
        match self.done.recv_timeout(JOIN_BOUND) {
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(()) => {
                // It has finished (or is returning): the join is immediate.
                let _ = thread.join();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    target: TARGET,
                    plugin = %self.plugin,
                    "the log reader did not finish in time; it is left to stop on its own"
                );
            }
        }
    }
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// The reader thread's state.
struct Reader {
    lines: Lines,
    /// Per stream: not at end of file yet.
    open: [bool; 2],
    shared: Arc<Shared>,
}

impl Reader {
    fn run(&mut self) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut stop_at: Option<Instant> = None;
        loop {
            if !self.open.contains(&true) {
                break;
            }
            let timeout = match stop_at {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    Some(Timespec::try_from(left).unwrap_or(Timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    }))
                }
                None => None,
            };
            let mut ready = [false; 3];
            {
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
                let mut slots: Vec<usize> = Vec::with_capacity(3);
                for (i, pipe) in self.shared.pipes.iter().enumerate() {
                    // A stream at a window boundary waits (unwatched) for the other.
                    if self.open.get(i) == Some(&true) && self.room(i) != Some(0) {
                        fds.push(PollFd::new(pipe, PollFlags::IN));
                        slots.push(i);
                    }
                }
                // Once stopping, the wake-up is no longer watched (it stays readable).
                if stop_at.is_none() {
                    fds.push(PollFd::new(&self.shared.eventfd, PollFlags::IN));
                    slots.push(2);
                }
                match rustix::event::poll(&mut fds, timeout.as_ref()) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => break,
                }
                for (fd, slot) in fds.iter().zip(slots) {
                    if let Some(r) = ready.get_mut(slot) {
                        *r = !fd.revents().is_empty();
                    }
                }
            }
            let [out_ready, err_ready, wake_ready] = ready;
            if out_ready {
                self.read(0, &mut buf, 1);
            }
            if err_ready {
                self.read(1, &mut buf, 1);
            }
            if wake_ready {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(&self.shared.eventfd, &mut counter);
                if self.shared.stop.load(Ordering::Acquire) {
                    stop_at = Some(Instant::now() + DRAIN_GRACE);
                } else {
                    // What the ending window holds is in the pipes: read up to the boundary.
                    self.read(0, &mut buf, DRAIN_READS);
                    self.read(1, &mut buf, DRAIN_READS);
                }
            }
            self.advance();
        }
        for stream in STREAMS {
            self.lines.flush(stream);
        }
        // Every window still pending ends here.
        self.shared.offsets().boundaries.clear();
        self.lines.close_window();
    }

    /// How many bytes stream `i` may read before the next window boundary, if one is set.
    fn room(&self, i: usize) -> Option<u64> {
        let offsets = self.shared.offsets();
        let (front, read) = (offsets.boundaries.front()?, offsets.read.get(i)?);
        Some(front.get(i)?.saturating_sub(*read))
    }

    /// Closes every window whose boundary both streams have reached (or cannot reach).
    fn advance(&mut self) {
        loop {
            {
                let mut offsets = self.shared.offsets();
                let Some(front) = offsets.boundaries.front().copied() else {
                    return;
                };
                let reached = (0..2).all(|i| {
                    self.open.get(i) != Some(&true)
                        || offsets.read.get(i).copied().unwrap_or(0)
                            >= front.get(i).copied().unwrap_or(0)
                });
                if !reached {
                    return;
                }
                offsets.boundaries.pop_front();
                offsets.window_start = front;
            }
            self.lines.close_window();
        }
    }

    /// Up to `reads` reads from stream `i`, until it would block or reaches a boundary.
    fn read(&mut self, i: usize, buf: &mut [u8], reads: usize) {
        let Some(stream) = STREAMS.get(i).copied() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let Some(mut pipe) = shared.pipes.get(i) else {
            return;
        };
        for _ in 0..reads {
            if self.open.get(i) != Some(&true) {
                return;
            }
            // The count is updated under the lock the host takes to set a boundary, so a
            // boundary is always at or past what has been read.
            let mut offsets = shared.offsets();
            let room = offsets
                .boundaries
                .front()
                .and_then(|b| b.get(i))
                .map(|b| b.saturating_sub(offsets.read.get(i).copied().unwrap_or(0)));
            let len = match room {
                Some(0) => return,
                Some(room) => buf.len().min(usize::try_from(room).unwrap_or(usize::MAX)),
                None => buf.len(),
            };
            let Some(into) = buf.get_mut(..len) else {
                return;
            };
            match pipe.read(into) {
                Ok(0) => {
                    drop(offsets);
                    self.end_of(i, stream);
                    return;
                }
                Ok(n) => {
                    if let Some(r) = offsets.read.get_mut(i) {
                        *r = r.saturating_add(wide(n));
                    }
                    drop(offsets);
                    self.lines.feed(stream, into.get(..n).unwrap_or_default());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    drop(offsets);
                    self.end_of(i, stream);
                    return;
                }
            }
        }
    }

    fn end_of(&mut self, i: usize, stream: Stream) {
        if let Some(open) = self.open.get_mut(i) {
            *open = false;
        }
        self.lines.flush(stream);
    }
}

/// A line being assembled from one stream.
#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    /// Bytes of this line were dropped (cut at [`LINE_CAP`] or past the limit).
    truncated: bool,
}

/// Splits output into lines, applies the line cap and the per-window limit, and emits the
/// events. Pure bookkeeping: no descriptors, so it is tested on its own.
struct Lines {
    plugin: String,
    limit: usize,
    stdout: Pending,
    stderr: Pending,
    /// Bytes surfaced in the current window.
    used: usize,
    /// Bytes dropped in the current window because it reached the limit.
    dropped: u64,
}

impl Lines {
    fn new(plugin: String, limit: usize) -> Lines {
        Lines {
            plugin,
            limit,
            stdout: Pending::default(),
            stderr: Pending::default(),
            used: 0,
            dropped: 0,
        }
    }

    fn pending(&mut self, stream: Stream) -> &mut Pending {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    fn feed(&mut self, stream: Stream, data: &[u8]) {
        let mut rest = data;
        while let Some(at) = newline(rest) {
            let (text, tail) = rest.split_at(at);
            self.take(stream, text);
            self.end_line(stream);
            rest = tail.get(1..).unwrap_or_default();
        }
        self.take(stream, rest);
    }

    /// Adds text without a newline to the stream's line, within the line cap and the limit.
    fn take(&mut self, stream: Stream, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let room_budget = self.limit.saturating_sub(self.used);
        let pending = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let room_line = if pending.truncated {
            0
        } else {
            LINE_CAP.saturating_sub(pending.text.len())
        };
        let n = text.len().min(room_line).min(room_budget);
        let (kept, rest) = text.split_at(n);
        pending.text.extend_from_slice(kept);
        self.used = self.used.saturating_add(n);
        if !rest.is_empty() {
            pending.truncated = true;
            if room_budget <= room_line {
                self.dropped = self.dropped.saturating_add(wide(rest.len()));
            }
        }
    }

    /// A newline: it counts toward the limit like any byte, and the line is emitted.
    fn end_line(&mut self, stream: Stream) {
        if self.used < self.limit {
            self.used = self.used.saturating_add(1);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
        self.flush(stream);
    }

    /// Emits the stream's line so far, if it has any text.
    fn flush(&mut self, stream: Stream) {
        let line = std::mem::take(self.pending(stream));
        if line.text.is_empty() {
            return;
        }
        let text = escape(&String::from_utf8_lossy(&line.text));
        tracing::info!(
            target: TARGET,
            plugin = %self.plugin,
            stream = stream.name(),
            truncated = line.truncated,
            "{text}"
        );
    }

    /// The window ends: one warning if anything was dropped, then the count restarts.
    fn close_window(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                target: TARGET,
                plugin = %self.plugin,
                dropped = self.dropped,
                limit = self.limit,
                "plugin output past limits.log_bytes for this call was dropped"
            );
            crate::audit::limit(
                &self.plugin,
                "limits.log_bytes",
                u64::try_from(self.limit).unwrap_or(u64::MAX),
                self.dropped,
                &format_args!(
                    "{} bytes of output past the limit of {} for one call were dropped",
                    self.dropped, self.limit
                ),
            );
        }
        self.used = 0;
        self.dropped = 0;
    }
}

/// Where the first newline in `data` is. glibc's `memchr` rather than a loop over bytes:
/// a plugin may write hundreds of MiB, and the reader must keep up with it even in a debug
/// build, where an iterator is tens of times slower.
#[allow(unsafe_code)]
fn newline(data: &[u8]) -> Option<usize> {
    let start = data.as_ptr();
    // SAFETY: memchr reads at most `data.len()` bytes from `start`, all inside the slice,
    // and returns null or a pointer into it.
    let found = unsafe { libc::memchr(start.cast(), i32::from(b'\n'), data.len()) };
    if found.is_null() {
        return None;
    }
    (found as usize).checked_sub(start as usize)
}

fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
