//! The host ↔ worker protocol: length-prefixed, tagged, sequenced frames with a hard size cap.
//!
//! The worker runs plugin code, so everything it sends is hostile input. A frame is
//! `[u32 little-endian length][u8 tag][u64 little-endian sequence][payload]`, where the
//! length counts the tag, the sequence and the payload. A length over the reader's cap is
//! refused before anything is allocated, a length too short for the header or an unknown tag
//! is an error, and payloads are parsed strictly. The sequence number of a call's reply must
//! be the call's: a reply that answers another call (a stale or forged frame) is a
//! violation, never a result. [`decode_frame`] is a plain function on bytes, shared with the
//! fuzz target and the tests.

use std::io::{self, Read, Write};

/// Protocol version; the first frame each side sends carries it.
pub(crate) const PROTOCOL_VERSION: u32 = 2;
/// Bytes a frame adds around its payload: length, tag and sequence number.
pub(crate) const FRAME_OVERHEAD: usize = 13;
/// Bytes the length field counts besides the payload: tag and sequence number.
pub(crate) const COUNTED_HEADER: usize = 9;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// Host → worker: JSON, the worker's `Init` (everything it needs to restrict and load).
    Init = 1,
    /// Host → worker: a call's input, the context JSON bytes; the sequence names the call.
    Call = 2,
    /// Worker → host, before `dlopen`: JSON `Enforcement`, what the worker fixed on itself.
    Restricted = 3,
    /// Worker → host: why the plugin could not be loaded; the worker then exits.
    LoadFailed = 4,
    /// Worker → host: the bytes `vtcode_plugin_execute` returned (before the NUL).
    Output = 5,
    /// Worker → host: JSON fault of one call (NULL or oversize result).
    Fault = 6,
    /// Worker → host, after `dlopen`: what `vtcode_plugin_version` and
    /// `vtcode_plugin_metadata` returned, relayed for the host to check.
    Loaded = 7,
    /// Worker → host, during a call: a host tool request (`[u8 name length][name][JSON
    /// arguments]`, see `crate::base::host_abi`); the sequence is the call's.
    ToolRequest = 8,
    /// Host → worker, during a call: the answer to the tool request just read (JSON
    /// `{"ok":…}` or `{"error":{"kind","message"}}`); the sequence is the call's.
    ToolReply = 9,
    /// Worker → host, during a call: one progress message (JSON); no answer.
    Progress = 10,
}

impl Tag {
    fn from_byte(b: u8) -> Option<Tag> {
        Some(match b {
            1 => Tag::Init,
            2 => Tag::Call,
            3 => Tag::Restricted,
            4 => Tag::LoadFailed,
            5 => Tag::Output,
            6 => Tag::Fault,
            7 => Tag::Loaded,
            8 => Tag::ToolRequest,
            9 => Tag::ToolReply,
            10 => Tag::Progress,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Its kind.
    pub tag: Tag,
    /// The call it belongs to (0 for frames outside calls).
    pub seq: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A malformed or oversize frame, or a channel that failed while reading one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the channel (at a frame boundary).
    #[error("channel closed")]
    Closed,
    /// The channel failed, or closed inside a frame.
    #[error("channel I/O: {0}")]
    Io(io::Error),
    /// The announced length is over the cap.
    #[error("frame of {len} bytes exceeds the {cap}-byte cap")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// The announced length cannot hold the tag and sequence number.
    #[error("frame of {0} bytes is shorter than its header")]
    Short(u32),
    /// Unknown tag byte.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// Bytes left over after a whole frame (only from `decode_frame`).
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
}

// `From` without `source()`: the message already holds the inner error (crate::error docs).
impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// How a worker broke the protocol. Every one ends the worker and poisons the handle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A frame over the cap of what the host expected.
    #[error("frame of {len} bytes exceeds the {cap}-byte cap")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// A frame too short for its header.
    #[error("frame of {0} bytes is shorter than its header")]
    Short(u32),
    /// A tag byte no frame has.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// A frame the host did not expect at this point (e.g. a second enforcement report,
    /// a load failure after the plugin loaded, anything but a reply during a call).
    #[error("{tag:?} frame while {waiting}")]
    Unexpected {
        /// The frame's tag.
        tag: Tag,
        /// What the host was waiting for.
        waiting: &'static str,
    },
    /// A reply that names another call than the one in flight.
    #[error("reply for call {got} while call {expected} is in flight")]
    WrongSequence {
        /// The call in flight.
        expected: u64,
        /// The call the frame names.
        got: u64,
    },
    /// A payload that does not parse.
    #[error("malformed {tag:?} payload: {reason}")]
    Malformed {
        /// The frame's tag.
        tag: Tag,
        /// What is wrong with it.
        reason: PayloadError,
    },
    /// A reply in the shared call region whose length is over what its tag may carry (the
    /// region's reply area, and the output limit for an output).
    #[error("reply of {len} bytes in the call region exceeds the {cap}-byte cap")]
    RegionLength {
        /// The length the worker wrote.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// A reply tag in the shared call region that no reply has.
    #[error("unknown reply tag {0} in the call region")]
    RegionTag(u32),
    /// The worker closed its channel but did not exit.
    #[error("the worker closed its channel and lives on")]
    ChannelClosed,
    /// The worker's report of its own restrictions disagrees with what the host observes
    /// from outside (`/proc/<pid>/status`, `/proc/<pid>/ns/*`, `/proc/<pid>/limits`).
    #[error("worker reports {what} = {reported}, the host observes {observed}")]
    Unconfirmed {
        /// The property.
        what: &'static str,
        /// What the worker said.
        reported: String,
        /// What the host saw.
        observed: String,
    },
}

/// What is wrong with a frame's payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// A JSON payload (a report, a load failure, a fault) does not parse as its type.
    #[error("{0}")]
    Json(crate::base::json::JsonError),
    /// A host tool request that does not parse (`crate::base::host_abi`).
    #[error("{0}")]
    Request(crate::base::host_abi::RequestError),
    /// A `Loaded` payload ends before its 4-byte version.
    #[error("no version")]
    NoVersion,
    /// A `Loaded` payload ends before its metadata status byte.
    #[error("no metadata status")]
    NoMetadataStatus,
    /// The relayed metadata is longer than the output limit.
    #[error("metadata of {len} bytes, over the {limit}-byte output limit")]
    MetadataTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A metadata status byte no frame has, or bytes after a status that carries none.
    #[error("metadata status {status} with {len} bytes")]
    BadMetadataStatus {
        /// The status byte.
        status: u8,
        /// Bytes that followed it.
        len: usize,
    },
}

impl PayloadError {
    /// A JSON payload that did not parse (serde_json's error stays inside [`JsonError`]).
    ///
    /// [`JsonError`]: crate::base::json::JsonError
    pub(crate) fn json(e: serde_json::Error) -> Self {
        PayloadError::Json(crate::base::json::JsonError::new(e))
    }
}

impl ProtocolViolation {
    /// The violation a frame error means, for frame errors that are not channel failures.
    pub fn from_frame(e: FrameError) -> Result<ProtocolViolation, FrameError> {
        match e {
            FrameError::TooLarge { len, cap } => Ok(ProtocolViolation::TooLarge { len, cap }),
            FrameError::Short(len) => Ok(ProtocolViolation::Short(len)),
            FrameError::UnknownTag(t) => Ok(ProtocolViolation::UnknownTag(t)),
            other => Err(other),
        }
    }
}

/// Encodes one frame into a buffer (header and payload together, so a small frame goes
/// out with one `write`).
pub(crate) fn encode_frame(tag: Tag, seq: u64, payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len().saturating_add(COUNTED_HEADER))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut frame = Vec::with_capacity(payload.len().saturating_add(FRAME_OVERHEAD));
    frame.extend_from_slice(&len.to_le_bytes());
    frame.push(tag as u8);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Writes one frame.
pub(crate) fn write_frame(
    w: &mut impl Write,
    tag: Tag,
    seq: u64,
    payload: &[u8],
) -> io::Result<()> {
    w.write_all(&encode_frame(tag, seq, payload)?)?;
    w.flush()
}

/// Reads one frame whose tag, sequence and payload together are at most `cap` bytes.
pub(crate) fn read_frame(r: &mut impl Read, cap: usize) -> Result<Frame, FrameError> {
    let mut header = [0u8; FRAME_OVERHEAD];
    let mut got = 0;
    while got < FRAME_OVERHEAD {
        match r.read(header.get_mut(got..).unwrap_or_default()) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let [l0, l1, l2, l3, tag, s @ ..] = header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let seq = u64::from_le_bytes(s);
    let len_usize = usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len: len.into(),
        cap,
    })?;
    if len_usize > cap {
        return Err(FrameError::TooLarge {
            len: len.into(),
            cap,
        });
    }
    let Some(payload_len) = len_usize.checked_sub(COUNTED_HEADER) else {
        return Err(FrameError::Short(len));
    };
    let tag = Tag::from_byte(tag).ok_or(FrameError::UnknownTag(tag))?;
    let mut payload = vec![0u8; payload_len];
    r.read_exact(&mut payload)?;
    Ok(Frame { tag, seq, payload })
}

/// Decodes exactly one frame from a byte slice (fuzz and test entry point).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode_frame(bytes: &[u8], cap: usize) -> Result<Frame, FrameError> {
    let mut cursor = io::Cursor::new(bytes);
    let frame = read_frame(&mut cursor, cap)?;
    let rest = bytes
        .len()
        .saturating_sub(usize::try_from(cursor.position()).unwrap_or(usize::MAX));
    if rest != 0 {
        return Err(FrameError::Trailing(rest));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn header(len: u32, tag: u8, seq: u64) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.push(tag);
        v.extend_from_slice(&seq.to_le_bytes());
        v
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Tag::Output, 7, b"hello").unwrap();
        assert_eq!(buf.len(), 5 + FRAME_OVERHEAD);
        let f = decode_frame(&buf, 64).unwrap();
        assert_eq!(
            (f.tag, f.seq, f.payload),
            (Tag::Output, 7, b"hello".to_vec())
        );
    }

    #[test]
    fn hostile_frames_are_refused_before_allocation() {
        let huge = header(u32::MAX, 5, 1);
        assert!(matches!(
            decode_frame(&huge, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_frame(&header(0, 1, 0), 64),
            Err(FrameError::Short(0))
        ));
        assert!(matches!(
            decode_frame(&header(8, 1, 0), 64),
            Err(FrameError::Short(8))
        ));
        assert!(matches!(
            decode_frame(&[0, 0, 0], 64),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            decode_frame(&header(9, 99, 0), 64),
            Err(FrameError::UnknownTag(99))
        ));
        assert!(matches!(decode_frame(&[], 64), Err(FrameError::Closed)));
        let mut cut = header(17, 5, 0);
        cut.push(1);
        assert!(matches!(decode_frame(&cut, 64), Err(FrameError::Io(_))));
        let mut extra = header(9, 5, 0);
        extra.push(7);
        assert!(matches!(
            decode_frame(&extra, 64),
            Err(FrameError::Trailing(1))
        ));
        let mut buf = Vec::new();
        write_frame(&mut buf, Tag::Output, 0, &[0u8; 100]).unwrap();
        assert!(matches!(
            decode_frame(&buf, 100),
            Err(FrameError::TooLarge { len: 109, cap: 100 })
        ));
    }
}
