# A non-blocking writer waiting for EPOLLOUT (edge-triggered, IN|OUT, as
# nginx registers) on a full connection must be woken as soon as the reader
# frees room — not only when the reader happens to drain the ring.
import os, select, socket, sys, time, hashlib, threading
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
TOTAL = 8 << 20
srv = socket.socket(); srv.bind(ADDR); srv.listen(4)
c = socket.create_connection(ADDR)
conn, _ = srv.accept()
got = hashlib.sha256(); n = 0; sent = 0; sent_during_pause = None
def reader():
    global n, sent_during_pause
    time.sleep(0.3)  # let the writer fill the connection
    while True:
        b = conn.recv(4096)
        if not b:
            break
        got.update(b); n += len(b)
        if n == 512 << 10:
            # Room freed, ring never seen empty: pause, and see whether the
            # writer used the room meanwhile.
            time.sleep(2)
            sent_during_pause = sent  # by now, beyond what first filled the ring
t = threading.Thread(target=reader); t.start()
c.setblocking(False)
ep = select.epoll(); ep.register(c.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)
data = os.urandom(TOTAL)
while sent < TOTAL:
    try:
        sent += c.send(data[sent:sent + (1 << 20)])
        continue
    except BlockingIOError:
        pass
    if not ep.poll(10):
        print(f"no EPOLLOUT within 10 s after {sent} bytes", flush=True); os._exit(1)
c.close(); t.join(20)
ok = n == TOTAL and got.hexdigest() == hashlib.sha256(data).hexdigest()
# The ring is 1 MiB; the reader freed 512 KiB before pausing.
print(f"bytes ok: {ok}; written by the end of the reader's pause: {sent_during_pause}", flush=True)
os._exit(0 if ok and sent_during_pause and sent_during_pause >= (1 << 20) + (256 << 10) else 1)
