# A preloaded server that hands its listener to a program running without
# the library: bind, listen; an exec that fails (the listener must still
# work under the library: one preloaded client served); then exec of
# plain_image_child.py with an environment without LD_PRELOAD.
# argv: host [emulated] (the child then expects no socket on the fd)
#       host static PROGRAM (exec PROGRAM fd instead, LD_PRELOAD kept)
import hashlib, os, socket, sys

host = sys.argv[1]
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.bind((host, 0))
s.listen(16)
s.set_inheritable(True)
print("port", s.getsockname()[1], flush=True)
try:
    os.execve("/nonexistent/plain", ["plain"], env)
except OSError as e:
    print("exec failed", e.errno, flush=True)
c, _ = s.accept()
h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
c.sendall(h.hexdigest().encode())
c.close()
if sys.argv[2:3] == ["static"]:
    os.execv(sys.argv[3], [sys.argv[3], str(s.fileno())])
child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plain_image_child.py")
os.execve(sys.executable, [sys.executable, child, str(s.fileno())] + sys.argv[2:], env)
