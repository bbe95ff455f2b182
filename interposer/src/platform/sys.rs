//! The unsafe backend: every raw libc/ABI contact that is not a hook.
//!
//! Like rustix's backend module, this is where `unsafe` lives so the socket
//! logic above it can stay safe: errno access, `dlsym`, decoding C socket
//! addresses, `pthread_atfork`, and a publish-once cell for lazily built
//! globals.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_ulong, c_void, CStr};
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The calling thread's `errno`.
pub(crate) fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to the calling
    // thread's errno (glibc allocates it in static TLS).
    unsafe { *libc::__errno_location() }
}

/// Set the calling thread's `errno`.
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: as in `errno`; the pointer is valid and thread-local, so no
    // other thread can race this write.
    unsafe { *libc::__errno_location() = value }
}

/// Look `name` up in the objects loaded after us (normally libc).
///
/// Returns null when it is missing. Saves and restores errno: dlsym may set
/// it, and the first call of a hook resolves its symbol in the middle of a
/// pass-through call whose errno belongs to the caller.
pub(crate) fn dlsym_next(name: &CStr) -> *mut c_void {
    let saved = errno();
    // SAFETY: `name` is a valid NUL-terminated string; RTLD_NEXT is a valid
    // pseudo-handle for dlsym called from a loaded object.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    set_errno(saved);
    found
}

/// Decode a C socket address into a Rust one (IPv4/IPv6 only).
///
/// # Safety
/// `addr` must be null or point to at least `len` readable bytes, which is
/// exactly what `bind(2)`/`connect(2)` already require of their caller.
pub(crate) unsafe fn socket_addr(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = usize::try_from(len).ok()?;
    if addr.is_null() || len < core::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least sizeof(sa_family_t) bytes are readable (checked above);
    // read_unaligned because C callers may pass any alignment.
    let family = unsafe { ptr::read_unaligned(addr.cast::<libc::sa_family_t>()) };
    match c_int::from(family) {
        libc::AF_INET if len >= core::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: family and length say this is a complete sockaddr_in.
            let sin = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= core::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: family and length say this is a complete sockaddr_in6.
            let sin6 = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            let flow = u32::from_be(sin6.sin6_flowinfo);
            Some(SocketAddrV6::new(ip, port, flow, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// Register fork handlers; returns 0 or an errno value.
pub(crate) fn register_atfork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> c_int {
    // SAFETY: the handlers are plain `extern "C" fn()` with 'static lifetime
    // (this library is never unloaded while the process runs: LD_PRELOAD).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) }
}

/// A value built lazily and published once, without locks.
///
/// Unlike `OnceLock`, nothing ever waits: racing initialisers each build a
/// value, one wins the compare-exchange, the others drop theirs. So a hook
/// that runs while another thread initialises, in a signal handler, or in a
/// child forked mid-initialisation can never block on it. Published values
/// are leaked on purpose (they live as long as the process).
pub(crate) struct Publish<T> {
    ptr: AtomicPtr<T>,
    // Handing out &T across threads requires what a static of T would.
    _owns: PhantomData<T>,
}

impl<T> Publish<T> {
    pub(crate) const fn new() -> Self {
        Self {
            ptr: AtomicPtr::new(ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// The published value, if any.
    pub(crate) fn get(&self) -> Option<&'static T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from Box::into_raw in `publish` and
        // is never freed, so it is valid for 'static; Acquire pairs with the
        // Release in `publish`, so the pointee is fully initialised.
        unsafe { p.as_ref() }
    }

    /// Publish `value` unless another value already was; returns the
    /// published value and whether it is ours.
    pub(crate) fn publish(&self, value: T) -> (&'static T, bool) {
        let fresh = Box::into_raw(Box::new(value));
        match self
            .ptr
            .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `fresh` is now published and never freed (see `get`).
            Ok(_) => (unsafe { &*fresh }, true),
            Err(winner) => {
                // SAFETY: `fresh` was never shared; reclaim it. `winner` is a
                // published pointer, valid for 'static as in `get`.
                unsafe {
                    drop(Box::from_raw(fresh));
                    (&*winner, false)
                }
            }
        }
    }
}

/// Borrow an fd number the caller handed us for the duration of one call.
///
/// Another thread may close it meanwhile; the kernel then answers EBADF (or
/// acts on a reused number, exactly as the caller's own call would have).
pub(crate) fn borrow_fd(fd: c_int) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: `fd` is not -1 for calls that reach the data path (it is in
    // the fd table); the BorrowedFd never closes it.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// The caller's buffer as a slice (empty for a null or zero-length one).
///
/// # Safety
/// `ptr` must be null or valid for reads of `len` bytes for the call, as
/// write(2)/send(2) require of their caller.
pub(crate) unsafe fn in_buf<'a>(ptr: *const c_void, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller's contract above.
    unsafe { core::slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

/// The caller's buffer as a mutable slice (empty for null or zero length).
///
/// # Safety
/// `ptr` must be null or valid for writes of `len` bytes for the call, as
/// read(2)/recv(2) require; nothing else may access it meanwhile.
pub(crate) unsafe fn out_buf<'a>(ptr: *mut c_void, len: usize) -> &'a mut [u8] {
    if ptr.is_null() || len == 0 {
        return &mut [];
    }
    // SAFETY: the caller's contract above.
    unsafe { core::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) }
}

/// C iovecs as `IoSlice`s, which std guarantees to be ABI-compatible with
/// `struct iovec` on Unix (no copy, no allocation).
///
/// # Safety
/// `iov` must point to `cnt` iovecs whose buffers are readable, as
/// writev(2) requires; `cnt` is checked to be in 0..=IOV_MAX by the caller.
pub(crate) unsafe fn in_iovecs<'a>(
    iov: *const libc::iovec,
    cnt: usize,
) -> &'a [std::io::IoSlice<'a>] {
    if iov.is_null() || cnt == 0 {
        return &[];
    }
    // SAFETY: layout-compatible types (std docs of IoSlice); caller contract.
    unsafe { core::slice::from_raw_parts(iov.cast::<std::io::IoSlice<'a>>(), cnt) }
}

/// C iovecs as `IoSliceMut`s (see `in_iovecs`).
///
/// # Safety
/// As `in_iovecs`, with the buffers writable as readv(2) requires.
pub(crate) unsafe fn out_iovecs<'a>(
    iov: *const libc::iovec,
    cnt: usize,
) -> &'a mut [std::io::IoSliceMut<'a>] {
    if iov.is_null() || cnt == 0 {
        return &mut [];
    }
    // SAFETY: layout-compatible types (std docs of IoSliceMut); the iovec
    // array itself is only read by us (IoSliceMut::advance is never used).
    unsafe {
        core::slice::from_raw_parts_mut(iov.cast_mut().cast::<std::io::IoSliceMut<'a>>(), cnt)
    }
}

/// A Rust socket address as a C `sockaddr_storage` and its length.
pub(crate) fn encode_socket_addr(addr: SocketAddr) -> (libc::sockaddr_storage, usize) {
    let mut storage = zeroed_storage();
    let full = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            core::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            core::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, full)
}

/// `addr` as the bytes of its C sockaddr (SO_PEERNAME's answer).
pub(crate) fn socket_addr_bytes(addr: SocketAddr) -> Vec<u8> {
    let (storage, n) = encode_socket_addr(addr);
    // SAFETY: `storage` is plain data of at least `n` bytes, all initialised
    // (zeroed, then written).
    unsafe { core::slice::from_raw_parts(ptr::from_ref(&storage).cast::<u8>(), n) }.to_vec()
}

/// Writes `addr` to a caller's (sockaddr*, socklen_t*) pair the way the
/// kernel does: truncated to the caller's length, which is then set to the
/// full length. A null `out` is allowed (accept(fd, NULL, NULL)).
///
/// # Safety
/// `out`/`len` null, or `len` valid for read/write and `out` valid for
/// `*len` bytes of writes, as accept(2)/getsockname(2) require.
pub(crate) unsafe fn put_socket_addr(
    addr: SocketAddr,
    out: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) {
    if out.is_null() || len.is_null() {
        return;
    }
    let (storage, full) = encode_socket_addr(addr);
    // SAFETY: caller contract: `len` is readable and writable.
    let room = unsafe { ptr::read_unaligned(len) } as usize;
    let n = room.min(full);
    // SAFETY: `out` has room for `room >= n` bytes; storage has `full >= n`.
    unsafe {
        ptr::copy_nonoverlapping(
            (&storage as *const libc::sockaddr_storage).cast::<u8>(),
            out.cast::<u8>(),
            n,
        );
        ptr::write_unaligned(len, full as libc::socklen_t);
    }
}

/// Sets `*len = 0` if `len` is non-null (TCP's recvfrom reports no address).
///
/// # Safety
/// `len` null or valid for writes.
pub(crate) unsafe fn clear_len(len: *mut libc::socklen_t) {
    if !len.is_null() {
        // SAFETY: caller contract.
        unsafe { ptr::write_unaligned(len, 0) };
    }
}

/// Copies `bytes` to a getsockopt result buffer, truncated to `*len`,
/// and sets `*len` to what was copied (as the kernel does for ints).
///
/// # Safety
/// `len` valid for read/write and `value` for `*len` bytes of writes.
pub(crate) unsafe fn put_opt(
    value: *mut c_void,
    len: *mut libc::socklen_t,
    bytes: &[u8],
) -> Result<(), c_int> {
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    let mut raw = [0u8; 4];
    user_copy(len.cast::<u8>(), raw.as_mut_ptr(), 4)?;
    let room = u32::from_ne_bytes(raw) as usize;
    let n = room.min(bytes.len());
    // A null buffer with nothing to copy is fine, as for the kernel.
    if n > 0 {
        if value.is_null() {
            return Err(libc::EFAULT);
        }
        user_copy(bytes.as_ptr(), value.cast::<u8>(), n)?;
    }
    let n = (n as libc::socklen_t).to_ne_bytes();
    user_copy(n.as_ptr(), len.cast::<u8>(), 4)
}

/// Reads `buf.len()` bytes at the caller's `from`: EFAULT for a bad
/// address (see `user_copy`).
pub(crate) fn user_read(from: *const u8, buf: &mut [u8]) -> Result<(), c_int> {
    if from.is_null() {
        return Err(libc::EFAULT);
    }
    user_copy(from, buf.as_mut_ptr(), buf.len())
}

/// Copies `n` bytes between the caller's memory and ours as the kernel
/// does with a system call's pointers: a bad address is EFAULT, not a
/// fault in the program (process_vm_readv/writev on ourselves). In a
/// sandboxed process (no such calls) a plain copy.
fn user_copy(from: *const u8, to: *mut u8, n: usize) -> Result<(), c_int> {
    if n == 0 {
        return Ok(());
    }
    if crate::platform::sandbox::active() {
        // SAFETY: the caller's pointers, as the call's contract has them.
        unsafe { ptr::copy_nonoverlapping(from, to, n) };
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: from.cast_mut().cast(),
        iov_len: n,
    };
    let remote = libc::iovec {
        iov_base: to.cast(),
        iov_len: n,
    };
    let saved = errno();
    // SAFETY: process_vm_writev reads `local` and writes `remote` in our
    // own address space, checking both like any system call's pointers.
    let done = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
    let err = errno();
    set_errno(saved);
    match done {
        d if d == n as isize => Ok(()),
        d if d >= 0 => Err(libc::EFAULT),
        _ if err == libc::ENOSYS || err == libc::EPERM => {
            // No cross-memory calls here (a seccomp profile): trust the
            // pointers, as before.
            // SAFETY: the caller's pointers, as the call's contract has them.
            unsafe { ptr::copy_nonoverlapping(from, to, n) };
            Ok(())
        }
        _ => Err(libc::EFAULT),
    }
}

/// The room a getsockopt(2) caller offers: `*len` as the kernel reads it
/// (an int: negative lengths stay negative).
///
/// # Safety
/// `len` must be null or valid for reading a socklen_t.
pub(crate) unsafe fn opt_room(len: *const libc::socklen_t) -> Result<c_int, c_int> {
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    let mut raw = [0u8; 4];
    user_copy(len.cast::<u8>(), raw.as_mut_ptr(), 4)?;
    Ok(c_int::from_ne_bytes(raw))
}

/// getsockopt(2) on a socket of the library's own, as a raw system call
/// (the kernel checks `value`/`len`: EFAULT for bad pointers). The
/// caller's errno is left alone; the error is returned.
///
/// # Safety
/// `value`/`len` as getsockopt(2) takes them: bad pointers make the call
/// fail with EFAULT, never fault here.
pub(crate) unsafe fn sockopt_get(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut libc::socklen_t,
) -> Result<(), c_int> {
    use std::os::fd::AsRawFd;
    let saved = errno();
    // SAFETY: a system call; the kernel validates the pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            sock.as_raw_fd(),
            level,
            name,
            value,
            len,
        )
    };
    let e = errno();
    set_errno(saved);
    if r == 0 {
        Ok(())
    } else {
        Err(e)
    }
}

/// setsockopt(2) on a socket of the library's own, as a raw system call;
/// the caller's errno is left alone.
pub(crate) fn sockopt_set(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: &[u8],
) -> Result<(), c_int> {
    use std::os::fd::AsRawFd;
    let saved = errno();
    let ptr = if value.is_empty() {
        ptr::null()
    } else {
        value.as_ptr()
    };
    // SAFETY: `ptr` is null (length 0) or valid for `value.len()` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            sock.as_raw_fd(),
            level,
            name,
            ptr,
            value.len() as libc::socklen_t,
        )
    };
    let e = errno();
    set_errno(saved);
    if r == 0 {
        Ok(())
    } else {
        Err(e)
    }
}

/// Reads a msghdr's iovec list and clears its name/control lengths and
/// flags, as TCP's recvmsg does (no address, no ancillary data).
///
/// # Safety
/// `msg` must be a valid msghdr as recvmsg(2) requires.
pub(crate) unsafe fn msg_parts(msg: *mut libc::msghdr) -> Option<(*const libc::iovec, usize)> {
    if msg.is_null() {
        return None;
    }
    // SAFETY: caller contract.
    let m = unsafe { &mut *msg };
    Some((m.msg_iov.cast_const(), m.msg_iovlen))
}

/// After an emulated recvmsg: no peer address, no control data, no flags.
///
/// # Safety
/// As `msg_parts`.
pub(crate) unsafe fn msg_clear_out(msg: *mut libc::msghdr) {
    // SAFETY: caller contract.
    let m = unsafe { &mut *msg };
    m.msg_namelen = 0;
    m.msg_controllen = 0;
    m.msg_flags = 0;
}

/// The iovecs of a msghdr given to sendmsg.
///
/// # Safety
/// `msg` must be a valid msghdr as sendmsg(2) requires.
pub(crate) unsafe fn msg_iov_in(msg: *const libc::msghdr) -> Option<(*const libc::iovec, usize)> {
    if msg.is_null() {
        return None;
    }
    // SAFETY: caller contract.
    let m = unsafe { &*msg };
    Some((m.msg_iov.cast_const(), m.msg_iovlen))
}

/// Stores an int through a caller's pointer (ioctl FIONREAD).
///
/// # Safety
/// `p` null or valid for writes of an int.
pub(crate) unsafe fn put_int(p: *mut c_int, v: c_int) -> Result<(), c_int> {
    if p.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: caller contract.
    unsafe { ptr::write_unaligned(p, v) };
    Ok(())
}

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
    no_restart & !blocked_signals() == 0
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
        // SAFETY: sigaction is plain data; a null new action only reads the
        // current one into our local.
        let old = unsafe {
            let mut old: libc::sigaction = core::mem::zeroed();
            if libc::sigaction(sig, ptr::null(), &mut old) != 0 {
                continue;
            }
            old
        };
        let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
        if caught && old.sa_flags & libc::SA_RESTART == 0 {
            bits |= 1 << (sig - 1);
        }
    }
    bits
}

/// poll(2) on one fd: its revents (0 on timeout). `timeout_ms` as poll's
/// (-1: no limit). The `poll` system call itself (not ppoll, which rustix
/// and some libcs use, and which sandbox filters such as OpenSSH's do not
/// allow), made with syscall(2): not a cancellation point, and not our own
/// `poll` export.
pub(crate) fn poll_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    events: i16,
    timeout_ms: c_int,
) -> Result<i16, rustix::io::Errno> {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    // SAFETY: one valid pollfd, nfds 1; the kernel writes only `revents`.
    let n = unsafe { libc::syscall(libc::SYS_poll, &mut p as *mut libc::pollfd, 1, timeout_ms) };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
    let n = {
        // No poll system call here: ppoll, which filters there must allow.
        let ts = (timeout_ms >= 0).then(|| libc::timespec {
            tv_sec: (timeout_ms / 1000) as _,
            tv_nsec: ((timeout_ms % 1000) * 1_000_000) as _,
        });
        let tp = ts
            .as_ref()
            .map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: one valid pollfd; a valid or null timespec; no mask.
        unsafe {
            libc::syscall(
                libc::SYS_ppoll,
                &mut p as *mut libc::pollfd,
                1,
                tp,
                ptr::null::<libc::sigset_t>(),
                0,
            )
        }
    };
    if n < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(errno()));
    }
    Ok(if n == 0 { 0 } else { p.revents })
}

/// The `events` of a caller's `struct epoll_event` (packed on x86-64), or
/// None for a null pointer.
///
/// # Safety
/// `ev` must be null or valid for reading one `epoll_event`.
pub(crate) unsafe fn epoll_events(ev: *const libc::epoll_event) -> Option<u32> {
    if ev.is_null() {
        return None;
    }
    // SAFETY: valid per the contract; read unaligned (the struct is packed).
    Some(unsafe { ptr::read_unaligned(ptr::addr_of!((*ev).events)) })
}

/// The local name of an IPv4/IPv6 socket (getsockname), if it has one.
pub(crate) fn local_name(sock: std::os::fd::BorrowedFd<'_>) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    let mut storage = zeroed_storage();
    let mut len = core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage`/`len` are valid for getsockname to fill.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            ptr::addr_of_mut!(storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes of a sockaddr into `storage`.
    unsafe { socket_addr(ptr::addr_of!(storage).cast(), len) }
}

/// The addresses assigned to this network namespace's interfaces
/// (getifaddrs), loopback ones included.
pub(crate) fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut list: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of its family's size.
            let len = match c_int::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => core::mem::size_of::<libc::sockaddr_in>(),
                libc::AF_INET6 => core::mem::size_of::<libc::sockaddr_in6>(),
                _ => 0,
            };
            if len > 0 {
                // SAFETY: as above, `len` bytes are there.
                if let Some(a) = unsafe { socket_addr(ifa.ifa_addr, len as libc::socklen_t) } {
                    found.push(a.ip());
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// SO_PEERCRED of a Unix socket: (pid, uid, gid) of the peer as the kernel
/// recorded them, the pid 0 when the peer is in a pid namespace we cannot
/// see (rustix's typed answer cannot hold a pid 0). A raw system call: no
/// hook, errno untouched.
pub(crate) fn peer_cred(sock: std::os::fd::BorrowedFd<'_>) -> Option<(u32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for `len` bytes of writes.
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    (ok && len as usize == core::mem::size_of::<libc::ucred>())
        .then(|| (cred.pid.max(0) as u32, cred.uid, cred.gid))
}

/// getsockopt(`level`, `name`) as a raw system call: no hook, errno
/// untouched. Whether it succeeded (`sockopt_get`).
///
/// # Safety
/// `value` must be valid for `*len` bytes of writes.
unsafe fn raw_getsockopt(
    sock: std::os::fd::BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: &mut libc::socklen_t,
) -> bool {
    // SAFETY: `value` is valid for `*len` bytes (the caller's contract) and
    // `len` for a socklen_t.
    unsafe { sockopt_get(sock, level, name, value, ptr::from_mut(len)) }.is_ok()
}

/// SO_PEERGROUPS: the supplementary groups of a Unix socket's peer into
/// `buf`; the count, or None (not a Unix socket, too many groups, an old
/// kernel). A raw system call: no hook, errno untouched.
pub(crate) fn peer_groups(sock: std::os::fd::BorrowedFd<'_>, buf: &mut [u32]) -> Option<usize> {
    let mut len = core::mem::size_of_val(buf) as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes of writes.
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    ok.then(|| (len as usize / 4).min(buf.len()))
}

/// SO_PEEK_OFF of a socket (-1: off, the default). A raw system call: no
/// hook, errno untouched.
pub(crate) fn peek_offset(sock: std::os::fd::BorrowedFd<'_>) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = core::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `v` is valid for `len` bytes of writes.
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    ok.then_some(v)
}

/// Whether a kernel TCP socket is or was in use: it has left the CLOSE
/// state (connecting, connected, listening, closing), or it is back in it
/// after a connection that was established (reset: the kernel still
/// answers a connect with EISCONN) — tcpi_bytes_acked counts the SYN once
/// it was acknowledged, which a failed connect's was not (a connect may
/// be tried again then). None for what is not a TCP socket. A raw system
/// call: no hook, errno untouched.
pub(crate) fn tcp_in_use(sock: std::os::fd::BorrowedFd<'_>) -> Option<bool> {
    const TCP_CLOSE: u8 = 7;
    // struct tcp_info up to tcpi_bytes_acked (u64 at 120).
    let mut info = [0u8; 128];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is valid for `len` bytes of writes; the kernel copies
    // min(len, sizeof(struct tcp_info)).
    let ok = unsafe {
        raw_getsockopt(
            sock,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if !ok || len < 1 {
        return None;
    }
    let mut acked = [0u8; 8];
    acked.copy_from_slice(&info[120..128]);
    let was_connected = len as usize >= 128 && u64::from_ne_bytes(acked) > 0;
    Some(info[0] != TCP_CLOSE || was_connected)
}

/// A copy of a caller's `struct epoll_event`.
///
/// # Safety
/// `ev` must be valid for reading one `epoll_event`.
pub(crate) unsafe fn epoll_event_copy(ev: *const libc::epoll_event) -> libc::epoll_event {
    // SAFETY: valid per the contract; unaligned (the struct is packed).
    unsafe { ptr::read_unaligned(ev) }
}

/// Whether the process could open one more fd now (by making a copy of
/// `any` and closing it): an fd passed with SCM_RIGHTS to a process without
/// room is dropped by the kernel, its connection lost with it. The errno
/// the kernel gave if not (EMFILE, ENFILE, ENOMEM).
pub(crate) fn room_for_fd(any: std::os::fd::BorrowedFd<'_>) -> Result<(), rustix::io::Errno> {
    rustix::io::fcntl_dupfd_cloexec(any, 0).map(drop)
}

/// Whether this program image runs in secure-execution mode (AT_SECURE:
/// set-user-ID or set-group-ID, or capabilities gained at exec): the fds it
/// inherited come from a less privileged caller.
pub(crate) fn secure_exec() -> bool {
    // SAFETY: getauxval reads the auxiliary vector the kernel gave this
    // process; no pointer is passed.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Closes an fd inherited across exec that nothing in this process owns
/// (a dual listener's kernel listener, after it was moved onto the
/// application's fd number).
pub(crate) fn close_inherited(fd: c_int) {
    // SAFETY: closing a plain fd number; no Rust object owns it.
    unsafe { libc::close(fd) };
}

/// read(2) or, with an offset, pread(2) of up to `len` bytes from `fd`
/// into `dst` (raw system calls: no hook, and no Rust reference is formed
/// over `dst`, which may be shared memory). Err: the errno.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
pub(crate) unsafe fn read_into(
    fd: c_int,
    dst: *mut u8,
    len: usize,
    offset: Option<u64>,
) -> Result<usize, c_int> {
    // SAFETY: the caller guarantees `dst`/`len`; the kernel checks `fd`.
    let r = unsafe {
        match offset {
            Some(off) => libc::syscall(libc::SYS_pread64, fd, dst, len, off as libc::off_t),
            None => libc::syscall(libc::SYS_read, fd, dst, len),
        }
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// Closes `fd` with close(2) and nothing else (see `socket::InternalFd`).
pub(crate) fn close_fd(fd: std::os::fd::OwnedFd) {
    use std::os::fd::IntoRawFd;
    // SAFETY: we own the fd (into_raw_fd gave up the OwnedFd), so closing
    // it cannot close anyone else's.
    unsafe { libc::close(fd.into_raw_fd()) };
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

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct; all-zero is a valid value.
    unsafe { core::mem::zeroed() }
}

/// Makes fd number `target` refer to `src`'s open file (dup3), keeping
/// `target`'s close-on-exec setting as the caller asks.
pub(crate) fn dup_onto(
    src: std::os::fd::BorrowedFd<'_>,
    target: c_int,
    cloexec: bool,
) -> rustix::io::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: `target` is an fd the application handed us (its socket); the
    // ManuallyDrop makes sure we never close it, dup3 only replaces it.
    let mut t = core::mem::ManuallyDrop::new(unsafe { std::os::fd::OwnedFd::from_raw_fd(target) });
    let flags = if cloexec {
        rustix::io::DupFlags::CLOEXEC
    } else {
        rustix::io::DupFlags::empty()
    };
    rustix::io::dup3(src, &mut t, flags)
}

/// A sendfile offset: None for a null pointer (use the file position).
///
/// # Safety
/// `p` null or valid for reads.
pub(crate) unsafe fn get_off(p: *mut libc::off_t) -> Result<Option<u64>, c_int> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: caller contract.
    let v = unsafe { ptr::read_unaligned(p) };
    u64::try_from(v).map(Some).map_err(|_| libc::EINVAL)
}

/// Stores a sendfile offset back.
///
/// # Safety
/// `p` valid for writes (it was non-null for `get_off`).
pub(crate) unsafe fn put_off(p: *mut libc::off_t, v: u64) {
    // SAFETY: caller contract.
    unsafe { ptr::write_unaligned(p, v as libc::off_t) };
}

/// The caller's pollfd array.
///
/// # Safety
/// poll(2)'s contract: `fds` valid for reads and writes of `n` entries
/// when `n > 0`, and not otherwise accessed meanwhile.
pub(crate) unsafe fn pollfds<'a>(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
) -> Option<&'a mut [libc::pollfd]> {
    if fds.is_null() || n == 0 || n > (1 << 20) {
        return None;
    }
    // SAFETY: valid for `n` entries per the contract.
    Some(unsafe { core::slice::from_raw_parts_mut(fds, n as usize) })
}

/// The caller's epoll_event array (epoll_event is packed: only whole
/// copies in and out, never references to its fields).
///
/// # Safety
/// epoll_wait(2)'s contract: `events` valid for writes of `n` entries.
pub(crate) unsafe fn epoll_out<'a>(
    events: *mut libc::epoll_event,
    n: c_int,
) -> Option<&'a mut [libc::epoll_event]> {
    if events.is_null() || n <= 0 {
        return None;
    }
    // SAFETY: valid for `n` entries per the contract.
    Some(unsafe { core::slice::from_raw_parts_mut(events, n as usize) })
}

/// One of select's fd sets, if given, as the words that hold bits
/// 0..nfds: Linux takes `nfds` above FD_SETSIZE with a larger set the
/// caller allocated (Ruby does), so the set is not read as an `fd_set`.
///
/// # Safety
/// select(2)'s contract: `set` null or valid for reads and writes of
/// `nfds` bits (rounded up to whole words).
pub(crate) unsafe fn fd_words<'a>(
    set: *mut libc::fd_set,
    nfds: c_int,
) -> Option<&'a mut [c_ulong]> {
    if set.is_null() || nfds <= 0 {
        return None;
    }
    let words = (nfds as usize).div_ceil(c_ulong::BITS as usize);
    // SAFETY: valid for that many words per the contract; fd_set is an
    // array of longs.
    Some(unsafe { core::slice::from_raw_parts_mut(set.cast::<c_ulong>(), words) })
}

/// A timeout argument (timespec or timeval), if given.
///
/// # Safety
/// `t` null or valid for reads.
pub(crate) unsafe fn read_opt<T: Copy>(t: *const T) -> Option<T> {
    // SAFETY: per the contract.
    unsafe { t.as_ref().copied() }
}

/// Writes select's remaining time back, as Linux does.
///
/// # Safety
/// `t` null or valid for writes.
pub(crate) unsafe fn write_opt<T>(t: *mut T, value: T) {
    // SAFETY: per the contract.
    if let Some(t) = unsafe { t.as_mut() } {
        *t = value;
    }
}

/// This process's involuntary context switches so far (getrusage).
pub(crate) fn involuntary_switches() -> u64 {
    // SAFETY: an all-zero rusage is valid; getrusage writes into it.
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_nivcsw.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_roundtrip() {
        set_errno(libc::EXDEV);
        assert_eq!(errno(), libc::EXDEV);
        set_errno(0);
    }

    #[test]
    fn dlsym_keeps_errno() {
        set_errno(libc::EXDEV);
        assert!(dlsym_next(c"no_such_symbol_shmnet").is_null());
        assert_eq!(errno(), libc::EXDEV);
        assert!(!dlsym_next(c"write").is_null());
    }

    #[test]
    fn decodes_inet_addresses() {
        let v4: SocketAddr = "127.0.0.9:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        for want in [v4, v6] {
            let (storage, len) = to_c(want);
            // SAFETY: storage holds `len` initialised bytes.
            let got = unsafe { socket_addr(ptr::addr_of!(storage).cast(), len) };
            assert_eq!(got, Some(want));
            // SAFETY: a shorter length is still readable; must be refused.
            let short = unsafe { socket_addr(ptr::addr_of!(storage).cast(), 4) };
            assert_eq!(short, None);
        }
        // SAFETY: null is explicitly allowed.
        assert_eq!(unsafe { socket_addr(ptr::null(), 16) }, None);
    }

    fn to_c(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        let (st, len) = super::encode_socket_addr(addr);
        (st, len as libc::socklen_t)
    }

    #[test]
    fn publish_once() {
        let cell: Publish<u32> = Publish::new();
        assert!(cell.get().is_none());
        assert_eq!(cell.publish(1), (&1, true));
        assert_eq!(cell.publish(2), (&1, false));
        assert_eq!(cell.get(), Some(&1));
    }

    /// Fallback to kernel TCP only ever targets this host. (No socket is
    /// made here: 2001:db8::/32 is the documentation prefix, on no
    /// interface of a test machine.)
    #[test]
    fn local_addresses_include_loopback() {
        let all = local_addresses();
        assert!(all.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
        assert!(!all.contains(&"2001:db8::1".parse().unwrap()));
    }
}
