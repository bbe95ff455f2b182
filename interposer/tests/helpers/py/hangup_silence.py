# What poll says of a connection whose peer closed, to a caller
# that asked for neither reading nor writing (stunnel with its buffer full
# polls its backend with events 0): kernel TCP says nothing (POLLHUP only
# once both directions are shut), a Unix socket says POLLHUP. Printed for
# readiness.rs to compare with kernel TCP's run (epoll's answers to such a
# registration are still the Unix socket's: docs/compatibility.md). argv:
# HOST (a port-0 listener there).
import os, select, socket, sys, threading, time

HOST = sys.argv[1]
ls = socket.socket()
ls.bind((HOST, 0))
ls.listen(8)


def pair():
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    return c, a


def pl(s, ev):
    p = select.poll()
    p.register(s, ev)
    r = p.poll(50)
    return r[0][1] if r else 0


def ep(s, ev, waits=3):
    e = select.epoll()
    e.register(s, ev)
    got = [sorted(x for _, x in e.poll(0.05)) for _ in range(waits)]
    e.close()
    return got


def with_pipe(s):
    # The closed connection (events 0) beside a pipe written 100 ms later:
    # only the pipe is reported, after the write, not the connection.
    r, w = os.pipe()
    timer = threading.Timer(0.1, lambda: os.write(w, b"!"))
    timer.start()
    t = time.monotonic()
    p = select.poll()
    p.register(s, 0)
    p.register(r, select.POLLIN)
    got = sorted((fd == r, ev) for fd, ev in p.poll(2000))
    waited = time.monotonic() - t >= 0.05
    timer.join()
    os.close(r)
    os.close(w)
    return got, waited


c, a = pair()
a.sendall(b"x" * 1000)
a.close()
time.sleep(0.2)
print("closed-unread poll", pl(c, 0), pl(c, select.POLLOUT), pl(c, select.POLLIN))
print("closed-unread epoll", ep(c, select.EPOLLOUT, 1), ep(c, select.EPOLLIN, 1))
print("closed-unread poll-with-pipe", *with_pipe(c))
c2, a2 = pair()
a2.close()
time.sleep(0.2)
print("closed-empty poll", pl(c2, 0), pl(c2, select.POLLOUT), pl(c2, select.POLLIN))
c2.shutdown(socket.SHUT_WR)
time.sleep(0.1)
print("both-shut poll", pl(c2, 0), pl(c2, select.POLLOUT))
print("both-shut epoll", ep(c2, 0, 1))
