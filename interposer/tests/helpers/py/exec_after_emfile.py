# Running out of fds once (an unrelated open() failing with EMFILE) gives
# back the memfds kept for exec by the connections open then; connections
# made once those closed still cross exec: the exec'd child reads the
# server's bytes.
import os, socket, resource, subprocess, sys
HOST, PORT = os.environ["TEST_HOST"], int(os.environ["TEST_PORT"])
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
srv = socket.socket(); srv.bind((HOST, PORT)); srv.listen(8)
CHILD = "import os,sys; fd=int(sys.argv[1]); print('child read:', os.read(fd, 100))"
def trial(label):
    c = socket.create_connection((HOST, PORT)); a, _ = srv.accept()
    a.sendall(b'hello across exec')
    r = subprocess.run([sys.executable, '-c', CHILD, str(c.fileno())], pass_fds=[c.fileno()],
                       capture_output=True, text=True, timeout=20)
    print(label, r.stdout.strip(), flush=True)
    c.close(); a.close()
trial('before:')
held = socket.create_connection((HOST, PORT)), srv.accept()[0]
files = []
try:
    while True:
        files.append(os.open('/dev/null', os.O_RDONLY))
except OSError:
    pass
for f in files:
    os.close(f)
for s in held:
    s.close()
trial('after:')
