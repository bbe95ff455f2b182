//! Listeners, in both modes: the application's listening fd is an epoll
//! instance holding everything a connection can arrive through.
//!
//! ```text
//!   app fd N ──> epoll instance ─┬─> kernel TCP listener     (default mode: plain clients)
//!                                ├─> rendezvous socket(s)    (preloaded clients)
//!                                └─> parked rendezvous connections, one-shot
//! ```
//!
//! One kernel object, readable when any of them has something, so the
//! application's single poll/epoll/select registration and its one accept
//! loop see every kind. Everything else a default-mode listener is asked
//! (getsockname, getsockopt, setsockopt, listen again, shutdown) goes to
//! its kernel TCP listener, so the answers and the port space are the
//! kernel's.
//!
//! **accept never waits long for a connector** (docs/security.md: at
//! most `ARRIVAL_PATIENCE` per call, for admitted connectors, within a
//! share of the listener's time, `WAIT_SHARE_US_PER_MS`). A rendezvous
//! connection is visible before its connect message arrives; one whose
//! message is not there yet is *parked*: registered one-shot in the epoll
//! instance (it wakes the application when the message arrives, or when it
//! hangs up) and sent into a queue (a datagram socket pair carrying its fd),
//! from which every process sharing the listener (a forked server) can take
//! it — a parked connection kept in one process's memory would be invisible
//! to the others, and the one-shot registration keeps its readability from
//! waking anyone again once it has been seen. At most `PARKED_MAX` are
//! parked; one idle for `PARK_PATIENCE` is dropped at the next look, one
//! that sends a short message, garbage or hangs up at once.
//!
//! Here the listener itself; `calls::listen` makes one (listen(2)) and
//! puts it behind the application's fd. Its accept path: `accept` (one
//! look at every member, waiting as the kernel's accept would),
//! `patience` (how long it waits for a late message), `admission` (the
//! handshake, and who may connect), `park` (the parking queue). And
//! `bound`: a socket bound to an emulated address, not yet listening.
#![forbid(unsafe_code)]

mod accept;
mod admission;
mod bound;
pub(crate) mod early;
mod park;
mod patience;

pub(crate) use accept::Accepted;
pub(crate) use bound::Bound;

use core::ffi::c_int;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicBool;

use rustix::event::epoll;
use rustix::io::Errno;

use crate::platform::internal_fd::InternalFd;
use crate::platform::real::Action;
use crate::sockets::options_store::Options;
use crate::transport::parking::{monotonic_ms, Parking, Scope};
use crate::transport::rendezvous::{HostName, Reservation};

/// epoll data of the instance's members.
const TCP: u64 = 0;
const RENDEZVOUS: u64 = 1;
const PARKED: u64 = 2;
/// The parking queue itself, watched (level-triggered) only while the
/// process has no fd to take a parked connection with.
const QUEUE: u64 = 3;
/// The mark of a listener shut down (`shut_down`): always readable.
const SHUT: u64 = 4;

/// A listening Unix socket through which connectors reach the listener.
pub(crate) struct Rendezvous {
    fd: InternalFd,
    scope: Scope,
    /// A name in SHMNET_DIR (removed with the listener), or the
    /// reservation of an emulated address.
    _name: Option<HostName>,
    _reservation: Option<Reservation>,
}

pub(crate) struct Listener {
    /// The bound address (the wildcard, for a default-mode listener bound
    /// to it).
    pub local: SocketAddr,
    /// The kernel TCP listener (default mode).
    tcp: Option<InternalFd>,
    rendezvous: Vec<Rendezvous>,
    /// Policy hints (see `policy`): held, never read.
    _hints: Vec<InternalFd>,
    parking: Parking,
    /// The effective uid that listened: whom the policy speaks for.
    owner: u32,
    /// Which kind accept() tries first next time (neither starves).
    shm_first: AtomicBool,
    /// The parking queue is a member (see `QUEUE`).
    queue_watched: AtomicBool,
    /// An IPv6 default-mode listener with IPV6_V6ONLY: no IPv4 peers.
    v6only: bool,
    /// It answers as the namespace's gateway too (`SHMNET_GATEWAY`): any
    /// destination is its to accept (docs/design/gateway.md).
    gateway: bool,
    /// The network namespace it listens in (`netlink::in_namespace`): the
    /// process may move to another one later.
    namespace: u32,
    /// Options of an emulated listener (a default-mode one asks its
    /// kernel listener).
    pub opts: Options,
    refusal_logged: AtomicBool,
    /// A rendezvous could not be registered again in the instance (see
    /// `accept_new`): every accept looks at it, and tries again.
    unwatched: AtomicBool,
    /// Threads re-registering a rendezvous (`rearm`).
    rearming: std::sync::atomic::AtomicU32,
    /// Waiting for late messages (`ARRIVAL_PATIENCE`) left to this
    /// listener, in microseconds, and when it was last refilled
    /// (CLOCK_MONOTONIC ms): see `WAIT_SHARE`.
    wait_budget_us: std::sync::atomic::AtomicU64,
    budget_at_ms: std::sync::atomic::AtomicU64,
    /// Published for `shmnet ss` (`platform::status`).
    pub(crate) status: crate::platform::status::Published,
    /// Shut down for reading (`shut_down`): the mark in the instance.
    shut: crate::platform::lock::Mutex<Option<InternalFd>>,
}

impl Rendezvous {
    /// A rendezvous of this network namespace (an abstract name).
    pub(crate) fn local(fd: InternalFd) -> Rendezvous {
        Rendezvous {
            fd,
            scope: Scope::Local,
            _name: None,
            _reservation: None,
        }
    }

    /// A rendezvous in SHMNET_DIR, holding its name there.
    pub(crate) fn named(fd: InternalFd, name: HostName) -> Rendezvous {
        Rendezvous {
            fd,
            scope: Scope::Host,
            _name: Some(name),
            _reservation: None,
        }
    }

    /// A rendezvous in SHMNET_DIR bound to an emulated address, holding its
    /// reservation.
    pub(crate) fn reserved(fd: InternalFd, reservation: Reservation) -> Rendezvous {
        Rendezvous {
            fd,
            scope: Scope::Host,
            _name: None,
            _reservation: Some(reservation),
        }
    }
}

/// What a listener is made of (see `Listener`'s fields).
pub(crate) struct Parts {
    pub local: SocketAddr,
    pub tcp: Option<InternalFd>,
    pub rendezvous: Vec<Rendezvous>,
    pub hints: Vec<InternalFd>,
    pub opts: Options,
    pub owner: u32,
    pub v6only: bool,
    pub gateway: bool,
}

fn fail<R>(e: Errno) -> Action<R> {
    Action::Fail(e.raw_os_error())
}

/// A socket's inode number (0 if unknown): how `shmnet ss` finds its queue.
#[allow(clippy::unnecessary_cast)] // st_ino's type differs between architectures
fn inode(fd: BorrowedFd<'_>) -> u64 {
    rustix::fs::fstat(fd).map_or(0, |st| st.st_ino as u64)
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

impl Listener {
    /// Builds the epoll instance around the listening members (the
    /// parking queue is made on first need); the instance is non-blocking if the application's
    /// fd was (`nonblocking`). `calls::listen` puts the instance on the
    /// application's fd number.
    ///
    /// Returns the instance too, for the caller to put on the
    /// application's fd number and close: the listener keeps no reference
    /// of its own (an fd the application's `ulimit -n` would pay for);
    /// each call on it works on the application's fd it came through.
    pub(crate) fn new(parts: Parts, nonblocking: bool) -> Result<(Listener, OwnedFd), Errno> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        if let Some(tcp) = &parts.tcp {
            epoll::add(
                &ep,
                tcp,
                epoll::EventData::new_u64(TCP),
                epoll::EventFlags::IN,
            )?;
        }
        for r in &parts.rendezvous {
            // (One inherited across an exec may be retired: review s35tail #2.)
            epoll::add(
                &ep,
                &r.fd,
                epoll::EventData::new_u64(RENDEZVOUS),
                rendezvous_flags(r.fd.as_fd()),
            )?;
        }
        if nonblocking {
            let efl = rustix::fs::fcntl_getfl(&ep)?;
            rustix::fs::fcntl_setfl(&ep, efl | rustix::fs::OFlags::NONBLOCK)?;
        }
        let parking = Parking::new();
        let status = crate::platform::status::listener(
            parts.local,
            parts.tcp.as_ref().map_or(0, |t| inode(t.as_fd())),
            std::array::from_fn(|i| parts.rendezvous.get(i).map_or(0, |r| inode(r.fd.as_fd()))),
        );
        let listener = Listener {
            local: parts.local,
            tcp: parts.tcp,
            rendezvous: parts.rendezvous,
            _hints: parts.hints,
            parking,
            owner: parts.owner,
            shm_first: AtomicBool::new(true),
            queue_watched: AtomicBool::new(false),
            v6only: parts.v6only,
            gateway: parts.gateway,
            namespace: crate::platform::netlink::namespace_epoch(),
            opts: parts.opts,
            refusal_logged: AtomicBool::new(false),
            unwatched: AtomicBool::new(false),
            rearming: std::sync::atomic::AtomicU32::new(0),
            wait_budget_us: std::sync::atomic::AtomicU64::new(patience::WAIT_BUDGET_MAX_US),
            budget_at_ms: std::sync::atomic::AtomicU64::new(monotonic_ms()),
            status,
            shut: crate::platform::lock::Mutex::new(None),
        };
        Ok((listener, ep))
    }

    /// The application's fd number, for `shmnet ss`.
    pub(crate) fn published_fd(&self, fd: c_int) {
        self.status.set_fd(fd);
    }

    /// The kernel TCP listener, for the calls that go to it.
    pub(crate) fn tcp(&self) -> Option<BorrowedFd<'_>> {
        self.tcp.as_ref().map(|t| t.as_fd())
    }

    /// This listener's rendezvous socket for a process of `uid` joining
    /// its SO_REUSEPORT group (see `calls::listen::join_reuseport_group`):
    /// only if `uid` listened, with SO_REUSEPORT.
    pub(crate) fn group_socket(&self, uid: u32) -> Option<OwnedFd> {
        (self.owner == uid && reuses_port(&self.opts))
            .then(|| self.local_rendezvous().and_then(|fd| dup_owned(fd).ok()))
            .flatten()
    }

    /// What goes to another process in place of an emulated listener's fd
    /// (sendmsg SCM_RIGHTS, `calls::passing`): its listening Unix socket
    /// of this namespace, which a preloaded receiver recognises by its
    /// name and listens behind (as an exec'd program does). None for a
    /// default-mode listener (its kernel listener goes) or a rendezvous
    /// in SHMNET_DIR.
    pub(crate) fn passable_rendezvous(&self) -> Option<OwnedFd> {
        if self.tcp.is_some() {
            return None;
        }
        self.local_rendezvous().and_then(|fd| dup_owned(fd).ok())
    }

    /// The socket whose fstat answers for the listener's fd (an epoll
    /// instance, which `S_ISSOCK` checks take for no socket: node's
    /// `uv_guess_handle` of a listener it received): its kernel listener,
    /// or its listening Unix socket.
    pub(crate) fn stat_socket(&self) -> Option<BorrowedFd<'_>> {
        self.tcp
            .as_ref()
            .or_else(|| self.local_rendezvous())
            .or_else(|| self.rendezvous.first().map(|r| &r.fd))
            .map(|fd| fd.as_fd())
    }

    /// The rendezvous of this network namespace.
    fn local_rendezvous(&self) -> Option<&InternalFd> {
        self.rendezvous
            .iter()
            .find(|r| r.scope == Scope::Local)
            .map(|r| &r.fd)
    }

    /// In a forked child: a parent thread may have held a lock.
    pub(crate) fn reset_after_fork(&self) {
        self.opts.reset_after_fork();
        self.parking.reset_after_fork();
        self.status.after_fork_child();
    }

    /// What the listener is made of follows the application fd's
    /// close-on-exec flag (set_inheritable, F_SETFD, FIOCLEX/FIONCLEX), so
    /// that a program exec'd finds it behind the fd (see `calls::exec`).
    pub(crate) fn set_cloexec(&self, cloexec: bool) {
        let flags = if cloexec {
            rustix::io::FdFlags::CLOEXEC
        } else {
            rustix::io::FdFlags::empty()
        };
        if let Some(tcp) = &self.tcp {
            let _ = rustix::io::fcntl_setfd(tcp, flags);
        }
        // The rendezvous of this namespace goes too: the exec'd program
        // recognises its listener by it (see `calls::exec`), and keeps its name.
        for r in &self.rendezvous {
            if self.tcp.is_none() || r.scope == Scope::Local {
                let _ = rustix::io::fcntl_setfd(&r.fd, flags);
            }
        }
    }

    /// Its kernel listener went to a program that runs without the
    /// library (`calls::plain_exec`): the rendezvous of this namespace is
    /// shut down, for every process sharing it. Preloaded connectors are
    /// refused there from now on and take kernel TCP (the default mode's
    /// fallback), where whoever accepts from the kernel listener takes
    /// them, as it takes plain clients; otherwise they would wait in a
    /// backlog of the old processes that may no longer accept (nginx's
    /// WINCH), and be reset when the last of them exits (sweep s35). A
    /// shut-down listening socket polls readable forever: its registration
    /// in the instance `inst` (shared with every process of the listener)
    /// becomes one-shot, armed while connections queued before the
    /// shutdown wait in its backlog (`retired_flags`): accepts take them
    /// one by one, each arming it again (`arm_retired`), and nobody is
    /// woken once they are gone.
    pub(crate) fn retire_rendezvous(&self, inst: BorrowedFd<'_>) {
        if self.tcp.is_none() {
            return;
        }
        for r in self.rendezvous.iter().filter(|r| r.scope == Scope::Local) {
            let _ = rustix::net::shutdown(&r.fd, rustix::net::Shutdown::Read);
        }
        // (Its backlog unknown: armed once; the accept that finds it
        // empty leaves it disarmed.)
        self.arm_retired(inst, false);
    }

    /// The one-shot registration of a retired rendezvous armed again if
    /// connections still wait in its backlog (an accept consumed its event:
    /// review s35tail #1, queued connections stranded), else left
    /// disarmed (no wake-up for nothing: review s35tail #5). If its backlog
    /// cannot be asked (netlink refused by a seccomp filter, or the
    /// listener's owner in another network namespace), armed unless this
    /// accept found it `drained` (EAGAIN): at most one wake-up for nothing,
    /// not a spin (review sc-s35fix #1).
    pub(crate) fn arm_retired(&self, inst: BorrowedFd<'_>, drained: bool) {
        for r in self.rendezvous.iter().filter(|r| r.scope == Scope::Local) {
            if retired(r.fd.as_fd()) {
                let _ = epoll::modify(
                    inst,
                    &r.fd,
                    epoll::EventData::new_u64(RENDEZVOUS),
                    retired_flags(r.fd.as_fd(), !drained),
                );
            }
        }
    }

    /// Before fork: the parking queue is made now (parent and child share
    /// it: see `calls::process`). False if it could not be.
    pub(crate) fn share_queue(&self) -> bool {
        self.parking.share().is_ok()
    }

    /// listen(2) again (a new backlog): every half. After `shut_down`,
    /// the kernel listener listens again (and takes the preloaded
    /// clients too: the rendezvous refuses them, and they fall back); an
    /// emulated one cannot (its rendezvous stays shut down: EINVAL).
    pub(crate) fn relisten(&self, inst: BorrowedFd<'_>, backlog: c_int) -> Action<c_int> {
        match &self.tcp {
            Some(tcp) => match rustix::net::listen(tcp, backlog) {
                Ok(()) => {
                    if let Some(mark) = self.shut.lock().take() {
                        let _ = epoll::delete(inst, &mark);
                    }
                    Action::Done(0)
                }
                Err(e) => fail(e),
            },
            None if self.is_shut() => fail(Errno::INVAL),
            None => Action::Done(0),
        }
    }

    /// shutdown(2) for reading (SHUT_RD, SHUT_RDWR), as the kernel's
    /// closes a TCP listener (the caller shuts its kernel listener down):
    /// a mark always readable joins the instance `inst`, so that every
    /// accept, waiting or not, in every process sharing it, says EINVAL
    /// (`Ready::shut`); the rendezvous refuses connectors from now on
    /// (shut down), and the connections queued or parked there are
    /// dropped (the kernel resets them). An emulated SO_REUSEPORT group's
    /// rendezvous is the other members' too: left as it is, out of this
    /// instance.
    pub(crate) fn shut_down(&self, inst: BorrowedFd<'_>) {
        let mut shut = self.shut.lock();
        if shut.is_none() {
            let mark = rustix::event::eventfd(
                1,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            );
            match mark {
                Ok(mark) => {
                    let data = epoll::EventData::new_u64(SHUT);
                    let _ = epoll::add(inst, &mark, data, epoll::EventFlags::IN);
                    *shut = Some(InternalFd::new(mark));
                }
                // (No fd for it: a shut-down rendezvous says EINVAL to
                // accept too, once it is empty.)
                Err(e) => log!(debug, "shutdown of {}: no mark ({e})", self.local),
            }
        }
        drop(shut);
        let group = self.tcp.is_none() && reuses_port(&self.opts);
        for r in &self.rendezvous {
            if group {
                let _ = epoll::delete(inst, &r.fd);
                continue;
            }
            let _ = rustix::net::shutdown(&r.fd, rustix::net::Shutdown::Read);
            let flags = rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK;
            while let Ok(conn) = rustix::net::accept_with(&r.fd, flags) {
                drop(conn);
            }
            if self.tcp.is_some() {
                // Empty, and refusing from now on, but readable for ever:
                // disarmed, or the kernel listener listened again
                // (`relisten`) would stay readable with nothing to accept
                // (review s38/review-fix38 #1). Its own shutdown wakes
                // accept while it lasts.
                let data = epoll::EventData::new_u64(RENDEZVOUS);
                let _ = epoll::modify(inst, &r.fd, data, epoll::EventFlags::ONESHOT);
            }
        }
        if !group {
            while self.parking.pop_held().is_some() {}
            while let Ok(Some(_)) = self.parking.pop() {}
        }
    }

    /// Whether this process shut the listener down (`shut_down`).
    pub(crate) fn is_shut(&self) -> bool {
        self.shut.lock().is_some()
    }
}

/// Whether SO_REUSEPORT was set on a socket before it became ours.
pub(crate) fn reuses_port(opts: &Options) -> bool {
    opts.get_int(libc::SOL_SOCKET, libc::SO_REUSEPORT)
        .is_some_and(|v| v != 0)
}

/// A second owned fd for the same socket (the O_NONBLOCK and listen()
/// apply to the open file both share).
pub(crate) fn dup_owned(fd: &InternalFd) -> Result<OwnedFd, Errno> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0)
}

/// A rendezvous shut down (`Listener::retire_rendezvous`, maybe by another
/// process sharing it): registered one-shot, never level-triggered again.
pub(crate) fn retired(fd: BorrowedFd<'_>) -> bool {
    let mut p = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::RDHUP,
    )];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut p, Some(&zero)).is_ok_and(|n| n > 0)
        && p[0].revents().contains(rustix::event::PollFlags::RDHUP)
}

/// How a rendezvous is registered in a listener's instance:
/// level-triggered, or as `retired_flags` once it is retired.
pub(crate) fn rendezvous_flags(fd: BorrowedFd<'_>) -> epoll::EventFlags {
    if retired(fd) {
        retired_flags(fd, true)
    } else {
        epoll::EventFlags::IN
    }
}

/// A retired rendezvous polls readable forever: one-shot (level-triggered,
/// every waiter would spin), armed only while its backlog holds
/// connections (or, if that cannot be asked, as `unknown_arms` says); with
/// RDHUP, which its event carries and no live listening socket's does, so
/// that `accept` knows to arm it again after taking one.
pub(crate) fn retired_flags(fd: BorrowedFd<'_>, unknown_arms: bool) -> epoll::EventFlags {
    let armed = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
    match crate::platform::netlink::unix_backlog(fd) {
        Ok(Some(0)) => epoll::EventFlags::ONESHOT,
        Ok(Some(_)) => armed,
        _ if unknown_arms => armed,
        _ => epoll::EventFlags::ONESHOT,
    }
}
