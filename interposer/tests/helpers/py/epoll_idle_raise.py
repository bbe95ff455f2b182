# An epoll set of N connections whose flags its waiter left down (each read
# at every round of a few rounds of requests), then 40 calls that find no
# data: in a set listing 256 or more such members the idle ones have their
# flag raised (decision 79: a raw ppoll, which the kernel answers without
# the library, sees the doorbell byte of the next data), in a smaller one
# they stay down. Either way the next data on every connection is reported
# by epoll_wait and read whole.
# usage: epoll_idle_raise.py N
import ctypes, os, select, socket, struct, sys
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
N = int(sys.argv[1])
SYS_PPOLL = {"x86_64": 271, "aarch64": 73}.get(os.uname().machine)
libc = ctypes.CDLL(None, use_errno=True)

def kernel_readable(fd):
    """The kernel's own answer (a raw ppoll: no library hook)."""
    pfd = ctypes.create_string_buffer(struct.pack("ihh", fd, select.POLLIN, 0))
    ts = ctypes.create_string_buffer(struct.pack("qq", 0, 0))
    return libc.syscall(SYS_PPOLL, pfd, 1, ts, None, 0) > 0

ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(ADDR); ls.listen(N)
clients, servers, accepted = [], {}, []
for _ in range(N):
    clients.append(socket.create_connection(ADDR))
    s, _ = ls.accept()
    s.setblocking(False)
    servers[s.fileno()] = s
    accepted.append(s)
ep = select.epoll()
for fd in servers:
    ep.register(fd, select.EPOLLIN)

def serve(payload):
    """Each client sends `payload`; the set's events until every server
    read it whole (each read empties its ring: the flag goes down)."""
    for c in clients:
        c.sendall(payload)
    got = {fd: b"" for fd in servers}
    while any(len(v) < len(payload) for v in got.values()):
        events = ep.poll(5, 4 * N)
        assert events, f"no event, {sum(len(v) < len(payload) for v in got.values())} left"
        for fd, _ in events:
            try:
                got[fd] += servers[fd].recv(4096)
            except BlockingIOError:
                pass
    assert all(v == payload for v in got.values()), "bytes differ"

for r in range(4):
    serve(b"round %d" % r)
# Calls that find nothing: each one's first look counts every idle member.
for _ in range(40):
    assert not ep.poll(0, 4 * N), "an event with no data"
# The next data (written into the ring at once: no wait needed): does the
# kernel see a doorbell byte for it?
clients[0].sendall(b"late")
print("raised:", SYS_PPOLL is not None and kernel_readable(accepted[0].fileno()), flush=True)
events = ep.poll(5, 4 * N)
assert [fd for fd, _ in events] == [accepted[0].fileno()], f"events {events}"
assert accepted[0].recv(100) == b"late", "bytes differ"
# And the next data of every member, raised or not.
serve(b"last")
print("all reported", flush=True)
