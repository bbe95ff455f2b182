//! Reading the status files the processes publish (docs/status.md). Each
//! file is hostile input: read whole with one bounded read, every field
//! range-checked, entries kept only for live processes of the file's owner;
//! the files of processes that are gone are removed.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

// The layout: one definition with the library (status-layout/).
use shmnet_status_layout as layout;
pub(crate) use shmnet_status_layout::{CONNECTOR, PEER_EOF, SHUT_WR, WAIT_READ, WAIT_WRITE};
use shmnet_status_layout::{EXECING, FILE_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Listener,
    Connection,
}

/// One published entry of a live process.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) pid: u32,
    pub(crate) fd: Option<i32>,
    pub(crate) flags: u32,
    pub(crate) local: SocketAddr,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    /// A connection's segment (the inode of its shared memory: the same at
    /// both ends, and in each process holding it); 0 for a listener, whose
    /// identity is its inodes.
    pub(crate) segment: u64,
    pub(crate) tcp_ino: u64,
    pub(crate) rendezvous_ino: [u64; 2],
    pub(crate) ring_bytes: u32,
    pub(crate) opened_s: u64,
    /// The owner of the file the entry was read from (pairing trusts only
    /// files of the same user, or root's).
    pub(crate) owner: u32,
}

/// Bounds on what a scan reads: in a shared directory another user can
/// make any number of files, each of 1022 well-formed entries.
const MAX_NAMES: usize = 65_536;
const MAX_FILES: usize = 4096;
const MAX_ENTRIES: usize = 65_536;

/// A file a scan did not take (whole or in part), and why.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Skipped {
    pub(crate) file: String,
    pub(crate) why: String,
}

/// What a scan of the directory found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) entries: Vec<Entry>,
    /// Files read, and removed (their processes are gone).
    pub(crate) files: usize,
    pub(crate) removed: usize,
    /// Entries that found no room in their file (not listed), counted
    /// since the file was made.
    pub(crate) overflow: u64,
    /// Files skipped: not status files, unreadable, another user's
    /// claims, another pid namespace, past the bounds.
    pub(crate) skipped: Vec<Skipped>,
}

impl Scan {
    fn skip(&mut self, file: &str, why: String) {
        self.skipped.push(Skipped {
            file: file.to_owned(),
            why,
        });
    }
}

/// Reads every `status-*` file in `dir` (within the bounds above: the
/// caller's own files first, then root's, then other users'), through a
/// descriptor of the directory itself (opened without following a
/// symlink): the names are looked up in that directory however its path
/// changes meanwhile, and a file of processes that are gone is removed
/// only if the directory is one the library would use (owned by us or
/// root, not writable by others unless sticky), only under a status
/// file's name, and only if the name still names the file that was read.
pub(crate) fn scan(dir: &Path) -> Result<Scan, String> {
    let cant = |e: std::io::Error| {
        format!(
            "cannot read {} ({e}): is it the directory the programs use? (--dir, SHMNET_DIR)",
            dir.display()
        )
    };
    let dirfd = Dir::open(dir).map_err(cant)?;
    let may_remove = dirfd.safe();
    let rd = std::fs::read_dir(dirfd.proc_path()).map_err(cant)?;
    let mut scan = Scan::default();
    let my_pidns = pid_namespace("self");
    let me = crate::dir::euid();
    let mut names = Vec::new();
    let mut unlooked = 0usize;
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_status_name(name) {
            continue;
        }
        if names.len() == MAX_NAMES {
            unlooked += 1;
            continue;
        }
        // The caller's files first, then root's: another user's files
        // cannot push them past the bounds. Other users' in turns, one
        // file of each owner a round: one user's many files cannot push
        // a third user's past them either (review s28 N3).
        let owner = dirfd.owner(name);
        let rank = match owner {
            Some(u) if u == me => 0,
            Some(0) => 1,
            _ => 2,
        };
        names.push((rank, 0usize, owner.unwrap_or(u32::MAX), name.to_owned()));
    }
    names.sort();
    let mut round = std::collections::HashMap::<u32, usize>::new();
    for n in names.iter_mut().filter(|n| n.0 == 2) {
        let r = round.entry(n.2).or_default();
        n.1 = *r;
        *r += 1;
    }
    names.sort();
    if unlooked > 0 {
        scan.skip(
            "status-*",
            format!("{unlooked} more files not looked at (more than {MAX_NAMES} names)"),
        );
    }
    let mut procs = Procs::default();
    let mut unread = 0usize;
    let mut dropped = 0usize;
    for (_, _, _, name) in &names {
        if scan.files == MAX_FILES {
            unread += 1;
            continue;
        }
        let (file, id) = match dirfd.read_file(name) {
            Ok(f) => f,
            Err(why) => {
                scan.skip(name, why);
                continue;
            }
        };
        scan.files += 1;
        if file.pidns != my_pidns {
            scan.skip(name, "another pid namespace".into());
            continue;
        }
        scan.overflow = scan.overflow.saturating_add(u64::from(file.overflow));
        let mut live = 0;
        let mut not_owner = 0;
        for e in file.entries {
            match procs.judge(e.pid, e.start, file.owner) {
                Liveness::Live => {
                    live += 1;
                    if e.flags & EXECING != 0 {
                    } else if scan.entries.len() < MAX_ENTRIES {
                        scan.entries.push(e.entry);
                    } else {
                        dropped += 1;
                    }
                }
                Liveness::Gone => {}
                Liveness::NotOwner => not_owner += 1,
            }
        }
        if not_owner > 0 {
            scan.skip(
                name,
                format!(
                    "{not_owner} entries of processes not of the file's owner (uid {})",
                    file.owner
                ),
            );
        }
        let creator_live = matches!(
            procs.judge(file.pid, file.start, file.owner),
            Liveness::Live
        );
        if live == 0 && !creator_live && may_remove && dirfd.remove_if_same(name, id) {
            scan.removed += 1;
        }
    }
    if unread > 0 {
        scan.skip(
            "status-*",
            format!("{unread} more files not read (more than {MAX_FILES})"),
        );
    }
    if dropped > 0 {
        scan.skip(
            "status-*",
            format!("{dropped} more entries not listed (more than {MAX_ENTRIES})"),
        );
    }
    scan.entries
        .sort_by_key(|e| (e.pid, e.kind == Kind::Connection, e.fd.unwrap_or(i32::MAX)));
    Ok(scan)
}

struct RawEntry {
    entry: Entry,
    pid: u32,
    start: u64,
    flags: u32,
}

struct FileView {
    owner: u32,
    pid: u32,
    start: u64,
    pidns: u64,
    overflow: u32,
    entries: Vec<RawEntry>,
}

/// `status-<pid>-<start>`, optionally `.<n>`: the names the library gives
/// its files (nothing else is read or removed).
fn is_status_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("status-") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (main, suffix) = match rest.split_once('.') {
        Some((m, k)) => (m, Some(k)),
        None => (rest, None),
    };
    let Some((pid, start)) = main.split_once('-') else {
        return false;
    };
    digits(pid) && digits(start) && suffix.is_none_or(digits)
}

/// The status directory, held open.
struct Dir(std::os::fd::OwnedFd);

impl Dir {
    fn open(dir: &Path) -> std::io::Result<Dir> {
        let f = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)?;
        Ok(Dir(f.into()))
    }

    /// The directory's own entries, whatever its path names now.
    fn proc_path(&self) -> std::path::PathBuf {
        use std::os::fd::AsRawFd;
        std::path::PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }

    /// As the library judges a directory it uses (safedir.rs).
    fn safe(&self) -> bool {
        // (A dup, for `metadata`; none left, EMFILE: not judged safe.)
        let Ok(meta) = self
            .0
            .try_clone()
            .map(File::from)
            .and_then(|f| f.metadata())
        else {
            return false;
        };
        let mode = meta.mode() & 0o7777;
        let euid = crate::dir::euid();
        (meta.uid() == euid || meta.uid() == 0) && (mode & 0o022 == 0 || mode & 0o1000 != 0)
    }

    /// `name`, read; with its device and inode.
    fn read_file(&self, name: &str) -> Result<(FileView, (u64, u64)), String> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: a valid directory fd and a NUL-terminated name; the
        // result is checked, and an fd it returns is owned by the File.
        let fd = unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::ELOOP) {
                "a symbolic link (not followed)".into()
            } else {
                format!("cannot be opened ({e})")
            });
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let mut f = unsafe { File::from_raw_fd(fd) };
        let meta = f.metadata().map_err(|e| e.to_string())?;
        let t = meta.file_type();
        if !t.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let what = if t.is_dir() {
                "a directory"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            return Err(format!("{what}, not a status file"));
        }
        if meta.len() != FILE_BYTES as u64 {
            return Err(format!(
                "{} bytes, not a status file's {FILE_BYTES}",
                meta.len()
            ));
        }
        let mut b = vec![0u8; FILE_BYTES];
        f.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok((parse(&b, meta.uid())?, (meta.dev(), meta.ino())))
    }

    /// `name`'s stat (not following a symlink).
    fn stat_at(&self, name: &std::ffi::CStr) -> Option<libc::stat> {
        use std::os::fd::AsRawFd;
        // SAFETY: all-zero is a valid `stat`; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory fd, a NUL-terminated name and a
        // `stat` to fill; the result is checked.
        let r = unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        (r == 0).then_some(st)
    }

    /// The owner of `name` (not following a symlink).
    fn owner(&self, name: &str) -> Option<u32> {
        let c = std::ffi::CString::new(name).ok()?;
        self.stat_at(&c).map(|st| st.st_uid)
    }

    /// Removes `name` if it is still the file `id` (device, inode).
    fn remove_if_same(&self, name: &str, id: (u64, u64)) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(c) = std::ffi::CString::new(name) else {
            return false;
        };
        if self
            .stat_at(&c)
            .is_none_or(|st| (st.st_dev, st.st_ino) != id)
        {
            return false;
        }
        // SAFETY: a valid directory fd and a NUL-terminated name.
        unsafe { libc::unlinkat(self.0.as_raw_fd(), c.as_ptr(), 0) == 0 }
    }
}

/// Words of a file copied into memory (host order; 0 past its end).
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4])))
}

pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8])))
}

fn parse(b: &[u8], owner: u32) -> Result<FileView, String> {
    use layout::*;
    if b.len() != FILE_BYTES || b.get(..8) != Some(&MAGIC[..]) || u32_at(b, H_VERSION) != VERSION {
        return Err("not a status file of this version (being made, or another version's)".into());
    }
    if u32_at(b, H_HEADER_BYTES) as usize != HEADER_BYTES
        || u32_at(b, H_ENTRY_BYTES) as usize != ENTRY_BYTES
        || u32_at(b, H_ENTRIES) as usize != ENTRIES
    {
        return Err("a header of another layout".into());
    }
    let mut view = FileView {
        owner,
        pid: u32_at(b, H_PID),
        start: u64_at(b, H_START),
        pidns: u64_at(b, H_PIDNS),
        overflow: u32_at(b, H_OVERFLOW),
        entries: Vec::new(),
    };
    for i in 0..ENTRIES {
        let e = HEADER_BYTES + i * ENTRY_BYTES;
        let kind = match u32_at(b, e + E_STATE) {
            LISTENER => Kind::Listener,
            CONNECTION => Kind::Connection,
            _ => continue,
        };
        let Some(local) = addr(b, e + E_LOCAL) else {
            continue;
        };
        let peer = addr(b, e + E_PEER);
        if kind == Kind::Connection && peer.is_none() {
            continue;
        }
        let fd = u32_at(b, e + E_FD);
        let flags = u32_at(b, e + E_FLAGS);
        let pid = u32_at(b, e + E_PID);
        let identity = u64_at(b, e + E_IDENTITY);
        view.entries.push(RawEntry {
            pid,
            start: u64_at(b, e + E_START),
            flags,
            entry: Entry {
                kind,
                pid,
                fd: i32::try_from(fd).ok(),
                flags,
                local,
                peer: if kind == Kind::Connection { peer } else { None },
                sent: u64_at(b, e + E_SENT),
                received: u64_at(b, e + E_RECEIVED),
                segment: if kind == Kind::Connection {
                    identity
                } else {
                    0
                },
                tcp_ino: if kind == Kind::Listener { identity } else { 0 },
                rendezvous_ino: [u64_at(b, e + E_RDV_INO), u64_at(b, e + E_RDV2_INO)],
                ring_bytes: u32_at(b, e + E_RING_BYTES),
                opened_s: u64_at(b, e + E_OPENED_S),
                owner,
            },
        });
    }
    Ok(view)
}

/// An address field: family and port, scope id, 16 address bytes.
fn addr(b: &[u8], at: usize) -> Option<SocketAddr> {
    let w = u32_at(b, at);
    let (family, port) = (w & 0xffff, (w >> 16) as u16);
    let raw: [u8; 16] = b.get(at + 8..at + 24)?.try_into().ok()?;
    match family as i32 {
        libc::AF_INET => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
            port,
        )),
        libc::AF_INET6 => {
            let mut a = std::net::SocketAddrV6::new(Ipv6Addr::from(raw), port, 0, 0);
            a.set_scope_id(u32_at(b, at + 4));
            Some(SocketAddr::V6(a))
        }
        _ => None,
    }
}

enum Liveness {
    Live,
    Gone,
    /// Alive, but not a process of the file's owner: a forged claim.
    NotOwner,
}

/// Looks processes up once per scan.
#[derive(Default)]
struct Procs {
    seen: HashMap<u32, Option<(u64, u32)>>,
}

impl Procs {
    fn judge(&mut self, pid: u32, start: u64, owner: u32) -> Liveness {
        if pid == 0 {
            return Liveness::Gone;
        }
        let facts = *self.seen.entry(pid).or_insert_with(|| proc_facts(pid));
        match facts {
            Some((s, _)) if s != start => Liveness::Gone,
            // A root-owned file may hold entries of workers that dropped
            // privileges after the fork (nginx's `user nobody;`).
            Some((_, euid)) if euid == owner || owner == 0 => Liveness::Live,
            Some(_) => Liveness::NotOwner,
            None => Liveness::Gone,
        }
    }
}

/// A process's start time (`/proc/PID/stat` field 22) and effective uid;
/// None if it is gone or a zombie.
pub(crate) fn proc_facts(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // A zombie's sockets are closed already (it exited without the exit
    // handler that frees its entries: _exit, a signal); but a leader that
    // is a zombie while other threads run (its main thread called
    // pthread_exit) is a live process.
    if matches!(rest.split_ascii_whitespace().next(), Some("Z" | "X")) && !threads_left(&status) {
        return None;
    }
    let start = rest.split_ascii_whitespace().nth(19)?.parse().ok()?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((start, euid))
}

/// Whether `/proc/PID/status` counts more than one thread (the leader's
/// zombie and at least one live thread).
fn threads_left(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 1)
}

/// The inode of a process's pid namespace (0 if unknown).
pub(crate) fn pid_namespace(pid: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).map_or(0, |m| m.ino())
}

/// A process's command line for people: the program's name (not its
/// path) and its arguments, control characters replaced, at most `max`
/// characters.
/// The first argument with its program's directory left out: only of its
/// first word (a process title set as one string, as nginx's "nginx:
/// master process /usr/sbin/nginx -c /etc/nginx.conf", stays whole).
fn program_name(first: &str) -> String {
    let (head, rest) = first.split_once(' ').unwrap_or((first, ""));
    let base = head.rsplit('/').next().unwrap_or(head);
    if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base} {rest}")
    }
}

pub(crate) fn command(pid: u32, max: usize) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| {
            String::from_utf8_lossy(a)
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
        .collect();
    if let Some(first) = args.first_mut() {
        *first = program_name(first);
    } else {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        args.push(format!("[{}]", comm.trim_end()));
    }
    let mut out = args.join(" ");
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(1)).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use layout::{CONNECTION, ENTRIES, ENTRY_BYTES, HEADER_BYTES, MAGIC, VERSION};

    #[test]
    fn a_single_string_title_is_shown_whole() {
        assert_eq!(
            program_name("nginx: master process /usr/sbin/nginx -c /tmp/x/nginx.conf"),
            "nginx: master process /usr/sbin/nginx -c /tmp/x/nginx.conf"
        );
        assert_eq!(program_name("/usr/bin/python3"), "python3");
    }

    #[test]
    fn garbage_is_refused_or_yields_nothing() {
        assert!(parse(&[0u8; 10], 0).is_err());
        let mut b = vec![0xffu8; FILE_BYTES];
        assert!(parse(&b, 0).is_err());
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_ne_bytes());
        b[12..16].copy_from_slice(&(HEADER_BYTES as u32).to_ne_bytes());
        b[16..20].copy_from_slice(&(ENTRY_BYTES as u32).to_ne_bytes());
        b[20..24].copy_from_slice(&(ENTRIES as u32).to_ne_bytes());
        // Every entry's state is 0xffffffff: none is taken.
        assert_eq!(parse(&b, 0).unwrap().entries.len(), 0);
        // A connection entry with a bad family is dropped.
        let e = HEADER_BYTES;
        b[e..e + 4].copy_from_slice(&CONNECTION.to_ne_bytes());
        assert_eq!(parse(&b, 0).unwrap().entries.len(), 0);
        let (local, peer) = (e + layout::E_LOCAL, e + layout::E_PEER);
        b[local..local + 4].copy_from_slice(&(2u32 | 80 << 16).to_ne_bytes());
        b[peer..peer + 4].copy_from_slice(&(2u32 | 81 << 16).to_ne_bytes());
        let v = parse(&b, 0).unwrap();
        assert_eq!(v.entries.len(), 1);
        assert_eq!(v.entries[0].entry.local.port(), 80);
        assert_eq!(v.entries[0].entry.fd, None);
    }
}
