# A client out of fds: connect fails (the library needs fds of its own for
# a connection) and the server never accepts a connection the client does
# not have. The server is a forked child with the full limit; the client
# lowers its own RLIMIT_NOFILE and opens connections until one fails.
import os, resource, socket, sys, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(ADDR); srv.listen(512)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    srv.settimeout(2.0)
    got = []
    try:
        while True:
            got.append(srv.accept()[0])
    except socket.timeout:
        pass
    os.write(w, str(len(got)).encode())
    os._exit(0)
os.close(w); srv.close()
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
conns, err = [], None
while len(conns) < 1000:
    try:
        conns.append(socket.create_connection(ADDR))
    except OSError as e:
        err = e.errno
        break
accepted = int(os.read(r, 32) or b"-1")
os.waitpid(pid, 0)
print("opened", len(conns), "accepted", accepted, "error", err, flush=True)
os._exit(0)
