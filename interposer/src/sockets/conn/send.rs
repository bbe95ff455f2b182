//! The data calls' sending side: send and its first attempt without
//! waiting (`try_send`), splice's and sendfile's (`room`, `send_from`),
//! and a writer's waits for room, blocking (on the ring's futex) or not
//! (POLLOUT through filler bytes: docs/architecture.md, "Writers: POLLOUT
//! that follows the ring").
#![forbid(unsafe_code)]

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use shmnet_ring::{RingError, Space, WaitKind, WaitPolicy};

use super::doorbell::{Bell, Suspect};
use super::{deadline_after, Connection};

/// What the first send after the peer's close takes (`answered_with_rst`):
/// about what kernel TCP copies before the peer's RST comes back (a 4 MiB
/// send there: 524,288 bytes on Linux 6.x with the default buffers; with
/// SO_SNDBUF set, the doubled size, at least 32 KiB: 4096 gives 32,768,
/// 65,536 gives 131,072 for a 1 MiB send).
const FIRST_SEND_AFTER_CLOSE: usize = 512 * 1024;
const FIRST_SEND_AFTER_CLOSE_MIN: usize = 32 * 1024;

/// The largest send [`Connection::try_send`] attempts.
const FAST_SEND_MAX: usize = 4096;

/// What [`Connection::try_send`] did.
pub(crate) enum FastSend {
    /// Sent everything: the call's result.
    Done(usize),
    /// Sent this much; the rest needs `send_rest` (it may wait).
    Partial(usize),
    /// Nothing sent: do the whole send with `send_rest` (errors included).
    Slow,
}

impl Connection {
    /// send(2) and friends. Blocking sends return once everything is in the
    /// ring; a closed peer is EPIPE (the caller raises SIGPIPE). The send
    /// lock is held only while copying; a blocked writer sleeps on the ring's
    /// futex, in slices that check for hang-up and a local SHUT_WR.
    pub(crate) fn send(&self, bufs: &[IoSlice<'_>], flags: i32) -> Result<usize, Errno> {
        self.send_rest(bufs, flags, 0)
    }

    /// A peer suspected gone (see `Bell::suspect`) whose end the kernel
    /// reports closed: its process exited or was killed without closing
    /// (the kernel closed its sockets), or it closed. The kernel's TCP
    /// learns this from the RST a dead peer's host answers with: sends
    /// then fail (ECONNRESET if our bytes were unread, else EPIPE) instead
    /// of being accepted into a ring nobody reads (review M1). One system
    /// call per suspicion; a peer that only shut down writing is not hung
    /// up, and its reads go on. A peer that went while asleep for our
    /// bytes had read everything: the kernel's FIN, then EPIPE for the
    /// send after the one it answers with a RST, not a reset.
    fn peer_gone_now(&self) -> Option<Errno> {
        let why = self.bell.suspected();
        if why == Suspect::No || !self.bell.hung_up() {
            return None;
        }
        // Whatever this send does, the next one fails.
        self.bell.suspect(Suspect::Doorbell);
        if why == Suspect::Ended {
            // A reset (reported or not: ECONNRESET once, then EPIPE); else
            // this is the kernel's first send after a FIN, which goes (and
            // is answered with a RST: `rst_due`).
            if self.peer_reset() {
                return Some(self.write_error(RingError::PeerGone));
            }
            self.rst_due.store(true, Ordering::Relaxed);
            return None;
        }
        // The kernel's RST answers our send after its FIN: EPIPE, and no
        // ECONNRESET left for SO_ERROR or a read (the bytes we sent since
        // are unread, which would count as a reset here), unless the peer
        // closed abortively itself.
        if self.tx.lock().peer_reset() {
            return Some(self.write_error(RingError::Reset));
        }
        self.take_reset();
        Some(self.write_error(RingError::Closed))
    }

    /// The first attempt of a send, made without waiting for anything: no
    /// lock that is not free at once, no side lock (a connection shared
    /// after fork), no wait for room. For the caller that holds the
    /// registry's read lock instead of a reference (`registry::with`).
    /// What it cannot finish, `send_rest` does.
    pub(crate) fn try_send(&self, bufs: &[IoSlice<'_>], flags: i32) -> FastSend {
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        // Only small sends: a large copy would hold the registry's read
        // lock (and so close and fork) for microseconds, to save two
        // atomic operations it does not notice.
        if want == 0
            || want > FAST_SEND_MAX
            || self.shut_wr.load(Ordering::Relaxed)
            || self.bell.is_suspect()
            || self.shared()
            || crate::platform::sandbox::strict()
        {
            return FastSend::Slow;
        }
        let Some(mut tx) = self.tx.try_lock() else {
            return FastSend::Slow;
        };
        // As in `send_rest`: a small blocking send goes in whole or waits.
        let need = if want <= self.atomic_send && flags & libc::MSG_DONTWAIT == 0 {
            want
        } else {
            0
        };
        match tx.write_vectored_min(bufs, need) {
            Ok(n) => {
                self.published_sent(n);
                drop(tx);
                self.note_wrote();
                if n >= want {
                    FastSend::Done(n)
                } else {
                    FastSend::Partial(n)
                }
            }
            Err(_) => FastSend::Slow,
        }
    }

    /// `send`, after the first `total` bytes of `bufs` were sent already
    /// (by `try_send`).
    pub(crate) fn send_rest(
        &self,
        bufs: &[IoSlice<'_>],
        flags: i32,
        mut total: usize,
    ) -> Result<usize, Errno> {
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        if crate::platform::sandbox::strict() {
            return Err(Errno::ACCESS); // see `recv`
        }
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if self.shut_wr.load(Ordering::Relaxed) {
                return if total > 0 {
                    Ok(total)
                } else {
                    Err(Errno::PIPE)
                };
            }
            if want == 0 {
                return Ok(0);
            }
            if let Some(e) = self.peer_gone_now() {
                return if total > 0 { Ok(total) } else { Err(e) };
            }
            let r = self.write_some(bufs, total, want, dontwait);
            match r {
                Ok(n) => {
                    total += n;
                    self.note_wrote();
                    if self.rst_due.load(Ordering::Relaxed) {
                        self.rst_answered_send();
                    }
                    if total >= want {
                        return Ok(total);
                    }
                }
                Err(RingError::WouldBlock) => {
                    if dontwait || self.nonblocking() {
                        if total > 0 {
                            return Ok(total);
                        }
                        if self.await_pollout() {
                            continue;
                        }
                        // A peer killed with our bytes unread never frees
                        // room: the kernel's ECONNRESET (then EPIPE), not
                        // EAGAIN for ever to a writer that polls (poll
                        // reports POLLOUT|POLLERR|POLLHUP by then). One
                        // system call, on this path only.
                        if self.bell.hung_up() {
                            return Err(self.write_error(RingError::PeerGone));
                        }
                        return Err(Errno::AGAIN);
                    }
                    let need = if total == 0 && want <= self.atomic_send {
                        want
                    } else {
                        1
                    };
                    match self.wait_room(need, total > 0, &mut deadline) {
                        Ok(()) => {}
                        Err(_) if total > 0 => return Ok(total),
                        Err(e) => return Err(e),
                    }
                }
                Err(RingError::Closed) if total == 0 && self.answered_with_rst() => {
                    return Ok(want.min(self.first_send_cap()));
                }
                Err(e) => {
                    return if total > 0 {
                        Ok(total)
                    } else {
                        Err(self.write_error(e))
                    }
                }
            }
        }
    }

    /// One copy into the ring of what is left of `bufs` after `total`
    /// bytes, under the send lock.
    fn write_some(
        &self,
        bufs: &[IoSlice<'_>],
        total: usize,
        want: usize,
        dontwait: bool,
    ) -> Result<usize, RingError> {
        let mut tx = self.tx.lock();
        let _side = self.shared().then(|| tx.lock_side());
        // A small blocking send goes into the ring whole, as small TCP
        // writes do in practice: two threads writing framed messages on one
        // connection must not interleave them. So when it does not fit,
        // wait for room for all of it. (A non-blocking fd writes what fits:
        // asked only when it did not fit, since after a fork that costs an
        // fcntl.)
        let need = if total == 0 && want <= self.atomic_send && !dontwait {
            want
        } else {
            0
        };
        let r = match with_rest(bufs, total, |b| tx.write_vectored_min(b, need)) {
            Err(RingError::WouldBlock) if need > 0 && self.nonblocking() => {
                with_rest(bufs, total, |b| tx.write_vectored(b))
            }
            r => r,
        };
        if let Ok(n) = r {
            self.published_sent(n);
        }
        r
    }

    /// A non-blocking write found the ring full and the application will
    /// wait for POLLOUT/EPOLLOUT: make our end unwritable with filler, then
    /// ask the reader to take it when it frees room (see `Bell`). In that
    /// order, so that whoever clears the flag finds the filler queued.
    /// Returns true when room is already there after arming (write again;
    /// the filler goes with the next room freed, or when the reader drains
    /// the ring).
    fn await_pollout(&self) -> bool {
        let tx = self.tx.lock();
        let _side = self.shared().then(|| tx.lock_side());
        // Only while the ring is still full (see `Producer::while_full`):
        // filler sent after the reader emptied the ring and settled would
        // make its fd readable with nothing to read.
        if tx.notify().while_full(|tx| self.bell.fill(tx)).is_none() {
            return true;
        }
        tx.arm(WaitKind::Doorbell)
    }

    /// A blocking write waits until `need` bytes are free: asleep on the
    /// ring's futex, in slices that check for hang-up and a local SHUT_WR.
    /// A signal ends the wait with EINTR, or restarts it under SA_RESTART
    /// (see `sys::interrupted_call_restarts`) unless the write is `partial`;
    /// SO_SNDTIMEO with EAGAIN.
    fn wait_room(
        &self,
        need: usize,
        partial: bool,
        deadline: &mut Option<Option<Instant>>,
    ) -> Result<(), Errno> {
        let bell = self.bell.clone();
        // The socket, held while we wait (as the kernel's send holds its
        // file): the peer's death shows as a hang-up on it even if another
        // thread closes the application's last number meanwhile.
        let held = self.bell.hold().map(Arc::new);
        let shut = self.shut_wr.clone();
        let d =
            *deadline.get_or_insert_with(|| deadline_after(self.opts.timeout(libc::SO_SNDTIMEO)));
        let policy = WaitPolicy {
            spin: self.pacing.spin,
            deadline: d,
            liveness: Some(Arc::new(move || {
                !shut.load(Ordering::Relaxed)
                    && !held
                        .as_ref()
                        .map_or_else(|| bell.hung_up(), |fd| Bell::hung_up_on(fd.as_fd()))
            })),
            slice: Duration::from_millis(10),
            interruptible: true,
        };
        self.status_flags(crate::platform::status::WAIT_WRITE, true);
        let waited = loop {
            let woke = super::doorbell::sleep_outside(|| self.room.wait_for_room(need, &policy));
            break match woke.unwrap_or(Err(RingError::Interrupted)) {
                Ok(()) => Ok(()),
                // A write that moved bytes already returns their count.
                Err(RingError::Interrupted) if !partial && crate::platform::cancel::restarts() => {
                    continue
                }
                Err(RingError::Interrupted) => Err(Errno::INTR),
                Err(RingError::TimedOut) => Err(Errno::AGAIN),
                Err(RingError::PeerGone) if partial => Err(Errno::PIPE),
                Err(e) => Err(self.write_error(e)),
            };
        };
        self.status_flags(crate::platform::status::WAIT_WRITE, false);
        waited
    }

    /// How much the first send after the peer's close reports sent
    /// (`FIRST_SEND_AFTER_CLOSE`).
    fn first_send_cap(&self) -> usize {
        let set = [libc::SO_SNDBUF, libc::SO_SNDBUFFORCE]
            .iter()
            .filter_map(|&n| self.opts.get_int(libc::SOL_SOCKET, n))
            .next_back();
        match set {
            Some(v) => (v.max(0) as usize)
                .saturating_mul(2)
                .clamp(FIRST_SEND_AFTER_CLOSE_MIN, FIRST_SEND_AFTER_CLOSE),
            None => FIRST_SEND_AFTER_CLOSE,
        }
    }

    /// sendfile's first send after the peer's plain close: kernel TCP's
    /// goes (`answered_with_rst`). Some(what it reports sent, at most
    /// `want`: the caller takes that much from the file); None otherwise.
    pub(crate) fn first_send_after_close(&self, want: usize) -> Option<usize> {
        let closed = {
            let tx = self.tx.lock();
            tx.peer_closed() && !tx.peer_reset()
        };
        (closed && !self.shut_wr.load(Ordering::Relaxed) && self.answered_with_rst())
            .then(|| want.min(self.first_send_cap()))
    }

    /// Whether a send would take a byte now, known without a system call
    /// or the send lock (false when unsure: shut down, closed, reset).
    /// An epoll set's waiter reports EPOLLOUT from it (`readiness`).
    pub(crate) fn has_room(&self) -> bool {
        !self.shut_wr.load(Ordering::Relaxed) && self.room.has_room()
    }

    /// Free bytes in the send ring, waiting (as a write would) while there
    /// are none; for splice, which must not take more from its pipe than
    /// the ring can hold.
    pub(crate) fn room(&self, dontwait: bool) -> Result<usize, Errno> {
        let mut deadline = None;
        loop {
            if self.shut_wr.load(Ordering::Relaxed) {
                return Err(Errno::PIPE);
            }
            match self.tx.lock().free_bytes() {
                Ok(0) => {}
                Ok(n) => return Ok(n),
                Err(e) => return Err(self.write_error(e)),
            }
            if dontwait || self.nonblocking() {
                if self.await_pollout() {
                    continue;
                }
                return Err(Errno::AGAIN);
            }
            self.wait_room(1, false, &mut deadline)?;
        }
    }

    /// sendfile's copy: `fill` reads the file straight into the ring (see
    /// `Producer::write_from`), at most `max` bytes; blocking or not as a
    /// send is. Ok(0): `fill` gave nothing (end of file, or its error).
    pub(crate) fn send_from(
        &self,
        max: usize,
        dontwait: bool,
        mut fill: impl FnMut(Space<'_>) -> usize,
    ) -> Result<usize, Errno> {
        let mut deadline = None;
        loop {
            if self.shut_wr.load(Ordering::Relaxed) {
                return Err(Errno::PIPE);
            }
            let r = {
                let mut tx = self.tx.lock();
                let _side = self.shared().then(|| tx.lock_side());
                let r = tx.write_from(max, &mut fill);
                if let Ok(n) = r {
                    self.published_sent(n);
                }
                r
            };
            match r {
                Ok(n) => {
                    if n > 0 {
                        self.note_wrote();
                    }
                    return Ok(n);
                }
                Err(RingError::WouldBlock) => {
                    if dontwait || self.nonblocking() {
                        if self.await_pollout() {
                            continue;
                        }
                        return Err(Errno::AGAIN);
                    }
                    self.wait_room(1, false, &mut deadline)?;
                }
                Err(e) => return Err(self.write_error(e)),
            }
        }
    }
}

/// As `with_rest_mut`, for source buffers.
fn with_rest<R>(bufs: &[IoSlice<'_>], mut skip: usize, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
    if skip == 0 {
        return f(bufs);
    }
    let mut rest = Vec::with_capacity(bufs.len());
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        rest.push(IoSlice::new(&b[skip..]));
        skip = 0;
    }
    f(&rest)
}
