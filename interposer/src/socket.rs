//! Emulated sockets: a listener on a partition address, and a connection
//! carried by a connection segment (two rings in one sealed memfd).
//!
//! The fd the application holds is always a real kernel object: the
//! listener's rendezvous Unix socket, or the Unix connection between the
//! two processes. So close/poll/select/epoll/fork/dup behave natively; the
//! connection also gives each side a kernel signal (hang-up) when the other
//! process dies, and carries the doorbell bytes that wake a reader asleep
//! in poll.
#![deny(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lock::Mutex;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use shmnet_ring::{
    Consumer, Doorbell, Geometry, Producer, RingError, RoomWaiter, Segment, WaitKind, WaitPolicy,
};

use crate::handshake::{self, Kind, Message};
use crate::lookup::DialError;
use crate::pool;
use crate::registry;
use crate::rendezvous::Reservation;

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
        if let Ok(Some(d)) = so::socket_linger(fd) {
            let mut l = [0u8; 8];
            l[..4].copy_from_slice(&1i32.to_ne_bytes());
            l[4..].copy_from_slice(&(d.as_secs() as i32).to_ne_bytes());
            o.set(libc::SOL_SOCKET, libc::SO_LINGER, &l);
        }
        o
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

/// What an fd of ours is (always behind an Arc, so variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Socket {
    /// Bound to an emulated partition address, not listening yet.
    Bound(crate::listener::Bound),
    /// Listening, in either mode (see `listener`).
    Listener(crate::listener::Listener),
    Stream(Connection),
}

impl Socket {
    /// In a forked child (single-threaded, after the registry lock was
    /// reset): a lock held by a parent thread at the fork would stay locked
    /// forever here. The ring state such a thread was changing is shared
    /// memory and stays consistent word by word; what it had not published
    /// yet is simply not there.
    pub(crate) fn reset_locks_after_fork(&self) {
        match self {
            Socket::Bound(b) => b.reset_after_fork(),
            Socket::Stream(c) => {
                c.tx.reset_after_fork();
                c.rx.reset_after_fork();
                c.opts.reset_after_fork();
                c.carry.reset_after_fork();
            }
            Socket::Listener(l) => l.reset_after_fork(),
        }
    }

    pub(crate) fn family(&self) -> i32 {
        family_of(&self.local())
    }

    /// What goes across exec with the application's fds follows their
    /// close-on-exec flag (see `options::refresh_cloexec`): a listener's
    /// parts, a connection's carrier.
    pub(crate) fn set_cloexec(&self, cloexec: bool) {
        match self {
            Socket::Listener(l) => l.set_cloexec(cloexec),
            Socket::Stream(c) => c.set_cloexec(cloexec),
            Socket::Bound(_) => {}
        }
    }

    pub(crate) fn options(&self) -> &Options {
        match self {
            Socket::Bound(b) => &b.opts,
            Socket::Stream(c) => &c.opts,
            Socket::Listener(l) => &l.opts,
        }
    }

    pub(crate) fn local(&self) -> SocketAddr {
        match self {
            Socket::Bound(b) => b.local,
            Socket::Stream(c) => c.local,
            Socket::Listener(l) => l.local,
        }
    }
}

pub(crate) fn family_of(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// `addr` in the family of an IPv6 (`v6`) or IPv4 socket: IPv4 addresses
/// map into IPv6 (::ffff:a.b.c.d), mapped ones back; None for an IPv6
/// address on an IPv4 socket.
pub(crate) fn as_family(addr: SocketAddr, v6: bool) -> Option<SocketAddr> {
    use std::net::IpAddr;
    let ip = match (addr.ip(), v6) {
        (IpAddr::V4(ip), true) => IpAddr::V6(ip.to_ipv6_mapped()),
        (IpAddr::V6(ip), false) => IpAddr::V4(ip.to_ipv4_mapped()?),
        (ip, _) => ip,
    };
    Some(SocketAddr::new(ip, addr.port()))
}

/// The doorbell: one byte sent on the Unix connection wakes a peer asleep
/// in poll/epoll on its end. Holds its own dup of the connection, so it
/// outlives whatever the application does with its fd number.
///
/// The same connection carries write-space: a writer that finds the ring
/// full sends "filler" bytes until its own end stops being writable (the
/// kernel's test for a Unix stream socket is `wmem <= sndbuf / 4`), and the
/// reader takes them when it frees room. Freeing their buffers raises the
/// kernel's write-space event on the writer's end, so POLLOUT/EPOLLOUT —
/// level- or edge-triggered, alone or with EPOLLIN — follow the ring.
/// Filler and doorbell bytes are the same byte and counted together: a
/// reader may take any byte that was counted, and keeps one while its ring
/// holds data so that it stays readable.
pub(crate) struct Bell {
    fd: InternalFd,
    /// Bytes taken from our end so far (doorbells and fillers; wrapping),
    /// kept in the segment (processes sharing the connection after fork
    /// must agree on it); set once the receive half is attached. The peer
    /// counts the bytes it sends, so `sent - taken` are queued or on their
    /// way.
    taken: std::sync::OnceLock<shmnet_ring::notify::TakenCount>,
    /// A byte that was not a doorbell was taken while freeing room.
    foreign: AtomicBool,
    /// Filler bytes that make our end unwritable (a quarter of its send
    /// buffer, plus one).
    fill_bytes: usize,
    /// The connection's last reference in this process is going
    /// (`Drop for Connection`): in a sandbox, no more rings.
    closing: AtomicBool,
}

/// An error on our end of the Unix connection that means the peer's end is
/// gone: the kernel reports ECONNRESET once when a process closes (or
/// exits) with bytes unread on its end — doorbells a lazy reader left,
/// not data. The ring's own state then tells end of stream from a reset.
fn peer_gone(e: Errno) -> bool {
    e == Errno::CONNRESET || e == Errno::PIPE
}

/// The byte a doorbell rings with.
const DOORBELL: u8 = 1;

/// Send buffer of the Unix connection: the kernel doubles the value set, so
/// 32 KiB, unwritable above 8 KiB in flight. A doorbell byte costs 768
/// bytes of that, so a few pending doorbells never make a writer with room
/// look unwritable, and one filler send (8 KiB) makes it so.
const BELL_SNDBUF: usize = 16 << 10;

/// What is waiting on our end of the Unix connection.
struct Pending {
    /// The peer's end is closed (or shut for writing) and nothing is queued.
    hung_up: bool,
    /// A byte that is not a doorbell: data the peer wrote past the library
    /// (stdio on the socket, a raw syscall), which the ring cannot put back
    /// in order.
    foreign: bool,
}

impl Bell {
    pub(crate) fn new(conn: BorrowedFd<'_>) -> Result<Arc<Bell>, Errno> {
        let fd = InternalFd::dup(conn)?;
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&fd, BELL_SNDBUF);
        let sndbuf = rustix::net::sockopt::socket_send_buffer_size(&fd).unwrap_or(BELL_SNDBUF * 2);
        Ok(Arc::new(Bell {
            fd,
            taken: std::sync::OnceLock::new(),
            foreign: AtomicBool::new(false),
            fill_bytes: sndbuf / 4 + 1,
            closing: AtomicBool::new(false),
        }))
    }

    fn taken(&self) -> u32 {
        self.taken.get().map_or(0, |t| t.get())
    }

    /// Bytes queued on our end.
    fn queued(&self) -> usize {
        if crate::sandbox::active() {
            return self.queued_sandboxed();
        }
        rustix::io::ioctl_fionread(&self.fd).map_or(0, |n| n as usize)
    }

    /// Looks at the queued bytes without taking them.
    fn peek(&self) -> Pending {
        if crate::sandbox::active() {
            return self.peek_sandboxed();
        }
        let mut buf = [0u8; 64];
        loop {
            return match rustix::net::recv(
                &self.fd,
                &mut buf,
                RecvFlags::PEEK | RecvFlags::DONTWAIT,
            ) {
                Ok((0, _)) => Pending {
                    hung_up: true,
                    foreign: false,
                },
                Ok((n, _)) => Pending {
                    hung_up: false,
                    foreign: buf[..n].iter().any(|&b| b != DOORBELL),
                },
                Err(Errno::INTR) => continue,
                Err(e) => Pending {
                    hung_up: peer_gone(e),
                    foreign: false,
                },
            };
        }
    }

    /// Takes up to `n` queued bytes; returns how many it took, and whether
    /// it met the end of the stream.
    fn take(&self, n: usize) -> (usize, bool) {
        if crate::sandbox::active() {
            return self.take_sandboxed(n);
        }
        let mut buf = [0u8; 8192];
        let mut got = 0;
        while got < n {
            let want = (n - got).min(buf.len());
            match rustix::net::recv(&self.fd, &mut buf[..want], RecvFlags::DONTWAIT) {
                Ok((0, _)) => return (self.took(got), true),
                Ok((k, _)) => {
                    if buf[..k].iter().any(|&b| b != DOORBELL) {
                        self.foreign.store(true, Ordering::Relaxed);
                    }
                    got += k;
                }
                Err(Errno::INTR) => {}
                Err(e) => return (self.took(got), peer_gone(e)),
            }
        }
        (self.took(got), false)
    }

    fn took(&self, n: usize) -> usize {
        if let Some(t) = self.taken.get() {
            t.add(n as u32);
        }
        n
    }

    /// True once the peer's end is closed (its process may be gone).
    fn hung_up(&self) -> bool {
        if crate::sandbox::active() {
            return self.poll_now(0) & (libc::POLLHUP | libc::POLLERR) != 0;
        }
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::empty(),
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) => fds[0]
                .revents()
                .intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR),
            Err(_) => false,
        }
    }

    /// Whether the kernel reports our end writable right now.
    fn kernel_writable(&self) -> bool {
        if crate::sandbox::active() {
            return self.room_for_write();
        }
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::OUT,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&zero)).is_ok_and(|n| n > 0)
    }

    /// Makes our end unwritable until the reader frees room (see the type's
    /// docs): filler bytes, then one byte of its own so that the reader,
    /// which keeps the last queued byte, frees every filler buffer. Counted
    /// in `tx` before they are sent; what could not be sent is taken back.
    fn fill(&self, tx: &Producer) {
        static FILLER: [u8; 8192] = [DOORBELL; 8192];
        if !self.kernel_writable() {
            return; // unwritable already: filler from before is still queued
        }
        let total = self.fill_bytes + 1;
        tx.notify().note_filler(total as u32);
        let mut sent = 0;
        while sent < self.fill_bytes {
            let k = (self.fill_bytes - sent).min(FILLER.len());
            match self.send_bytes(&FILLER[..k]) {
                Ok(n) => sent += n,
                Err(Errno::INTR) => {}
                Err(_) => break,
            }
        }
        loop {
            match self.send_bytes(&[DOORBELL]) {
                Ok(n) => sent += n,
                Err(Errno::INTR) => continue,
                Err(_) => {}
            }
            break;
        }
        if sent < total {
            tx.notify().unnote_filler((total - sent) as u32);
        }
    }

    fn nonblocking(&self) -> bool {
        rustix::fs::fcntl_getfl(&self.fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
    }

    /// Waits for a doorbell byte or hang-up; Err(INTR) on a signal.
    ///
    /// Without a timeout this is a blocking `recv(MSG_PEEK)` of one byte,
    /// so the kernel applies its own signal rules: restarted under
    /// SA_RESTART, EINTR otherwise — exactly what the application's recv on
    /// a kernel socket would do. (Only called when the fd is blocking.) The
    /// byte stays queued: the read that follows may leave data in the ring
    /// (a short buffer, MSG_PEEK), and then the fd must stay readable; it is
    /// taken when the ring is emptied. (Taking it here lost readability
    /// after such reads; a review reproduced it.)
    fn wait(&self, timeout: Option<Duration>) -> Result<Woke, Errno> {
        if timeout.is_none() && crate::sandbox::active() {
            return self.wait_sandboxed();
        }
        if timeout.is_none() {
            let mut one = [0u8; 1];
            return match rustix::net::recv(&self.fd, &mut one, RecvFlags::PEEK) {
                Ok((0, _)) => Ok(Woke::HungUp),
                Ok(_) => Ok(Woke::Rung),
                // Made non-blocking meanwhile (by another process).
                Err(Errno::AGAIN) => Ok(Woke::Rung),
                Err(e) if peer_gone(e) => Ok(Woke::HungUp),
                Err(e) => Err(e),
            };
        }
        handshake::wait_readable(self.fd.as_fd(), timeout).map(|_| Woke::Rung)
    }

    /// A lazy reader's sleep (see `Connection::lazy`): a blocking recv that
    /// takes the bytes it wakes on, so a wake-up costs one system call, as
    /// on a kernel socket. Leaving the fd unreadable while the ring may
    /// still hold data (a short read) is fine for a lazy reader: poll and
    /// select look at the ring first, and joining an epoll set turns the
    /// reader eager (`Connection::watch`). Err(INTR) on a signal, with the
    /// kernel's own SA_RESTART rules when there is no timeout.
    fn wait_taking(&self, timeout: Option<Duration>) -> Result<Woke, Errno> {
        let mut flags = RecvFlags::empty();
        if crate::sandbox::active() {
            // No blocking recv (nor MSG_DONTWAIT): poll, then a read that
            // finds bytes (or the end) waiting.
            self.wait_readable_sandboxed(timeout)?;
        } else if timeout.is_some() {
            handshake::wait_readable(self.fd.as_fd(), timeout)?;
            flags = RecvFlags::DONTWAIT;
        }
        let mut buf = [0u8; 64];
        let got = if crate::sandbox::active() {
            if self.poll_now(libc::POLLIN) == 0 {
                return Ok(Woke::Rung); // the wait timed out
            }
            rustix::io::read(&self.fd, &mut buf).map(|n| (n, ()))
        } else {
            rustix::net::recv(&self.fd, &mut buf, flags).map(|(n, _)| (n, ()))
        };
        match got {
            Ok((0, _)) => Ok(Woke::HungUp),
            Ok((n, _)) => {
                if buf[..n].iter().any(|&b| b != DOORBELL) {
                    self.foreign.store(true, Ordering::Relaxed);
                }
                self.took(n);
                Ok(Woke::Rung)
            }
            // Nothing queued after a timed wait, or made non-blocking
            // meanwhile (by another process).
            Err(Errno::AGAIN) => Ok(Woke::Rung),
            Err(e) if peer_gone(e) => Ok(Woke::HungUp),
            Err(e) => Err(e),
        }
    }
}

impl Doorbell for Bell {
    fn ring(&self) -> bool {
        if crate::sandbox::active() {
            return self.ring_sandboxed();
        }
        loop {
            return match rustix::net::send(
                &self.fd,
                &[DOORBELL],
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => n == 1,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    log!(debug, "doorbell not rung: {e}");
                    false
                }
            };
        }
    }
}

/// The doorbell in a sandboxed process (see `sandbox`): read, write and
/// the poll system call only. A write never blocks (a zero-timeout poll
/// for room first: the fd may be blocking, and it shares O_NONBLOCK with
/// the application's) and never goes to a closed peer (SIGPIPE: no
/// MSG_NOSIGNAL); a read only follows a poll that found bytes or the end.
/// Without FIONREAD or MSG_PEEK, the bytes queued are what the peer
/// counted and we did not take.
impl Bell {
    /// revents of a zero-timeout poll for `events` (0 on error).
    fn poll_now(&self, events: i16) -> i16 {
        crate::sys::poll_fd(self.fd.as_fd(), events, 0).unwrap_or(0)
    }

    /// Room for a write that cannot block, and the peer's end is open.
    /// Unwritable (a quarter of the send buffer in flight) means bytes of
    /// ours are queued at the peer, which keep its end readable anyway.
    fn room_for_write(&self) -> bool {
        let r = self.poll_now(libc::POLLOUT);
        r & libc::POLLOUT != 0 && r & (libc::POLLHUP | libc::POLLERR) == 0
    }

    /// Sends bytes on our end: `send(MSG_DONTWAIT | MSG_NOSIGNAL)`, or in a
    /// sandbox `write` (the caller made sure of room and an open peer).
    fn send_bytes(&self, bytes: &[u8]) -> Result<usize, Errno> {
        if crate::sandbox::active() {
            return rustix::io::write(&self.fd, bytes);
        }
        rustix::net::send(&self.fd, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)
    }

    fn ring_sandboxed(&self) -> bool {
        // Our last close: the kernel's hang-up, when our end closes right
        // after, wakes the peer; a write here could meet a peer that closed
        // a moment before and raise SIGPIPE (seen in sandbox.rs).
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        if !self.room_for_write() {
            return false; // counted back by the producer
        }
        loop {
            return match rustix::io::write(&self.fd, &[DOORBELL]) {
                Ok(n) => n == 1,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    log!(debug, "doorbell not rung: {e}");
                    false
                }
            };
        }
    }

    /// The peer's end is shut (or in error): nothing more can come.
    fn peer_shut(&self, revents: i16) -> bool {
        revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    fn queued_sandboxed(&self) -> usize {
        let r = self.poll_now(libc::POLLIN | libc::POLLRDHUP);
        if r & libc::POLLIN == 0 {
            return 0;
        }
        if self.peer_shut(r) {
            // Readable may only mean the end: take what is there (no ring
            // can follow), and then nothing is queued.
            self.take_sandboxed(usize::MAX);
            return 0;
        }
        let owed = self
            .taken
            .get()
            .map_or(1, |t| t.rung().wrapping_sub(t.get()) as usize);
        owed.clamp(1, 1 << 20)
    }

    fn peek_sandboxed(&self) -> Pending {
        let r = self.poll_now(libc::POLLIN | libc::POLLRDHUP);
        Pending {
            hung_up: self.peer_shut(r) && self.queued_sandboxed() == 0,
            // Seen when the bytes are taken (no MSG_PEEK).
            foreign: false,
        }
    }

    fn take_sandboxed(&self, n: usize) -> (usize, bool) {
        let mut buf = [0u8; 8192];
        let mut got = 0;
        while got < n {
            if self.poll_now(libc::POLLIN) == 0 {
                break;
            }
            let want = (n - got).min(buf.len());
            match rustix::io::read(&self.fd, &mut buf[..want]) {
                Ok(0) => return (self.took(got), true),
                Ok(k) => {
                    if buf[..k].iter().any(|&b| b != DOORBELL) {
                        self.foreign.store(true, Ordering::Relaxed);
                    }
                    got += k;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break,
                Err(e) => return (self.took(got), peer_gone(e)),
            }
        }
        (self.took(got), false)
    }

    /// Sleeps in poll until bytes or the end are queued (or `timeout`); a
    /// signal restarts the wait when the kernel would restart a blocking
    /// recv (SA_RESTART; poll itself never restarts after a handler).
    fn wait_readable_sandboxed(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        let ms = timeout.map_or(-1, |t| {
            t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        loop {
            return match crate::sys::poll_fd(self.fd.as_fd(), libc::POLLIN | libc::POLLRDHUP, ms) {
                Ok(_) => Ok(()),
                Err(Errno::INTR)
                    if timeout.is_none() && crate::sys::interrupted_call_restarts() =>
                {
                    continue
                }
                Err(e) => Err(e),
            };
        }
    }

    /// `wait` without a timeout: the byte stays queued (see `wait`).
    fn wait_sandboxed(&self) -> Result<Woke, Errno> {
        self.wait_readable_sandboxed(None)?;
        let r = self.poll_now(libc::POLLIN | libc::POLLRDHUP);
        if self.peer_shut(r) && self.queued_sandboxed() == 0 {
            return Ok(Woke::HungUp);
        }
        Ok(Woke::Rung)
    }
}

/// Why `Bell::wait` returned.
enum Woke {
    /// A doorbell (or the deadline, or a spurious wake-up): look again.
    Rung,
    /// The peer's end is closed, or ours shut for reading.
    HungUp,
}

/// The consumer's side of write-space: when it frees room while the writer
/// waits in poll/epoll, it takes the writer's filler (all queued bytes but
/// the last, which keeps our end readable while the ring holds data; the
/// writer sent a single byte after its filler, so every filler buffer is
/// freed and the writer's end becomes writable).
struct RoomBell(Arc<Bell>);

impl Doorbell for RoomBell {
    fn ring(&self) -> bool {
        let q = self.0.queued();
        if q > 1 {
            self.0.take(q - 1);
        }
        true
    }
}

/// The receive side's state, under one lock.
struct Rx {
    /// The connector's receive half exists once the acceptor initialised
    /// its direction.
    consumer: Option<Consumer>,
}

/// How long a reader that emptied its ring waits for a doorbell byte that
/// was counted but is not there yet (see `Connection::settle`).
const SETTLE_PATIENCE: Duration = Duration::from_millis(100);

/// One side of an emulated TCP connection.
pub(crate) struct Connection {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    seg: Segment,
    /// Held only while copying: a writer waiting for room sleeps on `room`.
    tx: Mutex<Producer>,
    room: RoomWaiter,
    /// Held only while copying; a reader sleeps in poll without it.
    rx: Mutex<Rx>,
    bell: Arc<Bell>,
    _port: Option<Reservation>,
    fork_generation: u32,
    /// Another process may hold the connection too, as after fork: it was
    /// re-attached after exec (the parent of a forked-then-exec'd child may
    /// have kept it), or it got an inheritable carrier before a program was
    /// run (posix_spawn, system and popen make a child without fork's
    /// handlers, which would have marked it shared).
    exec_shared: AtomicBool,
    /// What a program exec'd with this connection needs (see `inherit`).
    carry: Mutex<Carry>,
    shut_rd: AtomicBool,
    shut_wr: Arc<AtomicBool>,
    /// Registered with EPOLLET somewhere (see `readiness`).
    edge: AtomicBool,
    /// Added to an epoll set: from then on the kernel alone reports its
    /// readiness, so the reader keeps its flag up (see `lazy`).
    watched: AtomicBool,
    /// Threads of ours in a hooked poll/select that may sleep in the kernel
    /// on this fd: they need its doorbell bytes, so no reader takes them
    /// in its sleep meanwhile (`begin_taking`).
    waiters: AtomicU32,
    /// Threads asleep in a taking wait (`Step::Sleep`) on this connection.
    takers: AtomicU32,
    /// O_NONBLOCK: 0 unknown, 1 blocking, 2 non-blocking (`nonblocking`).
    nonblock: std::sync::atomic::AtomicU8,
    /// This side wrote since it last read (see `recv`'s spinning).
    replied: AtomicBool,
    /// A lock-free look at the receive ring, for spinning (set with the
    /// receive half).
    probe: std::sync::OnceLock<shmnet_ring::Probe>,
    /// When a pure consumer last read (see `note_read`).
    last_read: std::sync::atomic::AtomicU64,
    /// Its last read was large (a stream of large writes: `watch_ring`;
    /// small ones are gathered instead).
    bulk: AtomicBool,
    /// The producer's busy word did not clear within the patience once.
    busy_stuck: AtomicBool,
    /// SO_ERROR: an error to report once.
    pub error: AtomicI32,
    spin: Duration,
    /// Blocking sends up to this size go into the ring whole.
    atomic_send: usize,
    pub opts: Options,
    /// How to keep the segment for reuse once this connection is gone.
    pool_ticket: Option<pool::Ticket>,
}

/// The segment's memfd and the carrier that takes it across exec
/// (`inherit::make_carrier`), made only when an exec may follow while one
/// of the application's fds for the connection is inheritable
/// (`Connection::ready_for_exec`): nothing at connect or accept.
#[derive(Default)]
struct Carry {
    memfd: Option<KeptMemfd>,
    carrier: Option<InternalFd>,
    /// The carrier is inheritable (not close-on-exec).
    inheritable: bool,
    /// One of the application's fds for the connection is inheritable, as
    /// last told (`Connection::set_cloexec`).
    wanted: bool,
}

/// RLIMIT_NOFILE's soft limit as last seen: 0 not looked up yet,
/// `u64::MAX` unlimited, else the limit plus one (a limit of 0 exists).
static NOFILE: AtomicU64 = AtomicU64::new(0);

/// RLIMIT_NOFILE's soft limit (None: unlimited). Looked up once and then
/// kept: the `setrlimit`/`prlimit` hooks tell it when this process changes
/// it (nginx's worker_rlimit_nofile lowers it after start), so the fd
/// floor never costs a system call per fd. A change made past those hooks
/// (another process's prlimit on us, a raw system call) is noticed when a
/// move to the floor fails with EINVAL (`InternalFd`).
pub(crate) fn nofile_limit() -> Option<u64> {
    match NOFILE.load(Ordering::Relaxed) {
        0 => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
            set_nofile_limit(Some(limit));
            limit
        }
        u64::MAX => None,
        n => Some(n - 1),
    }
}

/// The process's RLIMIT_NOFILE soft limit is now `limit` (None for
/// unlimited), or unknown (`None` outer: looked up at the next need).
pub(crate) fn set_nofile_limit(limit: Option<Option<u64>>) {
    let v = match limit {
        None => 0,
        Some(None) => u64::MAX,
        Some(Some(n)) => n.saturating_add(1).min(u64::MAX - 1),
    };
    NOFILE.store(v, Ordering::Relaxed);
}

/// The lowest number for the library's own fds (doorbells, reservations):
/// half the fd limit (at most 4096), so they stay out of the dense low range
/// that programs size their tables by (wrk's event loop holds 3 fds per
/// connection; an fd of ours among them made its connects fail). Follows
/// the limit as the program changes it (`nofile_limit`): fds at or above
/// the limit cannot be made.
pub(crate) fn internal_fd_floor() -> i32 {
    let limit = nofile_limit().unwrap_or(1024);
    (limit / 2).clamp(3, 4096) as i32
}

/// F_DUPFD_CLOEXEC to `floor` or above; an EINVAL (the floor is at or
/// above the limit: it was lowered past our hooks) makes the limit looked
/// up again.
fn dup_high(fd: BorrowedFd<'_>, floor: i32) -> Result<OwnedFd, Errno> {
    rustix::io::fcntl_dupfd_cloexec(fd, floor).inspect_err(|e| {
        if *e == Errno::INVAL {
            set_nofile_limit(None);
        }
    })
}

/// One of the library's own fds, kept at `internal_fd_floor()` or above and
/// marked in the fd table, so the application's close/close_range/closefrom
/// cannot take it from us (see `fdtable::set_internal`).
#[derive(Debug)]
pub(crate) struct InternalFd(Option<OwnedFd>);

impl InternalFd {
    /// Takes `fd`, moving it up out of the application's range if it is not
    /// there already (keeps it where it is if that fails).
    pub(crate) fn new(fd: OwnedFd) -> InternalFd {
        use std::os::fd::AsRawFd;
        let floor = internal_fd_floor();
        let fd = if fd.as_raw_fd() >= floor {
            fd
        } else {
            dup_high(fd.as_fd(), floor).unwrap_or(fd)
        };
        crate::fdtable::set_internal(fd.as_raw_fd(), true);
        InternalFd(Some(fd))
    }

    /// The fd, no longer marked as the library's (to hand to an owner that
    /// closes it as a plain fd).
    pub(crate) fn into_owned(mut self) -> OwnedFd {
        use std::os::fd::AsRawFd;
        let fd = self
            .0
            .take()
            .expect("an InternalFd holds its fd until dropped");
        crate::fdtable::set_internal(fd.as_raw_fd(), false);
        fd
    }

    /// A copy of `fd` of our own (up out of the application's range when
    /// there is room there).
    pub(crate) fn dup(fd: BorrowedFd<'_>) -> Result<InternalFd, Errno> {
        let copy = match dup_high(fd, internal_fd_floor()) {
            Err(Errno::INVAL | Errno::MFILE) => rustix::io::fcntl_dupfd_cloexec(fd, 0)?,
            r => r?,
        };
        Ok(InternalFd::new(copy))
    }
}

impl AsFd for InternalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // Some until dropped.
        match &self.0 {
            Some(fd) => fd.as_fd(),
            None => unreachable!("an InternalFd is used after its drop"),
        }
    }
}

impl Drop for InternalFd {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(fd) = self.0.take() {
            // Unmarked first: the close that follows goes through our own
            // close hook, which must let it pass.
            crate::fdtable::set_internal(fd.as_raw_fd(), false);
            // Closed with close(2) alone: std's OwnedFd drop, built with
            // debug assertions, asks fcntl(F_GETFD) first, which a sandbox
            // filter kills for.
            crate::sys::close_fd(fd);
        }
    }
}

/// A segment's memfd kept for a carrier (`Connection::ready_for_exec`): it
/// cannot be had later (the mapping gives no fd back without
/// CAP_CHECKPOINT_RESTORE), so every connection keeps one — where it fits:
/// at `internal_fd_floor()` or above (never one of the application's low
/// numbers), and while the kept memfds fill at most a quarter of the room
/// between the floor and the fd limit, so that doorbells, which must have
/// an fd, keep the rest (at the default limit of 1024: 128 kept memfds,
/// and a process holds 384 connections where it held 512 before memfds
/// were kept; python makes its sockets close-on-exec and inheritable only
/// to pass them, so that flag says nothing at creation). A connection
/// without one reads as closed after exec.
pub(crate) struct KeptMemfd(Option<InternalFd>);

/// Memfds kept now (`KeptMemfd`), in connections and in the pool.
static KEPT_MEMFDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl KeptMemfd {
    pub(crate) fn new(fd: OwnedFd) -> Option<KeptMemfd> {
        use std::os::fd::AsRawFd;
        let floor = internal_fd_floor();
        let room = nofile_limit()
            .unwrap_or(1024)
            .saturating_sub(floor as u64)
            .min(crate::fdtable::CAPACITY as u64) as usize;
        if KEPT_MEMFDS.fetch_add(1, Ordering::Relaxed) >= room / 4 {
            KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let kept = if fd.as_raw_fd() >= floor {
            Some(InternalFd::new(fd))
        } else {
            // The low fd is closed here (dropped).
            dup_high(fd.as_fd(), floor).ok().map(InternalFd::new)
        };
        if kept.is_none() {
            KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
        }
        kept.map(|fd| KeptMemfd(Some(fd)))
    }

    /// The fd, no longer counted nor marked as the library's.
    pub(crate) fn into_owned(mut self) -> OwnedFd {
        let fd = self
            .0
            .take()
            .expect("a KeptMemfd holds its fd until dropped");
        KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
        fd.into_owned()
    }
}

impl AsFd for KeptMemfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // Some until dropped or given away.
        match &self.0 {
            Some(fd) => fd.as_fd(),
            None => unreachable!("a KeptMemfd is used after it gave its fd away"),
        }
    }
}

impl Drop for KeptMemfd {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            KEPT_MEMFDS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A new connection segment, unless it cannot be made: the kernel's errno
/// for running out of fds or memory (the caller falls back to kernel TCP
/// in the default mode), ENOBUFS otherwise. Its memfd is sized with
/// ftruncate, which raises SIGXFSZ — killing a C program — when the file
/// would exceed RLIMIT_FSIZE: so that limit is looked at first, every
/// time (a program may lower it).
fn new_segment(geo: Geometry) -> Result<Segment, Errno> {
    let size = geo.total_bytes() as u64;
    if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Fsize).current {
        if limit < size {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                crate::log::always(format_args!(
                    "no shared-memory connections: RLIMIT_FSIZE ({limit} bytes) is below a \
                     connection segment's {size} bytes (ulimit -f)"
                ));
            }
            return Err(Errno::NOBUFS);
        }
    }
    Segment::create(geo).map_err(|e| {
        let errno = match &e {
            shmnet_ring::AttachError::Os(io) => {
                match io.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(e @ (Errno::MFILE | Errno::NFILE | Errno::NOMEM)) => e,
                    _ => Errno::NOBUFS,
                }
            }
            _ => Errno::NOBUFS,
        };
        log!(warn, "cannot create a connection segment: {e}");
        errno
    })
}

/// What a failed data call turns into.
fn ring_errno(e: RingError) -> Errno {
    Errno::from_raw_os_error(e.errno())
}

/// `now + t`, or no deadline when that overflows (a huge SO_RCVTIMEO is
/// "forever" for the kernel too).
fn deadline_after(t: Option<Duration>) -> Option<Instant> {
    t.and_then(|t| Instant::now().checked_add(t))
}

/// Time left until `deadline`; Err(AGAIN) once it passed (SO_*TIMEO expiry).
fn time_left(deadline: Option<Instant>) -> Result<Option<Duration>, Errno> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.saturating_duration_since(Instant::now()) {
            l if l.is_zero() => Err(Errno::AGAIN),
            l => Ok(Some(l)),
        },
    }
}

impl Connection {
    pub(crate) fn new(
        seg: Segment,
        local: SocketAddr,
        peer: SocketAddr,
        bell: Arc<Bell>,
        port: Option<Reservation>,
        pool_ticket: Option<pool::Ticket>,
    ) -> Result<Connection, Errno> {
        Connection::build(seg, local, peer, bell, port, pool_ticket, Carry::default())
    }

    /// A connection inherited across exec, on its segment mapped again
    /// (`Segment::reattach`) and the carrier it came with (inheritable, as
    /// the application's fds that brought it). Treated as shared with
    /// another process: the program that exec'd may have forked first and
    /// kept its copy.
    pub(crate) fn adopt(
        seg: Segment,
        local: SocketAddr,
        peer: SocketAddr,
        bell: Arc<Bell>,
        carrier: InternalFd,
    ) -> Result<Connection, Errno> {
        let carry = Carry {
            memfd: None,
            carrier: Some(carrier),
            inheritable: true,
            wanted: true,
        };
        Connection::build(seg, local, peer, bell, None, None, carry)
    }

    fn build(
        mut seg: Segment,
        local: SocketAddr,
        peer: SocketAddr,
        bell: Arc<Bell>,
        port: Option<Reservation>,
        pool_ticket: Option<pool::Ticket>,
        mut carry: Carry,
    ) -> Result<Connection, Errno> {
        let inherited = carry.carrier.is_some();
        // Kept for a carrier (`ready_for_exec`), where there is room for
        // it; an inherited connection has its carrier already, which holds
        // the segment.
        if inherited {
            seg.forget_fd();
        } else {
            carry.memfd = seg.take_fd().and_then(KeptMemfd::new);
        }
        let mut tx = seg.producer().map_err(|_| Errno::PROTO)?;
        tx.set_doorbell(bell.clone());
        let ring_bytes = seg.geometry().channel_bytes();
        let room = tx.room_waiter();
        let spin = crate::config::get()
            .map_or(Duration::ZERO, |c| Duration::from_micros(c.spin_us.into()));
        let conn = Connection {
            local,
            peer,
            seg,
            tx: Mutex::new(tx),
            room,
            rx: Mutex::new(Rx { consumer: None }),
            bell,
            _port: port,
            fork_generation: registry::fork_generation(),
            exec_shared: AtomicBool::new(inherited),
            carry: Mutex::new(carry),
            shut_rd: AtomicBool::new(false),
            edge: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            waiters: AtomicU32::new(0),
            takers: AtomicU32::new(0),
            nonblock: std::sync::atomic::AtomicU8::new(0),
            // A new connection expects traffic soon (a request after
            // connect, a greeting after accept): its first read may spin.
            replied: AtomicBool::new(true),
            probe: std::sync::OnceLock::new(),
            last_read: std::sync::atomic::AtomicU64::new(0),
            bulk: AtomicBool::new(false),
            busy_stuck: AtomicBool::new(false),
            shut_wr: Arc::new(AtomicBool::new(false)),
            error: AtomicI32::new(0),
            spin,
            atomic_send: (ring_bytes / 2).min(64 << 10),
            opts: Options::default(),
            pool_ticket,
        };
        // The acceptor's receive half is ready at once; the connector's once
        // the acceptor initialised its direction (see `receiver`).
        conn.receiver(&mut conn.rx.lock().consumer);
        Ok(conn)
    }

    /// The connecting side: creates the segment, connects to the listener's
    /// rendezvous with `dial` (which also checks whom it reached) and sends
    /// the connect message (claim 83). Returns the Unix connection (to
    /// become the application's fd) and the connection.
    pub(crate) fn connect(
        dial: &dyn Fn() -> Result<OwnedFd, DialError>,
        local: Reservation,
        peer: SocketAddr,
        ring_bytes: usize,
        opts: Options,
        nonblocking: bool,
    ) -> Result<(OwnedFd, Connection), DialError> {
        let generation = registry::fork_generation();
        let geo = Geometry::for_ring_bytes(ring_bytes as u64).map_err(|_| Errno::INVAL)?;
        let fresh = || new_segment(geo);
        let me = local.addr;
        let mut hello = Message {
            kind: Kind::Connect,
            addr: me,
            status: 0,
            dest: peer,
            key: 0,
        };
        // A segment shared with the acceptor process before, if we keep one
        // for this address (see `pool`); else a new one. Either comes first:
        // a listener that sees our connection before our message parks it,
        // so nothing slow may come between connect and send.
        let (mut seg, reuse) = match pool::offer_for(peer) {
            Some((seg, ticket)) => (seg, Some(ticket.key)),
            None => (fresh()?, None),
        };
        hello.key = reuse.unwrap_or_else(pool::new_key);
        let mut sock = dial()?;
        let refused = |_| DialError::Os(Errno::CONNREFUSED);
        let bell;
        if reuse.is_some() {
            hello.kind = Kind::Reuse;
            handshake::send(sock.as_fd(), &hello, None).map_err(refused)?;
            // Set up our end while the acceptor wakes up.
            rustix::io::ioctl_fionbio(&sock, false)?;
            let mut early = Some(Bell::new(sock.as_fd())?);
            // The verdict comes once the application accepts: normally
            // within microseconds. An acceptor that does not accept until we
            // do something else gets a fresh connection after a short wait.
            let patience = Duration::from_micros(if nonblocking { 500 } else { 2000 });
            let spin = Duration::from_micros(100);
            let verdict = match handshake::recv_verdict(sock.as_fd(), spin, patience)? {
                None if seg.withdraw() => None,
                // Claimed just now: the acceptor sends its answer next.
                None => handshake::recv_verdict(sock.as_fd(), spin, Duration::from_secs(1))?,
                v => v,
            };
            match verdict {
                Some(handshake::ACCEPTED) => {}
                Some(_) => {
                    // Declined: a new segment, on the same connection.
                    seg = fresh()?;
                    hello.kind = Kind::Connect;
                    hello.key = pool::new_key();
                    handshake::send(sock.as_fd(), &hello, seg.fd()).map_err(refused)?;
                }
                None => {
                    // Withdrawn: this connection is abandoned (the acceptor
                    // declines it if it ever looks); a new one.
                    log!(
                        debug,
                        "connect to {peer}: reuse offer unanswered; fresh segment"
                    );
                    pool::cool_down();
                    seg = fresh()?;
                    hello.kind = Kind::Connect;
                    hello.key = pool::new_key();
                    early = None;
                    sock = dial()?;
                    handshake::send(sock.as_fd(), &hello, seg.fd()).map_err(refused)?;
                    rustix::io::ioctl_fionbio(&sock, false)?;
                }
            }
            bell = match early {
                Some(b) => b,
                None => Bell::new(sock.as_fd())?,
            };
        } else {
            // The listener went away between connect and send: refused.
            handshake::send(sock.as_fd(), &hello, seg.fd()).map_err(refused)?;
            rustix::io::ioctl_fionbio(&sock, false)?;
            bell = Bell::new(sock.as_fd())?;
        }
        let ticket = pool::Ticket {
            key: hello.key,
            generation,
            side: pool::Side::Connector { dest: peer },
        };
        let mut conn = Connection::new(seg, me, peer, bell, Some(local), Some(ticket))?;
        conn.opts = opts;
        Ok((sock, conn))
    }

    /// Whether the fd is non-blocking (O_NONBLOCK of the open file),
    /// remembered between calls: the fcntl hooks forget it when the
    /// application changes it. Looked up every time once another process
    /// shares the file (it may change the flag past us).
    fn nonblocking(&self) -> bool {
        match self.nonblock.load(Ordering::Relaxed) {
            1 if !self.shared() => false,
            2 if !self.shared() => true,
            // Sandboxed: no fcntl; what was remembered before the filter
            // went on (`remember_nonblocking`), or blocking, the default.
            v if crate::sandbox::active() => v == 2,
            _ => {
                let nb = self.bell.nonblocking();
                self.nonblock
                    .store(if nb { 2 } else { 1 }, Ordering::Relaxed);
                nb
            }
        }
    }

    /// Looks O_NONBLOCK up now, for `nonblocking` to use once it cannot
    /// (before a seccomp filter goes on).
    pub(crate) fn remember_nonblocking(&self) {
        let nb = self.bell.nonblocking();
        self.nonblock
            .store(if nb { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// The application changed O_NONBLOCK (F_SETFL, FIONBIO).
    pub(crate) fn forget_nonblocking(&self) {
        self.nonblock.store(0, Ordering::Relaxed);
    }

    /// Whether another process may share this connection (a fork since it
    /// was made, or `exec_shared`): then each direction is also serialised
    /// across processes.
    fn shared(&self) -> bool {
        self.exec_shared.load(Ordering::Relaxed)
            || self.fork_generation != registry::fork_generation()
    }

    /// Follows the application's fds' close-on-exec flag (see
    /// `Socket::set_cloexec`): remembered, and followed by the carrier if
    /// there is one. None is made here: carriers cost ~10 system calls, and
    /// most inheritable connections (a C server's accept without
    /// SOCK_CLOEXEC) never see an exec; `ready_for_exec` makes it before
    /// anything that may exec (fork, posix_spawn, system, popen, the exec
    /// family).
    pub(crate) fn set_cloexec(&self, cloexec: bool) {
        let mut carry = self.carry.lock();
        carry.wanted = !cloexec;
        match &carry.carrier {
            Some(c) if carry.inheritable == cloexec => {
                let flags = if cloexec {
                    rustix::io::FdFlags::CLOEXEC
                } else {
                    rustix::io::FdFlags::empty()
                };
                if rustix::io::fcntl_setfd(c, flags).is_ok() {
                    carry.inheritable = !cloexec;
                }
            }
            Some(_) => {}
            // Told under the lock: see `inherit::before_exec`.
            None if !cloexec && carry.memfd.is_some() => crate::inherit::carrier_wanted(),
            None => {}
        }
    }

    /// An exec may follow: an inheritable connection gets its carrier
    /// (inheritable), which a program exec'd finds beside the fd. Without
    /// one (no memfd kept, no room, a name taken) the exec'd program reads
    /// the connection as closed, as before.
    pub(crate) fn ready_for_exec(&self) {
        let mut carry = self.carry.lock();
        if !carry.wanted || carry.carrier.is_some() {
            return;
        }
        let Some(memfd) = &carry.memfd else {
            return;
        };
        match crate::inherit::make_carrier(
            self.bell.fd.as_fd(),
            memfd.as_fd(),
            self.seg.role(),
            self.local,
            self.peer,
        ) {
            Ok(c) => {
                carry.inheritable =
                    rustix::io::fcntl_setfd(&c, rustix::io::FdFlags::empty()).is_ok();
                carry.carrier = Some(c);
                // From now on a program run from here may hold the
                // connection (and later ones too, as the carrier follows
                // the flag): no EOF on our last close, each direction
                // serialised across processes.
                self.exec_shared.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                log!(
                    debug,
                    "{} -> {}: no carrier for exec: {e}",
                    self.local,
                    self.peer
                );
                // Asked for again before the next exec when it may work
                // then (an fd or memory freed); not for lasting refusals
                // (ETOOMANYREFS), which would cost every fork a retry.
                if matches!(
                    e,
                    Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::NOBUFS
                ) {
                    crate::inherit::carrier_wanted();
                }
            }
        }
    }

    /// Whether the reader raises its flag only when it is about to sleep
    /// (a blocking read, poll or select: all in this library, which look at
    /// the ring before they trust the kernel), instead of whenever the ring
    /// is empty. Then a reader that finds data, or spins until it comes,
    /// costs neither side a system call. An epoll set is waited on without
    /// us knowing which fds it holds, so once the connection is in one
    /// (`watch`), or shared with another process, its flag stays up after
    /// every read that empties the ring and the kernel's readiness is exact.
    fn lazy(&self) -> bool {
        !self.watched.load(Ordering::Relaxed) && !self.shared()
    }

    /// The application adds this connection to an epoll set (ADD or MOD).
    /// Returns true when the kernel may not report data in the ring: data
    /// that came while the reader was lazy has no doorbell byte queued, and
    /// a reader asleep in a taking wait may take the byte of data it then
    /// leaves in the ring. `readiness` reports such data in epoll_wait
    /// until the ring is drained and no taker is left.
    pub(crate) fn watch(&self) -> bool {
        // SYNC POINT: SeqCst, Dekker with `begin_taking` (its takers
        // increment, then its load of `watched`): a reader either sees
        // `watched` and does not take, or we see it in `takers`.
        let first = !self.watched.swap(true, Ordering::SeqCst);
        let taking = self.takers.load(Ordering::SeqCst) > 0;
        let mut guard = self.rx.lock();
        let Some(rx) = self.receiver(&mut guard.consumer) else {
            return taking;
        };
        let _side = self.shared().then(|| rx.lock_side());
        // The first time, take stale bytes (eager from now on, step 3).
        let readable = rx.readable_now() || (first && matches!(self.settle(rx, true), Ok(true)));
        // Up either way: the next publish rings.
        rx.arm(WaitKind::Doorbell);
        taking || (readable && self.bell.queued() == 0)
    }

    /// Whether a reader is asleep in a taking wait right now.
    pub(crate) fn taking(&self) -> bool {
        self.takers.load(Ordering::SeqCst) > 0
    }

    /// A lazy reader is about to sleep taking its doorbell byte: only if no
    /// one else may be waiting on the kernel for that byte (a poller of
    /// ours, an epoll set). False: sleep as an eager reader would.
    fn begin_taking(&self) -> Option<Taker<'_>> {
        // SYNC POINT: SeqCst, Dekker with `add_waiter` and `watch`.
        let others = self.takers.fetch_add(1, Ordering::SeqCst);
        let taker = Taker(&self.takers);
        // One taker at a time: two would both wake for one byte, and the
        // one that found it taken would sleep on in the kernel.
        if others > 0
            || self.watched.load(Ordering::SeqCst)
            || self.waiters.load(Ordering::SeqCst) > 0
        {
            return None;
        }
        Some(taker)
    }

    /// A hooked poll/select will wait on this fd. Returns whether a reader
    /// is asleep taking doorbell bytes (then the kernel may never report
    /// this fd: the waiter sleeps in short slices and looks at the ring).
    /// Undo with `remove_waiter`.
    pub(crate) fn add_waiter(&self) -> bool {
        // SYNC POINT: SeqCst, Dekker with `begin_taking`.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.takers.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn remove_waiter(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// A pure consumer read: true when its previous read was moments ago
    /// (it is keeping up with a stream, not waking for sporadic messages,
    /// whose latency a pause would add to).
    fn note_read(&self) -> bool {
        let now = clock_ns();
        let last = self.last_read.swap(now, Ordering::Relaxed);
        last != 0 && now.saturating_sub(last) < STREAMING_GAP.as_nanos() as u64
    }

    /// A pure consumer read moments ago: the writer is likely mid-stream.
    fn read_recently(&self) -> bool {
        let last = self.last_read.load(Ordering::Relaxed);
        last != 0 && clock_ns().saturating_sub(last) < STREAMING_GAP.as_nanos() as u64
    }

    /// A pure consumer that found the ring empty in the middle of a
    /// stream: looks at the ring every couple of microseconds (pausing on
    /// nothing shared in between, so the writer keeps its cache lines) for
    /// up to the spin budget, rather than sleep and cost the writer a
    /// doorbell and itself a wake-up.
    fn watch_ring(&self) {
        let start = Instant::now();
        loop {
            pause(WATCH_PAUSE);
            if self.ring_readable() || start.elapsed() >= self.spin {
                return;
            }
        }
    }

    /// A wait spun its whole budget and no answer came: do not spin for
    /// this connection again until it writes (an idle connection, or a
    /// peer that answers slowly, would cost a spin on every wait).
    pub(crate) fn no_reply_soon(&self) {
        if self.replied.load(Ordering::Relaxed) {
            self.replied.store(false, Ordering::Relaxed);
        }
    }

    /// This side wrote since it last read: an answer is probably on its
    /// way, so a wait for it may spin.
    pub(crate) fn awaits_reply(&self) -> bool {
        self.replied.load(Ordering::Relaxed)
    }

    /// poll/select are about to wait for this connection to become
    /// readable: true if it is already (data, end of stream, a reset);
    /// otherwise its flag is up when this returns, so the next publish
    /// rings and the kernel wakes the waiter.
    pub(crate) fn poll_readable(&self) -> bool {
        if self.shut_rd.load(Ordering::Relaxed) {
            return true;
        }
        let mut guard = self.rx.lock();
        match self.receiver(&mut guard.consumer) {
            // Not attached yet: the acceptor's initial flag is up (see
            // `Channel::initialise`), so its first data rings.
            None => false,
            Some(rx) => rx.readable_now() || rx.arm(WaitKind::Doorbell),
        }
    }

    /// The kernel reported this connection readable (poll/select): false
    /// when that came from doorbell bytes of data already read (a lazy
    /// reader leaves them queued), in which case they are taken now so the
    /// next wait does not return at once. A hang-up, foreign bytes, or
    /// bytes we cannot account for are reported as readable: the read that
    /// follows tells the application what happened.
    pub(crate) fn really_readable(&self) -> bool {
        let mut guard = self.rx.lock();
        let Some(rx) = self.receiver(&mut guard.consumer) else {
            return true;
        };
        if rx.readable_now() || self.shut_rd.load(Ordering::Relaxed) {
            return true;
        }
        let _side = self.shared().then(|| rx.lock_side());
        match self.settle(rx, true) {
            Ok(false) => self.bell.queued() > 0,
            _ => true,
        }
    }

    /// The receive half, once the peer's direction is initialised (at once
    /// for the acceptor; for the connector, once the acceptor attached).
    fn receiver<'a>(&self, slot: &'a mut Option<Consumer>) -> Option<&'a mut Consumer> {
        if slot.is_none() {
            if let Ok(mut c) = self.seg.consumer() {
                c.set_doorbell(Arc::new(RoomBell(self.bell.clone())));
                if self.edge.load(Ordering::Relaxed) {
                    c.notify().set_edge_triggered();
                }
                let _ = self.bell.taken.set(c.notify().taken_count());
                let _ = self.probe.set(c.probe());
                *slot = Some(c);
            }
        }
        slot.as_mut()
    }

    /// After the ring was seen empty: take the bytes the peer sent for data
    /// already read (doorbells, fillers), so that the fd stops looking
    /// readable — but only after re-arming our flag and re-checking the
    /// ring, and only the bytes counted before re-arming (a byte rung after
    /// that is for new data and must stay; if data arrived, nothing is
    /// taken, so the fd stays readable).
    ///
    /// A producer publishes data and only then counts and rings; a reader
    /// can consume the data in between. So first we wait until the producer
    /// is outside its write (`wait_producer_idle`: a short yield, then a
    /// futex sleep, so a descheduled producer gets the CPU): from then on,
    /// every ring for data already read is counted. A byte counted but not
    /// arrived yet is waited for too. Otherwise it would make the fd
    /// readable later with nothing to read, which an event loop like wrk's
    /// counts as an error.
    ///
    /// Returns whether data arrived meanwhile; Err for a hang-up with an
    /// empty ring (end of stream) or for foreign bytes.
    fn settle(&self, rx: &mut Consumer, check_peer: bool) -> Result<bool, Settled> {
        // Looking at what is queued (a system call) tells a hang-up and
        // foreign bytes; a blocking reader learns both from its wait instead.
        let pending = if check_peer {
            self.bell.peek()
        } else {
            Pending {
                hung_up: false,
                foreign: false,
            }
        };
        if pending.foreign || self.bell.foreign.load(Ordering::Relaxed) {
            return Err(self.reset_foreign(rx));
        }
        let start = Instant::now();
        // A producer that died inside a write (SIGKILL) leaves the word
        // busy for good; once it has been seen stuck, it is not waited for
        // again until it reads idle (another process of that side wrote).
        if !rx.notify().producer_busy() {
            self.busy_stuck.store(false, Ordering::Relaxed);
        } else if !self.busy_stuck.load(Ordering::Relaxed)
            && !rx
                .notify()
                .wait_producer_idle(SETTLE_PATIENCE, || !self.bell.hung_up())
        {
            self.busy_stuck.store(true, Ordering::Relaxed);
            log!(
                debug,
                "{} <- {}: producer busy for {SETTLE_PATIENCE:?}",
                self.local,
                self.peer
            );
        }
        let mut owed = self.owed(rx);
        if rx.arm(WaitKind::Doorbell) {
            return Ok(true);
        }
        let mut hung_up = pending.hung_up;
        while owed > 0 && !hung_up {
            let (got, eof) = self.bell.take(owed);
            hung_up = eof;
            // A ring the producer took back (it could not send it) is no
            // longer owed.
            owed = (owed - got).min(self.owed(rx));
            if owed == 0 || hung_up || rx.readable_now() {
                break;
            }
            let waited = start.elapsed();
            if waited >= SETTLE_PATIENCE {
                log!(
                    debug,
                    "{} <- {}: {owed} doorbell bytes never came",
                    self.local,
                    self.peer
                );
                break;
            }
            if waited < Duration::from_micros(20) {
                crate::sandbox::yield_cpu();
            } else {
                let _ =
                    handshake::wait_readable(self.bell.fd.as_fd(), Some(Duration::from_millis(1)));
            }
        }
        // Look again after taking: a producer that found our flag up while
        // our end was full of bytes could not ring (EAGAIN), and its ring
        // cleared the flag; the bytes we took were the only sign of its
        // data. (Lazy readers leave bytes queued, so an end can fill.)
        if rx.readable_now() {
            return Ok(true);
        }
        if hung_up && self.bell.queued() == 0 {
            return Err(Settled::HungUp);
        }
        if crate::log::enabled(crate::log::Level::Debug) && !rx.readable_now() {
            let q = self.bell.queued();
            if q > 0 {
                log!(
                    debug,
                    "{} <- {}: readable with an empty ring: {q} bytes queued, owed {}",
                    self.local,
                    self.peer,
                    self.owed(rx),
                );
            }
        }
        Ok(false)
    }

    /// The peer wrote past the ring: reset rather than lose data silently.
    fn reset_foreign(&self, rx: &Consumer) -> Settled {
        log!(
            error,
            "{} -> {}: the peer wrote data past libshmnet (stdio or a raw syscall on the \
             socket); resetting the connection rather than losing it silently",
            self.peer,
            self.local
        );
        rx.reset();
        Settled::Foreign
    }

    /// Bytes the peer sent us that we have not taken: doorbells for data
    /// and fillers from its writes. Peer-written: a bounded hint, never a
    /// loop bound.
    fn owed(&self, rx: &Consumer) -> usize {
        (rx.notify().doorbells_rung().wrapping_sub(self.bell.taken()) as usize).min(1 << 20)
    }

    /// recv(2) and friends: MSG_PEEK, MSG_WAITALL, MSG_DONTWAIT; blocking
    /// unless the fd is non-blocking. The receive lock is held only while
    /// copying; a blocked reader sleeps in poll on the fd, where a doorbell
    /// byte, a hang-up or a local SHUT_RD wakes it.
    pub(crate) fn recv(&self, bufs: &mut [IoSliceMut<'_>], flags: i32) -> Result<usize, Errno> {
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        // SECCOMP_MODE_STRICT: only read and write are left, and a read of
        // the ring may need to wait or take doorbell bytes (`sandbox`).
        if crate::sandbox::strict() {
            return Err(Errno::ACCESS);
        }
        let peek = flags & libc::MSG_PEEK != 0;
        let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        let mut total = 0usize;
        // SO_RCVTIMEO, looked up only once a call would block.
        let mut deadline: Option<Option<Instant>> = None;
        // Whether this call may block, looked up once it would.
        let mut blocking: Option<bool> = None;
        let mut spun = false;
        let mut gathered = false;
        let mut hung_up = false;
        // Woken once already in this call: if the ring is still empty, look
        // at what woke us (a hang-up, or bytes that are not doorbells).
        let mut woken = false;
        loop {
            if self.shut_rd.load(Ordering::Relaxed) {
                return Ok(total);
            }
            // Counted in `takers` while set (see `begin_taking`).
            let mut taker = None;
            let step = {
                let mut guard = self.rx.lock();
                let Rx { consumer } = &mut *guard;
                match self.receiver(consumer) {
                    // The acceptor has not initialised its direction yet: no
                    // data can exist. A hang-up means it refused us.
                    None => {
                        if self.bell.peek().hung_up {
                            return if total > 0 {
                                Ok(total)
                            } else {
                                Err(Errno::CONNRESET)
                            };
                        }
                        Step::Wait
                    }
                    Some(rx) => {
                        if want == 0 {
                            return Ok(0);
                        }
                        // Shared with another process since a fork: our
                        // process's lock is not enough.
                        let _side = self.shared().then(|| rx.lock_side());
                        let r = with_rest_mut(bufs, total, |b| {
                            if peek {
                                rx.peek_vectored(b)
                            } else {
                                rx.read_vectored(b)
                            }
                        });
                        match r {
                            Ok(0) => return Ok(total),
                            Ok(n) => {
                                total += n;
                                let answered = self.replied.load(Ordering::Relaxed);
                                if !peek && answered {
                                    self.replied.store(false, Ordering::Relaxed);
                                }
                                let consumer = !peek && !answered && !self.spin.is_zero();
                                let streaming = consumer && self.note_read();
                                if consumer && !gathered {
                                    // Large before any gathering: large writes.
                                    self.bulk.store(total >= GATHER_BELOW, Ordering::Relaxed);
                                }
                                // Emptied the ring? Then drop the doorbell bytes of
                                // the data just read, or a poller would see the fd
                                // readable with nothing to read.
                                // (A producer still inside its write can only
                                // ring for it if our flag is up; a flag seen
                                // down was cleared by a ring already counted.)
                                if !peek && !self.lazy() && rx.available() == Ok(0) {
                                    let armed = rx.notify().may_ring();
                                    if self.owed(rx) > 0 || (armed && rx.notify().producer_busy()) {
                                        let _ = self.settle(rx, false);
                                    }
                                } else if !peek
                                    && self.lazy()
                                    && self.owed(rx) >= STALE_BYTES
                                    && self.waiters.load(Ordering::SeqCst) == 0
                                {
                                    // A lazy reader leaves the bytes of data it
                                    // read queued; before they fill our end
                                    // (the producer's rings would fail), take
                                    // those counted so far: their data was
                                    // read, or is in the ring, which a lazy
                                    // reader looks at before it sleeps.
                                    let owed = self.owed(rx);
                                    self.bell.take(owed);
                                } else if !peek
                                    && self.edge.load(Ordering::Relaxed)
                                    && self.owed(rx) >= EDGE_BYTES
                                    && self.waiters.load(Ordering::SeqCst) == 0
                                {
                                    // An edge-triggered reader need not read
                                    // until EAGAIN (nginx reads what FIONREAD
                                    // says and waits for the next edge), so
                                    // the ring may never empty for it to
                                    // settle; but its producer stops ringing
                                    // with `EDGE_BACKLOG` bytes untaken, and
                                    // the next edge would never come. Bytes
                                    // counted so far are for data read or
                                    // still in the ring, which such a reader
                                    // was told about by an edge already.
                                    let owed = self.owed(rx);
                                    self.bell.take(owed);
                                }
                                if !waitall
                                    && total < GATHER_BELOW
                                    && total < want
                                    && !gathered
                                    && streaming
                                    && self.lazy()
                                    && crate::polling::spin_helps()
                                    && !dontwait
                                    && !self.nonblocking()
                                {
                                    // A blocking consumer keeping up with a
                                    // stream of small writes: let the writer
                                    // add more before reading on, rather than
                                    // take its cache lines write by write.
                                    Step::Gather
                                } else if !waitall || total >= want {
                                    return Ok(total);
                                } else {
                                    Step::Again
                                }
                            }
                            Err(RingError::WouldBlock) => {
                                let block = *blocking
                                    .get_or_insert_with(|| !dontwait && !self.nonblocking());
                                if total > 0 && !waitall {
                                    return Ok(total); // after a gather
                                }
                                if hung_up {
                                    return Ok(total); // the peer is gone, the ring empty
                                }
                                let lazy = block && self.lazy();
                                if block
                                    && !spun
                                    && !self.spin.is_zero()
                                    && self.replied.load(Ordering::Relaxed)
                                    && crate::polling::spin_helps()
                                {
                                    // Spin before settling: a reader that
                                    // never raised its flag costs neither
                                    // side a system call. Only when this
                                    // side wrote since it last read (request
                                    // and response, where the answer comes
                                    // soon): a pure consumer of a stream
                                    // that spins reads each small write as
                                    // it lands, taking the producer's cache
                                    // lines every time (64 B writes: 17 ->
                                    // 6 M/s); asleep, it reads in bulk.
                                    Step::Spin
                                } else if block
                                    && !spun
                                    && !self.spin.is_zero()
                                    && self.bulk.load(Ordering::Relaxed)
                                    && self.read_recently()
                                    && crate::polling::spin_helps()
                                {
                                    Step::Watch
                                } else if let Some(t) = lazy.then(|| self.begin_taking()).flatten()
                                {
                                    // About to sleep: only now raise the
                                    // flag (see `lazy`); the sleep takes the
                                    // doorbell byte it wakes on.
                                    taker = Some(t);
                                    if self.bell.foreign.load(Ordering::Relaxed) {
                                        self.reset_foreign(rx);
                                        return Err(Errno::CONNRESET);
                                    }
                                    if rx.arm(WaitKind::Doorbell) {
                                        Step::Again
                                    } else {
                                        Step::Sleep
                                    }
                                } else {
                                    match self.settle(rx, !block || woken) {
                                        Ok(true) => Step::Again,
                                        Ok(false) => Step::Wait,
                                        Err(Settled::HungUp) => return Ok(total),
                                        Err(Settled::Foreign) => return Err(Errno::CONNRESET),
                                    }
                                }
                            }
                            Err(e) => {
                                return if total > 0 {
                                    Ok(total)
                                } else {
                                    Err(ring_errno(e))
                                }
                            }
                        }
                    }
                }
            };
            if let Step::Gather = step {
                gathered = true;
                pause(GATHER_PAUSE);
                continue;
            }
            if let Step::Watch = step {
                spun = true;
                self.watch_ring();
                continue;
            }
            if let Step::Spin = step {
                spun = true;
                // Mostly the one word a publish writes (no lock, one
                // shared line); every 32nd look the whole ring (closed,
                // a later segment).
                let mut looks = 0u32;
                let answered = self.spin_until(|| {
                    looks = looks.wrapping_add(1);
                    match self.probe.get() {
                        Some(p) if !looks.is_multiple_of(32) => p.maybe_readable(),
                        _ => self.ring_readable(),
                    }
                });
                if !answered {
                    self.no_reply_soon();
                }
                continue;
            }
            if let Step::Wait | Step::Sleep = step {
                if !*blocking.get_or_insert_with(|| !dontwait && !self.nonblocking()) {
                    return if total > 0 {
                        Ok(total)
                    } else {
                        Err(Errno::AGAIN)
                    };
                }
                let d = *deadline
                    .get_or_insert_with(|| deadline_after(self.opts.timeout(libc::SO_RCVTIMEO)));
                let left = match time_left(d) {
                    Ok(l) => l,
                    Err(e) => return if total > 0 { Ok(total) } else { Err(e) },
                };
                woken = true;
                let mut sliced = false;
                let woke = if let Step::Sleep = step {
                    let woke = self.bell.wait_taking(left);
                    drop(taker.take());
                    woke
                } else {
                    // Counted as a waiter, so no other thread of ours
                    // starts taking the bytes we wait for; one already
                    // taking may take ours: then sleep in slices and look
                    // at the ring between them.
                    let waiter = WaiterGuard::new(self);
                    sliced = waiter.sliced;
                    let left = if sliced {
                        Some(left.map_or(WAIT_SLICE, |l| l.min(WAIT_SLICE)))
                    } else {
                        left
                    };
                    self.bell.wait(left)
                };
                match woke {
                    Ok(Woke::Rung) => {}
                    Ok(Woke::HungUp) => hung_up = true,
                    // Our own slicing turned a restartable wait into a
                    // timed one: restart it as the kernel would have.
                    Err(Errno::INTR)
                        if sliced && d.is_none() && crate::sys::interrupted_call_restarts() => {}
                    Err(Errno::INTR) if total == 0 => return Err(Errno::INTR),
                    Err(Errno::INTR) => return Ok(total),
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Cheap "might a read succeed now?" for spinning, without the lock
    /// being held across the spin.
    pub(crate) fn ring_readable(&self) -> bool {
        let rx = self.rx.lock();
        rx.consumer.as_ref().is_some_and(|c| c.readable_now())
    }

    fn spin_until(&self, ready: impl FnMut() -> bool) -> bool {
        shmnet_ring::spin_until(self.spin, ready)
    }

    /// send(2) and friends. Blocking sends return once everything is in the
    /// ring; a closed peer is EPIPE (the caller raises SIGPIPE). The send
    /// lock is held only while copying; a blocked writer sleeps on the ring's
    /// futex, in slices that check for hang-up and a local SHUT_WR.
    pub(crate) fn send(&self, bufs: &[IoSlice<'_>], flags: i32) -> Result<usize, Errno> {
        self.send_rest(bufs, flags, 0)
    }

    /// The first attempt of a send, made without waiting for anything: no
    /// lock that is not free at once, no side lock (a connection shared
    /// after fork), no wait for room. For the caller that holds the
    /// registry's read lock instead of a reference (`registry::with`).
    /// What it cannot finish, `send_rest` does.
    pub(crate) fn try_send(&self, bufs: &[IoSlice<'_>], flags: i32) -> FastSend {
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        // Only small sends: a large copy would hold the registry's read
        // lock (and so close and fork) for microseconds, to save two
        // atomic operations it does not notice.
        if want == 0
            || want > FAST_SEND_MAX
            || self.shut_wr.load(Ordering::Relaxed)
            || self.shared()
            || crate::sandbox::strict()
        {
            return FastSend::Slow;
        }
        let Some(mut tx) = self.tx.try_lock() else {
            return FastSend::Slow;
        };
        // As in `send_rest`: a small blocking send goes in whole or waits.
        let need = if want <= self.atomic_send && flags & libc::MSG_DONTWAIT == 0 {
            want
        } else {
            0
        };
        match tx.write_vectored_min(bufs, need) {
            Ok(n) => {
                drop(tx);
                if !self.replied.load(Ordering::Relaxed) {
                    self.replied.store(true, Ordering::Relaxed);
                }
                if n >= want {
                    FastSend::Done(n)
                } else {
                    FastSend::Partial(n)
                }
            }
            Err(_) => FastSend::Slow,
        }
    }

    /// `send`, after the first `total` bytes of `bufs` were sent already
    /// (by `try_send`).
    pub(crate) fn send_rest(
        &self,
        bufs: &[IoSlice<'_>],
        flags: i32,
        mut total: usize,
    ) -> Result<usize, Errno> {
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        if crate::sandbox::strict() {
            return Err(Errno::ACCESS); // see `recv`
        }
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if self.shut_wr.load(Ordering::Relaxed) {
                return if total > 0 {
                    Ok(total)
                } else {
                    Err(Errno::PIPE)
                };
            }
            if want == 0 {
                return Ok(0);
            }
            let r = {
                let mut tx = self.tx.lock();
                let _side = self.shared().then(|| tx.lock_side());
                // A small blocking send goes into the ring whole, as small
                // TCP writes do in practice: two threads writing framed
                // messages on one connection must not interleave them. So
                // when it does not fit, wait for room for all of it. (A
                // non-blocking fd writes what fits: asked only when it did
                // not fit, since after a fork that costs an fcntl.)
                let need = if total == 0 && want <= self.atomic_send && !dontwait {
                    want
                } else {
                    0
                };
                match with_rest(bufs, total, |b| tx.write_vectored_min(b, need)) {
                    Err(RingError::WouldBlock) if need > 0 && self.nonblocking() => {
                        with_rest(bufs, total, |b| tx.write_vectored(b))
                    }
                    r => r,
                }
            };
            match r {
                Ok(n) => {
                    total += n;
                    if !self.replied.load(Ordering::Relaxed) {
                        self.replied.store(true, Ordering::Relaxed);
                    }
                    if total >= want {
                        return Ok(total);
                    }
                }
                Err(RingError::WouldBlock) => {
                    if dontwait || self.nonblocking() {
                        if total > 0 {
                            return Ok(total);
                        }
                        if self.await_pollout() {
                            continue;
                        }
                        return Err(Errno::AGAIN);
                    }
                    let need = if total == 0 && want <= self.atomic_send {
                        want
                    } else {
                        1
                    };
                    match self.wait_room(need, total > 0, &mut deadline) {
                        Ok(()) => {}
                        Err(_) if total > 0 => return Ok(total),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    return if total > 0 {
                        Ok(total)
                    } else {
                        Err(ring_errno(e))
                    }
                }
            }
        }
    }

    /// A non-blocking write found the ring full and the application will
    /// wait for POLLOUT/EPOLLOUT: make our end unwritable with filler, then
    /// ask the reader to take it when it frees room (see `Bell`). In that
    /// order, so that whoever clears the flag finds the filler queued.
    /// Returns true when room is already there after arming (write again;
    /// the filler goes with the next room freed, or when the reader drains
    /// the ring).
    fn await_pollout(&self) -> bool {
        let tx = self.tx.lock();
        let _side = self.shared().then(|| tx.lock_side());
        // Only while the ring is still full (see `Producer::while_full`):
        // filler sent after the reader emptied the ring and settled would
        // make its fd readable with nothing to read.
        if tx.notify().while_full(|tx| self.bell.fill(tx)).is_none() {
            return true;
        }
        tx.arm(WaitKind::Doorbell)
    }

    /// A blocking write waits until `need` bytes are free: asleep on the
    /// ring's futex, in slices that check for hang-up and a local SHUT_WR.
    /// A signal ends the wait with EINTR, or restarts it under SA_RESTART
    /// (see `sys::interrupted_call_restarts`) unless the write is `partial`;
    /// SO_SNDTIMEO with EAGAIN.
    fn wait_room(
        &self,
        need: usize,
        partial: bool,
        deadline: &mut Option<Option<Instant>>,
    ) -> Result<(), Errno> {
        let bell = self.bell.clone();
        let shut = self.shut_wr.clone();
        let d =
            *deadline.get_or_insert_with(|| deadline_after(self.opts.timeout(libc::SO_SNDTIMEO)));
        let policy = WaitPolicy {
            spin: self.spin,
            deadline: d,
            liveness: Some(Arc::new(move || {
                !shut.load(Ordering::Relaxed) && !bell.hung_up()
            })),
            slice: Duration::from_millis(10),
            interruptible: true,
        };
        loop {
            return match self.room.wait_for_room(need, &policy) {
                Ok(()) => Ok(()),
                // A write that moved bytes already returns their count.
                Err(RingError::Interrupted)
                    if !partial && crate::sys::interrupted_call_restarts() =>
                {
                    continue
                }
                Err(RingError::Interrupted) => Err(Errno::INTR),
                Err(RingError::TimedOut) => Err(Errno::AGAIN),
                Err(RingError::PeerGone) => Err(Errno::PIPE),
                Err(e) => Err(ring_errno(e)),
            };
        }
    }

    /// Free bytes in the send ring, waiting (as a write would) while there
    /// are none; for splice, which must not take more from its pipe than
    /// the ring can hold.
    pub(crate) fn room(&self, dontwait: bool) -> Result<usize, Errno> {
        let mut deadline = None;
        loop {
            if self.shut_wr.load(Ordering::Relaxed) {
                return Err(Errno::PIPE);
            }
            match self.tx.lock().free_bytes() {
                Ok(0) => {}
                Ok(n) => return Ok(n),
                Err(e) => return Err(ring_errno(e)),
            }
            if dontwait || self.nonblocking() {
                if self.await_pollout() {
                    continue;
                }
                return Err(Errno::AGAIN);
            }
            self.wait_room(1, false, &mut deadline)?;
        }
    }

    /// The application registered this connection with EPOLLET: every
    /// arrival of data must be a new edge (see `readiness`).
    pub(crate) fn set_edge_triggered(&self) {
        if !self.edge.swap(true, Ordering::Relaxed) {
            let mut rx = self.rx.lock();
            if let Some(c) = self.receiver(&mut rx.consumer) {
                c.notify().set_edge_triggered();
            }
        }
    }

    /// sendfile's copy: `fill` reads the file straight into the ring (see
    /// `Producer::write_from`), at most `max` bytes; blocking or not as a
    /// send is. Ok(0): `fill` gave nothing (end of file, or its error).
    pub(crate) fn send_from(
        &self,
        max: usize,
        dontwait: bool,
        mut fill: impl FnMut(*mut u8, usize) -> usize,
    ) -> Result<usize, Errno> {
        let mut deadline = None;
        loop {
            if self.shut_wr.load(Ordering::Relaxed) {
                return Err(Errno::PIPE);
            }
            let r = {
                let mut tx = self.tx.lock();
                let _side = self.shared().then(|| tx.lock_side());
                tx.write_from(max, &mut fill)
            };
            match r {
                Ok(n) => {
                    if n > 0 && !self.replied.load(Ordering::Relaxed) {
                        self.replied.store(true, Ordering::Relaxed);
                    }
                    return Ok(n);
                }
                Err(RingError::WouldBlock) => {
                    if dontwait || self.nonblocking() {
                        if self.await_pollout() {
                            continue;
                        }
                        return Err(Errno::AGAIN);
                    }
                    self.wait_room(1, false, &mut deadline)?;
                }
                Err(e) => return Err(ring_errno(e)),
            }
        }
    }

    /// FIONREAD (a connector that has not read yet attaches its receive
    /// half here: data may be waiting).
    pub(crate) fn available(&self) -> usize {
        let mut rx = self.rx.lock();
        self.receiver(&mut rx.consumer)
            .and_then(|c| c.available().ok())
            .unwrap_or(0)
    }

    pub(crate) fn shutdown(&self, how: i32) -> Result<(), Errno> {
        let (rd, wr) = match how {
            libc::SHUT_RD => (true, false),
            libc::SHUT_WR => (false, true),
            libc::SHUT_RDWR => (true, true),
            _ => return Err(Errno::INVAL),
        };
        if wr && !self.shut_wr.swap(true, Ordering::Relaxed) {
            self.tx.lock().close();
            self.room.wake(); // a writer of ours asleep for room: EPIPE now
                              // The kernel's half-close too, after the ring's end-of-stream
                              // (and its doorbell): the peer's poll/epoll then see
                              // POLLRDHUP/EPOLLRDHUP, as for a TCP FIN.
            let _ = rustix::net::shutdown(&self.bell.fd, rustix::net::Shutdown::Write);
        }
        if rd && !self.shut_rd.swap(true, Ordering::Relaxed) {
            // Wakes a reader of ours asleep in poll on the fd (it sees POLLIN
            // and then SHUT_RD); the peer's doorbells to us fail harmlessly.
            let _ = rustix::net::shutdown(&self.bell.fd, rustix::net::Shutdown::Read);
        }
        Ok(())
    }

    /// The connection's progress as TCP_INFO reports it (read-only looks
    /// at the ring positions; see `options`).
    pub(crate) fn progress(&self) -> Progress {
        let (sent, acked) = {
            let tx = self.tx.lock();
            (tx.written_total(), tx.consumed_total())
        };
        let (received, peer_done) = {
            let mut rx = self.rx.lock();
            match self.receiver(&mut rx.consumer) {
                Some(c) => (c.consumed_total(), c.producer_closed()),
                None => (0, false),
            }
        };
        Progress {
            sent,
            acked,
            received,
            connector: self.seg.role() == shmnet_ring::Role::Connector,
            shut_wr: self.shut_wr.load(Ordering::Relaxed),
            peer_done,
        }
    }
}

/// See `Connection::progress`.
pub(crate) struct Progress {
    /// Bytes written into our ring, and of those read by the peer.
    pub sent: u64,
    pub acked: u64,
    /// Bytes we read from the peer's ring.
    pub received: u64,
    /// This side connected (the other accepted).
    pub connector: bool,
    /// We shut down writing (or closed); the peer did (or is gone).
    pub shut_wr: bool,
    pub peer_done: bool,
}

/// A blocking reader's sleep while a taker may take its byte.
const WAIT_SLICE: Duration = Duration::from_millis(1);

/// A reader asleep on the kernel alone, counted as a waiter while it is
/// (see `Connection::add_waiter`).
struct WaiterGuard<'a> {
    conn: &'a Connection,
    /// A taker was there: sleep in slices.
    sliced: bool,
}

impl<'a> WaiterGuard<'a> {
    fn new(conn: &'a Connection) -> WaiterGuard<'a> {
        let sliced = conn.add_waiter();
        WaiterGuard { conn, sliced }
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.conn.remove_waiter();
    }
}

/// A reader counted in `Connection::takers`; uncounted when dropped.
struct Taker<'a>(&'a AtomicU32);

impl Drop for Taker<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The largest send [`Connection::try_send`] attempts.
const FAST_SEND_MAX: usize = 4096;

/// What [`Connection::try_send`] did.
pub(crate) enum FastSend {
    /// Sent everything: the call's result.
    Done(usize),
    /// Sent this much; the rest needs `send_rest` (it may wait).
    Partial(usize),
    /// Nothing sent: do the whole send with `send_rest` (errors included).
    Slow,
}

/// Doorbell bytes a lazy reader leaves queued before it takes them (an end
/// fills at about 40: each costs 768 bytes of the peer's 32 KiB).
const STALE_BYTES: usize = 16;

/// An edge-triggered reader takes its doorbell bytes once this many are
/// queued: below the producer's cap (`shmnet_ring`'s EDGE_BACKLOG, 4), so
/// that edges keep coming however it reads.
const EDGE_BYTES: usize = 2;

/// A blocking stream consumer that read less than this (see `Step::Gather`)
/// pauses once for `GATHER_PAUSE` and reads on.
const GATHER_BELOW: usize = 16384;
const GATHER_PAUSE: Duration = Duration::from_micros(10);
/// How often `watch_ring` looks.
const WATCH_PAUSE: Duration = Duration::from_micros(2);

/// Waits about `d` without touching shared memory.
fn pause(d: Duration) {
    let until = Instant::now() + d;
    // One yield: a writer scheduled on this CPU runs now. If that took the
    // whole pause (someone else had the CPU), stop; otherwise spin on
    // nothing shared, so the data already read is not held back by
    // another scheduler round.
    crate::sandbox::yield_cpu();
    while Instant::now() < until {
        core::hint::spin_loop();
    }
}

/// Nanoseconds on a process-wide monotonic clock (never 0).
fn clock_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// Reads this close together are a stream (see `note_read`).
const STREAMING_GAP: Duration = Duration::from_micros(50);

enum Step {
    Again,
    /// Pause briefly, then read more into the rest of the buffer.
    Gather,
    /// Look at the ring now and then for a while (`watch_ring`).
    Watch,
    Spin,
    /// Sleep until a doorbell byte is queued (left for the read to take).
    Wait,
    /// Sleep taking the doorbell byte (a lazy reader, see `lazy`).
    Sleep,
}

enum Settled {
    HungUp,
    Foreign,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The last reference in this process. If no fork happened since the
        // connection was made, it is the last anywhere: tell the peer (EOF
        // for its reads, EPIPE for its writes). Otherwise the kernel's
        // hang-up on the Unix connection tells it when the last process
        // closes.
        if self.shared() {
            return;
        }
        self.bell.closing.store(true, Ordering::Relaxed);
        self.tx.get_mut().close();
        // The connector's receive half may never have been attached (it
        // never read): attach it now, or the peer's writes would go on
        // succeeding into a ring nobody reads.
        let mut rx = std::mem::take(&mut self.rx.get_mut().consumer);
        if let Some(rx) = self.receiver(&mut rx) {
            rx.close();
        }
        drop(rx);
        if let Some(ticket) = self.pool_ticket {
            let memfd = self.carry.get_mut().memfd.take();
            pool::put(self.seg.share(), ticket, memfd);
        }
    }
}

/// Runs `f` on the caller's destination buffers from byte `skip` on. The
/// caller's iovec array is never modified (the kernel does not either).
fn with_rest_mut<R>(
    bufs: &mut [IoSliceMut<'_>],
    mut skip: usize,
    f: impl FnOnce(&mut [IoSliceMut<'_>]) -> R,
) -> R {
    if skip == 0 {
        return f(bufs);
    }
    let mut rest = Vec::with_capacity(bufs.len());
    for b in bufs.iter_mut() {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        rest.push(IoSliceMut::new(&mut b[skip..]));
        skip = 0;
    }
    f(&mut rest)
}

/// As `with_rest_mut`, for source buffers.
fn with_rest<R>(bufs: &[IoSlice<'_>], mut skip: usize, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
    if skip == 0 {
        return f(bufs);
    }
    let mut rest = Vec::with_capacity(bufs.len());
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        rest.push(IoSlice::new(&b[skip..]));
        skip = 0;
    }
    f(&rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fd floor follows what the rlimit hooks report, without a
    /// system call; "unknown" is looked up again.
    #[test]
    fn nofile_limit_is_kept_and_followed() {
        set_nofile_limit(Some(Some(64)));
        assert_eq!((nofile_limit(), internal_fd_floor()), (Some(64), 32));
        set_nofile_limit(Some(Some(0)));
        assert_eq!((nofile_limit(), internal_fd_floor()), (Some(0), 3));
        set_nofile_limit(Some(Some(1 << 20)));
        assert_eq!(internal_fd_floor(), 4096);
        set_nofile_limit(Some(None));
        assert_eq!(nofile_limit(), None);
        set_nofile_limit(None);
        let real = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        assert_eq!(nofile_limit(), real);
    }
}
