//! The wait engine that poll, select and epoll_wait share (their sets are
//! in `calls::iomux`): how long a call may wait (`Limit`), whether spinning
//! can help (`spin_helps`, which a `Connection`'s reads ask too), and the
//! wait itself (`wait`): look for readiness the kernel may not know of,
//! spin, then sleep in the kernel, over any `WaitSet`.
//!
//! Speed: before sleeping in the kernel, a wait spins for up to
//! `SHMNET_SPIN_US` — on the rings, and with zero-timeout calls for the
//! kernel's fds — when spinning can help (`spin_helps`, and a connection in
//! the set awaits a reply): a wake-up from sleep costs tens of
//! microseconds on a VM, a spin that sees the data well under one.
//!
//! A handler of the program's that runs while the wait spins ends it with
//! EINTR, as the kernel's wait (decision 48: the program's handlers are
//! wrapped, `handlers::Watch` counts them, no system call); its handler
//! is put off until the wait's answer is made (or before its sleep), and
//! runs then as outside the library, as the kernel runs one after its
//! wait returned. One that interrupts the looks before the spin runs
//! inside the library (its calls on an emulated socket get EIO, as
//! everywhere in the library); the sleep in the kernel is outside.
//!
//! This module knows no socket: `socket` depends on it, not the reverse
//! (connections queued to give back pages reach it through `quiet`, which
//! knows none either).
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libc::{timespec, timeval};

use crate::platform::real::Action;
use crate::platform::sys::handlers::{CallerMask, Watch};
use crate::platform::sys::SigMask;
use crate::platform::{guard, sys};
use crate::sockets::quiet;

/// The longest sleep while a reader of ours may take the byte a waiter
/// needs (see `calls::iomux`).
const SLICE: Duration = Duration::from_millis(1);

/// How long a wait sleeps when the kernel's readiness was another
/// process's (`foreign_readiness`) before it asks again.
const FOREIGN: Duration = Duration::from_millis(10);

std::thread_local! {
    /// The last filter took back readiness that belongs to another
    /// process (a UDP instance a forked process emulated in place).
    static FOREIGN_SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The kernel reported a member readable for another process's sake (a
/// level-triggered report that stays): the wait sleeps `FOREIGN` before
/// it asks again, instead of spinning on it.
pub(crate) fn foreign_readiness() {
    FOREIGN_SEEN.with(|f| f.set(true));
}

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

    /// `d` from now; a timeout too long for the clock (the kernel takes
    /// `{LONG_MAX, 0}`) is forever.
    fn after(d: Option<Duration>) -> Limit {
        d.and_then(|d| Instant::now().checked_add(d))
            .map_or(Limit::Forever, Limit::Until)
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
    pub(crate) fn timeval(tv: Option<timeval>) -> Option<Limit> {
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

    pub(crate) fn left(self) -> Option<Duration> {
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
fn result(n: c_int) -> Action<c_int> {
    if n < 0 {
        Action::Raw(n)
    } else {
        Action::Done(n)
    }
}

fn spin_budget() -> Duration {
    crate::platform::config::get()
        .map_or(Duration::ZERO, |c| Duration::from_micros(c.spin_us.into()))
}

/// Whether a wait may spin at all as far as its budget and time go
/// (`spin_helps` is asked too before it spins).
pub(crate) fn spin_budgeted(limit: Limit) -> bool {
    !spin_budget().is_zero() && !limit.now()
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
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
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

/// Coarse monotonic milliseconds (tick resolution, a few ns to read).
fn coarse_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000
}

/// Until when (coarse ms) the yield before sleeping is off.
static YIELD_OFF_UNTIL: AtomicU64 = AtomicU64::new(0);

/// Whether the one yield before sleeping may help: not with
/// `SHMNET_SPIN_US=0` (the user asked for sleeping at once), nor for 50 ms
/// after a yield that took long (review s30 #1: a CPU-bound neighbour then
/// ran its whole slice, 1.3 ms a request; nginx fell from 33k to 2.4k
/// requests/s beside two `yes` processes).
fn yield_may_help() -> bool {
    !spin_budget().is_zero() && coarse_ms() >= YIELD_OFF_UNTIL.load(Ordering::Relaxed)
}

/// Notes how long a yield took: over 200 µs means another task ran a
/// slice, not our peer a few microseconds.
fn yield_took(d: Duration) {
    if d > Duration::from_micros(200) {
        YIELD_OFF_UNTIL.store(coarse_ms() + 50, Ordering::Relaxed);
    }
}

/// What a call waits on: the kernel's fds (filled in by the real call),
/// among which are emulated connections whose readiness the kernel may not
/// know of (data no doorbell byte announced).
pub(crate) trait WaitSet {
    /// The last look (made when the set was made, then by `look`) found
    /// readiness the kernel may not report.
    fn found(&self) -> bool;
    /// Looks again, after a sleep that ended with nothing.
    fn look(&mut self);
    /// A look at the rings while spinning (cheap); true when one has data
    /// (`found` is then true).
    fn rings_ready(&mut self) -> bool {
        false
    }
    /// Whether a spin is worth it: a connection in the set awaits a reply.
    fn worth_spinning(&self, limit: Limit) -> bool;
    /// Whether a connection in the set awaits a reply (whether or not
    /// spinning may help).
    fn awaits_reply(&self) -> bool {
        false
    }
    /// A spin went its whole budget without an answer: the set's
    /// connections stop counting as awaiting a reply until they write.
    fn no_reply_soon(&self);
    /// The real call: a zero timeout (None), or until `limit` with the
    /// caller's signal mask. Starts from what the caller asked each time.
    fn real(&mut self, limit: Option<Limit>, mask: Option<SigMask<'_>>) -> c_int;
    /// Takes back readability the kernel reported for doorbell bytes of
    /// data already read (`Connection::really_readable`); the new count.
    fn filter(&mut self, n: c_int) -> c_int {
        n
    }
    /// Whether spin round `round` asks the kernel too.
    fn ask_kernel(&self, _round: u32) -> bool {
        true
    }
    /// The answer once `found`: the kernel's, without waiting, with what
    /// the look found added.
    fn answer(&mut self) -> Action<c_int>;
    /// A reader of ours may take the byte a waiter needs: sleep in slices
    /// (`SLICE`) and look between them.
    fn sliced(&self) -> bool;
    /// Whether an empty answer from a sleep stands (otherwise the set looks
    /// again and waits on).
    fn empty_stands(&self) -> bool;
    /// Just before a sleep in the kernel: readiness the kernel cannot
    /// report is made reportable (flags left down are raised); true when
    /// that found some (`found` is then true: the set answers instead).
    fn before_sleep(&mut self) -> bool {
        false
    }
    /// After that sleep (or after `before_sleep` found readiness): what it
    /// made reportable for the sleep alone is taken back (flags go down
    /// again while the caller is busy).
    fn after_sleep(&mut self) {}
    /// The spin ended (whatever it found): flags it took down for its
    /// looks go up again, readiness exact for the kernel's answer that
    /// follows (datagram sockets, `calls::iomux::datagram_spin`).
    fn spin_over(&mut self) {}
}

/// What a spin found.
enum Spun {
    /// A ring has data: answer without sleeping.
    Rings,
    /// The kernel answered (a count after filtering, or -1).
    Kernel(c_int),
    /// No spinning (it could not help, or nobody awaits a reply): sleep.
    Nothing,
    /// The whole budget went by without an answer: sleep, and do not spin
    /// for these connections again until they write (`no_reply_soon`).
    TimedOut,
    /// A handler ran: the wait ends with EINTR.
    Signalled,
}

/// Spins while it can help and `worth` says so (a connection awaits a
/// reply), until the set's rings are ready (a look, cheap) or the kernel
/// answers (a zero-timeout call, every few rounds).
/// A handler that runs meanwhile ends it (`watch`, begun here: decision
/// 47), as it would the kernel's wait.
/// A wait given a mask (ppoll, pselect, epoll_pwait) spins under it
/// (`caller`), as the kernel's waits under it: a signal it unblocks that
/// is pending ends the spin at once, one it blocks does not.
fn spin(
    limit: Limit,
    worth: bool,
    set: &mut impl WaitSet,
    (watch, caller): (&mut Option<Watch>, &mut Option<CallerMask>),
    mask: Option<SigMask<'_>>,
) -> Spun {
    if !worth || !spin_budgeted(limit) {
        return Spun::Nothing;
    }

    // Before `spin_helps`, which may read /proc (a handler that ran while
    // it did would be missed as well).
    let w = watch.insert(Watch::begin());
    // After `begin`: a pending signal the caller's mask unblocks comes now.
    if let Some(m) = mask {
        *caller = Some(CallerMask::set(m.as_ptr()));
    }
    if !spin_helps() {
        return Spun::Nothing;
    }
    let budget = spin_budget();
    let budget = limit.left().map_or(budget, |l| l.min(budget));
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        for _ in 0..16 {
            if set.rings_ready() {
                return Spun::Rings;
            }
            core::hint::spin_loop();
        }
        if w.signalled() {
            return Spun::Signalled;
        }
        round = round.wrapping_add(1);
        if set.ask_kernel(round) {
            let n = set.real(None, None);
            let n = if n > 0 { set.filter(n) } else { n };
            if n != 0 {
                return Spun::Kernel(n);
            }
        }
        if start.elapsed() >= budget {
            return Spun::TimedOut;
        }
    }
}

/// The wait: answer at once if the set's look found readiness, else spin,
/// then sleep in the kernel; an answer the set takes back, or an empty one
/// that does not stand, makes it look again and wait on.
/// `limit`, or the time the first connection queued with `quiet` is due
/// if sooner (and whether it is): the sleep ends then, the due ones are
/// visited, and the wait goes on (decision 27). One relaxed load when the
/// queue is empty.
pub(crate) fn cut_for_quiet(limit: Limit) -> (Limit, bool) {
    let Some(d) = quiet::due_in() else {
        return (limit, false);
    };
    let at = Instant::now() + d;
    match limit {
        Limit::Until(t) if t <= at => (limit, false),
        _ => (Limit::Until(at), true),
    }
}

/// A kernel wait that may sleep: outside the library (`guard::suspended`:
/// a signal handler's calls are the library's, a siglongjmp leaves nothing
/// set) and ended by pthread_cancel (`cancel::sleep`; EINTR then).
pub(crate) fn sleep_in_kernel(real: impl FnOnce() -> c_int) -> c_int {
    guard::suspended(|| {
        crate::platform::cancel::sleep(real).unwrap_or_else(|| {
            sys::set_errno(libc::EINTR);
            -1
        })
    })
}

pub(crate) fn wait(
    set: &mut impl WaitSet,
    limit: Limit,
    mask: Option<SigMask<'_>>,
) -> Action<c_int> {
    // Begun by a spin: a handler that ran since ends the wait with EINTR
    // (up to the sleep: a handler that runs just before it is one that
    // came just before the call, for the kernel's wait too).
    // Dropped after `watch`: handlers put off run under the caller's mask.
    let mut caller = None;
    let mut watch = None;
    wait_watched(set, limit, mask, (&mut watch, &mut caller))
}

fn interrupted() -> Action<c_int> {
    sys::set_errno(libc::EINTR);
    Action::Raw(-1)
}

fn wait_watched(
    set: &mut impl WaitSet,
    limit: Limit,
    mask: Option<SigMask<'_>>,
    (watch, caller): (&mut Option<Watch>, &mut Option<CallerMask>),
) -> Action<c_int> {
    let mut first = true;
    if quiet::due_in().is_some_and(|d| d.is_zero()) {
        quiet::run();
    }
    loop {
        if !set.found() && first {
            first = false;
            let worth = set.worth_spinning(limit);
            let spun = spin(limit, worth, set, (&mut *watch, &mut *caller), mask);
            set.spin_over();
            match spun {
                Spun::Kernel(n) => return result(n),
                Spun::Signalled => return interrupted(),
                Spun::TimedOut => set.no_reply_soon(),
                // No spinning (the CPUs are contended): a reply awaited
                // may come from a peer waiting for a CPU; hand it ours
                // once before sleeping (a sleep costs the peer a doorbell
                // and us the wake-up).
                Spun::Nothing if !limit.now() && yield_may_help() && set.awaits_reply() => {
                    let t = Instant::now();
                    crate::platform::sandbox::yield_cpu();
                    yield_took(t.elapsed());
                    set.rings_ready();
                }
                _ => {}
            }
        }
        if set.found() {
            return set.answer();
        }
        if !limit.now() && set.before_sleep() {
            let answer = set.answer();
            set.after_sleep();
            return answer;
        }
        // Handlers put off run now; one that ran ends the wait.
        if let Some(w) = watch.as_ref() {
            w.stop();
            if w.signalled() {
                return interrupted();
            }
        }
        // The sleep takes the caller's mask itself.
        *caller = None;
        let (sliced, cut) = cut_for_quiet(limit.sliced(set.sliced()));
        let n = sleep_in_kernel(|| set.real(Some(sliced), mask));
        set.after_sleep();
        if n < 0 {
            return Action::Raw(n);
        }
        FOREIGN_SEEN.with(|f| f.set(false));
        let n = set.filter(n);
        if n > 0 || limit.now() || (set.empty_stands() && !cut) {
            return Action::Done(n);
        }
        if FOREIGN_SEEN.with(|f| f.replace(false)) {
            let left = limit.left().map_or(FOREIGN, |l| l.min(FOREIGN));
            std::thread::sleep(left);
        }
        if cut {
            quiet::run();
        }
        // Nothing after all (bytes of data already read, or a slice ran
        // out): look again, and wait on.
        set.look();
    }
}
