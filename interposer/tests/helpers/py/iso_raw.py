# A hostile local program that does not use libshmnet (never preloaded),
# for interposer/tests/isolation.rs. Stdlib only (it runs as test users too).
#
# MODE N NAME...: NAMEs are rendezvous candidates, tried in order: `@x` is
# the abstract Unix socket name "\0x" (docs/security.md), anything else a
# path (the socket file of a library from before docs/security.md, so the
# defect can be shown on it too). The first NAME that accepts a connection
# is used for all N; none: prints `unreachable ERRNO...` and exits 1.
#
# idle N NAME...: opens N connections that never send anything, prints
#   `connected N NAME`, waits for `go` on stdin, closes them.
# partial N NAME...: N times, one after the other: connect, send the first
#   10 bytes of a 60-byte connect message, close. Prints `partial N NAME`.
# garbage N NAME...: opens N connections, sends 60 random bytes on each,
#   waits (at most 10 s) until the listener has closed them: prints
#   `garbage N NAME closed K`.
# squat PATH [LINK TARGET]...: binds and listens on the Unix socket PATH,
#   makes each symlink LINK -> TARGET, prints `listening`; counts the
#   connections it gets (accepting nothing that would answer) until `go` on
#   stdin, then prints `accepted K` and exits.
# forge-later SRC_PORT DEST_PORT NAME...: as forge, but connects first,
#   prints `connected`, and sends only after `go` on stdin.
# forge SRC_PORT DEST_PORT NAME...: sends one well-formed connect message
#   claiming 127.0.0.1:SRC_PORT as its address and 127.0.0.1:DEST_PORT as
#   its destination (no segment attached), waits (at most 10 s) for the
#   listener to close: prints `forged closed` or `forged open`.
import os, select, signal, socket, struct, sys, time

signal.alarm(100)
MODE = sys.argv[1]


def address(name):
    return b"\0" + name[1:].encode() if name.startswith("@") else name


def open_one(names):
    errors = []
    for name in names:
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            u.connect(address(name))
            return u, name
        except OSError as e:
            errors.append(f"{name}:{os.strerror(e.errno)}")
            u.close()
    print("unreachable", *errors, flush=True)
    sys.exit(1)


def connect_all(n, names):
    first, name = open_one(names)
    conns = [first]
    for _ in range(n - 1):
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.connect(address(name))
        conns.append(u)
    return conns, name


# Magic "SHMH", version, kind: how a connect message starts; the rest never
# comes.
PARTIAL = b"SHMH" + struct.pack("<HHH", 3, 1, 4)
assert len(PARTIAL) == 10

if MODE == "squat":
    path = sys.argv[2]
    links = sys.argv[3:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(64)
    s.setblocking(False)
    for link, target in zip(links[::2], links[1::2]):
        os.symlink(target, link)
    print("listening", flush=True)
    got, keep = 0, []
    while True:
        r, _, _ = select.select([s, sys.stdin], [], [], 1)
        if s in r:
            try:
                c, _ = s.accept()
                keep.append(c)
                got += 1
            except BlockingIOError:
                pass
        if sys.stdin in r:
            sys.stdin.readline()
            break
    print("accepted", got, flush=True)
    sys.exit(0)

if MODE in ("forge", "forge-later"):
    src, dest, names = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    u, _ = open_one(names)
    if MODE == "forge-later":
        print("connected", flush=True)
        sys.stdin.readline()
    lo = bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])
    msg = b"SHMH" + struct.pack("<HHHH", 5, 1, 4, src) + bytes(4) + lo
    msg += struct.pack("<HH", 4, dest) + lo + bytes(8)
    assert len(msg) == 60
    u.sendall(msg)
    u.settimeout(10)
    try:
        closed = u.recv(100) == b""
    except OSError:
        closed = False
    print("forged", "closed" if closed else "open", flush=True)
    sys.exit(0)

n, names = int(sys.argv[2]), sys.argv[3:]
if MODE == "idle":
    conns, name = connect_all(n, names)
    print("connected", n, name, flush=True)
    sys.stdin.readline()
    for c in conns:
        c.close()
elif MODE == "partial":
    name = None
    for i in range(n):
        u, name = open_one(names if name is None else [name])
        u.sendall(PARTIAL)
        u.close()
    print("partial", n, name, flush=True)
elif MODE == "garbage":
    conns, name = connect_all(n, names)
    for c in conns:
        c.sendall(os.urandom(60))
        c.setblocking(False)
    open_ = set(conns)
    deadline = time.monotonic() + 10
    while open_ and time.monotonic() < deadline:
        r, _, _ = select.select(list(open_), [], [], 0.2)
        for c in r:
            try:
                if c.recv(4096) == b"":
                    open_.discard(c)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(c)
    print("garbage", n, name, "closed", n - len(open_), flush=True)
else:
    sys.exit(f"unknown mode {MODE!r}")
