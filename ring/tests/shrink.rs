//! Memory that follows use (issue 14, decision 27): the placement window
//! shrinks back when a stream stops being bulk, `Producer::trim` gives the
//! pages of free segments back to the kernel, and neither ever touches a
//! segment with unread data; the producer's private record of placement
//! survives another process writing on its side (a fork, an exec).
#![cfg(not(loom))]

mod common;
use common::dup;
use proptest::prelude::*;
use shmnet_ring::{heap_channel, Geometry, RingError, Role, Segment};
use std::os::fd::AsFd;

fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i * 131 % 251) as u8)
        .collect()
}

/// Bytes of the memfd the kernel holds pages for (st_blocks).
fn allocated(fd: &impl AsFd) -> u64 {
    use std::os::fd::AsRawFd;
    // SAFETY: fstat into a zeroed stat of our own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out-pointer.
    let r = unsafe { libc::fstat(fd.as_fd().as_raw_fd(), &mut st) };
    assert_eq!(r, 0);
    st.st_blocks as u64 * 512
}

/// A connected pair over a real memfd.
fn pair(geo: Geometry) -> (Segment, Segment) {
    let a = Segment::create(geo).unwrap();
    let b = Segment::attach(dup(&a.fd().unwrap())).unwrap();
    (a, b)
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Read(usize),
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..300).prop_map(Op::Write),
        4 => (1usize..300).prop_map(Op::Read),
        2 => (300usize..1500).prop_map(Op::Write),
        2 => (300usize..1500).prop_map(Op::Read),
        1 => Just(Op::Trim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Writes, reads and trims in any order: the stream comes out intact
    /// (a trim that zeroed a segment with unread bytes would show), the
    /// window stays in range, and after a trim with the reader caught up
    /// only the open segment is left resident.
    #[test]
    fn trims_never_touch_unread_bytes(
        ops in prop::collection::vec(op(), 1..400),
        count in 2u32..12,
    ) {
        let (mut p, mut c) = heap_channel(Geometry::new(count, 64).unwrap());
        let (mut sent, mut got) = (0usize, 0usize);
        for o in ops {
            match o {
                Op::Write(len) => match p.write(&pattern(sent, len)) {
                    Ok(k) => sent += k,
                    Err(RingError::WouldBlock) => {}
                    Err(e) => prop_assert!(false, "write: {e}"),
                },
                Op::Read(len) => {
                    let mut buf = vec![0u8; len];
                    match c.read(&mut buf) {
                        Ok(k) => {
                            prop_assert_eq!(&buf[..k], &pattern(got, k)[..]);
                            got += k;
                        }
                        Err(RingError::WouldBlock) => {}
                        Err(e) => prop_assert!(false, "read: {e}"),
                    }
                }
                Op::Trim => {
                    p.trim().unwrap();
                    prop_assert_eq!(p.window(), 2);
                    if sent == got && sent > 0 {
                        prop_assert_eq!(p.segments_resident(), 1);
                    }
                }
            }
            prop_assert!(p.window() >= 2 && p.window() <= count);
            prop_assert!(p.segments_resident() <= count);
            prop_assert!(sent == 0 || p.segments_resident() >= 1);
        }
        let mut buf = vec![0u8; 4096];
        while let Ok(k) = c.read(&mut buf) {
            prop_assert_eq!(&buf[..k], &pattern(got, k)[..]);
            got += k;
        }
        prop_assert_eq!(got, sent);
    }
}

/// A bulk stream grows the window to all 32 segments; small messages read
/// as they come shrink it back to two within a bounded number of
/// openings, and the pages outside it are given back as it shrinks.
#[test]
fn the_window_shrinks_when_the_stream_calms_down() {
    let geo = Geometry::for_ring_bytes(2 << 20).unwrap();
    let s = geo.segment_bytes as usize;
    let (a, b) = pair(geo);
    let (mut p, mut c) = (a.producer().unwrap(), b.endpoint().unwrap().rx);
    let mut buf = vec![0u8; 4 << 20];
    let (mut sent, mut got) = (0, 0);
    while sent < 4 << 20 {
        sent += p.write(&pattern(sent, 4 << 20)).unwrap();
        let k = c.read(&mut buf).unwrap();
        assert_eq!(&buf[..k], &pattern(got, k)[..]);
        got += k;
    }
    assert_eq!((p.window(), p.segments_resident()), (32, 32));
    let full = allocated(&a.fd().unwrap());
    assert!(full >= 2 << 20, "{full}");
    // Small messages: 16 writes per segment, each read at once.
    let mut openings = 0;
    let before = p.written_total() / s as u64;
    while p.window() > 2 {
        let k = p.write(&pattern(sent, s / 16)).unwrap();
        sent += k;
        let k = c.read(&mut buf).unwrap();
        assert_eq!(&buf[..k], &pattern(got, k)[..]);
        got += k;
        openings = p.written_total() / s as u64 - before;
        assert!(
            openings <= 4 * 8 + 1,
            "window {} after {openings}",
            p.window()
        );
    }
    // Halved four times, eight calm openings each.
    assert!(openings >= 4 * 8, "{openings}");
    for _ in 0..64 {
        sent += p.write(&pattern(sent, s / 16)).unwrap();
        got += c.read(&mut buf).unwrap();
    }
    assert_eq!(sent, got);
    assert!(p.segments_resident() <= 3, "{}", p.segments_resident());
    let now = allocated(&a.fd().unwrap());
    assert!(
        now + 28 * s as u64 <= full,
        "allocated {full} -> {now} bytes"
    );
}

/// After a burst, `trim` gives every free segment's pages back to the
/// kernel (the memfd's allocation drops to about one segment per
/// direction written), a trim while bytes are unread keeps those, and the
/// stream goes on intact after it.
#[test]
fn trim_gives_back_the_pages_of_a_finished_burst() {
    let geo = Geometry::for_ring_bytes(2 << 20).unwrap();
    let s = geo.segment_bytes as u64;
    let (a, b) = pair(geo);
    let (mut p, mut c) = (a.producer().unwrap(), b.endpoint().unwrap().rx);
    let fd = dup(&a.fd().unwrap());
    let mut buf = vec![0u8; 4 << 20];
    let (mut sent, mut got) = (0usize, 0usize);
    // 1.5 MiB unread, then a trim: the unread segments stay.
    while sent < 3 << 19 {
        sent += p.write(&pattern(sent, (3 << 19) - sent)).unwrap();
    }
    assert_eq!(p.trim().unwrap(), 0, "the 24 written hold unread bytes");
    let queued = allocated(&fd);
    assert!(queued >= 3 << 19, "{queued}");
    while got < sent {
        let k = c.read(&mut buf).unwrap();
        assert_eq!(&buf[..k], &pattern(got, k)[..]);
        got += k;
    }
    assert!(p.trim_pending());
    let given = p.trim().unwrap() as u64;
    assert_eq!(given, 23 * s, "24 segments written, the open one stays");
    assert!(!p.trim_pending());
    assert_eq!(p.trim().unwrap(), 0);
    let after = allocated(&fd);
    assert!(after <= queued - 23 * s, "{queued} -> {after}");
    assert!(after <= 2 * s, "{after}");
    // The stream goes on: the given-back pages come back as zeros and are
    // written before they are read.
    for len in [10, 100_000, 3 << 20, 7] {
        let data = pattern(sent, len);
        let mut off = 0;
        while off < len {
            match p.write(&data[off..]) {
                Ok(k) => off += k,
                Err(RingError::WouldBlock) => {}
                Err(e) => panic!("{e}"),
            }
            while let Ok(k) = c.read(&mut buf) {
                assert_eq!(&buf[..k], &pattern(got, k)[..]);
                got += k;
            }
        }
        sent += len;
    }
    assert_eq!(got, sent);
}

/// Another producer on the same side (a process that shares it since a
/// fork, or the program after exec) writes in between: each one's private
/// record is rebuilt from `slots` when it finds `head` moved, so neither
/// places a segment over unread bytes, and trims by either are safe.
#[test]
fn another_writer_on_our_side_is_followed() {
    let geo = Geometry::new(8, 4096).unwrap();
    let (a, b) = pair(geo);
    let mut p1 = a.producer().unwrap();
    let other = Segment::reattach(dup(&a.fd().unwrap()), Role::Connector).unwrap();
    let mut p2 = other.producer().unwrap();
    let mut c = b.endpoint().unwrap().rx;
    let mut buf = vec![0u8; 64 << 10];
    let (mut sent, mut got) = (0usize, 0usize);
    for round in 0..300usize {
        let p = if round % 3 == 0 { &mut p2 } else { &mut p1 };
        let len = [100, 4096, 9000, 20_000][round % 4];
        if let Ok(k) = p.write(&pattern(sent, len)) {
            sent += k;
        }
        if round % 7 == 0 {
            p.trim().unwrap();
        }
        if round % 2 == 0 {
            if let Ok(k) = c.read(&mut buf[..(round * 997) % 30_000 + 1]) {
                assert_eq!(&buf[..k], &pattern(got, k)[..]);
                got += k;
            }
        }
    }
    while let Ok(k) = c.read(&mut buf) {
        assert_eq!(&buf[..k], &pattern(got, k)[..]);
        got += k;
    }
    assert_eq!(got, sent);
}

/// A peer that moves `tail` backwards, or past `head`: the producer's
/// opening or trim calls it corrupt (the connection resets); no panic.
#[test]
fn a_tail_moved_back_is_corruption() {
    use shmnet_ring::layout::{ConsumerLine, ProducerLine};
    let geo = Geometry::new(8, 4096).unwrap();
    for bad in [0u32, 100, u32::MAX] {
        let (a, b) = pair(geo);
        let mut p = a.producer().unwrap();
        let mut c = b.endpoint().unwrap().rx;
        let mut buf = vec![0u8; 64 << 10];
        p.write(&[1; 5 * 4096]).unwrap();
        c.read(&mut buf).unwrap();
        p.write(&[1; 4096]).unwrap();
        // tail is 4 now, head 5: put tail where it cannot be.
        let tail_at = geo.channel_offset(0)
            + core::mem::size_of::<ProducerLine>()
            + core::mem::offset_of!(ConsumerLine, tail);
        put_u32(&a, tail_at, bad);
        let w = p.write(&[1; 3 * 4096]);
        let t = p.trim();
        assert!(
            matches!(w, Err(RingError::Corrupt(_)) | Err(RingError::Reset))
                || matches!(t, Err(RingError::Corrupt(_)) | Err(RingError::Reset)),
            "tail {bad}: {w:?} {t:?}"
        );
    }
}

/// Writes `value` at `offset` of the segment's memfd (through pwrite, as
/// a peer process would).
fn put_u32(seg: &Segment, offset: usize, value: u32) {
    use std::os::fd::AsRawFd;
    let fd = seg.fd().unwrap();
    let b = value.to_ne_bytes();
    // SAFETY: pwrite of 4 bytes from a local buffer to our memfd.
    let r = unsafe { libc::pwrite(fd.as_raw_fd(), b.as_ptr().cast(), 4, offset as libc::off_t) };
    assert_eq!(r, 4);
}
