//! `SHMNET_DIR`, opened once and verified (docs/security.md, "The
//! directory").
//!
//! The directory holds the per-user counters (`stats`) and the rendezvous
//! of non-local partition addresses. Everything in it is reached through one
//! `O_DIRECTORY|O_NOFOLLOW` descriptor: files with `openat` (never following
//! a symlink planted in the directory), Unix sockets through
//! `/proc/self/fd/N/<name>`. Renaming or replacing the path after it was
//! verified therefore cannot redirect us.
//!
//! A directory is accepted when it is a real directory (not a symlink),
//! owned by the effective uid or by root, and not writable by group or
//! others unless it has the sticky bit (like `/tmp`). A missing one is
//! created mode 0700 (its parent must exist); an existing one is never
//! chmod-ed: narrowing a directory an administrator shared on purpose locks
//! the other users out.
//!
//! [`get`] is cheap while nothing changed (one `geteuid`, a read lock and an
//! `Arc` clone). The directory is opened and verified again when the
//! effective uid changed (the default path depends on it), and when
//! [`refresh`] finds it removed or replaced (a `/tmp` cleaner): callers
//! call it after an operation failed with `ENOENT`. A refused directory
//! prints one `libshmnet:` line per process per distinct problem, and is
//! looked at again at most once a second (an operator may fix it meanwhile).
//!
//! All system calls go through rustix (raw syscalls: they do not enter our
//! own hooks and leave errno alone).
#![deny(unsafe_code)]

use std::fmt::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat, CWD};
use rustix::io::Errno;

use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::RwLock;

/// `sun_path` holds 108 bytes, one of them the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// How long a refused directory stays refused before it is looked at again.
const RETRY: Duration = Duration::from_secs(1);

/// A verified directory: every operation goes through its descriptor.
///
/// The descriptor can be given back when the application runs out of fds
/// (`give_back`, from `sockets::spare_fds`): the next operation opens the
/// path again and takes it only if it is the very directory verified
/// (same device and inode; ENOENT otherwise, which makes callers look
/// again with `refresh`). Its lock is only ever tried, never waited for
/// (a child forked while another thread held it must not hang): an
/// operation that finds it taken uses a descriptor of its own.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: RwLock<Option<Arc<InternalFd>>>,
    path: PathBuf,
    dev: u64,
    ino: u64,
    euid: u32,
}

/// The directory for the current effective uid (see the module docs).
pub(crate) fn get() -> Result<Arc<Dir>, Errno> {
    register_fork_handlers();
    CACHE.get(rustix::process::geteuid().as_raw(), &configured_path)
}

/// The process called setuid or kin (`calls/process.rs`): a directory it
/// cannot open afterwards is expected, not a setup problem.
static USER_CHANGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn user_changing() {
    USER_CHANGED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Looks whether the directory [`get`] returns was removed or replaced
/// (its descriptor's `st_nlink` is 0, or its path now names something
/// else); if so, the next [`get`] opens and verifies the path again.
pub(crate) fn refresh() {
    CACHE.refresh();
}

/// Out of fds (`sockets::spare_fds`): the cached directory's descriptor
/// is given back, opened again at its next use. True if one was held.
pub(crate) fn give_back() -> bool {
    let dir = CACHE.state.try_read().and_then(|state| state.dir.clone());
    dir.is_some_and(|dir| dir.give_back())
}

/// [`get`] after [`refresh`]: for the rendezvous in the directory, where a
/// directory removed and recreated meanwhile (by whoever) must be looked
/// at again before anything in it is trusted. Two system calls.
pub(crate) fn checked() -> Result<Arc<Dir>, Errno> {
    refresh();
    get()
}

/// `SHMNET_DIR` for `euid`: the configured one, else the default for
/// `euid` (`$XDG_RUNTIME_DIR/shmnet` when that directory belongs to `euid`).
fn configured_path(euid: u32) -> Result<PathBuf, Errno> {
    let config = crate::platform::config::get().ok_or(Errno::INVAL)?;
    let ours = config.runtime_dir.as_ref().is_some_and(|run| {
        rustix::fs::stat(run).is_ok_and(|st| {
            FileType::from_raw_mode(st.st_mode) == FileType::Directory && st.st_uid == euid
        })
    });
    Ok(config.default_dir(euid, ours))
}

/// What `Dir::at` requires of the directory it opened (`st`): a
/// directory, owned by `euid` or root, not writable by group or others
/// unless sticky.
fn trusted(st: &Stat, euid: u32) -> Result<(), Problem> {
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(Problem::NotDir);
    }
    if st.st_uid != euid && st.st_uid != 0 {
        return Err(Problem::Owner(st.st_uid));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(Problem::Writable(mode));
    }
    Ok(())
}

impl Dir {
    /// Opens (creating it mode 0700 if missing) and verifies the directory
    /// at `path` for a process running as `euid`.
    pub(crate) fn at(path: &Path, euid: u32) -> Result<Dir, Refusal> {
        let refuse = |problem| Refusal {
            path: path.to_path_buf(),
            euid,
            problem,
        };
        let fd = open_or_create(path).map_err(refuse)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| refuse(Problem::Open(e)))?;
        trusted(&st, euid).map_err(refuse)?;
        let (dev, ino) = file_id(&st);
        Ok(Dir {
            fd: RwLock::new(Some(Arc::new(InternalFd::new(fd)))),
            path: path.to_path_buf(),
            dev,
            ino,
            euid,
        })
    }

    /// The path to give bind(2)/connect(2) for a Unix socket named `name`
    /// in the directory: `/proc/self/fd/<N>/<name>`, which reaches the
    /// verified directory even if its path was renamed or replaced.
    /// ENAMETOOLONG when it does not fit `sun_path`.
    pub(crate) fn socket_path(&self, name: &str) -> Result<SocketPath, Errno> {
        check_name(name)?;
        let fd = self.handle()?;
        let path = format!("/proc/self/fd/{}/{name}", fd.as_fd().as_raw_fd());
        if path.len() > SUN_PATH_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        Ok(SocketPath {
            _dir: fd,
            path: PathBuf::from(path),
        })
    }

    /// The descriptor: the one held, or the path opened again if it was
    /// given back (and kept, unless the lock was taken).
    fn handle(&self) -> Result<Arc<InternalFd>, Errno> {
        if let Some(fd) = self.fd.try_read().and_then(|held| held.clone()) {
            return Ok(fd);
        }
        let fd = rustix::fs::openat(CWD, &self.path, DIR_FLAGS, Mode::empty())?;
        // The same directory, and still one `at` would accept: its owner
        // or mode may have changed meanwhile (review of fd14 #2).
        let st = rustix::fs::fstat(&fd)?;
        if file_id(&st) != (self.dev, self.ino) || trusted(&st, self.euid).is_err() {
            return Err(Errno::NOENT);
        }
        let fd = Arc::new(InternalFd::new(fd));
        if let Some(mut held) = self.fd.try_write() {
            return Ok(held.get_or_insert(fd).clone());
        }
        Ok(fd)
    }

    /// Gives the descriptor back (closed once no operation uses it): true
    /// if it was held.
    pub(crate) fn give_back(&self) -> bool {
        self.fd
            .try_write()
            .and_then(|mut held| held.take())
            .is_some()
    }

    /// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`: a symlink
    /// planted in the directory is never followed (ELOOP).
    pub(crate) fn open(&self, name: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        check_name(name)?;
        rustix::fs::openat(
            &*self.handle()?,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
        )
    }

    /// `unlinkat(dir, name, 0)`.
    /// Sets the mode of `name` (a socket file we just bound: anyone who
    /// can enter the directory may connect to it; who is served is the
    /// listener's policy, decided from the kernel's credentials).
    pub(crate) fn chmod(&self, name: &str, mode: Mode) -> Result<(), Errno> {
        check_name(name)?;
        rustix::fs::chmodat(&*self.handle()?, name, mode, AtFlags::empty())
    }

    pub(crate) fn unlink(&self, name: &str) -> Result<(), Errno> {
        check_name(name)?;
        rustix::fs::unlinkat(&*self.handle()?, name, AtFlags::empty())
    }

    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
    pub(crate) fn stat(&self, name: &str) -> Result<Stat, Errno> {
        check_name(name)?;
        rustix::fs::statat(&*self.handle()?, name, AtFlags::SYMLINK_NOFOLLOW)
    }

    /// Renames `from` to `to` unless `to` exists (EEXIST): how a file
    /// prepared under a private name is published whole. `renameat2` with
    /// `RENAME_NOREPLACE`, or `linkat` and `unlinkat` on filesystems
    /// without it.
    pub(crate) fn publish(&self, from: &str, to: &str) -> Result<(), Errno> {
        check_name(from)?;
        check_name(to)?;
        let fd = self.handle()?;
        match rustix::fs::renameat_with(&*fd, from, &*fd, to, RenameFlags::NOREPLACE) {
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                rustix::fs::linkat(&*fd, from, &*fd, to, AtFlags::empty())?;
                let _ = self.unlink(from);
                Ok(())
            }
            other => other,
        }
    }

    /// The names in the directory that start with `prefix` (at most
    /// `max`), read through its descriptor.
    pub(crate) fn names(&self, prefix: &str, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(fd) = self.handle() else {
            return out;
        };
        let Ok(mut rd) = rustix::fs::Dir::read_from(&*fd) else {
            return out;
        };
        while let Some(Ok(e)) = rd.read() {
            if out.len() >= max {
                break;
            }
            if let Ok(name) = e.file_name().to_str() {
                if name.starts_with(prefix) {
                    out.push(name.to_owned());
                }
            }
        }
        out
    }

    /// The path the directory was opened at (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The effective uid the directory was opened for.
    pub(crate) fn euid(&self) -> u32 {
        self.euid
    }

    /// Whether the directory is still there under its path: not removed
    /// (`st_nlink` 0) and the path names this very directory.
    fn still_in_place(&self) -> bool {
        let Ok(fd) = self.handle() else {
            return false;
        };
        let Ok(st) = rustix::fs::fstat(&*fd) else {
            return false;
        };
        if st.st_nlink == 0 {
            return false;
        }
        rustix::fs::statat(CWD, &self.path, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|now| file_id(&now) == (self.dev, self.ino))
    }
}

/// A Unix socket's path in the directory (`Dir::socket_path`), holding
/// the descriptor the path goes through.
#[derive(Debug)]
pub(crate) struct SocketPath {
    _dir: Arc<InternalFd>,
    path: PathBuf,
}

impl SocketPath {
    pub(crate) fn as_path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for SocketPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for SocketPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn file_id(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// A name for `*at` calls: one path component.
fn check_name(name: &str) -> Result<(), Errno> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Errno::INVAL);
    }
    Ok(())
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens `path` as a directory without following a symlink in its last
/// component, creating it mode 0700 if missing (its parent must exist).
fn open_or_create(path: &Path) -> Result<OwnedFd, Problem> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (parent, name),
        // "/" or a path ending in "..": nothing to create, no last name to
        // guard (the path's own resolution is all there is).
        _ => {
            return rustix::fs::openat(rustix::fs::CWD, path, DIR_FLAGS, Mode::empty())
                .map_err(Problem::Open)
        }
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let parent_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // The parent must exist: a mistyped SHMNET_DIR must not make a tree
    // of directories (as root, anywhere).
    let parent_fd =
        match rustix::fs::openat(rustix::fs::CWD, parent, parent_flags, Mode::empty()) {
            Err(Errno::NOENT) => return Err(Problem::Create(Errno::NOENT)),
            other => other,
        }
        .map_err(Problem::Open)?;
    let open = || rustix::fs::openat(&parent_fd, name, DIR_FLAGS, Mode::empty());
    let result = match open() {
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(&parent_fd, name, Mode::RWXU) {
                // 0700 whatever the umask (0777 made it d---------, which
                // its user could not open). By name: we cannot open it
                // before; it is checked once opened (O_NOFOLLOW).
                Ok(()) => {
                    let _ = rustix::fs::chmodat(&parent_fd, name, Mode::RWXU, AtFlags::empty());
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(Problem::Create(e)),
            }
            open()
        }
        other => other,
    };
    result.map_err(|e| match e {
        // O_NOFOLLOW|O_DIRECTORY on a symlink is ENOTDIR on Linux (ELOOP or
        // EMLINK elsewhere): ask what it is.
        Errno::NOTDIR | Errno::LOOP | Errno::MLINK => {
            match rustix::fs::statat(&parent_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    Problem::Symlink
                }
                Ok(_) => Problem::NotDir,
                Err(e) => Problem::Open(e),
            }
        }
        e => Problem::Open(e),
    })
}

/// Why a directory was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// It (or a parent) could not be created.
    Create(Errno),
    /// It could not be opened.
    Open(Errno),
    /// The path's last component is a symlink.
    Symlink,
    /// It is not a directory.
    NotDir,
    /// Owned by this uid, which is neither the effective uid nor root.
    Owner(u32),
    /// Writable by group or others and not sticky: this mode.
    Writable(u32),
}

/// A refused directory: which one, for whom, and why. Its `Display` is the
/// `libshmnet:` line (without the prefix): what is wrong and what to do.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    path: PathBuf,
    euid: u32,
    problem: Problem,
}

impl Refusal {
    /// What the failed call returns: EACCES for an unsafe directory.
    pub(crate) fn errno(&self) -> Errno {
        match self.problem {
            Problem::Create(e) | Problem::Open(e) => e,
            Problem::NotDir => Errno::NOTDIR,
            Problem::Symlink | Problem::Owner(_) | Problem::Writable(_) => Errno::ACCESS,
        }
    }

    /// The default directory (SHMNET_DIR unset) whose parent does not
    /// exist: a process chrooted where there is no /tmp (or no runtime
    /// directory).
    fn unset_default_unreachable(&self) -> bool {
        matches!(self.problem, Problem::Create(Errno::NOENT))
            && crate::platform::config::get().is_some_and(|c| c.dir.is_none())
    }

    #[cfg(test)]
    pub(crate) fn problem(&self) -> Problem {
        self.problem
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        write!(f, "SHMNET_DIR {p} ")?;
        match self.problem {
            Problem::Create(e) => write!(f, "cannot be created ({e}): create it or set SHMNET_DIR"),
            Problem::Open(e) => write!(f, "cannot be opened ({e}): fix it or set SHMNET_DIR"),
            Problem::Symlink => write!(f, "is a symlink: remove it or set SHMNET_DIR"),
            Problem::NotDir => write!(f, "is not a directory: remove it or set SHMNET_DIR"),
            Problem::Owner(uid) => write!(
                f,
                "is owned by uid {uid}, not by you (uid {}) or root: remove it or set SHMNET_DIR",
                self.euid
            ),
            Problem::Writable(mode) => write!(
                f,
                "is writable by others and not sticky (mode {mode:04o}): chmod 0700 (or +t) it"
            ),
        }?;
        f.write_str("; shared memory that needs it is off until then")
    }
}

// ---------------------------------------------------------------------------
// The cache

fn transient(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::INTR | Errno::AGAIN
    )
}

struct Failed {
    euid: u32,
    errno: Errno,
    at: Instant,
}

struct State {
    dir: Option<Arc<Dir>>,
    failed: Option<Failed>,
}

/// The verified directory (or the last refusal) for the effective uid.
pub(crate) struct Cache {
    state: RwLock<State>,
}

static CACHE: Cache = Cache::new();

impl Cache {
    pub(crate) const fn new() -> Cache {
        Cache {
            state: RwLock::new(State {
                dir: None,
                failed: None,
            }),
        }
    }

    /// The directory for `euid`, found by `locate` when it must be opened.
    pub(crate) fn get(
        &self,
        euid: u32,
        locate: &dyn Fn(u32) -> Result<PathBuf, Errno>,
    ) -> Result<Arc<Dir>, Errno> {
        {
            let state = self.state.read();
            if let Some(dir) = state.dir.as_ref().filter(|d| d.euid == euid) {
                return Ok(dir.clone());
            }
            if let Some(f) = state.failed.as_ref().filter(|f| f.euid == euid) {
                if f.at.elapsed() < RETRY {
                    return Err(f.errno);
                }
            }
        }
        // A process that switched user (a server's worker dropping to
        // nobody) is expected not to reach the directory of the user it
        // was: said in the debug log only.
        let switched = USER_CHANGED.load(std::sync::atomic::Ordering::Relaxed)
            || self
                .state
                .read()
                .dir
                .as_ref()
                .is_some_and(|d| d.euid != euid);
        // Opened outside the lock: another thread may be doing the same;
        // the first one stored wins, the other's descriptor is closed.
        let opened = locate(euid).and_then(|path| {
            Dir::at(&path, euid).map_err(|refusal| {
                let errno = refusal.errno();
                // Out of fds or memory is the process's state, not the
                // directory's: neither said nor remembered.
                if switched && matches!(errno, Errno::ACCESS | Errno::PERM) {
                    log!(debug, "after a user switch: {refusal}");
                } else if refusal.unset_default_unreachable() {
                    // A chroot without /tmp (in.tftpd -s, a sandboxed
                    // worker): nothing the user set or could fix, and the
                    // line went out once per forked child.
                    log!(debug, "{refusal}");
                } else if !transient(errno) {
                    warn_once(format_args!("{refusal}"));
                }
                errno
            })
        });
        if let Err(errno) = opened {
            if transient(errno) {
                return Err(errno);
            }
        }
        let mut stale = None;
        let result = {
            let mut state = self.state.write();
            match opened {
                Ok(dir) => match state.dir.as_ref().filter(|d| d.euid == euid) {
                    Some(winner) => {
                        let winner = winner.clone();
                        stale = Some(Arc::new(dir));
                        Ok(winner)
                    }
                    None => {
                        let dir = Arc::new(dir);
                        stale = state.dir.replace(dir.clone());
                        state.failed = None;
                        Ok(dir)
                    }
                },
                Err(errno) => {
                    state.failed = Some(Failed {
                        euid,
                        errno,
                        at: Instant::now(),
                    });
                    Err(errno)
                }
            }
        };
        drop(stale); // closes a descriptor: outside the lock
        result
    }

    /// Drops the cached directory if it was removed or replaced.
    pub(crate) fn refresh(&self) {
        let Some(dir) = self.state.read().dir.clone() else {
            return;
        };
        if dir.still_in_place() {
            return;
        }
        let taken = {
            let mut state = self.state.write();
            match &state.dir {
                Some(d) if Arc::ptr_eq(d, &dir) => state.dir.take(),
                _ => None,
            }
        };
        drop(taken);
    }
}

/// The cache's lock is held across fork() (see `lock`): a thread of the
/// parent holding it at the fork does not exist in the child.
fn register_fork_handlers() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if REGISTERED.load(Ordering::Relaxed) || REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    extern "C" fn prepare() {
        CACHE.state.hold_for_fork();
    }
    extern "C" fn parent() {
        CACHE.state.release_fork_hold();
    }
    extern "C" fn child() {
        CACHE.state.reset_after_fork();
    }
    let rc = crate::platform::sys::register_atfork(prepare, parent, child);
    if rc != 0 {
        log!(
            warn,
            "pthread_atfork failed (errno {rc}) for SHMNET_DIR's cache"
        );
    }
}

// ---------------------------------------------------------------------------
// One line per problem

/// Prints `libshmnet: <args>` on stderr unless this process already printed
/// the same line (keyed by a hash of the text; at most 32 distinct lines).
pub(crate) fn warn_once(args: fmt::Arguments<'_>) {
    static SEEN: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];
    if first_time(&SEEN, args) {
        crate::platform::log::stderr_line(args);
    }
}

/// Whether `args` is new to `seen` (and now recorded there). A full table
/// answers false: beyond that many distinct problems, silence.
fn first_time(seen: &[AtomicU64], args: fmt::Arguments<'_>) -> bool {
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    let _ = hash.write_fmt(args);
    let key = hash.0 | 1; // never 0, which marks a free entry
    for entry in seen {
        match entry.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(k) if k == key => return false,
            Err(_) => {}
        }
    }
    false
}

/// FNV-1a over formatted text, without allocating.
struct Fnv(u64);

impl fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
