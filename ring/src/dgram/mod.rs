//! Datagrams (issue 16): many senders to one receiver through the
//! receiver's *target segment*, after seed 004's segment groups.
//!
//! The receiver owns a sealed memfd (the target segment, `target.rs`); a
//! sender maps an *image* of it. The segment holds *segment groups* of
//! fixed-size *partitions*, one *directory entry* per partition, and one
//! single-producer descriptor ring per registered sender (*slot*).
//!
//! Send (`send.rs`): charge the receive limit (one RMW), claim a run of
//! contiguous partitions by CAS on each directory entry's `owner` word
//! (`alloc.rs`), copy, fill the slot's next cell and publish `head`
//! (Release). There is no shared tail and no lock: a sender that stops or
//! dies anywhere holds at most its own run and its own ring, and never
//! blocks another sender. When anything is full the datagram is dropped and
//! counted; a sender never waits.
//!
//! Receive (`recv.rs`), by one consumer: pick the ready slot whose front
//! has the oldest ticket, check every word of its descriptor and directory
//! entries against the private geometry and the slot's tag, copy out
//! (whole, or truncated with the full length reported), then free the run
//! and advance the slot's `tail`. A descriptor that fails a check is an
//! error for that datagram, never a panic or an out-of-bounds access.
//!
//! Reclaim (`reclaim.rs`): slots are granted and closed by the receiver.
//! A closed slot's published datagrams are still delivered; once its ring
//! is empty every partition whose owner is its tag is freed, its in-flight
//! charge given back, and its generation bumped. A slot is closed only
//! once its sender can no longer write (the link hung up or said CLOSE):
//! partitions are never taken back after a timeout, so a stopped sender
//! that resumes cannot tear anyone's datagram.

mod alloc;
pub mod frame;
mod heap;
pub mod layout;
mod reclaim;
mod recv;
mod repair;
mod send;
#[cfg(not(loom))]
mod target;

pub use heap::heap_target;
pub use layout::{DgramGeometry, GroupGeometry, MAX_DATAGRAM};
pub use reclaim::SlotGrant;
pub use recv::{Received, Receiver, ReceiverStats, RecvError};
pub use send::{Closing, DropReason, SendError, Sender, SenderStats, Sent, Stage};

use crate::data::{DataArea, Keep};
use crate::sync::{AtomicU64, Ordering};
use layout::*;
use std::ptr::NonNull;

/// Pointers into one target segment, with the private geometry. Every
/// index a method takes is derived from the private geometry (or checked
/// against it by the caller first); the methods assert it anyway, so a
/// logic error panics instead of reaching outside the mapping.
pub(crate) struct Shared {
    header: NonNull<TargetHeader>,
    groups: NonNull<GroupDesc>,
    receiver: NonNull<ReceiverLine>,
    charge: NonNull<ChargeLine>,
    ready: NonNull<AtomicU64>,
    /// All groups' hint words; group g's start at `hint_at[g]`.
    hints: NonNull<AtomicU64>,
    hint_at: [usize; MAX_GROUPS],
    slots: NonNull<Slot>,
    cells: NonNull<Descriptor>,
    /// All groups' directories; group g's start at `dir_at[g]`.
    dirs: NonNull<DirEntry>,
    dir_at: [usize; MAX_GROUPS],
    /// All groups' partitions; group g's start at byte `data_at[g]`.
    data: DataArea,
    data_at: [usize; MAX_GROUPS],
    geo: DgramGeometry,
    _keep: Keep,
}

// SAFETY: the pointers refer to memory kept alive by `_keep`, accessed only
// through atomics or raw copies (DataArea); nothing is tied to a thread.
unsafe impl Send for Shared {}
// SAFETY: as above: every access is atomic or a raw copy, so shared
// references from several threads are as sound as from several processes.
unsafe impl Sync for Shared {}

/// The pieces a [`Shared`] is made of.
pub(crate) struct Parts {
    pub header: NonNull<TargetHeader>,
    /// MAX_GROUPS rows.
    pub groups: NonNull<GroupDesc>,
    pub receiver: NonNull<ReceiverLine>,
    pub charge: NonNull<ChargeLine>,
    pub ready: NonNull<AtomicU64>,
    pub hints: NonNull<AtomicU64>,
    pub hint_at: [usize; MAX_GROUPS],
    pub slots: NonNull<Slot>,
    pub cells: NonNull<Descriptor>,
    pub dirs: NonNull<DirEntry>,
    pub dir_at: [usize; MAX_GROUPS],
    pub data: DataArea,
    pub data_at: [usize; MAX_GROUPS],
    pub keep: Keep,
}

impl Shared {
    /// # Safety
    /// Every pointer must point at as many elements as `geo` says (ready
    /// words, hint words and directory entries of every group from their
    /// `*_at` index, Q slots, Q x C cells), `data` must cover every group's
    /// partitions from `data_at`, and `keep` must keep all of it alive.
    pub(crate) unsafe fn new(p: Parts, geo: DgramGeometry) -> Self {
        Shared {
            header: p.header,
            groups: p.groups,
            receiver: p.receiver,
            charge: p.charge,
            ready: p.ready,
            hints: p.hints,
            hint_at: p.hint_at,
            slots: p.slots,
            cells: p.cells,
            dirs: p.dirs,
            dir_at: p.dir_at,
            data: p.data,
            data_at: p.data_at,
            geo,
            _keep: p.keep,
        }
    }

    pub(crate) fn geo(&self) -> &DgramGeometry {
        &self.geo
    }

    pub(crate) fn header(&self) -> &TargetHeader {
        // SAFETY: kept alive by `_keep` (Shared::new's contract); SharedLayout.
        unsafe { self.header.as_ref() }
    }

    /// Row `g` of the segment group table (written at creation only).
    pub(crate) fn group_desc(&self, g: usize) -> Option<&GroupDesc> {
        // SAFETY: the table has MAX_GROUPS rows (Shared::new's contract).
        (g < MAX_GROUPS).then(|| unsafe { &*self.groups.as_ptr().add(g) })
    }

    pub(crate) fn receiver_line(&self) -> &ReceiverLine {
        // SAFETY: as `header`.
        unsafe { self.receiver.as_ref() }
    }

    pub(crate) fn charge(&self) -> &AtomicU64 {
        // SAFETY: as `header`.
        unsafe { &self.charge.as_ref().charge }
    }

    pub(crate) fn ready(&self, w: usize) -> &AtomicU64 {
        assert!(w < self.geo.ready_words());
        // SAFETY: w < ready words (asserted), kept alive by `_keep`.
        unsafe { &*self.ready.as_ptr().add(w) }
    }

    pub(crate) fn hint(&self, g: usize, w: usize) -> &AtomicU64 {
        assert!(w < self.geo.hint_words(g));
        // SAFETY: group g's hint words start at hint_at[g] (Shared::new's
        // contract) and w is below their count (asserted; 0 for no group).
        unsafe { &*self.hints.as_ptr().add(self.hint_at[g] + w) }
    }

    pub(crate) fn slot(&self, s: u32) -> &Slot {
        assert!(s < self.geo.slot_count());
        // SAFETY: s < Q (asserted), kept alive by `_keep`.
        unsafe { &*self.slots.as_ptr().add(s as usize) }
    }

    /// Slot `s`'s cell for position `pos` (wrapping: `pos % C`).
    pub(crate) fn cell(&self, s: u32, pos: u32) -> &Descriptor {
        assert!(s < self.geo.slot_count());
        let c = self.geo.ring_cells();
        let i = s as usize * c as usize + (pos & (c - 1)) as usize;
        // SAFETY: i < Q x C (s asserted, the mask keeps pos below C).
        unsafe { &*self.cells.as_ptr().add(i) }
    }

    pub(crate) fn dir(&self, g: usize, i: u32) -> &DirEntry {
        let p = self.geo.group(g).map_or(0, |x| x.partitions);
        assert!(i < p);
        // SAFETY: group g's directory starts at dir_at[g] and has P entries
        // (Shared::new's contract); i < P asserted.
        unsafe { &*self.dirs.as_ptr().add(self.dir_at[g] + i as usize) }
    }

    /// Byte offset, in the data area, of partition `i` of group `g`.
    pub(crate) fn partition_offset(&self, g: usize, i: u32) -> usize {
        let pb = self.geo.group(g).map_or(0, |x| x.partition_bytes);
        self.data_at[g] + i as usize * pb as usize
    }

    pub(crate) fn data(&self) -> &DataArea {
        &self.data
    }

    /// Gives back `c` bytes of charge, never below 0 (a peer may have
    /// written the word; the ticket half is left alone). A CAS that keeps
    /// losing (a peer writing the word without pause) gives up after a
    /// bounded number of tries: an over-count, which the idle rebase
    /// repairs, rather than a caller that never returns.
    pub(crate) fn uncharge(&self, c: u32) {
        let w = self.charge();
        let mut cur = w.load(Ordering::Relaxed);
        for _ in 0..1024 {
            let bytes = (cur as u32).saturating_sub(c);
            let new = (cur & !0xffff_ffff) | u64::from(bytes);
            // SYNC POINT: Relaxed: the charge orders no other memory, it
            // is only a count; RMWs on one word see each other in its
            // modification order, so no add is lost.
            match w.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }
}

/// A sender's image of a target segment (claim 3): what it makes
/// [`Sender`]s from, one per slot granted to it.
#[derive(Clone)]
pub struct Image {
    sh: std::sync::Arc<Shared>,
}

impl Image {
    /// A sender for a slot the receiver granted.
    pub fn sender(&self, grant: SlotGrant) -> Result<Sender, SendError> {
        Sender::new(self.sh.clone(), grant.slot, grant.gen)
    }

    /// The geometry (this side's checked copy).
    pub fn geometry(&self) -> DgramGeometry {
        *self.sh.geo()
    }

    /// The uid the receiver made the segment for (a sender checks it is
    /// its own).
    pub fn sender_uid(&self) -> u32 {
        self.sh.header().sender_uid.load(Ordering::Relaxed)
    }

    /// Whether the receiver closed the segment.
    pub fn is_closed(&self) -> bool {
        self.sh.header().closed.load(Ordering::Acquire) != 0
    }
}
