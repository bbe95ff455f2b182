# Deferred flags (SHMNET_DEFER=1): what the set reports through other
# numbers, outer sets, an exec and another process is exact, and flags stay
# down through an event loop's DEL/ADD churn and after a sleep.
# usage: epoll_deferred_exact.py CASE   (env TEST_HOST/TEST_PORT)
#   churn      hiredis's per-request DEL, ADD EPOLLOUT, DEL, ADD EPOLLIN: the
#              flag stays down (no doorbell for new data), wake-ups still come
#   handoff    the waiter DELs the member, a worker thread reads it and ADDs
#              it back while the waiter sleeps: woken by data that came
#   lower      a sleep woken by one member leaves the other's flag down after
#              (but not once it was idle for many sleeps)
#   dupdrain   data that came while the flag was down, the set dup'd, the
#              member drained: a wait on the dup reports nothing
#   dupclose   ... the member closed: nothing
#   dupwait    ... a wait on the dup reports it; the set still defers
#   nest       ... the set nested in another: the outer reports it until it
#              is drained, then nothing, then new data again
#   scm        the set passed to another process (SCM_RIGHTS), which waits on
#              it past us: woken by data that comes while we are busy
#   exec       the program execs itself with the set and member inheritable:
#              the new image's wait reports the data no doorbell announced
import ctypes, os, select, socket, struct, subprocess, sys, threading, time

SYS_PPOLL = {"x86_64": 271, "aarch64": 73}.get(os.uname().machine)
libc = ctypes.CDLL(None, use_errno=True)
IN, OUT = select.EPOLLIN, select.EPOLLOUT


def kernel_readable(fd):
    """The kernel's own answer (a raw ppoll: no library hook)."""
    pfd = ctypes.create_string_buffer(struct.pack("ihh", fd, select.POLLIN, 0))
    ts = ctypes.create_string_buffer(struct.pack("qq", 0, 0))
    return libc.syscall(SYS_PPOLL, pfd, 1, ts, None, 0) > 0


def deferred(c, s, ep, tag):
    """New data, and the kernel sees no doorbell for it; then it is read."""
    c.sendall(b"probe"); time.sleep(0.05)
    print(f"{tag}: deferred {SYS_PPOLL is None or not kernel_readable(s.fileno())}", flush=True)
    assert ep.poll(2) and s.recv(100) == b"probe"


def late(ep, c, tag):
    """Data that comes while the wait sleeps wakes it."""
    threading.Timer(0.3, lambda: c.sendall(b"late")).start()
    ev = ep.poll(3)
    print(f"{tag}: late data woke the wait {bool(ev)}", flush=True)


if sys.argv[1] == "after":
    # The exec'd image: the inherited set and both ends of the connection.
    epfd, sfd, cfd = map(int, sys.argv[2:5])
    ep = select.epoll.fromfd(epfd)
    s = socket.socket(fileno=sfd); c = socket.socket(fileno=cfd)
    ev = ep.poll(2)
    print(f"exec: after exec {ev == [(sfd, IN)]}", flush=True)
    assert s.recv(100) == b"early"
    late(ep, c, "exec")
    os._exit(0)

CASE = sys.argv[1]
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
if CASE == "scm":
    # The other process exists before any connection (a fork marks what
    # exists then as shared, which never defers).
    here, there = socket.socketpair()
    code = ("import select, socket, sys\n"
            "u = socket.socket(fileno=int(sys.argv[1]))\n"
            "_, fds, _, _ = socket.recv_fds(u, 16, 1)\n"
            "ep = select.epoll.fromfd(fds[0]); u.sendall(b'got')\n"
            "u.sendall(b'woken %d' % bool(ep.poll(3)))\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(there.fileno())],
                             pass_fds=[there.fileno()])
    there.close()

ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(16)


def pair():
    c = socket.create_connection(ADDR)
    s, _ = ls.accept()
    s.setblocking(False)
    return c, s


def warm(ep, c, s):
    for _ in range(20):
        c.sendall(b"ping")
        assert ep.poll(2), "warm-up: no event"
        assert s.recv(100) == b"ping"
        s.sendall(b"pong")
        assert c.recv(100) == b"pong"


c, s = pair()
ep = select.epoll()
ep.register(s, IN)
warm(ep, c, s)
deferred(c, s, ep, CASE)

if CASE == "churn":
    rang = 0
    for _ in range(20):
        ep.modify(s, IN); ep.unregister(s); ep.register(s, OUT)
        assert ep.poll(2) == [(s.fileno(), OUT)]
        s.send(b"req")
        ep.unregister(s); ep.register(s, IN)
        assert c.recv(100) == b"req"
        c.sendall(b"rep")
        rang += kernel_readable(s.fileno())  # a doorbell for the reply?
        assert ep.poll(2) == [(s.fileno(), IN)]
        assert s.recv(100) == b"rep"
    print(f"churn: replies rang {rang} of 20", flush=True)
    deferred(c, s, ep, "churn after")
    late(ep, c, CASE)
elif CASE == "handoff":
    # The waiter takes the connection out of its set and hands it to a
    # worker thread, which reads, and adds it back while the waiter sleeps
    # (data came meanwhile, before and after the worker's read).
    ep.unregister(s)
    def worker():
        time.sleep(0.1)
        c.sendall(b"req2"); time.sleep(0.05)
        assert s.recv(100) == b"req2"
        c.sendall(b"req3"); time.sleep(0.05)
        ep.register(s, IN)
    threading.Thread(target=worker).start()
    print("handoff: woken", ep.poll(3) == [(s.fileno(), IN)], flush=True)
    assert s.recv(100) == b"req3"
    late(ep, c, CASE)
elif CASE == "lower":
    c2, s2 = pair()
    ep.register(s2, IN)
    warm(ep, c2, s2)
    threading.Timer(0.2, lambda: c.sendall(b"wake")).start()
    print("lower: woken by the first", ep.poll(3) == [(s.fileno(), IN)], flush=True)
    c2.sendall(b"x"); time.sleep(0.05)
    print("lower: second flag down after the sleep", not kernel_readable(s2.fileno()), flush=True)
    print("lower: both reported", sorted(ep.poll(0)) == sorted([(s.fileno(), IN), (s2.fileno(), IN)]), flush=True)
    assert s.recv(100) == b"wake" and s2.recv(100) == b"x"
    # The second is read no more: some sleeps later its flag stays up.
    for _ in range(20):
        threading.Timer(0.01, lambda: c.sendall(b"w")).start()
        assert ep.poll(2) == [(s.fileno(), IN)] and s.recv(100) == b"w"
    c2.sendall(b"y"); time.sleep(0.05)
    print("lower: an idle member's flag stays up", kernel_readable(s2.fileno()), flush=True)
    assert ep.poll(0) == [(s2.fileno(), IN)] and s2.recv(100) == b"y"
    late(ep, c2, CASE)
elif CASE in ("dupdrain", "dupclose", "dupwait"):
    c.sendall(b"early"); time.sleep(0.05)
    dup = select.epoll.fromfd(os.dup(ep.fileno()))
    if CASE == "dupdrain":
        assert s.recv(100) == b"early"
        print("dupdrain: after drain", dup.poll(0.2), ep.poll(0.2), flush=True)
    elif CASE == "dupclose":
        s.close()
        print("dupclose: after close", dup.poll(0.2), ep.poll(0.2), flush=True)
    else:
        print("dupwait: dup reports", dup.poll(1) == [(s.fileno(), IN)], flush=True)
        assert s.recv(100) == b"early"
        deferred(c, s, dup, "dupwait still")
        late(dup, c, CASE)
elif CASE == "nest":
    c.sendall(b"early"); time.sleep(0.05)
    outer = select.epoll()
    outer.register(ep.fileno(), IN)
    print("nest: outer reports", outer.poll(1) == [(ep.fileno(), IN)], flush=True)
    print("nest: outer again", outer.poll(0) == [(ep.fileno(), IN)], flush=True)
    assert s.recv(100) == b"early"
    print("nest: after drain", outer.poll(0.2), ep.poll(0.2), flush=True)
    late(outer, c, CASE)
    print("nest: inner reports", ep.poll(0) == [(s.fileno(), IN)], flush=True)
elif CASE == "scm":
    socket.send_fds(here, [b"set"], [ep.fileno()])
    assert here.recv(3) == b"got"
    time.sleep(0.2)  # busy: no epoll_wait here
    c.sendall(b"late")
    print(f"scm: {here.recv(100).decode()}", flush=True)
    other.wait()
elif CASE == "exec":
    c.sendall(b"early"); time.sleep(0.05)
    for f in (ep.fileno(), s.fileno(), c.fileno()):
        os.set_inheritable(f, True)
    os.execv(sys.executable, [sys.executable, __file__, "after",
                              str(ep.fileno()), str(s.fileno()), str(c.fileno())])
os._exit(0)
