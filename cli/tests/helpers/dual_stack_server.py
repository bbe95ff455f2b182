# A dual-stack listener on [::]:0 (IPV6_V6ONLY off): an IPv4 client is
# ::ffff:a.b.c.d here. Prints its port; reads each connection.
import socket, threading
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
def serve(c):
    while c.recv(65536):
        pass
kept = []
while True:
    c, _ = s.accept()
    kept.append(c)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
