//! One partition's two halves on the region: [`TxPort`] places packets in
//! its own pool and names them in its output queues (claims 98-99);
//! [`RxPort`] polls the queues the others keep for it (claims 96-97) and
//! sleeps on its doorbell only when they are all empty.
//!
//! Wake-up protocol (store-buffer pattern, both sides fence):
//! - receiver: `sleeping = 1`; fence(SeqCst); check every `head`; sleep on
//!   `bell` (value read before `sleeping = 1`) only if all were empty;
//! - sender: store `head` (Release); fence(SeqCst); if `sleeping` is set,
//!   bump `bell` and wake it.
//!
//! Either the receiver's check sees the new head, or the sender sees the
//! flag; a bump between the receiver's read of `bell` and its futex wait
//! makes the wait return at once. The same shape guards a sender waiting
//! for room (`room_waiting` / `tail`).

use crate::futex;
use crate::layout::{Geometry, PORT_GONE};
use crate::region::Region;
use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A packet buffer of the sender's pool, out of every queue.
#[derive(Debug)]
pub struct TxBuf {
    index: u32,
    ptr: *mut u8,
    cap: usize,
}

impl TxBuf {
    /// Where to read a packet into (`cap` bytes; no reference is formed:
    /// the region is shared memory).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The buffer's size.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

/// The sending half of partition `me`.
pub struct TxPort {
    region: Arc<Region>,
    geo: Geometry,
    me: usize,
    lane: usize,
    free: Vec<u32>,
    /// Per destination: the buffers named by descriptors `tail_seen..head`,
    /// in order (private: what the receiver consumed frees exactly these,
    /// whatever the descriptors in shared memory say now).
    inflight: Vec<VecDeque<u32>>,
    head: Vec<u32>,
    published: Vec<u32>,
    tail_seen: Vec<u32>,
    /// Per destination: its queue stayed full for a whole wait, and has
    /// not drained to half since (see [`send`](Self::send)).
    stalled: Vec<bool>,
    /// Per destination: time spent waiting for room since its queue was
    /// last at most half full or its receiver last drained half a queue.
    waited: Vec<Duration>,
    /// Per destination: its tail when `waited` last started from zero.
    mark: Vec<u32>,
    room_timeouts: u64,
    room_waited: Duration,
}

// SAFETY: TxBuf's pointer is into the region, kept mapped by the Arc the
// port holds; only the port's owner thread uses it.
unsafe impl Send for TxPort {}

/// Why a packet could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue to that partition has no room.
    Full,
    /// The partition left the segment.
    Gone,
}

impl TxPort {
    /// The sender of lane `lane` of partition `me`; it owns every buffer
    /// of pool (`me`, `lane`) and feeds lane `lane` of the others.
    pub fn new(region: Arc<Region>, me: usize, lane: usize) -> Self {
        let geo = region.geometry();
        let p = geo.partitions as usize;
        assert!(me < p && lane < geo.queues as usize);
        TxPort {
            free: (0..geo.pool_buffers()).rev().collect(),
            inflight: vec![VecDeque::new(); p],
            head: vec![0; p],
            published: vec![0; p],
            tail_seen: vec![0; p],
            stalled: vec![false; p],
            waited: vec![Duration::ZERO; p],
            mark: vec![0; p],
            room_timeouts: 0,
            room_waited: Duration::ZERO,
            region,
            geo,
            me,
            lane,
        }
    }

    /// A free buffer of our pool (reclaiming consumed ones first if none is
    /// free), or None when every buffer is queued (cannot happen while the
    /// caller holds at most `BATCH` at once).
    pub fn buffer(&mut self) -> Option<TxBuf> {
        if self.free.is_empty() {
            self.reclaim_all();
        }
        let index = self.free.pop()?;
        let cap = self.geo.buf_bytes;
        let ptr = self.region.pool_ptr(self.me, self.lane, index * cap, cap)?;
        Some(TxBuf {
            index,
            ptr,
            cap: cap as usize,
        })
    }

    /// Takes back what every receiver consumed. Called before each batch:
    /// the buffers freed last are then taken first, so the pool's pages
    /// that get touched are about as many as are in flight at once.
    pub fn reclaim_all(&mut self) {
        for d in 0..self.head.len() {
            self.reclaim(d);
        }
    }

    /// Returns a buffer that was not queued.
    pub fn give_back(&mut self, b: TxBuf) {
        self.free.push(b.index);
    }

    /// Takes back the buffers partition `d` consumed. False when its tail is
    /// impossible (behind what it consumed before, or past what we
    /// published): nothing is reclaimed and the queue stays as it was.
    pub fn reclaim(&mut self, d: usize) -> bool {
        if d == self.me {
            return true;
        }
        // SYNC POINT: Acquire pairs with the receiver's Release store of
        // `tail` after it copied the packets out: once we see the tail, it
        // is done with their buffers and we may overwrite them.
        let t = self
            .region
            .queue(self.me, d, self.lane)
            .consumer
            .tail
            .load(Ordering::Acquire);
        let consumed = t.wrapping_sub(self.tail_seen[d]);
        if consumed > self.head[d].wrapping_sub(self.tail_seen[d]) {
            return false;
        }
        for _ in 0..consumed {
            if let Some(i) = self.inflight[d].pop_front() {
                self.free.push(i);
            }
        }
        self.tail_seen[d] = t;
        true
    }

    /// Our partition index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Whether partition `d` is still on the segment (its own word: a hint).
    pub fn peer_up(&self, d: usize) -> bool {
        self.region.port(d, self.lane).state.load(Ordering::Relaxed) != PORT_GONE
    }

    /// Names `b` (holding `len` bytes) in our queue to `d`; published with
    /// the next [`publish`](Self::publish). On error the buffer comes back.
    pub fn push(&mut self, d: usize, b: TxBuf, len: usize) -> Result<(), (PushError, TxBuf)> {
        assert!(d != self.me && d < self.head.len() && len <= b.cap);
        if !self.peer_up(d) {
            return Err((PushError::Gone, b));
        }
        if self.head[d].wrapping_sub(self.tail_seen[d]) >= self.geo.slots && !self.room(d) {
            return Err((PushError::Full, b));
        }
        let desc = self.region.desc(self.me, d, self.lane, self.head[d]);
        desc.offset
            .store(b.index * self.geo.buf_bytes, Ordering::Relaxed);
        desc.len.store(len as u32, Ordering::Relaxed);
        self.head[d] = self.head[d].wrapping_add(1);
        self.inflight[d].push_back(b.index);
        Ok(())
    }

    /// [`push`](Self::push), waiting for room in a full queue — at most
    /// `wait` in all per half a queue the receiver drains (or since the
    /// queue was last at most half full). Once that budget is spent the
    /// destination is stalled: its packets are dropped at once (as a NIC
    /// drops on a full ring) until it has drained half a queue. So one
    /// stuck or slow receiver costs the sender's other destinations at
    /// most `wait` per half a queue it drains (review s28 #2: before, a
    /// receiver taking one packet now and then cleared the stall with
    /// each, and the sender waited for it packet by packet, throttling its
    /// traffic to everyone else to that receiver's pace), while a healthy
    /// receiver that is merely behind — its queue full for seconds under a
    /// bulk flow, but draining — never spends it (review s29 #6: the
    /// budget counted from the queue's last half-empty moment, and a
    /// bulk flow that keeps it above half spent it in small waits).
    pub fn send(
        &mut self,
        d: usize,
        b: TxBuf,
        len: usize,
        wait: Duration,
    ) -> Result<(), (PushError, TxBuf)> {
        if self.head[d].wrapping_sub(self.tail_seen[d]) > self.geo.slots / 2 {
            self.reclaim(d);
        }
        if self.head[d].wrapping_sub(self.tail_seen[d]) <= self.geo.slots / 2
            || self.tail_seen[d].wrapping_sub(self.mark[d]) >= self.geo.slots / 2
        {
            self.stalled[d] = false;
            self.waited[d] = Duration::ZERO;
            self.mark[d] = self.tail_seen[d];
        } else if self.stalled[d] {
            return Err((PushError::Full, b));
        }
        match self.push(d, b, len) {
            Err((PushError::Full, b)) => {
                let t0 = Instant::now();
                let room = self.wait_room(d, wait.saturating_sub(self.waited[d]));
                let spent = t0.elapsed();
                self.waited[d] += spent;
                self.room_waited += spent;
                if room {
                    self.push(d, b, len)
                } else {
                    self.stalled[d] = true;
                    self.room_timeouts += 1;
                    Err((PushError::Full, b))
                }
            }
            r => r,
        }
    }

    /// How many times a destination was stalled (its wait budget spent).
    pub fn room_timeouts(&self) -> u64 {
        self.room_timeouts
    }

    /// Time spent waiting for room, all destinations together.
    pub fn room_waited(&self) -> Duration {
        self.room_waited
    }

    fn room(&mut self, d: usize) -> bool {
        self.reclaim(d) && self.head[d].wrapping_sub(self.tail_seen[d]) < self.geo.slots
    }

    /// Publishes every queue with new descriptors and rings the doorbell of
    /// each receiver that sleeps. Returns the doorbells rung.
    pub fn publish(&mut self) -> u64 {
        let mut pending = 0u32; // bit d: published to d now
        for d in 0..self.head.len() {
            if self.head[d] != self.published[d] {
                // SYNC POINT: Release pairs with the receiver's Acquire load
                // of `head`: the descriptors and packet bytes written before
                // are visible to it once it sees the new head.
                let q = self.region.queue(self.me, d, self.lane);
                q.producer.head.store(self.head[d], Ordering::Release);
                self.published[d] = self.head[d];
                pending |= 1 << d;
            }
        }
        if pending == 0 {
            return 0;
        }
        // SYNC POINT: the store-buffer fence (module docs): head stores
        // before the loads of `sleeping`.
        fence(Ordering::SeqCst);
        let mut rung = 0;
        for d in 0..self.head.len() {
            let port = self.region.port(d, self.lane);
            if pending & (1 << d) != 0 && port.sleeping.load(Ordering::Relaxed) != 0 {
                port.bell.fetch_add(1, Ordering::Release);
                futex::wake(&port.bell);
                rung += 1;
            }
        }
        rung
    }

    /// Waits until queue `d` has room, at most `timeout`; publishes first so
    /// the receiver has something to drain. False on timeout or if `d` left.
    pub fn wait_room(&mut self, d: usize, timeout: Duration) -> bool {
        self.publish();
        let deadline = Instant::now() + timeout;
        let region = self.region.clone();
        let q = region.queue(self.me, d, self.lane);
        loop {
            if self.room(d) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.peer_up(d) {
                return false;
            }
            let seen = q.consumer.tail.load(Ordering::Relaxed);
            q.producer.room_waiting.store(1, Ordering::Relaxed);
            // SYNC POINT: store-buffer fence: the flag before the re-check
            // of `tail` (the receiver stores tail, fences, loads the flag).
            fence(Ordering::SeqCst);
            if !self.room(d) {
                futex::wait(&q.consumer.tail, seen, left.min(Duration::from_millis(1)));
            }
            q.producer.room_waiting.store(0, Ordering::Relaxed);
        }
    }
}

/// How long in all a sender waits for room in a full queue per half a
/// queue its receiver drains, before it drops packets to it ([`TxPort::send`]).
/// A healthy receiver descheduled on a loaded machine (2 CPUs, several busy
/// processes: tens of milliseconds off the CPU) must not run out of it —
/// 10 ms did (review s29 #6: thousands of drops to a healthy iperf3) —
/// and a stuck one costs its sender's other destinations this once.
pub const ROOM_WAIT: Duration = Duration::from_millis(100);

/// The receiving half of partition `me`.
pub struct RxPort {
    region: Arc<Region>,
    geo: Geometry,
    me: usize,
    lane: usize,
    tail: Vec<u32>,
    scratch: Vec<u8>,
}

/// What [`RxPort::poll`] saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// Packets delivered.
    pub packets: usize,
    /// Descriptors or queues refused (out of bounds, impossible indices).
    pub rejected: usize,
}

impl RxPort {
    /// The receiver of lane `lane` of partition `me`.
    pub fn new(region: Arc<Region>, me: usize, lane: usize) -> Self {
        let geo = region.geometry();
        let p = geo.partitions as usize;
        assert!(me < p && lane < geo.queues as usize);
        RxPort {
            tail: vec![0; p],
            scratch: vec![0; geo.buf_bytes as usize],
            region,
            geo,
            me,
            lane,
        }
    }

    /// Takes up to `budget` packets from each peer's queue to us, copying
    /// each into private memory before `deliver(sender, packet)` sees it
    /// (a sender cannot change a packet after it was checked).
    pub fn poll(&mut self, budget: u32, mut deliver: impl FnMut(usize, &[u8])) -> Polled {
        let mut out = Polled::default();
        for s in 0..self.tail.len() {
            if s == self.me {
                continue;
            }
            let q = self.region.queue(s, self.me, self.lane);
            // SYNC POINT: Acquire pairs with the sender's Release store in
            // `publish`: descriptors and bytes up to `head` are written.
            let head = q.producer.head.load(Ordering::Acquire);
            let avail = head.wrapping_sub(self.tail[s]);
            if avail == 0 {
                continue;
            }
            if avail > self.geo.slots {
                // Impossible indices: skip everything the sender claims to
                // have queued (it can only lose its own packets).
                out.rejected += 1;
                self.tail[s] = head;
            } else {
                for _ in 0..avail.min(budget) {
                    let d = self.region.desc(s, self.me, self.lane, self.tail[s]);
                    let (off, len) = (
                        d.offset.load(Ordering::Relaxed),
                        d.len.load(Ordering::Relaxed),
                    );
                    self.tail[s] = self.tail[s].wrapping_add(1);
                    let ptr = match self.region.pool_ptr(s, self.lane, off, len) {
                        Some(p) if len > 0 && len <= self.geo.buf_bytes => p,
                        _ => {
                            out.rejected += 1;
                            continue;
                        }
                    };
                    let len = len as usize;
                    // SAFETY: bounds: ptr..ptr+len is inside sender s's pool
                    // (pool_ptr, checked arithmetic), mapped for as long as
                    // self.region; scratch is private and holds buf_bytes >=
                    // len. Races (review s28 #15): a sender that keeps the
                    // protocol wrote these bytes before its Release store of
                    // `head`, which our Acquire load saw, and writes them
                    // again only after our Release store of `tail` (below)
                    // returns the buffer: no concurrent write, so no data
                    // race. A sender that breaks the protocol (in stage 1 a
                    // bug of this daemon's own threads; in stage 2 another
                    // process) may write them while we copy: the copy is a
                    // raw memcpy of u8 (every bit pattern valid) forming no
                    // reference and no value the compiler may assume stable,
                    // the same contract as the ring crate's `copy_out` and
                    // the kernel's copy_from_user; we then use only the
                    // private copy, checked after the copy (`engine::accepts`),
                    // so torn bytes can only make the packet rejected or
                    // garbled, and only the racing sender's own packet.
                    unsafe { core::ptr::copy_nonoverlapping(ptr, self.scratch.as_mut_ptr(), len) };
                    deliver(s, &self.scratch[..len]);
                    out.packets += 1;
                }
            }
            // SYNC POINT: Release: our copies of the buffers are done before
            // the sender sees the tail and reuses them (its Acquire in
            // `reclaim`); then the store-buffer fence before reading its
            // room-waiting flag.
            q.consumer.tail.store(self.tail[s], Ordering::Release);
            fence(Ordering::SeqCst);
            if q.producer.room_waiting.load(Ordering::Relaxed) != 0 {
                futex::wake(&q.consumer.tail);
            }
        }
        out
    }

    /// Our partition index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Whether any peer queued something we have not taken.
    pub fn pending(&self) -> bool {
        (0..self.tail.len()).any(|s| {
            s != self.me
                && self
                    .region
                    .queue(s, self.me, self.lane)
                    .producer
                    .head
                    .load(Ordering::Acquire)
                    != self.tail[s]
        })
    }

    /// Sleeps until a sender rings our doorbell, at most `timeout`; returns
    /// at once when something is pending.
    pub fn sleep(&self, timeout: Duration) {
        let port = self.region.port(self.me, self.lane);
        let bell = port.bell.load(Ordering::Acquire);
        port.sleeping.store(1, Ordering::Relaxed);
        // SYNC POINT: store-buffer fence (module docs): the flag before the
        // loads of every head.
        fence(Ordering::SeqCst);
        if !self.pending() {
            futex::wait(&port.bell, bell, timeout);
        }
        port.sleeping.store(0, Ordering::Relaxed);
    }

    /// Marks this lane as gone: senders stop queueing for it.
    pub fn leave(&self) {
        self.region
            .port(self.me, self.lane)
            .state
            .store(PORT_GONE, Ordering::Relaxed);
    }
}
