//! The connect handshake of seed 000 claims 82-83, over the rendezvous.
//!
//! 1. The connector creates the connection segment (a sealed memfd holding
//!    both directions) and initialises its own direction.
//! 2. It connects to the listener's rendezvous socket and sends a connect
//!    message carrying its virtual address and, as SCM_RIGHTS, the memfd —
//!    the "memory location" of its data area.
//! 3. The listener matches it (the kernel queues it on the listener it was
//!    addressed to), maps the segment and initialises its direction. That
//!    direction's `ready` word is the "connected" indication (claim 82 g):
//!    it travels through the shared memory itself, so no byte on the Unix
//!    connection ever makes the connector's fd look readable without data.
//!    A refused connection is closed (the connector sees a hang-up).
//!
//! The connector does not wait in connect(): like TCP, whose connect
//! completes from the listen backlog before accept, it may queue data at
//! once; its first read finds the acceptor's direction ready, or waits.
//!
//! Reuse (see `pool`): a connector holding a segment it shared with an
//! acceptor process before, now released on both sides, sends a `Reuse`
//! message naming it (its key) instead of a new memfd, and waits in
//! connect for a one-byte verdict: [`ACCEPTED`] (the acceptor claimed and
//! re-initialised it) or [`DECLINED`] (another process accepted, or it no
//! longer keeps the segment); then it sends a fresh `Connect` on the same
//! Unix connection. The verdict is read inside connect, so it never reaches
//! the application. A non-blocking connector does not wait: its offer
//! carries filler (`send_offer`, the count in `status`) that the acceptor
//! takes after answering, and a claim sends no byte (the connector reads
//! the segment's claim word): docs/architecture.md, "Connecting without
//! waiting".
//!
//! Join (see `calls::listen::join_reuseport_group`): a process binding an
//! emulated address with SO_REUSEPORT that another process of its user
//! holds sends a `Join` message; the holder answers with one carrying its
//! rendezvous socket, and the group shares one queue.
//!
//! Messages are 60 bytes, little-endian:
//! `magic u32 | version u16 | kind u16 | family u16 | port u16 | status u32 |
//! ip [u8; 16] | dest family u16 | dest port u16 | dest ip [u8; 16] |
//! key u64` — the connector's address, then the address it connected to (a
//! wildcard listener learns from it which of its addresses is the
//! connection's local one), then the segment's key (see `pool`).
//! Everything the peer sends is validated; a bad message is a refused or
//! reset connection, never a crash.
#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

pub(crate) const LEN: usize = 60;
const MAGIC: u32 = u32::from_le_bytes(*b"SHMH");
/// Bumped with the rendezvous names (`rendezvous::PREFIX`), so builds
/// that would misread each other never meet: a default-mode connector
/// does not find the other's listener and uses kernel TCP; the emulated
/// mode refuses, saying so (`rendezvous::other_version_at`). 5: offers
/// with filler and declines that carry the acceptor's segment (decision
/// 32), which version 4's libraries misread.
pub(crate) const VERSION: u16 = 5;

/// Verdict byte on a `Reuse` message: the acceptor took the segment.
pub(crate) const ACCEPTED: u8 = b'Y';
/// Verdict byte on a `Reuse` message: send a new segment instead.
pub(crate) const DECLINED: u8 = b'N';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A new segment, attached as SCM_RIGHTS.
    Connect = 1,
    /// A segment the two processes shared before, named by its key.
    Reuse = 2,
    /// Not a connection: a process of the listener's user binding the same
    /// address with SO_REUSEPORT asks for the group's rendezvous socket;
    /// the answer is a `Join` message with it attached (`listener`).
    Join = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub status: u32,
    pub dest: SocketAddr,
    /// The connector's name for the segment (see `pool`).
    pub key: u64,
}

fn put_addr(b: &mut [u8], addr: SocketAddr) {
    let (family, ip) = match addr.ip() {
        IpAddr::V4(ip) => (4u16, ip.to_ipv6_mapped().octets()),
        IpAddr::V6(ip) => (6u16, ip.octets()),
    };
    b[0..2].copy_from_slice(&family.to_le_bytes());
    b[2..4].copy_from_slice(&addr.port().to_le_bytes());
    b[4..20].copy_from_slice(&ip);
}

fn get_addr(b: &[u8]) -> Result<SocketAddr, &'static str> {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[4..20]);
    let v6 = Ipv6Addr::from(raw);
    let ip = match u16::from_le_bytes([b[0], b[1]]) {
        4 => IpAddr::V4(v6.to_ipv4_mapped().ok_or("IPv4 address not mapped")?),
        6 => IpAddr::V6(v6),
        _ => return Err("unknown address family"),
    };
    Ok(SocketAddr::new(ip, u16::from_le_bytes([b[2], b[3]])))
}

impl Message {
    pub(crate) fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(self.kind as u16).to_le_bytes());
        // family | port | status | ip, as version 1 had it.
        let mut a = [0u8; 20];
        put_addr(&mut a, self.addr);
        b[8..12].copy_from_slice(&a[0..4]);
        b[12..16].copy_from_slice(&self.status.to_le_bytes());
        b[16..32].copy_from_slice(&a[4..20]);
        put_addr(&mut b[32..52], self.dest);
        b[52..60].copy_from_slice(&self.key.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; LEN]) -> Result<Message, &'static str> {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != MAGIC {
            return Err("bad magic");
        }
        if u16_at(4) != VERSION {
            return Err("unsupported version");
        }
        let kind = match u16_at(6) {
            1 => Kind::Connect,
            2 => Kind::Reuse,
            3 => Kind::Join,
            _ => return Err("unknown message kind"),
        };
        let mut a = [0u8; 20];
        a[0..4].copy_from_slice(&b[8..12]);
        a[4..20].copy_from_slice(&b[16..32]);
        let status = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        Ok(Message {
            kind,
            addr: get_addr(&a)?,
            status,
            dest: get_addr(&b[32..52])?,
            key: u64::from_le_bytes([b[52], b[53], b[54], b[55], b[56], b[57], b[58], b[59]]),
        })
    }
}

/// Sends `msg`, with `fd` attached as SCM_RIGHTS if given.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    msg: &Message,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), Errno> {
    let bytes = msg.encode();
    let iov = [IoSlice::new(&bytes)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(Errno::NOBUFS);
        }
    }
    let sent = rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL)?;
    if sent != LEN {
        return Err(Errno::PROTO);
    }
    Ok(())
}

/// The most filler an offer may announce (`send_offer`).
pub(crate) const MAX_FILLER: u32 = 64 << 10;

/// Connector, non-blocking: sends the `Reuse` message `msg` with filler
/// behind it (its length in `status`) that makes our end unwritable in the
/// kernel's eyes (a Unix stream socket is writable while `wmem <= sndbuf /
/// 4`): the acceptor answers (claims, or sends [`DECLINED`]) and only then
/// takes the filler, whose freed buffers raise write-space on our end.
/// The send buffer is the doorbell's (`Bell`: `sndbuf` asked for), set
/// here first.
/// Returns the send buffer's size.
pub(crate) fn send_offer(
    sock: BorrowedFd<'_>,
    msg: &mut Message,
    sndbuf: usize,
) -> Result<usize, Errno> {
    static FILLER: [u8; 16 << 10] = [0; 16 << 10];
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(sock, sndbuf);
    let sndbuf = rustix::net::sockopt::socket_send_buffer_size(sock).unwrap_or(32 << 10);
    let filler = (sndbuf / 4 + 1).min(FILLER.len());
    msg.status = filler as u32;
    let bytes = msg.encode();
    let iov = [IoSlice::new(&bytes), IoSlice::new(&FILLER[..filler])];
    let sent = rustix::net::sendmsg(
        sock,
        &iov,
        &mut SendAncillaryBuffer::default(),
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    if sent != LEN + filler {
        return Err(Errno::PROTO);
    }
    Ok(sndbuf)
}

/// Acceptor: takes the `n` filler bytes behind a non-blocking connector's
/// offer (sent with it, so they are there or on their way: waited for up
/// to 10 ms in all).
pub(crate) fn take_filler(sock: BorrowedFd<'_>, n: usize) -> Result<(), Errno> {
    let mut buf = [0u8; 16 << 10];
    let mut left = n;
    let start = std::time::Instant::now();
    let patience = std::time::Duration::from_millis(10);
    while left > 0 {
        let k = left.min(buf.len());
        match rustix::net::recv(sock, &mut buf[..k], RecvFlags::DONTWAIT) {
            Ok((0, _)) => return Err(Errno::CONNRESET),
            Ok((got, _)) => left -= got,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let waited = start.elapsed();
                if waited >= patience {
                    return Err(Errno::TIMEDOUT);
                }
                wait_readable(sock, Some(patience - waited))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives one message without blocking (EAGAIN if none is there,
/// EINPROGRESS if only part of one is), and the fd attached to it, if any.
/// Extra fds are closed.
///
/// The fd is taken with a peek (the kernel installs a copy and leaves the
/// message queued with its own), then the bytes are consumed with no room
/// for ancillary data (the kernel drops the queued copy): so a process out
/// of fds (EMFILE: another thread took the number we made room for) finds
/// the message and its memfd still there at its next try, where a plain
/// receive would have lost the memfd and with it the connection
/// (decision 38). The same two system calls as a peek for the length and
/// a receive.
pub(crate) fn try_recv(sock: BorrowedFd<'_>) -> Result<(Message, Option<OwnedFd>), Errno> {
    let mut bytes = [0u8; LEN];
    let (n, passed) = peek_with_fd(sock, &mut bytes)?;
    if n == 0 {
        return Err(Errno::CONNRESET);
    }
    // (A 60-byte message on a stream socket is normally whole, but need
    // not be: a part is left in place, its fd copy closed.)
    if n < LEN {
        return Err(Errno::INPROGRESS);
    }
    let mut sink = [0u8; LEN];
    let (got, _) = rustix::net::recv(sock, &mut sink, RecvFlags::DONTWAIT)?;
    if got != LEN || sink != bytes {
        return Err(Errno::PROTO);
    }
    let msg = Message::decode(&bytes).map_err(|_| Errno::PROTO)?;
    Ok((msg, passed))
}

/// Peeks at what `sock` holds into `buf`, without waiting, with a copy of
/// the first fd attached (others closed): EMFILE if one is attached and
/// no fd was free for it (the message keeps it).
pub(crate) fn peek_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), Errno> {
    recv_fd_with(sock, buf, RecvFlags::PEEK)
}

/// Sends `bytes` with `fd` attached (SCM_RIGHTS), without waiting.
pub(crate) fn send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let iov = [IoSlice::new(bytes)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Errno::NOBUFS);
    }
    let sent = rustix::net::sendmsg(
        sock,
        &iov,
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    if sent != bytes.len() {
        return Err(Errno::PROTO);
    }
    Ok(())
}

/// Receives one datagram into `buf` without waiting, with the first fd
/// attached to it (any others are closed): the byte count and the fd.
pub(crate) fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), Errno> {
    recv_fd_with(sock, buf, RecvFlags::empty())
}

/// One recvmsg without waiting (`extra`: PEEK or nothing) keeping the
/// first fd attached and closing any others; EMFILE when the fd was cut
/// off for want of a free number (MSG_CTRUNC with none received).
fn recv_fd_with(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    extra: RecvFlags,
) -> Result<(usize, Option<OwnedFd>), Errno> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        sock,
        &mut iov,
        &mut control,
        extra | RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut passed = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                passed.get_or_insert(fd);
            }
        }
    }
    if passed.is_none() && got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(Errno::MFILE);
    }
    Ok((got.bytes, passed))
}

/// Acceptor: answers a `Reuse` message (a byte the connector reads inside
/// connect, never the application).
pub(crate) fn send_verdict(sock: BorrowedFd<'_>, verdict: u8) -> Result<(), Errno> {
    let sent = rustix::net::send(sock, &[verdict], SendFlags::NOSIGNAL | SendFlags::DONTWAIT)?;
    if sent != 1 {
        return Err(Errno::PROTO);
    }
    Ok(())
}

/// Connector: waits for the verdict on a `Reuse` message: yields for up to
/// `spin` (the acceptor normally answers within microseconds of waking),
/// then sleeps in poll until `patience` has passed. `Ok(None)`: no answer
/// in time. EOF is an error (ECONNREFUSED): nobody will take it.
pub(crate) fn recv_verdict(
    sock: BorrowedFd<'_>,
    spin: std::time::Duration,
    patience: std::time::Duration,
) -> Result<Option<u8>, Errno> {
    let start = std::time::Instant::now();
    loop {
        let mut b = [0u8; 1];
        match rustix::net::recv(sock, &mut b, RecvFlags::DONTWAIT) {
            Ok((1, _)) => return Ok(Some(b[0])),
            Ok(_) => return Err(Errno::CONNREFUSED),
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(e),
        }
        let waited = start.elapsed();
        if waited >= patience {
            return Ok(None);
        }
        if waited < spin {
            crate::platform::sandbox::yield_cpu();
            continue;
        }
        match wait_readable(sock, Some(patience - waited)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `sock` is readable, at most `ms` milliseconds (-1: forever).
pub(crate) fn wait_readable(
    sock: BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> Result<bool, Errno> {
    if crate::platform::sandbox::active() {
        // ppoll is outside sandbox filters: the poll system call, in whole
        // milliseconds (rounded up, as the kernel rounds).
        let ms = timeout.map_or(-1, |t| {
            t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        return Ok(crate::platform::sys::poll_fd(sock, libc::POLLIN, ms)? != 0);
    }
    let mut fds = [rustix::event::PollFd::new(
        &sock,
        rustix::event::PollFlags::IN,
    )];
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    let n = rustix::event::poll(&mut fds, ts.as_ref())?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_round_trip_and_garbage_is_rejected() {
        for addr in ["127.77.0.1:8080", "[::1]:443", "127.0.0.1:0"] {
            let m = Message {
                kind: Kind::Connect,
                addr: addr.parse().unwrap(),
                status: 0,
                dest: "[::1]:7".parse().unwrap(),
                key: 0x0123_4567_89ab_cdef,
            };
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
        let good = Message {
            kind: Kind::Connect,
            addr: "127.0.0.1:1".parse().unwrap(),
            status: 0,
            dest: "127.0.0.2:2".parse().unwrap(),
            key: 7,
        }
        .encode();
        for (i, v) in [(0, 0u8), (4, 9), (6, 9), (8, 5), (32, 5)] {
            let mut bad = good;
            bad[i] = v;
            assert!(Message::decode(&bad).is_err(), "byte {i}");
        }
        let mut bad = good;
        bad[8] = 4;
        bad[16] = 1; // family 4 with a non-mapped address
        assert!(Message::decode(&bad).is_err());
    }

    #[test]
    fn fds_travel_with_messages() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let m = Message {
            kind: Kind::Connect,
            addr: "127.77.0.9:5".parse().unwrap(),
            status: 0,
            dest: "127.77.0.1:80".parse().unwrap(),
            key: 1,
        };
        assert_eq!(try_recv(b.as_fd()).unwrap_err(), Errno::AGAIN);
        send(a.as_fd(), &m, Some(a.as_fd())).unwrap();
        let (got, fd) = try_recv(b.as_fd()).unwrap();
        assert_eq!(got, m);
        assert!(fd.is_some());
        drop((fd, a)); // the passed fd was a copy of `a`: both must go

        assert_eq!(try_recv(b.as_fd()).unwrap_err(), Errno::CONNRESET);
    }
}
