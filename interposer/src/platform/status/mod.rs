//! Socket status for `shmnet ss`: each process publishes its listeners and
//! emulated connections in a small shared file, `SHMNET_DIR/status-<pid>-
//! <start>` (layout: docs/status.md), which a reader copies with `read(2)`
//! while the process runs. Nothing about it is ever asked of the process.
//!
//! An entry is one process's use of one socket: claimed (a compare-and-swap
//! on its state word) when the process makes a listener or connection, or
//! first uses one it inherited across fork (accept, a read or write, a
//! shutdown: a forked worker, a fork-per-connection server's child, a
//! daemon whose parent exited), and freed when the socket's last reference
//! in that process goes. In between the data calls add the bytes they
//! copied to its counters (a relaxed load and store of a line only this
//! process writes: no system call on the data path; `published`), and the
//! slow paths set flags (half-closed, end of stream seen, asleep waiting).
//! An entry carries the socket's identity (a connection's segment, a
//! listener's inodes) and its process's pid and start time; the reader
//! shows only entries of live processes. A forked child claims in the file
//! it inherited, and makes one of its own where it makes a socket if that
//! file's creator is gone or exiting or the file is full (never on a data
//! call: a claim there makes no system call, since a seccomp filter the
//! library did not see may forbid it). Before an exec the process hides
//! its entries (the new program image publishes what it adopts in a file
//! of its own, with the ring's totals, and removes the earlier image's; a
//! failed exec shows them again); at exit the creator removes its file
//! when no other process uses it; the reader removes the files of
//! processes that are gone.
//!
//! The file is written by processes of one user and read by tools that
//! treat it as hostile: nothing here reads back more than its own words.
// The data path's calls compiled out (the benchmark baseline) leave the
// counting methods unused.
#![cfg_attr(shmnet_no_status_counters, allow(dead_code))]
#![deny(unsafe_code)]

mod entry;
mod published;
mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use entry::{Entry, What};
pub(crate) use published::Published;

use crate::platform::safedir;
use crate::platform::shared_file::Retry;
pub(crate) use table::*;

/// The process's claim of an entry for `what` (None: no table, or full).
/// `files`: the caller may make system calls a sandbox could forbid (it
/// makes a socket, or accepts one: it does such work anyway); a data call
/// (send, recv, a wait, a flag) may not — a program may have installed a
/// seccomp filter with the raw seccomp() call, which the library does not
/// see, since it last did — so there the claim is only loads and stores in
/// a file already mapped (the pid and start time were read in the fork
/// handler), or nothing.
///
/// A forked child claims in the file it inherited while its creator lives
/// and is not exiting (a fork-per-connection server's children leave no
/// file of their own); once the creator exits (it sets `H_CLOSING`, then
/// looks for other processes' entries, and keeps its file if it sees one),
/// a child that finds the flag after its claim makes a file of its own.
/// So does a child whose inherited file is full (pre-forked workers that
/// together hold more sockets than one file has entries).
fn claim(
    what: &What,
    fd: u32,
    flags: u32,
    totals: impl Fn() -> (u64, u64),
    files: bool,
) -> Option<Entry> {
    // New sockets fail under a filter anyway (`sandbox`); a claim on a data
    // call makes no system call (the pid and start time the fork handler
    // read), so a sandboxed child that uses a connection it was handed is
    // still listed (since the library sees filters installed through
    // syscall(SYS_seccomp) too, decision 58).
    if crate::platform::sandbox::active() && files {
        return None;
    }
    let pid = my_pid();
    if pid == 0 {
        return None;
    }
    let start = my_start(files)?;
    let table = if files { table_here()? } else { TABLE.get()? };
    let Some(e) = Entry::claim(table, pid, start, what, fd, flags, totals(), files) else {
        // Full. A forked child makes a file of its own where it may.
        let own = (files && table.creator != pid)
            .then(own_table)
            .flatten()
            .filter(|own| !std::ptr::eq(*own, table));
        let e = own.and_then(|own| Entry::claim(own, pid, start, what, fd, flags, totals(), files));
        if e.is_none() {
            table.count_overflow();
        }
        return e;
    };
    if table.creator == pid || !files {
        return Some(e);
    }
    // Our claim (a locked compare-exchange) is before this load; the
    // creator's flag store is before its scan of the entries: one of us
    // sees the other.
    std::sync::atomic::fence(Ordering::SeqCst);
    if !table.closing() && creator_runs(table) {
        return Some(e);
    }
    match own_table() {
        Some(own) => {
            e.free();
            let again = Entry::claim(own, pid, start, what, fd, flags, totals(), files);
            if again.is_none() {
                own.count_overflow();
            }
            again
        }
        None => Some(e),
    }
}

/// Whether the creator of `t` still runs, looked at after our claim. A
/// creator that left without marking its file closing (`_exit`, killed)
/// may have had its file removed by `shmnet ss` or a sweep that saw no
/// live entry in it before our claim (a daemon's first accept after its
/// parent's `_exit`): then we use a file of our own. A file looked at
/// after our claim shows it, and is kept. Our parent runs (a process's
/// children are handed to a reaper when it exits, before it is a zombie:
/// one system call); another creator is looked up, a zombie counted as
/// gone, as `shmnet ss` counts it.
fn creator_runs(t: &table::Table) -> bool {
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    t.creator == parent || crate::platform::stats::running(t.creator, t.creator_start())
}

/// A connection carried by shared memory, made by this process (`seed`:
/// the ring's totals, for one adopted after exec); `segment` identifies it
/// (the inode of its shared memory).
pub(crate) fn connection(
    local: SocketAddr,
    peer: SocketAddr,
    connector: bool,
    ring_bytes: usize,
    segment: u64,
    seed: (u64, u64),
) -> Published {
    let what = What::Connection {
        local,
        peer,
        ring_bytes: u32::try_from(ring_bytes).unwrap_or(u32::MAX),
        segment,
    };
    Published::new(what, if connector { CONNECTOR } else { 0 }, seed)
}

/// A listener: its address, and the inodes of the sockets its accept
/// queue is in (the kernel TCP listener, up to two rendezvous), from which
/// the reader learns the backlog.
pub(crate) fn listener(local: SocketAddr, tcp_ino: u64, rendezvous: [u64; 2]) -> Published {
    let what = What::Listener {
        local,
        tcp_ino,
        rendezvous,
    };
    Published::new(what, 0, (0, 0))
}

/// Before this process image is replaced by exec: hide its entries (the
/// next image publishes the connections it adopts itself, in a file of its
/// own, and removes this image's file then: `table::remove_earlier_images`).
/// The file stays meanwhile: a failed exec shows them again
/// (`exec_failed`), and forked children go on using it.
pub(crate) fn before_exec() {
    set_execing(true);
}

/// The exec family returned (it failed): the entries hidden before are
/// this image's again.
pub(crate) fn exec_failed() {
    set_execing(false);
}

fn set_execing(on: bool) {
    let pid = my_pid();
    // A vfork child runs in its parent's memory, with its parent's pid
    // cached (no fork handler ran): the entries are not its own.
    if !crate::platform::sandbox::active()
        && rustix::process::getpid().as_raw_nonzero().get() as u32 != pid
    {
        return;
    }
    for table in [TABLE.get(), INHERITED.get()].into_iter().flatten() {
        for_own_entries(table, pid, |_, flags| {
            if let Some(f) = flags {
                if on {
                    f.fetch_or(EXECING, Ordering::Relaxed);
                } else {
                    f.fetch_and(!EXECING, Ordering::Relaxed);
                }
            }
        });
    }
}

/// At exit: a forked child writing into an ancestor's file frees its
/// entries there; the creator marks its file closing and removes it
/// unless an entry of another live process is in use (a forked child
/// that claimed in it; entries of processes that are gone do not keep
/// it); its own entries die with it. `shmnet ss` removes the rest.
pub(crate) fn at_exit() {
    let Some(table) = TABLE.get() else {
        return;
    };
    let me = my_pid();
    if let Some(old) = INHERITED.get() {
        for_own_entries(old, me, |state, _| state.store(FREE, Ordering::Release));
    }
    if table.creator != me {
        for_own_entries(table, me, |state, _| state.store(FREE, Ordering::Release));
        return;
    }
    if crate::platform::sandbox::active() {
        return; // unlink may be outside the filter
    }
    table::sweep(&table.dir, pid_namespace(), SWEEP_MAX);
    release(table, me);
}

/// The creator leaves its file (exit, exec): marks it closing and removes
/// it unless an entry of another live process is in use.
fn release(table: &Table, me: u32) {
    table.set_closing();
    std::sync::atomic::fence(Ordering::SeqCst);
    for i in 0..ENTRIES {
        let off = Table::entry_at(i);
        let in_use = table
            .u32_at(off + E_STATE)
            .is_some_and(|s| s.load(Ordering::Acquire) != FREE);
        let owner = table
            .u32_at(off + E_PID)
            .map_or(0, |p| p.load(Ordering::Relaxed));
        let start = table
            .u64_at(off + E_START)
            .map_or(0, |p| p.load(Ordering::Relaxed));
        if in_use && owner != me && (owner == 0 || table::is_live(owner, start)) {
            return; // (0: being filled by a claim right now)
        }
    }
    let _ = table.dir.unlink(&table.name);
}

/// Calls `f` with the state and flags words of each entry in use of
/// process `pid` in `table`.
fn for_own_entries(table: &Table, pid: u32, mut f: impl FnMut(&AtomicU32, Option<&AtomicU32>)) {
    for i in 0..ENTRIES {
        let off = Table::entry_at(i);
        let (Some(state), Some(owner)) = (table.u32_at(off + E_STATE), table.u32_at(off + E_PID))
        else {
            continue;
        };
        let s = state.load(Ordering::Acquire);
        if s != FREE && s != FILLING && owner.load(Ordering::Relaxed) == pid {
            f(state, table.u32_at(off + E_FLAGS));
        }
    }
}

/// Before this process changes its user (setuid and kin): a forked child
/// still writing into an ancestor's file whose creator is gone or exiting
/// makes its own now, while it may still create files in the directory.
/// (nginx: the first process makes the listener and exits after forking
/// the daemon, removing its file; the daemon's workers switch to nobody,
/// who may not write root's directory, so they would go on writing into
/// that removed file, unseen.) While the creator lives, its file is kept
/// for as long as the child's entries are in use.
pub(crate) fn before_user_change() {
    safedir::user_changing();
    if crate::platform::sandbox::active() {
        return;
    }
    if let Some(t) = TABLE.get().filter(|t| t.creator != my_pid()) {
        if t.closing() || !table::is_live(t.creator, t.creator_start()) {
            let _ = own_table();
        }
    }
}

/// The table this process writes into (`table_here`), and the one it
/// inherited across fork before it had its own.
static TABLE: TableCell = TableCell::new();
static INHERITED: TableCell = TableCell::new();
/// The pid that last tried to make a table: a forked child tries at once.
static TRIED_BY: AtomicU32 = AtomicU32::new(0);

/// Status files a sweep looks at (a directory of thousands of killed
/// processes' files is emptied over several sweeps, or by `shmnet ss`).
const SWEEP_MAX: usize = 64;

/// The table this process claims in: its own, or a forked child's
/// inherited one while its creator is not exiting (`claim`), or else one
/// made now (`own_table`); the inherited one if that cannot be made.
fn table_here() -> Option<&'static Table> {
    match TABLE.get() {
        Some(t) if t.creator == my_pid() => Some(t),
        // (A creator killed set no flag; its file goes in the next sweep.)
        Some(t) if !t.closing() && crate::platform::stats::alive(t.creator) => Some(t),
        _ => own_table().or(TABLE.get()),
    }
}

/// The process's own table, made on first need (never on a data call:
/// `claim`); one attempt a second
/// while it cannot be made. A child that switched user uses the
/// inherited table (a worker that dropped the privileges to write the
/// directory still has its parent's file mapped).
fn own_table() -> Option<&'static Table> {
    static RETRY: Retry = Retry::new();
    let me = my_pid();
    let current = TABLE.get();
    if let Some(t) = current.filter(|t| t.creator == me) {
        return Some(t);
    }
    let first = TRIED_BY.swap(me, Ordering::Relaxed) != me;
    if !first && !RETRY.due() {
        return None;
    }
    let dir = match current {
        // A forked child: in the directory its parent opened, if it is
        // still the user that opened it (a worker that switched user goes
        // on writing into its parent's file, without a failed attempt).
        Some(t) => (rustix::process::geteuid().as_raw() == t.dir.euid()).then(|| t.dir.clone()),
        None => safedir::get().ok(),
    };
    let made = dir.and_then(|dir| {
        let pidns = pid_namespace();
        let start = my_start(true).unwrap_or(0);
        if current.is_none() {
            // (Not in a forked child: its family's first file swept, and
            // the files of this process's images before exec.)
            table::remove_earlier_images(&dir, me, start);
            table::sweep(&dir, pidns, SWEEP_MAX);
        }
        table::create(dir, me, start, pidns)
            .map_err(|e| log!(debug, "status file not made: {e}"))
            .ok()
    })?;
    let t: &'static Table = Box::leak(Box::new(made));
    if let Some(old) = current {
        INHERITED.set(old);
    }
    TABLE.set(t);
    Some(t)
}

/// `(fork generation + 1) << 32 | pid`, as last looked up.
static PID_KEY: AtomicU64 = AtomicU64::new(0);
/// The start time, and the pid it was read for (0: none yet).
static START_PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU64 = AtomicU64::new(0);

/// In the atfork handlers, after the generation advanced: the pid, and in
/// a child of a process that publishes, its start time, are looked up now,
/// before the program may sandbox itself (seccomp), not on a data call
/// later (a filter installed with the raw seccomp() call, which the
/// library does not see, may forbid the open of /proc/self/stat).
pub(crate) fn after_fork() {
    let _ = my_pid();
    if TABLE.get().is_some() {
        let _ = my_start(true);
    }
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
/// process (`after_fork` in a forked child); None if not known yet and
/// `read` is false (a data call opens nothing).
fn my_start(read: bool) -> Option<u64> {
    let pid = my_pid();
    if pid != 0 && START_PID.load(Ordering::Acquire) == pid {
        return Some(START.load(Ordering::Relaxed));
    }
    if !read || pid == 0 {
        return None;
    }
    let start = crate::platform::stats::proc_start(pid).unwrap_or(0);
    START.store(start, Ordering::Relaxed);
    START_PID.store(pid, Ordering::Release);
    Some(start)
}

/// The inode of our pid namespace: a reader in another one cannot judge
/// our pids, and leaves the file alone.
fn pid_namespace() -> u64 {
    #[allow(clippy::unnecessary_cast)] // st_ino's type differs between architectures
    rustix::fs::stat("/proc/self/ns/pid").map_or(0, |st| st.st_ino as u64)
}

#[cfg(test)]
mod tests;
