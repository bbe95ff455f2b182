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
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::platform::{stats, sys};
use crate::sockets::conn::Settled;
use crate::sockets::registry;
use crate::sockets::socket::Socket;

/// The socket behind `fd`, a connect in progress looked at first.
pub(crate) fn get(fd: c_int) -> Option<Arc<Socket>> {
    let sock = registry::get(fd)?;
    Some(settle(fd, sock))
}

/// `sock` (behind `fd`), or what it became: a connect in progress that
/// the acceptor answered is now the connection.
pub(crate) fn settle(fd: c_int, sock: Arc<Socket>) -> Arc<Socket> {
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
    let conn = match offer.settle(sys::borrow_fd(fd)) {
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
            c.error.store(e.raw_os_error(), Ordering::Relaxed);
            c.failed.store(true, Ordering::Release);
            drop(slot);
            return sock;
        }
        Settled::Done(conn) => conn,
    };
    conn.completed_late.store(true, Ordering::Relaxed);
    log!(
        debug,
        "fd {fd}: connected {} -> {} through shared memory (completed)",
        conn.local,
        c.peer
    );
    let stream = Arc::new(Socket::Stream(conn));
    if !c.cloexec.load(Ordering::Relaxed) {
        stream.set_cloexec(false);
    }
    if registry::insert(fd, stream.clone()).is_err() {
        drop(slot);
        return sock;
    }
    drop(slot);
    // Registrations made while connecting are the kernel's only (on this
    // very file): the connection becomes a member of those sets, as an
    // inherited one does after exec, without a system call.
    for (epfd, ev) in crate::sockets::carry::take(fd, false) {
        crate::sockets::readiness::adopt(epfd, &[(fd, ev.events, ev.u64)]);
    }
    stats::count(stats::Outcome::Shm);
    stream
}
