//! The caller's memory: buffers, iovecs, msghdrs, pollfd and epoll arrays,
//! fd_sets, option values and offsets, read and written as the C contract
//! of each call allows (and through process_vm_* where a bad pointer must
//! be EFAULT, not a crash).
#![allow(unsafe_code)]

use super::*;
use core::ffi::{c_int, c_ulong, c_void};
use core::ptr;

use shmnet_ring::Space;

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

/// Reads `buf.len()` bytes at the caller's `from`: EFAULT for a bad
/// address (see `user_copy`).
///
/// # Safety
/// As `user_copy`: `from` is a hooked call's argument, valid for reading
/// `buf.len()` bytes as that call's C contract requires.
pub(crate) unsafe fn user_read(from: *const u8, buf: &mut [u8]) -> Result<(), c_int> {
    if from.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the caller's contract for `from`; `buf` is ours.
    unsafe { user_copy(from, buf.as_mut_ptr(), buf.len()) }
}

/// Copies `n` bytes between the caller's memory and ours as the kernel
/// does with a system call's pointers: a bad address is EFAULT, not a
/// fault in the program (process_vm_readv/writev on ourselves). In a
/// sandboxed process (no such calls) a plain copy, which trusts them.
///
/// # Safety
/// `from` valid for reads and `to` for writes of `n` bytes, not
/// overlapping, as the hooked call's C contract promises for its pointers
/// (a broken promise is EFAULT where the kernel can check, as for the real
/// call; in a sandbox it is the caller's undefined behaviour, as it would
/// be in libc).
pub(crate) unsafe fn user_copy(from: *const u8, to: *mut u8, n: usize) -> Result<(), c_int> {
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

/// After an emulated recvmsg on a datagram socket: the sender's address
/// into `msg_name` (truncated to `msg_namelen`, which gets the full
/// length, as the kernel does; nothing for a null name), no control data
/// unless `keep_control` (its cmsgs written), `flags` in `msg_flags`.
///
/// # Safety
/// As `msg_parts`; `msg_name` null or writable for `msg_namelen` bytes.
pub(crate) unsafe fn msg_finish_dgram(
    msg: *mut libc::msghdr,
    from: Option<std::net::SocketAddr>,
    flags: c_int,
    keep_control: bool,
) {
    // SAFETY: caller contract.
    let m = unsafe { &mut *msg };
    match from {
        Some(addr) if !m.msg_name.is_null() => {
            // SAFETY: caller contract: msg_name writable for msg_namelen.
            unsafe {
                super::put_socket_addr(
                    addr,
                    m.msg_name.cast(),
                    core::ptr::addr_of_mut!(m.msg_namelen),
                )
            }
        }
        _ => m.msg_namelen = 0,
    }
    if !keep_control {
        m.msg_controllen = 0;
    }
    m.msg_flags = flags;
}

/// The destination of a msghdr given to sendmsg (`msg_name`, its length).
///
/// # Safety
/// `msg` must be a valid msghdr as sendmsg(2) requires.
pub(crate) unsafe fn msg_name_in(
    msg: *const libc::msghdr,
) -> (*const libc::sockaddr, libc::socklen_t) {
    if msg.is_null() {
        return (core::ptr::null(), 0);
    }
    // SAFETY: caller contract.
    let m = unsafe { &*msg };
    (m.msg_name.cast_const().cast(), m.msg_namelen)
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

/// The fds a caller's msghdr passes (SCM_RIGHTS control messages), read
/// within its control buffer only.
///
/// # Safety
/// `msg` null or a valid msghdr whose control buffer, if not null, is
/// valid for reads of `msg_controllen` bytes (sendmsg(2)).
pub(crate) unsafe fn msg_rights_in(msg: *const libc::msghdr) -> Vec<c_int> {
    let mut fds = Vec::new();
    // SAFETY: the caller's contract; the slots are only read.
    unsafe { msg_rights_walk(msg, |p| fds.push(ptr::read_unaligned(p))) };
    fds
}

/// Replaces, in a msghdr the library made (a copy of a caller's, with a
/// control buffer of its own), each fd its SCM_RIGHTS messages pass for
/// which `swap` gives another.
///
/// # Safety
/// As `msg_rights_in`, the control buffer writable too.
pub(crate) unsafe fn msg_rights_swap(
    msg: *mut libc::msghdr,
    swap: impl Fn(c_int) -> Option<c_int>,
) {
    // SAFETY: the caller's contract: each slot lies inside the writable
    // control buffer.
    unsafe {
        msg_rights_walk(msg, |p| {
            if let Some(n) = swap(ptr::read_unaligned(p)) {
                ptr::write_unaligned(p.cast_mut(), n);
            }
        })
    };
}

/// Calls `f` with the address of each fd slot of `msg`'s SCM_RIGHTS
/// messages, inside its control buffer.
///
/// # Safety
/// As `msg_rights_in`.
unsafe fn msg_rights_walk(msg: *const libc::msghdr, mut f: impl FnMut(*const c_int)) {
    if msg.is_null() {
        return;
    }
    // SAFETY: caller contract.
    let m = unsafe { &*msg };
    if m.msg_control.is_null() {
        return;
    }
    #[allow(clippy::unnecessary_cast)] // size_t in glibc, socklen_t in musl
    let len = m.msg_controllen as usize;
    let end = (m.msg_control as usize).saturating_add(len);
    // SAFETY: CMSG_FIRSTHDR and CMSG_NXTHDR only compute addresses from the
    // msghdr's control pointer and length, and return null past its end.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(m) };
    while !c.is_null() && (c as usize).saturating_add(core::mem::size_of::<libc::cmsghdr>()) <= end
    {
        // SAFETY: a header that lies whole inside the control buffer.
        let h = unsafe { ptr::read_unaligned(c) };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_DATA computes an address after the header.
            let data = unsafe { libc::CMSG_DATA(c) } as usize;
            // SAFETY: CMSG_LEN is arithmetic.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let len = (h.cmsg_len as usize).saturating_sub(header);
            let room = end.saturating_sub(data);
            for i in 0..len.min(room) / core::mem::size_of::<c_int>() {
                let p = (data + i * core::mem::size_of::<c_int>()) as *const c_int;
                // (inside the control buffer: bounded by `room`)
                f(p);
            }
        }
        // A length past the buffer (the kernel refuses the message) would
        // make CMSG_NXTHDR's sum wrap round to an address it then reads.
        #[allow(clippy::unnecessary_cast)] // size_t in glibc, socklen_t in musl
        if h.cmsg_len as usize > end - c as usize {
            break;
        }
        // SAFETY: as CMSG_FIRSTHDR; it reads the current header's length,
        // which lies inside the buffer (checked above), and the next
        // header's only once that lies inside it too.
        c = unsafe { libc::CMSG_NXTHDR(m, c) };
    }
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

/// A copy of a caller's `struct epoll_event`.
///
/// # Safety
/// `ev` must be valid for reading one `epoll_event`.
pub(crate) unsafe fn epoll_event_copy(ev: *const libc::epoll_event) -> libc::epoll_event {
    // SAFETY: valid per the contract; unaligned (the struct is packed).
    unsafe { ptr::read_unaligned(ev) }
}

/// read(2) or, with an offset, pread(2) from `fd` into ring room lent by
/// `Producer::write_from` (raw system calls: no hook, and no Rust
/// reference is formed over the shared memory). Err: the errno.
pub(crate) fn read_into(
    fd: c_int,
    mut dst: Space<'_>,
    offset: Option<u64>,
) -> Result<usize, c_int> {
    let (ptr, len) = (dst.as_mut_ptr(), dst.len());
    // SAFETY: a `Space` is `len` writable bytes at `ptr` while it lives
    // (the ring's guarantee); the kernel checks `fd`.
    let r = unsafe {
        match offset {
            Some(off) => libc::syscall(libc::SYS_pread64, fd, ptr, len, off as libc::off_t),
            None => libc::syscall(libc::SYS_read, fd, ptr, len),
        }
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
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
