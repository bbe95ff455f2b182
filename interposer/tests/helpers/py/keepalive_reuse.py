# A keep-alive HTTP client (http.client) whose server closed the idle
# connection: the second request is sent (kernel TCP accepts the first
# send after the peer's close; its RST answers it) and the response read
# finds the end: RemoteDisconnected. Before session 34 the library failed
# the send at once (BrokenPipeError), which clients that retry only on a
# disconnect took as an error. argv: HOST (a port-0 listener there).
import http.client, socket, sys, threading, time

HOST = sys.argv[1]
ls = socket.socket()
ls.bind((HOST, 0))
ls.listen(4)


def serve():
    c, _ = ls.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
    time.sleep(0.1)
    c.close()  # the server's idle timeout


t = threading.Thread(target=serve)
t.start()
h = http.client.HTTPConnection(HOST, ls.getsockname()[1])
h.request("GET", "/")
print("first", h.getresponse().read().decode())
t.join()
time.sleep(0.1)
try:
    h.request("GET", "/again")
    print("second request sent")
    print("second", h.getresponse().status)
except Exception as e:
    print("second:", type(e).__name__)
