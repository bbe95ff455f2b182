//! Non-blocking connects in progress (`Socket::Connecting`): a reuse offer
//! sent, the acceptor's answer not seen yet (`conn::Offered`). Any call
//! on the fd that needs the connection looks first (`get`): answered, the
//! registry's entry becomes the connection; still waiting, the caller
//! answers as the kernel does for a TCP socket in SYN_SENT (EALREADY,
//! EAGAIN, ENOTCONN, SO_ERROR 0); failed, ECONNREFUSED once.
//!
//! The application's fd is the Unix connection all along, unwritable
//! until the acceptor answered (the filler, `handshake::send_offer`): its
//! own poll, select and epoll — and ours, which ask the kernel about a
//! connecting fd — report POLLOUT/EPOLLOUT when the connect completed.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::platform::{stats, sys};
use crate::sockets::conn::{Settled, OFFER_PATIENCE};
use crate::sockets::quiet::{self, Quiet, Trim};
use crate::sockets::registry;
use crate::sockets::socket::Socket;
use crate::sockets::wait::Limit;

/// The socket behind `fd`, a connect in progress looked at first.
pub(crate) fn get(fd: c_int) -> Option<Arc<Socket>> {
    let sock = registry::get(fd)?;
    Some(settle(fd, sock))
}

/// `sock` (behind `fd`), or what it became: a connect in progress that
/// the acceptor answered is now the connection.
pub(crate) fn settle(fd: c_int, sock: Arc<Socket>) -> Arc<Socket> {
    settle_or_expire(fd, sock, false)
}

/// Gives up waiting for the acceptor of the connect in progress `sock`
/// (behind `fd`) once `OFFER_PATIENCE` has passed: the wait engine visits
/// it then (`quiet`), so a program asleep in our poll, select or
/// epoll_wait sees its connect complete as over kernel TCP, where the
/// listen backlog completes it before accept.
pub(crate) fn watch(fd: c_int, sock: &Arc<Socket>) {
    let Socket::Connecting(c) = &**sock else {
        return;
    };
    let timer: Arc<dyn Trim> = Arc::new(Expiry {
        fd,
        sock: Arc::downgrade(sock),
    });
    let weak = Arc::downgrade(&timer);
    *c.timer.lock() = Some(timer);
    quiet::visit_in(weak, OFFER_PATIENCE);
}

/// The visit that gives up waiting (see `watch`).
struct Expiry {
    fd: c_int,
    sock: Weak<Socket>,
}

impl Trim for Expiry {
    fn trim_quiet(&self, _: u64) -> Quiet {
        let Some(sock) = self.sock.upgrade() else {
            return Quiet::Done;
        };
        let Socket::Connecting(c) = &*sock else {
            return Quiet::Done;
        };
        // Any number of the application's for it (`fd` may be closed and
        // a dup left); `settle_or_expire` looks again under the lock.
        let numbers = c.numbers();
        let fd = if numbers.contains(&self.fd) {
            Some(self.fd)
        } else {
            numbers.first().copied()
        };
        if let Some(fd) = fd {
            settle_or_expire(fd, sock, true);
        }
        Quiet::Done
    }
}

/// `get`, for a call that would block (`wait`: a blocking fd, no
/// MSG_DONTWAIT): a connect in progress is waited for, as the kernel's
/// send, recv and connect wait for the handshake (sk_stream_wait_connect),
/// until the acceptor answers (the fd writable) or `OFFER_PATIENCE` has
/// passed — then given up on for a new segment, which completes at once.
pub(crate) fn get_waiting(fd: c_int, wait: bool) -> Option<Arc<Socket>> {
    let sock = get(fd)?;
    if !wait || !matches!(&*sock, Socket::Connecting(c) if !c.failed()) || nonblocking(fd) {
        return Some(sock);
    }
    let ms = OFFER_PATIENCE.as_millis().max(1) as c_int;
    let _ = sys::poll_fd(sys::borrow_fd(fd), libc::POLLOUT, ms);
    Some(settle_or_expire(fd, sock, true))
}

fn nonblocking(fd: c_int) -> bool {
    rustix::fs::fcntl_getfl(sys::borrow_fd(fd))
        .map_or(true, |f| f.contains(rustix::fs::OFlags::NONBLOCK))
}

fn settle_or_expire(fd: c_int, sock: Arc<Socket>, expire: bool) -> Arc<Socket> {
    let Socket::Connecting(c) = &*sock else {
        return sock;
    };
    let mut slot = c.offer.lock();
    let Some(offer) = slot.take() else {
        drop(slot);
        // Failed, or another thread completed it: the registry knows.
        return match registry::get(fd) {
            Some(now) => now,
            None => sock,
        };
    };
    // Looked at only while `fd` is still the application's number for it
    // (not closed and given to another file).
    let (named, looked) = registry::while_naming(fd, &sock, |named| {
        if named {
            (true, offer.settle(sys::borrow_fd(fd)))
        } else {
            (false, Settled::Waiting(offer))
        }
    });
    let settled = match looked {
        Settled::Waiting(o) if !named => {
            *slot = Some(o);
            drop(slot);
            return registry::get(fd).unwrap_or(sock);
        }
        Settled::Waiting(o) if expire => o.expire(),
        s => s,
    };
    let (mut conn, redialed) = match settled {
        Settled::Waiting(o) => {
            *slot = Some(o);
            drop(slot);
            return sock;
        }
        Settled::Failed(e) => {
            log!(
                debug,
                "connect(fd {fd}) to {}: failed after EINPROGRESS ({e})",
                c.peer
            );
            fail(c, e);
            drop(slot);
            return sock;
        }
        Settled::Done(conn) => (conn, None),
        Settled::Redialed(new, conn) => (conn, Some(new)),
    };
    // Options set while it was connecting (on the `Connecting`'s copy).
    conn.opts = c.opts.snapshot_copy();
    conn.completed_late.store(true, Ordering::Relaxed);
    log!(
        debug,
        "fd {fd}: connected {} -> {} through shared memory (completed)",
        conn.local,
        c.peer
    );
    let cloexec = c.cloexec.load(Ordering::Relaxed);
    let stream = Arc::new(Socket::Stream(conn));
    if !cloexec {
        stream.set_cloexec(false);
    }
    if redialed.is_some() {
        // The new Unix connection takes the application's numbers; the
        // registrations of the old one go with it (`carry`), made again
        // below.
        for n in c.numbers() {
            crate::sockets::carry::detach(n);
        }
    }
    let numbers = registry::complete(
        &sock,
        &stream,
        || c.numbers(),
        |n| match &redialed {
            None => true,
            Some(new) => {
                // The abandoned Unix connection is shut for every holder (a
                // forked child may keep it open): an acceptor that cannot
                // see the withdrawal (another process keeps the segment)
                // then fails its decline (EPIPE) and takes the next
                // connection, or, if its decline came first, its accept
                // returns a connection already hung up — never one that
                // stays open with nobody behind it (review s30's fork race).
                let _ = rustix::net::shutdown(sys::borrow_fd(n), rustix::net::Shutdown::Both);
                let cloexec = rustix::io::fcntl_getfd(sys::borrow_fd(n))
                    .map_or(cloexec, |f| f.contains(rustix::io::FdFlags::CLOEXEC));
                // (The application's blocking mode, which it may have
                // changed since: the redial's is non-blocking.)
                let _ = rustix::io::ioctl_fionbio(new, nonblocking(n));
                match sys::dup_onto(new.as_fd(), n, cloexec) {
                    Ok(()) => true,
                    Err(e) => {
                        log!(
                            debug,
                            "connect(fd {n}): cannot take the new connection ({e})"
                        );
                        fail(c, e);
                        false
                    }
                }
            }
        },
    );
    drop(slot);
    for &n in &numbers {
        if redialed.is_some() {
            // A new file under the number: its registrations made again.
            crate::sockets::readiness::replay_carried(n, false);
        } else {
            // Registrations made while connecting are the kernel's only (on
            // this very file): the connection becomes a member of those
            // sets, as an inherited one does after exec, without a system
            // call; then the events it hid are put back (after: the
            // membership's first `watch` takes stale doorbell bytes, which
            // an ADD before it reported as EPOLLIN, s30).
            for (epfd, ev) in crate::sockets::carry::take(n, false) {
                crate::sockets::readiness::adopt(epfd, &[(n, ev.events, ev.u64)]);
                crate::sockets::readiness::restore_hidden(epfd, n, ev);
            }
        }
    }
    if numbers.is_empty() {
        // Closed meanwhile (the connection goes with `stream`).
        return registry::get(fd).unwrap_or(sock);
    }
    stats::count(stats::Outcome::Shm);
    stream
}

/// The error of the failed connect `c` behind `fd`, taken: reported once
/// (by SO_ERROR, recv, send or a second connect), 0 after. The Unix
/// socket's own error goes with it (a refusal's ECONNRESET, `refusal`), so
/// that poll stops saying POLLERR, as the kernel's does once it was read.
pub(crate) fn take_error(fd: c_int, c: &crate::sockets::socket::Connecting) -> c_int {
    let e = c.error.swap(0, Ordering::Relaxed);
    if e != 0 {
        let _ = rustix::net::sockopt::socket_error(sys::borrow_fd(fd));
    }
    e
}

/// The connect failed with `e`: reported once, by SO_ERROR or a second
/// connect.
fn fail(c: &crate::sockets::socket::Connecting, e: rustix::io::Errno) {
    c.error.store(e.raw_os_error(), Ordering::Relaxed);
    c.failed.store(true, Ordering::Release);
}

/// A wait of the application's on fds none of which is a connection of
/// ours (`real`, given how long it may sleep), while a connect of this
/// process is in progress: cut when the next one is due to give up
/// waiting for its acceptor (`watch`), the due ones visited (a completed
/// one is a new file under its number, which the next `real` sees), and
/// the wait goes on until `limit` or an event.
pub(crate) fn wait_around(limit: Limit, mut real: impl FnMut(Limit) -> c_int) -> c_int {
    loop {
        let (cut, due) = crate::sockets::wait::cut_for_quiet(limit);
        let n = real(cut);
        if n != 0 || !due {
            return n;
        }
        quiet::run();
        if limit.now() {
            return 0;
        }
    }
}

/// Whether a wait must go through `wait_around`.
pub(crate) fn in_progress() -> bool {
    crate::sockets::conn::offers_waiting()
}
