//! Doorbell bookkeeping, for a side that waits in poll/epoll on a kernel fd
//! instead of on the ring's futex (the interposer does).
//!
//! A waiter that sleeps in the kernel is woken through its [`Doorbell`]
//! (say, a byte written to a Unix socket it polls): it raises its flag with
//! `arm(WaitKind::Doorbell)`, and the other side rings once it publishes
//! data or frees room. The bytes a doorbell leaves behind must be taken
//! again, exactly, or the fd looks readable with nothing to read. This
//! module holds what makes that exact, all of it in the shared control
//! segment so that processes sharing a side after fork agree on it:
//!
//! - the rings and filler bytes the producer counted
//!   ([`ConsumerNotify::doorbells_rung`], [`ProducerNotify::note_filler`]),
//!   and the bytes the consumer side took ([`TakenCount`]);
//! - the producer's *busy* marker, up from before it publishes until it has
//!   rung for what it published, so that a reader that already read the
//!   data can wait until the ring for it is counted
//!   ([`ConsumerNotify::wait_producer_idle`], [`ProducerNotify::while_full`]);
//! - edge-triggered readers, rung for every publish
//!   ([`ConsumerNotify::set_edge_triggered`]).
//!
//! It is reached through [`Producer::notify`] and [`Consumer::notify`]. A
//! program that waits only with the ring's own blocking calls
//! ([`Producer::write_all`], [`Consumer::read_blocking`]) never needs it.
//!
//! # Example
//!
//! ```
//! use shmnet_ring::{heap_channel, Doorbell, Geometry, WaitKind};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//!
//! /// Counts its rings (a real one writes a byte to a socket).
//! struct Bell(AtomicU32);
//! impl Doorbell for Bell {
//!     fn ring(&self) -> bool {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         true
//!     }
//! }
//!
//! let bell = Arc::new(Bell(AtomicU32::new(0)));
//! let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
//! tx.set_doorbell(bell.clone());
//! let taken = rx.notify().taken_count();
//!
//! // The reader is about to sleep in poll: flag up, nothing to read yet.
//! assert!(!rx.arm(WaitKind::Doorbell));
//! tx.write(b"hi")?; // publishes, counts a ring, then rings
//! assert_eq!(bell.0.load(Ordering::Relaxed), 1);
//! assert_eq!(rx.notify().doorbells_rung(), 1);
//!
//! let mut buf = [0u8; 8];
//! assert_eq!(rx.read(&mut buf)?, 2);
//! // The reader takes the doorbell byte from its fd and counts it:
//! // nothing is owed any more.
//! taken.add(1);
//! assert_eq!(taken.rung().wrapping_sub(taken.get()), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Doorbell`]: crate::Doorbell

use super::{Channel, Consumer, Producer, WaitKind};
#[cfg(not(loom))]
use crate::layout::{BUSY, BUSY_WAITER};
use crate::layout::{WAIT_DOORBELL, WAIT_EDGE};
#[cfg(not(loom))]
use crate::sync::fence;
use crate::sync::Ordering;

/// The producer's doorbell bookkeeping; see [`Producer::notify`] and the
/// [module docs](self).
pub struct ProducerNotify<'a>(pub(super) &'a Producer);

impl ProducerNotify<'_> {
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
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, _rx) = heap_channel(Geometry::new(2, 64)?);
    /// assert_eq!(tx.notify().while_full(|_| "filler"), None); // room: not run
    /// tx.write(&[0; 128])?;
    /// assert_eq!(tx.notify().while_full(|_| "filler"), Some("filler"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(not(loom))]
    pub fn while_full<R>(&self, fill: impl FnOnce(&Producer) -> R) -> Option<R> {
        let p = self.0;
        let busy = &p.ch.ctl().producer.busy;
        busy.store(BUSY, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let r = (!p.writable_now()).then(|| fill(p));
        if busy.swap(0, Ordering::Release) == BUSY_WAITER {
            p.ch.parker.wake(busy);
        }
        r
    }

    /// Counts `n` filler bytes about to be sent on the doorbell connection
    /// (before sending, so the consumer never meets a byte it cannot account
    /// for); [`unnote_filler`](Self::unnote_filler) takes back the ones that
    /// could not be sent.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.notify().note_filler(10);
    /// tx.notify().unnote_filler(3); // only 7 went out
    /// assert_eq!(rx.notify().doorbells_rung(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn note_filler(&self, n: u32) {
        self.0
            .ch
            .ctl()
            .wait
            .writer_rings
            .fetch_add(n, Ordering::Release);
    }

    /// Takes back filler bytes counted with
    /// [`note_filler`](Self::note_filler) that could not be sent.
    pub fn unnote_filler(&self, n: u32) {
        self.0
            .ch
            .ctl()
            .wait
            .writer_rings
            .fetch_sub(n, Ordering::Release);
    }
}

/// The consumer's doorbell bookkeeping; see [`Consumer::notify`] and the
/// [module docs](self).
pub struct ConsumerNotify<'a>(pub(super) &'a Consumer);

impl ConsumerNotify<'_> {
    /// The count of doorbell and filler bytes this side has taken, in
    /// shared memory so that processes sharing the side after fork agree on
    /// what is still owed. The handle keeps the channel mapped and can be
    /// kept apart from the consumer.
    pub fn taken_count(&self) -> TakenCount {
        TakenCount(self.0.ch.clone())
    }

    /// True while the producer is inside a write (it may be about to ring
    /// for data this consumer has already read).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(b"x")?;
    /// assert!(!rx.notify().producer_busy()); // a write is over when it returns
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn producer_busy(&self) -> bool {
        self.0.ch.ctl().producer.busy.load(Ordering::Acquire) != 0
    }

    /// Waits, at most `patience`, until the producer is outside a write:
    /// then every doorbell ring for data this consumer has read is counted
    /// in [`doorbells_rung`](Self::doorbells_rung) (and sent). Yields for a
    /// few microseconds, then sleeps on the word's futex, so that a producer
    /// that was descheduled mid-write gets the CPU. Returns false on timeout.
    /// `alive` is asked between sleeps: a producer that died inside a write
    /// stays "busy" forever.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    /// use std::time::Duration;
    ///
    /// let (_tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// assert!(rx.notify().wait_producer_idle(Duration::from_millis(10), || true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(not(loom))]
    pub fn wait_producer_idle(
        &self,
        patience: std::time::Duration,
        mut alive: impl FnMut() -> bool,
    ) -> bool {
        use std::time::{Duration, Instant};
        let ch: &Channel = &self.0.ch;
        let busy = &ch.ctl().producer.busy;
        let start = Instant::now();
        // SYNC POINT: Dekker with `ProducerNotify::while_full` (our `tail`
        // stores before, its busy store and ring check there).
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
            ch.parker
                .wait(busy, BUSY_WAITER, Some(Duration::from_millis(1)));
            if !alive() {
                return false;
            }
        }
    }

    /// The reader is registered edge-triggered: from now on every publish
    /// rings (see [`WAIT_EDGE`](crate::layout::WAIT_EDGE)).
    pub fn set_edge_triggered(&self) {
        self.0
            .ch
            .ctl()
            .wait
            .reader_waiting
            .fetch_or(WAIT_EDGE, Ordering::Relaxed);
    }

    /// Turns the edge-triggered bit off (`false`) while the reader leaves
    /// its flag down and reports new data itself (see
    /// [`rung_at`](Self::rung_at)), and on again (`true`) with its flag.
    /// Ordered as [`Consumer::disarm`] and [`Consumer::arm`]: a publish that
    /// saw the bit rang, and [`rung_at`](Self::rung_at) says so.
    pub fn set_edges(&self, on: bool) {
        let w = &self.0.ch.ctl().wait.reader_waiting;
        // (The common case, already so, costs a load, not a write to the
        // line the producer reads on every publish.)
        if (w.load(Ordering::Relaxed) & WAIT_EDGE != 0) == on {
            return;
        }
        if on {
            w.fetch_or(WAIT_EDGE, Ordering::Relaxed);
        } else {
            w.fetch_and(!WAIT_EDGE, Ordering::Relaxed);
        }
    }

    /// Bytes written into the ring so far (`head * S + end`), for comparing
    /// with [`rung_at`](Self::rung_at) and with itself at an earlier time:
    /// it moved when data arrived. Acquire: after a SeqCst fence (as
    /// [`Consumer::arm`] makes), it includes every publish whose producer
    /// then found the reader's flag down.
    pub fn written(&self) -> u64 {
        self.0.ch.written_total()
    }

    /// [`written`](Self::written) as of the last publish the producer rang
    /// this reader's doorbell for (the byte was sent: it follows that data
    /// on the reader's fd). When it equals `written`, the kernel will
    /// report, or has reported, the last arrival; when it lags, the publishes
    /// after it did not ring. Peer-written: only compared.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Doorbell, Geometry, WaitKind};
    /// use std::sync::Arc;
    ///
    /// struct Bell;
    /// impl Doorbell for Bell {
    ///     fn ring(&self) -> bool {
    ///         true
    ///     }
    /// }
    ///
    /// let (mut tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.set_doorbell(Arc::new(Bell));
    /// tx.write(b"rung")?; // a fresh reader's flag is up
    /// assert_eq!(rx.notify().rung_at(), rx.notify().written());
    /// tx.write(b"not")?; // that ring took the flag down
    /// assert_ne!(rx.notify().rung_at(), rx.notify().written());
    /// rx.arm(WaitKind::Doorbell);
    /// tx.write(b"rung")?;
    /// assert_eq!(rx.notify().rung_at(), rx.notify().written());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rung_at(&self) -> u64 {
        self.0.ch.ctl().producer.rung_at.load(Ordering::Acquire)
    }

    /// Bytes the producer has sent on the doorbell connection so far: its
    /// doorbell rings plus its filler bytes (see
    /// [`ProducerNotify::note_filler`]). A wrapping count written by the
    /// peer: use it only as a bounded hint.
    pub fn doorbells_rung(&self) -> u32 {
        self.0.ch.rung(Ordering::Acquire)
    }

    /// Whether the producer may ring this reader's doorbell for its next
    /// publish: the flag is up, or the reader is edge-triggered (which the
    /// producer rings for every publish). Acquire, as
    /// [`is_armed`](Self::is_armed).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, WaitKind};
    ///
    /// let (mut tx, rx) = heap_channel(Geometry::new(2, 64)?);
    /// assert!(rx.notify().may_ring()); // a fresh reader counts as waiting
    /// tx.write(b"x")?;
    /// assert!(!rx.notify().may_ring()); // that publish took the flag down
    /// rx.arm(WaitKind::Doorbell);
    /// assert!(rx.notify().is_armed(WaitKind::Doorbell));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn may_ring(&self) -> bool {
        self.0.ch.ctl().wait.reader_waiting.load(Ordering::Acquire) & (WAIT_DOORBELL | WAIT_EDGE)
            != 0
    }

    /// Whether this reader's waiting flag still holds `how` (not yet cleared
    /// by a wake-up from the producer).
    pub fn is_armed(&self, how: WaitKind) -> bool {
        // SYNC POINT: Acquire pairs with the producer's Release swap that
        // clears the flag after counting a ring: a flag seen down comes
        // with the count.
        self.0.ch.ctl().wait.reader_waiting.load(Ordering::Acquire) & how.bits() != 0
    }
}

/// The doorbell and filler bytes a consumer's side has taken (see
/// [`ConsumerNotify::taken_count`]): a count in shared memory, so that the
/// processes sharing that side after fork agree on what is still owed.
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
    /// wrapping; as [`ConsumerNotify::doorbells_rung`]). Peer-written: a
    /// hint.
    pub fn rung(&self) -> u32 {
        self.0.rung(Ordering::Acquire)
    }
}
