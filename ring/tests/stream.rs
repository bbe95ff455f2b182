//! Stream semantics of one channel, single-threaded and with two threads.
#![cfg(not(loom))]

use proptest::prelude::*;
use shmnet_ring::{heap_channel, Geometry, RingError, WaitPolicy};
use std::io::{IoSlice, IoSliceMut};
use std::time::{Duration, Instant};

fn geo(n: u32, s: u32) -> Geometry {
    Geometry::new(n, s).unwrap()
}

fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i * 131 % 251) as u8)
        .collect()
}

#[test]
fn small_writes_coalesce_and_read_back() {
    let (mut p, mut c) = heap_channel(geo(4, 64));
    assert_eq!(c.read(&mut [0; 8]), Err(RingError::WouldBlock));
    for i in 0..10u8 {
        assert_eq!(p.write(&[i; 3]).unwrap(), 3);
    }
    assert_eq!(c.available().unwrap(), 30);
    let mut out = [0u8; 30];
    assert_eq!(c.read(&mut out).unwrap(), 30);
    let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 3]).collect();
    assert_eq!(&out[..], &want[..]);
}

#[test]
fn fills_exactly_then_would_block_then_frees_a_segment() {
    let (mut p, mut c) = heap_channel(geo(4, 64));
    // N - 1 segments free plus the open one: all 4 * 64 bytes usable.
    assert_eq!(p.free_bytes().unwrap(), 256);
    assert_eq!(p.write(&pattern(0, 300)).unwrap(), 256);
    assert_eq!(p.write(&[1]), Err(RingError::WouldBlock));
    let mut out = vec![0u8; 64];
    assert_eq!(c.read(&mut out).unwrap(), 64);
    assert_eq!(out, pattern(0, 64));
    // The drained segment is handed back at once, not on the next read.
    assert_eq!(p.free_bytes().unwrap(), 64);
    assert_eq!(p.write(&pattern(256, 100)).unwrap(), 64);
    let mut rest = vec![0u8; 400];
    assert_eq!(c.read(&mut rest).unwrap(), 256);
    assert_eq!(&rest[..256], &pattern(64, 256)[..]);
}

#[test]
fn vectored_io_and_peek() {
    let (mut p, mut c) = heap_channel(geo(4, 64));
    let a = pattern(0, 50);
    let b = pattern(50, 90);
    let n = p
        .write_vectored(&[IoSlice::new(&a), IoSlice::new(&[]), IoSlice::new(&b)])
        .unwrap();
    assert_eq!(n, 140);
    let mut peeked = vec![0u8; 100];
    assert_eq!(c.peek(&mut peeked).unwrap(), 100);
    assert_eq!(peeked, pattern(0, 100));
    let (mut x, mut y) = (vec![0u8; 70], vec![0u8; 100]);
    let n = c
        .read_vectored(&mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)])
        .unwrap();
    assert_eq!(n, 140);
    assert_eq!(x, pattern(0, 70));
    assert_eq!(&y[..70], &pattern(70, 70)[..]);
}

#[test]
fn eof_after_drain_and_epipe_after_reader_close() {
    let (mut p, mut c) = heap_channel(geo(2, 64));
    p.write(b"bye").unwrap();
    p.close();
    assert_eq!(p.write(b"x"), Err(RingError::Closed));
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf).unwrap(), 3);
    assert_eq!(c.read(&mut buf).unwrap(), 0);
    assert_eq!(c.read(&mut buf).unwrap(), 0);

    let (mut p, c) = heap_channel(geo(2, 64));
    c.close();
    assert_eq!(p.write(b"x"), Err(RingError::Closed));
    assert_eq!(RingError::Closed.errno(), libc::EPIPE);
}

#[test]
fn reset_is_seen_by_both_halves() {
    let (mut p, mut c) = heap_channel(geo(2, 64));
    p.write(b"data").unwrap();
    c.reset();
    assert_eq!(p.write(b"x"), Err(RingError::Reset));
    assert_eq!(c.read(&mut [0; 4]), Err(RingError::Reset));
    assert_eq!(RingError::Reset.errno(), libc::ECONNRESET);
}

#[test]
fn blocking_transfer_between_threads() {
    for spin in [Duration::ZERO, Duration::from_micros(50)] {
        let (mut p, mut c) = heap_channel(geo(4, 256));
        let total = 1 << 20;
        let policy = WaitPolicy {
            spin,
            deadline: Some(Instant::now() + Duration::from_secs(60)),
            ..WaitPolicy::default()
        };
        let pp = policy.clone();
        let t = std::thread::spawn(move || {
            let data = pattern(0, total);
            for chunk in data.chunks(777) {
                p.write_all(chunk, &pp).unwrap();
            }
            p.close();
        });
        let mut got = Vec::with_capacity(total);
        let mut buf = vec![0u8; 1000];
        loop {
            let k = c.read_blocking(&mut buf, &policy).unwrap();
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        t.join().unwrap();
        assert_eq!(got.len(), total);
        assert!(got == pattern(0, total));
    }
}

#[test]
fn blocking_read_times_out() {
    let (_p, mut c) = heap_channel(geo(2, 64));
    let policy = WaitPolicy {
        deadline: Some(Instant::now() + Duration::from_millis(20)),
        ..WaitPolicy::blocking()
    };
    assert_eq!(
        c.read_blocking(&mut [0; 4], &policy),
        Err(RingError::TimedOut)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    WriteV(Vec<usize>),
    Read(usize),
    ReadV(Vec<usize>),
    Peek(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..700).prop_map(Op::Write),
        prop::collection::vec(0usize..200, 0..5).prop_map(Op::WriteV),
        (0usize..700).prop_map(Op::Read),
        prop::collection::vec(0usize..200, 0..5).prop_map(Op::ReadV),
        (0usize..300).prop_map(Op::Peek),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any interleaving of writes and reads of any sizes delivers exactly
    /// the byte stream written, across wrap-around and partial segments.
    #[test]
    fn stream_is_delivered_exactly(
        n in 2u32..6,
        s in prop::sample::select(vec![64u32, 128, 192, 256]),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let (mut p, mut c) = heap_channel(geo(n, s));
        let cap = (n * s) as usize;
        let (mut sent, mut recv) = (0usize, 0usize);
        let mut got: Vec<u8> = Vec::new();
        for op in ops {
            let in_ring = sent - recv;
            match op {
                Op::Write(len) => {
                    let free = p.free_bytes().unwrap();
                    prop_assert!(free <= cap - in_ring);
                    prop_assert_eq!(p.fits(len), len <= free);
                    match p.write(&pattern(sent, len)) {
                        Ok(k) => { prop_assert_eq!(k, len.min(free)); sent += k; }
                        Err(RingError::WouldBlock) => prop_assert!(free == 0 && len > 0),
                        Err(e) => prop_assert!(false, "write: {e}"),
                    }
                }
                Op::WriteV(lens) => {
                    let total: usize = lens.iter().sum();
                    let bufs: Vec<Vec<u8>> = {
                        let mut at = sent;
                        lens.iter().map(|&l| { let b = pattern(at, l); at += l; b }).collect()
                    };
                    let slices: Vec<IoSlice> = bufs.iter().map(|b| IoSlice::new(b)).collect();
                    let free = p.free_bytes().unwrap();
                    match p.write_vectored(&slices) {
                        Ok(k) => { prop_assert_eq!(k, total.min(free)); sent += k; }
                        Err(RingError::WouldBlock) => prop_assert!(free == 0 && total > 0),
                        Err(e) => prop_assert!(false, "writev: {e}"),
                    }
                }
                Op::Read(len) => {
                    prop_assert_eq!(c.available().unwrap(), in_ring);
                    let mut buf = vec![0u8; len];
                    match c.read(&mut buf) {
                        Ok(k) => {
                            prop_assert_eq!(k, len.min(in_ring));
                            got.extend_from_slice(&buf[..k]);
                            recv += k;
                        }
                        Err(RingError::WouldBlock) => prop_assert!(in_ring == 0 && len > 0),
                        Err(e) => prop_assert!(false, "read: {e}"),
                    }
                }
                Op::ReadV(lens) => {
                    let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0u8; l]).collect();
                    let total: usize = lens.iter().sum();
                    let mut slices: Vec<IoSliceMut> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                    match c.read_vectored(&mut slices) {
                        Ok(k) => {
                            prop_assert_eq!(k, total.min(in_ring));
                            let flat: Vec<u8> = bufs.concat();
                            got.extend_from_slice(&flat[..k]);
                            recv += k;
                        }
                        Err(RingError::WouldBlock) => prop_assert!(in_ring == 0 && total > 0),
                        Err(e) => prop_assert!(false, "readv: {e}"),
                    }
                }
                Op::Peek(len) => {
                    let mut buf = vec![0u8; len];
                    match c.peek(&mut buf) {
                        Ok(k) => {
                            prop_assert_eq!(k, len.min(in_ring));
                            prop_assert_eq!(&buf[..k], &pattern(recv, k)[..]);
                        }
                        Err(RingError::WouldBlock) => prop_assert!(in_ring == 0 && len > 0),
                        Err(e) => prop_assert!(false, "peek: {e}"),
                    }
                }
            }
            // A drained segment is always handed back: at most the consumed part of
            // the tail segment is not yet reusable.
            prop_assert!(p.free_bytes().unwrap() + (sent - recv) + s as usize >= cap);
        }
        p.close();
        let mut rest = vec![0u8; cap];
        let k = c.read(&mut rest).unwrap();
        got.extend_from_slice(&rest[..k]);
        prop_assert_eq!(got.len(), sent);
        prop_assert!(got == pattern(0, sent));
        prop_assert_eq!(c.read(&mut rest).unwrap(), 0);
    }
}

/// What a doorbell sees of the consumer's side when it rings: the ring is
/// counted and the producer is no longer busy (issue 14: a reader woken by
/// the byte used to find the producer still inside its write, and waited
/// out the rest of the producer's send with sched_yield and a futex sleep
/// that the producer then had to wake).
struct WatchingBell {
    rx: std::sync::Mutex<Option<shmnet_ring::Consumer>>,
    seen: std::sync::Mutex<Vec<(bool, u32)>>,
}

impl shmnet_ring::Doorbell for WatchingBell {
    fn ring(&self) -> bool {
        let rx = self.rx.lock().unwrap();
        let rx = rx.as_ref().unwrap();
        let n = rx.notify();
        self.seen
            .lock()
            .unwrap()
            .push((n.producer_busy(), n.doorbells_rung()));
        true
    }
}

#[test]
fn a_ring_goes_out_counted_with_the_producer_idle() {
    let (mut tx, rx) = heap_channel(geo(2, 64));
    rx.arm(shmnet_ring::WaitKind::Doorbell);
    let bell = std::sync::Arc::new(WatchingBell {
        rx: std::sync::Mutex::new(Some(rx)),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    tx.set_doorbell(bell.clone());
    tx.write(b"one").unwrap();
    // Not armed again: no second ring.
    tx.write(b"two").unwrap();
    bell.rx
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .arm(shmnet_ring::WaitKind::Doorbell);
    tx.write_vectored(&[IoSlice::new(b"th"), IoSlice::new(b"ree")])
        .unwrap();
    assert_eq!(*bell.seen.lock().unwrap(), vec![(false, 1), (false, 2)]);
    let mut rx = bell.rx.lock().unwrap().take().unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(rx.read(&mut buf).unwrap(), 11);
    assert_eq!(&buf[..11], b"onetwothree");
}
