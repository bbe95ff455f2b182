# One connection to 127.0.0.1:PORT written by a parent and its forked
# child in turn: parent 1000 B, child 1000 B, parent 1000 B (the peer reads
# nothing: 3000 B wait in the ring). Prints "parent P child C".
import os, socket, sys, time
port = int(sys.argv[1])
c = socket.create_connection(("127.0.0.1", port))
c.sendall(b"a" * 1000)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    c.sendall(b"b" * 1000)
    os.write(w, b".")
    time.sleep(3600)
    os._exit(0)
os.read(r, 1)
c.sendall(b"c" * 1000)
print("parent", os.getpid(), "child", pid, flush=True)
time.sleep(3600)
