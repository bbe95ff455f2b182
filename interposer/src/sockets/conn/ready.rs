//! Readiness for poll, select and epoll (docs/architecture.md, "Lazy and
//! eager readers", "Several waiters in one process", "Edge-triggered
//! readers"): whether the reader keeps its flag up (eager) or raises it
//! only before it sleeps (lazy), the waiters and takers of the doorbell
//! bytes, and edge-triggered registration.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmnet_ring::WaitKind;

use crate::platform::lock::Mutex;

use super::Connection;

/// Connections of one epoll set whose flag a read left down (`Deferral`),
/// by the fd number the set knows them under: the set's waiter raises
/// their flags before it sleeps (`readiness::before_sleep`).
#[derive(Default)]
pub(crate) struct Unarmed(Mutex<Vec<c_int>>);

impl Unarmed {
    /// Takes the list (the connections' `deferred` marks are cleared by
    /// whoever takes it, as it raises their flags).
    pub(crate) fn take(&self) -> Vec<c_int> {
        std::mem::take(&mut *self.0.lock())
    }

    /// In a forked child: a thread of the parent may have held the lock.
    pub(crate) fn reset_after_fork(&self) {
        self.0.reset_after_fork();
    }

    /// Runs `f` on each listed fd, the list left as it is.
    pub(crate) fn each(&self, f: impl FnMut(&c_int)) {
        self.0.lock().iter().for_each(f);
    }

    /// Drops every entry of `fds` (sorted): their flags are up and their
    /// marks cleared (`Connection::rearm`), outside a sleep.
    pub(crate) fn forget(&self, fds: &[c_int]) {
        self.0.lock().retain(|fd| fds.binary_search(fd).is_err());
    }

    /// Entries listed.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Keeps one entry per fd, and only those `stands` says a connection
    /// may still need. (A waiter that never sleeps never takes the list,
    /// and connections that come and go on it would grow it without end.)
    pub(crate) fn prune(&self, mut stands: impl FnMut(c_int) -> bool) {
        let mut list = self.0.lock();
        list.sort_unstable();
        list.dedup();
        list.retain(|&fd| stands(fd));
    }
}

/// Where a connection that may leave its flag down after a read lists
/// itself: its epoll set's `Unarmed`, under the fd number the set knows,
/// and the one thread that waits on that set (`readiness`).
pub(crate) struct Deferral {
    pub(crate) unarmed: Arc<Unarmed>,
    pub(crate) fd: c_int,
    pub(crate) waiter: u64,
    /// How many times the waiter has slept on the set (`IDLE_SLEEPS`).
    pub(crate) sleeps: Arc<AtomicU32>,
    /// Registered with EPOLLET: our epoll_wait reports its arrivals while
    /// the flag is down (`Connection::edge_news`).
    pub(crate) edge: bool,
}

/// A connection the set's waiter has not read (nor added or changed) for
/// this many of its sleeps keeps its flag up after them, off the list
/// (`defer_again`): a set of thousands of mostly idle connections would
/// otherwise have its waiter raise and lower every flag at every sleep.
/// (redis-benchmark's 50 connections are read about every second sleep.
/// 2 made redis-benchmark -c 1000's server ring 2.6 times as often:
/// decision 74.)
const IDLE_SLEEPS: u32 = 16;

/// Who waits on a connection's fd, and how the kernel reports it.
pub(super) struct Readiness {
    /// Registered with EPOLLET somewhere (see `readiness`).
    pub(super) edge: AtomicBool,
    /// Added to an epoll set: from then on the kernel alone reports its
    /// readiness, so the reader keeps its flag up (see `lazy`).
    watched: AtomicBool,
    /// Threads of ours in a hooked poll/select that may sleep in the kernel
    /// on this fd: they need its doorbell bytes, so no reader takes them
    /// in its sleep meanwhile (`begin_taking`).
    pub(super) waiters: AtomicU32,
    /// Threads asleep in a taking wait (`Phase::Sleep`) on this connection.
    takers: AtomicU32,
    /// In one epoll set, waited on by one thread only, level-triggered:
    /// a read by that thread that empties the ring may leave the flag down
    /// (`defer_arming`). Set and cleared by `readiness`.
    deferral: Mutex<Option<Deferral>>,
    /// A deferral was ever set: until then `defer_arming` takes no lock.
    pub(super) maybe_deferred: AtomicBool,
    /// Listed in an `Unarmed` now (the flag may be down): which one (its
    /// address), or 0. Cleared only when that list is taken (`rearm`).
    deferred: std::sync::atomic::AtomicUsize,
    /// Epoll sets of ours in which this connection is registered for
    /// reading (see `count_sets`).
    sets: AtomicU32,
    /// Its deferral's `sleeps` when the waiter last used it (`defer_as`).
    active: AtomicU32,
    /// Its deferral is an edge-triggered member's (`Deferral::edge`).
    pub(super) edge_deferral: AtomicBool,
    /// Where the ring was written to at the last edge our epoll_wait
    /// reported for it while deferred (`edge::FRESH` after an ADD or MOD).
    pub(super) edge_seen: AtomicU64,
    /// The sleep of its set's waiter its flag was raised for
    /// (`rearm_for`), until that waiter woke (`slept`); 0: none. Its
    /// doorbell byte may be the one that wakes that sleep for other
    /// members too (decision 41): meanwhile no other thread takes its
    /// bytes (`keeps_bytes`).
    raised_for: AtomicU64,
    /// Silenced in an epoll set once (`readiness::tcp_hangups`): a change
    /// that gives it a hang-up TCP reports gives the registration back
    /// (`readiness::unsilence`).
    silenced: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness {
            edge: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            waiters: AtomicU32::new(0),
            takers: AtomicU32::new(0),
            deferral: Mutex::new(None),
            maybe_deferred: AtomicBool::new(false),
            deferred: std::sync::atomic::AtomicUsize::new(0),
            sets: AtomicU32::new(0),
            active: AtomicU32::new(0),
            edge_deferral: AtomicBool::new(false),
            edge_seen: AtomicU64::new(super::edge::FRESH),
            raised_for: AtomicU64::new(0),
            silenced: AtomicBool::new(false),
        }
    }
}

/// `readiness::unsilence`, which readiness (a layer above connections)
/// hands down when it makes its first epoll set: before that no
/// registration exists to give back.
static UNSILENCE: std::sync::OnceLock<fn(&Connection, bool)> = std::sync::OnceLock::new();

/// Readiness's way to be told of a hang-up change (`UNSILENCE`).
pub(crate) fn on_hangup_change(f: fn(&Connection, bool)) {
    let _ = UNSILENCE.set(f);
}

/// Registrations of `conn` given back (`readiness::unsilence`; `all`:
/// every one polled again), if any epoll set was ever made.
pub(super) fn unsilence(conn: &Connection, all: bool) {
    if let Some(f) = UNSILENCE.get() {
        f(conn, all);
    }
}

impl Connection {
    /// An epoll set left out this connection's hang-up, which TCP does not
    /// report (`readiness::tcp_hangups`).
    pub(crate) fn note_silenced(&self) {
        self.ready.silenced.store(true, Ordering::Relaxed);
    }

    /// This connection now has a hang-up or error TCP reports (it shut
    /// down writing, or a send was answered with a RST): registrations an
    /// epoll set silenced are given back to the kernel.
    pub(super) fn hangup_changed(&self) {
        if self.ready.silenced.load(Ordering::Relaxed) {
            unsilence(self, false);
        }
    }

    /// Whether the reader raises its flag only when it is about to sleep
    /// (a blocking read, poll or select: all in this library, which look at
    /// the ring before they trust the kernel), instead of whenever the ring
    /// is empty. Then a reader that finds data, or spins until it comes,
    /// costs neither side a system call. An epoll set is waited on without
    /// us knowing which fds it holds, so once the connection is in one
    /// (`watch`), or shared with another process, its flag stays up after
    /// every read that empties the ring and the kernel's readiness is exact.
    pub(super) fn lazy(&self) -> bool {
        !self.ready.watched.load(Ordering::Relaxed) && !self.shared()
    }

    /// The application adds this connection to an epoll set (ADD or MOD).
    /// Returns true when the kernel may not report data in the ring: data
    /// that came while the reader was lazy has no doorbell byte queued, and
    /// a reader asleep in a taking wait may take the byte of data it then
    /// leaves in the ring. `readiness` reports such data in epoll_wait
    /// until the ring is drained and no taker is left.
    pub(crate) fn watch(&self) -> bool {
        // SYNC POINT: SeqCst, Dekker with `begin_taking` (its takers
        // increment, then its load of `watched`): a reader either sees
        // `watched` and does not take, or we see it in `takers`.
        let first = !self.ready.watched.swap(true, Ordering::SeqCst);
        let taking = self.ready.takers.load(Ordering::SeqCst) > 0;
        let mut guard = self.rx.lock();
        let Some(rx) = self.receiver(&mut guard.consumer) else {
            return taking;
        };
        let _side = self.shared().then(|| rx.lock_side());
        self.edge_joined(rx.notify().written());
        // The first time, take stale bytes (eager from now on, step 3).
        let readable = rx.readable_now() || (first && matches!(self.settle(rx, true), Ok(true)));
        // Up either way: the next publish rings (every one, edge-triggered:
        // a deferral elsewhere may have turned that off).
        self.edges_on(rx);
        rx.arm(WaitKind::Doorbell);
        taking || (readable && self.bell.queued() == 0)
    }

    /// The epoll set this connection may defer its flag to, or None (see
    /// `Readiness::deferral`). Moving off the list it is on (its flag may
    /// be down), the flag is raised, as an eager reader keeps it: also on
    /// DEL, or MOD to EPOLLOUT alone (another thread may read the
    /// connection and add it back while the set's waiter sleeps: data
    /// that came meanwhile must have rung).
    pub(crate) fn set_deferral(&self, to: Option<Deferral>) {
        self.replace_deferral(to, None);
    }

    /// `set_deferral(None)` if the connection defers to the set whose
    /// list is `list` (another set's deferral stands: the connection is
    /// registered for reading only there).
    pub(crate) fn end_deferral(&self, list: &Arc<Unarmed>) {
        self.replace_deferral(None, Some(list));
    }

    fn replace_deferral(&self, to: Option<Deferral>, only_from: Option<&Arc<Unarmed>>) {
        if to.is_none() && !self.ready.maybe_deferred.load(Ordering::Relaxed) {
            return;
        }
        if to.is_some() {
            self.ready.maybe_deferred.store(true, Ordering::Relaxed);
        }
        let mut g = self.ready.deferral.lock();
        if only_from.is_some_and(|l| !g.as_ref().is_some_and(|d| Arc::ptr_eq(&d.unarmed, l))) {
            return;
        }
        // The same list under the same number: the entry it may have there
        // stands (an entry under another number would not be found).
        let same = matches!((&*g, &to), (Some(a), Some(b))
            if Arc::ptr_eq(&a.unarmed, &b.unarmed) && a.fd == b.fd);
        self.ready
            .edge_deferral
            .store(to.as_ref().is_some_and(|d| d.edge), Ordering::Relaxed);
        *g = to;
        // The mark is cleared under the deferral lock (`defer_arming` sets
        // it only under that lock, with a deferral), so it never outlives
        // its list: a stale mark would keep the connection off the next
        // list with its flag down.
        let listed = !same && self.ready.deferred.swap(0, Ordering::SeqCst) != 0;
        drop(g);
        if listed {
            self.arm_always();
        }
    }

    /// In a forked child: a thread of the parent may have held the lock.
    pub(super) fn reset_readiness_after_fork(&self) {
        self.ready.deferral.reset_after_fork();
        // No sleep of ours is in progress here (the waiter was another
        // thread of the parent): the bytes are the child's to take.
        self.slept();
    }

    /// Raises the flag whether or not the ring holds data (a read that
    /// drains it with no EAGAIN read after would otherwise leave it down);
    /// true when the ring is readable.
    pub(crate) fn arm_always(&self) -> bool {
        self.arm_always_for(0)
    }

    /// `arm_always` for the set waiter's sleep `sleep` (0: none; see
    /// `Consumer::arm_for_sleep`).
    fn arm_always_for(&self, sleep: u64) -> bool {
        if self.shut_rd.load(Ordering::Relaxed) {
            return true;
        }
        let mut guard = self.rx.lock();
        match self.receiver(&mut guard.consumer) {
            None => false,
            Some(rx) => {
                self.edges_on(rx);
                rx.arm_for_sleep(WaitKind::Doorbell, sleep)
            }
        }
    }

    /// The waiter whose sleep this flag was raised for woke (or never
    /// slept): the connection's bytes are anyone's to take again.
    pub(crate) fn slept(&self) {
        self.ready.raised_for.store(0, Ordering::SeqCst);
    }

    /// Whether its doorbell bytes are left for the sleeping waiter of its
    /// epoll set (`raised_for`): a producer that rang this connection for
    /// that sleep may have left out the rings of the set's other members,
    /// so that a byte taken here by another thread would leave the waiter
    /// asleep with data in their rings. The bytes stay until it woke (the
    /// kernel then reports the fd, perhaps with its ring empty: as in the
    /// kernel when another thread reads a socket an epoll waiter was
    /// woken for).
    pub(super) fn keeps_bytes(&self) -> bool {
        self.ready.raised_for.load(Ordering::SeqCst) != 0
    }

    /// A registration with `events` in one of our epoll sets was made
    /// (`joined`) or ended: counted if it reads (EPOLLIN or EPOLLRDNORM).
    pub(crate) fn count_sets(&self, events: u32, joined: bool) {
        let reads = events & (libc::EPOLLIN | libc::EPOLLRDNORM) as u32 != 0;
        if !reads {
            return;
        }
        let change = |n: &AtomicU32| {
            if joined {
                n.fetch_add(1, Ordering::Relaxed);
            } else {
                // Never below zero (a registration counted before a fork's
                // reset, say).
                let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(1))
                });
            }
        };
        change(&self.ready.sets);
    }

    /// The epoll sets of ours in which this connection is registered for
    /// reading.
    pub(crate) fn sets(&self) -> u32 {
        self.ready.sets.load(Ordering::Relaxed)
    }

    /// A read emptied the ring: whether the flag may stay down (the
    /// doorbell "disappears": the peer's next writes do not ring). Only on
    /// the one thread that waits on the connection's epoll set, which
    /// raises the flag again before it sleeps (`readiness::before_sleep`);
    /// never while a poller of ours or a taker may wait on the kernel, or
    /// for one shared with another process. Lists the connection in the
    /// set's `Unarmed`. (The caller, holding the rx lock, turns an
    /// edge-triggered reader's every-publish rings off: `edges_off`.)
    pub(super) fn defer_arming(&self) -> bool {
        self.defer_as(true)
    }

    /// `defer_arming`; `used`: the waiter read, added or changed the
    /// connection (false: it woke from a sleep, `defer_again`, and then
    /// leaves alone a connection idle for `IDLE_SLEEPS`).
    fn defer_as(&self, used: bool) -> bool {
        if !self.ready.maybe_deferred.load(Ordering::Relaxed)
            || self.shared()
            || self.ready.takers.load(Ordering::SeqCst) > 0
            || self.ready.waiters.load(Ordering::SeqCst) > 0
        {
            return false;
        }
        let deferral = self.ready.deferral.lock();
        let Some(d) = &*deferral else {
            return false;
        };
        if d.waiter != crate::platform::sys::thread_id() {
            return false;
        }
        let sleeps = d.sleeps.load(Ordering::Relaxed);
        if used {
            self.ready.active.store(sleeps, Ordering::Relaxed);
        } else if sleeps.wrapping_sub(self.ready.active.load(Ordering::Relaxed)) > IDLE_SLEEPS {
            return false;
        }
        let list = Arc::as_ptr(&d.unarmed) as usize;
        if self.ready.deferred.swap(list, Ordering::SeqCst) != list {
            d.unarmed.0.lock().push(d.fd);
        }
        true
    }

    /// `readiness` took this connection from its set's list: if it is
    /// still listed there, raises the flag and says whether the ring is
    /// readable. None for an entry left over (the connection left that
    /// list since, `set_deferral`, which raised the flag, or it is listed
    /// elsewhere): raising it here would make the next write ring for
    /// nothing.
    pub(crate) fn rearm(&self, list: &Arc<Unarmed>) -> Option<bool> {
        self.rearm_for(list, 0)
    }

    /// `rearm` for the waiter's sleep `sleep` (non-zero: noted in
    /// `raised_for` until `slept`).
    pub(crate) fn rearm_for(&self, list: &Arc<Unarmed>, sleep: u64) -> Option<bool> {
        self.ready
            .deferred
            .compare_exchange(
                Arc::as_ptr(list) as usize,
                0,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .ok()?;
        if sleep != 0 {
            self.ready.raised_for.store(sleep, Ordering::SeqCst);
        }
        Some(self.arm_always_for(sleep))
    }

    /// The set's waiter woke from a sleep for which `before_sleep` raised
    /// this flag (`readiness::after_sleep`): the flag goes down again while
    /// the thread is busy, as after a read that emptied the ring, and the
    /// connection is listed for the thread's next wait, which looks at the
    /// ring before it sleeps. (A producer that rang meanwhile took the flag
    /// down already; its byte is taken by the next read.) Not for one idle
    /// for `IDLE_SLEEPS` (or no longer deferring): its flag stays up, and it
    /// is off the list; raised again without the sleep's name (a producer
    /// that rang that sleep would leave it out, and nobody looks at its
    /// ring now), and true when its ring holds data (the caller reports it).
    /// `idle`: the set's looks found its ring empty for long
    /// (`readiness::pending`'s `IDLE_LOOKS`): treated as idle for
    /// `IDLE_SLEEPS`.
    pub(crate) fn defer_again(&self, idle: bool) -> bool {
        let mut guard = self.rx.lock();
        let Some(rx) = self.receiver(&mut guard.consumer) else {
            return false;
        };
        if !idle && self.defer_as(false) {
            rx.disarm(WaitKind::Doorbell);
            self.edges_off(rx);
            return false;
        }
        rx.arm(WaitKind::Doorbell)
    }

    /// Whether the ring may hold data (no lock: a spinning wait's look).
    pub(crate) fn maybe_readable(&self) -> bool {
        match self.probe.get() {
            Some(p) => p.maybe_readable(),
            None => self.ring_readable(),
        }
    }

    /// `watch` for an ADD/MOD by the one thread that waits on the
    /// connection's set while it may leave its flag down: the flag goes
    /// (or stays) down, as after a read that emptied the ring (the set's
    /// waiter looks at the ring before it sleeps; an event loop that takes
    /// a connection out of its set while it writes a request, which raises
    /// the flag, and adds it back for the answer would otherwise have the
    /// answer ring); whether the ring holds data. None: not so (call
    /// `watch`).
    pub(crate) fn watch_deferred(&self) -> Option<bool> {
        if !self.ready.maybe_deferred.load(Ordering::Relaxed)
            || !self.ready.watched.load(Ordering::SeqCst)
        {
            return None;
        }
        let mut guard = self.rx.lock();
        let rx = self.receiver(&mut guard.consumer)?;
        if !self.defer_arming() {
            return None;
        }
        rx.disarm(WaitKind::Doorbell);
        self.edges_off(rx);
        self.edge_joined(rx.notify().written());
        Some(rx.readable_now())
    }

    /// Whether a reader is asleep in a taking wait right now.
    pub(crate) fn taking(&self) -> bool {
        self.ready.takers.load(Ordering::SeqCst) > 0
    }

    /// A lazy reader is about to sleep taking its doorbell byte: only if no
    /// one else may be waiting on the kernel for that byte (a poller of
    /// ours, an epoll set). False: sleep as an eager reader would.
    pub(super) fn begin_taking(&self) -> Option<Taker<'_>> {
        // SYNC POINT: SeqCst, Dekker with `add_waiter` and `watch`.
        let others = self.ready.takers.fetch_add(1, Ordering::SeqCst);
        let taker = Taker(&self.ready.takers);
        // One taker at a time: two would both wake for one byte, and the
        // one that found it taken would sleep on in the kernel.
        if others > 0
            || self.ready.watched.load(Ordering::SeqCst)
            || self.ready.waiters.load(Ordering::SeqCst) > 0
        {
            return None;
        }
        Some(taker)
    }

    /// A hooked poll/select will wait on this fd. Returns whether a reader
    /// is asleep taking doorbell bytes (then the kernel may never report
    /// this fd: the waiter sleeps in short slices and looks at the ring).
    /// Undo with `remove_waiter`.
    pub(crate) fn add_waiter(&self) -> bool {
        // SYNC POINT: SeqCst, Dekker with `begin_taking`.
        self.ready.waiters.fetch_add(1, Ordering::SeqCst);
        self.ready.takers.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn remove_waiter(&self) {
        self.ready.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// poll/select are about to wait for this connection to become
    /// readable: true if it is already (data, end of stream, a reset);
    /// otherwise its flag is up when this returns, so the next publish
    /// rings and the kernel wakes the waiter.
    pub(crate) fn poll_readable(&self) -> bool {
        if self.shut_rd.load(Ordering::Relaxed) {
            return true;
        }
        let mut guard = self.rx.lock();
        match self.receiver(&mut guard.consumer) {
            // Not attached yet: the acceptor's initial flag is up (see
            // `Channel::initialise`), so its first data rings.
            None => false,
            Some(rx) => rx.readable_now() || rx.arm(WaitKind::Doorbell),
        }
    }

    /// The kernel reported this connection readable (poll/select): false
    /// when that came from doorbell bytes of data already read (a lazy
    /// reader leaves them queued), in which case they are taken now so the
    /// next wait does not return at once. A hang-up, foreign bytes, or
    /// bytes we cannot account for are reported as readable: the read that
    /// follows tells the application what happened.
    pub(crate) fn really_readable(&self) -> bool {
        let mut guard = self.rx.lock();
        let Some(rx) = self.receiver(&mut guard.consumer) else {
            return true;
        };
        if rx.readable_now() || self.shut_rd.load(Ordering::Relaxed) {
            return true;
        }
        let _side = self.shared().then(|| rx.lock_side());
        match self.settle(rx, true) {
            Ok(false) => self.bell.queued() > 0,
            _ => true,
        }
    }

    /// The application registered this connection with EPOLLET: every
    /// arrival of data must be a new edge (see `readiness`).
    pub(crate) fn set_edge_triggered(&self) {
        if !self.ready.edge.swap(true, Ordering::Relaxed) {
            let mut rx = self.rx.lock();
            if let Some(c) = self.receiver(&mut rx.consumer) {
                c.notify().set_edge_triggered();
            }
        }
    }
}

/// A blocking reader's sleep while a taker may take its byte.
pub(super) const WAIT_SLICE: Duration = Duration::from_millis(1);

/// A reader asleep on the kernel alone, counted as a waiter while it is
/// (see `Connection::add_waiter`).
pub(super) struct WaiterGuard<'a> {
    conn: &'a Connection,
    /// A taker was there: sleep in slices.
    pub(super) sliced: bool,
}

impl<'a> WaiterGuard<'a> {
    pub(super) fn new(conn: &'a Connection) -> WaiterGuard<'a> {
        let sliced = conn.add_waiter();
        WaiterGuard { conn, sliced }
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.conn.remove_waiter();
    }
}

/// A reader counted in `Connection::takers`; uncounted when dropped.
pub(super) struct Taker<'a>(&'a AtomicU32);

impl Drop for Taker<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
