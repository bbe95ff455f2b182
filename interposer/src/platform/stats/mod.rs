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
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::platform::safedir::{self};
use crate::platform::shared_file::Retry;
use crate::platform::sys::Publish;

mod table;
pub(crate) use table::*;

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
    /// A connect to a remote range (`SHMNET_REMOTE`) found no gateway:
    /// kernel TCP in the default mode, ECONNREFUSED in the emulated one.
    NoGateway = 9,
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
    "fallback_no_gateway",
    "udp_shm",
    "udp_kernel",
    "udp_dropped",
    "udp_shm_routes",
];
const COUNTERS: usize = 14;
/// Files made before `fallback_no_gateway` name 9 counters; its word was
/// a reserved one (zero), so they are used as they are.
pub(crate) const COUNTERS_BEFORE_NO_GATEWAY: usize = 9;
/// What a new file's header says: 9 still, so that a library from before
/// `fallback_no_gateway` (which accepts exactly 9) shares the file; the
/// tenth word is used whatever the header says (decision 30).
pub(crate) const COUNTERS_IN_HEADER: usize = COUNTERS_BEFORE_NO_GATEWAY;
const ACCEPTED_SHM: usize = 6;
const UDP_SHM: usize = 10;
const UDP_KERNEL: usize = 11;
const UDP_DROPPED: usize = 12;
const UDP_SHM_ROUTES: usize = 13;
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

/// Datagrams sockets of ours sent (issue 16, decision 46): through shared
/// memory, through their kernel socket (a kernel route), and dropped at
/// the send (the receiver full). Tallied per socket and added here in
/// batches (`routes::Tally`), not one add per datagram.
pub(crate) fn udp_datagrams(shm: u64, kernel: u64, dropped: u64) {
    for (i, n) in [(UDP_SHM, shm), (UDP_KERNEL, kernel), (UDP_DROPPED, dropped)] {
        if n != 0 {
            COUNTERS_OF_PROCESS.count_n(i, n, &global_table);
        }
    }
}

/// A UDP sender's route to a destination attached to its receiver's
/// segment (shared memory from then on).
pub(crate) fn udp_shm_route() {
    bump(UDP_SHM_ROUTES);
}

/// This process's own totals since it started (or forked), in `NAMES`
/// order, whether or not the file could be written.
pub(crate) fn totals() -> [u64; COUNTERS] {
    COUNTERS_OF_PROCESS.process().totals()
}

static COUNTERS_OF_PROCESS: Counters = Counters::new(crate::platform::fork::generation);

fn bump(i: usize) {
    COUNTERS_OF_PROCESS.count(i, &global_table);
}

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
    static RETRY: Retry = Retry::new();
    if let Some(table) = TABLE.get() {
        return Some(table);
    }
    if !RETRY.due() {
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

    fn count(&self, i: usize, n: u64, table: TableSource<'_>) {
        let (Some(total), Some(pending)) = (self.totals.get(i), self.pending.get(i)) else {
            return;
        };
        total.fetch_add(n, Ordering::Relaxed);
        let place = self.place.load(Ordering::Acquire);
        if place != 0 {
            if let Some(t) = table() {
                t.add(place as usize, i, n);
                return;
            }
        }
        // SYNC POINT: the pending add, the loads of `place` below and the
        // claimer's store of `place` and its draining swaps are SeqCst. If
        // this thread's load of `place` misses the claimer's store, the
        // store (and the drain after it) comes after our add in the single
        // order, so the drain takes it; if it sees the store, we drain.
        pending.fetch_add(n, Ordering::SeqCst);
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
        self.process().count(i, 1, table);
    }

    fn count_n(&self, i: usize, n: u64, table: TableSource<'_>) {
        self.process().count(i, n, table);
    }

    // A leaked per-generation Box behind an atomic pointer (see below).
    #[allow(unsafe_code)]
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
mod tests;
