//! Argument decoding: each hooked call whose arguments point into the
//! caller's memory gets its pointers wrapped here, under that call's C
//! contract, into the typed handles of `platform::sys::caller`, so that
//! the logic in `calls` holds no raw pointer it could misuse and needs no
//! `unsafe`. A handle makes a slice only when the logic asks for one (after
//! it decided the fd is ours): wrapping a pointer costs nothing.
#![allow(unsafe_code)]

use core::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

use libc::{iovec, mmsghdr, msghdr, off_t, size_t, sockaddr, socklen_t, ssize_t};

use libc::{epoll_event, fd_set, nfds_t, pollfd, sigset_t, timespec, timeval};

use crate::calls::iomux::{epoll, poll, select};
use crate::calls::plain_exec::{NewImage, Program};
use crate::calls::{datagram, endpoint, options, passing, process, stream};
use crate::platform::real::Action;
use crate::platform::sys;
use crate::platform::sys::{
    AddrIn, AddrOut, EpollOut, EventIn, FdSet, FileOffset, InBuf, InIovecs, InMsg, IntOut, Mmsgs,
    OptIn, OptOut, OutBuf, OutIovecs, OutLen, OutMsg, PollFds, Scope, SeccompProg, SigMask, TimeIn,
    TimeInOut,
};

/// prctl: PR_SET_SECCOMP with SECCOMP_MODE_FILTER carries a filter
/// program, which the logic reads.
pub(crate) fn prctl(
    option: c_int,
    a2: c_ulong,
    a3: c_ulong,
    _a4: c_ulong,
    _a5: c_ulong,
) -> Action<c_int> {
    let scope = Scope::new();
    let prog = (option == libc::PR_SET_SECCOMP && a2 == c_ulong::from(libc::SECCOMP_MODE_FILTER))
        // SAFETY: prctl(2): for PR_SET_SECCOMP with SECCOMP_MODE_FILTER,
        // the third argument is a `struct sock_fprog *`.
        .then(|| unsafe { SeccompProg::new(&scope, a3 as usize as *const u8) });
    crate::calls::sandbox::prctl(option, a2, prog)
}

/// A call on a kernel socket that may block (a UDP socket's kernel
/// socket, a Unix socket passing fds): outside the library
/// (`guard::suspended`), so that a signal handler interrupting it runs as
/// the program's, not put off until it returns. No lock of ours is held.
fn outside<R>(call: impl FnOnce() -> R) -> R {
    crate::platform::guard::suspended(call)
}

/// A receive on `fd`, blocking or not, is about to be made: one of the
/// default mode's UDP sockets still the kernel's own file is the kernel's
/// for good (a thread asleep in it holds that file, decision 64); one
/// another thread converts is waited for, then found ours. One load.
#[inline]
fn received(fd: c_int) {
    crate::sockets::datagram::pristine::capture(fd);
}

/// An iovec count as the caller gave it (the logic checks the range).
fn count(cnt: c_int) -> usize {
    usize::try_from(cnt).unwrap_or(usize::MAX)
}

pub(crate) fn read(fd: c_int, buf: *mut c_void, count: size_t) -> Action<ssize_t> {
    received(fd);
    // SAFETY: read(2): `buf` writable for `count` bytes.
    stream::read(fd, unsafe { OutBuf::new(&Scope::new(), buf, count) })
}

pub(crate) fn write(fd: c_int, buf: *const c_void, count: size_t) -> Action<ssize_t> {
    if let Some(k) = datagram::kernel_send(fd, || None) {
        // SAFETY: write(2) with the caller's arguments, on the UDP
        // socket's kernel socket (held open by `k`).
        return Action::Raw(outside(|| unsafe {
            crate::platform::real::write(k.fd(), buf, count)
        }));
    }
    // SAFETY: write(2): `buf` readable for `count` bytes.
    stream::write(fd, unsafe { InBuf::new(&Scope::new(), buf, count) })
}

pub(crate) fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> Action<ssize_t> {
    if let Some(k) = datagram::kernel_send(fd, || None) {
        // SAFETY: send(2) with the caller's arguments, on the UDP socket's
        // kernel socket (held open by `k`).
        return Action::Raw(outside(|| unsafe {
            crate::platform::real::send(k.fd(), buf, len, flags)
        }));
    }
    // SAFETY: send(2): `buf` readable for `len` bytes.
    stream::send(fd, unsafe { InBuf::new(&Scope::new(), buf, len) }, flags)
}

pub(crate) fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> Action<ssize_t> {
    received(fd);
    // SAFETY: recv(2): `buf` writable for `len` bytes.
    stream::recv(fd, unsafe { OutBuf::new(&Scope::new(), buf, len) }, flags)
}

/// On a connected TCP socket the destination address is ignored; a
/// datagram socket of ours (or one that becomes ours) sends to it.
pub(crate) fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> Action<ssize_t> {
    let scope = Scope::new();
    // SAFETY: sendto(2): `addr` null or readable for `addrlen` bytes.
    let to = || unsafe { AddrIn::new(&scope, addr, addrlen) }.dest();
    if let Some(k) = datagram::kernel_send(fd, to) {
        // SAFETY: sendto(2) with the caller's arguments, on the UDP
        // socket's kernel socket (held open by `k`).
        return Action::Raw(outside(|| unsafe {
            crate::platform::real::sendto(k.fd(), buf, len, flags, addr, addrlen)
        }));
    }
    // SAFETY: sendto(2): `buf` readable for `len` bytes, `addr` null or
    // readable for `addrlen` bytes.
    let (buf, dest) = unsafe {
        (
            InBuf::new(&scope, buf, len),
            AddrIn::new(&scope, addr, addrlen),
        )
    };
    let slices = || buf.bytes().map(|b| vec![std::io::IoSlice::new(b)]);
    match datagram::send(fd, dest, slices) {
        Some(done) => done,
        None => stream::send(fd, buf, flags),
    }
}

pub(crate) fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> Action<ssize_t> {
    received(fd);
    let scope = Scope::new();
    if crate::platform::fdtable::is_owned(fd) {
        // SAFETY: recvfrom(2): `buf` writable for `len` bytes, `addr` null
        // or writable for `*addrlen` bytes.
        let (out, from) = unsafe {
            (
                OutBuf::new(&scope, buf, len),
                AddrOut::new(&scope, addr, addrlen),
            )
        };
        if let Ok(b) = out.bytes() {
            if let Some(done) = datagram::recvfrom(fd, b, flags, from) {
                return done;
            }
        }
    }
    // SAFETY: recvfrom(2): `buf` writable for `len` bytes, `addrlen` null
    // or writable.
    let (buf, addrlen) = unsafe { (OutBuf::new(&scope, buf, len), OutLen::new(&scope, addrlen)) };
    stream::recvfrom(fd, buf, flags, addrlen)
}

/// sendmmsg(2): `msgvec` of `vlen` entries.
pub(crate) fn sendmmsg(
    fd: c_int,
    msgvec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> Action<c_int> {
    let scope = Scope::new();
    // SAFETY: sendmmsg(2): `msgvec` valid for `vlen` entries.
    let v = unsafe { Mmsgs::new(&scope, msgvec, vlen as usize) };
    if stream::is_ours(fd) {
        return stream::sendmmsg(fd, v, flags);
    }
    let first = || (v.len() > 0).then(|| v.sent(0).name().dest()).flatten();
    if let Some(k) = datagram::kernel_send(fd, first) {
        // SAFETY: sendmmsg(2) with the caller's arguments, on the UDP
        // socket's kernel socket (held open by `k`).
        return Action::Raw(outside(|| unsafe {
            crate::platform::real::sendmmsg(k.fd(), msgvec, vlen, flags)
        }));
    }
    datagram::sendmmsg(fd, v, flags)
}

/// libc's `syscall()`: sendmmsg and recvmmsg as the libc functions (libuv
/// 1.44, dig's, sends with `syscall(SYS_sendmmsg)`), the descriptor calls
/// as `descriptor::syscall` says, every other number passed through.
#[allow(clippy::too_many_arguments)]
pub(crate) fn syscall(
    number: core::ffi::c_long,
    a: core::ffi::c_long,
    b: core::ffi::c_long,
    c: core::ffi::c_long,
    d: core::ffi::c_long,
    e: core::ffi::c_long,
    f: core::ffi::c_long,
) -> Action<core::ffi::c_long> {
    let widen = |r: Action<c_int>| match r {
        Action::Pass => Action::Pass,
        Action::Done(v) => Action::Done(v.into()),
        Action::Fail(e) => Action::Fail(e),
        Action::Raw(v) => Action::Raw(v.into()),
    };
    // (The kernel truncates fd, count and flags to 32 bits, as here.)
    match number {
        libc::SYS_sendmmsg => widen(sendmmsg(
            a as c_int,
            b as *mut mmsghdr,
            c as c_uint,
            d as c_int,
        )),
        libc::SYS_recvmmsg => widen(recvmmsg(
            a as c_int,
            b as *mut mmsghdr,
            c as c_uint,
            d as c_int,
            e as *mut timespec,
        )),
        libc::SYS_seccomp => {
            let scope = Scope::new();
            let prog = (a as u32 == libc::SECCOMP_SET_MODE_FILTER)
                // SAFETY: seccomp(2): for SECCOMP_SET_MODE_FILTER the
                // third argument is a `struct sock_fprog *`.
                .then(|| unsafe { SeccompProg::new(&scope, c as usize as *const u8) });
            widen(crate::calls::sandbox::seccomp(a as u32, prog))
        }
        _ => crate::calls::descriptor::syscall(number, a, b, c, d, e, f),
    }
}

/// recvmmsg(2): `msgvec` of `vlen` entries (the timeout is not looked at).
pub(crate) fn recvmmsg(
    fd: c_int,
    msgvec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    _timeout: *mut timespec,
) -> Action<c_int> {
    received(fd);
    if !crate::platform::fdtable::is_owned(fd) {
        return Action::Pass;
    }
    // SAFETY: recvmmsg(2): `msgvec` valid for `vlen` entries.
    datagram::recvmmsg(
        fd,
        unsafe { Mmsgs::new(&Scope::new(), msgvec, vlen as usize) },
        flags,
    )
}

pub(crate) fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> Action<ssize_t> {
    received(fd);
    // SAFETY: readv(2): `iovcnt` iovecs with writable buffers.
    stream::readv(
        fd,
        unsafe { OutIovecs::new(&Scope::new(), iov, count(iovcnt)) },
        iovcnt,
    )
}

pub(crate) fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> Action<ssize_t> {
    // SAFETY: writev(2): `iovcnt` iovecs with readable buffers.
    stream::writev(
        fd,
        unsafe { InIovecs::new(&Scope::new(), iov, count(iovcnt)) },
        iovcnt,
    )
}

pub(crate) fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> Action<ssize_t> {
    if let Some(done) = pass_sockets(fd, msg, flags) {
        return done;
    }
    let scope = Scope::new();
    // SAFETY: sendmsg(2): a valid msghdr.
    let to = || unsafe { InMsg::new(&scope, msg) }.name().dest();
    if let Some(k) = datagram::kernel_send(fd, to) {
        // SAFETY: sendmsg(2) with the caller's arguments, on the UDP
        // socket's kernel socket (held open by `k`).
        return Action::Raw(outside(|| unsafe {
            crate::platform::real::sendmsg(k.fd(), msg, flags)
        }));
    }
    // SAFETY: sendmsg(2): a valid msghdr.
    let m = unsafe { InMsg::new(&scope, msg) };
    if m.has_control() {
        match datagram::sendmsg_cmsgs(fd, m) {
            Some(datagram::CmsgRoute::Kernel(k)) => {
                // SAFETY: as above, on the emulated socket's kernel socket.
                return Action::Raw(outside(|| unsafe {
                    crate::platform::real::sendmsg(k.fd(), msg, flags)
                }));
            }
            Some(datagram::CmsgRoute::Done(done)) => return done,
            None => {}
        }
    }
    stream::sendmsg(fd, m, flags)
}

pub(crate) fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> Action<ssize_t> {
    received(fd);
    let scope = Scope::new();
    // SAFETY: recvmsg(2): a valid msghdr.
    let out = unsafe { OutMsg::new(&scope, msg) };
    if let Some((k, flags)) = datagram::kernel_recv(fd, &out, flags) {
        // SAFETY: recvmsg(2) with the caller's msghdr, on the UDP socket's
        // kernel socket (held open by `k`).
        return Action::Raw(outside(|| unsafe {
            crate::platform::real::recvmsg(k.fd(), msg, flags)
        }));
    }
    if let Some(done) = receive_sockets(fd, msg, flags) {
        return done;
    }
    stream::recvmsg(fd, out, flags)
}

pub(crate) fn read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> Action<ssize_t> {
    received(fd);
    // SAFETY: __read_chk: read(2)'s contract for `buf` and `n` (the logic
    // passes `n > buflen` through, to glibc's abort).
    stream::read_chk(
        fd,
        unsafe { OutBuf::new(&Scope::new(), buf, n.min(buflen)) },
        n,
        buflen,
    )
}

pub(crate) fn recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> Action<ssize_t> {
    received(fd);
    // SAFETY: __recv_chk: recv(2)'s contract (as read_chk).
    stream::recv_chk(
        fd,
        unsafe { OutBuf::new(&Scope::new(), buf, len.min(buflen)) },
        len,
        buflen,
        flags,
    )
}

pub(crate) fn recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    _addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> Action<ssize_t> {
    received(fd);
    let scope = Scope::new();
    // SAFETY: __recvfrom_chk: recvfrom(2)'s contract (as read_chk).
    let (buf, addrlen) = unsafe {
        (
            OutBuf::new(&scope, buf, len.min(buflen)),
            OutLen::new(&scope, addrlen),
        )
    };
    stream::recvfrom_chk(fd, buf, len, buflen, flags, addrlen)
}

pub(crate) fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> Action<ssize_t> {
    // SAFETY: sendfile(2): `offset` null or readable and writable.
    stream::sendfile(
        out_fd,
        in_fd,
        unsafe { FileOffset::new(&Scope::new(), offset) },
        count,
    )
}

pub(crate) fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> Action<c_int> {
    // SAFETY: getsockopt(2): `len` valid, `value` writable for `*len` bytes.
    options::getsockopt(fd, level, name, unsafe {
        OptOut::new(&Scope::new(), value, len)
    })
}

pub(crate) fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> Action<c_int> {
    // SAFETY: setsockopt(2): `value` readable for `len` bytes.
    options::setsockopt(fd, level, name, unsafe {
        OptIn::new(&Scope::new(), value, len)
    })
}

pub(crate) fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> Action<c_int> {
    if let Some(kernel) = datagram::ioctl_target(fd, request) {
        // SAFETY: ioctl(2) on the UDP socket's kernel socket (held open by
        // `kernel`), with the caller's request and argument, under the
        // caller's contract for them.
        return Action::Raw(unsafe { crate::platform::real::ioctl(kernel.fd(), request, arg) });
    }
    if request == libc::FIONBIO as c_ulong && crate::platform::sandbox::active() {
        // SAFETY: ioctl(2) on the caller's fd with its request and argument.
        let r = unsafe { crate::platform::real::ioctl(fd, request, arg) };
        options::fionbio_done(fd, r, || {
            let mut raw = [0u8; 4];
            // SAFETY: FIONBIO's argument points at an int, which the kernel
            // just read (`r` is 0 when this runs).
            unsafe { crate::platform::sys::user_read(arg as usize as *const u8, &mut raw) }
                .ok()
                .map(|()| c_int::from_ne_bytes(raw))
        });
        return Action::Raw(r);
    }
    let scope = Scope::new();
    // SAFETY: ioctl(2) with FIONREAD: `arg` points at an int. (Other
    // requests' arguments are not looked at.)
    let fionread = (request == libc::FIONREAD as c_ulong)
        .then(|| unsafe { IntOut::new(&scope, arg as usize as *mut c_int) });
    options::ioctl(fd, request, fionread)
}

pub(crate) fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Action<c_int> {
    if fd < 0 {
        return Action::Pass; // EBADF, the kernel's (no fd to borrow)
    }
    // SAFETY: bind(2): `addr` readable for `len` bytes.
    endpoint::bind(fd, unsafe { AddrIn::new(&Scope::new(), addr, len) })
}

pub(crate) fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Action<c_int> {
    if fd < 0 {
        return Action::Pass; // EBADF, the kernel's (no fd to borrow)
    }
    // SAFETY: connect(2): `addr` readable for `len` bytes.
    endpoint::connect(fd, unsafe { AddrIn::new(&Scope::new(), addr, len) })
}

pub(crate) fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Action<c_int> {
    // SAFETY: accept(2): `addr`/`len` null or valid.
    endpoint::accept4(fd, unsafe { AddrOut::new(&Scope::new(), addr, len) }, 0)
}

pub(crate) fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> Action<c_int> {
    // SAFETY: accept4(2): `addr`/`len` null or valid.
    endpoint::accept4(fd, unsafe { AddrOut::new(&Scope::new(), addr, len) }, flags)
}

pub(crate) fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Action<c_int> {
    // SAFETY: getsockname(2): `addr`/`len` valid (null is EFAULT).
    endpoint::getsockname(fd, unsafe { AddrOut::new(&Scope::new(), addr, len) })
}

pub(crate) fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Action<c_int> {
    // SAFETY: getpeername(2): `addr`/`len` valid (null is EFAULT).
    endpoint::getpeername(fd, unsafe { AddrOut::new(&Scope::new(), addr, len) })
}

pub(crate) fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut epoll_event,
) -> Action<c_int> {
    // SAFETY: epoll_ctl(2): for ADD and MOD, `event` readable (null is
    // the kernel's EFAULT).
    epoll::epoll_ctl(epfd, op, fd, unsafe {
        EventIn::new(&Scope::new(), op, event)
    })
}

pub(crate) fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> Action<c_int> {
    // SAFETY: poll(2): `fds` readable and writable for `nfds` entries.
    poll::poll(unsafe { PollFds::new(&Scope::new(), fds, nfds) }, timeout)
}

pub(crate) fn poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> Action<c_int> {
    // A short buffer: let the real __poll_chk report it (no handle is made
    // over an array its length does not cover).
    if fdslen / core::mem::size_of::<pollfd>() < nfds as usize {
        return Action::Pass;
    }
    poll(fds, nfds, timeout)
}

pub(crate) fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> Action<c_int> {
    let scope = Scope::new();
    // SAFETY: ppoll(2): `fds` as poll(2), `timeout` and `mask` null or
    // readable.
    let (fds, timeout, mask) = unsafe {
        (
            PollFds::new(&scope, fds, nfds),
            TimeIn::new(&scope, timeout),
            SigMask::new(&scope, mask),
        )
    };
    poll::ppoll(fds, timeout, mask)
}

pub(crate) fn ppoll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
    fdslen: size_t,
) -> Action<c_int> {
    if fdslen / core::mem::size_of::<pollfd>() < nfds as usize {
        return Action::Pass; // as poll_chk
    }
    ppoll(fds, nfds, timeout, mask)
}

/// select's three sets, each null or valid for `nfds` bits.
///
/// # Safety
/// select(2)'s contract for `r`, `w`, `e`.
unsafe fn fd_sets<'call>(
    scope: &'call Scope,
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
) -> [FdSet<'call>; 3] {
    // SAFETY: the function's contract.
    [r, w, e].map(|set| unsafe { FdSet::new(scope, set, nfds) })
}

pub(crate) fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *mut timeval,
) -> Action<c_int> {
    let scope = Scope::new();
    // SAFETY: select(2): each set null or valid for `nfds` bits, `timeout`
    // null or readable and writable.
    let (sets, timeout) = unsafe {
        (
            fd_sets(&scope, nfds, r, w, e),
            TimeInOut::new(&scope, timeout),
        )
    };
    select::select(nfds, sets, timeout)
}

pub(crate) fn pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> Action<c_int> {
    let scope = Scope::new();
    // SAFETY: pselect(2): the sets as select(2), `timeout` and `mask` null
    // or readable.
    let (sets, timeout, mask) = unsafe {
        (
            fd_sets(&scope, nfds, r, w, e),
            TimeIn::new(&scope, timeout),
            SigMask::new(&scope, mask),
        )
    };
    select::pselect(nfds, sets, timeout, mask)
}

pub(crate) fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> Action<c_int> {
    // SAFETY: epoll_wait(2): `events` writable for `max` entries.
    epoll::epoll_wait(
        epfd,
        unsafe { EpollOut::new(&Scope::new(), events, max) },
        timeout,
    )
}

pub(crate) fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> Action<c_int> {
    let scope = Scope::new();
    // SAFETY: epoll_pwait(2): `events` as epoll_wait(2), `mask` null or
    // readable.
    let (events, mask) = unsafe {
        (
            EpollOut::new(&scope, events, max),
            SigMask::new(&scope, mask),
        )
    };
    epoll::epoll_pwait(epfd, events, timeout, mask)
}

pub(crate) fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> Action<c_int> {
    let scope = Scope::new();
    // SAFETY: epoll_pwait2(2): `events` as epoll_wait(2), `timeout` and
    // `mask` null or readable.
    let (events, timeout, mask) = unsafe {
        (
            EpollOut::new(&scope, events, max),
            TimeIn::new(&scope, timeout),
            SigMask::new(&scope, mask),
        )
    };
    epoll::epoll_pwait2(epfd, events, timeout, mask)
}

/// An exec call's new image (`calls::plain_exec`): its program, and
/// LD_PRELOAD in the environment it gets (`envp`; None: `environ`).
///
/// # Safety
/// exec(3)'s contract: `path` a NUL-terminated string, `envp` (when given)
/// null or a NULL-terminated array of NUL-terminated strings.
unsafe fn new_image(
    program: impl FnOnce(Option<Vec<u8>>) -> Program,
    path: *const c_char,
    envp: Option<*const *const c_char>,
) -> NewImage {
    // SAFETY: the caller's contract.
    let path = unsafe { sys::c_bytes(path) };
    NewImage {
        program: program(path),
        // SAFETY: the caller's contract.
        preload: unsafe { sys::env_value(envp, b"LD_PRELOAD") },
    }
}

fn path_program(path: Option<Vec<u8>>) -> Program {
    path.map_or(Program::Unknown, Program::Path)
}

/// A name execvp/execvpe search in PATH unless it has a slash.
fn searched_program(path: Option<Vec<u8>>) -> Program {
    match path {
        Some(p) if p.contains(&b'/') => Program::Path(p),
        _ => Program::Unknown,
    }
}

pub(crate) fn execve(
    path: *const c_char,
    _argv: *const *const c_char,
    envp: *const *const c_char,
) -> Action<c_int> {
    // SAFETY: execve(2)'s contract (see `new_image`).
    process::exec_image(unsafe { new_image(path_program, path, Some(envp)) })
}

pub(crate) fn execvpe(
    file: *const c_char,
    _argv: *const *const c_char,
    envp: *const *const c_char,
) -> Action<c_int> {
    // SAFETY: execvpe(3)'s contract (see `new_image`).
    process::exec_image(unsafe { new_image(searched_program, file, Some(envp)) })
}

pub(crate) fn execv(path: *const c_char, _argv: *const *const c_char) -> Action<c_int> {
    // SAFETY: execv(3)'s contract; the environment is `environ`.
    process::exec_image(unsafe { new_image(path_program, path, None) })
}

pub(crate) fn execvp(file: *const c_char, _argv: *const *const c_char) -> Action<c_int> {
    // SAFETY: execvp(3)'s contract; the environment is `environ`.
    process::exec_image(unsafe { new_image(searched_program, file, None) })
}

pub(crate) fn fexecve(
    fd: c_int,
    _argv: *const *const c_char,
    envp: *const *const c_char,
) -> Action<c_int> {
    // SAFETY: fexecve(3)'s contract for `envp`; no path (null).
    process::exec_image(unsafe { new_image(|_| Program::Fd(fd), core::ptr::null(), Some(envp)) })
}

pub(crate) fn execveat(
    dirfd: c_int,
    path: *const c_char,
    _argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> Action<c_int> {
    let at = |p: Option<Vec<u8>>| Program::At(dirfd, p.unwrap_or_default(), flags);
    // SAFETY: execveat(2)'s contract (see `new_image`).
    process::exec_image(unsafe { new_image(at, path, Some(envp)) })
}

/// fstat and fstat64 (one layout on 64-bit Linux, two types): a listener
/// of ours answers as its socket (`passing::stat_target`), a UDP socket
/// of ours as its kernel socket (a socket, not the epoll instance
/// its fd is: `datagram::stat_target`); everything else is the kernel's.
pub(crate) fn fstat<T>(fd: c_int, buf: *mut T) -> Action<c_int> {
    if let Some(l) = passing::stat_target(fd) {
        // SAFETY: as below, for the listener's socket (held open by `l`).
        return Action::Raw(unsafe { crate::platform::real::fstat(l.fd(), buf.cast()) });
    }
    let Some(k) = datagram::stat_target(fd) else {
        return Action::Pass;
    };
    // SAFETY: fstat(2)/fstat64: `buf` is writable for the caller's struct
    // stat (stat64 is the same layout on the 64-bit targets built for);
    // the real fstat fills it for the kernel socket, held open by `k`.
    Action::Raw(unsafe { crate::platform::real::fstat(k.fd(), buf.cast()) })
}

/// __fxstat and __fxstat64 (glibc before 2.33 compiled fstat into them):
/// as `fstat` for the versions glibc serves with fstat(2) (0, the
/// kernel's, and 1, _STAT_VER_LINUX); others are glibc's (EINVAL).
pub(crate) fn fxstat<T>(ver: c_int, fd: c_int, buf: *mut T) -> Action<c_int> {
    if ver != 0 && ver != 1 {
        return Action::Pass;
    }
    fstat(fd, buf)
}

/// sendmsg on a socket not ours passing sockets of ours (SCM_RIGHTS):
/// what goes in their place, and carriers after them, in a copy of the
/// caller's control buffer (`passing::sent`; decisions 63 and 67). The
/// caller's msghdr and control buffer are read with checked copies only;
/// anything the kernel would refuse (a bad pointer: EFAULT; a length above
/// INT_MAX or the socket option memory: ENOBUFS) goes to the kernel as it
/// is, which says so.
fn pass_sockets(fd: c_int, msg: *const msghdr, flags: c_int) -> Option<Action<ssize_t>> {
    /// Above this the kernel's optmem_max (20 KiB to 128 KiB) refuses a
    /// control buffer (ENOBUFS): not copied, the kernel says so.
    const MAX_CONTROL: usize = 1 << 20;
    let pristine = crate::sockets::datagram::pristine::any();
    if msg.is_null() || crate::platform::fdtable::is_owned(fd) || !(pristine || passing::may_pass())
    {
        return None;
    }
    // SAFETY: sendmsg(2): a valid msghdr, read as a copy (as every
    // sendmsg's `InMsg::has_control` reads it); its control buffer only
    // with a checked copy below.
    let mut copy = unsafe { core::ptr::read(msg) };
    #[allow(clippy::unnecessary_cast)] // size_t in glibc, socklen_t in musl
    let len = copy.msg_controllen as usize;
    // Only a Unix socket passes fds: UDP's cmsgs cost one getsockopt, not
    // the copy.
    if copy.msg_control.is_null() || len == 0 || len > MAX_CONTROL || !passing::unix_socket(fd) {
        return None;
    }
    let mut control = vec![0u64; len.div_ceil(8)];
    // SAFETY: a checked copy of `len` bytes of the caller's control
    // buffer into ours, as long (EFAULT: the kernel says so).
    unsafe {
        sys::user_copy(
            copy.msg_control.cast::<u8>().cast_const(),
            control.as_mut_ptr().cast::<u8>(),
            len,
        )
    }
    .ok()?;
    copy.msg_control = control.as_mut_ptr().cast();
    // SAFETY: our msghdr, its control buffer ours, `len` bytes.
    let fds = unsafe { sys::msg_rights_in(&copy) };
    if fds.is_empty() {
        return None;
    }
    // Another process holds the file of a UDP socket still the kernel's
    // own: the kernel's for good (decision 64).
    if pristine {
        fds.iter()
            .for_each(|&f| crate::sockets::datagram::pristine::capture(f));
    }
    let passed = passing::sent(&fds)?;
    // SAFETY: our msghdr, its control buffer ours, writable.
    unsafe { sys::msg_rights_swap(&mut copy, |f| passed.swap(f)) };
    let carriers = passed.carriers();
    if !carriers.is_empty() {
        // A second SCM_RIGHTS cmsg after the caller's (the kernel lists its
        // fds after theirs), at the caller's length rounded to a cmsg's
        // alignment.
        let word = core::mem::size_of::<usize>();
        let at = len.div_ceil(word) * word;
        let bytes: Vec<u8> = carriers.iter().flat_map(|f| f.to_ne_bytes()).collect();
        let more = sys::cmsg_bytes(&[(libc::SOL_SOCKET, libc::SCM_RIGHTS, bytes)]);
        let mut grown = vec![0u64; (at + more.len()).div_ceil(8)];
        // SAFETY: plain bytes of two buffers of ours, each within its length.
        let (old, new) = unsafe {
            (
                core::slice::from_raw_parts(control.as_ptr().cast::<u8>(), len),
                core::slice::from_raw_parts_mut(grown.as_mut_ptr().cast::<u8>(), at + more.len()),
            )
        };
        new[..len].copy_from_slice(old);
        new[at..].copy_from_slice(&more);
        control = grown;
        copy.msg_control = control.as_mut_ptr().cast();
        copy.msg_controllen = (at + more.len()) as _;
    }
    // SAFETY: sendmsg(2) with the caller's msghdr but for its control
    // buffer, ours; the fds it passes are held open by `passed`.
    let mut r = outside(|| unsafe { crate::platform::real::sendmsg(fd, &copy, flags) });
    if r < 0 && sys::errno() == libc::EINVAL && !carriers.is_empty() {
        // Past SCM_MAX_FD with the carriers (the caller's own fds fit):
        // without them, as the caller asked (its connections go bare).
        copy.msg_controllen = len as _;
        // SAFETY: as above, the caller's cmsgs only.
        r = outside(|| unsafe { crate::platform::real::sendmsg(fd, &copy, flags) });
    }
    drop(passed);
    Some(Action::Raw(r))
}

/// recvmsg on a socket not ours whose caller gave room for control data:
/// with a control buffer of ours, longer by room for the carriers of
/// connections passed with it (`passing`), laid back into the caller's as
/// the kernel would have written it for the caller's length; each socket
/// of ours received adopted. Only the kernel's writes are read; the
/// caller's msghdr is written as recvmsg(2) writes it.
fn receive_sockets(fd: c_int, msg: *mut msghdr, flags: c_int) -> Option<Action<ssize_t>> {
    const MAX_CONTROL: usize = 1 << 20;
    if msg.is_null() || crate::platform::fdtable::is_owned(fd) {
        return None;
    }
    let mut app = core::mem::MaybeUninit::<msghdr>::zeroed();
    // SAFETY: a checked copy of the caller's msghdr into ours: a bad one
    // is the real call's EFAULT, as the kernel says it (review scmpass D3:
    // a plain read crashed the program).
    unsafe {
        sys::user_copy(
            msg.cast_const().cast(),
            app.as_mut_ptr().cast(),
            core::mem::size_of::<msghdr>(),
        )
    }
    .ok()?;
    // SAFETY: every bit pattern is a msghdr (pointers and integers).
    let app = unsafe { app.assume_init() };
    #[allow(clippy::unnecessary_cast)] // size_t in glibc, socklen_t in musl
    let len = app.msg_controllen as usize;
    // Only a Unix socket receives fds: any other is the kernel's as it is
    // (one getsockopt SO_DOMAIN).
    if app.msg_control.is_null() || len == 0 || len > MAX_CONTROL || !passing::unix_socket(fd) {
        return None;
    }
    // Room for a carrier per fd the caller has room for (a sender appends
    // at most one per connection it passes), within SCM_MAX_FD: a fixed 64
    // lost the carriers of the 65th connection on (review scmpass D1).
    let fd_room = len.saturating_sub(core::mem::size_of::<libc::cmsghdr>()) / 4;
    let carriers = fd_room.min(passing::CARRIER_ROOM);
    let room = len + core::mem::size_of::<libc::cmsghdr>() + 4 * carriers;
    // On the stack for the usual sizes (no allocation per receive).
    let mut stack = [0u64; 256];
    let mut heap = Vec::new();
    let control: &mut [u64] = if room <= 8 * stack.len() {
        &mut stack[..room.div_ceil(8)]
    } else {
        heap.resize(room.div_ceil(8), 0u64);
        &mut heap
    };
    let mut copy = app;
    copy.msg_control = control.as_mut_ptr().cast();
    copy.msg_controllen = room as _;
    // A sleep pthread_cancel ends (EINTR; the export then acts on it):
    // cancellation is disabled inside the library. Outside the library
    // (`outside`): a handler that interrupts the wait runs as the
    // program's (no lock of ours is held here).
    let r = outside(|| {
        // SAFETY: recvmsg(2) with the caller's msghdr (its name and iovecs
        // as the caller gave them) but for a control buffer of ours, `room`
        // long.
        crate::platform::cancel::sleep(|| unsafe {
            crate::platform::real::recvmsg(fd, &mut copy, flags)
        })
    });
    let Some(r) = r.filter(|&r| r >= 0) else {
        return Some(match r {
            Some(r) => Action::Raw(r),
            None => Action::Fail(libc::EINTR),
        });
    };
    #[allow(clippy::unnecessary_cast)]
    let got = (copy.msg_controllen as usize).min(room);
    // SAFETY: our buffer, `got` bytes of it written by the kernel.
    let raw = unsafe { core::slice::from_raw_parts(control.as_ptr().cast::<u8>(), got) };
    let fds = sys::rights_in(raw);
    // The caller's msghdr as recvmsg(2) writes it, its control bytes with
    // a checked copy: false if its control buffer is not writable (the
    // kernel then gives no cmsgs, MSG_CTRUNC, and installs no fd).
    let finish = |written: usize, cut: bool, bytes: &[u8]| {
        // SAFETY: a checked copy into the caller's control buffer, `len`
        // bytes long as it says (`written` is at most that).
        let ok = written == 0
            || unsafe { sys::user_copy(bytes.as_ptr(), app.msg_control.cast::<u8>(), written) }
                .is_ok();
        // (Unwritable: no cmsgs, MSG_CTRUNC, as the kernel's.)
        let (written, cut) = if ok { (written, cut) } else { (0, true) };
        let flags = copy.msg_flags & !libc::MSG_CTRUNC | if cut { libc::MSG_CTRUNC } else { 0 };
        // SAFETY: recvmsg(2): the caller's msghdr is writable for the
        // fields recvmsg writes.
        unsafe {
            (*msg).msg_namelen = copy.msg_namelen;
            (*msg).msg_controllen = written as _;
            (*msg).msg_flags = flags;
        }
        ok
    };
    if fds.is_empty() && got <= len {
        // No fds: the kernel's bytes as they are.
        finish(got, copy.msg_flags & libc::MSG_CTRUNC != 0, raw);
        return Some(Action::Raw(r));
    }
    let got = if fds.is_empty() {
        passing::Received::default()
    } else {
        passing::among(&fds)
    };
    let mut out = vec![0u8; len];
    let mut closed = Vec::new();
    let (written, cut) =
        sys::refit_rights(raw, &mut out, |f| got.is_carrier(f), |f| closed.push(f));
    let kernel_cut = copy.msg_flags & libc::MSG_CTRUNC != 0;
    if !finish(written, cut || kernel_cut, &out) {
        for &f in &fds {
            sys::close_inherited(f);
        }
        return Some(Action::Raw(r));
    }
    for f in closed {
        sys::close_inherited(f);
    }
    if !fds.is_empty() {
        let kept = sys::rights_in(&out[..written]);
        passing::received(got, &kept, flags & libc::MSG_CMSG_CLOEXEC != 0);
    }
    Some(Action::Raw(r))
}
