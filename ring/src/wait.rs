//! Sleeping and waking across processes without a shared lock.
//!
//! A waiter announces itself in its channel's waiting flag (claim 86), then
//! re-checks the ring, then sleeps on the flag word with a futex that is *not*
//! `FUTEX_PRIVATE` (so it works across processes mapping the same memfd). The
//! other side, after publishing, reads the flag and wakes only if it is set.
//! Waiters that sleep in poll/epoll instead (the interposer) set
//! [`WAIT_DOORBELL`](crate::layout::WAIT_DOORBELL) and get their [`Doorbell`]
//! rung. The argument that no wake-up is lost is in docs/architecture.md and
//! is model-checked by the loom tests.

use crate::sync::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A kernel-pollable signal for the other side, rung when it flagged that it
/// waits in poll/epoll (for instance a byte written to a socket it polls).
///
/// Installed with [`Producer::set_doorbell`](crate::Producer::set_doorbell)
/// (rung when data arrives for a waiting reader) and
/// [`Consumer::set_doorbell`](crate::Consumer::set_doorbell) (rung when room
/// appears for a waiting writer). The module [`notify`](crate::notify) has a
/// complete example.
///
/// ```
/// use shmnet_ring::Doorbell;
/// use std::os::unix::net::UnixStream;
///
/// /// One byte on a Unix socket the other side polls.
/// struct SocketBell(UnixStream);
///
/// impl Doorbell for SocketBell {
///     fn ring(&self) -> bool {
///         use std::io::Write;
///         (&self.0).write(&[1]).is_ok_and(|n| n == 1)
///     }
/// }
///
/// let (ours, theirs) = UnixStream::pair()?;
/// theirs.set_nonblocking(true)?;
/// assert!(SocketBell(ours).ring());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Doorbell: Send + Sync {
    /// Wake the other side; must not block and must be cheap to call twice.
    /// Returns false when the signal could not be sent (the count of rings
    /// kept in shared memory is then taken back).
    fn ring(&self) -> bool;

    /// Wake the reader's sleep `sleep` (non-zero; the reader raised its
    /// flag with [`Consumer::arm_for_sleep`](crate::Consumer::arm_for_sleep)):
    /// a doorbell that knows its process already woke that sleep of that
    /// reader may send nothing and return false (the ring's count is then
    /// taken back, as for a ring that could not be sent). It must be sure
    /// of the reader's identity: a name another reader chose could
    /// otherwise cost this reader its wake-up. The default rings.
    fn ring_sleep(&self, sleep: u64) -> bool {
        let _ = sleep;
        self.ring()
    }
}

/// How a blocking call waits: spin, then sleep on the futex in slices
/// until a deadline, a dead peer, or (optionally) a signal.
///
/// ```
/// use shmnet_ring::{heap_channel, Geometry, RingError, WaitPolicy};
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
///
/// let (_tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
/// let policy = WaitPolicy {
///     spin: Duration::from_micros(20),
///     deadline: Some(Instant::now() + Duration::from_millis(20)),
///     // A survivor notices a peer that died without closing.
///     liveness: Some(Arc::new(|| true)),
///     ..WaitPolicy::default()
/// };
/// let mut buf = [0u8; 8];
/// assert_eq!(rx.read_blocking(&mut buf, &policy), Err(RingError::TimedOut));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WaitPolicy {
    /// Busy-poll the ring this long before sleeping; zero disables spinning.
    pub spin: Duration,
    /// Give up with `TimedOut` at this instant.
    pub deadline: Option<Instant>,
    /// Called whenever a sleep slice ends without a wake-up; returning false
    /// ends the wait with `PeerGone`. This is how a survivor notices a peer
    /// that died without closing (the interposer uses its kernel fd instead).
    pub liveness: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// Longest single sleep, so `deadline` and `liveness` are honoured.
    /// With neither set, a sleep is not bounded (no timer to arm).
    pub slice: Duration,
    /// A signal that interrupts a sleep ends the wait with `Interrupted`
    /// (the caller decides between EINTR and a restart) instead of being
    /// absorbed.
    pub interruptible: bool,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            spin: Duration::from_micros(50),
            deadline: None,
            liveness: None,
            slice: Duration::from_millis(50),
            interruptible: false,
        }
    }
}

impl WaitPolicy {
    /// No spinning: sleep at once (the "blocking" mode of the benchmark).
    pub fn blocking() -> Self {
        WaitPolicy {
            spin: Duration::ZERO,
            ..Self::default()
        }
    }

    /// Spin up to `spin` calling `ready`; true if it became ready.
    pub(crate) fn spin_until(&self, ready: impl FnMut() -> bool) -> bool {
        spin_until(self.spin, ready)
    }

    /// The timeout for the next sleep (None: unbounded), or Err once the
    /// deadline passed.
    pub(crate) fn next_slice(&self) -> Result<Option<Duration>, crate::RingError> {
        match self.deadline {
            None if self.liveness.is_none() => Ok(None),
            None => Ok(Some(self.slice)),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(crate::RingError::TimedOut)
                } else {
                    Ok(Some(left.min(self.slice)))
                }
            }
        }
    }

    pub(crate) fn peer_alive(&self) -> bool {
        self.liveness.as_ref().is_none_or(|f| f())
    }
}

/// Busy-polls `ready` for up to `budget` (zero: not at all); true if it
/// became true. The clock is read every 64 polls, not every poll.
///
/// ```
/// use shmnet_ring::spin_until;
/// use std::time::Duration;
///
/// let mut polls = 0;
/// assert!(spin_until(Duration::from_millis(10), || {
///     polls += 1;
///     polls == 100
/// }));
/// assert!(!spin_until(Duration::ZERO, || true)); // zero: not at all
/// ```
pub fn spin_until(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            crate::sync::spin_hint();
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

/// Sleeps on and wakes a futex word shared between processes.
///
/// Under loom a futex is modelled exactly: "sleep only if the word still
/// holds the expected value" is checked under the same mutex the waker takes.
#[derive(Default)]
pub(crate) struct Parker {
    #[cfg(loom)]
    lock: loom::sync::Mutex<()>,
    #[cfg(loom)]
    cond: loom::sync::Condvar,
}

impl Parker {
    /// Sleeps while `*word == expected`, at most `timeout` (spurious returns
    /// allowed). Returns true when a signal interrupted the sleep.
    #[cfg(not(loom))]
    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
        let ts = timeout.map(|t| rustix::thread::futex::Timespec {
            tv_sec: t.as_secs() as _,
            tv_nsec: t.subsec_nanos() as _,
        });
        // Shared (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED memfd.
        // EAGAIN (value changed) and ETIMEDOUT mean "re-check"; EINTR is
        // reported, for callers that must return it.
        rustix::thread::futex::wait(
            word,
            rustix::thread::futex::Flags::empty(),
            expected,
            ts.as_ref(),
        ) == Err(rustix::io::Errno::INTR)
    }

    /// Wakes every sleeper on `word`.
    #[cfg(not(loom))]
    pub(crate) fn wake(&self, word: &AtomicU32) {
        let _ = rustix::thread::futex::wake(
            word,
            rustix::thread::futex::Flags::empty(),
            i32::MAX as u32,
        );
    }

    #[cfg(loom)]
    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> bool {
        let guard = self.lock.lock().unwrap();
        if word.load(crate::sync::Ordering::SeqCst) == expected {
            drop(self.cond.wait(guard).unwrap());
        }
        false
    }

    #[cfg(loom)]
    pub(crate) fn wake(&self, _word: &AtomicU32) {
        drop(self.lock.lock().unwrap());
        self.cond.notify_all();
    }
}
