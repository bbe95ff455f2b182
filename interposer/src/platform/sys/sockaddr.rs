//! Socket addresses: decoding the caller's sockaddr, encoding ours into the
//! caller's buffer with the kernel's truncation rule, and the addresses of
//! this host.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::ptr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Decode a C socket address into a Rust one (IPv4/IPv6 only).
///
/// # Safety
/// `addr` must be null or point to at least `len` readable bytes, which is
/// exactly what `bind(2)`/`connect(2)` already require of their caller.
pub(crate) unsafe fn socket_addr(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    // Copied as the kernel copies it: a bad address is an error (None: the
    // call goes to the kernel, which says EFAULT), never a fault here.
    // SAFETY: `addr` readable for `len` bytes (the contract), of which
    // `read_with` reads at most `len`.
    unsafe { read_with(addr, len, |from, raw| super::user_read(from, raw).is_ok()) }
}

/// As `socket_addr`, read with a plain copy: a datagram send's
/// destination on one of our sockets, the hot path, where the two system
/// calls of a checked copy would double a round trip's cost.
///
/// # Safety
/// `addr` null or valid for reads of `len` bytes for the call, as
/// sendto(2)/sendmsg(2) require of their caller. A bad pointer is the
/// caller's undefined behaviour (a crash where the kernel would say
/// EFAULT), as it is in libc, and as it is for the data buffer
/// (`in_buf`).
pub(crate) unsafe fn socket_addr_trusted(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    // SAFETY: the contract above, for the at most `len` bytes `read_with`
    // asks of `from`; `raw` is ours and as long as the copy.
    unsafe {
        read_with(addr, len, |from, raw| {
            ptr::copy_nonoverlapping(from, raw.as_mut_ptr(), raw.len());
            true
        })
    }
}

/// The first `min(len, sockaddr_in6)` bytes at `addr`, read by `copy`,
/// decoded; None for a null or too short address or a failed copy.
///
/// # Safety
/// `copy(from, raw)` is called only with `from` = `addr` and `raw` no
/// longer than `len`: `copy` must be sound for that (the callers' contracts).
unsafe fn read_with(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    copy: impl FnOnce(*const u8, &mut [u8]) -> bool,
) -> Option<SocketAddr> {
    let len = usize::try_from(len).ok()?;
    if addr.is_null() || len < core::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    let mut raw = [0u8; core::mem::size_of::<libc::sockaddr_in6>()];
    let n = len.min(raw.len());
    if !copy(addr.cast::<u8>(), &mut raw[..n]) {
        return None;
    }
    decode(&raw, len)
}

/// The IPv4 or IPv6 address in the first bytes of a sockaddr `len` long.
fn decode(
    raw: &[u8; core::mem::size_of::<libc::sockaddr_in6>()],
    len: usize,
) -> Option<SocketAddr> {
    let family = libc::sa_family_t::from_ne_bytes([raw[0], raw[1]]);
    match c_int::from(family) {
        libc::AF_INET if len >= core::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: `raw` holds a complete sockaddr_in (family and length
            // say so); read_unaligned from our own bytes.
            let sin = unsafe { ptr::read_unaligned(raw.as_ptr().cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= core::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, a complete sockaddr_in6.
            let sin6 = unsafe { ptr::read_unaligned(raw.as_ptr().cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            let flow = u32::from_be(sin6.sin6_flowinfo);
            Some(SocketAddrV6::new(ip, port, flow, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// The family of a C socket address (None: null, shorter than the family
/// field, or unreadable).
///
/// # Safety
/// As `socket_addr`.
pub(crate) unsafe fn socket_family(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Option<c_int> {
    let len = usize::try_from(len).ok()?;
    if addr.is_null() || len < core::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    let mut raw = [0u8; 2];
    // SAFETY: `addr` readable for `len >= 2` bytes (the contract).
    unsafe { super::user_read(addr.cast::<u8>(), &mut raw) }.ok()?;
    Some(c_int::from(libc::sa_family_t::from_ne_bytes(raw)))
}

/// A Rust socket address as a C `sockaddr_storage` and its length.
pub(crate) fn encode_socket_addr(addr: SocketAddr) -> (libc::sockaddr_storage, usize) {
    let mut storage = zeroed_storage();
    let full = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            core::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            core::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, full)
}

/// `addr` as the bytes of its C sockaddr (SO_PEERNAME's answer).
pub(crate) fn socket_addr_bytes(addr: SocketAddr) -> Vec<u8> {
    let (storage, n) = encode_socket_addr(addr);
    // SAFETY: `storage` is plain data of at least `n` bytes, all initialised
    // (zeroed, then written).
    unsafe { core::slice::from_raw_parts(ptr::from_ref(&storage).cast::<u8>(), n) }.to_vec()
}

/// Writes `addr` to a caller's (sockaddr*, socklen_t*) pair the way the
/// kernel does: truncated to the caller's length, which is then set to the
/// full length. A null `out` is allowed (accept(fd, NULL, NULL)).
///
/// # Safety
/// `out`/`len` null, or `len` valid for read/write and `out` valid for
/// `*len` bytes of writes, as accept(2)/getsockname(2) require.
pub(crate) unsafe fn put_socket_addr(
    addr: SocketAddr,
    out: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) {
    if out.is_null() || len.is_null() {
        return;
    }
    let (storage, full) = encode_socket_addr(addr);
    // SAFETY: caller contract: `len` is readable and writable.
    let room = unsafe { ptr::read_unaligned(len) } as usize;
    let n = room.min(full);
    // SAFETY: `out` has room for `room >= n` bytes; storage has `full >= n`.
    unsafe {
        ptr::copy_nonoverlapping(
            (&storage as *const libc::sockaddr_storage).cast::<u8>(),
            out.cast::<u8>(),
            n,
        );
        ptr::write_unaligned(len, full as libc::socklen_t);
    }
}

/// Sets `*len = 0` if `len` is non-null (TCP's recvfrom reports no address).
///
/// # Safety
/// `len` null or valid for writes.
pub(crate) unsafe fn clear_len(len: *mut libc::socklen_t) {
    if !len.is_null() {
        // SAFETY: caller contract.
        unsafe { ptr::write_unaligned(len, 0) };
    }
}

/// The local name of an IPv4/IPv6 socket (getsockname), if it has one.
pub(crate) fn local_name(sock: std::os::fd::BorrowedFd<'_>) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    let mut storage = zeroed_storage();
    let mut len = core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage`/`len` are valid for getsockname to fill.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            ptr::addr_of_mut!(storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes of a sockaddr into `storage`.
    unsafe { socket_addr(ptr::addr_of!(storage).cast(), len) }
}

/// The addresses assigned to this network namespace's interfaces
/// (getifaddrs), loopback ones included.
pub(crate) fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut list: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of its family's size.
            let len = match c_int::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => core::mem::size_of::<libc::sockaddr_in>(),
                libc::AF_INET6 => core::mem::size_of::<libc::sockaddr_in6>(),
                _ => 0,
            };
            if len > 0 {
                // SAFETY: as above, `len` bytes are there.
                if let Some(a) = unsafe { socket_addr(ifa.ifa_addr, len as libc::socklen_t) } {
                    found.push(a.ip());
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct; all-zero is a valid value.
    unsafe { core::mem::zeroed() }
}

pub(crate) fn family_of(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// `addr` in the family of an IPv6 (`v6`) or IPv4 socket: IPv4 addresses
/// map into IPv6 (::ffff:a.b.c.d), mapped ones back; None for an IPv6
/// address on an IPv4 socket.
pub(crate) fn as_family(addr: SocketAddr, v6: bool) -> Option<SocketAddr> {
    use std::net::IpAddr;
    let ip = match (addr.ip(), v6) {
        (IpAddr::V4(ip), true) => IpAddr::V6(ip.to_ipv6_mapped()),
        (IpAddr::V6(ip), false) => IpAddr::V4(ip.to_ipv4_mapped()?),
        (ip, _) => ip,
    };
    Some(SocketAddr::new(ip, addr.port()))
}
