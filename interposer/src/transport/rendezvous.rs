//! Names in the partition network: where a listener can be found, and
//! how an address:port is reserved (docs/security.md, "Names").
//!
//! Local names are *abstract* Unix socket names, which the kernel scopes
//! per network namespace, needs no directory for, and removes when the last
//! socket holding one closes: a killed process leaves nothing behind, and
//! nobody can replace a name while its holder lives. Binding one is the
//! reservation ("first binder wins", EADDRINUSE otherwise):
//! - `shmnet.5/tcp/c<cookie>`: the rendezvous of a dual listener, named
//!   after its kernel TCP listener's socket cookie (a connector asks the
//!   kernel which TCP listener it would reach, then comes here);
//! - `shmnet.5/tcp/<ip>:<port>`: an emulated listener on a loopback
//!   partition address (or a socket bound there to connect from);
//! - `shmnet.5/tcp/<ip>:<first>+16`: a block of ports for connecting
//!   sockets (one name, not one per connection);
//! - `<name>/allow/<who>`: policy hints (see `policy`).
//!
//! Partition addresses that are not local to this namespace are found in
//! `SHMNET_DIR` instead (`HostName`): a Unix socket `tcp4-<ip>-<port>`
//! reserved by an `flock` on `tcp4-<ip>-<port>.lock`, all through the
//! verified directory descriptor of `safedir`.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::platform::internal_fd::InternalFd;
use crate::platform::safedir::Dir;

/// Every abstract name starts with this; the number is the handshake's
/// version, so incompatible builds never meet.
pub(crate) const PREFIX: &str = "shmnet.5/tcp/";

/// The rendezvous of a dual listener whose kernel TCP socket has `cookie`.
pub(crate) fn cookie_name(cookie: u64) -> String {
    format!("{PREFIX}c{cookie:x}")
}

/// The rendezvous of this network namespace's gateway
/// (docs/design/gateway.md): connects to `SHMNET_REMOTE` addresses dial it,
/// the handshake's destination saying where they are going.
pub(crate) fn gateway_name() -> String {
    format!("{PREFIX}gateway")
}

/// The name of an emulated address:port (IPv4-mapped written as IPv4, so
/// both families meet).
pub(crate) fn addr_name(addr: SocketAddr) -> String {
    format!("{PREFIX}{}", unmapped(addr))
}

/// The name a connecting socket on `addr` holds (`connecting_name`):
/// apart from listeners' and bound sockets' names, so that a program
/// exec'd with the connection tells which end it is from the names the
/// kernel gives (an accepted socket has its listener's).
fn connecting_port_name(addr: SocketAddr) -> String {
    format!("{}/c", addr_name(addr))
}

/// Whether `name` is a connecting socket's (`connecting_port_name`).
pub(crate) fn is_connecting_name(name: &[u8]) -> bool {
    name.starts_with(PREFIX.as_bytes()) && name.ends_with(b"/c")
}

/// A policy hint next to a listener's name (`u1000`, `g33`, `any`).
pub(crate) fn hint_name(name: &str, hint: &str) -> String {
    format!("{name}/allow/{hint}")
}

/// The address an emulated listener's name says (inherited across exec).
pub(crate) fn parse_addr_name(name: &[u8]) -> Option<SocketAddr> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix(PREFIX)?;
    rest.parse().ok()
}

fn unix_socket(ty: SocketType) -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None)
}

/// A new socket of type `ty` bound to the abstract `name`: the name's
/// reservation. EADDRINUSE while anybody in this namespace holds it.
pub(crate) fn bind_abstract(name: &str, ty: SocketType) -> Result<OwnedFd, Errno> {
    let sock = unix_socket(ty)?;
    rustix::net::bind(&sock, &SocketAddrUnix::new_abstract_name(name.as_bytes())?)?;
    Ok(sock)
}

/// Whether a datagram socket is bound to the abstract `name` (a policy
/// hint): a datagram socket connects to it. (A stream name answers
/// ECONNREFUSED like a free one: see `name_taken`.)
#[cfg(test)]
fn abstract_exists(name: &str) -> bool {
    abstract_probe(name).is_some()
}

/// A datagram socket connected to the datagram socket bound at the
/// abstract `name`, if one is.
fn abstract_probe(name: &str) -> Option<OwnedFd> {
    let probe = unix_socket(SocketType::DGRAM).ok()?;
    let addr = SocketAddrUnix::new_abstract_name(name.as_bytes()).ok()?;
    rustix::net::connect(&probe, &addr).ok()?;
    Some(probe)
}

/// Whether the datagram name `name` (a policy hint) is held by a socket
/// `owner` made: anybody may bind any abstract name, so a hint counts only
/// if the listener's own user bound it (unix_diag says who).
pub(crate) fn hint_held_by(name: &str, owner: u32) -> bool {
    abstract_probe(name)
        .is_some_and(|p| crate::platform::netlink::unix_peer_owner(p.as_fd()) == Ok(Some(owner)))
}

/// Whether a stream socket holds the abstract `name` (abstract names are
/// per socket type): a bind says, where connecting would queue a
/// connection on a listener. For the instant the probe holds a free name,
/// a bind of it elsewhere fails.
#[cfg(test)]
fn name_taken(name: &str) -> bool {
    probe_name(name) != Ok(false)
}

/// `name_taken` for the exclusion between a name and a connecting name:
/// a probe that fails for another reason (out of fds) is that error, not
/// "free" (nor "taken", which would send the caller through every port).
fn probe_name(name: &str) -> Result<bool, Errno> {
    match bind_abstract(name, SocketType::STREAM) {
        Ok(_) => Ok(false),
        Err(Errno::ADDRINUSE) => Ok(true),
        Err(e) => Err(e),
    }
}

/// The handshake version (the number in `PREFIX`) of another build's
/// emulated listener on `target`, if one holds its name there: the
/// previous version or the next. A bind probe each (no connection is
/// queued on it), only on the emulated mode's refusal, so the program's
/// ECONNREFUSED comes with a `libshmnet:` line that says why.
///
/// A name found taken must be a *listening* socket's: another process's
/// probe of the same name holds it bound for a moment (twenty processes
/// refused at once took each other's probes for listeners, 20 of 20
/// printed the line: sweep s38 F1).
pub(crate) fn other_version_at(target: SocketAddr) -> Option<u16> {
    let ours = crate::transport::handshake::VERSION;
    [ours - 1, ours + 1].into_iter().find(|v| {
        let name = format!("shmnet.{v}/tcp/{}", unmapped(target));
        probe_name(&name) == Ok(true) && listening(&name)
    })
}

/// Whether a listening Unix stream socket holds the abstract `name` in
/// this network namespace (/proc/net/unix: flags `__SO_ACCEPTCON`,
/// state 01). False when that cannot be read (a chroot, a sandbox): the
/// line is then not said.
fn listening(name: &str) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/net/unix") else {
        return false;
    };
    table.lines().any(|line| {
        let mut cols = line.split_whitespace();
        let flags = cols.nth(3);
        let state = cols.nth(1);
        let path = cols.nth(1);
        flags == Some("00010000")
            && state == Some("01")
            && path.and_then(|p| p.strip_prefix('@')) == Some(name)
    })
}

/// A held reservation of one address:port.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub addr: SocketAddr,
    _hold: Hold,
}

#[derive(Debug)]
enum Hold {
    /// A socket bound to the address's abstract name (an emulated bind):
    /// the listener's own rendezvous socket, once it listens.
    Name(#[allow(dead_code)] InternalFd),
    /// A connecting socket's port: its name is bound to the socket it
    /// dials from, handed out once (`dial_socket`); None after that, the
    /// name then held by the connection's own socket.
    Dial(Option<OwnedFd>),
    /// A name in SHMNET_DIR (a partition address that is not local).
    Host(#[allow(dead_code)] HostName),
}

impl Reservation {
    /// The bound socket of an emulated bind: becomes the listener's
    /// rendezvous (the name stays held by it).
    pub(crate) fn into_socket(self) -> Option<InternalFd> {
        match self._hold {
            Hold::Name(fd) => Some(fd),
            _ => None,
        }
    }

    /// The reservation an inherited socket bound to `addr`'s name holds.
    pub(crate) fn of_socket(addr: SocketAddr, sock: InternalFd) -> Reservation {
        Reservation {
            addr,
            _hold: Hold::Name(sock),
        }
    }

    /// The socket a connect dials from: the one holding the name the
    /// first time; later (the first one closed: a dial again) a new one
    /// bound to the same name. None for other reservations (an emulated
    /// bind keeps its name on its own socket): dial from any socket.
    ///
    /// A later socket may find the name held meanwhile (a child forked
    /// while we waited keeps a copy of the first socket): then it takes
    /// another free port, and `addr` changes (say it in the connect
    /// message).
    pub(crate) fn dial_socket(&mut self) -> Result<Option<OwnedFd>, Errno> {
        match &mut self._hold {
            Hold::Dial(sock) => match sock.take() {
                Some(s) => Ok(Some(s)),
                None => match dial_socket(self.addr) {
                    Err(Errno::ADDRINUSE) => {
                        let mut fresh = connecting_name(self.addr.ip())?;
                        let s = fresh.dial_socket()?;
                        self.addr = fresh.addr;
                        Ok(s)
                    }
                    r => r.map(Some),
                },
            },
            _ => Ok(None),
        }
    }

    pub(crate) fn socket(&self) -> Option<&InternalFd> {
        match &self._hold {
            Hold::Name(fd) => Some(fd),
            _ => None,
        }
    }
}

/// Reserves the loopback (namespace-local) address `addr` for an emulated
/// bind: a stream socket bound to its name. Port 0 picks a free ephemeral
/// port. A port a connecting socket holds is EADDRINUSE, as the kernel
/// refuses a port an ephemeral connection uses.
pub(crate) fn reserve_local(addr: SocketAddr) -> Result<Reservation, Errno> {
    if addr.port() != 0 {
        return reserve_local_port(addr);
    }
    ephemeral_scan(addr.ip(), reserve_local_port)
}

/// `take` tried on the ephemeral ports of `ip` from a varying start until
/// one is not EADDRINUSE; EADDRNOTAVAIL when every port is.
fn ephemeral_scan<T>(
    ip: IpAddr,
    mut take: impl FnMut(SocketAddr) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    let start = seed() % span;
    for k in 0..span {
        let port = EPHEMERAL.start() + ((start + k) % span) as u16;
        match take(SocketAddr::new(ip, port)) {
            Err(Errno::ADDRINUSE) => continue,
            r => return r,
        }
    }
    Err(Errno::ADDRNOTAVAIL)
}

fn reserve_local_port(addr: SocketAddr) -> Result<Reservation, Errno> {
    let sock = bind_abstract(&addr_name(addr), SocketType::STREAM)?;
    // The name first, then a connecting socket's (see `dial_socket`).
    if probe_name(&connecting_port_name(addr))? {
        return Err(Errno::ADDRINUSE);
    }
    Ok(Reservation {
        addr,
        _hold: Hold::Name(InternalFd::new(sock)),
    })
}

/// Kernel TCP's default ephemeral range (net.ipv4.ip_local_port_range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Whether `port` is one the library hands out to connecting sockets.
pub(crate) fn is_ephemeral(port: u16) -> bool {
    EPHEMERAL.contains(&port)
}

/// The local name of a connecting socket on `ip`: a free ephemeral port,
/// reserved by binding its name to the Unix socket that will carry the
/// connection (`Reservation::dial_socket`), which becomes the
/// application's fd. So the name lives exactly as long as the connection's
/// socket, in every process that holds it (fork, exec), and costs no fd
/// of its own: a connection costs the application's fd and nothing more.
pub(crate) fn connecting_name(ip: IpAddr) -> Result<Reservation, Errno> {
    ephemeral_scan(ip, |addr| {
        Ok(Reservation {
            addr,
            _hold: Hold::Dial(Some(dial_socket(addr)?)),
        })
    })
}

/// `connecting_name` for a process with one free fd (decision 38): each
/// candidate's socket, bound to its connecting name, is handed to `adopt`
/// (which puts it on the application's number and closes it) before the
/// probe of the address's own name, which then takes the number it was
/// made on. The name is held by the application's socket; the reservation
/// has no socket to dial from (`dial_socket` is None: dial from the
/// application's).
pub(crate) fn connecting_name_onto(
    ip: IpAddr,
    adopt: &mut dyn FnMut(OwnedFd) -> Result<(), Errno>,
) -> Result<Reservation, Errno> {
    ephemeral_scan(ip, |addr| {
        adopt(connecting_socket(addr)?)?;
        if probe_name(&addr_name(addr))? {
            // (The next candidate's socket replaces it.)
            return Err(Errno::ADDRINUSE);
        }
        Ok(Reservation {
            addr,
            _hold: Hold::Dial(None),
        })
    })
}

/// A Unix stream socket to dial from (close-on-exec, non-blocking), bound
/// to `addr`'s connecting name: EADDRINUSE while another connecting
/// socket holds it, or a listener or bound socket holds `addr`'s own name
/// (each binds its name, then looks for the other's: one of two at the
/// same time always sees the other).
fn dial_socket(addr: SocketAddr) -> Result<OwnedFd, Errno> {
    let sock = connecting_socket(addr)?;
    if probe_name(&addr_name(addr))? {
        return Err(Errno::ADDRINUSE);
    }
    Ok(sock)
}

/// A Unix stream socket (close-on-exec, non-blocking) bound to `addr`'s
/// connecting name: EADDRINUSE while another connecting socket holds it.
fn connecting_socket(addr: SocketAddr) -> Result<OwnedFd, Errno> {
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let name = connecting_port_name(addr);
    rustix::net::bind(&sock, &SocketAddrUnix::new_abstract_name(name.as_bytes())?)?;
    Ok(sock)
}

/// A cheap varying start for the port scan (pid and clock), so concurrent
/// processes rarely probe the same ports.
fn seed() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t ^ crate::platform::fork::pid().wrapping_mul(2_654_435_761)
}

fn unmapped_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `addr` with an IPv4-mapped IPv6 address (::ffff:a.b.c.d) written as the
/// IPv4 address it maps.
pub(crate) fn unmapped(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmapped_ip(addr.ip()), addr.port())
}

/// Whether `ip` is a loopback address (IPv4-mapped ones included): always
/// local to the namespace, so always named in the abstract namespace.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    unmapped_ip(ip).is_loopback()
}

// ---------------------------------------------------------------------------
// Names in SHMNET_DIR, for partition addresses that are not local.

/// The file name of a listener on `addr` in SHMNET_DIR: `tcp4-IP-PORT`,
/// `tcp6-IP-PORT`; the wildcard of a dual-stack IPv6 listener is `tcp6-::`.
pub(crate) fn host_stem(addr: SocketAddr) -> String {
    let a = unmapped(addr);
    match a.ip() {
        IpAddr::V4(ip) => format!("tcp4-{ip}-{}", a.port()),
        IpAddr::V6(ip) => format!("tcp6-{ip}-{}", a.port()),
    }
}

/// The names in SHMNET_DIR a connection to `target` may find a listener
/// at: that very address, then the wildcards of its port.
pub(crate) fn host_candidates(target: SocketAddr) -> Vec<String> {
    let t = unmapped(target);
    let port = t.port();
    let mut c = vec![host_stem(t)];
    match t.ip() {
        IpAddr::V4(_) => {
            c.push(format!("tcp4-0.0.0.0-{port}"));
            c.push(format!("tcp6-::-{port}"));
        }
        IpAddr::V6(_) => c.push(format!("tcp6-::-{port}")),
    }
    c
}

/// Socket files in SHMNET_DIR: rw for all (whoever can enter the directory
/// may connect; who is served is the listener's policy).
const SOCKET_MODE: Mode = Mode::from_raw_mode(0o666);

/// A name held in SHMNET_DIR: the lock file's flock, and the socket file
/// next to it, both removed when it is released (unless a fork happened
/// since: the other process may still hold it).
#[derive(Debug)]
pub(crate) struct HostName {
    dir: Arc<Dir>,
    stem: String,
    _lock: InternalFd,
    fork_generation: u32,
    /// Policy hints bound next to it: removed with it.
    hints: crate::platform::lock::Mutex<Vec<String>>,
}

impl HostName {
    /// Reserves `stem` in `dir`: EADDRINUSE if another holder has it.
    pub(crate) fn reserve(dir: Arc<Dir>, stem: &str) -> Result<HostName, Errno> {
        let lock_name = format!("{stem}.lock");
        for _ in 0..8 {
            let lock = dir.open(
                &lock_name,
                OFlags::CREATE | OFlags::RDWR,
                Mode::RUSR | Mode::WUSR,
            )?;
            let lock = InternalFd::new(lock);
            match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => return Err(Errno::ADDRINUSE),
                Err(e) => return Err(e),
            }
            // The previous holder may have removed the file between our
            // open and our lock: then we hold a lock nobody else can see.
            let held = rustix::fs::fstat(&lock)?;
            match dir.stat(&lock_name) {
                Ok(now) if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) => {
                    // Ours now: a socket file left by a holder that died
                    // is replaced.
                    let _ = dir.unlink(stem);
                    return Ok(HostName {
                        dir,
                        stem: stem.to_string(),
                        _lock: lock,
                        fork_generation: crate::platform::fork::generation(),
                        hints: crate::platform::lock::Mutex::new(Vec::new()),
                    });
                }
                _ => continue,
            }
        }
        Err(Errno::ADDRINUSE)
    }

    /// Binds `sock` to the name's socket file, connectable by anyone who
    /// may enter the directory (connect(2) needs write permission on it;
    /// the listener's policy decides whom it serves).
    pub(crate) fn bind(&self, sock: impl AsFd) -> Result<(), Errno> {
        let path = self.dir.socket_path(&self.stem)?;
        rustix::net::bind(sock, &SocketAddrUnix::new(path.as_path())?)?;
        self.dir.chmod(&self.stem, SOCKET_MODE)
    }

    /// Binds a datagram socket at `<stem>.allow-<hint>` (see `policy`).
    pub(crate) fn bind_hint(&self, hint: &str) -> Result<InternalFd, Errno> {
        let name = format!("{}.allow-{hint}", self.stem);
        let _ = self.dir.unlink(&name);
        let sock = unix_socket(SocketType::DGRAM)?;
        let path = self.dir.socket_path(&name)?;
        rustix::net::bind(&sock, &SocketAddrUnix::new(path.as_path())?)?;
        self.hints.lock().push(name.clone());
        self.dir.chmod(&name, SOCKET_MODE)?;
        Ok(InternalFd::new(sock))
    }
}

impl Drop for HostName {
    fn drop(&mut self) {
        if self.fork_generation == crate::platform::fork::generation() {
            let _ = self.dir.unlink(&self.stem);
            for hint in self.hints.lock().drain(..) {
                let _ = self.dir.unlink(&hint);
            }
            let _ = self.dir.unlink(&format!("{}.lock", self.stem));
        }
    }
}

/// Whether a hint `<stem>.allow-<hint>` exists in `dir`, made by `owner`
/// (a datagram socket is bound there: a probe connects to it).
pub(crate) fn host_hint_held_by(dir: &Dir, stem: &str, hint: &str, owner: u32) -> bool {
    let name = format!("{stem}.allow-{hint}");
    // In a shared (sticky) directory, whoever made the file first owns it:
    // a hint counts only if the listener's own user made it.
    if !dir.stat(&name).is_ok_and(|st| st.st_uid == owner) {
        return false;
    }
    let Ok(path) = dir.socket_path(&name) else {
        return false;
    };
    let (Ok(probe), Ok(addr)) = (
        unix_socket(SocketType::DGRAM),
        SocketAddrUnix::new(path.as_path()),
    ) else {
        return false;
    };
    rustix::net::connect(&probe, &addr).is_ok()
}

/// Reserves the non-local partition address `addr` (an emulated bind) in
/// SHMNET_DIR; port 0 picks a free ephemeral port.
pub(crate) fn reserve_host(dir: Arc<Dir>, addr: SocketAddr) -> Result<Reservation, Errno> {
    let one = |addr: SocketAddr| {
        HostName::reserve(dir.clone(), &host_stem(addr)).map(|h| Reservation {
            addr,
            _hold: Hold::Host(h),
        })
    };
    if addr.port() != 0 {
        return one(addr);
    }
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    let start = seed() % span;
    for k in 0..span {
        let port = EPHEMERAL.start() + ((start + k) % span) as u16;
        match one(SocketAddr::new(addr.ip(), port)) {
            Err(Errno::ADDRINUSE) => continue,
            r => return r,
        }
    }
    Err(Errno::ADDRNOTAVAIL)
}

impl Reservation {
    /// The name in SHMNET_DIR, for a host-scope reservation.
    pub(crate) fn host(&self) -> Option<&HostName> {
        match &self._hold {
            Hold::Host(h) => Some(h),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(cookie_name(0x1f2), "shmnet.5/tcp/c1f2");
        let a: SocketAddr = "[::ffff:127.77.0.1]:8080".parse().unwrap();
        assert_eq!(addr_name(a), "shmnet.5/tcp/127.77.0.1:8080");
        assert_eq!(
            addr_name("[::1]:80".parse().unwrap()),
            "shmnet.5/tcp/[::1]:80"
        );
        assert_eq!(
            parse_addr_name(b"shmnet.5/tcp/127.77.0.1:8080"),
            Some("127.77.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_addr_name(b"shmnet.5/tcp/c1f2"), None);
        assert_eq!(parse_addr_name(b"other/127.0.0.1:1"), None);
        assert_eq!(
            host_candidates("10.211.0.1:80".parse().unwrap()),
            vec!["tcp4-10.211.0.1-80", "tcp4-0.0.0.0-80", "tcp6-::-80"]
        );
    }

    #[test]
    fn abstract_names_are_exclusive_and_released_on_close() {
        let name = format!("{PREFIX}test-{}", std::process::id());
        assert!(!name_taken(&name));
        let held = bind_abstract(&name, SocketType::STREAM).unwrap();
        assert!(name_taken(&name));
        assert!(
            !abstract_exists(&name),
            "a stream name is not a datagram one"
        );
        assert_eq!(
            bind_abstract(&name, SocketType::STREAM).unwrap_err(),
            Errno::ADDRINUSE
        );
        drop(held);
        assert!(!name_taken(&name));
        let hint = bind_abstract(&name, SocketType::DGRAM).unwrap();
        assert!(abstract_exists(&name));
        drop(hint);
        assert!(!abstract_exists(&name));
    }

    #[test]
    fn a_connecting_port_is_taken_while_its_socket_lives() {
        let ip: IpAddr = "127.77.250.1".parse().unwrap();
        let mut r = connecting_name(ip).unwrap();
        let addr = r.addr;
        assert_eq!(reserve_local(addr).unwrap_err(), Errno::ADDRINUSE);
        // The name goes with the dial socket, not the reservation.
        let sock = r.dial_socket().unwrap().unwrap();
        drop(r);
        assert!(name_taken(&connecting_port_name(addr)));
        assert_eq!(reserve_local(addr).unwrap_err(), Errno::ADDRINUSE);
        drop(sock);
        assert!(!name_taken(&connecting_port_name(addr)));
        assert!(reserve_local(addr).is_ok());
        // Ports bound on their own are skipped.
        let bound = reserve_local(SocketAddr::new(ip, 0)).unwrap();
        assert!(name_taken(&addr_name(bound.addr)));
        let next = connecting_name(ip).unwrap();
        assert_ne!(next.addr, bound.addr);
    }
}
