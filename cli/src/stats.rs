//! The connection counters, `SHMNET_DIR/stats-<euid>` (docs/counters.md):
//! totals over every row (all processes since the file was made), and the
//! rows of the processes alive now (each since it started). Hostile
//! input: exact size, header checked, only fixed offsets read.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::status::{u32_at, u64_at};

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
/// What each counter counts, for people (docs/counters.md).
pub(crate) const MEANINGS: [&str; COUNTERS] = [
    "connects carried by shared memory",
    "kernel TCP: no shared-memory listener there",
    "kernel TCP: listener refused (gone, backlog full, handshake)",
    "kernel TCP: no resources for a segment",
    "kernel TCP: users' policy (SHMNET_ALLOW)",
    "kernel TCP: SHMNET_DIR refused (unsafe)",
    "listeners: accepted over shared memory",
    "listeners: refused by policy",
    "listeners: dropped handshakes",
    "no gateway for a SHMNET_REMOTE range: kernel TCP (refused if emulated)",
    "UDP datagrams sent through shared memory",
    "UDP datagrams sent through the kernel (no preloaded receiver there)",
    "UDP datagrams dropped at the send (receiver full)",
    "UDP destinations reached through shared memory",
];
/// Counters 1..=5: connects that went to kernel TCP.
pub(crate) const FALLBACKS: std::ops::RangeInclusive<usize> = 1..=5;
/// Connects to a remote range without a gateway: kernel TCP in the
/// default mode, ECONNREFUSED in the emulated one.
pub(crate) const NO_GATEWAY: usize = 9;
/// The UDP datagrams: through shared memory, through the kernel, dropped.
pub(crate) const UDP_SHM: usize = 10;
pub(crate) const UDP_KERNEL: usize = 11;
pub(crate) const UDP_DROPPED: usize = 12;
const FILE_BYTES: usize = 33088;
const ROWS: usize = 258;

pub(crate) type Counts = [u64; COUNTERS];

/// Adds `b` into `a` (counts from files: hostile, so saturating).
pub(crate) fn add(a: &mut Counts, b: &Counts) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

/// Every counters file in a directory.
#[derive(Default)]
pub(crate) struct Counters {
    /// Counters files read.
    pub(crate) files: usize,
    /// Every row of every file: all processes since the files were made.
    pub(crate) totals: Counts,
    /// The live processes' rows (a process whose image exec'd may have
    /// two: summed), by pid.
    pub(crate) live: BTreeMap<u32, Counts>,
}

/// Every `stats-<euid>` file in `dir` that reads as a counters file of
/// that uid, owned by it, and that uid is the caller's or root's (the
/// status files' rule: in a shared directory another user's file could
/// claim anything).
pub(crate) fn read_all(dir: &Path) -> Counters {
    read_of(dir, &[crate::dir::euid(), 0])
}

fn read_of(dir: &Path, owners: &[u32]) -> Counters {
    let mut out = Counters::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(uid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("stats-"))
            .and_then(|u| u.parse::<u32>().ok())
        else {
            continue;
        };
        if !owners.contains(&uid) {
            continue;
        }
        if read(&ent.path(), uid, &mut out).is_some() {
            out.files += 1;
        }
    }
    out
}

fn read(path: &Path, uid: u32, out: &mut Counters) -> Option<()> {
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() != FILE_BYTES as u64 || meta.uid() != uid {
        return None;
    }
    let mut b = vec![0u8; FILE_BYTES];
    f.read_exact(&mut b).ok()?;
    if &b[..8] != b"SHMNETC1"
        || u32_at(&b, 8) != 1
        || u32_at(&b, 16) != 128
        // 9 in files made before fallback_no_gateway (its word was a
        // reserved zero), up to the 14 words of a row after us.
        || !(9..=14).contains(&u32_at(&b, 24))
        || u32_at(&b, 28) != uid
    {
        return None;
    }
    for row in 0..ROWS {
        let at = 64 + 128 * row;
        let vals: Counts = std::array::from_fn(|k| u64_at(&b, at + 16 + 8 * k));
        add(&mut out.totals, &vals);
        let pid = u32_at(&b, at) & 0x7fff_ffff;
        let start = u64_at(&b, at + 8);
        // A slot names its owner by pid and start time: a pid reused by a
        // later process does not take the earlier one's counts.
        // and runs as the file's owner (or the file is root's: workers
        // that switched user count into the mapping they inherited).
        let live = crate::status::proc_facts(pid)
            .is_some_and(|(s, euid)| s == start && (euid == uid || uid == 0));
        if row >= 2 && pid != 0 && live {
            add(out.live.entry(pid).or_default(), &vals);
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counters file of `uid` with the given slots (pid, start, shm).
    fn file(uid: u32, slots: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; FILE_BYTES];
        b[..8].copy_from_slice(b"SHMNETC1");
        for (at, v) in [(8, 1), (12, 64), (16, 128), (20, 256), (24, 10), (28, uid)] {
            b[at..at + 4].copy_from_slice(&u32::to_ne_bytes(v));
        }
        b[64 + 16..64 + 24].copy_from_slice(&5u64.to_ne_bytes()); // retired: shm 5
        for (i, &(pid, start, shm)) in slots.iter().enumerate() {
            let at = 320 + 128 * i;
            b[at..at + 4].copy_from_slice(&pid.to_ne_bytes());
            b[at + 8..at + 16].copy_from_slice(&start.to_ne_bytes());
            b[at + 16..at + 24].copy_from_slice(&shm.to_ne_bytes());
        }
        b
    }

    #[test]
    fn live_rows_are_named_by_pid_and_start_time() {
        let me = std::process::id();
        let (start, _) = crate::status::proc_facts(me).unwrap();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let dir = std::env::temp_dir().join(format!("shmnet-stats-test-{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Two slots of this process (an exec), one of a pid reused since.
        let slots = [(me, start, 2), (me, start, 3), (me, start + 1, 100)];
        std::fs::write(dir.join(format!("stats-{uid}")), file(uid, &slots)).unwrap();
        // Another uid's name on our file: not read.
        std::fs::write(
            dir.join(format!("stats-{}", uid + 1)),
            file(uid + 1, &slots),
        )
        .unwrap();
        let c = read_of(&dir, &[uid, uid + 1]);
        assert_eq!(c.files, 1);
        assert_eq!(c.totals[0], 5 + 2 + 3 + 100);
        assert_eq!(c.live.len(), 1);
        assert_eq!(c.live[&me][0], 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
