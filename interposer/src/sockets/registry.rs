//! Per-socket state behind the fd table: a slab of `Arc<Socket>` slots,
//! each fd of ours holding one slot (dups hold clones of the same Arc).
//!
//! The fd table answers "is this fd ours?" with one atomic load; only then
//! is the slab consulted, under a process-private read lock. A signal
//! handler that interrupts a thread inside the library never gets here (the
//! re-entry guard fails such a call with EIO), so the lock cannot deadlock
//! against its own thread.
//!
//! Fork: `prepare` takes the write lock so that no thread is in the middle
//! of changing the slab when the process is copied; `parent` releases it.
//! The child resets it to unlocked (the lock is a `lock::RwLock`, one atomic
//! word with no wait queue, so threads that were waiting on it in the
//! parent leave nothing behind), then resets every live socket's own locks,
//! which threads absent from the child may have held.
#![forbid(unsafe_code)]

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::platform::fdtable::{self, Handle, InsertError};
use crate::platform::lock::RwLock;
use crate::sockets::socket::Socket;

struct Slot {
    generation: u32,
    socket: Option<Arc<Socket>>,
}

struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

static SLAB: RwLock<Slab> = RwLock::new(Slab {
    slots: Vec::new(),
    free: Vec::new(),
});

/// The socket behind `fd`, if it is ours.
#[inline]
pub(crate) fn get(fd: RawFd) -> Option<Arc<Socket>> {
    let handle = fdtable::table().get(fd)?;
    let slab = SLAB.read();
    let slot = slab.slots.get(handle.index() as usize)?;
    if slot.generation != handle.generation() {
        return None;
    }
    slot.socket.clone()
}

/// Whether `fd` is an emulated connection (a look at the fd table first:
/// most fds are not ours).
pub(crate) fn is_connection(fd: RawFd) -> bool {
    fdtable::table().get(fd).is_some() && get(fd).is_some_and(|s| s.connection().is_some())
}

/// Runs `f` on the socket behind `fd` under the registry's read lock,
/// without taking a reference on it (no `Arc` clone: two atomic
/// read-modify-writes fewer than [`get`]). The lock holds off `close` and
/// `fork` while `f` runs, so `f` must be short and must not block: the data
/// path's first, non-blocking attempt. `None` when the fd is not ours, or
/// when the lock is not free at once (a writer holds or waits for it):
/// then ask [`get`].
#[inline]
pub(crate) fn with<R>(fd: RawFd, f: impl FnOnce(&Socket) -> R) -> Option<R> {
    let handle = fdtable::table().get(fd)?;
    let slab = SLAB.try_read()?;
    let slot = slab.slots.get(handle.index() as usize)?;
    if slot.generation != handle.generation() {
        return None;
    }
    Some(f(slot.socket.as_deref()?))
}

/// Makes `fd` refer to `socket`. An fd that was ours already (a number the
/// kernel reused after a close we did not see) is released first.
pub(crate) fn insert(fd: RawFd, socket: Arc<Socket>) -> Result<(), ()> {
    let ptr = Arc::as_ptr(&socket);
    let handle = {
        let mut slab = SLAB.write();
        // Under the lock fork's prepare handler takes: a child never
        // inherits the socket's fd list half-changed.
        socket.fd_opened(fd);
        let index = match slab.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(slab.slots.len()).map_err(|_| ())?;
                slab.slots.push(Slot {
                    generation: 0,
                    socket: None,
                });
                i
            }
        };
        let slot = &mut slab.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.socket = Some(socket);
        Handle::new(index, slot.generation).ok_or(())?
    };
    match fdtable::table().insert(fd, handle) {
        Ok(()) => Ok(()),
        Err(InsertError::Occupied(_)) => {
            if let Ok(Some(old)) = fdtable::table().replace(fd, handle) {
                let same = |s: &Socket| core::ptr::eq(s, ptr);
                drop(release_inner(old, Some(fd).filter(|_| !slot_is(old, same))));
            }
            Ok(())
        }
        Err(InsertError::OutOfRange) => {
            drop(release_fd(fd, handle));
            Err(())
        }
    }
}

/// Handles whose fds were closed from a signal handler that interrupted
/// the library (see `defer_release`); 0 is an empty slot.
static DEFERRED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
static DEFERRED_ANY: AtomicBool = AtomicBool::new(false);

/// For a close() made by a signal handler while its thread was inside the
/// library: the fd is already no longer ours (the fd table entry is gone),
/// but dropping the socket there could free memory inside an interrupted
/// malloc or wait for a lock the interrupted frame holds. So the slot is
/// parked here, allocation- and lock-free, and released by the next hooked
/// call made outside any handler. If the parking lot is full, the socket is
/// leaked rather than risked, and counted: the next call outside a handler
/// writes the line (a handler cannot).
pub(crate) fn defer_release(handle: Handle) {
    let raw = handle.raw();
    for slot in &DEFERRED {
        if slot
            .compare_exchange(0, raw, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            DEFERRED_ANY.store(true, Ordering::Release);
            return;
        }
    }
    LEAKED.fetch_add(1, Ordering::Relaxed);
    DEFERRED_ANY.store(true, Ordering::Release);
}

/// Numbers a signal handler's close left open (`defer_close`): per slot a
/// state (0 free, 1 being filled, 2 ready, 3 being closed), the fd, the
/// handle and the socket's identity (inode, device) then.
static CLOSE_STATE: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
static CLOSE_FD: [AtomicI32; 16] = [const { AtomicI32::new(-1) }; 16];
static CLOSE_HANDLE: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
static CLOSE_INODE: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
static CLOSE_DEV: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

/// (inode, device) of what `fd` refers to (fstat: async-signal-safe).
fn identity(fd: RawFd) -> Option<(u64, u64)> {
    rustix::fs::fstat(crate::platform::sys::borrow_fd(fd))
        .ok()
        .map(|st| (st.st_ino, st.st_dev))
}

/// For a close() made by a signal handler while the socket's doorbell may
/// be using `fd` (`try_fd_closing` could not say otherwise without
/// waiting): `fd` stays open, marked as the library's own, and is
/// forgotten, closed and released by the next call made outside any
/// handler (`release_deferred`). Lock- and allocation-free; false if there
/// is no free slot (then the caller closes it now).
pub(crate) fn defer_close(fd: RawFd, handle: Handle) -> bool {
    let Some((inode, dev)) = identity(fd) else {
        return false;
    };
    for (i, state) in CLOSE_STATE.iter().enumerate() {
        if state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            fdtable::set_internal(fd, true);
            CLOSE_FD[i].store(fd, Ordering::Relaxed);
            CLOSE_HANDLE[i].store(handle.raw(), Ordering::Relaxed);
            CLOSE_INODE[i].store(inode, Ordering::Relaxed);
            CLOSE_DEV[i].store(dev, Ordering::Relaxed);
            state.store(2, Ordering::Release);
            DEFERRED_ANY.store(true, Ordering::Release);
            return true;
        }
    }
    false
}

/// Closes what `defer_close` left open: the socket forgets the number
/// (waiting for its lock is fine here), then the kernel closes it — unless
/// the number refers to something else by now (the handler itself put a
/// file there: dup2, or a close and an open of its own).
fn close_deferred() {
    for (i, state) in CLOSE_STATE.iter().enumerate() {
        // Claimed by one thread only.
        if state
            .compare_exchange(2, 3, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let fd = CLOSE_FD[i].load(Ordering::Relaxed);
        let handle = Handle::from_raw_parts(CLOSE_HANDLE[i].load(Ordering::Relaxed));
        let kept = (
            CLOSE_INODE[i].load(Ordering::Relaxed),
            CLOSE_DEV[i].load(Ordering::Relaxed),
        );
        if let Some(h) = handle {
            drop(release_fd(fd, h));
        }
        fdtable::set_internal(fd, false);
        if identity(fd) == Some(kept) {
            crate::platform::sys::close_inherited(fd);
        }
        state.store(0, Ordering::Release);
    }
}

/// Sockets `defer_release` had no room for.
static LEAKED: AtomicU32 = AtomicU32::new(0);

/// Whether `release_deferred` has work to do.
#[inline]
pub(crate) fn deferred_pending() -> bool {
    DEFERRED_ANY.load(Ordering::Acquire)
}

/// Releases what `defer_release` parked; one load when there is nothing.
#[inline]
pub(crate) fn release_deferred() {
    if DEFERRED_ANY.load(Ordering::Acquire) {
        release_deferred_now();
    }
}

#[inline(never)]
fn release_deferred_now() {
    DEFERRED_ANY.store(false, Ordering::Relaxed);
    close_deferred();
    let leaked = LEAKED.swap(0, Ordering::Relaxed);
    if leaked > 0 {
        log!(
            warn,
            "{leaked} socket(s) closed from signal handlers while the library was busy could \
             not be released (more than {} at once): their memory is leaked",
            DEFERRED.len()
        );
    }
    for slot in &DEFERRED {
        if let Some(h) = Handle::from_raw_parts(slot.swap(0, Ordering::AcqRel)) {
            drop(release(h));
        }
    }
}

/// `release` for the handle of fd `fd`, which is being closed (or was,
/// past us): the socket stops using that number first (`fd_closing`).
pub(crate) fn release_fd(fd: RawFd, handle: Handle) -> Option<Arc<Socket>> {
    release_inner(handle, Some(fd))
}

/// Whether the slot behind `handle` holds a socket `f` accepts.
fn slot_is(handle: Handle, f: impl Fn(&Socket) -> bool) -> bool {
    let slab = SLAB.read();
    slab.slots
        .get(handle.index() as usize)
        .filter(|s| s.generation == handle.generation())
        .and_then(|s| s.socket.as_deref())
        .is_some_and(f)
}

/// `fd_closing` from a signal handler (see `defer_release`): no lock is
/// waited for; false if the socket may still use `fd` (a lock was taken).
/// None if it could not (a lock was taken); Some(true) if the socket has
/// other numbers of the application's left.
pub(crate) fn try_fd_closing(fd: RawFd, handle: Handle) -> Option<bool> {
    let slab = SLAB.try_read()?;
    match slab.slots.get(handle.index() as usize) {
        Some(slot) if slot.generation == handle.generation() => match slot.socket.as_ref() {
            Some(s) => s.try_fd_closing(fd),
            None => Some(false),
        },
        _ => Some(false),
    }
}

/// Frees the slot behind `handle` and returns what it held.
pub(crate) fn release(handle: Handle) -> Option<Arc<Socket>> {
    release_inner(handle, None)
}

/// Runs `replace` (dup2/dup3 onto `fd`) so that the socket `fd` refers to,
/// if ours, stops using the number before the kernel re-points it
/// (`Socket::while_replacing`), under the lock fork's prepare handler
/// takes (the socket's fd list never crosses a fork half-changed).
pub(crate) fn while_replacing(fd: RawFd, replace: impl FnOnce() -> i32) -> i32 {
    let slab = SLAB.write();
    let socket = fdtable::table().get(fd).and_then(|h| {
        slab.slots
            .get(h.index() as usize)
            .filter(|s| s.generation == h.generation())
            .and_then(|s| s.socket.clone())
    });
    match socket {
        Some(s) => s.while_replacing(fd, replace),
        None => replace(),
    }
}

/// `release`; with `fd`, the socket stops using that number first
/// (`fd_closing`), under the lock fork's prepare handler takes.
fn release_inner(handle: Handle, fd: Option<RawFd>) -> Option<Arc<Socket>> {
    let mut slab = SLAB.write();
    let index = handle.index();
    let slot = slab.slots.get_mut(index as usize)?;
    if slot.generation != handle.generation() {
        return None;
    }
    let socket = slot.socket.take();
    slot.generation = slot.generation.wrapping_add(1);
    slab.free.push(index);
    if let (Some(fd), Some(s)) = (fd, &socket) {
        s.fd_closing(fd);
    }
    socket
}

/// Whether `fd` names `sock` now, `f` told under the registry's read lock:
/// close and dup2 take the write lock before the kernel's call, so the
/// number cannot name another file while `f` runs (which must be short,
/// must not block, and must not call back into the registry).
pub(crate) fn while_naming<R>(fd: RawFd, sock: &Arc<Socket>, f: impl FnOnce(bool) -> R) -> R {
    let slab = SLAB.read();
    let named = fdtable::table().get(fd).is_some_and(|h| {
        slab.slots
            .get(h.index() as usize)
            .filter(|s| s.generation == h.generation())
            .and_then(|s| s.socket.as_ref())
            .is_some_and(|s| Arc::ptr_eq(s, sock))
    });
    f(named)
}

/// A connect in progress (`old`) completed as `new`: each of `numbers`
/// (read under the lock) that still names `old` names `new`, once `each`
/// agreed (it puts a new Unix connection under the number, if the offer
/// was made again on one) — under the write lock, which close and dup2
/// take before the kernel's call: no number is closed and given to
/// another file in between (one that was is left alone). Returns the
/// numbers that name `new`.
pub(crate) fn complete(
    old: &Arc<Socket>,
    new: &Arc<Socket>,
    numbers: impl FnOnce() -> Vec<RawFd>,
    mut each: impl FnMut(RawFd) -> bool,
) -> Vec<RawFd> {
    let mut gone = Vec::new();
    let mut done = Vec::new();
    {
        let mut slab = SLAB.write();
        for fd in numbers() {
            let Some(h) = fdtable::table().get(fd) else {
                continue;
            };
            let Some(slot) = slab
                .slots
                .get_mut(h.index() as usize)
                .filter(|s| s.generation == h.generation())
            else {
                continue;
            };
            if !slot.socket.as_ref().is_some_and(|s| Arc::ptr_eq(s, old)) || !each(fd) {
                continue;
            }
            new.fd_opened(fd);
            gone.extend(slot.socket.replace(new.clone()));
            done.push(fd);
        }
    }
    // (Dropped outside the lock.)
    drop(gone);
    done
}

/// Calls `f` on every socket an fd of ours refers to (a socket that several
/// fds share, after dup, is visited once per fd), under the read lock: `f`
/// must not call back into the registry. Meant for the atfork child
/// handler, after the lock was reset.
pub(crate) fn for_each_socket(mut f: impl FnMut(&Arc<Socket>)) {
    let slab = SLAB.read();
    for socket in slab.slots.iter().filter_map(|slot| slot.socket.as_ref()) {
        f(socket);
    }
}

/// `for_each_socket` unless the registry is being changed (at exit,
/// which may run in a signal handler that interrupted a change).
pub(crate) fn try_for_each_socket(mut f: impl FnMut(&Arc<Socket>)) {
    let Some(slab) = SLAB.try_read() else {
        return;
    };
    for socket in slab.slots.iter().filter_map(|slot| slot.socket.as_ref()) {
        f(socket);
    }
}

/// Fork handlers (see the module docs).
///
/// `nested`: fork was called from inside the library (a signal handler
/// that interrupted a hooked call), whose thread may itself hold the
/// lock: then a read hold beside it (a writer waited for 10 ms at most),
/// else the fork goes on without (the child resets the lock, and a guard
/// the interrupted call drops there later leaves it at zero: `RwLock`
/// read guards never count below it).
pub(crate) fn before_fork(nested: bool) {
    if nested {
        SLAB.hold_for_fork_within(std::time::Duration::from_millis(10));
    } else {
        SLAB.hold_for_fork();
    }
}

pub(crate) fn after_fork_parent() {
    SLAB.release_fork_hold();
}

/// In the child, single-threaded: the slab lock, then each socket's locks.
pub(crate) fn after_fork_child() {
    SLAB.reset_after_fork();
    for_each_socket(|sock| sock.reset_locks_after_fork());
}
