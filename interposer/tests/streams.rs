//! TCP streams between preloaded programs on the emulated network travel
//! through shared memory, byte-exact, with the socket semantics programs
//! rely on: bulk transfers with every send/receive call, many connections,
//! a peer killed mid-transfer, bind/connect errors, the names each end
//! sees, peek, non-blocking calls, shutdown, what stays on kernel TCP, and
//! SO_REUSEPORT groups.
//!
//! Every test runs real programs with `SHMNET_FALLBACK=never` on an address
//! and port `common::Net` hands out, and proves the kernel carried nothing
//! (`Net::assert_shm_only`: no kernel TCP socket in the test's /24 or on
//! its port, and a plain client is refused at the virtual address:port).
//! Bytes are compared by sha256 computed by the sending and the receiving
//! program.
//!
//! Python helpers talk to the test on stdout (`listening PORT`, `sha LABEL
//! LEN HEX`, ...) and wait on stdin at `pause(tag)` until the test writes
//! `go`, which is when the test looks at the kernel's sockets. Every wait is
//! bounded; children are killed when a test fails, and each python helper
//! also arms `alarm(50)`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    emulated_c, emulated_script, kernel_tcp_sockets, preloaded, py, Background as Proc, Net,
    LISTEN, TIME_WAIT,
};

/// Deadline for one expected line, or for a program to finish.
const WAIT: Duration = Duration::from_secs(20);
/// A survivor must notice its peer's death within this.
const DEATH_NOTICED: Duration = Duration::from_secs(5);
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Python side

/// Helpers every script starts with (after common::PRELUDE). argv: HOST PORT
/// [ARGS...].
const EMU: &str = r#"
import ctypes, errno, fcntl, hashlib, os, random, select, signal, socket, struct, termios, threading, time
signal.alarm(50)  # a hung helper never outlives its test
HOST, PORT, ARGS = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
FAM = socket.AF_INET6 if ":" in HOST else socket.AF_INET
_out = threading.Lock()
def say(*words):
    with _out:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()
def pause(tag):
    """Tell the test `tag`; it inspects the kernel, then writes go."""
    say(tag)
    line = sys.stdin.readline()
    if line.strip() != "go":
        sys.exit(f"pause {tag}: got {line!r} instead of go")
def blob(seed, n):
    return random.Random(seed).randbytes(n)
def report(label, data):
    say("sha", label, len(data), hashlib.sha256(data).hexdigest())
class Hasher:
    def __init__(self):
        self.h, self.n = hashlib.sha256(), 0
    def add(self, b):
        self.h.update(b)
        self.n += len(b)
    def report(self, label):
        say("sha", label, self.n, self.h.hexdigest())
def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)
def recv_to_eof(s):
    h = Hasher()
    while (chunk := s.recv(1 << 16)):
        h.add(chunk)
    return h
def listener(host=None, port=None, backlog=16):
    host = HOST if host is None else host
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, PORT if port is None else port))
    s.listen(backlog)
    say("listening", s.getsockname()[1])
    return s
def connect(host=None, port=None):
    return socket.create_connection((HOST if host is None else host, PORT if port is None else port))
def errname(f):
    try:
        f()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"
def fionread(s):
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
def ep(addr):
    return f"{addr[0]}/{addr[1]}"
def names(s):
    say("names", ep(s.getsockname()), ep(s.getpeername()), s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN))
def small_server_side(conn, seed=100):
    report("c2s", recv_exact(conn, 65536))
    reply = blob(seed + 1, 65536)
    conn.sendall(reply)
    report("s2c", reply)
    assert conn.recv(1) == b"", "the client closes after reading"
def small_client_side(c, seed=100):
    data = blob(seed, 65536)
    c.sendall(data)
    report("c2s", data)
    report("s2c", recv_exact(c, 65536))
    c.close()
"#;

/// Accept one connection, pause, then read to EOF with recv() and answer
/// with sendall(). ARGS: C2S_LEN S2C_LEN.
const SERVER_SENDALL: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
names(conn)
h = Hasher()
while (chunk := conn.recv(65536)):
    h.add(chunk)
h.report("c2s")
data = blob(2, int(ARGS[1]))
conn.sendall(data)
report("s2c", data)
conn.close()
"#;

const CLIENT_SENDALL: &str = r#"
c = connect()
names(c)
data = blob(1, int(ARGS[0]))
c.sendall(data)
report("c2s", data)
c.shutdown(socket.SHUT_WR)
h, buf = Hasher(), bytearray(65536)
while (k := c.recv_into(buf)):
    h.add(buf[:k])
h.report("s2c")
c.close()
"#;

/// Length-prefixed request read through makefile(); the reply goes out with
/// sendmsg() of two buffers at a time and comes in through recvmsg() and
/// recvmsg_into(). ARGS: C2S_LEN S2C_LEN.
const SERVER_MSG: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
r = conn.makefile("rb")
n = struct.unpack("!Q", r.read(8))[0]
data = r.read(n)
report("c2s", data)
out = blob(4, int(ARGS[1]))
view, off = memoryview(struct.pack("!Q", len(out)) + out), 0
while off < len(view):
    off += conn.sendmsg([view[off:off + 1000], view[off + 1000:off + 100000]])
report("s2c", out)
assert r.read(1) == b"", "the client closes after reading"
"#;

const CLIENT_MSG: &str = r#"
c = connect()
w = c.makefile("wb")
data = blob(3, int(ARGS[0]))
w.write(struct.pack("!Q", len(data)))
w.write(data)
w.flush()
report("c2s", data)
got, bufs, flip = bytearray(), [bytearray(4096), bytearray(60000)], 0
while len(got) < 8 or len(got) < 8 + struct.unpack("!Q", got[:8])[0]:
    if flip:
        msg, anc, flags, _ = c.recvmsg(65536)
        k = len(msg)
        got += msg
    else:
        k, anc, flags, _ = c.recvmsg_into(bufs)
        got += (bytes(bufs[0]) + bytes(bufs[1]))[:k]
    flip ^= 1
    assert k > 0, f"EOF after {len(got)} bytes"
    assert flags == 0 and not anc, (flags, anc)
assert len(got) == 8 + struct.unpack("!Q", got[:8])[0], "bytes past the reply"
report("s2c", bytes(got[8:]))
w.close()
c.close()
"#;

/// Both directions at once: a thread writes (write/writev) while the main
/// thread reads (read/readv). ARGS: ROLE MY_LEN.
const DUPLEX: &str = r#"
role = ARGS[0]
if role == "server":
    srv = listener()
    conn, _ = srv.accept()
    pause("accepted")
else:
    conn = connect()
fd = conn.fileno()
mine, theirs = ("s2c", "c2s") if role == "server" else ("c2s", "s2c")
data = blob(5 if role == "server" else 6, int(ARGS[1]))
def send():
    view, off, flip = memoryview(data), 0, 0
    while off < len(view):
        if flip:
            off += os.write(fd, view[off:off + 200000])
        else:
            off += os.writev(fd, [view[off:off + 3000], view[off + 3000:off + 90000]])
        flip ^= 1
    conn.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
h, flip, a, b = Hasher(), 0, bytearray(5000), bytearray(70000)
while True:
    if flip:
        chunk = os.read(fd, 100000)
    else:
        k = os.readv(fd, [a, b])
        chunk = (bytes(a) + bytes(b))[:k]
    flip ^= 1
    if not chunk:
        break
    h.add(chunk)
t.join()
h.report(theirs)
report(mine, data)
"#;

const SERVER_SEQ: &str = r#"
srv = listener()
up, down = Hasher(), Hasher()
for i in range(100):
    conn, _ = srv.accept()
    if i == 50:
        pause("accepted")
    got = bytearray()
    while (chunk := conn.recv(65536)):
        got += chunk
    up.add(got)
    reply = blob(10000 + i, 100 + 37 * i)
    conn.sendall(hashlib.sha256(got).digest() + reply)
    down.add(reply)
    conn.close()
up.report("c2s")
down.report("s2c")
"#;

const CLIENT_SEQ: &str = r#"
up, down = Hasher(), Hasher()
for i in range(100):
    c = connect()
    msg = blob(i, 1 + 997 * i)
    c.sendall(msg)
    c.shutdown(socket.SHUT_WR)
    up.add(msg)
    got = bytearray()
    while (chunk := c.recv(65536)):
        got += chunk
    assert got[:32] == hashlib.sha256(msg).digest(), f"connection {i}: the server got other bytes"
    down.add(bytes(got[32:]))
    c.close()
up.report("c2s")
down.report("s2c")
"#;

const SERVER_THREADED: &str = r#"
import socketserver
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        ident, n = struct.unpack("!IQ", recv_exact(s, 12))
        data = recv_exact(s, n)
        report(f"c2s-{ident}", data)
        reply = blob(1000 + ident, 300000 + ident)
        s.sendall(hashlib.sha256(data).digest() + reply)
        report(f"s2c-{ident}", reply)
        assert s.recv(1) == b"", "the client closes after reading"
class Server(socketserver.ThreadingTCPServer):
    request_queue_size = 32
    block_on_close = True
with Server((HOST, PORT), Handler) as srv:
    say("listening", srv.server_address[1])
    for _ in range(16):
        srv.handle_request()
"#;

const CLIENT_THREADS: &str = r#"
N = 16
connected, start = threading.Barrier(N + 1), threading.Barrier(N + 1)
errors, locals_ = [], {}
def worker(i):
    try:
        s = connect()
        locals_[i] = s.getsockname()
        connected.wait(20)
        start.wait(20)
        data = blob(i, 200000 + 1000 * i)
        s.sendall(struct.pack("!IQ", i, len(data)) + data)
        report(f"c2s-{i}", data)
        assert recv_exact(s, 32) == hashlib.sha256(data).digest(), f"{i}: server got other bytes"
        report(f"s2c-{i}", recv_exact(s, 300000 + i))
        s.close()
    except Exception as e:
        errors.append(f"thread {i}: {e!r}")
        connected.abort()
        start.abort()
threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(N)]
for t in threads:
    t.start()
connected.wait(30)
pause("connected")
start.wait(30)
for t in threads:
    t.join(30)
if errors:
    sys.exit("\n".join(errors))
assert len(set(locals_.values())) == N, f"local names collide: {locals_}"
"#;

/// Sends a fixed 1 MiB block forever (killed by the test). ARGS: ROLE.
const SENDER_FOREVER: &str = r#"
if ARGS[0] == "server":
    srv = listener()
    conn, _ = srv.accept()
    pause("accepted")
else:
    conn = connect()
block = blob(7, 1 << 20)
while True:
    conn.sendall(block)
"#;

/// Reads and checks SENDER_FOREVER's stream until EOF or reset. ARGS: ROLE.
const READER_SURVIVOR: &str = r#"
if ARGS[0] == "server":
    srv = listener()
    conn, _ = srv.accept()
    pause("accepted")
else:
    conn = connect()
block = blob(7, 1 << 20)
twice, got, told = block + block, 0, False
try:
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            say("result eof", got)
            break
        off = got % len(block)
        assert chunk == twice[off:off + len(chunk)], f"corrupt stream at byte {got}"
        got += len(chunk)
        if not told and got >= 2 << 20:
            say("reading", got)
            told = True
except ConnectionResetError:
    say("result reset", got)
"#;

/// Accepts, then never touches the connection again (killed by the test).
const IDLE_SERVER: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
pause("idle")
"#;

const BLOCKED_READER: &str = r#"
c = connect()
say("blocking")
try:
    r = c.recv(100)
    say("result", "eof" if r == b"" else f"data-{len(r)}")
except ConnectionResetError:
    say("result reset")
"#;

const BLOCKED_WRITER: &str = r#"
c = connect()
say("sending")
block = blob(8, 1 << 20)
try:
    while True:
        c.sendall(block)
except (BrokenPipeError, ConnectionResetError) as e:
    say("result", type(e).__name__)
"#;

const SERVER_SMALL: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
small_server_side(conn)
"#;

const CLIENT_SMALL: &str = "small_client_side(connect())\n";

const SERVER_CONFLICT: &str = r#"
def bind_listen(reuse):
    b = socket.socket(FAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
    try:
        e = errname(lambda: b.bind((HOST, PORT)))
        if e != "ok":
            return "bind:" + e
        return "listen:" + errname(lambda: b.listen(4))
    finally:
        b.close()
a = socket.socket(FAM)
a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
a.bind((HOST, PORT))
a.listen(4)
say("listening", a.getsockname()[1])
if ARGS[0] == "first":
    say("same-process", bind_listen(0), bind_listen(1))
    pause("ready")
    conn, _ = a.accept()
    pause("accepted")
    small_server_side(conn)
"#;

const OTHER_BIND: &str = r#"
def bind_listen(reuse):
    b = socket.socket(FAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
    e = errname(lambda: b.bind((HOST, PORT)))
    if e != "ok":
        return "bind:" + e
    return "listen:" + errname(lambda: b.listen(4))
say("other-process", bind_listen(0), bind_listen(1))
"#;

const CONNECT_REFUSED: &str = r#"
s = socket.socket(FAM)
say("blocking", errname(lambda: s.connect((HOST, PORT))))
s2 = socket.socket(FAM)
s2.setblocking(False)
r = s2.connect_ex((HOST, PORT))
if r == errno.EINPROGRESS:
    p = select.poll()
    p.register(s2, select.POLLOUT)
    p.poll(10000)
    r = s2.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
say("nonblocking", errno.errorcode.get(r, str(r)))
s3 = socket.socket(FAM)
say("unused-port", errname(lambda: s3.connect((HOST, PORT + 500))))
"#;

const SERVER_PORT0: &str = r#"
srv = listener(port=0)
other = socket.socket(FAM)
other.bind((HOST, 0))
other.listen(1)
say("second-port", other.getsockname()[1])
conn, _ = srv.accept()
pause("accepted")
small_server_side(conn)
"#;

const SERVER_NAMES: &str = r#"
srv = listener()
say("listener", ep(srv.getsockname()), errname(srv.getpeername))
conns = []
for i in range(3):
    conn, peer = srv.accept()
    conns.append(conn)
    say("accepted", i, ep(peer), ep(conn.getpeername()), ep(conn.getsockname()))
for c in conns:
    assert c.recv(1) == b"", "the client closes"
"#;

const CLIENT_NAMES: &str = r#"
cs = [connect() for _ in range(3)]
for i, c in enumerate(cs):
    say("conn", i, ep(c.getsockname()), ep(c.getpeername()))
pause("connected")
for c in cs:
    c.close()
"#;

/// ARGS: BIND_HOST_A BIND_HOST_B BIND_PORT_B
const CLIENT_BOUND: &str = r#"
a = socket.socket(FAM)
a.bind((ARGS[0], 0))
a.connect((HOST, PORT))
say("conn", 0, ep(a.getsockname()), ep(a.getpeername()))
b = socket.socket(FAM)
b.bind((ARGS[1], int(ARGS[2])))
b.connect((HOST, PORT))
say("conn", 1, ep(b.getsockname()), ep(b.getpeername()))
pause("connected")
a.close()
b.close()
"#;

const SERVER_PEEK: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
first = conn.recv(5, socket.MSG_PEEK)
assert first and b"hello"[:len(first)] == first, first
deadline = time.monotonic() + 10
while len(conn.recv(64, socket.MSG_PEEK)) < 11:
    assert time.monotonic() < deadline, "the 11 bytes never all arrived"
    time.sleep(0.005)
assert conn.recv(64, socket.MSG_PEEK) == b"hello world", "peeking twice"
assert conn.recv(6) == b"hello "
assert conn.recv(64, socket.MSG_PEEK) == b"world"
buf = bytearray(5)
assert conn.recv_into(buf, 5, socket.MSG_PEEK) == 5 and buf == b"world"
assert conn.recv(5) == b"world"
say("peek ok")
conn.sendall(b"A")
paced = conn.recv(200000, socket.MSG_WAITALL)
assert len(paced) == 200000, f"MSG_WAITALL returned {len(paced)} of 200000 bytes"
report("waitall-paced", paced)
conn.sendall(b"B")
big = conn.recv(int(ARGS[0]), socket.MSG_WAITALL)
assert len(big) == int(ARGS[0]), f"MSG_WAITALL returned {len(big)} of {ARGS[0]} bytes"
report("waitall-big", big)
conn.sendall(b"C")
tail = conn.recv(1000, socket.MSG_WAITALL)
report("waitall-eof", tail)
conn.close()
"#;

const CLIENT_PEEK: &str = r#"
c = connect()
c.sendall(b"hello world")
assert c.recv(1) == b"A"
paced = blob(14, 200000)
for off in range(0, len(paced), 10000):
    c.sendall(paced[off:off + 10000])
    time.sleep(0.01)
report("waitall-paced", paced)
assert c.recv(1) == b"B"
big = blob(15, int(ARGS[0]))
c.sendall(big)
report("waitall-big", big)
assert c.recv(1) == b"C"
tail = blob(16, 300)
c.sendall(tail)
report("waitall-eof", tail)
c.shutdown(socket.SHUT_WR)
assert c.recv(1) == b"", "the server closes"
c.close()
"#;

const SERVER_NONBLOCK: &str = r#"
def eagain(what, f):
    try:
        f()
    except BlockingIOError as e:
        assert e.errno == errno.EAGAIN, (what, e)
        return
    sys.exit(f"{what}: no EAGAIN")
def full_eagain(what, f, chunk, h):
    # A full connection says EAGAIN. Room the reader freed a moment ago
    # may show only now (as a kernel TCP window opens late): written bytes
    # are counted, and the call repeated.
    for _ in range(64):
        try:
            k = f()
        except BlockingIOError as e:
            assert e.errno == errno.EAGAIN, (what, e)
            return
        h.add(chunk[:k])
    sys.exit(f"{what}: no EAGAIN")
srv = socket.socket(FAM)
srv.bind((HOST, PORT))
srv.listen(4)
srv.setblocking(False)
eagain("accept on a non-blocking listener with no client", srv.accept)
srv.setblocking(True)
say("listening", srv.getsockname()[1])
p = select.poll()
p.register(srv, select.POLLIN)
assert p.poll(20000), "poll: the listener never became readable"
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.accept4(srv.fileno(), None, None, socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
assert fd >= 0, os.strerror(ctypes.get_errno())
conn = socket.socket(FAM, socket.SOCK_STREAM, 0, fd)
pause("accepted")
fl = fcntl.fcntl(fd, fcntl.F_GETFL)
assert fl & os.O_NONBLOCK, "accept4(SOCK_NONBLOCK) shows in F_GETFL"
assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "accept4(SOCK_CLOEXEC)"
eagain("recv after accept4(SOCK_NONBLOCK)", lambda: conn.recv(10))
fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK, "F_SETFL cleared O_NONBLOCK"
eagain("recv(MSG_DONTWAIT) on a blocking socket", lambda: conn.recv(10, socket.MSG_DONTWAIT))
eagain("recv(MSG_DONTWAIT|MSG_PEEK)", lambda: conn.recv(10, socket.MSG_DONTWAIT | socket.MSG_PEEK))
assert fionread(conn) == 0, f"FIONREAD {fionread(conn)} on an empty connection"
fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
eagain("read() with O_NONBLOCK set by fcntl", lambda: os.read(fd, 10))
fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
conn.setblocking(False)  # CPython: ioctl(FIONBIO)
assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK, "FIONBIO shows in F_GETFL"
eagain("recv after FIONBIO", lambda: conn.recv(10))
conn.setblocking(True)
assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
say("eagain ok")
conn.sendall(b"1")  # the client answers with 1000 bytes
deadline = time.monotonic() + 10
while fionread(conn) < 1000:
    assert time.monotonic() < deadline, f"FIONREAD stuck at {fionread(conn)}"
    time.sleep(0.005)
assert fionread(conn) == 1000, f"FIONREAD {fionread(conn)}, expected 1000"
p = select.poll()
p.register(conn, select.POLLIN)
assert p.poll(5000), "poll: no POLLIN with 1000 bytes readable"
assert len(conn.recv(10, socket.MSG_PEEK)) == 10
assert fionread(conn) == 1000, "MSG_PEEK consumed bytes"
report("fionread", recv_exact(conn, 1000))
assert fionread(conn) == 0
conn.setblocking(False)
chunk, h = blob(17, 65536), Hasher()
while True:
    try:
        k = conn.send(chunk)
    except BlockingIOError:
        break
    h.add(chunk[:k])
    if h.n > 1 << 30:
        sys.exit("no EAGAIN after 1 GiB nobody read")
full_eagain("sendmsg on a full connection", lambda: conn.sendmsg([chunk]), chunk, h)
conn.setblocking(True)
full_eagain("send(MSG_DONTWAIT) on a full connection", lambda: conn.send(chunk, socket.MSG_DONTWAIT), chunk, h)
say("filled", h.n)
h.report("fill")
conn.shutdown(socket.SHUT_WR)
assert conn.recv(1) == b"", "the client closes"
"#;

const CLIENT_NONBLOCK: &str = r#"
c = connect()
assert c.recv(1) == b"1"
data = blob(16, 1000)
c.sendall(data)
report("fionread", data)
pause("wait-fill")
recv_to_eof(c).report("fill")
c.close()
"#;

const SERVER_SHUTDOWN: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
recv_to_eof(conn).report("c2s")
assert conn.recv(10) == b"", "EOF stays EOF"
reply = blob(21, 1 << 20)
conn.sendall(reply)
d = os.dup(conn.fileno())
conn.close()
tail = b"written through a dup after closing the original"
os.write(d, tail)
report("s2c", reply + tail)
os.close(d)
second, _ = srv.accept()
second.sendall(b"a")
assert second.recv(10) == b"", "the peer's SHUT_RDWR is EOF here"
say("rdwr eof")
second.close()
"#;

const CLIENT_SHUTDOWN: &str = r#"
c = connect()
up = blob(20, 1 << 20)
c.sendall(up)
report("c2s", up)
c.shutdown(socket.SHUT_WR)
assert errname(lambda: c.send(b"x")) == "EPIPE", "send after SHUT_WR"
recv_to_eof(c).report("s2c")
assert c.recv(10) == b"", "EOF stays EOF"
c.close()
c2 = connect()
assert c2.recv(1) == b"a", "accepted"
c2.shutdown(socket.SHUT_RDWR)
assert c2.recv(10) == b"", "recv after SHUT_RDWR"
say("rdwr done")
"#;

const SERVER_EPIPE: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
assert conn.recv(10) == b"bye"
conn.sendall(b"k")
assert conn.recv(10) == b"", "the client closed"
assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN, "python ignores SIGPIPE"
deadline = time.monotonic() + 5
while True:
    try:
        conn.send(b"y" * 1000)
    except BrokenPipeError:
        break
    assert time.monotonic() < deadline, "no EPIPE within 5 s of the peer closing"
    time.sleep(0.01)
say("epipe ignored")
pipes = []
signal.signal(signal.SIGPIPE, lambda *a: pipes.append(1))
def epipe(what, f):
    try:
        f()
    except BrokenPipeError:
        return
    sys.exit(f"{what}: no EPIPE")
epipe("send", lambda: conn.send(b"z"))
time.sleep(0.1)
assert pipes, "send without MSG_NOSIGNAL raised no SIGPIPE"
pipes.clear()
epipe("send(MSG_NOSIGNAL)", lambda: conn.send(b"z", socket.MSG_NOSIGNAL))
epipe("sendmsg(MSG_NOSIGNAL)", lambda: conn.sendmsg([b"z"], [], socket.MSG_NOSIGNAL))
time.sleep(0.1)
assert not pipes, "MSG_NOSIGNAL raised SIGPIPE"
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
epipe("send(MSG_NOSIGNAL) with SIGPIPE at SIG_DFL", lambda: conn.send(b"z", socket.MSG_NOSIGNAL))
say("epipe ok")
"#;

const CLIENT_BYE: &str = r#"
c = connect()
c.sendall(b"bye")
assert c.recv(1) == b"k"
c.close()
"#;

/// Listens, but accepts only when the test says so.
const SERVER_LATE_ACCEPT: &str = r#"
srv = listener()
pause("before-accept")
conn, _ = srv.accept()
say("accepted")
recv_to_eof(conn).report("c2s")
"#;

const CLIENT_SEND_CLOSE: &str = r#"
c = connect()
data = blob(40, 100000)
c.sendall(data)
report("c2s", data)
c.close()
"#;

const OPTIONS: &str = r#"
S, T = socket.SOL_SOCKET, socket.IPPROTO_TCP
bad = []
def want(who, name, got, expected):
    if got != expected:
        bad.append(f"{who} {name}: {got!r}, expected {expected!r}")
def check_common(s, who, acceptconn):
    want(who, "SO_TYPE", s.getsockopt(S, socket.SO_TYPE), socket.SOCK_STREAM)
    want(who, "SO_DOMAIN", s.getsockopt(S, socket.SO_DOMAIN), FAM)
    want(who, "SO_PROTOCOL", s.getsockopt(S, socket.SO_PROTOCOL), socket.IPPROTO_TCP)
    want(who, "SO_ACCEPTCONN", s.getsockopt(S, socket.SO_ACCEPTCONN), acceptconn)
    want(who, "SO_ERROR", s.getsockopt(S, socket.SO_ERROR), 0)
def check_conn(s, who):
    check_common(s, who, 0)
    for name in ("SO_RCVBUF", "SO_SNDBUF"):
        v = s.getsockopt(S, getattr(socket, name))
        if v <= 0:
            bad.append(f"{who} {name}: {v}")
    for on in (1, 0, 1):
        s.setsockopt(T, socket.TCP_NODELAY, on)
        want(who, f"TCP_NODELAY after setting {on}", bool(s.getsockopt(T, socket.TCP_NODELAY)), bool(on))
    for on in (1, 0):
        s.setsockopt(S, socket.SO_KEEPALIVE, on)
        want(who, f"SO_KEEPALIVE after setting {on}", bool(s.getsockopt(S, socket.SO_KEEPALIVE)), bool(on))
    s.setsockopt(S, socket.SO_REUSEADDR, 1)
    want(who, "SO_REUSEADDR", bool(s.getsockopt(S, socket.SO_REUSEADDR)), True)
    s.setsockopt(T, socket.TCP_KEEPIDLE, 77)
    want(who, "TCP_KEEPIDLE", s.getsockopt(T, socket.TCP_KEEPIDLE), 77)
    s.setsockopt(S, socket.SO_LINGER, struct.pack("ii", 1, 5))
    want(who, "SO_LINGER", struct.unpack("ii", s.getsockopt(S, socket.SO_LINGER, 8)), (1, 5))
    s.setsockopt(S, socket.SO_LINGER, struct.pack("ii", 0, 0))  # l_linger stays 5 in Linux
    want(who, "SO_LINGER off", struct.unpack("ii", s.getsockopt(S, socket.SO_LINGER, 8))[0], 0)
    s.setsockopt(S, socket.SO_RCVBUF, 1 << 18)
    s.setsockopt(S, socket.SO_SNDBUF, 1 << 18)
def done(who):
    if bad:
        sys.exit(f"{who}: socket options unlike TCP:\n" + "\n".join(bad))
    say("opts ok")
if ARGS[0] == "server":
    lst = socket.socket(FAM)
    lst.setsockopt(S, socket.SO_REUSEADDR, 1)  # set before bind
    lst.bind((HOST, PORT))
    lst.listen(4)
    check_common(lst, "listener", 1)
    want("listener", "SO_REUSEADDR set before bind", bool(lst.getsockopt(S, socket.SO_REUSEADDR)), True)
    say("listening", lst.getsockname()[1])
    conn, _ = lst.accept()
    pause("accepted")
    check_conn(conn, "accepted")
    small_server_side(conn)
    done("server")
else:
    c = socket.socket(FAM)
    c.setsockopt(T, socket.TCP_NODELAY, 1)  # set before connect
    c.connect((HOST, PORT))
    want("client", "TCP_NODELAY set before connect", bool(c.getsockopt(T, socket.TCP_NODELAY)), True)
    check_conn(c, "client")
    small_client_side(c)
    done("client")
"#;

/// With SHMNET_PARTITIONS invalid: a kernel listener on 127.0.0.1 and one on
/// HOST:PORT (would be a partition address).
const SERVER_BAD_CONFIG: &str = r#"
k = socket.socket()
k.bind(("127.0.0.1", 0))
k.listen(4)
v = socket.socket()
v.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of an earlier run
v.bind((HOST, PORT))
v.listen(4)
say("listening", k.getsockname()[1])
conn, _ = v.accept()  # the test's own plain client
conn.sendall(recv_exact(conn, 5))
assert conn.recv(1) == b"", "the plain client closes first"
conn.close()
conn, _ = k.accept()  # a preloaded client
small_server_side(conn)
"#;

/// ARGS: PORT on 127.0.0.1
const CLIENT_LOOPBACK_SMALL: &str = "small_client_side(connect(\"127.0.0.1\", int(ARGS[0])))\n";

/// An emulated and a kernel connection served side by side by threads.
const SERVER_MIXED: &str = r#"
e = listener()
k = socket.socket()
k.bind(("127.0.0.1", 0))
k.listen(4)
say("kernel-port", k.getsockname()[1])
ce, _ = e.accept()
ck, _ = k.accept()
pause("accepted")
def serve(name, conn, seed):
    recv_to_eof(conn).report(f"c2s-{name}")
    reply = blob(seed, 1 << 20)
    conn.sendall(reply)
    report(f"s2c-{name}", reply)
    conn.close()
ts = [threading.Thread(target=serve, args=a) for a in (("emu", ce, 201), ("kernel", ck, 202))]
for t in ts:
    t.start()
for t in ts:
    t.join()
"#;

/// ARGS: KERNEL_PORT
const CLIENT_MIXED: &str = r#"
ce = connect()
ck = connect("127.0.0.1", int(ARGS[0]))
assert ck.getpeername()[:2] == ("127.0.0.1", int(ARGS[0]))
def run(name, conn, seed):
    data = blob(seed, (1 << 20) + seed)
    view = memoryview(data)
    for off in range(0, len(data), 65536):  # interleaves with the other thread
        conn.sendall(view[off:off + 65536])
    report(f"c2s-{name}", data)
    conn.shutdown(socket.SHUT_WR)
    recv_to_eof(conn).report(f"s2c-{name}")
    conn.close()
ts = [threading.Thread(target=run, args=a) for a in (("emu", ce, 101), ("kernel", ck, 102))]
for t in ts:
    t.start()
for t in ts:
    t.join()
"#;

/// `python3 -m http.server --bind HOST --directory ARGS[0] PORT`, under
/// EMU's alarm.
const HTTP_SERVER: &str = r#"
import runpy
sys.argv = ["http.server", "--bind", HOST, "--directory", ARGS[0], str(PORT)]
runpy.run_module("http.server", run_name="__main__", alter_sys=True)
"#;

const SERVER_REBIND: &str = r#"
a = listener()
pause("first")
a.close()
b = socket.socket(FAM)
b.bind((HOST, PORT))
b.listen(4)
say("rebound")
pause("idle")
"#;

const CLIENT_CONNECT_ONCE: &str = r#"
s = socket.socket(FAM)
say("connect", errname(lambda: s.connect((HOST, PORT))))
"#;

// ---------------------------------------------------------------------------
// The test's network (common::Net)

/// Python programs on a test's `common::Net`.
trait Scripts {
    /// Preloaded python running EMU + `body` with argv HOST PORT `extra`.
    fn script(&self, body: &str, port: u16, extra: &[&str]) -> Command;
    fn spawn(&self, name: &str, body: &str, extra: &[&str]) -> Proc;
    fn spawn_port(&self, name: &str, body: &str, port: u16, extra: &[&str]) -> Proc;
}

impl Scripts for Net {
    fn script(&self, body: &str, port: u16, extra: &[&str]) -> Command {
        let mut args = vec![self.host.to_string(), port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = py(&format!("{EMU}{body}"), &args);
        self.env(&mut cmd);
        cmd
    }

    fn spawn(&self, name: &str, body: &str, extra: &[&str]) -> Proc {
        self.spawn_port(name, body, self.port, extra)
    }

    fn spawn_port(&self, name: &str, body: &str, port: u16, extra: &[&str]) -> Proc {
        spawn(name, &mut self.script(body, port, extra))
    }
}

// ---------------------------------------------------------------------------
// Programs under test

/// A running program (`common::Background`): stdout read line by line, stdin
/// piped for `go`, WAIT for its waits, killed (SIGKILL) and reaped when
/// dropped.
fn spawn(name: &str, cmd: &mut Command) -> Proc {
    Proc::start(name, cmd.stdin(Stdio::piped()), WAIT, false)
}

impl Proc {
    /// The port of its `listening PORT` line.
    fn listening(&mut self) -> u16 {
        let line = self.expect("listening");
        line.split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| self.fail(&format!("bad line {line:?}")))
    }

    /// `sha LABEL LEN HEX` lines: label → (len, hex).
    fn shas(&self) -> HashMap<String, (usize, String)> {
        let mut map = HashMap::new();
        for w in self.lines_with("sha ") {
            let len = w[2].parse().expect("sha length");
            let old = map.insert(w[1].clone(), (len, w[3].clone()));
            assert!(old.is_none(), "{}: two sha lines for {}", self.name, w[1]);
        }
        map
    }
}

/// For each (label, length): both programs saw exactly those bytes.
fn assert_same_bytes(a: &Proc, b: &Proc, labels: &[(&str, usize)]) {
    let (sa, sb) = (a.shas(), b.shas());
    for (label, len) in labels {
        let x = sa
            .get(*label)
            .unwrap_or_else(|| panic!("{} reported no sha for {label}: {:?}", a.name, a.seen));
        let y = sb
            .get(*label)
            .unwrap_or_else(|| panic!("{} reported no sha for {label}: {:?}", b.name, b.seen));
        assert_eq!(x.0, *len, "{label}: {} handled {} bytes", a.name, x.0);
        assert_eq!(y.0, *len, "{label}: {} handled {} bytes", b.name, y.0);
        assert_eq!(
            x.1, y.1,
            "{label}: sha256 differs between {} and {}",
            a.name, b.name
        );
    }
}

/// The usual flow: server listens (check), client connects, server accepts
/// and pauses (check), both run to completion, sha256s compared.
fn exchange(net: &Net, server: &str, client: &str, extra: &[&str], labels: &[(&str, usize)]) {
    let mut srv = net.spawn("server", server, extra);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn_port("client", client, port, extra);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, labels);
}

/// Both ends' `names LOCAL PEER SO_DOMAIN` lines agree with each other and
/// with the server's virtual address.
fn assert_names(net: &Net, srv: &Proc, cli: &Proc, domain: i32) {
    let (s, c) = (&srv.lines_with("names ")[0], &cli.lines_with("names ")[0]);
    let server = format!("{}/{}", net.host, net.port);
    assert_eq!(s[1], server, "server getsockname");
    assert_eq!(c[2], server, "client getpeername");
    assert_eq!(s[2], c[1], "server getpeername == client getsockname");
    assert!(!c[1].ends_with("/0"), "client has a port: {}", c[1]);
    assert_eq!(s[3], domain.to_string(), "server SO_DOMAIN");
    assert_eq!(c[3], domain.to_string(), "client SO_DOMAIN");
}

// ---------------------------------------------------------------------------
// Blocking bulk transfers

#[test]
fn sendall_recv_recv_into_4mib_each_way() {
    let net = Net::emulated("bulk-sendall");
    let (up, down) = (4 * MIB + 123, 5 * MIB + 7);
    let sizes = [up.to_string(), down.to_string()];
    let extra = [sizes[0].as_str(), sizes[1].as_str()];
    let mut srv = net.spawn("server", SERVER_SENDALL, &extra);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", CLIENT_SENDALL, &extra);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, &[("c2s", up), ("s2c", down)]);
    assert_names(&net, &srv, &cli, libc::AF_INET);
}

/// The server answers with socket.sendfile() (os.sendfile: the kernel's
/// sendfile(2) must not carry the file past the ring), twice: from an
/// offset and from the file position. ARGS: LEN.
const SERVER_SENDFILE: &str = r#"
import tempfile
srv = listener()
conn, _ = srv.accept()
pause("accepted")
data = blob(7, int(ARGS[0]))
with tempfile.TemporaryFile() as f:
    f.write(data)
    f.flush()
    f.seek(0)
    sent = conn.sendfile(f, offset=1000)
    assert sent == len(data) - 1000, sent
    f.seek(0)
    assert os.sendfile(conn.fileno(), f.fileno(), None, 1000) == 1000
report("s2c", data[1000:] + data[:1000])
conn.close()
"#;

const CLIENT_TO_EOF: &str = r#"
c = connect()
recv_to_eof(c).report("s2c")
c.close()
"#;

#[test]
fn sendfile_goes_through_the_ring() {
    let net = Net::emulated("sendfile");
    let len = 3 * MIB + 17;
    let n = len.to_string();
    exchange(&net, SERVER_SENDFILE, CLIENT_TO_EOF, &[&n], &[("s2c", len)]);
}

/// A raw `syscall(SYS_write)` writes straight into the kernel object
/// behind the fd, past every hook (C stdio did too, before decision 55:
/// tests/stdio_streams.rs). The receiver must fail loudly (ECONNRESET),
/// never drop the bytes silently.
const SERVER_EXPECT_RESET: &str = r#"
srv = listener()
conn, _ = srv.accept()
pause("accepted")
try:
    got = conn.recv(100)
    say("got", len(got))
except ConnectionResetError:
    say("reset")
"#;

const CLIENT_RAW_WRITE: &str = r#"
import platform
c = connect()
libc = ctypes.CDLL(None, use_errno=True)
SYS_write = {"x86_64": 1, "aarch64": 64}[platform.machine()]
data = b"written with a raw system call\n"
libc.syscall(SYS_write, c.fileno(), data, len(data))
time.sleep(1)
"#;

#[test]
fn data_written_past_the_library_is_a_reset_not_a_silent_loss() {
    let net = Net::emulated("stdio");
    let mut srv = net.spawn("server", SERVER_EXPECT_RESET, &[]);
    srv.listening();
    let mut cli = net.spawn("client", CLIENT_RAW_WRITE, &[]);
    srv.expect("accepted");
    srv.go();
    srv.finish_clean();
    cli.finish_clean();
    assert!(srv.seen.iter().any(|l| l == "reset"), "{:?}", srv.seen);
}

#[test]
fn makefile_sendmsg_recvmsg_4mib_each_way() {
    let net = Net::emulated("bulk-msg");
    let (up, down) = (4 * MIB + 1001, 4 * MIB + 999);
    let sizes = [up.to_string(), down.to_string()];
    exchange(
        &net,
        SERVER_MSG,
        CLIENT_MSG,
        &[&sizes[0], &sizes[1]],
        &[("c2s", up), ("s2c", down)],
    );
}

#[test]
fn full_duplex_read_write_readv_writev_6mib_each_way() {
    let net = Net::emulated("bulk-duplex");
    let (up, down) = (6 * MIB + 11, 6 * MIB + 13);
    let mut srv = net.spawn("server", DUPLEX, &["server", &down.to_string()]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", DUPLEX, &["client", &up.to_string()]);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, &[("c2s", up), ("s2c", down)]);
}

#[test]
fn ipv6_loopback_4mib_each_way() {
    let net = Net::emulated_v6("bulk-v6");
    let (up, down) = (4 * MIB + 5, 4 * MIB + 77);
    let sizes = [up.to_string(), down.to_string()];
    let extra = [sizes[0].as_str(), sizes[1].as_str()];
    let mut srv = net.spawn("server", SERVER_SENDALL, &extra);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", CLIENT_SENDALL, &extra);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, &[("c2s", up), ("s2c", down)]);
    assert_names(&net, &srv, &cli, libc::AF_INET6);
}

// ---------------------------------------------------------------------------
// curl against python's http.server

#[test]
fn curl_downloads_from_http_server_twenty_times() {
    let net = Net::emulated("http");
    let www = net.dir.join("www");
    std::fs::create_dir(&www).unwrap();
    let blob: Vec<u8> = (0..(3u32 << 20) + 77)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("blob.bin"), &blob).unwrap();
    let host = net.host.to_string();
    let mut server = spawn(
        "http.server",
        net.script(HTTP_SERVER, net.port, &[www.to_str().unwrap()])
            .env("PYTHONUNBUFFERED", "1"),
    );
    // "Serving HTTP on HOST port PORT (http://HOST:PORT/) ..."
    let banner = server.expect("Serving HTTP");
    assert!(
        banner.contains(&format!("on {host} port {} ", net.port)),
        "{banner}"
    );
    net.assert_shm_only(net.port, "http.server listening");
    let url = format!("http://{host}:{}/blob.bin", net.port);

    // curl without the preload cannot reach the virtual address (exit 7).
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-o", "/dev/null", &url])
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    assert_eq!(
        plain.status.code(),
        Some(7),
        "plain curl: {}",
        String::from_utf8_lossy(&plain.stderr)
    );

    let curl = |out: &PathBuf, extra: &[&str]| {
        let mut cmd = preloaded("curl");
        cmd.args(["-sS", "--max-time", "20"])
            .args(extra)
            .arg("-o")
            .arg(out)
            .arg(&url);
        net.env(&mut cmd);
        cmd
    };
    for i in 0..20 {
        let out = net.dir.join(format!("out{i}"));
        if i == 10 {
            // A slow download, to look at the kernel while bytes flow.
            let mut slow = spawn("curl", &mut curl(&out, &["--limit-rate", "2M"]));
            thread::sleep(Duration::from_millis(400));
            net.assert_shm_only(net.port, "during a download");
            slow.finish_clean();
        } else {
            spawn("curl", &mut curl(&out, &[])).finish_clean();
        }
        assert!(std::fs::read(&out).unwrap() == blob, "download {i} differs");
    }
    net.assert_shm_only(net.port, "after the downloads");
    let log = server.kill();
    assert!(!log.contains("libshmnet"), "server stderr: {log}");
    assert_eq!(
        log.matches("\"GET /blob.bin HTTP/1.1\" 200").count(),
        20,
        "server log:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// Many connections

#[test]
fn hundred_sequential_connections() {
    let net = Net::emulated("seq");
    let up: usize = (0..100).map(|i| 1 + 997 * i).sum();
    let down: usize = (0..100).map(|i| 100 + 37 * i).sum();
    exchange(
        &net,
        SERVER_SEQ,
        CLIENT_SEQ,
        &[],
        &[("c2s", up), ("s2c", down)],
    );
}

#[test]
fn sixteen_concurrent_connections_from_threads() {
    let net = Net::emulated("threads");
    let mut srv = net.spawn("server", SERVER_THREADED, &[]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", CLIENT_THREADS, &[]);
    cli.expect("connected");
    net.assert_shm_only(port, "16 connections established");
    cli.go();
    cli.finish_clean();
    srv.finish_clean();
    let labels: Vec<(String, usize)> = (0..16)
        .flat_map(|i| {
            [
                (format!("c2s-{i}"), 200_000 + 1000 * i),
                (format!("s2c-{i}"), 300_000 + i),
            ]
        })
        .collect();
    let labels: Vec<(&str, usize)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    assert_same_bytes(&srv, &cli, &labels);
}

// ---------------------------------------------------------------------------
// A peer killed with SIGKILL

/// Server and client connect; once the client says `busy` (it is inside
/// recv or send) the server is killed, and the client must report
/// `result ...` within DEATH_NOTICED. Returns the result line.
fn kill_server_while_client_busy(
    net: &Net,
    server_body: &str,
    server_args: &[&str],
    client_body: &str,
    client_args: &[&str],
    busy: &str,
) -> String {
    let mut server = net.spawn("server", server_body, server_args);
    let port = server.listening();
    net.assert_shm_only(port, "server listening");
    let mut client = net.spawn("client", client_body, client_args);
    server.expect("accepted");
    net.assert_shm_only(port, "connection established");
    server.go();
    client.expect(busy);
    thread::sleep(Duration::from_millis(300)); // well inside recv/send now
    net.assert_shm_only(port, "mid-transfer, before the kill");
    let killed = Instant::now();
    server.kill9();
    let result = client.expect_within("result", WAIT);
    let took = killed.elapsed();
    assert!(
        took < DEATH_NOTICED,
        "the client noticed the server's death only after {took:?}: {result}"
    );
    client.finish_clean();
    result
}

#[test]
fn server_killed_mid_transfer_client_sees_eof() {
    let net = Net::emulated("kill-server");
    let result = kill_server_while_client_busy(
        &net,
        SENDER_FOREVER,
        &["server"],
        READER_SURVIVOR,
        &["client"],
        "reading",
    );
    assert!(
        result.starts_with("result eof") || result.starts_with("result reset"),
        "{result}"
    );
}

#[test]
fn client_killed_mid_transfer_server_sees_eof() {
    let net = Net::emulated("kill-client");
    let mut server = net.spawn("server", READER_SURVIVOR, &["server"]);
    let port = server.listening();
    net.assert_shm_only(port, "server listening");
    let mut client = net.spawn("client", SENDER_FOREVER, &["client"]);
    server.expect("accepted");
    net.assert_shm_only(port, "connection established");
    server.go();
    server.expect("reading");
    net.assert_shm_only(port, "mid-transfer, before the kill");
    let killed = Instant::now();
    client.kill9();
    let result = server.expect_within("result", WAIT);
    let took = killed.elapsed();
    assert!(took < DEATH_NOTICED, "noticed after {took:?}: {result}");
    assert!(
        result.starts_with("result eof") || result.starts_with("result reset"),
        "{result}"
    );
    server.finish_clean();
}

#[test]
fn idle_peer_killed_wakes_a_blocked_reader() {
    let net = Net::emulated("kill-idle-reader");
    let result =
        kill_server_while_client_busy(&net, IDLE_SERVER, &[], BLOCKED_READER, &[], "blocking");
    assert!(
        result == "result eof" || result == "result reset",
        "{result}"
    );
}

#[test]
fn reader_killed_fails_a_writer_blocked_on_a_full_connection() {
    let net = Net::emulated("kill-idle-writer");
    let result =
        kill_server_while_client_busy(&net, IDLE_SERVER, &[], BLOCKED_WRITER, &[], "sending");
    assert!(
        result == "result BrokenPipeError" || result == "result ConnectionResetError",
        "{result}"
    );
}

// ---------------------------------------------------------------------------
// Addresses: conflicts, refusals, port 0, names

#[test]
fn bind_conflict_is_eaddrinuse_in_the_same_and_another_process() {
    let net = Net::emulated("conflict");
    let mut srv = net.spawn("server", SERVER_CONFLICT, &["first"]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let same = srv.expect("same-process");
    srv.expect("ready");
    assert_eq!(
        same, "same-process bind:EADDRINUSE bind:EADDRINUSE",
        "a second bind (without, with SO_REUSEADDR) in the listener's process"
    );
    let mut other = net.spawn("other", OTHER_BIND, &[]);
    let line = other.expect("other-process");
    other.finish_clean();
    assert_eq!(
        line, "other-process bind:EADDRINUSE bind:EADDRINUSE",
        "a bind (without, with SO_REUSEADDR) in another process"
    );
    // The failed binds left the listener working.
    srv.go();
    let mut cli = net.spawn("client", CLIENT_SMALL, &[]);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, &[("c2s", 65536), ("s2c", 65536)]);
}

#[test]
fn address_is_free_again_after_close_and_after_sigkill() {
    let net = Net::emulated("rebind");
    let mut first = net.spawn("first server", SERVER_REBIND, &[]);
    let port = first.listening();
    first.expect("first");
    net.assert_shm_only(port, "first listener");
    first.go();
    first.expect("rebound"); // closed, then bound and listening again
    first.expect("idle");
    net.assert_shm_only(port, "listener bound again");
    first.kill9();
    // A dead listener refuses (its rendezvous is stale), without hanging...
    let mut probe = net.spawn("probe", CLIENT_CONNECT_ONCE, &[]);
    assert_eq!(probe.expect("connect"), "connect ECONNREFUSED");
    probe.finish_clean();
    // ...and its address can be bound again, as with kernel TCP.
    exchange(
        &net,
        SERVER_SMALL,
        CLIENT_SMALL,
        &[],
        &[("c2s", 65536), ("s2c", 65536)],
    );
}

#[test]
fn connect_without_shm_listener_is_econnrefused_never_kernel() {
    let net = Net::emulated("refused");
    // A kernel listener on the very address: never-mode must not reach it.
    let decoy = TcpListener::bind(SocketAddr::new(net.host, net.port)).expect("decoy listener");
    decoy.set_nonblocking(true).unwrap();
    let mut cli = net.spawn("client", CONNECT_REFUSED, &[]);
    let blocking = cli.expect("blocking");
    let nonblocking = cli.expect("nonblocking");
    let unused = cli.expect("unused-port");
    cli.finish_clean();
    match decoy.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the kernel listener: {other:?}"),
    }
    assert_eq!(blocking, "blocking ECONNREFUSED", "connect()");
    assert_eq!(
        nonblocking, "nonblocking ECONNREFUSED",
        "non-blocking connect()"
    );
    assert_eq!(unused, "unused-port ECONNREFUSED");
}

#[test]
fn bind_port_zero_gets_a_free_port_a_client_can_connect_to() {
    let mut net = Net::emulated("port0");
    net.port = 0;
    let mut srv = net.spawn("server", SERVER_PORT0, &[]);
    let port = srv.listening();
    assert_ne!(port, 0, "getsockname after bind to port 0");
    let second: u16 = srv
        .expect("second-port")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        second != 0 && second != port,
        "two port-0 binds: {port} and {second}"
    );
    net.assert_shm_only(port, "server listening");
    net.assert_shm_only(second, "second listener");
    let mut cli = net.spawn_port("client", CLIENT_SMALL, port, &[]);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, &[("c2s", 65536), ("s2c", 65536)]);
}

/// Server lines `accepted I ACCEPT_PEER GETPEERNAME GETSOCKNAME` against
/// client lines `conn I GETSOCKNAME GETPEERNAME`.
fn assert_accepted_names(net: &Net, srv: &Proc, cli: &Proc) -> Vec<String> {
    let server = format!("{}/{}", net.host, net.port);
    let mut client_locals = BTreeSet::new();
    for c in cli.lines_with("conn ") {
        assert_eq!(c[3], server, "client getpeername");
        assert!(
            !c[2].ends_with("/0"),
            "client getsockname has a port: {}",
            c[2]
        );
        client_locals.insert(c[2].clone());
    }
    let mut server_peers = BTreeSet::new();
    for s in srv.lines_with("accepted ") {
        assert_eq!(s[2], s[3], "accept()'s address == getpeername()");
        assert_eq!(s[4], server, "accepted connection's getsockname");
        server_peers.insert(s[2].clone());
    }
    assert_eq!(
        client_locals.len(),
        cli.lines_with("conn ").len(),
        "distinct client names"
    );
    assert_eq!(
        client_locals, server_peers,
        "server's peers == clients' local names"
    );
    client_locals.into_iter().collect()
}

#[test]
fn names_are_the_virtual_addresses() {
    let net = Net::emulated("names");
    let mut srv = net.spawn("server", SERVER_NAMES, &[]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let listener = srv.expect("listener");
    assert_eq!(
        listener,
        format!("listener {}/{} ENOTCONN", net.host, net.port),
        "listener getsockname, getpeername"
    );
    let mut cli = net.spawn("client", CLIENT_NAMES, &[]);
    cli.expect("connected");
    for _ in 0..3 {
        srv.expect("accepted");
    }
    net.assert_shm_only(port, "3 connections established");
    cli.go();
    cli.finish_clean();
    srv.finish_clean();
    let locals = assert_accepted_names(&net, &srv, &cli);
    assert_eq!(locals.len(), 3);
}

#[test]
fn client_bound_to_a_partition_address_is_the_servers_peer() {
    let net = Net::emulated("client-bind");
    let mut srv = net.spawn("server", SERVER_NAMES, &[]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let (a, b, bport) = (net.ip(2).to_string(), net.ip(3).to_string(), net.port_str());
    let mut cli = net.spawn("client", CLIENT_BOUND, &[&a, &b, &bport]);
    cli.expect("connected");
    net.assert_shm_only(port, "2 connections established");
    cli.go();
    cli.finish_clean();
    // The server waits for 3 connections: a third one lets it finish.
    let mut third = net.spawn("client", "connect().close()\n", &[]);
    third.finish_clean();
    srv.finish_clean();
    let conns = cli.lines_with("conn ");
    assert!(
        conns[0][2].starts_with(&format!("{a}/")) && !conns[0][2].ends_with("/0"),
        "{:?}",
        conns[0]
    );
    assert_eq!(conns[1][2], format!("{b}/{bport}"));
    let peers: BTreeSet<String> = srv
        .lines_with("accepted ")
        .iter()
        .map(|s| s[2].clone())
        .collect();
    assert!(
        peers.contains(&conns[0][2]) && peers.contains(&conns[1][2]),
        "server's peers {peers:?}, clients {conns:?}"
    );
}

// ---------------------------------------------------------------------------
// Stream semantics

#[test]
fn msg_peek_and_msg_waitall() {
    let net = Net::emulated("peek");
    let big = 3 * MIB + 5;
    exchange(
        &net,
        SERVER_PEEK,
        CLIENT_PEEK,
        &[&big.to_string()],
        &[
            ("waitall-paced", 200_000),
            ("waitall-big", big),
            ("waitall-eof", 300),
        ],
    );
}

#[test]
fn nonblocking_eagain_fionread_and_full_connection() {
    let net = Net::emulated("nonblock");
    let mut srv = net.spawn("server", SERVER_NONBLOCK, &[]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", CLIENT_NONBLOCK, &[]);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    srv.expect("eagain ok");
    let filled: usize = srv
        .expect("filled")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(filled > 0, "nothing could be written before EAGAIN");
    cli.expect("wait-fill");
    net.assert_shm_only(port, "connection full");
    cli.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, &[("fionread", 1000), ("fill", filled)]);
}

#[test]
fn shutdown_half_close_and_close_of_the_last_reference() {
    let net = Net::emulated("shutdown");
    exchange(
        &net,
        SERVER_SHUTDOWN,
        CLIENT_SHUTDOWN,
        &[],
        &[
            ("c2s", MIB),
            (
                "s2c",
                MIB + "written through a dup after closing the original".len(),
            ),
        ],
    );
}

#[test]
fn write_after_peer_closed_is_epipe_with_and_without_msg_nosignal() {
    let net = Net::emulated("epipe");
    let mut srv = net.spawn("server", SERVER_EPIPE, &[]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", CLIENT_BYE, &[]);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.expect("epipe ok");
    srv.finish_clean();
}

#[test]
fn connection_closed_before_accept_still_delivers_its_bytes_and_eof() {
    let net = Net::emulated("late-accept");
    let mut srv = net.spawn("server", SERVER_LATE_ACCEPT, &[]);
    let port = srv.listening();
    srv.expect("before-accept");
    net.assert_shm_only(port, "server listening");
    // As with a kernel backlog: connect, send and close complete (and the
    // client exits) before the server calls accept.
    let mut cli = net.spawn("client", CLIENT_SEND_CLOSE, &[]);
    cli.finish_clean();
    net.assert_shm_only(port, "connection queued");
    srv.go();
    srv.finish_clean();
    assert_same_bytes(&srv, &cli, &[("c2s", 100_000)]);
}

// ---------------------------------------------------------------------------
// Socket options

#[test]
fn socket_options_answer_like_tcp() {
    let net = Net::emulated("options");
    let mut srv = net.spawn("server", OPTIONS, &["server"]);
    let port = srv.listening();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", OPTIONS, &["client"]);
    srv.expect("accepted");
    net.assert_shm_only(port, "connection established");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert!(srv.seen.iter().any(|l| l == "opts ok"));
    assert!(cli.seen.iter().any(|l| l == "opts ok"));
    assert_same_bytes(&srv, &cli, &[("c2s", 65536), ("s2c", 65536)]);
}

// ---------------------------------------------------------------------------
// What stays in the kernel

#[test]
fn bad_partitions_in_never_mode_pass_everything_to_the_kernel() {
    let net = Net::emulated("bad-config");
    let bad = |cmd: &mut Command| {
        cmd.env("SHMNET_PARTITIONS", "garbage");
    };
    let mut cmd = net.script(SERVER_BAD_CONFIG, net.port, &[]);
    bad(&mut cmd);
    let mut srv = spawn("server", &mut cmd);
    let kport = srv.listening();
    // The would-be partition address is an ordinary kernel listener...
    let listening = |addr: SocketAddr| {
        kernel_tcp_sockets()
            .iter()
            .any(|k| k.state == LISTEN && k.local == addr)
    };
    let virt = SocketAddr::new(net.host, net.port);
    assert!(listening(virt), "no kernel listener on {virt}");
    assert!(listening(SocketAddr::from(([127, 0, 0, 1], kport))));
    // ...that a plain client reaches.
    let mut plain =
        TcpStream::connect_timeout(&virt, Duration::from_secs(5)).expect("plain connect");
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    plain.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    drop(plain);
    // A preloaded client with the same bad variable talks TCP on 127.0.0.1.
    let mut cmd = net.script(CLIENT_LOOPBACK_SMALL, net.port, &[&kport.to_string()]);
    bad(&mut cmd);
    let mut cli = spawn("client", &mut cmd);
    for p in [&mut cli, &mut srv] {
        let stderr = p.finish();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{} stderr:\n{stderr}", p.name);
        assert!(
            lines[0].starts_with("libshmnet: SHMNET_PARTITIONS"),
            "{}: {}",
            p.name,
            lines[0]
        );
    }
    assert_same_bytes(&srv, &cli, &[("c2s", 65536), ("s2c", 65536)]);
}

#[test]
fn kernel_tcp_on_127_0_0_1_alongside_an_emulated_connection() {
    let net = Net::emulated("mixed");
    let mut srv = net.spawn("server", SERVER_MIXED, &[]);
    let port = srv.listening();
    let kport: u16 = srv
        .expect("kernel-port")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    net.assert_shm_only(port, "server listening");
    let mut cli = net.spawn("client", CLIENT_MIXED, &[&kport.to_string()]);
    srv.expect("accepted");
    net.assert_shm_only(port, "both connections established");
    // Both ends of the 127.0.0.1 connection are kernel sockets (in whatever
    // state the client's sending has brought them to).
    let on_kport = kernel_tcp_sockets()
        .iter()
        .filter(|k| k.state != LISTEN && k.state != TIME_WAIT)
        .filter(|k| k.local.port() == kport || k.remote.port() == kport)
        .count();
    assert_eq!(on_kport, 2, "the 127.0.0.1 connection is kernel TCP");
    srv.go();
    cli.finish_clean();
    srv.finish_clean();
    assert_same_bytes(
        &srv,
        &cli,
        &[
            ("c2s-emu", MIB + 101),
            ("s2c-emu", MIB),
            ("c2s-kernel", MIB + 102),
            ("s2c-kernel", MIB),
        ],
    );
}

/// An IPv4 address and its IPv4-mapped IPv6 form are one emulated address,
/// as one kernel socket serves both (a Java server binds `::ffff:a.b.c.d`
/// on an AF_INET6 socket): every pairing of the two families meets, bytes
/// intact, each end seeing the other in its own family. Before, the
/// listener reset connectors of the other family.
#[test]
fn ipv4_and_ipv4_mapped_addresses_meet() {
    const SERVER: &str = "import socket, sys\n\
        fam = getattr(socket, sys.argv[1])\n\
        s = socket.socket(fam); s.bind((sys.argv[2], int(sys.argv[3]))); s.listen(4)\n\
        print('listening', flush=True)\n\
        c, a = s.accept(); d = c.recv(100)\n\
        c.sendall(b'echo ' + d)\n\
        print('peer', a[0], flush=True)\n";
    const CLIENT: &str = "import socket, sys\n\
        c = socket.socket(getattr(socket, sys.argv[1])); c.connect((sys.argv[2], int(sys.argv[3])))\n\
        c.sendall(b'hello'); print(c.recv(100).decode(), c.getpeername()[0])\n";
    let net = Net::emulated("emu-mapped");
    let v4 = net.host_str();
    let mapped = format!("::ffff:{v4}");
    let (v4, mapped) = (v4.as_str(), mapped.as_str());
    let cases = [
        ("AF_INET6", mapped, "AF_INET", v4, "::ffff:127.0.0.1", v4),
        ("AF_INET", v4, "AF_INET6", mapped, "127.0.0.1", mapped),
        (
            "AF_INET6",
            mapped,
            "AF_INET6",
            mapped,
            "::ffff:127.0.0.1",
            mapped,
        ),
    ];
    for (i, (sf, sa, cf, ca, peer_seen, server_seen)) in cases.into_iter().enumerate() {
        let port = (net.port + i as u16).to_string();
        let env = |cmd: &mut Command| {
            net.env(cmd);
        };
        let mut cmd = preloaded(common::python());
        cmd.args(["-c", SERVER, sf, sa, &port]);
        env(&mut cmd);
        let mut srv = Proc::start("server", &mut cmd, WAIT, false);
        srv.expect("listening");
        let mut cmd = preloaded(common::python());
        cmd.args(["-c", CLIENT, cf, ca, &port]);
        env(&mut cmd);
        let out = common::run(&mut cmd);
        assert_eq!(
            out.stdout.trim(),
            format!("echo hello {server_seen}"),
            "{sf} server on {sa}, {cf} client to {ca}: {}",
            out.stderr
        );
        assert_eq!(srv.expect("peer"), format!("peer {peer_seen}"));
        srv.finish_clean();
    }
}

/// Options an emulated connection answers as the kernel does for an
/// established loopback one (in part), compared option by
/// option with a kernel TCP connection in the same process: IP_OPTIONS has
/// length 0 (sshd aborts on any), TCP_CONGESTION is the algorithm's name,
/// TCP_INFO is the kernel's size with state ESTABLISHED and no
/// retransmits (iperf3 printed an error every interval).
#[test]
fn socket_options_read_as_on_kernel_tcp() {
    const SCRIPT: &str = "import socket, struct, sys\n\
        def pair(host):\n    \
            l = socket.socket(); l.bind((host, 0)); l.listen(1)\n    \
            c = socket.create_connection(l.getsockname()); a, _ = l.accept()\n    \
            return c, a, l\n\
        def answers(s):\n    \
            ipo = s.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40)\n    \
            cc = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)\n    \
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)\n    \
            return (len(ipo), cc, len(info), info[0], info[2], struct.unpack_from('I', info, 100)[0])\n\
        k = pair('127.0.0.1')\n\
        e = pair(sys.argv[1])\n\
        for i in (0, 1):\n    \
            print(answers(k[i]) == answers(e[i]), answers(k[i]), answers(e[i]))\n";
    let net = Net::emulated("emu-sockopts");
    let mut cmd = preloaded(common::python());
    cmd.args(["-c", SCRIPT, &net.host_str()]);
    net.env(&mut cmd);
    let out = common::run(&mut cmd);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() == 2 && lines.iter().all(|l| l.starts_with("True ")),
        "kernel answers vs emulated (connector, acceptor):\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// A Java server (openjdk's HttpServer, `java File.java`) on the emulated
/// network, reached by a preloaded curl over IPv4: Java binds
/// an AF_INET6 socket to the IPv4-mapped address. 1 MiB, bytes checked,
/// both ends counted over shared memory. Skipped (said on stderr) where no
/// `java` is installed.
#[test]
fn java_http_server_reached_by_curl_over_ipv4() {
    let java = ["/usr/bin/java", "/usr/local/bin/java"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(java) = java else {
        common::missing_program("java_http_server_reached_by_curl_over_ipv4", "java");
        return;
    };
    let net = Net::emulated("emu-java");
    let dir = &net.dir;
    let src = common::helper("java/HttpSrv.java");
    let env = |cmd: &mut Command| {
        net.env(cmd);
    };
    let mut cmd = preloaded(&java);
    cmd.arg(&src).args([net.host_str(), net.port_str()]);
    env(&mut cmd);
    let mut srv = Proc::start("java server", &mut cmd, Duration::from_secs(60), false);
    srv.expect("listening");
    let body = dir.join("body");
    let mut cmd = preloaded("curl");
    cmd.args(["-s", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .arg(format!("http://{}:{}/", net.host, net.port));
    env(&mut cmd);
    let out = common::run(&mut cmd);
    assert_eq!(out.stdout, "200", "curl: {}", out.stderr);
    let got = std::fs::read(&body).unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i * 31) as u8));
    let s = common::stats::read(&net.shm_dir());
    assert_eq!(
        (s.get("shm"), s.get("accepted_shm")),
        (Some(&1), Some(&1)),
        "{s:?}"
    );
    srv.kill();
}

/// SO_REUSEPORT on an emulated address. A second bind with
/// SO_REUSEPORT was EADDRINUSE (nginx `listen ... reuseport` did not
/// start). Now the members of a group share one queue, whoever is free
/// first accepting: two processes binding the port (the second learns the
/// queue from the first inside its accept), and one process binding two
/// sockets and forking a worker for each (nginx's master and workers).
/// A member busy with a connection leaves the next to the others, so every
/// member serves (one queue spreads by who is free, where the kernel
/// hashes); a bind without SO_REUSEPORT is still EADDRINUSE.
#[test]
fn reuseport_group_spreads_connections_over_its_members() {
    const MEMBER: &str = r#"
def member(tag, s, deadline):
    s.settimeout(0.5)
    n = 0
    while time.time() < deadline:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        c.sendall(tag.encode()); c.close(); n += 1
        time.sleep(0.02)  # busy: the next connection is another member's
    say("served", tag, n)
def reuse_socket():
    s = socket.socket(FAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((HOST, PORT))
    return s
role = ARGS[0]
if role == "one":
    s = reuse_socket(); s.listen(16)
    say("listening", PORT)
    member(ARGS[1], s, time.time() + float(ARGS[2]))
elif role == "two":
    a, b = reuse_socket(), reuse_socket()
    a.listen(16); b.listen(16)
    plain = socket.socket(FAM)
    try:
        plain.bind((HOST, PORT)); say("plain bind", "ok")
    except OSError as e:
        say("plain bind", errno.errorcode[e.errno])
    say("listening", PORT)
    deadline = time.time() + float(ARGS[1])
    kids = []
    for tag, s in (("X", a), ("Y", b)):
        pid = os.fork()
        if pid == 0:
            member(tag, s, deadline); os._exit(0)
        kids.append(pid)
    a.close(); b.close()
    for k in kids:
        os.waitpid(k, 0)
else:
    got = {}
    for i in range(int(ARGS[1])):
        c = socket.create_connection((HOST, PORT)); t = c.recv(8).decode()
        got[t] = got.get(t, 0) + 1; c.close()
    say("got", *sorted(f"{k}={v}" for k, v in got.items()))
"#;
    let net = Net::emulated("reuseport");
    let served = |p: &Proc, tag: &str| -> u32 {
        p.lines_with("served ")
            .iter()
            .find(|w| w[1] == tag)
            .map(|w| w[2].parse().unwrap())
            .unwrap_or_else(|| panic!("no served line for {tag}: {:?}", p.seen))
    };
    // Two processes.
    let mut a = net.spawn("member A", MEMBER, &["one", "A", "4"]);
    a.listening();
    let mut b = net.spawn("member B", MEMBER, &["one", "B", "4"]);
    b.listening();
    net.assert_shm_only(net.port, "two members listening");
    let mut cli = net.spawn("client", MEMBER, &["client", "60"]);
    let got = cli.expect("got ");
    cli.finish_clean();
    a.finish_clean();
    b.finish_clean();
    let (na, nb) = (served(&a, "A"), served(&b, "B"));
    assert_eq!(na + nb, 60, "{got}");
    assert!(
        na > 0 && nb > 0,
        "both members serve: A {na}, B {nb} ({got})"
    );
    // One process, two sockets, a worker each.
    let mut m = net.spawn("master", MEMBER, &["two", "4"]);
    assert_eq!(m.expect("plain bind"), "plain bind EADDRINUSE");
    m.listening();
    net.assert_shm_only(net.port, "one process's two members listening");
    let mut cli = net.spawn("client", MEMBER, &["client", "60"]);
    let got = cli.expect("got ");
    cli.finish_clean();
    m.finish_clean();
    let (nx, ny) = (served(&m, "X"), served(&m, "Y"));
    assert_eq!(nx + ny, 60, "{got}");
    assert!(
        nx > 0 && ny > 0,
        "both workers serve: X {nx}, Y {ny} ({got})"
    );
}

/// SO_REUSEPORT binds against a member in the same process, as the kernel
/// answers them (found by review): over a listener without SO_REUSEPORT,
/// EADDRINUSE at once (it waited 1 s asking itself to answer in accept);
/// an IPv4-mapped IPv6 member next to an IPv4 one joins the group, and a
/// connection reaches the group.
#[test]
fn reuseport_binds_in_one_process_answer_at_once() {
    const BODY: &str = r#"
def rp(fam=socket.AF_INET, reuse=True):
    s = socket.socket(fam)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return s
def attempt(label, s, addr):
    t0 = time.time()
    try:
        s.bind(addr); r = "ok"
    except OSError as e:
        r = errno.errorcode[e.errno]
    say(label, r, "slow" if time.time() - t0 > 0.5 else "fast")
h = rp(reuse=False); h.bind((HOST, PORT)); h.listen(8)
attempt("over-plain", rp(), (HOST, PORT))
m1 = rp(); m1.bind((HOST, PORT + 1)); m1.listen(8)
m2 = rp(socket.AF_INET6)
attempt("mapped", m2, ("::ffff:" + HOST, PORT + 1))
m2.listen(8)
c = socket.create_connection((HOST, PORT + 1))
r, _, _ = select.select([m1, m2], [], [], 5)
a, _ = r[0].accept()
c.sendall(b"x"); say("reached", a.recv(1).decode())
"#;
    let net = Net::emulated("reuseport-local");
    let out = common::run(&mut net.script(BODY, net.port, &[]));
    assert_eq!(
        out.stdout, "over-plain EADDRINUSE fast\nmapped ok fast\nreached x\n",
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// Peer exit, local names, sendfile and splice edges

/// A peer process that exits (no close) after writing: its data, then EOF,
/// as over TCP (doorbell bytes it left unread made the kernel report
/// ECONNRESET on our end of the Unix connection).
#[test]
fn peer_exit_without_close_is_end_of_stream() {
    for mode in ["late", "early"] {
        let out = emulated_script("exit_unread", &[mode], &[]);
        assert!(out.contains(&format!("{mode} recv1 b'B'")), "{out}");
        assert!(out.contains("recv2 b''"), "{out}");
    }
    let out = emulated_c("exit_server", &["-O1", "-pthread"], &[]);
    assert!(out.contains("reply: 5"), "{out}");
    assert!(out.contains("after server exit: read=0"), "{out}");
}

/// 4 processes x 40 live connections: 160 distinct local names.
#[test]
fn live_connections_never_share_a_local_name() {
    let out = emulated_script("local_names", &[], &[]);
    assert!(out.contains("connections 160 distinct 160"), "{out}");
}

/// sendfile: a pipe as the source is EINVAL (reading one of our sockets raw
/// once sent its doorbell bytes as data), a count past the end of the file
/// returns at once, and end of file is 0 even on a full non-blocking ring.
#[test]
fn sendfile_sources_and_end_of_file_as_the_kernel() {
    let out = emulated_script("sendfile_edges", &[], &[]);
    assert!(out.contains("pipe: EINVAL"), "{out}");
    assert!(out.contains("short file: 100000 fast"), "{out}");
    assert!(out.contains("eof, full ring: 0"), "{out}");
    // A source the program fstat'ed itself (sendfile makes no fstat then):
    // the same answers as kernel TCP gives this script.
    for line in [
        "known file: 10",
        "known eof: 0",
        "pipe on a known number: EINVAL",
        "dup2 of a pipe over a known file: EINVAL",
        "known eof, peer closed: 0",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
}

/// A note of the program's fstat outlives its file when the number is
/// closed and reused past the hooks (raw system calls, SCM_RIGHTS): sendfile
/// from it is still the kernel's EINVAL, taking no pipe bytes or eventfd
/// counts and never blocking on an empty pipe (review s31 of the note).
#[test]
fn sendfile_from_a_stale_note_is_einval() {
    let net = Net::emulated("sendfile_stale");
    let out = common::stdout_of(
        "sendfile_stale",
        net.c_helper("sendfile_stale", &[]).arg(net.host_str()),
    );
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for line in [
        "raw close + raw pipe2 (data), offset NULL: -1 EINVAL",
        "raw close + raw openat dir, offset NULL: -1 EINVAL",
        "raw close + raw eventfd2, count 8: -1 EINVAL",
        "eventfd counter afterwards: 5",
        "raw close + SCM_RIGHTS unix socket, NULL: -1 EINVAL",
        "raw close + raw pipe2 (empty), offset NULL: -1 EINVAL",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(!out.contains("peer received"), "{out}");
}

/// splice with SPLICE_F_NONBLOCK never blocks on the pipe side.
#[test]
fn splice_nonblock_is_eagain_on_the_pipe_side() {
    let out = emulated_script("splice_nonblock", &[], &[]);
    assert!(out.contains("empty pipe -> socket: EAGAIN fast"), "{out}");
    assert!(out.contains("socket -> full pipe: EAGAIN fast"), "{out}");
}

#[test]
fn a_closed_connection_rings_no_doorbell() {
    // The last close writes the ring's close state; the doorbell it would
    // ring has no number left (s29's review saw "doorbell not rung: Bad
    // file descriptor" 700 - 3,000 times per wrk run, a library call on a
    // number already closed, or the appearance of one).
    let net = Net::emulated("closed-bell");
    let log = common::tmpdir("closed-bell").join("log");
    let script = r#"
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.bind((host, port)); srv.listen(64)
pid = os.fork()
if pid == 0:
    for i in range(50):
        a = srv.accept()[0]
        a.recv(100)
        a.sendall(b"r" * 1024)
        a.close()
    os._exit(0)
got = 0
for i in range(50):
    s = socket.socket(); s.connect((host, port))
    s.sendall(b"GET")
    while True:
        x = s.recv(4096)
        if not x: break
        got += len(x)
    s.close()
os.waitpid(pid, 0)
print("got", got)
"#;
    let out = common::stdout_of(
        "client and server",
        common::preloaded(common::python())
            .args(["-c", script, &net.host.to_string(), &net.port.to_string()])
            .env("SHMNET_PARTITIONS", &net.partitions)
            .env("SHMNET_FALLBACK", "never")
            .env("SHMNET_LOG", "debug")
            .env("SHMNET_LOG_FILE", &log),
    );
    assert_eq!(out.trim(), "got 51200");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("through shared memory"), "{text}");
    let bad = text
        .lines()
        .filter(|l| l.contains("Bad file descriptor"))
        .count();
    assert_eq!(bad, 0, "lines with EBADF in the log");
}

/// A connect to an emulated address whose version-4 name (another
/// build's) an unpreloaded AF_UNIX socket of the same process holds,
/// listening or only bound: the python script's output.
fn connect_beside_version_4(name: &str, listen: bool) -> common::Output {
    let net = Net::emulated(name);
    let (host, port) = (net.host.to_string(), net.port.to_string());
    let script = r#"
import errno, socket, sys
host, port, listen = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
old.bind(b"\0shmnet.4/tcp/%s:%d" % (host.encode(), port))
if listen:
    old.listen(8)
c = socket.socket()
r = c.connect_ex((host, port))
print(errno.errorcode.get(r, r))
"#;
    // The listener's own process is not preloaded (it stands for the old
    // build); the client is, in the same process: its socket() is ours.
    common::run(
        common::preloaded(common::python())
            .args(["-c", script, &host, &port, if listen { "1" } else { "0" }])
            .env("SHMNET_PARTITIONS", &net.partitions)
            .env("SHMNET_FALLBACK", "never"),
    )
}

/// Another version's name held but not listening (what another refused
/// process's probe of it looks like for a moment) is no such listener:
/// ECONNREFUSED and nothing said. Before, twenty processes refused at
/// once each printed the other-version line (sweep s38 F1).
#[test]
fn a_name_of_another_version_only_bound_says_nothing() {
    let out = connect_beside_version_4("other-version-bound", false);
    assert_eq!(out.stdout.trim(), "ECONNREFUSED", "{}", out.stderr);
    assert_eq!(out.stderr, "");
}

#[test]
fn a_listener_of_another_handshake_version_is_refused_with_a_reason() {
    // A build whose handshake differs (version 4: no filler offers, no
    // segment with a decline) holds the name in the emulated mode: the
    // connect is refused, and stderr says why instead of a misread.
    let out = connect_beside_version_4("other-version", true);
    assert_eq!(out.stdout.trim(), "ECONNREFUSED", "{}", out.stderr);
    assert!(
        out.stderr
            .contains("refused, its listener runs a libshmnet of handshake version 4"),
        "{}",
        out.stderr
    );
}
