//! Fds closed past the library (a libc-internal close, a raw system call)
//! whose numbers the kernel gave out again: every hooked call that creates
//! fds checks the fd it returns (`fresh`), so a stale fd-table entry is
//! released before the new object could be taken for the old socket.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::panic::{self, AssertUnwindSafe};

use crate::platform::{fdtable, file_kinds, guard, sys};
use crate::sockets::registry;

/// A hooked call passed through and returned `fd` as a new descriptor. If
/// the fd table still marks that number as ours, the close that freed it
/// went past us (see the module docs) and the entry is stale: release it,
/// so the new object is not taken for the old socket. Runs after the real
/// call, outside `dispatch`'s guard; a nested call (our own code creating
/// an fd) skips the check, and the next outer call on the number makes it.
/// The fast path is one atomic load; errno stays as libc set it.
#[inline]
pub(crate) fn fresh(fd: c_int) {
    crate::platform::pocket::saw(fd);
    if fdtable::is_owned(fd) {
        stale(fd);
    }
    file_kinds::forget(fd);
    crate::sockets::datagram::pristine::forget(fd);
    // An epoll set known under this number is gone (dup2 onto it, or a
    // close we did not see).
    crate::sockets::readiness::forget(fd);
    crate::sockets::carry::forget(fd);
}

/// `fresh` for epoll_create and epoll_create1: the set is new to
/// `readiness` too.
pub(crate) fn fresh_epoll(fd: c_int) {
    fresh(fd);
    crate::sockets::readiness::epoll_made(fd);
}

/// `fresh` for fcntl: only F_DUPFD and F_DUPFD_CLOEXEC return an fd (the
/// other commands return flags, counts, owners...).
#[inline]
pub(crate) fn fresh_if_dup(result: c_int, cmd: c_int) {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        fresh(result);
    }
}

/// `fresh` for an fd a hook's own logic made (accept): it runs inside the
/// hook's guard already, where `fresh`'s release would be skipped.
pub(crate) fn fresh_inside(fd: c_int) {
    crate::platform::pocket::saw(fd);
    if fdtable::is_owned(fd) {
        release_stale(fd);
    }
    file_kinds::forget(fd);
    crate::sockets::datagram::pristine::forget(fd);
    crate::sockets::readiness::forget(fd);
    crate::sockets::carry::forget(fd);
}

fn release_stale(fd: c_int) {
    if let Some(handle) = fdtable::table().remove(fd) {
        log!(
            debug,
            "fd {fd} was closed past libshmnet (a libc-internal close or a raw \
             syscall) and the kernel reused it; releasing the stale {handle:?}"
        );
        drop(registry::release_fd(fd, handle));
    }
}

#[cold]
#[inline(never)]
fn stale(fd: c_int) {
    let Some(_inside) = guard::enter("stale fd check") else {
        return;
    };
    let saved = sys::errno();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| release_stale(fd)));
    if let Err(payload) = outcome {
        core::mem::forget(payload); // the panic hook wrote the line
    }
    sys::set_errno(saved);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle no slab slot matches: releasing it finds nothing to drop.
    fn fake() -> fdtable::Handle {
        fdtable::Handle::new(u32::MAX - 1, 7).unwrap()
    }

    #[test]
    fn fresh_releases_a_stale_entry_and_keeps_errno() {
        let fd = 5000;
        fdtable::table().insert(fd, fake()).unwrap();
        sys::set_errno(libc::EXDEV);
        fresh(fd);
        assert!(!fdtable::is_owned(fd));
        assert_eq!(sys::errno(), libc::EXDEV);
        fresh(-1); // failed calls return -1: nothing to look at
        assert_eq!(sys::errno(), libc::EXDEV);
    }

    #[test]
    fn fcntl_results_are_fds_only_for_dupfd() {
        let fd = 5001;
        fdtable::table().insert(fd, fake()).unwrap();
        fresh_if_dup(fd, libc::F_GETFL); // a flags word that equals the fd
        assert!(fdtable::is_owned(fd));
        fresh_if_dup(fd, libc::F_DUPFD_CLOEXEC);
        assert!(!fdtable::is_owned(fd));
    }
}
