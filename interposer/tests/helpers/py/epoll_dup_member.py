# A pending member (data in the ring, no doorbell) whose fd number is made to
# name the same open file description again, or closed while a dup keeps
# the file open: the kernel's registration (fd, file) lasts as long as the
# file, so epoll must still report the data. Then two pending members and
# room for one event per wait: each has its turn, as the kernel rotates.
import os, select, socket, threading, time, sys
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(8)

def lazy_pair():
    c = socket.create_connection(ADDR); s, _ = ls.accept()
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("d", c.recv(10)))
    t.start(); time.sleep(0.2); s.sendall(b"a"); t.join()
    s.sendall(b"x" * 100)
    time.sleep(0.05)
    return c, s

def case(name, act):
    c, s = lazy_pair()
    ep = select.epoll()
    A = c.detach()
    ep.register(A, select.EPOLLIN)
    act(A)
    ev = ep.poll(1.0)
    n = len(os.read(A, 1000)) if True else 0
    print(f"{name}: events {[(fd == A, e) for fd, e in ev]} then read {n}", flush=True)
    os.close(A); s.close(); ep.close()

def dup2_same(A):
    B = os.dup(A)
    os.dup2(B, A)          # A names the same file again: dup2 closes and reopens A
    os.close(B)

def close_redup(A):
    B = os.dup(A)
    os.close(A)            # file lives via B: the kernel keeps (A, file)
    A2 = os.dup(B)         # lowest free number: A again
    assert A2 == A, (A2, A)
    os.close(B)

def close_keep_dup(A):
    # the brief's case: register A, dup to B, close A; the kernel still
    # reports A's registration (with A's data) for B's data
    global KEEP
    KEEP = os.dup(A)
    os.dup2(KEEP, 900); os.close(KEEP); KEEP = 900
    os.close(A)

case("baseline", lambda A: None)
case("dup2(B, A) same file", dup2_same)
case("close(A); dup(B) -> A", close_redup)
# (the third case leaves A closed; read from KEEP instead)
c, s = lazy_pair(); ep = select.epoll(); A = c.detach(); ep.register(A, select.EPOLLIN)
close_keep_dup(A)
ev = ep.poll(1.0)
print(f"close(A) keep dup: events {[(fd == A, e) for fd, e in ev]} read {len(os.read(KEEP, 1000))}", flush=True)

# Two members with unread data, epoll_wait(maxevents=1) four times.
pairs = [lazy_pair() for _ in range(2)]
ep = select.epoll()
fds = [c.fileno() for c, _ in pairs]
for fd in fds:
    ep.register(fd, select.EPOLLIN)
seen = set()
for _ in range(4):
    for fd, _ in ep.poll(1.0, 1):
        seen.add(fd)
print("one event per wait: every member had its turn", seen == set(fds), flush=True)
os._exit(0)
