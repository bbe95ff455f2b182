//! The doorbell (`Bell`): the Unix connection behind the application's
//! fd, on which the peer's doorbell and filler bytes arrive and ours leave;
//! `RoomBell`, the consumer's side of write-space. The protocol is
//! docs/architecture.md's "The readiness protocol".
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::platform::lock::RwLock;
use crate::platform::sys;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use shmnet_ring::{Doorbell, Producer};

use crate::transport::handshake;

/// The doorbell: one byte sent on the Unix connection wakes a peer asleep
/// in poll/epoll on its end.
///
/// It has no fd of its own (a connection costs the application's fd and
/// nothing more): its system calls go to one of the application's numbers
/// for the connection (`fds`: dups share the socket). `close`, `dup2` onto
/// one, `close_range` and the rest take the number out under the write
/// lock *before* the kernel closes it (`forget_fd`), and every system call
/// here runs under the read lock, so none can meet a number the kernel has
/// meanwhile given to another file. The blocking waits are the exception:
/// they sleep on the fd of the application's own call (`wait`), which is
/// the application's race with its own close, as on a kernel socket.
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
    /// The application's fd numbers for the connection, the first the one
    /// our system calls use; empty before it has one (a connect in
    /// progress) and after its last close.
    fds: RwLock<Vec<RawFd>>,
    /// Bytes taken from our end so far (doorbells and fillers; wrapping),
    /// kept in the segment (processes sharing the connection after fork
    /// must agree on it); set once the receive half is attached. The peer
    /// counts the bytes it sends, so `sent - taken` are queued or on their
    /// way.
    pub(super) taken: std::sync::OnceLock<shmnet_ring::notify::TakenCount>,
    /// A byte that was not a doorbell was taken while freeing room.
    pub(super) foreign: AtomicBool,
    /// Filler bytes that make our end unwritable (a quarter of its send
    /// buffer, plus one).
    fill_bytes: usize,
    /// The connection's last reference in this process is going
    /// (`Drop for Connection`): in a sandbox, no more rings.
    pub(super) closing: AtomicBool,
    /// The peer may be gone (`Suspect`, as a u8): a doorbell could not be
    /// delivered (its end is closed, or shut for reading), or a read met
    /// the end of the stream. The next send asks the kernel once
    /// (`Connection::peer_gone_now`) instead of filling a ring nobody will
    /// read.
    suspect: AtomicU8,
    /// The reading peer's pid as the kernel recorded it (SO_PEERCRED, of
    /// the connect), asked at the first ring for a sleep (`ring_sleep`);
    /// 0: not asked yet, `NO_READER`: unknown.
    reader: AtomicU32,
}

/// Whether a ring for a sleep this thread's last ring woke is left out
/// (`ring_sleep`, decision 41). Sound since decision 44: a thread that
/// takes a member out of a set (DEL, MOD, close) while the set's waiter
/// sleeps wakes that waiter (`readiness` `stir`), which then looks at
/// every member it raised. Off: every ring is sent, and sleeps are not
/// named (`readiness::before_sleep`). readiness.rs
/// `epoll_named_sleep_member_removed_by_another_thread_loses_nothing`.
pub(crate) const SKIP_RUNG_SLEEPS: bool = true;

/// `Bell::reader`: the kernel gave no pid (another pid namespace, an
/// error, a sandbox).
const NO_READER: u32 = u32::MAX;

std::thread_local! {
    /// The last reader sleep this thread's doorbells woke: (the sleep's
    /// name, the reader's pid). One is enough: a producer answering an
    /// epoll waiter's several connections in a row rings them in a row.
    static RUNG: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

/// An error on our end of the Unix connection that means the peer's end is
/// gone: the kernel reports ECONNRESET once when a process closes (or
/// exits) with bytes unread on its end — doorbells a lazy reader left,
/// not data. The ring's own state then tells end of stream from a reset.
fn peer_gone(e: Errno) -> bool {
    e == Errno::CONNRESET || e == Errno::PIPE
}

/// Why a peer may be gone (`Bell::suspect`), weakest first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Suspect {
    No = 0,
    /// A read met the end of the stream.
    Ended = 1,
    /// A doorbell for bytes we wrote met a closed end: the peer was asleep
    /// waiting for them, so it had read everything before it went.
    Doorbell = 2,
}

/// The byte a doorbell rings with.
const DOORBELL: u8 = 1;

/// Send buffer of the Unix connection: the kernel doubles the value set, so
/// 32 KiB, unwritable above 8 KiB in flight. A doorbell byte costs 768
/// bytes of that, so a few pending doorbells never make a writer with room
/// look unwritable, and one filler send (8 KiB) makes it so.
pub(crate) const BELL_SNDBUF: usize = 16 << 10;

/// What is waiting on our end of the Unix connection.
pub(super) struct Pending {
    /// The peer's end is closed (or shut for writing) and nothing is queued.
    pub(super) hung_up: bool,
    /// A byte that is not a doorbell: data the peer wrote past the library
    /// (stdio on the socket, a raw syscall), which the ring cannot put back
    /// in order.
    pub(super) foreign: bool,
}

impl Bell {
    /// The doorbell of the Unix connection `conn`. `number`: the
    /// application's fd for it, if it has one yet (an accepted connection
    /// keeps its number; a connect's socket is dup'd onto the
    /// application's, which `opened` then gives).
    pub(crate) fn new(conn: BorrowedFd<'_>, number: Option<RawFd>) -> Arc<Bell> {
        // What the kernel made of BELL_SNDBUF (doubled, within
        // net.core.wmem_max) is asked once per process, not per connection:
        // a getsockopt less per accept.
        static SET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let set = rustix::net::sockopt::set_socket_send_buffer_size(conn, BELL_SNDBUF).is_ok();
        let sndbuf = match SET.load(Ordering::Relaxed) {
            known if set && known != 0 => known,
            _ => match rustix::net::sockopt::socket_send_buffer_size(conn) {
                Ok(n) => {
                    if set {
                        SET.store(n, Ordering::Relaxed);
                    }
                    n
                }
                Err(_) => BELL_SNDBUF * 2,
            },
        };
        Bell::sized(number, sndbuf)
    }

    /// The doorbell of a Unix connection whose send buffer was set as
    /// `new` sets it already (`handshake::send_offer`), to `sndbuf`.
    pub(crate) fn sized(number: Option<RawFd>, sndbuf: usize) -> Arc<Bell> {
        Arc::new(Bell {
            fds: RwLock::new(number.into_iter().collect()),
            taken: std::sync::OnceLock::new(),
            foreign: AtomicBool::new(false),
            fill_bytes: sndbuf / 4 + 1,
            closing: AtomicBool::new(false),
            suspect: AtomicU8::new(Suspect::No as u8),
            reader: AtomicU32::new(0),
        })
    }

    /// `fd` is now one of the application's numbers for the connection.
    pub(crate) fn opened(&self, fd: RawFd) {
        let mut fds = self.fds.write();
        if !fds.contains(&fd) {
            fds.push(fd);
        }
    }

    /// `fd` is about to be closed (or already was, past us): no system
    /// call of ours uses it once this returns.
    pub(crate) fn forget_fd(&self, fd: RawFd) {
        self.fds.write().retain(|&f| f != fd);
    }

    /// One of the application's numbers for the connection, if any is left.
    pub(crate) fn any_fd(&self) -> Option<RawFd> {
        self.fds.read().first().copied()
    }

    /// Runs `replace` (a dup2/dup3 onto `fd`) with `fd` out of the list and
    /// the write lock held, so no doorbell call meets the file the kernel
    /// puts there; `fd` is ours again if it failed (negative result).
    pub(crate) fn while_replacing(&self, fd: RawFd, replace: impl FnOnce() -> i32) -> i32 {
        let mut fds = self.fds.write();
        let had = fds.contains(&fd);
        fds.retain(|&f| f != fd);
        let r = replace();
        if r < 0 && had {
            fds.push(fd);
        }
        r
    }

    /// `forget_fd` from a signal handler that interrupted the library: it
    /// may not wait for the lock (its own thread may hold it). None if it
    /// could not.
    /// Some(true) if other numbers are left.
    pub(crate) fn try_forget_fd(&self, fd: RawFd) -> Option<bool> {
        let mut fds = self.fds.try_write()?;
        fds.retain(|&f| f != fd);
        Some(!fds.is_empty())
    }

    /// In a forked child: a parent thread may have held the lock.
    pub(super) fn reset_after_fork(&self) {
        self.fds.reset_after_fork();
    }

    /// Runs `f` on our end of the Unix connection under the read lock (see
    /// the type's docs); None once the application closed every number.
    fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        let fds = self.fds.read();
        let fd = *fds.first()?;
        Some(f(sys::borrow_fd(fd)))
    }

    /// Waits up to `timeout` for bytes on our end. The lock is not held
    /// across the sleep (a close would wait for it): if the number is
    /// closed and reused meanwhile, the poll only ends early or late.
    pub(super) fn wait_briefly(&self, timeout: Duration) {
        let Some(fd) = self.with_fd(|fd| fd.as_raw_fd()) else {
            return;
        };
        let _ = handshake::wait_readable(sys::borrow_fd(fd), Some(timeout));
    }

    /// A copy of our end for a wait that must outlive the application's
    /// numbers (`Connection::wait_room`); None if none is left or no fd can
    /// be made.
    pub(super) fn hold(&self) -> Option<std::os::fd::OwnedFd> {
        self.with_fd(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 0).ok())
            .flatten()
    }

    /// Whether the peer's end of `fd` (a `hold` copy) is closed.
    pub(super) fn hung_up_on(fd: BorrowedFd<'_>) -> bool {
        poll_now(fd, 0) & (libc::POLLHUP | libc::POLLERR) != 0
    }

    /// `shutdown(2)` on our end.
    pub(super) fn shutdown(&self, how: rustix::net::Shutdown) {
        self.with_fd(|fd| rustix::net::shutdown(fd, how));
    }

    /// Runs `f` on our end with its number (a carrier records the
    /// socket's identity), under the read lock.
    pub(super) fn on_socket<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        self.with_fd(f)
    }

    pub(super) fn taken(&self) -> u32 {
        self.taken.get().map_or(0, |t| t.get())
    }

    /// Bytes queued on our end.
    pub(super) fn queued(&self) -> usize {
        if crate::platform::sandbox::active() {
            return self.queued_sandboxed();
        }
        self.with_fd(|fd| rustix::io::ioctl_fionread(fd).map_or(0, |n| n as usize))
            .unwrap_or(0)
    }

    /// Looks at the queued bytes without taking them.
    pub(super) fn peek(&self) -> Pending {
        if crate::platform::sandbox::active() {
            return self.peek_sandboxed();
        }
        let mut buf = [0u8; 64];
        loop {
            let got = self.with_fd(|fd| {
                rustix::net::recv(fd, &mut buf, RecvFlags::PEEK | RecvFlags::DONTWAIT)
            });
            // No number left (the application closed them while we ran):
            // nothing queued that we can see, not a hang-up.
            let Some(got) = got else {
                return Pending {
                    hung_up: false,
                    foreign: false,
                };
            };
            return match got {
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
    pub(super) fn take(&self, n: usize) -> (usize, bool) {
        if crate::platform::sandbox::active() {
            return self.take_sandboxed(n);
        }
        with_buffer(n, |buf| self.take_into(n, buf))
    }

    fn take_into(&self, n: usize, buf: &mut [u8]) -> (usize, bool) {
        let mut got = 0;
        while got < n {
            let want = (n - got).min(buf.len());
            let r = self.with_fd(|fd| rustix::net::recv(fd, &mut buf[..want], RecvFlags::DONTWAIT));
            match r.unwrap_or(Err(Errno::AGAIN)) {
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

    /// Marks the peer as possibly gone (see `suspect`); a doorbell's
    /// failure outranks a read's end.
    pub(super) fn suspect(&self, why: Suspect) {
        if self.suspect.load(Ordering::Relaxed) < why as u8 {
            self.suspect.fetch_max(why as u8, Ordering::Relaxed);
        }
    }

    fn suspect_if(&self, gone: bool) {
        if gone {
            self.suspect(Suspect::Doorbell);
        }
    }

    /// Why the peer may be gone, if it may; asking clears it (one look at
    /// the kernel per suspicion).
    pub(super) fn suspected(&self) -> Suspect {
        if self.suspect.load(Ordering::Relaxed) == Suspect::No as u8 {
            return Suspect::No;
        }
        match self.suspect.swap(Suspect::No as u8, Ordering::Relaxed) {
            x if x == Suspect::Doorbell as u8 => Suspect::Doorbell,
            x if x == Suspect::Ended as u8 => Suspect::Ended,
            _ => Suspect::No,
        }
    }

    /// A cheap look: the send fast path leaves a suspected peer to
    /// `send_rest`.
    pub(super) fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Relaxed) != Suspect::No as u8
    }

    /// True once the peer's end is closed (its process may be gone).
    pub(super) fn hung_up(&self) -> bool {
        if crate::platform::sandbox::active() {
            return self.poll_now(0) & (libc::POLLHUP | libc::POLLERR) != 0;
        }
        self.poll_now(0) & (libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Whether the kernel reports our end writable right now.
    fn kernel_writable(&self) -> bool {
        if crate::platform::sandbox::active() {
            return self.room_for_write();
        }
        self.poll_now(libc::POLLOUT) & libc::POLLOUT != 0
    }

    /// Makes our end unwritable until the reader frees room (see the type's
    /// docs): filler bytes, then one byte of its own so that the reader,
    /// which keeps the last queued byte, frees every filler buffer. Counted
    /// in `tx` before they are sent; what could not be sent is taken back.
    pub(super) fn fill(&self, tx: &Producer) {
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

    /// O_NONBLOCK of the open file (true once the application closed
    /// every number: nothing may block on it then).
    pub(super) fn nonblocking(&self) -> bool {
        self.with_fd(|fd| {
            rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
        })
        .unwrap_or(true)
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
    ///
    /// `call_fd` is the fd of the application's call that waits: the wait
    /// holds no lock (a close from another thread must not wait for data).
    pub(super) fn wait(
        &self,
        call_fd: BorrowedFd<'_>,
        timeout: Option<Duration>,
    ) -> Result<Woke, Errno> {
        if timeout.is_none() && crate::platform::sandbox::active() {
            return self.wait_sandboxed(call_fd);
        }
        if timeout.is_none() {
            let mut one = [0u8; 1];
            let got = sleep_outside(|| rustix::net::recv(call_fd, &mut one, RecvFlags::PEEK));
            return match got.unwrap_or(Err(Errno::INTR)) {
                Ok((0, _)) => Ok(Woke::HungUp),
                Ok(_) => Ok(Woke::Rung),
                // Made non-blocking meanwhile (by another process).
                Err(Errno::AGAIN) => Ok(Woke::Rung),
                Err(e) if peer_gone(e) => Ok(Woke::HungUp),
                Err(e) => Err(e),
            };
        }
        cancellable_wait(call_fd, timeout).map(|_| Woke::Rung)
    }

    /// A lazy reader's sleep (see `Connection::lazy`): a blocking recv that
    /// takes the bytes it wakes on, so a wake-up costs one system call, as
    /// on a kernel socket. Leaving the fd unreadable while the ring may
    /// still hold data (a short read) is fine for a lazy reader: poll and
    /// select look at the ring first, and joining an epoll set turns the
    /// reader eager (`Connection::watch`). Err(INTR) on a signal, with the
    /// kernel's own SA_RESTART rules when there is no timeout. `call_fd`:
    /// as for `wait`.
    pub(super) fn wait_taking(
        &self,
        call_fd: BorrowedFd<'_>,
        timeout: Option<Duration>,
    ) -> Result<Woke, Errno> {
        let mut flags = RecvFlags::empty();
        if crate::platform::sandbox::active() {
            // No blocking recv (nor MSG_DONTWAIT): poll, then a read that
            // finds bytes (or the end) waiting.
            wait_readable_sandboxed(call_fd, timeout)?;
        } else if timeout.is_some() {
            cancellable_wait(call_fd, timeout)?;
            flags = RecvFlags::DONTWAIT;
        }
        let mut buf = [0u8; 64];
        let got = if crate::platform::sandbox::active() {
            if poll_now(call_fd, libc::POLLIN) == 0 {
                return Ok(Woke::Rung); // the wait timed out
            }
            rustix::io::read(call_fd, &mut buf).map(|n| (n, ()))
        } else {
            sleep_outside(|| rustix::net::recv(call_fd, &mut buf, flags))
                .unwrap_or(Err(Errno::INTR))
                .map(|(n, _)| (n, ()))
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
    /// Leaves the ring out when this thread's last ring woke the same
    /// sleep of the same reader (decision 41): the sleep's name is the
    /// reader's to choose, so it counts only with the pid the kernel gives
    /// for the reader's end (a process cannot make another's name its own
    /// and so cost that process a wake-up).
    fn ring_sleep(&self, sleep: u64) -> bool {
        if !SKIP_RUNG_SLEEPS {
            return self.ring();
        }
        let reader = self.reader();
        if reader == 0 {
            return self.ring();
        }
        if RUNG.try_with(|r| r.get()) == Ok((sleep, reader)) {
            return false;
        }
        let sent = self.ring();
        if sent {
            let _ = RUNG.try_with(|r| r.set((sleep, reader)));
        }
        sent
    }

    fn ring(&self) -> bool {
        if crate::platform::sandbox::active() {
            return self.ring_sandboxed();
        }
        loop {
            let sent = self.with_fd(|fd| {
                rustix::net::send(fd, &[DOORBELL], SendFlags::DONTWAIT | SendFlags::NOSIGNAL)
            });
            // The application closed every number (the ring's close state
            // after the last close): no system call, nothing to say; the
            // kernel's hang-up as our end closes wakes the peer.
            let Some(sent) = sent else {
                return false;
            };
            return match sent {
                Ok(n) => n == 1,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    log!(debug, "doorbell not rung: {e}");
                    self.suspect_if(peer_gone(e));
                    false
                }
            };
        }
    }
}

impl Bell {
    /// The reading peer's pid (`reader`), asked once; 0 when unknown (and
    /// in a sandbox, whose filter may refuse getsockopt).
    fn reader(&self) -> u32 {
        let known = self.reader.load(Ordering::Relaxed);
        if known == 0 {
            let pid = if crate::platform::sandbox::active() {
                None
            } else {
                self.with_fd(sys::peer_cred).flatten()
            };
            let pid = pid.map_or(NO_READER, |(p, _, _)| if p == 0 { NO_READER } else { p });
            self.reader.store(pid, Ordering::Relaxed);
            return if pid == NO_READER { 0 } else { pid };
        }
        if known == NO_READER {
            0
        } else {
            known
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
    /// revents of a zero-timeout poll for `events` (0 on error, and once
    /// the application closed every number: a writer blocked then goes on
    /// waiting for room, as on a kernel socket closed under it).
    pub(super) fn poll_now(&self, events: i16) -> i16 {
        self.with_fd(|fd| poll_now(fd, events)).unwrap_or(0)
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
        self.with_fd(|fd| {
            if crate::platform::sandbox::active() {
                return rustix::io::write(fd, bytes);
            }
            rustix::net::send(fd, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)
        })
        .unwrap_or(Err(Errno::BADF))
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
            return match self.send_bytes(&[DOORBELL]) {
                Ok(n) => n == 1,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    log!(debug, "doorbell not rung: {e}");
                    self.suspect_if(peer_gone(e));
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
        with_buffer(n, |buf| self.take_sandboxed_into(n, buf))
    }

    fn take_sandboxed_into(&self, n: usize, buf: &mut [u8]) -> (usize, bool) {
        let mut got = 0;
        while got < n {
            if self.poll_now(libc::POLLIN) == 0 {
                break;
            }
            let want = (n - got).min(buf.len());
            let r = self.with_fd(|fd| rustix::io::read(fd, &mut buf[..want]));
            match r.unwrap_or(Err(Errno::AGAIN)) {
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

    /// `wait` without a timeout: the byte stays queued (see `wait`).
    fn wait_sandboxed(&self, call_fd: BorrowedFd<'_>) -> Result<Woke, Errno> {
        wait_readable_sandboxed(call_fd, None)?;
        let r = self.poll_now(libc::POLLIN | libc::POLLRDHUP);
        if self.peer_shut(r) && self.queued_sandboxed() == 0 {
            return Ok(Woke::HungUp);
        }
        Ok(Woke::Rung)
    }
}

/// A sleep of a blocking call: outside the library (`guard::suspended`:
/// a signal handler that interrupts it may use our sockets, and a
/// siglongjmp out of that handler leaves the thread outside, not with
/// every later call refused as re-entry, EIO: review of decision 45,
/// recvjmp) and ended by pthread_cancel (`cancel::sleep`).
pub(super) fn sleep_outside<R>(f: impl FnOnce() -> R) -> Option<R> {
    crate::platform::guard::suspended(|| crate::platform::cancel::sleep(f))
}

/// `handshake::wait_readable`, which pthread_cancel may end with EINTR.
fn cancellable_wait(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool, Errno> {
    sleep_outside(|| handshake::wait_readable(fd, timeout)).unwrap_or(Err(Errno::INTR))
}

/// revents of a zero-timeout poll of `fd` for `events` (0 on error).
fn poll_now(fd: BorrowedFd<'_>, events: i16) -> i16 {
    sys::poll_fd(fd, events, 0).unwrap_or(0)
}

/// Sleeps in poll until bytes or the end are queued on `fd` (or
/// `timeout`); a signal restarts the wait when the kernel would restart a
/// blocking recv (SA_RESTART; poll itself never restarts after a handler).
fn wait_readable_sandboxed(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<(), Errno> {
    let ms = timeout.map_or(-1, |t| {
        t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
    });
    loop {
        return match sys::poll_fd(fd, libc::POLLIN | libc::POLLRDHUP, ms) {
            Ok(_) => Ok(()),
            Err(Errno::INTR) if timeout.is_none() && crate::platform::cancel::restarts() => {
                continue
            }
            Err(e) => Err(e),
        };
    }
}

/// Why `Bell::wait` returned.
pub(super) enum Woke {
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
pub(super) struct RoomBell(pub(super) Arc<Bell>);

impl Doorbell for RoomBell {
    fn ring(&self) -> bool {
        let q = self.0.queued();
        if q > 1 {
            self.0.take(q - 1);
        }
        true
    }
}

/// A zeroed buffer to take `n` doorbell bytes into: a small one for the
/// usual one or few (zeroing 8 KiB on every take cost more than the
/// receive itself: 46% of a kvbench client's instructions at 50
/// connections under callgrind), 8 KiB when many are owed.
fn with_buffer<R>(n: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    if n <= 256 {
        f(&mut [0u8; 256])
    } else {
        f(&mut [0u8; 8192])
    }
}
