import os, sys, socket, threading, time, fcntl, termios
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
srv = socket.socket(); srv.bind(ADDR); srv.listen(4)
c = socket.create_connection(ADDR)
conn, _ = srv.accept()
threading.Thread(target=lambda: c.recv(10), daemon=True).start()   # a reader blocked on an idle connection
time.sleep(0.3)
for name, f in [("recv(MSG_DONTWAIT)", lambda: c.recv(10, socket.MSG_DONTWAIT)),
                ("ioctl(FIONREAD)", lambda: fcntl.ioctl(c.fileno(), termios.FIONREAD, b"\0"*4))]:
    ev = threading.Event(); out = {}
    def run():
        try: out["r"] = f()
        except OSError as e: out["r"] = repr(e)
        ev.set()
    threading.Thread(target=run, daemon=True).start()
    print(name, "->", out.get("r") if ev.wait(2) else "BLOCKED >2s", flush=True)
os._exit(0)
