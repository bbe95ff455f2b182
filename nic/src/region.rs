//! A NIC region: one sealed memfd holding every partition's queues and
//! packet buffers. The creator initialises the header and the ports; every
//! partition attaches to the fd (its own mapping, as a separate process
//! would), validates the header and keeps a private copy of the geometry.

use crate::layout::{
    Descriptor, Geometry, PortLine, QueueControl, RegionHeader, SharedLayout, LAYOUT_VERSION,
    MAGIC, PORT_UP,
};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};
use std::io;
use std::sync::atomic::Ordering;

/// A peer can never shrink the file under the others (SIGBUS), grow it, or
/// lift the seals.
const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// One mapping of a region.
pub struct Region {
    raw: memmap2::MmapRaw,
    geo: Geometry,
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Region {
    /// Creates a region's memfd (zero-filled by the kernel), initialises it,
    /// and returns the fd for the partitions to [`attach`](Self::attach).
    pub fn create(geo: Geometry) -> io::Result<OwnedFd> {
        let total = geo.total_bytes();
        let fd = rustix::fs::memfd_create(
            "shmnet-nic",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, total as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SEALS)?;
        let region = Region {
            raw: map(&fd, total)?,
            geo,
        };
        let h = region.header();
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.partitions.store(geo.partitions, Ordering::Relaxed);
        h.slots.store(geo.slots, Ordering::Relaxed);
        h.buf_bytes.store(geo.buf_bytes, Ordering::Relaxed);
        h.total_bytes.store(total as u64, Ordering::Relaxed);
        h.queues.store(geo.queues, Ordering::Relaxed);
        for p in 0..geo.partitions as usize {
            for q in 0..geo.queues as usize {
                region.port(p, q).state.store(PORT_UP, Ordering::Relaxed);
            }
        }
        // SYNC POINT: the version is written last, with Release; `attach`
        // loads it with Acquire first, so it sees every field above.
        h.version.store(LAYOUT_VERSION, Ordering::Release);
        Ok(fd)
    }

    /// Maps a region and validates it: seals, version, geometry, size.
    pub fn attach(fd: &OwnedFd) -> io::Result<Region> {
        let seals = rustix::fs::fcntl_get_seals(fd)?;
        if !seals.contains(SEALS) {
            return Err(invalid("region memfd not sealed"));
        }
        let size = rustix::fs::fstat(fd)?.st_size as u64;
        if size < core::mem::size_of::<RegionHeader>() as u64 {
            return Err(invalid("region smaller than its header"));
        }
        let small = Region {
            raw: map(fd, core::mem::size_of::<RegionHeader>())?,
            geo: Geometry {
                partitions: 0,
                queues: 0,
                slots: 0,
                buf_bytes: 0,
            },
        };
        let h = small.header();
        if h.version.load(Ordering::Acquire) != LAYOUT_VERSION {
            return Err(invalid("region version mismatch (or not initialised)"));
        }
        if h.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(invalid("not a shmnet NIC region"));
        }
        let geo = Geometry::new(
            h.partitions.load(Ordering::Relaxed),
            h.queues.load(Ordering::Relaxed),
            h.slots.load(Ordering::Relaxed),
            h.buf_bytes.load(Ordering::Relaxed),
        )
        .map_err(invalid)?;
        if h.total_bytes.load(Ordering::Relaxed) != geo.total_bytes() as u64
            || size != geo.total_bytes() as u64
        {
            return Err(invalid("region size does not match its geometry"));
        }
        Ok(Region {
            raw: map(fd, geo.total_bytes())?,
            geo,
        })
    }

    /// The geometry validated at attach (private: never re-read).
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// # Safety
    /// `offset + size_of::<T>() <= self.raw.len()` and `offset` is a multiple
    /// of `align_of::<T>()` (the geometry's offsets are, for its types).
    unsafe fn at<T: SharedLayout>(&self, offset: usize) -> &T {
        debug_assert!(offset + core::mem::size_of::<T>() <= self.raw.len());
        // SAFETY: in bounds and aligned (caller); T accepts every bit
        // pattern and holds only atomics (SharedLayout), so a shared
        // reference to memory other processes write through atomics is
        // sound; the mapping lives as long as `self`.
        unsafe { &*self.raw.as_mut_ptr().add(offset).cast::<T>() }
    }

    pub(crate) fn header(&self) -> &RegionHeader {
        // SAFETY: offset 0 is page-aligned and the mapping is at least a header.
        unsafe { self.at(0) }
    }

    /// Lane `q` of partition `p`'s port line. Panics if `p` or `q` is out
    /// of range (a caller's bug: indices come from our own configuration,
    /// never from shared memory).
    pub fn port(&self, p: usize, q: usize) -> &PortLine {
        assert!(p < self.geo.partitions as usize && q < self.geo.queues as usize);
        // SAFETY: p < P, q < Q: inside the port lines; offsets are multiples of 64.
        unsafe { self.at(self.geo.port_offset(p, q)) }
    }

    /// Queue `s -> r` on lane `q`'s control.
    pub fn queue(&self, s: usize, r: usize, q: usize) -> &QueueControl {
        let p = self.geo.partitions as usize;
        assert!(s < p && r < p && q < self.geo.queues as usize);
        // SAFETY: s, r < P, q < Q; offsets are multiples of 64.
        unsafe { self.at(self.geo.queue_offset(s, r, q)) }
    }

    /// Descriptor `i mod N` of queue `s -> r` on lane `q`.
    pub fn desc(&self, s: usize, r: usize, q: usize, i: u32) -> &Descriptor {
        let p = self.geo.partitions as usize;
        assert!(s < p && r < p && q < self.geo.queues as usize);
        let slot = (i & (self.geo.slots - 1)) as usize;
        // SAFETY: s, r < P, q < Q and slot < N; descriptors are 8 bytes, the
        // arrays start on a cache line.
        unsafe {
            self.at(self.geo.desc_offset(s, r, q) + slot * core::mem::size_of::<Descriptor>())
        }
    }

    /// A raw pointer to `len` bytes at `offset` in lane `q` of partition
    /// `s`'s pool, or None when any part of that is outside the pool. No
    /// reference to the bytes is ever formed: peers may write them
    /// concurrently.
    pub fn pool_ptr(&self, s: usize, q: usize, offset: u32, len: u32) -> Option<*mut u8> {
        if s >= self.geo.partitions as usize || q >= self.geo.queues as usize {
            return None;
        }
        let end = (offset as usize).checked_add(len as usize)?;
        if end > self.geo.pool_bytes() {
            return None;
        }
        // SAFETY: pool_offset(s, q) + end <= total_bytes (s < P, q < Q):
        // inside the mapping.
        Some(unsafe {
            self.raw
                .as_mut_ptr()
                .add(self.geo.pool_offset(s, q) + offset as usize)
        })
    }
}

fn map(fd: &OwnedFd, len: usize) -> io::Result<memmap2::MmapRaw> {
    memmap2::MmapOptions::new()
        .len(len)
        .map_raw(fd.as_fd().as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_attach_and_bounds() {
        let geo = Geometry::new(3, 2, 16, 2048).unwrap();
        let fd = Region::create(geo).unwrap();
        let r = Region::attach(&fd).unwrap();
        assert_eq!(r.geometry(), geo);
        assert!(r.pool_ptr(0, 0, 0, 2048).is_some());
        assert!(r.pool_ptr(2, 1, geo.pool_bytes() as u32 - 1, 1).is_some());
        assert!(r.pool_ptr(2, 1, geo.pool_bytes() as u32, 1).is_none());
        assert!(r.pool_ptr(3, 0, 0, 1).is_none());
        assert!(r.pool_ptr(0, 2, 0, 1).is_none());
        assert!(r.pool_ptr(0, 0, u32::MAX, u32::MAX).is_none());
        // A header a peer scribbled on is refused.
        r.header().partitions.store(99, Ordering::Relaxed);
        assert!(Region::attach(&fd).is_err());
    }
}
