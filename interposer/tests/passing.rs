//! TCP sockets passed to another process with SCM_RIGHTS (decision 67):
//! node's cluster (the primary accepts and hands each connection to a
//! worker, or hands a bound socket to workers that listen), haproxy's
//! seamless reload (`-x`: listeners), squid's SMP workers. Each script runs
//! three times and must print the same lines: plain (kernel TCP), preloaded
//! on a loopback address (default mode) and preloaded on the emulated
//! network; bytes are checked by their sha256, and each run says whether
//! its connections were carried by the kernel or by shared memory (no
//! kernel socket for its ports while it is open).

mod common;

use std::process::Command;

use common::{preloaded, python, stdout_of, Net};

/// What every script starts with: argv is host, port and the carriage
/// expected ("kernel" or "shm"); `carried()` says it as expected or not.
const PRELUDE: &str = r#"
import hashlib, os, socket, sys, time
host, port, expect = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def kernel_sockets(c):
    # The kernel's sockets of this connection, in any state.
    mine = {c.getsockname()[1], port}
    n = 0
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for l in open(f).readlines()[1:]:
            w = l.split()
            ports = {int(w[1].split(":")[1], 16), int(w[2].split(":")[1], 16)}
            n += w[3] != "0A" and ports == mine
    return n
def carried(c):
    got = "kernel" if kernel_sockets(c) else "shm"
    print("carried", "as expected" if got == expect else got + " (expected " + expect + ")", flush=True)
def payload(i):
    return bytes((j * 7 + i) % 251 for j in range(60000))
def read_n(c, n):
    b = b""
    while len(b) < n:
        k = c.recv(n - len(b))
        if not k:
            break
        b += k
    return b
def serve(c, tag):
    d = read_n(c, 60000)
    c.sendall((tag + hashlib.sha256(d).hexdigest()).encode())
def ask(i, tag_len, check=False):
    c = socket.create_connection((host, port), timeout=10)
    d = payload(i)
    c.sendall(d)
    a = read_n(c, tag_len + 64).decode()
    if check:
        carried(c)
    ok = a[tag_len:] == hashlib.sha256(d).hexdigest()
    c.close()
    return a[:tag_len], ok
"#;

/// Runs `body` plain, preloaded in the default mode and preloaded on the
/// emulated network; `expect` is how the default mode's connections are
/// carried (the emulated network's are always shared memory, plain ones
/// the kernel's). The three outputs must be the same.
fn same_as_kernel(name: &str, body: &str, default_expect: &str) -> String {
    let script = format!("{PRELUDE}{body}");
    let lo = Net::loopback(name);
    let em = Net::emulated(name);
    let mut plain = Command::new(python());
    plain.env_remove("LD_PRELOAD");
    plain
        .arg("-c")
        .arg(&script)
        .args([&lo.host_str(), &lo.port_str(), "kernel"]);
    let kernel = stdout_of(&format!("{name} (kernel TCP)"), &mut plain);
    let mut def = preloaded(python());
    def.arg("-c")
        .arg(&script)
        .args([&lo.host_str(), &lo.port_str(), default_expect]);
    let default = stdout_of(&format!("{name} (default mode)"), &mut def);
    let mut emu = preloaded(python());
    em.env(&mut emu)
        .arg("-c")
        .arg(&script)
        .args([&em.host_str(), &em.port_str(), "shm"]);
    let emulated = stdout_of(&format!("{name} (emulated)"), &mut emu);
    assert_eq!(default, kernel, "{name}: the default mode vs kernel TCP");
    assert_eq!(emulated, kernel, "{name}: the emulated mode vs kernel TCP");
    kernel
}

/// node cluster with SCHED_NONE, squid SMP: the primary binds (no listen)
/// and hands the socket to a worker forked before, which listens and
/// accepts. Main's library: the default mode's connectors waited in the
/// rendezvous root made at the bind, in the primary (timed out); the
/// emulated receiver listened on a bare Unix socket (timed out).
#[test]
fn a_bound_socket_passed_listens_in_the_receiver() {
    let body = r#"
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    _, fds, _, _ = socket.recv_fds(b, 16, 1)
    l = socket.socket(fileno=fds[0]); l.listen(16); b.send(b"r")
    l.settimeout(10)
    try:
        for i in range(3):
            c, _ = l.accept(); serve(c, "w:"); c.close()
    except OSError as e:
        print("worker:", e, flush=True)
    os._exit(0)
b.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, port))
socket.send_fds(a, [b"x"], [s.fileno()])
a.recv(1)
for i in range(3):
    try:
        print("client", i, ask(i, 2, check=i == 0), flush=True)
    except OSError as e:
        print("client", i, e, flush=True)
os.waitpid(pid, 0)
s.close()
"#;
    let out = same_as_kernel("pass_bound", body, "shm");
    assert_eq!(out.matches("('w:', True)").count(), 3, "{out}");
}

/// haproxy -x (seamless reload), systemd-style handover: a listening
/// socket passed, the sender closing its copy; the receiver's getsockname
/// and accept work. In the default mode the receiver holds the kernel
/// listener and preloaded clients reach it over kernel TCP (the sender's
/// rendezvous retired); emulated, it listens behind the rendezvous it got.
/// Main's library: ENOTSOCK (an epoll instance was passed).
#[test]
fn a_listener_passed_accepts_in_the_receiver() {
    let body = r#"
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    _, fds, _, _ = socket.recv_fds(b, 16, 1)
    try:
        l = socket.socket(fileno=fds[0])
        print("receiver: name", l.getsockname()[1] == port, flush=True)
        b.send(b"r")
        l.settimeout(10)
        for i in range(3):
            c, _ = l.accept(); serve(c, "r:"); c.close()
    except OSError as e:
        print("receiver:", e, flush=True); b.send(b"r")
    os._exit(0)
b.close()
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind((host, port)); l.listen(16)
socket.send_fds(a, [b"x"], [l.fileno()])
l.close()
a.recv(1)
for i in range(3):
    try:
        print("client", i, ask(i, 2, check=i == 0), flush=True)
    except OSError as e:
        print("client", i, e, flush=True)
os.waitpid(pid, 0)
"#;
    let out = same_as_kernel("pass_listener", body, "kernel");
    assert!(out.contains("receiver: name True"), "{out}");
    assert_eq!(out.matches("('r:', True)").count(), 3, "{out}");
}

/// node cluster's default scheduling (round-robin): the primary accepts
/// each connection and hands it to one of two workers over a socketpair,
/// closing its own copy at once; the worker reads 60,000 bytes and answers
/// their sha256. The worker's control buffer has room for exactly one fd
/// (`recv_fds(..., 1)`): the library's carrier must not take it. One more
/// message passes a connection and a pipe to a buffer for one fd: the
/// kernel's MSG_CTRUNC, one fd, and that connection served. Main's
/// library: every client read nothing (the worker held a bare Unix
/// socket).
#[test]
fn connections_passed_are_carried_by_the_receiver() {
    let body = r#"
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind((host, port)); l.listen(64)
pipes = []
workers = []
for w in range(2):
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close(); l.close()
        while True:
            msg, fds, flags, _ = socket.recv_fds(b, 16, 1)
            if not msg:
                os._exit(0)
            if msg == b"t":
                print("truncated:", bool(flags & socket.MSG_CTRUNC), len(fds), flush=True)
            c = socket.socket(fileno=fds[0])
            serve(c, "w%d:" % w); c.close()
    b.close(); pipes.append(a); workers.append(pid)
r, w = os.pipe()
cl = os.fork()
if cl == 0:
    l.close()
    res = [ask(i, 3, check=i == 0) for i in range(21)]
    print("clients:", sorted(set(t for t, ok in res)), all(ok for t, ok in res), flush=True)
    os._exit(0)
for i in range(21):
    c, _ = l.accept()
    if i == 20:
        # A connection and a pipe to a buffer with room for one fd.
        socket.send_fds(pipes[0], [b"t"], [c.fileno(), r])
    else:
        socket.send_fds(pipes[i % 2], [b"c"], [c.fileno()])
    c.close()
os.waitpid(cl, 0)
for p in pipes:
    p.close()
for pid in workers:
    os.waitpid(pid, 0)
"#;
    let out = same_as_kernel("pass_conns", body, "shm");
    assert!(
        out.contains("clients: ['w0:', 'w1:'] True"),
        "every client answered by both workers: {out}"
    );
    assert!(out.contains("truncated: True 1"), "{out}");
}

/// A program found in PATH, or None (the test says it skipped; node and
/// haproxy are installed by scripts/install-deps.sh).
fn program(test: &str, name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("{test}: skipped: {name} is not installed");
    }
    found
}

/// 20 requests (each a 60,000-byte POST answered by its sha256), checked,
/// with the carriage of the first: the client's lines.
const HTTP_CLIENT: &str = r#"
import http.client
answers = set()
for i in range(20):
    d = payload(i)
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("POST", "/", body=d, headers={"Connection": "close"})
        if i == 0:
            carried(c.sock)
        r = c.getresponse()
        body = r.read().decode()
        answers.add(body == hashlib.sha256(d).hexdigest())
    except OSError as e:
        answers.add(str(e))
    c.close()
print("answers", sorted(answers, key=str), flush=True)
"#;

/// Starts `server` (a command made for the mode by `setup`), waits for its
/// "ready" line, runs the HTTP client in the same mode; its output per
/// mode (kernel TCP, default, emulated) must be the same.
fn http_same_as_kernel(
    name: &str,
    default_expect: &str,
    server: impl Fn(Command, &str, &str) -> Command,
    server_program: &std::path::Path,
) -> String {
    let lo = Net::loopback(name);
    let em = Net::emulated(name);
    let script = format!("{PRELUDE}{HTTP_CLIENT}");
    let mut outs = Vec::new();
    for mode in ["kernel", "default", "emulated"] {
        let net = if mode == "emulated" { &em } else { &lo };
        let (base, client) = match mode {
            "kernel" => {
                let mut s = Command::new(server_program);
                s.env_remove("LD_PRELOAD");
                let mut c = Command::new(python());
                c.env_remove("LD_PRELOAD");
                (s, c)
            }
            _ => {
                let mut s = preloaded(server_program);
                let mut c = preloaded(python());
                if mode == "emulated" {
                    em.env(&mut s);
                    em.env(&mut c);
                }
                (s, c)
            }
        };
        let mut cmd = server(base, &net.host_str(), &net.port_str());
        let mut srv =
            common::Background::start(name, &mut cmd, common::TIMEOUT, /* group */ true);
        srv.expect("ready");
        let expect = match mode {
            "kernel" => "kernel",
            "default" => default_expect,
            _ => "shm",
        };
        let mut client = client;
        client
            .arg("-c")
            .arg(&script)
            .args([&net.host_str(), &net.port_str(), expect]);
        outs.push(stdout_of(&format!("{name} client ({mode})"), &mut client));
        let stderr = srv.kill();
        assert!(
            !stderr.contains("libshmnet") && !stderr.contains("not seamless"),
            "{name} ({mode}) stderr: {stderr}"
        );
    }
    assert_eq!(outs[1], outs[0], "{name}: the default mode vs kernel TCP");
    assert_eq!(outs[2], outs[0], "{name}: the emulated mode vs kernel TCP");
    outs.swap_remove(0)
}

/// node's cluster module, both scheduling policies: round-robin (the
/// primary accepts and passes each connection to a worker) and SCHED_NONE
/// (the primary binds and passes the socket; workers listen). Main's
/// library: every request failed (round-robin: the worker's socket was a
/// bare Unix socket, curl's rc 52/56; none: connectors waited in the
/// primary's rendezvous, or were refused).
#[test]
fn node_cluster_serves_through_its_workers() {
    let Some(node) = program("node_cluster_serves_through_its_workers", "node") else {
        return;
    };
    let dir = common::tmpdir("node_cluster");
    let js = dir.join("cluster.js");
    std::fs::write(
        &js,
        r#"
const cluster = require('cluster'), http = require('http'), crypto = require('crypto');
if (process.argv[4] === 'none') cluster.schedulingPolicy = cluster.SCHED_NONE;
if (cluster.isPrimary) {
  let up = 0;
  for (let i = 0; i < 2; i++)
    cluster.fork().on('listening', () => { if (++up === 2) console.log('ready'); });
} else {
  http.createServer((q, r) => {
    const h = crypto.createHash('sha256');
    q.on('data', d => h.update(d));
    q.on('end', () => r.end(h.digest('hex')));
  }).listen(+process.argv[3], process.argv[2]);
}
"#,
    )
    .unwrap();
    for policy in ["rr", "none"] {
        let out = http_same_as_kernel(
            &format!("node_cluster_{policy}"),
            "shm",
            |mut c, host, port| {
                c.arg(&js).args([host, port, policy]);
                c
            },
            &node,
        );
        assert_eq!(out, "carried as expected\nanswers [True]\n", "{policy}");
    }
}

/// haproxy's seamless reload: the new process takes the listeners from the
/// old one over its stats socket (`-x`, SCM_RIGHTS) and the old one
/// finishes (`-sf`); the requests after the reload reach the backend
/// through the new one. Main's library: the new haproxy got an epoll
/// instance ("Failed to get socket address") and bound anew.
#[test]
fn haproxy_reload_takes_the_listeners_over() {
    let Some(haproxy) = program("haproxy_reload_takes_the_listeners_over", "haproxy") else {
        return;
    };
    let dir = common::tmpdir("haproxy_reload");
    let backend = r#"
import hashlib, http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        d = self.rfile.read(int(self.headers["Content-Length"]))
        b = hashlib.sha256(d).hexdigest().encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;
    // The haproxy sequence runs under one shell: old, reload, old gone.
    let run = format!(
        r#"
set -e
H={haproxy}; D={dir}; A=$1; P=$2; PY=$3
cat > $D/h-$P.cfg <<CFG
global
  stats socket $D/admin-$P.sock mode 600 level admin expose-fd listeners
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend fe
  bind $A:$P
  default_backend be
backend be
  server s1 $A:$((P+1))
CFG
$PY -c '{backend}' $A $((P+1)) &
sleep 0.5
$H -f $D/h-$P.cfg -db > $D/h1-$P.log 2>&1 &
OLD=$!
for i in $(seq 50); do [ -S $D/admin-$P.sock ] && break; sleep 0.1; done
sleep 0.3
$H -f $D/h-$P.cfg -db -x $D/admin-$P.sock -sf $OLD > $D/h2-$P.log 2>&1 &
for i in $(seq 100); do kill -0 $OLD 2>/dev/null || break; sleep 0.1; done
if grep -q "Failed to get socket address" $D/h2-$P.log; then echo "reload: not seamless" >&2; fi
echo ready
wait
"#,
        haproxy = haproxy.display(),
        dir = dir.display(),
    );
    let out = http_same_as_kernel(
        "haproxy_reload",
        // The new haproxy holds the kernel listener: preloaded clients
        // reach it through the kernel (the old one's rendezvous retired).
        "kernel",
        |mut c, host, port| {
            let _ = &mut c;
            let mut sh = Command::new("bash");
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => sh.env(k, v),
                    None => sh.env_remove(k),
                };
            }
            sh.arg("-c")
                .arg(&run)
                .args(["sh", host, port])
                .arg(python());
            sh
        },
        &haproxy,
    );
    assert_eq!(out, "carried as expected\nanswers [True]\n");
}

/// A recvmsg with a control buffer on a socket not ours receives inside
/// the library (room for carriers): a thread blocked there is still
/// cancelled by pthread_cancel, as in plain glibc (an unwind through the
/// library's frames would abort the process).
#[test]
fn a_thread_blocked_in_recvmsg_is_cancelled() {
    let exe = common::build_c("cancel_recvmsg", &["-O2", "-pthread"]);
    let out = stdout_of("cancel_recvmsg", &mut preloaded(&exe));
    assert_eq!(out, "joined cancelled\n");
}

/// fds passed between two sockets that are not the library's, received
/// with control buffers of every size: too short for a header, for one
/// fd of two, exactly enough, larger, with SO_PASSCRED's credentials in
/// front, and not mapped at all; with MSG_PEEK too. What recvmsg returns
/// (length, msg_flags, msg_controllen, each cmsg's level, type and length,
/// the fds left open in the process) must be the kernel's: the library
/// receives with a control buffer of its own and lays it into the
/// caller's.
#[test]
fn control_buffers_of_every_size_are_the_kernels() {
    let script = r#"
import ctypes, mmap, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
# A TCP connection of ours in this process (preloaded runs).
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
def open_fds():
    return len(os.listdir("/proc/self/fd"))
def recv(sock, room, flags=0, bad=False):
    buf = ctypes.create_string_buffer(64); ctl = ctypes.create_string_buffer(512)
    iov = iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
    ptr = ctypes.c_void_p(libc.mmap(None, 4096, 0, 0x22, -1, 0)) if bad else ctypes.cast(ctl, ctypes.c_void_p)
    m = msghdr(None, 0, ctypes.pointer(iov), 1, ptr, room, 0)
    n = libc.recvmsg(sock.fileno(), ctypes.byref(m), flags)
    cm = []; at = 0; raw = b"" if bad else ctl.raw[:m.controllen]
    while len(raw) - at >= 16:
        ln, lv, ty = struct.unpack_from("Qii", raw, at)
        if ty == socket.SCM_RIGHTS:
            for i in range((min(ln, len(raw) - at) - 16) // 4):
                os.close(struct.unpack_from("i", raw, at + 16 + 4 * i)[0])
        cm.append((ln, lv, ty)); at += (ln + 7) // 8 * 8
    return n, m.flags, m.controllen, cm
for cred in (False, True):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    if cred:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    for room in (0, 8, 16, 20, 24, 28, 40, 64, 256):
        r1, w1 = os.pipe()
        before = open_fds()
        a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("ii", r1, w1))])
        got = recv(b, room, socket.MSG_PEEK) + recv(b, room)
        os.close(r1); os.close(w1)
        print("cred", cred, "room", room, got, "fds left", open_fds() - before + 2, flush=True)
    r1, w1 = os.pipe()
    before = open_fds()
    a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("ii", r1, w1))])
    got = recv(b, 64, bad=True)
    os.close(r1); os.close(w1)
    print("cred", cred, "unmapped", got[:3], "fds left", open_fds() - before + 2, flush=True)
"#;
    let mut plain = Command::new(python());
    plain.env_remove("LD_PRELOAD").arg("-c").arg(script);
    let kernel = stdout_of("control sizes (kernel)", &mut plain);
    let mut pre = preloaded(python());
    pre.arg("-c").arg(script);
    let library = stdout_of("control sizes (library)", &mut pre);
    assert_eq!(library, kernel);
    assert!(kernel.contains("unmapped"), "{kernel}");
}
