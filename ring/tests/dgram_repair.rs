//! The receiver repairs what a peer left in the allocator's words (review
//! of issue 16, F3): owner tags no slot has, and hint bits busy over free
//! partitions. Without repair the target stayed full for good.
#![cfg(not(loom))]

use shmnet_ring::dgram::{DgramGeometry, DropReason, Image, Receiver, Sent};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

fn memfd_target() -> (Receiver, Image, OwnedFd) {
    let rx = Receiver::create(DgramGeometry::stage1()).unwrap();
    let fd = rx.fd().unwrap().try_clone_to_owned().unwrap();
    let image = Image::attach(fd.as_fd()).unwrap();
    (rx, image, fd)
}

/// A peer's writable mapping of the segment's first `len` bytes.
fn peer_map(fd: &OwnedFd, len: usize) -> *mut u8 {
    // SAFETY: a fresh shared mapping of a memfd at least `len` long.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

/// Sends from an honest sender, receives; true when it got through.
fn honest_round_trip(rx: &mut Receiver, image: &Image) -> (Sent, bool) {
    let g = rx.open_slot().unwrap();
    let mut tx = image.sender(g).unwrap();
    let s = tx.send(&[7u8; 100]).unwrap();
    let mut buf = [0u8; 200];
    let mut got = false;
    for _ in 0..10 {
        got |= rx.recv(&mut buf, false).is_ok();
    }
    tx.close();
    rx.close_slot(g.slot);
    (s, got)
}

/// A peer stores an owner tag no slot has into every entry of group 0,
/// then dies (its slot closed and reclaimed).
#[test]
fn foreign_owner_words_are_repaired() {
    let (mut rx, image, fd) = memfd_target();
    let geo = rx.geometry();
    let o = geo.offsets();
    let peer = rx.open_slot().unwrap();
    let p = peer_map(&fd, o.data_start);
    let n = geo.group(0).unwrap().partitions as usize;
    for i in 0..n {
        // SAFETY: inside the directory of the mapping; a peer's store.
        unsafe { std::ptr::write_volatile(p.add(o.dirs[0] + 16 * i).cast::<u32>(), 0xdead_0001) };
    }
    rx.close_slot(peer.slot);
    let mut buf = [0u8; 8];
    for _ in 0..1000 {
        let _ = rx.recv(&mut buf, false); // idle looks
    }
    let (s, got) = honest_round_trip(&mut rx, &image);
    assert!(got, "honest datagram dropped: {s:?}");
    assert_eq!(rx.partitions_in_use(), 0);
    assert_eq!(rx.stats().repaired_owners, n as u64);
}

/// A peer sets every hint bit of group 0 busy (owners all 0) and dies.
#[test]
fn busy_hint_bits_are_repaired() {
    let (mut rx, image, fd) = memfd_target();
    let geo = rx.geometry();
    let o = geo.offsets();
    let peer = rx.open_slot().unwrap();
    let p = peer_map(&fd, o.data_start);
    for w in 0..geo.hint_words(0) {
        // SAFETY: inside the hint bitmap of the mapping; a peer's store.
        unsafe { std::ptr::write_volatile(p.add(o.hints[0] + 8 * w).cast::<u64>(), u64::MAX) };
    }
    rx.close_slot(peer.slot);
    let mut buf = [0u8; 8];
    for _ in 0..1000 {
        let _ = rx.recv(&mut buf, false);
    }
    let (s, got) = honest_round_trip(&mut rx, &image);
    assert!(
        got && s != Sent::Dropped(DropReason::NoRoom),
        "honest datagram dropped: {s:?} with 0 partitions in use"
    );
}

/// A live peer (its slot stays open) fills every group's owners with a
/// foreign tag and its hint bits busy while an honest sender keeps
/// sending and the receiver keeps receiving: the honest sender's drops
/// for want of room start a repair pass, and its datagrams get through
/// again within a bounded number of receives.
#[test]
fn drops_for_want_of_room_start_a_repair_while_traffic_flows() {
    let (mut rx, image, fd) = memfd_target();
    let geo = rx.geometry();
    let o = geo.offsets();
    let _peer = rx.open_slot().unwrap();
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let p = peer_map(&fd, o.data_start);
    for g in 0..geo.group_count() {
        for i in 0..geo.group(g).unwrap().partitions as usize {
            // SAFETY: inside the directory of the mapping; a peer's store.
            unsafe {
                std::ptr::write_volatile(p.add(o.dirs[g] + 16 * i).cast::<u32>(), 0xbeef_0007)
            };
        }
        for w in 0..geo.hint_words(g) {
            // SAFETY: inside the hint bitmap of the mapping; a peer's store.
            unsafe { std::ptr::write_volatile(p.add(o.hints[g] + 8 * w).cast::<u64>(), u64::MAX) };
        }
    }
    let mut buf = [0u8; 200];
    let (mut first_ok, mut delivered) = (None, 0);
    for i in 0..200 {
        if matches!(tx.send(&[9u8; 100]).unwrap(), Sent::Queued { .. }) {
            first_ok.get_or_insert(i);
        }
        // One receive per send: never two empty looks at one charge with
        // no send between, so this is the drop trigger, not the idle one.
        delivered += u32::from(rx.recv(&mut buf, false).is_ok());
    }
    let words: usize = (0..geo.group_count()).map(|g| geo.hint_words(g)).sum();
    let first_ok = first_ok.expect("no datagram got through");
    assert!(
        first_ok <= words + 2,
        "first through after {first_ok} sends"
    );
    assert!(delivered > 150);
}
