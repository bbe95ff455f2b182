# Live connections from several processes never share a local name (the
# ports come from per-process blocks of 16, held while any is in use).
import os, socket, sys, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
KIDS, PER = 4, 40
ls = socket.socket(); ls.bind(ADDR); ls.listen(256)
pids = []
for k in range(KIDS):
    pid = os.fork()
    if pid == 0:
        keep = [socket.create_connection(ADDR) for _ in range(PER)]
        for c in keep:
            c.sendall(b"x")
        time.sleep(1.5)
        os._exit(0)
    pids.append(pid)
names = []
for _ in range(KIDS * PER):
    c, peer = ls.accept()
    assert c.recv(1) == b"x"
    names.append(peer)
for p in pids:
    os.waitpid(p, 0)
print("connections", len(names), "distinct", len(set(names)), flush=True)
