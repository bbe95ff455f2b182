# A member made pending (data no doorbell announced) then registered as
# level-triggered, edge-triggered, one-shot or EPOLLPRI only: poll and
# select on the epoll fd say readable exactly when epoll_wait would
# report an event, as the kernel does.
import os, select, socket, sys, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(16)
def case(name, mask):
    c = socket.create_connection(ADDR)
    s, _ = ls.accept(); s.setblocking(False)
    import threading
    threading.Timer(0.05, lambda: c.sendall(b"x")).start()
    s.setblocking(True); assert s.recv(10) == b"x"; s.setblocking(False)
    c.sendall(b"early")          # flag down after the lazy sleep: no doorbell
    time.sleep(0.05)
    ep = select.epoll()
    ep.register(s, mask)
    first = ep.poll(0)
    second = ep.poll(0)
    p = select.poll(); p.register(ep.fileno(), select.POLLIN)
    pr = [p.poll(0) for _ in range(3)]
    r, _, _ = select.select([ep.fileno()], [], [], 0)
    print(f"{name}: epoll_wait#1={first} #2={second} poll(epfd)={pr} select(epfd)={bool(r)}", flush=True)
    ep.close(); s.close(); c.close()
case("LT", select.EPOLLIN)
case("ET", select.EPOLLIN | select.EPOLLET)
case("ONESHOT", select.EPOLLIN | select.EPOLLONESHOT)
case("PRI-only", select.EPOLLPRI)
os._exit(0)
