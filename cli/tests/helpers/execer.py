# A connection used across exec: 5000 bytes sent and read, then a forked
# child execs this script with the connector's fd, which sends 1000 bytes
# more that nobody reads. Prints "pid PID" (the parent, which holds the
# acceptor's end), then "child PID" from the exec'd program.
import os, socket, sys, time
if sys.argv[1] == "child":
    c = socket.socket(fileno=int(sys.argv[2]))
    c.sendall(b"after-exec" * 100)
    print("child", os.getpid(), flush=True)
    time.sleep(3600)
    sys.exit(0)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
c = socket.create_connection(s.getsockname())
a, _ = s.accept()
c.sendall(b"x" * 5000)
got = 0
while got < 5000:
    got += len(a.recv(5000 - got))
print("pid", os.getpid(), flush=True)
os.set_inheritable(c.fileno(), True)
if os.fork() == 0:
    os.execv(sys.executable, [sys.executable, __file__, "child", str(c.fileno())])
c.close()
time.sleep(3600)
