# Event-driven echo server on selectors.EpollSelector (level-triggered).
# argv: HOST PORT CONNECTIONS. Non-blocking sockets; every length-prefixed
# frame (4-byte big-endian length + payload) read is echoed back verbatim.
# What send() does not take stays buffered and the connection is registered
# for EVENT_WRITE until the buffer drains. Exits 0 after CONNECTIONS clients
# have closed, printing `stats ...`; exits 1 with `stuck ...` if nothing
# happens for 15 s while connections are open.
import os, selectors, signal, socket, struct, sys, time

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
        self.eof, self.frames = False, 0
        self.events = selectors.EVENT_READ


stats = dict(accepted=0, closed=0, frames=0, partial_sends=0, send_eagain=0,
             write_events=0, read_eagain=0)
sel = selectors.EpollSelector()
lst = socket.socket()
lst.bind((HOST, PORT))
lst.listen(128)
lst.setblocking(False)
sel.register(lst, selectors.EVENT_READ, None)
say("listening", PORT)


def flush(c):
    while c.out:
        try:
            k = c.sock.send(c.out)
        except BlockingIOError:
            stats["send_eagain"] += 1
            return
        if k < len(c.out):
            stats["partial_sends"] += 1
        del c.out[:k]


def settle(c):
    """Register for what the connection waits for; close when done."""
    if c.eof and not c.out:
        if c.inbuf:
            say("error", f"conn {c.n}: EOF inside a frame ({len(c.inbuf)} bytes left)")
            sys.exit(1)
        sel.unregister(c.sock)
        c.sock.close()
        stats["closed"] += 1
        return
    want = (0 if c.eof else selectors.EVENT_READ) | (selectors.EVENT_WRITE if c.out else 0)
    if want != c.events:
        sel.modify(c.sock, want, c)
        c.events = want


last = time.monotonic()
while stats["closed"] < CONNS:
    events = sel.select(timeout=1)
    if events:
        last = time.monotonic()
    elif time.monotonic() - last > IDLE:
        conns = [k.data for k in sel.get_map().values() if k.data is not None]
        say("stuck", f"no event for {IDLE}s;", stats, "open:",
            [(c.n, f"in={len(c.inbuf)}", f"out={len(c.out)}", f"eof={c.eof}",
              f"frames={c.frames}", f"events={c.events}") for c in conns])
        sys.exit(1)
    for key, mask in events:
        if key.data is None:
            try:
                sock, _ = lst.accept()
            except BlockingIOError:
                continue
            sock.setblocking(False)
            c = Conn(sock, stats["accepted"])
            stats["accepted"] += 1
            sel.register(sock, selectors.EVENT_READ, c)
            continue
        c = key.data
        if mask & selectors.EVENT_WRITE:
            stats["write_events"] += 1
        if mask & selectors.EVENT_READ and not c.eof:
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                stats["read_eagain"] += 1
                data = None
            if data == b"":
                c.eof = True
            elif data:
                c.inbuf += data
                while len(c.inbuf) >= 4:
                    n = struct.unpack_from("!I", c.inbuf)[0]
                    if len(c.inbuf) < 4 + n:
                        break
                    c.out += c.inbuf[:4 + n]
                    del c.inbuf[:4 + n]
                    c.frames += 1
                    stats["frames"] += 1
        flush(c)
        settle(c)
say("stats", *(f"{k}={v}" for k, v in stats.items()))
