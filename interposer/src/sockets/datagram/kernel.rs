//! The socket's own kernel UDP socket as a second route (review H1-H3):
//! datagrams to a destination no emulated socket holds go through it, as
//! the kernel would carry them (a plain resolver stub, statsd, another
//! host), and what the kernel delivers to it is received beside the
//! emulated datagrams, so one socket talks to both.
//!
//! It holds a port only once it needs one (a wildcard bind, or the first
//! send the kernel carries): until then it stays unbound, in no
//! /proc/net/udp line, and costs the emulated path nothing.
#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendFlags};
use shmnet_ring::dgram::Received;

/// Sends one datagram to `dest` through the kernel socket, never waiting
/// (a full socket buffer drops it, as UDP may).
pub(super) fn send(
    sock: BorrowedFd<'_>,
    dest: SocketAddr,
    bufs: &[IoSlice<'_>],
) -> Result<usize, Errno> {
    let mut control = SendAncillaryBuffer::default();
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match rustix::net::sendmsg_addr(sock, &dest, bufs, &mut control, flags) {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(bufs.iter().map(|b| b.len()).sum()),
            r => return r,
        }
    }
}

/// Receives one datagram the kernel queued, without waiting: its length
/// (untruncated), the bytes copied and its source; None when none is
/// queued; Err for a pending error (ECONNREFUSED on a connected one).
pub(super) fn recv(
    sock: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    peek: bool,
) -> Option<Result<(Received, Option<SocketAddr>), Errno>> {
    let room: usize = bufs.iter().map(|b| b.len()).sum();
    let mut flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
    if peek {
        flags |= RecvFlags::PEEK;
    }
    let mut control = RecvAncillaryBuffer::default();
    let got = loop {
        match rustix::net::recvmsg(sock, bufs, &mut control, flags) {
            Err(Errno::INTR) => continue,
            r => break r,
        }
    };
    match got {
        Ok(m) => {
            let from = m.address.and_then(|a| SocketAddr::try_from(a).ok());
            let got = Received {
                len: m.bytes,
                copied: m.bytes.min(room),
                slot: u32::MAX,
            };
            Some(Ok((got, from)))
        }
        Err(Errno::AGAIN) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Whether the kernel socket has a datagram (or an error) for a receive.
pub(super) fn ready(sock: BorrowedFd<'_>) -> bool {
    crate::platform::sys::poll_fd(sock, libc::POLLIN | libc::POLLERR, 0).is_ok_and(|ev| ev != 0)
}

/// The size of the next datagram the kernel queued (FIONREAD), if any.
pub(super) fn next_len(sock: BorrowedFd<'_>) -> Option<usize> {
    if !ready(sock) {
        return None;
    }
    rustix::io::ioctl_fionread(sock).ok().map(|n| n as usize)
}
