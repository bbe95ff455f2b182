//! The caller's arguments that point into its memory, as typed handles.
//!
//! `abi` makes each handle from a hooked call's own arguments, under that
//! call's C contract (the constructors are `unsafe`, and say which
//! contract); the logic above then reads and writes through the handle
//! with safe methods, and only once it has decided the call is one of
//! ours (making a slice over a bad pointer that is passed through would
//! already be undefined behaviour). A handle lives for one call (`'call`):
//! it cannot be kept.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_void};
use core::marker::PhantomData;
use std::io::{IoSlice, IoSliceMut};

use super::{clear_len, get_off, in_buf, in_iovecs, out_buf, out_iovecs, put_off};

/// One hooked call's frame: every handle borrows it, so none can outlive
/// the call that made it (`abi::decode` makes one per call).
pub(crate) struct Scope(PhantomData<*mut ()>);

impl Scope {
    pub(crate) fn new() -> Scope {
        Scope(PhantomData)
    }
}

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
const IOV_MAX: usize = libc::UIO_MAXIOV as usize;

/// The kernel's checks of an iovec array that slices could not make:
/// more than UIO_MAXIOV, a null array or a null buffer with a length.
fn checked_iovecs(iov: *const libc::iovec, cnt: usize) -> Result<(), c_int> {
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
        // SAFETY: the iovec array's contract (valid for `cnt` entries);
        // read unaligned, by value.
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
        checked_iovecs(self.iov, self.cnt)?;
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
        checked_iovecs(self.iov, self.cnt)?;
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

    /// Its iovecs, and what is left to do once data was read into them
    /// (`OutMsgTail::clear_out`); None for a null msghdr.
    pub(crate) fn parts(self) -> Option<(OutIovecs<'call>, OutMsgTail<'call>)> {
        // SAFETY: the constructor's contract; a valid msghdr's iovecs are
        // valid as recvmsg(2) requires.
        let (iov, cnt) = unsafe { super::msg_parts(self.msg)? };
        let iovecs = OutIovecs {
            iov,
            cnt,
            _call: PhantomData,
        };
        Some((
            iovecs,
            OutMsgTail {
                msg: self.msg,
                _call: PhantomData,
            },
        ))
    }
}

/// The rest of a recvmsg's msghdr.
pub(crate) struct OutMsgTail<'call> {
    msg: *mut libc::msghdr,
    _call: PhantomData<&'call mut libc::msghdr>,
}

impl OutMsgTail<'_> {
    /// After an emulated recvmsg: no peer address, no control data, no
    /// flags.
    pub(crate) fn clear_out(self) {
        // SAFETY: the msghdr was non-null and valid (OutMsg's contract).
        unsafe { super::msg_clear_out(self.msg) };
    }
}

/// A `struct msghdr` given to sendmsg (its name and control data are not
/// looked at: a connected TCP socket ignores the one and takes none of the
/// other).
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

    /// Its iovecs; None for a null msghdr.
    pub(crate) fn iovecs(self) -> Option<InIovecs<'call>> {
        // SAFETY: the constructor's contract; a valid msghdr's iovecs are
        // valid as sendmsg(2) requires.
        let (iov, cnt) = unsafe { super::msg_iov_in(self.msg)? };
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
        unsafe { super::opt_room(self.len) }
    }

    /// Stores `bytes` (as many as `*optlen` has room for) and their count.
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<(), c_int> {
        // SAFETY: the constructor's contract.
        unsafe { super::put_opt(self.value, self.len, bytes) }
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
        unsafe { super::sockopt_get(sock, level, name, self.value, self.len) }
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
        match super::user_read(self.value.cast(), &mut bytes) {
            Ok(()) => Ok(bytes),
            Err(e) if n <= 4 => Err(e),
            Err(e) => {
                bytes.truncate(4);
                super::user_read(self.value.cast(), &mut bytes).map_err(|_| e)?;
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
        unsafe { super::sockopt_set_raw(sock, level, name, self.value, self.len) }
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
        unsafe { super::put_int(self.p, v) }
    }
}

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
        unsafe { super::socket_addr(self.addr, self.len) }
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
        super::user_read(self.len.cast::<u8>(), &mut raw)?;
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
        unsafe { super::put_socket_addr(name, self.addr, self.len) }
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
        let saved = super::errno();
        // SAFETY: a system call; the kernel validates the caller's pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_accept4,
                sock.as_raw_fd(),
                self.addr,
                self.len,
                flags,
            )
        };
        let e = super::errno();
        super::set_errno(saved);
        if r < 0 {
            Err(e)
        } else {
            Ok(r as c_int)
        }
    }
}

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
        unsafe { super::read_opt(self.t) }
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
        unsafe { super::read_opt(self.t) }
    }

    /// Stores `v` (nothing for a null pointer).
    pub(crate) fn put(&self, v: libc::timeval) {
        // SAFETY: the constructor's contract.
        unsafe { super::write_opt(self.t, v) }
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
        unsafe { super::pollfds(self.fds, self.n) }
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
        unsafe { super::fd_words(self.set, self.nfds) }
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
        unsafe { super::epoll_out(self.events, self.max) }
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
        unsafe { super::epoll_events(self.ev) }
    }

    /// A copy, for ADD and MOD (None: another op, or null).
    pub(crate) fn get(&self) -> Option<libc::epoll_event> {
        if self.ev.is_null() || (self.op != libc::EPOLL_CTL_ADD && self.op != libc::EPOLL_CTL_MOD) {
            return None;
        }
        // SAFETY: the constructor's contract, for ADD and MOD, not null.
        Some(unsafe { super::epoll_event_copy(self.ev) })
    }

    /// The pointer, for the real call (`platform::real::waits`).
    pub(crate) fn as_ptr(self) -> *mut libc::epoll_event {
        self.ev
    }
}
