# What looks like a carrier but is not ours changes nothing across exec
# (found by review): a process holding the other end of an inherited
# datagram pair writes a carrier-shaped message naming the program's plain
# Unix stream socket (its cookie and inode) with a memfd; the exec'd
# program still reads the kernel's bytes from that socket, keeps its
# datagram socket, and a socket with SO_PEEK_OFF set is not peeked (its
# offset would move); a Unix socket at a path ending like one of our
# SHMNET_DIR names keeps its bytes. argv: (none) | child S D P U
import os, signal, socket, struct, sys

signal.alarm(20)

if len(sys.argv) > 1:
    s, d, p, u = (int(a) for a in sys.argv[2:6])
    st = socket.socket(fileno=s)
    print("stream", st.recv(64).decode().strip(), flush=True)
    print("path", socket.socket(fileno=u).recv(64).decode(), flush=True)
    try:
        os.fstat(d)
        print("datagram open", flush=True)
    except OSError:
        print("datagram closed", flush=True)
    pk = socket.socket(fileno=p)
    print("peek", pk.recv(64, socket.MSG_PEEK).decode(), flush=True)
    sys.exit(0)

s0, s1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
d0, d1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
p0, p1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
s1.send(b"kernel data\n")
cookie = struct.unpack("Q", s0.getsockopt(socket.SOL_SOCKET, 57, 8))[0]
ino = os.fstat(s0.fileno()).st_ino
m = bytearray(64)
m[:8] = b"SHMNETX1"
m[9] = 4; m[10] = 127; m[13] = 1; m[26] = 1
m[28] = 4; m[29] = 127; m[32] = 1; m[45] = 2
m[48:56] = struct.pack("<Q", cookie)
m[56:64] = struct.pack("<Q", ino)
mfd = os.memfd_create("x")
socket.send_fds(d1, [bytes(m)], [mfd])
p0.setsockopt(socket.SOL_SOCKET, 42, 0)  # SO_PEEK_OFF
p1.send(b"first datagram")
# The application's own Unix socket at a path that ends like a SHMNET_DIR
# rendezvous of ours: not taken for one.
import tempfile
where = os.path.join(tempfile.mkdtemp(), "tcp4-127.0.0.1-5432")
lst = socket.socket(socket.AF_UNIX); lst.bind(where); lst.listen(1)
u0 = socket.socket(socket.AF_UNIX); u0.connect(where)
acc, _ = lst.accept(); acc.send(b"app data")
for f in (s0, d0, p0, u0):
    os.set_inheritable(f.fileno(), True)
args = [str(f.fileno()) for f in (s0, d0, p0, u0)]
os.execv(sys.executable, [sys.executable, __file__, "child", *args])
