//! A lock shared by a process, its threads and its forked children,
//! without an fd (an fd would be a connection fewer under `ulimit -n`): a
//! robust, process-shared pthread mutex in an anonymous shared mapping
//! (inherited by fork; an exec'd program makes its own). Robust: a holder
//! that exits or is killed, zombie or reaped, leaves it to the next taker
//! (EOWNERDEAD; glibc keeps each thread's robust list, the kernel walks it
//! at exit). Taking it waits a bounded time, asleep, then gives up (the
//! caller tries again later): a holder that is stopped (SIGSTOP, a
//! debugger), or this very thread interrupted by a signal handler while it
//! held it (error-checking: EDEADLK), never hangs anybody.
#![allow(unsafe_code)] // the shared mapping and the pthread calls

use core::ptr::NonNull;
use std::time::Duration;

pub(crate) struct SharedLock {
    mutex: NonNull<libc::pthread_mutex_t>,
}

// SAFETY: the mutex is process-shared and only used through pthread
// calls, which may be made from any thread.
unsafe impl Send for SharedLock {}
// SAFETY: as above: `&SharedLock` only locks and unlocks the mutex.
unsafe impl Sync for SharedLock {}

const PAGE: usize = 4096;

/// How long `with` waits for a holder before giving up.
const PATIENCE: Duration = Duration::from_millis(2);

impl SharedLock {
    /// A new lock (a page of shared anonymous memory), unless it cannot be
    /// mapped or initialised.
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
        let mutex = NonNull::new(p.cast::<libc::pthread_mutex_t>())?;
        let lock = SharedLock { mutex };
        // SAFETY: `attr` is initialised before use and destroyed after;
        // the mutex lies in our page (PAGE bytes, page-aligned), not yet
        // seen by any other thread or process.
        let ok = unsafe {
            let mut attr = core::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            if libc::pthread_mutexattr_init(attr.as_mut_ptr()) != 0 {
                return None;
            }
            let a = attr.as_mut_ptr();
            let ok = libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED) == 0
                && libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST) == 0
                && libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK) == 0
                && libc::pthread_mutex_init(mutex.as_ptr(), a) == 0;
            libc::pthread_mutexattr_destroy(a);
            ok
        };
        ok.then_some(lock)
    }

    /// Takes the lock for `f`; None (and `f` not run) if it could not be
    /// had within `PATIENCE`.
    pub(crate) fn with<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let m = self.mutex.as_ptr();
        let deadline = deadline_in(PATIENCE)?;
        // SAFETY: `m` is the mutex `new` initialised, mapped until `drop`.
        // SAFETY: as above; `deadline` is a valid timespec.
        match unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &deadline) } {
            0 => {}
            // Its holder died holding it: what it guarded is a socket
            // whose every operation is whole (a peek, a receive), so it
            // is consistent as it stands.
            libc::EOWNERDEAD => {
                // SAFETY: we hold it (EOWNERDEAD), as
                // pthread_mutex_consistent and the unlock require.
                if unsafe { libc::pthread_mutex_consistent(m) } != 0 {
                    // SAFETY: still held by this thread (EOWNERDEAD above):
                    // given back rather than kept by a caller told None.
                    unsafe { libc::pthread_mutex_unlock(m) };
                    return None;
                }
            }
            // ETIMEDOUT (held), EDEADLK (by this thread), ENOTRECOVERABLE.
            _ => return None,
        }
        let r = f();
        // SAFETY: held by this thread (taken above).
        unsafe { libc::pthread_mutex_unlock(m) };
        Some(r)
    }
}

extern "C" {
    /// glibc 2.30+ (POSIX 2024); not in the libc crate. Monotonic, so a
    /// clock stepped back does not lengthen the wait (review s31 of
    /// fdlim14: pthread_mutex_timedlock waits on CLOCK_REALTIME).
    fn pthread_mutex_clocklock(
        m: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// CLOCK_MONOTONIC `after` from now, as pthread_mutex_clocklock takes it.
fn deadline_in(after: Duration) -> Option<libc::timespec> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let nanos = now.tv_nsec as i64 + after.subsec_nanos() as i64;
    Some(libc::timespec {
        tv_sec: (now.tv_sec as i64).checked_add(after.as_secs() as i64 + nanos / 1_000_000_000)?
            as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    })
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        // SAFETY: our own mapping of PAGE bytes, not used after this (the
        // mutex is not destroyed: forked processes may still use their copy
        // of the mapping).
        unsafe { libc::munmap(self.mutex.as_ptr().cast(), PAGE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_once_given_up_when_held_and_left_by_a_holder_that_died() {
        let lock = SharedLock::new().unwrap();
        assert_eq!(lock.with(|| 7), Some(7));
        // Held by this very thread (a signal handler's call): given up,
        // not a deadlock.
        assert_eq!(lock.with(|| lock.with(|| 1)), Some(None));
        assert_eq!(lock.with(|| 3), Some(3));
        // Held by another thread meanwhile: given up after PATIENCE.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let lock = &lock;
            s.spawn(move || {
                lock.with(|| {
                    held_tx.send(()).unwrap();
                    done_rx.recv().unwrap();
                })
            });
            held_rx.recv().unwrap();
            assert_eq!(lock.with(|| 4), None);
            done_tx.send(()).unwrap();
        });
        assert_eq!(lock.with(|| 5), Some(5));
        // A forked process that dies holding it (never unlocking): the
        // next taker has it.
        // SAFETY: the child only takes the lock and exits (async-signal
        // enough for a test: no allocation between fork and _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: _exit ends the child at once, holding the lock.
            lock.with(|| unsafe { libc::_exit(0) });
            // SAFETY: as above (the lock could not be had).
            unsafe { libc::_exit(1) };
        }
        // Exited, not reaped (a zombie, as under a parent that does not
        // reap at once): already given up (kill(pid, 0) still finds it).
        // SAFETY: waiting for our own child, leaving it waitable.
        let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
        // SAFETY: `info` is ours to fill.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(r, 0);
        assert_eq!(lock.with(|| 6), Some(6));
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(lock.with(|| 8), Some(8));
    }
}
