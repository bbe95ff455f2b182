//! Endpoints: naming, listening, accepting, connecting, shutting down.
//!
//! `bind`/`connect` naming a partition address turn the application's
//! kernel TCP socket into an emulated one: its fd number is re-pointed
//! (dup3) at a Unix-domain socket — the listener's rendezvous, or the
//! connection to the peer process — so it stays a real kernel object, and
//! no kernel TCP socket ever exists for the virtual address.
//!
//! Under `SHMNET_FALLBACK=tcp` (the default) bind is the kernel's, and
//! listen makes a dual listener (`dual`): the kernel TCP listener plus a
//! rendezvous, behind one fd. A preloaded client connects through shared
//! memory when it finds a rendezvous for its destination, and otherwise —
//! or when that fails — with a kernel connect on the same socket; each
//! outcome is counted (`stats`).
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::io::Errno;

use crate::platform::config::{self, Fallback};
use crate::platform::internal_fd::InternalFd;
use crate::platform::real::Action;
use crate::platform::sys::{as_family, AddrIn, AddrOut};
use crate::platform::{stats, sys};
use crate::sockets::conn::{Connection, Dialed, Offered};
use crate::sockets::listener::{Accepted, Bound, Listener};
use crate::sockets::options_store::Options;
use crate::sockets::registry;
use crate::sockets::socket::{Connecting, Socket};
use crate::transport::lookup::{DialError, Found};
use crate::transport::rendezvous;

fn fail<R>(e: Errno) -> Action<R> {
    Action::Fail(e.raw_os_error())
}

/// An AF_INET/AF_INET6 stream socket stays a kernel socket until bind or
/// connect names a partition address; so does everything else, forever.
pub(crate) fn socket(_domain: c_int, _ty: c_int, _protocol: c_int) -> Action<c_int> {
    Action::Pass
}

/// Socket pairs are AF_UNIX: never emulated.
pub(crate) fn socketpair(_d: c_int, _t: c_int, _p: c_int, _sv: *mut c_int) -> Action<c_int> {
    Action::Pass
}

/// The partition address `addr` names, if the library diverts it from this
/// socket: a kernel TCP socket of the address's family, or one of ours
/// (`family` given: a socket that was bound but never listened).
fn diverted(
    fd: c_int,
    addr: AddrIn<'_>,
    family: Option<c_int>,
) -> Option<(&'static config::Config, SocketAddr)> {
    let config = config::get()?;
    let target = addr.get()?;
    if !(config.is_partition_ip(target.ip()) || config.is_remote_ip(target.ip())) {
        return None;
    }
    let family = match family {
        Some(f) => f,
        None => diverted_family(fd)?,
    };
    (family == sys::family_of(&target)).then_some((config, target))
}

/// AF_INET or AF_INET6 if `fd` is a stream socket of that family.
fn diverted_family(fd: c_int) -> Option<c_int> {
    if let Some(f) = crate::sockets::carry::pristine(fd) {
        return Some(f);
    }
    let sock = sys::borrow_fd(fd);
    if rustix::net::sockopt::socket_type(sock).ok()? != rustix::net::SocketType::STREAM {
        return None;
    }
    match rustix::net::sockopt::socket_domain(sock).ok()? {
        rustix::net::AddressFamily::INET => Some(libc::AF_INET),
        rustix::net::AddressFamily::INET6 => Some(libc::AF_INET6),
        _ => None,
    }
}

/// bind or connect of a kernel socket in a sandboxed process (`sandbox`):
/// a shared-memory connection or an emulated address needs socket(),
/// memfds and fd passing, which a sandbox filter refuses (or kills for).
/// A loopback address in the default mode goes to the kernel, as a
/// fallback would (to this host only); any other partition address fails
/// with EACCES. Nothing here makes a system call.
fn sandboxed(fd: c_int, addr: AddrIn<'_>, call: &str) -> Action<c_int> {
    let Some(config) = config::get() else {
        return Action::Pass;
    };
    let Some(target) = addr.get() else {
        return Action::Pass;
    };
    if !config.is_partition_ip(target.ip()) {
        return Action::Pass;
    }
    if config.fallback != Fallback::Never && rendezvous::unmapped(target).ip().is_loopback() {
        log!(
            debug,
            "{call}(fd {fd}) to {target} in a sandbox: kernel TCP"
        );
        if call == "connect" {
            crate::sockets::carry::done(fd);
        }
        return Action::Pass;
    }
    log!(debug, "{call}(fd {fd}) to {target} in a sandbox: EACCES");
    fail(Errno::ACCESS)
}

/// Re-points the application's fd number at `sock`, keeping the fd's
/// close-on-exec flag and its non-blocking mode.
/// Puts `sock` on the application's fd number `fd` with its flags
/// (`nonblock`: the application's O_NONBLOCK, looked up by the caller);
/// says whether the fd is close-on-exec.
/// (`nonblock`: set O_NONBLOCK on `sock`; the connect paths hand over a
/// socket already in the application's mode and pass false.)
fn adopt(fd: c_int, sock: &OwnedFd, nonblock: bool) -> Result<bool, Errno> {
    let app = sys::borrow_fd(fd);
    let cloexec = rustix::io::fcntl_getfd(app)?.contains(rustix::io::FdFlags::CLOEXEC);
    if nonblock {
        let fl = rustix::fs::fcntl_getfl(sock)?;
        rustix::fs::fcntl_setfl(sock, fl | rustix::fs::OFlags::NONBLOCK)?;
    }
    crate::sockets::carry::detach(fd);
    sys::dup_onto(sock.as_fd(), fd, cloexec)
        .inspect_err(|_| crate::sockets::readiness::replay_carried(fd, true))?;
    Ok(cloexec)
}

fn unix_socket() -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
}

pub(crate) fn bind(fd: c_int, addr: AddrIn<'_>) -> Action<c_int> {
    crate::sockets::carry::touched(fd);
    if let Some(done) = crate::calls::datagram::bind(fd, addr) {
        return done;
    }
    if registry::get(fd).is_some() {
        return fail(Errno::INVAL); // already bound
    }
    if crate::platform::sandbox::active() {
        return sandboxed(fd, addr, "bind");
    }
    let Some((config, target)) = diverted(fd, addr, None) else {
        return bind_wildcard(fd, addr);
    };
    if config.fallback != Fallback::Never {
        log!(
            debug,
            "bind(fd {fd}) to partition address {target}: kernel listener (tcp fallback mode)"
        );
        if config.is_partition_ip(target.ip()) {
            return bind_kernel(fd, target, addr.len(), config);
        }
        return Action::Pass;
    }
    match bind_emulated(fd, target) {
        Ok(()) => Action::Done(0),
        Err(e) => fail(e),
    }
}

/// A default-mode bind of an IPv4/IPv6 stream socket to the wildcard
/// (which its listen accelerates): `bind_kernel`. Anything else passes.
fn bind_wildcard(fd: c_int, addr: AddrIn<'_>) -> Action<c_int> {
    let Some(config) = config::get().filter(|c| c.fallback == Fallback::Tcp) else {
        return Action::Pass;
    };
    let Some(target) = addr.get().filter(|t| t.ip().is_unspecified()) else {
        return Action::Pass;
    };
    if rustix::process::geteuid().as_raw() != 0 {
        return Action::Pass;
    }
    match diverted_family(fd) {
        Some(family) if family == sys::family_of(&target) => {
            bind_kernel(fd, target, addr.len(), config)
        }
        _ => Action::Pass,
    }
}

/// The kernel's bind, in the default mode; then, in a root process, the
/// rendezvous its listen will take (`calls::listen::bind_early`: a
/// privilege-separated server listens in a child of another user).
fn bind_kernel(
    fd: c_int,
    target: SocketAddr,
    len: libc::socklen_t,
    config: &config::Config,
) -> Action<c_int> {
    // (A length the kernel refuses, past a sockaddr_storage: its EINVAL.)
    let most = core::mem::size_of::<libc::sockaddr_storage>();
    if rustix::process::geteuid().as_raw() != 0 || len as usize > most {
        return Action::Pass;
    }
    match rustix::net::bind(sys::borrow_fd(fd), &target) {
        Ok(()) => {
            crate::calls::listen::bind_early(fd, config);
            Action::Done(0)
        }
        Err(e) => fail(e),
    }
}

/// Emulated mode: reserves the address's name and puts a Unix socket bound
/// to it on the application's fd. A loopback address is named in this
/// network namespace; any other partition address in SHMNET_DIR (the
/// emulated network across namespaces).
fn bind_emulated(fd: c_int, target: SocketAddr) -> Result<(), Errno> {
    if !crate::transport::lookup::may_bind(target.port()) {
        return Err(Errno::ACCESS); // as the kernel, for a privileged port
    }
    let opts = Options::snapshot(sys::borrow_fd(fd));
    let bound = if rendezvous::is_loopback(target.ip()) {
        let reservation = match rendezvous::reserve_local(target) {
            Err(Errno::ADDRINUSE) if crate::sockets::listener::reuses_port(&opts) => {
                crate::calls::listen::join_reuseport_group(target).ok_or(Errno::ADDRINUSE)?
            }
            r => r?,
        };
        Bound::new(reservation, None, opts)
    } else {
        let dir = crate::platform::safedir::checked().map_err(|_| Errno::ACCESS)?;
        let reservation = rendezvous::reserve_host(dir, target)?;
        let sock = unix_socket()?;
        if let Some(name) = reservation.host() {
            name.bind(&sock)?;
        }
        Bound::new(reservation, Some(InternalFd::new(sock)), opts)
    };
    let Some(sock) = bound.socket() else {
        return Err(Errno::INVAL);
    };
    let nonblock =
        rustix::fs::fcntl_getfl(sys::borrow_fd(fd))?.contains(rustix::fs::OFlags::NONBLOCK);
    adopt(fd, &sock, nonblock)?;
    log!(debug, "fd {fd}: bound to {}", bound.local);
    registry::insert(fd, Arc::new(Socket::Bound(bound))).map_err(|()| Errno::MFILE)?;
    crate::sockets::readiness::replay_carried(fd, true);
    Ok(())
}

pub(crate) fn listen(fd: c_int, backlog: c_int) -> Action<c_int> {
    if fd < 0 {
        return Action::Pass; // EBADF, the kernel's (no fd to borrow)
    }
    crate::sockets::carry::touched(fd);
    if crate::platform::sandbox::active() {
        // A shared-memory listener needs a rendezvous socket and an epoll
        // set: outside a sandbox. A kernel socket listens as it would.
        return match registry::get(fd).as_deref() {
            None => Action::Pass,
            Some(Socket::Listener(l)) => l.relisten(sys::borrow_fd(fd), backlog),
            Some(_) => fail(Errno::ACCESS),
        };
    }
    match registry::get(fd).as_deref() {
        None => match config::get() {
            Some(c) if c.fallback == Fallback::Tcp => {
                crate::calls::listen::listen_tcp(fd, backlog, c)
            }
            Some(c) => {
                crate::calls::listen::listen_kernel_emulated(fd, c);
                Action::Pass
            }
            None => Action::Pass,
        },
        Some(Socket::Listener(l)) => l.relisten(sys::borrow_fd(fd), backlog),
        Some(Socket::Bound(b)) => crate::calls::listen::listen_emulated(fd, b, backlog),
        Some(Socket::Stream(_) | Socket::Connecting(_)) => fail(Errno::INVAL),
        Some(Socket::Datagram(_)) => fail(Errno::OPNOTSUPP),
    }
}

pub(crate) fn accept4(fd: c_int, peer: AddrOut<'_>, flags: c_int) -> Action<c_int> {
    match registry::get(fd).as_deref() {
        None => Action::Pass,
        // Taking a connection needs recvmsg with fds, mmap of its segment
        // and new fds: outside a sandbox.
        Some(Socket::Listener(_)) if crate::platform::sandbox::active() => fail(Errno::ACCESS),
        Some(Socket::Listener(l)) => match accept_with_room(l, fd, peer, flags) {
            Ok(Accepted::Tcp(conn)) => {
                crate::sockets::stale::fresh_inside(conn);
                Action::Done(conn)
            }
            Ok(Accepted::Shm(conn, c)) => match hand_out(l, conn, c, peer, flags) {
                Ok(conn) => Action::Done(conn),
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Some(Socket::Bound(_) | Socket::Stream(_) | Socket::Connecting(_)) => fail(Errno::INVAL),
        Some(Socket::Datagram(_)) => fail(Errno::OPNOTSUPP),
    }
}

/// `Listener::accept`, once more after giving back the memfds kept for
/// exec if it ran out of fds (`spare_fds`): nothing was taken then.
fn accept_with_room(
    l: &Listener,
    fd: c_int,
    peer: AddrOut<'_>,
    flags: c_int,
) -> Result<Accepted, Errno> {
    crate::sockets::spare_fds::retry(|| l.accept(fd, peer, flags))
}

/// Hands a shared-memory connection `l` accepted to the application: its
/// fd number checked for a stale entry (the kernel may have reused a
/// number closed past us: `stale`) and registered as the connection, its
/// peer's address written.
fn hand_out(
    l: &Listener,
    conn: OwnedFd,
    connection: Connection,
    peer_out: AddrOut<'_>,
    flags: c_int,
) -> Result<c_int, Errno> {
    crate::sockets::stale::fresh_inside(conn.as_raw_fd());
    let peer = connection.peer;
    let sock = Arc::new(Socket::Stream(connection));
    if flags & libc::SOCK_CLOEXEC == 0 {
        sock.set_cloexec(false);
    }
    if registry::insert(conn.as_raw_fd(), sock).is_err() {
        return Err(Errno::MFILE);
    }
    let raw = conn.into_raw_fd();
    let peer = as_family(peer, l.local.is_ipv6()).unwrap_or(peer);
    peer_out.put(peer);
    log!(
        debug,
        "accept on {}: {peer} over shared memory, fd {raw}",
        l.local
    );
    stats::accepted_shm();
    Ok(raw)
}

/// The local address of a connecting socket not bound to an emulated
/// address, as the kernel would choose it: the address the kernel socket
/// was bound to, if a specific one (bind before connect; a transparent
/// proxy's IP_TRANSPARENT bind to its client's address) — EINVAL for a
/// loopback one and a destination outside the namespace, as the kernel's
/// (a loopback source cannot leave it); loopback for a loopback
/// destination; otherwise the source of the route to the destination (for
/// one of the namespace's own addresses, that address itself), in both
/// modes. Loopback only when no route leads there (the emulated network
/// beyond the kernel's routes: the kernel would say ENETUNREACH). When
/// the routes cannot be asked (netlink refused by a sandbox, no fd left):
/// EMFILE (a spare fd may help), else ENETUNREACH — never a guessed
/// loopback, which a server in another namespace would take for its own.
fn local_ip_for(fd: c_int, peer: &SocketAddr) -> Result<IpAddr, Errno> {
    let dest_loopback = rendezvous::is_loopback(peer.ip());
    // (A pristine socket was never bound.)
    let bound = match crate::sockets::carry::pristine(fd) {
        Some(_) => None,
        None => sys::local_name(sys::borrow_fd(fd)),
    };
    if let Some(bound) = bound {
        if !bound.ip().is_unspecified() && bound.is_ipv6() == peer.is_ipv6() {
            let from_loopback = rendezvous::is_loopback(bound.ip());
            if from_loopback
                && !dest_loopback
                && !crate::platform::netlink::is_local(rendezvous::unmapped(*peer).ip())
            {
                return Err(Errno::INVAL);
            }
            return Ok(bound.ip());
        }
    }
    let loopback = match peer {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        // An IPv4 destination on an IPv6 socket: the kernel's source is
        // IPv4 too, seen through the mapping.
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        }
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    if dest_loopback {
        return Ok(loopback);
    }
    match crate::platform::netlink::route(rendezvous::unmapped(*peer).ip()) {
        Ok(r) => Ok(match (r.prefsrc, peer) {
            (Some(IpAddr::V4(src)), SocketAddr::V6(_)) => IpAddr::V6(src.to_ipv6_mapped()),
            (Some(src), _) => src,
            (None, _) => loopback,
        }),
        // No route at all (the kernel's answer): the emulated network.
        Err(Errno::NETUNREACH) => Ok(loopback),
        Err(e) if e == Errno::MFILE || e == Errno::NFILE => Err(e),
        Err(_) => Err(Errno::NETUNREACH),
    }
}

pub(crate) fn connect(fd: c_int, addr: AddrIn<'_>) -> Action<c_int> {
    // A stream socket (pristine, or a connection of ours) is no datagram
    // socket: its address is not read twice.
    let pristine = crate::sockets::carry::pristine(fd).is_some();
    let stream = pristine
        || registry::with(fd, |s| {
            matches!(s, Socket::Stream(_) | Socket::Connecting(_))
        })
        .unwrap_or(false);
    if !stream {
        if let Some(done) = crate::calls::datagram::connect(fd, addr) {
            return done;
        }
    }
    if crate::platform::sandbox::active() {
        return match registry::get(fd).as_deref() {
            None => sandboxed(fd, addr, "connect"),
            Some(Socket::Stream(_)) => fail(Errno::ISCONN),
            Some(_) => fail(Errno::ACCESS),
        };
    }
    // (A blocking connect on one in progress waits for it, as the kernel's.)
    let bound = match crate::sockets::connecting::get_waiting(fd, true) {
        None => None,
        Some(s) => match &*s {
            // Completed after EINPROGRESS: 0 once, as the kernel's.
            Socket::Stream(c) if c.completed_late.swap(false, Ordering::Relaxed) => {
                return Action::Done(0)
            }
            Socket::Stream(_) => return fail(Errno::ISCONN),
            Socket::Connecting(c) => return connect_again(fd, c),
            Socket::Listener(_) => return fail(Errno::INVAL),
            Socket::Bound(_) => Some(s.clone()),
            // (`datagram::connect` took it above; only the number closed
            // and given to a datagram socket in between gets here: no
            // panic in a hooked call.)
            Socket::Datagram(_) => return fail(Errno::INVAL),
        },
    };
    let family = bound.as_deref().map(Socket::family);
    let Some((config, target)) = diverted(fd, addr, family) else {
        return if bound.is_some() {
            fail(Errno::NETUNREACH)
        } else {
            crate::sockets::carry::done(fd);
            Action::Pass
        };
    };
    // A kernel socket connecting or connected already (it fell back to
    // kernel TCP, or went elsewhere first): the kernel answers a second
    // connect (EALREADY, EISCONN, or 0 once a non-blocking one completed:
    // APR asks that way), and the connection stays the kernel's.
    if bound.is_none() && !pristine && sys::tcp_in_use(sys::borrow_fd(fd)) == Some(true) {
        return Action::Pass;
    }
    let tcp_mode = config.fallback != Fallback::Never && bound.is_none();
    let local = match bound.as_deref() {
        Some(Socket::Bound(b)) => match b.reservation.lock().take() {
            Some(r) => r,
            None => return fail(Errno::INVAL),
        },
        _ => match crate::sockets::spare_fds::retry(|| {
            rendezvous::connecting_name(local_ip_for(fd, &target)?)
        }) {
            Ok(r) => r,
            Err(e) if tcp_mode => {
                log!(debug, "connect(fd {fd}) to {target}: no local name ({e})");
                return fallback(fd, target, stats::Outcome::Resources);
            }
            // (Its probe of the address's own name needs a second fd.)
            Err(Errno::MFILE) if !config.is_remote_ip(target.ip()) => {
                return match local_ip_for(fd, &target) {
                    Ok(ip) => at_limit(fd, config, target, ip, nonblocking_fd(fd)),
                    Err(e) => fail(e),
                }
            }
            Err(e) => return fail(e),
        },
    };
    // Another host's address (SHMNET_REMOTE): through this namespace's
    // gateway, the handshake carrying where to (docs/design/gateway.md).
    let remote = config.is_remote_ip(target.ip());
    let found = if remote {
        crate::transport::lookup::gateway()
    } else {
        match crate::transport::lookup::find(config, target, local.addr) {
            Found::Listener(t) => t,
            Found::None(why) if tcp_mode => return fallback(fd, target, why),
            Found::NoFds(_) if tcp_mode => return fallback(fd, target, stats::Outcome::Resources),
            Found::NoFds(e) => return fail(e),
            Found::None(why) => {
                if !matches!(why, stats::Outcome::Dir) {
                    log!(debug, "connect(fd {fd}) to {target}: {why:?}");
                }
                return refused(fd, Some(local), target, bound.is_some(), pristine);
            }
        }
    };
    let snapshot = || match bound.as_deref() {
        Some(s) => s.options().snapshot_copy(),
        None if pristine => Options::fresh_socket(),
        None => Options::snapshot(sys::borrow_fd(fd)),
    };
    let opts = snapshot();
    let nonblocking = nonblocking_fd(fd);
    let timeout = opts.timeout(libc::SO_SNDTIMEO);
    let found = Arc::new(found);
    let dial = |from| found.dial(config, nonblocking, timeout, from);
    let again = found.clone();
    let redial: crate::sockets::conn::Redial =
        Box::new(move |from| again.dial(config, true, timeout, from));
    let room = crate::sockets::spare_fds::give_back_inside;
    let local_ip = local.addr.ip();
    match Connection::connect(
        &dial,
        redial,
        room,
        local,
        target,
        config.ring_bytes,
        opts,
        nonblocking,
    ) {
        Ok(Dialed::Done(sock, conn)) => connected(fd, &sock, conn, nonblocking, target),
        Ok(Dialed::InProgress(sock, offered)) => in_progress(fd, &sock, offered, target),
        Err(e) if remote && tcp_mode => {
            // No gateway: the kernel connect the program asked for.
            let why = match e {
                DialError::NoListener => stats::Outcome::NoGateway,
                e => dial_outcome(fd, target, e),
            };
            log!(
                debug,
                "connect(fd {fd}) to {target}: no gateway, kernel TCP ({why:?})"
            );
            stats::count(why);
            crate::sockets::carry::done(fd);
            Action::Pass
        }
        Err(e) if tcp_mode => fallback(fd, target, dial_outcome(fd, target, e)),
        Err(DialError::NoListener) if remote => {
            stats::count(stats::Outcome::NoGateway);
            fail(Errno::CONNREFUSED)
        }
        // Out of fds for two at a time: one is enough this way.
        Err(DialError::Os(Errno::MFILE)) if bound.is_none() && !remote => {
            at_limit(fd, config, target, local_ip, nonblocking)
        }
        Err(e) => match dial_failed(target, e) {
            Action::Fail(libc::ECONNREFUSED) if !remote => {
                refused(fd, None, target, bound.is_some(), pristine)
            }
            r => r,
        },
    }
}

/// An emulated connect refused (`local`: its name, if still held): a
/// non-blocking one of a kernel socket says EINPROGRESS and leaves the
/// refusal to be reported, as kernel TCP's (`refusal`); any other
/// ECONNREFUSED at once. (A socket bound to an emulated address, and one
/// at the fd limit, `at_limit`, are refused at once.)
fn refused(
    fd: c_int,
    local: Option<crate::transport::rendezvous::Reservation>,
    target: SocketAddr,
    bound: bool,
    pristine: bool,
) -> Action<c_int> {
    // Only a socket our socket() made has its epoll registrations noted
    // (`carry`), to be made again on the Unix socket put on its number: on
    // one made past it (a dup's number, one inherited across exec or
    // passed with SCM_RIGHTS) they would be lost, and an event loop would
    // wait for ever for the refusal (review s38/review-fix38b).
    if bound || !nonblocking_fd(fd) || !crate::sockets::carry::is_fresh(fd) {
        return fail(Errno::CONNREFUSED);
    }
    let local = match local {
        Some(l) => Ok(l),
        None => local_ip_for(fd, &target).and_then(rendezvous::connecting_name),
    };
    let opts = if pristine {
        Options::fresh_socket()
    } else {
        Options::snapshot(sys::borrow_fd(fd))
    };
    let cloexec = rustix::io::fcntl_getfd(sys::borrow_fd(fd))
        .is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    let made = local
        .ok()
        .and_then(|l| crate::sockets::refusal::refused(l, target, opts, cloexec));
    let Some((sock, refusal)) = made else {
        return fail(Errno::CONNREFUSED);
    };
    if adopt(fd, &sock, false).is_err() {
        return fail(Errno::CONNREFUSED);
    }
    drop(sock);
    if registry::insert(fd, Arc::new(refusal)).is_err() {
        return fail(Errno::MFILE);
    }
    log!(
        debug,
        "fd {fd}: connect to {target} refused (EINPROGRESS, then SO_ERROR)"
    );
    // Registrations made on the kernel socket before: made again, and
    // kept noted for the kernel socket a second connect leaves
    // (`disconnect`).
    crate::sockets::readiness::replay_carried(fd, true);
    crate::sockets::carry::note_from_now(fd);
    fail(Errno::INPROGRESS)
}

fn nonblocking_fd(fd: c_int) -> bool {
    rustix::fs::fcntl_getfl(sys::borrow_fd(fd))
        .is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
}

/// The emulated mode's connect of a pristine or kernel-bound socket when
/// the process has one free fd where `Connection::connect` needs two
/// (decision 38): from `ip`. A failure after the application's kernel
/// socket was replaced puts a new one of its family on the number (its
/// options set again), so that a retry finds what kernel TCP leaves
/// after a failed connect.
fn at_limit(
    fd: c_int,
    config: &'static config::Config,
    target: SocketAddr,
    ip: IpAddr,
    nonblocking: bool,
) -> Action<c_int> {
    let pristine = crate::sockets::carry::pristine(fd).is_some();
    let opts = if pristine {
        Options::fresh_socket()
    } else {
        Options::snapshot(sys::borrow_fd(fd))
    };
    let found = match crate::transport::lookup::find(config, target, SocketAddr::new(ip, 0)) {
        Found::Listener(t) => t,
        Found::NoFds(e) => return fail(e),
        Found::None(_) => return fail(Errno::CONNREFUSED),
    };
    // A kernel-bound socket's name, for the replica (`restore_kernel_socket`).
    let name = if pristine {
        None
    } else {
        sys::local_name(sys::borrow_fd(fd)).filter(|a| a.port() != 0 || !a.ip().is_unspecified())
    };
    let timeout = opts.timeout(libc::SO_SNDTIMEO);
    let kept = opts.snapshot_copy();
    let dial =
        |app: std::os::fd::BorrowedFd<'_>| found.dial_from(config, nonblocking, timeout, app);
    let adopt_app = |sock: &OwnedFd| adopt(fd, sock, false);
    let made = Connection::connect_at_limit(
        &dial,
        &adopt_app,
        sys::borrow_fd(fd),
        ip,
        target,
        config.ring_bytes,
        opts,
        nonblocking,
    );
    match made {
        Ok((conn, cloexec)) => {
            log!(debug, "fd {fd}: connected to {target} with one free fd");
            registered(fd, conn, cloexec, target)
        }
        Err((e, adopted)) => {
            if adopted {
                restore_kernel_socket(fd, target, &kept, nonblocking, name);
            }
            dial_failed(target, e)
        }
    }
}

/// A new kernel stream socket of `target`'s family on `fd` (which
/// `at_limit` had made a Unix socket), with the options of `opts`
/// (`replica`), bound to `name` if the old one was, and the application's
/// flags (`nonblocking` is its own mode, never the Unix socket's); its
/// noted epoll registrations made again. The replica needs a free number,
/// which another thread may have taken since `at_limit` freed one: tried
/// again for up to `RESTORE_PATIENCE`. If none comes, the Unix socket
/// stays (shut down), in the application's blocking mode.
fn restore_kernel_socket(
    fd: c_int,
    target: SocketAddr,
    opts: &Options,
    nonblocking: bool,
    name: Option<SocketAddr>,
) {
    let app = sys::borrow_fd(fd);
    // The Unix socket was made non-blocking; the program's mode first, so
    // that even a Unix socket left behind reads as its own.
    if let Ok(fl) = rustix::fs::fcntl_getfl(app) {
        let fl = if nonblocking {
            fl | rustix::fs::OFlags::NONBLOCK
        } else {
            fl - rustix::fs::OFlags::NONBLOCK
        };
        let _ = rustix::fs::fcntl_setfl(app, fl);
    }
    let family = sys::family_of(&target);
    let start = std::time::Instant::now();
    let sock = loop {
        if let Some(sock) = crate::calls::options::replica::replica(family, opts) {
            break sock;
        }
        if crate::platform::sandbox::active() || start.elapsed() >= RESTORE_PATIENCE {
            log!(
                warn,
                "fd {fd}: no fd for a new kernel socket after a failed connect at the fd limit"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    };
    if let Some(name) = name {
        if let Err(e) = rustix::net::bind(&sock, &name) {
            log!(
                debug,
                "fd {fd}: the replica could not bind {name} again: {e}"
            );
        }
    }
    if nonblocking && rustix::io::ioctl_fionbio(&sock, true).is_err() {
        return;
    }
    let cloexec =
        rustix::io::fcntl_getfd(app).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    if sys::dup_onto(sock.as_fd(), fd, cloexec).is_ok() {
        crate::sockets::readiness::replay_carried(fd, true);
    }
}

/// How long a failed connect at the fd limit waits for a number to put a
/// new kernel socket on (`restore_kernel_socket`).
const RESTORE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// connect(2) succeeded over shared memory: the connection takes the fd.
fn connected(
    fd: c_int,
    sock: &OwnedFd,
    conn: Connection,
    nonblocking: bool,
    target: SocketAddr,
) -> Action<c_int> {
    let _ = nonblocking; // (`sock` is in the application's mode already)
    let cloexec = match adopt(fd, sock, false) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    registered(fd, conn, cloexec, target)
}

/// A connection whose Unix socket is on the application's fd (close-on-exec
/// if `cloexec`): registered under it.
fn registered(fd: c_int, conn: Connection, cloexec: bool, target: SocketAddr) -> Action<c_int> {
    log!(
        debug,
        "fd {fd}: connected {} -> {target} through shared memory",
        conn.local
    );
    let conn = Arc::new(Socket::Stream(conn));
    if !cloexec {
        conn.set_cloexec(false);
    }
    if registry::insert(fd, conn).is_err() {
        return fail(Errno::MFILE);
    }
    crate::sockets::readiness::replay_carried(fd, false);
    stats::count(stats::Outcome::Shm);
    Action::Done(0)
}

/// A non-blocking connect that offered a kept segment: EINPROGRESS; the
/// fd is the Unix connection, unwritable until the acceptor answered
/// (`connecting`).
fn in_progress(fd: c_int, sock: &OwnedFd, offered: Offered, target: SocketAddr) -> Action<c_int> {
    let cloexec = match adopt(fd, sock, false) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    log!(debug, "fd {fd}: connecting to {target} (EINPROGRESS)");
    let sock = Arc::new(Socket::Connecting(Connecting::new(offered, cloexec)));
    if registry::insert(fd, sock.clone()).is_err() {
        return fail(Errno::MFILE);
    }
    crate::sockets::connecting::watch(fd, &sock);
    // Kept noted: made again on the connection once it completes.
    crate::sockets::readiness::replay_carried(fd, true);
    crate::sockets::carry::note_from_now(fd);
    fail(Errno::INPROGRESS)
}

/// connect on a socket whose non-blocking connect is still in progress
/// (EALREADY), or failed: its error if not reported yet, else
/// ECONNABORTED (the kernel's answers); then the socket is disconnected,
/// as the kernel's, and a connect after this one starts again
/// (`disconnect`).
fn connect_again(fd: c_int, c: &Connecting) -> Action<c_int> {
    if !c.failed() {
        return fail(Errno::ALREADY);
    }
    let e = crate::sockets::connecting::take_error(fd, c);
    disconnect(fd, c);
    match e {
        0 => fail(Errno::CONNABORTED),
        e => Action::Fail(e),
    }
}

/// A failed connect reported by a second connect: the application's
/// number becomes a new kernel socket of its family (its options set
/// again, its flags kept), unconnected, and is ours no more. Without an fd
/// for it the failed socket stays (a later connect says ECONNABORTED).
fn disconnect(fd: c_int, c: &Connecting) {
    let Some(sock) = crate::calls::options::replica::replica(sys::family_of(&c.peer), &c.opts)
    else {
        return;
    };
    let app = sys::borrow_fd(fd);
    if nonblocking_fd(fd) && rustix::io::ioctl_fionbio(&sock, true).is_err() {
        return;
    }
    let cloexec =
        rustix::io::fcntl_getfd(app).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    crate::sockets::carry::detach(fd);
    let r = registry::while_replacing(fd, || match sys::dup_onto(sock.as_fd(), fd, cloexec) {
        Ok(()) => 0,
        Err(e) => -e.raw_os_error(),
    });
    if r != 0 {
        crate::sockets::readiness::replay_carried(fd, true);
        return;
    }
    if let Some(h) = crate::platform::fdtable::table().remove(fd) {
        drop(registry::release_fd(fd, h));
    }
    crate::sockets::readiness::replay_carried(fd, true);
    log!(
        debug,
        "fd {fd}: disconnected after its failed connect to {}",
        c.peer
    );
}

/// Why a shared-memory connect failed, as the default mode counts it
/// before it falls back to kernel TCP.
fn dial_outcome(fd: c_int, target: SocketAddr, e: DialError) -> stats::Outcome {
    match e {
        DialError::NoListener => stats::Outcome::NoListener,
        DialError::Policy => stats::Outcome::Policy,
        DialError::Refused => stats::Outcome::Refused,
        DialError::Os(Errno::NOBUFS | Errno::NOMEM | Errno::MFILE | Errno::NFILE) => {
            stats::Outcome::Resources
        }
        DialError::Os(e) => {
            log!(
                debug,
                "connect(fd {fd}) to {target} through shared memory failed: {e}"
            );
            stats::Outcome::Refused
        }
    }
}

/// A failed shared-memory connect in the emulated mode: the kernel's errno.
fn dial_failed(target: SocketAddr, e: DialError) -> Action<c_int> {
    match e {
        DialError::Os(e) => fail(e),
        DialError::Policy => {
            // Once per process: a client retrying in a loop must not fill
            // its log (nginx: 180 000 lines in 10 s).
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                crate::platform::log::always(format_args!(
                    "connect to {target}: refused, the listener's SHMNET_ALLOW does not admit \
                     uid {} (docs/security.md; said once)",
                    rustix::process::geteuid().as_raw()
                ));
            } else {
                log!(
                    debug,
                    "connect to {target}: refused by the listener's policy"
                );
            }
            fail(Errno::CONNREFUSED)
        }
        DialError::NoListener => {
            if rendezvous::is_loopback(target.ip()) {
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                let said = || SAID.swap(true, std::sync::atomic::Ordering::Relaxed);
                if let Some(v) = rendezvous::other_version_at(target).filter(|_| !said()) {
                    crate::platform::log::always(format_args!(
                        "connect to {target}: refused, its listener runs a libshmnet of \
                         handshake version {v}, this one speaks {} (preload one build on both; said once)",
                        crate::transport::handshake::VERSION
                    ));
                }
            }
            fail(Errno::CONNREFUSED)
        }
        DialError::Refused => fail(Errno::CONNREFUSED),
    }
}

/// `SHMNET_FALLBACK=tcp`: the kernel connect on the application's own
/// socket (untouched so far: options, non-blocking mode and EINPROGRESS are
/// the kernel's) — but only to an address of this network namespace or of
/// a neighbouring one on this host (behind a veth): a partition address
/// elsewhere without a shared-memory listener is refused, so that no
/// packet ever leaves the host on the library's account.
fn fallback(fd: c_int, target: SocketAddr, why: stats::Outcome) -> Action<c_int> {
    let ip = rendezvous::unmapped(target).ip();
    if !(crate::platform::netlink::is_local(ip)
        || crate::transport::lookup::neighbour(ip).is_some())
    {
        log!(
            debug,
            "connect(fd {fd}) to {target}: no shared-memory listener, and not an address of this host"
        );
        return fail(Errno::CONNREFUSED);
    }
    log!(debug, "connect(fd {fd}) to {target}: kernel TCP ({why:?})");
    stats::count(why);
    crate::sockets::carry::done(fd);
    Action::Pass
}

pub(crate) fn shutdown(fd: c_int, how: c_int) -> Action<c_int> {
    match crate::sockets::connecting::get(fd).as_deref() {
        None => Action::Pass,
        Some(Socket::Stream(c)) => match c.shutdown(how) {
            Ok(()) => Action::Done(0),
            Err(e) => fail(e),
        },
        Some(Socket::Listener(l)) => shut_listener(fd, l, how),
        Some(Socket::Bound(_) | Socket::Connecting(_)) => fail(Errno::NOTCONN),
        Some(Socket::Datagram(_)) if !(0..=2).contains(&how) => fail(Errno::INVAL),
        // Marked either way, as the kernel's UDP (ENOTCONN unconnected).
        Some(Socket::Datagram(d)) => {
            d.shutdown(how);
            match d.peer() {
                Some(_) => Action::Done(0),
                None => fail(Errno::NOTCONN),
            }
        }
    }
}

/// shutdown(2) of a listener, as the kernel's of a TCP listener: SHUT_WR
/// changes nothing; SHUT_RD and SHUT_RDWR close it (a blocked accept
/// wakes, every accept says EINVAL, connectors are refused, the queued
/// ones dropped), its address kept (`Listener::shut_down`).
fn shut_listener(fd: c_int, l: &Listener, how: c_int) -> Action<c_int> {
    let how = match how {
        libc::SHUT_RD => rustix::net::Shutdown::Read,
        libc::SHUT_WR => rustix::net::Shutdown::Write,
        libc::SHUT_RDWR => rustix::net::Shutdown::Both,
        _ => return fail(Errno::INVAL),
    };
    if let Some(tcp) = l.tcp() {
        if let Err(e) = rustix::net::shutdown(tcp, how) {
            return fail(e);
        }
    }
    // (A sandboxed process cannot accept from ours, and its filter may
    // kill for the calls `shut_down` makes.)
    if how != rustix::net::Shutdown::Write && !crate::platform::sandbox::active() {
        log!(debug, "fd {fd}: listener {} shut down", l.local);
        l.shut_down(sys::borrow_fd(fd));
    }
    Action::Done(0)
}

pub(crate) fn getsockname(fd: c_int, out: AddrOut<'_>) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    if let Socket::Listener(l) = &*sock {
        if let Some(tcp) = l.tcp() {
            // The kernel listener's own answer (the port it picked for port 0).
            return match sys::local_name(tcp) {
                Some(name) => put_name(name, out),
                None => fail(Errno::NOTSOCK),
            };
        }
    }
    if let Socket::Datagram(d) = &*sock {
        return put_name(d.sockname(), out);
    }
    put_name(sock.local(), out)
}

pub(crate) fn getpeername(fd: c_int, out: AddrOut<'_>) -> Action<c_int> {
    match crate::sockets::connecting::get(fd).as_deref() {
        None => Action::Pass,
        Some(Socket::Stream(c)) => put_name(c.peer, out),
        Some(Socket::Listener(_) | Socket::Bound(_) | Socket::Connecting(_)) => {
            fail(Errno::NOTCONN)
        }
        Some(Socket::Datagram(d)) => match d.peer() {
            Some(p) => put_name(as_family(p, d.is_v6()).unwrap_or(p), out),
            None => fail(Errno::NOTCONN),
        },
    }
}

fn put_name(name: SocketAddr, out: AddrOut<'_>) -> Action<c_int> {
    if out.is_null() {
        return fail(Errno::FAULT);
    }
    if let Err(e) = out.room() {
        return Action::Fail(e);
    }
    out.put(name);
    Action::Done(0)
}
