//! When a reader spins, watches or gathers instead of sleeping
//! (docs/architecture.md, "Waiting: spinning and gathering"): what a
//! connection remembers of its traffic to decide, and the waits themselves.
//! The decision is `recv::next_phase`.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Connection;
use crate::platform::sys::handlers::Watch;

/// A blocking stream consumer that read less than this (see
/// `Phase::Gather`) pauses once for `GATHER_PAUSE` and reads on.
pub(super) const GATHER_BELOW: usize = 16384;
pub(super) const GATHER_PAUSE: Duration = Duration::from_micros(10);
/// How often `watch_ring` looks.
const WATCH_PAUSE: Duration = Duration::from_micros(2);
/// Reads this close together are a stream (see `note_read`).
const STREAMING_GAP: Duration = Duration::from_micros(50);

/// What a connection remembers of its traffic, to pace its waits.
pub(super) struct Pacing {
    /// This side wrote since it last read (see `recv`'s spinning).
    replied: AtomicBool,
    /// When a pure consumer last read (see `note_read`).
    last_read: AtomicU64,
    /// Its last read was large (a stream of large writes: `watch_ring`;
    /// small ones are gathered instead).
    bulk: AtomicBool,
    /// The producer's busy word did not clear within the patience once
    /// (see `settle`).
    pub(super) busy_stuck: AtomicBool,
    /// The spin budget (`SHMNET_SPIN_US`); zero: never spin.
    pub(super) spin: Duration,
}

impl Pacing {
    pub(super) fn new(spin: Duration) -> Pacing {
        Pacing {
            // A new connection expects traffic soon (a request after
            // connect, a greeting after accept): its first read may spin.
            replied: AtomicBool::new(true),
            last_read: AtomicU64::new(0),
            bulk: AtomicBool::new(false),
            busy_stuck: AtomicBool::new(false),
            spin,
        }
    }

    /// This side wrote since it last read.
    pub(super) fn replied(&self) -> bool {
        self.replied.load(Ordering::Relaxed)
    }

    /// Its last read in a call, before any gathering, was large.
    pub(super) fn bulk(&self) -> bool {
        self.bulk.load(Ordering::Relaxed)
    }
}

impl Connection {
    /// A read got data, `total` bytes so far in this call (`gathered`: after
    /// a gather). Notes what pacing needs: an answer was read (no spin
    /// until this side writes again), or a pure consumer read, large or
    /// small. Returns whether it is a pure consumer keeping up with a
    /// stream (`note_read`).
    pub(super) fn note_data(&self, peek: bool, total: usize, gathered: bool) -> bool {
        let p = &self.pacing;
        let answered = p.replied.load(Ordering::Relaxed);
        if !peek && answered {
            p.replied.store(false, Ordering::Relaxed);
        }
        let consumer = !peek && !answered && !p.spin.is_zero();
        let streaming = consumer && self.note_read();
        if consumer && !gathered {
            // Large before any gathering: large writes.
            p.bulk.store(total >= GATHER_BELOW, Ordering::Relaxed);
        }
        streaming
    }

    /// This side wrote: an answer may come soon.
    pub(super) fn note_wrote(&self) {
        if !self.pacing.replied.load(Ordering::Relaxed) {
            self.pacing.replied.store(true, Ordering::Relaxed);
        }
    }

    /// A pure consumer read: true when its previous read was moments ago
    /// (it is keeping up with a stream, not waking for sporadic messages,
    /// whose latency a pause would add to).
    fn note_read(&self) -> bool {
        let now = clock_ns();
        let last = self.pacing.last_read.swap(now, Ordering::Relaxed);
        last != 0 && now.saturating_sub(last) < STREAMING_GAP.as_nanos() as u64
    }

    /// A pure consumer read moments ago: the writer is likely mid-stream.
    pub(super) fn read_recently(&self) -> bool {
        let last = self.pacing.last_read.load(Ordering::Relaxed);
        last != 0 && clock_ns().saturating_sub(last) < STREAMING_GAP.as_nanos() as u64
    }

    /// A pure consumer that found the ring empty in the middle of a
    /// stream: looks at the ring every couple of microseconds (pausing on
    /// nothing shared in between, so the writer keeps its cache lines) for
    /// up to the spin budget, rather than sleep and cost the writer a
    /// doorbell and itself a wake-up.
    /// True when data came.
    /// A handler that runs (`watch`) ends it (false).
    pub(super) fn watch_ring(&self, watch: &Watch) -> bool {
        let start = Instant::now();
        loop {
            pause(WATCH_PAUSE);
            if self.ring_readable() {
                return true;
            }
            if start.elapsed() >= self.pacing.spin || watch.signalled() {
                return false;
            }
        }
    }

    /// A reader that wrote since it last read spins for the answer: mostly
    /// on the one word a publish writes (no lock, one shared line); every
    /// 32nd look the whole ring (closed, a later segment). An answer that
    /// does not come within the budget ends spinning (`no_reply_soon`).
    /// True when it came.
    /// A handler that runs (`watch`) ends it (false, and no
    /// `no_reply_soon`).
    pub(super) fn spin_for_reply(&self, watch: &Watch) -> bool {
        let mut looks = 0u32;
        let ended = self.spin_until(|| {
            looks = looks.wrapping_add(1);
            if watch.signalled() {
                return true;
            }
            match self.probe.get() {
                Some(p) if !looks.is_multiple_of(32) => p.maybe_readable(),
                _ => self.ring_readable(),
            }
        });
        if ended && watch.signalled() {
            return false;
        }
        let answered = ended;
        if !answered {
            self.no_reply_soon();
        }
        answered
    }

    /// A wait spun its whole budget and no answer came: do not spin for
    /// this connection again until it writes (an idle connection, or a
    /// peer that answers slowly, would cost a spin on every wait).
    pub(crate) fn no_reply_soon(&self) {
        if self.pacing.replied.load(Ordering::Relaxed) {
            self.pacing.replied.store(false, Ordering::Relaxed);
        }
    }

    /// This side wrote since it last read: an answer is probably on its
    /// way, so a wait for it may spin.
    pub(crate) fn awaits_reply(&self) -> bool {
        self.pacing.replied.load(Ordering::Relaxed)
    }

    pub(super) fn spin_until(&self, ready: impl FnMut() -> bool) -> bool {
        shmnet_ring::spin_until(self.pacing.spin, ready)
    }
}

/// Waits about `d` without touching shared memory.
pub(super) fn pause(d: Duration) {
    let until = Instant::now() + d;
    // One yield: a writer scheduled on this CPU runs now. If that took the
    // whole pause (someone else had the CPU), stop; otherwise spin on
    // nothing shared, so the data already read is not held back by
    // another scheduler round.
    crate::platform::sandbox::yield_cpu();
    while Instant::now() < until {
        core::hint::spin_loop();
    }
}

/// Nanoseconds on a process-wide monotonic clock (never 0).
fn clock_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}
