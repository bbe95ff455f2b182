//! One side of an emulated TCP connection (`Connection`): two rings in a
//! connection segment, and the Unix connection behind the application's fd
//! that carries the doorbell bytes (docs/architecture.md, "The readiness
//! protocol").
//!
//! Here: the struct, its constructors, its last close (`Drop`) and small
//! accessors. Each concern has a file of its own:
//!
//! - `connect`: the connecting side's handshake (and the segment it makes);
//! - `doorbell`: `Bell`, the dup of the Unix connection, and `RoomBell`;
//! - `recv` and `send`: the data calls (`recv` is a small state machine:
//!   read, then spin, watch, gather, settle or sleep);
//! - `settle`: the reader's accounting of doorbell bytes (step 3 of the
//!   protocol) and the bytes a read leaves;
//! - `ready`: readiness for poll/select/epoll: lazy and eager readers,
//!   waiters and takers, edge-triggered registration;
//! - `pacing`: the spinning, watching and gathering heuristics;
//! - `exec`: what fork and exec share (the fork generation, the carrier);
//! - `trim`: giving back the pages of a send ring gone quiet.
#![forbid(unsafe_code)]

mod connect;
mod doorbell;
mod edge;
mod exec;
mod pacing;
mod ready;
pub(crate) use ready::{on_hangup_change, Deferral, Unarmed};
mod recv;
mod reset;
mod send;
mod settle;
mod trim;

pub(crate) use connect::{
    offers_waiting, segment_for_declined, Dialed, Offered, Redial, Settled, OFFER_PATIENCE,
};
pub(crate) use doorbell::{Bell, SKIP_RUNG_SLEEPS};
pub(crate) use send::FastSend;

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::platform::internal_fd::{InternalFd, KeptMemfd};
use crate::platform::lock::Mutex;
use crate::platform::status;
use crate::sockets::options_store::Options;
use rustix::io::Errno;
use shmnet_ring::{Consumer, Producer, RingError, RoomWaiter, Segment};

use crate::transport::pool;
use crate::transport::rendezvous::Reservation;

use doorbell::RoomBell;
use exec::{Carry, ExecState};
use pacing::Pacing;
use ready::Readiness;

/// The receive side's state, under one lock.
struct Rx {
    /// The connector's receive half exists once the acceptor initialised
    /// its direction.
    consumer: Option<Consumer>,
}

/// One side of an emulated TCP connection.
///
/// Fields drop in this order after `Drop::drop` (the segment and its rings
/// first, then the Unix connection, the port, the carrier), as before the
/// fields were grouped.
pub(crate) struct Connection {
    pub local: SocketAddr,
    pub peer: SocketAddr,

    // The transport: the segment's two rings and the Unix connection.
    seg: Segment,
    /// Held only while copying: a writer waiting for room sleeps on `room`.
    tx: Mutex<Producer>,
    room: RoomWaiter,
    /// Held only while copying; a reader sleeps in poll without it.
    rx: Mutex<Rx>,
    bell: Arc<Bell>,
    _port: Option<Reservation>,

    /// Shared with other processes after fork or exec (`exec`).
    exec: ExecState,
    shut_rd: AtomicBool,
    shut_wr: Arc<AtomicBool>,
    /// Who waits on the fd, and how the kernel reports it (`ready`).
    ready: Readiness,
    /// O_NONBLOCK: 0 unknown, 1 blocking, 2 non-blocking (`nonblocking`).
    nonblock: AtomicU8,
    /// A lock-free look at the receive ring, for spinning (set with the
    /// receive half).
    probe: std::sync::OnceLock<shmnet_ring::Probe>,
    /// When to spin, watch or gather (`pacing`).
    pacing: Pacing,
    /// SO_ERROR: an error to report once.
    pub error: AtomicI32,
    /// Completed after connect returned EINPROGRESS: the next connect
    /// says 0 (then EISCONN), as the kernel's.
    pub completed_late: AtomicBool,
    /// A send found the peer's reading end closed (EPIPE): over TCP the
    /// peer's kernel answers such data with a RST, after which poll says
    /// POLLHUP (`reset`).
    pipe_broken: AtomicBool,
    /// The send going now is the first to a peer gone without closing
    /// (killed) that had read everything: the kernel's peer answers it
    /// with a RST, whose wake-up `Connection::rst_answered_send` gives.
    rst_due: AtomicBool,
    /// Blocking sends up to this size go into the ring whole.
    atomic_send: usize,
    pub opts: Options,
    /// How to keep the segment for reuse once this connection is gone.
    pool_ticket: Option<pool::Ticket>,
    /// Queued with `sockets::quiet` to give back its send ring's pages
    /// (`trim`).
    trim_queued: AtomicBool,
    /// Published for `shmnet ss` (`platform::status`).
    status: status::Published,
}

/// What a failed data call turns into.
fn ring_errno(e: RingError) -> Errno {
    Errno::from_raw_os_error(e.errno())
}

/// `now + t`, or no deadline when that overflows (a huge SO_RCVTIMEO is
/// "forever" for the kernel too).
fn deadline_after(t: Option<Duration>) -> Option<Instant> {
    t.and_then(|t| Instant::now().checked_add(t))
}

/// Time left until `deadline`; Err(AGAIN) once it passed (SO_*TIMEO expiry).
fn time_left(deadline: Option<Instant>) -> Result<Option<Duration>, Errno> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.saturating_duration_since(Instant::now()) {
            l if l.is_zero() => Err(Errno::AGAIN),
            l => Ok(Some(l)),
        },
    }
}

impl Connection {
    pub(crate) fn new(
        seg: Segment,
        local: SocketAddr,
        peer: SocketAddr,
        bell: Arc<Bell>,
        port: Option<Reservation>,
        pool_ticket: Option<pool::Ticket>,
    ) -> Result<Connection, Errno> {
        Connection::build(seg, local, peer, bell, port, pool_ticket, Carry::default())
    }

    /// A connection inherited across exec, on its segment mapped again
    /// (`Segment::reattach`) and the carrier it came with (inheritable, as
    /// the application's fds that brought it). Treated as shared with
    /// another process: the program that exec'd may have forked first and
    /// kept its copy.
    pub(crate) fn adopt(
        seg: Segment,
        local: SocketAddr,
        peer: SocketAddr,
        bell: Arc<Bell>,
        carrier: InternalFd,
    ) -> Result<Connection, Errno> {
        let carry = Carry {
            memfd: None,
            carrier: Some(carrier),
            inheritable: true,
            wanted: true,
        };
        Connection::build(seg, local, peer, bell, None, None, carry)
    }

    fn build(
        mut seg: Segment,
        local: SocketAddr,
        peer: SocketAddr,
        bell: Arc<Bell>,
        port: Option<Reservation>,
        pool_ticket: Option<pool::Ticket>,
        mut carry: Carry,
    ) -> Result<Connection, Errno> {
        let inherited = carry.carrier.is_some();
        // `shmnet ss` identifies it by its segment (the same inode at both
        // ends, and in every process holding it); an attach read it
        // already (an fstat less per accept).
        #[allow(clippy::unnecessary_cast)] // st_ino's type differs between architectures
        let segment = seg.inode().unwrap_or_else(|| {
            seg.fd()
                .and_then(|fd| rustix::fs::fstat(fd).ok())
                .map_or(0, |st| st.st_ino as u64)
        });
        // Kept for a carrier (`ready_for_exec`), where there is room for
        // it; an inherited connection has its carrier already, which holds
        // the segment.
        if inherited {
            seg.forget_fd();
        } else {
            carry.memfd = seg.take_fd().and_then(KeptMemfd::new);
        }
        let mut tx = seg.producer().map_err(|_| Errno::PROTO)?;
        tx.set_doorbell(bell.clone());
        let ring_bytes = seg.geometry().channel_bytes();
        let room = tx.room_waiter();
        let status = status::connection(
            local,
            peer,
            seg.role() == shmnet_ring::Role::Connector,
            ring_bytes,
            segment,
            // (Adopted after exec: from the ring's totals.)
            if inherited { seg.totals() } else { (0, 0) },
        );
        let spin = crate::platform::config::get()
            .map_or(Duration::ZERO, |c| Duration::from_micros(c.spin_us.into()));
        let conn = Connection {
            local,
            peer,
            seg,
            tx: Mutex::new(tx),
            room,
            rx: Mutex::new(Rx { consumer: None }),
            bell,
            _port: port,
            exec: ExecState::new(inherited, carry),
            shut_rd: AtomicBool::new(false),
            shut_wr: Arc::new(AtomicBool::new(false)),
            ready: Readiness::default(),
            nonblock: AtomicU8::new(0),
            probe: std::sync::OnceLock::new(),
            pacing: Pacing::new(spin),
            error: AtomicI32::new(0),
            completed_late: AtomicBool::new(false),
            pipe_broken: AtomicBool::new(false),
            rst_due: AtomicBool::new(false),
            atomic_send: (ring_bytes / 2).min(64 << 10),
            opts: Options::default(),
            pool_ticket,
            trim_queued: AtomicBool::new(false),
            status,
        };
        // The acceptor's receive half is ready at once; the connector's once
        // the acceptor initialised its direction (see `receiver`).
        conn.receiver(&mut conn.rx.lock().consumer);
        Ok(conn)
    }

    /// See `Socket::fd_opened`: the doorbell may use `fd`.
    pub(crate) fn fd_opened(&self, fd: RawFd) {
        self.bell.opened(fd);
        self.status.set_fd(fd);
    }

    /// Publishes `n` bytes sent (the send lock held); a process's first
    /// use of a connection it inherited publishes it, from the ring's
    /// totals.
    /// (`--cfg shmnet_no_status_counters`: compiled out, the baseline of
    /// docs/benchmarks.md, "The status files' cost".)
    #[inline]
    fn published_sent(&self, n: usize) {
        #[cfg(not(shmnet_no_status_counters))]
        self.status.sent(n, || self.seg.totals());
        #[cfg(shmnet_no_status_counters)]
        let _ = n;
    }

    /// Publishes `n` bytes read (the receive lock held).
    #[inline]
    fn published_received(&self, n: usize) {
        #[cfg(not(shmnet_no_status_counters))]
        self.status.received(n, || self.seg.totals());
        #[cfg(shmnet_no_status_counters)]
        let _ = n;
    }

    /// poll, select or epoll_ctl looks at the connection: a forked child
    /// that only waits on one it was handed is listed (no system call).
    #[inline]
    pub(crate) fn status_waited(&self) {
        self.status.waited_here(|| self.seg.totals());
    }

    /// Sets (`on`) or clears status flags (`status::SHUT_WR`...).
    fn status_flags(&self, bits: u32, on: bool) {
        if on {
            self.status.set_flags(bits, || self.seg.totals());
        } else {
            self.status.clear_flags(bits);
        }
    }

    /// See `Socket::fd_closing`.
    pub(crate) fn fd_closing(&self, fd: RawFd) {
        self.bell.forget_fd(fd);
        self.status.fd_gone(fd, self.bell.any_fd());
    }

    /// See `Socket::while_replacing`.
    pub(crate) fn while_replacing(&self, fd: RawFd, replace: impl FnOnce() -> i32) -> i32 {
        let r = self.bell.while_replacing(fd, replace);
        if r >= 0 {
            self.status.fd_gone(fd, self.bell.any_fd());
        }
        r
    }

    /// See `Socket::try_fd_closing`.
    pub(crate) fn try_fd_closing(&self, fd: RawFd) -> Option<bool> {
        self.bell.try_forget_fd(fd)
    }

    /// In a forked child: see `Socket::reset_locks_after_fork`.
    pub(crate) fn reset_locks_after_fork(&self) {
        self.bell.reset_after_fork();
        self.tx.reset_after_fork();
        self.rx.reset_after_fork();
        self.opts.reset_after_fork();
        self.exec.carry.reset_after_fork();
        self.reset_readiness_after_fork();
        self.status.after_fork_child();
    }

    /// Whether the fd is non-blocking (O_NONBLOCK of the open file),
    /// remembered between calls: the fcntl hooks forget it when the
    /// application changes it. Looked up every time once another process
    /// shares the file (it may change the flag past us).
    fn nonblocking(&self) -> bool {
        match self.nonblock.load(Ordering::Relaxed) {
            1 if !self.shared() => false,
            2 if !self.shared() => true,
            // Sandboxed: no fcntl; what was remembered before the filter
            // went on (`remember_nonblocking`), or blocking, the default.
            v if crate::platform::sandbox::active() => v == 2,
            _ => {
                let nb = self.bell.nonblocking();
                self.nonblock
                    .store(if nb { 2 } else { 1 }, Ordering::Relaxed);
                nb
            }
        }
    }

    /// Looks O_NONBLOCK up now, for `nonblocking` to use once it cannot
    /// (before a seccomp filter goes on).
    pub(crate) fn remember_nonblocking(&self) {
        let nb = self.bell.nonblocking();
        self.nonblock
            .store(if nb { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// The application changed O_NONBLOCK (F_SETFL, FIONBIO).
    pub(crate) fn forget_nonblocking(&self) {
        self.nonblock.store(0, Ordering::Relaxed);
    }

    /// The application set O_NONBLOCK to `nb` (F_SETFL, FIONBIO) in a
    /// sandboxed process, where it cannot be asked (`nonblocking`).
    pub(crate) fn set_nonblocking(&self, nb: bool) {
        self.nonblock
            .store(if nb { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// The receive half, once the peer's direction is initialised (at once
    /// for the acceptor; for the connector, once the acceptor attached).
    fn receiver<'a>(&self, slot: &'a mut Option<Consumer>) -> Option<&'a mut Consumer> {
        if slot.is_none() {
            if let Ok(mut c) = self.seg.consumer() {
                c.set_doorbell(Arc::new(RoomBell(self.bell.clone())));
                if self.ready.edge.load(Ordering::Relaxed) {
                    c.notify().set_edge_triggered();
                }
                let _ = self.bell.taken.set(c.notify().taken_count());
                let _ = self.probe.set(c.probe());
                *slot = Some(c);
            }
        }
        slot.as_mut()
    }

    /// Cheap "might a read succeed now?" for spinning, without the lock
    /// being held across the spin.
    pub(crate) fn ring_readable(&self) -> bool {
        let rx = self.rx.lock();
        rx.consumer.as_ref().is_some_and(|c| c.readable_now())
    }

    /// FIONREAD (a connector that has not read yet attaches its receive
    /// half here: data may be waiting).
    pub(crate) fn available(&self) -> usize {
        let mut rx = self.rx.lock();
        self.receiver(&mut rx.consumer)
            .and_then(|c| c.available().ok())
            .unwrap_or(0)
    }

    pub(crate) fn shutdown(&self, how: i32) -> Result<(), Errno> {
        let (rd, wr) = match how {
            libc::SHUT_RD => (true, false),
            libc::SHUT_WR => (false, true),
            libc::SHUT_RDWR => (true, true),
            _ => return Err(Errno::INVAL),
        };
        if wr && !self.shut_wr.swap(true, Ordering::Relaxed) {
            self.tx.lock().close();
            self.room.wake(); // a writer of ours asleep for room: EPIPE now
                              // The kernel's half-close too, after the ring's end-of-stream
                              // (and its doorbell): the peer's poll/epoll then see
                              // POLLRDHUP/EPOLLRDHUP, as for a TCP FIN.
            self.bell.shutdown(rustix::net::Shutdown::Write);
            self.status_flags(status::SHUT_WR, true);
            self.hangup_changed();
        }
        if rd && !self.shut_rd.swap(true, Ordering::Relaxed) {
            // Wakes a reader of ours asleep in poll on the fd (it sees POLLIN
            // and then SHUT_RD); the peer's doorbells to us fail harmlessly.
            self.bell.shutdown(rustix::net::Shutdown::Read);
            self.status_flags(status::SHUT_RD, true);
        }
        Ok(())
    }

    /// The connection's progress as TCP_INFO reports it (read-only looks
    /// at the ring positions; see `options`).
    pub(crate) fn progress(&self) -> Progress {
        let (sent, acked) = {
            let tx = self.tx.lock();
            (tx.written_total(), tx.consumed_total())
        };
        let (received, peer_done) = {
            let mut rx = self.rx.lock();
            match self.receiver(&mut rx.consumer) {
                Some(c) => (c.consumed_total(), c.producer_closed()),
                None => (0, false),
            }
        };
        Progress {
            sent,
            acked,
            received,
            connector: self.seg.role() == shmnet_ring::Role::Connector,
            shut_wr: self.shut_wr.load(Ordering::Relaxed),
            peer_done,
        }
    }
}

/// See `Connection::progress`.
pub(crate) struct Progress {
    /// Bytes written into our ring, and of those read by the peer.
    pub sent: u64,
    pub acked: u64,
    /// Bytes we read from the peer's ring.
    pub received: u64,
    /// This side connected (the other accepted).
    pub connector: bool,
    /// We shut down writing (or closed); the peer did (or is gone).
    pub shut_wr: bool,
    pub peer_done: bool,
}

/// The bytes a peer that has not read takes before its receive window
/// closes: a FIN sent behind this many of ours or more has not reached it
/// when our close's RST does. Kernel TCP over loopback with the default
/// tcp_rmem (131,072): 127,999 unread bytes then a FIN reach it, 128,000
/// do not (measured, Linux 6.x; review s35tail #4).
const FIN_WINDOW: u64 = 128_000;

/// A peer that reads has its window grown (receive buffer autotuning):
/// the edge is then taken as this many times what it read, if more than
/// `FIN_WINDOW`. Measured over loopback (the peer read R bytes, then
/// stopped): R = 300 KB, edge between 1 and 2 MB; 512 KiB, past 2.1 MB;
/// 1 MiB, 2 to 4 MB (noisy); 4 MiB, 6 to 8 MB (review s35tail #3).
/// Between 16 and 256 KiB read the kernel's edge was lower than
/// `FIN_WINDOW` (127,999 bytes reset): not modelled.
const FIN_WINDOW_GROWTH: u64 = 4;

/// Whether a FIN sent behind `unread` bytes of ours reaches a peer that
/// read `consumed` before (docs/decisions.md 60).
fn fin_reaches(unread: u64, consumed: u64) -> bool {
    unread < FIN_WINDOW.max(consumed.saturating_mul(FIN_WINDOW_GROWTH))
}

impl Drop for Connection {
    fn drop(&mut self) {
        crate::platform::internal_fd::room_freed();
        // The last reference in this process. If no fork happened since the
        // connection was made, it is the last anywhere: tell the peer (EOF
        // for its reads, EPIPE for its writes). Otherwise the kernel's
        // hang-up on the Unix connection tells it when the last process
        // closes.
        if self.shared() {
            return;
        }
        self.bell.closing.store(true, Ordering::Relaxed);
        // The connector's receive half may never have been attached (it
        // never read): attach it now, or the peer's writes would go on
        // succeeding into a ring nobody reads.
        let mut rx = std::mem::take(&mut self.rx.get_mut().consumer);
        let rx_ref = self.receiver(&mut rx);
        // As the kernel: a RST for SO_LINGER 0 or unread data (tcp(7)),
        // unless a FIN went already (shutdown(SHUT_WR)) and reached the
        // peer: a FIN behind as many of our bytes as the peer's receive
        // window holds (`fin_reaches`) never left, and the RST finds the peer in ESTABLISHED
        // (ECONNRESET there, not the EPIPE of CLOSE_WAIT).
        let unread = rx_ref
            .as_ref()
            .is_some_and(|r| r.available().is_ok_and(|n| n > 0));
        let fin_went = self.shut_wr.load(Ordering::Relaxed) && {
            let tx = self.tx.get_mut();
            let consumed = tx.consumed_total();
            fin_reaches(tx.written_total().saturating_sub(consumed), consumed)
        };
        let abortive = !fin_went && (unread || self.opts.linger_zero());
        if abortive {
            self.tx.get_mut().abort();
        } else {
            self.tx.get_mut().close();
        }
        match (rx_ref, abortive) {
            (Some(r), true) => r.abort(),
            (Some(r), false) => r.close(),
            (None, _) => {}
        }
        drop(rx);
        if let Some(ticket) = self.pool_ticket {
            self.trim_for_pool();
            let memfd = self.exec.carry.get_mut().memfd.take();
            pool::put(self.seg.share(), ticket, memfd);
        }
    }
}
