//! Aborting TCP connections with the kernel's socket-diagnostics netlink
//! (`NETLINK_SOCK_DIAG`, as `ss -K` does): a dump of the calling thread's
//! namespace's TCP sockets, then `SOCK_DESTROY` for each one between two
//! of the NIC's addresses. The kernel aborts such a socket as after a
//! reset: blocked calls return `ECONNABORTED` at once, where a connection
//! whose device went away would otherwise hang until TCP's own timeouts
//! (review s28 #7). Needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const HDR: usize = 16; // struct nlmsghdr
const REQ: usize = 56; // struct inet_diag_req_v2
const MSG: usize = 72; // struct inet_diag_msg
/// TCP states worth aborting: every state but LISTEN (a listener keeps
/// working once the device is back), TIME_WAIT and NEW_SYN_RECV (not full
/// sockets).
const STATES: u32 = (1 << 1) // ESTABLISHED
    | (1 << 2) // SYN_SENT
    | (1 << 3) // SYN_RECV
    | (1 << 4) // FIN_WAIT1
    | (1 << 5) // FIN_WAIT2
    | (1 << 8) // CLOSE_WAIT
    | (1 << 9) // LAST_ACK
    | (1 << 11); // CLOSING

/// A socket's identity as inet_diag gives it (`struct inet_diag_sockid`,
/// 48 bytes) with its family: what SOCK_DESTROY needs back.
struct SockId {
    family: u8,
    id: [u8; 48],
}

impl SockId {
    fn addr(&self, at: usize) -> IpAddr {
        let b = &self.id[at..at + 16];
        if self.family == libc::AF_INET as u8 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default());
            // A dual-stack socket connected over IPv4 shows ::ffff:a.b.c.d.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
    }
    fn local(&self) -> IpAddr {
        self.addr(4)
    }
    fn remote(&self) -> IpAddr {
        self.addr(20)
    }
}

fn request(kind: u16, flags: u16, seq: u32, family: u8, id: &[u8; 48]) -> [u8; HDR + REQ] {
    let mut m = [0u8; HDR + REQ];
    m[0..4].copy_from_slice(&((HDR + REQ) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[HDR] = family;
    m[HDR + 1] = libc::IPPROTO_TCP as u8;
    m[HDR + 4..HDR + 8].copy_from_slice(&STATES.to_ne_bytes());
    m[HDR + 8..].copy_from_slice(id);
    m
}

fn netlink() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(fd: &OwnedFd, m: &[u8]) -> io::Result<()> {
    // SAFETY: m is a valid buffer; the kernel is the destination (no address).
    if unsafe { libc::send(fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Netlink messages in `buf[..n]`: (type, payload).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let h = buf.get(at..at + HDR)?;
        let len = u32::from_ne_bytes(h[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(h[4..6].try_into().ok()?);
        let body = buf.get(at + HDR..at + len.max(HDR))?;
        at += len.max(HDR).div_ceil(4) * 4;
        Some((kind, body))
    })
}

/// TCP sockets of `family` in this thread's namespace, in the states
/// worth aborting.
fn dump(fd: &OwnedFd, family: u8) -> io::Result<Vec<SockId>> {
    send(
        fd,
        &request(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, 1, family, &[0; 48]),
    )?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = recv(fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        for (kind, body) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let e = body
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                    return Err(io::Error::from_raw_os_error(-e));
                }
                SOCK_DIAG_BY_FAMILY if body.len() >= MSG => {
                    let mut id = [0u8; 48];
                    id.copy_from_slice(&body[4..52]);
                    out.push(SockId {
                        family: body[0],
                        id,
                    });
                }
                _ => {}
            }
        }
    }
}

/// Aborts every TCP connection of this thread's namespace from one of
/// `local` to one of `remote` (IPv4 and IPv6). Returns how many were
/// aborted.
pub fn abort_connections(local: &[IpAddr], remote: &[IpAddr]) -> io::Result<usize> {
    let fd = netlink()?;
    let mut aborted = 0;
    let mut buf = vec![0u8; 4096];
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for s in dump(&fd, family)? {
            if !local.contains(&s.local()) || !remote.contains(&s.remote()) {
                continue;
            }
            send(&fd, &request(SOCK_DESTROY, NLM_F_ACK, 2, s.family, &s.id))?;
            let n = recv(&fd, &mut buf)?;
            // The ack: an NLMSG_ERROR whose code is 0 on success (ENOENT:
            // the socket closed meanwhile).
            let ok = messages(&buf[..n]).any(|(kind, body)| {
                kind == NLMSG_ERROR && body.get(..4) == Some(&0i32.to_ne_bytes()[..])
            });
            aborted += usize::from(ok);
        }
    }
    Ok(aborted)
}
