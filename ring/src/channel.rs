//! One direction of a connection: the producer and consumer halves of a
//! circular buffer of data segments, driven by the control segment.
//!
//! Protocol (N data segments of S bytes; `head`/`tail` are sequence numbers,
//! the segment index is `seq % N`; segments `tail..=head` are in use):
//! - The producer appends into segment `head` and publishes each append by
//!   storing the segment's `end` (Release). Small writes coalesce there.
//! - When `head` is full (`end == S`) and more bytes wait, the producer opens
//!   segment `head + 1` if `head + 1 - tail < N`: it resets that segment's
//!   `end`/`last`, then publishes `head` (Release). A segment is therefore
//!   sealed — its `end` final — exactly when `head` has moved past it.
//! - The consumer reads `begin..end` of segment `tail` (reads may take part of
//!   a segment). When `begin == end` and `head != tail`, it re-loads `end`
//!   (final now) and, if drained, resets `begin` and publishes `tail + 1`
//!   (Release), which hands the segment back to the producer.
//!
//! Every word is loaded from shared memory once per use and checked against
//! the private geometry; a violation marks the connection reset.

use crate::data::DataArea;
use crate::layout::{
    ChannelControl, Geometry, SegmentBegin, SegmentControl, WaitLine, BUSY, BUSY_WAITER,
    EDGE_BACKLOG, WAIT_DOORBELL, WAIT_EDGE, WAIT_FUTEX,
};
use crate::sync::{fence, AtomicU32, Ordering};
use crate::wait::{Doorbell, Parker, WaitPolicy};
use crate::RingError;
use std::io::{IoSlice, IoSliceMut};
use std::ptr::NonNull;
use std::sync::Arc;

/// What keeps a channel's memory mapped (a memfd mapping, or heap memory).
pub(crate) type Keep = Arc<dyn Send + Sync>;

/// Pointers into one channel's control and data, with the private geometry.
#[derive(Clone)]
pub(crate) struct Channel {
    ctl: NonNull<ChannelControl>,
    segs: NonNull<SegmentControl>,
    begins: NonNull<SegmentBegin>,
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
    pub reset: NonNull<AtomicU32>,
    pub sibling: Option<NonNull<WaitLine>>,
    pub data: DataArea,
    pub geo: Geometry,
    pub parker: Arc<Parker>,
    pub keep: Keep,
}

impl Channel {
    /// # Safety
    /// `ctl`, `segs` and `begins` (N entries each), `reset` and `sibling` must point at memory
    /// that `keep` keeps mapped, and `data` must cover `geo.channel_bytes()`.
    pub(crate) unsafe fn new(p: ChannelParts) -> Self {
        Channel {
            ctl: p.ctl,
            segs: p.segs,
            begins: p.begins,
            reset: p.reset,
            sibling: p.sibling,
            data: p.data,
            geo: p.geo,
            parker: p.parker,
            _keep: p.keep,
        }
    }

    #[inline]
    #[cfg(not(loom))]
    pub(crate) fn parker(&self) -> &Parker {
        &self.parker
    }

    /// Bytes written into the channel since it was initialised: segments
    /// are only left full, so `head * S + end(head)` (a lenient snapshot of
    /// shared words, for statistics: TCP_INFO).
    pub(crate) fn written_total(&self) -> u64 {
        let s = self.geo.segment_bytes;
        let head = self.ctl().producer.head.load(Ordering::Acquire);
        let end = self.seg(head).end.load(Ordering::Acquire).min(s);
        u64::from(head) * u64::from(s) + u64::from(end)
    }

    /// Bytes the consumer has taken out since the channel was initialised
    /// (`tail * S + begin(tail)`; lenient, as `written_total`).
    pub(crate) fn consumed_total(&self) -> u64 {
        let s = self.geo.segment_bytes;
        let ctl = self.ctl();
        let mut tail = ctl.consumer.tail.load(Ordering::Acquire);
        for _ in 0..4 {
            let begin = self.begin(tail).load(Ordering::Acquire).min(s);
            let again = ctl.consumer.tail.load(Ordering::Acquire);
            if again == tail {
                let total = u64::from(tail) * u64::from(s) + u64::from(begin);
                return total.min(self.written_total());
            }
            tail = again;
        }
        u64::from(tail) * u64::from(s)
    }

    pub(crate) fn ctl(&self) -> &ChannelControl {
        // SAFETY: valid for our lifetime (constructor contract); only atomics
        // are reached through it, so concurrent peer writes are fine.
        unsafe { self.ctl.as_ref() }
    }

    #[inline]
    fn seg(&self, seq: u32) -> &SegmentControl {
        let i = (seq % self.geo.segment_count) as usize;
        // SAFETY: i < N and the array has N entries (constructor contract).
        unsafe { &*self.segs.as_ptr().add(i) }
    }

    /// Segment control by index (`idx < N`, as `SegAt` guarantees; a larger
    /// one is reduced rather than trusted).
    #[inline]
    fn seg_at(&self, idx: u32) -> &SegmentControl {
        let n = self.geo.segment_count;
        let i = if idx < n { idx } else { idx % n } as usize;
        // SAFETY: i < N and the array has N entries (constructor contract).
        unsafe { &*self.segs.as_ptr().add(i) }
    }

    /// The consumer-owned `begin` of segment `seq`.
    #[inline]
    fn begin(&self, seq: u32) -> &AtomicU32 {
        let i = (seq % self.geo.segment_count) as usize;
        // SAFETY: i < N and the array has N entries (constructor contract).
        unsafe { &(*self.begins.as_ptr().add(i)).begin }
    }

    #[inline]
    fn data_at(&self, seq: u32, off: u32) -> usize {
        (seq % self.geo.segment_count) as usize * self.geo.segment_bytes as usize + off as usize
    }

    #[inline]
    fn is_reset(&self) -> bool {
        // SAFETY: as ctl().
        unsafe { self.reset.as_ref() }.load(Ordering::Acquire) != 0
    }

    /// Writes the initial control state (begin/end/last zero, length, next).
    /// Only the side that initialises a channel calls this, before `ready`.
    pub(crate) fn initialise(&self) {
        let n = self.geo.segment_count;
        let ctl = self.ctl();
        ctl.producer.head.store(0, Ordering::Relaxed);
        ctl.producer.closed.store(0, Ordering::Relaxed);
        ctl.producer.busy.store(0, Ordering::Relaxed);
        ctl.producer.lock.store(0, Ordering::Relaxed);
        ctl.consumer.lock.store(0, Ordering::Relaxed);
        ctl.consumer.taken.store(0, Ordering::Relaxed);
        ctl.consumer.tail.store(0, Ordering::Relaxed);
        ctl.consumer.closed.store(0, Ordering::Relaxed);
        ctl.wait.writer_waiting.store(0, Ordering::Relaxed);
        ctl.wait.reader_rings.store(0, Ordering::Relaxed);
        ctl.wait.writer_rings.store(0, Ordering::Relaxed);
        // A fresh reader counts as waiting in poll/epoll: the first publish
        // rings its doorbell, so an application that polls before its first
        // read (or before it even accepted) is woken by that first data.
        ctl.wait
            .reader_waiting
            .store(WAIT_DOORBELL, Ordering::Relaxed);
        for i in 0..n {
            let s = self.seg(i);
            self.begin(i).store(0, Ordering::Relaxed);
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
            let s = self.seg(i);
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
    #[inline]
    ///
    /// A doorbell ring is counted in `rings` *before* the flag is cleared
    /// and the doorbell rung, so a waiter that sees its flag cleared also
    /// sees the count, and can account for a ring still on its way (the
    /// interposer takes exactly the doorbell bytes that were rung for data it
    /// has read, and none that are still in flight are left to make its fd
    /// look readable later).
    fn wake(
        &self,
        word: &AtomicU32,
        rings: Option<&AtomicU32>,
        doorbell: &Option<Arc<dyn Doorbell>>,
    ) {
        // Cheap check first: the flag's line is rarely written, so this load
        // normally hits the cache and we skip the RMW.
        let seen = word.load(Ordering::Relaxed);
        if seen == 0 {
            return;
        }
        let mut edge = false;
        if seen & WAIT_EDGE != 0 {
            // An edge-triggered reader: ring for this publish too, unless
            // it has EDGE_BACKLOG bytes untaken already (it then has edges
            // it has not acted on, and more bytes would only make our end
            // look unwritable).
            let w = &self.ctl().wait;
            let sent = w
                .reader_rings
                .load(Ordering::Relaxed)
                .wrapping_add(w.writer_rings.load(Ordering::Relaxed));
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
        // A ring that was counted but not sent (the doorbell failed, or a
        // concurrent reset, the only other writer that clears flags, took
        // the flag over) is taken back, so the waiter does not wait for it.
        let sent =
            (edge || bits & WAIT_DOORBELL != 0) && doorbell.as_ref().is_some_and(|d| d.ring());
        if counted && !sent {
            if let Some(r) = rings {
                r.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// How a waiter will sleep, which decides how the other side wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// On the channel's futex word (the ring's own blocking calls).
    Futex,
    /// In poll/epoll on a kernel fd: the other side rings its [`Doorbell`].
    Doorbell,
}

impl WaitKind {
    fn bits(self) -> u32 {
        match self {
            WaitKind::Futex => WAIT_FUTEX,
            WaitKind::Doorbell => WAIT_DOORBELL,
        }
    }
}

/// The writing half of a channel.
pub struct Producer {
    ch: Channel,
    doorbell: Option<Arc<dyn Doorbell>>,
    /// `head` as last seen, and `head % N`: the open segment's index
    /// without a division per write. Private, so always consistent; `head`
    /// itself is still loaded from shared memory on every write (after a
    /// fork another process may have moved it).
    at: SegAt,
}

/// A sequence number and its segment index (`seq % N`).
#[derive(Clone, Copy)]
struct SegAt {
    seq: u32,
    idx: u32,
}

impl SegAt {
    /// The index of `seq`, from the cache when it is the same segment.
    #[inline]
    fn index(&mut self, seq: u32, n: u32) -> u32 {
        if seq != self.seq || self.idx >= n {
            self.seq = seq;
            self.idx = seq % n;
        }
        self.idx
    }

    /// As `index`, without updating the cache.
    #[inline]
    fn peek(&self, seq: u32, n: u32) -> u32 {
        if seq == self.seq && self.idx < n {
            self.idx
        } else {
            seq % n
        }
    }
}

/// The reading half of a channel.
pub struct Consumer {
    ch: Channel,
    doorbell: Option<Arc<dyn Doorbell>>,
}

impl Producer {
    pub(crate) fn new(ch: Channel) -> Self {
        Producer {
            ch,
            doorbell: None,
            at: SegAt { seq: 0, idx: 0 },
        }
    }

    /// The doorbell rung when the consumer waits in poll/epoll and data arrives.
    pub fn set_doorbell(&mut self, d: Arc<dyn Doorbell>) {
        self.doorbell = Some(d);
    }

    /// Bytes of the data area per direction.
    pub fn capacity(&self) -> usize {
        self.ch.geo.channel_bytes()
    }

    /// Writes as much of `buf` as fits without blocking.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, RingError> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Writes as much of `bufs` as fits without blocking; `WouldBlock` if
    /// nothing fit. One wake-up check per call, however many slices.
    ///
    /// The producer is marked busy from before it publishes until after it
    /// rang the consumer's doorbell, so that a consumer that read the data
    /// can wait until the ring for it is counted (`wait_producer_idle`).
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, RingError> {
        self.write_vectored_min(bufs, 0)
    }

    /// As `write_vectored`, but writes nothing (`WouldBlock`) unless at
    /// least `need` bytes are free: a small message goes in whole or not at
    /// all. `need == 0` is `write_vectored`. Same as checking [`fits`]
    /// first, without loading the ring's indices twice.
    ///
    /// [`fits`]: Producer::fits
    pub fn write_vectored_min(
        &mut self,
        bufs: &[IoSlice<'_>],
        need: usize,
    ) -> Result<usize, RingError> {
        let mut src = Source::new(bufs);
        if src.is_empty() {
            return Ok(0);
        }
        self.fill_and_wake(&mut src, need)
    }

    /// Writes up to `max` bytes that `fill` produces straight into the ring,
    /// with no buffer in between (sendfile reads the file into the ring).
    /// `fill(dst, len)` must write at most `len` bytes at `dst` (read(2),
    /// pread(2)) and return how many; fewer than asked ends the write (end
    /// of file, an error the closure keeps). The bytes are published as
    /// `write` publishes, and the consumer is woken the same way.
    /// `WouldBlock` when the ring is full.
    #[cfg(not(loom))]
    pub fn write_from(
        &mut self,
        max: usize,
        fill: impl FnMut(*mut u8, usize) -> usize,
    ) -> Result<usize, RingError> {
        if max == 0 {
            return Ok(0);
        }
        let mut src = FnSource {
            fill,
            left: max,
            done: false,
        };
        match self.fill_and_wake(&mut src, 0) {
            // The first fill gave nothing: end of file, not a full ring.
            Err(RingError::WouldBlock) if src.done => Ok(0),
            r => r,
        }
    }

    /// Marks the producer outside a write, waking a consumer asleep on the
    /// word (`wait_producer_idle`).
    #[inline]
    fn set_idle(&self) {
        // SYNC POINT: Release orders the ring's count (made before, in
        // `wake_reader`) before the word reads idle; a swap so that a
        // sleeper's mark is never missed.
        let busy = &self.ch.ctl().producer.busy;
        if busy.swap(0, Ordering::Release) == BUSY_WAITER {
            self.ch.parker.wake(busy);
        }
    }

    /// Copies and publishes (marked busy, see `write_vectored`), then wakes
    /// the consumer if it waits.
    fn fill_and_wake(&mut self, src: &mut impl Fill, need: usize) -> Result<usize, RingError> {
        // SYNC POINT: this store comes before the Release stores that
        // publish the data, so a consumer that Acquire-loaded the data sees
        // the producer busy (or, later, idle again after the ring).
        self.ch.ctl().producer.busy.store(BUSY, Ordering::Relaxed);
        match self.fill(src, need) {
            Ok(written) => {
                self.wake_reader();
                self.set_idle();
                Ok(written)
            }
            Err(e) => {
                self.set_idle();
                Err(e)
            }
        }
    }

    /// Copies from `src` into the ring and publishes each append; returns
    /// the bytes written (`WouldBlock` for none, or for fewer free than
    /// `need`).
    #[inline]
    fn fill(&mut self, src: &mut impl Fill, need: usize) -> Result<usize, RingError> {
        let ch = &self.ch;
        if ch.is_reset() {
            return Err(RingError::Reset);
        }
        let ctl = ch.ctl();
        if ctl.consumer.closed.load(Ordering::Relaxed) != 0
            || ctl.producer.closed.load(Ordering::Relaxed) != 0
        {
            return Err(RingError::Closed);
        }
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let mut head = ctl.producer.head.load(Ordering::Relaxed);
        let mut idx = self.at.index(head, n);
        let mut end = ch.seg_at(idx).end.load(Ordering::Relaxed);
        if end > s {
            return Err(ch.corrupt("producer end beyond segment"));
        }
        // All or nothing: the common case (room in the open segment) needs
        // no look at the consumer's line.
        if need > (s - end) as usize {
            // SYNC POINT: Acquire as below, before reusing freed segments.
            let tail = ctl.consumer.tail.load(Ordering::Acquire);
            let used = head.wrapping_sub(tail);
            if used >= n {
                return Err(ch.corrupt("tail out of range"));
            }
            let free = (s - end) as usize + (n - 1 - used) as usize * s as usize;
            if free < need {
                return Err(RingError::WouldBlock);
            }
        }
        let mut written = 0usize;
        loop {
            if end == s {
                // SYNC POINT: Acquire pairs with the consumer's Release store of
                // `tail`: its reads of the segment we are about to reuse happen
                // before our writes into it.
                let tail = ctl.consumer.tail.load(Ordering::Acquire);
                let used = head.wrapping_sub(tail);
                if used >= n {
                    return Err(ch.corrupt("tail out of range"));
                }
                if used + 1 >= n {
                    break; // every segment holds unread data
                }
                head = head.wrapping_add(1);
                idx = self.at.index(head, n);
                let seg = ch.seg_at(idx);
                seg.last.store(0, Ordering::Relaxed);
                seg.end.store(0, Ordering::Relaxed);
                // SYNC POINT: Release pairs with the consumer's Acquire load of
                // `head`: it sees the previous segment's final `end` and this
                // segment's reset `end` before it moves on.
                ctl.producer.head.store(head, Ordering::Release);
                end = 0;
            }
            let at = idx as usize * s as usize + end as usize;
            let n_copied = src.fill(&ch.data, at, (s - end) as usize);
            end += n_copied as u32;
            written += n_copied;
            // SYNC POINT: Release pairs with the consumer's Acquire load of
            // `end`: the bytes just copied are visible before the new end.
            ch.seg_at(idx).end.store(end, Ordering::Release);
            if src.finished() {
                break;
            }
        }
        if written == 0 {
            return Err(RingError::WouldBlock);
        }
        Ok(written)
    }

    /// After publishing: wake the consumer if it flagged that it waits.
    #[inline]
    fn wake_reader(&self) {
        // SYNC POINT (Dekker with `Consumer::arm`): our stores of `end`/`head`
        // /`closed`, this SeqCst fence, then the load of `reader_waiting`; the
        // consumer stores `reader_waiting`, fences, then loads `end`/`head`.
        // The two SeqCst fences are totally ordered, so either we see its flag
        // or it sees our data — never neither (no lost wake-up).
        fence(Ordering::SeqCst);
        self.ch.wake(
            &self.ch.ctl().wait.reader_waiting,
            Some(&self.ch.ctl().wait.reader_rings),
            &self.doorbell,
        );
    }

    /// Whether `len` bytes fit right now. Looks only at our own open segment
    /// when that suffices (the common case), so it does not read the
    /// consumer's cache line on every small write.
    pub fn fits(&self, len: usize) -> bool {
        let ch = &self.ch;
        let n = ch.geo.segment_count;
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let end = ch.seg_at(self.at.peek(head, n)).end.load(Ordering::Relaxed);
        let s = ch.geo.segment_bytes;
        if end <= s && (s - end) as usize >= len {
            return true;
        }
        self.free_bytes().is_ok_and(|f| f >= len)
    }

    /// Free bytes right now (space in the open segment plus free segments).
    pub fn free_bytes(&self) -> Result<usize, RingError> {
        let ch = &self.ch;
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let end = ch.seg(head).end.load(Ordering::Relaxed);
        let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if end > s || used >= n {
            return Err(ch.corrupt("producer indices out of range"));
        }
        Ok((s - end) as usize + (n - 1 - used) as usize * s as usize)
    }

    /// True when a write would not block. Also called through a
    /// [`RoomWaiter`] while another thread of ours writes, so `head` may move
    /// under it: an inconsistent snapshot is not corruption here, only a
    /// reason to let the writer (which checks strictly) try.
    fn writable_now(&self) -> bool {
        let ch = &self.ch;
        if ch.is_reset() || ch.ctl().consumer.closed.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let end = ch.seg(head).end.load(Ordering::Relaxed);
        let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        used >= n || end > s || end < s || used + 1 < n
    }

    /// Free bytes, or None for an inconsistent snapshot (see `writable_now`).
    fn free_bytes_lenient(&self) -> Option<usize> {
        let ch = &self.ch;
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let end = ch.seg(head).end.load(Ordering::Relaxed);
        let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if end > s || used >= n {
            return None;
        }
        Some((s - end) as usize + (n - 1 - used) as usize * s as usize)
    }

    /// Announces that the caller is about to wait for room, then re-checks.
    /// Returns true if room (or an error condition) is already there, in
    /// which case the caller must not sleep. With `WaitKind::Doorbell` the
    /// consumer will ring this side's doorbell when it frees a segment.
    pub fn arm(&self, how: WaitKind) -> bool {
        let w = &self.ch.ctl().wait.writer_waiting;
        w.fetch_or(how.bits(), Ordering::Relaxed);
        // SYNC POINT: Dekker with `Consumer::wake_writer` (see wake_reader).
        fence(Ordering::SeqCst);
        self.writable_now()
    }

    /// Writes all of `buf`, waiting for room as `policy` says.
    pub fn write_all(&mut self, buf: &[u8], policy: &WaitPolicy) -> Result<(), RingError> {
        let mut done = 0;
        while done < buf.len() {
            match self.write(&buf[done..]) {
                Ok(k) => done += k,
                Err(RingError::WouldBlock) => self.wait_writable(policy)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Blocks until there is room, an error, or the policy gives up.
    pub fn wait_writable(&self, policy: &WaitPolicy) -> Result<(), RingError> {
        self.ch.wait_until(
            &self.ch.ctl().wait.writer_waiting,
            policy,
            || self.arm(WaitKind::Futex),
            || self.writable_now(),
        )
    }

    /// A handle that can wait for room (and be woken) without holding the
    /// producer, so a writer can sleep while another thread keeps access to
    /// the producer (shutdown, a non-blocking writer).
    pub fn room_waiter(&self) -> RoomWaiter {
        RoomWaiter(Producer {
            ch: self.ch.clone(),
            doorbell: self.doorbell.clone(),
            at: self.at,
        })
    }

    /// Serialises this side's writers across processes (see `sidelock`);
    /// only needed once the connection is shared by a fork.
    #[cfg(not(loom))]
    pub fn lock_side(&self) -> crate::sidelock::SideGuard {
        crate::sidelock::acquire(self.ch.clone(), true)
    }

    /// Runs `fill` (sending filler on the doorbell connection) while the
    /// ring is full, marked busy so that a consumer settling meanwhile
    /// waits for the filler's count; None (and `fill` not run) when there
    /// is room after all.
    ///
    /// SYNC POINT: busy is stored, then a SeqCst fence, then the ring is
    /// checked; the consumer stores `tail`, fences (in
    /// `wait_producer_idle`), then loads busy. Either we see the room it
    /// freed (and send no filler), or it sees us busy (and waits until the
    /// filler is counted, so it takes it with the rest).
    #[cfg(not(loom))]
    pub fn while_full<R>(&self, fill: impl FnOnce(&Self) -> R) -> Option<R> {
        let busy = &self.ch.ctl().producer.busy;
        busy.store(BUSY, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let r = (!self.writable_now()).then(|| fill(self));
        if busy.swap(0, Ordering::Release) == BUSY_WAITER {
            self.ch.parker.wake(busy);
        }
        r
    }

    /// Counts `n` filler bytes about to be sent on the doorbell connection
    /// (before sending, so the consumer never meets a byte it cannot account
    /// for); `unnote_filler` takes back the ones that could not be sent.
    pub fn note_filler(&self, n: u32) {
        self.ch
            .ctl()
            .wait
            .writer_rings
            .fetch_add(n, Ordering::Release);
    }

    /// See [`Producer::note_filler`].
    pub fn unnote_filler(&self, n: u32) {
        self.ch
            .ctl()
            .wait
            .writer_rings
            .fetch_sub(n, Ordering::Release);
    }

    /// End of stream: the consumer reads EOF once it drained what was written.
    pub fn close(&self) {
        // SYNC POINT: Release pairs with the consumer's Acquire load of
        // `closed` at the start of a read: all data is visible once EOF is.
        self.ch.ctl().producer.closed.store(1, Ordering::Release);
        self.wake_reader();
    }

    /// Declares the connection reset (ECONNRESET at the peer).
    pub fn reset(&self) {
        self.ch.mark_reset(&self.doorbell);
    }

    /// True once the consumer closed its end (writes would fail with EPIPE).
    pub fn peer_closed(&self) -> bool {
        self.ch.ctl().consumer.closed.load(Ordering::Relaxed) != 0
    }

    /// Bytes written since the channel was initialised (statistics).
    pub fn written_total(&self) -> u64 {
        self.ch.written_total()
    }

    /// Bytes of ours the consumer has read (statistics).
    pub fn consumed_total(&self) -> u64 {
        self.ch.consumed_total()
    }
}

impl Consumer {
    pub(crate) fn new(ch: Channel) -> Self {
        Consumer { ch, doorbell: None }
    }

    /// The doorbell rung when the producer waits in poll/epoll and room appears.
    pub fn set_doorbell(&mut self, d: Arc<dyn Doorbell>) {
        self.doorbell = Some(d);
    }

    /// Reads what is there, without blocking. `Ok(0)` is end of stream (for a
    /// non-empty `buf`); `WouldBlock` means empty but still open.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        self.read_vectored(&mut [IoSliceMut::new(buf)])
    }

    pub fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> Result<usize, RingError> {
        self.consume(bufs, false)
    }

    /// Like `read`, leaving the bytes in the ring (MSG_PEEK).
    pub fn peek(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        self.consume(&mut [IoSliceMut::new(buf)], true)
    }

    /// Like `read_vectored`, leaving the bytes in the ring (MSG_PEEK).
    pub fn peek_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> Result<usize, RingError> {
        self.consume(bufs, true)
    }

    fn consume(&mut self, bufs: &mut [IoSliceMut<'_>], peek: bool) -> Result<usize, RingError> {
        let ch = &self.ch;
        if ch.is_reset() {
            return Err(RingError::Reset);
        }
        let ctl = ch.ctl();
        // SYNC POINT: Acquire pairs with the producer's Release store of
        // `closed`, made after its last publish: if it is set now, an empty
        // ring below really is the end of the stream.
        let closed = ctl.producer.closed.load(Ordering::Acquire) != 0;
        let mut dst = Sink::new(bufs);
        let want = dst.remaining();
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let mut tail = ctl.consumer.tail.load(Ordering::Relaxed);
        let mut begin = ch.begin(tail).load(Ordering::Relaxed);
        let mut copied = 0usize;
        let mut freed = false;
        let mut idle_hops = 0u32;
        loop {
            let seg = ch.seg(tail);
            // SYNC POINT: Acquire pairs with the producer's Release store of
            // `end` after copying: the bytes before `end` are visible.
            let end = seg.end.load(Ordering::Acquire);
            if end > s || begin > end {
                return Err(ch.corrupt("segment begin/end out of range"));
            }
            if begin < end {
                if copied == want {
                    break;
                }
                let k = dst.copy_from(&ch.data, ch.data_at(tail, begin), (end - begin) as usize);
                begin += k as u32;
                copied += k;
                idle_hops = 0;
                continue;
            }
            // Drained as far as published. Sealed (head moved on)?
            // SYNC POINT: Acquire pairs with the producer's Release store of
            // `head`, made after the final `end` of this segment.
            let head = ctl.producer.head.load(Ordering::Acquire);
            let used = head.wrapping_sub(tail);
            if used >= n {
                return Err(ch.corrupt("head out of range"));
            }
            if used == 0 {
                break; // the open segment, and nothing more in it
            }
            let end = seg.end.load(Ordering::Acquire);
            if end > s || end < begin {
                return Err(ch.corrupt("sealed segment end out of range"));
            }
            if end != begin {
                continue; // bytes appended just before sealing
            }
            idle_hops += 1;
            if idle_hops > n {
                break; // a producer racing `head` forward cannot keep us here
            }
            if !peek {
                ch.begin(tail).store(0, Ordering::Relaxed);
                // SYNC POINT: Release pairs with the producer's Acquire load of
                // `tail`: our reads of this segment happen before its reuse.
                ctl.consumer
                    .tail
                    .store(tail.wrapping_add(1), Ordering::Release);
                freed = true;
            }
            tail = tail.wrapping_add(1);
            begin = 0;
        }
        if !peek {
            ch.begin(tail).store(begin, Ordering::Relaxed);
        }
        if freed {
            self.wake_writer();
        }
        if copied == 0 && want > 0 {
            return if closed {
                Ok(0)
            } else {
                Err(RingError::WouldBlock)
            };
        }
        Ok(copied)
    }

    #[inline]
    fn wake_writer(&self) {
        // SYNC POINT (Dekker with `Producer::arm`): our Release of `tail`,
        // this fence, then the load of `writer_waiting`; see wake_reader.
        fence(Ordering::SeqCst);
        self.ch
            .wake(&self.ch.ctl().wait.writer_waiting, None, &self.doorbell);
    }

    /// Unread bytes (FIONREAD).
    pub fn available(&self) -> Result<usize, RingError> {
        let ch = &self.ch;
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let ctl = ch.ctl();
        let tail = ctl.consumer.tail.load(Ordering::Relaxed);
        let mut begin = ch.begin(tail).load(Ordering::Relaxed);
        let head = ctl.producer.head.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if used >= n {
            return Err(ch.corrupt("head out of range"));
        }
        let mut total = 0usize;
        for k in 0..=used {
            let end = ch.seg(tail.wrapping_add(k)).end.load(Ordering::Acquire);
            if end > s || end < begin {
                return Err(ch.corrupt("segment begin/end out of range"));
            }
            total += (end - begin) as usize;
            begin = 0;
        }
        Ok(total)
    }

    /// Bytes read since the channel was initialised (statistics).
    pub fn consumed_total(&self) -> u64 {
        self.ch.consumed_total()
    }

    /// Bytes the producer has written (statistics).
    pub fn written_total(&self) -> u64 {
        self.ch.written_total()
    }

    /// True once the producer will write no more (its end of stream, read
    /// or not yet), or the connection was reset.
    pub fn producer_closed(&self) -> bool {
        self.ch.is_reset() || self.ch.ctl().producer.closed.load(Ordering::Acquire) != 0
    }

    /// True when a read would not block: data, end of stream, or reset.
    pub fn readable_now(&self) -> bool {
        let ch = &self.ch;
        ch.is_reset()
            || ch.ctl().producer.closed.load(Ordering::Acquire) != 0
            || self.available().map_or(true, |a| a > 0)
    }

    /// Announces that the caller is about to wait for data, then re-checks.
    /// Returns true if a read would already not block, in which case the
    /// caller must not sleep. With `WaitKind::Doorbell` the producer rings
    /// this side's doorbell on its next publish.
    pub fn arm(&self, how: WaitKind) -> bool {
        let w = &self.ch.ctl().wait.reader_waiting;
        w.fetch_or(how.bits(), Ordering::Relaxed);
        // SYNC POINT: Dekker with `Producer::wake_reader`.
        fence(Ordering::SeqCst);
        self.readable_now()
    }

    /// Serialises this side's readers across processes (see `sidelock`);
    /// only needed once the connection is shared by a fork.
    #[cfg(not(loom))]
    pub fn lock_side(&self) -> crate::sidelock::SideGuard {
        crate::sidelock::acquire(self.ch.clone(), false)
    }

    /// The count of doorbell and filler bytes this side has taken, in
    /// shared memory so that processes sharing the side after fork agree on
    /// what is still owed.
    pub fn taken_count(&self) -> TakenCount {
        TakenCount(self.ch.clone())
    }

    /// A lock-free look at this consumer's ring for spinning (see [`Probe`]).
    pub fn probe(&self) -> Probe {
        Probe(self.ch.clone())
    }

    /// True while the producer is inside a write (it may be about to ring
    /// for data this consumer has already read).
    pub fn producer_busy(&self) -> bool {
        self.ch.ctl().producer.busy.load(Ordering::Acquire) != 0
    }

    /// Waits, at most `patience`, until the producer is outside a write:
    /// then every doorbell ring for data this consumer has read is counted
    /// in [`Consumer::doorbells_rung`] (and sent). Yields for a few
    /// microseconds, then sleeps on the word's futex, so that a producer
    /// that was descheduled mid-write gets the CPU. Returns false on timeout.
    /// `alive` is asked between sleeps: a producer that died inside a write
    /// stays "busy" forever.
    #[cfg(not(loom))]
    pub fn wait_producer_idle(
        &self,
        patience: std::time::Duration,
        mut alive: impl FnMut() -> bool,
    ) -> bool {
        use std::time::{Duration, Instant};
        let busy = &self.ch.ctl().producer.busy;
        let start = Instant::now();
        // SYNC POINT: Dekker with `Producer::while_full` (our `tail` stores
        // before, its busy store and ring check there).
        fence(Ordering::SeqCst);
        loop {
            // SYNC POINT: Acquire pairs with the producer's Release swap.
            let b = busy.load(Ordering::Acquire);
            if b == 0 {
                return true;
            }
            let waited = start.elapsed();
            if waited >= patience {
                return false;
            }
            if waited < Duration::from_micros(5) {
                crate::restrict::yield_cpu();
                continue;
            }
            if b == BUSY {
                let _ =
                    busy.compare_exchange(BUSY, BUSY_WAITER, Ordering::Relaxed, Ordering::Relaxed);
            }
            self.ch
                .parker
                .wait(busy, BUSY_WAITER, Some(Duration::from_millis(1)));
            if !alive() {
                return false;
            }
        }
    }

    /// The reader is registered edge-triggered: from now on every publish
    /// rings (see [`WAIT_EDGE`](crate::layout::WAIT_EDGE)).
    pub fn set_edge_triggered(&self) {
        self.ch
            .ctl()
            .wait
            .reader_waiting
            .fetch_or(WAIT_EDGE, Ordering::Relaxed);
    }

    /// Reads at least one byte (or EOF), waiting as `policy` says.
    pub fn read_blocking(
        &mut self,
        buf: &mut [u8],
        policy: &WaitPolicy,
    ) -> Result<usize, RingError> {
        loop {
            match self.read(buf) {
                Err(RingError::WouldBlock) => self.wait_readable(policy)?,
                r => return r,
            }
        }
    }

    /// Blocks until a read would not block, or the policy gives up.
    pub fn wait_readable(&self, policy: &WaitPolicy) -> Result<(), RingError> {
        self.ch.wait_until(
            &self.ch.ctl().wait.reader_waiting,
            policy,
            || self.arm(WaitKind::Futex),
            || self.readable_now(),
        )
    }

    /// This side reads no more: the producer's writes fail with EPIPE.
    pub fn close(&self) {
        self.ch.ctl().consumer.closed.store(1, Ordering::Release);
        self.wake_writer();
    }

    /// Declares the connection reset (ECONNRESET at the peer).
    pub fn reset(&self) {
        self.ch.mark_reset(&self.doorbell);
    }

    /// Bytes the producer has sent on the doorbell connection so far: its
    /// doorbell rings plus its filler bytes (see [`Producer::note_filler`]).
    /// A wrapping count written by the peer: use it only as a bounded hint.
    pub fn doorbells_rung(&self) -> u32 {
        let w = &self.ch.ctl().wait;
        w.reader_rings
            .load(Ordering::Acquire)
            .wrapping_add(w.writer_rings.load(Ordering::Acquire))
    }

    /// Whether this reader's waiting flag still holds `how` (not yet cleared
    /// by a wake-up from the producer).
    /// Whether the producer may ring this reader's doorbell for its next
    /// publish: the flag is up, or the reader is edge-triggered (which the
    /// producer rings for every publish). Acquire, as `is_armed`.
    pub fn may_ring(&self) -> bool {
        self.ch.ctl().wait.reader_waiting.load(Ordering::Acquire) & (WAIT_DOORBELL | WAIT_EDGE) != 0
    }

    pub fn is_armed(&self, how: WaitKind) -> bool {
        // SYNC POINT: Acquire pairs with the producer's Release swap that
        // clears the flag after counting a ring: a flag seen down comes
        // with the count.
        self.ch.ctl().wait.reader_waiting.load(Ordering::Acquire) & how.bits() != 0
    }

    /// True once the producer closed (EOF after the data drains).
    pub fn peer_closed(&self) -> bool {
        self.ch.ctl().producer.closed.load(Ordering::Acquire) != 0
    }
}

/// See [`Consumer::probe`].
pub struct Probe(Channel);

// SAFETY: only atomics in the mapped segment (kept alive by the channel)
// are read through it.
unsafe impl Sync for Probe {}

impl Probe {
    /// A cheap "might a read find data?" for spinning, without the
    /// consumer's lock: one load of the `end` of the segment the consumer
    /// reads (the word a publish writes), compared with its `begin`. May say
    /// false while data waits in a later segment (this one was sealed and
    /// drained) or the ring closed: a spinner also asks
    /// [`Consumer::readable_now`] now and then. Peer-written values are only
    /// compared.
    pub fn maybe_readable(&self) -> bool {
        let ch = &self.0;
        let tail = ch.ctl().consumer.tail.load(Ordering::Relaxed);
        let begin = ch.begin(tail).load(Ordering::Relaxed);
        ch.seg(tail).end.load(Ordering::Relaxed) != begin
    }
}

/// See [`Consumer::taken_count`].
pub struct TakenCount(Channel);

// SAFETY: only an atomic in the mapped segment (kept alive by the channel)
// is reached through it.
unsafe impl Sync for TakenCount {}

impl TakenCount {
    /// Bytes taken so far (wrapping).
    pub fn get(&self) -> u32 {
        self.0.ctl().consumer.taken.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes taken.
    pub fn add(&self, n: u32) {
        self.0.ctl().consumer.taken.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes the producer counted for this consumer (doorbells and filler,
    /// wrapping; as [`Consumer::doorbells_rung`]). Peer-written: a hint.
    pub fn rung(&self) -> u32 {
        let w = &self.0.ctl().wait;
        w.reader_rings
            .load(Ordering::Acquire)
            .wrapping_add(w.writer_rings.load(Ordering::Acquire))
    }
}

/// Waits for room on a channel without holding its [`Producer`] (see
/// [`Producer::room_waiter`]); it cannot write.
pub struct RoomWaiter(Producer);

// SAFETY: a RoomWaiter exposes only `wait` and `wake`, which reach the
// channel through atomics, the futex and the doorbell (Send + Sync); it can
// never write, so sharing it between threads cannot break the single-producer
// discipline that keeps `Producer` itself !Sync.
unsafe impl Sync for RoomWaiter {}

impl RoomWaiter {
    /// As [`Producer::wait_writable`].
    pub fn wait(&self, policy: &WaitPolicy) -> Result<(), RingError> {
        self.0.wait_writable(policy)
    }

    /// As `wait`, but until at least `bytes` are free (or an error
    /// condition): a writer that wants its message to go in whole.
    pub fn wait_for_room(&self, bytes: usize, policy: &WaitPolicy) -> Result<(), RingError> {
        let p = &self.0;
        let flag = &p.ch.ctl().wait.writer_waiting;
        let ready = || {
            p.ch.is_reset()
                || p.ch.ctl().consumer.closed.load(Ordering::Relaxed) != 0
                || p.free_bytes_lenient().is_none_or(|f| f >= bytes)
        };
        let arm = || {
            flag.fetch_or(WAIT_FUTEX, Ordering::Relaxed);
            // SYNC POINT: Dekker with `Consumer::wake_writer`, as in `Producer::arm`.
            fence(Ordering::SeqCst);
            ready()
        };
        p.ch.wait_until(flag, policy, arm, ready)
    }

    /// Wakes this process's writers asleep on the channel's futex (they
    /// re-check their conditions, e.g. a local shutdown).
    pub fn wake(&self) {
        self.0.ch.parker.wake(&self.0.ch.ctl().wait.writer_waiting);
    }
}

/// Where a write's bytes come from.
trait Fill {
    /// Puts up to `room` bytes at `at` in the data area; returns how many.
    fn fill(&mut self, data: &DataArea, at: usize, room: usize) -> usize;
    /// Nothing more to write.
    fn finished(&self) -> bool;
}

impl Fill for Source<'_, '_> {
    fn fill(&mut self, data: &DataArea, at: usize, room: usize) -> usize {
        self.copy_into(data, at, room)
    }

    fn finished(&self) -> bool {
        self.is_empty()
    }
}

/// `Producer::write_from`'s source: a closure writing into the ring.
#[cfg(not(loom))]
struct FnSource<F> {
    fill: F,
    left: usize,
    done: bool,
}

#[cfg(not(loom))]
impl<F: FnMut(*mut u8, usize) -> usize> Fill for FnSource<F> {
    fn fill(&mut self, data: &DataArea, at: usize, room: usize) -> usize {
        let want = room.min(self.left);
        let Some(dst) = data.raw_at(at, want) else {
            self.done = true;
            return 0;
        };
        let got = (self.fill)(dst, want).min(want);
        self.left -= got;
        if got < want {
            self.done = true;
        }
        got
    }

    fn finished(&self) -> bool {
        self.done || self.left == 0
    }
}

/// A cursor over the caller's source slices.
struct Source<'a, 'b> {
    bufs: &'a [IoSlice<'b>],
    idx: usize,
    off: usize,
}

impl<'a, 'b> Source<'a, 'b> {
    fn new(bufs: &'a [IoSlice<'b>]) -> Self {
        let mut s = Source {
            bufs,
            idx: 0,
            off: 0,
        };
        s.skip_empty();
        s
    }

    fn skip_empty(&mut self) {
        while self.idx < self.bufs.len() && self.off >= self.bufs[self.idx].len() {
            self.idx += 1;
            self.off = 0;
        }
    }

    fn is_empty(&self) -> bool {
        self.idx >= self.bufs.len()
    }

    /// Copies up to `room` bytes to `at` in the data area; returns how many.
    fn copy_into(&mut self, data: &DataArea, mut at: usize, mut room: usize) -> usize {
        let mut done = 0;
        while room > 0 && !self.is_empty() {
            let b = &self.bufs[self.idx][self.off..];
            let k = b.len().min(room);
            data.copy_in(at, &b[..k]);
            at += k;
            room -= k;
            done += k;
            self.off += k;
            self.skip_empty();
        }
        done
    }
}

/// A cursor over the caller's destination slices.
struct Sink<'a, 'b> {
    bufs: &'a mut [IoSliceMut<'b>],
    idx: usize,
    off: usize,
}

impl<'a, 'b> Sink<'a, 'b> {
    fn new(bufs: &'a mut [IoSliceMut<'b>]) -> Self {
        Sink {
            bufs,
            idx: 0,
            off: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.bufs[self.idx.min(self.bufs.len())..]
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add)
            - self.off
    }

    /// Copies up to `avail` bytes from `at`; returns how many.
    fn copy_from(&mut self, data: &DataArea, mut at: usize, mut avail: usize) -> usize {
        let mut done = 0;
        while avail > 0 && self.idx < self.bufs.len() {
            let b = &mut self.bufs[self.idx][self.off..];
            let k = b.len().min(avail);
            data.copy_out(at, &mut b[..k]);
            at += k;
            avail -= k;
            done += k;
            self.off += k;
            if self.off >= self.bufs[self.idx].len() {
                self.idx += 1;
                self.off = 0;
            }
        }
        done
    }
}
