//! A peer's reset (a TCP RST), as the kernel reports it (tcp(7), socket(7)):
//! ECONNRESET once — to the first recv that finds the ring drained, send,
//! or SO_ERROR, like the kernel's pending socket error — then end of
//! stream for reads and EPIPE for writes; poll and epoll report POLLERR
//! until it is reported, and POLLHUP (`tcp_error_hangup`).
//!
//! A reset is the peer's abortive close written in the ring
//! (`CLOSED_RESET`: SO_LINGER 0, or unread data at its last close), or a
//! peer gone without closing (killed: the kernel closed its sockets) while
//! bytes we sent it were unread — the kernel sends a RST then, a FIN
//! otherwise.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use rustix::io::Errno;
use shmnet_ring::RingError;

use super::Connection;

impl Connection {
    /// Whether the peer reset the connection (reported or not).
    pub(crate) fn peer_reset(&self) -> bool {
        let (aborted, unread) = {
            let tx = self.tx.lock();
            let unread = !tx.peer_closed() && tx.written_total() > tx.consumed_total();
            (tx.peer_reset(), unread)
        };
        if aborted {
            return true;
        }
        let (from_peer, peer_writing) = {
            let mut rx = self.rx.lock();
            self.receiver(&mut rx.consumer)
                .map_or((false, true), |c| (c.peer_reset(), !c.peer_closed()))
        };
        // Gone without closing: a hang-up while the peer had not ended its
        // stream in the ring (a hang-up also follows a shutdown(SHUT_WR)
        // on each side, which ends it first). A system call: asked last.
        from_peer || (unread && peer_writing && self.bell.hung_up())
    }

    /// Takes the reset for reporting: true the first time only, in
    /// whichever process of this side asks first (the mark is in the
    /// segment: one socket, one pending error, as the kernel's after fork
    /// or SCM_RIGHTS).
    pub(super) fn take_reset(&self) -> bool {
        self.room.report_reset()
    }

    /// A reset not reported yet, taken now (SO_ERROR, or a read at the end
    /// of the stream).
    pub(crate) fn take_pending_reset(&self) -> bool {
        !self.room.reset_reported() && self.peer_reset() && self.take_reset()
    }

    /// The errno of a failed read: a reset is ECONNRESET once, then end of
    /// stream (None).
    pub(super) fn read_error(&self, e: RingError) -> Option<Errno> {
        match e {
            RingError::Reset if !self.take_reset() => None,
            e => Some(super::ring_errno(e)),
        }
    }

    /// The errno of a failed write: a reset is ECONNRESET once, then EPIPE;
    /// a peer gone while bytes of ours were unread was reset too.
    pub(super) fn write_error(&self, e: RingError) -> Errno {
        match e {
            RingError::Reset | RingError::PeerGone if self.reset_now(e) => Errno::CONNRESET,
            RingError::Reset | RingError::PeerGone | RingError::Closed => {
                self.pipe_broken.store(true, Ordering::Relaxed);
                // The pending EPIPE of `answered_with_rst` is this one.
                let _ = self.error.compare_exchange(
                    libc::EPIPE,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                Errno::PIPE
            }
            e => super::ring_errno(e),
        }
    }

    /// A send found the peer's reading end closed by a plain close (its
    /// FIN): kernel TCP's first send then goes, and the peer's kernel
    /// answers it with a RST, which leaves EPIPE pending (SO_ERROR, POLLERR
    /// until reported) and POLLHUP; the next send is EPIPE (with SIGPIPE).
    /// True that first time (the caller reports the bytes sent); the data
    /// goes nowhere, as the peer's kernel drops it. (A peer that closed
    /// after shutdown(SHUT_WR) with our bytes unread sent its RST at that
    /// close, `rst_after_fin`: this send reports its EPIPE, false here.)
    pub(super) fn answered_with_rst(&self) -> bool {
        if self.rst_after_fin() || self.pipe_broken.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.rst_came(true);
        true
    }

    /// The peer's RST came after its FIN (ours answered, or its close
    /// after shutdown(SHUT_WR) with our bytes unread): EPIPE pending, the
    /// connection hung up. `poll_again`: its epoll registrations are
    /// polled again, as the RST's wake-up does (the peer's close woke them
    /// already when its RST came with it).
    fn rst_came(&self, poll_again: bool) {
        self.pipe_broken.store(true, Ordering::Relaxed);
        let _ = self
            .error
            .compare_exchange(0, libc::EPIPE, Ordering::Relaxed, Ordering::Relaxed);
        if poll_again {
            super::ready::unsilence(self, true);
        }
    }

    /// A send went to a peer gone without closing that had read
    /// everything (`rst_due`): the kernel's peer answers it with a RST,
    /// which this side, in CLOSE_WAIT, takes as EPIPE pending (SO_ERROR,
    /// POLLERR until reported), not ECONNRESET: the bytes it left unread
    /// make `peer_reset` true, so that reset is marked reported now (a
    /// read gives the end of stream). Its wake-up is every epoll
    /// registration polled again, silenced ones given back.
    pub(super) fn rst_answered_send(&self) {
        if !self.rst_due.swap(false, Ordering::Relaxed) {
            return;
        }
        self.take_reset();
        self.rst_came(true);
    }

    /// Whether the peer closed after shutdown(SHUT_WR) with bytes of ours
    /// unread (its close then carries no reset in the ring, decision in
    /// docs/compatibility.md, "Resets"), noticed now: the kernel's peer
    /// sent a RST at that close, which left EPIPE pending here (we had its
    /// FIN: CLOSE_WAIT). Once (`pipe_broken` after it).
    pub(crate) fn rst_after_fin(&self) -> bool {
        if self.pipe_broken.load(Ordering::Relaxed) {
            return false;
        }
        let fin_rst = {
            let tx = self.tx.lock();
            tx.peer_closed() && !tx.peer_reset() && tx.written_total() > tx.consumed_total()
        };
        if fin_rst && !self.pipe_broken.load(Ordering::Relaxed) {
            self.rst_came(false);
        }
        fin_rst
    }

    fn reset_now(&self, e: RingError) -> bool {
        match e {
            RingError::Reset => self.take_reset(),
            _ => self.take_pending_reset(),
        }
    }

    /// The ring shows an end of the connection: the peer closed or shut
    /// down writing (or reset), or closed its reading end, or this side
    /// shut down writing. (A peer killed without closing shows none.)
    pub(crate) fn ended_in_ring(&self) -> bool {
        {
            let tx = self.tx.lock();
            if tx.peer_closed() || tx.closed() {
                return true;
            }
        }
        let mut rx = self.rx.lock();
        self.receiver(&mut rx.consumer)
            .is_some_and(|c| c.producer_closed())
    }

    /// What the Unix connection's poll says now to a registration of
    /// epoll `events` (poll's bits are epoll's; POLLHUP and POLLERR
    /// always): whether an epoll event is this connection's
    /// (`readiness::tcp_hangups`). One system call.
    pub(crate) fn unix_revents(&self, events: u32) -> u32 {
        let asked = (events & 0x2fff) as i16;
        u32::from(self.bell.poll_now(asked) as u16)
    }

    /// POLLERR and POLLHUP as kernel TCP reports them (tcp_poll), for a
    /// Unix connection whose poll said POLLHUP or POLLERR: an error only
    /// for a reset not reported yet, a hang-up only for a reset or both
    /// directions shut (`ended`: the Unix connection's reading side is
    /// shut, by the peer's close or shutdown, or ours), or after a send
    /// that found the peer's reading end closed. The Unix bits
    /// differ: the peer's close is a hang-up there, and a doorbell byte it
    /// left unread an error — a plain close (FIN) looked like a reset.
    pub(crate) fn tcp_error_hangup(&self, ended: bool) -> (bool, bool) {
        if ended {
            self.rst_after_fin();
        }
        let reset = self.peer_reset();
        if reset || ended {
            // The application learns of it now: its sends must not go on
            // into the ring (`peer_gone_now`).
            self.bell.suspect(super::doorbell::Suspect::Ended);
        }
        // (`error`: the EPIPE a RST after our send left, `answered_with_rst`.)
        let err = (reset && !self.room.reset_reported())
            || (self.pipe_broken.load(Ordering::Relaxed)
                && self.error.load(Ordering::Relaxed) != 0);
        let hup = reset || self.pipe_broken.load(Ordering::Relaxed) || (ended && self.wrote_end());
        (err, hup)
    }

    /// This side shut down writing: here, or in another process that
    /// shares the connection (fork, SCM_RIGHTS), whose `shut_wr` is its
    /// own; the ring's end written in the shared segment is everyone's
    /// (review hup14: a forked child's shutdown gave its parent's wait no
    /// EPOLLHUP).
    fn wrote_end(&self) -> bool {
        self.shut_wr.load(Ordering::Relaxed) || self.tx.lock().closed()
    }
}
