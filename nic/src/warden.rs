//! The warden: a small process forked before the daemon starts any thread,
//! which outlives it. It holds the read end of a pipe only the daemon can
//! write; when that pipe ends — the daemon exited, however, SIGKILL
//! included — and the daemon had said its devices were up, it aborts in
//! each partition's namespace the TCP connections between two addresses
//! of the segment (`sockdiag`). Their devices went with the daemon, so
//! without this they would hang until TCP's own timeouts (review s28 #7):
//! now blocked calls fail at once with ECONNABORTED.
//!
//! It holds no namespace open (a deleted namespace must be freed, review
//! s28 #6): at the end it opens each by its name again and goes in only if
//! it is still the same namespace (device and inode).

use crate::netns::NsSpec;
use crate::sockdiag;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// One partition as the warden sees it.
pub struct Watched {
    /// How to find its namespace again.
    pub spec: NsSpec,
    /// The namespace's (device, inode) when the daemon opened it.
    pub id: (u64, u64),
    /// The partition's addresses.
    pub addrs: Vec<IpAddr>,
}

/// The daemon's end of the warden's pipe.
pub struct Warden {
    pipe: Option<OwnedFd>,
}

impl Warden {
    /// Forks the warden. Call while this process has a single thread (the
    /// child runs ordinary Rust code). Returns a warden that does nothing
    /// when the process already has threads.
    pub fn spawn(parts: Vec<Watched>) -> io::Result<Warden> {
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:").map(|t| t.trim() == "1"))
            });
        if threads != Some(true) {
            eprintln!("shmnet: nic: not single-threaded: connections will not be aborted when the NIC ends");
            return Ok(Warden { pipe: None });
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds, owned just below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors from pipe2, each owned once.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: this process has one thread (checked above), so the child
        // may run Rust code; it never returns (it _exits).
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(wr);
                watch(rd, parts)
            }
            _ => Ok(Warden { pipe: Some(wr) }),
        }
    }

    /// Tells the warden the devices are up: from now on, its end aborts
    /// the segment's connections.
    pub fn arm(&self) {
        if let Some(p) = &self.pipe {
            // SAFETY: one byte from a valid buffer to our pipe's write end.
            let _ = unsafe { libc::write(p.as_raw_fd(), b"1".as_ptr().cast(), 1) };
        }
    }
}

/// The warden's life: wait for the pipe to end, then abort.
fn watch(rd: OwnedFd, parts: Vec<Watched>) -> ! {
    // SAFETY: in the forked child: the pipe's read end moves to fd 3 and
    // every other descriptor above 2 closes (the devices, the region, the
    // --daemon readiness pipe: none may outlive the daemon through us);
    // signals a terminal sends to the process group are ignored, so a
    // Ctrl-C that stops the daemon leaves the warden to do its work.
    unsafe {
        libc::dup2(rd.as_raw_fd(), 3);
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_NAME, c"shmnet-warden".as_ptr());
    }
    std::mem::forget(rd); // fd 3 now, or closed by close_range
    let mut armed = false;
    let mut b = [0u8; 16];
    loop {
        // SAFETY: reading into a valid buffer from fd 3, our pipe.
        let n = unsafe { libc::read(3, b.as_mut_ptr().cast(), b.len()) };
        if n > 0 {
            armed = true;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    if armed {
        let all: Vec<IpAddr> = parts.iter().flat_map(|p| p.addrs.clone()).collect();
        for p in &parts {
            match in_namespace(p, || sockdiag::abort_connections(&p.addrs, &all)) {
                Ok(Some(n)) if n > 0 => eprintln!(
                    "shmnet: nic: {} connection(s) in {} aborted (the NIC ended)",
                    n, p.spec
                ),
                Ok(_) => {}
                Err(e) => eprintln!(
                    "shmnet: nic: cannot abort the connections in {}: {e}",
                    p.spec
                ),
            }
        }
    }
    // SAFETY: ends the forked child without running the parent's exit
    // handlers or flushing its copied stdio buffers.
    unsafe { libc::_exit(0) }
}

/// Runs `f` on a thread in `p`'s namespace if the name still leads to the
/// namespace the daemon joined; None if it went away.
fn in_namespace<T: Send>(
    p: &Watched,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<Option<T>> {
    let file = p.spec.path().map(std::fs::File::open).transpose();
    let file = match file {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    if let Some(f) = &file {
        if f.metadata().map(|m| (m.dev(), m.ino()))? != p.id {
            return Ok(None);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(f) = &file {
                // SAFETY: setns on a namespace fd we own; it changes only
                // this thread, which ends with the scope.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            f().map(Some)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("warden thread panicked")))
    })
}
