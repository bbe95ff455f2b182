//! What fork and exec share of a connection: the fork generation it was
//! made in, whether a program exec'd may hold it (`exec_shared`), and the
//! carrier that takes its segment across exec (docs/architecture.md,
//! "exec"). The carrier itself is `inherit`'s: `socket` passes its
//! functions in (`Connection::set_cloexec`, `ready_for_exec`), so that a
//! connection does not depend on the module that adopts connections.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::platform::internal_fd::{InternalFd, KeptMemfd};
use crate::platform::lock::Mutex;
use rustix::io::Errno;

use super::Connection;

/// `inherit::make_carrier`: a carrier for the connection on the Unix
/// socket (the first fd) with the segment's memfd (the second).
pub(crate) type MakeCarrier = fn(
    BorrowedFd<'_>,
    BorrowedFd<'_>,
    shmnet_ring::Role,
    SocketAddr,
    SocketAddr,
) -> Result<InternalFd, Errno>;

/// A connection's state across fork and exec.
pub(super) struct ExecState {
    fork_generation: u32,
    /// Another process may hold the connection too, as after fork: it was
    /// re-attached after exec (the parent of a forked-then-exec'd child may
    /// have kept it), or it got an inheritable carrier before a program was
    /// run (posix_spawn, system and popen make a child without fork's
    /// handlers, which would have marked it shared).
    exec_shared: AtomicBool,
    /// What a program exec'd with this connection needs (see `inherit`).
    pub(super) carry: Mutex<Carry>,
}

impl ExecState {
    /// `inherited`: the connection came across exec.
    pub(super) fn new(inherited: bool, carry: Carry) -> ExecState {
        ExecState {
            fork_generation: crate::platform::fork::generation(),
            exec_shared: AtomicBool::new(inherited),
            carry: Mutex::new(carry),
        }
    }
}

/// The segment's memfd and the carrier that takes it across exec
/// (`inherit::make_carrier`), made only when an exec may follow while one
/// of the application's fds for the connection is inheritable
/// (`Connection::ready_for_exec`): nothing at connect or accept.
#[derive(Default)]
pub(super) struct Carry {
    pub(super) memfd: Option<KeptMemfd>,
    pub(super) carrier: Option<InternalFd>,
    /// The carrier is inheritable (not close-on-exec).
    pub(super) inheritable: bool,
    /// One of the application's fds for the connection is inheritable, as
    /// last told (`Connection::set_cloexec`).
    pub(super) wanted: bool,
}

impl Connection {
    /// Whether another process may share this connection (a fork since it
    /// was made, or `exec_shared`): then each direction is also serialised
    /// across processes.
    pub(super) fn shared(&self) -> bool {
        self.exec.exec_shared.load(Ordering::Relaxed)
            || self.exec.fork_generation != crate::platform::fork::generation()
    }

    /// Follows the application's fds' close-on-exec flag (see
    /// `Socket::set_cloexec`): remembered, and followed by the carrier if
    /// there is one. None is made here: carriers cost ~10 system calls, and
    /// most inheritable connections (a C server's accept without
    /// SOCK_CLOEXEC) never see an exec; `ready_for_exec` makes it before
    /// anything that may exec (fork, posix_spawn, system, popen, the exec
    /// family).
    ///
    /// `carrier_wanted`: `inherit::carrier_wanted`.
    pub(crate) fn follow_cloexec(&self, cloexec: bool, carrier_wanted: fn()) {
        let mut carry = self.exec.carry.lock();
        carry.wanted = !cloexec;
        match &carry.carrier {
            Some(c) if carry.inheritable == cloexec => {
                let flags = if cloexec {
                    rustix::io::FdFlags::CLOEXEC
                } else {
                    rustix::io::FdFlags::empty()
                };
                if rustix::io::fcntl_setfd(c, flags).is_ok() {
                    carry.inheritable = !cloexec;
                }
            }
            Some(_) => {}
            // Told under the lock: see `inherit::before_exec`.
            None if !cloexec && carry.memfd.is_some() => carrier_wanted(),
            None => {}
        }
    }

    /// Gives up the kept memfd (see `sockets::spare_fds`; the caller closes
    /// it) unless a carrier holds the segment already, or (`cloexec_only`)
    /// the application's fds are inheritable. Never waits for the lock.
    pub(crate) fn give_back_memfd(&self, cloexec_only: bool) -> Option<KeptMemfd> {
        let mut carry = self.exec.carry.try_lock()?;
        if carry.carrier.is_some() || (cloexec_only && carry.wanted) {
            return None;
        }
        carry.memfd.take()
    }

    /// An exec may follow: an inheritable connection gets its carrier
    /// (inheritable), which a program exec'd finds beside the fd. Without
    /// one (no memfd kept, no room, a name taken) the exec'd program reads
    /// the connection as closed, as before.
    ///
    /// `make_carrier` and `carrier_wanted`: `inherit`'s.
    pub(crate) fn make_carrier_with(&self, make_carrier: MakeCarrier, carrier_wanted: fn()) {
        let mut carry = self.exec.carry.lock();
        if !carry.wanted || carry.carrier.is_some() {
            return;
        }
        let Some(memfd) = &carry.memfd else {
            return;
        };
        let made = self.bell.on_socket(|app| {
            make_carrier(app, memfd.as_fd(), self.seg.role(), self.local, self.peer)
        });
        match made.unwrap_or(Err(Errno::BADF)) {
            Ok(c) => {
                carry.inheritable =
                    rustix::io::fcntl_setfd(&c, rustix::io::FdFlags::empty()).is_ok();
                carry.carrier = Some(c);
                // From now on a program run from here may hold the
                // connection (and later ones too, as the carrier follows
                // the flag): no EOF on our last close, each direction
                // serialised across processes.
                self.exec.exec_shared.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                log!(
                    debug,
                    "{} -> {}: no carrier for exec: {e}",
                    self.local,
                    self.peer
                );
                // Asked for again before the next exec when it may work
                // then (an fd or memory freed); not for lasting refusals
                // (ETOOMANYREFS), which would cost every fork a retry.
                if matches!(
                    e,
                    Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::NOBUFS
                ) {
                    carrier_wanted();
                }
            }
        }
    }
}

impl Connection {
    /// A carrier for this connection to go with its fd to another process
    /// (sendmsg SCM_RIGHTS, `calls::passing`): the receiver re-attaches it
    /// as an exec'd program does. From now on another process may hold the
    /// connection: no EOF at our last close, each direction serialised
    /// across processes. NOTSUP: the segment's memfd was given back
    /// (`give_back_memfd`) and no carrier holds it.
    pub(crate) fn carrier_to_pass(&self, make_carrier: MakeCarrier) -> Result<InternalFd, Errno> {
        let carry = self.exec.carry.lock();
        let made = match (&carry.carrier, &carry.memfd) {
            // The exec carrier's message and memfd are what a receiver
            // reads (with MSG_PEEK): a second reference to it will do.
            (Some(c), _) => InternalFd::dup(c.as_fd()),
            (None, Some(memfd)) => self
                .bell
                .on_socket(|app| {
                    make_carrier(app, memfd.as_fd(), self.seg.role(), self.local, self.peer)
                })
                .unwrap_or(Err(Errno::BADF)),
            (None, None) => Err(Errno::NOTSUP),
        };
        if made.is_ok() {
            self.exec.exec_shared.store(true, Ordering::Relaxed);
        }
        made
    }
}
