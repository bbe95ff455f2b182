# A server that hands each connection to an exec'd program, as inetd and
# sshd do: accept, fork, dup2 the connection onto stdin/stdout, exec
# `head -c N | sha256sum > OUT`, then a python writing a known stream.
# The client's first bytes are queued in the connection before the fork.
# With a uid, the child switches to it first (as http.server --cgi does).
# argv: host keep|close n_in n_out early out [uid]
import array, fcntl, os, socket, sys, termios, time
host, keep = sys.argv[1], sys.argv[2] == "keep"
n_in, n_out, early, out = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
srv.bind((host, 0))
srv.listen(4)
print("port", srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
deadline = time.time() + 20
queued = array.array("i", [0])
while time.time() < deadline:
    fcntl.ioctl(conn.fileno(), termios.FIONREAD, queued)
    if queued[0] >= early:
        break
    time.sleep(0.01)
print("queued", queued[0], flush=True)
pid = os.fork()
if pid == 0:
    if len(sys.argv) > 7:
        os.setuid(int(sys.argv[7]))
    os.dup2(conn.fileno(), 0)
    os.dup2(conn.fileno(), 1)
    conn.close()
    srv.close()
    writer = (
        "import sys\n"
        "b = bytes(range(256)) * 4096\n"
        f"n = {n_out}\n"
        "while n > 0:\n"
        "    k = min(n, len(b))\n"
        "    sys.stdout.buffer.write(b[:k])\n"
        "    n -= k\n"
        "sys.stdout.buffer.flush()\n"
    )
    script = f'head -c {n_in} | sha256sum > "$1" && exec "$2" -c "$3"'
    # (The new user may not reach this python: root's pyenv.)
    py = sys.executable if os.access(sys.executable, os.X_OK) else "/usr/bin/python3"
    os.execv("/bin/sh", ["sh", "-c", script, "sh", out, py, writer])
if not keep:
    conn.close()  # as sshd and inetd do
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
if keep:
    conn.close()  # a supervisor kept its copy until the child was done
