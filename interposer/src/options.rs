//! Socket options and fd modes (getsockopt/setsockopt, fcntl, ioctl).
//!
//! An emulated socket answers like TCP: SO_TYPE, SO_DOMAIN, SO_PROTOCOL,
//! SO_ACCEPTCONN, SO_ERROR, SO_RCVBUF/SO_SNDBUF from the ring; options the
//! application sets are remembered and read back (SO_RCVTIMEO/SO_SNDTIMEO
//! also bound our blocking waits). O_NONBLOCK (F_SETFL, FIONBIO) is set on
//! the real kernel object behind the fd, where the data path reads it.
#![deny(unsafe_code)]

use core::ffi::{c_int, c_ulong, c_void};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libc::socklen_t;

use crate::hooks::Action;
use crate::registry;
use crate::socket::Socket;
use crate::sys;

fn put(value: *mut c_void, len: *mut socklen_t, bytes: &[u8]) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: getsockopt(2) requires `len` valid and `value` valid for `*len` bytes.
    match unsafe { sys::put_opt(value, len, bytes) } {
        Ok(()) => Action::Done(0),
        Err(e) => Action::Fail(e),
    }
}

fn put_int(value: *mut c_void, len: *mut socklen_t, v: c_int) -> Action<c_int> {
    put(value, len, &v.to_ne_bytes())
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
            crate::hooks::real::getsockopt(tcp, level, name, value, len)
        });
    }
    let opts = sock.options();
    let stream = match &*sock {
        Socket::Stream(c) => Some(c),
        Socket::Listener(_) | Socket::Bound(_) => None,
    };
    let ring = stream.map_or(1 << 20, |c| c.ring_bytes()) as c_int;
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_TYPE) => put_int(value, len, libc::SOCK_STREAM),
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => put_int(value, len, sock.family()),
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => put_int(value, len, libc::IPPROTO_TCP),
        (libc::SOL_SOCKET, libc::SO_ERROR) => put_int(
            value,
            len,
            stream.map_or(0, |c| c.error.swap(0, Ordering::Relaxed)),
        ),
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
            let listening = matches!(&*sock, Socket::Listener(_));
            put_int(value, len, c_int::from(listening))
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
            // Like the kernel, report the effective size (a set value is
            // doubled there; here the ring's size is what holds data).
            put_int(
                value,
                len,
                opts.get_int(level, name)
                    .map_or(ring, |v| v.saturating_mul(2)),
            )
        }
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => put(
            value,
            len,
            &opts.get(level, name).unwrap_or_else(|| vec![0u8; 16]),
        ),
        (libc::SOL_SOCKET, libc::SO_LINGER) => put(
            value,
            len,
            &opts.get(level, name).unwrap_or_else(|| vec![0u8; 8]),
        ),
        (libc::IPPROTO_TCP | libc::IPPROTO_IP | libc::IPPROTO_IPV6, _) | (libc::SOL_SOCKET, _) => {
            match opts.get(level, name) {
                Some(v) => put(value, len, &v),
                None if level == libc::IPPROTO_TCP && name == libc::TCP_MAXSEG => {
                    put_int(value, len, 65483)
                }
                None if level == libc::IPPROTO_TCP && name == libc::TCP_INFO => {
                    match tcp_info(sock.family(), stream.is_some()) {
                        Some(info) => put(value, len, &info),
                        None => Action::Fail(libc::EOPNOTSUPP),
                    }
                }
                // No IP options on an emulated connection: the kernel
                // answers with length 0 (sshd refuses a connection that
                // has some).
                None if level == libc::IPPROTO_IP && name == libc::IP_OPTIONS => {
                    put(value, len, &[])
                }
                None if level == libc::IPPROTO_TCP && name == libc::TCP_CONGESTION => {
                    put(value, len, &congestion_control())
                }
                None if level == libc::SOL_SOCKET => Action::Pass,
                None => put_int(value, len, 0),
            }
        }
        _ => Action::Fail(libc::ENOPROTOOPT),
    }
}

/// `struct tcp_info` as the kernel would give it for an established
/// loopback connection with nothing lost: the kernel's own for a fresh
/// socket of `family` (its size and defaults are this kernel's), with the
/// state ESTABLISHED (1) when `connected` and loopback's segment sizes.
/// (Round-trip times and byte counts are not kept yet: zero.)
fn tcp_info(family: c_int, connected: bool) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let af = if family == libc::AF_INET6 {
        rustix::net::AddressFamily::INET6
    } else {
        rustix::net::AddressFamily::INET
    };
    let probe = rustix::net::socket_with(
        af,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    let mut info = vec![0u8; 512];
    let mut len = info.len() as socklen_t;
    #[allow(unsafe_code)]
    // SAFETY: `info` is valid for `len` bytes; `len` is a valid socklen_t.
    let r = unsafe {
        crate::hooks::real::getsockopt(
            probe.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    info.truncate(len as usize);
    if connected && info.len() >= 88 {
        info[0] = 1; // tcpi_state: TCP_ESTABLISHED
        let mut put_u32 = |at: usize, v: u32| info[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        put_u32(16, 65483); // tcpi_snd_mss
        put_u32(20, 65483); // tcpi_rcv_mss
        put_u32(60, 65535); // tcpi_pmtu
        put_u32(80, 10); // tcpi_snd_cwnd
        put_u32(84, 65483); // tcpi_advmss
    }
    Some(info)
}

/// TCP_CONGESTION: the namespace's default algorithm, as a new connection
/// gets it (16 bytes, NUL-padded, as the kernel copies it).
fn congestion_control() -> Vec<u8> {
    let name = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .unwrap_or_else(|_| "cubic".to_string());
    let mut out = vec![0u8; 16];
    let name = name.trim().as_bytes();
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name[..n]);
    out
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
    if let Some(tcp) = kernel_listener(&sock) {
        #[allow(unsafe_code)]
        // SAFETY: setsockopt(2)'s contract for `value`/`len` is the caller's.
        return Action::Raw(unsafe {
            crate::hooks::real::setsockopt(tcp, level, name, value, len)
        });
    }
    if len > 0 && value.is_null() {
        return Action::Fail(libc::EFAULT);
    }
    let n = (len as usize).min(256);
    #[allow(unsafe_code)]
    // SAFETY: setsockopt(2) requires `value` valid for `len` bytes of reads.
    let bytes = unsafe { sys::in_buf(value, n) };
    match level {
        libc::SOL_SOCKET | libc::IPPROTO_TCP | libc::IPPROTO_IP | libc::IPPROTO_IPV6 => {
            sock.options().set(level, name, bytes);
            Action::Done(0)
        }
        _ => Action::Fail(libc::ENOPROTOOPT),
    }
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

/// A listener's parts (a connection's carrier) go across exec exactly when
/// one of the application's fds for it does (its other fds looked at as
/// they are, `changing` as it is about to be). A scan of the fd table: only
/// when such an fd is made, closed or has its flag set.
pub(crate) fn refresh_cloexec(sock: &Arc<Socket>, changing: Option<(c_int, bool)>) {
    if matches!(**sock, Socket::Bound(_)) {
        return;
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(crate::fdtable::CAPACITY, |n| n as usize)
        .min(crate::fdtable::CAPACITY);
    let inheritable = |fd: c_int| match changing {
        Some((changed, cloexec)) if changed == fd => !cloexec,
        _ => rustix::io::fcntl_getfd(sys::borrow_fd(fd))
            .is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC)),
    };
    let any = (0..limit as c_int).any(|fd| {
        crate::fdtable::table().get(fd).is_some()
            && registry::get(fd).is_some_and(|s| Arc::ptr_eq(&s, sock))
            && inheritable(fd)
    });
    sock.set_cloexec(!any);
}

/// `fd`, a new copy of `sock`'s fd (dup, dup2, F_DUPFD), goes across exec:
/// then so must the listener's parts (a supervisor dup2()s a listener onto
/// fd 3 for the program it runs, as socket activation does), or the
/// connection's carrier (a forked child dup2()s it onto 0 and 1).
pub(crate) fn inheritable_copy(fd: c_int, sock: &Socket) {
    if !matches!(sock, Socket::Bound(_)) {
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
