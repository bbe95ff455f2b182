//! Stream data: the calls the shared-memory rings will serve.
//!
//! Each takes the caller's arguments unchanged so the data path can slot in
//! per call; today an fd that is not ours passes through.
#![forbid(unsafe_code)]

use core::ffi::{c_int, c_void};

use libc::{iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::hooks::Action;

pub(crate) fn read(fd: c_int, _buf: *mut c_void, _count: size_t) -> Action<ssize_t> {
    Action::for_fd("read", fd)
}

pub(crate) fn write(fd: c_int, _buf: *const c_void, _count: size_t) -> Action<ssize_t> {
    Action::for_fd("write", fd)
}

pub(crate) fn send(fd: c_int, _b: *const c_void, _n: size_t, _flags: c_int) -> Action<ssize_t> {
    Action::for_fd("send", fd)
}

pub(crate) fn recv(fd: c_int, _b: *mut c_void, _n: size_t, _flags: c_int) -> Action<ssize_t> {
    Action::for_fd("recv", fd)
}

pub(crate) fn sendto(
    fd: c_int,
    _buf: *const c_void,
    _len: size_t,
    _flags: c_int,
    _addr: *const sockaddr,
    _addrlen: socklen_t,
) -> Action<ssize_t> {
    Action::for_fd("sendto", fd)
}

pub(crate) fn recvfrom(
    fd: c_int,
    _buf: *mut c_void,
    _len: size_t,
    _flags: c_int,
    _addr: *mut sockaddr,
    _addrlen: *mut socklen_t,
) -> Action<ssize_t> {
    Action::for_fd("recvfrom", fd)
}

pub(crate) fn readv(fd: c_int, _iov: *const iovec, _iovcnt: c_int) -> Action<ssize_t> {
    Action::for_fd("readv", fd)
}

pub(crate) fn writev(fd: c_int, _iov: *const iovec, _iovcnt: c_int) -> Action<ssize_t> {
    Action::for_fd("writev", fd)
}

pub(crate) fn sendmsg(fd: c_int, _msg: *const msghdr, _flags: c_int) -> Action<ssize_t> {
    Action::for_fd("sendmsg", fd)
}

pub(crate) fn recvmsg(fd: c_int, _msg: *mut msghdr, _flags: c_int) -> Action<ssize_t> {
    Action::for_fd("recvmsg", fd)
}

// The fortified variants. glibc's `__read_chk` calls `__chk_fail()` (abort
// with "*** buffer overflow detected ***") when `nbytes > buflen`, before
// any I/O; pass-through keeps that by calling the real `__read_chk`. On an
// fd of ours the data path must check first the same way (calling the real
// `__*_chk` when the check fails gives the identical abort).

pub(crate) fn read_chk(fd: c_int, _b: *mut c_void, _n: size_t, _buflen: size_t) -> Action<ssize_t> {
    Action::for_fd("__read_chk", fd)
}

pub(crate) fn recv_chk(
    fd: c_int,
    _buf: *mut c_void,
    _len: size_t,
    _buflen: size_t,
    _flags: c_int,
) -> Action<ssize_t> {
    Action::for_fd("__recv_chk", fd)
}

pub(crate) fn recvfrom_chk(
    fd: c_int,
    _buf: *mut c_void,
    _len: size_t,
    _buflen: size_t,
    _flags: c_int,
    _addr: *mut sockaddr,
    _addrlen: *mut socklen_t,
) -> Action<ssize_t> {
    Action::for_fd("__recvfrom_chk", fd)
}
