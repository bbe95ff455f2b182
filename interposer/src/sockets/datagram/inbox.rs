//! The Inbox (udp-draft §4): an epoll instance that is the application's
//! fd number, holding the socket's rendezvous listener, every link and an
//! eventfd. Readiness is exact because the receive path keeps it so:
//!
//! - datagrams queued (or an error pending): the eventfd is kept written;
//! - nothing queued: the eventfd is read empty, every link's frames are
//!   taken, and the doorbell flag is up in every target set, so the next
//!   sender that publishes takes it and writes a BELL on its link.
//!
//! That is the *eager* discipline, which a socket takes on once poll,
//! select or epoll_ctl meets it (`make_eager`). Until then it is *lazy*
//! (udp-draft §4): a blocking receive spins on the queue, and raises the
//! doorbell flag only to sleep, so a sender rings (a system call) only for
//! a receiver that sleeps.
//!
//! So poll/select/epoll on the application's fd see readable exactly when
//! a receive would find something (or a new sender or a hang-up waits to
//! be handled: a receive then takes it and may find nothing, which
//! select(2) allows for UDP), and a blocking receive sleeps in the kernel
//! (poll on the same instance) until a BELL, a new link or the eventfd.
#![forbid(unsafe_code)]

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use rustix::event::epoll;
use rustix::io::Errno;
use shmnet_ring::dgram::Received;

use super::deliver::{queued, rings};
use super::kernel::Shell;
use super::links::{self, Link, Set, Slow, Verdict};
use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::Mutex;
use crate::transport::link;

/// epoll data of the instance's members; links count up from `FIRST_LINK`.
const LISTENER: u64 = 0;
const WAKE: u64 = 1;
const FIRST_LINK: u64 = 2;
/// Words of `Inbox::epoch`.
const EPOCH: usize = 0;
const INHERITED: usize = 1;

pub(crate) struct Inbox {
    /// The instance behind the application's fd number and the
    /// application's kernel UDP socket, which answers options and, once
    /// it holds a port, carries what no emulated socket is there for,
    /// both ways (`kernel.rs`).
    shell: Arc<Shell>,
    /// Holds the name `shmnet.5/udp/<local>` (the port reservation).
    listener: InternalFd,
    wake: InternalFd,
    pub(super) local: SocketAddr,
    /// A pending error (ECONNREFUSED), reported once, as SO_ERROR is.
    error: AtomicI32,
    /// Poll, select or epoll_ctl met it: readiness kept exact always.
    eager: AtomicBool,
    /// A recvmsg asked for cmsgs: a datagram taken looks up the address
    /// its sender used (`Taken::to`); the others skip it (decision 62).
    pub(super) dests: AtomicBool,
    /// shutdown(SHUT_RD): a receive that finds nothing returns 0 bytes,
    /// and the fd stays readable.
    shut: AtomicBool,
    /// Registered edge-triggered in an epoll set: the doorbell flag stays
    /// up also while datagrams are queued, so every arrival after a
    /// receive (or an epoll_wait that reported it) rings: an edge.
    edge: AtomicBool,
    /// Inherited across fork: this process must not consume (the rings
    /// have one consumer; udp-draft stage 4 shares them) while `owner`
    /// lives (`take_over`).
    forked: AtomicBool,
    /// A memfd the receiving process holds a POSIX lock on (made the
    /// Inbox, or took it over): the kernel drops the lock when that
    /// process exits, execs or closes the socket, and never hands it to
    /// a forked child, which so learns when it may receive.
    owner: InternalFd,
    /// The receive epoch (`Locked`) and whether a child was forked
    /// (`INHERITED`), shared with forked children.
    epoch: crate::platform::shared_file::ForkShared,
    state: Mutex<State>,
}

pub(super) struct State {
    pub(super) sets: Vec<Set>,
    pub(super) links: Vec<Link>,
    pub(super) slow: Slow,
    /// Where links' frames are read (`link::MAX_FRAME` bytes, made at the
    /// first read).
    pub(super) scratch: Vec<u8>,
    /// The senders' doorbell count (all sets) when links were last read.
    pub(super) rings_seen: u32,
    pub(super) next_token: u64,
    pub(super) woken: bool,
    pub(super) limit: u32,
    /// Out of fds (EMFILE) at an accept: the listener is out of the
    /// instance (it would keep the fd readable, and a blocking receive
    /// spinning), and accepts are tried at each look instead, until one
    /// succeeds.
    pub(super) parked: bool,
    /// Arrivals when epoll last reported the socket edge-triggered
    /// (`edge_news`).
    pub(super) edge_seen: Option<(u32, u64)>,
    /// The receive epoch when this process last unlocked the state
    /// (`Locked`).
    pub(super) epoch_seen: u64,
    /// A sender registered since the kernel socket was last found empty:
    /// what it sent through the kernel before (a kernel route, until it
    /// found our name) may be queued there, and is received first
    /// (review udploss16, late.py: its datagrams came out of order).
    pub(super) kernel_first: bool,
    /// Connected, with an unconnected socket of this process sharing its
    /// name (`Inbox::set_deaf`): new links are left to that one.
    pub(super) deaf: bool,
}

/// The Inbox's state, locked. In the receiving process each lock and
/// unlock bumps the receive epoch, a word a forked child shares (odd
/// while held), and the state keeps the value of its last unlock: a
/// child whose copy of the state says the epoch it finds knows the
/// parent has not touched the state since the fork, so the copy is
/// exact (`take_over`).
pub(super) struct Locked<'a> {
    st: crate::platform::lock::MutexGuard<'a, State>,
    epoch: Option<&'a std::sync::atomic::AtomicU64>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.st
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.st
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.epoch {
            self.st.epoch_seen = e.fetch_add(1, Ordering::AcqRel) + 1;
        }
    }
}

/// A datagram taken: how long it was, how much was copied, from whom
/// (None: no datagram, the end a shutdown(SHUT_RD) gives).
pub(crate) struct Taken {
    pub got: Received,
    pub from: Option<SocketAddr>,
}

impl Inbox {
    /// The Inbox of `shell`'s socket bound to `local`, holding
    /// `listener`: its members join the shell's instance.
    pub(crate) fn new(
        shell: Arc<Shell>,
        listener: InternalFd,
        local: SocketAddr,
        limit: u32,
    ) -> Result<Inbox, Errno> {
        let ep = &shell.epoll;
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        let data = |d| epoll::EventData::new_u64(d);
        epoll::add(ep, &wake, data(WAKE), epoll::EventFlags::IN)?;
        if let Err(e) = epoll::add(ep, &listener, data(LISTENER), epoll::EventFlags::IN) {
            let _ = epoll::delete(ep, &wake);
            return Err(e);
        }
        // Locked once it has its final number: closing any fd of the file
        // (as moving it up to the internal range does) drops the lock.
        let owner = InternalFd::new(rustix::fs::memfd_create(
            "shmnet-udp-receiver",
            rustix::fs::MemfdFlags::CLOEXEC,
        )?);
        rustix::fs::fcntl_lock(&owner, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(Inbox {
            shell,
            listener,
            wake: InternalFd::new(wake),
            local,
            error: AtomicI32::new(0),
            eager: AtomicBool::new(false),
            dests: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            edge: AtomicBool::new(false),
            forked: AtomicBool::new(false),
            owner,
            epoch: crate::platform::shared_file::ForkShared::new()?,
            state: Mutex::new(State {
                sets: Vec::new(),
                links: Vec::new(),
                slow: Slow::default(),
                scratch: Vec::new(),
                rings_seen: 0,
                next_token: FIRST_LINK,
                woken: false,
                limit,
                parked: false,
                edge_seen: None,
                epoch_seen: 0,
                kernel_first: false,
                deaf: false,
            }),
        })
    }

    /// The state, locked (`Locked`).
    fn lock(&self) -> Locked<'_> {
        let st = self.state.lock();
        let epoch = (!self.forked.load(Ordering::Relaxed)).then(|| self.epoch.word(EPOCH));
        if let Some(e) = epoch {
            e.fetch_add(1, Ordering::AcqRel);
        }
        Locked { st, epoch }
    }

    /// The state, locked, from fork's prepare handler: given up after
    /// 10 ms (a fork from a signal handler that interrupted a holder of
    /// the lock must not wait for ever); the socket then stays as it was.
    fn lock_for_fork(&self) -> Option<Locked<'_>> {
        let start = std::time::Instant::now();
        loop {
            if let Some(st) = self.state.try_lock() {
                let epoch = (!self.forked.load(Ordering::Relaxed)).then(|| self.epoch.word(EPOCH));
                if let Some(e) = epoch {
                    e.fetch_add(1, Ordering::AcqRel);
                }
                return Some(Locked { st, epoch });
            }
            if start.elapsed() > std::time::Duration::from_millis(10) {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// The rendezvous listener (a REG's proof of our address).
    pub(crate) fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Whether the kernel socket holds a port.
    fn kernel_bound(&self) -> bool {
        self.shell.bound()
    }

    /// Whether the kernel socket has a datagram (or error) queued.
    fn kernel_ready(&self) -> bool {
        self.shell.ready()
    }

    /// In a forked child: locks reset, and no receiving here.
    pub(crate) fn after_fork_child(&self) {
        self.state.reset_after_fork();
        self.forked.store(true, Ordering::Relaxed);
        self.epoch.word(INHERITED).store(1, Ordering::Relaxed);
    }

    /// In a forked child: whether it may receive now. It may once the
    /// receiving process is gone or closed the socket (a daemon's parent
    /// exited, review H5; `owner`):
    /// it then takes the socket over, starting afresh: the segments it
    /// inherited are closed (their senders register again, with it; what
    /// was queued in them is lost, since the parent may have consumed
    /// part of it after the fork and this process's copy of their
    /// receive state is stale), and so are the inherited links.
    fn take_over(&self) -> bool {
        if !self.forked.load(Ordering::Relaxed) {
            return true;
        }
        let mut st = self.state.lock(); // not ours yet: no epoch
        if !self.forked.load(Ordering::Relaxed) {
            return true; // another thread took it
        }
        let lock = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        if rustix::fs::fcntl_lock(&self.owner, lock).is_err() {
            return false; // the receiving process still has the socket
        }
        let exact = self.epoch.word(EPOCH).load(Ordering::Acquire) == st.epoch_seen;
        if !exact {
            self.start_afresh(&mut st);
        }
        self.forked.store(false, Ordering::Relaxed);
        log!(
            debug,
            "UDP {}: taken over from the process that received ({})",
            self.local,
            if exact {
                "its state as at the fork"
            } else {
                "afresh"
            }
        );
        self.serve_locked(&mut st);
        self.settle(&mut st);
        true
    }

    /// A forked child taking over a socket its parent received on after
    /// the fork: the segments it inherited are closed (their senders
    /// register again, with it; what was queued in them is lost), and so
    /// are the inherited links.
    fn start_afresh(&self, st: &mut State) {
        for s in &st.sets {
            s.rx.close();
        }
        for l in st.links.drain(..) {
            let _ = epoll::delete(&self.shell.epoll, &l.fd);
        }
        st.sets.clear();
        st.slow = Slow::default();
        st.rings_seen = 0;
        st.edge_seen = None;
        st.woken = true; // the eventfd's count, if any, is read at settle
        if st.parked {
            let ev = epoll::EventData::new_u64(LISTENER);
            st.parked =
                epoll::add(&self.shell.epoll, &self.listener, ev, epoll::EventFlags::IN).is_err();
        }
    }

    /// The socket goes back to the kernel (`Datagram::to_kernel`,
    /// decision 49): new links and frames are taken, the name is let go
    /// (a fresh socket takes the listener's fd number: senders dialling it
    /// are refused and take the kernel route), every link and segment
    /// closes (senders on them find the name gone at their next send),
    /// and what was queued goes to the leftovers (made by the caller),
    /// oldest first. Its members leave the instance. The number of
    /// datagrams moved.
    pub(crate) fn retire(&self) -> Option<usize> {
        self.retire_with(true)
    }

    /// As `retire`, before an exec (decision 56): leftovers would not
    /// reach the next image (close-on-exec, and it would not know them),
    /// so nothing is drained: the segments are marked `CLOSED_TO_KERNEL`,
    /// and each sender sends what it left in its ring through the kernel,
    /// where the next image receives it. The links queued on the listener
    /// are left to hang up at the exec (their senders send what they put
    /// on them through the kernel too).
    pub(crate) fn retire_for_exec(&self) -> Option<usize> {
        self.retire_with(false)
    }

    fn retire_with(&self, drain: bool) -> Option<usize> {
        let mut st = self.lock_for_fork()?;
        // Shut first: the listener's file outlives our fd in a child
        // forked without going back to the kernel (a fork from a signal
        // handler that interrupted the library), which keeps the name
        // bound, accepts nothing, and hung up its dialled links when it
        // exited (sigfork.sh, decision 56). Shut, it refuses every dial
        // (ECONNREFUSED: the sender's kernel route) in every process,
        // while the links it queued before are still accepted below.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if drain {
            self.serve_locked(&mut st);
        }
        let ep = &self.shell.epoll;
        let _ = epoll::delete(ep, &self.listener);
        if let Ok(fresh) = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        ) {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.listener.as_fd());
            let _ = crate::platform::sys::dup_onto(fresh.as_fd(), fd, true);
        }
        if !drain {
            // What links' frames put in this process's memory: to the
            // leftovers, which a failed exec reads first (review sigfork16,
            // failexec.py: it was lost); a successful exec loses it, as
            // before decision 56. (The senders had REG_OK before those
            // frames: they do not send them again.)
            if !st.slow.queue.is_empty() && self.shell.leftover_writer() {
                while let Some((from, d, _)) = st.slow.queue.pop_front() {
                    self.shell.put_leftover(Some(from), &d);
                }
                st.slow.bytes = 0;
            }
            for s in &st.sets {
                s.rx.close_to_kernel();
            }
            for l in st.links.drain(..) {
                let _ = epoll::delete(ep, &l.fd);
            }
            let _ = epoll::delete(ep, &self.wake);
            self.unsignal(&mut st);
            return Some(0);
        }
        // Frames a sender put on its link before it saw the name go.
        let all: Vec<usize> = (0..st.links.len()).rev().collect();
        for i in all {
            self.read_link(&mut st, i);
        }
        // Closed to new datagrams, then drained, then final: a sender that
        // published after the drain's look sees the close after its
        // publish and sends the datagram again, which nobody took
        // (`Sender::closing`; it had been lost, review udpshare16,
        // sigfork.sh: 2 and 11 of 5,000).
        for s in &mut st.sets {
            s.rx.close_to_drain();
        }
        let moved = self.drain_into(&mut st);
        for s in &st.sets {
            s.rx.close();
        }
        for l in st.links.drain(..) {
            let _ = epoll::delete(ep, &l.fd);
        }
        let _ = epoll::delete(ep, &self.wake);
        self.unsignal(&mut st);
        Some(moved)
    }

    /// Moves every queued datagram to the leftovers (made by the
    /// caller), oldest first; how many.
    fn drain_into(&self, st: &mut State) -> usize {
        let mut buf = vec![0u8; 65_536];
        let mut moved = 0;
        while let Some(t) = self.take(st, &mut [IoSliceMut::new(&mut buf)], false, None) {
            if t.from.is_none() {
                break; // a shutdown's end
            }
            self.shell.put_leftover(t.from, &buf[..t.got.copied]);
            moved += 1;
        }
        moved
    }

    /// Whether this process receives through the Inbox (not a forked
    /// child waiting for the receiving one to let go).
    pub(crate) fn queued_here(&self) -> bool {
        !self.forked.load(Ordering::Relaxed)
    }

    /// Before a fork (the emulated mode, `Datagram::share_queued`): new
    /// links and frames taken, then every queued datagram goes to the
    /// leftovers (the pair made only then).
    pub(crate) fn move_queued(&self) -> usize {
        {
            // Nothing queued and nothing come: the state is left as it
            // is, its receive epoch too, so that a child forked before
            // still knows its copy exact (`take_over`: pre-forked workers).
            // (Leftovers already there are not news.)
            // (Busy: looked at under `lock_for_fork` below.)
            if let Some(mut st) = self.state.try_lock() {
                let mut events = Vec::with_capacity(8);
                let zero = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                let idle = epoll::wait(
                    &self.shell.epoll,
                    rustix::buffer::spare_capacity(&mut events),
                    Some(&zero),
                )
                .is_ok_and(|_| {
                    events
                        .iter()
                        .all(|e| e.data.u64() == super::kernel::LEFTOVER)
                });
                if idle && !queued(&mut st) {
                    return 0;
                }
            }
        }
        let Some(mut st) = self.lock_for_fork() else {
            return 0;
        };
        self.serve_locked(&mut st);
        let moved = if queued(&mut st) && self.shell.leftover_writer() {
            self.drain_into(&mut st)
        } else {
            0
        };
        self.settle(&mut st);
        moved
    }

    /// Poll, select or epoll met the socket: from now on its readiness
    /// is kept exact (see the module docs), starting now.
    pub(crate) fn make_eager(&self) {
        if self.eager.swap(true, Ordering::Relaxed) || !self.take_over() {
            return;
        }
        let mut st = self.lock();
        self.serve_locked(&mut st);
        self.settle(&mut st);
    }

    /// Whether a datagram is queued: the spin of a blocking receive, no
    /// system call unless `kernel` (the kernel socket is asked too, one
    /// poll, when it holds a port).
    pub(crate) fn quick_ready(&self, kernel: bool) -> bool {
        let mut st = self.lock();
        self.error.load(Ordering::Relaxed) != 0
            || self.shut.load(Ordering::Relaxed)
            || queued(&mut st)
            || self.shell.leftover_ready()
            || (kernel && self.kernel_ready())
    }

    /// A wait (poll, select, epoll_wait) begins to spin on the queue: the
    /// doorbell flag goes down, as a lazy receiver's is while awake, so a
    /// sender publishes without a system call (decision 42). Not for an
    /// edge-triggered socket (every arrival must ring), a forked child, or
    /// one with something queued (the eventfd already says so). True when
    /// it went down; `raise_after_spin` must follow.
    pub(crate) fn lower_for_spin(&self) -> bool {
        if self.edge.load(Ordering::Relaxed) || self.forked.load(Ordering::Relaxed) {
            return false;
        }
        let mut st = self.lock();
        if self.error.load(Ordering::Relaxed) != 0
            || self.shut.load(Ordering::Relaxed)
            || queued(&mut st)
        {
            return false;
        }
        for s in &st.sets {
            s.rx.disarm();
        }
        true
    }

    /// The spin ended: readiness made exact again (`settle`: the flag up
    /// with a look at every head after it, SYNC POINT (d); the eventfd
    /// written if a datagram came meanwhile), so a sleep in the kernel,
    /// this thread's or another's, misses nothing. True when something is
    /// queued.
    pub(crate) fn raise_after_spin(&self) -> bool {
        let mut st = self.lock();
        self.settle(&mut st)
    }

    /// Whether a receive would find something: links served first (a new
    /// sender's first datagrams come on its link), readiness settled.
    /// (In a forked child: true, so that a receive is tried and says
    /// EOPNOTSUPP, rather than a wait that never ends.)
    pub(crate) fn readable(&self) -> bool {
        if !self.take_over() {
            return true;
        }
        let mut st = self.lock();
        if self.error.load(Ordering::Relaxed) != 0
            || self.shut.load(Ordering::Relaxed)
            || queued(&mut st)
            || self.shell.leftover_ready()
        {
            return true;
        }
        self.serve_locked(&mut st);
        self.settle(&mut st) || self.kernel_ready()
    }

    /// Before a blocking receive sleeps: links served, readiness settled
    /// and the doorbell flag up. True when something is there after all.
    pub(crate) fn prepare_sleep(&self) -> bool {
        let mut st = self.lock();
        // Links read now: the doorbells rung so far are taken with them.
        st.rings_seen = rings(&st);
        self.serve_locked(&mut st);
        self.settle(&mut st)
    }

    /// After a blocking receive woke: a lazy socket takes its flag down
    /// (senders ring only for a sleeper).
    pub(crate) fn after_wake(&self) {
        if !self.eager.load(Ordering::Relaxed) {
            let st = self.lock();
            for s in &st.sets {
                s.rx.disarm();
            }
        }
    }

    /// shutdown(SHUT_RD): receives stop waiting (a sleeper wakes) and the
    /// fd stays readable.
    pub(crate) fn shut_read(&self) {
        self.shut.store(true, Ordering::Relaxed);
        let mut st = self.lock();
        self.signal(&mut st);
    }

    /// The socket joined an epoll set edge-triggered: from now on every
    /// arrival after a look rings (see `edge`), starting now.
    pub(crate) fn set_edge_triggered(&self) {
        if self.edge.swap(true, Ordering::Relaxed) || self.forked.load(Ordering::Relaxed) {
            return;
        }
        self.rearm_edge();
    }

    /// An epoll_wait reported the socket (or is about to wait on it): an
    /// arrival from now on makes a new edge, queued datagrams or not.
    pub(crate) fn rearm_edge(&self) {
        if !self.edge.load(Ordering::Relaxed) || self.forked.load(Ordering::Relaxed) {
            return;
        }
        let mut st = self.lock();
        for s in &mut st.sets {
            s.rx.arm();
        }
    }

    /// Whether something arrived since epoll last reported this
    /// edge-triggered socket (a sender's ring, a datagram on a link):
    /// an edge the kernel shows that only the Inbox's own handling made
    /// (its eventfd written when it served a link) is not one.
    pub(crate) fn edge_news(&self) -> bool {
        let mut st = self.lock();
        let now = (rings(&st), st.slow.arrived);
        st.edge_seen.replace(now) != Some(now) || self.kernel_ready()
    }

    /// Takes the pending error (SO_ERROR, or the next call).
    pub(crate) fn take_error(&self) -> Option<Errno> {
        let e = self.error.swap(0, Ordering::Relaxed);
        (e != 0).then(|| Errno::from_raw_os_error(e))
    }

    /// The receive limit (SO_RCVBUF as the kernel stores it), for every set.
    pub(crate) fn set_limit(&self, bytes: u32) {
        let mut st = self.lock();
        st.limit = bytes;
        for s in &mut st.sets {
            s.rx.set_limit(bytes);
        }
    }

    /// Takes new links and the frames of ready ones, without waiting.
    fn serve_locked(&self, st: &mut State) {
        let mut events = Vec::with_capacity(64);
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if epoll::wait(
            &self.shell.epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&zero),
        )
        .is_err()
        {
            return;
        }
        let all = events.len() == events.capacity();
        let mut tokens: Vec<u64> = events.iter().map(|e| e.data.u64()).collect();
        if all {
            tokens = st.links.iter().map(|l| l.token).collect();
            tokens.push(LISTENER);
        }
        if (tokens.contains(&LISTENER) || st.parked) && !st.deaf {
            // New links are read at once: a REG usually comes with them.
            let known = st.links.len();
            self.accept_links(st);
            tokens.extend(st.links[known..].iter().map(|l| l.token));
        }
        for token in tokens {
            if let Some(i) = st.links.iter().position(|l| l.token == token) {
                self.read_link(st, i);
            }
        }
    }

    /// Takes link `i`'s frames; closes it (removed from `st.links`) when
    /// it hung up or misbehaved.
    pub(super) fn read_link(&self, st: &mut State, i: usize) {
        let State {
            sets,
            links,
            slow,
            limit,
            scratch,
            kernel_first,
            ..
        } = st;
        if scratch.len() < link::MAX_FRAME {
            scratch.resize(link::MAX_FRAME, 0);
        }
        let l = &mut links[i];
        let registered = l.grant.is_some();
        let keep = loop {
            let keep = link::read(l.fd.as_fd(), &mut l.inbound, scratch).is_ok()
                && matches!(
                    links::take_frames(l, sets, slow, *limit, self.local),
                    Verdict::Keep
                );
            if !keep || !l.inbound.more {
                break keep;
            }
        };
        if !registered && l.grant.is_some() {
            *kernel_first = true;
        }
        if !keep {
            let _ = epoll::delete(&self.shell.epoll, &l.fd);
            links::forget(l, sets);
            links.swap_remove(i);
        }
    }

    fn accept_links(&self, st: &mut State) {
        if st.deaf {
            return;
        }
        loop {
            let flags = rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK;
            let conn = match rustix::net::accept_with(&self.listener, flags) {
                Ok(c) => c,
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    if !st.parked {
                        log!(debug, "datagram links to {}: out of fds", self.local);
                        st.parked = epoll::delete(&self.shell.epoll, &self.listener).is_ok();
                    }
                    return;
                }
                Err(_) => return,
            };
            if st.parked {
                let ev = epoll::EventData::new_u64(LISTENER);
                st.parked =
                    epoll::add(&self.shell.epoll, &self.listener, ev, epoll::EventFlags::IN)
                        .is_err();
            }
            let config = crate::platform::config::get();
            let uid = match crate::platform::sys::peer_cred(conn.as_fd()) {
                Some((_, uid, _)) => uid,
                None => continue,
            };
            let me = rustix::process::geteuid().as_raw();
            // (Or a user this process chose to send to: its replies.)
            let admitted =
                config.is_some_and(|c| c.allow.admits_uid(me, uid)) || super::routes::chosen(uid);
            if !admitted {
                log!(
                    debug,
                    "datagram link to {} from uid {uid}: refused",
                    self.local
                );
                // Said, then closed: in the default mode the sender
                // sends through the kernel instead, as it would have.
                let no = shmnet_ring::dgram::frame::Frame::RegNo {
                    why: Errno::ACCESS.raw_os_error() as u32,
                };
                let _ = link::send(conn.as_fd(), &no, None);
                continue;
            }
            if st.links.len() >= links::MAX_LINKS {
                // Alive but full: the sender drops (and asks again later)
                // rather than take this for nobody receiving.
                let no = shmnet_ring::dgram::frame::Frame::RegNo {
                    why: Errno::NOBUFS.raw_os_error() as u32,
                };
                let _ = link::send(conn.as_fd(), &no, None);
                log!(
                    debug,
                    "datagram link to {}: {} links, full",
                    self.local,
                    links::MAX_LINKS
                );
                continue;
            }
            let token = st.next_token;
            st.next_token += 1;
            let fd = InternalFd::new(conn);
            let ev = epoll::EventData::new_u64(token);
            if epoll::add(&self.shell.epoll, &fd, ev, epoll::EventFlags::IN).is_err() {
                continue;
            }
            st.links.push(Link {
                token,
                fd,
                uid,
                grant: None,
                source: None,
                dest: None,
                settled: false,
                inbound: Default::default(),
            });
        }
    }

    /// Stops (or starts again) taking new links: a connected socket
    /// whose name an unconnected socket of this process shares leaves
    /// new senders to that one, as the kernel gives a connected socket
    /// its peer's datagrams only and the others to the unconnected one
    /// (iperf3 -u's "UDP accept"; taken, they were dropped here). Its
    /// peer's link is taken already (its datagram is what it connected
    /// to). The listener leaves the instance, or it would say readable.
    pub(crate) fn set_deaf(&self, deaf: bool) {
        let mut st = self.lock();
        if st.deaf == deaf {
            return;
        }
        st.deaf = deaf;
        if st.parked {
            return; // (out of the instance already; back at an accept)
        }
        let ev = epoll::EventData::new_u64(LISTENER);
        let ep = &self.shell.epoll;
        let r = if deaf {
            epoll::delete(ep, &self.listener)
        } else {
            epoll::add(ep, &self.listener, ev, epoll::EventFlags::IN)
        };
        if let Err(e) = r {
            log!(debug, "datagram links to {}: deaf {deaf}: {e}", self.local);
        }
        // Readiness as a receive would find it now.
        self.settle(&mut st);
    }

    fn signal(&self, st: &mut State) {
        if !st.woken {
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
            st.woken = true;
        }
    }

    fn unsignal(&self, st: &mut State) {
        if st.woken {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&self.wake, &mut b);
            st.woken = false;
        }
    }

    /// Makes the fd's readiness say what a receive would find (see the
    /// module docs); true when something is queued.
    fn settle(&self, st: &mut State) -> bool {
        if !queued(st) {
            // A sender rang since the links were read: take its BELL now,
            // or it would keep the fd readable with nothing queued.
            let rings = rings(st);
            if rings != st.rings_seen {
                st.rings_seen = rings;
                self.serve_locked(st);
            }
        }
        if self.error.load(Ordering::Relaxed) != 0 || queued(st) {
            self.signal(st);
            if self.edge.load(Ordering::Relaxed) {
                for s in &mut st.sets {
                    s.rx.arm();
                }
            }
            return true;
        }
        if self.shut.load(Ordering::Relaxed) {
            self.signal(st);
            return true;
        }
        let mut came = false;
        for s in &mut st.sets {
            came |= s.rx.arm();
        }
        if came {
            for s in &st.sets {
                s.rx.disarm();
            }
            self.signal(st);
        } else {
            self.unsignal(st);
        }
        came
    }

    /// Receives one datagram without waiting: from `only` if given
    /// (a connected socket drops others' datagrams, as the kernel does).
    /// EAGAIN when none is queued. `serve`: read the links first if the
    /// queue is empty (a blocking receive leaves that to `prepare_sleep`).
    /// `kernel`: then ask the kernel socket (when it holds a port).
    pub(crate) fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        only: Option<SocketAddr>,
        serve: bool,
        kernel: bool,
    ) -> Result<Taken, Errno> {
        // What a fork shared (decision 49): any holder takes it, first.
        if let Some((got, from)) = self.shell.take_leftover(bufs, peek, only) {
            return Ok(Taken { got, from });
        }
        if !self.take_over() {
            return Err(Errno::OPNOTSUPP);
        }
        let mut st = self.lock();
        if let Some(e) = self.take_error() {
            self.settle(&mut st);
            return Err(e);
        }
        let kernel_first = self.shell.peeked.load(Ordering::Relaxed) && self.kernel_bound();
        let mut got = None;
        let mut kernel_tried = false;
        if kernel_first {
            kernel_tried = true;
            match self.take_kernel(bufs, peek, only) {
                Ok(g) => got = g,
                Err(e) => {
                    self.shell.peeked.store(false, Ordering::Relaxed);
                    if self.eager.load(Ordering::Relaxed) {
                        self.settle(&mut st);
                    }
                    return Err(e);
                }
            }
            if got.is_none() || !peek {
                self.shell.peeked.store(false, Ordering::Relaxed);
            }
        }
        if got.is_none() {
            got = self.take_after_kernel(&mut st, bufs, peek, only, &mut kernel_tried)?;
        }
        if got.is_none() && serve {
            self.serve_locked(&mut st);
            got = self.take_after_kernel(&mut st, bufs, peek, only, &mut kernel_tried)?;
        }
        if got.is_none() && kernel && self.kernel_bound() && !kernel_tried {
            match self.take_kernel(bufs, peek, only) {
                Ok(g) => got = g,
                Err(e) => {
                    if self.eager.load(Ordering::Relaxed) {
                        self.settle(&mut st);
                    }
                    return Err(e);
                }
            }
            if peek && got.is_some() {
                self.shell.peeked.store(true, Ordering::Relaxed);
            }
        }
        if got.is_none() && self.shut.load(Ordering::Relaxed) {
            let end = Received {
                len: 0,
                copied: 0,
                slot: u32::MAX,
            };
            got = Some(Taken {
                got: end,
                from: None,
            });
        }
        if self.eager.load(Ordering::Relaxed) {
            self.settle(&mut st);
        }
        got.ok_or(Errno::AGAIN)
    }

    /// The next queued datagram, but first the kernel socket's while a
    /// sender registered since it was last found empty (`kernel_first`):
    /// a sender's datagrams through the kernel before its REG come before
    /// those it puts in shared memory after, as one kernel socket keeps
    /// them (review udploss16, late.py and restart3.py: 100 - 170
    /// inversions at the switch from a kernel route to shared memory).
    fn take_after_kernel(
        &self,
        st: &mut Locked<'_>,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        only: Option<SocketAddr>,
        kernel_tried: &mut bool,
    ) -> Result<Option<Taken>, Errno> {
        if st.kernel_first {
            if !self.kernel_bound() {
                st.kernel_first = false;
            } else {
                *kernel_tried = true;
                match self.take_kernel(bufs, peek, only) {
                    Ok(Some(t)) => return Ok(Some(t)),
                    Ok(None) => st.kernel_first = false,
                    Err(e) => {
                        st.kernel_first = false;
                        if self.eager.load(Ordering::Relaxed) {
                            self.settle(st);
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(self.take(st, bufs, peek, only))
    }

    /// A datagram the kernel socket received (`Shell::take`).
    fn take_kernel(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        only: Option<SocketAddr>,
    ) -> Result<Option<Taken>, Errno> {
        Ok(self
            .shell
            .take(bufs, peek, only)?
            .map(|(got, from)| Taken { got, from }))
    }

    /// The size of the next datagram (FIONREAD); 0 when none.
    pub(crate) fn next_len(&self) -> usize {
        let mut st = self.lock();
        self.serve_locked(&mut st);
        let shared = self.shell.leftover().and_then(super::leftover::next_len);
        let n = shared.or(match st.slow.queue.front() {
            Some((_, d, _)) => Some(d.len()),
            None => st.sets.iter_mut().find_map(|s| s.rx.next_len().ok()),
        });
        self.settle(&mut st);
        n.or_else(|| {
            self.kernel_bound()
                .then(|| super::kernel::next_len(self.shell.kernel()))
                .flatten()
        })
        .unwrap_or(0)
    }

    /// At exit, as at the last close (`Drop`): the senders stop at once
    /// and ask the name again (a receiver restarted on the port holds it
    /// soon), instead of filling this process's segments until their
    /// next look at the link. Not if a receive holds the state (an exit
    /// from a signal handler).
    pub(crate) fn at_exit(&self) {
        if self.receives_alone() {
            if let Some(st) = self.state.try_lock() {
                for s in &st.sets {
                    s.rx.close();
                }
            }
        }
    }

    /// Whether no other process may receive through these segments: not
    /// a forked child, nor a process that forked one (which may take the
    /// socket over, `take_over`: the segments stay open for it, and the
    /// epoch as it was).
    fn receives_alone(&self) -> bool {
        !self.forked.load(Ordering::Relaxed)
            && self.epoch.word(INHERITED).load(Ordering::Relaxed) == 0
    }

    /// Sleeps until the instance is readable, at most `ms` (-1: no
    /// limit): Ok(false) on timeout, EINTR for a signal or a cancel
    /// request (`sleep_outside`; the lock is let go before it).
    /// (Out of fds, the listener is looked at every 50 ms instead.)
    pub(crate) fn wait(&self, ms: i32) -> Result<bool, Errno> {
        let ms = if self.lock().parked && !(0..=50).contains(&ms) {
            50
        } else {
            ms
        };
        super::sleep_outside(|| self.shell.wait(ms))
    }
}

impl Drop for Inbox {
    /// The last reference in this process: the senders stop at once
    /// (`closed`, which they load at every send) rather than at their
    /// next look at the link. Not in a forked child (the parent still
    /// receives through the same segments), nor in a parent that forked
    /// (a child may take them over).
    fn drop(&mut self) {
        if self.receives_alone() {
            for s in &self.state.lock().sets {
                s.rx.close();
            }
        }
    }
}
