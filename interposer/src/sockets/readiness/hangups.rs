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
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::platform::real::waits;
use crate::platform::sys::EventIn;
use crate::sockets::conn::Connection;
use crate::sockets::socket::Socket;

use super::set::{self, conn_key, Member};

const HUP: u32 = libc::EPOLLHUP as u32;
const ERR: u32 = libc::EPOLLERR as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
const ET: u32 = libc::EPOLLET as u32;
const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;

/// Events of `epfd` (the first of `events`) that report a hang-up or an
/// error of a connection get kernel TCP's EPOLLERR and EPOLLHUP instead of
/// the Unix connection's (`Connection::tcp_error_hangup`: EPOLLERR for a
/// reset not reported yet or the EPIPE a RST left, EPOLLHUP for a reset,
/// both directions shut or a send answered with a RST; a plain close is
/// EPOLLIN|EPOLLRDHUP). An event is a member's only if the member's Unix
/// connection says all its bits now (a zero-timeout poll of it): the
/// event's `data` may be shared with other members (a proxy's one pointer
/// per session: review s32 `samedata.c`) or with an fd that is no
/// connection (a pipe whose writer closed: review hup14 `mixed.c`); an
/// event no member says is passed on as it is. An event left with nothing
/// TCP would report is taken out (the rest moved up) only if each of its
/// members is hung up and silenced (`silence_members`); one that cannot be
/// silenced is passed on as it is (a level hang-up left out would end
/// every wait at once: a busy loop). Returns how many events are left.
/// The members are looked at outside the table's lock (asking a
/// connection takes its own locks).
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
        // Only the members whose `data` an event carries, found by their
        // `data` (issue 14: a walk over the set per close cost a server of
        // 10,000 connections O(set) per closed one).
        let mut wanted: Vec<u64> = events.iter().filter(|e| hung(e)).map(|e| e.u64).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut candidates = Vec::new();
        for data in wanted {
            let fds = set.by_data.members(data, &set.members, |m| m.data);
            let shared = fds.len() > 1;
            candidates.extend(fds.into_iter().filter_map(|fd| {
                let m = set.members.get(&fd)?;
                Some(Candidate {
                    data,
                    fd,
                    sock: m.live()?,
                    kernel: m.kernel,
                    shared,
                    silenced: m.silenced,
                })
            }));
        }
        candidates
    };
    let mut verdicts = Vec::with_capacity(n);
    let mut quiet = Vec::new();
    let mut restore = Vec::new();
    let mut taken = HashSet::new();
    let mut again: HashMap<(u64, u32), (usize, Verdict)> = HashMap::new();
    for ev in events.iter() {
        let mut fresh = true;
        let verdict = if !hung(ev) {
            Verdict::Keep
        } else if let Some((left, v)) = again
            .get_mut(&(ev.u64, ev.events))
            .filter(|(left, _)| *left > 0)
        {
            // Another of the members one event took (same `data`, same
            // bits): the kernel reports each registration, so up to one
            // more event per member taken gets the same verdict (left in
            // as it came, a registration for nothing sharing a proxy's
            // `data` said EPOLLHUP where TCP says nothing). Past that
            // count it is no member's (a pipe's), as before. (Its members
            // are silenced or given back once.)
            *left -= 1;
            fresh = false;
            v.clone()
        } else {
            let v = tcp_bits(ev, &candidates, &mut taken);
            if let Verdict::Tcp(_, fds) | Verdict::Quiet(fds) = &v {
                if fds.len() > 1 {
                    again.insert((ev.u64, ev.events), (fds.len() - 1, v.clone()));
                }
            }
            v
        };
        match &verdict {
            _ if !fresh => {}
            Verdict::Tcp(_, fds) => restore.extend(fds.iter().copied()),
            Verdict::Quiet(fds) => quiet.extend(fds.iter().map(|&fd| (fd, ev.u64))),
            Verdict::Keep => {}
        }
        verdicts.push(verdict);
    }
    let loud = if quiet.is_empty() {
        Vec::new()
    } else {
        silence_members(epfd, &quiet, &candidates)
    };
    let mut kept = 0;
    for (i, verdict) in verdicts.into_iter().enumerate() {
        let mut ev = events[i];
        match verdict {
            Verdict::Tcp(tcp, _) => ev.events = tcp,
            // Not silenced: the Unix connection's bits, as before
            // decision 47, rather than a wait that never sleeps.
            Verdict::Quiet(fds) if fds.iter().any(|fd| loud.contains(fd)) => {}
            Verdict::Quiet(_) => continue,
            Verdict::Keep => {}
        }
        events[kept] = ev;
        kept += 1;
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

/// What becomes of an event with a hang-up or an error (`tcp_bits`).
#[derive(Clone)]
enum Verdict {
    /// No member says it: passed on as it is.
    Keep,
    /// These bits, for these members.
    Tcp(u32, Vec<c_int>),
    /// Nothing TCP reports, for these members, each hung up: left out
    /// once they are silenced.
    Quiet(Vec<c_int>),
}

/// The bits kernel TCP reports for event `ev` and the members it is for:
/// those whose Unix connection says the event's bits now, no more and no
/// fewer (a system call each). The kernel's event is its poll of the
/// registration's fd when it was reported, which a hung-up connection
/// still says; another fd's with the same `data` need not (a pipe's HUP
/// is not a closed connection's IN|RDHUP|HUP). A state that changed in
/// between passes the event on as it is. A registration is reported once
/// per answer: a member given an event already (`taken`) is not given
/// another (the other fd's, with the same `data` and bits).
fn tcp_bits(
    ev: &libc::epoll_event,
    candidates: &[Candidate],
    taken: &mut HashSet<c_int>,
) -> Verdict {
    let data = ev.u64;
    let mut tcp = 0;
    let mut fds = Vec::new();
    let mut quiet = Vec::new();
    let mut all_hung = true;
    for cand in candidates
        .iter()
        .filter(|c| c.data == data && !taken.contains(&c.fd))
    {
        let Some(c) = cand.sock.connection() else {
            continue;
        };
        // An event with bits besides the hang-up is never left out: the
        // member's, when it is alone with its `data` and its ring shows
        // an end (the peer's close, shutdown or reset, or ours), needs no
        // look (a client's every close: review hup14 measured a poll per
        // request of ab).
        let sure = !cand.shared && ev.events & !(HUP | ERR) != 0 && c.ended_in_ring();
        let unix = if sure {
            ev.events
        } else {
            c.unix_revents(cand.kernel)
        };
        if unix != ev.events {
            continue; // not this member's: it does not say those bits now
        }
        all_hung &= unix & HUP != 0;
        let (e, h) = c.tcp_error_hangup(ev.events & (HUP | RDHUP) != 0);
        let own = (ev.events & !(HUP | ERR)) | if e { ERR } else { 0 } | if h { HUP } else { 0 };
        if own != 0 {
            tcp |= own;
            fds.push(cand.fd);
        } else {
            quiet.push(cand.fd);
        }
        if !cand.shared {
            break;
        }
    }
    // Members sharing `data` with only a hang-up each: those TCP reports
    // it for take the event, the others (silenced, or to be) are left as
    // they are (given back, they said EPOLLHUP at every later wait).
    if tcp == 0 {
        fds = quiet;
    }
    taken.extend(fds.iter().copied());
    match (fds.is_empty(), tcp) {
        (true, _) => Verdict::Keep,
        // (A member not hung up is never silenced: its level
        // registration would not report later data otherwise.)
        (false, 0) if !all_hung => Verdict::Keep,
        (false, 0) => Verdict::Quiet(fds),
        (false, tcp) => Verdict::Tcp(tcp, fds),
    }
}

/// Silences the members `fds` (by fd and data) of `epfd` (`tcp_hangups`):
/// the kernel's registration made edge-triggered. Returns the members
/// that could not be (their events must be reported). A member silenced
/// already is silenced again unless the event is the one its silencing
/// queued (`Member::echo_due`): another process that shares the set may
/// have given the level registration back (review hup14, cases 7 and 8);
/// each silencing queues one event at most, and one that comes back after
/// a second silencing is reported (`Member::resilenced`), so this never
/// loops.
fn silence_members(epfd: c_int, fds: &[(c_int, u64)], found: &[Candidate]) -> Vec<c_int> {
    let mut loud = Vec::new();
    let Some(mut sets) = set::sets() else {
        loud.extend(fds.iter().map(|&(fd, _)| fd));
        return loud;
    };
    let Some(set) = sets.find(epfd) else {
        loud.extend(fds.iter().map(|&(fd, _)| fd));
        return loud;
    };
    for &(fd, data) in fds {
        let sock = found
            .iter()
            .find(|c| c.data == data && c.fd == fd)
            .map(|c| &c.sock);
        let m = set.members.get_mut(&fd).filter(|m| {
            m.data == data && sock.is_some_and(|s| std::ptr::eq(m.socket.as_ptr(), Arc::as_ptr(s)))
        });
        let (Some(m), Some(sock)) = (m, sock) else {
            loud.push(fd);
            continue;
        };
        if m.silenced && std::mem::take(&mut m.echo_due) {
            continue;
        }
        if m.silenced && m.resilenced {
            // Back after two silencings: an fd that is no member's with
            // the same `data` and bits (a pipe whose writer closed beside
            // a connection registered for nothing), or given back again
            // by another process: reported.
            loud.push(fd);
            continue;
        }
        // (A number closed after a dup, review hup14 case 2: the kernel's
        // registration cannot be reached through it.)
        if named(fd, sock) && register(epfd, fd, m, m.kernel | ET) {
            m.resilenced = m.silenced;
            m.silenced = true;
            m.echo_due = true;
            if let Some(c) = sock.connection() {
                c.note_silenced();
            }
        } else if m.kernel & (ET | ONESHOT) == 0 {
            loud.push(fd);
        }
        // (An edge-triggered or one-shot registration reports the
        // hang-up once: left out, it does not come back.)
    }
    loud
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
            m.echo_due = false;
            m.resilenced = false;
        }
    }
}

/// Whether `fd` names `sock` now (the kernel finds a registration by the
/// file a number names: review H1, see `Member::materialize`).
fn named(fd: c_int, sock: &Arc<Socket>) -> bool {
    crate::sockets::registry::get(fd).is_some_and(|now| Arc::ptr_eq(&now, sock))
}

/// The kernel's registration of member `m` (`fd` in `epfd`) made `events`.
/// The kernel refuses EPOLL_CTL_MOD on an exclusive registration (EINVAL):
/// that one is removed and added again (as `restore_hidden` does); a
/// failed removal adds nothing.
fn register(epfd: c_int, fd: c_int, m: &Member, events: u32) -> bool {
    let mut ev = libc::epoll_event {
        events,
        u64: m.data,
    };
    if events & EXCLUSIVE == 0 {
        return waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_MOD, &mut ev)) == 0;
    }
    let mut none = libc::epoll_event { events: 0, u64: 0 };
    waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_DEL, &mut none)) == 0
        && waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_ADD, &mut ev)) == 0
}

/// `conn`, silenced in some set (`tcp_hangups`), may now have a hang-up or
/// an error TCP reports (this process shut down writing, or sent and was
/// answered with a RST): its registrations are given back to the kernel as
/// the application made them. The kernel's MOD polls the fd again and
/// wakes the set's sleepers when it is ready, so a waiter asleep on it
/// sees the change. `all`: every registration of `conn` is polled again,
/// silenced or not (a RST: the kernel's wake-up gives edge-triggered ones
/// an edge, which nothing on the Unix connection does here), but one-shot
/// ones (a MOD would arm a disabled one again). Looks only at `conn`'s
/// registrations (`Set::by_conn`) in each set (few).
pub(super) fn unsilence_if_any(conn: &Connection, all: bool) {
    if super::set::any() {
        unsilence(conn, all);
    }
}

/// Registrations given back (see `unsilence_if_any`, the connection's
/// hook, which `Sets::made` hands down).
fn unsilence(conn: &Connection, all: bool) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    let key = conn_key(conn);
    for set in sets.iter_mut() {
        let Some(&epfd) = set.numbers.first() else {
            continue;
        };
        let wanted = |m: &Member| m.silenced || (all && m.kernel & ONESHOT == 0);
        for fd in set
            .by_conn
            .members(key as u64, &set.members, |m| m.conn as u64)
        {
            let Some(m) = set.members.get_mut(&fd).filter(|m| wanted(m)) else {
                continue;
            };
            let Some(sock) = m.live() else {
                continue;
            };
            if !sock.connection().is_some_and(|c| std::ptr::eq(c, conn)) || !named(fd, &sock) {
                continue;
            }
            if register(epfd, fd, m, m.kernel) {
                m.silenced = false;
                m.echo_due = false;
                m.resilenced = false;
            }
        }
    }
}
