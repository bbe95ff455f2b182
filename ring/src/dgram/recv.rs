//! The receiving side: one [`Receiver`] per target segment, the only
//! consumer of every slot's ring (processes sharing a socket after fork
//! serialise on the receive lock, in the interposer).
//!
//! The *front* is the next datagram to deliver: among slots whose ready
//! bit is set, the one whose first undelivered descriptor has the oldest
//! ticket (arrival order across senders; each slot's own order is its
//! ring's). Once chosen and checked, the front stays chosen until it is
//! consumed, so a peek (MSG_PEEK), the next datagram's size (FIONREAD) and
//! the receive that follows name the same datagram.

use super::layout::*;
use super::{alloc, Shared};
use crate::sync::{fence, Ordering};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// A delivered (or peeked) datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Its full length (what MSG_TRUNC reports).
    pub len: usize,
    /// Bytes copied into the caller's buffers (`min(len, their size)`).
    pub copied: usize,
    /// The slot it came from (the interposer maps it to a source address).
    pub slot: u32,
}

impl Received {
    /// True when the buffers were too small (msg_flags' MSG_TRUNC).
    pub fn truncated(&self) -> bool {
        self.copied < self.len
    }
}

/// Why nothing was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// No datagram is queued (EAGAIN).
    Empty,
    /// Slot `slot`'s next descriptor broke an invariant: it was skipped
    /// (its partitions stay its sender's until the slot is reclaimed) and
    /// the next call goes on with the others. A slot whose ring indices
    /// are corrupt is not looked at again until it is closed.
    Corrupt {
        /// The slot whose words were wrong.
        slot: u32,
        /// The check that failed.
        what: &'static str,
    },
}

impl RecvError {
    /// The errno for a receive call that gives up.
    pub fn errno(self) -> i32 {
        rustix::io::Errno::AGAIN.raw_os_error()
    }
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Empty => f.write_str("no datagram queued"),
            RecvError::Corrupt { slot, what } => {
                write!(f, "datagram slot {slot}: shared memory corrupt: {what}")
            }
        }
    }
}

impl std::error::Error for RecvError {}

/// Counts of a receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams consumed.
    pub delivered: u64,
    /// Descriptors skipped as corrupt.
    pub corrupt: u64,
    /// Slots reclaimed.
    pub reclaimed: u64,
    /// Partitions a reclaim freed (a dead sender's runs).
    pub reclaimed_partitions: u64,
    /// Drops counted by senders whose slots were reclaimed (their slot
    /// line is zeroed for the next sender; the count stays here).
    pub departed_drops: u64,
    /// Directory entries freed by repair: an owner tag no live slot has
    /// (written by a peer).
    pub repaired_owners: u64,
    /// Hint words repaired: bits busy for free partitions.
    pub repaired_hints: u64,
}

/// A checked descriptor: a run (span 0 for an empty datagram).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub group: usize,
    pub first: u32,
    pub span: u32,
    pub len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Front {
    slot: u32,
    ticket: u32,
    key: i64,
    run: Run,
}

/// The receiver's private record of one slot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SlotState {
    pub state: u32,
    pub gen: u32,
    /// Private copy of `tail`: never re-read from shared memory.
    pub tail: u32,
    /// Its ring indices were corrupt: skipped until closed.
    pub quarantined: bool,
    /// Private copy of `head` as last loaded: while it is ahead of `tail`
    /// the datagrams up to it are known published and the shared head is
    /// not read again.
    pub head: u32,
    /// The ticket of the cell at `tail`, loaded once per datagram.
    pub ticket: Option<u32>,
    /// The tail this slot's entry in the order queue was made for (None:
    /// no entry; an entry for another tail is stale).
    pub queued: Option<u32>,
}

/// The receiving half of a target segment.
pub struct Receiver {
    pub(crate) sh: Arc<Shared>,
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) slots: Vec<SlotState>,
    front: Option<Front>,
    last_ticket: u32,
    /// `last_ticket` unwrapped: the order queue's keys are tickets
    /// unwrapped against it when they enter, so they are totally ordered.
    last_key: i64,
    /// Slots with a known next datagram, oldest first: (key, slot, tail).
    order: BinaryHeap<Reverse<(i64, u32, u32)>>,
    /// Per ready word, the slots with an entry in `order`.
    queued_mask: Vec<u64>,
    last_empty_charge: Option<u64>,
    freed: Freed,
    /// Charge a batch of frees may hold: a fraction of the limit.
    batch_bytes: u32,
    pub(crate) repair: Repair,
    pub(crate) stats: ReceiverStats,
}

/// Repair of what a peer wrote into the allocator's words (`repair.rs`):
/// a pass visits every hint word, one per receive or empty look.
#[derive(Default)]
pub(crate) struct Repair {
    /// Hint words left in the current pass (0: no pass running).
    pub left: usize,
    /// The next word: (group, word).
    pub at: (usize, usize),
    /// The NoRoom drop count senders bump, as last seen.
    pub room_drops: u32,
    /// The charge word at the last idle pass: one pass per idle period.
    pub idle_charge: Option<u64>,
}

/// Runs delivered but not yet freed: frees and charge are given back in
/// batches, so the hint word and the charge line, which every sender
/// writes too, move between cores once per batch rather than once per
/// datagram. A batch is flushed when it holds [`FREE_BATCH`] runs or
/// [`FREE_BATCH_BYTES`] of charge (at most an eighth of the limit: the
/// kernel gives a datagram's memory back when it is read, so a queue
/// holding one datagram must not see a limit smaller by much), whenever
/// the receiver finds nothing to deliver, and before a reclaim; until then
/// those partitions and bytes count as in use, which a sender sees as a
/// queue fuller by less than that.
#[derive(Default)]
struct Freed {
    runs: [Option<Run>; FREE_BATCH],
    n: usize,
    bytes: u32,
}

/// Runs per batch of frees. Under loom a batch is one run, so the models
/// check the free that follows a delivery directly: a flush on an empty
/// look follows a SeqCst fence, which would order a wrong Relaxed free.
const FREE_BATCH: usize = if cfg!(loom) { 1 } else { 16 };
/// Charge per batch of frees.
const FREE_BATCH_BYTES: u32 = 16 << 10;

impl Freed {
    fn push(&mut self, r: Run) {
        self.runs[self.n] = Some(r);
        self.n += 1;
        self.bytes += r.len + CHARGE_OVERHEAD;
    }

    fn is_full(&self, max_bytes: u32) -> bool {
        self.n == FREE_BATCH || self.bytes >= max_bytes
    }
}

/// The charge a batch of frees may hold under `limit`.
fn batch_bytes(limit: u32) -> u32 {
    FREE_BATCH_BYTES.min(limit / 8)
}

impl Receiver {
    /// Initialises a zeroed segment: header, group table, limit, then the
    /// version, last.
    pub(crate) fn init(sh: Arc<Shared>, fd: Option<OwnedFd>, sender_uid: u32) -> Receiver {
        let geo = *sh.geo();
        let o = geo.offsets();
        let h = sh.header();
        h.magic.store(DGRAM_MAGIC, Ordering::Relaxed);
        h.group_count
            .store(geo.group_count() as u32, Ordering::Relaxed);
        h.slot_count.store(geo.slot_count(), Ordering::Relaxed);
        h.ring_cells.store(geo.ring_cells(), Ordering::Relaxed);
        h.total_bytes.store(o.total as u64, Ordering::Relaxed);
        #[cfg(not(loom))]
        h.receiver_pid.store(
            rustix::process::getpid().as_raw_nonzero().get() as u32,
            Ordering::Relaxed,
        );
        h.sender_uid.store(sender_uid, Ordering::Relaxed);
        super::heap::write_group_table(&sh, &o);
        sh.receiver_line()
            .limit_bytes
            .store(DEFAULT_LIMIT_BYTES, Ordering::Relaxed);
        // SYNC POINT (e): the version is written last, with Release; an
        // attach loads it with Acquire first, so it sees every field above.
        h.version.store(DGRAM_VERSION, Ordering::Release);
        let q = geo.slot_count() as usize;
        Receiver {
            sh,
            fd,
            slots: vec![SlotState::default(); q],
            front: None,
            last_ticket: 0,
            last_key: 0,
            order: BinaryHeap::with_capacity(q),
            queued_mask: vec![0; geo.ready_words()],
            last_empty_charge: None,
            freed: Freed::default(),
            batch_bytes: batch_bytes(DEFAULT_LIMIT_BYTES),
            repair: Repair::default(),
            stats: ReceiverStats::default(),
        }
    }

    /// The memfd, to hand to senders (SCM_RIGHTS); None for a heap target.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Gives the memfd away (`fd` is None after): its mapping needs no fd,
    /// so a caller keeps it where it must (an LD_PRELOADed library above
    /// the application's fd range, out of reach of its closerange).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// The geometry.
    pub fn geometry(&self) -> DgramGeometry {
        *self.sh.geo()
    }

    /// Counts so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// Bytes charged and not yet given back (the low half of the charge;
    /// a batch of delivered datagrams is given back at once).
    pub fn queued_bytes(&self) -> u32 {
        self.sh.charge().load(Ordering::Relaxed) as u32
    }

    /// Sets the receive limit (SO_RCVBUF as the kernel stores it), capped
    /// at 1 GiB so the charge's byte half cannot overflow.
    pub fn set_limit(&mut self, bytes: u32) {
        let bytes = bytes.min(1 << 30);
        self.batch_bytes = batch_bytes(bytes);
        if self.freed.bytes >= self.batch_bytes {
            self.flush();
        }
        self.sh
            .receiver_line()
            .limit_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// Marks the target closed: senders stop and re-resolve. Final: what
    /// is in the rings now is not taken (a sender that finds its datagram
    /// still there after seeing this may send it elsewhere).
    pub fn close(&self) {
        // SYNC POINT: Release: the tails stored before (the drain of
        // `close_to_drain`) are seen by a sender that loads this value.
        self.sh
            .header()
            .closed
            .store(CLOSED_FINAL, Ordering::Release);
    }

    /// Marks the target closed for good, its socket going on as a kernel
    /// socket (across exec): nothing more is taken, and each sender sends
    /// what it left in its ring through the kernel
    /// ([`Sender::take_back`]).
    ///
    /// [`Sender::take_back`]: super::Sender::take_back
    pub fn close_to_kernel(&self) {
        // SYNC POINT: Release, as `close`: our tails are seen by a sender
        // that loads this value.
        self.sh
            .header()
            .closed
            .store(CLOSED_TO_KERNEL, Ordering::Release);
    }

    /// Marks the target closed to new datagrams before the receiver takes
    /// what is queued (then [`close`](Self::close)): every datagram a
    /// sender publishes is either received by that drain or seen by its
    /// sender, whose check after the publish ([`Sender::closing`]) finds
    /// the close (a sender that had loaded `closed` before it and
    /// published after the drain lost its datagram).
    ///
    /// [`Sender::closing`]: super::Sender::closing
    pub fn close_to_drain(&mut self) {
        self.sh
            .header()
            .closed
            .store(CLOSED_DRAINING, Ordering::Relaxed);
        // SYNC POINT (e), the receiver's half: the flag, this fence, then
        // every head (`any_published`, which marks those slots ready). The
        // sender stores its head, fences (`announce`), then loads the
        // flag: of the two fences one is first, so either we see its head
        // or it sees the flag.
        fence(Ordering::SeqCst);
        self.any_published();
    }

    /// Datagrams slot `slot`'s sender says it dropped (a hint it writes).
    pub fn sender_drops(&self, slot: u32) -> u32 {
        if slot >= self.sh.geo().slot_count() {
            return 0;
        }
        self.sh.slot(slot).sender.drops.load(Ordering::Relaxed)
    }

    /// Receives the next datagram into `buf`: see
    /// [`recv_vectored`](Self::recv_vectored).
    pub fn recv(&mut self, buf: &mut [u8], peek: bool) -> Result<Received, RecvError> {
        self.recv_vectored(&mut [IoSliceMut::new(buf)], peek)
    }

    /// Receives the next datagram, whole: as much as fits into `bufs`, with
    /// its full length reported (the rest of a datagram that does not fit
    /// is discarded, as UDP does, unless `peek`). With `peek` the datagram
    /// stays queued and the next call returns it again.
    pub fn recv_vectored(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
    ) -> Result<Received, RecvError> {
        let f = self.front()?;
        let sh = &*self.sh;
        let mut copied = 0usize;
        if f.run.span > 0 {
            let at = sh.partition_offset(f.run.group, f.run.first);
            let mut left = f.run.len as usize;
            for b in bufs.iter_mut() {
                let k = left.min(b.len());
                sh.data().copy_out(at + copied, &mut b[..k]);
                copied += k;
                left -= k;
                if left == 0 {
                    break;
                }
            }
        }
        let r = Received {
            len: f.run.len as usize,
            copied,
            slot: f.slot,
        };
        if !peek {
            self.consume(f);
        }
        Ok(r)
    }

    /// The size of the next datagram (FIONREAD); Empty when none.
    pub fn next_len(&mut self) -> Result<usize, RecvError> {
        Ok(self.front()?.run.len as usize)
    }

    /// Raises the doorbell flag before the receiver sleeps on its fd.
    /// Returns true when a datagram is already there (then don't sleep;
    /// [`disarm`](Self::disarm) and receive).
    pub fn arm(&mut self) -> bool {
        self.sh
            .receiver_line()
            .wait
            .fetch_or(WAIT_DOORBELL, Ordering::Relaxed);
        // SYNC POINT (d), receiver's half: flag, fence, then every head
        // (not the ready bits, which a sender sets after its fence).
        fence(Ordering::SeqCst);
        self.any_published()
    }

    /// Takes the doorbell flag back down (after waking, or instead of
    /// sleeping).
    pub fn disarm(&self) {
        self.sh
            .receiver_line()
            .wait
            .fetch_and(!WAIT_DOORBELL, Ordering::Relaxed);
    }

    /// Doorbell rings senders have sent so far (wrapping).
    pub fn rings(&self) -> u32 {
        self.sh.receiver_line().rings.load(Ordering::Acquire)
    }

    /// True when some live slot's ring has a published datagram; marks
    /// those slots ready.
    fn any_published(&mut self) -> bool {
        let mut any = self.front.is_some();
        for s in 0..self.slots.len() as u32 {
            let st = self.slots[s as usize];
            if st.state == SLOT_FREE || st.quarantined {
                continue;
            }
            let head = self.sh.slot(s).sender.head.load(Ordering::Acquire);
            if head != st.tail {
                self.sh
                    .ready((s / 64) as usize)
                    .fetch_or(1 << (s % 64), Ordering::Relaxed);
                any = true;
            }
        }
        any
    }

    /// The front, chosen and checked once.
    fn front(&mut self) -> Result<Front, RecvError> {
        if let Some(f) = self.front {
            return Ok(f);
        }
        self.repair_step();
        // Ready slots without an entry in the order queue: their private
        // backlog is empty, so their heads are read (and their bits
        // cleared if still empty). Slots with an entry cost nothing here.
        for w in 0..self.sh.geo().ready_words() {
            let mut bits = self.sh.ready(w).load(Ordering::Relaxed) & !self.queued_mask[w];
            while bits != 0 {
                let s = w as u32 * 64 + bits.trailing_zeros();
                bits &= bits - 1;
                self.enqueue(s)?;
            }
        }
        let (slot, ticket, key) = loop {
            let Some(Reverse((key, s, tail))) = self.order.pop() else {
                self.flush();
                self.idle_look();
                return Err(RecvError::Empty);
            };
            let st = &mut self.slots[s as usize];
            if st.queued != Some(tail) {
                continue; // stale
            }
            st.queued = None;
            self.queued_mask[(s / 64) as usize] &= !(1u64 << (s % 64));
            match st.ticket {
                Some(t) if st.state != SLOT_FREE && !st.quarantined => break (s, t, key),
                _ => continue,
            }
        };
        self.last_empty_charge = None;
        match self.check(slot) {
            Ok(run) => {
                let f = Front {
                    slot,
                    ticket,
                    key,
                    run,
                };
                self.front = Some(f);
                Ok(f)
            }
            Err(what) => {
                // Skip it: the slot's partitions stay its sender's until
                // the slot is reclaimed.
                self.stats.corrupt += 1;
                self.advance(slot);
                Err(RecvError::Corrupt { slot, what })
            }
        }
    }

    /// Gives slot `s` an entry in the order queue when it has a next
    /// datagram and none yet. Oldest ticket first: a ticket's key is its
    /// signed distance from the last delivered ticket, so a ticket taken
    /// before it (a sender preempted between its charge and its publish,
    /// or ticket 0 at the start) is older than every later one, not
    /// 2^32 - 1 ahead of them. Keys are fixed when they enter: a peer's
    /// wild ticket orders its own datagram wrongly, never the queue.
    fn enqueue(&mut self, s: u32) -> Result<(), RecvError> {
        if self
            .slots
            .get(s as usize)
            .is_none_or(|st| st.queued.is_some())
        {
            return Ok(()); // a bit past Q (a peer's), or queued already
        }
        let Some(t) = self.front_ticket(s)? else {
            return Ok(());
        };
        let key = self
            .last_key
            .wrapping_add(i64::from(t.wrapping_sub(self.last_ticket) as i32));
        let st = &mut self.slots[s as usize];
        st.queued = Some(st.tail);
        self.order.push(Reverse((key, s, st.tail)));
        self.queued_mask[(s / 64) as usize] |= 1u64 << (s % 64);
        Ok(())
    }

    /// Drops slot `s`'s entry in the order queue (left stale in the heap)
    /// and its cached ticket: for a slot granted anew or reclaimed.
    pub(crate) fn forget_queued(&mut self, s: u32) {
        let st = &mut self.slots[s as usize];
        st.queued = None;
        st.ticket = None;
        self.queued_mask[(s / 64) as usize] &= !(1u64 << (s % 64));
    }

    /// The ticket of slot `s`'s next datagram, None when it has none. The
    /// shared head is read only when the private copy says the ring is
    /// drained, the cell's ticket once per datagram: a receive reads no
    /// line a sender writes for the slots it does not deliver from.
    fn front_ticket(&mut self, s: u32) -> Result<Option<u32>, RecvError> {
        let Some(st) = self.slots.get(s as usize).copied() else {
            return Ok(None); // a bit past Q: written by a peer
        };
        if st.state == SLOT_FREE || st.quarantined {
            return Ok(None);
        }
        if let Some(t) = st.ticket {
            return Ok(Some(t));
        }
        if st.head == st.tail && self.published(s)?.is_none() {
            return Ok(None);
        }
        // Ordered by the Acquire of a head at or past this cell (in
        // `published`, now or for an earlier datagram).
        let t = self.sh.cell(s, st.tail).ticket.load(Ordering::Relaxed);
        self.slots[s as usize].ticket = Some(t);
        Ok(Some(t))
    }

    /// Slot `s`'s head when its ring holds a datagram (kept as the private
    /// copy); None (and its ready bit cleared) when empty. A head beyond
    /// the ring quarantines it.
    fn published(&mut self, s: u32) -> Result<Option<u32>, RecvError> {
        let tail = self.slots[s as usize].tail;
        let cells = self.sh.geo().ring_cells();
        let line = &self.sh.slot(s).sender;
        // SYNC POINT (b): Acquire pairs with the sender's Release of
        // `head`: the cell, entries and bytes it names are visible.
        let mut head = line.head.load(Ordering::Acquire);
        if head == tail {
            let ready = self.sh.ready((s / 64) as usize);
            let bit = 1u64 << (s % 64);
            ready.fetch_and(!bit, Ordering::Relaxed);
            // SYNC POINT (d): clear, fence, reload: a sender that
            // published before our fence is seen here; one after it sees
            // the bit clear and sets it again.
            fence(Ordering::SeqCst);
            head = line.head.load(Ordering::Acquire);
            if head == tail {
                if self.slots[s as usize].state == SLOT_CLOSING {
                    self.reclaim(s);
                }
                return Ok(None);
            }
            ready.fetch_or(bit, Ordering::Relaxed);
        }
        if head.wrapping_sub(tail) > cells {
            self.slots[s as usize].quarantined = true;
            self.stats.corrupt += 1;
            return Err(RecvError::Corrupt {
                slot: s,
                what: "head beyond the slot's ring",
            });
        }
        self.slots[s as usize].head = head;
        Ok(Some(head))
    }

    /// Checks slot `s`'s front descriptor and the directory entries it
    /// names, each word loaded once.
    fn check(&self, s: u32) -> Result<Run, &'static str> {
        let sh = &*self.sh;
        let st = self.slots[s as usize];
        let d = sh.cell(s, st.tail);
        let loc = d.loc.load(Ordering::Relaxed);
        let len = d.len.load(Ordering::Relaxed);
        if loc == LOC_NONE {
            if len != 0 {
                return Err("bytes without partitions");
            }
            return Ok(Run {
                group: 0,
                first: 0,
                span: 0,
                len: 0,
            });
        }
        let (g, first) = ((loc >> 24) as usize, loc & 0x00ff_ffff);
        let grp = *sh.geo().group(g).ok_or("group out of range")?;
        if len == 0 || len > MAX_DATAGRAM || len > grp.capacity() {
            return Err("length out of range");
        }
        let span = grp.span_for(len);
        if first >= grp.partitions || grp.partitions - first < span {
            return Err("run outside its group");
        }
        if first % 64 + span > 64 {
            return Err("run crosses a hint word");
        }
        let t = tag(s, st.gen);
        for i in first..first + span {
            let e = sh.dir(g, i);
            if e.owner.load(Ordering::Relaxed) != t {
                return Err("partition not owned by the sender");
            }
            let (flags, span_w) = if i == first {
                (DIR_FIRST, span)
            } else {
                (DIR_CONT, 0)
            };
            if e.flags.load(Ordering::Relaxed) != flags
                || e.span.load(Ordering::Relaxed) != span_w
                || e.first.load(Ordering::Relaxed) != first
            {
                return Err("directory entry does not match the descriptor");
            }
        }
        Ok(Run {
            group: g,
            first,
            span,
            len,
        })
    }

    /// Advances the tail past the front; its run and charge go back with
    /// the next [`flush`](Self::flush).
    fn consume(&mut self, f: Front) {
        self.freed.push(f.run);
        if self.freed.is_full(self.batch_bytes) {
            self.flush();
        }
        self.front = None;
        self.last_ticket = f.ticket;
        self.last_key = f.key;
        self.stats.delivered += 1;
        self.advance(f.slot);
    }

    /// Frees the delivered runs and gives back their charge: the owners,
    /// then the hint bits of runs in one word in one `fetch_and`. In that
    /// order a bit is never free while its partition is still owned, so a
    /// sender claiming meanwhile passes the runs being freed by (their
    /// bits still busy) instead of spending its `CANDIDATES` tries on
    /// them and dropping with room to spare (session 39, udpspawn39: a
    /// receiver preempted between the two steps of a batch of 16 lost a
    /// datagram; model `a_run_being_freed_hides_no_free_partition`). A
    /// bit busy over a partition already free costs only that partition
    /// until the `fetch_and` (a sender CASes only partitions whose bits it
    /// saw free; one whose look at the word predates the run may take it
    /// meanwhile, and the `fetch_and` then leaves its bit wrongly free,
    /// which `alloc` allows: a failed CAS later).
    pub(crate) fn flush(&mut self) {
        let n = core::mem::take(&mut self.freed.n);
        let bytes = core::mem::take(&mut self.freed.bytes);
        let runs = &self.freed.runs[..n];
        for r in runs.iter().flatten() {
            for p in r.first..r.first + r.span {
                // SYNC POINT (a): Release: our copy-out of this run
                // happens before the next claimant's Acquire CAS.
                self.sh.dir(r.group, p).owner.store(0, Ordering::Release);
            }
        }
        let mut word: Option<(usize, u32, u64)> = None;
        for r in runs.iter().flatten().filter(|r| r.span > 0) {
            let (key, m) = (
                (r.group, r.first / 64),
                alloc::run_mask(r.first % 64, r.span),
            );
            match &mut word {
                Some((g, w, mask)) if (*g, *w) == key => *mask |= m,
                _ => {
                    if let Some((g, w, mask)) = word {
                        self.sh
                            .hint(g, w as usize)
                            .fetch_and(!mask, Ordering::Relaxed);
                    }
                    word = Some((key.0, key.1, m));
                }
            }
        }
        if let Some((g, w, mask)) = word {
            self.sh
                .hint(g, w as usize)
                .fetch_and(!mask, Ordering::Relaxed);
        }
        if bytes != 0 {
            self.sh.uncharge(bytes);
        }
    }

    /// Publishes slot `s`'s tail one further; reclaims a closing slot
    /// that is now drained.
    fn advance(&mut self, s: u32) {
        let st = &mut self.slots[s as usize];
        st.tail = st.tail.wrapping_add(1);
        st.ticket = None;
        let tail = st.tail;
        // SYNC POINT (c): Release pairs with the sender's Acquire of
        // `tail`: our reads of the cell happen before it fills it again.
        self.sh.slot(s).receiver.tail.store(tail, Ordering::Release);
        // A corrupt descriptor skipped can take the tail past the private
        // head: the copy never lags the tail.
        if st.head.wrapping_sub(tail) > self.sh.geo().ring_cells() {
            st.head = tail;
        }
        if st.head != tail {
            // More known published: its next ticket goes into the queue
            // now, so the next receive reads no shared line for it.
            // (Only a hostile head ahead of the ring fails, in `enqueue`'s
            // check of an empty backlog, which this is not.)
            let _ = self.enqueue(s);
        } else if st.state == SLOT_CLOSING
            && self.sh.slot(s).sender.head.load(Ordering::Acquire) == tail
        {
            self.reclaim(s);
        }
    }

    /// An empty look: when the charge word stayed the same over two of
    /// them (no send in between), the segment is idle: one repair pass
    /// per idle period, and the charge rebased.
    fn idle_look(&mut self) {
        let cur = self.sh.charge().load(Ordering::Relaxed);
        if self.last_empty_charge != Some(cur) {
            self.last_empty_charge = Some(cur);
            return;
        }
        if self.repair.idle_charge != Some(cur) {
            self.repair.idle_charge = Some(cur);
            self.start_repair();
        }
        if cur as u32 != 0 {
            self.rebase_idle_charge(cur);
        }
    }

    /// Sets the charge's bytes to 0 when it stayed the same over two empty
    /// looks and no live slot has a datagram published or in flight:
    /// drops, deaths and corrupt descriptors may leave bytes counted that
    /// nothing will give back. A sender charging since the last look
    /// changed the word (its ticket), so the CAS fails or we wait.
    fn rebase_idle_charge(&mut self, cur: u64) {
        let sh = &*self.sh;
        for (s, st) in self.slots.iter().enumerate() {
            if st.state == SLOT_FREE || st.quarantined {
                continue;
            }
            let line = &sh.slot(s as u32).sender;
            if line.inflight.load(Ordering::Relaxed) != 0
                || line.head.load(Ordering::Acquire) != st.tail
            {
                return;
            }
        }
        // SYNC POINT: Relaxed, a count (as every charge RMW).
        let _ = sh.charge().compare_exchange(
            cur,
            cur & !0xffff_ffff,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.last_empty_charge = None;
    }
}
