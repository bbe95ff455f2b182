//! "Is this fd ours?" — a lock-free, allocation-free table indexed by fd.
//!
//! Every hooked call on an fd asks this first, including calls from signal
//! handlers (redis logs from its SIGTERM handler), so the lookup is a single
//! atomic load: no lock, no allocation, no TLS, safe in a signal handler and
//! in a forked child (the table is plain memory, copied with the fds it
//! describes).
//!
//! # Slot design
//! An entry is 0 (not ours) or a [`Handle`]: a slot index plus a generation
//! into the registry's slab (`registry.rs`: `Arc<Socket>` slots under a
//! process-private read-write lock, recycled with a bumped generation). A
//! reader does `h = get(fd)`, then under the slab's read lock checks the
//! slot's generation is still `h.generation` and clones its `Arc` (else
//! the fd is treated as closed). So a racing `close()` can make a reader
//! see a stale generation, never freed memory. An `AtomicPtr` to an `Arc`
//! here would not do: loading the pointer and incrementing the count are
//! two steps that a concurrent last `drop` can fall between (that needs
//! hazard pointers or epochs, i.e. more machinery on the signal path).
//!
//! # Large fds
//! The table covers fds below [`CAPACITY`] (1<<16; 512 KiB of zeroed .bss,
//! touched only where used). An fd above it is refused ([`OutOfRange`]): the
//! data path must leave such a socket on the kernel path (pass-through,
//! `SHMNET_FALLBACK=tcp`) or fail the call with EMFILE under `never`.
//! `select()` cannot use such fds anyway, and `ulimit -n` is rarely higher.
//!
//! # Stale entries
//! glibc-internal closes (`fclose` of a stream glibc made on a socket of
//! ours, freopen's dup3, `__close_nocancel`) bypass our hooks, so an fd number can be reused by a
//! non-socket while still marked here. Every hooked call that creates fds
//! (open, socket, pipe, dup, accept...) releases a stale entry under the
//! number it returns (`sockets::stale::fresh`), and `fclose`, `closefrom` and
//! `close_range` are hooked for the closes glibc makes past `close`.
#![forbid(unsafe_code)]

use core::num::NonZeroU64;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::os::fd::RawFd;

/// Number of fds the global table covers.
pub const CAPACITY: usize = 1 << 16;

/// Reference to per-socket state: slab index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle(NonZeroU64);

impl Handle {
    /// `index` must be below `u32::MAX` (the encoding reserves 0 for "empty").
    pub fn new(index: u32, generation: u32) -> Option<Handle> {
        let low = u64::from(index.checked_add(1)?);
        NonZeroU64::new(u64::from(generation) << 32 | low).map(Handle)
    }

    pub fn index(self) -> u32 {
        (self.0.get() as u32).wrapping_sub(1)
    }

    pub fn generation(self) -> u32 {
        (self.0.get() >> 32) as u32
    }

    fn from_raw(raw: u64) -> Option<Handle> {
        NonZeroU64::new(raw).map(Handle)
    }

    /// The handle as one word (never 0), for lock-free parking.
    pub fn raw(self) -> u64 {
        self.0.get()
    }

    /// The inverse of [`Handle::raw`]; `None` for 0.
    pub fn from_raw_parts(raw: u64) -> Option<Handle> {
        Handle::from_raw(raw)
    }
}

/// The fd is negative or not below the table's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// Why [`Table::insert`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    OutOfRange,
    /// Already ours, with this handle.
    Occupied(Handle),
}

/// An fd-indexed table of `N` atomic entries.
pub struct Table<const N: usize> {
    entries: [AtomicU64; N],
    /// Number of non-empty entries, so whole-range scans can be skipped.
    owned: AtomicUsize,
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Table<N> {
    pub const fn new() -> Self {
        Table {
            entries: [const { AtomicU64::new(0) }; N],
            owned: AtomicUsize::new(0),
        }
    }

    fn entry(&self, fd: RawFd) -> Option<&AtomicU64> {
        usize::try_from(fd).ok().and_then(|i| self.entries.get(i))
    }

    /// The handle for `fd`, if it is ours. One atomic load.
    #[inline]
    pub fn get(&self, fd: RawFd) -> Option<Handle> {
        Handle::from_raw(self.entry(fd)?.load(Ordering::Acquire))
    }

    /// Mark `fd` as ours (it must not already be).
    pub fn insert(&self, fd: RawFd, handle: Handle) -> Result<(), InsertError> {
        let entry = self.entry(fd).ok_or(InsertError::OutOfRange)?;
        match entry.compare_exchange(0, handle.0.get(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.owned.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(raw) => {
                Err(Handle::from_raw(raw).map_or(InsertError::OutOfRange, InsertError::Occupied))
            }
        }
    }

    /// Point `fd` at `handle` whatever it held (dup2 onto an fd); returns the
    /// previous handle, whose reference the caller now owns.
    pub fn replace(&self, fd: RawFd, handle: Handle) -> Result<Option<Handle>, OutOfRange> {
        let entry = self.entry(fd).ok_or(OutOfRange)?;
        let old = Handle::from_raw(entry.swap(handle.0.get(), Ordering::AcqRel));
        if old.is_none() {
            self.owned.fetch_add(1, Ordering::Relaxed);
        }
        Ok(old)
    }

    /// Forget `fd`; returns its handle. Of two racing removers (two threads
    /// closing the same fd) exactly one gets it.
    pub fn remove(&self, fd: RawFd) -> Option<Handle> {
        let entry = self.entry(fd)?;
        if entry.load(Ordering::Relaxed) == 0 {
            return None; // the common case: a store-free miss
        }
        let old = Handle::from_raw(entry.swap(0, Ordering::AcqRel));
        if old.is_some() {
            self.owned.fetch_sub(1, Ordering::Relaxed);
        }
        old
    }

    /// Forget every fd in `first..=last` (close_range), calling `released`
    /// for each one that was ours.
    pub fn remove_range(&self, first: u32, last: u32, mut released: impl FnMut(RawFd, Handle)) {
        if self.owned.load(Ordering::Relaxed) == 0 || first > last {
            return;
        }
        let end = (last as usize).min(N.saturating_sub(1));
        for fd in first as usize..=end {
            // fd < N <= i32::MAX for any table we build.
            let Ok(fd) = RawFd::try_from(fd) else { break };
            if let Some(handle) = self.remove(fd) {
                released(fd, handle);
            }
        }
    }

    /// Whether any fd still refers to `handle` (a scan: for rare paths).
    pub fn refers(&self, handle: Handle) -> bool {
        self.owned.load(Ordering::Relaxed) > 0
            && self
                .entries
                .iter()
                .any(|e| e.load(Ordering::Relaxed) == handle.0.get())
    }

    /// Number of fds that are ours.
    pub fn len(&self) -> usize {
        self.owned.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

static TABLE: Table<CAPACITY> = Table::new();

/// The process-wide table.
pub fn table() -> &'static Table<CAPACITY> {
    &TABLE
}

/// Whether `fd` is ours.
#[inline]
pub fn is_owned(fd: RawFd) -> bool {
    TABLE.get(fd).is_some()
}

/// The library's own fds (doorbells, port reservations): a bitmap, so that
/// an application closing "every fd" (a daemon's `for fd in 3..max: close`,
/// `closefrom`, `close_range`) cannot close them behind our back — which
/// would later make us close an unrelated fd that reused the number.
static INTERNAL: [AtomicU64; CAPACITY / 64] = [const { AtomicU64::new(0) }; CAPACITY / 64];

fn internal_bit(fd: RawFd) -> Option<(&'static AtomicU64, u64)> {
    let i = usize::try_from(fd).ok().filter(|&i| i < CAPACITY)?;
    Some((&INTERNAL[i / 64], 1u64 << (i % 64)))
}

/// Marks or unmarks `fd` as one of the library's own.
pub fn set_internal(fd: RawFd, on: bool) {
    if let Some((word, bit)) = internal_bit(fd) {
        if on {
            word.fetch_or(bit, Ordering::AcqRel);
        } else {
            word.fetch_and(!bit, Ordering::AcqRel);
        }
    }
}

/// Whether `fd` is one of the library's own.
#[inline]
pub fn is_internal(fd: RawFd) -> bool {
    internal_bit(fd).is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
}

/// The library's own fds in `first..=last`, in order (skips empty words).
pub fn internal_in(first: u32, last: u32) -> Vec<RawFd> {
    let mut out = Vec::new();
    let end = (last as usize).min(CAPACITY - 1);
    let mut i = first as usize;
    while i <= end {
        let word = INTERNAL[i / 64].load(Ordering::Acquire);
        if word == 0 {
            i = (i / 64 + 1) * 64;
            continue;
        }
        if word & (1u64 << (i % 64)) != 0 {
            out.push(i as RawFd);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(index: u32, generation: u32) -> Handle {
        Handle::new(index, generation).unwrap()
    }

    #[test]
    fn handle_roundtrip() {
        for (i, g) in [(0, 0), (1, 7), (u32::MAX - 1, u32::MAX)] {
            let handle = h(i, g);
            assert_eq!((handle.index(), handle.generation()), (i, g));
        }
        assert_eq!(Handle::new(u32::MAX, 0), None);
    }

    #[test]
    fn insert_get_remove() {
        let t: Table<64> = Table::new();
        assert_eq!(t.get(3), None);
        t.insert(3, h(0, 1)).unwrap();
        assert_eq!(t.get(3), Some(h(0, 1)));
        assert_eq!(t.insert(3, h(1, 1)), Err(InsertError::Occupied(h(0, 1))));
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(3), Some(h(0, 1)));
        assert_eq!(t.remove(3), None);
        assert!(t.is_empty());
    }

    #[test]
    fn out_of_range_is_refused_not_a_crash() {
        let t: Table<64> = Table::new();
        for fd in [-1, 64, RawFd::MAX] {
            assert_eq!(t.get(fd), None);
            assert_eq!(t.insert(fd, h(0, 0)), Err(InsertError::OutOfRange));
            assert_eq!(t.replace(fd, h(0, 0)), Err(OutOfRange));
            assert_eq!(t.remove(fd), None);
        }
        assert!(!is_owned(-5));
        assert!(!is_owned(CAPACITY as RawFd));
    }

    #[test]
    fn replace_and_range() {
        let t: Table<64> = Table::new();
        assert_eq!(t.replace(5, h(2, 0)), Ok(None));
        assert_eq!(t.replace(5, h(3, 0)), Ok(Some(h(2, 0))));
        t.insert(10, h(4, 0)).unwrap();
        t.insert(63, h(5, 0)).unwrap();
        let mut seen = Vec::new();
        t.remove_range(6, u32::MAX, |fd, handle| seen.push((fd, handle)));
        assert_eq!(seen, vec![(10, h(4, 0)), (63, h(5, 0))]);
        assert_eq!(t.get(5), Some(h(3, 0)));
        assert_eq!(t.len(), 1);
        t.remove_range(7, 3, |_, _| panic!("empty range"));
    }

    #[test]
    fn racing_removers_release_once() {
        let t: &'static Table<64> = Box::leak(Box::default());
        for round in 0..200u32 {
            t.insert(7, h(round, round)).unwrap();
            let threads: Vec<_> = (0..4)
                .map(|_| std::thread::spawn(move || t.remove(7).is_some() as u32))
                .collect();
            let winners: u32 = threads.into_iter().map(|j| j.join().unwrap()).sum();
            assert_eq!(winners, 1);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn internal_fds_are_found_in_ranges() {
        set_internal(5000, true);
        set_internal(5063, true);
        set_internal(5064, true);
        assert!(is_internal(5063) && !is_internal(5001));
        assert_eq!(internal_in(4990, 5070), vec![5000, 5063, 5064]);
        assert_eq!(internal_in(5001, 5063), vec![5063]);
        for fd in [5000, 5063, 5064] {
            set_internal(fd, false);
        }
        assert!(internal_in(0, u32::MAX)
            .iter()
            .all(|&fd| !(5000..=5064).contains(&fd)));
        assert!(!is_internal(-1) && !is_internal(1 << 20));
    }
}
