//! Descriptor bookkeeping that must survive what programs really do:
//!
//! - fork while other threads are busy on an emulated socket: the child's
//!   first registry write (close, close_range, bind) must not hang on a lock
//!   inherited from threads that do not exist in the child;
//! - closes that bypass our `close` export (fclose's internal close,
//!   closefrom's internal close_range, glibc's `__close_nocancel`): the old
//!   connection must be released, and a new file, pipe, socket... that the
//!   kernel gives the same number must never be taken for it (its bytes
//!   going into the old connection's ring).
//!
//! Every program runs preloaded with `SHMNET_FALLBACK=never`, a private
//! `SHMNET_DIR`, on its own addresses of the emulated network
//! (`Net::emulated`); every wait is bounded (helpers arm `alarm()`, the C
//! program kills a hung child after 5 s, `common::run` kills at 90 s).

mod common;

use common::{build_c, preloaded, py, run, tmpdir, Net};

/// Three threads call getsockname/getsockopt on an emulated listener in a
/// loop while the main thread forks 1500 times; each child closes the
/// listener (close, or close_range like python's subprocess child), binds,
/// listens on and closes a listener of its own, and must exit 0 within 5 s.
/// The parent's listener keeps its name and still accepts a connection.
#[test]
fn fork_while_threads_use_an_emulated_socket() {
    let exe = build_c("forkbusy", &["-O2", "-Wall", "-pthread"]);
    let net = Net::emulated("fds-fork");
    let out = run(net.env(&mut preloaded(&exe)).args([
        &net.host_str(),
        &net.port_str(),
        &net.ip(2).to_string(),
        &net.port_str(),
        "1500",
    ]));
    assert!(
        out.status.success() && out.stdout == "ok 1500\n",
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

const SUBPROCESS: &str = r#"
import os, signal, socket, subprocess, threading
def hung(*_):
    # A child hung before exec hangs Popen() itself: kill our children (so
    # none keeps the test's pipes open) and fail.
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    print("hung", flush=True)
    os._exit(2)
signal.signal(signal.SIGALRM, hung)
signal.alarm(40)
host, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket()
srv.bind((host, port))
srv.listen(4)
stop = False
def hammer():
    while not stop:
        srv.getsockname()
        srv.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
threads = [threading.Thread(target=hammer) for _ in range(3)]
for t in threads:
    t.start()
for _ in range(rounds):
    subprocess.run(["true"], check=True, timeout=10)
stop = True
for t in threads:
    t.join()
assert srv.getsockname() == (host, port), srv.getsockname()
print("ok", rounds, flush=True)
"#;

/// python's subprocess (vfork, run as fork; close_range in the child) while
/// threads are busy on an emulated listener.
#[test]
fn subprocess_while_threads_use_an_emulated_socket() {
    let net = Net::emulated("fds-subprocess");
    let out = run(net.env(&mut py(
        SUBPROCESS,
        &[&net.host_str(), &net.port_str(), "300"],
    )));
    assert!(
        out.status.success() && out.stdout == "ok 300\n",
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// Python side of the stale-entry tests. argv: HOST PORT TMPDIR. Each case
/// prints `ok NAME` or `FAIL NAME: why`; the last line is `done N`.
const STALE: &str = r#"
import ctypes, errno, fcntl, os, platform, select, signal, socket, struct
signal.alarm(60)
HOST, PORT, TMP = sys.argv[1], int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.closefrom.restype = None
libc.close_range.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
SYS_close = {"x86_64": 3, "aarch64": 57}[platform.machine()]
SYS_dup3 = {"x86_64": 292, "aarch64": 24}[platform.machine()]
# glibc's internal close, which its own functions call past our close
# export: the close the library does not see.
close_unseen = libc.__close_nocancel
RDWR_NEW = os.O_RDWR | os.O_CREAT | os.O_TRUNC

srv = socket.socket()
srv.bind((HOST, PORT))
srv.listen(16)
kl = socket.socket()  # a kernel listener (not a partition address)
kl.bind(("127.0.0.1", 0))
kl.listen(16)
pending = [socket.create_connection(kl.getsockname()) for _ in range(2)]
dfd = os.open(TMP, os.O_RDONLY | os.O_DIRECTORY)
with open(os.path.join(TMP, "FILE"), "wb") as f:
    f.write(b"FILE")
ffd = os.open(os.path.join(TMP, "FILE"), os.O_RDWR)

class Fail(Exception):
    pass

def expect(cond, what):
    if not cond:
        raise Fail(what)

def connection():
    """An emulated connection; the server sends OLD, which is what a read
    on the client's stale fd number would return."""
    c = socket.create_connection((HOST, PORT))
    conn, _ = srv.accept()
    conn.sendall(b"OLD")
    return c, conn

def path(name):
    return os.path.join(TMP, name).encode()

def file_checks(n, readable=True):
    expect(os.write(n, b"NEW") == 3, "short write")
    size = os.fstat(n).st_size
    expect(size == 3, f"{size} bytes on disk after writing 3 (they went elsewhere)")
    if readable:
        os.lseek(n, 0, os.SEEK_SET)
        got = os.read(n, 10)
        expect(got == b"NEW", f"read back {got!r}")

def would_block(n, size):
    try:
        got = os.read(n, size)
    except BlockingIOError:
        return
    raise Fail(f"read returned {got!r}, not EAGAIN")

def fails_with(err, f):
    try:
        r = f()
    except OSError as e:
        expect(e.errno == err, f"{e!r}, not {errno.errorcode[err]}")
        return
    raise Fail(f"returned {r!r}, not {errno.errorcode[err]}")

def peer_sees_eof(conn):
    # The end at once: EOF, or ECONNRESET when the closed side left OLD
    # unread (a close with unread data is a RST, as over kernel TCP).
    conn.settimeout(3)
    try:
        got = conn.recv(100)
    except socket.timeout:
        raise Fail("the peer still sees a live connection")
    except ConnectionResetError:
        return
    expect(got == b"", f"the peer received {got!r}")

def close_all(things):
    for t in things:
        try:
            t.close() if hasattr(t, "close") else os.close(t)
        except OSError:
            pass

passed = []
def case(name):
    def run(body):
        opened = []
        try:
            c, conn = connection()
            opened.append(conn)
            fd = c.detach()
            close_unseen(fd)
            body(fd, opened)
            peer_sees_eof(conn)
            print("ok", name, flush=True)
            passed.append(name)
        except Exception as e:
            print("FAIL", name + ":", repr(e), flush=True)
        close_all(opened)
    return run

def same(fd, n, opened, what="the new fd"):
    opened.append(n)
    expect(n == fd, f"{what} is {n}, not the freed number {fd}")
    return n

# Files.
@case("open64")
def _(fd, o):
    file_checks(same(fd, os.open(path("a"), RDWR_NEW, 0o600), o))

@case("open")
def _(fd, o):
    file_checks(same(fd, libc.open(path("b"), RDWR_NEW, 0o600), o))

@case("openat64")
def _(fd, o):
    file_checks(same(fd, os.open("c", RDWR_NEW, 0o600, dir_fd=dfd), o))

@case("openat")
def _(fd, o):
    file_checks(same(fd, libc.openat(dfd, b"d", RDWR_NEW, 0o600), o))

@case("__open_2")
def _(fd, o):
    file_checks(same(fd, libc.__open_2(path("FILE"), os.O_RDWR | os.O_TRUNC), o))

@case("__openat64_2")
def _(fd, o):
    file_checks(same(fd, libc.__openat64_2(dfd, b"FILE", os.O_RDWR | os.O_TRUNC), o))

@case("creat")
def _(fd, o):
    file_checks(same(fd, libc.creat(path("e"), 0o600), o), readable=False)

@case("creat64")
def _(fd, o):
    file_checks(same(fd, libc.creat64(path("f"), 0o600), o), readable=False)

@case("mkstemp")
def _(fd, o):
    file_checks(same(fd, libc.mkstemp(ctypes.create_string_buffer(path("g-XXXXXX"))), o))

@case("mkostemp")
def _(fd, o):
    template = ctypes.create_string_buffer(path("h-XXXXXX"))
    file_checks(same(fd, libc.mkostemp(template, os.O_CLOEXEC), o))

@case("memfd_create")
def _(fd, o):
    file_checks(same(fd, os.memfd_create("stale"), o))

# Duplicates of a file (ffd holds FILE).
def reads_file(n):
    os.lseek(n, 0, os.SEEK_SET)
    got = os.read(n, 10)
    expect(got in (b"FILE", b"NEW", b""), f"read {got!r} from a copy of the file")

@case("dup")
def _(fd, o):
    reads_file(same(fd, libc.dup(ffd), o))

@case("fcntl F_DUPFD_CLOEXEC")
def _(fd, o):
    reads_file(same(fd, os.dup(ffd), o))

@case("fcntl F_DUPFD")
def _(fd, o):
    reads_file(same(fd, fcntl.fcntl(ffd, fcntl.F_DUPFD, 0), o))

@case("dup2")
def _(fd, o):
    reads_file(same(fd, os.dup2(ffd, fd), o))

@case("dup3")
def _(fd, o):
    reads_file(same(fd, os.dup2(ffd, fd, inheritable=False), o))

# Pipes and sockets.
@case("pipe")
def _(fd, o):
    fds = (ctypes.c_int * 2)()
    expect(libc.pipe(fds) == 0, "pipe failed")
    o.append(fds[1])
    r = same(fd, fds[0], o, "the read end")
    os.write(fds[1], b"NEW")
    got = os.read(r, 10)
    expect(got == b"NEW", f"read {got!r} from the pipe")

@case("pipe2")
def _(fd, o):
    r, w = os.pipe()
    o.append(w)
    same(fd, r, o, "the read end")
    os.write(w, b"NEW")
    got = os.read(r, 10)
    expect(got == b"NEW", f"read {got!r} from the pipe")

@case("socketpair")
def _(fd, o):
    a, b = socket.socketpair()
    o.extend([a, b])
    b.settimeout(3)
    expect(a.fileno() == fd, f"socketpair gave {a.fileno()}, not {fd}")
    expect(os.write(fd, b"NEW") == 3, "short write")
    got = b.recv(10)
    expect(got == b"NEW", f"the other end received {got!r}")
    b.sendall(b"BACK")
    got = os.read(fd, 10)
    expect(got == b"BACK", f"read {got!r}")

@case("socket")
def _(fd, o):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    o.append(s)
    expect(s.fileno() == fd, f"socket() gave {s.fileno()}, not {fd}")
    s.bind(("127.0.0.1", 0))
    expect(s.getsockname()[0] == "127.0.0.1", f"getsockname {s.getsockname()}")

def accepted(fd, o, accept):
    kc = pending.pop(0)  # connected up front: accept creates the only new fd
    o.append(kc)
    n = same(fd, accept(), o, "the accepted fd")
    kc.sendall(b"NEW")
    got = os.read(n, 10)
    expect(got == b"NEW", f"read {got!r} from the accepted connection")

@case("accept")
def _(fd, o):
    accepted(fd, o, lambda: libc.accept(kl.fileno(), None, None))

@case("accept4")
def _(fd, o):
    accepted(fd, o, lambda: kl._accept()[0])

# Event objects.
@case("eventfd")
def _(fd, o):
    n = same(fd, os.eventfd(0), o)
    os.write(n, struct.pack("Q", 7))
    got = os.read(n, 8)
    expect(got == struct.pack("Q", 7), f"eventfd read {got!r}")

@case("epoll_create1")
def _(fd, o):
    ep = select.epoll()
    o.append(ep)
    expect(ep.fileno() == fd, f"epoll gave {ep.fileno()}, not {fd}")
    fails_with(errno.EINVAL, lambda: os.write(fd, b"NEW"))

@case("epoll_create")
def _(fd, o):
    n = same(fd, libc.epoll_create(1), o)
    fails_with(errno.EINVAL, lambda: os.write(n, b"NEW"))

@case("timerfd_create")
def _(fd, o):
    n = same(fd, libc.timerfd_create(1, os.O_NONBLOCK), o)  # CLOCK_MONOTONIC
    would_block(n, 8)

@case("signalfd")
def _(fd, o):
    mask = ctypes.create_string_buffer(128)  # empty sigset_t
    n = same(fd, libc.signalfd(-1, mask, os.O_NONBLOCK), o)
    would_block(n, 128)

@case("inotify_init1")
def _(fd, o):
    would_block(same(fd, libc.inotify_init1(os.O_NONBLOCK), o), 4096)

# errno: exactly what libc set, through the stale-entry release too.
@case("errno")
def _(fd, o):
    ctypes.set_errno(errno.EXDEV)
    n = same(fd, libc.open(path("FILE"), os.O_RDWR), o)
    expect(ctypes.get_errno() == errno.EXDEV, f"errno {ctypes.get_errno()} after a successful open")
    expect(libc.open(path("missing/x"), os.O_RDONLY) == -1, "open of a missing file")
    expect(ctypes.get_errno() == errno.ENOENT, f"errno {ctypes.get_errno()}, not ENOENT")
    file_checks(n)

# Closes past our close export: the connection itself must be released
# (the peer sees EOF at once), then a file reusing the number is a file.
def closed_past_us(name, close):
    opened = []
    try:
        c, conn = connection()
        opened.append(conn)
        fd = close(c)
        peer_sees_eof(conn)
        file_checks(same(fd, os.open(path("z"), RDWR_NEW, 0o600), opened))
        print("ok", name, flush=True)
        passed.append(name)
    except Exception as e:
        print("FAIL", name + ":", repr(e), flush=True)
    close_all(opened)

def by_fclose(c):
    fd = c.detach()
    f = libc.fdopen(fd, b"r+")
    expect(f, "fdopen failed")
    expect(libc.fclose(f) == 0, "fclose failed")
    return fd

# Above every other fd of the process, the library's own included (they sit
# from min(limit/2, 4096) up): closefrom(HIGH) closes only HIGH.
import resource
HIGH = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16) - 1
def moved_high(c):
    os.dup2(c.fileno(), HIGH)
    c.close()

closed_past_us("fclose", by_fclose)

# libuv (Node.js) closes with syscall(SYS_close): libc's syscall() is
# hooked for the descriptor calls, so the close is seen at once.
def by_syscall(c):
    fd = c.detach()
    expect(libc.syscall(SYS_close, fd) == 0, "syscall(SYS_close) failed")
    return fd

closed_past_us("syscall(SYS_close)", by_syscall)

# syscall(SYS_dup3) makes an emulated copy: bytes written through it reach
# the peer after the original number is closed.
def by_syscall_dup3(c):
    fd = c.detach()
    copy = HIGH - 1
    expect(libc.syscall(SYS_dup3, fd, copy, os.O_CLOEXEC) == copy, "syscall(SYS_dup3) failed")
    expect(libc.syscall(SYS_close, fd) == 0, "syscall(SYS_close) failed")
    expect(os.write(copy, b"VIA-DUP3") == 8, "short write through the copy")
    expect(libc.syscall(SYS_close, copy) == 0, "syscall(SYS_close) of the copy failed")
    return fd

def closed_after_copy(name, close):
    opened = []
    try:
        c, conn = connection()
        opened.append(conn)
        close(c)
        conn.settimeout(3)
        got = b""
        while True:
            try:
                part = conn.recv(100)
            except ConnectionResetError:
                break  # OLD was left unread: a RST after the bytes
            if not part:
                break
            got += part
        expect(got == b"VIA-DUP3", f"the peer received {got!r}")
        print("ok", name, flush=True)
        passed.append(name)
    except Exception as e:
        print("FAIL", name + ":", repr(e), flush=True)
    close_all(opened)

def closefrom_case(name, close):
    conn = None
    try:
        c, conn = connection()
        moved_high(c)
        close()
        peer_sees_eof(conn)
        n = fcntl.fcntl(ffd, fcntl.F_DUPFD, HIGH)
        try:
            expect(n == HIGH, f"F_DUPFD gave {n}, not {HIGH}")
            reads_file(n)
        finally:
            os.close(n)
        print("ok", name, flush=True)
        passed.append(name)
    except Exception as e:
        print("FAIL", name + ":", repr(e), flush=True)
    if conn:
        conn.close()

closefrom_case("closefrom", lambda: libc.closefrom(HIGH))
closefrom_case("close_range", lambda: libc.close_range(HIGH, 0xFFFFFFFF, 0))
closed_after_copy("syscall(SYS_dup3)", by_syscall_dup3)

print("done", len(passed), flush=True)
"#;

/// Every stale-entry case (see `STALE`); a case that fails prints why.
#[test]
fn fd_numbers_closed_past_the_library_are_not_taken_for_sockets() {
    let net = Net::emulated("fds-stale");
    let work = tmpdir("fds-stale-files");
    let out = run(net.env(&mut py(
        STALE,
        &[&net.host_str(), &net.port_str(), work.to_str().unwrap()],
    )));
    let failed: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert!(
        out.status.success() && failed.is_empty() && out.stdout.ends_with("done 34\n"),
        "{}\nfailed cases:\n{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        failed.join("\n"),
        out.stdout,
        out.stderr
    );
}

/// A process that closes "every other fd" (a daemon's close loop, then
/// closefrom, then close_range) must keep its emulated connection and
/// listener working: the library's own fds (doorbells, port reservations)
/// are not the application's to close. argv: HOST PORT.
const CLOSE_ALL_BUT: &str = r#"
import ctypes, os, socket, resource, subprocess
signal_alarm = __import__("signal").alarm(60)
HOST, PORT = sys.argv[1], int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
srv = socket.socket(); srv.bind((HOST, PORT)); srv.listen(4)
c = socket.create_connection((HOST, PORT))
conn, _ = srv.accept()
keep = {0, 1, 2, srv.fileno(), c.fileno(), conn.fileno()}
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
for fd in range(3, min(limit, 65536)):
    if fd not in keep:
        try:
            os.close(fd)
        except OSError:
            pass
top = max(keep) + 1
libc.closefrom(top)
libc.close_range(top, 0xFFFFFFFF, 0)
for i in range(3):
    c.sendall(b"ping %d" % i)
    assert conn.recv(100) == b"ping %d" % i
    conn.sendall(b"pong %d" % i)
    assert c.recv(100) == b"pong %d" % i
# the port is still reserved: another process cannot bind it
code = f"import socket; s=socket.socket(); s.bind(({HOST!r}, {PORT}))"
r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
assert "Address already in use" in r.stderr, r.stderr
c.close(); conn.close(); srv.close()
print("ok")
"#;

#[test]
fn closing_every_other_fd_leaves_the_library_its_own() {
    let net = Net::emulated("fds-close-all");
    let out = run(net.env(&mut py(CLOSE_ALL_BUT, &[&net.host_str(), &net.port_str()])));
    assert!(
        out.status.success() && out.stdout == "ok\n",
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// dup2(fd, fd) changes nothing (the kernel returns fd): an emulated
/// connection stays one (found by review: the hook took the returned
/// number for a fresh fd and released the connection), and dup2 of a
/// connection onto another number still shares it.
#[test]
fn dup2_onto_itself_keeps_an_emulated_connection() {
    const BODY: &str = r#"
import os, socket, signal
signal.alarm(20)
host, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(); srv.bind((host, port)); srv.listen(4)
c = socket.create_connection((host, port)); a, _ = srv.accept()
fd = c.fileno()
assert os.dup2(fd, fd) == fd
c.sendall(b"same fd"); assert a.recv(100) == b"same fd"
a.sendall(b"back"); assert c.recv(100) == b"back"
os.dup2(fd, 60)
os.write(60, b"via 60"); assert a.recv(100) == b"via 60"
print("ok", flush=True)
"#;
    let net = Net::emulated("fds-dup2-self");
    let out = run(net.env(&mut py(BODY, &[&net.host_str(), &net.port_str()])));
    assert_eq!(out.stdout, "ok\n", "{}\n{}", out.status, out.stderr);
}

/// splice from an emulated socket in a signal handler that interrupted
/// a blocking recv: the data, as the kernel's splice gives it — not libc's
/// splice reading the doorbell byte behind the fd as data (the hook looked
/// only at splice's output fd to tell whether the call was ours). Until
/// session 33 the recv's sleep ran inside the library and the handler's
/// splice was EIO (as read and recv there); the sleep now runs outside
/// (`doorbell::sleep_outside`, decision 45's review), so the handler's
/// calls are served. Same output as over kernel TCP.
#[test]
fn nested_splice_from_an_emulated_socket_reads_the_data() {
    let exe = build_c("splice_nested", &["-O1", "-Wall"]);
    let net = Net::emulated("fds-splice-nested");
    let out = run(net
        .env(&mut preloaded(&exe))
        .args([net.host_str(), net.port_str()]));
    assert_eq!(
        out.stdout, "splice 5 0\nrecv -1 EINTR\n",
        "{}\n{}",
        out.status, out.stderr
    );
}

/// A default-mode listener's kernel connection handed out under a number
/// whose fd-table entry is stale (the emulated listener once there was
/// closed with a raw system call): the accepted fd is the new connection,
/// not the old object (accept's own stale check ran inside the hook's
/// guard, where it was skipped; found by review).
#[test]
fn accept_under_a_stale_number_is_the_new_connection() {
    let exe = build_c("stale_accept", &["-O1", "-Wall"]);
    let dir = tmpdir("fds-stale-accept");
    let mut cmd = preloaded(&exe);
    cmd.env("SHMNET_DIR", dir.join("shm"));
    let out = run(&mut cmd);
    assert!(
        out.stdout.contains("getpeername(accepted) = 0")
            && out.stdout.contains("data 'ping' (want 4 'ping')"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// A client that runs out of fds while connecting (the library needs fds
/// of its own for a connection): connect fails with EMFILE and the server
/// accepts exactly the connections the client has. Before, the doorbell's
/// fd was made after the acceptor had the connect message: the server
/// accepted one connection more, which then read end of stream.
#[test]
fn connect_out_of_fds_leaves_the_server_no_connection() {
    let net = Net::emulated("connect-emfile");
    let out = common::stdout_of(
        "connect_out_of_fds",
        &mut net.py_helper("connect_out_of_fds", &[]),
    );
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.len(), 6, "{out}");
    assert_eq!(words[1], words[3], "opened vs accepted: {out}");
    assert!(words[1].parse::<usize>().unwrap() > 10, "{out}");
    assert_eq!(words[5], libc::EMFILE.to_string(), "{out}");
}

/// `ulimit -n` gives as many connections as kernel TCP: the doorbell has
/// no fd of its own, a connecting port's name is held by the connection's
/// own socket, and the memfds kept for exec are given back when the
/// application runs out (`spare_fds`). The library's few per-process fds
/// aside (4 allowed). Each connection echoes a byte; the emulated run has
/// no kernel TCP to fall back to.
#[test]
fn connections_fit_the_fd_limit_kernel_tcp_needs() {
    const LIMIT: &str = "400";
    let opened = |out: &str| -> (usize, usize) {
        let w: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(w.len(), 6, "{out}");
        assert_eq!(w[5], libc::EMFILE.to_string(), "{out}");
        (w[1].parse().unwrap(), w[3].parse().unwrap())
    };
    let net = Net::emulated("fd-limit");
    let emulated = common::stdout_of("fd_limit", &mut net.py_helper("fd_limit", &[LIMIT]));
    let kernel = common::stdout_of(
        "fd_limit (kernel)",
        std::process::Command::new(common::python())
            .arg(common::helper("py/fd_limit.py"))
            .arg(LIMIT),
    );
    let (shm, shm_echoed) = opened(&emulated);
    let (tcp, tcp_echoed) = opened(&kernel);
    assert_eq!(shm_echoed + 3, shm, "{emulated}");
    assert_eq!(tcp_echoed + 3, tcp, "{kernel}");
    assert!(shm + 4 >= tcp, "emulated {emulated} vs kernel TCP {kernel}");
}

/// dup2 onto one of a connection's numbers while another thread's writes
/// ring the doorbell: no doorbell byte reaches the file dup2 put there,
/// and no wake-up is lost (helpers/c/dup2_doorbell.c).
#[test]
fn dup2_onto_a_connection_number_sends_no_doorbell_to_the_new_file() {
    let exe = build_c("dup2_doorbell", &["-O2", "-Wall", "-pthread"]);
    let net = Net::emulated("fds-dup2-bell");
    let out = run(net
        .env(&mut preloaded(&exe))
        .args([&net.host_str(), &net.port_str(), "20000"]));
    assert!(
        out.status.success()
            && out
                .stdout
                .contains("found in the unrelated socketpair: 0, other bytes there: 0")
            && out.stdout.contains("reader timeouts: 0"),
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// A signal handler's close of a number the doorbell may be using (its
/// thread was inside the library): the number is not reused while the
/// doorbell could still ring on it (helpers/c/handler_close_doorbell.c).
#[test]
fn a_signal_handlers_close_never_lets_doorbells_reach_the_next_file() {
    let exe = build_c("handler_close_doorbell", &["-O2", "-Wall", "-pthread"]);
    let net = Net::emulated("fds-handler-bell");
    let out = run(net
        .env(&mut preloaded(&exe))
        .args([&net.host_str(), &net.port_str(), "100"]));
    assert!(
        out.status.success() && out.stdout.contains("no stray byte in 100 attempts"),
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// At the fd limit, every failed open() gives back kept memfds (a walk
/// under the registry's lock) while a signal handler closes emulated fds:
/// no hang (helpers/c/emfile_signals.c; `run` kills a hung one at 90 s).
#[test]
fn running_out_of_fds_under_signals_never_hangs() {
    let exe = build_c("emfile_signals", &["-O2", "-Wall"]);
    let net = Net::emulated("fds-emfile-signals");
    let out = run(net
        .env(&mut preloaded(&exe))
        .args([&net.host_str(), &net.port_str()]));
    assert!(
        out.status.success() && out.stdout.contains("no hang"),
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// One EMFILE (an unrelated open at the limit) gives kept memfds back, but
/// connections made once there is room again still cross exec.
#[test]
fn connections_still_cross_exec_after_running_out_of_fds_once() {
    let net = Net::emulated("fds-exec-emfile");
    let out = common::stdout_of(
        "exec_after_emfile",
        &mut net.py_helper("exec_after_emfile", &[]),
    );
    assert_eq!(
        out, "before: child read: b'hello across exec'\nafter: child read: b'hello across exec'\n",
        "{out}"
    );
}

/// Runs helpers/c/`name`.c preloaded on its own emulated addresses with
/// `args` after HOST PORT (and `env`), and checks its stdout holds `want`.
fn c_case(name: &str, flags: &[&str], args: &[&str], env: &[(&str, &str)], want: &str) {
    let exe = build_c(name, flags);
    let net = Net::emulated(&format!("fds-{name}"));
    let mut cmd = preloaded(&exe);
    net.env(&mut cmd)
        .args([net.host_str(), net.port_str()])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(
        out.stdout.contains(want),
        "{name}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// A connect that dials again (its reuse offer unanswered) while a forked
/// child holds its first local port's name takes another port.
#[test]
fn a_connect_that_dials_again_never_fails_on_its_own_port() {
    c_case(
        "redial_fork",
        &["-O1", "-Wall", "-pthread"],
        &["20"],
        &[("FORK", "1")],
        "no failure",
    );
}

/// Out of fds under a seccomp filter that kills open(2): EMFILE, alive.
#[test]
fn out_of_fds_under_a_seccomp_filter_is_emfile() {
    c_case("seccomp_emfile", &["-O1", "-Wall"], &[], &[], "alive");
}

/// Under a filter that kills open(2) only (a denylist the library's calls
/// pass, so its ordinary data path stays on), half a second of round trips
/// (the spin heuristic looks at /proc/loadavg every 10 ms) never kills the
/// program: the library opens files with openat only. (CI caught the raw
/// open in `seccomp_emfile` once, by timing.)
#[test]
fn a_filter_that_kills_open_never_kills_a_program_using_connections() {
    c_case(
        "seccomp_open_killed",
        &["-O1", "-Wall"],
        &[],
        &[],
        "alive after",
    );
}

/// A send blocked for room returns when the peer dies, even after another
/// thread closed the fd's last number.
#[test]
fn a_blocked_send_sees_the_peer_die_after_its_fd_was_closed() {
    c_case(
        "blocked_writer",
        &["-O1", "-Wall", "-pthread"],
        &[],
        &[],
        "send failed: Broken pipe",
    );
}

/// A close a signal handler made while the doorbell was busy is finished
/// later without closing what the handler put on the number since.
#[test]
fn a_deferred_close_never_closes_what_the_handler_put_there() {
    c_case(
        "handler_dup2",
        &["-O1", "-Wall", "-pthread"],
        &["100"],
        &[],
        "handler's dup2 targets closed by the library 0",
    );
}

/// syscall(SYS_dup) returning a number closed past the library: the new
/// fd is the pipe it duplicated.
#[test]
fn syscall_dup_onto_a_stale_number_is_the_new_file() {
    c_case(
        "syscall_dup_stale",
        &["-O1", "-Wall"],
        &[],
        &[],
        "pipe got 5 'hello'",
    );
}

/// Socket calls on numbers that are not open (-1, -7, 4000) say what the
/// kernel says, in both modes with UDP carried: bind, connect and listen
/// of -1 made the library panic (borrowing fd -1: EIO and a `libshmnet:`
/// line; review udplazy).
#[test]
fn calls_on_fds_that_are_not_open_say_what_the_kernel_says() {
    let exe = build_c("bad_fds", &["-O2", "-Wall"]);
    let plain = std::process::Command::new(&exe)
        .output()
        .expect("bad_fds runs");
    let plain = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(plain.contains("bind -1 Bad file descriptor"), "{plain}");
    for emulated in [false, true] {
        let net = if emulated {
            Net::emulated("bad-fds")
        } else {
            Net::loopback("bad-fds")
        };
        let mut cmd = preloaded(&exe);
        if emulated {
            net.env(&mut cmd);
        } else {
            cmd.env("SHMNET_DIR", net.shm_dir());
        }
        let out = cmd.env("SHMNET_UDP", "1").output().expect("bad_fds runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            plain,
            "emulated {emulated}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
