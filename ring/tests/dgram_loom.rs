//! Model checks of the datagram protocol with loom: claims, publish,
//! consume, free and reuse, the ready map, the doorbell flag and reclaim,
//! in every interleaving up to a preemption bound. loom tracks every data
//! byte as a cell, so a byte read without being ordered after its write
//! (a torn or raced datagram) fails the model.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p shmnet-ring --test dgram_loom --release`
//! (the Makefile's `loom` target does this).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use shmnet_ring::dgram::{
    heap_target, Closing, DgramGeometry, GroupGeometry, Receiver, RecvError, SendError, Sent, Stage,
};
use std::io::IoSlice;

fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(f);
}

/// One group of `partitions` partitions of 8 bytes, runs of up to 2;
/// `slots` slots of 2 cells.
fn geo(partitions: u32, slots: u32) -> DgramGeometry {
    geo_cells(partitions, slots, 2)
}

fn geo_cells(partitions: u32, slots: u32, cells: u32) -> DgramGeometry {
    let g = GroupGeometry {
        partition_bytes: 8,
        partitions,
        span_max: 2.min(partitions),
    };
    DgramGeometry::new(&[g], slots, cells).unwrap()
}

/// Receives one datagram if there is one; checks it is `len` bytes of one
/// value (whole, from one sender) and returns that value.
fn take(rx: &mut Receiver, len: usize) -> Option<u8> {
    let mut buf = [0u8; 16];
    match rx.recv(&mut buf, false) {
        Ok(r) => {
            assert_eq!((r.len, r.copied), (len, len));
            assert!(buf[..len].iter().all(|b| *b == buf[0]), "torn: {buf:?}");
            Some(buf[0])
        }
        Err(RecvError::Empty) => None,
        Err(e) => panic!("{e}"),
    }
}

/// Model 1 (and 6, 7): two senders claim 2-partition runs out of 3
/// partitions while the receiver consumes: never both own a partition
/// (each delivered datagram is one sender's bytes, whole), a failed claim
/// rolls back and the send drops, and afterwards every partition and every
/// byte of charge is free.
#[test]
fn two_senders_never_share_a_partition() {
    model(3, || {
        let (mut rx, image) = heap_target(geo(3, 2));
        rx.set_limit(1 << 30);
        let done = Arc::new(AtomicUsize::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (1..=2u8)
            .map(|v| {
                let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
                let (done, queued) = (done.clone(), queued.clone());
                thread::spawn(move || {
                    if let Sent::Queued { .. } = tx.send(&[v; 9]).unwrap() {
                        queued.fetch_add(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let mut got = 0;
        loop {
            let finished = done.load(Ordering::SeqCst) == 2;
            match take(&mut rx, 9) {
                Some(_) => got += 1,
                None if finished => break,
                None => thread::yield_now(),
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(got, queued.load(Ordering::SeqCst));
        assert!(got >= 1);
        assert_eq!(rx.partitions_in_use(), 0);
        assert_eq!(rx.queued_bytes(), 0);
    });
}

/// Model 2: one partition used twice: the second datagram can only be
/// claimed after the receiver freed the first, and its copy-in is ordered
/// after the receiver's copy-out (owner Release/Acquire).
#[test]
fn free_then_reuse() {
    model(3, || {
        let (mut rx, image) = heap_target(geo(1, 1));
        rx.set_limit(1 << 30);
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        let t = thread::spawn(move || {
            for v in [1u8, 2] {
                while !matches!(tx.send(&[v; 8]).unwrap(), Sent::Queued { .. }) {
                    thread::yield_now();
                }
            }
        });
        let mut want = 1;
        while want <= 2 {
            match take(&mut rx, 8) {
                Some(v) => {
                    assert_eq!(v, want);
                    want += 1;
                }
                None => thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(rx.partitions_in_use(), 0);
    });
}

/// Model 2b: a ring of one cell: the second datagram's descriptor is
/// written only after the receiver read the first (tail Release/Acquire).
/// The cells are atomics, so what a Relaxed `tail` could break here is a
/// load that sees a later store (load buffering), which loom does not
/// model: this model checks the protocol's waiting, the SYNC POINT (c)
/// argument its ordering.
#[test]
fn cell_reuse() {
    model(3, || {
        let (mut rx, image) = heap_target(geo_cells(2, 1, 1));
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        let t = thread::spawn(move || {
            for v in [1u8, 2] {
                while !matches!(tx.send(&[v; 4]).unwrap(), Sent::Queued { .. }) {
                    thread::yield_now();
                }
            }
        });
        let mut want = 1;
        while want <= 2 {
            match take(&mut rx, 4) {
                Some(v) => {
                    assert_eq!(v, want);
                    want += 1;
                }
                None => thread::yield_now(),
            }
        }
        t.join().unwrap();
    });
}

/// Model 3: the receiver raises its doorbell flag and looks; a sender
/// publishes. Either the receiver's look saw the datagram, or the sender
/// took the flag and rings: no sleep without a wake-up.
#[test]
fn no_lost_wakeup() {
    model(3, || {
        let (mut rx, image) = heap_target(geo(2, 1));
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        let rang = Arc::new(AtomicBool::new(false));
        let r2 = rang.clone();
        let t = thread::spawn(move || {
            if let Sent::Queued { ring: true } = tx.send(b"x").unwrap() {
                r2.store(true, Ordering::SeqCst);
            }
        });
        let saw = rx.arm();
        t.join().unwrap();
        assert!(saw || rang.load(Ordering::SeqCst), "lost wake-up");
        assert_eq!(rx.rings(), u32::from(rang.load(Ordering::SeqCst)));
        rx.disarm();
        assert_eq!(take(&mut rx, 1), Some(b'x'));
    });
}

/// Model 8: the receiver closes its segment to drain it (going back to
/// the kernel before a fork: `close_to_drain`, receive until empty,
/// `close`) while a sender sends. The datagram is received by the drain,
/// or its sender finds it still in the ring once the close is final (and
/// sends it elsewhere), or the send stopped at the close; never both
/// received and left (a resend would double it), never neither (lost: a
/// sender that loaded `closed` before the close and published after the
/// drain, review udpshare16).
#[test]
fn drain_at_close_loses_nothing() {
    model(3, || {
        let (mut rx, image) = heap_target(geo(2, 1));
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        let t = thread::spawn(move || match tx.send(b"z") {
            Ok(Sent::Queued { .. }) => {
                if tx.closing() == Closing::Open {
                    return 0; // the drain must find it
                }
                while tx.closing() != Closing::Final {
                    thread::yield_now();
                }
                if tx.outstanding().0 == 0 {
                    1 // taken
                } else {
                    2 // left: its sender sends it again
                }
            }
            Err(SendError::Closed) => 3,
            other => panic!("{other:?}"),
        });
        rx.close_to_drain();
        // The drain: until empty (a datagram published meanwhile may be
        // taken too; its sender reads the tail only once final).
        let mut got = None;
        while let Some(v) = take(&mut rx, 1) {
            assert_eq!(got.replace(v), None, "twice");
        }
        rx.close();
        let said = t.join().unwrap();
        match said {
            0 | 1 => assert_eq!(got, Some(b'z'), "lost ({said})"),
            _ => assert_eq!(got, None, "received and left ({said})"),
        }
    });
}

/// Model 9: the receiver goes across exec (`close_to_kernel`, interposer
/// decision 56) after one receive of a datagram queued before, while the
/// sender sends another.
/// The sender takes back what is left once it sees the mark (after a
/// publish, at a send the mark stopped, or at its next send after the
/// model: `take_back` once, as the route goes then), and sends later
/// datagrams elsewhere. Each datagram is received, taken back or sent
/// elsewhere, exactly once. (With the close stored Relaxed instead of
/// Release the model fails: 'a' received and taken back.)
#[test]
fn close_to_kernel_takes_back_exactly_what_is_left() {
    model(3, || {
        let (mut rx, image) = heap_target(geo(2, 1));
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        // 'a' is in the ring before the race: the receive may take it.
        assert!(matches!(tx.send(b"a"), Ok(Sent::Queued { .. })));
        let t = thread::spawn(move || {
            let (mut back, mut elsewhere) = (None::<Vec<Vec<u8>>>, Vec::new());
            for v in [b'b'] {
                if back.is_some() {
                    elsewhere.push(v);
                    continue;
                }
                match tx.send(&[v]) {
                    Ok(Sent::Queued { .. }) => {
                        if tx.closing() == Closing::ToKernel {
                            back = Some(tx.take_back());
                        }
                    }
                    Err(SendError::Closed) => {
                        back = Some(tx.take_back());
                        elsewhere.push(v);
                    }
                    other => panic!("{other:?}"),
                }
            }
            (tx, back, elsewhere)
        });
        let got = take(&mut rx, 1);
        rx.close_to_kernel();
        let (tx, back, elsewhere) = t.join().unwrap();
        let back = back.unwrap_or_else(|| tx.take_back());
        let mut all: Vec<u8> = got.into_iter().chain(elsewhere).collect();
        all.extend(back.iter().map(|d| {
            assert_eq!(d.len(), 1);
            d[0]
        }));
        all.sort_unstable();
        assert_eq!(all, vec![b'a', b'b'], "lost or twice");
    });
}

/// Model 4: a receive that finds the ring empty clears the slot's ready
/// bit while the sender publishes: the datagram is never stranded behind
/// a clear bit (the next receive after the sender is done finds it).
#[test]
fn ready_bit_race() {
    model(3, || {
        let (mut rx, image) = heap_target(geo(2, 1));
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        // Prelude: the bit is left set by a datagram already taken (bits
        // are cleared only by a look that finds the ring empty), so the
        // sender may skip its RMW below.
        tx.send(&[3u8; 3]).unwrap();
        assert_eq!(take(&mut rx, 3), Some(3));
        let t = thread::spawn(move || {
            tx.send(&[4u8; 3]).unwrap();
        });
        let first = take(&mut rx, 3);
        t.join().unwrap();
        if first.is_none() {
            assert_eq!(
                take(&mut rx, 3),
                Some(4),
                "stranded behind a clear ready bit"
            );
        }
        assert_eq!(take(&mut rx, 3), None);
    });
}

/// Model 5: a sender that dies at a step of its send (its thread ends
/// there) while the receiver polls; then its slot is closed. Nothing
/// partial is delivered, a published datagram is delivered whole, and
/// reclaim leaves every partition and byte of charge free.
#[test]
fn dead_sender_reclaimed() {
    for stage in [Stage::Claimed, Stage::Filled, Stage::Published] {
        model(3, move || {
            let (mut rx, image) = heap_target(geo(2, 1));
            let g = rx.open_slot().unwrap();
            let mut tx = image.sender(g).unwrap();
            let t = thread::spawn(move || {
                let d = [6u8; 12];
                assert_eq!(
                    tx.send_stopping_at(&[IoSlice::new(&d)], stage).unwrap(),
                    Sent::Stopped
                );
            });
            let mut got = take(&mut rx, 12).is_some();
            t.join().unwrap();
            rx.close_slot(g.slot);
            got |= take(&mut rx, 12).is_some();
            assert_eq!(got, stage == Stage::Published);
            assert_eq!(take(&mut rx, 12), None);
            assert_eq!(rx.slots_in_use(), 0);
            assert_eq!(rx.partitions_in_use(), 0);
            // An idle segment's leftover charge is rebased on the second
            // empty look.
            let _ = take(&mut rx, 12);
            assert_eq!(rx.queued_bytes(), 0);
        });
    }
}

/// Model 8 (review of issue 16, F3): a repair pass (started by a reclaim)
/// runs while a live sender claims, copies and publishes. The repair only
/// frees owner words no live slot has (by CAS) and only clears hint bits
/// of free partitions: the datagram arrives whole, once, the send is never
/// dropped, and afterwards every partition is free.
#[test]
fn repair_never_frees_a_live_claim() {
    model(3, || {
        let (mut rx, image) = heap_target(geo(2, 2));
        let gone = rx.open_slot().unwrap();
        let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
        let t = thread::spawn(move || {
            assert!(matches!(tx.send(&[7u8; 8]).unwrap(), Sent::Queued { .. }));
        });
        rx.close_slot(gone.slot); // a reclaim starts a repair pass
        let mut got = u32::from(take(&mut rx, 8).is_some());
        t.join().unwrap();
        while take(&mut rx, 8).is_some() {
            got += 1;
        }
        assert_eq!(got, 1);
        assert_eq!(rx.partitions_in_use(), 0);
    });
}

/// Model 12: the receiver frees a run of nine partitions (the free that
/// follows a receive) while another sender claims one partition of the
/// three that stay free throughout: it gets one, in every interleaving.
/// A free that cleared the run's hint bits before its owners let the
/// claim spend its `CANDIDATES` (8) tries on partitions still owned and
/// drop the datagram (NoRoom) with room to spare: a UDP receiver's
/// datagram lost now and then under load (session 39, udpspawn39: a
/// receiver preempted inside its free of a batch of 16).
#[test]
fn a_run_being_freed_hides_no_free_partition() {
    model(2, || {
        let g = GroupGeometry {
            partition_bytes: 8,
            partitions: 12,
            span_max: 9,
        };
        let (mut rx, image) = heap_target(DgramGeometry::new(&[g], 2, 2).unwrap());
        rx.set_limit(1 << 30);
        let mut big = image.sender(rx.open_slot().unwrap()).unwrap();
        let mut small = image.sender(rx.open_slot().unwrap()).unwrap();
        assert!(matches!(big.send(&[1u8; 72]).unwrap(), Sent::Queued { .. }));
        let t = thread::spawn(move || small.send(&[2u8; 8]).unwrap());
        let mut buf = [0u8; 72];
        let r = rx.recv(&mut buf, false).unwrap();
        assert_eq!(r.len, 72);
        let sent = t.join().unwrap();
        assert!(matches!(sent, Sent::Queued { .. }), "{sent:?}");
    });
}
