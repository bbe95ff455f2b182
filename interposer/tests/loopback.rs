//! The default mode: no SHMNET_PARTITIONS or SHMNET_FALLBACK, so
//! the library accelerates loopback TCP (127.0.0.0/8, ::1) between two
//! preloaded programs and leaves every other pair on kernel TCP, per
//! connection. Each test has its own SHMNET_DIR, and lets the kernel pick
//! its ports (loopback addresses only).
//!
//! Proof of the path taken: while a transfer is paused half-way, a
//! shared-memory pair has no ESTABLISHED kernel TCP connection on the port
//! (only the dual listener's LISTEN socket), a TCP pair has one; and the
//! per-process counters in SHMNET_DIR/stats-PID say shm, or which fallback.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::kernel::{KernelWatch, Scope};
use common::*;

const PAIR: &str = include_str!("helpers/py/loopback_pair.py");

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        Env { dir: tmpdir(name) }
    }

    fn shm_dir(&self) -> PathBuf {
        self.dir.join("shm")
    }

    /// pair.py preloaded, in the default mode (only SHMNET_DIR set).
    fn pre(&self, args: &[&str]) -> Command {
        let mut cmd = py(PAIR, args);
        cmd.env("SHMNET_DIR", self.shm_dir());
        cmd
    }

    /// pair.py without the library.
    fn plain(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(python());
        cmd.arg("-c").arg(PAIR).args(args).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SHMNET_") || key == "LD_PRELOAD" {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// pair.py, preloaded (`pre`) or not.
    fn pair(&self, pre: bool, args: &[&str]) -> Command {
        if pre {
            self.pre(args)
        } else {
            self.plain(args)
        }
    }

    /// `n` connections went through shared memory, by both ends' counts.
    fn assert_shm(&self, n: u64) {
        let s = self.stats();
        assert_eq!(
            (s.get("shm"), s.get("accepted_shm")),
            (Some(&n), Some(&n)),
            "{s:?}"
        );
    }

    /// The counters of every process that wrote some, summed.
    fn stats(&self) -> HashMap<String, u64> {
        common::stats::read(&self.shm_dir())
    }
}

fn start(name: &str, cmd: &mut Command) -> Background {
    Background::start(name, cmd, Duration::from_secs(60), false)
}

/// A server (`pre` or plain) on `host`; its port.
fn server(env: &Env, preloaded: bool, host: &str, n: usize) -> (Background, u16) {
    let n = n.to_string();
    let args = ["server", host, &n];
    let mut cmd = env.pair(preloaded, &args);
    // (n 0: it serves until its stdin ends, at finish_clean or kill.)
    cmd.stdin(Stdio::piped());
    let mut srv = start(
        if preloaded {
            "preloaded server"
        } else {
            "plain server"
        },
        &mut cmd,
    );
    let port = srv.expect("port ")[5..].parse().unwrap();
    (srv, port)
}

/// One client of 8 MiB, paused half-way: returns the ESTABLISHED kernel
/// connections seen on `port` meanwhile.
fn paused_client(env: &Env, preloaded: bool, host: &str, port: u16, id: &str) -> Vec<String> {
    let p = port.to_string();
    let args = ["client", host, &p, "8388608", id, "pause"];
    let mut cmd = env.pair(preloaded, &args);
    let proof = KernelWatch::new(Scope::Established { host: None, port });
    let mut c = start("client", &mut cmd);
    c.expect("in-flight");
    let seen = proof.found();
    c.expect("ok ");
    c.finish_clean();
    seen
}

#[test]
fn preloaded_pair_on_loopback_uses_shared_memory() {
    let env = Env::new("lo-both");
    let (mut srv, port) = server(&env, true, "127.0.0.1", 1);
    let tcp = paused_client(&env, true, "127.0.0.1", port, "both");
    assert!(
        tcp.is_empty(),
        "a kernel TCP connection carried it: {tcp:?}"
    );
    srv.expect("served both 8388616");
    srv.finish_clean();
    env.assert_shm(1);
}

#[test]
fn plain_client_reaches_preloaded_server_over_tcp() {
    let env = Env::new("lo-plain-client");
    let (mut srv, port) = server(&env, true, "127.0.0.1", 1);
    let tcp = paused_client(&env, false, "127.0.0.1", port, "plain");
    assert!(
        !tcp.is_empty(),
        "no kernel TCP connection while a plain client sent"
    );
    srv.expect("served plain 8388616");
    srv.finish_clean();
    assert_eq!(env.stats().get("accepted_shm").copied().unwrap_or(0), 0);
}

#[test]
fn preloaded_client_falls_back_to_plain_server() {
    let env = Env::new("lo-plain-server");
    let (mut srv, port) = server(&env, false, "127.0.0.1", 1);
    let tcp = paused_client(&env, true, "127.0.0.1", port, "fallbk");
    assert!(
        !tcp.is_empty(),
        "no kernel TCP connection to a plain server"
    );
    srv.expect("served fallbk 8388616");
    srv.finish_clean();
    let s = env.stats();
    assert_eq!(s.get("fallback_no_listener"), Some(&1), "{s:?}");
    assert_eq!(s.get("shm").copied().unwrap_or(0), 0, "{s:?}");
}

/// ::1, a dual-stack [::] listener reached over IPv4 and over an
/// IPv4-mapped address: all through shared memory, with the names a kernel
/// dual-stack socket reports.
#[test]
fn ipv6_loopback_and_ipv4_mapped() {
    let env = Env::new("lo-v6");
    let (mut srv, port) = server(&env, true, "::1", 1);
    assert!(paused_client(&env, true, "::1", port, "v6").is_empty());
    srv.expect("served v6 8388616 ::1");
    srv.finish_clean();

    let (mut srv, port) = server(&env, true, "::", 2);
    let p = port.to_string();
    let mut c = start(
        "v4 client",
        &mut env.pre(&["client", "127.0.0.1", &p, "100000", "v4"]),
    );
    assert_eq!(c.expect("ok "), "ok v4 127.0.0.1 127.0.0.1");
    c.finish_clean();
    let mut c = start(
        "mapped client",
        &mut env.pre(&["client", "::ffff:127.0.0.1", &p, "100000", "mapped"]),
    );
    assert_eq!(
        c.expect("ok "),
        "ok mapped ::ffff:127.0.0.1 ::ffff:127.0.0.1"
    );
    c.finish_clean();
    srv.expect("served v4 100008 ::ffff:127.0.0.1");
    srv.expect("served mapped 100008 ::ffff:127.0.0.1");
    srv.finish_clean();
    env.assert_shm(3);
}

/// A wildcard listener serving plain and preloaded clients at once.
#[test]
fn wildcard_listener_serves_plain_and_preloaded_clients_under_load() {
    let env = Env::new("lo-wild");
    let (mut srv, port) = server(&env, true, "0.0.0.0", 24);
    let p = port.to_string();
    let mut clients: Vec<Background> = (0..24)
        .map(|i| {
            let id = format!("c{i:02}");
            let args = ["client", "127.0.0.1", &p, "2000000", &id];
            let mut cmd = env.pair(i % 2 == 0, &args);
            start(&id, &mut cmd)
        })
        .collect();
    for c in &mut clients {
        c.expect("ok ");
        c.finish_clean();
    }
    for _ in 0..24 {
        srv.expect("served ");
    }
    srv.finish_clean();
    env.assert_shm(12);
}

/// Two preloaded processes listening on one port with SO_REUSEPORT:
/// plain and preloaded clients, each connection accepted exactly once, and
/// the shared-memory ones spread over both.
#[test]
fn reuseport_two_processes_accept_each_connection_once() {
    let env = Env::new("lo-reuseport");
    // The servers serve until their stdin ends (finish_clean closes it),
    // not until idle: each gets only the connections the kernel's hash
    // gives it, and on a loaded machine an idle timeout ended one that got
    // none for a few clients (the other then served all), or both (a
    // client refused).
    let mut a = start(
        "server A",
        env.pre(&["server", "127.0.0.1", "0", "0", "reuseport"])
            .stdin(Stdio::piped()),
    );
    let port: u16 = a.expect("port ")[5..].parse().unwrap();
    let p = port.to_string();
    let mut b = start(
        "server B",
        env.pre(&["server", "127.0.0.1", "0", &p, "reuseport"])
            .stdin(Stdio::piped()),
    );
    b.expect("port ");
    let ids: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let args = ["client", "127.0.0.1", &p, "10000", id.as_str()];
        let mut cmd = env.pair(i % 2 == 0, &args);
        let mut c = start(id, &mut cmd);
        c.expect("ok ");
        c.finish_clean();
    }
    a.finish_clean();
    b.finish_clean();
    let mut served: Vec<String> = a
        .lines_with("served ")
        .into_iter()
        .chain(b.lines_with("served "))
        .map(|w| w[1].clone())
        .collect();
    served.sort();
    assert_eq!(served, ids, "served by A: {:?}\nby B: {:?}", a.seen, b.seen);
    env.assert_shm(20);
    // Shared-memory connectors are spread over the group as
    // the kernel spreads SYNs (its hash of the connector's port), so both
    // serve some of the 20 (all to one: a chance of 2 in a million).
    let preloaded_served = |p: &Background| {
        p.lines_with("served ")
            .iter()
            .filter(|w| ids.iter().step_by(2).any(|id| *id == w[1]))
            .count()
    };
    let (na, nb) = (preloaded_served(&a), preloaded_served(&b));
    assert!(
        na > 0 && nb > 0,
        "shared-memory connections: A {na}, B {nb}"
    );
}

/// A port a kernel listener holds is EADDRINUSE for a preloaded bind, as
/// without the library.
#[test]
fn port_taken_by_a_kernel_listener_is_eaddrinuse() {
    let env = Env::new("lo-inuse");
    let (mut srv, port) = server(&env, false, "127.0.0.1", 0);
    let script = format!(
        "import socket, errno\ns = socket.socket()\ntry:\n    s.bind(('127.0.0.1', {port}))\n    \
         print('bound')\nexcept OSError as e:\n    print('error', errno.errorcode[e.errno])\n"
    );
    let mut cmd = py(&script, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let out = run(&mut cmd);
    assert_eq!(out.stdout.trim(), "error EADDRINUSE", "{}", out.stderr);
    srv.kill();
}

/// A listener inherited across exec (servers that re-exec themselves, or
/// hand their listener to a program they run) keeps working: the exec'd
/// program finds the kernel listener on its fd and a new rendezvous.
#[test]
fn dual_listener_inherited_across_exec() {
    let env = Env::new("lo-exec");
    let child = "import socket, sys, hashlib\n\
        s = socket.socket(fileno=int(sys.argv[1]))\n\
        print('port', s.getsockname()[1], flush=True)\n\
        for i in range(2):\n    \
            c, a = s.accept()\n    \
            h = hashlib.sha256()\n    \
            while (b := c.recv(65536)):\n        h.update(b)\n    \
            c.sendall(h.hexdigest().encode()); c.close()\n    \
            print('served', i, flush=True)\n";
    let parent = format!(
        "import os, socket, sys\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
         s.set_inheritable(True)\n\
         os.execv(sys.executable, [sys.executable, '-c', {child:?}, str(s.fileno())])\n"
    );
    let mut cmd = py(&parent, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let mut srv = start("exec'd server", &mut cmd);
    let port = srv.expect("port ")[5..].to_string();
    for (pre, id) in [(true, "pre"), (false, "plain")] {
        let args = ["client", "127.0.0.1", port.as_str(), "300000", id];
        let mut cmd = env.pair(pre, &args);
        let mut c = start(id, &mut cmd);
        c.expect("ok ");
        c.finish_clean();
    }
    srv.expect("served 1");
    srv.finish_clean();
    env.assert_shm(1);
}

/// A privilege-separated server (varnishd's manager binds as root, its
/// cache child drops to its own user and listens): root's bind makes the
/// rendezvous, with root's credentials, and the child's listen takes it,
/// so a preloaded client reaches the child through shared memory (before,
/// the child's rendezvous carried its own uid, which clients refuse from
/// a root-owned kernel listener: kernel TCP only). A plain client is
/// served by the same child over TCP.
#[test]
fn root_binds_and_a_child_of_another_user_listens() {
    if common::host::skip_unless_root("root_binds_and_a_child_of_another_user_listens") {
        return;
    }
    let env = Env::new("lo-privsep");
    let script = "import hashlib, os, socket, sys\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0))\n\
        pid = os.fork()\n\
        if pid == 0:\n    \
            os.setgroups([]); os.setgid(65534); os.setuid(65534)\n    \
            s.listen(8)\n    \
            print('port', s.getsockname()[1], os.geteuid(), flush=True)\n    \
            for i in range(2):\n        \
                c, a = s.accept()\n        \
                h = hashlib.sha256()\n        \
                while (b := c.recv(65536)):\n            h.update(b)\n        \
                c.sendall(h.hexdigest().encode()); c.close()\n        \
                print('served', i, flush=True)\n    \
            os._exit(0)\n\
        s.close()\n\
        _, st = os.waitpid(pid, 0)\n\
        sys.exit(os.waitstatus_to_exitcode(st))\n";
    let mut cmd = py(script, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let mut srv = start("privilege-separated server", &mut cmd);
    let line = srv.expect("port ");
    let mut words = line.split_whitespace().skip(1);
    let port: u16 = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("65534"), "{line}");
    let tcp = paused_client(&env, true, "127.0.0.1", port, "pre");
    assert!(
        tcp.is_empty(),
        "a kernel TCP connection carried it: {tcp:?}"
    );
    srv.expect("served 0");
    let p = port.to_string();
    let args = ["client", "127.0.0.1", p.as_str(), "300000", "plain"];
    let mut c = start("plain client", &mut env.plain(&args));
    c.expect("ok ");
    c.finish_clean();
    srv.expect("served 1");
    // (The child, uid 65534, may not write its counters into a directory
    // of root's: only the client's are asserted.)
    let _ = srv.finish();
    assert_eq!(env.stats().get("shm"), Some(&1), "{:?}", env.stats());
}

/// A program's own epoll set, inherited across exec, that watches only a
/// kernel TCP listener is left alone (found by review): the library took
/// it for one of its listeners and put the kernel listener on its fd
/// number. The parent runs without the library and execs a preloaded
/// child; the child's epoll fd must still be an epoll set reporting the
/// listener.
#[test]
fn programs_own_inherited_epoll_set_is_left_alone() {
    let env = Env::new("lo-exec-epoll");
    let child = "import os, select, socket, sys\n\
        ep, lf = int(sys.argv[1]), int(sys.argv[2])\n\
        kind = os.readlink(f'/proc/self/fd/{ep}')\n\
        s = socket.socket(fileno=lf)\n\
        c = socket.create_connection(s.getsockname())\n\
        e = select.epoll.fromfd(ep)\n\
        print(kind, e.poll(2), flush=True)\n";
    let parent = format!(
        "import os, select, socket, sys\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
         e = select.epoll(); e.register(s.fileno(), select.EPOLLIN)\n\
         s.set_inheritable(True); os.set_inheritable(e.fileno(), True)\n\
         env = dict(os.environ, LD_PRELOAD=sys.argv[1])\n\
         os.execve(sys.executable, [sys.executable, '-c', {child:?}, \
         str(e.fileno()), str(s.fileno())], env)\n"
    );
    let mut cmd = common::host::scrubbed(python());
    cmd.arg("-c")
        .arg(&parent)
        .arg(common::lib())
        .env("SHMNET_DIR", env.shm_dir());
    let out = run(&mut cmd);
    assert!(
        out.stdout.starts_with("anon_inode:[eventpoll] [(") && out.stdout.contains(", 1)]"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

/// A default-mode listener shared by a process and a program it forks and
/// execs keeps shared memory in both (found by review): the exec'd
/// program recognises the listener by its rendezvous (inherited with it)
/// and keeps it. Before, the name was still the parent's, so the exec'd
/// program listened on kernel TCP only.
#[test]
fn dual_listener_shared_with_an_exec_d_child() {
    let env = Env::new("lo-exec-fork");
    let child = "import socket, sys, hashlib\n\
        s = socket.socket(fileno=int(sys.argv[1]))\n\
        print('child ready', flush=True)\n\
        c, a = s.accept()\n\
        h = hashlib.sha256()\n\
        while (b := c.recv(65536)):\n    h.update(b)\n\
        c.sendall(h.hexdigest().encode()); c.close()\n\
        print('child served', flush=True)\n";
    let parent = format!(
        "import os, socket, sys, time\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
         s.set_inheritable(True)\n\
         pid = os.fork()\n\
         if pid == 0:\n    \
             os.execv(sys.executable, [sys.executable, '-c', {child:?}, str(s.fileno())])\n\
         print('port', s.getsockname()[1], flush=True)\n\
         os.waitpid(pid, 0)\n\
         print('parent done', flush=True)\n"
    );
    let mut cmd = py(&parent, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir())
        .env("SHMNET_LOG", "warn");
    let mut srv = start("forking server", &mut cmd);
    let port = srv.expect("port ")[5..].to_string();
    srv.expect("child ready");
    let args = ["client", "127.0.0.1", port.as_str(), "300000", "c"];
    let mut c = start("client", &mut env.pre(&args));
    c.expect("ok ");
    c.finish_clean();
    srv.expect("child served");
    srv.expect("parent done");
    srv.finish_clean();
    env.assert_shm(1);
}

/// A listener handed to an exec'd program by dup2 onto a fixed number
/// (socket activation, supervisors) keeps working (found by review): the
/// copy dup2 makes goes across exec, and so must the listener's parts,
/// which stayed close-on-exec (the program got ENOTSOCK).
#[test]
fn listener_dup2_to_an_exec_d_program() {
    let env = Env::new("lo-exec-dup2");
    let child = "import socket, hashlib\n\
        s = socket.socket(fileno=9)\n\
        print('port', s.getsockname()[1], flush=True)\n\
        c, a = s.accept()\n\
        h = hashlib.sha256()\n\
        while (b := c.recv(65536)):\n    h.update(b)\n\
        c.sendall(h.hexdigest().encode()); c.close()\n\
        print('served', flush=True)\n";
    let parent = format!(
        "import os, socket, sys\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
         os.dup2(s.fileno(), 9)\n\
         os.execv(sys.executable, [sys.executable, '-c', {child:?}])\n"
    );
    let mut cmd = py(&parent, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let mut srv = start("exec'd server", &mut cmd);
    let port = srv.expect("port ")[5..].to_string();
    let args = ["client", "127.0.0.1", port.as_str(), "300000", "c"];
    let mut c = start("client", &mut env.pre(&args));
    c.expect("ok ");
    c.finish_clean();
    srv.expect("served");
    srv.finish_clean();
    env.assert_shm(1);
}

/// A listener's parts go across exec only while one of its fds does
/// (found by review): an inheritable copy made and closed again left them
/// inheritable, so every program run later held the server's kernel
/// listener and rendezvous (and kept the port bound after the server).
#[test]
fn closed_inheritable_copy_leaks_nothing_into_programs_run_later() {
    let env = Env::new("lo-exec-leak");
    let script = "import os, socket\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
        os.dup2(s.fileno(), 10)\n\
        os.close(10)\n\
        os.system('ls -l /proc/self/fd | grep -c socket')\n";
    let mut cmd = py(script, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let out = run(&mut cmd);
    assert_eq!(
        out.stdout.trim(),
        "0",
        "sockets in a program run later: {}",
        out.stderr
    );
}

/// A free loopback port (the kernel's pick; free again once returned).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// curl, preloaded or not, downloading `url` to `to`; panics on failure.
fn curl(env: &Env, pre: bool, url: &str, to: &std::path::Path) {
    let mut cmd = if pre {
        let mut c = preloaded("curl");
        c.env("SHMNET_DIR", env.shm_dir());
        c
    } else {
        let mut c = Command::new("curl");
        c.env_remove("LD_PRELOAD");
        c
    };
    let out = cmd
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(to)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {url} (preloaded: {pre}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// nginx (master and 2 workers, edge-triggered epoll with EPOLLEXCLUSIVE,
/// sendfile) preloaded on 127.0.0.1 in the default mode: preloaded curl
/// goes through shared memory, plain curl through kernel TCP, to the same
/// listener; python's http.server without the library serves a preloaded
/// curl over kernel TCP (fallback counted).
#[test]
fn nginx_and_curl_mixed_pairs() {
    let env = Env::new("lo-nginx");
    let prefix = env.dir.join("nginx");
    let www = prefix.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    let file = www.join("f.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let want = sha256_of(&file);
    let port = free_port();
    let conf = format!(
        "user root;\nworker_processes 2;\ndaemon off;\nmaster_process on;\npid nginx.pid;\n\
         error_log stderr warn;\nevents {{ worker_connections 256; }}\n\
         http {{ access_log off; sendfile on; default_type application/octet-stream;\n\
         client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;\n\
         uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root www; }} }}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let nginx_bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("nginx is not installed: scripts/install-deps.sh installs it");
    let mut cmd = preloaded(nginx_bin);
    cmd.env("SHMNET_DIR", env.shm_dir())
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .args(["-c", "nginx.conf", "-e", "stderr"]);
    let mut nginx = Background::start("nginx", &mut cmd, Duration::from_secs(60), true);
    let url = format!("http://127.0.0.1:{port}/f.bin");
    let got = env.dir.join("got.bin");
    // Up when a plain curl gets through.
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        Command::new("curl")
            .env_remove("LD_PRELOAD")
            .args(["-sf", "--max-time", "2", "-o", "/dev/null", &url])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "nginx did not come up:\n{}", nginx.kill());
    for i in 0..6 {
        let pre = i % 2 == 0;
        let _ = std::fs::remove_file(&got);
        curl(&env, pre, &url, &got);
        assert_eq!(
            sha256_of(&got),
            want,
            "download {i} (preloaded: {pre}) differs"
        );
    }
    let s = env.stats();
    let log = nginx.kill();
    assert!(
        !log.contains("[alert]") && !log.contains("[emerg]") && !log.contains("libshmnet"),
        "nginx: {log}"
    );
    assert_eq!(
        (s.get("shm"), s.get("accepted_shm")),
        (Some(&3), Some(&3)),
        "{s:?}"
    );

    // A plain server: a preloaded curl falls back to kernel TCP.
    let mut srv = Command::new(python());
    srv.env_remove("LD_PRELOAD")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(&www);
    let mut srv = Background::start("http.server", &mut srv, Duration::from_secs(60), false);
    let line = srv.expect("Serving HTTP");
    let port = line
        .split("port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("http.server port")
        .to_string();
    let _ = std::fs::remove_file(&got);
    curl(&env, true, &format!("http://127.0.0.1:{port}/f.bin"), &got);
    assert_eq!(sha256_of(&got), want);
    srv.kill();
    let s = env.stats();
    assert_eq!(s.get("fallback_no_listener"), Some(&1), "{s:?}");
}

/// A preloaded client's fallback is the kernel's own connect on the same
/// socket: non-blocking (EINPROGRESS, then POLLOUT and SO_ERROR 0), with
/// the options set before it; a closed port is ECONNREFUSED via SO_ERROR.
#[test]
fn fallback_keeps_nonblocking_connect_and_options() {
    let env = Env::new("lo-nbfallback");
    let (mut srv, port) = server(&env, false, "127.0.0.1", 1);
    let closed = free_port();
    let script = format!(
        "import socket, select, errno\n\
         def attempt(port):\n    \
             c = socket.socket()\n    \
             c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n    \
             c.setblocking(False)\n    \
             r = c.connect_ex(('127.0.0.1', port))\n    \
             select.select([], [c], [], 5)\n    \
             e = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)\n    \
             nd = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)\n    \
             print(errno.errorcode.get(r, r), errno.errorcode.get(e, e), nd, flush=True)\n    \
             return c\n\
         c = attempt({port})\n\
         c.setblocking(True)\n\
         c.sendall(b'nb______' + b'x' * 1000); c.shutdown(socket.SHUT_WR)\n\
         print('digest', len(c.recv(100)))\n\
         attempt({closed})\n"
    );
    let mut cmd = py(&script, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let out = run(&mut cmd);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["EINPROGRESS 0 1", "digest 64", "EINPROGRESS ECONNREFUSED 1"],
        "{}",
        out.stderr
    );
    srv.expect("served nb 1008");
    srv.finish_clean();
    let s = env.stats();
    assert_eq!(s.get("fallback_no_listener"), Some(&2), "{s:?}");
}

/// Regression: a second connect() on a socket that fell back to kernel TCP
/// is the kernel's: EALREADY while in progress, 0 once (APR learns the
/// result of a non-blocking connect that way), then EISCONN; the socket
/// stays the kernel connection the program registered with epoll (DEL
/// finds it), and its bytes arrive. A connect to a preloaded server on the
/// connected socket is EISCONN too, not a shared-memory connection put
/// over it.
#[test]
fn second_connect_on_a_fallen_back_socket_is_the_kernels() {
    let env = Env::new("lo-reconnect");
    let (mut srv, port) = server(&env, false, "127.0.0.1", 1);
    let (mut pre, pre_port) = server(&env, true, "127.0.0.1", 0);
    let script = format!(
        "import socket, select, errno\n\
         name = lambda r: errno.errorcode.get(r, r)\n\
         c = socket.socket()\n\
         c.setblocking(False)\n\
         ep = select.epoll()\n\
         first = name(c.connect_ex(('127.0.0.1', {port})))\n\
         ep.register(c.fileno(), select.EPOLLOUT)\n\
         ep.poll(5)\n\
         second = name(c.connect_ex(('127.0.0.1', {port})))\n\
         third = name(c.connect_ex(('127.0.0.1', {port})))\n\
         other = name(c.connect_ex(('127.0.0.1', {pre_port})))\n\
         ep.unregister(c.fileno())\n\
         print(first, second, third, other, flush=True)\n\
         c.setblocking(True)\n\
         c.sendall(b'nb______' + b'x' * 1000); c.shutdown(socket.SHUT_WR)\n\
         print('digest', len(c.recv(100)))\n"
    );
    let mut cmd = py(&script, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let out = run(&mut cmd);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["EINPROGRESS 0 EISCONN EISCONN", "digest 64"],
        "{}",
        out.stderr
    );
    srv.expect("served nb 1008");
    srv.finish_clean();
    pre.kill();
    let s = env.stats();
    assert_eq!(s.get("fallback_no_listener"), Some(&1), "{s:?}");
    assert_eq!(s.get("shm"), Some(&0), "{s:?}");
}

/// Regression: accept() right after epoll said the listener is readable
/// finds the connection, in both modes — not EAGAIN because the
/// connector's message was a few microseconds behind its connect (39 and
/// 44 of 50 before, server and client on one CPU). A connector preempted for over a millisecond between the two
/// still makes one EAGAIN: a few are allowed.
#[test]
fn accept_after_readable_finds_the_connection() {
    let env = Env::new("lo-eagain");
    let script = include_str!("helpers/py/accept_eagain.py");
    for emulated in [false, true] {
        let mut cmd = py(script, &["127.0.0.1", "50"]);
        cmd.env("SHMNET_DIR", env.shm_dir());
        if emulated {
            cmd.env("SHMNET_PARTITIONS", "127.0.0.0/8")
                .env("SHMNET_FALLBACK", "never");
        }
        let out = run(&mut cmd);
        let lines: Vec<&str> = out.stdout.lines().collect();
        let eagain: u32 = lines
            .first()
            .and_then(|l| l.strip_prefix("eagain "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{lines:?}\n{}", out.stderr));
        assert!(eagain <= 3, "emulated {emulated}: {lines:?}");
        assert_eq!(lines.get(1), Some(&"served 50"), "{}", out.stderr);
    }
    let s = env.stats();
    assert_eq!(s.get("accepted_shm"), Some(&100), "{s:?}");
}

/// A kernel connection reset by its peer is back in the CLOSE state, but
/// the kernel still answers a connect on it with EISCONN: a connect to a
/// preloaded listener is not diverted onto it either (found by review:
/// it became a shared-memory connection over the dead one).
#[test]
fn connect_after_a_reset_is_eisconn() {
    let env = Env::new("lo-reset");
    let reset = "import socket, struct\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(4)\n\
        print('port', s.getsockname()[1], flush=True)\n\
        c, _ = s.accept(); c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
        c.send(b'x'); c.close()\n";
    let mut plain = Command::new(python());
    plain.arg("-c").arg(reset).env_remove("LD_PRELOAD");
    let mut rst = start("resetting server", &mut plain);
    let rst_port = rst.expect("port ")[5..].to_string();
    let (mut pre, pre_port) = server(&env, true, "127.0.0.1", 0);
    let script = format!(
        "import socket, errno\n\
         c = socket.create_connection(('127.0.0.1', {rst_port}))\n\
         c.recv(10)\n\
         try:\n    c.recv(10)\n\
         except OSError as e:\n    print('recv', errno.errorcode[e.errno])\n\
         r = c.connect_ex(('127.0.0.1', {pre_port}))\n\
         print('connect', errno.errorcode.get(r, r), flush=True)\n"
    );
    let mut cmd = py(&script, &[]);
    cmd.env("SHMNET_DIR", env.shm_dir());
    let out = run(&mut cmd);
    assert_eq!(
        out.stdout, "recv ECONNRESET\nconnect EISCONN\n",
        "{}",
        out.stderr
    );
    rst.finish_clean();
    pre.kill();
}
