//! The program's signal handlers, wrapped (decision 48): sigaction and
//! signal install our `trampoline` in the kernel in place of a handler;
//! it counts the handlers that ran on this thread and calls the program's
//! with the kernel's arguments. A spin of ours reads the count (no system
//! call) to end with EINTR as the kernel's wait would have, with signals
//! left unblocked (decision 45 blocked them for the spin). A handler that
//! comes while this thread spins, or runs any library code (decision 73),
//! is put off: the signal is queued again to this thread with its siginfo
//! (rt_tgsigqueueinfo) and blocked until the spin's `Watch` is dropped,
//! the thread leaves the library or begins a wait outside it
//! (`putoff`), where no lock of the library is held; the handler runs
//! then, as outside the library (it may use our sockets or siglongjmp
//! out), as decision 45's mask put it off. System calls only when a
//! signal comes.
//!
//! What the program sees is its own: sigaction's old action is the
//! handler and SA_SIGINFO/SA_RESETHAND it gave (the rest of the flags and
//! the mask are the kernel's). SA_RESETHAND is the trampoline's to do
//! (the kernel's would reset before a put-off signal came again): it
//! installs SIG_DFL as the kernel would when the handler runs. The table
//! is one word per signal, swapped without a lock (a fork or a handler's
//! own sigaction waits on nothing), no mask changed. SIG_DFL and SIG_IGN,
//! SIGKILL/SIGSTOP, glibc's SIGCANCEL/SIGSETXID (32, 33) and the
//! synchronous signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS)
//! go to the kernel as they are. Not seen: a handler installed with the
//! raw rt_sigaction system call (Go, static code) or by glibc's own
//! internal calls (siginterrupt's reinstall, posix_spawn's child): its
//! signals end a spin only at its end.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::dlsym_next;
use crate::platform::putoff;

/// Signals 1 - 64.
const SIGNALS: usize = 65;

/// The program's action for each signal, as the kernel's holding our
/// trampoline stands for: its handler in the low 56 bits, `SIGINFO` and
/// `RESETHAND` above (one word, swapped whole: no lock, so a fork or a
/// handler's own sigaction never waits on one). Left as it was when the
/// kernel gets SIG_DFL or SIG_IGN (a delivery already under way runs the
/// handler it came for, as the kernel's); a handler of 0 with the kernel
/// still holding the trampoline: reset on delivery, under way.
static ACTION: [AtomicU64; SIGNALS] = [const { AtomicU64::new(0) }; SIGNALS];
/// The word a reset on delivery took out of `ACTION` (the handler that
/// ran once): what the trampoline stands for if a program that read it
/// past us (raw rt_sigaction) puts it back (review fixes34 #1).
static RESET_FROM: [AtomicU64; SIGNALS] = [const { AtomicU64::new(0) }; SIGNALS];
const HANDLER_BITS: u64 = (1 << 56) - 1;
/// The program asked for SA_SIGINFO (its old action says so).
const SIGINFO: u64 = 1 << 56;
/// The program asked for SA_RESETHAND: the trampoline resets the action
/// when it runs the handler (the kernel holds it without the flag, so that
/// a signal put off is delivered to the trampoline again).
const RESETHAND: u64 = 1 << 57;

/// The table's word for a handler and the program's flags (None: an
/// address that does not fit, left to the kernel unwrapped).
fn pack(handler: usize, flags: c_int) -> Option<u64> {
    let h = handler as u64;
    let mut w = h;
    if flags & libc::SA_SIGINFO != 0 {
        w |= SIGINFO;
    }
    if flags & libc::SA_RESETHAND != 0 {
        w |= RESETHAND;
    }
    (h & !HANDLER_BITS == 0).then_some(w)
}

std::thread_local! {
    /// Handlers that ran on this thread (wrapped ones).
    static HANDLED: AtomicU64 = const { AtomicU64::new(0) };
    /// The signals whose handlers ran since the innermost `Watch` began
    /// (bit `n - 1` for signal `n`).
    static SEEN: AtomicU64 = const { AtomicU64::new(0) };
    /// Reset-on-delivery handlers that ran without SA_RESTART (the
    /// kernel's flags at delivery; its action is SIG_DFL after): the
    /// interrupted call returns EINTR (`take_unrestarted`).
    static UNRESTARTED: AtomicU64 = const { AtomicU64::new(0) };
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
    let Some(slot) = ACTION.get(sig as usize) else {
        return;
    };
    let errno = super::errno();
    let h = loop {
        let a = slot.load(Ordering::Acquire);
        let h = (a & HANDLER_BITS) as usize;
        if !is_handler(h) {
            // Another delivery reset the action (SA_RESETHAND) as this one
            // came: the kernel would have taken the default action.
            default_action(sig, info);
            super::set_errno(errno);
            return;
        }
        let _ = HANDLED.try_with(|n| n.fetch_add(1, Ordering::Relaxed));
        let _ = SEEN.try_with(|s| s.fetch_or(1 << (sig - 1), Ordering::Relaxed));
        // Spinning, or anywhere inside the library (a lock of ours may be
        // held, a structure half-written: a handler that used our sockets
        // could deadlock, one that siglongjmps out would leave the thread
        // inside, every later call EIO).
        if (putoff::spinning() || crate::platform::guard::inside()) && put_off(sig, info, uc) {
            super::set_errno(errno);
            return;
        }
        if a & RESETHAND == 0 {
            break h;
        }
        // Reset on delivery: this delivery takes the handler, any other
        // finds it gone.
        if slot
            .compare_exchange(a, a & !HANDLER_BITS, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            RESET_FROM[sig as usize].store(a, Ordering::Relaxed);
            if !crate::platform::sandbox::active() {
                reset(sig, a);
            }
            break h;
        }
        let _ = HANDLED.try_with(|n| n.fetch_sub(1, Ordering::Relaxed));
    };
    super::set_errno(errno);
    // Outside a spin only (put off otherwise); where it could not be put
    // off (a sandbox, no siginfo) the spin is off while the handler runs,
    // so that nothing is put off from inside it and a jump out of it
    // leaves the thread out of the spin.
    let spinning = putoff::set_spinning(false);
    // SAFETY: `h` is the handler the program installed for `sig`; the
    // kernel's three arguments are passed whether it asked for SA_SIGINFO
    // or not, as the kernel itself does on x86_64 and aarch64 (extra
    // argument registers are ignored by a one-argument function).
    unsafe {
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = core::mem::transmute(h);
        f(sig, info, uc);
    }
    if spinning {
        putoff::set_spinning(true);
    }
}

/// What the kernel does at delivery for SA_RESETHAND: SIG_DFL in its
/// action (flags and mask kept, as sigaction then reads them). Only if it
/// still holds our trampoline; put back if the program installed another
/// handler meanwhile. Notes the kernel's SA_RESTART at delivery.
fn reset(sig: c_int, a: u64) {
    let Some(real) = real_sigaction() else {
        return;
    };
    // SAFETY: sigaction is plain data; our own structs.
    unsafe {
        let mut cur: libc::sigaction = core::mem::zeroed();
        if real(sig, ptr::null(), &mut cur) != 0 || cur.sa_sigaction != ours() {
            return;
        }
        if cur.sa_flags & libc::SA_RESTART == 0 {
            let _ = UNRESTARTED.try_with(|u| u.fetch_or(1 << (sig - 1), Ordering::Relaxed));
        }
        let mut dfl = cur;
        dfl.sa_sigaction = libc::SIG_DFL;
        dfl.sa_flags = (cur.sa_flags & !libc::SA_SIGINFO) | libc::SA_RESETHAND;
        if a & SIGINFO != 0 {
            dfl.sa_flags |= libc::SA_SIGINFO;
        }
        let mut was: libc::sigaction = core::mem::zeroed();
        if real(sig, &dfl, &mut was) == 0
            && (was.sa_sigaction != ours()
                || ACTION[sig as usize].load(Ordering::Acquire) != a & !HANDLER_BITS)
        {
            // An action installed between the read and the reset: a
            // handler (the table changed), or SIG_IGN / SIG_DFL / one not
            // wrapped, which leave the table alone (review fixes34 #2: a
            // SIG_IGN so lost left SIG_DFL, 26 rounds in 2000).
            real(sig, &was, ptr::null_mut());
        }
    }
}

/// A delivery whose handler another delivery took (reset on delivery):
/// the signal again to this thread, where the kernel's action is now
/// SIG_DFL (the default action once it is unblocked).
fn default_action(sig: c_int, info: *mut libc::siginfo_t) {
    if info.is_null() || crate::platform::sandbox::active() {
        return;
    }
    // The kernel must not still run the trampoline for it, or the signal
    // queued again comes back here for ever (a program that put back the
    // trampoline it read past us, raw rt_sigaction, for a signal whose
    // table word is empty; with SA_NODEFER each nested frame until the
    // stack ran out: review fixes34 #1). SIG_DFL there first.
    if let Some(real) = real_sigaction() {
        // SAFETY: sigaction is plain data; our own structs.
        unsafe {
            let mut cur: libc::sigaction = core::mem::zeroed();
            if real(sig, ptr::null(), &mut cur) == 0 && cur.sa_sigaction == ours() {
                cur.sa_sigaction = libc::SIG_DFL;
                cur.sa_flags &= !libc::SA_SIGINFO;
                real(sig, &cur, ptr::null_mut());
            }
        }
    }
    // SAFETY: getpid/gettid take nothing; rt_tgsigqueueinfo reads the
    // siginfo the kernel gave this handler.
    unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            sig,
            info,
        )
    };
}

/// Signals whose reset-on-delivery handlers ran without SA_RESTART since
/// the last look (and forgets them): a blocking call they interrupted
/// returns EINTR.
pub(crate) fn take_unrestarted() -> u64 {
    UNRESTARTED
        .try_with(|u| u.swap(0, Ordering::Relaxed))
        .unwrap_or(0)
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
    put_off_calls(sig, bit, info, uc) && putoff::note(bit)
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

/// sigaction(2) with the program's handler wrapped and its old action
/// unwrapped. No lock and no mask change: the table's word is swapped
/// before the kernel's call (a delivery between runs the new handler, as
/// if the kernel's install had come first), and the kernel orders the
/// installs themselves.
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
    let slot = &ACTION[sig as usize];
    let mut word = None;
    // SAFETY: `act` is null or the caller's readable sigaction.
    let new = unsafe { act.as_ref() }.map(|a| {
        let mut k = *a;
        if a.sa_sigaction == ours() {
            // The trampoline itself, read where we do not see (glibc's
            // internal sigaction, a raw rt_sigaction) and put back: the
            // handler it stands for stays in the table (recorded, the
            // trampoline would call itself until the stack ran out: sweep
            // s34 #1, sigset then signal(prev)), or, if a reset on
            // delivery emptied it, comes back from `RESET_FROM`. (Copied
            // to another signal it stands for that signal's: not known.)
            if slot.load(Ordering::Acquire) & HANDLER_BITS == 0 {
                let last = RESET_FROM[sig as usize].load(Ordering::Relaxed);
                if last & HANDLER_BITS != 0 {
                    word = Some(last);
                }
            }
            k.sa_flags |= libc::SA_SIGINFO;
            if !crate::platform::sandbox::active() {
                k.sa_flags &= !libc::SA_RESETHAND;
            }
        } else if let Some(w) = is_handler(a.sa_sigaction)
            .then(|| pack(a.sa_sigaction, a.sa_flags))
            .flatten()
        {
            word = Some(w);
            k.sa_sigaction = ours();
            k.sa_flags |= libc::SA_SIGINFO;
            // (Sandboxed: the kernel resets, the trampoline could not —
            // its filter may lack rt_sigaction — and puts nothing off.)
            if !crate::platform::sandbox::active() {
                k.sa_flags &= !libc::SA_RESETHAND;
            }
        }
        k
    });
    let prev = word.map(|w| slot.swap(w, Ordering::AcqRel));
    // SAFETY: sigaction is plain data.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: our own structs, or null.
    let r = unsafe { real(sig, new.as_ref().map_or(ptr::null(), |k| k), &mut old) };
    if r != 0 {
        if let (Some(w), Some(p)) = (word, prev) {
            let _ = slot.compare_exchange(w, p, Ordering::AcqRel, Ordering::Relaxed);
        }
        return r;
    }
    if old.sa_sigaction == ours() {
        let a = prev.unwrap_or_else(|| slot.load(Ordering::Acquire));
        old.sa_sigaction = (a & HANDLER_BITS) as usize;
        old.sa_flags &= !(libc::SA_SIGINFO | libc::SA_RESETHAND);
        if a & SIGINFO != 0 {
            old.sa_flags |= libc::SA_SIGINFO;
        }
        if a & RESETHAND != 0 {
            old.sa_flags |= libc::SA_RESETHAND;
        }
    }
    // SAFETY: `oldact` is null or the caller's writable sigaction.
    if let Some(o) = unsafe { oldact.as_mut() } {
        *o = old;
    }
    r
}

/// signal(3) as glibc's (BSD semantics: SA_RESTART, the signal blocked
/// in its handler), through our `sigaction`. (siginterrupt's choice, kept
/// inside glibc, is not seen: SA_RESTART always.) Also bsd_signal and
/// ssignal.
pub(crate) fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    install(sig, handler, libc::SA_RESTART, true)
}

/// sysv_signal(3) (and `__sysv_signal`, what signal is with -std=c99) as
/// glibc's: SA_RESETHAND | SA_NODEFER, no SA_RESTART.
pub(crate) fn sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    install(sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER, false)
}

/// glibc's SIG_HOLD.
const SIG_HOLD: libc::sighandler_t = 2;

/// sigset(3) as glibc's: SIG_HOLD blocks the signal (its action
/// returned, or SIG_HOLD if it was blocked); a disposition is installed
/// (no flags) and the signal unblocked, SIG_HOLD returned if it was
/// blocked. (glibc's installs SIG_ERR as given: so does this.)
pub(crate) fn sigset(sig: c_int, disp: libc::sighandler_t) -> libc::sighandler_t {
    if !(1..SIGNALS as c_int).contains(&sig) {
        super::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    // SAFETY: sigaction and sigset_t are plain data, filled before use;
    // pthread_sigmask reads ours and writes our local.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        let mut was: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigaction = core::mem::zeroed();
        if disp == SIG_HOLD {
            if mask(libc::SIG_BLOCK, &set, &mut was) {
                return libc::SIG_ERR;
            }
            if libc::sigismember(&was, sig) == 1 {
                return SIG_HOLD;
            }
            if sigaction(sig, ptr::null(), &mut old) != 0 {
                return libc::SIG_ERR;
            }
            return old.sa_sigaction;
        }
        let mut act: libc::sigaction = core::mem::zeroed();
        act.sa_sigaction = disp;
        libc::sigemptyset(&mut act.sa_mask);
        if sigaction(sig, &act, &mut old) != 0 || mask(libc::SIG_UNBLOCK, &set, &mut was) {
            return libc::SIG_ERR;
        }
        if libc::sigismember(&was, sig) == 1 {
            SIG_HOLD
        } else {
            old.sa_sigaction
        }
    }
}

/// pthread_sigmask, errno set on failure (true).
fn mask(how: c_int, set: &libc::sigset_t, was: &mut libc::sigset_t) -> bool {
    // SAFETY: our own sigsets.
    let r = unsafe { libc::pthread_sigmask(how, set, was) };
    if r != 0 {
        super::set_errno(r);
    }
    r != 0
}

fn install(
    sig: c_int,
    handler: libc::sighandler_t,
    flags: c_int,
    block_self: bool,
) -> libc::sighandler_t {
    // glibc's checks (SIG_ERR is no disposition).
    if handler == libc::SIG_ERR || !(1..SIGNALS as c_int).contains(&sig) {
        super::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
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

/// Before a seccomp filter goes on: SA_RESETHAND back in the kernel's
/// actions (the trampoline's reset needs rt_sigaction, which the filter
/// may lack).
pub(crate) fn before_sandbox() {
    let Some(real) = real_sigaction() else {
        return;
    };
    for sig in 1..SIGNALS as c_int {
        if !wrappable(sig) || ACTION[sig as usize].load(Ordering::Acquire) & RESETHAND == 0 {
            continue;
        }
        // SAFETY: sigaction is plain data; our own structs.
        unsafe {
            let mut cur: libc::sigaction = core::mem::zeroed();
            if real(sig, ptr::null(), &mut cur) == 0 && cur.sa_sigaction == ours() {
                cur.sa_flags |= libc::SA_RESETHAND;
                real(sig, &cur, ptr::null_mut());
            }
        }
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
        // (Reset handlers that ran before: no verdict of this call's.)
        take_unrestarted();
        Watch {
            start: HANDLED.try_with(|h| h.load(Ordering::Relaxed)).unwrap_or(0),
            outer: SEEN.try_with(|s| s.swap(0, Ordering::Relaxed)).unwrap_or(0),
            was_on: putoff::set_spinning(true),
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
        putoff::set_spinning(self.was_on);
        if self.was_on {
            return;
        }
        let deferred = putoff::take();
        if deferred != 0 {
            // The handlers put off run here (the verdict was made).
            crate::platform::guard::suspended(|| putoff::unblock(deferred));
            take_unrestarted();
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
        // A reset-on-delivery handler that ran (not put off): its action
        // is SIG_DFL now, its SA_RESTART was noted at delivery.
        if seen & take_unrestarted() != 0 {
            return Some(false);
        }
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
        // The thread's own mask is `was` without the signals we blocked
        // to put them off: those are unblocked when they run (`Watch`,
        // `putoff::run`), which may be before this is dropped; the drop
        // must not block them again for good (review sig38 #3: SIGALRM
        // left blocked after ppoll/pselect, 8 of 8 runs).
        CallerMask((r == 0).then_some(was & !putoff::pending()))
    }
}

impl Drop for CallerMask {
    fn drop(&mut self) {
        if let Some(was) = self.0 {
            // Signals still put off stay blocked until they run.
            let was = was | putoff::pending();
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
