//! Socket addresses in (bind, connect) and out (accept, getsockname,
//! getpeername).
#![allow(unsafe_code)]

use super::*;
use core::ffi::c_int;
use core::marker::PhantomData;

/// A socket address the caller gives (bind, connect).
#[derive(Clone, Copy)]
pub(crate) struct AddrIn<'call> {
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    _call: PhantomData<&'call ()>,
}

impl AddrIn<'_> {
    /// # Safety
    /// bind(2)/connect(2)'s contract: `addr` null or valid for reads of
    /// `len` bytes.
    pub(crate) unsafe fn new<'call>(
        _scope: &'call Scope,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
    ) -> AddrIn<'call> {
        AddrIn {
            addr,
            len,
            _call: PhantomData,
        }
    }

    /// The IPv4 or IPv6 address it holds (None: another family, too
    /// short, null).
    pub(crate) fn get(&self) -> Option<std::net::SocketAddr> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::socket_addr(self.addr, self.len) }
    }

    /// The length the caller gave.
    pub(crate) fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// As `get`, read with a plain copy: a send's destination on a
    /// datagram socket of ours (the hot path; `socket_addr_trusted`), and
    /// a pristine UDP socket's send or connect (decision 64). A bad
    /// pointer faults here where the kernel would say EFAULT, as a bad
    /// data buffer does: the constructor's contract (sendto(2)'s,
    /// connect(2)'s) is the caller's to keep, as in libc.
    pub(crate) fn dest(&self) -> Option<std::net::SocketAddr> {
        // SAFETY: the constructor's contract, sendto(2)/sendmsg(2)'s:
        // `addr` null or valid for reads of `len` bytes for the call.
        unsafe { crate::platform::sys::socket_addr_trusted(self.addr, self.len) }
    }

    /// An address inside a structure a call's handle already covers (a
    /// msghdr's name), for that handle's lifetime.
    ///
    /// # Safety
    /// As `new`.
    pub(super) unsafe fn inside<'call>(
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
    ) -> AddrIn<'call> {
        AddrIn {
            addr,
            len,
            _call: PhantomData,
        }
    }

    /// Its family (None: null or too short to have one).
    pub(crate) fn family(&self) -> Option<c_int> {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::socket_family(self.addr, self.len) }
    }

    /// Whether no address was given (sendto's null destination).
    pub(crate) fn is_null(&self) -> bool {
        self.addr.is_null()
    }
}

/// Where the call stores a socket address and its length (accept,
/// getsockname, getpeername).
#[derive(Clone, Copy)]
pub(crate) struct AddrOut<'call> {
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    _call: PhantomData<&'call ()>,
}

impl AddrOut<'_> {
    /// # Safety
    /// accept(2)/getsockname(2)'s contract: each pointer null or valid, and
    /// `addr` writable for `*len` bytes.
    pub(crate) unsafe fn new<'call>(
        _scope: &'call Scope,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    ) -> AddrOut<'call> {
        AddrOut {
            addr,
            len,
            _call: PhantomData,
        }
    }

    /// `*len` as the caller set it: EFAULT for a bad pointer, EINVAL for
    /// a negative length (as the kernel's getsockname and accept).
    pub(crate) fn room(&self) -> Result<(), c_int> {
        let mut raw = [0u8; 4];
        // SAFETY: the constructor's contract (`len` readable).
        unsafe { crate::platform::sys::user_read(self.len.cast::<u8>(), &mut raw) }?;
        if c_int::from_ne_bytes(raw) < 0 {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    /// Whether either pointer is null (nothing is stored then).
    pub(crate) fn is_null(&self) -> bool {
        self.addr.is_null() || self.len.is_null()
    }

    /// Stores `name`, truncated to the room `*len` gives, and its full
    /// length, as the kernel does.
    pub(crate) fn put(&self, name: std::net::SocketAddr) {
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::put_socket_addr(name, self.addr, self.len) }
    }

    /// No address (a UDP receive that ended for a shutdown): the length
    /// becomes 0, as the kernel leaves it.
    pub(crate) fn clear(&self) {
        // SAFETY: the constructor's contract (`len` null or writable).
        unsafe { crate::platform::sys::clear_len(self.len) }
    }

    /// accept4(2) on the kernel listener `sock`, storing the peer's
    /// address here: a raw system call (the kernel checks the pointers).
    /// The new fd, or the errno (the caller's errno is left alone).
    pub(crate) fn accept4(
        &self,
        sock: std::os::fd::BorrowedFd<'_>,
        flags: c_int,
    ) -> Result<c_int, c_int> {
        use std::os::fd::AsRawFd;
        // SAFETY: a system call; the kernel validates the caller's pointers.
        crate::platform::sys::quietly(|| unsafe {
            libc::syscall(
                libc::SYS_accept4,
                sock.as_raw_fd(),
                self.addr,
                self.len,
                flags,
            )
        })
        .map(|fd| fd as c_int)
    }
}
