//! Readiness is the kernel's: an emulated fd is a real Unix socket whose
//! readability (doorbell bytes) and writability (filler bytes) follow the
//! ring (docs/architecture.md). What the kernel cannot learn from those
//! bytes alone is kept here, per epoll set (`set`):
//!
//! - Which connections an epoll set holds (`ctl`). A reader raises its
//!   flag lazily (`Connection::lazy`), which poll and select make up for
//!   by looking at the ring (`calls::iomux`); epoll_wait cannot, so a
//!   connection added to a set turns eager (`Connection::watch`). Data
//!   that came while it was lazy has no doorbell byte: the set is told
//!   about it here ("pending") until the ring is drained, and epoll_wait
//!   (`calls::iomux::epoll`) reports it (`pending`), through any number
//!   the set is known under (dup), and through a set of ours it is nested
//!   in.
//! - How a reader waits. Edge-triggered epoll reports every arrival of
//!   data on a TCP socket, also while older data is unread; the ring rings
//!   its reader only on the first publish after the reader waited. So
//!   EPOLLET tells the ring to ring on every publish.
//! - Who waits on a set: while one thread alone does, its members' flags
//!   stay down while it is busy (`defer`, "doorbells that disappear under
//!   load").
//!
//! A dual listener (an epoll instance behind the application's fd, see
//! `dual`) cannot take EPOLLEXCLUSIVE, which is dropped from its
//! registrations.
#![forbid(unsafe_code)]

use core::ffi::c_int;

mod ctl;
mod datagrams;
mod defer;
mod hangups;
mod pending;
mod set;
mod wake;

pub(crate) use ctl::{adopt, epoll_ctl, replay_carried, restore_hidden};
pub(crate) use datagrams::{reported as datagrams_reported, spinnable as spinnable_datagrams};
pub(crate) use defer::{
    after_sleep, before_sleep, crowd, crowd_all, forking, sent, unarmed, unarmed_ready, waiting,
};
pub(crate) use hangups::tcp_hangups;
pub(crate) use pending::{awaits_reply, collected, no_reply_soon, pending, Pending};
pub(crate) use wake::{bare_sleep, closed, closing, closing_range, woken};

/// epoll_create or epoll_create1 returned `fd`.
pub(crate) fn epoll_made(fd: c_int) {
    if fd >= 0 {
        wake::key();
        set::sets_always().made(fd);
    }
}

/// Whether this process has an epoll set we know.
pub(crate) fn any_set() -> bool {
    set::any()
}

/// Whether `fd` is the number of an epoll set we know.
pub(crate) fn is_set(fd: c_int) -> bool {
    set::sets().is_some_and(|mut s| s.find(fd).is_some())
}

/// `new` is a duplicate of `old` (dup, dup2, dup3, F_DUPFD): if `old` is
/// an epoll set of ours, `new` is another number of the same set, whose
/// waits our epoll_wait answers as it does `old`'s (one thread waiting
/// through both numbers still defers; two threads crowd it, as on one
/// number).
pub(crate) fn alias(old: c_int, new: c_int) {
    if let Some(mut sets) = set::sets() {
        sets.alias(old, new);
    }
}

/// `fd` was closed, or is a new fd (which may reuse a closed fd's
/// number): forget it as a number of a set (a set with no number left is
/// gone). (Members stay while their connection lives, see
/// `Member::live`.)
pub(crate) fn forget(fd: c_int) {
    forget_range(fd, fd);
}

/// `forget` for every fd from `first` to `last` (close_range, closefrom).
pub(crate) fn forget_range(first: c_int, last: c_int) {
    if let Some(mut sets) = set::sets() {
        sets.forget_range(first, last);
    }
}

/// A wait on `epfd` with room for one event and events of ours to report
/// (`pending`): whether the kernel is asked first this time. Every other
/// call, so that neither side starves the other (the kernel rotates its
/// ready list; ours rotate in `pending`). Review H2: the one slot went to
/// a virtual EPOLLOUT on every call, and the kernel was never asked.
pub(crate) fn kernel_turn(epfd: c_int) -> bool {
    let Some(mut sets) = set::sets() else {
        return true;
    };
    let Some(set) = sets.find(epfd) else {
        return true;
    };
    set.kernel_turn = !set.kernel_turn;
    set.kernel_turn
}

/// In a forked child: a thread of the parent may have held the lock.
pub(crate) fn after_fork_child() {
    set::reset_after_fork();
    defer::after_fork_child();
}
