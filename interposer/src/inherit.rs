//! Emulated sockets inherited across exec.
//!
//! exec drops the library's state while the application's fds stay open. A
//! freshly loaded library therefore looks once, at start-up, for fds that are
//! rendezvous objects of `SHMNET_DIR`:
//! - a listener (a listening Unix socket bound to `tcp4-<ip>-<port>`) is
//!   adopted: its name says its virtual address, and accept works as before
//!   (inetd-style servers, `socat EXEC:`);
//! - a dual listener (`dual`: an epoll instance in front of a kernel TCP
//!   listener, which is inherited with it when the application's fd was)
//!   becomes a dual listener again: the kernel listener goes back onto the
//!   fd number, and gets a new rendezvous;
//! - a connection cannot be re-attached yet (its ring is not reachable from
//!   the fd alone), so its fd number is pointed at a closed socket: the
//!   program reads end-of-stream and gets EPIPE on writes, and one
//!   `libshmnet:` line says why — rather than reading doorbell bytes as data.
#![deny(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::socket::{Listener, Socket};
use crate::{registry, sys};

/// What a rendezvous file name says: `tcp4-127.77.0.1-8080`.
pub(crate) fn parse_name(name: &str) -> Option<SocketAddr> {
    let rest = name
        .strip_prefix("tcp4-")
        .or_else(|| name.strip_prefix("tcp6-"))?;
    let (ip, port) = rest.rsplit_once('-')?;
    let ip: IpAddr = ip.parse().ok()?;
    let v4 = name.starts_with("tcp4-");
    (ip.is_ipv4() == v4).then_some(SocketAddr::new(ip, port.parse().ok()?))
}

/// The rendezvous path behind a Unix socket address, if it is one of ours.
fn ours(
    config: &Config,
    addr: Option<rustix::net::SocketAddrAny>,
) -> Option<(PathBuf, SocketAddr)> {
    let unix = rustix::net::SocketAddrUnix::try_from(addr?).ok()?;
    let path = Path::new(std::ffi::OsStr::from_bytes(unix.path_bytes()?)).to_path_buf();
    if path.parent()? != config.dir_path() {
        return None;
    }
    let virt = parse_name(path.file_name()?.to_str()?)?;
    Some((path, virt))
}

/// Scans the open fds once, at start-up (see the module docs).
pub(crate) fn adopt(config: &Config) {
    // No rendezvous directory yet: nothing can have been inherited, and
    // most preloaded programs start this way — skip the scan.
    if !config.dir_path().is_dir() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        let sock = sys::borrow_fd(fd);
        if is_epoll(fd) {
            dual_listener(config, fd);
            continue;
        }
        if rustix::net::sockopt::socket_domain(sock).ok() != Some(rustix::net::AddressFamily::UNIX)
        {
            continue;
        }
        let local = ours(config, rustix::net::getsockname(sock).ok());
        let listening = rustix::net::sockopt::socket_acceptconn(sock).unwrap_or(false);
        match (local, listening) {
            (Some((path, virt)), true) => {
                let listener = Listener::inherited(virt, path, &config.dir_path());
                log!(debug, "fd {fd}: adopted the inherited listener of {virt}");
                let _ = registry::insert(fd, Arc::new(Socket::Listener(listener)));
            }
            (Some((_, virt)), false) => poison(fd, sock, virt),
            (None, _) => {
                if let Some((_, virt)) = ours(config, rustix::net::getpeername(sock).ok().flatten())
                {
                    poison(fd, sock, virt);
                }
            }
        }
    }
}

fn is_epoll(fd: i32) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|t| t.as_os_str().as_bytes() == b"anon_inode:[eventpoll]")
}

/// An inherited epoll instance holding a listening TCP socket is a dual
/// listener of the program that exec'd us (or a program's own epoll set
/// that happens to watch a listener: then the fd is left alone unless the
/// listener is its only entry).
fn dual_listener(config: &Config, fd: i32) {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
        return;
    };
    let targets: Vec<i32> = info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("tfd:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let [tcp] = targets[..] else {
        return;
    };
    let t = sys::borrow_fd(tcp);
    let inet = matches!(
        rustix::net::sockopt::socket_domain(t),
        Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6)
    );
    if !inet || !rustix::net::sockopt::socket_acceptconn(t).unwrap_or(false) {
        return;
    }
    let app = sys::borrow_fd(fd);
    let cloexec =
        rustix::io::fcntl_getfd(app).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    // The application's blocking mode was the epoll instance's.
    let nonblock =
        rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    if let Ok(fl) = rustix::fs::fcntl_getfl(t) {
        let fl = if nonblock {
            fl | rustix::fs::OFlags::NONBLOCK
        } else {
            fl - rustix::fs::OFlags::NONBLOCK
        };
        let _ = rustix::fs::fcntl_setfl(t, fl);
    }
    if sys::dup_onto(t, fd, cloexec).is_err() {
        return;
    }
    sys::close_inherited(tcp);
    log!(debug, "fd {fd}: an inherited dual listener, made again");
    let _ = crate::dual::listen(fd, libc::SOMAXCONN, config);
}

/// Points `fd` at a socket whose peer is closed (EOF on read, EPIPE on write).
fn poison(fd: i32, sock: BorrowedFd<'_>, virt: SocketAddr) {
    crate::log::always(format_args!(
        "fd {fd}: an emulated connection ({virt}) inherited across exec cannot be used \
         yet; it reads as closed"
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

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn rendezvous_names_parse_back_to_addresses() {
        assert_eq!(
            parse_name("tcp4-127.77.0.1-8080"),
            Some("127.77.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_name("tcp6-::1-443"),
            Some("[::1]:443".parse().unwrap())
        );
        for bad in [
            "tcp4-::1-1",
            "tcp6-127.0.0.1-1",
            "tcp4-127.0.0.1",
            "tcp4-x-1",
            "udp4-127.0.0.1-1",
            "tcp4-127.0.0.1-99999",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
