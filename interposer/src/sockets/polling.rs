//! Adaptive polling: poll, ppoll, select and pselect on sets that hold
//! emulated connections, and the spinning they share with `epoll`.
//!
//! Readiness: a lazy reader (`Connection::lazy`) keeps its flag down while
//! it is not waiting, so its ring can hold data with no doorbell byte
//! queued. poll and select therefore look at the rings first and raise the
//! flags, and only then ask the kernel; readability the kernel reports for
//! bytes of data already read is taken back (`Connection::really_readable`).
//! A reader of ours asleep taking doorbell bytes in another thread could
//! take the byte a poller waits for: the poller then sleeps in short slices
//! and looks at the rings between them (`Connection::add_waiter`).
//! Connections in an epoll set are eager, so the kernel's answer is exact,
//! except for data that came before they joined (`readiness::pending`,
//! reported by `epoll`).
//!
//! Speed: before sleeping in the kernel, a wait spins for up to
//! `SHMNET_SPIN_US` — on the rings, and with zero-timeout calls for the
//! kernel's fds — when spinning can help (`spin_helps`, and a connection in
//! the set awaits a reply): a wake-up from sleep costs tens of
//! microseconds on a VM, a spin that sees the data well under one.
//!
//! The spin and the looks at the rings run inside the library (a signal
//! handler that interrupts them and uses an emulated socket gets EIO, as
//! everywhere in the library); the sleep in the kernel does not.
#![deny(unsafe_code)]

use core::ffi::{c_int, c_ulong};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libc::{fd_set, nfds_t, pollfd, sigset_t, timespec, timeval};

use crate::platform::real::{self, Action};
use crate::platform::{guard, sys};
use crate::sockets::conn::Connection;
use crate::sockets::registry;
use crate::sockets::socket::Socket;

const POLL_IN: i16 = libc::POLLIN | libc::POLLRDNORM;
/// Readiness the ring cannot take back: the read will report it.
const POLL_FINAL: i16 = libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP | libc::POLLNVAL;
/// The longest sleep while a reader of ours may take the byte a waiter
/// needs (see the module docs).
const SLICE: Duration = Duration::from_millis(1);

/// How long a call may wait.
#[derive(Clone, Copy)]
pub(crate) enum Limit {
    Forever,
    Until(Instant),
}

impl Limit {
    pub(crate) fn ms(ms: c_int) -> Limit {
        if ms < 0 {
            Limit::Forever
        } else {
            Limit::Until(Instant::now() + Duration::from_millis(ms as u64))
        }
    }

    fn after(d: Option<Duration>) -> Limit {
        d.map_or(Limit::Forever, |d| Limit::Until(Instant::now() + d))
    }

    /// A timespec argument; None when the kernel would refuse it (the
    /// real call then says EINVAL).
    pub(crate) fn timespec(ts: Option<timespec>) -> Option<Limit> {
        match ts {
            None => Some(Limit::Forever),
            Some(t) if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) => None,
            Some(t) => Some(Limit::after(Some(Duration::new(
                t.tv_sec as u64,
                t.tv_nsec as u32,
            )))),
        }
    }

    /// select's timeval, normalised as the kernel does (tv_usec may exceed
    /// a second); None when the kernel would refuse it.
    #[allow(clippy::unnecessary_cast)] // time_t and suseconds_t vary by target
    fn timeval(tv: Option<timeval>) -> Option<Limit> {
        let Some(t) = tv else {
            return Some(Limit::Forever);
        };
        let sec = (t.tv_sec as i64).checked_add(t.tv_usec as i64 / 1_000_000)?;
        let usec = t.tv_usec as i64 % 1_000_000;
        if sec < 0 || usec < 0 {
            return None;
        }
        Some(Limit::after(Some(
            Duration::from_secs(sec as u64) + Duration::from_micros(usec as u64),
        )))
    }

    fn left(self) -> Option<Duration> {
        match self {
            Limit::Forever => None,
            Limit::Until(t) => Some(t.saturating_duration_since(Instant::now())),
        }
    }

    pub(crate) fn now(self) -> bool {
        self.left().is_some_and(|d| d.is_zero())
    }

    /// This limit, or `SLICE` from now if sooner and `sliced`.
    pub(crate) fn sliced(self, sliced: bool) -> Limit {
        if !sliced {
            return self;
        }
        let slice = Instant::now() + SLICE;
        match self {
            Limit::Until(t) if t <= slice => self,
            _ => Limit::Until(slice),
        }
    }

    /// Milliseconds for poll/epoll_wait, rounded up (as the kernel does).
    pub(crate) fn left_ms(self) -> c_int {
        match self.left() {
            None => -1,
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int,
        }
    }

    pub(crate) fn left_ts(self) -> Option<timespec> {
        self.left().map(|d| timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        })
    }
}

/// A count the real call returned: errno as libc left it on failure, the
/// caller's on success (our own calls on the way may have changed it).
pub(crate) fn result(n: c_int) -> Action<c_int> {
    if n < 0 {
        Action::Raw(n)
    } else {
        Action::Done(n)
    }
}

pub(crate) fn spin_budget() -> Duration {
    crate::platform::config::get()
        .map_or(Duration::ZERO, |c| Duration::from_micros(c.spin_us.into()))
}

/// Whether spinning can help: not when more threads are runnable than
/// there are CPUs, nor when this process was preempted lately (a spinner
/// would then take the CPU from the thread it waits for). Looked up in /proc/loadavg at most every 10 ms. (That count
/// is the whole host's; the CPUs are those this process may use.)
pub(crate) fn spin_helps() -> bool {
    static CHECKED: AtomicU64 = AtomicU64::new(0);
    static VERDICT: AtomicBool = AtomicBool::new(true);
    // The coarse clock (a few ns, tick resolution) is enough for "10 ms".
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    let now = (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000 + 1;
    let last = CHECKED.load(Ordering::Relaxed);
    // Sandboxed: /proc and getrusage are outside the filter; the last
    // verdict stands.
    if (last != 0 && now.saturating_sub(last) < 10) || crate::platform::sandbox::active() {
        return VERDICT.load(Ordering::Relaxed);
    }
    // One thread looks again; the others use the verdict meanwhile.
    if CHECKED
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return VERDICT.load(Ordering::Relaxed);
    }
    // Preempted twice since the last look, 10 - 20 ms ago: the CPUs are
    // contended (a snapshot of the run queue misses threads that run in
    // short bursts, like a web server's workers and its load generator).
    // An older baseline (no wait for a while, or the first look) only
    // becomes the new one.
    static PREEMPTED: AtomicU64 = AtomicU64::new(0);
    let preempted = sys::involuntary_switches();
    let before = PREEMPTED.swap(preempted, Ordering::Relaxed);
    let recent = last != 0 && now.saturating_sub(last) <= 20;
    let contended = recent && preempted.saturating_sub(before) >= 2;
    let verdict = !contended && runnable_threads().is_none_or(|r| r <= cpus());
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

/// What a spin found.
pub(crate) enum Spun {
    /// A ring has data: answer without sleeping.
    Rings,
    /// The kernel answered (a count after filtering, or -1).
    Kernel(c_int),
    /// No spinning (it could not help, or nobody awaits a reply): sleep.
    Nothing,
    /// The whole budget went by without an answer: sleep, and do not spin
    /// for these connections again until they write (`no_reply_soon`).
    TimedOut,
}

/// Spins while it can help and `worth` says so (a connection awaits a
/// reply), until `ready` (a look at the rings, cheap) or `kernel` (a
/// zero-timeout call, every few rounds; Some when it has an answer).
pub(crate) fn spin(
    limit: Limit,
    worth: bool,
    mut ready: impl FnMut() -> bool,
    mut kernel: impl FnMut(u32) -> Option<c_int>,
) -> Spun {
    let budget = spin_budget();
    if !worth || budget.is_zero() || limit.now() || !spin_helps() {
        return Spun::Nothing;
    }
    let budget = limit.left().map_or(budget, |l| l.min(budget));
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        for _ in 0..16 {
            if ready() {
                return Spun::Rings;
            }
            core::hint::spin_loop();
        }
        round = round.wrapping_add(1);
        if let Some(n) = kernel(round) {
            return Spun::Kernel(n);
        }
        if start.elapsed() >= budget {
            return Spun::TimedOut;
        }
    }
}

/// The connections a wait covers, counted as waiters on them while it
/// lasts (see `Connection::add_waiter`).
struct Waiting {
    conns: Vec<(usize, Arc<Socket>)>,
    /// A reader of ours sleeps taking doorbell bytes on one of them.
    sliced: bool,
}

impl Waiting {
    /// The connections among `fds` (by position) that a read could wait for.
    fn new(fds: impl Iterator<Item = (usize, c_int)>) -> Waiting {
        let conns: Vec<_> = fds
            .filter_map(|(i, fd)| {
                registry::get(fd)
                    .filter(|s| matches!(**s, Socket::Stream(_)))
                    .map(|s| (i, s))
            })
            .collect();
        let mut sliced = false;
        for (_, s) in &conns {
            sliced |= conn(s).add_waiter();
        }
        Waiting { conns, sliced }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Connection)> {
        self.conns.iter().map(|(i, s)| (*i, conn(s)))
    }

    /// Positions of connections readable now (their flags up otherwise).
    fn readable(&self) -> Vec<usize> {
        self.iter()
            .filter(|(_, c)| c.poll_readable())
            .map(|(i, _)| i)
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
trait KernelSet {
    /// The real call: a zero timeout (None), or until `limit` with the
    /// caller's signal mask. Starts from what the caller asked each time.
    fn real(&mut self, limit: Option<Limit>, mask: Option<*const sigset_t>) -> c_int;
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
fn wait_set(
    set: &mut impl KernelSet,
    waiting: &Waiting,
    limit: Limit,
    mask: Option<*const sigset_t>,
) -> Action<c_int> {
    let mut first = true;
    loop {
        let mut ready = waiting.readable();
        if ready.is_empty() && first {
            first = false;
            let spun = spin(
                limit,
                waiting.awaits_reply(),
                || {
                    ready.extend(
                        waiting
                            .iter()
                            .filter(|(_, c)| c.ring_readable())
                            .map(|(k, _)| k),
                    );
                    !ready.is_empty()
                },
                |round| {
                    if !set.ask_kernel(round) {
                        return None;
                    }
                    let n = set.real(None, None);
                    let n = if n > 0 { set.filter(waiting, n) } else { n };
                    (n != 0).then_some(n)
                },
            );
            match spun {
                Spun::Kernel(n) => return result(n),
                Spun::TimedOut => waiting.iter().for_each(|(_, c)| c.no_reply_soon()),
                _ => {}
            }
        }
        if !ready.is_empty() {
            let n = set.real(None, None);
            if n < 0 {
                return Action::Raw(n);
            }
            let mut n = set.filter(waiting, n);
            for k in ready {
                if set.mark_readable(k) {
                    n += 1;
                }
            }
            return Action::Done(n);
        }
        let n = guard::suspended(|| set.real(Some(limit.sliced(waiting.sliced)), mask));
        if n < 0 {
            return Action::Raw(n);
        }
        let n = set.filter(waiting, n);
        if n > 0 || limit.now() {
            return Action::Done(n);
        }
        // Nothing after all (bytes of data already read, or a slice ran
        // out): look at the rings again, and wait on.
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
    if waiting.conns.is_empty() {
        return Action::Pass;
    }
    let only_rings =
        waiting.conns.len() == fds.len() && fds.iter().all(|p| p.events & !POLL_IN == 0);
    wait_set(&mut PollSet { fds, only_rings }, &waiting, limit, mask)
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
    match Limit::timespec(t) {
        Some(limit) => select_sets(nfds, [r, w, e], limit, Some(mask)),
        None => Action::Pass,
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
    if waiting.conns.is_empty() {
        return Action::Pass;
    }
    let mut sets = Sets { nfds, out, asked };
    wait_set(&mut sets, &waiting, limit, mask)
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
