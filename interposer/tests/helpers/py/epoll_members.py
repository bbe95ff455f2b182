# An epoll set's bookkeeping of its connections, as the kernel keeps a set:
# - data that came before the fd joined (no doorbell) is reported once per
#   wait, also after the fd left and joined again;
# - a closed member leaves the set: its number, reused by a new connection,
#   is reported only for the new one's data, and only once it is added;
# - hundreds of members added, served and closed leave the set empty.
import os, select, socket, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
N = 300
srv = socket.socket(); srv.bind(ADDR); srv.listen(N + 8)
def clients(count, payload):
    out = []
    for i in range(count):
        c = socket.create_connection(ADDR)
        if payload is not None:
            c.sendall(payload)
        out.append(c)
    return out
ep = select.epoll()

# 1. Data before joining; join, leave, join: one event per wait.
[c1] = clients(1, b"early")
a, _ = srv.accept()
time.sleep(0.1)
ep.register(a, select.EPOLLIN)
ep.unregister(a)
ep.register(a, select.EPOLLIN)
ev = ep.poll(1)
print("rejoined: events", [e for e in ev if e[0] == a.fileno()], flush=True)
print("rejoined: read", a.recv(100), flush=True)
ev = ep.poll(0.2)
print("rejoined: after reading", ev, flush=True)

# 2. A closed member's number reused by a new connection.
num = a.fileno()
[c2] = clients(1, b"second")
a.close()
b, _ = srv.accept()
print("reused number:", b.fileno() == num, flush=True)
time.sleep(0.1)
ev = ep.poll(0.2)
print("reused number, not added: events", ev, flush=True)
ep.register(b, select.EPOLLIN)
ev = ep.poll(1)
print("reused number, added: events", [(fd, m & select.EPOLLIN != 0) for fd, m in ev], flush=True)
print("reused number: read", b.recv(100), flush=True)
ep.unregister(b); b.close(); c1.close(); c2.close()

# 3. Many members, each with data before joining, served and closed.
cs = clients(N, b"x")
served = 0
accepted = [srv.accept()[0] for _ in range(N)]
time.sleep(0.2)
for s in accepted:
    ep.register(s, select.EPOLLIN)
by_fd = {s.fileno(): s for s in accepted}
while by_fd:
    for fd, _ in ep.poll(2):
        s = by_fd.pop(fd, None)
        if s is None:
            print("event for an fd not in the set:", fd, flush=True); os._exit(1)
        if s.recv(10) == b"x":
            served += 1
        s.close()
print("many: served", served, flush=True)
ev = ep.poll(0.2)
print("many: events after all closed", ev, flush=True)
os._exit(0)
