//! Emulated sockets inherited across exec, and what the library does
//! before something that may exec.
//!
//! exec drops the library's state while the application's fds stay open. A
//! freshly loaded library therefore looks once, at start-up, for fds that
//! are rendezvous objects of ours (abstract names under
//! `rendezvous::PREFIX`):
//! - a listener (an epoll instance in front of a listening Unix socket
//!   named after an emulated address, which goes across exec with the
//!   application's fd) is made again: inetd-style servers and `socat
//!   EXEC:` keep accepting;
//! - a default-mode listener (an epoll instance in front of a kernel TCP
//!   listener, inherited with it) becomes one again: the kernel listener
//!   goes back onto the fd number, and gets a new rendezvous;
//! - a socket bound to an emulated address, not listening, is bound again;
//! - a connection (a Unix stream socket whose own or peer name is ours) is
//!   re-attached: its segment and all ring state are in shared memory, and
//!   what the previous image leaves for the next is a *carrier* — an
//!   unnamed datagram socket (one end of a pair whose other end is closed
//!   once the message is in, so nobody else can write to it) holding one
//!   queued message: the connection's identity (role,
//!   addresses, the socket's cookie and inode) with the segment's memfd
//!   attached. A connection whose fd may go across exec (one of the
//!   application's fds for it is inheritable: `Connection::set_cloexec`)
//!   gets one only when an exec may follow — fork's prepare handler,
//!   posix_spawn, system, popen and the exec family call `before_exec` —
//!   and it then follows the fds' flag, as a listener's parts do. The
//!   exec'd library finds it among its own fds (never by
//!   looking a name up: another user could bind one; made by its own
//!   user or root: `carrier::same_user`), reads it with
//!   MSG_PEEK (it stays for a further exec), checks it against what the
//!   kernel says of the socket (cookie, inode, which end has the
//!   rendezvous name, an emulated address in that name, a privileged
//!   source port against the peer's uid), maps the segment again with
//!   every check a fresh attach makes (`Segment::reattach`), and goes on as
//!   a connection shared with another process (the program that exec'd may
//!   have forked and kept its copy: sidelocks, EOF by the kernel's
//!   hang-up). A connection that cannot be re-attached (no carrier, a
//!   check failed, a set-user-ID program: AT_SECURE) has its fd number
//!   pointed at a closed socket: the program reads end-of-stream and gets
//!   EPIPE on writes, and one `libshmnet:` line says why — rather than
//!   reading doorbell bytes as data.
//!
//! Listeners of non-local partition addresses (names in SHMNET_DIR, bound
//! through a /proc/self/fd path) are not recognised after exec.
//!
//! (A carrier's format, making and reading: `sockets::carrier`.)
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::net::{SocketAddrUnix, SocketType};
use shmnet_ring::{Role, Segment};

use crate::platform::config::Config;
use crate::platform::internal_fd::InternalFd;
use crate::platform::sys;
use crate::sockets::carrier::{carrier_cookie, read_carrier, whole_carrier};
use crate::sockets::conn::{Bell, Connection};
use crate::sockets::listener::Bound;
use crate::sockets::options_store::Options;
use crate::sockets::registry;
use crate::sockets::socket::Socket;
use crate::transport::rendezvous;

/// A SHMNET_DIR rendezvous of ours, by the name the kernel reports for
/// it: the library binds through the directory's descriptor, so it is
/// always `/proc/self/fd/<n>/<stem>` (`rendezvous::host_stem`:
/// `tcp4-<ip>-<port>`, `tcp6-<ip>-<port>`) — an application's own socket
/// at some `.../tcp4-...` path is not taken for one (review).
fn host_name(addr: Option<rustix::net::SocketAddrAny>) -> Option<Vec<u8>> {
    let unix = rustix::net::SocketAddrUnix::try_from(addr?).ok()?;
    let path = unix.path()?.to_bytes().to_vec();
    let rest = std::str::from_utf8(&path)
        .ok()?
        .strip_prefix("/proc/self/fd/")?;
    let (fd, last) = rest.split_once('/')?;
    if fd.is_empty() || !fd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = last;
    let rest = text
        .strip_prefix("tcp4-")
        .or_else(|| text.strip_prefix("tcp6-"))?;
    let (ip, port) = rest.rsplit_once('-')?;
    (ip.parse::<IpAddr>().is_ok() && port.parse::<u16>().is_ok()).then_some(path)
}

/// The name of an abstract Unix socket address of ours.
fn our_name(addr: Option<rustix::net::SocketAddrAny>) -> Option<Vec<u8>> {
    let unix = rustix::net::SocketAddrUnix::try_from(addr?).ok()?;
    let name = unix.abstract_name()?;
    // A connecting socket's own name says nothing of the connection (its
    // peer's does).
    (name.starts_with(rendezvous::PREFIX.as_bytes()) && !rendezvous::is_connecting_name(name))
        .then(|| name.to_vec())
}

/// A fd found at start-up that takes part in a connection's re-attachment.
enum Found {
    /// A connected Unix stream socket, with the name of ours on it if it
    /// has one (a connection to a listener in SHMNET_DIR has a path: it is
    /// one of ours only if a carrier names it).
    Connection(Option<Vec<u8>>),
    /// A carrier, for the connection socket with this cookie.
    Carrier(u64),
}

/// Scans the open fds once, at start-up (see the module docs).
pub(crate) fn adopt(config: &Config) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<(i32, Vec<u8>)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            // Only sockets and epoll instances can be ours: one readlink
            // each tells, before any socket call.
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.as_os_str().as_bytes().to_vec()))
        })
        .collect();
    let mut conns = Vec::new();
    let mut carriers = Vec::new();
    let mut epolls = Vec::new();
    for (fd, target) in fds {
        if fd <= 2 && !target.starts_with(b"socket:") {
            continue;
        }
        if target == b"anon_inode:[eventpoll]" {
            listener(config, fd);
            epolls.push(fd);
        } else if target.starts_with(b"socket:") {
            match socket(fd) {
                Some(Found::Connection(name)) => conns.push((fd, name)),
                Some(Found::Carrier(cookie)) => carriers.push((fd, cookie)),
                None => {}
            }
        }
    }
    connections(conns, carriers);
    // The program's own inherited epoll sets that hold re-attached
    // connections: our epoll_wait must know them, to report data that no
    // doorbell announced (it came while a flag was down).
    for fd in epolls {
        if registry::get(fd).is_some() {
            continue; // a listener of ours
        }
        let regs = registrations(fd);
        if regs.iter().any(|&(m, _, _)| registry::get(m).is_some()) {
            crate::sockets::readiness::adopt(fd, &regs);
        }
    }
}

fn socket(fd: i32) -> Option<Found> {
    let sock = sys::borrow_fd(fd);
    if rustix::net::sockopt::socket_domain(sock).ok() != Some(rustix::net::AddressFamily::UNIX) {
        return None;
    }
    let name = rustix::net::getsockname(sock).ok();
    if rustix::net::sockopt::socket_type(sock).ok() == Some(SocketType::DGRAM) {
        return carrier_cookie(sock, name).map(Found::Carrier);
    }
    let local = our_name(name.clone());
    match rustix::net::getpeername(sock) {
        // A connection: an accepted one carries its listener's name, a
        // connecting one has it as its peer (a listener in SHMNET_DIR: a
        // path whose last part is a host stem of ours). Any other Unix
        // socket is the application's, whatever a carrier may say.
        Ok(peer) => {
            let ours = local
                .or_else(|| our_name(peer.clone()))
                .or_else(|| host_name(name))
                .or_else(|| host_name(peer))?;
            Some(Found::Connection(Some(ours)))
        }
        // Bound, not listening (listening ones sit behind an epoll
        // instance): bound again.
        Err(_) => {
            if let Some(addr) = local.as_deref().and_then(rendezvous::parse_addr_name) {
                if !rustix::net::sockopt::socket_acceptconn(sock).unwrap_or(false) {
                    bound(fd, sock, addr);
                }
            }
            None
        }
    }
}

/// Something that may exec is about to happen (fork's prepare handler,
/// posix_spawn, system, popen, the exec family): every connection with an
/// inheritable fd gets its carrier now (`Connection::ready_for_exec`).
/// The flag is cleared before the walk: a connection that wants one after
/// the walk looked at it sets the flag again (its lock orders the two).
pub(crate) fn before_exec() {
    // Flags left down for an epoll set's waiter are raised: the program
    // that follows (or a forked child sharing the set) knows nothing of it.
    crate::sockets::readiness::crowd_all();
    if !crate::sockets::carrier::take_wanted() {
        return;
    }
    if crate::platform::sandbox::active() {
        // socket() and bind() are outside a sandbox's filter: no carriers.
        return;
    }
    let mut conns = Vec::new();
    registry::for_each_socket(|s| {
        if s.connection().is_some() {
            conns.push(s.clone());
        }
    });
    for s in &conns {
        if let Some(c) = s.connection() {
            c.ready_for_exec();
        }
    }
}

/// Re-attaches the connections among the inherited fds, or points them at
/// a closed socket (see the module docs); closes carriers left over.
fn connections(conns: Vec<(i32, Option<Vec<u8>>)>, carriers: Vec<(i32, u64)>) {
    // One connection may be behind several fds (dup2 onto 0 and 1).
    let mut groups: Vec<(Option<u64>, Vec<i32>, Vec<u8>)> = Vec::new();
    for (fd, name) in conns {
        let cookie = rustix::net::sockopt::socket_cookie(sys::borrow_fd(fd)).ok();
        let Some(name) = name else {
            continue;
        };
        match groups
            .iter_mut()
            .find(|g| cookie.is_some() && g.0 == cookie)
        {
            Some(g) => g.1.push(fd),
            None => groups.push((cookie, vec![fd], name)),
        }
    }
    let mut used = vec![false; carriers.len()];
    let mut matched = vec![false; carriers.len()];
    let secure = sys::secure_exec();
    for (cookie, fds, name) in groups {
        let mut why = String::from("no carrier came with it");
        let mut done = None;
        if secure {
            why = "this program runs set-user-ID or with gained privileges (AT_SECURE), and does not take a connection's shared memory from its caller"
                .into();
            for (i, &(_, c)) in carriers.iter().enumerate() {
                matched[i] |= cookie == Some(c);
            }
        } else if let Some(cookie) = cookie {
            for (i, &(_, c)) in carriers.iter().enumerate() {
                if c != cookie {
                    continue;
                }
                matched[i] = true;
                match reattach(fds[0], &name, cookie, sys::borrow_fd(carriers[i].0)) {
                    Ok(sock) => {
                        used[i] = true;
                        sys::close_inherited(carriers[i].0);
                        done = Some(sock);
                        break;
                    }
                    Err(e) => why = e,
                }
            }
        }
        match done {
            Some(sock) => {
                for &fd in &fds {
                    log!(
                        debug,
                        "fd {fd}: the connection (to {}) inherited across exec, re-attached",
                        String::from_utf8_lossy(&name)
                    );
                    let _ = registry::insert(fd, sock.clone());
                }
            }
            None => poison(&fds, &name, &why),
        }
    }
    // Carriers of connections that could not be re-attached go; one that
    // names no connection here may be the application's own datagram
    // socket that looks like one (review): left alone.
    for (i, &(fd, _)) in carriers.iter().enumerate() {
        if matched[i] && !used[i] {
            sys::close_inherited(fd);
        } else if !used[i] && whole_carrier(sys::borrow_fd(fd)) {
            // A whole carrier (its maker ours or root, its message and a
            // memfd) whose connection's fd went past our hooks
            // (posix_spawn's close action, a raw close): it would hold the
            // segment in flight for nothing.
            sys::close_inherited(fd);
        }
    }
}

/// The connection on app fd `fd` (whose socket has `cookie` and our name
/// `name`) from `carrier`; Err says why not.
fn reattach(
    fd: i32,
    name: &[u8],
    cookie: u64,
    carrier: BorrowedFd<'_>,
) -> Result<Arc<Socket>, String> {
    let app = sys::borrow_fd(fd);
    let (id, memfd) = read_carrier(carrier)?;
    let inode = rustix::fs::fstat(app).map_err(|e| e.to_string())?.st_ino as u64;
    if id.cookie != cookie || id.inode != inode {
        return Err("its carrier names another socket".into());
    }
    // Whom the kernel says this end is: an accepted socket has its
    // listener's name (ours, or a path in SHMNET_DIR), a connecting one
    // has it as its peer (its own name, if any, is an autobind one).
    let local = rustix::net::getsockname(app).ok();
    let named = our_name(local.clone()).is_some()
        || local
            .and_then(|a| SocketAddrUnix::try_from(a).ok())
            .is_some_and(|u| u.path().is_some_and(|p| !p.to_bytes().is_empty()));
    let role = if named {
        Role::Acceptor
    } else {
        Role::Connector
    };
    if role != id.role {
        return Err("its carrier says the other end".into());
    }
    // An emulated listener's name is its address: the end that has it
    // must agree.
    if let Some(addr) = rendezvous::parse_addr_name(name) {
        let said = match role {
            Role::Acceptor => id.local,
            Role::Connector => id.peer,
        };
        let (a, b) = (rendezvous::unmapped(addr), rendezvous::unmapped(said));
        if a.ip() != b.ip() || a.port() != b.port() {
            return Err(format!("its carrier says {said}, its name {addr}"));
        }
    }
    // A source port below ip_unprivileged_port_start is root's (accept
    // checks the same, servers trust such ports).
    if role == Role::Acceptor {
        let port = id.peer.port();
        let privileged =
            crate::transport::lookup::privileged_port(port) && !rendezvous::is_ephemeral(port);
        let root = sys::peer_cred(app).is_some_and(|(_, uid, _)| uid == 0);
        if port == 0 || (privileged && !root) {
            return Err(format!("its carrier says source port {port}"));
        }
    }
    let seg = Segment::reattach(memfd, role).map_err(|e| format!("its shared memory: {e}"))?;
    let bell = Bell::new(app, Some(app.as_raw_fd()));
    // Kept, inheritable as the fds that brought it, for a further exec.
    let keep = InternalFd::dup(carrier).map_err(|e| e.to_string())?;
    rustix::io::fcntl_setfd(&keep, rustix::io::FdFlags::empty()).map_err(|e| e.to_string())?;
    let conn = Connection::adopt(seg, id.local, id.peer, bell, keep).map_err(|e| e.to_string())?;
    Ok(Arc::new(Socket::Stream(conn)))
}

fn bound(fd: i32, sock: BorrowedFd<'_>, addr: SocketAddr) {
    let Ok(copy) = InternalFd::dup(sock) else {
        return;
    };
    let b = Bound::new(
        rendezvous::Reservation::of_socket(addr, copy),
        None,
        Options::default(),
    );
    log!(
        debug,
        "fd {fd}: adopted the inherited socket bound to {addr}"
    );
    let _ = registry::insert(fd, Arc::new(Socket::Bound(b)));
}

/// The members of the epoll instance `fd` (from /proc/self/fdinfo) that
/// this process holds under the number they were registered with: a
/// registration names the fd number of the process that made it, which
/// here may be another file (or none), so the file's inode must match too.
fn members(fd: i32) -> Vec<i32> {
    registrations(fd).into_iter().map(|(m, _, _)| m).collect()
}

/// `members` with each one's registration: (fd, events, data), as the
/// kernel prints them (`tfd: %d events: %x data: %llx pos:%lli ino:%lx`).
fn registrations(fd: i32) -> Vec<(i32, u32, u64)> {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("tfd:")?.split_whitespace();
            let tfd: i32 = words.next()?.parse().ok()?;
            let mut field = |name: &str| -> Option<u64> {
                words.position(|w| w == name)?;
                u64::from_str_radix(words.next()?, 16).ok()
            };
            let events = field("events:")? as u32;
            let data = field("data:")?;
            let ino = words.find_map(|w| w.strip_prefix("ino:"))?;
            let ino = u64::from_str_radix(ino, 16).ok()?;
            let st = rustix::fs::fstat(sys::borrow_fd(tfd)).ok()?;
            (st.st_ino as u64 == ino).then_some((tfd, events, data))
        })
        .collect()
}

/// An inherited epoll instance is one of our listeners if its members say
/// so (a program's own epoll set that happens to watch a listener is left
/// alone unless that listener is its only member).
fn listener(config: &Config, fd: i32) {
    let all = members(fd);
    let listening =
        |m: i32| rustix::net::sockopt::socket_acceptconn(sys::borrow_fd(m)).unwrap_or(false);
    let inet = |m: i32| {
        matches!(
            rustix::net::sockopt::socket_domain(sys::borrow_fd(m)),
            Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6)
        )
    };
    // A default-mode listener: a kernel listener with the rendezvous named
    // after its cookie beside it (a program's own epoll set watching a
    // listener has no such thing). Else an emulated one: a listening Unix
    // socket of ours (parked connections may be members too).
    let dual = all
        .iter()
        .copied()
        .filter(|&m| inet(m) && listening(m))
        .find_map(|m| Some((m, cookie_rendezvous(&all, sys::borrow_fd(m))?)));
    let first = match dual {
        Some((m, _)) => m,
        None if all.iter().any(|&m| inet(m)) => return,
        None => match all.iter().copied().find(|&m| listening(m)) {
            Some(m) => m,
            None => return,
        },
    };
    let t = sys::borrow_fd(first);
    let app = sys::borrow_fd(fd);
    let cloexec =
        rustix::io::fcntl_getfd(app).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
    // The application's blocking mode was the epoll instance's.
    let nonblock =
        rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    match rustix::net::sockopt::socket_domain(t) {
        Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6) => {
            let Some((_, rv)) = dual else {
                return;
            };
            dual_again(config, fd, first, rv, cloexec, nonblock);
        }
        Ok(rustix::net::AddressFamily::UNIX) => emulated_again(fd, first, cloexec, nonblock),
        _ => {}
    }
}

/// `listener`: a default-mode one (kernel listener `first`, rendezvous
/// `rv`) made again on the application's fd `fd`.
fn dual_again(config: &Config, fd: i32, first: i32, rv: i32, cloexec: bool, nonblock: bool) {
    let t = sys::borrow_fd(first);
    let Ok(rv_copy) = InternalFd::dup(sys::borrow_fd(rv)) else {
        return;
    };
    sys::set_nonblock(t, nonblock);
    if sys::dup_onto(t, fd, cloexec).is_err() {
        return;
    }
    sys::close_inherited(first);
    sys::close_inherited(rv);
    log!(debug, "fd {fd}: an inherited listener, made again");
    let _ = crate::calls::listen::listen_tcp_with(fd, libc::SOMAXCONN, config, Some(rv_copy));
}

/// `listener`: an emulated one (listening Unix socket `first`) made again
/// on the application's fd `fd`.
fn emulated_again(fd: i32, first: i32, cloexec: bool, nonblock: bool) {
    let t = sys::borrow_fd(first);
    let Some(addr) =
        our_name(rustix::net::getsockname(t).ok()).and_then(|n| rendezvous::parse_addr_name(&n))
    else {
        return;
    };
    // Bound again from its socket, then listening again (a new
    // epoll instance and parking queue replace the old ones).
    let Ok(copy) = InternalFd::dup(t) else {
        return;
    };
    sys::set_nonblock(t, nonblock);
    if sys::dup_onto(t, fd, cloexec).is_err() {
        return;
    }
    sys::close_inherited(first);
    let b = Bound::new(
        rendezvous::Reservation::of_socket(addr, copy),
        None,
        Options::default(),
    );
    log!(debug, "fd {fd}: adopted the inherited listener of {addr}");
    let _ = crate::calls::listen::listen_emulated(fd, &b, libc::SOMAXCONN);
}

/// The one of `members` that is the listening rendezvous
/// named after kernel listener `tcp`'s cookie.
fn cookie_rendezvous(members: &[i32], tcp: BorrowedFd<'_>) -> Option<i32> {
    let cookie = rustix::net::sockopt::socket_cookie(tcp).ok()?;
    let want = rendezvous::cookie_name(cookie);
    members.iter().copied().find(|&m| {
        let u = sys::borrow_fd(m);
        rustix::net::sockopt::socket_domain(u).ok() == Some(rustix::net::AddressFamily::UNIX)
            && rustix::net::sockopt::socket_acceptconn(u).unwrap_or(false)
            && our_name(rustix::net::getsockname(u).ok()).as_deref() == Some(want.as_bytes())
    })
}

/// Points `fds` at a socket whose peer is closed (EOF on read, EPIPE on write).
fn poison(fds: &[i32], name: &[u8], why: &str) {
    crate::platform::log::always(format_args!(
        "fd {}: an emulated connection (to {}) inherited across exec cannot be re-attached \
         ({why}); it reads as closed",
        fds.iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        String::from_utf8_lossy(name)
    ));
    let Some(dead) = sys::closed_socket() else {
        return;
    };
    for &fd in fds {
        let cloexec = rustix::io::fcntl_getfd(sys::borrow_fd(fd))
            .is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC));
        let _ = sys::dup_onto(dead.as_fd(), fd, cloexec);
    }
}

/// A socket of ours another process passed here with SCM_RIGHTS
/// (`calls::passing`), on fd `fd`, made ours as an exec'd program makes
/// an inherited one: an emulated listener's listening Unix socket listens
/// again behind an instance of ours, an emulated bound socket is bound
/// again, a connection (default mode or emulated) is re-attached from its
/// carrier among `carriers` (fd, the cookie it is for), or, if none came
/// or a check fails, left as the bare Unix socket with one `libshmnet:`
/// line. `cloexec`: the fd's flag (MSG_CMSG_CLOEXEC), which what the
/// library keeps for it follows.
pub(crate) fn adopt_received(fd: i32, carriers: &[(i32, u64)], cloexec: bool) {
    // (A Unix stream socket: `passing::among`.)
    let sock = sys::borrow_fd(fd);
    let local = our_name(rustix::net::getsockname(sock).ok());
    match rustix::net::getpeername(sock) {
        Ok(peer) => {
            let Some(name) = local.or_else(|| our_name(peer)) else {
                return;
            };
            let Ok(cookie) = rustix::net::sockopt::socket_cookie(sock) else {
                return;
            };
            let why = match carriers.iter().find(|&&(_, c)| c == cookie) {
                None => "no carrier came with it (its sender ran an older library, or \
                         kept no shared memory for it)"
                    .to_string(),
                Some(&(carrier, _)) => match reattach(fd, &name, cookie, sys::borrow_fd(carrier)) {
                    Ok(s) => {
                        log!(
                            debug,
                            "fd {fd}: a connection (to {}) passed with SCM_RIGHTS, re-attached",
                            String::from_utf8_lossy(&name)
                        );
                        s.set_cloexec(cloexec);
                        let _ = registry::insert(fd, s);
                        return;
                    }
                    Err(e) => e,
                },
            };
            crate::platform::log::always(format_args!(
                "fd {fd}: a connection over shared memory (to {}) passed with SCM_RIGHTS \
                 cannot be re-attached ({why}): it is a bare Unix socket here",
                String::from_utf8_lossy(&name)
            ));
        }
        Err(_) => {
            let Some(addr) = local.as_deref().and_then(rendezvous::parse_addr_name) else {
                return;
            };
            if !rustix::net::sockopt::socket_acceptconn(sock).unwrap_or(false) {
                bound(fd, sock, addr);
                return;
            }
            let Ok(copy) = InternalFd::dup(sock) else {
                return;
            };
            let b = Bound::new(
                rendezvous::Reservation::of_socket(addr, copy),
                None,
                Options::default(),
            );
            log!(
                debug,
                "fd {fd}: a listener of {addr} passed with SCM_RIGHTS, adopted"
            );
            // The socket's O_NONBLOCK is the sender's application's mode
            // (`passing::sent`): the instance takes it, the socket is the
            // library's again (its accepts never wait).
            let Ok(keep) = InternalFd::dup(sock) else {
                return;
            };
            let _ = crate::calls::listen::listen_emulated(fd, &b, libc::SOMAXCONN);
            sys::set_nonblock(keep.as_fd(), true);
        }
    }
}
