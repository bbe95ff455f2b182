//! The receive limit and drop counts as the kernel keeps them (review of
//! issue 16, S2 and S3).
#![cfg(not(loom))]

use shmnet_ring::dgram::{heap_target, DgramGeometry, Sent};

/// A delivered datagram's charge goes back with its batch of frees; a
/// batch holds at most an eighth of the limit, so with SO_RCVBUF 4096
/// (the kernel stores 8192) and one 1,472-byte datagram queued at a time
/// nothing is dropped. A batch of up to 16 KiB dropped every fifth.
#[test]
fn queue_holding_one_datagram_drops_none_under_a_small_limit() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    rx.set_limit(8192);
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let mut buf = [0u8; 2048];
    let mut dropped = 0;
    for _ in 0..1000 {
        if let Sent::Dropped(_) = tx.send(&[5u8; 1472]).unwrap() {
            dropped += 1;
        }
        assert_eq!(rx.recv(&mut buf, false).unwrap().len, 1472);
    }
    assert_eq!(dropped, 0, "one datagram queued at a time, limit 8192");
}

/// A gone sender's drops stay in the receiver's stats after its slot is
/// reclaimed and its line zeroed for the next sender.
#[test]
fn drops_of_a_gone_sender_are_kept_by_the_receiver() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let g = rx.open_slot().unwrap();
    let mut tx = image.sender(g).unwrap();
    let mut dropped = 0;
    for _ in 0..200 {
        dropped += u32::from(matches!(tx.send(&[1u8; 64]).unwrap(), Sent::Dropped(_)));
    }
    assert!(dropped > 0);
    assert_eq!(rx.sender_drops(g.slot), dropped);
    tx.close();
    rx.close_slot(g.slot);
    let mut buf = [0u8; 64];
    while rx.recv(&mut buf, false).is_ok() {}
    let g2 = rx.open_slot().unwrap();
    assert_eq!(g2.slot, g.slot);
    assert_eq!(rx.sender_drops(g.slot), 0, "a new sender starts at 0");
    assert_eq!(rx.stats().departed_drops, u64::from(dropped));
}
