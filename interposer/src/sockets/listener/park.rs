//! The listener's parking queue (see `sockets::listener`'s module docs
//! and `transport::parking`): parking a connection whose message is late,
//! and looking at the parked ones again.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::event::epoll;
use rustix::io::Errno;

use crate::platform::sys;
use crate::sockets::conn::Connection;
use crate::transport::parking::{
    arrival, monotonic_ms, Arrival, Record, Scope, State, PARK_PATIENCE,
};

use super::admission::Step;
use super::{Listener, PARKED, QUEUE};

/// Parked connections per listener.
const PARKED_MAX: usize = 64;

impl Listener {
    /// Looks at every parked connection: with `take`, returns the first
    /// whose handshake completes; puts the others back, re-armed (an event
    /// of theirs may have been consumed: a wake-up must not be lost); drops
    /// the idle-too-long and the bad ones, and the oldest beyond
    /// `PARKED_MAX`. EMFILE (with `take`): one is waiting but the process
    /// has no fds for it, as the kernel's accept would say.
    pub(super) fn unpark(
        &self,
        inst: BorrowedFd<'_>,
        take: bool,
    ) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        self.unpark_to(inst, take, PARKED_MAX)
    }

    /// `unpark`, keeping at most `bound` of those still waiting.
    fn unpark_to(
        &self,
        inst: BorrowedFd<'_>,
        take: bool,
        bound: usize,
    ) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        let now = monotonic_ms();
        let mut found = None;
        let mut full = None;
        let mut busy = false;
        // (Whether its message is there.)
        let mut kept: Vec<(Record, OwnedFd, bool)> = Vec::new();
        self.parking.swept(now);
        loop {
            // Those held in memory first: taking one needs no fd.
            let popped = match self.parking.pop_held() {
                Some(got) => Some(got),
                // A parked fd popped without room is lost (the kernel drops
                // what it cannot install): room is checked before each one
                // (the ones held meanwhile take fds too).
                None => match sys::room_for_fd(inst).and_then(|()| self.parking.pop()) {
                    // Another thread or process is popping (or stopped
                    // while it was): the queue stays watched, and the
                    // caller looks at the rendezvous meanwhile.
                    Err(Errno::AGAIN) => {
                        busy = true;
                        break;
                    }
                    Err(e) => {
                        full = Some(e);
                        break;
                    }
                    Ok(got) => got,
                },
            };
            let Some((rec, mut conn)) = popped else {
                break;
            };
            let scope = rec.scope;
            match arrival(conn.as_fd()) {
                Arrival::Complete if take && found.is_none() && full.is_none() => {
                    match self.handshake(&mut conn, scope, rec.state, &mut None) {
                        Step::Done(c) => found = Some((conn, c)),
                        Step::Pending(state) => kept.push((Record { state, ..rec }, conn, false)),
                        Step::Dropped | Step::Withdrawn => {}
                        // (Its number is not ours any more.)
                        Step::Lost => {
                            let _ = std::os::fd::IntoRawFd::into_raw_fd(conn);
                        }
                        Step::NoRoom(e) => {
                            full = Some(e);
                            kept.push((rec, conn, true));
                        }
                    }
                }
                Arrival::Empty if rec.deadline_ms <= now => self.dropped("idle"),
                // Armed again, empty ones too: an event of theirs may have
                // been consumed by another thread or process (`ready`) while
                // we held them, their message arriving meanwhile.
                Arrival::Complete => kept.push((rec, conn, true)),
                Arrival::Empty => kept.push((rec, conn, false)),
                // A connector that offered reuse and gave up waiting for
                // our answer hangs up: routine (see `pool`), not a fault.
                Arrival::Bad if rec.state == State::Declined => log!(
                    debug,
                    "accept on {}: the connector withdrew its reuse offer",
                    self.local
                ),
                Arrival::Bad => self.dropped("a short message or none"),
            }
        }
        // Over the bound: the oldest of those still waiting for their
        // message go first (they had the most time). Whole ones are never
        // dropped: they are served by the next accepts.
        kept.sort_by_key(|(rec, _, _)| rec.deadline_ms);
        let mut excess = kept.len().saturating_sub(bound);
        kept.retain(|(_, _, whole)| {
            if excess > 0 && !whole {
                excess -= 1;
                self.dropped("too many parked");
                return false;
            }
            true
        });
        for (rec, conn, _) in kept {
            self.requeue(inst, conn, rec);
        }
        self.watch_queue(inst, full.is_some() || busy);
        match (found, full) {
            (None, Some(e)) if take => Err(e),
            (found, _) => Ok(found),
        }
    }

    /// Watches the parking queue while the process has no room to take
    /// what it holds (`full`); stops watching it once it has.
    fn watch_queue(&self, inst: BorrowedFd<'_>, full: bool) {
        // Until there is room, the queue keeps the instance readable,
        // as a kernel listener stays readable while its accept says
        // EMFILE (the event that woke us was consumed). (Whether
        // anything is queued this process cannot tell: another process
        // sharing the listener may have parked it.)
        let Some(pair) = self.parking.pair() else {
            // Never made: nothing was queued (those held are armed).
            return;
        };
        if full {
            let watch = epoll::add(
                inst,
                pair.queue(),
                epoll::EventData::new_u64(QUEUE),
                epoll::EventFlags::IN,
            );
            if watch.is_ok() || watch == Err(Errno::EXIST) {
                self.queue_watched.store(true, Ordering::Relaxed);
            }
        } else if self.queue_watched.swap(false, Ordering::Relaxed) {
            let _ = epoll::delete(inst, pair.queue());
        }
    }

    /// Parks `conn` (see the listener's module docs), armed: a new one was
    /// never registered, and a declined reuse offer's event was consumed.
    pub(super) fn park(&self, inst: BorrowedFd<'_>, conn: OwnedFd, scope: Scope, state: State) {
        let rec = Record {
            state,
            scope,
            deadline_ms: monotonic_ms() + PARK_PATIENCE.as_millis() as u64,
        };
        if self.parking.len_hint() >= PARKED_MAX {
            // Sweep first, so an idle crowd cannot keep newcomers out; down
            // to three quarters, so that a flood of silent connectors costs
            // one sweep per sixteen of them, not one each.
            let none = self.unpark_to(inst, false, PARKED_MAX - PARKED_MAX / 4);
            debug_assert!(none.is_ok_and(|n| n.is_none()));
        }
        self.requeue(inst, conn, rec);
    }

    /// Puts `conn` in the queue, then arms it one-shot in the listener's
    /// instance: in this order, so that no other thread or process can
    /// consume its event before it is in the queue to be found. (A
    /// registration is keyed by fd number too: one made under a number the
    /// fd had before it last went through the queue stays, disarmed once it
    /// fired, until the connection is closed for good; the extra wake-ups
    /// they may give are harmless.)
    fn requeue(&self, inst: BorrowedFd<'_>, conn: OwnedFd, rec: Record) {
        let arm = |conn: BorrowedFd<'_>| {
            let flags =
                epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
            let data = epoll::EventData::new_u64(PARKED);
            let armed = match epoll::add(inst, conn, data, flags) {
                Err(Errno::EXIST) => epoll::modify(inst, conn, data, flags),
                r => r,
            };
            if let Err(e) = armed {
                // Queued but unwatched: found by the next look (at most
                // PARK_PATIENCE later).
                log!(
                    debug,
                    "accept on {}: a parked connection unwatched ({e})",
                    self.local
                );
            }
        };
        if self.parking.push(conn, rec, &arm).is_err() {
            self.dropped("the parking queue is full");
        }
    }
}
