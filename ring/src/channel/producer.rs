//! The writing half of a channel: [`Producer`].

use super::cursor::{Fill, Source};
#[cfg(not(loom))]
use super::cursor::{FnSource, Space};
use super::notify::ProducerNotify;
use super::placed::Placed;
use super::RoomWaiter;
use super::{Channel, WaitKind};
use crate::layout::{BUSY, BUSY_WAITER, CLOSED, CLOSED_RESET, MIN_SEGMENTS};
use crate::sync::{fence, Ordering};
use crate::wait::{Doorbell, WaitPolicy};
use crate::RingError;
use std::io::IoSlice;
use std::sync::Arc;

/// The writing half of a channel: non-blocking stream writes (`write*`),
/// end of stream ([`close`](Self::close)), reset, and blocking writes that
/// spin then sleep as a [`WaitPolicy`] says.
///
/// There is one producer per channel; it is `Send` but not `Sync` (a
/// second writer would publish over the first). Processes that share it
/// after fork serialise with [`lock_side`](Self::lock_side); another thread
/// that only needs to wait for room uses a [`RoomWaiter`].
///
/// # Example
///
/// ```
/// use shmnet_ring::{heap_channel, Geometry, RingError};
///
/// // Two data segments of 64 bytes: 128 bytes in flight at most.
/// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
/// assert_eq!(tx.capacity(), 128);
/// assert_eq!(tx.write(&[7; 100])?, 100);
/// assert_eq!(tx.write(&[7; 100])?, 28); // as much as fits
/// assert_eq!(tx.write(b"more"), Err(RingError::WouldBlock));
///
/// let mut buf = [0u8; 256];
/// assert_eq!(rx.read(&mut buf)?, 128);
/// tx.close();
/// assert_eq!(rx.read(&mut buf)?, 0); // end of stream
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Producer {
    pub(super) ch: Channel,
    doorbell: Option<Arc<dyn Doorbell>>,
    /// Where this process put the segments in use, and which it wrote
    /// (see [`Placed`]): the open segment's data segment without a load of
    /// `slots` per write, a free one found in O(1) at an opening whatever
    /// the peer writes, and the pages to give back. `head` itself is still
    /// loaded from shared memory on every write: after a fork another
    /// process may have moved it, and then the record is rebuilt.
    placed: Placed,
    /// One past the highest data segment this producer opened: what it
    /// has touched of the data area (statistics; private, per process).
    touched: u32,
    /// Where new segments go (see [`Placement`]). Private: a policy, not
    /// part of the protocol (the consumer follows `slots`), so processes
    /// sharing this side after fork may each have their own.
    place: Placement,
}

/// Where the producer opens segments: round the first `window` data
/// segments (the one after the open segment's, skipping those in use),
/// `window` starting at [`MIN_SEGMENTS`] and doubling, up to N, when the
/// stream shows it is bulk: the reader lags (the segments before the one
/// just filled still hold unread data), or few writes filled the segment
/// (at most [`BULK_WRITES`]). A request/response exchange of small messages
/// keeps to two data segments; a bulk stream spreads over all N, as a ring
/// used in order does (a writer reusing the segment its reader has just
/// read writes lines that are in the reader's cache: measured 8 GB/s
/// against 27 GB/s spread over 2 MiB). Capacity does not depend on it: a
/// segment goes wherever one is free when all in the window are in use.
///
/// The window shrinks again when the stream stops being bulk: after
/// [`SHRINK_AFTER`] openings in a row that showed neither sign (the reader
/// had read all but the segment just filled, and more than `BULK_WRITES`
/// writes filled it), it halves, and the pages of the segments left
/// outside it go back to the kernel (see `Placed::give_back`). Why these
/// signs: they are exactly the negation of the growth rule, so a stream
/// the rule would not have grown for shrinks back to where it would have
/// stayed. Why a run of them, and halving: one bulk opening regrows the
/// window at once, and pages given back cost a page fault each when
/// written again, so the window only shrinks once the stream has stayed
/// calm for a while (eight segments' worth of small writes) and a stream
/// that turns bulk again finds half its pages still there. Each shrink
/// gives back at most what openings dirtied since the last, so its
/// system calls are bounded by the openings (O(1) amortized). An idle
/// connection makes no openings: `Producer::trim` is for it.
#[derive(Clone, Copy)]
struct Placement {
    window: u32,
    /// Write calls into the open segment so far.
    writes: u32,
    /// Openings in a row that showed no sign of a bulk stream.
    calm: u32,
}

/// A segment filled by at most this many write calls marks a bulk stream.
const BULK_WRITES: u32 = 4;

/// Calm openings in a row after which the window halves.
const SHRINK_AFTER: u32 = 8;

impl Placement {
    /// The opening of a segment: `bulk` as the stream showed.
    #[inline]
    fn at_opening(&mut self, n: u32, bulk: bool) {
        if bulk {
            self.calm = 0;
            self.window = (self.window * 2).min(n);
        } else if self.window > MIN_SEGMENTS {
            self.calm += 1;
            if self.calm >= SHRINK_AFTER {
                self.calm = 0;
                self.window = (self.window / 2).max(MIN_SEGMENTS);
            }
        }
    }
}

/// Rebuilds the private record of placement from `slots` when `head` is
/// not where this process left it (see `Placed::sync`): the first
/// write, or another process of this side wrote since (fork, exec).
/// At most one per write call, of `head - tail + 1` loads.
#[cold]
fn resync(placed: &mut Placed, ch: &Channel, head: u32) -> Result<(), RingError> {
    // SYNC POINT: Acquire as at an opening (`fill`). The `slots` words
    // of `tail..=head` were stored before `head` by this process, or by
    // one that shared this side under the side lock, which orders its
    // stores before our loads.
    let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
    if head.wrapping_sub(tail) >= ch.geo.segment_count {
        return Err(ch.corrupt("tail out of range"));
    }
    placed.sync(ch, tail, head)
}

impl Producer {
    pub(crate) fn new(ch: Channel) -> Self {
        Producer {
            ch,
            doorbell: None,
            placed: Placed::default(),
            touched: 1,
            place: Placement {
                window: MIN_SEGMENTS,
                writes: 0,
                calm: 0,
            },
        }
    }

    /// The doorbell rung when the consumer waits in poll/epoll and data
    /// arrives (see [`Doorbell`] and [`notify`](crate::notify)).
    pub fn set_doorbell(&mut self, d: Arc<dyn Doorbell>) {
        self.doorbell = Some(d);
    }

    /// Bytes of the data area per direction.
    pub fn capacity(&self) -> usize {
        self.ch.geo.channel_bytes()
    }

    /// How many of the N data segments this producer has written into:
    /// one past the highest it opened (statistics, private to this
    /// process): what it keeps resident and cycles through the cache.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(8, 64)?);
    /// let mut buf = [0u8; 512];
    /// for _ in 0..100 {
    ///     // Small messages, read as they come: two segments take turns.
    ///     tx.write(&[1; 10])?;
    ///     rx.read(&mut buf)?;
    /// }
    /// assert_eq!((tx.segments_touched(), tx.window()), (2, 2));
    /// for _ in 0..10 {
    ///     // Writes that fill segments: a bulk stream spreads over all 8.
    ///     tx.write(&[2; 256])?;
    ///     rx.read(&mut buf)?;
    /// }
    /// assert_eq!((tx.segments_touched(), tx.window()), (8, 8));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn segments_touched(&self) -> u32 {
        self.touched
    }

    /// How many data segments this producer opens segments round before
    /// it looks further (its placement window, private to this process):
    /// 2 at first, doubling up to N while the stream is bulk (see
    /// [`segments_touched`](Self::segments_touched) for an example). It
    /// never limits what can be written: all N segments are the ring.
    pub fn window(&self) -> u32 {
        self.place.window
    }

    /// How many data segments hold pages this producer wrote and has not
    /// given back (private, per process; see [`trim`](Self::trim)).
    pub fn segments_resident(&self) -> u32 {
        self.placed.dirty_count()
    }

    /// Whether a [`trim`](Self::trim) once the connection is quiet would
    /// be worth a wake-up: more than [`MIN_SEGMENTS`] data segments hold
    /// pages this producer wrote (a stream that was bulk at some point).
    /// An exchange of small messages keeps to two and never asks. One
    /// private load.
    #[inline]
    pub fn trim_pending(&self) -> bool {
        self.placed.dirty_count() > MIN_SEGMENTS
    }

    /// For a connection gone quiet: shrinks the placement window back to
    /// [`MIN_SEGMENTS`] and gives the pages of every data segment this
    /// producer wrote that holds no unread data back to the kernel
    /// (`MADV_REMOVE` on the memfd: both processes' resident memory drops;
    /// heap channels are zeroed). Segments still unread stay, for a later
    /// trim; so does the open segment, which the next write appends to.
    /// Returns the bytes given back. Costs one private load when there is
    /// nothing to give back (only the open segment was written); else a
    /// load of `tail`, a scan of N / 64 words, and a system call per run
    /// of neighbouring segments. Pages given back are faulted
    /// in again (zeroed) when written: call it when the connection has
    /// been quiet for a while, not after every exchange. Processes that
    /// share this side after fork call it under [`lock_side`](Self::lock_side).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(8, 64)?);
    /// let mut buf = [0u8; 512];
    /// tx.write(&[2; 448])?; // a bulk write: the window grows to 8
    /// rx.read(&mut buf)?;
    /// assert_eq!((tx.window(), tx.segments_resident()), (8, 7));
    /// assert!(tx.trim_pending());
    /// assert_eq!(tx.trim()?, 6 * 64); // all but the open segment
    /// assert_eq!((tx.window(), tx.segments_resident()), (2, 1));
    /// assert!(!tx.trim_pending());
    /// tx.write(b"after")?;
    /// assert_eq!(rx.read(&mut buf)?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trim(&mut self) -> Result<usize, RingError> {
        if self.placed.dirty_count() <= 1 {
            return Ok(0); // the open segment at most
        }
        let ch = &self.ch;
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        if !self.placed.current(head) {
            resync(&mut self.placed, ch, head)?;
        }
        // SYNC POINT: Acquire pairs with the consumer's Release store of
        // `tail` (`hand_back`), made after its last read of each segment
        // before `tail`: those reads happen before `give_back` drops the
        // segments' pages. A segment it could still read is one of
        // `tail..=head`, in use in our record, and never given back; a
        // segment it is handed later is one we open (and write) after
        // this, before the `head` that tells of it. A consumer that breaks
        // the protocol (reads a segment it handed back) reads zeros.
        let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= ch.geo.segment_count {
            return Err(ch.corrupt("tail out of range"));
        }
        self.placed.advance(ch, tail)?;
        self.place.window = MIN_SEGMENTS;
        self.place.calm = 0;
        Ok(self.placed.give_back(ch, 0))
    }

    /// Writes as much of `buf` as fits without blocking; `WouldBlock` if
    /// nothing fit, `Closed` once either end closed, `Reset` after a reset.
    /// Small writes coalesce in the open segment; the consumer is woken if
    /// it waits.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(b"hello, ")?;
    /// tx.write(b"world")?;
    /// let mut buf = [0u8; 32];
    /// let n = rx.read(&mut buf)?;
    /// assert_eq!(&buf[..n], b"hello, world");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, RingError> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Writes as much of `bufs` as fits without blocking; `WouldBlock` if
    /// nothing fit. One wake-up check per call, however many slices.
    ///
    /// The producer is marked busy from before it publishes until it has
    /// counted the consumer's doorbell ring (before the ring's system
    /// call), so that a consumer that read the data can wait until the
    /// ring for it is counted
    /// ([`ConsumerNotify::wait_producer_idle`](crate::notify::ConsumerNotify::wait_producer_idle)).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    /// use std::io::IoSlice;
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// let n = tx.write_vectored(&[IoSlice::new(b"head "), IoSlice::new(b"body")])?;
    /// assert_eq!(n, 9);
    /// let mut buf = [0u8; 16];
    /// let n = rx.read(&mut buf)?;
    /// assert_eq!(&buf[..n], b"head body");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, RingError> {
        self.write_vectored_min(bufs, 0)
    }

    /// As `write_vectored`, but writes nothing (`WouldBlock`) unless at
    /// least `need` bytes are free: a small message goes in whole or not at
    /// all. `need == 0` is `write_vectored`. Same as checking [`fits`]
    /// first, without loading the ring's indices twice.
    ///
    /// [`fits`]: Producer::fits
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, RingError};
    /// use std::io::IoSlice;
    ///
    /// let (mut tx, _rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(&[0; 120])?;
    /// let msg = [IoSlice::new(&[1; 16])];
    /// assert_eq!(tx.write_vectored_min(&msg, 16), Err(RingError::WouldBlock));
    /// assert_eq!(tx.write_vectored_min(&msg, 0)?, 8); // a partial write
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_vectored_min(
        &mut self,
        bufs: &[IoSlice<'_>],
        need: usize,
    ) -> Result<usize, RingError> {
        let mut src = Source::new(bufs);
        if src.is_empty() {
            return Ok(0);
        }
        self.fill_and_wake(&mut src, need)
    }

    /// Writes up to `max` bytes that `fill` produces straight into the ring,
    /// with no buffer in between (sendfile reads the file into the ring).
    /// `fill(space)` writes into the `Space` it is lent (read(2), pread(2)
    /// into `space.as_mut_ptr()`) and returns how many bytes it wrote, at
    /// most `space.len()`; fewer than lent ends the write (end of file, an
    /// error the closure keeps). The bytes are published as
    /// `write` publishes, and the consumer is woken the same way.
    /// `WouldBlock` when the ring is full.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// let file = b"file contents";
    /// let mut pos = 0;
    /// let n = tx.write_from(100, |mut space| {
    ///     let k = space.copy_from(&file[pos..]);
    ///     pos += k;
    ///     k
    /// })?;
    /// assert_eq!(n, file.len());
    /// let mut buf = [0u8; 32];
    /// let n = rx.read(&mut buf)?;
    /// assert_eq!(&buf[..n], file);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(not(loom))]
    pub fn write_from(
        &mut self,
        max: usize,
        fill: impl FnMut(Space<'_>) -> usize,
    ) -> Result<usize, RingError> {
        if max == 0 {
            return Ok(0);
        }
        let mut src = FnSource {
            fill,
            left: max,
            done: false,
        };
        match self.fill_and_wake(&mut src, 0) {
            // The first fill gave nothing: end of file, not a full ring.
            Err(RingError::WouldBlock) if src.done => Ok(0),
            r => r,
        }
    }

    /// Marks the producer outside a write, waking a consumer asleep on the
    /// word (`ConsumerNotify::wait_producer_idle`).
    #[inline]
    fn set_idle(&self) {
        // SYNC POINT: Release orders the ring's count (made before, in
        // `wake_reader`) before the word reads idle; a swap so that a
        // sleeper's mark is never missed.
        let busy = &self.ch.ctl().producer.busy;
        if busy.swap(0, Ordering::Release) == BUSY_WAITER {
            self.ch.parker.wake(busy);
        }
    }

    /// Copies and publishes (marked busy, see `write_vectored`), then wakes
    /// the consumer if it waits.
    fn fill_and_wake(&mut self, src: &mut impl Fill, need: usize) -> Result<usize, RingError> {
        // `fill` marks the producer busy just before its first publish (not
        // while it only copies: a reader that emptied the ring meanwhile
        // has nothing to wait for, since a ring after that is for data it
        // has not read).
        match self.fill(src, need) {
            Ok(written) => {
                // Idle again inside, before the doorbell's system call.
                self.wake_reader_then(|| self.set_idle());
                Ok(written)
            }
            Err(e) => {
                self.set_idle();
                Err(e)
            }
        }
    }

    /// Copies from `src` into the ring and publishes each append; returns
    /// the bytes written (`WouldBlock` for none, or for fewer free than
    /// `need`).
    #[inline]
    fn fill(&mut self, src: &mut impl Fill, need: usize) -> Result<usize, RingError> {
        let ch = &self.ch;
        if ch.is_reset() {
            return Err(RingError::Reset);
        }
        let ctl = ch.ctl();
        match ctl.consumer.closed.load(Ordering::Relaxed) {
            0 => {}
            CLOSED_RESET => return Err(RingError::Reset),
            _ => return Err(RingError::Closed),
        }
        if ctl.producer.closed.load(Ordering::Relaxed) != 0 {
            return Err(RingError::Closed);
        }
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let mut head = ctl.producer.head.load(Ordering::Relaxed);
        if !self.placed.current(head) {
            resync(&mut self.placed, ch, head)?;
        }
        let mut idx = self.placed.head_idx();
        let mut end = ch.seg_at(idx).end.load(Ordering::Relaxed);
        if end > s {
            return Err(ch.corrupt("producer end beyond segment"));
        }
        // All or nothing: the common case (room in the open segment) needs
        // no look at the consumer's line.
        if need > (s - end) as usize {
            // SYNC POINT: Acquire as below, before reusing freed segments.
            let tail = ctl.consumer.tail.load(Ordering::Acquire);
            let used = head.wrapping_sub(tail);
            if used >= n {
                return Err(ch.corrupt("tail out of range"));
            }
            let free = (s - end) as usize + (n - 1 - used) as usize * s as usize;
            if free < need {
                return Err(RingError::WouldBlock);
            }
        }
        let mut written = 0usize;
        let mut marked = false;
        // SYNC POINT: the busy store comes before the Release stores that
        // publish (of `head` and `end` below), so a consumer that
        // Acquire-loaded what they publish sees the producer busy (or,
        // later, idle again after the ring: `set_idle`).
        let busy = &ctl.producer.busy;
        let mut mark_busy = || {
            if !marked {
                busy.store(BUSY, Ordering::Relaxed);
                marked = true;
            }
        };
        self.place.writes = self.place.writes.saturating_add(1);
        loop {
            if end == s {
                // SYNC POINT: Acquire pairs with the consumer's Release store of
                // `tail`: its reads of the segments before `tail`, which we
                // may be about to reuse, happen before our writes into them.
                let tail = ctl.consumer.tail.load(Ordering::Acquire);
                let used = head.wrapping_sub(tail);
                if used >= n {
                    return Err(ch.corrupt("tail out of range"));
                }
                if used + 1 >= n {
                    break; // every segment holds unread data
                }
                // SYNC POINT: the segments `tail` passed are free: the
                // consumer's reads of them happen before this point (the
                // Acquire above), so they may be reused, and given back.
                self.placed.advance(ch, tail)?;
                let next = head.wrapping_add(1);
                // Bulk: few writes filled the segment, or the reader lags
                // (a segment before the one just filled still holds unread
                // bytes; `begin` is the reader's and may be anything: it
                // only steers where we write). In that order: the reader's
                // line is loaded only when the writes do not tell.
                let bulk = self.place.writes <= BULK_WRITES
                    || used > 1
                    || (used == 1
                        && ch.begin_at(self.placed.idx(tail)).load(Ordering::Relaxed) < s);
                self.place.at_opening(n, bulk);
                idx = self.placed.pick(ch, idx, &mut self.place.window)?;
                self.place.writes = 1;
                // SYNC POINT: Relaxed, before the Release store of `head =
                // next` below: a consumer that Acquire-loads that `head` and
                // then this word sees `idx`. It cannot see a later value: the
                // next store here is for `next + N`, made only once `tail`
                // has passed `next`, after the consumer is done with it.
                ch.slot_word(next).store(idx, Ordering::Relaxed);
                self.placed.open(next, idx);
                self.touched = self.touched.max(idx + 1);
                if !bulk && self.placed.dirty_count() > self.place.window {
                    // Calm, with pages outside the window (it shrank now or
                    // before, and a segment out there was still in use
                    // then): give back those that are free.
                    self.placed.give_back(ch, self.place.window);
                }
                let seg = ch.seg_at(idx);
                seg.last.store(0, Ordering::Relaxed);
                seg.end.store(0, Ordering::Relaxed);
                head = next;
                mark_busy();
                // SYNC POINT: Release pairs with the consumer's Acquire load of
                // `head`: it sees the previous segment's final `end`, where
                // this segment is (`slots`), and its reset `end` before it
                // moves on.
                ctl.producer.head.store(head, Ordering::Release);
                end = 0;
            }
            let at = ch.data_at(idx, end);
            let n_copied = src.fill(&ch.data, at, (s - end) as usize);
            end += n_copied as u32;
            written += n_copied;
            mark_busy();
            // SYNC POINT: Release pairs with the consumer's Acquire load of
            // `end`: the bytes just copied are visible before the new end.
            ch.seg_at(idx).end.store(end, Ordering::Release);
            if src.finished() {
                break;
            }
        }
        if written == 0 {
            return Err(RingError::WouldBlock);
        }
        Ok(written)
    }

    /// After publishing: wake the consumer if it flagged that it waits.
    #[inline]
    fn wake_reader(&self) {
        self.wake_reader_then(|| {});
    }

    /// `wake_reader`, running `decided` once the ring is counted (or known
    /// not to be), before the doorbell's system call.
    #[inline]
    fn wake_reader_then(&self, decided: impl FnOnce()) {
        // SYNC POINT (Dekker with `Consumer::arm`): our stores of `end`/`head`
        // /`closed`, this SeqCst fence, then the load of `reader_waiting`; the
        // consumer stores `reader_waiting`, fences, then loads `end`/`head`.
        // The two SeqCst fences are totally ordered, so either we see its flag
        // or it sees our data — never neither (no lost wake-up).
        fence(Ordering::SeqCst);
        // A write goes idle here (`fill_and_wake`): once the ring is
        // counted, before the doorbell's send. A reader that read the data
        // waits for the count (`wait_producer_idle`), and for a counted
        // byte still on its way only if it is not there yet, which a
        // reader woken by that byte never has to (it waited out the rest
        // of the producer's send before, futex and all).
        let rang = self.ch.wake(
            &self.ch.ctl().wait.reader_waiting,
            Some(&self.ch.ctl().wait.reader_rings),
            &self.doorbell,
            decided,
        );
        if rang {
            // Stored after the byte went out, so that a reader that finds
            // this position here knows a byte follows the data up to it
            // (seen before the store: the reader reports the publish
            // itself, which may make one edge twice, never none).
            let at = self.ch.written_total();
            self.ch.ctl().producer.rung_at.store(at, Ordering::Release);
        }
    }

    /// Whether `len` bytes fit right now. Looks only at our own open segment
    /// when that suffices (the common case), so it does not read the
    /// consumer's cache line on every small write.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, _rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(&[0; 100])?;
    /// assert!(tx.fits(28) && !tx.fits(29));
    /// assert_eq!(tx.free_bytes()?, 28);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fits(&self, len: usize) -> bool {
        let ch = &self.ch;
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let idx = if self.placed.current(head) {
            self.placed.head_idx()
        } else {
            ch.slot_lenient(head)
        };
        let end = ch.seg_at(idx).end.load(Ordering::Relaxed);
        let s = ch.geo.segment_bytes;
        if end <= s && (s - end) as usize >= len {
            return true;
        }
        self.free_bytes().is_ok_and(|f| f >= len)
    }

    /// Free bytes right now (space in the open segment plus free segments).
    pub fn free_bytes(&self) -> Result<usize, RingError> {
        let ch = &self.ch;
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let end = ch.seg_at(ch.slot(head)?).end.load(Ordering::Relaxed);
        let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if end > s || used >= n {
            return Err(ch.corrupt("producer indices out of range"));
        }
        Ok((s - end) as usize + (n - 1 - used) as usize * s as usize)
    }

    /// True when a write would not block. Also called through a
    /// [`RoomWaiter`] while another thread of ours writes, so `head` may move
    /// under it: an inconsistent snapshot is not corruption here, only a
    /// reason to let the writer (which checks strictly) try.
    pub(super) fn writable_now(&self) -> bool {
        let ch = &self.ch;
        if ch.is_reset() || ch.ctl().consumer.closed.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let Some(slot) = ch.slot_opt(head) else {
            return true;
        };
        let end = ch.seg_at(slot).end.load(Ordering::Relaxed);
        let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        used >= n || end > s || end < s || used + 1 < n
    }

    /// Free bytes, or None for an inconsistent snapshot (see `writable_now`).
    pub(super) fn free_bytes_lenient(&self) -> Option<usize> {
        let ch = &self.ch;
        let (n, s) = (ch.geo.segment_count, ch.geo.segment_bytes);
        let head = ch.ctl().producer.head.load(Ordering::Relaxed);
        let end = ch.seg_at(ch.slot_opt(head)?).end.load(Ordering::Relaxed);
        let tail = ch.ctl().consumer.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if end > s || used >= n {
            return None;
        }
        Some((s - end) as usize + (n - 1 - used) as usize * s as usize)
    }

    /// Announces that the caller is about to wait for room, then re-checks.
    /// Returns true if room (or an error condition) is already there, in
    /// which case the caller must not sleep. With `WaitKind::Doorbell` the
    /// consumer will ring this side's doorbell when it frees a segment.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, WaitKind};
    ///
    /// let (mut tx, _rx) = heap_channel(Geometry::new(2, 64)?);
    /// assert!(tx.arm(WaitKind::Doorbell)); // room: do not sleep
    /// tx.write(&[0; 128])?;
    /// assert!(!tx.arm(WaitKind::Doorbell)); // full: sleep until rung
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn arm(&self, how: WaitKind) -> bool {
        let w = &self.ch.ctl().wait.writer_waiting;
        w.fetch_or(how.bits(), Ordering::Relaxed);
        // SYNC POINT: Dekker with `Consumer::wake_writer` (see wake_reader).
        fence(Ordering::SeqCst);
        self.writable_now()
    }

    /// Writes all of `buf`, waiting for room as `policy` says.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, WaitPolicy};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// let reader = std::thread::spawn(move || {
    ///     let mut got = Vec::new();
    ///     let mut buf = [0u8; 64];
    ///     loop {
    ///         match rx.read_blocking(&mut buf, &WaitPolicy::default()) {
    ///             Ok(0) => return got,
    ///             Ok(n) => got.extend_from_slice(&buf[..n]),
    ///             Err(e) => panic!("{e}"),
    ///         }
    ///     }
    /// });
    /// tx.write_all(&[9; 1000], &WaitPolicy::default())?; // 8 times the ring
    /// tx.close();
    /// assert_eq!(reader.join().unwrap(), vec![9; 1000]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_all(&mut self, buf: &[u8], policy: &WaitPolicy) -> Result<(), RingError> {
        let mut done = 0;
        while done < buf.len() {
            match self.write(&buf[done..]) {
                Ok(k) => done += k,
                Err(RingError::WouldBlock) => self.wait_writable(policy)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Blocks until there is room, an error, or the policy gives up.
    pub fn wait_writable(&self, policy: &WaitPolicy) -> Result<(), RingError> {
        self.ch.wait_until(
            &self.ch.ctl().wait.writer_waiting,
            policy,
            || self.arm(WaitKind::Futex),
            || self.writable_now(),
        )
    }

    /// A handle that can wait for room (and be woken) without holding the
    /// producer, so a writer can sleep while another thread keeps access to
    /// the producer (shutdown, a non-blocking writer).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, WaitPolicy};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(&[0; 128])?;
    /// let room = tx.room_waiter();
    /// let waiter = std::thread::spawn(move || room.wait_for_room(64, &WaitPolicy::default()));
    /// rx.read(&mut [0; 64])?; // frees a segment
    /// waiter.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn room_waiter(&self) -> RoomWaiter {
        RoomWaiter(Producer {
            ch: self.ch.clone(),
            doorbell: self.doorbell.clone(),
            placed: Placed::default(),
            touched: self.touched,
            place: self.place,
        })
    }

    /// Serialises this side's writers across processes (see
    /// [`SideGuard`](crate::SideGuard)): held until the guard drops. Only
    /// needed once the connection is shared by a fork; threads of one
    /// process serialise on a lock of their own first.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, _rx) = heap_channel(Geometry::new(2, 64)?);
    /// let side = tx.lock_side();
    /// tx.write(b"one writer at a time")?;
    /// drop(side);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(not(loom))]
    pub fn lock_side(&self) -> crate::sidelock::SideGuard {
        self.ch.lock_side(true)
    }

    /// The doorbell bookkeeping of this producer, for a consumer that waits
    /// in poll/epoll (see [`notify`](crate::notify)).
    pub fn notify(&self) -> ProducerNotify<'_> {
        ProducerNotify(self)
    }

    /// End of stream: the consumer reads EOF once it drained what was
    /// written; further writes fail with `Closed`.
    pub fn close(&self) {
        // SYNC POINT: Release pairs with the consumer's Acquire load of
        // `closed` at the start of a read: all data is visible once EOF is.
        self.ch
            .ctl()
            .producer
            .closed
            .store(CLOSED, Ordering::Release);
        self.wake_reader();
    }

    /// Abortive end of stream (a TCP RST): the consumer reads what was
    /// written, then `Reset` instead of EOF.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, RingError};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(b"kept")?;
    /// tx.abort();
    /// let mut buf = [0; 8];
    /// assert_eq!(rx.read(&mut buf), Ok(4));
    /// assert_eq!(rx.read(&mut buf), Err(RingError::Reset));
    /// assert!(rx.peer_reset());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self) {
        // SYNC POINT: as in `close`.
        self.ch
            .ctl()
            .producer
            .closed
            .store(CLOSED_RESET, Ordering::Release);
        self.wake_reader();
    }

    /// True once this end was closed (`close` or `abort`), by any process
    /// that holds it: the flag is in the shared segment.
    pub fn closed(&self) -> bool {
        self.ch.ctl().producer.closed.load(Ordering::Relaxed) != 0
    }

    /// True once the consumer closed its end abortively (writes fail with
    /// `Reset`).
    pub fn peer_reset(&self) -> bool {
        self.ch.ctl().consumer.closed.load(Ordering::Relaxed) == CLOSED_RESET
    }

    /// Declares the connection reset (ECONNRESET at the peer), and wakes
    /// every waiter on both directions.
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry, RingError};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(b"lost")?;
    /// tx.reset();
    /// assert_eq!(rx.read(&mut [0; 8]), Err(RingError::Reset));
    /// assert_eq!(tx.write(b"x"), Err(RingError::Reset));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&self) {
        self.ch.mark_reset(&self.doorbell);
    }

    /// True once the consumer closed its end (writes would fail with EPIPE).
    pub fn peer_closed(&self) -> bool {
        self.ch.ctl().consumer.closed.load(Ordering::Relaxed) != 0
    }

    /// Bytes written since the channel was initialised (statistics: a
    /// lenient snapshot of shared words).
    ///
    /// ```
    /// use shmnet_ring::{heap_channel, Geometry};
    ///
    /// let (mut tx, mut rx) = heap_channel(Geometry::new(2, 64)?);
    /// tx.write(&[0; 100])?;
    /// rx.read(&mut [0; 30])?;
    /// assert_eq!((tx.written_total(), tx.consumed_total()), (100, 30));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn written_total(&self) -> u64 {
        self.ch.written_total()
    }

    /// Bytes of ours the consumer has read (statistics).
    pub fn consumed_total(&self) -> u64 {
        self.ch.consumed_total()
    }
}
