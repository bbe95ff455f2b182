//! A hostile peer on a datagram target segment: whatever a sender or the
//! receiver writes into the shared pages, the other side gets errors or
//! drops — never a panic, an out-of-bounds access or a hang.
#![cfg(not(loom))]

mod common;
use common::*;
use proptest::prelude::*;
use shmnet_ring::dgram::layout::{
    Descriptor, DirEntry, SlotReceiver, SlotSender, TargetHeader, CLOSED_TO_KERNEL,
};
use shmnet_ring::dgram::{DgramGeometry, Image, Receiver, RecvError, SendError, Sent};
use std::mem::offset_of;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// Our own writable view of a segment, as a peer has it.
struct View {
    ptr: *mut u8,
    len: usize,
}

impl View {
    fn new(fd: &impl AsRawFd, len: usize) -> View {
        // SAFETY: a fresh shared mapping of a file at least `len` long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        View {
            ptr: ptr.cast(),
            len,
        }
    }
    fn put_u32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len && off.is_multiple_of(4));
        // SAFETY: in bounds and aligned; a volatile store stands in for a
        // peer process writing the page (not a Rust object of ours).
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) };
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

const PLAUSIBLE: [u32; 14] = [
    0,
    1,
    2,
    3,
    31,
    32,
    64,
    127,
    128,
    511,
    512,
    0x0001_0000,
    u32::MAX,
    u32::MAX - 1,
];

fn value(x: u64) -> u32 {
    if x >> 60 < 12 {
        PLAUSIBLE[(x >> 32) as usize % PLAUSIBLE.len()]
    } else {
        (x >> 32) as u32
    }
}

/// One round of every operation of both sides, with sanity checks.
fn exercise(rx: &mut Receiver, txs: &mut [shmnet_ring::dgram::Sender], buf: &mut [u8], n: usize) {
    for (i, tx) in txs.iter_mut().enumerate() {
        let len = [0usize, 1, 100, 1472, 5000, 65_507][(n + i) % 6];
        match tx.send(&vec![n as u8; len]) {
            Ok(_) | Err(SendError::Corrupt(_)) | Err(SendError::Closed) => {}
            Err(SendError::TooBig) => panic!("{len} bytes too big"),
        }
    }
    let cap = [buf.len(), 10, 0][n % 3];
    for peek in [true, false] {
        match rx.recv(&mut buf[..cap], peek) {
            Ok(r) => {
                assert!(r.copied <= cap && r.copied <= r.len);
                assert!(r.len <= 65_527);
                assert!(r.slot < 64);
            }
            Err(RecvError::Empty) | Err(RecvError::Corrupt { .. }) => {}
        }
    }
    if let Ok(n) = rx.next_len() {
        assert!(n <= 65_527);
    }
    let _ = rx.arm();
    rx.disarm();
}

/// A peer process writes random words all over the control area (header,
/// group table, lines, ready map, hints, slots, cells, directory) while
/// this process sends and receives through it.
#[test]
fn scribbling_peer_process_gets_errors_not_crashes() {
    let geo = DgramGeometry::stage1();
    let ctl_end = geo.offsets().data_start;
    let mut rx = Receiver::create(geo).unwrap();
    let fd = dup(&rx.fd().unwrap());
    let image = Image::attach(fd.as_fd()).unwrap();
    let mut txs: Vec<_> = (0..3)
        .map(|_| image.sender(rx.open_slot().unwrap()).unwrap())
        .collect();
    let scribbler = fork_child(move || {
        let v = View::new(&fd, ctl_end);
        let mut s = Stream::new(7);
        let mut w = [0u8; 8];
        loop {
            s.fill(&mut w);
            let x = u64::from_le_bytes(w);
            v.put_u32((x as usize % (ctl_end / 4)) * 4, value(x));
            std::thread::sleep(Duration::from_micros(20));
        }
    });
    let mut buf = vec![0u8; 70_000];
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < until {
        exercise(&mut rx, &mut txs, &mut buf, n);
        n += 1;
        if n % 500 == 0 {
            // Slots come and go too, as senders die and register.
            let s = txs.remove(0).slot();
            rx.close_slot(s);
            if let Some(g) = rx.open_slot() {
                if let Ok(tx) = image.sender(g) {
                    txs.push(tx);
                }
            }
        }
    }
    // SAFETY: killing our own child.
    unsafe { libc::kill(scribbler, libc::SIGKILL) };
    wait_child(scribbler, Duration::from_secs(10));
    assert!(n > 100, "only {n} rounds");
}

/// The words a hostile sender or receiver may write, by name.
#[derive(Debug, Clone, Copy)]
enum Word {
    CellLoc,
    CellLen,
    CellTicket,
    Owner,
    Span,
    First,
    Flags,
    Head,
    Tail,
    Inflight,
    Ready,
    Hint,
    Charge,
    Limit,
}

fn word() -> impl Strategy<Value = Word> {
    prop_oneof![
        Just(Word::CellLoc),
        Just(Word::CellLen),
        Just(Word::CellTicket),
        Just(Word::Owner),
        Just(Word::Span),
        Just(Word::First),
        Just(Word::Flags),
        Just(Word::Head),
        Just(Word::Tail),
        Just(Word::Inflight),
        Just(Word::Ready),
        Just(Word::Hint),
        Just(Word::Charge),
        Just(Word::Limit),
    ]
}

/// The offset of `w` for slot `s`, cell or partition `i`.
fn offset_of_word(geo: &DgramGeometry, w: Word, s: usize, i: usize) -> usize {
    let o = geo.offsets();
    let c = geo.ring_cells() as usize;
    let p = geo.group(0).unwrap().partitions as usize;
    let cell = o.cells + (s * c + i % c) * 16;
    let dir = o.dirs[0] + (i % p) * 16;
    let slot = o.slots + s * 128;
    match w {
        Word::CellLoc => cell + offset_of!(Descriptor, loc),
        Word::CellLen => cell + offset_of!(Descriptor, len),
        Word::CellTicket => cell + offset_of!(Descriptor, ticket),
        Word::Owner => dir + offset_of!(DirEntry, owner),
        Word::Span => dir + offset_of!(DirEntry, span),
        Word::First => dir + offset_of!(DirEntry, first),
        Word::Flags => dir + offset_of!(DirEntry, flags),
        Word::Head => slot + offset_of!(SlotSender, head),
        Word::Inflight => slot + offset_of!(SlotSender, inflight),
        Word::Tail => slot + 64 + offset_of!(SlotReceiver, tail),
        Word::Ready => o.ready + 4 * (i % 2),
        Word::Hint => o.hints[0] + 4 * (i % (geo.hint_words(0) * 2)),
        Word::Charge => o.charge + 4 * (i % 2),
        Word::Limit => o.receiver + 8,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Datagrams queued, then chosen words overwritten: every receive is
    /// sane or an error, the receiver reaches "empty" in a bounded number
    /// of calls, closing the slots reclaims everything still named by the
    /// senders' tags, and the senders get drops or errors.
    #[test]
    fn corrupted_words_give_errors(
        sizes in prop::collection::vec(0usize..66_000, 1..12),
        hits in prop::collection::vec((word(), 0usize..2, 0usize..600, any::<u64>()), 1..6),
    ) {
        let geo = DgramGeometry::stage1();
        let mut rx = Receiver::create(geo).unwrap();
        rx.set_limit(1 << 30);
        let v = View::new(&rx.fd().unwrap().as_raw_fd(), geo.offsets().data_start);
        let image = Image::attach(rx.fd().unwrap()).unwrap();
        let mut txs: Vec<_> = (0..2)
            .map(|_| image.sender(rx.open_slot().unwrap()).unwrap())
            .collect();
        for (k, &n) in sizes.iter().enumerate() {
            let _ = txs[k % 2].send(&vec![k as u8; n]);
        }
        for &(w, s, i, x) in &hits {
            v.put_u32(offset_of_word(&geo, w, s, i), value(x));
        }
        let mut buf = vec![0u8; 70_000];
        let mut calls = 0;
        loop {
            calls += 1;
            prop_assert!(calls < 1000, "receiver never empty");
            match rx.recv(&mut buf, calls % 3 == 0) {
                Ok(r) => {
                    // A hostile sender may forge a datagram (an empty one,
                    // or a length changed within its run): only that it
                    // stays inside the sender's own run is promised.
                    prop_assert!(r.copied <= r.len && r.len <= 65_527);
                    prop_assert!(r.slot < 2);
                }
                Err(RecvError::Corrupt { .. }) => {}
                Err(RecvError::Empty) => break,
            }
        }
        for (k, tx) in txs.iter_mut().enumerate() {
            match tx.send(&vec![1u8; 100 * k]) {
                Ok(Sent::Queued { .. }) | Ok(Sent::Dropped(_)) => {}
                Ok(Sent::Stopped) => unreachable!(),
                Err(e) => prop_assert!(matches!(e, SendError::Corrupt(_) | SendError::Closed)),
            }
        }
        // Close both slots; drain what is left; every partition of theirs
        // is free once reclaimed (others' words were only ever hints).
        for s in 0..2 {
            rx.close_slot(s);
        }
        for _ in 0..300 {
            if rx.recv(&mut buf, false) == Err(RecvError::Empty) && rx.slots_in_use() == 0 {
                break;
            }
        }
    }
}

/// A corrupt header, group table or size is refused at attach.
#[test]
fn attach_refuses_corrupt_headers() {
    let geo = DgramGeometry::stage1();
    for (off, val) in [
        (0, 0u32),     // magic
        (8, 99),       // version
        (12, 0),       // group count
        (12, 5),       // group count
        (16, 0),       // slot count
        (20, 100),     // ring cells
        (24, 4096),    // total bytes
        (64, 7),       // partition bytes
        (68, 0),       // partitions
        (72, 65),      // span factor
        (68, 1 << 20), // partitions
        (12, 2),       // a second group, all zeros
    ] {
        let rx = Receiver::create(geo).unwrap();
        let v = View::new(&rx.fd().unwrap().as_raw_fd(), 4096);
        v.put_u32(off, val);
        let r = Image::attach(rx.fd().unwrap());
        assert!(r.is_err(), "word at {off} = {val} accepted");
    }
}

proptest! {
    /// Link frames from a peer: any bytes decode to a frame, "need more"
    /// or an error; never a panic, never a length past the input.
    #[test]
    fn any_bytes_are_a_frame_or_an_error(
        kind in 0u8..8,
        len in prop_oneof![0u32..80, any::<u32>()],
        body in prop::collection::vec(any::<u8>(), 0..120),
        whole in any::<bool>(),
    ) {
        use shmnet_ring::dgram::frame::Frame;
        // Mostly plausible heads, so bodies get decoded too.
        let mut b = vec![kind, 0, 0, 0];
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&body);
        if !whole {
            b.truncate(body.len() % 9);
        }
        if let Ok(Some((f, n))) = Frame::decode(&b) {
            prop_assert!(n <= b.len());
            let mut again = Vec::new();
            f.encode(&mut again);
            prop_assert_eq!(again.len(), n);
        }
    }
}

/// `Sender::take_back` against a hostile receiver (review sigfork16): a
/// tail rewound behind the one the sender last read is not believed, so
/// the datagrams the sender saw taken are not taken back (sent again).
#[test]
fn a_rewound_tail_does_not_take_back_what_was_received() {
    let geo = DgramGeometry::stage1();
    let o = geo.offsets();
    let mut rx = Receiver::create(geo).unwrap();
    rx.set_limit(1 << 30);
    let v = View::new(&rx.fd().unwrap().as_raw_fd(), o.data_start);
    let image = Image::attach(rx.fd().unwrap().as_fd()).unwrap();
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let slot = tx.slot() as usize;
    let c = geo.ring_cells();
    // The ring full, ten received, one more sent: the sender reads the
    // tail (10) to find room.
    for i in 0..c {
        assert!(matches!(tx.send(&i.to_le_bytes()), Ok(Sent::Queued { .. })));
    }
    let mut buf = vec![0u8; 70_000];
    for i in 0..10u32 {
        let got = rx.recv(&mut buf, false).unwrap();
        assert_eq!(&buf[..got.copied], &i.to_le_bytes());
    }
    assert!(matches!(tx.send(&c.to_le_bytes()), Ok(Sent::Queued { .. })));
    // Hostile: the tail rewound as far as the ring allows, then the mark.
    let tail_off = o.slots + slot * 128 + 64 + offset_of!(SlotReceiver, tail);
    v.put_u32(tail_off, 1);
    v.put_u32(offset_of!(TargetHeader, closed), CLOSED_TO_KERNEL);
    let back = tx.take_back();
    let want: Vec<Vec<u8>> = (10..=c).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(back, want, "taken back: {} datagrams", back.len());
}
