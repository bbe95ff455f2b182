//! When the application runs out of fds (EMFILE): the memfds connections
//! keep only for a possible exec (`KeptMemfd`) are given back, so that
//! `ulimit -n` gives as many connections as kernel TCP.
//!
//! A connection's only fd in the application's process is then its own
//! (the doorbell has none: `conn::Bell`); one whose memfd was given back
//! reads as closed in a program it execs, as one that never kept it. The
//! close-on-exec ones go first: they can cross exec only if the
//! application clears the flag later. After a give-back, no more memfds
//! are kept than are left (`internal_fd::cap_kept_memfds`).
#![forbid(unsafe_code)]

use crate::platform::internal_fd;
use crate::sockets::registry;

/// Memfds given back at a time: enough that a server accepting at its
/// limit walks its connections once per this many accepts, not each time.
const AT_ONCE: usize = 256;

/// Gives back kept memfds (pooled segments' first, then close-on-exec
/// connections', then any). True if one was: the failed call may be made
/// again.
pub(crate) fn give_back() -> bool {
    let mut freed = crate::transport::pool::give_back_memfds();
    for cloexec_only in [true, false] {
        if freed >= AT_ONCE {
            break;
        }
        registry::for_each_socket(|sock| {
            if freed < AT_ONCE {
                if let Some(c) = sock.connection() {
                    freed += usize::from(c.give_back_memfd(cloexec_only));
                }
            }
        });
    }
    internal_fd::cap_kept_memfds();
    if freed > 0 {
        log!(
            debug,
            "out of fds: gave back {freed} memfds kept for exec (those connections read as \
             closed after an exec)"
        );
    }
    freed > 0
}
