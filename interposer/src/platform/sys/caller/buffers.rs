//! Data buffers: a buffer, iovecs and msghdrs for reads and writes, the
//! address length recvfrom clears, sendfile's offset.
#![allow(unsafe_code)]

use super::*;
use super::{clear_len, get_off, in_buf, in_iovecs, out_buf, out_iovecs, put_off};
use core::ffi::{c_int, c_void};
use core::marker::PhantomData;
use std::io::{IoSlice, IoSliceMut};

/// A buffer the call reads from (write, send).
#[derive(Clone, Copy)]
pub(crate) struct InBuf<'call> {
    ptr: *const c_void,
    len: usize,
    _call: PhantomData<&'call [u8]>,
}

impl<'call> InBuf<'call> {
    /// # Safety
    /// `ptr` null or valid for reads of `len` bytes while the call runs
    /// (write(2), send(2)).
    pub(crate) unsafe fn new(_scope: &'call Scope, ptr: *const c_void, len: usize) -> InBuf<'call> {
        InBuf {
            ptr,
            len,
            _call: PhantomData,
        }
    }

    /// The bytes; EFAULT for a null pointer with a length, as the kernel.
    pub(crate) fn bytes(self) -> Result<&'call [u8], c_int> {
        if self.ptr.is_null() && self.len > 0 {
            return Err(libc::EFAULT);
        }
        // SAFETY: the constructor's contract.
        Ok(unsafe { in_buf(self.ptr, self.len) })
    }
}

/// A buffer the call writes into (read, recv).
pub(crate) struct OutBuf<'call> {
    ptr: *mut c_void,
    len: usize,
    _call: PhantomData<&'call mut [u8]>,
}

impl<'call> OutBuf<'call> {
    /// # Safety
    /// `ptr` null or valid for writes of `len` bytes while the call runs,
    /// and not otherwise accessed meanwhile (read(2), recv(2)).
    pub(crate) unsafe fn new(_scope: &'call Scope, ptr: *mut c_void, len: usize) -> OutBuf<'call> {
        OutBuf {
            ptr,
            len,
            _call: PhantomData,
        }
    }

    /// The bytes; EFAULT for a null pointer with a length, as the kernel.
    pub(crate) fn bytes(self) -> Result<&'call mut [u8], c_int> {
        if self.ptr.is_null() && self.len > 0 {
            return Err(libc::EFAULT);
        }
        // SAFETY: the constructor's contract.
        Ok(unsafe { out_buf(self.ptr, self.len) })
    }
}

/// The largest iovec count the kernel takes (UIO_MAXIOV).
pub(crate) const IOV_MAX: usize = libc::UIO_MAXIOV as usize;

/// The kernel's checks of an iovec array that slices could not make:
/// more than UIO_MAXIOV, a null array or a null buffer with a length.
///
/// # Safety
/// `iov` null or valid for reading `cnt` iovecs (the call's contract).
unsafe fn checked_iovecs(iov: *const libc::iovec, cnt: usize) -> Result<(), c_int> {
    if cnt > IOV_MAX {
        return Err(libc::EMSGSIZE);
    }
    if cnt == 0 {
        return Ok(());
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    for i in 0..cnt {
        // SAFETY: the caller's contract (valid for `cnt` entries); read
        // unaligned, by value.
        let v = unsafe { core::ptr::read_unaligned(iov.add(i)) };
        if v.iov_base.is_null() && v.iov_len > 0 {
            return Err(libc::EFAULT);
        }
    }
    Ok(())
}

/// An iovec array the call gathers from (writev, sendmsg).
#[derive(Clone, Copy)]
pub(crate) struct InIovecs<'call> {
    iov: *const libc::iovec,
    cnt: usize,
    _call: PhantomData<&'call [u8]>,
}

impl<'call> InIovecs<'call> {
    /// # Safety
    /// `iov` valid for reads of `cnt` iovecs whose buffers are readable
    /// while the call runs, when `cnt` is at most UIO_MAXIOV (writev(2)).
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        iov: *const libc::iovec,
        cnt: usize,
    ) -> InIovecs<'call> {
        InIovecs {
            iov,
            cnt,
            _call: PhantomData,
        }
    }

    /// The iovecs: EMSGSIZE for more than UIO_MAXIOV, EFAULT for a null
    /// array or buffer that has a length (as the kernel).
    pub(crate) fn slices(self) -> Result<&'call [IoSlice<'call>], c_int> {
        // SAFETY: the constructor's contract.
        unsafe { checked_iovecs(self.iov, self.cnt) }?;
        // SAFETY: the constructor's contract, for a count it covers, every
        // entry checked to be non-null where it has a length.
        Ok(unsafe { in_iovecs(self.iov, self.cnt) })
    }
}

/// An iovec array the call scatters into (readv, recvmsg).
pub(crate) struct OutIovecs<'call> {
    iov: *const libc::iovec,
    cnt: usize,
    _call: PhantomData<&'call mut [u8]>,
}

impl<'call> OutIovecs<'call> {
    /// # Safety
    /// `iov` valid for reads of `cnt` iovecs whose buffers are writable
    /// and not otherwise accessed while the call runs, when `cnt` is at
    /// most UIO_MAXIOV (readv(2)).
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        iov: *const libc::iovec,
        cnt: usize,
    ) -> OutIovecs<'call> {
        OutIovecs {
            iov,
            cnt,
            _call: PhantomData,
        }
    }

    /// The iovecs: EMSGSIZE for more than UIO_MAXIOV, EFAULT for a null
    /// array or buffer that has a length (as the kernel).
    pub(crate) fn slices(self) -> Result<&'call mut [IoSliceMut<'call>], c_int> {
        // SAFETY: the constructor's contract.
        unsafe { checked_iovecs(self.iov, self.cnt) }?;
        // SAFETY: the constructor's contract, for a count it covers, every
        // entry checked to be non-null where it has a length.
        Ok(unsafe { out_iovecs(self.iov, self.cnt) })
    }
}

/// A `struct msghdr` given to recvmsg: its iovecs are written, and its
/// name and control lengths and flags cleared, as TCP's recvmsg does.
pub(crate) struct OutMsg<'call> {
    msg: *mut libc::msghdr,
    _call: PhantomData<&'call mut libc::msghdr>,
}

impl<'call> OutMsg<'call> {
    /// # Safety
    /// `msg` null or a valid msghdr, as recvmsg(2) requires.
    pub(crate) unsafe fn new(_scope: &'call Scope, msg: *mut libc::msghdr) -> OutMsg<'call> {
        OutMsg {
            msg,
            _call: PhantomData,
        }
    }

    /// The same msghdr for a longer call lifetime (an entry of a vector
    /// the caller's handle covers).
    pub(super) fn widen<'a>(self) -> OutMsg<'a> {
        OutMsg {
            msg: self.msg,
            _call: PhantomData,
        }
    }

    /// Whether the caller gave room for control data (msg_controllen).
    pub(crate) fn wants_control(&self) -> bool {
        // SAFETY: the constructor's contract: null or a valid msghdr.
        !self.msg.is_null() && unsafe { (*self.msg).msg_controllen } > 0
    }

    /// Its iovecs, and what is left to do once data was read into them
    /// (`OutMsgTail::clear_out`); None for a null msghdr.
    pub(crate) fn parts(self) -> Option<(OutIovecs<'call>, OutMsgTail<'call>)> {
        // SAFETY: the constructor's contract; a valid msghdr's iovecs are
        // valid as recvmsg(2) requires.
        let (iov, cnt) = unsafe { crate::platform::sys::msg_parts(self.msg)? };
        let iovecs = OutIovecs {
            iov,
            cnt,
            _call: PhantomData,
        };
        Some((
            iovecs,
            OutMsgTail {
                msg: self.msg,
                control: false,
                _call: PhantomData,
            },
        ))
    }
}

/// The rest of a recvmsg's msghdr.
pub(crate) struct OutMsgTail<'call> {
    msg: *mut libc::msghdr,
    /// Its control buffer was written (`control_out`).
    control: bool,
    _call: PhantomData<&'call mut libc::msghdr>,
}

impl OutMsgTail<'_> {
    /// After an emulated recvmsg: no peer address, no control data, no
    /// flags.
    pub(crate) fn clear_out(self) {
        // SAFETY: the msghdr was non-null and valid (OutMsg's contract).
        unsafe { crate::platform::sys::msg_clear_out(self.msg) };
    }

    /// After an emulated datagram recvmsg: the sender's address, the
    /// control data `control_out` wrote (else none), `flags` (MSG_TRUNC,
    /// MSG_CTRUNC).
    pub(crate) fn finish_dgram(self, from: Option<std::net::SocketAddr>, flags: c_int) {
        // SAFETY: the msghdr was non-null and valid (OutMsg's contract),
        // its name writable for its length as recvmsg(2) requires.
        unsafe { crate::platform::sys::msg_finish_dgram(self.msg, from, flags, self.control) };
    }

    /// Whether the caller gave room for control data.
    pub(crate) fn wants_control(&self) -> bool {
        // SAFETY: non-null and valid (OutMsg's contract).
        let m = unsafe { &*self.msg };
        !m.msg_control.is_null() && m.msg_controllen > 0
    }

    /// Writes the control buffer with `fill` (given it, possibly empty,
    /// it returns the bytes written and whether cmsgs were cut or left
    /// out); returns that MSG_CTRUNC.
    pub(crate) fn control_out(&mut self, fill: impl FnOnce(&mut [u8]) -> (usize, bool)) -> bool {
        self.control = true;
        // SAFETY: non-null and valid (OutMsg's contract), its control
        // buffer writable for its length as recvmsg(2) requires.
        unsafe { crate::platform::sys::msg_control_out(self.msg, fill) }
    }
}

/// A `struct msghdr` given to sendmsg (its name is not looked at, its
/// control data only for the fds it passes: a connected TCP socket ignores
/// the one and takes none of the other).
#[derive(Clone, Copy)]
pub(crate) struct InMsg<'call> {
    msg: *const libc::msghdr,
    _call: PhantomData<&'call libc::msghdr>,
}

impl<'call> InMsg<'call> {
    /// # Safety
    /// `msg` null or a valid msghdr, as sendmsg(2) requires.
    pub(crate) unsafe fn new(_scope: &'call Scope, msg: *const libc::msghdr) -> InMsg<'call> {
        InMsg {
            msg,
            _call: PhantomData,
        }
    }

    /// The same msghdr for a longer call lifetime (see `OutMsg::widen`).
    pub(super) fn widen<'a>(self) -> InMsg<'a> {
        InMsg {
            msg: self.msg,
            _call: PhantomData,
        }
    }

    /// Its cmsgs (none for a null msghdr or an empty control buffer);
    /// Err(EINVAL) for a malformed one, EFAULT for an unreadable buffer.
    pub(crate) fn cmsgs(self) -> Result<Vec<crate::platform::sys::Cmsg>, c_int> {
        // SAFETY: the constructor's contract; a valid msghdr's control
        // buffer is valid for its length, as sendmsg(2) requires.
        unsafe { crate::platform::sys::msg_cmsgs_in(self.msg) }
    }

    /// Whether it has a control buffer.
    pub(crate) fn has_control(self) -> bool {
        // SAFETY: the constructor's contract: null or a valid msghdr.
        !self.msg.is_null() && unsafe { (*self.msg).msg_controllen } > 0
    }

    /// The real sendmsg(2) of it, with `flags`, on `fd` (a kernel socket
    /// of the library's: sendmmsg's message whose cmsgs are the kernel's):
    /// its result, with errno as libc left it.
    pub(crate) fn send_real(self, fd: c_int, flags: c_int) -> libc::ssize_t {
        // SAFETY: sendmsg(2) with the caller's msghdr (the constructor's
        // contract: null or valid as sendmsg(2) requires) on `fd`. The
        // system call itself: libc's sendmsg would be our own hook, and
        // `platform::real` sits above `sys`.
        unsafe { libc::syscall(libc::SYS_sendmsg, fd, self.msg, flags) as libc::ssize_t }
    }

    /// The fds it passes (SCM_RIGHTS); none for a null msghdr.
    pub(crate) fn rights(self) -> Vec<c_int> {
        // SAFETY: the constructor's contract; a valid msghdr's control
        // buffer is valid for its length, as sendmsg(2) requires.
        unsafe { crate::platform::sys::msg_rights_in(self.msg) }
    }

    /// Its destination address (`msg_name`).
    pub(crate) fn name(self) -> AddrIn<'call> {
        // SAFETY: the constructor's contract.
        let (addr, len) = unsafe { crate::platform::sys::msg_name_in(self.msg) };
        // SAFETY: sendmsg(2): msg_name null or readable for msg_namelen.
        unsafe { AddrIn::inside(addr, len) }
    }

    /// Its iovecs; None for a null msghdr.
    pub(crate) fn iovecs(self) -> Option<InIovecs<'call>> {
        // SAFETY: the constructor's contract; a valid msghdr's iovecs are
        // valid as sendmsg(2) requires.
        let (iov, cnt) = unsafe { crate::platform::sys::msg_iov_in(self.msg)? };
        Some(InIovecs {
            iov,
            cnt,
            _call: PhantomData,
        })
    }
}

/// An address length the call sets (recvfrom's `addrlen`).
pub(crate) struct OutLen<'call> {
    len: *mut libc::socklen_t,
    _call: PhantomData<&'call mut libc::socklen_t>,
}

impl OutLen<'_> {
    /// # Safety
    /// `len` null or valid for writes of a socklen_t (recvfrom(2)).
    pub(crate) unsafe fn new<'call>(
        _scope: &'call Scope,
        len: *mut libc::socklen_t,
    ) -> OutLen<'call> {
        OutLen {
            len,
            _call: PhantomData,
        }
    }

    /// No address: the length becomes 0 (nothing for a null pointer).
    pub(crate) fn clear(self) {
        // SAFETY: the constructor's contract.
        unsafe { clear_len(self.len) }
    }
}

/// sendfile's `offset`: null (the file position is used) or read at the
/// start and written back at the end.
pub(crate) struct FileOffset<'call> {
    p: *mut libc::off_t,
    _call: PhantomData<&'call mut libc::off_t>,
}

impl FileOffset<'_> {
    /// # Safety
    /// `p` null or valid for reads and writes of an off_t (sendfile(2)).
    pub(crate) unsafe fn new<'call>(
        _scope: &'call Scope,
        p: *mut libc::off_t,
    ) -> FileOffset<'call> {
        FileOffset {
            p,
            _call: PhantomData,
        }
    }

    /// The offset (None: null); EINVAL for a negative one.
    pub(crate) fn get(&self) -> Result<Option<u64>, c_int> {
        // SAFETY: the constructor's contract.
        unsafe { get_off(self.p) }
    }

    /// Writes `v` back (nothing for a null pointer).
    pub(crate) fn put(&self, v: u64) {
        if !self.p.is_null() {
            // SAFETY: the constructor's contract.
            unsafe { put_off(self.p, v) }
        }
    }
}
