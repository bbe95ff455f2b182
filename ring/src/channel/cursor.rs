//! Cursors over the caller's buffers, and where a write's bytes come from:
//! the copying side of `Producer` and `Consumer`, apart from the protocol.

use crate::data::DataArea;
use std::io::{IoSlice, IoSliceMut};
#[cfg(not(loom))]
use std::marker::PhantomData;

/// Where a write's bytes come from.
pub(super) trait Fill {
    /// Puts up to `room` bytes at `at` in the data area; returns how many.
    fn fill(&mut self, data: &DataArea, at: usize, room: usize) -> usize;
    /// Nothing more to write.
    fn finished(&self) -> bool;
}

impl Fill for Source<'_, '_> {
    #[inline]
    fn fill(&mut self, data: &DataArea, at: usize, room: usize) -> usize {
        self.copy_into(data, at, room)
    }

    #[inline]
    fn finished(&self) -> bool {
        self.is_empty()
    }
}

/// `Producer::write_from`'s source: a closure writing into the ring.
#[cfg(not(loom))]
pub(super) struct FnSource<F> {
    pub(super) fill: F,
    pub(super) left: usize,
    pub(super) done: bool,
}

#[cfg(not(loom))]
impl<F: FnMut(Space<'_>) -> usize> Fill for FnSource<F> {
    #[inline]
    fn fill(&mut self, data: &DataArea, at: usize, room: usize) -> usize {
        let want = room.min(self.left);
        let Some(ptr) = data.raw_at(at, want) else {
            self.done = true;
            return 0;
        };
        // SAFETY: `raw_at` checked `at + want` against the area, which
        // stays mapped while `data` is borrowed; the room is unpublished, so
        // no consumer reads it.
        let space = unsafe { Space::new(data, ptr, want) };
        let got = (self.fill)(space).min(want);
        self.left -= got;
        if got < want {
            self.done = true;
        }
        got
    }

    #[inline]
    fn finished(&self) -> bool {
        self.done || self.left == 0
    }
}

/// Room in a ring's data area that `Producer::write_from` lends its
/// closure: `len()` bytes at `as_mut_ptr()`, valid for writes (and only
/// writes) while the closure runs, for a system call to fill (read(2),
/// pread(2)) with no buffer in between.
///
/// A pointer, not a `&mut [u8]`: the area is shared memory that a hostile
/// peer may write at any moment, so no Rust reference is formed over it.
/// The type's guarantee is what lets a safe wrapper around such a system
/// call exist: whoever holds a `Space` may pass its pointer and length to
/// a system call that completes before the closure returns (read(2),
/// pread(2); never one that writes later: io_uring, aio, vmsplice).
#[cfg(not(loom))]
pub struct Space<'a> {
    ptr: *mut u8,
    len: usize,
    _lent: PhantomData<&'a mut u8>,
}

#[cfg(not(loom))]
impl<'a> Space<'a> {
    /// # Safety
    /// `ptr` valid for writes of `len` bytes of `area` for `'a`, and no one
    /// else reading or writing them meanwhile (unpublished room).
    unsafe fn new(_area: &'a DataArea, ptr: *mut u8, len: usize) -> Space<'a> {
        Space {
            ptr,
            len,
            _lent: PhantomData,
        }
    }

    /// The first byte of the room; `len()` bytes from it are writable.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// How many bytes may be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No room (never lent by `write_from`, which asks for at least one
    /// byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the start of `src` in; returns how many bytes (at most
    /// `len()`).
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(self.len);
        // SAFETY: `ptr` is valid for `len >= n` writes (the type's
        // guarantee); `src` is the caller's and cannot overlap the ring.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr, n) };
        n
    }
}

/// A cursor over the caller's source slices.
pub(super) struct Source<'a, 'b> {
    bufs: &'a [IoSlice<'b>],
    idx: usize,
    off: usize,
}

impl<'a, 'b> Source<'a, 'b> {
    #[inline]
    pub(super) fn new(bufs: &'a [IoSlice<'b>]) -> Self {
        let mut s = Source {
            bufs,
            idx: 0,
            off: 0,
        };
        s.skip_empty();
        s
    }

    #[inline]
    fn skip_empty(&mut self) {
        while self.idx < self.bufs.len() && self.off >= self.bufs[self.idx].len() {
            self.idx += 1;
            self.off = 0;
        }
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.idx >= self.bufs.len()
    }

    /// Copies up to `room` bytes to `at` in the data area; returns how many.
    #[inline]
    fn copy_into(&mut self, data: &DataArea, mut at: usize, mut room: usize) -> usize {
        let mut done = 0;
        while room > 0 && !self.is_empty() {
            let b = &self.bufs[self.idx][self.off..];
            let k = b.len().min(room);
            data.copy_in(at, &b[..k]);
            at += k;
            room -= k;
            done += k;
            self.off += k;
            self.skip_empty();
        }
        done
    }
}

/// A cursor over the caller's destination slices.
pub(super) struct Sink<'a, 'b> {
    bufs: &'a mut [IoSliceMut<'b>],
    idx: usize,
    off: usize,
}

impl<'a, 'b> Sink<'a, 'b> {
    #[inline]
    pub(super) fn new(bufs: &'a mut [IoSliceMut<'b>]) -> Self {
        Sink {
            bufs,
            idx: 0,
            off: 0,
        }
    }

    #[inline]
    pub(super) fn remaining(&self) -> usize {
        self.bufs[self.idx.min(self.bufs.len())..]
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add)
            - self.off
    }

    /// Copies up to `avail` bytes from `at`; returns how many.
    #[inline]
    pub(super) fn copy_from(&mut self, data: &DataArea, mut at: usize, mut avail: usize) -> usize {
        let mut done = 0;
        while avail > 0 && self.idx < self.bufs.len() {
            let b = &mut self.bufs[self.idx][self.off..];
            let k = b.len().min(avail);
            data.copy_out(at, &mut b[..k]);
            at += k;
            avail -= k;
            done += k;
            self.off += k;
            if self.off >= self.bufs[self.idx].len() {
                self.idx += 1;
                self.off = 0;
            }
        }
        done
    }
}
