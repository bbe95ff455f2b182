//! What poll and select share: the connections in their set, counted as
//! waiters while the call lasts (`Waiting`), and the wait set that looks at
//! their rings before and after the kernel's answer (`Rings`, over the
//! caller's pollfds or fd_sets as a `KernelSet`).
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::Arc;

use crate::platform::sys::SigMask;

use super::datagram_spin::DatagramSpin;

use crate::platform::real::Action;
use crate::sockets::conn::Connection;
use crate::sockets::registry;
use crate::sockets::socket::Socket;
use crate::sockets::wait::{Limit, WaitSet};

/// The connections a wait covers, counted as waiters on them while it
/// lasts (see `Connection::add_waiter`).
pub(super) struct Waiting {
    conns: Vec<(usize, Arc<Socket>)>,
    /// A reader of ours sleeps taking doorbell bytes on one of them.
    sliced: bool,
    /// Positions of epoll fds of ours whose members hold data the kernel
    /// does not know of (`readiness::crowd`): readable.
    sets: Vec<usize>,
    /// Emulated UDP sockets (by position): the kernel's readability of
    /// their fd may stand for a new sender or a hang-up not yet handled,
    /// which a receive would not find (`take_back`).
    datagrams: Vec<(usize, Arc<Socket>)>,
}

impl Waiting {
    /// The connections among `fds` (by position) that a read could wait for.
    pub(super) fn new(fds: impl Iterator<Item = (usize, c_int)>) -> Waiting {
        let mut sets = Vec::new();
        let mut datagrams = Vec::new();
        let conns: Vec<_> = fds
            .filter_map(|(i, fd)| {
                let sock = registry::get(fd);
                // An epoll set of ours waited on from outside its own
                // epoll_wait: its flags must all be up, and data that came
                // while one was down makes it readable.
                if sock.is_none() && crate::sockets::readiness::crowd(fd) {
                    sets.push(i);
                }
                // A datagram socket's Inbox answers the kernel exactly
                // once eager.
                if let Some(d) = sock.as_deref().and_then(Socket::datagram) {
                    d.make_eager();
                    datagrams.extend(sock.clone().map(|s| (i, s)));
                }
                sock.filter(|s| s.connection().is_some()).map(|s| (i, s))
            })
            .collect();
        let mut sliced = false;
        for (_, s) in &conns {
            conn(s).status_waited();
            sliced |= conn(s).add_waiter();
        }
        Waiting {
            conns,
            sliced,
            sets,
            datagrams,
        }
    }

    /// Connections and datagram sockets (whose readiness a look finds).
    pub(super) fn len(&self) -> usize {
        self.conns.len() + self.datagrams.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.sets.is_empty() && self.datagrams.is_empty()
    }

    /// What the datagram socket at `key`, which the kernel reported
    /// readable, is (`Datagram::reported`): whether a receive would find
    /// something (if not, taken back, as a blocking receive would
    /// otherwise wait), and whether it has an error to report (POLLERR).
    /// Not one: readable, no error.
    pub(super) fn datagram_reported(&self, key: usize) -> (bool, bool) {
        self.datagrams
            .iter()
            .find(|(i, _)| *i == key)
            .and_then(|(_, s)| s.datagram())
            .map_or((true, false), |d| d.reported())
    }

    /// Positions of its datagram sockets.
    pub(super) fn datagram_keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.datagrams.iter().map(|(i, _)| *i)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Connection)> {
        self.conns.iter().map(|(i, s)| (*i, conn(s)))
    }

    /// Positions of connections readable now (their flags up otherwise),
    /// and of epoll sets of ours readable though the kernel says not.
    fn readable(&self) -> Vec<usize> {
        self.iter()
            .filter(|(_, c)| c.poll_readable())
            .map(|(i, _)| i)
            .chain(self.sets.iter().copied())
            .collect()
    }

    fn awaits_reply(&self) -> bool {
        self.iter().any(|(_, c)| c.awaits_reply())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        for (_, s) in &self.conns {
            conn(s).remove_waiter();
        }
    }
}

fn conn(s: &Socket) -> &Connection {
    match s {
        Socket::Stream(c) => c,
        _ => unreachable!("Waiting keeps only streams"),
    }
}

/// What poll and select share: fds the kernel fills in, among which are
/// the connections of a `Waiting`.
pub(super) trait KernelSet {
    /// The real call: a zero timeout (None), or until `limit` with the
    /// caller's signal mask. Starts from what the caller asked each time.
    fn real(&mut self, limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int;
    /// Takes back readability the kernel reported for doorbell bytes of
    /// data already read (`Connection::really_readable`); the new count.
    fn filter(&mut self, waiting: &Waiting, n: c_int) -> c_int;
    /// Reports the connection at `key` readable; true if that adds an
    /// entry to the count.
    fn mark_readable(&mut self, key: usize) -> bool;
    /// Whether spin round `round` asks the kernel too.
    fn ask_kernel(&self, _round: u32) -> bool {
        true
    }
}

/// The wait of poll and select: look at the rings (raising flags), spin,
/// then sleep in the kernel, taking back readability of connections whose
/// ring turns out empty and waiting on if nothing else is left.
pub(super) struct Rings<K> {
    set: K,
    waiting: Waiting,
    /// Keys (positions, fds) of connections whose ring has data.
    ready: Vec<usize>,
    /// The spin over its datagram sockets.
    datagrams: DatagramSpin,
}

impl<K: KernelSet> Rings<K> {
    /// `set` with its connections, looked at once.
    pub(super) fn new(set: K, waiting: Waiting) -> Rings<K> {
        let ready = waiting.readable();
        let datagrams =
            DatagramSpin::new(waiting.datagrams.iter().map(|(_, s)| s.clone()).collect());
        Rings {
            set,
            waiting,
            ready,
            datagrams,
        }
    }
}

impl<K: KernelSet> WaitSet for Rings<K> {
    fn found(&self) -> bool {
        !self.ready.is_empty()
    }

    fn look(&mut self) {
        self.ready = self.waiting.readable();
    }

    fn rings_ready(&mut self) -> bool {
        self.ready.extend(
            self.waiting
                .iter()
                .filter(|(_, c)| c.ring_readable())
                .map(|(k, _)| k),
        );
        // A datagram found ends the spin; the kernel reports it after
        // `spin_over` (not `found`: the answer is the kernel's).
        self.datagrams.ready() || !self.ready.is_empty()
    }

    fn worth_spinning(&self, _limit: Limit) -> bool {
        self.waiting.awaits_reply() || self.datagrams.wanted()
    }

    fn spin_over(&mut self) {
        self.datagrams.over();
    }

    fn no_reply_soon(&self) {
        self.waiting.iter().for_each(|(_, c)| c.no_reply_soon());
    }

    fn real(&mut self, limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int {
        self.set.real(limit, mask)
    }

    fn filter(&mut self, n: c_int) -> c_int {
        self.set.filter(&self.waiting, n)
    }

    fn ask_kernel(&self, round: u32) -> bool {
        self.set.ask_kernel(round)
    }

    fn answer(&mut self) -> Action<c_int> {
        let n = self.set.real(None, None);
        if n < 0 {
            return Action::Raw(n);
        }
        let mut n = self.set.filter(&self.waiting, n);
        for &k in &self.ready {
            if self.set.mark_readable(k) {
                n += 1;
            }
        }
        Action::Done(n)
    }

    fn sliced(&self) -> bool {
        self.waiting.sliced
    }

    fn empty_stands(&self) -> bool {
        false
    }
}
