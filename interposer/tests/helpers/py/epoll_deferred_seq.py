# Deferred flags (SHMNET_DEFER=1): the lost wake-ups a review found, each a
# sequence after which the next data must still wake epoll_wait.
# usage: repro.py CASE   (env HOST/PORT)
import ctypes, os, select, socket, struct, sys, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
CASE = sys.argv[1]
SYS_PPOLL = {"x86_64": 271, "aarch64": 73}.get(os.uname().machine)
libc = ctypes.CDLL(None, use_errno=True)

def kernel_readable(fd):
    pfd = ctypes.create_string_buffer(struct.pack("ihh", fd, select.POLLIN, 0))
    ts = ctypes.create_string_buffer(struct.pack("qq", 0, 0))
    return libc.syscall(SYS_PPOLL, pfd, 1, ts, None, 0) > 0

ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(16)
def pair():
    c = socket.create_connection(ADDR)
    s, _ = ls.accept()
    s.setblocking(False)
    return c, s
c, s = pair()
ep = select.epoll()
ep.register(s, select.EPOLLIN)
extra = None
if CASE in ("delad", "modout"):
    c2, s2 = pair()          # keeps the set alive across DEL
    ep.register(s2, select.EPOLLIN)
    extra = (c2, s2)

def warm():
    for i in range(20):
        c.sendall(b"ping")
        assert ep.poll(2), "warm-up: no event"
        assert s.recv(100) == b"ping"
        s.sendall(b"pong")
        assert c.recv(100) == b"pong"
warm()
c.sendall(b"probe"); time.sleep(0.05)
print("deferred:", not kernel_readable(s.fileno()), flush=True)
assert ep.poll(2) and s.recv(100) == b"probe"

if CASE == "thread":
    # data comes while the flag is down; a second thread's epoll_wait crowds
    # the set; the data is read with ONE recv (no EAGAIN read after it).
    c.sendall(b"x1"); time.sleep(0.05)
    got = []
    th = threading.Thread(target=lambda: got.append(ep.poll(1))); th.start(); th.join()
    print("second thread got", got, flush=True)
    assert s.recv(100) == b"x1"
elif CASE == "pollfd":
    c.sendall(b"x1"); time.sleep(0.05)
    p = select.poll(); p.register(ep.fileno(), select.POLLIN)
    print("poll on epfd:", p.poll(1000), flush=True)
    assert ep.poll(0)
    assert s.recv(100) == b"x1"
elif CASE == "pollpartial":
    c.sendall(b"x1"); time.sleep(0.05)
    p = select.poll(); p.register(ep.fileno(), select.POLLIN)
    print("poll on epfd:", p.poll(1000), flush=True)
    assert ep.poll(0)
    assert s.recv(1) == b"x"      # partial: b"1" stays
    t = time.time(); r = p.poll(2000)
    print(f"pollpartial: poll on epfd again: {r} after {time.time()-t:.2f}s -> {'OK' if r else 'NOT WOKEN'}", flush=True)
    os._exit(0)
elif CASE == "reopen":
    ep.close()
    ep = select.epoll(); ep.register(s, select.EPOLLIN)
    warm()
    c.sendall(b"probe2"); time.sleep(0.05)
    print("reopen: deferred again after the set was closed and made anew:", not kernel_readable(s.fileno()), flush=True)
    os._exit(0)
elif CASE == "delad":
    # DEL while listed, a wait that drops the entry, ADD again
    ep.unregister(s)
    print("poll between:", ep.poll(0.05), flush=True)
    ep.register(s, select.EPOLLIN)
    c.sendall(b"x1")
    assert ep.poll(2)
    assert s.recv(100) == b"x1"
elif CASE == "delad1":
    # one member: the set is dropped at DEL and made again (Arc address reuse)
    ep.unregister(s)
    ep.register(s, select.EPOLLIN)
    c.sendall(b"x1")
    assert ep.poll(2)
    assert s.recv(100) == b"x1"
elif CASE == "modout":
    ep.modify(s, select.EPOLLOUT)
    print("poll between:", ep.poll(0.05)[:1], flush=True)
    ep.modify(s, select.EPOLLIN)
    c.sendall(b"x1")
    assert ep.poll(2)
    assert s.recv(100) == b"x1"

# Now the flag should be up (or the set should look at the ring): the peer
# sends later while we sleep in epoll_wait.
time.sleep(0.05)
print("kernel sees flag up? (no data yet)", flush=True)
threading.Timer(0.3, lambda: c.sendall(b"late")).start()
t = time.time()
ev = ep.poll(3)
dt = time.time() - t
print(f"{CASE}: events {ev} after {dt:.2f}s -> {'OK' if ev else 'LOST WAKE-UP'}", flush=True)
os._exit(0)
