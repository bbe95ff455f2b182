//! One claimed entry of a status table: one process's use of one socket.
//! Its two counters are resolved once, at the claim, so that the data path
//! adds to a word it already holds.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::table::*;

/// What a socket publishes, fixed when it is made.
#[derive(Debug, Clone, Copy)]
pub(crate) enum What {
    Connection {
        local: SocketAddr,
        peer: SocketAddr,
        ring_bytes: u32,
        /// The segment's identity (`E_IDENTITY`).
        segment: u64,
    },
    Listener {
        local: SocketAddr,
        tcp_ino: u64,
        rendezvous: [u64; 2],
    },
}

/// A claimed entry (freed by `free`, in the process that claimed it).
#[derive(Debug)]
pub(super) struct Entry {
    table: &'static Table,
    off: usize,
    sent: &'static AtomicU64,
    received: &'static AtomicU64,
}

/// Where the next claim starts looking (the lowest entry maybe free).
static HINT: AtomicUsize = AtomicUsize::new(0);

/// The table (its address) a claim last found with every entry taken, or
/// 0: a server past the table's 1,022 entries scanned them all at each new
/// connection (27.5 k instructions, 41% of its cost per connection at
/// 1,000 connections). Its own frees and reclaims clear it; entries
/// another process sharing the file frees (a forked worker's) are found by
/// the one claim in `RELOOK` that looks anyway. A table made later (a
/// forked child's own file) has another address.
static FULL: AtomicUsize = AtomicUsize::new(0);

/// While the table is `FULL`, one claim in this many looks.
const RELOOK: usize = 64;

/// Claims that found the table `FULL`.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

fn not_full() {
    if FULL.load(Ordering::Relaxed) != 0 {
        FULL.store(0, Ordering::Relaxed);
    }
}

/// Frees the entries of `table` in use by processes that are gone (not
/// `me`); how many. The state and pid words are swapped together (one
/// 64-bit word), so an entry freed and claimed again by a live process
/// meanwhile is left alone. Each process is looked at once (a full file is
/// mostly a few live workers' entries: a look per entry was thousands of
/// system calls).
fn reclaim(table: &Table, me: u32) -> usize {
    let mut freed = 0;
    let mut seen_procs: Vec<(u32, u64, bool)> = Vec::new();
    for i in 0..ENTRIES {
        let off = Table::entry_at(i);
        let (Some(word), Some(start)) = (table.u64_at(off + E_STATE), table.u64_at(off + E_START))
        else {
            continue;
        };
        let seen = word.load(Ordering::Acquire);
        let (state, owner) = state_and_pid(seen);
        if state == FREE || state == FILLING || owner == me || owner == 0 {
            continue;
        }
        let start = start.load(Ordering::Relaxed);
        let live = match seen_procs
            .iter()
            .find(|(p, s, _)| *p == owner && *s == start)
        {
            Some(&(_, _, live)) => live,
            None => {
                let live = is_live(owner, start);
                if seen_procs.len() < 4096 {
                    seen_procs.push((owner, start, live));
                }
                live
            }
        };
        if live {
            continue;
        }
        let free = 0; // FREE, pid 0
        if word
            .compare_exchange(seen, free, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            freed += 1;
        }
    }
    freed
}

/// Free entries a claim that may make system calls keeps for those that
/// may not (a forked child's first data call looks for no dead process:
/// a fork-per-connection server's children that left with `_exit` fill the
/// file with entries only a look at /proc can free).
const RESERVE: usize = ENTRIES / 4;

/// With fewer than `RESERVE` entries free, frees those of processes that
/// are gone (looked at no more than every 100 ms).
fn keep_reserve(table: &Table, me: u32) {
    static LOOK: crate::platform::shared_file::Retry = crate::platform::shared_file::Retry::new();
    if !LOOK.due_every(100) {
        return;
    }
    let free = (0..ENTRIES)
        .filter(|&i| {
            table
                .u32_at(Table::entry_at(i) + E_STATE)
                .is_some_and(|s| s.load(Ordering::Relaxed) == FREE)
        })
        .count();
    if free < RESERVE && reclaim(table, me) > 0 {
        HINT.store(0, Ordering::Relaxed);
        not_full();
    }
}

const _: () = assert!(
    E_STATE == 0 && E_PID == 4 && ENTRY_BYTES.is_multiple_of(8) && HEADER_BYTES.is_multiple_of(8)
);

/// The entry's state (`E_STATE`) and pid (`E_PID`) from the 64-bit word
/// at `E_STATE`.
fn state_and_pid(word: u64) -> (u32, u32) {
    let b = word.to_ne_bytes();
    let state = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let pid = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
    (state, pid)
}

impl Entry {
    /// Claims a free entry of `table` for the process `(pid, start)` and
    /// publishes `what` in it: counters from `seed` (sent, received: the
    /// ring's totals, for a socket in use before), flags `flags`.
    /// `may_look`: when full, entries of processes that are gone may be
    /// looked for (system calls: never on a data call).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claim(
        table: &'static Table,
        pid: u32,
        start: u64,
        what: &What,
        fd: u32,
        flags: u32,
        seed: (u64, u64),
        may_look: bool,
    ) -> Option<Entry> {
        if let Some(e) = Self::claim_free(table, pid, start, what, fd, flags, seed) {
            if may_look {
                keep_reserve(table, pid);
            }
            return Some(e);
        }
        // Full: entries of processes that are gone (killed, or left with
        // `_exit` while claimed in an ancestor's file) are freed, at most
        // once a second.
        static RECLAIM: crate::platform::shared_file::Retry =
            crate::platform::shared_file::Retry::new();
        if may_look && RECLAIM.due() && reclaim(table, pid) > 0 {
            HINT.store(0, Ordering::Relaxed);
            not_full();
            if let Some(e) = Self::claim_free(table, pid, start, what, fd, flags, seed) {
                return Some(e);
            }
        }
        None
    }

    fn claim_free(
        table: &'static Table,
        pid: u32,
        start: u64,
        what: &What,
        fd: u32,
        flags: u32,
        seed: (u64, u64),
    ) -> Option<Entry> {
        let id = core::ptr::from_ref(table) as usize;
        if FULL.load(Ordering::Relaxed) == id
            && SKIPPED.fetch_add(1, Ordering::Relaxed) % RELOOK != RELOOK - 1
        {
            return None;
        }
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
            not_full();
            let (Some(sent), Some(received)) =
                (table.u64_at(off + E_SENT), table.u64_at(off + E_RECEIVED))
            else {
                state.store(FREE, Ordering::Release);
                return None; // (offsets are ours: never)
            };
            let e = Entry {
                table,
                off,
                sent,
                received,
            };
            e.fill(pid, start, what, fd, flags, seed);
            return Some(e);
        }
        FULL.store(id, Ordering::Relaxed);
        None
    }

    fn fill(&self, pid: u32, start: u64, what: &What, fd: u32, flags: u32, seed: (u64, u64)) {
        self.store32(E_PID, pid);
        self.store64(E_START, start);
        self.store32(E_FD, fd);
        for at in [E_IDENTITY, E_RDV_INO, E_RDV2_INO] {
            self.store64(at, 0);
        }
        self.store32(E_RING_BYTES, 0);
        self.sent.store(seed.0, Ordering::Relaxed);
        self.received.store(seed.1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.store64(E_OPENED_S, now);
        self.store32(E_FLAGS, flags);
        let state = match *what {
            What::Connection {
                local,
                peer,
                ring_bytes,
                segment,
            } => {
                self.fill_addr(E_LOCAL, local);
                self.fill_addr(E_PEER, peer);
                self.store32(E_RING_BYTES, ring_bytes);
                self.store64(E_IDENTITY, segment);
                CONNECTION
            }
            What::Listener {
                local,
                tcp_ino,
                rendezvous,
            } => {
                self.fill_addr(E_LOCAL, local);
                self.store64(E_TCP_INO, tcp_ino);
                self.store64(E_RDV_INO, rendezvous[0]);
                self.store64(E_RDV2_INO, rendezvous[1]);
                LISTENER
            }
        };
        if let Some(w) = self.table.u32_at(self.off + E_STATE) {
            w.store(state, Ordering::Release);
        }
    }

    /// `n` more bytes written into our ring (data path, under the send
    /// lock: a load and a store of a line only this process writes).
    #[inline(always)]
    pub(super) fn sent(&self, n: usize) {
        self.sent.store(
            self.sent.load(Ordering::Relaxed).wrapping_add(n as u64),
            Ordering::Relaxed,
        );
    }

    /// `n` more bytes read from the peer's ring (under the receive lock).
    #[inline(always)]
    pub(super) fn received(&self, n: usize) {
        self.received.store(
            self.received.load(Ordering::Relaxed).wrapping_add(n as u64),
            Ordering::Relaxed,
        );
    }

    /// Sets the sent counter (a resync, under the send lock).
    pub(super) fn set_sent(&self, v: u64) {
        self.sent.store(v, Ordering::Relaxed);
    }

    pub(super) fn set_received(&self, v: u64) {
        self.received.store(v, Ordering::Relaxed);
    }

    pub(super) fn set_fd(&self, fd: u32) {
        if let Some(w) = self.u32(E_FD) {
            let _ = w.compare_exchange(u32::MAX, fd, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The fd shown becomes `new` if it was `old`.
    pub(super) fn replace_fd(&self, old: u32, new: u32) {
        if let Some(w) = self.u32(E_FD) {
            let _ = w.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub(super) fn set_flags(&self, bits: u32) {
        if let Some(w) = self.u32(E_FLAGS) {
            if w.load(Ordering::Relaxed) & bits != bits {
                w.fetch_or(bits, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn clear_flags(&self, bits: u32) {
        if let Some(w) = self.u32(E_FLAGS) {
            if w.load(Ordering::Relaxed) & bits != 0 {
                w.fetch_and(!bits, Ordering::Relaxed);
            }
        }
    }

    /// The socket is gone from the process that claimed the entry.
    pub(super) fn free(&self) {
        if let Some(w) = self.u32(E_STATE) {
            w.store(FREE, Ordering::Release);
        }
        let i = (self.off - HEADER_BYTES) / ENTRY_BYTES;
        HINT.fetch_min(i, Ordering::Relaxed);
        not_full();
    }

    fn u32(&self, off: usize) -> Option<&AtomicU32> {
        self.table.u32_at(self.off + off)
    }

    fn store32(&self, off: usize, v: u32) {
        if let Some(w) = self.u32(off) {
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
}
