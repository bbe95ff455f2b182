# Issue 12.2: a single-threaded epoll server with one non-blocking
# listener (level-triggered) that calls accept() once each time epoll_wait
# says the listener is readable, and counts the accepts that fail with
# EAGAIN; it serves each connection inline (read one line, echo it,
# close). argv: HOST PORT N. Prints `listening`, then after N connections
# `accepted N wakeups N eagain N`.
import select, signal, socket, sys

signal.alarm(100)
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((host, port))
lst.listen(128)
lst.setblocking(False)
ep = select.epoll()
ep.register(lst.fileno(), select.EPOLLIN)
print("listening", flush=True)
accepted = wakeups = eagain = 0
while accepted < n:
    events = ep.poll(30)
    if not events:
        sys.exit("stuck: no event for 30 s after %d accepts" % accepted)
    for fd, ev in events:
        wakeups += 1
        try:
            c, _ = lst.accept()
        except BlockingIOError:
            eagain += 1
            continue
        accepted += 1
        c.setblocking(True)
        c.settimeout(30)
        got = b""
        while not got.endswith(b"\n"):
            data = c.recv(4096)
            if not data:
                break
            got += data
        c.sendall(got)
        c.close()
print("accepted", accepted, "wakeups", wakeups, "eagain", eagain, flush=True)
