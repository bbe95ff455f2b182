//! Emulated UDP sockets in epoll sets. Their fd is an epoll instance
//! (the Inbox), whose readability the kernel reports exactly; what it
//! cannot report is kept here, per set:
//!
//! - Writability: a UDP socket is always writable (a datagram never waits
//!   for room), an epoll instance never is. Our epoll_wait reports
//!   EPOLLOUT for registrations that ask for it: always when
//!   level-triggered; once per ADD/MOD when edge-triggered or one-shot,
//!   and with every event the kernel reports for it (the kernel's edge
//!   carries the socket's whole readiness).
//! - Edges: an edge-triggered socket's doorbell is raised again whenever
//!   epoll_wait reports it, so the next arrival rings (a new edge), queued
//!   datagrams or not (`Inbox::rearm_edge`).
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::{Arc, Weak};

use crate::platform::real::{waits, Action};
use crate::platform::sys::EventIn;
use crate::sockets::socket::Socket;

use super::pending::Pending;
use super::set;

const OUT: u32 = (libc::EPOLLOUT | libc::EPOLLWRNORM | libc::EPOLLWRBAND) as u32;
const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
const ONCE: u32 = (libc::EPOLLET | libc::EPOLLONESHOT) as u32;

/// A datagram socket's registration in a set.
pub(super) struct Registration {
    pub(super) events: u32,
    pub(super) data: u64,
    pub(super) socket: Weak<Socket>,
    /// EPOLLOUT reported since the last ADD/MOD (EPOLLET, EPOLLONESHOT).
    pub(super) reported: bool,
}

/// epoll_ctl on datagram socket `fd`: the kernel's, noted here.
pub(super) fn ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: EventIn<'_>,
    sock: &Arc<Socket>,
) -> Action<c_int> {
    let Some(d) = sock.datagram() else {
        return Action::Pass;
    };
    // The Inbox keeps its readability exact once eager.
    d.make_eager();
    let ev = match op {
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => match event.get() {
            Some(ev) => Some(ev),
            None => return Action::Pass, // the kernel's EFAULT
        },
        libc::EPOLL_CTL_DEL => None,
        _ => return Action::Pass,
    };
    if ev.is_some_and(|e| e.events & libc::EPOLLET as u32 != 0) {
        d.set_edge_triggered();
    }
    let exclusive = libc::EPOLLEXCLUSIVE as u32;
    // MOD of a registration added with EPOLLEXCLUSIVE is EINVAL, as the
    // kernel says (epoll_ctl(2)); ours went to the kernel without it.
    if op == libc::EPOLL_CTL_MOD {
        let added_exclusive = set::sets_always()
            .find(epfd)
            .and_then(|set| set.datagrams.get(&fd).map(|r| r.events & exclusive != 0))
            .unwrap_or(false);
        if added_exclusive {
            return Action::Fail(libc::EINVAL);
        }
    }
    let r = match ev {
        // The fd is an epoll instance, which the kernel does not take with
        // EPOLLEXCLUSIVE (nginx asks for it on its UDP listeners): every
        // waiter is woken instead, as for a stream listener (`listener_ctl`).
        // (MOD with it is EINVAL for any fd, as the kernel says.)
        Some(mut copy) if op == libc::EPOLL_CTL_ADD && copy.events & exclusive != 0 => {
            copy.events &= !exclusive;
            waits::epoll_ctl(epfd, fd, EventIn::own(op, &mut copy))
        }
        _ => waits::epoll_ctl(epfd, fd, event),
    };
    if r != 0 {
        return Action::Raw(r);
    }
    let mut sets = set::sets_always();
    match ev {
        Some(ev) => {
            let i = sets.entry(epfd);
            let reg = Registration {
                events: ev.events,
                data: ev.u64,
                socket: Arc::downgrade(sock),
                reported: false,
            };
            sets.at(i).datagrams.insert(fd, reg);
        }
        _ => {
            if let Some(set) = sets.find(epfd) {
                set.datagrams.remove(&fd);
            }
        }
    }
    Action::Raw(r)
}

/// The datagram sockets of set `epfd` a spinning wait may look at
/// (`calls::iomux::datagram_spin`): registered for EPOLLIN, level-
/// triggered and not one-shot (an edge-triggered one keeps its flag up
/// for its edges; a one-shot one may be disabled).
pub(crate) fn spinnable(epfd: c_int) -> Vec<Arc<Socket>> {
    let Some(mut sets) = set::sets() else {
        return Vec::new();
    };
    let Some(set) = sets.find(epfd) else {
        return Vec::new();
    };
    set.datagrams
        .values()
        .filter(|r| r.events & IN != 0 && r.events & ONCE == 0)
        .filter_map(|r| r.socket.upgrade())
        .collect()
}

/// EPOLLOUT for the datagram registrations of set `epfd` that are due
/// (see the module docs), at most `max` events in `out` in all.
pub(super) fn writable(
    epfd: c_int,
    regs: &mut std::collections::BTreeMap<c_int, Registration>,
    max: usize,
    out: &mut Pending,
) {
    regs.retain(|&fd, r| {
        if r.socket.strong_count() == 0 {
            return false;
        }
        let mut bits = r.events & OUT;
        if bits == 0 || (r.events & ONCE != 0 && r.reported) {
            return true;
        }
        // Its readability too, level-triggered: a caller with room for
        // one event must get both in it, as from the kernel.
        let readable = || {
            r.socket
                .upgrade()
                .is_some_and(|s| s.datagram().is_some_and(|d| d.readable()))
        };
        if r.events & ONCE == 0 && r.events & IN != 0 && readable() {
            bits |= r.events & IN;
        }
        let data = r.data;
        let room = out.events.len() < max;
        match out.events.iter().position(|e| ({ e.u64 }) == data) {
            Some(i) => {
                out.events[i].events |= bits;
                out.masks[i] |= r.events;
            }
            None if room => {
                out.events.push(libc::epoll_event {
                    events: bits,
                    u64: data,
                });
                out.masks.push(r.events);
            }
            None => return true,
        }
        if r.events & ONCE != 0 {
            r.reported = true;
            // Taken once: it must be reported, not left for the next call
            // (`Pending::replayable`, the one-slot wait's kernel turn).
            out.replayable = false;
        }
        if r.events & libc::EPOLLONESHOT as u32 != 0 {
            // Disabled, as the kernel disables it at its event.
            let mut ev = libc::epoll_event {
                events: libc::EPOLLONESHOT as u32,
                u64: data,
            };
            waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_MOD, &mut ev));
        }
        true
    });
}

/// The kernel reported the first `n` of `events` for set `epfd`; the
/// count left. For a datagram socket among them: EPOLLIN is taken back
/// when a receive would find nothing (the Inbox was readable for a new
/// sender or a hang-up, now handled: dig, through libuv, takes an empty
/// receive after EPOLLIN for the end of the stream); an edge-triggered
/// one gets its EPOLLOUT with the event, and its doorbell raised again
/// (its next arrival is a new edge).
pub(crate) fn reported(epfd: c_int, events: &mut [libc::epoll_event], n: usize) -> usize {
    let found: Vec<(u64, u32, Arc<Socket>)> = {
        let Some(mut sets) = set::sets() else {
            return n;
        };
        let Some(set) = sets.find(epfd) else {
            return n;
        };
        if set.datagrams.is_empty() {
            return n;
        }
        set.datagrams
            .values()
            .filter(|r| events[..n].iter().any(|e| ({ e.u64 }) == r.data))
            .filter_map(|r| Some((r.data, r.events, r.socket.upgrade()?)))
            .collect()
    };
    let mut n = n;
    for (data, registered, sock) in found {
        let Some(d) = sock.datagram() else { continue };
        let Some(i) = events[..n].iter().position(|e| ({ e.u64 }) == data) else {
            continue;
        };
        let e = &mut events[i];
        if e.events & IN != 0 {
            let (data, error) = d.reported();
            if !data {
                e.events &= !IN;
            }
            if error {
                e.events |= libc::EPOLLERR as u32;
            }
        }
        if registered & libc::EPOLLET as u32 != 0 {
            if d.edge_news() {
                e.events |= registered & OUT;
            } else {
                e.events = 0; // the Inbox's own doing, not an arrival
            }
            d.rearm_edge();
        }
        if e.events == 0 {
            events.copy_within(i + 1..n, i);
            n -= 1;
        }
    }
    n
}
