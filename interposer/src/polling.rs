//! Adaptive polling: poll, ppoll, select, pselect and epoll_wait on sets
//! that hold emulated connections.
//!
//! Readiness: a lazy reader (`Connection::lazy`) keeps its flag down while
//! it is not waiting, so its ring can hold data with no doorbell byte
//! queued. poll and select therefore look at the rings first and raise the
//! flags, and only then ask the kernel; readability the kernel reports for
//! bytes of data already read is taken back (`Connection::really_readable`).
//! Connections in an epoll set are eager, so the kernel's answer is exact,
//! except for data that came before they joined (`readiness`).
//!
//! Speed: before sleeping in the kernel, a wait spins for up to
//! `SHMNET_SPIN_US` — on the rings, and with zero-timeout calls for the
//! kernel's fds — when spinning can help (`spin_helps`): a wake-up from
//! sleep costs tens of microseconds on a VM, a spin that sees the data
//! well under one.
#![deny(unsafe_code)]

use core::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libc::{epoll_event, fd_set, nfds_t, pollfd, sigset_t, timespec, timeval};

use crate::hooks::{real, Action};
use crate::socket::Socket;
use crate::{guard, readiness, registry, sys};

const POLL_IN: i16 = libc::POLLIN | libc::POLLRDNORM;
/// Readiness the ring cannot take back: the read will report it.
const POLL_FINAL: i16 = libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP | libc::POLLNVAL;

/// How long a call may wait.
#[derive(Clone, Copy)]
enum Limit {
    Forever,
    Until(Instant),
}

impl Limit {
    fn ms(ms: c_int) -> Limit {
        if ms < 0 {
            Limit::Forever
        } else {
            Limit::Until(Instant::now() + Duration::from_millis(ms as u64))
        }
    }

    fn duration(d: Option<Duration>) -> Limit {
        d.map_or(Limit::Forever, |d| Limit::Until(Instant::now() + d))
    }

    fn left(self) -> Option<Duration> {
        match self {
            Limit::Forever => None,
            Limit::Until(t) => Some(t.saturating_duration_since(Instant::now())),
        }
    }

    fn now(self) -> bool {
        self.left().is_some_and(|d| d.is_zero())
    }

    /// Milliseconds for poll/epoll_wait, rounded up (as the kernel does).
    fn left_ms(self) -> c_int {
        match self.left() {
            None => -1,
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int,
        }
    }

    fn left_ts(self) -> Option<timespec> {
        self.left().map(|d| timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        })
    }
}

fn ts_duration(ts: timespec) -> Duration {
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// A count the real call returned: errno as libc left it on failure, the
/// caller's on success (our own calls on the way may have changed it).
fn result(n: c_int) -> Action<c_int> {
    if n < 0 {
        Action::Raw(n)
    } else {
        Action::Done(n)
    }
}

fn spin_budget() -> Duration {
    crate::config::get().map_or(Duration::ZERO, |c| Duration::from_micros(c.spin_us.into()))
}

/// Whether spinning can help: not when more threads are runnable than
/// there are CPUs (a spinner would then take the CPU from the thread it
/// waits for). Looked up in /proc/loadavg at most every 10 ms.
pub(crate) fn spin_helps() -> bool {
    static CHECKED: AtomicU64 = AtomicU64::new(0);
    static VERDICT: AtomicBool = AtomicBool::new(true);
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let last = CHECKED.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < 10 {
        return VERDICT.load(Ordering::Relaxed);
    }
    CHECKED.store(now, Ordering::Relaxed);
    let verdict = match (runnable_threads(), cpus()) {
        (Some(r), c) => r <= c,
        (None, _) => true,
    };
    VERDICT.store(verdict, Ordering::Relaxed);
    verdict
}

/// Runnable threads on the machine now (the 4th field of /proc/loadavg,
/// "running/total"), counting this one.
fn runnable_threads() -> Option<usize> {
    let fd = rustix::fs::open(
        "/proc/loadavg",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 128];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The connections among `fds` (by position) that a read could wait for.
fn connections<'a>(fds: impl Iterator<Item = (usize, c_int)> + 'a) -> Vec<(usize, Arc<Socket>)> {
    fds.filter_map(|(i, fd)| {
        registry::get(fd)
            .filter(|s| matches!(**s, Socket::Stream(_)))
            .map(|s| (i, s))
    })
    .collect()
}

fn conn(s: &Socket) -> &crate::socket::Connection {
    match s {
        Socket::Stream(c) => c,
        _ => unreachable!("connections() keeps only streams"),
    }
}

/// Spins until `ready` (checked on the rings, cheap) or `kernel` (a
/// zero-timeout call, every few rounds) says so, for the spin budget.
fn spin(limit: Limit, mut ready: impl FnMut() -> bool, mut kernel: impl FnMut() -> bool) -> bool {
    let budget = spin_budget();
    if budget.is_zero() || limit.now() || !spin_helps() {
        return false;
    }
    let budget = limit.left().map_or(budget, |l| l.min(budget));
    let start = Instant::now();
    loop {
        for _ in 0..16 {
            if ready() {
                return true;
            }
            core::hint::spin_loop();
        }
        if kernel() {
            return true;
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

// ---- poll, ppoll ----

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
    let (Some(set), timeout) = (unsafe { (sys::pollfds(fds, nfds), sys::read_opt(timeout)) }) else {
        return Action::Pass;
    };
    poll_set(set, Limit::duration(timeout.map(ts_duration)), Some(mask))
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

fn poll_set(set: &mut [pollfd], limit: Limit, mask: Option<*const sigset_t>) -> Action<c_int> {
    let conns = connections(
        set.iter()
            .enumerate()
            .filter(|(_, p)| p.fd >= 0 && p.events & POLL_IN != 0)
            .map(|(i, p)| (i, p.fd)),
    );
    if conns.is_empty() {
        return Action::Pass;
    }
    let only_rings = conns.len() == set.len() && set.iter().all(|p| p.events & !POLL_IN == 0);
    let mut ready: Vec<usize> = conns
        .iter()
        .filter(|(_, s)| conn(s).poll_readable())
        .map(|(i, _)| *i)
        .collect();
    if ready.is_empty() {
        let mut kernel_n = 0;
        let mut rounds = 0u32;
        let spun = spin(
            limit,
            || {
                ready.extend(
                    conns
                        .iter()
                        .filter(|(_, s)| conn(s).ring_readable())
                        .map(|(i, _)| *i),
                );
                !ready.is_empty()
            },
            || {
                rounds += 1;
                // A set of connections alone: the kernel is asked rarely
                // (hang-ups, errors); with other fds, every round.
                if only_rings && !rounds.is_multiple_of(8) {
                    return false;
                }
                kernel_n = real_poll(set, None, None);
                kernel_n < 0 || (kernel_n > 0 && filter_poll(set, &conns, kernel_n) > 0)
            },
        );
        if spun && ready.is_empty() {
            return if kernel_n < 0 {
                Action::Raw(kernel_n)
            } else {
                Action::Done(filter_poll(set, &conns, kernel_n))
            };
        }
    }
    if !ready.is_empty() {
        let n = real_poll(set, None, None);
        if n < 0 {
            return Action::Raw(n);
        }
        let mut n = filter_poll(set, &conns, n);
        for i in ready {
            let p = &mut set[i];
            if p.revents == 0 {
                n += 1;
            }
            p.revents |= p.events & POLL_IN;
        }
        return Action::Done(n);
    }
    loop {
        let n = guard::suspended(|| real_poll(set, Some(limit), mask));
        if n <= 0 {
            return result(n);
        }
        let n = filter_poll(set, &conns, n);
        if n > 0 || limit.now() {
            return Action::Done(n);
        }
    }
}

/// Takes back readability the kernel reported for doorbell bytes of data
/// already read; returns the new count of fds with events.
fn filter_poll(set: &mut [pollfd], conns: &[(usize, Arc<Socket>)], mut n: c_int) -> c_int {
    for (i, s) in conns {
        let p = &mut set[*i];
        if p.revents & POLL_IN != 0 && p.revents & POLL_FINAL == 0 && !conn(s).really_readable() {
            p.revents &= !POLL_IN;
            if p.revents == 0 {
                n -= 1;
            }
        }
    }
    n
}

// ---- select, pselect ----

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
    let limit = Limit::duration(t.map(|t| {
        Duration::from_secs(t.tv_sec.max(0) as u64)
            + Duration::from_micros(t.tv_usec.clamp(0, 999_999) as u64)
    }));
    let result = select_sets(nfds, r, w, e, limit, None);
    if !matches!(result, Action::Pass) {
        // Linux writes the time left back.
        let left = limit.left().unwrap_or_default();
        #[allow(unsafe_code)]
        // SAFETY: as above.
        unsafe {
            sys::write_opt(
                timeout,
                timeval {
                    tv_sec: left.as_secs() as _,
                    tv_usec: left.subsec_micros() as _,
                },
            )
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
    select_sets(
        nfds,
        r,
        w,
        e,
        Limit::duration(t.map(ts_duration)),
        Some(mask),
    )
}

/// select's three sets: the caller's (written with the result) and what
/// was asked (to start each kernel call from).
struct Sets {
    nfds: c_int,
    out: [*mut fd_set; 3],
    asked: [Option<fd_set>; 3],
}

impl Sets {
    fn restore(&self) {
        for (p, a) in self.out.iter().zip(&self.asked) {
            if let Some(a) = a {
                #[allow(unsafe_code)]
                // SAFETY: select(2)'s contract: given sets are valid.
                if let Some(o) = unsafe { sys::fd_set_mut(*p) } {
                    *o = *a;
                }
            }
        }
    }

    /// The caller's read set. (Its memory, not ours: `&self` only holds
    /// the pointer select was given.)
    #[allow(clippy::mut_from_ref)]
    fn read_set(&self) -> Option<&mut fd_set> {
        #[allow(unsafe_code)]
        // SAFETY: select(2)'s contract: a given set is valid, and nothing
        // else refers to it while this call runs.
        unsafe {
            sys::fd_set_mut(self.out[0])
        }
    }

    fn real(&self, limit: Option<Limit>, mask: Option<*const sigset_t>) -> c_int {
        self.restore();
        let [r, w, e] = self.out;
        #[allow(unsafe_code)]
        // SAFETY: the caller's sets and mask; our own timeout.
        unsafe {
            match (limit, mask) {
                (None, _) => {
                    let mut tv = timeval {
                        tv_sec: 0,
                        tv_usec: 0,
                    };
                    real::select(self.nfds, r, w, e, &mut tv)
                }
                (Some(l), None) => {
                    let mut tv = l.left().map(|d| timeval {
                        tv_sec: d.as_secs() as _,
                        tv_usec: d.subsec_micros() as _,
                    });
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

    /// Takes back readability of connections whose ring is empty (see
    /// `filter_poll`); returns the new count.
    fn filter(&self, conns: &[(usize, Arc<Socket>)], mut n: c_int) -> c_int {
        let Some(r) = self.read_set() else { return n };
        for (fd, s) in conns {
            let fd = *fd as c_int;
            if sys::fd_isset(fd, r) && !conn(s).really_readable() {
                sys::fd_mark(fd, r, false);
                n -= 1;
            }
        }
        n
    }
}

fn select_sets(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    limit: Limit,
    mask: Option<*const sigset_t>,
) -> Action<c_int> {
    let top = nfds.clamp(0, libc::FD_SETSIZE as c_int);
    #[allow(unsafe_code)]
    // SAFETY: select(2)'s contract: each set null or valid.
    let asked = unsafe { [r, w, e].map(|p| sys::fd_set_mut(p).map(|s| *s)) };
    let Some(reads) = asked[0] else {
        return Action::Pass;
    };
    let conns = connections(
        (0..top)
            .filter(|&fd| sys::fd_isset(fd, &reads))
            .map(|fd| (fd as usize, fd)),
    );
    if conns.is_empty() {
        return Action::Pass;
    }
    let sets = Sets {
        nfds,
        out: [r, w, e],
        asked,
    };
    let mut ready: Vec<c_int> = conns
        .iter()
        .filter(|(_, s)| conn(s).poll_readable())
        .map(|(fd, _)| *fd as c_int)
        .collect();
    if ready.is_empty() {
        let mut kernel_n = 0;
        let spun = spin(
            limit,
            || {
                ready.extend(
                    conns
                        .iter()
                        .filter(|(_, s)| conn(s).ring_readable())
                        .map(|(fd, _)| *fd as c_int),
                );
                !ready.is_empty()
            },
            || {
                kernel_n = sets.real(None, None);
                kernel_n < 0 || (kernel_n > 0 && sets.filter(&conns, kernel_n) > 0)
            },
        );
        if spun && ready.is_empty() {
            return if kernel_n < 0 {
                Action::Raw(kernel_n)
            } else {
                Action::Done(sets.filter(&conns, kernel_n))
            };
        }
    }
    if !ready.is_empty() {
        let n = sets.real(None, None);
        if n < 0 {
            return Action::Raw(n);
        }
        let mut n = sets.filter(&conns, n);
        if let Some(rs) = sets.read_set() {
            for fd in ready {
                if !sys::fd_isset(fd, rs) {
                    sys::fd_mark(fd, rs, true);
                    n += 1;
                }
            }
        }
        return Action::Done(n);
    }
    loop {
        let n = guard::suspended(|| sets.real(Some(limit), mask));
        if n <= 0 {
            return result(n);
        }
        let n = sets.filter(&conns, n);
        if n > 0 || limit.now() {
            return Action::Done(n);
        }
    }
}

// ---- epoll_wait, epoll_pwait, epoll_pwait2 ----

pub(crate) fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> Action<c_int> {
    epoll_set(epfd, events, max, Limit::ms(timeout), None, false)
}

pub(crate) fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> Action<c_int> {
    epoll_set(epfd, events, max, Limit::ms(timeout), Some(mask), false)
}

pub(crate) fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> Action<c_int> {
    #[allow(unsafe_code)]
    // SAFETY: epoll_pwait2(2)'s contract: `timeout` null or valid.
    let t = unsafe { sys::read_opt(timeout) };
    epoll_set(
        epfd,
        events,
        max,
        Limit::duration(t.map(ts_duration)),
        Some(mask),
        true,
    )
}

fn real_epoll(
    epfd: c_int,
    out: &mut [epoll_event],
    limit: Option<Limit>,
    mask: Option<*const sigset_t>,
    pwait2: bool,
) -> c_int {
    let (p, n) = (out.as_mut_ptr(), out.len() as c_int);
    #[allow(unsafe_code)]
    // SAFETY: `out` is (a prefix of) the caller's array; epfd and mask are
    // the caller's.
    unsafe {
        match (limit, mask) {
            (None, _) => real::epoll_wait(epfd, p, n, 0),
            (Some(l), None) => real::epoll_wait(epfd, p, n, l.left_ms()),
            (Some(l), Some(m)) if pwait2 => {
                let ts = l.left_ts();
                real::epoll_pwait2(
                    epfd,
                    p,
                    n,
                    ts.as_ref().map_or(core::ptr::null(), |t| t as *const _),
                    m,
                )
            }
            (Some(l), Some(m)) => real::epoll_pwait(epfd, p, n, l.left_ms(), m),
        }
    }
}

fn epoll_set(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    limit: Limit,
    mask: Option<*const sigset_t>,
    pwait2: bool,
) -> Action<c_int> {
    if !readiness::holds_connections(epfd) {
        return Action::Pass;
    }
    #[allow(unsafe_code)]
    // SAFETY: epoll_wait(2)'s contract for `events`/`max`.
    let Some(out) = (unsafe { sys::epoll_out(events, max) }) else {
        return Action::Pass;
    };
    let pending = readiness::pending_events(epfd, out.len());
    if !pending.is_empty() {
        let room = out.len().saturating_sub(pending.len());
        let mut n = 0usize;
        if room > 0 {
            let k = real_epoll(epfd, &mut out[..room], None, None, false);
            if k < 0 {
                return Action::Raw(k);
            }
            n = k as usize;
        }
        for ev in pending {
            let data = ev.u64;
            if n < out.len() && !out[..n].iter().any(|o| ({ o.u64 }) == data) {
                out[n] = ev;
                n += 1;
            }
        }
        return Action::Done(n as c_int);
    }
    let mut n = 0;
    if spin(
        limit,
        || false,
        || {
            n = real_epoll(epfd, out, None, None, false);
            n != 0
        },
    ) {
        return result(n);
    }
    result(guard::suspended(|| {
        real_epoll(epfd, out, Some(limit), mask, pwait2)
    }))
}
