//! UDP sockets of the default mode stay the kernel's own file until they
//! are carried (decision 64, issue 16): socket() makes no epoll instance,
//! and whatever could capture the socket's file before its first carried
//! bind, connect or send (an epoll registration, a dup, a thread asleep in
//! a receive, a fork, SCM_RIGHTS) makes it the kernel's for good. Each
//! script runs over kernel UDP ("kernel": preloaded, `SHMNET_UDP=0`) and
//! with UDP carried ("library"), and both must print the same lines; run
//! as root, each moves into a network namespace of its own, where
//! /proc/net/snmp says what the kernel carried.

mod common;

use std::process::Command;

use common::udp::{OWN_NETNS, UDP_PRELUDE};
use common::{build_c, preloaded, py, stdout_of, Net};

/// The default mode's environment, UDP carried or not.
fn default_env<'a>(net: &Net, cmd: &'a mut Command, udp: bool) -> &'a mut Command {
    cmd.env_remove("SHMNET_FALLBACK")
        .env_remove("SHMNET_PARTITIONS")
        .env("SHMNET_DIR", net.shm_dir())
        .env("SHMNET_UDP", if udp { "1" } else { "0" })
}

/// Runs `body` (argv[1]: the test's loopback host) over kernel UDP and
/// with UDP carried; the outputs must be the same. Returns the library's.
fn default_as_kernel(name: &str, body: &str) -> String {
    let net = Net::loopback(name);
    let run = |mode: &str| {
        let script = format!("{UDP_PRELUDE}{OWN_NETNS}MODE = {mode:?}\n{PRELUDE}{body}");
        let mut cmd = py(&script, &[&net.host_str()]);
        default_env(&net, &mut cmd, mode == "library");
        stdout_of(&format!("{name} ({mode})"), &mut cmd)
    };
    let kernel = run("kernel");
    let library = run("library");
    assert_eq!(library, kernel, "{name}: the library vs kernel UDP");
    library
}

/// A preloaded echo receiver in this process (bound: carried in the
/// library's run), and what the kernel carried since a moment.
const PRELUDE: &str = r#"
host = sys.argv[1]
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind((host, 0))
PORT = srv.getsockname()[1]
def serve():
    while True:
        d, a = srv.recvfrom(70000)
        srv.sendto(b"echo:" + d, a)
threading.Thread(target=serve, daemon=True).start()
def kernel_carried(before, n):
    # The kernel carried at least `n` datagrams since `before` (where it
    # can be counted: as root, in the script's own namespace).
    return not COUNTED or kernel_datagrams() - before >= n
"#;

/// Each way a socket's file can be captured before it is carried leaves it
/// working, through the kernel: an epoll registration before its connect,
/// a dup before its bind (datagrams read on either number), a thread
/// asleep in recvfrom while another thread sends to a preloaded receiver,
/// a fork before its first send (both processes send and receive), a
/// poll for reading before its first send. The same as kernel UDP.
#[test]
fn a_socket_captured_before_it_is_carried_stays_the_kernels() {
    let body = r#"
# An epoll registration, then connect and send: the answer is reported.
before = kernel_datagrams() if COUNTED else 0
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ep = select.epoll(); ep.register(c.fileno(), select.EPOLLIN)
c.connect((host, PORT))
for i in range(20):
    c.send(b"ep%d" % i)
    ev = ep.poll(5)
    assert ev and ev[0][1] & select.EPOLLIN, (i, ev)
    assert c.recv(100) == b"echo:ep%d" % i, i
print("epoll before connect: 20 answers reported", kernel_carried(before, 40))
ep.close(); c.close()

# A dup, then bind: what a preloaded sender sends comes on both numbers.
before = kernel_datagrams() if COUNTED else 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
copy = socket.socket(fileno=os.dup(s.fileno()))
s.bind((host, 0))
port = s.getsockname()[1]
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
got = []
for i in range(20):
    t.sendto(b"dup%d" % i, (host, port))
    got.append((copy if i % 2 else s).recv(100))
print("dup before bind:", got == [b"dup%d" % i for i in range(20)], kernel_carried(before, 20))
s.close(); copy.close(); t.close()

# A thread asleep in recvfrom while another thread sends.
before = kernel_datagrams() if COUNTED else 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
answers = []
def receive():
    for _ in range(10):
        answers.append(s.recvfrom(100)[0])
r = threading.Thread(target=receive); r.start()
time.sleep(0.2)  # (likely asleep by now; either way the answers come)
for i in range(10):
    s.sendto(b"asleep%d" % i, (host, PORT))
r.join()
print("asleep in recvfrom:", sorted(answers) == sorted(b"echo:asleep%d" % i for i in range(10)),
      kernel_carried(before, 20))
s.close()

# A fork before the first send: both processes send and receive.
before = kernel_datagrams() if COUNTED else 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
rd, wr = os.pipe()
pid = os.fork()
if pid == 0:
    s.sendto(b"child", (host, PORT))
    os.write(wr, s.recv(100))
    os._exit(0)
child = os.read(rd, 100)
os.waitpid(pid, 0)
s.sendto(b"parent", (host, PORT))
print("fork before send:", child, s.recv(100), kernel_carried(before, 4))
s.close()

# A poll for reading before the first send.
before = kernel_datagrams() if COUNTED else 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
p = select.poll(); p.register(s.fileno(), select.POLLIN)
assert p.poll(0) == []
s.sendto(b"polled", (host, PORT))
assert p.poll(5000), "poll"
print("poll before send:", s.recv(100), kernel_carried(before, 2))
s.close()
"#;
    let out = default_as_kernel("udplazy_captured", body);
    assert!(!out.contains("False"), "{out}");
    assert!(
        out.contains("fork before send: b'echo:child' b'echo:parent' True"),
        "{out}"
    );
}

/// A socket nothing captured is carried at its first bind or send to a
/// preloaded receiver: a bound pair and a client's socket per request
/// exchange their datagrams through shared memory (the kernel carries
/// none of them), and a socket that only polls for writing before each
/// send (Python's sockets with a timeout) is still carried.
#[test]
fn a_socket_nothing_captured_is_carried() {
    let body = r#"
before = kernel_datagrams() if COUNTED else 0
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind((host, 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind((host, 0))
for i in range(50):
    a.sendto(b"a%d" % i, b.getsockname())
    d, src = b.recvfrom(100)
    assert d == b"a%d" % i and src == a.getsockname(), (i, d, src)
    b.sendto(b"b%d" % i, src)
    assert a.recv(100) == b"b%d" % i, i
print("bound pair: 100 datagrams")
ok = 0
for i in range(50):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if i % 2:
        c.settimeout(5)  # (a poll for POLLOUT before each send)
    c.sendto(b"req%d" % i, (host, PORT))
    ok += c.recv(100) == b"echo:req%d" % i
    c.close()
print("a socket per request:", ok, "answers")
if COUNTED and MODE == "library":
    n = kernel_datagrams() - before
    assert n == 0, f"the kernel carried {n} datagrams"
print("kernel datagrams counted:", COUNTED)
"#;
    let out = default_as_kernel("udplazy_carried", body);
    assert!(out.contains("a socket per request: 50 answers"), "{out}");
}

/// A UDP socket that is never carried costs one fd, as the kernel's (its
/// fd held an epoll instance and the library's copy of the kernel socket
/// beside it: three): made, made and sent through the kernel to a port
/// nobody holds (decision 63's remembered destination), or captured by a
/// dup (the dup's own fd aside).
#[test]
fn a_socket_never_carried_costs_one_fd() {
    let body = r#"
def fds():
    return len(os.listdir("/proc/self/fd"))
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); t.bind((host, 0))
NOBODY = t.getsockname()[1]
t.close()
w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
w.sendto(b"anyone?", (host, NOBODY))  # (found held by nobody: remembered)
n = fds()
made = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
print("fds per socket made:", (fds() - n) / 20)
n = fds()
sent = []
for i in range(20):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", (host, NOBODY))
    sent.append(s)
print("fds per socket sent to nobody:", (fds() - n) / 20)
n = fds()
dups = []
for i in range(20):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dups.append((s, os.dup(s.fileno())))
    s.sendto(b"x", (host, PORT))
print("fds per socket captured by a dup:", (fds() - n) / 20)
for s in made + sent:
    s.close()
n = fds()
for s, d in dups:
    s.close(); os.close(d)
print("all closed:", n - fds())
"#;
    let out = default_as_kernel("udplazy_fds", body);
    assert!(out.contains("fds per socket made: 1.0"), "{out}");
    assert!(out.contains("fds per socket sent to nobody: 1.0"), "{out}");
}

/// Sockets carried leave the program its fds (sweep37 D2): under a low
/// `ulimit -n`, 60 bound sockets each send to the echo receiver and 30
/// files are opened after them, as over kernel UDP; once the library's
/// own fds spread over a quarter of the limit, further sockets stay the
/// kernel's (`internal_fd::crowded`). Before, each carried socket held
/// about 5 fds of the library's, and open() failed.
#[test]
fn carried_sockets_leave_the_program_its_fds() {
    let body = r#"
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))
socks = []
for i in range(60):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(5)
    socks.append(s)
ok = 0
for i, s in enumerate(socks):
    s.sendto(b"n%d" % i, (host, PORT))
    ok += s.recv(100) == b"echo:n%d" % i
print("answers:", ok)
files = []
for i in range(30):
    files.append(open("/dev/null"))
print("files opened:", len(files))
"#;
    let out = default_as_kernel("udplazy_crowded", body);
    assert!(out.contains("answers: 60"), "{out}");
    assert!(out.contains("files opened: 30"), "{out}");
}

/// A conversion racing a close of the socket and an open() that takes its
/// number: the opened file stays the program's (review udplazy #3: the
/// conversion's epoll instance replaced it, 42 of 2000 with the library
/// before `pristine::closing`).
#[test]
fn a_conversion_never_replaces_a_file_a_racing_close_let_in() {
    let exe = build_c("udp_close_race", &["-O2", "-Wall", "-pthread"]);
    let net = Net::loopback("udplazy_close_race");
    let mut cmd = preloaded(&exe);
    cmd.arg("1000");
    default_env(&net, &mut cmd, true);
    let out = stdout_of("udp_close_race", &mut cmd);
    assert_eq!(out, "replaced 0 of 1000\n");
}
