//! UDP in the default mode (issue 16 stage 3, decision 46: SHMNET_FALLBACK
//! unset, `SHMNET_UDP` unset: on by default since decision 65): preloaded
//! programs on loopback reach each other
//! through shared memory, and plain ones through the kernel, per
//! destination, a receiver taking both on one fd. Each script runs twice,
//! preloaded in the default mode, with `SHMNET_UDP=0` (kernel UDP) and
//! with UDP carried, and both runs must print the same lines; run as root, each
//! script moves into a network namespace of its own, where
//! /proc/net/snmp's `Udp: InDatagrams` shows the kernel carried none of
//! the datagrams between preloaded sockets. Payloads are checked byte for
//! byte, and the counters (`udp_*`, docs/counters.md) say the same.

mod common;

use std::io::Write;
use std::process::Command;

use common::udp::{CMSG_PY, GSO_PY, OWN_NETNS, UDP_PRELUDE};
use common::{preloaded, py, stdout_of, Net};

/// The default mode's environment: only SHMNET_DIR, and UDP carried when
/// `udp` (SHMNET_UDP unset: on by default in this mode, decision 65),
/// else `SHMNET_UDP=0`.
fn default_env<'a>(net: &Net, cmd: &'a mut Command, udp: bool) -> &'a mut Command {
    cmd.env_remove("SHMNET_FALLBACK")
        .env_remove("SHMNET_PARTITIONS")
        .env("SHMNET_DIR", net.shm_dir());
    if udp {
        cmd.env_remove("SHMNET_UDP")
    } else {
        cmd.env("SHMNET_UDP", "0")
    }
}

/// Runs `body` with argv[1] the test's loopback host, preloaded in the
/// default mode, over kernel UDP ("kernel") and with UDP carried
/// ("library"); the outputs must be the same. Returns the library's
/// output and its counters (`udp_*`).
fn default_as_kernel(name: &str, body: &str) -> (String, std::collections::HashMap<String, u64>) {
    let net = Net::loopback(name);
    let run = |mode: &str| {
        let script = format!("{UDP_PRELUDE}{OWN_NETNS}MODE = {mode:?}\n{body}");
        let mut cmd = py(&script, &[&net.host_str()]);
        default_env(&net, &mut cmd, mode == "library");
        stdout_of(&format!("{name} ({mode})"), &mut cmd)
    };
    let kernel = run("kernel");
    let library = run("library");
    // Said before the comparison: a failure's counters (udp_dropped) are
    // its first clue.
    let counters = common::stats::read(&net.shm_dir());
    let _ = writeln!(
        std::io::stderr(),
        "{name}: udp_shm {:?} udp_kernel {:?} udp_dropped {:?} udp_shm_routes {:?}",
        counters.get("udp_shm"),
        counters.get("udp_kernel"),
        counters.get("udp_dropped"),
        counters.get("udp_shm_routes")
    );
    assert_eq!(library, kernel, "{name}: the library vs kernel UDP");
    if common::host::is_root() {
        assert!(library.contains("counted: True"), "{name}: {library}");
    }
    (library, counters)
}

/// The script helpers of this file: a plain (not preloaded) Python.
const PLAIN: &str = r#"
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
def plain(code, *args):
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                            stdout=subprocess.PIPE, text=True)
def kernel_datagrams():
    # IPv4's and IPv6's (/proc/net/snmp6).
    l = [x.split() for x in open("/proc/net/snmp") if x.startswith("Udp:")]
    v6 = [x.split() for x in open("/proc/net/snmp6") if x.startswith("Udp6InDatagrams")]
    return int(dict(zip(l[0][1:], l[1][1:]))["InDatagrams"]) + int(v6[0][1])
"#;

/// Preloaded to preloaded on 127.x and ::1, every size (through shared
/// memory: the kernel counts none of it); a plain client to a preloaded
/// server and a preloaded client to a plain server (the kernel's, bytes
/// and order checked); replies come from the address the client sent to.
#[test]
fn preloaded_and_plain_peers_in_every_combination() {
    let body = r#"
host = sys.argv[1]
def server(fam, addr):
    srv = socket.socket(fam, socket.SOCK_DGRAM)
    srv.bind(addr)
    def serve():
        while True:
            d, a = srv.recvfrom(70000)
            if d == b"stop":
                return
            srv.sendto(d[::-1], a)
    t = threading.Thread(target=serve, daemon=True); t.start()
    return srv, t
for fam, h in ((socket.AF_INET, host), (socket.AF_INET6, "::1")):
    srv, t = server(fam, (h, 0))
    port = srv.getsockname()[1]
    before = kernel_datagrams()
    c = socket.socket(fam, socket.SOCK_DGRAM)
    for n in (0, 1, 1472, 8192, 65507):
        d = payload(n, n % 251)
        assert c.sendto(d, (h, port)) == n
        got, a = c.recvfrom(70000)
        assert got == d[::-1], (n, len(got))
        print(fam.name, n, "bytes back from", a[0] == h, a[1] == port)
    expect_kernel(before, 0, 10)
    # A plain client: 50 numbered datagrams, answered in order.
    before = kernel_datagrams()
    p = plain(f"""
import socket, sys
s = socket.socket(socket.{fam.name}, socket.SOCK_DGRAM); s.settimeout(10)
for i in range(50):
    d = bytes((i * 7 + j) & 0xff for j in range(i * 20))
    s.sendto(d, ({h!r}, {port}))
    got, a = s.recvfrom(70000)
    assert got == d[::-1] and a[1] == {port}, i
print("plain client ok")
""")
    print(fam.name, p.stdout.read().strip(), p.wait())
    expect_kernel(before, 100, 100)
    c.sendto(b"stop", (h, port)); t.join(); srv.close()
    # A plain server, a preloaded client (connected and not).
    p = plain(f"""
import socket
s = socket.socket(socket.{fam.name}, socket.SOCK_DGRAM); s.bind(({h!r}, 0))
print(s.getsockname()[1], flush=True)
while True:
    d, a = s.recvfrom(70000)
    if d == b"stop": break
    s.sendto(b"plain:" + d, a)
""")
    pport = int(p.stdout.readline())
    before = kernel_datagrams()
    for n in (0, 1472, 65000):
        d = payload(n, 3)
        c.sendto(d, (h, pport))
        got, a = c.recvfrom(70000)
        assert got == b"plain:" + d, n
    k = socket.socket(fam, socket.SOCK_DGRAM)
    k.connect((h, pport)); k.send(b"connected")
    print(fam.name, "plain server:", k.recv(100), a[1] == pport)
    expect_kernel(before, 8, 8)
    k.send(b"stop"); p.wait()
print("combinations ok, kernel datagrams counted:", COUNTED)
"#;
    let body = format!("{PLAIN}{body}");
    let (out, counters) = default_as_kernel("udpdef_combinations", &body);
    assert!(out.contains("combinations ok"), "{out}");
    assert_eq!(out.matches("plain client ok").count(), 2, "{out}");
    // 2 x (5 + 5) between preloaded sockets, and 2 stops.
    assert!(counters["udp_shm"] >= 22, "{counters:?}");
    // To the plain peers: 2 x (50 replies + 3); the connected socket's 2
    // are the kernel's own, uncounted (its destination was found held by
    // nobody just before: decision 63).
    assert!(counters["udp_kernel"] >= 106, "{counters:?}");
    assert!(counters["udp_shm_routes"] >= 4, "{counters:?}");
}

/// A receiver bound to the wildcard address (and one to 127.x) takes a
/// preloaded sender's datagrams (shared memory) and a plain sender's (the
/// kernel) at once on one fd, every datagram whole and each sender's in
/// order; the preloaded sender starts before the receiver is bound (its
/// kernel route is asked again) and the receiver finds both kinds.
#[test]
fn one_fd_receives_from_both_kinds_of_sender_at_once() {
    let body = r#"
host = sys.argv[1]
N = 300
for bind_host in ("0.0.0.0", host):
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    srv.bind((bind_host, 0))
    port = srv.getsockname()[1]
    before = kernel_datagrams()
    sender = f"""
import socket, sys, time
name = sys.argv[1].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range({N}):
    body = bytes((i * 13 + j) & 0xff for j in range(i % 1400))
    s.sendto(name + b"|%d|" % i + body, ({host!r}, {port}))
    if i % 25 == 24:
        time.sleep(0.002)
"""
    p = plain(sender, "plain")
    pre = subprocess.Popen([sys.executable, "-c", sender, "preloaded"])
    last = {}
    got = 0
    srv.settimeout(10)
    while got < 2 * N:
        d, a = srv.recvfrom(70000)
        name, i, body = d.split(b"|", 2)
        i = int(i)
        assert body == bytes((i * 13 + j) & 0xff for j in range(i % 1400)), (name, i)
        assert i > last.get(name, -1), (name, i, last.get(name))
        last[name] = i
        got += 1
    p.wait(); pre.wait()
    print(bind_host == host, "received", got, sorted(last.items()))
    expect_kernel(before, N, 2 * N)
    srv.close()
print("both kinds ok, kernel datagrams counted:", COUNTED)
"#;
    let body = format!("{PLAIN}{body}");
    let (out, counters) = default_as_kernel("udpdef_both_kinds", &body);
    assert!(out.contains("both kinds ok"), "{out}");
    assert!(counters["udp_shm"] >= 600, "{counters:?}");
}

/// The kernel owns the ports: a bind to a port a plain program holds
/// (on the address, or on the wildcard) is EADDRINUSE, and so is the
/// plain program's bind to a port a preloaded socket holds; ephemeral
/// ports are the kernel's (/proc/net/udp shows them); SO_REUSEADDR on
/// both shares a port, as the kernel lets it.
#[test]
fn ports_are_the_kernels() {
    let body = r#"
host = sys.argv[1]
def try_bind(s, addr):
    try:
        s.bind(addr); return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
for fam, h, any_ in ((socket.AF_INET, host, "0.0.0.0"), (socket.AF_INET6, "::1", "::")):
    for held_at in (h, any_):
        p = plain(f"""
import socket, sys
s = socket.socket(socket.{fam.name}, socket.SOCK_DGRAM); s.bind(({held_at!r}, 0))
print(s.getsockname()[1], flush=True); import time; time.sleep(60)
""")
        port = int(p.stdout.readline())
        s = socket.socket(fam, socket.SOCK_DGRAM)
        print(fam.name, "plain holder on", held_at == h, try_bind(s, (h, port)))
        s.close(); p.kill(); p.wait()
    # A preloaded holder: a plain bind is refused.
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((h, 0)); port = s.getsockname()[1]
    print(fam.name, "ephemeral port in /proc/net/udp:", port in kernel_udp_ports())
    r = subprocess.run([sys.executable, "-c", f"""
import socket, errno
s = socket.socket(socket.{fam.name}, socket.SOCK_DGRAM)
try:
    s.bind(({h!r}, {port})); print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
"""], env=env, capture_output=True, text=True)
    print(fam.name, "plain bind on a preloaded holder:", r.stdout.strip())
    s2 = socket.socket(fam, socket.SOCK_DGRAM)
    print(fam.name, "second preloaded bind:", try_bind(s2, (h, port)))
    s.close(); s2.close()
    a = socket.socket(fam, socket.SOCK_DGRAM); b = socket.socket(fam, socket.SOCK_DGRAM)
    for x in (a, b):
        x.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    a.bind((h, 0))
    print(fam.name, "SO_REUSEADDR on both:", try_bind(b, (h, a.getsockname()[1])))
    a.close(); b.close()
print("ports ok, kernel datagrams counted:", COUNTED)
"#;
    let body = format!("{PLAIN}{body}");
    let (out, _) = default_as_kernel("udpdef_ports", &body);
    assert!(out.contains("ports ok"), "{out}");
    assert_eq!(out.matches("EADDRINUSE").count(), 8, "{out}");
}

/// Connected UDP in the default mode: a send to a port nobody holds
/// leaves ECONNREFUSED for the next call (the kernel's); a receiver bound
/// there afterwards gets the next datagram (through shared memory when
/// preloaded); getsockname after connect is the kernel's; a connected
/// socket receives from its peer only; dissolved (AF_UNSPEC), it sends
/// anywhere and gets the answers.
#[test]
fn connected_sockets_and_econnrefused() {
    let body = r#"
host = sys.argv[1]
gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
gone.bind((host, 0)); gport = gone.getsockname()[1]; gone.close()
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.connect((host, gport))
print("connected from", r.getsockname()[0])
r.send(b"x")
try:
    r.recv(10); print("no error")
except ConnectionRefusedError:
    print("refused")
late = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
late.bind((host, gport))
before = kernel_datagrams()
r.send(b"late")
d, a = late.recvfrom(100)
print("late receiver:", d, a == r.getsockname())
other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
other.sendto(b"not the peer", r.getsockname())
late.sendto(b"from the peer", a)
print("connected receives:", r.recv(100))
# "late" goes through the kernel while its kernel route is not asked
# again yet (10 ms after the refused send: ECONNREFUSED does not hurry
# it, the late receiver's kernel socket takes it), through shared memory
# after; "not the peer" through shared memory.
n = kernel_datagrams() - before
assert not COUNTED or (n == 2 if MODE == "kernel" else n <= 1), (MODE, n)
r.connect((host, gport))
r.setblocking(False)
try:
    print("left over:", r.recv(100))
except BlockingIOError:
    print("nothing else")
r.setblocking(True)
# Dissolved (AF_UNSPEC): it sends anywhere and receives the answers.
import ctypes
class SA(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_char * 14)]
libc = ctypes.CDLL(None, use_errno=True)
print("dissolve:", libc.connect(r.fileno(), ctypes.byref(SA(socket.AF_UNSPEC)), ctypes.sizeof(SA)))
for i in range(3):
    r.sendto(b"after dissolve %d" % i, (host, gport))
    d, a = late.recvfrom(100)
    late.sendto(d.upper(), a)
    print(r.recvfrom(100)[0])
print("connected ok, kernel datagrams counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_connected", body);
    assert!(out.contains("refused"), "{out}");
    assert!(out.contains("late receiver: b'late' True"), "{out}");
    assert!(
        out.contains("connected receives: b'from the peer'"),
        "{out}"
    );
}

/// iperf3 -u's "UDP accept" in one process, in the default mode (sweep39
/// D2: `iperf3 -u -P 2` hung): new senders' datagrams reach the
/// unconnected socket sharing a connected one's port, as the kernel's,
/// and select does not say the connected one is readable for them.
#[test]
fn new_senders_reach_the_unconnected_socket_sharing_a_connected_ones_port_by_default() {
    let body = format!(
        "{}{}",
        common::udp::UDP_ACCEPT_PY,
        r#"
udp_accept(sys.argv[1])
print("udp accept ok, kernel datagrams counted:", COUNTED)
"#
    );
    let (out, counters) = default_as_kernel("udpdef_accept", &body);
    assert!(out.contains("round 3 readable: ['new']"), "{out}");
    assert!(out.contains("conn3 got b'data3'"), "{out}");
    // The clients' hellos and data through shared memory, none dropped.
    assert!(counters["udp_shm"] >= 6, "{counters:?}");
    assert_eq!(counters["udp_dropped"], 0, "{counters:?}");
}

/// iperf3 -u both ways in the default mode, both ends preloaded (the
/// server with -B: without it, its UDP replies come from 127.0.0.1, which
/// a client connected to another 127.x address drops, kernel UDP too):
/// every datagram counted by the receiver, and the counters say shared
/// memory carried them.
#[test]
fn iperf3_udp_both_ways_in_the_default_mode() {
    if Command::new("iperf3").arg("--version").output().is_err() {
        common::missing_program("iperf3_udp_both_ways_in_the_default_mode", "iperf3");
        return;
    }
    let net = Net::loopback("udpdef_iperf3");
    // -P 2 and 4: iperf3's "UDP accept" shares the port (sweep39 D2:
    // they hung).
    for (reverse, streams) in [(false, 1), (true, 1), (false, 2), (true, 4)] {
        let mut server = preloaded("iperf3");
        server.args(["-s", "-1", "-B", &net.host_str(), "-p", &net.port_str()]);
        default_env(&net, &mut server, true);
        let server = common::Background::spawn(&mut server);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut client = preloaded("iperf3");
        client.args(["-u", "-c", &net.host_str(), "-p", &net.port_str()]);
        client.args(["-t", "1", "-b", "50M", "-l", "1200", "--json"]);
        client.args(["-P", &streams.to_string()]);
        if reverse {
            client.arg("-R");
        }
        default_env(&net, &mut client, true);
        let out = stdout_of("iperf3 -u client", &mut client);
        drop(server);
        let field = |name: &str| {
            out.split("\"sum\":")
                .last()
                .and_then(|s| s.split(&format!("\"{name}\":")).nth(1))
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let (packets, lost) = (field("packets"), field("lost_packets"));
        let _ = writeln!(
            std::io::stderr(),
            "datagrams_default.rs: iperf3 -u -P {streams}{}: {packets:?} datagrams, {lost:?} lost",
            if reverse { " -R" } else { "" }
        );
        assert!(packets.is_some_and(|p| p > 0), "{out}");
    }
    let counters = common::stats::read(&net.shm_dir());
    let _ = writeln!(std::io::stderr(), "iperf3 counters: {counters:?}");
    assert!(counters["udp_shm"] > 1000, "{counters:?}");
    assert!(counters["udp_shm_routes"] >= 2, "{counters:?}");
}

/// dnsmasq (a hosts file, on 127.x with --bind-interfaces) asked by dig,
/// both preloaded in the default mode: every answer right, each query
/// through shared memory (the counters), and a plain dig gets the same
/// answers through the kernel.
#[test]
fn dnsmasq_answers_preloaded_and_plain_dig() {
    let dnsmasq = std::path::Path::new("/usr/sbin/dnsmasq");
    if !dnsmasq.exists() || Command::new("dig").arg("-v").output().is_err() {
        common::missing_program("dnsmasq_answers_preloaded_and_plain_dig", "dnsmasq or dig");
        return;
    }
    let net = Net::loopback("udpdef_dnsmasq");
    let [a, b, c] = net.v4().octets()[..3].try_into().unwrap();
    let hosts = net.dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("{a}.{b}.{c}.55 alpha.test\n{a}.{b}.{c}.66 beta.test\n"),
    )
    .unwrap();
    let mut server = preloaded(dnsmasq);
    server.args(["-d", "-C", "/dev/null", "--no-resolv", "--no-hosts"]);
    server.arg(format!("--addn-hosts={}", hosts.display()));
    server.args(["-p", &net.port_str(), "--bind-interfaces"]);
    server.arg(format!("--listen-address={}", net.host));
    if common::host::is_root() {
        server.args(["-u", "root"]);
    }
    default_env(&net, &mut server, true);
    let _server = common::Background::spawn(&mut server);
    let dig = |name: &str, preload: bool| {
        let mut cmd = if preload {
            preloaded("dig")
        } else {
            Command::new("dig")
        };
        cmd.arg(format!("@{}", net.host))
            .args(["-p", &net.port_str(), name]);
        cmd.args(["+short", "+tries=1", "+time=3"]);
        default_env(&net, &mut cmd, true);
        common::run(&mut cmd).stdout.trim().to_string()
    };
    let want = format!("{a}.{b}.{c}.55");
    let mut first = String::new();
    for _ in 0..50 {
        first = dig("alpha.test", true);
        if first == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(first, want);
    let before = common::stats::read(&net.shm_dir());
    for i in 0..20 {
        let (name, ip) = if i % 2 == 0 {
            ("alpha.test", 55)
        } else {
            ("beta.test", 66)
        };
        let want = format!("{a}.{b}.{c}.{ip}");
        assert_eq!(dig(name, true), want, "preloaded query {i}");
        assert_eq!(dig(name, false), want, "plain query {i}");
    }
    let after = common::stats::read(&net.shm_dir());
    let _ = writeln!(std::io::stderr(), "dnsmasq counters: {after:?}");
    // 20 preloaded queries (dig's, through shared memory, counted at its
    // exit); dnsmasq's answers are counted a second at most after.
    assert!(after["udp_shm"] - before["udp_shm"] >= 20, "{after:?}");
}

/// Decision 62, the default mode: a preloaded wildcard server asking
/// IP_PKTINFO, IP_RECVTTL and SO_TIMESTAMPNS gets the same cmsgs from a
/// preloaded sender (made from shared memory) and from a plain one (the
/// kernel's own, taken with the datagram from its kernel socket) as over
/// kernel UDP; its IP_PKTINFO answers reach both.
#[test]
fn cmsgs_from_both_kinds_of_sender_as_kernel_udp() {
    let body = r#"
host = sys.argv[1]
import subprocess
#PLAIN#
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind(("0.0.0.0", 0)); port = srv.getsockname()[1]
for o in (8, 12):  # IP_PKTINFO, IP_RECVTTL
    srv.setsockopt(socket.IPPROTO_IP, o, 1)
srv.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
code = """
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
for i in range(3):
    c.sendto(b"q%d" % i, (sys.argv[1], int(sys.argv[2])))
    d, a = c.recvfrom(100)
    print(d.decode(), a[0], a[1] == int(sys.argv[2]), flush=True)
"""
def serve(n):
    for _ in range(n):
        select.select([srv], [], [], 5)
        d, anc, fl, a = srv.recvmsg(100, 256)
        shown = []
        for lv, ty, data in anc:
            if (lv, ty) == (socket.SOL_SOCKET, 35):
                sec, ns = struct.unpack("qq", data)
                shown.append((lv, ty, abs(sec - time.time()) < 60 and 0 <= ns < 10**9))
            else:
                shown.append((lv, ty, data.hex()))
        print("got", d, fl, shown)
        info = [x for x in anc if x[:2] == (socket.IPPROTO_IP, 8)][0][2]
        srv.sendmsg([b"re-" + d], [(socket.IPPROTO_IP, 8, b"\0" * 4 + info[8:12] + b"\0" * 4)], 0, a)
for who, dest in (("preloaded", host), ("plain", host), ("preloaded", "127.0.0.1"), ("plain", "127.0.0.1")):
    if who == "plain":
        p = plain(code, dest, str(port))
    else:
        p = subprocess.Popen([sys.executable, "-c", code, dest, str(port)], stdout=subprocess.PIPE, text=True)
    serve(3)
    print(who, dest == host, p.communicate()[0].split("\n"))
print("both kinds ok, kernel datagrams counted:", COUNTED)
"#;
    let body = body.replace(PLAIN_MARK, PLAIN);
    let (out, _) = default_as_kernel("udpdef_cmsgs", &body);
    assert!(out.contains("both kinds ok"), "{out}");
}

const PLAIN_MARK: &str = "#PLAIN#";

/// Decision 62: dnsmasq in its default configuration (wildcard sockets
/// asking IP_PKTINFO, answers sent with IP_PKTINFO) in the default mode:
/// 100 preloaded dig queries, all answered through shared memory (as
/// root: the kernel carried none of them, /proc/net/snmp in a namespace
/// of their own; the counters).
#[test]
fn dnsmasq_default_config_answers_through_shared_memory() {
    let dnsmasq = std::path::Path::new("/usr/sbin/dnsmasq");
    if !dnsmasq.exists() || Command::new("dig").arg("-v").output().is_err() {
        common::missing_program("dnsmasq_default_config", "dnsmasq or dig");
        return;
    }
    let net = Net::loopback("udpdef_dnsmasq_wild");
    let before = common::stats::read(&net.shm_dir());
    let kernel = common::udp::dnsmasq_wildcard(&net, 100, |cmd| {
        default_env(&net, cmd, true);
    });
    let after = common::stats::read(&net.shm_dir());
    let _ = writeln!(
        std::io::stderr(),
        "dnsmasq: kernel {kernel:?}, counters {after:?}"
    );
    assert_eq!(kernel.unwrap_or(0), 0, "datagrams the kernel carried");
    // dig's queries, counted at its exit (dnsmasq's answers are added a
    // second at most after, at a later send: not all by now).
    let shm = after["udp_shm"] - before.get("udp_shm").copied().unwrap_or(0);
    assert!(shm >= 100, "{after:?}");
}

/// A preloaded receiver (receiving in a thread) bound after a preloaded
/// sender began sending to its port (a kernel route, then): it receives
/// every datagram sent
/// after its bind (the kernel carries to its kernel socket until the
/// sender asks again and finds the name), and shared memory carries the
/// rest (the counters; as root, the kernel's count is below the total).
#[test]
fn a_receiver_bound_later_is_found() {
    let body = r#"
host = sys.argv[1]
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.bind((host, 0)); port = probe.getsockname()[1]; probe.close()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):
    s.sendto(b"early %d" % i, (host, port))   # nobody there
    time.sleep(0.005)
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
srv.bind((host, port))
before = kernel_datagrams()
N = 400
got = set()
def receive():
    srv.settimeout(5)
    while len(got) < N:
        d = srv.recv(2000)
        i = int(d.split(b" ")[1])
        assert d == b"late %d " % i + payload(i % 700, i % 251), i
        got.add(i)
t = threading.Thread(target=receive); t.start()
for i in range(N):
    s.sendto(b"late %d " % i + payload(i % 700, i % 251), (host, port))
    time.sleep(0.005)
t.join()
n = kernel_datagrams() - before
print("received all", len(got) == N)
if COUNTED and MODE == "library":
    assert n < N, n
print("found, kernel datagrams counted:", COUNTED)
"#;
    let (out, counters) = default_as_kernel("udpdef_found_later", body);
    assert!(out.contains("received all True"), "{out}");
    assert!(counters["udp_shm"] >= 1, "{counters:?}");
    assert!(counters["udp_shm_routes"] >= 1, "{counters:?}");
}

/// Senders and receivers of different users (review udpdef16, users2.py:
/// a sender of uid 65534 to a root receiver lost every datagram, the
/// receiver's policy closing its link and the sender asking again and
/// again): a refused sender goes through the kernel, as it would have,
/// and datagrams sent before the receiver's answer are not lost (a sender
/// that cannot know it is admitted sends through the kernel until
/// REG_OK). Every pair of root / 65534, echoed byte for byte. A root
/// receiver refuses a uid 65534 sender at its accept, often before the
/// sender's REG is written: that REG's EPIPE lost the first datagram
/// about one run in four (session 33) until it was read as the refusal
/// it is (session 34).
#[test]
fn senders_a_receiver_refuses_go_through_the_kernel() {
    if common::host::skip_unless_root("senders_a_receiver_refuses_go_through_the_kernel") {
        return;
    }
    let body = r#"
host = sys.argv[1]
def in_child(uid, fn):
    # A forked child of user `uid` (os.setuid: the preloaded library
    # stays) runs fn(write end of a pipe); returns (pid, read end).
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            if uid:
                os.setgroups([]); os.setgid(uid); os.setuid(uid)
            fn(wr)
        finally:
            os._exit(0)
    os.close(wr)
    return pid, rd
def echo(wr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
    os.write(wr, str(s.getsockname()[1]).encode().ljust(8))
    while True:
        d, a = s.recvfrom(2000); s.sendto(d, a)
def sender(port):
    def run(wr):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        ok = 0
        for i in range(10):
            m = b"%d " % i + bytes(range(256)) * (i % 5)
            s.sendto(m, (host, port))
            try: ok += s.recv(2000) == m
            except OSError: pass
        os.write(wr, str(ok).encode())
    return run
for ru, su in ((0, 65534), (65534, 0), (65534, 65534), (0, 0)):
    rp, rd = in_child(ru, echo)
    try:
        port = int(os.read(rd, 8))
        sp, sd = in_child(su, sender(port))
        out = os.read(sd, 8).decode(); os.waitpid(sp, 0)
    finally:
        os.kill(rp, 9); os.waitpid(rp, 0)
    print("receiver uid", ru, "sender uid", su, "echoed", out, "of 10")
print("counted:", COUNTED)
"#;
    let (out, counters) = default_as_kernel("udpdef_users", body);
    assert_eq!(out.matches("echoed 10 of 10").count(), 4, "{out}");
    assert!(counters["udp_shm"] >= 1, "{counters:?}");
}

/// A UDP socket shared by processes is one socket, as the kernel's
/// (decision 49): a fork server whose parent keeps the socket while a
/// child receives (socat `UDP-RECVFROM:...,fork`: the parent peeks, forks,
/// the child reads that datagram), pre-forked workers all receiving on one
/// inherited socket (each datagram answered exactly once, including one
/// queued in shared memory before the fork), Python's ForkingUDPServer,
/// and a socket inherited across execve by a server while a forked child
/// still holds it. Preloaded and plain clients; outputs as kernel UDP's.
#[test]
fn fork_servers_and_exec_share_one_socket() {
    if Command::new("socat").arg("-V").output().is_err() {
        common::missing_program("fork_servers_and_exec_share_one_socket", "socat");
        return;
    }
    let body = r#"
import socketserver
host = sys.argv[1]
def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
    p = s.getsockname()[1]; s.close(); return p
def ask(port, msgs, plain_client):
    # One client socket; each message waits for its answers (1 s).
    code = f"""
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(1)
out = []
for m in sys.argv[1:]:
    c.sendto(m.encode(), ({host!r}, {port}))
    got = []
    try:
        while True:
            got.append(c.recv(100).decode())
            c.settimeout(0.2)
    except OSError:
        pass
    c.settimeout(1)
    out.append(m + "=" + ",".join(sorted(got)))
print(" ".join(out))
"""
    r = subprocess.run([sys.executable, "-c", code, *msgs], env=env if plain_client else None,
                       capture_output=True, text=True)
    return r.stdout.strip()

# socat's fork server: echo through `EXEC:cat`.
port = free_port()
srv = subprocess.Popen(["socat", f"UDP-RECVFROM:{port},bind={host},fork", "EXEC:cat"])
for _ in range(50):
    r = subprocess.run(["socat", "-T", "1", "-", f"UDP:{host}:{port}"], input="ready\n",
                       capture_output=True, text=True, timeout=10)
    if r.stdout == "ready\n":
        break
for plain_client in (False, True):
    for i in range(3):
        r = subprocess.run(["socat", "-T", "2", "-", f"UDP:{host}:{port}"], input=f"m{i}\n",
                           env=env if plain_client else None, capture_output=True, text=True,
                           timeout=10)
        print("socat fork", "plain" if plain_client else "preloaded", repr(r.stdout))
srv.kill(); srv.wait()

# Pre-forked workers on one socket; a datagram queued before the fork.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
port = s.getsockname()[1]
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.sendto(b"early", (host, port))
time.sleep(0.2)
kids = []
for k in range(3):
    pid = os.fork()
    if pid == 0:
        while True:
            d, a = s.recvfrom(100)
            s.sendto(d.upper(), a)
    kids.append(pid)
s.close()
print("prefork early:", c.recv(100))
for plain_client in (False, True):
    print("prefork", "plain" if plain_client else "preloaded",
          ask(port, ["w%d" % i for i in range(10)], plain_client))
for k in kids:
    os.kill(k, 9); os.waitpid(k, 0)

# ForkingUDPServer: the parent receives, a child per request answers.
class H(socketserver.BaseRequestHandler):
    def handle(self):
        d, sock = self.request
        sock.sendto(d.upper(), self.client_address)
fs = socketserver.ForkingUDPServer((host, 0), H)
threading.Thread(target=fs.serve_forever, daemon=True).start()
for plain_client in (False, True):
    print("forking", "plain" if plain_client else "preloaded",
          ask(fs.server_address[1], ["f%d" % i for i in range(3)], plain_client))
fs.shutdown(); fs.server_close()

# Inherited across execve by a server, while a forked child holds it too.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
port = s.getsockname()[1]
s.set_inheritable(True)
holder = os.fork()
if holder == 0:
    time.sleep(60); os._exit(0)
server = os.fork()
if server == 0:
    os.execv(sys.executable, [sys.executable, "-c", f"""
import socket
s = socket.socket(fileno={s.fileno()})
while True:
    d, a = s.recvfrom(100); s.sendto(d.upper(), a)
"""])
s.close()
for plain_client in (False, True):
    print("exec", "plain" if plain_client else "preloaded",
          ask(port, ["e%d" % i for i in range(3)], plain_client))
for k in (holder, server):
    os.kill(k, 9); os.waitpid(k, 0)
print("counted:", COUNTED)
"#;
    let body = format!("{PLAIN}{body}");
    let (out, _) = default_as_kernel("udpdef_shared", &body);
    assert_eq!(out.matches("'m").count(), 6, "{out}");
    assert!(out.contains("prefork early: b'EARLY'"), "{out}");
    for w in 0..10 {
        assert_eq!(
            out.matches(&format!("w{w}=W{w} ")).count()
                + out.matches(&format!("w{w}=W{w}\n")).count(),
            2,
            "{out}"
        );
    }
    assert_eq!(out.matches("f2=F2").count(), 2, "{out}");
    assert_eq!(out.matches("e2=E2").count(), 2, "{out}");
}

/// The test scripts' receivers of a restart: forked by a *spawner*, a
/// process forked before the sender's socket exists, so no fork shares
/// that socket (decision 49 gives a socket a fork shares back to the
/// kernel for good: forking the receivers from the sender's process made
/// its socket the kernel's, and the test then proved nothing about shared
/// memory, review udploss16). `start(port, how)` starts a receiver and
/// returns (pid, port); `result()` reads a receiver's last line: the
/// datagrams it got, sorted, and how many came before one sent earlier
/// by the same sender (inversions).
const SPAWNER: &str = r#"
import ctypes, signal
out_r, out_w = os.pipe()
cmd_r, cmd_w = os.pipe()
def receiver(port, how, init_ms):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    os.write(out_w, b"%d %d\n" % (os.getpid(), s.getsockname()[1]))
    # A late reader reads without waiting (each receive then reads the
    # links first, and takes what they bring before the kernel's).
    time.sleep(init_ms / 1000)
    s.setblocking(init_ms == 0)
    order = []
    while True:
        try: d = s.recv(100)
        except BlockingIOError:
            time.sleep(0.001); continue
        if d == b"quit":
            if how == "close": s.close()
            if how == "exit": ctypes.CDLL(None).exit(0)
            os._exit(0)
        if d == b"end": break
        order.append(int(d))
    s.setblocking(False)
    try:
        while True:
            d = s.recv(100)
            if d not in (b"end", b"quit"): order.append(int(d))
    except BlockingIOError: pass
    inv = sum(1 for a, b in zip(order, order[1:]) if b < a)
    os.write(out_w, (" ".join(map(str, sorted(set(order)))) + " inversions %d\n" % inv).encode())
sp = os.fork()
if sp == 0:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # receivers reaped by the kernel
    os.close(cmd_w); os.close(out_r)
    for line in os.fdopen(cmd_r):
        port, how, init_ms = line.split()
        if os.fork() == 0:
            try: receiver(int(port), how, int(init_ms))
            finally: os._exit(0)
    os._exit(0)
os.close(cmd_r); os.close(out_w)
out = os.fdopen(out_r)
def start(port, how, init_ms=0):
    os.write(cmd_w, b"%d %s %d\n" % (port, how.encode(), init_ms))
    pid, port = map(int, out.readline().split())
    return pid, port
def alive(pid):
    try: os.kill(pid, 0); return True
    except ProcessLookupError: return False
def result():
    *got, _, inv = out.readline().split()
    return set(map(int, got)), int(inv)
"#;

/// A receiver that ends and a new one bound to the same port (a restarted
/// server): every datagram sent after the new bind reaches it, in the
/// order sent, as from the kernel, whichever way the old one ended:
/// killed asleep in its receive, `_exit` while awake (its ring stops
/// moving), libc's exit, or a close. Before, the sender routed to the
/// dead receiver's segment until its next look at the link, a second
/// later: all 300 sent after the new bind were lost (session 34). The
/// receivers are forked before the sender's socket exists (`SPAWNER`), so
/// that socket stays emulated, and each case shows shared memory carried
/// most of its datagrams (`udp_shm`, one run per case).
#[test]
fn a_restarted_receiver_gets_what_is_sent_after_its_bind() {
    let body = r#"
N = 300
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seq = 0
def send():
    global seq
    tx.sendto(b"%d" % seq, (host, port)); seq += 1
    time.sleep(0.001)
a, port = start(0, HOW)
for _ in range(50): send()
if HOW == "kill":
    os.kill(a, signal.SIGKILL)
# Until it exits (a quit lost to a dead route must not hang us).
while alive(a):
    if HOW != "kill": tx.sendto(b"quit", (host, port))
    time.sleep(0.01)
# 20 more while no socket holds the port (lost, as the kernel loses them):
# a receiver that died awake is noticed within 2 ms of the first datagram
# it leaves untaken, and one sent to it before a new bind in that time is
# lost (decision 50, left).
for _ in range(20): send()
os.write(cmd_w, b"%d end 0\n" % port)
# Sending on while the new receiver binds; `mark`: the first datagram
# sent after its bind.
while not select.select([out_r], [], [], 0)[0]:
    send()
b, again = map(int, out.readline().split())
assert again == port
mark = seq
for _ in range(N): send()
while not select.select([out_r], [], [], 0.01)[0]:
    tx.sendto(b"end", (host, port))
got, inv = result()
lost = [i for i in range(mark, mark + N) if i not in got]
print("receiver ended by", HOW, "lost after the new bind", len(lost), lost[:3], "inversions", inv)
print("counted:", COUNTED)
"#;
    for how in ["kill", "_exit", "exit", "close"] {
        let script = format!("host = sys.argv[1]\nHOW = {how:?}\n{SPAWNER}{body}");
        let (out, counters) = default_as_kernel(&format!("udpdef_restart_{how}"), &script);
        assert!(
            out.contains("lost after the new bind 0 [] inversions 0"),
            "{how}: {out}"
        );
        // 350 and more sent: most through shared memory.
        assert!(counters["udp_shm"] >= 300, "{how}: {counters:?}");
    }
}

/// A sender that streams to a port before its receiver binds it (a kernel
/// route), then finds the receiver's name and registers (shared memory):
/// the receiver, reading only after the switch, got the datagrams the
/// sender put in shared memory before those the kernel had queued
/// (review udploss16, late.py: 100 - 170 inversions; the kernel keeps
/// one sender's order). Now what the kernel socket holds when a sender
/// registers is received first.
#[test]
fn a_sender_that_moves_from_the_kernel_to_shared_memory_keeps_its_order() {
    let body = r#"
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); probe.bind((host, 0))
port = probe.getsockname()[1]; probe.close()
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# 200 before the receiver binds (its kernel route asked again less often
# each time), then 1.2 s more: the route moves to shared memory within a
# second of the bind, and the receiver reads only 1.5 s after it, when
# both the kernel socket and shared memory hold some.
bound = None
i = 0
while bound is None or time.monotonic() < bound + 1.2:
    tx.sendto(b"%d" % i, (host, port))
    if i == 200: os.write(cmd_w, b"%d end 1500\n" % port)
    if i > 200 and bound is None and select.select([out_r], [], [], 0)[0]:
        out.readline(); bound = time.monotonic()
    i += 1
    time.sleep(0.0005)
while not select.select([out_r], [], [], 0.05)[0]:
    tx.sendto(b"end", (host, port))
got, inv = result()
print("bound while sending:", bound is not None, "inversions", inv)
print("counted:", COUNTED)
"#;
    let script = format!("host = sys.argv[1]\n{SPAWNER}{body}");
    let (out, counters) = default_as_kernel("udpdef_late", &script);
    assert!(
        out.contains("bound while sending: True inversions 0"),
        "{out}"
    );
    // The switch happened: both carried some.
    assert!(counters["udp_shm"] >= 1, "{counters:?}");
    assert!(counters["udp_kernel"] >= 1, "{counters:?}");
}

/// SO_REUSEPORT and SO_REUSEADDR sharing a port between two receiving
/// processes (decision 50): the kernel spreads SO_REUSEPORT's senders by
/// a keyed hash of the 4-tuple, each sender's datagrams on one socket,
/// and gives SO_REUSEADDR's all to the last bound; preloaded senders went
/// to the name's holder only (all 8 of 8 senders to A, session 34). Now a
/// port shared across processes is the kernel's.
#[test]
fn a_port_shared_by_two_processes_is_shared_as_the_kernel_shares_it() {
    let body = r#"
host = sys.argv[1]
import collections, select
def mk(opt, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, opt, 1); s.bind((host, port)); return s
def serve(s, wr):
    got = collections.Counter()
    while True:
        d = s.recv(100)
        if d == b"end": break
        got[int(d.split()[0])] += 1
    # What the kernel queued before an "end" that came through shared
    # memory (the other socket gone, its mark with it).
    s.setblocking(False)
    try:
        while True:
            d = s.recv(100)
            if d != b"end": got[int(d.split()[0])] += 1
    except BlockingIOError: pass
    os.write(wr, (repr(dict(got)) + "\n").encode())
def receiver(opt, port, wr):
    rd2, wr2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        s = mk(opt, port); os.write(wr2, b"%d\n" % s.getsockname()[1])
        serve(s, wr); os._exit(0)
    return pid, int(os.read(rd2, 16))
for name, opt in (("SO_REUSEPORT", socket.SO_REUSEPORT), ("SO_REUSEADDR", socket.SO_REUSEADDR)):
    rd, wr = os.pipe()
    a, port = receiver(opt, 0, wr)
    b, _ = receiver(opt, port, wr)
    senders = 24
    for i in range(senders):
        t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for j in range(5):
            t.sendto(b"%d %d" % (i, j), (host, port))
        t.close()
    out = b""
    while out.count(b"\n") < 2:
        for _ in range(2):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"end", (host, port))
        if select.select([rd], [], [], 0.05)[0]:
            out += os.read(rd, 65536)
    for k in (a, b):
        try: os.waitpid(k, 0)
        except ChildProcessError: pass
    got = [eval(l) for l in out.decode().splitlines()]
    per = [set(g) for g in got]
    whole = all(v == 5 for g in got for v in g.values())
    print(name, "every datagram once, each sender's on one socket:",
          whole and not (per[0] & per[1]) and len(per[0] | per[1]) == senders)
    print(name, "one socket took every sender:", senders in map(len, per))
print("counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_reuse", body);
    assert!(
        out.contains("SO_REUSEPORT every datagram once, each sender's on one socket: True"),
        "{out}"
    );
    assert!(
        out.contains("SO_REUSEPORT one socket took every sender: False"),
        "{out}"
    );
    assert!(
        out.contains("SO_REUSEADDR one socket took every sender: True"),
        "{out}"
    );
}

/// A fork from a signal handler that interrupted the library inside a
/// hooked call (which holds the socket registry's read lock) goes on: the
/// prepare handler takes a read hold beside its own thread's instead of
/// waiting for the write lock for ever (review s34 udpshare16 #1: 1 run
/// in 8 to 13 hung, spinning). fork_in_handler.c, a 1 ms SIGALRM that
/// forks while the main thread receives 3000 datagrams; the harness's
/// deadline is the hang check (six rounds: the hang was one run in 8-13).
#[test]
fn a_fork_from_a_signal_handler_inside_the_library_goes_on() {
    let prog = common::build_c("fork_in_handler", &["-O2", "-Wall"]);
    for round in 0..6 {
        let net = Net::loopback(&format!("fork-in-handler-{round}"));
        let mut cmd = common::preloaded(&prog);
        cmd.args([&net.host_str(), &net.port_str()]);
        default_env(&net, &mut cmd, true);
        let out = stdout_of("fork_in_handler", &mut cmd);
        assert!(
            out.contains("got ") && out.contains("forks>0 1"),
            "round {round}: {out}"
        );
    }
}

/// A sender that published a datagram in a receiver's ring before the
/// receiver went back to the kernel for a fork (decision 49's `retire`:
/// the ring drained into the leftovers, the links closed) but rang the
/// doorbell after found the link gone (EPIPE) and sent the datagram
/// again through the kernel: it arrived twice (review udploss16, dup.py;
/// strace holds the sender's system calls 300 ms, so its doorbell comes
/// after the fork). Now a datagram the receiver took is not sent again.
#[test]
fn a_datagram_published_before_a_receivers_fork_arrives_once() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        let _ = writeln!(std::io::stderr(), "skipped: no strace");
        return;
    }
    let body = r#"
host = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
port = s.getsockname()[1]
got = []
def rd():
    while True:
        d = s.recv(100)
        got.append(d.decode())
        if d == b"end": return
th = threading.Thread(target=rd); th.start()
code = """
import socket, sys, time
port = int(sys.argv[2]); t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.sendto(b"D0", (sys.argv[1], port)); time.sleep(1)
print("D1", flush=True); t.sendto(b"D1", (sys.argv[1], port)); time.sleep(1.5)
t.sendto(b"end", (sys.argv[1], port))
"""
t = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=sendto",
                      "-e", "inject=sendto:delay_enter=300000", sys.executable, "-c", code,
                      host, str(port)], stdout=subprocess.PIPE, text=True)
assert t.stdout.readline().strip() == "D1"
time.sleep(0.1)
pid = os.fork()
if pid == 0: os._exit(0)
os.waitpid(pid, 0)
t.wait(); th.join()
print("received", got)
print("counted:", COUNTED)
"#;
    let (out, counters) = default_as_kernel("udpdef_fork_dup", body);
    assert!(out.contains("received ['D0', 'D1', 'end']"), "{out}");
    assert!(counters["udp_shm"] >= 1, "{counters:?}");
}

/// Another user binding the mark of a root receiver's port (anyone may
/// bind an abstract name): root's senders believed the port shared and
/// sent through the kernel (review udploss16, squat.py). A mark whose
/// holder is neither the name's user nor root is not believed now: the
/// datagrams still go through shared memory. As root only.
#[test]
fn a_mark_another_user_binds_is_not_believed() {
    if !common::host::is_root() {
        let _ = writeln!(std::io::stderr(), "skipped: not root");
        return;
    }
    let body = r#"
import ipaddress
a, port = start(0, "end")
h = int(ipaddress.IPv4Address(host))
mark = "\0shmnet.5/udp/[%s]:%d" % (ipaddress.IPv6Address((0x100 << 112) | (1 << 32) | h), port)
r, w = os.pipe()
r2, w2 = os.pipe()
sq = os.fork()
if sq == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); l.bind(mark); l.listen(64)
    os.write(w, b"x"); os.read(r2, 1)
    os._exit(0)
os.read(r, 1)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(200):
    tx.sendto(b"%d" % i, (host, port)); time.sleep(0.0005)
while not select.select([out_r], [], [], 0.05)[0]:
    tx.sendto(b"end", (host, port))
got, inv = result()
os.write(w2, b"x"); os.waitpid(sq, 0)
print("got", len(got), "inversions", inv)
print("counted:", COUNTED)
"#;
    let script = format!("host = sys.argv[1]\n{SPAWNER}{body}");
    let (out, counters) = default_as_kernel("udpdef_squat", &script);
    assert!(out.contains("got 200 inversions 0"), "{out}");
    assert!(counters["udp_shm"] >= 200, "{counters:?}");
}

/// The default mode's half of datagrams.rs
/// `a_receiver_restarted_after_a_send_to_nobody_gets_everything`: a
/// sender idle since its receiver `_exit`ed (a forked child: its segment
/// is not marked closed at exit) looks at its route's link before its
/// next burst, so the first datagram does not go into the dead segment;
/// odd rounds send to the port while nobody holds it first. As kernel
/// UDP: every datagram sent after each bind, once.
#[test]
fn a_receiver_restarted_after_an_idle_gap_gets_everything() {
    let body = r#"
host = sys.argv[1]
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); p.bind((host, 0))
port = p.getsockname()[1]; p.close()
snd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for gen in range(6):
    if gen % 2:
        snd.sendto(b"to-nobody", (host, port))
    rfd, wfd = os.pipe(); pid = os.fork()
    if pid == 0:
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind((host, port))
        os.write(wfd, b"b"); got = []
        while select.select([r], [], [], 5 if len(got) < 10 else 0.3)[0]:
            got.append(r.recv(100).decode())
        want = ["u%d-%d" % (gen, i) for i in range(10)]
        print("gen", gen, "missing", [w for w in want if w not in got], "extra", [g for g in got if g not in want], flush=True)
        os._exit(0)
    os.read(rfd, 1)
    for i in range(10):
        snd.sendto(b"u%d-%d" % (gen, i), (host, port))
    os.waitpid(pid, 0)
print("counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_restart_idle", body);
    assert!(out.contains("gen 5 missing [] extra []"), "{out}");
}

/// A fork from a signal handler that interrupted the library does not
/// give the socket back to the kernel (decision 49 needs the library's
/// locks), so its child holds a copy of the socket's listener; once the
/// parent gives the socket back at a later fork, that copy keeps the name
/// bound. A sender's dial reached it, put its datagrams on a link nobody
/// accepted, and lost them when the child exited and the link hung up
/// (sigfork.sh: runs of 1 to 21 lost in about 1 run in 10; decision 56).
/// Now what a link that hangs up before its REG_OK carried goes through
/// the kernel. listener_copy_in_child.c, eight rounds (main's library:
/// 98 - 125 of 300 lost in 5 of 6 rounds, the name still bound in those
/// 5); every round must get all 300 once, and some round must have had
/// the name still bound (else the case was not looked at). The handler
/// is installed past the library's hook (libc's own sigaction): a wrapped
/// one is put off until the thread leaves the library (decision 73), and
/// the case is not reached through it.
#[test]
fn datagrams_to_a_name_a_forked_child_still_holds_are_not_lost() {
    let prog = common::build_c("listener_copy_in_child", &["-O2", "-Wall"]);
    let mut armed = 0;
    for round in 0..8 {
        let net = Net::loopback(&format!("listener-copy-{round}"));
        let mut cmd = common::preloaded(&prog);
        cmd.arg(net.host_str());
        default_env(&net, &mut cmd, true);
        let out = stdout_of("listener_copy_in_child", &mut cmd);
        assert!(
            out.contains("got 300 of 300 extra 0"),
            "round {round}: {out}"
        );
        if out.contains("armed 1") {
            armed += 1;
        }
    }
    assert!(armed > 0, "the name was never left with a child");
}

/// What a pending route put on its link goes through the kernel when the
/// link hangs up before a REG_OK (decision 56): a plain receiver holds
/// the name beside its kernel port, as a forked child's copy of a
/// listener did, accepts nothing, and closes it 200 ms into a stream of
/// 100 datagrams 5 ms apart. As kernel UDP: all 100, in order (main's
/// library lost the ones sent before the close).
#[test]
fn datagrams_on_a_link_nobody_answered_go_through_the_kernel() {
    let body = r#"
host = sys.argv[1]
p = plain(f"""
import socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(({host!r}, 0))
port = u.getsockname()[1]
l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
l.bind("\\0shmnet.5/udp/{host}:%d" % port); l.listen(64)
print(port, flush=True)
time.sleep(0.2); l.close()
got = []
while True:
    d = u.recv(100)
    if d == b"end": break
    got.append(int(d))
print("got", len(set(got)), "of 100 in order", got == sorted(set(got)), flush=True)
""")
port = int(p.stdout.readline())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(100):
    s.sendto(b"%d" % i, (host, port)); time.sleep(0.005)
s.sendto(b"end", (host, port))
print(p.stdout.readline().strip()); p.wait()
print("counted:", COUNTED)
"#;
    let body = format!("{PLAIN}{body}");
    let (out, _) = default_as_kernel("udpdef_link_unanswered", &body);
    assert!(out.contains("got 100 of 100 in order True"), "{out}");
}

/// A receiver that execs keeping its socket (the next image receives on
/// the inherited fd) while a sender streams: what the sender had left in
/// the shared-memory ring at the exec reaches the next image through the
/// kernel (decision 56: the segments are marked `CLOSED_TO_KERNEL` before
/// the exec and each sender takes back what it left; they were lost, 4 -
/// 8 of 1,800 in execrx.py). Three rounds; as kernel UDP: every datagram
/// after the first 200, once.
#[test]
fn datagrams_in_the_ring_at_exec_reach_the_next_image() {
    let body = r#"
host = sys.argv[1]
AFTER = """
import socket, sys
s = socket.socket(fileno=int(sys.argv[1])); s.settimeout(3); got = []
try:
    while True:
        d = s.recv(100)
        if d == b"end": break
        got.append(int(d))
except socket.timeout: pass
print("after exec got", len(set(got)), "twice", len(got) - len(set(got)), "first", min(got, default=-1), flush=True)
"""
for rnd in range(3):
    r, w = os.pipe()
    sp = os.fork()
    if sp == 0:
        port = int(os.read(r, 10)); t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # 220 after the first 200: the kernel's queue (about 256 small
        # datagrams at the default SO_RCVBUF) holds them all while the
        # next image starts, as kernel UDP needs.
        for i in range(420):
            t.sendto(b"%d" % i, (host, port)); time.sleep(0.00025)
        time.sleep(0.3)
        for i in range(5): t.sendto(b"end", (host, port))
        os._exit(0)
    rx = os.fork()
    if rx == 0:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
        os.write(w, b"%d" % s.getsockname()[1])
        for i in range(200): s.recv(100)
        os.set_inheritable(s.fileno(), True)
        os.execv(sys.executable, [sys.executable, "-c", AFTER, str(s.fileno())])
    os.waitpid(rx, 0); os.waitpid(sp, 0)
print("counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_exec_ring", body);
    assert_eq!(
        out.matches("after exec got 220 twice 0 first 200").count(),
        3,
        "{out}"
    );
}

/// A receiver that runs children with python's subprocess, handing them
/// its socket (`pass_fds=`, and `stdin=` as inetd does), while a sender
/// streams: the child (a vfork run as fork) makes the socket inheritable
/// and execs, and must leave the receiving process's listener and rings
/// alone (review sigfork16: its exec marked the parent's rings
/// `CLOSED_TO_KERNEL`, and the senders took back and sent again what the
/// parent was taking: 6 - 15 twice a run). As kernel UDP: each once.
/// The sender keeps at most 200 ahead of the receiver's count (it lost
/// 160 - 770 in about 1 run in 7 under heavy load when a spawn outlasted
/// the receiver's 512 cells: udp38).
#[test]
fn a_child_spawned_with_the_socket_leaves_the_parents_queue_alone() {
    let body = r#"
import subprocess, sys
host = sys.argv[1]
N = 2000
r, w = os.pipe()
sp = os.fork()
if sp == 0:
    port = int(os.read(r, 10)); t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    acked = 0
    for i in range(N):
        # At most 200 ahead of what the receiver said it took: a slow
        # spawn on a loaded machine must not overflow its queue (512
        # datagrams a receiver here; the kernel's 4 MiB holds more).
        while i - acked > 200:
            acked = max(acked, int(t.recv(100)))
        t.sendto(b"%d" % i, (host, port)); time.sleep(0.0001)
    time.sleep(0.3)
    for i in range(5): t.sendto(b"end", (host, port))
    t.close()  # (its datagrams counted before _exit)
    os._exit(0)
# Bound after the fork: a fork goes back to the kernel (decision 49).
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
os.write(w, b"%d" % s.getsockname()[1])
got = []; spawns = 0
while True:
    d, sender = s.recvfrom(100)
    if d == b"end": break
    got.append(int(d))
    if len(got) % 40 == 0:
        s.sendto(b"%d" % len(got), sender)
        if spawns % 2: subprocess.run(["/bin/true"], pass_fds=[s.fileno()])
        else: subprocess.run(["/bin/true"], stdin=s)
        spawns += 1
os.waitpid(sp, 0)
print("got", len(set(got)), "of", N, "twice", len(got) - len(set(got)), "spawns", spawns)
missing = sorted(set(range(N)) - set(got))
if missing:
    # Which ones, and whether the kernel socket dropped any (decision 75).
    drops = [l.split()[-1] for l in open("/proc/net/udp").read().splitlines()[1:]
             if int(l.split()[1].rsplit(":", 1)[1], 16) == s.getsockname()[1]]
    print("missing", missing[:20], "kernel drops", drops)
print("counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_spawn_pass", body);
    assert!(out.contains("got 2000 of 2000 twice 0 spawns 50"), "{out}");
}

/// A sender streaming as fast as it can, never more than 200 ahead of the
/// receiver's count (so no queue is ever full, as kernel UDP's 4 MiB
/// buffer is not): every datagram arrives (udp_window.c, eight rounds of
/// 500,000 numbered datagrams). A receiver freed a batch of delivered runs
/// hint bits first, owners second: a claim in between spent its eight
/// tries on partitions still owned and dropped the datagram with room to
/// spare (NoRoom; decision 75). Main's library failed 6 of 8 runs of
/// this test (5 - 197 lost in the first round that lost), this branch
/// passed 8 of 8; the spawn test above lost one, once, in CI (its sender
/// is slow: a claim there rarely meets a free).
#[test]
fn a_fast_sender_inside_the_receivers_room_loses_nothing() {
    let prog = common::build_c("udp_window", &["-O2", "-Wall"]);
    for round in 0..8 {
        let net = Net::loopback(&format!("udp-window-{round}"));
        let mut cmd = common::preloaded(&prog);
        cmd.args([net.host_str().as_str(), "500000"]);
        default_env(&net, &mut cmd, true);
        let out = stdout_of("udp_window", &mut cmd);
        let counters = common::stats::read(&net.shm_dir());
        assert!(
            out.contains("got 500000 of 500000 twice 0 stalls 0"),
            "round {round}: {out} {counters:?}"
        );
        // Carried by shared memory (not the kernel's 500,000).
        assert!(
            counters.get("udp_shm").is_some_and(|&n| n >= 500_000),
            "round {round}: {counters:?}"
        );
    }
}

/// A receiver whose exec fails receives on, and gets what the links had
/// put in its memory before the exec (review sigfork16, failexec.py: 1
/// of 5; the sender's route was pending, so the five went on its link and
/// the first receive read them all). As kernel UDP: all 5.
#[test]
fn a_failed_exec_keeps_what_was_read_from_links() {
    let body = r#"
import sys
host = sys.argv[1]
r, w = os.pipe(); r2, w2 = os.pipe()
rx = os.fork()
if rx == 0:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, 0))
    s.set_inheritable(True)
    os.write(w, b"%d" % s.getsockname()[1]); os.read(r2, 1)
    got = [s.recv(100)]
    try: os.execv("/nonexistent/prog", ["x"])
    except OSError: pass
    s.settimeout(1)
    try:
        while True: got.append(s.recv(100))
    except socket.timeout: pass
    print("receiver got", got, flush=True); os._exit(0)
port = int(os.read(r, 10))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5): c.sendto(b"d%d" % i, (host, port))
time.sleep(0.1); os.write(w2, b"x")
os.waitpid(rx, 0)
print("counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_failed_exec", body);
    assert!(
        out.contains("receiver got [b'd0', b'd1', b'd2', b'd3', b'd4']"),
        "{out}"
    );
}

/// A receiver that answers REG with REG_NO (a policy refusing the sender)
/// and keeps the link, while the sender sends 10 datagrams 50 ms apart:
/// the REG_NO is read by the sender's idle look (after 10 ms), and what
/// the route had put on its link before goes through the kernel too
/// (review sigfork16, regno2.py: the first was lost). As kernel UDP: all
/// 10, in order.
#[test]
fn datagrams_on_a_link_refused_later_go_through_the_kernel() {
    let body = r#"
host = sys.argv[1]
p = plain(f"""
import socket, struct, threading
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(({host!r}, 0))
port = u.getsockname()[1]
l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
l.bind(b"\\0shmnet.5/udp/{host}:%d" % port); l.listen(64)
keep = []
def serve():
    while True:
        c, _ = l.accept(); keep.append(c)
        c.recvmsg(70000, 1000)
        c.send(bytes([3, 0, 0, 0]) + struct.pack("<I", 4) + struct.pack("<I", 13))
threading.Thread(target=serve, daemon=True).start()
print(port, flush=True)
got = []
while True:
    d = u.recv(100)
    if d == b"end": break
    got.append(d)
print("got", got, flush=True)
""")
port = int(p.stdout.readline())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(10):
    s.sendto(b"d%d" % i, (host, port)); time.sleep(0.05)
s.sendto(b"end", (host, port))
print(p.stdout.readline().strip()); p.wait()
print("counted:", COUNTED)
"#;
    let body = format!("{PLAIN}{body}");
    let (out, _) = default_as_kernel("udpdef_link_refused", &body);
    let all: Vec<String> = (0..10).map(|i| format!("b'd{i}'")).collect();
    assert!(out.contains(&format!("got [{}]", all.join(", "))), "{out}");
}

/// Review of decision 62 (4): a plain sender's datagram (the kernel's
/// cmsgs, taken with it) gives a preloaded wildcard receiver's short
/// control buffers the kernel's cut cmsgs: none below a header's room, a
/// cut cmsg_len no longer than the room, msg_controllen as the kernel's.
#[test]
fn a_plain_senders_cmsgs_are_cut_as_the_kernels() {
    let body = r#"
host = sys.argv[1]
import subprocess
#PLAIN#
rooms = (0, 8, 16, 20, 24, 28, 32, 40, 48, 56, 64, 512)
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind(("0.0.0.0", 0)); port = srv.getsockname()[1]
for o in (8, 12, 20):  # IP_PKTINFO, IP_RECVTTL, IP_RECVORIGDSTADDR
    srv.setsockopt(socket.IPPROTO_IP, o, 1)
before = kernel_datagrams()
code = """
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    c.sendto(b"d%d" % i, (sys.argv[1], int(sys.argv[2])))
"""
plain(code, host, str(port), str(len(rooms))).communicate()
for room in rooms:
    select.select([srv], [], [], 5)
    print(room, raw_recvmsg(srv, room))
print("plain cut ok", kernel_datagrams() - before == len(rooms) or not COUNTED, "counted:", COUNTED)
"#;
    let body = format!("{CMSG_PY}{}", body.replace(PLAIN_MARK, PLAIN));
    let (out, _) = default_as_kernel("udpdef_cut", &body);
    assert!(out.contains("plain cut ok True"), "{out}");
}

/// A socket per request to a plain server (a resolver's per lookup, to its
/// DNS server: decision 63): after the first finds nobody preloaded holds
/// the destination, the next ones stay the kernel's, unnamed, and get
/// every answer, connected or not, with an epoll registration and a dup
/// made before their first send (which makes them the kernel's for good,
/// decision 64) or after it. A receiver this process then binds on the
/// port is reached through shared memory at once (its naming forgets
/// what said nobody is there) by sockets registered and dup'ed after
/// their first send.
#[test]
fn a_socket_per_request_to_a_plain_server_and_then_to_a_preloaded_one() {
    let body = r#"
import select
host = sys.argv[1]
p = plain(f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(({host!r}, 0))
print(s.getsockname()[1], flush=True)
while True:
    d, a = s.recvfrom(70000)
    if d == b"stop": break
    s.sendto(b"plain:" + d, a)
""")
port = int(p.stdout.readline())
def ask(i, expect, first=True):
    # An epoll registration and a dup before the first send make the
    # socket the kernel's for good (decision 64); after it, they find it
    # carried, or the kernel's (a destination nobody preloaded holds).
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(5)
    d = b"q%d " % i + payload(i % 600, i % 251)
    def before():
        global ep, copy
        ep = select.epoll(); ep.register(c.fileno(), select.EPOLLIN)
        copy = socket.socket(fileno=os.dup(c.fileno()))
    if first:
        before()
    if i % 2:
        c.connect((host, port)); c.send(d)
    else:
        c.sendto(d, (host, port))
    if not first:
        before()
    assert ep.poll(5), i
    got = (copy if i % 3 == 0 else c).recv(70000)
    ep.close(); copy.close(); c.close()
    return got == expect + d
print("plain answered all", all(ask(i, b"plain:", i % 4 < 2) for i in range(200)))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.sendto(b"stop", (host, port)); p.wait()
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind((host, port))
def serve():
    srv.settimeout(5)
    for _ in range(200):
        d, a = srv.recvfrom(70000); srv.sendto(b"ours:" + d, a)
t = threading.Thread(target=serve); t.start()
before = kernel_datagrams()
print("ours answered all", all(ask(i, b"ours:", False) for i in range(200)))
t.join()
if COUNTED and MODE == "library":
    assert kernel_datagrams() - before < 200, kernel_datagrams() - before
print("kernel datagrams counted:", COUNTED)
"#;
    let body = format!("{PLAIN}{body}");
    let (out, counters) = default_as_kernel("udpdef_per_request", &body);
    assert!(out.contains("plain answered all True"), "{out}");
    assert!(out.contains("ours answered all True"), "{out}");
    assert!(counters["udp_shm"] >= 200, "{counters:?}");
}

/// fstat of a UDP socket of ours is its kernel socket's (a socket: its fd
/// is an epoll instance, which S_ISSOCK checks and libuv's
/// `uv_guess_handle` took for no socket), before and after it is named,
/// and the same file's on a dup.
#[test]
fn fstat_says_socket() {
    let body = r#"
import stat
host = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("unbound", stat.S_ISSOCK(os.fstat(s.fileno()).st_mode))
s.bind((host, 0))
st = os.fstat(s.fileno())
print("bound", stat.S_ISSOCK(st.st_mode))
d = os.dup(s.fileno())
print("dup same", os.fstat(d).st_ino == st.st_ino)
c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
c.sendto(b"x", ("::1", 9))
print("v6 sent", stat.S_ISSOCK(os.fstat(c.fileno()).st_mode))
# What a program built against glibc before 2.33 calls (node v20).
import ctypes
libc = ctypes.CDLL(None)
for name in ("__fxstat", "__fxstat64") if os.uname().machine == "x86_64" else ():
    if hasattr(libc, name):
        buf = ctypes.create_string_buffer(256)
        assert getattr(libc, name)(1, s.fileno(), buf) == 0
        mode = struct.unpack_from("I", buf, 24)[0]  # st_mode on x86_64
        print(name, stat.S_ISSOCK(mode))
print("kernel datagrams counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_fstat", body);
    assert!(out.contains("bound True"), "{out}");
    assert!(!out.contains("False"), "{out}");
}

/// A UDP socket passed to another process with SCM_RIGHTS arrives as a UDP
/// socket (it came as the empty epoll instance its fd is: ENOTSOCK): one
/// not bound yet, which the receiver binds and receives on, and one bound
/// (carried), which goes back to the kernel first, so that the receiver
/// gets what is sent to its port once the sender closed its copy.
#[test]
fn udp_sockets_passed_with_scm_rights_are_sockets() {
    let body = r#"
host = sys.argv[1]
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    for name in ("unbound", "bound"):
        msg, fds, _, _ = socket.recv_fds(b, 10, 1)
        t = socket.socket(fileno=fds[0])
        t.settimeout(5)
        if name == "unbound":
            t.bind((host, 0))
        b.send(b"%d" % t.getsockname()[1])
        d, _ = t.recvfrom(100)
        print("child", name, t.type == socket.SOCK_DGRAM, d, flush=True)
        t.close()
    os._exit(0)
b.close()
for name in ("unbound", "bound"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if name == "bound":
        s.bind((host, 0))
    socket.send_fds(a, [b"x"], [s.fileno()])
    port = int(a.recv(10))
    s.close()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.sendto(b"to " + name.encode(), (host, port)); c.close()
os.waitpid(pid, 0)
print("kernel datagrams counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_scm_rights", body);
    assert!(out.contains("child unbound True b'to unbound'"), "{out}");
    assert!(out.contains("child bound True b'to bound'"), "{out}");
}

/// A sendmsg whose control buffer runs past mapped memory (EFAULT), or
/// whose length is above INT_MAX (ENOBUFS), passing a pipe or a UDP socket
/// of ours, in a process holding one: the kernel's errno, no crash (the
/// library walked the caller's buffer past its end: SIGSEGV).
#[test]
fn a_control_buffer_past_mapped_memory_is_the_kernels_error() {
    let body = r#"
import ctypes, mmap
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
libc.sendmsg.argtypes = [ctypes.c_int, ctypes.POINTER(msghdr), ctypes.c_int]
host = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((host, 0))
a, b = socket.socketpair()
r, w = os.pipe()
pg = libc.mmap(None, 8192, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
assert libc.mprotect(pg + 4096, 4096, 0) == 0  # PROT_NONE
space = 24  # CMSG_SPACE(sizeof(int)) on 64 bits
c = pg + 4096 - space
data = ctypes.create_string_buffer(b"x")
iov = iovec(ctypes.cast(data, ctypes.c_void_p), 1)
for case, length in (("over", space + 64), ("huge", 0x80000000)):
    for name, fd in (("pipe", r), ("udp", u.fileno())):
        ctypes.memmove(c, struct.pack("QiIi", 20, socket.SOL_SOCKET, socket.SCM_RIGHTS, fd), 20)
        m = msghdr(None, 0, ctypes.pointer(iov), 1, c, length, 0)
        n = libc.sendmsg(a.fileno(), ctypes.byref(m), socket.MSG_DONTWAIT)
        print(case, name, n, errno.errorcode.get(ctypes.get_errno()) if n < 0 else "ok", flush=True)
print("kernel datagrams counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_scm_over", body);
    assert!(out.contains("over udp -1 EFAULT"), "{out}");
    assert!(out.contains("huge udp -1 ENOBUFS"), "{out}");
}

/// An unbound UDP socket shared by fork (a syslog client made before a
/// prefork server's fork): the child sends first, or binds it, then the
/// parent sends from its copy; every datagram arrives (the parent's send
/// bound the kernel socket again: EINVAL).
#[test]
fn an_unbound_socket_shared_by_fork_sends_from_both() {
    let body = r#"
host = sys.argv[1]
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind((host, 0))
r.settimeout(5)
for how in ("send", "bind"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    p, q = os.pipe()
    pid = os.fork()
    if pid == 0:
        if how == "bind":
            s.bind((host, 0))
        s.sendto(b"child " + how.encode(), r.getsockname())
        os.write(q, b"k")
        os._exit(0)
    assert os.read(p, 1) == b"k"
    os.waitpid(pid, 0)
    try:
        s.sendto(b"parent " + how.encode(), r.getsockname())
    except OSError as e:
        print("parent", how, e)
    got = sorted(r.recv(100) for _ in range(2))
    print(how, got, flush=True)
    s.close()
print("kernel datagrams counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_fork_unbound", body);
    assert!(
        out.contains("send [b'child send', b'parent send']"),
        "{out}"
    );
    assert!(
        out.contains("bind [b'child bind', b'parent bind']"),
        "{out}"
    );
}

/// A socket connected to a destination remembered as held by nobody (a
/// send found it free a moment before), whose preloaded receiver starts
/// afterwards (a statsd client that connects once, a reconnect while the
/// server restarts): its sends go through shared memory once the
/// remembering is over (they stayed the kernel's for life).
#[test]
fn a_socket_connected_while_its_receiver_was_away_is_carried_later() {
    let body = r#"
host = sys.argv[1]
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.bind((host, 0))
P = t.getsockname()[1]
t.close()
# (The receiver is forked first: a fork makes every socket not carried
# yet the kernel's for good, decision 64.)
p, q = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(go_r, 1)
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind((host, P))
    os.write(q, b"k")
    n = 0
    while r.recv(100) != b"stop":
        n += 1
    print("receiver got", n, flush=True)
    os._exit(0)
s0 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s0.sendto(b"anyone?", (host, P))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect((host, P))
os.write(go_w, b"g")
assert os.read(p, 1) == b"k"
time.sleep(1.2)  # past the time a free destination is remembered (1 s)
for i in range(200):
    c.send(b"metric.%d:1|c" % i)
    if i % 32 == 31:
        time.sleep(0.01)
c.send(b"stop")
os.waitpid(pid, 0)
print("kernel datagrams counted:", COUNTED)
"#;
    let (out, counters) = default_as_kernel("udpdef_conn_later", body);
    assert!(out.contains("receiver got 200"), "{out}");
    let shm = counters.get("udp_shm").copied().unwrap_or(0);
    assert!(shm >= 200, "udp_shm {shm}: {out}");
}

/// A bound UDP socket with datagrams queued (by a preloaded sender, not
/// read yet) handed to another process with SCM_RIGHTS, the first
/// closing its copy: the new holder gets them all (they were lost in
/// shared memory). Known: the queued ones come when their sender sends
/// again (its ring goes through the kernel then), not at once.
#[test]
fn datagrams_queued_on_a_socket_handed_over_with_scm_rights_arrive() {
    let body = r#"
host = sys.argv[1]
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    msg, fds, _, _ = socket.recv_fds(b, 10, 1)
    t = socket.socket(fileno=fds[0])
    t.settimeout(10)
    b.send(b"go")
    got = sorted(t.recv(100) for _ in range(20))
    want = sorted([b"before %d" % i for i in range(10)] + [b"after %d" % i for i in range(10)])
    print("new holder got all", got == want, flush=True)
    os._exit(0)
b.close()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, 0))
addr = s.getsockname()
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(10):
    c.sendto(b"before %d" % i, addr)
time.sleep(0.1)  # (the receiver's links settle: queued in shared memory)
socket.send_fds(a, [b"x"], [s.fileno()])
s.close()
assert a.recv(10) == b"go"
for i in range(10):
    c.sendto(b"after %d" % i, addr)
os.waitpid(pid, 0)
print("kernel datagrams counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_scm_handoff", body);
    assert!(out.contains("new holder got all True"), "{out}");
}

/// A connected socket keeps its peer where it goes back to the kernel:
/// before a fork shares it (socat UDP-LISTEN ... EXEC:'s forked server
/// wrote into an unconnected kernel socket: EDESTADDRREQ) and across an
/// exec (the new image's getpeername said ENOTCONN). Sweep36 #1, #2.
#[test]
fn a_connected_socket_keeps_its_peer_across_fork_and_exec() {
    let body = r#"
host = sys.argv[1]
child = """
import os, socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
print("exec peer", s.getpeername()[0], flush=True)
s.send(b"from exec")
"""
for how in ("fork", "exec"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind((host, 0)); c.settimeout(5)
    c.sendto(b"hello", s.getsockname())
    d, peer = s.recvfrom(100)
    s.connect(peer)
    pid = os.fork()
    if pid == 0:
        if how == "exec":
            os.set_inheritable(s.fileno(), True)
            os.execv(sys.executable, [sys.executable, "-c", child, str(s.fileno())])
        os._exit(0)
    os.waitpid(pid, 0)
    if how == "fork":
        print("fork peer", s.getpeername()[0], flush=True)
        s.send(b"from fork")
    print(how, c.recv(100), flush=True)
    s.close(); c.close()
print("kernel datagrams counted:", COUNTED)
"#;
    let (out, _) = default_as_kernel("udpdef_connected_fork_exec", body);
    assert!(out.contains("fork b'from fork'"), "{out}");
    assert!(out.contains("exec b'from exec'"), "{out}");
}

/// The receive buffer a burst script asks (forced as root, so that the
/// kernel keeps the whole burst whatever net.core.rmem_max says) and a
/// sender script of `n` datagrams of 1,000 - 1,399 B named `name`, sent
/// back to back by a new process (its link dialled at its first send).
const BURST: &str = r#"
def busy_receiver(bind_host):
    r = socket.socket(socket.AF_INET6 if ":" in bind_host else socket.AF_INET, socket.SOCK_DGRAM)
    force = os.geteuid() == 0
    r.setsockopt(socket.SOL_SOCKET, 33 if force else socket.SO_RCVBUF, 8 << 20)  # SO_RCVBUFFORCE
    r.bind((bind_host, 0))
    r.setblocking(False)
    try: r.recv(1)  # a receive first, as a server loop does before a burst
    except BlockingIOError: pass
    return r
def fits(r, n, senders):
    # As many as the kernel surely keeps: all, as root (forced); fewer
    # where net.core.rmem_max caps the buffer (4 KiB a datagram is more
    # than either charges).
    return min(n, r.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // (4096 * senders))
def size(i): return 1000 + (i * 37) % 400
def body(name, i): return name + b"|%d|" % i + bytes((i * 13 + j) & 0xff for j in range(size(i)))
SENDER = """
import socket, sys
host, port, name, n = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    s.sendto(name + b"|%d|" % i + bytes((i * 13 + j) & 0xff for j in range(1000 + (i * 37) % 400)), (host, port))
"""
def senders(port, names, n, to=None, wait=True):
    # New processes, preloaded as this one: the receiver is busy (waiting
    # for them, outside the library) until they have all exited.
    ps = [subprocess.Popen([sys.executable, "-c", SENDER, to or host, str(port), nm, str(n)]) for nm in names]
    if wait:
        for p in ps: p.wait()
    return ps
def check(d, last):
    name, i, rest = d.split(b"|", 2)
    i = int(i)
    assert d == body(name, i), (name, i, len(d))
    assert i > last.get(name, -1), ("reordered", name, i, last.get(name))
    last[name] = i
"#;

/// A new sender's burst to a receiver busy meanwhile (decision 78; issue
/// 16, decision 71): 2,000 datagrams of 1,000 - 1,399 B before the
/// receiver looks, which an 8 MiB SO_RCVBUF holds in the kernel. They went
/// on the sender's link until its REG_OK, which filled at its 1 MiB send
/// buffer and dropped the rest (about 910 kept); the link now grows to the
/// receiver's receive buffer. Counts, bytes and order as kernel UDP's, on
/// an address and on the wildcard.
#[test]
fn a_new_senders_burst_to_a_busy_receiver_is_kept_as_the_kernel_keeps_it() {
    let body = r#"
host = sys.argv[1]
for bind_host, to in ((host, host), ("0.0.0.0", host), ("::1", "::1")):
    r = busy_receiver(bind_host)
    port = r.getsockname()[1]
    N = fits(r, 2000, 1)
    senders(port, ["a"], N, to)
    last, got = {}, 0
    while True:
        try: d = r.recv(70000)
        except BlockingIOError: break
        check(d, last); got += 1
    print(bind_host, "kept", got, "of", N, "in order, last", sorted(last.items()))
    r.close()
print("counted:", COUNTED)
"#;
    let body = format!("{BURST}{body}");
    let (out, counters) = default_as_kernel("udpdef_burst", &body);
    // As root the whole burst (the receive buffer forced past rmem_max).
    let want = if common::host::is_root() {
        " kept 2000 of 2000 in order"
    } else {
        " in order"
    };
    assert_eq!(out.matches(want).count(), 3, "{out}");
    assert_eq!(
        counters.get("udp_dropped").copied().unwrap_or(0),
        0,
        "{counters:?}"
    );
    if common::host::is_root() {
        assert!(counters["udp_shm"] >= 6000, "{counters:?}");
    }
}

/// Two new senders bursting at once to a busy receiver (decision 78):
/// each keeps its order, and before every receive poll says readable,
/// FIONREAD gives the size of the datagram the receive then returns and a
/// MSG_PEEK returns that same datagram (decision 71's "one choice of next
/// datagram"), as kernel UDP's.
#[test]
fn two_new_senders_bursting_at_once_keep_order_and_peek_and_fionread_agree() {
    let body = r#"
host = sys.argv[1]
r = busy_receiver(host)
port = r.getsockname()[1]
N = fits(r, 1500, 2)
senders(port, ["a", "b"], N)
last, got, disagree = {}, 0, 0
while True:
    readable = bool(select.select([r], [], [], 0)[0])
    n = fionread(r)
    try: p = r.recv(70000, socket.MSG_PEEK)
    except BlockingIOError: p = None
    try: d = r.recv(70000)
    except BlockingIOError:
        assert p is None and not readable and n == 0, (p is None, readable, n)
        break
    if not (readable and p == d and n == len(d)): disagree += 1
    check(d, last); got += 1
print("kept", got, "of", 2 * N, "in order, last", sorted(last.items()), "disagreements", disagree)
r.close()
# Again with the receiver reading while they send: their links are
# answered mid-burst and they move to shared memory (a receiver's 512
# cells per sender may drop some there, so only order and agreement).
r = busy_receiver(host)
r.setblocking(True)
ps = senders(r.getsockname()[1], ["c", "d"], N, wait=False)
last, disagree = {}, 0
while any(p.poll() is None for p in ps) or select.select([r], [], [], 0.2)[0]:
    if not select.select([r], [], [], 0.05)[0]: continue
    n = fionread(r)
    p = r.recv(70000, socket.MSG_PEEK)
    d = r.recv(70000)
    if not (p == d and n == len(d)): disagree += 1
    check(d, last)
print("while reading: in order, disagreements", disagree)
print("counted:", COUNTED)
"#;
    let body = format!("{BURST}{body}");
    let (out, _) = default_as_kernel("udpdef_burst_two", &body);
    if common::host::is_root() {
        assert!(out.contains("kept 3000 of 3000"), "{out}");
    }
    assert!(
        out.contains("disagreements 0\nwhile reading: in order, disagreements 0"),
        "{out}"
    );
}

/// Decision 80 (sweep s39 D1): UDP_SEGMENT (GSO) sends between preloaded
/// sockets on 127.x and ::1, by cmsg and by socket option, arrive as the
/// kernel's segments, through shared memory (the kernel carried none of
/// the IPv4 ones); the kernel's errors. A receiver that asked UDP_GRO
/// (before or after its bind) is the kernel's (decision 62) and gets a
/// preloaded sender's GSO send whole with its UDP_GRO cmsg, as on
/// loopback. On main every GSO send arrived as one datagram.
#[test]
fn udp_segment_sends_as_kernel_udp() {
    let body = format!(
        "host = sys.argv[1]\nfam = socket.AF_INET\nbefore = kernel_datagrams()\n{GSO_PY}{}{GSO_PY}{}",
        r#"
expect_kernel(before, 0, SENT)
host, fam = "::1", socket.AF_INET6
"#,
        r#"
for when in ("before", "after"):
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if when == "before":
        r.setsockopt(SOL_UDP, UDP_GRO, 1)
    r.bind((sys.argv[1], 0))
    if when == "after":
        r.setsockopt(SOL_UDP, UDP_GRO, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = payload(3000, 9)
    for opt in (False, True):
        if opt:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, 1000); s.sendto(data, r.getsockname())
        else:
            s.sendmsg([data], gso(1000), 0, r.getsockname())
        select.select([r], [], [], 5)
        d, anc, fl, a = r.recvmsg(70000, 256)
        print("gro", when, opt, len(d), d == data, [(l, t, bytes(x).hex()) for l, t, x in anc])
    r.close(); s.close()
print("gso ok, kernel datagrams counted:", COUNTED)
"#
    );
    let (out, _) = default_as_kernel("udp_gso", &body);
    assert!(out.contains("gso ok"), "{out}");
    assert!(out.contains("got [1000, 1000, 500] True"), "{out}");
}
