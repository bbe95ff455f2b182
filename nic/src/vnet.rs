//! The virtio-net header (IFF_VNET_HDR) that precedes every packet when the
//! TUN devices offload segmentation: with it the kernel hands us 64 KiB
//! TCP (and UDP) super-packets and takes them back whole, as veth does.
//! A header from the region is hostile: the receiver checks it before the
//! kernel sees it.

/// Bytes of `struct virtio_net_hdr` (TUNSETVNETHDRSZ's default).
pub const LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// Whether `h` (the first [`LEN`] bytes) is a header we pass on for an IP
/// packet of `ip_len` bytes, version `ip_version`: known flags and GSO
/// types only, a TCP type matching the IP version, offsets inside the
/// packet, a segment size when segmenting.
///
/// ```
/// use shmnet_nic::vnet::check;
///
/// assert!(check(&[0; 10], 4, 60));
/// // TCPv6 segmentation of an IPv4 packet: refused.
/// assert!(!check(&[0, 4, 0, 0, 0, 0, 0, 0, 0, 0], 4, 60));
/// ```
pub fn check(h: &[u8], ip_version: u8, ip_len: usize) -> bool {
    let Some(h) = h.get(..LEN) else { return false };
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([h[o], h[o + 1]]));
    let (flags, gso) = (h[0], h[1]);
    let (hdr_len, gso_size, csum_start, csum_offset) = (u16_at(2), u16_at(4), u16_at(6), u16_at(8));
    if flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return false;
    }
    if flags & F_NEEDS_CSUM != 0 && csum_start + csum_offset + 2 > ip_len {
        return false;
    }
    let ok_type = match gso & !GSO_ECN {
        GSO_NONE => gso & GSO_ECN == 0,
        GSO_TCPV4 => ip_version == 4,
        GSO_TCPV6 => ip_version == 6,
        GSO_UDP_L4 => true,
        _ => false,
    };
    ok_type && hdr_len <= ip_len && (gso == GSO_NONE || gso_size > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_headers() {
        let h = |b: [u8; 10]| b;
        assert!(check(&h([1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0]), 4, 65000));
        assert!(!check(&h([1, 1, 54, 0, 0, 0, 34, 0, 16, 0]), 4, 65000)); // no segment size
        assert!(!check(&h([1, 0, 0, 0, 0, 0, 0xff, 0xff, 16, 0]), 4, 100)); // checksum outside
        assert!(!check(&h([8, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 4, 100)); // unknown flag
        assert!(!check(&h([0, 3, 0, 0, 1, 0, 0, 0, 0, 0]), 4, 100)); // UFO
        assert!(!check(&[0; 9], 4, 100)); // short
    }
}
