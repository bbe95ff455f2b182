//! Datagram target segments: UDP's semantics (boundaries, whole or
//! nothing, drop when full, every size 0..=65,527, peek, truncation, next
//! size), many senders in threads and in processes with checksummed
//! datagrams, and reclaim after a sender stops or dies at every step.
#![cfg(not(loom))]

mod common;
use common::*;
use proptest::prelude::*;
use shmnet_ring::dgram::{
    heap_target, DgramGeometry, DropReason, GroupGeometry, Image, Receiver, RecvError, SendError,
    Sender, Sent, Stage,
};
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [0, 1, 1472, 8192, 65_507];
const HEADER: usize = 12;

/// Datagram `seq` of sender `id`: its size cycles through SIZES; from 12
/// bytes on it carries `id`, `seq` and the CRC32 of the rest.
fn datagram(id: u32, seq: u32) -> Vec<u8> {
    let len = SIZES[seq as usize % SIZES.len()];
    let mut d = vec![id as u8; len];
    if len >= HEADER {
        Stream::new(u64::from(id) << 32 | u64::from(seq)).fill(&mut d[HEADER..]);
        let crc = crc32fast::hash(&d[HEADER..]);
        d[..4].copy_from_slice(&id.to_le_bytes());
        d[4..8].copy_from_slice(&seq.to_le_bytes());
        d[8..12].copy_from_slice(&crc.to_le_bytes());
    }
    d
}

/// Checks a received datagram; returns its (id, seq) when it has a header.
fn verify(d: &[u8]) -> Option<(u32, u32)> {
    assert!(SIZES.contains(&d.len()), "unexpected length {}", d.len());
    if d.len() < HEADER {
        return None;
    }
    let word = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    assert_eq!(word(8), crc32fast::hash(&d[HEADER..]), "torn datagram");
    Some((word(0), word(4)))
}

fn recv_one(rx: &mut Receiver, buf: &mut [u8]) -> Option<usize> {
    match rx.recv(buf, false) {
        Ok(r) => {
            assert!(!r.truncated());
            Some(r.len)
        }
        Err(RecvError::Empty) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn every_size_whole_with_boundaries() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    rx.set_limit(1 << 30);
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let sizes = [0usize, 1, 1472, 2048, 2049, 8192, 65_507, 65_527];
    for (i, &n) in sizes.iter().enumerate() {
        let d: Vec<u8> = (0..n).map(|k| (k * 31 + i) as u8).collect();
        assert!(matches!(tx.send(&d), Ok(Sent::Queued { .. })), "size {n}");
    }
    assert_eq!(tx.send(&vec![0u8; 65_528]), Err(SendError::TooBig));
    let mut buf = vec![0u8; 70_000];
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(rx.next_len(), Ok(n));
        let r = rx.recv(&mut buf, false).unwrap();
        assert_eq!((r.len, r.copied), (n, n));
        assert!(buf[..n]
            .iter()
            .enumerate()
            .all(|(k, b)| *b == (k * 31 + i) as u8));
    }
    assert_eq!(rx.recv(&mut buf, false), Err(RecvError::Empty));
    assert_eq!(rx.partitions_in_use(), 0);
    assert_eq!(rx.queued_bytes(), 0);
}

/// A receiver that goes across exec (`close_to_kernel`) takes nothing
/// more: its sender takes back exactly what it left in the ring, oldest
/// first, every size (interposer decision 56); nothing before the close.
#[test]
fn take_back_returns_what_the_receiver_left() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let sent: Vec<Vec<u8>> = (0..6u32).map(|i| datagram(1, i)).collect();
    for d in &sent {
        assert!(matches!(tx.send(d), Ok(Sent::Queued { .. })));
    }
    assert!(tx.take_back().is_empty(), "open: nothing is taken back");
    let mut buf = vec![0u8; 70_000];
    for d in &sent[..2] {
        let n = recv_one(&mut rx, &mut buf).unwrap();
        assert_eq!(&buf[..n], &d[..]);
    }
    rx.close_to_kernel();
    assert_eq!(tx.closing(), shmnet_ring::dgram::Closing::ToKernel);
    assert_eq!(tx.take_back(), sent[2..].to_vec());
    assert_eq!(tx.send(b"late"), Err(SendError::Closed));
}

#[test]
fn peek_truncate_and_gather() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let parts = [
        IoSlice::new(b"hello, "),
        IoSlice::new(b""),
        IoSlice::new(b"world"),
    ];
    tx.send_vectored(&parts).unwrap();
    tx.send(b"second").unwrap();
    let mut small = [0u8; 5];
    // MSG_PEEK: twice the same datagram, truncated, full length reported.
    for _ in 0..2 {
        let r = rx.recv(&mut small, true).unwrap();
        assert_eq!((r.len, r.copied, r.truncated()), (12, 5, true));
        assert_eq!(&small, b"hello");
    }
    assert_eq!(rx.next_len(), Ok(12));
    // Scatter into two buffers.
    let (mut a, mut b) = ([0u8; 4], [0u8; 20]);
    let r = rx
        .recv_vectored(
            &mut [
                std::io::IoSliceMut::new(&mut a),
                std::io::IoSliceMut::new(&mut b),
            ],
            false,
        )
        .unwrap();
    assert_eq!((r.len, r.copied), (12, 12));
    assert_eq!(&a, b"hell");
    assert_eq!(&b[..8], b"o, world");
    // Truncated without peek: the rest is gone, the next datagram is whole.
    let r = rx.recv(&mut small, false).unwrap();
    assert_eq!((r.len, r.copied), (6, 5));
    assert_eq!(rx.recv(&mut small, false), Err(RecvError::Empty));
    assert_eq!(rx.partitions_in_use(), 0);
}

#[test]
fn full_drops_and_counts_never_blocks() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    // The default limit (212,992 bytes, like rmem_default) binds first.
    let mut sent = 0;
    loop {
        match tx.send(&[7u8; 1472]).unwrap() {
            Sent::Queued { .. } => sent += 1,
            Sent::Dropped(why) => {
                assert_eq!(why, DropReason::Rcvbuf);
                break;
            }
            Sent::Stopped => unreachable!(),
        }
    }
    assert_eq!(sent, 212_992 / (1472 + 256));
    // With no limit, the ring (128 cells) binds; then with 64 KiB
    // datagrams, the partitions (16 of them fit in 512 x 2 KiB).
    rx.set_limit(1 << 30);
    let mut buf = vec![0u8; 70_000];
    while recv_one(&mut rx, &mut buf).is_some() {}
    let mut sent = 0;
    while let Sent::Queued { .. } = tx.send(&[1u8; 64]).unwrap() {
        sent += 1;
    }
    assert_eq!(sent, 128);
    assert_eq!(
        tx.send(&[1u8; 64]).unwrap(),
        Sent::Dropped(DropReason::RingFull)
    );
    while recv_one(&mut rx, &mut buf).is_some() {}
    let mut sent = 0;
    while let Sent::Queued { .. } = tx.send(&vec![2u8; 65_507]).unwrap() {
        sent += 1;
    }
    assert_eq!(sent, 16);
    assert_eq!(
        tx.send(&vec![2u8; 65_507]).unwrap(),
        Sent::Dropped(DropReason::NoRoom)
    );
    // A small one still fits nowhere: all 512 partitions are taken.
    assert_eq!(tx.send(&[3u8]).unwrap(), Sent::Dropped(DropReason::NoRoom));
    let s = tx.stats();
    // Each `while let` ended on a drop too.
    assert_eq!((s.drop_rcvbuf, s.drop_ring, s.drop_room), (1, 2, 3));
    assert_eq!(rx.sender_drops(tx.slot()), 6);
    for _ in 0..16 {
        assert_eq!(recv_one(&mut rx, &mut buf), Some(65_507));
    }
    assert_eq!(rx.partitions_in_use(), 0);
    assert_eq!(rx.queued_bytes(), 0);
}

/// Receives until `done()` and the segment is empty; checks every
/// datagram and per-sender order; returns datagrams per sender id.
fn drain_checked(rx: &mut Receiver, senders: usize, mut done: impl FnMut() -> bool) -> Vec<u64> {
    let mut buf = vec![0u8; 65_536];
    let mut got = vec![0u64; senders];
    let mut last_seq = vec![None::<u32>; senders];
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        match rx.recv(&mut buf, false) {
            Ok(r) => {
                assert!(!r.truncated());
                if let Some((id, seq)) = verify(&buf[..r.len]) {
                    let id = id as usize;
                    assert!(last_seq[id].is_none_or(|l| seq > l), "order");
                    last_seq[id] = Some(seq);
                    got[id] += 1;
                } else if r.len == 1 {
                    got[buf[0] as usize] += 1;
                } else {
                    // 0 bytes: nothing to say who sent it; count it on
                    // the slot (one slot per sender id here).
                    got[r.slot as usize] += 1;
                }
            }
            Err(RecvError::Empty) => {
                if done() && matches!(rx.recv(&mut buf, true), Err(RecvError::Empty)) {
                    return got;
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("recv: {e}"),
        }
        assert!(Instant::now() < limit, "receiver timed out");
    }
}

/// Sends `count` datagrams; returns (queued, dropped).
fn send_all(tx: &mut Sender, id: u32, count: u32) -> (u64, u64) {
    let (mut q, mut d) = (0, 0);
    for seq in 0..count {
        match tx.send(&datagram(id, seq)).unwrap() {
            Sent::Queued { .. } => q += 1,
            Sent::Dropped(_) => {
                d += 1;
                std::thread::yield_now();
            }
            Sent::Stopped => unreachable!(),
        }
    }
    (q, d)
}

#[test]
fn four_threads_checksummed() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    rx.set_limit(1 << 20);
    let grants: Vec<_> = (0..4).map(|_| rx.open_slot().unwrap()).collect();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(4));
    let handles: Vec<_> = grants
        .into_iter()
        .enumerate()
        .map(|(id, g)| {
            let (image, running) = (image.clone(), running.clone());
            std::thread::spawn(move || {
                let mut tx = image.sender(g).unwrap();
                assert_eq!(tx.slot() as usize, id);
                let r = send_all(&mut tx, id as u32, 3000);
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                r
            })
        })
        .collect();
    let got = drain_checked(&mut rx, 4, || {
        running.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    for (id, h) in handles.into_iter().enumerate() {
        let (q, d) = h.join().unwrap();
        assert_eq!(q + d, 3000);
        assert_eq!(got[id], q, "sender {id}: delivered = queued");
    }
    assert_eq!(rx.partitions_in_use(), 0);
    assert_eq!(rx.stats().corrupt, 0);
}

#[test]
fn four_processes_checksummed_through_a_memfd() {
    let mut rx = Receiver::create(DgramGeometry::stage1()).unwrap();
    rx.set_limit(1 << 20);
    let fd = dup(&rx.fd().unwrap());
    let pids: Vec<_> = (0..4)
        .map(|id| {
            let g = rx.open_slot().unwrap();
            let fd = dup(&fd);
            fork_child(move || {
                let image = Image::attach(fd.as_fd()).unwrap();
                let mut tx = image.sender(g).unwrap();
                let (q, _) = send_all(&mut tx, id, 2000);
                // Exit code: queued count in units the parent can check.
                (q % 200) as i32
            })
        })
        .collect();
    let mut alive_n = 4;
    let mut codes = [None; 4];
    let got = drain_checked(&mut rx, 4, || {
        for (i, p) in pids.iter().enumerate() {
            if codes[i].is_none() {
                let mut st = 0;
                // SAFETY: reaping our own child.
                if unsafe { libc::waitpid(*p, &mut st, libc::WNOHANG) } == *p {
                    assert!(libc::WIFEXITED(st));
                    codes[i] = Some(libc::WEXITSTATUS(st));
                    alive_n -= 1;
                }
            }
        }
        alive_n == 0
    });
    for id in 0..4 {
        assert_eq!(Some((got[id] % 200) as i32), codes[id], "sender {id}");
        assert!(got[id] > 0);
    }
    assert_eq!(rx.partitions_in_use(), 0);
}

/// A sender stopped at each step of a send, then its slot closed: nothing
/// partial is delivered, a published datagram is, and afterwards every
/// partition and every byte of charge is free; a new sender on the slot
/// gets a new tag.
#[test]
fn stopped_sender_reclaimed_at_every_step() {
    let stages = [
        Stage::Charged,
        Stage::Recorded,
        Stage::Claimed,
        Stage::Copied,
        Stage::Filled,
        Stage::Published,
    ];
    for stage in stages {
        let (mut rx, image) = heap_target(DgramGeometry::stage1());
        let g = rx.open_slot().unwrap();
        let mut tx = image.sender(g).unwrap();
        tx.send(b"before").unwrap();
        let big = vec![5u8; 10_000];
        assert_eq!(
            tx.send_stopping_at(&[IoSlice::new(&big)], stage).unwrap(),
            Sent::Stopped
        );
        drop(tx);
        rx.close_slot(g.slot);
        let mut buf = vec![0u8; 65_536];
        assert_eq!(recv_one(&mut rx, &mut buf), Some(6));
        if stage == Stage::Published {
            assert_eq!(recv_one(&mut rx, &mut buf), Some(10_000));
            assert!(buf[..10_000].iter().all(|b| *b == 5));
        }
        assert_eq!(recv_one(&mut rx, &mut buf), None, "{stage:?}");
        assert_eq!(rx.stats().reclaimed, 1, "{stage:?}");
        assert_eq!(rx.partitions_in_use(), 0, "{stage:?}");
        // Deaths right after the charge or the publish leave bytes counted
        // until the receiver finds the segment idle twice.
        recv_one(&mut rx, &mut buf);
        assert_eq!(rx.queued_bytes(), 0, "{stage:?}");
        let g2 = rx.open_slot().unwrap();
        assert_eq!((g2.slot, g2.gen), (g.slot, g.gen + 1));
        let mut tx = image.sender(g2).unwrap();
        tx.send(b"after").unwrap();
        assert_eq!(recv_one(&mut rx, &mut buf), Some(5));
    }
}

/// SIGKILL of a sender process in a tight send loop, next to a live
/// sender, twenty times: the live sender's datagrams are all intact, and
/// after each kill the slot is reclaimed and the full capacity is back.
#[test]
fn sigkilled_sender_never_wedges_the_segment() {
    let mut rx = Receiver::create(DgramGeometry::stage1()).unwrap();
    rx.set_limit(1 << 30);
    let fd = dup(&rx.fd().unwrap());
    let mut buf = vec![0u8; 65_536];
    for round in 0..20u32 {
        let g = rx.open_slot().unwrap();
        let f = dup(&fd);
        let pid = fork_child(move || {
            let image = Image::attach(f.as_fd()).unwrap();
            let mut tx = image.sender(g).unwrap();
            let mut seq = 0u32;
            loop {
                let _ = tx.send(&datagram(g.slot, seq)).unwrap();
                seq = seq.wrapping_add(1);
            }
        });
        // Take some while it runs, then kill it at a random point.
        let until = Instant::now() + Duration::from_millis(5 + u64::from(round % 7) * 3);
        while Instant::now() < until {
            if let Ok(r) = rx.recv(&mut buf, false) {
                verify(&buf[..r.len]);
            }
        }
        // SAFETY: killing our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(wait_child(pid, Duration::from_secs(10)), -libc::SIGKILL);
        rx.close_slot(g.slot);
        loop {
            match rx.recv(&mut buf, false) {
                Ok(r) => {
                    verify(&buf[..r.len]);
                }
                Err(RecvError::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(rx.slots_in_use(), 0, "round {round}");
        assert_eq!(rx.partitions_in_use(), 0, "round {round}");
        let _ = rx.recv(&mut buf, false);
        assert_eq!(rx.queued_bytes(), 0, "round {round}");
    }
    assert_eq!(rx.stats().reclaimed, 20);
    // Capacity: a full ring of 2 KiB datagrams and all 16 maximal ones.
    let image = Image::attach(fd.as_fd()).unwrap();
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    for _ in 0..128 {
        assert!(matches!(
            tx.send(&[9u8; 2048]).unwrap(),
            Sent::Queued { .. }
        ));
    }
    while recv_one(&mut rx, &mut buf).is_some() {}
    for _ in 0..16 {
        assert!(matches!(
            tx.send(&vec![9u8; 65_507]).unwrap(),
            Sent::Queued { .. }
        ));
    }
}

#[test]
fn attach_checks_the_segment() {
    let rx = Receiver::create(DgramGeometry::stage1()).unwrap();
    let image = Image::attach(rx.fd().unwrap()).unwrap();
    assert_eq!(image.geometry(), DgramGeometry::stage1());
    // SAFETY: geteuid has no preconditions.
    assert_eq!(image.sender_uid(), unsafe { libc::geteuid() });
    // Not a sealed memfd.
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    assert!(Image::attach(file.as_fd()).is_err());
    rx.close();
    assert!(image.is_closed());
    let mut rx2 = Receiver::create(DgramGeometry::stage1()).unwrap();
    let g = rx2.open_slot().unwrap();
    let mut tx = image.sender(g).unwrap();
    assert_eq!(tx.send(b"x"), Err(SendError::Closed));
}

#[test]
fn doorbell_flag_taken_by_one_sender() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut a = image.sender(rx.open_slot().unwrap()).unwrap();
    let mut b = image.sender(rx.open_slot().unwrap()).unwrap();
    assert!(!rx.arm());
    assert_eq!(a.send(b"1").unwrap(), Sent::Queued { ring: true });
    assert_eq!(b.send(b"2").unwrap(), Sent::Queued { ring: false });
    assert_eq!(rx.rings(), 1);
    assert!(rx.arm());
    rx.disarm();
    let mut buf = [0u8; 4];
    assert_eq!(recv_one(&mut rx, &mut buf), Some(1));
    assert_eq!(recv_one(&mut rx, &mut buf), Some(1));
    assert!(!rx.arm());
}

/// `Sender::outstanding`: what the receiver has not taken yet, and its
/// tail (a sender watches it stop moving to notice a receiver that died).
#[test]
fn outstanding_follows_the_receivers_tail() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    assert_eq!(tx.outstanding(), (0, 0));
    for d in [&b"1"[..], b"22", b"333"] {
        tx.send(d).unwrap();
    }
    assert_eq!(tx.outstanding(), (3, 0));
    let mut buf = [0u8; 4];
    assert_eq!(recv_one(&mut rx, &mut buf), Some(1));
    assert_eq!(tx.outstanding(), (2, 1));
    while recv_one(&mut rx, &mut buf).is_some() {}
    assert_eq!(tx.outstanding(), (0, 3));
}

fn geometry() -> impl Strategy<Value = DgramGeometry> {
    (
        prop::collection::vec((1u32..=64, 1u32..=300, 1u32..=64), 1..=4),
        1u32..=256,
        0u32..=12,
    )
        .prop_filter_map("valid", |(gs, q, c)| {
            let mut groups = Vec::new();
            let mut pb = 0;
            for (step, p, s) in gs {
                pb += step * 8;
                groups.push(GroupGeometry {
                    partition_bytes: pb,
                    partitions: p,
                    span_max: s.min(p),
                });
            }
            DgramGeometry::new(&groups, q, 1 << c).ok()
        })
}

proptest! {
    /// Every array of the layout lies inside the segment, aligned, in
    /// order, without overlapping the next.
    #[test]
    fn layout_arrays_disjoint_and_inside(geo in geometry()) {
        let o = geo.offsets();
        let q = geo.slot_count() as usize;
        let mut spans = vec![
            (0, 64), (o.groups, 128), (o.receiver, 64), (o.charge, 64),
            (o.ready, geo.ready_words() * 8),
            (o.slots, q * 128),
            (o.cells, q * geo.ring_cells() as usize * 16),
        ];
        for (g, grp) in geo.groups().iter().enumerate() {
            spans.push((o.hints[g], geo.hint_words(g) * 8));
            spans.push((o.dirs[g], grp.partitions as usize * 16));
            spans.push((o.data[g], grp.partitions as usize * grp.partition_bytes as usize));
            prop_assert_eq!(o.data[g] % 4096, 0);
            prop_assert_eq!(o.dirs[g] % 16, 0);
            prop_assert_eq!(o.hints[g] % 8, 0);
        }
        spans.sort();
        for w in spans.windows(2) {
            prop_assert!(w[0].0 + w[0].1 <= w[1].0, "{:?} overlaps {:?}", w[0], w[1]);
        }
        let last = spans.last().unwrap();
        prop_assert!(last.0 + last.1 <= o.total);
        prop_assert_eq!(o.total % 4096, 0);
        prop_assert_eq!(o.slots % 64, 0);
        prop_assert_eq!(o.cells % 64, 0);
    }

    /// Random sends and receives on a random geometry: what goes in comes
    /// out whole and in order, or was dropped; all is free at the end.
    #[test]
    fn random_traffic_is_whole_and_ordered(
        geo in geometry(),
        ops in prop::collection::vec((0u8..4, 0usize..70_000), 1..200),
    ) {
        let (mut rx, image) = heap_target(geo);
        rx.set_limit(1 << 30);
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        let mut queue = std::collections::VecDeque::new();
        let mut buf = vec![0u8; 70_000];
        for (n, (op, len)) in ops.into_iter().enumerate() {
            if op < 2 {
                let d: Vec<u8> = (0..len).map(|k| (k + n) as u8).collect();
                match tx.send(&d) {
                    Ok(Sent::Queued { .. }) => queue.push_back(d),
                    Ok(Sent::Dropped(_)) => {}
                    Ok(Sent::Stopped) => unreachable!(),
                    Err(SendError::TooBig) => prop_assert!(len > geo.max_datagram() as usize),
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            } else {
                let peek = op == 2;
                let cap = len.min(buf.len());
                match rx.recv(&mut buf[..cap], peek) {
                    Ok(r) => {
                        let want = if peek { queue.front().cloned() } else { queue.pop_front() };
                        let want = want.expect("received with nothing queued");
                        prop_assert_eq!(r.len, want.len());
                        prop_assert_eq!(r.copied, want.len().min(cap));
                        prop_assert_eq!(&buf[..r.copied], &want[..r.copied]);
                    }
                    Err(RecvError::Empty) => prop_assert!(queue.is_empty()),
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
        }
        while let Some(want) = queue.pop_front() {
            let r = rx.recv(&mut buf, false).unwrap();
            prop_assert_eq!(&buf[..r.len], &want[..]);
        }
        prop_assert_eq!(rx.recv(&mut buf, false), Err(RecvError::Empty));
        prop_assert_eq!(rx.partitions_in_use(), 0);
        prop_assert_eq!(rx.queued_bytes(), 0);
    }
}

/// Claims 1-2 and 9: a datagram goes to the smallest group whose partition
/// size x span factor holds it, and to the next larger group when that one
/// is full; it is dropped only when the last is full too.
#[test]
fn full_group_spills_to_the_next_larger() {
    let g = |pb, p, s| GroupGeometry {
        partition_bytes: pb,
        partitions: p,
        span_max: s,
    };
    let geo = DgramGeometry::new(&[g(64, 4, 1), g(256, 4, 4)], 1, 16).unwrap();
    assert_eq!(geo.max_datagram(), 1024);
    let (mut rx, image) = heap_target(geo);
    rx.set_limit(1 << 30);
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    // Four small ones fill group 0, the next two take one 256-byte
    // partition each of group 1.
    for k in 0..6u8 {
        assert!(
            matches!(tx.send(&[k; 10]).unwrap(), Sent::Queued { .. }),
            "{k}"
        );
    }
    assert_eq!(rx.partitions_in_use(), 6);
    // 300 bytes need two partitions of group 1 (64 x 1 is too small):
    // the two left.
    assert!(matches!(tx.send(&[6u8; 300]).unwrap(), Sent::Queued { .. }));
    assert_eq!(rx.partitions_in_use(), 8);
    assert_eq!(
        tx.send(&[7u8; 10]).unwrap(),
        Sent::Dropped(DropReason::NoRoom)
    );
    assert_eq!(tx.send(&[8u8; 1025]), Err(SendError::TooBig));
    let mut buf = [0u8; 1024];
    for k in 0..7u8 {
        let r = rx.recv(&mut buf, false).unwrap();
        let n = if k == 6 { 300 } else { 10 };
        assert_eq!(r.len, n);
        assert!(buf[..n].iter().all(|b| *b == k));
    }
    assert_eq!(rx.partitions_in_use(), 0);
    // Freed group 0 is used first again.
    tx.send(&[9u8; 64]).unwrap();
    tx.send(&[9u8; 65]).unwrap();
    assert_eq!(rx.partitions_in_use(), 2);
}

/// Sixteen sender threads on two vCPUs: claims of runs of 1 to 32
/// partitions race on the same hint words; every datagram arrives whole,
/// in its sender's order, or was dropped.
#[test]
fn sixteen_threads_race_for_partitions() {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    rx.set_limit(1 << 20);
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(16));
    let handles: Vec<_> = (0..16)
        .map(|id| {
            let g = rx.open_slot().unwrap();
            let (image, running) = (image.clone(), running.clone());
            std::thread::spawn(move || {
                let mut tx = image.sender(g).unwrap();
                let r = send_all(&mut tx, id, 1000);
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                r
            })
        })
        .collect();
    let got = drain_checked(&mut rx, 16, || {
        running.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    let mut dropped = 0;
    for (id, h) in handles.into_iter().enumerate() {
        let (q, d) = h.join().unwrap();
        assert_eq!(got[id], q, "sender {id}");
        dropped += d;
    }
    eprintln!(
        "16 senders: {} delivered, {dropped} dropped",
        got.iter().sum::<u64>()
    );
    assert_eq!(rx.partitions_in_use(), 0);
    assert_eq!(rx.stats().corrupt, 0);
}
