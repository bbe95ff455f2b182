//! accept4(2) on a listener: one look at every member (`step`), kernel
//! TCP and shared memory in turn, waiting as the kernel's accept would;
//! new rendezvous connections taken as far as their handshake goes now.
//! What it takes goes back to the caller (`Accepted`), who registers it.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::SocketFlags;

use crate::platform::sys::{self, AddrOut};
use crate::sockets::conn::Connection;
use crate::transport::parking::{arrival, Arrival, Scope, State};

use super::admission::Step;
use super::patience::Patience;
use super::{Listener, Rendezvous, QUEUE, RENDEZVOUS, SHUT, TCP};

/// The most connections one accept takes from a rendezvous (parking or
/// dropping the ones it cannot return): a flood of connectors must not keep
/// a single accept call busy.
const TAKEN_MAX: usize = 64;

/// A connection accept took, for the caller to hand out: it checks the
/// new fd number against stale fd-table entries (`sockets::stale`), and
/// registers a shared-memory connection under it.
#[allow(clippy::large_enum_variant)] // one lives at a time, on the stack
pub(crate) enum Accepted {
    /// A kernel TCP connection: the fd the real accept4 returned (it wrote
    /// the peer's address).
    Tcp(c_int),
    /// A shared-memory connection, its fd's flags those of the accept4
    /// call.
    Shm(OwnedFd, Connection),
}

/// How far a new rendezvous connection got (`settle`).
#[allow(clippy::large_enum_variant)] // one lives at a time, on the stack
enum Taken {
    /// Its handshake is complete.
    Accepted(OwnedFd, Connection),
    /// Parked, or dropped.
    Gone,
    /// The connector withdrew its reuse offer: it dials again at once.
    Redial,
    /// Parked: taking its message needs fds the process does not have.
    NoRoom(Errno),
}

impl Listener {
    /// accept4(2): a connection from any half; blocking unless the
    /// application's fd is non-blocking, with SO_RCVTIMEO as the kernel's
    /// accept honours it, and signals as for a restartable call. What it
    /// took goes to the caller, who hands it out (`Accepted`).
    pub(crate) fn accept(
        &self,
        fd: c_int,
        peer: AddrOut<'_>,
        flags: c_int,
    ) -> Result<Accepted, Errno> {
        if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
            return Err(Errno::INVAL);
        }
        // A forked worker, or a daemon whose parent exited, accepts: the
        // listener is listed under this process too.
        self.status.use_here(|| (0, 0));
        let app = sys::borrow_fd(fd);
        // Whether to wait, and until when: asked only once the first look
        // found nothing (an fcntl, and in the default mode a getsockopt,
        // less per accept that finds a connection at once).
        let waits = || {
            let nonblocking = rustix::fs::fcntl_getfl(app)
                .is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
            let timeout = match &self.tcp {
                Some(tcp) => {
                    rustix::net::sockopt::socket_timeout(tcp, rustix::net::sockopt::Timeout::Recv)
                        .ok()
                        .flatten()
                }
                None => self.opts.timeout(libc::SO_RCVTIMEO),
            };
            (
                nonblocking,
                timeout.and_then(|t| std::time::Instant::now().checked_add(t)),
            )
        };
        let mut waiting: Option<(bool, Option<std::time::Instant>)> = None;
        // The instance this call works on, resolved once (as the kernel
        // resolves the fd at syscall entry) before the first wait: another
        // thread may close the application's fd meanwhile and the number
        // be reused (by an epoll set of the program's: we would wait on
        // it, and eat its events). Not before the first look, which costs
        // a non-blocking accept no system call more.
        let mut held: Option<OwnedFd> = None;
        loop {
            let inst = held.as_ref().map_or(app, |h| h.as_fd());
            match self.step(inst, peer, flags) {
                Err(Errno::AGAIN) => {}
                // The copy holds the last free number, which the
                // connection needs (decision 58): given back, and one
                // look on the application's number if it is still this
                // listener's (as a non-blocking accept looks).
                Err(Errno::MFILE) if held.is_some() && self.is_instance(app) => {
                    held = None;
                    match self.step(app, peer, flags) {
                        Err(Errno::AGAIN) => {}
                        r => return r,
                    }
                }
                r => return r,
            }
            let (nonblocking, deadline) = *waiting.get_or_insert_with(waits);
            if nonblocking {
                return Err(Errno::AGAIN);
            }
            if held.is_none() {
                held = self.hold(app)?;
            }
            let inst = match &held {
                Some(h) => h.as_fd(),
                // No fd for a copy (EMFILE): the number, looked at
                // before each wait.
                None if self.is_instance(app) => app,
                None => return Err(Errno::BADF),
            };
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return Err(Errno::AGAIN),
                },
            };
            // Outside the library (`guard::suspended`): a handler that
            // interrupts the wait runs as the program's, and may use our
            // sockets or siglongjmp out (no lock of ours is held here).
            let woke = crate::platform::guard::suspended(|| {
                crate::platform::cancel::sleep(|| {
                    crate::transport::handshake::wait_readable(inst, left)
                })
            });
            match woke.unwrap_or(Err(Errno::INTR)) {
                Ok(_) => {}
                // With a receive timeout the kernel never restarts accept
                // (signal(7)): EINTR even under SA_RESTART.
                Err(Errno::INTR) if deadline.is_none() && crate::platform::cancel::restarts() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A private copy of the application's fd `app`, if it is still this
    /// listener's instance (else EBADF: it was closed, its number taken
    /// by another file); None if there is no fd for a copy.
    fn hold(&self, app: BorrowedFd<'_>) -> Result<Option<OwnedFd>, Errno> {
        match rustix::io::fcntl_dupfd_cloexec(app, 0) {
            Ok(h) if self.is_instance(h.as_fd()) => Ok(Some(h)),
            Ok(_) => Err(Errno::BADF),
            Err(Errno::MFILE | Errno::NFILE | Errno::NOMEM) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `fd` is this listener's epoll instance. Every epoll
    /// instance has the same inode (anon_inode), so the test is
    /// membership: modifying a member's registration to what it is
    /// already answers ENOENT in any other set, changing nothing there.
    fn is_instance(&self, fd: BorrowedFd<'_>) -> bool {
        let member = |m: BorrowedFd<'_>, data| {
            epoll::modify(
                fd,
                m,
                epoll::EventData::new_u64(data),
                epoll::EventFlags::IN,
            )
            .is_ok()
        };
        if let Some(tcp) = &self.tcp {
            return member(tcp.as_fd(), TCP);
        }
        // A rendezvous may be out of the instance a moment (`rearm`), or
        // for a while (`unwatched`): nothing to tell it by then, taken to
        // be.
        self.rendezvous
            .iter()
            .any(|r| member(r.fd.as_fd(), RENDEZVOUS))
            || self.rearming.load(Ordering::SeqCst) > 0
            || self.unwatched.load(Ordering::Relaxed)
    }

    /// One look at every half, without waiting.
    fn step(
        &self,
        inst: BorrowedFd<'_>,
        peer: AddrOut<'_>,
        flags: c_int,
    ) -> Result<Accepted, Errno> {
        let ready = self.ready(inst);
        if ready.shut {
            // Shut down (`shut_down`): the kernel's answer.
            return Err(Errno::INVAL);
        }
        let taken = self.take(inst, peer, flags, &ready);
        if ready.retired {
            // Its one-shot event was consumed: armed again while others
            // wait behind the one taken (or, its backlog unknown, unless
            // this accept found it empty).
            self.arm_retired(inst, ready.drained.get());
        }
        taken
    }

    /// `step` once it knows which members have something.
    fn take(
        &self,
        inst: BorrowedFd<'_>,
        peer: AddrOut<'_>,
        flags: c_int,
        ready: &Ready,
    ) -> Result<Accepted, Errno> {
        let shm_first = self.shm_first.fetch_xor(true, Ordering::Relaxed);
        // Out of fds for a shared-memory connection: a kernel one may still
        // be taken (it needs fewer); else the kernel's errno.
        let mut no_room = None;
        for shm in [shm_first, !shm_first] {
            if shm {
                match self.accept_shm(inst, ready) {
                    Ok(Some((conn, c))) => return self.finish(conn, c, flags),
                    Ok(None) => {}
                    Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::NOBUFS)) => {
                        no_room = Some(e)
                    }
                    Err(e) => return Err(e),
                }
            } else if ready.tcp {
                match self.accept_tcp(peer, flags) {
                    Err(Errno::AGAIN) => {}
                    r => {
                        if ready.parked && !shm_first {
                            // A parked connection's one-shot event was
                            // consumed and not acted on: armed again, or
                            // nobody would be woken for it.
                            let _ = self.unpark(inst, false);
                        }
                        return r.map(Accepted::Tcp);
                    }
                }
            }
        }
        Err(no_room.unwrap_or(Errno::AGAIN))
    }

    /// Which members have something, from the instance itself (one system
    /// call; it also consumes the one-shot events of parked connections,
    /// which is what keeps them from waking anyone twice).
    fn ready(&self, inst: BorrowedFd<'_>) -> Ready {
        let mut buf: Vec<epoll::Event> = Vec::with_capacity(32);
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut ready = Ready::default();
        if self.unwatched.load(Ordering::Relaxed) {
            ready.rendezvous = true;
            let data = epoll::EventData::new_u64(RENDEZVOUS);
            let again = self.rendezvous.iter().all(|r| {
                match epoll::add(inst, &r.fd, data, super::rendezvous_flags(r.fd.as_fd())) {
                    Ok(()) | Err(Errno::EXIST) => true,
                    Err(_) => false,
                }
            });
            if again {
                self.unwatched.store(false, Ordering::Relaxed);
            }
        }
        // (A Vec is a buffer of its *length* to rustix: its spare capacity
        // is what epoll_wait may fill.)
        match epoll::wait(inst, rustix::buffer::spare_capacity(&mut buf), Some(&zero)) {
            Ok(_) => {
                if buf.len() == buf.capacity() {
                    // More may be pending than we read: look at the
                    // listening members too.
                    ready.tcp = true;
                    ready.rendezvous = true;
                }
                for ev in &buf {
                    match ev.data.u64() {
                        TCP => ready.tcp = true,
                        RENDEZVOUS => {
                            ready.rendezvous = true;
                            let flags = ev.flags;
                            ready.retired |= flags.contains(epoll::EventFlags::RDHUP);
                        }
                        QUEUE => {
                            ready.parked = true;
                            self.queue_watched.store(true, Ordering::Relaxed);
                        }
                        SHUT => ready.shut = true,
                        _ => ready.parked = true,
                    }
                }
            }
            // Cannot tell: look at everything.
            Err(_) => {
                ready.tcp = true;
                ready.rendezvous = true;
                ready.parked = true;
            }
        }
        ready
    }

    /// A connection from the kernel listener, its peer's address stored
    /// where the caller asked.
    fn accept_tcp(&self, peer: AddrOut<'_>, flags: c_int) -> Result<c_int, Errno> {
        let Some(tcp) = &self.tcp else {
            return Err(Errno::AGAIN);
        };
        peer.accept4(tcp.as_fd(), flags)
            .map_err(Errno::from_raw_os_error)
    }

    /// `accept_shm` after the parked connections: new ones, from the
    /// rendezvous.
    pub(super) fn accept_new(
        &self,
        inst: BorrowedFd<'_>,
        ready: &Ready,
        patience: &mut Patience,
    ) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        if ready.parked || self.parking.sweep_due() {
            if let Some(found) = self.unpark(inst, true)? {
                return Ok(Some(found));
            }
        }
        if !ready.rendezvous {
            return Ok(None);
        }
        // This thread's io_uring ring, for an accept at the fd limit: made
        // once the process is near its limit, while there is a number for
        // it a moment (tried again while there is none).
        crate::platform::pocket::prepare();
        let mut taken = 0;
        for r in &self.rendezvous {
            // A connector that withdrew a reuse offer dials again at once:
            // its new connection is worth the wait as its message is.
            let mut redial = false;
            loop {
                if taken >= TAKEN_MAX {
                    self.rearm(inst, r);
                    return Ok(None);
                }
                taken += 1;
                // Without a parking queue, a connection taken with no room
                // for its memfd would have nowhere to wait but an fd of
                // ours: room is made first (`with_room`).
                // At the limit, with this thread's io_uring ring (made by
                // an accept that found room), the connection is taken all
                // the same: it lends its number to its memfd (decision 58).
                let spare = match self.parking.pair() {
                    Some(_) => None,
                    None => match rustix::io::fcntl_dupfd_cloexec(&r.fd, 0) {
                        Ok(fd) => Some(fd),
                        Err(Errno::MFILE) if crate::platform::pocket::ready() => None,
                        Err(Errno::MFILE) if self.only_held_fill(r) => break,
                        Err(e) => return Err(e),
                    },
                };
                if let Some(fd) = &spare {
                    crate::platform::pocket::saw(fd.as_raw_fd());
                }
                let mut spare = spare;
                let mut accepted =
                    rustix::net::accept_with(&r.fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK);
                if matches!(accepted, Err(Errno::MFILE))
                    && spare.is_some()
                    && crate::platform::pocket::ready()
                {
                    // The room was the last free number: the connection
                    // takes it, and lends it to its memfd (decision 58).
                    if let Some(fd) = spare.take() {
                        sys::close_fd(fd);
                    }
                    accepted = rustix::net::accept_with(
                        &r.fd,
                        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                    );
                }
                let conn = match accepted {
                    Ok(c) => {
                        crate::platform::pocket::saw(c.as_raw_fd());
                        c
                    }
                    Err(Errno::AGAIN) if redial && patience.wait(r.fd.as_fd()) => {
                        redial = false;
                        continue;
                    }
                    Err(Errno::AGAIN) => {
                        if r.scope == Scope::Local {
                            ready.drained.set(true);
                        }
                        break;
                    }
                    Err(Errno::CONNABORTED | Errno::INTR) => break,
                    // (The kernel's accept4 asks for a number before it
                    // looks at the queue.)
                    Err(Errno::MFILE) if self.only_held_fill(r) => break,
                    // Out of fds or memory: the kernel's answer, whichever
                    // rendezvous (a SHMNET_DIR one said EAGAIN, and spun).
                    Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                        return Err(e)
                    }
                    // Shut down (`shut_down`, in another process
                    // sharing it) and empty: the kernel's answer.
                    Err(Errno::INVAL) => return Err(Errno::INVAL),
                    Err(e) if r.scope == Scope::Host => {
                        log!(debug, "accept on {}: {e}", self.local);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let (conn, mut room) = match spare {
                    Some(spare) => with_room(conn, spare)?,
                    None => (conn, None),
                };
                match self.settle(inst, conn, r.scope, patience, &mut room) {
                    Taken::Accepted(conn, c) => return Ok(Some((conn, c))),
                    Taken::Gone => {}
                    Taken::Redial => redial = true,
                    Taken::NoRoom(e) => return Err(e),
                }
            }
        }
        Ok(None)
    }

    /// Whether an EMFILE on `r` is only ours: a connection held in memory
    /// while its message is late keeps the number the application had free
    /// (a kernel listener's connection is not in its queue until it is
    /// established), and nothing is queued behind it. The kernel's accept
    /// would wait, or say EAGAIN, not EMFILE (found by isolation.rs
    /// `late_message_at_the_fd_limit`: a blocking accept said EMFILE and
    /// the next one returned the connection, no fd freed between).
    fn only_held_fill(&self, r: &Rendezvous) -> bool {
        self.parking.holds_any()
            && !crate::transport::handshake::wait_readable(
                r.fd.as_fd(),
                Some(std::time::Duration::ZERO),
            )
            .unwrap_or(true)
    }

    /// After `TAKEN_MAX`: the rest stay queued and the listener readable; a
    /// new edge for edge-triggered waiters (one that accepts until EAGAIN
    /// gets none for what was signalled already): the rendezvous registered
    /// again queues a fresh event when it is ready.
    fn rearm(&self, inst: BorrowedFd<'_>, r: &Rendezvous) {
        let data = epoll::EventData::new_u64(RENDEZVOUS);
        // (Out of the instance a moment: `is_instance` must not take that
        // for another set.)
        self.rearming.fetch_add(1, Ordering::SeqCst);
        // (A retired one stays one-shot: `rendezvous_flags`.)
        let flags = super::rendezvous_flags(r.fd.as_fd());
        if epoll::delete(inst, &r.fd).is_ok() && epoll::add(inst, &r.fd, data, flags).is_err() {
            // (ENOSPC, ENOMEM) Looked at by every accept, and
            // registered again, until that works (`ready`).
            self.unwatched.store(true, Ordering::Relaxed);
        }
        self.rearming.fetch_sub(1, Ordering::SeqCst);
    }

    /// A new rendezvous connection's handshake, as far as it goes now:
    /// waiting (from `patience`) for a late message, parking the
    /// connection if it stays late, dropping it if anything is wrong.
    fn settle(
        &self,
        inst: BorrowedFd<'_>,
        mut conn: OwnedFd,
        scope: Scope,
        patience: &mut Patience,
        room: &mut Option<OwnedFd>,
    ) -> Taken {
        let mut state = State::New;
        loop {
            match arrival(conn.as_fd()) {
                Arrival::Complete => match self.handshake(&mut conn, scope, state, room) {
                    Step::Done(c) => return Taken::Accepted(conn, c),
                    // Declined: the connector sends a fresh Connect
                    // at once.
                    Step::Pending(next) if patience.wait(conn.as_fd()) => state = next,
                    Step::Pending(next) => {
                        self.park(inst, conn, scope, next);
                        return Taken::Gone;
                    }
                    Step::Dropped => return Taken::Gone,
                    Step::Withdrawn => return Taken::Redial,
                    Step::NoRoom(e) => {
                        self.park(inst, conn, scope, state);
                        return Taken::NoRoom(e);
                    }
                    Step::Lost => {
                        // (Its number is not ours any more.)
                        let _ = std::os::fd::IntoRawFd::into_raw_fd(conn);
                        return Taken::Gone;
                    }
                },
                // Only for a connector the policy admits (the
                // kernel vouches for who connected before any
                // message): others are refused now.
                Arrival::Empty if !self.admits(conn.as_fd()) => return Taken::Gone,
                Arrival::Empty if patience.wait(conn.as_fd()) => {}
                Arrival::Empty => {
                    self.park(inst, conn, scope, state);
                    return Taken::Gone;
                }
                Arrival::Bad if state == State::Declined => {
                    log!(
                        debug,
                        "accept on {}: the connector withdrew its reuse offer",
                        self.local
                    );
                    return Taken::Redial;
                }
                Arrival::Bad => {
                    self.dropped("a short message or none");
                    return Taken::Gone;
                }
            }
        }
    }

    /// An accepted shared-memory connection with the flags of its accept4
    /// call and the listener's inheritable options, for the caller to
    /// hand to the application (`calls::endpoint::accept4`).
    fn finish(
        &self,
        conn: OwnedFd,
        connection: Connection,
        flags: c_int,
    ) -> Result<Accepted, Errno> {
        if flags & libc::SOCK_NONBLOCK == 0 {
            // (One system call: F_GETFL, F_SETFL was two.)
            rustix::io::ioctl_fionbio(&conn, false)?;
        }
        if flags & libc::SOCK_CLOEXEC == 0 {
            rustix::io::fcntl_setfd(&conn, rustix::io::FdFlags::empty())?;
        }
        crate::sockets::options_store::inherit_options(&self.opts, &connection.opts);
        Ok(Accepted::Shm(conn, connection))
    }
}

/// A connection just accepted, and `spare`, an fd taken before it to
/// prove room for its message's memfd: the connection on the lower of the
/// two numbers (accept's answer is the lowest free number, as the
/// kernel's), the other fd returned to be closed when the memfd comes.
/// One `dup3` more than looking for room after the accept, which would
/// find none with nowhere to put the connection but an fd of ours (a
/// kernel listener leaves it queued and uses no fd).
fn with_room(conn: OwnedFd, mut spare: OwnedFd) -> Result<(OwnedFd, Option<OwnedFd>), Errno> {
    use std::os::fd::AsRawFd;
    if conn.as_raw_fd() < spare.as_raw_fd() {
        return Ok((conn, Some(spare)));
    }
    rustix::io::dup3(&conn, &mut spare, rustix::io::DupFlags::CLOEXEC)?;
    Ok((spare, Some(conn)))
}

#[derive(Default)]
pub(super) struct Ready {
    pub(super) tcp: bool,
    pub(super) rendezvous: bool,
    pub(super) parked: bool,
    /// A retired rendezvous's one-shot event (RDHUP) was consumed.
    pub(super) retired: bool,
    /// The listener was shut down (`Listener::shut_down`).
    pub(super) shut: bool,
    /// This accept found this namespace's rendezvous empty (EAGAIN): a
    /// retired one whose backlog cannot be asked stays disarmed.
    pub(super) drained: std::cell::Cell<bool>,
}
