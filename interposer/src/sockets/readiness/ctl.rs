//! epoll_ctl on our sockets and sets: which connections a set holds (and
//! how they are registered), which sets of ours are nested in which, and
//! a dual listener's registrations.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::Arc;

use crate::platform::real::{waits, Action};
use crate::platform::sys::EventIn;
use crate::sockets::conn::Connection;
use crate::sockets::registry;
use crate::sockets::socket::Socket;

use super::set::{self, defer_on, reads, stream, Inner, Member, Sets};
use super::wake::Change;

pub(crate) fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: EventIn<'_>) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        return other_ctl(epfd, op, fd, event);
    };
    let conn = match &*sock {
        Socket::Stream(conn) => conn,
        Socket::Listener(_) => return listener_ctl(epfd, op, fd, event),
        Socket::Bound(_) => return Action::Pass,
        // (An answered one completed before: `calls::iomux::epoll`; a
        // failed one reads as the kernel says: end of file, `refusal`.)
        Socket::Connecting(c) if !c.failed() => return connecting_ctl(epfd, op, fd, event),
        Socket::Connecting(_) => return other_ctl(epfd, op, fd, event),
        Socket::Datagram(_) => return super::datagrams::ctl(epfd, op, fd, event, &sock),
    };
    let asked = match op {
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => event.events(),
        _ => None,
    };
    let (r, unannounced) = stream_ctl(epfd, op, fd, event, &sock, conn);
    // Made by another thread than the set's waiter, which may sleep on
    // the set: woken once the kernel's change is done, when the change
    // may cost the sleep something (decision 44, `wake::Change`).
    if matches!(r, Action::Raw(0) | Action::Done(0)) {
        let change = if unannounced {
            Change::Unannounced
        } else if asked.is_some_and(reads) {
            Change::Harmless
        } else {
            Change::Left(fd, fd)
        };
        super::wake::stir(epfd, change);
    }
    r
}

/// `epoll_ctl` on a connection; and whether it put the connection in
/// with data in its ring no doorbell byte announced (by an eager ADD/MOD).
fn stream_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: EventIn<'_>,
    sock: &Arc<Socket>,
    conn: &Connection,
) -> (Action<c_int>, bool) {
    conn.status_waited();
    let ev = match op {
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => {
            let Some(ev) = event.get() else {
                return (Action::Pass, false); // the kernel's EFAULT
            };
            if ev.events & libc::EPOLLET as u32 != 0 {
                conn.set_edge_triggered();
            }
            Some(ev)
        }
        libc::EPOLL_CTL_DEL => None,
        _ => return (Action::Pass, false),
    };
    if let Some(ev) = ev.filter(|_| op == libc::EPOLL_CTL_MOD) {
        if virtual_ctl(epfd, fd, ev, sock, conn) {
            return (Action::Done(0), false);
        }
    }
    let Some(reading) = ev.filter(|e| reads(e.events)) else {
        // DEL, or a registration that does not read: nothing to watch (a
        // deferral it had ends, and its flag goes up:
        // `Connection::set_deferral`).
        let r = waits::epoll_ctl(epfd, fd, event);
        if r == 0 {
            note(&mut set::sets_always(), epfd, op, fd, ev, sock, false);
        }
        return (Action::Raw(r), false);
    };
    if let Some(r) = deferred_ctl(epfd, op, fd, reading, sock, conn, event) {
        return (Action::Raw(r), false);
    }
    // Eager from before the kernel knows the fd, so no publish can slip
    // between (the flag is up when `watch` returns).
    let pending = conn.watch();
    if pending && edge(reading) {
        conn.edge_fresh();
    }
    let r = waits::epoll_ctl(epfd, fd, event);
    if r == 0 {
        note(&mut set::sets_always(), epfd, op, fd, ev, sock, pending);
    }
    (Action::Raw(r), pending && r == 0)
}

/// ADD or MOD for reading by the one thread that waits on a set whose
/// members may leave their flags down: the flag goes down, the connection
/// listed for that thread's next wait, which looks at its ring before it
/// sleeps (`Connection::watch_deferred`: an event loop that removes a
/// connection while it writes a request and adds it back for the answer
/// would otherwise have every answer ring). All of it under the table's
/// lock, from the decision to the note, so that nobody crowds the set in
/// between (a crowd raises the flags of the members it knows). None: not
/// so (the caller makes the connection eager).
fn deferred_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: libc::epoll_event,
    sock: &Arc<Socket>,
    conn: &Connection,
    event: EventIn<'_>,
) -> Option<c_int> {
    if !defer_on() {
        return None;
    }
    let mut sets = set::sets()?;
    let i = sets.position(epfd)?;
    let set = sets.at(i);
    if !set.solo || set.waiter != Some(crate::platform::sys::thread_id()) {
        return None;
    }
    // Its registrations for reading once this one is made.
    let old = set.members.get(&fd).filter(|m| same(m, sock));
    let reading = conn.sets() + u32::from(!old.is_some_and(|m| reads(m.events)));
    let had = old.and_then(|m| set.deferral(fd, m, conn.sets()));
    let probe = member(ev, sock, false, false);
    conn.set_deferral(Some(set.deferral(fd, &probe, reading)?));
    let Some(readable) = conn.watch_deferred() else {
        conn.set_deferral(had);
        return None;
    };
    if readable && edge(ev) {
        conn.edge_fresh();
    }
    let r = waits::epoll_ctl(epfd, fd, event);
    if r == 0 {
        note(&mut sets, epfd, op, fd, Some(ev), sock, readable);
    } else {
        conn.set_deferral(had);
    }
    Some(r)
}

/// A MOD by a set's one waiter that only adds or takes back EPOLLOUT on a
/// level-triggered member (or changes nothing): answered without the
/// kernel. Event loops (wrk, ae, libuv) add EPOLLOUT before each write and
/// take it back after it: two system calls per request. While the ring
/// has room, our epoll_wait reports EPOLLOUT itself (`pending`), as the
/// kernel would (a writable doorbell socket); once it has none, or someone
/// else may wait on the set (`Set::crowd`, fork, exec), the kernel gets
/// the registration (`Member::materialize`). True when answered.
fn virtual_ctl(
    epfd: c_int,
    fd: c_int,
    ev: libc::epoll_event,
    sock: &Arc<Socket>,
    conn: &Connection,
) -> bool {
    const OUT: u32 = (libc::EPOLLOUT | libc::EPOLLWRNORM) as u32;
    const NOT: u32 =
        (libc::EPOLLET | libc::EPOLLONESHOT | libc::EPOLLEXCLUSIVE | libc::EPOLLWAKEUP) as u32;
    if !defer_on() || ev.events & NOT != 0 || !reads(ev.events) {
        return false;
    }
    let Some(mut sets) = set::sets() else {
        return false;
    };
    let Some(set) = sets.find(epfd) else {
        return false;
    };
    if !set.solo
        || set.waiter != Some(crate::platform::sys::thread_id())
        || set.generation != crate::platform::fork::generation()
    {
        return false;
    }
    let Some(m) = set.members.get_mut(&fd).filter(|m| same(m, sock)) else {
        return false;
    };
    // The kernel's registration must already be this one without
    // EPOLLOUT: then only EPOLLOUT differs, which the ring answers.
    if ({ m.data } != { ev.u64 })
        || m.silenced
        || m.kernel & (NOT | OUT) != 0
        || m.kernel != ev.events & !OUT
    {
        return false;
    }
    let out = ev.events & OUT != 0;
    if out && !conn.has_room() {
        return false; // the kernel's write-space wake-up is needed
    }
    m.events = ev.events;
    if out && !m.virtual_out {
        set.virtual_out.push(fd);
    }
    m.virtual_out = out;
    true
}

/// Registered with EPOLLET: data in the ring at ADD/MOD is an edge (the
/// kernel reports a ready fd once when it joins), which our epoll_wait
/// reports if no doorbell byte does (`Connection::edge_fresh`); later
/// arrivals are edges of their own (`Connection::edge_news`).
fn edge(ev: libc::epoll_event) -> bool {
    ev.events & libc::EPOLLET as u32 != 0
}

/// Whether member `m` is `sock`'s connection.
fn same(m: &Member, sock: &Arc<Socket>) -> bool {
    std::ptr::eq(m.socket.as_ptr(), Arc::as_ptr(sock))
}

fn member(ev: libc::epoll_event, sock: &Arc<Socket>, pending: bool, listed: bool) -> Member {
    Member {
        events: ev.events,
        data: ev.u64,
        socket: Arc::downgrade(sock),
        pending,
        reported: false,
        conn: match &**sock {
            Socket::Stream(c) => set::conn_key(c),
            _ => 0,
        },
        listed: listed || pending,
        kernel: ev.events,
        virtual_out: false,
        silenced: false,
        echo_due: false,
        resilenced: false,
        spent: 0,
        empty_looks: 0,
    }
}

/// The set's entry after a successful epoll_ctl (made if needed).
/// O(log members): an event loop makes several epoll_ctl calls per
/// request (issue 14: a walk over every member here was 38% of a client's
/// time at 200 connections).
fn note(
    sets: &mut Sets,
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: Option<libc::epoll_event>,
    sock: &Arc<Socket>,
    pending: bool,
) {
    let Socket::Stream(conn) = &**sock else {
        return;
    };
    if op == libc::EPOLL_CTL_DEL {
        if let Some(set) = sets.find(epfd) {
            if let Some(m) = set.members.remove(&fd) {
                leave(&m, &set.unarmed);
            }
        }
        return;
    }
    let Some(ev) = ev else { return };
    let i = sets.entry(epfd);
    let set = sets.at(i);
    set.sweep();
    let old = set.members.get(&fd);
    let keys = old.map(|m| (m.data, m.conn));
    let listed = old.is_some_and(|m| m.listed);
    let was_same = old.is_some_and(|m| same(m, sock));
    // The new registration is counted before the old one is taken back,
    // so that a count read meanwhile never drops to zero.
    conn.count_sets(ev.events, true);
    match set.members.insert(fd, member(ev, sock, pending, listed)) {
        Some(old) if was_same => conn.count_sets(old.events, false),
        // The same number, another connection (closed past us, or its
        // number given to this one).
        Some(old) => leave(&old, &set.unarmed),
        None => {}
    }
    set.index(fd, keys);
    set.apply_deferral(fd, &set.members[&fd], conn);
    if pending && !listed {
        set.pending.push(fd);
    }
}

/// A member left its set (DEL, or its number given to another
/// connection): one registration for reading fewer, and its deferral to
/// that set (`list`) ends, its flag raised.
fn leave(m: &Member, list: &Arc<crate::sockets::conn::Unarmed>) {
    let live = m.live();
    if let Some(c) = stream(&live) {
        c.count_sets(m.events, false);
        c.end_deferral(list);
    }
}

/// Readiness a connect in progress keeps out of its kernel registrations:
/// the acceptor's decline byte makes the Unix connection readable with
/// nothing for the application to read (an event loop that counts that
/// EAGAIN as an error, as wrk does, saw read errors).
pub(crate) const CONNECTING_HIDES: u32 = (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;

/// epoll_ctl on a connect in progress: the kernel's registration, without
/// `CONNECTING_HIDES` (the kernel still reports EPOLLOUT at completion);
/// the application's own is noted, made whole once connected
/// (`connecting::settle`, `restore_hidden`). A one-shot registration is
/// made as asked: re-arming it later could report it twice.
fn connecting_ctl(epfd: c_int, op: c_int, fd: c_int, event: EventIn<'_>) -> Action<c_int> {
    let asked = match event.get() {
        Some(ev)
            if ev.events & libc::EPOLLONESHOT as u32 == 0 && ev.events & CONNECTING_HIDES != 0 =>
        {
            ev
        }
        _ => return other_ctl(epfd, op, fd, event),
    };
    if !crate::sockets::carry::is_fresh(fd) {
        return other_ctl(epfd, op, fd, event);
    }
    let mut hidden = asked;
    hidden.events &= !CONNECTING_HIDES;
    let r = waits::epoll_ctl(epfd, fd, EventIn::own(op, &mut hidden));
    if r == 0 {
        crate::sockets::carry::epoll_ctl(epfd, op, fd, Some(asked));
    }
    Action::Raw(r)
}

/// A connect in progress completed on the same file: the registration
/// `connecting_ctl` made without `CONNECTING_HIDES` gets the application's
/// events back. The kernel refuses EPOLL_CTL_MOD on an exclusive
/// registration (EINVAL: s30's review, EPOLLIN never reported), so that
/// one is removed and added again; one the application removed meanwhile
/// is not carried, and a failed removal adds nothing.
pub(crate) fn restore_hidden(epfd: c_int, fd: c_int, ev: libc::epoll_event) {
    if ev.events & libc::EPOLLONESHOT as u32 != 0 || ev.events & CONNECTING_HIDES == 0 {
        return;
    }
    let mut ev = ev;
    let r = if ev.events & libc::EPOLLEXCLUSIVE as u32 != 0 {
        let mut none = libc::epoll_event { events: 0, u64: 0 };
        match waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_DEL, &mut none)) {
            0 => waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_ADD, &mut ev)),
            r => r,
        }
    } else {
        waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_MOD, &mut ev))
    };
    if r != 0 {
        log!(
            debug,
            "fd {fd}: epoll set {epfd}: registration not restored"
        );
    }
}

/// epoll_ctl on an fd that is not one of our sockets: an epoll set of ours
/// (nested), or a kernel socket that may still be re-pointed (`carry`).
fn other_ctl(epfd: c_int, op: c_int, fd: c_int, event: EventIn<'_>) -> Action<c_int> {
    if let Some(r) = nest(epfd, op, fd, event) {
        return Action::Raw(r);
    }
    if !crate::sockets::carry::is_fresh(fd) {
        return Action::Pass;
    }
    let r = waits::epoll_ctl(epfd, fd, event);
    if r == 0 {
        // (The kernel just read it: ADD/MOD succeeded.)
        let ev = (op != libc::EPOLL_CTL_DEL).then(|| event.get()).flatten();
        crate::sockets::carry::epoll_ctl(epfd, op, fd, ev);
    }
    Action::Raw(r)
}

/// `fd` is an epoll set of ours, added to (or changed in, or removed from)
/// set `epfd`: a wait on `epfd` sleeps in the kernel for it, so its
/// members keep their flags up from now on (crowded), and our epoll_wait
/// on `epfd` reports it readable exactly while one of its members holds
/// data no doorbell announced (`pending`). None: `fd` is no set of ours.
fn nest(epfd: c_int, op: c_int, fd: c_int, event: EventIn<'_>) -> Option<c_int> {
    let mut sets = set::sets()?;
    let inner = sets.find(fd)?;
    if op != libc::EPOLL_CTL_DEL {
        inner.crowd();
    }
    let id = inner.id;
    let r = waits::epoll_ctl(epfd, fd, event);
    if r == 0 {
        if op == libc::EPOLL_CTL_DEL {
            if let Some(outer) = sets.find(epfd) {
                outer.inner.remove(&fd);
            }
        } else if let Some(ev) = event.get() {
            let i = sets.entry(epfd);
            let nested = Inner {
                events: ev.events,
                data: ev.u64,
                reported: false,
                set: id,
            };
            sets.at(i).inner.insert(fd, nested);
        }
    }
    Some(r)
}

/// A listener's fd is an epoll instance, which cannot be added with
/// EPOLLEXCLUSIVE (nginx asks for it): without it, every waiter is woken
/// and all but one accept() get EAGAIN.
fn listener_ctl(epfd: c_int, op: c_int, fd: c_int, event: EventIn<'_>) -> Action<c_int> {
    if op != libc::EPOLL_CTL_ADD && op != libc::EPOLL_CTL_MOD {
        return Action::Pass;
    }
    // (epoll_ctl(2) requires `event` valid for reads for ADD and MOD; null
    // is passed through.)
    match event.events() {
        Some(ev) if ev & libc::EPOLLEXCLUSIVE as u32 != 0 => {
            // (Read whole only now: the same valid event.)
            let Some(mut copy) = event.get() else {
                return Action::Pass;
            };
            copy.events &= !(libc::EPOLLEXCLUSIVE as u32);
            Action::Raw(waits::epoll_ctl(epfd, fd, EventIn::own(op, &mut copy)))
        }
        _ => Action::Pass,
    }
}

/// `fd` now refers to one of our objects: the registrations noted while it
/// was a fresh kernel socket (`carry`) are made again, through our own
/// epoll_ctl logic, as the application's call would have gone. `keep`:
/// the socket is still fresh (bound, not yet listening or connected).
pub(crate) fn replay_carried(fd: c_int, keep: bool) {
    let mine = crate::sockets::carry::take(fd, keep);
    for (epfd, mut ev) in mine {
        let r = match epoll_ctl(
            epfd,
            libc::EPOLL_CTL_ADD,
            fd,
            EventIn::own(libc::EPOLL_CTL_ADD, &mut ev),
        ) {
            Action::Raw(r) | Action::Done(r) => r,
            Action::Fail(_) => -1,
            Action::Pass => {
                // (A listener's epoll instance cannot take EPOLLEXCLUSIVE.)
                ev.events &= !(libc::EPOLLEXCLUSIVE as u32);
                waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_ADD, &mut ev))
            }
        };
        if r != 0 {
            log!(
                debug,
                "fd {fd}: its registration in epoll set {epfd} could not be carried over"
            );
        }
    }
}

/// After exec: the inherited epoll set `epfd` holds these registrations
/// (fd, events, data: the kernel's, from /proc/self/fdinfo). Those of
/// connections we re-attached become members, pending when their ring
/// holds data no doorbell announced (the previous program's flags were
/// raised before it exec'd, `crowd_all`; data that came while one was
/// down, or while a reader was lazy, has no byte for the kernel to see).
pub(crate) fn adopt(epfd: c_int, registrations: &[(c_int, u32, u64)]) {
    for &(fd, events, data) in registrations {
        let Some(sock) = registry::get(fd) else {
            continue;
        };
        let Socket::Stream(conn) = &*sock else {
            continue;
        };
        if events & libc::EPOLLET as u32 != 0 {
            conn.set_edge_triggered();
        }
        let pending = reads(events) && conn.watch();
        let ev = libc::epoll_event { events, u64: data };
        let mut sets = set::sets_always();
        note(
            &mut sets,
            epfd,
            libc::EPOLL_CTL_ADD,
            fd,
            Some(ev),
            &sock,
            pending,
        );
        log!(
            debug,
            "fd {fd}: a member of inherited epoll set {epfd}, pending {pending}"
        );
    }
}
