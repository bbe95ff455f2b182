//! select and pselect on sets that hold emulated connections: the caller's
//! three fd_sets as a `KernelSet` (see `rings`), waited on by
//! `sockets::wait`.
#![forbid(unsafe_code)]

use core::ffi::{c_int, c_ulong};
use std::time::Duration;

use libc::{timespec, timeval};

use super::rings::{KernelSet, Rings, Waiting};
use crate::platform::real::{waits, Action};
use crate::platform::sys::{FdSet, SigMask, TimeIn, TimeInOut};
use crate::sockets::wait::{wait, Limit};

pub(crate) fn select(nfds: c_int, sets: [FdSet<'_>; 3], timeout: TimeInOut<'_>) -> Action<c_int> {
    let Some(limit) = Limit::timeval(timeout.get()) else {
        return Action::Pass;
    };
    let result = select_sets(nfds, sets, limit, None);
    if !matches!(result, Action::Pass) {
        // Linux writes the time left back.
        let left = limit.left().unwrap_or_default();
        timeout.put(timeval_of(left));
    }
    result
}

pub(crate) fn pselect(
    nfds: c_int,
    sets: [FdSet<'_>; 3],
    timeout: TimeIn<'_, timespec>,
    mask: SigMask<'_>,
) -> Action<c_int> {
    Limit::timespec(timeout.get()).map_or(Action::Pass, |limit| {
        select_sets(nfds, sets, limit, Some(mask))
    })
}

fn timeval_of(d: Duration) -> timeval {
    timeval {
        tv_sec: d.as_secs() as _,
        tv_usec: d.subsec_micros() as _,
    }
}

const WORD_BITS: usize = c_ulong::BITS as usize;

fn bit(words: &[c_ulong], fd: usize) -> bool {
    words[fd / WORD_BITS] & (1 << (fd % WORD_BITS)) != 0
}

fn set_bit(words: &mut [c_ulong], fd: usize, on: bool) {
    let mask: c_ulong = 1 << (fd % WORD_BITS);
    if on {
        words[fd / WORD_BITS] |= mask;
    } else {
        words[fd / WORD_BITS] &= !mask;
    }
}

/// select's three sets: the caller's (written with the result) and what
/// was asked (to start each kernel call from).
struct Sets<'s, 'call> {
    out: &'s mut [FdSet<'call>; 3],
    asked: [Option<Vec<c_ulong>>; 3],
}

impl Sets<'_, '_> {
    /// The caller's set `i` as words.
    fn words(&mut self, i: usize) -> Option<&mut [c_ulong]> {
        self.out[i].words()
    }

    fn restore(&mut self) {
        for (asked, out) in self.asked.iter().zip(self.out.iter_mut()) {
            if let (Some(a), Some(o)) = (asked, out.words()) {
                o.copy_from_slice(a);
            }
        }
    }

    fn call(&mut self, limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int {
        self.restore();
        match (limit, mask) {
            (None, _) => {
                let mut tv = timeval_of(Duration::ZERO);
                waits::select(self.out, Some(&mut tv))
            }
            (Some(l), None) => {
                let mut tv = l.left().map(timeval_of);
                waits::select(self.out, tv.as_mut())
            }
            (Some(l), Some(m)) => {
                let ts = l.left_ts();
                waits::pselect(self.out, ts.as_ref(), m)
            }
        }
    }

    /// Clears the read bit of connections whose ring is empty (see
    /// `KernelSet::filter`); the new count.
    fn take_back(&mut self, waiting: &Waiting, mut n: c_int) -> c_int {
        let Some(r) = self.words(0) else { return n };
        for (fd, c) in waiting.iter() {
            if bit(r, fd) && !c.really_readable() {
                set_bit(r, fd, false);
                n -= 1;
            }
        }
        for fd in waiting.datagram_keys() {
            if bit(r, fd) && waiting.datagram_reported(fd) == (false, false) {
                set_bit(r, fd, false);
                n -= 1;
            }
        }
        if crate::sockets::connecting::in_progress() {
            n = self.settle_connecting(n);
        }
        n
    }

    /// A read bit the kernel set for a connect in progress: the acceptor's
    /// decline byte, not data (as `poll::settle_connecting`). The connect
    /// completes here, and the bit stays only if its ring holds something
    /// (kernel TCP reports a fresh connection writable, not readable).
    fn settle_connecting(&mut self, mut n: c_int) -> c_int {
        let Some(r) = self.words(0) else { return n };
        for fd in 0..r.len() * WORD_BITS {
            if !bit(r, fd) || !super::poll::connecting_empty(fd as c_int) {
                continue;
            }
            set_bit(r, fd, false);
            n -= 1;
        }
        n
    }
}

/// Emulated UDP sockets in the write set are always writable (a datagram
/// never waits for room; their fd, an epoll instance, never says so): the
/// call returns at once, with whatever else is ready now.
fn select_sets(
    nfds: c_int,
    mut out: [FdSet<'_>; 3],
    limit: Limit,
    mask: Option<SigMask<'_>>,
) -> Action<c_int> {
    // (The read and exception sets: a wait only for writing ends at once
    // on a UDP socket, `poll::captured`.)
    if crate::sockets::datagram::pristine::any() {
        for i in [0, 2] {
            if let Some(w) = out[i].words() {
                let end = (nfds.max(0) as usize).min(w.len() * WORD_BITS);
                (0..end)
                    .filter(|&fd| bit(w, fd))
                    .for_each(|fd| super::captured(fd as c_int));
            }
        }
    }
    let writers: Vec<usize> = match out[1].words() {
        Some(w) => (0..nfds.max(0) as usize)
            .filter(|&fd| bit(w, fd) && crate::calls::datagram::is_datagram(fd as c_int))
            .collect(),
        _ => Vec::new(),
    };
    if writers.is_empty() {
        return select_readers(nfds, &mut out, limit, mask);
    }
    let mut n = match select_readers(nfds, &mut out, Limit::ms(0), mask) {
        Action::Pass => {
            let mut tv = timeval_of(Duration::ZERO);
            waits::select(&mut out, Some(&mut tv))
        }
        Action::Done(n) | Action::Raw(n) => n,
        failed => return failed,
    };
    if n < 0 {
        return Action::Raw(n);
    }
    if let Some(w) = out[1].words() {
        for fd in writers {
            if !bit(w, fd) {
                set_bit(w, fd, true);
                n += 1;
            }
        }
    }
    Action::Done(n)
}

fn select_readers(
    nfds: c_int,
    out: &mut [FdSet<'_>; 3],
    limit: Limit,
    mask: Option<SigMask<'_>>,
) -> Action<c_int> {
    let asked = [0, 1, 2].map(|i| out[i].words().map(|w| w.to_vec()));
    let Some(reads) = &asked[0] else {
        return Action::Pass;
    };
    let waiting = Waiting::new(
        (0..nfds.max(0) as usize)
            .filter(|&fd| bit(reads, fd))
            .map(|fd| (fd, fd as c_int)),
    );
    if waiting.is_empty() {
        if !crate::sockets::connecting::in_progress() {
            return Action::Pass;
        }
        let mut sets = Sets { out, asked };
        return Action::Raw(crate::sockets::connecting::wait_around(limit, |l| loop {
            let n = sets.call(Some(l), mask);
            if n <= 0 {
                return n;
            }
            // (Nothing left: a decline byte only; wait on.)
            let n = sets.settle_connecting(n);
            if n > 0 || l.now() {
                return n;
            }
        }));
    }
    let sets = Sets { out, asked };
    wait(&mut Rings::new(sets, waiting), limit, mask)
}

impl KernelSet for Sets<'_, '_> {
    fn real(&mut self, limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int {
        self.call(limit, mask)
    }

    fn filter(&mut self, waiting: &Waiting, n: c_int) -> c_int {
        self.take_back(waiting, n)
    }

    fn mark_readable(&mut self, fd: usize) -> bool {
        match self.words(0) {
            Some(r) if !bit(r, fd) => {
                set_bit(r, fd, true);
                true
            }
            _ => false,
        }
    }
}
