# A client that execs itself in the middle of a connection (the connecting
# end re-attached): the server's greeting and the client's first bytes are
# in the rings at exec; the new image sends the rest and reads the reply.
# argv: start host port n_in early | again fd n_in early seed
import array, fcntl, hashlib, os, socket, sys, termios, time
if sys.argv[1] == "start":
    host, port, n_in, early = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    c = socket.create_connection((host, port))
    seed = os.urandom(16).hex()
    data = hashlib.shake_256(seed.encode()).digest(n_in)
    c.sendall(data[:early])
    queued = array.array("i", [0])
    deadline = time.time() + 20
    while time.time() < deadline:
        fcntl.ioctl(c.fileno(), termios.FIONREAD, queued)
        if queued[0] >= 6:
            break
        time.sleep(0.01)
    print("queued", queued[0], flush=True)
    os.set_inheritable(c.fileno(), True)
    os.execv(sys.executable, [sys.executable, __file__, "again", str(c.fileno()), str(n_in), str(early), seed])
fd, n_in, early, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
data = hashlib.shake_256(seed.encode()).digest(n_in)
c = socket.socket(fileno=fd)
c.sendall(data[early:])
c.shutdown(socket.SHUT_WR)
reply = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    reply += b
print("greeting", reply[:6] == b"hello\n", flush=True)
print("digest", reply[6:70].decode() == hashlib.sha256(data).hexdigest(), flush=True)
rest = reply[70:]
print("stream", len(rest), hashlib.sha256(rest).digest() == hashlib.sha256((bytes(range(256)) * (len(rest) // 256 + 1))[:len(rest)]).digest(), flush=True)
