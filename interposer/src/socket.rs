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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use shmnet_ring::{
    Consumer, Doorbell, Geometry, Producer, RingError, Segment, WaitKind, WaitPolicy,
};

use crate::handshake::{self, Kind, Message};
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
        if let Ok(d) = so::tcp_keepidle(fd) {
            o.set(
                libc::IPPROTO_TCP,
                libc::TCP_KEEPIDLE,
                &(d.as_secs() as i32).to_ne_bytes(),
            );
        }
        if let Ok(d) = so::tcp_keepintvl(fd) {
            o.set(
                libc::IPPROTO_TCP,
                libc::TCP_KEEPINTVL,
                &(d.as_secs() as i32).to_ne_bytes(),
            );
        }
        if let Ok(v) = so::tcp_keepcnt(fd) {
            o.set(
                libc::IPPROTO_TCP,
                libc::TCP_KEEPCNT,
                &(v as i32).to_ne_bytes(),
            );
        }
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

    fn timeout(&self, name: i32) -> Option<Duration> {
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
    Listener(Listener),
    Stream(Connection),
}

impl Socket {
    pub(crate) fn family(&self) -> i32 {
        match self {
            Socket::Listener(l) => family_of(&l.local),
            Socket::Stream(c) => family_of(&c.local),
        }
    }

    pub(crate) fn options(&self) -> &Options {
        match self {
            Socket::Listener(l) => &l.opts,
            Socket::Stream(c) => &c.opts,
        }
    }

    pub(crate) fn local(&self) -> SocketAddr {
        match self {
            Socket::Listener(l) => l.local,
            Socket::Stream(c) => c.local,
        }
    }
}

pub(crate) fn family_of(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// A socket bound to a partition address: its rendezvous socket is bound
/// (and, after listen(), listening) at `path`.
pub(crate) struct Listener {
    pub local: SocketAddr,
    /// Taken by connect() on a socket that was bound but never listened.
    pub(crate) reservation: Mutex<Option<Reservation>>,
    path: PathBuf,
    fork_generation: u32,
    pub opts: Options,
    pub listening: AtomicBool,
}

impl Listener {
    pub(crate) fn new(reservation: Reservation, path: PathBuf, opts: Options) -> Listener {
        Listener {
            local: reservation.addr,
            reservation: Mutex::new(Some(reservation)),
            path,
            fork_generation: registry::fork_generation(),
            opts,
            listening: AtomicBool::new(false),
        }
    }

    /// Finishes the handshake on a rendezvous connection `conn` that
    /// accept(2) returned: reads the connect message, maps the segment,
    /// initialises our direction, answers "connected".
    pub(crate) fn handshake(&self, conn: BorrowedFd<'_>) -> Result<Connection, Errno> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let (msg, memfd) = loop {
            match handshake::recv(conn) {
                Ok(got) => break got,
                Err(Errno::AGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Errno::TIMEDOUT);
                    }
                    handshake::wait_readable(conn, Some(left))?;
                }
                Err(e) => return Err(e),
            }
        };
        let refuse = |why: &str| {
            log!(warn, "refusing a connection to {}: {why}", self.local);
            let _ = handshake::send(
                conn,
                &Message {
                    kind: Kind::Refused,
                    addr: self.local,
                    status: libc::ECONNREFUSED as u32,
                },
                None,
            );
            Errno::CONNABORTED
        };
        if msg.kind != Kind::Connect {
            return Err(refuse("not a connect message"));
        }
        if family_of(&msg.addr) != family_of(&self.local) {
            return Err(refuse("address family differs"));
        }
        let memfd = memfd.ok_or_else(|| refuse("no shared memory attached"))?;
        let seg = Segment::attach(memfd).map_err(|e| refuse(&e.to_string()))?;
        let bell = Bell::new(conn)?;
        let connection = Connection::new(seg, self.local, msg.addr, bell, None, true)?;
        // A connector that already closed (its data and EOF are in the ring)
        // cannot take the answer; like TCP, accept still returns it.
        let answer = Message {
            kind: Kind::Connected,
            addr: self.local,
            status: 0,
        };
        if let Err(e) = handshake::send(conn, &answer, None) {
            log!(
                debug,
                "accept on {}: peer gone before the answer ({e})",
                self.local
            );
        }
        Ok(connection)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only the process that bound it, and only if it has not forked
        // since (else another process may still be listening), removes the
        // rendezvous name.
        if self.fork_generation == registry::fork_generation() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The doorbell: one byte sent on the Unix connection wakes a peer asleep
/// in poll/epoll on its end. Holds its own dup of the connection, so it
/// outlives whatever the application does with its fd number.
pub(crate) struct Bell {
    fd: OwnedFd,
}

impl Bell {
    fn new(conn: BorrowedFd<'_>) -> Result<Arc<Bell>, Errno> {
        let fd = rustix::io::fcntl_dupfd_cloexec(conn, 3)?;
        Ok(Arc::new(Bell { fd }))
    }

    /// Reads and discards pending doorbell bytes. Returns whether the peer
    /// hung up, and whether a byte other than a doorbell came: data that the
    /// peer wrote past the library (stdio on the socket, a raw syscall),
    /// which the ring cannot put back in order.
    fn drain(&self) -> (bool, bool) {
        let mut buf = [0u8; 64];
        let mut foreign = false;
        loop {
            match rustix::net::recv(&self.fd, &mut buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return (true, foreign),
                Ok((n, _)) => {
                    foreign |= buf[..n].iter().any(|&b| b != DOORBELL);
                    if n < buf.len() {
                        return (false, foreign);
                    }
                }
                Err(Errno::INTR) => continue,
                Err(_) => return (false, foreign),
            }
        }
    }

    /// True once the peer's end is closed (its process may be gone).
    fn hung_up(&self) -> bool {
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

    fn nonblocking(&self) -> bool {
        rustix::fs::fcntl_getfl(&self.fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
    }

    /// Waits for a doorbell byte or hang-up; Err(INTR) on a signal.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool, Errno> {
        handshake::wait_readable(self.fd.as_fd(), timeout)
    }
}

impl Doorbell for Bell {
    fn ring(&self) {
        // A full socket buffer means bytes are already pending: enough.
        let _ = rustix::net::send(
            &self.fd,
            &[DOORBELL],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        );
    }
}

/// The byte a doorbell rings with.
const DOORBELL: u8 = 1;

/// One side of an emulated TCP connection.
pub(crate) struct Connection {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    seg: Segment,
    tx: Mutex<Producer>,
    /// The connector's receive half exists once the acceptor answered.
    rx: Mutex<Option<Consumer>>,
    bell: Arc<Bell>,
    _port: Option<Reservation>,
    fork_generation: u32,
    shut_rd: AtomicBool,
    shut_wr: AtomicBool,
    /// SO_ERROR: an error to report once.
    pub error: AtomicI32,
    spin: Duration,
    pub opts: Options,
}

/// What a failed data call turns into.
fn ring_errno(e: RingError) -> Errno {
    Errno::from_raw_os_error(e.errno())
}

impl Connection {
    fn new(
        seg: Segment,
        local: SocketAddr,
        peer: SocketAddr,
        bell: Arc<Bell>,
        port: Option<Reservation>,
        accepted: bool,
    ) -> Result<Connection, Errno> {
        let mut tx = seg.producer().map_err(|_| Errno::PROTO)?;
        tx.set_doorbell(bell.clone());
        let rx = if accepted {
            let mut rx = seg.consumer().map_err(|_| Errno::PROTO)?;
            rx.set_doorbell(bell.clone());
            Some(rx)
        } else {
            None
        };
        let spin = crate::config::get()
            .map_or(Duration::ZERO, |c| Duration::from_micros(c.spin_us.into()));
        Ok(Connection {
            local,
            peer,
            seg,
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            bell,
            _port: port,
            fork_generation: registry::fork_generation(),
            shut_rd: AtomicBool::new(false),
            shut_wr: AtomicBool::new(false),
            error: AtomicI32::new(0),
            spin,
            opts: Options::default(),
        })
    }

    /// The connecting side: creates the segment, connects to the listener's
    /// rendezvous at `path` and sends the connect message. Returns the Unix
    /// connection (to become the application's fd) and the connection.
    pub(crate) fn connect(
        path: &std::path::Path,
        local: Reservation,
        peer: SocketAddr,
        ring_bytes: usize,
        opts: Options,
    ) -> Result<(OwnedFd, Connection), Errno> {
        let sock = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let addr = rustix::net::SocketAddrUnix::new(path)?;
        match rustix::net::connect(&sock, &addr) {
            Ok(()) => {}
            // No rendezvous, or nobody listening on it: no listener.
            Err(Errno::NOENT | Errno::CONNREFUSED) => return Err(Errno::CONNREFUSED),
            Err(e) => return Err(e),
        }
        let geo = Geometry::for_ring_bytes(ring_bytes as u64).map_err(|_| Errno::INVAL)?;
        let seg = Segment::create(geo).map_err(|e| {
            log!(warn, "cannot create a connection segment: {e}");
            Errno::NOBUFS
        })?;
        let me = local.addr;
        handshake::send(
            sock.as_fd(),
            &Message {
                kind: Kind::Connect,
                addr: me,
                status: 0,
            },
            Some(seg.fd()),
        )?;
        let bell = Bell::new(sock.as_fd())?;
        let mut conn = Connection::new(seg, me, peer, bell, Some(local), false)?;
        conn.opts = opts;
        Ok((sock, conn))
    }

    /// The receive half, reading the acceptor's answer first if needed.
    fn receiver<'a>(
        &self,
        slot: &'a mut Option<Consumer>,
        nonblocking: bool,
    ) -> Result<&'a mut Consumer, Errno> {
        if slot.is_none() {
            let deadline = self
                .opts
                .timeout(libc::SO_RCVTIMEO)
                .map(|t| Instant::now() + t);
            let msg = loop {
                match handshake::recv(self.bell.fd.as_fd()) {
                    Ok((msg, _)) => break msg,
                    Err(Errno::AGAIN) if !nonblocking => {
                        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                        if left.is_some_and(|l| l.is_zero()) {
                            return Err(Errno::AGAIN);
                        }
                        self.bell.wait(left)?;
                    }
                    Err(Errno::AGAIN) => return Err(Errno::AGAIN),
                    Err(_) => return Err(Errno::CONNRESET),
                }
            };
            if msg.kind != Kind::Connected {
                return Err(Errno::CONNREFUSED);
            }
            let mut rx = self.seg.consumer().map_err(|_| Errno::CONNRESET)?;
            rx.set_doorbell(self.bell.clone());
            *slot = Some(rx);
        }
        slot.as_mut().ok_or(Errno::CONNRESET)
    }

    /// recv(2) and friends: MSG_PEEK, MSG_WAITALL, MSG_DONTWAIT; blocking
    /// unless the fd is non-blocking.
    pub(crate) fn recv(&self, bufs: &mut [IoSliceMut<'_>], flags: i32) -> Result<usize, Errno> {
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        if self.shut_rd.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let peek = flags & libc::MSG_PEEK != 0;
        let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        let mut slot = self.rx.lock();
        let nonblocking = dontwait || (slot.is_none() && self.bell.nonblocking());
        let rx = self.receiver(&mut slot, nonblocking)?;
        if want == 0 {
            return Ok(0);
        }
        let mut total = 0usize;
        // SO_RCVTIMEO, looked up only once a call would block.
        let mut deadline: Option<Option<Instant>> = None;
        loop {
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
                    if !waitall || total >= want {
                        return Ok(total);
                    }
                }
                Err(RingError::WouldBlock) => {
                    let (hung_up, foreign) = self.bell.drain();
                    if foreign {
                        log!(
                            error,
                            "{} -> {}: the peer wrote data past libshmnet (stdio or a raw syscall \
                             on the socket); resetting the connection rather than losing it silently",
                            self.peer,
                            self.local
                        );
                        rx.reset();
                        return Err(Errno::CONNRESET);
                    }
                    if rx.arm(WaitKind::Doorbell) {
                        continue;
                    }
                    if hung_up {
                        return Ok(total); // the peer process is gone: end of stream
                    }
                    if dontwait || self.bell.nonblocking() {
                        return if total > 0 {
                            Ok(total)
                        } else {
                            Err(Errno::AGAIN)
                        };
                    }
                    if self.spin_until(|| rx.readable_now()) {
                        continue;
                    }
                    let deadline = *deadline.get_or_insert_with(|| {
                        self.opts
                            .timeout(libc::SO_RCVTIMEO)
                            .map(|t| Instant::now() + t)
                    });
                    let left = match deadline {
                        Some(d) => match d.saturating_duration_since(Instant::now()) {
                            l if l.is_zero() => {
                                return if total > 0 {
                                    Ok(total)
                                } else {
                                    Err(Errno::AGAIN)
                                }
                            }
                            l => Some(l),
                        },
                        None => None,
                    };
                    match self.bell.wait(left) {
                        Ok(_) => {}
                        Err(Errno::INTR) if total == 0 => return Err(Errno::INTR),
                        Err(Errno::INTR) => return Ok(total),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    return if total > 0 {
                        Ok(total)
                    } else {
                        Err(ring_errno(e))
                    };
                }
            }
        }
    }

    fn spin_until(&self, mut ready: impl FnMut() -> bool) -> bool {
        if self.spin.is_zero() {
            return false;
        }
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if ready() {
                    return true;
                }
                core::hint::spin_loop();
            }
            if start.elapsed() >= self.spin {
                return false;
            }
        }
    }

    /// send(2) and friends. Blocking sends return once everything is in the
    /// ring; a closed peer is EPIPE (the caller raises SIGPIPE).
    pub(crate) fn send(&self, bufs: &[IoSlice<'_>], flags: i32) -> Result<usize, Errno> {
        if self.shut_wr.load(Ordering::Relaxed) {
            return Err(Errno::PIPE);
        }
        let want = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        if want == 0 {
            return Ok(0);
        }
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        let mut tx = self.tx.lock();
        let mut total = 0usize;
        loop {
            let r = with_rest(bufs, total, |b| tx.write_vectored(b));
            match r {
                Ok(n) => {
                    total += n;
                    if total >= want {
                        return Ok(total);
                    }
                }
                Err(RingError::WouldBlock) => {
                    if dontwait || self.bell.nonblocking() {
                        return if total > 0 {
                            Ok(total)
                        } else {
                            Err(Errno::AGAIN)
                        };
                    }
                    let bell = self.bell.clone();
                    let policy = WaitPolicy {
                        spin: self.spin,
                        deadline: self
                            .opts
                            .timeout(libc::SO_SNDTIMEO)
                            .map(|t| Instant::now() + t),
                        liveness: Some(Arc::new(move || !bell.hung_up())),
                        slice: Duration::from_millis(10),
                    };
                    match tx.wait_writable(&policy) {
                        Ok(()) => {}
                        Err(RingError::TimedOut) => {
                            return if total > 0 {
                                Ok(total)
                            } else {
                                Err(Errno::AGAIN)
                            };
                        }
                        Err(RingError::PeerGone) => {
                            return if total > 0 {
                                Ok(total)
                            } else {
                                Err(Errno::PIPE)
                            };
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

    /// FIONREAD.
    pub(crate) fn available(&self) -> usize {
        let slot = self.rx.lock();
        slot.as_ref()
            .and_then(|rx| rx.available().ok())
            .unwrap_or(0)
    }

    pub(crate) fn shutdown(&self, how: i32) -> Result<(), Errno> {
        let (rd, wr) = match how {
            libc::SHUT_RD => (true, false),
            libc::SHUT_WR => (false, true),
            libc::SHUT_RDWR => (true, true),
            _ => return Err(Errno::INVAL),
        };
        if rd {
            self.shut_rd.store(true, Ordering::Relaxed);
        }
        if wr && !self.shut_wr.swap(true, Ordering::Relaxed) {
            self.tx.lock().close();
        }
        Ok(())
    }

    /// Capacity of the receive ring (SO_RCVBUF/SO_SNDBUF answers).
    pub(crate) fn ring_bytes(&self) -> usize {
        self.seg.geometry().channel_bytes()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The last reference in this process. If no fork happened since the
        // connection was made, it is the last anywhere: tell the peer (EOF
        // for its reads, EPIPE for its writes). Otherwise the kernel's
        // hang-up on the Unix connection tells it when the last process
        // closes.
        if self.fork_generation != registry::fork_generation() {
            return;
        }
        self.tx.get_mut().close();
        if let Some(rx) = self.rx.get_mut() {
            rx.close();
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
