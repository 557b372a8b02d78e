//! The verified bytes, sealed in memory.
//!
//! The threat: the library on disk is swapped or rewritten between the moment its hash is
//! checked and the moment the dynamic loader maps it. So the bytes are copied, while they
//! are hashed, into an anonymous memory file (`memfd_create`) that nobody else can name,
//! and that file is then sealed against writing, shrinking and growing, with the seals
//! themselves sealed. From then on its contents cannot change through any descriptor or
//! mapping, so what was hashed is exactly what `dlopen("/proc/self/fd/N")` maps.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

/// The seals a [`SealedFile`] carries.
pub(crate) fn required_seals() -> SealFlags {
    SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// Builds a memfd that the verified bytes are written into (with `write(2)` only, so no
/// writable mapping can exist to make sealing fail or outlive it).
#[derive(Debug)]
pub(crate) struct SealedBuilder {
    file: File,
    len: u64,
}

impl SealedBuilder {
    /// Creates an empty memfd with `MFD_ALLOW_SEALING | MFD_CLOEXEC`. `name` only shows up
    /// in `/proc/self/fd` listings; it must not contain NUL.
    ///
    /// `MFD_EXEC` is asked for as well, because the loader maps the file executable and a
    /// kernel with `vm.memfd_noexec = 1` would otherwise make it non-executable; kernels
    /// older than 6.3 do not know the flag, and are asked again without it.
    pub(crate) fn new(name: &str) -> io::Result<Self> {
        let flags = MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC;
        let fd = match rustix::fs::memfd_create(name, flags | MemfdFlags::EXEC) {
            Err(Errno::INVAL) => rustix::fs::memfd_create(name, flags)?,
            other => other?,
        };
        Ok(Self {
            file: File::from(fd),
            len: 0,
        })
    }

    /// Seals the file (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), then
    /// checks that all four seals are set and that the size is what was written.
    pub(crate) fn seal(self) -> io::Result<SealedFile> {
        let wanted = required_seals();
        rustix::fs::fcntl_add_seals(&self.file, wanted)?;
        let got = rustix::fs::fcntl_get_seals(&self.file)?;
        if !got.contains(wanted) {
            return Err(io::Error::other(format!(
                "memfd seals incomplete: wanted {wanted:?}, got {got:?}"
            )));
        }
        let size = rustix::fs::fstat(&self.file)?.st_size;
        if u64::try_from(size).ok() != Some(self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sealed memfd holds {size} bytes, {} were written", self.len),
            ));
        }
        Ok(SealedFile {
            fd: OwnedFd::from(self.file),
            len: self.len,
        })
    }
}

impl Write for SealedBuilder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        let added = u64::try_from(written).map_err(io::Error::other)?;
        self.len = self
            .len
            .checked_add(added)
            .ok_or_else(|| io::Error::other("memfd length overflowed"))?;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The most bytes a verified library may have to be held on the heap until it is loaded
/// ([`VerifiedBytes::Held`]); a larger one is sealed as it is hashed.
pub(crate) const HELD_MAX: u64 = 1024 * 1024;

/// A verified library's bytes between verification and loading.
///
/// A small library (1 byte to [`HELD_MAX`]) is held in this process's heap and sealed into
/// a memfd only when it is loaded ([`VerifiedBytes::into_sealed`]): verifying a thousand
/// plugins that are then listed, not loaded ([`crate::Gate::verify_many`]), makes no memfd
/// per plugin. Creating, writing, sealing, reading back and closing one was about a sixth
/// of the time of verifying a 20 KiB plugin. The heap copy is as safe from the threat this
/// module answers as the memfd: no other process can name it or write it (one that can
/// write this process's memory has won already), so the bytes sealed at load are the
/// bytes that were hashed. A larger library is copied into its memfd while it is hashed,
/// as before, so it is never held twice.
#[derive(Debug)]
pub(crate) enum VerifiedBytes {
    /// On the heap, exactly the bytes hashed.
    Held(Vec<u8>),
    /// In a sealed memfd.
    Sealed(SealedFile),
}

impl VerifiedBytes {
    /// The bytes in a sealed memfd: held bytes are written into a new one (`name` as in
    /// [`SealedBuilder::new`]) and sealed now.
    pub(crate) fn into_sealed(self, name: &str) -> io::Result<SealedFile> {
        match self {
            VerifiedBytes::Sealed(file) => Ok(file),
            VerifiedBytes::Held(bytes) => {
                let mut builder = SealedBuilder::new(name)?;
                builder.write_all(&bytes)?;
                builder.seal()
            }
        }
    }
}

/// An immutable in-memory file: its contents can no longer change, so what was hashed is
/// what gets mapped.
#[derive(Debug)]
pub(crate) struct SealedFile {
    fd: OwnedFd,
    len: u64,
}

impl SealedFile {
    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The descriptor.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `/proc/self/fd/N`, the name `dlopen` is given. Valid only while `self` lives.
    pub(crate) fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Options mapping the whole file. An empty file cannot be mapped (`InvalidInput`).
    ///
    /// Why mapping is sound: memmap2 requires that the mapped file is not modified or
    /// truncated while the map lives. The memfd carries F_SEAL_WRITE and F_SEAL_SHRINK
    /// (checked by `seal` and `from_inherited`, the only ways to build a SealedFile), and
    /// F_SEAL_SEAL means those seals can never be removed; `len` equals the sealed size, so
    /// the whole map is backed.
    fn whole_file(&self) -> io::Result<memmap2::MmapOptions> {
        if self.len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty sealed file cannot be mapped",
            ));
        }
        let mut options = memmap2::MmapOptions::new();
        options.len(usize::try_from(self.len).map_err(io::Error::other)?);
        Ok(options)
    }

    /// Maps the contents read-only. An empty file cannot be mapped (`InvalidInput`).
    #[allow(unsafe_code)]
    pub(crate) fn map(&self) -> io::Result<memmap2::Mmap> {
        let options = self.whole_file()?;
        // SAFETY: the file is sealed against writes and shrinking for good (see
        // `whole_file`), so nothing can change the mapped bytes.
        unsafe { options.map(&self.fd) }
    }

    /// A private, copy-on-write mapping: writes to it stay in this process's memory (only
    /// the pages written are copied) and never reach the sealed file.
    #[allow(unsafe_code)]
    pub(crate) fn map_private(&self) -> io::Result<memmap2::MmapMut> {
        let options = self.whole_file()?;
        // SAFETY: as for `map`, pages not yet copied can never change under the mapping;
        // MAP_PRIVATE keeps this process's writes out of the file.
        unsafe { options.map_copy(&self.fd) }
    }

    /// A private copy of the contents on the heap, read with `pread` (the descriptor's
    /// offset is left alone); the tests read sealed files back with it.
    /// Refused (`InvalidInput`) above `max` bytes; a short file is `UnexpectedEof`, a longer
    /// one `InvalidData` (neither can happen to a sealed file: checked all the same).
    #[cfg(test)]
    pub(crate) fn read_copy(&self, max: u64) -> io::Result<Vec<u8>> {
        if self.len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("sealed file of {} bytes is over {max}", self.len),
            ));
        }
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        // One byte more than the length, so a file longer than sealed is seen by the read
        // that reaches its end (a regular file's read returns every byte asked that exists).
        // Read into the spare capacity: nothing is zeroed first only to be overwritten.
        let room = len
            .checked_add(1)
            .ok_or_else(|| io::Error::other("sealed file length overflowed"))?;
        let mut bytes = Vec::with_capacity(room);
        while bytes.len() < len {
            let offset = u64::try_from(bytes.len()).map_err(io::Error::other)?;
            match rustix::io::pread(&self.fd, rustix::buffer::spare_capacity(&mut bytes), offset) {
                Ok(0) => break,
                Ok(_) => {}
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match bytes.len().cmp(&len) {
            std::cmp::Ordering::Less => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("sealed file gave {} of its {len} bytes", bytes.len()),
            )),
            std::cmp::Ordering::Greater => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sealed file holds more than its {len} bytes"),
            )),
            std::cmp::Ordering::Equal => Ok(bytes),
        }
    }

    /// Adopts a descriptor handed over by another process (the worker's inherited memfd),
    /// refusing it unless all four seals are already set: the receiver does not take the
    /// sender's word that the bytes cannot change.
    pub(crate) fn from_inherited(fd: OwnedFd) -> io::Result<SealedFile> {
        let got = rustix::fs::fcntl_get_seals(&fd)?;
        if !got.contains(required_seals()) {
            return Err(io::Error::other(format!(
                "inherited descriptor is not sealed: {got:?}"
            )));
        }
        let size = rustix::fs::fstat(&fd)?.st_size;
        let len = u64::try_from(size).map_err(io::Error::other)?;
        Ok(SealedFile { fd, len })
    }

    /// Gives up the descriptor (the seals stay with the file).
    pub(crate) fn into_owned_fd(self) -> OwnedFd {
        self.fd
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    fn sealed(bytes: &[u8]) -> SealedFile {
        let mut builder = SealedBuilder::new("skillgate-test").unwrap();
        builder.write_all(bytes).unwrap();
        let sealed = builder.seal().unwrap();
        assert_eq!(sealed.len(), bytes.len() as u64);
        sealed
    }

    #[test]
    fn writes_then_seals_with_all_four_seals() {
        let file = sealed(b"verified bytes");
        assert_eq!(file.len(), 14);
        assert_ne!(file.len(), 0);
        let seals = rustix::fs::fcntl_get_seals(file.as_fd()).unwrap();
        assert!(seals.contains(required_seals()), "{seals:?}");
    }

    #[test]
    fn held_bytes_are_sealed_at_last_with_all_four_seals_and_the_same_bytes() {
        let held = VerifiedBytes::Held(b"verified bytes".to_vec());
        let file = held.into_sealed("skillgate-test").unwrap();
        assert_eq!(file.len(), 14);
        let seals = rustix::fs::fcntl_get_seals(file.as_fd()).unwrap();
        assert!(seals.contains(required_seals()), "{seals:?}");
        assert_eq!(file.read_copy(1024).unwrap(), b"verified bytes");
        // Already sealed: handed back as it is, the same descriptor.
        let sealed_before = sealed(b"other");
        let fd = sealed_before.as_fd().as_raw_fd();
        let again = VerifiedBytes::Sealed(sealed_before)
            .into_sealed("unused")
            .unwrap();
        assert_eq!(again.as_fd().as_raw_fd(), fd);
    }

    #[test]
    fn sealed_file_refuses_writes_and_resizing() {
        let file = sealed(b"verified bytes");
        let mut writer = File::from(file.as_fd().try_clone_to_owned().unwrap());
        writer.seek(SeekFrom::Start(0)).unwrap();
        let err = writer.write(b"X").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let err = rustix::fs::ftruncate(file.as_fd(), 2).unwrap_err();
        assert_eq!(err, Errno::PERM);
        let err = rustix::fs::ftruncate(file.as_fd(), 100).unwrap_err();
        assert_eq!(err, Errno::PERM);
        let err = rustix::fs::fcntl_add_seals(file.as_fd(), SealFlags::FUTURE_WRITE).unwrap_err();
        assert_eq!(err, Errno::PERM);
        let size = rustix::fs::fstat(file.as_fd()).unwrap().st_size;
        assert_eq!(size, 14);
    }

    #[test]
    fn map_returns_the_same_bytes() {
        let bytes: Vec<u8> = (0..100_000_u32).map(|i| (i % 253) as u8).collect();
        let file = sealed(&bytes);
        let map = file.map().unwrap();
        assert_eq!(&map[..], &bytes[..]);
    }

    #[test]
    fn a_private_map_is_writable_and_its_writes_never_reach_the_file() {
        let bytes: Vec<u8> = (0..100_000_u32).map(|i| (i % 251) as u8).collect();
        let file = sealed(&bytes);
        let mut private = file.map_private().unwrap();
        assert_eq!(&private[..], &bytes[..]);
        private[0] ^= 0xff;
        private[99_999] ^= 0xff;
        assert_eq!(&file.map().unwrap()[..], &bytes[..]);
        assert_eq!(&file.map_private().unwrap()[..], &bytes[..]);
    }

    #[test]
    fn read_copy_returns_the_same_bytes_and_respects_its_cap() {
        let bytes: Vec<u8> = (0..100_000_u32).map(|i| (i % 249) as u8).collect();
        let file = sealed(&bytes);
        let offset = rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Current(0)).unwrap();
        assert_eq!(file.read_copy(100_000).unwrap(), bytes);
        // The descriptor's offset is not moved (pread), so a second copy is whole too.
        assert_eq!(file.read_copy(u64::MAX).unwrap(), bytes);
        let after = rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Current(0)).unwrap();
        assert_eq!(offset, after);
        let err = file.read_copy(99_999).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(sealed(b"").read_copy(10).unwrap(), b"");
    }

    #[test]
    fn empty_file_is_not_mapped() {
        let file = sealed(b"");
        assert_eq!(file.len(), 0);
        let err = file.map().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn proc_path_opens_the_same_content() {
        let file = sealed(b"through proc");
        let mut read = Vec::new();
        File::open(file.proc_path())
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, b"through proc");
        // Opening it for writing through /proc is refused by the seals too.
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(file.proc_path())
            .and_then(|mut f| f.write_all(b"Z"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn into_owned_fd_keeps_the_seals() {
        let fd = sealed(b"abc").into_owned_fd();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(required_seals()));
    }
}
