# Echo clients: THREADS connections at once, each sending MSGS frames
# (4-byte big-endian length + 1 B..64 KiB of random payload) from a writer
# thread while the connection's reader thread reads the echoes back and
# compares each with what was sent. argv: HOST PORT THREADS MSGS SEED.
# Prints `ok THREAD FRAMES BYTES SHA256` per connection, or `error ...`
# and exits 1.
import hashlib, random, signal, socket, struct, sys, threading

signal.alarm(100)
HOST, PORT = sys.argv[1], int(sys.argv[2])
THREADS, MSGS, SEED = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lock = threading.Lock()
failed = []


def say(*words):
    with lock:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


def recv_exact(s, n, what):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes of {what}")
        buf += chunk
    return bytes(buf)


def client(i):
    try:
        rng = random.Random(SEED * 1000 + i)
        msgs = [rng.randbytes(rng.randint(1, 65536)) for _ in range(MSGS)]
        s = socket.create_connection((HOST, PORT))
        errs = []

        def writer():
            try:
                for m in msgs:
                    s.sendall(struct.pack("!I", len(m)) + m)
                s.shutdown(socket.SHUT_WR)
            except Exception as e:
                errs.append(f"writer: {e!r}")

        t = threading.Thread(target=writer)
        t.start()
        h, total = hashlib.sha256(), 0
        for k, m in enumerate(msgs):
            n = struct.unpack("!I", recv_exact(s, 4, f"frame {k} header"))[0]
            if n != len(m):
                raise AssertionError(f"frame {k}: echoed length {n}, sent {len(m)}")
            got = recv_exact(s, n, f"frame {k} ({n} bytes)")
            if got != m:
                at = next(j for j in range(n) if got[j] != m[j])
                raise AssertionError(
                    f"frame {k} ({n} bytes): echo differs from byte {at}: sent sha256 "
                    f"{hashlib.sha256(m).hexdigest()} got {hashlib.sha256(got).hexdigest()}")
            h.update(got)
            total += n
        rest = s.recv(1)
        if rest:
            raise AssertionError(f"bytes after the last echo: {rest!r}")
        t.join(60)
        if t.is_alive() or errs:
            raise AssertionError(f"writer: {errs or 'still running'}")
        s.close()
        say("ok", i, len(msgs), total, h.hexdigest())
    except Exception as e:
        failed.append(i)
        say("error", f"connection {i}:", repr(e))


threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.exit(1 if failed else 0)
