# An epoll instance made before a fork, its Set (connections) made after it
# in the parent: a child sleeping on the same instance.
import os, select, socket, sys, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ep = select.epoll()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    os.read(r, 1)             # the parent's warm-up is over
    t = time.time()
    ev = ep.poll(3)
    print(f"child: {ev} after {time.time() - t:.2f}s -> {'OK' if ev else 'NOT WOKEN'}", flush=True)
    os._exit(0)
os.close(r)
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(16)
c = socket.create_connection(ADDR)
s, _ = ls.accept(); s.setblocking(False)
ep.register(s, select.EPOLLIN)
for i in range(20):
    c.sendall(b"ping"); assert ep.poll(2); assert s.recv(100) == b"ping"
    s.sendall(b"pong"); assert c.recv(100) == b"pong"
os.write(w, b"x")
threading.Timer(0.5, lambda: c.sendall(b"late")).start()
time.sleep(4)   # busy: no epoll_wait here
os.waitpid(pid, 0)
os._exit(0)
