//! The unsafe backend: every raw libc/ABI contact that is not a hook.
//!
//! Like rustix's backend module, this is where `unsafe` lives so the socket
//! logic above it can stay safe. Here: errno, `dlsym`, `pthread_atfork`, a
//! publish-once cell for lazily built globals, fds; in `user` the caller's
//! memory, in `sockaddr` socket addresses, in `sockopt` socket options, in
//! `signals` signal masks and dispositions. All of it is reached as
//! `sys::name`.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_void, CStr};
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

mod caller;
pub(crate) use caller::*;
mod exec_args;
pub(crate) use exec_args::*;
mod user;
pub(crate) use user::*;
mod sockaddr;
pub(crate) use sockaddr::*;
mod sockopt;
pub(crate) use sockopt::*;
mod signals;
pub(crate) use signals::*;
mod control;
pub(crate) use control::*;
pub(crate) mod handlers;

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

/// A raw system call's result: its value, or the errno it set; the
/// caller's errno is left as it was.
pub(crate) fn quietly(call: impl FnOnce() -> libc::c_long) -> Result<libc::c_long, c_int> {
    let saved = errno();
    let r = call();
    let e = errno();
    set_errno(saved);
    if r < 0 {
        Err(e)
    } else {
        Ok(r)
    }
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

/// Closes an fd number no Rust object owns: one inherited across exec that
/// nothing in this process owns (a dual listener's kernel listener, after
/// it was moved onto the application's fd number), or one a signal
/// handler's close left open (`registry::defer_close`).
pub(crate) fn close_inherited(fd: c_int) {
    // SAFETY: closing a plain fd number; no Rust object owns it.
    unsafe { libc::close(fd) };
}

/// Closes `fd` with close(2) and nothing else (see `socket::InternalFd`).
pub(crate) fn close_fd(fd: std::os::fd::OwnedFd) {
    use std::os::fd::IntoRawFd;
    // SAFETY: we own the fd (into_raw_fd gave up the OwnedFd), so closing
    // it cannot close anyone else's.
    unsafe { libc::close(fd.into_raw_fd()) };
}

/// Sets or clears O_NONBLOCK on `fd`'s open file (a kernel socket taking
/// the application's mode before it is handed on), if it differs.
pub(crate) fn set_nonblock(fd: std::os::fd::BorrowedFd<'_>, nonblock: bool) {
    let Ok(fl) = rustix::fs::fcntl_getfl(fd) else {
        return;
    };
    let want = if nonblock {
        fl | rustix::fs::OFlags::NONBLOCK
    } else {
        fl - rustix::fs::OFlags::NONBLOCK
    };
    if want != fl {
        let _ = rustix::fs::fcntl_setfl(fd, want);
    }
}

/// A stream socket whose peer is closed (end of stream on read, EPIPE on
/// write), close-on-exec: what an fd number that can no longer be a
/// connection is pointed at.
pub(crate) fn closed_socket() -> Option<std::os::fd::OwnedFd> {
    let (dead, peer) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    drop(peer);
    Some(dead)
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

/// The calling thread, as pthread_self names it (no system call).
pub(crate) fn thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

extern "C" {
    /// glibc (2.32): true while the process has one thread; cleared by
    /// pthread_create before the new thread exists.
    static __libc_single_threaded: core::ffi::c_char;
}

/// Whether the process has only the calling thread (glibc's word; a
/// thread made by a raw clone past glibc does not count).
pub(crate) fn single_threaded() -> bool {
    // SAFETY: a glibc variable (2.32 and later, which the library needs
    // already), a byte read as glibc's own readers do; only the thread
    // that makes a thread writes it, and in a process with one thread that
    // is the reader.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(__libc_single_threaded)) != 0 }
}

/// This process's involuntary context switches so far (getrusage).
pub(crate) fn involuntary_switches() -> u64 {
    // SAFETY: an all-zero rusage is valid; getrusage writes into it.
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_nivcsw.max(0) as u64
}

/// fcntl(2) of a command whose argument is an int, or none (F_SETOWN,
/// F_GETOWN, F_SETSIG, F_GETSIG, F_GETFL, F_SETFL), made with syscall(2)
/// (not our own `fcntl` export): the kernel's return, or -errno.
pub(crate) fn fcntl_int(fd: std::os::fd::BorrowedFd<'_>, cmd: c_int, arg: c_int) -> c_int {
    use std::os::fd::AsRawFd;
    // SAFETY: these commands take an int argument (or ignore it) and
    // touch no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_fcntl, fd.as_raw_fd(), cmd, arg) };
    if r < 0 {
        -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    } else {
        r as c_int
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

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

    /// A control buffer of `msgs` (level, type, payload ints), with the
    /// last header's length replaced by `last_len` if given.
    fn control(msgs: &[(c_int, c_int, &[c_int])], last_len: Option<usize>) -> Vec<u64> {
        let mut buf = vec![0u64; 64];
        let mut at = 0usize;
        let bytes = buf.as_mut_ptr().cast::<u8>();
        for (i, &(level, ty, ints)) in msgs.iter().enumerate() {
            let payload = std::mem::size_of_val(ints);
            // SAFETY: arithmetic.
            let len = unsafe { libc::CMSG_LEN(payload as u32) } as usize;
            let h = libc::cmsghdr {
                cmsg_len: if i + 1 == msgs.len() {
                    last_len.unwrap_or(len)
                } else {
                    len
                } as _,
                cmsg_level: level,
                cmsg_type: ty,
            };
            // SAFETY: inside the 512-byte buffer (the tests' few headers).
            unsafe {
                ptr::write_unaligned(bytes.add(at).cast(), h);
                let data = bytes.add(at + std::mem::size_of::<libc::cmsghdr>());
                ptr::copy_nonoverlapping(ints.as_ptr().cast::<u8>(), data, payload);
                at += libc::CMSG_SPACE(payload as u32) as usize;
            }
        }
        buf.truncate(at.div_ceil(8));
        buf
    }

    fn rights(buf: &mut [u64]) -> Vec<c_int> {
        // SAFETY: an all-zero msghdr is valid.
        let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
        m.msg_control = buf.as_mut_ptr().cast();
        m.msg_controllen = std::mem::size_of_val(buf) as _;
        // SAFETY: a valid msghdr over `buf`.
        unsafe { msg_rights_in(&m) }
    }

    #[test]
    fn rights_read_only_scm_rights_inside_the_buffer() {
        let creds = [1, 2, 3];
        let mut buf = control(
            &[
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &creds),
                (libc::SOL_SOCKET, libc::SCM_RIGHTS, &[7, 9]),
            ],
            None,
        );
        assert_eq!(rights(&mut buf), vec![7, 9]);
        // A header whose length runs past the buffer (the kernel refuses
        // such a message) is read up to the buffer's end only, and ends the
        // walk (CMSG_NXTHDR's sum would wrap round).
        let mut bad = control(
            &[(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[5])],
            Some(usize::MAX - 8),
        );
        let got = rights(&mut bad);
        assert!(got.starts_with(&[5]) && got.len() <= 2, "{got:?}");
        let mut none = Vec::new();
        assert!(rights(&mut none).is_empty());
        // SAFETY: null is explicitly allowed.
        assert!(unsafe { msg_rights_in(ptr::null()) }.is_empty());
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
