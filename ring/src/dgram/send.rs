//! The sending side: one [`Sender`] per slot, the only producer of that
//! slot's descriptor ring (threads of one process share it behind a lock
//! of their own; a forked child registers a slot of its own).
//!
//! `send`: (1) stop if the receiver closed; (2) room in the ring, else
//! drop; (3) charge the receive limit, else drop; (4) claim a run in the
//! smallest group that fits, then larger ones (claims 1-2, 9), else drop;
//! (5) copy and write the directory entries; (6) fill the cell and publish
//! `head`; (7) mark the slot ready and ring the doorbell if the receiver
//! asked for one. Nothing waits: each step either goes on or drops.

use super::layout::*;
use super::{alloc, Shared};
use crate::sync::{fence, Ordering};
use std::io::IoSlice;
use std::sync::Arc;

/// Why a datagram was dropped (counted: the kernel counts these as
/// receive-buffer errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The slot's descriptor ring is full.
    RingFull,
    /// The receiver's byte limit (SO_RCVBUF) is reached.
    Rcvbuf,
    /// No run of free partitions in any group that fits.
    NoRoom,
}

/// What became of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Published. `ring`: this sender took the receiver's doorbell flag and
    /// must ring it (a BELL on its link).
    Queued {
        /// Ring the receiver's doorbell.
        ring: bool,
    },
    /// Dropped, as UDP drops: the send still succeeds for the caller.
    Dropped(DropReason),
    /// Stopped at a [`Stage`] on request (tests of a sender that dies).
    Stopped,
}

/// The receiver's close as a sender sees it ([`Sender::closing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Not closed.
    Open,
    /// Closed; the receiver is still taking what was published.
    Draining,
    /// Closed; nothing more is taken.
    Final,
    /// Closed; nothing more is taken, and the receiver's socket lives on
    /// in the kernel: what is left in the ring goes there
    /// ([`Sender::take_back`]).
    ToKernel,
}

/// Why a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Larger than any group takes (EMSGSIZE).
    TooBig,
    /// The receiver closed the target segment: re-resolve the destination.
    Closed,
    /// A word the receiver writes broke an invariant.
    Corrupt(&'static str),
}

impl SendError {
    /// The errno a kernel UDP socket gives in the same situation.
    pub fn errno(self) -> i32 {
        match self {
            SendError::TooBig => rustix::io::Errno::MSGSIZE.raw_os_error(),
            SendError::Closed => rustix::io::Errno::CONNREFUSED.raw_os_error(),
            SendError::Corrupt(_) => rustix::io::Errno::CONNRESET.raw_os_error(),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::TooBig => f.write_str("datagram too large"),
            SendError::Closed => f.write_str("receiver closed"),
            SendError::Corrupt(w) => write!(f, "shared memory corrupt: {w}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Where [`Sender::send_stopping_at`] stops, as if the process died there.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// After the charge, before `inflight` is recorded.
    Charged,
    /// After `inflight` is recorded.
    Recorded,
    /// After the run is claimed.
    Claimed,
    /// After the copy and the directory entries.
    Copied,
    /// After the cell is filled, before the publish.
    Filled,
    /// After the publish, before the ready bit.
    Published,
}

/// Counts of one sender (private; `drops` is also in the slot's line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Datagrams published.
    pub sent: u64,
    /// Dropped: ring full.
    pub drop_ring: u64,
    /// Dropped: receive limit.
    pub drop_rcvbuf: u64,
    /// Dropped: no partitions.
    pub drop_room: u64,
}

fn count_drop(sh: &Shared, slot: u32, stats: &mut SenderStats, why: DropReason) -> Sent {
    match why {
        DropReason::RingFull => stats.drop_ring += 1,
        DropReason::Rcvbuf => stats.drop_rcvbuf += 1,
        DropReason::NoRoom => stats.drop_room += 1,
    }
    let d = &sh.slot(slot).sender.drops;
    // Only we write our line: a load and a store, no RMW.
    d.store(d.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    Sent::Dropped(why)
}

/// A granted slot's sending half.
pub struct Sender {
    sh: Arc<Shared>,
    slot: u32,
    tag: u32,
    /// Private copy of our `head`: never re-read from shared memory.
    head: u32,
    /// The receiver's `tail` as we last read it.
    tail: u32,
    /// Per group, the hint word to look at first.
    cursors: [usize; MAX_GROUPS],
    stats: SenderStats,
}

impl Sender {
    pub(crate) fn new(sh: Arc<Shared>, slot: u32, gen: u32) -> Result<Sender, SendError> {
        if slot >= sh.geo().slot_count() {
            return Err(SendError::Corrupt("slot out of range"));
        }
        let line = &sh.slot(slot).sender;
        #[cfg(not(loom))]
        line.pid.store(
            rustix::process::getpid().as_raw_nonzero().get() as u32,
            Ordering::Relaxed,
        );
        line.head.store(0, Ordering::Relaxed);
        // Senders start at different words, so they rarely meet.
        let mut cursors = [0; MAX_GROUPS];
        for (g, c) in cursors.iter_mut().enumerate() {
            let words = sh.geo().hint_words(g).max(1);
            *c = slot as usize % words;
        }
        Ok(Sender {
            tag: tag(slot, gen),
            sh,
            slot,
            head: 0,
            tail: 0,
            cursors,
            stats: SenderStats::default(),
        })
    }

    /// The slot this sender fills.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// This sender's counts.
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// The largest datagram this target takes.
    pub fn max_datagram(&self) -> u32 {
        self.sh.geo().max_datagram()
    }

    /// Sends one datagram of `buf`.
    pub fn send(&mut self, buf: &[u8]) -> Result<Sent, SendError> {
        self.send_vectored(&[IoSlice::new(buf)])
    }

    /// Sends one datagram gathered from `iov` (a sendmsg's iovecs).
    pub fn send_vectored(&mut self, iov: &[IoSlice<'_>]) -> Result<Sent, SendError> {
        self.send_inner(iov, None)
    }

    /// As [`send_vectored`](Self::send_vectored), stopping at `stop` as if
    /// the process died there (tests of reclaim).
    #[doc(hidden)]
    pub fn send_stopping_at(
        &mut self,
        iov: &[IoSlice<'_>],
        stop: Stage,
    ) -> Result<Sent, SendError> {
        self.send_inner(iov, Some(stop))
    }

    /// Datagrams published that the receiver has not taken yet, by its
    /// `tail` now (one load of the line it writes: for a liveness check
    /// now and then, not for every send). A tail out of range reads as
    /// nothing outstanding (a receiver that wrote it is not stalled
    /// either; the next send reports the corruption).
    pub fn outstanding(&self) -> (u32, u32) {
        // SYNC POINT: Relaxed: only compared with an earlier value of the
        // same word; nothing is read through it.
        let t = self
            .sh
            .slot(self.slot)
            .receiver
            .tail
            .load(Ordering::Relaxed);
        let waiting = self.head.wrapping_sub(t);
        if waiting > self.sh.geo().ring_cells() {
            return (0, t);
        }
        (waiting, t)
    }

    /// Whether the receiver has closed the segment, loaded after a send
    /// that published (its `announce` fenced after the head store, SYNC
    /// POINT (e) with [`Receiver::close_to_drain`]): `Open`, the receiver
    /// will find the datagram; `Draining`, it may still take it; `Final`,
    /// it takes nothing more (then [`outstanding`](Self::outstanding)
    /// says whether ours is still in the ring: nobody will receive it).
    ///
    /// [`Receiver::close_to_drain`]: super::Receiver::close_to_drain
    pub fn closing(&self) -> Closing {
        // SYNC POINT: Acquire pairs with the receiver's Release of
        // `CLOSED_FINAL`: the tails it stored while draining are seen.
        match self.sh.header().closed.load(Ordering::Acquire) {
            0 => Closing::Open,
            CLOSED_DRAINING => Closing::Draining,
            CLOSED_TO_KERNEL => Closing::ToKernel,
            _ => Closing::Final,
        }
    }

    /// The datagrams of ours still in the ring, oldest first, copied out,
    /// once the receiver's close is final ([`closing`](Self::closing) not
    /// `Open` nor `Draining`: it takes nothing more, so none of them is
    /// received). Only what fits the geometry is copied: the cells and
    /// partitions are ours, but the receiver could have written them.
    pub fn take_back(&self) -> Vec<Vec<u8>> {
        if matches!(self.closing(), Closing::Open | Closing::Draining) {
            return Vec::new();
        }
        let sh = &*self.sh;
        // SYNC POINT: Acquire; the receiver stored its last tail before
        // its Release of `closed`, which `closing` loaded with Acquire.
        let peer = sh.slot(self.slot).receiver.tail.load(Ordering::Acquire);
        // A tail behind the one we last read moved backwards (a hostile
        // receiver rewinding it to have received datagrams sent again):
        // ours counts (review sigfork16).
        let cells = sh.geo().ring_cells();
        let tail = if peer.wrapping_sub(self.tail) > cells {
            self.tail
        } else {
            peer
        };
        let waiting = self.head.wrapping_sub(tail);
        if waiting > cells {
            return Vec::new();
        }
        let mut back = Vec::with_capacity(waiting as usize);
        for k in 0..waiting {
            let d = sh.cell(self.slot, tail.wrapping_add(k));
            let (loc, len) = (d.loc.load(Ordering::Relaxed), d.len.load(Ordering::Relaxed));
            if loc == LOC_NONE {
                back.push(Vec::new());
                continue;
            }
            let (g, first) = ((loc >> 24) as usize, loc & 0x00ff_ffff);
            let Some(grp) = sh.geo().group(g) else {
                continue;
            };
            if len > grp.capacity() || first >= grp.partitions {
                continue;
            }
            if grp.partitions - first < grp.span_for(len) {
                continue;
            }
            let mut buf = vec![0u8; len as usize];
            sh.data().copy_out(sh.partition_offset(g, first), &mut buf);
            back.push(buf);
        }
        back
    }

    /// Marks the slot closed (the sender will send no more).
    pub fn close(&self) {
        self.sh
            .slot(self.slot)
            .sender
            .closed
            .store(1, Ordering::Release);
    }

    fn send_inner(&mut self, iov: &[IoSlice<'_>], stop: Option<Stage>) -> Result<Sent, SendError> {
        let total = iov
            .iter()
            .try_fold(0usize, |a, b| a.checked_add(b.len()))
            .unwrap_or(usize::MAX);
        if total > self.sh.geo().max_datagram() as usize {
            return Err(SendError::TooBig);
        }
        let len = total as u32;
        // Split borrows: no Arc clone per send (its count's line is
        // shared with every other handle on the segment).
        let Sender {
            sh,
            slot,
            tag,
            head,
            tail,
            cursors,
            stats,
        } = self;
        let (sh, slot, tag): (&Shared, u32, u32) = (sh, *slot, *tag);
        // SYNC POINT: Acquire pairs with the receiver's Release of `closed`
        // (whatever it wrote before closing is visible; nothing depends on
        // it but a prompt stop).
        if sh.header().closed.load(Ordering::Acquire) != 0 {
            return Err(SendError::Closed);
        }
        let line = &sh.slot(slot).sender;
        let cells = sh.geo().ring_cells();
        // The tail we last read leaves room (it only moves forward), so
        // the receiver's line is read only when the ring looks full.
        if head.wrapping_sub(*tail) >= cells {
            // SYNC POINT (c): Acquire pairs with the receiver's Release of
            // `tail`: its reads of a cell happen before we fill it again.
            let t = sh.slot(slot).receiver.tail.load(Ordering::Acquire);
            let used = head.wrapping_sub(t);
            if used > cells || t.wrapping_sub(*tail) > cells {
                return Err(SendError::Corrupt("slot tail out of range"));
            }
            *tail = t;
            if used == cells {
                return Ok(count_drop(sh, slot, stats, DropReason::RingFull));
            }
        }
        let charge = len + CHARGE_OVERHEAD;
        let limit = sh.receiver_line().limit_bytes.load(Ordering::Relaxed);
        let over =
            |queued: u32| queued != 0 && u64::from(queued) + u64::from(charge) > u64::from(limit);
        // A load first: a sender facing a full queue drops without an RMW
        // on the line every sender and the receiver write.
        if over(sh.charge().load(Ordering::Relaxed) as u32) {
            return Ok(count_drop(sh, slot, stats, DropReason::Rcvbuf));
        }
        // SYNC POINT: Relaxed: the charge only counts; RMWs on one word
        // are totally ordered, so every sender sees every earlier add and
        // the receiver's subtractions. One RMW per send.
        let old = sh
            .charge()
            .fetch_add((1 << 32) | u64::from(charge), Ordering::Relaxed);
        // An empty queue takes one datagram whatever its size, as the
        // kernel's does.
        if over(old as u32) {
            sh.uncharge(charge);
            return Ok(count_drop(sh, slot, stats, DropReason::Rcvbuf));
        }
        if stop == Some(Stage::Charged) {
            return Ok(Sent::Stopped);
        }
        let ticket = (old >> 32) as u32;
        // Recorded after the add: a death in between over-counts (the
        // receiver rebases an idle charge), never under-counts.
        line.inflight.store(charge, Ordering::Relaxed);
        if stop == Some(Stage::Recorded) {
            return Ok(Sent::Stopped);
        }
        let loc = if len == 0 {
            LOC_NONE
        } else {
            let Some((g, first, span)) = Self::claim(sh, tag, cursors, len) else {
                // `inflight` first: a death between the two over-counts.
                line.inflight.store(0, Ordering::Relaxed);
                sh.uncharge(charge);
                // Tells the receiver to repair: a peer may have left
                // entries or hint bits busy. Relaxed: only a count.
                sh.receiver_line()
                    .room_drops
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(count_drop(sh, slot, stats, DropReason::NoRoom));
            };
            if stop == Some(Stage::Claimed) {
                return Ok(Sent::Stopped);
            }
            Self::copy_in(sh, g, first, span, iov);
            loc(g, first)
        };
        if stop == Some(Stage::Copied) {
            return Ok(Sent::Stopped);
        }
        let cell = sh.cell(slot, *head);
        cell.ticket.store(ticket, Ordering::Relaxed);
        cell.loc.store(loc, Ordering::Relaxed);
        cell.len.store(len, Ordering::Relaxed);
        cell.flags.store(0, Ordering::Relaxed);
        if stop == Some(Stage::Filled) {
            return Ok(Sent::Stopped);
        }
        // Before the publish: a death after it must not make reclaim give
        // back a charge the delivery gives back too.
        line.inflight.store(0, Ordering::Relaxed);
        *head = head.wrapping_add(1);
        // SYNC POINT (b): Release pairs with the receiver's Acquire of
        // `head`: the payload bytes, the directory entries, the owner CASes
        // and the cell all happen before its reads of them.
        line.head.store(*head, Ordering::Release);
        stats.sent += 1;
        if stop == Some(Stage::Published) {
            return Ok(Sent::Stopped);
        }
        Ok(Sent::Queued {
            ring: Self::announce(sh, slot),
        })
    }

    /// Marks our slot ready and takes the receiver's doorbell flag if it
    /// is up; true when we took it (we ring).
    fn announce(sh: &Shared, slot: u32) -> bool {
        // SYNC POINT (d), the sender's half of two Dekker pairs: the head
        // store above, this fence, then the loads of the ready bit and the
        // wait flag. The receiver clears the bit (or raises the flag),
        // fences, then reloads heads. Of two SeqCst fences one is first:
        // either the receiver sees our head, or we see its clear (and set
        // the bit again) or its flag (and ring).
        fence(Ordering::SeqCst);
        let (w, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
        let ready = sh.ready(w);
        if ready.load(Ordering::Relaxed) & bit == 0 {
            ready.fetch_or(bit, Ordering::Relaxed);
        }
        let rl = sh.receiver_line();
        if rl.wait.load(Ordering::Relaxed) & WAIT_DOORBELL == 0 {
            return false;
        }
        // Counted before the flag is taken, so a receiver that reads
        // `rings` after finding the flag down knows every ring sent for it;
        // a sender that finds the flag already taken takes its count back.
        rl.rings.fetch_add(1, Ordering::Relaxed);
        if rl.wait.fetch_and(!WAIT_DOORBELL, Ordering::Relaxed) & WAIT_DOORBELL != 0 {
            true
        } else {
            rl.rings.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// A run for `len` bytes: the smallest group whose partition size x
    /// span factor holds it (claim 9), then each larger one (claim 2).
    fn claim(
        sh: &Shared,
        tag: u32,
        cursors: &mut [usize; MAX_GROUPS],
        len: u32,
    ) -> Option<(usize, u32, u32)> {
        for (g, grp) in sh.geo().groups().iter().enumerate() {
            if len > grp.capacity() {
                continue;
            }
            let span = grp.span_for(len);
            if let Some(first) = alloc::claim(sh, g, span, tag, &mut cursors[g]) {
                return Some((g, first, span));
            }
        }
        None
    }

    /// Copies the iovecs into the run and writes its directory entries
    /// (claim 6: the first partition's entry says FIRST and the span, the
    /// others CONT and the first).
    fn copy_in(sh: &Shared, g: usize, first: u32, span: u32, iov: &[IoSlice<'_>]) {
        let mut at = sh.partition_offset(g, first);
        for b in iov {
            sh.data().copy_in(at, b);
            at += b.len();
        }
        for i in first..first + span {
            let e = sh.dir(g, i);
            let head = i == first;
            e.span.store(if head { span } else { 0 }, Ordering::Relaxed);
            e.first.store(first, Ordering::Relaxed);
            e.flags
                .store(if head { DIR_FIRST } else { DIR_CONT }, Ordering::Relaxed);
        }
    }
}
