//! A non-blocking connect the emulated network refuses (no listener, or
//! its policy says no), said as kernel TCP says it: EINPROGRESS, then
//! ECONNREFUSED once through SO_ERROR, recv, send or a second connect.
//! Event loops (libuv, asyncio, APR, curl multi) take a refusal only
//! that way.
//!
//! Meanwhile the application's fd is a Unix socket in the state a refused
//! TCP socket polls in: its peer gone with the connection unaccepted, so
//! the kernel itself reports POLLIN|POLLOUT|POLLERR|POLLHUP|POLLRDHUP (to
//! poll, select and epoll, ours or not) and, once the error is read,
//! POLLIN|POLLOUT|POLLHUP|POLLRDHUP. It is the connecting name's socket,
//! so the local address stays held as the kernel's port does. The registry
//! holds a failed `Connecting` for it (`Connecting::refused`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::sockets::options_store::Options;
use crate::sockets::socket::{Connecting, Socket};
use crate::transport::rendezvous::Reservation;

/// The socket a refused connect from `local` leaves on the application's
/// fd (non-blocking, close-on-exec: the caller gives it the application's
/// flags), with the registry's entry for it. None if the process has no
/// fd for it: the caller says ECONNREFUSED at once, as before.
pub(crate) fn refused(
    mut local: Reservation,
    peer: SocketAddr,
    opts: Options,
    cloexec: bool,
) -> Option<(OwnedFd, Socket)> {
    let sock = local.dial_socket().ok()??;
    if let Err(e) = reset_by_peer(&sock) {
        log!(debug, "connect to {peer}: no refused socket ({e})");
        return None;
    }
    let conn = Connecting::refused(local.addr, peer, opts, cloexec);
    Some((sock, Socket::Connecting(conn)))
}

/// Connects `sock` to a listener of its own that then closes with the
/// connection unaccepted: the kernel leaves `sock` shut down both ways
/// with ECONNRESET pending (`unix_release_sock`), which polls as a
/// refused TCP socket does.
fn reset_by_peer(sock: &OwnedFd) -> Result<(), Errno> {
    let listener = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // (An unnamed address: the kernel picks an abstract name.)
    rustix::net::bind(&listener, &SocketAddrUnix::new_unnamed())?;
    rustix::net::listen(&listener, 1)?;
    let name = rustix::net::getsockname(&listener)?;
    rustix::net::connect(sock, &name)?;
    drop(listener);
    Ok(())
}
