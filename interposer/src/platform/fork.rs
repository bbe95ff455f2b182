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
