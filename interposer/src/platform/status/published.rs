//! A socket's publishing: what it is, and the entry of the process that
//! uses it now. A socket's memory is copied into a forked child, and the
//! child's copy must not write into its parent's entry (the parent may
//! free it, and claim it again for another socket): the entry belongs to
//! the claim of one process (`Claim`, its pid); a forked child drops its
//! copy of its parent's claim, and at its first use of the socket claims
//! an entry of its own, seeded with the ring's totals. Each process
//! frees only its own entry, so a parent's close or exit leaves its
//! child's listing alone.
//!
//! The data path looks at one pointer: in a forked child the fork handler
//! empties it (`after_fork_child`, with every socket's locks), so that
//! neither a pid nor a fork generation is compared per call; an empty one
//! makes the claim.
#![allow(unsafe_code)] // the claim pointers: see `Published::current`

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use super::entry::{Entry, What};

/// A process's claim: the entry it publishes the socket in (None: none
/// could be had, which is not tried again in this process).
struct Claim {
    pid: u32,
    entry: Option<Entry>,
    /// Directions (`SENT`, `RECEIVED`) whose counter was seeded without
    /// that direction's lock (another thread may have been between its
    /// ring operation and its count): their next count, under the lock,
    /// sets the ring's total instead of adding.
    resync: AtomicU32,
}

const SENT: u32 = 1;
const RECEIVED: u32 = 2;

impl Claim {
    #[inline(always)]
    fn sent(&self, n: usize, totals: impl Fn() -> (u64, u64)) {
        if let Some(e) = &self.entry {
            if self.resync.load(Ordering::Relaxed) & SENT == 0 {
                e.sent(n);
            } else {
                self.resync_now(e, SENT, totals);
            }
        }
    }

    #[inline(always)]
    fn received(&self, n: usize, totals: impl Fn() -> (u64, u64)) {
        if let Some(e) = &self.entry {
            if self.resync.load(Ordering::Relaxed) & RECEIVED == 0 {
                e.received(n);
            } else {
                self.resync_now(e, RECEIVED, totals);
            }
        }
    }

    /// Under direction `dir`'s lock, after its ring operation: the ring's
    /// total for it is exact.
    #[cold]
    #[inline(never)]
    fn resync_now(&self, e: &Entry, dir: u32, totals: impl Fn() -> (u64, u64)) {
        let (sent, received) = totals();
        if dir == SENT {
            e.set_sent(sent);
        } else {
            e.set_received(received);
        }
        self.resync.fetch_and(!dir, Ordering::Relaxed);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // An ancestor's claim (a forked copy) is left to its process.
        if self.pid == super::my_pid() {
            if let Some(e) = &self.entry {
                e.free();
            }
        }
    }
}

/// Flags of the socket (not of one process's use of it): a new claim
/// starts with them.
const SOCKET_FLAGS: u32 = super::CONNECTOR | super::SHUT_WR | super::SHUT_RD | super::PEER_EOF;

/// See the module's comment.
pub(crate) struct Published {
    what: What,
    /// The application's fd number (u32::MAX: not known yet).
    fd: AtomicU32,
    flags: AtomicU32,
    /// This process's claim: a leaked `Box<Claim>`, or null until this
    /// process uses the socket. Freed in `Drop`, or in a forked child's
    /// fork handler (the parent's copy).
    current: AtomicPtr<Claim>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status::Published({:?})", self.what)
    }
}

impl Published {
    /// A socket made by this process: claimed at once (counters from
    /// `seed`: zero for a new connection, the ring's totals for one
    /// adopted after exec).
    pub(crate) fn new(what: What, flags: u32, seed: (u64, u64)) -> Published {
        let p = Published {
            what,
            fd: AtomicU32::new(u32::MAX),
            flags: AtomicU32::new(flags & SOCKET_FLAGS),
            current: AtomicPtr::new(std::ptr::null_mut()),
        };
        // (No other thread has the socket yet: the seed is exact.)
        p.claim_here(SENT | RECEIVED, || seed, true);
        p
    }

    /// This process's claim, if it has made one (the data path's look).
    #[inline(always)]
    fn here(&self) -> Option<&Claim> {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: null or a `Box<Claim>` leaked in `claim_here`, freed only
        // in `Drop` (no reference to `self` left) or in a forked child's
        // fork handler (one thread, not in a call of ours); Acquire pairs
        // with the Release of the compare-exchange that published it.
        unsafe { p.as_ref() }
    }

    /// In a forked child (one thread, from the fork handlers): the claim
    /// is the parent's; it goes (the parent's entry stays), and this
    /// process claims its own at its first use of the socket.
    pub(crate) fn after_fork_child(&self) {
        let p = self.current.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: a leaked `Box<Claim>` of this process's memory (the
            // copy of the parent's); no other thread exists to hold it. Its
            // Drop leaves the parent's entry alone (not our pid).
            drop(unsafe { Box::from_raw(p) });
        }
    }

    /// `n` bytes more sent (under the send lock); `totals` gives the
    /// ring's (sent, received) for a claim made now.
    #[inline(always)]
    pub(crate) fn sent(&self, n: usize, totals: impl Fn() -> (u64, u64)) {
        if let Some(c) = self.here() {
            c.sent(n, totals);
        } else if let Some((c, false)) = self.claim_here(SENT, &totals, false) {
            c.sent(n, totals);
        }
    }

    /// `n` bytes more received (under the receive lock).
    #[inline(always)]
    pub(crate) fn received(&self, n: usize, totals: impl Fn() -> (u64, u64)) {
        if let Some(c) = self.here() {
            c.received(n, totals);
        } else if let Some((c, false)) = self.claim_here(RECEIVED, &totals, false) {
            c.received(n, totals);
        }
    }

    /// This process uses the socket (a forked worker accepts on a
    /// listener): publish it under this process if not yet.
    pub(crate) fn use_here(&self, totals: impl Fn() -> (u64, u64)) {
        if self.here().is_none() {
            self.claim_here(0, totals, true);
        }
    }

    /// This process waits for the socket (poll, select, epoll_ctl: a
    /// forked child handed a connection may only wait on it for a while):
    /// publish it under this process if not yet, without a system call.
    #[inline]
    pub(crate) fn waited_here(&self, totals: impl Fn() -> (u64, u64)) {
        if self.here().is_none() {
            self.claim_here(0, totals, false);
        }
    }

    /// The application's fd number (the first one it got).
    pub(crate) fn set_fd(&self, fd: i32) {
        let fd = fd as u32;
        let _ = self
            .fd
            .compare_exchange(u32::MAX, fd, Ordering::Relaxed, Ordering::Relaxed);
        if let Some(Some(e)) = self.here().map(|c| &c.entry) {
            e.set_fd(fd);
        }
    }

    /// The application's number `fd` for the socket is closed (or another
    /// file put there): the number shown becomes `next`, another of its
    /// numbers, if `fd` was the one shown (after dup2 and close the row
    /// named a closed fd).
    pub(crate) fn fd_gone(&self, fd: i32, next: Option<i32>) {
        let next = next.map_or(u32::MAX, |n| n as u32);
        if self
            .fd
            .compare_exchange(fd as u32, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
            || next == u32::MAX
        {
            return;
        }
        if let Some(Some(e)) = self.here().map(|c| &c.entry) {
            e.replace_fd(fd as u32, next);
        }
    }

    /// Sets flags: the socket's own (`SOCKET_FLAGS`, kept for a later
    /// claim) and this process's (waiting), claiming an entry here first.
    pub(crate) fn set_flags(&self, bits: u32, totals: impl Fn() -> (u64, u64)) {
        let socket_bits = bits & SOCKET_FLAGS;
        // (A read-modify-write only when a bit changes: a blocking read
        // sets and clears WAIT_READ, a process flag, at every sleep.)
        if self.flags.load(Ordering::Relaxed) & socket_bits != socket_bits {
            self.flags.fetch_or(socket_bits, Ordering::Relaxed);
        }
        let entry = match self.here() {
            Some(c) => c.entry.as_ref(),
            None => self
                .claim_here(0, totals, false)
                .and_then(|(c, _)| c.entry.as_ref()),
        };
        if let Some(e) = entry {
            e.set_flags(bits);
        }
    }

    /// Clears flags of this process's entry (none is claimed for it).
    pub(crate) fn clear_flags(&self, bits: u32) {
        if self.flags.load(Ordering::Relaxed) & bits != 0 {
            self.flags.fetch_and(!bits, Ordering::Relaxed);
        }
        if let Some(Some(e)) = self.here().map(|c| &c.entry) {
            e.clear_flags(bits);
        }
    }

    /// The slow path: this process's claim, made now if it has none; with
    /// whether it was made now by this call (its counters are the ring's
    /// totals, the caller's bytes included). `exact`: the directions whose
    /// lock the caller holds (their totals are exact now); `files`: whether
    /// the caller may make system calls (`status::claim`).
    #[cold]
    #[inline(never)]
    fn claim_here(
        &self,
        exact: u32,
        totals: impl Fn() -> (u64, u64),
        files: bool,
    ) -> Option<(&Claim, bool)> {
        if let Some(c) = self.here() {
            return Some((c, false));
        }
        let me = super::my_pid();
        if me == 0 {
            return None; // sandboxed before the pid was known: nothing here
        }
        let fd = self.fd.load(Ordering::Relaxed);
        let flags = self.flags.load(Ordering::Relaxed);
        let entry = super::claim(&self.what, fd, flags, totals, files);
        let fresh = Box::into_raw(Box::new(Claim {
            pid: me,
            entry,
            resync: AtomicU32::new((SENT | RECEIVED) & !exact),
        }));
        match self.current.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // SAFETY: just published; freed only as in `here`.
                Some((unsafe { &*fresh }, true))
            }
            Err(won) => {
                // Another thread of ours claimed first: ours goes (its
                // entry freed), theirs is used (its seed of our direction
                // is resynced by our count, `Claim::resync`).
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as in `here`.
                unsafe { won.as_ref() }.map(|c| (c, false))
            }
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        // The socket's last reference in this process: its entry (if this
        // process claimed one) is freed by the claim's Drop.
        let c = self.current.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !c.is_null() {
            // SAFETY: a leaked `Box<Claim>`; `&mut self`: no other
            // reference remains.
            drop(unsafe { Box::from_raw(c) });
        }
    }
}
