//! Socket options and fd modes (getsockopt/setsockopt, fcntl, ioctl).
//!
//! On an emulated connection these will answer like TCP (SO_ERROR, SO_TYPE,
//! TCP_NODELAY, O_NONBLOCK via F_SETFL or FIONBIO, FIONREAD from the ring).
#![forbid(unsafe_code)]

use core::ffi::{c_int, c_ulong, c_void};

use libc::socklen_t;

use crate::hooks::Action;

pub(crate) fn getsockopt(
    fd: c_int,
    _level: c_int,
    _name: c_int,
    _value: *mut c_void,
    _len: *mut socklen_t,
) -> Action<c_int> {
    Action::for_fd("getsockopt", fd)
}

pub(crate) fn setsockopt(
    fd: c_int,
    _level: c_int,
    _name: c_int,
    _value: *const c_void,
    _len: socklen_t,
) -> Action<c_int> {
    Action::for_fd("setsockopt", fd)
}

/// `fcntl` and `fcntl64` (one function in glibc under two names). The
/// variadic argument arrives as one register-sized value; commands that take
/// none see garbage there, which the real fcntl ignores too.
pub(crate) fn fcntl(fd: c_int, _cmd: c_int, _arg: c_ulong) -> Action<c_int> {
    Action::for_fd("fcntl", fd)
}

pub(crate) fn ioctl(fd: c_int, _request: c_ulong, _arg: c_ulong) -> Action<c_int> {
    Action::for_fd("ioctl", fd)
}
