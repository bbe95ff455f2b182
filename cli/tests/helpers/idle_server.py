# Accepts connections on 127.0.0.1 and never reads them; prints its port.
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
kept = []
while True:
    c, _ = s.accept()
    kept.append(c)
