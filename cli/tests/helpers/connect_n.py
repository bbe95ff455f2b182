# Makes N connections to 127.0.0.1:PORT one after another, each sending
# "hello" and reading it back; prints "done N", then sleeps.
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"hello")
    assert c.recv(100) == b"hello"
    c.close()
print("done", n, flush=True)
time.sleep(3600)
