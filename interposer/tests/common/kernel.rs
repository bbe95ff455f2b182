//! The kernel's view of TCP (/proc/net/tcp{,6}) and the one proof every
//! test uses that shared memory, not the kernel, carried its connections.
//!
//! A proof (`KernelWatch`) is made before the programs it judges connect:
//! it remembers the kernel sockets that already matched then and never
//! counts them. A client-side TIME_WAIT of another test's connection
//! outlives its server by a minute, and a port the kernel hands out (or a
//! virtual one the harness hands out) may have been someone's a moment
//! before: those sockets are not evidence against this test.

use std::collections::BTreeSet;
use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

pub const ESTABLISHED: u8 = 0x01;
pub const TIME_WAIT: u8 = 0x06;
pub const LISTEN: u8 = 0x0A;

/// One row of /proc/net/tcp{,6}.
pub struct KernelSocket {
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl KernelSocket {
    /// Whether either end is `ip` (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address) on `port` (any port if None).
    pub fn has_end(&self, ip: Option<IpAddr>, port: Option<u16>) -> bool {
        [self.local, self.remote]
            .iter()
            .any(|a| port.is_none_or(|p| a.port() == p) && ip.is_none_or(|ip| same_ip(a.ip(), ip)))
    }
}

/// `a` and `b` are one address (IPv4-mapped IPv6 taken as IPv4).
pub fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    v4_of(a).zip(v4_of(b)).map_or(a == b, |(x, y)| x == y)
}

/// The IPv4 address of `ip` (IPv4-mapped IPv6 included).
pub fn v4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

impl fmt::Display for KernelSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            0x01 => "ESTABLISHED",
            0x02 => "SYN_SENT",
            0x03 => "SYN_RECV",
            0x04 => "FIN_WAIT1",
            0x05 => "FIN_WAIT2",
            0x06 => "TIME_WAIT",
            0x07 => "CLOSE",
            0x08 => "CLOSE_WAIT",
            0x09 => "LAST_ACK",
            0x0A => "LISTEN",
            0x0B => "CLOSING",
            _ => "?",
        };
        write!(f, "{state:<11} {} -> {}", self.local, self.remote)
    }
}

/// "0100007F:1F90" (IPv4) or 32 hex digits ":" port (IPv6), each 32-bit word
/// in host byte order.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        u32::from_str_radix(addr.get(8 * i..8 * i + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The rows of /proc/net/tcp and/or /proc/net/tcp6 text (header lines,
/// wherever they are, skipped).
pub fn parse_proc_net_tcp(text: &str) -> Vec<KernelSocket> {
    let mut all = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f.get(1) == Some(&"local_address") {
            continue;
        }
        let parsed = (|| {
            Some(KernelSocket {
                local: parse_endpoint(f.get(1)?)?,
                remote: parse_endpoint(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
            })
        })();
        all.push(parsed.unwrap_or_else(|| panic!("unparsable /proc/net/tcp line: {line}")));
    }
    all
}

/// Every TCP socket in this network namespace (TIME_WAIT ones included).
pub fn kernel_tcp_sockets() -> Vec<KernelSocket> {
    let mut text = std::fs::read_to_string("/proc/net/tcp").expect("cannot read /proc/net/tcp");
    // No IPv6 in this kernel: no tcp6 table either.
    text.push_str(&std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default());
    parse_proc_net_tcp(&text)
}

/// The kernel sockets that count against a test's claim that shared memory
/// carried its connections.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    /// The emulated network: any kernel socket, in any state, with an end
    /// in `net` (a prefix of `len` bits of `host`; 0 bits: no address
    /// matched) or on `port` (None: no port matched).
    Emulated {
        host: IpAddr,
        len: u8,
        port: Option<u16>,
    },
    /// The default mode on real loopback addresses: an ESTABLISHED kernel
    /// connection with an end at `host` (None: any address) : `port`. A
    /// listener may well exist (the dual listener keeps one).
    Established { host: Option<IpAddr>, port: u16 },
    /// Any kernel socket with an end at `host`:`port`, in any state
    /// (TIME_WAIT too: evidence after the connection closed); a listener
    /// only if `listeners` (the emulated network must have none, a
    /// default-mode listener keeps one).
    Endpoint {
        host: IpAddr,
        port: u16,
        listeners: bool,
    },
    /// Nothing counts (the kernel-TCP baseline of a test).
    Nothing,
}

impl Scope {
    /// The sockets among `all` (a table read elsewhere: another network
    /// namespace's) that count, as text.
    pub fn found_in(&self, all: &[KernelSocket]) -> Vec<String> {
        all.iter()
            .filter(|k| self.matches(k))
            .map(ToString::to_string)
            .collect()
    }

    fn matches(&self, k: &KernelSocket) -> bool {
        match *self {
            Scope::Emulated { host, len, port } => {
                let in_net = |ip: IpAddr| len > 0 && same_prefix(ip, host, len);
                [k.local, k.remote]
                    .iter()
                    .any(|a| port == Some(a.port()) || in_net(a.ip()))
            }
            Scope::Established { host, port } => {
                k.state == ESTABLISHED && k.has_end(host, Some(port))
            }
            Scope::Endpoint {
                host,
                port,
                listeners,
            } => (listeners || k.state != LISTEN) && k.has_end(Some(host), Some(port)),
            Scope::Nothing => false,
        }
    }
}

/// Whether `a` and `b` share their first `len` bits (IPv4-mapped IPv6 taken
/// as IPv4; an IPv4 and an IPv6 address never do).
fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    let bits = |ip: IpAddr| match v4_of(ip) {
        Some(v4) => (u128::from(u32::from(v4)), 32u8),
        None => match ip {
            IpAddr::V6(v6) => (u128::from(v6), 128u8),
            IpAddr::V4(_) => unreachable!(),
        },
    };
    let ((x, wx), (y, wy)) = (bits(a), bits(b));
    if wx != wy || len > wx {
        return false;
    }
    let shift = u32::from(wx - len);
    (x >> shift) == (y >> shift)
}

/// A proof in the making: what counts (`Scope`), less what the kernel
/// already had when it was made.
#[derive(Clone, Debug)]
pub struct KernelWatch {
    scope: Scope,
    before: BTreeSet<String>,
}

impl KernelWatch {
    /// Made before the programs it judges run.
    pub fn new(scope: Scope) -> KernelWatch {
        let before = Self::matching(scope);
        KernelWatch { scope, before }
    }

    /// The same `before`, judging by `scope` (a narrower one).
    pub fn rescoped(&self, scope: Scope) -> KernelWatch {
        KernelWatch {
            scope,
            before: self.before.clone(),
        }
    }

    fn matching(scope: Scope) -> BTreeSet<String> {
        kernel_tcp_sockets()
            .iter()
            .filter(|k| scope.matches(k))
            .map(ToString::to_string)
            .collect()
    }

    /// The sockets that count against the test now (none before it).
    pub fn found(&self) -> Vec<String> {
        Self::matching(self.scope)
            .into_iter()
            .filter(|k| !self.before.contains(k))
            .collect()
    }

    /// Fails (saying `when`) if the kernel carries, or for the emulated
    /// network knows of, the test's connections.
    pub fn assert_none(&self, when: &str) {
        let found = self.found();
        assert!(
            found.is_empty(),
            "{when}: kernel TCP sockets for a connection shared memory should carry \
             ({:?}):\n{}",
            self.scope,
            found.join("\n")
        );
    }
}

/// A plain (not preloaded) client is refused at `addr`: no kernel socket
/// listens at a virtual address of the emulated network.
pub fn assert_plain_client_refused(addr: SocketAddr, when: &str) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        Ok(_) => {
            panic!("{when}: a plain (non-preloaded) client connected to {addr} over kernel TCP")
        }
        Err(e) => panic!("{when}: plain connect to {addr}: want ECONNREFUSED, got {e}"),
    }
}
