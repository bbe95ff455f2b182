//! Dual listeners: under `SHMNET_FALLBACK=tcp` (the default), a kernel TCP
//! listener on a partition address or on the wildcard keeps listening for
//! plain clients and also accepts shared-memory connections.
//!
//! ```text
//!   app fd N ──> epoll instance ─┬─> kernel TCP listener   (plain clients)
//!                                └─> rendezvous Unix socket (preloaded clients)
//! ```
//!
//! listen() moves the TCP listener to an fd of the library's own and
//! re-points the application's fd number (dup3) at an epoll instance that
//! holds both listeners: one kernel object, readable when either has a
//! connection waiting, so the application's single poll/epoll/select
//! registration and its one accept loop see both kinds. accept() takes from
//! whichever has one (alternating, so neither starves), the shared-memory
//! one through the connect handshake. Everything else a listener is asked
//! (getsockname, getsockopt, setsockopt, listen again) goes to the kernel
//! TCP listener, so the answers are the kernel's. The port is the kernel's
//! too: a port taken by any kernel socket is EADDRINUSE at bind, and
//! SO_REUSEPORT groups form in the kernel.
//!
//! The rendezvous is named after the bound address
//! (`rendezvous::dual_stem`); connectors look for the exact address, then
//! the wildcards of its port. Several processes listening on one port with
//! SO_REUSEPORT each get a rendezvous (the first the plain name, the others
//! `NAME.PID`); each connection is queued on exactly one of them, so it is
//! accepted exactly once.
#![deny(unsafe_code)]

use core::ffi::c_int;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libc::{sockaddr, socklen_t};
use rustix::event::epoll;
use rustix::io::Errno;

use crate::config::Config;
use crate::hooks::Action;
use crate::lock::Mutex;
use crate::rendezvous::{self, Reservation};
use crate::socket::{accept_handshake, as_family, InternalFd, Options, Socket};
use crate::{registry, sys};

pub(crate) struct DualListener {
    /// The kernel listener's name (the wildcard, if bound to it).
    pub local: SocketAddr,
    tcp: InternalFd,
    rendezvous: InternalFd,
    path: PathBuf,
    _name: Option<Reservation>,
    fork_generation: u32,
    /// Which kind accept() tries first next time.
    shm_first: AtomicBool,
    /// Our own reference to the epoll instance behind the application's fd.
    epoll: InternalFd,
    /// Rendezvous connections accepted before their connect message arrived
    /// (the connector was descheduled between connect and send): parked in
    /// the epoll instance, so the application is woken when it arrives,
    /// instead of an event loop waiting for it inside accept().
    pending: Mutex<Vec<OwnedFd>>,
    /// Unused: options go to the kernel listener.
    pub opts: Options,
}

impl Drop for DualListener {
    fn drop(&mut self) {
        // As for a listener: only the process that made it, unforked since.
        if self.fork_generation == registry::fork_generation() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn fail<R>(e: Errno) -> Action<R> {
    Action::Fail(e.raw_os_error())
}

/// listen(2) on a kernel socket under `SHMNET_FALLBACK=tcp`: the real
/// listen, then, for an IPv4/IPv6 stream socket bound to a partition address
/// or the wildcard, the dual listener. Not being able to make the
/// shared-memory half is not an error for the application (plain TCP
/// still works): it is logged.
pub(crate) fn listen(fd: c_int, backlog: c_int, config: &Config) -> Action<c_int> {
    let sock = sys::borrow_fd(fd);
    let is_tcp = rustix::net::sockopt::socket_type(sock) == Ok(rustix::net::SocketType::STREAM)
        && matches!(
            rustix::net::sockopt::socket_domain(sock),
            Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6)
        );
    if !is_tcp {
        return Action::Pass;
    }
    if let Err(e) = rustix::net::listen(sock, backlog) {
        return fail(e);
    }
    let Some(local) = sys::local_name(sock) else {
        return Action::Done(0);
    };
    if !(config.is_partition_ip(local.ip()) || local.ip().is_unspecified()) {
        return Action::Done(0);
    }
    match make(fd, local, backlog, config) {
        Ok(()) => {}
        Err(e) => log!(
            warn,
            "listen on {local}: no shared-memory listener ({e}); kernel TCP only"
        ),
    }
    Action::Done(0)
}

fn make(fd: c_int, local: SocketAddr, backlog: c_int, config: &Config) -> Result<(), Errno> {
    let app = sys::borrow_fd(fd);
    let v6only = local.is_ipv6() && rustix::net::sockopt::ipv6_v6only(app).unwrap_or(false);
    let stem = rendezvous::dual_stem(local, v6only);
    let (name, path) = match rendezvous::reserve_named(&config.dir_path(), &stem, local) {
        Ok(r) => (Some(r), config.dir_path().join(&stem)),
        // Another live listener shares the port (SO_REUSEPORT).
        Err(Errno::ADDRINUSE) => (
            None,
            config
                .dir_path()
                .join(format!("{stem}.{}", std::process::id())),
        ),
        Err(e) => return Err(e),
    };
    let unix = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        None,
    )?;
    let uname = rustix::net::SocketAddrUnix::new(&path)?;
    let _ = std::fs::remove_file(&path); // ours: a stale one of a dead process
    rustix::net::bind(&unix, &uname)?;
    rustix::net::listen(&unix, backlog)?;
    let rendezvous = InternalFd::new(unix);
    let tcp = InternalFd::new(rustix::io::fcntl_dupfd_cloexec(
        app,
        crate::socket::internal_fd_floor(),
    )?);
    let fl = rustix::fs::fcntl_getfl(&tcp)?;
    let nonblock_app = fl.contains(rustix::fs::OFlags::NONBLOCK);
    let cloexec = rustix::io::fcntl_getfd(app)?.contains(rustix::io::FdFlags::CLOEXEC);
    if !cloexec {
        // Inherited across exec with the application's fd, so that the
        // program exec'd finds the listener behind it (see `inherit`).
        rustix::io::fcntl_setfd(&tcp, rustix::io::FdFlags::empty())?;
    }
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &ep,
        &tcp,
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN,
    )?;
    epoll::add(
        &ep,
        &rendezvous,
        epoll::EventData::new_u64(1),
        epoll::EventFlags::IN,
    )?;
    // The listeners themselves never block us; the app's fd (the epoll
    // instance) carries the application's O_NONBLOCK from here on.
    rustix::fs::fcntl_setfl(&tcp, fl | rustix::fs::OFlags::NONBLOCK)?;
    if nonblock_app {
        let efl = rustix::fs::fcntl_getfl(&ep)?;
        rustix::fs::fcntl_setfl(&ep, efl | rustix::fs::OFlags::NONBLOCK)?;
    }
    sys::dup_onto(ep.as_fd(), fd, cloexec)?;
    let dual = DualListener {
        local,
        tcp,
        rendezvous,
        path,
        _name: name,
        fork_generation: registry::fork_generation(),
        shm_first: AtomicBool::new(true),
        epoll: InternalFd::new(ep),
        pending: Mutex::new(Vec::new()),
        opts: Options::default(),
    };
    log!(
        debug,
        "fd {fd}: dual listener on {local} (kernel TCP and {})",
        dual.path.display()
    );
    registry::insert(fd, Arc::new(Socket::Dual(dual))).map_err(|()| Errno::MFILE)
}

impl DualListener {
    /// In a forked child: a parent thread may have held the pending list.
    pub(crate) fn reset_after_fork(&self) {
        self.pending.reset_after_fork();
    }

    /// See `options::mirror_cloexec`.
    pub(crate) fn set_cloexec(&self, cloexec: bool) {
        let flags = if cloexec {
            rustix::io::FdFlags::CLOEXEC
        } else {
            rustix::io::FdFlags::empty()
        };
        let _ = rustix::io::fcntl_setfd(&self.tcp, flags);
    }

    /// The kernel TCP listener, for the calls that go to it.
    pub(crate) fn tcp(&self) -> BorrowedFd<'_> {
        self.tcp.as_fd()
    }

    /// listen(2) again (a new backlog): both halves.
    pub(crate) fn relisten(&self, backlog: c_int) -> Action<c_int> {
        let _ = rustix::net::listen(&self.rendezvous, backlog);
        match rustix::net::listen(&self.tcp, backlog) {
            Ok(()) => Action::Done(0),
            Err(e) => fail(e),
        }
    }

    /// accept4(2): a connection from either half; blocking unless the
    /// application's fd is non-blocking, with SO_RCVTIMEO as the kernel's
    /// accept honours it, and signals as for a restartable call.
    pub(crate) fn accept(
        &self,
        fd: c_int,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
    ) -> Action<c_int> {
        if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
            return fail(Errno::INVAL);
        }
        let app = sys::borrow_fd(fd);
        let nonblocking =
            rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
        let timeout =
            rustix::net::sockopt::socket_timeout(&self.tcp, rustix::net::sockopt::Timeout::Recv)
                .ok()
                .flatten();
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            let shm_first = self.shm_first.fetch_xor(true, Ordering::Relaxed);
            for shm in [shm_first, !shm_first] {
                let got = if shm {
                    self.accept_shm(addr, len, flags, nonblocking)
                } else {
                    self.accept_tcp(addr, len, flags)
                };
                match got {
                    Err(Errno::AGAIN) => {}
                    Ok(fd) => return Action::Done(fd),
                    Err(e) => return fail(e),
                }
            }
            if nonblocking {
                return fail(Errno::AGAIN);
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return fail(Errno::AGAIN),
                },
            };
            match crate::handshake::wait_readable(app, left) {
                Ok(_) => {}
                Err(Errno::INTR) if sys::interrupted_call_restarts() => {}
                Err(e) => return fail(e),
            }
        }
    }

    fn accept_tcp(
        &self,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
    ) -> Result<c_int, Errno> {
        #[allow(unsafe_code)]
        // SAFETY: accept4(2)'s contract for `addr`/`len` is the caller's.
        let fd =
            unsafe { crate::hooks::real::accept4(self.tcp.as_fd().as_raw_fd(), addr, len, flags) };
        if fd < 0 {
            return Err(Errno::from_raw_os_error(sys::errno()));
        }
        crate::descriptor::fresh(fd);
        Ok(fd)
    }

    fn accept_shm(
        &self,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
        nonblocking: bool,
    ) -> Result<c_int, Errno> {
        // Parked ones whose message has arrived, first.
        {
            let mut pending = self.pending.lock();
            let mut i = 0;
            while i < pending.len() {
                match accept_handshake(pending[i].as_fd(), self.local, true, Duration::ZERO) {
                    Err(Errno::TIMEDOUT) => i += 1,
                    done => {
                        let conn = pending.swap_remove(i);
                        let _ = epoll::delete(&self.epoll, &conn);
                        match done {
                            Ok(c) => return self.finish(conn, c, addr, len, flags),
                            Err(e) => crate::socket::handshake_failed(self.local, e),
                        }
                    }
                }
            }
        }
        // A blocking accept waits a little for a late message; an event
        // loop's non-blocking one parks it instead (below) — unless other
        // processes share this listener (a forked server): the epoll
        // instance is theirs too, and they would be woken for a connection
        // only this process can complete. Then it waits a little too.
        let shared = self.fork_generation != registry::fork_generation();
        let park = nonblocking && !shared;
        let patience = if park {
            Duration::ZERO
        } else if nonblocking {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(2)
        };
        loop {
            let conn: OwnedFd = rustix::net::accept_with(
                &self.rendezvous,
                rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            )?;
            crate::descriptor::fresh(conn.as_raw_fd());
            match accept_handshake(conn.as_fd(), self.local, true, patience) {
                Ok(c) => return self.finish(conn, c, addr, len, flags),
                Err(Errno::TIMEDOUT) if park => {
                    if epoll::add(
                        &self.epoll,
                        &conn,
                        epoll::EventData::new_u64(2),
                        epoll::EventFlags::IN,
                    )
                    .is_ok()
                    {
                        self.pending.lock().push(conn);
                    }
                }
                Err(e) => crate::socket::handshake_failed(self.local, e),
            }
        }
    }

    /// Hands an accepted shared-memory connection to the application, with
    /// the flags of its accept4 call.
    fn finish(
        &self,
        conn: OwnedFd,
        connection: crate::socket::Connection,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
    ) -> Result<c_int, Errno> {
        if flags & libc::SOCK_NONBLOCK == 0 {
            let fl = rustix::fs::fcntl_getfl(&conn)?;
            rustix::fs::fcntl_setfl(&conn, fl - rustix::fs::OFlags::NONBLOCK)?;
        }
        if flags & libc::SOCK_CLOEXEC == 0 {
            rustix::io::fcntl_setfd(&conn, rustix::io::FdFlags::empty())?;
        }
        let peer = connection.peer;
        if registry::insert(conn.as_raw_fd(), Arc::new(Socket::Stream(connection))).is_err() {
            return Err(Errno::MFILE);
        }
        let raw = conn.into_raw_fd();
        let peer = as_family(peer, self.local.is_ipv6()).unwrap_or(peer);
        #[allow(unsafe_code)]
        // SAFETY: accept(2) requires `addr`/`len` to be null or valid.
        unsafe {
            sys::put_socket_addr(peer, addr, len)
        };
        crate::stats::accepted_shm();
        Ok(raw)
    }
}
