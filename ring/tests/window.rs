//! The window of segments in use (issue 14): it starts small, grows only
//! for writers that find it full, keeps the stream intact while it grows,
//! and a small request/response exchange never touches more than it.
#![cfg(not(loom))]

mod common;
use common::*;
use proptest::prelude::*;
use shmnet_ring::{
    heap_channel, heap_channel_with_window, Geometry, RingError, Segment, WaitPolicy,
};
use std::io::IoSlice;

fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i * 131 % 251) as u8)
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..700).prop_map(Op::Write),
        (1usize..700).prop_map(Op::Read),
        // Writes that fill the window, so that it wants to grow.
        (700usize..2500).prop_map(Op::Write),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random writes and reads through a window that grows from 2 segments
    /// to N: every byte comes out once, in order (checked byte for byte
    /// and by checksum), and the window only ever doubles, up to N.
    #[test]
    fn growing_window_keeps_the_stream_in_order(
        ops in prop::collection::vec(op(), 1..400),
        pow in 2u32..5,
    ) {
        let count = 1u32 << pow; // 4, 8 or 16 segments of 64 bytes
        let (mut p, mut c) = heap_channel_with_window(Geometry::new(count, 64).unwrap(), 2);
        let (mut sent, mut got) = (0usize, 0usize);
        let (mut crc_in, mut crc_out) = (crc32fast::Hasher::new(), crc32fast::Hasher::new());
        let mut window = p.window();
        prop_assert_eq!(window, 2);
        for o in ops {
            match o {
                Op::Write(len) => {
                    let data = pattern(sent, len);
                    match p.write(&data) {
                        Ok(k) => {
                            prop_assert!(k <= len);
                            crc_in.update(&data[..k]);
                            sent += k;
                        }
                        Err(RingError::WouldBlock) => {}
                        Err(e) => prop_assert!(false, "write: {e}"),
                    }
                }
                Op::Read(len) => {
                    let mut buf = vec![0u8; len];
                    match c.read(&mut buf) {
                        Ok(k) => {
                            prop_assert_eq!(&buf[..k], &pattern(got, k)[..]);
                            crc_out.update(&buf[..k]);
                            got += k;
                        }
                        Err(RingError::WouldBlock) => {}
                        Err(e) => prop_assert!(false, "read: {e}"),
                    }
                }
            }
            let now = p.window();
            prop_assert!(now == window || now == 2 * window, "window {window} -> {now}");
            prop_assert!(now <= count);
            prop_assert_eq!(c.window(), now);
            window = now;
            prop_assert_eq!(c.available().unwrap(), sent - got);
            prop_assert!(sent - got <= now as usize * 64);
        }
        let mut buf = vec![0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(k) => {
                    prop_assert_eq!(&buf[..k], &pattern(got, k)[..]);
                    crc_out.update(&buf[..k]);
                    got += k;
                }
                Err(RingError::WouldBlock) => break,
                Err(e) => prop_assert!(false, "read: {e}"),
            }
        }
        prop_assert_eq!(got, sent);
        prop_assert_eq!(crc_in.finalize(), crc_out.finalize());
        prop_assert_eq!(p.written_total(), sent as u64);
        prop_assert_eq!(c.consumed_total(), got as u64);
    }
}

/// A bulk stream (writes larger than the window, the reader draining what
/// is there) grows the default window, 2 of 32 segments of 64 KiB, to all
/// 32; deterministically, in one thread.
#[test]
fn a_bulk_stream_grows_the_window_to_n() {
    let geo = Geometry::for_ring_bytes(2 << 20).unwrap();
    let (mut p, mut c) = heap_channel(geo);
    assert_eq!((geo.segment_count, p.window()), (32, 2));
    let chunk = pattern(0, 4 << 20);
    let mut buf = vec![0u8; 4 << 20];
    let (mut sent, mut got) = (0usize, 0usize);
    let mut rounds = 0;
    while p.window() < 32 {
        rounds += 1;
        assert!(rounds < 1000, "the window stayed at {}", p.window());
        let k = p.write(&chunk[sent % 251..]).unwrap();
        sent += k;
        let r = c.read(&mut buf).unwrap();
        assert_eq!(&buf[..r], &pattern(got, r)[..]);
        got += r;
    }
    assert_eq!(sent, got);
    // Grown: an emptied ring now takes 31 segments and what is left of
    // the open one.
    assert!(p.free_bytes().unwrap() >= 31 << 16);
    eprintln!(
        "window 2 -> 32 segments after {rounds} writes, {} MiB",
        sent >> 20
    );
}

/// The same through two threads with blocking calls: the stream arrives
/// intact while the window grows under the reader.
#[test]
fn a_threaded_bulk_stream_arrives_intact_while_the_window_grows() {
    let geo = Geometry::for_ring_bytes(2 << 20).unwrap();
    let (mut p, mut c) = heap_channel(geo);
    let total = 64 << 20;
    let writer = std::thread::spawn(move || {
        let data = pattern(0, total);
        for part in data.chunks(1 << 20) {
            p.write_all(part, &WaitPolicy::default()).unwrap();
        }
        let w = p.window();
        p.close();
        w
    });
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 100_000];
    let mut got = 0usize;
    loop {
        let k = c.read_blocking(&mut buf, &WaitPolicy::default()).unwrap();
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        got += k;
    }
    let window = writer.join().unwrap();
    assert_eq!(got, total);
    let mut want = crc32fast::Hasher::new();
    want.update(&pattern(0, total));
    assert_eq!(hasher.finalize(), want.finalize());
    eprintln!("window at the end: {window} segments");
}

/// A request/response exchange of small messages (up to 4 KiB, a few in
/// flight at once) over the default geometry never grows the window past
/// its start (2 segments of 64 KiB): the memfd holds only those pages of
/// each direction, not the 2 MiB it maps.
#[test]
fn request_response_never_grows_and_touches_only_the_window() {
    let geo = Geometry::for_ring_bytes(2 << 20).unwrap();
    let a = Segment::create(geo).unwrap();
    let b = Segment::attach(dup(&a.fd().unwrap())).unwrap();
    let (mut client, mut server) = (a.endpoint().unwrap(), b.endpoint().unwrap());
    let policy = WaitPolicy::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut seed = 12345u32;
    let mut rand = move |m: u32| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (seed >> 8) % m
    };
    for _ in 0..20_000 {
        // Up to 4 requests pipelined, then their responses.
        let depth = 1 + rand(4) as usize;
        let mut want = 0;
        for _ in 0..depth {
            let req = 16 + rand(4080) as usize;
            client.tx.write_all(&buf[..req], &policy).unwrap();
            want += req;
        }
        let mut have = 0;
        while have < want {
            have += server.rx.read_blocking(&mut buf, &policy).unwrap();
        }
        let resp = 16 + rand(4080) as usize;
        server
            .tx
            .write_vectored_min(&[IoSlice::new(&buf[..resp])], resp)
            .unwrap();
        let mut have = 0;
        while have < resp {
            have += client.rx.read_blocking(&mut buf, &policy).unwrap();
        }
    }
    assert_eq!((client.tx.window(), server.tx.window()), (2, 2));
    assert!(client.tx.written_total() > 8 * geo.channel_bytes() as u64);
    // The memfd's pages: the header and control segments, and two 64 KiB
    // segments per direction; never the rest of the 2 x 2 MiB.
    let st = rustix::fs::fstat(a.fd().unwrap()).unwrap();
    let resident = st.st_blocks as usize * 512;
    let window = 2 * (2 * geo.segment_bytes as usize);
    assert!(
        resident <= geo.data_offset(0) + window,
        "{resident} bytes resident, window {window}"
    );
    assert!(resident >= window, "{resident} bytes resident");
}

/// A write that must go in whole but needs more than an emptied window
/// holds is taken as needing that much: it goes in (partly) instead of
/// waiting for ever for a window that cannot grow while nothing is written.
#[test]
fn a_whole_write_larger_than_the_window_does_not_wait_for_ever() {
    let (mut p, mut c) = heap_channel_with_window(Geometry::new(8, 64).unwrap(), 2);
    let mut buf = [0u8; 512];
    assert_eq!(p.write(&pattern(0, 100)).unwrap(), 100);
    assert_eq!(c.read(&mut buf).unwrap(), 100);
    // 28 bytes left in the open segment, one segment free: 92 < 300, but
    // (n - 1) * S = 64 <= 92.
    let big = pattern(100, 300);
    assert_eq!(
        p.write_vectored_min(&[IoSlice::new(&big)], 300).unwrap(),
        92
    );
    assert_eq!(c.read(&mut buf).unwrap(), 92);
    // A need within the limit still goes in whole or not at all.
    assert_eq!(p.write(&pattern(192, 100)).unwrap(), 64);
    assert_eq!(
        p.write_vectored_min(&[IoSlice::new(&[0; 40])], 40),
        Err(RingError::WouldBlock)
    );
}
