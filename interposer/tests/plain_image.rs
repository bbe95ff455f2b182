//! An exec into a program that runs without the library (its environment
//! has no LD_PRELOAD: nginx's binary upgrade keeps only TZ and its `env`
//! directives): an inherited default-mode listener must be a kernel TCP
//! listener there (its fd is an epoll instance under the library), and a
//! failed exec must leave the library's listener as it was.

mod common;

use std::process::Command;

use common::{helper, preloaded, python, run, Background};

/// Sends 300 000 bytes to host:port, shuts its side, and checks that the
/// answer is their sha256.
const CLIENT: &str = r#"
import hashlib, socket, sys
d = bytes((i * 7 + 3) % 251 for i in range(300000))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(d)
c.shutdown(socket.SHUT_WR)
a = b""
while True:
    b = c.recv(4096)
    if not b:
        break
    a += b
print("digest", a.decode() == hashlib.sha256(d).hexdigest())
"#;

fn client(mut cmd: Command, host: &str, port: u16) {
    let out = run(cmd.args(["-c", CLIENT, host, &port.to_string()]));
    assert!(
        out.status.success() && out.stdout.trim() == "digest True",
        "client: {}\n{}",
        out.stdout,
        out.stderr
    );
}

fn port_of(line: &str) -> u16 {
    line.rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// A preloaded server listening on 127.0.0.1 (default mode) tries an exec
/// that fails (a preloaded client is then served through the library's
/// listener), then execs a plain python with LD_PRELOAD removed from its
/// environment: that one finds a kernel TCP listener on the inherited fd
/// (getsockname, SO_ACCEPTCONN) and serves a kernel TCP client; bytes
/// checked both times. Before: getsockname failed with ENOTSOCK.
#[test]
fn listener_goes_to_a_plain_image() {
    for host in ["127.0.0.1", "::1"] {
        let mut cmd = preloaded(python());
        cmd.arg(helper("py/plain_image_serve.py")).arg(host);
        let mut srv = Background::spawn(&mut cmd);
        let port = port_of(&srv.expect("port"));
        assert_eq!(srv.expect("exec failed"), "exec failed 2");
        client(preloaded(python()), host, port);
        assert_eq!(port_of(&srv.expect("child listens")), port);
        let mut plain = Command::new(python());
        plain.env_remove("LD_PRELOAD");
        client(plain, host, port);
        let stderr = srv.finish();
        assert!(stderr.is_empty(), "server stderr: {stderr}");
    }
}

/// LD_PRELOAD kept, but the program is static (an ELF file without an
/// interpreter): nothing loads the library there, so the listener goes as
/// a kernel listener too; a kernel TCP client's 300 000 bytes come back.
#[test]
fn listener_goes_to_a_static_program() {
    let exe = common::build_c("plain_echo_listener", &["-O2", "-static"]);
    let mut cmd = preloaded(python());
    cmd.arg(helper("py/plain_image_serve.py"))
        .args(["127.0.0.1", "static"])
        .arg(&exe);
    let mut srv = Background::spawn(&mut cmd);
    let port = port_of(&srv.expect("port"));
    assert_eq!(srv.expect("exec failed"), "exec failed 2");
    client(preloaded(python()), "127.0.0.1", port);
    assert_eq!(port_of(&srv.expect("static listens")), port);
    let mut plain = Command::new(python());
    plain.env_remove("LD_PRELOAD");
    let out = run(plain.args(["-c", ECHO_CLIENT, "127.0.0.1", &port.to_string()]));
    assert_eq!(out.stdout.trim(), "echo True", "{}", out.stderr);
    let stderr = srv.finish();
    assert!(stderr.is_empty(), "server stderr: {stderr}");
}

/// LD_PRELOAD kept, but the program file is set-user-ID of another user
/// (nobody): secure execution ignores an LD_PRELOAD path, so the listener
/// goes as a kernel listener. Root only (the file is given to nobody).
#[test]
fn listener_goes_to_a_set_user_id_program() {
    if !common::host::is_root() {
        eprintln!("listener_goes_to_a_set_user_id_program: skipped: not root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let built = common::build_c("plain_echo_listener", &["-O2"]);
    let dir = common::tmpdir("plain_image_setuid");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("plain_echo_listener");
    std::fs::copy(&built, &exe).unwrap();
    std::os::unix::fs::chown(&exe, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let mut cmd = preloaded(python());
    cmd.arg(helper("py/plain_image_serve.py"))
        .args(["127.0.0.1", "static"])
        .arg(&exe);
    let mut srv = Background::spawn(&mut cmd);
    let port = port_of(&srv.expect("port"));
    assert_eq!(srv.expect("exec failed"), "exec failed 2");
    client(preloaded(python()), "127.0.0.1", port);
    assert_eq!(port_of(&srv.expect("static listens")), port);
    let mut plain = Command::new(python());
    plain.env_remove("LD_PRELOAD");
    let out = run(plain.args(["-c", ECHO_CLIENT, "127.0.0.1", &port.to_string()]));
    assert_eq!(out.stdout.trim(), "echo True", "{}", out.stderr);
    let stderr = srv.finish();
    assert!(stderr.is_empty(), "server stderr: {stderr}");
}

/// Sends 300 000 bytes, shuts its side, and checks they come back.
const ECHO_CLIENT: &str = r#"
import socket, sys, threading
d = bytes((i * 7 + 3) % 251 for i in range(300000))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def send():
    c.sendall(d)
    c.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
a = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    a += b
t.join()
print("echo", a == d)
"#;

/// The emulated mode has no kernel socket to give: the plain program
/// finds the epoll instance (ENOTSOCK) and one `libshmnet:` line says so;
/// a failed exec before it changed nothing (a preloaded client served).
#[test]
fn emulated_listener_to_a_plain_image_is_named() {
    let net = common::Net::emulated("plain_image");
    let host = net.host_str();
    let mut cmd = preloaded(python());
    cmd.arg(helper("py/plain_image_serve.py"))
        .args([host.as_str(), "emulated"])
        .env("SHMNET_PARTITIONS", common::net::EMULATED)
        .env("SHMNET_FALLBACK", "never");
    let mut srv = Background::spawn(&mut cmd);
    let port = port_of(&srv.expect("port"));
    assert_eq!(srv.expect("exec failed"), "exec failed 2");
    let mut cli = preloaded(python());
    cli.env("SHMNET_PARTITIONS", common::net::EMULATED)
        .env("SHMNET_FALLBACK", "never");
    client(cli, &host, port);
    assert_eq!(srv.expect("child errno"), "child errno 88");
    let stderr = srv.finish();
    // One line for the socket: the exec that failed said it, the one
    // that worked does not again (review execenv #2: a PATH search said
    // it once per directory).
    assert!(
        stderr.lines().count() == 1
            && stderr.lines().all(|l| l.starts_with("libshmnet: fd ")
                && l.contains("emulated listener")
                && l.contains("no LD_PRELOAD")),
        "server stderr: {stderr}"
    );
}

/// curl (preloaded or not) fetches `url` into `out`; true on success.
fn fetch(preload: bool, url: &str, out: &std::path::Path) -> bool {
    let mut cmd = if preload {
        preloaded("curl")
    } else {
        let mut c = Command::new("curl");
        c.env_remove("LD_PRELOAD");
        c
    };
    cmd.args(["-sSf", "-m", "5", "-o"])
        .arg(out)
        .arg(url)
        .status()
        .is_ok_and(|s| s.success())
}

/// Over one HTTP/1.1 connection to host:port: asks for /f.bin, says
/// "requested", waits for file argv[3], then takes the answer and asks
/// twice more; each body compared with file argv[4].
const KEEP_ALIVE: &str = r#"
import http.client, os, sys, time
want = open(sys.argv[4], "rb").read()
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=20)
c.request("GET", "/f.bin")
print("requested", flush=True)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
n = 0
for i in range(3):
    if i:
        c.request("GET", "/f.bin")
    r = c.getresponse()
    n += r.status == 200 and r.read() == want and not r.will_close
print("responses", n, "of 3", flush=True)
"#;

/// The pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
        if after.split(' ').nth(1) == Some(&pid.to_string()) {
            kids.extend(e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
        }
    }
    kids
}

fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Process `pid` has exited (gone, or a zombie not reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// nginx's binary upgrade in the default mode (sweep s34 #3): the preloaded
/// master gets USR2 and execs a new master with an environment of TZ only;
/// the new master takes the listener from the NGINX variable (getsockname
/// used to fail with ENOTSOCK, then bind failed with EADDRINUSE). The old
/// master's workers stop (WINCH); a preloaded keep-alive client connects
/// and is served three times on its connection across the old master's
/// exit (QUIT), bytes compared (sweep s35: it waited in the old master's
/// rendezvous backlog and was reset). The new master serves kernel TCP
/// clients and preloaded ones (whose lookup finds no rendezvous for the
/// listener now: kernel TCP).
#[test]
fn nginx_binary_upgrade() {
    let nginx = common::nginx_bin();
    let dir = common::tmpdir("plain_image_nginx");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    common::write_random_file(&www.join("f.bin"), 200_000, 7);
    let want = std::fs::read(www.join("f.bin")).unwrap();
    let port = common::net::spare_port("127.0.0.1".parse().unwrap());
    let conf = format!(
        "master_process on; worker_processes 1; {} \
         error_log {d}/error.log info; pid {d}/nginx.pid; events {{ worker_connections 64; }} \
         http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}",
        if common::host::is_root() {
            "user root;"
        } else {
            ""
        },
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    // Daemonised: a master whose parent is the one that started it takes
    // itself for the new binary of an upgrade and ignores USR2.
    let started = run(preloaded(&nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf")));
    assert!(started.status.success(), "nginx: {}", started.stderr);
    let pidfile = dir.join("nginx.pid");
    wait_for("the pid file", || read_pid(&pidfile).is_some());
    let old = read_pid(&pidfile).unwrap();
    let url = format!("http://127.0.0.1:{port}/f.bin");
    let out = dir.join("out.bin");
    wait_for("nginx serves", || fetch(false, &url, &out));
    // SAFETY: kill(2) on the master this test started.
    unsafe { libc::kill(old as i32, libc::SIGUSR2) };
    let upgraded =
        || read_pid(&pidfile).is_some_and(|p| p != old) && dir.join("nginx.pid.oldbin").exists();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !upgraded() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !upgraded() {
        // SAFETY: as above.
        unsafe { libc::kill(old as i32, libc::SIGTERM) };
        panic!(
            "no new master: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }
    let new = read_pid(&pidfile).unwrap();
    // WINCH: the old workers stop; the old master keeps the listener.
    // SAFETY: kill(2) on the old master, which this test started.
    unsafe { libc::kill(old as i32, libc::SIGWINCH) };
    wait_for("the old workers stop", || {
        children(old).iter().all(|&p| p == new)
    });
    // A preloaded keep-alive client connects now, and is served on its
    // connection across the old master's exit, as over the kernel (a
    // connection in the old master's rendezvous backlog was reset).
    let go = dir.join("go");
    let mut cmd = preloaded(python());
    cmd.args(["-c", KEEP_ALIVE, "127.0.0.1", &port.to_string()])
        .arg(&go)
        .arg(www.join("f.bin"));
    let mut client = Background::spawn(&mut cmd);
    client.expect("requested");
    // SAFETY: kill(2) on the old master, which this test started.
    unsafe { libc::kill(old as i32, libc::SIGQUIT) };
    wait_for("the old master quits", || gone(old));
    std::fs::write(&go, b"").unwrap();
    assert_eq!(client.expect("responses"), "responses 3 of 3");
    client.finish_clean();
    for preload in [false, true] {
        let _ = std::fs::remove_file(&out);
        assert!(
            fetch(preload, &url, &out),
            "after the upgrade, preload {preload}"
        );
        assert!(
            std::fs::read(&out).unwrap() == want,
            "bytes, preload {preload}"
        );
    }
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    // SAFETY: kill(2) on the new master, a process this test started.
    unsafe { libc::kill(new as i32, libc::SIGQUIT) };
    wait_for("the new master quits", || gone(new));
    assert!(
        !log.contains("[emerg]") && !log.contains("[crit]") && !log.contains("[alert]"),
        "nginx error.log:\n{log}"
    );
    assert!(
        log.contains("using inherited sockets"),
        "nginx error.log:\n{log}"
    );
}

/// A connection over shared memory handed to a program without the
/// library cannot be a kernel TCP connection there: the plain program
/// reads end of stream (not doorbell bytes), its peer too once the last
/// copy is gone, and one `libshmnet:` line says so.
#[test]
fn connection_to_a_plain_image_reads_as_closed() {
    const SERVER: &str = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print("port", s.getsockname()[1], flush=True)
c, _ = s.accept()
assert c.recv(5) == b"hello"
c.set_inheritable(True)
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
child = 'import os, sys; print("child reads", os.read(int(sys.argv[1]), 100), flush=True)'
os.execve(sys.executable, [sys.executable, "-c", child, str(c.fileno())], env)
"#;
    const CLIENT: &str = r#"
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"hello")
print("client reads", c.recv(100), flush=True)
"#;
    let mut cmd = preloaded(python());
    cmd.args(["-c", SERVER]);
    let mut srv = Background::spawn(&mut cmd);
    let port = port_of(&srv.expect("port"));
    let mut cmd = preloaded(python());
    cmd.args(["-c", CLIENT, &port.to_string()]);
    let mut cli = Background::spawn(&mut cmd);
    assert_eq!(srv.expect("child reads"), "child reads b''");
    assert_eq!(cli.expect("client reads"), "client reads b''");
    cli.finish_clean();
    let stderr = srv.finish();
    assert!(
        stderr.lines().count() == 1
            && stderr.starts_with("libshmnet: fd ")
            && stderr.contains("cannot become a kernel TCP connection"),
        "server stderr: {stderr}"
    );
}

/// A set-user-ID *script* is no secure execution (the kernel ignores the
/// bits on a #! file; its interpreter loads LD_PRELOAD): a connection over
/// shared memory handed to it as stdout stays one, and its output reaches
/// the peer (review execenv #1: it was closed, the peer read nothing).
/// Root only (the script is given to nobody).
#[test]
fn a_set_user_id_script_keeps_its_connection() {
    if !common::host::is_root() {
        eprintln!("a_set_user_id_script_keeps_its_connection: skipped: not root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = common::tmpdir("plain_image_setuid_script");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.join("hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello-from-script\n").unwrap();
    std::os::unix::fs::chown(&script, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o4755)).unwrap();
    const SERVER: &str = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print("port", s.getsockname()[1], flush=True)
c, _ = s.accept()
assert c.recv(5) == b"hello"
os.dup2(c.fileno(), 1)
os.execv(sys.argv[1], [sys.argv[1]])
"#;
    const CLIENT: &str = r#"
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"hello")
a = b""
while True:
    b = c.recv(100)
    if not b:
        break
    a += b
print("client reads", a, flush=True)
"#;
    let mut cmd = preloaded(python());
    cmd.args(["-c", SERVER]).arg(&script);
    let mut srv = Background::spawn(&mut cmd);
    let port = port_of(&srv.expect("port"));
    let mut cmd = preloaded(python());
    cmd.args(["-c", CLIENT, &port.to_string()]);
    let mut cli = Background::spawn(&mut cmd);
    assert_eq!(
        cli.expect("client reads"),
        "client reads b'hello-from-script\\n'"
    );
    cli.finish_clean();
    let stderr = srv.finish();
    assert!(stderr.is_empty(), "server stderr: {stderr}");
}

/// A preloaded server whose connector waits in its rendezvous backlog
/// tries an exec into a plain image, which fails: the rendezvous is shut
/// down by then (`retire_rendezvous`), yet the queued connection is
/// accepted (over shared memory); one that connects after goes over
/// kernel TCP; both echo 100 000 bytes; the listener then reads as not
/// readable (the shut-down rendezvous wakes nobody again).
const RETIRED: &str = r#"
import os, select, socket, sys
def unix(sock):
    ino = os.stat("/proc/self/fd/%d" % sock.fileno()).st_ino
    return any(l.split()[6] == str(ino) for l in open("/proc/net/unix").readlines()[1:])
d = bytes((i * 7 + 3) % 251 for i in range(100000))
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
s.set_inheritable(True)
addr = s.getsockname()
c1 = socket.socket()
c1.setblocking(False)
c1.connect_ex(addr)
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
try:
    os.execve("/nonexistent/plain", ["plain"], env)
except OSError as e:
    print("exec failed", e.errno, flush=True)
def echo(c):
    a, _ = s.accept()
    c.setblocking(True)
    c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = a.recv(65536)
        if not b:
            break
        got += b
    a.sendall(got)
    a.close()
    back = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        back += b
    return back == d
print("readable", bool(select.select([s], [], [], 20)[0]), flush=True)
print("queued", unix(c1), echo(c1), flush=True)
c2 = socket.create_connection(addr)
print("after", unix(c2), echo(c2), flush=True)
print("readable", bool(select.select([s], [], [], 0)[0]), flush=True)
"#;

#[test]
fn a_failed_exec_leaves_a_working_listener() {
    let mut cmd = preloaded(python());
    cmd.args(["-c", RETIRED]);
    let mut srv = Background::spawn(&mut cmd);
    assert_eq!(srv.expect("exec failed"), "exec failed 2");
    assert_eq!(srv.expect("readable"), "readable True");
    assert_eq!(srv.expect("queued"), "queued True True");
    assert_eq!(srv.expect("after"), "after False True");
    assert_eq!(srv.expect("readable"), "readable False");
    let stderr = srv.finish();
    assert!(stderr.is_empty(), "server stderr: {stderr}");
}

/// Four preloaded connectors wait in a listener's rendezvous backlog when
/// a forked child execs a plain program (`sh`, which says so on a pipe,
/// then sleeps; fork and execve: posix_spawn is not seen) with the
/// listener inherited (the rendezvous is retired, its registration
/// one-shot); a second listener has no connector. The
/// parent then accepts all four over shared memory (each echoing 100 000
/// bytes), and finds neither listener readable (kernel TCP: nothing
/// queued). Main's library (review s35tail #1, #5): only the first
/// connection accepted (the one-shot event consumed, never armed again:
/// the others timed out), the idle listener readable.
const QUEUED: &str = r#"
import os, select, socket, sys
def unix(sock):
    ino = os.stat("/proc/self/fd/%d" % sock.fileno()).st_ino
    return any(l.split()[6] == str(ino) for l in open("/proc/net/unix").readlines()[1:])
d = bytes((i * 7 + 3) % 251 for i in range(100000))
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    s.set_inheritable(True)
    return s
s, idle = listener(), listener()
cs = []
for i in range(4):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(s.getsockname())
    cs.append(c)
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.dup2(w, 1)
    os.execve("/bin/sh", ["sh", "-c", "echo go; exec sleep 60"], env)
os.close(w)
print("child", os.read(r, 10).decode().strip(), flush=True)
s.settimeout(10)
def echo(c):
    a, _ = s.accept()
    c.setblocking(True)
    c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = a.recv(65536)
        if not b:
            break
        got += b
    a.sendall(got)
    a.close()
    back = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        back += b
    return back == d
ok = 0
for c in cs:
    try:
        ok += unix(c) and echo(c)
    except OSError as e:
        print("accept:", e, flush=True)
        break
print("accepted", ok, "of", len(cs), flush=True)
print("idle readable", bool(select.select([idle], [], [], 0)[0]), flush=True)
print("readable", bool(select.select([s], [], [], 0)[0]), flush=True)
os.kill(child, 9)
os.waitpid(child, 0)
"#;

#[test]
fn connectors_queued_at_a_plain_exec_are_all_accepted() {
    let mut cmd = preloaded(python());
    cmd.args(["-c", QUEUED]);
    let mut srv = Background::spawn(&mut cmd);
    assert_eq!(srv.expect("child"), "child go");
    assert_eq!(srv.expect("accepted"), "accepted 4 of 4");
    assert_eq!(srv.expect("idle readable"), "idle readable False");
    assert_eq!(srv.expect("readable"), "readable False");
    let stderr = srv.finish();
    assert!(stderr.is_empty(), "server stderr: {stderr}");
}

/// A failed exec into a plain image retires the listener's rendezvous
/// with a preloaded connector queued in it; the process then execs a
/// preloaded python (itself), which takes the inherited listener over
/// (`calls::exec`, `dual_again`): it accepts the queued connection (the
/// client, a forked child, checks it is over shared memory), and then finds the listener not readable, to select and
/// to an epoll set, and no wake-up in 200 waits of 1 ms (kernel TCP:
/// none). Main's library registered the shut-down rendezvous
/// level-triggered there: readable for ever, every wait a wake-up
/// (review s35tail #2: 512k wake-ups, 1.5 s CPU in 3 s idle).
const ADOPTED: &str = r#"
import os, select, socket, sys
def unix(sock):
    ino = os.stat("/proc/self/fd/%d" % sock.fileno()).st_ino
    return any(l.split()[6] == str(ino) for l in open("/proc/net/unix").readlines()[1:])
if len(sys.argv) > 2:
    s = socket.socket(fileno=int(sys.argv[2]))
    s.settimeout(10)
    a, _ = s.accept()
    a.sendall(b"hello")
    a.close()
    print("readable", bool(select.select([s], [], [], 0)[0]), flush=True)
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN)
    print("wake-ups", sum(len(ep.poll(0.001)) for _ in range(200)), flush=True)
    print("client exit", os.waitstatus_to_exitcode(os.wait()[1]), flush=True)
    sys.exit(0)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
s.set_inheritable(True)
r, w = os.pipe()
if os.fork() == 0:
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(s.getsockname())
    os.write(w, b"c")
    select.select([], [c], [], 10)
    c.setblocking(True)
    got = b""
    while True:
        b = c.recv(100)
        if not b:
            break
        got += b
    os._exit(0 if unix(c) and got == b"hello" else 1)
os.read(r, 1)
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
try:
    os.execve("/nonexistent/plain", ["plain"], env)
except OSError as e:
    print("exec failed", e.errno, flush=True)
os.execve(sys.executable, [sys.executable, "-c", sys.argv[1], sys.argv[1], str(s.fileno())],
          dict(os.environ))
"#;

#[test]
fn a_program_taking_a_retired_listener_over_does_not_spin() {
    let mut cmd = preloaded(python());
    cmd.args(["-c", ADOPTED, ADOPTED]);
    let mut srv = Background::spawn(&mut cmd);
    assert_eq!(srv.expect("exec failed"), "exec failed 2");
    assert_eq!(srv.expect("readable"), "readable False");
    assert_eq!(srv.expect("wake-ups"), "wake-ups 0");
    assert_eq!(srv.expect("client exit"), "client exit 0");
    let stderr = srv.finish();
    assert!(stderr.is_empty(), "server stderr: {stderr}");
}
