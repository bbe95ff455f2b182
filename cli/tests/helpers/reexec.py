# Connects (first image), then re-execs itself K times keeping the
# connection's fd; each image writes 10 bytes. The last image prints
# "final PID" and sleeps.
import os, socket, sys, time
port, k, i = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if i == 0:
    c = socket.create_connection(("127.0.0.1", port)); fd = c.detach()
else:
    fd = int(sys.argv[4])
os.write(fd, b"0123456789")
if i < k:
    os.set_inheritable(fd, True)
    os.execv(sys.executable, [sys.executable, __file__, str(port), str(k), str(i + 1), str(fd)])
print("final", os.getpid(), flush=True)
time.sleep(3600)
