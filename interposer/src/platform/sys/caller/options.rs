//! Socket option values (getsockopt, setsockopt) and ioctl's int.
#![allow(unsafe_code)]

use super::out_buf;
use super::*;
use core::ffi::{c_int, c_void};
use core::marker::PhantomData;

/// getsockopt's `optval`/`optlen`: the room the caller offers, and where
/// the answer goes.
pub(crate) struct OptOut<'call> {
    value: *mut c_void,
    len: *mut libc::socklen_t,
    _call: PhantomData<&'call mut [u8]>,
}

impl OptOut<'_> {
    /// # Safety
    /// getsockopt(2)'s contract: `len` null or valid for reads and writes
    /// of a socklen_t, `value` null or valid for writes of `*len` bytes.
    pub(crate) unsafe fn new<'call>(
        _scope: &'call Scope,
        value: *mut c_void,
        len: *mut libc::socklen_t,
    ) -> OptOut<'call> {
        OptOut {
            value,
            len,
            _call: PhantomData,
        }
    }

    /// `*optlen` as the caller set it (signed: the kernel's rules differ
    /// for negative lengths); EFAULT for a bad pointer.
    pub(crate) fn room(&self) -> Result<c_int, c_int> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::opt_room(self.len) }
    }

    /// Stores `bytes` (as many as `*optlen` has room for) and their count.
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<(), c_int> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::put_opt(self.value, self.len, bytes) }
    }

    /// Lets the kernel answer into the caller's buffer, from `sock`: a
    /// system call, which checks the pointers (EFAULT).
    pub(crate) fn answer_from(
        &self,
        sock: std::os::fd::BorrowedFd<'_>,
        level: c_int,
        name: c_int,
    ) -> Result<(), c_int> {
        // SAFETY: the kernel validates the caller's pointers.
        unsafe { crate::platform::sys::sockopt_get(sock, level, name, self.value, self.len) }
    }

    /// The caller's buffer as far as the kernel filled it: `*optlen` bytes
    /// now, but no more than `room`, the room the caller gave (`room()`
    /// before the kernel's answer), e.g. to adjust what the kernel stored.
    pub(crate) fn buffer(&mut self, room: c_int) -> &mut [u8] {
        let n = self.room().map_or(0, |n| n.clamp(0, room.max(0)) as usize);
        // SAFETY: the constructor's contract: `value` holds `*len` bytes.
        unsafe { out_buf(self.value, n) }
    }
}

/// setsockopt's `optval`/`optlen`.
#[derive(Clone, Copy)]
pub(crate) struct OptIn<'call> {
    value: *const c_void,
    len: libc::socklen_t,
    _call: PhantomData<&'call [u8]>,
}

impl<'call> OptIn<'call> {
    /// # Safety
    /// setsockopt(2)'s contract: `value` null or valid for reads of `len`
    /// bytes (when `len` is not negative as a C int).
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        value: *const c_void,
        len: libc::socklen_t,
    ) -> OptIn<'call> {
        OptIn {
            value,
            len,
            _call: PhantomData,
        }
    }

    /// `optlen` as given.
    pub(crate) fn len(&self) -> libc::socklen_t {
        self.len
    }

    pub(crate) fn is_null(&self) -> bool {
        self.value.is_null()
    }

    /// A copy of the first `n` bytes (at most `optlen`), read as the
    /// kernel reads them: EFAULT for a bad pointer. A caller whose `optlen`
    /// overstates an int option's buffer (the kernel reads only the int) is
    /// taken at the int's 4 bytes.
    pub(crate) fn read(self, n: usize) -> Result<Vec<u8>, c_int> {
        if (self.len as c_int) < 0 || self.value.is_null() {
            return Ok(Vec::new());
        }
        let n = n.min(self.len as usize);
        let mut bytes = vec![0u8; n];
        // SAFETY: the constructor's contract (`value` readable for `len`
        // bytes, and n <= len).
        match unsafe { crate::platform::sys::user_read(self.value.cast(), &mut bytes) } {
            Ok(()) => Ok(bytes),
            Err(e) if n <= 4 => Err(e),
            Err(e) => {
                bytes.truncate(4);
                // SAFETY: as above, fewer bytes.
                unsafe { crate::platform::sys::user_read(self.value.cast(), &mut bytes) }
                    .map_err(|_| e)?;
                Ok(bytes)
            }
        }
    }

    /// Sets the option on `sock` with the caller's buffer, as given (the
    /// kernel checks it).
    pub(crate) fn to_kernel(
        self,
        sock: std::os::fd::BorrowedFd<'_>,
        level: c_int,
        name: c_int,
    ) -> Result<(), c_int> {
        // SAFETY: the kernel validates the caller's pointer.
        unsafe { crate::platform::sys::sockopt_set_raw(sock, level, name, self.value, self.len) }
    }
}

/// ioctl's third argument for requests that store an int through it
/// (FIONREAD).
pub(crate) struct IntOut<'call> {
    p: *mut c_int,
    _call: PhantomData<&'call mut c_int>,
}

impl IntOut<'_> {
    /// # Safety
    /// `p` null or valid for writes of an int, as ioctl(2) requires of the
    /// argument of the request it is used for.
    pub(crate) unsafe fn new<'call>(_scope: &'call Scope, p: *mut c_int) -> IntOut<'call> {
        IntOut {
            p,
            _call: PhantomData,
        }
    }

    /// EFAULT for a null pointer.
    pub(crate) fn put(self, v: c_int) -> Result<(), c_int> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::put_int(self.p, v) }
    }
}
