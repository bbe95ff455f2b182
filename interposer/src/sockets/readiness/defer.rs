//! Doorbells that disappear under load (docs/architecture.md): the one
//! thread that waits on an epoll set lets its members' flags stay down
//! while it is busy, looks at their rings when it waits, raises their
//! flags just before it sleeps in the kernel and lowers them again when it
//! wakes. Anyone else who may wait on the set ends that for good
//! (`crowd`).
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::sockets::socket::Socket;

use super::set::{self, defer_on, stream, Set};

/// Runs `f` on the set known as `epfd`, under the table's lock; `none`
/// when deferral is off or the set is not ours.
fn with_set<R>(epfd: c_int, none: R, f: impl FnOnce(&mut Set) -> R) -> R {
    if !defer_on() {
        return none;
    }
    let Some(mut sets) = set::sets() else {
        return none;
    };
    match sets.find(epfd) {
        Some(set) => f(set),
        None => none,
    }
}

/// A thread is about to wait on `epfd`: the first becomes its waiter (and
/// its members may defer, see `Set`); another, or the same set after a
/// fork, crowds it.
pub(crate) fn waiting(epfd: c_int) {
    with_set(epfd, (), |set| {
        let me = crate::platform::sys::thread_id();
        // The waiter, in a call, sleeps in no kernel wait: one it left by
        // siglongjmp, or a signal handler's call interrupted, is over.
        if set.waiter == Some(me) {
            set.asleep = false;
        }
        if !set.solo {
            return;
        }
        if set.generation != crate::platform::fork::generation()
            || set.waiter.is_some_and(|w| w != me)
        {
            set.crowd();
            return;
        }
        if set.waiter.is_none() {
            set.waiter = Some(me);
            for (&fd, m) in &set.members {
                let live = m.live();
                if let Some(c) = stream(&live) {
                    set.apply_deferral(fd, m, c);
                }
            }
        }
    })
}

/// The members of `epfd` whose flag is down now, for a spinning wait to
/// look at without the table's lock (`Connection::maybe_readable`): only
/// the waiter, which is spinning, adds to them; one whose flag another
/// thread raised meanwhile is looked at for nothing.
pub(crate) fn unarmed(epfd: c_int) -> Vec<Arc<Socket>> {
    with_set(epfd, Vec::new(), |set| {
        let mut listed = Vec::new();
        set.unarmed.each(|fd| listed.push(*fd));
        listed
            .into_iter()
            .filter_map(|fd| set.members.get(&fd)?.live())
            .collect()
    })
}

/// Whether a member whose flag is down has data now (a spinning wait's
/// look: the kernel cannot report those). Marks them pending.
pub(crate) fn unarmed_ready(epfd: c_int) -> bool {
    with_set(epfd, false, |set| {
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
            if stream(&live).is_some_and(|c| c.maybe_news()) {
                found = true;
                m.mark_pending(fd, pending);
            }
        }
        found
    })
}

/// The next name of a sleep of this process's waiters (decision 41):
/// never 0, never the same twice in a process, and in another process
/// only by a chance of 2^-64 (a random start, drawn again in a forked
/// child: `after_fork_child`).
static NEXT_SLEEP: AtomicU64 = AtomicU64::new(0);

fn next_sleep() -> u64 {
    let mut now = NEXT_SLEEP.load(Ordering::Relaxed);
    loop {
        // (0: not drawn yet in this process; an odd start is never 0, and
        // 2^64 sleeps never wrap it there.)
        let name = if now == 0 { fresh_start() | 1 } else { now };
        match NEXT_SLEEP.compare_exchange_weak(
            now,
            name.wrapping_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return name,
            Err(seen) => now = seen,
        }
    }
}

/// A random 64-bit start: std's per-thread random keys (from getrandom),
/// with the pid (a forked child's keys are its parent's).
fn fresh_start() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

/// In a forked child: its sleeps get names of their own.
pub(crate) fn after_fork_child() {
    NEXT_SLEEP.store(0, Ordering::Relaxed);
    let _ = RAISED.try_with(|r| r.try_borrow_mut().map(|mut v| v.clear()));
}

std::thread_local! {
    /// The connections this thread's current sleep raised its flags on
    /// (`Connection::rearm_for`), to be told it woke (`after_sleep`),
    /// whatever became of their set meanwhile.
    static RAISED: RefCell<Vec<Weak<Socket>>> = const { RefCell::new(Vec::new()) };
}

std::thread_local! {
    /// This thread's sleeps begun (`before_sleep`) and not ended
    /// (`after_sleep`). More than none at a `before_sleep`: it is nested
    /// in another (a signal handler's wait), or a wait was left by
    /// siglongjmp and never ended: either way its sleep is not named and
    /// leaves the lists alone (decision 41). (After a siglongjmp it stays
    /// so for the thread: its sleeps are never named again.)
    static ASLEEP: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// This thread's `RAISED`, emptied (none if out of reach: a thread's
/// exit, a borrow in a signal handler's nested call).
fn take_raised() -> Vec<Weak<Socket>> {
    RAISED
        .try_with(|r| r.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)))
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The connections an earlier sleep of this thread raised flags on with
/// its name and that were not told it ended (a sleep still in progress
/// around a signal handler's wait, or one left by siglongjmp): their flags
/// are raised again without the name (a producer that rang that sleep may
/// have left their rings out), and they are told the sleep ended. Those of
/// `set` whose ring holds data become pending; true when one did.
fn unname_left(set: &mut Set) -> bool {
    let left = take_raised();
    let mut found = false;
    for s in left {
        let Some(s) = s.upgrade() else {
            continue;
        };
        let Socket::Stream(c) = &*s else {
            continue;
        };
        c.slept();
        if !c.arm_always() {
            continue;
        }
        // (Its registrations alone, by its connection: issue 14.)
        let key = super::set::conn_key(c) as u64;
        for fd in set.by_conn.members(key, &set.members, |m| m.conn as u64) {
            let Set {
                members, pending, ..
            } = &mut *set;
            let Some(m) = members.get_mut(&fd) else {
                continue;
            };
            if m.live().is_some_and(|l| Arc::ptr_eq(&l, &s)) {
                found = true;
                m.mark_pending(fd, pending);
            }
        }
    }
    found
}

/// `epfd`'s waiter is about to sleep: the members whose flag was left down
/// raise it (then the next write rings), marked with this sleep's name;
/// those whose ring holds data become pending. True when one did (the wait
/// answers instead). They are remembered, for `after_sleep`. Flags an
/// earlier sleep left named are raised unnamed first (`unname_left`); a
/// sleep nested in another (`ASLEEP`) is not named and neither clears nor
/// adds to the lists the outer one's `after_sleep` needs.
pub(crate) fn before_sleep(epfd: c_int) -> bool {
    let nested = ASLEEP
        .try_with(|a| {
            let n = a.get();
            a.set(n.saturating_add(1));
            n > 0
        })
        .unwrap_or(true);
    with_set(epfd, false, |set| {
        let mut found = unname_left(set);
        // Another thread changed the set since the last look (a member
        // put back with data no doorbell announced, say): looked at again.
        found |= std::mem::take(&mut set.stirred);
        // Without a waker (no fd to make one), another thread that
        // changes the set could not wake this sleep (decision 44): no
        // deferring in this set from now on. (None is needed while no
        // other thread exists: decision 57.)
        if set.solo && super::wake::needed() && super::wake::waker().is_none() {
            found |= set.crowd();
        }
        let list = set.unarmed.clone();
        // (Nested too: this thread sleeps in the kernel on the set.)
        set.asleep = set.solo;
        if !nested {
            set.raised.clear();
        }
        set.sleeps.fetch_add(1, Ordering::Relaxed);
        // (Unnamed while producers do not skip rings: the names would
        // cost a CAS and a list per sleep, and keep bytes from other
        // threads, for nothing.)
        let named = !nested && set.solo && crate::sockets::conn::SKIP_RUNG_SLEEPS;
        let sleep = if named { next_sleep() } else { 0 };
        for fd in list.take() {
            let Some(m) = set.members.get_mut(&fd) else {
                continue;
            };
            let live = m.live();
            // Named only once this thread will tell it the sleep ended (a
            // list it cannot reach: unnamed, the ring is never left out).
            let noted = sleep != 0
                && live.as_ref().is_some_and(|s| {
                    RAISED
                        .try_with(|r| {
                            r.try_borrow_mut()
                                .map(|mut v| v.push(Arc::downgrade(s)))
                                .is_ok()
                        })
                        .unwrap_or(false)
                });
            let name = if noted { sleep } else { 0 };
            let Some(readable) = stream(&live).and_then(|c| c.rearm_for(&list, name)) else {
                continue;
            };
            // (Nested: left up, off the lists; the next read that empties
            // its ring lowers it again.)
            if !nested {
                set.raised.push(fd);
            }
            if readable {
                found = true;
                m.mark_pending(fd, &mut set.pending);
            }
        }
        found
    })
}

/// `epfd`'s waiter woke (or answered after `before_sleep` found data):
/// the connections it raised flags on for that sleep are told so (their
/// bytes are anyone's again, `Connection::slept`), and the flags go down
/// again while the thread is busy (`Connection::defer_again`), so that
/// only data that came during the sleep rang; one that stays up is raised
/// again without the sleep's name, and reported if its ring holds data (a
/// producer that rang the sleep elsewhere may have left it out). A set
/// crowded meanwhile has nothing to lower (`Set::release_all` raised them
/// again). A sleep nested in another (`ASLEEP`) leaves all to the outer
/// one, which may sleep on: its flags must stay up.
pub(crate) fn after_sleep(epfd: c_int) {
    let nested = ASLEEP
        .try_with(|a| {
            let n = a.get().saturating_sub(1);
            a.set(n);
            n > 0
        })
        .unwrap_or(true);
    if nested {
        with_set(epfd, (), |set| set.asleep = false);
        return;
    }
    let raised = take_raised();
    for s in raised {
        if let Some(Socket::Stream(c)) = s.upgrade().as_deref() {
            c.slept();
        }
    }
    with_set(epfd, (), |set| {
        set.asleep = false;
        if !set.solo || set.raised.is_empty() {
            return;
        }
        for fd in std::mem::take(&mut set.raised) {
            if let Some(m) = set.members.get_mut(&fd) {
                let live = m.live();
                let idle = m.empty_looks >= super::pending::IDLE_LOOKS;
                if stream(&live).is_some_and(|c| c.defer_again(idle)) {
                    m.mark_pending(fd, &mut set.pending);
                }
            }
        }
    })
}

/// `fd` may be one of our epoll sets, about to be waited on by poll or
/// select: others may sleep on it. True when a member has data the kernel
/// does not know of: the caller reports `fd` readable itself.
pub(crate) fn crowd(fd: c_int) -> bool {
    let Some(mut sets) = set::sets() else {
        return false;
    };
    let Some(i) = sets.position(fd) else {
        return false;
    };
    // Members pending (data no doorbell announced: it came before they
    // joined, or while their flag was down) make the set readable too,
    // each time: the kernel does not know of them.
    sets.at(i).crowd() || sets.pending_readable(i)
}

/// Before exec (or a fork, which may exec): every inheritable set's
/// members raise their flags (the program that follows knows none of this;
/// it learns the members whose data no doorbell announced from the kernel,
/// `adopt`).
pub(crate) fn crowd_all() {
    let Some(mut sets) = set::sets() else {
        return;
    };
    for set in sets.iter_mut() {
        // A forked child may sleep on any set, close-on-exec or not: the
        // kernel learns the EPOLLOUT the waiter answered from rings.
        set.materialize_all();
        // A close-on-exec epoll fd does not reach the program that follows
        // (posix_spawn, system and popen call this in a parent that goes
        // on): only an inheritable one is crowded.
        let inherited = set.numbers.iter().any(|&n| {
            rustix::io::fcntl_getfd(crate::platform::sys::borrow_fd(n))
                .is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC))
        });
        if inherited {
            set.crowd();
        }
    }
}

/// Before fork: the child shares every set, close-on-exec or not, until
/// it execs, and may change or wait on it: each is crowded (its waiter's
/// named sleep unnamed, and woken if asleep: review of decision 44, a
/// child's DEL lost a named sleep's wake-up on an EPOLL_CLOEXEC set). (The
/// parent's next wait on it would crowd it anyway: a new generation.) A
/// set whose waiter is the forking thread is not slept on: a stale mark
/// (a sleep left by siglongjmp) is cleared and a waker it let in taken
/// out, which the child could not take out and would wait around.
pub(crate) fn forking() {
    let Some(mut sets) = set::sets() else {
        return;
    };
    let me = Some(crate::platform::sys::thread_id());
    let slept = sets
        .iter_mut()
        .any(|s| s.sleeps.load(Ordering::Relaxed) > 0);
    super::wake::forking(sets.iter_mut().count(), slept);
    for set in sets.iter_mut() {
        if set.waiter == me {
            set.asleep = false;
            set.unwake();
        }
        set.alone = false;
        set.crowd();
    }
}

/// `fds` go to another process (SCM_RIGHTS): an epoll set among them may
/// be waited on there, past us. Crowded for good before it leaves.
pub(crate) fn sent(fds: &[c_int]) {
    if fds.is_empty() {
        return; // no fds passed: no lock (every sendmsg of the process)
    }
    let Some(mut sets) = set::sets() else {
        return;
    };
    for &fd in fds {
        if let Some(set) = sets.find(fd) {
            set.alone = false;
            set.crowd();
        }
    }
}
