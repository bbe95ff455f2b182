import os, socket, sys, time, resource, subprocess
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
srv = socket.socket(); srv.bind(ADDR); srv.listen(16)
srv.setblocking(False)  # an event-loop server: accept only when select says so
path = b"\0shmnet.5/tcp/%s:%d" % (ADDR[0].encode(), ADDR[1])  # its rendezvous (docs/security.md, "Names")
# hostile/buggy local peer (no preload): connects to the rendezvous and sends 5 of the 32 bytes
code = f"import socket,time; u=socket.socket(socket.AF_UNIX); u.connect({path!r}); u.send(b'SHMH\\x01'); time.sleep(10)"
h = subprocess.Popen([sys.executable, "-c", code], env={})
time.sleep(0.3)
import select
select.select([srv], [], [])
t0 = time.time(); ru0 = resource.getrusage(resource.RUSAGE_SELF)
try:
    srv.accept()
except OSError as e:
    print("accept:", repr(e))
ru1 = resource.getrusage(resource.RUSAGE_SELF)
print(f"non-blocking accept() took {time.time()-t0:.2f}s, cpu {ru1.ru_utime+ru1.ru_stime-ru0.ru_utime-ru0.ru_stime:.2f}s", flush=True)
h.kill()
