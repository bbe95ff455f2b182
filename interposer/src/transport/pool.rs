//! Reuse of connection segments between the same two processes.
//!
//! A fresh segment costs memfd_create, ftruncate, seals, an mmap on each
//! side, a page fault per touched page on each side, then munmap on each
//! side and the memfd's teardown — more than a kernel TCP connection costs
//! in all. Short connections between the same two processes (a client
//! calling a server again and again) reuse the segment of an earlier one
//! instead, once both sides are done with it.
//!
//! A segment may only carry a new connection once no one else can reach
//! it: peers are hostile, and memory one of them can still write into must
//! never carry another process's data. Reusing a segment between the two
//! processes that already share it keeps that true:
//!
//! - The connector keeps a segment whose connection it dropped (`Drop for
//!   Connection`, `put`) under the address it connected to; the acceptor
//!   keeps it under the connector's pid (SO_PEERCRED of the rendezvous
//!   connection, which the kernel vouches for) and the connector's key for
//!   it. Each side keeps it only if no fork happened since it mapped it (a
//!   child maps it too), and drops it from the pool at the next fork (child
//!   and parent).
//! - The connector offers it again only when this process holds no other
//!   handle on it and the acceptor flagged its side released (in the
//!   segment: a lie there only spoils connections between the two of
//!   them). The acceptor claims it only if it holds it for that pid and key
//!   — so only the very process that accepted it before can take it: a
//!   third process that learnt the key (or was handed the memfd by a
//!   hostile peer) has another pid and another set of segments.
//! - Connect waits for the verdict (`handshake`; a non-blocking one
//!   returns EINPROGRESS and looks later, `conn::Offered`); a declined offer falls
//!   back to a fresh segment on the same Unix connection, and an offer the
//!   acceptor does not answer in time is withdrawn (a CAS on the segment's
//!   claim word decides against a late claim) and the segment dropped.
//!   Offers pause after either: after an unanswered one to every address,
//!   after declines only to that address, once they reach half of its
//!   recent offers where several acceptor processes serve it
//!   (`offer_declined`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shmnet_ring::Segment;

use crate::platform::internal_fd::KeptMemfd;
use crate::platform::lock::Mutex;

/// Which side kept a segment, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// We connected to `dest`.
    Connector { dest: SocketAddr },
    /// We accepted from the process `peer_pid`.
    Acceptor { peer_pid: u32 },
}

/// What a connection remembers of its segment, to return it to the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    /// The connector's name for the segment.
    pub key: u64,
    /// Fork generation when this process mapped the segment (or took it
    /// from the pool, which checked it).
    pub generation: u32,
    pub side: Side,
}

struct Entry {
    seg: Segment,
    ticket: Ticket,
    /// Its memfd, if the connection kept one (for exec): handed out with it.
    memfd: Option<KeptMemfd>,
}

impl Entry {
    fn into_parts(self) -> (Segment, Ticket) {
        let mut seg = self.seg;
        if let Some(fd) = self.memfd {
            seg.set_fd(fd.into_owned());
        }
        (seg, self.ticket)
    }
}

/// Segments kept, both sides together. A pooled segment that carried at
/// most its first data segment each way holds a few pages.
const CAPACITY: usize = 16;

static POOL: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Connects left to make without offering a segment, after an offer went
/// unanswered (an acceptor that does not accept until the connector does
/// something else would make every connect wait).
static COOLDOWN: AtomicU32 = AtomicU32::new(0);
/// The next cooldown: 4 connects after an offer went unanswered, doubling
/// while offers keep going unanswered, up to 64; back to 4 once one is
/// answered. A loaded machine (an acceptor not scheduled within the
/// patience) loses reuse for a few connects, not for 64.
static NEXT_COOLDOWN: AtomicU32 = AtomicU32::new(COOLDOWN_FIRST);
const COOLDOWN_FIRST: u32 = 4;
const COOLDOWN_MAX: u32 = 64;

/// A key for a new segment: unique within this process (the acceptor pairs
/// it with our pid).
pub(crate) fn new_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Keeps `seg`, whose connection is gone on this side, for reuse: marks
/// it released for the peer. Dropped instead if a fork happened since it
/// was mapped, or it was used for much data.
pub(crate) fn put(seg: Segment, ticket: Ticket, memfd: Option<KeptMemfd>) {
    if ticket.generation != crate::platform::fork::generation() || !seg.lightly_used() {
        return;
    }
    // An acceptor in this very process would have to answer our offer
    // while we wait in connect: a single thread that connects, then
    // accepts, would wait for nothing. Connections within one process
    // always get fresh segments.
    let me = crate::platform::fork::pid();
    match ticket.side {
        Side::Connector { .. } if seg.acceptor_pid() == me => return,
        Side::Acceptor { peer_pid } if peer_pid == me => return,
        _ => {}
    }
    seg.release();
    let evicted = {
        let mut pool = POOL.lock();
        pool.push(Entry { seg, ticket, memfd });
        if pool.len() > CAPACITY {
            Some(pool.remove(0))
        } else {
            None
        }
    };
    if let Some(e) = &evicted {
        // (Mapped in this very process since the last fork: no other
        // process keeps it on our side.) The peer stops offering it: with
        // more connections than the pool holds, the two sides' pools had
        // diverged, and an offer of a segment we no longer keep was a
        // decline (36% of wrk's connections against nginx), each one a race
        // with the connector's 2 ms give-up.
        if e.ticket.generation == crate::platform::fork::generation() {
            e.seg.unkeep();
        }
    }
    drop(evicted); // unmapped outside the lock
}

/// The memfds pooled segments kept, given up (`sockets::spare_fds`; the
/// caller closes them, outside our lock).
pub(crate) fn give_back_memfds() -> Vec<KeptMemfd> {
    POOL.lock()
        .iter_mut()
        .filter_map(|e| e.memfd.take())
        .collect()
}

/// Connector: a kept segment for `dest` that both sides released, offered
/// (re-initialised on our side) and ready to be named in a `Reuse`
/// message; with its ticket.
pub(crate) fn offer_for(dest: SocketAddr) -> Option<(Segment, Ticket)> {
    if COOLDOWN
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
        .is_ok()
    {
        return None;
    }
    if OFFERS.lock().paused(dest) {
        return None;
    }
    let found =
        take_first(|e| e.ticket.side == (Side::Connector { dest }) && e.seg.offer().is_ok());
    found.map(Entry::into_parts)
}

/// What an acceptor found for a reuse offer (`claim`).
pub(crate) enum Claim {
    /// The kept segment, claimed and re-initialised on our side.
    Taken(Segment, Ticket),
    /// Not kept here (another process has it, or it was dropped), or not
    /// sound: a new segment is in order.
    NotHere,
    /// Kept here, but the connector withdrew the offer (it gave up
    /// waiting and dialed again, `Offered::expire`): the claim word says so
    /// exactly, so this connection is nobody's.
    Withdrawn,
}

/// Acceptor: the kept segment `peer_pid` named `key`, claimed and
/// re-initialised on our side. A segment found but not claimable (the
/// offer was withdrawn, the connector's direction is unsound) is dropped.
pub(crate) fn claim(peer_pid: u32, key: u64) -> Claim {
    let found =
        take_first(|e| e.ticket.key == key && e.ticket.side == (Side::Acceptor { peer_pid }));
    let Some(e) = found else {
        return Claim::NotHere;
    };
    match e.seg.claim() {
        Ok(()) => {
            let (seg, ticket) = e.into_parts();
            Claim::Taken(seg, ticket)
        }
        Err(err) => {
            log!(debug, "segment {key} of pid {peer_pid} not reused: {err}");
            if e.seg.withdrawn() {
                Claim::Withdrawn
            } else {
                Claim::NotHere
            }
        }
    }
}

/// Removes and returns the first kept segment `wanted` accepts; entries
/// mapped before a fork are dropped on the way (unmapped outside the lock).
fn take_first(mut wanted: impl FnMut(&Entry) -> bool) -> Option<Entry> {
    let generation = crate::platform::fork::generation();
    let mut stale = Vec::new();
    let found = {
        let mut pool = POOL.lock();
        let mut found = None;
        let mut i = 0;
        while i < pool.len() {
            if pool[i].ticket.generation != generation {
                stale.push(pool.swap_remove(i));
            } else if wanted(&pool[i]) {
                found = Some(pool.swap_remove(i));
                break;
            } else {
                i += 1;
            }
        }
        found
    };
    drop(stale);
    found
}

/// An offer went unanswered: make fresh segments for a while, longer each
/// time in a row.
pub(crate) fn cool_down() {
    let connects = NEXT_COOLDOWN
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_mul(2).min(COOLDOWN_MAX))
        })
        .unwrap_or(COOLDOWN_MAX);
    COOLDOWN.store(connects, Ordering::Relaxed);
}

/// The acceptor claimed our offer to `dest`: offers go on, and the next
/// pause after an unanswered one is short again.
pub(crate) fn offer_claimed(dest: SocketAddr) {
    NEXT_COOLDOWN.store(COOLDOWN_FIRST, Ordering::Relaxed);
    OFFERS.lock().record(dest, false);
}

/// The acceptor declined our offer to `dest` of a segment that the process
/// `acceptor_pid` accepted before. Where this process keeps segments for
/// `dest` from another acceptor process too, `dest` is served by several
/// processes sharing one rendezvous (a forked server's workers, each
/// keeping its own segments), and an offer reaches the one that keeps it
/// only by chance. Each decline costs a round trip to a worker that may be
/// busy before the fresh segment made anyway (nginx with 2 workers and ab
/// -c 10: half the offers declined, half the requests/s of never
/// offering, docs/benchmarks.md "Short connections with 2 nginx
/// workers"), each claim saves a fresh segment: offers to `dest` alone
/// pause for `DECLINE_PAUSE` connects once declines reach half of its
/// last offers. A sequential client meets the right worker more often
/// (a third declined against 2 nginx workers) and goes on offering; with
/// one acceptor process a decline is rare (the pools diverged).
pub(crate) fn offer_declined(dest: SocketAddr, acceptor_pid: u32) {
    NEXT_COOLDOWN.store(COOLDOWN_FIRST, Ordering::Relaxed);
    let mostly_declined = OFFERS.lock().record(dest, true);
    if !mostly_declined {
        return;
    }
    let several = POOL.lock().iter().any(|e| {
        e.ticket.side == (Side::Connector { dest }) && e.seg.acceptor_pid() != acceptor_pid
    });
    if several {
        OFFERS.lock().pause(dest);
    }
}

/// Connects to a destination left to make without offering, after its
/// declines reached half of its recent offers.
const DECLINE_PAUSE: u32 = 16;
/// Destinations whose recent offers are remembered; the oldest is forgotten.
const OFFER_DESTS: usize = 8;

/// Recent offers' outcomes, per destination (`offer_declined`).
static OFFERS: Mutex<OfferLog> = Mutex::new(OfferLog(Vec::new()));

struct DestOffers {
    dest: SocketAddr,
    /// The last `offers` outcomes (at most 8), newest in bit 0: 1 declined.
    declined: u8,
    offers: u8,
    /// Connects left without offering.
    pause: u32,
}

struct OfferLog(Vec<DestOffers>);

impl OfferLog {
    fn entry(&mut self, dest: SocketAddr) -> &mut DestOffers {
        let i = match self.0.iter().position(|d| d.dest == dest) {
            Some(i) => i,
            None => {
                if self.0.len() >= OFFER_DESTS {
                    self.0.remove(0);
                }
                self.0.push(DestOffers {
                    dest,
                    declined: 0,
                    offers: 0,
                    pause: 0,
                });
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    /// Notes an offer's outcome: whether at least 4 offers are known and
    /// declines are at least half of them.
    fn record(&mut self, dest: SocketAddr, declined: bool) -> bool {
        let d = self.entry(dest);
        d.declined = (d.declined << 1) | u8::from(declined);
        d.offers = (d.offers + 1).min(8);
        d.offers >= 4 && 2 * d.declined.count_ones() >= u32::from(d.offers)
    }

    fn pause(&mut self, dest: SocketAddr) {
        self.entry(dest).pause = DECLINE_PAUSE;
    }

    /// Whether offers to `dest` pause for this connect (counted).
    fn paused(&mut self, dest: SocketAddr) -> bool {
        match self.0.iter_mut().find(|d| d.dest == dest) {
            Some(d) if d.pause > 0 => {
                d.pause -= 1;
                true
            }
            _ => false,
        }
    }
}

/// In the child after fork: nothing kept is ours alone any more.
pub(crate) fn after_fork_child() {
    POOL.reset_after_fork();
    POOL.lock().clear();
    OFFERS.reset_after_fork();
    OFFERS.lock().0.clear();
    COOLDOWN.store(0, Ordering::Relaxed);
    NEXT_COOLDOWN.store(COOLDOWN_FIRST, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declines_pause_only_their_destination_at_half() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:81".parse().unwrap();
        let mut log = OfferLog(Vec::new());
        // A third declined (a sequential client, 2 workers): once 8 offers
        // are known, never half.
        for i in 0..24 {
            let mostly = log.record(a, i % 3 == 1);
            assert!(i < 8 || !mostly, "offer {i}");
        }
        // Fewer than 4 offers known: no verdict yet.
        assert!(!log.record(b, true));
        assert!(!log.record(b, true));
        assert!(!log.record(b, false));
        assert!(log.record(b, true));
        log.pause(b);
        assert!(!log.paused(a));
        for _ in 0..DECLINE_PAUSE {
            assert!(log.paused(b));
        }
        assert!(!log.paused(b));
        // Half of the last 8 declined.
        for i in 0..8 {
            log.record(a, i % 2 == 0);
        }
        assert!(log.record(a, true));
    }

    #[test]
    fn oldest_destination_forgotten() {
        let mut log = OfferLog(Vec::new());
        for port in 0..(OFFER_DESTS as u16 + 3) {
            log.record(SocketAddr::from(([127, 0, 0, 1], port)), true);
        }
        assert_eq!(log.0.len(), OFFER_DESTS);
        assert_eq!(log.0[0].dest.port(), 3);
    }
}
