//! The frames of a datagram *link* (design draft §3): the Unix stream
//! connection a sender opens to a receiver's rendezvous name. It carries
//! the registration (claims 3-4: the sender *obtains* the descriptor of
//! the target segment the receiver *registered*: REG, then REG_OK with the
//! memfd as SCM_RIGHTS, or REG_NO), doorbells (BELL), the sender's
//! goodbye (CLOSE) and slow-path datagrams (DGRAM). Its hang-up is the
//! lease: the kernel reports it only once the sender is gone, which is when
//! the receiver may close (and reclaim) the sender's slot.
//!
//! Here only the bytes: the interposer moves them. Every frame is an
//! 8-byte head `kind u8 | flags u8 | reserved u16 | len u32` (little-endian)
//! and `len` bytes of body. Decoding takes whatever a peer sent: a bad
//! frame is an error, never a panic, and a partial one asks for more bytes.

use super::layout::{DGRAM_VERSION, MAX_DATAGRAM};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Bytes of a frame's head.
pub const HEAD: usize = 8;
/// `"SHMU"`: the first word of a REG body.
pub const REG_MAGIC: u32 = u32::from_le_bytes(*b"SHMU");
/// Bytes of an address in a body: family u16, port u16, ip [u8; 16].
const ADDR: usize = 20;
/// Most body bytes any frame has (a DGRAM of the largest datagram).
pub const MAX_BODY: usize = ADDR + MAX_DATAGRAM as usize;

const REG: u8 = 1;
const REG_OK: u8 = 2;
const REG_NO: u8 = 3;
const BELL: u8 = 4;
const CLOSE: u8 = 5;
const DGRAM: u8 = 6;

/// One frame of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Sender -> receiver: register a slot. `source` is the address the
    /// sender claims (the receiver verifies it), `dest` the one it sent
    /// to (a wildcard receiver learns which of its addresses was used),
    /// `cookie` its kernel socket's cookie in the default mode (else 0).
    Reg {
        /// The sender's address.
        source: SocketAddr,
        /// The address the datagrams are for.
        dest: SocketAddr,
        /// The sender's kernel socket cookie, or 0.
        cookie: u64,
    },
    /// Receiver -> sender: the slot granted; the memfd travels with it.
    RegOk {
        /// The slot.
        slot: u32,
        /// Its generation.
        gen: u32,
    },
    /// Receiver -> sender: refused (`why` is an errno: ECONNREFUSED,
    /// EACCES for policy, ENOBUFS when every slot is taken).
    RegNo {
        /// Why, as an errno.
        why: u32,
    },
    /// Sender -> receiver: the doorbell (the sender took the flag).
    Bell,
    /// Sender -> receiver: no more datagrams on this link's slot.
    Close,
    /// Sender -> receiver: a datagram carried on the link itself (before
    /// registration completes, or when the segment is full of another
    /// group's sizes).
    Dgram {
        /// The sender's address.
        source: SocketAddr,
        /// The payload.
        payload: &'a [u8],
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// An unknown kind.
    Kind,
    /// A body of the wrong length for its kind, or too long for any.
    Length,
    /// A REG of another magic or version (an incompatible build).
    Version,
    /// An address of an unknown family, or IPv4 not mapped.
    Address,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Kind => "unknown frame kind",
            FrameError::Length => "frame length wrong for its kind",
            FrameError::Version => "incompatible registration",
            FrameError::Address => "bad address in a frame",
        })
    }
}

impl std::error::Error for FrameError {}

fn put_addr(b: &mut Vec<u8>, addr: SocketAddr) {
    let (family, ip) = match addr.ip() {
        IpAddr::V4(ip) => (4u16, ip.to_ipv6_mapped().octets()),
        IpAddr::V6(ip) => (6u16, ip.octets()),
    };
    b.extend_from_slice(&family.to_le_bytes());
    b.extend_from_slice(&addr.port().to_le_bytes());
    b.extend_from_slice(&ip);
}

fn get_addr(b: &[u8]) -> Result<SocketAddr, FrameError> {
    let b: &[u8; ADDR] = b
        .get(..ADDR)
        .and_then(|s| s.try_into().ok())
        .ok_or(FrameError::Length)?;
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[4..20]);
    let v6 = Ipv6Addr::from(raw);
    let ip = match u16::from_le_bytes([b[0], b[1]]) {
        4 => IpAddr::V4(v6.to_ipv4_mapped().ok_or(FrameError::Address)?),
        6 => IpAddr::V6(v6),
        _ => return Err(FrameError::Address),
    };
    Ok(SocketAddr::new(ip, u16::from_le_bytes([b[2], b[3]])))
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Frame<'_> {
    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEAD]);
        let kind = match *self {
            Frame::Reg {
                source,
                dest,
                cookie,
            } => {
                out.extend_from_slice(&REG_MAGIC.to_le_bytes());
                out.extend_from_slice(&DGRAM_VERSION.to_le_bytes());
                put_addr(out, source);
                put_addr(out, dest);
                out.extend_from_slice(&cookie.to_le_bytes());
                REG
            }
            Frame::RegOk { slot, gen } => {
                out.extend_from_slice(&slot.to_le_bytes());
                out.extend_from_slice(&gen.to_le_bytes());
                REG_OK
            }
            Frame::RegNo { why } => {
                out.extend_from_slice(&why.to_le_bytes());
                REG_NO
            }
            Frame::Bell => BELL,
            Frame::Close => CLOSE,
            Frame::Dgram { source, payload } => {
                put_addr(out, source);
                out.extend_from_slice(payload);
                DGRAM
            }
        };
        let len = (out.len() - start - HEAD) as u32;
        out[start] = kind;
        out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes the frame at the start of `b`: `Ok(None)` when `b` holds
    /// only part of it (read more), else the frame and its length in
    /// bytes. The flags and reserved bytes are ignored.
    pub fn decode(b: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
        let Some(head) = b.get(..HEAD) else {
            return Ok(None);
        };
        let len = u32_at(head, 4) as usize;
        if len > MAX_BODY {
            return Err(FrameError::Length);
        }
        let exact = |want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(FrameError::Length)
            }
        };
        // The kind and length are checked before the body is waited for,
        // so a bad head is an error at once.
        match head[0] {
            REG => exact(8 + 2 * ADDR + 8)?,
            REG_OK => exact(8)?,
            REG_NO => exact(4)?,
            BELL | CLOSE => exact(0)?,
            DGRAM if len >= ADDR => {}
            DGRAM => return Err(FrameError::Length),
            _ => return Err(FrameError::Kind),
        }
        let Some(body) = b.get(HEAD..HEAD + len) else {
            return Ok(None);
        };
        let frame = match head[0] {
            REG => {
                if u32_at(body, 0) != REG_MAGIC || u32_at(body, 4) != DGRAM_VERSION {
                    return Err(FrameError::Version);
                }
                let mut c = [0u8; 8];
                c.copy_from_slice(&body[8 + 2 * ADDR..]);
                Frame::Reg {
                    source: get_addr(&body[8..])?,
                    dest: get_addr(&body[8 + ADDR..])?,
                    cookie: u64::from_le_bytes(c),
                }
            }
            REG_OK => Frame::RegOk {
                slot: u32_at(body, 0),
                gen: u32_at(body, 4),
            },
            REG_NO => Frame::RegNo {
                why: u32_at(body, 0),
            },
            BELL => Frame::Bell,
            CLOSE => Frame::Close,
            _ => Frame::Dgram {
                source: get_addr(body)?,
                payload: &body[ADDR..],
            },
        };
        Ok(Some((frame, HEAD + len)))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn round(f: Frame<'_>) {
        let mut b = Vec::new();
        f.encode(&mut b);
        assert_eq!(Frame::decode(&b), Ok(Some((f, b.len()))));
        for cut in 0..b.len() {
            assert_eq!(Frame::decode(&b[..cut]).map(|o| o.is_none()), Ok(true));
        }
    }

    #[test]
    fn frames_round_trip_and_wait_for_their_bytes() {
        let v4: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let v6: SocketAddr = "[::1]:53".parse().unwrap();
        round(Frame::Reg {
            source: v4,
            dest: v6,
            cookie: 0x0123_4567_89ab_cdef,
        });
        round(Frame::RegOk { slot: 63, gen: 7 });
        round(Frame::RegNo { why: 111 });
        round(Frame::Bell);
        round(Frame::Close);
        round(Frame::Dgram {
            source: v6,
            payload: b"",
        });
        let big = vec![9u8; MAX_DATAGRAM as usize];
        round(Frame::Dgram {
            source: v4,
            payload: &big,
        });
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut b = Vec::new();
        Frame::Bell.encode(&mut b);
        b[0] = 99;
        assert_eq!(Frame::decode(&b), Err(FrameError::Kind));
        b[0] = BELL;
        b[4] = 1; // a bell with a body
        assert_eq!(Frame::decode(&b), Err(FrameError::Length));
        let mut b = Vec::new();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Frame::Reg {
            source: a,
            dest: a,
            cookie: 0,
        }
        .encode(&mut b);
        let mut old = b.clone();
        old[HEAD + 4] ^= 1;
        assert_eq!(Frame::decode(&old), Err(FrameError::Version));
        b[HEAD + 8] = 5; // family 5
        assert_eq!(Frame::decode(&b), Err(FrameError::Address));
        // An oversized length is refused from the head alone.
        let mut h = [0u8; HEAD];
        h[0] = DGRAM;
        h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Frame::decode(&h), Err(FrameError::Length));
    }
}
