//! A socket bound to an emulated partition address that has not listened
//! yet (`Socket::Bound`): it holds the address's name until listen()
//! makes it a listener (`calls::listen`) or connect() a connection.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::Mutex;
use crate::sockets::options_store::Options;
use crate::transport::rendezvous::Reservation;

use super::{dup_owned, euid, reuses_port};

/// A socket bound to an emulated partition address (`SHMNET_FALLBACK=never`)
/// that has not listened yet: it holds the address's name; listen() makes
/// it a listener, connect() a connection from that address.
pub(crate) struct Bound {
    pub local: SocketAddr,
    pub(crate) reservation: Mutex<Option<Reservation>>,
    /// The socket bound at the name in SHMNET_DIR (a non-local address);
    /// for a local one, the reservation's own socket.
    host_sock: Mutex<Option<InternalFd>>,
    pub opts: Options,
    /// The effective uid that bound (an SO_REUSEPORT group is one user's).
    owner: u32,
}

impl Bound {
    pub(crate) fn new(
        reservation: Reservation,
        host_sock: Option<InternalFd>,
        opts: Options,
    ) -> Bound {
        Bound {
            local: reservation.addr,
            reservation: Mutex::new(Some(reservation)),
            host_sock: Mutex::new(host_sock),
            opts,
            owner: euid(),
        }
    }

    pub(crate) fn reset_after_fork(&self) {
        self.reservation.reset_after_fork();
        self.host_sock.reset_after_fork();
        self.opts.reset_after_fork();
    }

    /// The socket holding the name (the application's fd is a dup of it).
    pub(crate) fn socket(&self) -> Option<OwnedFd> {
        if let Some(s) = self.host_sock.lock().as_ref() {
            return dup_owned(s).ok();
        }
        self.reservation
            .lock()
            .as_ref()
            .and_then(|r| r.socket().and_then(|s| dup_owned(s).ok()))
    }

    /// The socket bound at the name in SHMNET_DIR, taken (by listen()).
    pub(crate) fn take_host_sock(&self) -> Option<InternalFd> {
        self.host_sock.lock().take()
    }

    /// The reservation's socket for a process of `uid` joining this
    /// address's SO_REUSEPORT group (see
    /// `calls::listen::join_reuseport_group`): only if `uid` bound, with
    /// SO_REUSEPORT.
    pub(crate) fn group_socket(&self, uid: u32) -> Option<OwnedFd> {
        (self.owner == uid && reuses_port(&self.opts))
            .then(|| {
                self.reservation
                    .lock()
                    .as_ref()
                    .and_then(|r| r.socket())
                    .and_then(|fd| dup_owned(fd).ok())
            })
            .flatten()
    }
}
