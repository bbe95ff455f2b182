//! How connections to partition addresses went: over shared memory, or to
//! kernel TCP and why (`SHMNET_FALLBACK=tcp`). Counted per process and
//! written to `SHMNET_DIR/stats-PID` after each change (a line of
//! `name=count` pairs), where tests and a status tool can read them after
//! the process is gone. Connecting is the slow path already; this adds one
//! small write to it.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// What became of one connect().
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Carried by shared memory.
    Shm,
    /// Kernel TCP: no shared-memory listener on the address.
    NoListener,
    /// Kernel TCP: a shared-memory listener was named but refused (gone,
    /// backlog full, handshake failed).
    Refused,
    /// Kernel TCP: no resources for a connection segment (memfd, mmap, fds).
    Resources,
}

const NAMES: [&str; 5] = [
    "shm",
    "fallback_no_listener",
    "fallback_refused",
    "fallback_resources",
    "accepted_shm",
];
static COUNTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// A dual listener accepted a shared-memory connection.
pub(crate) fn accepted_shm() {
    bump(4);
}

/// Counts `o` and rewrites this process's stats file.
pub(crate) fn count(o: Outcome) {
    bump(o as usize);
}

fn bump(i: usize) {
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
    let Some(config) = crate::config::get() else {
        return;
    };
    let line = NAMES
        .iter()
        .zip(&COUNTS)
        .map(|(n, c)| format!("{n}={}", c.load(Ordering::Relaxed)))
        .collect::<Vec<_>>()
        .join(" ");
    let path = config.dir.join(format!("stats-{}", std::process::id()));
    if crate::config::ensure_private_dir(&config.dir).is_ok() {
        let _ = std::fs::write(path, line + "\n");
    }
}
