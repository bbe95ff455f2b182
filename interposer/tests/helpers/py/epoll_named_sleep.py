# Doorbells that name the reader's sleep (decision 41): an epoll set's only
# waiter raises its members' flags for a sleep, marked with that sleep's
# name; a producer thread that woke the sleep through one member leaves the
# rings of the others out, and the waiter, woken, reports every member's
# data all the same.
# usage: epoll_named_sleep.py CASE
#   skip:   the server (a forked child) sleeps in epoll_wait on 4 deferred
#           connections and is stopped (SIGSTOP); the client writes to all
#           4 and continues it. Prints how many of the 4 fds the kernel
#           found readable (a raw ppoll) and what epoll_wait reported.
#   thief:  the waiter sleeps on 2 deferred connections A and B; another
#           thread of the server reads A as soon as its data comes; B's
#           data, whose ring may be left out, must still wake the waiter.
import ctypes, os, select, signal, socket, struct, sys, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
CASE = sys.argv[1]
SYS_PPOLL = {"x86_64": 271, "aarch64": 73}.get(os.uname().machine)
libc = ctypes.CDLL(None, use_errno=True)

def kernel_readable(fd):
    """The kernel's own answer (a raw ppoll: no library hook)."""
    pfd = ctypes.create_string_buffer(struct.pack("ihh", fd, select.POLLIN, 0))
    ts = ctypes.create_string_buffer(struct.pack("qq", 0, 0))
    return libc.syscall(SYS_PPOLL, pfd, 1, ts, None, 0) > 0

N = 4 if CASE == "skip" else 2
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(16)
rd, wr = os.pipe()
pid = os.fork()
if pid == 0:
    # The server: N connections in one epoll set, made deferred by a few
    # round trips each (the flag left down after each read).
    os.close(rd)
    ss = [ls.accept()[0] for _ in range(N)]
    for s in ss:
        s.setblocking(False)
    ep = select.epoll()
    by_fd = {s.fileno(): i for i, s in enumerate(ss)}
    for s in ss:
        ep.register(s, select.EPOLLIN)
    for _ in range(10):
        left = set(range(N))
        while left:
            for fd, _ in ep.poll(3):
                i = by_fd[fd]
                if ss[i].recv(100) == b"ping":
                    ss[i].sendall(b"pong")
                    left.discard(i)
    got, thief = {}, []
    if CASE == "thief":
        def steal():
            while True:
                try:
                    d = ss[0].recv(100)
                except BlockingIOError:
                    continue
                thief.append(d)
                return
        th = threading.Thread(target=steal)
        th.start()
    os.write(wr, b"s")  # about to sleep
    events = ep.poll(5)
    seen = sum(kernel_readable(s.fileno()) for s in ss)
    print(f"first wait: {len(events)} event(s), kernel readable {seen} of {N}", flush=True)
    want = set(range(N)) if CASE == "skip" else {1}
    deadline = time.monotonic() + 5
    while not want <= got.keys() and time.monotonic() < deadline:
        for fd, _ in events:
            i = by_fd[fd]
            if CASE == "thief" and i == 0:
                continue  # A is the other thread's to read
            try:
                d = ss[i].recv(100)
            except BlockingIOError:
                continue
            got[i] = d
        if not want <= got.keys():
            events = ep.poll(1)
    if CASE == "thief":
        th.join(5)
        print(f"thief got {thief}", flush=True)
    print(f"got {sorted(got.items())} in time {want <= got.keys()}", flush=True)
    os._exit(0)
# The client.
os.close(wr)
cs = [socket.create_connection(ADDR) for _ in range(N)]
for _ in range(10):
    for c in cs:
        c.sendall(b"ping")
    for c in cs:
        assert c.recv(100) == b"pong"
assert os.read(rd, 1) == b"s"
time.sleep(0.3)  # asleep in the kernel by now
if CASE == "skip":
    os.kill(pid, signal.SIGSTOP)
    for i, c in enumerate(cs):
        c.sendall(b"x%d" % i)
    time.sleep(0.1)
    os.kill(pid, signal.SIGCONT)
else:
    for i, c in enumerate(cs):
        c.sendall(b"x%d" % i)
_, status = os.waitpid(pid, 0)
print("server exit", status, flush=True)
