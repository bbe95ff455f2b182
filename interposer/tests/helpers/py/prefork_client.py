# Client of prefork.py: REQUESTS connections, 8 at a time, each sending
# `reqN` and printing the answer as `got N PID`; then QUITS sequential
# `quit` connections (`bye PID` each). argv: HOST PORT REQUESTS QUITS.
import signal, socket, sys, threading

signal.alarm(100)
HOST, PORT, REQUESTS, QUITS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
failed = []


def say(*words):
    with lock:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


def ask(line):
    s = socket.create_connection((HOST, PORT))
    s.sendall(line.encode() + b"\n")
    buf = b""
    while (chunk := s.recv(100)):
        buf += chunk
    s.close()
    return buf.decode()


def worker(ids):
    for n in ids:
        try:
            words = ask(f"req{n}").split()
            if len(words) != 2 or words[0] != f"req{n}":
                raise AssertionError(f"answer {words!r}")
            say("got", n, words[1])
        except Exception as e:
            failed.append(n)
            say("error", f"request {n}:", repr(e))


threads = [threading.Thread(target=worker, args=(range(k, REQUESTS, 8),)) for k in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for _ in range(QUITS):
    words = ask("quit").split()
    say(*words)
sys.exit(1 if failed else 0)
