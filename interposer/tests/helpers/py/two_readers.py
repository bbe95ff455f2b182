# Two threads block in recv on one connection; the peer sends A, then B
# 0.5 s later: each thread gets one (a lazy reader once took the only
# doorbell byte from under the other, which then slept on in the kernel).
import socket, threading, time, sys, os
addr = (os.environ['TEST_HOST'], 0)
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(addr); ls.listen(4); port = ls.getsockname()[1]
pid = os.fork()
if pid == 0:
    ls.close()
    c = socket.create_connection((addr[0], port))
    c.recv(1)
    time.sleep(0.3)
    c.sendall(b'A'); time.sleep(0.5); c.sendall(b'B')
    time.sleep(2); os._exit(0)
s, _ = ls.accept()
t0 = None
def rd(name):
    try:
        d = s.recv(16); print(name, d, round(time.monotonic() - t0, 3), flush=True)
        if d == b'A': return
        d = s.recv(16); print(name, 'then', d, round(time.monotonic() - t0, 3), flush=True)
    except Exception as e:
        print(name, 'exc', e, round(time.monotonic() - t0, 3), flush=True)
t0 = time.monotonic()
ts = [threading.Thread(target=rd, args=(i,)) for i in range(2)]
for t in ts: t.start()
time.sleep(0.1)
s.send(b'g')
for t in ts: t.join(8)
os.waitpid(pid, 0)
