# Deferred flags for edge-triggered members (EPOLLET): while the set's one
# waiter is busy their flags stay down (no doorbell byte: proven with a raw
# ppoll, which the kernel answers without the library), and our epoll_wait
# reports an EPOLLIN edge for each arrival of data itself, as kernel TCP
# does: one per arrival (several while the waiter was busy: one), also
# while older data is unread, none without one; nothing lost when the
# waiter sleeps.
# usage: epoll_deferred_et.py CASE   (env TEST_HOST/TEST_PORT)
#   arrivals  arrivals while the waiter is busy, read or left unread: one
#             edge each, none after
#   sleep     arrivals while the waiter sleeps wake it, once each; the flag
#             is down again after the sleep; arrivals while busy coalesce
#   out       nginx's registration (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET):
#             EPOLLOUT edges still come from the kernel (fresh, and after a
#             full ring is drained by the peer), EPOLLIN from arrivals, a
#             close is EPOLLIN|EPOLLRDHUP
#   mixed     a level-triggered and an edge-triggered member in one set
#   fionread  nginx's loop against a client process: FIONREAD-sized reads,
#             then the next edge; requests at random gaps (some while the
#             server sleeps, some while it is busy, some pipelined)
import array, ctypes, fcntl, os, random, select, socket, struct, sys, termios, time, zlib

SYS_PPOLL = {"x86_64": 271, "aarch64": 73}.get(os.uname().machine)
libc = ctypes.CDLL(None, use_errno=True)
IN, OUT, ET = select.EPOLLIN, select.EPOLLOUT, select.EPOLLET
RDHUP = select.EPOLLRDHUP
CASE = sys.argv[1]
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))


def kernel_readable(fd):
    """The kernel's own answer (a raw ppoll: no library hook)."""
    pfd = ctypes.create_string_buffer(struct.pack("ihh", fd, select.POLLIN, 0))
    ts = ctypes.create_string_buffer(struct.pack("qq", 0, 0))
    return libc.syscall(SYS_PPOLL, pfd, 1, ts, None, 0) > 0


def fionread(s):
    a = array.array("i", [0])
    fcntl.ioctl(s.fileno(), termios.FIONREAD, a)
    return a[0]


def drain(s):
    got = b""
    while True:
        try:
            b = s.recv(65536)
        except BlockingIOError:
            return got
        if not b:
            return got
        got += b


ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR)
ls.listen(16)


def pair():
    c = socket.create_connection(ADDR)
    s, _ = ls.accept()
    s.setblocking(False)
    return c, s


def warm(ep, c, s):
    """Round trips through the set (each read empties the ring, which
    leaves the flag down), then a probe that must ring nothing."""
    for _ in range(20):
        c.sendall(b"ping")
        assert ep.poll(2), "warm-up: no event"
        assert drain(s) == b"ping"
        s.sendall(b"pong")
        assert c.recv(100) == b"pong"
    c.sendall(b"probe")
    time.sleep(0.05)
    down = SYS_PPOLL is None or not kernel_readable(s.fileno())
    ev = ep.poll(2)
    assert ev and drain(s) == b"probe", ev
    return down


def edges(ep, fd, timeout=0):
    """EPOLLIN reports for `fd` in one wait."""
    return sum(1 for f, e in ep.poll(timeout) if f == fd and e & IN)


if CASE == "arrivals":
    c, s = pair()
    ep = select.epoll()
    ep.register(s, IN | ET)
    print("arrivals: deferred", warm(ep, c, s), flush=True)
    counts, quiet, unread = [], True, b""
    for i in range(12):
        c.sendall(b"a%d" % i)
        unread += b"a%d" % i
        time.sleep(0.03)  # busy: not in epoll_wait
        counts.append(edges(ep, s.fileno()))
        quiet &= edges(ep, s.fileno(), 0.03) == 0  # no second edge
        if i % 3 == 2:  # left unread twice, then read
            assert drain(s) == unread
            unread = b""
            quiet &= edges(ep, s.fileno(), 0.03) == 0
    print("arrivals: edges", counts, flush=True)
    print("arrivals: quiet between", quiet, flush=True)
    # Three arrivals while busy: one edge (the kernel's too).
    for i in range(3):
        c.sendall(b"b")
        time.sleep(0.01)
    print("arrivals: three while busy", edges(ep, s.fileno()), edges(ep, s.fileno(), 0.03), flush=True)
    assert drain(s) == b"bbb"
    c.sendall(b"probe")
    time.sleep(0.05)
    print("arrivals: still deferred", not kernel_readable(s.fileno()), flush=True)

elif CASE == "sleep":
    c, s = pair()
    ep = select.epoll()
    ep.register(s, IN | ET)
    print("sleep: deferred", warm(ep, c, s), flush=True)
    woken, late = [], []
    for i in range(8):
        # The writer is another thread of this process... a fork keeps the
        # connection shared (never deferred): a thread it is.
        import threading
        t = threading.Timer(0.05, lambda: c.sendall(b"x"))
        t.start()
        t0 = time.time()
        woken.append(edges(ep, s.fileno(), 3))
        late.append(time.time() - t0 > 2)
        t.join()
        woken[-1] += edges(ep, s.fileno(), 0.03)  # no second edge
        if i % 2:
            drain(s)
    print("sleep: edges", woken, "late", any(late), flush=True)
    drain(s)
    c.sendall(b"busy")
    time.sleep(0.05)
    print("sleep: down after sleeps", not kernel_readable(s.fileno()), flush=True)
    print("sleep: busy arrival", edges(ep, s.fileno()), edges(ep, s.fileno(), 0.03), flush=True)

elif CASE == "out":
    c, s = pair()
    ep = select.epoll()
    ep.register(s, IN | OUT | RDHUP | ET)
    first = ep.poll(1)
    print("out: fresh", first == [(s.fileno(), OUT)], flush=True)
    for _ in range(20):
        c.sendall(b"ping")
        assert any(e & IN for _, e in ep.poll(2)), "warm-up: no EPOLLIN"
        assert drain(s) == b"ping"
        s.sendall(b"pong")
        assert c.recv(100) == b"pong"
    c.sendall(b"probe")
    time.sleep(0.05)
    print("out: deferred", not kernel_readable(s.fileno()), flush=True)
    ev = ep.poll(1)
    print("out: arrival", len(ev) == 1 and ev[0][1] & IN != 0, flush=True)
    drain(s)
    # Fill until EAGAIN: no new EPOLLOUT edge until the peer reads.
    sent = 0
    try:
        while True:
            sent += s.send(b"z" * 65536)
    except BlockingIOError:
        pass
    quiet = [e for f, e in ep.poll(0.05) if e & OUT]
    got = 0
    t0 = time.time()
    out_edge = False
    while got < sent and time.time() - t0 < 10:
        got += len(c.recv(1 << 20))
        if not out_edge:
            out_edge = any(e & OUT for _, e in ep.poll(0))
    out_edge = out_edge or any(e & OUT for _, e in ep.poll(2))
    print("out: full ring quiet", not quiet, "writable edge after the peer read", out_edge, "bytes", got == sent, flush=True)
    c.sendall(b"after")
    time.sleep(0.05)
    ev = ep.poll(1)
    print("out: arrival after", [(e & IN != 0) for _, e in ev] == [True], flush=True)
    drain(s)
    c.close()
    ev = ep.poll(2)
    print("out: close", len(ev) == 1 and ev[0][1] & (IN | RDHUP) == IN | RDHUP, flush=True)
    print("out: eof", s.recv(10) == b"", flush=True)

elif CASE == "mixed":
    c1, s1 = pair()
    c2, s2 = pair()
    ep = select.epoll()
    ep.register(s1, IN)
    ep.register(s2, IN | ET)
    d1, d2 = warm(ep, c1, s1), warm(ep, c2, s2)
    print("mixed: deferred", d1 and d2, flush=True)
    ok = True
    for i in range(5):
        c1.sendall(b"l")
        c2.sendall(b"e")
        time.sleep(0.03)
        a = sorted(ep.poll(0))
        b = sorted(ep.poll(0.02))
        ok &= a == sorted([(s1.fileno(), IN), (s2.fileno(), IN)])
        ok &= b == [(s1.fileno(), IN)]  # level: again; edge: not
        assert drain(s1) == b"l"
        if i % 2:
            drain(s2)
        ok &= ep.poll(0.02) == []
    print("mixed: level every wait, edge once per arrival", ok, flush=True)
    drain(s2)
    c1.sendall(b"p")
    c2.sendall(b"q")
    time.sleep(0.05)
    print("mixed: still deferred", not kernel_readable(s1.fileno()) and not kernel_readable(s2.fileno()), flush=True)

elif CASE == "fionread":
    K = 400
    pid = os.fork()
    if pid == 0:
        # The client (another process: both ends are ours, its writes ring
        # only when the server's flag is up).
        c = socket.create_connection(ADDR)
        rnd = random.Random(7)
        i = 0
        while i < K:
            batch = 2 if rnd.random() < 0.2 and i + 1 < K else 1  # pipelined
            want = b""
            for _ in range(batch):
                body = os.urandom(rnd.randrange(1, 3000))
                c.sendall(struct.pack("!I", len(body)) + body)
                want += struct.pack("!I", zlib.crc32(body))
                i += 1
            gap = rnd.choice([0, 0, 0.0002, 0.002, 0.02])
            if gap:
                time.sleep(gap)
            got = b""
            while len(got) < len(want):
                b = c.recv(100)
                assert b, "server closed"
                got += b
            assert got == want, (got, want)
        c.close()
        os._exit(0)
    s, _ = ls.accept()
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s, IN | OUT | RDHUP | ET)
    buf, served, stalls, eof = b"", 0, 0, False
    while not eof:
        ev = ep.poll(3)
        if not ev:
            stalls += 1
            if stalls > 2:
                break
            continue
        if not any(e & IN for _, e in ev):
            continue
        # nginx: one read of what FIONREAD says (at least one byte asked),
        # then the next edge.
        n = max(fionread(s), 1)
        try:
            b = s.recv(n)
        except BlockingIOError:
            continue
        if not b:
            eof = True
        buf += b
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack("!I", buf[:4])[0]:
            n = struct.unpack("!I", buf[:4])[0]
            s.sendall(struct.pack("!I", zlib.crc32(buf[4:4 + n])))
            buf = buf[4 + n:]
            served += 1
    _, status = os.waitpid(pid, 0)
    print("fionread: served", served, "of", K, "stalls", stalls, "client ok", status == 0, flush=True)
