//! Processes that restricted their own system calls (a seccomp filter, as
//! OpenSSH's pre-authentication sandbox installs): the ring then keeps to
//! calls such a filter lets through for the program's own I/O — futex,
//! nanosleep, getpid — and leaves out `sched_yield` and `kill`, which it
//! would otherwise use while waiting for a lock or a busy producer. (A
//! filter kills the process on the first call outside its list, so "try
//! and fall back" is not an option.) The interposer sets this.

use core::sync::atomic::{AtomicBool, Ordering};

static RESTRICTED: AtomicBool = AtomicBool::new(false);

/// From now on, use only the restricted set of system calls (for the
/// whole process; a forked child inherits it, as it does the filter).
pub fn set_syscalls_restricted(on: bool) {
    RESTRICTED.store(on, Ordering::Relaxed);
}

/// Whether `set_syscalls_restricted` is on.
#[inline]
pub fn syscalls_restricted() -> bool {
    RESTRICTED.load(Ordering::Relaxed)
}

/// Gives the CPU away for a moment: `sched_yield`, or, restricted, a zero
/// `nanosleep` (which sandboxes allow for the program's own sleeps; it ends
/// the time slice much as a yield does, up to the timer slack).
pub fn yield_cpu() {
    if syscalls_restricted() {
        let zero = rustix::thread::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let _ = rustix::thread::nanosleep(&zero);
    } else {
        std::thread::yield_now();
    }
}
