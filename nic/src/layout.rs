//! The shared-memory layout of a NIC region (one segment, P partitions).
//!
//! ```text
//! offset 0        RegionHeader              magic, version (written last), geometry
//! 64              PortLine[P][Q]            per partition and lane: doorbell, sleeping flag, state
//!                 QueueControl[P][P][Q]     queue s -> r on lane q: producer line (head),
//!                                           consumer line (tail)
//!                 Descriptor[P][P][Q][N]    queue s -> r on lane q: N descriptors (offset, length)
//! page-aligned    pool[0][0]: M * B bytes   packet buffers owned by partition 0's lane 0 (a sender)
//!                 ... pool[P-1][Q-1]
//! ```
//!
//! A lane is one queue of a multi-queue TUN device and its pair of
//! threads: lane q of a sender only ever feeds lane q of a receiver, so
//! every queue keeps a single producer and a single consumer, and a flow
//! (which the kernel keeps on one device queue) keeps its order.
//!
//! Claim 97's "output queue of a partition" is the row `QueueControl[s][*]`:
//! one single-producer single-consumer sub-queue per destination, all
//! written by `s`; partition `r` polls the column `QueueControl[*][r]`
//! (claim 96). A descriptor names a buffer in the sender's pool (claim 98).
//! Why SPSC per pair and not one MPSC queue per receiver: docs/nic.md.
//!
//! Every field is a fixed-width atomic: the layout is the same in every
//! process. Everything here may be written by a hostile partition at any
//! moment; readers load each word once and range-check it against their
//! private [`Geometry`].

use std::sync::atomic::{AtomicU32, AtomicU64};

/// Marker for types that may be placed in memory shared with a peer.
///
/// # Safety
///
/// An implementor must be `#[repr(C)]`, contain only fixed-width atomics (no
/// `usize`, pointers, references or `Drop` types), and accept every bit
/// pattern as a valid value, because a hostile peer may write anything into
/// it at any moment. Its size and alignment must not depend on the target's
/// pointer width.
pub unsafe trait SharedLayout: Sized {}

/// `"SHMNETN1"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMNETN1");
/// Bumped whenever the layout or protocol changes incompatibly.
pub const LAYOUT_VERSION: u32 = 1;

/// Words written by different sides never share this line.
pub const CACHE_LINE: usize = 64;
const PAGE: usize = 4096;

/// Most partitions on one segment (a region is P² queues per lane).
pub const MAX_PARTITIONS: u32 = 16;
/// Most lanes (device queues) per partition.
pub const MAX_QUEUES: u32 = 8;
/// Fewest descriptors per queue.
pub const MIN_SLOTS: u32 = 16;
/// Most descriptors per queue.
pub const MAX_SLOTS: u32 = 4096;
/// Smallest packet buffer (an IPv6 minimum MTU packet fits).
pub const MIN_BUF_BYTES: u32 = 1280;
/// Largest packet buffer: a 64 KiB IP packet plus a virtio-net header.
pub const MAX_BUF_BYTES: u32 = 65536 + 64;
/// Buffers a sender may hold outside every queue at once (one batch read
/// from its TUN device): a pool of `(P-1)*N + BATCH` never runs dry.
pub const BATCH: u32 = 64;
/// Upper bound on the whole mapping.
pub const MAX_REGION_BYTES: u64 = 4 << 30;

/// The region header: identifies the region and its geometry.
#[repr(C, align(64))]
pub struct RegionHeader {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`]; stored last, with Release, by the creator.
    pub version: AtomicU32,
    /// P: partitions.
    pub partitions: AtomicU32,
    /// N: descriptors per queue.
    pub slots: AtomicU32,
    /// B: bytes per packet buffer.
    pub buf_bytes: AtomicU32,
    /// Size of the whole mapping, checked against the file size on attach.
    pub total_bytes: AtomicU64,
    /// Q: lanes per partition.
    pub queues: AtomicU32,
}

/// One lane of a partition's receive side: written by that partition (and
/// the waker).
#[repr(C, align(64))]
pub struct PortLine {
    /// The futex word a sleeping receiver waits on; senders add one and
    /// wake it when [`PortLine::sleeping`] is set.
    pub bell: AtomicU32,
    /// Non-zero while the receiver is (about to be) asleep on `bell`
    /// (claim 86's "waiting to receive" field).
    pub sleeping: AtomicU32,
    /// [`PORT_UP`] while the partition is attached, [`PORT_GONE`] after:
    /// senders stop queueing for it. A hint only: a liar hurts itself.
    pub state: AtomicU32,
}

/// [`PortLine::state`]: attached, receiving.
pub const PORT_UP: u32 = 1;
/// [`PortLine::state`]: detached (its namespace went away, or it stopped).
pub const PORT_GONE: u32 = 2;

/// Written by the sender of a queue (its own cache line).
#[repr(C, align(64))]
pub struct ProducerLine {
    /// Descriptors published so far (wrapping): `desc[head % N]` is the
    /// next one the sender will fill.
    pub head: AtomicU32,
    /// Non-zero while the sender waits for room: the receiver wakes
    /// `ConsumerLine::tail` after advancing it.
    pub room_waiting: AtomicU32,
}

/// Written by the receiver of a queue (its own cache line).
#[repr(C, align(64))]
pub struct ConsumerLine {
    /// Descriptors consumed so far (wrapping); the buffers they named are
    /// the sender's again. Also the futex word a sender waiting for room
    /// sleeps on.
    pub tail: AtomicU32,
}

/// The control of one queue s -> r.
#[repr(C)]
pub struct QueueControl {
    /// Written by s.
    pub producer: ProducerLine,
    /// Written by r.
    pub consumer: ConsumerLine,
}

/// One packet placed by the sender: a buffer in the sender's own pool.
#[repr(C, align(8))]
pub struct Descriptor {
    /// Byte offset of the packet from the start of the sender's pool.
    pub offset: AtomicU32,
    /// Packet length in bytes.
    pub len: AtomicU32,
}

// SAFETY: all six types are repr(C), hold only AtomicU32/AtomicU64 (for which
// every bit pattern is valid) plus alignment padding, and have no Drop.
unsafe impl SharedLayout for RegionHeader {}
// SAFETY: as above.
unsafe impl SharedLayout for PortLine {}
// SAFETY: as above.
unsafe impl SharedLayout for ProducerLine {}
// SAFETY: as above.
unsafe impl SharedLayout for ConsumerLine {}
// SAFETY: as above.
unsafe impl SharedLayout for QueueControl {}
// SAFETY: as above.
unsafe impl SharedLayout for Descriptor {}

const _: () = {
    // The layout must be the same for every process that maps a region.
    assert!(core::mem::size_of::<RegionHeader>() == CACHE_LINE);
    assert!(core::mem::size_of::<PortLine>() == CACHE_LINE);
    assert!(core::mem::size_of::<QueueControl>() == 2 * CACHE_LINE);
    assert!(core::mem::size_of::<Descriptor>() == 8);
};

/// Where everything is, derived from (P, N, B) alone. Each side computes its
/// own copy from validated numbers and never re-reads geometry from shared
/// memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// P, partitions.
    pub partitions: u32,
    /// Q, lanes per partition.
    pub queues: u32,
    /// N, descriptors per queue (a power of two).
    pub slots: u32,
    /// B, bytes per packet buffer (a multiple of 64).
    pub buf_bytes: u32,
}

impl Geometry {
    /// Validates a geometry; the same checks guard values read from a peer.
    ///
    /// ```
    /// use shmnet_nic::layout::Geometry;
    ///
    /// let g = Geometry::new(3, 1, 256, 2048)?;
    /// assert_eq!(g.pool_buffers(), 2 * 256 + 64);
    /// assert!(Geometry::new(1, 1, 256, 2048).is_err()); // one partition
    /// assert!(Geometry::new(2, 1, 100, 2048).is_err()); // not a power of two
    /// # Ok::<(), &'static str>(())
    /// ```
    pub fn new(
        partitions: u32,
        queues: u32,
        slots: u32,
        buf_bytes: u32,
    ) -> Result<Self, &'static str> {
        if !(2..=MAX_PARTITIONS).contains(&partitions) {
            return Err("partitions out of range (2..=16)");
        }
        if !(1..=MAX_QUEUES).contains(&queues) {
            return Err("queues out of range (1..=8)");
        }
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&slots) || !slots.is_power_of_two() {
            return Err("slots per queue not a power of two in 16..=4096");
        }
        if !(MIN_BUF_BYTES..=MAX_BUF_BYTES).contains(&buf_bytes)
            || !buf_bytes.is_multiple_of(CACHE_LINE as u32)
        {
            return Err("packet buffer size out of range or not a multiple of 64");
        }
        let g = Geometry {
            partitions,
            queues,
            slots,
            buf_bytes,
        };
        if g.total_bytes() as u64 > MAX_REGION_BYTES {
            return Err("region larger than 4 GiB");
        }
        Ok(g)
    }

    /// M, packet buffers in each partition's pool.
    pub fn pool_buffers(&self) -> u32 {
        (self.partitions - 1) * self.slots + BATCH
    }

    /// Bytes of one partition's pool.
    pub fn pool_bytes(&self) -> usize {
        self.pool_buffers() as usize * self.buf_bytes as usize
    }

    /// Where lane `q` of partition `p`'s [`PortLine`] is.
    pub fn port_offset(&self, p: usize, q: usize) -> usize {
        CACHE_LINE + (p * self.queues as usize + q) * CACHE_LINE
    }

    /// Index of queue `s -> r` on lane `q` among all queues.
    fn queue_index(&self, s: usize, r: usize, q: usize) -> usize {
        (s * self.partitions as usize + r) * self.queues as usize + q
    }

    /// Where queue `s -> r` on lane `q`'s [`QueueControl`] is.
    pub fn queue_offset(&self, s: usize, r: usize, q: usize) -> usize {
        self.port_offset(self.partitions as usize, 0)
            + self.queue_index(s, r, q) * core::mem::size_of::<QueueControl>()
    }

    /// Where queue `s -> r` on lane `q`'s descriptor array starts.
    pub fn desc_offset(&self, s: usize, r: usize, q: usize) -> usize {
        self.queue_offset(self.partitions as usize, 0, 0)
            + self.queue_index(s, r, q) * self.slots as usize * core::mem::size_of::<Descriptor>()
    }

    /// Where lane `q` of partition `s`'s pool starts (page-aligned).
    pub fn pool_offset(&self, s: usize, q: usize) -> usize {
        round_up(self.desc_offset(self.partitions as usize, 0, 0), PAGE)
            + (s * self.queues as usize + q) * self.pool_bytes()
    }

    /// Size of the whole mapping.
    pub fn total_bytes(&self) -> usize {
        round_up(self.pool_offset(self.partitions as usize, 0), PAGE)
    }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_bounds() {
        assert!(Geometry::new(17, 1, 256, 2048).is_err());
        assert!(Geometry::new(2, 0, 256, 2048).is_err());
        assert!(Geometry::new(2, 9, 256, 2048).is_err());
        assert!(Geometry::new(2, 1, 8, 2048).is_err());
        assert!(Geometry::new(2, 1, 256, 1000).is_err());
        assert!(Geometry::new(2, 1, 256, MAX_BUF_BYTES + 64).is_err());
        let g = Geometry::new(3, 2, 256, 2048).unwrap();
        assert_eq!(g.pool_offset(0, 0) % PAGE, 0);
        assert_eq!(g.queue_offset(0, 0, 0) % CACHE_LINE, 0);
        assert!(g.queue_offset(0, 0, 0) >= g.port_offset(2, 1) + 64);
        assert!(g.desc_offset(0, 0, 0) >= g.queue_offset(2, 2, 1) + 128);
        assert_eq!(g.pool_offset(0, 1), g.pool_offset(0, 0) + g.pool_bytes());
        assert_eq!(g.total_bytes(), g.pool_offset(0, 0) + 6 * g.pool_bytes());
        // Past the bound: refused.
        assert!(Geometry::new(16, 8, 4096, MAX_BUF_BYTES).is_err());
        assert!(Geometry::new(16, 1, 256, 2048).is_ok());
    }
}
