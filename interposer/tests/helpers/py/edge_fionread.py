# Two event-loop habits of nginx's proxy (issue 11, found with nginx
# workers in front of an emulated upstream):
# 1. an upstream socket is added to epoll *before* connect() (the library
#    re-points the fd then: the registration must follow);
# 2. an edge-triggered reader reads what FIONREAD says, not until EAGAIN,
#    and waits for the next edge (which must come however many doorbell
#    bytes it left untaken).
import array, fcntl, os, select, socket, sys, termios, time, zlib
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
N = 8 << 20
srv = socket.socket(); srv.bind(ADDR); srv.listen(1)
pid = os.fork()
if pid == 0:
    c, _ = srv.accept()
    data = os.urandom(N)
    c.sendall(str(zlib.crc32(data)).encode().ljust(16) + data)  # blocks while the ring is full
    c.close(); os._exit(0)
ep = select.epoll()
s = socket.socket(); s.setblocking(False)
ep.register(s.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET)
try:
    s.connect(ADDR)
except BlockingIOError:
    pass
got = bytearray(); deadline = time.time() + 20
def fionread():
    a = array.array("i", [0]); fcntl.ioctl(s.fileno(), termios.FIONREAD, a); return a[0]
while len(got) < N + 16 and time.time() < deadline:
    events = ep.poll(1.0)
    if not events:
        continue
    # nginx: read what FIONREAD said, in buffers of 36 KiB, then wait for
    # the next edge (data that came meanwhile is announced by one).
    avail = fionread()
    while avail > 0:
        chunk = s.recv(min(avail, 36864))
        if not chunk:
            break
        got += chunk
        avail -= len(chunk)
print("bytes", len(got) - 16, "crc ok", len(got) >= 16 and int(got[:16]) == zlib.crc32(bytes(got[16:])), flush=True)
if len(got) < N + 16:
    os.kill(pid, 9)  # stalled: the writer is blocked on a full ring
os.waitpid(pid, 0)
