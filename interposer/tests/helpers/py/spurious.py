import os, socket, select, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
srv = socket.socket(); srv.bind(ADDR); srv.listen(4)
def server():
    conn, _ = srv.accept()
    req = conn.recv(100)            # request/response: server speaks only after the request
    conn.sendall(b"reply:" + req)
    conn.recv(100)
threading.Thread(target=server, daemon=True).start()
c = socket.create_connection(ADDR)  # blocking socket
time.sleep(0.2)
r, _, _ = select.select([c], [], [], 0.5)
print("select says readable before any data was sent:", bool(r), flush=True)
if r:
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("d", c.recv(100)), daemon=True); t.start()
    t.join(2)
    print("blocking recv after 'readable':", out.get("d", "BLOCKED >2s (client waits for data, server waits for request)"), flush=True)
# stale doorbell: after reading a reply completely, select still says readable
c.sendall(b"ping"); time.sleep(0.2)
print("reply:", c.recv(100)) if not r else None
time.sleep(0.2)
r2, _, _ = select.select([c], [], [], 0.5)
print("select readable after the reply was fully read (nothing pending):", bool(r2), flush=True)
os._exit(0)
