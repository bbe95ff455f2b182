//! Stream data on emulated connections: every read and write call, the
//! fortified variants included, goes through `recv`/`send` here.
#![deny(unsafe_code)]

use core::ffi::{c_int, c_void};
use std::io::{IoSlice, IoSliceMut};

use libc::{iovec, msghdr, off_t, size_t, sockaddr, socklen_t, ssize_t};
use rustix::io::Errno;

use crate::platform::fdtable;
use crate::platform::real::Action;
use crate::platform::sys;
use crate::sockets::conn::FastSend;
use crate::sockets::registry;
use crate::sockets::socket::Socket;

fn iov_count(cnt: c_int) -> Result<usize, Errno> {
    usize::try_from(cnt)
        .ok()
        .filter(|&n| n <= libc::UIO_MAXIOV as usize)
        .ok_or(Errno::INVAL)
}

/// The shared body of the single-buffer receive calls.
fn recv_buf(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass; // the pass-through fast path: one atomic load
    }
    #[allow(unsafe_code)]
    // SAFETY: read(2)/recv(2) require `buf` valid for `len` bytes of writes.
    let b = unsafe { sys::out_buf(buf, len) };
    recv_slices(fd, flags, &mut [IoSliceMut::new(b)])
}

/// The shared body of the single-buffer send calls.
fn send_buf(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    #[allow(unsafe_code)]
    // SAFETY: write(2)/send(2) require `buf` valid for `len` bytes of reads.
    let b = unsafe { sys::in_buf(buf, len) };
    send_slices(fd, flags, &[IoSlice::new(b)])
}

fn send_slices(fd: c_int, flags: c_int, bufs: &[IoSlice<'_>]) -> Action<ssize_t> {
    // The fast path: a send the ring takes at once, made under the
    // registry's read lock without a reference on the socket.
    let fast = registry::with(fd, |sock| match sock {
        Socket::Stream(conn) => conn.try_send(bufs, flags),
        _ => FastSend::Slow,
    });
    let sent = match fast {
        Some(FastSend::Done(n)) => return Action::Done(n as ssize_t),
        Some(FastSend::Partial(n)) => n,
        Some(FastSend::Slow) | None => 0,
    };
    let Some(sock) = registry::get(fd) else {
        // Closed by another thread since: what went in was sent.
        return if sent > 0 {
            Action::Done(sent as ssize_t)
        } else {
            Action::Pass
        };
    };
    let Socket::Stream(conn) = &*sock else {
        return Action::Fail(libc::ENOTCONN);
    };
    match conn.send_rest(bufs, flags, sent) {
        Ok(n) => Action::Done(n as ssize_t),
        Err(Errno::PIPE) => {
            if flags & libc::MSG_NOSIGNAL == 0 {
                sys::raise_sigpipe();
            }
            Action::Fail(libc::EPIPE)
        }
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

fn recv_slices(fd: c_int, flags: c_int, bufs: &mut [IoSliceMut<'_>]) -> Action<ssize_t> {
    let Some(sock) = registry::get(fd) else {
        return Action::Pass;
    };
    let Socket::Stream(conn) = &*sock else {
        return Action::Fail(libc::ENOTCONN);
    };
    match conn.recv(bufs, flags) {
        Ok(n) => Action::Done(n as ssize_t),
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

pub(crate) fn read(fd: c_int, buf: *mut c_void, count: size_t) -> Action<ssize_t> {
    recv_buf(fd, buf, count, 0)
}

pub(crate) fn write(fd: c_int, buf: *const c_void, count: size_t) -> Action<ssize_t> {
    send_buf(fd, buf, count, 0)
}

pub(crate) fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> Action<ssize_t> {
    send_buf(fd, buf, n, flags)
}

pub(crate) fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> Action<ssize_t> {
    recv_buf(fd, buf, n, flags)
}

/// On a connected TCP socket the destination address is ignored.
pub(crate) fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    _addr: *const sockaddr,
    _addrlen: socklen_t,
) -> Action<ssize_t> {
    send_buf(fd, buf, len, flags)
}

/// TCP reports no source address: `*addrlen` becomes 0.
pub(crate) fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    _addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> Action<ssize_t> {
    let r = recv_buf(fd, buf, len, flags);
    if matches!(r, Action::Done(_)) {
        #[allow(unsafe_code)]
        // SAFETY: recvfrom(2) requires `addrlen` null or valid.
        unsafe {
            sys::clear_len(addrlen)
        };
    }
    r
}

pub(crate) fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    let n = match iov_count(iovcnt) {
        Ok(n) => n,
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    #[allow(unsafe_code)]
    // SAFETY: readv(2) requires `iovcnt` valid iovecs with writable buffers.
    let bufs = unsafe { sys::out_iovecs(iov, n) };
    recv_slices(fd, 0, bufs)
}

pub(crate) fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    let n = match iov_count(iovcnt) {
        Ok(n) => n,
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    #[allow(unsafe_code)]
    // SAFETY: writev(2) requires `iovcnt` valid iovecs with readable buffers.
    let bufs = unsafe { sys::in_iovecs(iov, n) };
    send_slices(fd, 0, bufs)
}

pub(crate) fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    #[allow(unsafe_code)]
    // SAFETY: sendmsg(2) requires a valid msghdr.
    let Some((iov, cnt)) = (unsafe { sys::msg_iov_in(msg) }) else {
        return Action::Fail(libc::EFAULT);
    };
    if cnt > libc::UIO_MAXIOV as usize {
        return Action::Fail(libc::EMSGSIZE);
    }
    #[allow(unsafe_code)]
    // SAFETY: the msghdr's iovecs, valid as sendmsg(2) requires.
    let bufs = unsafe { sys::in_iovecs(iov, cnt) };
    send_slices(fd, flags, bufs)
}

pub(crate) fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    #[allow(unsafe_code)]
    // SAFETY: recvmsg(2) requires a valid msghdr.
    let Some((iov, cnt)) = (unsafe { sys::msg_parts(msg) }) else {
        return Action::Fail(libc::EFAULT);
    };
    if cnt > libc::UIO_MAXIOV as usize {
        return Action::Fail(libc::EMSGSIZE);
    }
    #[allow(unsafe_code)]
    // SAFETY: the msghdr's iovecs, valid as recvmsg(2) requires.
    let bufs = unsafe { sys::out_iovecs(iov, cnt) };
    let r = recv_slices(fd, flags, bufs);
    if matches!(r, Action::Done(_)) {
        #[allow(unsafe_code)]
        // SAFETY: as above.
        unsafe {
            sys::msg_clear_out(msg)
        };
    }
    r
}

// The fortified variants. glibc's `__read_chk` aborts ("buffer overflow
// detected") when `nbytes > buflen`, before any I/O; passing such a call
// through to the real `__read_chk` keeps that abort for our fds too.

pub(crate) fn read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> Action<ssize_t> {
    if n > buflen {
        return Action::Pass;
    }
    recv_buf(fd, buf, n, 0)
}

pub(crate) fn recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> Action<ssize_t> {
    if len > buflen {
        return Action::Pass;
    }
    recv_buf(fd, buf, len, flags)
}

pub(crate) fn recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> Action<ssize_t> {
    if len > buflen {
        return Action::Pass;
    }
    recvfrom(fd, buf, len, flags, addr, addrlen)
}

/// sendfile(2) to an emulated socket: the file's bytes go through the ring
/// (read from `in_fd` at `*offset`, or at its file position when `offset`
/// is null, as the kernel does), up to `count`; returns what was sent.
pub(crate) fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> Action<ssize_t> {
    let Some(sock) = registry::get(out_fd) else {
        return Action::Pass;
    };
    let Socket::Stream(conn) = &*sock else {
        return Action::Fail(libc::ENOTCONN);
    };
    // As the kernel: the source must be a file that can be mapped (a
    // regular file or a block device), never a pipe or a socket (reading
    // one of ours raw would take its doorbell bytes as data).
    let size = match rustix::fs::fstat(sys::borrow_fd(in_fd)) {
        Ok(st) => {
            let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
            if !matches!(
                kind,
                rustix::fs::FileType::RegularFile | rustix::fs::FileType::BlockDevice
            ) {
                return Action::Fail(libc::EINVAL);
            }
            (kind == rustix::fs::FileType::RegularFile).then_some(st.st_size as u64)
        }
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    #[allow(unsafe_code)]
    // SAFETY: sendfile(2) requires `offset` null or valid for read/write.
    let mut pos = match unsafe { sys::get_off(offset) } {
        Ok(p) => p,
        Err(e) => return Action::Fail(e),
    };
    // At the end of the file: 0, whatever the socket's state (the kernel
    // reads before it writes).
    let at = pos
        .or_else(|| rustix::fs::seek(sys::borrow_fd(in_fd), rustix::fs::SeekFrom::Current(0)).ok());
    if count == 0 || matches!((at, size), (Some(a), Some(s)) if a >= s) {
        return Action::Done(0);
    }
    // The file is read straight into the ring: one copy, as the kernel's
    // sendfile makes one into a socket buffer.
    let mut sent = 0usize;
    let mut failed: Option<c_int> = None;
    // The file ran out (a short read): stop, rather than wait for ring room
    // for bytes that are not there.
    let mut ended = false;
    while sent < count && !ended {
        let mut off = pos;
        let r = conn.send_from(count - sent, false, |dst, len| {
            #[allow(unsafe_code)]
            // SAFETY: the ring hands us `len` writable bytes at `dst`.
            match unsafe { sys::read_into(in_fd, dst, len, off) } {
                Ok(k) => {
                    if let Some(o) = off.as_mut() {
                        *o += k as u64;
                    }
                    if k < len {
                        ended = true;
                    }
                    k
                }
                Err(e) => {
                    failed = Some(e);
                    ended = true;
                    0
                }
            }
        });
        match r {
            Ok(0) => break,
            Ok(n) => {
                sent += n;
                pos = off;
            }
            Err(e) if sent == 0 => {
                if e == Errno::PIPE {
                    sys::raise_sigpipe();
                }
                return Action::Fail(e.raw_os_error());
            }
            Err(_) => break,
        }
    }
    if sent == 0 {
        if let Some(e) = failed {
            return Action::Fail(e);
        }
    }
    if let Some(p) = pos {
        #[allow(unsafe_code)]
        // SAFETY: as above.
        unsafe {
            sys::put_off(offset, p)
        };
    }
    Action::Done(sent as ssize_t)
}

/// splice(2) with an emulated connection on one end: through a bounce
/// buffer. Into the connection, only what the ring can take is read from
/// the pipe (a pipe cannot be given bytes back); out of it, the bytes are
/// peeked, written to the pipe, and only what the pipe took is consumed.
pub(crate) fn splice(
    fd_in: c_int,
    off_in: *mut libc::loff_t,
    fd_out: c_int,
    off_out: *mut libc::loff_t,
    len: size_t,
    flags: core::ffi::c_uint,
) -> Action<ssize_t> {
    let (sock_in, sock_out) = (registry::get(fd_in), registry::get(fd_out));
    if sock_in.is_none() && sock_out.is_none() {
        return Action::Pass;
    }
    if sock_in.is_some() && sock_out.is_some() {
        return Action::Fail(libc::EINVAL); // the kernel needs a pipe on one end
    }
    let nonblock = flags & libc::SPLICE_F_NONBLOCK != 0;
    let mut buf = vec![0u8; len.min(64 << 10)];
    if let Some(sock) = sock_out {
        let Socket::Stream(conn) = &*sock else {
            return Action::Fail(libc::ENOTCONN);
        };
        if !off_in.is_null() || !off_out.is_null() {
            return Action::Fail(libc::ESPIPE); // pipe and socket have no offsets
        }
        let dontwait = if nonblock { libc::MSG_DONTWAIT } else { 0 };
        // Wait (as send would) until the ring has room, then read no more
        // than that from the pipe.
        let room = match conn.room(dontwait != 0) {
            Ok(r) => r.min(buf.len()),
            Err(e) => return Action::Fail(e.raw_os_error()),
        };
        let pipe = sys::borrow_fd(fd_in);
        // SPLICE_F_NONBLOCK covers the pipe too: an empty one is EAGAIN.
        if nonblock && !pipe_ready(pipe, rustix::event::PollFlags::IN) {
            return Action::Fail(libc::EAGAIN);
        }
        let got = match rustix::io::read(pipe, &mut buf[..room]) {
            Ok(n) => n,
            Err(e) => return Action::Fail(e.raw_os_error()),
        };
        if got == 0 {
            return Action::Done(0);
        }
        return match conn.send(&[IoSlice::new(&buf[..got])], libc::MSG_NOSIGNAL) {
            Ok(n) => Action::Done(n as ssize_t),
            Err(e) => {
                if e == Errno::PIPE {
                    sys::raise_sigpipe();
                }
                Action::Fail(e.raw_os_error())
            }
        };
    }
    let Some(sock) = sock_in else {
        return Action::Pass;
    };
    let Socket::Stream(conn) = &*sock else {
        return Action::Fail(libc::ENOTCONN);
    };
    if !off_in.is_null() || !off_out.is_null() {
        return Action::Fail(libc::ESPIPE);
    }
    let pipe = sys::borrow_fd(fd_out);
    // Non-blocking: no more than the pipe has room for (a write of that
    // much does not block); a full pipe is EAGAIN.
    if nonblock {
        let cap = rustix::pipe::fcntl_getpipe_size(pipe).unwrap_or(buf.len());
        let queued = rustix::io::ioctl_fionread(pipe).map_or(0, |n| n as usize);
        let space = cap.saturating_sub(queued);
        if space == 0 {
            return Action::Fail(libc::EAGAIN);
        }
        buf.truncate(space.min(buf.len()));
    }
    let peek = libc::MSG_PEEK | if nonblock { libc::MSG_DONTWAIT } else { 0 };
    let got = match conn.recv(&mut [IoSliceMut::new(&mut buf)], peek) {
        Ok(n) => n,
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    if got == 0 {
        return Action::Done(0);
    }
    let put = match rustix::io::write(pipe, &buf[..got]) {
        Ok(n) => n,
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    // Consume exactly what the pipe took (it is there: we peeked it).
    let mut sink = vec![0u8; put];
    match conn.recv(&mut [IoSliceMut::new(&mut sink)], libc::MSG_DONTWAIT) {
        Ok(_) => Action::Done(put as ssize_t),
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

/// Whether `pipe` is ready for `what` right now (poll with no wait).
fn pipe_ready(pipe: std::os::fd::BorrowedFd<'_>, what: rustix::event::PollFlags) -> bool {
    let mut fds = [rustix::event::PollFd::new(&pipe, what)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).is_ok_and(|n| n > 0)
}
