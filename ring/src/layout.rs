//! The shared-memory layout of a connection segment.
//!
//! ```text
//! offset 0       SegmentHeader            magic, version (written last), geometry, reset word
//! 64             ChannelControl[0]        connector -> acceptor   (claim 85 "first portion")
//! 64 + 192       ChannelControl[1]        acceptor -> connector
//! 448            SegmentControl[0][N]     end, length, next, last per data segment (producer side)
//!                SegmentControl[1][N]
//!                SegmentBegin[0][N]       begin per data segment (consumer side)
//!                SegmentBegin[1][N]
//!                SegmentSlot[0][N]        data segment of each sequence number mod N (producer side)
//!                SegmentSlot[1][N]
//! page-aligned   data[0]: N * S bytes     the circular buffer of data segments, channel 0
//!                data[1]: N * S bytes     channel 1
//! ```
//!
//! Every field is a fixed-width atomic so the layout is identical in 32- and
//! 64-bit processes. Everything here lives in memory the peer can write at any
//! moment: code that reads it loads each word once and range-checks it.

use crate::sync::{AtomicU32, AtomicU64};

/// Marker for types that may be placed in memory shared with a peer process.
///
/// # Safety
///
/// An implementor must be `#[repr(C)]`, contain only fixed-width atomics (no
/// `usize`, pointers, references or `Drop` types), and accept every bit
/// pattern as a valid value, because a hostile peer may write anything into
/// it at any moment. Its size and alignment must not depend on the target's
/// pointer width.
pub unsafe trait SharedLayout: Sized {}

/// `"SHMNETR1"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMNETR1");
/// Bumped whenever the layout or protocol changes incompatibly.
pub const LAYOUT_VERSION: u32 = 7;
/// Value of [`WaitLine::ready`] once a side has initialised the channel.
pub const CHANNEL_READY: u32 = 0x5245_4459; // "READ"Y

/// The cache line every shared structure is aligned to, so that words
/// written by different sides never share a line.
pub const CACHE_LINE: usize = 64;
const PAGE: usize = 4096;

/// Smallest data segment, in bytes.
pub const MIN_SEGMENT_BYTES: u32 = 64;
/// Largest data segment, in bytes.
pub const MAX_SEGMENT_BYTES: u32 = 16 << 20;
/// Fewest data segments per channel. Two is the least that lets the
/// producer fill one segment while the consumer drains the other.
pub const MIN_SEGMENTS: u32 = 2;
/// Most data segments per channel.
pub const MAX_SEGMENTS: u32 = 4096;
/// Upper bound on one channel's data area, so every offset fits in a u32.
pub const MAX_CHANNEL_BYTES: u64 = 1 << 30;

/// The segment header: identifies the segment and its geometry.
#[repr(C, align(64))]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`]; stored last, with Release, by the creator.
    pub version: AtomicU32,
    /// N: data segments per channel.
    pub segment_count: AtomicU32,
    /// S: bytes per data segment.
    pub segment_bytes: AtomicU32,
    /// Non-zero once either side declared the connection reset.
    pub reset: AtomicU32,
    /// Size of the whole mapping, checked against the file size on attach.
    pub total_bytes: AtomicU64,
    /// Reuse between the same two processes (see `Segment::offer`): the
    /// connector stores [`OFFERED`] before proposing the segment again; the
    /// acceptor takes it with a CAS to [`CLAIMED`], a connector that gave up
    /// waiting with a CAS to [`WITHDRAWN`]. Whoever wins decides.
    pub claim: AtomicU32,
    /// Per role (connector, acceptor): non-zero once that side's connection
    /// on the segment is gone, so its next use may re-initialise it.
    pub released: [AtomicU32; 2],
    /// The pid of the process that accepted (written by it: a hint, used
    /// only to skip reuse within one process).
    pub acceptor_pid: AtomicU32,
}

/// [`SegmentHeader::claim`]: the connector proposes the segment again.
pub const OFFERED: u32 = 1;
/// [`SegmentHeader::claim`]: the acceptor took the proposal.
pub const CLAIMED: u32 = 2;
/// [`SegmentHeader::claim`]: the connector withdrew it before an answer.
pub const WITHDRAWN: u32 = 3;

/// Fields written by the producer of a channel (its own cache line).
#[repr(C, align(64))]
pub struct ProducerLine {
    /// Sequence number of the data segment holding the most recently written
    /// data (claim 85, "first field"). Its data segment is `slots[head % N]`.
    pub head: AtomicU32,
    /// Non-zero once the producer will write no more (shutdown(SHUT_WR) or
    /// close): the consumer sees end-of-stream after draining —
    /// [`CLOSED_RESET`] for an abortive close (a TCP RST): ECONNRESET
    /// after draining instead. Any other non-zero value is a plain close.
    pub closed: AtomicU32,
    /// Non-zero while the producer is inside a write: between publishing
    /// data and having counted (or decided against) the consumer's
    /// doorbell ring for it, in `WaitLine::reader_rings`; the byte itself
    /// may still be on its way (see `Consumer::wait_producer_idle`).
    /// [`BUSY_WAITER`] marks a consumer asleep on it.
    pub busy: AtomicU32,
    /// Serialises writers in several processes of this side after fork
    /// (holder's pid; see `sidelock`).
    pub lock: AtomicU32,
    /// Bytes written up to the last publish whose doorbell ring was sent
    /// (`head * S + end` then, as `written_total`): every publish up to
    /// there left a byte on the reader's fd after its data, which the
    /// kernel reports. A reader that leaves its flag down for a while
    /// (the interposer's deferred edge-triggered members) reports the
    /// publishes past it itself. Peer-written: only compared.
    pub rung_at: AtomicU64,
    /// Non-zero once this side reported the peer's reset (ECONNRESET
    /// once per connection, as the kernel's one pending socket error):
    /// shared by every process holding this side after fork or
    /// SCM_RIGHTS. Only this side reads it; a peer that writes it only
    /// changes which of our reads says ECONNRESET.
    pub reset_reported: AtomicU32,
}

/// `ProducerLine::closed`, `ConsumerLine::closed`: an orderly close (FIN).
pub const CLOSED: u32 = 1;
/// `ProducerLine::closed`, `ConsumerLine::closed`: an abortive close (RST:
/// SO_LINGER 0, unread data at close). Written by the side that closes,
/// both words at once; the peer's reads drain the ring first.
pub const CLOSED_RESET: u32 = 2;

/// `ProducerLine::busy`: inside a write.
pub const BUSY: u32 = 1;
/// `ProducerLine::busy`: inside a write, and a consumer sleeps on the word.
pub const BUSY_WAITER: u32 = 3;

/// Fields written by the consumer of a channel (its own cache line).
#[repr(C, align(64))]
pub struct ConsumerLine {
    /// Sequence number of the data segment holding the earliest written, not
    /// yet read data (claim 85, "second field").
    pub tail: AtomicU32,
    /// Non-zero once the consumer will read no more: writes fail with EPIPE
    /// ([`CLOSED_RESET`]: with ECONNRESET, an abortive close).
    pub closed: AtomicU32,
    /// Serialises readers in several processes of this side after fork.
    pub lock: AtomicU32,
    /// Doorbell and filler bytes the consumer side has taken (wrapping), so
    /// that processes sharing this side after fork agree on what is owed.
    pub taken: AtomicU32,
}

/// The waiting flags of claim 86, on a line of their own because they are
/// written rarely (only around sleeping) but read on every publish.
#[repr(C, align(64))]
pub struct WaitLine {
    /// The producer waits for room (claim 86, "third field"). Bits: [`WAIT_FUTEX`], [`WAIT_DOORBELL`].
    pub writer_waiting: AtomicU32,
    /// The consumer waits for data (claim 86, "fourth field").
    pub reader_waiting: AtomicU32,
    /// [`CHANNEL_READY`] once the channel's initialiser finished; written last.
    pub ready: AtomicU32,
    /// Doorbell rings for the reader so far (wrapping): lets a reader take
    /// exactly the doorbell signals that were meant for data it has read.
    pub reader_rings: AtomicU32,
    /// Filler bytes the writer sent on its doorbell connection while it
    /// waited for room (wrapping): a reader takes them to raise the writer's
    /// write-space event (see the interposer's `Bell::fill`), and counts them
    /// with `reader_rings` as bytes it may take.
    pub writer_rings: AtomicU32,
    /// The reader's sleep its flag was last raised for (0: none), stored
    /// before the flag (see `Consumer::arm_for_sleep`): a producer whose
    /// doorbell already woke that sleep of that reader may leave the ring
    /// out, since the reader looks at every ring it raised for the sleep
    /// once it wakes. Written by the reader; the producer only compares it.
    pub reader_sleep: AtomicU64,
}

/// A waiter sleeps on the futex word itself.
pub const WAIT_FUTEX: u32 = 1;
/// A waiter sleeps in poll/epoll on a kernel fd: ring its doorbell.
pub const WAIT_DOORBELL: u32 = 2;
/// The reader is registered edge-triggered (EPOLLET): ring its doorbell for
/// every publish, not only the first after it waited, so that each arrival
/// of data is a new edge as with kernel TCP. Never cleared by the producer;
/// at most [`EDGE_BACKLOG`] such bytes are left untaken.
pub const WAIT_EDGE: u32 = 4;
/// See [`WAIT_EDGE`].
pub const EDGE_BACKLOG: u32 = 4;

/// The control segment of one direction (claims 85-86).
#[repr(C)]
pub struct ChannelControl {
    /// Written by the producer.
    pub producer: ProducerLine,
    /// Written by the consumer.
    pub consumer: ConsumerLine,
    /// Waiting flags and ring counts, written by both around sleeping.
    pub wait: WaitLine,
}

/// Control of one data segment (claim 85 "second portion", claims 87-88),
/// the producer's part. The consumer's part, `begin`, is [`SegmentBegin`]:
/// the two live in separate arrays so that words written by different sides
/// never share a cache line (the consumer storing `begin` on every read
/// would otherwise steal the line the producer stores `end` into).
#[repr(C, align(16))]
pub struct SegmentControl {
    /// Offset one past the last written byte; producer-owned.
    pub end: AtomicU32,
    /// Capacity of the data segment in bytes; set at initialisation, checked
    /// on attach, never trusted afterwards (each side keeps its own copy).
    pub length: AtomicU32,
    /// Index of the next data segment in the circular buffer; as `length`.
    pub next: AtomicU32,
    /// Non-zero when the segment holds the last fragment of a message
    /// (message boundaries for datagram sockets; streams ignore it).
    pub last: AtomicU32,
}

/// The consumer's part of a segment's control: offset of the first unread
/// byte in the segment (claim 85 "first field" of the second portion).
#[repr(C)]
pub struct SegmentBegin {
    /// Offset of the first unread byte; consumer-owned.
    pub begin: AtomicU32,
}

/// Where a sequence number's data lives: `SegmentSlot[seq % N].slot` is
/// the data segment (its index in the data area, and in the
/// [`SegmentControl`] and [`SegmentBegin`] arrays) holding sequence number
/// `seq`, for each `seq` in `tail..=head`. Written by the producer when it
/// opens `seq`, before it publishes `head = seq`; which free data segment
/// it picks is its own policy (two while the stream is small messages, all
/// N for a bulk stream: see `channel/mod.rs`).
#[repr(C)]
pub struct SegmentSlot {
    /// The data segment, `< N`; producer-owned.
    pub slot: AtomicU32,
}

// SAFETY: all seven types are repr(C), hold only AtomicU32/AtomicU64 (for which
// every bit pattern is valid) plus alignment padding, and have no Drop.
unsafe impl SharedLayout for SegmentHeader {}
// SAFETY: as above.
unsafe impl SharedLayout for ChannelControl {}
// SAFETY: as above.
unsafe impl SharedLayout for SegmentControl {}
// SAFETY: as above.
unsafe impl SharedLayout for SegmentBegin {}
// SAFETY: as above.
unsafe impl SharedLayout for SegmentSlot {}
// SAFETY: as above.
unsafe impl SharedLayout for ProducerLine {}
// SAFETY: as above.
unsafe impl SharedLayout for ConsumerLine {}

#[cfg(not(loom))]
const _: () = {
    // The layout must be the same for every process that maps a segment.
    assert!(core::mem::size_of::<SegmentHeader>() == 64);
    assert!(core::mem::size_of::<ChannelControl>() == 3 * CACHE_LINE);
    assert!(core::mem::size_of::<SegmentControl>() == 16);
    assert!(core::mem::size_of::<SegmentBegin>() == 4);
    assert!(core::mem::size_of::<SegmentSlot>() == 4);
};

/// Where everything is, derived from (N, S) alone. Each side computes its own
/// copy from validated numbers and never re-reads geometry from shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// N, data segments per channel.
    pub segment_count: u32,
    /// S, bytes per data segment.
    pub segment_bytes: u32,
}

impl Geometry {
    /// Validates a geometry; the same checks guard values read from a peer.
    ///
    /// ```
    /// use shmnet_ring::Geometry;
    ///
    /// let geo = Geometry::new(16, 4096)?; // 16 segments of 4 KiB
    /// assert_eq!(geo.channel_bytes(), 64 << 10);
    /// assert!(Geometry::new(1, 4096).is_err()); // fewer than two segments
    /// assert!(Geometry::new(16, 100).is_err()); // not a multiple of 64
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(segment_count: u32, segment_bytes: u32) -> Result<Self, &'static str> {
        if !(MIN_SEGMENTS..=MAX_SEGMENTS).contains(&segment_count) {
            return Err("segment count out of range");
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_bytes) {
            return Err("segment size out of range");
        }
        if !segment_bytes.is_multiple_of(CACHE_LINE as u32) {
            return Err("segment size not a multiple of 64");
        }
        if u64::from(segment_count) * u64::from(segment_bytes) > MAX_CHANNEL_BYTES {
            return Err("channel larger than 1 GiB");
        }
        Ok(Geometry {
            segment_count,
            segment_bytes,
        })
    }

    /// A geometry for `ring_bytes` per direction: segments of up to 64 KiB,
    /// at least [`MIN_SEGMENTS`] of them.
    ///
    /// ```
    /// use shmnet_ring::Geometry;
    ///
    /// let geo = Geometry::for_ring_bytes(1 << 20)?;
    /// assert_eq!((geo.segment_count, geo.segment_bytes), (16, 64 << 10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_ring_bytes(ring_bytes: u64) -> Result<Self, &'static str> {
        let ring = ring_bytes.clamp(2 * u64::from(MIN_SEGMENT_BYTES), MAX_CHANNEL_BYTES);
        let seg = (ring / 16).clamp(4096, 64 << 10).min(ring / 2);
        let seg = (seg / CACHE_LINE as u64 * CACHE_LINE as u64) as u32;
        let count = (ring / u64::from(seg)).min(u64::from(MAX_SEGMENTS)) as u32;
        Geometry::new(count, seg)
    }

    /// Bytes of one channel's circular buffer.
    pub fn channel_bytes(&self) -> usize {
        self.segment_count as usize * self.segment_bytes as usize
    }

    /// Where channel `channel`'s [`ChannelControl`] starts.
    pub fn channel_offset(&self, channel: usize) -> usize {
        CACHE_LINE + channel * core::mem::size_of::<ChannelControl>()
    }

    /// Where channel `channel`'s SegmentControl array starts (`2` = past both).
    pub fn segment_control_offset(&self, channel: usize) -> usize {
        CACHE_LINE
            + 2 * core::mem::size_of::<ChannelControl>()
            + channel * self.control_array_bytes()
    }

    /// Where channel `channel`'s SegmentBegin array starts (`2` = past both).
    pub fn segment_begin_offset(&self, channel: usize) -> usize {
        self.segment_control_offset(2) + channel * self.begin_array_bytes()
    }

    /// Where channel `channel`'s SegmentSlot array starts (`2` = past both).
    pub fn segment_slot_offset(&self, channel: usize) -> usize {
        self.segment_begin_offset(2) + channel * self.begin_array_bytes()
    }

    fn control_array_bytes(&self) -> usize {
        round_up(
            self.segment_count as usize * core::mem::size_of::<SegmentControl>(),
            CACHE_LINE,
        )
    }

    fn begin_array_bytes(&self) -> usize {
        round_up(
            self.segment_count as usize * core::mem::size_of::<SegmentBegin>(),
            CACHE_LINE,
        )
    }

    /// Where channel `channel`'s data area starts (page-aligned; `2` = past
    /// both).
    pub fn data_offset(&self, channel: usize) -> usize {
        round_up(self.segment_slot_offset(2), PAGE) + channel * self.channel_bytes()
    }

    /// Size of the whole mapping.
    pub fn total_bytes(&self) -> usize {
        round_up(self.data_offset(2), PAGE)
    }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn geometry_bounds() {
        assert!(Geometry::new(1, 4096).is_err());
        assert!(Geometry::new(16, 100).is_err());
        assert!(Geometry::new(4097, 4096).is_err());
        assert!(Geometry::new(4096, 16 << 20).is_err());
        let g = Geometry::new(16, 65536).unwrap();
        assert_eq!(g.channel_bytes(), 1 << 20);
        assert_eq!(g.data_offset(0) % 4096, 0);
        assert_eq!(g.total_bytes(), g.data_offset(0) + 2 * (1 << 20));
    }

    #[test]
    fn geometry_for_ring_bytes() {
        let g = Geometry::for_ring_bytes(1 << 20).unwrap();
        assert_eq!((g.segment_count, g.segment_bytes), (16, 65536));
        let g = Geometry::for_ring_bytes(64 << 10).unwrap();
        assert_eq!((g.segment_count, g.segment_bytes), (16, 4096));
        let g = Geometry::for_ring_bytes(1).unwrap();
        assert!(g.segment_count >= 2);
        let g = Geometry::for_ring_bytes(u64::MAX).unwrap();
        assert!(g.channel_bytes() as u64 <= MAX_CHANNEL_BYTES);
    }
}
