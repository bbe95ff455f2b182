//! The `prctl(PR_SET_SECCOMP)` hook, and seccomp(2) through `syscall()`: a
//! process sandboxing itself turns on the restricted data path
//! (`platform::sandbox`, which says what changes), and a filter that does
//! not allow the fd-limit pocket's io_uring calls switches them off.
#![forbid(unsafe_code)]

use core::ffi::{c_int, c_ulong};
use core::sync::atomic::{AtomicU8, Ordering};

use crate::platform::real::Action;
use crate::platform::sys::SeccompProg;
use crate::platform::{sandbox, sys};
use crate::sockets::registry;

/// The `prctl` hook's logic: before PR_SET_SECCOMP goes to the kernel,
/// take what the data path will no longer be allowed to look up, and turn
/// the flag on. Everything else passes through untouched. `prog`: the
/// filter, for PR_SET_SECCOMP with SECCOMP_MODE_FILTER (`abi::decode`).
pub(crate) fn prctl(option: c_int, mode: c_ulong, prog: Option<SeccompProg<'_>>) -> Action<c_int> {
    if option != libc::PR_SET_SECCOMP {
        return Action::Pass;
    }
    // The fd-limit pocket's io_uring calls: none after a filter that may
    // refuse (or kill for) one (decision 58). Switched off before the
    // call, and left off if it fails.
    let refuses_uring = match mode as u32 {
        libc::SECCOMP_MODE_STRICT => true,
        libc::SECCOMP_MODE_FILTER => prog.as_ref().is_none_or(filter_refuses_uring),
        _ => false,
    };
    if refuses_uring {
        crate::platform::pocket::switch_off();
    }
    let level = match mode as u32 {
        libc::SECCOMP_MODE_STRICT => sandbox::STRICT,
        libc::SECCOMP_MODE_FILTER if prog.as_ref().is_none_or(filter_restricts_us) => {
            sandbox::FILTER
        }
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
    let before = sandbox::level();
    if level > before {
        sandbox::set_level(level);
        PENDING.store(before | 0x80, Ordering::Relaxed);
    }
    Action::Pass
}

/// Whether the filter program `prog` (the application's own argument)
/// refuses a call the library makes (`seccomp_filter`); true when it
/// cannot be read or followed (the kernel will say EFAULT or EINVAL for a
/// bad one anyway).
fn filter_restricts_us(prog: &SeccompProg<'_>) -> bool {
    let Some(raw) = prog.instructions() else {
        return true;
    };
    let insns: Vec<crate::platform::seccomp_filter::Insn> = raw
        .iter()
        .map(crate::platform::seccomp_filter::Insn::from_bytes)
        .collect();
    crate::platform::seccomp_filter::restricts_library(&insns)
}

/// Whether `prog` refuses an io_uring call of the pocket's (true when it
/// cannot be read or followed).
fn filter_refuses_uring(prog: &SeccompProg<'_>) -> bool {
    let Some(raw) = prog.instructions() else {
        return true;
    };
    let insns: Vec<crate::platform::seccomp_filter::Insn> = raw
        .iter()
        .map(crate::platform::seccomp_filter::Insn::from_bytes)
        .collect();
    crate::platform::seccomp_filter::refuses_uring(&insns)
}

/// seccomp(2) through libc's syscall() (libseccomp's seccomp_load):
/// SECCOMP_SET_MODE_STRICT and SECCOMP_SET_MODE_FILTER are what
/// prctl(PR_SET_SECCOMP) with that mode is (`prctl`; `seccomp_done`
/// after). Its flags (TSYNC: every thread) change nothing here: the
/// library's state is per process.
pub(crate) fn seccomp(op: u32, prog: Option<SeccompProg<'_>>) -> Action<c_int> {
    match op {
        libc::SECCOMP_SET_MODE_STRICT => {
            prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_STRICT.into(), None)
        }
        libc::SECCOMP_SET_MODE_FILTER => {
            prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER.into(), prog)
        }
        _ => Action::Pass,
    }
}

/// After the real seccomp(2) (`seccomp`, with its `flags`): as
/// `prctl_done`. A filter with SECCOMP_FILTER_FLAG_NEW_LISTENER returns an
/// fd on success; with SECCOMP_FILTER_FLAG_TSYNC alone a positive result
/// is the thread that could not be synchronised: a failure.
pub(crate) fn seccomp_done(result: core::ffi::c_long, op: u32, flags: core::ffi::c_ulong) {
    const TSYNC: core::ffi::c_ulong = 1;
    const NEW_LISTENER: core::ffi::c_ulong = 1 << 3;
    if matches!(
        op,
        libc::SECCOMP_SET_MODE_STRICT | libc::SECCOMP_SET_MODE_FILTER
    ) {
        let failed = result < 0 || (result > 0 && flags & TSYNC != 0 && flags & NEW_LISTENER == 0);
        prctl_done(if failed { -1 } else { 0 }, libc::PR_SET_SECCOMP);
    }
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
        sandbox::set_level(pending & !0x80);
    }
}

/// Done while every call is still allowed: resolve the real functions
/// (dlsym may open files) and rustix's vDSO, remember O_NONBLOCK of every
/// connection and which signals interrupt a wait for good.
fn prepare() {
    crate::platform::real::resolve_all();
    // rustix finds the vDSO on first use, through prctl(PR_GET_AUXV) and
    // /proc/self/auxv: both outside a filter, so now (spin_helps reads the
    // coarse clock).
    let _ = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    let _ = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    registry::for_each_socket(|s| {
        if let Some(c) = s.connection() {
            c.remember_nonblocking();
        }
    });
    // A log line into a regular file past RLIMIT_FSIZE would raise
    // SIGXFSZ: lines are written only if one of the longest would fit
    // now (a pipe or terminal: always).
    let fits = crate::platform::log::fits_now(
        crate::platform::log::destination(),
        crate::platform::log::LINE_MAX,
    );
    sys::handlers::before_sandbox();
    sandbox::remember(sys::signals_without_restart(), fits);
}
