//! The connecting side's setup: the connection segment (a fresh one, or
//! one kept for reuse with the same acceptor, `pool`), the handshake on the
//! listener's rendezvous, and the doorbell.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use shmnet_ring::{Geometry, Segment};

use crate::sockets::options_store::Options;
use crate::transport::handshake::{self, Kind, Message};
use crate::transport::lookup::DialError;
use crate::transport::pool;
use crate::transport::rendezvous::Reservation;

use super::{Bell, Connection};

/// A new connection segment, unless it cannot be made: the kernel's errno
/// for running out of fds or memory (the caller falls back to kernel TCP
/// in the default mode), ENOBUFS otherwise. Its memfd is sized with
/// ftruncate, which raises SIGXFSZ — killing a C program — when the file
/// would exceed RLIMIT_FSIZE: so that limit is looked at first, every
/// time (a program may lower it).
fn new_segment(geo: Geometry) -> Result<Segment, Errno> {
    let size = geo.total_bytes() as u64;
    if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Fsize).current {
        if limit < size {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                crate::platform::log::always(format_args!(
                    "no shared-memory connections: RLIMIT_FSIZE ({limit} bytes) is below a \
                     connection segment's {size} bytes (ulimit -f)"
                ));
            }
            return Err(Errno::NOBUFS);
        }
    }
    Segment::create(geo).map_err(|e| {
        let errno = match &e {
            shmnet_ring::AttachError::Os(io) => {
                match io.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(e @ (Errno::MFILE | Errno::NFILE | Errno::NOMEM)) => e,
                    _ => Errno::NOBUFS,
                }
            }
            _ => Errno::NOBUFS,
        };
        log!(warn, "cannot create a connection segment: {e}");
        errno
    })
}

/// Acceptor: a new connection segment made for a non-blocking connector
/// whose reuse offer it declines (`Offered::settle` maps it as the
/// connector, `Segment::reattach`), as this side's: the connection needs
/// nothing more from the connector, so accept completes at once, as the
/// kernel's does from its backlog. Its memfd goes to the connector.
pub(crate) fn segment_for_declined(ring_bytes: usize) -> Result<Segment, Errno> {
    let geo = Geometry::for_ring_bytes(ring_bytes as u64).map_err(|_| Errno::INVAL)?;
    let made = new_segment(geo)?;
    let memfd = made
        .fd()
        .ok_or(Errno::NOBUFS)?
        .try_clone_to_owned()
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::NOBUFS))?;
    // The connector's direction is initialised (`create`); ours by attach.
    Segment::attach(memfd).map_err(|e| {
        log!(warn, "cannot attach a connection segment made here: {e}");
        Errno::NOBUFS
    })
}

impl Connection {
    /// The connecting side: creates the segment, connects to the listener's
    /// rendezvous with `dial` (which also checks whom it reached) and sends
    /// the connect message (claim 83). Returns the Unix connection (to
    /// become the application's fd) and the connection.
    ///
    /// `make_room` gives fds back when we ran out (`spare_fds::give_back`,
    /// which lies above this module): true if the failed step may be
    /// tried again.
    #[allow(clippy::too_many_arguments)] // the connect's parts, each once
    pub(crate) fn connect(
        dial: &dyn Fn(Option<OwnedFd>) -> Result<OwnedFd, DialError>,
        redial: Redial,
        make_room: fn() -> bool,
        mut local: Reservation,
        peer: SocketAddr,
        ring_bytes: usize,
        opts: Options,
        nonblocking: bool,
    ) -> Result<Dialed, DialError> {
        let generation = crate::platform::fork::generation();
        let geo = Geometry::for_ring_bytes(ring_bytes as u64).map_err(|_| Errno::INVAL)?;
        let mut hello = Message {
            kind: Kind::Connect,
            addr: local.addr,
            status: 0,
            dest: peer,
            key: 0,
        };
        // A segment shared with the acceptor process before, if we keep one
        // for this address (see `pool`); else a new one. Either comes first:
        // a listener that sees our connection before our message parks it,
        // so nothing slow may come between connect and send.
        let (seg, reuse) = match pool::offer_for(peer) {
            Some((seg, ticket)) => (seg, Some(ticket.key)),
            None => (with_room(make_room, || Ok(new_segment(geo)?))?, None),
        };
        hello.key = reuse.unwrap_or_else(pool::new_key);
        let sock = with_room(make_room, || dial(local.dial_socket()?))?;
        // (A dial again may have had to take another port.)
        hello.addr = local.addr;
        // The doorbell needs no fd of its own: `sock` goes onto the
        // application's number (`Bell::opened` when it is registered), so
        // nothing after the acceptor hears of us can run out of fds.
        let (sock, seg, bell) = if reuse.is_some() && nonblocking && async_connect() {
            // A non-blocking connect does not wait for the verdict: it
            // returns EINPROGRESS and completes when the acceptor answers
            // (`Offered`), as kernel TCP's completes with the handshake.
            hello.kind = Kind::Reuse;
            let sndbuf =
                handshake::send_offer(sock.as_fd(), &mut hello, super::doorbell::BELL_SNDBUF)
                    .map_err(refused)?;
            WAITING.fetch_add(1, Ordering::Relaxed);
            let offered = Offered {
                seg: Some(seg),
                local: Some(local),
                peer,
                hello,
                geo,
                opts,
                generation,
                sndbuf,
                redial,
                pooled: true,
            };
            return Ok(Dialed::InProgress(sock, offered));
        } else if reuse.is_some() {
            offer_reuse(dial, &mut local, sock, seg, &mut hello, geo, nonblocking)?
        } else {
            // The listener went away between connect and send: refused.
            handshake::send(sock.as_fd(), &hello, seg.fd()).map_err(refused)?;
            // (Dialed non-blocking: left so for a non-blocking connect.)
            if !nonblocking {
                rustix::io::ioctl_fionbio(&sock, false)?;
            }
            let bell = Bell::new(sock.as_fd(), None);
            (sock, seg, bell)
        };
        let ticket = pool::Ticket {
            key: hello.key,
            generation,
            side: pool::Side::Connector { dest: peer },
        };
        let me = local.addr;
        let mut conn = Connection::new(seg, me, peer, bell, Some(local), Some(ticket))?;
        conn.opts = opts;
        Ok(Dialed::Done(sock, conn))
    }
}

impl Connection {
    /// The emulated mode's connect when the process has one free fd, where
    /// `connect` needs two (the Unix connection and the segment's memfd,
    /// or the connection and its name's probe): the Unix socket goes onto
    /// the application's number first (`adopt`: dup3, the application's
    /// kernel socket closed; `rendezvous::connecting_name_onto`), which
    /// frees the number it was made on; the probe and then the memfd use
    /// that one, and the application's fd is dialed and carries the
    /// message. So a connect needs one free fd, not two (kernel TCP's needs
    /// none; decision 38).
    ///
    /// Returns the connection and the application fd's close-on-exec flag.
    /// Once the application's kernel socket is gone, a failure leaves its fd
    /// a Unix socket, shut down both ways (`true` with the error): there is
    /// no fd to make a kernel socket again with.
    #[allow(clippy::too_many_arguments)] // the connect's parts, each once
    pub(crate) fn connect_at_limit(
        dial: &dyn Fn(BorrowedFd<'_>) -> Result<(), DialError>,
        adopt: &dyn Fn(&OwnedFd) -> Result<bool, Errno>,
        app: BorrowedFd<'_>,
        ip: std::net::IpAddr,
        peer: SocketAddr,
        ring_bytes: usize,
        opts: Options,
        nonblocking: bool,
    ) -> Result<(Connection, bool), (DialError, bool)> {
        let generation = crate::platform::fork::generation();
        let geo = Geometry::for_ring_bytes(ring_bytes as u64)
            .map_err(|_| (Errno::INVAL.into(), false))?;
        let mut cloexec = None;
        let local = crate::transport::rendezvous::connecting_name_onto(ip, &mut |sock| {
            cloexec = Some(adopt(&sock)?);
            Ok(())
        });
        let adopted = cloexec.is_some();
        let after = |e: DialError| {
            if adopted {
                let _ = rustix::net::shutdown(app, rustix::net::Shutdown::Both);
            }
            (e, adopted)
        };
        let local = local.map_err(|e| after(e.into()))?;
        let cloexec = cloexec.unwrap_or(true);
        // The memfd before the dial: nothing slow between connect and send.
        let seg = new_segment(geo).map_err(|e| after(e.into()))?;
        dial(app).map_err(after)?;
        let hello = Message {
            kind: Kind::Connect,
            addr: local.addr,
            status: 0,
            dest: peer,
            key: pool::new_key(),
        };
        handshake::send(app, &hello, seg.fd()).map_err(|e| after(refused(e)))?;
        if !nonblocking {
            rustix::io::ioctl_fionbio(app, false).map_err(|e| after(e.into()))?;
        }
        let bell = Bell::new(app, None);
        let ticket = pool::Ticket {
            key: hello.key,
            generation,
            side: pool::Side::Connector { dest: peer },
        };
        let mut conn = Connection::new(seg, hello.addr, peer, bell, Some(local), Some(ticket))
            .map_err(|e| after(e.into()))?;
        conn.opts = opts;
        Ok((conn, cloexec))
    }
}

/// Whether a non-blocking connect's reuse offer may complete later
/// (`SHMNET_ASYNC_CONNECT=1`, decision 32); otherwise it waits for the
/// acceptor's verdict as a blocking one does.
fn async_connect() -> bool {
    crate::platform::config::get().is_some_and(|c| c.async_connect)
}

/// Dials the listener again (a non-blocking one, from the socket given):
/// what an offer that waited too long does (`Offered::expire`).
pub(crate) type Redial = Box<dyn Fn(Option<OwnedFd>) -> Result<OwnedFd, DialError> + Send + Sync>;

/// How long a non-blocking connect's offer waits for the acceptor before
/// it is withdrawn for a new segment on a new connection, which completes
/// at once (`Offered::expire`, run from our poll, select and epoll_wait):
/// a server that accepts only after its client did something else (or
/// is busy with another client) does not keep the client's connect from
/// completing, as kernel TCP's completes from the listen backlog.
pub(crate) const OFFER_PATIENCE: Duration = Duration::from_millis(2);

/// What a connect made: a connection, or (a non-blocking connect that
/// offered a kept segment) one waiting for the acceptor's answer. Either
/// way the Unix connection becomes the application's fd.
#[allow(clippy::large_enum_variant)] // one lives at a time, on the stack
pub(crate) enum Dialed {
    Done(OwnedFd, Connection),
    InProgress(OwnedFd, Offered),
}

/// A non-blocking connect's reuse offer, sent and not answered yet
/// (docs/architecture.md, "Connecting without waiting"). The `Reuse`
/// message went out with filler behind it that keeps the connector's end
/// unwritable until the acceptor has answered: it claims the segment (the
/// header's claim word) or declines (a `N` byte), then takes the filler,
/// which raises the kernel's write-space event on our end — so POLLOUT
/// and EPOLLOUT, ours or the kernel's, say "connected" as they do for TCP.
pub(crate) struct Offered {
    /// Withdrawn when dropped unanswered (the application closed the fd).
    seg: Option<Segment>,
    local: Option<Reservation>,
    pub peer: SocketAddr,
    hello: Message,
    geo: Geometry,
    pub opts: Options,
    generation: u32,
    /// The Unix connection's send buffer (set by `send_offer`).
    sndbuf: usize,
    redial: Redial,
    /// Whether the segment is kept for reuse when the connection is gone
    /// (not one the acceptor made).
    pooled: bool,
}

/// Where an offer stands (`Offered::settle`).
#[allow(clippy::large_enum_variant)] // one lives at a time, on the stack
pub(crate) enum Settled {
    Done(Connection),
    /// Withdrawn and made again on a new Unix connection, which is to
    /// become the application's fd.
    Redialed(OwnedFd, Connection),
    Waiting(Offered),
    Failed(Errno),
}

impl Offered {
    /// Our address for the connection.
    pub(crate) fn local(&self) -> SocketAddr {
        self.hello.addr
    }

    /// Looks, without waiting, whether the acceptor answered on `sock` (the
    /// application's fd): claimed, the connection on the offered segment;
    /// declined, a fresh segment sent on the same Unix connection (the
    /// acceptor waits for it); a hang-up, ECONNREFUSED (the listener went
    /// away or refused us).
    pub(crate) fn settle(mut self, sock: BorrowedFd<'_>) -> Settled {
        if self.seg.as_ref().is_some_and(Segment::claimed) {
            pool::offer_claimed(self.peer);
            return self.finish();
        }
        let mut b = [0u8; 1];
        match handshake::recv_with_fd(sock, &mut b) {
            Ok((1, Some(memfd))) if b[0] == handshake::DECLINED => {
                // Declined with a new segment the acceptor made (and uses
                // already: its accept completed): ours, as the connector.
                self.declined();
                let fresh = match Segment::reattach(memfd, shmnet_ring::Role::Connector) {
                    Ok(s) => s,
                    Err(e) => {
                        log!(
                            warn,
                            "connect to {}: a bad segment from the acceptor ({e})",
                            self.peer
                        );
                        return Settled::Failed(Errno::CONNREFUSED);
                    }
                };
                // Not kept for reuse: its key is nobody's.
                self.pooled = false;
                drop(self.seg.replace(fresh));
                self.finish()
            }
            Ok((1, None)) if b[0] == handshake::DECLINED => {
                self.declined();
                let fresh = match new_segment(self.geo) {
                    Ok(s) => s,
                    Err(e) => return Settled::Failed(e),
                };
                self.hello.kind = Kind::Connect;
                self.hello.key = pool::new_key();
                if handshake::send(sock, &self.hello, fresh.fd()).is_err() {
                    return Settled::Failed(Errno::CONNREFUSED);
                }
                // The offered one is nobody's now: unmapped, not withdrawn.
                drop(self.seg.replace(fresh));
                self.finish()
            }
            Ok(_) => Settled::Failed(Errno::CONNREFUSED),
            Err(Errno::AGAIN | Errno::INTR) => {
                if self.seg.as_ref().is_some_and(Segment::claimed) {
                    pool::offer_claimed(self.peer);
                    self.finish()
                } else {
                    Settled::Waiting(self)
                }
            }
            Err(_) => Settled::Failed(Errno::CONNREFUSED),
        }
    }

    /// The acceptor did not answer in time: the offer withdrawn (unless it
    /// was claimed just now: then the connection), a new segment sent on
    /// a new Unix connection (the old one is abandoned: its acceptor, if it
    /// ever looks, finds the offer withdrawn). Offers pause for a while
    /// (`pool::cool_down`).
    pub(crate) fn expire(mut self) -> Settled {
        let Some(seg) = &self.seg else {
            return Settled::Failed(Errno::CONNREFUSED);
        };
        if !seg.withdraw() {
            pool::offer_claimed(self.peer);
            return self.finish();
        }
        log!(
            debug,
            "connect to {}: reuse offer unanswered; fresh segment",
            self.peer
        );
        pool::cool_down();
        let made = (|| -> Result<(OwnedFd, Segment), DialError> {
            // (A stale name of ours on the old connection makes the dial
            // take another port: `Reservation::dial_socket`.)
            let fresh = new_segment(self.geo)?;
            let local = self.local.as_mut().ok_or(Errno::CONNREFUSED)?;
            let sock = (self.redial)(local.dial_socket()?)?;
            self.hello.addr = local.addr;
            self.hello.kind = Kind::Connect;
            self.hello.key = pool::new_key();
            handshake::send(sock.as_fd(), &self.hello, fresh.fd()).map_err(refused)?;
            Ok((sock, fresh))
        })();
        let (sock, fresh) = match made {
            Ok(m) => m,
            Err(DialError::Os(e)) => return Settled::Failed(e),
            Err(_) => return Settled::Failed(Errno::CONNREFUSED),
        };
        drop(self.seg.replace(fresh));
        let _ =
            rustix::net::sockopt::set_socket_send_buffer_size(&sock, super::doorbell::BELL_SNDBUF);
        match self.finish() {
            Settled::Done(conn) => Settled::Redialed(sock, conn),
            other => other,
        }
    }

    /// Our offer was declined (`pool::offer_declined`).
    fn declined(&self) {
        if let Some(seg) = &self.seg {
            pool::offer_declined(self.peer, seg.acceptor_pid());
        }
    }

    /// The connection on the segment the acceptor now holds too.
    fn finish(mut self) -> Settled {
        let (Some(seg), Some(local)) = (self.seg.take(), self.local.take()) else {
            return Settled::Failed(Errno::CONNREFUSED);
        };
        let ticket = self.pooled.then_some(pool::Ticket {
            key: self.hello.key,
            generation: self.generation,
            side: pool::Side::Connector { dest: self.peer },
        });
        let bell = Bell::sized(None, self.sndbuf);
        match Connection::new(seg, self.hello.addr, self.peer, bell, Some(local), ticket) {
            Ok(mut conn) => {
                conn.opts = std::mem::take(&mut self.opts);
                Settled::Done(conn)
            }
            Err(e) => Settled::Failed(e),
        }
    }
}

/// Offers waiting for their acceptor in this process (`Offered`s alive).
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Whether a non-blocking connect of this process waits for its acceptor
/// (our waits then wake up to give up on it in time: `connecting`).
pub(crate) fn offers_waiting() -> bool {
    WAITING.load(Ordering::Relaxed) > 0
}

impl Drop for Offered {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
        // Unanswered and given up (the fd closed): an acceptor that looks
        // later finds it withdrawn and declines to a closed connection.
        if let Some(seg) = &self.seg {
            seg.withdraw();
        }
    }
}

/// `make`, once more after giving back the memfds kept for exec if it ran
/// out of fds (`spare_fds`).
fn with_room<T>(
    make_room: fn() -> bool,
    mut make: impl FnMut() -> Result<T, DialError>,
) -> Result<T, DialError> {
    match make() {
        Err(DialError::Os(Errno::MFILE)) if make_room() => make(),
        r => r,
    }
}

/// The handshake's refusal: the listener went away between connect and
/// send.
fn refused(_: Errno) -> DialError {
    DialError::Os(Errno::CONNREFUSED)
}

/// Offers the acceptor a segment we shared with it before (`Kind::Reuse`)
/// on `sock` and waits for its verdict: accepted, the offered segment;
/// declined, a fresh one on the same connection; unanswered, a fresh one on
/// a new connection. Returns the connection, its segment and its doorbell.
fn offer_reuse(
    dial: &dyn Fn(Option<OwnedFd>) -> Result<OwnedFd, DialError>,
    local: &mut Reservation,
    mut sock: OwnedFd,
    mut seg: Segment,
    hello: &mut Message,
    geo: Geometry,
    nonblocking: bool,
) -> Result<(OwnedFd, Segment, Arc<Bell>), DialError> {
    hello.kind = Kind::Reuse;
    handshake::send(sock.as_fd(), hello, None).map_err(refused)?;
    // Set up our end while the acceptor wakes up.
    rustix::io::ioctl_fionbio(&sock, false)?;
    let mut bell = Bell::new(sock.as_fd(), None);
    // The verdict comes once the application accepts: normally within
    // microseconds. An acceptor that does not accept until we do something
    // else gets a fresh connection after a short wait.
    let patience = Duration::from_micros(if nonblocking { 500 } else { 2000 });
    // A yield on a busy CPU gives it away for a scheduler slice (1 - 4 ms:
    // a busy epoll server beside us made connects 40x slower), so only
    // while spinning helps (`spin_helps`: no more runnable threads than
    // CPUs); otherwise poll, which the verdict's byte wakes at once.
    let spin = if crate::sockets::wait::spin_helps() {
        Duration::from_micros(100)
    } else {
        Duration::ZERO
    };
    let verdict = match handshake::recv_verdict(sock.as_fd(), spin, patience)? {
        None if seg.withdraw() => None,
        // Claimed just now: the acceptor sends its answer next.
        None => handshake::recv_verdict(sock.as_fd(), spin, Duration::from_secs(1))?,
        v => v,
    };
    match verdict {
        Some(handshake::ACCEPTED) => pool::offer_claimed(hello.dest),
        Some(_) => pool::offer_declined(hello.dest, seg.acceptor_pid()),
        None => {}
    }
    match verdict {
        Some(handshake::ACCEPTED) => {}
        Some(_) => {
            // Declined: a new segment, on the same connection.
            seg = new_segment(geo)?;
            hello.kind = Kind::Connect;
            hello.key = pool::new_key();
            handshake::send(sock.as_fd(), hello, seg.fd()).map_err(refused)?;
        }
        None => {
            // Withdrawn: this connection is abandoned (the acceptor
            // declines it if it ever looks); a new one.
            log!(
                debug,
                "connect to {}: reuse offer unanswered; fresh segment",
                hello.dest
            );
            pool::cool_down();
            seg = new_segment(geo)?;
            hello.kind = Kind::Connect;
            hello.key = pool::new_key();
            // Closed first: the new socket takes its local name.
            drop(sock);
            sock = dial(local.dial_socket()?)?;
            hello.addr = local.addr;
            bell = Bell::new(sock.as_fd(), None);
            handshake::send(sock.as_fd(), hello, seg.fd()).map_err(refused)?;
            rustix::io::ioctl_fionbio(&sock, false)?;
        }
    }
    // Back in the application's mode (`connected` takes it as it is): a
    // non-blocking connect left blocking made its next recv wait forever
    // (re-review of decision 32, with the switch off).
    if nonblocking {
        rustix::io::ioctl_fionbio(&sock, true)?;
    }
    Ok((sock, seg, bell))
}
