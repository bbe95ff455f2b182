# A server near its fd limit (256) under a seccomp filter whose action for
# io_uring_setup is SECCOMP_RET_KILL_PROCESS, as systemd's
# SystemCallFilter= without an errno, bwrap or minijail make. MODE: "exec"
# (the filter came with the program: fd_limit.rs runs this under
# kill_uring), "prctl" or "syscall" (installed here, by
# prctl(PR_SET_SECCOMP) or by seccomp(2) through libc's syscall(), as
# libseccomp's seccomp_load), "none" (no filter). It fills its fd table,
# then accepts with exactly one free number, then with two; each accepted
# connection carries one byte each way. Prints "free1 accepted|EMFILE"
# and "free2 accepted". The library must not make an io_uring call under
# the filter (decision 58): the process lives and says EMFILE at one free
# number, as without io_uring; without a filter it accepts there.
import ctypes, os, platform, resource, socket, struct, sys
MODE = sys.argv[1]
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(ADDR); srv.listen(64)
r, w = os.pipe()
client = os.fork()
if client == 0:  # connects once per byte read, sends b"x", expects b"y"
    srv.close(); os.close(w)
    conns = []
    while os.read(r, 1):
        c = socket.create_connection(ADDR); c.sendall(b"x"); conns.append(c)
    for c in conns:
        assert c.recv(1) == b"y"
    os._exit(0)
os.close(r)

def install(how):
    arch, sys_seccomp = {"x86_64": (0xC000003E, 317), "aarch64": (0xC00000B7, 277)}[platform.machine()]
    ld, jeq, ret = 0x20, 0x15, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    insns = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, allow),
             (ld, 0, 0, 0), (jeq, 0, 1, 425), (ret, 0, 0, kill), (ret, 0, 0, allow)]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in insns))
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = Fprog(len(insns), ctypes.cast(code, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    if how == "prctl":  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        rc = libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0))
    else:  # SECCOMP_SET_MODE_FILTER
        rc = libc.syscall(ctypes.c_long(sys_seccomp), ctypes.c_long(1), ctypes.c_long(0), ctypes.byref(prog))
    assert rc == 0, ctypes.get_errno()

if MODE in ("prctl", "syscall"):
    install(MODE)
kept = []
def one():
    a, _ = srv.accept()
    assert a.recv(1) == b"x"
    a.sendall(b"y")
    kept.append(a)
one_conn = lambda: os.write(w, b"c")
one_conn(); one()  # an accept far from the limit
fill = []
while True:
    try:
        fill.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        break
os.close(fill.pop())  # exactly one free number
one_conn()
try:
    one()
    print("free1 accepted", flush=True)
    one_conn()
except OSError as e:  # the connection waits for the next accept
    print("free1", "EMFILE" if e.errno == 24 else e, flush=True)
os.close(fill.pop())  # two
try:
    one()
    print("free2 accepted", flush=True)
except OSError as e:
    print("free2", "EMFILE" if e.errno == 24 else e, flush=True)
for f in fill:
    os.close(f)
os.close(w)
os.waitpid(client, 0)
