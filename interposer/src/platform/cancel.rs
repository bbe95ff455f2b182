//! Thread cancellation (pthread_cancel) of a thread inside the library
//! (decision 36).
//!
//! glibc cancels a thread by unwinding its stack (`_Unwind_ForcedUnwind`)
//! from a cancellation point: a libc call such as read or poll whose
//! wrapper finds a cancel pending, or SIGCANCEL's handler while the thread
//! sleeps in one. That unwind must never cross the library's Rust frames:
//! `catch_unwind` and `extern "C"` frames abort the process on it ("FATAL:
//! exception not rethrown"). So:
//!
//! 1. the library's own work runs with cancellation disabled (`Hold`): its
//!    libc calls are no cancellation points, and nothing can unwind it;
//! 2. an export that is a cancellation point in glibc acts on a cancel
//!    pending at entry (`test`), as glibc's wrapper does, in the
//!    `extern "C-unwind"` export where nothing is left to drop; so does the
//!    real function a pass-through calls, once the state is restored;
//! 3. a sleep of ours in such a call (`sleep`) must end when the thread is
//!    cancelled. With cancellation deferred, glibc's pthread_cancel only
//!    sets a flag, so it is hooked here (`pthread_cancel`): it notes the
//!    request, stamped (`stamp`: one made before the call began never ends
//!    its sleep), and sends the target glibc's own SIGCANCEL, whose
//!    handler does nothing while cancellation is disabled and whose
//!    arrival ends the sleep with EINTR (SA_RESTART is taken off its
//!    disposition: `sigcancel_interrupts`); a timer repeats it every
//!    millisecond until the sleep is over (`repeat`). The call leaves the library
//!    with EINTR, and the export acts on the cancel (`act`); if nothing is
//!    pending in glibc after all, the call is made again.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering::SeqCst};
use std::cell::Cell;

use crate::platform::lazysym::LazySym;

const ENABLE: c_int = 0;
const DISABLE: c_int = 1;
const DEFERRED: c_int = 0;
/// `Hold::none`: nothing to give back.
const NONE: c_int = -1;
/// The current call may be cancelled in a sleep of ours: it is a
/// cancellation point and the application left cancellation enabled.
const ARMED: u64 = 1;
/// A cancel request ended (or stopped before it began) a sleep of the
/// current call: the export acts on it.
const LEFT: u64 = 2;
/// glibc's SIGCANCEL (`__SIGRTMIN`, below the SIGRTMIN programs see).
const SIGCANCEL: c_int = 32;

extern "C-unwind" {
    fn pthread_testcancel();
    fn pthread_setcancelstate(state: c_int, old: *mut c_int) -> c_int;
    fn pthread_setcanceltype(ty: c_int, old: *mut c_int) -> c_int;
}

thread_local! {
    /// The current call's `ARMED` and `LEFT` bits, and above them
    /// (`<< 2`) the request stamp at its entry (one thread-local: each
    /// access is a `__tls_get_addr` call in a shared library, on every
    /// call).
    static STATE: Cell<u64> = const { Cell::new(0) };
    /// This thread's slot (index + 1; 0: none yet), the fork generation
    /// it was taken in, and the thread's tid then.
    static MINE: Cell<(usize, u32, i32)> = const { Cell::new((0, 0, 0)) };
    /// Gives the slot back at thread exit.
    static RELEASE: Release = const { Release };
}

/// Whether glibc's function of this name is a cancellation point (one the
/// library implements; fcntl's F_SETLKW and the rest pass through).
pub(crate) const fn is_point(name: &str) -> bool {
    const POINTS: &[&str] = &[
        "accept",
        "accept4",
        "connect",
        "read",
        "write",
        "send",
        "recv",
        "sendto",
        "recvfrom",
        "readv",
        "writev",
        "sendmsg",
        "recvmsg",
        "sendmmsg",
        "recvmmsg",
        "__read_chk",
        "__recv_chk",
        "__recvfrom_chk",
        "poll",
        "__poll_chk",
        "ppoll",
        "__ppoll_chk",
        "select",
        "pselect",
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "close",
    ];
    let mut i = 0;
    while i < POINTS.len() {
        if same(POINTS[i].as_bytes(), name.as_bytes()) {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether the export of this name, given an fd that is not the library's,
/// only passes it to the real function (no work of ours that could reach
/// a libc cancellation point first): its cancellation state need not be
/// touched then (`exports::dispatch`).
pub(crate) const fn plain(name: &str) -> bool {
    // Each checks `fdtable::is_owned` first (write and send after
    // `kernel_send`, which does too). Not recvmsg: on a foreign fd with
    // control data it receives itself, with room for carriers
    // (`calls::passing`, decision 67), and may sleep there.
    const PLAIN: &[&str] = &[
        "read",
        "recv",
        "readv",
        "__read_chk",
        "__recv_chk",
        "write",
        "send",
        "writev",
    ];
    let mut i = 0;
    while i < PLAIN.len() {
        if same(PLAIN[i].as_bytes(), name.as_bytes()) {
            return true;
        }
        i += 1;
    }
    false
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The stamp the next pthread_cancel request will get (counted from 1;
/// `wake` takes one after the real pthread_cancel set glibc's flag). A
/// call records it at entry, before `test`: a request stamped below it
/// was made before the call began, and is either acted on by `test` (the
/// flag was set before the stamp was taken) or stale (for an earlier thread with the same pthread_t, or one in the
/// parent before a fork): a stale one never ends a sleep of the call.
#[inline]
pub(crate) fn stamp() -> u64 {
    STAMPS.load(SeqCst)
}

/// Source of request stamps (see `stamp`).
static STAMPS: AtomicU64 = AtomicU64::new(1);

/// Acts on a cancel pending at the entry of a cancellation point, as
/// glibc's wrapper would. Call only where nothing is left to drop.
#[inline]
pub(crate) fn test() {
    // SAFETY: no arguments; it unwinds (forced) only through frames that
    // allow it (the caller's contract).
    unsafe { pthread_testcancel() };
}

/// Cancellation disabled while the library works (see the module docs).
/// No Drop: `release` is called where unwinding, if the application's
/// asynchronous cancellation acts there, has nothing to drop.
pub(crate) struct Hold {
    old: c_int,
}

impl Hold {
    /// `entry`: the call's `stamp()`, taken before its `test` (0: the call
    /// is no cancellation point).
    #[inline]
    pub(crate) fn new(entry: u64) -> Hold {
        let mut old = ENABLE;
        // SAFETY: a valid state and a local for the old one. Disabling
        // never acts on a cancel.
        unsafe { pthread_setcancelstate(DISABLE, &mut old) };
        let state = if entry != 0 && old == ENABLE {
            entry << 2 | ARMED
        } else {
            0
        };
        let _ = STATE.try_with(|s| s.set(state));
        Hold { old }
    }

    /// No change to the application's state: a pass-through call (see
    /// `exports::dispatch`).
    #[inline]
    pub(crate) fn none() -> Hold {
        Hold { old: NONE }
    }

    /// Gives the application its state back, unless a cancel request ended
    /// a sleep (`act` does it then). True in that case.
    #[inline]
    pub(crate) fn release(self) -> bool {
        if self.old == NONE {
            return false;
        }
        let state = STATE.try_with(|s| s.replace(0)).unwrap_or(0);
        if state & LEFT != 0 {
            let _ = STATE.try_with(|s| s.set(LEFT));
            return true;
        }
        if self.old == ENABLE {
            // SAFETY: a valid state. With asynchronous cancellation and a
            // cancel pending, glibc unwinds from here: the caller's frame
            // has nothing to drop.
            unsafe { pthread_setcancelstate(ENABLE, ptr::null_mut()) };
        }
        false
    }
}

/// A cancel request ended a sleep of the current call.
#[inline]
pub(crate) fn left() -> bool {
    bits() & LEFT != 0
}

/// After a call left the library for a cancel request (`left`): enables
/// cancellation again and acts on it (the thread unwinds from here, with
/// glibc's result PTHREAD_CANCELED whatever the cancel type). Returns
/// only if the request was stale (nothing is pending in glibc).
pub(crate) fn act() {
    let _ = STATE.try_with(|s| s.set(0));
    let mut ty = DEFERRED;
    // SAFETY: valid states and types; deferred first, so enabling does not
    // act by itself, and pthread_testcancel sets the thread's result.
    unsafe {
        pthread_setcanceltype(DEFERRED, &mut ty);
        pthread_setcancelstate(ENABLE, ptr::null_mut());
        pthread_testcancel();
        pthread_setcanceltype(ty, ptr::null_mut());
    }
}

/// A thread that may sleep in the library: who, where it sleeps, what was
/// asked of it.
struct Slot {
    /// pthread_t (0: free).
    thread: AtomicU64,
    /// Its tid while it sleeps in `sleep` (0 otherwise).
    sleeping: AtomicI32,
    /// The stamp of the latest pthread_cancel request for it (0: none).
    request: AtomicU64,
    /// A timer sending it SIGCANCEL (`repeat`; -1: none).
    timer: AtomicI32,
}

const SLOTS: usize = 4096;
#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    thread: AtomicU64::new(0),
    sleeping: AtomicI32::new(0),
    request: AtomicU64::new(0),
    timer: AtomicI32::new(-1),
};
static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

/// Requests for threads without a slot (that never slept in the library,
/// or took one after `wake` looked), by a hash of pthread_t: each entry
/// keeps the latest stamp. A thread that takes a slot still finds a
/// request made in between here (one made before its call began is stale,
/// see `stamp`). Nothing is overwritten; a request for another thread
/// with the same hash only makes a call leave for nothing (`act` finds no
/// cancel pending in glibc and the call is made again).
const NOTES: usize = 4096;
#[allow(clippy::declare_interior_mutable_const)]
const BLANK: AtomicU64 = AtomicU64::new(0);
static NOTED: [AtomicU64; NOTES] = [BLANK; NOTES];

fn note_of(thread: u64) -> &'static AtomicU64 {
    // Fibonacci hashing: pthread_t is an address, its low bits alike.
    let h = thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - NOTES.trailing_zeros());
    &NOTED[h as usize % NOTES]
}

fn note(thread: u64, stamp: u64) {
    note_of(thread).fetch_max(stamp, SeqCst);
}

/// A request for `thread` (or one with the same hash) stamped `entry` or
/// later.
fn noted(thread: u64, entry: u64) -> bool {
    note_of(thread).load(SeqCst) >= entry
}

/// A request for this thread stamped at or after the current call's entry.
fn fresh(slot: &Slot) -> bool {
    let entry = bits() >> 2;
    entry != 0 && (slot.request.load(SeqCst) >= entry || noted(self_id(), entry))
}

/// In a fork child: only the forking thread is left, and its sleep (if
/// any) was the parent's. Every slot is freed (the forking thread takes
/// one again at its next sleep).
pub(crate) fn after_fork_child() {
    for slot in &TABLE {
        // Timers are not inherited.
        slot.timer.store(-1, SeqCst);
        slot.request.store(0, SeqCst);
        slot.sleeping.store(0, SeqCst);
        slot.thread.store(0, SeqCst);
    }
}

fn self_id() -> u64 {
    crate::platform::sys::thread_id()
}

/// The slot of `thread`, if it has one.
fn find(thread: u64) -> Option<&'static Slot> {
    TABLE.iter().find(|s| s.thread.load(SeqCst) == thread)
}

/// A free slot, taken for `thread`.
fn claim(thread: u64) -> Option<&'static Slot> {
    TABLE.iter().find(|s| {
        s.thread.load(SeqCst) == 0 && s.thread.compare_exchange(0, thread, SeqCst, SeqCst).is_ok()
    })
}

/// This thread's slot: the one it took in this fork generation, or a free
/// one.
fn mine() -> Option<(&'static Slot, i32)> {
    let generation = crate::platform::fork::generation();
    let (index, taken_in, tid) = MINE.try_with(Cell::get).ok()?;
    if index != 0 && taken_in == generation {
        return Some((TABLE.get(index - 1)?, tid));
    }
    let me = self_id();
    let slot = find(me).or_else(|| claim(me))?;
    let index = TABLE.iter().position(|s| ptr::eq(s, slot))? + 1;
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    let _ = MINE.try_with(|m| m.set((index, generation, tid)));
    let _ = RELEASE.try_with(|_| ());
    Some((slot, tid))
}

/// Frees this thread's slot when it exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let me = self_id();
        if let Some((index, _, _)) = MINE.try_with(Cell::get).ok().filter(|m| m.0 != 0) {
            if let Some(slot) = TABLE.get(index - 1) {
                if slot.thread.load(SeqCst) == me {
                    slot.request.store(0, SeqCst);
                    awake(slot);
                    slot.thread.store(0, SeqCst);
                }
            }
        }
    }
}

/// Runs `sleep`, a system call that a signal ends with EINTR, so that
/// pthread_cancel can end it; None (and no sleep) when a cancel request
/// is already here. Outside an armed call it just runs it.
pub(crate) fn sleep<R>(sleep: impl FnOnce() -> R) -> Option<R> {
    // Sandboxed: gettid may be outside the program's filter (its sleeps
    // are not ended by pthread_cancel, docs/compatibility.md).
    if !armed() || crate::platform::sandbox::active() {
        return Some(sleep());
    }
    // Told to leave already (a caller on the way out may try again).
    if left() {
        return None;
    }
    let Some((slot, tid)) = mine() else {
        return Some(sleep());
    };
    // Published before the request is looked at, as `wake` notes the
    // request before it looks at `sleeping`: one of the two sees the other.
    slot.sleeping.store(tid, SeqCst);
    if fresh(slot) {
        awake(slot);
        leave();
        return None;
    }
    let r = sleep();
    awake(slot);
    // Woken for it (or it came as the sleep ended): the call leaves.
    if fresh(slot) {
        leave();
    }
    Some(r)
}

/// The sleep is over: no longer `sleeping`, then no `repeat` timer (one
/// set by a signal handler before the first store is deleted here).
fn awake(slot: &Slot) {
    slot.sleeping.store(0, SeqCst);
    let timer = slot.timer.swap(-1, SeqCst);
    if timer >= 0 {
        delete(timer);
    }
}

/// Whether the current call must leave for a cancel request (after a
/// sleep ended with EINTR, before it would be restarted).
pub(crate) fn requested() -> bool {
    if left() {
        return true;
    }
    // Sandboxed: gettid (`mine`) may be outside the filter, and `sleep`
    // never waits for a request there.
    if !armed() || crate::platform::sandbox::active() {
        return false;
    }
    let Some((slot, _)) = mine() else {
        return false;
    };
    if fresh(slot) {
        leave();
        return true;
    }
    false
}

/// After a wait of ours ended with EINTR: whether the call restarts it,
/// as the kernel would have (`sys::interrupted_call_restarts`), unless a
/// cancel request ended it (then the call leaves).
pub(crate) fn restarts() -> bool {
    !requested() && crate::platform::sys::interrupted_call_restarts()
}

/// After a spin that found nothing, before a wait that takes no mask:
/// whether a handler that ran meanwhile (`handlers::Watch`) ends the call
/// with EINTR (no SA_RESTART, or a cancel request), as the kernel's
/// blocking call would have ended (decisions 45, 47).
pub(crate) fn spin_interrupted(watch: crate::platform::sys::handlers::Watch) -> bool {
    match watch.end() {
        Some(restarts) => !restarts || requested(),
        None => false,
    }
}

/// Whether the current call may be cancelled in a sleep of ours (its
/// sleeps must then end on a signal, see `sleep`).
pub(crate) fn armed() -> bool {
    bits() & ARMED != 0
}

fn bits() -> u64 {
    STATE.try_with(Cell::get).unwrap_or(0)
}

/// The current call leaves for a cancel request.
fn leave() {
    let _ = STATE.try_with(|s| s.set(s.get() | LEFT));
}

/// After the real pthread_cancel(thread) succeeded: note the request and
/// end the target's sleep in the library, if it is in one. Takes no slot
/// (a thread that never sleeps here would keep it).
fn wake(thread: u64) {
    // Sandboxed: getpid and tgkill may be outside the filter; sleeps there
    // are not ended (docs/compatibility.md).
    if crate::platform::sandbox::active() {
        return;
    }
    // Taken after the real pthread_cancel set glibc's flag: a call whose
    // entry stamp is above it began after that, and its `test` acts.
    let stamp = STAMPS.fetch_add(1, SeqCst);
    let slot = match find(thread) {
        Some(slot) => slot,
        None => {
            note(thread, stamp);
            // It may have taken its slot meanwhile (and missed the note).
            match find(thread) {
                Some(slot) => slot,
                None => return,
            }
        }
    };
    slot.request.fetch_max(stamp, SeqCst);
    let tid = slot.sleeping.load(SeqCst);
    if tid == 0 || slot.thread.load(SeqCst) != thread {
        return;
    }
    let me = thread == self_id();
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    if !me {
        // SAFETY: tgkill with integers: a thread of this process, and the
        // signal glibc itself sends for cancellation (its handler is
        // installed: the real pthread_cancel ran).
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, SIGCANCEL) };
    }
    // That signal may be spent before the sleep's system call begins, or on
    // a signal handler the thread runs (the kernel then restarts the
    // interrupted call if the handler's signal has SA_RESTART), as is any
    // signal a handler cancelling its own thread sends: a timer repeats it
    // until the sleep is over.
    if !repeat(slot, tid) && !me {
        // No timer (timer_create failed): send again for a while.
        for round in 0..300u32 {
            if slot.sleeping.load(SeqCst) != tid || slot.thread.load(SeqCst) != thread {
                return;
            }
            if round < 20 {
                rustix::thread::sched_yield();
            } else {
                let _ = rustix::thread::nanosleep(&rustix::thread::Timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                });
            }
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, SIGCANCEL) };
        }
    }
}

/// Sends thread `tid`, sleeping in `slot`, SIGCANCEL every millisecond
/// until its sleep is over: `awake` deletes the timer (in the thread
/// itself, so the timer never outlives it; glibc's handler ignores a
/// signal that is not SI_TKILL). At most one per slot. False if no timer
/// could be made.
fn repeat(slot: &Slot, tid: i32) -> bool {
    if slot.timer.load(SeqCst) >= 0 {
        return true;
    }
    // SAFETY: sigevent is plain data, zero is a valid start.
    let mut event: libc::sigevent = unsafe { core::mem::zeroed() };
    event.sigev_notify = libc::SIGEV_THREAD_ID;
    event.sigev_signo = SIGCANCEL;
    event.sigev_notify_thread_id = tid;
    let mut timer: c_int = -1;
    // SAFETY: timer_create with our sigevent and a local for the id.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_timer_create,
            libc::CLOCK_MONOTONIC,
            &event,
            &mut timer,
        )
    };
    if rc != 0 {
        return false;
    }
    let ms = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let spec = libc::itimerspec {
        it_interval: ms,
        it_value: ms,
    };
    // SAFETY: timer_settime of the timer just created (not yet published,
    // so nobody else deletes it), with a valid spec.
    unsafe {
        libc::syscall(
            libc::SYS_timer_settime,
            timer,
            0,
            &spec,
            ptr::null_mut::<libc::itimerspec>(),
        )
    };
    if slot
        .timer
        .compare_exchange(-1, timer, SeqCst, SeqCst)
        .is_err()
    {
        // Another hook's timer is already there.
        delete(timer);
        return true;
    }
    // Awake meanwhile (`awake` clears `sleeping` before it takes the
    // timer): if the timer is still there, it is ours to delete; if not,
    // `awake` deleted it.
    if slot.sleeping.load(SeqCst) != tid
        && slot
            .timer
            .compare_exchange(timer, -1, SeqCst, SeqCst)
            .is_ok()
    {
        delete(timer);
    }
    true
}

fn delete(timer: c_int) {
    // SAFETY: timer_delete of a timer id this module created and owns.
    unsafe { libc::syscall(libc::SYS_timer_delete, timer) };
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 alike).
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Takes SA_RESTART off SIGCANCEL's disposition (glibc's handler, mask and
/// other flags kept), so that the SIGCANCEL `wake` sends ends a blocking
/// recv of ours with EINTR, while every other signal keeps the kernel's
/// restart behaviour. glibc 2.34+ sends SIGCANCEL itself only to a thread
/// with asynchronous cancellation enabled, whose handler then unwinds and
/// never returns to the interrupted call; glibc's sigaction refuses
/// SIGCANCEL, so programs do not install their own. Before glibc 2.41 only
/// (`restart_to_strip`). A raw system call:
/// glibc's would refuse it too.
fn sigcancel_interrupts() {
    // Sandboxed: rt_sigaction may be outside the filter (and `wake` sends
    // nothing there).
    if crate::platform::sandbox::active() || !restart_to_strip() {
        return;
    }
    let mut old = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: rt_sigaction reading SIGCANCEL's disposition into our local
    // of the kernel's layout, with the kernel's sigset size (8).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            SIGCANCEL,
            ptr::null::<KernelSigaction>(),
            &mut old as *mut KernelSigaction,
            8usize,
        )
    };
    let caught = old.handler != libc::SIG_DFL && old.handler != libc::SIG_IGN;
    if rc != 0 || !caught || old.flags & libc::SA_RESTART as u64 == 0 {
        return;
    }
    let new = KernelSigaction {
        flags: old.flags & !(libc::SA_RESTART as u64),
        ..old
    };
    // SAFETY: as above, writing back the same disposition less SA_RESTART.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            SIGCANCEL,
            &new as *const KernelSigaction,
            ptr::null_mut::<KernelSigaction>(),
            8usize,
        )
    };
}

/// Whether SA_RESTART is to be taken off SIGCANCEL: glibc before 2.41.
/// From 2.41 (the cancellation rework, BZ #12683) pthread_cancel signals
/// every target with cancellation enabled, deferred too, and relies on
/// SA_RESTART so that a restartable system call that is no cancellation
/// point (flock) does not fail with EINTR; SA_RESTART is kept there, and
/// a sleep of ours that the kernel restarts (a blocking recv) is not
/// ended (docs/compatibility.md; no such glibc was at hand to test).
fn restart_to_strip() -> bool {
    extern "C" {
        fn gnu_get_libc_version() -> *const core::ffi::c_char;
    }
    static STRIP: AtomicI32 = AtomicI32::new(-1);
    let known = STRIP.load(SeqCst);
    if known >= 0 {
        return known == 1;
    }
    // SAFETY: glibc's static version string ("2.36"), no arguments.
    let version = unsafe { core::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    let strip = before_2_41(version.to_bytes());
    STRIP.store(strip as i32, SeqCst);
    strip
}

/// Whether a glibc version string ("2.36", "2.41.9000") is below 2.41.
fn before_2_41(version: &[u8]) -> bool {
    let mut parts = version.split(|&b| b == b'.').map(|p| {
        p.iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0u32, |n, &b| {
                n.saturating_mul(10).saturating_add(u32::from(b - b'0'))
            })
    });
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) < (2, 41)
}

/// `pthread_cancel(thread)`: the real one, then the target's sleep in the
/// library is ended (see the module docs).
///
/// # Safety
/// Called from C under pthread_cancel's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C-unwind" fn pthread_cancel(thread: libc::pthread_t) -> c_int {
    static REAL: LazySym = LazySym::new(c"pthread_cancel");
    let Some(f) = REAL.get() else {
        return libc::ENOSYS;
    };
    // SAFETY: dlsym's address of pthread_cancel, whose prototype this is;
    // it unwinds only when a thread cancels itself asynchronously.
    let real = unsafe {
        core::mem::transmute::<
            *mut core::ffi::c_void,
            unsafe extern "C-unwind" fn(libc::pthread_t) -> c_int,
        >(f)
    };
    // SAFETY: the caller's argument, to the real function.
    let rc = unsafe { real(thread) };
    // After it: it installs the handler at its first call (with
    // SA_RESTART), and another thread's first call may install it again
    // until this call has returned.
    sigcancel_interrupts();
    if rc == 0 {
        // Not a `Hold`: the caller may be a signal handler that
        // interrupted a call of ours, whose bits must stay.
        let saved = crate::platform::sys::errno();
        let mut old = ENABLE;
        // SAFETY: valid states; disabling never acts, and enabling acts
        // only on this thread's own pending asynchronous cancel, with
        // nothing to drop here.
        unsafe { pthread_setcancelstate(DISABLE, &mut old) };
        #[allow(clippy::unnecessary_cast)] // pthread_t is u64 on 64-bit glibc
        wake(thread as u64);
        if old == ENABLE {
            // SAFETY: as above.
            unsafe { pthread_setcancelstate(ENABLE, ptr::null_mut()) };
        }
        crate::platform::sys::set_errno(saved);
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request for a thread without a slot survives any number of later
    /// requests for other threads (a 64-entry ring lost it after 64).
    #[test]
    fn a_noted_request_is_not_overwritten() {
        let target = 0x7f00_dead_b000_u64;
        note(target, 10);
        for i in 0..10_000u64 {
            let other = 0x7f00_0000_0000 + i * 0x80_0000;
            if ptr::eq(note_of(other), note_of(target)) {
                continue;
            }
            note(other, 11 + i);
        }
        assert!(noted(target, 10));
        assert!(!noted(target, 11));
    }

    #[test]
    fn sa_restart_is_stripped_before_glibc_2_41_only() {
        assert!(before_2_41(b"2.36"));
        assert!(before_2_41(b"2.40"));
        assert!(!before_2_41(b"2.41"));
        assert!(!before_2_41(b"2.41.9000"));
        assert!(!before_2_41(b"2.100"));
        assert!(!before_2_41(b"3.0"));
    }
}
