//! Python helpers of the UDP tests (datagrams.rs, datagrams_default.rs).

/// Python helpers every script here starts with.
pub const UDP_PRELUDE: &str = r#"
import os, socket, select, struct, fcntl, termios, time, errno

def kernel_udp_ports():
    ports = set()
    for f in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(f).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            ports.add(int(l.split()[1].rsplit(":", 1)[1], 16))
    return ports

def assert_no_kernel_udp(*ports):
    held = kernel_udp_ports()
    for p in ports:
        assert p not in held, f"kernel UDP socket on port {p}"

def fionread(s):
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0" * 4))[0]

def payload(n, seed):
    return bytes((i * 7 + seed) & 0xff for i in range(n))

def echo_server(fam, host, port, count):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((host, port))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        srv = socket.socket(fam, socket.SOCK_DGRAM)
        srv.bind((host, port + 1))
        os.write(w, b"k")
        for _ in range(count):
            d, a = srv.recvfrom(70000)
            srv.sendto(d, a)
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"k"
    s.close()
    return pid
"#;

/// Helpers of the review-H1-H3 scripts: the script moves into a network
/// namespace of its own when it can (root), so that /proc/net/snmp's UDP
/// counters count its datagrams only: where the library claims shared
/// memory, the kernel carried none.
pub const OWN_NETNS: &str = r#"
import ctypes, subprocess, threading
def own_netns():
    if os.geteuid() != 0:
        return False
    if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return True
COUNTED = own_netns()
def kernel_datagrams():
    l = [x.split() for x in open("/proc/net/snmp") if x.startswith("Udp:")]
    return int(dict(zip(l[0][1:], l[1][1:]))["InDatagrams"])
def expect_kernel(before, emulated, kernel):
    # The kernel's count of datagrams it delivered since `before`: `emulated`
    # preloaded, `kernel` plain (printed to stderr: the outputs compared).
    n = kernel_datagrams() - before
    if COUNTED:
        want = emulated if MODE == "library" else kernel
        assert n == want, f"{MODE}: the kernel carried {n} datagrams, not {want}"
"#;

/// dnsmasq in its default configuration (wildcard sockets, no
/// `--bind-interfaces`: it asks IP_PKTINFO and answers with sendmsg and
/// IP_PKTINFO naming each query's destination), a hosts file on `net`'s
/// /24, asked `queries` times by a preloaded dig, both with `env`.
/// As root both run in a network namespace of their own, and the kernel's
/// count of UDP datagrams there (/proc/net/snmp, InDatagrams) over the
/// queries is returned (0: all through shared memory); else None.
/// Every answer must be right; the counters (`SHMNET_DIR`) are the
/// caller's to read.
pub fn dnsmasq_wildcard(
    net: &super::Net,
    queries: usize,
    env: impl Fn(&mut std::process::Command),
) -> Option<u64> {
    use super::host::{is_root, Netns};
    use std::process::Command;
    let [a, b, c] = net.v4().octets()[..3].try_into().unwrap();
    let hosts = net.dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("{a}.{b}.{c}.55 alpha.test\n{a}.{b}.{c}.66 beta.test\n"),
    )
    .unwrap();
    let ns = is_root().then(Netns::create);
    let preloaded = |program: &str| match &ns {
        Some(ns) => ns.preloaded(program),
        None => super::preloaded(program),
    };
    let mut server = preloaded("/usr/sbin/dnsmasq");
    server.args(["-d", "-C", "/dev/null", "--no-resolv", "--no-hosts"]);
    server.arg(format!("--addn-hosts={}", hosts.display()));
    server.args(["-p", &net.port_str()]);
    if is_root() {
        server.args(["-u", "root"]);
    }
    env(&mut server);
    let server = super::Background::spawn(&mut server);
    let dig = |name: &str| {
        let mut cmd = preloaded("dig");
        cmd.arg(format!("@{}", net.host))
            .args(["-p", &net.port_str(), name]);
        cmd.args(["+short", "+tries=1", "+time=3"]);
        env(&mut cmd);
        super::run(&mut cmd).stdout.trim().to_string()
    };
    let in_datagrams = || -> Option<u64> {
        let out = ns
            .as_ref()?
            .cmd("cat")
            .arg("/proc/net/snmp")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("Udp:"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let at = rows.first()?.iter().position(|w| *w == "InDatagrams")?;
        rows.get(1)?.get(at)?.parse().ok()
    };
    let want = format!("{a}.{b}.{c}.55");
    let mut first = String::new();
    for _ in 0..50 {
        first = dig("alpha.test");
        if first == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(first, want, "dnsmasq's first answer");
    let before = in_datagrams();
    for i in 0..queries {
        let (name, ip) = if i % 2 == 0 {
            ("alpha.test", 55)
        } else {
            ("beta.test", 66)
        };
        assert_eq!(dig(name), format!("{a}.{b}.{c}.{ip}"), "query {i}");
    }
    let kernel = in_datagrams().zip(before).map(|(n, b)| n - b);
    drop(server);
    let _ = Command::new("true").status();
    drop(ns);
    kernel
}

/// ctypes recvmsg and sendmmsg for cmsg comparisons: `raw_recvmsg(s, room,
/// flags, control)` returns (ret, msg_flags, msg_controllen, the cmsgs
/// shown, whether the byte after them is untouched); `control` an address
/// to pass instead of a buffer of ours (an unmapped one). `raw_sendmmsg(s,
/// [(data, [(level, type, bytes)], (host, port))])` returns its result
/// and errno.
pub const CMSG_PY: &str = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
def show(ctl):
    out = []; at = 0
    while len(ctl) - at >= 16:
        ln, lv, ty = struct.unpack_from("Qii", ctl, at)
        data = ctl[at + 16: at + min(ln, len(ctl) - at)]
        if ty in (20, 74) and len(data) >= 4:  # ORIGDSTADDR: the port is the run's
            data = data[:2].hex() + "port" + data[4:].hex()
        else:
            data = data.hex()
        out.append((ln, lv, ty, data))
        at += (ln + 7) // 8 * 8
    return out
def raw_recvmsg(s, room, flags=0, control=None):
    buf = ctypes.create_string_buffer(2048); ctl = ctypes.create_string_buffer(b"\xee" * 512, 512)
    name = ctypes.create_string_buffer(128)
    iov = iovec(ctypes.cast(buf, ctypes.c_void_p), 2048)
    c = control if control is not None else (ctypes.cast(ctl, ctypes.c_void_p) if room >= 0 else None)
    m = msghdr(ctypes.cast(name, ctypes.c_void_p), 128, ctypes.pointer(iov), 1, c, max(room, 0), 0)
    n = libc.recvmsg(s.fileno(), ctypes.byref(m), flags)
    if control is not None:
        return n, m.flags, m.controllen
    return n, m.flags, m.controllen, show(ctl.raw[:m.controllen]), ctl.raw[m.controllen:m.controllen + 4] == b"\xee" * 4
def sockaddr(addr):
    if ":" in addr[0]:
        return struct.pack("HH4s16sI", socket.AF_INET6, socket.htons(addr[1]), b"", socket.inet_pton(socket.AF_INET6, addr[0]), 0)
    return struct.pack("HH4s8s", socket.AF_INET, socket.htons(addr[1]), socket.inet_aton(addr[0]), b"")
def raw_sendmmsg(s, msgs):
    v = (mmsghdr * len(msgs))(); keep = []
    for i, (data, cmsgs, addr) in enumerate(msgs):
        ctl = b"".join(struct.pack("Qii", 16 + len(d), lv, ty) + d + b"\0" * (-len(d) % 8) for lv, ty, d in cmsgs)
        b = ctypes.create_string_buffer(data, len(data)); c = ctypes.create_string_buffer(ctl, max(len(ctl), 1))
        nm = ctypes.create_string_buffer(sockaddr(addr)); iov = iovec(ctypes.cast(b, ctypes.c_void_p), len(data))
        keep += [b, c, nm, iov]
        v[i].hdr = msghdr(ctypes.cast(nm, ctypes.c_void_p), len(nm.raw) - 1, ctypes.pointer(iov), 1,
                          ctypes.cast(c, ctypes.c_void_p) if ctl else None, len(ctl), 0)
    n = libc.sendmmsg(s.fileno(), v, len(msgs), 0)
    return n, (ctypes.get_errno() if n < 0 else 0), [v[i].len for i in range(len(msgs))]
"#;

/// iperf3 -u's "UDP accept" in one process (sweep39 D2: `iperf3 -u -P 2`
/// hung): the server's socket on port P takes a hello and connects to
/// its sender, binds the next socket to P (SO_REUSEADDR) before it
/// answers, then selects on all of them; the next client's hello is the
/// new one's (the kernel gives a connected socket its peer's datagrams
/// only). Three clients, forked before the server binds (a fork would
/// give its sockets to the kernel, decision 49); then each client's data
/// on its connected socket. `udp_accept(host)` prints what it saw and
/// returns the port.
pub const UDP_ACCEPT_PY: &str = r#"
def udp_accept(host):
    REUSE = (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    def bound(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(*REUSE)
        s.bind((host, port)); s.settimeout(10); return s
    to_child, from_parent = os.pipe()
    said, say = os.pipe()
    pid = os.fork()
    if pid == 0:
        port = int(os.read(to_child, 16))
        cs = []
        for i in (1, 2, 3):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(10)
            c.connect((host, port)); c.send(b"hello%d" % i)
            try: os.write(say, b"client %d answer %r\n" % (i, c.recv(100)))
            except OSError as e: os.write(say, b"client %d no answer %s\n" % (i, str(e).encode()))
            cs.append(c)
        for i, c in enumerate(cs, 1):
            c.send(b"data%d" % i)
        os._exit(0)
    listener = bound(0); port = listener.getsockname()[1]
    os.write(from_parent, str(port).encode())
    conns = []
    for i in (1, 2, 3):
        if i > 1:
            r, _, _ = select.select(conns + [listener], [], [], 10)
            print("round", i, "readable:", ["new" if s is listener else "conn%d" % (conns.index(s) + 1) for s in r], flush=True)
        try:
            d, frm = listener.recvfrom(100)
        except OSError as e:
            print("round", i, "the unconnected socket got nothing:", e, flush=True)
            break
        listener.connect(frm)
        nxt = bound(port)   # iperf3's order: the next socket is bound before the answer
        listener.send(b"ack:" + d)
        print("round", i, "got", d, flush=True)
        conns.append(listener); listener = nxt
    for i, c in enumerate(conns, 1):
        try: print("conn%d" % i, "got", c.recv(100), flush=True)
        except OSError as e: print("conn%d" % i, "got nothing:", e, flush=True)
    os.waitpid(pid, 0); os.close(say)
    print(os.read(said, 4096).decode(), end="")
    return port
"#;

/// UDP_SEGMENT (GSO) sends (decision 80), printed for a comparison with
/// kernel UDP: cmsg and socket-option sizes, iovecs cut across segments,
/// a first send that makes the socket ours, a connected send, the
/// kernel's EINVAL and EMSGSIZE; each received datagram's length and
/// bytes. `host` (argv[1]) and `fam` are set by the caller; `SENT` counts
/// the datagrams the receiver gets.
pub const GSO_PY: &str = r#"
SOL_UDP, UDP_SEGMENT, UDP_GRO, SO_NO_CHECK = 17, 103, 104, 11
def gso(n):
    return [(SOL_UDP, UDP_SEGMENT, struct.pack("H", n))]
def drain(r, want):
    got = []
    for _ in range(want):
        if not select.select([r], [], [], 5)[0]:
            break
        got.append(r.recv(70000))
    assert not select.select([r], [], [], 0.05)[0], "more datagrams than the kernel's"
    return got
def show(label, got, data):
    print(label, [len(d) for d in got], b"".join(got) == data)
r = socket.socket(fam, socket.SOCK_DGRAM); r.bind((host, 0)); dst = r.getsockname()[:2]
s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((host, 0))
SENT = 0
for i in range(3):   # the route, shared memory or the kernel's, found
    s.sendto(b"warm", dst); r.recv(100); SENT += 1
for size, n in ((1000, 3000), (1000, 2500), (1000, 800), (1000, 1000), (1, 5), (1000, 64000), (100, 12800), (65000, 65000)):
    data = payload(n, size % 251)
    try:
        print("cmsg", size, n, s.sendmsg([data], gso(size), 0, dst))
    except OSError as e:  # (more than 64 segments, before Linux's 128)
        print("cmsg", size, n, errno.errorcode[e.errno]); continue
    got = drain(r, -(-n // size)); SENT += len(got)
    show("got", got, data)
data = payload(2500, 3)
print("iovecs", s.sendmsg([data[:300], data[300:1700], data[1700:]], gso(600), 0, dst))
got = drain(r, 5); SENT += len(got); show("got", got, data)
s.setsockopt(SOL_UDP, UDP_SEGMENT, 700)
print("option", s.getsockopt(SOL_UDP, UDP_SEGMENT))
data = payload(2000, 5)
print("sendto", s.sendto(data, dst)); got = drain(r, 3); SENT += len(got); show("got", got, data)
print("cmsg over option", s.sendmsg([data], gso(1500), 0, dst)); got = drain(r, 2); SENT += len(got); show("got", got, data)
for label, n, cm in (("129 segments", 12801, gso(100)), ("other SOL_UDP", 100, [(SOL_UDP, UDP_GRO, struct.pack("i", 1))]),
                     ("long UDP_SEGMENT", 100, [(SOL_UDP, UDP_SEGMENT, struct.pack("i", 700))]), ("too long", 70000, [])):
    try:
        print(label, s.sendmsg([bytes(n)], cm, 0, dst))
    except OSError as e:
        print(label, errno.errorcode[e.errno])
s.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
if fam == socket.AF_INET:
    s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    try:
        print("no check", s.sendmsg([bytes(10)], gso(5), 0, dst))
    except OSError as e:
        print("no check", errno.errorcode[e.errno])
    s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 0)
print("plain after", s.sendto(bytes(3000), dst)); got = drain(r, 1); SENT += len(got); show("got", got, bytes(3000))
# A socket whose first send has the cmsg; a connected one with the option.
f = socket.socket(fam, socket.SOCK_DGRAM)
data = payload(3000, 7)
print("first send", f.sendmsg([data], gso(1000), 0, dst)); got = drain(r, 3); SENT += len(got); show("got", got, data)
c = socket.socket(fam, socket.SOCK_DGRAM); c.connect(dst); c.setsockopt(SOL_UDP, UDP_SEGMENT, 1200)
print("connected", c.send(data)); got = drain(r, 3); SENT += len(got); show("got", got, data)
for x in (r, s, f, c):
    x.close()
"#;
