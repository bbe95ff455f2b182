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
#![deny(unsafe_code)]

use core::ffi::c_int;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use libc::{sockaddr, socklen_t};
use rustix::io::Errno;

use crate::config::{self, Fallback};
use crate::hooks::Action;
use crate::socket::{Connection, Listener, Options, Socket};
use crate::{registry, rendezvous, stats, sys};

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
    addr: *const sockaddr,
    len: socklen_t,
    family: Option<c_int>,
) -> Option<(&'static config::Config, SocketAddr)> {
    let config = config::get()?;
    #[allow(unsafe_code)]
    // SAFETY: bind(2)/connect(2) require `len` readable bytes at `addr` (or
    // null, which is checked); we only read them.
    let target = unsafe { sys::socket_addr(addr, len) }?;
    if !config.is_partition_ip(target.ip()) {
        return None;
    }
    let family = match family {
        Some(f) => f,
        None => {
            let sock = sys::borrow_fd(fd);
            if rustix::net::sockopt::socket_type(sock).ok()? != rustix::net::SocketType::STREAM {
                return None;
            }
            match rustix::net::sockopt::socket_domain(sock).ok()? {
                rustix::net::AddressFamily::INET => libc::AF_INET,
                rustix::net::AddressFamily::INET6 => libc::AF_INET6,
                _ => return None,
            }
        }
    };
    (family == crate::socket::family_of(&target)).then_some((config, target))
}

/// Re-points the application's fd number at `sock`, keeping the fd's
/// close-on-exec flag and its non-blocking mode.
fn adopt(fd: c_int, sock: &OwnedFd) -> Result<(), Errno> {
    let app = sys::borrow_fd(fd);
    let cloexec = rustix::io::fcntl_getfd(app)?.contains(rustix::io::FdFlags::CLOEXEC);
    let nonblock = rustix::fs::fcntl_getfl(app)?.contains(rustix::fs::OFlags::NONBLOCK);
    if nonblock {
        let fl = rustix::fs::fcntl_getfl(sock)?;
        rustix::fs::fcntl_setfl(sock, fl | rustix::fs::OFlags::NONBLOCK)?;
    }
    sys::dup_onto(sock.as_fd(), fd, cloexec)
}

fn unix_socket() -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
}

pub(crate) fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Action<c_int> {
    if registry::get(fd).is_some() {
        return fail(Errno::INVAL); // already bound
    }
    let Some((config, target)) = diverted(fd, addr, len, None) else {
        return Action::Pass;
    };
    if config.fallback != Fallback::Never {
        log!(
            debug,
            "bind(fd {fd}) to partition address {target}: kernel listener (tcp fallback mode)"
        );
        return Action::Pass;
    }
    match bind_listener(fd, config, target) {
        Ok(()) => Action::Done(0),
        Err(e) => fail(e),
    }
}

fn bind_listener(fd: c_int, config: &config::Config, target: SocketAddr) -> Result<(), Errno> {
    let reservation = if target.port() == 0 {
        rendezvous::reserve_ephemeral(&config.dir_path(), target.ip())?
    } else {
        rendezvous::reserve(&config.dir_path(), target)?
    };
    let path = rendezvous::socket_path(&config.dir_path(), reservation.addr);
    let opts = Options::snapshot(sys::borrow_fd(fd));
    let sock = unix_socket()?;
    let name = rustix::net::SocketAddrUnix::new(&path).inspect_err(|_| {
        log!(
            error,
            "rendezvous path {} is too long for a Unix socket; shorten SHMNET_DIR",
            path.display()
        );
    })?;
    // We hold the reservation, so a file at `path` is a stale rendezvous of
    // a process that died: replace it.
    let _ = std::fs::remove_file(&path);
    rustix::net::bind(&sock, &name)?;
    adopt(fd, &sock)?;
    log!(
        debug,
        "fd {fd}: listener bound to {} at {}",
        reservation.addr,
        path.display()
    );
    let listener = Listener::new(reservation, path, opts);
    registry::insert(fd, Arc::new(Socket::Listener(listener))).map_err(|()| Errno::MFILE)
}

pub(crate) fn listen(fd: c_int, backlog: c_int) -> Action<c_int> {
    match registry::get(fd).as_deref() {
        None => match config::get() {
            Some(c) if c.fallback == Fallback::Tcp => crate::dual::listen(fd, backlog, c),
            _ => Action::Pass,
        },
        Some(Socket::Dual(d)) => d.relisten(backlog),
        Some(Socket::Listener(l)) => {
            l.listening
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Action::Pass // the real listen(2), on the rendezvous socket
        }
        Some(Socket::Stream(_)) => fail(Errno::INVAL),
    }
}

pub(crate) fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Action<c_int> {
    accept4(fd, addr, len, 0)
}

pub(crate) fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> Action<c_int> {
    let sock = match registry::get(fd) {
        None => return Action::Pass,
        Some(s) => s,
    };
    let listener = match &*sock {
        Socket::Listener(l) => l,
        Socket::Dual(d) => return d.accept(fd, addr, len, flags),
        Socket::Stream(_) => return fail(Errno::INVAL),
    };
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return fail(Errno::INVAL);
    }
    let mut sflags = rustix::net::SocketFlags::empty();
    if flags & libc::SOCK_NONBLOCK != 0 {
        sflags |= rustix::net::SocketFlags::NONBLOCK;
    }
    if flags & libc::SOCK_CLOEXEC != 0 {
        sflags |= rustix::net::SocketFlags::CLOEXEC;
    }
    // How long a connector may take to send its connect message (it does so
    // right after connecting): short for an event loop's non-blocking accept.
    let nonblocking = rustix::fs::fcntl_getfl(sys::borrow_fd(fd))
        .is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    let patience = Duration::from_millis(if nonblocking { 50 } else { 2000 });
    loop {
        // The real accept on the rendezvous socket: blocking or not as the
        // application set the listener, interrupted by signals as usual.
        let conn = match rustix::net::accept_with(sys::borrow_fd(fd), sflags) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let connection = match listener.handshake(conn.as_fd(), patience) {
            Ok(c) => c,
            Err(e) => {
                crate::socket::handshake_failed(listener.local, e);
                continue;
            }
        };
        let peer = connection.peer;
        let raw = conn.as_raw_fd();
        if registry::insert(raw, Arc::new(Socket::Stream(connection))).is_err() {
            return fail(Errno::MFILE); // dropping `conn` closes it
        }
        let raw = conn.into_raw_fd(); // the application's now
        #[allow(unsafe_code)]
        // SAFETY: accept(2) requires `addr`/`len` to be null or valid.
        unsafe {
            sys::put_socket_addr(peer, addr, len)
        };
        log!(debug, "fd {fd}: accepted {peer} as fd {raw}");
        return Action::Done(raw);
    }
}

/// The local name of a connecting socket that was not bound: the loopback
/// address of its family, as the kernel picks for a loopback destination.
fn local_ip_for(peer: &SocketAddr) -> IpAddr {
    match peer {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        // An IPv4 destination on an IPv6 socket: the kernel's source is
        // IPv4 too, seen through the mapping.
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        }
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

pub(crate) fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Action<c_int> {
    let bound = match registry::get(fd) {
        None => None,
        Some(s) => match &*s {
            Socket::Stream(_) => return fail(Errno::ISCONN),
            Socket::Dual(_) => return fail(Errno::INVAL),
            Socket::Listener(l) if l.listening.load(std::sync::atomic::Ordering::Relaxed) => {
                return fail(Errno::INVAL)
            }
            Socket::Listener(_) => Some(s.clone()),
        },
    };
    let family = bound.as_deref().map(Socket::family);
    let Some((config, target)) = diverted(fd, addr, len, family) else {
        return if bound.is_some() {
            fail(Errno::NETUNREACH)
        } else {
            Action::Pass
        };
    };
    // Under `never`, and for a socket bound through us, the one rendezvous
    // of the address; under `tcp`, any listener that accepts for it.
    let tcp_mode = config.fallback != Fallback::Never && bound.is_none();
    let mut paths = if tcp_mode {
        rendezvous::candidates(target)
            .iter()
            .map(|stem| config.dir_path().join(stem))
            .filter(|p| p.exists())
            .collect::<Vec<_>>()
    } else {
        vec![rendezvous::socket_path(&config.dir_path(), target)]
    };
    if tcp_mode && paths.is_empty() {
        // Listeners sharing a port (SO_REUSEPORT) after the first one.
        paths = rendezvous::candidates(target)
            .iter()
            .flat_map(|stem| rendezvous::alternates(&config.dir_path(), stem))
            .collect();
    }
    if tcp_mode && paths.is_empty() {
        return fallback(fd, config, target, stats::Outcome::NoListener);
    }
    let local = match bound.as_deref() {
        Some(Socket::Listener(l)) => match l.reservation.lock().take() {
            Some(r) => r,
            None => return fail(Errno::INVAL),
        },
        _ => match rendezvous::connecting_name(&config.dir_path(), local_ip_for(&target)) {
            Ok(r) => r,
            Err(e) if tcp_mode => {
                log!(debug, "connect(fd {fd}) to {target}: no local name ({e})");
                return fallback(fd, config, target, stats::Outcome::Resources);
            }
            Err(e) => return fail(e),
        },
    };
    let opts = match bound.as_deref() {
        Some(s) => s.options().snapshot_copy(),
        None => Options::snapshot(sys::borrow_fd(fd)),
    };
    let nonblocking = rustix::fs::fcntl_getfl(sys::borrow_fd(fd))
        .is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    match Connection::connect(&paths, local, target, config.ring_bytes, opts, nonblocking) {
        Ok((sock, conn)) => {
            if let Err(e) = adopt(fd, &sock) {
                return fail(e);
            }
            log!(
                debug,
                "fd {fd}: connected {} -> {target} through shared memory",
                conn.local
            );
            if registry::insert(fd, Arc::new(Socket::Stream(conn))).is_err() {
                return fail(Errno::MFILE);
            }
            if tcp_mode {
                stats::count(stats::Outcome::Shm);
            }
            Action::Done(0)
        }
        Err(e) if tcp_mode => {
            log!(
                debug,
                "connect(fd {fd}) to {target} through shared memory failed: {e}"
            );
            let why = match e {
                Errno::NOBUFS | Errno::NOMEM | Errno::MFILE | Errno::NFILE => {
                    stats::Outcome::Resources
                }
                _ => stats::Outcome::Refused,
            };
            fallback(fd, config, target, why)
        }
        Err(e) => fail(e),
    }
}

/// `SHMNET_FALLBACK=tcp`: the kernel connect on the application's own
/// socket (untouched so far: options, non-blocking mode and EINPROGRESS are
/// the kernel's) — but only to an address of this host; a partition
/// address elsewhere without a shared-memory listener is refused, so that
/// no packet ever leaves the host on the library's account.
fn fallback(
    fd: c_int,
    config: &config::Config,
    target: SocketAddr,
    why: stats::Outcome,
) -> Action<c_int> {
    if !sys::is_local_address(target.ip()) {
        log!(
            debug,
            "connect(fd {fd}) to {target}: no shared-memory listener, and not a local address"
        );
        return fail(Errno::CONNREFUSED);
    }
    let _ = config;
    log!(debug, "connect(fd {fd}) to {target}: kernel TCP ({why:?})");
    stats::count(why);
    Action::Pass
}

pub(crate) fn shutdown(fd: c_int, how: c_int) -> Action<c_int> {
    match registry::get(fd).as_deref() {
        None => Action::Pass,
        Some(Socket::Stream(c)) => match c.shutdown(how) {
            Ok(()) => Action::Done(0),
            Err(e) => fail(e),
        },
        Some(Socket::Listener(_)) => fail(Errno::NOTCONN),
        Some(Socket::Dual(d)) => match rustix::net::shutdown(
            d.tcp(),
            match how {
                libc::SHUT_RD => rustix::net::Shutdown::Read,
                libc::SHUT_WR => rustix::net::Shutdown::Write,
                _ => rustix::net::Shutdown::Both,
            },
        ) {
            Ok(()) => Action::Done(0),
            Err(e) => fail(e),
        },
    }
}

pub(crate) fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    if let Socket::Dual(d) = &*sock {
        // The kernel listener's own answer (the port it picked for port 0).
        return match sys::local_name(d.tcp()) {
            Some(name) => put_name(name, addr, len),
            None => fail(Errno::NOTSOCK),
        };
    }
    put_name(sock.local(), addr, len)
}

pub(crate) fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Action<c_int> {
    match registry::get(fd).as_deref() {
        None => Action::Pass,
        Some(Socket::Stream(c)) => put_name(c.peer, addr, len),
        Some(Socket::Listener(_) | Socket::Dual(_)) => fail(Errno::NOTCONN),
    }
}

fn put_name(name: SocketAddr, addr: *mut sockaddr, len: *mut socklen_t) -> Action<c_int> {
    if addr.is_null() || len.is_null() {
        return fail(Errno::FAULT);
    }
    #[allow(unsafe_code)]
    // SAFETY: getsockname(2)/getpeername(2) require valid `addr`/`len`.
    unsafe {
        sys::put_socket_addr(name, addr, len)
    };
    Action::Done(0)
}
