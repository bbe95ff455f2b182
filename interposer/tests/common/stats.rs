//! Reading the counters files of docs/counters.md (`SHMNET_DIR/stats-<euid>`),
//! independently of the library's own code: a second implementation of
//! the documented layout.

use std::collections::HashMap;
use std::path::Path;

/// The counters, in file order.
pub const NAMES: [&str; 14] = [
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

const MAGIC: &[u8; 8] = b"SHMNETC1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
const ROW_BYTES: usize = 128;
const SLOTS: usize = 256;
const ROWS: usize = 2 + SLOTS;
const FILE_BYTES: usize = HEADER_BYTES + ROWS * ROW_BYTES;
const COUNTERS_AT: usize = 16;
const PID_MASK: u32 = 0x7fff_ffff;

/// One row of a counters file: slot owner (0 for the retired and
/// unattributed rows and for free slots) and its counters.
struct Row {
    pid: u32,
    counters: [u64; NAMES.len()],
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}

/// The rows of one file (retired, unattributed, then the slots); panics
/// when the file is not in the documented format.
fn rows(path: &Path, b: &[u8]) -> Vec<Row> {
    let header = b.len() == FILE_BYTES
        && &b[0..8] == MAGIC
        && u32_at(b, 8) == VERSION
        && u32_at(b, 12) as usize == HEADER_BYTES
        && u32_at(b, 16) as usize == ROW_BYTES
        && u32_at(b, 20) as usize == SLOTS
        // 9 in new files (what libraries before fallback_no_gateway
        // require), up to a row's 14 words: docs/counters.md.
        && (9..=14).contains(&(u32_at(b, 24) as usize))
        && u64_at(b, 32) as usize == FILE_BYTES;
    assert!(
        header,
        "{} is not a counters file of docs/counters.md ({} bytes)",
        path.display(),
        b.len()
    );
    (0..ROWS)
        .map(|r| {
            let at = HEADER_BYTES + r * ROW_BYTES;
            Row {
                pid: u32_at(b, at) & PID_MASK,
                counters: std::array::from_fn(|i| u64_at(b, at + COUNTERS_AT + 8 * i)),
            }
        })
        .collect()
}

/// Every `stats-<uid>` file in `dir`, as rows.
fn files(dir: &Path) -> Vec<Vec<Row>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_counters = name
            .strip_prefix("stats-")
            .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|c| c.is_ascii_digit()));
        if !is_counters {
            continue;
        }
        if let Ok(bytes) = std::fs::read(e.path()) {
            all.push(rows(&e.path(), &bytes));
        }
    }
    all
}

fn named(counters: &[u64; NAMES.len()]) -> HashMap<String, u64> {
    NAMES
        .iter()
        .zip(counters)
        .map(|(n, c)| (n.to_string(), *c))
        .collect()
}

/// Totals over every counters file in `dir` (every slot, the retired and
/// the unattributed rows), by name; empty when there is none.
pub fn read(dir: &Path) -> HashMap<String, u64> {
    let files = files(dir);
    if files.is_empty() {
        return HashMap::new();
    }
    let mut sum = [0u64; NAMES.len()];
    for row in files.iter().flatten() {
        for (s, c) in sum.iter_mut().zip(row.counters) {
            *s += c;
        }
    }
    named(&sum)
}

/// The claimed slots of every counters file in `dir`: (pid, counters).
pub fn read_slots(dir: &Path) -> Vec<(u32, HashMap<String, u64>)> {
    files(dir)
        .iter()
        .flat_map(|rows| rows.iter().skip(2))
        .filter(|row| row.pid != 0)
        .map(|row| (row.pid, named(&row.counters)))
        .collect()
}
