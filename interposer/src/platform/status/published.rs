//! A socket's publishing: what it is, and the entry of the process that
//! uses it now. A socket's memory is copied into a forked child, and the
//! child's copy must not write into its parent's entry (the parent may
//! free it, and claim it again for another socket): the entry belongs to
//! the claim of one process (`Claim`, its pid), and a process that finds
//! the claim not its own (a forked child's first use of the socket)
//! claims an entry of its own, seeded with the ring's totals. Each process
//! frees only its own entry, so a parent's close or exit leaves its
//! child's listing alone.
//!
//! The data path looks at one pointer and one generation: a claim is
//! checked against the fork generation (bumped in both processes at every
//! fork), and only when that moved is the pid compared (the parent keeps
//! its claim; the child makes its own).
#![allow(unsafe_code)] // the claim pointers: see `Published::current`

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use super::entry::{Entry, What};

/// A process's claim: the entry it publishes the socket in (None: none
/// could be had, which is not tried again in this process).
struct Claim {
    pid: u32,
    /// The fork generation it was last found this process's in.
    generation: AtomicU32,
    entry: Option<Entry>,
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
    /// The claim of the process that used the socket last: this one's, or
    /// copied from an ancestor at fork. A leaked `Box<Claim>` (or null),
    /// freed in `Drop` or once unreachable (`retire`).
    current: AtomicPtr<Claim>,
    /// The ancestor's claim this process replaced (threads of this process
    /// may still be reading it).
    retired: AtomicPtr<Claim>,
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
            retired: AtomicPtr::new(std::ptr::null_mut()),
        };
        p.claim_here(|| seed);
        p
    }

    /// This process's claim, if the socket is already published by it in
    /// this fork generation (the data path's look).
    #[inline]
    fn here(&self) -> Option<&Claim> {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: null or a `Box<Claim>` leaked in `claim_here`, freed only
        // in `Drop` (no reference to `self` left) or by `retire` (when no
        // thread of this process can hold it: see there); Acquire pairs
        // with the Release of the compare-exchange that published it.
        let c = unsafe { p.as_ref() }?;
        (c.generation.load(Ordering::Relaxed) == crate::platform::fork::generation()).then_some(c)
    }

    /// `n` bytes more sent (under the send lock); `totals` gives the
    /// ring's (sent, received) for a claim made now.
    #[inline]
    pub(crate) fn sent(&self, n: usize, totals: impl FnOnce() -> (u64, u64)) {
        if let Some(c) = self.here() {
            if let Some(e) = &c.entry {
                e.sent(n);
            }
        } else if let Some((e, false)) = self.claim_here(totals) {
            e.sent(n);
        }
    }

    /// `n` bytes more received (under the receive lock).
    #[inline]
    pub(crate) fn received(&self, n: usize, totals: impl FnOnce() -> (u64, u64)) {
        if let Some(c) = self.here() {
            if let Some(e) = &c.entry {
                e.received(n);
            }
        } else if let Some((e, false)) = self.claim_here(totals) {
            e.received(n);
        }
    }

    /// This process uses the socket (a forked worker accepts on a
    /// listener): publish it under this process if not yet.
    pub(crate) fn use_here(&self, totals: impl FnOnce() -> (u64, u64)) {
        if self.here().is_none() {
            self.claim_here(totals);
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

    /// Sets flags: the socket's own (`SOCKET_FLAGS`, kept for a later
    /// claim) and this process's (waiting), claiming an entry here first.
    pub(crate) fn set_flags(&self, bits: u32, totals: impl FnOnce() -> (u64, u64)) {
        self.flags.fetch_or(bits & SOCKET_FLAGS, Ordering::Relaxed);
        let entry = match self.here() {
            Some(c) => c.entry.as_ref(),
            None => self.claim_here(totals).map(|(e, _)| e),
        };
        if let Some(e) = entry {
            e.set_flags(bits);
        }
    }

    /// Clears flags of this process's entry (none is claimed for it).
    pub(crate) fn clear_flags(&self, bits: u32) {
        self.flags.fetch_and(!bits, Ordering::Relaxed);
        if let Some(Some(e)) = self.here().map(|c| &c.entry) {
            e.clear_flags(bits);
        }
    }

    /// The slow path: this process's claim, made now if the one found is
    /// another process's (or none); with whether it was made now (its
    /// counters are the ring's totals, the caller's bytes included).
    #[cold]
    fn claim_here(&self, totals: impl FnOnce() -> (u64, u64)) -> Option<(&Entry, bool)> {
        let generation = crate::platform::fork::generation();
        let me = super::my_pid();
        if me == 0 {
            return None; // sandboxed before the pid was known: nothing here
        }
        let old = self.current.load(Ordering::Acquire);
        // SAFETY: as in `here`.
        if let Some(c) = unsafe { old.as_ref() } {
            if c.pid == me {
                // Ours, from before a fork (this is the parent).
                c.generation.store(generation, Ordering::Relaxed);
                return c.entry.as_ref().map(|e| (e, false));
            }
        }
        let fd = self.fd.load(Ordering::Relaxed);
        let flags = self.flags.load(Ordering::Relaxed);
        let entry = super::claim(&self.what, fd, flags, totals);
        let fresh = Box::into_raw(Box::new(Claim {
            pid: me,
            generation: AtomicU32::new(generation),
            entry,
        }));
        match self
            .current
            .compare_exchange(old, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.retire(old);
                // SAFETY: just published; freed only as in `here`.
                let c = unsafe { &*fresh };
                c.entry.as_ref().map(|e| (e, true))
            }
            Err(won) => {
                // Another thread of ours claimed first: ours goes (its
                // entry freed), theirs is used.
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as in `here`.
                unsafe { won.as_ref() }.and_then(|c| c.entry.as_ref().map(|e| (e, false)))
            }
        }
    }

    /// `old` (an ancestor's claim, copied at fork) was replaced: it goes
    /// to `retired`, and what was there is freed. A process replaces a
    /// claim at most once (after that the claim is its own), so what
    /// `retired` held came from an ancestor's memory and no thread of this
    /// process ever loaded it from `current`.
    fn retire(&self, old: *mut Claim) {
        let before = self.retired.swap(old, Ordering::AcqRel);
        if !before.is_null() {
            // SAFETY: a leaked `Box<Claim>` unreachable in this process
            // (above); its Drop leaves an ancestor's entry alone.
            drop(unsafe { Box::from_raw(before) });
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        // The socket's last reference in this process: its entry (if this
        // process claimed one) is freed by the claim's Drop.
        for p in [&self.current, &self.retired] {
            let c = p.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !c.is_null() {
                // SAFETY: a leaked `Box<Claim>`; `&mut self`: no other
                // reference remains.
                drop(unsafe { Box::from_raw(c) });
            }
        }
    }
}
