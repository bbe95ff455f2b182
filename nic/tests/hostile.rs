//! The region as hostile input: descriptors out of bounds, impossible
//! queue indices and random scribbles over every shared word are refused
//! or skipped, never followed outside the sender's pool; and the normal
//! path carries every packet, in order, across threads, with the doorbell
//! protocol (a lost wake-up would stall this test for good).

use shmnet_nic::layout::Geometry;
use shmnet_nic::port::{RxPort, TxPort};
use shmnet_nic::region::Region;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn region(p: u32) -> (Arc<Region>, Arc<Region>, Geometry) {
    let geo = Geometry::new(p, 1, 16, 2048).unwrap();
    let fd = Region::create(geo).unwrap();
    (
        Arc::new(Region::attach(&fd).unwrap()),
        Arc::new(Region::attach(&fd).unwrap()),
        geo,
    )
}

/// Queues one packet of `len` bytes (all `fill`) from 0 to 1.
fn send(tx: &mut TxPort, len: usize, fill: u8) {
    let b = tx.buffer().unwrap();
    // SAFETY: b is a buffer of tx's pool, capacity() >= len bytes.
    unsafe { core::ptr::write_bytes(b.as_mut_ptr(), fill, len) };
    tx.push(1, b, len).unwrap();
    tx.publish();
}

#[test]
fn descriptors_out_of_bounds_are_refused() {
    let (r0, r1, geo) = region(2);
    let mut tx = TxPort::new(r0.clone(), 0, 0);
    let mut rx = RxPort::new(r1, 1, 0);
    let pool = geo.pool_bytes() as u32;
    for (off, len) in [
        (pool, 1),
        (pool - 10, 11),
        (0, 0),
        (0, geo.buf_bytes + 1),
        (u32::MAX, 2),
    ] {
        send(&mut tx, 64, 7);
        // The sender (hostile) rewrites the descriptor it just published.
        let head = r0.queue(0, 1, 0).producer.head.load(Ordering::Relaxed);
        let d = r0.desc(0, 1, 0, head.wrapping_sub(1));
        d.offset.store(off, Ordering::Relaxed);
        d.len.store(len, Ordering::Relaxed);
        let mut got = 0;
        let p = rx.poll(64, |_, _| got += 1);
        assert_eq!((p.packets, p.rejected, got), (0, 1, 0), "({off}, {len})");
    }
    // A packet at the very end of the pool is fine.
    send(&mut tx, 64, 9);
    let head = r0.queue(0, 1, 0).producer.head.load(Ordering::Relaxed);
    let d = r0.desc(0, 1, 0, head.wrapping_sub(1));
    d.offset.store(pool - 64, Ordering::Relaxed);
    let mut seen = Vec::new();
    assert_eq!(rx.poll(64, |s, p| seen.push((s, p.len()))).packets, 1);
    assert_eq!(seen, [(0, 64)]);
}

#[test]
fn impossible_head_skips_the_queue() {
    let (r0, r1, geo) = region(3);
    let mut rx = RxPort::new(r1.clone(), 1, 0);
    r0.queue(0, 1, 0)
        .producer
        .head
        .store(geo.slots + 5, Ordering::Release);
    let p = rx.poll(64, |_, _| panic!("nothing may be delivered"));
    assert_eq!((p.packets, p.rejected), (0, 1));
    // The receiver skipped to the claimed head; the queue works from there.
    assert_eq!(
        r1.queue(0, 1, 0).consumer.tail.load(Ordering::Relaxed),
        geo.slots + 5
    );
    // A receiver's impossible tail does not make the sender free buffers.
    let mut tx = TxPort::new(r0.clone(), 2, 0);
    send_to(&mut tx, 1);
    r0.queue(2, 1, 0)
        .consumer
        .tail
        .store(1000, Ordering::Release);
    assert!(!tx.reclaim(1));
}

fn send_to(tx: &mut TxPort, d: usize) {
    let b = tx.buffer().unwrap();
    tx.push(d, b, 20).unwrap();
    tx.publish();
}

#[test]
fn random_scribbles_never_escape_the_pool() {
    let (r0, r1, geo) = region(3);
    let mut rx = RxPort::new(r1, 1, 0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        for s in [0usize, 2] {
            let q = r0.queue(s, 1, 0);
            let v = next();
            q.producer
                .head
                .store(v as u32 % (2 * geo.slots), Ordering::Release);
            for i in 0..geo.slots {
                let d = r0.desc(s, 1, 0, i);
                let v = next();
                d.offset.store(
                    v as u32 % (geo.pool_bytes() as u32 + 4096),
                    Ordering::Relaxed,
                );
                d.len
                    .store((v >> 32) as u32 % (geo.buf_bytes + 64), Ordering::Relaxed);
            }
        }
        rx.poll(u32::MAX, |s, p| {
            assert!(s == 0 || s == 2);
            assert!(!p.is_empty() && p.len() <= geo.buf_bytes as usize);
        });
    }
}

#[test]
fn every_packet_arrives_in_order_across_threads() {
    const N: u32 = 20_000;
    let (r0, r1, _) = region(2);
    let sender = std::thread::spawn(move || {
        let mut tx = TxPort::new(r0, 0, 0);
        for i in 0..N {
            let len = 20 + (i as usize * 7) % 1400;
            let b = loop {
                if let Some(b) = tx.buffer() {
                    break b;
                }
                std::thread::yield_now();
            };
            // SAFETY: b is ours, capacity() >= len.
            unsafe {
                core::ptr::write_bytes(b.as_mut_ptr(), i as u8, len);
                core::ptr::copy_nonoverlapping(i.to_le_bytes().as_ptr(), b.as_mut_ptr(), 4);
            }
            let mut b = b;
            loop {
                match tx.push(1, b, len) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        b = back;
                        tx.wait_room(1, Duration::from_millis(100));
                    }
                }
            }
            // Publish in small batches, as the send loop does.
            if i % 8 == 7 {
                tx.publish();
            }
        }
        tx.publish();
    });
    let mut rx = RxPort::new(r1, 1, 0);
    let mut want = 0u32;
    while want < N {
        let p = rx.poll(64, |s, p| {
            assert_eq!(s, 0);
            let i = u32::from_le_bytes(p[..4].try_into().unwrap());
            assert_eq!(i, want);
            assert_eq!(p.len(), 20 + (i as usize * 7) % 1400);
            assert!(p[4..].iter().all(|&x| x == i as u8));
            want += 1;
        });
        assert_eq!(p.rejected, 0);
        if p.packets == 0 {
            rx.sleep(Duration::from_secs(60));
        }
    }
    sender.join().unwrap();
}

/// Ping-pong through two queues, one packet at a time: every packet finds
/// its receiver about to sleep or asleep, the window where a lost wake-up
/// would hide. Sleeps are 60 s long, so one lost wake-up shows as a stall.
#[test]
fn ping_pong_wakes_every_sleeper() {
    const ROUNDS: u32 = 5_000;
    let (r0, r1, _) = region(2);
    let long = Duration::from_secs(60);
    let echo = std::thread::spawn(move || {
        let (mut rx, mut tx) = (RxPort::new(r1.clone(), 1, 0), TxPort::new(r1, 1, 0));
        let mut n = 0;
        while n < ROUNDS {
            let mut got = Vec::new();
            rx.poll(64, |_, p| got.push(p.len()));
            if got.is_empty() {
                rx.sleep(long);
            }
            for len in got {
                let b = tx.buffer().unwrap();
                tx.push(0, b, len).unwrap();
                tx.publish();
                n += 1;
            }
        }
    });
    let (mut rx, mut tx) = (RxPort::new(r0.clone(), 0, 0), TxPort::new(r0, 0, 0));
    for i in 0..ROUNDS {
        let b = tx.buffer().unwrap();
        tx.push(1, b, 20 + (i as usize % 100)).unwrap();
        tx.publish();
        let mut back = 0;
        while back == 0 {
            back = rx
                .poll(64, |_, p| assert_eq!(p.len(), 20 + (i as usize % 100)))
                .packets;
            if back == 0 {
                rx.sleep(long);
            }
        }
    }
    echo.join().unwrap();
}
