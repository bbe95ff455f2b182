//! Questions to the kernel about this network namespace, over netlink.
//!
//! docs/security.md ("The bar") holds shared memory to what kernel TCP would
//! do; these queries are how the connector learns what that is, from the
//! kernel rather than from a model of it:
//!
//! - [`tcp_listener`] (default mode, every connect): the connector must reach
//!   exactly the listener a SYN from it would reach. An inet_diag *exact*
//!   lookup makes the kernel run its own socket lookup (exact address,
//!   wildcard, IPv6 dual-stack, SO_REUSEPORT member), so binding rules we
//!   would get subtly wrong stay the kernel's; the answer's cookie names the
//!   rendezvous and its uid is who must own it.
//! - [`route`], [`link_netnsid`], [`netnsid_of_pid`]: a partition address
//!   that is not local is reached over shared memory only if this namespace
//!   routes it out through a link whose peer namespace is the listener's.
//! - [`is_local`]: which of the two cases an address is.
//!
//! This runs inside arbitrary programs. Sockets are rustix raw syscalls (our
//! hooks are never re-entered, errno is untouched), one cached per protocol
//! per process, reopened after a fork so a child never reads replies meant
//! for its parent. Replies are parsed as untrusted bytes: every length is
//! checked, a malformed one is `EPROTO`, nothing panics.
#![deny(unsafe_code)]

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::io::Errno;

mod channel;
pub(crate) use channel::*;
mod wire;
pub(crate) use wire::*;

// Wire constants (linux/netlink.h, rtnetlink.h, sock_diag.h, inet_diag.h,
// if_link.h, net_namespace.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// inet_diag's socket memory attribute (its request bit is `1 << (7 - 1)`)
/// and the index of the receive buffer in its `u32` array (sock_diag.h).
const INET_DIAG_SKMEMINFO: u16 = 7;
const SK_MEMINFO_RCVBUF: usize = 1;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const AF_UNIX: u8 = 1;
/// `sizeof(struct unix_diag_req)`, `sizeof(struct unix_diag_msg)`.
const UNIX_DIAG_REQ_LEN: usize = 24;
const UNIX_DIAG_MSG_LEN: usize = 16;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_UID: u16 = 7;
/// `sizeof(struct inet_diag_req_v2)`.
const DIAG_REQ_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`.
const DIAG_MSG_LEN: usize = 72;
const TCP_LISTEN: u8 = 10;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
/// `sizeof(struct rtmsg)`.
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PREFSRC: u16 = 7;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_LINK_NETNSID: u16 = 37;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
/// `struct rtgenmsg`, padded to NLMSG_ALIGNTO.
const RTGENMSG_LEN: usize = 4;
const NETNSA_NSID: u16 = 1;
const NETNSA_PID: u16 = 2;
const NETNSA_NSID_NOT_ASSIGNED: i32 = -1;

/// Replies we expect fit easily (a diag message is under 200 bytes, a route
/// under 100); a link, even without statistics, gets more room.
const REPLY_BUF: usize = 8 * 1024;
const LINK_REPLY_BUF: usize = 32 * 1024;

/// The kernel answers within sendmsg, so a missing reply means something is
/// wrong with the socket; this bounds how long we stall the host program.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The kernel TCP socket an exact lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpListenerInfo {
    /// idiag_uid: the socket's owner, as seen from our user namespace.
    pub uid: u32,
    /// The socket cookie (`SO_COOKIE`).
    pub cookie: u64,
    pub inode: u32,
    /// The listener's bound address, e.g. 0.0.0.0:P for a wildcard one.
    pub local: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Local,
    Unicast,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub kind: RouteKind,
    /// RTA_OIF, 0 if absent.
    pub oif: u32,
    /// RTA_PREFSRC.
    pub prefsrc: Option<IpAddr>,
}

/// The kernel TCP listener a connection from `from` to `to` would reach in
/// this network namespace; `Ok(None)` when nothing listens there or the
/// socket the kernel finds is not a listener.
///
/// The kernel's lookup tries established sockets before listeners, as for
/// a SYN: a `from` whose 4-tuple is in use answers `None`, even when it is
/// only the server's TIME_WAIT, which a real SYN may take over. A `from`
/// with port 0 never matches an established socket, but then an
/// SO_REUSEPORT group's member is the one port 0 hashes to, not
/// necessarily the one the real SYN will reach. So `from`'s port is asked
/// first (it spreads connectors over a group as the kernel would), and
/// port 0 when that 4-tuple is taken.
pub(crate) fn tcp_listener(
    to: SocketAddr,
    from: SocketAddr,
) -> Result<Option<TcpListenerInfo>, Errno> {
    let found = match tcp_lookup(to, from)? {
        Some((state, _)) if state != TCP_LISTEN && from.port() != 0 => {
            tcp_lookup(to, SocketAddr::new(from.ip(), 0))?
        }
        found => found,
    };
    Ok(found
        .filter(|&(state, _)| state == TCP_LISTEN)
        .map(|(_, info)| info))
}

/// The socket an exact lookup finds, with its TCP state.
fn tcp_lookup(to: SocketAddr, from: SocketAddr) -> Result<Option<(u8, TcpListenerInfo)>, Errno> {
    let (family, to_ip, from_ip) = match (unmap(to.ip()), unmap(from.ip())) {
        (IpAddr::V4(t), IpAddr::V4(f)) => (AF_INET, v4_field(t), v4_field(f)),
        (t, f) => (AF_INET6, v6(t).octets(), v6(f).octets()),
    };
    DIAG.run(|fd| {
        let seq = next_seq();
        // inet_diag_sockid: the listener's side is "src", ours is "dst",
        // as in the socket the SYN would create.
        let req = diag_request(
            seq,
            family,
            IPPROTO_TCP,
            0,
            (to.port(), to_ip),
            (from.port(), from_ip),
        );

        let mut buf = [MaybeUninit::uninit(); REPLY_BUF];
        let mut found = None;
        let answer = exchange(fd, &req, seq, &mut buf, |ty, payload| {
            if ty != SOCK_DIAG_BY_FAMILY {
                return Err(Errno::PROTO);
            }
            found = Some(parse_diag(payload)?);
            Ok(())
        })?;
        match answer {
            Ok(()) => found.map(|f| Ok(Some(f))).ok_or(Errno::PROTO),
            // "No such socket", or no inet_diag/tcp_diag module: only the
            // first is an answer.
            Err(Errno::NOENT) => Ok(diag_present(fd, family)?.map(|()| None)),
            Err(e) => Ok(Err(e)),
        }
    })
}

/// A SOCK_DIAG_BY_FAMILY request for one socket: every state, the
/// extensions `ext` asked, inet_diag_sockid's src and dst as given
/// (port, address field), idiag_if 0 and INET_DIAG_NOCOOKIE (no cookie
/// check).
fn diag_request(
    seq: u32,
    family: u8,
    protocol: u8,
    ext: u8,
    src: (u16, [u8; 16]),
    dst: (u16, [u8; 16]),
) -> [u8; NLMSG_HDRLEN + DIAG_REQ_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + DIAG_REQ_LEN];
    put_header(&mut req, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq);
    let r = &mut req[NLMSG_HDRLEN..];
    r[0] = family;
    r[1] = protocol;
    r[2] = ext;
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    r[8..10].copy_from_slice(&src.0.to_be_bytes());
    r[10..12].copy_from_slice(&dst.0.to_be_bytes());
    r[12..28].copy_from_slice(&src.1);
    r[28..44].copy_from_slice(&dst.1);
    r[48..56].copy_from_slice(&[0xff; 8]);
    req
}

/// The receive buffer (SO_RCVBUF as the kernel stores it, doubled) of
/// the kernel UDP socket a datagram from `from` to `to` would reach in
/// this network namespace: the kernel's own lookup (exact address,
/// wildcard, connected sockets, an SO_REUSEPORT member), as for TCP.
/// `Ok(None)` when no socket would take it, or the kernel cannot say
/// (no udp_diag).
pub(crate) fn udp_receive_buffer(to: SocketAddr, from: SocketAddr) -> Result<Option<u32>, Errno> {
    let (family, to_ip, from_ip) = match (unmap(to.ip()), unmap(from.ip())) {
        (IpAddr::V4(t), IpAddr::V4(f)) => (AF_INET, v4_field(t), v4_field(f)),
        (t, f) => (AF_INET6, v6(t).octets(), v6(f).octets()),
    };
    DIAG.run(|fd| {
        let seq = next_seq();
        // udp_diag looks "src" up as the datagram's source (the kernel's
        // "swapped for historical reasons"): ours is src, the receiver dst.
        let ext = 1 << (INET_DIAG_SKMEMINFO - 1);
        let req = diag_request(
            seq,
            family,
            IPPROTO_UDP,
            ext,
            (from.port(), from_ip),
            (to.port(), to_ip),
        );

        let mut buf = [MaybeUninit::uninit(); REPLY_BUF];
        let mut found = None;
        let answer = exchange(fd, &req, seq, &mut buf, |ty, payload| {
            if ty != SOCK_DIAG_BY_FAMILY {
                return Err(Errno::PROTO);
            }
            found = Some(rcvbuf_of(payload)?);
            Ok(())
        })?;
        match answer {
            Ok(()) => Ok(Ok(found.flatten())),
            // No such socket, or no udp_diag: both "cannot say".
            Err(Errno::NOENT) => Ok(Ok(None)),
            Err(e) => Ok(Err(e)),
        }
    })
}

/// The receive buffer in an inet_diag answer's SKMEMINFO attribute, if
/// it has one.
fn rcvbuf_of(m: &[u8]) -> Result<Option<u32>, Errno> {
    let mut at = align4(DIAG_MSG_LEN);
    while at < m.len() {
        let len = usize::from(u16::from_ne_bytes(bytes(m, at)?));
        let ty = u16::from_ne_bytes(bytes(m, at + 2)?) & NLA_TYPE_MASK;
        if len < 4 {
            return Err(Errno::PROTO);
        }
        if ty == INET_DIAG_SKMEMINFO && len >= 4 + 4 * (SK_MEMINFO_RCVBUF + 1) {
            return u32_at(m, at + 4 + 4 * SK_MEMINFO_RCVBUF).map(Some);
        }
        at = at.checked_add(align4(len)).ok_or(Errno::PROTO)?;
    }
    Ok(None)
}

/// Whether the kernel can answer inet_diag queries for `family`/TCP at all
/// (the modules may be missing in a container); learned once per process
/// from an empty dump, which the handlers answer with NLMSG_DONE and a
/// missing handler with ENOENT, like an exact lookup that finds nothing.
fn diag_present(fd: BorrowedFd<'_>, family: u8) -> Attempt<()> {
    static PRESENT: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
    let known = &PRESENT[usize::from(family == AF_INET6)];
    if known.load(Ordering::Relaxed) {
        return Ok(Ok(()));
    }
    let seq = next_seq();
    let mut req = [0u8; NLMSG_HDRLEN + DIAG_REQ_LEN];
    put_header(
        &mut req,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    req[NLMSG_HDRLEN] = family;
    req[NLMSG_HDRLEN + 1] = IPPROTO_TCP;
    // idiag_states 0: the dump walks nothing.
    let mut buf = [MaybeUninit::uninit(); REPLY_BUF];
    match exchange(fd, &req, seq, &mut buf, |_, _| Ok(()))? {
        Ok(()) => {
            known.store(true, Ordering::Relaxed);
            Ok(Ok(()))
        }
        Err(Errno::NOENT) => Ok(Err(Errno::NOTSUP)),
        Err(e) => Ok(Err(e)),
    }
}

fn parse_diag(m: &[u8]) -> Result<(u8, TcpListenerInfo), Errno> {
    if m.len() < DIAG_MSG_LEN {
        return Err(Errno::PROTO);
    }
    let [family, state] = bytes(m, 0)?;
    let port = u16::from_be_bytes(bytes(m, 4)?);
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::from(bytes::<4>(m, 8)?)),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(bytes::<16>(m, 8)?)),
        _ => return Err(Errno::PROTO),
    };
    let cookie = u64::from(u32_at(m, 44)?) | u64::from(u32_at(m, 48)?) << 32;
    Ok((
        state,
        TcpListenerInfo {
            uid: u32_at(m, 64)?,
            cookie,
            inode: u32_at(m, 68)?,
            local: SocketAddr::new(ip, port),
        },
    ))
}

/// What `ip route get DEST` says in this network namespace.
pub(crate) fn route(dest: IpAddr) -> Result<Route, Errno> {
    let dest = unmap(dest);
    let (family, len, addr) = match dest {
        IpAddr::V4(a) => (AF_INET, 4, v4_field(a)),
        IpAddr::V6(a) => (AF_INET6, 16, a.octets()),
    };
    ROUTE.run(|fd| {
        let seq = next_seq();
        let mut req = [0u8; NLMSG_HDRLEN + RTMSG_LEN + 4 + 16];
        let total = NLMSG_HDRLEN + RTMSG_LEN + 4 + len;
        let req = &mut req[..total];
        put_header(req, RTM_GETROUTE, NLM_F_REQUEST, seq);
        let r = &mut req[NLMSG_HDRLEN..];
        r[0] = family;
        r[1] = 8 * len as u8; // rtm_dst_len: a host route
        put_attr_header(&mut r[RTMSG_LEN..], RTA_DST, len);
        r[RTMSG_LEN + 4..].copy_from_slice(&addr[..len]);

        let mut buf = [MaybeUninit::uninit(); REPLY_BUF];
        let mut found = None;
        let answer = exchange(fd, req, seq, &mut buf, |ty, payload| {
            if ty != RTM_NEWROUTE {
                return Err(Errno::PROTO);
            }
            found = Some(parse_route(family, payload)?);
            Ok(())
        })?;
        finish(answer, found)
    })
}

fn parse_route(family: u8, m: &[u8]) -> Result<Route, Errno> {
    let [rtm_family, _, _, _, _, _, _, rtm_type] = bytes::<8>(m, 0)?;
    if rtm_family != family {
        return Err(Errno::PROTO);
    }
    let mut route = Route {
        kind: match rtm_type {
            RTN_LOCAL => RouteKind::Local,
            RTN_UNICAST => RouteKind::Unicast,
            _ => RouteKind::Other,
        },
        oif: 0,
        prefsrc: None,
    };
    for attr in Attrs::new(m.get(RTMSG_LEN..).ok_or(Errno::PROTO)?) {
        let (ty, data) = attr?;
        match ty {
            RTA_OIF => route.oif = u32_at(data, 0)?,
            RTA_PREFSRC => {
                route.prefsrc = Some(match (family, data.len()) {
                    (AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(bytes::<4>(data, 0)?)),
                    (AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(bytes::<16>(data, 0)?)),
                    _ => return Err(Errno::PROTO),
                })
            }
            _ => {}
        }
    }
    Ok(route)
}

/// IFLA_LINK_NETNSID of interface `ifindex`: for a veth, the id (in this
/// namespace's numbering) of the namespace its peer lives in. Asking
/// *assigns* that namespace an id if it had none (the kernel allocates one
/// to report it), so ask this before [`netnsid_of_pid`].
pub(crate) fn link_netnsid(ifindex: u32) -> Result<Option<i32>, Errno> {
    let index = i32::try_from(ifindex).map_err(|_| Errno::NODEV)?;
    ROUTE.run(|fd| {
        let seq = next_seq();
        let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN + 8];
        put_header(&mut req, RTM_GETLINK, NLM_F_REQUEST, seq);
        let r = &mut req[NLMSG_HDRLEN..];
        r[4..8].copy_from_slice(&index.to_ne_bytes());
        // Statistics would make the reply several times larger.
        put_attr_header(&mut r[IFINFOMSG_LEN..], IFLA_EXT_MASK, 4);
        r[IFINFOMSG_LEN + 4..].copy_from_slice(&RTEXT_FILTER_SKIP_STATS.to_ne_bytes());

        let mut buf = vec![MaybeUninit::uninit(); LINK_REPLY_BUF];
        let mut found = None;
        let answer = exchange(fd, &req, seq, &mut buf, |ty, payload| {
            if ty != RTM_NEWLINK || i32_at(payload, 4)? != index {
                return Err(Errno::PROTO);
            }
            let attrs = Attrs::new(payload.get(IFINFOMSG_LEN..).ok_or(Errno::PROTO)?);
            let mut id = None;
            for attr in attrs {
                if let (IFLA_LINK_NETNSID, data) = attr? {
                    id = Some(i32_at(data, 0)?);
                }
            }
            found = Some(id);
            Ok(())
        })?;
        finish(answer, found)
    })
}

/// The owner (the uid that made it, as our user namespace sees it) of the
/// Unix socket `sock` is connected to: two unix_diag exact lookups, ours
/// for our peer's inode, then that inode's uid (UDIAG_SHOW_UID, Linux
/// 5.3). A datagram socket connected to a name has the name's holder as
/// its peer; this is how a connector tells who bound a policy hint.
pub(crate) fn unix_peer_owner(sock: BorrowedFd<'_>) -> Result<Option<u32>, Errno> {
    let ours = u32::try_from(rustix::fs::fstat(sock)?.st_ino).map_err(|_| Errno::OVERFLOW)?;
    let Some(peer) = unix_diag(ours, UDIAG_SHOW_PEER, UNIX_DIAG_PEER)? else {
        return Ok(None);
    };
    unix_diag(peer, UDIAG_SHOW_UID, UNIX_DIAG_UID)
}

/// How many connections wait in listening Unix socket `sock`'s backlog
/// (unix_diag's RQLEN: a listener's queue length; no poll flag tells it
/// for a socket shut down, which polls readable always).
pub(crate) fn unix_backlog(sock: BorrowedFd<'_>) -> Result<Option<u32>, Errno> {
    let ino = u32::try_from(rustix::fs::fstat(sock)?.st_ino).map_err(|_| Errno::OVERFLOW)?;
    unix_diag(ino, UDIAG_SHOW_RQLEN, UNIX_DIAG_RQLEN)
}

/// One unix_diag exact lookup of the socket with inode `ino`: the u32 of
/// attribute `attr` (asked for with `show`), if the reply has it.
fn unix_diag(ino: u32, show: u32, attr: u16) -> Result<Option<u32>, Errno> {
    DIAG.run(|fd| {
        let seq = next_seq();
        let mut req = [0u8; NLMSG_HDRLEN + UNIX_DIAG_REQ_LEN];
        put_header(&mut req, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq);
        let r = &mut req[NLMSG_HDRLEN..];
        r[0] = AF_UNIX;
        // udiag_states: all; the inode; what to show; no cookie check.
        r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        r[8..12].copy_from_slice(&ino.to_ne_bytes());
        r[12..16].copy_from_slice(&show.to_ne_bytes());
        r[16..24].copy_from_slice(&[0xff; 8]);

        let mut buf = [MaybeUninit::uninit(); REPLY_BUF];
        let mut found = None;
        let answer = exchange(fd, &req, seq, &mut buf, |ty, payload| {
            if ty != SOCK_DIAG_BY_FAMILY || u32_at(payload, 4)? != ino {
                return Err(Errno::PROTO);
            }
            let mut value = None;
            for a in Attrs::new(payload.get(UNIX_DIAG_MSG_LEN..).ok_or(Errno::PROTO)?) {
                let (ty, data) = a?;
                if ty == attr {
                    value = Some(u32_at(data, 0)?);
                }
            }
            found = Some(value);
            Ok(())
        })?;
        match answer {
            Err(Errno::NOENT) => Ok(Ok(None)),
            answer => finish(answer, found),
        }
    })
}

/// The id this namespace gives the network namespace of process `pid`;
/// `Ok(None)` when it has none (our own namespace has none either).
pub(crate) fn netnsid_of_pid(pid: u32) -> Result<Option<i32>, Errno> {
    ROUTE.run(|fd| {
        let seq = next_seq();
        let mut req = [0u8; NLMSG_HDRLEN + RTGENMSG_LEN + 8];
        put_header(&mut req, RTM_GETNSID, NLM_F_REQUEST, seq);
        let r = &mut req[NLMSG_HDRLEN..];
        // rtgen_family AF_UNSPEC (0).
        put_attr_header(&mut r[RTGENMSG_LEN..], NETNSA_PID, 4);
        r[RTGENMSG_LEN + 4..].copy_from_slice(&pid.to_ne_bytes());

        let mut buf = [MaybeUninit::uninit(); REPLY_BUF];
        let mut found = None;
        let answer = exchange(fd, &req, seq, &mut buf, |ty, payload| {
            if ty != RTM_NEWNSID {
                return Err(Errno::PROTO);
            }
            let attrs = Attrs::new(payload.get(RTGENMSG_LEN..).ok_or(Errno::PROTO)?);
            for attr in attrs {
                if let (NETNSA_NSID, data) = attr? {
                    let id = i32_at(data, 0)?;
                    found = Some((id != NETNSA_NSID_NOT_ASSIGNED).then_some(id));
                }
            }
            Ok(())
        })?;
        finish(answer, found)
    })
}

/// Whether `ip` is an address of this network namespace. Loopback needs no
/// question (the kernel routes all of 127/8 and ::1 to `lo`), nor does the
/// unspecified address, which connect() sends to loopback (IPv6's route
/// lookup would say otherwise); anything the kernel does not answer with a
/// local route is not ours.
pub(crate) fn is_local(ip: IpAddr) -> bool {
    let ip = unmap(ip);
    ip.is_loopback() || ip.is_unspecified() || route(ip).is_ok_and(|r| r.kind == RouteKind::Local)
}

// ---------------------------------------------------------------------------
// Transport

/// Out of fds (`sockets::spare_fds`): the current route and diag sockets
/// are closed, opened again at the next question. True if one was open.
pub(crate) fn give_back() -> bool {
    // (`|`: both are given back.)
    channel::DIAG.give_back() | channel::ROUTE.give_back()
}

#[cfg(test)]
mod tests;
