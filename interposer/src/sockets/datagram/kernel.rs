//! The socket's own kernel UDP socket as a second route (review H1-H3):
//! datagrams to a destination no emulated socket holds go through it, as
//! the kernel would carry them (a plain resolver stub, statsd, another
//! host), and what the kernel delivers to it is received beside the
//! emulated datagrams, so one socket talks to both.
//!
//! It holds a port only once it needs one (a wildcard bind, or the first
//! send the kernel carries): until then it stays unbound, in no
//! /proc/net/udp line, and costs the emulated path nothing.
#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendFlags};
use shmnet_ring::dgram::Received;

use crate::platform::internal_fd::InternalFd;

/// Sends one datagram to `dest` through the kernel socket, never waiting
/// (a full socket buffer drops it, as UDP may).
pub(super) fn send(
    sock: BorrowedFd<'_>,
    dest: SocketAddr,
    bufs: &[IoSlice<'_>],
) -> Result<usize, Errno> {
    let mut control = SendAncillaryBuffer::default();
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match rustix::net::sendmsg_addr(sock, &dest, bufs, &mut control, flags) {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(bufs.iter().map(|b| b.len()).sum()),
            r => return r,
        }
    }
}

/// Receives one datagram the kernel queued, without waiting: its length
/// (untruncated), the bytes copied and its source; None when none is
/// queued; Err for a pending error (ECONNREFUSED on a connected one).
pub(super) fn recv(
    sock: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    peek: bool,
) -> Option<Result<(Received, Option<SocketAddr>), Errno>> {
    let room: usize = bufs.iter().map(|b| b.len()).sum();
    let mut flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
    if peek {
        flags |= RecvFlags::PEEK;
    }
    // A recvmsg that asked for cmsgs takes the kernel's (`ancillary`).
    let with_control = super::ancillary::kernel_receive(|control| {
        if control.is_empty() {
            return (None, 0, false);
        }
        let got = loop {
            match crate::platform::sys::recvmsg_control(sock, bufs, control, flags.bits() as i32) {
                Err(libc::EINTR) => continue,
                r => break r,
            }
        };
        match got {
            Ok(g) => {
                let (n, cut) = (g.control_len, g.flags & libc::MSG_CTRUNC != 0);
                let got = Received {
                    len: g.len,
                    copied: g.len.min(room),
                    slot: u32::MAX,
                };
                (Some(Some(Ok((got, g.from)))), n, cut)
            }
            Err(libc::EAGAIN) => (Some(None), 0, false),
            Err(e) => (Some(Some(Err(Errno::from_raw_os_error(e)))), 0, false),
        }
    });
    if let Some(r) = with_control {
        return r;
    }
    let mut control = RecvAncillaryBuffer::default();
    let got = loop {
        match rustix::net::recvmsg(sock, bufs, &mut control, flags) {
            Err(Errno::INTR) => continue,
            r => break r,
        }
    };
    match got {
        Ok(m) => {
            let from = m.address.and_then(|a| SocketAddr::try_from(a).ok());
            let got = Received {
                len: m.bytes,
                copied: m.bytes.min(room),
                slot: u32::MAX,
            };
            Some(Ok((got, from)))
        }
        Err(Errno::AGAIN) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Whether the kernel socket has a datagram (or an error) for a receive.
pub(super) fn ready(sock: BorrowedFd<'_>) -> bool {
    crate::platform::sys::poll_fd(sock, libc::POLLIN | libc::POLLERR, 0).is_ok_and(|ev| ev != 0)
}

/// The size of the next datagram the kernel queued (FIONREAD), if any.
pub(super) fn next_len(sock: BorrowedFd<'_>) -> Option<usize> {
    if !ready(sock) {
        return None;
    }
    rustix::io::ioctl_fionread(sock).ok().map(|n| n as usize)
}

/// The leftovers' pair, and how many were put and not taken yet, in a
/// page shared across fork: at least as many as are there (put counts
/// before it sends, a take after it took), so a receive asks the pair
/// only when one may be there.
struct Leftovers {
    r: InternalFd,
    w: InternalFd,
    count: crate::platform::shared_file::ForkShared,
}

/// Whether a datagram from `from` is for a socket connected to `only`.
fn wanted(only: Option<SocketAddr>, from: Option<SocketAddr>) -> bool {
    match (only, from) {
        (Some(o), Some(f)) => {
            crate::transport::rendezvous::unmapped(o) == crate::transport::rendezvous::unmapped(f)
        }
        _ => true,
    }
}

/// What every UDP socket of ours has from `socket()` on (review H-A): the
/// epoll instance the application's fd number is, from the start and for
/// good, and the kernel UDP socket in it. Until the socket is emulated
/// (`Datagram::name`), it is a kernel UDP socket seen through that
/// instance: the instance is readable when the kernel socket is, and a
/// receive takes the kernel socket's datagrams; naming it only adds
/// members (the rendezvous listener, links, the eventfd), so whatever held
/// the fd before (an epoll set, a thread asleep in a receive, a dup, a
/// forked child) keeps the same file.
pub(crate) struct Shell {
    /// Behind the application's fd number (this is the library's copy).
    pub(super) epoll: InternalFd,
    /// The application's kernel UDP socket.
    pub(super) kernel: InternalFd,
    /// The kernel socket holds a port: what it receives is taken.
    bound: AtomicBool,
    /// A MSG_PEEK returned the kernel socket's next datagram: receives
    /// look there first until one takes it (review M-b).
    pub(super) peeked: AtomicBool,
    /// Of family AF_INET6.
    pub(super) v6: bool,
    /// What shared memory had queued when a fork shared the socket
    /// (`leftover.rs`): taken first.
    leftover: std::sync::OnceLock<Leftovers>,
}

/// Shells alive in this process: none, and a sendmsg passing fds
/// (SCM_RIGHTS) has no UDP socket of ours to swap (`any_live`).
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether this process holds any UDP socket of ours (one load).
pub(crate) fn any_live() -> bool {
    LIVE.load(Ordering::Relaxed) != 0
}

impl Drop for Shell {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// epoll data of the kernel socket in the instance.
pub(super) const KERNEL: u64 = u64::MAX;
/// epoll data of the leftovers' reading end in the instance.
pub(super) const LEFTOVER: u64 = u64::MAX - 1;

impl Shell {
    /// The shell of the kernel UDP socket `kernel` (the library's copy;
    /// `bound`: it holds a port).
    pub(super) fn new(kernel: OwnedFd, v6: bool, bound: bool) -> Result<Shell, Errno> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // Unbound, it is never readable: a member for when it is bound.
        epoll::add(
            &ep,
            &kernel,
            epoll::EventData::new_u64(KERNEL),
            epoll::EventFlags::IN,
        )?;
        LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(Shell {
            epoll: InternalFd::new(ep),
            kernel: InternalFd::new(kernel),
            bound: AtomicBool::new(bound),
            peeked: AtomicBool::new(false),
            v6,
            leftover: std::sync::OnceLock::new(),
        })
    }

    pub(super) fn kernel(&self) -> BorrowedFd<'_> {
        self.kernel.as_fd()
    }

    /// The kernel socket holds a port now (a bind, a connect, a send).
    pub(super) fn is_bound(&self) {
        self.bound.store(true, Ordering::Relaxed);
    }

    pub(super) fn bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }

    /// Whether the kernel socket has a datagram (or error) queued.
    pub(super) fn ready(&self) -> bool {
        self.revents() != 0
    }

    /// The kernel socket's POLLIN and POLLERR now (0 while unbound).
    pub(super) fn revents(&self) -> i16 {
        if self
            .leftover()
            .is_some_and(|l| super::leftover::next_len(l).is_some())
        {
            return libc::POLLIN;
        }
        if !self.bound() {
            return 0;
        }
        crate::platform::sys::poll_fd(self.kernel(), libc::POLLIN | libc::POLLERR, 0).unwrap_or(0)
    }

    /// The reading end of the leftovers, once a fork shared the socket.
    pub(super) fn leftover(&self) -> Option<BorrowedFd<'_>> {
        let l = self.leftover.get()?;
        (l.count.word(0).load(Ordering::Acquire) != 0).then(|| l.r.as_fd())
    }

    /// Queues a leftover (`leftover_writer` made the pair).
    pub(super) fn put_leftover(&self, from: Option<SocketAddr>, data: &[u8]) {
        let Some(l) = self.leftover.get() else {
            return;
        };
        l.count.word(0).fetch_add(1, Ordering::AcqRel);
        if !super::leftover::put(l.w.as_fd(), from, data) {
            self.leftover_taken();
        }
    }

    /// One leftover was taken (or dropped).
    fn leftover_taken(&self) {
        if let Some(l) = self.leftover.get() {
            let c = l.count.word(0);
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Makes the leftovers' pair (and puts its reading end in the
    /// instance) if it is not there yet; false when it cannot.
    pub(super) fn leftover_writer(&self) -> bool {
        if self.leftover.get().is_none() {
            let Ok((r, w)) = super::leftover::pair() else {
                return false;
            };
            let Ok(count) = crate::platform::shared_file::ForkShared::new() else {
                return false;
            };
            let data = epoll::EventData::new_u64(LEFTOVER);
            if epoll::add(&self.epoll, &r, data, epoll::EventFlags::IN).is_err() {
                return false;
            }
            let l = Leftovers {
                r: InternalFd::new(r),
                w: InternalFd::new(w),
                count,
            };
            let _ = self.leftover.set(l);
        }
        true
    }

    /// The next leftover (from `only` if given; others are dropped, as
    /// the kernel drops them for a connected socket).
    pub(super) fn take_leftover(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        only: Option<SocketAddr>,
    ) -> Option<(Received, Option<SocketAddr>)> {
        let l = self.leftover()?;
        while let Some((got, from)) = super::leftover::take(l, bufs, peek) {
            if wanted(only, from) {
                if !peek {
                    self.leftover_taken();
                }
                return Some((got, from));
            }
            if peek {
                super::leftover::skip(l);
            }
            self.leftover_taken();
        }
        None
    }

    /// Whether a leftover is there.
    pub(super) fn leftover_ready(&self) -> bool {
        self.leftover()
            .is_some_and(|l| super::leftover::next_len(l).is_some())
    }

    /// The size of the next datagram: a leftover's, else the kernel's.
    pub(super) fn next_len(&self) -> Option<usize> {
        self.leftover()
            .and_then(super::leftover::next_len)
            .or_else(|| next_len(self.kernel()))
    }

    /// The kernel's name of the socket (0.0.0.0:0 or [::]:0 unbound).
    pub(super) fn name(&self) -> Option<SocketAddr> {
        crate::platform::sys::local_name(self.kernel())
    }

    /// A datagram the kernel socket received (from `only` if given: the
    /// kernel socket may not be connected where ours is). Ok(None): none.
    pub(super) fn take(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        only: Option<SocketAddr>,
    ) -> Result<Option<(Received, Option<SocketAddr>)>, Errno> {
        if let Some(got) = self.take_leftover(bufs, peek, only) {
            return Ok(Some(got));
        }
        for _ in 0..64 {
            let (got, from) = match recv(self.kernel(), bufs, peek) {
                None => return Ok(None),
                Some(r) => r?,
            };
            if wanted(only, from) {
                return Ok(Some((got, from)));
            }
            if peek {
                // Not ours to deliver: consumed, as the kernel would drop it.
                let _ = recv(self.kernel(), &mut [], false);
            }
        }
        Ok(None)
    }

    /// Sleeps until the instance is readable, at most `ms` (-1: no
    /// limit): Ok(false) on timeout, EINTR for a signal.
    pub(super) fn wait(&self, ms: i32) -> Result<bool, Errno> {
        crate::platform::sys::poll_fd(self.epoll.as_fd(), libc::POLLIN, ms).map(|ev| ev != 0)
    }
}
