//! An exec into an image that will not load the library (a *plain* image).
//!
//! The next image of a program that execs with an environment scrubbed of
//! LD_PRELOAD (nginx's binary upgrade keeps only TZ and its `env`
//! directives), or a set-user-ID or static program, runs without us: the
//! fds it inherits must then be what the kernel would have given it. A
//! default-mode listener's fd is an epoll instance (`sockets::listener`):
//! its kernel TCP listener is put on that number before the exec
//! (getsockname, accept and the rest then work as on any listener), and
//! its rendezvous shut down for every process sharing it, so preloaded
//! connectors take kernel TCP as plain ones do (`retire_rendezvous`); a
//! connection over shared memory cannot become a kernel TCP connection:
//! its number is pointed at a closed socket (the image reads end of stream
//! rather than doorbell bytes), as a connection that cannot be re-attached
//! after exec; an emulated listener or bound socket has no kernel socket
//! behind it: it is left as it is. Each of the last two gets one
//! `libshmnet:` line. A failed exec (the call returns) puts every number
//! back as it was (`failed`). UDP sockets get their kernel socket on every
//! exec (`datagram::before_exec`).
//!
//! Whether the image loads us is decided from what is cheap to know
//! before the exec: an LD_PRELOAD entry (the last one, as the loader reads
//! them) naming this library's file, or /etc/ld.so.preload naming it; a
//! set-user-ID or set-group-ID program file of another owner (secure
//! execution ignores LD_PRELOAD); an ELF file without an interpreter
//! (static). A program found through PATH (execvp, execvpe) is not looked
//! at; capabilities gained at exec (file capabilities, AT_SECURE too) are
//! not either (docs/compatibility.md, "exec").
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::platform::fdtable;
use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::Mutex;
use crate::platform::sys;
use crate::sockets::registry;
use crate::sockets::socket::Socket;

/// The program an exec call runs, as far as it can be looked at.
pub(crate) enum Program {
    /// A path (execve, execv, a path with a slash given to execvp).
    Path(Vec<u8>),
    /// execveat(dirfd, path, flags).
    At(c_int, Vec<u8>, c_int),
    /// fexecve(fd).
    Fd(c_int),
    /// Not known before the call (a name searched in PATH).
    Unknown,
}

/// What the new image gets: its program, and LD_PRELOAD's value in its
/// environment (None: absent).
pub(crate) struct NewImage {
    pub program: Program,
    pub preload: Option<Vec<u8>>,
}

/// The fds changed for a plain image, with what each held before (kept,
/// close-on-exec, for `failed`), and whether that was a listener whose
/// kernel listener's O_NONBLOCK this changed.
struct Changed {
    fd: c_int,
    before: InternalFd,
    listener: Option<Arc<Socket>>,
}

static CHANGED: Mutex<Vec<Changed>> = Mutex::new(Vec::new());

/// Why the new image will run without the library (None: it loads it).
fn without_us(image: &NewImage) -> Option<String> {
    let own = sys::own_library();
    let base = |p: &[u8]| p.rsplit(|&b| b == b'/').next().map(<[u8]>::to_vec);
    let ours = |entry: &[u8]| match &own {
        Some(own) => entry == own.as_slice() || base(entry) == base(own),
        None => base(entry).is_some_and(|b| b.starts_with(b"libshmnet")),
    };
    let in_env = image
        .preload
        .as_deref()
        .is_some_and(|v| v.split(|&b| b == b' ' || b == b':').any(ours));
    // /etc/ld.so.preload only when the environment does not name us (a
    // preloaded child's exec reads no file: review execenv #3).
    let global = !in_env
        && std::fs::read("/etc/ld.so.preload").is_ok_and(|text| {
            text.split(|b| b.is_ascii_whitespace() || *b == b':')
                .any(ours)
        });
    if !in_env && !global {
        return Some(match image.preload {
            None => "its environment has no LD_PRELOAD".into(),
            Some(_) => "its LD_PRELOAD does not name this library".into(),
        });
    }
    let file = open_program(&image.program)?;
    let st = rustix::fs::fstat(&file).ok()?;
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let setuid = st.st_mode & libc::S_ISUID != 0 && st.st_uid != uid;
    let setgid = st.st_mode & libc::S_ISGID != 0 && st.st_gid != gid;
    // The kernel ignores the bits on a script (its interpreter loads
    // LD_PRELOAD): only an ELF file runs in secure execution (review
    // execenv #1: a set-user-ID #! script's connection was closed).
    let mut magic = [0u8; 4];
    let elf = rustix::io::pread(&file, &mut magic, 0).is_ok_and(|n| n == 4) && &magic == b"\x7fELF";
    if (setuid || setgid) && elf && !global {
        return Some(
            "it is set-user-ID or set-group-ID: secure execution ignores LD_PRELOAD".into(),
        );
    }
    static_elf(file).then(|| "it is statically linked".into())
}

/// The program's file, opened to be looked at (None: it cannot be).
fn open_program(program: &Program) -> Option<std::fs::File> {
    let fd: OwnedFd = match program {
        Program::Path(p) => rustix::fs::openat(
            rustix::fs::CWD,
            std::ffi::OsStr::from_bytes(p),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()?,
        Program::At(dir, p, flags) => {
            let dir = sys::borrow_fd(*dir);
            if p.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
                rustix::io::fcntl_dupfd_cloexec(dir, 0).ok()?
            } else {
                rustix::fs::openat(
                    dir,
                    std::ffi::OsStr::from_bytes(p),
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ok()?
            }
        }
        Program::Fd(fd) => rustix::io::fcntl_dupfd_cloexec(sys::borrow_fd(*fd), 0).ok()?,
        Program::Unknown => return None,
    };
    Some(std::fs::File::from(fd))
}

/// An ELF executable with no PT_INTERP program header: nothing loads
/// LD_PRELOAD for it. (A script, or anything unreadable: false.)
fn static_elf(mut file: std::fs::File) -> bool {
    let mut head = vec![0u8; 4096];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    let head = &head[..n];
    // 64-bit little-endian ELF only (x86_64, aarch64).
    if n < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let mut off = [0u8; 8];
    off.copy_from_slice(&head[32..40]);
    let phoff = u64::from_le_bytes(off) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    if phentsize < 4 || phoff.saturating_add(phentsize.saturating_mul(phnum)) > n {
        return false; // headers past what was read: not judged
    }
    const PT_INTERP: u32 = 3;
    !(0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]) == PT_INTERP
    })
}

/// Before the exec family replaces the image: if the new one runs without
/// us, each of our inheritable fds becomes what it can be for it (module
/// docs).
pub(crate) fn before(image: &NewImage) {
    if crate::platform::sandbox::active() {
        // The looks below (open, read, fstat) are outside a sandbox's filter.
        return;
    }
    // No socket of ours at all: nothing to look at (not even the fd
    // limit: a prlimit64 per exec of a shell's loop, review execenv #4).
    if fdtable::table().is_empty() {
        return;
    }
    let limit = crate::platform::internal_fd::nofile_limit().map_or(fdtable::CAPACITY as u64, |n| {
        n.min(fdtable::CAPACITY as u64)
    }) as c_int;
    // Nothing of ours goes across: nothing to decide (and nothing
    // allocated: an exec from a signal handler that interrupted malloc).
    if !(0..limit).any(|fd| inheritable_stream(fd).is_some()) {
        return;
    }
    let Some(why) = without_us(image) else {
        return;
    };
    let mut changed = CHANGED.lock();
    let mut dead: Option<OwnedFd> = None;
    for fd in 0..limit {
        let Some(sock) = inheritable_stream(fd) else {
            continue;
        };
        let app = sys::borrow_fd(fd);
        match &*sock {
            Socket::Listener(l) => match l.tcp() {
                Some(tcp) => {
                    let nonblock = rustix::fs::fcntl_getfl(app)
                        .is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
                    let Ok(before) = InternalFd::dup(app) else {
                        continue;
                    };
                    if sys::dup_onto(tcp, fd, false).is_err() {
                        continue;
                    }
                    sys::set_nonblock(tcp, nonblock);
                    // Its parts (the library's copy of the kernel listener,
                    // the rendezvous) are inheritable for an image that
                    // loads us: one without us would keep the rendezvous
                    // alive, and preloaded clients would connect to a
                    // name nobody accepts from.
                    l.set_cloexec(true);
                    // Preloaded connectors go where plain ones go.
                    l.retire_rendezvous(before.as_fd());
                    log!(
                        debug,
                        "fd {fd}: the kernel listener of {} goes to a program without the library ({why})",
                        l.local
                    );
                    changed.push(Changed {
                        fd,
                        before,
                        listener: Some(sock.clone()),
                    });
                }
                None if first_time(fd, &sock) => crate::platform::log::always(format_args!(
                    "fd {fd}: the emulated listener of {} goes to a program that runs without \
                     the library ({why}): it has no kernel socket and accepts nothing there",
                    l.local
                )),
                None => {}
            },
            Socket::Bound(_) if first_time(fd, &sock) => {
                crate::platform::log::always(format_args!(
                    "fd {fd}: a socket bound to an emulated address goes to a program that runs \
                 without the library ({why}): it has no kernel socket there"
                ))
            }
            Socket::Bound(_) => {}
            Socket::Stream(_) | Socket::Connecting(_) => {
                if dead.is_none() {
                    dead = sys::closed_socket();
                }
                let Some(d) = &dead else {
                    continue;
                };
                let Ok(before) = InternalFd::dup(app) else {
                    continue;
                };
                if sys::dup_onto(d.as_fd(), fd, false).is_err() {
                    continue;
                }
                if first_time(fd, &sock) {
                    crate::platform::log::always(format_args!(
                        "fd {fd}: a connection over shared memory goes to a program that runs \
                         without the library ({why}) and cannot become a kernel TCP \
                         connection: it reads as closed there"
                    ));
                }
                changed.push(Changed {
                    fd,
                    before,
                    listener: None,
                });
            }
            // Its kernel socket is on the number already (`datagram::before_exec`).
            Socket::Datagram(_) => {}
        }
    }
}

/// The sockets whose line was said (fd, socket address), so that exec
/// attempts that fail (a PATH search tries each directory) say it once
/// (review execenv #2). Bounded: the oldest forgotten.
static SAID: Mutex<Vec<(c_int, usize)>> = Mutex::new(Vec::new());

fn first_time(fd: c_int, sock: &Arc<Socket>) -> bool {
    let key = (fd, Arc::as_ptr(sock) as usize);
    let mut said = SAID.lock();
    if said.contains(&key) {
        return false;
    }
    if said.len() >= 64 {
        said.remove(0);
    }
    said.push(key);
    true
}

/// Our socket on application fd `fd` if the fd is inheritable and the
/// socket not a datagram one (those are `datagram::before_exec`'s).
fn inheritable_stream(fd: c_int) -> Option<Arc<Socket>> {
    if !fdtable::is_owned(fd) || fdtable::is_internal(fd) {
        return None;
    }
    let sock = registry::get(fd)?;
    if matches!(&*sock, Socket::Datagram(_)) {
        return None;
    }
    rustix::io::fcntl_getfd(sys::borrow_fd(fd))
        .is_ok_and(|f| !f.contains(rustix::io::FdFlags::CLOEXEC))
        .then_some(sock)
}

/// The exec failed: every number changed by `before` holds what it held.
pub(crate) fn failed() {
    for c in CHANGED.lock().drain(..) {
        let _ = sys::dup_onto(c.before.as_fd(), c.fd, false);
        if let Some(Socket::Listener(l)) = c.listener.as_deref() {
            if let Some(tcp) = l.tcp() {
                // The library's own accepts on it never wait.
                sys::set_nonblock(tcp, true);
            }
            l.set_cloexec(false);
        }
    }
}
