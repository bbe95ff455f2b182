# Edge-triggered registrations and what comes after them (found by the
# deferral review, 2026-12-06): a connection once registered EPOLLET and
# then level-triggered (MOD, DEL + ADD, or also in a second, level-triggered
# set) must keep being reported while data is unread; and an edge-triggered
# reader that reads part of its data gets an edge for the next arrival, and
# one that reads nothing gets an edge for every arrival after a wait that
# reported the last one (the kernel's callback on every arrival).
# Prints one line per case, "CASE ok" or what went wrong. Runs the same
# over kernel TCP.
# usage: epoll_et_then_lt.py   (env TEST_HOST/TEST_PORT)
import os, select, socket, time

IN, ET = select.EPOLLIN, select.EPOLLET
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))


def pair(ls):
    c = socket.create_connection(ls.getsockname())
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s, _ = ls.accept()
    s.setblocking(False)
    return c, s


def level_after_edge(ls, how):
    c, s = pair(ls)
    ep = select.epoll()
    ep.register(s, IN | ET)
    if how == "mod":
        ep.modify(s, IN)
    elif how == "deladd":
        ep.unregister(s)
        ep.register(s, IN)
    else:  # "two": the edge-triggered set stays; only the other is waited on
        first, ep = ep, select.epoll()
        ep.register(s, IN)
    for _ in range(3):
        c.send(b"x" * 100)
        time.sleep(0.01)
    got = [ep.poll(1)]
    n = len(s.recv(10))
    # Level-triggered, 290 bytes unread: reported again, and again.
    got += [ep.poll(1), ep.poll(0)]
    rest = len(s.recv(1000))
    got.append(ep.poll(0))
    want = [[(s.fileno(), IN)]] * 3 + [[]]
    if n == 10 and rest == 290 and got == want:
        return "ok"
    return f"read {n} then {rest}, waits {got}"


def edge_after_partial_read(ls):
    c, s = pair(ls)
    ep = select.epoll()
    ep.register(s, IN | ET)
    fails = []
    for round in range(50):
        c.send(b"a" * 100)
        e1 = ep.poll(1)
        c.send(b"b" * 100)
        time.sleep(0.002)
        s.recv(1)  # part of the data: the second arrival is still an edge
        e2 = ep.poll(1)
        e3 = ep.poll(0)  # no arrival since: no edge
        left = 0
        while True:
            try:
                left += len(s.recv(65536))
            except BlockingIOError:
                break
        if e1 != [(s.fileno(), IN)] or e2 != [(s.fileno(), IN)] or e3 != [] or left != 199:
            fails.append((round, e1, e2, e3, left))
    return "ok" if not fails else f"{len(fails)} of 50 rounds: {fails[:3]}"


def edges_while_unread(ls):
    c, s = pair(ls)
    ep = select.epoll()
    ep.register(s, IN | ET)
    got = []
    for i in range(12):
        c.send(b"u" * 10)
        got.append(ep.poll(1))
        got.append(ep.poll(0))  # no arrival since: nothing
    want = [[(s.fileno(), IN)], []] * 12
    unread = 0
    while True:
        try:
            unread += len(s.recv(65536))
        except BlockingIOError:
            break
    if got == want and unread == 120:
        return "ok"
    return f"waits {got}, {unread} bytes"


def edges_beside_level(ls):
    # Edge-triggered in set A and level-triggered in set B: every arrival
    # after a partial read is an edge in A (the kernel's callback runs for
    # each registration), whatever B needs.
    c, s = pair(ls)
    a = select.epoll()
    b2 = select.epoll()
    b2.register(s, IN)
    a.register(s, IN | ET)
    edges = 0
    for i in range(20):
        c.send(b"v" * 100)
        if a.poll(1) == [(s.fileno(), IN)]:
            edges += 1
        s.recv(10)  # part of it: the rest stays unread
    return "ok" if edges == 20 else f"{edges} edges of 20"


ls = socket.socket()
ls.bind(ADDR)
ls.listen(8)
for how in ("mod", "deladd", "two"):
    print(f"level after edge ({how}):", level_after_edge(ls, how), flush=True)
print("edge after a partial read:", edge_after_partial_read(ls), flush=True)
print("edges while unread:", edges_while_unread(ls), flush=True)
print("edges beside a level-triggered set:", edges_beside_level(ls), flush=True)
