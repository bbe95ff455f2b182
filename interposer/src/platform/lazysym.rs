//! Resolution of the real libc functions.
//!
//! One table (generated next to the exports in `hooks.rs` from the single
//! symbol list) holds a [`LazySym`] per function. Each resolves itself with
//! `dlsym(RTLD_NEXT)` on first use — not all at once in a constructor:
//! hooks can run before our constructor, and socket_wrapper found that
//! binding everything during library initialisation breaks gdb/valgrind.
//! The fork `prepare` handler resolves everything, so a child never needs
//! dlsym (whose loader lock another thread may have held at fork).
//!
//! No `OnceLock`: two threads may race to resolve the same symbol; both get
//! the same answer and store it (socket_wrapper makes the same choice).
#![forbid(unsafe_code)]

use core::ffi::{c_void, CStr};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::platform::{guard, sys};

/// Marks "looked up, not found" so a missing symbol is not looked up again.
static MISSING: u8 = 0;

fn missing() -> *mut c_void {
    ptr::addr_of!(MISSING).cast_mut().cast()
}

/// One lazily resolved libc function.
pub(crate) struct LazySym {
    name: &'static CStr,
    ptr: AtomicPtr<c_void>,
}

impl LazySym {
    pub(crate) const fn new(name: &'static CStr) -> Self {
        LazySym {
            name,
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The function's address, or `None` if libc lacks it (the hook then
    /// fails with ENOSYS instead of crashing).
    #[inline]
    pub(crate) fn get(&self) -> Option<*mut c_void> {
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            return self.resolve();
        }
        (p != missing()).then_some(p)
    }

    #[cold]
    fn resolve(&self) -> Option<*mut c_void> {
        // dlsym may allocate or, in principle, call something we hook: keep
        // those nested calls on the direct path. (None: already inside.)
        let _inside = guard::enter("dlsym");
        let found = sys::dlsym_next(self.name);
        let stored = if found.is_null() { missing() } else { found };
        self.ptr.store(stored, Ordering::Release);
        (!found.is_null()).then_some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_once_and_remembers_missing() {
        let write = LazySym::new(c"write");
        let first = write.get().expect("libc has write");
        assert_eq!(write.get(), Some(first));
        let nope = LazySym::new(c"shmnet_no_such_function");
        assert_eq!(nope.get(), None);
        assert_eq!(nope.ptr.load(Ordering::Relaxed), missing());
        assert_eq!(nope.get(), None);
    }
}
