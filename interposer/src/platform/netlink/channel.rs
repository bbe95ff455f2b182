//! The netlink sockets: one cached per protocol per process (reopened after
//! a fork and after a change of network namespace), a request/reply
//! exchange with a deadline, and the sequence numbers that pair them.
#![deny(unsafe_code)]

use super::*;
use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::Mutex;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, Ordering};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, Protocol, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

/// The outcome of one try on a socket: `Err` when the socket or the reply
/// was at fault (worth a fresh socket), `Ok(kernel's answer)` otherwise.
pub(crate) type Attempt<T> = Result<Result<T, Errno>, Errno>;

/// One cached netlink socket of a protocol.
pub(crate) struct Channel {
    protocol: Option<Protocol>,
    pub(crate) cached: Mutex<Sockets>,
    /// The fork generation in which the lock was last taken: a child finds
    /// the lock word as a parent thread left it at the fork, and a lock taken
    /// in an earlier generation may never be released here.
    holder: AtomicU32,
}

pub(crate) struct Conn {
    pub(crate) fd: InternalFd,
    /// Sockets from before a fork are shared with the other process, which
    /// could read our replies (or we its): each side opens its own.
    generation: u32,
    /// A netlink socket answers for the network namespace it was made in.
    namespace_epoch: u32,
}

/// Bumped when the process (a thread of it) changes network namespace.
pub(crate) static NAMESPACE_EPOCH: AtomicU32 = AtomicU32::new(0);

/// setns/unshare moved the calling thread to another network namespace:
/// sockets made before answer for the old one; they are kept for the
/// listeners made there (see `in_namespace`). (Threads of one process in
/// different namespaces share these sockets: a known gap.)
pub(crate) fn namespace_changed() {
    ROUTE.retire();
    DIAG.retire();
    NAMESPACE_EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// Before a call that may change the network namespace: a socket of the
/// current one, for its listeners to ask about it later.
pub(crate) fn keep_namespace() {
    let _ = ROUTE.run(|_| Ok(Ok(())));
}

/// Which network namespace the process is in, as far as we know (see
/// `namespace_changed`).
pub(crate) fn namespace_epoch() -> u32 {
    NAMESPACE_EPOCH.load(Ordering::Acquire)
}

std::thread_local! {
    static ASKING_FOR: core::cell::Cell<Option<u32>> = const { core::cell::Cell::new(None) };
}

/// Runs `f` with every query answered for the namespace of `epoch` (a
/// listener's, made before the process moved): with a socket kept from
/// then, or not at all (EHOSTUNREACH).
pub(crate) fn in_namespace<T>(epoch: u32, f: impl FnOnce() -> T) -> T {
    let before = ASKING_FOR.with(|a| a.replace(Some(epoch)));
    let r = f();
    ASKING_FOR.with(|a| a.set(before));
    r
}

pub(crate) static ROUTE: Channel = Channel::new(None);
/// Namespaces left behind whose sockets are kept.
pub(crate) const RETIRED_MAX: usize = 4;
pub(crate) static DIAG: Channel = Channel::new(Some(netlink::SOCK_DIAG));

pub(crate) static SEQ: AtomicU32 = AtomicU32::new(0);

pub(crate) fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

impl Channel {
    pub(crate) const fn new(protocol: Option<Protocol>) -> Channel {
        Channel {
            protocol,
            cached: Mutex::new(Sockets {
                current: None,
                retired: Vec::new(),
            }),
            holder: AtomicU32::new(0),
        }
    }

    /// The sockets, locked; None if the lock may be held by a thread that
    /// does not exist here (taken before a fork): never wait for it.
    pub(crate) fn sockets(
        &self,
        generation: u32,
    ) -> Option<crate::platform::lock::MutexGuard<'_, Sockets>> {
        let guard = match self.cached.try_lock() {
            Some(guard) => guard,
            None if self.holder.load(Ordering::Relaxed) != generation => return None,
            None => self.cached.lock(),
        };
        self.holder.store(generation, Ordering::Relaxed);
        Some(guard)
    }

    pub(crate) fn run<T>(&self, op: impl FnMut(BorrowedFd<'_>) -> Attempt<T>) -> Result<T, Errno> {
        let generation = crate::platform::fork::generation();
        let asking = ASKING_FOR
            .with(|a| a.get())
            .filter(|&e| e != namespace_epoch());
        let Some(mut sockets) = self.sockets(generation) else {
            return match asking {
                Some(_) => Err(Errno::AGAIN),
                // A socket of our own serves this call.
                None => self.attempts(&mut None, &mut Vec::new(), generation, op),
            };
        };
        let Sockets { current, retired } = &mut *sockets;
        match asking {
            Some(epoch) => run_retired(retired, epoch, generation, op),
            None => self.attempts(current, retired, generation, op),
        }
    }

    /// The current socket joins the retired ones (the process moves to
    /// another namespace).
    pub(crate) fn retire(&self) {
        let Some(mut sockets) = self.sockets(crate::platform::fork::generation()) else {
            return;
        };
        if let Some(conn) = sockets.current.take() {
            keep_retired(&mut sockets.retired, conn);
        }
    }

    /// Out of fds (`sockets::spare_fds`): the current socket is closed,
    /// opened again at the next question (the retired ones stay: their
    /// namespaces cannot be reached again). True if one was open.
    pub(crate) fn give_back(&self) -> bool {
        let Some(mut sockets) = self.cached.try_lock() else {
            return false;
        };
        sockets.current.take().is_some()
    }

    /// `op` on the current socket, then once more on a fresh one if the
    /// first failed.
    pub(crate) fn attempts<T>(
        &self,
        slot: &mut Option<Conn>,
        retired: &mut Vec<Conn>,
        generation: u32,
        mut op: impl FnMut(BorrowedFd<'_>) -> Attempt<T>,
    ) -> Result<T, Errno> {
        let mut failure = Errno::IO;
        for _ in 0..2 {
            let epoch = namespace_epoch();
            let conn = match slot.take() {
                Some(conn) if conn.generation == generation && conn.namespace_epoch == epoch => {
                    slot.insert(conn)
                }
                stale => {
                    let fresh = Conn::open(self.protocol, generation)?;
                    // Of a namespace left behind (not retired in time):
                    // kept for its listeners. (Of a fork: closed, after the
                    // new one is made, which so never takes its number.)
                    if let Some(old) = stale.filter(|c| c.generation == generation) {
                        keep_retired(retired, old);
                    }
                    slot.insert(fresh)
                }
            };
            match op(conn.fd.as_fd()) {
                Ok(answer) => return answer,
                Err(e) => {
                    *slot = None;
                    failure = e;
                }
            }
        }
        Err(failure)
    }
}

/// The sockets of a protocol: the current namespace's, and those of
/// namespaces the process has left (`namespace_changed`), for their
/// listeners.
pub(crate) struct Sockets {
    pub(crate) current: Option<Conn>,
    retired: Vec<Conn>,
}

pub(crate) fn keep_retired(retired: &mut Vec<Conn>, conn: Conn) {
    if retired.len() >= RETIRED_MAX {
        retired.remove(0);
    }
    retired.push(conn);
}

/// `op` on a socket of an earlier namespace: one try (no new one can be
/// made there; a failed one is kept, the next query may succeed). Not
/// across a fork: the other process could read our replies.
pub(crate) fn run_retired<T>(
    retired: &[Conn],
    epoch: u32,
    generation: u32,
    mut op: impl FnMut(BorrowedFd<'_>) -> Attempt<T>,
) -> Result<T, Errno> {
    let Some(conn) = retired
        .iter()
        .find(|c| c.namespace_epoch == epoch && c.generation == generation)
    else {
        return Err(Errno::HOSTUNREACH);
    };
    op(conn.fd.as_fd())?
}

impl Conn {
    pub(crate) fn open(protocol: Option<Protocol>, generation: u32) -> Result<Conn, Errno> {
        let namespace_epoch = NAMESPACE_EPOCH.load(Ordering::Acquire);
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            protocol,
        )?;
        // Connected to the kernel (port id 0): datagrams from any other
        // sender are refused, so every reply is the kernel's.
        rustix::net::connect(&fd, &SocketAddrNetlink::new(0, 0))?;
        Ok(Conn {
            fd: InternalFd::new(fd),
            generation,
            namespace_epoch,
        })
    }
}

/// Sends `req` (sequence number `seq`) and feeds each data message of the
/// reply to `on_msg`, until the reply is complete. Messages of other
/// sequence numbers (replies to an earlier call that failed halfway) are
/// skipped.
pub(crate) fn exchange(
    fd: BorrowedFd<'_>,
    req: &[u8],
    seq: u32,
    buf: &mut [MaybeUninit<u8>],
    mut on_msg: impl FnMut(u16, &[u8]) -> Result<(), Errno>,
) -> Attempt<()> {
    loop {
        match rustix::net::send(fd, req, SendFlags::empty()) {
            Ok(n) if n == req.len() => break,
            Ok(_) => return Err(Errno::PROTO),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let mut deadline = None;
    loop {
        // Uninitialised: zeroing 8 KiB would cost more than the parsing.
        let (data, n) =
            match rustix::net::recv(fd, &mut *buf, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
                Ok(((data, _), n)) => (&*data, n),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    wait_readable(fd, &mut deadline)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
        if n > data.len() {
            // Cut to our buffer: fatal only if it was our reply.
            if u32_at(data, 8)? == seq {
                return Err(Errno::MSGSIZE);
            }
            continue;
        }
        for msg in Messages(data) {
            let msg = msg?;
            if msg.seq != seq {
                continue;
            }
            match msg.ty {
                NLMSG_NOOP => {}
                NLMSG_ERROR => {
                    return match i32_at(msg.payload, 0)? {
                        0 => Ok(Ok(())), // an ack
                        e @ -4095..=-1 => Ok(Err(Errno::from_raw_os_error(-e))),
                        _ => Err(Errno::PROTO),
                    };
                }
                NLMSG_DONE => return Ok(Ok(())),
                NLMSG_OVERRUN => return Err(Errno::NOBUFS),
                ty => {
                    on_msg(ty, msg.payload)?;
                    if msg.flags & NLM_F_MULTI == 0 {
                        return Ok(Ok(()));
                    }
                }
            }
        }
    }
}

/// Waits (bounded) for a reply that was not queued when send returned.
pub(crate) fn wait_readable(
    fd: BorrowedFd<'_>,
    deadline: &mut Option<Instant>,
) -> Result<(), Errno> {
    let now = Instant::now();
    let end = *deadline.get_or_insert(now + REPLY_TIMEOUT);
    let left = end.saturating_duration_since(now);
    if left.is_zero() {
        return Err(Errno::TIMEDOUT);
    }
    let timeout = Timespec {
        tv_sec: left.as_secs() as i64,
        tv_nsec: i64::from(left.subsec_nanos()),
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The answer of a request that expects exactly one data message.
pub(crate) fn finish<T>(answer: Result<(), Errno>, found: Option<T>) -> Attempt<T> {
    match answer {
        Ok(()) => found.map(Ok).ok_or(Errno::PROTO),
        Err(e) => Ok(Err(e)),
    }
}

// ---------------------------------------------------------------------------
// Wire format (native-endian headers, 4-byte alignment)
