# The parent accepts and writes 100000 bytes, then forks; the child shuts
# down writing (the peer gets end of stream: the socket is half-closed),
# the parent keeps its copy. Prints "port P PID", then "child PID shut".
import os, socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print("port", s.getsockname()[1], os.getpid(), flush=True)
c, _ = s.accept()
c.sendall(b"p" * 100000)
if os.fork() == 0:
    c.shutdown(socket.SHUT_WR)
    print("child", os.getpid(), "shut", flush=True)
    time.sleep(3600); os._exit(0)
time.sleep(3600)
