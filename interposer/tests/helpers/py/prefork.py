# Prefork server: the parent binds and listens, then forks CHILDREN children
# that each accept on the shared listener in a loop (blocking accept). A
# request is one line `reqN`; the child holds it 20 ms (so the other child
# must take the next ones) and answers `reqN PID`. A `quit` line is answered
# `bye PID` and ends that child, which prints `served PID COUNT REQ,REQ,...`.
# The parent prints `children PID...`, then reaps each child
# (`reaped PID EXITCODE`). argv: HOST PORT CHILDREN.
import os, signal, socket, sys, time

signal.alarm(100)
HOST, PORT, CHILDREN = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def say(*words):
    os.write(1, (" ".join(str(w) for w in words) + "\n").encode())


def child():
    signal.alarm(100)  # alarms are not inherited across fork
    served = []
    while True:
        c, _ = lst.accept()
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk:
                break
            buf += chunk
        req = buf.decode().strip()
        if req == "quit":
            c.sendall(f"bye {os.getpid()}\n".encode())
            c.close()
            break
        time.sleep(0.02)
        c.sendall(f"{req} {os.getpid()}\n".encode())
        c.close()
        served.append(req)
    say("served", os.getpid(), len(served), ",".join(served) or "-")


lst = socket.socket()
lst.bind((HOST, PORT))
lst.listen(64)
say("listening", PORT)
kids = []
for _ in range(CHILDREN):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child()
        except BaseException as e:
            say("child-error", os.getpid(), repr(e))
            code = 1
        os._exit(code)
    kids.append(pid)
say("children", *kids)
for pid in kids:
    _, status = os.waitpid(pid, 0)
    say("reaped", pid, os.waitstatus_to_exitcode(status))
