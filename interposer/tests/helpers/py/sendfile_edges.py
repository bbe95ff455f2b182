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
