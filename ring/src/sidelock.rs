//! A lock between the processes that share one side of a connection after
//! fork: two processes writing (or reading) the same direction at once would
//! both copy into the same segment and publish over each other.
//!
//! The word holds the holder's pid (0: free) and [`WAITERS`] when someone
//! sleeps on it. Only processes of our side ever take it; the peer writes
//! other lines. A holder that dies holding it (SIGKILL mid-write) is noticed
//! by its waiters, which then take it over: the ring stays consistent word
//! by word (what the dead process had not published is simply not there).
//! The peer never takes the word, but it can write it: a word held past
//! `PATIENCE` resets the connection rather than hanging the caller.
//!
//! Threads of one process are serialised by the process's own mutex first,
//! so the word only ever arbitrates between processes; it is taken only when
//! the connection is shared (forked since it was made), so an unshared
//! connection pays nothing.

use crate::channel::Channel;
use crate::sync::{AtomicU32, Ordering};
use std::time::Duration;

/// Set in the word while a process sleeps on it.
pub const WAITERS: u32 = 1 << 31;

/// How long a waiter sleeps before checking that the holder still lives.
const SLICE: Duration = Duration::from_millis(10);

/// Held until dropped (it keeps the segment mapped meanwhile).
pub struct SideGuard {
    ch: Channel,
    producer: bool,
}

impl SideGuard {
    fn word(&self) -> &AtomicU32 {
        word(&self.ch, self.producer)
    }
}

fn word(ch: &Channel, producer: bool) -> &AtomicU32 {
    if producer {
        &ch.ctl().producer.lock
    } else {
        &ch.ctl().consumer.lock
    }
}

/// Takes the producer's (`producer`) or the consumer's lock of `ch` for
/// this process.
pub(crate) fn acquire(ch: Channel, producer: bool) -> SideGuard {
    lock(&ch, producer);
    SideGuard { ch, producer }
}

/// The longest a lock of our side is legitimately held (a write, or a
/// read that settles its doorbell bytes: milliseconds). The word lives in
/// memory the peer can write: a peer that plants a live pid in it would
/// hold us forever, so past this the connection is reset instead.
const PATIENCE: Duration = Duration::from_secs(5);

/// The acquisition loop; returns once the lock is ours, or once the
/// channel was reset after `PATIENCE` (every call on it then fails).
fn lock(ch: &Channel, producer: bool) {
    let word = word(ch, producer);
    let parker = ch.parker();
    let me = std::process::id() & !WAITERS;
    let mut spins = 0u32;
    let start = std::time::Instant::now();
    loop {
        // SYNC POINT: Acquire pairs with the Release of the previous
        // holder's unlock: its ring updates happen before ours.
        let seen = match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => seen,
        };
        let holder = seen & !WAITERS;
        if holder == me || !alive(holder) {
            // Held by a process that is gone (or, after pid reuse, by a pid
            // that is now ours and holds nothing): take it over.
            if word
                .compare_exchange(seen, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            continue;
        }
        if spins < 64 {
            spins += 1;
            crate::restrict::yield_cpu();
            continue;
        }
        if seen & WAITERS == 0
            && word
                .compare_exchange(seen, seen | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        parker.wait(word, seen | WAITERS, Some(SLICE));
        if start.elapsed() >= PATIENCE {
            ch.mark_reset(&None);
            return;
        }
    }
}

impl Drop for SideGuard {
    fn drop(&mut self) {
        // SYNC POINT: Release publishes our ring updates to the next holder.
        if self.word().swap(0, Ordering::Release) & WAITERS != 0 {
            self.ch.parker().wake(self.word());
        }
    }
}

fn alive(pid: u32) -> bool {
    // A sandboxed process cannot ask (`kill` is outside its filter): the
    // holder counts as alive, and a lock held past PATIENCE resets the
    // connection as for a hostile holder.
    if crate::restrict::syscalls_restricted() {
        return true;
    }
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}
