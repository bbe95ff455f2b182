//! Readiness is the kernel's: an emulated fd is a real Unix socket whose
//! readability (doorbell bytes) and writability (filler bytes) follow the
//! ring, so poll/select/epoll are not emulated (docs/architecture.md).
//!
//! One thing the kernel cannot learn from those bytes alone is how a reader
//! waits. Edge-triggered epoll reports every arrival of data on a TCP
//! socket, also while older data is unread; the ring rings its reader only
//! on the first publish after the reader waited. So `epoll_ctl` registering
//! a connection with EPOLLET tells the ring to ring on every publish. And a
//! dual listener (an epoll instance behind the application's fd, see
//! `dual`) cannot take EPOLLEXCLUSIVE, which is dropped from its
//! registrations.
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
    match (&*sock, events) {
        (Socket::Stream(conn), Some(ev)) if ev & libc::EPOLLET as u32 != 0 => {
            conn.set_edge_triggered();
        }
        // A dual listener's fd is an epoll instance, which cannot be added
        // with EPOLLEXCLUSIVE (nginx asks for it): without it, every waiter
        // is woken and all but one accept() get EAGAIN.
        (Socket::Dual(_), Some(ev)) if ev & libc::EPOLLEXCLUSIVE as u32 != 0 => {
            #[allow(unsafe_code)]
            // SAFETY: `event` is valid (we just read it); the copy we pass
            // is a valid epoll_event.
            let mut copy = unsafe { sys::epoll_event_copy(event) };
            copy.events &= !(libc::EPOLLEXCLUSIVE as u32);
            #[allow(unsafe_code)]
            // SAFETY: the real epoll_ctl with the caller's fds and our copy.
            return Action::Raw(unsafe { crate::hooks::real::epoll_ctl(_epfd, op, fd, &mut copy) });
        }
        _ => {}
    }
    Action::Pass
}
