//! UDP on partition addresses, emulated (udp-draft stage 1): bind, connect
//! (AF_UNSPEC dissolves), the send and receive families with the peer's
//! address, the mmsg calls as loops, and SO_ERROR.
//!
//! In the emulated mode (SHMNET_FALLBACK=never, SHMNET_UDP=1) every UDP
//! socket is ours from `socket()` on (`socket_made`, review H-A): its fd
//! number is an epoll instance holding the kernel UDP socket, and stays
//! that file. It is the kernel's socket seen through it (each call goes
//! to the kernel socket) until it is *emulated*, in place: when it binds
//! a loopback partition address or the wildcard address, or, unbound or
//! kernel-bound to a loopback address, connects or sends to a loopback
//! partition address (unbound, it then takes an ephemeral port on that
//! address). A UDP socket the library did not make (inherited across
//! exec, passed, made by a raw system call) is made ours at those same
//! moments, its fd number then pointed at a new instance.
//!
//! In the default mode (stage 3, decision 46; UDP on there by default,
//! decision 65) the same, except that the kernel owns the ports: a bind
//! (to a loopback or wildcard address), a connect or a first send binds
//! or connects the kernel socket first, as the kernel would, and then
//! holds the name of the address the kernel gave it. Preloaded senders
//! find the name (shared memory), plain ones reach the kernel socket, and
//! one fd receives from both; a destination nobody names is the kernel's
//! route. And a socket is the kernel's own file until then (`pristine`,
//! decision 64): converted at that moment, or the kernel's for good if
//! something could have captured its file first.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use libc::ssize_t;
use rustix::io::Errno;

use crate::platform::config::{self, Fallback};
use crate::platform::fdtable;
use crate::platform::real::Action;
use crate::platform::sys::{self, as_family, AddrIn, AddrOut, InMsg, Mmsgs, OutMsg};
use crate::sockets::datagram::pristine::{self, Claimed};
use crate::sockets::datagram::{segment, Datagram, Taken};
use crate::sockets::registry;
use crate::sockets::socket::Socket;
use crate::transport::rendezvous::{is_loopback, unmapped};

fn fail<R>(e: Errno) -> Action<R> {
    Action::Fail(e.raw_os_error())
}

/// Whether `target` is a destination or name this stage emulates:
/// `SHMNET_UDP=1`, outside a sandbox, a loopback partition address.
fn emulated(target: SocketAddr) -> bool {
    let ip = unmapped(target).ip();
    carried()
        && config::get().is_some_and(|c| c.is_partition_ip(ip))
        && is_loopback(ip)
        && !crate::platform::sandbox::active()
}

/// Whether `target` is a destination the default mode found held by
/// nobody a moment ago (`unheld`, decision 63): a socket that connects or
/// sends to it stays the kernel's, unnamed, as a plain program's (a
/// resolver's socket per lookup to a plain DNS server).
fn unheld(target: SocketAddr) -> bool {
    default_mode() && crate::sockets::datagram::unheld::unheld(unmapped(target))
}

/// The family of a kernel UDP socket (None: not one, or not IP).
fn udp_family(sock: BorrowedFd<'_>) -> Option<c_int> {
    if rustix::net::sockopt::socket_type(sock).ok()? != rustix::net::SocketType::DGRAM {
        return None;
    }
    match rustix::net::sockopt::socket_domain(sock).ok()? {
        rustix::net::AddressFamily::INET => Some(libc::AF_INET),
        rustix::net::AddressFamily::INET6 => Some(libc::AF_INET6),
        _ => None,
    }
}

/// Our datagram socket behind `fd`, if it is one.
fn ours(fd: c_int) -> Option<Arc<Socket>> {
    if !carried() {
        return None;
    }
    registry::get(fd).filter(|s| s.datagram().is_some())
}

/// Whether this process carries UDP at all (`SHMNET_UDP=1`, or unset in
/// the default mode): when not, no datagram socket of ours exists, and sendto,
/// sendmsg, recvfrom and recvmsg on a stream of ours skip the lookups
/// here (the stream path makes its own).
fn carried() -> bool {
    config::get().is_some_and(|c| c.udp)
}

/// Whether this is the default mode (not SHMNET_FALLBACK=never): the
/// kernel owns UDP ports (stage 3, decision 46), so a socket binds its
/// kernel socket first (EADDRINUSE, EACCES and ephemeral ports are the
/// kernel's, shared with plain programs), then holds the name of what the
/// kernel gave it beside it: preloaded senders reach it through shared
/// memory, plain ones through the kernel, on one fd.
fn default_mode() -> bool {
    config::get().is_some_and(|c| c.fallback != Fallback::Never)
}

/// A datagram socket of ours, kept while its kernel socket serves a call.
pub(crate) struct Kernel(Arc<Socket>);

impl Kernel {
    /// The kernel UDP socket's fd number.
    pub(crate) fn fd(&self) -> c_int {
        use std::os::fd::AsRawFd;
        self.0.datagram().map_or(-1, |d| d.kernel().as_raw_fd())
    }
}

/// An ioctl on `fd` that is its kernel UDP socket's to answer: every
/// request but those on the file (FIONBIO, FIOCLEX, FIONCLEX) and
/// FIONREAD (the next datagram, emulated or not). dnsmasq lists the
/// interfaces with ioctls on a UDP socket.
pub(crate) fn ioctl_target(fd: c_int, request: core::ffi::c_ulong) -> Option<Kernel> {
    let file = [libc::FIONBIO, libc::FIOCLEX, libc::FIONCLEX, libc::FIONREAD];
    if !fdtable::is_owned(fd) || file.iter().any(|&r| r as core::ffi::c_ulong == request) {
        return None;
    }
    ours(fd).map(Kernel)
}

/// A send on `fd` that is its kernel socket's, as the application made
/// it (flags, ancillary data such as UDP_SEGMENT or IP_PKTINFO): one of
/// ours not emulated, to a destination (`to`: the call's, None for the
/// connected peer or none) that does not make it so. The kernel socket
/// holds a port after it. `to` is called only for a socket of ours (it
/// may read the destination with a plain copy, `AddrIn::dest`).
pub(crate) fn kernel_send(fd: c_int, to: impl FnOnce() -> Option<SocketAddr>) -> Option<Kernel> {
    if !carried() {
        return None;
    }
    if !fdtable::is_owned(fd) {
        if pristine::recheck_due(fd) {
            adopt_pristine_connected(fd);
        }
        return None;
    }
    let sock = plain(fd)?;
    let d = sock.datagram()?;
    match to() {
        Some(t) if emulated(t) && !unheld(t) => return None,
        None if d.recheck_due() && adopt_connected(fd, d) => return None,
        _ => {}
    }
    d.kernel_is_bound();
    Some(Kernel(sock))
}

/// Where a sendmsg with cmsgs on an emulated UDP socket goes (decision
/// 61).
pub(crate) enum CmsgRoute {
    /// Sent through shared memory, its cmsgs honoured there: IP_PKTINFO or
    /// IPV6_PKTINFO naming no source, the one a send from the socket
    /// carries, or (a wildcard-bound socket: dnsmasq's answers) another
    /// loopback address; IP_TTL, IP_TOS, IPV6_HOPLIMIT, IPV6_TCLASS with
    /// valid values, not carried (the receiver sees loopback's defaults).
    Done(Action<ssize_t>),
    /// As the application made it, on the kernel socket (a source address
    /// shared memory cannot prove, cmsgs nothing here makes: UDP_SEGMENT,
    /// IP_RETOPTS, ...): the kernel's route, its errors.
    Kernel(Kernel),
}

/// A sendmsg whose msghdr has a control buffer, on a socket of ours that
/// is emulated (None: not one, or no cmsg: the usual paths).
pub(crate) fn sendmsg_cmsgs(fd: c_int, msg: InMsg<'_>) -> Option<CmsgRoute> {
    if !carried() {
        return None;
    }
    let fail = |e| Some(CmsgRoute::Done(Action::Fail(e)));
    let sock = match ours(fd).filter(|s| s.datagram().is_some_and(Datagram::emulated)) {
        Some(s) => s,
        // (`kernel_send` took one that stays the kernel's.)
        None => match emulated_by_send(fd, msg)? {
            Ok(s) => s,
            Err(e) => return fail(e.raw_os_error()),
        },
    };
    let d = sock.datagram()?;
    let cmsgs = match msg.cmsgs() {
        Ok(c) if c.is_empty() => return None,
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let to = match destination(msg.name(), true) {
        Ok(to) => to,
        Err(e) => return fail(e.raw_os_error()),
    };
    let dest = to.or_else(|| d.peer());
    let claimed = dest.map(|t| unmapped(d.source_for(t)).ip());
    let wildcard = d.local().ip().is_unspecified();
    // The levels the kernel reads: IPv4's on an AF_INET socket (SOL_IPV6
    // ignored), IPv4's and a mapped IPV6_PKTINFO to an IPv4 destination
    // of an AF_INET6 one (ip_cmsg_send), IPv6's to an IPv6 one
    // (ip6_datagram_send_ctl, SOL_IP ignored).
    let family = match (d.is_v6(), dest.map(|t| unmapped(t).is_ipv4())) {
        (false, _) => Family::V4,
        (true, Some(false)) => Family::V6,
        (true, _) => Family::Mapped,
    };
    let mut source = None;
    let mut shm = true;
    let mut foreign_if = None;
    let mut gso = None;
    for (level, kind, data) in &cmsgs {
        match cmsg_sendable(family, *level, *kind, data, &mut source) {
            Sendable::Ok => {}
            Sendable::Segment(size) => gso = Some(size),
            Sendable::Ignored => {}
            Sendable::Invalid => return fail(libc::EINVAL),
            Sendable::OtherInterface(i) => {
                foreign_if = Some(i);
                shm = false;
            }
            Sendable::Kernel => shm = false, // not one of ours: the kernel's
        }
    }
    // The source: none asked, the one a send carries, or another loopback
    // address of the destination's family from a wildcard-bound socket.
    let source = source.filter(|ip| Some(*ip) != claimed);
    shm &= source.is_none_or(|ip| {
        wildcard && is_loopback(ip) && dest.is_some_and(|t| unmapped(t).is_ipv4() == ip.is_ipv4())
    });
    if !shm {
        return Some(match d.kernel_bound() {
            true => CmsgRoute::Kernel(Kernel(sock.clone())),
            // (Another interface's index to a loopback destination: the
            // kernel finds no route through it, or no such interface.)
            false => CmsgRoute::Done(Action::Fail(match foreign_if {
                Some(i) if interface_exists(d.kernel(), i) => libc::ENETUNREACH,
                Some(_) => libc::ENODEV,
                None => libc::EINVAL,
            })),
        });
    }
    let Some(iov) = msg.iovecs() else {
        return fail(libc::EFAULT);
    };
    Some(CmsgRoute::Done(match iov.slices() {
        Ok(b) => match d.send_from(to, b, source, &sys::cmsg_bytes(&cmsgs), gso) {
            Ok(n) => Action::Done(n as ssize_t),
            Err(e) => Action::Fail(e.raw_os_error()),
        },
        Err(e) => Action::Fail(e),
    }))
}

/// The socket a sendmsg with cmsgs emulates (its first send to a
/// partition address, or in the default mode a pristine socket's to a
/// name held): made so now, so that its cmsgs (UDP_SEGMENT's above all)
/// are read as an emulated socket's. None: it does not become one.
fn emulated_by_send(fd: c_int, msg: InMsg<'_>) -> Option<Result<Arc<Socket>, Errno>> {
    let owned = fdtable::is_owned(fd);
    let pristine = !owned && default_mode() && pristine::is_pristine(fd);
    if !(owned || pristine) || !msg.cmsgs().is_ok_and(|c| !c.is_empty()) {
        return None;
    }
    let to = destination(msg.name(), true).ok()??;
    match sender(fd, Some(to))? {
        Ok(s) if s.datagram().is_some_and(Datagram::emulated) => Some(Ok(s)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Which cmsg levels a send reads (`sendmsg_cmsgs`).
#[derive(Clone, Copy, PartialEq)]
enum Family {
    /// An AF_INET socket: SOL_IP.
    V4,
    /// An AF_INET6 socket to an IPv4 (mapped) destination: SOL_IP and a
    /// mapped IPV6_PKTINFO.
    Mapped,
    /// An AF_INET6 socket to an IPv6 destination: SOL_IPV6.
    V6,
}

/// What a send makes of one cmsg (`cmsg_sendable`).
enum Sendable {
    /// Shared memory honours it.
    Ok,
    /// The kernel ignores it (another family's level, one it skips).
    Ignored,
    /// EINVAL, as the kernel's checks.
    Invalid,
    /// A PKTINFO naming another interface than loopback (its index).
    OtherInterface(u32),
    /// UDP_SEGMENT: the send is cut into datagrams of this size
    /// (decision 80).
    Segment(u16),
    /// Only the kernel makes it (IP_RETOPTS, SCM_TXTIME, ...).
    Kernel,
}

/// One cmsg of a sendmsg on an emulated socket, checked as the kernel's
/// ip_cmsg_send or ip6_datagram_send_ctl checks it for `family`; a
/// PKTINFO's source (unspecified: none) into `source`.
fn cmsg_sendable(
    family: Family,
    level: c_int,
    kind: c_int,
    data: &[u8],
    source: &mut Option<std::net::IpAddr>,
) -> Sendable {
    let u32_at = |o: usize| u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
    let int = || (data.len() == 4).then(|| u32_at(0) as i32);
    let valid = |ok: bool| if ok { Sendable::Ok } else { Sendable::Invalid };
    let lo = lo_index();
    let v4_level = family != Family::V6;
    match (level, kind) {
        (libc::SOL_SOCKET, _) => Sendable::Kernel,
        (libc::IPPROTO_IP, _) if !v4_level => Sendable::Ignored,
        (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
            if data.len() != 12 {
                return Sendable::Invalid; // cmsg_len CMSG_LEN(in_pktinfo) exactly
            }
            if u32_at(0) != 0 && u32_at(0) != lo {
                return Sendable::OtherInterface(u32_at(0));
            }
            // (On send only ipi_spec_dst counts, as the kernel's.)
            let spec = std::net::Ipv4Addr::new(data[4], data[5], data[6], data[7]);
            *source = (!spec.is_unspecified()).then_some(spec.into());
            Sendable::Ok
        }
        (libc::IPPROTO_IP, libc::IP_TTL) => valid(int().is_some_and(|v| (1..=255).contains(&v))),
        (libc::IPPROTO_IP, libc::IP_TOS) => {
            valid(data.len() == 1 || int().is_some_and(|v| (0..=255).contains(&v)))
        }
        (libc::IPPROTO_IP, _) => Sendable::Kernel,
        (libc::IPPROTO_IPV6, _) if family == Family::V4 => Sendable::Ignored,
        (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() < 20 => Sendable::Invalid,
        (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&data[..16]);
            let ip = std::net::Ipv6Addr::from(a);
            if family == Family::Mapped && ip.to_ipv4_mapped().is_none() {
                return Sendable::Invalid; // ip_cmsg_send takes a mapped one only
            }
            if u32_at(16) != 0 && u32_at(16) != lo {
                return Sendable::OtherInterface(u32_at(16));
            }
            let ip = ip
                .to_ipv4_mapped()
                .map_or(ip.into(), std::net::IpAddr::from);
            *source = (!ip.is_unspecified()).then_some(ip);
            Sendable::Ok
        }
        (libc::IPPROTO_IPV6, _) if family == Family::Mapped => Sendable::Ignored,
        (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT | libc::IPV6_TCLASS) => {
            valid(int().is_some_and(|v| (-1..=255).contains(&v)))
        }
        (libc::IPPROTO_IPV6, _) => Sendable::Kernel,
        // (udp_cmsg_send: UDP_SEGMENT of a u16, any other SOL_UDP EINVAL.)
        (libc::IPPROTO_UDP, _) => match segment::from_cmsg(kind, data) {
            Ok(size) => Sendable::Segment(size),
            Err(_) => Sendable::Invalid,
        },
        _ => Sendable::Ignored, // other levels: neither reads them
    }
}

/// Whether a network interface of `sock`'s namespace has the index `i`.
fn interface_exists(sock: BorrowedFd<'_>, i: u32) -> bool {
    rustix::net::netdevice::index_to_name_inlined(sock, i).is_ok()
}

/// The loopback interface's index (`ancillary`'s).
fn lo_index() -> u32 {
    crate::sockets::datagram::ancillary::lo_index()
}

/// How long a socket connected through the kernel to a destination
/// remembered as held by nobody stays so before a send asks again (the
/// longest a destination is remembered, `unheld`).
const RECHECK_MS: u64 = 1000;

/// A socket connected through the kernel while its peer was remembered as
/// held by nobody (`connect`), at a send after `RECHECK_MS`: made ours as
/// a connect would now make it (true), else asked again later. Without
/// it, a client that connects once (statsd, syslog) or reconnects while
/// its server restarts stayed the kernel's for life.
fn adopt_connected(fd: c_int, d: &Datagram) -> bool {
    let Some(peer) = d.peer() else { return false };
    match adopt_for(fd, peer, true) {
        Some(Ok(s)) => {
            if let Some(n) = s.datagram() {
                n.connect(Some(peer));
            }
            true
        }
        Some(Err(_)) => false,
        None => {
            if unheld(peer) {
                d.recheck_after(RECHECK_MS);
            }
            false
        }
    }
}

/// `adopt_connected` for a pristine socket (decision 64): its peer, asked
/// of the kernel, is a connect's again; asked later if nobody holds it
/// still. The send that follows finds it ours, or the kernel's.
fn adopt_pristine_connected(fd: c_int) {
    let peer = rustix::net::getpeername(sys::borrow_fd(fd))
        .ok()
        .flatten()
        .and_then(|a| SocketAddr::try_from(a).ok());
    let Some(peer) = peer else { return };
    match adopt_for(fd, peer, true) {
        Some(Ok(s)) => {
            if let Some(n) = s.datagram() {
                n.connect(Some(peer));
            }
        }
        Some(Err(_)) => {}
        None => recheck_pristine(fd, peer),
    }
}

/// A pristine socket connected through the kernel to `peer`, a
/// destination of ours nobody holds: asked again at a send after
/// `RECHECK_MS` (decision 63's recheck, kept by `pristine`).
fn recheck_pristine(fd: c_int, peer: SocketAddr) {
    if default_mode() && pristine::is_pristine(fd) && emulated(peer) && unheld(peer) {
        let now = crate::transport::parking::monotonic_ms();
        pristine::recheck_at(fd, now + RECHECK_MS);
    }
}

/// A recvmsg on `fd` that is its kernel socket's, with the kernel's
/// ancillary data (IP_RECVERR's, IP_PKTINFO's, ...) or error queue
/// (MSG_ERRQUEUE): one of ours not emulated whose kernel socket asks for
/// them. It stays behind its instance (review c15: giving the kernel
/// socket the fd number swapped the file an epoll set held). The flags to
/// pass: MSG_DONTWAIT added for an O_NONBLOCK fd; a blocking fd's waits
/// in the kernel socket, made blocking for it.
pub(crate) fn kernel_recv(fd: c_int, msg: &OutMsg<'_>, flags: c_int) -> Option<(Kernel, c_int)> {
    if !carried() || !fdtable::is_owned(fd) {
        return None;
    }
    let sock = plain(fd)?;
    let errqueue = flags & libc::MSG_ERRQUEUE != 0;
    let d = sock.datagram()?;
    if !(errqueue || msg.wants_control() && d.asks_cmsgs()) {
        return None;
    }
    let nonblocking = flags & libc::MSG_DONTWAIT != 0 || d.nonblocking(fd);
    if !nonblocking {
        sys::set_nonblock(d.kernel(), false);
    }
    let flags = if nonblocking {
        flags | libc::MSG_DONTWAIT
    } else {
        flags
    };
    Some((Kernel(sock), flags))
}

/// fstat on `fd`, a UDP socket of ours: its kernel socket's answer (a
/// socket, as the program made it; its fd is an epoll instance, which
/// `S_ISSOCK` checks took for no socket: node's `uv_guess_handle`, which
/// node v20 reaches through glibc's old `__fxstat64`, hooked too).
pub(crate) fn stat_target(fd: c_int) -> Option<Kernel> {
    if !carried() || !fdtable::is_owned(fd) {
        return None;
    }
    ours(fd).map(Kernel)
}

/// Whether this process holds a UDP socket of ours (`SHMNET_UDP=1` and
/// one alive): one load, so a sendmsg passing fds in a process with none
/// (AF_UNIX fd passing) goes straight to the kernel.
pub(crate) fn carries() -> bool {
    carried() && crate::sockets::datagram::any_live()
}

/// UDP sockets of ours among the fds a sendmsg passes (SCM_RIGHTS), each
/// with its kernel socket, which goes in its place: the receiving process
/// gets a UDP socket (its fd would be an empty epoll instance there). One
/// emulated in the default mode goes back to the kernel first, as before
/// an exec (decisions 49, 56): nothing is drained into this process's
/// leftovers, which the receiver cannot read (they were lost); each
/// sender sends what it left in its ring through the kernel, at its next
/// send (not at once: known); one
/// emulated in the emulated mode (no kernel port behind its name) is
/// passed as before. None: no such socket.
pub(crate) fn passed(fds: &[c_int]) -> Option<Vec<(c_int, Kernel)>> {
    let mut held = Vec::new();
    for &fd in fds {
        if !fdtable::is_owned(fd) {
            continue;
        }
        let Some(sock) = ours(fd) else { continue };
        let Some(d) = sock.datagram() else { continue };
        if d.emulated() && !(default_mode() && d.to_kernel_for_exec()) {
            continue;
        }
        held.push((fd, Kernel(sock)));
    }
    (!held.is_empty()).then_some(held)
}

/// Linux's F_SETSIG and F_GETSIG (not in the libc crate).
const F_SETSIG: c_int = 10;
const F_GETSIG: c_int = 11;

/// fcntl's signal-driven I/O on a UDP socket of ours (review c4): its fd
/// is an epoll instance, which has no O_ASYNC of its own, so F_SETOWN,
/// F_GETOWN, F_SETSIG and F_GETSIG are its kernel socket's, F_SETFL sets
/// O_ASYNC there too (the rest on the application's fd), and F_GETFL
/// reports it back. SIGIO comes for what the kernel socket receives: all
/// of a socket not emulated, only the kernel route's datagrams of an
/// emulated one. None: not one of ours, or another command.
pub(crate) fn fcntl_async(fd: c_int, cmd: c_int, arg: c_int) -> Option<Action<c_int>> {
    let kernel_cmd = matches!(cmd, libc::F_SETOWN | libc::F_GETOWN | F_SETSIG | F_GETSIG);
    if !(kernel_cmd || cmd == libc::F_SETFL || cmd == libc::F_GETFL)
        || !carried()
        || !fdtable::is_owned(fd)
    {
        return None;
    }
    let sock = ours(fd)?;
    let d = sock.datagram()?;
    let raw = |r: c_int| {
        if r < 0 {
            Action::Fail(-r)
        } else {
            Action::Done(r)
        }
    };
    if kernel_cmd {
        return Some(raw(sys::fcntl_int(d.kernel(), cmd, arg)));
    }
    let app = sys::borrow_fd(fd);
    if cmd == libc::F_GETFL {
        let fl = sys::fcntl_int(app, libc::F_GETFL, 0);
        let kfl = sys::fcntl_int(d.kernel(), libc::F_GETFL, 0);
        return Some(raw(if fl >= 0 && kfl >= 0 {
            fl | (kfl & libc::O_ASYNC)
        } else {
            fl
        }));
    }
    d.forget_nonblocking();
    let r = sys::fcntl_int(app, libc::F_SETFL, arg & !libc::O_ASYNC);
    if r < 0 {
        return Some(raw(r));
    }
    let kfl = sys::fcntl_int(d.kernel(), libc::F_GETFL, 0);
    if kfl >= 0 && (kfl ^ arg) & libc::O_ASYNC != 0 {
        let want = (kfl & !libc::O_ASYNC) | (arg & libc::O_ASYNC);
        let k = sys::fcntl_int(d.kernel(), libc::F_SETFL, want);
        if k < 0 {
            return Some(raw(k));
        }
    }
    Some(raw(r))
}

/// At exit: each UDP socket's datagram tally goes to the counters
/// (`udp_*`, docs/counters.md), and its senders stop sending to it.
pub(crate) fn at_exit() {
    if carried() {
        registry::try_for_each_socket(|s| {
            if let Some(d) = s.datagram() {
                d.at_exit();
            }
        });
    }
}

/// Whether `fd` is a datagram socket of ours: poll, select and epoll
/// report it writable always (its fd, an epoll instance, never is).
pub(crate) fn is_datagram(fd: c_int) -> bool {
    if !fdtable::is_owned(fd) {
        return false;
    }
    // Without a reference first (poll asks this of every POLLOUT entry).
    registry::with(fd, |s| s.datagram().is_some()).unwrap_or_else(|| ours(fd).is_some())
}

/// A UDP socket made by the application, with UDP carried. In the
/// default mode it stays the kernel's own file, marked pristine
/// (`pristine`, decision 64): converted at its first bind, connect or
/// send the library carries, unless something captured its file first.
/// In the emulated mode it is ours from now on (review H-A): its kernel
/// socket moves up to the library's fds, and an epoll instance holding it
/// takes its number, with its flags (`ty`'s SOCK_NONBLOCK and
/// SOCK_CLOEXEC), before the application sees the number. Left the
/// kernel's if that fails.
pub(crate) fn socket_made(fd: c_int, domain: c_int, ty: c_int, protocol: c_int) {
    if fd < 0
        || ty & 0xf != libc::SOCK_DGRAM
        || !(domain == libc::AF_INET || domain == libc::AF_INET6)
        || !(protocol == 0 || protocol == libc::IPPROTO_UDP)
        || !carried()
        || crate::platform::sandbox::active()
    {
        return;
    }
    if default_mode() {
        pristine::made(fd);
        return;
    }
    let app = sys::borrow_fd(fd);
    let made = (|| {
        let kernel = crate::platform::internal_fd::InternalFd::dup(app)?.into_owned();
        let nonblock = ty & libc::SOCK_NONBLOCK != 0;
        let v6 = domain == libc::AF_INET6;
        let d = Datagram::shell(kernel, v6, false, Some(nonblock), Default::default())?;
        if ty & libc::SOCK_NONBLOCK != 0 {
            rustix::fs::fcntl_setfl(d.instance(), rustix::fs::OFlags::NONBLOCK)?;
        }
        sys::dup_onto(d.instance(), fd, ty & libc::SOCK_CLOEXEC != 0)?;
        Ok::<_, Errno>(d)
    })();
    let d = match made {
        Ok(d) => d,
        Err(e) => {
            log!(debug, "fd {fd}: UDP socket left the kernel's: {e}");
            return;
        }
    };
    if registry::insert(fd, Arc::new(Socket::Datagram(d))).is_err() {
        log!(warn, "fd {fd}: a UDP socket not registered");
    }
}

/// A fork is about to share every socket (the prepare handler): in the
/// default mode each emulated UDP socket goes back to the kernel first
/// (`Datagram::to_kernel`, decision 49), so that parent and child, and
/// an image either of them execs, receive from one kernel queue, as the
/// kernel's UDP does. (The emulated mode has no kernel port behind its
/// names: its sockets stay with the process that received, as before.)
/// A vfork's child (python's subprocess) execs or exits at once: only
/// sockets with an fd that goes across exec go back to the kernel.
pub(crate) fn before_fork(vfork: bool) {
    if !carried() {
        return;
    }
    let mut socks = Vec::new();
    if vfork {
        let limit = crate::platform::internal_fd::nofile_limit()
            .map_or(fdtable::CAPACITY as u64, |n| {
                n.min(fdtable::CAPACITY as u64)
            });
        for fd in 0..limit as c_int {
            if !fdtable::is_owned(fd) || fdtable::is_internal(fd) {
                continue;
            }
            let Some(sock) = ours(fd).filter(|s| s.datagram().is_some_and(|d| d.emulated())) else {
                continue;
            };
            let inherited = rustix::io::fcntl_getfd(sys::borrow_fd(fd))
                .is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC));
            if inherited {
                socks.push(sock);
            }
        }
    } else {
        registry::for_each_socket(|s| {
            if s.datagram().is_some_and(|d| d.emulated()) {
                socks.push(s.clone());
            }
        });
    }
    for s in &socks {
        if let Some(d) = s.datagram() {
            if !(default_mode() && d.to_kernel()) {
                d.share_queued();
            }
        }
    }
}

/// The UDP sockets whose kernel socket `before_exec` put on their fd
/// number, for `exec_failed` to undo.
static ACROSS_EXEC: crate::platform::lock::Mutex<Vec<(c_int, Arc<Socket>)>> =
    crate::platform::lock::Mutex::new(Vec::new());

/// The exec family is about to replace this image: each UDP socket of
/// ours whose fd goes across exec (not close-on-exec) is its kernel socket
/// again on that number, which the next image finds as the UDP socket it
/// was (the instance would come empty: its members are the library's,
/// close-on-exec). What shared memory queued for it stays behind. Undone
/// if the exec fails (`exec_failed`). (posix_spawn, system and popen exec
/// past us: their children get the instance.)
pub(crate) fn before_exec() {
    if !carried() {
        return;
    }
    let limit = crate::platform::internal_fd::nofile_limit()
        .map_or(fdtable::CAPACITY as u64, |n| {
            n.min(fdtable::CAPACITY as u64)
        });
    let mut across = ACROSS_EXEC.lock();
    for fd in 0..limit as c_int {
        if !fdtable::is_owned(fd) || fdtable::is_internal(fd) {
            continue;
        }
        let Some(sock) = ours(fd) else {
            continue;
        };
        let Some(d) = sock.datagram() else {
            continue;
        };
        let app = sys::borrow_fd(fd);
        let inherited =
            rustix::io::fcntl_getfd(app).is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC));
        if !inherited {
            continue;
        }
        let nonblock =
            rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
        // The default mode: the socket goes back to the kernel first, so
        // that its senders send what they left in its rings through the
        // kernel socket the next image receives on (decision 56; they
        // had been lost: execrx.py 4 - 8 of 1,800). For good, as at a
        // fork: a failed exec leaves a kernel socket.
        if default_mode() && d.emulated() {
            d.to_kernel_for_exec();
        }
        if sys::dup_onto(d.kernel(), fd, false).is_err() {
            continue;
        }
        // The application's mode (review c11: a socket made with
        // SOCK_NONBLOCK, then made blocking, is blocking in the next
        // image); the library's own calls on it never wait (MSG_DONTWAIT).
        sys::set_nonblock(d.kernel(), nonblock);
        across.push((fd, sock.clone()));
    }
}

/// The exec failed: the instances are back on their fd numbers.
pub(crate) fn exec_failed() {
    for (fd, sock) in ACROSS_EXEC.lock().drain(..) {
        if let Some(d) = sock.datagram() {
            let _ = sys::dup_onto(d.instance(), fd, false);
        }
    }
}

/// In the default mode, a socket not ours is converted only if it is
/// pristine (decision 64): Ok(Some(claim)) while this thread converts it,
/// Err when it is the kernel's for good or another thread made it ours
/// meanwhile (the caller looks again). Ok(None): ours already, or the
/// emulated mode (which takes any kernel UDP socket over).
fn claim_pristine(fd: c_int) -> Result<Option<pristine::Claim>, ()> {
    if fdtable::is_owned(fd) || !default_mode() {
        return Ok(None);
    }
    // The program's fds come first (sweep37 D2): while ours crowd them, a
    // socket stays the kernel's (pristine still, for a later call). Asked
    // of pristine sockets only (any other number, -1 included, is not
    // looked at: a TCP socket's bind pays nothing).
    if pristine::is_pristine(fd) && crate::platform::internal_fd::crowded_next(sys::borrow_fd(fd)) {
        return Err(());
    }
    match pristine::claim(fd) {
        Claimed::Mine(c) => Ok(Some(c)),
        Claimed::Ours | Claimed::Kernel => Err(()),
    }
}

/// Our datagram socket behind `fd` that is not emulated yet.
fn plain(fd: c_int) -> Option<Arc<Socket>> {
    ours(fd).filter(|s| s.datagram().is_some_and(|d| !d.emulated()))
}

/// Turns the application's UDP socket `fd` into an emulated one, bound to
/// `local` (port 0: ephemeral, never `avoid`): one of ours is named in
/// place; a kernel socket's fd number becomes a new Inbox.
fn adopt(fd: c_int, local: SocketAddr, avoid: Option<u16>) -> Result<Arc<Socket>, Errno> {
    if let Some(sock) = plain(fd) {
        let d = sock.datagram().ok_or(Errno::INVAL)?;
        match d.name(local, avoid) {
            Err(Errno::ADDRINUSE) if avoid.is_none() => {
                let holder = holder_of(d.kernel(), local)?;
                d.name_shared(local, holder.datagram().ok_or(Errno::ADDRINUSE)?)?;
                NAME_SHARED.store(true, core::sync::atomic::Ordering::Relaxed);
                share_as_kernel(local);
            }
            r => r?,
        }
        log!(debug, "fd {fd}: UDP bound to {} (emulated)", d.local());
        return Ok(sock);
    }
    let app = sys::borrow_fd(fd);
    // (Up out of the application's range, as `socket_made`'s.)
    let kernel = crate::platform::internal_fd::InternalFd::dup(app)?.into_owned();
    let mut shared = false;
    let d = match Datagram::bind(local, kernel, avoid) {
        Err(Errno::ADDRINUSE) if avoid.is_none() => {
            shared = true;
            share(fd, local)?
        }
        r => r?,
    };
    let cloexec = rustix::io::fcntl_getfd(app)?.contains(rustix::io::FdFlags::CLOEXEC);
    let fl = rustix::fs::fcntl_getfl(app)?;
    if fl.contains(rustix::fs::OFlags::NONBLOCK) {
        let inst = d.instance();
        let efl = rustix::fs::fcntl_getfl(inst)?;
        rustix::fs::fcntl_setfl(inst, efl | rustix::fs::OFlags::NONBLOCK)?;
    }
    sys::dup_onto(d.instance(), fd, cloexec)?;
    log!(debug, "fd {fd}: UDP bound to {} (emulated)", d.local());
    let local = d.local();
    let sock = Arc::new(Socket::Datagram(d));
    registry::insert(fd, sock.clone()).map_err(|()| Errno::MFILE)?;
    if shared {
        NAME_SHARED.store(true, core::sync::atomic::Ordering::Relaxed);
        share_as_kernel(local);
    }
    Ok(sock)
}

/// Whether the kernel would let a second UDP socket bind the address `a`
/// holds: both with SO_REUSEADDR, or both with SO_REUSEPORT (one uid).
fn reusable(a: std::os::fd::BorrowedFd<'_>, b: std::os::fd::BorrowedFd<'_>) -> bool {
    use rustix::net::sockopt::{socket_reuseaddr, socket_reuseport};
    let addr = |fd| socket_reuseaddr(fd).unwrap_or(false);
    let port = |fd| socket_reuseport(fd).unwrap_or(false);
    (addr(a) && addr(b)) || (port(a) && port(b))
}

/// bind to `local`, held by another socket: shared, as the kernel shares
/// a UDP port between sockets that both set SO_REUSEADDR or SO_REUSEPORT,
/// when that socket is one of this process (iperf3 -u's server binds its
/// next socket to the port its connected one holds). Senders reach
/// whichever takes their link first. EADDRINUSE otherwise.
fn share(fd: c_int, local: SocketAddr) -> Result<Datagram, Errno> {
    let app = sys::borrow_fd(fd);
    let holder = holder_of(app, local)?;
    let h = holder.datagram().ok_or(Errno::ADDRINUSE)?;
    let kernel = rustix::io::fcntl_dupfd_cloexec(app, 0)?;
    Datagram::bind_shared(local, kernel, h)
}

/// The emulated socket of this process holding `local` that would share
/// it with the kernel socket `app` (`share`); EADDRINUSE when none.
fn holder_of(app: BorrowedFd<'_>, local: SocketAddr) -> Result<Arc<Socket>, Errno> {
    let mut holder = None;
    registry::for_each_socket(|s| {
        if holder.is_none()
            && s.datagram()
                .is_some_and(|d| d.emulated() && unmapped(d.local()) == unmapped(local))
        {
            holder = Some(s.clone());
        }
    });
    let holder = holder.ok_or(Errno::ADDRINUSE)?;
    let h = holder.datagram().ok_or(Errno::ADDRINUSE)?;
    if !reusable(app, h.kernel()) {
        return Err(Errno::ADDRINUSE);
    }
    Ok(holder)
}

/// The local address an unbound socket takes to reach `dest`: `dest`'s
/// own IP, in the partition, so that every socket can answer it (the
/// kernel would pick 127.0.0.1, outside the partition, where only the
/// kernel's sockets are), with an ephemeral port.
fn autobind_addr(dest: SocketAddr) -> SocketAddr {
    SocketAddr::new(dest.ip(), 0)
}

/// Whether the kernel would let the socket bind `target` (review M-a): a
/// socket of the kernel's holding its port, a wildcard one's included
/// (`bind_wildcard` binds the kernel), makes it EADDRINUSE unless both
/// share it (SO_REUSEADDR, SO_REUSEPORT); a probe socket with the
/// application's sharing options asks the kernel. (Emulated holders of
/// `target` itself are the name reservation's to refuse.)
fn kernel_admits(app: BorrowedFd<'_>, target: SocketAddr) -> Result<(), Errno> {
    use rustix::net::sockopt::{socket_reuseaddr, socket_reuseport};
    if target.port() == 0 {
        return Ok(());
    }
    let family = if target.is_ipv6() {
        rustix::net::AddressFamily::INET6
    } else {
        rustix::net::AddressFamily::INET
    };
    let Ok(probe) = rustix::net::socket_with(
        family,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    ) else {
        return Ok(()); // (no fd to ask with: the reservation decides)
    };
    let _ =
        rustix::net::sockopt::set_socket_reuseaddr(&probe, socket_reuseaddr(app).unwrap_or(false));
    let _ =
        rustix::net::sockopt::set_socket_reuseport(&probe, socket_reuseport(app).unwrap_or(false));
    if target.is_ipv6() {
        let only = rustix::net::sockopt::ipv6_v6only(app).unwrap_or(false);
        let _ = rustix::net::sockopt::set_ipv6_v6only(&probe, only);
    }
    match rustix::net::bind(&probe, &target) {
        Err(Errno::ADDRINUSE) => Err(Errno::ADDRINUSE),
        _ => Ok(()),
    }
}

/// A kernel UDP socket, not ours yet, unbound or bound to the wildcard
/// address, about to reach `dest` (connect or send): ours from now on, if
/// `dest` is emulated. A wildcard-bound one keeps its port number (dig,
/// through libuv, binds 0.0.0.0:0 before it connects), or takes an
/// ephemeral one if that name is held; its kernel socket keeps the kernel
/// port, carrying nothing. One bound to a given address stays the kernel's.
fn adopt_for(fd: c_int, dest: SocketAddr, connecting: bool) -> Option<Result<Arc<Socket>, Errno>> {
    if !emulated(dest) || unheld(dest) {
        return None;
    }
    // The default mode converts a pristine socket only, claimed for the
    // conversion (a capture waits for it meanwhile).
    let _claim = match claim_pristine(fd) {
        Ok(c) => c,
        Err(()) => return None,
    };
    // One of ours not emulated yet, or a kernel socket.
    let shell = match fdtable::is_owned(fd) {
        // (One that went back to the kernel stays there: decision 49.)
        true => Some(plain(fd).filter(|s| s.datagram().is_some_and(|d| !d.retired()))?),
        false => None,
    };
    let k = match &shell {
        Some(s) => s.datagram()?.kernel(),
        None => sys::borrow_fd(fd),
    };
    let family = udp_family(k)?;
    if family != sys::family_of(&dest) {
        return None;
    }
    if kernel_asks_ancillary(k, family == libc::AF_INET6) {
        // The kernel's, bound or not (review H-C: a socket `demote` gave
        // back, taken over again at its next send, lost every other
        // query of dnsmasq's): its sends go where the kernel carries them.
        return None;
    }
    if default_mode() {
        return adopt_kernel_first(fd, shell.as_deref(), k, dest, connecting);
    }
    let bound = match &shell {
        Some(s) if !s.datagram()?.kernel_bound() => None,
        _ => sys::local_name(k).filter(|a| a.port() != 0),
    };
    let Some(bound) = bound else {
        return Some(adopt(fd, autobind_addr(dest), Some(dest.port())));
    };
    if !bound.ip().is_unspecified() && !is_loopback(unmapped(bound).ip()) {
        return None; // bound by the kernel to another host's address
    }
    // Its kernel port kept, and its name beside it (review H3): it
    // reaches both, and both reach it.
    Some(match adopt(fd, bound, None) {
        Err(Errno::ADDRINUSE) => adopt(fd, autobind_addr(dest), Some(dest.port())),
        r => r,
    })
}

/// `adopt_for` in the default mode: the kernel socket `k` (of `shell`,
/// one of ours, or the application's) reaches `dest` as the kernel would
/// make it: a connect is the kernel's (its autobind, source address,
/// filter and errors), a send from an unbound socket first takes an
/// ephemeral port on the wildcard address, as the kernel's autobind does;
/// then the socket holds the name of what the kernel gave it. One bound
/// to another host's address, or whose name another process holds
/// (SO_REUSEPORT across processes), stays the kernel's (None).
fn adopt_kernel_first(
    fd: c_int,
    shell: Option<&Socket>,
    k: BorrowedFd<'_>,
    dest: SocketAddr,
    connecting: bool,
) -> Option<Result<Arc<Socket>, Errno>> {
    let d = shell.and_then(Socket::datagram);
    let bound = match d {
        Some(d) => d.kernel_bound(),
        None => sys::local_name(k).is_some_and(|a| a.port() != 0),
    };
    if connecting {
        let done = match d {
            Some(d) => d.connect_kernel(Some(dest)),
            None => rustix::net::connect(k, &dest),
        };
        if let Err(e) = done {
            return Some(Err(e));
        }
    } else if !bound {
        let any: std::net::IpAddr = match udp_family(k) {
            Some(libc::AF_INET6) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
        };
        if let Err(e) = rustix::net::bind(k, &SocketAddr::new(any, 0)) {
            // EINVAL: another holder of the kernel socket (a fork, an
            // SCM_RIGHTS receiver) bound it meanwhile; it is bound.
            if !(e == Errno::INVAL && sys::local_name(k).is_some_and(|a| a.port() != 0)) {
                return Some(Err(e));
            }
        }
        if let Some(d) = d {
            d.kernel_is_bound();
        }
    }
    let local = sys::local_name(k).filter(|a| a.port() != 0)?;
    if !local.ip().is_unspecified() && !is_loopback(unmapped(local).ip()) {
        return None; // bound by the kernel to another host's address
    }
    match adopt(fd, local, None) {
        Ok(s) => Some(Ok(s)),
        Err(e) => {
            log!(debug, "fd {fd}: UDP {local} stays the kernel's: {e}");
            shared_elsewhere(fd, local, e);
            None
        }
    }
}

/// bind to the wildcard address (0.0.0.0 or ::, review H1): the kernel
/// binds it, as it would (so kernel senders and other hosts reach it,
/// and its port is the kernel's), and the socket becomes ours, holding
/// the name `<wildcard>:<port>` that emulated senders try after their
/// destination's own (`routes::names`). Received datagrams come from
/// both; sends go where a receiver is. In the default mode every bind of
/// ours goes this way, to a given loopback address too (decision 46).
fn bind_wildcard(fd: c_int, app: BorrowedFd<'_>, target: SocketAddr) -> Option<Action<c_int>> {
    if !carried() || crate::platform::sandbox::active() {
        return None;
    }
    if udp_family(app)? != sys::family_of(&target) {
        return None;
    }
    if !default_mode() && port_held_here(app, target) {
        return Some(fail(Errno::ADDRINUSE)); // (review M-a)
    }
    if let Err(e) = rustix::net::bind(app, &target) {
        return Some(fail(e));
    }
    if let Some(d) = ours(fd).as_deref().and_then(Socket::datagram) {
        d.kernel_is_bound();
    }
    if kernel_asks_ancillary(app, target.is_ipv6()) {
        return Some(Action::Done(0)); // the kernel's (see `asks_ancillary`)
    }
    if let Some(local) = sys::local_name(app) {
        if let Err(e) = adopt(fd, local, None) {
            // (Another process holds the name: SO_REUSEPORT across
            // processes, review M5.) Kernel UDP then, as before.
            log!(debug, "fd {fd}: UDP {local} stays the kernel's: {e}");
            shared_elsewhere(fd, local, e);
        }
    }
    Some(Action::Done(0))
}

/// The kernel bound `fd` to `local` but its name is held (EADDRINUSE):
/// by another process, the kernel having let both share the port. In the
/// default mode the socket marks the sharing, so senders go through the
/// kernel (decision 50).
fn shared_elsewhere(fd: c_int, local: SocketAddr, e: Errno) {
    if e == Errno::ADDRINUSE && default_mode() {
        // (A pristine one, claimed by the caller, gets its shell now:
        // the mark is the shell's.)
        let sock = ours(fd).or_else(|| shell_in_place(fd).ok());
        if let Some(d) = sock.as_deref().and_then(Socket::datagram) {
            d.mark_shared(local);
        }
    }
}

/// The kernel UDP socket `fd`, pristine and claimed (decision 64), made
/// ours not emulated, as `socket_made` makes one in the emulated mode.
fn shell_in_place(fd: c_int) -> Result<Arc<Socket>, Errno> {
    let app = sys::borrow_fd(fd);
    let cloexec = rustix::io::fcntl_getfd(app)?.contains(rustix::io::FdFlags::CLOEXEC);
    let nonblock = rustix::fs::fcntl_getfl(app)?.contains(rustix::fs::OFlags::NONBLOCK);
    let kernel = crate::platform::internal_fd::InternalFd::dup(app)?.into_owned();
    let d = Datagram::existing(kernel)?;
    if nonblock {
        rustix::fs::fcntl_setfl(d.instance(), rustix::fs::OFlags::NONBLOCK)?;
    }
    sys::dup_onto(d.instance(), fd, cloexec)?;
    let sock = Arc::new(Socket::Datagram(d));
    registry::insert(fd, sock.clone()).map_err(|()| Errno::MFILE)?;
    Ok(sock)
}

/// Whether an emulated socket of this process holds `wildcard`'s port on
/// a given address the kernel does not know of (its kernel socket
/// unbound) and would not share with `app`: the kernel refuses a wildcard
/// bind there (review M-a; other processes' are not seen).
fn port_held_here(app: std::os::fd::BorrowedFd<'_>, wildcard: SocketAddr) -> bool {
    if wildcard.port() == 0 {
        return false;
    }
    let v6_only = wildcard.is_ipv6() && rustix::net::sockopt::ipv6_v6only(app).unwrap_or(false);
    let mut held = false;
    registry::for_each_socket(|s| {
        if let Some(d) = s.datagram().filter(|d| d.emulated()) {
            let local = unmapped(d.local());
            held |= local.port() == wildcard.port()
                && !local.ip().is_unspecified()
                && (if wildcard.is_ipv6() {
                    !v6_only || local.is_ipv6()
                } else {
                    local.is_ipv4()
                })
                && !reusable(app, d.kernel());
        }
    });
    held
}

pub(crate) fn bind(fd: c_int, addr: AddrIn<'_>) -> Option<Action<c_int>> {
    let Some(s) = registry::get(fd) else {
        let Ok(_claim) = claim_pristine(fd) else {
            // (Another thread converted it meanwhile: ours now.)
            return ours(fd).and_then(|_| bind(fd, addr));
        };
        return bind_with(fd, sys::borrow_fd(fd), addr);
    };
    let d = s.datagram()?;
    if d.emulated() {
        return Some(fail(Errno::INVAL)); // bound already
    }
    // Ours, not emulated: what the kernel socket would do, unless the
    // address makes it emulated.
    if !d.kernel_bound() {
        if let Some(done) = bind_with(fd, d.kernel(), addr) {
            return Some(done);
        }
    }
    let Some(target) = addr.get() else {
        return Some(fail(Errno::INVAL));
    };
    Some(match rustix::net::bind(d.kernel(), &target) {
        Ok(()) => {
            d.kernel_is_bound();
            Action::Done(0)
        }
        Err(e) => fail(e),
    })
}

/// bind of the UDP socket `fd` (its kernel socket `app`) to an address
/// it is emulated at; None: the kernel's bind.
fn bind_with(fd: c_int, app: BorrowedFd<'_>, addr: AddrIn<'_>) -> Option<Action<c_int>> {
    let target = addr.get()?;
    if target.ip().is_unspecified() || (default_mode() && emulated(target)) {
        // (The default mode binds every address of ours as the wildcard:
        // the kernel first, then the name.)
        return bind_wildcard(fd, app, target);
    }
    let target = Some(target).filter(|t| emulated(*t))?;
    if udp_family(app)? != sys::family_of(&target) {
        return None;
    }
    if !crate::transport::lookup::may_bind(target.port()) {
        return Some(fail(Errno::ACCESS));
    }
    if kernel_asks_ancillary(app, target.is_ipv6()) {
        return None; // the kernel's (review H-C), as `bind_wildcard` keeps it
    }
    if let Err(e) = kernel_admits(app, target) {
        return Some(fail(e));
    }
    Some(match adopt(fd, target, None) {
        Ok(_) => Action::Done(0),
        Err(e) => fail(e),
    })
}

pub(crate) fn connect(fd: c_int, addr: AddrIn<'_>) -> Option<Action<c_int>> {
    let sock = match ours(fd) {
        Some(s) if s.datagram()?.emulated() => s,
        Some(s) => match addr.get().and_then(|t| adopt_for(fd, t, true)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Some(fail(e)),
            // Not emulated, nor becoming so: the kernel socket's connect.
            None => {
                let peer = match addr.get() {
                    Some(t) => Some(t),
                    None if addr.family() == Some(libc::AF_UNSPEC) => None,
                    None => return Some(fail(Errno::INVAL)),
                };
                let d = s.datagram()?;
                return Some(match d.connect_kernel(peer) {
                    Ok(()) => {
                        if peer.is_some_and(|t| emulated(t) && unheld(t)) {
                            d.recheck_after(RECHECK_MS);
                        }
                        Action::Done(0)
                    }
                    Err(e) => fail(e),
                });
            }
        },
        None => {
            // The default mode converts a pristine socket only (decision
            // 64), whose address is read as a send's (a plain copy): the
            // kernel's connect of one it leaves costs nothing more.
            let pristine = default_mode() && pristine::is_pristine(fd);
            if default_mode() && !pristine {
                return None;
            }
            let target = if pristine { addr.dest() } else { addr.get() };
            let Some(t) = target else {
                return pristine.then_some(Action::Pass);
            };
            match adopt_for(fd, t, true) {
                Some(Ok(s)) => s,
                Some(Err(e)) => return Some(fail(e)),
                // (Another thread converted it meanwhile: ours now. Not
                // a stream socket of ours: `ours` says datagram.)
                None if ours(fd).is_some() => return connect(fd, addr),
                None => {
                    // The kernel's connect, next; asked again later.
                    recheck_pristine(fd, t);
                    return pristine.then_some(Action::Pass);
                }
            }
        }
    };
    let d = sock.datagram()?;
    if addr.family() == Some(libc::AF_UNSPEC) {
        d.connect(None);
        share_as_kernel(d.local());
        return Some(Action::Done(0));
    }
    Some(match addr.get() {
        Some(t) => {
            d.connect(Some(t));
            share_as_kernel(d.local());
            Action::Done(0)
        }
        None => fail(Errno::INVAL),
    })
}

/// Whether a bind of this process ever shared a name (`share`): before
/// that, `share_as_kernel` has nothing to look for.
static NAME_SHARED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The sockets of this process sharing `local`'s name (`share`): a
/// connected one takes no new links while an unconnected one shares it
/// (`Datagram::set_deaf`), as the kernel gives a connected socket its
/// peer's datagrams only and other senders' to the unconnected one.
/// Asked again at each bind, connect and close of a socket there.
///
/// The default mode only: in the emulated mode a connected socket whose
/// peer had not dialled yet then heard nothing of it (review
/// rv-uaccept39 D1, D2: its peer's link went to the unconnected one, or
/// nowhere after a dup2 over it). And only in a process that ever shared
/// a name: the walk is over every socket (review D3: a connect at 3,000
/// sockets 1.0 -> 12.2 us).
pub(crate) fn share_as_kernel(local: SocketAddr) {
    if !default_mode() || !NAME_SHARED.load(core::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut sharing: Vec<Arc<Socket>> = Vec::new();
    registry::for_each_socket(|s| {
        if s.datagram()
            .is_some_and(|d| d.emulated() && unmapped(d.local()) == unmapped(local))
            && !sharing.iter().any(|o| Arc::ptr_eq(o, s))
        {
            sharing.push(s.clone());
        }
    });
    let peers: Vec<bool> = sharing
        .iter()
        .map(|s| s.datagram().is_some_and(|d| d.peer().is_some()))
        .collect();
    let open = peers.iter().any(|c| !c);
    for (s, connected) in sharing.iter().zip(peers) {
        if let Some(d) = s.datagram() {
            d.set_deaf(connected && open);
        }
    }
}

/// The datagram socket a send on `fd` to `dest` goes through: ours, or
/// the application's unbound kernel socket made ours for an emulated
/// destination. None: not a datagram send of ours.
fn sender(fd: c_int, dest: Option<SocketAddr>) -> Option<Result<Arc<Socket>, Errno>> {
    if fdtable::is_owned(fd) {
        let sock = ours(fd)?;
        if let Some(dest) = dest.filter(|_| !sock.datagram().is_some_and(Datagram::emulated)) {
            if let Some(named) = adopt_for(fd, dest, false) {
                return Some(named);
            }
        }
        return Some(Ok(sock));
    }
    match adopt_for(fd, dest?, false) {
        // (Another thread converted it meanwhile: ours now.)
        None if ours(fd).is_some() => sender(fd, dest),
        r => r,
    }
}

fn send_on(sock: &Socket, dest: Option<SocketAddr>, bufs: &[IoSlice<'_>]) -> Action<ssize_t> {
    let Some(d) = sock.datagram() else {
        return fail(Errno::NOTCONN);
    };
    match d.send(dest, bufs) {
        Ok(n) => Action::Done(n as ssize_t),
        Err(e) => fail(e),
    }
}

/// The destination a send names: None for a null one; EINVAL-worthy ones
/// (another family, too short) as the kernel's errors. On a socket of
/// ours (`owned`) the address is read with a plain copy (`AddrIn::dest`:
/// the hot path); on another (a kernel socket that may become ours) it is
/// checked, a bad one left to the kernel's EFAULT.
fn destination(dest: AddrIn<'_>, owned: bool) -> Result<Option<SocketAddr>, Errno> {
    if dest.is_null() {
        return Ok(None);
    }
    match if owned { dest.dest() } else { dest.get() } {
        Some(a) => Ok(Some(a)),
        None if dest.family() == Some(libc::AF_UNSPEC) => Ok(None),
        None => Err(Errno::INVAL),
    }
}

/// sendto and sendmsg's datagram half: None when `fd` is not a datagram
/// socket of ours and does not become one.
pub(crate) fn send<'b>(
    fd: c_int,
    dest: AddrIn<'_>,
    bufs: impl FnOnce() -> Result<Vec<IoSlice<'b>>, c_int>,
) -> Option<Action<ssize_t>> {
    if !carried() || (!fdtable::is_owned(fd) && dest.is_null()) {
        return None; // the pass-through fast path
    }
    let owned = fdtable::is_owned(fd);
    // In the default mode only a pristine socket becomes ours (decision
    // 64); its destination is read as one of ours (a plain copy).
    let pristine = !owned && default_mode() && pristine::is_pristine(fd);
    if !owned && default_mode() && !pristine {
        return None;
    }
    let to = match destination(dest, owned || pristine) {
        Ok(to) => to,
        Err(_) if !owned => return None,
        Err(e) => return Some(fail(e)),
    };
    let sock = match sender(fd, to)? {
        Ok(s) => s,
        Err(e) => return Some(fail(e)),
    };
    Some(match bufs() {
        Ok(b) => send_on(&sock, to, &b),
        Err(e) => Action::Fail(e),
    })
}

/// send/write/writev on a datagram socket of ours (no destination).
pub(crate) fn send_plain(sock: &Socket, bufs: &[IoSlice<'_>]) -> Action<ssize_t> {
    send_on(sock, None, bufs)
}

/// Receives one datagram on `d` with the call's flags.
fn recv_on(
    fd: c_int,
    d: &Datagram,
    flags: c_int,
    bufs: &mut [IoSliceMut<'_>],
) -> Result<Taken, Errno> {
    if flags & libc::MSG_ERRQUEUE != 0 {
        return Err(Errno::AGAIN); // no error queue here
    }
    let nonblocking = flags & libc::MSG_DONTWAIT != 0 || d.nonblocking(fd);
    d.recv(bufs, flags & libc::MSG_PEEK != 0, nonblocking)
}

/// What a receive call returns: the datagram's length with MSG_TRUNC,
/// else the bytes copied.
fn returned(t: &Taken, flags: c_int) -> ssize_t {
    (if flags & libc::MSG_TRUNC != 0 {
        t.got.len
    } else {
        t.got.copied
    }) as ssize_t
}

/// The sender's address in the socket's family (None: no datagram, a
/// shutdown's end).
fn source(d: &Datagram, t: &Taken) -> Option<SocketAddr> {
    t.from.map(|f| as_family(f, d.is_v6()).unwrap_or(f))
}

/// recv/read/readv on a datagram socket of ours.
pub(crate) fn recv_plain(
    fd: c_int,
    sock: &Socket,
    flags: c_int,
    bufs: &mut [IoSliceMut<'_>],
) -> Action<ssize_t> {
    let Some(d) = sock.datagram() else {
        return fail(Errno::NOTCONN);
    };
    match recv_on(fd, d, flags, bufs) {
        Ok(t) => Action::Done(returned(&t, flags)),
        Err(e) => fail(e),
    }
}

/// recvfrom on a datagram socket of ours (None: not one).
pub(crate) fn recvfrom(
    fd: c_int,
    buf: &mut [u8],
    flags: c_int,
    from: AddrOut<'_>,
) -> Option<Action<ssize_t>> {
    let sock = ours(fd)?;
    let d = sock.datagram()?;
    Some(match recv_on(fd, d, flags, &mut [IoSliceMut::new(buf)]) {
        Ok(t) => {
            match source(d, &t) {
                Some(a) => from.put(a),
                None => from.clear(),
            }
            Action::Done(returned(&t, flags))
        }
        Err(e) => fail(e),
    })
}

/// recvmsg on a datagram socket of ours: `msg` back when not one.
pub(crate) fn recvmsg<'a>(
    fd: c_int,
    msg: OutMsg<'a>,
    flags: c_int,
) -> Result<Action<ssize_t>, OutMsg<'a>> {
    let Some(sock) = ours(fd) else {
        return Err(msg);
    };
    if msg.wants_control() && asks_ancillary(&sock) && demote(fd, &sock) {
        return Err(msg); // the kernel's now: its recvmsg, with its cmsgs
    }

    Ok(recvmsg_on(fd, &sock, msg, flags))
}

/// setsockopt succeeded on a datagram socket of ours: the cmsgs it asks
/// are asked again; one that asks ancillary data only the kernel makes
/// (IP_RECVERR, ...: `asks_ancillary`) is the kernel's at once, before a datagram queues in shared memory
/// that its first recvmsg would lose (review H-C).
pub(crate) fn after_option(fd: c_int, sock: &Socket) {
    let Some(d) = sock.datagram() else { return };
    d.forget_cmsgs();
    // (One not emulated keeps its file: `kernel_recv` gives its recvmsg
    // the kernel socket's cmsgs.)
    if d.emulated() && asks_ancillary(sock) {
        demote(fd, sock);
    }
}

/// Whether the socket asked for ancillary data the emulated path does not
/// make (IP_RECVERR's error queue, SO_RXQ_OVFL, UDP_GRO, SO_TIMESTAMPING:
/// `ancillary`); IP_PKTINFO, IPV6_RECVPKTINFO, the TTL, TOS, hop limit,
/// traffic class, original destination and SO_TIMESTAMP(NS) it makes
/// (decision 62; dnsmasq's wildcard sockets ask IP_PKTINFO).
fn asks_ancillary(sock: &Socket) -> bool {
    sock.datagram().is_some_and(Datagram::asks_kernel_only)
}

/// `asks_ancillary` of a kernel UDP socket (`v6`: of family AF_INET6).
fn kernel_asks_ancillary(sock: std::os::fd::BorrowedFd<'_>, v6: bool) -> bool {
    use crate::sockets::datagram::ancillary;
    ancillary::asked(sock, v6) & ancillary::KERNEL_ONLY != 0
}

/// Gives the application its kernel UDP socket back (it holds a port:
/// a wildcard bind's), for a socket that wants ancillary data: the fd
/// number is the kernel socket again, and the emulated side goes (its
/// senders find no name and take the kernel route; what was queued in
/// shared memory is lost). False when the kernel socket holds no port.
fn demote(fd: c_int, sock: &Socket) -> bool {
    let Some(d) = sock.datagram() else {
        return false;
    };
    if d.emulated() && sys::local_name(d.kernel()).is_none_or(|a| a.port() == 0) {
        return false;
    }
    let app = sys::borrow_fd(fd);
    let cloexec =
        rustix::io::fcntl_getfd(app).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    let nonblock =
        rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    let kernel = d.kernel();
    let r = registry::while_replacing(fd, || match sys::dup_onto(kernel, fd, cloexec) {
        Ok(()) => 0,
        Err(e) => -e.raw_os_error(),
    });
    if r != 0 {
        return false;
    }
    sys::set_nonblock(app, nonblock);
    if let Some(h) = fdtable::table().remove(fd) {
        drop(registry::release_fd(fd, h));
    }
    log!(
        debug,
        "fd {fd}: UDP {} is the kernel's again (ancillary data asked)",
        d.local()
    );
    true
}

fn recvmsg_on(fd: c_int, sock: &Socket, msg: OutMsg<'_>, flags: c_int) -> Action<ssize_t> {
    let Some(d) = sock.datagram() else {
        return fail(Errno::NOTCONN);
    };
    let Some((iov, mut tail)) = msg.parts() else {
        return fail(Errno::FAULT);
    };
    let bufs = match iov.slices() {
        Ok(b) => b,
        Err(e) => return Action::Fail(e),
    };
    // (Emulated cmsgs, decision 62: one atomic load when none is asked.)
    let cmsgs = d.asks_cmsgs();
    if cmsgs && tail.wants_control() {
        d.arm_cmsgs();
    }
    let r = recv_on(fd, d, flags, bufs);
    match r {
        Ok(t) => {
            let mut out = if t.got.truncated() {
                libc::MSG_TRUNC
            } else {
                0
            };
            if cmsgs && tail.control_out(|buf| d.fill_cmsgs(&t, buf)) {
                out |= libc::MSG_CTRUNC;
            }
            tail.finish_dgram(source(d, &t), out);
            Action::Done(returned(&t, flags))
        }
        Err(e) => {
            if cmsgs {
                d.fill_cmsgs_none();
            }
            fail(e)
        }
    }
}

/// sendmmsg: each message as a sendmsg (its cmsgs as sendmsg's,
/// `sendmsg_cmsgs`), until one fails (the count sent so far, or that
/// failure if it was the first).
pub(crate) fn sendmmsg(fd: c_int, v: Mmsgs<'_>, flags: c_int) -> Action<c_int> {
    let mut sent = 0usize;
    for i in 0..v.len().min(libc::UIO_MAXIOV as usize) {
        let msg = v.sent(i);
        let r = match msg.has_control().then(|| sendmsg_cmsgs(fd, msg)).flatten() {
            Some(CmsgRoute::Done(r)) => r,
            Some(CmsgRoute::Kernel(k)) => match msg.send_real(k.fd(), flags) {
                n if n >= 0 => Action::Done(n),
                n if sent == 0 => return Action::Raw(n as c_int),
                _ => break,
            },
            None => {
                let Some(iov) = msg.iovecs() else {
                    return fail(Errno::FAULT);
                };
                match send(fd, msg.name(), || iov.slices().map(|s| s.to_vec())) {
                    Some(r) => r,
                    None if i == 0 => return Action::Pass,
                    None => fail(Errno::NOTCONN),
                }
            }
        };
        match r {
            Action::Done(n) => v.set_len(i, n as usize),
            Action::Fail(e) if sent == 0 => return Action::Fail(e),
            _ => break,
        }
        sent += 1;
    }
    Action::Done(sent as c_int)
}

/// recvmmsg: each message as a recvmsg; after the first, only what is
/// queued when MSG_WAITFORONE is given. (`timeout` is stage 2's.)
pub(crate) fn recvmmsg(fd: c_int, v: Mmsgs<'_>, flags: c_int) -> Action<c_int> {
    let Some(sock) = ours(fd) else {
        return Action::Pass;
    };
    let mut got = 0usize;
    let mut flags = flags;
    for i in 0..v.len().min(libc::UIO_MAXIOV as usize) {
        match recvmsg_on(fd, &sock, v.received(i), flags & !libc::MSG_WAITFORONE) {
            Action::Done(n) => v.set_len(i, n as usize),
            Action::Fail(e) if got == 0 => return Action::Fail(e),
            _ => break,
        }
        got += 1;
        if flags & libc::MSG_WAITFORONE != 0 {
            flags |= libc::MSG_DONTWAIT;
        }
    }
    Action::Done(got as c_int)
}
