//! select and pselect on sets that hold emulated connections: the caller's
//! three fd_sets as a `KernelSet` (see `rings`), waited on by
//! `sockets::wait`.
#![deny(unsafe_code)]

use core::ffi::{c_int, c_ulong};
use std::time::Duration;

use libc::{fd_set, sigset_t, timespec, timeval};

use super::rings::{KernelSet, Rings, Waiting};
use crate::platform::real::{self, Action};
use crate::platform::sys;
use crate::sockets::wait::{wait, Limit};

pub(crate) fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *mut timeval,
) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: select(2)'s contract: `timeout` null or valid.
    let t = unsafe { sys::read_opt(timeout) };
    let Some(limit) = Limit::timeval(t) else {
        return Action::Pass;
    };
    let result = select_sets(nfds, [r, w, e], limit, None);
    if !matches!(result, Action::Pass) {
        // Linux writes the time left back.
        let left = limit.left().unwrap_or_default();
        #[allow(unsafe_code)]
        // SAFETY: as above.
        unsafe {
            sys::write_opt(timeout, timeval_of(left))
        };
    }
    result
}

pub(crate) fn pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: pselect(2)'s contract: `timeout` null or valid.
    let t = unsafe { sys::read_opt(timeout) };
    Limit::timespec(t).map_or(Action::Pass, |limit| {
        select_sets(nfds, [r, w, e], limit, Some(mask))
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
struct Sets {
    nfds: c_int,
    out: [*mut fd_set; 3],
    asked: [Option<Vec<c_ulong>>; 3],
}

impl Sets {
    /// The caller's set `i` as words (its memory, not ours: `&self` only
    /// holds the pointer select was given).
    #[allow(clippy::mut_from_ref)]
    fn words(&self, i: usize) -> Option<&mut [c_ulong]> {
        #[allow(unsafe_code)]
        // SAFETY: select(2)'s contract: a given set is valid for `nfds`
        // bits, and nothing else refers to it while this call runs.
        unsafe {
            sys::fd_words(self.out[i], self.nfds)
        }
    }

    fn restore(&self) {
        for (i, asked) in self.asked.iter().enumerate() {
            if let (Some(a), Some(o)) = (asked, self.words(i)) {
                o.copy_from_slice(a);
            }
        }
    }

    fn call(&self, limit: Option<Limit>, mask: Option<*const sigset_t>) -> c_int {
        self.restore();
        let [r, w, e] = self.out;
        #[allow(unsafe_code)]
        // SAFETY: the caller's sets and mask; our own timeout.
        unsafe {
            match (limit, mask) {
                (None, _) => {
                    let mut tv = timeval_of(Duration::ZERO);
                    real::select(self.nfds, r, w, e, &mut tv)
                }
                (Some(l), None) => {
                    let mut tv = l.left().map(timeval_of);
                    let p = tv.as_mut().map_or(core::ptr::null_mut(), |t| t as *mut _);
                    real::select(self.nfds, r, w, e, p)
                }
                (Some(l), Some(m)) => {
                    let ts = l.left_ts();
                    let p = ts.as_ref().map_or(core::ptr::null(), |t| t as *const _);
                    real::pselect(self.nfds, r, w, e, p, m)
                }
            }
        }
    }

    /// Clears the read bit of connections whose ring is empty (see
    /// `KernelSet::filter`); the new count.
    fn take_back(&self, waiting: &Waiting, mut n: c_int) -> c_int {
        let Some(r) = self.words(0) else { return n };
        for (fd, c) in waiting.iter() {
            if bit(r, fd) && !c.really_readable() {
                set_bit(r, fd, false);
                n -= 1;
            }
        }
        n
    }
}

fn select_sets(
    nfds: c_int,
    out: [*mut fd_set; 3],
    limit: Limit,
    mask: Option<*const sigset_t>,
) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: select(2)'s contract: each set null or valid for `nfds` bits.
    let asked = out.map(|p| unsafe { sys::fd_words(p, nfds) }.map(|w| w.to_vec()));
    let Some(reads) = &asked[0] else {
        return Action::Pass;
    };
    let waiting = Waiting::new(
        (0..nfds.max(0) as usize)
            .filter(|&fd| bit(reads, fd))
            .map(|fd| (fd, fd as c_int)),
    );
    if waiting.is_empty() {
        return Action::Pass;
    }
    let sets = Sets { nfds, out, asked };
    wait(&mut Rings::new(sets, waiting), limit, mask)
}

impl KernelSet for Sets {
    fn real(&mut self, limit: Option<Limit>, mask: Option<*const sigset_t>) -> c_int {
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
