# Connects to 127.0.0.1:PORT, sends 100000 bytes (prints "sent 100000"), sleeps.
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"y" * 100000)
print("sent 100000", flush=True)
time.sleep(3600)
