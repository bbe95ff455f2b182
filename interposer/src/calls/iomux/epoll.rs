//! epoll_wait, epoll_pwait and epoll_pwait2 on sets that hold emulated
//! connections (`readiness` knows which): data that came before a
//! connection joined is merged into the kernel's events (`merge`), and a
//! wait spins before it sleeps, as `sockets::wait` explains. (epoll_ctl is
//! `readiness::epoll_ctl`, see `iomux`.)
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::Arc;

use libc::{epoll_event, timespec};

use super::datagram_spin::DatagramSpin;
use crate::platform::real::{waits, Action};
use crate::platform::sys::{EpollOut, SigMask, TimeIn};
use crate::sockets::readiness::{self, Pending};
use crate::sockets::socket::Socket;
use crate::sockets::wait::{sleep_in_kernel, spin_budgeted, wait, Limit, WaitSet};

/// epoll_ctl: a connect in progress that its acceptor answered completes
/// first, so that it is registered as the connection it is (with EPOLLIN
/// read from its ring: `readiness::epoll_ctl`).
pub(crate) fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: crate::platform::sys::EventIn<'_>,
) -> Action<c_int> {
    if op == libc::EPOLL_CTL_ADD {
        super::captured(fd);
    }
    if crate::sockets::connecting::in_progress() {
        let _ = crate::sockets::connecting::get(fd);
    }
    readiness::epoll_ctl(epfd, op, fd, event)
}

pub(crate) fn epoll_wait(epfd: c_int, events: EpollOut<'_>, timeout: c_int) -> Action<c_int> {
    epoll_set(epfd, events, Limit::ms(timeout), None, false)
}

pub(crate) fn epoll_pwait(
    epfd: c_int,
    events: EpollOut<'_>,
    timeout: c_int,
    mask: SigMask<'_>,
) -> Action<c_int> {
    epoll_set(epfd, events, Limit::ms(timeout), Some(mask), false)
}

pub(crate) fn epoll_pwait2(
    epfd: c_int,
    events: EpollOut<'_>,
    timeout: TimeIn<'_, timespec>,
    mask: SigMask<'_>,
) -> Action<c_int> {
    Limit::timespec(timeout.get()).map_or(Action::Pass, |limit| {
        epoll_set(epfd, events, limit, Some(mask), true)
    })
}

fn real_epoll(
    epfd: c_int,
    out: &mut [epoll_event],
    limit: Option<Limit>,
    mask: Option<SigMask<'_>>,
    pwait2: bool,
) -> c_int {
    match (limit, mask) {
        (None, _) => waits::epoll_wait(epfd, out, 0),
        (Some(l), None) => waits::epoll_wait(epfd, out, l.left_ms()),
        (Some(l), Some(m)) if pwait2 => {
            let ts = l.left_ts();
            waits::epoll_pwait2(epfd, out, ts.as_ref(), m)
        }
        (Some(l), Some(m)) => waits::epoll_pwait(epfd, out, l.left_ms(), m),
    }
}

/// The kernel's events (the first `n` of `out`) with the pending ones
/// merged in: a member the kernel reported too gets its events or-ed. A
/// kernel event with the same `data` but bits the pending event's
/// registration (`masks`) did not ask for is another member's (review s35
/// `rdhup2.c`: an EPOLLRDHUP-only registration was reported EPOLLIN, a
/// sibling's): the pending event goes in one of its own, if there is
/// room.
fn merge(out: &mut [epoll_event], n: usize, pending: Vec<epoll_event>, masks: &[u32]) -> c_int {
    // (Many to place among many: found by their `data`, not by a scan of
    // the events per pending one: issue 14, thousands of members.)
    let indexed = pending.len() * (n + pending.len()) > MERGE_SCANS;
    merge_with(out, n, pending, masks, indexed)
}

/// `merge`, the events found by a scan or (`indexed`) by `ByData`.
fn merge_with(
    out: &mut [epoll_event],
    mut n: usize,
    pending: Vec<epoll_event>,
    masks: &[u32],
    indexed: bool,
) -> c_int {
    let room = out.len();
    let always = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
    let mut index = indexed.then(|| ByData::new(out, n));
    for (i, ev) in pending.into_iter().enumerate() {
        let data = ev.u64;
        let mask = masks.get(i).copied().unwrap_or(u32::MAX) | always;
        let ix = index.as_ref();
        // Its registration's: one that says its bits already, else one
        // with some bit it asked for (besides the hang-ups every
        // registration gets: a sibling registered for nothing says
        // EPOLLHUP alone; review s35 fuzz2 seed 14), else one with
        // hang-ups alone.
        let could = |o: &epoll_event| o.events & !mask == 0;
        let own = first(out, n, ix, data, |o| {
            could(o) && o.events & ev.events == ev.events
        })
        .or_else(|| {
            first(out, n, ix, data, |o| {
                could(o) && o.events & mask & !always != 0
            })
        })
        // Else one with hang-ups alone, as before: a one-shot
        // member's own, from the MOD that disarmed it (`report`).
        .or_else(|| first(out, n, ix, data, could));
        match own {
            Some(j) => out[j].events |= ev.events,
            None if n < room => {
                out[n] = ev;
                if let Some(ix) = &mut index {
                    ix.push(data, n);
                }
                n += 1;
            }
            // No room: or-ed into the first with its `data`, as before,
            // rather than lost (an edge or a one-shot taken).
            None => {
                if let Some(j) = first(out, n, ix, data, |_| true) {
                    out[j].events |= ev.events;
                }
            }
        }
    }
    n as c_int
}

/// The first of the events `out[..n]` with `data` that `pick` says of: by
/// `index`, or by a scan. (Generic, not `&dyn Fn`: a call through a
/// pointer per event scanned made kvbench's 50 connections 7% more
/// instructions per request; decision 79.)
fn first(
    out: &[epoll_event],
    n: usize,
    index: Option<&ByData>,
    data: u64,
    pick: impl Fn(&epoll_event) -> bool,
) -> Option<usize> {
    match index {
        Some(ix) => ix.with(data).find(|&j| pick(&out[j])),
        None => out[..n].iter().position(|o| ({ o.u64 }) == data && pick(o)),
    }
}

/// Pending events times events above which `merge` indexes the events by
/// their `data`.
const MERGE_SCANS: usize = 4096;

/// The positions of the events in `out` by their `data`, in order (a
/// chain per `data`: its first and last, and each one's next).
struct ByData {
    ends: std::collections::HashMap<u64, (usize, usize)>,
    next: Vec<usize>,
}

impl ByData {
    fn new(out: &[epoll_event], n: usize) -> ByData {
        let mut ix = ByData {
            ends: std::collections::HashMap::with_capacity(n),
            next: vec![usize::MAX; out.len()],
        };
        for (j, o) in out[..n].iter().enumerate() {
            ix.push(o.u64, j);
        }
        ix
    }

    /// Event `j` (after every one noted) has `data`.
    fn push(&mut self, data: u64, j: usize) {
        match self.ends.get_mut(&data) {
            Some((_, last)) => {
                if let Some(n) = self.next.get_mut(*last) {
                    *n = j;
                }
                *last = j;
            }
            None => {
                self.ends.insert(data, (j, j));
            }
        }
    }

    /// The positions of the events with `data`, in order.
    fn with(&self, data: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.ends.get(&data).map_or(usize::MAX, |&(first, _)| first);
        std::iter::successors((start != usize::MAX).then_some(start), |&j| {
            self.next.get(j).copied().filter(|&k| k != usize::MAX)
        })
    }
}

/// An epoll set that holds connections, and the caller's events array.
struct EpollSet<'a> {
    epfd: c_int,
    out: &'a mut [epoll_event],
    /// The most pending events to report (see `epoll_set`).
    most: usize,
    pending: Pending,
    pwait2: bool,
    /// The members whose flag is down, for the spin (`rings_ready`).
    listed: Option<Vec<Arc<Socket>>>,
    /// The kernel's last answer was all datagram readiness taken back.
    took_back: bool,
    /// The spin over its level-triggered datagram members.
    datagrams: DatagramSpin,
}

impl WaitSet for EpollSet<'_> {
    fn found(&self) -> bool {
        !self.pending.events.is_empty()
    }

    fn look(&mut self) {
        self.pending = readiness::pending(self.epfd, self.most, false).unwrap_or_default();
    }

    fn rings_ready(&mut self) -> bool {
        // A datagram found ends the spin; the kernel reports it after
        // `spin_over` (its eventfd written).
        if self.datagrams.ready() {
            return true;
        }
        // Lock-free looks while nothing came (the table's lock, taken 16
        // times a round, would hold up every other thread's epoll calls).
        let listed = self
            .listed
            .get_or_insert_with(|| readiness::unarmed(self.epfd));
        if !listed
            .iter()
            .any(|s| s.connection().is_some_and(|c| c.maybe_news()))
        {
            return false;
        }
        if !readiness::unarmed_ready(self.epfd) {
            return false;
        }
        self.look();
        self.found()
    }

    fn worth_spinning(&self, limit: Limit) -> bool {
        // Cheapest first: walking the members takes the table's lock.
        // (`spin_helps`, which may read /proc, is asked by the spin, once
        // signals are blocked: decision 45.)
        spin_budgeted(limit) && (self.datagrams.wanted() || readiness::awaits_reply(self.epfd))
    }

    fn spin_over(&mut self) {
        self.datagrams.over();
    }

    fn awaits_reply(&self) -> bool {
        readiness::awaits_reply(self.epfd)
    }

    fn no_reply_soon(&self) {
        readiness::no_reply_soon(self.epfd);
    }

    fn real(&mut self, limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int {
        real_epoll(self.epfd, self.out, limit, mask, self.pwait2)
    }

    fn filter(&mut self, n: c_int) -> c_int {
        readiness::collected(self.epfd, &self.out[..n.max(0) as usize]);
        self.took_back = false;
        if n <= 0 {
            return n;
        }
        // (Only hang-ups TCP does not report, or the waker's event: not an
        // answer either.)
        let n = readiness::tcp_hangups(self.epfd, &mut self.out[..n as usize]);
        let n = readiness::woken(self.epfd, self.out, n) as c_int;
        if n == 0 {
            self.took_back = true;
            return 0;
        }
        let left = readiness::datagrams_reported(self.epfd, self.out, n as usize) as c_int;
        // All taken back: not an answer (the wait goes on).
        self.took_back = left == 0;
        left
    }

    fn answer(&mut self) -> Action<c_int> {
        let mut room = self.out.len() - self.pending.events.len();
        // One slot, taken by ours: the kernel's turn every other call (its
        // event, once taken from it, must be reported; ours are or-ed into
        // it when they are the same registration's, else left for the next
        // call, which only events that changed no state may be).
        if room == 0 && self.pending.replayable && readiness::kernel_turn(self.epfd) {
            room = self.out.len();
        }
        let mut n = 0;
        if room > 0 {
            n = real_epoll(self.epfd, &mut self.out[..room], None, None, false);
            if n < 0 {
                return Action::Raw(n);
            }
            n = readiness::woken(self.epfd, self.out, n as usize) as c_int;
            readiness::collected(self.epfd, &self.out[..n as usize]);
            n = readiness::tcp_hangups(self.epfd, &mut self.out[..n as usize]) as c_int;
            n = readiness::datagrams_reported(self.epfd, &mut self.out[..room], n as usize)
                as c_int;
        }
        let pending = std::mem::take(&mut self.pending.events);
        let masks = std::mem::take(&mut self.pending.masks);
        Action::Done(merge(self.out, n as usize, pending, &masks))
    }

    fn sliced(&self) -> bool {
        self.pending.watch_closely
    }

    fn empty_stands(&self) -> bool {
        !self.pending.watch_closely && !self.took_back
    }

    fn before_sleep(&mut self) -> bool {
        if !readiness::before_sleep(self.epfd) {
            return false;
        }
        self.look();
        self.found()
    }

    fn after_sleep(&mut self) {
        readiness::after_sleep(self.epfd);
    }
}

fn epoll_set(
    epfd: c_int,
    events: EpollOut<'_>,
    limit: Limit,
    mask: Option<SigMask<'_>>,
    pwait2: bool,
) -> Action<c_int> {
    let Some(out) = events.entries() else {
        return Action::Pass;
    };
    epoll_entries(epfd, out, limit, mask, pwait2)
}

/// `epoll_set` on the caller's events array.
fn epoll_entries(
    epfd: c_int,
    out: &mut [epoll_event],
    limit: Limit,
    mask: Option<SigMask<'_>>,
    pwait2: bool,
) -> Action<c_int> {
    // Room for the kernel's events too (one at least, when there is more
    // than one slot).
    let most = (out.len() - 1).max(1);
    // A loop, not a call of itself: a wait that finds only another
    // process's waker goes round once a millisecond for as long as that
    // waker stays (a frame per turn overflowed a small stack).
    loop {
        readiness::waiting(epfd);
        let Some(pending) = readiness::pending(epfd, most, true) else {
            match bare_wait(epfd, out, limit, mask, pwait2) {
                Some(done) => return done,
                None => continue,
            }
        };
        let mut set = EpollSet {
            epfd,
            out,
            most,
            pending,
            pwait2,
            listed: None,
            took_back: false,
            datagrams: DatagramSpin::new(readiness::spinnable_datagrams(epfd)),
        };
        return wait(&mut set, limit, mask);
    }
}

/// A wait on `epfd` when it holds no connection (yet): the kernel's. In a
/// set of ours, another thread may put one in with data no doorbell
/// announced and wake this sleep with the waker (decision 44): its event
/// is taken out, and with nothing else the wait begins again (None), on a
/// set that now holds a connection.
fn bare_wait(
    epfd: c_int,
    out: &mut [epoll_event],
    limit: Limit,
    mask: Option<SigMask<'_>>,
    pwait2: bool,
) -> Option<Action<c_int>> {
    let ours = readiness::is_set(epfd);
    if !ours && !crate::sockets::connecting::in_progress() {
        return Some(Action::Pass); // no connection in this set
    }
    if ours && !limit.now() && !readiness::bare_sleep(epfd, true) {
        return None;
    }
    let n = if crate::sockets::connecting::in_progress() {
        crate::sockets::connecting::wait_around(limit, |l| {
            real_epoll(epfd, out, Some(l), mask, pwait2)
        })
    } else {
        sleep_in_kernel(|| real_epoll(epfd, out, Some(limit), mask, pwait2))
    };
    if ours {
        readiness::bare_sleep(epfd, false);
    }
    if n <= 0 || !ours {
        return Some(Action::Raw(n));
    }
    let kept = readiness::woken(epfd, out, n as usize);
    if kept > 0 || limit.now() {
        return Some(Action::Raw(kept as c_int));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index finds what the scan finds: events with shared `data`,
    /// bits asked for or not, room and no room.
    #[test]
    fn merge_indexed_as_scanned() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let bits = [
            libc::EPOLLIN,
            libc::EPOLLOUT,
            libc::EPOLLHUP,
            libc::EPOLLRDHUP,
            libc::EPOLLIN | libc::EPOLLOUT,
        ]
        .map(|b| b as u32);
        for _ in 0..500 {
            let room = 1 + next(40) as usize;
            let n = next(room as u64 + 1) as usize;
            let keys = 1 + next(12);
            let mut out = vec![epoll_event { events: 0, u64: 0 }; room];
            for o in out.iter_mut().take(n) {
                *o = epoll_event {
                    events: bits[next(5) as usize],
                    u64: next(keys),
                };
            }
            let p = next(30) as usize;
            let pending: Vec<epoll_event> = (0..p)
                .map(|_| epoll_event {
                    events: bits[next(2) as usize],
                    u64: next(keys),
                })
                .collect();
            let masks: Vec<u32> = (0..p).map(|_| bits[next(5) as usize]).collect();
            let (mut a, mut b) = (out.clone(), out);
            let na = merge_with(&mut a, n, pending.clone(), &masks, false);
            let nb = merge_with(&mut b, n, pending, &masks, true);
            assert_eq!(na, nb);
            let pairs = |v: &[epoll_event]| -> Vec<(u32, u64)> {
                v.iter().map(|e| (e.events, e.u64)).collect()
            };
            assert_eq!(pairs(&a), pairs(&b));
        }
    }
}
