//! What our epoll_wait reports beside the kernel: members whose data no
//! doorbell announced (it came while the reader was lazy, or while its
//! flag was down), and sets of ours nested in the waited one that hold
//! such members. And the looks a wait makes to decide whether to spin.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::platform::real::waits;
use crate::platform::sys::EventIn;

use super::set::{self, stream, Member, Set};
use crate::sockets::conn::Unarmed;

/// What `pending` found for one epoll set.
pub(crate) struct Pending {
    /// EPOLLIN for members whose ring holds data the kernel may not report.
    pub events: Vec<libc::epoll_event>,
    /// Each event's registration (the member's events, several or-ed when
    /// one event took several): a kernel event with bits it did not ask
    /// for is another registration's (`epoll::merge`).
    pub masks: Vec<u32>,
    /// A member's reader is asleep taking doorbell bytes: data it leaves in
    /// the ring would have no byte, so a waiter must look again soon.
    pub watch_closely: bool,
    /// Every event may be left unreported and found again by the next
    /// call: none took an edge or a one-shot (EPOLLET, EPOLLONESHOT).
    pub replayable: bool,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            events: Vec::new(),
            masks: Vec::new(),
            watch_closely: false,
            replayable: true,
        }
    }
}

/// Members that joined with data no doorbell announced, or while a reader
/// slept taking bytes (`Connection::watch`), are reported while their ring
/// holds data; a member stops being pending once its ring is drained and
/// no taker is left (from then on the kernel reports it). Nested sets of
/// ours are reported while one of their members would be. At most `max`
/// events (the caller's room). EPOLLET and EPOLLONESHOT registrations are
/// reported once per ADD/MOD (a one-shot one is then disabled, as the
/// kernel does).
/// None when `epfd` holds no connection nor set of ours (epoll_wait then
/// passes through).
///
/// `entry`: the look a call makes when it begins, which counts a call for
/// each member whose flag is down (`IDLE_LOOKS`); a spin's and a sleep's
/// looks count none (a spin looks thousands of times a millisecond), and
/// any look that finds data starts a member's count again.
pub(crate) fn pending(epfd: c_int, max: usize, entry: bool) -> Option<Pending> {
    let mut sets = set::sets()?;
    let i = sets.position(epfd)?;
    let inner_ready: Vec<c_int> = sets.inner_ready(i);
    let set = sets.at(i);
    // (A waker left in the set, its waiter gone back to the application
    // before it saw it, is for our epoll_wait to take out: decision 44.)
    if set.members.is_empty() && set.inner.is_empty() && set.datagrams.is_empty() && set.woken == 0
    {
        return None;
    }
    let mut out = Pending::default();
    let Set {
        members,
        pending,
        unarmed,
        inner,
        virtual_out,
        datagrams,
        ..
    } = set;
    // An entry whose member left or closed lists no connection: leaving
    // took its mark down (`Connection::set_deferral`), so none can need it.
    // More entries than members means some are such (or repeats).
    let down = unarmed.len();
    if down > members.len() {
        unarmed.prune(|fd| members.get(&fd).is_some_and(|m| m.live().is_some()));
    }
    // Members whose flag is down: the kernel cannot report them, so their
    // rings are looked at here (`pending` keeps those with data); in a set
    // with `IDLE_SET` of them, those idle for `IDLE_LOOKS` calls raise it
    // instead.
    look_unarmed(members, pending, unarmed, entry, down >= IDLE_SET);
    // Where the next call starts: after the last member reported, so that
    // with little room every pending member has its turn (as the kernel
    // rotates its ready list).
    let mut next = 0;
    let mut kept = 0;
    pending.retain(|&fd| {
        let Some(m) = members.get_mut(&fd) else {
            return false;
        };
        let readable = m.pending && still_pending(m, &mut out.watch_closely);
        // Any look (a spin's too) that finds data starts the count again
        // (counting only the first looks' findings raised, every 16 calls,
        // the flag of a member read at every call, its data found by the
        // spin: kvbench's 1 connection rang a doorbell every 8 requests;
        // decision 79).
        if readable {
            m.empty_looks = 0;
        }
        if !m.pending {
            m.listed = false;
            return false;
        }
        kept += 1;
        if readable && out.events.len() < max && report_member(epfd, fd, m, &mut out) {
            next = kept;
        }
        true
    });
    if out.events.len() >= max && next < pending.len() {
        pending.rotate_left(next);
    }
    // Rotated as `pending` is: with more members wanting EPOLLOUT than
    // room, each has its turn (review M1: the first ones won every call).
    let (mut next, mut kept) = (0, 0);
    virtual_out.retain(|&fd| {
        let Some(m) = members.get_mut(&fd).filter(|m| m.virtual_out) else {
            return false;
        };
        let Some(reported) = writable(epfd, fd, m, max, &mut out) else {
            return false;
        };
        kept += 1;
        if reported {
            next = kept;
        }
        true
    });
    if out.events.len() >= max && next < virtual_out.len() {
        virtual_out.rotate_left(next);
    }
    super::datagrams::writable(epfd, datagrams, max, &mut out);
    for fd in inner_ready {
        if let Some(n) = inner.get_mut(&fd) {
            if out.events.len() < max {
                report(epfd, fd, n.events, n.data, &mut n.reported, &mut out);
            }
        }
    }
    Some(out)
}

/// Calls whose first look sees a member's flag down, with no look finding
/// data in its ring in between, before the flag goes up (issue 14). Every
/// wait looks at the ring of each member whose flag is down, which costs
/// per member and per wait; a flag up costs a doorbell byte at the next
/// arrival, and nothing until then. With thousands of members, most of them between
/// requests, the looks cost more than the bytes they save. After this
/// many, a member costs what an eager one does until its next ring.
pub(super) const IDLE_LOOKS: u8 = 16;

/// Members whose flag is down from which a set raises idle ones
/// (`IDLE_LOOKS`). A raise costs two system calls at the member's next
/// request (the doorbell's byte, written and taken), the size of a few
/// dozen looks; in a smaller set a member's next request comes within a
/// few dozen calls, and raising cost more than it saved (redis-benchmark
/// -c 50: the server's system calls per request 7% up; decision 79).
const IDLE_SET: usize = 256;

/// Marks the members whose flag is down (the set's `Unarmed`) pending, to
/// be looked at (a call's `entry` counts one in each one's `empty_looks`,
/// which `pending` takes to 0 when a look finds data); one whose count
/// reached `IDLE_LOOKS` raises its flag and leaves the list instead
/// (pending still if its ring holds data: it may have come before the
/// flag went up, without a byte). As `before_sleep`'s raise, without the
/// sleep's name: nothing lowers it again but a read that empties its ring
/// (`Connection::defer_arming`). Counted and raised only when `raising`
/// (the set lists `IDLE_SET` such members); else only looked at.
fn look_unarmed(
    members: &mut BTreeMap<c_int, Member>,
    pending: &mut Vec<c_int>,
    unarmed: &Arc<Unarmed>,
    entry: bool,
    raising: bool,
) {
    let mut idle = Vec::new();
    let count = u8::from(entry && raising);
    unarmed.each(|&fd| {
        if let Some(m) = members.get_mut(&fd) {
            if raising && m.empty_looks >= IDLE_LOOKS {
                idle.push(fd);
            } else {
                // (Below `IDLE_LOOKS` when counted: no overflow.)
                m.empty_looks = m.empty_looks.saturating_add(count);
                m.mark_pending(fd, pending);
            }
        }
    });
    if idle.is_empty() {
        return;
    }
    // (Raised outside the list's lock: a raise takes the connection's rx
    // lock, which is taken before the list's elsewhere.)
    let mut raised = Vec::new();
    for fd in idle {
        let Some(m) = members.get_mut(&fd) else {
            continue;
        };
        m.empty_looks = 0;
        let live = m.live();
        match stream(&live).and_then(|c| c.rearm(unarmed)) {
            Some(readable) => {
                raised.push(fd);
                if readable {
                    m.mark_pending(fd, pending);
                }
            }
            // An entry left over (its flag is up already), or no
            // connection: looked at as before.
            None => m.mark_pending(fd, pending),
        }
    }
    // (Taken off the list after the raise, where `before_sleep` takes
    // entries off first: a read that emptied the ring between the two
    // would lower the flag and list the member again, and `forget` would
    // drop that new entry, the flag left down and nobody to look. Only
    // this thread, the set's waiter, lowers flags (`defer_as`), and a
    // handler's reads on it are refused as re-entry: review defer38 N1.)
    raised.sort_unstable();
    unarmed.forget(&raised);
}

/// A member whose EPOLLOUT the ring answers (`ctl::virtual_ctl`): reported
/// while the ring has room (with its EPOLLIN, if that is reported too);
/// with none, the kernel gets the registration, to wake a sleeper when
/// room comes. Some(whether reported) while it stays answered here; None
/// once it is not (its connection is gone: nothing to report nor to give
/// the kernel, which dropped the registration with the file).
fn writable(epfd: c_int, fd: c_int, m: &mut Member, max: usize, out: &mut Pending) -> Option<bool> {
    let live = m.live();
    let Some(c) = stream(&live) else {
        m.virtual_out = false;
        return None;
    };
    if !c.has_room() {
        m.materialize(epfd, fd, &live);
        return None;
    }
    let bits = m.events & (libc::EPOLLOUT | libc::EPOLLWRNORM) as u32;
    let data = m.data;
    let room = out.events.len() < max;
    Some(match out.events.iter().position(|e| ({ e.u64 }) == data) {
        Some(i) => {
            out.events[i].events |= bits;
            out.masks[i] |= m.events;
            true
        }
        None if room => {
            out.events.push(libc::epoll_event {
                events: bits,
                u64: data,
            });
            out.masks.push(m.events);
            true
        }
        None => false,
    })
}

/// `report` for a member whose ring holds data; an edge-triggered member
/// that defers its flag is reported once per arrival that did not ring
/// (`Connection::edge_news`) instead of once per ADD/MOD.
fn report_member(epfd: c_int, fd: c_int, m: &mut Member, out: &mut Pending) -> bool {
    let live = m.live();
    let Some(c) = stream(&live).filter(|c| c.edge_deferred()) else {
        return report(epfd, fd, m.events, m.data, &mut m.reported, out);
    };
    let Some(at) = c.edge_news() else {
        return false;
    };
    let mut once = false;
    let reported = report(epfd, fd, m.events, m.data, &mut once, out);
    if reported {
        c.edge_reported(at);
        out.replayable = false;
    }
    reported
}

/// Adds EPOLLIN for a registration (`events`, `data`) that has data to
/// report, if it wants it and was not reported already (EPOLLET,
/// EPOLLONESHOT: once per ADD/MOD; a one-shot one is disabled first, so a
/// thread asleep in the kernel cannot get it as well once a doorbell
/// comes). True when added.
fn report(
    epfd: c_int,
    fd: c_int,
    events: u32,
    data: u64,
    reported: &mut bool,
    out: &mut Pending,
) -> bool {
    let wanted = events & (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
    if wanted == 0 || *reported {
        return false;
    }
    if events & libc::EPOLLONESHOT as u32 != 0 {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLONESHOT as u32,
            u64: data,
        };
        waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_MOD, &mut ev));
    }
    if events & (libc::EPOLLONESHOT | libc::EPOLLET) as u32 != 0 {
        *reported = true;
        out.replayable = false;
    }
    out.events.push(libc::epoll_event {
        events: wanted,
        u64: data,
    });
    out.masks.push(events);
    true
}

/// Whether a pending member's ring holds data; a member whose ring is
/// drained stays pending only while a reader is asleep taking doorbell
/// bytes (`m.pending` is updated; `watch_closely` notes such a taker).
fn still_pending(m: &mut Member, watch_closely: &mut bool) -> bool {
    let live = m.live();
    let Some(conn) = stream(&live) else {
        m.pending = false;
        return false;
    };
    let taking = conn.taking();
    *watch_closely |= taking;
    if conn.ring_readable() {
        return true;
    }
    m.pending = taking;
    false
}

/// Members `awaits_reply` looks at per call, at most.
const AWAITS_LOOKS: usize = 32;

/// Whether a connection in `epfd` wrote since it last read (an answer is
/// probably on its way: a wait may spin). Looks at up to `AWAITS_LOOKS`
/// members a call, going round the set from call to call: under load most
/// connections await a reply and the first looks find one; an idle set of
/// thousands costs a few dozen looks, not thousands.
pub(crate) fn awaits_reply(epfd: c_int) -> bool {
    let Some(mut sets) = set::sets() else {
        return false;
    };
    let Some(set) = sets.find(epfd) else {
        return false;
    };
    let from = set.cursor;
    let mut next = None;
    let found = set
        .members
        .range(from..)
        .chain(set.members.range(..from))
        .take(AWAITS_LOOKS)
        .inspect(|(&fd, _)| next = Some(fd.saturating_add(1)))
        .any(|(_, m)| stream(&m.live()).is_some_and(|c| c.awaits_reply()));
    // A member awaiting a reply is looked at first next time.
    set.cursor = match (found, next) {
        (true, Some(n)) => n.saturating_sub(1),
        (false, Some(n)) => n,
        (_, None) => 0,
    };
    found
}

/// A wait on `epfd` spun its whole budget for nothing: its connections
/// stop counting as awaiting a reply until they write again. (Every
/// member: it follows a whole spin, which costs more.)
pub(crate) fn no_reply_soon(epfd: c_int) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    if let Some(set) = sets.find(epfd) {
        for m in set.members.values() {
            if let Some(c) = stream(&m.live()) {
                c.no_reply_soon();
            }
        }
    }
}

/// epoll_wait on `epfd` reported `events`: an edge-triggered member
/// reported with EPOLLIN has taken its edge, and its next arrival must
/// make a new one, read or not (the kernel's callback runs at every
/// arrival). Its producer rings only while fewer than `EDGE_BACKLOG`
/// bytes are untaken, so a reader that takes edges without reading would
/// get no more: such a member's bytes are taken here but the newest
/// (`Connection::edge_collected`). Looks only at the members reported.
pub(crate) fn collected(epfd: c_int, events: &[libc::epoll_event]) {
    let Some(mut sets) = set::sets() else {
        return;
    };
    let Some(set) = sets.find(epfd) else {
        return;
    };
    if !set.edges {
        return;
    }
    for ev in events {
        if ev.events & (libc::EPOLLIN | libc::EPOLLRDNORM) as u32 == 0 {
            continue;
        }
        let data = ev.u64;
        // Members sharing one `data`: which of them the event is for is
        // not known; each keeps its newest byte, so trimming them all
        // takes no edge from any.
        for fd in set.by_data.members(data, &set.members, |m| m.data) {
            let Some(m) = set.members.get(&fd) else {
                continue;
            };
            if m.events & libc::EPOLLET as u32 == 0 {
                continue;
            }
            if let Some(c) = stream(&m.live()) {
                c.edge_collected();
            }
        }
    }
}
