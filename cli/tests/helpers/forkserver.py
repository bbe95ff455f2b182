# A fork-per-connection server (postgres, sshd): a child serves the first
# connection (shuts down writing, then sleeps in a read); the parent
# closes its copy, accepts the second, writes 1000 bytes to it and keeps
# it. Prints "port PORT", then "child PID" once both are done.
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print("port", s.getsockname()[1], flush=True)
r, w = os.pipe()
c1, _ = s.accept()
if os.fork() == 0:
    s.close()
    os.read(r, 1)  # the parent has accepted the second meanwhile
    c1.shutdown(socket.SHUT_WR)
    print("child", os.getpid(), flush=True)
    c1.recv(10)
    time.sleep(3600)
    os._exit(0)
c1.close()
c2, _ = s.accept()
c2.sendall(b"x" * 1000)
os.write(w, b"x")
time.sleep(3600)
