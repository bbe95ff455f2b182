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
        // Only while `fd` still names it (not closed and reused).
        if registry::get(self.fd).is_some_and(|now| Arc::ptr_eq(&now, &sock)) {
            settle_or_expire(self.fd, sock, true);
        }
        Quiet::Done
    }
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
    let settled = match offer.settle(sys::borrow_fd(fd)) {
        Settled::Waiting(o) if expire => o.expire(),
        s => s,
    };
    let (conn, redialed) = match settled {
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
        Settled::Done(conn) => (conn, None),
        Settled::Redialed(new, conn) => (conn, Some(new)),
    };
    let cloexec = c.cloexec.load(Ordering::Relaxed);
    if let Some(new) = &redialed {
        // The new Unix connection takes the application's number; the
        // registrations of the old one go with it (`carry`), made again
        // below.
        crate::sockets::carry::detach(fd);
        if let Err(e) = sys::dup_onto(new.as_fd(), fd, cloexec) {
            log!(
                debug,
                "connect(fd {fd}): cannot take the new connection ({e})"
            );
            c.error.store(e.raw_os_error(), Ordering::Relaxed);
            c.failed.store(true, Ordering::Release);
            drop(slot);
            return sock;
        }
    }
    conn.completed_late.store(true, Ordering::Relaxed);
    log!(
        debug,
        "fd {fd}: connected {} -> {} through shared memory (completed)",
        conn.local,
        c.peer
    );
    let stream = Arc::new(Socket::Stream(conn));
    if !cloexec {
        stream.set_cloexec(false);
    }
    if registry::insert(fd, stream.clone()).is_err() {
        drop(slot);
        return sock;
    }
    drop(slot);
    if redialed.is_some() {
        // A new file under the number: its registrations made again.
        crate::sockets::readiness::replay_carried(fd, false);
    } else {
        // Registrations made while connecting are the kernel's only (on
        // this very file): the connection becomes a member of those sets,
        // as an inherited one does after exec, without a system call.
        for (epfd, ev) in crate::sockets::carry::take(fd, false) {
            crate::sockets::readiness::adopt(epfd, &[(fd, ev.events, ev.u64)]);
        }
    }
    stats::count(stats::Outcome::Shm);
    stream
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
