//! The fork generation: bumped in both processes at every fork, so state
//! created before a fork knows it is shared with another process (it must
//! not announce EOF or unlink its rendezvous when one of the two closes
//! it). The after-fork work itself is one explicit list in
//! `calls::process` (the atfork handlers), which calls each module's
//! `after_fork_child` in order.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};

static GENERATION: AtomicU32 = AtomicU32::new(0);

/// The number of forks this process's line has been through.
pub(crate) fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// A fork happened (both sides call it, from the atfork handlers).
pub(crate) fn advance() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This process's pid, asked once per fork generation (getpid is a system
/// call). A child made past the atfork handlers (a raw clone) would see
/// its parent's: only for decisions that such a child gets wrong harmlessly
/// (which segments to keep, a port scan's start), never to address memory.
pub(crate) fn pid() -> u32 {
    let generation = u64::from(generation()) + 1;
    let key = PID_KEY.load(Ordering::Relaxed);
    if key >> 32 == generation {
        return key as u32;
    }
    let pid = std::process::id();
    PID_KEY.store(generation << 32 | u64::from(pid), Ordering::Relaxed);
    pid
}

static PID_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
