import os, sys, socket, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
mode = sys.argv[1]
srv = socket.socket(); srv.bind(ADDR); srv.listen(4)
c = socket.create_connection(ADDR)
conn, _ = srv.accept()   # the peer: never reads, never writes, stays open
res = {}
def blocked():
    t = time.time()
    try:
        if mode == "send":
            c.sendall(b"x" * (8 << 20))
            res["r"] = "send returned"
        else:
            res["r"] = f"recv returned {c.recv(10)!r}"
    except OSError as e:
        res["r"] = f"{mode} raised {e!r}"
    res["t"] = time.time() - t
th = threading.Thread(target=blocked, daemon=True); th.start()
time.sleep(0.5)
done = threading.Event()
def do_shut():
    c.shutdown(socket.SHUT_RDWR); done.set()
threading.Thread(target=do_shut, daemon=True).start()
print("shutdown() returned within 3s:", done.wait(3), flush=True)
th.join(3)
print("blocked thread:", res.get("r", "STILL BLOCKED after 3s"), flush=True)
os._exit(0)
