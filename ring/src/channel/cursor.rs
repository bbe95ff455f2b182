//! Cursors over the caller's buffers, and where a write's bytes come from:
//! the copying side of `Producer` and `Consumer`, apart from the protocol.

use crate::data::DataArea;
use std::io::{IoSlice, IoSliceMut};

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
impl<F: FnMut(*mut u8, usize) -> usize> Fill for FnSource<F> {
    #[inline]
    fn fill(&mut self, data: &DataArea, at: usize, room: usize) -> usize {
        let want = room.min(self.left);
        let Some(dst) = data.raw_at(at, want) else {
            self.done = true;
            return 0;
        };
        let got = (self.fill)(dst, want).min(want);
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
