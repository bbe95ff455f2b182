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
//! its link hangs up) and whenever the receiver closed its segment (at
//! its close, or at its exit); a receiver that died without either (a
//! signal, `_exit`) is found at once when a BELL to it fails, or within
//! `WATCH_MS` twice when its ring stops moving with datagrams in it
//! (`Route::stalled`): a receiver restarted on the same port gets the
//! datagrams sent after its bind, as from the kernel (they went to the
//! dead one's segment for up to a second). At most `MAX_ROUTES` are
//! kept, the oldest going first.
#![forbid(unsafe_code)]

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rustix::io::Errno;
use shmnet_ring::dgram::frame::Frame;
use shmnet_ring::dgram::{Closing, Image, SendError, Sender, Sent, SlotGrant};

use super::inbox::Inbox;
use crate::platform::config::{Config, Fallback};
use crate::platform::internal_fd::InternalFd;
use crate::transport::link::{self, Inbound};
use crate::transport::parking::monotonic_ms;
use crate::transport::rendezvous::unmapped;

const MAX_ROUTES: usize = 64;
/// A route's link is looked at for a hang-up this often.
const RECHECK_MS: u64 = 1000;
/// A route's ring is looked at this often for a receiver that stopped
/// taking datagrams (a load of its tail), and its link for a hang-up
/// only then: a receiver that died is found within twice this, at one
/// system call per `WATCH_MS` at most, for a receiver that stalls.
const WATCH_MS: u64 = 1;
/// A kernel route asks the names again this often (a dial, which fails
/// at once when nobody holds them): a receiver bound since is found
/// within this time, and at once after the kernel said ECONNREFUSED.
const KERNEL_RECHECK_MS: u64 = 10;
/// A route unused this long has its link looked at for a hang-up at its
/// next send: a receiver that died (`_exit`, a signal: no close marked
/// its segment) while we were quiet is noticed before our burst goes into
/// its segment (review sweep34, udprestart.py: a forked receiver that
/// `_exit`ed lost the first or all ten datagrams of a burst to its
/// restarted successor). Costs a sender slower than this one poll per
/// datagram.
const IDLE_LOOK_MS: u64 = 10;
/// In the default mode a kernel route is never wrong (a preloaded
/// receiver's kernel socket holds its port and takes what the kernel
/// carries): one that keeps finding nobody is asked again half as often
/// each time, down to once a second (a sender to a plain statsd every
/// 20 ms otherwise made three failed dials per datagram, decision 46).
const KERNEL_RECHECK_MAX_MS: u64 = 1000;

struct Route {
    dest: SocketAddr,
    /// The source address it was made for, when not the socket's own (a
    /// wildcard socket's per-message source, IP_PKTINFO's, decision 62,
    /// has a route of its own); None for the socket's own.
    from: Option<std::net::IpAddr>,
    /// The name whose holder the link reached (`dest`'s, or its port's
    /// on the wildcard address).
    name: SocketAddr,
    /// A `Kernel` route is asked again this long after `checked_ms`.
    recheck_ms: u64,
    /// To the receiver (none for a `Kernel` route).
    link: Option<InternalFd>,
    state: State,
    checked_ms: u64,
    /// The default mode, and a receiver that may refuse us (its name's
    /// user is neither ours nor are we root): until its REG_OK the
    /// datagrams go through the kernel, not on the link, where a refusal
    /// would lose them (review udpdef16, users2.py: 0 of 4).
    unsure: bool,
    /// The user of the receiver's name (for the word a refusal says).
    owner: u32,
    /// When the ring was last watched (`stalled`), and the receiver's
    /// tail then.
    watched_ms: u64,
    watched_tail: u32,
    /// When the route last carried a datagram (`IDLE_LOOK_MS`).
    used_ms: u64,
    /// The default mode: copies of the datagrams put on the link while
    /// pending, until the REG_OK is read. The receiver takes a link's
    /// frames only once it has answered REG_OK, so a link that hangs up
    /// or says REG_NO before one left them untaken: they go through the
    /// kernel (`Routes::salvage`; decision 56).
    on_link: Vec<Vec<u8>>,
    /// The link's send buffer was grown to the receiver's receive buffer
    /// (`grow_link`): asked once per route.
    grown: bool,
}

enum State {
    /// REG sent, REG_OK not read yet.
    Pending(Inbound),
    Shm(Sender),
    /// The receiver had no room for another sender (REG_NO, ENOBUFS):
    /// datagrams are dropped, as a full receive buffer drops them, until
    /// the route is asked again (`RECHECK_MS` after).
    Full,
    /// No emulated socket holds the destination (nor its port on the
    /// wildcard address), or its holder refused us: the kernel carries
    /// the datagram, as it would have (review H2). Asked again
    /// `RECHECK_MS` after, when a receiver may have come.
    Kernel,
}

/// Why a route cannot carry a datagram.
enum Refused {
    /// Hung up or said no: nobody receives there.
    NoReceiver,
}

#[derive(Default)]
pub(crate) struct Routes {
    list: Vec<Route>,
    tally: Tally,
    /// The kernel route `find` just let go to ask again, and its interval.
    asked_again: Option<(SocketAddr, u64)>,
    /// Datagrams a link left untaken (`Route::on_link`), for the caller
    /// to send through the kernel before the one it sends
    /// (`take_untaken`).
    untaken: Vec<(SocketAddr, Vec<u8>)>,
}

/// The socket's datagrams by outcome since they were last added to the
/// counters (docs/counters.md, `udp_*`): plain adds under the routes'
/// lock, added to the shared counters a second at most after (at a send),
/// at close and at exit, so the send path makes no atomic add per
/// datagram.
#[derive(Default)]
struct Tally {
    shm: u64,
    kernel: u64,
    dropped: u64,
    added_ms: u64,
}

impl Tally {
    fn note(&mut self, outcome: &Outcome, now: u64) {
        match outcome {
            Outcome::Queued => self.shm += 1,
            Outcome::Kernel => self.kernel += 1,
            Outcome::Dropped => self.dropped += 1,
        }
        if now.saturating_sub(self.added_ms) >= RECHECK_MS {
            self.added_ms = now;
            self.add();
        }
    }

    fn add(&mut self) {
        let (shm, kernel, dropped) = (self.shm, self.kernel, self.dropped);
        if shm | kernel | dropped != 0 {
            crate::platform::stats::udp_datagrams(shm, kernel, dropped);
        }
        (self.shm, self.kernel, self.dropped) = (0, 0, 0);
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.tally.add();
    }
}

/// What became of a datagram the application sent.
pub(crate) enum Outcome {
    Queued,
    /// Dropped as UDP drops (full): the send succeeds.
    Dropped,
    /// The kernel carries it (`State::Kernel`): the caller sends it
    /// through its kernel socket.
    Kernel,
}

impl Routes {
    /// Forgets the kernel routes (the kernel said nobody was there), in
    /// the emulated mode. Not in the default mode: a receiver bound since
    /// holds the kernel port and takes the kernel's datagrams until its
    /// route is asked again, and forgetting reset the route's backoff at
    /// every ECONNREFUSED (review udpdef16, connsend.py: a connected
    /// sender to a dead port made 750 failed connects for 250 sends).
    pub(crate) fn forget_kernel(&mut self) {
        if default_mode() {
            return;
        }
        self.list.retain(|r| !matches!(r.state, State::Kernel));
        self.asked_again = None;
    }

    /// Forgets every route (a forked child registers its own; its tally
    /// is the parent's to add).
    pub(crate) fn clear(&mut self) {
        self.list.clear();
        self.untaken.clear();
        self.tally = Tally::default();
    }

    /// The datagrams a link hung up on or refused before its REG_OK
    /// (`Route::on_link`), oldest first: the caller sends them through
    /// the kernel before the datagram it is sending (one sender's order
    /// kept).
    pub(crate) fn take_untaken(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.untaken)
    }

    /// Whether `take_untaken` has something.
    pub(crate) fn has_untaken(&self) -> bool {
        !self.untaken.is_empty()
    }

    /// Route `i` stopped waiting for its REG_OK without one (hung up,
    /// refused, full): what it put on its link goes to `untaken`, since
    /// the receiver took none of it (a REG_OK read clears the copies).
    /// Counted as the kernel's now.
    fn salvage(&mut self, i: usize) {
        let r = &mut self.list[i];
        let n = r.on_link.len() as u64;
        if n == 0 {
            return;
        }
        log!(
            debug,
            "datagram to {}: {n} put on a link no receiver answered go through the kernel",
            r.dest
        );
        let dest = r.dest;
        self.untaken
            .extend(r.on_link.drain(..).map(|payload| (dest, payload)));
        self.tally.shm = self.tally.shm.saturating_sub(n);
        self.tally.kernel += n;
    }

    /// Route `i`'s receiver went across exec (`Closing::ToKernel`,
    /// decision 56): it takes nothing more from our ring, and its socket
    /// is the kernel's now, so what we left in the ring goes to `untaken`
    /// (sent through the kernel by the caller, oldest first). True when
    /// it did.
    fn take_back(&mut self, i: usize) -> bool {
        let State::Shm(tx) = &self.list[i].state else {
            return false;
        };
        if tx.closing() != Closing::ToKernel {
            return false;
        }
        let back = tx.take_back();
        let n = back.len() as u64;
        let dest = self.list[i].dest;
        log!(
            debug,
            "datagram route to {dest}: receiver went across exec, {n} left in the ring go through the kernel"
        );
        self.untaken.extend(back.into_iter().map(|p| (dest, p)));
        self.tally.shm = self.tally.shm.saturating_sub(n);
        self.tally.kernel += n;
        true
    }

    /// Adds the tally to the counters now (at exit).
    pub(crate) fn add_tally(&mut self) {
        self.tally.add();
    }

    /// Sends one datagram gathered from `bufs` to `dest`, from `local`.
    /// `source`: the source address asked (IP_PKTINFO's) of a
    /// wildcard-bound socket, None for its own.
    pub(crate) fn send(
        &mut self,
        inbox: &Inbox,
        local: SocketAddr,
        dest: SocketAddr,
        bufs: &[IoSlice<'_>],
        source: Option<std::net::IpAddr>,
    ) -> Result<Outcome, Errno> {
        let now = monotonic_ms();
        let outcome = self.send_at(inbox, local, dest, bufs, source, now)?;
        self.tally.note(&outcome, now);
        Ok(outcome)
    }

    fn send_at(
        &mut self,
        inbox: &Inbox,
        local: SocketAddr,
        dest: SocketAddr,
        bufs: &[IoSlice<'_>],
        source: Option<std::net::IpAddr>,
        now: u64,
    ) -> Result<Outcome, Errno> {
        let dest = unmapped(dest);
        if !crate::transport::rendezvous::is_loopback(dest.ip()) {
            // Emulated sockets hold loopback names only (stage 1).
            return Ok(Outcome::Kernel);
        }
        // (A source asked of a wildcard socket: its REG and link frames
        // claim it, `claimed`.)
        let local = match source {
            Some(ip) if local.ip().is_unspecified() => SocketAddr::new(ip, local.port()),
            _ => local,
        };
        for _attempt in 0..2 {
            let i = match self.find(dest, source, now) {
                Some(i) => i,
                None => match resolve(inbox, local, dest) {
                    Ok(mut r) => {
                        r.from = source;
                        let again = self.asked_again.take().filter(|(d, _)| *d == dest);
                        if let (State::Kernel, Some((_, ms))) = (&r.state, again) {
                            if r.recheck_ms != 0 {
                                r.recheck_ms = (ms * 2).min(kernel_recheck_max_ms());
                            }
                        }
                        if self.list.len() >= MAX_ROUTES {
                            self.list.remove(0).close();
                        }
                        self.list.push(r);
                        self.list.len() - 1
                    }
                    // No answer in time, a full backlog, or a link that
                    // failed (EPIPE: the receiver at its limit closed it,
                    // review M1): lost, as UDP loses; in the default mode
                    // the kernel carries it (a kernel port is behind every
                    // name), the name asked again at the next send.
                    Err(_) if default_mode() => return Ok(Outcome::Kernel),
                    Err(_) => return Ok(Outcome::Dropped),
                },
            };
            if matches!(self.list[i].state, State::Kernel) {
                return Ok(Outcome::Kernel);
            }
            // Salvaged only when this look ended the wait (the
            // established path pays one test: review sigfork16, +75
            // instructions a send when it looked every time).
            let pending = matches!(self.list[i].state, State::Pending(_));
            let answered = self.list[i].settle();
            if pending && !matches!(self.list[i].state, State::Pending(_)) {
                self.salvage(i);
            }
            let route = &mut self.list[i];
            let tx = match answered {
                Ok(()) => match &mut route.state {
                    State::Shm(tx) => tx,
                    State::Pending(_) => return Ok(route.on_link(local, bufs)),
                    State::Kernel => return Ok(Outcome::Kernel), // refused just now
                    State::Full => {
                        log!(trace, "datagram to {dest} dropped: no slot at the receiver");
                        return Ok(Outcome::Dropped);
                    }
                },
                Err(()) => {
                    // Gone or refusing: asked again (now the kernel's, or
                    // a new holder's).
                    self.list.remove(i);
                    continue;
                }
            };
            match tx.send_vectored(bufs) {
                Ok(Sent::Queued { ring }) => {
                    let closing = tx.closing() != Closing::Open;
                    let gone = match (ring, &route.link) {
                        (true, Some(l)) => matches!(
                            link::send(l.as_fd(), &Frame::Bell, None),
                            Err(Errno::PIPE | Errno::CONNRESET)
                        ),
                        _ => false,
                    };
                    if closing && self.take_back(i) {
                        self.list.remove(i).close();
                        return Ok(Outcome::Queued);
                    }
                    if gone || closing {
                        // Every holder of the link closed it (the receiver
                        // died asleep), or the receiver closed its segment
                        // around our publish: at its close or exit, or to
                        // go back to the kernel before a fork (decision
                        // 49's `retire`, which marks the segments closed,
                        // drains the rings into its leftovers, marks them
                        // final, then closes the links). Once final, ours,
                        // the last datagram published, still in the ring
                        // (a tail short of our head) is taken by nobody,
                        // so it goes again, to whoever holds the name now
                        // (a restarted receiver) or the kernel; taken, it
                        // was delivered, and a resend doubled it (review
                        // udploss16, dup.py).
                        let waiting = match &self.list[i].state {
                            State::Shm(tx) => untaken(tx),
                            _ => Some(1),
                        };
                        log!(
                            debug,
                            "datagram route to {dest}: receiver gone ({waiting:?} untaken)"
                        );
                        self.list.remove(i).close();
                        if waiting.is_none_or(|w| w == 0) {
                            return Ok(Outcome::Queued);
                        }
                        continue;
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
                    self.take_back(i);
                    self.list.remove(i).close();
                }
            }
        }
        Ok(Outcome::Dropped)
    }

    /// The live route to `dest`, checking its link once a second.
    fn find(
        &mut self,
        dest: SocketAddr,
        source: Option<std::net::IpAddr>,
        now: u64,
    ) -> Option<usize> {
        let i = self
            .list
            .iter()
            .position(|r| r.dest == dest && r.from == source)?;
        let r = &mut self.list[i];
        let age = now.saturating_sub(r.checked_ms);
        if (matches!(r.state, State::Full) && age >= RECHECK_MS)
            || (matches!(r.state, State::Kernel) && age >= r.recheck_ms)
        {
            if matches!(r.state, State::Kernel) {
                self.asked_again = Some((dest, r.recheck_ms));
            }
            // Ask again: a slot may have come free.
            self.list.remove(i).close();
            return None;
        }
        let recheck = now.saturating_sub(r.checked_ms) >= RECHECK_MS;
        let idle = now.saturating_sub(std::mem::replace(&mut r.used_ms, now)) >= IDLE_LOOK_MS;
        // A REG_OK not read yet (it is read at a send) comes before the
        // hang-up of a receiver that died since: read now, so the look
        // below sees the link.
        if idle && matches!(r.state, State::Pending(_)) {
            let answered = r.answer();
            // Whatever ended the wait without a REG_OK (a hang-up, or a
            // REG_NO: the route is the kernel's or full now, and the
            // caller returns before its own look; review sigfork16,
            // regno2.py lost the first datagram), the copies go through
            // the kernel (a REG_OK cleared them).
            if answered.is_err() || !matches!(self.list[i].state, State::Pending(_)) {
                self.salvage(i);
            }
            if answered.is_err() {
                self.list.remove(i).close();
                return None;
            }
        }
        let r = &mut self.list[i];
        if matches!(r.state, State::Shm(_)) && (recheck || idle || r.stalled(now)) {
            r.checked_ms = now;
            // The receiver writes nothing after REG_OK: readable means
            // hung up (or misbehaving).
            let quiet = r.link.as_ref().is_some_and(|l| {
                crate::platform::sys::poll_fd(l.as_fd(), libc::POLLIN, 0).is_ok_and(|ev| ev == 0)
            });
            // A port shared since with another process: the kernel's.
            let shared = recheck && shared_elsewhere(r.name, r.owner);
            if !quiet || shared {
                log!(
                    debug,
                    "datagram route to {dest}: receiver gone or shared (idle {idle})"
                );
                self.take_back(i);
                self.list.remove(i).close();
                return None;
            }
        }
        Some(i)
    }
}

impl Route {
    /// Whether the receiver stopped taking datagrams: looked at once per
    /// `WATCH_MS`, true when datagrams wait in our ring and its tail has
    /// not moved since the last look (a receiver dead, or busy: the
    /// caller then asks the link, which hangs up for a dead one).
    fn stalled(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.watched_ms) < WATCH_MS {
            return false;
        }
        let State::Shm(tx) = &self.state else {
            return false;
        };
        self.watched_ms = now;
        let (waiting, tail) = tx.outstanding();
        let still = waiting != 0 && tail == self.watched_tail;
        self.watched_tail = tail;
        still
    }

    fn close(self) {
        if let State::Shm(tx) = &self.state {
            tx.close();
        }
        if let Some(l) = &self.link {
            let _ = link::send(l.as_fd(), &Frame::Close, None);
        }
    }

    /// Reads the REG's answer if it came (never waited for): the state
    /// says what came; Err when the receiver hung up (the emulated mode)
    /// or sent what it should not.
    fn settle(&mut self) -> Result<(), ()> {
        match self.answer() {
            // In the default mode a hang-up before REG_OK is a refusal
            // too (a receiver that says no by closing, or one that died,
            // or a forked child holding a copy of its listener that
            // exited): the kernel decides.
            Err(Refused::NoReceiver)
                if matches!(self.state, State::Pending(_)) && default_mode() =>
            {
                self.refused(None);
                Ok(())
            }
            Err(_) => Err(()),
            Ok(()) => Ok(()),
        }
    }

    /// A refused route: the kernel's, asked again as a kernel route is
    /// (at the longest interval: a policy does not change soon). In the
    /// emulated mode no kernel port is behind the name, so the datagrams
    /// are lost: said once.
    fn refused(&mut self, why: Option<u32>) {
        log!(debug, "datagram to {}: refused ({why:?})", self.dest);
        if !default_mode() {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                crate::platform::log::always(format_args!(
                    "UDP to {}: its receiver (uid {}) refused this process's user (uid {}): \
                     the datagrams are lost; SHMNET_ALLOW in the receiver's environment \
                     admits other users (said once)",
                    self.dest,
                    self.owner,
                    rustix::process::geteuid().as_raw()
                ));
            }
        }
        self.state = State::Kernel;
        self.link = None;
        self.unsure = false;
        self.checked_ms = monotonic_ms();
        self.recheck_ms = kernel_recheck_max_ms();
    }

    /// Reads the receiver's answer to a pending REG, if it came.
    fn answer(&mut self) -> Result<(), Refused> {
        use Refused::NoReceiver;
        if let (State::Pending(inbound), Some(l)) = (&mut self.state, &self.link) {
            // The receiver sends only REG_OK or REG_NO: small frames.
            let mut scratch = [0u8; 64];
            link::read(l.as_fd(), inbound, &mut scratch).map_err(|_| NoReceiver)?;
            match Frame::decode(&inbound.bytes) {
                Ok(Some((Frame::RegOk { slot, gen }, _))) => {
                    // The receiver takes what followed the REG.
                    self.on_link = Vec::new();
                    let memfd = inbound.fd.take().ok_or(NoReceiver)?;
                    let tx = attach(memfd, slot, gen, self.dest).map_err(|()| NoReceiver)?;
                    self.state = State::Shm(tx);
                    crate::platform::stats::udp_shm_route();
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
                    // Refused (policy, an IPv6-only receiver): the kernel
                    // decides, as it would have.
                    self.refused(Some(why));
                }
                Ok(Some(_)) | Err(_) => return Err(NoReceiver),
                Ok(None) if inbound.eof => return Err(NoReceiver),
                Ok(None) => {}
            }
        }
        Ok(())
    }

    /// A datagram on the link itself while the route is pending: whole, or
    /// dropped when the link has no room (a receiver not reading); through
    /// the kernel when the receiver may refuse us (`unsure`) or did.
    fn on_link(&mut self, local: SocketAddr, bufs: &[IoSlice<'_>]) -> Outcome {
        if self.unsure {
            return Outcome::Kernel;
        }
        let payload: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let f = Frame::Dgram {
            source: claimed(local, self.dest),
            payload: &payload,
        };
        let mut sent = self.link.as_ref().map(|l| link::send(l.as_fd(), &f, None));
        if matches!(sent, Some(Err(Errno::AGAIN))) && self.grow_link(local) {
            sent = self.link.as_ref().map(|l| link::send(l.as_fd(), &f, None));
        }
        match sent {
            Some(Ok(())) => {
                if default_mode() {
                    self.on_link.push(payload);
                }
                Outcome::Queued
            }
            Some(Err(_)) => Outcome::Dropped,
            None => Outcome::Kernel, // refused just now
        }
    }

    /// A pending link that is full (the receiver has not looked since the
    /// dial, and the burst outgrew `LINK_SNDBUF`): its send buffer grown,
    /// once, to the receive buffer of the kernel socket holding the
    /// destination's port (the receiver's SO_RCVBUF: the default mode's
    /// receiver sets it there), so the link holds what the kernel would
    /// have queued for that receiver. The receiver keeps the link's
    /// datagrams within that same limit when it takes them
    /// (`links::take_frames`), in the order sent: they are still the
    /// link's frames (decision 78). True when the link has more room.
    #[cold]
    fn grow_link(&mut self, local: SocketAddr) -> bool {
        if self.grown || !default_mode() {
            return false;
        }
        self.grown = true;
        let Some(fd) = self.link.as_ref() else {
            return false;
        };
        let from = claimed(local, self.dest);
        let Ok(Some(rcvbuf)) = crate::platform::netlink::udp_receive_buffer(self.dest, from) else {
            return false;
        };
        // The kernel stores twice what is asked, as it stores SO_RCVBUF.
        // At most `LINK_GROWN_MAX`: each new sender's link (and its copies,
        // decision 56) is charged in full, where the kernel charges one
        // buffer for all senders (review rv-udpnext39 #1).
        let want = (rcvbuf as usize / 2).min(LINK_GROWN_MAX);
        if want <= LINK_SNDBUF {
            return false;
        }
        // Beyond net.core.wmem_max only with CAP_NET_ADMIN, as the
        // receiver's SO_RCVBUFFORCE; else as much as the kernel allows.
        let grown = rustix::net::sockopt::set_socket_send_buffer_size_force(fd, want)
            .or_else(|_| rustix::net::sockopt::set_socket_send_buffer_size(fd, want));
        log!(
            debug,
            "datagram to {}: link full before REG_OK, send buffer grown to the receiver's {rcvbuf} ({grown:?})",
            self.dest
        );
        grown.is_ok()
    }
}

/// How long a sender waits for a receiver's drain (`retire`) to end
/// before leaving its datagram to it.
const DRAIN_WAIT_MS: u64 = 100;

/// Datagrams of ours still in the ring once the receiver's close is final
/// (nobody takes them); None when its drain did not end within
/// `DRAIN_WAIT_MS` (a receiver stopped mid-drain, or busy: the datagram
/// is left to it, lost rather than maybe doubled). A drain moves what
/// was queued in a few milliseconds.
fn untaken(tx: &Sender) -> Option<u32> {
    let start = monotonic_ms();
    let mut spins = 0u32;
    while tx.closing() == Closing::Draining {
        if monotonic_ms().saturating_sub(start) > DRAIN_WAIT_MS {
            return None;
        }
        spins += 1;
        if spins < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    Some(tx.outstanding().0)
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

/// The source address a datagram from `local` to `dest` carries: a
/// wildcard-bound socket's is the loopback address the kernel would pick
/// (127.0.0.1 or ::1), with its port.
pub(super) fn claimed(local: SocketAddr, dest: SocketAddr) -> SocketAddr {
    let local = unmapped(local);
    if !local.ip().is_unspecified() {
        return local;
    }
    let ip: std::net::IpAddr = match unmapped(dest) {
        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, local.port())
}

/// The names a datagram to `dest` may reach, in the kernel's order of
/// lookup: the address itself, then its port on the wildcard address
/// (IPv4's, then IPv6's, which takes IPv4 too), review H1; an IPv6
/// destination then tries the name of an IPV6_V6ONLY `[::]:port`, which
/// an IPv4 one never reaches (review H-B: it took their datagrams from
/// the socket the kernel gives them to).
fn names(dest: SocketAddr) -> [SocketAddr; 3] {
    let port = dest.port();
    let v4_any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
    let v6_any = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
    match dest {
        SocketAddr::V4(_) => [dest, v4_any, v6_any],
        SocketAddr::V6(_) => [dest, v6_any, v6_only_any(port)],
    }
}

/// The name an IPV6_V6ONLY socket bound to `[::]:port` holds, which IPv4
/// senders (`names`) never dial: `[100::]:port`, in the discard-only
/// prefix (RFC 6666), not loopback, so no bind of ours holds it.
pub(super) fn v6_only_any(port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0).into(),
        port,
    )
}

/// The mark a socket holds that the kernel bound to `name`'s address
/// while another process holds the name (SO_REUSEADDR or SO_REUSEPORT
/// across processes, `Datagram::mark_shared`): the kernel alone knows
/// which of them a datagram reaches (its SO_REUSEPORT hash has a secret
/// key; SO_REUSEADDR's last bound takes all), so senders go through it
/// (decision 50). In the discard-only prefix, as `v6_only_any`:
/// `[100::1:hi:lo]` for an IPv4 name, `[100::2:0:loopback]` for IPv6.
pub(crate) fn shared_mark(name: SocketAddr) -> SocketAddr {
    let name = unmapped(name);
    let (kind, hi, lo) = match name.ip() {
        std::net::IpAddr::V4(a) => {
            let a = u32::from(a);
            (1, (a >> 16) as u16, a as u16)
        }
        std::net::IpAddr::V6(a) => (2, 0, u16::from(a.is_loopback())),
    };
    SocketAddr::new(
        std::net::Ipv6Addr::new(0x100, 0, 0, 0, 0, kind, hi, lo).into(),
        name.port(),
    )
}

/// Whether another process shares `name`'s port with its holder, of user
/// `owner`, in the default mode (one dial, refused when not). A mark held
/// by a user neither the name's nor root is not believed: anyone may bind
/// an abstract name, and such a squatter sent a root receiver's senders
/// through the kernel (review udploss16, squat.py). (A squatter whose
/// mark keeps a dial waiting is not told from ours: that costs the kernel
/// route only, never a datagram.)
fn shared_elsewhere(name: SocketAddr, owner: u32) -> bool {
    if !default_mode() {
        return false;
    }
    match link::mark_holder(shared_mark(name)) {
        None => false,
        Some(None) => true,
        Some(Some(uid)) if uid == owner || uid == 0 => true,
        Some(Some(uid)) => {
            log!(
                debug,
                "mark of {name} held by uid {uid}, not its holder's: ignored"
            );
            false
        }
    }
}

/// The longest a kernel route goes unasked: 1 s in the default mode,
/// 10 ms in the emulated one (where no kernel socket of a preloaded
/// receiver holds the port, so the kernel's datagrams are lost there).
fn kernel_recheck_max_ms() -> u64 {
    if default_mode() {
        KERNEL_RECHECK_MAX_MS
    } else {
        KERNEL_RECHECK_MS
    }
}

/// Whether the library runs in the default mode (a kernel port behind
/// every name).
pub(super) fn default_mode() -> bool {
    crate::platform::config::get().is_some_and(|c| c.fallback != Fallback::Never)
}

/// A route the kernel carries (`State::Kernel`). In the emulated mode a
/// partition address nobody holds (`nobody`: no name answered) is asked again at every send: its
/// datagrams are lost until a receiver binds, and one bound since must get
/// the next (a sender that sent once to nobody dropped everything sent to
/// a receiver restarted on the port within the interval, review sweep34
/// udprestart2.py: 0 of 10 per restart). The cost, a failed dial per name
/// (`names`) per datagram, falls only on datagrams the kernel would drop.
fn kernel_route(dest: SocketAddr, nobody: bool) -> Route {
    let nobody_ever = nobody && !default_mode() && crate::platform::config::is_partition(&dest);
    Route {
        dest,
        from: None, // (`send_at` sets it)
        name: dest,
        link: None,
        state: State::Kernel,
        checked_ms: monotonic_ms(),
        recheck_ms: if nobody_ever { 0 } else { KERNEL_RECHECK_MS },
        unsure: false,
        owner: u32::MAX,
        watched_ms: 0,
        watched_tail: 0,
        used_ms: monotonic_ms(),
        on_link: Vec::new(),
        grown: false,
    }
}

/// Whether we send to `dest`'s receiver, of user `uid`, through shared
/// memory. In the emulated mode the names are the port space (first bound,
/// first served, as kernel ports) and there is no kernel port behind them:
/// a receiver of any user is the one the kernel would deliver to (a
/// daemon that dropped to its own user, a sender that is root), and one we
/// refused would get nothing (the sweep of session 33: unbound, memcached
/// `-u` and a Python server as `nobody` answered 0 of a root client's
/// datagrams); only a privileged port must be held by root, as a bind
/// there requires (`lookup::may_bind`), else it is squatted. In the default
/// mode a name sits beside a kernel port it does not prove: our policy
/// (own user, root, SHMNET_ALLOW) decides, and a kernel route reaches the
/// others.
fn receiver_admitted(c: &Config, me: u32, (pid, uid): (u32, u32), dest: SocketAddr) -> bool {
    if c.fallback != Fallback::Never {
        return c.allow.admits_uid(me, uid);
    }
    if !c.allow.admits_uid(me, uid) && crate::transport::lookup::privileged_port(dest.port()) {
        return false;
    }
    // Its replies come from the user it is now (a daemon that bound as
    // root and dropped to its own, as unbound and memcached `-u` do).
    for u in [Some(uid), crate::platform::peer_ns::effective_uid(pid)]
        .into_iter()
        .flatten()
    {
        if !c.allow.admits_uid(me, u) {
            chose(u);
        }
    }
    true
}

/// Users whose receivers this process chose to send to through shared
/// memory beyond its policy (`receiver_admitted`); `u32::MAX` is free.
/// Their senders' links are admitted too (`chosen`): the replies of a
/// daemon of its own user to a root client, as a TCP connection admitted
/// by its listener carries both directions. At most `CHOSEN.len()` users,
/// the first ones (a process talks to few users).
static CHOSEN: [AtomicU32; 8] = [const { AtomicU32::new(u32::MAX) }; 8];

fn chose(uid: u32) {
    for slot in &CHOSEN {
        match slot.compare_exchange(u32::MAX, uid, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(held) if held == uid => return,
            Err(_) => {}
        }
    }
}

/// Whether this process chose to send to a receiver of user `uid`
/// (`receiver_admitted`): a link from that user is admitted.
pub(crate) fn chosen(uid: u32) -> bool {
    uid != u32::MAX && CHOSEN.iter().any(|s| s.load(Ordering::Relaxed) == uid)
}

/// A link's send buffer, asked at its dial (the kernel doubles it, capped
/// at twice net.core.wmem_max; its default is wmem_default, 208 KiB): what
/// a new sender puts on the link before the receiver answers its REG. A
/// burst to a receiver busy meanwhile was dropped past ~200 KB where a
/// kernel socket's buffer keeps it (burst.py, session 37: 277 and 93 of
/// 2,000 datagrams of 100 and 1,400 B kept; kernel UDP 2,000). Memory is
/// pinned only while datagrams wait there unread, at most this twice per
/// pending link; after REG_OK the link carries small frames.
const LINK_SNDBUF: usize = 1 << 20;

/// The most a link grows to (`Route::grow_link`), asked as SO_SNDBUF (the
/// kernel stores twice it): a receiver's 8 MiB SO_RCVBUF (stored, as the
/// kernel caps a 4 MiB rmem_max) in full, never a forced 512 MiB one. Each
/// pending sender may hold this much in the kernel and a copy in its heap
/// (review rv-udpnext39: 526 MB of one sender's RSS for a forced 512 MiB).
const LINK_GROWN_MAX: usize = 4 << 20;

/// Opens a route: dial the name (or the wildcard's), check who holds it,
/// send REG with our listener as the proof of `local`. The answer is read
/// at later sends. Nobody holding any: a kernel route.
fn resolve(inbox: &Inbox, local: SocketAddr, dest: SocketAddr) -> Result<Route, Errno> {
    let mut dialed = Err(Errno::CONNREFUSED);
    let mut reached = dest;
    for name in names(dest) {
        dialed = link::dial(name);
        reached = name;
        if !matches!(dialed, Err(Errno::CONNREFUSED)) {
            break;
        }
    }
    let fd = match dialed {
        Ok(fd) => {
            super::unheld::forget(Some(dest), 0);
            let fd = InternalFd::new(fd);
            // Room for what goes on the link before the receiver answers
            // (`LINK_SNDBUF`).
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&fd, LINK_SNDBUF);
            if default_mode() && crate::platform::internal_fd::crowded(fd.as_fd()) {
                // The program's fds come first (`crowded`): the kernel
                // carries this destination, asked again later.
                log!(debug, "datagram to {dest}: fds crowded, through the kernel");
                return Ok(kernel_route(dest, false));
            }
            fd
        }
        Err(Errno::CONNREFUSED) => {
            if default_mode() {
                super::unheld::found_free(dest);
            }
            return Ok(kernel_route(dest, true));
        }
        Err(e) => return Err(e),
    };
    let me = rustix::process::geteuid().as_raw();
    let cred = crate::platform::sys::peer_cred(fd.as_fd());
    let admitted = crate::platform::config::get()
        .zip(cred)
        .is_some_and(|(c, (pid, uid, _))| receiver_admitted(c, me, (pid, uid), dest));
    if !admitted {
        log!(
            debug,
            "datagram to {dest}: its receiver ({cred:?}) is not admitted"
        );
        return Ok(kernel_route(dest, false));
    }
    // Asked once the receiver is one we would send to (its mark is
    // dialled only then).
    let owner = cred.map_or(u32::MAX, |(_, uid, _)| uid);
    if shared_elsewhere(reached, owner) {
        log!(
            debug,
            "datagram to {dest}: port shared across processes, the kernel's"
        );
        return Ok(kernel_route(dest, false));
    }
    let reg = Frame::Reg {
        source: claimed(local, dest),
        dest,
        cookie: 0,
    };
    match link::send(fd.as_fd(), &reg, Some(inbox.listener())) {
        Ok(()) => {}
        // The receiver answered before our REG came: a refusal at its
        // accept (REG_NO, then closed), which the answer read at once by
        // the caller takes (`Route::ready`): in the default mode the
        // kernel then carries the datagram. The error had lost it (the
        // first echo of a uid 65534 sender to a root receiver, about one
        // run in four, session 33).
        Err(Errno::PIPE | Errno::CONNRESET) if default_mode() => {
            log!(debug, "datagram to {dest}: its receiver hung up before REG");
        }
        Err(e) => return Err(e),
    }
    Ok(Route {
        dest,
        from: None, // (`send_at` sets it)
        link: Some(fd),
        state: State::Pending(Inbound::default()),
        checked_ms: monotonic_ms(),
        recheck_ms: KERNEL_RECHECK_MS,
        unsure: default_mode() && me != 0 && owner != me,
        owner,
        name: reached,
        watched_ms: 0,
        watched_tail: 0,
        used_ms: monotonic_ms(),
        on_link: Vec::new(),
        grown: false,
    })
}
