# Like pgbench's start-up: T threads each open N connections one after the
# other (each waits for its first answer before the next connect), then all
# of them echo for D seconds and stay open. argv: HOST PORT T N D
import socket, sys, threading, time
host, port, t, n, dur = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
conns = []
def rt(s):
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        got += s.recv(4 - len(got))
def opener():
    for _ in range(n):
        s = socket.create_connection((host, port)); rt(s); conns.append(s)
ts = [threading.Thread(target=opener) for _ in range(t)]; [x.start() for x in ts]; [x.join() for x in ts]
end = time.time() + dur
def run(s):
    while time.time() < end:
        rt(s)
ts = [threading.Thread(target=run, args=(s,)) for s in conns]; [x.start() for x in ts]; [x.join() for x in ts]
print("clients", len(conns), flush=True)
time.sleep(float(sys.argv[6]) if len(sys.argv) > 6 else 0)
