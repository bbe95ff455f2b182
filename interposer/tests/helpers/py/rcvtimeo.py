import os, socket, struct, threading, time
ADDR = (os.environ["TEST_HOST"], int(os.environ["TEST_PORT"]))
srv = socket.socket(); srv.bind(ADDR); srv.listen(4)
c = socket.create_connection(ADDR); conn, _ = srv.accept()
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 2**63-1, 0))  # "effectively infinite"
threading.Timer(0.5, lambda: conn.sendall(b"hi")).start()
try:
    print("recv ->", c.recv(10), flush=True)
except OSError as e:
    print("recv raised", repr(e), flush=True)
os._exit(0)
