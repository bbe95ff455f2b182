//! getsockopt: what depends on the connection's state is answered here,
//! with the kernel's rules for short and negative lengths at each level;
//! the rest by the socket's replica.
#![forbid(unsafe_code)]

use super::*;
use crate::platform::real::Action;
use crate::platform::sys::{self, OptOut};
use crate::sockets::conn::Connection;
use crate::sockets::options_store::Options;
use crate::sockets::socket::Socket;
use core::ffi::c_int;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

/// How the kernel fits an answer into the caller's buffer at each level.
#[derive(Clone, Copy)]
pub(crate) enum Fit {
    /// SOL_SOCKET and IPPROTO_TCP: a negative length is EINVAL; the value
    /// is truncated to the room.
    Truncate,
    /// IPPROTO_IP integers: as `Truncate`, but a value of 0..=255 asked for
    /// with 1 to 3 bytes of room comes as one byte.
    IpInt,
    /// IPPROTO_IPV6: the length is taken as unsigned (a negative one is a
    /// large room); truncated.
    Unsigned,
    /// All or nothing: EINVAL for less room than the value (SO_COOKIE;
    /// IPV6_PATHMTU, whose length is unsigned).
    Whole { unsigned: bool },
    /// SO_PEERNAME: EINVAL for *more* room than the address; truncated to
    /// the room otherwise.
    PeerName,
}

pub(crate) fn deliver(out: &OptOut<'_>, bytes: &[u8], fit: Fit) -> Action<c_int> {
    let room = match out.room() {
        Ok(r) => r,
        Err(e) => return Action::Fail(e),
    };
    let full = bytes.len();
    let n = match fit {
        Fit::Truncate | Fit::IpInt if room < 0 => return Action::Fail(libc::EINVAL),
        Fit::IpInt
            if full == 4
                && (1..4).contains(&room)
                && (0..=255).contains(&i32::from_ne_bytes(bytes.try_into().unwrap_or([0; 4]))) =>
        {
            1
        }
        Fit::Truncate | Fit::IpInt => (room as usize).min(full),
        Fit::Unsigned => (room as u32 as usize).min(full),
        Fit::Whole { unsigned } => {
            let enough = if unsigned {
                room as u32 as usize >= full
            } else {
                room >= 0 && room as usize >= full
            };
            if !enough {
                return Action::Fail(libc::EINVAL);
            }
            full
        }
        Fit::PeerName => {
            if room < 0 || room as usize > full {
                return Action::Fail(libc::EINVAL);
            }
            room as usize
        }
    };
    match out.put(&bytes[..n]) {
        Ok(()) => Action::Done(0),
        Err(e) => Action::Fail(e),
    }
}

pub(crate) fn int(v: c_int) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// An answer: the option's bytes and how a short buffer takes them.
type Answer = Option<(Vec<u8>, Fit)>;

pub(crate) fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    mut out: OptOut<'_>,
) -> Action<c_int> {
    let Some(sock) = crate::sockets::connecting::get(fd) else {
        return Action::Pass;
    };
    if let (Socket::Connecting(c), libc::SOL_SOCKET, libc::SO_ERROR) = (&*sock, level, name) {
        let e = crate::sockets::connecting::take_error(fd, c);
        return deliver(&out, &int(e), Fit::Truncate);
    }
    if let Some(d) = sock.datagram() {
        // SO_ERROR is ours (a pending ECONNREFUSED); the rest is its
        // kernel UDP socket's answer.
        if level == libc::SOL_SOCKET && name == libc::SO_ERROR {
            let e = d.take_error().map_or(0, |e| e.raw_os_error());
            return deliver(&out, &int(e), Fit::Truncate);
        }
        return match out.answer_from(d.kernel(), level, name) {
            Ok(()) => Action::Done(0),
            Err(e) => Action::Fail(e),
        };
    }
    if let Some(tcp) = kernel_listener(&sock) {
        // The kernel listener answers for itself.
        return match out.answer_from(sys::borrow_fd(tcp), level, name) {
            Ok(()) => Action::Done(0),
            Err(e) => Action::Fail(e),
        };
    }
    let opts = sock.options();
    let stream = sock.connection();
    // Answers that need no replica.
    let answer = by_kind(&sock, level, name)
        .or_else(|| stream.and_then(|c| by_connection(c, sock.family(), opts, level, name)));
    if let Some((bytes, fit)) = answer {
        return deliver(&out, &bytes, fit);
    }
    let rep = replica(sock.family(), opts);
    let Some(fresh) = rep.as_ref() else {
        if crate::platform::sandbox::active() {
            return match opts.get(level, name) {
                Some(v) => deliver(&out, &v, Fit::Truncate),
                None => Action::Fail(libc::ENOPROTOOPT),
            };
        }
        return Action::Fail(libc::ENOBUFS);
    };
    if let Some((bytes, fit)) = by_replica(&sock, &rep, level, name) {
        return deliver(&out, &bytes, fit);
    }
    // The caller's buffer goes to the kernel, which checks it.
    let room = out.room().unwrap_or(0);
    if let Err(e) = out.answer_from(fresh.as_fd(), level, name) {
        return Action::Fail(e);
    }
    if (level, name) == (libc::IPPROTO_IP, libc::IP_PKTOPTIONS) {
        pktinfo(&sock, out.buffer(room));
    }
    Action::Done(0)
}

/// What any emulated socket answers from its kind, family and name.
fn by_kind(sock: &Socket, level: c_int, name: c_int) -> Answer {
    let family = sock.family();
    // (Looked at only where needed: it takes the connection's locks.)
    let connector = || sock.connection().is_some_and(|c| c.progress().connector);
    let answer = match (level, name) {
        (libc::SOL_SOCKET, libc::SO_TYPE) => (int(libc::SOCK_STREAM), Fit::Truncate),
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => (int(family), Fit::Truncate),
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => (int(libc::IPPROTO_TCP), Fit::Truncate),
        (libc::SOL_SOCKET, libc::SO_ERROR) => {
            // A peer's reset is the kernel's pending error (once).
            // (And the EPIPE a RST after the peer's FIN left: noticed
            // here if nothing did before.)
            let e = sock
                .connection()
                .inspect(|c| {
                    c.rst_after_fin();
                })
                .map_or(0, |c| match c.error.swap(0, Ordering::Relaxed) {
                    0 if c.take_pending_reset() => libc::ECONNRESET,
                    e => e,
                });
            (int(e), Fit::Truncate)
        }
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
            let listening = sock.listener().is_some_and(|l| !l.is_shut());
            (int(c_int::from(listening)), Fit::Truncate)
        }
        // What the kernel reads there for TCP is the local port (inet_num).
        (libc::IPPROTO_IP, IP_PROTOCOL) => (int(c_int::from(sock.local().port())), Fit::IpInt),
        // A socket bound to an IPv6 address (not IPv4-mapped) is IPv6-only
        // (an accepted one as its listener; a connector was not bound).
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) if family == libc::AF_INET6 && !connector() => {
            match sock.local().ip() {
                std::net::IpAddr::V6(ip)
                    if !ip.is_unspecified() && ip.to_ipv4_mapped().is_none() =>
                {
                    (int(1), Fit::Unsigned)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(answer)
}

/// What a connection answers from its own state (its peer, its role).
fn by_connection(
    c: &Connection,
    family: c_int,
    opts: &Options,
    level: c_int,
    name: c_int,
) -> Answer {
    // (Looked at only where needed: they take locks.)
    let acceptor = || !c.progress().connector;
    let unset = || opts.get(level, name).is_none();
    let v6 = family == libc::AF_INET6;
    let answer = match (level, name) {
        (libc::IPPROTO_IPV6, libc::IPV6_ADDRFORM) if v6 => (int(libc::AF_INET6), Fit::Unsigned),
        // An accepted socket takes these from the SYN that made it:
        // its hop limit and the loopback interface.
        (libc::IPPROTO_IP, libc::IP_MULTICAST_TTL) if !v6 && unset() && acceptor() => {
            (int(64), Fit::IpInt)
        }
        (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS) if v6 && unset() && acceptor() => {
            (int(64), Fit::Unsigned)
        }
        (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF) if v6 && unset() && acceptor() => {
            (int(loopback_index()), Fit::Unsigned)
        }
        (libc::SOL_SOCKET, SO_PEERNAME) => {
            let peer = sys::as_family(c.peer, v6).unwrap_or(c.peer);
            (sys::socket_addr_bytes(peer), Fit::PeerName)
        }
        (libc::SOL_SOCKET, SO_INCOMING_CPU) if unset() => {
            // The CPU that last handled the connection's traffic.
            (int(rustix::thread::sched_getcpu() as c_int), Fit::Truncate)
        }
        (libc::IPPROTO_IP, libc::IP_MTU) => (int(path_mtu(Some(c.peer))), Fit::IpInt),
        (libc::IPPROTO_IPV6, libc::IPV6_MTU) if v6 => (int(path_mtu(Some(c.peer))), Fit::Unsigned),
        (libc::IPPROTO_IPV6, IPV6_PATHMTU) if v6 => {
            // struct ip6_mtuinfo: an empty sockaddr_in6, then the MTU.
            let mut info = vec![0u8; 32];
            info[28..].copy_from_slice(&(path_mtu(Some(c.peer)) as u32).to_ne_bytes());
            (info, Fit::Whole { unsigned: true })
        }
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
            let mss = mss(c.peer, c.progress().connector);
            let mss = match opts.get_int(level, name) {
                Some(user) if user > 0 => mss.min(user),
                _ => mss,
            };
            (int(mss), Fit::Truncate)
        }
        _ => return None,
    };
    Some(answer)
}

/// What the replica's answer becomes for this socket (its cookie, a
/// connection's buffers and TCP state).
fn by_replica(sock: &Socket, rep: &Option<OwnedFd>, level: c_int, name: c_int) -> Answer {
    let opts = sock.options();
    let stream = sock.connection();
    match (level, name) {
        (libc::SOL_SOCKET, SO_COOKIE) => {
            // The kernel gives each socket one cookie: ours is the first
            // replica's, kept (and never replayed).
            let cookie = opts.get(level, name).unwrap_or_else(|| {
                let mut c = [0u8; 8];
                let _ = replica_bytes(rep, level, name, &mut c);
                opts.set(level, name, &c);
                c.to_vec()
            });
            Some((cookie, Fit::Whole { unsigned: false }))
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF) if stream.is_some() => {
            Some((int(sndbuf(rep, opts)), Fit::Truncate))
        }
        (libc::SOL_SOCKET, SO_MEMINFO) if stream.is_some() => {
            let mut mem = [0u8; 64];
            replica_bytes(rep, level, name, &mut mem).map(|n| {
                let mut mem = mem[..n].to_vec();
                if mem.len() >= 16 {
                    mem[12..16].copy_from_slice(&(sndbuf(rep, opts) as u32).to_ne_bytes());
                }
                (mem, Fit::Truncate)
            })
        }
        (libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP)
            if stream.is_some() && opts.get(level, name).is_none() =>
        {
            // The kernel's clamp for a connection: the window its receive
            // buffer allows (half of it).
            let rcvbuf = replica_int(rep, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(131072);
            Some((int(rcvbuf / 2), Fit::Truncate))
        }
        (libc::IPPROTO_TCP, TCP_CC_INFO) if stream.is_some() => {
            let connector = stream.is_some_and(|c| c.progress().connector);
            cc_info(rep, level, name, connector)
        }
        (libc::IPPROTO_TCP, libc::TCP_INFO) => {
            let mut base = [0u8; 512];
            match sock {
                Socket::Bound(_) | Socket::Datagram(_) | Socket::Connecting(_) => None,
                Socket::Listener(_) => replica_bytes(rep, level, name, &mut base)
                    .map(|n| (listener_info(&base[..n]), Fit::Truncate)),
                Socket::Stream(c) => replica_bytes(rep, level, name, &mut base)
                    .map(|n| (stream_info(&base[..n], c), Fit::Truncate)),
            }
        }
        _ => None,
    }
}

/// TCP_CC_INFO as the replica's, with BBR's round-trip and gains as a
/// loopback connection's.
fn cc_info(rep: &Option<OwnedFd>, level: c_int, name: c_int, connector: bool) -> Answer {
    let mut cc = [0u8; 64];
    replica_bytes(rep, level, name, &mut cc).map(|n| {
        let mut cc = cc[..n].to_vec();
        let mut algo = [0u8; 16];
        let bbr = replica_bytes(rep, level, libc::TCP_CONGESTION, &mut algo)
            .is_some_and(|k| algo[..k].starts_with(b"bbr\0"));
        if bbr && cc.len() == 20 {
            // struct tcp_bbr_info: bw (2 words), min_rtt, pacing
            // and cwnd gains (1.0 in 8.8 fixed point once the
            // connector's BBR ran its first round).
            let gain = if connector { 256 } else { 0 };
            put_u32(&mut cc, 8, RTT_US);
            put_u32(&mut cc, 12, gain);
            put_u32(&mut cc, 16, gain);
        }
        (cc, Fit::Truncate)
    })
}

/// IP_PKTOPTIONS as the replica wrote it into the caller's buffer: with
/// IP_PKTINFO on, a cmsg holding the socket's own address (the replica's
/// is 0.0.0.0) and, on an accepted socket, the interface it came in on.
pub(crate) fn pktinfo(sock: &Socket, out: &mut [u8]) {
    if out.len() < 28 || get_u32(out, 12) != libc::IP_PKTINFO as u32 {
        return;
    }
    let ip = match sock.local().ip() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    if let Some(ip) = ip {
        out[20..24].copy_from_slice(&ip.octets());
        out[24..28].copy_from_slice(&ip.octets());
    }
    if sock.connection().is_some_and(|c| !c.progress().connector) {
        put_u32(out, 16, loopback_index() as u32);
    }
}

/// The loopback interface's index (1 in every network namespace).
pub(crate) fn loopback_index() -> c_int {
    std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1)
}

/// Loopback's path MTU to `peer`: 65535 for IPv4 (its largest datagram),
/// 65536 for IPv6.
pub(crate) fn path_mtu(peer: Option<std::net::SocketAddr>) -> c_int {
    match peer.map(|p| p.ip()) {
        Some(std::net::IpAddr::V6(ip)) if ip.to_ipv4_mapped().is_none() => 65536,
        _ => 65535,
    }
}

/// The MSS a loopback connection advertises: the MTU less IP and TCP
/// headers and TCP timestamps.
pub(crate) fn adv_mss(peer: std::net::SocketAddr) -> u32 {
    if path_mtu(Some(peer)) == 65536 {
        65536 - 40 - 20 - 12
    } else {
        65535 - 20 - 20 - 12
    }
}

/// The sending MSS of an established loopback connection (tcp_bound_to_
/// half_wnd): half the largest window the peer offered — the connector
/// saw the acceptor's unscaled SYN-ACK window (its advertised MSS), the
/// acceptor a scaled 64 KiB one.
pub(crate) fn mss(peer: std::net::SocketAddr, connector: bool) -> c_int {
    if connector {
        (adv_mss(peer) / 2) as c_int
    } else {
        32768
    }
}

/// SO_SNDBUF of an established connection: what was set (doubled by the
/// kernel), else the kernel's growth at the handshake (tcp_sndbuf_expand:
/// initial window of 10 segments of a 64 KiB MSS, in 128 KiB + sk_buff
/// units, times 2, or 3 for BBR), within net.ipv4.tcp_wmem.
pub(crate) fn sndbuf(rep: &Option<OwnedFd>, opts: &Options) -> c_int {
    let set = replica_int(rep, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(16384);
    if was_set(
        opts,
        libc::SOL_SOCKET,
        &[libc::SO_SNDBUF, libc::SO_SNDBUFFORCE],
    ) {
        return set;
    }
    let mut cc = [0u8; 16];
    let factor = match replica_bytes(rep, libc::IPPROTO_TCP, libc::TCP_CONGESTION, &mut cc) {
        Some(n) if cc[..n].starts_with(b"bbr\0") => 3,
        _ => 2,
    };
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse::<i64>().ok())
        .unwrap_or(4 << 20);
    let grown = (factor * 10 * (131072 + 256)).min(wmem_max);
    grown.max(i64::from(set)) as c_int
}
