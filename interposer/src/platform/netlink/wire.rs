//! Netlink wire format: message and attribute headers written, and replies
//! read as untrusted bytes (every length checked; a short one is EPROTO).
#![deny(unsafe_code)]

use super::*;
use rustix::io::Errno;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

pub(crate) fn put_header(msg: &mut [u8], ty: u16, flags: u16, seq: u32) {
    let len = msg.len() as u32;
    for (at, field) in [
        (0, &len.to_ne_bytes()[..]),
        (4, &ty.to_ne_bytes()[..]),
        (6, &flags.to_ne_bytes()[..]),
        (8, &seq.to_ne_bytes()[..]),
    ] {
        if let Some(dst) = msg.get_mut(at..at + field.len()) {
            dst.copy_from_slice(field);
        }
    }
}

/// An rtattr header for `len` bytes of data.
pub(crate) fn put_attr_header(dst: &mut [u8], ty: u16, len: usize) {
    let rta_len = (4 + len) as u16;
    if let Some(h) = dst.get_mut(..4) {
        h[..2].copy_from_slice(&rta_len.to_ne_bytes());
        h[2..].copy_from_slice(&ty.to_ne_bytes());
    }
}

pub(crate) fn bytes<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], Errno> {
    b.get(at..at.checked_add(N).ok_or(Errno::PROTO)?)
        .and_then(|s| s.try_into().ok())
        .ok_or(Errno::PROTO)
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Result<u32, Errno> {
    bytes(b, at).map(u32::from_ne_bytes)
}

pub(crate) fn i32_at(b: &[u8], at: usize) -> Result<i32, Errno> {
    bytes(b, at).map(i32::from_ne_bytes)
}

pub(crate) struct Msg<'a> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

/// The netlink messages of one datagram; a malformed one ends it with
/// `EPROTO`.
pub(crate) struct Messages<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, Errno>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.0);
        let parse = || {
            let len = u32_at(rest, 0)? as usize;
            let msg = rest.get(..len).filter(|_| len >= NLMSG_HDRLEN);
            let msg = msg.ok_or(Errno::PROTO)?;
            let parsed = Msg {
                ty: u16::from_ne_bytes(bytes(msg, 4)?),
                flags: u16::from_ne_bytes(bytes(msg, 6)?),
                seq: u32_at(msg, 8)?,
                payload: msg.get(NLMSG_HDRLEN..).ok_or(Errno::PROTO)?,
            };
            Ok((parsed, rest.get(align4(len)..).unwrap_or_default()))
        };
        Some(parse().map(|(msg, next)| {
            self.0 = next;
            msg
        }))
    }
}

/// The attributes (type without flag bits, data) in `b`; a malformed one
/// ends them with `EPROTO`.
pub(crate) struct Attrs<'a>(pub(crate) &'a [u8]);

impl<'a> Attrs<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Attrs<'a> {
        Attrs(b)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Errno>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.0);
        let parse = || {
            let [len, ty] = [bytes(rest, 0)?, bytes(rest, 2)?].map(u16::from_ne_bytes);
            let len = usize::from(len);
            let attr = rest.get(..len).filter(|_| len >= 4).ok_or(Errno::PROTO)?;
            let data = attr.get(4..).ok_or(Errno::PROTO)?;
            Ok((
                (ty & NLA_TYPE_MASK, data),
                rest.get(align4(len)..).unwrap_or_default(),
            ))
        };
        Some(parse().map(|(attr, next)| {
            self.0 = next;
            attr
        }))
    }
}

pub(crate) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub(crate) fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// An IPv4 address in a 16-byte address field (first word).
pub(crate) fn v4_field(ip: Ipv4Addr) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[..4].copy_from_slice(&ip.octets());
    f
}
