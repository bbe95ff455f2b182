//! listen(2): makes the listener (`sockets::listener`) — the kernel
//! listener's dual in the default mode, the emulated one of a bound
//! socket — puts its epoll instance on the application's fd, registers
//! it, and replays the epoll registrations the socket had (`carry`).
//! Also bind's joining of an SO_REUSEPORT group, which asks a listener.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::platform::config::Config;
use crate::platform::internal_fd::InternalFd;
use crate::platform::real::Action;
use crate::platform::{stats, sys};
use crate::sockets::listener::{dup_owned, early, Bound, Listener, Parts, Rendezvous};
use crate::sockets::options_store::Options;
use crate::sockets::registry;
use crate::sockets::socket::Socket;
use crate::transport::handshake::{self, Kind};
use crate::transport::rendezvous::{self, HostName, Reservation};

fn fail<R>(e: Errno) -> Action<R> {
    Action::Fail(e.raw_os_error())
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A rendezvous listens with the largest backlog the namespace allows
/// (net.core.somaxconn, 4096 by default), whatever the application asked
/// for. Kernel TCP keeps a connector whose SYN found the accept queue full
/// trying (SYN retries), so every client of a briefly stalled server
/// connects in the end; a Unix connect to a full queue fails at once
/// (EAGAIN) instead. A queue as deep as the kernel permits anyone is the
/// kernel's behaviour for a listener that asked for it — connectors
/// complete at once and wait in the queue, as TCP's do when there is room.
/// (The application's backlog stays on its kernel TCP listener.)
const RENDEZVOUS_BACKLOG: c_int = c_int::MAX;

fn stream_listener(sock: &OwnedFd) -> Result<(), Errno> {
    let fl = rustix::fs::fcntl_getfl(sock)?;
    rustix::fs::fcntl_setfl(sock, fl | rustix::fs::OFlags::NONBLOCK)?;
    rustix::net::listen(sock, RENDEZVOUS_BACKLOG)
}

/// listen(2) under `SHMNET_FALLBACK=tcp`: the real listen, then, for an
/// IPv4/IPv6 stream socket bound to a partition address or the wildcard,
/// the listener. Not being able to make the shared-memory half is not an
/// error for the application (plain TCP still works): it is logged.
pub(crate) fn listen_tcp(fd: c_int, backlog: c_int, config: &Config) -> Action<c_int> {
    listen_tcp_with(fd, backlog, config, None)
}

/// `listen_tcp`, keeping `inherited` (the rendezvous of this kernel
/// listener, inherited across exec: it still holds the name, maybe shared
/// with the process that exec'd us) instead of binding a new one.
pub(crate) fn listen_tcp_with(
    fd: c_int,
    backlog: c_int,
    config: &Config,
    inherited: Option<InternalFd>,
) -> Action<c_int> {
    let sock = sys::borrow_fd(fd);
    let is_tcp = rustix::net::sockopt::socket_type(sock) == Ok(SocketType::STREAM)
        && matches!(
            rustix::net::sockopt::socket_domain(sock),
            Ok(AddressFamily::INET | AddressFamily::INET6)
        );
    if !is_tcp {
        return Action::Pass;
    }
    // An inherited listener listens already: its backlog is the process
    // that made it's (a program it runs must not change it).
    let adopting = inherited.is_some();
    if !adopting {
        if let Err(e) = rustix::net::listen(sock, backlog) {
            return fail(e);
        }
    }
    let Some(local) = sys::local_name(sock) else {
        crate::sockets::carry::done(fd);
        return Action::Done(0);
    };
    if !(config.is_partition_ip(local.ip()) || local.ip().is_unspecified()) {
        outside_partitions(local, config);
        crate::sockets::carry::done(fd);
        return Action::Done(0);
    }
    match make_dual(fd, local, config, inherited) {
        Ok(()) => crate::sockets::readiness::replay_carried(fd, false),
        Err(e) => {
            crate::sockets::carry::done(fd);
            log!(
                warn,
                "listen on {local}: no shared-memory listener ({e}); kernel TCP only"
            );
        }
    }
    Action::Done(0)
}

/// bind(2) of a default-mode kernel TCP socket by root to an address its
/// listen would accelerate: the rendezvous that listen takes, made now
/// with root's credentials (`early`: a child of another user may be the
/// one that listens). Failing costs only that case: logged.
pub(crate) fn bind_early(fd: c_int, config: &Config) {
    if euid() != 0 {
        return;
    }
    let app = sys::borrow_fd(fd);
    let made = rustix::net::sockopt::socket_cookie(app).and_then(|cookie| {
        let name = rendezvous::cookie_name(cookie);
        let sock = rendezvous::bind_abstract(&name, SocketType::STREAM)?;
        stream_listener(&sock)?;
        Ok(early::Early {
            fd,
            cookie,
            maker: 0,
            sock: InternalFd::new(sock),
            hints: bind_hints(&name, config),
        })
    });
    match made {
        Ok(e) => early::keep(e),
        Err(e) => log!(debug, "bind(fd {fd}): no early rendezvous ({e})"),
    }
}

/// A listen on the SHMNET_GATEWAY address outside SHMNET_PARTITIONS gets no
/// shared-memory listener, so not the gateway name: said, not silent
/// (programs would find no gateway; found by the review of issue 17).
pub(crate) fn outside_partitions(local: SocketAddr, config: &Config) {
    if config
        .gateway
        .is_some_and(|g| rendezvous::unmapped(g) == rendezvous::unmapped(local))
    {
        crate::platform::log::always(format_args!(
            "listen on {local}: not the gateway (SHMNET_GATEWAY): {} is not in \
             SHMNET_PARTITIONS, so it has no shared-memory listener; kernel TCP only",
            local.ip()
        ));
    }
}

/// listen(2) on a kernel socket in the emulated mode (a non-partition
/// address: the kernel's); only says whether it misses the gateway name.
pub(crate) fn listen_kernel_emulated(fd: c_int, config: &Config) {
    if config.gateway.is_some() {
        if let Some(local) = sys::local_name(sys::borrow_fd(fd)) {
            if !config.is_partition_ip(local.ip()) {
                outside_partitions(local, config);
            }
        }
    }
}

fn make_dual(
    fd: c_int,
    local: SocketAddr,
    config: &Config,
    inherited: Option<InternalFd>,
) -> Result<(), Errno> {
    let adopting = inherited.is_some();
    let app = sys::borrow_fd(fd);
    // Connectors accept our rendezvous only from the kernel listener's
    // owner (SO_PEERCRED of the rendezvous is whoever listens on it, now).
    // (A rendezvous root made at bind carries root's credentials: taken
    // whoever listens now, if root made the socket too; `early`.)
    let owner = euid();
    let tcp_owner = rustix::fs::fstat(app)?.st_uid;
    let cookie = rustix::net::sockopt::socket_cookie(app)?;
    let made_early = if adopting {
        None
    } else {
        early::take(cookie).filter(|e| e.maker == tcp_owner)
    };
    if tcp_owner != owner && made_early.is_none() {
        log!(
            info,
            "listen on {local}: the socket belongs to uid {tcp_owner} but uid {owner} listens: \
             kernel TCP only"
        );
        return Err(Errno::PERM);
    }
    let name = rendezvous::cookie_name(cookie);
    let (sock, mut hints) = match (inherited, made_early) {
        (Some(sock), _) => (sock, bind_hints(&name, config)),
        (None, Some(e)) => (e.sock, e.hints),
        (None, None) => {
            let sock = rendezvous::bind_abstract(&name, SocketType::STREAM)?;
            stream_listener(&sock)?;
            (InternalFd::new(sock), bind_hints(&name, config))
        }
    };
    let mut rv = vec![Rendezvous::local(sock)];
    let gateway = !adopting
        && config
            .gateway
            .is_some_and(|g| rendezvous::unmapped(g) == rendezvous::unmapped(local));
    if gateway {
        match gateway_rendezvous(config, &mut hints) {
            Ok(r) => rv.push(r),
            Err(e) => crate::platform::log::always(format_args!(
                "listen on {local}: not the gateway (SHMNET_GATEWAY): its name is taken \
                 ({e}); is another gateway running in this network namespace?"
            )),
        }
    }
    let v6only = local.is_ipv6() && rustix::net::sockopt::ipv6_v6only(app).unwrap_or(false);
    for stem in host_stems(local, v6only, config) {
        match host_rendezvous(&stem, config, &mut hints) {
            Ok(r) => rv.push(r),
            // Somebody holds our name there: clients in other namespaces
            // will not find us (they use kernel TCP, or a listener they
            // trust — see lookup.rs).
            // (Adopting after exec, the process we came from holds it.)
            Err(Errno::ADDRINUSE) if adopting => {}
            Err(Errno::ADDRINUSE) => crate::platform::log::always(format_args!(
                "listen on {local}: {stem} in SHMNET_DIR is held by another process; \
                 clients in other network namespaces will use kernel TCP"
            )),
            Err(e) => log!(
                debug,
                "listen on {local}: no rendezvous {stem} in SHMNET_DIR ({e})"
            ),
        }
    }
    let tcp = InternalFd::dup(app)?;
    let fl = rustix::fs::fcntl_getfl(&tcp)?;
    // The listeners themselves never block us; the app's fd (the epoll
    // instance) carries the application's O_NONBLOCK from here on.
    rustix::fs::fcntl_setfl(&tcp, fl | rustix::fs::OFlags::NONBLOCK)?;
    let nonblocking = fl.contains(rustix::fs::OFlags::NONBLOCK);
    // What the kernel listener was given before listen and its accepted
    // sockets inherit: here SO_LINGER (a RST at their close), which the
    // connections accepted over shared memory take from `opts`; options
    // set after listen are remembered as they are set.
    let opts = Options::default();
    opts.note_linger(app);
    let parts = Parts {
        local,
        tcp: Some(tcp),
        rendezvous: rv,
        hints,
        opts,
        owner,
        v6only,
        gateway,
    };
    let listener = assemble(fd, parts, nonblocking)?;
    log!(
        debug,
        "fd {fd}: listener on {local} (kernel TCP and {name})"
    );
    registry::insert(fd, Arc::new(Socket::Listener(listener))).map_err(|()| Errno::MFILE)
}

/// The names in SHMNET_DIR a default-mode listener on `local` takes, for
/// clients in other network namespaces: its partition address if that is
/// not loopback, or, for the wildcard, each such address of this namespace.
fn host_stems(local: SocketAddr, v6only: bool, config: &Config) -> Vec<String> {
    if !config.partitions.iter().any(|n| !n.addr().is_loopback()) {
        return Vec::new(); // loopback partitions only (the default)
    }
    let ips: Vec<std::net::IpAddr> = if local.ip().is_unspecified() {
        sys::local_addresses()
            .into_iter()
            .filter(|ip| match (local, ip) {
                (SocketAddr::V4(_), std::net::IpAddr::V4(_)) => true,
                (SocketAddr::V6(_), std::net::IpAddr::V6(_)) => true,
                (SocketAddr::V6(_), std::net::IpAddr::V4(_)) => !v6only,
                _ => false,
            })
            .collect()
    } else {
        vec![local.ip()]
    };
    ips.into_iter()
        .filter(|ip| !rendezvous::is_loopback(*ip) && config.is_partition_ip(*ip))
        .map(|ip| rendezvous::host_stem(SocketAddr::new(ip, local.port())))
        .collect()
}

fn host_rendezvous(
    stem: &str,
    config: &Config,
    hints: &mut Vec<InternalFd>,
) -> Result<Rendezvous, Errno> {
    let dir = crate::platform::safedir::checked()?;
    let name = HostName::reserve(dir, stem)?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    name.bind(&sock)?;
    stream_listener(&sock)?;
    for h in config.allow.hints() {
        if let Ok(fd) = name.bind_hint(&h) {
            hints.push(fd);
        }
    }
    Ok(Rendezvous::named(InternalFd::new(sock), name))
}

/// The gateway's rendezvous (docs/design/gateway.md) and its policy hints.
fn gateway_rendezvous(config: &Config, hints: &mut Vec<InternalFd>) -> Result<Rendezvous, Errno> {
    let name = rendezvous::gateway_name();
    let sock = rendezvous::bind_abstract(&name, SocketType::STREAM)?;
    stream_listener(&sock)?;
    hints.extend(bind_hints(&name, config));
    Ok(Rendezvous::local(InternalFd::new(sock)))
}

/// Binds the policy's hint names next to the abstract `name`. A hint
/// somebody else already holds says the same thing (or lies to no effect:
/// the listener decides), so failures are ignored.
fn bind_hints(name: &str, config: &Config) -> Vec<InternalFd> {
    config
        .allow
        .hints()
        .iter()
        .filter_map(|h| {
            rendezvous::bind_abstract(&rendezvous::hint_name(name, h), SocketType::DGRAM).ok()
        })
        .map(InternalFd::new)
        .collect()
}

/// An emulated bind with SO_REUSEPORT to an address a socket of this
/// process holds, bound with SO_REUSEPORT too and by the same effective
/// uid (the kernel's rule for a group): the new member shares the holder's
/// rendezvous socket, so the group is one queue — every member's accept
/// takes from it, whoever is free first (nginx's `listen ... reuseport`:
/// the master binds one socket per worker, each worker accepts on its
/// own). The name stays held while any member is open.
pub(crate) fn join_reuseport_group(target: SocketAddr) -> Option<Reservation> {
    let me = euid();
    let same = |local: SocketAddr| rendezvous::unmapped(local) == rendezvous::unmapped(target);
    // The holder may be a socket of this process: its rendezvous is shared
    // if it may be (it reuses the port too, and is ours), and if not the
    // answer is EADDRINUSE at once (asking ourselves would wait for an
    // accept this thread is not in).
    let mut local: Option<Option<OwnedFd>> = None;
    registry::for_each_socket(|s| {
        if local.is_some() {
            return;
        }
        local = match &**s {
            Socket::Bound(b) if same(b.local) => Some(b.group_socket(me)),
            Socket::Listener(l) if l.tcp().is_none() && same(l.local) => Some(l.group_socket(me)),
            _ => None,
        };
    });
    let fd = match local {
        Some(found) => found?,
        None => join_remote(target, me)?,
    };
    Some(Reservation::of_socket(target, InternalFd::new(fd)))
}

/// How long a bind waits for another process's member of an SO_REUSEPORT
/// group to answer (it answers inside its next accept).
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// `join_reuseport_group` with a member in another process: asks it over
/// its rendezvous (`Kind::Join`) for the rendezvous socket itself. Only a
/// listening member answers, only to its own user, and what comes back
/// must be a listening Unix stream socket bound to the address's name.
fn join_remote(target: SocketAddr, me: u32) -> Option<OwnedFd> {
    let name = rendezvous::addr_name(target);
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes()).ok()?;
    rustix::net::connect(&sock, &addr).ok()?;
    // (A holder of ours was looked for in the registry; the pid that
    // listened may be ours and the holder a child that kept the socket.)
    match sys::peer_cred(sock.as_fd()) {
        Some((_, uid, _)) if uid == me => {}
        _ => return None,
    }
    let ask = handshake::Message {
        kind: Kind::Join,
        addr: target,
        status: 0,
        dest: target,
        key: 0,
    };
    handshake::send(sock.as_fd(), &ask, None).ok()?;
    let deadline = std::time::Instant::now() + JOIN_PATIENCE;
    let (answer, fd) = loop {
        match handshake::try_recv(sock.as_fd()) {
            Ok(got) => break got,
            Err(Errno::AGAIN | Errno::INPROGRESS) => {}
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            crate::platform::log::always(format_args!(
                "bind to {target} with SO_REUSEPORT: the process holding it did not answer within {JOIN_PATIENCE:?} (it answers in accept); EADDRINUSE"
            ));
            return None;
        }
        let _ = crate::transport::handshake::wait_readable(sock.as_fd(), Some(left));
    };
    let fd = fd.filter(|_| answer.kind == Kind::Join)?;
    let named = rustix::net::getsockname(&fd).ok().and_then(|a| {
        let unix = rustix::net::SocketAddrUnix::try_from(a).ok()?;
        Some(unix.abstract_name()? == name.as_bytes())
    });
    let listening = rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false)
        && rustix::net::sockopt::socket_type(&fd) == Ok(SocketType::STREAM);
    (named == Some(true) && listening).then_some(fd)
}

/// listen(2) on a socket bound to an emulated partition address.
/// (The backlog is the rendezvous's own: `RENDEZVOUS_BACKLOG`.)
pub(crate) fn listen_emulated(fd: c_int, bound: &Bound, _backlog: c_int) -> Action<c_int> {
    let Some(config) = crate::platform::config::get() else {
        return fail(Errno::INVAL);
    };
    let Some(reservation) = bound.reservation.lock().take() else {
        return fail(Errno::INVAL); // connected meanwhile
    };
    let host = bound.take_host_sock();
    let app = sys::borrow_fd(fd);
    let nonblocking =
        rustix::fs::fcntl_getfl(app).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
    let made = (|| {
        let (rv, hints) = match host {
            Some(sock) => {
                let mut hints = Vec::new();
                stream_listener(&dup_owned(&sock)?)?;
                if let Some(h) = reservation.host() {
                    for hint in config.allow.hints() {
                        if let Ok(fd) = h.bind_hint(&hint) {
                            hints.push(fd);
                        }
                    }
                }
                (Rendezvous::reserved(sock, reservation), hints)
            }
            None => {
                let name = rendezvous::addr_name(reservation.addr);
                let Some(sock) = reservation.into_socket() else {
                    return Err(Errno::INVAL);
                };
                stream_listener(&dup_owned(&sock)?)?;
                (Rendezvous::local(sock), bind_hints(&name, config))
            }
        };
        let (mut rendezvous, mut hints) = (vec![rv], hints);
        // The gateway in the emulated mode (SHMNET_GATEWAY on a partition
        // address): the namespace's gateway name as well, as make_dual
        // gives it in the default mode.
        let gateway = config
            .gateway
            .is_some_and(|g| rendezvous::unmapped(g) == rendezvous::unmapped(bound.local))
            && match gateway_rendezvous(config, &mut hints) {
                Ok(r) => {
                    rendezvous.push(r);
                    true
                }
                Err(e) => {
                    crate::platform::log::always(format_args!(
                        "listen on {}: not the gateway (SHMNET_GATEWAY): its name is taken \
                         ({e}); is another gateway running in this network namespace?",
                        bound.local
                    ));
                    false
                }
            };
        let parts = Parts {
            local: bound.local,
            tcp: None,
            rendezvous,
            hints,
            opts: bound.opts.snapshot_copy(),
            owner: euid(),
            v6only: false,
            gateway,
        };
        assemble(fd, parts, nonblocking)
    })();
    match made {
        Ok(listener) => {
            log!(debug, "fd {fd}: listening on {}", listener.local);
            stats::open_early();
            match registry::insert(fd, Arc::new(Socket::Listener(listener))) {
                Ok(()) => {
                    crate::sockets::readiness::replay_carried(fd, false);
                    Action::Done(0)
                }
                Err(()) => fail(Errno::MFILE),
            }
        }
        Err(e) => fail(e),
    }
}

/// Makes the listener (its epoll instance and parking queue, see
/// `Listener::new`), and puts the instance on the application's fd number
/// (keeping its close-on-exec flag).
fn assemble(fd: c_int, parts: Parts, nonblocking: bool) -> Result<Listener, Errno> {
    let app = sys::borrow_fd(fd);
    let cloexec = rustix::io::fcntl_getfd(app)?.contains(rustix::io::FdFlags::CLOEXEC);
    let (listener, instance) = Listener::new(parts, nonblocking)?;
    crate::sockets::carry::detach(fd);
    sys::dup_onto(instance.as_fd(), fd, cloexec)
        .inspect_err(|_| crate::sockets::readiness::replay_carried(fd, true))?;
    // Across exec, what the listener is made of goes with the
    // application's fd (see `calls::exec`).
    listener.set_cloexec(cloexec);
    listener.published_fd(fd);
    Ok(listener)
}
