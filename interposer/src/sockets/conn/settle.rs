//! The reader's accounting of doorbell bytes: settling its fd after the
//! ring was seen empty (step 3 of docs/architecture.md's "Readiness through
//! doorbell bytes"), and the bytes a read leaves queued ("Bytes a lazy
//! reader leaves", "Edge-triggered readers").
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmnet_ring::{Consumer, WaitKind};

use super::doorbell::Pending;
use super::Connection;

/// How long a reader that emptied its ring waits for a doorbell byte that
/// was counted but is not there yet (see `Connection::settle`).
const SETTLE_PATIENCE: Duration = Duration::from_millis(100);

/// Doorbell bytes a lazy reader leaves queued before it takes them (an end
/// fills at about 40: each costs 768 bytes of the peer's 32 KiB).
const STALE_BYTES: usize = 16;

/// An edge-triggered reader takes its doorbell bytes once this many are
/// queued: below the producer's cap (`shmnet_ring`'s EDGE_BACKLOG, 4), so
/// that edges keep coming however it reads.
const EDGE_BYTES: usize = 2;

/// Why settling ended the read.
pub(super) enum Settled {
    /// The peer is gone and the ring is empty: end of stream.
    HungUp,
    /// The peer wrote past the ring (see `reset_foreign`).
    Foreign,
}

impl Connection {
    /// After the ring was seen empty: take the bytes the peer sent for data
    /// already read (doorbells, fillers), so that the fd stops looking
    /// readable — but only after re-arming our flag and re-checking the
    /// ring, and only the bytes counted before re-arming (a byte rung after
    /// that is for new data and must stay; if data arrived, nothing is
    /// taken, so the fd stays readable).
    ///
    /// A producer publishes data and only then counts and rings; a reader
    /// can consume the data in between. So first we wait until the producer
    /// is outside its write (`wait_producer_idle`: a short yield, then a
    /// futex sleep, so a descheduled producer gets the CPU): from then on,
    /// every ring for data already read is counted. A byte counted but not
    /// arrived yet is waited for too. Otherwise it would make the fd
    /// readable later with nothing to read, which an event loop like wrk's
    /// counts as an error.
    ///
    /// Returns whether data arrived meanwhile; Err for a hang-up with an
    /// empty ring (end of stream) or for foreign bytes.
    pub(super) fn settle(&self, rx: &mut Consumer, check_peer: bool) -> Result<bool, Settled> {
        self.settle_as(rx, check_peer, true)
    }

    /// `settle`; `raise`: false for a reader whose flag may stay down
    /// (`defer_arming` said so): the bytes of data already read are taken
    /// all the same, and only the ring is looked at again. (With the flag
    /// down the producer counts no new ring; one it counted before is in
    /// `owed`, after its busy word cleared.)
    pub(super) fn settle_as(
        &self,
        rx: &mut Consumer,
        check_peer: bool,
        raise: bool,
    ) -> Result<bool, Settled> {
        // Looking at what is queued (a system call) tells a hang-up and
        // foreign bytes; a blocking reader learns both from its wait instead.
        let pending = if check_peer {
            self.bell.peek()
        } else {
            Pending {
                hung_up: false,
                foreign: false,
            }
        };
        if pending.foreign || self.bell.foreign.load(Ordering::Relaxed) {
            return Err(self.reset_foreign(rx));
        }
        let start = Instant::now();
        self.wait_producer_idle(rx);
        let owed = self.owed(rx);
        let readable = if raise {
            rx.arm(WaitKind::Doorbell)
        } else {
            rx.readable_now()
        };
        if readable {
            return Ok(true);
        }
        let hung_up = self.take_owed(rx, owed, pending.hung_up, start);
        // Look again after taking: a producer that found our flag up while
        // our end was full of bytes could not ring (EAGAIN), and its ring
        // cleared the flag; the bytes we took were the only sign of its
        // data. (Lazy readers leave bytes queued, so an end can fill.)
        if rx.readable_now() {
            return Ok(true);
        }
        if hung_up && self.bell.queued() == 0 {
            return Err(Settled::HungUp);
        }
        if crate::platform::log::enabled(crate::platform::log::Level::Debug) && !rx.readable_now() {
            let q = self.bell.queued();
            if q > 0 {
                log!(
                    debug,
                    "{} <- {}: readable with an empty ring: {q} bytes queued, owed {}",
                    self.local,
                    self.peer,
                    self.owed(rx),
                );
            }
        }
        Ok(false)
    }

    /// Settling's step (a): waits until the producer is outside its write.
    /// A producer that died inside a write (SIGKILL) leaves the word busy
    /// for good; once it has been seen stuck, it is not waited for again
    /// until it reads idle (another process of that side wrote).
    fn wait_producer_idle(&self, rx: &Consumer) {
        let stuck = &self.pacing.busy_stuck;
        if !rx.notify().producer_busy() {
            stuck.store(false, Ordering::Relaxed);
        } else if !stuck.load(Ordering::Relaxed)
            && !rx
                .notify()
                .wait_producer_idle(SETTLE_PATIENCE, || !self.bell.hung_up())
        {
            stuck.store(true, Ordering::Relaxed);
            log!(
                debug,
                "{} <- {}: producer busy for {SETTLE_PATIENCE:?}",
                self.local,
                self.peer
            );
        }
    }

    /// Settling's step (d): takes the `owed` bytes, waiting for those still
    /// in flight until `SETTLE_PATIENCE` after `start`. Returns whether the
    /// peer hung up (`hung_up`: known to before).
    fn take_owed(&self, rx: &Consumer, mut owed: usize, mut hung_up: bool, start: Instant) -> bool {
        if self.keeps_bytes() {
            return hung_up;
        }
        while owed > 0 && !hung_up {
            let (got, eof) = self.bell.take(owed);
            hung_up = eof;
            // A ring the producer took back (it could not send it) is no
            // longer owed.
            owed = (owed - got).min(self.owed(rx));
            if owed == 0 || hung_up || rx.readable_now() {
                break;
            }
            let waited = start.elapsed();
            if waited >= SETTLE_PATIENCE {
                log!(
                    debug,
                    "{} <- {}: {owed} doorbell bytes never came",
                    self.local,
                    self.peer
                );
                break;
            }
            if waited < Duration::from_micros(20) {
                crate::platform::sandbox::yield_cpu();
            } else {
                self.bell.wait_briefly(Duration::from_millis(1));
            }
        }
        hung_up
    }

    /// Our epoll_wait reported this edge-triggered connection
    /// (`readiness::collected`): with `EDGE_BACKLOG - 1` bytes or more
    /// untaken, the producer is about to stop ringing, and an arrival after
    /// this report would make no edge; its bytes are taken but the newest
    /// (whose arrival may be the one just reported: the fd stays readable
    /// for the kernel's look at report time). A reader that reads on each
    /// edge never gets here (its reads take them).
    pub(crate) fn edge_collected(&self) {
        if !self.ready.edge.load(Ordering::Relaxed)
            || self.ready.waiters.load(Ordering::SeqCst) != 0
            || self.keeps_bytes()
        {
            return;
        }
        let mut guard = self.rx.lock();
        let Some(rx) = self.receiver(&mut guard.consumer) else {
            return;
        };
        let owed = self.owed(rx);
        // With the ring empty, the next read settles (takes them all, as
        // `settle` does): the newest byte would stand for nothing here.
        // (Looked at only when there is something to take.)
        if owed + 1 >= shmnet_ring::layout::EDGE_BACKLOG as usize
            && rx.available().is_ok_and(|a| a > 0)
        {
            self.bell.take(owed - 1);
        }
    }

    /// The peer wrote past the ring: reset rather than lose data silently.
    pub(super) fn reset_foreign(&self, rx: &Consumer) -> Settled {
        log!(
            error,
            "{} -> {}: the peer wrote data past libshmnet (stdio or a raw syscall on the \
             socket); resetting the connection rather than losing it silently",
            self.peer,
            self.local
        );
        rx.reset();
        Settled::Foreign
    }

    /// Bytes the peer sent us that we have not taken: doorbells for data
    /// and fillers from its writes. Peer-written: a bounded hint, never a
    /// loop bound.
    pub(super) fn owed(&self, rx: &Consumer) -> usize {
        (rx.notify().doorbells_rung().wrapping_sub(self.bell.taken()) as usize).min(1 << 20)
    }

    /// After a read (not a peek) that got data: the doorbell bytes of the
    /// data read, which would otherwise keep the fd readable or fill our
    /// end of the Unix connection.
    /// `took`: this read's sleep took the doorbell byte it woke on (a lazy
    /// sleep).
    pub(super) fn tidy_after_read(&self, rx: &mut Consumer, took: bool) {
        // Emptied the ring? Then drop the doorbell bytes of the data just
        // read, or a poller would see the fd readable with nothing to read.
        // (A producer still inside its write can only ring for it if it saw
        // our flag up: see `busy` below.)
        let lazy = self.lazy();
        if !lazy && rx.available() == Ok(0) {
            let armed = rx.notify().may_ring();
            // A flag seen down was cleared by a ring already counted —
            // unless deferral took it down (`disarm`): a producer that saw
            // it up just before is still inside its write, and rings once
            // the flag is raised again (before the next sleep) for data this
            // read took. The kernel would then report the fd with nothing
            // to read, which wrk counts as an error. So once deferral was
            // ever on, a busy producer is waited for whatever the flag says.
            let deferring = self.ready.maybe_deferred.load(Ordering::Relaxed);
            let busy = (armed || deferring) && rx.notify().producer_busy();
            if !took && self.defer_arming() {
                // The flag stays down while this thread is busy with its
                // epoll set; the bytes of data already read are taken as
                // settling would, without raising the flag again.
                self.edges_off(rx);
                if self.owed(rx) > 0 || busy {
                    // One patience for both steps, as in `settle`.
                    let start = Instant::now();
                    self.wait_producer_idle(rx);
                    let owed = self.owed(rx);
                    self.take_owed(rx, owed, false, start);
                }
            } else if self.owed(rx) > 0 || busy || (!armed && took) {
                // A flag down after this read's own sleep took the byte it
                // woke on (the reader was lazy then; the fd was put in an
                // epoll set meanwhile): settling raises it again, or the
                // next write would not ring and a poller would sleep with
                // data in the ring. (A spinning reader's flag is down too,
                // and stays so.)
                let _ = self.settle(rx, false);
            }
        } else if lazy
            && self.owed(rx) >= STALE_BYTES
            && self.ready.waiters.load(Ordering::SeqCst) == 0
        {
            // A lazy reader leaves the bytes of data it read queued; before
            // they fill our end (the producer's rings would fail), take
            // those counted so far: their data was read, or is in the ring,
            // which a lazy reader looks at before it sleeps.
            let owed = self.owed(rx);
            if !self.keeps_bytes() {
                self.bell.take(owed);
            }
        } else if self.ready.edge.load(Ordering::Relaxed)
            && self.owed(rx) >= EDGE_BYTES
            && self.ready.waiters.load(Ordering::SeqCst) == 0
        {
            // An edge-triggered reader need not read until EAGAIN (nginx
            // reads what FIONREAD says and waits for the next edge), so the
            // ring may never empty for it to settle; but its producer stops
            // ringing with `EDGE_BACKLOG` bytes untaken, and the next edge
            // would never come. So the bytes counted so far are taken but
            // the newest: its arrival may not have been reported yet, and
            // the kernel looks at the fd again when it reports an edge (one
            // found empty then is not reported). (A deferred reader too: its
            // flag may be up again, idle or read without emptying its ring,
            // and then only its producer's rings make edges.) The byte left
            // keeps the fd readable for a level-triggered registration of
            // the same connection elsewhere while the ring holds data.
            let owed = self.owed(rx);
            if !self.keeps_bytes() {
                self.bell.take(owed.saturating_sub(1));
            }
        }
    }
}
