//! [`RoomWaiter`]: waits for room on a channel without holding its
//! producer.

use super::Producer;
use crate::layout::WAIT_FUTEX;
use crate::sync::{fence, Ordering};
use crate::wait::WaitPolicy;
use crate::RingError;

/// Waits for room on a channel without holding its [`Producer`] (see
/// [`Producer::room_waiter`], which has an example); it cannot write.
pub struct RoomWaiter(pub(super) Producer);

// SAFETY: a RoomWaiter exposes only `wait` and `wake`, which reach the
// channel through atomics, the futex and the doorbell (Send + Sync); it can
// never write, so sharing it between threads cannot break the single-producer
// discipline that keeps `Producer` itself !Sync.
unsafe impl Sync for RoomWaiter {}

impl RoomWaiter {
    /// Marks the peer's reset reported for this side (every process that
    /// holds it): true for the first caller only.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (tx, _rx) = heap_channel(Geometry::new(2, 64)?);
    /// let (a, b) = (tx.room_waiter(), tx.room_waiter());
    /// assert!(!a.reset_reported());
    /// assert!(a.report_reset());
    /// assert!(!b.report_reset());
    /// assert!(b.reset_reported());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn report_reset(&self) -> bool {
        let word = &self.0.ch.ctl().producer.reset_reported;
        word.swap(1, Ordering::Relaxed) == 0
    }

    /// Whether [`report_reset`](Self::report_reset) was called on this
    /// side already.
    pub fn reset_reported(&self) -> bool {
        self.0
            .ch
            .ctl()
            .producer
            .reset_reported
            .load(Ordering::Relaxed)
            != 0
    }

    /// Blocks until there is room (any), an error, or the policy gives up;
    /// as [`Producer::wait_writable`].
    pub fn wait(&self, policy: &WaitPolicy) -> Result<(), RingError> {
        self.0.wait_writable(policy)
    }

    /// As `wait`, but until at least `bytes` are free (or an error
    /// condition): a writer that wants its message to go in whole. See
    /// [`Producer::room_waiter`] for an example.
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

    /// Whether a write of at least one byte would go in now, seen without
    /// the [`Producer`] (another thread of ours may be writing): false
    /// also for a reset or closed channel and for an inconsistent
    /// snapshot, which the caller leaves to the kernel's judgement.
    pub fn has_room(&self) -> bool {
        let p = &self.0;
        !p.ch.is_reset()
            && p.ch.ctl().consumer.closed.load(Ordering::Relaxed) == 0
            && p.free_bytes_lenient().is_some_and(|f| f > 0)
    }

    /// Wakes this process's writers asleep on the channel's futex (they
    /// re-check their conditions, e.g. a local shutdown).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, RingError, WaitPolicy};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let (mut tx, _rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(&[0; 128])?; // full
    /// let room = Arc::new(tx.room_waiter());
    /// let shut = Arc::new(AtomicBool::new(false));
    /// let s = shut.clone();
    /// let policy = WaitPolicy {
    ///     spin: Duration::ZERO,
    ///     // Asked whenever a sleep ends without room: a local shutdown
    ///     // ends the wait.
    ///     liveness: Some(Arc::new(move || !s.load(Ordering::Relaxed))),
    ///     ..WaitPolicy::default()
    /// };
    /// let r = room.clone();
    /// let writer = std::thread::spawn(move || r.wait(&policy));
    /// shut.store(true, Ordering::Relaxed);
    /// room.wake(); // at once, not at the end of a sleep slice
    /// assert_eq!(writer.join().unwrap(), Err(RingError::PeerGone));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wake(&self) {
        let flag = &self.0.ch.ctl().wait.writer_waiting;
        // SYNC POINT (Dekker with the writer's arm in `wait_for_room` and
        // `Producer::arm`: its flag, a fence, then its look): the caller's
        // stores (a local shutdown), this fence, then the load. A writer
        // that armed before it is woken; one that arms after it sees the
        // caller's stores when its sleep slice ends (`liveness`), as it
        // would have after a wake that came before its futex wait. No
        // writer asleep, no system call (one per connection that shuts
        // down its writing side, before).
        fence(Ordering::SeqCst);
        if flag.load(Ordering::Relaxed) & WAIT_FUTEX != 0 {
            self.0.ch.parker.wake(flag);
        }
    }
}
