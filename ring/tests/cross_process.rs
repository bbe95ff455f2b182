//! Two processes (fork) mapping the same memfd: bulk transfer with checksums,
//! both directions at once, end-of-stream, reset and peer death.
#![cfg(not(loom))]

mod common;
use common::*;
use shmnet_ring::{RingError, Segment, WaitPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GIB: usize = 1 << 30;
const LIMIT: Duration = Duration::from_secs(300);

fn policy() -> WaitPolicy {
    WaitPolicy {
        deadline: Some(Instant::now() + LIMIT),
        ..WaitPolicy::default()
    }
}

/// Sends `total` pseudo-random bytes from `seed`; returns their CRC32.
fn send(tx: &mut shmnet_ring::Producer, seed: u64, total: usize, chunk: usize) -> u32 {
    let (mut s, mut crc, mut buf, p) = (
        Stream::new(seed),
        crc32fast::Hasher::new(),
        vec![0u8; chunk],
        policy(),
    );
    let mut left = total;
    while left > 0 {
        let k = left.min(chunk);
        s.fill(&mut buf[..k]);
        crc.update(&buf[..k]);
        tx.write_all(&buf[..k], &p).unwrap();
        left -= k;
    }
    crc.finalize()
}

/// Receives until EOF; returns (bytes, CRC32).
fn recv(rx: &mut shmnet_ring::Consumer) -> (usize, u32) {
    let (mut crc, mut buf, mut n, p) = (
        crc32fast::Hasher::new(),
        vec![0u8; 1 << 16],
        0usize,
        policy(),
    );
    loop {
        let k = rx.read_blocking(&mut buf, &p).unwrap();
        if k == 0 {
            return (n, crc.finalize());
        }
        crc.update(&buf[..k]);
        n += k;
    }
}

#[test]
fn one_gib_with_checksum() {
    let seg = Segment::create(geo_default()).unwrap();
    let fd = dup(&seg.fd().unwrap());
    let child = fork_child(move || {
        let s = Segment::attach(fd).unwrap();
        let mut ep = s.endpoint().unwrap();
        let crc = send(&mut ep.tx, 7, GIB, 48 * 1024 + 13);
        ep.tx.close();
        // Report our checksum back through the other direction.
        let mut back = [0u8; 4];
        assert_eq!(ep.rx.read_blocking(&mut back, &policy()).unwrap(), 4);
        i32::from(u32::from_le_bytes(back) != crc)
    });
    let mut ep = connect_when_ready(&seg, Duration::from_secs(10));
    let (n, crc) = recv(&mut ep.rx);
    assert_eq!(n, GIB);
    ep.tx.write_all(&crc.to_le_bytes(), &policy()).unwrap();
    assert_eq!(wait_child(child, LIMIT), 0, "checksums differ");
}

#[test]
fn both_directions_at_once() {
    const EACH: usize = 256 << 20;
    let seg = Segment::create(geo_default()).unwrap();
    let fd = dup(&seg.fd().unwrap());
    let child = fork_child(move || {
        let s = Segment::attach(fd).unwrap();
        let ep = s.endpoint().unwrap();
        let (mut tx, mut rx) = (ep.tx, ep.rx);
        let w = std::thread::spawn(move || {
            let c = send(&mut tx, 11, EACH, 4096);
            tx.close();
            c
        });
        let (n, crc_in) = recv(&mut rx);
        let crc_out = w.join().unwrap();
        // Exit 0 only if what we got is what the parent sent (seed 22).
        let mut expect = crc32fast::Hasher::new();
        let (mut s, mut buf) = (Stream::new(22), vec![0u8; 1000]);
        let mut left = EACH;
        while left > 0 {
            let k = left.min(1000);
            s.fill(&mut buf[..k]);
            expect.update(&buf[..k]);
            left -= k;
        }
        let _ = crc_out;
        i32::from(n != EACH || crc_in != expect.finalize())
    });
    let ep = connect_when_ready(&seg, Duration::from_secs(10));
    let (mut tx, mut rx) = (ep.tx, ep.rx);
    let w = std::thread::spawn(move || {
        let c = send(&mut tx, 22, EACH, 1000);
        tx.close();
        c
    });
    let (n, crc_in) = recv(&mut rx);
    w.join().unwrap();
    // What the child sent with seed 11 in 4096-byte chunks.
    let mut expect = crc32fast::Hasher::new();
    let (mut s, mut buf) = (Stream::new(11), vec![0u8; 4096]);
    for _ in 0..EACH / 4096 {
        s.fill(&mut buf);
        expect.update(&buf);
    }
    assert_eq!(n, EACH);
    assert_eq!(crc_in, expect.finalize());
    assert_eq!(wait_child(child, LIMIT), 0);
}

#[test]
fn eof_and_reset_are_seen_by_the_peer() {
    // EOF: the child writes a little and closes its direction.
    let seg = Segment::create(geo_default()).unwrap();
    let fd = dup(&seg.fd().unwrap());
    let child = fork_child(move || {
        let s = Segment::attach(fd).unwrap();
        let mut ep = s.endpoint().unwrap();
        ep.tx.write_all(b"last words", &policy()).unwrap();
        ep.tx.close();
        0
    });
    let mut ep = connect_when_ready(&seg, Duration::from_secs(10));
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    loop {
        let k = ep.rx.read_blocking(&mut buf, &policy()).unwrap();
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got, b"last words");
    assert_eq!(wait_child(child, LIMIT), 0);

    // Reset: the child resets while we are blocked reading.
    let seg = Segment::create(geo_default()).unwrap();
    let fd = dup(&seg.fd().unwrap());
    let child = fork_child(move || {
        let s = Segment::attach(fd).unwrap();
        let ep = s.endpoint().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        ep.reset();
        0
    });
    let mut ep = connect_when_ready(&seg, Duration::from_secs(10));
    let r = ep.rx.read_blocking(&mut buf, &WaitPolicy::blocking());
    assert_eq!(r, Err(RingError::Reset));
    assert_eq!(ep.tx.write(b"x"), Err(RingError::Reset));
    assert_eq!(wait_child(child, LIMIT), 0);
}

#[test]
fn killed_peer_is_detected_not_waited_for() {
    let seg = Segment::create(geo_default()).unwrap();
    let fd = dup(&seg.fd().unwrap());
    let child = fork_child(move || {
        let s = Segment::attach(fd).unwrap();
        let mut ep = s.endpoint().unwrap();
        ep.tx.write_all(&[1u8; 1000], &policy()).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let mut ep = connect_when_ready(&seg, Duration::from_secs(10));
    let mut buf = vec![0u8; 4096];
    let p = WaitPolicy {
        liveness: Some(Arc::new(move || alive(child))),
        slice: Duration::from_millis(5),
        deadline: Some(Instant::now() + Duration::from_secs(60)),
        ..WaitPolicy::blocking()
    };
    assert_eq!(ep.rx.read_blocking(&mut buf, &p).unwrap(), 1000);
    // SAFETY: killing our own child.
    unsafe { libc::kill(child, libc::SIGKILL) };
    let start = Instant::now();
    assert_eq!(ep.rx.read_blocking(&mut buf, &p), Err(RingError::PeerGone));
    assert!(start.elapsed() < Duration::from_secs(30));
}
