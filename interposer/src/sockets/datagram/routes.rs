//! The sender's routes (udp-draft §3): per destination, the link to the
//! receiver holding its name and the slot it granted in the target set
//! for our uid (an image of the memfd, mapped). A datagram goes straight
//! into the receiver's segment; the link carries only a BELL when the
//! receiver asked for one.
//!
//! A route is *pending* from its REG until the REG_OK is read (at a
//! later send, never waited for): meanwhile its datagrams go on the link
//! itself (DGRAM frames, whole or dropped), so a sender never waits for a
//! receiver that is busy, or is its own process.
//!
//! A route is checked again once a second (the receiver may have died:
//! its link hangs up) and whenever the receiver closed its segment; at
//! most `MAX_ROUTES` are kept, the oldest going first.
#![forbid(unsafe_code)]

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use rustix::io::Errno;
use shmnet_ring::dgram::frame::Frame;
use shmnet_ring::dgram::{Image, SendError, Sender, Sent, SlotGrant};

use super::inbox::Inbox;
use crate::platform::internal_fd::InternalFd;
use crate::transport::link::{self, Inbound};
use crate::transport::parking::monotonic_ms;
use crate::transport::rendezvous::unmapped;

const MAX_ROUTES: usize = 64;
/// A route's link is looked at for a hang-up this often.
const RECHECK_MS: u64 = 1000;

struct Route {
    dest: SocketAddr,
    link: InternalFd,
    state: State,
    checked_ms: u64,
}

enum State {
    /// REG sent, REG_OK not read yet.
    Pending(Inbound),
    Shm(Sender),
    /// The receiver had no room for another sender (REG_NO, ENOBUFS):
    /// datagrams are dropped, as a full receive buffer drops them, until
    /// the route is asked again (`RECHECK_MS` after).
    Full,
}

/// Why a route cannot carry a datagram.
enum Refused {
    /// Hung up or said no: nobody receives there.
    NoReceiver,
    /// The receiver is alive but has no slot for us.
    Full,
}

#[derive(Default)]
pub(crate) struct Routes {
    list: Vec<Route>,
}

/// What became of a datagram the application sent.
pub(crate) enum Outcome {
    Queued,
    /// Dropped as UDP drops (full): the send succeeds.
    Dropped,
    /// Nobody holds the destination's name.
    NoReceiver,
}

impl Routes {
    /// Forgets every route (a forked child registers its own).
    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }

    /// Sends one datagram gathered from `bufs` to `dest`, from `local`.
    pub(crate) fn send(
        &mut self,
        inbox: &Inbox,
        local: SocketAddr,
        dest: SocketAddr,
        bufs: &[IoSlice<'_>],
    ) -> Result<Outcome, Errno> {
        let dest = unmapped(dest);
        for _attempt in 0..2 {
            let i = match self.find(dest) {
                Some(i) => i,
                None => match resolve(inbox, local, dest) {
                    Ok(r) => {
                        if self.list.len() >= MAX_ROUTES {
                            self.list.remove(0).close();
                        }
                        self.list.push(r);
                        self.list.len() - 1
                    }
                    Err(Errno::CONNREFUSED) => return Ok(Outcome::NoReceiver),
                    // No answer in time, or a full backlog: lost, as UDP loses.
                    Err(Errno::AGAIN) => return Ok(Outcome::Dropped),
                    Err(e) => return Err(e),
                },
            };
            let route = &mut self.list[i];
            let tx = match route.ready() {
                Ok(Some(tx)) => tx,
                Ok(None) => return Ok(route.on_link(local, bufs)),
                Err(Refused::Full) => {
                    log!(trace, "datagram to {dest} dropped: no slot at the receiver");
                    return Ok(Outcome::Dropped);
                }
                Err(Refused::NoReceiver) => {
                    self.list.remove(i);
                    return Ok(Outcome::NoReceiver);
                }
            };
            match tx.send_vectored(bufs) {
                Ok(Sent::Queued { ring }) => {
                    if ring {
                        let _ = link::send(route.link.as_fd(), &Frame::Bell, None);
                    }
                    return Ok(Outcome::Queued);
                }
                Ok(Sent::Dropped(why)) => {
                    log!(trace, "datagram to {dest} dropped: {why:?}");
                    return Ok(Outcome::Dropped);
                }
                Ok(Sent::Stopped) => return Ok(Outcome::Dropped),
                Err(SendError::TooBig) => return Err(Errno::MSGSIZE),
                Err(e) => {
                    // Closed (or corrupt): ask the name again.
                    log!(debug, "datagram route to {dest}: {e}");
                    self.list.remove(i).close();
                }
            }
        }
        Ok(Outcome::Dropped)
    }

    /// The live route to `dest`, checking its link once a second.
    fn find(&mut self, dest: SocketAddr) -> Option<usize> {
        let i = self.list.iter().position(|r| r.dest == dest)?;
        let now = monotonic_ms();
        let r = &mut self.list[i];
        if matches!(r.state, State::Full) && now.saturating_sub(r.checked_ms) >= RECHECK_MS {
            // Ask again: a slot may have come free.
            self.list.remove(i).close();
            return None;
        }
        if matches!(r.state, State::Shm(_)) && now.saturating_sub(r.checked_ms) >= RECHECK_MS {
            r.checked_ms = now;
            // The receiver writes nothing after REG_OK: readable means
            // hung up (or misbehaving).
            let quiet = crate::platform::sys::poll_fd(r.link.as_fd(), libc::POLLIN, 0)
                .is_ok_and(|ev| ev == 0);
            if !quiet {
                self.list.remove(i).close();
                return None;
            }
        }
        Some(i)
    }
}

impl Route {
    fn close(self) {
        if let State::Shm(tx) = &self.state {
            tx.close();
        }
        let _ = link::send(self.link.as_fd(), &Frame::Close, None);
    }

    /// The sender, once the REG_OK is in (read now if it came: never
    /// waited for); Err when the receiver refused, hung up or is full.
    fn ready(&mut self) -> Result<Option<&mut Sender>, Refused> {
        use Refused::NoReceiver;
        if let State::Pending(inbound) = &mut self.state {
            // The receiver sends only REG_OK or REG_NO: small frames.
            let mut scratch = [0u8; 64];
            link::read(self.link.as_fd(), inbound, &mut scratch).map_err(|_| NoReceiver)?;
            match Frame::decode(&inbound.bytes) {
                Ok(Some((Frame::RegOk { slot, gen }, _))) => {
                    let memfd = inbound.fd.take().ok_or(NoReceiver)?;
                    let tx = attach(memfd, slot, gen, self.dest).map_err(|()| NoReceiver)?;
                    self.state = State::Shm(tx);
                }
                Ok(Some((Frame::RegNo { why }, _)))
                    if why == Errno::NOBUFS.raw_os_error() as u32 =>
                {
                    log!(
                        debug,
                        "datagram to {}: no slot free there, dropping",
                        self.dest
                    );
                    self.state = State::Full;
                    self.checked_ms = monotonic_ms();
                }
                Ok(Some((Frame::RegNo { why }, _))) => {
                    log!(debug, "datagram to {}: refused (errno {why})", self.dest);
                    return Err(NoReceiver);
                }
                Ok(Some(_)) | Err(_) => return Err(NoReceiver),
                Ok(None) if inbound.eof => return Err(NoReceiver),
                Ok(None) => return Ok(None),
            }
        }
        match &mut self.state {
            State::Shm(tx) => Ok(Some(tx)),
            State::Pending(_) => Ok(None),
            State::Full => Err(Refused::Full),
        }
    }

    /// A datagram on the link itself while the route is pending: whole, or
    /// dropped when the link has no room (a receiver not reading).
    fn on_link(&self, local: SocketAddr, bufs: &[IoSlice<'_>]) -> Outcome {
        let payload: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let f = Frame::Dgram {
            source: unmapped(local),
            payload: &payload,
        };
        match link::send(self.link.as_fd(), &f, None) {
            Ok(()) => Outcome::Queued,
            Err(_) => Outcome::Dropped,
        }
    }
}

/// Maps the receiver's target segment and makes the sender of our slot.
fn attach(
    memfd: std::os::fd::OwnedFd,
    slot: u32,
    gen: u32,
    dest: SocketAddr,
) -> Result<Sender, ()> {
    let image = Image::attach(memfd.as_fd()).map_err(|e| {
        log!(warn, "datagram target of {dest}: {e}");
    })?;
    if image.sender_uid() != rustix::process::geteuid().as_raw() {
        return Err(());
    }
    image.sender(SlotGrant { slot, gen }).map_err(|_| ())
}

/// Opens a route: dial the name, check who holds it, send REG with our
/// listener as the proof of `local`. The answer is read at later sends.
fn resolve(inbox: &Inbox, local: SocketAddr, dest: SocketAddr) -> Result<Route, Errno> {
    let fd = match link::dial(dest) {
        Ok(fd) => InternalFd::new(fd),
        Err(Errno::AGAIN) => return Err(Errno::AGAIN),
        Err(_) => return Err(Errno::CONNREFUSED),
    };
    let me = rustix::process::geteuid().as_raw();
    let uid = crate::platform::sys::peer_cred(fd.as_fd()).map(|(_, uid, _)| uid);
    let admitted = crate::platform::config::get()
        .zip(uid)
        .is_some_and(|(c, uid)| c.allow.admits_uid(me, uid));
    if !admitted {
        log!(
            debug,
            "datagram to {dest}: its receiver (uid {uid:?}) is not admitted"
        );
        return Err(Errno::CONNREFUSED);
    }
    let reg = Frame::Reg {
        source: unmapped(local),
        dest,
        cookie: 0,
    };
    link::send(fd.as_fd(), &reg, Some(inbox.listener()))?;
    Ok(Route {
        dest,
        link: fd,
        state: State::Pending(Inbound::default()),
        checked_ms: monotonic_ms(),
    })
}
