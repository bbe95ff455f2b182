//! epoll registrations of a socket made before it became one of ours.
//!
//! bind (emulated), connect and listen re-point the application's fd
//! number at another kernel object (dup3). An epoll registration belongs
//! to the open file, not the number: when the old file goes, the kernel
//! drops it. Event loops register a socket before they connect it (nginx
//! adds an upstream socket, then connects it non-blocking), and such a
//! socket would never be reported again. So the registrations of a fresh
//! IPv4/IPv6 stream socket are noted here (a bit per fd says which
//! sockets are fresh: one atomic load on every other epoll_ctl), and
//! replayed onto the new object when the number is re-pointed.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::platform::fdtable::CAPACITY;
use crate::platform::lock::Mutex;

/// Fresh IPv4/IPv6 stream sockets: made by socket(), not yet listening or
/// connected through us.
static FRESH: [AtomicU64; CAPACITY / 64] = [const { AtomicU64::new(0) }; CAPACITY / 64];

/// Pristine IPv4/IPv6 stream sockets: made by our socket(), and since then
/// no setsockopt, bind, listen, dup or fork (which could have changed
/// them behind a number we do not watch): their options are the kernel's
/// defaults, their type is known and they are bound to nothing, so connect
/// asks the kernel none of it (`pristine`).
static PRISTINE: [AtomicU64; CAPACITY / 64] = [const { AtomicU64::new(0) }; CAPACITY / 64];
/// Of those, the IPv6 ones.
static INET6: [AtomicU64; CAPACITY / 64] = [const { AtomicU64::new(0) }; CAPACITY / 64];

/// (fd, epfd, event) registrations of fresh sockets.
static NOTED: Mutex<Vec<(c_int, c_int, libc::epoll_event)>> = Mutex::new(Vec::new());
/// Entries in NOTED, so that every new fd does not take the lock.
static NOTED_COUNT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn bit(fd: c_int) -> Option<(&'static AtomicU64, u64)> {
    let i = usize::try_from(fd).ok().filter(|&i| i < CAPACITY)?;
    Some((&FRESH[i / 64], 1u64 << (i % 64)))
}

pub(crate) fn is_fresh(fd: c_int) -> bool {
    bit(fd).is_some_and(|(w, b)| w.load(Ordering::Acquire) & b != 0)
}

/// socket() made `fd`: note its registrations if it is an IPv4/IPv6
/// stream socket.
pub(crate) fn socket_made(fd: c_int, domain: c_int, ty: c_int) {
    // (A number closed past us keeps no stale bit for another kind.)
    touched(fd);
    let stream = ty & 0xf == libc::SOCK_STREAM;
    if fd >= 0 && stream && (domain == libc::AF_INET || domain == libc::AF_INET6) {
        if let Some(i) = usize::try_from(fd).ok().filter(|&i| i < CAPACITY) {
            let (w, b) = (i / 64, 1u64 << (i % 64));
            if domain == libc::AF_INET6 {
                INET6[w].fetch_or(b, Ordering::AcqRel);
            } else {
                INET6[w].fetch_and(!b, Ordering::AcqRel);
            }
            PRISTINE[w].fetch_or(b, Ordering::AcqRel);
            FRESH[w].fetch_or(b, Ordering::AcqRel);
        }
    }
}

/// `fd` is a connect of ours in progress: its registrations are noted
/// from now on (made again on the connection once it completes), even if
/// our socket() did not make it.
pub(crate) fn note_from_now(fd: c_int) {
    if let Some((w, b)) = bit(fd) {
        w.fetch_or(b, Ordering::AcqRel);
    }
}

/// The family of `fd` if it is a pristine stream socket (see `PRISTINE`).
pub(crate) fn pristine(fd: c_int) -> Option<c_int> {
    let i = usize::try_from(fd).ok().filter(|&i| i < CAPACITY)?;
    let b = 1u64 << (i % 64);
    if PRISTINE[i / 64].load(Ordering::Acquire) & b == 0 {
        return None;
    }
    Some(if INET6[i / 64].load(Ordering::Acquire) & b != 0 {
        libc::AF_INET6
    } else {
        libc::AF_INET
    })
}

/// `fd` may have been changed in a way we do not follow: no longer
/// pristine.
pub(crate) fn touched(fd: c_int) {
    if let Some(i) = usize::try_from(fd).ok().filter(|&i| i < CAPACITY) {
        let b = 1u64 << (i % 64);
        if PRISTINE[i / 64].load(Ordering::Relaxed) & b != 0 {
            PRISTINE[i / 64].fetch_and(!b, Ordering::AcqRel);
        }
    }
}

/// At fork (both sides): another process shares every socket, and may
/// change it.
pub(crate) fn forked() {
    for w in &PRISTINE {
        w.store(0, Ordering::Relaxed);
    }
}

/// `fd` is closed or a new object: nothing noted for it stands (nor for
/// an epoll set that had its number).
pub(crate) fn forget(fd: c_int) {
    touched(fd);
    if let Some((w, b)) = bit(fd) {
        if w.load(Ordering::Relaxed) & b != 0 {
            w.fetch_and(!b, Ordering::AcqRel);
        }
    }
    if NOTED_COUNT.load(Ordering::Relaxed) > 0 {
        let mut noted = NOTED.lock();
        noted.retain(|(f, e, _)| *f != fd && *e != fd);
        NOTED_COUNT.store(noted.len(), Ordering::Relaxed);
    }
}

/// The application's epoll_ctl on `fd` (after the kernel accepted it).
pub(crate) fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: Option<libc::epoll_event>) {
    if !is_fresh(fd) {
        return;
    }
    let mut noted = NOTED.lock();
    noted.retain(|(f, e, _)| !(*f == fd && *e == epfd));
    if let (libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD, Some(ev)) = (op, ev) {
        noted.push((fd, epfd, ev));
    }
    NOTED_COUNT.store(noted.len(), Ordering::Relaxed);
}

/// `fd` now refers to one of our objects: its noted registrations, to be
/// made again (`readiness::replay_carried`). `keep`: the socket is still
/// fresh (bound, not yet listening or connected: it will be re-pointed
/// again), so they stay noted.
pub(crate) fn take(fd: c_int, keep: bool) -> Vec<(c_int, libc::epoll_event)> {
    if !is_fresh(fd) {
        return Vec::new();
    }
    let mine: Vec<(c_int, libc::epoll_event)> = {
        let mut noted = NOTED.lock();
        let mine = noted
            .iter()
            .filter(|(f, _, _)| *f == fd)
            .map(|(_, e, ev)| (*e, *ev))
            .collect();
        if !keep {
            noted.retain(|(f, _, _)| *f != fd);
            NOTED_COUNT.store(noted.len(), Ordering::Relaxed);
        }
        mine
    };
    if !keep {
        touched(fd);
        if let Some((w, b)) = bit(fd) {
            w.fetch_and(!b, Ordering::AcqRel);
        }
    }
    mine
}

/// `fd` is about to be re-pointed: its noted registrations are taken off
/// the object it names now. A registration belongs to the (number, file)
/// pair: where that file outlives the re-pointing (a bound socket's name,
/// which the library keeps), it would stay in the set, reporting the old
/// object under a number whose EPOLL_CTL_DEL no longer reaches it.
pub(crate) fn detach(fd: c_int) {
    if !is_fresh(fd) {
        return;
    }
    let sets: Vec<c_int> = NOTED
        .lock()
        .iter()
        .filter(|(f, _, _)| *f == fd)
        .map(|(_, e, _)| *e)
        .collect();
    for epfd in sets {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // (A valid event: the kernel ignores it for DEL.)
        crate::platform::real::waits::epoll_ctl(
            epfd,
            fd,
            crate::platform::sys::EventIn::own(libc::EPOLL_CTL_DEL, &mut ev),
        );
    }
}

/// The socket is no longer fresh (it connected through the kernel, or
/// listens): its registrations are the kernel's own.
pub(crate) fn done(fd: c_int) {
    if is_fresh(fd) {
        forget(fd);
    }
}

/// In a forked child: a parent thread may have held the lock.
pub(crate) fn after_fork_child() {
    NOTED.reset_after_fork();
    forked();
}
