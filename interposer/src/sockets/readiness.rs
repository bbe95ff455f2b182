//! Readiness is the kernel's: an emulated fd is a real Unix socket whose
//! readability (doorbell bytes) and writability (filler bytes) follow the
//! ring (docs/architecture.md). Two things the kernel cannot learn from
//! those bytes alone are noted here, at `epoll_ctl`:
//!
//! - Which connections an epoll set holds. A reader raises its flag lazily
//!   (`Connection::lazy`), which poll and select make up for by looking at
//!   the ring (`calls::iomux`); epoll_wait cannot, so a connection added to
//!   a set turns eager (`Connection::watch`). Data that came while it was
//!   lazy has no doorbell byte: the set is told about it here ("pending")
//!   until the ring is drained, and epoll_wait (`calls::iomux::epoll`)
//!   reports it.
//! - How a reader waits. Edge-triggered epoll reports every arrival of data
//!   on a TCP socket, also while older data is unread; the ring rings its
//!   reader only on the first publish after the reader waited. So EPOLLET
//!   tells the ring to ring on every publish.
//!
//! A dual listener (an epoll instance behind the application's fd, see
//! `dual`) cannot take EPOLLEXCLUSIVE, which is dropped from its
//! registrations.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crate::platform::lock::Mutex;
use crate::platform::real::{waits, Action};
use crate::platform::sys::EventIn;
use crate::sockets::conn::{Connection, Deferral, Unarmed};
use crate::sockets::registry;
use crate::sockets::socket::Socket;

/// A connection in an epoll set.
struct Member {
    events: u32,
    data: u64,
    socket: Weak<Socket>,
    /// The kernel may not report data in its ring (`Connection::watch`).
    pending: bool,
    /// Reported once since the last ADD/MOD (EPOLLET, EPOLLONESHOT).
    reported: bool,
    /// In the set's `pending` list (which `pending` prunes lazily).
    listed: bool,
}

impl Member {
    /// The member's connection while it lives. As in the kernel, a
    /// registration lasts as long as the connection, not the fd number:
    /// closing the number while a dup of it stays open keeps it (and its
    /// data); the number given to something else keeps it too, until the
    /// application adds the number again.
    fn live(&self) -> Option<Arc<Socket>> {
        self.socket.upgrade()
    }
}

/// An epoll set that holds connections. Every call touches only the fds it
/// is about (issue 14): members by fd number, and the few that may be
/// pending in a list of their own.
struct Set {
    epfd: c_int,
    members: BTreeMap<c_int, Member>,
    /// Members that may be pending (entries found not pending, or gone,
    /// are dropped when `pending` looks).
    pending: Vec<c_int>,
    /// Where `awaits_reply` looks next (it looks at a few members a call).
    cursor: c_int,
    /// Members after the last sweep of those whose connection is gone.
    swept: usize,
    /// Members whose flag a read left down (`Connection::defer_arming`).
    unarmed: Arc<Unarmed>,
    /// The one thread that waits on this set (None: none has yet), while
    /// no other has, in the fork generation it was made in. Then members
    /// may leave their flags down while that thread is busy ("doorbells
    /// that disappear under load"): it looks at their rings when it waits
    /// and raises their flags before it sleeps. A second waiting thread, a
    /// fork, the set polled or added to another set, or its fd duplicated
    /// ends that for good (`crowd`): anyone else asleep on the set must be
    /// woken by the kernel.
    waiter: Option<u64>,
    solo: bool,
    generation: u32,
    /// Eventfds that stand for members' data in waits past us
    /// (`release_all`); closed with the set.
    kicks: Vec<crate::platform::internal_fd::InternalFd>,
}

/// A readable eventfd added to `epfd` once (EPOLLONESHOT) under `m`'s
/// event data: a wait on the set that goes past us reports `m`.
fn kick_for(epfd: c_int, m: &Member) -> Option<crate::platform::internal_fd::InternalFd> {
    let fd = rustix::event::eventfd(
        1,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .ok()?;
    let fd = crate::platform::internal_fd::InternalFd::new(fd);
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: m.data,
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&fd));
    (waits::epoll_ctl(epfd, raw, EventIn::own(libc::EPOLL_CTL_ADD, &mut ev)) == 0).then_some(fd)
}

impl Set {
    /// The set for `epfd`, as `Made` knows the epoll fd: one made past us
    /// (before the library, or inherited across exec), or one duplicated,
    /// nested or waited on by two threads before its first connection, is
    /// crowded from the start.
    fn new(epfd: c_int) -> Set {
        let made = MADE.lock().iter().find(|m| m.fd == epfd).copied();
        let (generation, waiter, solo) = match made {
            Some(m) => (m.generation, m.waiter, !m.crowded),
            None => (crate::platform::fork::generation(), None, false),
        };
        log!(
            debug,
            "epoll set {epfd}: first connection; made here {}, may defer {solo}",
            made.is_some()
        );
        Set {
            epfd,
            members: BTreeMap::new(),
            pending: Vec::new(),
            cursor: 0,
            swept: 0,
            unarmed: Arc::default(),
            waiter,
            solo,
            generation,
            kicks: Vec::new(),
        }
    }

    /// The deferral a member may use now, or None.
    fn deferral(&self, fd: c_int, m: &Member, conn: &Connection) -> Option<Deferral> {
        const NOT: u32 = (libc::EPOLLET | libc::EPOLLONESHOT | libc::EPOLLEXCLUSIVE) as u32;
        let waiter = self.waiter?;
        let fits = self.solo
            && defer_on()
            && self.generation == crate::platform::fork::generation()
            && conn.sets() == 1
            && m.events & libc::EPOLLIN as u32 != 0
            && m.events & NOT == 0;
        fits.then(|| Deferral {
            unarmed: self.unarmed.clone(),
            fd,
            waiter,
        })
    }

    /// Others may wait on this set: no member leaves its flag down any
    /// more (those that did raise it now). True when one of them has data
    /// the kernel does not know of (it came while the flag was down): the
    /// set is readable though the kernel says not.
    fn crowd(&mut self, kick: bool) -> bool {
        if !self.solo {
            return false;
        }
        log!(
            debug,
            "epoll set {}: another waiter; no deferring",
            self.epfd
        );
        self.solo = false;
        self.release_all(kick)
    }

    /// Whether a pending member would be reported now (as `pending`
    /// reports: wanting EPOLLIN, not already reported for EPOLLET or
    /// EPOLLONESHOT) and its ring holds data.
    fn pending_readable(&self) -> bool {
        let wants = (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
        let due = |m: &&Member| m.pending && !m.reported && m.events & wants != 0;
        self.pending.iter().any(|fd| {
            self.members.get(fd).filter(due).is_some_and(
                |m| matches!(m.live().as_deref(), Some(Socket::Stream(c)) if c.ring_readable()),
            )
        })
    }

    /// Every member's deferral ends (flags raised); those with data in
    /// their ring become pending (our epoll_wait reports them). True when
    /// one had data. `kick`: waits past us (on another number, or on a set
    /// this one is nested in) must see it too: a readable eventfd joins the
    /// set, once (EPOLLONESHOT), under that member's event data, so the
    /// kernel reports the member as the data would have.
    fn release_all(&mut self, kick: bool) -> bool {
        let mut listed: Vec<c_int> = self.unarmed.take();
        listed.sort_unstable();
        let mut found = false;
        for (&fd, m) in self.members.iter_mut() {
            let live = m.live();
            let Some(Socket::Stream(c)) = live.as_deref() else {
                continue;
            };
            c.set_deferral(None);
            if listed.binary_search(&fd).is_ok() && c.rearm(&self.unarmed) {
                found = true;
                if kick {
                    self.kicks.extend(kick_for(self.epfd, m));
                }
                m.pending = true;
                if !m.listed {
                    m.listed = true;
                    self.pending.push(fd);
                }
            }
        }
        found
    }
}

/// An epoll fd this process made (`epoll_made`), before its set exists.
#[derive(Clone, Copy)]
struct Made {
    fd: c_int,
    generation: u32,
    /// The one thread that waited on it so far.
    waiter: Option<u64>,
    /// Duplicated, nested, or waited on by a second thread.
    crowded: bool,
}

/// Epoll fds made by this process (few; forgotten when closed).
static MADE: Mutex<Vec<Made>> = Mutex::new(Vec::new());
static MADE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// epoll_create or epoll_create1 returned `fd`.
pub(crate) fn epoll_made(fd: c_int) {
    if fd < 0 || !defer_on() {
        return;
    }
    let mut made = MADE.lock();
    made.retain(|m| m.fd != fd);
    made.push(Made {
        fd,
        generation: crate::platform::fork::generation(),
        waiter: None,
        crowded: false,
    });
    MADE_COUNT.store(made.len(), Ordering::Relaxed);
}

/// `Made` for `fd`, changed by `f`, if this process made it.
fn made(fd: c_int, f: impl FnOnce(&mut Made)) {
    if MADE_COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    if let Some(m) = MADE.lock().iter_mut().find(|m| m.fd == fd) {
        f(m);
    }
}

/// The epoll sets that hold connections. Few.
static SETS: Mutex<Vec<Set>> = Mutex::new(Vec::new());
/// Entries in SETS, so epoll_wait on other sets never takes the lock.
static SET_COUNT: AtomicUsize = AtomicUsize::new(0);

/// `fd` was closed, or is a new fd (which may reuse a closed fd's
/// number): forget the set known under that number. (Members stay while
/// their connection lives, see `Member::live`.)
pub(crate) fn forget(fd: c_int) {
    forget_range(fd, fd);
}

/// `forget` for every fd from `first` to `last` (close_range, closefrom).
pub(crate) fn forget_range(first: c_int, last: c_int) {
    if MADE_COUNT.load(Ordering::Relaxed) != 0 {
        let mut made = MADE.lock();
        made.retain(|m| !(first..=last).contains(&m.fd));
        MADE_COUNT.store(made.len(), Ordering::Relaxed);
    }
    if SET_COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut sets = SETS.lock();
    sets.retain_mut(|set| {
        let gone = (first..=last).contains(&set.epfd);
        if gone {
            // Flags its members left down are raised: nobody waits on
            // this set any more to look at their rings. Its members are in
            // one set fewer (and may defer again in another).
            set.release_all(false);
            for m in set.members.values() {
                if let Some(Socket::Stream(c)) = m.live().as_deref() {
                    c.count_sets(false);
                }
            }
        }
        !gone
    });
    SET_COUNT.store(sets.len(), Ordering::Relaxed);
}

/// A member left its set (DEL, or its fd closed): one set fewer for its
/// connection, whose deferral ends.
fn leave(m: &Member) {
    if let Some(Socket::Stream(c)) = m.socket.upgrade().as_deref() {
        c.count_sets(false);
        c.set_deferral(None);
    }
}

/// `fd` may be one of our epoll sets, about to be waited on by poll or
/// select: others may sleep on it. True when a member has data the kernel
/// does not know of: the caller reports `fd` readable itself.
pub(crate) fn crowd(fd: c_int) -> bool {
    made(fd, |m| m.crowded = true);
    if SET_COUNT.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let mut sets = SETS.lock();
    let Some(set) = sets.iter_mut().find(|s| s.epfd == fd) else {
        return false;
    };
    // Members pending (data no doorbell announced: it came before they
    // joined, or while their flag was down) make the set readable too,
    // each time: the kernel does not know of them.
    set.crowd(false) || set.pending_readable()
}

/// `fd` may be one of our epoll sets, now known under another number
/// (duplicated) or put in another epoll set: waits on it there go past
/// us, and data that came while a flag was down would not wake them. No
/// flag is left down from now on, in any set (a set is seldom duplicated
/// or nested after it was used; the data such a set holds at this moment
/// is reported by our epoll_wait on its own number, see
/// docs/compatibility.md).
pub(crate) fn crowd_for_good(fd: c_int) {
    made(fd, |m| m.crowded = true);
    if SET_COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut sets = SETS.lock();
    if sets.iter().any(|s| s.epfd == fd) {
        DEFER.store(false, Ordering::Relaxed);
        for set in sets.iter_mut() {
            set.crowd(true);
        }
    }
}

/// Before exec: every set's members raise their flags (the new program's
/// library knows none of this).
pub(crate) fn crowd_all() {
    if SET_COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    for set in SETS.lock().iter_mut() {
        // A close-on-exec epoll fd does not reach the program that follows
        // (posix_spawn, system and popen call this in a parent that goes
        // on): only an inheritable one is crowded.
        let inherited = rustix::io::fcntl_getfd(crate::platform::sys::borrow_fd(set.epfd))
            .is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC));
        if inherited {
            set.crowd(true);
        }
    }
}

/// A thread is about to wait on `epfd`: the first becomes its waiter (and
/// its members may defer, see `Set`); another, or the same set after a
/// fork, crowds it.
pub(crate) fn waiting(epfd: c_int) {
    if (SET_COUNT.load(Ordering::Relaxed) == 0 && MADE_COUNT.load(Ordering::Relaxed) == 0)
        || !defer_on()
    {
        return;
    }
    let me = crate::platform::sys::thread_id();
    let mut sets = SETS.lock();
    let Some(set) = sets.iter_mut().find(|s| s.epfd == epfd) else {
        drop(sets);
        // No connection in it yet: remember who waits (a thread asleep in
        // the kernel here would not see flags left down later).
        made(epfd, |m| {
            if m.waiter.is_some_and(|w| w != me)
                || m.generation != crate::platform::fork::generation()
            {
                m.crowded = true;
            }
            m.waiter.get_or_insert(me);
        });
        return;
    };
    if !set.solo {
        return;
    }
    if set.generation != crate::platform::fork::generation() || set.waiter.is_some_and(|w| w != me)
    {
        set.crowd(false);
        return;
    }
    if set.waiter.is_none() {
        set.waiter = Some(me);
        for (&fd, m) in &set.members {
            if let Some(Socket::Stream(c)) = m.live().as_deref() {
                c.set_deferral(set.deferral(fd, m, c));
            }
        }
    }
}

/// Whether a member whose flag is down has data now (a spinning wait's
/// look: the kernel cannot report those). Marks them pending.
pub(crate) fn unarmed_ready(epfd: c_int) -> bool {
    if SET_COUNT.load(Ordering::Relaxed) == 0 || !defer_on() {
        return false;
    }
    let mut sets = SETS.lock();
    let Some(set) = sets.iter_mut().find(|s| s.epfd == epfd) else {
        return false;
    };
    let Set {
        members,
        pending,
        unarmed,
        ..
    } = set;
    let mut found = false;
    // (The list copied first: a look may take a connection's rx lock,
    // which is taken before the list's lock elsewhere.)
    let mut listed = Vec::new();
    unarmed.each(|fd| listed.push(*fd));
    for fd in listed {
        let Some(m) = members.get_mut(&fd) else {
            continue;
        };
        let live = m.live();
        if let Some(Socket::Stream(c)) = live.as_deref() {
            if c.maybe_readable() {
                found = true;
                m.pending = true;
                if !m.listed {
                    m.listed = true;
                    pending.push(fd);
                }
            }
        }
    }
    found
}

/// Flags may be left down at all (`SHMNET_DEFER`, and no epoll fd of ours
/// was ever duplicated or put in another epoll set, see `crowd`).
static DEFER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `epfd`'s waiter is about to sleep: the members whose flag a read left
/// down raise it (then the next write rings); those whose ring holds data
/// become pending. True when one did (the wait answers instead).
pub(crate) fn arm_unarmed(epfd: c_int) -> bool {
    if SET_COUNT.load(Ordering::Relaxed) == 0 || !defer_on() {
        return false;
    }
    let mut sets = SETS.lock();
    let Some(set) = sets.iter_mut().find(|s| s.epfd == epfd) else {
        return false;
    };
    let mut found = false;
    let list = set.unarmed.clone();
    for fd in list.take() {
        let Some(m) = set.members.get_mut(&fd) else {
            continue;
        };
        let live = m.live();
        let Some(Socket::Stream(c)) = live.as_deref() else {
            continue;
        };
        if c.rearm(&list) {
            found = true;
            m.pending = true;
            if !m.listed {
                m.listed = true;
                set.pending.push(fd);
            }
        }
    }
    found
}

/// What `pending` found for one epoll set.
#[derive(Default)]
pub(crate) struct Pending {
    /// EPOLLIN for members whose ring holds data the kernel may not report.
    pub events: Vec<libc::epoll_event>,
    /// A member's reader is asleep taking doorbell bytes: data it leaves in
    /// the ring would have no byte, so a waiter must look again soon.
    pub watch_closely: bool,
}

/// Members that joined with data no doorbell announced, or while a reader
/// slept taking bytes (`Connection::watch`), are reported while their ring
/// holds data; a member stops being pending once its ring is drained and
/// no taker is left (from then on the kernel reports it). At most `max`
/// events (the caller's room). EPOLLET and EPOLLONESHOT members are
/// reported once per ADD/MOD (a one-shot member is then disabled, as the
/// kernel does).
/// None when `epfd` holds no connection (epoll_wait then passes through).
pub(crate) fn pending(epfd: c_int, max: usize) -> Option<Pending> {
    if SET_COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut out = Pending::default();
    let mut sets = SETS.lock();
    let set = sets.iter_mut().find(|s| s.epfd == epfd)?;
    let Set {
        members,
        pending,
        unarmed,
        ..
    } = set;
    // Members whose flag is down: the kernel cannot report them, so their
    // rings are looked at here (`pending` keeps those with data).
    unarmed.each(|fd| {
        if let Some(m) = members.get_mut(fd) {
            m.pending = true;
            if !m.listed {
                m.listed = true;
                pending.push(*fd);
            }
        }
    });
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
        if !m.pending {
            m.listed = false;
            return false;
        }
        kept += 1;
        let wanted = m.events & (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
        if !readable || wanted == 0 || m.reported || out.events.len() >= max {
            return true;
        }
        if m.events & libc::EPOLLONESHOT as u32 != 0 {
            // Disabled before it is reported, so a thread asleep in the
            // kernel cannot get it as well once a doorbell comes.
            let mut ev = libc::epoll_event {
                events: libc::EPOLLONESHOT as u32,
                u64: m.data,
            };
            waits::epoll_ctl(epfd, fd, EventIn::own(libc::EPOLL_CTL_MOD, &mut ev));
        }
        if m.events & (libc::EPOLLONESHOT | libc::EPOLLET) as u32 != 0 {
            m.reported = true;
        }
        out.events.push(libc::epoll_event {
            events: wanted,
            u64: m.data,
        });
        next = kept;
        true
    });
    if out.events.len() >= max && next < pending.len() {
        pending.rotate_left(next);
    }
    Some(out)
}

/// Whether a pending member's ring holds data; a member whose ring is
/// drained stays pending only while a reader is asleep taking doorbell
/// bytes (`m.pending` is updated; `watch_closely` notes such a taker).
fn still_pending(m: &mut Member, watch_closely: &mut bool) -> bool {
    let live = m.live();
    let Some(Socket::Stream(conn)) = live.as_deref() else {
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

/// The set's entry, created if needed. O(log members): an event loop
/// makes several epoll_ctl calls per request (issue 14: a walk over every
/// member here was 38% of a client's time at 200 connections).
fn note(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: Option<libc::epoll_event>,
    sock: &Arc<Socket>,
    pending: bool,
) {
    let mut sets = SETS.lock();
    let found = sets.iter().position(|s| s.epfd == epfd);
    if op == libc::EPOLL_CTL_DEL {
        if let Some(i) = found {
            if let Some(m) = sets[i].members.remove(&fd) {
                leave(&m);
            }
            if sets[i].members.is_empty() {
                sets.swap_remove(i);
            }
        }
        SET_COUNT.store(sets.len(), Ordering::Relaxed);
        return;
    }
    let Some(ev) = ev else { return };
    let i = found.unwrap_or_else(|| {
        sets.push(Set::new(epfd));
        sets.len() - 1
    });
    let set = &mut sets[i];
    let Socket::Stream(conn) = &**sock else {
        return;
    };
    // Connections gone (closed, or their numbers given to others and never
    // added again) are swept when the set has doubled since the last
    // sweep: amortised O(1) per call.
    if set.members.len() >= 2 * set.swept.max(16) {
        set.members.retain(|_, m| m.socket.strong_count() > 0);
        set.swept = set.members.len();
    }
    let old = set.members.get(&fd);
    let listed = old.is_some_and(|m| m.listed);
    let same = old.is_some_and(|m| Weak::ptr_eq(&m.socket, &Arc::downgrade(sock)));
    let member = Member {
        events: ev.events,
        data: ev.u64,
        socket: Arc::downgrade(sock),
        pending,
        reported: false,
        listed: listed || pending,
    };
    match set.members.insert(fd, member) {
        // The same number, another connection (closed past us, or its
        // number given to this one).
        Some(old) if !same => {
            leave(&old);
            conn.count_sets(true);
        }
        None => {
            conn.count_sets(true);
        }
        Some(_) => {}
    }
    // (In two sets, neither may defer its flag: which would raise it?)
    let m = &set.members[&fd];
    conn.set_deferral(set.deferral(fd, m, conn));
    if pending && !listed {
        set.pending.push(fd);
    }
    SET_COUNT.store(sets.len(), Ordering::Relaxed);
}

/// Members `awaits_reply` looks at per call, at most.
const AWAITS_LOOKS: usize = 32;

/// Whether a connection in `epfd` wrote since it last read (an answer is
/// probably on its way: a wait may spin). Looks at up to `AWAITS_LOOKS`
/// members a call, going round the set from call to call: under load most
/// connections await a reply and the first looks find one; an idle set of
/// thousands costs a few dozen looks, not thousands.
pub(crate) fn awaits_reply(epfd: c_int) -> bool {
    if SET_COUNT.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let mut sets = SETS.lock();
    let Some(set) = sets.iter_mut().find(|s| s.epfd == epfd) else {
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
        .any(|(_, m)| {
            m.socket
                .upgrade()
                .is_some_and(|s| matches!(&*s, Socket::Stream(c) if c.awaits_reply()))
        });
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
    let sets = SETS.lock();
    if let Some(set) = sets.iter().find(|s| s.epfd == epfd) {
        for m in set.members.values() {
            if let Some(s) = m.socket.upgrade() {
                if let Socket::Stream(c) = &*s {
                    c.no_reply_soon();
                }
            }
        }
    }
}

/// In a forked child: a thread of the parent may have held the lock.
pub(crate) fn after_fork_child() {
    SETS.reset_after_fork();
    MADE.reset_after_fork();
    for set in SETS.lock().iter() {
        set.unarmed.reset_after_fork();
    }
}

/// Whether flags may be left down at all (`SHMNET_DEFER=1`, and no epoll
/// fd of ours was duplicated or nested since): every defer-only path asks
/// this first, so that by default none of its locks is taken.
fn defer_on() -> bool {
    DEFER.load(Ordering::Relaxed) && crate::platform::config::get().is_some_and(|c| c.defer)
}

pub(crate) fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: EventIn<'_>) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        return fresh_ctl(epfd, op, fd, event);
    };
    let conn = match &*sock {
        Socket::Stream(conn) => conn,
        Socket::Listener(_) => return listener_ctl(epfd, op, fd, event),
        Socket::Bound(_) => return Action::Pass,
    };
    let ev = match op {
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => {
            let Some(ev) = event.get() else {
                return Action::Pass; // the kernel's EFAULT
            };
            if ev.events & libc::EPOLLET as u32 != 0 {
                conn.set_edge_triggered();
            }
            Some(ev)
        }
        libc::EPOLL_CTL_DEL => None,
        _ => return Action::Pass,
    };
    // Eager from before the kernel knows the fd, so no publish can slip
    // between (the flag is up when `watch` returns).
    let pending = ev.is_some() && conn.watch_deferred().unwrap_or_else(|| conn.watch());
    let r = waits::epoll_ctl(epfd, fd, event);
    if r == 0 {
        note(epfd, op, fd, ev, &sock, pending);
    }
    Action::Raw(r)
}

/// A socket that may still be re-pointed (`carry`): its registrations are
/// noted.
fn fresh_ctl(epfd: c_int, op: c_int, fd: c_int, event: EventIn<'_>) -> Action<c_int> {
    // An epoll set of ours nested in another: woken through the kernel.
    crowd_for_good(fd);
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
            crate::platform::real::Action::Raw(r) | crate::platform::real::Action::Done(r) => r,
            crate::platform::real::Action::Fail(_) => -1,
            crate::platform::real::Action::Pass => {
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
