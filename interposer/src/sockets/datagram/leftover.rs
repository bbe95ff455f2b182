//! The datagrams an emulated socket had queued when it went back to the
//! kernel (`Datagram::to_kernel`, decision 49): kept in an unnamed Unix
//! datagram socket whose reading end is a member of the socket's epoll
//! instance and goes to every process that holds the socket, so each
//! one is received exactly once, by whichever holder asks first (the
//! kernel's queue decides), before what the kernel socket queued since.
//! Each message is a `HEADER`-byte source address, then the payload.
#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendFlags, SocketFlags,
    SocketType,
};
use shmnet_ring::dgram::Received;

/// Family (0 none, 4, 6), a zero byte, the port (big-endian), 16 bytes
/// of address (IPv4's in the first 4).
const HEADER: usize = 20;

/// A pair: (reading end, writing end), both close-on-exec and
/// non-blocking, the writing end's buffer as large as the kernel allows
/// (what did not fit is dropped, as a full receive buffer drops).
pub(super) fn pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    let (r, w) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::DGRAM, flags, None)?;
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&w, 8 << 20);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&r, 8 << 20);
    Ok((r, w))
}

fn header(from: Option<SocketAddr>) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    if let Some(a) = from {
        h[2..4].copy_from_slice(&a.port().to_be_bytes());
        match a.ip() {
            IpAddr::V4(v4) => {
                h[0] = 4;
                h[4..8].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                h[0] = 6;
                h[4..20].copy_from_slice(&v6.octets());
            }
        }
    }
    h
}

fn source(h: &[u8; HEADER]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([h[2], h[3]]);
    let ip: IpAddr = match h[0] {
        4 => Ipv4Addr::new(h[4], h[5], h[6], h[7]).into(),
        6 => Ipv6Addr::from(<[u8; 16]>::try_from(&h[4..20]).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Queues one datagram from `from`; false if it was dropped (the pair
/// is full).
pub(super) fn put(w: BorrowedFd<'_>, from: Option<SocketAddr>, data: &[u8]) -> bool {
    let h = header(from);
    let iov = [IoSlice::new(&h), IoSlice::new(data)];
    let mut control = SendAncillaryBuffer::default();
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match rustix::net::sendmsg(w, &iov, &mut control, flags) {
            Err(Errno::INTR) => continue,
            r => return r.is_ok(),
        }
    }
}

/// Takes (or peeks at) the next leftover: its length, the bytes copied
/// and its source; None when none is left.
pub(super) fn take(
    r: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    peek: bool,
) -> Option<(Received, Option<SocketAddr>)> {
    let room: usize = bufs.iter().map(|b| b.len()).sum();
    let mut h = [0u8; HEADER];
    let mut iov = Vec::with_capacity(bufs.len() + 1);
    iov.push(IoSliceMut::new(&mut h));
    iov.extend(bufs.iter_mut().map(|b| IoSliceMut::new(&mut b[..])));
    let mut flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
    if peek {
        flags |= RecvFlags::PEEK;
    }
    let mut control = RecvAncillaryBuffer::default();
    let m = loop {
        match rustix::net::recvmsg(r, &mut iov, &mut control, flags) {
            Err(Errno::INTR) => continue,
            Ok(m) if m.bytes >= HEADER => break m,
            _ => return None,
        }
    };
    drop(iov);
    let len = m.bytes - HEADER;
    let got = Received {
        len,
        copied: len.min(room),
        slot: u32::MAX,
    };
    Some((got, source(&h)))
}

/// Drops the next leftover (one a connected socket does not take).
pub(super) fn skip(r: BorrowedFd<'_>) {
    let mut none = [0u8; 0];
    let _ = rustix::net::recv(r, &mut none, RecvFlags::DONTWAIT);
}

/// The length of the next leftover, if any.
pub(super) fn next_len(r: BorrowedFd<'_>) -> Option<usize> {
    let mut h = [0u8; HEADER];
    let flags = RecvFlags::DONTWAIT | RecvFlags::PEEK | RecvFlags::TRUNC;
    match rustix::net::recv(r.as_fd(), &mut h, flags) {
        Ok((_, n)) if n >= HEADER => Some(n - HEADER),
        _ => None,
    }
}
