# Connects to 127.0.0.1:PORT, sends 10 bytes, then MODE: close (closes the
# socket and stays), exit (os._exit: no exit handler), stay (for a kill).
# Prints "sent" once the bytes are written (and closed, for close).
import os, socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
c = socket.create_connection(("127.0.0.1", port))
c.sendall(b"0123456789")
if mode == "close":
    c.close()
print("sent", flush=True)
if mode == "exit":
    os._exit(0)
time.sleep(3600)
