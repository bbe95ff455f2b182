//! Edge-triggered members whose flag is left down ("doorbells that
//! disappear under load", docs/architecture.md): the kernel reports an
//! EPOLLIN edge for each arrival of data on a TCP socket; with the flag
//! down no doorbell byte makes one, so our epoll_wait reports the edge
//! itself. It does so when data arrived since the last edge it reported
//! (`Readiness::edge_seen`, a position in the ring) and the last arrival
//! did not ring (`rung_at`: then the kernel reports it from the byte).
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use shmnet_ring::Consumer;

use super::Connection;

/// `edge_seen` after an ADD or MOD: report once if the ring holds data,
/// as the kernel reports a ready fd registered with EPOLLET. (No ring
/// position reaches it: a ring of 1 GiB at most would take 2^64 bytes.)
pub(super) const FRESH: u64 = u64::MAX;

impl Connection {
    /// The connection defers to its set as an edge-triggered member (see
    /// `readiness::set::Set::deferral`): our epoll_wait reports its edges
    /// while its flag is down (`edge_news`).
    pub(crate) fn edge_deferred(&self) -> bool {
        self.ready.edge_deferral.load(Ordering::Relaxed)
    }

    /// Registered (ADD or MOD) with EPOLLET while the ring held data that
    /// may have no doorbell byte: an edge is due while the ring holds data,
    /// arrived or not since the last one (otherwise `watch` or
    /// `watch_deferred` noted where the ring was written to: later
    /// arrivals are edges).
    pub(crate) fn edge_fresh(&self) {
        self.ready.edge_seen.store(FRESH, Ordering::Relaxed);
    }

    /// Where the ring was written to when data arrived that no edge
    /// reported yet, while the ring holds data: an edge is due. None: the
    /// last arrival rang (the kernel reports it from the byte, or did), or
    /// was reported here already, or was read. Look after the flag went
    /// down or, before a sleep, after it went up (its fence): a publish
    /// then either rang or is seen here.
    pub(crate) fn edge_news(&self) -> Option<u64> {
        let mut guard = self.rx.lock();
        let rx = self.receiver(&mut guard.consumer)?;
        let notify = rx.notify();
        let written = notify.written();
        let due = self.edge_due(written, notify.rung_at());
        (due && rx.readable_now()).then_some(written)
    }

    /// `edge_news` said `at`, and the edge was reported.
    pub(crate) fn edge_reported(&self, at: u64) {
        self.ready.edge_seen.store(at, Ordering::Relaxed);
    }

    /// ADD or MOD: what is in the ring now is the registration's own edge
    /// (reported if its data has no byte, `edge_fresh`); what arrives after
    /// `written` is new. Read before the ring is looked at, so that a
    /// publish in between is one or the other.
    pub(super) fn edge_joined(&self, written: u64) {
        self.ready.edge_seen.store(written, Ordering::Relaxed);
    }

    /// `maybe_readable` for a spinning wait, with `edge_news`'s rule for an
    /// edge-triggered member whose data was reported already (without a
    /// lock: a spinner that found such data would otherwise take the
    /// table's lock at every look, for nothing).
    pub(crate) fn maybe_news(&self) -> bool {
        let readable = self.maybe_readable();
        if !readable || !self.edge_deferred() {
            return readable;
        }
        match self.probe.get() {
            Some(p) => {
                let (written, rung_at) = p.written_and_rung();
                self.edge_due(written, rung_at)
            }
            None => true,
        }
    }

    fn edge_due(&self, written: u64, rung_at: u64) -> bool {
        let seen = self.ready.edge_seen.load(Ordering::Relaxed);
        seen == FRESH || (written != seen && written != rung_at)
    }

    /// The flag goes (or stays) down for a deferred reader: an
    /// edge-triggered one also stops ringing for every publish (its
    /// arrivals are reported by our epoll_wait, `edge_news`). Under the rx
    /// lock, as `arm_always` raises it again.
    pub(super) fn edges_off(&self, rx: &Consumer) {
        if self.ready.edge.load(Ordering::Relaxed) {
            rx.notify().set_edges(false);
        }
    }

    /// The flag goes up: an edge-triggered reader's producer rings for
    /// every publish again (before the flag's fence, `Consumer::arm`).
    pub(super) fn edges_on(&self, rx: &Consumer) {
        if self.ready.edge.load(Ordering::Relaxed) {
            rx.notify().set_edges(true);
        }
    }
}
