//! Descriptor lifetime: close, dup, dup2, dup3, close_range.
//!
//! These keep the fd table (and the log file's fd) in step with the
//! kernel's descriptor table. The app-visible fd of an emulated socket is
//! always a real kernel object, so the real call always runs too.
#![deny(unsafe_code)]

use core::ffi::{c_int, c_uint};

use crate::fdtable::{self, Handle};
use crate::hooks::{real, Action};
use crate::{log, options, registry, sys};

/// The kernel closes the fd even when close() reports EINTR/EIO on Linux,
/// so the entry is released first.
pub(crate) fn close(fd: c_int) -> Action<c_int> {
    log::forget_fd(fd);
    if let Some(handle) = fdtable::table().remove(fd) {
        release(fd, handle);
    }
    Action::Pass
}

/// A dup of an fd of ours shares its socket.
pub(crate) fn dup(fd: c_int) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    options::share(rustix::io::dup(sys::borrow_fd(fd)), sock)
}

pub(crate) fn dup2(old: c_int, new: c_int) -> Action<c_int> {
    replace_target("dup2", old, new, || {
        #[allow(unsafe_code)]
        // SAFETY: dup2 takes two integers; no memory is passed.
        unsafe {
            real::dup2(old, new)
        }
    })
}

pub(crate) fn dup3(old: c_int, new: c_int, flags: c_int) -> Action<c_int> {
    replace_target("dup3", old, new, || {
        #[allow(unsafe_code)]
        // SAFETY: dup3 takes three integers; no memory is passed.
        unsafe {
            real::dup3(old, new, flags)
        }
    })
}

/// dup2/dup3 close `new` only if they succeed (a bad `old` leaves it open),
/// so when `new` is ours or our log file the real call runs here and the
/// entry is released after success.
fn replace_target(
    call: &str,
    old: c_int,
    new: c_int,
    real_call: impl FnOnce() -> c_int,
) -> Action<c_int> {
    let source = registry::get(old);
    if old == new || (source.is_none() && !fdtable::is_owned(new) && !log::is_log_fd(new)) {
        return Action::Pass;
    }
    let result = real_call();
    if result >= 0 {
        log::forget_fd(new);
        if let Some(handle) = fdtable::table().remove(new) {
            release(new, handle);
        }
        if let Some(sock) = source {
            if registry::insert(new, sock).is_err() {
                log!(
                    error,
                    "{call}({old}, {new}): fd beyond the table; the copy is not emulated"
                );
            }
        }
    }
    Action::Raw(result)
}

/// Python's subprocess child calls `close_range(3, ~0U, 0)` before exec.
/// With CLOSE_RANGE_CLOEXEC nothing is closed now (exec drops our state).
pub(crate) fn close_range(first: c_uint, last: c_uint, flags: c_int) -> Action<c_int> {
    if (flags as c_uint) & libc::CLOSE_RANGE_CLOEXEC == 0 {
        log::forget_fd_range(first, last);
        fdtable::table().remove_range(first, last, release);
    }
    Action::Pass
}

/// Drops this fd's reference to its socket; the last reference in the
/// process tells the peer (see `Connection`'s Drop).
fn release(fd: c_int, handle: Handle) {
    log!(debug, "fd {fd} closed, releasing {handle:?}");
    drop(registry::release(handle));
}
