//! Socket options on kernel sockets: getsockopt/setsockopt with the
//! caller's buffers, and what the library asks of a socket (peer
//! credentials, groups, peek offset, whether a TCP socket is in use).
#![allow(unsafe_code)]

use super::*;
use core::ffi::{c_int, c_void};
use core::ptr;

/// Copies `bytes` to a getsockopt result buffer, truncated to `*len`,
/// and sets `*len` to what was copied (as the kernel does for ints).
///
/// # Safety
/// `len` valid for read/write and `value` for `*len` bytes of writes.
pub(crate) unsafe fn put_opt(
    value: *mut c_void,
    len: *mut libc::socklen_t,
    bytes: &[u8],
) -> Result<(), c_int> {
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    let mut raw = [0u8; 4];
    // SAFETY: `len` valid for a socklen_t (the contract); `raw` is ours.
    unsafe { user_copy(len.cast::<u8>(), raw.as_mut_ptr(), 4) }?;
    let room = u32::from_ne_bytes(raw) as usize;
    let n = room.min(bytes.len());
    // A null buffer with nothing to copy is fine, as for the kernel.
    if n > 0 {
        if value.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: `value` writable for `*len >= n` bytes (the contract).
        unsafe { user_copy(bytes.as_ptr(), value.cast::<u8>(), n) }?;
    }
    let n = (n as libc::socklen_t).to_ne_bytes();
    // SAFETY: `len` writable (the contract).
    unsafe { user_copy(n.as_ptr(), len.cast::<u8>(), 4) }
}

/// The room a getsockopt(2) caller offers: `*len` as the kernel reads it
/// (an int: negative lengths stay negative).
///
/// # Safety
/// `len` must be null or valid for reading a socklen_t.
pub(crate) unsafe fn opt_room(len: *const libc::socklen_t) -> Result<c_int, c_int> {
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    let mut raw = [0u8; 4];
    // SAFETY: `len` readable (the contract); `raw` is ours.
    unsafe { user_copy(len.cast::<u8>(), raw.as_mut_ptr(), 4) }?;
    Ok(c_int::from_ne_bytes(raw))
}

/// getsockopt(2) on a socket of the library's own, as a raw system call
/// (the kernel checks `value`/`len`: EFAULT for bad pointers). The
/// caller's errno is left alone; the error is returned.
///
/// # Safety
/// `value`/`len` as getsockopt(2) takes them: bad pointers make the call
/// fail with EFAULT, never fault here.
pub(crate) unsafe fn sockopt_get(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut libc::socklen_t,
) -> Result<(), c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: a system call; the kernel validates the pointers.
    quietly(|| unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            sock.as_raw_fd(),
            level,
            name,
            value,
            len,
        )
    })
    .map(drop)
}

/// getsockopt(2) on a socket of the library's own into `buf`: the length
/// the kernel stored, or the errno (the caller's errno is left alone).
pub(crate) fn sockopt_get_into(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    buf: &mut [u8],
) -> Result<usize, c_int> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `len` bytes, `len` for a
    // socklen_t.
    unsafe { sockopt_get(sock, level, name, buf.as_mut_ptr().cast(), &mut len) }?;
    Ok(len as usize)
}

/// setsockopt(2) with a caller's buffer, as a raw system call (the kernel
/// checks it: EFAULT for a bad pointer); the caller's errno is left alone.
///
/// # Safety
/// `value`/`len` as setsockopt(2) takes them.
pub(crate) unsafe fn sockopt_set_raw(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: libc::socklen_t,
) -> Result<(), c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: a system call; the kernel validates the pointer.
    quietly(|| unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            sock.as_raw_fd(),
            level,
            name,
            value,
            len,
        )
    })
    .map(drop)
}

/// setsockopt(2) on a socket of the library's own, as a raw system call;
/// the caller's errno is left alone.
pub(crate) fn sockopt_set(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: &[u8],
) -> Result<(), c_int> {
    let ptr = if value.is_empty() {
        ptr::null()
    } else {
        value.as_ptr()
    };
    // SAFETY: `ptr` is null (length 0) or valid for `value.len()` bytes.
    unsafe {
        sockopt_set_raw(
            sock,
            level,
            name,
            ptr.cast(),
            value.len() as libc::socklen_t,
        )
    }
}

/// SO_PEERCRED of a Unix socket: (pid, uid, gid) of the peer as the kernel
/// recorded them, the pid 0 when the peer is in a pid namespace we cannot
/// see (rustix's typed answer cannot hold a pid 0). A raw system call: no
/// hook, errno untouched.
pub(crate) fn peer_cred(sock: std::os::fd::BorrowedFd<'_>) -> Option<(u32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for `len` bytes of writes.
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    (ok && len as usize == core::mem::size_of::<libc::ucred>())
        .then(|| (cred.pid.max(0) as u32, cred.uid, cred.gid))
}

/// getsockopt(`level`, `name`) as a raw system call: no hook, errno
/// untouched. Whether it succeeded (`sockopt_get`).
///
/// # Safety
/// `value` must be valid for `*len` bytes of writes.
unsafe fn raw_getsockopt(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: &mut libc::socklen_t,
) -> bool {
    // SAFETY: `value` is valid for `*len` bytes (the caller's contract) and
    // `len` for a socklen_t.
    unsafe { sockopt_get(sock, level, name, value, ptr::from_mut(len)) }.is_ok()
}

/// SO_PEERGROUPS: the supplementary groups of a Unix socket's peer into
/// `buf`; the count, or None (not a Unix socket, too many groups, an old
/// kernel). A raw system call: no hook, errno untouched.
pub(crate) fn peer_groups(sock: std::os::fd::BorrowedFd<'_>, buf: &mut [u32]) -> Option<usize> {
    let mut len = core::mem::size_of_val(buf) as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes of writes.
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    ok.then(|| (len as usize / 4).min(buf.len()))
}

/// SO_PEEK_OFF of a socket (-1: off, the default). A raw system call: no
/// hook, errno untouched.
pub(crate) fn peek_offset(sock: std::os::fd::BorrowedFd<'_>) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = core::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `v` is valid for `len` bytes of writes.
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    ok.then_some(v)
}

/// Whether a kernel TCP socket is or was in use: it has left the CLOSE
/// state (connecting, connected, listening, closing), or it is back in it
/// after a connection that was established (reset: the kernel still
/// answers a connect with EISCONN) — tcpi_bytes_acked counts the SYN once
/// it was acknowledged, which a failed connect's was not (a connect may
/// be tried again then). None for what is not a TCP socket. A raw system
/// call: no hook, errno untouched.
pub(crate) fn tcp_in_use(sock: std::os::fd::BorrowedFd<'_>) -> Option<bool> {
    const TCP_CLOSE: u8 = 7;
    // struct tcp_info up to tcpi_bytes_acked (u64 at 120).
    let mut info = [0u8; 128];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is valid for `len` bytes of writes; the kernel copies
    // min(len, sizeof(struct tcp_info)).
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if !ok || len < 1 {
        return None;
    }
    let mut acked = [0u8; 8];
    acked.copy_from_slice(&info[120..128]);
    let was_connected = len as usize >= 128 && u64::from_ne_bytes(acked) > 0;
    Some(info[0] != TCP_CLOSE || was_connected)
}
