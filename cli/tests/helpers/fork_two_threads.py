# Connects to the echo server, sends 5000 bytes and reads them back, then
# forks TRIALS children; each child's first use of the inherited connection
# is from two threads at once (one sends 100 bytes, one reads the 100 echoed),
# then the child sleeps (prints "child PID"). The parent sleeps.
import os, socket, sys, threading, time
port, trials = int(sys.argv[1]), int(sys.argv[2])
for t in range(trials):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"a" * 5000); n = 0
    while n < 5000: n += len(c.recv(5000 - n))
    if os.fork() == 0:
        b = threading.Barrier(2)
        def rd():
            b.wait(); m = 0
            while m < 100: m += len(c.recv(100 - m))
        def wr():
            b.wait(); c.sendall(b"b" * 100)
        ts = [threading.Thread(target=rd), threading.Thread(target=wr)]
        [x.start() for x in ts]; [x.join() for x in ts]
        # One write(2): under PYTHONUNBUFFERED print's pieces are writes
        # of their own, which the other children's interleave.
        os.write(1, b"child %d\n" % os.getpid())
        time.sleep(600); os._exit(0)
    c.close()
time.sleep(600)
