# How many connections a client opens under RLIMIT_NOFILE = LIMIT (argv 1),
# each then checked with a byte echoed by the server (a forked child with
# the full limit, an epoll loop). Run emulated (preloaded) and over kernel
# TCP: a connection must cost the emulated client no more fds than kernel
# TCP's.
# Prints "opened N echoed M error E".
import os, resource, selectors, socket, sys
LIMIT = int(sys.argv[1])
host = os.environ.get("TEST_HOST", "127.0.0.1")
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, int(os.environ.get("TEST_PORT", "0")))); srv.listen(1024)
addr = srv.getsockname()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    sel = selectors.DefaultSelector()
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ)
    while True:
        events = sel.select(timeout=5)
        if not events:
            os._exit(1)
        for key, _ in events:
            if key.fileobj is srv:
                try:
                    c, _ = srv.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
            else:
                try:
                    data = key.fileobj.recv(16)
                except BlockingIOError:
                    continue
                if data == b"q":
                    os._exit(0)
                if not data:
                    sel.unregister(key.fileobj); key.fileobj.close()
                else:
                    key.fileobj.sendall(data)
os.close(w); srv.close()
resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
conns, err = [], None
while True:
    try:
        conns.append(socket.create_connection(addr))
    except OSError as e:
        err = e.errno
        break
# Room for the connection that stops the server: an emulated connect needs
# two fds more than kernel TCP's for a moment (its Unix socket until it is
# moved onto the application's number, and the probe of its port's name).
for _ in range(3):
    conns.pop().close()
echoed = 0
for c in conns:
    c.sendall(b"x")
for c in conns:
    c.settimeout(5)
    echoed += c.recv(1) == b"x"
stop = socket.create_connection(addr); stop.sendall(b"q")
os.waitpid(pid, 0)
print("opened", len(conns) + 3, "echoed", echoed, "error", err, flush=True)
