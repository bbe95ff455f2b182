//! TCP_INFO for an emulated socket: a kernel socket's struct, with the
//! fields a connection's state decides filled in from the ring positions.
#![forbid(unsafe_code)]

use super::*;

// Offsets in struct tcp_info (linux/tcp.h).
pub(crate) mod ti {
    pub const STATE: usize = 0;
    pub const OPTIONS: usize = 5;
    pub const WSCALE: usize = 6;
    pub const RTO: usize = 8;
    pub const ATO: usize = 12;
    pub const SND_MSS: usize = 16;
    pub const RCV_MSS: usize = 20;
    pub const UNACKED: usize = 24;
    pub const LAST_DATA_SENT: usize = 44;
    pub const LAST_DATA_RECV: usize = 52;
    pub const LAST_ACK_RECV: usize = 56;
    pub const PMTU: usize = 60;
    pub const RCV_SSTHRESH: usize = 64;
    pub const RTT: usize = 68;
    pub const RTTVAR: usize = 72;
    pub const SND_CWND: usize = 80;
    pub const ADVMSS: usize = 84;
    pub const REORDERING: usize = 88;
    pub const RCV_SPACE: usize = 96;
    pub const TOTAL_RETRANS: usize = 100;
    pub const PACING_RATE: usize = 104;
    pub const MAX_PACING_RATE: usize = 112;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const SEGS_OUT: usize = 136;
    pub const SEGS_IN: usize = 140;
    pub const NOTSENT: usize = 144;
    pub const MIN_RTT: usize = 148;
    pub const DATA_SEGS_IN: usize = 152;
    pub const DATA_SEGS_OUT: usize = 156;
    pub const DELIVERED: usize = 192;
    pub const BYTES_SENT: usize = 200;
    pub const SND_WND: usize = 228;
    pub const RCV_WND: usize = 232;
}

pub(crate) fn put_u32(info: &mut [u8], at: usize, v: u32) {
    if let Some(f) = info.get_mut(at..at + 4) {
        f.copy_from_slice(&v.to_ne_bytes());
    }
}

pub(crate) fn put_u64(info: &mut [u8], at: usize, v: u64) {
    if let Some(f) = info.get_mut(at..at + 8) {
        f.copy_from_slice(&v.to_ne_bytes());
    }
}

pub(crate) fn get_u32(info: &[u8], at: usize) -> u32 {
    info.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// TCP_INFO of a listener, as the kernel gives it: the state, the pacing
/// rates, cwnd and reordering of a fresh socket, nothing else (the
/// backlog, tcpi_sacked, is not known here: 0).
pub(crate) fn listener_info(fresh: &[u8]) -> Vec<u8> {
    let mut info = vec![0u8; fresh.len()];
    if let Some(state) = info.get_mut(ti::STATE) {
        *state = 10; // TCP_LISTEN
    }
    for at in [ti::SND_CWND, ti::REORDERING] {
        put_u32(&mut info, at, get_u32(fresh, at));
    }
    for at in [ti::PACING_RATE, ti::MAX_PACING_RATE] {
        if let (Some(dst), Some(src)) = (info.get_mut(at..at + 8), fresh.get(at..at + 8)) {
            dst.copy_from_slice(src);
        }
    }
    info
}

/// Round-trip time reported for a connection (us): ring round trips are
/// not timed, so a typical loopback value.
pub(crate) const RTT_US: u32 = 25;

/// tcpi_snd_wscale | tcpi_rcv_wscale << 4: the scale this kernel's largest
/// receive buffer needs, ours limited by a window clamp set before the
/// handshake (an accepted socket's, from its listener); the peer's taken
/// as the default.
fn wscale(c: &crate::sockets::conn::Connection, connector: bool) -> u8 {
    let rmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse::<u64>().ok())
        .unwrap_or(6 << 20);
    let core_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let scale = |space: u64| {
        (63 - space.max(1).leading_zeros())
            .saturating_sub(15)
            .min(14) as u8
    };
    let space = rmem_max.max(core_max);
    let clamp = c
        .opts
        .get_int(libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP)
        .filter(|&v| v > 0 && !connector)
        .map_or(u64::MAX, |v| v as u64);
    scale(space) | (scale(space.min(clamp)) << 4)
}

/// TCP_INFO of a connection: a fresh kernel socket's (its size, this
/// kernel's defaults) with what an established loopback connection with
/// nothing lost has — window scaling, timestamps and SACK, loopback's MSS
/// and MTU, an initial window of 10 — and the connection's own progress:
/// its state after shutdowns, bytes sent (written into the ring), acked
/// (read by the peer: the ring is the window in flight) and received (read
/// by us), segments estimated from them, never a retransmission.
pub(crate) fn stream_info(fresh: &[u8], c: &crate::sockets::conn::Connection) -> Vec<u8> {
    let p = c.progress();
    let mut info = fresh.to_vec();
    if info.len() < 104 {
        return info;
    }
    info[ti::STATE] = match (p.shut_wr, p.peer_done) {
        (false, false) => 1, // ESTABLISHED
        (true, false) => 5,  // FIN_WAIT2
        (false, true) => 8,  // CLOSE_WAIT
        (true, true) => 7,   // CLOSE (after TIME_WAIT or LAST_ACK)
    };
    info[ti::OPTIONS] = 7; // timestamps, SACK, window scaling
    info[ti::WSCALE] = wscale(c, p.connector);
    let adv = adv_mss(c.peer);
    let snd_mss = mss(c.peer, p.connector) as u32;
    let sent = p.sent;
    let acked = p.acked.min(sent);
    let received = p.received;
    let segs = |bytes: u64| bytes.div_ceil(u64::from(snd_mss)) as u32;
    for at in [ti::LAST_DATA_SENT, ti::LAST_DATA_RECV, ti::LAST_ACK_RECV] {
        put_u32(&mut info, at, 0); // (not timed: "just now")
    }
    put_u32(&mut info, ti::RTO, 200_000);
    put_u32(&mut info, ti::ATO, if received > 0 { 40_000 } else { 0 });
    put_u32(&mut info, ti::SND_MSS, snd_mss);
    put_u32(&mut info, ti::RCV_MSS, 536);
    put_u32(&mut info, ti::UNACKED, segs(sent - acked));
    put_u32(&mut info, ti::PMTU, path_mtu(Some(c.peer)) as u32);
    let (ssthresh, snd_wnd, rcv_wnd) = if p.connector {
        (adv + 12, adv, 65536)
    } else {
        (adv, 65536, adv)
    };
    put_u32(&mut info, ti::RCV_SSTHRESH, ssthresh);
    put_u32(&mut info, ti::RCV_SPACE, ssthresh);
    put_u32(&mut info, ti::RTT, RTT_US);
    put_u32(&mut info, ti::RTTVAR, RTT_US / 2);
    put_u32(&mut info, ti::MIN_RTT, RTT_US);
    put_u32(&mut info, ti::SND_CWND, 10);
    put_u32(&mut info, ti::ADVMSS, adv);
    put_u32(&mut info, ti::TOTAL_RETRANS, 0);
    // cwnd segments per round trip, doubled (slow start's pacing ratio).
    let rate = u64::from(snd_mss) * 10 * 1_000_000 / u64::from(RTT_US) * 2;
    let max_rate = info
        .get(ti::MAX_PACING_RATE..ti::MAX_PACING_RATE + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_ne_bytes);
    put_u64(&mut info, ti::PACING_RATE, rate.min(max_rate));
    // The connector's SYN counts as one byte acked, as the kernel counts it.
    put_u64(
        &mut info,
        ti::BYTES_ACKED,
        acked.wrapping_add(u64::from(p.connector)),
    );
    put_u64(&mut info, ti::BYTES_RECEIVED, received);
    // (Counts come from positions the peer may write: wrapping, as TCP's
    // 32-bit counters do, never an overflow.)
    let (data_out, data_in) = (segs(sent), segs(received));
    let (hs_out, hs_in) = if p.connector { (2, 1) } else { (0, 2) };
    put_u32(
        &mut info,
        ti::SEGS_OUT,
        data_out
            .wrapping_add(hs_out)
            .wrapping_add(data_in.div_ceil(2)),
    );
    put_u32(
        &mut info,
        ti::SEGS_IN,
        data_in
            .wrapping_add(hs_in)
            .wrapping_add(data_out.div_ceil(2)),
    );
    put_u32(&mut info, ti::NOTSENT, 0);
    put_u32(&mut info, ti::DATA_SEGS_IN, data_in);
    put_u32(&mut info, ti::DATA_SEGS_OUT, data_out);
    put_u32(&mut info, ti::DELIVERED, segs(acked).wrapping_add(1));
    put_u64(&mut info, ti::BYTES_SENT, sent);
    put_u32(&mut info, ti::SND_WND, snd_wnd);
    put_u32(&mut info, ti::RCV_WND, rcv_wnd);
    info
}
