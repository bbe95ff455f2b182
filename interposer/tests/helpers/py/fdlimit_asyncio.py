# fdlimit_asyncio.py LIMIT N ADDR PORT: how many TCP connections an asyncio
# server fits under `ulimit -n LIMIT` (soft = hard), as fdlimit.c's for a C
# server. Forks before the listener exists (as fdlimit.c and kvbench): the
# child is the server, with RLIMIT_NOFILE set to LIMIT, an asyncio event
# loop (loop.create_server on a listener it made, backlog 4096) whose
# accept loop is asyncio's own: accept until EAGAIN; at EMFILE the loop's
# exception handler is called ("socket.accept() out of system resource")
# and the listener is looked at again a second later (what aiohttp and
# every asyncio server do). The parent is the client, with the limit it
# was started with (this measures the server): blocking connects until N
# or the first failure.
#
# The server stops accepting when it has taken as many as the client says
# it opened, or when an accept ran out of fds after it was told (an EMFILE
# before that is retried by asyncio a second later, and counts only then).
# Accepts are counted at the listener's accept() itself, which asyncio
# calls. Then every accepted connection carries 8 bytes each way (the
# client's index, answered with its bitwise complement), checked.
#
# Prints "opened O accepted A checked C memfds M" (exit 0), or "error ..."
# (exit 1) for anything but running out of fds. M: the server's memfds
# (`ls -l /proc/PID/fd`) at its accept of half of N, while fds were
# still plentiful: what a preloaded server keeps for exec until it runs out
# (-1 if it never got that far).
import asyncio, errno, os, resource, selectors, signal, socket, struct, sys

LIMIT, N, HOST, PORT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
FULL = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS)
MAGIC = 0x5EED000000000000
MASK = (1 << 64) - 1


def die(what):
    print("error", what, flush=True)
    os._exit(1)


def read_exact(fd, n):
    b = b""
    while len(b) < n:
        d = os.read(fd, n - len(b))
        if not d:
            die("short read")
        b += d
    return b


class Counting(socket.socket):
    """The listener: asyncio's accept loop calls this accept()."""

    accepted = 0
    memfds = -1

    def accept(self):
        c = super().accept()
        Counting.accepted += 1
        if Counting.accepted == N // 2:
            # Here, not at connection_made: asyncio's accept loop may take
            # the rest and meet EMFILE before any connection is made.
            Counting.memfds = memfds()
        return c


def memfds():
    n = 0
    for f in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{f}").startswith("/memfd:")
        except OSError:
            pass  # the listing's own fd, closed by now
    return n


class Answer(asyncio.Protocol):
    check = None  # the server's check(full), called at each connection

    def connection_made(self, transport):
        self.t, self.buf = transport, b""
        Answer.check(False)

    def data_received(self, data):
        self.buf += data
        if len(self.buf) >= 8:
            (v,) = struct.unpack("<Q", self.buf[:8])
            self.t.write(struct.pack("<Q", ~v & MASK))
            self.buf = self.buf[8:]


def server(from_client, to_client):
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    l = Counting(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((HOST, PORT))
    l.listen(4096)
    l.setblocking(False)
    os.write(to_client, struct.pack("<i", 1))
    state = {"opened": None, "reported": False}

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def report():
            if state["reported"]:
                return
            state["reported"] = True
            os.write(to_client, struct.pack("<ii", Counting.accepted, Counting.memfds))

        def check(full):
            opened = state["opened"]
            if opened is not None and (full or Counting.accepted >= opened):
                report()

        def on_error(loop, ctx):
            exc = ctx.get("exception")
            if isinstance(exc, OSError) and exc.errno in FULL:
                check(True)
            else:
                print("error", ctx.get("message"), repr(exc), flush=True)
                os._exit(1)

        def from_pipe():
            if state["opened"] is None:
                (state["opened"],) = struct.unpack("<i", read_exact(from_client, 4))
                check(False)
            elif not os.read(from_client, 1):  # the client is done
                loop.remove_reader(from_client)
                done.set_result(None)

        loop.set_exception_handler(on_error)
        loop.add_reader(from_client, from_pipe)
        Answer.check = check
        srv = await loop.create_server(Answer, sock=l)
        await done
        srv.close()

    asyncio.run(main())
    os._exit(0)


def client(from_server, to_server):
    read_exact(from_server, 4)  # listening
    fds = []
    for _ in range(N):
        try:
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            if e.errno in FULL:
                break
            die(f"socket: {e}")
        try:
            c.connect((HOST, PORT))
        except OSError as e:
            c.close()
            if e.errno in FULL:
                break
            die(f"connect: {e}")
        fds.append(c)
    os.write(to_server, struct.pack("<i", len(fds)))
    accepted, kept = struct.unpack("<ii", read_exact(from_server, 8))
    for i, c in enumerate(fds):
        c.sendall(struct.pack("<Q", MAGIC | i))
    sel = selectors.DefaultSelector()
    for i, c in enumerate(fds):
        sel.register(c, selectors.EVENT_READ, i)
    checked = answered = 0
    while answered < accepted:
        events = sel.select(10)
        if not events:
            die("no answers")
        for key, _ in events:
            c, i = key.fileobj, key.data
            b = b""
            while len(b) < 8:
                d = c.recv(8 - len(b))
                if not d:
                    die(f"connection {i} closed")
                b += d
            (w,) = struct.unpack("<Q", b)
            checked += w == ~(MAGIC | i) & MASK
            answered += 1
            sel.unregister(c)
    return len(fds), accepted, checked, kept


p = os.pipe()  # client -> server: how many it opened, then EOF when done
q = os.pipe()  # server -> client: listening, then how many it accepted
pid = os.fork()
signal.alarm(60)
if pid == 0:
    os.close(p[1])
    os.close(q[0])
    server(p[0], q[1])
os.close(p[0])
os.close(q[1])
opened, accepted, checked, kept = client(q[0], p[1])
os.close(p[1])
_, st = os.waitpid(pid, 0)
if st != 0:
    die(f"server status {st}")
print(f"opened {opened} accepted {accepted} checked {checked} memfds {kept}", flush=True)
