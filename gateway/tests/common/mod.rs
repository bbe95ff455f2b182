//! Two network namespaces joined by one veth pair (10.211.0.0/24 inside
//! them only), test certificates, gateway processes; all removed on drop,
//! a panicking test included.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const A_LINK: &str = "10.211.0.1";
pub const B_LINK: &str = "10.211.0.2";
/// B's service range: B's `lo` holds 10.211.2.2; in A it is routed to A's
/// own `lo` (AnyIP), so A's gateway accepts connects to it (stage 1).
pub const B_RANGE: &str = "10.211.2.0/24";
pub const B_SERVICE: &str = "10.211.2.2";

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
