//! Which datagram a receive delivers: the ones that came on links first
//! (sent before their sender had its slot), then the shared-memory front,
//! a sender's link emptied the first time its slot is seen (`Slow`), a
//! connected socket taking its peer's only.
#![forbid(unsafe_code)]

use std::io::IoSliceMut;
use std::net::SocketAddr;

use shmnet_ring::dgram::{Received, RecvError};

use super::inbox::{Inbox, State, Taken};

impl Inbox {
    /// The next datagram (from `only`, others consumed and dropped): the
    /// link-carried ones first, then the shared-memory front, whose
    /// sender's link is emptied first the first time (see `Slow`).
    pub(super) fn take(
        &self,
        st: &mut State,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        only: Option<SocketAddr>,
    ) -> Option<Taken> {
        // Bounded: each round consumes a datagram or settles a link.
        for _ in 0..4096 {
            if let Some((from, d, to)) = st.slow.queue.front() {
                let (from, len, to) = (*from, d.len(), *to);
                let copied = copy_into(bufs, d);
                if !peek || !wanted(from, only) {
                    st.slow.bytes = st.slow.bytes.saturating_sub(len + 256);
                    st.slow.queue.pop_front();
                }
                if wanted(from, only) {
                    let got = Received {
                        len,
                        copied,
                        slot: u32::MAX,
                    };
                    if self.dests.load(std::sync::atomic::Ordering::Relaxed) {
                        super::ancillary::note_dest(to);
                    }
                    return Some(Taken {
                        got,
                        from: Some(from),
                    });
                }
                continue;
            }
            let (i, got) = st.sets.iter_mut().enumerate().find_map(|(i, set)| loop {
                match set.rx.recv_vectored(bufs, true) {
                    Ok(g) => return Some((i, g)),
                    Err(RecvError::Empty) => return None,
                    Err(e) => log!(warn, "datagram receive: {e}"),
                }
            })?;
            let grant = Some((i, got.slot));
            if let Some(k) = st.links.iter().position(|l| l.grant == grant && !l.settled) {
                st.links[k].settled = true;
                self.read_link(st, k);
                if !st.slow.queue.is_empty() {
                    continue;
                }
            }
            let set = &mut st.sets[i];
            let from = set.sources.get(got.slot as usize).copied().flatten();
            let want = from.is_some_and(|f| wanted(f, only));
            if !(want && peek) {
                // Consumed (the peek above copied it already).
                let _ = set.rx.recv_vectored(&mut [], false);
            }
            if want && self.dests.load(std::sync::atomic::Ordering::Relaxed) {
                // (Asked for cmsgs: the address its sender used.)
                super::ancillary::note_dest(set.dests.get(got.slot as usize).copied().flatten());
            }
            if want {
                return from.map(|from| Taken {
                    got,
                    from: Some(from),
                });
            }
        }
        None
    }
}

/// The senders' doorbell rings so far, all sets (wrapping).
pub(super) fn rings(st: &State) -> u32 {
    st.sets
        .iter()
        .fold(0u32, |a, s| a.wrapping_add(s.rx.rings()))
}

/// Whether a datagram is queued (on a link or in shared memory).
pub(super) fn queued(st: &mut State) -> bool {
    !st.slow.queue.is_empty() || st.sets.iter_mut().any(|s| s.rx.next_len().is_ok())
}

/// Whether a connected socket (`only`) takes a datagram from `from`.
fn wanted(from: SocketAddr, only: Option<SocketAddr>) -> bool {
    only.is_none_or(|o| same(from, o))
}

/// Copies `d` into `bufs` as far as they go; the bytes copied.
fn copy_into(bufs: &mut [IoSliceMut<'_>], d: &[u8]) -> usize {
    let mut at = 0;
    for b in bufs.iter_mut() {
        let k = (d.len() - at).min(b.len());
        b[..k].copy_from_slice(&d[at..at + k]);
        at += k;
        if at == d.len() {
            break;
        }
    }
    at
}

/// The same address, whatever the IPv4 mapping.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    crate::transport::rendezvous::unmapped(a) == crate::transport::rendezvous::unmapped(b)
}
