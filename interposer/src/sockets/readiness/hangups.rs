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
use std::collections::HashMap;
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
/// taken out (the rest moved up) and its registration silenced. When
/// several members share the event's `data` (a proxy's one pointer per
/// session), the event is theirs whose Unix connection says all its bits
/// now (a poll of each: review s32 `samedata.c`, where a paused side's
/// hang-up woke the wait for the other side, whose read then blocked).
/// Returns how many events are left. The members are looked at outside
/// the table's lock (asking a connection takes its own locks).
pub(crate) fn tcp_hangups(epfd: c_int, events: &mut [libc::epoll_event]) -> usize {
    let n = events.len();
    let hung = |e: &libc::epoll_event| e.events & (HUP | ERR) != 0;
    if !events.iter().any(hung) {
        return n;
    }
    let candidates: Vec<Candidate> = {
        let Some(mut sets) = set::sets() else {
            return n;
        };
        let Some(set) = sets.find(epfd) else {
            return n;
        };
        // (One pass over the members: a set of thousands may report many
        // hang-ups at once.)
        let mut wanted: HashMap<u64, usize> = events
            .iter()
            .filter(|e| hung(e))
            .map(|e| (e.u64, 0))
            .collect();
        let members: Vec<(c_int, &Member)> = set
            .members
            .iter()
            .filter(|(_, m)| match wanted.get_mut(&m.data) {
                Some(n) => {
                    *n += 1;
                    true
                }
                None => false,
            })
            .map(|(&fd, m)| (fd, m))
            .collect();
        members
            .into_iter()
            .filter_map(|(fd, m)| {
                Some(Candidate {
                    data: m.data,
                    fd,
                    sock: m.live()?,
                    kernel: m.kernel,
                    shared: wanted.get(&m.data).is_some_and(|&n| n > 1),
                    silenced: m.silenced,
                })
            })
            .collect()
    };
    let mut silence = Vec::new();
    let mut restore = Vec::new();
    let mut kept = 0;
    for i in 0..n {
        let mut ev = events[i];
        if hung(&ev) {
            match tcp_bits(&ev, &candidates) {
                Some((tcp, fds)) if tcp != 0 => {
                    ev.events = tcp;
                    restore.extend(fds);
                }
                Some((_, fds)) => {
                    silence.extend(fds.into_iter().map(|fd| (fd, ev.u64)));
                    continue;
                }
                None => {}
            }
        }
        events[kept] = ev;
        kept += 1;
    }
    if !silence.is_empty() {
        silence_members(epfd, &silence, &candidates);
    }
    // A silenced member reported (an edge its edge-triggered registration
    // got): level-triggered again, as the application made it.
    if candidates
        .iter()
        .any(|c| c.silenced && restore.contains(&c.fd))
    {
        restore_members(epfd, &restore);
    }
    kept
}

/// A member of the waited set an event with a hang-up may be for.
struct Candidate {
    data: u64,
    fd: c_int,
    sock: Arc<Socket>,
    /// The kernel's registration (`Member::kernel`).
    kernel: u32,
    /// Another member has the same `data`.
    shared: bool,
    /// `Member::silenced` when looked at.
    silenced: bool,
}

/// The bits kernel TCP reports for event `ev` and the members it is for
/// (None: no connection of the set is known to be its source: it stays as
/// it is).
fn tcp_bits(ev: &libc::epoll_event, candidates: &[Candidate]) -> Option<(u32, Vec<c_int>)> {
    let data = ev.u64;
    let mut tcp = 0;
    let mut fds = Vec::new();
    for cand in candidates.iter().filter(|c| c.data == data) {
        let Some(c) = cand.sock.connection() else {
            continue;
        };
        if cand.shared && ev.events & !c.unix_revents(cand.kernel) != 0 {
            continue; // not this member's: it does not say those bits now
        }
        let (e, h) = c.tcp_error_hangup(ev.events & (HUP | RDHUP) != 0);
        tcp |= (ev.events & !(HUP | ERR)) | if e { ERR } else { 0 } | if h { HUP } else { 0 };
        fds.push(cand.fd);
        if !cand.shared {
            break;
        }
    }
    (!fds.is_empty()).then_some((tcp, fds))
}

/// Silences the members `fds` (by fd and data) of `epfd` (`tcp_hangups`).
fn silence_members(epfd: c_int, fds: &[(c_int, u64)], found: &[Candidate]) {
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
        let Some(sock) = found
            .iter()
            .find(|c| c.data == data && c.fd == fd)
            .map(|c| &c.sock)
        else {
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

/// The silenced members `fds` of `epfd` get the registration the
/// application made back.
fn restore_members(epfd: c_int, fds: &[c_int]) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    let Some(set) = sets.find(epfd) else {
        return;
    };
    for &fd in fds {
        let Some(m) = set.members.get_mut(&fd).filter(|m| m.silenced) else {
            continue;
        };
        let Some(sock) = m.live() else {
            continue;
        };
        if named(fd, &sock) && register(epfd, fd, m, m.kernel) {
            m.silenced = false;
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
