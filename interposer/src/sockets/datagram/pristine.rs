//! UDP sockets of the default mode that are still the kernel's own file
//! (issue 16, decision 64). socket() leaves the kernel's UDP socket on its
//! number and only marks it *pristine* here (no system call, no fd): most
//! UDP sockets are never carried (a socket per DNS query to a remote
//! server, QUIC to the internet, statsd to a plain daemon), and the eager
//! shell of the emulated mode cost them two fds and about ten system
//! calls each.
//!
//! A pristine socket is converted (`datagram::adopt`: its kernel socket
//! moves up to the library's fds, an epoll instance takes the number) at
//! its first bind, connect or send that the library would carry. Review
//! H-A's hazard is a file captured before that: an epoll registration, a
//! dup, a thread asleep in a receive, a forked child or a passed fd would
//! keep the kernel socket's file and receive nothing once the number is
//! the instance's. So whatever could capture the current file first
//! *captures* the socket: it is the kernel's for good, which the default
//! mode always makes correct (its kernel socket holds the port, and
//! preloaded senders reach it through the kernel when no name stands
//! beside it).
//!
//! One byte per fd below `fdtable::CAPACITY` (64 KiB of zeroed .bss,
//! touched only where used): NONE, PRISTINE, or CONVERTING while a thread
//! converts it. Both transitions out of PRISTINE are compare-and-swaps, so
//! exactly one of a converting thread and a capturing one wins; a capture
//! that finds CONVERTING waits until the conversion is over, then finds
//! the fd ours (the library's path) or pristine again (a conversion that
//! did not happen). Lock-free and allocation-free: safe in a signal
//! handler and in a forked child.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::platform::fdtable::{self, CAPACITY};

const NONE: u8 = 0;
const PRISTINE: u8 = 1;
const CONVERTING: u8 = 2;

static STATE: [AtomicU8; CAPACITY] = [const { AtomicU8::new(NONE) }; CAPACITY];
/// A pristine socket the kernel connected to a destination remembered as
/// held by nobody (`unheld`): when (`monotonic_ms`) a send asks again
/// whether a preloaded receiver holds it now (decision 63's recheck), 0
/// for none. 512 KiB of .bss, touched only where used.
static RECHECK_MS: [AtomicU64; CAPACITY] = [const { AtomicU64::new(0) }; CAPACITY];
/// Entries not NONE: the scans (poll's, fork's) skip at 0.
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn slot(fd: c_int) -> Option<&'static AtomicU8> {
    usize::try_from(fd).ok().and_then(|i| STATE.get(i))
}

/// socket() made the UDP socket `fd` (default mode, UDP carried).
pub(crate) fn made(fd: c_int) {
    if let Some(s) = slot(fd) {
        if s.swap(PRISTINE, Ordering::AcqRel) == NONE {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether `fd` is pristine or being converted (one load).
#[inline]
pub(crate) fn is_pristine(fd: c_int) -> bool {
    slot(fd).is_some_and(|s| s.load(Ordering::Acquire) != NONE)
}

/// Whether any fd of this process is pristine (one load).
#[inline]
pub(crate) fn any() -> bool {
    COUNT.load(Ordering::Relaxed) > 0
}

/// `fd` is closed, or names a new file (`stale::fresh`): not pristine.
#[inline]
pub(crate) fn forget(fd: c_int) {
    if let Some(s) = slot(fd) {
        if s.load(Ordering::Relaxed) != NONE && s.swap(NONE, Ordering::AcqRel) != NONE {
            COUNT.fetch_sub(1, Ordering::Relaxed);
            no_recheck(fd);
        }
    }
}

/// `fd` is being closed: a conversion another thread has under way ends
/// first (at most about 10 ms, as `capture_all`'s: a close from a signal
/// handler that interrupted the converting thread must not wait for
/// itself), so that its instance never lands on the number after the
/// kernel gave it to another file (review udplazy #3: a racing
/// close + open got an epoll instance); then the number is forgotten.
pub(crate) fn closing(fd: c_int) {
    if let Some(s) = slot(fd) {
        if s.load(Ordering::Acquire) == CONVERTING {
            let started = std::time::Instant::now();
            let mut spins = 0u32;
            while s.load(Ordering::Acquire) == CONVERTING
                && started.elapsed() < std::time::Duration::from_millis(10)
            {
                pause(&mut spins);
            }
        }
    }
    forget(fd);
}

fn no_recheck(fd: c_int) {
    if let Some(r) = usize::try_from(fd).ok().and_then(|i| RECHECK_MS.get(i)) {
        r.store(0, Ordering::Relaxed);
    }
}

/// The pristine socket `fd` is connected through the kernel to a
/// destination nobody held: a send at `at_ms` or later asks again.
pub(crate) fn recheck_at(fd: c_int, at_ms: u64) {
    if let Some(r) = usize::try_from(fd).ok().and_then(|i| RECHECK_MS.get(i)) {
        r.store(at_ms, Ordering::Relaxed);
    }
}

/// Whether the time `recheck_at` set for the pristine socket `fd` has
/// come (once: it is cleared). One load while none is set.
#[inline]
pub(crate) fn recheck_due(fd: c_int) -> bool {
    let Some(r) = usize::try_from(fd).ok().and_then(|i| RECHECK_MS.get(i)) else {
        return false;
    };
    let at = r.load(Ordering::Relaxed);
    at != 0
        && crate::transport::parking::monotonic_ms() >= at
        && r.compare_exchange(at, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        && is_pristine(fd)
}

/// `forget` for every fd from `first` to `last` (close_range, closefrom).
pub(crate) fn forget_range(first: c_int, last: c_int) {
    if !any() {
        return;
    }
    let Ok(first) = usize::try_from(first) else {
        return;
    };
    let last = usize::try_from(last).map_or(0, |l| l.min(CAPACITY - 1));
    for fd in first..=last {
        forget(fd as c_int);
    }
}

/// Something is about to capture `fd`'s current file (a dup, an epoll
/// ADD, a poll or select, a receive, SCM_RIGHTS): a pristine socket is
/// the kernel's for good; one another thread converts is waited for (the
/// caller then finds it ours). One load when `fd` is not pristine.
#[inline]
pub(crate) fn capture(fd: c_int) {
    if let Some(s) = slot(fd) {
        if s.load(Ordering::Acquire) != NONE {
            settle(fd, s);
        }
    }
}

#[cold]
fn settle(fd: c_int, s: &AtomicU8) {
    let mut spins = 0u32;
    loop {
        match s.load(Ordering::Acquire) {
            NONE => return,
            PRISTINE => {
                if s.compare_exchange(PRISTINE, NONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    COUNT.fetch_sub(1, Ordering::Relaxed);
                    no_recheck(fd);
                    return;
                }
            }
            _ => pause(&mut spins),
        }
    }
}

/// A conversion's wait: spin a little, then yield (a conversion is some
/// tens of system calls).
fn pause(spins: &mut u32) {
    *spins += 1;
    if *spins < 100 {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// What `claim` found.
pub(crate) enum Claimed {
    /// This thread converts it (the claim ends when dropped).
    Mine(Claim),
    /// Another thread converted it: it is ours now.
    Ours,
    /// Not pristine: the kernel's, for good.
    Kernel,
}

/// A pristine socket being converted by this thread. Dropped: NONE if
/// the fd is ours by then, else pristine again (nothing captured it
/// meanwhile: every capture waited).
pub(crate) struct Claim(c_int);

impl Drop for Claim {
    fn drop(&mut self) {
        let Some(s) = slot(self.0) else { return };
        let ours = fdtable::is_owned(self.0);
        let next = if ours { NONE } else { PRISTINE };
        // (A close of the number meanwhile forgot it: nothing to undo.)
        if s.compare_exchange(CONVERTING, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && next == NONE
        {
            COUNT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Takes the pristine socket `fd` for a conversion.
pub(crate) fn claim(fd: c_int) -> Claimed {
    let Some(s) = slot(fd) else {
        return Claimed::Kernel;
    };
    let mut spins = 0u32;
    loop {
        match s.load(Ordering::Acquire) {
            NONE if fdtable::is_owned(fd) => return Claimed::Ours,
            NONE => return Claimed::Kernel,
            PRISTINE => {
                if s.compare_exchange(PRISTINE, CONVERTING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Claimed::Mine(Claim(fd));
                }
            }
            _ => pause(&mut spins),
        }
    }
}

/// Every pristine socket is captured: a fork shares them all (the
/// prepare handler), an exec takes them to an image that knows none.
/// A conversion under way is waited for, at most about 10 ms (a fork
/// from a signal handler that interrupted it must not hang).
pub(crate) fn capture_all() {
    if !any() {
        return;
    }
    let limit = crate::platform::internal_fd::nofile_limit()
        .map_or(CAPACITY as u64, |n| n.min(CAPACITY as u64)) as usize;
    for s in STATE.iter().take(limit) {
        if s.load(Ordering::Relaxed) == NONE {
            continue;
        }
        let started = std::time::Instant::now();
        let mut spins = 0u32;
        while s.load(Ordering::Acquire) == CONVERTING
            && started.elapsed() < std::time::Duration::from_millis(10)
        {
            pause(&mut spins);
        }
        if s.compare_exchange(PRISTINE, NONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            COUNT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// In a forked child: a conversion the parent's thread had under way is
/// no one's here; the number keeps whatever file it had (the kernel
/// socket, unless the instance had taken it, whose socket the child then
/// does not know: as a fork from a signal handler mid-conversion).
pub(crate) fn after_fork_child() {
    if !any() {
        return;
    }
    for s in STATE.iter() {
        if s.load(Ordering::Relaxed) != NONE && s.swap(NONE, Ordering::AcqRel) != NONE {
            COUNT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_and_a_claim_exclude_each_other() {
        made(6100);
        assert!(is_pristine(6100) && any());
        capture(6100);
        assert!(!is_pristine(6100));
        assert!(matches!(claim(6100), Claimed::Kernel));
        made(6101);
        match claim(6101) {
            Claimed::Mine(c) => {
                assert!(is_pristine(6101));
                drop(c); // not ours: pristine again
            }
            _ => panic!("claim"),
        }
        assert!(is_pristine(6101));
        forget_range(6100, 6101);
        assert!(!is_pristine(6101));
    }

    #[test]
    fn a_capture_waits_for_a_conversion() {
        made(6110);
        let Claimed::Mine(c) = claim(6110) else {
            panic!("claim")
        };
        let t = std::thread::spawn(|| {
            capture(6110);
            is_pristine(6110)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(c);
        // Not ours (no fd table entry): pristine again, then captured.
        assert!(!t.join().unwrap());
    }
}
