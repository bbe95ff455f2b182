# A reader raises its flag only when it waits (lazy): data can then sit in
# the ring with no doorbell byte. poll/select must look at the ring, and a
# connection joining an epoll set must be reported (level-triggered until
# drained, edge-triggered and one-shot once), without spurious wake-ups.
import os, select, socket, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ls = socket.socket(); ls.bind(ADDR); ls.listen(8)

def lazy_pair():
    """c has waited in a blocking recv once (its flag is down again), and
    s then sent 100 bytes: they are in the ring, with no doorbell byte."""
    c = socket.create_connection(ADDR); s, _ = ls.accept()
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("d", c.recv(10)))
    t.start(); time.sleep(0.2); s.sendall(b"a"); t.join()
    assert got["d"] == b"a", got
    s.sendall(b"x" * 100)
    time.sleep(0.05)
    return c, s

def events(ep, t):
    return [e for _, e in ep.poll(t)]

# epoll, level-triggered: reported, again after a partial read, none once drained
c, s = lazy_pair()
ep = select.epoll(); ep.register(c.fileno(), select.EPOLLIN)
e1 = events(ep, 1); part = len(c.recv(10)); e2 = events(ep, 1)
rest = len(c.recv(1000)); t0 = time.monotonic(); e3 = events(ep, 0.3); quiet = time.monotonic() - t0
s.sendall(b"y" * 5); e4 = events(ep, 1)
print("lt:", bool(e1), part, bool(e2), rest, e3 == [] and quiet > 0.2, bool(e4), flush=True)

# epoll, edge-triggered: one event, none without new data, one for new data
c, s = lazy_pair()
ep = select.epoll(); ep.register(c.fileno(), select.EPOLLIN | select.EPOLLET)
e1 = events(ep, 1); e2 = events(ep, 0.2)
s.sendall(b"z"); e3 = events(ep, 1)
print("et:", bool(e1), e2 == [], bool(e3), len(c.recv(1000)), flush=True)

# epoll, one-shot: one event until re-armed, even as more data comes
c, s = lazy_pair()
ep = select.epoll(); ep.register(c.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
e1 = events(ep, 1); s.sendall(b"w"); e2 = events(ep, 0.2)
ep.modify(c.fileno(), select.EPOLLIN | select.EPOLLONESHOT); e3 = events(ep, 1)
print("oneshot:", bool(e1), e2 == [], bool(e3), len(c.recv(1000)), flush=True)

# poll and select see data no doorbell announced
c, s = lazy_pair()
p = select.poll(); p.register(c.fileno(), select.POLLIN)
r1 = p.poll(1000); r2, _, _ = select.select([c], [], [], 1)
n = len(c.recv(1000))
t0 = time.monotonic(); r3 = p.poll(300); quiet = time.monotonic() - t0
print("poll:", bool(r1), bool(r2), n, r3 == [] and quiet > 0.2, flush=True)

# a kernel fd in the same set wakes the wait (spinning included)
rd, wr = os.pipe()
threading.Timer(0.2, lambda: os.write(wr, b"!")).start()
p = select.poll(); p.register(c.fileno(), select.POLLIN); p.register(rd, select.POLLIN)
r = p.poll(3000)
print("mixed:", [fd == rd for fd, _ in r], flush=True)

# blocking ping-pong through poll, many rounds: no lost wake-up
c, s = lazy_pair(); c.recv(1000)
def echo():
    while True:
        d = s.recv(64)
        if not d: return
        s.sendall(d)
threading.Thread(target=echo, daemon=True).start()
p = select.poll(); p.register(c.fileno(), select.POLLIN)
ok = 0
for i in range(2000):
    c.sendall(b"%06d" % i)
    if not p.poll(5000): break
    if c.recv(64) != b"%06d" % i: break
    ok += 1
print("pingpong:", ok, flush=True)
os._exit(0)
