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

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// A held reservation of one address:port.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// Closed (releasing the lock) after `drop` removed the file.
    _lock: crate::socket::InternalFd,
    path: PathBuf,
    fork_generation: u32,
    pub addr: SocketAddr,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Only if no fork happened since: a forked copy of the lock fd
        // means another process may still hold the reservation.
        if self.fork_generation == crate::registry::fork_generation() {
            let _ = rustix::fs::unlink(&self.path);
        }
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
    crate::config::ensure_private_dir(dir)
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::ACCESS))?;
    let path = dir.join(format!("{}.lock", stem(addr)));
    for _ in 0..8 {
        let lock = rustix::fs::open(
            &path,
            OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::RUSR | Mode::WUSR,
        )?;
        let lock = crate::socket::InternalFd::new(lock);
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(Errno::ADDRINUSE),
            Err(e) => return Err(e),
        }
        // The previous holder may have removed the file between our open
        // and our lock: then we hold a lock nobody else can see. Retry.
        let held = rustix::fs::fstat(&lock)?;
        match rustix::fs::lstat(&path) {
            Ok(now) if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) => {
                return Ok(Reservation {
                    _lock: lock,
                    path,
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
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    let start = seed() % span;
    for k in 0..span {
        let port = EPHEMERAL.start() + ((start + k) % span) as u16;
        match reserve(dir, SocketAddr::new(ip, port)) {
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
