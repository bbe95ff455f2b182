# An event-loop server for interposer/tests/isolation.rs (run preloaded):
# a non-blocking listener in a level-triggered epoll set with stdin.
#
#   HOST PORT
#
# Prints `port P pid PID`. Whenever the listener is readable it accepts until
# EAGAIN; each connection is echoed by a thread of its own. Each `go` line
# on stdin: accepts until EAGAIN, then prints
#   `report readable=R fds=F accepted=A spurious=S`
# R: poll(listener, POLLIN, 0) right after that EAGAIN (1: still readable);
# F: open descriptors (/proc/self/fd); A: connections accepted so far;
# S: wake-ups for the listener whose first accept said EAGAIN (an event
# loop spinning on a listener that stays readable counts them fast).
import errno, os, select, signal, socket, sys, threading

signal.alarm(100)
HOST, PORT = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET6 if ":" in HOST else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((HOST, PORT))
srv.listen(128)
srv.setblocking(False)
print("port", srv.getsockname()[1], "pid", os.getpid(), flush=True)


def echo_one(c):
    c.setblocking(True)
    try:
        while (b := c.recv(1 << 16)):
            c.sendall(b)
    except OSError:
        pass
    c.close()


accepted = spurious = 0


def accept_all():
    global accepted
    n = 0
    while True:
        try:
            c, _ = srv.accept()
        except BlockingIOError:
            return n
        except OSError as e:
            if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                continue
            raise
        n += 1
        accepted += 1
        threading.Thread(target=echo_one, args=(c,), daemon=True).start()


ep = select.epoll()
ep.register(srv.fileno(), select.EPOLLIN)
ep.register(sys.stdin.fileno(), select.EPOLLIN)
while True:
    for fd, _ in ep.poll(1):
        if fd == srv.fileno():
            if accept_all() == 0:
                spurious += 1
        else:
            line = sys.stdin.readline()
            if line == "":
                sys.exit(0)
            accept_all()
            p = select.poll()
            p.register(srv.fileno(), select.POLLIN)
            readable = len(p.poll(0))
            fds = len(os.listdir("/proc/self/fd"))
            print(f"report readable={readable} fds={fds} accepted={accepted} spurious={spurious}", flush=True)
