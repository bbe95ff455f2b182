//! The epoll sets of this process (`Set`): what each holds (connections,
//! and epoll sets of ours nested in it), the numbers it is known under
//! (dup), and whether its members may leave their flags down ("doorbells
//! that disappear under load"). One table, `SETS`, behind one lock.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crate::platform::lock::{Mutex, MutexGuard};
use crate::sockets::conn::{Connection, Deferral, Unarmed};
use crate::sockets::socket::Socket;

/// EPOLLIN or EPOLLRDNORM: a registration the doorbell protocol serves.
pub(super) fn reads(events: u32) -> bool {
    events & (libc::EPOLLIN | libc::EPOLLRDNORM) as u32 != 0
}

/// A connection in an epoll set.
pub(super) struct Member {
    pub(super) events: u32,
    pub(super) data: u64,
    pub(super) socket: Weak<Socket>,
    /// The kernel may not report data in its ring (`Connection::watch`).
    pub(super) pending: bool,
    /// Reported once since the last ADD/MOD (EPOLLET, EPOLLONESHOT).
    pub(super) reported: bool,
    /// The address of its connection (`conn_key`): the set's `by_conn`
    /// key. Unique while the member is: its `socket` keeps the allocation.
    pub(super) conn: usize,
    /// In the set's `pending` list (which `pending` prunes lazily).
    pub(super) listed: bool,
    /// The events the kernel has for it (`events` but EPOLLOUT while
    /// `virtual_out`).
    pub(super) kernel: u32,
    /// EPOLLOUT the application asked for and the kernel was not told of:
    /// our epoll_wait reports it from the ring (`virtual_out`).
    pub(super) virtual_out: bool,
    /// The kernel has `kernel` made edge-triggered: the Unix connection's
    /// hang-up would be reported at every wait where TCP says nothing
    /// (`hangups`).
    pub(super) silenced: bool,
    /// The event the silencing registration's own poll queues (the fd is
    /// hung up) is still due: the next hang-up left out is that one, not
    /// a level registration another process gave back (`hangups`).
    pub(super) echo_due: bool,
    /// Silenced again after a hang-up left out came back (`hangups`): one
    /// that comes back once more is reported.
    pub(super) resilenced: bool,
    /// The Unix connection's bits when the kernel last reported this
    /// one-shot or edge-triggered registration a hang-up (`hangups`; 0:
    /// not since the last ADD or MOD). A one-shot one is disarmed, and an
    /// edge-triggered one whose connection still says these bits has no
    /// new edge: neither is the one an event with its `data` is for.
    pub(super) spent: u32,
    /// Calls whose first look (`pending`) saw its flag down since a look
    /// last found data in its ring: at `pending::IDLE_LOOKS` its flag goes
    /// up instead.
    pub(super) empty_looks: u8,
}

impl Member {
    /// The member's connection while it lives. As in the kernel, a
    /// registration lasts as long as the connection, not the fd number:
    /// closing the number while a dup of it stays open keeps it (and its
    /// data); the number given to something else keeps it too, until the
    /// application adds the number again.
    pub(super) fn live(&self) -> Option<Arc<Socket>> {
        self.socket.upgrade()
    }

    /// The kernel is given the registration the application made
    /// (EPOLLOUT it answered from the ring so far): a full ring, or
    /// someone else who may sleep on the set, needs the kernel's
    /// write-space wake-up. A failure means the fd left the set past us
    /// (closed): nothing to give. `live`: the member's socket (`live()`).
    /// Only while `fd` still names it: the kernel finds a registration by
    /// the file the number names now, and a number closed and given to
    /// another file would have that file's registration overwritten
    /// (review H1). A connection gone, or known now only under another
    /// number (dup, then the first closed), keeps the kernel's
    /// registration as it is.
    pub(super) fn materialize(&mut self, epfd: c_int, fd: c_int, live: &Option<Arc<Socket>>) {
        if !std::mem::take(&mut self.virtual_out) {
            return;
        }
        let named = live.as_ref().is_some_and(|s| {
            crate::sockets::registry::get(fd).is_some_and(|now| Arc::ptr_eq(&now, s))
        });
        if !named {
            return;
        }
        let mut ev = libc::epoll_event {
            events: self.events,
            u64: self.data,
        };
        let op = libc::EPOLL_CTL_MOD;
        if crate::platform::real::waits::epoll_ctl(
            epfd,
            fd,
            crate::platform::sys::EventIn::own(op, &mut ev),
        ) == 0
        {
            self.kernel = self.events;
            self.silenced = false;
            self.echo_due = false;
            self.resilenced = false;
            self.spent = 0;
        }
    }

    /// Marks the member pending (listed once).
    pub(super) fn mark_pending(&mut self, fd: c_int, list: &mut Vec<c_int>) {
        self.pending = true;
        if !self.listed {
            self.listed = true;
            list.push(fd);
        }
    }
}

/// An epoll set of ours registered in another (nested): the outer set
/// reports it readable while one of its members holds data the kernel
/// does not know of.
pub(super) struct Inner {
    pub(super) events: u32,
    pub(super) data: u64,
    /// Reported once since the last ADD/MOD (EPOLLET, EPOLLONESHOT).
    pub(super) reported: bool,
    /// The nested set (`Set::id`).
    pub(super) set: u64,
}

/// An epoll set: made by this process (epoll_create), or one made past us
/// that a connection joined. Every call touches only the fds it is about
/// (issue 14): members by fd number, by `data` and by connection
/// (decision 54), and the few that may be pending in a list of their own.
pub(super) struct Set {
    pub(super) id: u64,
    /// The numbers it is known under in this process (dup, dup2, dup3,
    /// F_DUPFD give more; our epoll_wait answers through any of them).
    pub(super) numbers: Vec<c_int>,
    pub(super) members: BTreeMap<c_int, Member>,
    /// Sets of ours nested in this one, by the number they were added
    /// under.
    pub(super) inner: BTreeMap<c_int, Inner>,
    /// Members that may be pending (entries found not pending, or gone,
    /// are dropped when `pending` looks).
    pub(super) pending: Vec<c_int>,
    /// Where `awaits_reply` looks next (it looks at a few members a call).
    pub(super) cursor: c_int,
    /// Members after the last sweep of those whose connection is gone.
    pub(super) swept: usize,
    /// Members whose EPOLLOUT is answered from their ring (`virtual_out`;
    /// entries whose member no longer is are dropped when `pending` looks).
    pub(super) virtual_out: Vec<c_int>,
    /// Emulated UDP sockets registered for EPOLLOUT or edge-triggered
    /// (`datagrams`), by fd number.
    pub(super) datagrams: BTreeMap<c_int, super::datagrams::Registration>,
    /// Members whose flag a read left down (`Connection::defer_arming`).
    pub(super) unarmed: Arc<Unarmed>,
    /// Those `before_sleep` raised, to be lowered again after the sleep.
    pub(super) raised: Vec<c_int>,
    /// `before_sleep`s so far (`Deferral::sleeps`).
    pub(super) sleeps: Arc<AtomicU32>,
    /// Members by their `data` (several may share one), for `collected`
    /// and `tcp_hangups`: an answer's events are matched to members
    /// without a walk over the set (issue 14).
    pub(super) by_data: Index,
    /// Members by their connection (`Member::conn`; one connection may
    /// be a member under several numbers, dup), for `unsilence` and
    /// `unname_left`.
    pub(super) by_conn: Index,
    /// An edge-triggered member for reading was registered once
    /// (`collected` has nothing to do in a set that never had one).
    pub(super) edges: bool,
    /// The one thread that waits on this set (None: none has yet), while
    /// `solo`, in the fork generation it was made in. Then members may
    /// leave their flags down while that thread is busy ("doorbells that
    /// disappear under load"): it looks at their rings when it waits and
    /// raises their flags before it sleeps.
    pub(super) waiter: Option<u64>,
    /// No one else may wait on it: no second thread, no fork, not polled,
    /// nested, passed to another process or inherited across exec, and
    /// made here. Once false, false for good (`crowd`).
    pub(super) solo: bool,
    /// Made by this process's epoll_create: every wait on it is ours (even
    /// one with no connection in it), which takes the waker's event out;
    /// one made past us may be waited on past us (no waker goes in).
    pub(super) ours: bool,
    /// Made here and never forked nor sent (SCM_RIGHTS): the kernel's
    /// registrations change only through this process's calls, so a
    /// silenced member whose echo came has no event until we MOD it
    /// (`hangups`). Once false, false for good.
    pub(super) alone: bool,
    pub(super) generation: u32,
    /// A one-slot wait with events of ours to report asks the kernel
    /// first every other call (`kernel_turn`).
    pub(super) kernel_turn: bool,
    /// The waiter is in a sleep `before_sleep` began (not nested) and
    /// `after_sleep` did not end: another thread that changes the set
    /// wakes it (`stir`).
    pub(super) asleep: bool,
    /// Another thread changed the set since the waiter's last
    /// `before_sleep`: that one looks at the members before sleeping.
    pub(super) stirred: bool,
    /// The pid of the process that put the waker in the kernel's set
    /// (`wake`), until a wait of that process takes it out (`wake::woken`);
    /// 0: not there.
    pub(super) woken: u32,
}

impl Set {
    fn new(id: u64, epfd: c_int, made_here: bool) -> Set {
        Set {
            id,
            numbers: vec![epfd],
            members: BTreeMap::new(),
            inner: BTreeMap::new(),
            pending: Vec::new(),
            virtual_out: Vec::new(),
            datagrams: BTreeMap::new(),
            cursor: 0,
            kernel_turn: false,
            asleep: false,
            stirred: false,
            woken: 0,
            swept: 0,
            unarmed: Arc::default(),
            raised: Vec::new(),
            sleeps: Arc::default(),
            by_data: Index::default(),
            by_conn: Index::default(),
            edges: false,
            waiter: None,
            solo: made_here,
            ours: made_here,
            alone: made_here,
            generation: crate::platform::fork::generation(),
        }
    }

    /// The deferral a member may use now, or None. `reading`: the
    /// connection's registrations for reading in our sets, this one
    /// included. Edge-triggered members defer too (our epoll_wait reports
    /// their arrivals, `Connection::edge_news`); one-shot ones do not (the
    /// kernel disables them at their event, which a thread asleep in it
    /// must not get as well), nor exclusive ones (several sets, and so
    /// several waiters, hold the fd).
    pub(super) fn deferral(&self, fd: c_int, m: &Member, reading: u32) -> Option<Deferral> {
        const NOT: u32 = (libc::EPOLLONESHOT | libc::EPOLLEXCLUSIVE) as u32;
        let waiter = self.waiter?;
        let fits = self.solo
            && defer_on()
            && self.generation == crate::platform::fork::generation()
            && reading == 1
            && m.events & libc::EPOLLIN as u32 != 0
            && m.events & NOT == 0;
        fits.then(|| Deferral {
            unarmed: self.unarmed.clone(),
            fd,
            waiter,
            sleeps: self.sleeps.clone(),
            edge: m.events & libc::EPOLLET as u32 != 0,
        })
    }

    /// Member `fd` (just registered) is found in the indexes by its
    /// `data` and its connection. `old`: the member it replaced, if any
    /// (`data`, `conn`): a key it had already is not noted again (event
    /// loops MOD a member with the same `data` at every request).
    pub(super) fn index(&mut self, fd: c_int, old: Option<(u64, usize)>) {
        let Some(m) = self.members.get(&fd) else {
            return;
        };
        let (data, conn) = (m.data, m.conn);
        self.edges |= m.events & libc::EPOLLET as u32 != 0 && reads(m.events);
        let members = &self.members;
        if old.is_none_or(|(d, _)| d != data) {
            self.by_data.note(data, fd, members, |m| m.data);
        }
        if old.is_none_or(|(_, c)| c != conn) {
            self.by_conn
                .note(conn as u64, fd, members, |m| m.conn as u64);
        }
    }

    /// Sets or ends connection `c`'s deferral to this set for member `m`
    /// (number `fd`): registered for reading in two sets, it defers to
    /// neither (which would raise its flag?); otherwise a deferral to
    /// another set, where it is registered for reading, stands.
    pub(super) fn apply_deferral(&self, fd: c_int, m: &Member, c: &Connection) {
        match self.deferral(fd, m, c.sets()) {
            Some(d) => c.set_deferral(Some(d)),
            None if c.sets() > 1 => c.set_deferral(None),
            None => c.end_deferral(&self.unarmed),
        }
    }

    /// Others may wait on this set: no member leaves its flag down any
    /// more (those that did raise it now), for good. True when one of them
    /// has data the kernel does not know of (it came while the flag was
    /// down): the set is readable though the kernel says not.
    pub(super) fn crowd(&mut self) -> bool {
        if !self.solo {
            return false;
        }
        log!(
            debug,
            "epoll set {:?}: another waiter; no deferring",
            self.numbers
        );
        self.solo = false;
        self.materialize_all();
        let found = self.release_all();
        // (A waiter asleep in a named sleep, or on members whose data the
        // release found, is woken: the new waiter may not report them.)
        if self.asleep {
            self.wake();
        }
        found
    }

    /// Every EPOLLOUT answered from a ring goes to the kernel (see
    /// `Member::materialize`): before anyone but the waiter may sleep on
    /// the set in the kernel (`crowd`, a fork).
    pub(super) fn materialize_all(&mut self) {
        let Some(&epfd) = self.numbers.first() else {
            return;
        };
        for fd in std::mem::take(&mut self.virtual_out) {
            if let Some(m) = self.members.get_mut(&fd) {
                let live = m.live();
                m.materialize(epfd, fd, &live);
            }
        }
    }

    /// Every member's deferral ends (flags raised); those with data in
    /// their ring become pending (our epoll_wait reports them, and poll,
    /// select and an outer set of ours report the set readable while they
    /// hold it). True when one had data.
    pub(super) fn release_all(&mut self) -> bool {
        let mut listed: Vec<c_int> = self.unarmed.take();
        listed.sort_unstable();
        let mut raised = std::mem::take(&mut self.raised);
        raised.sort_unstable();
        let mut found = false;
        for (&fd, m) in self.members.iter_mut() {
            let live = m.live();
            let Some(Socket::Stream(c)) = live.as_deref() else {
                continue;
            };
            // (Looked at before the deferral ends, which takes it off the
            // list.) A flag the waiter raised for a sleep it may still be
            // in is raised again without the sleep's name (decision 41: a
            // producer that rang that sleep would leave it out, and the
            // waiter, crowded, will not look at it): reported if its ring
            // holds data.
            let rearmed = (listed.binary_search(&fd).is_ok()
                && c.rearm(&self.unarmed) == Some(true))
                || (raised.binary_search(&fd).is_ok() && c.arm_always());
            if c.edge_deferred() && reads(m.events) {
                // Reported from now on as any edge-triggered member: once,
                // if an arrival is still unreported (its flag is up again
                // now, so later ones ring).
                let due = c.edge_news().is_some();
                m.reported = !due;
                if due {
                    found = true;
                    m.mark_pending(fd, &mut self.pending);
                }
            } else if rearmed {
                found = true;
                m.mark_pending(fd, &mut self.pending);
            }
            c.end_deferral(&self.unarmed);
        }
        found
    }

    /// The set's numbers are all closed: the kernel forgets it with its
    /// registrations. Flags its members left down are raised (nobody waits
    /// on this set any more to look at their rings); they are registered
    /// for reading in one set fewer (and may defer again in another).
    fn dispose(&mut self) {
        self.release_all();
        for m in self.members.values() {
            if let Some(Socket::Stream(c)) = m.live().as_deref() {
                c.count_sets(m.events, false);
            }
        }
    }

    /// Members whose connection is gone (closed, or their numbers given
    /// to others and never added again) are swept when the set has
    /// doubled since the last sweep: amortised O(1) per call.
    pub(super) fn sweep(&mut self) {
        if self.members.len() >= 2 * self.swept.max(16) {
            self.members.retain(|_, m| m.socket.strong_count() > 0);
            self.swept = self.members.len();
        }
    }
}

/// Member fds by a key of theirs (`Set::by_data`, `Set::by_conn`). A
/// hint: an entry is checked against its member before use (members
/// leave, by DEL or a sweep, without being taken out). Entries of members
/// that left stay until the index outgrows the members, then go: O(1)
/// amortised per registration.
#[derive(Default)]
pub(super) struct Index(HashMap<u64, Vec<c_int>>);

impl Index {
    /// `fd` has `key` now (`key_of` says a member's key). A short list
    /// is kept free of repeats here; a long one (many members sharing one
    /// `data`) is not searched, its repeats go at use and at the prune.
    fn note(
        &mut self,
        key: u64,
        fd: c_int,
        members: &BTreeMap<c_int, Member>,
        key_of: impl Fn(&Member) -> u64,
    ) {
        const SEARCHED: usize = 16;
        let fds = self.0.entry(key).or_default();
        if fds.len() > SEARCHED || !fds.contains(&fd) {
            fds.push(fd);
        }
        let listed = fds.len();
        let bound = 2 * members.len() + 16;
        if self.0.len() > bound || listed > bound {
            self.0.retain(|&k, fds| {
                fds.retain(|fd| members.get(fd).is_some_and(|m| key_of(m) == k));
                fds.sort_unstable();
                fds.dedup();
                !fds.is_empty()
            });
        }
    }

    /// The members that have `key` (by `key_of`), in fd order.
    pub(super) fn members(
        &self,
        key: u64,
        members: &BTreeMap<c_int, Member>,
        key_of: impl Fn(&Member) -> u64,
    ) -> Vec<c_int> {
        let mut fds: Vec<c_int> = self
            .0
            .get(&key)
            .map(|fds| {
                fds.iter()
                    .copied()
                    .filter(|fd| members.get(fd).is_some_and(|m| key_of(m) == key))
                    .collect()
            })
            .unwrap_or_default();
        fds.sort_unstable();
        fds.dedup();
        fds
    }
}

/// `Member::conn` of connection `c`.
pub(super) fn conn_key(c: &Connection) -> usize {
    core::ptr::from_ref(c) as usize
}

/// The sets, and the next `Set::id`.
pub(super) struct Sets {
    list: Vec<Set>,
    next_id: u64,
}

/// The epoll sets of this process. Few.
static SETS: Mutex<Sets> = Mutex::new(Sets {
    list: Vec::new(),
    next_id: 1,
});
/// Entries in SETS, so that processes with no epoll fd never take the
/// lock.
static SET_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The table, locked; None when it is empty (no lock taken).
pub(super) fn sets() -> Option<MutexGuard<'static, Sets>> {
    (SET_COUNT.load(Ordering::Relaxed) != 0).then(|| SETS.lock())
}

/// Whether the table has a set.
pub(super) fn any() -> bool {
    SET_COUNT.load(Ordering::Relaxed) != 0
}

/// The table, locked, empty or not.
pub(super) fn sets_always() -> MutexGuard<'static, Sets> {
    SETS.lock()
}

impl Sets {
    fn counted(&self) {
        SET_COUNT.store(self.list.len(), Ordering::Relaxed);
    }

    /// The set known under `number`.
    pub(super) fn find(&mut self, number: c_int) -> Option<&mut Set> {
        self.list.iter_mut().find(|s| s.numbers.contains(&number))
    }

    pub(super) fn position(&self, number: c_int) -> Option<usize> {
        self.list.iter().position(|s| s.numbers.contains(&number))
    }

    pub(super) fn at(&mut self, i: usize) -> &mut Set {
        &mut self.list[i]
    }

    pub(super) fn by_id(&self, id: u64) -> Option<&Set> {
        self.list.iter().find(|s| s.id == id)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Set> {
        self.list.iter_mut()
    }

    /// A set under `number`: the one known, or one made past us (an fd
    /// epoll_create did not give us: it never defers).
    pub(super) fn entry(&mut self, number: c_int) -> usize {
        if let Some(i) = self.position(number) {
            return i;
        }
        log!(
            debug,
            "epoll set {number}: made past libshmnet; no deferring"
        );
        self.add(number, false)
    }

    fn add(&mut self, number: c_int, made_here: bool) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.list.push(Set::new(id, number, made_here));
        self.counted();
        self.list.len() - 1
    }

    /// epoll_create gave `fd`: a new set (whatever the number was before
    /// is forgotten by `fresh`).
    pub(super) fn made(&mut self, fd: c_int) {
        crate::sockets::conn::on_hangup_change(super::hangups::unsilence_if_any);
        self.forget_range(fd, fd);
        self.add(fd, true);
    }

    /// `new` is now another number of the set under `old` (dup).
    pub(super) fn alias(&mut self, old: c_int, new: c_int) {
        self.forget_range(new, new);
        if let Some(set) = self.find(old) {
            set.numbers.push(new);
        }
    }

    /// Numbers `first..=last` are closed or given to something else; a
    /// set with no number left is gone.
    pub(super) fn forget_range(&mut self, first: c_int, last: c_int) {
        let before = self.list.len();
        self.list.retain_mut(|set| {
            set.numbers.retain(|n| !(first..=last).contains(n));
            let gone = set.numbers.is_empty();
            if gone {
                set.dispose();
            }
            !gone
        });
        if self.list.len() != before {
            self.counted();
        }
    }

    /// Whether set `i` has a member (or a nested set) our epoll_wait would
    /// report now that the kernel may not: pending, wanting EPOLLIN, not
    /// already reported for EPOLLET or EPOLLONESHOT, with data in its ring.
    pub(super) fn pending_readable(&self, i: usize) -> bool {
        self.readable_at(&self.list[i], 0)
    }

    /// The nested sets of set `i` that `pending_readable` says of, by the
    /// number they were added under.
    pub(super) fn inner_ready(&self, i: usize) -> Vec<c_int> {
        let set = &self.list[i];
        set.inner
            .iter()
            .filter(|(_, n)| reads(n.events) && !n.reported)
            .filter(|(_, n)| self.by_id(n.set).is_some_and(|s| self.readable_at(s, 1)))
            .map(|(&fd, _)| fd)
            .collect()
    }

    fn readable_at(&self, set: &Set, depth: u32) -> bool {
        let due = |events: u32, reported: bool| reads(events) && !reported;
        let member = set.pending.iter().any(|fd| {
            set.members
                .get(fd)
                .filter(|m| m.pending && due(m.events, m.reported))
                .is_some_and(
                    |m| matches!(m.live().as_deref(), Some(Socket::Stream(c)) if c.ring_readable()),
                )
        });
        // (The kernel refuses nesting deeper than 5, and loops.)
        member
            || (depth < 5
                && set.inner.values().any(|n| {
                    due(n.events, n.reported)
                        && self
                            .by_id(n.set)
                            .is_some_and(|s| self.readable_at(s, depth + 1))
                }))
    }

    /// In a forked child: a thread of the parent may have held the locks.
    pub(super) fn reset_after_fork(&mut self) {
        for set in &mut self.list {
            set.unarmed.reset_after_fork();
            // (The parent's waiter sleeps there, not here: a crowd or a
            // change here wakes nobody of ours.)
            set.asleep = false;
        }
    }
}

/// In a forked child: a thread of the parent may have held the lock.
pub(super) fn reset_after_fork() {
    SETS.reset_after_fork();
    SETS.lock().reset_after_fork();
}

/// Whether flags may be left down at all (`SHMNET_DEFER`).
pub(super) fn defer_on() -> bool {
    crate::platform::config::get().is_some_and(|c| c.defer)
}

/// The connection of a live member, if it is one.
pub(super) fn stream(sock: &Option<Arc<Socket>>) -> Option<&Connection> {
    match sock.as_deref() {
        Some(Socket::Stream(c)) => Some(c),
        _ => None,
    }
}
