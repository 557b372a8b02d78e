//! The host ↔ worker protocol: length-prefixed, tagged frames with a hard size cap.
//!
//! The worker runs plugin code, so everything it sends is hostile input. A frame is
//! `[u32 little-endian length][u8 tag][payload]`, where the length counts the tag and the
//! payload; a length over the reader's cap is refused before anything is allocated, an
//! unknown tag is an error, and JSON payloads are parsed strictly. [`decode_frame`] is a
//! plain function on bytes, shared with the fuzz target and the tests.

use std::io::{self, Read, Write};

/// Protocol version; the first frame each side sends carries it.
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes a frame adds around its payload: length and tag.
pub const FRAME_OVERHEAD: usize = 5;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// Host → worker: JSON [`crate::worker::Init`].
    Init = 1,
    /// Host → worker: a call's input, the context JSON bytes.
    Call = 2,
    /// Worker → host: JSON `Enforcement`; the plugin is loaded and checked.
    Ready = 3,
    /// Worker → host: JSON load error; the worker then exits.
    LoadFailed = 4,
    /// Worker → host: the bytes `vtcode_plugin_execute` returned (before the NUL).
    Output = 5,
    /// Worker → host: JSON fault of one call (NULL or oversize result).
    Fault = 6,
}

impl Tag {
    fn from_byte(b: u8) -> Option<Tag> {
        Some(match b {
            1 => Tag::Init,
            2 => Tag::Call,
            3 => Tag::Ready,
            4 => Tag::LoadFailed,
            5 => Tag::Output,
            6 => Tag::Fault,
            _ => return None,
        })
    }
}

/// A malformed or oversize frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the channel (at a frame boundary).
    #[error("channel closed")]
    Closed,
    /// The channel failed, or closed inside a frame.
    #[error("channel I/O: {0}")]
    Io(#[from] io::Error),
    /// The announced length is over the cap.
    #[error("frame of {len} bytes exceeds the {cap}-byte cap")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// A zero-length frame (no tag).
    #[error("empty frame")]
    Empty,
    /// Unknown tag byte.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// Bytes left over after a whole frame (only from [`decode_frame`]).
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
}

/// Writes one frame (one `write` for small frames: header and payload together).
pub fn write_frame(w: &mut impl Write, tag: Tag, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len().saturating_add(1))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut frame = Vec::with_capacity(payload.len().saturating_add(FRAME_OVERHEAD));
    frame.extend_from_slice(&len.to_le_bytes());
    frame.push(tag as u8);
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one frame whose tag and payload together are at most `cap` bytes.
pub fn read_frame(r: &mut impl Read, cap: usize) -> Result<(Tag, Vec<u8>), FrameError> {
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
    let [l0, l1, l2, l3, tag] = header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
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
    if len_usize == 0 {
        return Err(FrameError::Empty);
    }
    let tag = Tag::from_byte(tag).ok_or(FrameError::UnknownTag(tag))?;
    let mut payload = vec![0u8; len_usize - 1];
    r.read_exact(&mut payload)?;
    Ok((tag, payload))
}

/// Decodes exactly one frame from a byte slice (fuzz and test entry point).
pub fn decode_frame(bytes: &[u8], cap: usize) -> Result<(Tag, Vec<u8>), FrameError> {
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

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Tag::Output, b"hello").unwrap();
        assert_eq!(buf.len(), 5 + FRAME_OVERHEAD);
        assert_eq!(
            decode_frame(&buf, 64).unwrap(),
            (Tag::Output, b"hello".to_vec())
        );
    }

    #[test]
    fn hostile_frames_are_refused_before_allocation() {
        let huge = [0xff, 0xff, 0xff, 0xff, 5];
        assert!(matches!(
            decode_frame(&huge, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_frame(&[0, 0, 0, 0, 1], 64),
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            decode_frame(&[0, 0, 0], 64),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            decode_frame(&[1, 0, 0, 0, 99], 64),
            Err(FrameError::UnknownTag(99))
        ));
        assert!(matches!(decode_frame(&[], 64), Err(FrameError::Closed)));
        assert!(matches!(
            decode_frame(&[9, 0, 0, 0, 5, 1], 64),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            decode_frame(&[1, 0, 0, 0, 5, 7], 64),
            Err(FrameError::Trailing(1))
        ));
        let mut buf = Vec::new();
        write_frame(&mut buf, Tag::Output, &[0u8; 100]).unwrap();
        assert!(matches!(
            decode_frame(&buf, 100),
            Err(FrameError::TooLarge { len: 101, cap: 100 })
        ));
    }
}
