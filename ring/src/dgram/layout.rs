//! The shared-memory layout of a datagram *target segment* (seed 004): the
//! receiver's memfd that every sender of one uid maps an *image* of.
//!
//! ```text
//! 0        TargetHeader          magic, version (written last), geometry, closed
//! 64       GroupDesc[4]          the segment group table (claim 5)
//! 192      ReceiverLine          doorbell flag and ring count, SO_RCVBUF limit
//! 256      ChargeLine            ticket << 32 | bytes queued (all senders RMW it)
//! 320      ready map             one bit per slot with published datagrams, ceil(Q/64) words
//! ...      hint bitmaps          per group, one bit per partition (a hint: busy or free)
//! ...      Slot[Q]               per sender slot: its line, the receiver's line
//! ...      Descriptor[Q][C]      per slot, a single-producer ring of C cells
//! ...      DirEntry[P] per group the directory (claim 6): owner, span, first, flags
//! page     data, per group       P partitions of `partition_bytes`, page-aligned
//! ```
//!
//! Every field is a fixed-width atomic, so the layout is the same in 32- and
//! 64-bit processes. Everything here lives in memory a peer can write at any
//! moment: code that reads it loads each word once and checks it against its
//! private [`DgramGeometry`], which each side derives once from validated
//! numbers and never re-reads.

use crate::layout::{SharedLayout, CACHE_LINE};
use crate::sync::{AtomicU32, AtomicU64};

/// `"SHMNETD1"` as a little-endian u64.
pub const DGRAM_MAGIC: u64 = u64::from_le_bytes(*b"SHMNETD1");
/// Bumped whenever the datagram layout or protocol changes incompatibly.
pub const DGRAM_VERSION: u32 = 1;

/// Most segment groups in a target segment.
pub const MAX_GROUPS: usize = 4;
/// Most sender slots (each its own descriptor ring).
pub const MAX_SLOTS: u32 = 256;
/// Most descriptor cells per slot.
pub const MAX_CELLS: u32 = 4096;
/// Most partitions per group (a descriptor's `loc` keeps 24 bits for it).
pub const MAX_PARTITIONS: u32 = 4096;
/// Most contiguous partitions one datagram spans: a run never crosses a
/// 64-bit hint word.
pub const MAX_SPAN: u32 = 64;
/// Largest partition, in bytes.
pub const MAX_PARTITION_BYTES: u32 = 1 << 17;
/// Largest run (partition bytes x span), in bytes.
pub const MAX_RUN_BYTES: u32 = 1 << 20;
/// Largest datagram the ring carries: IPv6's UDP payload limit (65,535 less
/// the 8-byte UDP header; IPv4's is 65,507, which the interposer enforces).
pub const MAX_DATAGRAM: u32 = 65_527;
/// Upper bound on a whole target segment.
pub const MAX_TARGET_BYTES: u64 = 1 << 30;
/// Bytes charged against the receive limit per datagram beyond its payload,
/// a stand-in for the kernel's per-skb overhead (truesize).
pub const CHARGE_OVERHEAD: u32 = 256;
/// The kernel's `rmem_default` here: the receive limit until the receiver
/// sets one (SO_RCVBUF).
pub const DEFAULT_LIMIT_BYTES: u32 = 212_992;

/// [`Descriptor::loc`] of a zero-length datagram: no partitions.
pub const LOC_NONE: u32 = u32::MAX;
/// [`DirEntry::flags`]: the first partition of a run.
pub const DIR_FIRST: u32 = 1;
/// [`DirEntry::flags`]: a later partition of a run.
pub const DIR_CONT: u32 = 2;
/// [`ReceiverLine::wait`]: the receiver sleeps in poll/epoll; the sender
/// that clears the bit rings its doorbell.
pub const WAIT_DOORBELL: u32 = 2;

/// [`SlotReceiver::state`]: no sender holds the slot.
pub const SLOT_FREE: u32 = 0;
/// [`SlotReceiver::state`]: granted to a sender.
pub const SLOT_OPEN: u32 = 1;
/// [`SlotReceiver::state`]: its sender is gone; reclaimed once drained.
pub const SLOT_CLOSING: u32 = 2;

/// `TargetHeader::closed`: the receiver takes nothing more from the rings.
pub const CLOSED_FINAL: u32 = 1;
/// `TargetHeader::closed`: closed to new datagrams; the receiver is taking
/// what was published before its close (then `CLOSED_FINAL`).
pub const CLOSED_DRAINING: u32 = 2;
/// `TargetHeader::closed`: the receiver takes nothing more, and the
/// socket lives on as a kernel socket (it went across exec): each sender
/// takes back what it left in its ring ([`Sender::take_back`]) and sends
/// it through the kernel.
///
/// [`Sender::take_back`]: super::Sender::take_back
pub const CLOSED_TO_KERNEL: u32 = 3;

/// The target segment's header.
#[repr(C, align(64))]
pub struct TargetHeader {
    /// [`DGRAM_MAGIC`].
    pub magic: AtomicU64,
    /// [`DGRAM_VERSION`]; stored last, with Release, by the creator.
    pub version: AtomicU32,
    /// G: segment groups, `1..=MAX_GROUPS`.
    pub group_count: AtomicU32,
    /// Q: sender slots.
    pub slot_count: AtomicU32,
    /// C: descriptor cells per slot, a power of two.
    pub ring_cells: AtomicU32,
    /// Size of the whole mapping, checked against the file on attach.
    pub total_bytes: AtomicU64,
    /// Non-zero once the receiver closed: senders stop and re-resolve.
    /// `CLOSED_DRAINING` while it still takes what was published (before
    /// it goes back to the kernel), `CLOSED_FINAL` once it takes nothing,
    /// `CLOSED_TO_KERNEL` once it takes nothing and its senders send what
    /// is left through the kernel.
    pub closed: AtomicU32,
    /// The receiver's pid (a hint).
    pub receiver_pid: AtomicU32,
    /// A token only mappers of the segment know (default mode's doorbell).
    pub nonce: AtomicU64,
    /// The uid the segment is for; a sender checks it is its own.
    pub sender_uid: AtomicU32,
}

/// One row of the segment group table (claim 5): partitions of one size.
#[repr(C)]
pub struct GroupDesc {
    /// Bytes per partition.
    pub partition_bytes: AtomicU32,
    /// P: partitions in the group.
    pub partitions: AtomicU32,
    /// Most contiguous partitions one datagram takes here (claim 9's span
    /// factor).
    pub span_max: AtomicU32,
    /// Reserved.
    pub reserved: AtomicU32,
    /// Where the group's directory starts (informational: each side
    /// computes its own).
    pub dir_offset: AtomicU64,
    /// Where the group's data starts (as `dir_offset`).
    pub data_offset: AtomicU64,
}

/// Written by the receiver around sleeping; read by senders after a publish.
#[repr(C, align(64))]
pub struct ReceiverLine {
    /// [`WAIT_DOORBELL`] while the receiver waits on its kernel fd.
    pub wait: AtomicU32,
    /// Doorbell rings sent so far (wrapping): what the receiver may take.
    pub rings: AtomicU32,
    /// SO_RCVBUF: bytes (payload + [`CHARGE_OVERHEAD`] each) that may queue.
    pub limit_bytes: AtomicU32,
    /// Receive lock between processes sharing the receiver after fork.
    pub lock: AtomicU32,
    /// Sends dropped for want of partitions (wrapping, senders add): a
    /// change starts the receiver's repair pass (`repair.rs`).
    pub room_drops: AtomicU32,
}

/// The charge every sender adds to before claiming partitions.
#[repr(C, align(64))]
pub struct ChargeLine {
    /// `ticket << 32 | bytes`: the high half counts arrivals (the order the
    /// receiver delivers in), the low half the bytes charged and not yet
    /// delivered.
    pub charge: AtomicU64,
}

/// A slot's line written by its sender.
#[repr(C, align(64))]
pub struct SlotSender {
    /// Descriptors published so far (wrapping); cell `head % C` is the next.
    pub head: AtomicU32,
    /// The sender's pid (a hint).
    pub pid: AtomicU32,
    /// Non-zero once the sender will send no more.
    pub closed: AtomicU32,
    /// Bytes charged for a datagram being sent right now (0 between sends):
    /// what reclaim gives back if the sender died in the middle.
    pub inflight: AtomicU32,
    /// Datagrams this sender dropped (ring, limit or partitions full).
    pub drops: AtomicU32,
}

/// A slot's line written by the receiver.
#[repr(C, align(64))]
pub struct SlotReceiver {
    /// Descriptors consumed so far (wrapping).
    pub tail: AtomicU32,
    /// Generation: bumped at every reclaim, part of the slot's owner tag.
    pub gen: AtomicU32,
    /// [`SLOT_FREE`], [`SLOT_OPEN`] or [`SLOT_CLOSING`] (informational: the
    /// receiver keeps its own copy).
    pub state: AtomicU32,
}

/// One sender slot: two lines, one per writer.
#[repr(C)]
pub struct Slot {
    /// Written by the sender.
    pub sender: SlotSender,
    /// Written by the receiver.
    pub receiver: SlotReceiver,
}

/// One published datagram in a slot's ring.
#[repr(C)]
pub struct Descriptor {
    /// Arrival order (the charge's ticket).
    pub ticket: AtomicU32,
    /// `group << 24 | first partition`, or [`LOC_NONE`] for 0 bytes.
    pub loc: AtomicU32,
    /// Payload bytes.
    pub len: AtomicU32,
    /// Reserved (AFTER_SLOW in the default mode).
    pub flags: AtomicU32,
}

/// One partition's directory entry (claim 6).
#[repr(C)]
pub struct DirEntry {
    /// 0 when free, else the owning slot's tag, `(slot + 1) << 16 | gen`:
    /// THE claim word (a CAS from 0 allocates, the receiver's store of 0
    /// frees), so reclaiming a dead sender's partitions is exact.
    pub owner: AtomicU32,
    /// On the first partition of a run: partitions in the run.
    pub span: AtomicU32,
    /// The run's first partition (the "next partition" information: a run
    /// is contiguous, so it is `first + 1 ..first + span`).
    pub first: AtomicU32,
    /// [`DIR_FIRST`] or [`DIR_CONT`].
    pub flags: AtomicU32,
}

// SAFETY: all these types are repr(C), hold only AtomicU32/AtomicU64 (every
// bit pattern valid) plus alignment padding, and have no Drop.
unsafe impl SharedLayout for TargetHeader {}
// SAFETY: as above.
unsafe impl SharedLayout for GroupDesc {}
// SAFETY: as above.
unsafe impl SharedLayout for ReceiverLine {}
// SAFETY: as above.
unsafe impl SharedLayout for ChargeLine {}
// SAFETY: as above.
unsafe impl SharedLayout for SlotSender {}
// SAFETY: as above.
unsafe impl SharedLayout for SlotReceiver {}
// SAFETY: as above.
unsafe impl SharedLayout for Slot {}
// SAFETY: as above.
unsafe impl SharedLayout for Descriptor {}
// SAFETY: as above.
unsafe impl SharedLayout for DirEntry {}

#[cfg(not(loom))]
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<TargetHeader>() == 64);
    assert!(size_of::<GroupDesc>() == 32);
    assert!(size_of::<ReceiverLine>() == 64);
    assert!(size_of::<ChargeLine>() == 64);
    assert!(size_of::<Slot>() == 128);
    assert!(size_of::<Descriptor>() == 16);
    assert!(size_of::<DirEntry>() == 16);
};

/// One segment group's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupGeometry {
    /// Bytes per partition.
    pub partition_bytes: u32,
    /// P: partitions.
    pub partitions: u32,
    /// Most partitions one datagram spans.
    pub span_max: u32,
}

impl GroupGeometry {
    /// The largest datagram the group takes: partition bytes x span factor
    /// (claim 9).
    pub fn capacity(&self) -> u32 {
        self.partition_bytes * self.span_max
    }

    /// Partitions a datagram of `len` bytes takes (at least one: a run is
    /// what a descriptor names).
    pub fn span_for(&self, len: u32) -> u32 {
        len.div_ceil(self.partition_bytes).max(1)
    }

    fn hint_words(&self) -> usize {
        (self.partitions as usize).div_ceil(64)
    }
}

/// Where everything is, derived from the geometry alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// The group table.
    pub groups: usize,
    /// The [`ReceiverLine`].
    pub receiver: usize,
    /// The [`ChargeLine`].
    pub charge: usize,
    /// The ready map.
    pub ready: usize,
    /// Each group's hint bitmap.
    pub hints: [usize; MAX_GROUPS],
    /// The [`Slot`] array.
    pub slots: usize,
    /// The [`Descriptor`] array, `Q x C`.
    pub cells: usize,
    /// Each group's directory.
    pub dirs: [usize; MAX_GROUPS],
    /// Each group's data (page-aligned).
    pub data: [usize; MAX_GROUPS],
    /// Where the data area of all groups starts.
    pub data_start: usize,
    /// Size of the whole mapping.
    pub total: usize,
}

/// The shape of a target segment. Each side computes its own copy from
/// validated numbers and never re-reads it from shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DgramGeometry {
    groups: [GroupGeometry; MAX_GROUPS],
    group_count: u32,
    slot_count: u32,
    ring_cells: u32,
}

const PAGE: usize = 4096;

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl DgramGeometry {
    /// Validates a geometry; the same checks guard numbers read from a peer.
    ///
    /// Groups go in increasing partition size and increasing capacity, so
    /// "the smallest group that fits, then the next larger" (claims 1-2) is
    /// a walk up the table.
    ///
    /// ```
    /// use shmnet_ring::dgram::{DgramGeometry, GroupGeometry};
    ///
    /// let g = GroupGeometry { partition_bytes: 2048, partitions: 512, span_max: 32 };
    /// assert!(DgramGeometry::new(&[g], 64, 128).is_ok());
    /// assert!(DgramGeometry::new(&[g], 64, 100).is_err()); // cells not a power of two
    /// assert!(DgramGeometry::new(&[], 64, 128).is_err());
    /// ```
    pub fn new(
        groups: &[GroupGeometry],
        slot_count: u32,
        ring_cells: u32,
    ) -> Result<Self, &'static str> {
        if groups.is_empty() || groups.len() > MAX_GROUPS {
            return Err("group count out of range");
        }
        if !(1..=MAX_SLOTS).contains(&slot_count) {
            return Err("slot count out of range");
        }
        if !(1..=MAX_CELLS).contains(&ring_cells) || !ring_cells.is_power_of_two() {
            return Err("ring cells not a power of two in range");
        }
        let mut prev: Option<GroupGeometry> = None;
        for g in groups {
            if !(8..=MAX_PARTITION_BYTES).contains(&g.partition_bytes)
                || !g.partition_bytes.is_multiple_of(8)
            {
                return Err("partition size out of range");
            }
            if !(1..=MAX_PARTITIONS).contains(&g.partitions) {
                return Err("partition count out of range");
            }
            if !(1..=MAX_SPAN).contains(&g.span_max) || g.span_max > g.partitions {
                return Err("span factor out of range");
            }
            if u64::from(g.partition_bytes) * u64::from(g.span_max) > u64::from(MAX_RUN_BYTES) {
                return Err("run larger than 1 MiB");
            }
            if let Some(p) = prev {
                if g.partition_bytes <= p.partition_bytes || g.capacity() < p.capacity() {
                    return Err("groups not in increasing partition size");
                }
            }
            prev = Some(*g);
        }
        let mut geo = DgramGeometry {
            groups: [GroupGeometry::default(); MAX_GROUPS],
            group_count: groups.len() as u32,
            slot_count,
            ring_cells,
        };
        geo.groups[..groups.len()].copy_from_slice(groups);
        if geo.offsets().total as u64 > MAX_TARGET_BYTES {
            return Err("target segment larger than 1 GiB");
        }
        Ok(geo)
    }

    /// Stage 1's shape: one group of 512 partitions of 2 KiB, a datagram
    /// spanning up to 32 of them (65,536 bytes: every UDP size, 65,507 and
    /// IPv6's 65,527 included, takes one run inside one hint word); 64 slots
    /// of 128 cells. About 1.2 MiB, touched lazily.
    ///
    /// ```
    /// use shmnet_ring::dgram::{DgramGeometry, MAX_DATAGRAM};
    ///
    /// let g = DgramGeometry::stage1();
    /// assert!(g.max_datagram() >= MAX_DATAGRAM);
    /// assert_eq!(g.group(0).unwrap().span_for(65_507), 32);
    /// assert_eq!(g.group(0).unwrap().span_for(1472), 1);
    /// ```
    pub fn stage1() -> Self {
        let g = GroupGeometry {
            partition_bytes: 2048,
            partitions: 512,
            span_max: 32,
        };
        match DgramGeometry::new(&[g], 64, 128) {
            Ok(geo) => geo,
            Err(_) => unreachable!("stage 1 geometry is valid"),
        }
    }

    /// G.
    pub fn group_count(&self) -> usize {
        self.group_count as usize
    }

    /// Group `g`, if it exists.
    pub fn group(&self, g: usize) -> Option<&GroupGeometry> {
        self.groups[..self.group_count()].get(g)
    }

    /// The groups.
    pub fn groups(&self) -> &[GroupGeometry] {
        &self.groups[..self.group_count()]
    }

    /// Q.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// C.
    pub fn ring_cells(&self) -> u32 {
        self.ring_cells
    }

    /// The largest datagram some group takes (capped at [`MAX_DATAGRAM`]).
    pub fn max_datagram(&self) -> u32 {
        self.groups()
            .iter()
            .map(GroupGeometry::capacity)
            .max()
            .unwrap_or(0)
            .min(MAX_DATAGRAM)
    }

    /// Words of the ready map.
    pub fn ready_words(&self) -> usize {
        (self.slot_count as usize).div_ceil(64)
    }

    /// Words of group `g`'s hint bitmap (0 past the last group).
    pub fn hint_words(&self, g: usize) -> usize {
        self.group(g).map_or(0, GroupGeometry::hint_words)
    }

    /// The data area's length (all groups, from `data_start`).
    pub fn data_bytes(&self) -> usize {
        let o = self.offsets();
        o.total - o.data_start
    }

    /// Where everything is.
    pub fn offsets(&self) -> Offsets {
        use core::mem::size_of;
        let groups = size_of::<TargetHeader>();
        let receiver = groups + MAX_GROUPS * size_of::<GroupDesc>();
        let charge = receiver + size_of::<ReceiverLine>();
        let ready = charge + size_of::<ChargeLine>();
        let mut at = round_up(ready + self.ready_words() * 8, CACHE_LINE);
        let mut hints = [at; MAX_GROUPS];
        for (g, h) in hints.iter_mut().enumerate().take(self.group_count()) {
            *h = at;
            at = round_up(at + self.hint_words(g) * 8, CACHE_LINE);
        }
        let slots = at;
        let cells = slots + self.slot_count as usize * size_of::<Slot>();
        at = round_up(
            cells + self.slot_count as usize * self.ring_cells as usize * size_of::<Descriptor>(),
            CACHE_LINE,
        );
        let mut dirs = [at; MAX_GROUPS];
        for (d, g) in dirs.iter_mut().zip(self.groups()) {
            *d = at;
            at = round_up(
                at + g.partitions as usize * size_of::<DirEntry>(),
                CACHE_LINE,
            );
        }
        let data_start = round_up(at, PAGE);
        at = data_start;
        let mut data = [at; MAX_GROUPS];
        for (d, g) in data.iter_mut().zip(self.groups()) {
            *d = at;
            at = round_up(
                at + g.partitions as usize * g.partition_bytes as usize,
                PAGE,
            );
        }
        Offsets {
            groups,
            receiver,
            charge,
            ready,
            hints,
            slots,
            cells,
            dirs,
            data,
            data_start,
            total: at,
        }
    }
}

/// A slot's owner tag: `(slot + 1) << 16 | gen` (never 0, which is "free").
pub fn tag(slot: u32, gen: u32) -> u32 {
    ((slot + 1) << 16) | (gen & 0xffff)
}

/// A descriptor's `loc` word for a run.
pub fn loc(group: usize, first: u32) -> u32 {
    ((group as u32) << 24) | first
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn stage1_fits_every_udp_size() {
        let geo = DgramGeometry::stage1();
        let g = geo.group(0).unwrap();
        assert_eq!(g.capacity(), 65_536);
        for len in [0u32, 1, 1472, 2048, 2049, 8192, 65_507, 65_527] {
            let span = g.span_for(len);
            assert!(
                span <= g.span_max && span * g.partition_bytes >= len,
                "{len}"
            );
        }
        let o = geo.offsets();
        assert_eq!(o.data_start % PAGE, 0);
        assert_eq!(o.total, o.data[0] + (1 << 20));
        assert!(o.total < 1_300_000, "{}", o.total);
    }

    #[test]
    fn offsets_do_not_overlap() {
        let g = [
            GroupGeometry {
                partition_bytes: 256,
                partitions: 1024,
                span_max: 4,
            },
            GroupGeometry {
                partition_bytes: 2048,
                partitions: 256,
                span_max: 4,
            },
            GroupGeometry {
                partition_bytes: 65_536,
                partitions: 8,
                span_max: 1,
            },
        ];
        let geo = DgramGeometry::new(&g, 64, 128).unwrap();
        let o = geo.offsets();
        assert!(o.receiver >= o.groups + 4 * 32);
        assert!(o.hints[0] >= o.ready + 8);
        assert!(o.hints[1] >= o.hints[0] + 16 * 8);
        assert!(o.slots >= o.hints[2] + 8);
        assert!(o.dirs[0] >= o.cells + 64 * 128 * 16);
        assert!(o.data[0] >= o.dirs[2] + 8 * 16);
        assert_eq!(o.total, o.data[2] + 8 * 65_536);
    }

    #[test]
    fn rejects_bad_groups() {
        let g = |pb, p, s| GroupGeometry {
            partition_bytes: pb,
            partitions: p,
            span_max: s,
        };
        assert!(DgramGeometry::new(&[g(4, 64, 1)], 1, 1).is_err());
        assert!(DgramGeometry::new(&[g(2048, 0, 1)], 1, 1).is_err());
        assert!(DgramGeometry::new(&[g(2048, 64, 65)], 1, 1).is_err());
        assert!(DgramGeometry::new(&[g(2048, 4, 8)], 1, 1).is_err());
        assert!(DgramGeometry::new(&[g(2048, 64, 4), g(256, 64, 4)], 1, 1).is_err());
        assert!(DgramGeometry::new(&[g(2048, 64, 4)], 0, 1).is_err());
        assert!(DgramGeometry::new(&[g(2048, 64, 4)], 257, 1).is_err());
        assert!(DgramGeometry::new(&[g(2048, 64, 4)], 1, 3).is_err());
        assert_eq!(tag(0, 0), 1 << 16);
        assert_eq!(tag(255, 0x1_0005), (256 << 16) | 5);
    }
}
