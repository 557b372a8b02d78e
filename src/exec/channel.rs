//! The host's end of a worker's socket, bounded in time: a hostile worker that stops
//! reading or writing holds no host thread past the call's deadline.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::base::protocol::{Tag, encode_frame};

/// How far past its deadline a read may wait before the socket's timeout is lowered (one
/// `setsockopt`). The timeout set for a call's full duration is reused by the next call
/// instead of being set again before every call.
const DEADLINE_SLACK: Duration = Duration::from_millis(1);
/// The host's end of the socket. Every `read` and `write` ends by the current deadline:
/// the socket's timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`) are lowered whenever they would let
/// a syscall wait more than [`DEADLINE_SLACK`] past the deadline, and one that times out
/// early is retried with the time that is left.
pub(super) struct Channel {
    stream: UnixStream,
    pub(super) deadline: Instant,
    /// The receive timeout currently set on the socket (`None`: none set yet).
    armed_read: Option<Duration>,
    /// The send timeout currently set on the socket (`None`: none set yet).
    armed_write: Option<Duration>,
}

pub(super) fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Channel {
    pub(super) fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            deadline: Instant::now(),
            armed_read: None,
            armed_write: None,
        }
    }

    /// The socket (to poll it).
    pub(super) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The time left, or `TimedOut`; re-arms the socket's timeout if it would overrun.
    fn remaining(&mut self, write: bool) -> io::Result<Duration> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let armed = if write {
            self.armed_write
        } else {
            self.armed_read
        };
        if armed.is_none_or(|armed| armed > remaining.saturating_add(DEADLINE_SLACK)) {
            self.set_timeout(write, remaining)?;
        }
        Ok(remaining)
    }

    /// Sets the socket's send or receive timeout and remembers it.
    fn set_timeout(&mut self, write: bool, timeout: Duration) -> io::Result<()> {
        if write {
            self.stream.set_write_timeout(Some(timeout))?;
            self.armed_write = Some(timeout);
        } else {
            self.stream.set_read_timeout(Some(timeout))?;
            self.armed_read = Some(timeout);
        }
        Ok(())
    }

    /// After a syscall timed out: lowers the timeout to what is left (it timed out early
    /// when an earlier, shorter timeout was still set), or reports the deadline passed.
    fn rearm(&mut self, write: bool) -> io::Result<()> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.set_timeout(write, remaining)
    }

    /// Writes a whole frame before the deadline.
    pub(super) fn send(&mut self, tag: Tag, seq: u64, payload: &[u8]) -> io::Result<()> {
        let frame = encode_frame(tag, seq, payload)?;
        let mut sent = 0;
        while sent < frame.len() {
            self.remaining(true)?;
            match self.stream.write(frame.get(sent..).unwrap_or_default()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => self.rearm(true)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.remaining(false)?;
            match self.stream.read(buf) {
                Err(e) if timed_out(&e) => self.rearm(false)?,
                other => return other,
            }
        }
    }
}
