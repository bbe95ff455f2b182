//! Connections to the peer port that have not finished their TLS handshake
//! yet, counted per source address and in all: past either limit a new one
//! is closed at once, so idle connections that never authenticate cannot
//! take every fd of the gateway (found by the first review: 3000 of them
//! did, for the 10 s handshake timeout). A gateway dials one link per peer,
//! so a source needs few at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Handshakes in progress from one address.
pub const PER_SOURCE: usize = 16;
/// Handshakes in progress in all.
pub const TOTAL: usize = 256;

#[derive(Default)]
struct Counts {
    by_source: HashMap<IpAddr, usize>,
    total: usize,
    /// Sources refused since their count was last below the limit (one
    /// log line per burst).
    refused: HashMap<IpAddr, u64>,
}

#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<Counts>>);

/// A handshake admitted: counted until dropped.
pub struct Slot {
    pending: Pending,
    source: IpAddr,
}

/// Why a connection was refused, and whether to say so (the first of a
/// burst from its source).
pub struct Refused {
    pub why: &'static str,
    pub log: bool,
}

impl Pending {
    pub fn admit(&self, source: IpAddr) -> Result<Slot, Refused> {
        let source = source.to_canonical();
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.by_source.get(&source).copied().unwrap_or(0);
        let why = if mine >= PER_SOURCE {
            Some("too many handshakes in progress from this address")
        } else if c.total >= TOTAL {
            Some("too many handshakes in progress")
        } else {
            None
        };
        if let Some(why) = why {
            let n = c.refused.entry(source).or_insert(0);
            *n += 1;
            return Err(Refused { why, log: *n == 1 });
        }
        c.refused.remove(&source);
        *c.by_source.entry(source).or_insert(0) += 1;
        c.total += 1;
        Ok(Slot {
            pending: self.clone(),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.pending.0.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_share_and_no_more() {
        let p = Pending::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        let held: Vec<Slot> = (0..PER_SOURCE).map(|_| p.admit(a).ok().unwrap()).collect();
        let first = p.admit(a).err().unwrap();
        assert!(first.log);
        assert!(!p.admit(a).err().unwrap().log);
        assert!(p.admit(b).is_ok());
        drop(held);
        assert!(p.admit(a).is_ok());
    }
}
