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
//! `read` only when `poll` says bytes are there (`conn::Bell`);
//! O_NONBLOCK and the signal dispositions that decide EINTR or restart are
//! remembered from just before the filter went on (no fcntl, no
//! sigaction); yields become a zero nanosleep (`shmnet_ring::yield_cpu`);
//! the spin heuristics stop looking at /proc and getrusage; SIGPIPE is not
//! raised by the library (no tgkill). New connections, listeners and
//! accepts on shared memory need socket(), sendmsg with fds and memfds:
//! they fail with EACCES (the default mode connects over kernel TCP
//! instead), never with a forbidden call.
//!
//! Seen through the `prctl(PR_SET_SECCOMP)` hook, and seccomp(2) made
//! through libc's `syscall()` (libseccomp) (the flag goes on before
//! the real call, so no call of ours runs unfiltered-then-filtered in
//! between; it goes off again if the call fails). A forked child inherits
//! the flag with its memory, as it inherits the filter. A filter a program
//! was *started* under is not looked for: it was made for whatever runs
//! there (a container runtime's profile, systemd's SystemCallFilter), and
//! treating it as this kind of sandbox would refuse every new connection
//! (the fd-limit io_uring ring looks at /proc/self/status for one:
//! `pocket`).
//! SECCOMP_MODE_STRICT (only read, write, exit, sigreturn) is recorded too:
//! there, data calls on shared-memory connections fail with EACCES, since
//! waiting needs poll or futex.
//!
//! Hot paths look at the flag with one relaxed load (`active`).
#![deny(unsafe_code)]
//!
//! This module holds the state the data path reads; `calls::sandbox` is
//! the prctl hook that sets it.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// Not sandboxed.
pub(crate) const NONE: u8 = 0;
/// A seccomp filter: the restricted data path.
pub(crate) const FILTER: u8 = 1;
/// SECCOMP_MODE_STRICT: no data path at all.
pub(crate) const STRICT: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(NONE);

/// Signals (bit `n - 1` for signal `n`) that had a handler without
/// SA_RESTART when the filter went on (see `sys::interrupted_call_restarts`).
static NO_RESTART: AtomicU64 = AtomicU64::new(0);

static MAY_LOG: AtomicBool = AtomicBool::new(false);

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

/// The level now (`NONE`, `FILTER`, `STRICT`).
pub(crate) fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

pub(crate) fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
    shmnet_ring::set_syscalls_restricted(level != NONE);
}

/// What was true just before the filter went on: the signals whose
/// handlers do not restart calls, and whether a log line fits.
pub(crate) fn remember(no_restart: u64, may_log: bool) {
    NO_RESTART.store(no_restart, Ordering::Relaxed);
    MAY_LOG.store(may_log, Ordering::Relaxed);
}

/// Whether a sandboxed process writes log lines (see `remember`).
pub(crate) fn may_log() -> bool {
    MAY_LOG.load(Ordering::Relaxed)
}

/// The signals remembered by `remember` as not restarting calls.
pub(crate) fn no_restart_signals() -> u64 {
    NO_RESTART.load(Ordering::Relaxed)
}

/// Gives the CPU away for a moment (`sched_yield`, or a zero nanosleep).
#[inline]
pub(crate) fn yield_cpu() {
    shmnet_ring::yield_cpu();
}
