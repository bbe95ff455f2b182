//! The producer's private record of its segments: which sequence number
//! is in which data segment, which data segments hold the sequence numbers
//! in use, and which it wrote since their pages were last given back.
//!
//! Private to the producer's process, so nothing the peer writes can make
//! it wrong or make it cost more: picking a free data segment at a segment
//! opening is one bit test in the common case and a scan of N / 64 words at
//! worst, and freeing is one bit per segment the reader handed back
//! (counted once, when `tail` passes it). The shared `slots` words are only
//! read to rebuild the record ([`Placed::sync`]) when `head` is not where
//! this process left it: the first write of a producer, and after another
//! process sharing this side since a fork (or a program before exec) wrote.

use super::Channel;
use crate::RingError;

/// See the module docs. Empty (no allocation) until the first write.
#[derive(Default)]
pub(super) struct Placed {
    /// The record matches the ring as of `head`.
    known: bool,
    /// `tail` as last applied and `head` as last opened (or synced).
    tail: u32,
    head: u32,
    /// `idx_of[head % N]`, the open segment's data segment: what every
    /// write needs, without a division.
    head_idx: u32,
    /// `idx_of[seq % N]`: the data segment of `seq`, for `tail..=head`.
    idx_of: Vec<u16>,
    /// Data segments holding one of `tail..=head` (exactly `head - tail + 1`
    /// bits set).
    busy: Vec<u64>,
    /// Data segments written since their pages were last given back.
    dirty: Vec<u64>,
    /// Bits set in `dirty`.
    dirty_count: u32,
}

#[inline]
fn bit(v: &[u64], i: u32) -> bool {
    v[i as usize / 64] & (1 << (i % 64)) != 0
}

impl Placed {
    /// Whether the record is of the ring with `head`: true while this
    /// process is the one that opened every segment since it last synced.
    /// (A `head` that another process moved round 2^32 sequence numbers
    /// back to ours would fool it; 2^32 segment openings between two of
    /// ours are not a case.)
    #[inline]
    pub(super) fn current(&self, head: u32) -> bool {
        self.known && head == self.head
    }

    /// The open segment's data segment (of a current record).
    #[inline]
    pub(super) fn head_idx(&self) -> u32 {
        self.head_idx
    }

    /// The data segment of `seq`, which must be in `tail..=head` of a
    /// current record.
    #[inline]
    pub(super) fn idx(&self, seq: u32) -> u32 {
        u32::from(self.idx_of[(seq as usize) % self.idx_of.len()])
    }

    /// Segments written since their pages were last given back.
    pub(super) fn dirty_count(&self) -> u32 {
        self.dirty_count
    }

    /// Rebuilds the record from the shared `slots` of `tail..=head`
    /// (`head - tail < N` checked by the caller): `head - tail + 1` loads,
    /// once per change of hands. Two sequence numbers in one data segment
    /// mean the words were spoiled: the connection is corrupt. The
    /// segments in use count as written, and so does what this process
    /// wrote before (a record gone stale); what another process wrote and
    /// the reader has freed since is not known here, and stays (its own
    /// trim gives it back; a segment from the pool was trimmed by both
    /// sides' last close).
    pub(super) fn sync(&mut self, ch: &Channel, tail: u32, head: u32) -> Result<(), RingError> {
        let n = ch.geo.segment_count;
        let words = (n as usize).div_ceil(64);
        if self.idx_of.len() != n as usize {
            self.idx_of = vec![0; n as usize];
            self.busy = vec![0; words];
            self.dirty = vec![0; words];
        }
        if !self.known {
            self.dirty.fill(0);
            self.dirty_count = 0;
        }
        self.known = false;
        self.busy.fill(0);
        let mut seq = tail;
        loop {
            let i = ch.slot(seq)?;
            if bit(&self.busy, i) {
                return Err(ch.corrupt("segment slots collide"));
            }
            self.busy[i as usize / 64] |= 1 << (i % 64);
            self.idx_of[(seq % n) as usize] = i as u16;
            if seq == head {
                break;
            }
            seq = seq.wrapping_add(1);
        }
        for w in 0..words {
            let fresh = self.busy[w] & !self.dirty[w];
            self.dirty[w] |= fresh;
            self.dirty_count += fresh.count_ones();
        }
        self.head_idx = self.idx(head);
        (self.tail, self.head, self.known) = (tail, head, true);
        Ok(())
    }

    /// Applies a `tail` loaded (Acquire) from the consumer: the segments it
    /// passed are free. `tail` must lie in `self.tail..=head`; anything else
    /// (a `tail` moved back, or past `head`) is corruption. O(1) amortized:
    /// each sequence number is freed once.
    #[inline]
    pub(super) fn advance(&mut self, ch: &Channel, tail: u32) -> Result<(), RingError> {
        let passed = tail.wrapping_sub(self.tail);
        if passed > self.head.wrapping_sub(self.tail) {
            return Err(ch.corrupt("tail out of range"));
        }
        for k in 0..passed {
            let i = self.idx(self.tail.wrapping_add(k));
            self.busy[i as usize / 64] &= !(1 << (i % 64));
        }
        self.tail = tail;
        Ok(())
    }

    /// Where to open the segment after `head` (in data segment `cur`): the
    /// first free data segment after `cur`, round the first `window`;
    /// past the window if all in it are in use (the window then doubles
    /// until it takes one in). One bit test when the next one round is
    /// free, else a scan of the window's words: never more than N / 64.
    /// The caller checked `head - tail < N - 1`, so one is free.
    #[inline]
    pub(super) fn pick(&self, ch: &Channel, cur: u32, window: &mut u32) -> Result<u32, RingError> {
        let n = ch.geo.segment_count;
        let w = (*window).clamp(1, n);
        let cand = cur.wrapping_add(1) % w;
        if !bit(&self.busy, cand) {
            return Ok(cand);
        }
        loop {
            let w = (*window).clamp(1, n);
            let start = cur.wrapping_add(1) % w;
            // `start..w`, then `0..start`.
            if let Some(i) = self
                .first_free(start, w)
                .or_else(|| self.first_free(0, start))
            {
                return Ok(i);
            }
            if w == n {
                return Err(ch.corrupt("segment slots collide"));
            }
            *window = (w * 2).min(n);
        }
    }

    /// The first data segment in `from..to` not in use, a word at a time.
    fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        let mut i = from;
        while i < to {
            let word = !self.busy[i as usize / 64] >> (i % 64);
            if word != 0 {
                let found = i + word.trailing_zeros();
                return (found < to).then_some(found);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// Records the opening of `seq` (= `head + 1`) in data segment `idx`.
    #[inline]
    pub(super) fn open(&mut self, seq: u32, idx: u32) {
        let n = self.idx_of.len();
        self.idx_of[seq as usize % n] = idx as u16;
        let (w, b) = (idx as usize / 64, 1u64 << (idx % 64));
        self.busy[w] |= b;
        if self.dirty[w] & b == 0 {
            self.dirty[w] |= b;
            self.dirty_count += 1;
        }
        self.head = seq;
        self.head_idx = idx;
    }

    /// Gives back the pages of every dirty data segment from `from` on that
    /// holds none of `tail..=head` (as of the last `advance`), a run of
    /// neighbours in one call; returns the bytes given back. O(N / 64) plus
    /// a system call per run; each segment is given back at most once per
    /// opening that dirtied it.
    /// Nothing, in a process that restricted its system calls.
    pub(super) fn give_back(&mut self, ch: &Channel, from: u32) -> usize {
        if !ch.data.can_release() {
            return 0;
        }
        let n = ch.geo.segment_count;
        let s = ch.geo.segment_bytes as usize;
        let mut given = 0;
        let mut i = from;
        while i < n {
            let (w, b) = (i as usize / 64, i % 64);
            let spare = (self.dirty[w] & !self.busy[w]) >> b;
            if spare == 0 {
                i = (i / 64 + 1) * 64;
                continue;
            }
            let start = i + spare.trailing_zeros();
            let mut end = start;
            while end < n && bit(&self.dirty, end) && !bit(&self.busy, end) {
                self.dirty[end as usize / 64] &= !(1 << (end % 64));
                self.dirty_count -= 1;
                end += 1;
            }
            given += ch
                .data
                .release(ch.data_at(start, 0), (end - start) as usize * s);
            i = end;
        }
        given
    }
}
