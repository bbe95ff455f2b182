//! The options store: socket options the application set on an emulated
//! socket, remembered and read back (`calls::options` answers from it), and
//! what an accepted connection inherits from its listener.
#![forbid(unsafe_code)]

use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::platform::lock::Mutex;

/// Socket options the application set, remembered and read back.
#[derive(Default)]
pub(crate) struct Options {
    values: Mutex<Vec<(i32, i32, Vec<u8>)>>,
}

impl Options {
    /// The options a kernel TCP socket carries into emulation (set by the
    /// application before bind/connect turned it into an emulated one).
    pub(crate) fn snapshot(fd: BorrowedFd<'_>) -> Options {
        use rustix::net::sockopt as so;
        let o = Options::default();
        let int = |v: bool| i32::from(v).to_ne_bytes();
        if let Ok(v) = so::tcp_nodelay(fd) {
            o.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &int(v));
        }
        if let Ok(v) = so::socket_keepalive(fd) {
            o.set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, &int(v));
        }
        if let Ok(v) = so::socket_reuseaddr(fd) {
            o.set(libc::SOL_SOCKET, libc::SO_REUSEADDR, &int(v));
        }
        if let Ok(v) = so::socket_reuseport(fd) {
            o.set(libc::SOL_SOCKET, libc::SO_REUSEPORT, &int(v));
        }
        // (Not the keepalive timers: each option is a system call on the
        // connect path, and programs set those after connecting.)
        for (name, id) in [
            (libc::SO_RCVTIMEO, so::Timeout::Recv),
            (libc::SO_SNDTIMEO, so::Timeout::Send),
        ] {
            if let Ok(Some(d)) = so::socket_timeout(fd, id) {
                let mut tv = [0u8; 16];
                tv[..8].copy_from_slice(&(d.as_secs() as i64).to_ne_bytes());
                tv[8..].copy_from_slice(&i64::from(d.subsec_micros()).to_ne_bytes());
                o.set(libc::SOL_SOCKET, name, &tv);
            }
        }
        o.note_linger(fd);
        o
    }

    /// SO_LINGER as the kernel socket has it (on: the accepted sockets of
    /// a listener inherit it, and it decides between a RST and a FIN).
    pub(crate) fn note_linger(&self, fd: BorrowedFd<'_>) {
        if let Ok(Some(d)) = rustix::net::sockopt::socket_linger(fd) {
            let mut l = [0u8; 8];
            l[..4].copy_from_slice(&1i32.to_ne_bytes());
            l[4..].copy_from_slice(&(d.as_secs() as i32).to_ne_bytes());
            self.set(libc::SOL_SOCKET, libc::SO_LINGER, &l);
        }
    }

    pub(crate) fn set(&self, level: i32, name: i32, value: &[u8]) {
        let mut v = self.values.lock();
        v.retain(|(l, n, _)| (*l, *n) != (level, name));
        v.push((level, name, value.to_vec()));
    }

    /// Every option set, oldest first (replayed onto a kernel socket to
    /// answer as the kernel would: see `options`).
    pub(crate) fn entries(&self) -> Vec<(i32, i32, Vec<u8>)> {
        self.values.lock().clone()
    }

    /// What `snapshot` finds on a new socket nobody changed (`carry::
    /// pristine`): the kernel's defaults, without asking it.
    pub(crate) fn fresh_socket() -> Options {
        let o = Options::default();
        let off = 0i32.to_ne_bytes();
        o.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &off);
        o.set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, &off);
        o.set(libc::SOL_SOCKET, libc::SO_REUSEADDR, &off);
        o.set(libc::SOL_SOCKET, libc::SO_REUSEPORT, &off);
        o
    }

    /// A copy (a bound socket's options carried into its connection).
    pub(crate) fn snapshot_copy(&self) -> Options {
        Options {
            values: Mutex::new(self.values.lock().clone()),
        }
    }

    pub(crate) fn get(&self, level: i32, name: i32) -> Option<Vec<u8>> {
        let v = self.values.lock();
        v.iter()
            .find(|(l, n, _)| (*l, *n) == (level, name))
            .map(|(_, _, b)| b.clone())
    }

    pub(crate) fn get_int(&self, level: i32, name: i32) -> Option<i32> {
        let b = self.get(level, name)?;
        let mut raw = [0u8; 4];
        let n = b.len().min(4);
        raw[..n].copy_from_slice(&b[..n]);
        Some(i32::from_ne_bytes(raw))
    }

    /// In a forked child: a parent thread may have held the lock.
    pub(crate) fn reset_after_fork(&self) {
        self.values.reset_after_fork();
    }

    /// SO_LINGER set on with a zero timeout: close is abortive (a RST).
    pub(crate) fn linger_zero(&self) -> bool {
        match self.get(libc::SOL_SOCKET, libc::SO_LINGER) {
            Some(b) if b.len() >= 8 => {
                let on = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                let secs = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
                on != 0 && secs == 0
            }
            _ => false,
        }
    }

    /// SO_RCVTIMEO/SO_SNDTIMEO as set, if non-zero.
    pub(crate) fn timeout(&self, name: i32) -> Option<Duration> {
        let b = self.get(libc::SOL_SOCKET, name)?;
        if b.len() < 16 {
            return None;
        }
        let secs = i64::from_ne_bytes(b[0..8].try_into().ok()?);
        let usecs = i64::from_ne_bytes(b[8..16].try_into().ok()?);
        let d =
            Duration::from_secs(secs.max(0) as u64) + Duration::from_micros(usecs.max(0) as u64);
        (!d.is_zero()).then_some(d)
    }
}

/// SO_COOKIE (linux/socket.h; not in every libc crate version).
pub(crate) const SO_COOKIE: libc::c_int = 57;

/// An option the kernel does not copy from a listener to the sockets it
/// accepts (listener-only state), or our own SO_COOKIE.
fn inheritable(level: libc::c_int, name: libc::c_int) -> bool {
    !matches!(
        (level, name),
        (libc::SOL_SOCKET, SO_COOKIE)
            | (
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT | libc::TCP_FASTOPEN
            )
    )
}

/// An accepted connection starts with its listener's options.
pub(crate) fn inherit_options(listener: &Options, accepted: &Options) {
    let entries = listener.entries();
    if entries.is_empty() {
        return;
    }
    for (level, name, value) in entries {
        if inheritable(level, name) {
            accepted.set(level, name, &value);
        }
    }
    // Its priority is the SYN's (0), not the listener's.
    accepted.set(libc::SOL_SOCKET, libc::SO_PRIORITY, &0i32.to_ne_bytes());
}
