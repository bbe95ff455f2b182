# Threads closing fds while the main thread forks, in a process with an
# epoll fd: every child must get through its own close (a lock the
# library keeps for epoll fds, held by a parent thread at the fork, was
# once left locked in the child). usage: fork_epoll_threads.py SECONDS
import os, select, threading, time, sys
ep = select.epoll()          # MADE_COUNT > 0 from here on
stop = False
def churn():
    while not stop:
        r, w = os.pipe(); os.close(r); os.close(w)   # forget(): MADE lock, GIL released in close
for _ in range(3): threading.Thread(target=churn, daemon=True).start()
hung = 0; n = 0
deadline = time.time() + float(sys.argv[1])
while time.time() < deadline:
    pid = os.fork()
    if pid == 0:
        r, w = os.pipe(); os.close(r); os.close(w)     # child: forget() -> MADE lock
        os._exit(0)
    n += 1
    t = time.time()
    while True:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p: break
        if time.time() - t > 10:
            hung += 1; print(f"child {pid} hung", flush=True); os.kill(pid, 9); os.waitpid(pid, 0); break
        time.sleep(0.0005)
stop = True
print(f"forks={n} hung={hung}", flush=True)
os._exit(0)
