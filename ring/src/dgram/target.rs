//! Target segments in memfds: the receiver creates one (claim 4:
//! "allocating a buffer for the target segment"), hands its fd to senders
//! over their links (the "descriptor" obtained from the manager), and each
//! sender maps its image after checking it.

use super::layout::*;
use super::recv::Receiver;
use super::{Image, Parts, Shared};
use crate::data::DataArea;
use crate::memfd;
use crate::sync::Ordering;
use crate::AttachError;
use rustix::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

/// Bytes of the header and group table, read with one pread on attach.
const HEAD_BYTES: usize = 64 + MAX_GROUPS * 32;

impl Receiver {
    /// Creates a target segment of `geo` in a sealed memfd (zero-filled by
    /// the kernel, pages touched lazily) and initialises it, for senders
    /// of our own uid.
    pub fn create(geo: DgramGeometry) -> Result<Receiver, AttachError> {
        Self::create_for(geo, rustix::process::geteuid().as_raw())
    }

    /// As [`create`](Self::create), for senders of `sender_uid` (one
    /// target segment per sender uid, so users never share pages).
    pub fn create_for(geo: DgramGeometry, sender_uid: u32) -> Result<Receiver, AttachError> {
        let total = geo.offsets().total;
        let fd = memfd::create_sealed("shmnet-dgram", total as u64)?;
        let sh = map_shared(&fd, geo)?;
        Ok(Receiver::init(Arc::new(sh), Some(fd), sender_uid))
    }
}

impl Image {
    /// Maps a sender's image of a receiver's target segment: checks seals,
    /// size, magic, version and geometry (each from one pread), then maps
    /// it and checks the version again with Acquire.
    pub fn attach(fd: BorrowedFd<'_>) -> Result<Image, AttachError> {
        let size = memfd::sealed_size(fd)?;
        let mut b = [0u8; HEAD_BYTES];
        pread_exact(fd, &mut b)?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
        if u64_at(0) != DGRAM_MAGIC {
            return Err(AttachError::Invalid("bad datagram magic"));
        }
        if u32_at(8) != DGRAM_VERSION {
            return Err(AttachError::Invalid("datagram layout version mismatch"));
        }
        let count = (u32_at(12) as usize).min(MAX_GROUPS + 1);
        if count > MAX_GROUPS {
            return Err(AttachError::Invalid("group count out of range"));
        }
        let groups: Vec<GroupGeometry> = (0..count)
            .map(|g| GroupGeometry {
                partition_bytes: u32_at(64 + 32 * g),
                partitions: u32_at(64 + 32 * g + 4),
                span_max: u32_at(64 + 32 * g + 8),
            })
            .collect();
        let geo =
            DgramGeometry::new(&groups, u32_at(16), u32_at(20)).map_err(AttachError::Invalid)?;
        let total = geo.offsets().total as u64;
        if u64_at(24) != total || size != total {
            return Err(AttachError::Invalid("size does not match geometry"));
        }
        let owned = fd.try_clone_to_owned()?;
        let sh = map_shared(&owned, geo)?;
        // SYNC POINT (e): Acquire pairs with the creator's Release of the
        // version, written after everything else it initialised.
        if sh.header().version.load(Ordering::Acquire) != DGRAM_VERSION {
            return Err(AttachError::Invalid("datagram layout version mismatch"));
        }
        Ok(Image { sh: Arc::new(sh) })
    }
}

fn pread_exact(fd: BorrowedFd<'_>, b: &mut [u8]) -> Result<(), AttachError> {
    let mut got = 0;
    while got < b.len() {
        match rustix::io::pread(fd, &mut b[got..], got as u64) {
            Ok(0) => return Err(AttachError::Invalid("segment smaller than its header")),
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Maps `fd` (at least `geo`'s size: checked by the caller or created so)
/// and points a [`Shared`] into it.
fn map_shared(fd: &OwnedFd, geo: DgramGeometry) -> Result<Shared, AttachError> {
    let o = geo.offsets();
    let raw = memfd::map(fd, o.total, false)?;
    let base = raw.as_mut_ptr();
    let at = |off: usize| {
        debug_assert!(off <= o.total);
        // SAFETY: every offset comes from `o`, inside the o.total-byte
        // mapping; its base is non-null.
        unsafe { NonNull::new_unchecked(base.add(off)) }
    };
    let mut hint_at = [0; MAX_GROUPS];
    let mut dir_at = [0; MAX_GROUPS];
    let mut data_at = [0; MAX_GROUPS];
    for g in 0..geo.group_count() {
        hint_at[g] = (o.hints[g] - o.hints[0]) / 8;
        dir_at[g] = (o.dirs[g] - o.dirs[0]) / core::mem::size_of::<DirEntry>();
        data_at[g] = o.data[g] - o.data_start;
    }
    // SAFETY: the data area is data_start..total of the mapping, which
    // `keep` keeps alive; a shared mapping of a memfd.
    let data = unsafe { DataArea::new_file(at(o.data_start).as_ptr(), o.total - o.data_start) };
    let keep: Arc<dyn Send + Sync> = Arc::new(raw);
    let p = Parts {
        header: at(0).cast(),
        groups: at(o.groups).cast(),
        receiver: at(o.receiver).cast(),
        charge: at(o.charge).cast(),
        ready: at(o.ready).cast(),
        hints: at(o.hints[0]).cast(),
        hint_at,
        slots: at(o.slots).cast(),
        cells: at(o.cells).cast(),
        dirs: at(o.dirs[0]).cast(),
        dir_at,
        data,
        data_at,
        keep,
    };
    // SAFETY: `geo.offsets()` places every array inside the mapping with
    // the counts `geo` gives, each aligned for its type (64-byte lines,
    // 8-byte hint words, 16-byte entries from a page-aligned base); the
    // `*_at` indices are the groups' distances from the first array.
    Ok(unsafe { Shared::new(p, geo) })
}
