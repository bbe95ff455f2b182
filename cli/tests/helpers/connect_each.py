# Makes N connections one after another, each sending 10 bytes and reading
# one back (the respawning master's workers); prints "done N", then sleeps.
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"0123456789")
    assert c.recv(1) == b"k"
    c.close()
print("done", n, flush=True)
time.sleep(3600)
