//! A hostile peer: whatever it writes into the shared pages, the other side
//! gets errors — never a panic, an out-of-bounds access or a hang.
#![cfg(not(loom))]

mod common;
use common::*;
use proptest::prelude::*;
use shmnet_ring::layout::{
    ChannelControl, ConsumerLine, Geometry, ProducerLine, SegmentControl, SegmentHeader,
    LAYOUT_VERSION,
};
use std::mem::offset_of;

const RESET: usize = offset_of!(SegmentHeader, reset);
const PRODUCER_CLOSED: usize =
    offset_of!(ChannelControl, producer) + offset_of!(ProducerLine, closed);
const CONSUMER_CLOSED: usize =
    offset_of!(ChannelControl, consumer) + offset_of!(ConsumerLine, closed);
use shmnet_ring::{AttachError, Endpoint, RingError, Segment, WaitPolicy};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Our own writable view of a segment, as the peer has it.
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
        assert!(off + 4 <= self.len);
        // SAFETY: in bounds and 4-aligned; a volatile store stands in for a
        // peer process writing the page (it is not a Rust object of ours).
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) };
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Both ends of a fresh connection in this process.
fn pair(geo: Geometry) -> (Segment, Segment, Endpoint, Endpoint) {
    let a = Segment::create(geo).unwrap();
    let b = Segment::attach(dup(&a.fd().unwrap())).unwrap();
    let (ea, eb) = (a.endpoint().unwrap(), b.endpoint().unwrap());
    (a, b, ea, eb)
}

/// One round of every operation, with sanity checks on what comes back.
/// Returns whether any operation reported corruption.
fn exercise(ep: &mut Endpoint, buf: &mut [u8]) -> bool {
    let quick = WaitPolicy {
        spin: Duration::ZERO,
        deadline: Some(Instant::now() + Duration::from_millis(1)),
        slice: Duration::from_micros(200),
        liveness: None,
        interruptible: false,
    };
    let len = buf.len();
    let mut corrupt = false;
    let mut note = |r: &Result<usize, RingError>, max: usize| match r {
        Ok(k) => assert!(*k <= max),
        Err(RingError::Corrupt(_)) => corrupt = true,
        Err(_) => {}
    };
    note(&ep.tx.write(&buf[..len / 2]), len / 2);
    note(&ep.rx.read(buf), len);
    note(&ep.rx.peek(&mut buf[..len / 3]), len / 3);
    note(&ep.rx.available(), 2 * ep.tx.capacity());
    note(&ep.tx.free_bytes(), ep.tx.capacity());
    let _ = ep.rx.readable_now();
    note(&ep.rx.read_blocking(buf, &quick), len);
    note(&ep.tx.write_all(&buf[..7], &quick).map(|()| 0), 0);
    corrupt
}

#[test]
fn scribbling_peer_process_gets_errors_not_crashes() {
    let geo = Geometry::new(4, 256).unwrap();
    let (a, _b, mut ea, mut eb) = pair(geo);
    let ctl_end = geo.data_offset(0);
    let fd = dup(&a.fd().unwrap());
    let scribbler = fork_child(move || {
        let v = View::new(&fd, ctl_end);
        let mut s = Stream::new(99);
        let mut w = [0u8; 8];
        loop {
            s.fill(&mut w);
            let x = u64::from_le_bytes(w);
            // Skip the header (magic/version/geometry are read only at attach,
            // and the reset word would just stop everything).
            let off = 64 + (x as usize % ((ctl_end - 64) / 4)) * 4;
            let plausible = [
                0,
                1,
                2,
                3,
                4,
                5,
                63,
                64,
                255,
                256,
                257,
                u32::MAX,
                u32::MAX - 1,
            ];
            let val = if x >> 60 < 14 {
                plausible[(x >> 32) as usize % plausible.len()]
            } else {
                (x >> 32) as u32
            };
            v.put_u32(off, val);
            // Slow enough that many rounds run on a merely odd ring rather
            // than one wrecked beyond use.
            std::thread::sleep(Duration::from_micros(20));
        }
    });
    let me = View::new(&a.fd().unwrap(), ctl_end);
    let mut buf = vec![0u8; 700];
    let mut corrupt = 0u32;
    let start = Instant::now();
    for i in 0..20_000u32 {
        let ep = if i % 2 == 0 { &mut ea } else { &mut eb };
        corrupt += u32::from(exercise(ep, &mut buf));
        // Keep the rings in play: clear the reset word and the closed flags.
        me.put_u32(RESET, 0);
        for c in 0..2 {
            me.put_u32(geo.channel_offset(c) + PRODUCER_CLOSED, 0);
            me.put_u32(geo.channel_offset(c) + CONSUMER_CLOSED, 0);
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "operations stalled"
        );
    }
    // SAFETY: killing our own child.
    unsafe { libc::kill(scribbler, libc::SIGKILL) };
    wait_child(scribbler, Duration::from_secs(10));
    assert!(
        corrupt > 0,
        "the scribbler never produced a detected violation"
    );
    eprintln!("{corrupt} of 20000 rounds detected corruption");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Arbitrary contents of both control segments (and the reset word):
    /// every operation on both sides returns, without panicking.
    #[test]
    fn arbitrary_control_segment_contents(words in prop::collection::vec(any::<u32>(), 160), fill in any::<bool>()) {
        let geo = Geometry::new(4, 64).unwrap();
        let (a, _b, mut ea, mut eb) = pair(geo);
        let mut buf = vec![0u8; 300];
        if fill {
            let _ = ea.tx.write(&buf[..200]);
            let _ = eb.tx.write(&buf[..100]);
        }
        let ctl_end = geo.data_offset(0);
        let v = View::new(&a.fd().unwrap(), ctl_end);
        let region = (geo.segment_begin_offset(2) - 64) / 4;
        for (i, w) in words.iter().take(region).enumerate() {
            v.put_u32(64 + 4 * i, *w);
        }
        v.put_u32(RESET, words[0] & 1);
        for _ in 0..3 {
            let _ = exercise(&mut ea, &mut buf);
            let _ = exercise(&mut eb, &mut buf);
        }
    }
}

fn memfd(size: u64, seal: bool) -> OwnedFd {
    // SAFETY: plain memfd_create with a static name.
    let fd =
        unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: we own this fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain calls on our own fd.
    unsafe {
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), size as i64), 0);
        if seal {
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
        }
    }
    fd
}

fn invalid(r: Result<Segment, AttachError>) -> String {
    match r {
        Err(AttachError::Invalid(w)) => w.to_string(),
        Err(e) => e.to_string(),
        Ok(_) => panic!("attach accepted a bad segment"),
    }
}

#[test]
fn attach_rejects_bad_segments() {
    let geo = Geometry::new(4, 4096).unwrap();
    // Not sealed: the peer could shrink it under us (SIGBUS).
    assert!(invalid(Segment::attach(memfd(geo.total_bytes() as u64, false))).contains("sealed"));
    // All zeroes: no version.
    assert!(invalid(Segment::attach(memfd(geo.total_bytes() as u64, true))).contains("version"));
    // Too small for a header.
    assert!(invalid(Segment::attach(memfd(16, true))).contains("smaller"));

    // A real segment whose header we then spoil, field by field.
    let spoil = |off: usize, val: u32| {
        let seg = Segment::create(geo).unwrap();
        let v = View::new(&seg.fd().unwrap(), 64);
        v.put_u32(off, val);
        invalid(Segment::attach(dup(&seg.fd().unwrap())))
    };
    assert!(spoil(0, 0).contains("magic"));
    assert!(spoil(offset_of!(SegmentHeader, version), LAYOUT_VERSION + 1).contains("version"));
    assert!(spoil(offset_of!(SegmentHeader, segment_count), 1).contains("count"));
    assert!(spoil(offset_of!(SegmentHeader, segment_count), 8).contains("size"));
    assert!(spoil(offset_of!(SegmentHeader, segment_bytes), 100).contains("segment size"));
    assert!(spoil(offset_of!(SegmentHeader, total_bytes), 12345).contains("size"));
    // A channel whose segment links are broken.
    let seg = Segment::create(geo).unwrap();
    let v = View::new(&seg.fd().unwrap(), geo.data_offset(0));
    v.put_u32(
        geo.segment_control_offset(0) + offset_of!(SegmentControl, next),
        3,
    );
    assert!(invalid(Segment::attach(dup(&seg.fd().unwrap()))).contains("circular"));
}

/// The lock that serialises one side's processes after fork lives where the
/// peer can write: a live pid planted there (here 1, init) must reset the
/// connection after the lock's patience, not hold the writer forever.
#[test]
fn planted_side_lock_resets_instead_of_hanging() {
    const LOCK: usize = offset_of!(ChannelControl, producer) + offset_of!(ProducerLine, lock);
    let geo = Geometry::for_ring_bytes(64 << 10).unwrap();
    let (a, _b, mut ea, _eb) = pair(geo);
    let v = View::new(&a.fd().unwrap(), geo.data_offset(0));
    for ch in 0..2 {
        v.put_u32(geo.channel_offset(ch) + LOCK, 1);
    }
    let start = Instant::now();
    let guard = ea.tx.lock_side();
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(30), "held {waited:?}");
    assert_eq!(ea.tx.write(b"x"), Err(RingError::Reset));
    drop(guard);
}

/// A side that maps its segment again (a program exec'd with the
/// connection) continues both streams where the previous mapping left
/// them, bytes already in the ring included; and gets the same checks a
/// fresh attach does, since the peer may have rewritten anything.
#[test]
fn reattach_continues_and_checks_again() {
    use shmnet_ring::Role;
    let geo = Geometry::new(4, 4096).unwrap();
    let (mut a, mut b, mut ea, mut eb) = pair(geo);
    ea.tx.write(b"before ").unwrap();
    eb.tx.write(b"to the connector").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(ea.rx.read(&mut buf[..3]).unwrap(), 3);
    // The acceptor and the connector each map the segment again (their
    // memfds kept: a connector's until handed over, an acceptor's from attach).
    let fa = a.take_fd().unwrap();
    let fb = b.take_fd().unwrap();
    drop((a, b, ea, eb));
    let a2 = Segment::reattach(dup(&fa), Role::Connector).unwrap();
    let b2 = Segment::reattach(dup(&fb), Role::Acceptor).unwrap();
    let (mut ea, mut eb) = (a2.endpoint().unwrap(), b2.endpoint().unwrap());
    ea.tx.write(b"after").unwrap();
    let n = eb.rx.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"before after");
    let n = ea.rx.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"the connector");

    // The acceptor's direction is required of an acceptor, and of either
    // side its own; broken links are refused as on attach.
    let fresh = Segment::create(geo).unwrap();
    assert!(Segment::reattach(dup(&fresh.fd().unwrap()), Role::Connector).is_ok());
    assert!(
        invalid(Segment::reattach(dup(&fresh.fd().unwrap()), Role::Acceptor))
            .contains("initialised")
    );
    let v = View::new(&fa, geo.data_offset(0));
    v.put_u32(
        geo.segment_control_offset(1) + offset_of!(SegmentControl, next),
        3,
    );
    assert!(invalid(Segment::reattach(dup(&fa), Role::Connector)).contains("circular"));
    assert!(invalid(Segment::reattach(
        memfd(geo.total_bytes() as u64, false),
        Role::Connector
    ))
    .contains("sealed"));
}

/// A `slots` word the peer spoiled (the data segment of the segment being
/// read, or of the one being written: N or more): the calls that need it
/// return an error (and the connection is reset), never a panic or an
/// access out of bounds; the lenient looks do not panic.
#[test]
fn a_spoiled_slot_resets() {
    let geo = Geometry::new(8, 64 << 10).unwrap();
    for bad in [8u32, 9, 1 << 31, u32::MAX] {
        let (a, _b, mut ea, mut eb) = pair(geo);
        ea.tx.write(&[1; 1000]).unwrap();
        let v = View::new(&a.fd().unwrap(), geo.data_offset(0));
        // Sequence number 0 (head and tail), channel 0.
        v.put_u32(geo.segment_slot_offset(0), bad);
        let _ = eb.rx.probe().maybe_readable();
        let _ = (
            ea.tx.written_total(),
            eb.rx.consumed_total(),
            ea.tx.fits(10),
        );
        let mut buf = vec![0u8; 4096];
        assert!(matches!(eb.rx.read(&mut buf), Err(RingError::Corrupt(_))));
        assert_eq!(eb.rx.read(&mut buf), Err(RingError::Reset));
        assert_eq!(ea.tx.write(&buf), Err(RingError::Reset));
        assert!(eb.rx.readable_now());
        // Each call on its own, on a fresh pair.
        let (a, _b, mut ea, _eb) = pair(geo);
        let v = View::new(&a.fd().unwrap(), geo.data_offset(0));
        v.put_u32(geo.segment_slot_offset(0), bad);
        assert!(matches!(ea.tx.write(&buf), Err(RingError::Corrupt(_))));
        let (a, _b, mut ea, mut eb) = pair(geo);
        let v = View::new(&a.fd().unwrap(), geo.data_offset(0));
        v.put_u32(geo.segment_slot_offset(0), bad);
        assert!(matches!(eb.rx.available(), Err(RingError::Corrupt(_))));
        let _ = (exercise(&mut ea, &mut buf), exercise(&mut eb, &mut buf));
        // The producer keeps its own record of where the segments in use
        // are, and never reads their words again once it wrote them: a
        // spoiled word there does not steer its placement (it writes on),
        // and the consumer that follows it finds it.
        let (a, _b, mut ea, mut eb) = pair(geo);
        let s = geo.segment_bytes as usize;
        ea.tx.write(&vec![2; 3 * s]).unwrap();
        let v = View::new(&a.fd().unwrap(), geo.data_offset(0));
        v.put_u32(geo.segment_slot_offset(0) + 4, bad);
        assert_eq!(ea.tx.write(&buf), Ok(buf.len()));
        let mut all = vec![0u8; 8 * s];
        assert!(matches!(eb.rx.read(&mut all), Err(RingError::Corrupt(_))));
    }
}

/// `slots` words changing under both sides while they stream (any value,
/// in range or not, colliding or not): errors, never a panic, an
/// out-of-bounds access or a hang.
#[test]
fn slots_changing_under_both_sides_get_errors_not_crashes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let geo = Geometry::new(16, 4096).unwrap();
    let mut corrupt = 0;
    for round in 0..20u32 {
        let (a, _b, mut ea, mut eb) = pair(geo);
        let stop = Arc::new(AtomicBool::new(false));
        let v = View::new(&a.fd().unwrap(), geo.data_offset(0));
        let (base, stop2) = (v.ptr as usize + geo.segment_slot_offset(0), stop.clone());
        let flipper = std::thread::spawn(move || {
            let values = [0u32, 1, 15, 16, 3, 1 << 31, 7, u32::MAX, 2];
            let mut i = round as usize;
            while !stop2.load(Ordering::Relaxed) {
                let at = base + 4 * (i % 16);
                // SAFETY: inside `v`'s mapping (the slots array of channel
                // 0), which outlives this thread (joined below); a volatile
                // store stands in for the peer.
                unsafe { std::ptr::write_volatile(at as *mut u32, values[i % values.len()]) };
                i += 1;
                std::thread::yield_now();
            }
        });
        let mut buf = vec![0u8; 20_000];
        for _ in 0..2000 {
            if exercise(&mut ea, &mut buf) || exercise(&mut eb, &mut buf) {
                corrupt += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap();
    }
    assert!(corrupt > 0, "no violation was detected");
}

/// `attach_as` writes the pid it is given (not its own getpid) and keeps
/// the memfd's inode from its checks, the same fstat gives.
#[test]
fn attach_as_records_the_given_pid_and_the_inode() {
    let geo = Geometry::for_ring_bytes(1 << 16).unwrap();
    let a = Segment::create(geo).unwrap();
    assert_eq!(a.inode(), None);
    let b = Segment::attach_as(dup(&a.fd().unwrap()), 4242).unwrap();
    assert_eq!(a.acceptor_pid(), 4242);
    let st = rustix::fs::fstat(a.fd().unwrap()).unwrap();
    #[allow(clippy::unnecessary_cast)]
    let ino = st.st_ino as u64;
    assert_eq!(b.inode(), Some(ino));
    assert_eq!(b.share().inode(), Some(ino));
}
