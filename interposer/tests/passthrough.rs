//! With libshmnet.so preloaded and every call passing through, real
//! programs behave exactly as without it. Loopback addresses only.

mod common;

use common::{preloaded, py, run, run_clean, tmpdir, Background};

const TCP_SERVER: &str = r#"
import hashlib, os, random, socket
host, n = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.bind((host, 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, peer = srv.accept()
h, got, flip = hashlib.sha256(), 0, 0
while got < n:  # alternate recv() and read()
    chunk = os.read(conn.fileno(), 65536) if flip else conn.recv(65536)
    flip ^= 1
    if not chunk:
        break
    h.update(chunk)
    got += len(chunk)
data = random.Random(2).randbytes(n)
view, sent = memoryview(data), 0
while sent < n:  # alternate write() and sendmsg()
    part = view[sent:sent + 65536]
    sent += os.write(conn.fileno(), part) if (sent // 65536) % 2 else conn.sendmsg([part])
conn.shutdown(socket.SHUT_WR)
print(got, h.hexdigest(), hashlib.sha256(data).hexdigest(), flush=True)
"#;

const TCP_CLIENT: &str = r#"
import hashlib, os, random, socket
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port))
data = random.Random(1).randbytes(n)
half = n // 2
c.sendall(data[:half])  # send()
view, off = memoryview(data), half
while off < n:  # writev()
    off += os.writev(c.fileno(), [view[off:off + 1000], view[off + 1000:off + 70000]])
h, got, flip = hashlib.sha256(), 0, 0
buf, a, b = bytearray(65536), bytearray(3000), bytearray(60000)
while True:  # alternate recv_into() and readv()
    if flip:
        k = os.readv(c.fileno(), [a, b])
        chunk = (bytes(a) + bytes(b))[:k]
    else:
        k = c.recv_into(buf)
        chunk = bytes(buf[:k])
    flip ^= 1
    if k == 0:
        break
    h.update(chunk)
    got += k
print(hashlib.sha256(data).hexdigest(), got, h.hexdigest(), flush=True)
"#;

fn tcp_roundtrip(host: &str) {
    let n = (4 << 20) + 123;
    let mut server = Background::spawn(&mut py(TCP_SERVER, &[host, &n.to_string()]));
    let port = server.line();
    let client = run_clean(&mut py(TCP_CLIENT, &[host, &port, &n.to_string()]));
    let server_report = server.line();
    let stderr = server.finish();
    assert!(stderr.is_empty(), "server stderr: {stderr}");

    let c: Vec<&str> = client.split_whitespace().collect();
    let s: Vec<&str> = server_report.split_whitespace().collect();
    assert_eq!(s[0], n.to_string(), "server received everything");
    assert_eq!(c[0], s[1], "sha256 client sent == server received");
    assert_eq!(c[1], n.to_string(), "client received everything");
    assert_eq!(c[2], s[2], "sha256 server sent == client received");
}

#[test]
fn tcp_ipv4_transfers_are_byte_exact() {
    tcp_roundtrip("127.0.0.1");
}

#[test]
fn tcp_ipv6_transfers_are_byte_exact() {
    tcp_roundtrip("::1");
}

const UDP: &str = r#"
import random, socket
for host in ("127.0.0.1", "::1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    a, b = socket.socket(fam, socket.SOCK_DGRAM), socket.socket(fam, socket.SOCK_DGRAM)
    a.bind((host, 0)); b.bind((host, 0))
    a.settimeout(20); b.settimeout(20)
    for i in range(20):
        payload = random.Random(i).randbytes(100 + 997 * i)
        a.sendto(payload, b.getsockname())             # sendto
        data, addr = b.recvfrom(65536)                 # recvfrom
        assert data == payload and addr[1] == a.getsockname()[1], (i, addr)
        b.sendmsg([data[:10], data[10:]], [], 0, addr)  # sendmsg with a destination
        back, _, flags, _ = a.recvmsg(65536)            # recvmsg
        assert back == payload and flags == 0, i
    a.connect(b.getsockname())                         # connected datagrams
    a.send(b"last")
    assert b.recv(16) == b"last"
print("udp ok")
"#;

#[test]
fn udp_datagrams_round_trip() {
    assert_eq!(run_clean(&mut py(UDP, &[])), "udp ok\n");
}

const LOCAL_IO: &str = r#"
import array, fcntl, hashlib, os, socket, struct, tempfile, termios, threading
payload = os.urandom(300000)
a, b = socket.socketpair()
t = threading.Thread(target=a.sendall, args=(payload,)); t.start()
got = bytearray()
while len(got) < len(payload):
    got += b.recv(65536)
t.join()
assert bytes(got) == payload, "socketpair stream"

r, w = os.pipe()  # pass an fd over the socketpair (SCM_RIGHTS)
a.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
msg, anc, _, _ = b.recvmsg(16, socket.CMSG_SPACE(4))
passed = array.array("i"); passed.frombytes(anc[0][2][:4])
os.write(passed[0], b"via passed fd")
assert os.read(r, 100) == b"via passed fd"

os.writev(w, [b"ab", b"cd", b"ef"])  # pipe: writev, FIONREAD, readv
avail = struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0\0\0\0"))[0]
assert avail == 6, avail
x, y = bytearray(2), bytearray(4)
assert os.readv(r, [x, y]) == 6 and bytes(x + y) == b"abcdef"
flags = fcntl.fcntl(r, fcntl.F_GETFL)  # O_NONBLOCK via fcntl → EAGAIN
fcntl.fcntl(r, fcntl.F_SETFL, flags | os.O_NONBLOCK)
try:
    os.read(r, 1)
    raise SystemExit("expected EAGAIN")
except BlockingIOError:
    pass

d = os.dup(w); d2 = os.dup2(w, 200); d3 = os.dup2(w, 201, inheritable=False)  # dup, dup2, dup3
for fd in (d, d2, d3):
    os.write(fd, b"x")
assert os.read(r, 10) == b"xxx"
fds = [os.dup(w) for _ in range(5)]
os.closerange(min(fds), max(fds) + 1)  # close_range
for fd in fds:
    try:
        os.fstat(fd)
        raise SystemExit(f"fd {fd} still open")
    except OSError:
        pass

with tempfile.TemporaryFile() as f:  # file I/O
    f.write(payload); f.flush(); f.seek(0)
    assert hashlib.sha256(f.read()).digest() == hashlib.sha256(payload).digest()
print("local ok")
"#;

#[test]
fn unix_pipe_and_file_io_pass_through() {
    assert_eq!(run_clean(&mut py(LOCAL_IO, &[])), "local ok\n");
}

#[test]
fn python_http_server_and_curl() {
    let dir = tmpdir("http");
    let blob: Vec<u8> = (0..(3u32 << 20) + 77)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("blob.bin"), &blob).unwrap();
    let mut server = Background::spawn(
        preloaded(common::python())
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&dir)
            .arg("0"),
    );
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let banner = server.line();
    let port = banner
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .unwrap_or_else(|| panic!("no port in {banner:?}"))
        .to_string();
    for i in 0..3 {
        let out = dir.join(format!("out{i}"));
        run_clean(
            preloaded("curl")
                .args(["-sS", "--max-time", "30", "-o"])
                .arg(&out)
                .arg(format!("http://127.0.0.1:{port}/blob.bin")),
        );
        assert!(std::fs::read(&out).unwrap() == blob, "download {i} differs");
    }
    let log = server.kill();
    assert!(!log.contains("libshmnet"), "server stderr: {log}");
}

const ERRNO: &str = r#"
import ctypes, errno, fcntl, os, socket
def code(f):
    try:
        f()
        return "none"
    except OSError as e:
        return errno.errorcode[e.errno]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
c = socket.socket()
print("connect", code(lambda: c.connect(("127.0.0.1", port))))
print("read", code(lambda: os.read(1234, 1)))
print("write", code(lambda: os.write(1234, b"x")))
print("close", code(lambda: os.close(1234)))
print("fcntl", code(lambda: fcntl.fcntl(1234, fcntl.F_GETFL)))
print("dup2", code(lambda: os.dup2(1234, 1235)))
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/null", os.O_RDONLY)
buf = ctypes.create_string_buffer(8)
r = libc.recv(fd, buf, 8, 0)
print("recv", r, errno.errorcode[ctypes.get_errno()])
# Successful calls keep the caller's errno, including first calls that
# resolve their symbol.
for name, call in [("dup3", lambda: libc.dup3(fd, 300, 0)),
                   ("fcntl64", lambda: libc.fcntl64(fd, fcntl.F_GETFD)),
                   ("getsockname", lambda: libc.getsockname(c.fileno(), buf, ctypes.byref(ctypes.c_uint(8)))),
                   ("close", lambda: libc.close(300))]:
    ctypes.set_errno(errno.EXDEV)
    r = call()
    print(name, r >= 0, errno.errorcode.get(ctypes.get_errno()))
"#;

#[test]
fn errno_is_preserved() {
    let out = run_clean(&mut py(ERRNO, &[]));
    let want = "connect ECONNREFUSED\nread EBADF\nwrite EBADF\nclose EBADF\nfcntl EBADF\n\
                dup2 EBADF\nrecv -1 ENOTSOCK\ndup3 True EXDEV\nfcntl64 True EXDEV\n\
                getsockname True EXDEV\nclose True EXDEV\n";
    assert_eq!(out, want);
}

const SPAWN: &str = r#"
import socket, subprocess, threading
stop = threading.Event()
def chatter():  # other threads keep using hooked calls meanwhile
    a, b = socket.socketpair()
    while not stop.is_set():
        a.send(b"x"); b.recv(1)
threads = [threading.Thread(target=chatter) for _ in range(2)]
for t in threads: t.start()
for i in range(5):
    out = subprocess.run([sys.executable, "-c", "print('child', 6 * 7)"], capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == b"child 42\n", out
    out = subprocess.run(["sh", "-c", "echo $((40 + 2))"], capture_output=True, timeout=60)
    assert out.stdout == b"42\n", out
stop.set()
for t in threads: t.join()
print("spawn ok")
"#;

#[test]
fn subprocess_spawn_through_vfork() {
    let dir = tmpdir("vfork");
    let log = dir.join("log");
    let out = run_clean(
        py(SPAWN, &[])
            .env("SHMNET_LOG", "debug")
            .env("SHMNET_LOG_FILE", &log),
    );
    assert_eq!(out, "spawn ok\n");
    // Python's _posixsubprocess called our vfork, which ran as fork.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("vfork() runs as fork()"), "log:\n{text}");
}

#[test]
fn preload_is_visible_to_the_programs() {
    // Sanity for all of the above: the prelude refuses to run unpreloaded.
    let out = run(common::py("print('x')", &[]).env_remove("LD_PRELOAD"));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("libshmnet.so is not loaded"),
        "{}",
        out.stderr
    );
}

/// jemalloc makes system calls through libc's `syscall()` while holding
/// its own initialisation lock (redis-server is linked with it): our
/// `syscall` hook must go straight to libc for anything not ours, before
/// any first-use initialisation that could allocate. With jemalloc
/// preloaded before and after us, `true` and a python socket close must
/// run (every one of them hung once).
#[test]
fn jemalloc_beside_us_runs() {
    let Some(jemalloc) = [
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists()) else {
        panic!("libjemalloc.so.2 is missing: run scripts/install-deps.sh");
    };
    let ours = common::lib();
    for preload in [
        format!("{} {jemalloc}", ours.display()),
        format!("{jemalloc} {}", ours.display()),
    ] {
        let out = run(preloaded("/bin/true").env("LD_PRELOAD", &preload));
        assert!(
            out.status.success(),
            "true with LD_PRELOAD={preload}: {}\n{}",
            out.status,
            out.stderr
        );
        let out = run(common::py(
            "import socket; s = socket.socket(); s.close(); print('ok')",
            &[],
        )
        .env("LD_PRELOAD", &preload));
        assert_eq!(
            out.stdout, "ok\n",
            "python with LD_PRELOAD={preload}: {}",
            out.stderr
        );
    }
}
