# A fork-per-connection server whose children leave with os._exit (no exit
# handlers: socketserver.ForkingMixIn): each child echoes one message.
# Prints "port PORT".
import os, signal, socket
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # auto-reap
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(128)
print("port", s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    if os.fork() == 0:
        s.close()
        c.sendall(c.recv(100))
        os._exit(0)
    c.close()
