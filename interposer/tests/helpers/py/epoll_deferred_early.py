# The epoll fd duplicated / nested BEFORE any connection joined it.
import os, select, socket, sys, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
CASE = sys.argv[1]
ep = select.epoll()
if CASE == "dup":
    other = select.epoll.fromfd(os.dup(ep.fileno()))
else:
    other = select.epoll(); other.register(ep.fileno(), select.EPOLLIN)
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(16)
c = socket.create_connection(ADDR)
s, _ = ls.accept(); s.setblocking(False)
ep.register(s, select.EPOLLIN)
for i in range(20):
    c.sendall(b"ping"); assert ep.poll(2); assert s.recv(100) == b"ping"
    s.sendall(b"pong"); assert c.recv(100) == b"pong"
got = []
def waiter():
    t = time.time(); ev = other.poll(3); got.append((ev, time.time() - t))
th = threading.Thread(target=waiter); th.start()
threading.Timer(0.3, lambda: c.sendall(b"late")).start()
th.join()
ev, dt = got[0]
print(f"{CASE}: other waiter {ev} after {dt:.2f}s -> {'OK' if ev else 'NOT WOKEN'}", flush=True)
os._exit(0)
