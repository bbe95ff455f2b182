//! Parked rendezvous connections (see `listener`): those accepted before
//! their connect message arrived wait here, their fds in a queue every
//! process sharing the listener can take them from, registered one-shot in
//! the listener's epoll instance so that the message's arrival wakes the
//! application once.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::{Mutex, RwLock};
use crate::transport::handshake;

/// How long a rendezvous connection may take to send its connect message
/// (a connector sends it right after connecting: microseconds, unless it is
/// descheduled or stopped).
pub(crate) const PARK_PATIENCE: Duration = Duration::from_secs(2);

// A connection lent at the fd limit waits for its number as long as a
// parked one waits for its message (`platform::pocket`).
const _: () = assert!(PARK_PATIENCE.as_millis() == crate::platform::pocket::PATIENCE.as_millis());

/// Where a rendezvous connection came from: the namespace's abstract
/// names (the connector is in our network namespace), or SHMNET_DIR (it
/// may be in another one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    Local = 0,
    Host = 1,
}

/// What an accepted rendezvous connection has sent so far.
pub(crate) enum Arrival {
    /// Nothing yet.
    Empty,
    /// A whole connect message.
    Complete,
    /// A short message, end of stream, an error: never a connection.
    Bad,
}

pub(crate) fn arrival(conn: BorrowedFd<'_>) -> Arrival {
    let mut peek = [0u8; handshake::LEN];
    match rustix::net::recv(
        conn,
        &mut peek,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Err(Errno::AGAIN | Errno::INTR) => Arrival::Empty,
        // A connector sends its message in one piece: a part of one is a
        // peer that is not one of ours (and would keep us readable).
        Ok((n, _)) if n == handshake::LEN => Arrival::Complete,
        _ => Arrival::Bad,
    }
}

/// Where a parked connection's handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting for the connect message.
    New = 0,
    /// Its reuse offer was declined: waiting for a fresh Connect.
    Declined = 1,
}

pub(crate) fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// A parked connection's record, sent with its fd.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub state: State,
    pub scope: Scope,
    /// CLOCK_MONOTONIC, milliseconds: the same clock in every process.
    pub deadline_ms: u64,
}

impl Record {
    const LEN: usize = 16;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.state as u8;
        b[1] = self.scope as u8;
        b[8..16].copy_from_slice(&self.deadline_ms.to_le_bytes());
        b
    }

    /// Only the processes sharing the listener write the queue; still,
    /// nothing read from it is trusted further than this.
    fn decode(b: &[u8; Self::LEN]) -> Option<Record> {
        let state = match b[0] {
            0 => State::New,
            1 => State::Declined,
            _ => return None,
        };
        let scope = match b[1] {
            0 => Scope::Local,
            1 => Scope::Host,
            _ => return None,
        };
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[8..16]);
        Some(Record {
            state,
            scope,
            deadline_ms: u64::from_le_bytes(d),
        })
    }
}

/// The queue of parked connections: a datagram socket pair, each datagram
/// a `Record` with the connection's fd attached. Shared by every process
/// that shares the listener (it is inherited with it).
///
/// The pair is made only when the process forks while the listener
/// exists (`share`, from the fork's prepare handler, so that parent and
/// child share one queue), not with the listener: its two fds would be two
/// connections fewer than kernel TCP gives under `ulimit -n`
/// (docs/benchmarks.md). Without it a parked connection is *held* in this
/// process's memory, its fd kept — one fd while its message is late, where
/// the pair would cost two for good; no other process can look for it (a
/// fork would have made the pair and moved it there), and a child forked
/// when the pair could not be made drops its copies (`reset_after_fork`).
pub(crate) struct Parking {
    pair: RwLock<Option<Arc<Pair>>>,
    held: Mutex<Vec<(Record, OwnedFd)>>,
    /// Pushed minus popped in this process: a hint for when to sweep.
    count: AtomicU32,
    last_sweep_ms: AtomicU64,
}

/// Some listener may lack its pair: set when a listener is made, cleared
/// by the fork's prepare handler once it made them all
/// (`calls::process`), so that a process forking often
/// walks its sockets only after a new listener.
pub(crate) static UNQUEUED: AtomicBool = AtomicBool::new(false);

/// The two ends of the queue.
pub(crate) struct Pair {
    tx: InternalFd,
    rx: InternalFd,
    /// Taken around a pop by every thread and forked process sharing the
    /// pair (`pop`); None if it could not be mapped.
    popping: Option<crate::platform::shared_lock::SharedLock>,
}

impl Pair {
    /// The receiving end: readable while anything is queued.
    pub(crate) fn queue(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Whether what is queued can be popped now: its lock can be had
    /// (within its patience). Not while a process holding it is stopped
    /// (SIGSTOP, a debugger): what it queued would wait until it runs
    /// again, so a connection parked meanwhile is held in memory instead.
    fn reachable(&self) -> bool {
        self.popping
            .as_ref()
            .is_none_or(|lock| lock.with(|| ()).is_some())
    }
}

impl Parking {
    pub(crate) fn new() -> Parking {
        UNQUEUED.store(true, Ordering::Relaxed);
        Parking {
            pair: RwLock::new(None),
            held: Mutex::new(Vec::new()),
            count: AtomicU32::new(0),
            last_sweep_ms: AtomicU64::new(monotonic_ms()),
        }
    }

    /// The pair, if made.
    pub(crate) fn pair(&self) -> Option<Arc<Pair>> {
        self.pair.read().clone()
    }

    /// Makes the pair if there is none (racing makers: the first stored
    /// wins, the other's fds are closed); connections held meanwhile go
    /// into it.
    fn make(&self) -> Result<(), Errno> {
        if self.pair.read().is_some() {
            return Ok(());
        }
        let (tx, rx) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        let made = Arc::new(Pair {
            tx: InternalFd::new(tx),
            rx: InternalFd::new(rx),
            popping: crate::platform::shared_lock::SharedLock::new(),
        });
        self.pair.write().get_or_insert(made);
        let held = std::mem::take(&mut *self.held.lock());
        let slot = self.pair.read();
        for (rec, conn) in held {
            let sent = slot.as_ref().is_some_and(|pair| {
                handshake::send_with_fd(pair.tx.as_fd(), &rec.encode(), conn.as_fd()).is_ok()
            });
            if !sent {
                self.held.lock().push((rec, conn));
            }
        }
        Ok(())
    }

    /// Before fork: the pair is made now (if it can be), parent and child
    /// sharing it.
    pub(crate) fn share(&self) -> Result<(), Errno> {
        self.make()
    }

    /// In a forked child: a parent thread may have held a lock, and the
    /// connections held in memory are the parent's to serve (`share` in
    /// the prepare handler put them in the shared queue if it could).
    pub(crate) fn reset_after_fork(&self) {
        self.pair.reset_after_fork();
        self.held.reset_after_fork();
        let n = std::mem::take(&mut *self.held.lock()).len();
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(n as u32))
            });
    }

    pub(crate) fn len_hint(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }

    /// A look for idle ones is due: something is parked and the last look
    /// was a while ago (an idle one never wakes anybody).
    pub(crate) fn sweep_due(&self) -> bool {
        self.len_hint() > 0
            && monotonic_ms().saturating_sub(self.last_sweep_ms.load(Ordering::Relaxed))
                >= PARK_PATIENCE.as_millis() as u64
    }

    pub(crate) fn swept(&self, now: u64) {
        self.last_sweep_ms.store(now, Ordering::Relaxed);
    }

    /// Queues `conn` (held in memory while there is no pair, or the
    /// pair's lock is out of reach: `Pair::reachable`), then `arm`s
    /// it: once it can be found, before anyone can take it. On failure it
    /// is closed.
    pub(crate) fn push(
        &self,
        conn: OwnedFd,
        rec: Record,
        arm: &dyn Fn(BorrowedFd<'_>),
    ) -> Result<(), Errno> {
        let queued = self.pair.read();
        if let Some(pair) = queued.as_ref().filter(|pair| pair.reachable()) {
            self.count.fetch_add(1, Ordering::Relaxed);
            let sent = handshake::send_with_fd(pair.tx.as_fd(), &rec.encode(), conn.as_fd());
            if let Err(e) = sent {
                self.uncount();
                return Err(e);
            }
            arm(conn.as_fd());
            return Ok(());
        }
        drop(queued);
        let mut held = self.held.lock();
        self.count.fetch_add(1, Ordering::Relaxed);
        arm(conn.as_fd());
        held.push((rec, conn));
        Ok(())
    }

    fn uncount(&self) {
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
    }

    /// Whether a connection is held in memory: it keeps an fd number of
    /// the process's that a kernel listener, whose connection is not yet
    /// established, would have left free.
    pub(crate) fn holds_any(&self) -> bool {
        !self.held.lock().is_empty()
    }

    /// A connection held in memory (taking it needs no fd).
    pub(crate) fn pop_held(&self) -> Option<(Record, OwnedFd)> {
        let got = self.held.lock().pop()?;
        self.uncount();
        Some(got)
    }

    /// A connection from the queue. Its fd is taken with a peek, then the
    /// record consumed with no room for ancillary data, under the pair's
    /// shared lock (another process's pop between the two would make ours
    /// consume its record): out of fds (another thread took the number the
    /// caller found free), EMFILE, and the connection stays queued, where
    /// a plain receive would have lost it (decision 38); EAGAIN if the lock
    /// could not be had in time. Without the lock (it could not be
    /// mapped), a plain receive, the caller having checked for room.
    pub(crate) fn pop(&self) -> Result<Option<(Record, OwnedFd)>, Errno> {
        let slot = self.pair.read();
        let Some(pair) = slot.as_ref() else {
            return Ok(None);
        };
        loop {
            let mut b = [0u8; Record::LEN];
            let got = match &pair.popping {
                Some(lock) => match lock.with(|| {
                    let (n, fd) = handshake::peek_with_fd(pair.rx.as_fd(), &mut b)?;
                    let mut sink = [0u8; Record::LEN];
                    rustix::net::recv(
                        pair.rx.as_fd(),
                        &mut sink,
                        rustix::net::RecvFlags::DONTWAIT,
                    )?;
                    Ok((n, fd))
                }) {
                    Some(r) => r,
                    // Another thread or process is popping, or stopped
                    // while it was: EAGAIN (the caller watches the queue,
                    // so it is looked at again); connections parked
                    // meanwhile are held in memory (`reachable`).
                    None => return Err(Errno::AGAIN),
                },
                None => handshake::recv_with_fd(pair.rx.as_fd(), &mut b),
            };
            let (n, fd) = match got {
                Ok(got) => got,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(None),
                Err(e @ (Errno::MFILE | Errno::NFILE)) if pair.popping.is_some() => return Err(e),
                Err(e) => {
                    log!(debug, "parking queue: a parked connection lost ({e})");
                    return Ok(None);
                }
            };
            self.uncount();
            match (n == Record::LEN, Record::decode(&b), fd) {
                (true, Some(rec), Some(fd)) => return Ok(Some((rec, fd))),
                _ => continue, // not ours to trust: dropped (closing its fd)
            }
        }
    }
}
