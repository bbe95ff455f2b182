//! The real libc functions: one table of lazily resolved symbols
//! (`lazysym`), made from the hooked-symbol list (`symbols`), with a typed
//! wrapper each (`real::close(...)`), and the decision type every call's
//! logic returns (`Action`).
#![allow(unsafe_code)]
#![allow(dead_code)]

use core::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use core::fmt;

use libc::{
    iovec, mode_t, msghdr, off_t, pid_t, sigset_t, size_t, sockaddr, socklen_t, ssize_t, FILE,
};

use crate::platform::lazysym::LazySym;
use crate::platform::sys;

/// What the logic decided for one call.
pub(crate) enum Action<R> {
    /// Not ours: call the real function with the caller's arguments.
    Pass,
    /// Emulated success: return this, errno restored to the caller's.
    Done(R),
    /// Emulated failure: return -1 with this errno.
    Fail(c_int),
    /// The logic called libc itself: return this with errno as libc left it.
    Raw(R),
}

/// Return types of hooked functions, and how each spells failure.
pub(crate) trait CRet: Copy + PartialEq + fmt::Debug {
    const FAILED: Self;
    /// What a call that succeeded without a value returns (0).
    const SUCCESS: Self;
}

impl CRet for c_int {
    const FAILED: Self = -1;
    const SUCCESS: Self = 0;
}

impl CRet for ssize_t {
    const FAILED: Self = -1;
    const SUCCESS: Self = 0;
}

/// popen.
// `syscall()`'s return (on 64-bit targets a type of its own; c_int on
// 32-bit ones, which already has it).
#[cfg(target_pointer_width = "64")]
impl CRet for c_long {
    const FAILED: Self = -1;
    const SUCCESS: Self = 0;
}

impl CRet for *mut FILE {
    const FAILED: Self = core::ptr::null_mut();
    const SUCCESS: Self = core::ptr::null_mut();
}

/// `void` functions (closefrom) cannot fail.
impl CRet for () {
    const FAILED: Self = ();
    const SUCCESS: Self = ();
}

/// Expands the symbol list into the table and its wrappers.
macro_rules! real_functions {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(; $($va:ident: $vty:ty),+)?) -> $ret:ty
            $(= $sym:literal)? => $logic:path $(, owner $owner:expr)? $(, fresh $fresh:expr)?
            $(, gate $gate:expr)? $(, after $after:expr)?;
    )*) => {

            struct Table {
                $($name: LazySym,)*
            }

            static TABLE: Table = Table {
                $($name: LazySym::new(real_functions!(@cname $name $($sym)?)),)*
            };

            /// Resolve every symbol now (before fork, before a sandbox).
            pub(crate) fn resolve_all() {
                $(let _ = TABLE.$name.get();)*
                resolve_variadic_execs();
            }

            $(
                /// Calls the real function, or fails with ENOSYS if libc lacks it.
                ///
                /// # Safety
                /// The C function's own contract for these arguments.
                pub(crate) unsafe fn $name($($arg: $ty,)* $($($va: $vty),+)?) -> $ret {
                    type Real = real_functions!(@fnty ($($ty),*) ($($($vty),+)?) -> $ret);
                    match TABLE.$name.get() {
                        Some(f) => {
                            // SAFETY: dlsym returned the address of the libc
                            // function of this name, whose C prototype `Real`
                            // spells out.
                            let f = unsafe { core::mem::transmute::<*mut c_void, Real>(f) };
                            // SAFETY: forwarded under the caller's contract.
                            unsafe { f($($arg,)* $($($va),+)?) }
                        }
                        None => {
                            sys::set_errno(libc::ENOSYS);
                            <$ret as CRet>::FAILED
                        }
                    }
                }
            )*
    };
    (@cname $name:ident) => {
        const {
            match core::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(name) => name,
                Err(_) => panic!("symbol name contains NUL"),
            }
        }
    };
    (@cname $name:ident $sym:literal) => {
        const {
            match core::ffi::CStr::from_bytes_with_nul(concat!($sym, "\0").as_bytes()) {
                Ok(name) => name,
                Err(_) => panic!("symbol name contains NUL"),
            }
        }
    };
    (@fnty ($($ty:ty),*) () -> $ret:ty) => { unsafe extern "C-unwind" fn($($ty),*) -> $ret };
    (@fnty ($($ty:ty),*) ($($vty:ty),+) -> $ret:ty) => { unsafe extern "C-unwind" fn($($ty,)* ...) -> $ret };
    (@owner) => { None };
    (@owner $fd:expr) => { Some($fd) };
}

hooked_symbols!(real_functions);

/// The real execl, execlp and execle, called by their trampolines.
static VARIADIC_EXECS: [LazySym; 3] = [
    LazySym::new(c"execl"),
    LazySym::new(c"execlp"),
    LazySym::new(c"execle"),
];

/// Resolves the real variadic exec functions (fork's prepare handler: a
/// child must never need dlsym).
fn resolve_variadic_execs() {
    for sym in &VARIADIC_EXECS {
        let _ = sym.get();
    }
}

/// The real execl (0), execlp (1) or execle (2), if libc has it.
pub(crate) fn variadic_exec(which: usize) -> Option<*mut c_void> {
    VARIADIC_EXECS.get(which).and_then(LazySym::get)
}

/// The real functions that take integers only, as safe calls (no memory
/// crosses: the C contract asks nothing of the caller).
pub(crate) mod ints {
    use core::ffi::{c_int, c_uint};

    pub(crate) fn dup2(old: c_int, new: c_int) -> c_int {
        // SAFETY: dup2 takes two integers; no memory is passed.
        unsafe { super::dup2(old, new) }
    }

    pub(crate) fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
        // SAFETY: dup3 takes three integers; no memory is passed.
        unsafe { super::dup3(old, new, flags) }
    }

    pub(crate) fn close(fd: c_int) -> c_int {
        // SAFETY: close takes an integer only.
        unsafe { super::close(fd) }
    }

    pub(crate) fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
        // SAFETY: close_range takes integers only.
        unsafe { super::close_range(first, last, flags) }
    }
}

/// The real waits and epoll_ctl with the caller's arrays, sets, masks and
/// events, as safe calls: each takes the typed handle (or a slice made
/// from one) whose contract makes the pointer valid, and the kernel checks
/// the rest.
pub(crate) mod waits {
    use core::ffi::c_int;

    use libc::{epoll_event, nfds_t, pollfd, timespec, timeval};

    use crate::platform::sys::{EventIn, FdSet, SigMask};

    fn ts_ptr(ts: Option<&timespec>) -> *const timespec {
        ts.map_or(core::ptr::null(), |t| t as *const _)
    }

    pub(crate) fn poll(fds: &mut [pollfd], timeout: c_int) -> c_int {
        // SAFETY: a valid array of that length.
        unsafe { super::poll(fds.as_mut_ptr(), fds.len() as nfds_t, timeout) }
    }

    pub(crate) fn ppoll(fds: &mut [pollfd], ts: Option<&timespec>, mask: SigMask<'_>) -> c_int {
        // SAFETY: a valid array of that length, our own timeout; the
        // caller's mask under its handle's contract.
        unsafe {
            super::ppoll(
                fds.as_mut_ptr(),
                fds.len() as nfds_t,
                ts_ptr(ts),
                mask.as_ptr(),
            )
        }
    }

    /// The bit count all three sets were made for (EINVAL otherwise: a
    /// larger count would let the kernel write past a set).
    fn nfds_of(sets: &[FdSet<'_>; 3]) -> Option<c_int> {
        let n = sets[0].nfds();
        sets.iter().all(|s| s.nfds() == n).then_some(n)
    }

    fn einval() -> c_int {
        crate::platform::sys::set_errno(libc::EINVAL);
        -1
    }

    pub(crate) fn select(sets: &mut [FdSet<'_>; 3], tv: Option<&mut timeval>) -> c_int {
        let Some(nfds) = nfds_of(sets) else {
            return einval();
        };
        let [r, w, e] = sets;
        let tv = tv.map_or(core::ptr::null_mut(), |t| t as *mut _);
        // SAFETY: the caller's sets under their handles' contract (valid
        // for `nfds` bits, borrowed by no one meanwhile); our own timeout.
        unsafe { super::select(nfds, r.as_ptr(), w.as_ptr(), e.as_ptr(), tv) }
    }

    pub(crate) fn pselect(
        sets: &mut [FdSet<'_>; 3],
        ts: Option<&timespec>,
        mask: SigMask<'_>,
    ) -> c_int {
        let Some(nfds) = nfds_of(sets) else {
            return einval();
        };
        let [r, w, e] = sets;
        // SAFETY: as `select`; the caller's mask under its handle's
        // contract.
        unsafe {
            super::pselect(
                nfds,
                r.as_ptr(),
                w.as_ptr(),
                e.as_ptr(),
                ts_ptr(ts),
                mask.as_ptr(),
            )
        }
    }

    pub(crate) fn epoll_wait(epfd: c_int, out: &mut [epoll_event], timeout: c_int) -> c_int {
        // SAFETY: a valid array of that length.
        unsafe { super::epoll_wait(epfd, out.as_mut_ptr(), out.len() as c_int, timeout) }
    }

    pub(crate) fn epoll_pwait(
        epfd: c_int,
        out: &mut [epoll_event],
        timeout: c_int,
        mask: SigMask<'_>,
    ) -> c_int {
        // SAFETY: a valid array of that length; the caller's mask under its
        // handle's contract.
        unsafe {
            super::epoll_pwait(
                epfd,
                out.as_mut_ptr(),
                out.len() as c_int,
                timeout,
                mask.as_ptr(),
            )
        }
    }

    pub(crate) fn epoll_pwait2(
        epfd: c_int,
        out: &mut [epoll_event],
        ts: Option<&timespec>,
        mask: SigMask<'_>,
    ) -> c_int {
        // SAFETY: a valid array of that length, our own timeout; the
        // caller's mask under its handle's contract.
        unsafe {
            super::epoll_pwait2(
                epfd,
                out.as_mut_ptr(),
                out.len() as c_int,
                ts_ptr(ts),
                mask.as_ptr(),
            )
        }
    }

    /// epoll_ctl with the operation the event was made for.
    pub(crate) fn epoll_ctl(epfd: c_int, fd: c_int, ev: EventIn<'_>) -> c_int {
        // SAFETY: the event under its handle's contract (the caller's for
        // its op, or one of ours); the kernel checks the rest.
        unsafe { super::epoll_ctl(epfd, ev.op(), fd, ev.as_ptr()) }
    }
}
