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
