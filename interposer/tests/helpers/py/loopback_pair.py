# Loopback pairs in the default mode (no SHMNET_PARTITIONS/FALLBACK: the
# library accelerates 127.0.0.0/8 and ::1 and falls back to kernel TCP).
#
# server HOST N [PORT] [reuseport]: listens on HOST:PORT (0: any), prints
#   `port P`; serves connections concurrently until N were served (N=0:
#   until its stdin ends: the test closes it once every client is done; an
#   idle timeout would end a server of an SO_REUSEPORT group that the
#   kernel's hash happened to give nothing for a while, and on a loaded
#   machine that is seconds of clients); each: read to EOF (the first 8
#   bytes are the client's id), answer the sha256 of everything read;
#   prints `served ID BYTES PEER` per connection.
# client HOST PORT BYTES ID [pause]: connects, sends ID (8 bytes) + BYTES
#   random bytes (with `pause`: half, then `in-flight LOCALPORT`, 1.5 s, the
#   rest), half-closes, checks the digest; prints `ok ID LOCAL PEER`.
import hashlib, os, select, socket, sys, threading, time

signal_alarm = __import__("signal").alarm(100)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def server(host, n, port=0, reuseport=False):
    s = socket.socket(family(host))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family(host) == socket.AF_INET6 and host == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.listen(64)
    print("port", s.getsockname()[1], flush=True)
    served = [0]
    lock = threading.Lock()

    def one(c, peer):
        h, tot, ident = hashlib.sha256(), 0, b""
        while (b := c.recv(1 << 16)):
            h.update(b)
            if len(ident) < 8:
                ident += b[: 8 - len(ident)]
            tot += len(b)
        c.sendall(h.hexdigest().encode())
        c.close()
        with lock:
            served[0] += 1
            print("served", ident.rstrip(b"_").decode(errors="replace"), tot, peer[0], flush=True)

    s.settimeout(60)
    threads = []
    while n == 0 or len(threads) < n:
        if n == 0:
            ready, _, _ = select.select([s, 0], [], [])
            if 0 in ready and not os.read(0, 4096):
                break
            if s not in ready:
                continue
        try:
            c, peer = s.accept()
        except socket.timeout:
            break
        c.settimeout(None)
        t = threading.Thread(target=one, args=(c, peer))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    print("done", served[0], flush=True)


def client(host, port, size, ident, pause=False):
    c = socket.create_connection((host, port))
    data = ident.encode().ljust(8, b"_")[:8] + os.urandom(size)
    half = len(data) // 2 if pause else len(data)
    c.sendall(data[:half])
    if pause:
        print("in-flight", c.getsockname()[1], flush=True)
        time.sleep(1.5)
        c.sendall(data[half:])
    names = c.getsockname()[0], c.getpeername()[0]
    c.shutdown(socket.SHUT_WR)
    got = b""
    while (b := c.recv(100)):
        got += b
    ok = got.decode() == hashlib.sha256(data).hexdigest()
    print("ok" if ok else "BAD", ident, *names, flush=True)
    sys.exit(0 if ok else 1)


if sys.argv[1] == "server":
    a = sys.argv[2:]
    server(a[0], int(a[1]), int(a[2]) if len(a) > 2 else 0, "reuseport" in a)
else:
    a = sys.argv[2:]
    client(a[0], int(a[1]), int(a[2]), a[3], "pause" in a)
