//! Third-party programs that once broke, each run in the emulated mode
//! (`SHMNET_FALLBACK=never`, the test's own virtual address and port,
//! `common::Net::emulated`), in the default mode (loopback acceleration,
//! the test's own loopback address and a port the kernel says is free,
//! `common::Net::loopback`) and, as the baseline that proves the test
//! itself, over plain kernel TCP (nothing preloaded, same address and port
//! choice as the default mode). The programs get the address and port in
//! their config files or arguments.
//!
//! 1. sshd (privilege separation, seccomp sandbox, re-exec per connection)
//!    and a key-based `ssh ... cat FILE` streaming 64 MiB back (12.7); also
//!    with `sshd -r` (no re-exec), and, to tell the causes apart, with
//!    `-r` and the pre-authentication child's seccomp filter refused.
//! 2. nginx, 2 workers, `listen ... reuseport`: 200 curl requests on
//!    separate connections, served by both workers (12.5).
//! 3. An epoll echo server with a backlog of 64 that stalls (does not
//!    accept) until 300 clients are in connect: non-blocking clients driven
//!    by selectors, and one blocking client per thread (12.3).
//! 4. A single-threaded epoll accept loop that calls accept() once per
//!    readiness report and counts EAGAINs, with 50 sequential clients
//!    (12.2).
//!
//! Bytes are checked by sha256 (files) or compared whole (echoed lines).
//! Proof of the path: in the emulated mode no kernel TCP socket uses the
//! test's address or port at any time (sampled every 10 ms while clients
//! run) and a plain client is refused there; in the default mode no
//! ESTABLISHED kernel connection to the server's address:port exists while
//! clients run, and the connectors' `shm` counter (docs/counters.md) equals
//! the number of connections with no fallback counted.
//!
//! Each program runs in its own process group; servers whose children
//! leave it (sshd's per-connection children call setsid) are killed as a
//! process tree. Temp dirs are removed when a test ends, pass or fail
//! (`PROGRAMS_KEEP_TMP=1` keeps them). `PROGRAMS_SHMNET_LOG=debug` (any
//! SHMNET_LOG level) makes every preloaded program log at that level
//! (sshd's and nginx's lines go to their log files, quoted in failure
//! messages).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::kernel::Scope;
use common::{
    host::is_root, kernel_tcp_sockets, kill_group, preloaded, py, python, reap_group,
    wait_deadline, Background,
};

/// Deadline for a program, or an expected line.
const WAIT: Duration = Duration::from_secs(60);
/// The connection fallbacks of docs/counters.md (counted by connectors).
const FALLBACKS: [&str; 5] = [
    "fallback_no_listener",
    "fallback_refused",
    "fallback_resources",
    "fallback_policy",
    "fallback_dir",
];

const STALL_SERVER: &str = include_str!("helpers/py/stall_server.py");
const STALL_CLIENTS: &str = include_str!("helpers/py/stall_clients.py");
const ACCEPT_LOOP: &str = include_str!("helpers/py/accept_loop.py");
const SEQ_CLIENT: &str = include_str!("helpers/py/seq_client.py");

/// A line on the test's real stderr (libtest does not capture it).
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "programs.rs: {msg}");
}

/// `program` on PATH or in /usr/sbin, /usr/local/sbin (not on every
/// user's PATH).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The programs `test` needs, or None after printing why it is skipped.
fn programs(test: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_program(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        Some(found.into_iter().flatten().collect())
    } else {
        common::missing_program(test, &missing.join(", "));
        None
    }
}

// ---------------------------------------------------------------------------
// Modes and the test's network

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `SHMNET_FALLBACK=never` on the emulated network (`common::Net::env`).
    Emulated,
    /// No partition or fallback setting: loopback acceleration.
    Default,
    /// Nothing preloaded: the baseline.
    Kernel,
}

/// What a sampler needs to tell whether the kernel carried a connection.
#[derive(Clone, Copy)]
struct Proof {
    mode: Mode,
    host: Ipv4Addr,
    port: u16,
}

impl Proof {
    /// Kernel TCP sockets that must not exist in this mode: any socket on
    /// the virtual address or port (emulated), an ESTABLISHED connection
    /// to or from the server's address:port (default); none (kernel).
    fn violations(self) -> Vec<String> {
        let scope = match self.mode {
            Mode::Emulated => Scope::Emulated {
                host: IpAddr::V4(self.host),
                len: 32,
                port: Some(self.port),
            },
            Mode::Default => Scope::Established {
                host: Some(IpAddr::V4(self.host)),
                port: self.port,
            },
            Mode::Kernel => Scope::Nothing,
        };
        scope
            .found_in(&kernel_tcp_sockets())
            .into_iter()
            .filter(|k| !k.starts_with("TIME_WAIT"))
            .collect()
    }
}

/// Samples `Proof::violations` every 10 ms until stopped.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(usize, BTreeSet<String>)>,
}

impl Watch {
    fn start(path: Proof) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let (mut samples, mut seen) = (0, BTreeSet::new());
            while !flag.load(Ordering::Relaxed) {
                samples += 1;
                for v in path.violations() {
                    if seen.len() < 20 {
                        seen.insert(v);
                    }
                }
                thread::sleep(Duration::from_millis(10));
            }
            (samples, seen)
        });
        Watch { stop, handle }
    }

    /// (samples taken, distinct offending sockets seen).
    fn stop(self) -> (usize, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("watch thread")
    }
}

/// The test's network, handed out by the harness, in one of the modes.
struct Run {
    mode: Mode,
    net: common::Net,
}

impl std::ops::Deref for Run {
    type Target = common::Net;

    fn deref(&self) -> &common::Net {
        &self.net
    }
}

impl Run {
    /// Emulated: the test's own virtual address and port
    /// (`common::Net::emulated`). Otherwise its own loopback address and a
    /// port the kernel just handed out there (`common::Net::loopback`).
    fn new(name: &str, mode: Mode) -> Run {
        let name = format!("{name}-{mode:?}");
        let net = match mode {
            Mode::Emulated => common::Net::emulated(&name),
            Mode::Default | Mode::Kernel => common::Net::loopback(&name),
        };
        // Shared by every user the programs switch to (nginx's workers run
        // as `nobody`, sshd's pre-authentication child as `sshd`), like
        // /tmp: root's, sticky, writable by all (docs/security.md).
        let shm = net.shm_dir();
        std::fs::create_dir(&shm).unwrap();
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o1777)).unwrap();
        Run { mode, net }
    }

    fn path(&self) -> Proof {
        Proof {
            mode: self.mode,
            host: self.v4(),
            port: self.port,
        }
    }

    /// The mode's environment on a preloaded command.
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let level = std::env::var("PROGRAMS_SHMNET_LOG").unwrap_or_else(|_| "error".into());
        cmd.env("SHMNET_DIR", self.shm_dir())
            .env("SHMNET_LOG", level);
        if self.mode == Mode::Emulated {
            self.net.env(cmd);
        }
        cmd
    }

    /// `program`, preloaded with the mode's environment, or (kernel) with
    /// no LD_PRELOAD or SHMNET_* at all.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        if self.mode == Mode::Kernel {
            let mut cmd = Command::new(program);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("SHMNET_") || key == "LD_PRELOAD" {
                    cmd.env_remove(key);
                }
            }
            cmd.stdin(Stdio::null());
            cmd
        } else {
            let mut cmd = preloaded(program);
            self.env(&mut cmd);
            cmd
        }
    }

    /// python3 running `script` with argv HOST PORT `extra`; preloaded
    /// ones first check that the library is mapped.
    fn python(&self, script: &str, extra: &[&str]) -> Command {
        let (host, port) = (self.host.to_string(), self.port.to_string());
        let mut args = vec![host.as_str(), port.as_str()];
        args.extend_from_slice(extra);
        if self.mode == Mode::Kernel {
            let mut cmd = self.command(python());
            cmd.arg("-c").arg(script).args(&args);
            cmd
        } else {
            let mut cmd = py(script, &args);
            self.env(&mut cmd);
            cmd
        }
    }

    fn url(&self, file: &str) -> String {
        format!("http://{}:{}/{file}", self.host, self.port)
    }

    /// Fails if the kernel carries (emulated: knows) this test's
    /// connections now; in the emulated mode a plain client must also be
    /// refused at the virtual address.
    fn assert_path(&self, when: &str) {
        let found = self.path().violations();
        assert!(
            found.is_empty(),
            "{when} ({:?} mode): kernel TCP sockets for {}:{}:\n{}",
            self.mode,
            self.host,
            self.port,
            found.join("\n")
        );
        if self.mode == Mode::Emulated {
            let addr = SocketAddr::new(self.host, self.port);
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Ok(_) => panic!("{when}: a plain client reached virtual {addr} over kernel TCP"),
                Err(e) => panic!("{when}: plain connect to {addr}: want ECONNREFUSED, got {e}"),
            }
        }
    }

    /// Checks a `Watch`'s result: nothing seen in `samples` samples.
    fn assert_watched(&self, what: &str, (samples, seen): (usize, BTreeSet<String>)) {
        assert!(
            seen.is_empty(),
            "{what} ({:?} mode): kernel TCP carried connections to {}:{} \
             (seen in {samples} samples):\n{}",
            self.mode,
            self.host,
            self.port,
            seen.into_iter().collect::<Vec<_>>().join("\n")
        );
    }

    /// Preloaded modes: the connectors counted exactly `n` shared-memory
    /// connects and no fallback (docs/counters.md).
    fn assert_shm_connects(&self, what: &str, n: u64) {
        if self.mode == Mode::Kernel {
            return;
        }
        let s = common::stats::read(&self.shm_dir());
        let get = |k: &str| s.get(k).copied().unwrap_or(0);
        let fallbacks: Vec<String> = FALLBACKS
            .iter()
            .filter(|k| get(k) != 0)
            .map(|k| format!("{k} {}", get(k)))
            .collect();
        assert!(
            get("shm") == n && fallbacks.is_empty(),
            "{what} ({:?} mode): want {n} shared-memory connects and no fallback; counters: \
             shm {}, accepted_shm {}, {}",
            self.mode,
            get("shm"),
            get("accepted_shm"),
            if fallbacks.is_empty() {
                "no fallback".to_string()
            } else {
                fallbacks.join(", ")
            }
        );
    }
}

impl Drop for Run {
    /// The temp dir goes, pass or fail (the sshd tests' hold 128 MiB;
    /// failure messages quote the logs); `PROGRAMS_KEEP_TMP=1` keeps it.
    fn drop(&mut self) {
        if std::env::var_os("PROGRAMS_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Files

/// Every file in `outs` has `want`'s sha256.
fn assert_sha256(what: &str, want: &Path, outs: &[PathBuf]) {
    let mut all = vec![want.to_path_buf()];
    all.extend_from_slice(outs);
    let sums = common::sha256_files(&all);
    let bad: Vec<String> = outs
        .iter()
        .zip(&sums[1..])
        .filter(|(_, sum)| **sum != sums[0])
        .map(|(out, sum)| {
            let len = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            format!("{} ({len} bytes, sha256 {sum})", out.display())
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} outputs differ from {} ({} bytes, sha256 {}):\n{}",
        bad.len(),
        outs.len(),
        want.display(),
        std::fs::metadata(want).unwrap().len(),
        sums[0],
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The last `lines` lines of a file (for failure messages).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Processes

/// Parent pid of `pid` (from /proc/PID/stat), if it still exists.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
    let rest = stat.rsplit_once(") ")?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every live process.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut kids: Vec<u32> = all_pids()
        .into_iter()
        .filter(|&p| parent_of(p) == Some(parent))
        .collect();
    kids.sort_unstable();
    kids
}

/// Every descendant of `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    found.remove(0);
    found
}

/// A server in its own process group whose stdout and stderr go to `log`.
/// Dropped (or `stop`ped): SIGTERM to the group, then SIGKILL to
/// everything it started (also children that left its group) and reaped.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    reaped: bool,
}

impl Daemon {
    fn start(name: &str, mut cmd: Command, log: &Path) -> Daemon {
        let file = File::create(log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} {cmd:?}: {e}"));
        Daemon {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            reaped: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `ready` holds (given the log text), within 20 s.
    fn wait_until(&mut self, what: &str, ready: impl Fn(&Daemon, &str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log_text();
            if ready(self, &log) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = true;
                panic!(
                    "{} exited before {what} ({status}); its log:\n{log}",
                    self.name
                );
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("{}: not {what} within 20 s; its log:\n{log}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL everything it started, then its group; reap it.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        for pid in descendants(self.pid()) {
            // SAFETY: kill(2) takes plain integers; the pids are
            // descendants of our unreaped child, seen a moment ago.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        kill_group(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// SIGTERM to its group, up to 10 s for it to exit, then `kill`.
    /// Returns its log.
    fn stop(&mut self) -> String {
        if !self.reaped {
            let rest = descendants(self.pid());
            kill_group(self.pid(), libc::SIGTERM);
            let _ = reap_group(&mut self.child, Instant::now() + Duration::from_secs(10));
            self.reaped = true;
            for pid in rest {
                if parent_of(pid).is_some() {
                    // SAFETY: as in `kill`; a pid that exited and was
                    // reused within these 10 s is not ours, so this only
                    // signals pids /proc still shows.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
            }
        }
        self.log_text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `cmd` in its own group to completion within WAIT (the group is
/// killed at the deadline): None when it timed out.
fn run_group(cmd: &mut Command) -> Option<ExitStatus> {
    let mut child = cmd
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = wait_deadline(&mut child, WAIT);
    kill_group(child.id(), libc::SIGKILL);
    status
}

fn start(name: &str, cmd: &mut Command) -> Background {
    Background::start(name, cmd, WAIT, true)
}

// ---------------------------------------------------------------------------
// Sshd

const SSH_BYTES: usize = 64 << 20;

/// How sshd runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sshd {
    /// As installed: a child per connection that re-execs sshd (`-R`)
    /// with the connection on fds 0 and 1; privilege separation with a
    /// seccomp-filtered pre-authentication child.
    Stock,
    /// `sshd -r`: the forked child serves the connection without exec.
    NoRexec,
    /// `sshd -r` with tests/helpers/c/no_seccomp.c preloaded after the
    /// library: the pre-authentication child runs unfiltered (a diagnosis:
    /// everything but exec and the filter).
    NoRexecNoSandbox,
}

/// tests/helpers/c/no_seccomp.c built as a shared object in `dir`.
fn no_seccomp_shim(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/c/no_seccomp.c");
    let so = dir.join("no_seccomp.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .expect("a C compiler (cc) is needed: scripts/install-deps.sh installs gcc");
    assert!(
        out.status.success(),
        "cc no_seccomp.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

/// Kernel log lines (root's `dmesg`) of processes named sshd killed by a
/// seccomp filter (audit type 1326), after the first `skip` lines; on
/// x86_64 the socket syscall is named.
fn seccomp_kills(skip: usize) -> (usize, Vec<String>) {
    let out = Command::new("dmesg")
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        return (0, vec!["(dmesg unavailable)".to_string()]);
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let names = [
        (" syscall=44 ", "sendto"),
        (" syscall=45 ", "recvfrom"),
        (" syscall=46 ", "sendmsg"),
        (" syscall=47 ", "recvmsg"),
        (" syscall=232 ", "epoll_wait"),
        (" syscall=233 ", "epoll_ctl"),
        (" syscall=281 ", "epoll_pwait"),
    ];
    let kills = lines
        .iter()
        .skip(skip)
        .filter(|l| l.contains("type=1326") && l.contains("comm=\"sshd\""))
        .map(|l| {
            let name = names
                .iter()
                .find(|(n, _)| cfg!(target_arch = "x86_64") && l.contains(n))
                .map_or(String::new(), |(_, name)| format!(" [{name}]"));
            format!("{l}{name}")
        })
        .collect();
    (lines.len(), kills)
}

/// sshd (as root, own config, host key and authorized key, on the mode's
/// address) and `ssh root@HOST cat FILE` streaming 64 MiB back.
fn sshd_test(test: &str, mode: Mode, how: Sshd) {
    let Some(bins) = programs(test, &["sshd", "ssh", "ssh-keygen"]) else {
        return;
    };
    let (sshd, ssh, keygen) = (&bins[0], &bins[1], &bins[2]);
    if !is_root() {
        note(&format!("{test}: skipped: sshd needs root"));
        return;
    }
    // The privilege-separation directory the package's tmpfiles.d makes at
    // boot; left in place (other sshd tests may use it at the same time).
    if !Path::new("/run/sshd").is_dir() {
        let _ = std::fs::create_dir_all("/run/sshd");
        let _ = std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755));
    }
    let net = Run::new(test, mode);
    let d = &net.dir;
    for key in ["host_key", "client_key"] {
        let out = Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", test, "-f"])
            .arg(d.join(key))
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .output()
            .expect("ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    let data = d.join("data.bin");
    common::write_random_file(&data, SSH_BYTES, 12);
    let config = format!(
        "ListenAddress {host}:{port}\n\
         HostKey {dir}/host_key\n\
         PidFile none\n\
         UsePAM no\n\
         StrictModes no\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         LogLevel VERBOSE\n",
        host = net.host,
        port = net.port,
        dir = d.display()
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();

    let mut cmd = net.command(sshd);
    cmd.args(["-D", "-e", "-f"]).arg(d.join("sshd_config"));
    if how != Sshd::Stock {
        cmd.arg("-r");
    }
    if how == Sshd::NoRexecNoSandbox {
        let preload = format!(
            "{} {}",
            common::lib().display(),
            no_seccomp_shim(d).display()
        );
        cmd.env("LD_PRELOAD", preload);
    }
    let (dmesg_before, _) = seccomp_kills(0);
    let mut server = Daemon::start("sshd", cmd, &d.join("sshd.log"));
    server.wait_until("listening", |_, log| log.contains("Server listening on"));
    net.assert_path("sshd listening");

    let out = d.join("out.bin");
    let err = d.join("ssh.err");
    let mut client = net.command(ssh);
    client
        .args(["-F", "/dev/null", "-T", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
        .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"])
        .arg("-i")
        .arg(d.join("client_key"))
        .args(["-p", &net.port.to_string()])
        .arg(format!("root@{}", net.host))
        .arg(format!("cat {}", data.display()))
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    let watch = Watch::start(net.path());
    let status = run_group(&mut client);
    let watched = watch.stop();
    let log = server.stop();

    let got = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let ok = status.is_some_and(|s| s.success()) && got == SSH_BYTES as u64;
    let kills = if ok {
        Vec::new()
    } else {
        seccomp_kills(dmesg_before).1
    };
    assert!(
        ok,
        "{test}: ssh {} after {got} of {SSH_BYTES} bytes\nssh stderr:\n{}\n\
         seccomp kills of sshd in the kernel log since sshd started:\n{}\nsshd log \
         (sshd -D -e{}, {:?} mode; last 60 lines):\n{}",
        status.map_or("timed out".to_string(), |s| s.to_string()),
        tail(&err, 30),
        if kills.is_empty() {
            "(none)".to_string()
        } else {
            kills.join("\n")
        },
        match how {
            Sshd::Stock => "",
            Sshd::NoRexec => " -r",
            Sshd::NoRexecNoSandbox => " -r, seccomp filter off",
        },
        mode,
        log.lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_sha256(
        &format!("{test}: ssh cat"),
        &data,
        std::slice::from_ref(&out),
    );
    net.assert_shm_connects(test, 1);
    net.assert_watched(test, watched);
    for bad in ["libshmnet", "fatal", "error:"] {
        assert!(!log.contains(bad), "{test}: sshd log has {bad:?}:\n{log}");
    }
}

#[test]
fn sshd_streams_64_mib_over_ssh_emulated() {
    sshd_test("prog-sshd", Mode::Emulated, Sshd::Stock);
}

#[test]
fn sshd_streams_64_mib_over_ssh_default_mode() {
    sshd_test("prog-sshd", Mode::Default, Sshd::Stock);
}

#[test]
fn sshd_streams_64_mib_over_ssh_kernel_tcp() {
    sshd_test("prog-sshd", Mode::Kernel, Sshd::Stock);
}

#[test]
fn sshd_without_reexec_streams_64_mib_emulated() {
    sshd_test("prog-sshd-r", Mode::Emulated, Sshd::NoRexec);
}

#[test]
fn sshd_without_reexec_streams_64_mib_default_mode() {
    sshd_test("prog-sshd-r", Mode::Default, Sshd::NoRexec);
}

/// Diagnosis: with neither re-exec nor the seccomp filter, sshd works
/// over shared memory (so those two are all that breaks the tests above).
#[test]
fn sshd_without_reexec_or_sandbox_streams_64_mib_emulated() {
    sshd_test(
        "prog-sshd-r-nosandbox",
        Mode::Emulated,
        Sshd::NoRexecNoSandbox,
    );
}

#[test]
fn sshd_without_reexec_or_sandbox_streams_64_mib_default_mode() {
    sshd_test(
        "prog-sshd-r-nosandbox",
        Mode::Default,
        Sshd::NoRexecNoSandbox,
    );
}

// ---------------------------------------------------------------------------
// Nginx, 2 workers, listen ... reuseport

const NGINX_REQUESTS: usize = 200;

fn nginx_reuseport_test(test: &str, mode: Mode) {
    let Some(bins) = programs(test, &["nginx", "curl"]) else {
        return;
    };
    let (nginx, curl) = (&bins[0], &bins[1]);
    let net = Run::new(test, mode);
    let prefix = net.dir.join("nginx");
    let www = prefix.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    for d in [&net.dir, &prefix, &www] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = www.join("file.bin");
    common::write_random_file(&file, 256 << 10, 5);
    // As root, nginx's workers drop to `nobody`, who must reach www/.
    let traversable = www
        .ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    let user = if is_root() && !traversable {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        "{user}\n\
         worker_processes 2;\n\
         daemon off;\n\
         master_process on;\n\
         pid nginx.pid;\n\
         error_log stderr warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
             log_format pids '$pid $connection $connection_requests $status $body_bytes_sent';\n\
             access_log access.log pids;\n\
             sendfile on;\n\
             default_type application/octet-stream;\n\
             client_body_temp_path tmp/body;\n\
             proxy_temp_path tmp/proxy;\n\
             fastcgi_temp_path tmp/fastcgi;\n\
             uwsgi_temp_path tmp/uwsgi;\n\
             scgi_temp_path tmp/scgi;\n\
             server {{\n\
                 listen {}:{} reuseport;\n\
                 root www;\n\
             }}\n\
         }}\n",
        net.host, net.port
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();

    let mut cmd = net.command(nginx);
    cmd.arg("-p")
        .arg(format!("{}/", prefix.display()))
        .args(["-c", "nginx.conf", "-e", "stderr"]);
    let mut server = Daemon::start("nginx", cmd, &net.dir.join("nginx.log"));
    let pidfile = prefix.join("nginx.pid");
    server.wait_until("up with 2 workers", |s, _| {
        pidfile.exists() && children_of(s.pid()).len() == 2
    });
    let workers: BTreeSet<u32> = children_of(server.pid()).into_iter().collect();
    net.assert_path("nginx listening");

    // One curl, 200 transfers, each on its own connection (the server
    // closes after each response).
    let outs: Vec<PathBuf> = (0..NGINX_REQUESTS)
        .map(|i| net.dir.join(format!("out-{i}")))
        .collect();
    let mut list = String::new();
    for out in &outs {
        let _ = writeln!(list, "url = \"{}\"", net.url("file.bin"));
        let _ = writeln!(list, "output = \"{}\"", out.display());
    }
    let list_path = net.dir.join("curl.list");
    std::fs::write(&list_path, list).unwrap();
    let err = net.dir.join("curl.err");
    let mut client = net.command(curl);
    client
        .args(["-sS", "--fail", "--max-time", "50"])
        .args(["-H", "Connection: close", "-K"])
        .arg(&list_path)
        .stdout(Stdio::null())
        .stderr(File::create(&err).unwrap());
    let watch = Watch::start(net.path());
    let status = run_group(&mut client);
    let watched = watch.stop();
    let log = server.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "{test}: curl {}\ncurl stderr:\n{}\nnginx stderr:\n{log}",
        status.map_or("timed out".to_string(), |s| s.to_string()),
        tail(&err, 30)
    );
    assert_sha256(&format!("{test}: curl x{NGINX_REQUESTS}"), &file, &outs);

    // Access log: "$pid $connection $connection_requests $status $bytes".
    let access = std::fs::read_to_string(prefix.join("access.log")).unwrap_or_default();
    let rows: Vec<Vec<&str>> = access
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .collect();
    let well_formed = rows.len() == NGINX_REQUESTS
        && rows
            .iter()
            .all(|r| r.len() == 5 && r[2] == "1" && r[3] == "200" && r[4] == "262144");
    let connections: BTreeSet<&str> = rows.iter().filter_map(|r| r.get(1).copied()).collect();
    assert!(
        well_formed && connections.len() == NGINX_REQUESTS,
        "{test}: want {NGINX_REQUESTS} lines `PID CONN 1 200 262144` on distinct connections; \
         access.log:\n{access}"
    );
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for r in &rows {
        *per_pid.entry(r[0].parse().unwrap()).or_default() += 1;
    }
    note(&format!(
        "{test} ({mode:?}): requests per worker pid {per_pid:?} (workers {workers:?})"
    ));
    assert!(
        per_pid.keys().all(|p| workers.contains(p)),
        "{test}: requests served by {per_pid:?}, not by the workers {workers:?}"
    );
    assert_eq!(
        per_pid.len(),
        2,
        "{test} ({mode:?}): both reuseport workers must serve; requests per worker pid: \
         {per_pid:?} (workers {workers:?})"
    );
    net.assert_shm_connects(test, NGINX_REQUESTS as u64);
    net.assert_watched(test, watched);
    for bad in ["[emerg]", "[alert]", "[crit]", "[error]", "libshmnet"] {
        assert!(!log.contains(bad), "{test}: nginx stderr has {bad}:\n{log}");
    }
}

#[test]
fn nginx_reuseport_two_workers_both_serve_emulated() {
    nginx_reuseport_test("prog-nginx-reuseport", Mode::Emulated);
}

#[test]
fn nginx_reuseport_two_workers_both_serve_default_mode() {
    nginx_reuseport_test("prog-nginx-reuseport", Mode::Default);
}

#[test]
fn nginx_reuseport_two_workers_both_serve_kernel_tcp() {
    nginx_reuseport_test("prog-nginx-reuseport", Mode::Kernel);
}

// ---------------------------------------------------------------------------
// A stalled event loop, backlog 64, 300 clients

const STALL_CLIENTS_N: u64 = 300;
/// The stalled server's listen backlog. With 16 the kernel-TCP baseline
/// itself missed: a full accept queue makes Linux drop the client's
/// handshake ACK, and the retransmissions of 300 clients keep colliding
/// (78 of 300 non-blocking clients still waited for their echo after 50 s,
/// in 1 of 4 runs on 2 busy cores).
const BACKLOG: &str = "64";

/// stall_server.py (backlog `BACKLOG`) waits while 300 clients (`variant`
/// `nonblocking` or `threads`) connect, then echoes a line for each.
fn stall_test(test: &str, mode: Mode, variant: &str) {
    let net = Run::new(test, mode);
    let mut srv = start(
        "stalled server",
        net.python(STALL_SERVER, &[BACKLOG]).stdin(Stdio::piped()),
    );
    srv.expect("listening");
    net.assert_path("server listening");
    let watch = Watch::start(net.path());
    let count = STALL_CLIENTS_N.to_string();
    let mut cli = start(
        &format!("{variant} clients"),
        &mut net.python(STALL_CLIENTS, &[&count, variant]),
    );
    cli.expect("issued ");
    // The stall: every client is in (or past) connect, the server not
    // accepting yet, for half a second.
    thread::sleep(Duration::from_millis(500));
    srv.go();
    let client_problem = cli.finish_problem();
    let (status, srv_err) = srv.finish_status();
    let watched = watch.stop();
    let server = srv.describe(status, &srv_err);
    if let Some(problem) = client_problem {
        panic!("{test}: {problem}\n\n{server}");
    }
    assert!(
        status.is_some_and(|s| s.success()) && srv_err.is_empty(),
        "{test}: {server}"
    );
    let result = cli.lines_with("ok ").pop().expect("clients' result line");
    let served = srv
        .lines_with("served ")
        .pop()
        .expect("server's result line");
    note(&format!(
        "{test} ({mode:?}): clients: {}; server: {}",
        result.join(" "),
        served.join(" ")
    ));
    assert!(
        result[1] == count && result[3] == "0",
        "{test} ({mode:?}): want all {count} clients served; clients: {}; server: {}",
        result.join(" "),
        served.join(" ")
    );
    assert_eq!(served[1], count, "{test}: server: {}", served.join(" "));
    net.assert_shm_connects(test, STALL_CLIENTS_N);
    net.assert_watched(test, watched);
}

#[test]
fn stalled_server_300_nonblocking_clients_emulated() {
    stall_test("prog-stall-nb", Mode::Emulated, "nonblocking");
}

#[test]
fn stalled_server_300_nonblocking_clients_default_mode() {
    stall_test("prog-stall-nb", Mode::Default, "nonblocking");
}

#[test]
fn stalled_server_300_nonblocking_clients_kernel_tcp() {
    stall_test("prog-stall-nb", Mode::Kernel, "nonblocking");
}

#[test]
fn stalled_server_300_threaded_clients_emulated() {
    stall_test("prog-stall-thr", Mode::Emulated, "threads");
}

#[test]
fn stalled_server_300_threaded_clients_default_mode() {
    stall_test("prog-stall-thr", Mode::Default, "threads");
}

#[test]
fn stalled_server_300_threaded_clients_kernel_tcp() {
    stall_test("prog-stall-thr", Mode::Kernel, "threads");
}

// ---------------------------------------------------------------------------
// Accept() after epoll said readable

const SEQ_CONNECTS: u64 = 50;

/// accept_loop.py and 50 sequential clients: every accept() made because
/// epoll reported the listener readable must return a connection.
fn accept_loop_test(test: &str, mode: Mode) {
    let net = Run::new(test, mode);
    let count = SEQ_CONNECTS.to_string();
    let mut srv = start("accept loop", &mut net.python(ACCEPT_LOOP, &[&count]));
    srv.expect("listening");
    net.assert_path("server listening");
    let watch = Watch::start(net.path());
    let mut cli = start("sequential clients", &mut net.python(SEQ_CLIENT, &[&count]));
    if let Some(problem) = cli.finish_problem() {
        panic!("{test}: {problem}\n\n{}", srv.kill_and_describe());
    }
    if let Some(problem) = srv.finish_problem() {
        panic!("{test}: {problem}");
    }
    let watched = watch.stop();
    let line = srv.lines_with("accepted ").pop().expect("server's result");
    note(&format!("{test} ({mode:?}): {}", line.join(" ")));
    // "accepted N wakeups N eagain N"
    assert_eq!(line[1], count, "{}", line.join(" "));
    // Kernel TCP: never. Shared memory: an accept waits up to 2 ms for a
    // connector's message, so only a connector kept off the CPU longer than
    // that between its connect and its message (a loaded machine: seen once
    // in 50 with the emulated suite running alongside) still makes one; 15
    // to 50 of 50 did before.
    let eagain: u64 = line[5].parse().expect("eagain count");
    assert!(
        eagain <= 2,
        "{test} ({mode:?}): accept() failed with EAGAIN right after epoll_wait reported the \
         listener readable: {}",
        line.join(" ")
    );
    net.assert_shm_connects(test, SEQ_CONNECTS);
    net.assert_watched(test, watched);
}

#[test]
fn accept_after_epoll_readiness_finds_a_connection_default_mode() {
    accept_loop_test("prog-accept-loop", Mode::Default);
}

#[test]
fn accept_after_epoll_readiness_finds_a_connection_emulated() {
    accept_loop_test("prog-accept-loop", Mode::Emulated);
}

#[test]
fn accept_after_epoll_readiness_finds_a_connection_kernel_tcp() {
    accept_loop_test("prog-accept-loop", Mode::Kernel);
}
