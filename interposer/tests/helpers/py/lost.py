import os, sys, socket, select, time, fcntl, termios, struct
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
MSG = 8192
srv = socket.socket(); srv.bind(ADDR); srv.listen(4)
pid = os.fork()
if pid == 0:
    srv.close()
    c = socket.create_connection(ADDR)
    c.setblocking(False)
    p = select.poll(); p.register(c.fileno(), select.POLLIN)
    got = 0; rnd = 0
    c.send(b"a")  # first request (nonblocking send of 1 byte always fits)
    while rnd < ROUNDS:
        ev = p.poll(2000)
        if not ev:
            buf = fcntl.ioctl(c.fileno(), termios.FIONREAD, b"\0\0\0\0")
            n = struct.unpack("i", buf)[0]
            print(f"round {rnd}: poll timed out (2s) with FIONREAD={n}, got {got}/{MSG}", flush=True)
            os._exit(1 if n > 0 else 2)
        try:
            d = c.recv(1024)
        except BlockingIOError:
            continue
        if not d:
            print("EOF?"); os._exit(3)
        got += len(d)
        if got == MSG:
            got = 0; rnd += 1
            c.send(b"a")
    print("client: all rounds ok", flush=True)
    os._exit(0)
conn, _ = srv.accept()
payload = b"x" * MSG
for i in range(ROUNDS):
    a = conn.recv(1)
    if not a:
        break
    conn.sendall(payload)
_, st = os.waitpid(pid, 0)
print("client exit", os.waitstatus_to_exitcode(st))
