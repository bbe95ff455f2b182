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
use std::cell::Cell;
use std::collections::HashSet;
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
/// EPOLLIN|EPOLLRDHUP). Each event is one registration's, as the kernel's
/// are: it is given to one member (`tcp_bits`), whose Unix connection
/// says all its bits now (a zero-timeout poll of it), and gets that
/// member's TCP bits. The event's `data` may be shared with other members
/// (a proxy's one pointer per session: review s32 `samedata.c`; each gets
/// its own bits, review s35 `shared2.c`) or with an fd that is no
/// connection (a pipe whose writer closed: review hup14 `mixed.c`); an
/// event no member says is passed on as it is. An event left with nothing
/// TCP would report is taken out (the rest moved up) only if its member
/// is hung up and silenced (`silence_members`), whether or not a member
/// with the same `data` took another event (review s35 `mix.c`: one left
/// level said EPOLLHUP at every wait); one that cannot be silenced is
/// passed on as it is (a level hang-up left out would end every wait at
/// once: a busy loop). Returns how many events are left. The members are
/// looked at outside the table's lock (asking a connection takes its own
/// locks).
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
        let alone = set.alone;
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
                    echo_due: m.echo_due,
                    spent: m.spent,
                    // (A silenced member whose echo came has no event
                    // in a set no other process holds: passed over.)
                    quiet: alone && m.silenced && !m.echo_due,
                    unix: Cell::new(None),
                })
            }));
        }
        candidates
    };
    let mut verdicts = Vec::with_capacity(n);
    let mut quiet = Vec::new();
    let mut restore = Vec::new();
    let mut spent = Vec::new();
    let mut taken = HashSet::new();
    for ev in events.iter() {
        let verdict = if hung(ev) {
            tcp_bits(ev, &candidates, &mut taken)
        } else {
            Verdict::Keep
        };
        let (Verdict::Tcp(_, i) | Verdict::Quiet(i)) = verdict else {
            verdicts.push(verdict);
            continue;
        };
        let c = &candidates[i];
        if c.kernel & (ET | ONESHOT) != 0 {
            spent.push((c.fd, c.data, ev.events));
        }
        match verdict {
            Verdict::Tcp(..) => restore.push(c.fd),
            _ => quiet.push((c.fd, c.data)),
        }
        verdicts.push(verdict);
    }
    if !spent.is_empty() {
        note_spent(epfd, &spent);
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
            Verdict::Quiet(c) if loud.contains(&candidates[c].fd) => {}
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
    /// `Member::echo_due` when looked at.
    echo_due: bool,
    /// `Member::spent` when looked at.
    spent: u32,
    /// Silenced, its echo come, in a set no other process holds
    /// (`Set::alone`): its edge-triggered registration has no event
    /// (review s35 `pipehup.c`: a pipe's HUP with its `data` was taken
    /// for it and left out).
    quiet: bool,
    /// Its Unix connection's bits, once asked (one poll per answer).
    unix: Cell<Option<u32>>,
}

/// What becomes of an event with a hang-up or an error (`tcp_bits`).
#[derive(Clone, Copy)]
enum Verdict {
    /// No member says it: passed on as it is.
    Keep,
    /// These bits, for this member (an index in the candidates).
    Tcp(u32, usize),
    /// Nothing TCP reports, for this member, hung up: left out once it
    /// is silenced.
    Quiet(usize),
}

/// The bits kernel TCP reports for event `ev` and the member it is for:
/// the first not given an event yet (`taken`: the kernel reports a
/// registration once per answer) whose Unix connection says the event's
/// bits now, no more and no fewer (a system call per member, once). The
/// kernel's event is its poll of the registration's fd when it was
/// reported, which a hung-up connection still says; another fd's with the
/// same `data` need not (a pipe's HUP is not a closed connection's
/// IN|RDHUP|HUP). A member that cannot be reported now is passed over: a
/// one-shot one disarmed by its hang-up's event, an edge-triggered one
/// whose connection says what it said at its last (`Member::spent`; review
/// s35 `again.c`: a pipe's IN|HUP beside them became a connection's IN).
/// A state that changed in between passes the event on as it is.
fn tcp_bits(
    ev: &libc::epoll_event,
    candidates: &[Candidate],
    taken: &mut HashSet<c_int>,
) -> Verdict {
    let data = ev.u64;
    // Level registrations first, then silenced ones whose echo is due,
    // then the others (reported only if given back past us): members
    // that say the same bits are told apart by what the kernel would
    // report (review s35 `crowd2.c`: one we shut down beside silenced
    // ones with the same `data`).
    let rank = |c: &Candidate| match (c.silenced, c.echo_due) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    };
    for pass in 0..3 {
        for (i, cand) in candidates.iter().enumerate() {
            if cand.data != data || cand.quiet || rank(cand) != pass || taken.contains(&cand.fd) {
                continue;
            }
            if cand.kernel & ONESHOT != 0 && cand.spent != 0 {
                continue;
            }
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
            } else if let Some(u) = cand.unix.get() {
                u
            } else {
                let u = c.unix_revents(cand.kernel);
                cand.unix.set(Some(u));
                u
            };
            if unix != ev.events {
                continue; // not this member's: it does not say those bits now
            }
            if cand.kernel & ET != 0 && cand.spent == unix {
                continue; // its edge was reported: nothing new since
            }
            taken.insert(cand.fd);
            let (e, h) = c.tcp_error_hangup(ev.events & (HUP | RDHUP) != 0);
            let own =
                (ev.events & !(HUP | ERR)) | if e { ERR } else { 0 } | if h { HUP } else { 0 };
            return match own {
                // (A member not hung up is never silenced: its level
                // registration would not report later data otherwise.)
                0 if unix & HUP == 0 => Verdict::Keep,
                0 => Verdict::Quiet(i),
                own => Verdict::Tcp(own, i),
            };
        }
    }
    Verdict::Keep
}

/// The one-shot and edge-triggered members `fds` (fd, data, the event's
/// bits) of `epfd` were reported a hang-up (`Member::spent`).
fn note_spent(epfd: c_int, fds: &[(c_int, u64, u32)]) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    let Some(set) = sets.find(epfd) else {
        return;
    };
    for &(fd, data, bits) in fds {
        if let Some(m) = set.members.get_mut(&fd).filter(|m| m.data == data) {
            m.spent = bits;
        }
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
            m.spent = 0;
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
            m.spent = 0;
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
                m.spent = 0;
            }
        }
    }
}
