//! Socket status for `shmnet ss`: each process publishes its listeners and
//! emulated connections in a small shared file, `SHMNET_DIR/status-<pid>-
//! <start>` (layout: docs/status.md), which a reader copies with `read(2)`
//! while the process runs. Nothing about it is ever asked of the process.
//!
//! An entry is claimed (a compare-and-swap on its state word) when a
//! listener or connection is made, and freed when it goes; in between the
//! data calls store the connection's byte totals into it (one relaxed store
//! to a line only this process writes: no system call on the data path),
//! and the slow paths set flags (half-closed, end of stream seen, asleep
//! waiting). A forked child keeps the file it inherited (it may have
//! dropped the privileges to open the directory): each entry carries the
//! pid and start time of the process it belongs to, and the reader shows
//! only entries of live processes. Before an exec the process hides its
//! entries (the new program image publishes what it adopts in a file of
//! its own); at exit the creator removes the file when no other process
//! uses it; the reader removes the files of processes that are gone.
//!
//! The file is written by processes of one user and read by tools that
//! treat it as hostile: nothing here reads back more than its own words.
#![deny(unsafe_code)]

mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::platform::safedir;
use crate::platform::shared_file::Retry;
use crate::platform::sys::Publish;
pub(crate) use table::*;

/// Entry flags (the word at `E_FLAGS`).
pub(crate) const CONNECTOR: u32 = 1;
pub(crate) const SHUT_WR: u32 = 2;
pub(crate) const SHUT_RD: u32 = 4;
pub(crate) const PEER_EOF: u32 = 8;
pub(crate) const WAIT_READ: u32 = 16;
pub(crate) const WAIT_WRITE: u32 = 32;
/// The process is about to exec: the reader skips the entry.
pub(crate) const EXECING: u32 = 64;

/// One published listener or connection; freed on drop by the process
/// that claimed it (a forked child's copy leaves it alone).
pub(crate) struct Entry {
    table: &'static Table,
    off: usize,
    pid: u32,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status::Entry({}@{})", self.off, self.pid)
    }
}

/// A connection carried by shared memory: claims its entry.
pub(crate) fn connection(
    local: SocketAddr,
    peer: SocketAddr,
    connector: bool,
    ring_bytes: usize,
) -> Option<Entry> {
    let e = claim()?;
    e.fill_addr(E_LOCAL, local);
    e.fill_addr(E_PEER, peer);
    e.store32(E_FLAGS, if connector { CONNECTOR } else { 0 });
    e.store32(E_RING_BYTES, u32::try_from(ring_bytes).unwrap_or(u32::MAX));
    e.publish(CONNECTION);
    Some(e)
}

/// A listener: its address, and the inodes of the sockets its accept
/// queue is in (the kernel TCP listener, up to two rendezvous), from which
/// the reader learns the backlog.
pub(crate) fn listener(local: SocketAddr, tcp_ino: u64, rendezvous: [u64; 2]) -> Option<Entry> {
    let e = claim()?;
    e.fill_addr(E_LOCAL, local);
    e.store64(E_TCP_INO, tcp_ino);
    e.store64(E_RDV_INO, rendezvous[0]);
    e.store64(E_RDV2_INO, rendezvous[1]);
    e.publish(LISTENER);
    Some(e)
}

impl Entry {
    /// The application's fd number (the first one it got).
    pub(crate) fn set_fd(&self, fd: i32) {
        if let Some(w) = self.table.u32_at(self.off + E_FD) {
            let _ = w.compare_exchange(u32::MAX, fd as u32, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// `n` more bytes written into our ring (data path, under the send
    /// lock: a load and a store of our own line; nothing of the ring is
    /// read, whose lines the peer's process is writing).
    #[inline]
    pub(crate) fn sent(&self, n: usize) {
        if self.mine() {
            self.bump(E_SENT, n);
        }
    }

    /// `n` more bytes read from the peer's ring (data path, under the
    /// receive lock).
    #[inline]
    pub(crate) fn received(&self, n: usize) {
        if self.mine() {
            self.bump(E_RECEIVED, n);
        }
    }

    /// Adds to a counter only this process's one lock-holder writes: no
    /// read-modify-write instruction needed.
    #[inline]
    fn bump(&self, off: usize, n: usize) {
        if let Some(w) = self.table.u64_at(self.off + off) {
            w.store(
                w.load(Ordering::Relaxed).wrapping_add(n as u64),
                Ordering::Relaxed,
            );
        }
    }

    /// Whether the entry is listed under this process now (a forked copy
    /// of a connection whose maker freed the entry must not write into
    /// whatever claimed it since).
    fn listed_here(&self) -> bool {
        self.table
            .u32_at(self.off + E_PID)
            .is_some_and(|w| w.load(Ordering::Relaxed) == my_pid())
    }

    pub(crate) fn set_flags(&self, bits: u32) {
        if !self.listed_here() {
            return;
        }
        if let Some(w) = self.table.u32_at(self.off + E_FLAGS) {
            if w.load(Ordering::Relaxed) & bits != bits {
                w.fetch_or(bits, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn clear_flags(&self, bits: u32) {
        if !self.listed_here() {
            return;
        }
        if let Some(w) = self.table.u32_at(self.off + E_FLAGS) {
            w.fetch_and(!bits, Ordering::Relaxed);
        }
    }

    /// A listener used by a forked child (a server's worker accepting, a
    /// daemon whose parent exited): the entry is listed under this process
    /// from now on, and freed by it.
    pub(crate) fn adopt(&self) {
        let me = my_pid();
        if me == 0 {
            return;
        }
        let Some(w) = self.table.u32_at(self.off + E_PID) else {
            return;
        };
        // Only an entry still in use and still listed under the process
        // that claimed it: one freed (and perhaps claimed by another
        // socket since), or taken over by another child already, is left
        // alone (a narrower check than an identity of the claim, which the
        // layout has no room for: docs/status.md).
        let in_use = self
            .table
            .u32_at(self.off + E_STATE)
            .is_some_and(|st| st.load(Ordering::Acquire) != FREE);
        let listed = w.load(Ordering::Relaxed);
        if in_use && listed != me && listed == self.pid {
            self.store64(E_START, my_start());
            w.store(me, Ordering::Relaxed);
        }
    }

    /// Whether this process claimed the entry (not a forked child's copy).
    #[inline]
    fn mine(&self) -> bool {
        my_pid() == self.pid
    }

    fn store32(&self, off: usize, v: u32) {
        if let Some(w) = self.table.u32_at(self.off + off) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn store64(&self, off: usize, v: u64) {
        if let Some(w) = self.table.u64_at(self.off + off) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn fill_addr(&self, at: usize, addr: SocketAddr) {
        let (family, scope, ip) = match addr {
            SocketAddr::V4(a) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                (libc::AF_INET as u32, 0, ip)
            }
            SocketAddr::V6(a) => (libc::AF_INET6 as u32, a.scope_id(), a.ip().octets()),
        };
        self.store32(at, family | u32::from(addr.port()) << 16);
        self.store32(at + 4, scope);
        for (k, chunk) in ip.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.store64(at + 8 + 8 * k, u64::from_ne_bytes(w));
        }
    }

    fn publish(&self, state: u32) {
        if let Some(w) = self.table.u32_at(self.off + E_STATE) {
            w.store(state, Ordering::Release);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Freed by the process it is listed under (its claimer, or the
        // child that adopted it), not by a forked copy.
        let listed = self
            .table
            .u32_at(self.off + E_PID)
            .map(|w| w.load(Ordering::Relaxed));
        if listed != Some(my_pid()) {
            return;
        }
        if let Some(w) = self.table.u32_at(self.off + E_STATE) {
            w.store(FREE, Ordering::Release);
        }
        let i = (self.off - HEADER_BYTES) / ENTRY_BYTES;
        HINT.fetch_min(i, Ordering::Relaxed);
    }
}

/// Where the next claim starts looking (the lowest entry maybe free).
static HINT: AtomicUsize = AtomicUsize::new(0);

fn claim() -> Option<Entry> {
    if crate::platform::sandbox::active() {
        return None; // new sockets fail there anyway (`sandbox`)
    }
    let table = global_table()?;
    let pid = my_pid();
    let start = my_start();
    let from = HINT.load(Ordering::Relaxed).min(ENTRIES - 1);
    for k in 0..ENTRIES {
        let i = (from + k) % ENTRIES;
        let off = Table::entry_at(i);
        let Some(state) = table.u32_at(off + E_STATE) else {
            continue;
        };
        if state.load(Ordering::Relaxed) != FREE
            || state
                .compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        let _ = HINT.compare_exchange(from, i + 1, Ordering::Relaxed, Ordering::Relaxed);
        let e = Entry { table, off, pid };
        e.store32(E_PID, pid);
        e.store64(E_START, start);
        e.store32(E_FD, u32::MAX);
        e.store32(E_FLAGS, 0);
        for at in [E_SENT, E_RECEIVED, E_TCP_INO, E_RDV_INO, E_RDV2_INO] {
            e.store64(at, 0);
        }
        e.store32(E_RING_BYTES, 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        e.store64(E_OPENED_S, now);
        return Some(e);
    }
    if let Some(w) = table.u32_at(H_OVERFLOW) {
        w.fetch_add(1, Ordering::Relaxed);
    }
    None
}

/// Before this process image is replaced by exec: hide its entries (the
/// next image publishes the connections it adopts itself). A failed exec
/// leaves them hidden.
pub(crate) fn before_exec() {
    let Some(table) = TABLE.get() else {
        return;
    };
    let pid = my_pid();
    for i in 0..ENTRIES {
        let off = Table::entry_at(i);
        let (Some(state), Some(owner)) = (table.u32_at(off + E_STATE), table.u32_at(off + E_PID))
        else {
            continue;
        };
        if state.load(Ordering::Acquire) != FREE && owner.load(Ordering::Relaxed) == pid {
            if let Some(f) = table.u32_at(off + E_FLAGS) {
                f.fetch_or(EXECING, Ordering::Relaxed);
            }
        }
    }
}

/// At exit: the creator removes the file when no entry is in use (a socket
/// it still has may be a forked child's too: a daemon's parent exits with
/// the listener the child goes on with); `shmnet ss` removes the rest.
pub(crate) fn at_exit() {
    let Some(table) = TABLE.get() else {
        return;
    };
    if crate::platform::sandbox::active() {
        return; // unlink may be outside the filter
    }
    if table.creator != my_pid() {
        return;
    }
    table::sweep(&table.dir, pid_namespace(), SWEEP_MAX);
    // Kept while an entry of another process (a forked child) is in use;
    // our own die with us (a server that exits with sockets open).
    let me = my_pid();
    for i in 0..ENTRIES {
        let off = Table::entry_at(i);
        let in_use = table
            .u32_at(off + E_STATE)
            .is_some_and(|s| s.load(Ordering::Acquire) != FREE);
        let ours = table
            .u32_at(off + E_PID)
            .is_some_and(|p| p.load(Ordering::Relaxed) == me);
        if in_use && !ours {
            return;
        }
    }
    let _ = table.dir.unlink(&table.name);
}

static TABLE: Publish<Table> = Publish::new();

/// Status files a sweep looks at (a directory of thousands of killed
/// processes' files is emptied over several sweeps, or by `shmnet ss`).
const SWEEP_MAX: usize = 64;

/// The process's table: made on first need (one attempt a second while it
/// cannot be).
fn global_table() -> Option<&'static Table> {
    static RETRY: Retry = Retry::new();
    if let Some(table) = TABLE.get() {
        return Some(table);
    }
    if !RETRY.due() {
        return None;
    }
    let dir = safedir::get().ok()?;
    let pidns = pid_namespace();
    table::sweep(&dir, pidns, SWEEP_MAX);
    match table::create(dir, my_pid(), my_start(), pidns) {
        Ok(t) => Some(TABLE.publish(t).0),
        Err(e) => {
            log!(debug, "status file not made: {e}");
            None
        }
    }
}

/// `(fork generation + 1) << 32 | pid`, as last looked up.
static PID_KEY: AtomicU64 = AtomicU64::new(0);
/// Likewise for the start time: the key it was read under, then the value.
static START_KEY: AtomicU64 = AtomicU64::new(0);
static START: AtomicU64 = AtomicU64::new(0);

/// In the atfork handlers, after the generation advanced: the pid is looked
/// up now, before the program may sandbox itself (seccomp), not on the
/// data path later.
pub(crate) fn after_fork() {
    let _ = my_pid();
}

/// This process's pid: a system call only once per fork generation (in
/// the atfork handlers); 0 (nothing is ours) where a seccomp filter may
/// not allow the call.
#[inline]
fn my_pid() -> u32 {
    let generation = u64::from(crate::platform::fork::generation()) + 1;
    let key = PID_KEY.load(Ordering::Relaxed);
    if key >> 32 == generation {
        return key as u32;
    }
    if crate::platform::sandbox::active() {
        return 0;
    }
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    PID_KEY.store(generation << 32 | u64::from(pid), Ordering::Relaxed);
    pid
}

/// This process's start time (`/proc/self/stat` field 22), read once per
/// process.
fn my_start() -> u64 {
    let pid = my_pid();
    let key = PID_KEY.load(Ordering::Relaxed);
    if START_KEY.load(Ordering::Acquire) == key {
        return START.load(Ordering::Relaxed);
    }
    let start = crate::platform::stats::proc_start(pid).unwrap_or(0);
    START.store(start, Ordering::Relaxed);
    START_KEY.store(key, Ordering::Release);
    start
}

/// The inode of our pid namespace: a reader in another one cannot judge
/// our pids, and leaves the file alone.
fn pid_namespace() -> u64 {
    #[allow(clippy::unnecessary_cast)] // st_ino's type differs between architectures
    rustix::fs::stat("/proc/self/ns/pid").map_or(0, |st| st.st_ino as u64)
}

#[cfg(test)]
mod tests;
