//! The status file's layout (docs/status.md): a header, then fixed-size
//! entries, one per listener or emulated connection; creating and mapping
//! it. Every access to the mapping is an atomic load or store of an
//! aligned word at an offset checked against `FILE_BYTES`.
#![allow(unsafe_code)] // the shared mapping: see `Table`

use crate::platform::shared_file::Words;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::platform::safedir::Dir;

// The layout: one definition with the reader (`shmnet ss`).
pub(crate) use shmnet_status_layout::*;

/// The status file mapped shared, kept for the life of the process (and
/// its forked children, which share it).
#[derive(Debug)]
pub(crate) struct Table {
    words: Words,
    /// The name in SHMNET_DIR, and the pid that made it.
    pub(crate) name: String,
    pub(crate) creator: u32,
    pub(crate) dir: std::sync::Arc<Dir>,
}

impl Table {
    /// The word at byte `off` (`Words`); offsets are constants or
    /// computed from bounded indexes, so this never fails in practice.
    pub(crate) fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        self.words.u64_at(off)
    }

    pub(crate) fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        self.words.u32_at(off)
    }

    /// Whether the creator is exiting (`H_CLOSING`; SeqCst: see `at_exit`).
    pub(crate) fn closing(&self) -> bool {
        self.u32_at(H_CLOSING)
            .is_some_and(|w| w.load(Ordering::SeqCst) != 0)
    }

    pub(crate) fn set_closing(&self) {
        if let Some(w) = self.u32_at(H_CLOSING) {
            w.store(1, Ordering::SeqCst);
        }
    }

    /// A socket found no free entry (not listed).
    pub(crate) fn count_overflow(&self) {
        if let Some(w) = self.u32_at(H_OVERFLOW) {
            w.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The creator's start time (from the header we wrote).
    pub(crate) fn creator_start(&self) -> u64 {
        self.u64_at(H_START)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Byte offset of entry `i` (clamped: indexes are our own).
    pub(crate) fn entry_at(i: usize) -> usize {
        HEADER_BYTES + i.min(ENTRIES - 1) * ENTRY_BYTES
    }

    fn store32(&self, off: usize, v: u32) {
        if let Some(w) = self.u32_at(off) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn store64(&self, off: usize, v: u64) {
        if let Some(w) = self.u64_at(off) {
            w.store(v, Ordering::Relaxed);
        }
    }

    /// Writes the header of a fresh (zeroed) file, the version word last.
    fn init_header(&self, pid: u32, euid: u32, start: u64, pidns: u64) {
        self.store32(H_HEADER_BYTES, HEADER_BYTES as u32);
        self.store32(H_ENTRY_BYTES, ENTRY_BYTES as u32);
        self.store32(H_ENTRIES, ENTRIES as u32);
        self.store32(H_PID, pid);
        self.store32(H_EUID, euid);
        self.store64(H_START, start);
        self.store64(H_PIDNS, pidns);
        self.store64(H_MAGIC, u64::from_ne_bytes(MAGIC));
        if let Some(w) = self.u32_at(H_VERSION) {
            w.store(VERSION, Ordering::Release);
        }
    }
}

/// The table a process writes into: its own, or until it has one, the
/// one it inherited across fork. Tables are never freed, so a pointer
/// once stored stays valid.
pub(crate) struct TableCell(AtomicPtr<Table>);

impl TableCell {
    pub(crate) const fn new() -> TableCell {
        TableCell(AtomicPtr::new(std::ptr::null_mut()))
    }

    pub(crate) fn get(&self) -> Option<&'static Table> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: null or a pointer from `Box::leak` in `set`, never freed;
        // Acquire pairs with its Release store (the table is initialised).
        unsafe { p.as_ref() }
    }

    pub(crate) fn set(&self, table: &'static Table) {
        self.0
            .store(std::ptr::from_ref(table).cast_mut(), Ordering::Release);
    }
}

/// Creates `status-<pid>-<start>[.<k>]` whole: prepared under a private
/// name (0600, sized, its blocks allocated so that a full filesystem cannot
/// fault us later, header written version last), then renamed into place.
/// The name of an earlier image of this process (before an exec; possibly
/// still used by its forked children) is left alone: the next suffix.
pub(crate) fn create(
    dir: std::sync::Arc<Dir>,
    pid: u32,
    start: u64,
    pidns: u64,
) -> Result<Table, Errno> {
    if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Fsize).current {
        if limit < FILE_BYTES as u64 {
            return Err(Errno::FBIG); // growing past it raises SIGXFSZ
        }
    }
    // A name not known ahead (in a shared sticky directory a file
    // another user made under a name we meant to use could not be
    // removed, and would keep us unlisted for good).
    let mut opened = Err(Errno::EXIST);
    let mut tmp = String::new();
    for _ in 0..4 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        tmp = format!(".status-{pid}-{}{:09}.tmp", t.tv_sec, t.tv_nsec);
        opened = dir.open(
            &tmp,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
            Mode::RUSR | Mode::WUSR,
        );
        if !matches!(opened, Err(Errno::EXIST)) {
            break;
        }
    }
    let fd = opened?;
    // 0600 whatever the umask (0777 made it 0000: unreadable by its
    // user's `shmnet ss`).
    let base = match rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR).and_then(|()| prepare(&fd)) {
        Ok(base) => base,
        Err(e) => {
            let _ = dir.unlink(&tmp);
            return Err(e);
        }
    };
    let mut table = Table {
        // SAFETY: a new FILE_BYTES shared mapping, never unmapped (tables
        // are leaked), only accessed atomically.
        words: unsafe { Words::new(base, FILE_BYTES) },
        name: String::new(),
        creator: pid,
        dir: dir.clone(),
    };
    table.init_header(pid, dir.euid(), start, pidns);
    for k in 0..12 {
        let name = match k {
            0 => format!("status-{pid}-{start}"),
            1..8 => format!("status-{pid}-{start}.{k}"),
            // Taken (in a shared sticky directory another user may make
            // the names above ahead: pid and start time are public): a
            // suffix not known ahead.
            _ => {
                let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
                format!("status-{pid}-{start}.{}{:09}", 8 + t.tv_sec, t.tv_nsec)
            }
        };
        match dir.publish(&tmp, &name) {
            Ok(()) => {
                table.name = name;
                return Ok(table);
            }
            Err(Errno::EXIST) => continue,
            Err(_) => break,
        }
    }
    let _ = dir.unlink(&tmp);
    Err(Errno::EXIST) // the mapping is leaked: rare, and harmless
}

fn prepare(fd: &OwnedFd) -> Result<NonNull<u8>, Errno> {
    rustix::fs::ftruncate(fd, FILE_BYTES as u64)?;
    match rustix::fs::fallocate(
        fd,
        rustix::fs::FallocateFlags::empty(),
        0,
        FILE_BYTES as u64,
    ) {
        Ok(()) | Err(Errno::OPNOTSUPP) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: a new mapping at an address the kernel picks (no existing
    // mapping is replaced) of a file of FILE_BYTES; it is never unmapped
    // and only accessed atomically (`Table`).
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            FILE_BYTES,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
    }?;
    NonNull::new(p.cast::<u8>()).ok_or(Errno::NOMEM)
}

/// Removes the status files of processes that are gone (killed: no exit
/// handler ran), looking at most at `max` of them: a file goes when it is
/// of our pid namespace, its creator is gone, and no entry in use belongs
/// to a live process (a daemon's child may go on with its parent's file).
/// Called where a file is made and at exit, never on the data path. It
/// starts at a rotating place among the names, so that successive sweeps
/// get through a directory of many live files.
pub(crate) fn sweep(dir: &Dir, pidns: u64, max: usize) {
    sweep_private(dir, max);
    let mut names = dir.names("status-", SWEEP_NAMES);
    if names.len() > max {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let from = (t.tv_nsec as usize ^ std::process::id() as usize) % names.len();
        names.rotate_left(from);
        names.truncate(max);
    }
    for name in names {
        let Some((pid, start)) = parse_name(&name) else {
            continue;
        };
        if is_live(pid, start) {
            continue;
        }
        let Ok(fd) = dir.open(&name, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()) else {
            continue;
        };
        let Some(buf) = read_whole(&fd) else {
            continue; // not ours to judge
        };
        let (word32, word64) = (|o| word32_of(&buf, o), |o| word64_of(&buf, o));
        if word64(H_PIDNS) != pidns {
            continue; // not ours to judge
        }
        let in_use = (0..ENTRIES).any(|i| {
            let off = Table::entry_at(i);
            word32(off + E_STATE) != FREE && is_live(word32(off + E_PID), word64(off + E_START))
        });
        if !in_use {
            let _ = dir.unlink(&name);
        }
    }
}

/// Removes the private names (`.status-<pid>-<time>.tmp`) of processes
/// that are gone: a process killed while it made its file (after the
/// open, before the rename) left one. A live pid's are left alone (its
/// creation may be under way), and any made in the last minute (a process
/// of another pid namespace sharing the directory may be making it).
fn sweep_private(dir: &Dir, max: usize) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for name in dir.names(".status-", max) {
        if !dir.stat(&name).is_ok_and(|st| {
            #[allow(clippy::unnecessary_cast)] // st_mtime's type differs between architectures
            let made = st.st_mtime as i64;
            made < now - 60
        }) {
            continue;
        }
        let pid = name
            .strip_prefix(".status-")
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if pid.is_some_and(|p| !crate::platform::stats::alive(p)) {
            let _ = dir.unlink(&name);
        }
    }
}

/// Removes the files an earlier image of this process (before an exec)
/// made, `status-<pid>-<start>[.<k>]` not ours, unless an entry of another
/// live process is in use there (a forked child of that image): their
/// entries are hidden (`EXECING`) and this image publishes what it uses in
/// its own, under the first name.
pub(crate) fn remove_earlier_images(dir: &Dir, pid: u32, start: u64) {
    let ours = format!("status-{pid}-{start}");
    for name in dir.names(&ours, 64) {
        if name != ours && !name.starts_with(&format!("{ours}.")) {
            continue;
        }
        let Ok(fd) = dir.open(&name, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()) else {
            continue;
        };
        let Some(buf) = read_whole(&fd) else {
            continue;
        };
        let (word32, word64) = (|o| word32_of(&buf, o), |o| word64_of(&buf, o));
        if word32(H_PID) != pid || word64(H_START) != start {
            continue;
        }
        let in_use = (0..ENTRIES).any(|i| {
            let off = Table::entry_at(i);
            let owner = word32(off + E_PID);
            word32(off + E_STATE) != FREE && owner != pid && is_live(owner, word64(off + E_START))
        });
        if !in_use {
            let _ = dir.unlink(&name);
        }
    }
}

/// A status file's whole content (None: not a file of that size).
fn read_whole(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; FILE_BYTES];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    (len == FILE_BYTES && buf.get(..8) == Some(&MAGIC[..])).then_some(buf)
}

fn word32_of(buf: &[u8], off: usize) -> u32 {
    buf.get(off..off + 4)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn word64_of(buf: &[u8], off: usize) -> u64 {
    buf.get(off..off + 8).map_or(0, |b| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_ne_bytes(w)
    })
}

/// Names a sweep chooses from (a bound on its memory).
const SWEEP_NAMES: usize = 1 << 16;

/// `status-<pid>-<start>[.<k>]`.
fn parse_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("status-")?;
    let rest = rest.split('.').next()?;
    let (pid, start) = rest.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Whether `pid` is a live process that started at `start`.
pub(crate) fn is_live(pid: u32, start: u64) -> bool {
    pid != 0
        && crate::platform::stats::alive(pid)
        && crate::platform::stats::proc_start(pid).is_none_or(|s| s == start)
}
