//! Signal handlers put off while this thread is inside the library
//! (decisions 48 and 73).
//!
//! `sys::handlers`' trampoline puts off a handler that comes while the
//! thread spins or runs library code: the signal is blocked and queued
//! again, and its bit noted here. It runs when the thread leaves the
//! library or begins a wait outside it (`guard`), where no lock of ours is
//! held and a siglongjmp out of it leaves nothing of ours set. Its own
//! module so that `guard` (which leaves) and `sys::handlers` (which puts
//! off) need not import each other.
#![allow(unsafe_code)]

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};
use std::cell::Cell;

std::thread_local! {
    /// A spin's `Watch` is on: it runs what was put off at its end.
    static SPINNING: Cell<bool> = const { Cell::new(false) };
    /// The signals put off (queued again, blocked): bit `n - 1` for
    /// signal `n`.
    static DEFERRED: AtomicU64 = const { AtomicU64::new(0) };
}

/// Whether a spin's `Watch` is on.
pub(crate) fn spinning() -> bool {
    SPINNING.try_with(Cell::get).unwrap_or(false)
}

/// Sets whether a spin's `Watch` is on; returns what it was.
pub(crate) fn set_spinning(on: bool) -> bool {
    SPINNING.try_with(|s| s.replace(on)).unwrap_or(false)
}

/// Notes signals put off (already blocked and queued again); false if
/// this thread's record is gone (thread exit), where nothing could
/// unblock them.
pub(crate) fn note(bits: u64) -> bool {
    DEFERRED
        .try_with(|d| d.fetch_or(bits, Ordering::Relaxed))
        .is_ok()
}

/// The signals put off and not yet run (blocked by us, not by the
/// program).
pub(crate) fn pending() -> u64 {
    DEFERRED
        .try_with(|d| d.load(Ordering::Relaxed))
        .unwrap_or(0)
}

/// Takes the signals put off (forgets them).
pub(crate) fn take() -> u64 {
    DEFERRED
        .try_with(|d| d.swap(0, Ordering::Relaxed))
        .unwrap_or(0)
}

/// Runs the handlers put off: their signals unblocked, the kernel
/// delivers them before this returns. Not while a spin's `Watch` is on
/// (it runs them at its end). One thread-local load when none was put
/// off. errno is kept.
pub(crate) fn run() {
    let any = DEFERRED
        .try_with(|d| d.load(Ordering::Relaxed) != 0)
        .unwrap_or(false);
    if !any || spinning() {
        return;
    }
    unblock(take());
}

/// Unblocks `bits` (their handlers run now if their signals are pending).
pub(crate) fn unblock(bits: u64) {
    if bits == 0 {
        return;
    }
    // (errno by hand: `sys` imports this module, so this one cannot use
    // `sys::errno`.)
    // SAFETY: errno's location is the thread's own.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: rt_sigprocmask with a kernel sigset (8 bytes) of ours.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_UNBLOCK,
            &bits,
            ptr::null_mut::<u64>(),
            8,
        )
    };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}
