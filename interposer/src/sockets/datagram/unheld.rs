//! Destinations no preloaded socket holds, remembered by the process in
//! the default mode (issue 16, decision 63): a resolver makes a new UDP
//! socket for every lookup (c-ares, dnspython, a `getaddrinfo` of its own)
//! and sent each one through the naming of its socket (a name listener, a
//! receive segment, its memfd and eventfd: about 25 system calls) and
//! three failed dials, to learn again that its DNS server is a plain one.
//! While a destination is remembered here, a new socket's connect or send
//! to it stays the kernel's, as a plain program's: nothing is named,
//! nothing dialled.
//!
//! Only where a kernel route is never wrong: in the default mode a
//! preloaded receiver's kernel socket holds its port, so what the kernel
//! carries to one bound meanwhile reaches it (the emulated mode asks at
//! every send, decision 52). A destination is forgotten after the time a
//! long-lived socket's kernel route goes unasked (`routes`: 10 ms, then
//! twice as long each time the names are asked again and found free, up
//! to 1 s), and at once when this process names a socket on its port or
//! a dial reaches a holder.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use crate::platform::lock::Mutex;
use crate::transport::parking::monotonic_ms;

/// How many destinations are remembered (a process talks to few plain
/// UDP services); the one that expires first makes room.
const SLOTS: usize = 16;
const FIRST_MS: u64 = 10;
const MAX_MS: u64 = 1000;

#[derive(Clone, Copy)]
struct Entry {
    dest: SocketAddr,
    /// Remembered until then (`monotonic_ms`).
    until_ms: u64,
    /// How long it was remembered the last time.
    for_ms: u64,
}

/// Taken with `try_lock` only: a fork while another thread held it
/// leaves it held in the child, which then never remembers (and pays
/// the lookups, as before) instead of waiting forever. `forget` retries
/// (`locked`): one dropped kept a receiver this process just bound
/// behind the kernel for up to 1 s.
static TABLE: Mutex<[Option<Entry>; SLOTS]> = Mutex::new([None; SLOTS]);

/// `TABLE`, retried while another thread holds it for a moment (a few
/// loads and stores), given up after a while (a lock a fork left held).
fn locked() -> Option<crate::platform::lock::MutexGuard<'static, [Option<Entry>; SLOTS]>> {
    for i in 0..1000 {
        if let Some(t) = TABLE.try_lock() {
            return Some(t);
        }
        if i < 100 {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    None
}

/// A slot to evict when all are in use and none has expired: a
/// pseudo-random one (17 or more destinations in turn evicted, oldest
/// first, the very one needed next: none was ever found remembered).
fn victim(now: u64) -> usize {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let x = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed) ^ now;
    let x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((x ^ (x >> 29)) % SLOTS as u64) as usize
}

/// Whether `dest` was found held by nobody a moment ago.
pub(crate) fn unheld(dest: SocketAddr) -> bool {
    let Some(t) = TABLE.try_lock() else {
        return false;
    };
    let now = monotonic_ms();
    t.iter()
        .flatten()
        .any(|e| e.dest == dest && now < e.until_ms)
}

/// `dest`'s names were dialled and nobody holds any: remembered, twice
/// as long as the last time it was (`FIRST_MS` .. `MAX_MS`).
pub(crate) fn found_free(dest: SocketAddr) {
    let Some(mut t) = TABLE.try_lock() else {
        return;
    };
    let now = monotonic_ms();
    let mine = t.iter().position(|e| e.is_some_and(|e| e.dest == dest));
    let free = || t.iter().position(Option::is_none);
    let slot = mine.or_else(free).unwrap_or_else(|| victim(now));
    let for_ms = match t[slot] {
        Some(e) if e.dest == dest => (e.for_ms * 2).min(MAX_MS),
        _ => FIRST_MS,
    };
    t[slot] = Some(Entry {
        dest,
        until_ms: now + for_ms,
        for_ms,
    });
}

/// A holder was reached at `dest`, or a socket of this process was named
/// on `port`: forget what says nobody is there.
pub(crate) fn forget(dest: Option<SocketAddr>, port: u16) {
    let Some(mut t) = locked() else {
        return;
    };
    for e in t.iter_mut() {
        if e.is_some_and(|e| Some(e.dest) == dest || e.dest.port() == port) {
            *e = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the table is the process's.
    #[test]
    fn remembered_forgotten_and_the_newest_kept() {
        let a: SocketAddr = "127.0.0.77:53".parse().unwrap();
        let b: SocketAddr = "127.0.0.78:53".parse().unwrap();
        assert!(!unheld(a));
        found_free(a);
        assert!(unheld(a));
        assert!(!unheld(b));
        forget(None, 53);
        assert!(!unheld(a));
        found_free(a);
        forget(Some(a), 0);
        assert!(!unheld(a));
        for p in 0..(SLOTS as u16 + 4) {
            found_free(SocketAddr::new([127, 0, 1, 1].into(), 1000 + p));
        }
        let last = SocketAddr::new([127, 0, 1, 1].into(), 1000 + SLOTS as u16 + 3);
        assert!(unheld(last));
    }
}
