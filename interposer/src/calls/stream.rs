//! Stream data on emulated connections: every read and write call, the
//! fortified variants included, goes through `recv`/`send` here.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::io::{IoSlice, IoSliceMut};

use libc::{size_t, ssize_t};
use rustix::io::Errno;

use crate::platform::fdtable;
use crate::platform::real::Action;
use crate::platform::sys::{
    self, FileOffset, InBuf, InIovecs, InMsg, Mmsgs, OutBuf, OutIovecs, OutLen, OutMsg,
};
use crate::sockets::conn::{Connection, FastSend};
use crate::sockets::registry;
use crate::sockets::socket::Socket;

/// The shared body of the single-buffer receive calls.
fn recv_buf(fd: c_int, buf: OutBuf<'_>, flags: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass; // the pass-through fast path: one atomic load
    }
    match buf.bytes() {
        Ok(b) => recv_slices(fd, flags, &mut [IoSliceMut::new(b)]),
        Err(e) => Action::Fail(e),
    }
}

/// The shared body of the single-buffer send calls.
fn send_buf(fd: c_int, buf: InBuf<'_>, flags: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    match buf.bytes() {
        Ok(b) => send_slices(fd, flags, &[IoSlice::new(b)]),
        Err(e) => Action::Fail(e),
    }
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
    let wait = flags & libc::MSG_DONTWAIT == 0;
    let Some(sock) = crate::sockets::connecting::get_waiting(fd, wait) else {
        // Closed by another thread since: what went in was sent.
        return if sent > 0 {
            Action::Done(sent as ssize_t)
        } else {
            Action::Pass
        };
    };
    if sock.datagram().is_some() {
        return crate::calls::datagram::send_plain(&sock, bufs);
    }
    let Some(conn) = sock.connection() else {
        return not_connected(fd, &sock, Some(flags));
    };
    match conn.send_rest(bufs, flags, sent) {
        Ok(n) => {
            sock.queue_for_trim();
            Action::Done(n as ssize_t)
        }
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
    let wait = flags & libc::MSG_DONTWAIT == 0;
    let Some(sock) = crate::sockets::connecting::get_waiting(fd, wait) else {
        return Action::Pass;
    };
    if sock.datagram().is_some() {
        return crate::calls::datagram::recv_plain(fd, &sock, flags, bufs);
    }
    let Some(conn) = sock.connection() else {
        return not_connected(fd, &sock, None);
    };
    match conn.recv(sys::borrow_fd(fd), bufs, flags) {
        Ok(n) => Action::Done(n as ssize_t),
        Err(e) => Action::Fail(e.raw_os_error()),
    }
}

/// A data call on a socket of ours that is no connection (`send`: a send's
/// flags): a connect in progress says EAGAIN (TCP in SYN_SENT,
/// non-blocking), a failed one its error once, then what a TCP socket
/// closed by its failed handshake says (end of file; EPIPE and SIGPIPE);
/// anything else ENOTCONN.
fn not_connected(fd: c_int, sock: &Socket, send: Option<c_int>) -> Action<ssize_t> {
    match sock {
        Socket::Connecting(c) if !c.failed() => Action::Fail(libc::EAGAIN),
        Socket::Connecting(c) => match (crate::sockets::connecting::take_error(fd, c), send) {
            (0, None) => Action::Done(0),
            (0, Some(flags)) => {
                if flags & libc::MSG_NOSIGNAL == 0 {
                    sys::raise_sigpipe();
                }
                Action::Fail(libc::EPIPE)
            }
            (e, _) => Action::Fail(e),
        },
        _ => Action::Fail(libc::ENOTCONN),
    }
}

pub(crate) fn read(fd: c_int, buf: OutBuf<'_>) -> Action<ssize_t> {
    recv_buf(fd, buf, 0)
}

pub(crate) fn write(fd: c_int, buf: InBuf<'_>) -> Action<ssize_t> {
    send_buf(fd, buf, 0)
}

/// send, and sendto: on a connected TCP socket the destination address is
/// ignored.
pub(crate) fn send(fd: c_int, buf: InBuf<'_>, flags: c_int) -> Action<ssize_t> {
    send_buf(fd, buf, flags)
}

pub(crate) fn recv(fd: c_int, buf: OutBuf<'_>, flags: c_int) -> Action<ssize_t> {
    recv_buf(fd, buf, flags)
}

/// TCP reports no source address: `*addrlen` becomes 0.
pub(crate) fn recvfrom(
    fd: c_int,
    buf: OutBuf<'_>,
    flags: c_int,
    addrlen: OutLen<'_>,
) -> Action<ssize_t> {
    let r = recv_buf(fd, buf, flags);
    if matches!(r, Action::Done(_)) {
        addrlen.clear();
    }
    r
}

fn iov_count(cnt: c_int) -> Result<usize, Errno> {
    usize::try_from(cnt)
        .ok()
        .filter(|&n| n <= libc::UIO_MAXIOV as usize)
        .ok_or(Errno::INVAL)
}

/// readv: `iovcnt` as the caller gave it (checked here, as the kernel
/// does: EINVAL outside 0..=UIO_MAXIOV).
pub(crate) fn readv(fd: c_int, iov: OutIovecs<'_>, iovcnt: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    if let Err(e) = iov_count(iovcnt) {
        return Action::Fail(e.raw_os_error());
    }
    match iov.slices() {
        Ok(bufs) => recv_slices(fd, 0, bufs),
        Err(e) => Action::Fail(e),
    }
}

pub(crate) fn writev(fd: c_int, iov: InIovecs<'_>, iovcnt: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    if let Err(e) = iov_count(iovcnt) {
        return Action::Fail(e.raw_os_error());
    }
    match iov.slices() {
        Ok(bufs) => send_slices(fd, 0, bufs),
        Err(e) => Action::Fail(e),
    }
}

pub(crate) fn sendmsg(fd: c_int, msg: InMsg<'_>, flags: c_int) -> Action<ssize_t> {
    // An epoll set of ours passed to another process may be waited on
    // there, past us: its flags go up for good first.
    if crate::sockets::readiness::any_set() {
        crate::sockets::readiness::sent(&msg.rights());
    }
    let Some(iov) = msg.iovecs() else {
        return if fdtable::is_owned(fd) {
            Action::Fail(libc::EFAULT)
        } else {
            Action::Pass
        };
    };
    let slices = || iov.slices().map(|s| s.to_vec());
    if let Some(done) = crate::calls::datagram::send(fd, msg.name(), slices) {
        return done;
    }
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    match iov.slices() {
        Ok(bufs) => send_slices(fd, flags, bufs),
        Err(e) => Action::Fail(e),
    }
}

/// Whether `fd` is an emulated stream socket of ours (sendmmsg goes
/// through the stream send path then, not the datagram one).
pub(crate) fn is_ours(fd: c_int) -> bool {
    fdtable::is_owned(fd) && registry::get(fd).is_some_and(|s| s.datagram().is_none())
}

/// sendmmsg on a stream socket of ours (the datagram path took it for a
/// Unix socket of its own, and it went past us into the doorbell
/// connection: the peer reset it). As kernel TCP: each message as a
/// sendmsg, until one fails or goes in part; a failure after the first is
/// not reported (its SIGPIPE is raised), the count is.
pub(crate) fn sendmmsg(fd: c_int, v: Mmsgs<'_>, flags: c_int) -> Action<c_int> {
    let mut sent = 0usize;
    for i in 0..v.len().min(libc::UIO_MAXIOV as usize) {
        let Some(iov) = v.sent(i).iovecs() else {
            return Action::Fail(libc::EFAULT);
        };
        let bufs = match iov.slices() {
            Ok(bufs) => bufs,
            Err(e) => return Action::Fail(e),
        };
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        match send_slices(fd, flags, bufs) {
            Action::Done(n) => {
                v.set_len(i, n as usize);
                sent += 1;
                if (n as usize) < want {
                    break;
                }
            }
            Action::Fail(e) if sent == 0 => return Action::Fail(e),
            Action::Pass if sent == 0 => return Action::Pass,
            _ => break,
        }
    }
    Action::Done(sent as c_int)
}

pub(crate) fn recvmsg(fd: c_int, msg: OutMsg<'_>, flags: c_int) -> Action<ssize_t> {
    if !fdtable::is_owned(fd) {
        return Action::Pass;
    }
    let msg = match crate::calls::datagram::recvmsg(fd, msg, flags) {
        Ok(done) => return done,
        Err(msg) => msg,
    };
    let Some((iov, tail)) = msg.parts() else {
        return Action::Fail(libc::EFAULT);
    };
    let bufs = match iov.slices() {
        Ok(bufs) => bufs,
        Err(e) => return Action::Fail(e),
    };
    let r = recv_slices(fd, flags, bufs);
    if matches!(r, Action::Done(_)) {
        tail.clear_out();
    }
    r
}

// The fortified variants. glibc's `__read_chk` aborts ("buffer overflow
// detected") when `nbytes > buflen`, before any I/O; passing such a call
// through to the real `__read_chk` keeps that abort for our fds too.

pub(crate) fn read_chk(fd: c_int, buf: OutBuf<'_>, n: size_t, buflen: size_t) -> Action<ssize_t> {
    if n > buflen {
        return Action::Pass;
    }
    recv_buf(fd, buf, 0)
}

pub(crate) fn recv_chk(
    fd: c_int,
    buf: OutBuf<'_>,
    len: size_t,
    buflen: size_t,
    flags: c_int,
) -> Action<ssize_t> {
    if len > buflen {
        return Action::Pass;
    }
    recv_buf(fd, buf, flags)
}

pub(crate) fn recvfrom_chk(
    fd: c_int,
    buf: OutBuf<'_>,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addrlen: OutLen<'_>,
) -> Action<ssize_t> {
    if len > buflen {
        return Action::Pass;
    }
    recvfrom(fd, buf, flags, addrlen)
}

/// sendfile(2) to an emulated socket: the file's bytes go through the ring
/// (read from `in_fd` at `*offset`, or at its file position when `offset`
/// is null, as the kernel does), up to `count`; returns what was sent.
pub(crate) fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: FileOffset<'_>,
    count: size_t,
) -> Action<ssize_t> {
    let Some(sock) = registry::get(out_fd) else {
        return Action::Pass;
    };
    let Some(conn) = sock.connection() else {
        return Action::Fail(libc::ENOTCONN);
    };
    // A file the program's own fstat found mappable (`file_kinds`: nginx
    // fstats each file just before it sends it), into a ring with room:
    // no fstat here, the read finds the end of the file. Otherwise (and
    // when the send fails, below) the kernel's checks as they are.
    let mut pos = match offset.get() {
        Ok(p) => p,
        Err(e) => return Action::Fail(e),
    };
    // Only with an offset: pread on a number that no longer names a file
    // fails (ESPIPE, EISDIR) without taking data or blocking.
    let known = pos.is_some() && crate::platform::file_kinds::mappable(in_fd) && conn.has_room();
    let size = if known {
        None
    } else {
        match mappable_size(in_fd) {
            Ok(size) => size,
            Err(e) => return Action::Fail(e),
        }
    };
    if count == 0 || (!known && at_end(in_fd, pos, size)) {
        return Action::Done(0);
    }
    let (sent, failed) = match copy_file(conn, in_fd, count, &mut pos) {
        Ok(done) => done,
        Err(e) => {
            // At the end of the file: 0, whatever the socket's state (the
            // kernel reads before it writes).
            if known && mappable_size(in_fd).is_ok_and(|size| at_end(in_fd, pos, size)) {
                return Action::Done(0);
            }
            if e == Errno::PIPE {
                sys::raise_sigpipe();
            }
            return Action::Fail(e.raw_os_error());
        }
    };
    if sent == 0 {
        if let Some(e) = failed {
            if known {
                if let Err(e) = mappable_size(in_fd) {
                    return Action::Fail(e);
                }
            }
            return Action::Fail(e);
        }
    }
    if let Some(p) = pos {
        offset.put(p);
    }
    sock.queue_for_trim();
    Action::Done(sent as ssize_t)
}

/// Whether a read of `in_fd` (a regular file of `size` bytes when known)
/// at `pos`, or at its file position, is at or past the end.
fn at_end(in_fd: c_int, pos: Option<u64>, size: Option<u64>) -> bool {
    let Some(size) = size else {
        return false;
    };
    let at = pos
        .or_else(|| rustix::fs::seek(sys::borrow_fd(in_fd), rustix::fs::SeekFrom::Current(0)).ok());
    at.is_some_and(|a| a >= size)
}

/// As the kernel: the source of sendfile must be a file that can be mapped
/// (a regular file or a block device), never a pipe or a socket (reading
/// one of ours raw would take its doorbell bytes as data). Its size, for a
/// regular file. Noted for the next sendfile from `in_fd` (`file_kinds`).
fn mappable_size(in_fd: c_int) -> Result<Option<u64>, c_int> {
    let st = rustix::fs::fstat(sys::borrow_fd(in_fd)).map_err(|e| e.raw_os_error())?;
    crate::platform::file_kinds::stat_found(in_fd, st.st_mode);
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if !matches!(
        kind,
        rustix::fs::FileType::RegularFile | rustix::fs::FileType::BlockDevice
    ) {
        return Err(libc::EINVAL);
    }
    Ok((kind == rustix::fs::FileType::RegularFile).then_some(st.st_size as u64))
}

/// Up to `count` bytes of `in_fd` (from `*pos`, or its file position)
/// into the connection: what was sent and the read error that stopped it,
/// or the connection's error when nothing was sent.
fn copy_file(
    conn: &Connection,
    in_fd: c_int,
    count: usize,
    pos: &mut Option<u64>,
) -> Result<(usize, Option<c_int>), Errno> {
    // The file is read straight into the ring: one copy, as the kernel's
    // sendfile makes one into a socket buffer.
    let mut sent = 0usize;
    let mut failed: Option<c_int> = None;
    // The file ran out (a short read): stop, rather than wait for ring room
    // for bytes that are not there.
    let mut ended = false;
    if let Some(n) = conn.first_send_after_close(count) {
        return Ok((skip_file(in_fd, n, pos), None));
    }
    while sent < count && !ended {
        let mut off = *pos;
        let r = conn.send_from(count - sent, false, |dst| {
            let len = dst.len();
            match sys::read_into(in_fd, dst, off) {
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
                *pos = off;
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok((sent, failed))
}

/// sendfile's first send after the peer's close (`first_send_after_close`):
/// up to `n` bytes of the file are read as the kernel's sendfile reads
/// them (its position or `pos` moves), and go nowhere. Returns how many.
fn skip_file(in_fd: c_int, n: usize, pos: &mut Option<u64>) -> usize {
    let mut buf = vec![0u8; n.min(64 << 10)];
    let mut done = 0;
    while done < n {
        let want = (n - done).min(buf.len());
        let fd = sys::borrow_fd(in_fd);
        let r = match *pos {
            Some(at) => rustix::io::pread(fd, &mut buf[..want], at),
            None => rustix::io::read(fd, &mut buf[..want]),
        };
        match r {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                done += k;
                if let Some(at) = pos.as_mut() {
                    *at += k as u64;
                }
            }
        }
    }
    done
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
    if !off_in.is_null() || !off_out.is_null() {
        // Pipe and socket have no offsets (checked after the socket's kind).
        let sock = sock_in.as_ref().or(sock_out.as_ref());
        if sock.is_some_and(|s| s.connection().is_some()) {
            return Action::Fail(libc::ESPIPE);
        }
    }
    let buf = vec![0u8; len.min(64 << 10)];
    match (sock_in, sock_out) {
        (None, Some(sock)) => match &*sock {
            Socket::Stream(conn) => splice_into(conn, sys::borrow_fd(fd_in), nonblock, buf),
            _ => Action::Fail(libc::ENOTCONN),
        },
        (Some(sock), None) => match &*sock {
            Socket::Stream(conn) => splice_out_of(
                conn,
                sys::borrow_fd(fd_in),
                sys::borrow_fd(fd_out),
                nonblock,
                buf,
            ),
            _ => Action::Fail(libc::ENOTCONN),
        },
        _ => Action::Pass,
    }
}

/// splice from a pipe into a connection: wait (as send would) until the
/// ring has room, then read no more than that from the pipe.
fn splice_into(
    conn: &Connection,
    pipe: std::os::fd::BorrowedFd<'_>,
    nonblock: bool,
    mut buf: Vec<u8>,
) -> Action<ssize_t> {
    let room = match conn.room(nonblock) {
        Ok(r) => r.min(buf.len()),
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    // SPLICE_F_NONBLOCK covers the pipe too: an empty one is EAGAIN.
    if nonblock && !pipe_ready(pipe, rustix::event::PollFlags::IN) {
        return Action::Fail(libc::EAGAIN);
    }
    // An empty pipe blocks: outside the library (a handler that comes
    // meanwhile runs, as the kernel's splice lets it; no lock is held).
    let got = match crate::platform::guard::suspended(|| rustix::io::read(pipe, &mut buf[..room])) {
        Ok(n) => n,
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    if got == 0 {
        return Action::Done(0);
    }
    match conn.send(&[IoSlice::new(&buf[..got])], libc::MSG_NOSIGNAL) {
        Ok(n) => Action::Done(n as ssize_t),
        Err(e) => {
            if e == Errno::PIPE {
                sys::raise_sigpipe();
            }
            Action::Fail(e.raw_os_error())
        }
    }
}

/// splice from a connection into a pipe: the bytes are peeked, written to
/// the pipe, and only what the pipe took is consumed.
fn splice_out_of(
    conn: &Connection,
    from: std::os::fd::BorrowedFd<'_>,
    pipe: std::os::fd::BorrowedFd<'_>,
    nonblock: bool,
    mut buf: Vec<u8>,
) -> Action<ssize_t> {
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
    let got = match conn.recv(from, &mut [IoSliceMut::new(&mut buf)], peek) {
        Ok(n) => n,
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    if got == 0 {
        return Action::Done(0);
    }
    // A full pipe blocks: outside the library, as above.
    let put = match crate::platform::guard::suspended(|| rustix::io::write(pipe, &buf[..got])) {
        Ok(n) => n,
        Err(e) => return Action::Fail(e.raw_os_error()),
    };
    // Consume exactly what the pipe took (it is there: we peeked it).
    let mut sink = vec![0u8; put];
    match conn.recv(from, &mut [IoSliceMut::new(&mut sink)], libc::MSG_DONTWAIT) {
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
