//! Readiness is the kernel's: an emulated fd is a real Unix socket whose
//! readability (doorbell bytes) and writability (filler bytes) follow the
//! ring, so poll/select/epoll are not emulated (docs/architecture.md).
//!
//! One thing the kernel cannot learn from those bytes alone is how a reader
//! waits. Edge-triggered epoll reports every arrival of data on a TCP
//! socket, also while older data is unread; the ring rings its reader only
//! on the first publish after the reader waited. So `epoll_ctl` registering
//! a connection with EPOLLET tells the ring to ring on every publish.
#![deny(unsafe_code)]

use core::ffi::c_int;

use crate::hooks::Action;
use crate::socket::Socket;
use crate::{registry, sys};

pub(crate) fn epoll_ctl(
    _epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut libc::epoll_event,
) -> Action<c_int> {
    if op != libc::EPOLL_CTL_ADD && op != libc::EPOLL_CTL_MOD {
        return Action::Pass;
    }
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    #[allow(unsafe_code)]
    // SAFETY: epoll_ctl(2) requires `event` valid for reads for ADD and MOD
    // (null is checked).
    let events = unsafe { sys::epoll_events(event) };
    if let (Socket::Stream(conn), Some(ev)) = (&*sock, events) {
        if ev & libc::EPOLLET as u32 != 0 {
            conn.set_edge_triggered();
        }
    }
    Action::Pass
}
