# exec with emulated sockets open: an inherited listener keeps accepting
# (inetd-style), an inherited connection is re-attached (never doorbell
# bytes as data). argv: [stage fd...]
import os, socket, sys, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
stage = sys.argv[1] if len(sys.argv) > 1 else "start"
if stage == "start":
    srv = socket.socket(); srv.bind(ADDR); srv.listen(4)
    c = socket.create_connection(ADDR)
    conn, _ = srv.accept()
    c.sendall(b"queued before exec")
    time.sleep(0.1)
    pid = os.fork()
    if pid == 0:
        c.close()
        for fd in (srv.fileno(), conn.fileno()):
            os.set_inheritable(fd, True)
        os.execv(sys.executable, [sys.executable, __file__, "child", str(srv.fileno()), str(conn.fileno())])
    srv.close(); conn.close()
    # The exec'd child serves one new connection on the inherited listener.
    time.sleep(0.5)
    d = socket.create_connection(ADDR)
    d.sendall(b"hello after exec")
    print("client got:", d.recv(100), flush=True)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status))
else:
    lfd, cfd = int(sys.argv[2]), int(sys.argv[3])
    inherited = socket.socket(fileno=cfd)
    print("inherited connection reads:", inherited.recv(100), flush=True)
    srv = socket.socket(fileno=lfd)
    srv.settimeout(10)
    conn, peer = srv.accept()
    conn.sendall(b"echo: " + conn.recv(100))
    conn.close()
    os._exit(0)
