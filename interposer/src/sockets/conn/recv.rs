//! recv(2) and friends (MSG_PEEK, MSG_WAITALL, MSG_DONTWAIT), as a small
//! state machine:
//!
//! - a call's state is one `Call` (what was asked, what was read, what it
//!   did already: spun, gathered, woken, saw a hang-up);
//! - each turn reads under the receive lock, then `next_phase`, a pure
//!   function of `Facts`, chooses what follows: done, read again, gather,
//!   spin, watch, settle, or sleep (docs/architecture.md, "Lazy and eager
//!   readers", "Waiting: spinning and gathering");
//! - settling and raising the flag for a sleep happen under the lock; the
//!   pauses, spins and sleeps outside it (`Next`);
//! - how many bytes the call returns when it ends early (interrupted,
//!   timed out, non-blocking, reset) is one rule, `End::result`.
#![forbid(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rustix::io::Errno;
use shmnet_ring::{Consumer, RingError, WaitKind};

use super::doorbell::Woke;
use super::pacing::{pause, GATHER_BELOW, GATHER_PAUSE};
use super::ready::{Taker, WaiterGuard, WAIT_SLICE};
use super::settle::Settled;
use super::{deadline_after, time_left, Connection, Rx};
use crate::platform::sys;

/// What a call does after a read, as `next_phase` chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Return what was read (`End::Read`).
    Done,
    /// Read again at once (MSG_WAITALL with room left).
    Read,
    /// Pause briefly (`GATHER_PAUSE`), then read more into the rest of the
    /// buffer: a blocking consumer keeping up with a stream of small
    /// writes lets the writer add more rather than take its cache lines
    /// write by write.
    Gather,
    /// Spin on the ring for an answer (`spin_for_reply`): this side wrote
    /// since it last read (request and response).
    Spin,
    /// Look at the ring now and then for a while (`watch_ring`): a consumer
    /// of large writes in mid-stream.
    Watch,
    /// Settle the fd (`settle`): read again if data came, else wait
    /// (eagerly: the doorbell byte is left queued) or end.
    Settle,
    /// A lazy reader about to sleep: raise the flag only now, and sleep
    /// taking the doorbell byte it wakes on, if no one else waits on the
    /// kernel for it (`begin_taking`); else settle as an eager reader.
    Sleep,
}

/// What `next_phase` needs to know but costs something to find out, asked
/// only when the answer matters, in the order the choice needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Question {
    /// `polling::spin_helps` (now and then reads /proc and getrusage).
    SpinHelps,
    /// `Connection::nonblocking` (an fcntl when unknown or shared).
    Nonblocking,
    /// `Connection::read_recently` (a clock read).
    ReadRecently,
}

/// `next_phase`'s answer: a phase, or a question to answer first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Choice {
    Go(Phase),
    Ask(Question),
}

/// What the choice of the next phase looks at: the call's state and the
/// connection's, then the answers to `Question`s (None: not asked yet).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Facts {
    /// The read got data (else: the ring was empty).
    pub(super) got_data: bool,
    /// Bytes read so far in this call, and asked for.
    pub(super) total: usize,
    pub(super) want: usize,
    /// MSG_WAITALL (never with MSG_PEEK), MSG_DONTWAIT.
    pub(super) waitall: bool,
    pub(super) dontwait: bool,
    /// This call gathered already; spun or watched already.
    pub(super) gathered: bool,
    pub(super) spun: bool,
    /// A wait in this call woke on a hang-up.
    pub(super) hung_up: bool,
    /// A pure consumer keeping up with a stream (`note_data`).
    pub(super) streaming: bool,
    /// The reader is lazy (`Connection::lazy`).
    pub(super) lazy: bool,
    /// The call may block (known once the ring was found empty).
    pub(super) blocking: bool,
    /// A spin budget is set (`SHMNET_SPIN_US` > 0).
    pub(super) spin_budget: bool,
    /// This side wrote since it last read.
    pub(super) replied: bool,
    /// The last read was large (`Pacing::bulk`).
    pub(super) bulk: bool,
    pub(super) spin_helps: Option<bool>,
    pub(super) nonblocking: Option<bool>,
    pub(super) read_recently: Option<bool>,
}

/// The next phase of a recv call: a pure function of `facts`.
#[inline]
pub(super) fn next_phase(f: &Facts) -> Choice {
    use Question::{Nonblocking, ReadRecently, SpinHelps};
    // The answer to a question, or the question.
    macro_rules! known {
        ($answer:expr, $question:expr) => {
            match $answer {
                Some(a) => a,
                None => return Choice::Ask($question),
            }
        };
    }
    if f.got_data {
        if !f.waitall
            && f.total < GATHER_BELOW
            && f.total < f.want
            && !f.gathered
            && f.streaming
            && f.lazy
            && known!(f.spin_helps, SpinHelps)
            && !f.dontwait
            && !known!(f.nonblocking, Nonblocking)
        {
            return Choice::Go(Phase::Gather);
        }
        return Choice::Go(if !f.waitall || f.total >= f.want {
            Phase::Done
        } else {
            Phase::Read
        });
    }
    // The ring is empty. After a gather: what it got; the peer gone: the
    // end of the stream.
    if (f.total > 0 && !f.waitall) || f.hung_up {
        return Choice::Go(Phase::Done);
    }
    // Spin before settling: a reader that never raised its flag costs
    // neither side a system call. Only when this side wrote since it last
    // read (request and response, where the answer comes soon): a pure
    // consumer of a stream that spins reads each small write as it lands,
    // taking the producer's cache lines every time (64 B writes: 17 -> 6
    // M/s); asleep, it reads in bulk. A consumer of large writes watches.
    let may_spin = f.blocking && !f.spun && f.spin_budget;
    if may_spin && f.replied && known!(f.spin_helps, SpinHelps) {
        return Choice::Go(Phase::Spin);
    }
    if may_spin
        && f.bulk
        && known!(f.read_recently, ReadRecently)
        && known!(f.spin_helps, SpinHelps)
    {
        return Choice::Go(Phase::Watch);
    }
    Choice::Go(if f.blocking && f.lazy {
        Phase::Sleep
    } else {
        Phase::Settle
    })
}

/// After a read that got data: whether `next_phase` would choose `Done`
/// whatever else it were told (the buffer is full, or the call may not
/// gather and need not fill it). The common case of a read, decided
/// without building `Facts` (a request-response read is latency).
#[inline]
pub(super) fn done_after_data(
    total: usize,
    want: usize,
    waitall: bool,
    streaming: bool,
    gathered: bool,
) -> bool {
    total >= want || (!waitall && (!streaming || gathered || total >= GATHER_BELOW))
}

/// How a call ends, and so what it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// What was read: 0 at the end of the stream, after SHUT_RD, or when
    /// nothing was asked for.
    Read,
    /// What was read, or this error if nothing was: the call would block
    /// (EAGAIN), timed out (EAGAIN), was interrupted (EINTR); the ring
    /// failed; the acceptor refused us (ECONNRESET).
    Short(Errno),
    /// This error, whatever was read: the peer wrote past the ring
    /// (ECONNRESET), or a wait failed.
    Fail(Errno),
}

impl End {
    /// The partial-count rule: the call's result after `total` bytes.
    pub(super) fn result(self, total: usize) -> Result<usize, Errno> {
        match self {
            End::Read => Ok(total),
            End::Short(_) if total > 0 => Ok(total),
            End::Short(e) | End::Fail(e) => Err(e),
        }
    }
}

/// What a turn does once the receive lock is released.
enum Next {
    Read,
    Gather,
    Spin,
    Watch,
    /// Sleep until a doorbell byte is queued (left for the read to take).
    Wait,
    /// Sleep taking the doorbell byte (the turn's `Taker` is set).
    Sleep,
}

/// One recv call's state.
struct Call<'fd> {
    /// The application's fd the call came on.
    fd: BorrowedFd<'fd>,
    want: usize,
    peek: bool,
    waitall: bool,
    dontwait: bool,
    /// Bytes read so far.
    total: usize,
    /// SO_RCVTIMEO's deadline, looked up only once the call would block.
    deadline: Option<Option<Instant>>,
    /// Whether this call may block, looked up once it would.
    blocking: Option<bool>,
    /// Spun or watched once already.
    spun: bool,
    /// Gathered once already.
    gathered: bool,
    /// A wait woke on a hang-up.
    hung_up: bool,
    /// Woken once already: if the ring is still empty, settling looks at
    /// what woke us (a hang-up, or bytes that are not doorbells).
    woken: bool,
    /// A sleep of this call took the doorbell byte it woke on.
    took: bool,
    /// Sleeps cut short to give back the send ring's pages (`trim`).
    trims: u32,
}

impl<'fd> Call<'fd> {
    fn new(fd: BorrowedFd<'fd>, want: usize, flags: i32) -> Call<'fd> {
        let peek = flags & libc::MSG_PEEK != 0;
        Call {
            fd,
            want,
            peek,
            waitall: flags & libc::MSG_WAITALL != 0 && !peek,
            dontwait: flags & libc::MSG_DONTWAIT != 0,
            total: 0,
            deadline: None,
            blocking: None,
            spun: false,
            gathered: false,
            hung_up: false,
            woken: false,
            took: false,
            trims: 0,
        }
    }

    /// Whether the call may block (MSG_DONTWAIT, O_NONBLOCK), looked up
    /// the first time it is asked.
    fn blocking(&mut self, conn: &Connection) -> bool {
        let dontwait = self.dontwait;
        *self
            .blocking
            .get_or_insert_with(|| !dontwait && !conn.nonblocking())
    }
}

impl Connection {
    /// recv(2) and friends: MSG_PEEK, MSG_WAITALL, MSG_DONTWAIT; blocking
    /// unless the fd is non-blocking. The receive lock is held only while
    /// copying; a blocked reader sleeps in poll on the fd, where a doorbell
    /// byte, a hang-up or a local SHUT_RD wakes it. `fd`: the
    /// application's fd the call came on (a blocked reader sleeps on it).
    pub(crate) fn recv(
        &self,
        fd: BorrowedFd<'_>,
        bufs: &mut [IoSliceMut<'_>],
        flags: i32,
    ) -> Result<usize, Errno> {
        let r = self.recv_call(fd, bufs, flags);
        // The end of the stream: the peer may be gone (killed, or closed),
        // which our next send asks the kernel (`peer_gone_now`).
        if r == Ok(0) && bufs.iter().any(|b| !b.is_empty()) {
            self.bell.suspect(super::doorbell::Suspect::Ended);
        }
        // The end of the stream of a peer that was reset (killed with our
        // bytes unread: `reset`): ECONNRESET once, as the kernel's RST.
        if r == Ok(0)
            && bufs.iter().any(|b| !b.is_empty())
            && !self.shut_rd.load(Ordering::Relaxed)
            && self.take_pending_reset()
        {
            return Err(Errno::CONNRESET);
        }
        r
    }

    fn recv_call(
        &self,
        fd: BorrowedFd<'_>,
        bufs: &mut [IoSliceMut<'_>],
        flags: i32,
    ) -> Result<usize, Errno> {
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        // SECCOMP_MODE_STRICT: only read and write are left, and a read of
        // the ring may need to wait or take doorbell bytes (`sandbox`).
        if crate::platform::sandbox::strict() {
            return Err(Errno::ACCESS);
        }
        let mut call = Call::new(fd, want, flags);
        loop {
            if self.shut_rd.load(Ordering::Relaxed) {
                return End::Read.result(call.total);
            }
            // Counted in `takers` while set (see `begin_taking`).
            let mut taker = None;
            let next = match self.read_turn(&mut call, bufs, &mut taker) {
                Ok(next) => next,
                Err(end) => return end.result(call.total),
            };
            match next {
                Next::Read => {}
                Next::Gather => {
                    call.gathered = true;
                    pause(GATHER_PAUSE);
                }
                Next::Watch | Next::Spin => {
                    call.spun = true;
                    // A handler that ran in the spin (decision 48) ends
                    // it; the call then fails with EINTR, or sleeps
                    // (restarts) under SA_RESTART.
                    let watch = sys::handlers::Watch::begin();
                    let came = if matches!(next, Next::Spin) {
                        self.spin_for_reply(&watch)
                    } else {
                        self.watch_ring(&watch)
                    };
                    if !came && crate::platform::cancel::spin_interrupted(watch) {
                        return End::Short(Errno::INTR).result(call.total);
                    }
                }
                Next::Wait | Next::Sleep => {
                    self.status_flags(crate::platform::status::WAIT_READ, true);
                    let slept = self.sleep(&mut call, taker.take());
                    self.status_flags(crate::platform::status::WAIT_READ, false);
                    if let Err(end) = slept {
                        return end.result(call.total);
                    }
                }
            }
        }
    }

    /// A turn under the receive lock: reads, chooses the next phase, and
    /// does what must be done under the lock (settling, raising the flag
    /// for a sleep).
    fn read_turn<'a>(
        &'a self,
        call: &mut Call,
        bufs: &mut [IoSliceMut<'_>],
        taker: &mut Option<Taker<'a>>,
    ) -> Result<Next, End> {
        let mut guard = self.rx.lock();
        let Rx { consumer } = &mut *guard;
        let Some(rx) = self.receiver(consumer) else {
            // The acceptor has not initialised its direction yet: no data
            // can exist. A hang-up means it refused us.
            if self.bell.peek().hung_up {
                return Err(End::Short(Errno::CONNRESET));
            }
            return Ok(Next::Wait);
        };
        if call.want == 0 {
            return Err(End::Read);
        }
        // Shared with another process since a fork: our process's lock is
        // not enough.
        let _side = self.shared().then(|| rx.lock_side());
        let read = with_rest_mut(bufs, call.total, |b| {
            if call.peek {
                rx.peek_vectored(b)
            } else {
                rx.read_vectored(b)
            }
        });
        let facts = match read {
            Ok(0) => {
                self.status_flags(crate::platform::status::PEER_EOF, true);
                return Err(End::Read);
            }
            Ok(n) => {
                call.total += n;
                if !call.peek {
                    self.published_received(n);
                }
                match self.facts_after_data(call, rx) {
                    Some(facts) => facts,
                    None => return Err(End::Read),
                }
            }
            Err(RingError::WouldBlock) => {
                let blocking = call.blocking(self);
                self.facts(call, false, blocking)
            }
            // A reset after the data this call read: that data first.
            Err(RingError::Reset) if call.total > 0 => return Err(End::Read),
            Err(e) => return Err(self.read_error(e).map_or(End::Read, End::Short)),
        };
        // Settling looks at what is queued when the call cannot block or a
        // wait woke it (a blocking reader learns it from its wait).
        let check_peer = !facts.blocking || call.woken;
        match self.choose(facts) {
            Phase::Done => Err(End::Read),
            Phase::Read => Ok(Next::Read),
            Phase::Gather => Ok(Next::Gather),
            Phase::Spin => Ok(Next::Spin),
            Phase::Watch => Ok(Next::Watch),
            Phase::Sleep => self.ready_to_sleep(rx, taker, check_peer),
            Phase::Settle => self.settle_turn(rx, check_peer, facts.blocking),
        }
    }

    /// A read got data: what pacing and readiness note of it, and the facts
    /// for the choice; None when the call is done (`done_after_data`).
    #[inline]
    fn facts_after_data(&self, call: &Call, rx: &mut Consumer) -> Option<Facts> {
        let streaming = self.note_data(call.peek, call.total, call.gathered);
        if !call.peek {
            self.tidy_after_read(rx, call.took);
        }
        if done_after_data(
            call.total,
            call.want,
            call.waitall,
            streaming,
            call.gathered,
        ) {
            return None;
        }
        Some(Facts {
            streaming,
            ..self.facts(call, true, false)
        })
    }

    /// The facts known without asking (see `Question`).
    fn facts(&self, call: &Call, got_data: bool, blocking: bool) -> Facts {
        Facts {
            got_data,
            total: call.total,
            want: call.want,
            waitall: call.waitall,
            dontwait: call.dontwait,
            gathered: call.gathered,
            spun: call.spun,
            hung_up: call.hung_up,
            streaming: false,
            lazy: self.lazy(),
            blocking,
            spin_budget: !self.pacing.spin.is_zero(),
            replied: self.pacing.replied(),
            bulk: self.pacing.bulk(),
            spin_helps: None,
            nonblocking: None,
            read_recently: None,
        }
    }

    /// `next_phase`, its questions answered.
    fn choose(&self, mut facts: Facts) -> Phase {
        loop {
            match next_phase(&facts) {
                Choice::Go(phase) => return phase,
                Choice::Ask(Question::SpinHelps) => {
                    facts.spin_helps = Some(crate::sockets::wait::spin_helps());
                }
                Choice::Ask(Question::Nonblocking) => {
                    facts.nonblocking = Some(self.nonblocking());
                }
                Choice::Ask(Question::ReadRecently) => {
                    facts.read_recently = Some(self.read_recently());
                }
            }
        }
    }

    /// `Phase::Sleep`: a lazy reader raises its flag only now (see `lazy`);
    /// its sleep takes the doorbell byte it wakes on. If another may wait
    /// on the kernel for that byte, it settles instead.
    fn ready_to_sleep<'a>(
        &'a self,
        rx: &mut Consumer,
        taker: &mut Option<Taker<'a>>,
        check_peer: bool,
    ) -> Result<Next, End> {
        let Some(t) = self.begin_taking() else {
            return self.settle_turn(rx, check_peer, true);
        };
        *taker = Some(t);
        if self.bell.foreign.load(Ordering::Relaxed) {
            self.reset_foreign(rx);
            return Err(End::Fail(Errno::CONNRESET));
        }
        Ok(if rx.arm(WaitKind::Doorbell) {
            Next::Read
        } else {
            Next::Sleep
        })
    }

    /// `Phase::Settle`: read again if data came meanwhile, else wait. A
    /// read that cannot block, by the one thread that waits on the
    /// connection's epoll set, leaves the flag down (`defer_arming`): that
    /// thread calls epoll_wait before it sleeps (an event loop that reads
    /// until EAGAIN would otherwise raise it at every message).
    fn settle_turn(
        &self,
        rx: &mut Consumer,
        check_peer: bool,
        blocking: bool,
    ) -> Result<Next, End> {
        let raise = blocking || !self.defer_arming();
        if !raise {
            self.edges_off(rx);
        }
        match self.settle_as(rx, check_peer, raise) {
            Ok(true) => Ok(Next::Read),
            Ok(false) => Ok(Next::Wait),
            Err(Settled::HungUp) => Err(End::Read),
            Err(Settled::Foreign) => Err(End::Fail(Errno::CONNRESET)),
        }
    }

    /// `Next::Wait` and `Next::Sleep` (`taker` set): sleeps until a
    /// doorbell byte, a hang-up, the deadline (SO_RCVTIMEO) or a signal.
    /// Ok: read again.
    fn sleep(&self, call: &mut Call, taker: Option<Taker<'_>>) -> Result<(), End> {
        if !call.blocking(self) {
            return Err(End::Short(Errno::AGAIN));
        }
        let d = *call
            .deadline
            .get_or_insert_with(|| deadline_after(self.opts.timeout(libc::SO_RCVTIMEO)));
        let mut left = time_left(d).map_err(End::Short)?;
        call.woken = true;
        // Our send ring has pages to give back: sleep at most a while
        // first (a wake-up like a slice's), then trim if it stayed quiet.
        let trim = self.trim_after(call.trims);
        if let Some((cap, _)) = &trim {
            left = Some(left.map_or(*cap, |l| l.min(*cap)));
            call.trims += 1;
        }
        let mut sliced = false;
        let woke = if let Some(taker) = taker {
            call.took = true;
            let woke = self.bell.wait_taking(call.fd, left);
            drop(taker);
            woke
        } else {
            // Counted as a waiter, so no other thread of ours starts taking
            // the bytes we wait for; one already taking may take ours: then
            // sleep in slices and look at the ring between them.
            let waiter = WaiterGuard::new(self);
            sliced = waiter.sliced;
            let left = if sliced {
                Some(left.map_or(WAIT_SLICE, |l| l.min(WAIT_SLICE)))
            } else {
                left
            };
            self.bell.wait(call.fd, left)
        };
        let trim_cut = trim.is_some();
        if let Some((_, t)) = trim {
            self.trim_if_quiet(t);
        }
        match woke {
            Ok(Woke::Rung) => Ok(()),
            Ok(Woke::HungUp) => {
                call.hung_up = true;
                Ok(())
            }
            // Our own slicing (or a cut for trimming) turned a restartable
            // wait into a timed one:
            // restart it as the kernel would have.
            Err(Errno::INTR)
                if (sliced || trim_cut) && d.is_none() && crate::platform::cancel::restarts() =>
            {
                Ok(())
            }
            Err(Errno::INTR) => Err(End::Short(Errno::INTR)),
            Err(e) => Err(End::Fail(e)),
        }
    }
}

/// Runs `f` on the caller's destination buffers from byte `skip` on. The
/// caller's iovec array is never modified (the kernel does not either).
#[inline]
fn with_rest_mut<R>(
    bufs: &mut [IoSliceMut<'_>],
    mut skip: usize,
    f: impl FnOnce(&mut [IoSliceMut<'_>]) -> R,
) -> R {
    if skip == 0 {
        return f(bufs);
    }
    let mut rest = Vec::with_capacity(bufs.len());
    for b in bufs.iter_mut() {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        rest.push(IoSliceMut::new(&mut b[skip..]));
        skip = 0;
    }
    f(&mut rest)
}

#[cfg(test)]
mod tests;
