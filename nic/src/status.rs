//! The status file: one JSON document per NIC, rewritten about once a
//! second by the daemon (write + rename: readers never see half of it) and
//! removed when it exits. `shmnet nic --status` reads it.

use crate::counters::Snapshot;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The NIC as a whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The device name in every namespace.
    pub name: String,
    /// The daemon's pid.
    pub pid: u32,
    /// The devices' MTU.
    pub mtu: u32,
    /// Bytes of the shared region.
    pub region_bytes: u64,
    /// One entry per partition, in command-line order.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The namespace as given on the command line.
    pub netns: String,
    /// Its addresses, CIDR notation.
    pub addresses: Vec<String>,
    /// "up", or "gone" once its namespace went away.
    pub state: String,
    /// Its counters.
    pub counters: Snapshot,
}

/// Where `shmnet nic --name NAME` publishes its status by default:
/// `$SHMNET_DIR`, else `$XDG_RUNTIME_DIR/shmnet`, else `/tmp/shmnet-<euid>`
/// (the directory `shmnet ss` reads), file `nic-NAME.json`.
pub fn default_path(name: &str) -> PathBuf {
    let dir = match (
        std::env::var_os("SHMNET_DIR"),
        std::env::var_os("XDG_RUNTIME_DIR"),
    ) {
        (Some(d), _) if !d.is_empty() => PathBuf::from(d),
        (_, Some(x)) if !x.is_empty() => PathBuf::from(x).join("shmnet"),
        // SAFETY: geteuid cannot fail.
        _ => PathBuf::from(format!("/tmp/shmnet-{}", unsafe { libc::geteuid() })),
    };
    dir.join(format!("nic-{name}.json"))
}

/// Writes `s` to `path` atomically (a temporary file renamed over it).
pub fn write(path: &Path, s: &Status) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)?;
    std::fs::rename(&tmp, path)
}

/// Reads a status file.
pub fn read(path: &Path) -> io::Result<Status> {
    let b = std::fs::read(path)?;
    serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Whether the daemon that wrote `s` still runs (its pid is alive and is a
/// `shmnet`: a stale file's pid may have been reused).
pub fn writer_alive(s: &Status) -> bool {
    std::fs::read_to_string(format!("/proc/{}/comm", s.pid))
        .is_ok_and(|c| c.trim_end() == "shmnet" || c.starts_with("nic-"))
}
