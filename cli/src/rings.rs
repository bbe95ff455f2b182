//! A connection's ring as its segment says it is: the bytes waiting in
//! each direction and the closed words, read from the segment itself
//! (read-only, through the memfd a process holding the connection keeps,
//! `/proc/PID/fd/N`, else its mapping, `/proc/PID/map_files/...`, which
//! only root may open). The processes' own counts cannot say this: a peer
//! that is gone left no entry, and holders that write in turn each count
//! only their own bytes (review #4, #5).
//!
//! The segment is hostile input (the peer writes it): one copy of its
//! control area is taken with `pread`, the geometry is checked as the
//! ring checks a peer's (`Geometry::new`, the file's size), and every
//! index and offset is range-checked before use; anything out of range is
//! "not known" (the caller falls back to the processes' counts).

use std::collections::HashMap;
use std::fs::File;
use std::mem::offset_of;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use shmnet_ring::layout::{
    ChannelControl, ConsumerLine, ProducerLine, SegmentHeader, LAYOUT_VERSION, MAGIC,
};
use shmnet_ring::Geometry;

use crate::status::{u32_at, u64_at};

/// What a ring says, per channel (0: connector to acceptor, 1: back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingView {
    /// Bytes written and not yet read.
    pub(crate) queued: [u64; 2],
    /// The channel's writer will write no more (shutdown, close).
    pub(crate) writer_closed: [bool; 2],
    /// Either side declared the connection reset.
    pub(crate) reset: bool,
}

/// At most this many fds of one process are looked at (a process may
/// hold a million), and this many in the whole scan: a hostile user can
/// name any pid (a thread's id too) in its entries.
const MAX_FDS: usize = 1 << 16;
const MAX_FDS_ALL: usize = 1 << 18;
/// At most this much of one process's /proc/PID/maps is read, and this
/// much in the whole scan (60,000 mappings of a long path are 10 MB).
const MAX_MAPS: u64 = 4 << 20;
const MAX_MAPS_ALL: u64 = 32 << 20;
/// Memfds of connections are named so (ring/src/segment.rs).
const MEMFD_NAME: &str = "/memfd:shmnet-conn";

/// Looks processes' segments up, each process's fds once per run.
#[derive(Default)]
pub(crate) struct Rings {
    /// pid -> segment inode -> a path that opens it.
    by_pid: HashMap<u32, HashMap<u64, String>>,
    /// fds and maps bytes looked at so far (`MAX_FDS_ALL`, `MAX_MAPS_ALL`).
    fds_seen: usize,
    maps_read: u64,
}

impl Rings {
    /// The ring of the connection whose segment is `segment` (inode), as
    /// process `pid`, which holds it, has it; None if it cannot be read
    /// (not ours to read, gone, not a segment of this layout).
    pub(crate) fn view(&mut self, pid: u32, segment: u64) -> Option<RingView> {
        if segment == 0 {
            return None;
        }
        if !self.by_pid.contains_key(&pid) {
            let found = segments_of(pid, &mut self.fds_seen, &mut self.maps_read);
            self.by_pid.insert(pid, found);
        }
        let path = self.by_pid.get(&pid)?.get(&segment)?;
        // (A /proc magic link, followed: to the file it names, checked
        // before and after to be the segment. Its holder may swap the fd
        // for another file in between, a terminal say: O_NOCTTY, so that
        // the open never makes it ours, and O_NONBLOCK, so that it never
        // waits.)
        let before = std::fs::metadata(path).ok()?;
        if !before.is_file() || before.ino() != segment {
            return None;
        }
        let f = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let meta = f.metadata().ok()?;
        // The fd may have been closed and its number reused meanwhile.
        if !meta.is_file() || meta.ino() != segment {
            return None;
        }
        read(&f, meta.len())
    }
}

/// The memfds of connections a process holds (its fds; else its mappings,
/// which only root can open): inode -> path.
fn segments_of(pid: u32, fds_seen: &mut usize, maps_read: &mut u64) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        let room = MAX_FDS.min(MAX_FDS_ALL.saturating_sub(*fds_seen));
        for ent in rd.flatten().take(room) {
            *fds_seen += 1;
            let path = ent.path();
            let Ok(target) = std::fs::read_link(&path) else {
                continue;
            };
            if !target.to_string_lossy().starts_with(MEMFD_NAME) {
                continue;
            }
            if let Ok(m) = std::fs::metadata(&path) {
                out.insert(m.ino(), path.to_string_lossy().into_owned());
            }
        }
    }
    // A connection whose memfd was given back (fd pressure) is mapped only.
    let room = MAX_MAPS.min(MAX_MAPS_ALL.saturating_sub(*maps_read));
    let maps = File::open(format!("/proc/{pid}/maps")).and_then(|f| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(f, room), &mut text)?;
        Ok(text)
    });
    if let Ok(maps) = maps {
        *maps_read += maps.len() as u64;
        for line in maps.lines().filter(|l| l.contains(MEMFD_NAME)) {
            // range perms offset dev inode path
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let (Some(range), Some(ino), Some(&"00000000")) = (f.first(), f.get(4), f.get(2))
            else {
                continue;
            };
            if let Ok(ino) = ino.parse::<u64>() {
                out.entry(ino)
                    .or_insert_with(|| format!("/proc/{pid}/map_files/{range}"));
            }
        }
    }
    out
}

/// A segment's control area, read once and checked.
fn read(f: &File, file_bytes: u64) -> Option<RingView> {
    let mut head = [0u8; std::mem::size_of::<SegmentHeader>()];
    f.read_exact_at(&mut head, 0).ok()?;
    if u64_at(&head, offset_of!(SegmentHeader, magic)) != MAGIC
        || u32_at(&head, offset_of!(SegmentHeader, version)) != LAYOUT_VERSION
    {
        return None;
    }
    let geo = Geometry::new(
        u32_at(&head, offset_of!(SegmentHeader, segment_count)),
        u32_at(&head, offset_of!(SegmentHeader, segment_bytes)),
    )
    .ok()?;
    if file_bytes != geo.total_bytes() as u64 {
        return None;
    }
    // Everything up to the data: at most ~200 KiB (4096 segments).
    let mut b = vec![0u8; geo.data_offset(0)];
    f.read_exact_at(&mut b, 0).ok()?;
    let reset = u32_at(&b, offset_of!(SegmentHeader, reset)) != 0;
    let mut view = RingView {
        queued: [0; 2],
        writer_closed: [false; 2],
        reset,
    };
    for ch in 0..2 {
        let (queued, closed) = channel(&b, &geo, ch)?;
        view.queued[ch] = queued;
        view.writer_closed[ch] = closed;
    }
    Some(view)
}

/// One channel's waiting bytes (as the consumer counts what it may read:
/// from `begin` of the tail segment to `end` of each segment up to the
/// head) and its writer's closed word.
fn channel(b: &[u8], geo: &Geometry, ch: usize) -> Option<(u64, bool)> {
    let (n, s) = (geo.segment_count, geo.segment_bytes);
    let ctl = geo.channel_offset(ch);
    let producer = ctl + offset_of!(ChannelControl, producer);
    let consumer = ctl + offset_of!(ChannelControl, consumer);
    let head = u32_at(b, producer + offset_of!(ProducerLine, head));
    let closed = u32_at(b, producer + offset_of!(ProducerLine, closed)) != 0;
    let tail = u32_at(b, consumer + offset_of!(ConsumerLine, tail));
    let used = head.wrapping_sub(tail);
    if used >= n {
        return None;
    }
    let word = |base: usize, stride: usize, i: u32| -> Option<u32> {
        let at = base + stride * i as usize;
        (at + 4 <= b.len()).then(|| u32_at(b, at))
    };
    let slot = |seq: u32| word(geo.segment_slot_offset(ch), 4, seq % n).filter(|&i| i < n);
    let mut begin = word(geo.segment_begin_offset(ch), 4, slot(tail)?)?;
    let mut total = 0u64;
    for k in 0..=used {
        let idx = slot(tail.wrapping_add(k))?;
        let end = word(geo.segment_control_offset(ch), 16, idx)?;
        if end > s || end < begin {
            return None;
        }
        total += u64::from(end - begin);
        begin = 0;
    }
    Some((total, closed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmnet_ring::layout::SegmentControl;

    /// A control area with channel 0 holding `tail..=head` segments.
    #[test]
    fn hostile_words_are_refused_and_good_ones_counted() {
        assert_eq!(std::mem::size_of::<SegmentControl>(), 16);
        let geo = Geometry::new(4, 64).unwrap();
        let mut b = vec![0u8; geo.data_offset(0)];
        let put = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        };
        let ctl = geo.channel_offset(0);
        let consumer = ctl + offset_of!(ChannelControl, consumer);
        // tail 5 (slot 1, begin 10), head 6 (slot 2, end 20); slot 1's end 64.
        put(&mut b, consumer, 5);
        put(&mut b, ctl, 6);
        put(&mut b, geo.segment_slot_offset(0) + 4, 1);
        put(&mut b, geo.segment_slot_offset(0) + 8, 2);
        put(&mut b, geo.segment_begin_offset(0) + 4, 10);
        put(&mut b, geo.segment_control_offset(0) + 16, 64);
        put(&mut b, geo.segment_control_offset(0) + 32, 20);
        assert_eq!(channel(&b, &geo, 0), Some((54 + 20, false)));
        // A head more than N past the tail, a slot out of range, an end
        // past the segment: not known.
        let mut bad = b.clone();
        put(&mut bad, ctl, 5 + 4);
        assert_eq!(channel(&bad, &geo, 0), None);
        let mut bad = b.clone();
        put(&mut bad, geo.segment_slot_offset(0) + 8, 4);
        assert_eq!(channel(&bad, &geo, 0), None);
        let mut bad = b.clone();
        put(&mut bad, geo.segment_control_offset(0) + 32, 65);
        assert_eq!(channel(&bad, &geo, 0), None);
        // A begin past the end.
        let mut bad = b;
        put(&mut bad, geo.segment_begin_offset(0) + 4, 65);
        assert_eq!(channel(&bad, &geo, 0), None);
    }
}
