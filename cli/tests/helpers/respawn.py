# A root master with a listener that spawns N workers one after another;
# each drops to nobody, accepts one connection on the inherited listener
# (claiming an entry in the master's file: it cannot make its own), reads
# it, answers, and is SIGKILLed by the master (a crash, the OOM killer).
# Prints "port PORT", then "spawned N" after the last.
import os, signal, socket, sys
n = int(sys.argv[1])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print("port", s.getsockname()[1], flush=True)
for i in range(n):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setgid(65534)
        os.setuid(65534)
        c, _ = s.accept()
        c.recv(10)
        c.sendall(b"k")
        os.write(w, b"x")
        signal.pause()
    os.read(r, 1)
    os.close(r)
    os.close(w)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print("spawned", n, flush=True)
signal.pause()
