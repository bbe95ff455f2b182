//! Signals: which ones this thread blocks, which handlers do not restart
//! calls (EINTR or restart after a wait), SIGPIPE as the kernel raises it.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::ptr;

use super::SigMask;

/// After a blocking wait of ours was interrupted by a signal whose handler
/// ran: would the kernel have restarted the call (SA_RESTART)? We cannot
/// tell which signal it was, so: restart unless some signal that this
/// thread does not block has a handler installed without SA_RESTART (then
/// EINTR, which such a program expects; Python installs its handlers so).
/// glibc's internal SIGCANCEL/SIGSETXID (32, 33) are ignored.
pub(crate) fn interrupted_call_restarts() -> bool {
    // Sandboxed: sigaction is outside the filter; the dispositions were
    // taken before it went on.
    let no_restart = if crate::platform::sandbox::active() {
        crate::platform::sandbox::no_restart_signals()
    } else {
        signals_without_restart()
    };
    no_restart & !blocked_signals() == 0
}

/// Signals this thread blocks (bit `n - 1` for signal `n`; all of them if
/// the mask cannot be read). rt_sigprocmask only: allowed in sandboxes.
pub(crate) fn blocked_signals() -> u64 {
    // SAFETY: sigset_t is plain data; pthread_sigmask with a null new set
    // only reads the current mask into our local.
    unsafe {
        let mut mask: libc::sigset_t = core::mem::zeroed();
        if libc::pthread_sigmask(libc::SIG_SETMASK, ptr::null(), &mut mask) != 0 {
            return !0;
        }
        let mut bits = 0u64;
        for sig in 1..=libc::SIGRTMAX().min(64) {
            if libc::sigismember(&mask, sig) == 1 {
                bits |= 1 << (sig - 1);
            }
        }
        bits
    }
}

/// Signals with a handler installed without SA_RESTART (bit `n - 1` for
/// signal `n`). glibc's internal SIGCANCEL/SIGSETXID (32, 33) are left out.
pub(crate) fn signals_without_restart() -> u64 {
    let mut bits = 0u64;
    for sig in 1..=libc::SIGRTMAX().min(64) {
        if sig == 32 || sig == 33 {
            continue;
        }
        if handler_restarts(sig) == Some(false) {
            bits |= 1 << (sig - 1);
        }
    }
    bits
}

/// Sends SIGPIPE to the calling thread, as a write to a closed TCP
/// connection does without MSG_NOSIGNAL.
pub(crate) fn raise_sigpipe() {
    // Sandboxed: tgkill is outside the filter; the call fails with EPIPE
    // alone (docs/compatibility.md).
    if crate::platform::sandbox::active() {
        return;
    }
    // SAFETY: pthread_kill on the calling thread with a valid signal.
    unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGPIPE) };
}

/// Signals the kernel raises for the instruction that faulted: never
/// blocked by a spin (blocked, the kernel would kill the process).
const SYNCHRONOUS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// The catchable asynchronous signals, blocked while the library spins
/// before a wait (decision 45): a handler that ran during the spin would
/// not end the kernel wait that follows, which must return EINTR (poll,
/// select, epoll_wait) or restart as SA_RESTART says (a blocking recv).
/// The kernel wait then takes the caller's mask atomically (`sleep_mask`:
/// ppoll, pselect6, epoll_pwait), or, where no such wait exists (a
/// blocking recv), `end` looks at what came meanwhile. Dropping it puts
/// the caller's mask back (a pending signal's handler runs then).
pub(crate) struct SpinMask {
    /// The thread's mask before the spin.
    old: libc::sigset_t,
}

impl SpinMask {
    /// Blocks the catchable asynchronous signals for a spin (one
    /// rt_sigprocmask). None in a sandbox (its filter may lack the masked
    /// waits) or if the mask cannot be set: the spin runs as before.
    /// glibc's pthread_sigmask leaves SIGCANCEL and SIGSETXID unblocked
    /// (pthread_cancel still ends the spin's wait, `cancel::sleep`).
    pub(crate) fn block() -> Option<SpinMask> {
        if crate::platform::sandbox::active() {
            return None;
        }
        // SAFETY: sigset_t is plain data, filled by sigfillset before use;
        // pthread_sigmask reads our set and writes the old mask into our
        // local.
        unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in SYNCHRONOUS {
                libc::sigdelset(&mut set, sig);
            }
            let mut old: libc::sigset_t = core::mem::zeroed();
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return None;
            }
            Some(SpinMask { old })
        }
    }

    /// The caller's mask, for the kernel wait that follows the spin (it
    /// unblocks what the caller left unblocked, atomically with the wait).
    pub(crate) fn sleep_mask(&self) -> SigMask<'_> {
        SigMask::own(&self.old)
    }

    /// Whether a signal the caller's mask leaves unblocked is pending (its
    /// handler would run once the mask is back). One rt_sigpending.
    pub(crate) fn signal_waiting(&self) -> bool {
        self.delivered().next().is_some()
    }

    /// The signals pending now that the caller's mask leaves unblocked:
    /// their handlers run once the mask is back. One rt_sigpending.
    fn delivered(&self) -> impl Iterator<Item = c_int> + '_ {
        // SAFETY: sigset_t is plain data; sigpending writes into our local.
        let pending = unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            (libc::sigpending(&mut set) == 0).then_some(set)
        };
        (1..=libc::SIGRTMAX().min(64)).filter(move |&sig| {
            // SAFETY: both sets are initialised sigset_ts of ours.
            pending.is_some_and(|p| unsafe {
                libc::sigismember(&p, sig) == 1 && libc::sigismember(&self.old, sig) != 1
            })
        })
    }

    /// After a spin that found nothing, for a wait that takes no mask (a
    /// blocking recv): puts the caller's mask back (a handler for a signal
    /// that came meanwhile runs now) and says how the call goes on, as the
    /// kernel's would have: `Some(true)` a handler ran and the call
    /// restarts (SA_RESTART on every such signal), `Some(false)` EINTR,
    /// None nothing came. One rt_sigpending more than `drop`.
    pub(crate) fn end(self) -> Option<bool> {
        let verdict = self
            .delivered()
            .filter_map(handler_restarts)
            .reduce(|all, r| all && r);
        drop(self);
        verdict
    }
}

impl Drop for SpinMask {
    /// Outside the library (`guard::suspended`): a handler that runs now
    /// may use our sockets, as during a kernel wait. Dropped where no lock
    /// of the library is held.
    fn drop(&mut self) {
        let old = &self.old;
        crate::platform::guard::suspended(|| {
            // SAFETY: our own saved mask, read by pthread_sigmask.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, ptr::null_mut()) };
        });
    }
}

/// Whether signal `sig` has a handler (None: default or ignored, no
/// handler runs), and if so whether it was installed with SA_RESTART.
fn handler_restarts(sig: c_int) -> Option<bool> {
    // SAFETY: sigaction is plain data; a null new action only reads the
    // current one into our local.
    let old = unsafe {
        let mut old: libc::sigaction = core::mem::zeroed();
        if libc::sigaction(sig, ptr::null(), &mut old) != 0 {
            return None;
        }
        old
    };
    let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
    caught.then_some(old.sa_flags & libc::SA_RESTART != 0)
}
