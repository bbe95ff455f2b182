//! The library's own fds (doorbells, reservations, kept memfds, netlink
//! and directory handles): kept high, above `internal_fd_floor()`, out of
//! the dense low range programs size their tables by, and marked in the fd
//! table so that the application's close/close_range/closefrom cannot take
//! them (`fdtable::set_internal`).
#![deny(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io::Errno;

/// RLIMIT_NOFILE's soft limit as last seen: 0 not looked up yet,
/// `u64::MAX` unlimited, else the limit plus one (a limit of 0 exists).
static NOFILE: AtomicU64 = AtomicU64::new(0);

/// RLIMIT_NOFILE's soft limit (None: unlimited). Looked up once and then
/// kept: the `setrlimit`/`prlimit` hooks tell it when this process changes
/// it (nginx's worker_rlimit_nofile lowers it after start), so the fd
/// floor never costs a system call per fd. A change made past those hooks
/// (another process's prlimit on us, a raw system call) is noticed when a
/// move to the floor fails with EINVAL (`InternalFd`).
pub(crate) fn nofile_limit() -> Option<u64> {
    match NOFILE.load(Ordering::Relaxed) {
        0 => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
            set_nofile_limit(Some(limit));
            limit
        }
        u64::MAX => None,
        n => Some(n - 1),
    }
}

/// The process's RLIMIT_NOFILE soft limit is now `limit` (None for
/// unlimited), or unknown (`None` outer: looked up at the next need).
pub(crate) fn set_nofile_limit(limit: Option<Option<u64>>) {
    let v = match limit {
        None => 0,
        Some(None) => u64::MAX,
        Some(Some(n)) => n.saturating_add(1).min(u64::MAX - 1),
    };
    NOFILE.store(v, Ordering::Relaxed);
}

/// The lowest number for the library's own fds (doorbells, reservations):
/// half the fd limit (at most 4096), so they stay out of the dense low range
/// that programs size their tables by (wrk's event loop holds 3 fds per
/// connection; an fd of ours among them made its connects fail). Follows
/// the limit as the program changes it (`nofile_limit`): fds at or above
/// the limit cannot be made.
pub(crate) fn internal_fd_floor() -> i32 {
    let limit = nofile_limit().unwrap_or(1024);
    (limit / 2).clamp(3, 4096) as i32
}

/// Whether the library's own fds crowd the program's: `fd`, one of ours
/// just made, sits below the floor (the range above it is full) or more
/// than a quarter of the fd limit above it (ours are made lowest first
/// there, so its distance from the floor is about how many we hold). Work
/// that is optional and adds fds per peer or per socket (a UDP sender's
/// link, a socket carried) is declined then and the kernel's path serves:
/// the program keeps the fds it would have under kernel UDP (sweep37 D2: a
/// process with 250 carried UDP sockets, or a receiver of 300 sender
/// processes, had its own open() fail at `ulimit -n` 1024 / 128).
pub(crate) fn crowded(fd: BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let limit = nofile_limit().unwrap_or(1 << 20).min(1 << 20) as i64;
    let floor = i64::from(internal_fd_floor());
    let n = i64::from(fd.as_raw_fd());
    n < floor || n - floor >= (limit / 4).max(8)
}

/// `crowded` for the next fd of ours: a copy of `fd` made where ours go
/// and closed at once (two system calls, for work that then makes
/// several fds: a UDP socket's conversion).
pub(crate) fn crowded_next(fd: BorrowedFd<'_>) -> bool {
    match dup_high(fd, internal_fd_floor()) {
        Ok(copy) => {
            let c = crowded(copy.as_fd());
            crate::platform::sys::close_fd(copy);
            c
        }
        Err(_) => true,
    }
}

/// F_DUPFD_CLOEXEC to `floor` or above; an EINVAL (the floor is at or
/// above the limit: it was lowered past our hooks) makes the limit looked
/// up again.
fn dup_high(fd: BorrowedFd<'_>, floor: i32) -> Result<OwnedFd, Errno> {
    rustix::io::fcntl_dupfd_cloexec(fd, floor).inspect_err(|e| {
        if *e == Errno::INVAL {
            set_nofile_limit(None);
        }
    })
}

/// One of the library's own fds, kept at `internal_fd_floor()` or above and
/// marked in the fd table, so the application's close/close_range/closefrom
/// cannot take it from us (see `fdtable::set_internal`).
#[derive(Debug)]
pub(crate) struct InternalFd(Option<OwnedFd>);

impl InternalFd {
    /// Takes `fd`, moving it up out of the application's range if it is not
    /// there already (keeps it where it is if that fails).
    pub(crate) fn new(fd: OwnedFd) -> InternalFd {
        use std::os::fd::AsRawFd;
        let floor = internal_fd_floor();
        let fd = if fd.as_raw_fd() >= floor {
            fd
        } else {
            dup_high(fd.as_fd(), floor).unwrap_or(fd)
        };
        crate::platform::fdtable::set_internal(fd.as_raw_fd(), true);
        InternalFd(Some(fd))
    }

    /// The fd, no longer marked as the library's (to hand to an owner that
    /// closes it as a plain fd).
    pub(crate) fn into_owned(mut self) -> OwnedFd {
        use std::os::fd::AsRawFd;
        let fd = self
            .0
            .take()
            .expect("an InternalFd holds its fd until dropped");
        crate::platform::fdtable::set_internal(fd.as_raw_fd(), false);
        fd
    }

    /// A copy of `fd` of our own (up out of the application's range when
    /// there is room there).
    pub(crate) fn dup(fd: BorrowedFd<'_>) -> Result<InternalFd, Errno> {
        let copy = match dup_high(fd, internal_fd_floor()) {
            Err(Errno::INVAL | Errno::MFILE) => rustix::io::fcntl_dupfd_cloexec(fd, 0)?,
            r => r?,
        };
        Ok(InternalFd::new(copy))
    }
}

impl AsFd for InternalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // Some until dropped.
        match &self.0 {
            Some(fd) => fd.as_fd(),
            None => unreachable!("an InternalFd is used after its drop"),
        }
    }
}

impl Drop for InternalFd {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(fd) = self.0.take() {
            // Unmarked first: the close that follows goes through our own
            // close hook, which must let it pass.
            crate::platform::fdtable::set_internal(fd.as_raw_fd(), false);
            // Closed with close(2) alone: std's OwnedFd drop, built with
            // debug assertions, asks fcntl(F_GETFD) first, which a sandbox
            // filter kills for.
            crate::platform::sys::close_fd(fd);
        }
    }
}

/// A segment's memfd kept for a carrier (`Connection::ready_for_exec`): it
/// cannot be had later (the mapping gives no fd back without
/// CAP_CHECKPOINT_RESTORE), so every connection keeps one — where it fits:
/// at `internal_fd_floor()` or above (never one of the application's low
/// numbers), and while the kept memfds fill at most a quarter of the room
/// between the floor and the fd limit, so that doorbells, which must have
/// an fd, keep the rest (at the default limit of 1024: 128 kept memfds,
/// and a process holds 384 connections where it held 512 before memfds
/// were kept; python makes its sockets close-on-exec and inheritable only
/// to pass them, so that flag says nothing at creation). A connection
/// without one reads as closed after exec.
pub(crate) struct KeptMemfd(Option<InternalFd>);

/// Memfds kept now (`KeptMemfd`), in connections and in the pool.
static KEPT_MEMFDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// At most this many are kept: lowered to what is left each time the
/// application ran out of fds and some were given back
/// (`sockets::spare_fds`).
static KEPT_CAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);

/// See `KEPT_CAP`.
pub(crate) fn cap_kept_memfds() {
    KEPT_CAP.store(KEPT_MEMFDS.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// A connection closed: its fd's room may hold a kept memfd again (the
/// cap `cap_kept_memfds` set rises by one).
pub(crate) fn room_freed() {
    let _ = KEPT_CAP.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        (c != usize::MAX).then(|| c + 1)
    });
}

/// Whether one more fd can be made now (a dup made and closed at once):
/// tells a full fd table from other EMFILEs.
pub(crate) fn room_for_one() -> bool {
    rustix::fs::openat(
        rustix::fs::CWD,
        "/",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .is_ok()
}

impl KeptMemfd {
    pub(crate) fn new(fd: OwnedFd) -> Option<KeptMemfd> {
        use std::os::fd::AsRawFd;
        let floor = internal_fd_floor();
        let room = nofile_limit()
            .unwrap_or(1024)
            .saturating_sub(floor as u64)
            .min(crate::platform::fdtable::CAPACITY as u64) as usize;
        let cap = (room / 4).min(KEPT_CAP.load(Ordering::Relaxed));
        if KEPT_MEMFDS.fetch_add(1, Ordering::Relaxed) >= cap {
            KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let kept = if fd.as_raw_fd() >= floor {
            Some(InternalFd::new(fd))
        } else {
            // The low fd is closed here, with close(2) alone (see
            // `InternalFd`'s drop).
            let high = dup_high(fd.as_fd(), floor).ok().map(InternalFd::new);
            crate::platform::sys::close_fd(fd);
            high
        };
        if kept.is_none() {
            KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
        }
        kept.map(|fd| KeptMemfd(Some(fd)))
    }

    /// The fd, no longer counted nor marked as the library's.
    pub(crate) fn into_owned(mut self) -> OwnedFd {
        let fd = self
            .0
            .take()
            .expect("a KeptMemfd holds its fd until dropped");
        KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
        fd.into_owned()
    }
}

impl AsFd for KeptMemfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // Some until dropped or given away.
        match &self.0 {
            Some(fd) => fd.as_fd(),
            None => unreachable!("a KeptMemfd is used after it gave its fd away"),
        }
    }
}

impl Drop for KeptMemfd {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fd floor follows what the rlimit hooks report, without a
    /// system call; "unknown" is looked up again.
    #[test]
    fn nofile_limit_is_kept_and_followed() {
        set_nofile_limit(Some(Some(64)));
        assert_eq!((nofile_limit(), internal_fd_floor()), (Some(64), 32));
        set_nofile_limit(Some(Some(0)));
        assert_eq!((nofile_limit(), internal_fd_floor()), (Some(0), 3));
        set_nofile_limit(Some(Some(1 << 20)));
        assert_eq!(internal_fd_floor(), 4096);
        set_nofile_limit(Some(None));
        assert_eq!(nofile_limit(), None);
        set_nofile_limit(None);
        let real = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        assert_eq!(nofile_limit(), real);
    }
}
