# Greets, reads to EOF, answers the sha256 of what it read and n_out bytes
# of a known stream. argv: host n_out
import hashlib, socket, sys
host, n_out = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
srv.bind((host, 0))
srv.listen(4)
print("port", srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.sendall(b"hello\n")
h = hashlib.sha256()
while True:
    b = conn.recv(65536)
    if not b:
        break
    h.update(b)
conn.sendall(h.hexdigest().encode() + (bytes(range(256)) * (n_out // 256 + 1))[:n_out])
conn.close()
print("served", flush=True)
