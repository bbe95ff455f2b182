//! The switched segment's address table: which partition owns which
//! addresses. It comes from the daemon's configuration, never from the
//! shared region (a partition could write anything there), and is the
//! basis of both forwarding (destination) and anti-spoofing (source).

use std::net::IpAddr;

/// Addresses per partition, immutable once the NIC runs.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    ports: Vec<Vec<IpAddr>>,
}

impl Segment {
    /// A table with one entry (a list of host addresses) per partition.
    pub fn new(ports: Vec<Vec<IpAddr>>) -> Self {
        Segment { ports }
    }

    /// The partition that owns `dst`, if any. Multicast and broadcast are
    /// owned by nobody (not forwarded in this stage). Addresses compare as
    /// they are: an IPv6 packet's `::ffff:a.b.c.d` is not the IPv4 address
    /// (its source passed anti-spoofing as A's IPv4 one: review s28 #11).
    pub fn owner(&self, dst: IpAddr) -> Option<usize> {
        self.ports.iter().position(|a| a.contains(&dst))
    }

    /// Whether `addr` is one of partition `p`'s own addresses (as it is).
    pub fn owns(&self, p: usize, addr: IpAddr) -> bool {
        self.ports.get(p).is_some_and(|a| a.contains(&addr))
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether the table has no partition.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Partition `p`'s addresses.
    pub fn addresses(&self, p: usize) -> &[IpAddr] {
        self.ports.get(p).map_or(&[], |v| v.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_owns() {
        let a: IpAddr = "10.211.1.1".parse().unwrap();
        let b: IpAddr = "10.211.1.2".parse().unwrap();
        let b6: IpAddr = "fd11:211::2".parse().unwrap();
        let s = Segment::new(vec![vec![a], vec![b, b6]]);
        assert_eq!(s.owner(b6), Some(1));
        // An IPv4-mapped IPv6 address is not the IPv4 one (review s28 #11).
        let mapped: IpAddr = "::ffff:10.211.1.1".parse().unwrap();
        assert!(!s.owns(0, mapped));
        assert_eq!(s.owner(mapped), None);
        assert_eq!(s.owner("10.211.1.3".parse().unwrap()), None);
        assert!(s.owns(0, a) && !s.owns(0, b) && !s.owns(7, a));
    }
}
