//! How long an accept waits for the connect message of a connection it
//! took from a rendezvous before parking it: a short wait per call
//! (`ARRIVAL_PATIENCE`), within the listener's share of its time
//! (`WAIT_SHARE_US_PER_MS`), so that a silent connector cannot make a
//! server spend its time in accept (docs/security.md).
#![forbid(unsafe_code)]

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::io::Errno;

use crate::sockets::conn::Connection;
use crate::transport::parking::monotonic_ms;

use super::accept::Ready;
use super::Listener;

/// How long one accept waits, in all, for the message of connections it
/// takes from a rendezvous before parking them. The kernel's listener is
/// readable only once a connection is established; ours as soon as the
/// connector's connect() queued it, a few microseconds before its message
/// (sent right after) arrives — so without a short wait, an accept just
/// after epoll said readable would often say EAGAIN (servers log an error
/// per EAGAIN: memcached). Bounded, so that a connector that never sends
/// costs an accept at most this, once.
const ARRIVAL_PATIENCE: std::time::Duration = std::time::Duration::from_millis(2);

/// The waiting for late messages a listener may do, in microseconds per
/// millisecond (2%): a connector of an admitted user that connects and
/// stays silent cannot make a server spend more of its time in accept
/// than this; waits are a few microseconds when connectors are only late.
const WAIT_SHARE_US_PER_MS: u64 = 20;
/// The most of that saved up (ten full waits).
pub(super) const WAIT_BUDGET_MAX_US: u64 = 20_000;

/// What is left of `ARRIVAL_PATIENCE` in one accept.
pub(super) struct Patience {
    left: std::time::Duration,
}

impl Patience {
    /// Waits (sleeping, not spinning: on a busy machine the connector may
    /// need our CPU) for `conn` to become readable, from what is left;
    /// whether it did.
    pub(super) fn wait(&mut self, conn: BorrowedFd<'_>) -> bool {
        if self.left.is_zero() {
            return false;
        }
        let start = std::time::Instant::now();
        let ready =
            crate::transport::handshake::wait_readable(conn, Some(self.left)).unwrap_or(false);
        self.left = self.left.saturating_sub(start.elapsed());
        ready
    }
}

impl Listener {
    /// A shared-memory connection whose handshake is complete, if one is
    /// there: parked ones first (their message has arrived), then new ones.
    pub(super) fn accept_shm(
        &self,
        inst: BorrowedFd<'_>,
        ready: &Ready,
    ) -> Result<Option<(OwnedFd, Connection)>, Errno> {
        // (Threads and processes sharing the listener race on the budget:
        // each may overdraw it by one wait, which is fine.)
        let now = monotonic_ms();
        let since = now.saturating_sub(self.budget_at_ms.swap(now, Ordering::Relaxed));
        let budget = (self.wait_budget_us.load(Ordering::Relaxed)
            + since.saturating_mul(WAIT_SHARE_US_PER_MS))
        .min(WAIT_BUDGET_MAX_US);
        let allowed = ARRIVAL_PATIENCE.min(std::time::Duration::from_micros(budget));
        let mut patience = Patience { left: allowed };
        let found = self.accept_new(inst, ready, &mut patience);
        let spent = allowed.saturating_sub(patience.left).as_micros() as u64;
        self.wait_budget_us
            .store(budget.saturating_sub(spent), Ordering::Relaxed);
        found
    }
}
