//! Each test's place on the network, handed out by the harness: no test
//! picks an address or a port by hand.
//!
//! Every `Net` gets a slot of its own: unique among the tests of this
//! process (a set of taken slots), first tried at a hash of the test's
//! name and this process's id, skipping any whose /24 or port a library
//! name in this namespace holds now (a process an earlier test binary
//! left behind for a while, another run). A slot is a /24 and a port:
//!
//! - the emulated network (`Net::emulated`): host 127.64-127.x.1 of the
//!   test's own 127.64-127.x.0/24 inside `EMULATED` = 127.64.0.0/10, and a
//!   virtual port in 16384..=32767 (below the kernel's ephemeral ports);
//!   IPv6 (`Net::emulated_v6`): ::1 in ::1/128 and the slot's port;
//! - the default mode (`Net::loopback`): host 127.128-191.x.1, a real
//!   loopback address, and a port the kernel hands out there.
//!
//! 10.211.0.0/16 stays for tests that make network namespaces, inside
//! them only (`host::Netns`).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::kernel::{assert_plain_client_refused, KernelWatch, Scope};
use super::{build_c, preloaded, py_file, stdout_of, tmpdir};

/// SHMNET_PARTITIONS of every emulated-network test (IPv4).
pub const EMULATED: &str = "127.64.0.0/10";
/// /24s in 127.64.0.0/10, and in 127.128.0.0/10.
const SLOTS: u32 = 1 << 14;

/// A slot no other test of this process holds.
fn slot(test: &str) -> u32 {
    static TAKEN: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (test, std::process::id()).hash(&mut h);
    let start = (h.finish() % u64::from(SLOTS)) as u32;
    let mut taken = TAKEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let busy = Busy::now();
    let slot = (0..SLOTS)
        .map(|i| (start + i) % SLOTS)
        // 127.77.0.0/16 stays with the library's own unit tests
        // (src/), which name addresses there (rendezvous.rs reserves
        // ports on 127.77.250.1), and with README's examples.
        .find(|s| !taken.contains(s) && subnet(64, *s)[1] != 77 && !busy.holds(*s))
        .expect("a free network slot");
    taken.insert(slot);
    slot
}

/// What the library's names in this network namespace hold now
/// (/proc/net/unix lists every abstract name): a slot whose /24 or port
/// is among them is skipped. Another run's test, or a process an earlier
/// test binary left behind for a while (a forked child that outlives its
/// killed parent until its alarm), would make the slot's bind EADDRINUSE.
#[derive(Default)]
struct Busy {
    subnets: HashSet<[u8; 3]>,
    ports: HashSet<u16>,
}

impl Busy {
    fn now() -> Busy {
        let mut busy = Busy::default();
        let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        for line in table.lines() {
            if let Some((ip, port)) = line.split_whitespace().last().and_then(library_name) {
                if let IpAddr::V4(v4) = ip {
                    let [a, b, c, _] = v4.octets();
                    busy.subnets.insert([a, b, c]);
                }
                busy.ports.insert(port);
            }
        }
        busy
    }

    /// Whether anything holds a name in `slot`'s /24s or on its port.
    fn holds(&self, slot: u32) -> bool {
        self.subnets.contains(&subnet(64, slot))
            || self.subnets.contains(&subnet(128, slot))
            || self.ports.contains(&(16384 + slot as u16))
    }
}

/// The address and port of a library name (`@shmnet.N/tcp/IP:PORT...`,
/// also udp; IPv6 in brackets).
fn library_name(path: &str) -> Option<(IpAddr, u16)> {
    let rest = path.strip_prefix("@shmnet.")?;
    let rest = &rest[rest.find('/')? + 1..];
    let rest = &rest[rest.find('/')? + 1..];
    let colon = rest.rfind(':')?;
    let ip = rest[..colon].trim_start_matches('[').trim_end_matches(']');
    let digits: String = rest[colon + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((ip.parse().ok()?, digits.parse().ok()?))
}

/// The slot's /24 in 127.`first`.0.0/10: its first three octets.
fn subnet(first: u8, slot: u32) -> [u8; 3] {
    [127, first + (slot >> 8) as u8, (slot & 0xff) as u8]
}

/// A port nobody uses on `host` now (the kernel's choice).
pub fn spare_port(host: IpAddr) -> u16 {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no spare port on {host}: {e}"))
        .port()
}

/// One test's network: its host and port, a fresh tmpdir (`dir`; the
/// library's SHMNET_DIR is its `shm`), and what the kernel had there when
/// it was made (not held against the test).
pub struct Net {
    pub name: String,
    pub dir: PathBuf,
    pub host: IpAddr,
    pub port: u16,
    /// SHMNET_PARTITIONS (emulated) or "" (default mode).
    pub partitions: String,
    /// The test's /24 (None: IPv6 ::1, shared by every test).
    subnet: Option<[u8; 3]>,
    before: KernelWatch,
}

impl Net {
    fn make(test: &str, host: IpAddr, subnet: Option<[u8; 3]>, port: u16, partitions: &str) -> Net {
        let mut net = Net {
            name: test.to_string(),
            dir: tmpdir(test),
            host,
            port,
            partitions: partitions.to_string(),
            subnet,
            before: KernelWatch::new(Scope::Nothing),
        };
        net.before = KernelWatch::new(net.scope(port));
        net
    }

    /// A /24 and a virtual port of the emulated network.
    pub fn emulated(test: &str) -> Net {
        let slot = slot(test);
        let [a, b, c] = subnet(64, slot);
        let host = IpAddr::V4(Ipv4Addr::new(a, b, c, 1));
        Net::make(test, host, Some([a, b, c]), 16384 + slot as u16, EMULATED)
    }

    /// ::1 in the partition ::1/128, a virtual port of the test's own.
    pub fn emulated_v6(test: &str) -> Net {
        let port = 16384 + slot(test) as u16;
        Net::make(test, IpAddr::V6(Ipv6Addr::LOCALHOST), None, port, "::1/128")
    }

    /// A real loopback host of the test's own (127.128.0.0/10) and a port
    /// the kernel says is free there: the default mode, or plain TCP.
    pub fn loopback(test: &str) -> Net {
        let [a, b, c] = subnet(128, slot(test));
        let host = IpAddr::V4(Ipv4Addr::new(a, b, c, 1));
        Net::make(test, host, Some([a, b, c]), spare_port(host), "")
    }

    /// The host as IPv4 (not for `emulated_v6`).
    pub fn v4(&self) -> Ipv4Addr {
        match self.host {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => panic!("{}: an IPv6 net", self.name),
        }
    }

    /// Host `last` of the test's /24 (the test's host is 1).
    pub fn ip(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet.expect("an IPv4 net");
        Ipv4Addr::new(a, b, c, last)
    }

    /// The test's /24 as a CIDR.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.ip(0))
    }

    pub fn host_str(&self) -> String {
        self.host.to_string()
    }

    pub fn port_str(&self) -> String {
        self.port.to_string()
    }

    /// SHMNET_DIR: `dir`/shm (made by the library).
    pub fn shm_dir(&self) -> PathBuf {
        self.dir.join("shm")
    }

    /// The emulated network's environment: SHMNET_PARTITIONS,
    /// SHMNET_FALLBACK=never, SHMNET_DIR.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        assert!(!self.partitions.is_empty(), "{}: not emulated", self.name);
        cmd.env("SHMNET_PARTITIONS", &self.partitions)
            .env("SHMNET_FALLBACK", "never")
            .env("SHMNET_DIR", self.shm_dir())
    }

    /// What counts against shared memory on `port`: on the emulated
    /// network any kernel socket in the test's /24 or on its own port (a
    /// port picked by a port-0 bind may be anyone's elsewhere); in the
    /// default mode an ESTABLISHED connection to or from host:`port`.
    fn scope(&self, port: u16) -> Scope {
        if self.partitions.is_empty() {
            return Scope::Established {
                host: Some(self.host),
                port,
            };
        }
        Scope::Emulated {
            host: self.host,
            len: if self.subnet.is_some() { 24 } else { 0 },
            port: (port == self.port).then_some(port),
        }
    }

    /// The kernel sockets that count against the test on `port` now, less
    /// those there when the net was made.
    pub fn kernel_sockets(&self, port: u16) -> Vec<String> {
        self.before.rescoped(self.scope(port)).found()
    }

    /// The proof that shared memory, not the kernel, carries this test's
    /// connections on `port`: no kernel socket for them (see `scope`) and,
    /// on the emulated network, a plain client is refused there.
    pub fn assert_shm_only(&self, port: u16, when: &str) {
        self.before.rescoped(self.scope(port)).assert_none(when);
        if !self.partitions.is_empty() {
            assert_plain_client_refused(SocketAddr::new(self.host, port), when);
        }
    }

    /// A proof of shared memory for `port` made now (a default-mode
    /// server's port, known once it listens): check it with
    /// `KernelWatch::assert_none` after the clients ran.
    pub fn watch(&self, port: u16) -> KernelWatch {
        KernelWatch::new(self.scope(port))
    }

    /// `cmd` on this emulated network (`env`), its address also in
    /// TEST_HOST and TEST_PORT, where the helper programs take it from.
    pub fn helper_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        self.env(cmd)
            .env("TEST_HOST", self.host_str())
            .env("TEST_PORT", self.port_str())
    }

    /// Preloaded tests/helpers/py/`name`.py `args` on this network.
    pub fn py_helper(&self, name: &str, args: &[&str]) -> Command {
        let mut cmd = py_file(&format!("{name}.py"), args);
        self.helper_env(&mut cmd);
        cmd
    }

    /// tests/helpers/c/`name`.c built with `flags`, preloaded on this
    /// network.
    pub fn c_helper(&self, name: &str, flags: &[&str]) -> Command {
        let mut cmd = preloaded(build_c(name, flags));
        self.helper_env(&mut cmd);
        cmd
    }
}

/// Runs tests/helpers/py/`name`.py `args` preloaded on a fresh emulated
/// network, with `env` added; requires exit 0 and returns its stdout.
pub fn emulated_script(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let net = Net::emulated(name);
    stdout_of(name, net.py_helper(name, args).envs(env.iter().copied()))
}

/// tests/helpers/c/`name`.c built with `flags`, run with `args` preloaded
/// on a fresh emulated network; requires exit 0 and returns its stdout.
pub fn emulated_c(name: &str, flags: &[&str], args: &[&str]) -> String {
    let net = Net::emulated(name);
    stdout_of(name, net.c_helper(name, flags).args(args))
}
