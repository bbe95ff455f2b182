# A pre-forked server: the master listens and forks workers A and B. A
# accepts one connection, closes its copy of the listener (an old worker
# retiring), then connects out to 127.0.0.1:SINK; only then does B accept.
# Prints "port PORT MASTER", "a PID", "b PID".
import os, socket, sys, time
sink = int(sys.argv[1])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
r, w = os.pipe()
print("port", s.getsockname()[1], os.getpid(), flush=True)
if os.fork() == 0:
    c, _ = s.accept()
    s.close()
    d = socket.create_connection(("127.0.0.1", sink))
    print("a", os.getpid(), flush=True)
    os.write(w, b"x")
    time.sleep(3600)
    os._exit(0)
if os.fork() == 0:
    os.read(r, 1)
    c, _ = s.accept()
    print("b", os.getpid(), flush=True)
    time.sleep(3600)
    os._exit(0)
time.sleep(3600)
