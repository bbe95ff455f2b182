# After a blocking recv() that had to wait, the fd must stay pollable:
# (a) a short read leaves data: select() says readable;
# (b) a blocking MSG_PEEK: select() says readable, and again after more data;
# (c) everything was read: select() wakes for the next message.
import socket, threading, time, select, os
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ls = socket.socket(); ls.bind(ADDR); ls.listen(4)

def pair():
    c = socket.create_connection(ADDR); s, _ = ls.accept(); return c, s

def blocked(c, size, flags=0):
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("got", c.recv(size, flags)))
    t.start(); time.sleep(0.3)
    return t, res

c, s = pair()
t, res = blocked(c, 10); s.sendall(b"x" * 100); t.join()
r, _, _ = select.select([c], [], [], 2)
print("a:", len(res["got"]), "readable", bool(r), "rest", len(c.recv(1000)) if r else 0, flush=True)

c, s = pair()
t, res = blocked(c, 10, socket.MSG_PEEK); s.sendall(b"y" * 100); t.join()
r1, _, _ = select.select([c], [], [], 2)
s.sendall(b"z" * 100)
r2, _, _ = select.select([c], [], [], 2)
print("b:", len(res["got"]), "readable", bool(r1), bool(r2), flush=True)

c, s = pair()
t, res = blocked(c, 1000); s.sendall(b"w" * 100); t.join()
threading.Timer(0.3, lambda: s.sendall(b"v" * 50)).start()
r, _, _ = select.select([c], [], [], 3)
print("c:", len(res["got"]), "next message readable", bool(r), flush=True)
