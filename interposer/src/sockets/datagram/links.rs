//! The receiver's side of its links (udp-draft §3): senders connect to
//! the socket's rendezvous listener, send REG with the source address they
//! claim (and, as its proof, the fd of the listener holding that address's
//! name), and get a slot in the target set of their uid (REG_OK with the
//! memfd), or REG_NO. A link's hang-up (or CLOSE) closes its slot; the
//! slot's queued datagrams are still delivered, then it is reclaimed.
//!
//! One target set per sender uid: a peer never maps pages another user's
//! process writes (the isolation rule §3 says stays load-bearing).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;
use shmnet_ring::dgram::frame::Frame;
use shmnet_ring::dgram::{DgramGeometry, Receiver};

use crate::platform::internal_fd::InternalFd;
use crate::transport::link::{self, Inbound};

/// At most this many links per socket (a hostile or runaway sender
/// population must not take every fd). Beyond it a sender's datagrams
/// are dropped (REG_NO with ENOBUFS: the sender counts them as drops and
/// asks again later), as a full receive buffer drops them.
pub(super) const MAX_LINKS: usize = 1024;

/// Slots (senders) per target segment: the most the layout takes. A uid
/// with more senders gets another segment (`set_for`).
const SLOTS: u32 = shmnet_ring::dgram::layout::MAX_SLOTS;

/// One sender uid's target segment, and where each slot's datagrams come
/// from.
pub(super) struct Set {
    pub uid: u32,
    pub rx: Receiver,
    /// The segment's memfd, handed to senders: the library's own fd
    /// (above the application's range and marked, as the application's
    /// closerange + open would otherwise reuse its number and our close
    /// take the application's file).
    pub memfd: Option<InternalFd>,
    /// By slot: the verified source address of its sender.
    pub sources: Vec<Option<SocketAddr>>,
    /// By slot: the address its sender sent to (checked: one of this
    /// socket's), for IP_PKTINFO and the like (`ancillary`).
    pub dests: Vec<Option<SocketAddr>>,
}

/// An accepted link.
pub(super) struct Link {
    pub token: u64,
    pub fd: InternalFd,
    pub uid: u32,
    /// (set index, slot) once registered.
    pub grant: Option<(usize, u32)>,
    /// The source address its REG proved.
    pub source: Option<SocketAddr>,
    /// The destination its REG named, if one of this socket's.
    pub dest: Option<SocketAddr>,
    /// Its DGRAM frames were all taken after a datagram of its slot was
    /// seen in shared memory: it carries none any more (see `Slow`).
    pub settled: bool,
    pub inbound: Inbound,
}

/// Datagrams that came on links (DGRAM: sent before the sender had its
/// slot), delivered before the shared-memory ones, in arrival order.
/// A sender writes its DGRAM frames before it publishes its first
/// datagram in shared memory, so taking its link's frames when that
/// datagram is first seen keeps each sender's order.
#[derive(Default)]
pub(super) struct Slow {
    /// (source, payload, destination: `Link::dest`)
    pub queue: std::collections::VecDeque<(SocketAddr, Vec<u8>, Option<SocketAddr>)>,
    pub bytes: usize,
    /// Datagrams queued here so far (an edge-triggered socket's arrivals,
    /// with its doorbell rings: `Inbox::edge_news`).
    pub arrived: u64,
}

/// What a link's frames asked for.
pub(super) enum Verdict {
    Keep,
    /// Hung up, said CLOSE, or broke the protocol: close it.
    Drop,
}

/// The stage-1 shape (`DgramGeometry::stage1`: 512 partitions of 2 KiB)
/// with `SLOTS` slots of `CELLS` cells: the threads that share one
/// socket share its slot, and 128 cells dropped most of a 4-thread burst
/// (review L2: 21,213 of 80,000 kept, 44,749 with 512; the kernel 72,446).
/// The cells take 2 MiB of the memfd, touched 8 KiB a slot in use.
fn geometry() -> DgramGeometry {
    let stage1 = DgramGeometry::stage1();
    DgramGeometry::new(stage1.groups(), SLOTS, CELLS).unwrap_or(stage1)
}

const CELLS: u32 = 512;

/// A set for `uid` with a free slot: one of its sets, or a new one, made
/// with the receive limit `limit`.
pub(super) fn set_for(sets: &mut Vec<Set>, uid: u32, limit: u32) -> Result<usize, Errno> {
    if let Some(i) = sets
        .iter()
        .position(|s| s.uid == uid && s.rx.slots_in_use() < s.sources.len())
    {
        return Ok(i);
    }
    let geo = geometry();
    let mut rx = Receiver::create_for(geo, uid).map_err(|e| {
        log!(debug, "datagram target segment: {e}");
        Errno::NOBUFS
    })?;
    rx.set_limit(limit);
    let memfd = rx.take_fd().map(InternalFd::new);
    let slots = geo.slot_count() as usize;
    sets.push(Set {
        uid,
        rx,
        memfd,
        sources: vec![None; slots],
        dests: vec![None; slots],
    });
    Ok(sets.len() - 1)
}

/// Handles the whole frames `link` has received.
pub(super) fn take_frames(
    link: &mut Link,
    sets: &mut Vec<Set>,
    slow: &mut Slow,
    limit: u32,
    local: SocketAddr,
) -> Verdict {
    let mut at = 0;
    let mut verdict = Verdict::Keep;
    loop {
        let frame = match Frame::decode(&link.inbound.bytes[at..]) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                log!(debug, "datagram link on {local}: {e}");
                verdict = Verdict::Drop;
                break;
            }
        };
        at += frame.1;
        match frame.0 {
            Frame::Reg { source, dest, .. } if link.grant.is_none() => {
                let proof = link.inbound.fd.take();
                link.dest = checked_dest(dest, local);
                match register(link, sets, limit, source, proof) {
                    Ok(()) => {}
                    Err(why) => {
                        let no = Frame::RegNo {
                            why: why.raw_os_error() as u32,
                        };
                        let _ = link::send(link.fd.as_fd(), &no, None);
                        verdict = Verdict::Drop;
                        break;
                    }
                }
            }
            Frame::Dgram { source, payload } if link.source == Some(source) => {
                // Charged as the kernel charges (the limit counts
                // overhead too); beyond it, dropped.
                let cost = payload.len() + 256;
                if slow.bytes == 0 || slow.bytes + cost <= limit as usize {
                    slow.bytes += cost;
                    slow.queue.push_back((source, payload.to_vec(), link.dest));
                    slow.arrived += 1;
                }
            }
            Frame::Bell => {}
            Frame::Close => {
                verdict = Verdict::Drop;
                break;
            }
            other => {
                log!(debug, "datagram link on {local}: unexpected {other:?}");
                verdict = Verdict::Drop;
                break;
            }
        }
    }
    link.inbound.bytes.drain(..at);
    if link.inbound.bytes.is_empty() {
        // An fd only a REG brings (taken with it): any other would sit
        // at a low number, the application's, for the link's life.
        link.inbound.fd = None;
    }
    if link.inbound.eof {
        verdict = Verdict::Drop;
    }
    verdict
}

/// The destination a REG names (peer-written: checked), if it is one of
/// `local`'s: its port, and its address or, for a wildcard-bound socket,
/// a loopback address of a family it takes.
fn checked_dest(dest: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
    use crate::transport::rendezvous::{is_loopback, unmapped};
    let (d, l) = (unmapped(dest), unmapped(local));
    let family_ok = local.is_ipv6() || d.is_ipv4();
    let ip_ok = if l.ip().is_unspecified() {
        is_loopback(d.ip()) && family_ok
    } else {
        d.ip() == l.ip()
    };
    (d.port() == l.port() && ip_ok).then_some(d)
}

/// REG: checks the claimed source, grants a slot, answers REG_OK with the
/// memfd.
fn register(
    link: &mut Link,
    sets: &mut Vec<Set>,
    limit: u32,
    source: SocketAddr,
    proof: Option<OwnedFd>,
) -> Result<(), Errno> {
    // The source is the sender's only if it passed the listener holding
    // its name; a privileged port only from root (as binding one needs).
    // A wildcard-bound sender claims the loopback address the kernel
    // would send from (`routes::claimed`), proved by its wildcard name.
    let proved = proof.as_ref().is_some_and(|fd| {
        let any = |ip: std::net::IpAddr| SocketAddr::new(ip, source.port());
        link::holds_name(fd.as_fd(), source)
            || (crate::transport::rendezvous::is_loopback(source.ip())
                && (link::holds_name(fd.as_fd(), any(std::net::Ipv4Addr::UNSPECIFIED.into()))
                    || link::holds_name(fd.as_fd(), any(std::net::Ipv6Addr::UNSPECIFIED.into()))
                    || link::holds_name(fd.as_fd(), super::routes::v6_only_any(source.port()))))
    });
    if !proved {
        log!(debug, "datagram REG claiming {source}: no proof, refused");
        return Err(Errno::ACCESS);
    }
    // A daemon that bound its port as root and then dropped to another
    // user (chronyd -u, dnsmasq, ntpd) sends from it as the kernel lets
    // it: its name's listener was listened on by root (SO_PEERCRED of a
    // listening socket: the credentials of its listen(2); sweep39 D3).
    let by_root =
        |fd: &OwnedFd| crate::platform::sys::peer_cred(fd.as_fd()).is_some_and(|c| c.1 == 0);
    if crate::transport::lookup::privileged_port(source.port())
        && link.uid != 0
        && !proof.as_ref().is_some_and(by_root)
    {
        return Err(Errno::ACCESS);
    }
    let i = set_for(sets, link.uid, limit)?;
    let set = &mut sets[i];
    let grant = set.rx.open_slot().ok_or(Errno::NOBUFS)?;
    if let Some(s) = set.sources.get_mut(grant.slot as usize) {
        *s = Some(source);
    }
    if let Some(d) = set.dests.get_mut(grant.slot as usize) {
        *d = link.dest;
    }
    let ok = Frame::RegOk {
        slot: grant.slot,
        gen: grant.gen,
    };
    link.grant = Some((i, grant.slot));
    link.source = Some(source);
    // A sender that already left (EPIPE) or stopped reading still had its
    // datagrams read behind the REG: they are delivered; the hang-up
    // closes the slot.
    let memfd = set.memfd.as_ref().map(|f| f.as_fd());
    if let Err(e) = link::send(link.fd.as_fd(), &ok, memfd) {
        log!(debug, "datagram REG_OK to {source}: {e}");
    }
    Ok(())
}

/// Closes what `link` held: its slot goes to closing (its queued
/// datagrams are still delivered).
pub(super) fn forget(link: &Link, sets: &mut [Set]) {
    if let Some((i, slot)) = link.grant {
        if let Some(set) = sets.get_mut(i) {
            set.rx.close_slot(slot);
        }
    }
}
