//! Emulated sockets inherited across exec.
//!
//! exec drops the library's state while the application's fds stay open. A
//! freshly loaded library therefore looks once, at start-up, for fds that
//! are rendezvous objects of ours (abstract names under
//! `rendezvous::PREFIX`):
//! - a listener (an epoll instance in front of a listening Unix socket
//!   named after an emulated address, which goes across exec with the
//!   application's fd) is made again: inetd-style servers and `socat
//!   EXEC:` keep accepting;
//! - a default-mode listener (an epoll instance in front of a kernel TCP
//!   listener, inherited with it) becomes one again: the kernel listener
//!   goes back onto the fd number, and gets a new rendezvous;
//! - a socket bound to an emulated address, not listening, is bound again;
//! - a connection cannot be re-attached yet (its ring is not reachable from
//!   the fd alone), so its fd number is pointed at a closed socket: the
//!   program reads end-of-stream and gets EPIPE on writes, and one
//!   `libshmnet:` line says why — rather than reading doorbell bytes as data.
//!
//! Listeners of non-local partition addresses (names in SHMNET_DIR, bound
//! through a /proc/self/fd path) are not recognised after exec.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::config::Config;
use crate::listener::Bound;
use crate::rendezvous;
use crate::socket::{InternalFd, Options, Socket};
use crate::{registry, sys};

/// The name of an abstract Unix socket address of ours.
fn our_name(addr: Option<rustix::net::SocketAddrAny>) -> Option<Vec<u8>> {
    let unix = rustix::net::SocketAddrUnix::try_from(addr?).ok()?;
    let name = unix.abstract_name()?;
    name.starts_with(rendezvous::PREFIX.as_bytes())
        .then(|| name.to_vec())
}

/// Scans the open fds once, at start-up (see the module docs).
pub(crate) fn adopt(config: &Config) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<(i32, Vec<u8>)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            // Only sockets and epoll instances can be ours: one readlink
            // each tells, before any socket call.
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.as_os_str().as_bytes().to_vec()))
        })
        .collect();
    for (fd, target) in fds {
        if fd <= 2 && !target.starts_with(b"socket:") {
            continue;
        }
        if target == b"anon_inode:[eventpoll]" {
            listener(config, fd);
        } else if target.starts_with(b"socket:") {
            socket(fd);
        }
    }
}

fn socket(fd: i32) {
    let sock = sys::borrow_fd(fd);
    if rustix::net::sockopt::socket_domain(sock).ok() != Some(rustix::net::AddressFamily::UNIX) {
        return;
    }
    let local = our_name(rustix::net::getsockname(sock).ok());
    match rustix::net::getpeername(sock) {
        // A connection: an accepted one carries its listener's name, a
        // connecting one has it as its peer.
        Ok(peer) => {
            if let Some(name) = local.or_else(|| our_name(peer)) {
                poison(fd, sock, &name);
            }
        }
        // Bound, not listening (listening ones sit behind an epoll
        // instance): bound again.
        Err(_) => {
            if let Some(addr) = local.as_deref().and_then(rendezvous::parse_addr_name) {
                if !rustix::net::sockopt::socket_acceptconn(sock).unwrap_or(false) {
                    bound(fd, sock, addr);
                }
            }
        }
    }
}

fn bound(fd: i32, sock: BorrowedFd<'_>, addr: SocketAddr) {
    let Ok(copy) = InternalFd::dup(sock) else {
        return;
    };
    let b = Bound::new(
        rendezvous::Reservation::of_socket(addr, copy),
        None,
        Options::default(),
    );
    log!(
        debug,
        "fd {fd}: adopted the inherited socket bound to {addr}"
    );
    let _ = registry::insert(fd, Arc::new(Socket::Bound(b)));
}

/// The members of the epoll instance `fd` (from /proc/self/fdinfo) that
/// this process holds under the number they were registered with: a
/// registration names the fd number of the process that made it, which
/// here may be another file (or none), so the file's inode must match too.
fn members(fd: i32) -> Vec<i32> {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("tfd:")?.split_whitespace();
            let tfd: i32 = words.next()?.parse().ok()?;
            let ino = words.find_map(|w| w.strip_prefix("ino:"))?;
            let ino = u64::from_str_radix(ino, 16).ok()?;
            let st = rustix::fs::fstat(sys::borrow_fd(tfd)).ok()?;
            (st.st_ino as u64 == ino).then_some(tfd)
        })
        .collect()
}

/// An inherited epoll instance is one of our listeners if its members say
/// so (a program's own epoll set that happens to watch a listener is left
/// alone unless that listener is its only member).
fn listener(config: &Config, fd: i32) {
    let all = members(fd);
    let listening =
        |m: i32| rustix::net::sockopt::socket_acceptconn(sys::borrow_fd(m)).unwrap_or(false);
    let inet = |m: i32| {
        matches!(
            rustix::net::sockopt::socket_domain(sys::borrow_fd(m)),
            Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6)
        )
    };
    // A default-mode listener: a kernel listener with the rendezvous named
    // after its cookie beside it (a program's own epoll set watching a
    // listener has no such thing). Else an emulated one: a listening Unix
    // socket of ours (parked connections may be members too).
    let dual = all
        .iter()
        .copied()
        .filter(|&m| inet(m) && listening(m))
        .find_map(|m| Some((m, cookie_rendezvous(&all, sys::borrow_fd(m))?)));
    let first = match dual {
        Some((m, _)) => m,
        None if all.iter().any(|&m| inet(m)) => return,
        None => match all.iter().copied().find(|&m| listening(m)) {
            Some(m) => m,
            None => return,
        },
    };
    let t = sys::borrow_fd(first);
    let app = sys::borrow_fd(fd);
    let cloexec =
        rustix::io::fcntl_getfd(app).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    // The application's blocking mode was the epoll instance's.
    let nonblock =
        rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    match rustix::net::sockopt::socket_domain(t) {
        Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6) => {
            let Some((_, rv)) = dual else {
                return;
            };
            let Ok(rv_copy) = InternalFd::dup(sys::borrow_fd(rv)) else {
                return;
            };
            set_nonblock(t, nonblock);
            if sys::dup_onto(t, fd, cloexec).is_err() {
                return;
            }
            sys::close_inherited(first);
            sys::close_inherited(rv);
            log!(debug, "fd {fd}: an inherited listener, made again");
            let _ = crate::listener::listen_tcp_with(fd, libc::SOMAXCONN, config, Some(rv_copy));
        }
        Ok(rustix::net::AddressFamily::UNIX) => {
            let Some(addr) = our_name(rustix::net::getsockname(t).ok())
                .and_then(|n| rendezvous::parse_addr_name(&n))
            else {
                return;
            };
            // Bound again from its socket, then listening again (a new
            // epoll instance and parking queue replace the old ones).
            let Ok(copy) = InternalFd::dup(t) else {
                return;
            };
            set_nonblock(t, nonblock);
            if sys::dup_onto(t, fd, cloexec).is_err() {
                return;
            }
            sys::close_inherited(first);
            let b = Bound::new(
                rendezvous::Reservation::of_socket(addr, copy),
                None,
                Options::default(),
            );
            log!(debug, "fd {fd}: adopted the inherited listener of {addr}");
            let _ = crate::listener::listen_emulated(fd, &b, libc::SOMAXCONN);
        }
        _ => {}
    }
}

/// The one of `members` that is the listening rendezvous
/// named after kernel listener `tcp`'s cookie.
fn cookie_rendezvous(members: &[i32], tcp: BorrowedFd<'_>) -> Option<i32> {
    let cookie = rustix::net::sockopt::socket_cookie(tcp).ok()?;
    let want = rendezvous::cookie_name(cookie);
    members.iter().copied().find(|&m| {
        let u = sys::borrow_fd(m);
        rustix::net::sockopt::socket_domain(u).ok() == Some(rustix::net::AddressFamily::UNIX)
            && rustix::net::sockopt::socket_acceptconn(u).unwrap_or(false)
            && our_name(rustix::net::getsockname(u).ok()).as_deref() == Some(want.as_bytes())
    })
}

fn set_nonblock(sock: BorrowedFd<'_>, nonblock: bool) {
    if let Ok(fl) = rustix::fs::fcntl_getfl(sock) {
        let fl = if nonblock {
            fl | rustix::fs::OFlags::NONBLOCK
        } else {
            fl - rustix::fs::OFlags::NONBLOCK
        };
        let _ = rustix::fs::fcntl_setfl(sock, fl);
    }
}

/// Points `fd` at a socket whose peer is closed (EOF on read, EPIPE on write).
fn poison(fd: i32, sock: BorrowedFd<'_>, name: &[u8]) {
    crate::log::always(format_args!(
        "fd {fd}: an emulated connection (to {}) inherited across exec cannot be used \
         yet; it reads as closed",
        String::from_utf8_lossy(name)
    ));
    let Ok((dead, peer)) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    ) else {
        return;
    };
    drop(peer);
    let cloexec =
        rustix::io::fcntl_getfd(sock).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    let _ = sys::dup_onto(dead.as_fd(), fd, cloexec);
}
