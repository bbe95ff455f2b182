# sigint_recv.py HOST PORT: the main thread blocks in recv on a TCP
# connection whose answer comes 2 s later (from a timer thread), while a
# SIGINT sent to the process (kill -INT PID, from a shell) comes ~50 ms
# into the recv. Python runs handlers only in the main thread: the recv
# must end with EINTR for KeyboardInterrupt to be raised before the answer.
# Prints, per round, which came first. (Decision 48.)
import os, signal, socket, subprocess, sys, threading

host, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(1)
c = socket.create_connection((host, port))
s, _ = srv.accept()
# A thread that leaves SIGINT unblocked, idle in a wait.
idle = threading.Event()
threading.Thread(target=idle.wait, daemon=True).start()
for _ in range(3):
    c.sendall(b"q")
    assert s.recv(1) == b"q"
    threading.Timer(2.0, lambda: s.sendall(b"a")).start()
    subprocess.Popen(["sh", "-c", "sleep 0.05; kill -INT %d" % os.getpid()])
    try:
        got = c.recv(1)
        print("answer first", got, flush=True)
    except KeyboardInterrupt:
        print("KeyboardInterrupt first", flush=True)
        assert c.recv(1) == b"a"
idle.set()
