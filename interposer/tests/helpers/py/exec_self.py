# A client that execs itself in the middle of a connection (the connecting
# end re-attached): the server's greeting and the client's first bytes are
# in the rings at exec; the new image sends the rest and reads the reply.
# argv: start host port n_in early [how] | again fd n_in early seed
# `how` runs the new image: execv (os.execv), a libc function called
# directly (execl, execlp, execle, execvp, execvpe, fexecve, execveat:
# glibc's own execve inside them is past any hook), a child that takes the
# connection while this process closes its copy (posix_spawn, posix_spawnp,
# subprocess with close_fds=False, subprocess with pass_fds and a
# close-on-exec fd, system, popen), or a forked child that execs with a raw
# system call (no hook sees that exec: only fork's handler can have
# readied the connection).
import array, ctypes, fcntl, hashlib, os, socket, subprocess, sys, termios, time
if sys.argv[1] == "start":
    host, port, n_in, early = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    how = sys.argv[6] if len(sys.argv) > 6 else "execv"
    c = socket.create_connection((host, port))
    seed = os.urandom(16).hex()
    data = hashlib.shake_256(seed.encode()).digest(n_in)
    c.sendall(data[:early])
    queued = array.array("i", [0])
    deadline = time.time() + 20
    while time.time() < deadline:
        fcntl.ioctl(c.fileno(), termios.FIONREAD, queued)
        if queued[0] >= 6:
            break
        time.sleep(0.01)
    print("queued", queued[0], flush=True)
    if how != "pass_fds":
        os.set_inheritable(c.fileno(), True)
    exe = sys.executable
    args = [__file__, "again", str(c.fileno()), str(n_in), str(early), seed]
    argv = [exe] + args
    libc = ctypes.CDLL(None, use_errno=True)
    b = [a.encode() for a in argv]
    def cargs(xs):
        arr = (ctypes.c_char_p * (len(xs) + 1))(*xs, None)
        return arr
    env = cargs([f"{k}={v}".encode() for k, v in os.environ.items()])
    def waited(pid):
        c.close()  # the child has it now (sshd, inetd)
        _, st = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(st))
    if how == "execv":
        os.execv(exe, argv)
    elif how == "execl":
        libc.execl(b[0], *b, None)
    elif how == "execlp":
        libc.execlp(os.path.basename(exe).encode(), *b, None)
    elif how == "execle":
        libc.execle(b[0], *b, None, env)
    elif how == "execvp":
        libc.execvp(os.path.basename(exe).encode(), cargs(b))
    elif how == "execvpe":
        libc.execvpe(os.path.basename(exe).encode(), cargs(b), env)
    elif how == "fexecve":
        libc.fexecve(os.open(exe, os.O_RDONLY | os.O_CLOEXEC), cargs(b), env)
    elif how == "execveat":
        libc.execveat(-100, b[0], cargs(b), env, 0)  # AT_FDCWD
    elif how == "posix_spawn":
        waited(os.posix_spawn(exe, argv, os.environ))
    elif how == "posix_spawnp":
        waited(os.posix_spawnp(os.path.basename(exe), argv, os.environ))
    elif how == "subprocess":
        # close_fds=False and an absolute path: subprocess uses posix_spawn.
        assert subprocess._USE_POSIX_SPAWN
        p = subprocess.Popen(argv, close_fds=False)
        c.close()
        sys.exit(p.wait())
    elif how == "pass_fds":
        # A close-on-exec fd made inheritable in the (v)forked child, which
        # then execs: the carrier is made there.
        assert not os.get_inheritable(c.fileno())
        p = subprocess.Popen(argv, pass_fds=[c.fileno()])
        c.close()
        sys.exit(p.wait())
    elif how == "system":
        rc = os.system(" ".join(argv))
        c.close()
        sys.exit(os.waitstatus_to_exitcode(rc))
    elif how == "popen":
        libc.popen.restype = ctypes.c_void_p
        f = libc.popen(" ".join(argv).encode(), b"w")
        c.close()
        sys.exit(os.waitstatus_to_exitcode(libc.pclose(ctypes.c_void_p(f))))
    elif how == "fork_raw":
        pid = os.fork()
        if pid == 0:
            libc.syscall(59, b[0], cargs(b), env)  # SYS_execve (x86_64)
            os._exit(99)
        waited(pid)
    print("exec failed", how, ctypes.get_errno(), flush=True)
    sys.exit(1)
fd, n_in, early, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
data = hashlib.shake_256(seed.encode()).digest(n_in)
c = socket.socket(fileno=fd)
c.sendall(data[early:])
c.shutdown(socket.SHUT_WR)
reply = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    reply += b
print("greeting", reply[:6] == b"hello\n", flush=True)
print("digest", reply[6:70].decode() == hashlib.sha256(data).hexdigest(), flush=True)
rest = reply[70:]
print("stream", len(rest), hashlib.sha256(rest).digest() == hashlib.sha256((bytes(range(256)) * (len(rest) // 256 + 1))[:len(rest)]).digest(), flush=True)
