//! The backend: sealed memfds and their mappings. All system calls of the
//! crate live here (rustix's linux_raw backend: no libc, errno untouched).

use crate::AttachError;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};

/// Seals every connection segment carries: a peer can never shrink the file
/// under the other side (SIGBUS), grow it, or lift the seals.
pub(crate) const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Creates a memfd of `size` bytes (zero-filled by the kernel), sealed.
pub(crate) fn create_sealed(name: &str, size: u64) -> Result<OwnedFd, AttachError> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size)?;
    rustix::fs::fcntl_add_seals(&fd, SEALS)?;
    Ok(fd)
}

/// Checks a peer's fd carries our seals and returns its size.
pub(crate) fn sealed_size(fd: BorrowedFd<'_>) -> Result<u64, AttachError> {
    sealed_stat(fd).map(|(size, _)| size)
}

/// As `sealed_size`, with the file's inode number (from the same fstat).
#[allow(clippy::unnecessary_cast)] // st_ino's type differs between architectures
pub(crate) fn sealed_stat(fd: BorrowedFd<'_>) -> Result<(u64, u64), AttachError> {
    let seals = rustix::fs::fcntl_get_seals(fd)?;
    if !seals.contains(SEALS) {
        return Err(AttachError::Invalid("memfd not sealed against shrinking"));
    }
    let st = rustix::fs::fstat(fd)?;
    let size = u64::try_from(st.st_size).map_err(|_| AttachError::Invalid("negative file size"))?;
    Ok((size, st.st_ino as u64))
}

/// Maps `len` bytes of `fd` shared, read-write.
pub(crate) fn map(
    fd: &OwnedFd,
    len: usize,
    populate: bool,
) -> Result<memmap2::MmapRaw, AttachError> {
    let mut opts = memmap2::MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    Ok(opts.map_raw(std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()))?)
}

/// The fields of a segment header, as read from the file.
pub(crate) struct HeaderCopy {
    pub magic: u64,
    pub version: u32,
    pub segment_count: u32,
    pub segment_bytes: u32,
    pub total_bytes: u64,
}

/// Reads a segment header from the start of `fd` (one pread: no mapping).
pub(crate) fn read_header(fd: BorrowedFd<'_>) -> Result<HeaderCopy, AttachError> {
    use crate::layout::SegmentHeader;
    use core::mem::offset_of;
    let mut b = [0u8; core::mem::size_of::<SegmentHeader>()];
    let mut got = 0;
    while got < b.len() {
        match rustix::io::pread(fd, &mut b[got..], got as u64) {
            Ok(0) => return Err(AttachError::Invalid("segment smaller than its header")),
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let u32_at = |o: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[o..o + 4]);
        u32::from_ne_bytes(w)
    };
    let u64_at = |o: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[o..o + 8]);
        u64::from_ne_bytes(w)
    };
    Ok(HeaderCopy {
        magic: u64_at(offset_of!(SegmentHeader, magic)),
        version: u32_at(offset_of!(SegmentHeader, version)),
        segment_count: u32_at(offset_of!(SegmentHeader, segment_count)),
        segment_bytes: u32_at(offset_of!(SegmentHeader, segment_bytes)),
        total_bytes: u64_at(offset_of!(SegmentHeader, total_bytes)),
    })
}
