//! The emulated socket kinds (`Socket`): bound to a partition address, a
//! listener on one (`listener`), and a connection carried by a connection
//! segment, two rings in one sealed memfd (`conn`); the family helpers.
//! The one place that matches on the kind for what every kind has (its
//! address, options, close-on-exec and after-fork state).
//!
//! The fd the application holds is always a real kernel object: the
//! listener's rendezvous Unix socket, or the Unix connection between the
//! two processes. So close/poll/select/epoll/fork/dup behave natively; the
//! connection also gives each side a kernel signal (hang-up) when the other
//! process dies, and carries the doorbell bytes that wake a reader asleep
//! in poll.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::platform::lock::Mutex;
use crate::sockets::carrier;
use crate::sockets::conn::{Connection, Offered};
use crate::sockets::listener::{Bound, Listener};
use crate::sockets::options_store::Options;

/// What an fd of ours is (always behind an Arc, so variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Socket {
    /// Bound to an emulated partition address, not listening yet.
    Bound(Bound),
    /// Listening, in either mode (see `listener`).
    Listener(Listener),
    Stream(Connection),
    /// A non-blocking connect waiting for the acceptor's answer to a reuse
    /// offer (`connecting`); a `Stream` once answered.
    Connecting(Connecting),
    /// An emulated UDP socket (`datagram`).
    Datagram(crate::sockets::datagram::Datagram),
}

impl crate::sockets::quiet::Trim for Socket {
    fn trim_quiet(&self, written: u64) -> crate::sockets::quiet::Quiet {
        match self {
            Socket::Stream(c) => c.trim_quiet(written),
            _ => crate::sockets::quiet::Quiet::Done,
        }
    }
}

impl Socket {
    /// After a send on a connection: queue it with `quiet` if its send
    /// ring holds pages to give back once it goes quiet.
    pub(crate) fn queue_for_trim(self: &std::sync::Arc<Self>) {
        let Socket::Stream(c) = &**self else {
            return;
        };
        if let Some(written) = c.queue_for_trim() {
            let weak: std::sync::Weak<dyn crate::sockets::quiet::Trim> =
                std::sync::Arc::downgrade(self) as _;
            if !crate::sockets::quiet::enqueue(weak, written) {
                c.not_queued();
            }
        }
    }

    /// In a forked child (single-threaded, after the registry lock was
    /// reset): a lock held by a parent thread at the fork would stay locked
    /// forever here. The ring state such a thread was changing is shared
    /// memory and stays consistent word by word; what it had not published
    /// yet is simply not there.
    pub(crate) fn reset_locks_after_fork(&self) {
        match self {
            Socket::Bound(b) => b.reset_after_fork(),
            Socket::Stream(c) => c.reset_locks_after_fork(),
            Socket::Listener(l) => l.reset_after_fork(),
            Socket::Datagram(d) => d.after_fork_child(),
            Socket::Connecting(c) => {
                c.offer.reset_after_fork();
                c.timer.reset_after_fork();
                c.fds.reset_after_fork();
            }
        }
    }

    /// `fd` is one of the application's numbers for this socket now.
    pub(crate) fn fd_opened(&self, fd: std::os::fd::RawFd) {
        match self {
            Socket::Stream(c) => c.fd_opened(fd),
            Socket::Connecting(c) => c.fd_opened(fd),
            _ => {}
        }
    }

    /// `fd` is being closed: the library's own system calls stop using it
    /// before the kernel can give the number to another file.
    pub(crate) fn fd_closing(&self, fd: std::os::fd::RawFd) {
        match self {
            Socket::Stream(c) => c.fd_closing(fd),
            Socket::Connecting(c) => c.fd_closing(fd),
            _ => {}
        }
    }

    /// Runs `replace` (dup2/dup3 onto `fd`, one of this socket's numbers)
    /// so that the library's own calls never meet the file it puts there.
    pub(crate) fn while_replacing(
        &self,
        fd: std::os::fd::RawFd,
        replace: impl FnOnce() -> i32,
    ) -> i32 {
        match self {
            Socket::Stream(c) => c.while_replacing(fd, replace),
            Socket::Connecting(c) => {
                // Not re-pointed when it completes (`connecting`).
                c.fd_closing(fd);
                let r = replace();
                if r < 0 {
                    c.fd_opened(fd);
                }
                r
            }
            _ => replace(),
        }
    }

    /// `fd_closing` from a signal handler that interrupted the library: no
    /// waiting for a lock (None if it would have to).
    /// Some(true): other numbers of the application's are left.
    pub(crate) fn try_fd_closing(&self, fd: std::os::fd::RawFd) -> Option<bool> {
        match self {
            Socket::Stream(c) => c.try_fd_closing(fd),
            Socket::Connecting(c) => {
                let mut fds = c.fds.try_lock()?;
                fds.retain(|&n| n != fd);
                Some(!fds.is_empty())
            }
            _ => Some(false),
        }
    }

    /// The connection, if this is one.
    pub(crate) fn connection(&self) -> Option<&Connection> {
        match self {
            Socket::Stream(c) => Some(c),
            _ => None,
        }
    }

    /// The listener, if this is one.
    pub(crate) fn listener(&self) -> Option<&Listener> {
        match self {
            Socket::Listener(l) => Some(l),
            _ => None,
        }
    }

    /// The bound-but-not-listening socket, if this is one.
    pub(crate) fn bound(&self) -> Option<&Bound> {
        match self {
            Socket::Bound(b) => Some(b),
            _ => None,
        }
    }

    /// The datagram socket, if this is one.
    pub(crate) fn datagram(&self) -> Option<&crate::sockets::datagram::Datagram> {
        match self {
            Socket::Datagram(d) => Some(d),
            _ => None,
        }
    }

    pub(crate) fn family(&self) -> i32 {
        crate::platform::sys::family_of(&self.local())
    }

    /// What goes across exec with the application's fds follows their
    /// close-on-exec flag (see `options::refresh_cloexec`): a listener's
    /// parts, a connection's carrier.
    pub(crate) fn set_cloexec(&self, cloexec: bool) {
        match self {
            Socket::Listener(l) => l.set_cloexec(cloexec),
            Socket::Stream(c) => c.set_cloexec(cloexec),
            Socket::Connecting(c) => c.cloexec.store(cloexec, Ordering::Relaxed),
            Socket::Bound(_) | Socket::Datagram(_) => {}
        }
    }

    pub(crate) fn options(&self) -> &Options {
        match self {
            Socket::Bound(b) => &b.opts,
            Socket::Stream(c) => &c.opts,
            Socket::Listener(l) => &l.opts,
            Socket::Datagram(d) => &d.opts,
            Socket::Connecting(c) => &c.opts,
        }
    }

    pub(crate) fn local(&self) -> SocketAddr {
        match self {
            Socket::Bound(b) => b.local,
            Socket::Stream(c) => c.local,
            Socket::Listener(l) => l.local,
            Socket::Datagram(d) => d.local(),
            Socket::Connecting(c) => c.local,
        }
    }
}

/// A connection's part in the exec protocol, with `carrier`'s functions
/// (see `conn::exec`).
impl Connection {
    /// Follows the application's fds' close-on-exec flag (see
    /// `Connection::follow_cloexec`).
    pub(crate) fn set_cloexec(&self, cloexec: bool) {
        self.follow_cloexec(cloexec, carrier::carrier_wanted);
    }

    /// An exec may follow: the carrier, if the connection wants one (see
    /// `Connection::make_carrier_with`).
    pub(crate) fn ready_for_exec(&self) {
        self.make_carrier_with(carrier::make_carrier, carrier::carrier_wanted);
    }
}

/// A non-blocking connect in progress (see `conn::Offered`): the offer,
/// until it is answered or fails; then the registry holds the `Stream`
/// (`connecting::settle`).
pub(crate) struct Connecting {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub opts: Options,
    pub offer: Mutex<Option<Offered>>,
    /// The connect failed: reported once, by SO_ERROR or a second connect.
    pub error: AtomicI32,
    pub failed: AtomicBool,
    /// Whether the application's fd is close-on-exec.
    pub cloexec: AtomicBool,
    /// What gives up waiting for the acceptor (`connecting::watch`); the
    /// wait engine holds it weakly.
    pub timer: Mutex<Option<std::sync::Arc<dyn crate::sockets::quiet::Trim>>>,
    /// The application's numbers for it (dups too), changed under the
    /// registry's write lock: all of them become the connection when it
    /// completes (`registry::complete`).
    pub fds: Mutex<Vec<std::os::fd::RawFd>>,
}

impl Connecting {
    pub(crate) fn new(offered: Offered, cloexec: bool) -> Connecting {
        Connecting {
            local: offered.local(),
            peer: offered.peer,
            opts: offered.opts.snapshot_copy(),
            offer: Mutex::new(Some(offered)),
            error: AtomicI32::new(0),
            failed: AtomicBool::new(false),
            cloexec: AtomicBool::new(cloexec),
            timer: Mutex::new(None),
            fds: Mutex::new(Vec::new()),
        }
    }

    /// A connect refused after EINPROGRESS (`refusal`): failed from the
    /// start, with no offer; ECONNREFUSED to be reported once.
    pub(crate) fn refused(
        local: SocketAddr,
        peer: SocketAddr,
        opts: Options,
        cloexec: bool,
    ) -> Connecting {
        Connecting {
            local,
            peer,
            opts,
            offer: Mutex::new(None),
            error: AtomicI32::new(libc::ECONNREFUSED),
            failed: AtomicBool::new(true),
            cloexec: AtomicBool::new(cloexec),
            timer: Mutex::new(None),
            fds: Mutex::new(Vec::new()),
        }
    }

    fn fd_opened(&self, fd: std::os::fd::RawFd) {
        let mut fds = self.fds.lock();
        if !fds.contains(&fd) {
            fds.push(fd);
        }
    }

    fn fd_closing(&self, fd: std::os::fd::RawFd) {
        self.fds.lock().retain(|&n| n != fd);
    }

    /// The application's numbers for it now.
    pub(crate) fn numbers(&self) -> Vec<std::os::fd::RawFd> {
        self.fds.lock().clone()
    }

    /// Whether the connect failed (its error may have been reported).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}
