# The parent accepts, forks a child that reads everything the client sends
# (prints "child PID read N"), and keeps its own copy of the connection
# without using it (as a supervisor that hands a connection to a worker
# and keeps the fd would). Prints "port P PID".
import os, socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print("port", s.getsockname()[1], os.getpid(), flush=True)
c, _ = s.accept()
if os.fork() == 0:
    n = 0
    while n < 100000:
        n += len(c.recv(65536))
    print("child", os.getpid(), "read", n, flush=True)
    time.sleep(3600); os._exit(0)
time.sleep(3600)
