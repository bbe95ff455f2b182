# Run preloaded in DIR: starts LIVE preloaded programs holding a listener,
# and DEAD more that are killed (SIGKILL: their files stay), then RUNS
# short preloaded programs one after another (each sweeps when it makes
# its file and at exit). Prints "dead files left N", then ends the others.
import os, signal, subprocess, sys
d, live, dead, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
L = ("import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen();"
     "print(1,flush=True); time.sleep(float(sys.argv[1]))")
def start(t):
    p = subprocess.Popen([sys.executable, "-c", L, str(t)], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"1\n"
    return p
keep = [start(600) for _ in range(live)]
for p in [start(600) for _ in range(dead)]:
    p.kill(); p.wait()
for _ in range(runs):
    start(0).wait()
def gone(name):
    pid = int(name.split("-")[1])
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True
left = sum(1 for n in os.listdir(d) if n.startswith("status-") and gone(n))
print("dead files left", left, flush=True)
for p in keep:
    p.kill(); p.wait()
