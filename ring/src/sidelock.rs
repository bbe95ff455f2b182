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

use crate::data::Keep;
use crate::sync::{AtomicU32, Ordering};
use crate::wait::Parker;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// Set in the word while a process sleeps on it.
pub const WAITERS: u32 = 1 << 31;

/// How long a waiter sleeps before checking that the holder still lives.
const SLICE: Duration = Duration::from_millis(10);

/// A side's lock word, with the parker its waiters sleep on and what keeps
/// the word mapped: all a lock needs of a channel. Contract: `word` stays
/// mapped as long as `_keep` lives.
pub(crate) struct LockWord {
    /// The producer's or the consumer's `lock` word in the control segment.
    word: NonNull<AtomicU32>,
    /// Where its waiters sleep.
    parker: Arc<Parker>,
    /// Keeps `word` mapped.
    _keep: Keep,
}

impl LockWord {
    /// # Safety
    /// `word` points at an atomic that stays mapped as long as `keep`
    /// lives.
    pub(crate) unsafe fn new(
        word: NonNull<AtomicU32>,
        parker: Arc<Parker>,
        keep: Keep,
    ) -> LockWord {
        LockWord {
            word,
            parker,
            _keep: keep,
        }
    }
}

/// This side's lock of a channel, held for this process until dropped; it
/// keeps the segment mapped meanwhile. Taken with
/// [`Producer::lock_side`](crate::Producer::lock_side) or
/// [`Consumer::lock_side`](crate::Consumer::lock_side).
///
/// Processes that share one side of a connection after fork must not write
/// (or read) it at once: they would copy into the same segment and publish
/// over each other. The lock word lives in the side's own control line and
/// holds the holder's pid; a holder that dies holding it is noticed by its
/// waiters, which take it over. The peer never takes it but can write it:
/// a word held for more than 5 seconds resets the connection instead of
/// hanging the caller.
pub struct SideGuard {
    lock: LockWord,
    /// Whether the word is ours: a guard returned after `PATIENCE` ran out
    /// (the connection reset) must not clear a holder's word.
    held: bool,
}

// SAFETY: the word is an atomic in memory that `lock._keep` keeps mapped
// (Send + Sync), and the parker is Send + Sync; nothing is tied to the
// thread that took the lock (the word holds the process's pid).
unsafe impl Send for SideGuard {}

impl SideGuard {
    fn word(&self) -> &AtomicU32 {
        // SAFETY: `_keep` keeps the word mapped as long as self (the
        // `LockWord` contract); it is only reached as an atomic.
        unsafe { self.lock.word.as_ref() }
    }
}

/// Takes the lock word `lock` for this process. `on_stuck` runs when the
/// word stayed held past `PATIENCE` (it resets the connection; the guard
/// is then returned without the lock, and every call on the channel fails).
pub(crate) fn acquire(lock: LockWord, on_stuck: impl FnOnce()) -> SideGuard {
    let mut guard = SideGuard { lock, held: false };
    guard.held = take(guard.word(), &guard.lock.parker);
    if !guard.held {
        on_stuck();
    }
    guard
}

/// The longest a lock of our side is legitimately held (a write, or a
/// read that settles its doorbell bytes: milliseconds). The word lives in
/// memory the peer can write: a peer that plants a live pid in it would
/// hold us forever, so past this the connection is reset instead.
const PATIENCE: Duration = Duration::from_secs(5);

/// The acquisition loop; true once the lock is ours, false once `PATIENCE`
/// ran out (the caller then resets the channel).
fn take(word: &AtomicU32, parker: &Parker) -> bool {
    let me = std::process::id() & !WAITERS;
    let mut spins = 0u32;
    let start = std::time::Instant::now();
    loop {
        // SYNC POINT: Acquire pairs with the Release of the previous
        // holder's unlock: its ring updates happen before ours.
        let seen = match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
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
                return true;
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
            return false;
        }
    }
}

impl Drop for SideGuard {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        // SYNC POINT: Release publishes our ring updates to the next holder.
        if self.word().swap(0, Ordering::Release) & WAITERS != 0 {
            self.lock.parker.wake(self.word());
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
