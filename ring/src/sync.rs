//! Atomics and thread primitives, swapped for loom's models under `--cfg loom`
//! so the ring protocol can be model-checked (the tokio pattern).
//!
//! Everything in the ring that orders memory goes through this module.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Hint for a busy-wait loop.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
