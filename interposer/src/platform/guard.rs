//! The per-thread re-entry guard.
//!
//! While a thread runs library code, every hooked call it makes (from std, the
//! allocator, dlsym, our own helpers) must go straight to libc, or we would
//! recurse into ourselves. The flag is a `const`-initialised `Cell` without a
//! destructor: it needs no lazy registration, never allocates, and stays
//! usable while pthread key destructors run at thread exit (where
//! destructor-bearing thread-locals are already gone). `try_with` covers the
//! remaining "TLS unavailable" case by treating it as nested.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::marker::PhantomData;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// Name of the outermost hooked call, for the panic line.
    static CALL: Cell<&'static str> = const { Cell::new("") };
}

/// Proof that this thread is inside the library; leaving drops it.
///
/// Not `Send`: the flag belongs to the thread that set it.
pub(crate) struct Inside {
    _thread_bound: PhantomData<*const ()>,
}

/// Enter the library for the hooked call `call`; `None` when this thread is
/// already inside (nested call) or its TLS is unavailable.
pub(crate) fn enter(call: &'static str) -> Option<Inside> {
    let first = INSIDE.try_with(|inside| !inside.replace(true)).ok()?;
    if !first {
        return None;
    }
    let _ = CALL.try_with(|c| c.set(call));
    Some(Inside {
        _thread_bound: PhantomData,
    })
}

/// The outermost hooked call this thread is in ("" when none).
pub(crate) fn current_call() -> &'static str {
    CALL.try_with(Cell::get).unwrap_or("")
}

/// Whether this thread is inside the library (not in a `suspended` wait):
/// a signal handler that comes now is put off until it leaves
/// (`putoff`).
pub(crate) fn inside() -> bool {
    INSIDE.try_with(Cell::get).unwrap_or(false)
}

/// Runs `f` (a blocking call into libc) as if this thread were outside the
/// library, so that a signal handler interrupting it may use our sockets.
/// `f` must hold no lock of ours and call nothing hooked. Handlers put off
/// while the thread was inside run first: blocked, they would not end the
/// wait.
pub(crate) fn suspended<R>(f: impl FnOnce() -> R) -> R {
    let call = current_call();
    let was = INSIDE
        .try_with(|inside| inside.replace(false))
        .unwrap_or(false);
    crate::platform::putoff::run();
    let r = f();
    let _ = INSIDE.try_with(|inside| inside.set(was));
    let _ = CALL.try_with(|c| c.set(call));
    r
}

impl Inside {
    /// Leaves the library without running the handlers put off meanwhile:
    /// the caller runs them (`putoff::run`) once the rest
    /// of the thread's state (its cancellation state) is the program's
    /// again, so that a siglongjmp out of one leaves nothing of ours set.
    pub(crate) fn leave(self) {
        out();
        core::mem::forget(self);
    }
}

fn out() {
    let _ = INSIDE.try_with(|inside| inside.set(false));
    let _ = CALL.try_with(|c| c.set(""));
}

impl Drop for Inside {
    /// Leaves the library; the handlers put off meanwhile run now.
    fn drop(&mut self) {
        out();
        crate::platform::putoff::run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_enter_is_refused_until_exit() {
        let outer = enter("read").expect("first entry");
        assert_eq!(current_call(), "read");
        assert!(enter("write").is_none());
        drop(outer);
        assert_eq!(current_call(), "");
        assert!(enter("write").is_some());
    }

    #[test]
    fn flag_is_per_thread() {
        let _outer = enter("read").expect("first entry");
        let other = std::thread::spawn(|| enter("write").is_some());
        assert!(other.join().unwrap());
    }
}
