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
    /// Kernel TCP: the users' policy.
    Policy,
    /// Kernel TCP: SHMNET_DIR unusable.
    Dir,
}
pub(crate) fn refused_policy() {}
pub(crate) fn dropped_handshake() {}

const NAMES: [&str; 7] = [
    "shm",
    "fallback_no_listener",
    "fallback_refused",
    "fallback_resources",
    "fallback_policy",
    "fallback_dir",
    "accepted_shm",
];
static COUNTS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// A dual listener accepted a shared-memory connection.
pub(crate) fn accepted_shm() {
    bump(6);
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
    let path = config
        .dir_path()
        .join(format!("stats-{}", std::process::id()));
    if crate::safedir::get().is_ok() {
        static PRUNED: std::sync::Once = std::sync::Once::new();
        PRUNED.call_once(|| prune(&config.dir_path()));
        let _ = std::fs::write(path, line + "\n");
    }
}

/// Every process that connects leaves its counters behind (they are read
/// after it exits); the first count of each process removes those of
/// processes that are gone and were last written over ten minutes ago, so
/// the directory does not grow without bound.
fn prune(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("stats-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH));
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < old);
        if gone && stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
