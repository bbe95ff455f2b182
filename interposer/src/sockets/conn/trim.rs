//! Giving back the pages of a send ring gone quiet (docs/decisions.md,
//! decision 27). The ring shrinks its placement window by itself while
//! writes go on; a connection whose last traffic was a bulk burst makes
//! no more writes, so its pages stay until someone calls
//! `Producer::trim`. That someone is this process, at moments it has
//! anyway, never by a scan of its connections:
//!
//! - a blocking recv about to sleep on a connection whose send ring holds
//!   pages to give back sleeps at most `QUIET` first, and trims if
//!   nothing was written meanwhile;
//! - a send that leaves such pages queues the connection once
//!   (`queue_for_trim`) with `sockets::quiet`, which poll, select and
//!   epoll_wait visit when it is due (`trim_quiet`);
//! - the last close trims before the segment goes to the pool.
//!
//! Why `QUIET` (50 ms): pages given back cost a page fault each when
//! written again, so not after every exchange: a burst answered within
//! it keeps its pages; one answered later pays at most a few hundred
//! microseconds of faults (2 MiB) per `QUIET` of idleness.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Connection;
use crate::sockets::quiet::{Quiet, QUIET, QUIET_MAX};

/// A sleep cut short to trim after it: when it began, and how much was
/// written into our ring then.
pub(super) struct TrimAfter {
    start: Instant,
    written: u64,
}

impl Connection {
    /// Before a blocking recv sleeps (the `tries`-th time in this call):
    /// if the send ring has pages to give back, the longest to sleep, and
    /// what `trim_if_quiet` compares after. One private load when there is
    /// nothing to give back; nothing at all in a sandbox (no madvise).
    pub(super) fn trim_after(&self, tries: u32) -> Option<(Duration, TrimAfter)> {
        if crate::platform::sandbox::active() {
            return None;
        }
        let tx = self.tx.try_lock()?;
        if !tx.trim_pending() {
            return None;
        }
        let written = tx.written_total();
        drop(tx);
        let cap = QUIET.saturating_mul(1 << tries.min(6)).min(QUIET_MAX);
        Some((
            cap,
            TrimAfter {
                start: Instant::now(),
                written,
            },
        ))
    }

    /// After that sleep: gives the send ring's free pages back if it
    /// lasted `QUIET` and nothing was written into the ring meanwhile (by
    /// any thread or process of this side).
    pub(super) fn trim_if_quiet(&self, t: TrimAfter) {
        if t.start.elapsed() < QUIET {
            return;
        }
        let Some(mut tx) = self.tx.try_lock() else {
            return;
        };
        let _side = self.shared().then(|| tx.lock_side());
        if tx.written_total() != t.written {
            return;
        }
        // An error is the ring's (corruption, reset): the next data call
        // reports it.
        let _ = tx.trim();
    }

    /// After a send: if the send ring holds pages beyond the open segment
    /// and the connection is not queued yet, marks it queued and returns
    /// the bytes written so far (for `sockets::quiet::enqueue`). A flag
    /// load when queued already; nothing shared or sandboxed.
    pub(crate) fn queue_for_trim(&self) -> Option<u64> {
        if self.trim_queued.load(Ordering::Relaxed)
            || self.shared()
            || crate::platform::sandbox::active()
        {
            return None;
        }
        let tx = self.tx.try_lock()?;
        if !tx.trim_pending() || self.trim_queued.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(tx.written_total())
    }

    /// `sockets::quiet` could not take it: not queued after all.
    pub(crate) fn not_queued(&self) {
        self.trim_queued.store(false, Ordering::Relaxed);
    }

    /// A visit from `sockets::quiet`: trims if nothing was written since
    /// `written`. Leaves the queue (`Done`) under the send lock, so a
    /// send after it finds the flag down and queues the connection again.
    pub(crate) fn trim_quiet(&self, written: u64) -> Quiet {
        let Some(mut tx) = self.tx.try_lock() else {
            return Quiet::Active(written); // a writer right now
        };
        if self.shared() || crate::platform::sandbox::active() {
            self.trim_queued.store(false, Ordering::Relaxed);
            return Quiet::Done;
        }
        let now = tx.written_total();
        if now != written {
            return Quiet::Active(now);
        }
        let _ = tx.trim();
        if tx.trim_pending() {
            return Quiet::Unread;
        }
        self.trim_queued.store(false, Ordering::Relaxed);
        Quiet::Done
    }

    /// The last close, before the segment goes to the pool: what the peer
    /// has read goes back now (its unread bytes stay; so do the peer's
    /// pages, which its own close gives back).
    pub(super) fn trim_for_pool(&mut self) {
        if !crate::platform::sandbox::active() {
            let _ = self.tx.get_mut().trim();
        }
    }
}
