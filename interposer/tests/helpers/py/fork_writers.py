# One connection written from two processes at once after fork(): each
# direction must be serialised across processes, not only threads.
# argv: HOST PORT ROLE.
#
# ROLE send: connects, forks; parent (tag 0) and child (tag 1) each send
# FRAMES 64-byte frames (tag 1 B, sequence 4 B, 2 B zero, 57 B of
# (seq + tag) & 255), made beforehand so the two processes' sends overlap
# densely; the parent waits for the child, then closes.
# ROLE recv: accepts one connection, reads to EOF, checks that every frame is
# whole and each tag's sequence numbers run 0, 1, 2...; prints
# `frames COUNT0 COUNT1` or `broken OFFSET WHY` (exit 1).
import os, signal, socket, struct, sys

signal.alarm(100)
HOST, PORT, ROLE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
FRAMES, SIZE = 30000, 64


def frame(tag, seq):
    return struct.pack("!BIH", tag, seq, 0) + bytes([(seq + tag) & 255]) * (SIZE - 7)


def sender():
    s = socket.create_connection((HOST, PORT))
    pid = os.fork()
    tag = 1 if pid == 0 else 0
    todo = [frame(tag, q) for q in range(FRAMES)]
    for f in todo:
        s.sendall(f)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    s.close()


def receiver():
    lst = socket.socket()
    lst.bind((HOST, PORT))
    lst.listen(4)
    print("listening", PORT, flush=True)
    c, _ = lst.accept()
    buf = bytearray()
    while (b := c.recv(1 << 20)):
        buf += b
    count = [0, 0]
    for at in range(0, len(buf), SIZE):
        tag = buf[at]
        if tag > 1 or buf[at:at + SIZE] != frame(tag, count[tag]):
            print("broken", at, f"expected tag 0 seq {count[0]} or tag 1 seq {count[1]}", flush=True)
            sys.exit(1)
        count[tag] += 1
    print("frames", *count, flush=True)


sender() if ROLE == "send" else receiver()
