//! Two network namespaces joined by one veth pair (10.211.0.0/24 inside
//! them only), test certificates, gateway processes; all removed on drop,
//! a panicking test included.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub const A_LINK: &str = "10.211.0.1";
pub const B_LINK: &str = "10.211.0.2";
/// B's service range: B's `lo` holds 10.211.2.2; in A it is routed to A's
/// own `lo` (AnyIP), so A's gateway accepts connects to it (stage 1).
pub const B_RANGE: &str = "10.211.2.0/24";
pub const B_SERVICE: &str = "10.211.2.2";
/// B's gateway's peer port, where A's gateway opens its link.
pub const PEER: &str = "10.211.0.2:15008";
/// A's gateway's own address in the stage-2 tests (SHMNET_GATEWAY).
pub const GATEWAY_ADDR: &str = "127.0.0.1:15001";

pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn output(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces `a` and `b`, deleted on drop.
pub struct Pair {
    pub a: String,
    pub b: String,
    pub dir: PathBuf,
}

impl Pair {
    pub fn new(test: &str) -> Pair {
        let id = std::process::id();
        let pair = Pair {
            a: format!("shmgw-{test}-a-{id}"),
            b: format!("shmgw-{test}-b-{id}"),
            dir: Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gw-{test}-{id}")),
        };
        let _ = std::fs::remove_dir_all(&pair.dir);
        std::fs::create_dir_all(&pair.dir).unwrap();
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        run(&["ip", "netns", "add", a]);
        run(&["ip", "netns", "add", b]);
        // Both ends created inside the namespaces: nothing in the host's.
        run(&[
            "ip", "-n", a, "link", "add", "gwa", "type", "veth", "peer", "name", "gwb", "netns", b,
        ]);
        for (ns, dev, ip) in [(a, "gwa", A_LINK), (b, "gwb", B_LINK)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip",
            "-n",
            b,
            "addr",
            "add",
            &format!("{B_SERVICE}/32"),
            "dev",
            "lo",
        ]);
        run(&["ip", "-n", a, "route", "add", "local", B_RANGE, "dev", "lo"]);
        pair
    }

    /// `dir/name`.
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.dir.display())
    }

    /// A test CA (`test-ca.pem`) and certificates `a` (A_LINK) and `b`
    /// (B_LINK) signed by it.
    pub fn certs(&self) -> Certs {
        let ca = Certs::ca(&self.dir, "test");
        ca.issue(&self.dir, "a", A_LINK);
        ca.issue(&self.dir, "b", B_LINK);
        ca
    }

    /// `--cert NAME.pem --key NAME.key --ca test-ca.pem`.
    pub fn identity(&self, name: &str) -> Vec<String> {
        let f = |ext: &str| self.file(&format!("{name}.{ext}"));
        let ca = self.file("test-ca.pem");
        ["--cert", &f("pem"), "--key", &f("key"), "--ca", &ca]
            .map(String::from)
            .to_vec()
    }

    /// B's gateway `gw-b`: peers at PEER, serving B_RANGE, with certificate
    /// `b`; returns once it listens.
    pub fn gateway_b(&self, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut args = vec!["--peer-listen", PEER, "--serve", B_RANGE];
        let id = self.identity("b");
        args.extend(id.iter().map(String::as_str));
        args.extend(extra);
        let mut b = Gateway::start_with(&self.b, &self.dir, "gw-b", &args, env);
        b.wait_for("peers: listening");
        b
    }

    /// A's gateway `gw-a`: listens at `listen`, sends B_RANGE to PEER, with
    /// certificate `cert`.
    pub fn gateway_a(
        &self,
        cert: &str,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let remote = format!("{B_RANGE}={PEER}");
        let mut args = vec!["--listen", listen, "--remote", &remote];
        let id = self.identity(cert);
        args.extend(id.iter().map(String::as_str));
        args.extend(extra);
        Gateway::start_with(&self.a, &self.dir, "gw-a", &args, env)
    }

    /// Both gateways on certificates `a` and `b`, A's listening at `listen`;
    /// returns once the link is up.
    pub fn gateways(
        &self,
        listen: &str,
        env_a: &[(&str, &str)],
        env_b: &[(&str, &str)],
    ) -> (Gateway, Gateway) {
        let b = self.gateway_b(&[], env_b);
        let mut a = self.gateway_a("a", listen, &[], env_a);
        a.wait_for("links established: 1");
        (a, b)
    }

    /// Takes B_RANGE's local route out of A: programs there reach B only
    /// through SHMNET_REMOTE and A's gateway (stage 2).
    pub fn unroute_b(&self) {
        run(&[
            "ip", "-n", &self.a, "route", "del", "local", B_RANGE, "dev", "lo",
        ]);
    }

    /// Runs `f` on a thread inside namespace `ns`: sockets it creates stay
    /// there.
    pub fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(ns);
                f()
            })
            .join()
            .unwrap()
        })
    }
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // The gateways' logs stay for a failed test to show.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A certificate and key for `ip`, signed by `ca`.
pub struct Certs {
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Certs {
    pub fn ca(dir: &Path, name: &str) -> Certs {
        let mut p = rcgen::CertificateParams::new(Vec::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca_cert.pem()).unwrap();
        Certs { ca_cert, ca_key }
    }

    /// Writes `<name>.pem` and `<name>.key`.
    pub fn issue(&self, dir: &Path, name: &str, ip: &str) {
        let mut p = rcgen::CertificateParams::new(Vec::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.subject_alt_names = vec![rcgen::SanType::IpAddress(ip.parse::<IpAddr>().unwrap())];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// A gateway process in a namespace; killed on drop. Its stderr goes to
/// `<dir>/<name>.log`.
pub struct Gateway {
    pub child: Child,
    pub log: PathBuf,
}

impl Gateway {
    pub fn start(ns: &str, dir: &Path, name: &str, args: &[&str]) -> Gateway {
        Gateway::start_with(ns, dir, name, args, &[])
    }

    /// With environment variables (LD_PRELOAD and SHMNET_*).
    pub fn start_with(
        ns: &str,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_shmnet-gateway")])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Gateway { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 30 s) for a log line containing `what`.
    pub fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let f = File::open(&self.log).unwrap();
            if BufReader::new(f)
                .lines()
                .any(|l| l.unwrap_or_default().contains(what))
            {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "gateway exited ({st}) before {what:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} in:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size in KiB (`ip netns exec` execs the gateway: same pid).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SO_LINGER 0: the close that follows sends a RST.
pub fn zero_linger(s: &std::net::TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a linger struct of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

/// Shared-memory directories and preloaded environments for stage 2: B's
/// programs emulate B_RANGE; A's reach it through SHMNET_REMOTE and A's
/// gateway at GATEWAY_ADDR.
pub struct Remote {
    lib: String,
    shm_a: String,
    shm_b: String,
}

impl Remote {
    pub fn new(pair: &Pair) -> Remote {
        let r = Remote {
            lib: lib().to_str().unwrap().to_string(),
            shm_a: pair.file("shm-a"),
            shm_b: pair.file("shm-b"),
        };
        std::fs::create_dir_all(&r.shm_a).unwrap();
        std::fs::create_dir_all(&r.shm_b).unwrap();
        r
    }

    pub fn lib(&self) -> &str {
        &self.lib
    }

    /// A program (or B's gateway) in B: B_RANGE in shared memory only.
    pub fn b(&self) -> [(&str, &str); 4] {
        [
            ("LD_PRELOAD", &self.lib),
            ("SHMNET_PARTITIONS", B_RANGE),
            ("SHMNET_FALLBACK", "never"),
            ("SHMNET_DIR", &self.shm_b),
        ]
    }

    /// A's gateway.
    pub fn a_gateway(&self) -> [(&str, &str); 3] {
        [
            ("LD_PRELOAD", &self.lib),
            ("SHMNET_GATEWAY", GATEWAY_ADDR),
            ("SHMNET_DIR", &self.shm_a),
        ]
    }

    /// A program in A, default mode.
    pub fn a(&self) -> [(&str, &str); 3] {
        [
            ("LD_PRELOAD", &self.lib),
            ("SHMNET_REMOTE", B_RANGE),
            ("SHMNET_DIR", &self.shm_a),
        ]
    }

    /// A program in A, emulated mode.
    pub fn a_never(&self) -> [(&str, &str); 4] {
        [
            ("LD_PRELOAD", &self.lib),
            ("SHMNET_REMOTE", B_RANGE),
            ("SHMNET_FALLBACK", "never"),
            ("SHMNET_DIR", &self.shm_a),
        ]
    }
}

/// A python3 script in namespace `ns`, killed on drop; `lines` is its
/// standard output after its first line, which must be `ready`.
pub struct Python {
    pub process: Process,
    pub lines: Lines<BufReader<ChildStdout>>,
}

impl Python {
    pub fn start(ns: &str, script: &str, args: &[&str], env: &[(&str, &str)]) -> Python {
        let mut process = Process(
            Command::new("ip")
                .args(["netns", "exec", ns, "/usr/bin/python3", "-c", script])
                .args(args)
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(process.0.stdout.take().unwrap()).lines();
        let first = lines.next().map(|l| l.unwrap_or_default());
        assert_eq!(first.as_deref(), Some("ready"), "{script}");
        Python { process, lines }
    }
}

/// A threaded echo server: binds `argv[1]:argv[2]`, says `ready`.
pub const ECHO: &str = r#"
import socket, sys, threading
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print("ready", flush=True)
def echo(c):
    while (d := c.recv(65536)):
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

/// The libshmnet.so cargo built beside this test (the workspace build of
/// `make test` builds it).
pub fn lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    [deps.join("libshmnet.so"), deps.join("../libshmnet.so")]
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.canonicalize().unwrap())
        .unwrap_or_else(|| {
            panic!("libshmnet.so not found near {}: build the workspace (cargo build -p shmnet-interposer with this profile)", exe.display())
        })
}

/// A helper process, killed on drop (a failing test leaves none behind).
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `sink` answers for `data`: its length (u64 LE) and crc32 (LE).
pub fn count_crc(data: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    let mut reply = (data.len() as u64).to_le_bytes().to_vec();
    reply.extend(crc.finalize().to_le_bytes());
    reply
}

/// A service for B's side: reads each connection to EOF and answers
/// `count_crc` of what came.
pub fn sink(listener: std::net::TcpListener) {
    use std::io::{Read, Write};
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || {
            let mut all = Vec::new();
            if s.read_to_end(&mut all).is_ok() {
                let _ = s.write_all(&count_crc(&all));
            }
        });
    }
}

/// TCP connections established in namespace `ns` that `ss` filter
/// `filter` selects (`"dport = :15008"`).
pub fn established(ns: &str, filter: &str) -> usize {
    output(&[
        "ip",
        "netns",
        "exec",
        ns,
        "ss",
        "-Htn",
        "state",
        "established",
        filter,
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count()
}
