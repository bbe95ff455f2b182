//! Datagram links (docs/design/udp-draft.md §3): the names a datagram
//! socket is reached at, and the Unix stream connection a sender opens to
//! a receiver's name, which carries the frames of `shmnet_ring::dgram::frame`
//! (REG, then REG_OK with the target segment's memfd; BELL; CLOSE).
//!
//! Links are SOCK_SEQPACKET: a frame goes whole or not at all, so a
//! sender that must not wait can put a datagram on its link (DGRAM,
//! before its registration is answered) without ever leaving half a
//! frame behind.
//!
//! `shmnet.5/udp/<ip>:<port>` is a seqpacket listener bound by the receiving
//! socket, in the abstract namespace (per network namespace, as loopback
//! is): binding it is the port reservation, first binder wins. A sender
//! proves the source address it claims by passing that listener's fd with
//! its REG (`holds_name`): only a process holding the reservation has it.
#![forbid(unsafe_code)]

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use shmnet_ring::dgram::frame::Frame;

use crate::transport::rendezvous::unmapped;

/// Every datagram name starts with this (TCP's are `shmnet.5/tcp/`: the
/// two port spaces are apart, as the kernel's are).
pub(crate) const PREFIX: &str = "shmnet.5/udp/";

/// Most bytes a link may hold undecoded before its peer is taken for
/// hostile (frames come whole: at most one DGRAM and a few small ones).
const MAX_PENDING: usize =
    shmnet_ring::dgram::frame::HEAD + shmnet_ring::dgram::frame::MAX_BODY + 4096;

/// The name of a datagram address (IPv4-mapped written as IPv4).
pub(crate) fn name(addr: SocketAddr) -> String {
    format!("{PREFIX}{}", unmapped(addr))
}

/// A link's socket: Unix seqpacket (frames keep their bounds), non-blocking.
fn seqpacket() -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
}

fn listener_at(addr: SocketAddr) -> Result<OwnedFd, Errno> {
    let sock = seqpacket()?;
    let path = SocketAddrUnix::new_abstract_name(name(addr).as_bytes())?;
    rustix::net::bind(&sock, &path)?;
    // New senders wait here until the receiver's next look: the kernel's
    // cap (somaxconn, 4096 by default), not 128 (review M3: a burst of
    // new senders beyond it lost their first datagrams).
    rustix::net::listen(&sock, 4096)?;
    Ok(sock)
}

/// Reserves `addr` (port 0: a free ephemeral port, never `avoid`) by
/// binding and listening on its name: the listener (non-blocking) and the
/// address it holds. EADDRINUSE when someone holds it.
///
/// Ephemeral ports are picked as the kernel picks UDP's: from a random
/// start in `ip_local_port_range` (getrandom; resolvers rely on source
/// ports nobody can guess), going up to the next free one. `avoid` is the
/// destination port of an autobind: a socket never gets the very port it
/// sends to (it would be connected to itself).
pub(crate) fn reserve(
    addr: SocketAddr,
    avoid: Option<u16>,
) -> Result<(OwnedFd, SocketAddr), Errno> {
    if addr.port() != 0 {
        return Ok((listener_at(addr)?, addr));
    }
    let (first, last) = port_range();
    let span = u32::from(last - first) + 1;
    let mut seed = [0u8; 4];
    let start = match rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(4) => u32::from_ne_bytes(seed),
        // No entropy yet (early boot): the clock and pid, as before.
        _ => std::process::id()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(crate::transport::parking::monotonic_ms() as u32),
    };
    for k in 0..span {
        let port = (u32::from(first) + (start.wrapping_add(k) % span)) as u16;
        if Some(port) == avoid {
            continue;
        }
        let at = SocketAddr::new(addr.ip(), port);
        match listener_at(at) {
            Ok(l) => return Ok((l, at)),
            Err(Errno::ADDRINUSE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::AGAIN) // as the kernel, when no ephemeral port is free
}

/// The kernel's ephemeral range (`net.ipv4.ip_local_port_range`, which
/// IPv6 uses too), read once; 32768-60999 if unreadable.
fn port_range() -> (u16, u16) {
    static RANGE: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    *RANGE.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
        let mut it = text.iter().flat_map(|t| t.split_whitespace());
        let lo = it.next().and_then(|p| p.parse::<u16>().ok());
        let hi = it.next().and_then(|p| p.parse::<u16>().ok());
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo >= 1024 && lo <= hi => (lo, hi),
            _ => (32768, 60999),
        }
    })
}

/// A link to the receiver holding `dest`'s name (non-blocking, connected
/// at once: a Unix connect completes into the listener's backlog).
/// ECONNREFUSED: nobody holds the name; EAGAIN: its backlog is full.
pub(crate) fn dial(dest: SocketAddr) -> Result<OwnedFd, Errno> {
    let sock = seqpacket()?;
    let path = SocketAddrUnix::new_abstract_name(name(dest).as_bytes())?;
    match rustix::net::connect(&sock, &path) {
        Ok(()) => Ok(sock),
        Err(Errno::NOENT) => Err(Errno::CONNREFUSED),
        Err(e) => Err(e),
    }
}

/// A mark: `addr`'s name, held by a listener that never accepts, whose
/// existence is all it says (`routes::shared_mark`). Backlog 0: at most
/// one dial waits in it, the others are EAGAIN.
pub(crate) fn mark(addr: SocketAddr) -> Result<OwnedFd, Errno> {
    let sock = seqpacket()?;
    let path = SocketAddrUnix::new_abstract_name(name(addr).as_bytes())?;
    rustix::net::bind(&sock, &path)?;
    rustix::net::listen(&sock, 0)?;
    Ok(sock)
}

/// Who holds the mark `addr` (`mark`): None when nobody; else the
/// holder's user when the dial connected, None when it waits (a mark's
/// backlog of one is full after its first dial). The dial is all that is
/// done: a holder that accepts it learns our pid, uid and gid (SO_PEERCRED)
/// as any process can from /proc; ours never accepts.
pub(crate) fn mark_holder(addr: SocketAddr) -> Option<Option<u32>> {
    match dial(addr) {
        Err(Errno::CONNREFUSED) => None,
        Ok(fd) => Some(Some(
            crate::platform::sys::peer_cred(std::os::fd::AsFd::as_fd(&fd))
                .map_or(u32::MAX, |(_, uid, _)| uid),
        )),
        Err(_) => Some(None),
    }
}

/// Whether `fd` is the listener holding `addr`'s name (a REG's proof of
/// its source address).
pub(crate) fn holds_name(fd: BorrowedFd<'_>, addr: SocketAddr) -> bool {
    let Ok(local) = rustix::net::getsockname(fd) else {
        return false;
    };
    let Ok(unix) = SocketAddrUnix::try_from(local) else {
        return false;
    };
    unix.abstract_name() == Some(name(addr).as_bytes())
        && rustix::net::sockopt::socket_acceptconn(fd).unwrap_or(false)
        && rustix::net::sockopt::socket_type(fd).ok() == Some(SocketType::SEQPACKET)
}

/// Sends one frame, with `fd` attached (SCM_RIGHTS) if given, without
/// waiting. A frame that does not go whole is EPROTO (the link is then
/// useless): small frames always fit a link whose peer reads it.
pub(crate) fn send(
    link: BorrowedFd<'_>,
    f: &Frame<'_>,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), Errno> {
    let mut bytes = Vec::with_capacity(64);
    f.encode(&mut bytes);
    if let Some(fd) = fd {
        return crate::transport::handshake::send_with_fd(link, &bytes, fd);
    }
    let sent = rustix::net::send(link, &bytes, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)?;
    if sent != bytes.len() {
        return Err(Errno::PROTO);
    }
    Ok(())
}

/// What a link had to read.
#[derive(Default)]
pub(crate) struct Inbound {
    /// Bytes not yet decoded (a frame may arrive in parts).
    pub bytes: Vec<u8>,
    /// The first fd that came with them (REG's proof, REG_OK's memfd).
    pub fd: Option<OwnedFd>,
    /// The peer closed its end (or died).
    pub eof: bool,
    /// More is waiting: decode what came, then read again.
    pub more: bool,
}

/// Bytes of the largest frame (a DGRAM of the largest datagram): the
/// room a reader's scratch buffer needs to take any honest frame.
pub(crate) const MAX_FRAME: usize =
    shmnet_ring::dgram::frame::HEAD + shmnet_ring::dgram::frame::MAX_BODY;

/// Reads what `link` has now into `into`, without waiting, one frame
/// (message) per system call through `scratch` (a message longer than it
/// is EPROTO: `MAX_FRAME` takes any honest frame; a sender's link carries
/// only small ones). Stops with `more` once `into` holds a frame's worth.
pub(crate) fn read(
    link: BorrowedFd<'_>,
    into: &mut Inbound,
    scratch: &mut [u8],
) -> Result<(), Errno> {
    into.more = false;
    loop {
        let mut iov = [IoSliceMut::new(scratch)];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            link,
            &mut iov,
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        );
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                for fd in fds {
                    // The first is kept; any other is closed here.
                    if into.fd.is_none() {
                        into.fd = Some(fd);
                    }
                }
            }
        }
        let got = match got {
            Ok(got) => got,
            Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::CONNRESET) if !into.eof => {
                // The peer closed with our frames unread: reported once,
                // before the frames it sent first (a REG_NO), which the
                // next reads take, then the end.
                into.eof = true;
                continue;
            }
            Err(Errno::CONNRESET) => return Ok(()),
            Err(e) => return Err(e),
        };
        if got.bytes == 0 {
            into.eof = true;
            return Ok(());
        }
        if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
            return Err(Errno::PROTO); // longer than any frame
        }
        into.bytes.extend_from_slice(&scratch[..got.bytes]);
        if into.bytes.len() > MAX_PENDING - MAX_FRAME {
            into.more = true;
            return Ok(());
        }
    }
}
