# Accepts one connection and reads it forever. Prints "port P".
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print("port", s.getsockname()[1], flush=True)
c, _ = s.accept()
while c.recv(65536): pass
time.sleep(3600)
