//! Replicas: a fresh kernel TCP socket of the same family with every option
//! the application set replayed onto it, which answers getsockopt and
//! vets setsockopt with the kernel's own rules.
#![forbid(unsafe_code)]

use super::*;
use crate::platform::sys;
use crate::sockets::options_store::Options;
use core::ffi::c_int;
use std::os::fd::{AsFd, OwnedFd};

/// The most bytes of an option value remembered for replay (options
/// longer than this are checked by the kernel but not replayed).
pub(crate) const REPLAY_CAP: usize = 64 << 10;

/// A fresh kernel TCP socket of `family` with every option of `opts`
/// replayed onto it, in the order they were set (some options change
/// others: IP_TOS sets the priority).
pub(crate) fn replica(family: c_int, opts: &Options) -> Option<OwnedFd> {
    // A sandboxed process (`sandbox`) may be killed for socket(): answers
    // come from what was set, or ENOPROTOOPT.
    if crate::platform::sandbox::active() {
        return None;
    }
    let af = if family == libc::AF_INET6 {
        rustix::net::AddressFamily::INET6
    } else {
        rustix::net::AddressFamily::INET
    };
    let sock = rustix::net::socket_with(
        af,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    for (level, name, value) in opts.entries() {
        if replayable(level, name) {
            let _ = sys::sockopt_set(sock.as_fd(), level, name, &value);
        }
    }
    Some(sock)
}

/// Options that are kept but not replayed: filters and BPF programs (the
/// value holds pointers or an fd of the moment), and our own SO_COOKIE.
pub(crate) fn replayable(level: c_int, name: c_int) -> bool {
    level != libc::SOL_SOCKET
        || !matches!(
            name,
            libc::SO_ATTACH_FILTER
                | libc::SO_DETACH_FILTER
                | SO_ATTACH_BPF
                | SO_ATTACH_REUSEPORT_CBPF
                | SO_ATTACH_REUSEPORT_EBPF
                | SO_DETACH_REUSEPORT_BPF
                | SO_COOKIE
        )
}

/// An integer option as a replica reads it.
pub(crate) fn replica_int(rep: &Option<OwnedFd>, level: c_int, name: c_int) -> Option<c_int> {
    let mut raw = [0u8; 4];
    replica_bytes(rep, level, name, &mut raw).map(|_| c_int::from_ne_bytes(raw))
}

pub(crate) fn replica_bytes(
    rep: &Option<OwnedFd>,
    level: c_int,
    name: c_int,
    buf: &mut [u8],
) -> Option<usize> {
    sys::sockopt_get_into(rep.as_ref()?.as_fd(), level, name, buf).ok()
}

pub(crate) fn was_set(opts: &Options, level: c_int, names: &[c_int]) -> bool {
    names.iter().any(|&n| opts.get(level, n).is_some())
}
