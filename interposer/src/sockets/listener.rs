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
#![deny(unsafe_code)]

use core::ffi::c_int;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use libc::{sockaddr, socklen_t};
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use shmnet_ring::Segment;

use crate::platform::config::Config;
use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::Mutex;
use crate::platform::policy::Peer;
use crate::platform::real::Action;
use crate::platform::{stats, sys};
use crate::sockets::conn::{Bell, Connection};
use crate::sockets::options_store::Options;
use crate::sockets::registry;
use crate::sockets::socket::{as_family, Socket};
use crate::transport::handshake::{self, Kind};
use crate::transport::parking::{
    arrival, monotonic_ms, Arrival, Parking, Record, Scope, State, PARK_PATIENCE,
};
use crate::transport::pool;
use crate::transport::rendezvous::{self, HostName, Reservation};

/// Parked connections per listener.
const PARKED_MAX: usize = 64;

/// epoll data of the instance's members.
const TCP: u64 = 0;
const RENDEZVOUS: u64 = 1;
const PARKED: u64 = 2;
/// The parking queue itself, watched (level-triggered) only while the
/// process has no fd to take a parked connection with.
const QUEUE: u64 = 3;

/// How long one accept waits, in all, for the message of connections it
/// takes from a rendezvous before parking them. The kernel's listener is
/// readable only once a connection is established; ours as soon as the
/// connector's connect() queued it, a few microseconds before its message
/// (sent right after) arrives — so without a short wait, an accept just
/// after epoll said readable would often say EAGAIN (servers log an error
/// per EAGAIN: memcached). Bounded, so that a connector that never sends
/// costs an accept at most this, once.
const ARRIVAL_PATIENCE: std::time::Duration = std::time::Duration::from_millis(2);

/// The waiting for late messages a listener may do, in microseconds per
/// millisecond (2%): a connector of an admitted user that connects and
/// stays silent cannot make a server spend more of its time in accept
/// than this; waits are a few microseconds when connectors are only late.
const WAIT_SHARE_US_PER_MS: u64 = 20;
/// The most of that saved up (ten full waits).
const WAIT_BUDGET_MAX_US: u64 = 20_000;

/// The most connections one accept takes from a rendezvous (parking or
/// dropping the ones it cannot return): a flood of connectors must not keep
/// a single accept call busy.
const TAKEN_MAX: usize = 64;

/// What is left of `ARRIVAL_PATIENCE` in one accept.
struct Patience {
    left: std::time::Duration,
}

impl Patience {
    /// Waits (sleeping, not spinning: on a busy machine the connector may
    /// need our CPU) for `conn` to become readable, from what is left;
    /// whether it did.
    fn wait(&mut self, conn: BorrowedFd<'_>) -> bool {
        if self.left.is_zero() {
            return false;
        }
        let start = std::time::Instant::now();
        let ready =
            crate::transport::handshake::wait_readable(conn, Some(self.left)).unwrap_or(false);
        self.left = self.left.saturating_sub(start.elapsed());
        ready
    }
}

/// A socket bound to an emulated partition address (`SHMNET_FALLBACK=never`)
/// that has not listened yet: it holds the address's name; listen() makes
/// it a listener, connect() a connection from that address.
pub(crate) struct Bound {
    pub local: SocketAddr,
    pub(crate) reservation: Mutex<Option<Reservation>>,
    /// The socket bound at the name in SHMNET_DIR (a non-local address);
    /// for a local one, the reservation's own socket.
    host_sock: Mutex<Option<InternalFd>>,
    pub opts: Options,
    /// The effective uid that bound (an SO_REUSEPORT group is one user's).
    owner: u32,
}

impl Bound {
    pub(crate) fn new(
        reservation: Reservation,
        host_sock: Option<InternalFd>,
        opts: Options,
    ) -> Bound {
        Bound {
            local: reservation.addr,
            reservation: Mutex::new(Some(reservation)),
            host_sock: Mutex::new(host_sock),
            opts,
            owner: euid(),
        }
    }

    pub(crate) fn reset_after_fork(&self) {
        self.reservation.reset_after_fork();
        self.host_sock.reset_after_fork();
        self.opts.reset_after_fork();
    }

    /// The socket holding the name (the application's fd is a dup of it).
    pub(crate) fn socket(&self) -> Option<OwnedFd> {
        if let Some(s) = self.host_sock.lock().as_ref() {
            return dup_owned(s).ok();
        }
        self.reservation
            .lock()
            .as_ref()
            .and_then(|r| r.socket().and_then(|s| dup_owned(s).ok()))
    }
}

struct Rendezvous {
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
    /// Our own reference to the epoll instance behind the application's fd.
    epoll: InternalFd,
    parking: Parking,
    /// The effective uid that listened: whom the policy speaks for.
    owner: u32,
    /// Which kind accept() tries first next time (neither starves).
    shm_first: AtomicBool,
    /// The parking queue is a member (see `QUEUE`).
    queue_watched: AtomicBool,
    /// An IPv6 default-mode listener with IPV6_V6ONLY: no IPv4 peers.
    v6only: bool,
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
    /// Waiting for late messages (`ARRIVAL_PATIENCE`) left to this
    /// listener, in microseconds, and when it was last refilled
    /// (CLOCK_MONOTONIC ms): see `WAIT_SHARE`.
    wait_budget_us: std::sync::atomic::AtomicU64,
    budget_at_ms: std::sync::atomic::AtomicU64,
}

fn fail<R>(e: Errno) -> Action<R> {
    Action::Fail(e.raw_os_error())
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A rendezvous listens with the largest backlog the namespace allows
/// (net.core.somaxconn, 4096 by default), whatever the application asked
/// for. Kernel TCP keeps a connector whose SYN found the accept queue full
/// trying (SYN retries), so every client of a briefly stalled server
/// connects in the end; a Unix connect to a full queue fails at once
/// (EAGAIN) instead. A queue as deep as the kernel permits anyone is the
/// kernel's behaviour for a listener that asked for it — connectors
/// complete at once and wait in the queue, as TCP's do when there is room.
/// (The application's backlog stays on its kernel TCP listener.)
const RENDEZVOUS_BACKLOG: c_int = c_int::MAX;

fn stream_listener(sock: &OwnedFd) -> Result<(), Errno> {
    let fl = rustix::fs::fcntl_getfl(sock)?;
    rustix::fs::fcntl_setfl(sock, fl | rustix::fs::OFlags::NONBLOCK)?;
    rustix::net::listen(sock, RENDEZVOUS_BACKLOG)
}

/// listen(2) under `SHMNET_FALLBACK=tcp`: the real listen, then, for an
/// IPv4/IPv6 stream socket bound to a partition address or the wildcard,
/// the listener. Not being able to make the shared-memory half is not an
/// error for the application (plain TCP still works): it is logged.
pub(crate) fn listen_tcp(fd: c_int, backlog: c_int, config: &Config) -> Action<c_int> {
    listen_tcp_with(fd, backlog, config, None)
}

/// `listen_tcp`, keeping `inherited` (the rendezvous of this kernel
/// listener, inherited across exec: it still holds the name, maybe shared
/// with the process that exec'd us) instead of binding a new one.
pub(crate) fn listen_tcp_with(
    fd: c_int,
    backlog: c_int,
    config: &Config,
    inherited: Option<InternalFd>,
) -> Action<c_int> {
    let sock = sys::borrow_fd(fd);
    let is_tcp = rustix::net::sockopt::socket_type(sock) == Ok(SocketType::STREAM)
        && matches!(
            rustix::net::sockopt::socket_domain(sock),
            Ok(AddressFamily::INET | AddressFamily::INET6)
        );
    if !is_tcp {
        return Action::Pass;
    }
    // An inherited listener listens already: its backlog is the process
    // that made it's (a program it runs must not change it).
    let adopting = inherited.is_some();
    if !adopting {
        if let Err(e) = rustix::net::listen(sock, backlog) {
            return fail(e);
        }
    }
    let Some(local) = sys::local_name(sock) else {
        crate::sockets::carry::done(fd);
        return Action::Done(0);
    };
    if !(config.is_partition_ip(local.ip()) || local.ip().is_unspecified()) {
        crate::sockets::carry::done(fd);
        return Action::Done(0);
    }
    match make_dual(fd, local, config, inherited) {
        Ok(()) => crate::sockets::readiness::replay_carried(fd, false),
        Err(e) => {
            crate::sockets::carry::done(fd);
            log!(
                warn,
                "listen on {local}: no shared-memory listener ({e}); kernel TCP only"
            );
        }
    }
    Action::Done(0)
}

fn make_dual(
    fd: c_int,
    local: SocketAddr,
    config: &Config,
    inherited: Option<InternalFd>,
) -> Result<(), Errno> {
    let adopting = inherited.is_some();
    let app = sys::borrow_fd(fd);
    // Connectors accept our rendezvous only from the kernel listener's
    // owner (SO_PEERCRED of the rendezvous is whoever listens on it, now).
    let owner = euid();
    let tcp_owner = rustix::fs::fstat(app)?.st_uid;
    if tcp_owner != owner {
        log!(
            info,
            "listen on {local}: the socket belongs to uid {tcp_owner} but uid {owner} listens: \
             kernel TCP only"
        );
        return Err(Errno::PERM);
    }
    let cookie = rustix::net::sockopt::socket_cookie(app)?;
    let name = rendezvous::cookie_name(cookie);
    let sock = match inherited {
        Some(sock) => sock,
        None => {
            let sock = rendezvous::bind_abstract(&name, SocketType::STREAM)?;
            stream_listener(&sock)?;
            InternalFd::new(sock)
        }
    };
    let mut hints = bind_hints(&name, config);
    let mut rv = vec![Rendezvous {
        fd: sock,
        scope: Scope::Local,
        _name: None,
        _reservation: None,
    }];
    let v6only = local.is_ipv6() && rustix::net::sockopt::ipv6_v6only(app).unwrap_or(false);
    for stem in host_stems(local, v6only, config) {
        match host_rendezvous(&stem, config, &mut hints) {
            Ok(r) => rv.push(r),
            // Somebody holds our name there: clients in other namespaces
            // will not find us (they use kernel TCP, or a listener they
            // trust — see lookup.rs).
            // (Adopting after exec, the process we came from holds it.)
            Err(Errno::ADDRINUSE) if adopting => {}
            Err(Errno::ADDRINUSE) => crate::platform::log::always(format_args!(
                "listen on {local}: {stem} in SHMNET_DIR is held by another process; \
                 clients in other network namespaces will use kernel TCP"
            )),
            Err(e) => log!(
                debug,
                "listen on {local}: no rendezvous {stem} in SHMNET_DIR ({e})"
            ),
        }
    }
    let tcp = InternalFd::dup(app)?;
    let fl = rustix::fs::fcntl_getfl(&tcp)?;
    // The listeners themselves never block us; the app's fd (the epoll
    // instance) carries the application's O_NONBLOCK from here on.
    rustix::fs::fcntl_setfl(&tcp, fl | rustix::fs::OFlags::NONBLOCK)?;
    let nonblocking = fl.contains(rustix::fs::OFlags::NONBLOCK);
    let mut listener = assemble(
        fd,
        local,
        Some(tcp),
        rv,
        hints,
        Options::default(),
        nonblocking,
        owner,
    )?;
    listener.v6only = v6only;
    log!(
        debug,
        "fd {fd}: listener on {local} (kernel TCP and {name})"
    );
    registry::insert(fd, Arc::new(Socket::Listener(listener))).map_err(|()| Errno::MFILE)
}

/// The names in SHMNET_DIR a default-mode listener on `local` takes, for
/// clients in other network namespaces: its partition address if that is
/// not loopback, or, for the wildcard, each such address of this namespace.
fn host_stems(local: SocketAddr, v6only: bool, config: &Config) -> Vec<String> {
    if !config.partitions.iter().any(|n| !n.addr().is_loopback()) {
        return Vec::new(); // loopback partitions only (the default)
    }
    let ips: Vec<std::net::IpAddr> = if local.ip().is_unspecified() {
        sys::local_addresses()
            .into_iter()
            .filter(|ip| match (local, ip) {
                (SocketAddr::V4(_), std::net::IpAddr::V4(_)) => true,
                (SocketAddr::V6(_), std::net::IpAddr::V6(_)) => true,
                (SocketAddr::V6(_), std::net::IpAddr::V4(_)) => !v6only,
                _ => false,
            })
            .collect()
    } else {
        vec![local.ip()]
    };
    ips.into_iter()
        .filter(|ip| !rendezvous::is_loopback(*ip) && config.is_partition_ip(*ip))
        .map(|ip| rendezvous::host_stem(SocketAddr::new(ip, local.port())))
        .collect()
}

fn host_rendezvous(
    stem: &str,
    config: &Config,
    hints: &mut Vec<InternalFd>,
) -> Result<Rendezvous, Errno> {
    let dir = crate::platform::safedir::checked()?;
    let name = HostName::reserve(dir, stem)?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    name.bind(&sock)?;
    stream_listener(&sock)?;
    for h in config.allow.hints() {
        if let Ok(fd) = name.bind_hint(&h) {
            hints.push(fd);
        }
    }
    Ok(Rendezvous {
        fd: InternalFd::new(sock),
        scope: Scope::Host,
        _name: Some(name),
        _reservation: None,
    })
}

/// Binds the policy's hint names next to the abstract `name`. A hint
/// somebody else already holds says the same thing (or lies to no effect:
/// the listener decides), so failures are ignored.
fn bind_hints(name: &str, config: &Config) -> Vec<InternalFd> {
    config
        .allow
        .hints()
        .iter()
        .filter_map(|h| {
            rendezvous::bind_abstract(&rendezvous::hint_name(name, h), SocketType::DGRAM).ok()
        })
        .map(InternalFd::new)
        .collect()
}

/// Whether SO_REUSEPORT was set on a socket before it became ours.
pub(crate) fn reuses_port(opts: &Options) -> bool {
    opts.get_int(libc::SOL_SOCKET, libc::SO_REUSEPORT)
        .is_some_and(|v| v != 0)
}

/// An emulated bind with SO_REUSEPORT to an address a socket of this
/// process holds, bound with SO_REUSEPORT too and by the same effective
/// uid (the kernel's rule for a group): the new member shares the holder's
/// rendezvous socket, so the group is one queue — every member's accept
/// takes from it, whoever is free first (nginx's `listen ... reuseport`:
/// the master binds one socket per worker, each worker accepts on its
/// own). The name stays held while any member is open.
pub(crate) fn join_reuseport_group(target: SocketAddr) -> Option<Reservation> {
    let me = euid();
    let same = |local: SocketAddr| rendezvous::unmapped(local) == rendezvous::unmapped(target);
    // The holder may be a socket of this process: its rendezvous is shared
    // if it may be (it reuses the port too, and is ours), and if not the
    // answer is EADDRINUSE at once (asking ourselves would wait for an
    // accept this thread is not in).
    let mut local: Option<Option<OwnedFd>> = None;
    registry::for_each_socket(|s| {
        if local.is_some() {
            return;
        }
        local = match &**s {
            Socket::Bound(b) if same(b.local) => Some(
                (b.owner == me && reuses_port(&b.opts))
                    .then(|| {
                        b.reservation
                            .lock()
                            .as_ref()
                            .and_then(|r| r.socket())
                            .and_then(|fd| dup_owned(fd).ok())
                    })
                    .flatten(),
            ),
            Socket::Listener(l) if l.tcp.is_none() && same(l.local) => Some(
                (l.owner == me && reuses_port(&l.opts))
                    .then(|| {
                        l.rendezvous
                            .iter()
                            .find(|r| r.scope == Scope::Local)
                            .and_then(|r| dup_owned(&r.fd).ok())
                    })
                    .flatten(),
            ),
            _ => None,
        };
    });
    let fd = match local {
        Some(found) => found?,
        None => join_remote(target, me)?,
    };
    Some(Reservation::of_socket(target, InternalFd::new(fd)))
}

/// How long a bind waits for another process's member of an SO_REUSEPORT
/// group to answer (it answers inside its next accept).
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// `join_reuseport_group` with a member in another process: asks it over
/// its rendezvous (`Kind::Join`) for the rendezvous socket itself. Only a
/// listening member answers, only to its own user, and what comes back
/// must be a listening Unix stream socket bound to the address's name.
fn join_remote(target: SocketAddr, me: u32) -> Option<OwnedFd> {
    let name = rendezvous::addr_name(target);
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes()).ok()?;
    rustix::net::connect(&sock, &addr).ok()?;
    // (A holder of ours was looked for in the registry; the pid that
    // listened may be ours and the holder a child that kept the socket.)
    match sys::peer_cred(sock.as_fd()) {
        Some((_, uid, _)) if uid == me => {}
        _ => return None,
    }
    let ask = handshake::Message {
        kind: Kind::Join,
        addr: target,
        status: 0,
        dest: target,
        key: 0,
    };
    handshake::send(sock.as_fd(), &ask, None).ok()?;
    let deadline = std::time::Instant::now() + JOIN_PATIENCE;
    let (answer, fd) = loop {
        match handshake::try_recv(sock.as_fd()) {
            Ok(got) => break got,
            Err(Errno::AGAIN | Errno::INPROGRESS) => {}
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            crate::platform::log::always(format_args!(
                "bind to {target} with SO_REUSEPORT: the process holding it did not answer within {JOIN_PATIENCE:?} (it answers in accept); EADDRINUSE"
            ));
            return None;
        }
        let _ = crate::transport::handshake::wait_readable(sock.as_fd(), Some(left));
    };
    let fd = fd.filter(|_| answer.kind == Kind::Join)?;
    let named = rustix::net::getsockname(&fd).ok().and_then(|a| {
        let unix = rustix::net::SocketAddrUnix::try_from(a).ok()?;
        Some(unix.abstract_name()? == name.as_bytes())
    });
    let listening = rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false)
        && rustix::net::sockopt::socket_type(&fd) == Ok(SocketType::STREAM);
    (named == Some(true) && listening).then_some(fd)
}

/// listen(2) on a socket bound to an emulated partition address.
/// (The backlog is the rendezvous's own: `RENDEZVOUS_BACKLOG`.)
pub(crate) fn listen_emulated(fd: c_int, bound: &Bound, _backlog: c_int) -> Action<c_int> {
    let Some(config) = crate::platform::config::get() else {
        return fail(Errno::INVAL);
    };
    let Some(reservation) = bound.reservation.lock().take() else {
        return fail(Errno::INVAL); // connected meanwhile
    };
    let host = bound.host_sock.lock().take();
    let app = sys::borrow_fd(fd);
    let nonblocking =
        rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    let made = (|| {
        let (rv, hints) = match host {
            Some(sock) => {
                let mut hints = Vec::new();
                stream_listener(&dup_owned(&sock)?)?;
                if let Some(h) = reservation.host() {
                    for hint in config.allow.hints() {
                        if let Ok(fd) = h.bind_hint(&hint) {
                            hints.push(fd);
                        }
                    }
                }
                (
                    Rendezvous {
                        fd: sock,
                        scope: Scope::Host,
                        _name: None,
                        _reservation: Some(reservation),
                    },
                    hints,
                )
            }
            None => {
                let name = rendezvous::addr_name(reservation.addr);
                let Some(sock) = reservation.into_socket() else {
                    return Err(Errno::INVAL);
                };
                stream_listener(&dup_owned(&sock)?)?;
                (
                    Rendezvous {
                        fd: sock,
                        scope: Scope::Local,
                        _name: None,
                        _reservation: None,
                    },
                    bind_hints(&name, config),
                )
            }
        };
        assemble(
            fd,
            bound.local,
            None,
            vec![rv],
            hints,
            bound.opts.snapshot_copy(),
            nonblocking,
            euid(),
        )
    })();
    match made {
        Ok(listener) => {
            log!(debug, "fd {fd}: listening on {}", listener.local);
            stats::open_early();
            match registry::insert(fd, Arc::new(Socket::Listener(listener))) {
                Ok(()) => {
                    crate::sockets::readiness::replay_carried(fd, false);
                    Action::Done(0)
                }
                Err(()) => fail(Errno::MFILE),
            }
        }
        Err(e) => fail(e),
    }
}

/// A second owned fd for the same socket (the O_NONBLOCK and listen()
/// apply to the open file both share).
fn dup_owned(fd: &InternalFd) -> Result<OwnedFd, Errno> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0)
}

/// Builds the epoll instance and the parking queue, and puts the instance
/// on the application's fd number (keeping its close-on-exec flag).
#[allow(clippy::too_many_arguments)]
fn assemble(
    fd: c_int,
    local: SocketAddr,
    tcp: Option<InternalFd>,
    rendezvous: Vec<Rendezvous>,
    hints: Vec<InternalFd>,
    opts: Options,
    nonblocking: bool,
    owner: u32,
) -> Result<Listener, Errno> {
    let app = sys::borrow_fd(fd);
    let cloexec = rustix::io::fcntl_getfd(app)?.contains(rustix::io::FdFlags::CLOEXEC);
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    if let Some(tcp) = &tcp {
        epoll::add(
            &ep,
            tcp,
            epoll::EventData::new_u64(TCP),
            epoll::EventFlags::IN,
        )?;
    }
    for r in &rendezvous {
        epoll::add(
            &ep,
            &r.fd,
            epoll::EventData::new_u64(RENDEZVOUS),
            epoll::EventFlags::IN,
        )?;
    }
    if nonblocking {
        let efl = rustix::fs::fcntl_getfl(&ep)?;
        rustix::fs::fcntl_setfl(&ep, efl | rustix::fs::OFlags::NONBLOCK)?;
    }
    let parking = Parking::new()?;
    crate::sockets::carry::detach(fd);
    sys::dup_onto(ep.as_fd(), fd, cloexec)
        .inspect_err(|_| crate::sockets::readiness::replay_carried(fd, true))?;
    let listener = Listener {
        local,
        tcp,
        rendezvous,
        _hints: hints,
        epoll: InternalFd::new(ep),
        parking,
        owner,
        shm_first: AtomicBool::new(true),
        queue_watched: AtomicBool::new(false),
        v6only: false,
        namespace: crate::platform::netlink::namespace_epoch(),
        opts,
        refusal_logged: AtomicBool::new(false),
        unwatched: AtomicBool::new(false),
        wait_budget_us: std::sync::atomic::AtomicU64::new(WAIT_BUDGET_MAX_US),
        budget_at_ms: std::sync::atomic::AtomicU64::new(monotonic_ms()),
    };
    // Across exec, what the listener is made of goes with the
    // application's fd (see `inherit`).
    listener.set_cloexec(cloexec);
    Ok(listener)
}

/// The outcome of a handshake on a connection whose message is there.
#[allow(clippy::large_enum_variant)] // one lives at a time, on the stack
enum Step {
    Done(Connection),
    /// More is to come (a declined reuse offer is followed by a Connect).
    Pending(State),
    Dropped,
    /// The connector gave up waiting for our answer to its reuse offer and
    /// hung up: it dials again at once (see `pool`).
    Withdrawn,
    /// Untouched: taking its message needs fds the process does not have
    /// (the kernel's accept says EMFILE, or ENFILE, and leaves the
    /// connection queued).
    NoRoom(Errno),
}

impl Listener {
    /// The kernel TCP listener, for the calls that go to it.
    pub(crate) fn tcp(&self) -> Option<BorrowedFd<'_>> {
        self.tcp.as_ref().map(|t| t.as_fd())
    }

    /// In a forked child: a parent thread may have held a lock.
    pub(crate) fn reset_after_fork(&self) {
        self.opts.reset_after_fork();
    }

    /// What the listener is made of follows the application fd's
    /// close-on-exec flag (set_inheritable, F_SETFD, FIOCLEX/FIONCLEX), so
    /// that a program exec'd finds it behind the fd (see `inherit`).
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
        // recognises its listener by it (see `inherit`), and keeps its name.
        for r in &self.rendezvous {
            if self.tcp.is_none() || r.scope == Scope::Local {
                let _ = rustix::io::fcntl_setfd(&r.fd, flags);
            }
        }
    }

    /// listen(2) again (a new backlog): every half.
    pub(crate) fn relisten(&self, backlog: c_int) -> Action<c_int> {
        match &self.tcp {
            Some(tcp) => match rustix::net::listen(tcp, backlog) {
                Ok(()) => Action::Done(0),
                Err(e) => fail(e),
            },
            None => Action::Done(0),
        }
    }

    /// accept4(2): a connection from any half; blocking unless the
    /// application's fd is non-blocking, with SO_RCVTIMEO as the kernel's
    /// accept honours it, and signals as for a restartable call.
    pub(crate) fn accept(
        &self,
        fd: c_int,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
    ) -> Action<c_int> {
        if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
            return fail(Errno::INVAL);
        }
        let app = sys::borrow_fd(fd);
        let nonblocking =
            rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
        let timeout = match &self.tcp {
            Some(tcp) => {
                rustix::net::sockopt::socket_timeout(tcp, rustix::net::sockopt::Timeout::Recv)
                    .ok()
                    .flatten()
            }
            None => self.opts.timeout(libc::SO_RCVTIMEO),
        };
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            match self.step(addr, len, flags) {
                Err(Errno::AGAIN) => {}
                Ok(fd) => return Action::Done(fd),
                Err(e) => return fail(e),
            }
            if nonblocking {
                return fail(Errno::AGAIN);
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return fail(Errno::AGAIN),
                },
            };
            match crate::transport::handshake::wait_readable(app, left) {
                Ok(_) => {}
                Err(Errno::INTR) if sys::interrupted_call_restarts() => {}
                Err(e) => return fail(e),
            }
        }
    }

    /// One look at every half, without waiting.
    fn step(&self, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> Result<c_int, Errno> {
        let ready = self.ready();
        let shm_first = self.shm_first.fetch_xor(true, Ordering::Relaxed);
        // Out of fds for a shared-memory connection: a kernel one may still
        // be taken (it needs fewer); else the kernel's errno.
        let mut no_room = None;
        for shm in [shm_first, !shm_first] {
            if shm {
                match self.accept_shm(&ready) {
                    Ok(Some((conn, c))) => return self.finish(conn, c, addr, len, flags),
                    Ok(None) => {}
                    Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::NOBUFS)) => {
                        no_room = Some(e)
                    }
                    Err(e) => return Err(e),
                }
            } else if ready.tcp {
                match self.accept_tcp(addr, len, flags) {
                    Err(Errno::AGAIN) => {}
                    r => {
                        if ready.parked && !shm_first {
                            // A parked connection's one-shot event was
                            // consumed and not acted on: armed again, or
                            // nobody would be woken for it.
                            let _ = self.unpark(false);
                        }
                        return r;
                    }
                }
            }
        }
        Err(no_room.unwrap_or(Errno::AGAIN))
    }

    /// Which members have something, from the instance itself (one system
    /// call; it also consumes the one-shot events of parked connections,
    /// which is what keeps them from waking anyone twice).
    fn ready(&self) -> Ready {
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
                match epoll::add(&self.epoll, &r.fd, data, epoll::EventFlags::IN) {
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
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut buf),
            Some(&zero),
        ) {
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
                        RENDEZVOUS => ready.rendezvous = true,
                        QUEUE => {
                            ready.parked = true;
                            self.queue_watched.store(true, Ordering::Relaxed);
                        }
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

    fn accept_tcp(
        &self,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
    ) -> Result<c_int, Errno> {
        let Some(tcp) = &self.tcp else {
            return Err(Errno::AGAIN);
        };
        #[allow(unsafe_code)]
        // SAFETY: accept4(2)'s contract for `addr`/`len` is the caller's.
        let fd =
            unsafe { crate::platform::real::accept4(tcp.as_fd().as_raw_fd(), addr, len, flags) };
        if fd < 0 {
            return Err(Errno::from_raw_os_error(sys::errno()));
        }
        crate::sockets::stale::fresh(fd);
        Ok(fd)
    }

    /// A shared-memory connection whose handshake is complete, if one is
    /// there: parked ones first (their message has arrived), then new ones.
    fn accept_shm(&self, ready: &Ready) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        // (Threads and processes sharing the listener race on the budget:
        // each may overdraw it by one wait, which is fine.)
        let now = monotonic_ms();
        let since = now.saturating_sub(self.budget_at_ms.swap(now, Ordering::Relaxed));
        let budget = (self.wait_budget_us.load(Ordering::Relaxed)
            + since.saturating_mul(WAIT_SHARE_US_PER_MS))
        .min(WAIT_BUDGET_MAX_US);
        let allowed = ARRIVAL_PATIENCE.min(std::time::Duration::from_micros(budget));
        let mut patience = Patience { left: allowed };
        let found = self.accept_new(ready, &mut patience);
        let spent = allowed.saturating_sub(patience.left).as_micros() as u64;
        self.wait_budget_us
            .store(budget.saturating_sub(spent), Ordering::Relaxed);
        found
    }

    /// `accept_shm` after the parked connections: new ones, from the
    /// rendezvous.
    fn accept_new(
        &self,
        ready: &Ready,
        patience: &mut Patience,
    ) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        if ready.parked || self.parking.sweep_due() {
            if let Some(found) = self.unpark(true)? {
                return Ok(Some(found));
            }
        }
        if !ready.rendezvous {
            return Ok(None);
        }
        let mut taken = 0;
        for r in &self.rendezvous {
            // A connector that withdrew a reuse offer dials again at once:
            // its new connection is worth the wait as its message is.
            let mut redial = false;
            loop {
                if taken >= TAKEN_MAX {
                    // The rest stay queued and the listener readable; a new
                    // edge for edge-triggered waiters (one that accepts
                    // until EAGAIN gets none for what was signalled
                    // already): the rendezvous registered again queues a
                    // fresh event when it is ready.
                    let data = epoll::EventData::new_u64(RENDEZVOUS);
                    if epoll::delete(&self.epoll, &r.fd).is_ok()
                        && epoll::add(&self.epoll, &r.fd, data, epoll::EventFlags::IN).is_err()
                    {
                        // (ENOSPC, ENOMEM) Looked at by every accept, and
                        // registered again, until that works (`ready`).
                        self.unwatched.store(true, Ordering::Relaxed);
                    }
                    return Ok(None);
                }
                taken += 1;
                let conn = match rustix::net::accept_with(
                    &r.fd,
                    SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                ) {
                    Ok(c) => c,
                    Err(Errno::AGAIN) if redial && patience.wait(r.fd.as_fd()) => {
                        redial = false;
                        continue;
                    }
                    Err(Errno::AGAIN | Errno::CONNABORTED | Errno::INTR) => break,
                    // Out of fds or memory: the kernel's answer, whichever
                    // rendezvous (a SHMNET_DIR one said EAGAIN, and spun).
                    Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                        return Err(e)
                    }
                    Err(e) if r.scope == Scope::Host => {
                        log!(debug, "accept on {}: {e}", self.local);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                crate::sockets::stale::fresh(conn.as_raw_fd());
                let mut state = State::New;
                loop {
                    match arrival(conn.as_fd()) {
                        Arrival::Complete => match self.handshake(conn.as_fd(), r.scope, state) {
                            Step::Done(c) => return Ok(Some((conn, c))),
                            // Declined: the connector sends a fresh Connect
                            // at once.
                            Step::Pending(next) if patience.wait(conn.as_fd()) => state = next,
                            Step::Pending(next) => {
                                self.park(conn, r.scope, next);
                                break;
                            }
                            Step::Dropped => break,
                            Step::Withdrawn => {
                                redial = true;
                                break;
                            }
                            Step::NoRoom(e) => {
                                self.park(conn, r.scope, state);
                                return Err(e);
                            }
                        },
                        // Only for a connector the policy admits (the
                        // kernel vouches for who connected before any
                        // message): others are refused now.
                        Arrival::Empty if !self.admits(conn.as_fd()) => break,
                        Arrival::Empty if patience.wait(conn.as_fd()) => {}
                        Arrival::Empty => {
                            self.park(conn, r.scope, state);
                            break;
                        }
                        Arrival::Bad if state == State::Declined => {
                            log!(
                                debug,
                                "accept on {}: the connector withdrew its reuse offer",
                                self.local
                            );
                            redial = true;
                            break;
                        }
                        Arrival::Bad => {
                            self.dropped("a short message or none");
                            break;
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// Looks at every parked connection: with `take`, returns the first
    /// whose handshake completes; puts the others back, re-armed (an event
    /// of theirs may have been consumed: a wake-up must not be lost); drops
    /// the idle-too-long and the bad ones, and the oldest beyond
    /// `PARKED_MAX`. EMFILE (with `take`): one is waiting but the process
    /// has no fds for it, as the kernel's accept would say.
    fn unpark(&self, take: bool) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        self.unpark_to(take, PARKED_MAX)
    }

    /// `unpark`, keeping at most `bound` of those still waiting.
    fn unpark_to(&self, take: bool, bound: usize) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        let now = monotonic_ms();
        let mut found = None;
        let mut full = None;
        // (Whether its message is there.)
        let mut kept: Vec<(Record, OwnedFd, bool)> = Vec::new();
        self.parking.swept(now);
        loop {
            // A parked fd popped without room is lost (the kernel drops
            // what it cannot install): room is checked before each one (the
            // ones held meanwhile take fds too).
            if let Err(e) = sys::room_for_fd(self.epoll.as_fd()) {
                full = Some(e);
                break;
            }
            let Some((rec, conn)) = self.parking.pop() else {
                break;
            };
            let scope = rec.scope;
            match arrival(conn.as_fd()) {
                Arrival::Complete if take && found.is_none() && full.is_none() => {
                    match self.handshake(conn.as_fd(), scope, rec.state) {
                        Step::Done(c) => found = Some((conn, c)),
                        Step::Pending(state) => kept.push((Record { state, ..rec }, conn, false)),
                        Step::Dropped | Step::Withdrawn => {}
                        Step::NoRoom(e) => {
                            full = Some(e);
                            kept.push((rec, conn, true));
                        }
                    }
                }
                Arrival::Empty if rec.deadline_ms <= now => self.dropped("idle"),
                // Armed again, empty ones too: an event of theirs may have
                // been consumed by another thread or process (`ready`) while
                // we held them, their message arriving meanwhile.
                Arrival::Complete => kept.push((rec, conn, true)),
                Arrival::Empty => kept.push((rec, conn, false)),
                // A connector that offered reuse and gave up waiting for
                // our answer hangs up: routine (see `pool`), not a fault.
                Arrival::Bad if rec.state == State::Declined => log!(
                    debug,
                    "accept on {}: the connector withdrew its reuse offer",
                    self.local
                ),
                Arrival::Bad => self.dropped("a short message or none"),
            }
        }
        // Over the bound: the oldest of those still waiting for their
        // message go first (they had the most time). Whole ones are never
        // dropped: they are served by the next accepts.
        kept.sort_by_key(|(rec, _, _)| rec.deadline_ms);
        let mut excess = kept.len().saturating_sub(bound);
        kept.retain(|(_, _, whole)| {
            if excess > 0 && !whole {
                excess -= 1;
                self.dropped("too many parked");
                return false;
            }
            true
        });
        for (rec, conn, _) in kept {
            self.requeue(conn, rec);
        }
        match full {
            // Until there is room, the queue keeps the instance readable,
            // as a kernel listener stays readable while its accept says
            // EMFILE (the event that woke us was consumed). (Whether
            // anything is queued this process cannot tell: another process
            // sharing the listener may have parked it.)
            Some(_) => {
                let watch = epoll::add(
                    &self.epoll,
                    self.parking.queue(),
                    epoll::EventData::new_u64(QUEUE),
                    epoll::EventFlags::IN,
                );
                if watch.is_ok() || watch == Err(Errno::EXIST) {
                    self.queue_watched.store(true, Ordering::Relaxed);
                }
            }
            None => {
                if self.queue_watched.swap(false, Ordering::Relaxed) {
                    let _ = epoll::delete(&self.epoll, self.parking.queue());
                }
            }
        }
        match (found, full) {
            (None, Some(e)) if take => Err(e),
            (found, _) => Ok(found),
        }
    }

    /// Parks `conn` (see the module docs), armed: a new one was never
    /// registered, and a declined reuse offer's event was consumed.
    fn park(&self, conn: OwnedFd, scope: Scope, state: State) {
        let rec = Record {
            state,
            scope,
            deadline_ms: monotonic_ms() + PARK_PATIENCE.as_millis() as u64,
        };
        if self.parking.len_hint() >= PARKED_MAX {
            // Sweep first, so an idle crowd cannot keep newcomers out; down
            // to three quarters, so that a flood of silent connectors costs
            // one sweep per sixteen of them, not one each.
            let none = self.unpark_to(false, PARKED_MAX - PARKED_MAX / 4);
            debug_assert!(none.is_ok_and(|n| n.is_none()));
        }
        self.requeue(conn, rec);
    }

    /// Puts `conn` in the queue, then arms it one-shot in the listener's
    /// instance: in this order, so that no other thread or process can
    /// consume its event before it is in the queue to be found. (A
    /// registration is keyed by fd number too: one made under a number the
    /// fd had before it last went through the queue stays, disarmed once it
    /// fired, until the connection is closed for good; the extra wake-ups
    /// they may give are harmless.)
    fn requeue(&self, conn: OwnedFd, rec: Record) {
        if self.parking.push(conn.as_fd(), rec).is_err() {
            self.dropped("the parking queue is full");
            return;
        }
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(PARKED);
        let armed = match epoll::add(&self.epoll, &conn, data, flags) {
            Err(Errno::EXIST) => epoll::modify(&self.epoll, &conn, data, flags),
            r => r,
        };
        if let Err(e) = armed {
            // Queued but unwatched: found by the next look (at most
            // PARK_PATIENCE later).
            log!(
                debug,
                "accept on {}: a parked connection unwatched ({e})",
                self.local
            );
        }
    }

    /// A `Kind::Join` (see `join_reuseport_group`): our rendezvous socket
    /// for a process of our own user binding our address with
    /// SO_REUSEPORT, if we were bound with it too; otherwise nothing (the
    /// joiner's bind says EADDRINUSE).
    fn answer_join(&self, conn: BorrowedFd<'_>, peer: &Peer, msg: &handshake::Message) {
        let ours = self.tcp.is_none()
            && peer.uid == self.owner
            && reuses_port(&self.opts)
            && rendezvous::unmapped(msg.addr) == rendezvous::unmapped(self.local);
        let rv = self.rendezvous.iter().find(|r| r.scope == Scope::Local);
        match rv.filter(|_| ours) {
            Some(rv) => {
                let _ = handshake::send(conn, msg, Some(rv.fd.as_fd()));
                log!(
                    debug,
                    "listen on {}: pid {} joined the SO_REUSEPORT group",
                    self.local,
                    peer.pid
                );
            }
            None => log!(
                debug,
                "listen on {}: a join from uid {} refused",
                self.local,
                peer.uid
            ),
        }
    }

    fn dropped(&self, why: &str) {
        log!(
            debug,
            "accept on {}: dropping a rendezvous connection ({why})",
            self.local
        );
        stats::dropped_handshake();
    }

    /// Whether a default-mode connector's destination (which becomes the
    /// connection's local address) names this listener: its port, and its
    /// address, or one of the namespace's when bound to the wildcard.
    fn serves(&self, dest: SocketAddr) -> bool {
        if self.v6only && rendezvous::unmapped(dest).is_ipv4() {
            return false;
        }
        let (dest, local) = (rendezvous::unmapped(dest), rendezvous::unmapped(self.local));
        dest.port() == local.port()
            && if local.ip().is_unspecified() {
                crate::platform::netlink::is_local(dest.ip())
            } else {
                dest.ip() == local.ip()
            }
    }

    /// The handshake on a rendezvous connection whose message is there:
    /// who is asking (the kernel's word), whether they may, then the
    /// segment (seed 000 claims 82-83 b-f).
    fn handshake(&self, conn: BorrowedFd<'_>, scope: Scope, state: State) -> Step {
        let Some(config) = crate::platform::config::get() else {
            return Step::Dropped;
        };
        let Some(peer) = Peer::of(conn, &config.allow) else {
            self.dropped("no credentials");
            return Step::Dropped;
        };
        let me = euid();
        if !(config.allow.admits(self.owner, &peer) || config.allow.admits(me, &peer)) {
            self.refuse(&peer);
            return Step::Dropped;
        }
        // The doorbell is a copy of `conn` (made first: it is needed anyway)
        // and the message brings a memfd, which needs room of its own.
        let bell = match Bell::new(conn) {
            Ok(bell) => bell,
            Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOMEM)) => return Step::NoRoom(e),
            Err(e) => {
                self.dropped(&format!("no doorbell: {e}"));
                return Step::Dropped;
            }
        };
        if let Err(e) = sys::room_for_fd(conn) {
            return Step::NoRoom(e);
        }
        let (msg, memfd) = match handshake::try_recv(conn) {
            Ok(m) => m,
            Err(e) => {
                self.dropped(&format!("unreadable message: {e}"));
                return Step::Dropped;
            }
        };
        if msg.kind == Kind::Join {
            self.answer_join(conn, &peer, &msg);
            return Step::Dropped;
        }
        let bad = |why: &str| {
            log!(warn, "refusing a connection to {}: {why}", self.local);
            stats::dropped_handshake();
            Step::Dropped
        };
        let here = |f: &dyn Fn() -> bool| crate::platform::netlink::in_namespace(self.namespace, f);
        if !here(&|| plausible_source(msg.addr, scope, &peer, config)) {
            return bad(&format!("{} is not an address of the connector", msg.addr));
        }
        // A port below ip_unprivileged_port_start is root's, as on kernel
        // TCP (servers trust such source ports: rlogin-style checks) —
        // except the library's own ephemeral ones (32768-60999, whatever
        // the namespace's ip_local_port_range: a start raised into them
        // would refuse every connector).
        let port = msg.addr.port();
        let privileged =
            crate::transport::lookup::privileged_port(port) && !rendezvous::is_ephemeral(port);
        if port == 0 || (privileged && peer.uid != 0) {
            return bad(&format!("source port {port} from uid {}", peer.uid));
        }
        if self.v6only && rendezvous::unmapped(msg.addr).is_ipv4() {
            return bad("an IPv4 peer on an IPV6_V6ONLY listener");
        }
        if self.tcp.is_some() && !here(&|| self.serves(msg.dest)) {
            return bad(&format!("{} is not this listener's address", msg.dest));
        }
        let generation = crate::platform::fork::generation();
        let reused = match (msg.kind, state) {
            (Kind::Reuse, State::New) => match pool::claim(peer.pid, msg.key) {
                Some(found) => {
                    if handshake::send_verdict(conn, handshake::ACCEPTED).is_err() {
                        return Step::Dropped;
                    }
                    Some(found)
                }
                None => {
                    // Not one of ours (another process took the connection,
                    // or we no longer keep it): the connector sends a new
                    // one. One that gave up waiting withdrew its offer and
                    // hung up: routine (see `pool`).
                    if handshake::send_verdict(conn, handshake::DECLINED).is_err() {
                        log!(
                            debug,
                            "accept on {}: the connector withdrew its reuse offer",
                            self.local
                        );
                        return Step::Withdrawn;
                    }
                    return Step::Pending(State::Declined);
                }
            },
            (Kind::Reuse, State::Declined) => return bad("a second reuse offer"),
            (Kind::Connect, _) => None,
            (Kind::Join, _) => return Step::Dropped, // answered above
        };
        let (local, peer_addr) = if self.tcp.is_some() {
            // A default-mode listener may be bound to the wildcard: the
            // connection's local address is the one the connector asked
            // for; an IPv6 one takes IPv4 connectors as IPv4-mapped.
            let v6 = self.local.is_ipv6();
            match (as_family(msg.dest, v6), as_family(msg.addr, v6)) {
                (Some(l), Some(p)) => (l, p),
                _ => return bad("address family differs"),
            }
        } else {
            // An IPv4 address and its IPv4-mapped form name one emulated
            // address (as one kernel socket): an IPv6 listener on
            // ::ffff:a.b.c.d sees IPv4 peers mapped, an IPv4 one sees
            // mapped peers as IPv4.
            match as_family(msg.addr, self.local.is_ipv6()) {
                Some(p) => (self.local, p),
                None => return bad("address family differs"),
            }
        };
        let (seg, ticket) = match reused {
            Some((seg, ticket)) => (seg, Some(ticket)),
            None => {
                let Some(memfd) = memfd else {
                    return bad("no shared memory attached");
                };
                let seg = match Segment::attach(memfd) {
                    Ok(s) => s,
                    Err(e) => return bad(&e.to_string()),
                };
                let ticket = pool::Ticket {
                    key: msg.key,
                    generation,
                    side: pool::Side::Acceptor { peer_pid: peer.pid },
                };
                (seg, (peer.pid != 0).then_some(ticket))
            }
        };
        let made = Connection::new(seg, local, peer_addr, bell, None, ticket);
        match made {
            Ok(c) => Step::Done(c),
            Err(e) => {
                log!(
                    warn,
                    "accept on {}: cannot set up the connection ({e})",
                    self.local
                );
                Step::Dropped
            }
        }
    }

    /// Whether the policy admits whoever connected `conn` (refused and
    /// counted if not: the caller drops it).
    fn admits(&self, conn: BorrowedFd<'_>) -> bool {
        let Some(config) = crate::platform::config::get() else {
            return false;
        };
        let Some(peer) = Peer::of(conn, &config.allow) else {
            self.dropped("no credentials");
            return false;
        };
        if config.allow.admits(self.owner, &peer) || config.allow.admits(euid(), &peer) {
            return true;
        }
        self.refuse(&peer);
        false
    }

    fn refuse(&self, peer: &Peer) {
        stats::refused_policy();
        let first = !self.refusal_logged.swap(true, Ordering::Relaxed);
        if first {
            crate::platform::log::always(format_args!(
                "refusing a shared-memory connection to {} from uid {} (pid {}): this listener \
                 (uid {}) admits its own uid, root and SHMNET_ALLOW",
                self.local, peer.uid, peer.pid, self.owner
            ));
        } else {
            log!(
                debug,
                "refusing a connection to {} from uid {}",
                self.local,
                peer.uid
            );
        }
    }

    /// Hands an accepted shared-memory connection to the application, with
    /// the flags of its accept4 call.
    fn finish(
        &self,
        conn: OwnedFd,
        connection: Connection,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
    ) -> Result<c_int, Errno> {
        if flags & libc::SOCK_NONBLOCK == 0 {
            let fl = rustix::fs::fcntl_getfl(&conn)?;
            rustix::fs::fcntl_setfl(&conn, fl - rustix::fs::OFlags::NONBLOCK)?;
        }
        if flags & libc::SOCK_CLOEXEC == 0 {
            rustix::io::fcntl_setfd(&conn, rustix::io::FdFlags::empty())?;
        }
        let peer = connection.peer;
        crate::sockets::options_store::inherit_options(&self.opts, &connection.opts);
        let sock = Arc::new(Socket::Stream(connection));
        if flags & libc::SOCK_CLOEXEC == 0 {
            sock.set_cloexec(false);
        }
        if registry::insert(conn.as_raw_fd(), sock).is_err() {
            return Err(Errno::MFILE);
        }
        let raw = conn.into_raw_fd();
        let peer = as_family(peer, self.local.is_ipv6()).unwrap_or(peer);
        #[allow(unsafe_code)]
        // SAFETY: accept(2) requires `addr`/`len` to be null or valid.
        unsafe {
            sys::put_socket_addr(peer, addr, len)
        };
        log!(
            debug,
            "accept on {}: {peer} over shared memory, fd {raw}",
            self.local
        );
        stats::accepted_shm();
        Ok(raw)
    }
}

/// Whether a connector could really have `addr` as its address: one of
/// this namespace's (it reached a name of our namespace), a partition
/// address (the emulated network's addresses are nobody's), or, through
/// SHMNET_DIR in the default mode, an address routed to the connector's
/// namespace — so that a server's address checks mean what they say.
fn plausible_source(addr: SocketAddr, scope: Scope, peer: &Peer, config: &Config) -> bool {
    let ip = addr.ip();
    if config.fallback == crate::platform::config::Fallback::Never {
        return rendezvous::is_loopback(ip) || config.is_partition_ip(ip);
    }
    match scope {
        Scope::Local => crate::platform::netlink::is_local(ip),
        Scope::Host => {
            let route = match crate::platform::netlink::route(ip) {
                Ok(r) if r.kind == crate::platform::netlink::RouteKind::Unicast => r,
                _ => return false,
            };
            let link = crate::platform::netlink::link_netnsid(route.oif)
                .ok()
                .flatten();
            let theirs = match peer.pid {
                0 => None,
                pid => crate::platform::netlink::netnsid_of_pid(pid).ok().flatten(),
            };
            link.is_some() && link == theirs
        }
    }
}

#[derive(Default)]
struct Ready {
    tcp: bool,
    rendezvous: bool,
    parked: bool,
}
