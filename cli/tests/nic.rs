//! `shmnet nic` end to end (issue 18): network namespaces made here (`ip
//! netns add`, addresses in 10.211.0.0/16 and fd11:211::/64 only inside
//! them, no veth: the only wire between them is the NIC's shared-memory
//! region), deleted on drop, a failing test included. Ping (busybox, IPv4
//! and IPv6), TCP both ways with a 64 MiB checksum, UDP echo, a statically
//! linked busybox httpd and wget moving a 64 MiB file, a spoofed source
//! dropped and counted, three namespaces with one deleted mid-run, the
//! daemon killed and restarted. Needs root; skipped otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: needs root and /dev/net/tun");
        return false;
    }
    true
}

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A namespace with `lo` up: an `ip netns` one (deleted on drop, if still
/// there) or one held by a process (`/proc/PID/ns/net`, gone when the
/// process ends; killed on drop).
struct Netns {
    /// How `shmnet nic --netns` names it.
    name: String,
    path: String,
    holder: Option<Child>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("shmnic-{tag}-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        assert!(run(&["ip", "netns", "add", &name]), "ip netns add {name}");
        let ns = Netns {
            path: format!("/run/netns/{name}"),
            name,
            holder: None,
        };
        assert!(ns
            .exec(&["ip", "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        ns
    }

    /// A namespace only a `sleep` process holds (`unshare -n`), named by
    /// its /proc path.
    fn held_by_process() -> Netns {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .spawn()
            .unwrap();
        let path = format!("/proc/{}/ns/net", child.id());
        let ns = Netns {
            name: path.clone(),
            path,
            holder: Some(child),
        };
        // unshare(2) runs after the spawn returns: wait for the new namespace.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let t0 = Instant::now();
        while std::fs::read_link(&ns.path).ok().is_none_or(|l| l == ours) {
            assert!(t0.elapsed() < TIMEOUT, "unshare -n never switched");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ns
            .exec(&["ip", "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        ns
    }

    /// Runs `f` on a thread inside the namespace: sockets it makes stay there.
    fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&self.path).unwrap();
                // SAFETY: a namespace fd; setns changes only this thread.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path)).args(args);
        c
    }

    fn ping(&self, addr: &str) -> bool {
        self.exec(&["busybox", "ping", "-c", "3", "-w", "10", addr])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn has_device(&self) -> bool {
        self.exec(&["ip", "link", "show", "shm0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Ends the namespace's holder (a /proc namespace only).
    fn end_holder(&mut self) {
        if let Some(mut c) = self.holder.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.holder.is_some() {
            self.end_holder();
        } else if self.path.starts_with("/run/netns/") {
            let _ = run(&["ip", "netns", "del", &self.name]);
        }
    }
}

/// Runs `cmd` (a `shmnet nic` expected to fail) with stderr to `log`;
/// kills it if it is still running once `running(log text)` says it came
/// up, or after TIMEOUT. Returns its exit status (None: it had to be
/// killed) and what it wrote.
fn expect_exit(
    cmd: &mut Command,
    log: &Path,
    running: impl Fn(&str) -> bool,
) -> (Option<std::process::ExitStatus>, String) {
    let mut child = cmd
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let ended = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if t0.elapsed() > TIMEOUT || running(&text) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (ended, std::fs::read_to_string(log).unwrap_or_default())
}

/// A running `shmnet nic`; killed on drop.
struct Nic {
    child: Child,
    status: PathBuf,
}

fn dir(test: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nic-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Nic {
    /// Starts the NIC on `nss` (each with its `addrs`) and waits until it
    /// published its status (every device is up by then).
    fn start(nss: &[(&Netns, &[&str])], dir: &Path) -> Nic {
        Nic::start_with(nss, dir, &[])
    }

    /// As `start`, with more options.
    fn start_with(nss: &[(&Netns, &[&str])], dir: &Path, extra: &[&str]) -> Nic {
        Nic::start_cmd(nss, dir, extra, Command::new(env!("CARGO_BIN_EXE_shmnet")))
    }

    /// As `start_with`, from a prepared command (`c`: shmnet).
    fn start_cmd(nss: &[(&Netns, &[&str])], dir: &Path, extra: &[&str], mut c: Command) -> Nic {
        let status = dir.join("status.json");
        let _ = std::fs::remove_file(&status);
        c.arg("nic").arg("--status-file").arg(&status).args(extra);
        for (ns, addrs) in nss {
            c.args(["--netns", &ns.name]);
            for a in *addrs {
                c.arg("--addr").arg(format!("{}={a}", ns.name));
            }
        }
        let log = std::fs::File::create(dir.join("nic.log")).unwrap();
        let mut child = c.stderr(log).spawn().unwrap();
        let t0 = Instant::now();
        while !status.exists() {
            if let Ok(Some(s)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("nic.log")).unwrap_or_default();
                panic!("shmnet nic exited ({s}): {log}");
            }
            assert!(t0.elapsed() < TIMEOUT, "no status file");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nic { child, status }
    }

    fn status(&self) -> serde_json::Value {
        let b = std::fs::read(&self.status).unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    fn counter(&self, part: usize, name: &str) -> u64 {
        self.status()["partitions"][part]["counters"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits for the status file (rewritten every second) to satisfy `ok`.
    fn wait_for(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        let t0 = Instant::now();
        while !ok(&self.status()) {
            assert!(t0.elapsed() < TIMEOUT, "status never showed {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&mut self, sig: libc::c_int) -> std::process::ExitStatus {
        // SAFETY: kill(2) to our own child, by pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        self.child.wait().unwrap()
    }
}

impl Drop for Nic {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Deterministic bytes (xorshift) and an FNV-1a checksum over a stream.
struct Stream {
    state: u64,
}

impl Stream {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn fnv(h: &mut u64, b: &[u8]) {
    for &x in b {
        *h = (*h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
    }
}

const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

/// Sends `len` bytes from `from` to `to_addr` (in `to`) over TCP; the
/// receiver's checksum must be the sender's.
fn tcp_transfer(from: &Netns, to: &Netns, to_addr: &str, len: u64, seed: u64) {
    let ip: IpAddr = to_addr.parse().unwrap();
    let listener = to.inside(|| TcpListener::bind((ip, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    let rx = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (mut h, mut n, mut buf) = (FNV0, 0u64, vec![0u8; 256 << 10]);
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                return (n, h);
            }
            fnv(&mut h, &buf[..k]);
            n += k as u64;
        }
    });
    let mut s = from.inside(|| TcpStream::connect_timeout(&addr, TIMEOUT).unwrap());
    let (mut src, mut h, mut buf, mut left) =
        (Stream { state: seed | 1 }, FNV0, vec![0u8; 256 << 10], len);
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        src.fill(&mut buf[..k]);
        fnv(&mut h, &buf[..k]);
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    drop(s);
    assert_eq!(
        rx.join().unwrap(),
        (len, h),
        "{to_addr}: bytes or checksum differ"
    );
}

/// `count` datagrams of varying sizes from `a` to an echo socket in `b`,
/// each answered with the same bytes (retried: UDP may lose one).
fn udp_echo(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str, count: usize) {
    let (aip, bip): (IpAddr, IpAddr) = (a_addr.parse().unwrap(), b_addr.parse().unwrap());
    let server = b.inside(|| UdpSocket::bind((bip, 0)).unwrap());
    let to: SocketAddr = server.local_addr().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        // An empty datagram ends it (or 5 s of silence, if that one is lost).
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            if n == 0 {
                break;
            }
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let client = a.inside(|| UdpSocket::bind((aip, 0)).unwrap());
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let msg: Vec<u8> = (0..1 + (i * 37) % 1400).map(|k| (k ^ i) as u8).collect();
        let mut ok = false;
        for _ in 0..10 {
            client.send_to(&msg, to).unwrap();
            if let Ok((n, from)) = client.recv_from(&mut buf) {
                assert_eq!((from, &buf[..n]), (to, &msg[..]));
                ok = true;
                break;
            }
        }
        assert!(ok, "datagram {i} to {b_addr} never echoed");
    }
    client.send_to(&[], to).unwrap();
    drop(client);
    echo.join().unwrap();
}

#[test]
fn two_namespaces_ping_tcp_udp_and_spoofing() {
    if !usable() {
        return;
    }
    let d = dir("two");
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let nic = Nic::start(
        &[
            (&a, &["10.211.1.1/24", "fd11:211::1/64"]),
            (&b, &["10.211.1.2/24", "fd11:211::2/64"]),
        ],
        &d,
    );
    assert!(a.has_device() && b.has_device());
    assert!(a.ping("10.211.1.2"), "IPv4 ping A -> B");
    assert!(b.ping("fd11:211::1"), "IPv6 ping B -> A");

    // TCP both ways at once, 64 MiB each, IPv4 one way and IPv6 the other.
    std::thread::scope(|s| {
        s.spawn(|| tcp_transfer(&a, &b, "10.211.1.2", 64 * MIB, 1));
        s.spawn(|| tcp_transfer(&b, &a, "fd11:211::1", 64 * MIB, 2));
    });
    udp_echo(&a, "10.211.1.1", &b, "10.211.1.2", 200);
    udp_echo(&b, "fd11:211::2", &a, "fd11:211::1", 100);

    // A source address A does not own: dropped at A's port, counted.
    let mut add = a.exec(&["ip", "addr", "add", "10.211.1.99/32", "dev", "lo"]);
    assert!(add.status().unwrap().success());
    let sink = b.inside(|| UdpSocket::bind(("10.211.1.2", 0)).unwrap());
    let spoof = a.inside(|| UdpSocket::bind(("10.211.1.99", 0)).unwrap());
    let before = nic.counter(0, "drop_spoofed");
    for _ in 0..5 {
        spoof
            .send_to(b"spoofed", sink.local_addr().unwrap())
            .unwrap();
    }
    nic.wait_for("5 spoofed drops", |s| {
        s["partitions"][0]["counters"]["drop_spoofed"]
            .as_u64()
            .unwrap_or(0)
            >= before + 5
    });
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        sink.recv_from(&mut [0u8; 64]).is_err(),
        "a spoofed datagram arrived"
    );
    let s = nic.status();
    let c = &s["partitions"][1]["counters"];
    assert!(c["rx_bytes"].as_u64().unwrap() >= 64 * MIB, "{s}");
    assert!(nic.counter(0, "rx_bytes") >= 64 * MIB);

    // `shmnet nic --status` reads the same file.
    let out = Command::new(env!("CARGO_BIN_EXE_shmnet"))
        .args(["nic", "--status", "--status-file"])
        .arg(&nic.status)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&a.name) && text.contains("SPOOFED"),
        "{text}"
    );
}

/// An ELF64 executable without a PT_INTERP program header: no dynamic
/// loader, so no LD_PRELOAD.
fn statically_linked(path: &Path) -> bool {
    let f = std::fs::read(path).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([f[o], f[o + 1]]) as usize;
    assert!(
        f.len() > 64 && f[..4] == *b"\x7fELF" && f[4] == 2,
        "not ELF64"
    );
    let phoff = u64::from_le_bytes(f[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(f[at..at + 4].try_into().unwrap()) != 3 // PT_INTERP
    })
}

#[test]
fn static_busybox_httpd_and_wget_move_a_file() {
    if !usable() {
        return;
    }
    // The point is programs LD_PRELOAD cannot reach: the busybox run
    // here must be statically linked (review s28 #8: not checked).
    let busybox = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("busybox"))
                .find(|f| f.is_file())
        })
        .expect("busybox in PATH");
    assert!(
        statically_linked(&busybox),
        "{} is dynamically linked: install busybox-static",
        busybox.display()
    );
    let d = dir("static");
    let (a, b) = (Netns::new("ha"), Netns::new("hb"));
    let _nic = Nic::start(&[(&a, &["10.211.3.1/24"]), (&b, &["10.211.3.2/24"])], &d);
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let mut data = vec![0u8; (64 * MIB) as usize];
    Stream { state: 7 }.fill(&mut data);
    std::fs::write(www.join("file"), &data).unwrap();
    let mut httpd = b
        .exec(&["busybox", "httpd", "-f", "-p", "10.211.3.2:8080", "-h"])
        .arg(&www)
        .spawn()
        .unwrap();
    let out = d.join("got");
    let t0 = Instant::now();
    let fetched = loop {
        let ok = a
            .exec(&["busybox", "wget", "-q", "-O"])
            .arg(&out)
            .arg("http://10.211.3.2:8080/file")
            .status()
            .is_ok_and(|s| s.success());
        if ok || t0.elapsed() > Duration::from_secs(10) {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: kill(2) to our own child, by pid.
    unsafe { libc::kill(httpd.id() as libc::pid_t, libc::SIGTERM) };
    let _ = httpd.wait();
    assert!(fetched, "wget failed");
    let got = std::fs::read(&out).unwrap();
    assert!(got == data, "the file differs ({} bytes)", got.len());
}

#[test]
fn three_namespaces_one_deleted_mid_run() {
    if !usable() {
        return;
    }
    let d = dir("three");
    let (a, b, c) = (Netns::new("ta"), Netns::new("tb"), Netns::new("tc"));
    let nic = Nic::start(
        &[
            (&a, &["10.211.2.1/24"]),
            (&b, &["10.211.2.2/24"]),
            (&c, &["10.211.2.3/24"]),
        ],
        &d,
    );
    // Switched: each destination reaches its own partition.
    for (x, y, addr) in [
        (&a, &b, "10.211.2.2"),
        (&a, &c, "10.211.2.3"),
        (&c, &b, "10.211.2.2"),
        (&b, &a, "10.211.2.1"),
    ] {
        assert!(x.ping(addr), "ping {} -> {addr}", x.name);
        tcp_transfer(x, y, addr, MIB, 3);
    }
    // A veth pair from C to a fourth namespace (no addresses): the kernel
    // destroys C's end when it frees C, and D's end with it, so D's end
    // disappearing proves nobody keeps C alive once it is deleted (review
    // s28 #6: the daemon held C's file).
    let w = Netns::new("tw");
    assert!(c
        .exec(&["ip", "link", "add", "vc", "type", "veth", "peer", "name", "vw"])
        .args(["netns", &w.name])
        .status()
        .unwrap()
        .success());
    let has_peer = || {
        w.exec(&["ip", "link", "show", "vw"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(has_peer());
    // A connection from A to C, A's end blocked in a read when C goes:
    // it fails with ECONNABORTED instead of hanging.
    let at_c = c.inside(|| TcpListener::bind(("10.211.2.3", 0)).unwrap());
    let mut to_c =
        a.inside(|| TcpStream::connect_timeout(&at_c.local_addr().unwrap(), TIMEOUT).unwrap());
    let (accepted_c, _) = at_c.accept().unwrap();
    let reader = std::thread::spawn(move || {
        to_c.set_read_timeout(Some(TIMEOUT)).unwrap();
        to_c.read(&mut [0u8; 16]).map_err(|e| e.kind())
    });
    // C's own end too (review s29 #4): this process still holds it, so C
    // lives on without its name and its device; its blocked read fails
    // with ECONNABORTED rather than hang.
    let mut own_c = accepted_c.try_clone().unwrap();
    let own_reader = std::thread::spawn(move || {
        own_c.set_read_timeout(Some(TIMEOUT)).unwrap();
        own_c.read(&mut [0u8; 16]).map_err(|e| e.kind())
    });
    // C goes away while A sends to B.
    std::thread::scope(|s| {
        let t = s.spawn(|| tcp_transfer(&a, &b, "10.211.2.2", 32 * MIB, 4));
        std::thread::sleep(Duration::from_millis(100));
        assert!(run(&["ip", "netns", "del", &c.name]));
        nic.wait_for("C gone", |s| s["partitions"][2]["state"] == "gone");
        t.join().unwrap();
    });
    assert_eq!(
        reader.join().unwrap().map(|_| ()),
        Err(std::io::ErrorKind::ConnectionAborted),
        "A's connection to the departed C"
    );
    assert_eq!(
        own_reader.join().unwrap().map(|_| ()),
        Err(std::io::ErrorKind::ConnectionAborted),
        "C's own end of it"
    );
    // C's own sockets would keep C alive: closed at once (SO_LINGER 0;
    // their reset has no device to leave by any more).
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: SO_LINGER with a valid struct linger on our own socket.
    let r = unsafe {
        libc::setsockopt(
            accepted_c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    drop((accepted_c, at_c));
    let t0 = Instant::now();
    while has_peer() {
        assert!(
            t0.elapsed() < TIMEOUT,
            "the deleted namespace is kept alive"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        a.ping("10.211.2.2") && b.ping("10.211.2.1"),
        "A and B after C left"
    );
    // A's packets for C's address are dropped and counted.
    let before = nic.counter(0, "drop_peer_gone");
    let u = a.inside(|| UdpSocket::bind(("10.211.2.1", 0)).unwrap());
    u.send_to(b"x", "10.211.2.3:9").unwrap();
    nic.wait_for("a drop for the gone partition", |s| {
        s["partitions"][0]["counters"]["drop_peer_gone"]
            .as_u64()
            .unwrap_or(0)
            > before
    });
}

#[test]
fn killed_daemon_takes_its_devices_and_restarts() {
    if !usable() {
        return;
    }
    let d = dir("kill");
    let (a, b) = (Netns::new("ka"), Netns::new("kb"));
    let parts: [(&Netns, &[&str]); 2] = [(&a, &["10.211.4.1/24"]), (&b, &["10.211.4.2/24"])];
    let mut nic = Nic::start(&parts, &d);
    assert!(a.ping("10.211.4.2"));
    let held = a.inside(|| TcpListener::bind(("10.211.4.1", 0)).unwrap());
    let conn =
        b.inside(|| TcpStream::connect_timeout(&held.local_addr().unwrap(), TIMEOUT).unwrap());
    let (accepted, _) = held.accept().unwrap();
    // Both ends blocked in a read when the daemon dies: each must fail
    // with ECONNABORTED (the warden aborts them), not hang until TCP's
    // timeouts (review s28 #7). TIMEOUT only bounds a failing run.
    let readers: Vec<_> = [("B's client end", conn), ("A's accepted end", accepted)]
        .into_iter()
        .map(|(what, mut c)| {
            std::thread::spawn(move || {
                c.set_read_timeout(Some(TIMEOUT)).unwrap();
                let r = c.read(&mut [0u8; 16]);
                (what, r.map_err(|e| e.kind()), c)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200)); // both blocked in read
    nic.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while a.has_device() || b.has_device() {
        assert!(t0.elapsed() < TIMEOUT, "devices left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in readers {
        let (what, got, mut c) = r.join().unwrap();
        assert_eq!(
            got.map(|_| ()),
            Err(std::io::ErrorKind::ConnectionAborted),
            "{what}: a blocked read after the kill"
        );
        assert!(c.write(b"after the kill").is_err(), "{what}: a write");
    }
    // No route any more: a new connection fails at once.
    let err = b
        .inside(|| TcpStream::connect_timeout(&held.local_addr().unwrap(), Duration::from_secs(5)));
    assert!(err.is_err());
    drop(held);
    // --status says the NIC is not running and no partition is up (the
    // last file said "up": review s28 #13).
    let shown = Command::new(env!("CARGO_BIN_EXE_shmnet"))
        .args(["nic", "--status", "--json", "--status-file"])
        .arg(&nic.status)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("\"down\"") && !text.contains("\"up\""),
        "{text}"
    );

    // Restart: same names, same addresses, works again (now with two
    // device queues per namespace: flows spread over both lanes); SIGTERM
    // cleans up.
    let mut nic = Nic::start_with(&parts, &d, &["--queues", "2"]);
    assert!(b.ping("10.211.4.1"));
    std::thread::scope(|s| {
        for seed in 0..4 {
            let (a, b) = (&a, &b);
            s.spawn(move || tcp_transfer(a, b, "10.211.4.2", 4 * MIB, 10 + seed));
            s.spawn(move || tcp_transfer(b, a, "10.211.4.1", 4 * MIB, 20 + seed));
        }
    });
    assert!(nic.signal(libc::SIGTERM).success());
    assert!(!a.has_device() && !b.has_device());
    assert!(!nic.status.exists(), "status file left behind");
}

#[test]
fn namespace_named_by_proc_path_dropped_when_its_process_ends() {
    if !usable() {
        return;
    }
    let d = dir("proc");
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let mut p = Netns::held_by_process();
    let nic = Nic::start(
        &[
            (&a, &["10.211.5.1/24"]),
            (&b, &["10.211.5.2/24"]),
            (&p, &["10.211.5.3/24"]),
        ],
        &d,
    );
    assert!(
        p.ping("10.211.5.1") && a.ping("10.211.5.3"),
        "to and from the /proc namespace"
    );
    p.end_holder();
    nic.wait_for("the /proc partition gone", |s| {
        s["partitions"][2]["state"] == "gone"
    });
    assert!(
        a.ping("10.211.5.2") && b.ping("10.211.5.1"),
        "the others after it left"
    );
    tcp_transfer(&a, &b, "10.211.5.2", 4 * MIB, 6);
}

/// Kills a daemon by pid on drop (a failing test leaves nothing running).
struct DaemonPid(libc::pid_t);

impl Drop for DaemonPid {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the daemon this test started, by pid.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn daemon_mode_returns_once_up_and_stops_on_sigterm() {
    if !usable() {
        return;
    }
    let d = dir("daemon");
    let (a, b) = (Netns::new("da"), Netns::new("db"));
    let status = d.join("status.json");
    let out = Command::new(env!("CARGO_BIN_EXE_shmnet"))
        .args(["nic", "--daemon", "--netns", &a.name, "--netns", &b.name])
        .arg("--status-file")
        .arg(&status)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: libc::pid_t = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let guard = DaemonPid(pid);
    // Up when --daemon returned: default addresses 10.211.0.1 and .2.
    assert!(a.has_device() && b.has_device() && status.exists());
    assert!(a.ping("10.211.0.2"));
    // A second NIC on the same status file is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_shmnet"))
        .args([
            "nic", "--netns", &a.name, "--netns", &b.name, "--name", "shm1",
        ])
        .arg("--status-file")
        .arg(&status)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("running NIC"));
    // SAFETY: kill(2) of the daemon this test started, by pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = Instant::now();
    while a.has_device() || b.has_device() || status.exists() {
        assert!(
            t0.elapsed() < TIMEOUT,
            "SIGTERM left devices or the status file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(d.join("status.json.log")).unwrap();
    assert!(log.contains("up in 2 namespaces"), "{log}");
    drop(guard);
}

#[test]
fn current_namespace_as_a_partition() {
    if !usable() {
        return;
    }
    // `current` is shmnet's own namespace: a fresh one here (unshare -n), so
    // no address ever lands in the host's.
    let d = dir("current");
    let b = Netns::new("cb");
    let status = d.join("status.json");
    let mut child = Command::new("unshare")
        .args([
            "-n",
            env!("CARGO_BIN_EXE_shmnet"),
            "nic",
            "--netns",
            "current",
        ])
        .args(["--netns", &b.name, "--addr", "current=10.211.6.1/24"])
        .args(["--addr", &format!("{}=10.211.6.2/24", b.name)])
        .arg("--status-file")
        .arg(&status)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = DaemonPid(child.id() as libc::pid_t);
    let t0 = Instant::now();
    while !status.exists() {
        assert!(
            t0.elapsed() < TIMEOUT && child.try_wait().unwrap().is_none(),
            "no NIC"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let own = Netns {
        name: "current".into(),
        path: format!("/proc/{}/ns/net", child.id()),
        holder: None,
    };
    assert!(own
        .exec(&["ip", "link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success());
    assert!(own.ping("10.211.6.2") && b.ping("10.211.6.1"));
    tcp_transfer(&b, &own, "10.211.6.1", 4 * MIB, 7);
    // SAFETY: kill(2) of our own child, by pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(!b.has_device());
    drop(guard);
}

#[test]
fn a_second_nic_on_the_same_device_name_is_refused() {
    if !usable() {
        return;
    }
    // Review s28 #5: with --queues 2 both, the second NIC's TUNSETIFF
    // joined the first one's multi-queue device. Its own status file, so
    // only the device name clashes.
    let d = dir("twice");
    let (a, b) = (Netns::new("xa"), Netns::new("xb"));
    let parts: [(&Netns, &[&str]); 2] = [(&a, &["10.211.7.1/24"]), (&b, &["10.211.7.2/24"])];
    let _nic = Nic::start_with(&parts, &d, &["--queues", "2"]);
    let held = a.inside(|| TcpListener::bind(("10.211.7.1", 0)).unwrap());
    let mut conn =
        b.inside(|| TcpStream::connect_timeout(&held.local_addr().unwrap(), TIMEOUT).unwrap());
    let (mut accepted, _) = held.accept().unwrap();
    let second = d.join("second.json");
    let (ended, err) = expect_exit(
        Command::new(env!("CARGO_BIN_EXE_shmnet"))
            .args([
                "nic", "--queues", "2", "--netns", &a.name, "--netns", &b.name,
            ])
            .args(["--addr", &format!("{}=10.211.8.1/24", a.name)])
            .args(["--addr", &format!("{}=10.211.8.2/24", b.name)])
            .arg("--status-file")
            .arg(&second),
        &d.join("second.log"),
        |_| second.exists(), // it came up: it joined
    );
    assert!(
        ended.is_some_and(|s| !s.success()),
        "a second NIC started: {err}"
    );
    assert!(err.contains("a device named shm0 already exists"), "{err}");
    // The first NIC is untouched: its connection still carries bytes both
    // ways (the failed one's warden, never armed, aborted nothing), and
    // pings pass.
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    accepted.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 5];
    conn.write_all(b"hello").unwrap();
    accepted.read_exact(&mut buf).unwrap();
    accepted.write_all(&buf).unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert!(a.ping("10.211.7.2") && b.ping("10.211.7.1"));
}

#[test]
fn an_unwritable_status_file_is_refused_before_anything_is_up() {
    if !usable() {
        return;
    }
    // Review s28 #14: "up in 2 namespaces" came before the status file
    // failed (a directory others may write), and the NIC ran without it.
    let d = dir("unsafe");
    let open = d.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (a, b) = (Netns::new("ua"), Netns::new("ub"));
    let (ended, err) = expect_exit(
        Command::new(env!("CARGO_BIN_EXE_shmnet"))
            .args(["nic", "--netns", &a.name, "--netns", &b.name])
            .arg("--status-file")
            .arg(open.join("status.json")),
        &d.join("nic.log"),
        |log| log.contains(" up in "),
    );
    assert!(ended.is_some_and(|s| !s.success()), "{err}");
    assert!(
        err.contains("give --status-file elsewhere") && !err.contains(" up in "),
        "{err}"
    );
    assert!(!a.has_device() && !b.has_device());
}

/// The pid of `daemon`'s warden (its child named shmnet-warden).
fn warden_of(daemon: u32) -> u32 {
    let t0 = Instant::now();
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some((comm, _, ppid)) = stat(pid) {
                if comm == "shmnet-warden" && ppid == daemon {
                    return pid;
                }
            }
        }
        assert!(t0.elapsed() < TIMEOUT, "no warden for {daemon}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (name, state, parent) of a process, None once it is reaped.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (st.find('(')?, st.rfind(')')?);
    let mut rest = st[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((
        st[open + 1..close].to_string(),
        state,
        rest.next()?.parse().ok()?,
    ))
}

/// Waits until process `pid` has ended (a zombie, or reaped by someone).
fn wait_ended(pid: u32, what: &str) {
    let t0 = Instant::now();
    while stat(pid).is_some_and(|(_, s, _)| s != 'Z') {
        assert!(t0.elapsed() < TIMEOUT, "{what} never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An established connection from `b` to `a` at `addr`: (B's end, A's end).
fn connection(a: &Netns, b: &Netns, addr: &str) -> (TcpStream, TcpStream) {
    let ip: IpAddr = addr.parse().unwrap();
    let held = a.inside(|| TcpListener::bind((ip, 0)).unwrap());
    let conn =
        b.inside(|| TcpStream::connect_timeout(&held.local_addr().unwrap(), TIMEOUT).unwrap());
    let (accepted, _) = held.accept().unwrap();
    (conn, accepted)
}

/// Both ends blocked in a read: each must fail with ECONNABORTED (not
/// hang: TIMEOUT only bounds a failing run).
fn readers(ends: Vec<(&'static str, TcpStream)>) -> Vec<std::thread::JoinHandle<()>> {
    ends.into_iter()
        .map(|(what, mut c)| {
            std::thread::spawn(move || {
                c.set_read_timeout(Some(TIMEOUT)).unwrap();
                let r = c.read(&mut [0u8; 16]).map_err(|e| e.kind()).map(|_| ());
                assert_eq!(
                    r,
                    Err(std::io::ErrorKind::ConnectionAborted),
                    "{what}: a blocked read"
                );
            })
        })
        .collect()
}

/// Bytes still go both ways over a connection.
fn still_carries(conn: &mut TcpStream, accepted: &mut TcpStream) {
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    accepted.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 5];
    conn.write_all(b"hello").unwrap();
    accepted.read_exact(&mut buf).unwrap();
    accepted.write_all(&buf).unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

#[test]
fn signals_to_the_process_group_leave_the_warden_to_abort_connections() {
    if !usable() {
        return;
    }
    // A terminal's Ctrl-C or Ctrl-\, `kill -9 %1`, `timeout -s KILL`:
    // a signal to the daemon's whole process group. The warden has its own
    // session and ignores what it can, so it survives it and still aborts
    // the connections once the daemon's devices are gone (review s29 #1:
    // SIGQUIT and SIGKILL killed it with the daemon, and the connections
    // hung). SIGINT alone could not fail: the warden inherits the daemon's
    // handler for it.
    for (sig, net) in [(libc::SIGKILL, 12), (libc::SIGQUIT, 13), (libc::SIGINT, 11)] {
        let d = dir(&format!("group{sig}"));
        let (a, b) = (
            Netns::new(&format!("g{sig}a")),
            Netns::new(&format!("g{sig}b")),
        );
        let (aa, ba) = (format!("10.211.{net}.1/24"), format!("10.211.{net}.2/24"));
        let parts: [(&Netns, &[&str]); 2] = [(&a, &[aa.as_str()]), (&b, &[ba.as_str()])];
        let mut c = Command::new(env!("CARGO_BIN_EXE_shmnet"));
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        // SAFETY: setrlimit and signal only, in the child before exec (both
        // async-signal-safe): SIGQUIT's core dump of a daemon with a shared
        // region is not wanted here; and the daemon gets the dispositions a
        // terminal's job has. A test run started in the background by a
        // non-interactive shell (`make test &`, `nohup ... &`) has SIGINT
        // and SIGQUIT ignored, which exec keeps: the SIGQUIT round then
        // killed nobody and the readers waited out TIMEOUT (session 35).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        let nic = Nic::start_cmd(&parts, &d, &[], c);
        let (conn, accepted) = connection(&a, &b, &aa[..aa.len() - 3]);
        let blocked = readers(vec![("B's end", conn), ("A's end", accepted)]);
        std::thread::sleep(Duration::from_millis(200)); // both blocked in read
        let pgid = nic.child.id() as libc::pid_t;
        // SAFETY: kill(2) of the process group of our own child (it leads it).
        unsafe { libc::kill(-pgid, sig) };
        for r in blocked {
            r.join().unwrap();
        }
        wait_ended(nic.child.id(), "the daemon");
        assert!(!a.has_device() && !b.has_device());
        if sig == libc::SIGKILL {
            // The daemon is a zombie (we have not reaped it): its status
            // file is stale, and a new NIC on it starts (before, /proc/PID
            // of a zombie counted as a running NIC).
            let (ended, log) = expect_exit(
                Command::new(env!("CARGO_BIN_EXE_shmnet"))
                    .args(["nic", "--netns", &a.name, "--netns", &b.name])
                    .args(["--addr", &format!("{}={aa}", a.name)])
                    .args(["--addr", &format!("{}={ba}", b.name)])
                    .arg("--status-file")
                    .arg(&nic.status),
                &d.join("again.log"),
                |log| log.contains(" up in "),
            );
            assert!(ended.is_none(), "refused next to a zombie: {log}");
        }
        drop(nic);
    }
}

/// SIGCONTs a stopped warden on drop (a failing test leaves none stopped).
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the warden this test stopped, by pid.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

#[test]
fn a_late_warden_of_an_old_nic_leaves_a_new_one_alone() {
    if !usable() {
        return;
    }
    // Review s29 #2: the warden of a SIGKILLed daemon, delayed (SIGSTOP
    // stands in for a descheduled one), aborted connections made through
    // a new NIC with the same names and addresses started meanwhile. It
    // must see that the addresses are now on another device.
    let d = dir("late");
    let (a, b) = (Netns::new("la"), Netns::new("lb"));
    let parts: [(&Netns, &[&str]); 2] = [(&a, &["10.211.14.1/24"]), (&b, &["10.211.14.2/24"])];
    let mut old = Nic::start(&parts, &d);
    let w = warden_of(old.child.id());
    // SAFETY: kill(2) of the warden of our own child, by pid.
    unsafe { libc::kill(w as libc::pid_t, libc::SIGSTOP) };
    let stopped = Stopped(w);
    old.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while a.has_device() || b.has_device() {
        assert!(t0.elapsed() < TIMEOUT, "devices left behind");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _new = Nic::start(&parts, &dir("late-new"));
    let (mut conn, mut accepted) = connection(&a, &b, "10.211.14.1");
    drop(stopped); // the old warden resumes, and does its work
    wait_ended(w, "the old warden");
    let log = std::fs::read_to_string(d.join("nic.log")).unwrap();
    assert!(log.contains("are on shm0 now"), "{log}");
    still_carries(&mut conn, &mut accepted);
}

#[test]
fn a_killed_warden_is_noticed_and_replaced() {
    if !usable() {
        return;
    }
    // Review s29 #3: a warden killed while the daemon ran stayed a zombie,
    // unnoticed, and the daemon's end then left connections hanging.
    let d = dir("warden");
    let (a, b) = (Netns::new("wa"), Netns::new("wb"));
    let parts: [(&Netns, &[&str]); 2] = [(&a, &["10.211.15.1/24"]), (&b, &["10.211.15.2/24"])];
    let mut nic = Nic::start(&parts, &d);
    let w = warden_of(nic.child.id());
    // SAFETY: kill(2) of the warden of our own child, by pid.
    unsafe { libc::kill(w as libc::pid_t, libc::SIGKILL) };
    let t0 = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(d.join("nic.log")).unwrap();
        if log.contains("a new one is pid") {
            break log;
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "the warden's death unnoticed: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains("(killed by signal 9) is gone"), "{log}");
    assert!(stat(w).is_none(), "the dead warden was not reaped");
    let (conn, accepted) = connection(&a, &b, "10.211.15.1");
    let blocked = readers(vec![("B's end", conn), ("A's end", accepted)]);
    std::thread::sleep(Duration::from_millis(200)); // both blocked in read
    nic.signal(libc::SIGKILL);
    for r in blocked {
        r.join().unwrap();
    }
}

#[test]
fn a_device_deleted_by_hand_aborts_the_connections_through_it() {
    if !usable() {
        return;
    }
    // Review s29 #5: `ip -n A link del shm0` dropped A's partition but
    // nobody aborted the connections through it: both ends hung.
    let d = dir("linkdel");
    let (a, b) = (Netns::new("ya"), Netns::new("yb"));
    let nic = Nic::start(&[(&a, &["10.211.16.1/24"]), (&b, &["10.211.16.2/24"])], &d);
    let (conn, accepted) = connection(&a, &b, "10.211.16.1");
    let blocked = readers(vec![("B's end", conn), ("A's end", accepted)]);
    std::thread::sleep(Duration::from_millis(200)); // both blocked in read
    assert!(a
        .exec(&["ip", "link", "del", "shm0"])
        .status()
        .unwrap()
        .success());
    for r in blocked {
        r.join().unwrap();
    }
    nic.wait_for("A gone", |s| s["partitions"][0]["state"] == "gone");
}
