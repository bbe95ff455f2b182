# Runs without the library with an inherited listening socket (argv: fd
# [emulated]: then the fd is no socket, ENOTSOCK is expected):
# it must be a kernel TCP listener (getsockname, accept); one client's
# bytes are answered with their sha256.
import hashlib, socket, sys

fd = int(sys.argv[1])
maps = open("/proc/self/maps").read()
assert "libshmnet" not in maps, "the library is loaded"
if sys.argv[2:] == ["emulated"]:
    try:
        socket.socket(fileno=fd)
    except OSError as e:
        print("child errno", e.errno, flush=True)
    sys.exit(0)
s = socket.socket(fileno=fd)
assert s.type == socket.SOCK_STREAM and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
print("child listens", s.getsockname()[1], flush=True)
c, _ = s.accept()
h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
c.sendall(h.hexdigest().encode())
c.close()
