//! poll, ppoll and their _FORTIFY_SOURCE variants on sets that hold
//! emulated connections: the caller's pollfd array as a `KernelSet` (see
//! `rings`), waited on by `sockets::wait`.
#![deny(unsafe_code)]

use core::ffi::c_int;

use libc::{nfds_t, pollfd, sigset_t, timespec};

use super::rings::{KernelSet, Rings, Waiting};
use crate::platform::real::{self, Action};
use crate::platform::sys;
use crate::sockets::wait::{wait, Limit};

const POLL_IN: i16 = libc::POLLIN | libc::POLLRDNORM;
/// Readiness the ring cannot take back: the read will report it.
const POLL_FINAL: i16 = libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP | libc::POLLNVAL;

pub(crate) fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: poll(2)'s contract for `fds`/`nfds`.
    let Some(set) = (unsafe { sys::pollfds(fds, nfds) }) else {
        return Action::Pass;
    };
    poll_set(set, Limit::ms(timeout), None)
}

pub(crate) fn poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    fdslen: usize,
) -> Action<c_int> {
    // A short buffer: let the real __poll_chk report it.
    if fdslen / core::mem::size_of::<pollfd>() < nfds as usize {
        return Action::Pass;
    }
    poll(fds, nfds, timeout)
}

pub(crate) fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: ppoll(2)'s contract for `fds`/`nfds` and `timeout`.
    let (set, timeout) = unsafe { (sys::pollfds(fds, nfds), sys::read_opt(timeout)) };
    match (set, Limit::timespec(timeout)) {
        (Some(set), Some(limit)) => poll_set(set, limit, Some(mask)),
        _ => Action::Pass,
    }
}

pub(crate) fn ppoll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
    fdslen: usize,
) -> Action<c_int> {
    if fdslen / core::mem::size_of::<pollfd>() < nfds as usize {
        return Action::Pass;
    }
    ppoll(fds, nfds, timeout, mask)
}

fn real_poll(set: &mut [pollfd], limit: Option<Limit>, mask: Option<*const sigset_t>) -> c_int {
    let (p, n) = (set.as_mut_ptr(), set.len() as nfds_t);
    #[allow(unsafe_code)]
    // SAFETY: `set` is the caller's valid array; `mask` is the caller's.
    unsafe {
        match (limit, mask) {
            (None, _) => real::poll(p, n, 0),
            (Some(l), None) => real::poll(p, n, l.left_ms()),
            (Some(l), Some(m)) => {
                let ts = l.left_ts();
                real::ppoll(
                    p,
                    n,
                    ts.as_ref().map_or(core::ptr::null(), |t| t as *const _),
                    m,
                )
            }
        }
    }
}

/// The caller's pollfd array.
struct PollSet<'a> {
    fds: &'a mut [pollfd],
    /// Only connections, only POLLIN: the kernel is asked rarely while
    /// spinning (for hang-ups, errors); with other fds, every round.
    only_rings: bool,
}

impl KernelSet for PollSet<'_> {
    fn real(&mut self, limit: Option<Limit>, mask: Option<*const sigset_t>) -> c_int {
        real_poll(self.fds, limit, mask)
    }

    fn filter(&mut self, waiting: &Waiting, mut n: c_int) -> c_int {
        for (i, c) in waiting.iter() {
            let p = &mut self.fds[i];
            if p.revents & POLL_IN != 0 && p.revents & POLL_FINAL == 0 && !c.really_readable() {
                p.revents &= !POLL_IN;
                if p.revents == 0 {
                    n -= 1;
                }
            }
        }
        n
    }

    fn mark_readable(&mut self, i: usize) -> bool {
        let p = &mut self.fds[i];
        let added = p.revents == 0;
        p.revents |= p.events & POLL_IN;
        added
    }

    fn ask_kernel(&self, round: u32) -> bool {
        !self.only_rings || round.is_multiple_of(8)
    }
}

fn poll_set(fds: &mut [pollfd], limit: Limit, mask: Option<*const sigset_t>) -> Action<c_int> {
    let waiting = Waiting::new(
        fds.iter()
            .enumerate()
            .filter(|(_, p)| p.fd >= 0 && p.events & POLL_IN != 0)
            .map(|(i, p)| (i, p.fd)),
    );
    if waiting.is_empty() {
        return Action::Pass;
    }
    let only_rings = waiting.len() == fds.len() && fds.iter().all(|p| p.events & !POLL_IN == 0);
    wait(
        &mut Rings::new(PollSet { fds, only_rings }, waiting),
        limit,
        mask,
    )
}
