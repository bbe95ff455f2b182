//! Names in the partition network, kept in `SHMNET_DIR`.
//!
//! An address:port is *reserved* by holding an `flock` on
//! `<dir>/tcp4-<ip>-<port>.lock` (the kernel drops it when the last fd of
//! the holder closes, so a crashed process never leaves a port taken). A
//! listener's rendezvous is the Unix-domain socket `<dir>/tcp4-<ip>-<port>`
//! next to it; only the holder of the lock may (re)bind that path, so a
//! stale socket file left by a crash is simply replaced.
//!
//! The holder removes its lock file when it lets go (while still holding the
//! lock), so files do not pile up; a reserver therefore checks, once locked,
//! that the path still names the file it locked (else it locked a removed
//! file and tries again).
#![deny(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// A held reservation of one address:port.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// Closed (releasing the lock) after `drop` removed the file; None for
    /// a connecting socket's port, taken from a block this process holds.
    _lock: Option<crate::socket::InternalFd>,
    /// The block a connecting socket's port came from: held while any of
    /// its ports names a live connection.
    _block: Option<Arc<BlockHold>>,
    path: Option<PathBuf>,
    fork_generation: u32,
    pub addr: SocketAddr,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Only if no fork happened since: a forked copy of the lock fd
        // means another process may still hold the reservation.
        if let Some(path) = &self.path {
            if self.fork_generation == crate::registry::fork_generation() {
                let _ = rustix::fs::unlink(path);
            }
        }
    }
}

/// Connecting sockets take their local ports from blocks of `BLOCK`
/// ports, one lock file per block (`tcp4-IP-bFIRST.lock`) held by this
/// process: a connect costs no file of its own (open, flock, unlink and an
/// fd per connection before; connections/s and the library's fd budget
/// both gain). A used-up block is held until the last connection named
/// from it is gone, so no other process hands out its ports meanwhile. A
/// port bound on its own (bind) is skipped; binding a port of a block
/// another process holds is EADDRINUSE. When every block is held (some
/// 1700 processes with connections), connecting sockets reserve single
/// ports as before.
const BLOCK: u16 = 16;

/// A held block: its lock, released (and its file removed, under the
/// lock) when the last user lets go — unless a fork happened since, when
/// the other process may still use it.
#[derive(Debug)]
pub(crate) struct BlockHold {
    _lock: crate::socket::InternalFd,
    path: PathBuf,
    fork_generation: u32,
}

impl Drop for BlockHold {
    fn drop(&mut self) {
        if self.fork_generation == crate::registry::fork_generation() {
            let _ = rustix::fs::unlink(&self.path);
        }
    }
}

struct Block {
    ip: IpAddr,
    next: u16,
    end: u16,
    hold: Arc<BlockHold>,
}

static BLOCKS: crate::lock::Mutex<Vec<Block>> = crate::lock::Mutex::new(Vec::new());

fn block_name(ip: IpAddr, first: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("tcp4-{ip}-b{first}.lock"),
        IpAddr::V6(ip) => format!("tcp6-{ip}-b{first}.lock"),
    }
}

fn block_of(port: u16) -> Option<u16> {
    EPHEMERAL
        .contains(&port)
        .then(|| EPHEMERAL.start() + (port - EPHEMERAL.start()) / BLOCK * BLOCK)
}

/// The local name of a connecting socket on `ip` (see `BLOCK`).
pub(crate) fn connecting_name(dir: &Path, ip: IpAddr) -> Result<Reservation, Errno> {
    ensure_dir(dir)?;
    let mut blocks = BLOCKS.lock();
    for _ in 0..4 {
        if let Some(b) = blocks.iter_mut().find(|b| b.ip == ip) {
            while b.next < b.end {
                let addr = SocketAddr::new(ip, b.next);
                b.next += 1;
                let own = dir.join(format!("{}.lock", stem(addr)));
                if rustix::fs::access(&own, rustix::fs::Access::EXISTS).is_err() {
                    return Ok(Reservation {
                        _lock: None,
                        _block: Some(b.hold.clone()),
                        path: None,
                        fork_generation: crate::registry::fork_generation(),
                        addr,
                    });
                }
            }
            // Used up: no more names from it (its hold lives on in the
            // reservations of its live connections).
            if let Some(i) = blocks.iter().position(|b| b.ip == ip) {
                blocks.swap_remove(i);
            }
        }
        match take_block(dir, ip) {
            Ok(b) => blocks.push(b),
            Err(Errno::ADDRNOTAVAIL) => break,
            Err(e) => return Err(e),
        }
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        AT_EXIT.call_once(|| crate::sys::at_exit(retire_blocks));
    }
    drop(blocks);
    reserve_ephemeral_ports(dir, ip, false)
}

fn take_block(dir: &Path, ip: IpAddr) -> Result<Block, Errno> {
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start() + 1) / u32::from(BLOCK);
    let start = seed() % span;
    for k in 0..span {
        let first = EPHEMERAL.start() + ((start + k) % span) as u16 * BLOCK;
        let lock = match lock_file(&dir.join(block_name(ip, first))) {
            Ok(l) => l,
            Err(Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e),
        };
        // Its holder may have removed the file between our open and our
        // lock (see `reserve_named`): then try the next block.
        let path = dir.join(block_name(ip, first));
        let held = rustix::fs::fstat(&lock)?;
        match rustix::fs::lstat(&path) {
            Ok(now) if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) => {
                return Ok(Block {
                    ip,
                    next: first,
                    end: first + BLOCK,
                    hold: Arc::new(BlockHold {
                        _lock: lock,
                        path,
                        fork_generation: crate::registry::fork_generation(),
                    }),
                });
            }
            _ => continue,
        }
    }
    Err(Errno::ADDRNOTAVAIL)
}

/// Whether another holder's block covers `addr`'s port.
fn in_held_block(dir: &Path, addr: SocketAddr) -> bool {
    let Some(first) = block_of(addr.port()) else {
        return false;
    };
    let Ok(f) = rustix::fs::open(
        dir.join(block_name(addr.ip(), first)),
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    ) else {
        return false; // never taken
    };
    rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) == Err(Errno::WOULDBLOCK)
}

/// In a forked child: the blocks are the parent's (the lock is on the open
/// file both share), so the child takes its own.
pub(crate) fn after_fork_child() {
    BLOCKS.reset_after_fork();
    BLOCKS.lock().clear();
    // Kept connection segments are mapped by the parent too.
    crate::pool::after_fork_child();
}

/// At exit: let our blocks go (a block still naming a live connection
/// stays; the kernel drops its lock anyway).
extern "C" fn retire_blocks() {
    // A thread may hold the list at exit: then leave the files.
    if let Some(mut blocks) = BLOCKS.try_lock() {
        blocks.clear();
    }
}

/// Kernel TCP's default ephemeral range (net.ipv4.ip_local_port_range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

fn stem(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("tcp4-{ip}-{}", addr.port()),
        IpAddr::V6(ip) => format!("tcp6-{ip}-{}", addr.port()),
    }
}

/// The rendezvous socket path of a listener on `addr`.
pub(crate) fn socket_path(dir: &Path, addr: SocketAddr) -> PathBuf {
    dir.join(stem(addr))
}

/// Reserves `addr` (port non-zero): EADDRINUSE if another socket holds it.
pub(crate) fn reserve(dir: &Path, addr: SocketAddr) -> Result<Reservation, Errno> {
    reserve_named(dir, &stem(addr), addr)
}

/// As `reserve`, without looking at blocks (every one is held).
fn reserve_outside_blocks(dir: &Path, addr: SocketAddr) -> Result<Reservation, Errno> {
    try_reserve_checked(dir, &stem(addr), addr, false)
}

/// Reserves the name `stem` (the rendezvous of `addr`).
pub(crate) fn reserve_named(
    dir: &Path,
    stem: &str,
    addr: SocketAddr,
) -> Result<Reservation, Errno> {
    match try_reserve(dir, stem, addr) {
        // The directory was removed since we checked it: make it again.
        Err(Errno::NOENT) => {
            DIR_CHECKED.store(false, std::sync::atomic::Ordering::Relaxed);
            try_reserve(dir, stem, addr)
        }
        r => r,
    }
}

/// SHMNET_DIR was found (or made) private to us once: connecting does not
/// check it again on every reservation (mkdir and stat per connect).
static DIR_CHECKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `config::ensure_private_dir`, once per process (see `DIR_CHECKED`).
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), Errno> {
    use std::sync::atomic::Ordering;
    if !DIR_CHECKED.load(Ordering::Relaxed) {
        crate::config::ensure_private_dir(dir)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::ACCESS))?;
        DIR_CHECKED.store(true, Ordering::Relaxed);
    }
    Ok(())
}

fn try_reserve(dir: &Path, stem: &str, addr: SocketAddr) -> Result<Reservation, Errno> {
    try_reserve_checked(dir, stem, addr, true)
}

fn try_reserve_checked(
    dir: &Path,
    stem: &str,
    addr: SocketAddr,
    blocks: bool,
) -> Result<Reservation, Errno> {
    ensure_dir(dir)?;
    if blocks && in_held_block(dir, addr) {
        return Err(Errno::ADDRINUSE);
    }
    let path = dir.join(format!("{stem}.lock"));
    for _ in 0..8 {
        let lock = match lock_file(&path) {
            Ok(l) => l,
            Err(Errno::WOULDBLOCK) => return Err(Errno::ADDRINUSE),
            Err(e) => return Err(e),
        };
        // The previous holder may have removed the file between our open
        // and our lock: then we hold a lock nobody else can see. Retry.
        let held = rustix::fs::fstat(&lock)?;
        match rustix::fs::lstat(&path) {
            Ok(now) if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) => {
                return Ok(Reservation {
                    _lock: Some(lock),
                    _block: None,
                    path: Some(path),
                    fork_generation: crate::registry::fork_generation(),
                    addr,
                });
            }
            _ => continue,
        }
    }
    Err(Errno::ADDRINUSE)
}

/// Reserves a free ephemeral port on `ip` (bind to port 0, or a connecting
/// socket's local name). EADDRNOTAVAIL when the whole range is taken.
pub(crate) fn reserve_ephemeral(dir: &Path, ip: IpAddr) -> Result<Reservation, Errno> {
    reserve_ephemeral_ports(dir, ip, true)
}

fn reserve_ephemeral_ports(dir: &Path, ip: IpAddr, blocks: bool) -> Result<Reservation, Errno> {
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    let start = seed() % span;
    for k in 0..span {
        let port = EPHEMERAL.start() + ((start + k) % span) as u16;
        let addr = SocketAddr::new(ip, port);
        let r = if blocks {
            reserve(dir, addr)
        } else {
            reserve_outside_blocks(dir, addr)
        };
        match r {
            Ok(r) => return Ok(r),
            Err(Errno::ADDRINUSE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::ADDRNOTAVAIL)
}

/// A cheap varying start for the port scan (pid and clock), so concurrent
/// processes rarely probe the same ports.
fn seed() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t ^ std::process::id().wrapping_mul(2_654_435_761)
}

/// `addr` with an IPv4-mapped IPv6 address (::ffff:a.b.c.d) written as the
/// IPv4 address it maps.
pub(crate) fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The rendezvous name of a dual listener (`SHMNET_FALLBACK=tcp`: a kernel
/// TCP listener that also accepts shared-memory connections) bound to
/// `local`: as a listener's (`tcp4-IP-PORT`, `tcp6-IP-PORT`), the wildcard
/// included; an IPv6 wildcard listener that does not accept IPv4
/// (IPV6_V6ONLY) is `tcp6only-::-PORT`, so IPv4 connectors skip it.
pub(crate) fn dual_stem(local: SocketAddr, v6only: bool) -> String {
    match local.ip() {
        IpAddr::V6(ip) if v6only && ip.is_unspecified() => {
            format!("tcp6only-{ip}-{}", local.port())
        }
        _ => stem(unmapped(local)),
    }
}

/// The rendezvous names a connection to `target` may find a listener at,
/// in order: a listener on that very address, then wildcard listeners on
/// its port (0.0.0.0 for IPv4; [::] for both, when dual-stack).
pub(crate) fn candidates(target: SocketAddr) -> Vec<String> {
    let t = unmapped(target);
    let port = t.port();
    match t.ip() {
        IpAddr::V4(_) => vec![
            stem(t),
            format!("tcp4-0.0.0.0-{port}"),
            format!("tcp6-::-{port}"),
        ],
        IpAddr::V6(_) => vec![
            stem(t),
            format!("tcp6-::-{port}"),
            format!("tcp6only-::-{port}"),
        ],
    }
}

/// Further rendezvous of `stem`: listeners that share a port with the one
/// that holds the name (SO_REUSEPORT in several processes) are named
/// `STEM.PID`. Only looked for when the name itself leads nowhere.
pub(crate) fn alternates(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let prefix = format!("{stem}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix) && !n.ends_with(".lock"))
        })
        .map(|e| e.path())
        .collect()
}

/// Opens (creating) the lock file at `path` and takes its exclusive flock
/// without waiting: WOULDBLOCK when another holder has it.
fn lock_file(path: &Path) -> Result<crate::socket::InternalFd, Errno> {
    let lock = rustix::fs::open(
        path,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::RUSR | Mode::WUSR,
    )?;
    let lock = crate::socket::InternalFd::new(lock);
    rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
    Ok(lock)
}
