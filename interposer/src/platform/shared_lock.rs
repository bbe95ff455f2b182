//! A lock shared by a process, its threads and its forked children,
//! without an fd (an fd would be a connection fewer under `ulimit -n`): one
//! word in an anonymous shared mapping (inherited by fork; an exec'd
//! program makes its own), holding the holder's thread id. Taking it waits
//! a bounded time, then gives up (the caller tries again at its next
//! call): a holder that died, or this very thread interrupted by a signal
//! handler while it held it, can never hang anybody; a dead holder's word
//! is taken over.
#![allow(unsafe_code)] // the shared mapping

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct SharedLock {
    word: NonNull<AtomicU32>,
}

// SAFETY: the word is only ever accessed atomically, from any thread.
unsafe impl Send for SharedLock {}
// SAFETY: as above: `&SharedLock` only gives atomic access to the word.
unsafe impl Sync for SharedLock {}

const PAGE: usize = 4096;

/// How long `lock` waits for a holder before giving up.
const PATIENCE: Duration = Duration::from_millis(2);

impl SharedLock {
    /// A new lock (a page of shared anonymous memory), unless it cannot be
    /// mapped.
    pub(crate) fn new() -> Option<SharedLock> {
        // SAFETY: a new anonymous mapping of our own, touching no existing
        // memory; its address is checked below.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // Zero-filled: unlocked.
        NonNull::new(p.cast::<AtomicU32>()).map(|word| SharedLock { word })
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the page is mapped, aligned and ours until `drop`, and
        // only accessed as an atomic.
        unsafe { self.word.as_ref() }
    }

    /// Takes the lock for `f`; None (and `f` not run) if it could not be
    /// had within `PATIENCE`.
    pub(crate) fn with<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let word = self.word();
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(owner) => {
                    tries += 1;
                    if owner == me || start.elapsed() >= PATIENCE {
                        return None;
                    }
                    if tries.is_multiple_of(32) && !alive(owner) {
                        let _ =
                            word.compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed);
                        continue;
                    }
                    crate::platform::sandbox::yield_cpu();
                }
            }
        }
        let r = f();
        word.store(0, Ordering::Release);
        Some(r)
    }
}

/// Whether thread `tid` exists (kill(tid, 0) takes a thread id too).
fn alive(tid: u32) -> bool {
    match rustix::process::Pid::from_raw(tid as i32) {
        Some(pid) => rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH),
        None => false,
    }
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        // SAFETY: our own mapping of PAGE bytes, not used after this.
        unsafe { libc::munmap(self.word.as_ptr().cast(), PAGE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_once_given_up_when_held_and_taken_over_from_the_dead() {
        let lock = SharedLock::new().unwrap();
        assert_eq!(lock.with(|| 7), Some(7));
        // Held by this very thread (a signal handler's call): given up,
        // not a deadlock.
        assert_eq!(lock.with(|| lock.with(|| 1)), Some(None));
        // A holder that no longer exists (a thread id past pid_max).
        lock.word().store(u32::MAX >> 1, Ordering::Relaxed);
        assert_eq!(lock.with(|| 2), Some(2));
        assert_eq!(lock.word().load(Ordering::Relaxed), 0);
    }
}
