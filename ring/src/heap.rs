//! A single channel in heap memory: for unit tests, property tests and loom
//! models, which exercise the exact protocol code without a memfd.

use crate::channel::{Channel, ChannelParts, Consumer, Producer};
use crate::data::DataArea;
use crate::layout::{
    ChannelControl, ConsumerLine, Geometry, ProducerLine, SegmentBegin, SegmentControl,
    SegmentSlot, WaitLine,
};
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::Parker;
use std::ptr::NonNull;
use std::sync::Arc;

#[cfg(loom)]
type Cell = loom::cell::UnsafeCell<u8>;
#[cfg(not(loom))]
type Cell = core::cell::UnsafeCell<u8>;

struct HeapChannel {
    ctl: ChannelControl,
    reset: AtomicU32,
    segs: Box<[SegmentControl]>,
    begins: Box<[SegmentBegin]>,
    slots: Box<[SegmentSlot]>,
    data: Box<[Cell]>,
}

// SAFETY: the control fields are atomics; the data cells are only accessed
// through DataArea copies ordered by the ring protocol (which loom checks).
unsafe impl Sync for HeapChannel {}
// SAFETY: as above; nothing is tied to a thread.
unsafe impl Send for HeapChannel {}

fn a() -> AtomicU32 {
    AtomicU32::new(0)
}

/// A fresh, initialised channel in heap memory: one direction's
/// [`Producer`] and [`Consumer`], for threads of one process (tests, models,
/// examples). The protocol code is the same as over a [`Segment`]'s shared
/// memory; the memory lives until both halves (and every handle taken from
/// them) are dropped.
///
/// ```
/// use shmnet_ring::{heap_channel, Geometry};
///
/// let (mut tx, mut rx) = heap_channel(Geometry::new(4, 1024)?);
/// std::thread::spawn(move || tx.write(b"from a thread")).join().unwrap()?;
/// let mut buf = [0u8; 32];
/// let n = rx.read(&mut buf)?;
/// assert_eq!(&buf[..n], b"from a thread");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`Segment`]: crate::Segment
pub fn heap_channel(geo: Geometry) -> (Producer, Consumer) {
    let n = geo.segment_count as usize;
    let hc = Arc::new(HeapChannel {
        ctl: ChannelControl {
            producer: ProducerLine {
                head: a(),
                closed: a(),
                busy: a(),
                lock: a(),
                rung_at: AtomicU64::new(0),
                reset_reported: a(),
            },
            consumer: ConsumerLine {
                tail: a(),
                closed: a(),
                lock: a(),
                taken: a(),
            },
            wait: WaitLine {
                writer_waiting: a(),
                reader_waiting: a(),
                ready: a(),
                reader_rings: a(),
                writer_rings: a(),
                reader_sleep: crate::sync::AtomicU64::new(0),
            },
        },
        reset: a(),
        segs: (0..n)
            .map(|_| SegmentControl {
                end: a(),
                length: a(),
                next: a(),
                last: a(),
            })
            .collect(),
        begins: (0..n).map(|_| SegmentBegin { begin: a() }).collect(),
        slots: (0..n).map(|_| SegmentSlot { slot: a() }).collect(),
        data: (0..geo.channel_bytes()).map(|_| Cell::new(0)).collect(),
    });
    let parker = Arc::new(Parker::default());
    let make = || {
        let keep: Arc<dyn Send + Sync> = hc.clone();
        #[cfg(not(loom))]
        let base = hc.data.as_ptr().cast::<u8>().cast_mut();
        #[cfg(loom)]
        let base = hc.data.as_ptr();
        // SAFETY: the cells live in `hc`, kept alive by `keep`; UnsafeCell
        // makes writing through the derived pointer sound.
        let data = unsafe { DataArea::new(base, geo.channel_bytes()) };
        // SAFETY: every pointer refers into `hc`, which `keep` holds.
        unsafe {
            Channel::new(ChannelParts {
                ctl: NonNull::from(&hc.ctl),
                segs: NonNull::new_unchecked(hc.segs.as_ptr().cast_mut()),
                begins: NonNull::new_unchecked(hc.begins.as_ptr().cast_mut()),
                slots: NonNull::new_unchecked(hc.slots.as_ptr().cast_mut()),
                reset: NonNull::from(&hc.reset),
                sibling: None,
                data,
                geo,
                parker: parker.clone(),
                keep,
            })
        }
    };
    let p = make();
    p.initialise();
    (Producer::new(p), Consumer::new(make()))
}
