//! poll, ppoll and their _FORTIFY_SOURCE variants on sets that hold
//! emulated connections: the caller's pollfd array as a `KernelSet` (see
//! `rings`), waited on by `sockets::wait`.
#![forbid(unsafe_code)]

use core::ffi::c_int;

use libc::{pollfd, timespec};

use super::rings::{KernelSet, Rings, Waiting};
use crate::platform::real::{waits, Action};
use crate::platform::sys::{PollFds, SigMask, TimeIn};
use crate::sockets::conn::Connection;
use crate::sockets::registry;
use crate::sockets::wait::{wait, Limit};

const POLL_IN: i16 = libc::POLLIN | libc::POLLRDNORM;
/// Readiness the ring cannot take back: the read will report it.
const POLL_FINAL: i16 = libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP | libc::POLLNVAL;

pub(crate) fn poll(fds: PollFds<'_>, timeout: c_int) -> Action<c_int> {
    let Some(set) = fds.entries() else {
        return Action::Pass;
    };
    captured(set);
    poll_set(set, Limit::ms(timeout), None)
}

pub(crate) fn ppoll(
    fds: PollFds<'_>,
    timeout: TimeIn<'_, timespec>,
    mask: SigMask<'_>,
) -> Action<c_int> {
    let (set, timeout) = (fds.entries(), timeout.get());
    if let Some(set) = &set {
        captured(set);
    }
    match (set, Limit::timespec(timeout)) {
        (Some(set), Some(limit)) => poll_set(set, limit, Some(mask)),
        _ => Action::Pass,
    }
}

/// A UDP socket still the kernel's own file (decision 64) that a poll
/// waits on to read is the kernel's for good: the kernel holds its file
/// for the wait, which a conversion meanwhile would not end. Asked only to
/// be writable it is not (a UDP socket is, at once: Python's sockets with
/// a timeout poll for POLLOUT before each send).
fn captured(set: &[pollfd]) {
    const READ: i16 = libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM | libc::POLLRDBAND;
    if crate::sockets::datagram::pristine::any() {
        set.iter()
            .filter(|p| p.events & READ != 0)
            .for_each(|p| super::captured(p.fd));
    }
}

fn real_poll(set: &mut [pollfd], limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int {
    match (limit, mask) {
        (None, _) => waits::poll(set, 0),
        (Some(l), None) => waits::poll(set, l.left_ms()),
        (Some(l), Some(m)) => {
            let ts = l.left_ts();
            waits::ppoll(set, ts.as_ref(), m)
        }
    }
}

/// The caller's pollfd array.
struct PollSet<'a> {
    fds: &'a mut [pollfd],
    /// Only connections, only POLLIN: the kernel is asked rarely while
    /// spinning (for hang-ups, errors); with other fds, every round.
    only_rings: bool,
    /// Once an entry sits out the wait (`hangups`): the array the kernel
    /// is given instead, that entry's fd -1 (the caller's array is never
    /// written but for revents: a siglongjmp out of the call leaves it
    /// whole).
    shadow: Option<Vec<pollfd>>,
}

impl<'a> PollSet<'a> {
    fn new(fds: &'a mut [pollfd], only_rings: bool) -> Self {
        PollSet {
            fds,
            only_rings,
            shadow: None,
        }
    }

    /// The Unix connections' POLLERR and POLLHUP turned into kernel TCP's
    /// (`tcp_revents`), `n` counted again. An entry left with nothing (the
    /// peer closed: a Unix socket then says POLLHUP to every poller, kernel
    /// TCP says POLLIN|POLLRDHUP to those who asked, and nothing to the
    /// rest) is not ready, and sits out the rest of this call (`shadow`):
    /// its hang-up is level, and would end every later wait at once. Only
    /// this process's own calls (a shutdown, a write met by a reset) could
    /// give it anything to report now; the next call looks again.
    fn hangups(&mut self, mut n: c_int) -> c_int {
        for i in 0..self.fds.len() {
            let p = &mut self.fds[i];
            if p.fd < 0 || p.revents & (libc::POLLERR | libc::POLLHUP) == 0 {
                continue;
            }
            let Some(s) = registry::get(p.fd) else {
                continue;
            };
            let Some(c) = s.connection() else {
                continue;
            };
            p.revents = tcp_revents(p.revents, c);
            if p.revents == 0 {
                n -= 1;
                let fds = &*self.fds;
                self.shadow.get_or_insert_with(|| fds.to_vec())[i].fd = -1;
            }
        }
        n
    }
}

impl KernelSet for PollSet<'_> {
    fn real(&mut self, limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int {
        let Some(shadow) = self.shadow.as_mut() else {
            return real_poll(self.fds, limit, mask);
        };
        let n = real_poll(shadow, limit, mask);
        for (p, q) in self.fds.iter_mut().zip(shadow.iter()) {
            p.revents = q.revents;
        }
        n
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
        n = self.hangups(n);
        if crate::sockets::connecting::in_progress() {
            n = settle_connecting(self.fds, n);
        }
        for i in waiting.datagram_keys() {
            let p = &mut self.fds[i];
            if p.revents & POLL_IN == 0 {
                continue;
            }
            let (data, error) = waiting.datagram_reported(i);
            if !data {
                p.revents &= !POLL_IN;
            }
            if error {
                p.revents |= libc::POLLERR;
            }
            if p.revents == 0 {
                n -= 1;
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

/// POLLIN the kernel reported for a connect in progress (`connecting`):
/// the acceptor's decline byte, not data. The connect completes here, and
/// the entry keeps POLLIN only if its ring holds something (kernel TCP
/// reports a fresh connection writable, not readable).
fn settle_connecting(fds: &mut [pollfd], mut n: c_int) -> c_int {
    for p in fds
        .iter_mut()
        .filter(|p| p.revents & POLL_IN != 0 && p.revents & POLL_FINAL == 0)
    {
        if connecting_empty(p.fd) {
            p.revents &= !POLL_IN;
            if p.revents == 0 {
                n -= 1;
            }
        }
    }
    n
}

/// `fd` is a connect in progress the kernel reported readable, and after
/// settling it (completing it if answered) there is nothing to read.
pub(super) fn connecting_empty(fd: c_int) -> bool {
    let connecting = registry::get(fd)
        .is_some_and(|s| matches!(&*s, crate::sockets::socket::Socket::Connecting(_)));
    if !connecting {
        return false;
    }
    let now = crate::sockets::connecting::get(fd);
    match now.as_deref().and_then(|s| s.connection()) {
        Some(c) => !c.really_readable(),
        // Still in progress: nothing to read yet either.
        None => now.is_some_and(
            |s| matches!(&*s, crate::sockets::socket::Socket::Connecting(c) if !c.failed()),
        ),
    }
}

/// The Unix connection's POLLERR and POLLHUP turned into kernel TCP's
/// (`Connection::tcp_error_hangup`); nothing when TCP has nothing to say
/// (`PollSet::hangups`).
fn tcp_revents(revents: i16, c: &Connection) -> i16 {
    const ERR_HUP: i16 = libc::POLLERR | libc::POLLHUP;
    if revents & ERR_HUP == 0 {
        return revents;
    }
    let (err, hup) = c.tcp_error_hangup(revents & (libc::POLLHUP | libc::POLLRDHUP) != 0);
    (revents & !ERR_HUP) | if err { libc::POLLERR } else { 0 } | if hup { libc::POLLHUP } else { 0 }
}

/// A set with no reader: the kernel's answer, with the hang-up bits of
/// connections as `tcp_revents` says (a writer polling POLLOUT after the
/// peer's close); one that says nothing then waits on (`hangups`).
fn poll_writers(fds: &mut [pollfd], limit: Limit, mask: Option<SigMask<'_>>) -> Action<c_int> {
    let mut set = PollSet::new(fds, false);
    loop {
        // (Asleep as the rings' waits sleep: outside the library for a
        // signal handler's calls and a siglongjmp, and ended by
        // pthread_cancel.)
        let n = crate::sockets::wait::sleep_in_kernel(|| set.real(Some(limit), mask));
        if n <= 0 {
            return Action::Raw(n);
        }
        let n = set.hangups(n);
        if n > 0 || limit.now() {
            return Action::Raw(n);
        }
    }
}

/// Writability a UDP socket reports (the kernel's `sock_writeable`).
const POLL_OUT: i16 = libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND;

fn poll_set(fds: &mut [pollfd], limit: Limit, mask: Option<SigMask<'_>>) -> Action<c_int> {
    let writer = |p: &pollfd| {
        p.fd >= 0 && p.events & POLL_OUT != 0 && crate::calls::datagram::is_datagram(p.fd)
    };
    if !fds.iter().any(writer) {
        return poll_any(fds, limit, mask);
    }
    // An emulated UDP socket is always writable (a datagram never waits
    // for room; its fd, an epoll instance, never says so): the call
    // returns at once, with whatever else is ready now.
    let mut n = match poll_any(fds, Limit::ms(0), mask) {
        Action::Pass => real_poll(fds, None, None),
        Action::Done(n) | Action::Raw(n) => n,
        failed => return failed,
    };
    if n < 0 {
        return Action::Raw(n);
    }
    for p in fds.iter_mut().filter(|p| writer(p)) {
        if p.revents == 0 {
            n += 1;
        }
        p.revents |= p.events & POLL_OUT;
    }
    Action::Done(n)
}

fn poll_any(fds: &mut [pollfd], limit: Limit, mask: Option<SigMask<'_>>) -> Action<c_int> {
    let waiting = Waiting::new(
        fds.iter()
            .enumerate()
            .filter(|(_, p)| p.fd >= 0 && p.events & POLL_IN != 0)
            .map(|(i, p)| (i, p.fd)),
    );
    if waiting.is_empty() {
        if fds
            .iter()
            .any(|p| p.fd >= 0 && registry::is_connection(p.fd))
        {
            return poll_writers(fds, limit, mask);
        }
        if crate::sockets::connecting::in_progress() {
            return Action::Raw(crate::sockets::connecting::wait_around(limit, |l| loop {
                let n = real_poll(fds, Some(l), mask);
                if n <= 0 {
                    return n;
                }
                // (Nothing left: a decline byte only; wait on.)
                let n = settle_connecting(fds, n);
                if n > 0 || l.now() {
                    return n;
                }
            }));
        }
        return Action::Pass;
    }
    let only_rings = waiting.len() == fds.len() && fds.iter().all(|p| p.events & !POLL_IN == 0);
    wait(
        &mut Rings::new(PollSet::new(fds, only_rings), waiting),
        limit,
        mask,
    )
}
