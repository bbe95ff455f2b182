//! Logging that cannot recurse through a hooked `write`.
//!
//! A line is formatted into a fixed stack buffer (no allocation, no locks, so
//! it is usable from a signal handler) and written with one raw `write`
//! syscall through rustix's linux_raw backend, which neither enters libc (so
//! not our hooks) nor touches errno. Off unless `SHMNET_LOG` is set; the
//! destination is stderr or the `SHMNET_LOG_FILE` opened O_APPEND|O_CLOEXEC.
//!
//! We do not use `tracing`/`tracing-subscriber`: its fmt layer writes through
//! std's stderr lock (a signal handler logging while the thread holds it
//! deadlocks), allocates per event, keeps the dispatcher in a thread-local
//! with a destructor (gone during thread exit), and a writer that reaches a
//! hooked `write` recurses until the stack overflows. What we need is ~100
//! lines.
#![forbid(unsafe_code)]

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::platform::sys::Publish;

/// Severity, most severe first (`SHMNET_LOG` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    /// Parse a `SHMNET_LOG` value; `Ok(None)` means "off".
    pub fn parse(s: &str) -> Result<Option<Level>, ()> {
        Ok(Some(match s.trim().to_ascii_lowercase().as_str() {
            "off" | "" => return Ok(None),
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return Err(()),
        }))
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// 0 = off; otherwise the most verbose `Level` enabled.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
/// The log file, if `SHMNET_LOG_FILE` was opened (leaked: lives forever).
static FILE: Publish<OwnedFd> = Publish::new();
/// Raw number of `FILE`, or -1; cleared when the application closes or
/// overwrites that number, after which we fall back to stderr rather than
/// write into whatever the number means now.
static FILE_FD: AtomicI32 = AtomicI32::new(-1);
static FILE_LOST: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_max_level(level: Option<Level>) {
    MAX_LEVEL.store(level.map_or(0, |l| l as u8), Ordering::Relaxed);
}

#[inline]
pub(crate) fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Open `SHMNET_LOG_FILE` for appending (created 0600, close-on-exec),
/// non-blocking: opening a FIFO nobody reads must not hang the program
/// before main() (it fails with ENXIO instead), and a full pipe drops lines
/// rather than stalling the call that logs.
///
/// A symlink is followed only if it belongs to the effective uid or root:
/// one planted by another user in a shared directory (/tmp) must not make
/// us append to a file of ours it points at (ELOOP otherwise).
pub(crate) fn open_file(path: &std::path::Path) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags =
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let mode = Mode::RUSR | Mode::WUSR;
    match rustix::fs::openat(rustix::fs::CWD, path, flags | OFlags::NOFOLLOW, mode) {
        Err(rustix::io::Errno::LOOP) => {
            let link = rustix::fs::lstat(path)?;
            let euid = rustix::process::geteuid().as_raw();
            if link.st_uid != euid && link.st_uid != 0 {
                return Err(rustix::io::Errno::LOOP);
            }
            rustix::fs::openat(rustix::fs::CWD, path, flags, mode)
        }
        r => r,
    }
}

/// Route log lines to `fd` from now on.
pub(crate) fn attach_file(fd: OwnedFd) {
    let (file, ours) = FILE.publish(fd);
    if ours {
        FILE_FD.store(file.as_raw_fd(), Ordering::Release);
    }
}

/// The application is about to close or replace `fd`: stop logging to it if
/// it is our log file (a daemon closing all descriptors must not get our
/// lines in its next socket).
pub(crate) fn forget_fd(fd: i32) {
    if fd >= 0 && FILE_FD.load(Ordering::Acquire) == fd {
        FILE_LOST.store(true, Ordering::Release);
    }
}

/// Whether `fd` is the log file we write to.
pub(crate) fn is_log_fd(fd: i32) -> bool {
    fd >= 0 && FILE_FD.load(Ordering::Acquire) == fd && !FILE_LOST.load(Ordering::Acquire)
}

/// `forget_fd` for every fd in `first..=last`.
pub(crate) fn forget_fd_range(first: u32, last: u32) {
    let fd = FILE_FD.load(Ordering::Acquire);
    if let Ok(fd) = u32::try_from(fd) {
        if (first..=last).contains(&fd) {
            forget_fd(fd as i32);
        }
    }
}

pub(crate) fn destination() -> BorrowedFd<'static> {
    match FILE.get() {
        Some(file) if !FILE_LOST.load(Ordering::Acquire) => file.as_fd(),
        _ => rustix::stdio::stderr(),
    }
}

/// Emit a `log!` line if `level` is enabled (use the macro).
pub(crate) fn emit(level: Level, args: fmt::Arguments<'_>) {
    let pid = rustix::process::getpid().as_raw_nonzero();
    let mut line = Line::new();
    if crate::platform::sandbox::active() {
        // gettid is outside sandbox filters (getpid is in).
        let _ = write!(line, "libshmnet: {} [{pid}/-] {args}", level.name());
    } else {
        let tid = rustix::thread::gettid().as_raw_nonzero();
        let _ = write!(line, "libshmnet: {} [{pid}/{tid}] {args}", level.name());
    }
    line.send(destination());
}

/// A line that is emitted whatever `SHMNET_LOG` says (a caught panic).
pub(crate) fn always(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = write!(line, "libshmnet: {args}");
    line.send(destination());
}

/// A line for stderr itself, whatever `SHMNET_LOG_FILE` says (a
/// configuration error must be seen by whoever started the program).
pub(crate) fn stderr_line(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = write!(line, "libshmnet: {args}");
    line.send(rustix::stdio::stderr());
}

/// `log!(level, "format", args...)`, level one of error|warn|info|debug|trace.
/// Arguments are not evaluated when the level is disabled.
macro_rules! log {
    (error, $($arg:tt)+) => { $crate::platform::log::__log!($crate::platform::log::Level::Error, $($arg)+) };
    (warn, $($arg:tt)+) => { $crate::platform::log::__log!($crate::platform::log::Level::Warn, $($arg)+) };
    (info, $($arg:tt)+) => { $crate::platform::log::__log!($crate::platform::log::Level::Info, $($arg)+) };
    (debug, $($arg:tt)+) => { $crate::platform::log::__log!($crate::platform::log::Level::Debug, $($arg)+) };
    (trace, $($arg:tt)+) => { $crate::platform::log::__log!($crate::platform::log::Level::Trace, $($arg)+) };
}

macro_rules! __log {
    ($level:expr, $($arg:tt)+) => {
        if $crate::platform::log::enabled($level) {
            $crate::platform::log::emit($level, format_args!($($arg)+))
        }
    };
}
pub(crate) use __log;

pub(crate) const LINE_MAX: usize = 512;

/// Whether `len` more bytes fit in `fd` under RLIMIT_FSIZE: writing past it
/// raises SIGXFSZ, which kills the program (a line we drop kills nobody).
fn fits(fd: BorrowedFd<'_>, len: usize) -> bool {
    // Sandboxed: getrlimit and fstat are outside the filter (OpenSSH's
    // sandbox sets RLIMIT_FSIZE to 0 just before it): decided once before
    // the filter went on.
    if crate::platform::sandbox::active() {
        return crate::platform::sandbox::may_log();
    }
    fits_now(fd, len)
}

/// `fits` asked of the kernel; for lines of up to `LINE_MAX` bytes when
/// `len` is `LINE_MAX`.
pub(crate) fn fits_now(fd: BorrowedFd<'_>, len: usize) -> bool {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Fsize).current else {
        return true;
    };
    match rustix::fs::fstat(fd) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::RegularFile =>
        {
            (st.st_size as u64).saturating_add(len as u64) <= limit
        }
        _ => true,
    }
}

/// A fixed-size line buffer; overlong lines are cut and marked with "...".
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        }
    }

    /// Finish the line and write it with as few syscalls as possible.
    fn send(mut self, fd: BorrowedFd<'_>) {
        let room = LINE_MAX - 4; // "...\n"
        if self.cut || self.len > room {
            self.len = self.len.min(room);
            self.buf[self.len..self.len + 3].copy_from_slice(b"...");
            self.len += 3;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        if !fits(fd, self.len) {
            return;
        }
        let mut rest = &self.buf[..self.len];
        while !rest.is_empty() {
            match rustix::io::write(fd, rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
    }

    #[cfg(test)]
    fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the newline.
        let room = LINE_MAX - 1 - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.cut = true;
        }
        Ok(())
    }
}

/// One `libshmnet:` line per panic, naming the hooked call; installed in
/// this library's own copy of std, so the host's hook is untouched. (Not in
/// unit tests, where it would replace the test harness's hook.)
pub(crate) fn install_panic_hook() {
    if cfg!(test) {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-text payload)");
        let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
        always(format_args!(
            "panic in {}(): {msg} at {file}:{line}; the call fails with EIO",
            crate::platform::guard::current_call()
        ));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse("DEBUG"), Ok(Some(Level::Debug)));
        assert_eq!(Level::parse(" trace "), Ok(Some(Level::Trace)));
        assert_eq!(Level::parse("off"), Ok(None));
        assert_eq!(Level::parse("loud"), Err(()));
        assert!(Level::Error < Level::Trace);
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let mut line = Line::new();
        let long = "é".repeat(LINE_MAX);
        let _ = line.write_str(&long);
        assert!(line.cut);
        assert!(line.len < LINE_MAX);
        assert!(std::str::from_utf8(line.text()).is_ok());
    }

    #[test]
    fn appends_whole_lines_to_the_log_file() {
        let path = std::env::temp_dir().join(format!("shmnet-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let fd = open_file(&path).unwrap();
        for i in 0..2 {
            let mut line = Line::new();
            let _ = write!(line, "libshmnet: hello {i}");
            line.send(fd.as_fd());
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(text, "libshmnet: hello 0\nlibshmnet: hello 1\n");
    }
}
