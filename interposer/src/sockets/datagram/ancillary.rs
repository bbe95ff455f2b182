//! Ancillary data (cmsgs) on emulated datagrams, as kernel UDP makes them
//! on loopback (issue 16, decision 62): which ones a socket asked for
//! (its kernel socket's options, where the application's setsockopt put
//! them), and the bytes of each, laid out as the kernel's `put_cmsg` lays
//! them (CMSG_SPACE apart, MSG_CTRUNC and a cut cmsg_len when the buffer
//! is short).
//!
//! Options whose cmsgs nothing here can make (IP_RECVERR's error queue,
//! SO_RXQ_OVFL's drop count, UDP_GRO's segment size, and in the default
//! mode SO_TIMESTAMPING) keep the socket the kernel's (`KERNEL_ONLY`).
//! In the emulated mode SO_TIMESTAMPING is carried (decision 80): its
//! receive software stamps are made, no transmit stamps (an empty error
//! queue).
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::BorrowedFd;

use crate::platform::sys;
use crate::transport::rendezvous::unmapped;

/// IP_PKTINFO.
pub(crate) const PKTINFO: u32 = 1;
/// IP_RECVTTL.
pub(crate) const TTL: u32 = 1 << 1;
/// IP_RECVTOS.
pub(crate) const TOS: u32 = 1 << 2;
/// IP_RECVORIGDSTADDR.
pub(crate) const ORIGDST: u32 = 1 << 3;
/// IPV6_RECVPKTINFO.
pub(crate) const PKTINFO6: u32 = 1 << 4;
/// IPV6_RECVHOPLIMIT.
pub(crate) const HOPLIMIT: u32 = 1 << 5;
/// IPV6_RECVTCLASS.
pub(crate) const TCLASS: u32 = 1 << 6;
/// IPV6_RECVORIGDSTADDR.
pub(crate) const ORIGDST6: u32 = 1 << 7;
/// SO_TIMESTAMP (old: 32-bit time_t layouts' type).
const STAMP: u32 = 1 << 8;
/// SO_TIMESTAMPNS.
const STAMP_NS: u32 = 1 << 9;
/// SO_TIMESTAMP_NEW.
const STAMP_NEW: u32 = 1 << 10;
/// SO_TIMESTAMPNS_NEW.
const STAMP_NS_NEW: u32 = 1 << 11;
/// SO_TIMESTAMPING with SOF_TIMESTAMPING_SOFTWARE and RX_SOFTWARE, the
/// emulated mode (decision 80): SCM_TIMESTAMPING's software stamp.
const STAMPING: u32 = 1 << 12;
/// ... set with SO_TIMESTAMPING_NEW (its cmsg type).
const STAMPING_NEW: u32 = 1 << 13;
/// Asked for something only the kernel makes (`KERNEL_ONLY`).
pub(crate) const KERNEL_ONLY: u32 = 1 << 30;

/// Linux's socket option numbers the libc crate lacks or names by arch.
const SO_TIMESTAMP_OLD: c_int = 29;
const SO_TIMESTAMPNS_OLD: c_int = 35;
const SO_TIMESTAMPING_OLD: c_int = 37;
const SO_TIMESTAMP_NEW: c_int = 63;
const SO_TIMESTAMPNS_NEW: c_int = 64;
const SO_TIMESTAMPING_NEW: c_int = 65;
const UDP_GRO: c_int = 104;
/// SOF_TIMESTAMPING_RX_SOFTWARE and SOF_TIMESTAMPING_SOFTWARE.
const SOF_TIMESTAMPING_RX_SOFTWARE: u32 = 1 << 3;
const SOF_TIMESTAMPING_SOFTWARE: u32 = 1 << 4;

/// What the kernel UDP socket `k` (`v6`: AF_INET6) asked for: a mask of
/// the constants above. An IPv6 socket also gets IPv4's cmsgs for
/// IPv4 datagrams (mapped); those are asked with the IPv4 options.
pub(crate) fn asked(k: BorrowedFd<'_>, v6: bool) -> u32 {
    let int = |level, name| {
        let mut v = [0u8; 4];
        sys::sockopt_get_into(k, level, name, &mut v)
            .ok()
            .filter(|&n| n >= 4)
            .map_or(0, |_| i32::from_ne_bytes(v))
    };
    let on = |level, name| int(level, name) != 0;
    let mut m = 0;
    let mut set = |yes: bool, bit: u32| {
        if yes {
            m |= bit;
        }
    };
    let ip = libc::IPPROTO_IP;
    set(on(ip, libc::IP_PKTINFO), PKTINFO);
    set(on(ip, libc::IP_RECVTTL), TTL);
    set(on(ip, libc::IP_RECVTOS), TOS);
    set(on(ip, libc::IP_RECVORIGDSTADDR), ORIGDST);
    if v6 {
        let ip6 = libc::IPPROTO_IPV6;
        set(on(ip6, libc::IPV6_RECVPKTINFO), PKTINFO6);
        set(on(ip6, libc::IPV6_RECVHOPLIMIT), HOPLIMIT);
        set(on(ip6, libc::IPV6_RECVTCLASS), TCLASS);
        set(on(ip6, libc::IPV6_RECVORIGDSTADDR), ORIGDST6);
    }
    let so = libc::SOL_SOCKET;
    set(on(so, SO_TIMESTAMP_OLD), STAMP);
    set(on(so, SO_TIMESTAMPNS_OLD), STAMP_NS);
    set(on(so, SO_TIMESTAMP_NEW), STAMP_NEW);
    set(on(so, SO_TIMESTAMPNS_NEW), STAMP_NS_NEW);
    // (SO_TIMESTAMPING's flags; the NEW option answers only when it set them.)
    let stamping = int(so, SO_TIMESTAMPING_OLD) as u32;
    let rx_soft = SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_RX_SOFTWARE;
    let emulated_stamping = !super::routes::default_mode();
    let rx_stamps = emulated_stamping && stamping & rx_soft == rx_soft;
    set(rx_stamps, STAMPING);
    set(rx_stamps && on(so, SO_TIMESTAMPING_NEW), STAMPING_NEW);
    let recverr = if v6 {
        on(libc::IPPROTO_IPV6, libc::IPV6_RECVERR) || on(ip, libc::IP_RECVERR)
    } else {
        on(ip, libc::IP_RECVERR)
    };
    set(
        recverr
            || on(so, libc::SO_RXQ_OVFL)
            || on(libc::IPPROTO_UDP, UDP_GRO)
            || (stamping != 0 && !emulated_stamping),
        KERNEL_ONLY,
    );
    m
}

/// A recvmsg's control buffer, written as the kernel's `put_cmsg` does.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
    /// MSG_CTRUNC: a cmsg did not fit (or was cut).
    pub truncated: bool,
}

const HDR: usize = core::mem::size_of::<libc::cmsghdr>();

fn align(n: usize) -> usize {
    n.div_ceil(core::mem::size_of::<usize>()) * core::mem::size_of::<usize>()
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer {
            buf,
            at: 0,
            truncated: false,
        }
    }

    /// Bytes written: the msg_controllen recvmsg returns.
    pub(crate) fn len(&self) -> usize {
        self.at
    }

    /// One cmsg: cut (cmsg_len what fits, MSG_CTRUNC) when the room
    /// left is short, none at all (MSG_CTRUNC) below a header's room.
    pub(crate) fn put(&mut self, level: c_int, kind: c_int, data: &[u8]) {
        let room = self.buf.len() - self.at;
        if room < HDR {
            self.truncated = true;
            return;
        }
        let mut len = HDR + data.len();
        if room < len {
            self.truncated = true;
            len = room;
        }
        let h = libc::cmsghdr {
            cmsg_len: len as _,
            cmsg_level: level,
            cmsg_type: kind,
        };
        let out = &mut self.buf[self.at..];
        out[..core::mem::size_of_val(&h.cmsg_len)].copy_from_slice(&h.cmsg_len.to_ne_bytes());
        let lv = core::mem::size_of_val(&h.cmsg_len);
        out[lv..lv + 4].copy_from_slice(&level.to_ne_bytes());
        out[lv + 4..lv + 8].copy_from_slice(&kind.to_ne_bytes());
        out[HDR..len].copy_from_slice(&data[..len - HDR]);
        self.at += align(HDR + data.len()).min(room);
    }

    /// The cmsgs the kernel gave for a datagram it carried (laid out in
    /// `bytes`, room enough for all), each written again with `put`: cut
    /// and spaced for this buffer as the kernel would cut them.
    pub(crate) fn put_kernel(&mut self, bytes: &[u8], truncated: bool) {
        // (The kernel's own: a malformed one, not expected, ends them.)
        let _ = crate::platform::sys::walk_cmsgs(bytes, |level, kind, data| {
            self.put(level, kind, data)
        });
        self.truncated |= truncated;
    }
}

/// The TTL (or hop limit) a loopback datagram arrives with: the sender's
/// default, the namespace's sysctl (64 unless changed), read once.
fn default_ttl(v6: bool) -> i32 {
    static V4: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    static V6: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|t| (1..=255).contains(t))
            .unwrap_or(64)
    };
    if v6 {
        *V6.get_or_init(|| read("/proc/sys/net/ipv6/conf/lo/hop_limit"))
    } else {
        *V4.get_or_init(|| read("/proc/sys/net/ipv4/ip_default_ttl"))
    }
}

/// The loopback interface's index, as the kernel reports it in pktinfo.
pub(crate) fn lo_index() -> u32 {
    static LO: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LO.get_or_init(|| {
        std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1)
    })
}

/// The cmsgs of an emulated datagram sent to `to` (the address its sender
/// used), on a socket that `asked`, in the kernel's order: the timestamp
/// (sock_recv_cmsgs), then IPv4's (ip_cmsg_recv: PKTINFO, TTL, TOS,
/// ORIGDSTADDR) for an IPv4 datagram, IPv6's (PKTINFO, HOPLIMIT, TCLASS,
/// ORIGDSTADDR) for an IPv6 one. An IPv4 datagram on an IPv6 socket that
/// asked IPV6_RECVPKTINFO first gets IPV6_PKTINFO with the mapped
/// destination (udpv6_recvmsg's ip6_datagram_recv_common_ctl), then the
/// IPv4 options' cmsgs.
pub(crate) fn build(w: &mut Writer<'_>, asked: u32, to: SocketAddr) {
    stamp(w, asked);
    let to = unmapped(to);
    match to.ip() {
        IpAddr::V4(ip) => {
            if asked & PKTINFO6 != 0 {
                put_pktinfo6(w, ip.to_ipv6_mapped());
            }
            put_v4(w, asked, ip, to.port())
        }
        IpAddr::V6(ip) => put_v6(w, asked, ip, to.port()),
    }
}

/// IPV6_PKTINFO: struct in6_pktinfo (address, ifindex).
fn put_pktinfo6(w: &mut Writer<'_>, ip: Ipv6Addr) {
    let mut b = [0u8; 20];
    b[..16].copy_from_slice(&ip.octets());
    b[16..].copy_from_slice(&lo_index().to_ne_bytes());
    w.put(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &b);
}

fn put_v4(w: &mut Writer<'_>, asked: u32, ip: Ipv4Addr, port: u16) {
    let ip_ = libc::IPPROTO_IP;
    if asked & PKTINFO != 0 {
        // struct in_pktinfo: ifindex, spec_dst (a local destination's
        // own address, fib_compute_spec_dst), addr.
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&lo_index().to_ne_bytes());
        b[4..8].copy_from_slice(&ip.octets());
        b[8..].copy_from_slice(&ip.octets());
        w.put(ip_, libc::IP_PKTINFO, &b);
    }
    if asked & TTL != 0 {
        w.put(ip_, libc::IP_TTL, &default_ttl(false).to_ne_bytes());
    }
    if asked & TOS != 0 {
        w.put(ip_, libc::IP_TOS, &[0u8]); // one byte, as the kernel's
    }
    if asked & ORIGDST != 0 {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip.octets());
        w.put(ip_, libc::IP_ORIGDSTADDR, &b);
    }
}

fn put_v6(w: &mut Writer<'_>, asked: u32, ip: Ipv6Addr, port: u16) {
    let ip6 = libc::IPPROTO_IPV6;
    if asked & PKTINFO6 != 0 {
        put_pktinfo6(w, ip);
    }
    if asked & HOPLIMIT != 0 {
        w.put(ip6, libc::IPV6_HOPLIMIT, &default_ttl(true).to_ne_bytes());
    }
    if asked & TCLASS != 0 {
        w.put(ip6, libc::IPV6_TCLASS, &0i32.to_ne_bytes());
    }
    if asked & ORIGDST6 != 0 {
        let mut b = [0u8; 28];
        b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[8..24].copy_from_slice(&ip.octets());
        w.put(ip6, libc::IPV6_ORIGDSTADDR, &b);
    }
}

/// SO_TIMESTAMP(NS)'s cmsg: the time of the receive that took the
/// datagram (CLOCK_REALTIME; the kernel's is its arrival, during the
/// sender's send on loopback: a queued datagram's is later here).
fn stamp(w: &mut Writer<'_>, asked: u32) {
    let (kind, ns) = if asked & STAMP_NS_NEW != 0 {
        (SO_TIMESTAMPNS_NEW, true)
    } else if asked & STAMP_NS != 0 {
        (SO_TIMESTAMPNS_OLD, true)
    } else if asked & STAMP_NEW != 0 {
        (SO_TIMESTAMP_NEW, false)
    } else if asked & STAMP != 0 {
        (SO_TIMESTAMP_OLD, false)
    } else {
        if asked & STAMPING != 0 {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
            stamping(w, asked, t);
        }
        return;
    };
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    put_stamp(w, kind, ns, t);
    stamping(w, asked, t);
}

/// SCM_TIMESTAMPING after SO_TIMESTAMP(NS)'s, as __sock_recv_timestamp
/// writes it: struct scm_timestamping, the software stamp in ts[0], the
/// hardware ones (none on loopback) zero.
#[allow(clippy::unnecessary_cast)] // (the fields' types vary by target)
fn stamping(w: &mut Writer<'_>, asked: u32, t: rustix::time::Timespec) {
    if asked & STAMPING == 0 {
        return;
    }
    let new = asked & STAMPING_NEW != 0;
    if new || cfg!(target_pointer_width = "64") {
        let mut b = [0u8; 48];
        b[..8].copy_from_slice(&(t.tv_sec as i64).to_ne_bytes());
        b[8..16].copy_from_slice(&(t.tv_nsec as i64).to_ne_bytes());
        let kind = if new {
            SO_TIMESTAMPING_NEW
        } else {
            SO_TIMESTAMPING_OLD
        };
        w.put(libc::SOL_SOCKET, kind, &b);
    } else {
        let mut b = [0u8; 24];
        b[..4].copy_from_slice(&(t.tv_sec as i32).to_ne_bytes());
        b[4..8].copy_from_slice(&(t.tv_nsec as i32).to_ne_bytes());
        w.put(libc::SOL_SOCKET, SO_TIMESTAMPING_OLD, &b);
    }
}

/// One SO_TIMESTAMP(NS) cmsg of type `kind` for the time `t`.
#[allow(clippy::unnecessary_cast)] // (the fields' types vary by target)
fn put_stamp(w: &mut Writer<'_>, kind: c_int, ns: bool, t: rustix::time::Timespec) {
    let frac = if ns { t.tv_nsec } else { t.tv_nsec / 1000 };
    // struct timeval / timespec (64-bit fields: the NEW types, and the
    // old ones on 64-bit; the old ones on 32-bit hold 32-bit fields).
    if kind == SO_TIMESTAMP_NEW || kind == SO_TIMESTAMPNS_NEW || cfg!(target_pointer_width = "64") {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(t.tv_sec as i64).to_ne_bytes());
        b[8..].copy_from_slice(&(frac as i64).to_ne_bytes());
        w.put(libc::SOL_SOCKET, kind, &b);
    } else {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(t.tv_sec as i32).to_ne_bytes());
        b[4..].copy_from_slice(&(frac as i32).to_ne_bytes());
        w.put(libc::SOL_SOCKET, kind, &b);
    }
}

/// What a recvmsg asking for cmsgs learns while it receives, beside the
/// datagram (kept out of the receive path's return values, which every
/// receive moves): the kernel's cmsgs if its socket gave the datagram (a
/// plain sender's, in the default mode), or the address a shared-memory
/// datagram's sender used. `arm` before the receive, `take` after.
struct Capture {
    armed: bool,
    bytes: Vec<u8>,
    truncated: bool,
    got: bool,
    dest: Option<SocketAddr>,
}

std::thread_local! {
    static CAPTURE: RefCell<Capture> = const {
        RefCell::new(Capture { armed: false, bytes: Vec::new(), truncated: false, got: false, dest: None })
    };
}

/// The room a kernel receive gets for its cmsgs.
const CAPTURE_ROOM: usize = 512;

/// A recvmsg with a control buffer begins on this thread.
pub(crate) fn arm() {
    let _ = CAPTURE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.armed = true;
            c.got = false;
            c.dest = None;
        }
    });
}

/// A shared-memory datagram was taken, sent to `dest` (`Inbox::dests`).
pub(crate) fn note_dest(dest: Option<SocketAddr>) {
    let _ = CAPTURE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.dest = dest;
        }
    });
}

/// The receive ended: `f` gets the kernel's cmsgs (and MSG_CTRUNC) if its
/// socket gave the datagram, and the destination a shared-memory one had.
pub(crate) fn take<R>(f: impl FnOnce(Option<(&[u8], bool)>, Option<SocketAddr>) -> R) -> R {
    let (kernel, dest) = CAPTURE
        .try_with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return (None, None);
            };
            let kernel = core::mem::take(&mut c.got) && c.armed;
            c.armed = false;
            let bytes = kernel.then(|| (core::mem::take(&mut c.bytes), c.truncated));
            (bytes, c.dest.take())
        })
        .unwrap_or((None, None));
    let r = f(kernel.as_ref().map(|(b, cut)| (&b[..], *cut)), dest);
    if let Some((bytes, _)) = kernel {
        // (The buffer back, for the next kernel receive.)
        let _ = CAPTURE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.bytes = bytes;
            }
        });
    }
    r
}

/// For a kernel receive: room for cmsgs when a recvmsg asked (`armed`).
/// `f` gets it (empty: none asked) and returns the length the kernel
/// wrote and whether it set MSG_CTRUNC.
pub(crate) fn kernel_receive<R>(f: impl FnOnce(&mut [u8]) -> (R, usize, bool)) -> R {
    let mut buf = CAPTURE
        .try_with(|c| {
            c.try_borrow_mut()
                .ok()
                .filter(|c| c.armed)
                .map(|mut c| core::mem::take(&mut c.bytes))
        })
        .ok()
        .flatten();
    let Some(b) = buf.as_mut() else {
        return f(&mut []).0;
    };
    b.resize(CAPTURE_ROOM, 0);
    let (r, n, cut) = f(b);
    b.truncate(n.min(CAPTURE_ROOM));
    let bytes = buf.take().unwrap_or_default();
    let _ = CAPTURE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.bytes = bytes;
            c.truncated = cut;
            c.got = n > 0 || cut;
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmsgs_are_spaced_and_cut_as_the_kernels() {
        let mut b = [0u8; 64];
        let mut w = Writer::new(&mut b);
        w.put(0, libc::IP_TOS, &[7]);
        assert_eq!(w.len(), 24); // CMSG_SPACE(1)
        w.put(0, libc::IP_TTL, &64i32.to_ne_bytes());
        assert_eq!(w.len(), 48);
        assert!(!w.truncated);
        w.put(0, libc::IP_PKTINFO, &[1; 12]); // 28 bytes, 16 left
        assert!(w.truncated);
        assert_eq!(w.len(), 64);
        assert_eq!(u64::from_ne_bytes(b[48..56].try_into().unwrap()), 16);
        // The kernel's own cmsgs, laid out again for a shorter room.
        let mut full = [0u8; 64];
        let mut k = Writer::new(&mut full);
        k.put(0, libc::IP_PKTINFO, &[1; 12]);
        k.put(0, libc::IP_TTL, &64i32.to_ne_bytes());
        let n = k.len();
        assert_eq!(n, 56);
        let mut room = [0u8; 20];
        let mut w = Writer::new(&mut room);
        w.put_kernel(&full[..n], false);
        assert!(w.truncated);
        assert_eq!(w.len(), 20);
        assert_eq!(u64::from_ne_bytes(room[..8].try_into().unwrap()), 20);
        let mut room = [0u8; 48];
        let mut w = Writer::new(&mut room);
        w.put_kernel(&full[..n], false);
        assert_eq!((w.len(), w.truncated), (48, true));
        assert_eq!(u64::from_ne_bytes(room[32..40].try_into().unwrap()), 16);
        let mut small = [0u8; 8];
        let mut w = Writer::new(&mut small);
        w.put(0, libc::IP_TTL, &[0; 4]);
        assert!(w.truncated);
        assert_eq!(w.len(), 0);
    }
}
