//! The connecting side's questions before it commits a connection to
//! shared memory (docs/security.md, "The bar"): which listener would the
//! kernel connect us to, where is its rendezvous, and may we meet it?
//!
//! - Default mode, a destination of this network namespace: the kernel
//!   says which TCP listener a SYN from us would reach (`netlink::
//!   tcp_listener`); its rendezvous is named after that socket's cookie and
//!   must have been opened by that socket's owner.
//! - Default mode, a partition address of another namespace: only through
//!   a link whose peer namespace is the listener's (a veth), found in
//!   SHMNET_DIR.
//! - Emulated mode: the address's name, abstract for loopback addresses,
//!   in SHMNET_DIR otherwise; a port below `ip_unprivileged_port_start`
//!   only from a privileged listener.
//!
//! Then the listener's users' policy, which its hint names announce
//! (`policy`): whom a connector reaches is the kernel's rule, whether it is
//! served is the listener's.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::platform::config::Config;
use crate::platform::policy::{self, Peer};
use crate::platform::safedir::Dir;
use crate::platform::stats::Outcome;
use crate::transport::rendezvous;

/// Where a listener's rendezvous is.
pub(crate) enum Name {
    /// An abstract name of this network namespace.
    Local(String),
    /// Socket files in SHMNET_DIR: the first of these that answers.
    Host { dir: Arc<Dir>, stems: Vec<String> },
}

/// What the listener reached must be.
#[derive(Default)]
pub(crate) struct Expect {
    /// The owner of the kernel TCP listener we would otherwise reach.
    uid: Option<u32>,
    /// The namespace our route to the destination leads into.
    netnsid: Option<i32>,
    /// A privileged port (emulated mode): a privileged listener.
    privileged: bool,
    /// The gateway: run by root or by the connector's own user.
    gateway: bool,
}

pub(crate) struct Target {
    pub name: Name,
    expect: Expect,
}

/// The outcome of looking.
pub(crate) enum Found {
    Listener(Target),
    /// No shared-memory listener, or none we may use: kernel TCP (default
    /// mode), or fail with the errno (emulated mode).
    None(Outcome),
    /// SHMNET_DIR's descriptor could not be opened (again): out of fds
    /// (EMFILE, ENFILE), which the connect says as the kernel would.
    NoFds(rustix::io::Errno),
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Finds where `target`'s listener is; `from` is our (virtual) address.
pub(crate) fn find(config: &Config, target: SocketAddr, from: SocketAddr) -> Found {
    let tcp_mode = config.fallback != crate::platform::config::Fallback::Never;
    let ip = target.ip();
    if tcp_mode && crate::platform::netlink::is_local(ip) {
        let info = match crate::platform::netlink::tcp_listener(target, from) {
            Ok(Some(info)) => info,
            Ok(None) => return Found::None(Outcome::NoListener),
            Err(e) => {
                log!(
                    debug,
                    "connect to {target}: cannot ask the kernel for its listener ({e})"
                );
                return Found::None(Outcome::Refused);
            }
        };
        let name = rendezvous::cookie_name(info.cookie);
        // Decided before dialing: a refused connector costs the listener
        // nothing.
        if !admitted_by(&Hints::Local(&name), euid(), info.uid) {
            return Found::None(Outcome::Policy);
        }
        return Found::Listener(Target {
            name: Name::Local(name),
            expect: Expect {
                uid: Some(info.uid),
                ..Expect::default()
            },
        });
    }
    if !tcp_mode && rendezvous::is_loopback(ip) {
        return Found::Listener(Target {
            name: Name::Local(rendezvous::addr_name(target)),
            expect: Expect {
                privileged: privileged_port(target.port()),
                ..Expect::default()
            },
        });
    }
    // Not in this namespace: SHMNET_DIR.
    let mut expect = Expect {
        privileged: privileged_port(target.port()),
        ..Expect::default()
    };
    if tcp_mode {
        match neighbour(ip) {
            Some(id) => expect.netnsid = Some(id),
            None => return Found::None(Outcome::NoListener),
        }
    }
    let dir = match crate::platform::safedir::checked() {
        Ok(d) => d,
        Err(e @ (rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)) => return Found::NoFds(e),
        Err(_) => return Found::None(Outcome::Dir),
    };
    let stems = if tcp_mode {
        rendezvous::host_candidates(target)
    } else {
        vec![rendezvous::host_stem(target)]
    };
    Found::Listener(Target {
        name: Name::Host { dir, stems },
        expect,
    })
}

/// The gateway that carries connects to `SHMNET_REMOTE` addresses to
/// other hosts: one abstract name per network namespace.
pub(crate) fn gateway() -> Target {
    Target {
        name: Name::Local(rendezvous::gateway_name()),
        expect: Expect {
            gateway: true,
            ..Expect::default()
        },
    }
}

/// The id of the network namespace our route to `ip` leads into, when it
/// leaves through a link to another namespace of this host (a veth).
pub(crate) fn neighbour(ip: std::net::IpAddr) -> Option<i32> {
    let route = crate::platform::netlink::route(ip).ok()?;
    if route.kind != crate::platform::netlink::RouteKind::Unicast {
        return None;
    }
    crate::platform::netlink::link_netnsid(route.oif)
        .ok()
        .flatten()
}

/// Why a dial did not give a usable rendezvous connection.
pub(crate) enum DialError {
    /// Nobody listens there.
    NoListener,
    /// Somebody listens, but not whom we require (logged).
    Refused,
    /// The policy, theirs or ours, says no (logged in the emulated mode).
    Policy,
    Os(Errno),
}

impl From<Errno> for DialError {
    fn from(e: Errno) -> DialError {
        DialError::Os(e)
    }
}

impl Target {
    /// Connects a new Unix socket to the rendezvous and checks whom it
    /// reached. `nonblocking`: a full listen backlog is EAGAIN at once
    /// instead of a wait (bounded by `timeout`: SO_SNDTIMEO, else about
    /// two minutes, as kernel TCP retries its SYN).
    ///
    /// `from`: the socket to dial from (bound to our local name), else a
    /// new one.
    pub(crate) fn dial(
        &self,
        config: &Config,
        nonblocking: bool,
        timeout: Option<Duration>,
        from: Option<OwnedFd>,
    ) -> Result<OwnedFd, DialError> {
        let sock = match from {
            Some(s) => s,
            None => rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )?,
        };
        self.dial_from(config, nonblocking, timeout, sock.as_fd())?;
        Ok(sock)
    }

    /// `dial` from `sock`, a Unix stream socket (non-blocking) that is not
    /// ours to close: the application's own fd (`Connection::connect_at_limit`).
    pub(crate) fn dial_from(
        &self,
        config: &Config,
        nonblocking: bool,
        timeout: Option<Duration>,
        sock: BorrowedFd<'_>,
    ) -> Result<(), DialError> {
        let hints = match &self.name {
            Name::Local(name) => {
                connect_to(
                    sock,
                    &SocketAddrUnix::new_abstract_name(name.as_bytes())?,
                    nonblocking,
                    timeout,
                )?;
                Hints::Local(name)
            }
            Name::Host { dir, stems } => {
                let mut found = None;
                for stem in stems {
                    // Whoever made the socket file listens there (checked
                    // again below, from the kernel's credentials): one we
                    // would not use is not even dialed.
                    let distrusted = self.expect.netnsid.is_some()
                        && config.allow.gids.is_empty()
                        && dir
                            .stat(stem)
                            .is_ok_and(|st| !config.allow.admits_uid(euid(), st.st_uid));
                    if distrusted {
                        return Err(DialError::Policy);
                    }
                    let path = dir.socket_path(stem)?;
                    // (A Unix socket whose connect found nobody may connect
                    // again.)
                    let path = SocketAddrUnix::new(path.as_path())?;
                    match connect_to(sock, &path, nonblocking, timeout) {
                        Ok(()) => {
                            found = Some(stem);
                            break;
                        }
                        Err(DialError::NoListener) => continue,
                        Err(e) => return Err(e),
                    }
                }
                let Some(stem) = found else {
                    return Err(DialError::NoListener);
                };
                Hints::Host(dir, stem)
            }
        };
        self.verify(sock, config, &hints)
    }

    fn verify(
        &self,
        sock: BorrowedFd<'_>,
        config: &Config,
        hints: &Hints<'_>,
    ) -> Result<(), DialError> {
        let Some(peer) = Peer::of(sock, &config.allow) else {
            return Err(DialError::Refused);
        };
        if let Some(uid) = self.expect.uid {
            if peer.uid != uid {
                // Once per process (a squatter would otherwise fill the
                // log of every client that connects; it costs them only
                // the acceleration, see docs/security.md).
                static SAID: AtomicBool = AtomicBool::new(false);
                if !SAID.swap(true, Ordering::Relaxed) {
                    crate::platform::log::always(format_args!(
                        "a shared-memory rendezvous was opened by uid {} (pid {}), but the \
                         kernel's TCP listener belongs to uid {uid}: using kernel TCP",
                        peer.uid, peer.pid
                    ));
                }
                return Err(DialError::Refused);
            }
        }
        if self.expect.gateway && peer.uid != 0 && peer.uid != euid() {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                crate::platform::log::always(format_args!(
                    "the gateway rendezvous was opened by uid {} (pid {}), neither root nor \
                     us: not using it (said once)",
                    peer.uid, peer.pid
                ));
            }
            return Err(DialError::Refused);
        }
        if let Some(id) = self.expect.netnsid {
            let theirs = match peer.pid {
                0 => None, // not visible from our pid namespace: cannot tell
                pid => crate::platform::netlink::netnsid_of_pid(pid).ok().flatten(),
            };
            if theirs != Some(id) {
                log!(
                    info,
                    "the rendezvous answering in SHMNET_DIR (pid {}) is not in the network \
                     namespace our route leads to: not using it",
                    peer.pid
                );
                return Err(DialError::Refused);
            }
        }
        if self.expect.netnsid.is_some() && !config.allow.admits(euid(), &peer) {
            // Another namespace's kernel listener cannot be asked about
            // (no inet_diag across namespaces): whoever may write
            // SHMNET_DIR could stand in for it. So here, unlike on this
            // namespace's loopback, the connector trusts only its own user,
            // root, and those its SHMNET_ALLOW names.
            log!(
                info,
                "not using a rendezvous in SHMNET_DIR opened by uid {} (pid {}): \
                 SHMNET_ALLOW does not name it",
                peer.uid,
                peer.pid
            );
            return Err(DialError::Policy);
        }
        if self.expect.privileged && !privileged(&peer) {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                crate::platform::log::always(format_args!(
                    "refusing to connect: a privileged port is held by uid {} (pid {}), which \
                     may not bind it",
                    peer.uid, peer.pid
                ));
            }
            return Err(DialError::Refused);
        }
        // Whom we reach is the kernel's rule (above); whether we are served
        // is the listener's policy, which its hints announce.
        if !admitted_by(hints, euid(), peer.uid) {
            return Err(DialError::Policy);
        }
        Ok(())
    }
}

/// Where a listener's policy hints are.
enum Hints<'a> {
    Local(&'a str),
    Host(&'a Dir, &'a str),
}

/// Whether a listener of `owner` admits us (see docs/security.md): its own
/// uid and root always; anybody else if the listener bound a hint naming
/// them — a hint another user bound does not count (it could only make us
/// try and be refused after connect had returned, with no way back to
/// kernel TCP).
fn admitted_by(hints: &Hints<'_>, me: u32, owner: u32) -> bool {
    if me == owner || me == 0 {
        return true;
    }
    let gid = rustix::process::getegid().as_raw();
    let groups: Vec<u32> = rustix::process::getgroups()
        .map(|g| g.iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    let ask = || {
        policy::hints_for(me, gid, &groups)
            .iter()
            .any(|h| match hints {
                Hints::Local(name) => {
                    rendezvous::hint_held_by(&rendezvous::hint_name(name, h), owner)
                }
                Hints::Host(dir, stem) => rendezvous::host_hint_held_by(dir, stem, h, owner),
            })
    };
    match hints {
        // A cookie names one kernel listener for the life of the system,
        // and its hints are bound once, at listen: what they say about us
        // cannot change, so it is asked once (two netlink round trips).
        Hints::Local(name) => {
            let key = format!("{name}|{owner}|{me}|{gid}|{groups:?}");
            if let Some(known) = HINT_VERDICTS.get(&key) {
                return known;
            }
            let verdict = ask();
            HINT_VERDICTS.put(key, verdict);
            verdict
        }
        Hints::Host(..) => ask(),
    }
}

/// Verdicts of `admitted_by` on default-mode listeners (see there).
static HINT_VERDICTS: Verdicts = Verdicts::new();

struct Verdicts(crate::platform::lock::Mutex<Vec<(String, bool)>>);

impl Verdicts {
    const MAX: usize = 64;

    const fn new() -> Verdicts {
        Verdicts(crate::platform::lock::Mutex::new(Vec::new()))
    }

    /// (Never waits: a lock held at a fork by a thread that is gone here
    /// only costs the cache.)
    fn get(&self, key: &str) -> Option<bool> {
        let v = self.0.try_lock()?;
        v.iter().find(|(k, _)| k == key).map(|(_, b)| *b)
    }

    fn put(&self, key: String, verdict: bool) {
        if let Some(mut v) = self.0.try_lock() {
            if v.len() >= Self::MAX {
                v.remove(0);
            }
            v.push((key, verdict));
        }
    }
}

/// Connects the non-blocking Unix stream socket `sock` to `addr`, waiting (in
/// short interruptible naps) while the listen backlog is full, unless
/// `nonblocking`.
fn connect_to(
    sock: BorrowedFd<'_>,
    addr: &SocketAddrUnix,
    nonblocking: bool,
    timeout: Option<Duration>,
) -> Result<(), DialError> {
    let deadline =
        std::time::Instant::now().checked_add(timeout.unwrap_or(Duration::from_secs(127)));
    let mut pause = Duration::from_micros(100);
    loop {
        match rustix::net::connect(sock, addr) {
            Ok(()) => return Ok(()),
            Err(Errno::NOENT | Errno::CONNREFUSED) => return Err(DialError::NoListener),
            Err(Errno::AGAIN) if !nonblocking => {
                let left = deadline
                    .map(|d| d.saturating_duration_since(std::time::Instant::now()))
                    .unwrap_or(pause);
                if left.is_zero() {
                    return Err(DialError::Os(Errno::TIMEDOUT));
                }
                let nap = left.min(pause);
                // An interruptible sleep: a signal ends connect with EINTR.
                let ts = rustix::event::Timespec {
                    tv_sec: nap.as_secs() as _,
                    tv_nsec: nap.subsec_nanos() as _,
                };
                crate::platform::cancel::sleep(|| rustix::event::poll(&mut [], Some(&ts)))
                    .unwrap_or(Err(Errno::INTR))?;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(DialError::Os(e)),
        }
    }
}

/// The lowest port an unprivileged process may bind, in this namespace:
/// read once per process (three system calls; connect asks every time).
fn unprivileged_port_start() -> u16 {
    let known = PORT_START.load(Ordering::Relaxed);
    if known != u32::MAX {
        return known as u16;
    }
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    PORT_START.store(u32::from(start), Ordering::Relaxed);
    start
}

static PORT_START: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Another network namespace: its own ip_unprivileged_port_start.
pub(crate) fn namespace_changed() {
    PORT_START.store(u32::MAX, Ordering::Relaxed);
}

pub(crate) fn privileged_port(port: u16) -> bool {
    port != 0 && port < unprivileged_port_start()
}

/// Whether `peer` may hold a privileged port: root (in our user
/// namespace), as the credentials the kernel took when it listened say. A
/// capability cannot be checked from outside: another process's CapEff is
/// relative to its own user namespace (root in one made with `unshare -Ur`
/// has them all) and is today's, not the listen()-time one (a process may
/// exec a setuid program after it listened).
fn privileged(peer: &Peer) -> bool {
    peer.uid == 0
}

/// Whether this process may bind a privileged emulated port: only root, as
/// connectors will require (see `privileged`) — EACCES at bind rather than
/// a listener nobody may reach.
pub(crate) fn may_bind(port: u16) -> bool {
    !privileged_port(port) || euid() == 0
}
