import os, socket, signal, time, sys
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
N = 400
srv = socket.socket(); srv.bind(ADDR); srv.listen(64)
pid = os.fork()
if pid == 0:
    srv.close(); bad = 0
    for i in range(N):
        c = socket.create_connection(ADDR)
        try:
            c.sendall(b"q")
            if c.recv(1) != b"r": bad += 1
        except OSError as e:
            bad += 1
        c.close()
    print(f"client: {bad} of {N} connections failed", flush=True); os._exit(0)
signal.signal(signal.SIGALRM, lambda *a: None)
signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)   # a busy timer (profilers, event loops)
served = 0
deadline = time.time() + 30
while served < N and time.time() < deadline:
    try:
        conn, _ = srv.accept()
    except InterruptedError:
        continue
    try:
        if conn.recv(1) == b"q": conn.sendall(b"r")
    except OSError:
        pass
    conn.close(); served += 1
signal.setitimer(signal.ITIMER_REAL, 0)
os.waitpid(pid, 0)
