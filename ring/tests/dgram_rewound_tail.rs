//! A hostile receiver and `Sender::take_back` (review sigfork16): a tail
//! rewound behind the one the sender last read is not believed, so the
//! datagrams the sender saw taken are not taken back (sent again).
#![cfg(not(loom))]
use shmnet_ring::dgram::layout::{SlotReceiver, TargetHeader, CLOSED_TO_KERNEL};
use shmnet_ring::dgram::{DgramGeometry, Image, Receiver, Sent};
use std::mem::offset_of;
use std::os::fd::{AsFd, AsRawFd};

/// The segment's first `len` bytes, writable, as the receiver maps them.
struct View {
    ptr: *mut u8,
    len: usize,
}

impl View {
    fn new(fd: &impl AsRawFd, len: usize) -> View {
        // SAFETY: a fresh shared mapping of a memfd at least `len` long;
        // checked for MAP_FAILED, used only through `put_u32`.
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
        // SAFETY: in the mapping (checked above), aligned; a volatile
        // store, as another process's write would be.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) };
    }
}

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
