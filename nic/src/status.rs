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
/// The daemon runs as root and its default directory may be in /tmp: the
/// directory must be a real one (not a symlink) of ours or root's that no
/// one else may write, unless sticky; the temporary file is made new,
/// never through a symlink (review s28 #3: a planted symlink had root
/// overwrite a file of its choice). rename(2) replaces a symlink at
/// `path` itself, never its target.
pub fn write(path: &Path, s: &Status) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    safe_dir(path)?;
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp); // our own leftover (unlink: never a target)
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(s)?)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Makes sure the directory of `path` is one the daemon may write in as
/// root: a real directory (not a symlink; made 0700 if missing) of ours or
/// root's that no one else may write, unless sticky (/tmp-like: then only
/// files made new, O_NOFOLLOW, are written there).
pub fn safe_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let m = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let shared = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
    if !m.is_dir() || (m.uid() != me && m.uid() != 0) || shared {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: not a directory of uid {me} or root that others cannot write \
                 (owner {}, mode {:o}); give --status-file elsewhere",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Reads a status file.
pub fn read(path: &Path) -> io::Result<Status> {
    let b = std::fs::read(path)?;
    serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Whether the daemon that wrote `s` still runs (its pid is alive and is a
/// `shmnet`: a stale file's pid may have been reused; not a zombie: a
/// daemon killed a moment ago and not yet reaped has ended).
pub fn writer_alive(s: &Status) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", s.pid))
        .is_ok_and(|c| c.trim_end() == "shmnet" || c.starts_with("nic-"));
    comm && !zombie(s.pid)
}

/// Whether process `pid` has ended and waits to be reaped (state Z or X in
/// /proc/PID/stat, after the parenthesised name, which may hold anything).
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
        st.rfind(')')
            .and_then(|i| st[i + 1..].trim_start().chars().next())
            .is_none_or(|c| c == 'Z' || c == 'X')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn status() -> Status {
        Status {
            name: "t".into(),
            pid: std::process::id(),
            mtu: 1500,
            region_bytes: 0,
            partitions: Vec::new(),
        }
    }

    /// Review s28 #3: a directory others may write (not sticky) is refused;
    /// a symlink planted at the temporary name is never written through.
    #[test]
    fn never_written_through_a_shared_directory_or_a_symlink() {
        let base = std::env::temp_dir().join(format!("nic-status-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write(&open.join("nic-t.json"), &status()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");

        let ours = base.join("ours");
        let path = ours.join("nic-t.json");
        write(&path, &status()).unwrap();
        assert_eq!(read(&path).unwrap().name, "t");
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write(&path, &status()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());

        let link = base.join("link");
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        assert!(write(&link.join("nic-t.json"), &status()).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
