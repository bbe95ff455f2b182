//! What the library's shared files (the counters, `stats`; the status
//! table, `status`) have in common: aligned words of a shared mapping,
//! reached atomically and bounds-checked, and making the file at most
//! once a second while it cannot be made.

#![allow(unsafe_code)] // the shared mappings: see `Words`

use core::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::sys::Publish;

/// `len` bytes mapped shared at `base`, alive for as long as this value,
/// only ever accessed through atomics.
#[derive(Debug)]
pub(crate) struct Words {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: plain shared memory, only accessed through atomics, from any
// thread (the owner keeps the mapping alive while a `Words` exists).
unsafe impl Send for Words {}
// SAFETY: as for Send.
unsafe impl Sync for Words {}

impl Words {
    /// # Safety
    /// `base` is the start of a page-aligned mapping of at least `len`
    /// bytes that outlives the value and is only accessed atomically.
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Words {
        Words { base, len }
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The word at byte `off`, or None when unaligned or out of bounds.
    pub(crate) fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        if off & 7 != 0 || off.checked_add(8).is_none_or(|end| end > self.len) {
            return None;
        }
        // SAFETY: in bounds of the mapping (checked), 8-aligned (the mapping
        // is page-aligned), alive as long as `&self` (`new`'s contract); the
        // memory is only accessed atomically.
        Some(unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU64>() })
    }

    /// As `u64_at`, with 4-byte words.
    pub(crate) fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        if off & 3 != 0 || off.checked_add(4).is_none_or(|end| end > self.len) {
            return None;
        }
        // SAFETY: as in `u64_at`, with 4-byte words.
        Some(unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() })
    }
}

/// At most one attempt a second (a file that cannot be made now is tried
/// again later, not at every call that would use it).
pub(crate) struct Retry(AtomicU64);

impl Retry {
    pub(crate) const fn new() -> Retry {
        Retry(AtomicU64::new(0))
    }

    /// Whether this caller may try now (one caller a second).
    pub(crate) fn due(&self) -> bool {
        self.due_every(1000)
    }

    /// Whether this caller may try now (one caller every `ms`).
    pub(crate) fn due_every(&self, ms: u64) -> bool {
        let now = now_ms();
        let next = self.0.load(Ordering::Relaxed);
        now >= next
            && self
                .0
                .compare_exchange(next, now + ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Milliseconds on a monotonic clock (since this process first asked).
fn now_ms() -> u64 {
    static BASE: Publish<Instant> = Publish::new();
    let base = match BASE.get() {
        Some(base) => base,
        None => BASE.publish(Instant::now()).0,
    };
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One page mapped shared and anonymous: a forked child shares it with
/// its parent, nobody else sees it (a datagram socket's receive epoch,
/// `sockets::datagram::inbox`).
pub(crate) struct ForkShared {
    words: Words,
}

const FORK_SHARED_LEN: usize = 4096;

impl ForkShared {
    pub(crate) fn new() -> Result<ForkShared, rustix::io::Errno> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // no Rust object refers to it yet.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                FORK_SHARED_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )
        }?;
        let base = NonNull::new(p.cast::<u8>()).ok_or(rustix::io::Errno::NOMEM)?;
        // SAFETY: page-aligned, FORK_SHARED_LEN bytes, unmapped only in
        // Drop, and reached only through `Words`' atomics.
        let words = unsafe { Words::new(base, FORK_SHARED_LEN) };
        Ok(ForkShared { words })
    }

    /// Word `i` (0 or 1).
    pub(crate) fn word(&self, i: usize) -> &AtomicU64 {
        self.words.u64_at((i & 1) * 8).expect("a word of the page")
    }
}

impl Drop for ForkShared {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of that length; no reference to it
        // outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.words.base().as_ptr().cast(), FORK_SHARED_LEN) };
    }
}
