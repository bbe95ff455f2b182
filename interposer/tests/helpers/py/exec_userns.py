# Run as the overflow uid inside a user namespace (unshare --user): a
# connection dup2()ed onto stdin in a forked child that execs keeps its
# carrier (this process made it); one made inheritable before the fork
# gets its carrier from the parent (fork's handler), which the exec'd image
# refuses: another process of uid 65534 may be any unmapped user.
# argv: host
import os, socket, sys
host = sys.argv[1]
print("uid", os.geteuid(), flush=True)
srv = socket.socket()
srv.bind((host, 0))
srv.listen(4)
reader = "import os, sys; fd = int(sys.argv[1]); print('read', fd, os.read(fd, 5), flush=True)"
for case in ("self", "parent"):
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    c.sendall(b"hello")
    if case == "parent":
        os.set_inheritable(conn.fileno(), True)
    pid = os.fork()
    if pid == 0:
        fd = conn.fileno()
        if case == "self":
            os.dup2(fd, 0)
            fd = 0
        os.execv(sys.executable, [sys.executable, "-c", reader, str(fd)])
    os.waitpid(pid, 0)
    conn.close()
    c.close()
