//! Integrity work: the SHA-256 of a plugin file, computed on the one read of it.
//!
//! The threat is a gap between the bytes checked and the bytes used: a file hashed on one
//! read and copied on another can change in between. So a [`PluginFile`] is read exactly
//! once (by `PluginFile::read_chunks`, which refuses a file that grows, shrinks or passes
//! its cap while read), and each chunk goes to the hasher and, for the library, to the
//! sealed memfd that will be mapped: the digest compared with the signed manifest is the
//! digest of the bytes copied. Signing ([`crate::sign`]) hashes with the same function, so
//! an author's manifest and a host's check cannot disagree about a file.
//!
//! Hashing a large library is slower than copying it, so it runs on a helper thread while
//! the next chunk is read; the buffer handed to the hasher is the buffer that was copied.

use std::io::Write;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::pipeline::locate::{LocateError, PluginFile};

/// Files at least this large that are copied while hashed are hashed on a helper thread.
const PIPELINE_MIN: u64 = 4 * 1024 * 1024;
/// Size of each buffer of the hashing pipeline.
const PIPELINE_CHUNK: usize = 256 * 1024;
/// Most buffers of the hashing pipeline in existence at once.
const PIPELINE_BUFFERS: usize = 4;

/// The SHA-256 of a file and how many bytes it held when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileDigest {
    /// The digest.
    pub(crate) sha256: [u8; 32],
    /// The bytes read (the `fstat` size: another count is refused).
    pub(crate) len: u64,
}

/// Reads the whole file once, feeding every byte to SHA-256 and, if given, to `sink`.
/// Refuses if more than `cap` bytes, or another count than `fstat` reported, arrive
/// (the file changed under us).
///
/// A large file copied to a sink (the library into its sealed memfd) is hashed on a
/// helper thread while the next chunk is read and copied: each chunk is one owned
/// buffer that goes to the sink, then to the hasher, and is reused only when the hasher
/// hands it back, so the hashed bytes are exactly the copied bytes. At most
/// `PIPELINE_BUFFERS` buffers of `PIPELINE_CHUNK` bytes exist at once.
pub(crate) fn digest_file(
    file: PluginFile,
    cap: u64,
    sink: Option<&mut dyn Write>,
) -> Result<FileDigest, LocateError> {
    let (sha256, len) = match sink {
        Some(sink) if file.size() >= PIPELINE_MIN => pipelined(file, cap, sink)?,
        sink => serial(file, cap, sink)?,
    };
    Ok(FileDigest { sha256, len })
}

fn serial(
    file: PluginFile,
    cap: u64,
    mut sink: Option<&mut dyn Write>,
) -> Result<([u8; 32], u64), LocateError> {
    let path = file.path().to_path_buf();
    let mut hasher = Sha256::new();
    let read = file.read_all(cap, |chunk| {
        hasher.update(chunk);
        if let Some(sink) = sink.as_mut() {
            sink.write_all(chunk).map_err(|source| LocateError::Sink {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    })?;
    Ok((hasher.finalize().into(), read))
}

fn pipelined(
    file: PluginFile,
    cap: u64,
    sink: &mut dyn Write,
) -> Result<([u8; 32], u64), LocateError> {
    let path = file.path().to_path_buf();
    let gone = || LocateError::Io {
        path: path.clone(),
        source: std::io::Error::other("the hashing thread stopped"),
    };
    std::thread::scope(|scope| {
        let (to_hasher, chunks) = mpsc::sync_channel::<(Vec<u8>, usize)>(PIPELINE_BUFFERS);
        let (give_back, returned) = mpsc::channel::<Vec<u8>>();
        let hasher = std::thread::Builder::new()
            .name("skillgate-hash".into())
            .spawn_scoped(scope, move || {
                let mut hasher = Sha256::new();
                for (buf, len) in chunks {
                    hasher.update(buf.get(..len).unwrap_or_default());
                    // The reader may have stopped on an error; then nobody reuses it.
                    let _ = give_back.send(buf);
                }
                <[u8; 32]>::from(hasher.finalize())
            });
        let Ok(hasher) = hasher else {
            return serial(file, cap, Some(sink));
        };
        let mut buffers = 1;
        let read = file.read_chunks(cap, vec![0_u8; PIPELINE_CHUNK], |buf, len| {
            sink.write_all(buf.get(..len).unwrap_or_default())
                .map_err(|source| LocateError::Sink {
                    path: path.clone(),
                    source,
                })?;
            to_hasher.send((buf, len)).map_err(|_| gone())?;
            match returned.try_recv() {
                Ok(buf) => Ok(buf),
                Err(_) if buffers < PIPELINE_BUFFERS => {
                    buffers += 1;
                    Ok(vec![0_u8; PIPELINE_CHUNK])
                }
                Err(_) => returned.recv().map_err(|_| gone()),
            }
        });
        drop(to_hasher);
        let digest = hasher.join().map_err(|_| gone())?;
        Ok((digest, read?))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::pipeline::locate::Resolver;
    use crate::pipeline::locate::tests::{Fixture, RESOLVERS};
    use std::fs;

    /// [`digest_file`] as a pair (digest, bytes read).
    fn hash(
        file: PluginFile,
        cap: u64,
        sink: Option<&mut dyn Write>,
    ) -> Result<([u8; 32], u64), LocateError> {
        digest_file(file, cap, sink).map(|d| (d.sha256, d.len))
    }

    #[test]
    fn the_digest_is_sha256_and_the_sink_gets_every_byte() {
        let fx = Fixture::new();
        let big: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
        fs::write(fx.p("trusted/plugin/big.bin"), &big).unwrap();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            let file = dir.open_file("big.bin", 1 << 20).unwrap();
            assert_eq!(file.size(), big.len() as u64);
            assert!(file.path().ends_with("big.bin"), "{:?}", file.path());
            let mut copy = Vec::new();
            let (digest, n) = hash(file, 1 << 20, Some(&mut copy)).unwrap();
            assert_eq!(n, big.len() as u64);
            assert_eq!(copy, big, "{r:?}");
            let expected: [u8; 32] = Sha256::digest(&big).into();
            assert_eq!(digest, expected, "{r:?}");

            let file = dir.open_file("sub/data.txt", 1 << 20).unwrap();
            let (digest, n) = hash(file, 1 << 20, None).unwrap();
            assert_eq!(n, 4);
            let expected: [u8; 32] = Sha256::digest(b"data").into();
            assert_eq!(digest, expected);

            // A smaller cap at hashing time than at opening is honoured.
            let file = dir.open_file("lib.so", 100).unwrap();
            let err = hash(file, 4, None).unwrap_err();
            assert!(
                matches!(err, LocateError::TooLarge { .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn large_copied_file_is_hashed_on_the_pipeline_byte_for_byte() {
        let fx = Fixture::new();
        // Over PIPELINE_MIN and not a multiple of PIPELINE_CHUNK.
        let len = PIPELINE_MIN as usize + 3 * PIPELINE_CHUNK + 12_345;
        let big: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        fs::write(fx.p("trusted/plugin/huge.bin"), &big).unwrap();
        let expected: [u8; 32] = Sha256::digest(&big).into();
        for r in RESOLVERS {
            let dir = fx.plugin(r);
            let file = dir.open_file("huge.bin", 1 << 30).unwrap();
            let mut copy = Vec::new();
            let (digest, n) = hash(file, 1 << 30, Some(&mut copy)).unwrap();
            assert_eq!(n, len as u64, "{r:?}");
            assert!(copy == big, "{r:?}: the copy differs");
            assert_eq!(digest, expected, "{r:?}");
            // The cap is still enforced before anything is read.
            let file = dir.open_file("huge.bin", 1 << 30).unwrap();
            let err = hash(file, len as u64 - 1, Some(&mut Vec::new())).unwrap_err();
            assert!(
                matches!(err, LocateError::TooLarge { .. }),
                "{r:?}: {err:?}"
            );
        }
    }

    #[test]
    fn large_file_growing_during_the_pipeline_is_refused() {
        let fx = Fixture::new();
        let target = fx.p("trusted/plugin/grows-big.bin");
        let len = PIPELINE_MIN as usize + 1;
        fs::write(&target, vec![7_u8; len]).unwrap();
        let dir = fx.plugin(Resolver::Openat2);
        let file = dir.open_file("grows-big.bin", 1 << 30).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .unwrap()
            .write_all(b"appended")
            .unwrap();
        let err = hash(file, 1 << 30, Some(&mut Vec::new())).unwrap_err();
        assert!(matches!(err, LocateError::Changed { .. }), "{err:?}");
    }

    #[test]
    fn file_changing_after_open_is_refused() {
        let fx = Fixture::new();
        for r in RESOLVERS {
            let target = fx.p("trusted/plugin/grows.bin");
            fs::write(&target, b"0123456789").unwrap();
            let dir = fx.plugin(r);

            let file = dir.open_file("grows.bin", 1 << 20).unwrap();
            let mut f = fs::OpenOptions::new().append(true).open(&target).unwrap();
            f.write_all(b"more bytes").unwrap();
            let mut copy = Vec::new();
            let err = hash(file, 1 << 20, Some(&mut copy)).unwrap_err();
            assert!(
                matches!(
                    err,
                    LocateError::Changed {
                        expected: 10,
                        actual: 11,
                        ..
                    }
                ),
                "{r:?}: {err:?}"
            );
            assert!(
                copy.len() <= 10 && b"0123456789".starts_with(&copy),
                "{r:?}: nothing past the fstat size is fed"
            );

            fs::write(&target, b"0123456789").unwrap();
            let file = dir.open_file("grows.bin", 10).unwrap();
            f.write_all(b"x").unwrap();
            let err = hash(file, 10, None).unwrap_err();
            assert!(
                matches!(err, LocateError::TooLarge { .. }),
                "{r:?}: {err:?}"
            );

            fs::write(&target, b"0123456789").unwrap();
            let file = dir.open_file("grows.bin", 1 << 20).unwrap();
            fs::write(&target, b"0123").unwrap();
            let err = hash(file, 1 << 20, None).unwrap_err();
            assert!(
                matches!(
                    err,
                    LocateError::Changed {
                        expected: 10,
                        actual: 4,
                        ..
                    }
                ),
                "{r:?}: {err:?}"
            );
        }
    }
}
