//! The warden: a small process that outlives the daemon. It holds the read
//! end of a pipe only the daemon can write; when that pipe ends — the
//! daemon exited, however, SIGKILL included — and the daemon had said its
//! devices were up (arming it with each device's ifindex), it aborts in
//! each partition's namespace the TCP connections between two addresses
//! of the segment (`sockdiag`). Their devices went with the daemon, so
//! without this they would hang until TCP's own timeouts (review s28 #7):
//! now blocked calls fail at once with ECONNABORTED.
//!
//! It runs in a session (and process group) of its own and ignores every
//! signal it can, so whatever kills the daemon's group (Ctrl-C, Ctrl-\,
//! `kill -9 %1`, `timeout -s KILL`) leaves it to do its work (review s29
//! #1). It is forked before the daemon starts any thread; should it die
//! while the daemon runs, the daemon reaps it, says so and starts another
//! by executing its own binary (`RESPAWN_ARG`), armed at once.
//!
//! It holds no namespace open (a deleted namespace must be freed, review
//! s28 #6): at the end it opens each by its name again and goes in only if
//! it is still the same namespace (device and inode), and only if none of
//! the partition's addresses is now on another device than the one the
//! daemon made: a newer NIC's (review s29 #2: a delayed warden of an old
//! daemon aborted connections made through a new one).

use crate::netns::NsSpec;
use crate::sockdiag;
use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The first argument that makes the `shmnet` binary a warden
/// ([`respawned_main`]).
pub const RESPAWN_ARG: &str = "__nic-warden";

static CAN_RESPAWN: AtomicBool = AtomicBool::new(false);

/// Says this process's own binary runs [`respawned_main`] when given
/// [`RESPAWN_ARG`], so a warden that died can be replaced.
pub fn enable_respawn() {
    CAN_RESPAWN.store(true, Ordering::Relaxed);
}

/// One partition as the warden sees it.
#[derive(Clone)]
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
    pid: libc::pid_t,
    parts: Vec<Watched>,
    /// The devices' ifindexes, once armed.
    armed: Option<Vec<u32>>,
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
        let mut w = Warden {
            pipe: None,
            pid: 0,
            parts,
            armed: None,
        };
        if threads != Some(true) {
            eprintln!("shmnet: nic: not single-threaded: connections will not be aborted when the NIC ends");
            return Ok(w);
        }
        let (rd, wr) = pipe()?;
        // SAFETY: this process has one thread (checked above), so the child
        // may run Rust code; it never returns (it _exits).
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(wr);
                // SAFETY: in the forked child: the pipe's read end moves to
                // fd 3 and every other descriptor above 2 closes (the
                // devices, the region, the --daemon readiness pipe: none
                // may outlive the daemon through us).
                unsafe {
                    libc::dup2(rd.as_raw_fd(), 3);
                    libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
                }
                std::mem::forget(rd); // fd 3 now, or closed by close_range
                let parts = std::mem::take(&mut w.parts);
                watch(parts)
            }
            pid => {
                w.pipe = Some(wr);
                w.pid = pid;
                Ok(w)
            }
        }
    }

    /// Tells the warden the devices are up (`ifindex`: each partition's
    /// device): from now on, its end aborts the segment's connections.
    pub fn arm(&mut self, ifindex: Vec<u32>) {
        if let Some(p) = &self.pipe {
            write_arm(p, &ifindex);
        }
        self.armed = Some(ifindex);
    }

    /// Called now and then by the daemon: if the warden died, reaps it,
    /// says so, and starts another where this binary can be one.
    pub fn check(&mut self) {
        if self.pid <= 0 {
            return;
        }
        let mut st = 0;
        // SAFETY: waitpid on our own child, without blocking.
        if unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) } != self.pid {
            return;
        }
        let how = if libc::WIFSIGNALED(st) {
            format!("killed by signal {}", libc::WTERMSIG(st))
        } else {
            format!("exited with {}", libc::WEXITSTATUS(st))
        };
        self.pid = 0;
        self.pipe = None;
        if !CAN_RESPAWN.load(Ordering::Relaxed) {
            eprintln!(
                "shmnet: nic: the warden ({how}) is gone: when this NIC ends, its TCP connections will hang until TCP's own timeouts instead of being aborted"
            );
            return;
        }
        match self.respawn() {
            Ok(pid) => eprintln!("shmnet: nic: the warden ({how}) is gone; a new one is pid {pid}"),
            Err(e) => eprintln!(
                "shmnet: nic: the warden ({how}) is gone and none can be started ({e}): when this NIC ends, its TCP connections will hang until TCP's own timeouts instead of being aborted"
            ),
        }
    }

    /// A new warden: this binary again (safe with threads: std's spawn
    /// execs at once), its pipe on stdin, armed as this one was.
    fn respawn(&mut self) -> io::Result<libc::pid_t> {
        let (rd, wr) = pipe()?;
        let mut c = std::process::Command::new("/proc/self/exe");
        c.arg(RESPAWN_ARG);
        for p in &self.parts {
            let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
            c.arg(p.spec.to_string())
                .arg(p.id.0.to_string())
                .arg(p.id.1.to_string())
                .arg(addrs.join(","));
        }
        let child = c
            .stdin(std::process::Stdio::from(rd))
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let pid = child.id() as libc::pid_t;
        drop(child); // reaped by check(), by pid
        if let Some(ix) = &self.armed {
            write_arm(&wr, ix);
        }
        self.pipe = Some(wr);
        self.pid = pid;
        Ok(pid)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, owned just below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2, each owned once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The arming message: each ifindex, 4 bytes (at most 16 partitions: 64
/// bytes, under PIPE_BUF, so one atomic write).
fn write_arm(p: &OwnedFd, ifindex: &[u32]) {
    let m: Vec<u8> = ifindex.iter().flat_map(|i| i.to_ne_bytes()).collect();
    // SAFETY: m.len() bytes from a valid buffer to our pipe's write end.
    let _ = unsafe { libc::write(p.as_raw_fd(), m.as_ptr().cast(), m.len()) };
}

/// The `shmnet __nic-warden` process (`args` after RESPAWN_ARG: per
/// partition its namespace, device, inode and comma-separated
/// addresses); its pipe is stdin. Never returns.
pub fn respawned_main(args: &[String]) -> ! {
    let mut parts = Vec::new();
    for a in args.chunks(4) {
        let part = (|| {
            let [spec, dev, ino, addrs] = a else {
                return None;
            };
            Some(Watched {
                spec: NsSpec::parse(spec).ok()?,
                id: (dev.parse().ok()?, ino.parse().ok()?),
                addrs: addrs
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().ok())
                    .collect::<Option<_>>()?,
            })
        })();
        match part {
            Some(p) => parts.push(p),
            None => {
                eprintln!("shmnet: nic: bad warden arguments");
                // SAFETY: ends this process.
                unsafe { libc::_exit(2) }
            }
        }
    }
    // SAFETY: stdin (our pipe) moves to fd 3, as in a forked warden; the
    // rest above 2 closes (std opens everything close-on-exec anyway).
    unsafe {
        libc::dup2(0, 3);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
        }
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    watch(parts)
}

/// Signals the warden does not ignore: those only it could cause (a
/// fault), and those nobody can ignore.
const KEPT: [libc::c_int; 8] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// The warden's life (its pipe on fd 3): wait for the pipe to end, then
/// abort.
fn watch(parts: Vec<Watched>) -> ! {
    // SAFETY: in the warden (single-threaded): a session of its own, so
    // signals to the daemon's process group or terminal miss it; every
    // other catchable signal ignored (SIG_IGN also survives an exec);
    // prctl names it for ps.
    unsafe {
        libc::setsid();
        for sig in 1..=libc::SIGRTMAX() {
            if !KEPT.contains(&sig) {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
        libc::prctl(libc::PR_SET_NAME, c"shmnet-warden".as_ptr());
    }
    let mut msg = Vec::new();
    let mut b = [0u8; 64];
    loop {
        // SAFETY: reading into a valid buffer from fd 3, our pipe.
        let n = unsafe { libc::read(3, b.as_mut_ptr().cast(), b.len()) };
        if n > 0 {
            msg.extend_from_slice(&b[..n as usize]);
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    let armed = msg.len() == 4 * parts.len();
    if armed {
        let ifindex = msg
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap_or_default()));
        let all: Vec<IpAddr> = parts.iter().flat_map(|p| p.addrs.clone()).collect();
        for (p, ix) in parts.iter().zip(ifindex) {
            let r = in_namespace(p, || {
                if let Some(dev) = carried_elsewhere(&p.addrs, ix)? {
                    return Ok(Err(dev));
                }
                sockdiag::abort_connections(&p.addrs, &all).map(Ok)
            });
            match r {
                Ok(Some(Ok(n))) if n > 0 => eprintln!(
                    "shmnet: nic: {} connection(s) in {} aborted (the NIC ended)",
                    n, p.spec
                ),
                Ok(Some(Err(dev))) => eprintln!(
                    "shmnet: nic: {}'s addresses are on {dev} now (a newer NIC?): its connections left alone",
                    p.spec
                ),
                Ok(_) => {}
                Err(e) => eprintln!(
                    "shmnet: nic: cannot abort the connections in {}: {e}",
                    p.spec
                ),
            }
        }
    }
    // SAFETY: ends the warden without running exit handlers or flushing
    // stdio buffers copied from the daemon.
    unsafe { libc::_exit(0) }
}

/// The name of a device of this thread's namespace, other than ifindex
/// `ours`, that carries one of `addrs` (None: none does).
fn carried_elsewhere(addrs: &[IpAddr], ours: u32) -> io::Result<Option<String>> {
    let mut list: *mut libc::ifaddrs = core::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` (freed below); its netlink socket is
    // made in this thread's namespace.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut at = list;
    while !at.is_null() && found.is_none() {
        // SAFETY: a node of the list getifaddrs made, valid until freeifaddrs.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sa = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        if !addrs.contains(&addr) {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated name in the list.
        let index = unsafe { libc::if_nametoindex(ifa.ifa_name) };
        if index != ours {
            // SAFETY: as above.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
        }
    }
    // SAFETY: the list getifaddrs made, freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
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
