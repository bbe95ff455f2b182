//! One direction of a connection: the producer and consumer halves of a
//! circular buffer of data segments, driven by the control segment.
//!
//! Protocol (N data segments of S bytes; `head`/`tail` are sequence numbers;
//! segments `tail..=head` are in use, and sequence number `seq` lives in
//! data segment `slots[seq % N]`):
//! - The producer appends into segment `head` and publishes each append by
//!   storing the segment's `end` (Release). Small writes coalesce there.
//! - When `head` is full (`end == S`) and more bytes wait, the producer opens
//!   segment `head + 1` if `head + 1 - tail < N`: it picks a data segment
//!   that holds none of `tail..=head`, records it in `slots[(head + 1) % N]`,
//!   resets its `end`/`last`, then publishes `head` (Release). A segment is
//!   therefore sealed — its `end` final — exactly when `head` has moved past
//!   it.
//! - The consumer reads `begin..end` of segment `tail` (reads may take part of
//!   a segment). When `begin == end` and `head != tail`, it re-loads `end`
//!   (final now) and, if drained, resets `begin` and publishes `tail + 1`
//!   (Release), which hands the segment back to the producer.
//!
//! Placement: which free data segment a new segment goes to is the
//! producer's choice, private to it (`producer.rs`, `Placement`): round a
//! window of two data segments while the stream is small messages, so a
//! connection exchanging them touches (and keeps resident, and in the
//! cache) 2 * S bytes per direction, not N * S; the window doubles up to N
//! when the stream turns out bulk, which streams fastest spread over the
//! whole ring, and halves back when it calms down. Capacity never depends
//! on it: all N * S bytes are there for a writer at once. Which data
//! segments are in use the producer knows from a private record
//! (`placed.rs`), not from `slots`, so an opening costs O(1) amortized
//! whatever the peer writes; the same record says which it wrote, whose
//! pages go back to the kernel when they fall outside a shrinking window
//! or at `Producer::trim` (only free ones: see the SYNC POINT there). The consumer finds where a segment lives in `slots`,
//! which it loads after the `head` (Acquire) that told it of the segment;
//! the producer wrote it before that `head` (see the SYNC POINTs at
//! `Producer::fill` and `consumer.rs`'s `drained`).
//!
//! Every word is loaded from shared memory once per use and checked against
//! the private geometry; a violation marks the connection reset.
//!
//! Files: this one holds [`Channel`] (the pointers, checks, initialisation,
//! reset, the blocking wait and the wake-up of the other side) and
//! [`WaitKind`]; `producer.rs` the writing half, `consumer.rs` the reading
//! half and [`Probe`], `room.rs` [`RoomWaiter`], `cursor.rs` the copies
//! between the caller's buffers and the data area, and `notify.rs` the
//! doorbell bookkeeping only a poll/epoll waiter needs (public as
//! `shmnet_ring::notify`).

mod consumer;
mod cursor;
pub mod notify;
mod placed;
mod producer;
mod room;

pub use consumer::{Consumer, Probe};
#[cfg(not(loom))]
pub use cursor::Space;
pub use producer::Producer;
pub use room::RoomWaiter;

use crate::data::{DataArea, Keep};
use crate::layout::{
    ChannelControl, Geometry, SegmentBegin, SegmentControl, SegmentSlot, WaitLine, EDGE_BACKLOG,
    WAIT_DOORBELL, WAIT_EDGE, WAIT_FUTEX,
};
use crate::sync::{fence, AtomicU32, Ordering};
use crate::wait::{Doorbell, Parker, WaitPolicy};
use crate::RingError;
use std::ptr::NonNull;
use std::sync::Arc;

/// Pointers into one channel's control and data, with the private geometry.
#[derive(Clone)]
pub(crate) struct Channel {
    ctl: NonNull<ChannelControl>,
    segs: NonNull<SegmentControl>,
    begins: NonNull<SegmentBegin>,
    slots: NonNull<SegmentSlot>,
    reset: NonNull<AtomicU32>,
    /// The other direction's wait line, so a reset wakes its waiters too.
    sibling: Option<NonNull<WaitLine>>,
    data: DataArea,
    geo: Geometry,
    parker: Arc<Parker>,
    _keep: Keep,
}

// SAFETY: the pointers refer to memory kept alive by `_keep` and accessed only
// through atomics or raw copies; nothing is tied to the creating thread.
unsafe impl Send for Channel {}

/// The pieces a channel is made of, for [`Channel::new`].
pub(crate) struct ChannelParts {
    pub ctl: NonNull<ChannelControl>,
    pub segs: NonNull<SegmentControl>,
    pub begins: NonNull<SegmentBegin>,
    pub slots: NonNull<SegmentSlot>,
    pub reset: NonNull<AtomicU32>,
    pub sibling: Option<NonNull<WaitLine>>,
    pub data: DataArea,
    pub geo: Geometry,
    pub parker: Arc<Parker>,
    pub keep: Keep,
}

impl Channel {
    /// # Safety
    /// `ctl`, `segs`, `begins` and `slots` (N entries each), `reset` and
    /// `sibling` must point at memory
    /// that `keep` keeps mapped, and `data` must cover `geo.channel_bytes()`.
    pub(crate) unsafe fn new(p: ChannelParts) -> Self {
        Channel {
            ctl: p.ctl,
            segs: p.segs,
            begins: p.begins,
            slots: p.slots,
            reset: p.reset,
            sibling: p.sibling,
            data: p.data,
            geo: p.geo,
            parker: p.parker,
            _keep: p.keep,
        }
    }

    /// Takes this side's lock of the channel (the producer's or the
    /// consumer's word) for this process: see [`crate::sidelock`]. A lock
    /// held past its patience resets the connection.
    #[cfg(not(loom))]
    fn lock_side(&self, producer: bool) -> crate::sidelock::SideGuard {
        let ctl = self.ctl();
        let word = if producer {
            &ctl.producer.lock
        } else {
            &ctl.consumer.lock
        };
        // SAFETY: the word is in this channel's control segment, which
        // `_keep` keeps mapped.
        let lock = unsafe {
            crate::sidelock::LockWord::new(
                NonNull::from(word),
                self.parker.clone(),
                self._keep.clone(),
            )
        };
        crate::sidelock::acquire(lock, || self.mark_reset(&None))
    }

    /// Bytes written into the channel since it was initialised: segments
    /// are only left full, so `head * S + end(head)` (a lenient snapshot of
    /// shared words, for statistics: TCP_INFO).
    pub(crate) fn written_total(&self) -> u64 {
        let s = self.geo.segment_bytes;
        let head = self.ctl().producer.head.load(Ordering::Acquire);
        let end = self
            .seg_at(self.slot_lenient(head))
            .end
            .load(Ordering::Acquire)
            .min(s);
        u64::from(head) * u64::from(s) + u64::from(end)
    }

    /// Bytes the consumer has taken out since the channel was initialised
    /// (`tail * S + begin(tail)`; lenient, as `written_total`).
    pub(crate) fn consumed_total(&self) -> u64 {
        let s = self.geo.segment_bytes;
        let ctl = self.ctl();
        let mut tail = ctl.consumer.tail.load(Ordering::Acquire);
        for _ in 0..4 {
            let begin = self
                .begin_at(self.slot_lenient(tail))
                .load(Ordering::Acquire)
                .min(s);
            let again = ctl.consumer.tail.load(Ordering::Acquire);
            if again == tail {
                let total = u64::from(tail) * u64::from(s) + u64::from(begin);
                return total.min(self.written_total());
            }
            tail = again;
        }
        u64::from(tail) * u64::from(s)
    }

    /// Doorbell and filler bytes the producer counted for the consumer
    /// (wrapping). Peer-written: a hint, never a bound.
    pub(crate) fn rung(&self, order: Ordering) -> u32 {
        let w = &self.ctl().wait;
        w.reader_rings
            .load(order)
            .wrapping_add(w.writer_rings.load(order))
    }

    #[inline]
    pub(crate) fn ctl(&self) -> &ChannelControl {
        // SAFETY: valid for our lifetime (constructor contract); only atomics
        // are reached through it, so concurrent peer writes are fine.
        unsafe { self.ctl.as_ref() }
    }

    /// The entry of `slots` for sequence number `seq` (`slots[seq % N]`).
    #[inline]
    fn slot_word(&self, seq: u32) -> &AtomicU32 {
        let i = (seq % self.geo.segment_count) as usize;
        // SAFETY: i < N and the array has N entries (constructor contract).
        unsafe { &(*self.slots.as_ptr().add(i)).slot }
    }

    /// The data segment holding sequence number `seq`, if the word holds
    /// one (`< N`). Relaxed: callers order it (see the module docs).
    #[inline]
    fn slot_opt(&self, seq: u32) -> Option<u32> {
        let slot = self.slot_word(seq).load(Ordering::Relaxed);
        (slot < self.geo.segment_count).then_some(slot)
    }

    /// As `slot_opt`; a word out of range marks the connection reset.
    #[inline]
    fn slot(&self, seq: u32) -> Result<u32, RingError> {
        self.slot_opt(seq)
            .ok_or_else(|| self.corrupt("segment slot out of range"))
    }

    /// As `slot_opt`, for lenient snapshots (statistics, hints): a word out
    /// of range is taken as the last segment, and nothing is marked.
    #[inline]
    fn slot_lenient(&self, seq: u32) -> u32 {
        self.slot_opt(seq).unwrap_or(self.geo.segment_count - 1)
    }

    /// Segment control by data segment (`idx < N`, as `slot` and `SegAt`
    /// guarantee; a larger one is reduced rather than trusted).
    #[inline]
    fn seg_at(&self, idx: u32) -> &SegmentControl {
        let n = self.geo.segment_count;
        let i = if idx < n { idx } else { idx % n } as usize;
        // SAFETY: i < N and the array has N entries (constructor contract).
        unsafe { &*self.segs.as_ptr().add(i) }
    }

    /// The consumer-owned `begin` of data segment `idx` (reduced as in
    /// `seg_at`).
    #[inline]
    fn begin_at(&self, idx: u32) -> &AtomicU32 {
        let n = self.geo.segment_count;
        let i = if idx < n { idx } else { idx % n } as usize;
        // SAFETY: i < N and the array has N entries (constructor contract).
        unsafe { &(*self.begins.as_ptr().add(i)).begin }
    }

    /// Where byte `off` of data segment `idx` (`< N`) is in the data area.
    #[inline]
    fn data_at(&self, idx: u32, off: u32) -> usize {
        idx as usize * self.geo.segment_bytes as usize + off as usize
    }

    #[inline]
    fn is_reset(&self) -> bool {
        // SAFETY: as ctl().
        unsafe { self.reset.as_ref() }.load(Ordering::Acquire) != 0
    }

    /// Writes the initial control state (begin/end/last zero, length, next,
    /// and `slots[i] = i`, so that sequence number 0 is in segment 0).
    /// Only the side that initialises a channel calls this, before `ready`.
    pub(crate) fn initialise(&self) {
        let n = self.geo.segment_count;
        let ctl = self.ctl();
        ctl.producer.head.store(0, Ordering::Relaxed);
        ctl.producer.closed.store(0, Ordering::Relaxed);
        ctl.producer.busy.store(0, Ordering::Relaxed);
        ctl.producer.lock.store(0, Ordering::Relaxed);
        ctl.producer.rung_at.store(0, Ordering::Relaxed);
        ctl.producer.reset_reported.store(0, Ordering::Relaxed);
        ctl.consumer.lock.store(0, Ordering::Relaxed);
        ctl.consumer.taken.store(0, Ordering::Relaxed);
        ctl.consumer.tail.store(0, Ordering::Relaxed);
        ctl.consumer.closed.store(0, Ordering::Relaxed);
        ctl.wait.writer_waiting.store(0, Ordering::Relaxed);
        ctl.wait.reader_rings.store(0, Ordering::Relaxed);
        ctl.wait.writer_rings.store(0, Ordering::Relaxed);
        ctl.wait.reader_sleep.store(0, Ordering::Relaxed);
        // A fresh reader counts as waiting in poll/epoll: the first publish
        // rings its doorbell, so an application that polls before its first
        // read (or before it even accepted) is woken by that first data.
        ctl.wait
            .reader_waiting
            .store(WAIT_DOORBELL, Ordering::Relaxed);
        for i in 0..n {
            let s = self.seg_at(i);
            self.begin_at(i).store(0, Ordering::Relaxed);
            self.slot_word(i).store(i, Ordering::Relaxed);
            s.end.store(0, Ordering::Relaxed);
            s.length.store(self.geo.segment_bytes, Ordering::Relaxed);
            s.next.store((i + 1) % n, Ordering::Relaxed);
            s.last.store(0, Ordering::Relaxed);
        }
        // SYNC POINT: Release pairs with the Acquire in `is_ready`; whoever
        // sees READY sees the whole initial state.
        ctl.wait
            .ready
            .store(crate::layout::CHANNEL_READY, Ordering::Release);
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn is_ready(&self) -> bool {
        self.ctl().wait.ready.load(Ordering::Acquire) == crate::layout::CHANNEL_READY
    }

    /// Checks the per-segment links an initialiser wrote (claim 88's circle).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn check_links(&self) -> Result<(), &'static str> {
        let n = self.geo.segment_count;
        for i in 0..n {
            let s = self.seg_at(i);
            if s.length.load(Ordering::Relaxed) != self.geo.segment_bytes {
                return Err("segment length differs from header");
            }
            if s.next.load(Ordering::Relaxed) != (i + 1) % n {
                return Err("segment links do not form the circular buffer");
            }
        }
        Ok(())
    }

    /// Marks the connection reset and wakes every waiter we know of: futex
    /// sleepers on both directions, and the peer through `doorbell` if any
    /// waiter asked for one.
    pub(crate) fn mark_reset(&self, doorbell: &Option<Arc<dyn Doorbell>>) {
        // SAFETY: as ctl().
        unsafe { self.reset.as_ref() }.store(1, Ordering::Release);
        // SYNC POINT: Dekker with `arm` on either side, as in wake_reader.
        fence(Ordering::SeqCst);
        // SAFETY: constructor contract: the sibling is kept alive by `_keep`.
        let sibling = self.sibling.map(|s| unsafe { s.as_ref() });
        let mut ring = false;
        for w in [Some(&self.ctl().wait), sibling].into_iter().flatten() {
            for word in [&w.reader_waiting, &w.writer_waiting] {
                let bits = word.swap(0, Ordering::Relaxed);
                if bits & WAIT_FUTEX != 0 {
                    self.parker.wake(word);
                }
                ring |= bits & WAIT_DOORBELL != 0;
            }
        }
        if let (true, Some(d)) = (ring, doorbell) {
            d.ring();
        }
    }

    /// The blocking wait of either side: spin as `policy` says, then
    /// announce (`arm`, which re-checks) and sleep on the futex word `flag`
    /// until `ready`, a deadline, or a dead peer.
    fn wait_until(
        &self,
        flag: &AtomicU32,
        policy: &WaitPolicy,
        arm: impl Fn() -> bool,
        ready: impl Fn() -> bool,
    ) -> Result<(), RingError> {
        if policy.spin_until(&ready) {
            return Ok(());
        }
        loop {
            if arm() {
                return Ok(());
            }
            let slice = policy.next_slice()?;
            // Sleep only while our flag is still up: the waker clears it first.
            let armed = flag.load(Ordering::Relaxed);
            if armed & WAIT_FUTEX != 0
                && self.parker.wait(flag, armed, slice)
                && policy.interruptible
                && !ready()
            {
                return Err(RingError::Interrupted);
            }
            if ready() {
                return Ok(());
            }
            if !policy.peer_alive() {
                return Err(RingError::PeerGone);
            }
        }
    }

    #[cold]
    fn corrupt(&self, what: &'static str) -> RingError {
        self.mark_reset(&None);
        RingError::Corrupt(what)
    }

    /// Clears a waiting flag the other side set and wakes it the way it asked.
    ///
    /// A doorbell ring is counted in `rings` *before* the flag is cleared
    /// and the doorbell rung, so a waiter that sees its flag cleared also
    /// sees the count, and can account for a ring still on its way (the
    /// interposer takes exactly the doorbell bytes that were rung for data it
    /// has read, and none that are still in flight are left to make its fd
    /// look readable later).
    ///
    /// `decided` runs once whether to ring is decided and counted, before
    /// the doorbell's system call (the producer leaves its busy word
    /// there: a reader waiting for the ring to be counted need not wait
    /// out the send, see `ProducerLine::busy`).
    ///
    /// Returns whether a doorbell byte was sent.
    #[inline]
    fn wake(
        &self,
        word: &AtomicU32,
        rings: Option<&AtomicU32>,
        doorbell: &Option<Arc<dyn Doorbell>>,
        decided: impl FnOnce(),
    ) -> bool {
        // Cheap check first: the flag's line is rarely written, so this load
        // normally hits the cache and we skip the RMW.
        let seen = word.load(Ordering::Relaxed);
        if seen == 0 {
            decided();
            return false;
        }
        let mut edge = false;
        if seen & WAIT_EDGE != 0 {
            // An edge-triggered reader: ring for this publish too, unless
            // it has EDGE_BACKLOG bytes untaken already (it then has edges
            // it has not acted on, and more bytes would only make our end
            // look unwritable).
            let sent = self.rung(Ordering::Relaxed);
            let untaken = sent.wrapping_sub(self.ctl().consumer.taken.load(Ordering::Relaxed));
            edge = untaken < EDGE_BACKLOG;
        }
        let counted = (edge || seen & WAIT_DOORBELL != 0) && doorbell.is_some();
        if counted {
            if let Some(r) = rings {
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SYNC POINT: Release orders the count above before the cleared
        // flag; a waiter loading the flag with Acquire and finding it clear
        // then sees the count.
        // The edge bit stays (the reader set it once, at registration).
        let bits = word.fetch_and(WAIT_EDGE, Ordering::Release);
        if bits & WAIT_FUTEX != 0 {
            self.parker.wake(word);
        }
        // A ring that was counted but not sent (the flag was gone when we
        // took it: a concurrent reset, the only other writer that clears
        // flags, or the reader took it down; or the doorbell failed) is
        // taken back, so the waiter does not wait for it. Known not to be
        // sent: taken back before `decided`, so that the count is final
        // there but for a failed send (a reader waiting for a byte looks
        // at the count again, see the interposer's `take_owed`).
        // Sent only if counted: a flag the reader raised between `seen` and
        // the swap (an arm at the edge backlog) finds the data by itself;
        // a byte sent uncounted would stay queued with nothing owed (review
        // s30 #3; loom `an_arm_racing_a_publish_at_the_edge_backlog_is_counted`).
        let rings_now = counted && (edge || bits & WAIT_DOORBELL != 0);
        let take_back = || {
            if let Some(r) = rings {
                r.fetch_sub(1, Ordering::Relaxed);
            }
        };
        if counted && !rings_now {
            take_back();
        }
        decided();
        // A reader's flag raised for one of its sleeps: the doorbell may
        // know that sleep rung already (decision 41). Not an edge-triggered
        // reader's (its edges are its own, one per arrival).
        let sleep = match rings {
            Some(_) if rings_now && bits & WAIT_EDGE == 0 => {
                self.ctl().wait.reader_sleep.load(Ordering::Relaxed)
            }
            _ => 0,
        };
        let sent = rings_now
            && doorbell.as_ref().is_some_and(|d| match sleep {
                0 => d.ring(),
                s => d.ring_sleep(s),
            });
        if counted && rings_now && !sent {
            take_back();
        }
        sent
    }
}

/// How a waiter will sleep, which decides how the other side wakes it (see
/// [`Producer::arm`] and [`Consumer::arm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// On the channel's futex word (the ring's own blocking calls).
    Futex,
    /// In poll/epoll on a kernel fd: the other side rings its [`Doorbell`].
    Doorbell,
}

impl WaitKind {
    #[inline]
    fn bits(self) -> u32 {
        match self {
            WaitKind::Futex => WAIT_FUTEX,
            WaitKind::Doorbell => WAIT_DOORBELL,
        }
    }
}
