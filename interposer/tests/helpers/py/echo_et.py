# Event-driven echo server on raw select.epoll, edge-triggered: every
# connection is registered once with EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET and
# never modified; each event reads until EAGAIN (or EOF) and writes until
# EAGAIN (or nothing is left). argv: HOST PORT CONNECTIONS. Frames and output
# as echo_lt.py: exits 0 after CONNECTIONS clients have closed, printing
# `stats ...`; exits 1 with `stuck ...` if no event arrives for 15 s while
# connections are open (a lost edge).
import os, select, signal, socket, struct, sys, time

signal.alarm(100)
HOST, PORT, CONNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
IDLE = 15


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


class Conn:
    def __init__(self, sock, n):
        self.sock, self.n = sock, n
        self.inbuf, self.out = bytearray(), bytearray()
        self.eof, self.frames, self.blocked = False, 0, False


stats = dict(accepted=0, closed=0, frames=0, partial_sends=0, send_eagain=0,
             out_events=0, in_events=0, read_eagain_first=0)
ep = select.epoll()
lst = socket.socket()
lst.bind((HOST, PORT))
lst.listen(128)
lst.setblocking(False)
ep.register(lst.fileno(), select.EPOLLIN | select.EPOLLET)
conns = {}
say("listening", PORT)


def drain_in(c):
    first = True
    while True:
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            if first:
                stats["read_eagain_first"] += 1
            return
        first = False
        if not data:
            c.eof = True
            return
        c.inbuf += data
        while len(c.inbuf) >= 4:
            n = struct.unpack_from("!I", c.inbuf)[0]
            if len(c.inbuf) < 4 + n:
                break
            c.out += c.inbuf[:4 + n]
            del c.inbuf[:4 + n]
            c.frames += 1
            stats["frames"] += 1


def drain_out(c):
    while c.out:
        try:
            k = c.sock.send(c.out)
        except BlockingIOError:
            stats["send_eagain"] += 1
            c.blocked = True
            return
        if k < len(c.out):
            stats["partial_sends"] += 1
        del c.out[:k]
    c.blocked = False


last = time.monotonic()
while stats["closed"] < CONNS:
    events = ep.poll(1)
    if events:
        last = time.monotonic()
    elif time.monotonic() - last > IDLE:
        say("stuck", f"no epoll event for {IDLE}s;", stats, "open:",
            [(c.n, f"in={len(c.inbuf)}", f"out={len(c.out)}", f"eof={c.eof}",
              f"frames={c.frames}", f"waiting_for_EPOLLOUT={c.blocked}")
             for c in conns.values()])
        sys.exit(1)
    for fd, ev in events:
        if fd == lst.fileno():
            while True:
                try:
                    sock, _ = lst.accept()
                except BlockingIOError:
                    break
                sock.setblocking(False)
                c = Conn(sock, stats["accepted"])
                stats["accepted"] += 1
                conns[sock.fileno()] = c
                ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLOUT
                            | select.EPOLLRDHUP | select.EPOLLET)
            continue
        c = conns[fd]
        if ev & select.EPOLLOUT:
            stats["out_events"] += 1
        if ev & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR):
            stats["in_events"] += 1
            if not c.eof:
                drain_in(c)
        drain_out(c)
        if c.eof and not c.out:
            if c.inbuf:
                say("error", f"conn {c.n}: EOF inside a frame ({len(c.inbuf)} bytes left)")
                sys.exit(1)
            ep.unregister(fd)
            del conns[fd]
            c.sock.close()
            stats["closed"] += 1
say("stats", *(f"{k}={v}" for k, v in stats.items()))
