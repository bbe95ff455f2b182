# Differential fuzz of epoll readiness (written by the deferral review,
# 2026-12-06): N connection pairs in one epoll set, level- or
# edge-triggered per member; random writes by the peer, partial reads,
# waits (timeout 0 or a short sleep), DEL/ADD, MOD LT<->ET, close +
# reconnect (fd numbers reused), peer shutdown, each wait's answer checked
# against a model of the kernel's:
# LT reports a member iff it has unread data or EOF; ET reports a
# member iff an arrival (or EOF, or ADD/MOD with data) since its last report.
# usage: epoll_fuzz.py SEED STEPS   (env TEST_HOST/TEST_PORT; FUZZ_LT=1 or
# FUZZ_ET=1: every member level- or edge-triggered). Prints the first
# mismatch and exits 1, or "seed S: N steps ok".
import os, random, select, socket, sys
addr = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
seed, steps = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(seed)
LTONLY = os.environ.get("FUZZ_LT") == "1"
ETONLY = os.environ.get("FUZZ_ET") == "1"
ls = socket.socket(); ls.bind(addr); ls.listen(64)
ep = select.epoll()
N = 6
class P: pass
pairs = []
def mkpair():
    p = P()
    p.c = socket.create_connection(ls.getsockname())
    p.c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    p.s, _ = ls.accept(); p.s.setblocking(False)
    p.unread = 0; p.eof = False; p.et = ((rnd.random() < 0.5) and not LTONLY) or ETONLY; p.due = False; p.inset = True
    ep.register(p.s, select.EPOLLIN | (select.EPOLLET if p.et else 0))
    return p
for i in range(N): pairs.append(mkpair())
log = []
def ready(p):
    return p.unread > 0 or p.eof
def expect():
    return {p.s.fileno() for p in pairs if p.inset and (ready(p) if not p.et else (p.due and ready(p)))}
for step in range(steps):
    op = rnd.choice("wwwwrrrWWWdmcsS")
    i = rnd.randrange(N); p = pairs[i]
    if op == "w" and not p.eof and p.unread < 30000:
        k = rnd.choice([1, 10, 100, 3000]); p.c.sendall(b"x" * k); p.unread += k; p.due = True
        log.append(f"w{i}:{k}")
    elif op == "r":
        k = rnd.choice([1, 50, 1000, 100000])
        try:
            got = len(p.s.recv(k))
        except BlockingIOError:
            got = -1
        exp = min(k, p.unread) if p.unread else (0 if p.eof else -1)
        log.append(f"r{i}:{k}->{got}")
        if not (got == exp or (exp > 0 and 0 < got < exp)):
            print(f"seed {seed} step {step}: recv({k}) on {i} gave {got}, expected {exp}; last ops {log[-12:]}"); sys.exit(1)
        if got > 0: p.unread -= got
    elif op in "WS":
        t = 0 if op == "W" else 0.02
        ev = ep.poll(t, 64)
        got = {fd for fd, e in ev if e & select.EPOLLIN}
        exp = expect()
        log.append(f"wait{t}->{sorted(got)}")
        if got != exp:
            print(f"seed {seed} step {step}: epoll_wait({t}) gave {sorted(got)} expected {sorted(exp)}; "
                  f"members {[(q.s.fileno(), q.unread, q.eof, 'ET' if q.et else 'LT', q.inset) for q in pairs]}; last ops {log[-14:]}")
            sys.exit(1)
        for q in pairs:
            if q.s.fileno() in got: q.due = False
    elif op == "d":
        if p.inset: ep.unregister(p.s); p.inset = False; log.append(f"del{i}")
        else:
            ep.register(p.s, select.EPOLLIN | (select.EPOLLET if p.et else 0)); p.inset = True; p.due = ready(p); log.append(f"add{i}")
    elif op == "m" and p.inset and not LTONLY and not ETONLY:
        p.et = not p.et; ep.modify(p.s, select.EPOLLIN | (select.EPOLLET if p.et else 0)); p.due = ready(p); log.append(f"mod{i}{'ET' if p.et else 'LT'}")
    elif op == "c":
        if p.inset: ep.unregister(p.s) if rnd.random() < 0.5 else None
        p.s.close(); p.c.close(); pairs[i] = mkpair(); log.append(f"reconnect{i}->{pairs[i].s.fileno()}")
    elif op == "s" and not p.eof:
        p.c.shutdown(socket.SHUT_WR); p.eof = True; p.due = True; log.append(f"shut{i}")
print(f"seed {seed}: {steps} steps ok")
