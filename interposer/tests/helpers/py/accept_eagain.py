# Issue 12.2: how often accept() says EAGAIN just after epoll said the
# listener is readable, in a single-threaded epoll accept loop (memcached
# logs an error per occurrence). Forks N preloaded clients, one after the
# other (each connects, sends a line, reads it back); the server accepts
# with a non-blocking listener. Prints `eagain E of N` and `served S`.
# Both on one CPU: the server woken by a connect then runs before the
# connector's next step (its message), as on a busy machine.
#   accept_eagain.py HOST N
import os, select, socket, sys

signal_alarm = __import__("signal").alarm(60)
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
host, n = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.bind((host, 0))
s.listen(64)
s.setblocking(False)
port = s.getsockname()[1]
pid = os.fork()
if pid == 0:
    s.close()
    for i in range(n):
        c = socket.create_connection((host, port))
        c.sendall(b"line %d\n" % i)
        got = b""
        while not got.endswith(b"\n"):
            got += c.recv(100)
        assert got == b"line %d\n" % i, got
        c.close()
    os._exit(0)
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN)
eagain = served = 0
while served < n:
    if not ep.poll(10):
        sys.exit("no connection for 10 s")
    try:
        c, _ = s.accept()
    except BlockingIOError:
        eagain += 1
        continue
    c.setblocking(True)
    c.sendall(c.recv(100))
    c.close()
    served += 1
os.waitpid(pid, 0)
print("eagain", eagain, "of", n, flush=True)
print("served", served, flush=True)
