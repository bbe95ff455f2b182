//! Waking an epoll set's sleeping waiter from the thread that changes the
//! set (decision 44). A named sleep (decision 41) relies on the member
//! whose doorbell rang it being reported; a deferred member's data relies
//! on the waiter looking at its ring. Another thread that takes a member
//! out (DEL, MOD, close) or puts one back with data no doorbell announced
//! (ADD) while the waiter sleeps breaks both, so it wakes the sleeper: it
//! adds the process's waker, an eventfd that is always readable, to the
//! kernel's set under a reserved `data` (the kernel wakes the set's
//! sleepers when a ready fd is inserted). The waiter's epoll_wait takes
//! the waker's event out of its answer and the waker out of the set
//! (`woken`), looks at its members again and reports or sleeps on.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use crate::platform::real::waits;
use crate::platform::sys::EventIn;

use super::set::{self, Set};

/// The waker's fd (-1: not made yet). Made once, under the table's lock:
/// by a waiter about to sleep on a set whose members defer while another
/// thread could change it (`needed`), by the first change that must wake
/// a sleeper, or at a fork of a process that slept on a set; kept for the
/// process's life (internal, close-on-exec; a forked child shares it).
static WAKER: AtomicI32 = AtomicI32::new(-1);

/// The `data` the waker is registered under: random (an application's
/// registration has it by a chance of 2^-64), drawn when the process makes
/// its first set (`key`), before any fork that shares it: a forked child
/// whose parent made the waker only later still knows its event (it was
/// handed to the child's application before).
static KEY: AtomicU64 = AtomicU64::new(0);

/// The waker's key, drawn if it is not yet (odd: never 0).
pub(super) fn key() -> u64 {
    let k = KEY.load(Ordering::Relaxed);
    if k != 0 {
        return k;
    }
    use std::hash::BuildHasher;
    let drawn = std::collections::hash_map::RandomState::new().hash_one(0u64) | 1;
    match KEY.compare_exchange(0, drawn, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => drawn,
        Err(other) => other,
    }
}

/// Whether a sleep on a set whose members defer must have the waker ready
/// (decision 57): only when a thread or process other than the sleeper
/// could change the set while it sleeps. A process that has one thread
/// (glibc's `__libc_single_threaded`: cleared by the first
/// pthread_create, before the thread exists) and never forked holding a
/// set cannot: its only thread is the sleeper, and no thread can be made
/// while it sleeps. Such a process never makes the waker unless a change
/// needs it after all (`Set::wake`, lazily), so it holds the fds kernel
/// TCP's holds.
pub(super) fn needed() -> bool {
    SHARED.load(Ordering::Relaxed) || !crate::platform::sys::single_threaded()
}

/// Set when the process forked while holding a set of ours (in the child
/// too): the other process may change a set the two share.
static SHARED: AtomicBool = AtomicBool::new(false);

/// Fork's prepare handler, under the table's lock (`readiness::forking`),
/// with `sets` sets of ours of which `slept` were slept on: from now on
/// sleeps need the waker (`needed`), and the child shares the one the
/// process makes here (a change there or here to a set the two share
/// wakes the other's sleeper with it, as it would have had the process
/// made it at its first sleep: decision 44).
///
/// Not in a process with one thread (review s35 waker14: a single-threaded
/// loop that ran one vfork or subprocess kept the waker for good): every
/// set it holds is crowded at this fork for good (`defer::forking`), so
/// none defers and no sleep on it relies on a wake; sets made after the
/// fork are this process's alone until a next fork crowds them too; and
/// no other thread sleeps now that the child's change would have to wake.
pub(super) fn forking(sets: usize, slept: bool) {
    if sets == 0 || crate::platform::sys::single_threaded() {
        return;
    }
    SHARED.store(true, Ordering::Relaxed);
    if slept {
        waker();
    }
}

/// The waker, made if it is not yet; None when it cannot be (EMFILE: the
/// caller then does not rely on it, see `before_sleep`).
pub(super) fn waker() -> Option<c_int> {
    let fd = WAKER.load(Ordering::Acquire);
    if fd >= 0 {
        return Some(fd);
    }
    let made = rustix::event::eventfd(
        1,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    );
    let made = match made {
        Ok(fd) => crate::platform::internal_fd::InternalFd::new(fd),
        Err(e) => {
            log!(debug, "epoll waker not made: {e}");
            return None;
        }
    };
    let fd = {
        use std::os::fd::{AsFd, AsRawFd};
        made.as_fd().as_raw_fd()
    };
    key();
    // Kept for good (only ever made under the table's lock: no race).
    core::mem::forget(made);
    WAKER.store(fd, Ordering::Release);
    Some(fd)
}

/// What another thread's change to a set may have cost its sleeping
/// waiter (`Set::stir`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing a sleep could lose: only looked at before the next sleep.
    Harmless,
    /// Members `first..=last` left the kernel's set, or stopped reading
    /// there (DEL, a MOD without EPOLLIN, a close): a sleep named on one
    /// of them (decision 41) is woken.
    Left(c_int, c_int),
    /// A member put in with data in its ring that no doorbell byte
    /// announced: whoever sleeps on the set is woken, named or not, solo or
    /// not (the kernel will not report it).
    Unannounced,
}

impl Set {
    /// A thread other than the waiter changed this set (epoll_ctl on a
    /// connection, the close of a member), after the kernel's change: a
    /// waiter asleep is woken when the change may cost it something
    /// (`Change`, `wake`); one about to sleep looks first (`stirred`,
    /// `before_sleep`).
    pub(super) fn stir(&mut self, change: Change) {
        let me = Some(crate::platform::sys::thread_id());
        if change == Change::Unannounced && !(self.solo && self.waiter == me) {
            self.stirred = true;
            // (A solo set's waiter says when it sleeps, with a connection
            // or not: `before_sleep`, `bare_sleep`; others may sleep
            // unseen.)
            if !(self.solo && self.waiter.is_some()) || self.asleep {
                self.wake();
            }
            return;
        }
        if !self.solo || self.waiter.is_none() || self.waiter == me {
            return;
        }
        self.stirred = true;
        let named = match change {
            Change::Left(first, last) => self.raised.iter().any(|f| (first..=last).contains(f)),
            _ => false,
        };
        log!(
            debug,
            "epoll set {:?}: changed by another thread (waiter asleep: {}, named member left: {named})",
            self.numbers,
            self.asleep
        );
        if self.asleep && named {
            self.wake();
        }
    }

    /// Adds the waker to the kernel's set (once until the waiter takes it
    /// out): the kernel wakes whoever sleeps on it.
    pub(super) fn wake(&mut self) {
        let me = crate::platform::fork::pid();
        if self.woken == me {
            return;
        }
        // (Only into a set of ours: every wait on it takes the event out.)
        if !self.ours {
            return;
        }
        let (Some(&epfd), Some(w)) = (self.numbers.first(), waker()) else {
            return;
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key(),
        };
        let r = waits::epoll_ctl(epfd, w, EventIn::own(libc::EPOLL_CTL_ADD, &mut ev));
        if r == 0 || crate::platform::sys::errno() == libc::EEXIST {
            self.woken = me;
        } else {
            log!(
                error,
                "epoll set {epfd}: waiter not woken ({})",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Set {
    /// Takes out the waker this process put in (`wake`), if it is there.
    pub(super) fn unwake(&mut self) {
        let w = WAKER.load(Ordering::Acquire);
        let Some(&epfd) = self.numbers.first() else {
            return;
        };
        if w < 0 || self.woken != crate::platform::fork::pid() {
            return;
        }
        let mut none = libc::epoll_event { events: 0, u64: 0 };
        waits::epoll_ctl(epfd, w, EventIn::own(libc::EPOLL_CTL_DEL, &mut none));
        self.woken = 0;
    }
}

/// A wait on `epfd`, a set of ours with no connection, is about to sleep
/// in the kernel (`begin`) or woke. Its thread, the set's solo waiter, is
/// asleep meanwhile (an ADD with data no doorbell announced wakes it).
/// False: the set was stirred since the wait looked (a connection put
/// in): it looks again instead of sleeping.
pub(crate) fn bare_sleep(epfd: c_int, begin: bool) -> bool {
    let Some(mut sets) = set::sets() else {
        return true;
    };
    let Some(set) = sets.find(epfd) else {
        return true;
    };
    let me = Some(crate::platform::sys::thread_id());
    if set.waiter != me {
        return true;
    }
    if !begin {
        set.asleep = false;
        return true;
    }
    if std::mem::take(&mut set.stirred) {
        return false;
    }
    set.asleep = set.solo;
    true
}

/// `stir` for the set known as `epfd`.
pub(super) fn stir(epfd: c_int, change: Change) {
    if let Some(mut sets) = set::sets() {
        if let Some(set) = sets.find(epfd) {
            set.stir(change);
        }
    }
}

/// The sets `fd` is a member of whose waiter is another thread, by id:
/// `fd` about to be closed (or replaced by dup2) (`closed` stirs them once the
/// kernel's close is done). Empty mostly (no lock without a set).
pub(crate) fn closing(fd: c_int) -> Vec<(u64, c_int, c_int)> {
    closing_range(fd, fd)
}

/// `closing` for every fd from `first` to `last` (close_range).
pub(crate) fn closing_range(first: c_int, last: c_int) -> Vec<(u64, c_int, c_int)> {
    let Some(mut sets) = set::sets() else {
        return Vec::new();
    };
    let me = Some(crate::platform::sys::thread_id());
    sets.iter_mut()
        .filter(|s| s.solo && s.waiter.is_some() && s.waiter != me)
        .filter(|s| s.members.range(first..=last).next().is_some())
        .map(|s| (s.id, first, last))
        .collect()
}

/// The member `closing` found is closed: its sets are stirred.
pub(crate) fn closed(ids: &[(u64, c_int, c_int)]) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    for &(id, first, last) in ids {
        if let Some(set) = sets.iter_mut().find(|s| s.id == id) {
            set.stir(Change::Left(first, last));
        }
    }
}

/// epoll_wait on `epfd` got the first `n` of `out` from the kernel: the
/// waker's event is taken out (the rest moved up; the new count
/// returned), and the waker out of the set, by the process that put it
/// there (a forked child that shares the set leaves it to the parent,
/// whose waiter it woke: it goes on waiting without the event until
/// then).
pub(crate) fn woken(epfd: c_int, out: &mut [libc::epoll_event], n: usize) -> usize {
    // (By the key, not the fd: a forked child's parent may have made its
    // waker after the fork.)
    let key = KEY.load(Ordering::Relaxed);
    if key == 0 {
        return n;
    }
    if !out[..n].iter().any(|e| ({ e.u64 }) == key) {
        return n;
    }
    let mut kept = 0;
    for i in 0..n {
        if ({ out[i].u64 }) != key {
            out[kept] = out[i];
            kept += 1;
        }
    }
    let Some(mut sets) = set::sets() else {
        return kept;
    };
    let Some(set) = sets.find(epfd) else {
        return kept;
    };
    // (Not by the generation: a fork bumps the parent's too.)
    if set.woken != crate::platform::fork::pid() {
        // Another process's (a set shared by fork): its waiter takes it
        // out when it wakes. Until then, a wait here that found only it
        // pauses a millisecond before asking the kernel again, rather
        // than spin on it (that process's waiter may be busy for long).
        drop(sets);
        if kept == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        return kept;
    }
    log!(debug, "epoll set {epfd}: woken by another thread's change");
    let w = WAKER.load(Ordering::Acquire);
    let mut none = libc::epoll_event { events: 0, u64: 0 };
    waits::epoll_ctl(epfd, w, EventIn::own(libc::EPOLL_CTL_DEL, &mut none));
    set.woken = 0;
    kept
}
