//! UDP_SEGMENT (GSO) on emulated sends (decision 80): a send of more
//! than the segment size is cut into datagrams of that size (the last
//! may be shorter), each delivered whole, as the kernel's udp_send_skb
//! makes a GSO send on loopback, with its checks and errors.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::io::Errno;

use crate::platform::sys;

/// Linux's UDP_SEGMENT (SOL_UDP), not in the libc crate.
pub(crate) const UDP_SEGMENT: c_int = 103;

/// The most segments one send may make (UDP_MAX_SEGMENTS): 64 until
/// Linux raised it to 128 (2024, backported to stable kernels).
const MAX_SEGMENTS_OLD: usize = 64;
const MAX_SEGMENTS: usize = 128;

/// This kernel's UDP_MAX_SEGMENTS, asked once: a UDP-Lite socket's send
/// of 65 one-byte segments fails in udp_send_skb, before anything goes,
/// with EINVAL past the limit and EIO (UDP-Lite takes no GSO) within
/// it. A kernel without UDP-Lite (removed since) is a new one.
fn max_segments() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        // Under a seccomp filter (ours to know of, or inherited) a socket
        // type the program never asked for may kill it (review rv-gso39
        // #4: SIGSYS): no probe, the older limit (a send of 65 - 128
        // segments is EINVAL, as on kernels before 2024).
        if crate::platform::sandbox::active() || filtered() {
            return MAX_SEGMENTS_OLD;
        }
        let lite = rustix::net::Protocol::from_raw(
            core::num::NonZeroU32::new(libc::IPPROTO_UDPLITE as u32)
                .unwrap_or(core::num::NonZeroU32::MIN),
        );
        let Ok(probe) = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(lite),
        ) else {
            return MAX_SEGMENTS;
        };
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let cmsg =
            sys::cmsg_bytes(&[(libc::IPPROTO_UDP, UDP_SEGMENT, 1u16.to_ne_bytes().to_vec())]);
        let bytes = [0u8; MAX_SEGMENTS_OLD + 1];
        match sys::sendmsg_control(probe.as_fd(), &[IoSlice::new(&bytes)], to, &cmsg) {
            Err(e) if e == libc::EINVAL => MAX_SEGMENTS_OLD,
            _ => MAX_SEGMENTS,
        }
    })
}

/// Whether /proc/self/status says a seccomp filter is on (one set up
/// before this program ran: a container's, a service manager's).
fn filtered() -> bool {
    std::fs::read_to_string("/proc/self/status").map_or(true, |st| {
        st.lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .is_some_and(|v| v.trim() != "0")
    })
}

/// Loopback's MTU: the kernel's fragsize for a send on lo.
const LO_MTU: usize = 65_536;

/// A send's segmenting: the size (0: none) and SO_NO_CHECK, which makes
/// any GSO send EINVAL.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub(crate) struct Gso {
    pub size: u16,
    pub no_check: bool,
}

impl Gso {
    /// The socket's own (its kernel socket's UDP_SEGMENT and SO_NO_CHECK,
    /// where the application's setsockopt put them).
    pub(crate) fn of(k: BorrowedFd<'_>) -> Gso {
        let int = |level, name| {
            let mut v = [0u8; 4];
            sys::sockopt_get_into(k, level, name, &mut v)
                .ok()
                .filter(|&n| n >= 4)
                .map_or(0, |_| i32::from_ne_bytes(v))
        };
        Gso {
            size: u16::try_from(int(libc::IPPROTO_UDP, UDP_SEGMENT)).unwrap_or(0),
            no_check: int(libc::SOL_SOCKET, libc::SO_NO_CHECK) != 0,
        }
    }

    /// Packed in 17 bits (`Datagram`'s cache).
    pub(crate) fn bits(self) -> u32 {
        u32::from(self.size) | u32::from(self.no_check) << 16
    }

    pub(crate) fn from_bits(b: u32) -> Gso {
        Gso {
            size: b as u16,
            no_check: b & 1 << 16 != 0,
        }
    }

    /// The kernel's checks of a GSO send of `len` bytes (`v6`: to an IPv6
    /// destination), in udp_send_skb's order: Ok(true) when it is cut
    /// into more than one datagram.
    pub(crate) fn check(self, len: usize, v6: bool) -> Result<bool, Errno> {
        let gso = usize::from(self.size);
        if gso == 0 {
            return Ok(false);
        }
        let hlen = if v6 { 40 } else { 20 } + 8;
        if hlen + len.min(gso) > LO_MTU {
            return Err(Errno::MSGSIZE);
        }
        if len > gso * MAX_SEGMENTS_OLD && len > gso * max_segments() || self.no_check {
            return Err(Errno::INVAL);
        }
        Ok(len > gso)
    }
}

/// The segment size a send's SOL_UDP cmsg gives (udp_cmsg_send):
/// UDP_SEGMENT with a 16-bit size; any other, or another length, EINVAL.
pub(crate) fn from_cmsg(kind: c_int, data: &[u8]) -> Result<u16, Errno> {
    match (kind, data) {
        (UDP_SEGMENT, [a, b]) => Ok(u16::from_ne_bytes([*a, *b])),
        _ => Err(Errno::INVAL),
    }
}

/// `bufs` cut into runs of `size` bytes (the last may be shorter), each
/// a list of slices of the caller's buffers.
pub(crate) fn split<'b>(bufs: &'b [IoSlice<'_>], size: usize) -> Vec<Vec<IoSlice<'b>>> {
    let size = size.max(1);
    let len = bufs.iter().map(|b| b.len()).sum::<usize>();
    // (Sized once: one allocation for the list, one per segment.)
    let each = bufs.len().min(len / size + 1) + 1;
    let mut out = Vec::with_capacity(len.div_ceil(size));
    let mut cur: Vec<IoSlice<'b>> = Vec::with_capacity(each);
    let mut room = size;
    for b in bufs {
        let mut rest: &'b [u8] = b;
        while !rest.is_empty() {
            let n = rest.len().min(room);
            let (head, tail) = rest.split_at(n);
            cur.push(IoSlice::new(head));
            rest = tail;
            room -= n;
            if room == 0 {
                out.push(std::mem::replace(&mut cur, Vec::with_capacity(each)));
                room = size;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(v: &[Vec<IoSlice<'_>>]) -> Vec<usize> {
        v.iter().map(|s| s.iter().map(|b| b.len()).sum()).collect()
    }

    #[test]
    fn splits_across_buffers() {
        let a = [1u8; 700];
        let b = [2u8; 2300];
        let whole = [IoSlice::new(&a), IoSlice::new(&b)];
        assert_eq!(sizes(&split(&whole, 1000)), vec![1000, 1000, 1000]);
        let short = [IoSlice::new(&a), IoSlice::new(&b[..2000])];
        assert_eq!(sizes(&split(&short, 1000)), vec![1000, 1000, 700]);
        assert_eq!(sizes(&split(&short, 2700)), vec![2700]);
        assert_eq!(sizes(&split(&[], 1000)), Vec::<usize>::new());
    }

    #[test]
    fn checks_as_udp_send_skb() {
        let g = |size| Gso {
            size,
            no_check: false,
        };
        assert_eq!(g(0).check(3000, false), Ok(false));
        assert_eq!(g(1000).check(1000, false), Ok(false));
        assert_eq!(g(1000).check(3000, false), Ok(true));
        assert_eq!(g(100).check(6400, false), Ok(true));
        assert_eq!(g(100).check(12_801, false), Err(Errno::INVAL));
        assert_eq!(g(65_500).check(65_500, true), Err(Errno::MSGSIZE));
        let nc = Gso {
            size: 1000,
            no_check: true,
        };
        assert_eq!(nc.check(10, false), Err(Errno::INVAL));
    }
}
