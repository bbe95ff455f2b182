//! When the application runs out of fds (EMFILE): SHMNET_DIR's descriptor
//! and the netlink sockets (opened again at their next use) and the
//! memfds connections keep only
//! for a possible exec (`KeptMemfd`) are given back, so that `ulimit -n`
//! gives as many connections as kernel TCP (less the few fds
//! docs/benchmarks.md lists).
//!
//! A connection's only fd in the application's process is then its own
//! (the doorbell has none: `conn::Bell`); one whose memfd was given back
//! reads as closed in a program it execs, as one that never kept it. The
//! close-on-exec ones go first: they can cross exec only if the
//! application clears the flag later. After a give-back, no more memfds
//! are kept than are left, plus one for each connection closed since
//! (`internal_fd::cap_kept_memfds`, `internal_fd::room_freed`).
#![forbid(unsafe_code)]

use crate::platform::guard;
use crate::platform::internal_fd::{self, KeptMemfd};
use crate::sockets::registry;
use rustix::io::Errno;

/// Memfds given back at a time: enough that a server accepting at its
/// limit walks its connections once per this many accepts, not each time.
const AT_ONCE: usize = 256;

/// Gives back kept memfds (pooled segments' first, then close-on-exec
/// connections', then any). True if one was: the failed call may be made
/// again.
///
/// For a call that passed through to libc (the exports' retry, outside
/// the re-entry guard): runs inside the guard, so that a signal handler
/// interrupting the walk (which holds the registry's read lock) is a
/// nested call, and never from a nested call itself (false there).
///
/// An EMFILE there may not be this process's fd table being full
/// (inotify's per-user instances): then nothing is given back. (A seccomp
/// filter may kill that probe's system call: nothing is given back in a
/// sandbox either.)
pub(crate) fn give_back() -> bool {
    let Some(_inside) = guard::enter("give_back") else {
        return false;
    };
    if crate::platform::sandbox::active() || internal_fd::room_for_one() {
        return false;
    }
    give_back_inside()
}

/// `give_back` from a call's own logic, which runs inside the guard
/// already (a nested call never runs logic), after its own system calls
/// ran out of fds (the table is full: a room probe now would find the
/// fds that call already released).
pub(crate) fn give_back_inside() -> bool {
    if crate::platform::sandbox::active() {
        return false;
    }
    // SHMNET_DIR's descriptor and the netlink sockets first: each costs
    // only a reopen at its next use.
    // (`|`: each is given back.)
    let dir = crate::platform::safedir::give_back() | crate::platform::netlink::give_back();
    let mut freed: Vec<KeptMemfd> = crate::transport::pool::give_back_memfds();
    for cloexec_only in [true, false] {
        if freed.len() >= AT_ONCE {
            break;
        }
        registry::for_each_socket(|sock| {
            if freed.len() < AT_ONCE {
                if let Some(m) = sock
                    .connection()
                    .and_then(|c| c.give_back_memfd(cloexec_only))
                {
                    freed.push(m);
                }
            }
        });
    }
    let n = freed.len();
    drop(freed); // closed outside the registry's lock
    if n == 0 {
        return dir;
    }
    internal_fd::cap_kept_memfds();
    log!(
        debug,
        "out of fds: gave back {n} memfds kept for exec (those connections read as closed \
         after an exec)"
    );
    true
}

/// `make`, once more after `give_back_inside` if it failed with EMFILE
/// (from a call's logic).
pub(crate) fn retry<T>(mut make: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    match make() {
        Err(Errno::MFILE) if give_back_inside() => make(),
        r => r,
    }
}
