//! What the waits take: signal masks, timeouts, pollfd arrays, fd_sets,
//! epoll event arrays and epoll_ctl's event.
#![allow(unsafe_code)]

use super::*;
use core::ffi::c_int;
use core::marker::PhantomData;

/// A signal mask handed on, as given, to the real ppoll, pselect,
/// epoll_pwait or epoll_pwait2 (never read here: the kernel checks it).
#[derive(Clone, Copy)]
pub(crate) struct SigMask<'call> {
    mask: *const libc::sigset_t,
    _call: PhantomData<&'call libc::sigset_t>,
}

impl<'call> SigMask<'call> {
    /// # Safety
    /// `mask` null or valid for reads of a sigset_t while the call runs
    /// (ppoll(2), pselect(2), epoll_pwait(2)).
    pub(crate) unsafe fn new(_scope: &'call Scope, mask: *const libc::sigset_t) -> SigMask<'call> {
        SigMask {
            mask,
            _call: PhantomData,
        }
    }

    /// The pointer, for the real call (`platform::real::waits`).
    pub(crate) fn as_ptr(self) -> *const libc::sigset_t {
        self.mask
    }
}

/// A timeout the call reads (a timespec or timeval; null: none).
#[derive(Clone, Copy)]
pub(crate) struct TimeIn<'call, T: Copy> {
    t: *const T,
    _call: PhantomData<&'call T>,
}

impl<'call, T: Copy> TimeIn<'call, T> {
    /// # Safety
    /// `t` null or valid for reads of a `T` (ppoll(2), pselect(2),
    /// epoll_pwait2(2)).
    pub(crate) unsafe fn new(_scope: &'call Scope, t: *const T) -> TimeIn<'call, T> {
        TimeIn {
            t,
            _call: PhantomData,
        }
    }

    /// A copy, if given.
    pub(crate) fn get(self) -> Option<T> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::read_opt(self.t) }
    }
}

/// select's timeout: read at the start, the time left written back.
pub(crate) struct TimeInOut<'call> {
    t: *mut libc::timeval,
    _call: PhantomData<&'call mut libc::timeval>,
}

impl<'call> TimeInOut<'call> {
    /// # Safety
    /// select(2)'s contract: `t` null or valid for reads and writes of a
    /// timeval.
    pub(crate) unsafe fn new(_scope: &'call Scope, t: *mut libc::timeval) -> TimeInOut<'call> {
        TimeInOut {
            t,
            _call: PhantomData,
        }
    }

    /// A copy, if given.
    pub(crate) fn get(&self) -> Option<libc::timeval> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::read_opt(self.t) }
    }

    /// Stores `v` (nothing for a null pointer).
    pub(crate) fn put(&self, v: libc::timeval) {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::write_opt(self.t, v) }
    }
}

/// poll's pollfd array.
pub(crate) struct PollFds<'call> {
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    _call: PhantomData<&'call mut [libc::pollfd]>,
}

impl<'call> PollFds<'call> {
    /// # Safety
    /// poll(2)'s contract: `fds` valid for reads and writes of `n` entries
    /// when `n > 0`, and not otherwise accessed while the call runs.
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        fds: *mut libc::pollfd,
        n: libc::nfds_t,
    ) -> PollFds<'call> {
        PollFds {
            fds,
            n,
            _call: PhantomData,
        }
    }

    /// The entries (None: null, empty, or more than poll takes).
    pub(crate) fn entries(self) -> Option<&'call mut [libc::pollfd]> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::pollfds(self.fds, self.n) }
    }
}

/// One of select's fd sets (null: not given), for `nfds` bits.
pub(crate) struct FdSet<'call> {
    set: *mut libc::fd_set,
    nfds: c_int,
    _call: PhantomData<&'call mut libc::fd_set>,
}

impl<'call> FdSet<'call> {
    /// # Safety
    /// select(2)'s contract: `set` null or valid for reads and writes of
    /// `nfds` bits (rounded up to whole words), and not otherwise accessed
    /// while the call runs.
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        set: *mut libc::fd_set,
        nfds: c_int,
    ) -> FdSet<'call> {
        FdSet {
            set,
            nfds,
            _call: PhantomData,
        }
    }

    /// The bit count it was made for.
    pub(crate) fn nfds(&self) -> c_int {
        self.nfds
    }

    /// The words that hold bits 0..nfds, if the set was given (see
    /// `fd_words`).
    pub(crate) fn words(&mut self) -> Option<&mut [core::ffi::c_ulong]> {
        // SAFETY: the constructor's contract; `&mut self` keeps the words
        // borrowed once at a time.
        unsafe { crate::platform::sys::fd_words(self.set, self.nfds) }
    }

    /// The pointer, for the real call (`platform::real::waits`), which
    /// takes `&mut` of the handle so no words are borrowed meanwhile.
    pub(crate) fn as_ptr(&mut self) -> *mut libc::fd_set {
        self.set
    }
}

/// epoll_wait's output array.
pub(crate) struct EpollOut<'call> {
    events: *mut libc::epoll_event,
    max: c_int,
    _call: PhantomData<&'call mut [libc::epoll_event]>,
}

impl<'call> EpollOut<'call> {
    /// # Safety
    /// epoll_wait(2)'s contract: `events` valid for writes of `max`
    /// entries when `max > 0`, and not otherwise accessed while the call
    /// runs.
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        events: *mut libc::epoll_event,
        max: c_int,
    ) -> EpollOut<'call> {
        EpollOut {
            events,
            max,
            _call: PhantomData,
        }
    }

    /// The entries (None: null or no room), as whole packed structs.
    pub(crate) fn entries(self) -> Option<&'call mut [libc::epoll_event]> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::epoll_out(self.events, self.max) }
    }
}

/// epoll_ctl's `event`: read for ADD and MOD, handed on as given.
#[derive(Clone, Copy)]
pub(crate) struct EventIn<'call> {
    ev: *mut libc::epoll_event,
    op: c_int,
    _call: PhantomData<&'call libc::epoll_event>,
}

impl<'call> EventIn<'call> {
    /// # Safety
    /// epoll_ctl(2)'s contract for `op`: for EPOLL_CTL_ADD and
    /// EPOLL_CTL_MOD, `ev` null or valid for reads of an epoll_event.
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        op: c_int,
        ev: *mut libc::epoll_event,
    ) -> EventIn<'call> {
        EventIn {
            ev,
            op,
            _call: PhantomData,
        }
    }

    /// The epoll_ctl operation it was made for.
    pub(crate) fn op(&self) -> c_int {
        self.op
    }

    /// An event of our own, for `op`.
    pub(crate) fn own(op: c_int, ev: &'call mut libc::epoll_event) -> EventIn<'call> {
        EventIn {
            ev,
            op,
            _call: PhantomData,
        }
    }

    fn readable(&self) -> bool {
        !self.ev.is_null() && (self.op == libc::EPOLL_CTL_ADD || self.op == libc::EPOLL_CTL_MOD)
    }

    /// Its `events` only, for ADD and MOD (None: another op, or null).
    pub(crate) fn events(&self) -> Option<u32> {
        if !self.readable() {
            return None;
        }
        // SAFETY: the constructor's contract, for ADD and MOD.
        unsafe { crate::platform::sys::epoll_events(self.ev) }
    }

    /// A copy, for ADD and MOD (None: another op, or null).
    pub(crate) fn get(&self) -> Option<libc::epoll_event> {
        if self.ev.is_null() || (self.op != libc::EPOLL_CTL_ADD && self.op != libc::EPOLL_CTL_MOD) {
            return None;
        }
        // SAFETY: the constructor's contract, for ADD and MOD, not null.
        Some(unsafe { crate::platform::sys::epoll_event_copy(self.ev) })
    }

    /// The pointer, for the real call (`platform::real::waits`).
    pub(crate) fn as_ptr(self) -> *mut libc::epoll_event {
        self.ev
    }
}
