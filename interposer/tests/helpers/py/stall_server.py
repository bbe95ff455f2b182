# An event-loop echo server that stalls: it listens with a small backlog,
# then waits for `go` on stdin before it runs its epoll loop (the test says
# go once every client is in connect, so the backlog overflows as behind a
# busy event loop). Each connection sends one line; the server echoes it
# and closes once the client has closed. argv: HOST PORT BACKLOG. Prints
# `listening`, then on stdin's EOF (or 100 s) `served N accepted N`.
import select, signal, socket, sys

signal.alarm(100)
host, port, backlog = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((host, port))
lst.listen(backlog)
lst.setblocking(False)
print("listening", flush=True)
sys.stdin.readline()

ep = select.epoll()
ep.register(lst.fileno(), select.EPOLLIN)
ep.register(sys.stdin.fileno(), select.EPOLLIN)
conns = {}
served = accepted = 0
done = False
while not done:
    for fd, _ in ep.poll():
        if fd == sys.stdin.fileno():
            done = True
        elif fd == lst.fileno():
            while True:
                try:
                    c, _ = lst.accept()
                except BlockingIOError:
                    break
                accepted += 1
                c.setblocking(False)
                ep.register(c.fileno(), select.EPOLLIN)
                conns[c.fileno()] = (c, bytearray())
        else:
            c, buf = conns[fd]
            try:
                data = c.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if data:
                buf += data
                if buf.endswith(b"\n"):
                    # One short line: a fresh connection's send buffer takes it.
                    c.send(bytes(buf))
                    served += 1
            else:
                ep.unregister(fd)
                c.close()
                del conns[fd]
print("served", served, "accepted", accepted, flush=True)
