//! Signals: which ones this thread blocks, which handlers do not restart
//! calls (EINTR or restart after a wait), SIGPIPE as the kernel raises it.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::ptr;

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
    // A reset-on-delivery handler's action is SIG_DFL after it ran: its
    // SA_RESTART was noted at delivery.
    super::handlers::take_unrestarted() == 0 && no_restart & !blocked_signals() == 0
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

/// Whether signal `sig` has a handler (None: default or ignored, no
/// handler runs), and if so whether it was installed with SA_RESTART.
pub(crate) fn handler_restarts(sig: c_int) -> Option<bool> {
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
