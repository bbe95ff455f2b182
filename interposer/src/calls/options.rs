//! Socket options and fd modes (getsockopt/setsockopt, fcntl, ioctl).
//!
//! An emulated socket answers getsockopt as a kernel TCP socket in the same
//! state answers it (value, length, errno), by asking the kernel: a fresh
//! TCP socket of the same family (a *replica*) gets every option the
//! application set replayed onto it and answers the question with the
//! caller's own buffer and length. Only what depends on the connection's
//! state is answered here: SO_ERROR, SO_ACCEPTCONN, SO_PEERNAME,
//! SO_SNDBUF's growth on an established connection, SO_COOKIE (stable per
//! socket), SO_INCOMING_CPU, TCP_INFO (from the ring positions), TCP_MAXSEG,
//! TCP_WINDOW_CLAMP, IP_MTU/IPV6_MTU/IPV6_PATHMTU (loopback's), with the
//! kernel's rules for short and negative lengths at each level.
//!
//! setsockopt is tried on a replica first, so a value the kernel refuses
//! fails with the kernel's errno, and the option is remembered only if the
//! kernel took it. A few options are checked against the socket's state as
//! the kernel does (IPV6_V6ONLY after bind, TCP_FASTOPEN on a connection).
//! The most common ones (TCP_NODELAY, SO_KEEPALIVE, SO_REUSEADDR,
//! SO_REUSEPORT, TCP_CORK) are checked here without a replica: they are set
//! on every connection by many programs. SO_RCVTIMEO/SO_SNDTIMEO also
//! bound our blocking waits. An accepted connection starts with its
//! listener's options, as the kernel's accepted sockets do.
//!
//! O_NONBLOCK (F_SETFL, FIONBIO) is set on the real kernel object behind
//! the fd, where the data path reads it.
#![deny(unsafe_code)]

use core::ffi::{c_int, c_ulong, c_void};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libc::socklen_t;

use crate::platform::real::Action;
use crate::platform::sys;
use crate::sockets::options_store::Options;
use crate::sockets::registry;
use crate::sockets::socket::Socket;

// Option names the libc crate may not have.
const SO_ATTACH_BPF: c_int = 50;
const SO_ATTACH_REUSEPORT_CBPF: c_int = 51;
const SO_ATTACH_REUSEPORT_EBPF: c_int = 52;
const SO_DETACH_REUSEPORT_BPF: c_int = 68;
use crate::sockets::options_store::SO_COOKIE;
const SO_MEMINFO: c_int = 55;
const SO_INCOMING_CPU: c_int = 49;
const SO_PEERNAME: c_int = 28;
const TCP_FASTOPEN_CONNECT: c_int = 30;
const TCP_ULP: c_int = 31;
const IPV6_PATHMTU: c_int = 61;
const IP_PROTOCOL: c_int = 52;
const TCP_CC_INFO: c_int = 26;

/// The most bytes of an option value remembered for replay (options
/// longer than this are checked by the kernel but not replayed).
const REPLAY_CAP: usize = 64 << 10;

/// How the kernel fits an answer into the caller's buffer at each level.
#[derive(Clone, Copy)]
enum Fit {
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

fn deliver(value: *mut c_void, len: *mut socklen_t, bytes: &[u8], fit: Fit) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: getsockopt(2) requires `len` null or valid.
    let room = match unsafe { sys::opt_room(len) } {
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
    #[allow(unsafe_code)]
    // SAFETY: getsockopt(2) requires `value` valid for `*len` >= n bytes.
    match unsafe { sys::put_opt(value, len, &bytes[..n]) } {
        Ok(()) => Action::Done(0),
        Err(e) => Action::Fail(e),
    }
}

fn int(v: c_int) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// A fresh kernel TCP socket of `family` with every option of `opts`
/// replayed onto it, in the order they were set (some options change
/// others: IP_TOS sets the priority).
fn replica(family: c_int, opts: &Options) -> Option<OwnedFd> {
    // A sandboxed process (`sandbox`) may be killed for socket(): answers
    // come from what was set, or ENOPROTOOPT.
    if crate::platform::sandbox::active() {
        return None;
    }
    let af = if family == libc::AF_INET6 {
        rustix::net::AddressFamily::INET6
    } else {
        rustix::net::AddressFamily::INET
    };
    let sock = rustix::net::socket_with(
        af,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    for (level, name, value) in opts.entries() {
        if replayable(level, name) {
            let _ = sys::sockopt_set(sock.as_fd(), level, name, &value);
        }
    }
    Some(sock)
}

/// Options that are kept but not replayed: filters and BPF programs (the
/// value holds pointers or an fd of the moment), and our own SO_COOKIE.
fn replayable(level: c_int, name: c_int) -> bool {
    level != libc::SOL_SOCKET
        || !matches!(
            name,
            libc::SO_ATTACH_FILTER
                | libc::SO_DETACH_FILTER
                | SO_ATTACH_BPF
                | SO_ATTACH_REUSEPORT_CBPF
                | SO_ATTACH_REUSEPORT_EBPF
                | SO_DETACH_REUSEPORT_BPF
                | SO_COOKIE
        )
}

/// An integer option as a replica reads it.
fn replica_int(rep: &Option<OwnedFd>, level: c_int, name: c_int) -> Option<c_int> {
    let mut raw = [0u8; 4];
    replica_bytes(rep, level, name, &mut raw).map(|_| c_int::from_ne_bytes(raw))
}

fn replica_bytes(
    rep: &Option<OwnedFd>,
    level: c_int,
    name: c_int,
    buf: &mut [u8],
) -> Option<usize> {
    let rep = rep.as_ref()?;
    let mut len = buf.len() as socklen_t;
    #[allow(unsafe_code)]
    // SAFETY: `buf` is valid for `len` bytes and `len` for a socklen_t.
    unsafe { sys::sockopt_get(rep.as_fd(), level, name, buf.as_mut_ptr().cast(), &mut len) }
        .ok()?;
    Some(len as usize)
}

fn was_set(opts: &Options, level: c_int, names: &[c_int]) -> bool {
    names.iter().any(|&n| opts.get(level, n).is_some())
}

pub(crate) fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    if let Some(tcp) = kernel_listener(&sock) {
        // The kernel listener answers for itself.
        #[allow(unsafe_code)]
        // SAFETY: getsockopt(2)'s contract for `value`/`len` is the caller's.
        return Action::Raw(unsafe {
            crate::platform::real::getsockopt(tcp, level, name, value, len)
        });
    }
    let family = sock.family();
    let opts = sock.options();
    let stream = match &*sock {
        Socket::Stream(c) => Some(c),
        Socket::Listener(_) | Socket::Bound(_) => None,
    };
    // Answers that need no replica.
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_TYPE) => {
            return deliver(value, len, &int(libc::SOCK_STREAM), Fit::Truncate)
        }
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => {
            return deliver(value, len, &int(family), Fit::Truncate)
        }
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => {
            return deliver(value, len, &int(libc::IPPROTO_TCP), Fit::Truncate)
        }
        (libc::SOL_SOCKET, libc::SO_ERROR) => {
            let e = stream.map_or(0, |c| c.error.swap(0, Ordering::Relaxed));
            return deliver(value, len, &int(e), Fit::Truncate);
        }
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
            let listening = matches!(&*sock, Socket::Listener(_));
            return deliver(value, len, &int(c_int::from(listening)), Fit::Truncate);
        }
        _ => {}
    }
    match (level, name) {
        // What the kernel reads there for TCP is the local port (inet_num).
        (libc::IPPROTO_IP, IP_PROTOCOL) => {
            return deliver(
                value,
                len,
                &int(c_int::from(sock.local().port())),
                Fit::IpInt,
            )
        }
        // A socket bound to an IPv6 address (not IPv4-mapped) is IPv6-only
        // (an accepted one as its listener; a connector was not bound).
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
            if family == libc::AF_INET6 && stream.is_none_or(|c| !c.progress().connector) =>
        {
            if let std::net::IpAddr::V6(ip) = sock.local().ip() {
                if !ip.is_unspecified() && ip.to_ipv4_mapped().is_none() {
                    return deliver(value, len, &int(1), Fit::Unsigned);
                }
            }
        }
        _ => {}
    }
    if let Some(c) = stream {
        let acceptor = || !c.progress().connector;
        match (level, name) {
            (libc::IPPROTO_IPV6, libc::IPV6_ADDRFORM) if family == libc::AF_INET6 => {
                return deliver(value, len, &int(libc::AF_INET6), Fit::Unsigned);
            }
            // An accepted socket takes these from the SYN that made it:
            // its hop limit and the loopback interface.
            (libc::IPPROTO_IP, libc::IP_MULTICAST_TTL)
                if family == libc::AF_INET && opts.get(level, name).is_none() && acceptor() =>
            {
                return deliver(value, len, &int(64), Fit::IpInt);
            }
            (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS)
                if family == libc::AF_INET6 && opts.get(level, name).is_none() && acceptor() =>
            {
                return deliver(value, len, &int(64), Fit::Unsigned);
            }
            (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF)
                if family == libc::AF_INET6 && opts.get(level, name).is_none() && acceptor() =>
            {
                return deliver(value, len, &int(loopback_index()), Fit::Unsigned);
            }
            (libc::SOL_SOCKET, SO_PEERNAME) => {
                let peer = crate::sockets::socket::as_family(c.peer, family == libc::AF_INET6)
                    .unwrap_or(c.peer);
                return deliver(value, len, &sys::socket_addr_bytes(peer), Fit::PeerName);
            }
            (libc::SOL_SOCKET, SO_INCOMING_CPU) if opts.get(level, name).is_none() => {
                // The CPU that last handled the connection's traffic.
                let cpu = rustix::thread::sched_getcpu() as c_int;
                return deliver(value, len, &int(cpu), Fit::Truncate);
            }
            (libc::IPPROTO_IP, libc::IP_MTU) => {
                return deliver(value, len, &int(path_mtu(Some(c.peer))), Fit::IpInt);
            }
            (libc::IPPROTO_IPV6, libc::IPV6_MTU) if family == libc::AF_INET6 => {
                return deliver(value, len, &int(path_mtu(Some(c.peer))), Fit::Unsigned);
            }
            (libc::IPPROTO_IPV6, IPV6_PATHMTU) if family == libc::AF_INET6 => {
                // struct ip6_mtuinfo: an empty sockaddr_in6, then the MTU.
                let mut info = vec![0u8; 32];
                info[28..].copy_from_slice(&(path_mtu(Some(c.peer)) as u32).to_ne_bytes());
                return deliver(value, len, &info, Fit::Whole { unsigned: true });
            }
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
                let mss = mss(c.peer, c.progress().connector);
                let mss = match opts.get_int(level, name) {
                    Some(user) if user > 0 => mss.min(user),
                    _ => mss,
                };
                return deliver(value, len, &int(mss), Fit::Truncate);
            }
            _ => {}
        }
    }
    let rep = replica(family, opts);
    let Some(fresh) = rep.as_ref() else {
        if crate::platform::sandbox::active() {
            return match opts.get(level, name) {
                Some(v) => deliver(value, len, &v, Fit::Truncate),
                None => Action::Fail(libc::ENOPROTOOPT),
            };
        }
        return Action::Fail(libc::ENOBUFS);
    };
    let answer = match (level, name) {
        (libc::SOL_SOCKET, SO_COOKIE) => {
            // The kernel gives each socket one cookie: ours is the first
            // replica's, kept (and never replayed).
            let cookie = opts.get(level, name).unwrap_or_else(|| {
                let mut c = [0u8; 8];
                let _ = replica_bytes(&rep, level, name, &mut c);
                opts.set(level, name, &c);
                c.to_vec()
            });
            Some((cookie, Fit::Whole { unsigned: false }))
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF) if stream.is_some() => {
            Some((int(sndbuf(&rep, opts)), Fit::Truncate))
        }
        (libc::SOL_SOCKET, SO_MEMINFO) if stream.is_some() => {
            let mut mem = [0u8; 64];
            replica_bytes(&rep, level, name, &mut mem).map(|n| {
                let mut mem = mem[..n].to_vec();
                if mem.len() >= 16 {
                    mem[12..16].copy_from_slice(&(sndbuf(&rep, opts) as u32).to_ne_bytes());
                }
                (mem, Fit::Truncate)
            })
        }
        (libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP)
            if stream.is_some() && opts.get(level, name).is_none() =>
        {
            // The kernel's clamp for a connection: the window its receive
            // buffer allows (half of it).
            let rcvbuf = replica_int(&rep, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(131072);
            Some((int(rcvbuf / 2), Fit::Truncate))
        }
        (libc::IPPROTO_TCP, TCP_CC_INFO) if stream.is_some() => {
            let mut cc = [0u8; 64];
            replica_bytes(&rep, level, name, &mut cc).map(|n| {
                let mut cc = cc[..n].to_vec();
                let mut algo = [0u8; 16];
                let bbr = replica_bytes(&rep, level, libc::TCP_CONGESTION, &mut algo)
                    .is_some_and(|k| algo[..k].starts_with(b"bbr\0"));
                if bbr && cc.len() == 20 {
                    // struct tcp_bbr_info: bw (2 words), min_rtt, pacing
                    // and cwnd gains (1.0 in 8.8 fixed point once the
                    // connector's BBR ran its first round).
                    let connector = stream.is_some_and(|c| c.progress().connector);
                    let gain = if connector { 256 } else { 0 };
                    put_u32(&mut cc, 8, RTT_US);
                    put_u32(&mut cc, 12, gain);
                    put_u32(&mut cc, 16, gain);
                }
                (cc, Fit::Truncate)
            })
        }
        (libc::IPPROTO_TCP, libc::TCP_INFO) => match &*sock {
            Socket::Bound(_) => None,
            Socket::Listener(_) => {
                let mut base = [0u8; 512];
                replica_bytes(&rep, level, name, &mut base)
                    .map(|n| (listener_info(&base[..n]), Fit::Truncate))
            }
            Socket::Stream(c) => {
                let mut base = [0u8; 512];
                replica_bytes(&rep, level, name, &mut base)
                    .map(|n| (stream_info(&base[..n], c), Fit::Truncate))
            }
        },
        _ => None,
    };
    if let Some((bytes, fit)) = answer {
        return deliver(value, len, &bytes, fit);
    }
    #[allow(unsafe_code)]
    // SAFETY: the caller's buffer goes to the kernel, which checks it.
    if let Err(e) = unsafe { sys::sockopt_get(fresh.as_fd(), level, name, value, len) } {
        return Action::Fail(e);
    }
    if (level, name) == (libc::IPPROTO_IP, libc::IP_PKTOPTIONS) {
        pktinfo(&sock, value, len);
    }
    Action::Done(0)
}

/// IP_PKTOPTIONS as the replica wrote it into the caller's buffer: with
/// IP_PKTINFO on, a cmsg holding the socket's own address (the replica's
/// is 0.0.0.0) and, on an accepted socket, the interface it came in on.
fn pktinfo(sock: &Socket, value: *mut c_void, len: *mut socklen_t) {
    #[allow(unsafe_code)]
    // SAFETY: the kernel just wrote `*len` there (the call succeeded).
    let Ok(n) = (unsafe { sys::opt_room(len) }) else {
        return;
    };
    #[allow(unsafe_code)]
    // SAFETY: the kernel wrote `n` bytes at `value`, the caller's buffer.
    let out = unsafe { sys::out_buf(value, n.max(0) as usize) };
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
    if matches!(sock, Socket::Stream(c) if !c.progress().connector) {
        put_u32(out, 16, loopback_index() as u32);
    }
}

/// The loopback interface's index (1 in every network namespace).
fn loopback_index() -> c_int {
    std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1)
}

/// Loopback's path MTU to `peer`: 65535 for IPv4 (its largest datagram),
/// 65536 for IPv6.
fn path_mtu(peer: Option<std::net::SocketAddr>) -> c_int {
    match peer.map(|p| p.ip()) {
        Some(std::net::IpAddr::V6(ip)) if ip.to_ipv4_mapped().is_none() => 65536,
        _ => 65535,
    }
}

/// The MSS a loopback connection advertises: the MTU less IP and TCP
/// headers and TCP timestamps.
fn adv_mss(peer: std::net::SocketAddr) -> u32 {
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
fn mss(peer: std::net::SocketAddr, connector: bool) -> c_int {
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
fn sndbuf(rep: &Option<OwnedFd>, opts: &Options) -> c_int {
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

// Offsets in struct tcp_info (linux/tcp.h).
mod ti {
    pub const STATE: usize = 0;
    pub const OPTIONS: usize = 5;
    pub const WSCALE: usize = 6;
    pub const RTO: usize = 8;
    pub const ATO: usize = 12;
    pub const SND_MSS: usize = 16;
    pub const RCV_MSS: usize = 20;
    pub const UNACKED: usize = 24;
    pub const LAST_DATA_SENT: usize = 44;
    pub const LAST_DATA_RECV: usize = 52;
    pub const LAST_ACK_RECV: usize = 56;
    pub const PMTU: usize = 60;
    pub const RCV_SSTHRESH: usize = 64;
    pub const RTT: usize = 68;
    pub const RTTVAR: usize = 72;
    pub const SND_CWND: usize = 80;
    pub const ADVMSS: usize = 84;
    pub const REORDERING: usize = 88;
    pub const RCV_SPACE: usize = 96;
    pub const TOTAL_RETRANS: usize = 100;
    pub const PACING_RATE: usize = 104;
    pub const MAX_PACING_RATE: usize = 112;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const SEGS_OUT: usize = 136;
    pub const SEGS_IN: usize = 140;
    pub const NOTSENT: usize = 144;
    pub const MIN_RTT: usize = 148;
    pub const DATA_SEGS_IN: usize = 152;
    pub const DATA_SEGS_OUT: usize = 156;
    pub const DELIVERED: usize = 192;
    pub const BYTES_SENT: usize = 200;
    pub const SND_WND: usize = 228;
    pub const RCV_WND: usize = 232;
}

fn put_u32(info: &mut [u8], at: usize, v: u32) {
    if let Some(f) = info.get_mut(at..at + 4) {
        f.copy_from_slice(&v.to_ne_bytes());
    }
}

fn put_u64(info: &mut [u8], at: usize, v: u64) {
    if let Some(f) = info.get_mut(at..at + 8) {
        f.copy_from_slice(&v.to_ne_bytes());
    }
}

fn get_u32(info: &[u8], at: usize) -> u32 {
    info.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// TCP_INFO of a listener, as the kernel gives it: the state, the pacing
/// rates, cwnd and reordering of a fresh socket, nothing else (the
/// backlog, tcpi_sacked, is not known here: 0).
fn listener_info(fresh: &[u8]) -> Vec<u8> {
    let mut info = vec![0u8; fresh.len()];
    if let Some(state) = info.get_mut(ti::STATE) {
        *state = 10; // TCP_LISTEN
    }
    for at in [ti::SND_CWND, ti::REORDERING] {
        put_u32(&mut info, at, get_u32(fresh, at));
    }
    for at in [ti::PACING_RATE, ti::MAX_PACING_RATE] {
        if let (Some(dst), Some(src)) = (info.get_mut(at..at + 8), fresh.get(at..at + 8)) {
            dst.copy_from_slice(src);
        }
    }
    info
}

/// Round-trip time reported for a connection (us): ring round trips are
/// not timed, so a typical loopback value.
const RTT_US: u32 = 25;

/// TCP_INFO of a connection: a fresh kernel socket's (its size, this
/// kernel's defaults) with what an established loopback connection with
/// nothing lost has — window scaling, timestamps and SACK, loopback's MSS
/// and MTU, an initial window of 10 — and the connection's own progress:
/// its state after shutdowns, bytes sent (written into the ring), acked
/// (read by the peer: the ring is the window in flight) and received (read
/// by us), segments estimated from them, never a retransmission.
fn stream_info(fresh: &[u8], c: &crate::sockets::conn::Connection) -> Vec<u8> {
    let p = c.progress();
    let mut info = fresh.to_vec();
    if info.len() < 104 {
        return info;
    }
    info[ti::STATE] = match (p.shut_wr, p.peer_done) {
        (false, false) => 1, // ESTABLISHED
        (true, false) => 5,  // FIN_WAIT2
        (false, true) => 8,  // CLOSE_WAIT
        (true, true) => 7,   // CLOSE (after TIME_WAIT or LAST_ACK)
    };
    info[ti::OPTIONS] = 7; // timestamps, SACK, window scaling
    let rmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse::<u64>().ok())
        .unwrap_or(6 << 20);
    let core_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let scale = |space: u64| {
        (63 - space.max(1).leading_zeros())
            .saturating_sub(15)
            .min(14) as u8
    };
    let space = rmem_max.max(core_max);
    // Ours is limited by a window clamp set before the handshake (an
    // accepted socket's, from its listener); the peer's taken as the
    // default.
    let clamp = c
        .opts
        .get_int(libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP)
        .filter(|&v| v > 0 && !p.connector)
        .map_or(u64::MAX, |v| v as u64);
    info[ti::WSCALE] = scale(space) | (scale(space.min(clamp)) << 4);
    let adv = adv_mss(c.peer);
    let snd_mss = mss(c.peer, p.connector) as u32;
    let sent = p.sent;
    let acked = p.acked.min(sent);
    let received = p.received;
    let segs = |bytes: u64| bytes.div_ceil(u64::from(snd_mss)) as u32;
    for at in [ti::LAST_DATA_SENT, ti::LAST_DATA_RECV, ti::LAST_ACK_RECV] {
        put_u32(&mut info, at, 0); // (not timed: "just now")
    }
    put_u32(&mut info, ti::RTO, 200_000);
    put_u32(&mut info, ti::ATO, if received > 0 { 40_000 } else { 0 });
    put_u32(&mut info, ti::SND_MSS, snd_mss);
    put_u32(&mut info, ti::RCV_MSS, 536);
    put_u32(&mut info, ti::UNACKED, segs(sent - acked));
    put_u32(&mut info, ti::PMTU, path_mtu(Some(c.peer)) as u32);
    let (ssthresh, snd_wnd, rcv_wnd) = if p.connector {
        (adv + 12, adv, 65536)
    } else {
        (adv, 65536, adv)
    };
    put_u32(&mut info, ti::RCV_SSTHRESH, ssthresh);
    put_u32(&mut info, ti::RCV_SPACE, ssthresh);
    put_u32(&mut info, ti::RTT, RTT_US);
    put_u32(&mut info, ti::RTTVAR, RTT_US / 2);
    put_u32(&mut info, ti::MIN_RTT, RTT_US);
    put_u32(&mut info, ti::SND_CWND, 10);
    put_u32(&mut info, ti::ADVMSS, adv);
    put_u32(&mut info, ti::TOTAL_RETRANS, 0);
    // cwnd segments per round trip, doubled (slow start's pacing ratio).
    let rate = u64::from(snd_mss) * 10 * 1_000_000 / u64::from(RTT_US) * 2;
    let max_rate = info
        .get(ti::MAX_PACING_RATE..ti::MAX_PACING_RATE + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_ne_bytes);
    put_u64(&mut info, ti::PACING_RATE, rate.min(max_rate));
    // The connector's SYN counts as one byte acked, as the kernel counts it.
    put_u64(&mut info, ti::BYTES_ACKED, acked + u64::from(p.connector));
    put_u64(&mut info, ti::BYTES_RECEIVED, received);
    let (data_out, data_in) = (segs(sent), segs(received));
    let (hs_out, hs_in) = if p.connector { (2, 1) } else { (0, 2) };
    put_u32(
        &mut info,
        ti::SEGS_OUT,
        hs_out + data_out + data_in.div_ceil(2),
    );
    put_u32(
        &mut info,
        ti::SEGS_IN,
        hs_in + data_in + data_out.div_ceil(2),
    );
    put_u32(&mut info, ti::NOTSENT, 0);
    put_u32(&mut info, ti::DATA_SEGS_IN, data_in);
    put_u32(&mut info, ti::DATA_SEGS_OUT, data_out);
    put_u32(&mut info, ti::DELIVERED, 1 + segs(acked));
    put_u64(&mut info, ti::BYTES_SENT, sent);
    put_u32(&mut info, ti::SND_WND, snd_wnd);
    put_u32(&mut info, ti::RCV_WND, rcv_wnd);
    info
}

pub(crate) fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> Action<c_int> {
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    if (len as c_int) < 0 {
        return Action::Fail(libc::EINVAL);
    }
    if len > 0 && value.is_null() {
        return Action::Fail(libc::EFAULT);
    }
    if let Some(tcp) = kernel_listener(&sock) {
        #[allow(unsafe_code)]
        // SAFETY: setsockopt(2)'s contract for `value`/`len` is the caller's.
        let r = unsafe { crate::platform::real::setsockopt(tcp, level, name, value, len) };
        if r == 0 && (len as usize) <= REPLAY_CAP {
            // Remembered for the connections it accepts over shared memory
            // (the kernel's accepted sockets inherit them).
            #[allow(unsafe_code)]
            // SAFETY: the kernel just read `len` bytes there.
            let bytes = unsafe { sys::in_buf(value, len as usize) };
            sock.options().set(level, name, bytes);
        }
        return Action::Raw(r);
    }
    let n = (len as usize).min(REPLAY_CAP);
    #[allow(unsafe_code)]
    // SAFETY: setsockopt(2) requires `value` valid for `len` bytes of reads.
    let bytes = unsafe { sys::in_buf(value, n) };
    let stream = matches!(&*sock, Socket::Stream(_));
    match (level, name) {
        // Common flags: the kernel takes any int.
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE | libc::SO_REUSEADDR | libc::SO_REUSEPORT)
        | (libc::IPPROTO_TCP, libc::TCP_NODELAY | libc::TCP_CORK) => {
            if bytes.len() < 4 {
                return Action::Fail(libc::EINVAL);
            }
            sock.options().set(level, name, bytes);
            return Action::Done(0);
        }
        // Only before bind (inet_num set): ours are all bound.
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) if sock.family() == libc::AF_INET6 => {
            return Action::Fail(libc::EINVAL);
        }
        // Only on a closed or listening socket.
        (libc::IPPROTO_TCP, libc::TCP_FASTOPEN) if stream => {
            return Action::Fail(libc::EINVAL);
        }
        // No upper-layer protocol (kernel TLS) over shared memory: as a
        // kernel without the module.
        (libc::IPPROTO_TCP, TCP_ULP) if stream => return Action::Fail(libc::ENOENT),
        _ => {}
    }
    let Some(rep) = replica(sock.family(), sock.options()) else {
        if crate::platform::sandbox::active() && n == len as usize {
            // Unchecked: remembered as given.
            sock.options().set(level, name, bytes);
            return Action::Done(0);
        }
        return Action::Fail(libc::ENOBUFS);
    };
    let tried = if n == len as usize {
        sys::sockopt_set(rep.as_fd(), level, name, bytes)
    } else {
        // Too long to keep: the kernel checks it, it is not replayed.
        #[allow(unsafe_code)]
        // SAFETY: setsockopt(2)'s contract for `value`/`len` is the caller's.
        let r =
            unsafe { crate::platform::real::setsockopt(rep.as_raw_fd(), level, name, value, len) };
        if r == 0 {
            return Action::Done(0);
        }
        Err(sys::errno())
    };
    if let Err(e) = tried {
        return Action::Fail(e);
    }
    // Only on a socket that has not connected yet (the replica has not).
    if level == libc::IPPROTO_TCP
        && name == TCP_FASTOPEN_CONNECT
        && !matches!(&*sock, Socket::Bound(_))
    {
        return Action::Fail(libc::EINVAL);
    }
    sock.options().set(level, name, bytes);
    Action::Done(0)
}

/// `fcntl` and `fcntl64`. F_DUPFD/F_DUPFD_CLOEXEC of an fd of ours share
/// its socket; everything else acts on the real object behind the fd.
pub(crate) fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> Action<c_int> {
    if cmd == libc::F_SETFD {
        mirror_cloexec(fd, arg as c_int & libc::FD_CLOEXEC != 0);
        return Action::Pass;
    }
    if cmd == libc::F_SETFL {
        forget_nonblocking(fd);
        return Action::Pass;
    }
    if cmd != libc::F_DUPFD && cmd != libc::F_DUPFD_CLOEXEC {
        return Action::Pass;
    }
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    let min = c_int::try_from(arg).unwrap_or(c_int::MAX);
    let new = if cmd == libc::F_DUPFD_CLOEXEC {
        rustix::io::fcntl_dupfd_cloexec(sys::borrow_fd(fd), min)
    } else {
        // rustix has no plain F_DUPFD; dup then clear close-on-exec.
        rustix::io::fcntl_dupfd_cloexec(sys::borrow_fd(fd), min)
            .and_then(|f| rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::empty()).map(|()| f))
    };
    share(new, sock)
}

/// The application is setting `fd`'s close-on-exec flag (set_inheritable,
/// F_SETFD, FIOCLEX/FIONCLEX): see `refresh_cloexec`.
fn mirror_cloexec(fd: c_int, cloexec: bool) {
    if let Some(sock) = registry::get(fd) {
        refresh_cloexec(&sock, Some((fd, cloexec)));
    }
}

/// A listener's parts (a connection's carrier, once it has one) go across
/// exec exactly when one of the application's fds for it does (its other
/// fds looked at as they are, `changing` as it is about to be). A scan of
/// the fd table: only when a copy of such an fd is closed or has its flag
/// set.
pub(crate) fn refresh_cloexec(sock: &Arc<Socket>, changing: Option<(c_int, bool)>) {
    // A sandboxed process makes no carriers (`inherit::before_exec`), and
    // may be killed for the fcntl this needs (found by review).
    if matches!(**sock, Socket::Bound(_)) || crate::platform::sandbox::active() {
        return;
    }
    let limit = crate::platform::internal_fd::nofile_limit()
        .map_or(crate::platform::fdtable::CAPACITY, |n| n as usize)
        .min(crate::platform::fdtable::CAPACITY);
    let inheritable = |fd: c_int| match changing {
        Some((changed, cloexec)) if changed == fd => !cloexec,
        _ => rustix::io::fcntl_getfd(sys::borrow_fd(fd))
            .is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC)),
    };
    let any = (0..limit as c_int).any(|fd| {
        crate::platform::fdtable::table().get(fd).is_some()
            && registry::get(fd).is_some_and(|s| Arc::ptr_eq(&s, sock))
            && inheritable(fd)
    });
    sock.set_cloexec(!any);
}

/// `fd`, a new copy of `sock`'s fd (dup, dup2, F_DUPFD), goes across exec:
/// then so must the listener's parts (a supervisor dup2()s a listener onto
/// fd 3 for the program it runs, as socket activation does), or the
/// connection's carrier (a forked child dup2()s it onto 0 and 1: made
/// before its exec, `inherit::before_exec`).
pub(crate) fn inheritable_copy(fd: c_int, sock: &Socket) {
    if !matches!(sock, Socket::Bound(_)) && !crate::platform::sandbox::active() {
        let cloexec = rustix::io::fcntl_getfd(sys::borrow_fd(fd))
            .map_or(true, |f| f.contains(rustix::io::FdFlags::CLOEXEC));
        if !cloexec {
            sock.set_cloexec(false);
        }
    }
}

/// A listener's or connection's fd was closed while others remain: its
/// parts stay inheritable only if one of those is (see `refresh_cloexec`).
pub(crate) fn closed_copy(sock: &Arc<Socket>) {
    if !matches!(**sock, Socket::Bound(_)) && Arc::strong_count(sock) > 1 {
        refresh_cloexec(sock, None);
    }
}

/// A default-mode listener's kernel TCP listener, which answers for it.
fn kernel_listener(sock: &Socket) -> Option<c_int> {
    match sock {
        Socket::Listener(l) => l.tcp().map(|t| t.as_raw_fd()),
        _ => None,
    }
}

/// A connection remembers O_NONBLOCK; the application just changed it.
fn forget_nonblocking(fd: c_int) {
    if let Some(Socket::Stream(c)) = registry::get(fd).as_deref() {
        c.forget_nonblocking();
    }
}

/// Registers a new fd that refers to the same socket.
pub(crate) fn share(
    new: rustix::io::Result<std::os::fd::OwnedFd>,
    sock: Arc<Socket>,
) -> Action<c_int> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    match new {
        Ok(f) => {
            inheritable_copy(f.as_raw_fd(), &sock);
            if registry::insert(f.as_raw_fd(), sock).is_err() {
                return Action::Fail(libc::EMFILE);
            }
            Action::Done(f.into_raw_fd())
        }
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

/// FIONREAD counts the ring's bytes; FIONBIO and the rest act on the real
/// object behind the fd.
pub(crate) fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> Action<c_int> {
    if request == libc::FIONBIO as c_ulong {
        forget_nonblocking(fd);
        return Action::Pass;
    }
    if request == libc::FIOCLEX as c_ulong || request == libc::FIONCLEX as c_ulong {
        mirror_cloexec(fd, request == libc::FIOCLEX as c_ulong);
        return Action::Pass;
    }
    if request != libc::FIONREAD as c_ulong {
        return Action::Pass;
    }
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    let n = match &*sock {
        Socket::Stream(c) => c.available(),
        Socket::Listener(_) | Socket::Bound(_) => return Action::Fail(libc::EINVAL),
    };
    #[allow(unsafe_code)]
    // SAFETY: ioctl(FIONREAD) requires `arg` to point at an int.
    match unsafe { sys::put_int(arg as *mut c_int, c_int::try_from(n).unwrap_or(c_int::MAX)) } {
        Ok(()) => Action::Done(0),
        Err(e) => Action::Fail(e),
    }
}
