# sendfile edge cases, against what the kernel does: a pipe as the source is
# EINVAL; a count past the end of the file returns what was there at once
# (no wait for ring room); at the end of the file, 0 even when the ring is
# full and the socket non-blocking.
import os, socket, time, errno, tempfile
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ls = socket.socket(); ls.bind(ADDR); ls.listen(4)
c = socket.create_connection(ADDR); s, _ = ls.accept()
r, w = os.pipe(); os.write(w, b"p" * 10)
try:
    os.sendfile(c.fileno(), r, None, 10); print("pipe: sent")
except OSError as e:
    print("pipe:", errno.errorcode[e.errno], flush=True)
f = tempfile.TemporaryFile(); f.write(os.urandom(100000)); f.flush()
t = time.monotonic()
n = os.sendfile(c.fileno(), f.fileno(), 0, 1 << 20)
print("short file:", n, "fast" if time.monotonic() - t < 1 else "slow", flush=True)
c.setblocking(False)
try:
    while True: c.send(b"x" * 65536)
except BlockingIOError:
    pass
print("eof, full ring:", os.sendfile(c.fileno(), f.fileno(), 100000, 1000), flush=True)
# A source the program fstat'ed itself: sendfile then makes no fstat of its
# own (the library notes what fstat found), and must still answer as the
# kernel: 0 at the end of the file, whatever the socket's state; EINVAL
# once the number names a pipe (closed and reused, or dup2'ed over).
import signal
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
c2 = socket.create_connection(ADDR); s2, _ = ls.accept()
def attempt(label, fd, off, n):
    try:
        print(label, os.sendfile(c2.fileno(), fd, off, n), flush=True)
    except OSError as e:
        print(label, errno.errorcode[e.errno], flush=True)
g = tempfile.TemporaryFile(); g.write(b"a" * 1000); g.flush(); os.fstat(g.fileno())
attempt("known file:", g.fileno(), 0, 10)
attempt("known eof:", g.fileno(), 1000, 10)
num = g.fileno(); kept = os.dup(num); g.close()
pr, pw = os.pipe(); os.write(pw, b"p" * 10)
attempt("pipe on a known number:", num, None, 10)
h = tempfile.TemporaryFile(); h.write(b"b" * 100); h.flush(); os.fstat(h.fileno())
os.dup2(pr, h.fileno())
attempt("dup2 of a pipe over a known file:", h.fileno(), None, 10)
got = s2.recv(100)
s2.close(); time.sleep(0.1)
attempt("known eof, peer closed:", kept, 1000, 10)
