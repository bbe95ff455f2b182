//! Processes that sandbox themselves with a seccomp filter (OpenSSH's
//! pre-authentication child, browsers' renderers, services under a syscall
//! allow-list): from then on the library's data path keeps to the system
//! calls such a filter must let through for the program's own socket I/O
//! — read, write, poll, futex, clock_gettime, nanosleep, close — because a
//! filter kills the process (SIGSYS) on the first call outside its list:
//! "try it and fall back" is not possible.
//!
//! What changes (docs/architecture.md, "Sandboxed processes"): doorbells
//! are rung with `write` after a zero-timeout `poll` for room (never a
//! blocking write, never one that would raise SIGPIPE) and taken with
//! `read` only when `poll` says bytes are there (`socket::Bell`);
//! O_NONBLOCK and the signal dispositions that decide EINTR or restart are
//! remembered from just before the filter went on (no fcntl, no
//! sigaction); yields become a zero nanosleep (`shmnet_ring::yield_cpu`);
//! the spin heuristics stop looking at /proc and getrusage; SIGPIPE is not
//! raised by the library (no tgkill). New connections, listeners and
//! accepts on shared memory need socket(), sendmsg with fds and memfds:
//! they fail with EACCES (the default mode connects over kernel TCP
//! instead), never with a forbidden call.
//!
//! Seen through the `prctl(PR_SET_SECCOMP)` hook (the flag goes on before
//! the real call, so no call of ours runs unfiltered-then-filtered in
//! between; it goes off again if the call fails). A forked child inherits
//! the flag with its memory, as it inherits the filter. A filter a program
//! was *started* under is not looked for: it was made for whatever runs
//! there (a container runtime's profile, systemd's SystemCallFilter), and
//! treating it as this kind of sandbox would refuse every new connection.
//! SECCOMP_MODE_STRICT (only read, write, exit, sigreturn) is recorded too:
//! there, data calls on shared-memory connections fail with EACCES, since
//! waiting needs poll or futex.
//!
//! Hot paths look at the flag with one relaxed load (`active`).
#![deny(unsafe_code)]

use core::ffi::{c_int, c_ulong};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::hooks::Action;
use crate::socket::Socket;
use crate::{registry, sys};

/// Not sandboxed.
const NONE: u8 = 0;
/// A seccomp filter: the restricted data path.
const FILTER: u8 = 1;
/// SECCOMP_MODE_STRICT: no data path at all.
const STRICT: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(NONE);

/// Signals (bit `n - 1` for signal `n`) that had a handler without
/// SA_RESTART when the filter went on (see `interrupted_call_restarts`).
static NO_RESTART: AtomicU64 = AtomicU64::new(0);

/// Whether this process restricted its system calls (either mode).
#[inline]
pub(crate) fn active() -> bool {
    LEVEL.load(Ordering::Relaxed) != NONE
}

/// SECCOMP_MODE_STRICT: the library cannot wait, nor ring a doorbell
/// safely; data calls on its connections fail with EACCES.
#[inline]
pub(crate) fn strict() -> bool {
    LEVEL.load(Ordering::Relaxed) == STRICT
}

fn set(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
    shmnet_ring::set_syscalls_restricted(level != NONE);
}

/// The `prctl` hook's logic: before PR_SET_SECCOMP goes to the kernel,
/// take what the data path will no longer be allowed to look up, and turn
/// the flag on. Everything else passes through untouched.
pub(crate) fn prctl(
    option: c_int,
    mode: c_ulong,
    prog: c_ulong,
    _a4: c_ulong,
    _a5: c_ulong,
) -> Action<c_int> {
    if option != libc::PR_SET_SECCOMP {
        return Action::Pass;
    }
    let level = match mode as u32 {
        libc::SECCOMP_MODE_STRICT => STRICT,
        libc::SECCOMP_MODE_FILTER if filter_restricts_us(prog as usize as *const u8) => FILTER,
        libc::SECCOMP_MODE_FILTER => {
            // Nothing the library calls is refused (a denylist of
            // dangerous calls, an allow-all filter): nothing changes.
            log!(
                debug,
                "prctl(PR_SET_SECCOMP): the filter allows the library's calls"
            );
            return Action::Pass;
        }
        _ => return Action::Pass, // the kernel says EINVAL
    };
    prepare();
    let before = LEVEL.load(Ordering::Relaxed);
    if level > before {
        set(level);
        PENDING.store(before | 0x80, Ordering::Relaxed);
    }
    Action::Pass
}

/// Whether the `struct sock_fprog` at `prog` (the application's own
/// argument) refuses a call the library makes (`seccomp_filter`); true
/// when it cannot be read or followed (the kernel will say EFAULT or
/// EINVAL for a bad one anyway).
fn filter_restricts_us(prog: *const u8) -> bool {
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    let mut head = [0u8; 16];
    if sys::user_read(prog, &mut head).is_err() {
        return true;
    }
    let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
    let mut at = [0u8; 8];
    at.copy_from_slice(&head[8..16]);
    let filter = usize::from_ne_bytes(at) as *const u8;
    // BPF_MAXINSNS.
    if len == 0 || len > 4096 {
        return true;
    }
    let mut raw = vec![0u8; len * 8];
    if sys::user_read(filter, &mut raw).is_err() {
        return true;
    }
    let insns: Vec<crate::seccomp_filter::Insn> = raw
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            crate::seccomp_filter::Insn::from_bytes(&b)
        })
        .collect();
    crate::seccomp_filter::restricts_library(&insns)
}

/// The level before a PR_SET_SECCOMP in progress (high bit: one is).
static PENDING: AtomicU8 = AtomicU8::new(0);

/// After the real prctl: a refused PR_SET_SECCOMP (no seccomp in the
/// kernel, no NO_NEW_PRIVS, a bad program) leaves the process as it was.
pub(crate) fn prctl_done(result: c_int, option: c_int) {
    if option != libc::PR_SET_SECCOMP {
        return;
    }
    let pending = PENDING.swap(0, Ordering::Relaxed);
    if result != 0 && pending & 0x80 != 0 {
        set(pending & !0x80);
    }
}

/// Done while every call is still allowed: resolve the real functions
/// (dlsym may open files) and rustix's vDSO, remember O_NONBLOCK of every
/// connection and which signals interrupt a wait for good.
fn prepare() {
    crate::hooks::real::resolve_all();
    // rustix finds the vDSO on first use, through prctl(PR_GET_AUXV) and
    // /proc/self/auxv: both outside a filter, so now (spin_helps reads the
    // coarse clock).
    let _ = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    let _ = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    registry::for_each_socket(|s| {
        if let Socket::Stream(c) = &**s {
            c.remember_nonblocking();
        }
    });
    NO_RESTART.store(sys::signals_without_restart(), Ordering::Relaxed);
    // A log line into a regular file past RLIMIT_FSIZE would raise
    // SIGXFSZ: lines are written only if one of the longest would fit
    // now (a pipe or terminal: always).
    let fits = crate::log::fits_now(crate::log::destination(), crate::log::LINE_MAX);
    MAY_LOG.store(fits, Ordering::Relaxed);
}

static MAY_LOG: AtomicBool = AtomicBool::new(false);

/// Whether a sandboxed process writes log lines (see `prepare`).
pub(crate) fn may_log() -> bool {
    MAY_LOG.load(Ordering::Relaxed)
}

/// Whether a wait interrupted by a signal restarts (every unblocked signal
/// with a handler has SA_RESTART), from the dispositions remembered when
/// the filter went on (sigaction is outside such filters; the signal mask
/// is read with rt_sigprocmask, which they allow).
pub(crate) fn interrupted_call_restarts() -> bool {
    NO_RESTART.load(Ordering::Relaxed) & !sys::blocked_signals() == 0
}

/// Gives the CPU away for a moment (`sched_yield`, or a zero nanosleep).
#[inline]
pub(crate) fn yield_cpu() {
    shmnet_ring::yield_cpu();
}
