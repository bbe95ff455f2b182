# A server whose listener is shared by a fork (so it has a parking queue)
# accepts in blocking mode with exactly one free fd, in the parent and in
# the forked child: kernel TCP's accept takes the connection; so must
# ours (decision 58: the memfd borrows the connection's number, the
# connection waits in an io_uring slot). Prints "<who> accepted" or
# "<who> EMFILE" for each, after checking a byte over each connection.
import os, resource, socket, sys
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(ADDR); srv.listen(64)
r, w = os.pipe()
client = os.fork()
if client == 0:  # connects once per byte read, sends b"x", keeps them
    srv.close(); os.close(w)
    conns = []
    while os.read(r, 1):
        c = socket.create_connection(ADDR); c.sendall(b"x"); conns.append(c)
    os._exit(0)
os.close(r)
kept = []
def one():
    os.write(w, b"c")
    a, _ = srv.accept()
    assert a.recv(1) == b"x"
    kept.append(a)
for _ in range(3):
    one()
pid = os.fork()
who = "child" if pid == 0 else "parent"
if pid != 0:
    os.waitpid(pid, 0)
fill = []
while True:
    try:
        fill.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        break
os.close(fill.pop())  # exactly one free number
try:
    one()
    print(who, "accepted", flush=True)
except OSError as e:
    print(who, "EMFILE" if e.errno == 24 else e, flush=True)
for f in fill:
    os.close(f)
if pid == 0:
    os._exit(0)
os.close(w)
os.waitpid(client, 0)
