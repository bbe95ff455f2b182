# A client of 127.0.0.1:PORT: idle (connects, waits), slow (1000 bytes
# every 50 ms), or half (5 bytes, then shutdown(SHUT_WR), waits).
import socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
c = socket.create_connection(("127.0.0.1", port))
print("connected", flush=True)
if mode == "slow":
    while True:
        c.sendall(b"y" * 1000)
        time.sleep(0.05)
if mode == "half":
    c.sendall(b"hello")
    c.shutdown(socket.SHUT_WR)
time.sleep(3600)
