//! C stdio on our sockets. glibc's FILE functions read and write through
//! its internal `__read`/`__write`, which no preloaded library can hook:
//! bytes a program writes with `fprintf` to a connection of ours would land
//! on the Unix socket behind the fd (the peer resets the connection). So a
//! FILE on one of our fds is a `fopencookie` stream whose read, write and
//! close functions call our own exports:
//!
//! - `fdopen` of an fd of ours returns such a stream, its `_fileno` set to
//!   the fd (glibc's `fileno` returns it);
//! - `stdin`, `stdout` and `stderr` (ordinary variables: the program's
//!   copy, where the executable has a copy relocation) are pointed at such
//!   a stream on fd 0, 1 or 2 while that fd is ours: at start-up (an exec'd
//!   image that inherited the connection, inetd style) and after a dup,
//!   dup2, dup3 or fcntl(F_DUPFD) made fd 0-2 (bash's `printf ... >&3`
//!   is `dup2(3, 1)`, the builtin, `dup2(saved, 1)`); when the fd stops
//!   being ours the stream glibc had is put back. Output waiting in the
//!   stream left behind moves to the new one, so it goes where glibc would
//!   send it (to whatever the fd is when the stream is flushed).
//!
//! glibc only (the FILE layout below is glibc's public `struct _IO_FILE`).
#![allow(unsafe_code)]

use core::ffi::{c_char, c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use libc::{size_t, ssize_t, FILE};

use crate::platform::lazysym::LazySym;
use crate::platform::lock::Mutex;
use crate::platform::real::Action;
use crate::platform::{fdtable, guard, real, sys};

extern "C" {
    static mut stdin: *mut FILE;
    static mut stdout: *mut FILE;
    static mut stderr: *mut FILE;
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, funcs: CookieFunctions) -> *mut FILE;
    fn __fpending(stream: *mut FILE) -> size_t;
    fn __fpurge(stream: *mut FILE);
    fn ftrylockfile(stream: *mut FILE) -> c_int;
    fn funlockfile(stream: *mut FILE);
}

/// glibc's `cookie_io_functions_t`. The functions are our exports'
/// (`abi::exports::STREAM_IO`, on the fd the cookie names): this module
/// cannot name them (exports names it).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CookieFunctions {
    pub(crate) read: unsafe extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t,
    pub(crate) write: unsafe extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t,
    pub(crate) seek: unsafe extern "C" fn(*mut c_void, *mut libc::off64_t, c_int) -> c_int,
    pub(crate) close: unsafe extern "C" fn(*mut c_void) -> c_int,
}

/// What a cookie points to: the fd, and the stream's buffer (glibc would
/// size it from the fd's `st_blksize`; a cookie stream has no fd to stat,
/// so glibc's own choice would be BUFSIZ, twice a socket's 4 KiB, and a
/// reader like `sed 1q` would take more of the connection than it does
/// on the kernel's socket).
pub(crate) struct Cookie {
    fd: c_int,
    buf: Vec<u8>,
}

/// The fd a cookie names.
pub(crate) fn fd_of(cookie: *mut c_void) -> c_int {
    // SAFETY: every cookie glibc hands our functions is a `Cookie` made by
    // `cookie_stream`, alive until the stream's close function.
    unsafe { (*cookie.cast::<Cookie>()).fd }
}

/// For the stream's close function: frees the cookie (and the buffer, which
/// glibc never touches after the close function) and returns its fd.
///
/// # Safety
/// `cookie` came from `cookie_stream`, and is not used again.
pub(crate) unsafe fn release_cookie(cookie: *mut c_void) -> c_int {
    // SAFETY: the caller's; made by `Box::into_raw`.
    let cookie = unsafe { Box::from_raw(cookie.cast::<Cookie>()) };
    cookie.fd
}

/// The buffer size glibc's FILE would pick for `fd` (libio's
/// `_IO_file_doallocate`): the fd's `st_blksize` when below BUFSIZ.
fn buffer_size(fd: c_int) -> usize {
    const BUFSIZ: usize = 8192;
    // SAFETY: only for the duration of the fstat; rustix makes the system
    // call itself (no hook of ours runs).
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    match rustix::fs::fstat(fd) {
        Ok(st) if st.st_blksize > 0 && (st.st_blksize as usize) < BUFSIZ => st.st_blksize as usize,
        _ => BUFSIZ,
    }
}

/// Gives `file` (our stream, empty) buffering `mode` on its cookie's
/// buffer.
fn set_buffering(file: *mut FILE, cookie: *mut Cookie, mode: c_int) {
    // SAFETY: our open stream with no bytes buffered; the buffer lives in
    // the cookie until the stream's close function, after glibc's last use
    // of it (a buffer given to setvbuf is never freed by glibc).
    unsafe {
        if mode == libc::_IONBF {
            libc::setvbuf(file, ptr::null_mut(), mode, 0);
        } else {
            let buf = &mut (*cookie).buf;
            libc::setvbuf(file, buf.as_mut_ptr().cast(), mode, buf.len());
        }
    }
}

/// Writes all of `buf` with `write` (our export), as glibc's FILE writes
/// (it goes on after a short write, stops at an error). Returns what went
/// out: fewer than `len` makes glibc set the stream's error flag; never
/// negative (fopencookie(3)).
///
/// # Safety
/// `buf` holds `len` bytes; `write` is write(2)'s prototype.
pub(crate) unsafe fn write_all(
    fd: c_int,
    buf: *const c_char,
    len: size_t,
    write: unsafe extern "C-unwind" fn(c_int, *const c_void, size_t) -> ssize_t,
) -> ssize_t {
    let mut done = 0;
    while done < len {
        // SAFETY: the caller's `len` bytes at `buf`; done < len.
        let n = unsafe { write(fd, buf.add(done).cast(), len - done) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    done as ssize_t
}

/// A socket cannot seek: the kernel's answer (ESPIPE), as glibc's FILE
/// would get from `lseek`.
///
/// # Safety
/// `offset` points to glibc's offset variable.
pub(crate) unsafe extern "C" fn cookie_seek(
    cookie: *mut c_void,
    offset: *mut libc::off64_t,
    whence: c_int,
) -> c_int {
    // SAFETY: the caller's.
    let at = unsafe { *offset };
    // SAFETY: lseek64 on an fd number, no memory; not hooked.
    let r = unsafe { libc::lseek64(fd_of(cookie), at, whence) };
    if r < 0 {
        return -1;
    }
    // SAFETY: as above.
    unsafe { *offset = r };
    0
}

/// The head of glibc's `struct _IO_FILE` (bits/types/struct_FILE.h), up
/// to `_fileno`.
#[repr(C)]
struct FileHead {
    flags: c_int,
    read_ptr: *mut c_char,
    read_end: *mut c_char,
    read_base: *mut c_char,
    write_base: *mut c_char,
    write_ptr: *mut c_char,
    write_end: *mut c_char,
    buf_base: *mut c_char,
    buf_end: *mut c_char,
    save_base: *mut c_char,
    backup_base: *mut c_char,
    save_end: *mut c_char,
    markers: *mut c_void,
    chain: *mut c_void,
    fileno: c_int,
}

/// `_flags` bits (libio.h): the buffering a program or glibc chose.
const UNBUFFERED: c_int = 0x0002;
const LINE_BUF: c_int = 0x0200;

/// A cookie stream on `fd` with fopen mode `mode` ("r", "w", "r+", ...),
/// its `_fileno` set to `fd`, fully buffered on a buffer of the size glibc
/// would choose; null with errno on failure. Also returns the cookie.
fn cookie_stream(
    fd: c_int,
    mode: &core::ffi::CStr,
    funcs: CookieFunctions,
) -> (*mut FILE, *mut Cookie) {
    let cookie = Box::into_raw(Box::new(Cookie {
        fd,
        buf: vec![0; buffer_size(fd)],
    }));
    // SAFETY: a valid mode string and functions of the prototypes glibc
    // calls; the cookie is ours until the stream's close function.
    let file = unsafe { fopencookie(cookie.cast(), mode.as_ptr(), funcs) };
    if file.is_null() {
        let errno = sys::errno();
        // SAFETY: made above, never given to glibc.
        drop(unsafe { Box::from_raw(cookie) });
        sys::set_errno(errno);
        return (file, ptr::null_mut());
    }
    set_buffering(file, cookie, libc::_IOFBF);
    // SAFETY: fopencookie returned a glibc FILE, whose head is `FileHead`.
    // glibc's `fileno` answers `_fileno` (fopencookie left -2: no fd); its
    // cookie stream functions never use it otherwise.
    unsafe { (*file.cast::<FileHead>()).fileno = fd };
    OURS.lock().push(file as usize);
    MADE.store(true, Ordering::Release);
    (file, cookie)
}

/// Whether a stream of ours was ever made: before, fclose and a dup onto
/// fd 0-2 that is not ours take no lock here.
static MADE: AtomicBool = AtomicBool::new(false);

/// Every cookie stream made here and not closed: fclose must leave the
/// fd's release to the stream's own close (after its final flush).
static OURS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// `fdopen`: a cookie stream for an fd of ours (mode parsed and checked
/// against the fd's access mode as glibc's fdopen does); anything else
/// is glibc's.
pub(crate) fn fdopen(fd: c_int, mode: *const c_char, io: CookieFunctions) -> Action<*mut FILE> {
    if !fdtable::is_owned(fd) || mode.is_null() {
        return Action::Pass;
    }
    // SAFETY: fdopen(3)'s contract: `mode` is a C string.
    let mode = unsafe { core::ffi::CStr::from_ptr(mode) }.to_bytes();
    let Some((&first, rest)) = mode.split_first() else {
        return Action::Fail(libc::EINVAL);
    };
    // glibc looks at four characters after the first, up to a '+'.
    let plus = rest
        .iter()
        .take(4)
        .take_while(|&&c| c != 0)
        .any(|&c| c == b'+');
    let (reads, writes) = match first {
        b'r' => (true, plus),
        b'w' | b'a' => (plus, true),
        _ => return Action::Fail(libc::EINVAL),
    };
    // SAFETY: F_GETFL on an fd number.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if flags < 0 {
        return Action::Fail(sys::errno());
    }
    let access = flags & libc::O_ACCMODE;
    if (access == libc::O_RDONLY && writes) || (access == libc::O_WRONLY && reads) {
        return Action::Fail(libc::EINVAL);
    }
    if first == b'a' && flags & libc::O_APPEND == 0 {
        // SAFETY: F_SETFL on an fd number (glibc's fdopen sets O_APPEND).
        if unsafe { real::fcntl(fd, libc::F_SETFL, (flags | libc::O_APPEND) as libc::c_ulong) } < 0
        {
            return Action::Fail(sys::errno());
        }
    }
    let mode: &core::ffi::CStr = match (first, plus) {
        (b'r', false) => c"r",
        (b'r', true) => c"r+",
        (b'w', false) => c"w",
        (b'w', true) => c"w+",
        (_, false) => c"a",
        (_, true) => c"a+",
    };
    let (file, _) = cookie_stream(fd, mode, io);
    if file.is_null() {
        return Action::Fail(sys::errno());
    }
    Action::Done(file)
}

/// For the fclose hook: whether `stream` is one of our cookie streams
/// (forgotten now; its close function releases the fd after the flush).
/// A standard stream of ours is not put back after that.
pub(crate) fn closing(stream: *mut FILE) -> bool {
    if !MADE.load(Ordering::Acquire) {
        return false;
    }
    let mut ours = OURS.lock();
    let Some(at) = ours.iter().position(|&f| f == stream as usize) else {
        drop(ours);
        let mut std = STANDARD.lock();
        for slot in std.iter_mut() {
            if slot.glibc == stream as usize && slot.cookie != 0 {
                slot.glibc = 0; // (the program closed the stream we put aside)
            }
        }
        return false;
    };
    ours.swap_remove(at);
    drop(ours);
    let mut std = STANDARD.lock();
    for slot in std.iter_mut() {
        if slot.cookie == stream as usize {
            *slot = Slot::EMPTY;
            slot.closed = true;
        }
    }
    true
}

/// glibc's freopen and freopen64, resolved on first use.
static REAL_FREOPEN: [LazySym; 2] = [LazySym::new(c"freopen"), LazySym::new(c"freopen64")];

/// freopen(3) and freopen64: glibc turns the stream it is given into one
/// of its own FILEs on the same fd number (its internal dup3 re-points
/// the fd past our hooks). Given the standard stream of ours that the
/// variable holds, it reopens glibc's stream instead, after flushing ours
/// (freopen flushes first) and putting the variable back, and returns
/// that; the fd's old socket entry is released after the call.
///
/// # Safety
/// freopen(3)'s contract.
pub(crate) unsafe fn reopen(
    large: bool,
    path: *const c_char,
    mode: *const c_char,
    stream: *mut FILE,
) -> *mut FILE {
    let stream = before_reopen(stream);
    let Some(real) = REAL_FREOPEN[usize::from(large)].get() else {
        sys::set_errno(libc::ENOSYS);
        return ptr::null_mut();
    };
    type Freopen = unsafe extern "C" fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE;
    // SAFETY: dlsym's address of glibc's freopen, of this prototype; the
    // caller's arguments under its contract.
    let result = unsafe { core::mem::transmute::<*mut c_void, Freopen>(real)(path, mode, stream) };
    if !result.is_null() {
        let errno = sys::errno();
        after_reopen(result);
        sys::set_errno(errno);
    }
    result
}

/// The stream freopen should reopen: glibc's, when `stream` is our
/// standard stream in its variable (flushed and put aside first).
fn before_reopen(stream: *mut FILE) -> *mut FILE {
    if stream.is_null() || !MADE.load(Ordering::Acquire) || guard::enter("freopen").is_none() {
        return stream;
    }
    let found = {
        let std = STANDARD.lock();
        (0..3).find_map(|fd| {
            let slot = std[fd as usize];
            (slot.cookie == stream as usize && variable(fd) == stream && slot.glibc != 0)
                .then_some((fd, slot.glibc as *mut FILE))
        })
    };
    let Some((fd, glibc)) = found else {
        return stream;
    };
    // SAFETY: our open stream; its bytes go out through our write.
    unsafe { libc::fflush(stream) };
    set_variable(fd, glibc);
    glibc
}

/// After a successful freopen: the fd under the stream was re-pointed
/// past us (a socket of ours there is gone), and a stream of ours given
/// to it is glibc's now.
fn after_reopen(result: *mut FILE) {
    // SAFETY: freopen returned an open glibc stream.
    let fd = unsafe { libc::fileno(result) };
    if fd >= 0 {
        crate::sockets::stale::fresh(fd);
    }
    if !MADE.load(Ordering::Acquire) {
        return;
    }
    OURS.lock().retain(|&f| f != result as usize);
    for slot in STANDARD.lock().iter_mut() {
        if slot.cookie == result as usize {
            slot.cookie = 0; // (a new stream of ours next time)
            slot.io = 0; // (freed by its close function)
        }
    }
}

/// One standard stream's state.
#[derive(Clone, Copy)]
struct Slot {
    /// Our cookie stream for the fd (0: not made yet).
    cookie: usize,
    /// Its `Cookie` (the buffer).
    io: usize,
    /// The stream the variable held when ours took its place (0: none).
    glibc: usize,
    /// The program closed our stream: the variable is left alone.
    closed: bool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        cookie: 0,
        io: 0,
        glibc: 0,
        closed: false,
    };
}

static STANDARD: Mutex<[Slot; 3]> = Mutex::new([Slot::EMPTY; 3]);

/// Reads the variable for fd 0, 1 or 2.
fn variable(fd: c_int) -> *mut FILE {
    // SAFETY: the C library's stream variables, read by value (as every C
    // program reads them, without a lock).
    unsafe {
        match fd {
            0 => ptr::addr_of!(stdin).read(),
            1 => ptr::addr_of!(stdout).read(),
            _ => ptr::addr_of!(stderr).read(),
        }
    }
}

/// Sets the variable for fd 0, 1 or 2 (the executable's copy when it has
/// one: the symbol resolves there for libc and for us alike).
fn set_variable(fd: c_int, file: *mut FILE) {
    // SAFETY: as `variable`; a pointer store, which glibc documents the
    // program may make itself.
    unsafe {
        match fd {
            0 => ptr::addr_of_mut!(stdin).write(file),
            1 => ptr::addr_of_mut!(stdout).write(file),
            _ => ptr::addr_of_mut!(stderr).write(file),
        }
    }
}

/// At start-up (the constructor, inside the library: nothing is written
/// here): an exec'd image whose fd 0, 1 or 2 is a connection of ours
/// (inherited, re-attached by `calls::exec::adopt`) gets our streams.
pub(crate) fn at_start(io: CookieFunctions) {
    // SAFETY: a child handler of plain `extern "C" fn()`.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork)) };
    for real in &REAL_FREOPEN {
        let _ = real.get(); // (no dlsym in a forked child)
    }
    for fd in 0..3 {
        let _ = follow(fd, io);
    }
    // SAFETY: a plain `extern "C" fn()`; exit runs it before glibc's final
    // flush of every stream (`_IO_cleanup` comes after the atexit list).
    unsafe { libc::atexit(at_exit) };
}

/// In a forked child: the locks may have been copied held.
extern "C" fn after_fork() {
    OURS.reset_after_fork();
    STANDARD.reset_after_fork();
    FORKED.store(true, Ordering::Relaxed);
}

/// This process is a forked child (of a process with the library).
static FORKED: AtomicBool = AtomicBool::new(false);

/// At exit, before glibc's final flush: output left in a standard stream
/// we set aside (another thread was writing it when the fd became ours,
/// or the program kept the old pointer) goes into ours, as glibc would
/// have flushed it to the fd; glibc's flush of the old stream would write
/// it past us, into the Unix socket behind the fd.
extern "C" fn at_exit() {
    if !MADE.load(Ordering::Acquire) {
        return;
    }
    // Not inside a guard: the bytes must go out through our write.
    if guard::enter("stdio at exit").is_none() {
        return;
    }
    let _ = std::panic::catch_unwind(|| move_set_aside(true));
}

/// What the kernel holds at fds 0-2 that are ours (device and inode), taken
/// before a libc call that may re-point them with its internal dup2, past
/// our hooks: daemon(3) (/dev/null), login_tty(3) and forkpty(3) (the
/// terminal).
pub(crate) struct StandardFds([Option<(u64, u64)>; 3]);

fn identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: only for the duration of the fstat (a raw system call).
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    rustix::fs::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

impl StandardFds {
    pub(crate) fn before() -> StandardFds {
        let mut fds = [None; 3];
        if !fdtable::table().is_empty() {
            for (fd, id) in (0..3).zip(fds.iter_mut()) {
                if fdtable::is_owned(fd) {
                    *id = identity(fd).or(Some((u64::MAX, u64::MAX)));
                }
            }
        }
        StandardFds(fds)
    }

    /// After the call: each fd 0-2 of ours that holds something else now
    /// is released (the stale-entry path), and its standard stream goes
    /// back to glibc's.
    pub(crate) fn after(self, io: CookieFunctions) {
        for (fd, id) in (0..3).zip(self.0) {
            if id.is_some() && identity(fd) != id {
                crate::sockets::stale::fresh(fd);
                fd_changed(fd, io);
            }
        }
    }
}

/// `move_pending` for each standard stream set aside while ours holds the
/// variable. `exiting`: the process is in exit (a bounded wait for the
/// old stream's lock, except in a forked child).
fn move_set_aside(exiting: bool) {
    let mut pairs = [None; 3];
    {
        let std = STANDARD.lock();
        for (fd, pair) in (0..3).zip(pairs.iter_mut()) {
            let slot = std[fd as usize];
            if slot.glibc != 0 && slot.cookie != 0 && variable(fd) as usize == slot.cookie {
                *pair = Some((slot.glibc as *mut FILE, slot.cookie as *mut FILE));
            }
        }
    }
    let patience = if exiting && !FORKED.load(Ordering::Relaxed) {
        200
    } else {
        0
    };
    for (from, to) in pairs.into_iter().flatten() {
        let mut tries = 0;
        while !move_pending(from, to) && tries < patience {
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// The `after` of dup, dup2 and dup3: a new fd 0-2 may bring its standard
/// stream over to a connection of ours or back.
pub(crate) fn fd_changed(result: c_int, io: CookieFunctions) {
    if !(0..3).contains(&result) || (!MADE.load(Ordering::Acquire) && !fdtable::is_owned(result)) {
        return;
    }
    // Our own code (or a signal handler interrupting it) made the call:
    // leave the streams alone.
    if guard::enter("stdio").is_none() {
        return;
    }
    if let Some((from, to)) = follow(result, io) {
        move_pending(from, to);
    }
    // Output another thread added to a stream set aside earlier.
    move_set_aside(false);
}

/// The `after` of fcntl: F_DUPFD may make fd 0-2 (`close(1); fcntl(s,
/// F_DUPFD, 0)`).
pub(crate) fn fcntl_done(result: c_int, cmd: c_int, io: CookieFunctions) {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        fd_changed(result, io);
    }
}

/// Points the variable for `fd` at our stream when the fd is ours, back
/// at the one it held before when it is not; the streams left and taken
/// (for `move_pending`), or None when nothing changed.
fn follow(fd: c_int, io: CookieFunctions) -> Option<(*mut FILE, *mut FILE)> {
    let ours = fdtable::is_owned(fd);
    if !ours && !MADE.load(Ordering::Acquire) {
        return None;
    }
    let mut std = STANDARD.lock();
    let slot = &mut std[fd as usize];
    if slot.closed {
        return None;
    }
    let current = variable(fd);
    if ours && (slot.cookie == 0 || current as usize != slot.cookie) {
        // Only the stream that glibc's FILE functions would write to this
        // fd: not one the program assigned to the variable (`stdout =
        // fopen(...)`, its `_fileno` another fd), nor one it closed
        // (glibc sets `_fileno` to -1), nor another stream of ours.
        // SAFETY: a non-null variable holds the program's stream; glibc's
        // own standard FILEs are never freed.
        if current.is_null() || unsafe { (*current.cast::<FileHead>()).fileno } != fd {
            return None;
        }
        if OURS.lock().contains(&(current as usize)) {
            return None;
        }
        if slot.cookie == 0 {
            let mode = if fd == 0 { c"r" } else { c"w" };
            let (file, cookie) = cookie_stream(fd, mode, io);
            if file.is_null() {
                return None;
            }
            (slot.cookie, slot.io) = (file as usize, cookie as usize);
        }
        let cookie = slot.cookie as *mut FILE;
        // The buffering the stream had (glibc's choice or the program's
        // setvbuf); none chosen yet means full buffering, glibc's choice
        // for a socket.
        // SAFETY: `current` is the program's open stream (a glibc FILE).
        let flags = unsafe { (*current.cast::<FileHead>()).flags };
        let mode = if flags & UNBUFFERED != 0 {
            libc::_IONBF
        } else if flags & LINE_BUF != 0 {
            libc::_IOLBF
        } else {
            libc::_IOFBF
        };
        // (Our own stream is empty: its bytes moved out when it was put
        // aside.)
        set_buffering(cookie, slot.io as *mut Cookie, mode);
        slot.glibc = current as usize;
        set_variable(fd, cookie);
        return Some((current, cookie));
    }
    if !ours && slot.cookie != 0 && current as usize == slot.cookie && slot.glibc != 0 {
        let glibc = slot.glibc as *mut FILE;
        set_variable(fd, glibc);
        return Some((current, glibc));
    }
    None
}

/// Output waiting in `from`'s buffer is written into `to` (and dropped
/// from `from`): glibc would have written it to the fd as it is at the
/// next flush, which is `to`'s fd now. (Unread input stays in `from`.)
/// Nothing waits for the stream's lock: a child forked while another
/// thread held it (dup2 then exec) would wait forever; bytes of a stream
/// another thread is writing right now stay where they are, for the next
/// dup onto fd 0-2 or exit (`move_set_aside`). False when the lock was
/// held.
fn move_pending(from: *mut FILE, to: *mut FILE) -> bool {
    // SAFETY: both are open glibc streams; the pending bytes are those
    // between `_IO_write_base` and `_IO_write_ptr` (`__fpending`), read
    // under the stream's lock before `__fpurge` drops them. (The first
    // `__fpending` is an unlocked peek, as glibc's own `__fpending` is.)
    unsafe {
        if __fpending(from) == 0 {
            return true;
        }
        if ftrylockfile(from) != 0 {
            return false;
        }
        // (Nor for the stream taken: a thread may be blocked writing it,
        // and at exit glibc's own flush takes no lock.)
        if ftrylockfile(to) != 0 {
            funlockfile(from);
            return false;
        }
        let n = __fpending(from);
        let bytes = if n > 0 {
            let base = (*from.cast::<FileHead>()).write_base;
            let bytes = core::slice::from_raw_parts(base.cast::<u8>(), n).to_vec();
            __fpurge(from);
            bytes
        } else {
            Vec::new()
        };
        funlockfile(from);
        if !bytes.is_empty() {
            // (glibc's stream lock is recursive: fwrite takes it again.)
            libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), to);
        }
        funlockfile(to);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 3 bytes a call; fails (EPIPE) once 7 went out.
    unsafe extern "C-unwind" fn short_writes(
        _fd: c_int,
        _buf: *const c_void,
        len: size_t,
    ) -> ssize_t {
        static SENT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        let sent = SENT.load(Ordering::Relaxed);
        if sent >= 7 {
            sys::set_errno(libc::EPIPE);
            return -1;
        }
        let n = len.min(3).min(7 - sent);
        SENT.store(sent + n, Ordering::Relaxed);
        n as ssize_t
    }

    #[test]
    fn a_write_goes_on_after_short_writes_and_stops_at_an_error() {
        let buf = [b'x'; 6];
        // SAFETY: 6 bytes at `buf`; the writer reads none.
        let n = unsafe { write_all(9, buf.as_ptr().cast(), 6, short_writes) };
        assert_eq!(n, 6);
        // SAFETY: as above.
        let n = unsafe { write_all(9, buf.as_ptr().cast(), 6, short_writes) };
        assert_eq!(
            (n, sys::errno()),
            (1, libc::EPIPE),
            "what went out, never -1"
        );
    }

    unsafe extern "C" fn no_read(_: *mut c_void, _: *mut c_char, _: size_t) -> ssize_t {
        -1
    }
    unsafe extern "C" fn no_write(_: *mut c_void, _: *const c_char, _: size_t) -> ssize_t {
        0
    }
    unsafe extern "C" fn no_close(_: *mut c_void) -> c_int {
        -1
    }

    #[test]
    fn fdopen_of_an_fd_not_ours_is_glibcs() {
        let io = CookieFunctions {
            read: no_read,
            write: no_write,
            seek: cookie_seek,
            close: no_close,
        };
        assert!(matches!(fdopen(1, c"w".as_ptr(), io), Action::Pass));
    }
}
