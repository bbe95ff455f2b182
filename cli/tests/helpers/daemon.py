# A daemon: listens, forks, and the parent exits (sys.exit runs exit
# handlers; "_exit" does not); the child, in a session of its own, accepts
# and keeps its connections. Prints "port PORT", then "daemon PID".
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print("port", s.getsockname()[1], flush=True)
if os.fork() != 0:
    os._exit(0) if sys.argv[1] == "_exit" else sys.exit(0)
os.setsid()
print("daemon", os.getpid(), flush=True)
kept = []
while True:
    c, _ = s.accept()
    kept.append(c)
