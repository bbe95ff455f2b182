//! The IP header facts the switch needs: source and destination, with the
//! packet's own length fields checked against what was read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source and destination of a well-formed IPv4 or IPv6 packet, or None.
///
/// ```
/// use shmnet_nic::packet::addresses;
///
/// let mut p = [0u8; 20];
/// p[0] = 0x45;
/// p[3] = 20; // total length
/// p[12..16].copy_from_slice(&[10, 211, 1, 1]);
/// p[16..20].copy_from_slice(&[10, 211, 1, 2]);
/// let (src, dst) = addresses(&p).unwrap();
/// assert_eq!((src.to_string(), dst.to_string()), ("10.211.1.1".into(), "10.211.1.2".into()));
/// assert!(addresses(&p[..19]).is_none());
/// ```
pub fn addresses(p: &[u8]) -> Option<(IpAddr, IpAddr)> {
    addresses_of(p, p.len())
}

/// As [`addresses`], from the first bytes of a packet of `len` bytes (at
/// least 40 of them, or all if shorter): a sender parses a private copy of
/// the header of a packet that sits in shared memory.
pub fn addresses_of(p: &[u8], len: usize) -> Option<(IpAddr, IpAddr)> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
            if ihl < 20 || total < ihl || total != len {
                return None;
            }
            let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()))
        }
        6 => {
            if p.len() < 40 || len < 40 {
                return None;
            }
            // Payload length 0 is a jumbogram (hop-by-hop option): not carried.
            let payload = usize::from(u16::from_be_bytes([p[4], p[5]]));
            if payload == 0 || 40 + payload != len {
                return None;
            }
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_lengths() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[5] = 8;
        p[23] = 1;
        p[39] = 2;
        let (s, d) = addresses(&p).unwrap();
        assert_eq!(s, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(d, "::2".parse::<IpAddr>().unwrap());
        p[5] = 9;
        assert!(addresses(&p).is_none());
        p[5] = 0;
        assert!(addresses(&p).is_none());
    }

    #[test]
    fn garbage() {
        assert!(addresses(&[]).is_none());
        assert!(addresses(&[0x45]).is_none());
        assert!(addresses(&[0x41, 0, 0, 20]).is_none());
        assert!(addresses(&[0x70; 60]).is_none());
        let mut p = [0u8; 24];
        p[0] = 0x46;
        p[3] = 20; // shorter than its header
        assert!(addresses(&p).is_none());
    }
}
