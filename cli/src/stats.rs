//! The connection counters, `SHMNET_DIR/stats-<euid>` (docs/counters.md):
//! totals over every row, and each live process's row. Hostile input:
//! exact size, header checked, only fixed offsets read.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub(crate) const NAMES: [&str; 9] = [
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
const FILE_BYTES: usize = 33088;
const ROWS: usize = 258;

/// One counters file: its totals and the rows of the processes named in it.
pub(crate) struct Counters {
    pub(crate) totals: [u64; 9],
    pub(crate) by_pid: Vec<(u32, [u64; 9])>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4])))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8])))
}

/// Every `stats-*` file in `dir` that reads as a counters file.
pub(crate) fn read_all(dir: &Path) -> Vec<Counters> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for ent in rd.flatten() {
        if !ent
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("stats-"))
        {
            continue;
        }
        if let Some(c) = read(&ent.path()) {
            out.push(c);
        }
    }
    out
}

fn read(path: &Path) -> Option<Counters> {
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() != FILE_BYTES as u64 {
        return None;
    }
    let mut b = vec![0u8; FILE_BYTES];
    f.read_exact(&mut b).ok()?;
    if &b[..8] != b"SHMNETC1" || u32_at(&b, 8) != 1 || u32_at(&b, 16) != 128 || u32_at(&b, 24) != 9
    {
        return None;
    }
    let mut c = Counters {
        totals: [0; 9],
        by_pid: Vec::new(),
    };
    for row in 0..ROWS {
        let at = 64 + 128 * row;
        let vals: [u64; 9] = std::array::from_fn(|k| u64_at(&b, at + 16 + 8 * k));
        for (t, v) in c.totals.iter_mut().zip(vals) {
            *t = t.saturating_add(v);
        }
        let pid = u32_at(&b, at) & 0x7fff_ffff;
        if row >= 2 && pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            c.by_pid.push((pid, vals));
        }
    }
    Some(c)
}
