//! The counters file: its layout (a header, then one 128-byte row per live
//! process, a row for the retired and one for the unattributed), mapping
//! and checking it, and claiming a process's row.
#![allow(unsafe_code)] // the shared mapping: see `Table`

use super::*;
use crate::platform::safedir::Dir;
use crate::platform::shared_file::Words;
use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const _: () = assert!(FILE_BYTES == 33088 && ROW_COUNTERS == 14 && COUNTERS <= ROW_COUNTERS);
const _: () = assert!(NAMES.len() == COUNTERS && ROW_BYTES & 63 == 0 && HEADER_BYTES & 63 == 0);

pub(crate) const MAGIC: [u8; 8] = *b"SHMNETC1";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: usize = 64;
pub(crate) const ROW_BYTES: usize = 128;
/// Counter words per row: `COUNTERS` named, the rest reserved (zero).
pub(crate) const ROW_COUNTERS: usize = (ROW_BYTES - ROW_COUNTERS_AT) / 8;
pub(crate) const SLOTS: usize = 256;
pub(crate) const RETIRED: usize = 0;
pub(crate) const UNATTRIBUTED: usize = 1;
pub(crate) const FIRST_SLOT: usize = 2;
pub(crate) const ROWS: usize = FIRST_SLOT + SLOTS;
pub(crate) const FILE_BYTES: usize = HEADER_BYTES + ROWS * ROW_BYTES;
/// Slots a claimer looks at, from hash(pid) on.
pub(crate) const PROBES: usize = 8;

// Header fields (byte offsets).
pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 8;
pub(crate) const H_HEADER_BYTES: usize = 12;
pub(crate) const H_ROW_BYTES: usize = 16;
pub(crate) const H_SLOTS: usize = 20;
pub(crate) const H_COUNTERS: usize = 24;
pub(crate) const H_EUID: usize = 28;
pub(crate) const H_FILE_BYTES: usize = 32;

// Row fields (byte offsets within a row).
pub(crate) const ROW_PID_AT: usize = 0;
pub(crate) const ROW_START_AT: usize = 8;
pub(crate) const ROW_COUNTERS_AT: usize = 16;

/// Set in a slot's pid word while its claimer folds the previous owner's
/// counts away (pids are below 2^22).
pub(crate) const CLAIMING: u32 = 1 << 31;
pub(crate) const PID_MASK: u32 = CLAIMING - 1;

/// `stats-<euid>` mapped shared: every access is an atomic load, store or
/// read-modify-write of an aligned word at a fixed offset below
/// `FILE_BYTES`.
#[derive(Debug)]
pub(crate) struct Table {
    words: Words,
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of our own FILE_BYTES mapping (from
        // `map`); no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.words.base().as_ptr().cast(), FILE_BYTES) };
    }
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

    pub(crate) fn row_at(row: usize) -> usize {
        HEADER_BYTES + row.min(ROWS - 1) * ROW_BYTES
    }

    pub(crate) fn pid_word(&self, row: usize) -> Option<&AtomicU32> {
        self.u32_at(Self::row_at(row) + ROW_PID_AT)
    }

    pub(crate) fn start_word(&self, row: usize) -> Option<&AtomicU64> {
        self.u64_at(Self::row_at(row) + ROW_START_AT)
    }

    pub(crate) fn counter(&self, row: usize, i: usize) -> Option<&AtomicU64> {
        if row >= ROWS || i >= ROW_COUNTERS {
            return None;
        }
        self.u64_at(Self::row_at(row) + ROW_COUNTERS_AT + 8 * i)
    }

    /// Adds `n` to counter `i` of `row`.
    pub(crate) fn add(&self, row: usize, i: usize, n: u64) {
        if let Some(c) = self.counter(row, i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Opens `stats-<euid>` in `dir`, creating it if missing.
    pub(crate) fn open(dir: &Dir) -> Result<Table, TableError> {
        let euid = dir.euid();
        let name = format!("stats-{euid}");
        let err = |problem| TableError {
            path: dir.path().join(&name),
            problem,
        };
        // A file removed between our failed create and our open (a cleaner)
        // sends us round again; a few rounds are plenty.
        for _ in 0..4 {
            match dir.open(&name, OFlags::RDWR | OFlags::NONBLOCK, Mode::empty()) {
                Ok(fd) => return attach(&fd, euid).map_err(err),
                Err(Errno::NOENT) => {
                    if let Some(table) = create(dir, &name).map_err(err)? {
                        return Ok(table);
                    }
                }
                Err(Errno::LOOP) => return Err(err(TableProblem::Symlink)),
                Err(e) => return Err(err(TableProblem::Open(e))),
            }
        }
        Err(err(TableProblem::Open(Errno::AGAIN)))
    }

    /// Writes the header of a fresh (zeroed) file, the version word last.
    pub(crate) fn init_header(&self, euid: u32) {
        let words32 = [
            (H_HEADER_BYTES, HEADER_BYTES as u32),
            (H_ROW_BYTES, ROW_BYTES as u32),
            (H_SLOTS, SLOTS as u32),
            // 9, not COUNTERS: libraries from before `fallback_no_gateway`
            // accept only 9, and its word (a reserved zero for them, cleared
            // by every version when a slot is taken) is read regardless.
            (H_COUNTERS, COUNTERS_IN_HEADER as u32),
            (H_EUID, euid),
        ];
        for (off, v) in words32 {
            if let Some(w) = self.u32_at(off) {
                w.store(v, Ordering::Relaxed);
            }
        }
        if let Some(w) = self.u64_at(H_FILE_BYTES) {
            w.store(FILE_BYTES as u64, Ordering::Relaxed);
        }
        if let Some(w) = self.u64_at(H_MAGIC) {
            w.store(u64::from_ne_bytes(MAGIC), Ordering::Relaxed);
        }
        if let Some(w) = self.u32_at(H_VERSION) {
            w.store(VERSION, Ordering::Release);
        }
    }

    /// Whether the header says: this layout, written for `euid`. The
    /// version word is read first (Acquire), as it was written last.
    pub(crate) fn header_ok(&self, euid: u32) -> bool {
        let u32_is = |off, v| {
            self.u32_at(off)
                .is_some_and(|w| w.load(Ordering::Relaxed) == v)
        };
        self.u32_at(H_VERSION)
            .is_some_and(|w| w.load(Ordering::Acquire) == VERSION)
            && self
                .u64_at(H_MAGIC)
                .is_some_and(|w| w.load(Ordering::Relaxed).to_ne_bytes() == MAGIC)
            && u32_is(H_HEADER_BYTES, HEADER_BYTES as u32)
            && u32_is(H_ROW_BYTES, ROW_BYTES as u32)
            && u32_is(H_SLOTS, SLOTS as u32)
            && self.u32_at(H_COUNTERS).is_some_and(|w| {
                let n = w.load(Ordering::Relaxed) as usize;
                (COUNTERS_BEFORE_NO_GATEWAY..=ROW_COUNTERS).contains(&n)
            })
            && u32_is(H_EUID, euid)
            && self
                .u64_at(H_FILE_BYTES)
                .is_some_and(|w| w.load(Ordering::Relaxed) == FILE_BYTES as u64)
    }

    /// A row for `pid` (its slot, or the unattributed row): see the module
    /// docs. `start` tells this process from an earlier one with its pid.
    pub(crate) fn claim(&self, pid: u32, start: u64) -> usize {
        self.claim_from(first_slot(pid), pid, start)
    }

    pub(crate) fn claim_from(&self, first: usize, pid: u32, start: u64) -> usize {
        let pid = pid & PID_MASK;
        for k in 0..PROBES {
            let row = FIRST_SLOT + (first + k) % SLOTS;
            if self.take(row, pid, start) {
                return row;
            }
        }
        UNATTRIBUTED
    }

    /// Takes slot `row` for `me` if it is free or its owner is gone; the
    /// previous owner's counts go to the retired row.
    pub(crate) fn take(&self, row: usize, me: u32, start: u64) -> bool {
        let Some(word) = self.pid_word(row) else {
            return false;
        };
        let seen = word.load(Ordering::Acquire);
        if !self.reusable(row, seen) {
            return false;
        }
        // Between two claimers of one slot, this decides.
        if word
            .compare_exchange(seen, me | CLAIMING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if let Some(w) = self.start_word(row) {
            w.store(start, Ordering::Relaxed);
        }
        for i in 0..ROW_COUNTERS {
            if let Some(c) = self.counter(row, i) {
                let n = c.swap(0, Ordering::Relaxed);
                if n != 0 {
                    self.add(RETIRED, i, n);
                }
            }
        }
        word.store(me, Ordering::Release);
        true
    }

    /// Whether a slot whose pid word is `seen` may be taken over.
    pub(crate) fn reusable(&self, row: usize, seen: u32) -> bool {
        let owner = seen & PID_MASK;
        if seen == 0 || owner == 0 || !alive(owner) {
            return true;
        }
        if seen & CLAIMING != 0 {
            return false; // a live claimer at work
        }
        // Alive: the same process, or a later one that got its pid?
        let recorded = self
            .start_word(row)
            .map_or(0, |w| w.load(Ordering::Acquire));
        recorded != 0 && proc_start(owner).is_some_and(|now| now != recorded)
    }

    /// Totals over every row, in `NAMES` order (tests; the format's reader
    /// is tests/common/stats.rs).
    #[cfg(test)]
    pub(crate) fn sum(&self) -> [u64; COUNTERS] {
        let mut sum = [0; COUNTERS];
        for row in 0..ROWS {
            for (i, s) in sum.iter_mut().enumerate() {
                *s += self
                    .counter(row, i)
                    .map_or(0, |c| c.load(Ordering::Relaxed));
            }
        }
        sum
    }
}

/// Where a pid's probes start.
pub(crate) fn first_slot(pid: u32) -> usize {
    (pid.wrapping_mul(0x9E37_79B9) >> 24) as usize % SLOTS
}

/// Whether process `pid` exists (`kill(pid, 0)` is not ESRCH).
pub(crate) fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::test_kill_process(pid) != Err(Errno::SRCH)
}

/// Process `pid`'s start time (`/proc/PID/stat` field 22, clock ticks after
/// boot): with the pid, it names one process.
pub(crate) fn proc_start(pid: u32) -> Option<u64> {
    proc_stat(pid, parse_start)
}

/// Whether process `pid` runs (not a zombie: a zombie's sockets are closed)
/// and started at `start`.
pub(crate) fn running(pid: u32, start: u64) -> bool {
    alive(pid)
        && proc_stat(pid, |stat| {
            let close = stat.iter().rposition(|&b| b == b')')?;
            let state = stat.get(close + 2).copied()?;
            Some(!matches!(state, b'Z' | b'X') && parse_start(stat) == Some(start))
        }) == Some(true)
}

/// `/proc/PID/stat`, read into a buffer and given to `parse`.
fn proc_stat<T>(pid: u32, parse: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
    let path = format!("/proc/{pid}/stat");
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    parse(&buf[..len])
}

/// Field 22 of a `/proc/PID/stat` line (the command name, field 2, may hold
/// spaces and parentheses: fields are counted after its last ')').
pub(crate) fn parse_start(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Checks and maps an existing counters file.
pub(crate) fn attach(fd: &OwnedFd, euid: u32) -> Result<Table, TableProblem> {
    let st = rustix::fs::fstat(fd).map_err(TableProblem::Open)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    let mode = st.st_mode & 0o7777;
    if kind != FileType::RegularFile || st.st_uid != euid || mode & 0o022 != 0 {
        return Err(TableProblem::NotOurs {
            regular: kind == FileType::RegularFile,
            uid: st.st_uid,
            mode,
        });
    }
    let size = file_size(&st);
    if size != FILE_BYTES as i64 {
        return Err(TableProblem::Size(size));
    }
    let table = map(fd).map_err(TableProblem::Map)?;
    if !table.header_ok(euid) {
        return Err(TableProblem::Header);
    }
    Ok(table)
}

#[allow(clippy::unnecessary_cast)] // st_size's type differs between architectures
pub(crate) fn file_size(st: &Stat) -> i64 {
    st.st_size as i64
}

pub(crate) fn map(fd: &OwnedFd) -> Result<Table, Errno> {
    // SAFETY: a new mapping at an address the kernel picks (no existing
    // mapping is replaced) of a file of at least FILE_BYTES; `Table` only
    // accesses it atomically and unmaps it on drop.
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
    let base = NonNull::new(p.cast::<u8>()).ok_or(Errno::NOMEM)?;
    // SAFETY: a new FILE_BYTES shared mapping, unmapped only when the
    // table (and so its `Words`) is dropped, only accessed atomically.
    let words = unsafe { Words::new(base, FILE_BYTES) };
    Ok(Table { words })
}

/// Creates `name` whole: prepared under a private name (0600, sized, its
/// blocks allocated so that a full filesystem cannot fault us later, header
/// written version last), then renamed into place unless another process
/// got there first (`Ok(None)`: open theirs).
pub(crate) fn create(dir: &Dir, name: &str) -> Result<Option<Table>, TableProblem> {
    let tmp = format!(".{name}.{}.tmp", rustix::process::getpid().as_raw_nonzero());
    // Left by an earlier process with our pid that died right here.
    let _ = dir.unlink(&tmp);
    let fd = dir
        .open(
            &tmp,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(TableProblem::Create)?;
    let prepared = prepare(&fd, dir.euid()).and_then(|table| match dir.publish(&tmp, name) {
        Ok(()) => Ok(Some(table)),
        Err(Errno::EXIST) => Ok(None),
        Err(e) => Err(TableProblem::Create(e)),
    });
    if !matches!(prepared, Ok(Some(_))) {
        let _ = dir.unlink(&tmp);
    }
    prepared
}

pub(crate) fn prepare(fd: &OwnedFd, euid: u32) -> Result<Table, TableProblem> {
    // Growing a file past RLIMIT_FSIZE raises SIGXFSZ.
    if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Fsize).current {
        if limit < FILE_BYTES as u64 {
            return Err(TableProblem::FsizeLimit(limit));
        }
    }
    rustix::fs::ftruncate(fd, FILE_BYTES as u64).map_err(TableProblem::Create)?;
    match rustix::fs::fallocate(
        fd,
        rustix::fs::FallocateFlags::empty(),
        0,
        FILE_BYTES as u64,
    ) {
        Ok(()) | Err(Errno::OPNOTSUPP) => {}
        Err(e) => return Err(TableProblem::Create(e)),
    }
    let table = map(fd).map_err(TableProblem::Map)?;
    table.init_header(euid);
    Ok(table)
}

/// Why the counters file cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableProblem {
    Symlink,
    Open(Errno),
    Create(Errno),
    Map(Errno),
    NotOurs { regular: bool, uid: u32, mode: u32 },
    Size(i64),
    Header,
    FsizeLimit(u64),
}

/// The counters file that cannot be used, and why; `Display` is the
/// `libshmnet:` line.
#[derive(Debug, Clone)]
pub(crate) struct TableError {
    pub(crate) path: PathBuf,
    pub(crate) problem: TableProblem,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "counters file {} ", self.path.display())?;
        match self.problem {
            TableProblem::Symlink => write!(f, "is a symlink: remove it"),
            TableProblem::Open(e) => write!(f, "cannot be opened ({e})"),
            TableProblem::Create(e) => write!(f, "cannot be created ({e})"),
            TableProblem::Map(e) => write!(f, "cannot be mapped ({e})"),
            TableProblem::NotOurs { regular, uid, mode } => write!(
                f,
                "is not a regular file of yours writable only by you ({}, uid {uid}, mode {mode:04o}): remove it",
                if regular { "a file" } else { "not a file" }
            ),
            TableProblem::Size(n) => write!(
                f,
                "has {n} bytes, not {FILE_BYTES} (another version's?): remove it"
            ),
            TableProblem::Header => write!(f, "has no valid header (another version's?): remove it"),
            TableProblem::FsizeLimit(n) => write!(
                f,
                "would exceed RLIMIT_FSIZE ({n} bytes)"
            ),
        }?;
        f.write_str("; counting in memory only")
    }
}

// ---------------------------------------------------------------------------
// This process's counts
