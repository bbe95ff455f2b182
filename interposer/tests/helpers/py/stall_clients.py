# N clients of stall_server.py, each on its own connection: connect, send
# one line, read the echo, close. argv: HOST PORT N VARIANT, VARIANT
# `nonblocking` (one thread, N non-blocking sockets driven by selectors) or
# `threads` (N threads doing blocking connects). Prints `issued N` once
# every connect has been made (nonblocking) or every thread is about to
# connect (threads), then `ok N failed N errors {...}` and exits 0.
import errno, selectors, signal, socket, sys, threading, time

signal.alarm(100)
host, port, n, variant = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
DEADLINE = time.monotonic() + 50
ok = 0
errors = {}
lock = threading.Lock()


def line(i):
    return ("client %d of %d " % (i, n)).ljust(63, ".").encode() + b"\n"


def fail(what):
    with lock:
        errors[what] = errors.get(what, 0) + 1


def name(e):
    return errno.errorcode.get(e, str(e))


if variant == "nonblocking":
    sel = selectors.DefaultSelector()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        e = s.connect_ex((host, port))
        if e not in (0, errno.EINPROGRESS):
            fail("connect " + name(e))
            s.close()
            continue
        sel.register(s, selectors.EVENT_WRITE, [i, "connecting", bytearray()])
    print("issued", n, flush=True)
    while sel.get_map() and time.monotonic() < DEADLINE:
        for key, _ in sel.select(1):
            s, st = key.fileobj, key.data
            i, state, got = st
            if state == "connecting":
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    fail("connect " + name(e))
                    sel.unregister(s)
                    s.close()
                    continue
                s.send(line(i))  # 64 bytes into a fresh connection
                st[1] = "reading"
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError as ex:
                fail("recv " + name(ex.errno))
                data = None
            if data:
                got += data
                if not got.endswith(b"\n"):
                    continue
                if bytes(got) == line(i):
                    ok += 1
                else:
                    fail("wrong echo")
            elif data is not None:
                fail("EOF before the echo")
            sel.unregister(s)
            s.close()
    for key in list(sel.get_map().values()):
        fail("unfinished " + key.data[1])
        key.fileobj.close()
elif variant == "threads":
    ready = 0
    results = []

    def client(i):
        global ready
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(50)
        with lock:
            ready += 1
        try:
            s.connect((host, port))
        except OSError as ex:
            fail("connect " + (name(ex.errno) if ex.errno else type(ex).__name__))
            s.close()
            return
        try:
            s.sendall(line(i))
            got = b""
            while not got.endswith(b"\n"):
                data = s.recv(4096)
                if not data:
                    fail("EOF before the echo")
                    return
                got += data
            if got == line(i):
                with lock:
                    results.append(i)
            else:
                fail("wrong echo")
        except OSError as ex:
            fail("io " + (name(ex.errno) if ex.errno else type(ex).__name__))
        finally:
            s.close()

    threading.stack_size(256 * 1024)
    ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    while True:
        with lock:
            if ready == n:
                break
        time.sleep(0.01)
    print("issued", n, flush=True)
    for t in ts:
        t.join()
    ok = len(results)
else:
    sys.exit("unknown variant " + variant)
print("ok", ok, "failed", n - ok, "errors", errors, flush=True)
