//! Per-partition counters, kept in the daemon's private memory (a partition
//! must not be able to fake them through the region).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one partition (relaxed atomics: statistics only).
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A copy of [`Counters`] at one moment, as published in the status file.
        #[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Snapshot { $($(#[$doc])* #[serde(default)] pub $name: u64,)* }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Packets read from this partition's TUN device and queued for a peer.
    tx_packets,
    /// Bytes of those packets.
    tx_bytes,
    /// Packets from peers written to this partition's TUN device.
    rx_packets,
    /// Bytes of those packets.
    rx_bytes,
    /// Dropped on send: source address not this partition's (anti-spoofing).
    drop_spoofed,
    /// Dropped on send: no partition owns the destination (or it is ours).
    drop_no_route,
    /// Dropped on send: the destination's queue stayed full.
    drop_full,
    /// Waits for room in a full queue that ended without room (each
    /// stalls that destination until its queue drains to half).
    stalls,
    /// Dropped on send: the destination partition is gone.
    drop_peer_gone,
    /// Dropped on send: not an IPv4/IPv6 packet with consistent lengths.
    drop_malformed,
    /// Dropped on receive: a descriptor out of bounds, a packet whose source
    /// is not its sender's or whose destination is not ours, or a queue
    /// whose indices are impossible (a hostile or broken peer).
    drop_rejected,
    /// Failed reads or writes on the TUN device.
    tun_errors,
    /// Doorbells this partition rang for sleeping peers.
    doorbells,
    /// Times this partition's receiver went to sleep.
    sleeps,
}

/// Adds `n` to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
