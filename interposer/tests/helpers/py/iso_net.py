# Programs for interposer/tests/isolation.rs, run preloaded or plain, as
# root or as a test user (stdlib only: the system python serves test users).
#
#   [--drop UID:GID] MODE ARGS...
#
# --drop: setgroups([]), setgid, setuid before anything else touches a
# socket (a server started as root that switches user before it binds).
#
# echo HOST PORT: listens (PORT 0: the kernel's pick), prints
#   `port P pid PID`, accepts in a blocking loop and echoes each
#   connection (a thread each) until killed.
# server HOST PORT N TAG: listens, prints `port P pid PID`; serves N
#   connections (N=0: until killed) concurrently: reads to EOF, answers
#   `TAG <sha256 of what it read>`, prints `served TAG BYTES`.
# client HOST PORT BYTES [pause]: connects (a failure prints
#   `error ERRNO` and exits 0); sends BYTES random bytes (pause: half,
#   prints `in-flight`, waits for `go` on stdin, then the rest);
#   half-closes and reads the answer: prints `ok TAG SECONDS` (SECONDS from
#   connect to answer) when the digest matches, else `BAD ...` (exit 1).
# session HOST PORT STEP...: steps, each printing one line:
#   connect:NAME -> `connect NAME ok` or `connect NAME ERRNO`;
#   exchange:NAME:BYTES -> `exchange NAME ok` or `exchange NAME ERROR`
#     (BYTES random bytes to an echo server and back, 5 s timeout);
#   pause:TAG -> prints TAG, waits for `go` on stdin;
#   pid -> `pid PID`.
#   Open connections stay open until the program exits.
# files HOST PORT FILE N: listens, prints `port P pid PID`; sends FILE to
#   each of N connections (one at a time) and closes it; prints `sent K`.
# fetch HOST PORT [pause]: reads to EOF (pause: after 4 MiB prints
#   `in-flight` and waits for `go`); prints `got LEN SHA256`.
# burst HOST PORT THREADS: THREADS threads connect at the same moment (a
#   barrier) and each exchanges 10000 bytes with an echo server; prints
#   `burst ok THREADS` or `burst failed ...`.
import errno, hashlib, os, signal, socket, sys, threading, time

signal.alarm(100)  # a hung helper never outlives its test
argv = sys.argv[1:]
if argv and argv[0] == "--drop":
    uid, gid = (int(x) for x in argv[1].split(":"))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    argv = argv[2:]
MODE, HOST, PORT, ARGS = argv[0], argv[1], int(argv[2]), argv[3:]
FAM = socket.AF_INET6 if ":" in HOST else socket.AF_INET
_out = threading.Lock()


def say(*words):
    with _out:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


def wait_go(tag):
    say(tag)
    line = sys.stdin.readline()
    if line.strip() != "go":
        sys.exit(f"pause {tag}: got {line!r} instead of go")


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__


def listener():
    s = socket.socket(FAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, PORT))
    s.listen(128)
    say("port", s.getsockname()[1], "pid", os.getpid())
    return s


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def echo_one(c):
    try:
        while (b := c.recv(1 << 16)):
            c.sendall(b)
    except OSError:
        pass
    c.close()


def echo():
    s = listener()
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo_one, args=(c,), daemon=True).start()


def server(n, tag):
    s = listener()

    def one(c):
        h, tot = hashlib.sha256(), 0
        while (b := c.recv(1 << 16)):
            h.update(b)
            tot += len(b)
        c.sendall(f"{tag} {h.hexdigest()}".encode())
        c.close()
        say("served", tag, tot)

    threads = []
    while n == 0 or len(threads) < n:
        c, _ = s.accept()
        t = threading.Thread(target=one, args=(c,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    say("done", len(threads))


def client(size, pause):
    data = os.urandom(size)
    t0 = time.monotonic()
    c = socket.socket(FAM)
    try:
        c.connect((HOST, PORT))
    except OSError as e:
        say("error", errname(e))
        return
    half = len(data) // 2 if pause else len(data)
    c.sendall(data[:half])
    if pause:
        wait_go("in-flight")
        c.sendall(data[half:])
    c.shutdown(socket.SHUT_WR)
    got = b""
    while (b := c.recv(200)):
        got += b
    took = time.monotonic() - t0
    words = got.decode(errors="replace").split()
    if len(words) == 2 and words[1] == hashlib.sha256(data).hexdigest():
        say("ok", words[0], f"{took:.3f}")
    else:
        say("BAD", repr(got[:200]))
        sys.exit(1)


def session(steps):
    conns = {}
    for step in steps:
        kind, *rest = step.split(":")
        if kind == "pause":
            wait_go(rest[0])
        elif kind == "pid":
            say("pid", os.getpid())
        elif kind == "connect":
            c = socket.socket(FAM)
            try:
                c.connect((HOST, PORT))
                conns[rest[0]] = c
                say("connect", rest[0], "ok")
            except OSError as e:
                say("connect", rest[0], errname(e))
        elif kind == "exchange":
            name, n = rest[0], int(rest[1])
            c = conns.get(name)
            if c is None:
                say("exchange", name, "not-connected")
                continue
            data = os.urandom(n)
            try:
                c.settimeout(5)
                c.sendall(data)
                back = recv_exact(c, n)
                say("exchange", name, "ok" if back == data else "corrupt")
            except (OSError, EOFError) as e:
                say("exchange", name, errname(e) if isinstance(e, OSError) else "EOF")
        else:
            sys.exit(f"unknown step {step!r}")


def files(path, n):
    data = open(path, "rb").read()
    s = listener()
    for k in range(n):
        c, _ = s.accept()
        c.sendall(data)
        c.close()
        say("sent", k + 1)


def fetch(pause):
    c = socket.create_connection((HOST, PORT))
    h, tot, paused = hashlib.sha256(), 0, not pause
    while (b := c.recv(1 << 16)):
        h.update(b)
        tot += len(b)
        if not paused and tot >= 4 << 20:
            paused = True
            wait_go("in-flight")
    say("got", tot, h.hexdigest())


def burst(n):
    barrier = threading.Barrier(n)
    fails = []

    def one(i):
        data = os.urandom(10000)
        c = socket.socket(FAM)
        try:
            barrier.wait()
            c.connect((HOST, PORT))
            c.sendall(data)
            if recv_exact(c, len(data)) != data:
                fails.append(f"{i}: corrupt")
        except (OSError, EOFError, threading.BrokenBarrierError) as e:
            fails.append(f"{i}: {e!r}")
        c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say("burst ok", n) if not fails else say("burst failed", *fails)


if MODE == "echo":
    echo()
elif MODE == "server":
    server(int(ARGS[0]), ARGS[1])
elif MODE == "client":
    client(int(ARGS[0]), "pause" in ARGS)
elif MODE == "session":
    session(ARGS)
elif MODE == "files":
    files(ARGS[0], int(ARGS[1]))
elif MODE == "fetch":
    fetch("pause" in ARGS)
elif MODE == "burst":
    burst(int(ARGS[0]))
else:
    sys.exit(f"unknown mode {MODE!r}")
