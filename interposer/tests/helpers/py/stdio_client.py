# The client of stdio_server.py's shell mode: sends N bytes, shuts its
# side down, reads to EOF and compares what came back (sha256) with
# what the exec'd shell writes. argv: host port n
import hashlib, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = bytes((i * 7 + i // 251) % 256 for i in range(n))
want = b"hello\nx-5\n" + b"ABCDEFGHIJ" * 20000 + b"\n" + payload + b"bye\n"
c = socket.create_connection((host, port))
c.sendall(payload)
c.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    got += chunk
same = hashlib.sha256(got).digest() == hashlib.sha256(want).digest()
print("got", len(got), "OK" if same else "DIFFERENT", flush=True)
