# Makes N connections to 127.0.0.1:PORT one after another, each sending
# SEND and reading EXPECT back (default "hello", echoed; the respawning
# master's workers read 10 bytes and answer "k"); prints "done N", then
# sleeps.
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
send, expect = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("hello", "hello")
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(send.encode())
    assert c.recv(100) == expect.encode()
    c.close()
print("done", n, flush=True)
time.sleep(3600)
