//! A pocket for one fd: a per-thread io_uring ring whose own fd has no
//! number (registered with IORING_REGISTER_RING_FDS, then closed), with
//! one fixed-file slot (decision 58). At the fd limit an accepted
//! rendezvous connection lends its number to its message's memfd: the
//! connection goes into the slot and its number is closed, a recvmsg on
//! the slot installs the memfd on the freed number, the segment is mapped
//! and the memfd closed, and IORING_OP_FIXED_FD_INSTALL (Linux 6.8) puts
//! the connection back on a number. So the last accept needs the one fd
//! kernel TCP's does.
//!
//! The ring is made only near the fd limit (`saw` a number within `NEAR`
//! of RLIMIT_NOFILE's soft limit: numbers are allocated lowest-first, so
//! few are free below it), by an accept while a number is still free
//! (`prepare`): most processes never make one. A registered ring belongs
//! to the thread that made it, and a forked child has none (its mappings
//! are not inherited: MADV_DONTFORK).
//!
//! A seccomp filter may kill the process for an io_uring call (systemd's
//! SystemCallFilter= without an errno, bwrap, minijail): no io_uring call
//! is made while /proc/self/status says `Seccomp:` is not 0 (read just
//! before each ring is made) unless `SHMNET_URING=1`, nor after the
//! prctl(PR_SET_SECCOMP) or seccomp(2) hooks saw a filter that does not
//! allow io_uring_setup, io_uring_register and io_uring_enter (`switch_off`:
//! rings made before are not used again). Where io_uring is refused (the
//! `io_uring_disabled` sysctl, ENOSYS, no FIXED_FD_INSTALL before 6.8),
//! under a sandbox filter of the program's, or with `SHMNET_URING=0`,
//! there is no ring and the accept says EMFILE as before.
#![deny(unsafe_code)]

use core::ffi::c_int;
use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use rustix::io::Errno;

const SETUP_ENTRIES: u32 = 2;
const FEAT_SINGLE_MMAP: u32 = 1;
const FEAT_REG_REG_RING: u32 = 1 << 13;
const OFF_SQ_RING: i64 = 0;
const OFF_SQES: i64 = 0x1000_0000;
const REGISTER_FILES: u32 = 2;
const REGISTER_FILES_UPDATE: u32 = 6;
const REGISTER_PROBE: u32 = 8;
const REGISTER_RING_FDS: u32 = 20;
const REGISTER_USE_REGISTERED_RING: u32 = 1 << 31;
const ENTER_GETEVENTS: u32 = 1;
const ENTER_REGISTERED_RING: u32 = 1 << 4;
const SQE_FIXED_FILE: u8 = 1;
const OP_RECVMSG: u8 = 10;
const OP_RECV: u8 = 27;
const OP_FIXED_FD_INSTALL: u8 = 54;
const PROBE_OP_SUPPORTED: u16 = 1;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// struct io_uring_params.
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// struct io_uring_sqe (64 bytes), the fields these operations use.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    file_index: u32,
    addr3: u64,
    pad: u64,
}

/// struct io_uring_cqe.
#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// struct io_uring_rsrc_update (and io_uring_files_update).
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct ProbeOp {
    op: u8,
    resv: u8,
    flags: u16,
    resv2: u32,
}

/// struct io_uring_probe with room for the first 64 operations.
#[repr(C)]
struct Probe {
    last_op: u8,
    ops_len: u8,
    resv: u16,
    resv2: [u32; 3],
    ops: [ProbeOp; 64],
}

/// Set once io_uring was refused for a reason every thread would meet, or
/// may not be asked (a seccomp filter): no io_uring call after that.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// The highest fd number seen (hooked calls that made one, accepts).
static HIGH: AtomicI32 = AtomicI32::new(-1);

/// Numbers within this many of the fd limit: near it (a ring is made).
const NEAR: u64 = 32;

/// No io_uring call from now on in this process (a seccomp filter that
/// may not allow one is going on; see the module comment).
pub(crate) fn switch_off() {
    REFUSED.store(true, Ordering::Relaxed);
}

/// A hooked call or an accept made fd `fd`: remembered if it is the
/// highest yet (a relaxed load and, rarely, a store).
#[inline]
pub(crate) fn saw(fd: c_int) {
    if fd > HIGH.load(Ordering::Relaxed) {
        HIGH.store(fd, Ordering::Relaxed);
    }
}

/// Whether a number within `NEAR` of RLIMIT_NOFILE's soft limit was seen
/// (the limit as the setrlimit/prlimit hooks keep it).
fn near_limit() -> bool {
    let high = HIGH.load(Ordering::Relaxed);
    high >= 0
        && crate::platform::internal_fd::nofile_limit()
            .is_some_and(|limit| (high as u64).saturating_add(NEAR) >= limit)
}

/// Whether /proc/self/status says no seccomp filter or strict mode is on
/// (None: it could not be read now, as with no free number).
fn seccomp_off() -> Option<bool> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        "/proc/self/status",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut text = Vec::with_capacity(4096);
    let mut buf = [0u8; 1024];
    let done = loop {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => break true,
            Ok(n) if text.len() < 64 * 1024 => text.extend_from_slice(&buf[..n]),
            Ok(_) => break true,
            Err(Errno::INTR) => {}
            Err(_) => break false,
        }
    };
    crate::platform::sys::close_fd(fd);
    if !done {
        return None;
    }
    let line = text
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Seccomp:"))?;
    Some(line.trim_ascii() == b"0")
}

fn errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// One thread's ring: its registered index and mappings.
struct Ring {
    index: u32,
    sq: *mut u8,
    sq_len: usize,
    sqes: *mut Sqe,
    sqes_len: usize,
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_mask: u32,
    sq_array: *mut u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    cqes: *const Cqe,
    /// The process it was made in: a forked child has neither the
    /// registration nor the mappings (MADV_DONTFORK), only this copy.
    pid: u32,
    /// A submission's state is unknown: never used again.
    broken: bool,
}

std::thread_local! {
    /// None: not made yet, or refused in this thread.
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
    /// The fork generation (plus one) this thread last looked in.
    static TRIED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// A connection is in the slot (a signal handler's accept in the
    /// window must not put another there).
    static LENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn wanted() -> bool {
    !REFUSED.load(Ordering::Relaxed)
        && !crate::platform::sandbox::active()
        && crate::platform::config::get().is_some_and(|c| c.uring)
}

/// This process's pid, asked of the kernel (not the per-generation cache:
/// a child made by a raw clone must not take its parent's ring for its
/// own).
fn real_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

impl Ring {
    fn usable(&self, pid: u32) -> bool {
        !self.broken && self.pid == pid
    }
}

/// Makes this thread's ring if it has none and the process is near its
/// fd limit (it needs a free number for a moment; without one it is tried
/// again at the next call). Once per thread and fork generation
/// otherwise; a refusal every thread would meet is remembered for the
/// process.
pub(crate) fn prepare() {
    if !near_limit() {
        return;
    }
    let generation = crate::platform::fork::generation().wrapping_add(1);
    if matches!(TRIED.try_with(|t| t.replace(generation)), Ok(g) if g != generation) {
        prepare_now();
    }
}

fn prepare_now() {
    if !wanted() {
        return;
    }
    let pid = real_pid();
    let have = RING.try_with(|r| {
        r.try_borrow()
            .map_or(true, |r| r.as_ref().is_some_and(|ring| ring.usable(pid)))
    });
    if have != Ok(false) {
        return;
    }
    // A filter the program was started under (or installed past our
    // hooks) may kill for io_uring_setup: looked at just before.
    let forced = crate::platform::config::get().is_some_and(|c| c.uring_forced);
    match seccomp_off() {
        _ if forced => {}
        Some(true) => {}
        Some(false) => {
            log!(
                debug,
                "no io_uring pocket: a seccomp filter is on (SHMNET_URING=1 to use one)"
            );
            switch_off();
            return;
        }
        None => {
            let _ = TRIED.try_with(|t| t.set(0));
            return;
        }
    }
    match Ring::setup() {
        Ok(ring) => {
            let _ = RING.try_with(|r| {
                if let Ok(mut r) = r.try_borrow_mut() {
                    *r = Some(ring);
                }
            });
        }
        // No number for the ring a moment: tried again at the next accept.
        Err(Errno::MFILE | Errno::NFILE | Errno::NOMEM) => {
            let _ = TRIED.try_with(|t| t.set(0));
        }
        Err(e) => {
            log!(debug, "no io_uring pocket for accepts at the fd limit: {e}");
            if matches!(
                e,
                Errno::NOSYS | Errno::PERM | Errno::ACCESS | Errno::INVAL | Errno::OPNOTSUPP
            ) {
                REFUSED.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Whether an accept at the limit may take a connection for the pocket.
pub(crate) fn ready() -> bool {
    if !wanted() || LENDING.try_with(|l| l.get()) != Ok(false) {
        return false;
    }
    let pid = real_pid();
    RING.try_with(|r| {
        r.try_borrow()
            .is_ok_and(|r| r.as_ref().is_some_and(|ring| ring.usable(pid)))
    })
    .unwrap_or(false)
}

fn with_ring<T>(f: impl FnOnce(&mut Ring) -> Result<T, Errno>) -> Result<T, Errno> {
    let pid = real_pid();
    RING.try_with(|r| match r.try_borrow_mut() {
        Ok(mut r) => match r.as_mut() {
            Some(ring) if ring.usable(pid) => f(ring),
            _ => Err(Errno::NOSYS),
        },
        Err(_) => Err(Errno::BUSY),
    })
    .unwrap_or(Err(Errno::NOSYS))
}

impl Ring {
    fn setup() -> Result<Ring, Errno> {
        let mut p = Params::default();
        // SAFETY: io_uring_setup(2) with a valid, writable params struct.
        #[allow(unsafe_code)]
        let fd = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                SETUP_ENTRIES,
                &mut p as *mut Params,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: the kernel just made this fd for us; nothing else owns it.
        #[allow(unsafe_code)]
        let ring_fd = unsafe { OwnedFd::from_raw_fd(fd as c_int) };
        let close = |fd: OwnedFd| crate::platform::sys::close_fd(fd);
        if p.features & FEAT_SINGLE_MMAP == 0 || p.features & FEAT_REG_REG_RING == 0 {
            close(ring_fd);
            return Err(Errno::OPNOTSUPP);
        }
        let mut probe = Probe {
            last_op: 0,
            ops_len: 0,
            resv: 0,
            resv2: [0; 3],
            ops: [ProbeOp::default(); 64],
        };
        // SAFETY: IORING_REGISTER_PROBE writes at most 64 ops into `probe`.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                REGISTER_PROBE,
                &mut probe as *mut Probe,
                64u32,
            )
        };
        let supported = |op: u8| {
            (op as usize) < (probe.ops_len as usize).min(64)
                && probe.ops[op as usize].flags & PROBE_OP_SUPPORTED != 0
        };
        if r < 0
            || ![OP_RECVMSG, OP_RECV, OP_FIXED_FD_INSTALL]
                .into_iter()
                .all(supported)
        {
            close(ring_fd);
            return Err(Errno::OPNOTSUPP);
        }
        let sq_len = (p.sq_off.array as usize + p.sq_entries as usize * 4)
            .max(p.cq_off.cqes as usize + p.cq_entries as usize * core::mem::size_of::<Cqe>());
        let sqes_len = p.sq_entries as usize * core::mem::size_of::<Sqe>();
        let map = |len: usize, off: i64| {
            // SAFETY: a fresh shared mapping of the ring's fd at an offset
            // the kernel defines; no existing memory is touched.
            #[allow(unsafe_code)]
            let m = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd as c_int,
                    off,
                )
            };
            if m == libc::MAP_FAILED {
                return Err(errno());
            }
            // SAFETY: the mapping just made; a fork must not copy it (a
            // child writing the parent's queue would corrupt it).
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(m, len, libc::MADV_DONTFORK)
            };
            Ok(m as *mut u8)
        };
        let unmap = |m: *mut u8, len: usize| {
            // SAFETY: a mapping this function made, used by nothing else.
            #[allow(unsafe_code)]
            unsafe {
                libc::munmap(m.cast(), len)
            };
        };
        let sq = match map(sq_len, OFF_SQ_RING) {
            Ok(m) => m,
            Err(e) => {
                close(ring_fd);
                return Err(e);
            }
        };
        let sqes = match map(sqes_len, OFF_SQES) {
            Ok(m) => m,
            Err(e) => {
                unmap(sq, sq_len);
                close(ring_fd);
                return Err(e);
            }
        };
        let fail = |e: Errno, ring_fd: OwnedFd| {
            unmap(sqes, sqes_len);
            unmap(sq, sq_len);
            close(ring_fd);
            Err(e)
        };
        let files: [i32; 1] = [-1];
        // SAFETY: one fd (-1: an empty slot) read from `files`.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                REGISTER_FILES,
                files.as_ptr(),
                1u32,
            )
        };
        if r < 0 {
            return fail(errno(), ring_fd);
        }
        let mut upd = RsrcUpdate {
            offset: u32::MAX,
            resv: 0,
            data: fd as u64,
        };
        // SAFETY: one update read and written back (the index given).
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                REGISTER_RING_FDS,
                &mut upd as *mut RsrcUpdate,
                1u32,
            )
        };
        if r != 1 {
            return fail(if r < 0 { errno() } else { Errno::IO }, ring_fd);
        }
        let at = |off: u32| sq.wrapping_add(off as usize);
        // SAFETY: the offsets are the kernel's, inside the mapping of
        // `sq_len` bytes; the masks are plain words it wrote once.
        #[allow(unsafe_code)]
        let (sq_mask, cq_mask) = unsafe {
            (
                ptr::read_volatile(at(p.sq_off.ring_mask).cast::<u32>()),
                ptr::read_volatile(at(p.cq_off.ring_mask).cast::<u32>()),
            )
        };
        let ring = Ring {
            index: upd.offset,
            sq,
            sq_len,
            sqes: sqes.cast(),
            sqes_len,
            sq_head: at(p.sq_off.head).cast(),
            sq_tail: at(p.sq_off.tail).cast(),
            sq_mask,
            sq_array: at(p.sq_off.array).cast(),
            cq_head: at(p.cq_off.head).cast(),
            cq_tail: at(p.cq_off.tail).cast(),
            cq_mask,
            cqes: at(p.cq_off.cqes).cast(),
            pid: real_pid(),
            broken: false,
        };
        // The ring lives on through its registration and mappings.
        close(ring_fd);
        Ok(ring)
    }

    /// Submits one operation (that completes at once: every one here is
    /// non-blocking) and returns its result.
    fn run(&mut self, sqe: Sqe) -> Result<i32, Errno> {
        // SAFETY: the queue words and arrays are inside this ring's
        // mappings (offsets from the kernel); one submission at a time, by
        // this thread only (the ring is thread-local).
        #[allow(unsafe_code)]
        unsafe {
            let tail = (*self.sq_tail).load(Ordering::Relaxed);
            let i = (tail & self.sq_mask) as usize;
            ptr::write_volatile(self.sqes.add(i), sqe);
            ptr::write_volatile(self.sq_array.add(i), i as u32);
            (*self.sq_tail).store(tail.wrapping_add(1), Ordering::Release);
        }
        let mut submit = 1u32;
        loop {
            // SAFETY: io_uring_enter(2) on our registered ring; no
            // argument pointer.
            #[allow(unsafe_code)]
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.index,
                    submit,
                    1u32,
                    ENTER_GETEVENTS | ENTER_REGISTERED_RING,
                    ptr::null::<u8>(),
                    0usize,
                )
            };
            if r < 0 {
                let e = errno();
                // SAFETY: the queue words are inside this ring's mapping.
                #[allow(unsafe_code)]
                let (head, tail) = unsafe {
                    (
                        (*self.sq_head).load(Ordering::Acquire),
                        (*self.sq_tail).load(Ordering::Relaxed),
                    )
                };
                if head == tail {
                    // Submitted: its completion comes; interrupted
                    // waits are waited again.
                    if e == Errno::INTR {
                        submit = 0;
                        continue;
                    }
                    self.broken = true;
                } else if submit == 1 {
                    if e == Errno::INTR {
                        continue;
                    }
                    // Not taken: withdrawn (the queue as it was).
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    unsafe {
                        (*self.sq_tail).store(tail.wrapping_sub(1), Ordering::Release)
                    };
                    return Err(e);
                } else {
                    self.broken = true;
                }
                return Err(e);
            }
            if submit == 1 && r == 0 {
                // Not taken (it says none was): withdrawn.
                // SAFETY: as above.
                #[allow(unsafe_code)]
                unsafe {
                    let tail = (*self.sq_tail).load(Ordering::Relaxed);
                    (*self.sq_tail).store(tail.wrapping_sub(1), Ordering::Release)
                };
                return Err(Errno::AGAIN);
            }
            submit = 0;
            // SAFETY: as above; the completion at `head` is the kernel's
            // until we move the head past it.
            #[allow(unsafe_code)]
            unsafe {
                let head = (*self.cq_head).load(Ordering::Relaxed);
                if (*self.cq_tail).load(Ordering::Acquire) == head {
                    continue;
                }
                let res = ptr::read_volatile(self.cqes.add((head & self.cq_mask) as usize)).res;
                (*self.cq_head).store(head.wrapping_add(1), Ordering::Release);
                return Ok(res);
            }
        }
    }

    /// Puts `fd` (or -1: empty) in the slot.
    fn set_slot(&mut self, fd: c_int) -> Result<(), Errno> {
        let fds = [fd];
        let upd = RsrcUpdate {
            offset: 0,
            resv: 0,
            data: fds.as_ptr() as u64,
        };
        // SAFETY: one files update read from `upd` and `fds`, on our
        // registered ring.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.index,
                REGISTER_FILES_UPDATE | REGISTER_USE_REGISTERED_RING,
                &upd as *const RsrcUpdate,
                1u32,
            )
        };
        match r {
            1 => Ok(()),
            r if r < 0 => Err(errno()),
            _ => Err(Errno::IO),
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.pid != real_pid() {
            // A forked child's copy: the mappings are not its own.
            return;
        }
        // SAFETY: the mappings `setup` made, used by nothing after this.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.sqes.cast(), self.sqes_len);
            libc::munmap(self.sq.cast(), self.sq_len);
        }
    }
}

/// How long `Lent::give_back` tries again without sleeping.
const EAGER: std::time::Duration = std::time::Duration::from_millis(100);

/// How long `Lent::give_back` tries before the connection is `Lost`: a
/// parked connection's patience (`transport::parking::PARK_PATIENCE`,
/// which asserts the two agree; platform does not import transport).
pub(crate) const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection held in this thread's slot, its number closed.
pub(crate) struct Lent {
    /// Its number before (the lowest free one now, unless taken).
    number: c_int,
    returned: bool,
}

/// What a peek on a lent connection found.
pub(crate) enum Peeked {
    /// The bytes (how many) and the fd attached (installed on the number
    /// the connection freed): the connection stays lent.
    Fd(Lent, usize, OwnedFd),
    /// No fd came (none attached, or no room after all): the connection
    /// is back on its number, untouched; the normal path goes on.
    Back,
}

/// The connection could not be put back on a number (another thread took
/// the one it freed, and none came free within `PATIENCE`): it is dropped,
/// and the caller's fd for it must be forgotten, not closed.
#[derive(Debug)]
pub(crate) struct Lost;

/// Moves `conn` into the slot, closes its number, and peeks at its
/// message with the attached fd. `Err(None)`: no ring here or it refused
/// (the connection untouched, on its number); `Err(Some(Lost))`: see
/// `Lost`.
pub(crate) fn lend_and_peek(conn: &mut OwnedFd, buf: &mut [u8]) -> Result<Peeked, Option<Lost>> {
    if !ready() {
        return Err(None);
    }
    // Claimed before the slot is filled: a signal handler's accept in
    // between finds it taken (`ready`), not our connection in the slot.
    if LENDING.try_with(|l| l.replace(true)) != Ok(false) {
        return Err(None);
    }
    let number = conn.as_raw_fd();
    if with_ring(|ring| ring.set_slot(number)).is_err() {
        let _ = LENDING.try_with(|l| l.set(false));
        return Err(None);
    }
    // (The slot holds the file now: the number goes, the connection
    // stays.)
    crate::platform::sys::close_inherited(number);
    let lent = Lent {
        number,
        returned: false,
    };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    #[allow(unsafe_code)]
    let mut mh: libc::msghdr = unsafe { core::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.as_mut_ptr().cast();
    mh.msg_controllen = core::mem::size_of_val(&control) as _;
    let sqe = Sqe {
        opcode: OP_RECVMSG,
        flags: SQE_FIXED_FILE,
        fd: 0,
        addr: &mut mh as *mut libc::msghdr as u64,
        len: 1,
        op_flags: (libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) as u32,
        ..Sqe::default()
    };
    let got = with_ring(|ring| ring.run(sqe));
    let fds = scm_rights(&control);
    let mut fds = fds.into_iter();
    let first = fds.next();
    for extra in fds {
        // A second fd nobody asked for: closed.
        crate::platform::sys::close_inherited(extra);
    }
    match (got, first) {
        (Ok(n), Some(fd)) if n >= 0 => {
            // SAFETY: the kernel just installed this fd for us.
            #[allow(unsafe_code)]
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Peeked::Fd(lent, n as usize, fd))
        }
        (_, fd) => {
            if let Some(fd) = fd {
                crate::platform::sys::close_inherited(fd);
            }
            lent.give_back(conn).map_err(Some)?;
            Ok(Peeked::Back)
        }
    }
}

/// The fds of the SCM_RIGHTS messages in `control` (filled by a recvmsg
/// whose msg_controllen the kernel may not have written back: an
/// untouched buffer is zeros, no message; other kinds are skipped).
fn scm_rights(control: &[u64; 8]) -> Vec<c_int> {
    let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let hdr = core::mem::size_of::<libc::cmsghdr>();
    let word = |at: usize, n: usize| bytes.get(at..at + n);
    let mut fds = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(level), Some(kind)) =
        (word(at, 8), word(at + 8, 4), word(at + 12, 4))
    {
        let len = u64::from_ne_bytes(len.try_into().unwrap_or([0; 8])) as usize;
        if len < hdr || at + len > bytes.len() {
            break;
        }
        let level = i32::from_ne_bytes(level.try_into().unwrap_or([0; 4]));
        let kind = i32::from_ne_bytes(kind.try_into().unwrap_or([0; 4]));
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            fds.extend(
                bytes[at + hdr..at + len]
                    .chunks_exact(4)
                    .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .filter(|&fd| fd >= 0),
            );
        }
        // (CMSG_NXTHDR: the length rounded up to 8.)
        at += len.div_ceil(8) * 8;
    }
    fds
}

impl Lent {
    /// Receives into `buf` from the lent connection without waiting and
    /// without room for an fd (the kernel drops the one a peek saw).
    pub(crate) fn consume(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let sqe = Sqe {
            opcode: OP_RECV,
            flags: SQE_FIXED_FILE,
            fd: 0,
            addr: buf.as_mut_ptr() as u64,
            len: buf.len() as u32,
            op_flags: libc::MSG_DONTWAIT as u32,
            ..Sqe::default()
        };
        let r = with_ring(|ring| ring.run(sqe))?;
        if r < 0 {
            return Err(Errno::from_raw_os_error(-r));
        }
        Ok(r as usize)
    }

    /// Puts the connection back on the lowest free number (close-on-exec,
    /// as accept made it), normally the one it had; `conn` is made that
    /// number. Tried for up to `PATIENCE` while other threads hold every
    /// free number.
    pub(crate) fn give_back(mut self, conn: &mut OwnedFd) -> Result<(), Lost> {
        let start = std::time::Instant::now();
        let sqe = Sqe {
            opcode: OP_FIXED_FD_INSTALL,
            flags: SQE_FIXED_FILE,
            fd: 0,
            ..Sqe::default()
        };
        loop {
            match with_ring(|ring| ring.run(sqe)) {
                Ok(n) if n >= 0 => {
                    self.returned = true;
                    let _ = with_ring(|ring| ring.set_slot(-1));
                    let _ = LENDING.try_with(|l| l.set(false));
                    if n != self.number {
                        // SAFETY: the kernel just installed the connection
                        // on `n` for us; the old number is not ours any
                        // more (closed in `lend_and_peek`), so it is
                        // forgotten, not closed.
                        #[allow(unsafe_code)]
                        let moved = unsafe { OwnedFd::from_raw_fd(n) };
                        let old = std::mem::replace(conn, moved);
                        let _ = std::os::fd::IntoRawFd::into_raw_fd(old);
                    }
                    return Ok(());
                }
                Ok(n) if -n == libc::EMFILE || -n == libc::ENFILE => {}
                _ => return Err(Lost),
            }
            // Threads that open and close fds at the limit free a number
            // for microseconds at a time: a try every millisecond missed
            // every gap for 100 ms under load (fd_limit.rs's churn lost 1
            // or 2 of 200, review isoflake): tried again at once (yielding
            // the CPU) for `EAGER`, then every millisecond up to
            // `PATIENCE`, a parked connection's patience.
            let spent = start.elapsed();
            if spent >= PATIENCE {
                return Err(Lost);
            }
            if spent < EAGER {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if !self.returned {
            // Not put back: the slot lets the connection go.
            let _ = with_ring(|ring| ring.set_slot(-1));
            let _ = LENDING.try_with(|l| l.set(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scm_rights;

    fn cmsg(out: &mut Vec<u8>, level: i32, kind: i32, data: &[u8]) {
        let len = 16 + data.len();
        out.extend((len as u64).to_ne_bytes());
        out.extend(level.to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(data);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }

    fn words(bytes: &[u8]) -> [u64; 8] {
        let mut w = [0u64; 8];
        for (i, c) in bytes.chunks(8).enumerate().take(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            w[i] = u64::from_ne_bytes(b);
        }
        w
    }

    #[test]
    fn rights_are_found_behind_other_messages_and_nothing_in_zeros() {
        assert!(scm_rights(&[0; 8]).is_empty());
        let mut b = Vec::new();
        cmsg(&mut b, libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[1; 12]);
        let fds: Vec<u8> = [7i32, 9].iter().flat_map(|f| f.to_ne_bytes()).collect();
        cmsg(&mut b, libc::SOL_SOCKET, libc::SCM_RIGHTS, &fds);
        assert_eq!(scm_rights(&words(&b)), vec![7, 9]);
        // A length past the buffer is not believed.
        let mut bad = Vec::new();
        cmsg(
            &mut bad,
            libc::SOL_SOCKET,
            libc::SCM_RIGHTS,
            &7i32.to_ne_bytes(),
        );
        bad[0] = 200;
        assert!(scm_rights(&words(&bad)).is_empty());
    }
}
