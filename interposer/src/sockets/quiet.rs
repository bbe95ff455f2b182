//! Connections whose send ring may have pages to give back once they go
//! quiet (docs/decisions.md, decision 27), for a process that waits in
//! poll, select or epoll_wait and would never touch them again.
//!
//! A send that leaves its ring holding pages beyond the open segment puts
//! the connection here once (`enqueue`; a flag on the connection keeps it
//! to once); the wait engine (`sockets::wait`) caps its sleep at the
//! earliest time one is due and then runs the due ones (`run`), and so
//! does any wait that finds one overdue. Each due connection is asked to
//! trim if nothing was written since it was queued (`Trim::trim_quiet`):
//! written meanwhile, it is due again `QUIET` later; trimmed with bytes
//! still unread, later again, doubling up to `QUIET_MAX`; done, it leaves.
//! So the work is per connection that streamed recently, never a scan of
//! all connections: a heap ordered by due time, O(log n) per visit, and at
//! most `RUN_MOST` visits per run.
//!
//! This module knows no socket (the wait engine depends on it): a queued
//! connection is a `Weak<dyn Trim>`, so a closed one just fails to upgrade.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use crate::platform::lock::Mutex;

/// How long a connection's direction must have been quiet before its
/// pages go back (see `conn::trim`).
pub(crate) const QUIET: Duration = Duration::from_millis(50);
/// The longest between two visits of a connection whose reader has not
/// caught up (its unread segments cannot go back yet).
pub(crate) const QUIET_MAX: Duration = Duration::from_secs(2);
/// Due connections visited per run, at most (the rest on the next).
const RUN_MOST: usize = 256;
/// Connections due this soon after the first are visited with it, so a
/// burst of bursts costs one wake-up, not one each.
const BATCH: Duration = Duration::from_millis(10);

/// What a queued connection says when visited.
pub(crate) enum Quiet {
    /// Written since (so much now): visit again after `QUIET`.
    Active(u64),
    /// Trimmed, but bytes the reader has not read keep pages: later.
    Unread,
    /// Nothing left to give back (or it cannot be: shared, sandboxed).
    Done,
}

/// A connection that can give back pages of its send ring.
pub(crate) trait Trim: Send + Sync {
    /// Trims if the ring's written total is still `written`.
    fn trim_quiet(&self, written: u64) -> Quiet;
}

struct Entry {
    due: u64,
    written: u64,
    tries: u32,
    conn: Weak<dyn Trim>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

static QUEUE: Mutex<BinaryHeap<Reverse<Entry>>> = Mutex::new(BinaryHeap::new());
/// The earliest due time in the queue (monotonic ns), 0 when empty: what
/// a wait looks at, one relaxed load, without the lock.
static NEXT_DUE: AtomicU64 = AtomicU64::new(0);

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
        .max(1)
}

fn after(ns: u64, d: Duration) -> u64 {
    ns.saturating_add(d.as_nanos() as u64)
}

/// Queues `conn`, whose ring has `written` bytes written so far. The
/// caller made sure it is not queued already. A queue held by another
/// thread right now: not queued (the caller's flag says it is, so the
/// pages stay until a close; rare enough not to wait for a lock here).
pub(crate) fn enqueue(conn: Weak<dyn Trim>, written: u64) -> bool {
    let Some(mut q) = QUEUE.try_lock() else {
        return false;
    };
    q.push(Reverse(Entry {
        due: after(now_ns(), QUIET),
        written,
        tries: 0,
        conn,
    }));
    publish(&q);
    true
}

/// Queues `conn` to be visited once `d` from now (a connect in progress
/// that gives up waiting for its acceptor then: `connecting`). False when
/// the queue is held by another thread right now.
pub(crate) fn visit_in(conn: Weak<dyn Trim>, d: Duration) -> bool {
    let Some(mut q) = QUEUE.try_lock() else {
        return false;
    };
    q.push(Reverse(Entry {
        due: after(now_ns(), d),
        written: 0,
        tries: 0,
        conn,
    }));
    publish(&q);
    true
}

fn publish(q: &BinaryHeap<Reverse<Entry>>) {
    NEXT_DUE.store(q.peek().map_or(0, |e| e.0.due), Ordering::Relaxed);
}

/// How long until the first queued connection is due (zero if overdue);
/// None when the queue is empty (one relaxed load then).
#[inline]
pub(crate) fn due_in() -> Option<Duration> {
    let due = NEXT_DUE.load(Ordering::Relaxed);
    if due == 0 {
        return None;
    }
    Some(Duration::from_nanos(due.saturating_sub(now_ns())))
}

/// Visits the connections that are due (and those due within `BATCH`).
pub(crate) fn run() {
    let now = now_ns();
    let mut due = Vec::new();
    {
        let Some(mut q) = QUEUE.try_lock() else {
            return;
        };
        while due.len() < RUN_MOST {
            match q.peek() {
                Some(e) if e.0.due <= after(now, BATCH) => {}
                _ => break,
            }
            let Some(Reverse(e)) = q.pop() else { break };
            due.push(e);
        }
        publish(&q);
    }
    if due.is_empty() {
        return;
    }
    // Visited without the queue's lock: a visit takes the connection's
    // send lock, and dropping the last reference closes it.
    let mut again = Vec::new();
    for mut e in due {
        let Some(conn) = e.conn.upgrade() else {
            continue;
        };
        match conn.trim_quiet(e.written) {
            Quiet::Active(w) => {
                (e.written, e.tries, e.due) = (w, 0, after(now, QUIET));
                again.push(e);
            }
            Quiet::Unread => {
                e.tries = (e.tries + 1).min(8);
                let wait = QUIET.saturating_mul(1 << e.tries).min(QUIET_MAX);
                e.due = after(now, wait);
                again.push(e);
            }
            Quiet::Done => {}
        }
        drop(conn);
    }
    if again.is_empty() {
        return;
    }
    let mut q = QUEUE.lock();
    for e in again {
        q.push(Reverse(e));
    }
    publish(&q);
}

/// In a forked child (single-threaded): the queue's lock as free. The
/// queued connections are shared with the parent now; their visits find
/// that and drop them.
pub(crate) fn after_fork_child() {
    QUEUE.reset_after_fork();
}
