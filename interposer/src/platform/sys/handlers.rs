//! The program's signal handlers, wrapped (decision 48): sigaction and
//! signal install our `trampoline` in the kernel in place of a handler;
//! it counts the handlers that ran on this thread and calls the program's
//! with the kernel's arguments. A spin of ours reads the count (no system
//! call) to end with EINTR as the kernel's wait would have, with signals
//! left unblocked (decision 45 blocked them for the spin). A handler that
//! comes while this thread spins is put off: the signal is queued again
//! to this thread with its siginfo (rt_tgsigqueueinfo) and blocked until
//! the spin's `Watch` is dropped, where no lock of the library is held;
//! the handler runs then, as outside the library (it may use our sockets
//! or siglongjmp out), as decision 45's mask put it off. System calls
//! only when a signal comes.
//!
//! What the program sees is its own: sigaction's old action is the
//! handler and SA_SIGINFO it gave (the rest of the flags and the mask are
//! the kernel's). SIG_DFL and SIG_IGN, SIGKILL/SIGSTOP, glibc's
//! SIGCANCEL/SIGSETXID (32, 33) and the synchronous signals (SIGSEGV,
//! SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS) go to the kernel as they are. Not seen: a
//! handler installed with the raw rt_sigaction system call (Go, static
//! code) or by glibc's own internal calls (sigset, siginterrupt's
//! reinstall, posix_spawn's child): its signals end a spin only at its end.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::cell::Cell;

use super::dlsym_next;

/// Signals 1 - 64.
const SIGNALS: usize = 65;

/// The program's handler for each signal while the kernel holds our
/// trampoline (meaningless otherwise: the kernel's action is read first).
static HANDLER: [AtomicUsize; SIGNALS] = [const { AtomicUsize::new(0) }; SIGNALS];
/// The program's flags (SA_SIGINFO for its old action, SA_RESETHAND).
static FLAGS: [AtomicI32; SIGNALS] = [const { AtomicI32::new(0) }; SIGNALS];
/// One sigaction at a time (its read, install and table update together).
static INSTALLING: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    /// Handlers that ran on this thread (wrapped ones).
    static HANDLED: AtomicU64 = const { AtomicU64::new(0) };
    /// The signals whose handlers ran since the innermost `Watch` began
    /// (bit `n - 1` for signal `n`).
    static SEEN: AtomicU64 = const { AtomicU64::new(0) };
    /// A `Watch` is on: a handler that comes is put off until it ends.
    static SPINNING: Cell<bool> = const { Cell::new(false) };
    /// The signals put off (queued again, blocked): unblocked when the
    /// watch ends.
    static DEFERRED: AtomicU64 = const { AtomicU64::new(0) };
}

type Sigaction = unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

fn real_sigaction() -> Option<Sigaction> {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let mut f = REAL.load(Ordering::Relaxed);
    if f == 0 {
        f = dlsym_next(c"sigaction") as usize;
        REAL.store(f, Ordering::Relaxed);
    }
    // SAFETY: a non-null address dlsym gave for libc's sigaction, whose
    // prototype this is.
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, Sigaction>(f) })
}

/// Signals the kernel raises for the instruction that faulted: left to
/// the kernel as given (a fault is no interruption of a wait; put off, it
/// would fault again blocked and the kernel would kill the process; a
/// JVM's or a garbage collector's SIGSEGV handler stays direct).
const SYNCHRONOUS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Whether a handler for `sig` is ours to wrap.
fn wrappable(sig: c_int) -> bool {
    (1..SIGNALS as c_int).contains(&sig)
        && sig != libc::SIGKILL
        && sig != libc::SIGSTOP
        && sig != 32
        && sig != 33
        && !SYNCHRONOUS.contains(&sig)
}

fn is_handler(h: usize) -> bool {
    h != libc::SIG_DFL && h != libc::SIG_IGN && h != libc::SIG_ERR
}

/// The trampoline's address, as sigaction holds it.
fn ours() -> usize {
    trampoline as *const () as usize
}

/// What the kernel runs for every wrapped signal.
extern "C" fn trampoline(sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    let _ = HANDLED.try_with(|h| h.fetch_add(1, Ordering::Relaxed));
    if (1..SIGNALS as c_int).contains(&sig) {
        let _ = SEEN.try_with(|s| s.fetch_or(1 << (sig - 1), Ordering::Relaxed));
    }
    let h = HANDLER
        .get(sig as usize)
        .map_or(0, |h| h.load(Ordering::Acquire));
    if !is_handler(h) {
        // Changed to SIG_DFL/SIG_IGN as it came: the kernel has that now.
        return;
    }
    // SA_RESETHAND: the kernel has SIG_DFL now; queued again, the signal
    // would take the default action. Such a handler runs here.
    let once = FLAGS
        .get(sig as usize)
        .is_none_or(|f| f.load(Ordering::Relaxed) & libc::SA_RESETHAND != 0);
    if !once && SPINNING.try_with(Cell::get).unwrap_or(false) && put_off(sig, info, uc) {
        return;
    }
    // SAFETY: `h` is the handler the program installed for `sig`; the
    // kernel's three arguments are passed whether it asked for SA_SIGINFO
    // or not, as the kernel itself does on x86_64 and aarch64 (extra
    // argument registers are ignored by a one-argument function).
    let call = || unsafe {
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = core::mem::transmute(h);
        f(sig, info, uc)
    };
    call();
}

/// Puts off a handler that came while this thread spins: the signal
/// blocked (now, and in the mask sigreturn restores), queued again to
/// this thread with its siginfo. False when it could not be (a sandbox's
/// filter, no siginfo): the handler then runs at once.
fn put_off(sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) -> bool {
    // Sandboxed: the filter may lack (or kill for) these calls.
    if info.is_null() || uc.is_null() || crate::platform::sandbox::active() {
        return false;
    }
    let bit = 1u64 << (sig - 1);
    // The interrupted code's errno stays as it was, whatever fails here.
    let errno = super::errno();
    let done = put_off_calls(sig, bit, info, uc);
    super::set_errno(errno);
    if done {
        let _ = DEFERRED.try_with(|d| d.fetch_or(bit, Ordering::Relaxed));
    }
    done
}

fn put_off_calls(sig: c_int, bit: u64, info: *mut libc::siginfo_t, uc: *mut c_void) -> bool {
    // SAFETY: rt_sigprocmask with a kernel sigset (8 bytes) of ours;
    // getpid/gettid take nothing; rt_tgsigqueueinfo reads the siginfo the
    // kernel gave this handler; `uc` is the kernel's ucontext for it,
    // whose uc_sigmask sigreturn restores (glibc's layout is the
    // kernel's up to it).
    unsafe {
        let mut was = 0u64;
        if libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &bit, &mut was, 8) != 0 {
            return false;
        }
        let queued = libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            sig,
            info,
        ) == 0;
        if !queued {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &was,
                ptr::null_mut::<u64>(),
                8,
            );
            return false;
        }
        let uc = uc.cast::<libc::ucontext_t>();
        libc::sigaddset(&mut (*uc).uc_sigmask, sig);
    }
    true
}

/// Blocks every signal for a sigaction of ours (a handler's own sigaction
/// would wait for `INSTALLING` forever); the old mask back on drop.
struct Quiet(libc::sigset_t);

impl Quiet {
    fn new() -> Quiet {
        // SAFETY: plain sigset_ts of ours; pthread_sigmask reads the new
        // set and writes the old one.
        unsafe {
            let mut all: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            Quiet(old)
        }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        // SAFETY: the mask saved by `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, ptr::null_mut()) };
    }
}

/// sigaction(2) with the program's handler wrapped and its old action
/// unwrapped.
///
/// # Safety
/// sigaction's contract: `act` null or readable, `oldact` null or writable.
pub(crate) unsafe fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    oldact: *mut libc::sigaction,
) -> c_int {
    let Some(real) = real_sigaction() else {
        super::set_errno(libc::ENOSYS);
        return -1;
    };
    if !wrappable(sig) {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real(sig, act, oldact) };
    }
    // (Sandboxed: the filter may lack rt_sigprocmask.)
    let _quiet = (!crate::platform::sandbox::active()).then(Quiet::new);
    while INSTALLING
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let prev = (
        HANDLER[sig as usize].load(Ordering::Relaxed),
        FLAGS[sig as usize].load(Ordering::Relaxed),
    );
    // SAFETY: `act` is null or the caller's readable sigaction.
    let new = unsafe { act.as_ref() }.map(|a| {
        let mut k = *a;
        if is_handler(a.sa_sigaction) {
            HANDLER[sig as usize].store(a.sa_sigaction, Ordering::Release);
            FLAGS[sig as usize].store(a.sa_flags, Ordering::Relaxed);
            k.sa_sigaction = ours();
            k.sa_flags |= libc::SA_SIGINFO;
        }
        k
    });
    // SAFETY: sigaction is plain data.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: our own structs, or null.
    let r = unsafe { real(sig, new.as_ref().map_or(ptr::null(), |k| k), &mut old) };
    if r != 0 {
        HANDLER[sig as usize].store(prev.0, Ordering::Release);
        FLAGS[sig as usize].store(prev.1, Ordering::Relaxed);
    } else if old.sa_sigaction == ours() {
        old.sa_sigaction = prev.0;
        old.sa_flags = (old.sa_flags & !libc::SA_SIGINFO) | (prev.1 & libc::SA_SIGINFO);
    }
    INSTALLING.store(false, Ordering::Release);
    if r == 0 {
        // SAFETY: `oldact` is null or the caller's writable sigaction.
        if let Some(o) = unsafe { oldact.as_mut() } {
            *o = old;
        }
    }
    r
}

/// signal(3) as glibc's (BSD semantics: SA_RESTART, the signal blocked
/// in its handler), through our `sigaction`. (siginterrupt's choice, kept
/// inside glibc, is not seen: SA_RESTART always.)
pub(crate) fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    install(sig, handler, libc::SA_RESTART, true)
}

/// sysv_signal(3) as glibc's (SA_RESETHAND | SA_NODEFER, no SA_RESTART).
pub(crate) fn sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    install(sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER, false)
}

fn install(
    sig: c_int,
    handler: libc::sighandler_t,
    flags: c_int,
    block_self: bool,
) -> libc::sighandler_t {
    // SAFETY: sigaction and sigset_t are plain data, filled before use.
    unsafe {
        let mut act: libc::sigaction = core::mem::zeroed();
        act.sa_sigaction = handler;
        libc::sigemptyset(&mut act.sa_mask);
        if block_self && libc::sigaddset(&mut act.sa_mask, sig) != 0 {
            super::set_errno(libc::EINVAL);
            return libc::SIG_ERR;
        }
        act.sa_flags = flags;
        let mut old: libc::sigaction = core::mem::zeroed();
        if sigaction(sig, &act, &mut old) != 0 {
            return libc::SIG_ERR;
        }
        old.sa_sigaction
    }
}

/// At load: handlers installed before us (other libraries' constructors)
/// are wrapped too.
pub(crate) fn wrap_installed() {
    for sig in 1..SIGNALS as c_int {
        if !wrappable(sig) {
            continue;
        }
        // SAFETY: plain data; a null new action only reads.
        unsafe {
            let mut cur: libc::sigaction = core::mem::zeroed();
            if sigaction(sig, ptr::null(), &mut cur) == 0
                && is_handler(cur.sa_sigaction)
                && cur.sa_sigaction != ours()
            {
                sigaction(sig, &cur, ptr::null_mut());
            }
        }
    }
}

/// Watches a spin of ours for handlers that run on this thread (and puts
/// them off until it is dropped).
pub(crate) struct Watch {
    start: u64,
    /// An enclosing watch's signals (a handler's own wait nests).
    outer: u64,
    /// Whether an enclosing watch was on.
    was_on: bool,
}

impl Watch {
    pub(crate) fn begin() -> Watch {
        Watch {
            start: HANDLED.try_with(|h| h.load(Ordering::Relaxed)).unwrap_or(0),
            outer: SEEN.try_with(|s| s.swap(0, Ordering::Relaxed)).unwrap_or(0),
            was_on: SPINNING.try_with(|s| s.replace(true)).unwrap_or(false),
        }
    }

    /// Whether a handler ran (or was put off) on this thread since
    /// `begin`. No system call.
    pub(crate) fn signalled(&self) -> bool {
        HANDLED
            .try_with(|h| h.load(Ordering::Relaxed))
            .is_ok_and(|n| n != self.start)
    }

    /// Handlers put off run now, before a sleep in the kernel (which a
    /// blocked signal would not end); later ones run as they come.
    pub(crate) fn stop(&self) {
        let _ = SPINNING.try_with(|s| s.set(self.was_on));
        if self.was_on {
            return;
        }
        let deferred = DEFERRED
            .try_with(|d| d.swap(0, Ordering::Relaxed))
            .unwrap_or(0);
        if deferred != 0 {
            crate::platform::guard::suspended(|| {
                // SAFETY: a kernel sigset (8 bytes) of ours.
                unsafe {
                    libc::syscall(
                        libc::SYS_rt_sigprocmask,
                        libc::SIG_UNBLOCK,
                        &deferred,
                        ptr::null_mut::<u64>(),
                        8,
                    )
                };
            });
        }
    }

    /// How the call goes on after its spin: `Some(true)` a handler ran and
    /// every one that did has SA_RESTART (the call restarts), `Some(false)`
    /// EINTR, None none ran. sigaction reads only when one ran. The
    /// handlers put off run (`stop`).
    pub(crate) fn end(self) -> Option<bool> {
        if !self.signalled() {
            return None;
        }
        let seen = SEEN.try_with(|s| s.load(Ordering::Relaxed)).unwrap_or(0);
        // Sandboxed: sigaction is outside the filter; the dispositions were
        // taken before it went on.
        if crate::platform::sandbox::active() {
            return Some(seen & crate::platform::sandbox::no_restart_signals() == 0);
        }
        Some(
            (1..SIGNALS as c_int)
                .filter(|&sig| seen & (1 << (sig - 1)) != 0)
                .all(|sig| super::signals::handler_restarts(sig) != Some(false)),
        )
    }
}

impl Drop for Watch {
    /// Where no lock of the library is held.
    fn drop(&mut self) {
        self.stop();
        let outer = self.outer;
        let _ = SEEN.try_with(|s| s.fetch_or(outer, Ordering::Relaxed));
    }
}

/// The caller's mask in effect for a spin, as the kernel's ppoll,
/// pselect and epoll_pwait set it for their whole wait (two
/// rt_sigprocmask, only for a wait given a mask); the thread's own back
/// on drop (after the handlers a `Watch` put off ran under it).
pub(crate) struct CallerMask(Option<u64>);

impl CallerMask {
    /// `mask` null: nothing. A bad pointer: the kernel says EFAULT, and
    /// the spin runs under the thread's mask (the real wait fails so).
    pub(crate) fn set(mask: *const libc::sigset_t) -> CallerMask {
        // Sandboxed: the filter may lack rt_sigprocmask (the spin then
        // runs under the thread's mask, as before decision 48).
        if mask.is_null() || crate::platform::sandbox::active() {
            return CallerMask(None);
        }
        let mut was = 0u64;
        // SAFETY: the kernel reads the caller's 8 bytes (EFAULT if bad);
        // the old mask goes to our local.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                mask,
                &mut was,
                8,
            )
        };
        CallerMask((r == 0).then_some(was))
    }
}

impl Drop for CallerMask {
    fn drop(&mut self) {
        if let Some(was) = self.0 {
            // SAFETY: the mask read by `set`.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigprocmask,
                    libc::SIG_SETMASK,
                    &was,
                    ptr::null_mut::<u64>(),
                    8,
                )
            };
        }
    }
}
