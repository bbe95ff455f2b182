//! Fork-safe, process-private locks: an [`RwLock`] for the socket registry
//! and a [`Mutex`] for per-socket state.
//!
//! Why not `parking_lot` or `std`: a lock's whole state here is one
//! `AtomicU32` word, with no wait queue in user space. A `fork()` copies the
//! word into the child, where the threads that held or waited on the lock do
//! not exist; the atfork child handler then makes the lock usable again with
//! [`RwLock::reset_after_fork`] / [`Mutex::reset_after_fork`], a plain store
//! of "unlocked". parking_lot keeps parked threads in a global table that
//! the child inherits: its unlock path in the child hands the lock to a
//! thread that is not there, and the child's next lock call hangs forever.
//!
//! Waiting: the [`RwLock`] spins with `spin_loop` and then yields
//! (`sched_yield`); its critical sections are a few instructions (a slab
//! lookup, an `Arc` clone). The [`Mutex`] spins briefly and then sleeps on
//! the state word with a process-private futex (raw syscall, no libc), since
//! per-connection locks may be held across a blocking ring wait. A private
//! futex lives in the process's own address space, so a child has no
//! waiters on it after a fork, and resetting the word is all it takes.
//!
//! These locks are process-private: never place them in shared memory (the
//! futex is private, and the state is meaningless to another process).
//! Neither lock is re-entrant: taking it again in the thread that holds it
//! deadlocks (the re-entry guard in `hooks` keeps signal handlers that
//! interrupt library code away from them).
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rustix::thread::futex;

/// Spin, then yield: how a thread waits for a short critical section.
struct Backoff {
    step: u32,
}

impl Backoff {
    /// Rounds of exponential spinning (1, 2, 4, ... 64 spins) before yielding.
    const SPIN_ROUNDS: u32 = 7;

    fn new() -> Backoff {
        Backoff { step: 0 }
    }

    fn spinning(&self) -> bool {
        self.step < Self::SPIN_ROUNDS
    }

    fn snooze(&mut self) {
        if self.spinning() {
            for _ in 0..1u32 << self.step {
                core::hint::spin_loop();
            }
            self.step += 1;
        } else {
            // Not sched_yield itself: a seccomp sandbox may refuse it.
            crate::platform::sandbox::yield_cpu();
        }
    }
}

// ---------------------------------------------------------------------------
// RwLock

/// Write-locked.
const WRITER: u32 = 1 << 31;
/// A writer is waiting: new readers hold back, so a stream of readers
/// cannot starve it (the fork `prepare` handler is such a writer).
const WRITER_WAITING: u32 = 1 << 30;
/// The reader count.
const READERS: u32 = WRITER_WAITING - 1;

/// A reader-writer lock whose state is one word (readers, writer bit,
/// writer-waiting bit), resettable in a forked child.
pub(crate) struct RwLock<T> {
    state: AtomicU32,
    /// The write lock is held for a fork (see [`RwLock::hold_for_fork`]).
    fork_hold: AtomicBool,
    /// A read hold taken for a fork from inside the library
    /// ([`RwLock::hold_for_fork_within`]).
    fork_read_hold: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&T` to several threads at once (T: Sync) and
// `&mut T` to one thread at a time, possibly not the creator (T: Send);
// the state word's Acquire/Release orderings order those accesses.
unsafe impl<T: Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    pub(crate) const fn new(value: T) -> RwLock<T> {
        RwLock {
            state: AtomicU32::new(0),
            fork_hold: AtomicBool::new(false),
            fork_read_hold: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Shared access; waits while a writer holds or waits for the lock.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        let mut backoff = Backoff::new();
        loop {
            if let Some(guard) = self.try_read() {
                return guard;
            }
            backoff.snooze();
        }
    }

    /// Shared access if no writer holds or waits for the lock.
    pub(crate) fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (WRITER | WRITER_WAITING) != 0 || s & READERS == READERS {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(RwLockReadGuard { lock: self }),
                Err(now) => s = now,
            }
        }
    }

    /// Exclusive access.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.lock_exclusive();
        RwLockWriteGuard { lock: self }
    }

    /// Exclusive access if the lock is free.
    pub(crate) fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        let s = self.state.load(Ordering::Relaxed);
        if s & (WRITER | READERS) != 0 {
            return None;
        }
        self.state
            .compare_exchange(s, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| RwLockWriteGuard { lock: self })
    }

    fn lock_exclusive(&self) {
        let mut backoff = Backoff::new();
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & (WRITER | READERS) == 0 {
                // Free. Taking it clears WRITER_WAITING; another waiting
                // writer sets it again on its next round.
                if self
                    .state
                    .compare_exchange_weak(s, WRITER, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if s & WRITER_WAITING == 0 {
                self.state.fetch_or(WRITER_WAITING, Ordering::Relaxed);
            }
            backoff.snooze();
        }
    }

    fn unlock_exclusive(&self) {
        // Keeps WRITER_WAITING: a waiting writer goes before new readers.
        self.state.fetch_and(!WRITER, Ordering::Release);
    }

    /// For a fork `prepare` handler: takes the write lock and keeps it, with
    /// no guard, so that no other thread is inside a critical section when
    /// the process is copied. The parent handler calls
    /// [`release_fork_hold`](Self::release_fork_hold); the child handler
    /// calls [`reset_after_fork`](Self::reset_after_fork).
    pub(crate) fn hold_for_fork(&self) {
        self.lock_exclusive();
        self.fork_hold.store(true, Ordering::Relaxed);
    }

    /// For a fork from a signal handler that interrupted the library: this
    /// very thread may hold the lock below the handler, so the write lock
    /// could never come. A read hold excludes writers just as well (the
    /// copy sees no change half made) and is taken beside other readers,
    /// holding back for nobody (not even a waiting writer); a writer that
    /// holds it is waited for up to `patience` (it may be this thread),
    /// then the fork goes on with nothing held.
    pub(crate) fn hold_for_fork_within(&self, patience: std::time::Duration) {
        let start = std::time::Instant::now();
        let mut backoff = Backoff::new();
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & WRITER == 0
                && s & READERS != READERS
                && self
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.fork_read_hold.store(true, Ordering::Relaxed);
                return;
            }
            if start.elapsed() > patience {
                return;
            }
            backoff.snooze();
        }
    }

    /// Releases the write lock [`hold_for_fork`](Self::hold_for_fork) took;
    /// does nothing if it is not held that way.
    pub(crate) fn release_fork_hold(&self) {
        if self.fork_hold.swap(false, Ordering::Relaxed) {
            self.unlock_exclusive();
        }
        if self.fork_read_hold.swap(false, Ordering::Relaxed) {
            self.state.fetch_sub(1, Ordering::Release);
        }
    }

    /// Makes the lock free, whatever state the fork copied.
    ///
    /// Contract: call only in the child of a `fork()` (the atfork child
    /// handler), while the child is single-threaded. Then every holder or
    /// waiter recorded in the state was a thread of the parent, absent
    /// here, or this thread below a signal handler that forked (a guard
    /// it drops later leaves the word at zero, and no other thread can
    /// contend with it), and nothing can observe the reset. Anywhere else
    /// it would break mutual exclusion.
    pub(crate) fn reset_after_fork(&self) {
        self.fork_hold.store(false, Ordering::Relaxed);
        self.fork_read_hold.store(false, Ordering::Relaxed);
        self.state.store(0, Ordering::Release);
    }
}

impl<T> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Shared access to an [`RwLock`]'s value.
#[must_use = "the lock is released when the guard is dropped"]
pub(crate) struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read guard exists only while the state counts it as a
        // reader, which excludes writers; readers only get `&T`.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        // Never below zero: in a child forked from a signal handler that
        // interrupted this guard's holder without the fork hold, the child
        // handler reset the word to 0 under it (`hold_for_fork_within`).
        let _ = self
            .lock
            .state
            .fetch_update(Ordering::Release, Ordering::Relaxed, |s| {
                (s & READERS != 0).then(|| s - 1)
            });
    }
}

/// Exclusive access to an [`RwLock`]'s value.
#[must_use = "the lock is released when the guard is dropped"]
pub(crate) struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write guard holds the WRITER bit: no other guard exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock_exclusive();
    }
}

// ---------------------------------------------------------------------------
// Mutex

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and a thread may be asleep on the futex: unlock must wake one.
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock whose state is one futex word (the classic
/// three-state futex mutex), resettable in a forked child.
pub(crate) struct Mutex<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time, possibly not
// the creator (T: Send); Acquire/Release on the state word order accesses.
unsafe impl<T: Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Mutex<T> {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            value: UnsafeCell::new(value),
        }
    }

    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        self.guard()
    }

    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.guard())
    }

    #[cold]
    fn lock_contended(&self) {
        let mut backoff = Backoff::new();
        while backoff.spinning() {
            let s = self.state.load(Ordering::Relaxed);
            if s == UNLOCKED
                && self
                    .state
                    .compare_exchange_weak(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if s == CONTENDED {
                break; // others are asleep already: join them
            }
            backoff.snooze();
        }
        // Mark it contended; whoever swaps UNLOCKED out owns the lock.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            // EAGAIN (the word changed) and EINTR just mean: look again.
            let _ = futex::wait(&self.state, futex::Flags::PRIVATE, CONTENDED, None);
        }
    }

    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            let _ = futex::wake(&self.state, futex::Flags::PRIVATE, 1);
        }
    }

    /// Makes the mutex free, whatever state the fork copied.
    ///
    /// Contract: call only in the child of a `fork()` (the atfork child
    /// handler), while the child is single-threaded, and while the calling
    /// thread holds no guard of this mutex. The thread that held it in the
    /// parent is absent here, and so is any thread asleep on it (a private
    /// futex has no waiters in a new address space). Anywhere else it would
    /// break mutual exclusion.
    pub(crate) fn reset_after_fork(&self) {
        self.state.store(UNLOCKED, Ordering::Release);
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    #[cfg(test)]
    pub(crate) fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("locked", &(self.state.load(Ordering::Relaxed) != UNLOCKED))
            .finish_non_exhaustive()
    }
}

/// Exclusive access to a [`Mutex`]'s value. Not `Send` (like std's guard);
/// `Sync` only when `T` is.
#[must_use = "the mutex is released when the guard is dropped"]
pub(crate) struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing `&MutexGuard` across threads shares only `&T`.
unsafe impl<T: Sync> Sync for MutexGuard<'_, T> {}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the mutex.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    #[test]
    fn rwlock_basics() {
        let l = RwLock::new(5);
        {
            let a = l.read();
            let b = l.read();
            assert_eq!(*a + *b, 10);
            assert!(l.try_write().is_none());
        }
        *l.write() += 1;
        {
            let _w = l.write();
            assert!(l.try_read().is_none());
            assert!(l.try_write().is_none());
        }
        assert_eq!(*l.read(), 6);
    }

    #[test]
    fn mutex_basics() {
        let m = Mutex::new(vec![1]);
        {
            let mut g = m.lock();
            g.push(2);
            assert!(m.try_lock().is_none());
        }
        assert_eq!(m.try_lock().map(|g| g.len()), Some(2));
        let mut m = m;
        m.get_mut().push(3);
        assert_eq!(m.into_inner(), vec![1, 2, 3]);
    }

    #[test]
    fn mutex_excludes_under_contention() {
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut g = m.lock();
                        let v = *g;
                        if v & 1023 == 0 {
                            thread::yield_now(); // hold it a while sometimes
                        }
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 80_000);
        assert_eq!(m.state.load(Ordering::Relaxed), UNLOCKED);
    }

    #[test]
    fn rwlock_excludes_and_writers_are_not_starved() {
        let l = Arc::new(RwLock::new((0u64, 0u64)));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (l, stop) = (l.clone(), stop.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let g = l.read();
                        assert_eq!(g.0, g.1, "a reader saw a half-done write");
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for _ in 0..2_000 {
            let mut g = l.write();
            g.0 += 1;
            core::hint::spin_loop();
            g.1 += 1;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "writer starved");
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(*l.read(), (2_000, 2_000));
        assert_eq!(l.state.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn reset_frees_a_lock_left_held() {
        let l = RwLock::new(1);
        core::mem::forget(l.read());
        l.reset_after_fork();
        core::mem::forget(l.write());
        l.reset_after_fork();
        l.state
            .store(WRITER | WRITER_WAITING | 3, Ordering::Relaxed);
        l.fork_hold.store(true, Ordering::Relaxed);
        l.reset_after_fork();
        assert_eq!(*l.write(), 1);
        l.release_fork_hold(); // no hold: a no-op
        assert!(l.try_write().is_some());

        let m = Mutex::new(2);
        core::mem::forget(m.lock());
        m.state.store(CONTENDED, Ordering::Relaxed);
        m.reset_after_fork();
        assert_eq!(*m.lock(), 2);
    }

    #[test]
    fn fork_hold_and_release() {
        let l = RwLock::new(0);
        l.hold_for_fork();
        assert!(l.try_read().is_none());
        l.release_fork_hold();
        assert!(l.try_read().is_some());
        l.release_fork_hold(); // twice: still a no-op
        assert_eq!(l.state.load(Ordering::Relaxed), 0);
    }

    /// The real thing: threads hammer both locks (some asleep on the mutex,
    /// readers spinning on the rwlock) while this thread forks; the child
    /// resets the locks and must take each of them at once.
    #[test]
    fn child_takes_the_locks_after_a_fork_with_busy_threads() {
        static L: RwLock<u32> = RwLock::new(0);
        static M: Mutex<u32> = Mutex::new(0);
        static STOP: AtomicBool = AtomicBool::new(false);
        static SPINS: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> = (0..4)
            .map(|i| {
                thread::spawn(move || {
                    while !STOP.load(Ordering::Relaxed) {
                        if i % 2 == 0 {
                            let _g = L.read();
                            SPINS.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let mut g = M.lock();
                            *g += 1;
                            thread::yield_now(); // others sleep on the futex
                        }
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            L.hold_for_fork();
            // SAFETY: the child only touches atomics and calls _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                L.reset_after_fork();
                M.reset_after_fork();
                let ok = L.try_write().is_some() && M.try_lock().is_some();
                // SAFETY: _exit is async-signal-safe; nothing to clean up.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            L.release_fork_hold();
            let mut status = 0;
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(r, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child could not take the locks ({status:#x})"
            );
        }
        STOP.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
    }
}
