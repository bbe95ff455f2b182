//! Delivery order across senders: the oldest ticket first, whatever the
//! ticket counter's value (review of issue 16, F1), and receive cost
//! against the number of senders with datagrams queued (C1).
#![cfg(not(loom))]

use shmnet_ring::dgram::{heap_target, DgramGeometry, Sent};
use std::time::{Duration, Instant};

/// Tickets start at 0, as did the receiver's last delivered ticket: an
/// unsigned distance ranked ticket 0 last.
#[test]
fn first_datagram_is_delivered_first() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut a = image.sender(rx.open_slot().unwrap()).unwrap();
    let mut b = image.sender(rx.open_slot().unwrap()).unwrap();
    a.send(b"A").unwrap(); // ticket 0
    b.send(b"B").unwrap(); // ticket 1
    let mut buf = [0u8; 8];
    let r = rx.recv(&mut buf, false).unwrap();
    assert_eq!(
        &buf[..r.len],
        b"A",
        "sent first (ticket 0), delivered second"
    );
}

/// A datagram whose ticket is behind the last delivered one (ticket 0
/// here; a sender preempted between its charge and its publish in
/// general) is delivered next, not after every later one: while another
/// sender keeps its ring non-empty it was never chosen.
#[test]
fn oldest_datagram_goes_first_while_another_ring_is_nonempty() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut a = image.sender(rx.open_slot().unwrap()).unwrap();
    let mut b = image.sender(rx.open_slot().unwrap()).unwrap();
    a.send(b"A").unwrap();
    b.send(b"B").unwrap();
    let mut buf = [0u8; 8];
    for n in 0..100_000 {
        assert!(matches!(b.send(b"B").unwrap(), Sent::Queued { .. }));
        let r = rx.recv(&mut buf, false).unwrap();
        if r.slot == a.slot() {
            assert_eq!(n, 0, "A's datagram was sent first");
            return;
        }
    }
    panic!("A's datagram (sent first) still queued after 100,000 of B's");
}

/// A gone sender's last datagram, older than the others queued, is
/// delivered, so its slot is reclaimed while another sender floods.
#[test]
fn closing_slot_reclaimed_under_another_senders_flood() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut b = image.sender(rx.open_slot().unwrap()).unwrap();
    let ga = rx.open_slot().unwrap();
    let mut a = image.sender(ga).unwrap();
    let mut buf = vec![0u8; 65_536];
    a.send(&[0xaa; 65_000]).unwrap(); // ticket 0
    b.send(&[0xbb; 64]).unwrap(); // ticket 1
    drop(a);
    rx.close_slot(ga.slot); // A is gone; its datagram is still queued
    for _ in 0..100_000 {
        b.send(&[0xbb; 64]).unwrap();
        rx.recv(&mut buf, false).unwrap();
    }
    assert_eq!(rx.slots_in_use(), 1, "A's slot still closing");
    assert!(rx.partitions_in_use() <= 2); // B's own backlog
}

/// Sends from one thread in a known order over 64 slots, interleaved in
/// runs of different lengths, with receives in between: every datagram
/// comes out in the order it was sent (the receiver's private copies of
/// heads and front tickets never hide a newer publish or an older one).
#[test]
fn order_kept_across_many_slots_with_private_copies() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    rx.set_limit(1 << 30);
    let mut txs: Vec<_> = (0..64)
        .map(|_| image.sender(rx.open_slot().unwrap()).unwrap())
        .collect();
    let (mut sent, mut got) = (0u32, 0u32);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = [0u8; 8];
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = (x % 64) as usize;
        for _ in 0..(x >> 8) % 4 {
            assert!(matches!(
                txs[s].send(&sent.to_le_bytes()).unwrap(),
                Sent::Queued { .. }
            ));
            sent += 1;
        }
        for _ in 0..(x >> 16) % 4 {
            let Ok(r) = rx.recv(&mut buf, false) else {
                break;
            };
            assert_eq!(r.len, 4);
            assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), got);
            got += 1;
        }
    }
    while rx.recv(&mut buf, false).is_ok() {
        assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), got);
        got += 1;
    }
    assert_eq!(got, sent);
}

/// Receive cost per datagram against the number of slots with datagrams
/// queued (the reviewer's C1). Prints; run with --ignored --nocapture.
#[test]
#[ignore]
fn receive_cost_grows_with_ready_slots() {
    for k in [1usize, 4, 16, 64] {
        let (mut rx, image) = heap_target(DgramGeometry::stage1());
        rx.set_limit(1 << 30);
        let mut txs: Vec<_> = (0..k)
            .map(|_| image.sender(rx.open_slot().unwrap()).unwrap())
            .collect();
        let per = (448 / k).min(120);
        let mut buf = [0u8; 64];
        let (mut n, mut t) = (0u64, Duration::ZERO);
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            for _ in 0..per {
                for tx in txs.iter_mut() {
                    assert!(matches!(tx.send(&[3u8; 64]).unwrap(), Sent::Queued { .. }));
                }
            }
            let t0 = Instant::now();
            for _ in 0..per * k {
                rx.recv(&mut buf, false).unwrap();
            }
            t += t0.elapsed();
            n += (per * k) as u64;
        }
        eprintln!(
            "{k:>2} ready slots: {:.1} ns per receive ({n} datagrams)",
            t.as_nanos() as f64 / n as f64
        );
    }
}
