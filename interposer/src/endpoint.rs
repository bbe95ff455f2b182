//! Endpoints: creating, naming, listening, accepting, connecting, shutting.
//!
//! The data path plugs in here: `bind`/`connect` naming a partition address
//! turn a kernel TCP socket into an emulated one (rendezvous listener or
//! shared-memory connection); for now they only recognise such addresses.
#![deny(unsafe_code)]

use core::ffi::c_int;
use std::net::SocketAddr;

use libc::{sockaddr, socklen_t};

use crate::hooks::Action;
use crate::{config, sys};

/// An AF_INET/AF_INET6 stream socket stays a kernel socket until bind or
/// connect names a partition address; so does everything else, forever.
pub(crate) fn socket(_domain: c_int, _ty: c_int, _protocol: c_int) -> Action<c_int> {
    Action::Pass
}

/// Socket pairs are AF_UNIX: never emulated.
pub(crate) fn socketpair(_d: c_int, _t: c_int, _p: c_int, _sv: *mut c_int) -> Action<c_int> {
    Action::Pass
}

pub(crate) fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Action<c_int> {
    if let Some(target) = partition_target(addr, len) {
        log!(debug, "bind(fd {fd}) to partition address {target}: no shared-memory listener yet, kernel bind");
    }
    Action::for_fd("bind", fd)
}

pub(crate) fn listen(fd: c_int, _backlog: c_int) -> Action<c_int> {
    Action::for_fd("listen", fd)
}

pub(crate) fn accept(fd: c_int, _addr: *mut sockaddr, _len: *mut socklen_t) -> Action<c_int> {
    Action::for_fd("accept", fd)
}

pub(crate) fn accept4(
    fd: c_int,
    _addr: *mut sockaddr,
    _len: *mut socklen_t,
    _flags: c_int,
) -> Action<c_int> {
    Action::for_fd("accept4", fd)
}

pub(crate) fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Action<c_int> {
    if let Some(target) = partition_target(addr, len) {
        log!(debug, "connect(fd {fd}) to partition address {target}: no shared-memory path yet, kernel connect");
    }
    Action::for_fd("connect", fd)
}

pub(crate) fn shutdown(fd: c_int, _how: c_int) -> Action<c_int> {
    Action::for_fd("shutdown", fd)
}

pub(crate) fn getsockname(fd: c_int, _a: *mut sockaddr, _l: *mut socklen_t) -> Action<c_int> {
    Action::for_fd("getsockname", fd)
}

pub(crate) fn getpeername(fd: c_int, _a: *mut sockaddr, _l: *mut socklen_t) -> Action<c_int> {
    Action::for_fd("getpeername", fd)
}

/// The IPv4/IPv6 address in `addr` if it is in a partition (and the library
/// is enabled).
fn partition_target(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    let config = config::get()?;
    #[allow(unsafe_code)]
    // SAFETY: bind(2)/connect(2) require the caller to pass `len` readable
    // bytes at `addr` (or null, which is checked); we only read them.
    let target = unsafe { sys::socket_addr(addr, len) }?;
    config.is_partition_ip(target.ip()).then_some(target)
}
