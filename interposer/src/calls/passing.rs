//! Sockets of ours passed to another process with SCM_RIGHTS (decision 67).
//!
//! An fd of ours is often not what a kernel socket of its kind would be
//! (a listener's is an epoll instance, a connection's the Unix socket
//! between the two processes), so what another process receives must be
//! made what it can use. At the sender (sendmsg on a socket not ours):
//! - a UDP socket goes as its kernel socket (decision 63);
//! - a default-mode listener goes as its kernel listener, and its
//!   rendezvous is retired as for an exec into a plain image (decision 53):
//!   preloaded connectors take kernel TCP, where every holder of the
//!   kernel listener accepts them;
//! - a default-mode socket bound by root, whose rendezvous was made at bind
//!   (`listener::early`), goes as it is, that rendezvous shut and closed:
//!   it held the name a preloaded receiver's listen takes, and connectors
//!   queued in it where nobody accepts;
//! - an emulated listener goes as its listening Unix socket (its name is
//!   its address), an emulated bound socket as it is (its fd is the Unix
//!   socket holding the name);
//! - a connection goes as it is, with its carrier (`sockets::carrier`, as
//!   for exec) appended after the caller's fds: a second SCM_RIGHTS cmsg,
//!   which the kernel merges into one list after the caller's.
//!
//! At the receiver (recvmsg on a socket not ours, with a control buffer of
//! the library's a little longer than the caller's): carriers at the end
//! of the list are taken out, the rest laid into the caller's buffer as the
//! kernel would have for its length (`sys::refit_rights`), and each
//! received socket of ours adopted as exec adopts an inherited one
//! (`exec::adopt_received`). A receiver that runs without the library gets
//! the carriers as extra fds, and a bare Unix socket for a connection.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::calls::datagram;
use crate::platform::fdtable;
use crate::platform::internal_fd::InternalFd;
use crate::platform::sys;
use crate::sockets::listener::early;
use crate::sockets::registry;
use crate::sockets::socket::Socket;

/// What a sendmsg passing sockets of ours passes instead: an fd in place
/// of each of some of the caller's, and carriers after them. Held until
/// the call returns.
#[derive(Default)]
pub(crate) struct Passed {
    swaps: Vec<(c_int, OwnedFd)>,
    udp: Vec<(c_int, datagram::Kernel)>,
    carriers: Vec<InternalFd>,
}

impl Passed {
    /// The fd that goes in place of the caller's `fd`, if another does.
    pub(crate) fn swap(&self, fd: c_int) -> Option<c_int> {
        self.swaps
            .iter()
            .find(|(a, _)| *a == fd)
            .map(|(_, b)| b.as_raw_fd())
            .or_else(|| self.udp.iter().find(|(a, _)| *a == fd).map(|(_, k)| k.fd()))
    }

    /// The carriers to append, in order.
    pub(crate) fn carriers(&self) -> Vec<c_int> {
        self.carriers
            .iter()
            .map(|c| c.as_fd().as_raw_fd())
            .collect()
    }
}

/// Whether a sendmsg could pass anything of ours (one or two loads): this
/// process has sockets of ours, or rendezvous made at bind.
pub(crate) fn may_pass() -> bool {
    !fdtable::table().is_empty() || early::any()
}

/// A listener of ours, held while fstat asks its socket (`stat_fd`).
pub(crate) struct Stat(std::sync::Arc<Socket>);

impl Stat {
    /// The socket fstat answers for (-1: none).
    pub(crate) fn fd(&self) -> c_int {
        self.0
            .listener()
            .and_then(|l| l.stat_socket())
            .map_or(-1, |s| s.as_raw_fd())
    }
}

/// fstat on `fd`, a listener of ours: its socket's answer, so that a
/// receiver's (or an exec'd program's) `S_ISSOCK` check finds a socket,
/// as node's `uv_guess_handle` needs to take a listener it received
/// (it answered NODE_HANDLE_NACK to an epoll instance).
pub(crate) fn stat_target(fd: c_int) -> Option<Stat> {
    if !fdtable::is_owned(fd) {
        return None;
    }
    let sock = registry::get(fd)?;
    sock.listener()?.stat_socket()?;
    Some(Stat(sock))
}

/// Whether `fd` is a Unix socket, the only kind that passes fds.
pub(crate) fn unix_socket(fd: c_int) -> bool {
    rustix::net::sockopt::socket_domain(sys::borrow_fd(fd)).ok()
        == Some(rustix::net::AddressFamily::UNIX)
}

/// The sockets of ours among `fds` (a sendmsg's SCM_RIGHTS), as the
/// module docs say; None: nothing to change.
pub(crate) fn sent(fds: &[c_int]) -> Option<Passed> {
    let mut p = Passed::default();
    if datagram::carries() {
        p.udp = datagram::passed(fds).unwrap_or_default();
    }
    for (i, &fd) in fds.iter().enumerate() {
        if fds[..i].contains(&fd) {
            continue;
        }
        if !fdtable::is_owned(fd) {
            bound_by_root(fd);
            continue;
        }
        let Some(sock) = registry::get(fd) else {
            continue;
        };
        match &*sock {
            Socket::Listener(l) => match l.tcp() {
                Some(tcp) => {
                    let Ok(k) = rustix::io::fcntl_dupfd_cloexec(tcp, 0) else {
                        continue;
                    };
                    // The receiver's accept waits as the sender's would:
                    // the open file's O_NONBLOCK is the application's (the
                    // library's own accepts here may then wait when the
                    // receiver took a connection first, as after an exec
                    // into a plain image: decision 53).
                    sys::set_nonblock(tcp, app_nonblocking(fd));
                    l.retire_rendezvous(sys::borrow_fd(fd));
                    log!(
                        debug,
                        "fd {fd}: the listener of {} passed with SCM_RIGHTS: its kernel \
                         listener goes, its rendezvous retired",
                        l.local
                    );
                    p.swaps.push((fd, k));
                }
                None => {
                    if let Some(rv) = l.passable_rendezvous() {
                        // Told to the receiver, whose adoption reads it and
                        // makes the socket non-blocking again.
                        sys::set_nonblock(rv.as_fd(), app_nonblocking(fd));
                        p.swaps.push((fd, rv));
                    }
                }
            },
            Socket::Stream(c) => match c.carrier_to_pass(crate::sockets::carrier::make_carrier) {
                Ok(carrier) => p.carriers.push(carrier),
                Err(e) => log!(
                    debug,
                    "fd {fd}: a connection passed with SCM_RIGHTS without a carrier ({e})"
                ),
            },
            _ => {}
        }
    }
    (!p.swaps.is_empty() || !p.udp.is_empty() || !p.carriers.is_empty()).then_some(p)
}

/// Whether the application's fd `fd` (an instance of ours) is non-blocking.
fn app_nonblocking(fd: c_int) -> bool {
    rustix::fs::fcntl_getfl(sys::borrow_fd(fd))
        .is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
}

/// A kernel TCP socket passed whose rendezvous root made at its bind
/// (`early`): shut down (for any copy a fork made) and closed, so that the
/// name is free for a listen of the receiver's and no connector waits in
/// it.
fn bound_by_root(fd: c_int) {
    if !early::any() {
        return;
    }
    let Ok(cookie) = rustix::net::sockopt::socket_cookie(sys::borrow_fd(fd)) else {
        return;
    };
    if let Some(e) = early::take(cookie) {
        let _ = rustix::net::shutdown(&e.sock, rustix::net::Shutdown::Read);
        log!(
            debug,
            "fd {fd}: a bound socket passed with SCM_RIGHTS: its rendezvous made at bind closed"
        );
    }
}

/// Control bytes a receive asks for beyond the caller's: room for a
/// carrier per fd the caller has room for, at most this many (the
/// kernel's SCM_MAX_FD: a message never holds more fds).
pub(crate) const CARRIER_ROOM: usize = 253;

/// What a receive's SCM_RIGHTS held of ours: the carriers at the end of
/// the list (fd, the cookie of the connection each is for), and the Unix
/// stream sockets, which may be sockets of ours to adopt. One getsockopt
/// per fd tells a pipe, a file or a kernel TCP socket apart (nothing more
/// is asked of those).
#[derive(Default)]
pub(crate) struct Received {
    carriers: Vec<(c_int, u64)>,
    streams: Vec<c_int>,
}

impl Received {
    /// Whether `fd` is a carrier the library takes out of the list.
    pub(crate) fn is_carrier(&self, fd: c_int) -> bool {
        self.carriers.iter().any(|&(c, _)| c == fd)
    }
}

/// `Received` of `fds` (a recvmsg's SCM_RIGHTS, as the kernel gave them).
/// Never in a sandbox (its filter may not allow the looks), nor without
/// a configuration.
pub(crate) fn among(fds: &[c_int]) -> Received {
    let mut r = Received::default();
    if crate::platform::sandbox::active() || crate::platform::config::get().is_none() {
        return r;
    }
    // From the end: carriers are appended after the caller's fds.
    let mut tail = true;
    for &fd in fds.iter().rev() {
        let s = sys::borrow_fd(fd);
        if rustix::net::sockopt::socket_domain(s).ok() != Some(rustix::net::AddressFamily::UNIX) {
            tail = false;
            continue;
        }
        match rustix::net::sockopt::socket_type(s).ok() {
            Some(rustix::net::SocketType::DGRAM) if tail => {
                match crate::sockets::carrier::carrier_cookie(s, rustix::net::getsockname(s).ok()) {
                    Some(c) => r.carriers.push((fd, c)),
                    None => tail = false,
                }
            }
            Some(rustix::net::SocketType::STREAM) => {
                tail = false;
                r.streams.push(fd);
            }
            _ => tail = false,
        }
    }
    r.carriers.reverse();
    r.streams.reverse();
    r
}

/// After a receive: each Unix stream socket of `got` that the caller got
/// (`kept`: the fds laid into its buffer) and that is a socket of ours is
/// adopted (`exec::adopt_received`); then the carriers are closed.
pub(crate) fn received(got: Received, kept: &[c_int], cloexec: bool) {
    for &fd in got.streams.iter().filter(|f| kept.contains(f)) {
        if !fdtable::is_owned(fd) {
            crate::calls::exec::adopt_received(fd, &got.carriers, cloexec);
        }
    }
    for &(c, _) in &got.carriers {
        sys::close_inherited(c);
    }
}
