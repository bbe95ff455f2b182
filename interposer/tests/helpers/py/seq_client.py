# N connections one after the other: connect, send one line, read the
# echo, compare, close. argv: HOST PORT N. Prints `ok N`.
import signal, socket, sys

signal.alarm(100)
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(n):
    want = ("sequential client %d " % i).ljust(63, "-").encode() + b"\n"
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(want)
    got = b""
    while not got.endswith(b"\n"):
        data = s.recv(4096)
        if not data:
            break
        got += data
    s.close()
    if got != want:
        sys.exit("connection %d: echo %r, want %r" % (i, got, want))
    ok += 1
print("ok", ok, flush=True)
