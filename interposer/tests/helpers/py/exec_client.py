# Sends n_in random bytes (the first `early` of them at once, the rest a
# moment later) while reading the reply to its end. argv: host port n_in early n_out
import hashlib, os, socket, sys, threading, time
host, port, n_in, early, n_out = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
c = socket.create_connection((host, port))
data = os.urandom(n_in)
print("sent", hashlib.sha256(data).hexdigest(), flush=True)
def write():
    c.sendall(data[:early])
    time.sleep(0.3)
    c.sendall(data[early:])
t = threading.Thread(target=write)
t.start()
h, got = hashlib.sha256(), 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    got += len(b)
t.join()
want = hashlib.sha256((bytes(range(256)) * (n_out // 256 + 1))[:n_out]).hexdigest()
print("got", got, h.hexdigest() == want, flush=True)
