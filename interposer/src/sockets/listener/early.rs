//! Rendezvous made at bind by root, for a listen by another user.
//!
//! A default-mode client trusts a rendezvous only from the kernel
//! listener's owner, the uid that made the TCP socket
//! (`transport::lookup`, `verify`): anybody may bind an abstract name,
//! and what the client sees of the rendezvous is SO_PEERCRED, the
//! credentials of whoever called listen(2) on it. A privilege-separated
//! server binds as root and listens in a child that has dropped to a user
//! of its own (varnishd: the manager binds, its cache child listens and
//! accepts). A rendezvous made at that listen carries the child's uid,
//! which no client may tell from a squatter's, so the child got kernel TCP
//! only. Here a root process makes the rendezvous (and its policy hints)
//! when the socket is bound, with root's credentials; the listen that
//! follows, in this process or in a forked child of whatever user, takes
//! it (`calls::listen`). Only root: nobody else can change user between
//! bind and listen.
//!
//! An entry lives until that listen, the close of the number it was bound
//! on (close, dup2/dup3 over it, close_range, closefrom: in this process),
//! or the exec of a new image. At most `MAX`, the oldest going first: a
//! root process binding sockets it never listens on pays a few fds, not a
//! leak (a socket closed past us, or through another number, leaves an
//! entry that a later one pushes out).
#![forbid(unsafe_code)]

use core::ffi::c_int;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::Mutex;

/// Bound sockets with a rendezvous made early, at most.
const MAX: usize = 64;

/// A rendezvous made at bind: the fd number the socket was bound on, the
/// kernel socket's cookie (its name), who made it, the listening Unix
/// socket and its hint names.
pub(crate) struct Early {
    pub(crate) fd: c_int,
    pub(crate) cookie: u64,
    pub(crate) maker: u32,
    pub(crate) sock: InternalFd,
    pub(crate) hints: Vec<InternalFd>,
}

static EARLY: Mutex<Vec<Early>> = Mutex::new(Vec::new());
/// Entries in EARLY, so that a close looks at the lock only when one is.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Keeps `early` for the listen to come (the oldest entry goes if `MAX`
/// are kept; closed outside the lock).
pub(crate) fn keep(early: Early) {
    let mut gone = Vec::new();
    let mut all = EARLY.lock();
    all.retain(|e| e.cookie != early.cookie && e.fd != early.fd);
    if all.len() >= MAX {
        gone.push(all.remove(0));
    }
    all.push(early);
    COUNT.store(all.len(), Ordering::Relaxed);
    drop(all);
    drop(gone);
}

/// Whether any entry is kept (one load).
pub(crate) fn any() -> bool {
    COUNT.load(Ordering::Relaxed) != 0
}

/// The rendezvous made at bind for the socket whose cookie is `cookie`.
pub(crate) fn take(cookie: u64) -> Option<Early> {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut all = EARLY.lock();
    let i = all.iter().position(|e| e.cookie == cookie)?;
    let early = all.swap_remove(i);
    COUNT.store(all.len(), Ordering::Relaxed);
    Some(early)
}

/// The numbers `first..=last` are being closed (close: one; dup2/dup3
/// over one; close_range, closefrom): the entries bound on them go. (A
/// socket closed through another number keeps its entry until pushed out;
/// another number of it then listens without one: kernel TCP only, as
/// before this module, if its user is not the socket's.)
pub(crate) fn forget_range(first: c_int, last: c_int) {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut all = EARLY.lock();
    let (gone, kept): (Vec<Early>, Vec<Early>) = core::mem::take(&mut *all)
        .into_iter()
        .partition(|e| (first..=last).contains(&e.fd));
    *all = kept;
    COUNT.store(all.len(), Ordering::Relaxed);
    drop(all);
    drop(gone);
}

/// `forget_range` of one number.
pub(crate) fn forget(fd: c_int) {
    forget_range(fd, fd);
}

/// In a forked child: a parent thread may have held the lock. (The
/// entries stay: the child's listen takes them.)
pub(crate) fn after_fork_child() {
    EARLY.reset_after_fork();
}
