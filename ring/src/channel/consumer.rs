//! The reading half of a channel: [`Consumer`], and [`Probe`], a lock-free
//! look for spinning.

use super::cursor::Sink;
use super::notify::ConsumerNotify;
use super::{Channel, WaitKind};
use crate::layout::{SegmentControl, CLOSED, CLOSED_RESET};
use crate::sync::{fence, Ordering};
use crate::wait::{Doorbell, WaitPolicy};
use crate::RingError;
use std::io::IoSliceMut;
use std::sync::Arc;

/// The reading half of a channel: non-blocking stream reads and peeks
/// (`read*`, `peek*`), what is there to read, closing, reset, and blocking
/// reads that spin then sleep as a [`WaitPolicy`] says.
///
/// There is one consumer per channel; it is `Send` but not `Sync`.
/// Processes that share it after fork serialise with
/// [`lock_side`](Self::lock_side).
///
/// # Example
///
/// ```
/// use shmnet_ring::{heap_channel, Geometry, RingError};
///
/// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
/// let mut buf = [0u8; 16];
/// assert_eq!(rx.read(&mut buf), Err(RingError::WouldBlock)); // empty, open
/// tx.write(b"ping")?;
/// assert_eq!(rx.available()?, 4);
/// let n = rx.read(&mut buf)?;
/// assert_eq!(&buf[..n], b"ping");
/// tx.close();
/// assert_eq!(rx.read(&mut buf)?, 0); // end of stream
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Consumer {
    pub(super) ch: Channel,
    doorbell: Option<Arc<dyn Doorbell>>,
}

impl Consumer {
    pub(crate) fn new(ch: Channel) -> Self {
        Consumer { ch, doorbell: None }
    }

    /// The doorbell rung when the producer waits in poll/epoll and room
    /// appears (see [`Doorbell`] and [`notify`](crate::notify)).
    pub fn set_doorbell(&mut self, d: Arc<dyn Doorbell>) {
        self.doorbell = Some(d);
    }

    /// Reads what is there, without blocking. `Ok(0)` is end of stream (for a
    /// non-empty `buf`); `WouldBlock` means empty but still open; `Reset`
    /// after a reset. Freeing a segment wakes the producer if it waits for
    /// room. See the [type's example](Consumer).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        self.read_vectored(&mut [IoSliceMut::new(buf)])
    }

    /// As [`read`](Self::read), filling `bufs` in order.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    /// use std::io::IoSliceMut;
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(b"headbody")?;
    /// let (mut head, mut body) = ([0u8; 4], [0u8; 8]);
    /// let n = rx.read_vectored(&mut [IoSliceMut::new(&mut head), IoSliceMut::new(&mut body)])?;
    /// assert_eq!((n, &head, &body[..4]), (8, b"head", &b"body"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> Result<usize, RingError> {
        self.consume(bufs, false)
    }

    /// Like `read`, leaving the bytes in the ring (MSG_PEEK).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(b"abc")?;
    /// let mut buf = [0u8; 8];
    /// assert_eq!(rx.peek(&mut buf)?, 3);
    /// assert_eq!(rx.read(&mut buf)?, 3); // still there
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        let closed = ctl.producer.closed.load(Ordering::Acquire);
        let mut dst = Sink::new(bufs);
        let want = dst.remaining();
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let mut tail = ctl.consumer.tail.load(Ordering::Relaxed);
        // SYNC POINT: where segment `tail` is. We learned of it through an
        // earlier `head` (in `drained`, by this reader or by one that shared
        // this side with us under the side lock, which orders its loads
        // before ours), and the producer wrote this word before that
        // `head`; it writes the word again only for `tail + N`, after we
        // handed `tail` back. Segment 0 of a fresh channel is in data
        // segment 0 (`initialise`).
        let mut idx = ch.slot(tail)?;
        let mut begin = ch.begin_at(idx).load(Ordering::Relaxed);
        let mut copied = 0usize;
        let mut freed = false;
        let mut idle_hops = 0u32;
        loop {
            let seg = ch.seg_at(idx);
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
                let k = dst.copy_from(&ch.data, ch.data_at(idx, begin), (end - begin) as usize);
                begin += k as u32;
                copied += k;
                idle_hops = 0;
                continue;
            }
            // Drained as far as published. Sealed (head moved on)?
            match drained(ch, seg, tail, begin)? {
                Drained::Open => break,        // nothing more in the open segment
                Drained::Appended => continue, // bytes appended just before sealing
                Drained::Sealed => {}
            }
            idle_hops += 1;
            if idle_hops > n {
                break; // a producer racing `head` forward cannot keep us here
            }
            if !peek {
                hand_back(ch, idx, tail);
                freed = true;
            }
            tail = tail.wrapping_add(1);
            // SYNC POINT: after the Acquire load of a `head` past the old
            // `tail` (in `drained`), so we see where the producer put the
            // new `tail` before publishing that `head`.
            idx = ch.slot(tail)?;
            begin = 0;
        }
        if !peek {
            ch.begin_at(idx).store(begin, Ordering::Relaxed);
        }
        if freed {
            self.wake_writer();
        }
        if copied == 0 && want > 0 {
            return match closed {
                0 => Err(RingError::WouldBlock),
                CLOSED_RESET => Err(RingError::Reset),
                _ => Ok(0),
            };
        }
        Ok(copied)
    }

    /// After freeing a segment or closing: wake the producer if it flagged
    /// that it waits for room.
    #[inline]
    fn wake_writer(&self) {
        // SYNC POINT (Dekker with `Producer::arm`): our Release of `tail`,
        // this fence, then the load of `writer_waiting`; see wake_reader.
        fence(Ordering::SeqCst);
        self.ch.wake(
            &self.ch.ctl().wait.writer_waiting,
            None,
            &self.doorbell,
            || {},
        );
    }

    /// Unread bytes (FIONREAD), across every segment in use.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(&[0; 100])?; // spans both segments
    /// rx.read(&mut [0; 10])?;
    /// assert_eq!(rx.available()?, 90);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn available(&self) -> Result<usize, RingError> {
        let ch = &self.ch;
        let ctl = ch.ctl();
        // A look only: another process sharing this side after fork may be
        // reading meanwhile (`tail` and `begin` move under us). A snapshot
        // is believed — or called corrupt — only if `tail` did not move
        // while it was taken; under constant motion, the last good count.
        // Under constant motion with no good snapshot: not known to be
        // empty (a caller that takes doorbell bytes on an empty ring must
        // not).
        let mut seen = Err(RingError::WouldBlock);
        for _ in 0..4 {
            let tail = ctl.consumer.tail.load(Ordering::Acquire);
            let r = self.available_from(tail);
            if ctl.consumer.tail.load(Ordering::Acquire) == tail {
                return r.map_err(|why| ch.corrupt(why));
            }
            if let Ok(n) = r {
                seen = Ok(n);
            }
        }
        seen
    }

    /// `available` from `tail`; Err names what was out of range.
    fn available_from(&self, tail: u32) -> Result<usize, &'static str> {
        let ch = &self.ch;
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let ctl = ch.ctl();
        let slot = |seq| ch.slot_opt(seq).ok_or("segment slot out of range");
        let mut begin = ch.begin_at(slot(tail)?).load(Ordering::Relaxed);
        let head = ctl.producer.head.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if used >= n {
            return Err("head out of range");
        }
        let mut total = 0usize;
        for k in 0..=used {
            // SYNC POINT: after the Acquire load of `head`: the producer
            // stored where each segment up to `head` is before it.
            let idx = slot(tail.wrapping_add(k))?;
            let end = ch.seg_at(idx).end.load(Ordering::Acquire);
            if end > s || end < begin {
                return Err("segment begin/end out of range");
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
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// assert!(!rx.readable_now());
    /// tx.close();
    /// assert!(rx.readable_now() && rx.producer_closed()); // EOF is readable
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, WaitKind};
    ///
    /// let (mut tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// if !rx.arm(WaitKind::Doorbell) {
    ///     // Nothing to read: sleep in poll until the doorbell rings.
    /// }
    /// tx.write(b"x")?;
    /// assert!(rx.arm(WaitKind::Doorbell)); // data: do not sleep
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn arm(&self, how: WaitKind) -> bool {
        self.arm_for_sleep(how, 0)
    }

    /// [`arm`](Self::arm) for one sleep of a waiter that, once woken, looks
    /// at every ring it raised its flag on for that sleep before it sleeps
    /// again (the interposer's epoll waiter, decision 41). `sleep` names
    /// that sleep (non-zero, never reused by any waiter): a producer whose
    /// doorbell already woke it may leave the ring for this flag out
    /// ([`Doorbell::ring_sleep`](crate::Doorbell::ring_sleep)). Zero is a
    /// plain `arm`, which every other raise must be: a flag left up with
    /// an old sleep's name could be skipped with nobody to look.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Doorbell, Geometry, WaitKind};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::{Arc, Mutex};
    ///
    /// /// Rings each sleep once (a real one also checks who the reader is).
    /// struct Bell(AtomicU32, Arc<Mutex<u64>>);
    /// impl Doorbell for Bell {
    ///     fn ring(&self) -> bool {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///         true
    ///     }
    ///     fn ring_sleep(&self, sleep: u64) -> bool {
    ///         let mut rung = self.1.lock().unwrap();
    ///         if *rung == sleep {
    ///             return false;
    ///         }
    ///         *rung = sleep;
    ///         self.ring()
    ///     }
    /// }
    ///
    /// let rung = Arc::new(Mutex::new(0));
    /// let (mut tx_a, rx_a) = heap_channel(Geometry::new(2, 64)?);
    /// let (mut tx_b, rx_b) = heap_channel(Geometry::new(2, 64)?);
    /// let bell_a = Arc::new(Bell(AtomicU32::new(0), rung.clone()));
    /// let bell_b = Arc::new(Bell(AtomicU32::new(0), rung));
    /// tx_a.set_doorbell(bell_a.clone());
    /// tx_b.set_doorbell(bell_b.clone());
    /// // One waiter, one sleep, two connections.
    /// assert!(!rx_a.arm_for_sleep(WaitKind::Doorbell, 7));
    /// assert!(!rx_b.arm_for_sleep(WaitKind::Doorbell, 7));
    /// tx_a.write(b"a")?;
    /// tx_b.write(b"b")?; // that sleep was woken already: no ring
    /// assert_eq!(bell_a.0.load(Ordering::Relaxed), 1);
    /// assert_eq!(bell_b.0.load(Ordering::Relaxed), 0);
    /// assert_eq!(rx_b.notify().doorbells_rung(), 0); // the count taken back
    /// // Once woken, the waiter looks at both rings.
    /// assert!(rx_a.readable_now() && rx_b.readable_now());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn arm_for_sleep(&self, how: WaitKind, sleep: u64) -> bool {
        self.ch
            .ctl()
            .wait
            .reader_sleep
            .store(sleep, Ordering::Relaxed);
        let w = &self.ch.ctl().wait.reader_waiting;
        // (`sleep` is ordered as the flag is, by the fence below and the
        // producer's before its load: a producer that finds the flag after
        // our fence finds this name, not an older sleep's; loom
        // `a_named_sleep_rung_once_loses_no_wakeup`.)
        w.fetch_or(how.bits(), Ordering::Relaxed);
        // SYNC POINT: Dekker with `Producer::wake_reader`.
        fence(Ordering::SeqCst);
        self.readable_now()
    }

    /// Takes back an [`arm`](Self::arm) that has not been rung yet: the
    /// producer's next publish does not ring. For a caller that raised its
    /// flag to sleep, woke, and will look at the ring itself before it
    /// sleeps again. (The edge-triggered bit stays.)
    ///
    /// A producer that saw the flag up just before and counted a ring finds
    /// it cleared when it takes it, and takes its count back (the same path
    /// as a ring that could not be sent), so the counts stay exact.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, WaitKind};
    ///
    /// let (_tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// rx.arm(WaitKind::Doorbell);
    /// assert!(rx.notify().may_ring());
    /// rx.disarm(WaitKind::Doorbell);
    /// assert!(!rx.notify().may_ring()); // the next publish does not ring
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn disarm(&self, how: WaitKind) {
        self.ch
            .ctl()
            .wait
            .reader_waiting
            .fetch_and(!how.bits(), Ordering::Relaxed);
    }

    /// Serialises this side's readers across processes (see
    /// [`SideGuard`](crate::SideGuard) and [`Producer::lock_side`](super::Producer::lock_side));
    /// only needed once the connection is shared by a fork.
    #[cfg(not(loom))]
    pub fn lock_side(&self) -> crate::sidelock::SideGuard {
        self.ch.lock_side(false)
    }

    /// A lock-free look at this consumer's ring for spinning (see [`Probe`]).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// let probe = rx.probe();
    /// assert!(!probe.maybe_readable());
    /// tx.write(b"x")?;
    /// assert!(probe.maybe_readable());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn probe(&self) -> Probe {
        Probe(self.ch.clone())
    }

    /// Reads at least one byte (or EOF), waiting as `policy` says (see
    /// [`Producer::write_all`](super::Producer::write_all) for an example).
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
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, RingError, WaitPolicy};
    /// use std::time::{Duration, Instant};
    ///
    /// let (_tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// let policy = WaitPolicy {
    ///     deadline: Some(Instant::now() + Duration::from_millis(5)),
    ///     ..WaitPolicy::default()
    /// };
    /// assert_eq!(rx.wait_readable(&policy), Err(RingError::TimedOut));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_readable(&self, policy: &WaitPolicy) -> Result<(), RingError> {
        self.ch.wait_until(
            &self.ch.ctl().wait.reader_waiting,
            policy,
            || self.arm(WaitKind::Futex),
            || self.readable_now(),
        )
    }

    /// The doorbell bookkeeping of this consumer, when it waits in
    /// poll/epoll (see [`notify`](crate::notify)).
    pub fn notify(&self) -> ConsumerNotify<'_> {
        ConsumerNotify(self)
    }

    /// This side reads no more: the producer's writes fail with EPIPE.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, RingError};
    ///
    /// let (mut tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// rx.close();
    /// assert!(tx.peer_closed());
    /// assert_eq!(tx.write(b"x"), Err(RingError::Closed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.ch
            .ctl()
            .consumer
            .closed
            .store(CLOSED, Ordering::Release);
        self.wake_writer();
    }

    /// Abortive close of the reading end (a TCP RST): the producer's writes
    /// fail with `Reset` (ECONNRESET) instead of `Closed`.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, RingError};
    ///
    /// let (mut tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// rx.abort();
    /// assert!(tx.peer_reset());
    /// assert_eq!(tx.write(b"x"), Err(RingError::Reset));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self) {
        self.ch
            .ctl()
            .consumer
            .closed
            .store(CLOSED_RESET, Ordering::Release);
        self.wake_writer();
    }

    /// True once the producer closed abortively: reads end with `Reset`
    /// once the ring is drained.
    pub fn peer_reset(&self) -> bool {
        self.ch.ctl().producer.closed.load(Ordering::Acquire) == CLOSED_RESET
    }

    /// Declares the connection reset (ECONNRESET at the peer); as
    /// [`Producer::reset`](super::Producer::reset).
    pub fn reset(&self) {
        self.ch.mark_reset(&self.doorbell);
    }

    /// True once the producer closed (EOF after the data drains).
    pub fn peer_closed(&self) -> bool {
        self.ch.ctl().producer.closed.load(Ordering::Acquire) != 0
    }
}

/// What a reader finds at a segment it drained as far as published.
enum Drained {
    /// The open segment (`head` has not moved past it): nothing more now.
    Open,
    /// Sealed, with bytes appended just before sealing: read on.
    Appended,
    /// Sealed and drained: hand it back and move to the next one.
    Sealed,
}

/// Whether segment `tail`, read up to `begin` (= its `end` as last
/// loaded), was sealed and is drained. Split out of `Consumer::consume`.
#[inline(always)]
fn drained(
    ch: &Channel,
    seg: &SegmentControl,
    tail: u32,
    begin: u32,
) -> Result<Drained, RingError> {
    let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
    // SYNC POINT: Acquire pairs with the producer's Release store of
    // `head`, made after the final `end` of this segment, and after it
    // stored where `tail + 1` (and each segment up to `head`) is.
    let head = ch.ctl().producer.head.load(Ordering::Acquire);
    let used = head.wrapping_sub(tail);
    if used >= n {
        return Err(ch.corrupt("head out of range"));
    }
    if used == 0 {
        return Ok(Drained::Open);
    }
    let end = seg.end.load(Ordering::Acquire);
    if end > s || end < begin {
        return Err(ch.corrupt("sealed segment end out of range"));
    }
    if end != begin {
        return Ok(Drained::Appended);
    }
    Ok(Drained::Sealed)
}

/// Hands drained segment `tail` (in data segment `idx`) back to the
/// producer: resets its `begin` and publishes `tail + 1`.
#[inline(always)]
fn hand_back(ch: &Channel, idx: u32, tail: u32) {
    ch.begin_at(idx).store(0, Ordering::Relaxed);
    // SYNC POINT: Release pairs with the producer's Acquire load of
    // `tail`: our reads of this segment happen before its reuse.
    ch.ctl()
        .consumer
        .tail
        .store(tail.wrapping_add(1), Ordering::Release);
}

/// A lock-free look at a consumer's ring, for spinning (see
/// [`Consumer::probe`], which has an example). It holds no lock and can be
/// shared between threads.
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
        // A slot out of range makes the read find out (and reset).
        let Some(idx) = ch.slot_opt(tail) else {
            return true;
        };
        let begin = ch.begin_at(idx).load(Ordering::Relaxed);
        ch.seg_at(idx).end.load(Ordering::Relaxed) != begin
    }

    /// [`ConsumerNotify::written`](super::ConsumerNotify::written) and
    /// [`ConsumerNotify::rung_at`](super::ConsumerNotify::rung_at), for a
    /// spinner that reports arrivals itself.
    pub fn written_and_rung(&self) -> (u64, u64) {
        let ch = &self.0;
        (
            ch.written_total(),
            ch.ctl().producer.rung_at.load(Ordering::Acquire),
        )
    }
}
