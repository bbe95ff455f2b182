//! Socket options and fd modes (getsockopt/setsockopt, fcntl, ioctl).
//!
//! An emulated socket answers getsockopt as a kernel TCP socket in the same
//! state answers it (value, length, errno), by asking the kernel: a fresh
//! TCP socket of the same family (a *replica*) gets every option the
//! application set replayed onto it and answers the question with the
//! caller's own buffer and length. Only what depends on the connection's
//! state is answered here: SO_ERROR, SO_ACCEPTCONN, SO_PEERNAME,
//! SO_SNDBUF's growth on an established connection, SO_COOKIE (stable per
//! socket), SO_INCOMING_CPU, TCP_INFO (from the ring positions), TCP_MAXSEG,
//! TCP_WINDOW_CLAMP, IP_MTU/IPV6_MTU/IPV6_PATHMTU (loopback's), with the
//! kernel's rules for short and negative lengths at each level.
//!
//! setsockopt is tried on a replica first, so a value the kernel refuses
//! fails with the kernel's errno, and the option is remembered only if the
//! kernel took it. A few options are checked against the socket's state as
//! the kernel does (IPV6_V6ONLY after bind, TCP_FASTOPEN on a connection).
//! The most common ones (TCP_NODELAY, SO_KEEPALIVE, SO_REUSEADDR,
//! SO_REUSEPORT, TCP_CORK) are checked here without a replica: they are set
//! on every connection by many programs. SO_RCVTIMEO/SO_SNDTIMEO also
//! bound our blocking waits. An accepted connection starts with its
//! listener's options, as the kernel's accepted sockets do.
//!
//! O_NONBLOCK (F_SETFL, FIONBIO) is set on the real kernel object behind
//! the fd, where the data path reads it.
#![forbid(unsafe_code)]

use core::ffi::{c_int, c_ulong};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use crate::platform::real::Action;
use crate::platform::sys::{self, IntOut, OptIn};
use crate::sockets::registry;
use crate::sockets::socket::Socket;

pub(crate) mod replica;
pub(crate) use replica::*;
mod get;
pub(crate) use get::*;
mod tcp_info;
pub(crate) use tcp_info::*;

// Option names the libc crate may not have.
const SO_ATTACH_BPF: c_int = 50;
const SO_ATTACH_REUSEPORT_CBPF: c_int = 51;
const SO_ATTACH_REUSEPORT_EBPF: c_int = 52;
const SO_DETACH_REUSEPORT_BPF: c_int = 68;
use crate::sockets::options_store::SO_COOKIE;
const SO_MEMINFO: c_int = 55;
const SO_INCOMING_CPU: c_int = 49;
const SO_PEERNAME: c_int = 28;
const TCP_FASTOPEN_CONNECT: c_int = 30;
const TCP_ULP: c_int = 31;
const IPV6_PATHMTU: c_int = 61;
const IP_PROTOCOL: c_int = 52;
const TCP_CC_INFO: c_int = 26;

pub(crate) fn setsockopt(fd: c_int, level: c_int, name: c_int, value: OptIn<'_>) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        crate::sockets::carry::touched(fd);
        return Action::Pass;
    };
    let len = value.len();
    if (len as c_int) < 0 {
        return Action::Fail(libc::EINVAL);
    }
    if len > 0 && value.is_null() {
        return Action::Fail(libc::EFAULT);
    }
    if let Some(d) = sock.datagram() {
        // Its own kernel UDP socket takes (or refuses) every option.
        if let Err(e) = value.to_kernel(d.kernel(), level, name) {
            return Action::Fail(e);
        }
        if level == libc::SOL_SOCKET {
            // SO_RCVBUF is the receive limit; SO_RCVTIMEO bounds waits.
            d.refresh_limit();
        }
        crate::calls::datagram::after_option(fd, &sock);
        return Action::Done(0);
    }
    if let Some(tcp) = kernel_listener(&sock) {
        if let Err(e) = value.to_kernel(sys::borrow_fd(tcp), level, name) {
            return Action::Fail(e);
        }
        if (len as usize) <= REPLAY_CAP {
            // Remembered for the connections it accepts over shared memory
            // (the kernel's accepted sockets inherit them).
            if let Ok(bytes) = value.read(len as usize) {
                sock.options().set(level, name, &bytes);
            }
        }
        return Action::Done(0);
    }
    let n = (len as usize).min(REPLAY_CAP);
    let bytes = match value.read(n) {
        Ok(bytes) => bytes,
        Err(e) => return Action::Fail(e),
    };
    let bytes = &bytes[..];
    if let Some(done) = set_without_replica(&sock, level, name, bytes) {
        return done;
    }
    let Some(rep) = replica(sock.family(), sock.options()) else {
        if crate::platform::sandbox::active() && n == len as usize {
            // Unchecked: remembered as given.
            sock.options().set(level, name, bytes);
            return Action::Done(0);
        }
        return Action::Fail(libc::ENOBUFS);
    };
    let tried = if n == len as usize {
        sys::sockopt_set(rep.as_fd(), level, name, bytes)
    } else {
        // Too long to keep: the kernel checks it, it is not replayed.
        match value.to_kernel(rep.as_fd(), level, name) {
            Ok(()) => return Action::Done(0),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = tried {
        return Action::Fail(e);
    }
    // Only on a socket that has not connected yet (the replica has not).
    if level == libc::IPPROTO_TCP && name == TCP_FASTOPEN_CONNECT && sock.bound().is_none() {
        return Action::Fail(libc::EINVAL);
    }
    sock.options().set(level, name, bytes);
    Action::Done(0)
}

/// The options decided without asking a replica: the common flags (the
/// kernel takes any int) and those the socket's state refuses.
fn set_without_replica(
    sock: &Socket,
    level: c_int,
    name: c_int,
    bytes: &[u8],
) -> Option<Action<c_int>> {
    let stream = sock.connection().is_some();
    Some(match (level, name) {
        // Common flags: the kernel takes any int.
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE | libc::SO_REUSEADDR | libc::SO_REUSEPORT)
        | (libc::IPPROTO_TCP, libc::TCP_NODELAY | libc::TCP_CORK) => {
            if bytes.len() < 4 {
                return Some(Action::Fail(libc::EINVAL));
            }
            sock.options().set(level, name, bytes);
            Action::Done(0)
        }
        // Only before bind (inet_num set): ours are all bound.
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) if sock.family() == libc::AF_INET6 => {
            Action::Fail(libc::EINVAL)
        }
        // Only on a closed or listening socket.
        (libc::IPPROTO_TCP, libc::TCP_FASTOPEN) if stream => Action::Fail(libc::EINVAL),
        // No upper-layer protocol (kernel TLS) over shared memory: as a
        // kernel without the module.
        (libc::IPPROTO_TCP, TCP_ULP) if stream => Action::Fail(libc::ENOENT),
        _ => return None,
    })
}

/// `fcntl` and `fcntl64`. F_DUPFD/F_DUPFD_CLOEXEC of an fd of ours share
/// its socket; everything else acts on the real object behind the fd.
pub(crate) fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> Action<c_int> {
    if cmd == libc::F_SETFD {
        mirror_cloexec(fd, arg as c_int & libc::FD_CLOEXEC != 0);
        return Action::Pass;
    }
    if let Some(done) = crate::calls::datagram::fcntl_async(fd, cmd, arg as c_int) {
        return done;
    }
    if cmd == libc::F_SETFL {
        return set_flags(fd, arg as c_int);
    }
    if cmd != libc::F_DUPFD && cmd != libc::F_DUPFD_CLOEXEC {
        return Action::Pass;
    }
    crate::sockets::datagram::pristine::capture(fd);
    crate::sockets::carry::touched(fd);
    let set = crate::sockets::readiness::is_set(fd);
    let sock = registry::get(fd);
    if sock.is_none() && !set {
        return Action::Pass;
    }
    let min = c_int::try_from(arg).unwrap_or(c_int::MAX);
    let new = crate::sockets::spare_fds::retry(|| {
        rustix::io::fcntl_dupfd_cloexec(sys::borrow_fd(fd), min)
    });
    // rustix has no plain F_DUPFD: dup, then clear close-on-exec.
    let new = if cmd == libc::F_DUPFD_CLOEXEC {
        new
    } else {
        new.and_then(|f| rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::empty()).map(|()| f))
    };
    match sock {
        Some(sock) => share(new, sock),
        None => share_set(fd, new),
    }
}

/// `new`, a dup of the epoll set of ours under `old`: another number of
/// that set (`readiness::alias`), whose waits our epoll_wait answers too.
pub(crate) fn share_set(
    old: c_int,
    new: rustix::io::Result<std::os::fd::OwnedFd>,
) -> Action<c_int> {
    use std::os::fd::IntoRawFd;
    match new {
        Ok(f) => {
            let new = f.into_raw_fd();
            // (What the export's `fresh` does for a dup that passes
            // through.)
            crate::sockets::stale::fresh_inside(new);
            crate::sockets::readiness::alias(old, new);
            Action::Done(new)
        }
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

/// The application is setting `fd`'s close-on-exec flag (set_inheritable,
/// F_SETFD, FIOCLEX/FIONCLEX): see `refresh_cloexec`.
fn mirror_cloexec(fd: c_int, cloexec: bool) {
    if let Some(sock) = registry::get(fd) {
        refresh_cloexec(&sock, Some((fd, cloexec)));
    }
}

/// A listener's parts (a connection's carrier, once it has one) go across
/// exec exactly when one of the application's fds for it does (its other
/// fds looked at as they are, `changing` as it is about to be). A scan of
/// the fd table: only when a copy of such an fd is closed or has its flag
/// set.
pub(crate) fn refresh_cloexec(sock: &Arc<Socket>, changing: Option<(c_int, bool)>) {
    // A sandboxed process makes no carriers (`exec::before_exec`), and
    // may be killed for the fcntl this needs (found by review).
    if sock.bound().is_some() || crate::platform::sandbox::active() {
        return;
    }
    let limit = crate::platform::internal_fd::nofile_limit()
        .map_or(crate::platform::fdtable::CAPACITY, |n| n as usize)
        .min(crate::platform::fdtable::CAPACITY);
    let inheritable = |fd: c_int| match changing {
        Some((changed, cloexec)) if changed == fd => !cloexec,
        _ => rustix::io::fcntl_getfd(sys::borrow_fd(fd))
            .is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC)),
    };
    let any = (0..limit as c_int).any(|fd| {
        crate::platform::fdtable::table().get(fd).is_some()
            && registry::get(fd).is_some_and(|s| Arc::ptr_eq(&s, sock))
            && inheritable(fd)
    });
    sock.set_cloexec(!any);
}

/// `fd`, a new copy of `sock`'s fd (dup, dup2, F_DUPFD), goes across exec:
/// then so must the listener's parts (a supervisor dup2()s a listener onto
/// fd 3 for the program it runs, as socket activation does), or the
/// connection's carrier (a forked child dup2()s it onto 0 and 1: made
/// before its exec, `exec::before_exec`).
pub(crate) fn inheritable_copy(fd: c_int, sock: &Socket) {
    if sock.bound().is_none() && !crate::platform::sandbox::active() {
        let cloexec = rustix::io::fcntl_getfd(sys::borrow_fd(fd))
            .map_or(true, |f| f.contains(rustix::io::FdFlags::CLOEXEC));
        if !cloexec {
            sock.set_cloexec(false);
        }
    }
}

/// A listener's or connection's fd was closed while others remain: its
/// parts stay inheritable only if one of those is (see `refresh_cloexec`).
pub(crate) fn closed_copy(sock: &Arc<Socket>) {
    if sock.bound().is_none() && Arc::strong_count(sock) > 1 {
        refresh_cloexec(sock, None);
    }
}

/// A default-mode listener's kernel TCP listener, which answers for it.
fn kernel_listener(sock: &Socket) -> Option<c_int> {
    match sock {
        Socket::Listener(l) => l.tcp().map(|t| t.as_raw_fd()),
        _ => None,
    }
}

/// F_SETFL: the kernel's, on the application's fd. A connection of a
/// sandboxed process keeps the mode set: it cannot ask for it under the
/// filter (`Connection::nonblocking`: it took the forgotten mode for
/// blocking, and a send on a full ring waited for ever).
fn set_flags(fd: c_int, flags: c_int) -> Action<c_int> {
    if !crate::platform::sandbox::active() {
        forget_nonblocking(fd);
        return Action::Pass;
    }
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    // (The program's own call, which its filter lets through or not.)
    let set = rustix::fs::fcntl_setfl(
        sys::borrow_fd(fd),
        rustix::fs::OFlags::from_bits_retain(flags as u32),
    );
    match set {
        Ok(()) => {
            nonblocking_set(&sock, flags & libc::O_NONBLOCK != 0);
            Action::Done(0)
        }
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

/// FIONBIO on `fd` made (`result`, the real ioctl's) with `on` (its
/// argument, read only when it succeeded): as `set_flags`.
pub(crate) fn fionbio_done(fd: c_int, result: c_int, on: impl FnOnce() -> Option<c_int>) {
    if result != 0 || !crate::platform::sandbox::active() {
        return;
    }
    if let (Some(sock), Some(on)) = (registry::get(fd), on()) {
        nonblocking_set(&sock, on != 0);
    }
}

/// A sandboxed process set O_NONBLOCK of an fd of ours to `nb`.
fn nonblocking_set(sock: &Socket, nb: bool) {
    if let Some(c) = sock.connection() {
        c.set_nonblocking(nb);
    } else if let Some(d) = sock.datagram() {
        d.forget_nonblocking();
    }
}

/// A connection remembers O_NONBLOCK; the application just changed it.
fn forget_nonblocking(fd: c_int) {
    let Some(sock) = registry::get(fd) else {
        return;
    };
    if let Some(c) = sock.connection() {
        c.forget_nonblocking();
    } else if let Some(d) = sock.datagram() {
        d.forget_nonblocking();
    }
}

/// Registers a new fd that refers to the same socket.
pub(crate) fn share(
    new: rustix::io::Result<std::os::fd::OwnedFd>,
    sock: Arc<Socket>,
) -> Action<c_int> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    match new {
        Ok(f) => {
            inheritable_copy(f.as_raw_fd(), &sock);
            if registry::insert(f.as_raw_fd(), sock).is_err() {
                return Action::Fail(libc::EMFILE);
            }
            Action::Done(f.into_raw_fd())
        }
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

/// FIONREAD counts the ring's bytes; FIONBIO and the rest act on the real
/// object behind the fd.
/// `ioctl`; `fionread` is FIONREAD's argument (None for other requests).
pub(crate) fn ioctl(fd: c_int, request: c_ulong, fionread: Option<IntOut<'_>>) -> Action<c_int> {
    if request == libc::FIONBIO as c_ulong {
        forget_nonblocking(fd);
        return Action::Pass;
    }
    if request == libc::FIOCLEX as c_ulong || request == libc::FIONCLEX as c_ulong {
        mirror_cloexec(fd, request == libc::FIOCLEX as c_ulong);
        return Action::Pass;
    }
    let Some(arg) = fionread else {
        return Action::Pass;
    };
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    let available = match sock.datagram() {
        Some(d) => Some(d.next_len()),
        None => sock.connection().map(|c| c.available()),
    };
    let Some(n) = available else {
        return Action::Fail(libc::EINVAL);
    };
    match arg.put(c_int::try_from(n).unwrap_or(c_int::MAX)) {
        Ok(()) => Action::Done(0),
        Err(e) => Action::Fail(e),
    }
}
