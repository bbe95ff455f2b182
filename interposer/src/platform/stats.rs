//! Counters: how connections went (over shared memory, or to kernel TCP
//! and why), what listeners accepted, refused and dropped. Kept per user in
//! one shared-memory file, `SHMNET_DIR/stats-<euid>` (layout: docs/counters.md),
//! with a slot per process, so that tests and a status tool can read them
//! while the processes run and after they are gone.
//!
//! A count is one atomic add on the process's slot in the mapping: no system
//! call, exact under any concurrency. A process claims its slot on its first
//! count (a few probes from a hash of its pid; the slot of a dead process is
//! taken over after folding its counts into the *retired* row; when no slot
//! is free within the probes, the process counts into the *unattributed*
//! row). Until the file is available (the directory refused, the file
//! invalid) counts are kept in memory and moved into the slot when it is
//! claimed. A forked child claims a slot of its own on its first count (the
//! fork generation changed and its pid is not the claimer's).
//!
//! Every process of the user writes the file, so nothing read from it is
//! trusted beyond its value: slot indexes are our own (hash and probe
//! count), never read from the mapping; a pid word is only compared and
//! passed to `kill(pid, 0)`.
//!
//! Limits: the file is the one of the effective uid at the process's first
//! count (a process that changes uid later keeps counting there); processes
//! in other pid namespaces sharing the directory may take each other's slots
//! (totals stay exact, the per-process split does not); a same-uid process
//! that truncates the file can make us fault (it could ptrace us anyway).
#![allow(unsafe_code)] // the shared mapping: see `Table`

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::platform::safedir::{self, Dir};
use crate::platform::sys::Publish;

/// What became of one connect() (`SHMNET_FALLBACK=tcp`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Carried by shared memory.
    Shm = 0,
    /// Kernel TCP: no shared-memory listener on the address.
    NoListener = 1,
    /// Kernel TCP: a shared-memory listener was named but refused (gone,
    /// backlog full, handshake failed).
    Refused = 2,
    /// Kernel TCP: no resources for a connection segment (memfd, mmap, fds).
    Resources = 3,
    /// Kernel TCP: the two sides' policies do not admit each other.
    Policy = 4,
    /// Kernel TCP: `SHMNET_DIR` was needed and refused.
    Dir = 5,
}

/// The counters' names, in file order (docs/counters.md).
pub(crate) const NAMES: [&str; COUNTERS] = [
    "shm",
    "fallback_no_listener",
    "fallback_refused",
    "fallback_resources",
    "fallback_policy",
    "fallback_dir",
    "accepted_shm",
    "refused_policy",
    "dropped_handshakes",
];
const COUNTERS: usize = 9;
const ACCEPTED_SHM: usize = 6;
const REFUSED_POLICY: usize = 7;
const DROPPED_HANDSHAKES: usize = 8;

/// Counts a connect's outcome.
pub(crate) fn count(o: Outcome) {
    bump(o as usize);
}

/// A dual listener accepted a shared-memory connection.
pub(crate) fn accepted_shm() {
    bump(ACCEPTED_SHM);
}

/// A listener closed a connection whose connector its policy does not admit.
pub(crate) fn refused_policy() {
    bump(REFUSED_POLICY);
}

/// A listener dropped a parked connection (garbage, hang-up or idle).
pub(crate) fn dropped_handshake() {
    bump(DROPPED_HANDSHAKES);
}

/// This process's own totals since it started (or forked), in `NAMES`
/// order, whether or not the file could be written.
#[allow(dead_code)] // for a status call / debug log to come
pub(crate) fn totals() -> [u64; COUNTERS] {
    COUNTERS_OF_PROCESS.process().totals()
}

static COUNTERS_OF_PROCESS: Counters = Counters::new(crate::platform::fork::generation);

fn bump(i: usize) {
    COUNTERS_OF_PROCESS.count(i, &global_table);
}

// ---------------------------------------------------------------------------
// The file (docs/counters.md)

const MAGIC: [u8; 8] = *b"SHMNETC1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
const ROW_BYTES: usize = 128;
/// Counter words per row: `COUNTERS` named, the rest reserved (zero).
const ROW_COUNTERS: usize = (ROW_BYTES - ROW_COUNTERS_AT) / 8;
const SLOTS: usize = 256;
const RETIRED: usize = 0;
const UNATTRIBUTED: usize = 1;
const FIRST_SLOT: usize = 2;
const ROWS: usize = FIRST_SLOT + SLOTS;
const FILE_BYTES: usize = HEADER_BYTES + ROWS * ROW_BYTES;
/// Slots a claimer looks at, from hash(pid) on.
const PROBES: usize = 8;

// Header fields (byte offsets).
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_HEADER_BYTES: usize = 12;
const H_ROW_BYTES: usize = 16;
const H_SLOTS: usize = 20;
const H_COUNTERS: usize = 24;
const H_EUID: usize = 28;
const H_FILE_BYTES: usize = 32;

// Row fields (byte offsets within a row).
const ROW_PID_AT: usize = 0;
const ROW_START_AT: usize = 8;
const ROW_COUNTERS_AT: usize = 16;

/// Set in a slot's pid word while its claimer folds the previous owner's
/// counts away (pids are below 2^22).
const CLAIMING: u32 = 1 << 31;
const PID_MASK: u32 = CLAIMING - 1;

const _: () = assert!(FILE_BYTES == 33088 && ROW_COUNTERS == 14 && COUNTERS <= ROW_COUNTERS);
const _: () = assert!(NAMES.len() == COUNTERS && ROW_BYTES & 63 == 0 && HEADER_BYTES & 63 == 0);

/// `stats-<euid>` mapped shared: every access is an atomic load, store or
/// read-modify-write of an aligned word at a fixed offset below
/// `FILE_BYTES`.
#[derive(Debug)]
pub(crate) struct Table {
    base: NonNull<u8>,
}

// SAFETY: the mapping is plain shared memory, valid until `Drop`, and only
// ever accessed through atomics, from any thread.
unsafe impl Send for Table {}
// SAFETY: as for Send.
unsafe impl Sync for Table {}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of our own FILE_BYTES mapping (from
        // `map`); no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), FILE_BYTES) };
    }
}

impl Table {
    /// The word at byte `off`; offsets are constants or computed from
    /// bounded indexes (`row`, `counter`), so this never fails in practice.
    fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        if off & 7 != 0 || off + 8 > FILE_BYTES {
            return None;
        }
        // SAFETY: in bounds of the mapping (checked above), 8-aligned (the
        // mapping is page-aligned), alive as long as `&self`; the memory is
        // only accessed atomically.
        Some(unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU64>() })
    }

    fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        if off & 3 != 0 || off + 4 > FILE_BYTES {
            return None;
        }
        // SAFETY: as in `u64_at`, with 4-byte words.
        Some(unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() })
    }

    fn row_at(row: usize) -> usize {
        HEADER_BYTES + row.min(ROWS - 1) * ROW_BYTES
    }

    fn pid_word(&self, row: usize) -> Option<&AtomicU32> {
        self.u32_at(Self::row_at(row) + ROW_PID_AT)
    }

    fn start_word(&self, row: usize) -> Option<&AtomicU64> {
        self.u64_at(Self::row_at(row) + ROW_START_AT)
    }

    fn counter(&self, row: usize, i: usize) -> Option<&AtomicU64> {
        if row >= ROWS || i >= ROW_COUNTERS {
            return None;
        }
        self.u64_at(Self::row_at(row) + ROW_COUNTERS_AT + 8 * i)
    }

    /// Adds `n` to counter `i` of `row`.
    fn add(&self, row: usize, i: usize, n: u64) {
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
    fn init_header(&self, euid: u32) {
        let words32 = [
            (H_HEADER_BYTES, HEADER_BYTES as u32),
            (H_ROW_BYTES, ROW_BYTES as u32),
            (H_SLOTS, SLOTS as u32),
            (H_COUNTERS, COUNTERS as u32),
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
    fn header_ok(&self, euid: u32) -> bool {
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
            && u32_is(H_COUNTERS, COUNTERS as u32)
            && u32_is(H_EUID, euid)
            && self
                .u64_at(H_FILE_BYTES)
                .is_some_and(|w| w.load(Ordering::Relaxed) == FILE_BYTES as u64)
    }

    /// A row for `pid` (its slot, or the unattributed row): see the module
    /// docs. `start` tells this process from an earlier one with its pid.
    fn claim(&self, pid: u32, start: u64) -> usize {
        self.claim_from(first_slot(pid), pid, start)
    }

    fn claim_from(&self, first: usize, pid: u32, start: u64) -> usize {
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
    fn take(&self, row: usize, me: u32, start: u64) -> bool {
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
    fn reusable(&self, row: usize, seen: u32) -> bool {
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
    fn sum(&self) -> [u64; COUNTERS] {
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
fn first_slot(pid: u32) -> usize {
    (pid.wrapping_mul(0x9E37_79B9) >> 24) as usize % SLOTS
}

/// Whether process `pid` exists (`kill(pid, 0)` is not ESRCH).
fn alive(pid: u32) -> bool {
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
fn proc_start(pid: u32) -> Option<u64> {
    let path = format!("/proc/{pid}/stat");
    let fd = rustix::fs::open(
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
    parse_start(&buf[..len])
}

/// Field 22 of a `/proc/PID/stat` line (the command name, field 2, may hold
/// spaces and parentheses: fields are counted after its last ')').
fn parse_start(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Checks and maps an existing counters file.
fn attach(fd: &OwnedFd, euid: u32) -> Result<Table, TableProblem> {
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
fn file_size(st: &Stat) -> i64 {
    st.st_size as i64
}

fn map(fd: &OwnedFd) -> Result<Table, Errno> {
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
    Ok(Table { base })
}

/// Creates `name` whole: prepared under a private name (0600, sized, its
/// blocks allocated so that a full filesystem cannot fault us later, header
/// written version last), then renamed into place unless another process
/// got there first (`Ok(None)`: open theirs).
fn create(dir: &Dir, name: &str) -> Result<Option<Table>, TableProblem> {
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

fn prepare(fd: &OwnedFd, euid: u32) -> Result<Table, TableProblem> {
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
    path: PathBuf,
    problem: TableProblem,
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

/// Opens the counters now, not at the first count: a server calls this as
/// it listens, so that workers it forks after dropping privileges (nginx's
/// `user nobody;`) count into the mapping they inherit, where they could
/// not open the directory themselves.
pub(crate) fn open_early() {
    let _ = global_table();
}

/// The process-global table: opened on first need, at most one attempt a
/// second while it cannot be.
fn global_table() -> Option<&'static Table> {
    static TABLE: Publish<Table> = Publish::new();
    static NEXT_TRY_MS: AtomicU64 = AtomicU64::new(0);
    if let Some(table) = TABLE.get() {
        return Some(table);
    }
    let now = now_ms();
    let next = NEXT_TRY_MS.load(Ordering::Relaxed);
    if now < next
        || NEXT_TRY_MS
            .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return None;
    }
    let dir = safedir::get().ok()?;
    match Table::open(&dir) {
        Ok(table) => Some(TABLE.publish(table).0),
        Err(e) => {
            safedir::warn_once(format_args!("{e}"));
            None
        }
    }
}

/// Milliseconds on a monotonic clock (since this process first asked).
fn now_ms() -> u64 {
    static BASE: Publish<Instant> = Publish::new();
    let base = match BASE.get() {
        Some(base) => base,
        None => BASE.publish(Instant::now()).0,
    };
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Where a table comes from (the global one, or a test's).
type TableSource<'a> = &'a dyn Fn() -> Option<&'static Table>;

/// Counts of one process (a forked child gets a new one).
struct Process {
    pid: u32,
    /// The fork generation at which `pid` was last seen to be ours.
    generation: AtomicU32,
    /// Our row in the table (a slot, or `UNATTRIBUTED`); 0: none yet.
    place: AtomicU32,
    /// A thread is claiming the row.
    claiming: AtomicBool,
    totals: [AtomicU64; COUNTERS],
    /// Counted while there was no row, not yet added to it.
    pending: [AtomicU64; COUNTERS],
}

impl Process {
    fn new(pid: u32, generation: u32) -> Process {
        Process {
            pid,
            generation: AtomicU32::new(generation),
            place: AtomicU32::new(0),
            claiming: AtomicBool::new(false),
            totals: [const { AtomicU64::new(0) }; COUNTERS],
            pending: [const { AtomicU64::new(0) }; COUNTERS],
        }
    }

    fn count(&self, i: usize, table: TableSource<'_>) {
        let (Some(total), Some(pending)) = (self.totals.get(i), self.pending.get(i)) else {
            return;
        };
        total.fetch_add(1, Ordering::Relaxed);
        let place = self.place.load(Ordering::Acquire);
        if place != 0 {
            if let Some(t) = table() {
                t.add(place as usize, i, 1);
                return;
            }
        }
        // SYNC POINT: the pending add, the loads of `place` below and the
        // claimer's store of `place` and its draining swaps are SeqCst. If
        // this thread's load of `place` misses the claimer's store, the
        // store (and the drain after it) comes after our add in the single
        // order, so the drain takes it; if it sees the store, we drain.
        pending.fetch_add(1, Ordering::SeqCst);
        self.settle(table);
    }

    /// Claims a row if there is none (one thread at a time; the others go
    /// on), then moves pending counts into it.
    #[cold]
    fn settle(&self, table: TableSource<'_>) {
        if self.place.load(Ordering::SeqCst) == 0 && !self.claiming.swap(true, Ordering::Acquire) {
            if self.place.load(Ordering::SeqCst) == 0 {
                if let Some(t) = table() {
                    let row = t.claim(self.pid, proc_start(self.pid).unwrap_or(0));
                    self.place.store(row as u32, Ordering::SeqCst);
                }
            }
            self.claiming.store(false, Ordering::Release);
        }
        let place = self.place.load(Ordering::SeqCst);
        if place == 0 {
            return; // kept in memory until a table can be had
        }
        let Some(t) = table() else {
            return;
        };
        for (i, pending) in self.pending.iter().enumerate() {
            let n = pending.swap(0, Ordering::SeqCst);
            if n != 0 {
                t.add(place as usize, i, n);
            }
        }
    }

    fn totals(&self) -> [u64; COUNTERS] {
        std::array::from_fn(|i| self.totals[i].load(Ordering::Relaxed))
    }
}

/// The current process's `Process`, replaced when a fork made this a new
/// process. Superseded ones are leaked (one per fork that counted).
struct Counters {
    current: AtomicPtr<Process>,
    generation: fn() -> u32,
}

impl Counters {
    const fn new(generation: fn() -> u32) -> Counters {
        Counters {
            current: AtomicPtr::new(std::ptr::null_mut()),
            generation,
        }
    }

    fn count(&self, i: usize, table: TableSource<'_>) {
        self.process().count(i, table);
    }

    fn process(&self) -> &'static Process {
        let generation = (self.generation)();
        let mut cur = self.current.load(Ordering::Acquire);
        loop {
            // SAFETY: non-null pointers in `current` come from Box::into_raw
            // below and are never freed.
            let known = unsafe { cur.as_ref() };
            if let Some(p) = known {
                if p.generation.load(Ordering::Relaxed) == generation {
                    return p;
                }
            }
            // A fork happened since: in the parent `p` is still ours.
            let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
            if let Some(p) = known.filter(|p| p.pid == pid) {
                p.generation.store(generation, Ordering::Relaxed);
                return p;
            }
            let fresh = Box::into_raw(Box::new(Process::new(pid, generation)));
            match self
                .current
                .compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: published now, never freed (see above).
                Ok(_) => return unsafe { &*fresh },
                Err(now) => {
                    // SAFETY: `fresh` was never shared; reclaim it.
                    drop(unsafe { Box::from_raw(fresh) });
                    cur = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn euid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    fn my_pid() -> u32 {
        std::process::id()
    }

    fn dir(name: &str) -> (PathBuf, Dir) {
        let base = std::env::temp_dir().join(format!("shmnet-stats-{name}-{}", my_pid()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = Dir::at(&base, euid()).unwrap();
        (base, dir)
    }

    fn leak(table: Table) -> &'static Table {
        Box::leak(Box::new(table))
    }

    fn counters(row: usize, t: &Table) -> Vec<u64> {
        (0..COUNTERS)
            .map(|i| t.counter(row, i).unwrap().load(Ordering::Relaxed))
            .collect()
    }

    fn pid_of(row: usize, t: &Table) -> u32 {
        t.pid_word(row).unwrap().load(Ordering::Relaxed)
    }

    /// A pid that is not running (a child that exited and was reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
        pid
    }

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(FILE_BYTES, 33088);
        assert_eq!(Table::row_at(RETIRED), 64);
        assert_eq!(Table::row_at(UNATTRIBUTED), 192);
        assert_eq!(Table::row_at(FIRST_SLOT), 320);
        assert_eq!(Table::row_at(FIRST_SLOT + 255), 320 + 255 * 128);
        assert_eq!(
            NAMES[Outcome::Dir as usize],
            "fallback_dir",
            "connect outcomes come first, in enum order"
        );
        assert_eq!(NAMES[DROPPED_HANDSHAKES], "dropped_handshakes");
    }

    #[test]
    fn created_once_then_shared() {
        let (base, dir) = dir("create");
        let a = Table::open(&dir).unwrap();
        let b = Table::open(&dir).unwrap();
        let path = base.join(format!("stats-{}", euid()));
        let meta = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.len(), meta.mode() & 0o7777),
            (FILE_BYTES as u64, 0o600)
        );
        let names: Vec<_> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            [format!("stats-{}", euid())],
            "no temporary file left"
        );
        a.add(UNATTRIBUTED, 3, 5);
        assert_eq!(b.sum()[3], 5);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"SHMNETC1");
        assert_eq!(
            u32::from_ne_bytes(bytes[8..12].try_into().unwrap()),
            VERSION
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn foreign_files_are_refused() {
        let (base, dir) = dir("foreign");
        let path = base.join(format!("stats-{}", euid()));
        let problem = |dir: &Dir| Table::open(dir).err().map(|e| e.problem);
        // An old-format text file.
        std::fs::write(&path, "shm=1 fallback_no_listener=0\n").unwrap();
        assert_eq!(problem(&dir), Some(TableProblem::Size(29)));
        // The right size, no header.
        std::fs::write(&path, vec![0u8; FILE_BYTES]).unwrap();
        assert_eq!(problem(&dir), Some(TableProblem::Header));
        // Writable by others.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            problem(&dir),
            Some(TableProblem::NotOurs { mode: 0o666, .. })
        ));
        // A symlink planted in the directory is not followed.
        std::fs::remove_file(&path).unwrap();
        let target = base.with_extension("target");
        std::fs::write(&target, "x").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = Table::open(&dir).unwrap_err();
        assert_eq!(e.problem, TableProblem::Symlink);
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
        std::fs::remove_file(&path).unwrap();
        if euid() == 0 {
            let t = Table::open(&dir).unwrap();
            drop(t);
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert!(matches!(
                problem(&dir),
                Some(TableProblem::NotOurs { uid: 65534, .. })
            ));
        }
        let _ = std::fs::remove_file(&target);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn dead_process_slot_is_folded_into_retired() {
        let (base, dir) = dir("dead");
        let t = Table::open(&dir).unwrap();
        let dead = dead_pid();
        let row = t.claim_from(7, dead, 123);
        assert_eq!(row, FIRST_SLOT + 7);
        t.add(row, 0, 5);
        t.add(row, ACCEPTED_SHM, 2);
        let before = t.sum();
        let me = my_pid();
        let mine = t.claim_from(7, me, proc_start(me).unwrap());
        assert_eq!(mine, row, "the dead process's slot is reused");
        assert_eq!(pid_of(row, &t), me);
        assert_eq!(counters(row, &t), vec![0; COUNTERS]);
        assert_eq!(counters(RETIRED, &t)[0], 5);
        assert_eq!(counters(RETIRED, &t)[ACCEPTED_SHM], 2);
        assert_eq!(t.sum(), before, "nothing lost, nothing doubled");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn live_slots_are_kept_and_reused_pids_are_not() {
        let (base, dir) = dir("live");
        let t = Table::open(&dir).unwrap();
        let me = my_pid();
        let my_start = proc_start(me).unwrap();
        // Our own live process owns slot 20: the next claim goes past it.
        assert_eq!(t.claim_from(20, me, my_start), FIRST_SLOT + 20);
        t.add(FIRST_SLOT + 20, 1, 4);
        assert_eq!(t.claim_from(20, me, my_start), FIRST_SLOT + 21);
        // A slot recorded for our pid with another start time belonged to
        // an earlier process with this pid: it is taken over.
        let row = t.claim_from(40, me, my_start.wrapping_add(1));
        t.add(row, 2, 9);
        assert_eq!(t.claim_from(40, me, my_start), row);
        assert_eq!(counters(RETIRED, &t)[2], 9);
        assert_eq!(counters(FIRST_SLOT + 20, &t)[1], 4);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn full_probe_window_counts_unattributed() {
        let (base, dir) = dir("full");
        let t = Table::open(&dir).unwrap();
        let me = my_pid();
        let my_start = proc_start(me).unwrap();
        for k in 0..PROBES {
            assert_eq!(
                t.claim_from(250, me, my_start),
                FIRST_SLOT + (250 + k) % SLOTS
            );
        }
        assert_eq!(t.claim_from(250, me, my_start), UNATTRIBUTED);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn scribbled_pid_words_never_break_a_claim() {
        let (base, dir) = dir("scribble");
        let t = Table::open(&dir).unwrap();
        let words = [u32::MAX, CLAIMING, 1, PID_MASK, 0x7FFF_0000, CLAIMING | 1];
        for (k, w) in words.iter().enumerate() {
            t.pid_word(FIRST_SLOT + 100 + k)
                .unwrap()
                .store(*w, Ordering::Relaxed);
            t.start_word(FIRST_SLOT + 100 + k)
                .unwrap()
                .store(u64::MAX, Ordering::Relaxed);
        }
        let row = t.claim_from(100, my_pid(), 1);
        assert!((FIRST_SLOT..ROWS).contains(&row) || row == UNATTRIBUTED);
        // Dead (u32::MAX: pid 2^31-1 with the claim bit) is taken first.
        assert_eq!(row, FIRST_SLOT + 100);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn exact_under_concurrency() {
        let (base, dir) = dir("exact");
        let t = leak(Table::open(&dir).unwrap());
        let c = Counters::new(|| 0);
        let start = std::sync::Barrier::new(32);
        std::thread::scope(|s| {
            for _ in 0..32 {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..1000 {
                        c.count(0, &|| Some(t));
                    }
                });
            }
        });
        assert_eq!(c.process().totals()[0], 32_000);
        assert_eq!(t.sum()[0], 32_000);
        let row = c.process().place.load(Ordering::Relaxed) as usize;
        assert!(row >= FIRST_SLOT);
        assert_eq!(pid_of(row, t), my_pid());
        assert_eq!(counters(row, t)[0], 32_000);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn counts_wait_in_memory_until_the_file_is_there() {
        let (base, dir) = dir("pending");
        let c = Counters::new(|| 0);
        for _ in 0..5 {
            c.count(ACCEPTED_SHM, &|| None);
        }
        assert_eq!(c.process().totals()[ACCEPTED_SHM], 5);
        let t = leak(Table::open(&dir).unwrap());
        c.count(ACCEPTED_SHM, &|| Some(t));
        assert_eq!(t.sum()[ACCEPTED_SHM], 6);
        c.count(COUNTERS, &|| Some(t)); // out of range: ignored
        assert_eq!(t.sum().iter().sum::<u64>(), 6);
        let _ = std::fs::remove_dir_all(&base);
    }

    static GENERATION: AtomicU32 = AtomicU32::new(0);

    #[test]
    fn forked_child_counts_in_its_own_slot() {
        let (base, dir) = dir("fork");
        let t = leak(Table::open(&dir).unwrap());
        let c = Counters::new(|| GENERATION.load(Ordering::Relaxed));
        for _ in 0..3 {
            c.count(0, &|| Some(t));
        }
        let parent_row = c.process().place.load(Ordering::Relaxed) as usize;
        // SAFETY: the child only does atomics, small allocations and raw
        // syscalls, then _exits.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            GENERATION.fetch_add(1, Ordering::Relaxed); // the atfork handler's job
            c.count(0, &|| Some(t));
            c.count(0, &|| Some(t));
            // SAFETY: ends the forked child without running the parent's
            // destructors or test harness.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert_eq!(status, 0);
        assert_eq!(counters(parent_row, t)[0], 3);
        let child_rows: Vec<usize> = (FIRST_SLOT..ROWS)
            .filter(|&r| pid_of(r, t) == child as u32)
            .collect();
        assert_eq!(child_rows.len(), 1);
        assert_eq!(counters(child_rows[0], t)[0], 2);
        assert_eq!(t.sum()[0], 5);
        // The parent, after the fork (generation bumped there too), keeps
        // its slot.
        GENERATION.fetch_add(1, Ordering::Relaxed);
        c.count(0, &|| Some(t));
        assert_eq!(counters(parent_row, t)[0], 4);
        GENERATION.fetch_sub(1, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn parses_proc_stat() {
        let line = b"42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1 2 3";
        assert_eq!(parse_start(line), Some(987654));
        assert_eq!(parse_start(b"42 (x) S 1"), None);
        assert!(proc_start(my_pid()).is_some_and(|s| s > 0));
    }

    #[test]
    fn a_count_costs_nanoseconds() {
        let (base, dir) = dir("cost");
        let t = leak(Table::open(&dir).unwrap());
        let c = Counters::new(|| 0);
        c.count(0, &|| Some(t));
        let n = 1_000_000u32;
        let began = Instant::now();
        for _ in 0..n {
            c.count(0, &|| Some(t));
        }
        let per = began.elapsed() / n;
        eprintln!("one count: {per:?}");
        assert!(per.as_nanos() < 1000, "{per:?} per count");
        let _ = std::fs::remove_dir_all(&base);
    }
}
