//! A target segment in heap memory: for unit tests, property tests and
//! loom models, which run the exact protocol code without a memfd.

use super::layout::*;
use super::recv::Receiver;
use super::{Image, Parts, Shared};
use crate::data::DataArea;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::ptr::NonNull;
use std::sync::Arc;

#[cfg(loom)]
type Cell = loom::cell::UnsafeCell<u8>;
#[cfg(not(loom))]
type Cell = core::cell::UnsafeCell<u8>;

struct HeapTarget {
    header: TargetHeader,
    groups: Box<[GroupDesc]>,
    receiver: ReceiverLine,
    charge: ChargeLine,
    ready: Box<[AtomicU64]>,
    hints: Box<[AtomicU64]>,
    slots: Box<[Slot]>,
    cells: Box<[Descriptor]>,
    dirs: Box<[DirEntry]>,
    data: Box<[Cell]>,
}

// SAFETY: every field is atomics, or data cells accessed only through
// DataArea copies ordered by the protocol (which loom checks).
unsafe impl Sync for HeapTarget {}
// SAFETY: as above; nothing is tied to a thread.
unsafe impl Send for HeapTarget {}

fn z() -> AtomicU32 {
    AtomicU32::new(0)
}

fn z64() -> AtomicU64 {
    AtomicU64::new(0)
}

fn many<T>(n: usize, f: impl Fn() -> T) -> Box<[T]> {
    (0..n).map(|_| f()).collect()
}

/// A fresh target segment in heap memory: its [`Receiver`] and an
/// [`Image`] to make senders from (threads of one process: tests, models,
/// benches). The protocol code is the same as over a memfd.
///
/// ```
/// use shmnet_ring::dgram::{heap_target, DgramGeometry, Sent};
///
/// let (mut rx, image) = heap_target(DgramGeometry::stage1());
/// let grant = rx.open_slot().unwrap();
/// let mut tx = image.sender(grant)?;
/// assert!(matches!(tx.send(b"hello")?, Sent::Queued { .. }));
/// let mut buf = [0u8; 64];
/// let got = rx.recv(&mut buf, false).unwrap();
/// assert_eq!(&buf[..got.copied], b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn heap_target(geo: DgramGeometry) -> (Receiver, Image) {
    let groups = geo.groups();
    let mut hint_at = [0; MAX_GROUPS];
    let mut dir_at = [0; MAX_GROUPS];
    let mut data_at = [0; MAX_GROUPS];
    let (mut h, mut d, mut b) = (0, 0, 0);
    for (g, grp) in groups.iter().enumerate() {
        (hint_at[g], dir_at[g], data_at[g]) = (h, d, b);
        h += geo.hint_words(g);
        d += grp.partitions as usize;
        b += grp.partitions as usize * grp.partition_bytes as usize;
    }
    let q = geo.slot_count() as usize;
    let ht = Arc::new(HeapTarget {
        header: TargetHeader {
            magic: z64(),
            version: z(),
            group_count: z(),
            slot_count: z(),
            ring_cells: z(),
            total_bytes: z64(),
            closed: z(),
            receiver_pid: z(),
            nonce: z64(),
            sender_uid: z(),
        },
        groups: many(MAX_GROUPS, || GroupDesc {
            partition_bytes: z(),
            partitions: z(),
            span_max: z(),
            reserved: z(),
            dir_offset: z64(),
            data_offset: z64(),
        }),
        receiver: ReceiverLine {
            wait: z(),
            rings: z(),
            limit_bytes: z(),
            lock: z(),
        },
        charge: ChargeLine { charge: z64() },
        ready: many(geo.ready_words(), z64),
        hints: many(h, z64),
        slots: many(q, || Slot {
            sender: SlotSender {
                head: z(),
                pid: z(),
                closed: z(),
                inflight: z(),
                drops: z(),
            },
            receiver: SlotReceiver {
                tail: z(),
                gen: z(),
                state: z(),
            },
        }),
        cells: many(q * geo.ring_cells() as usize, || Descriptor {
            ticket: z(),
            loc: z(),
            len: z(),
            flags: z(),
        }),
        dirs: many(d, || DirEntry {
            owner: z(),
            span: z(),
            first: z(),
            flags: z(),
        }),
        data: many(b, || Cell::new(0)),
    });
    #[cfg(not(loom))]
    let base = ht.data.as_ptr().cast::<u8>().cast_mut();
    #[cfg(loom)]
    let base = ht.data.as_ptr();
    // SAFETY: the cells live in `ht`, kept alive by `keep` below;
    // UnsafeCell makes writing through the derived pointer sound.
    let data = unsafe { DataArea::new(base, b) };
    let keep: Arc<dyn Send + Sync> = ht.clone();
    let p = Parts {
        header: NonNull::from(&ht.header),
        groups: nn(&ht.groups),
        receiver: NonNull::from(&ht.receiver),
        charge: NonNull::from(&ht.charge),
        ready: nn(&ht.ready),
        hints: nn(&ht.hints),
        hint_at,
        slots: nn(&ht.slots),
        cells: nn(&ht.cells),
        dirs: nn(&ht.dirs),
        dir_at,
        data,
        data_at,
        keep,
    };
    // SAFETY: each array was allocated with the counts `geo` gives, the
    // `*_at` indices computed above from the same geometry, all kept alive
    // by `keep`.
    let sh = Arc::new(unsafe { Shared::new(p, geo) });
    #[cfg(not(loom))]
    let uid = rustix::process::geteuid().as_raw();
    #[cfg(loom)]
    let uid = 0;
    let rx = Receiver::init(sh.clone(), None, uid);
    (rx, Image { sh })
}

fn nn<T>(b: &[T]) -> NonNull<T> {
    // A boxed slice's pointer is non-null (dangling but aligned if empty,
    // and an empty array is never indexed: its count is 0).
    NonNull::from(b).cast::<T>()
}

/// Writes the segment group table (claim 5) of a target being created.
pub(crate) fn write_group_table(sh: &Shared, o: &Offsets) {
    for (g, grp) in sh.geo().groups().iter().enumerate() {
        let Some(d) = sh.group_desc(g) else {
            continue;
        };
        d.partition_bytes
            .store(grp.partition_bytes, Ordering::Relaxed);
        d.partitions.store(grp.partitions, Ordering::Relaxed);
        d.span_max.store(grp.span_max, Ordering::Relaxed);
        d.dir_offset.store(o.dirs[g] as u64, Ordering::Relaxed);
        d.data_offset.store(o.data[g] as u64, Ordering::Relaxed);
    }
}
