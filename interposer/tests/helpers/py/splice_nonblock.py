# splice(SPLICE_F_NONBLOCK) is EAGAIN at once when the pipe side would
# block: an empty pipe into the connection, a full pipe out of it.
import os, socket, time, errno
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ls = socket.socket(); ls.bind(ADDR); ls.listen(4)
c = socket.create_connection(ADDR); s, _ = ls.accept()
def attempt(what, *a):
    t = time.monotonic()
    try:
        n = os.splice(*a, flags=os.SPLICE_F_NONBLOCK)
        r = f"returned {n}"
    except BlockingIOError:
        r = "EAGAIN"
    print(what, r, "fast" if time.monotonic() - t < 1 else "slow", flush=True)
r, w = os.pipe()
attempt("empty pipe -> socket:", r, c.fileno(), 100)
r2, w2 = os.pipe()
os.set_blocking(w2, False)
try:
    while True: os.write(w2, b"f" * 65536)
except BlockingIOError:
    pass
os.set_blocking(w2, True)
s.sendall(b"d" * 1000); time.sleep(0.1)
attempt("socket -> full pipe:", c.fileno(), w2, 1000)
