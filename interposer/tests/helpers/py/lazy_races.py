# Review regressions for lazy readers (each case once lost data or
# misreported; kernel TCP gives the expected line):
# - epoll sets joined with data in the ring: EPOLLIN|EPOLLOUT (ET and LT),
#   ADD+MOD, MOD adding EPOLLIN, ONESHOT re-armed after a partial read,
#   ADD/DEL/ADD, two sets;
# - a poller (poll or epoll) in one thread while another thread sleeps in a
#   blocking recv of the same connection;
# - poll's count equals the entries it filled (CPython walks its array by it).
import os, select, socket, sys, threading, time
HOST, PORT = os.environ["TEST_HOST"], int(os.environ["TEST_PORT"])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((HOST, PORT)); ls.listen(64)
E = select

def pair():
    c = socket.create_connection((HOST, PORT)); s, _ = ls.accept(); return c, s

def lazy_pair(n=100):
    """c did a blocking recv once (flag now down), then s sent n bytes."""
    c, s = pair(); got = {}
    t = threading.Thread(target=lambda: got.setdefault("d", c.recv(10)))
    t.start(); time.sleep(0.2); s.sendall(b"a"); t.join()
    assert got["d"] == b"a", got
    s.sendall(b"x" * n); time.sleep(0.05)
    return c, s

def names(evs):
    out = []
    for _, e in evs:
        out.append("|".join(k[5:] for k in ("EPOLLIN", "EPOLLOUT", "EPOLLHUP") if e & getattr(E, k)))
    return out

c, s = lazy_pair(); ep = E.epoll(); ep.register(c.fileno(), E.EPOLLIN | E.EPOLLOUT | E.EPOLLET)
print("A", names(ep.poll(1)), names(ep.poll(0.3)), flush=True)
c, s = lazy_pair(); ep = E.epoll(); ep.register(c.fileno(), E.EPOLLIN | E.EPOLLOUT)
print("I", [names(ep.poll(1)) for _ in range(3)], flush=True)
c, s = lazy_pair(); ep = E.epoll(); ep.register(c.fileno(), E.EPOLLIN); ep.modify(c.fileno(), E.EPOLLIN)
print("B", names(ep.poll(1)), flush=True)
c, s = lazy_pair(); ep = E.epoll(); ep.register(c.fileno(), E.EPOLLOUT); r1 = names(ep.poll(1))
ep.modify(c.fileno(), E.EPOLLIN)
print("C", r1, names(ep.poll(1)), flush=True)
c, s = lazy_pair(); ep = E.epoll(); ep.register(c.fileno(), E.EPOLLIN | E.EPOLLONESHOT)
r1 = names(ep.poll(1)); part = len(c.recv(10)); ep.modify(c.fileno(), E.EPOLLIN | E.EPOLLONESHOT)
print("D", r1, part, names(ep.poll(1)), flush=True)
c, s = lazy_pair(); ep = E.epoll()
ep.register(c.fileno(), E.EPOLLIN); ep.unregister(c.fileno()); ep.register(c.fileno(), E.EPOLLIN)
print("E", names(ep.poll(1)), flush=True)
c, s = lazy_pair(); ep1 = E.epoll(); ep2 = E.epoll()
ep1.register(c.fileno(), E.EPOLLIN); ep2.register(c.fileno(), E.EPOLLIN)
print("F", names(ep2.poll(1)), names(ep1.poll(1)), flush=True)

def race(use_epoll, rounds=10):
    """A polls c while B sleeps in c.recv(10); 100 bytes come: B takes 10,
    A must see the 90 left."""
    lost = 0
    for _ in range(rounds):
        c, s = pair(); c.sendall(b"q"); s.recv(1); res = {}
        def reader(): res["b"] = c.recv(10)
        def poller():
            if use_epoll:
                ep = E.epoll(); ep.register(c.fileno(), E.EPOLLIN); res["a"] = bool(ep.poll(2))
            else:
                p = E.poll(); p.register(c.fileno(), E.POLLIN); res["a"] = bool(p.poll(2000))
        tb = threading.Thread(target=reader); tb.start(); time.sleep(0.05)
        ta = threading.Thread(target=poller); ta.start(); time.sleep(0.05)
        s.sendall(b"x" * 100); tb.join(); ta.join()
        lost += not res["a"]
        c.close(); s.close()
    return lost

def race_later(rounds=10):
    """A polls c; B's one blocking recv takes "x"; "y" comes 100 ms later."""
    lost = 0
    for _ in range(rounds):
        c, s = pair(); c.sendall(b"q"); s.recv(1); res = {}
        tb = threading.Thread(target=lambda: res.setdefault("b", c.recv(1000))); tb.start()
        time.sleep(0.05)
        def poller():
            p = E.poll(); p.register(c.fileno(), E.POLLIN); res["a"] = p.poll(3000)
        ta = threading.Thread(target=poller); ta.start(); time.sleep(0.05)
        s.sendall(b"x"); tb.join(); time.sleep(0.1); s.sendall(b"y"); ta.join()
        lost += not res["a"]
        c.close(); s.close()
    return lost

print("race poll lost", race(False), "epoll lost", race(True), "later lost", race_later(), flush=True)

c, s = pair(); rd, wr = os.pipe(); os.write(wr, b"!")
p1 = E.poll(); p1.register(c.fileno(), E.POLLIN)
p2 = E.poll(); p2.register(c.fileno(), E.POLLIN); p2.register(rd, E.POLLIN)
odd = 0
for i in range(100):
    threading.Timer(0.005, lambda: s.send(b"d")).start()
    p1.poll(2000); c.recv(10)
    r = p2.poll(1000)
    odd += len(r) != 1 or r[0][0] != rd
print("overcount odd", odd, flush=True)
os._exit(0)
