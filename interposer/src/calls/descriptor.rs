//! Descriptor lifetime: close, dup, dup2, dup3, close_range, closefrom,
//! fclose, and the stale-entry check after every call that creates an fd.
//!
//! These keep the fd table (and the log file's fd) in step with the
//! kernel's descriptor table. The app-visible fd of an emulated socket is
//! always a real kernel object, so the real call always runs too.
//!
//! Closes we cannot see: glibc closes internally, past our `close` export
//! (`__close_nocancel` in fclose, `close_range` inside closefrom, closes in
//! other libc functions), and so does a raw system call. The fd
//! number then stays marked as ours while the kernel may hand it out again,
//! and calls on the new file would go into the old connection's ring. The
//! common ways in are hooked (`fclose`, `closefrom`, and libc's
//! `syscall()` for the descriptor calls: libuv, hence Node.js, closes with
//! `syscall(SYS_close)`); for the rest, every
//! hooked call that creates an fd checks the number it got back ([`fresh`]):
//! if the table still marks it, the entry is stale and is released.
#![forbid(unsafe_code)]

use core::ffi::{c_int, c_long, c_uint};

use crate::calls::options;
use crate::platform::fdtable::{self, Handle};
use crate::platform::real::{self, Action};
use crate::platform::{file_kinds, log, sys};
use crate::sockets::registry;

/// The kernel closes the fd even when close() reports EINTR/EIO on Linux,
/// so the entry is released first.
pub(crate) fn close(fd: c_int) -> Action<c_int> {
    if fdtable::is_internal(fd) {
        // One of ours (a doorbell, a port reservation), not the caller's:
        // to the application it does not exist.
        log!(debug, "close({fd}): an fd of the library itself; left open");
        return Action::Fail(libc::EBADF);
    }
    log::forget_fd(fd);
    file_kinds::forget(fd);
    crate::sockets::datagram::pristine::closing(fd);
    crate::sockets::listener::early::forget(fd);
    crate::sockets::readiness::forget(fd);
    crate::sockets::carry::forget(fd);
    // A member of a set another thread may sleep on: that thread is woken
    // once the kernel's close is done (decision 44).
    let sets = if fdtable::is_owned(fd) {
        crate::sockets::readiness::closing(fd)
    } else {
        Vec::new() // (a file's close: no lock)
    };
    // A socket sharing a port: the others take its senders (see
    // `share_as_kernel`).
    let shared =
        registry::get(fd).and_then(|s| s.datagram().filter(|d| d.emulated()).map(|d| d.local()));
    if let Some(handle) = fdtable::table().remove(fd) {
        release(fd, handle);
    }
    if let Some(local) = shared {
        crate::calls::datagram::share_as_kernel(local);
    }
    if sets.is_empty() {
        return Action::Pass;
    }
    let r = real::ints::close(fd);
    crate::sockets::readiness::closed(&sets);
    Action::Raw(r)
}

/// A dup of an fd of ours shares its socket; of an epoll set of ours, it
/// is another number of that set.
pub(crate) fn dup(fd: c_int) -> Action<c_int> {
    crate::sockets::datagram::pristine::capture(fd);
    crate::sockets::carry::touched(fd);
    if crate::sockets::readiness::is_set(fd) {
        return options::share_set(fd, rustix::io::dup(sys::borrow_fd(fd)));
    }
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    let new = crate::sockets::spare_fds::retry(|| rustix::io::dup(sys::borrow_fd(fd)));
    options::share(new, sock)
}

pub(crate) fn dup2(old: c_int, new: c_int) -> Action<c_int> {
    crate::sockets::datagram::pristine::capture(old);
    crate::sockets::carry::touched(old);
    crate::sockets::carry::touched(new);
    if old != new {
        crate::sockets::listener::early::forget(new);
    }
    replace_target("dup2", old, new, || real::ints::dup2(old, new))
}

pub(crate) fn dup3(old: c_int, new: c_int, flags: c_int) -> Action<c_int> {
    crate::sockets::datagram::pristine::capture(old);
    crate::sockets::carry::touched(old);
    crate::sockets::carry::touched(new);
    if old != new {
        crate::sockets::listener::early::forget(new);
    }
    replace_target("dup3", old, new, || real::ints::dup3(old, new, flags))
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
    let set = crate::sockets::readiness::is_set(old);
    let source = registry::get(old);
    if old == new || (source.is_none() && !set && !fdtable::is_owned(new) && !log::is_log_fd(new)) {
        return Action::Pass;
    }
    // A member of a set another thread may sleep on: woken once the
    // kernel closed it (decision 44).
    let sets = if fdtable::is_owned(new) {
        crate::sockets::readiness::closing(new)
    } else {
        Vec::new()
    };
    // The doorbell stops using `new` before the kernel re-points it.
    let result = registry::while_replacing(new, real_call);
    if result >= 0 && !sets.is_empty() {
        crate::sockets::readiness::closed(&sets);
    }
    if result >= 0 {
        log::forget_fd(new);
        crate::sockets::readiness::forget(new);
        if let Some(handle) = fdtable::table().remove(new) {
            release(new, handle);
        }
        if set {
            // Another number of that epoll set (`readiness::alias`).
            crate::sockets::readiness::alias(old, new);
        }
        if let Some(sock) = source {
            crate::calls::options::inheritable_copy(new, &sock);
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
    let mut sets = Vec::new();
    if (flags as c_uint) & libc::CLOSE_RANGE_CLOEXEC == 0 {
        log::forget_fd_range(first, last);
        file_kinds::forget_range(clamp_fd(first), clamp_fd(last));
        crate::sockets::datagram::pristine::forget_range(clamp_fd(first), clamp_fd(last));
        crate::sockets::listener::early::forget_range(clamp_fd(first), clamp_fd(last));
        crate::sockets::readiness::forget_range(clamp_fd(first), clamp_fd(last));
        sets = crate::sockets::readiness::closing_range(clamp_fd(first), clamp_fd(last));
        fdtable::table().remove_range(first, last, release);
    }
    // Releasing sockets above may have closed internal fds; the rest must
    // survive: split the real call around them.
    let r = match around_internal(first, last, |a, b| real::ints::close_range(a, b, flags)) {
        Some(r) => r,
        None if sets.is_empty() => return Action::Pass,
        None => real::ints::close_range(first, last, flags),
    };
    // Members of sets other threads may sleep on: woken now (decision 44).
    crate::sockets::readiness::closed(&sets);
    Action::Raw(r)
}

/// An fd number of close_range's unsigned range, as an int (saturated).
fn clamp_fd(fd: c_uint) -> c_int {
    c_int::try_from(fd).unwrap_or(c_int::MAX)
}

/// Runs `call` on the sub-ranges of `first..=last` that hold none of the
/// library's own fds; None if there are none in range (call it whole).
fn around_internal(
    first: c_uint,
    last: c_uint,
    mut call: impl FnMut(c_uint, c_uint) -> c_int,
) -> Option<c_int> {
    let ours = fdtable::internal_in(first, last);
    if ours.is_empty() {
        return None;
    }
    let mut next = first;
    for fd in ours {
        let fd = fd as c_uint;
        if fd > next {
            let r = call(next, fd - 1);
            if r < 0 {
                return Some(r);
            }
        }
        next = fd + 1;
    }
    if next <= last && next != 0 {
        return Some(call(next, last));
    }
    Some(0)
}

/// glibc's closefrom closes with an internal close_range (past our export).
pub(crate) fn closefrom(lowfd: c_int) -> Action<()> {
    let first = c_uint::try_from(lowfd).unwrap_or(0);
    log::forget_fd_range(first, c_uint::MAX);
    file_kinds::forget_range(clamp_fd(first), c_int::MAX);
    crate::sockets::datagram::pristine::forget_range(clamp_fd(first), c_int::MAX);
    crate::sockets::listener::early::forget_range(clamp_fd(first), c_int::MAX);
    crate::sockets::readiness::forget_range(clamp_fd(first), c_int::MAX);
    let sets = crate::sockets::readiness::closing_range(clamp_fd(first), c_int::MAX);
    fdtable::table().remove_range(first, c_uint::MAX, release);
    // As close_range: keep the library's own fds.
    match around_internal(first, c_uint::MAX, |a, b| real::ints::close_range(a, b, 0)) {
        Some(_) => {}
        None if sets.is_empty() => return Action::Pass,
        None => {
            real::ints::close_range(first, c_uint::MAX, 0);
        }
    }
    crate::sockets::readiness::closed(&sets);
    Action::Done(())
}

/// fclose closes the stream's fd with glibc's internal close: release the
/// entry first, as `close` does (the fd is closed even if the flush fails).
/// `fd` is `fileno(fp)`, read before the real fclose (-1 for a stream
/// without an fd).
pub(crate) fn fclose_fd(fd: c_int) -> Action<c_int> {
    close(fd)
}

/// libc's `syscall()` with a descriptor call's number runs that call's
/// logic, as if the program had called the libc function: libuv (Node.js)
/// closes every fd with `syscall(SYS_close, fd)`, and a close we do not
/// see would leave the connection open for its peer until exit. Other
/// numbers pass through untouched.
pub(crate) fn syscall(
    number: c_long,
    a: c_long,
    b: c_long,
    c: c_long,
    _d: c_long,
    _e: c_long,
    _f: c_long,
) -> Action<c_long> {
    // An fd argument the kernel would truncate to its low 32 bits.
    let fd = |v: c_long| v as c_int;
    let action = match number {
        libc::SYS_close => close(fd(a)),
        libc::SYS_close_range => close_range(a as c_uint, b as c_uint, c as c_int),
        libc::SYS_dup => dup(fd(a)),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_dup2 => dup2(fd(a), fd(b)),
        libc::SYS_dup3 => dup3(fd(a), fd(b), c as c_int),
        _ => return Action::Pass,
    };
    match action {
        Action::Pass => Action::Pass,
        Action::Done(v) => Action::Done(v.into()),
        Action::Fail(e) => Action::Fail(e),
        Action::Raw(v) => Action::Raw(v.into()),
    }
}

/// Whether `syscall(number, a, b, ...)` may concern an fd of ours (a
/// descriptor call on one of our fds, the log file or an fd of the
/// library's own); else the export calls libc at once. Lock- and
/// allocation-free: libc's own callers (jemalloc's initialisation) make
/// system calls through it while holding their locks.
pub(crate) fn syscall_is_ours(number: c_long, a: c_long) -> bool {
    let ours = |v: c_long| {
        let fd = v as c_int;
        fdtable::is_owned(fd) || fdtable::is_internal(fd) || log::is_log_fd(fd)
    };
    match number {
        libc::SYS_close => {
            file_kinds::forget(a as c_int);
            crate::sockets::datagram::pristine::forget(a as c_int);
            ours(a)
        }
        libc::SYS_recvmmsg => {
            ours(a) || crate::sockets::datagram::pristine::is_pristine(a as c_int)
        }
        // A process sandboxing itself (libseccomp's seccomp_load):
        // `calls::sandbox::seccomp`.
        libc::SYS_seccomp => matches!(
            a as u32,
            libc::SECCOMP_SET_MODE_STRICT | libc::SECCOMP_SET_MODE_FILTER
        ),
        // A kernel UDP socket becomes ours when it first sends to an
        // emulated destination.
        libc::SYS_sendmmsg => ours(a) || crate::calls::process::started(),
        // The number they make may hold a stale entry (`fresh`): ours
        // once anything is (nothing is before first-use initialisation,
        // which jemalloc's own system calls may precede).
        libc::SYS_dup | libc::SYS_dup3 | libc::SYS_close_range => crate::calls::process::started(),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_dup2 => crate::calls::process::started(),
        _ => false,
    }
}

/// `fresh` for `syscall()`: the descriptor calls that made an fd.
pub(crate) fn fresh_from_syscall(result: c_long, number: c_long, old: c_long) {
    let made = match number {
        libc::SYS_dup | libc::SYS_dup3 => true,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_dup2 => result != old,
        _ => false,
    };
    if made {
        if let Ok(fd) = c_int::try_from(result) {
            crate::sockets::stale::fresh(fd);
        }
    }
}

/// Calls that create fds and are otherwise none of our business: the real
/// call runs (`Action::Pass`); the export then checks what it created with
/// [`fresh`] (see the entries' `fresh` clauses in `hooks`).
macro_rules! creates_fds {
    ($($name:ident($($ty:ty),*);)*) => {
        $(
            pub(crate) fn $name($(_: $ty),*) -> Action<c_int> {
                Action::Pass
            }
        )*
    };
}

creates_fds! {
    open(*const core::ffi::c_char, c_int, c_uint);
    openat(c_int, *const core::ffi::c_char, c_int, c_uint);
    open_2(*const core::ffi::c_char, c_int);
    openat_2(c_int, *const core::ffi::c_char, c_int);
    creat(*const core::ffi::c_char, libc::mode_t);
    mkstemp(*mut core::ffi::c_char);
    mkostemp(*mut core::ffi::c_char, c_int);
    pipe(*mut c_int);
    pipe2(*mut c_int, c_int);
    eventfd(c_uint, c_int);
    epoll_create(c_int);
    epoll_create1(c_int);
    inotify_init();
    inotify_init1(c_int);
    memfd_create(*const core::ffi::c_char, c_uint);
    timerfd_create(c_int, c_int);
    signalfd(c_int, *const libc::sigset_t, c_int);
}

/// Drops this fd's reference to its socket; the last reference in the
/// process tells the peer (see `Connection`'s Drop).
fn release(fd: c_int, handle: Handle) {
    log!(debug, "fd {fd} closed, releasing {handle:?}");
    if let Some(sock) = registry::release_fd(fd, handle) {
        crate::calls::options::closed_copy(&sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle no slab slot matches: releasing it finds nothing to drop.
    fn fake() -> Handle {
        Handle::new(u32::MAX - 1, 7).unwrap()
    }

    #[test]
    fn closefrom_forgets_the_range() {
        for fd in [5002, 5003] {
            fdtable::table().insert(fd, fake()).unwrap();
        }
        assert!(matches!(closefrom(5003), Action::Pass));
        assert!(fdtable::is_owned(5002));
        assert!(!fdtable::is_owned(5003));
        assert!(matches!(fclose_fd(5002), Action::Pass));
        assert!(!fdtable::is_owned(5002));
    }
}
