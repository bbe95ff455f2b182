# What of a connection goes across exec follows its fds' close-on-exec
# flag. A program run without the library lists what it inherited of
# ours: carriers (unnamed datagram sockets holding a carrier message) and
# segment memfds.
# argv: host lister
import os, socket, subprocess, sys
host, lister = sys.argv[1], sys.argv[2]
srv = socket.socket()
srv.bind((host, 0))
srv.listen(4)
c = socket.create_connection(srv.getsockname())
conn, _ = srv.accept()
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
def look(what, **kw):
    out = subprocess.run([sys.executable, lister], env=env, capture_output=True, text=True, **kw)
    print(what, out.stdout.strip(), out.stderr.strip(), flush=True)
look("cloexec")                       # accept's fd: not inheritable
os.dup2(conn.fileno(), 50)            # inheritable copy
look("dup2", close_fds=False)
os.set_inheritable(50, False)
look("set_cloexec", close_fds=False)
os.set_inheritable(50, True)
os.close(50)
look("closed_copy", close_fds=False)
look("pass_fds", pass_fds=[conn.fileno()])
# posix_spawn's dup2 happens inside glibc, past the library: the program
# gets the connection on stdin without its carrier and reads it as closed.
c.sendall(b"x")
r, w = os.pipe()
pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "import os,sys; sys.stdout.write(repr(os.read(0, 10)))"],
                     os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, conn.fileno(), 0), (os.POSIX_SPAWN_DUP2, w, 1)])
os.close(w)
_, st = os.waitpid(pid, 0)
print("spawned reads", os.read(r, 100).decode(), os.waitstatus_to_exitcode(st), flush=True)
