//! Hang-ups and errors of connections in epoll sets, as kernel TCP reports
//! them rather than the Unix connection under them. The kernel reports
//! EPOLLHUP and EPOLLERR to every registration, even one that asked for no
//! events (epoll_ctl(2)), but TCP has them only for a reset, both
//! directions shut, or a send the peer answered with a RST; a Unix socket
//! whose peer closed is hung up at once. An event that is only the Unix
//! connection's hang-up is left out of the answer, and the registration
//! *silenced*: the kernel's is made edge-triggered (a level one would end
//! every later wait at once), until TCP has something to say about it
//! (`unsilence`: this process's shutdown or send made it so) or the
//! application changes it.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::Arc;

use crate::platform::real::waits;
use crate::platform::sys::EventIn;
use crate::sockets::conn::Connection;
use crate::sockets::socket::Socket;

use super::set::{self, Member};

const HUP: u32 = libc::EPOLLHUP as u32;
const ERR: u32 = libc::EPOLLERR as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
const ET: u32 = libc::EPOLLET as u32;

/// Events of `epfd` (the first of `events`) that report a hang-up or an
/// error of a connection get kernel TCP's EPOLLERR and EPOLLHUP instead of
/// the Unix connection's (`Connection::tcp_error_hangup`: EPOLLERR for a
/// reset not reported yet or the EPIPE a RST left, EPOLLHUP for a reset,
/// both directions shut or a send answered with a RST; a plain close is
/// EPOLLIN|EPOLLRDHUP). An event left with nothing TCP would report is
/// taken out (the rest moved up) and its registration silenced, when it is
/// the only member of the set with its `data` (with several, which one the
/// event is for is not known: it stays as the Unix connection's). Returns
/// how many events are left. The members are looked at outside the table's
/// lock (asking a connection takes its own locks).
pub(crate) fn tcp_hangups(epfd: c_int, events: &mut [libc::epoll_event]) -> usize {
    let n = events.len();
    let hung = |e: &libc::epoll_event| e.events & (HUP | ERR) != 0;
    if !events.iter().any(hung) {
        return n;
    }
    // (data, fd, socket, the only member with that data)
    let candidates: Vec<(u64, c_int, Arc<Socket>, bool)> = {
        let Some(mut sets) = set::sets() else {
            return n;
        };
        let Some(set) = sets.find(epfd) else {
            return n;
        };
        let wanted: Vec<u64> = events.iter().filter(|e| hung(e)).map(|e| e.u64).collect();
        let sharing = |data: u64| set.members.values().filter(|m| m.data == data).count();
        set.members
            .iter()
            .filter(|(_, m)| wanted.contains(&m.data))
            .filter_map(|(&fd, m)| Some((m.data, fd, m.live()?, sharing(m.data) == 1)))
            .collect()
    };
    let mut silence = Vec::new();
    let mut kept = 0;
    for i in 0..n {
        let mut ev = events[i];
        if hung(&ev) {
            let data = ev.u64;
            let found = candidates
                .iter()
                .filter(|(d, ..)| *d == data)
                .find_map(|(_, fd, s, only)| Some((*fd, s.connection()?, *only)));
            if let Some((fd, c, only)) = found {
                let (e, h) = c.tcp_error_hangup(ev.events & (HUP | RDHUP) != 0);
                let tcp =
                    (ev.events & !(HUP | ERR)) | if e { ERR } else { 0 } | if h { HUP } else { 0 };
                if tcp != 0 {
                    ev.events = tcp;
                } else if only {
                    silence.push((fd, data));
                    continue;
                }
            }
        }
        events[kept] = ev;
        kept += 1;
    }
    if !silence.is_empty() {
        silence_members(epfd, &silence, &candidates);
    }
    kept
}

/// Silences the members `fds` (by fd and data) of `epfd` (`tcp_hangups`).
fn silence_members(epfd: c_int, fds: &[(c_int, u64)], found: &[(u64, c_int, Arc<Socket>, bool)]) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    let Some(set) = sets.find(epfd) else {
        return;
    };
    for &(fd, data) in fds {
        let Some(m) = set.members.get_mut(&fd) else {
            continue;
        };
        let Some((.., sock, _)) = found.iter().find(|(d, f, ..)| *d == data && *f == fd) else {
            continue;
        };
        if m.data != data || !std::ptr::eq(m.socket.as_ptr(), Arc::as_ptr(sock)) {
            continue;
        }
        if let Some(c) = sock.connection() {
            c.note_silenced();
        }
        if !m.silenced && named(fd, sock) && register(epfd, fd, m, m.kernel | ET) {
            m.silenced = true;
        }
    }
}

/// Whether `fd` names `sock` now (the kernel finds a registration by the
/// file a number names: review H1, see `Member::materialize`).
fn named(fd: c_int, sock: &Arc<Socket>) -> bool {
    crate::sockets::registry::get(fd).is_some_and(|now| Arc::ptr_eq(&now, sock))
}

/// The kernel's registration of member `m` (`fd` in `epfd`) made `events`.
fn register(epfd: c_int, fd: c_int, m: &Member, events: u32) -> bool {
    let mut ev = libc::epoll_event {
        events,
        u64: m.data,
    };
    waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_MOD, &mut ev)) == 0
}

/// `conn`, silenced in some set (`tcp_hangups`), may now have a hang-up or
/// an error TCP reports (this process shut down writing, or sent and was
/// answered with a RST): its registrations are given back to the kernel as
/// the application made them. The kernel's MOD polls the fd again and
/// wakes the set's sleepers when it is ready, so a waiter asleep on it
/// sees the change. `all`: every registration of `conn` is polled again,
/// silenced or not (a RST: the kernel's wake-up gives edge-triggered ones
/// an edge, which nothing on the Unix connection does here), but one-shot
/// ones (a MOD would arm a disabled one again). Walks every set (rare:
/// once per such change of a connection).
pub(crate) fn unsilence(conn: &Connection, all: bool) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    for set in sets.iter_mut() {
        let Some(&epfd) = set.numbers.first() else {
            continue;
        };
        let wanted = |m: &Member| m.silenced || (all && m.kernel & libc::EPOLLONESHOT as u32 == 0);
        for (&fd, m) in set.members.iter_mut().filter(|(_, m)| wanted(m)) {
            let Some(sock) = m.live() else {
                continue;
            };
            if !sock.connection().is_some_and(|c| std::ptr::eq(c, conn)) || !named(fd, &sock) {
                continue;
            }
            if register(epfd, fd, m, m.kernel) {
                m.silenced = false;
            }
        }
    }
}
